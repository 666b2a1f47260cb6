"""Minimal safetensors writer/reader on numpy arrays (no `safetensors` package).

Container: 8-byte little-endian header length n, n bytes of JSON, raw
little-endian tensor data. The writer lays tensors out contiguously in
ascending name order, so identical inputs give identical bytes, and pads the
JSON with spaces so the data area starts on an 8-byte boundary (the C core maps
the file and benefits from aligned data; it accepts unaligned data too).

Large models are written one tensor at a time: a value may be a `Lazy`
(dtype, shape, and a function producing the array), called only when its
bytes are written, so no more than one tensor is in memory at once.

bfloat16 has no numpy dtype: a BF16 tensor is given as its raw bits in a
uint16 array wrapped in `Raw("BF16", bits)` (from torch:
`t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)`). The reader
widens BF16 to float32, which is exact.
"""

import json
import struct

import numpy as np

# dtype name in the header -> little-endian numpy storage dtype
_STORAGE = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U8": np.dtype("u1"),
}

# numpy dtype kind+size -> header name, for plain arrays (uint16 is left out on
# purpose: it would be ambiguous with BF16 bits, so it must come wrapped in Raw)
_FROM_NUMPY = {
    ("f", 4): "F32",
    ("f", 2): "F16",
    ("i", 4): "I32",
    ("i", 8): "I64",
    ("u", 1): "U8",
}

MAX_HEADER = 100 * 1024 * 1024  # same limit as core/safetensors.h


class Raw:
    """An array stored under an explicit dtype name (needed for BF16 bits)."""

    def __init__(self, dtype, array):
        if dtype not in _STORAGE:
            raise ValueError(f"unknown dtype {dtype!r}")
        self.dtype = dtype
        self.array = np.asarray(array)
        self.shape = tuple(self.array.shape)

    def get(self):
        return self.array


class Lazy:
    """A tensor whose data is produced only when it is written (streaming)."""

    def __init__(self, dtype, shape, make):
        if dtype not in _STORAGE:
            raise ValueError(f"unknown dtype {dtype!r}")
        self.dtype = dtype
        self.shape = tuple(int(d) for d in shape)
        self.make = make

    def get(self):
        return np.asarray(self.make())


def _describe(name, value):
    """(dtype name, shape) of a tensor value without materialising a Lazy."""
    if isinstance(value, (Raw, Lazy)):
        return value.dtype, value.shape
    arr = np.asarray(value)
    key = (arr.dtype.kind, arr.dtype.itemsize)
    if key not in _FROM_NUMPY:
        raise TypeError(f"{name}: numpy dtype {arr.dtype} has no safetensors name "
                        "(wrap BF16 bits in fapfile.Raw('BF16', ...))")
    return _FROM_NUMPY[key], tuple(arr.shape)


def _nbytes(dtype, shape):
    n = _STORAGE[dtype].itemsize
    for d in shape:
        n *= int(d)
    return n


def _header_bytes(entries, metadata):
    """JSON header padded with spaces to a multiple of 8 bytes."""
    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"metadata must map str to str, got {k!r}: {v!r}")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dtype, shape in entries:
        size = _nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    raw += b" " * (-len(raw) % 8)
    return raw, offset


def write(path, tensors, metadata=None, progress=None):
    """Writes tensors (name -> ndarray | Raw | Lazy) to path; returns bytes written.

    Tensors are stored in ascending name order; each value is materialised,
    checked against its declared dtype/shape, written and dropped before the
    next one, so memory stays at one tensor.

    progress, if given, is called as progress(done_bytes, total_bytes, name)
    after each tensor is written (and once with name None after the header),
    where total_bytes is the final file size.
    """
    names = sorted(tensors)
    if "__metadata__" in tensors:
        raise ValueError("'__metadata__' is reserved")
    entries = [(n, *_describe(n, tensors[n])) for n in names]
    header, data_size = _header_bytes(entries, metadata)
    if len(header) > MAX_HEADER:
        raise ValueError("header too large")
    file_size = 8 + len(header) + data_size
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        if progress is not None:
            progress(f.tell(), file_size, None)
        for name, dtype, shape in entries:
            value = tensors[name]
            arr = value.get() if isinstance(value, (Raw, Lazy)) else np.asarray(value)
            if tuple(arr.shape) != tuple(shape):
                raise ValueError(f"{name}: produced shape {arr.shape}, declared {shape}")
            storage = _STORAGE[dtype]
            if arr.dtype.kind != storage.kind or arr.dtype.itemsize != storage.itemsize:
                raise TypeError(f"{name}: produced {arr.dtype}, declared {dtype}")
            # astype to the little-endian storage dtype is a no-op on LE hosts
            arr = np.ascontiguousarray(arr.astype(storage, copy=False))
            # writing the buffer directly avoids a tobytes() copy of big tensors
            f.write(memoryview(arr.reshape(-1)).cast("B"))
            del arr
            if progress is not None:
                progress(f.tell(), file_size, name)
        total = f.tell()
    if total != file_size:
        raise RuntimeError(f"{path}: wrote {total} bytes, expected {file_size}")
    return total


def read_header(path):
    """(header dict without __metadata__, metadata dict, data start offset)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n < 2 or n > MAX_HEADER:
            raise ValueError(f"{path}: bad header length {n}")
        raw = f.read(n)
    if len(raw) != n:
        raise ValueError(f"{path}: truncated header")
    header = json.loads(raw.decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + n


def read(path, widen_bf16=True):
    """Returns ({name: numpy array}, metadata).

    Arrays are read-only views of a memory map (no copy), except BF16 which is
    widened to float32 (set widen_bf16=False to get the raw uint16 bits).
    Validates that the entries tile the data area exactly, as the core does.
    """
    header, metadata, start = read_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    data_size = mm.shape[0] - start
    spans = []
    out = {}
    for name, info in header.items():
        dtype = info["dtype"]
        if dtype not in _STORAGE:
            raise ValueError(f"{path}: {name}: unsupported dtype {dtype}")
        shape = tuple(int(d) for d in info["shape"])
        b, e = (int(x) for x in info["data_offsets"])
        if not 0 <= b <= e <= data_size or e - b != _nbytes(dtype, shape):
            raise ValueError(f"{path}: {name}: bad data_offsets {b}..{e}")
        spans.append((b, e, name))
        count = (e - b) // _STORAGE[dtype].itemsize
        # frombuffer copes with offsets that are not a multiple of the item size
        arr = np.frombuffer(mm, dtype=_STORAGE[dtype], count=count, offset=start + b)
        arr = arr.reshape(shape)
        if dtype == "BF16" and widen_bf16:
            arr = bf16_bits_to_f32(arr)
        out[name] = arr
    pos = 0
    for b, e, name in sorted(spans):
        if b != pos:
            raise ValueError(f"{path}: {name}: data not contiguous at {b} (expected {pos})")
        pos = e
    if pos != data_size:
        raise ValueError(f"{path}: tensors cover {pos} of {data_size} data bytes")
    return out, metadata


def bf16_bits_to_f32(bits):
    """Exact widening of bfloat16 bit patterns (uint16) to float32."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    """float32 -> bfloat16 bits, round to nearest even (as torch does); NaN kept NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    return np.where(nan, np.uint16(0x7FC0), rounded).astype(np.uint16)
