/* fap_tiles_stitch's rule (docs/SPEC.md section 1.2, Stitching) made
 * separable and precomputed: the public fap_tiles_stitcher (fap.h).
 *
 * The weight of a tile at a point is a product ω_x ω_y, the tiles covering a
 * point are a run of columns times a run of rows, so Σ ω = (Σ ω_x)(Σ ω_y)
 * and the whole rule factors into one horizontal and one vertical
 * resampling, each with fixed taps. Per output column the plan holds the
 * covering columns' bilinear taps with their normalised ramp weights
 * folded in (a = (1 − f) ω_x / Σ ω_x, b = f ω_x / Σ ω_x); per output row the
 * same for the rows. A stitch then runs two passes:
 *   1. each map row y of each tile row r, resampled across the output's
 *      width (all columns of that tile row together): rows · S rows of
 *      out_width, a few taps each;
 *   2. each output row, a weighted sum of one or a few of those rows: a
 *      contiguous multiply-add over the width, which the compiler
 *      vectorises.
 * Pass 2 is the cost that grows with the output; it reads the pass-1 rows
 * from cache. Everything is computed once per layout and output size; a
 * stitch allocates nothing. Floats: the taps and ramps are computed in
 * double as in fap_tiles_stitch, then stored as float and both passes run
 * in float, where the reference sums in double; tests/test_tiles.c bounds
 * the difference (and the numpy reference test holds it to its 1e-6). */
#include "fap.h"
#include "fastmath.h"
#include "log.h"
#include "tiles_axis.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One covering tile's contribution along an axis: the tile's index along
 * the axis, its two bilinear taps and their weights. */
typedef struct {
  int tile, i0, i1;
  float a, b;
} stitch_tap;

/* The taps of n output samples along one axis: those of sample k are
 * taps[first[k] .. first[k + 1]). */
typedef struct {
  int *first;
  stitch_tap *taps;
} axis_plan;

struct fap_tiles_stitcher {
  fap_rect area;
  int cols, rows, overlap, map_size, out_width, out_height;
  axis_plan x, y;
  uint8_t *row_used; /* rows * S: whether pass 2 reads pass-1 row (r, y) */
  float *rows_buf;   /* rows * S rows of out_width: pass 1's result */
  /* pass 1 as gathers from the tile row's maps laid side by side (cols * S
   * floats, row_cat): every output column's first tap (two samples, x_j0
   * and x_j1 weighted x_a and x_b), then the further taps of the columns in
   * overlaps, column after column (extra_*) */
  int32_t *x_j0, *x_j1;
  float *x_a, *x_b;
  int n_extra;
  int32_t *extra_col, *extra_j0, *extra_j1;
  float *extra_a, *extra_b;
  float *row_cat;
};

static void axis_plan_free(axis_plan *p) {
  free(p->first);
  free(p->taps);
}

/* The taps of `n` output samples over axis a (output sample k at
 * start + (k + 0.5) len / n), as fap_tiles_stitch computes them. */
static fap_status axis_plan_init(axis_plan *p, const fap_tiles_axis *a, int n, int s) {
  p->first = malloc(((size_t)n + 1) * sizeof *p->first);
  /* at most every tile covers a sample */
  p->taps = malloc((size_t)n * (size_t)a->n * sizeof *p->taps);
  double *part = malloc((size_t)a->n * 2 * sizeof *part), *frac = part + a->n;
  if (!p->first || !p->taps || !part) {
    free(part);
    return fap_fail(FAP_ERR_NO_MEMORY, "fap_tiles_stitcher_new: %d output samples x %d tiles", n,
                    (int)a->n);
  }
  int count = 0;
  for (int k = 0; k < n; k++) {
    double u = a->start + (k + 0.5) * a->len / n, sum = 0.0;
    int m = 0;
    p->first[k] = count;
    for (int64_t i = 0; i < a->n; i++) {
      int64_t pos = fap_tiles_axis_pos(a, i);
      if (u < pos || u >= pos + a->size)
        continue;
      double wi = fap_tiles_axis_weight(a, i, pos, u);
      if (wi <= 0)
        continue; /* on the tile's edge: no part (the reference adds 0) */
      stitch_tap *t = &p->taps[count + m];
      fap_tiles_axis_taps(a, pos, u, s, &t->i0, &t->i1, &frac[m]);
      t->tile = (int)i;
      part[m++] = wi;
      sum += wi;
    }
    /* every point lies inside some tile with a weight > 0 (docs/SPEC.md
     * section 1.2, Stitching): sum > 0 */
    for (int q = 0; q < m; q++) {
      p->taps[count + q].a = (float)((1.0 - frac[q]) * (part[q] / sum));
      p->taps[count + q].b = (float)(frac[q] * (part[q] / sum));
    }
    count += m;
  }
  p->first[n] = count;
  free(part);
  return FAP_OK;
}

fap_status fap_tiles_stitcher_new(fap_rect area, int cols, int rows, int overlap, int map_size,
                                  int out_width, int out_height, fap_tiles_stitcher **out) {
  fap_api_enter();
  const char *who = "fap_tiles_stitcher_new";
  if (!out)
    return fap_api_return(fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: out is NULL", who));
  *out = NULL;
  fap_tiles_axis ax, ay;
  fap_status st = fap_tiles_axes(who, area, cols, rows, overlap, &ax, &ay);
  if (st != FAP_OK)
    return fap_api_return(st);
  if (map_size < 1 || out_width < 1 || out_height < 1)
    return fap_api_return(fap_fail(FAP_ERR_INVALID_ARGUMENT,
                                   "%s: map size %d, output %dx%d: each at least 1", who, map_size,
                                   out_width, out_height));
  size_t n_rows = (size_t)rows * map_size;
  if (n_rows * (size_t)out_width > ((size_t)1 << 31))
    return fap_api_return(fap_fail(FAP_ERR_INVALID_ARGUMENT,
                                   "%s: %d tile rows of %d-sample maps at an output %d wide: "
                                   "more than 2^31 intermediate samples",
                                   who, rows, map_size, out_width));
  fap_tiles_stitcher *p = calloc(1, sizeof *p);
  if (!p)
    return fap_api_return(fap_fail(FAP_ERR_NO_MEMORY, "%s: no memory", who));
  *p = (fap_tiles_stitcher){area, cols, rows, overlap, map_size, out_width, out_height};
  st = axis_plan_init(&p->x, &ax, out_width, map_size);
  if (st == FAP_OK)
    st = axis_plan_init(&p->y, &ay, out_height, map_size);
  if (st == FAP_OK) {
    p->row_used = calloc(n_rows, 1);
    p->rows_buf = malloc(n_rows * (size_t)out_width * sizeof *p->rows_buf);
    if (!p->row_used || !p->rows_buf)
      st = fap_fail(FAP_ERR_NO_MEMORY, "%s: %zu intermediate rows of %d samples", who, n_rows,
                    out_width);
  }
  if (st != FAP_OK) {
    fap_tiles_stitcher_free(p);
    return fap_api_return(st);
  }
  /* pass 1's gathers, from the column taps */
  const int n_taps = p->x.first[out_width];
  p->n_extra = n_taps - out_width; /* every column has a tap */
  const size_t ne = p->n_extra > 0 ? (size_t)p->n_extra : 1;
  p->x_j0 = malloc((size_t)out_width * sizeof *p->x_j0);
  p->x_j1 = malloc((size_t)out_width * sizeof *p->x_j1);
  p->x_a = malloc((size_t)out_width * sizeof *p->x_a);
  p->x_b = malloc((size_t)out_width * sizeof *p->x_b);
  p->extra_col = malloc(ne * sizeof *p->extra_col);
  p->extra_j0 = malloc(ne * sizeof *p->extra_j0);
  p->extra_j1 = malloc(ne * sizeof *p->extra_j1);
  p->extra_a = malloc(ne * sizeof *p->extra_a);
  p->extra_b = malloc(ne * sizeof *p->extra_b);
  p->row_cat = malloc((size_t)cols * map_size * sizeof *p->row_cat);
  if (!p->x_j0 || !p->x_j1 || !p->x_a || !p->x_b || !p->extra_col || !p->extra_j0 ||
      !p->extra_j1 || !p->extra_a || !p->extra_b || !p->row_cat) {
    fap_tiles_stitcher_free(p);
    return fap_api_return(fap_fail(FAP_ERR_NO_MEMORY, "%s: no memory", who));
  }
  for (int i = 0, e = 0; i < out_width; i++)
    for (int q = p->x.first[i]; q < p->x.first[i + 1]; q++) {
      const stitch_tap *t = &p->x.taps[q];
      const int32_t j0 = t->tile * map_size + t->i0, j1 = t->tile * map_size + t->i1;
      if (q == p->x.first[i]) {
        p->x_j0[i] = j0, p->x_j1[i] = j1, p->x_a[i] = t->a, p->x_b[i] = t->b;
      } else {
        p->extra_col[e] = i, p->extra_j0[e] = j0, p->extra_j1[e] = j1;
        p->extra_a[e] = t->a, p->extra_b[e] = t->b;
        e++;
      }
    }
  /* pass 1 computes only the map rows pass 2 reads (an output lower than
   * the maps skips most) */
  for (int q = 0; q < p->y.first[out_height]; q++) {
    const stitch_tap *t = &p->y.taps[q];
    p->row_used[(size_t)t->tile * map_size + t->i0] = 1;
    p->row_used[(size_t)t->tile * map_size + t->i1] = 1;
  }
  *out = p;
  return fap_api_return(FAP_OK);
}

void fap_tiles_stitcher_free(fap_tiles_stitcher *stitcher) {
  if (!stitcher)
    return;
  axis_plan_free(&stitcher->x);
  axis_plan_free(&stitcher->y);
  free(stitcher->row_used);
  free(stitcher->rows_buf);
  free(stitcher->x_j0);
  free(stitcher->x_j1);
  free(stitcher->x_a);
  free(stitcher->x_b);
  free(stitcher->extra_col);
  free(stitcher->extra_j0);
  free(stitcher->extra_j1);
  free(stitcher->extra_a);
  free(stitcher->extra_b);
  free(stitcher->row_cat);
  free(stitcher);
}

/* Pass 1: map row y of every tile of tile row r, resampled across the
 * output's width with the column taps: the tiles' rows side by side, a
 * gather of every column's first tap, then the further taps of the columns
 * in overlaps (the sum tap after tap, as the taps give it). */
FAP_CLONES static void gather_row(const fap_tiles_stitcher *p, float *restrict dst) {
  const int w = p->out_width;
  const float *restrict cat = p->row_cat;
  const int32_t *restrict j0 = p->x_j0, *restrict j1 = p->x_j1;
  const float *restrict a = p->x_a, *restrict b = p->x_b;
  for (int i = 0; i < w; i++)
    dst[i] = a[i] * cat[j0[i]] + b[i] * cat[j1[i]];
  for (int e = 0; e < p->n_extra; e++)
    dst[p->extra_col[e]] +=
        p->extra_a[e] * cat[p->extra_j0[e]] + p->extra_b[e] * cat[p->extra_j1[e]];
}

static void stitch_row(const fap_tiles_stitcher *p, const float *const *maps, int r, int y,
                       float *restrict dst) {
  const int s = p->map_size;
  for (int c = 0; c < p->cols; c++)
    memcpy(p->row_cat + (size_t)c * s, maps[(size_t)r * p->cols + c] + (size_t)y * s,
           (size_t)s * sizeof(float));
  gather_row(p, dst);
}

/* Pass 2: each output row a weighted sum of pass-1 rows (whole rows of
 * multiply-adds: compiled for AVX-512 and AVX2 too, picked at run time). */
FAP_CLONES static void stitch_columns(const fap_tiles_stitcher *p, float *out) {
  const int s = p->map_size;
  const size_t w = (size_t)p->out_width;
  const int *first = p->y.first;
  const stitch_tap *taps = p->y.taps;
  for (int j = 0; j < p->out_height; j++) {
    float *restrict o = out + (size_t)j * w;
    for (int q = first[j]; q < first[j + 1]; q++) {
      const float a = taps[q].a, b = taps[q].b;
      const float *restrict h0 = p->rows_buf + ((size_t)taps[q].tile * s + taps[q].i0) * w;
      const float *restrict h1 = p->rows_buf + ((size_t)taps[q].tile * s + taps[q].i1) * w;
      if (q == first[j])
        for (size_t i = 0; i < w; i++)
          o[i] = a * h0[i] + b * h1[i];
      else
        for (size_t i = 0; i < w; i++)
          o[i] += a * h0[i] + b * h1[i];
    }
  }
}

fap_status fap_tiles_stitcher_run(fap_tiles_stitcher *stitcher, const float *const *maps,
                                  float *out) {
  fap_api_enter();
  const char *who = "fap_tiles_stitcher_run";
  if (!stitcher || !maps || !out)
    return fap_api_return(fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", who,
                                   !stitcher ? "stitcher"
                                   : !maps   ? "maps"
                                             : "out"));
  const fap_tiles_stitcher *p = stitcher;
  for (int r = 0; r < p->rows; r++)
    for (int c = 0; c < p->cols; c++)
      if (!maps[(size_t)r * p->cols + c])
        return fap_api_return(fap_fail(FAP_ERR_INVALID_ARGUMENT,
                                       "%s: the map of tile (column %d, row %d) is NULL", who, c,
                                       r));
  const int s = p->map_size;
  const size_t w = (size_t)p->out_width;
  for (int r = 0; r < p->rows; r++)
    for (int y = 0; y < s; y++)
      if (p->row_used[(size_t)r * s + y])
        stitch_row(p, maps, r, y, stitcher->rows_buf + ((size_t)r * s + y) * w);
  stitch_columns(p, out);
  return fap_api_return(FAP_OK);
}
