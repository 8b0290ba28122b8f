"""safetensors_read.py -- a small independent safetensors reader (json + struct + numpy only; no
safetensors package), following anchors.md B3: u64 little-endian header length N, N bytes of JSON
{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the byte buffer
with offsets relative to its start. Validates that the tensors tile the buffer exactly.
Returns (dict name -> numpy array, metadata dict); raises ValueError naming the file on bad input.
"""
import json
import struct

import numpy as np

DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I32": "<i4", "I64": "<i8", "U8": "u1"}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: {len(blob)} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > 100_000_000 or 8 + n > len(blob):
        raise ValueError(f"{path}: header length {n} does not fit the {len(blob)}-byte file")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: header is not UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    buf = blob[8 + n:]
    tensors, spans = {}, []
    for name, info in header.items():
        dt = DTYPES.get(info.get("dtype"))
        if dt is None:
            raise ValueError(f"{path}: {name}: unsupported dtype {info.get('dtype')!r}")
        shape = [int(s) for s in info["shape"]]
        begin, end = (int(v) for v in info["data_offsets"])
        numel = int(np.prod(shape)) if shape else 1
        if end - begin != numel * np.dtype(dt).itemsize or not 0 <= begin <= end <= len(buf):
            raise ValueError(f"{path}: {name}: offsets [{begin}, {end}) do not hold "
                             f"{shape} {info['dtype']} in a {len(buf)}-byte buffer")
        tensors[name] = np.frombuffer(buf, dtype=dt, count=numel, offset=begin).reshape(shape)
        spans.append((begin, end, name))
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            raise ValueError(f"{path}: {name} starts at {begin}, expected {pos} (gap or overlap)")
        pos = end
    if pos != len(buf):
        raise ValueError(f"{path}: tensors end at {pos} but the buffer has {len(buf)} bytes")
    return tensors, meta
