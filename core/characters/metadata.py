"""PNG, JPEG and WebP files with their metadata cut out, pixels untouched (no re-encoding).

Each function takes a file that Pillow has already decoded in full, and returns the same
picture's bytes keeping only what decoders need to draw it; everything else (EXIF with GPS,
XMP, ICC profiles, text chunks, comments, embedded thumbnails, maker trailers, a camera's
extra pictures) is dropped. It returns None when the file's layout is not one it can rewrite
safely; the caller then re-encodes the decoded pixels instead.

Why not always re-encode: a JPEG loses quality each time it is encoded (and grows: quality 95
after a camera's 92), and encoding a 1024x1024 PNG takes 10-20 times as long as decoding it. A
container rewrite is lossless and costs a copy.

Kept, per type (the rest is dropped):
- PNG: IHDR, PLTE, tRNS, IDAT, IEND. Colour hints (gAMA, cHRM, sRGB, iCCP) go too: trainers
  ignore them, so the stored file shows what they see. The caller only passes 8-bit files
  (and palettes), upright, in sRGB.
- JPEG: the frame, tables, restart interval, scans and the Adobe APP14 marker (it says how the
  components are coded; it holds no personal data). All other APPn (JFIF, EXIF, XMP, ICC, MPF,
  Photoshop/IPTC) and COM go, and everything after the first EOI (a multi-picture file's
  other pictures, vendor trailers).
- WebP: VP8/VP8L bitstreams and ALPH; VP8X is kept with its ICC/EXIF/XMP flags cleared.
"""

from __future__ import annotations

import struct

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEPT = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"})

_JPEG_KEPT = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # frames
    | {0xC4, 0xCC, 0xDB, 0xDD, 0xDA}  # Huffman and arithmetic tables, quantisation, DRI, scan
    | {0xEE}  # Adobe APP14
)
_JPEG_SOS = 0xDA
_JPEG_EOI = 0xD9
_JPEG_UNSIZED = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and restart markers carry no length

_WEBP_KEPT = frozenset({b"VP8X", b"VP8 ", b"VP8L", b"ALPH"})
_VP8X_METADATA_FLAGS = 0x20 | 0x08 | 0x04  # ICC, EXIF, XMP


def stripped_png(data: bytes) -> bytes | None:
    """The PNG's critical chunks (and tRNS) only, or None if its layout is unexpected."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    kept = [_PNG_SIGNATURE]
    at = len(_PNG_SIGNATURE)
    while at + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, at)
        kind = data[at + 4 : at + 8]
        end = at + 12 + length
        if end > len(data):
            return None
        if kind in _PNG_KEPT:
            kept.append(data[at:end])
        elif not kind[0] & 0x20:  # an unknown critical chunk: not ours to drop
            return None
        at = end
        if kind == b"IEND":
            return b"".join(kept)
    return None


def stripped_jpeg(data: bytes) -> bytes | None:
    """The JPEG's coding segments up to its first EOI, or None if its layout is unexpected."""
    if not data.startswith(b"\xff\xd8"):
        return None
    kept = [b"\xff\xd8"]
    at = 2
    while at < len(data):
        if data[at] != 0xFF:
            return None
        while at < len(data) and data[at] == 0xFF:  # fill bytes before a marker
            at += 1
        if at >= len(data):
            return None
        marker = data[at]
        at += 1
        if marker == _JPEG_EOI:
            kept.append(b"\xff\xd9")
            return b"".join(kept)
        if marker in _JPEG_UNSIZED:
            kept.append(bytes((0xFF, marker)))
            continue
        if at + 2 > len(data):
            return None
        (length,) = struct.unpack_from(">H", data, at)
        end = at + length
        if length < 2 or end > len(data):
            return None
        if marker == _JPEG_SOS:
            end = _entropy_end(data, end)
        if marker in _JPEG_KEPT:
            kept.append(bytes((0xFF, marker)) + data[at:end])
        elif not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            return None  # not an APPn or COM: something this rewrite does not know
        at = end
    return None


def _entropy_end(data: bytes, at: int) -> int:
    """Where a scan's entropy-coded data ends: the first marker that is not stuffing or RSTn."""
    while True:
        at = data.find(b"\xff", at)
        if at < 0 or at + 1 >= len(data):
            return len(data)
        following = data[at + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            at += 2
        elif following == 0xFF:
            at += 1
        else:
            return at


def stripped_webp(data: bytes) -> bytes | None:
    """The WebP's bitstream chunks (VP8X flags cleared), or None if its layout is unexpected."""
    if len(data) < 20 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    (riff_size,) = struct.unpack_from("<I", data, 4)
    end_of_file = min(len(data), 8 + riff_size)
    kept = []
    at = 12
    while at + 8 <= end_of_file:
        kind = data[at : at + 4]
        (size,) = struct.unpack_from("<I", data, at + 4)
        end = at + 8 + size + (size & 1)
        if at + 8 + size > end_of_file:
            return None
        chunk = data[at:end]
        if kind == b"VP8X":
            if size < 10:
                return None
            chunk = chunk[:8] + bytes((chunk[8] & ~_VP8X_METADATA_FLAGS & 0xFF,)) + chunk[9:]
        if kind in _WEBP_KEPT:
            kept.append(chunk)
        elif kind in (b"ANIM", b"ANMF"):
            return None
        at = end
    if not any(chunk[:4] in (b"VP8 ", b"VP8L") for chunk in kept):
        return None
    body = b"WEBP" + b"".join(kept)
    return b"RIFF" + struct.pack("<I", len(body)) + body
