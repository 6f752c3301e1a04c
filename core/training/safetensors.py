"""The safetensors file format: reading a file's header and writing a file, with the standard library.

A safetensors file is an 8-byte little-endian header length, a JSON header (each tensor's
`dtype`, `shape` and `data_offsets` into the data that follows, plus an optional
`__metadata__` of string to string), then the tensors' raw bytes. `read_header` checks all of
it against the file's size without reading the data, so a truncated or half-written file is
refused rather than registered as a LoRA.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Bytes per element of each dtype the format names.
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
# The reference implementation refuses headers over 100 MB; so do we, before reading one.
MAX_HEADER_BYTES = 100_000_000

# A tensor as `write` takes it: dtype ("F32", ...), shape, and its raw little-endian bytes.
Tensor = tuple[str, tuple[int, ...], bytes]


class SafetensorsError(ValueError):
    """The file is not a complete, well-formed safetensors file (the message says why)."""


@dataclass(slots=True, frozen=True)
class Header:
    """A safetensors file's header: each tensor's dtype and shape, and the file's metadata."""

    tensors: dict[str, tuple[str, tuple[int, ...]]]
    metadata: dict[str, str]


def read_header(path: Path) -> Header:
    """The header of the safetensors file at `path`; `SafetensorsError` if the file is not whole."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        prefix = file.read(8)
        if len(prefix) < 8:
            raise SafetensorsError(f"{path.name} is {size} bytes: too short for a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise SafetensorsError(f"{path.name}: header length {length} does not fit a {size}-byte file")
        raw = file.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SafetensorsError(f"{path.name}: the header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path.name}: the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{path.name}: __metadata__ must map names to strings")
    data_size = size - 8 - length
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    end_of_data = 0
    for name, entry in header.items():
        dtype, shape, (start, end) = _entry(path, name, entry)
        if end - start != math.prod(shape) * DTYPE_SIZES[dtype] or end > data_size:
            raise SafetensorsError(
                f"{path.name}: tensor {name!r} ({dtype} {list(shape)}) at bytes {start}..{end} "
                f"does not fit the file's {data_size} bytes of data"
            )
        tensors[name] = (dtype, shape)
        end_of_data = max(end_of_data, end)
    if end_of_data != data_size:
        raise SafetensorsError(f"{path.name}: {data_size} bytes of data, the tensors cover {end_of_data}")
    return Header(tensors, metadata)


def _entry(path: Path, name: str, entry: object) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    problem = f"{path.name}: tensor {name!r} has no valid dtype, shape and data_offsets"
    if not isinstance(entry, dict):
        raise SafetensorsError(problem)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if (
        dtype not in DTYPE_SIZES
        or not isinstance(shape, list)
        or not all(isinstance(n, int) and n >= 0 for n in shape)
        or not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(n, int) for n in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise SafetensorsError(problem)
    return dtype, tuple(shape), (offsets[0], offsets[1])


def write(path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` and `metadata` as a safetensors file at `path`, atomically (temp file + rename)."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        expected = math.prod(shape) * DTYPE_SIZES[dtype]
        if len(data) != expected:
            raise ValueError(f"tensor {name!r}: {len(data)} bytes for {dtype} {list(shape)} ({expected})")
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    # The format pads the header with spaces to 8 bytes so the data is aligned.
    encoded += b" " * (-len(encoded) % 8)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as file:
            file.write(struct.pack("<Q", len(encoded)))
            file.write(encoded)
            for _, _, data in tensors.values():
                file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
