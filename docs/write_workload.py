#!/usr/bin/env python3
"""Write a kiln workload file from Python with numpy.

The format is described in docs/workload-format.md. This file is both a
small library (WorkloadWriter) and a working example:

    python3 docs/write_workload.py example.kwl [--seed 7]

writes a workload that calls every standard kernel, with expected outputs
computed here with numpy (f64 accumulation), which `kiln replay` checks.

    python3 docs/write_workload.py mixed.kwl --mixed [--seed 7]

writes one that calls the f16, bf16 and i8 kernels (matmul_f16, matmul_bf16,
softmax_bf16, dot_i8, matmul_i8). f16 is numpy's float16; bf16 has no numpy
type: it is ml_dtypes.bfloat16 when ml_dtypes is installed, else raw 16-bit
words (uint16, the upper half of an f32: see to_bf16_bits); i8 is int8.

A file that uses only the version-1 dtypes is written as version 1 (kiln
still reads it); one with f16, bf16 or i8 as version 2.
"""

import json
import struct
import sys
import zlib

import numpy as np

MAGIC = b"KILNWKLD"
VERSION = 1  # files with only the version-1 dtypes
VERSION_LOW_PRECISION = 2  # f16, bf16 and i8 need version 2
ALIGN = 64
PREAMBLE = 24  # magic (8) + version (u32) + header crc32 (u32) + header length (u64)

# kiln dtype name -> numpy dtype, always little-endian
DTYPES = {
    "f32": np.dtype("<f4"),
    "f64": np.dtype("<f8"),
    "i32": np.dtype("<i4"),
    "i64": np.dtype("<i8"),
    "u32": np.dtype("<u4"),
    "u8": np.dtype("u1"),
    "f16": np.dtype("<f2"),
    "i8": np.dtype("i1"),
    # bf16: raw little-endian 16-bit words (ml_dtypes.bfloat16 arrays are
    # viewed as such).
    "bf16": np.dtype("<u2"),
}
LOW_PRECISION = {"f16", "bf16", "i8"}

try:  # optional: a real bfloat16 numpy type
    import ml_dtypes
except ImportError:
    ml_dtypes = None


def to_bf16_bits(a):
    """f32 (or ml_dtypes.bfloat16) array -> bf16 bit patterns as uint16:
    the upper half of each f32, rounded to nearest, ties to even (NaN stays
    a quiet NaN)."""
    if ml_dtypes is not None and a.dtype == ml_dtypes.bfloat16:
        return a.view(np.uint16)
    if a.dtype == np.uint16:
        return a  # already raw words
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(a, dtype=np.float32))
    return np.where(nan, ((bits >> 16) | 0x40).astype(np.uint16), rounded)


def from_bf16_bits(w):
    """bf16 bit patterns (uint16) -> float32 (exact)."""
    return (np.asarray(w, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


class Resident:
    """A call argument that names a resident buffer instead of passing data."""

    def __init__(self, name):
        self.name = name


class WorkloadWriter:
    """Collects steps, then writes the file with write(path)."""

    def __init__(self, name):
        self.name = name
        self.steps = []
        self.arrays = []  # (kiln dtype name, contiguous little-endian array)

    def _section(self, array, dtype):
        if dtype == "bf16":
            array = to_bf16_bits(np.asarray(array))
        a = np.ascontiguousarray(array, dtype=DTYPES[dtype])
        self.arrays.append((dtype, a))
        return len(self.arrays) - 1

    def load(self, name, array, dtype="f32"):
        """Load (or replace) the resident buffer `name`."""
        self.steps.append({"load": {"name": name, "tensor": self._section(array, dtype)}})

    def call(
        self, kernel, args, params=None, store_as=None, expected=None, dtype="f32", out_dtype=None
    ):
        """Call `kernel`. `args`: arrays (sent with the call) or Resident(name),
        of `dtype`. `params`: Python int -> i64, float -> f64, bool, str.
        `expected`: the output it should produce (for store_as: the resident's
        value after), of `out_dtype` (default: `dtype`)."""
        entry = {"kernel": kernel, "args": []}
        for a in args:
            if isinstance(a, Resident):
                entry["args"].append({"resident": a.name})
            else:
                entry["args"].append({"tensor": self._section(a, dtype)})
        if params:
            # numpy scalars are not JSON: make them Python numbers
            entry["params"] = {
                k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()
            }
        if store_as is not None:
            entry["store_as"] = store_as
        if expected is not None:
            entry["expected"] = self._section(expected, out_dtype or dtype)
        self.steps.append({"call": entry})

    def write(self, path):
        sections = []
        offset = 0  # from the data start
        for dtype, a in self.arrays:
            data = a.reshape(-1).data  # no copy
            sections.append(
                {
                    "dtype": dtype,
                    "shape": [int(d) for d in a.shape],
                    "offset": offset,
                    "length": a.nbytes,
                    "crc32": zlib.crc32(data) & 0xFFFFFFFF,
                }
            )
            offset = _align(offset + a.nbytes)
        header = json.dumps(
            {"name": self.name, "sections": sections, "steps": self.steps},
            separators=(",", ":"),
            allow_nan=False,
        ).encode("utf-8")
        data_start = _align(PREAMBLE + len(header))
        low = any(dtype in LOW_PRECISION for dtype, _ in self.arrays)
        version = VERSION_LOW_PRECISION if low else VERSION
        with open(path, "wb") as f:
            f.write(MAGIC)
            f.write(struct.pack("<IIQ", version, zlib.crc32(header) & 0xFFFFFFFF, len(header)))
            f.write(header)
            for (dtype, a), s in zip(self.arrays, sections):
                f.write(b"\0" * (data_start + s["offset"] - f.tell()))
                f.write(a.reshape(-1).data)
            f.write(b"\0" * (_align(f.tell()) - f.tell()))


# ----- numpy versions of the standard kernels (f64 accumulation) -----


def saxpy(a, x, y):
    a = np.float64(np.float32(a))
    return (a * x.astype(np.float64) + y.astype(np.float64)).astype(np.float32)


def dot(x, y):
    return np.array([np.dot(x.astype(np.float64), y.astype(np.float64))], dtype=np.float32)


def matmul(a, b):
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)


def stencil2d(g, alpha):
    alpha = np.float64(np.float32(alpha))
    p = np.pad(g.astype(np.float64), 1, mode="edge")  # edges clamped
    c = p[1:-1, 1:-1]
    n, s, w, e = p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]
    return (c + alpha * (n + s + w + e - 4.0 * c)).astype(np.float32)


def softmax(x):
    x = x.astype(np.float64)
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def example(seed):
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: rng.uniform(-1, 1, size=shape).astype(np.float32)
    w = WorkloadWriter(f"python-example-s{seed}")

    grid = rng.uniform(0, 1, size=(48, 64)).astype(np.float32)
    w.load("grid", grid)
    for step in range(3):
        grid = stencil2d(grid, 0.1)
        w.call(
            "stencil2d",
            [Resident("grid")],
            params={"alpha": 0.1},
            store_as="grid",
            expected=grid if step == 2 else None,
        )

    x, y = f32(10_000), f32(10_000)
    w.call("saxpy", [x, y], params={"a": 1.5}, expected=saxpy(1.5, x, y))
    w.call("dot", [x, y], expected=dot(x, y))

    weights = f32(40, 24)
    w.load("weights", weights)
    a = f32(32, 40)
    w.call("matmul", [a, Resident("weights")], expected=matmul(a, weights))

    s = (f32(16, 100) * 4).astype(np.float32)
    w.call("softmax", [s], expected=softmax(s))
    return w


# ----- the f16, bf16 and i8 kernels (kernels/declarations/*.toml) -----


def matmul_low(a, b, out):
    """f16/bf16 matmul: f32 products, the sum here in f64 (the kernels sum
    in f32 in k order: within the f16/bf16 tolerance), rounded once."""
    s = a.astype(np.float64) @ b.astype(np.float64)
    return s.astype(np.float16) if out == "f16" else to_bf16_bits(s.astype(np.float32))


def softmax_bf16(x_bits):
    return to_bf16_bits(softmax(from_bf16_bits(x_bits)))


def dot_i8(x, y):
    # int64 then wrapped to int32: two's complement, as the kernels.
    return np.array([np.dot(x.astype(np.int64), y.astype(np.int64))]).astype(np.int32)


def matmul_i8(a, b):
    return (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


def mixed_example(seed):
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: rng.uniform(-1, 1, size=shape).astype(np.float32)
    i8 = lambda *shape: rng.integers(-128, 128, size=shape).astype(np.int8)
    w = WorkloadWriter(f"python-mixed-s{seed}")

    a, b = f32(17, 33).astype(np.float16), f32(33, 65).astype(np.float16)
    w.call("matmul_f16", [a, b], expected=matmul_low(a, b, "f16"), dtype="f16")

    if ml_dtypes is not None:
        a, b = f32(9, 31).astype(ml_dtypes.bfloat16), f32(31, 7).astype(ml_dtypes.bfloat16)
        fa, fb = a.astype(np.float32), b.astype(np.float32)
    else:
        a, b = to_bf16_bits(f32(9, 31)), to_bf16_bits(f32(31, 7))
        fa, fb = from_bf16_bits(a), from_bf16_bits(b)
    w.call("matmul_bf16", [a, b], expected=matmul_low(fa, fb, "bf16"), dtype="bf16")

    x = to_bf16_bits(f32(7, 101) * 8)
    w.call("softmax_bf16", [x], expected=softmax_bf16(x), dtype="bf16")

    x, y = i8(100_003), i8(100_003)
    w.call("dot_i8", [x, y], expected=dot_i8(x, y), dtype="i8", out_dtype="i32")
    # 2^20 products of 127*127 overflow i32: the expected value wraps.
    big = np.full(1 << 20, 127, dtype=np.int8)
    w.call("dot_i8", [big, big], expected=dot_i8(big, big), dtype="i8", out_dtype="i32")

    a, b = i8(13, 257), i8(257, 11)
    w.call("matmul_i8", [a, b], expected=matmul_i8(a, b), dtype="i8", out_dtype="i32")
    return w


def main(argv):
    args = argv[1:]
    mixed = "--mixed" in args
    args = [a for a in args if a != "--mixed"]
    if len(args) not in (1, 3) or (len(args) == 3 and args[1] != "--seed"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    seed = int(args[2]) if len(args) == 3 else 1
    (mixed_example(seed) if mixed else example(seed)).write(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
