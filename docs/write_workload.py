#!/usr/bin/env python3
"""Write a kiln workload file from Python with numpy.

The format is described in docs/workload-format.md. This file is both a
small library (WorkloadWriter) and a working example:

    python3 docs/write_workload.py example.kwl [--seed 7]

writes a workload that calls every standard kernel, with expected outputs
computed here with numpy (f64 accumulation), which `kiln replay` checks.
"""

import json
import struct
import sys
import zlib

import numpy as np

MAGIC = b"KILNWKLD"
VERSION = 1
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
}


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
        a = np.ascontiguousarray(array, dtype=DTYPES[dtype])
        self.arrays.append((dtype, a))
        return len(self.arrays) - 1

    def load(self, name, array, dtype="f32"):
        """Load (or replace) the resident buffer `name`."""
        self.steps.append({"load": {"name": name, "tensor": self._section(array, dtype)}})

    def call(self, kernel, args, params=None, store_as=None, expected=None, dtype="f32"):
        """Call `kernel`. `args`: arrays (sent with the call) or Resident(name).
        `params`: Python int -> i64, float -> f64, bool, str. `expected`: the
        output it should produce (for store_as: the resident's value after)."""
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
            entry["expected"] = self._section(expected, dtype)
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
        with open(path, "wb") as f:
            f.write(MAGIC)
            f.write(struct.pack("<IIQ", VERSION, zlib.crc32(header) & 0xFFFFFFFF, len(header)))
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


def main(argv):
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--seed"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    seed = int(argv[3]) if len(argv) == 4 else 1
    example(seed).write(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
