"""Tiles of a rectangle and the stitching of their maps, in numpy (float64),
written from docs/SPEC.md section 1.2, Tiles: the reference for
fap_tiles_layout and fap_tiles_stitch (core/tiles.c).

Vectorised over the output grid, tile by tile, where the C code loops pixel
by pixel: the two share the rule, not the loops.
"""

import numpy as np


def axis_tiles(start, length, n, overlap):
    """Starts and the common size of n tiles over [start, start + length)."""
    if n == 1:
        return [start], length
    size = -(-(length + (n - 1) * overlap) // n)  # ceil
    return [start + c * (length - size) // (n - 1) for c in range(n)], size


def layout(area, cols, rows, overlap):
    """(x, y, w, h) of each tile, row-major."""
    x, y, w, h = area
    xs, tw = axis_tiles(x, w, cols, overlap)
    ys, th = axis_tiles(y, h, rows, overlap)
    return [(xs[c], ys[r], tw, th) for r in range(rows) for c in range(cols)]


def _ramp(u, starts, size, i):
    """Tile i's weight along one axis at coordinates u (inside the tile):
    1, lowered to (u - start) / band over the band shared with the previous
    tile and to (end - u) / band over the band shared with the next."""
    w = np.ones_like(u)
    p = starts[i]
    if i > 0:
        band = starts[i - 1] + size - p
        if band > 0:
            w = np.minimum(w, (u - p) / band)
    if i < len(starts) - 1:
        band = p + size - starts[i + 1]
        if band > 0:
            w = np.minimum(w, (p + size - u) / band)
    return w


def _bilinear_taps(u, start, size, s):
    """align_corners=False taps of an s-sample map stretched over
    [start, start + size), at coordinates u."""
    x = np.maximum((u - start) * s / size - 0.5, 0.0)
    i0 = np.minimum(np.floor(x).astype(np.int64), s - 1)
    i1 = np.minimum(i0 + 1, s - 1)
    return i0, i1, x - i0


def stitch(area, cols, rows, overlap, maps, out_w, out_h):
    """maps: [rows * cols, s, s]; returns the [out_h, out_w] float64 map."""
    x, y, w, h = area
    maps = np.asarray(maps, dtype=np.float64)
    s = maps.shape[-1]
    xs, tw = axis_tiles(x, w, cols, overlap)
    ys, th = axis_tiles(y, h, rows, overlap)
    u = x + (np.arange(out_w) + 0.5) * w / out_w
    v = y + (np.arange(out_h) + 0.5) * h / out_h
    total = np.zeros((out_h, out_w))
    weight = np.zeros((out_h, out_w))
    for r in range(rows):
        in_v = (v >= ys[r]) & (v < ys[r] + th)
        wy = np.where(in_v, _ramp(v, ys, th, r), 0.0)
        y0, y1, fy = _bilinear_taps(v, ys[r], th, s)
        for c in range(cols):
            in_u = (u >= xs[c]) & (u < xs[c] + tw)
            wx = np.where(in_u, _ramp(u, xs, tw, c), 0.0)
            x0, x1, fx = _bilinear_taps(u, xs[c], tw, s)
            m = maps[r * cols + c]
            top = (1 - fx)[None, :] * m[y0][:, x0] + fx[None, :] * m[y0][:, x1]
            bottom = (1 - fx)[None, :] * m[y1][:, x0] + fx[None, :] * m[y1][:, x1]
            value = (1 - fy)[:, None] * top + fy[:, None] * bottom
            wt = wy[:, None] * wx[None, :]
            total += wt * value
            weight += wt
    assert (weight > 0).all(), "a point of the rectangle has no tile weight"
    return total / weight
