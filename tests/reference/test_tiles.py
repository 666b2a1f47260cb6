#!/usr/bin/python3
"""fap_tiles_layout, fap_tiles_stitch and fap_tiles_stitcher (libfaprompt,
through ctypes) against
the numpy reference of docs/SPEC.md section 1.2, Tiles (tiles_ref.py): the
same tile rectangles, and stitched maps within 1e-6 on random maps, for
several grids, overlaps 0 and > 0, odd sizes, output sizes at, below and
above the rectangle's. The C code computes in double and stores float: the
only difference left is the final rounding to float (about 6e-8 on [0, 1]).
The precomputed stitcher (fap_tiles_stitcher) runs in float: a few float
roundings (about 2e-7), held to the same 1e-6.

Usage: test_tiles.py --lib BUILD/core/libfaprompt.so.0
Prints "N passed, M failed"; exits non-zero on any failure.
"""

import argparse
import ctypes
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiles_ref  # noqa: E402

TOLERANCE = 1e-6


class fap_rect(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int),
                ("width", ctypes.c_int), ("height", ctypes.c_int)]


def bind(path):
    lib = ctypes.CDLL(path)
    lib.fap_tiles_layout.argtypes = [fap_rect, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                     ctypes.POINTER(fap_rect)]
    lib.fap_tiles_layout.restype = ctypes.c_int
    lib.fap_tiles_stitch.argtypes = [fap_rect, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                     ctypes.POINTER(ctypes.POINTER(ctypes.c_float)),
                                     ctypes.c_int, ctypes.POINTER(ctypes.c_float),
                                     ctypes.c_int, ctypes.c_int]
    lib.fap_tiles_stitch.restype = ctypes.c_int
    lib.fap_tiles_stitcher_new.argtypes = [fap_rect, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                           ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                           ctypes.POINTER(ctypes.c_void_p)]
    lib.fap_tiles_stitcher_new.restype = ctypes.c_int
    lib.fap_tiles_stitcher_run.argtypes = [ctypes.c_void_p,
                                           ctypes.POINTER(ctypes.POINTER(ctypes.c_float)),
                                           ctypes.POINTER(ctypes.c_float)]
    lib.fap_tiles_stitcher_run.restype = ctypes.c_int
    lib.fap_tiles_stitcher_free.argtypes = [ctypes.c_void_p]
    lib.fap_tiles_stitcher_free.restype = None
    lib.fap_last_error.restype = ctypes.c_char_p
    return lib


def c_layout(lib, area, cols, rows, overlap):
    tiles = (fap_rect * (cols * rows))()
    st = lib.fap_tiles_layout(fap_rect(*area), cols, rows, overlap, tiles)
    assert st == 0, lib.fap_last_error().decode()
    return [(t.x, t.y, t.width, t.height) for t in tiles]


def c_stitch(lib, area, cols, rows, overlap, maps, out_w, out_h):
    maps = [np.ascontiguousarray(m, dtype=np.float32) for m in maps]
    ptrs = (ctypes.POINTER(ctypes.c_float) * len(maps))(
        *[m.ctypes.data_as(ctypes.POINTER(ctypes.c_float)) for m in maps])
    out = np.full((out_h, out_w), np.nan, dtype=np.float32)
    st = lib.fap_tiles_stitch(fap_rect(*area), cols, rows, overlap, ptrs, maps[0].shape[0],
                              out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), out_w, out_h)
    assert st == 0, lib.fap_last_error().decode()
    return out


def c_stitcher(lib, area, cols, rows, overlap, maps, out_w, out_h):
    maps = [np.ascontiguousarray(m, dtype=np.float32) for m in maps]
    ptrs = (ctypes.POINTER(ctypes.c_float) * len(maps))(
        *[m.ctypes.data_as(ctypes.POINTER(ctypes.c_float)) for m in maps])
    out = np.full((out_h, out_w), np.nan, dtype=np.float32)
    handle = ctypes.c_void_p()
    st = lib.fap_tiles_stitcher_new(fap_rect(*area), cols, rows, overlap, maps[0].shape[0],
                                    out_w, out_h, ctypes.byref(handle))
    assert st == 0, lib.fap_last_error().decode()
    try:
        st = lib.fap_tiles_stitcher_run(handle, ptrs,
                                        out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        assert st == 0, lib.fap_last_error().decode()
    finally:
        lib.fap_tiles_stitcher_free(handle)
    return out


# area (x, y, w, h), cols, rows, overlap, map side, output (w, h); None = area size
CASES = [
    ((0, 0, 40, 30), 1, 1, 0, 7, None),          # one tile: a plain resize
    ((3, 5, 37, 23), 2, 1, 0, 5, None),          # no overlap: placement
    ((0, 0, 41, 29), 3, 2, 0, 6, (20, 13)),      # no overlap, output below
    ((11, 2, 57, 31), 3, 2, 6, 7, None),         # overlap, odd sizes, offset
    ((0, 0, 64, 64), 4, 4, 8, 14, None),         # square grid
    ((7, 9, 53, 19), 2, 3, 5, 5, (107, 41)),     # output above the rectangle
    ((0, 0, 35, 22), 3, 1, 32, 4, None),         # overlap at its maximum (W - cols)
    ((0, 0, 30, 30), 2, 2, 17, 9, (31, 29)),     # bands wider than half a tile
    ((5, 0, 23, 17), 5, 4, 3, 3, None),          # small tiles, three in a band
    ((0, 0, 100, 9), 4, 1, 12, 14, (50, 9)),     # a line camera strip
    ((0, 0, 1920, 1080), 4, 2, 32, 37, (148, 148)),  # 1080p, the element's map side
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    args = ap.parse_args()
    lib = bind(args.lib)
    rng = np.random.default_rng(7)
    passed = failed = 0
    for area, cols, rows, overlap, s, out in CASES:
        name = f"{area} {cols}x{rows} overlap {overlap} map {s} out {out}"
        try:
            got = c_layout(lib, area, cols, rows, overlap)
            want = tiles_ref.layout(area, cols, rows, overlap)
            assert got == want, f"layout {got} != {want}"
            out_w, out_h = out or area[2:]
            maps = rng.random((cols * rows, s, s), dtype=np.float32)
            c = c_stitch(lib, area, cols, rows, overlap, maps, out_w, out_h)
            ref = tiles_ref.stitch(area, cols, rows, overlap, maps, out_w, out_h)
            err = float(np.max(np.abs(c.astype(np.float64) - ref)))
            assert err <= TOLERANCE, f"max |C - numpy| = {err:.3g} > {TOLERANCE}"
            fast = c_stitcher(lib, area, cols, rows, overlap, maps, out_w, out_h)
            err_fast = float(np.max(np.abs(fast.astype(np.float64) - ref)))
            assert err_fast <= TOLERANCE, \
                f"max |stitcher - numpy| = {err_fast:.3g} > {TOLERANCE}"
            print(f"ok {name}: max error {err:.2g}, stitcher {err_fast:.2g}")
            passed += 1
        except AssertionError as e:
            print(f"FAIL {name}: {e}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
