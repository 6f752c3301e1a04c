"""The safetensors file format, written and checked with the standard library only.

A file is an 8-byte little-endian header length, a JSON header
(`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`,
space-padded to 8-byte alignment), then the tensors' bytes back to back. Reading checks every
claim the header makes against the file, so a truncated or forged file is refused with its
reason (`ValueError`) before anything trusts it.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Tensor = tuple[str, tuple[int, ...], bytes]

DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
# Far above any real header (ai-toolkit's are tens of KiB), far below a memory problem.
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A file that is not a complete, well-formed safetensors file; the message says why."""


def write(path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> None:
    """Write `tensors` (dtype, shape, raw little-endian bytes) and `metadata` to `path` atomically."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        expected = DTYPE_SIZES[dtype] * _count(shape)
        if len(data) != expected:
            raise SafetensorsError(
                f"tensor {name!r}: {len(data)} bytes for {dtype}{list(shape)} ({expected} expected)"
            )
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)) + encoded)
        for _, _, data in tensors.values():
            out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def read_header(path: Path) -> dict[str, Any]:
    """The file's header (tensors by name, and `__metadata__`), once every claim in it checks out."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        return _check(file.read(min(size, 8 + MAX_HEADER_BYTES)), size)[0]


def read_tensors(path: Path) -> dict[str, Tensor]:
    """Every tensor in the file: (dtype, shape, raw bytes) by name."""
    return decode(Path(path).read_bytes())


def read_metadata(path: Path) -> dict[str, str]:
    """The file's `__metadata__` (empty when it has none)."""
    return dict(read_header(path).get("__metadata__", {}))


def decode(data: bytes) -> dict[str, Tensor]:
    """Every tensor in a whole file's bytes (a LoRA carried in memory, e.g. a render's style)."""
    header, start = _check(data, len(data))
    tensors = {}
    for name, entry in header.items():
        if name != "__metadata__":
            begin, end = entry["data_offsets"]
            tensors[name] = (entry["dtype"], tuple(entry["shape"]), bytes(data[start + begin : start + end]))
    return tensors


def _check(head: bytes, size: int) -> tuple[dict[str, Any], int]:
    """The validated header parsed from the file's first bytes, and where its data starts."""
    if size < 8 or len(head) < 8:
        raise SafetensorsError(f"not a safetensors file: {size} bytes, too short for a header length")
    (length,) = struct.unpack("<Q", head[:8])
    if length > MAX_HEADER_BYTES or 8 + length > size:
        raise SafetensorsError(f"header length {length} does not fit in a file of {size} bytes")
    try:
        header = json.loads(head[8 : 8 + length])
    except (UnicodeDecodeError, ValueError) as error:
        raise SafetensorsError(f"the header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise SafetensorsError("the header is not a JSON object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError("__metadata__ must map names to strings")
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            valid = dtype in DTYPE_SIZES and all(isinstance(n, int) and n >= 0 for n in (*shape, begin, end))
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise SafetensorsError(f"tensor {name!r} has a malformed entry: {entry!r:.200}")
        if end - begin != DTYPE_SIZES[dtype] * _count(shape):
            raise SafetensorsError(f"tensor {name!r}: offsets {begin}..{end} do not hold {dtype}{shape}")
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise SafetensorsError(
                f"tensor {name!r} starts at {begin}, not {position}: overlapping or gapped data"
            )
        position = end
    if 8 + length + position != size:
        raise SafetensorsError(f"the tensors end at byte {8 + length + position} of a {size}-byte file")
    return header, 8 + length


def _count(shape: Any) -> int:
    count = 1
    for dimension in shape:
        count *= dimension
    return count
