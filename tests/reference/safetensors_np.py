"""Minimal safetensors reader/writer built on json + numpy (no safetensors package).

File layout (https://github.com/huggingface/safetensors):
    u64 little-endian N | N bytes of JSON header | raw tensor bytes
The header maps tensor name -> {"dtype", "shape", "data_offsets": [begin, end]}
(offsets relative to the start of the data section), plus an optional
"__metadata__" dict of str -> str.

Supported dtypes: F64, F32, F16, BF16, F8_E4M3 (OCP E4M3FN), I64, I32, I16, I8, U8, BOOL.
BF16 is handled via uint16 <-> uint32 bit shifts, F8_E4M3 via a 256-entry
decode table derived from the OCP definition (bias 7, subnormals, only
0x7f/0xff are NaN, no infinities, max finite 448).
"""
import json
import math
import os
import struct

import numpy as np

# ---------------------------------------------------------------- FP8 E4M3FN


def _e4m3fn_value(code):
    """Decode one byte in OCP FP8 E4M3FN: 1 sign, 4 exponent (bias 7), 3 mantissa bits."""
    sign = -1.0 if code & 0x80 else 1.0
    exp = (code >> 3) & 0xF
    man = code & 0x7
    if exp == 0xF and man == 0x7:
        return float("nan")  # 0x7f / 0xff: the only NaNs, there are no infinities
    if exp == 0:
        return sign * (man / 8.0) * 2.0 ** (1 - 7)  # subnormal: m * 2^-9
    return sign * (1.0 + man / 8.0) * 2.0 ** (exp - 7)


E4M3_DECODE = np.array([_e4m3fn_value(c) for c in range(256)], dtype=np.float32)
E4M3_MAX = 448.0

# Non-negative finite codes 0x00..0x7e are monotonically increasing in value.
_E4M3_POS_VALUES = E4M3_DECODE[:0x7F].astype(np.float64)


def fp8_e4m3_decode(codes):
    """uint8 array -> float32 array (exact)."""
    return E4M3_DECODE[np.asarray(codes, dtype=np.uint8)]


def fp8_e4m3_encode(x):
    """float array -> uint8 codes, round to nearest (ties to even mantissa), saturating to +-448.
    NaN -> 0x7f."""
    x = np.asarray(x, dtype=np.float64)
    sign = np.signbit(x)
    a = np.minimum(np.abs(x), E4M3_MAX)
    a = np.where(np.isnan(a), 0.0, a)
    hi = np.searchsorted(_E4M3_POS_VALUES, a, side="left")  # first value >= a
    hi = np.clip(hi, 0, 0x7E)
    lo = np.clip(hi - 1, 0, 0x7E)
    d_hi = _E4M3_POS_VALUES[hi] - a
    d_lo = a - _E4M3_POS_VALUES[lo]
    pick_lo = (d_lo < d_hi) | ((d_lo == d_hi) & (lo % 2 == 0))
    code = np.where(pick_lo, lo, hi).astype(np.uint8)
    code = np.where(sign, code | 0x80, code).astype(np.uint8)
    code = np.where(np.isnan(np.asarray(x, dtype=np.float64)), np.uint8(0x7F), code)
    return code.astype(np.uint8)


# ---------------------------------------------------------------- BF16


def bf16_decode(u16):
    """uint16 bit patterns -> float32 (exact)."""
    u16 = np.asarray(u16, dtype=np.uint16)
    return (u16.astype(np.uint32) << np.uint32(16)).view(np.float32)


def bf16_encode(x):
    """float -> uint16 bit patterns, round to nearest even (NaN stays NaN)."""
    f = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    u = f.view(np.uint32).astype(np.uint64)
    rounding = ((u >> np.uint64(16)) & np.uint64(1)) + np.uint64(0x7FFF)
    r = ((u + rounding) >> np.uint64(16)).astype(np.uint16)
    nan = np.isnan(f)
    r = np.where(nan, ((u >> np.uint64(16)).astype(np.uint16) | np.uint16(0x40)), r)
    return r.astype(np.uint16)


# ---------------------------------------------------------------- dtype table

_NP_STORAGE = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("u1"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


def decode_raw(dtype, raw):
    """Storage array (as read from file) -> numeric numpy array (float32 for float dtypes)."""
    if dtype == "BF16":
        return bf16_decode(raw)
    if dtype == "F8_E4M3":
        return fp8_e4m3_decode(raw)
    if dtype == "F16":
        return raw.astype(np.float32)
    if dtype == "F32":
        return raw.astype(np.float32)
    return raw.copy()


# ---------------------------------------------------------------- reading


class SafetensorsFile:
    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100 * 1024 * 1024:
                raise ValueError(f"{path}: implausible header size {n}")
            header = json.loads(f.read(n).decode("utf-8"))
        self.data_start = 8 + n
        self.metadata = header.pop("__metadata__", None) or {}
        self.header = header
        file_size = os.path.getsize(path)
        for name, info in header.items():
            b, e = info["data_offsets"]
            dt = info["dtype"]
            if dt not in _NP_STORAGE:
                raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
            numel = int(np.prod(info["shape"], dtype=np.int64)) if info["shape"] else 1
            if e - b != numel * _NP_STORAGE[dt].itemsize:
                raise ValueError(f"{path}: tensor {name}: byte size {e - b} != shape {info['shape']} x {dt}")
            if self.data_start + e > file_size:
                raise ValueError(f"{path}: tensor {name} extends past end of file")
        self._mm = None

    def keys(self):
        return list(self.header.keys())

    def dtype(self, name):
        return self.header[name]["dtype"]

    def shape(self, name):
        return tuple(self.header[name]["shape"])

    def raw(self, name):
        """The stored array with its storage numpy dtype (uint16 for BF16, uint8 for F8_E4M3)."""
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        info = self.header[name]
        b, e = info["data_offsets"]
        st = _NP_STORAGE[info["dtype"]]
        buf = self._mm[self.data_start + b:self.data_start + e]
        return np.frombuffer(buf.tobytes(), dtype=st).reshape(info["shape"])

    def get(self, name):
        return decode_raw(self.dtype(name), self.raw(name))


class Checkpoint:
    """All tensors of a checkpoint directory (or a single .safetensors file).

    Directory resolution: model.safetensors.index.json ("weight_map": name -> file)
    if present, else model.safetensors, else every *.safetensors in the directory.
    """

    def __init__(self, path):
        self.files = {}
        self.where = {}
        if os.path.isfile(path):
            self._add(path)
            return
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                wm = json.load(f)["weight_map"]
            for fname in sorted(set(wm.values())):
                self._add(os.path.join(path, fname))
            for name, fname in wm.items():
                if self.where.get(name) is not self.files[fname]:
                    raise ValueError(f"index says {name} is in {fname}, but it is not there")
            return
        single = os.path.join(path, "model.safetensors")
        if os.path.exists(single):
            self._add(single)
            return
        names = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
        if not names:
            raise FileNotFoundError(f"no safetensors files in {path}")
        for n in names:
            self._add(os.path.join(path, n))

    def _add(self, fpath):
        sf = SafetensorsFile(fpath)
        self.files[os.path.basename(fpath)] = sf
        for k in sf.keys():
            if k in self.where:
                raise ValueError(f"tensor {k} appears in more than one file")
            self.where[k] = sf

    def keys(self):
        return list(self.where.keys())

    def __contains__(self, name):
        return name in self.where

    def dtype(self, name):
        return self.where[name].dtype(name)

    def shape(self, name):
        return self.where[name].shape(name)

    def raw(self, name):
        return self.where[name].raw(name)

    def get(self, name):
        return self.where[name].get(name)

    def get_dequant(self, name, block_size=(128, 128)):
        """Numeric tensor; an F8_E4M3 tensor `X` is multiplied blockwise by `X_scale_inv`
        (F32, shape [ceil(rows/b0), ceil(cols/b1)]): w[i, j] = q[i, j] * s[i // b0, j // b1]."""
        w = self.get(name)
        if self.dtype(name) != "F8_E4M3":
            return w
        sname = name + "_scale_inv"
        if sname not in self:
            raise KeyError(f"{name} is F8_E4M3 but {sname} is missing")
        return dequant_blockwise(w, self.get(sname).astype(np.float32), block_size)


def dequant_blockwise(w, s, block_size=(128, 128)):
    if w.ndim != 2:
        raise ValueError(f"blockwise dequant expects a 2-D weight, got shape {w.shape}")
    b0, b1 = int(block_size[0]), int(block_size[1])
    r, c = w.shape
    want = (math.ceil(r / b0), math.ceil(c / b1))
    if tuple(s.shape) != want:
        raise ValueError(f"scale_inv shape {tuple(s.shape)} != expected {want} for weight {w.shape}")
    full = np.repeat(np.repeat(s, b0, axis=0), b1, axis=1)[:r, :c]
    return (w.astype(np.float64) * full.astype(np.float64))


def quant_blockwise(w, block_size=(128, 128)):
    """float weight -> (uint8 E4M3 codes, float32 scale_inv) with per-block scale amax/448."""
    w = np.asarray(w, dtype=np.float64)
    b0, b1 = block_size
    r, c = w.shape
    nr, nc = math.ceil(r / b0), math.ceil(c / b1)
    s = np.zeros((nr, nc), dtype=np.float32)
    q = np.zeros((r, c), dtype=np.uint8)
    for i in range(nr):
        for j in range(nc):
            blk = w[i * b0:(i + 1) * b0, j * b1:(j + 1) * b1]
            amax = float(np.max(np.abs(blk))) if blk.size else 0.0
            sc = np.float32(amax / E4M3_MAX) if amax > 0 else np.float32(1.0)
            s[i, j] = sc
            q[i * b0:(i + 1) * b0, j * b1:(j + 1) * b1] = fp8_e4m3_encode(blk / float(sc))
    return q, s


# ---------------------------------------------------------------- writing


def write_safetensors(path, tensors, metadata=None):
    """tensors: dict name -> (dtype_str, storage ndarray) or plain float ndarray (written as F32).
    For "BF16" / "F8_E4M3" a float array is encoded; a uint16 / uint8 array is taken as bits."""
    header = {}
    blobs = []
    off = 0
    for name in sorted(tensors):
        v = tensors[name]
        if isinstance(v, tuple):
            dt, arr = v
        else:
            dt, arr = "F32", v
        arr = np.asarray(arr)
        if dt == "BF16" and arr.dtype != np.uint16:
            arr = bf16_encode(arr)
        elif dt == "F8_E4M3" and arr.dtype != np.uint8:
            arr = fp8_e4m3_encode(arr)
        else:
            arr = arr.astype(_NP_STORAGE[dt])
        b = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
