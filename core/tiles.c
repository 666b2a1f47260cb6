/* Tiles of a rectangle and the stitching of their maps into one map, the
 * public entry points fap_tiles_layout and fap_tiles_stitch (fap.h;
 * docs/SPEC.md section 1.2, Tiles). A large rectangle (a 4K line camera's
 * frame) squeezed into one S x S input leaves a small defect a fraction of
 * a patch; cut into tiles run at (nearly) native resolution, each tile is
 * one crop of the frame, and the tiles' maps are put back together here.
 * Pure arithmetic: no state, no allocation. fap_tiles_stitch is the
 * reference loop, point by point as the rule reads; tiles_stitcher.c is the
 * fast path (fap_tiles_stitcher), checked against it. */
#include "fap.h"
#include "log.h"
#include "tiles_axis.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* The tiles of one axis, or an error naming the value at fault. */
static fap_status axis_init(fap_tiles_axis *a, const char *who, const char *what, const char *side,
                            int start, int len, int n, int overlap) {
  if (n < 1)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: %d %s of tiles: at least 1", who, n, what);
  if (n > len)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                    "%s: %d %s of tiles over a rectangle %d pixels %s: at most one a pixel", who,
                    n, what, len, side);
  /* With one tile along an axis the overlap has nothing to overlap. With
   * more, the steps between tiles must stay at least one pixel, which is
   * overlap <= len - n (then the tiles are also larger than the overlap). */
  if (n > 1 && overlap > len - n)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                    "%s: overlap %d too large for %d %s of tiles over %d pixels: at most %d "
                    "(each tile one pixel or more past the last)",
                    who, overlap, n, what, len, len - n);
  a->start = start;
  a->len = len;
  a->n = n;
  /* the smallest size for which n tiles overlapping by >= overlap cover len */
  a->size = n > 1 ? (len + (int64_t)(n - 1) * overlap + n - 1) / n : len;
  return FAP_OK;
}

fap_status fap_tiles_axes(const char *who, fap_rect area, int cols, int rows, int overlap,
                          fap_tiles_axis *ax, fap_tiles_axis *ay) {
  if (area.width < 1 || area.height < 1)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: rectangle %dx%d: at least 1x1 pixels", who,
                    area.width, area.height);
  if (area.x < 0 || area.y < 0 || (int64_t)area.x + area.width > INT32_MAX ||
      (int64_t)area.y + area.height > INT32_MAX)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                    "%s: rectangle at (%d, %d): frame pixels start at 0 and end below 2^31", who,
                    area.x, area.y);
  if (overlap < 0)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: overlap %d: pixels, 0 or more", who, overlap);
  fap_status st = axis_init(ax, who, "columns", "wide", area.x, area.width, cols, overlap);
  if (st == FAP_OK)
    st = axis_init(ay, who, "rows", "high", area.y, area.height, rows, overlap);
  return st;
}

fap_status fap_tiles_layout(fap_rect area, int cols, int rows, int overlap, fap_rect *tiles) {
  fap_api_enter();
  fap_tiles_axis ax, ay;
  fap_status st = fap_tiles_axes("fap_tiles_layout", area, cols, rows, overlap, &ax, &ay);
  if (st != FAP_OK)
    return fap_api_return(st);
  if (!tiles)
    return fap_api_return(fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_tiles_layout: tiles is NULL"));
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++)
      tiles[(size_t)r * cols + c] =
          (fap_rect){(int)fap_tiles_axis_pos(&ax, c), (int)fap_tiles_axis_pos(&ay, r), (int)ax.size,
                     (int)ay.size};
  return fap_api_return(FAP_OK);
}

fap_status fap_tiles_stitch(fap_rect area, int cols, int rows, int overlap,
                            const float *const *maps, int map_size, float *out, int out_width,
                            int out_height) {
  fap_api_enter();
  const char *who = "fap_tiles_stitch";
  fap_tiles_axis ax, ay;
  fap_status st = fap_tiles_axes(who, area, cols, rows, overlap, &ax, &ay);
  if (st != FAP_OK)
    return fap_api_return(st);
  if (!maps || !out)
    return fap_api_return(fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", who,
                                   maps ? "out" : "maps"));
  if (map_size < 1 || out_width < 1 || out_height < 1)
    return fap_api_return(fap_fail(FAP_ERR_INVALID_ARGUMENT,
                                   "%s: map size %d, output %dx%d: each at least 1", who,
                                   map_size, out_width, out_height));
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++)
      if (!maps[(size_t)r * cols + c])
        return fap_api_return(fap_fail(FAP_ERR_INVALID_ARGUMENT,
                                       "%s: the map of tile (column %d, row %d) is NULL", who, c,
                                       r));
  const int s = map_size;
  /* The tiles covering a point form a run of rows and a run of columns that
   * only move forward as the point does: first_r / first_c is the first
   * tile whose end lies past it. */
  int first_r = 0;
  for (int j = 0; j < out_height; j++) {
    /* output pixel centres in the rectangle's frame coordinates */
    double v = area.y + (j + 0.5) * area.height / out_height;
    while (first_r < rows - 1 && v >= fap_tiles_axis_pos(&ay, first_r) + ay.size)
      first_r++;
    int first_c = 0;
    for (int i = 0; i < out_width; i++) {
      double u = area.x + (i + 0.5) * area.width / out_width;
      while (first_c < cols - 1 && u >= fap_tiles_axis_pos(&ax, first_c) + ax.size)
        first_c++;
      double sum = 0.0, wsum = 0.0;
      for (int r = first_r; r < rows; r++) {
        int64_t py = fap_tiles_axis_pos(&ay, r);
        if (v < py)
          break;
        double wy = fap_tiles_axis_weight(&ay, r, py, v), fy;
        int y0, y1;
        fap_tiles_axis_taps(&ay, py, v, s, &y0, &y1, &fy);
        for (int c = first_c; c < cols; c++) {
          int64_t px = fap_tiles_axis_pos(&ax, c);
          if (u < px)
            break;
          double w = wy * fap_tiles_axis_weight(&ax, c, px, u), fx;
          int x0, x1;
          fap_tiles_axis_taps(&ax, px, u, s, &x0, &x1, &fx);
          const float *m = maps[(size_t)r * cols + c];
          double top = (1 - fx) * m[(size_t)y0 * s + x0] + fx * m[(size_t)y0 * s + x1];
          double bottom = (1 - fx) * m[(size_t)y1 * s + x0] + fx * m[(size_t)y1 * s + x1];
          sum += w * ((1 - fy) * top + fy * bottom);
          wsum += w;
        }
      }
      /* every point of the rectangle lies inside some tile with a weight
       * > 0 (docs/SPEC.md section 1.2, Tiles) */
      out[(size_t)j * out_width + i] = (float)(sum / wsum);
    }
  }
  return fap_api_return(FAP_OK);
}

/* the side of n tiles over len pixels overlapping by overlap (the layout's
 * rule), 0 where fap_tiles_layout refuses it */
static int64_t auto_side(int64_t len, int64_t n, int64_t overlap) {
  if (n == 1)
    return len;
  if (n > len || overlap > len - n)
    return 0;
  return (len + (n - 1) * overlap + n - 1) / n;
}

fap_status fap_tiles_auto(const fap_rect *areas, int n, int grid, int max_patch_pixels,
                          int overlap, int max_crops, int *cols, int *rows, int *met,
                          double *worst) {
  fap_api_enter();
  const char *who = "fap_tiles_auto";
  if (!areas || !cols || !rows || !met)
    return fap_api_return(fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: a NULL pointer", who));
  if (n < 1 || grid < 1 || max_patch_pixels < 1 || max_crops < 1 || overlap < 0)
    return fap_api_return(fap_fail(FAP_ERR_INVALID_ARGUMENT,
                                   "%s: %d rectangles, %d patches a side, at most %d pixels a "
                                   "patch, at most %d crops, overlap %d: each at least 1 (the "
                                   "overlap 0 or more)",
                                   who, n, grid, max_patch_pixels, max_crops, overlap));
  for (int i = 0; i < n; i++)
    if (areas[i].width < 1 || areas[i].height < 1)
      return fap_api_return(fap_fail(FAP_ERR_INVALID_ARGUMENT,
                                     "%s: rectangle %d is %dx%d: at least 1x1 pixels", who, i,
                                     areas[i].width, areas[i].height));
  int best_met = 0, best_c = 1, best_r = 1;
  double best_px = INFINITY;
  for (int c = 1; c <= 16; c++)
    for (int r = 1; c * r <= 16; r++) {
      if ((int64_t)n * c * r > max_crops && c * r > 1)
        continue;
      double px = 0.0;
      int valid = 1;
      for (int i = 0; valid && i < n; i++) {
        int64_t tw = auto_side(areas[i].width, c, overlap);
        int64_t th = auto_side(areas[i].height, r, overlap);
        valid = tw > 0 && th > 0;
        double p = (double)(tw > th ? tw : th) / grid;
        if (p > px)
          px = p;
      }
      if (!valid)
        continue;
      const int ok = px <= max_patch_pixels;
      const int squarer = abs(c - r) < abs(best_c - best_r);
      if (ok && (!best_met || c * r < best_c * best_r ||
                 (c * r == best_c * best_r && squarer))) {
        best_met = 1, best_c = c, best_r = r, best_px = px;
      } else if (!ok && !best_met &&
                 (px < best_px || (px == best_px && c * r < best_c * best_r))) {
        best_c = c, best_r = r, best_px = px;
      }
    }
  *cols = best_c;
  *rows = best_r;
  *met = best_met;
  if (worst)
    *worst = best_px;
  return fap_api_return(FAP_OK);
}
