/* One axis of a tile grid and the per-point rule of docs/SPEC.md section
 * 1.2 (Tiles, Stitching): shared by the reference stitch loop (tiles.c) and
 * the precomputed stitcher (tiles_stitcher.c), so both read one rule. */
#ifndef FAP_TILES_AXIS_H
#define FAP_TILES_AXIS_H

#include <stdint.h>

#include "fap.h"

/* n tiles of `size` pixels over [start, start + len), the first at start
 * and the last flush with the end. */
typedef struct {
  int64_t start, len, n, size;
} fap_tiles_axis;

static inline int64_t fap_tiles_axis_pos(const fap_tiles_axis *a, int64_t i) {
  return a->start + (a->n > 1 ? i * (a->len - a->size) / (a->n - 1) : 0);
}

/* Tile i's part at coordinate u of its axis (u inside the tile): the ramp
 * over each overlap band with a neighbour, 0 at the tile's edge, 1 where the
 * band ends; 1 outside every band. Two neighbours' ramps across a band sum
 * to 1. */
static inline double fap_tiles_axis_weight(const fap_tiles_axis *a, int64_t i, int64_t pos,
                                           double u) {
  double w = 1.0;
  if (i > 0) {
    double band = (double)(fap_tiles_axis_pos(a, i - 1) + a->size - pos);
    if (band > 0 && (u - pos) / band < w)
      w = (u - pos) / band;
  }
  if (i < a->n - 1) {
    double band = (double)(pos + a->size - fap_tiles_axis_pos(a, i + 1));
    if (band > 0 && (pos + a->size - u) / band < w)
      w = (pos + a->size - u) / band;
  }
  return w;
}

/* Bilinear taps (align_corners = false, as docs/SPEC.md section 2.2) of a
 * map of s samples stretched over the tile, at coordinate u. */
static inline void fap_tiles_axis_taps(const fap_tiles_axis *a, int64_t pos, double u, int s,
                                       int *i0, int *i1, double *f) {
  double x = (u - (double)pos) * s / (double)a->size - 0.5;
  if (x < 0)
    x = 0;
  int lo = (int)x;
  if (lo > s - 1)
    lo = s - 1;
  *i0 = lo;
  *i1 = lo < s - 1 ? lo + 1 : lo;
  *f = x - lo;
}

/* The two axes of a layout, or an error (logged, naming the value) for a
 * rectangle, grid or overlap fap_tiles_layout refuses. */
fap_status fap_tiles_axes(const char *who, fap_rect area, int cols, int rows, int overlap,
                          fap_tiles_axis *ax, fap_tiles_axis *ay);

#endif
