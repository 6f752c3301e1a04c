"""Large source images made without holding their pixels: PNGs written row by row."""

from __future__ import annotations

import struct
import zlib


def sixteen_bit_png(side: int) -> bytes:
    """A 16-bit RGB PNG of `side` x `side` pixels with ramps in every channel (~180 KB at 4096).

    Each row is stored with PNG's Sub filter and the same difference from pixel to pixel, so
    the file is small while the decoded image is as big as its size says.
    """
    deflate = zlib.compressobj(9)
    pieces = []
    step = bytes((0, 16, 1, 8, 0, 4))  # the per-pixel difference of the Sub filter, byte by byte
    for y in range(side):
        first = struct.pack(">HHH", y * 16 % 65536, (65535 - y * 16) % 65536, y * 7 % 65536)
        pieces.append(deflate.compress(b"\x01" + first + step * (side - 1)))
    pieces.append(deflate.flush())
    header = struct.pack(">IIBBBBB", side, side, 16, 2, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", b"".join(pieces)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
