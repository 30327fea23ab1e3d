#!/usr/bin/env python3
"""Checks with NumPy the .npy files tests/io/npy_write_for_numpy.cpp wrote.

    check_npy_written.py <fixtures/npy> <dir written>

Exit 0: every file loads with np.load (allow_pickle=False) and has the expected dtype,
shape and values; 1: a mismatch (named); 77: numpy is not installed (ctest: skipped).
"""
import os
import sys

try:
    import numpy as np
except ImportError:
    print("io/npy_numpy_reads skipped: python3 has no numpy (Debian: python3-numpy)")
    sys.exit(77)

fixtures, written = sys.argv[1], sys.argv[2]
failures = []


def check(name, expected):
    a = np.load(os.path.join(written, name), allow_pickle=False)
    if a.dtype != expected.dtype or a.shape != expected.shape or not a.flags.c_contiguous:
        failures.append(f"{name}: {a.dtype} {a.shape} where {expected.dtype} {expected.shape} was expected")
    elif not np.array_equal(a, expected):
        failures.append(f"{name}: values differ: {a.ravel()[:8]} vs {expected.ravel()[:8]}")
    else:
        print(f"{name}: {a.dtype} {a.shape} ok")


check("formula_f32_3x4.npy", (np.arange(12, dtype=np.float32) / np.float32(7) - np.float32(0.75)).reshape(3, 4))
check("formula_f64_5.npy", 1.0 / np.arange(1, 6, dtype=np.float64))
check("formula_i64_2x3.npy", ((np.arange(6, dtype=np.int64) - 3) * 2**40).reshape(2, 3))
check("formula_i32_0x7.npy", np.zeros((0, 7), dtype=np.int32))
check("formula_f32_scalar.npy", np.array(2.5, dtype=np.float32))
for name in ["f32_2x3.npy", "f64_4.npy", "i32_2x2x3.npy", "i64_3.npy", "u8_5.npy", "bool_4.npy",
             "f32_be_2x2.npy", "f32_0x4.npy", "f32_scalar.npy"]:
    original = np.load(os.path.join(fixtures, name))
    check("roundtrip_" + name, original.astype(original.dtype.newbyteorder("<")))



def check_npz(name, expected):
    with np.load(os.path.join(written, name), allow_pickle=False) as z:
        if sorted(z.files) != sorted(expected):
            failures.append(f"{name}: arrays {sorted(z.files)} where {sorted(expected)} were expected")
            return
        for key, e in expected.items():
            a = z[key]
            if a.dtype != e.dtype or a.shape != e.shape or not np.array_equal(a, e):
                failures.append(f"{name}[{key}]: {a.dtype} {a.shape} {a.ravel()[:6]} where {e.dtype} {e.shape} {e.ravel()[:6]}")
                return
    print(f"{name}: {', '.join(sorted(expected))} ok")


check_npz("formula.npz", {"f32": np.load(os.path.join(written, "formula_f32_3x4.npy")),
                          "i64": np.load(os.path.join(written, "formula_i64_2x3.npy"))})
with np.load(os.path.join(fixtures, "arrays.npz")) as original:
    check_npz("roundtrip_arrays.npz", {k: original[k] for k in original.files})

expected_files = 16
found = len([f for f in os.listdir(written) if f.endswith(".npy") or f.endswith(".npz")])
if found != expected_files:
    failures.append(f"{written}: {found} .npy files, {expected_files} expected (a temporary left behind?)")
for f in failures:
    print("FAIL", f)
sys.exit(1 if failures else 0)
