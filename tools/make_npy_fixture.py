#!/usr/bin/env python3
"""Writes the small .npy fixtures of tests/io/test_npy.cpp with NumPy.

    python3 tools/make_npy_fixture.py            # writes tests/fixtures/npy/*.npy

Each array's values follow a formula that tests/io/test_npy.cpp recomputes independently,
so the C++ reader is checked against bytes NumPy itself wrote. Needs numpy (pip or
Debian's python3-numpy); ctest does not run this script, it reads what it committed.
"""
import os
import sys

import numpy as np

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "npy")
os.makedirs(out, exist_ok=True)


def save(name, a):
    np.save(os.path.join(out, name), a)
    print(f"{name}: {a.dtype.str} {a.shape} fortran={a.flags.f_contiguous and not a.flags.c_contiguous}")


# float32 (2, 3): 0.5 * i - 1.25
save("f32_2x3.npy", (0.5 * np.arange(6, dtype=np.float32) - 1.25).reshape(2, 3))
# float64 (4,): values float32 could not hold
save("f64_4.npy", np.array([1.0 / 3.0, -2.5e-300, 1e300, np.pi], dtype=np.float64))
# int32 (2, 2, 3): i * 1000003 - 6000000, plus the extremes at both ends
i32 = (np.arange(12, dtype=np.int64) * 1000003 - 6000000).astype(np.int32)
i32[0], i32[-1] = np.iinfo(np.int32).min, np.iinfo(np.int32).max
save("i32_2x2x3.npy", i32.reshape(2, 2, 3))
# int64 (3,): the extremes and a value past 2^53 (a float64 would round it)
save("i64_3.npy", np.array([np.iinfo(np.int64).min, 2**53 + 1, np.iinfo(np.int64).max], dtype=np.int64))
# uint8 (5,) and bool (4,)
save("u8_5.npy", np.array([0, 1, 127, 128, 255], dtype=np.uint8))
save("bool_4.npy", np.array([True, False, False, True]))
# big-endian float32 (2, 2): the same formula as f32_2x3, first four values
save("f32_be_2x2.npy", (0.5 * np.arange(4, dtype=np.float32) - 1.25).reshape(2, 2).astype(">f4"))
# Fortran order float32 (2, 3): ctdl refuses it
save("f32_fortran_2x3.npy", np.asfortranarray((0.5 * np.arange(6, dtype=np.float32) - 1.25).reshape(2, 3)))
# empty float32 (0, 4) and a rank-0 float32 scalar
save("f32_0x4.npy", np.zeros((0, 4), dtype=np.float32))
save("f32_scalar.npy", np.array(2.5, dtype=np.float32))
# a rank-20 float32 (1, ..., 1, 3): its header is longer than 127 bytes (NumPy pads it to
# 192), a length whose low byte is >= 0x80
save("f32_rank20.npy", np.array([1.5, -2.0, 4.25], dtype=np.float32).reshape((1,) * 19 + (3,)))

# .npz: np.savez (members stored, zip64 local headers as NumPy writes them) of two arrays,
# and np.savez_compressed (deflated), which ctdl refuses
np.savez(os.path.join(out, "arrays.npz"), weights=(0.5 * np.arange(6, dtype=np.float32) - 1.25).reshape(2, 3),
         ids=np.array([np.iinfo(np.int64).min, 2**53 + 1, np.iinfo(np.int64).max], dtype=np.int64))
np.savez_compressed(os.path.join(out, "compressed.npz"), weights=np.zeros((2, 3), dtype=np.float32))
print("arrays.npz: weights float32 (2, 3), ids int64 (3,); compressed.npz: weights (deflated)")

total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
print(f"{len(os.listdir(out))} files, {total} bytes in {out}", file=sys.stderr)
