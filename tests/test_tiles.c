/* fap_tiles_layout and fap_tiles_stitch (docs/SPEC.md section 1.2, Tiles):
 * the tiles cover the rectangle exactly, have one size, the first and last
 * flush with its edges, neighbours overlap by at least what was asked and
 * advance by at least a pixel, over a sweep of sizes, grids and overlaps;
 * stitching without overlap places each tile's map, a constant stays
 * constant, nothing is written past the output; bad arguments are refused
 * with a message naming the value; the precomputed stitcher
 * (fap_tiles_stitcher) against the reference loop fap_tiles_stitch within
 * 1e-6 over a sweep, the same refusals. The stitched values against the
 * numpy reference: tests/reference/test_tiles.py. TAP via g_test. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include <fap.h>

static void quiet(fap_log_level level, const char *message, void *user_data) {
  (void)level, (void)message, (void)user_data;
}

/* The tiles of one axis, taken from the row-major rectangles. */
static void check_axis(const fap_rect *t, int n, int stride, int start, int len, int overlap,
                       int along_x) {
  int size = along_x ? t[0].width : t[0].height;
  g_assert_cmpint(size, >=, 1);
  g_assert_cmpint(size, <=, len);
  int prev_end = start;
  for (int i = 0; i < n; i++) {
    const fap_rect *r = &t[(size_t)i * stride];
    int p = along_x ? r->x : r->y, s = along_x ? r->width : r->height;
    g_assert_cmpint(s, ==, size); /* one size */
    g_assert_cmpint(p, <=, prev_end); /* no gap */
    if (i == 0)
      g_assert_cmpint(p, ==, start); /* flush */
    else {
      int prev = along_x ? t[(size_t)(i - 1) * stride].x : t[(size_t)(i - 1) * stride].y;
      g_assert_cmpint(p - prev, >=, 1);               /* advances */
      g_assert_cmpint(prev + size - p, >=, overlap); /* overlaps as asked */
    }
    prev_end = p + s;
  }
  g_assert_cmpint(prev_end, ==, start + len); /* last flush, nothing past */
  if (n == 1)
    g_assert_cmpint(size, ==, len);
  else /* the smallest size that does it */
    g_assert_cmpint((int64_t)n * (size - 1), <, (int64_t)len + (int64_t)(n - 1) * overlap);
}

static void test_layout_sweep(void) {
  fap_rect tiles[7 * 5];
  int cases = 0;
  for (int w = 1; w <= 41; w += 2)
    for (int h = 1; h <= 23; h += 3)
      for (int cols = 1; cols <= 7 && cols <= w; cols++)
        for (int rows = 1; rows <= 5 && rows <= h; rows++)
          for (int overlap = 0; overlap <= 40; overlap += 1) {
            int ok_x = cols == 1 || overlap <= w - cols, ok_y = rows == 1 || overlap <= h - rows;
            fap_rect area = {3, 5, w, h};
            fap_status st = fap_tiles_layout(area, cols, rows, overlap, tiles);
            if (!ok_x || !ok_y) {
              g_assert_cmpint(st, ==, FAP_ERR_INVALID_ARGUMENT);
              continue;
            }
            g_assert_cmpint(st, ==, FAP_OK);
            for (int r = 0; r < rows; r++) /* a grid: rows share y, columns x */
              for (int c = 0; c < cols; c++) {
                g_assert_cmpint(tiles[r * cols + c].x, ==, tiles[c].x);
                g_assert_cmpint(tiles[r * cols + c].y, ==, tiles[r * cols].y);
              }
            check_axis(tiles, cols, 1, area.x, w, cols > 1 ? overlap : 0, 1);
            check_axis(tiles, rows, cols, area.y, h, rows > 1 ? overlap : 0, 0);
            cases++;
          }
  g_assert_cmpint(cases, >, 5000);
}

static void expect_error(fap_rect area, int cols, int rows, int overlap, const char *needle) {
  fap_rect tiles[64];
  g_assert_cmpint(fap_tiles_layout(area, cols, rows, overlap, tiles), ==,
                  FAP_ERR_INVALID_ARGUMENT);
  if (!strstr(fap_last_error(), needle))
    g_error("layout %dx%d overlap %d: \"%s\" does not name \"%s\"", cols, rows, overlap,
            fap_last_error(), needle);
  /* stitching the same grid says the same */
  float map = 0.5f, out[4];
  const float *maps[64];
  for (int i = 0; i < 64; i++)
    maps[i] = &map;
  g_assert_cmpint(fap_tiles_stitch(area, cols, rows, overlap, maps, 1, out, 2, 2), ==,
                  FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), needle));
  fap_tiles_stitcher *st = (fap_tiles_stitcher *)&map; /* must come back NULL */
  g_assert_cmpint(fap_tiles_stitcher_new(area, cols, rows, overlap, 1, 2, 2, &st), ==,
                  FAP_ERR_INVALID_ARGUMENT);
  g_assert_null(st);
  g_assert_nonnull(strstr(fap_last_error(), needle));
}

static void test_layout_errors(void) {
  fap_rect area = {0, 0, 20, 10};
  expect_error(area, 0, 1, 0, "0 columns");
  expect_error(area, 2, 0, 0, "0 rows");
  expect_error(area, 21, 1, 0, "21 columns");
  expect_error(area, 1, 11, 0, "11 rows");
  expect_error(area, 2, 1, -1, "overlap -1");
  expect_error(area, 2, 1, 19, "overlap 19"); /* a tile of 20 would not advance */
  expect_error(area, 1, 2, 9, "overlap 9");   /* too large for the rows */
  expect_error((fap_rect){0, 0, 0, 10}, 1, 1, 0, "0x10");
  expect_error((fap_rect){-1, 0, 20, 10}, 1, 1, 0, "(-1, 0)");
  fap_rect tiles[2];
  g_assert_cmpint(fap_tiles_layout(area, 2, 1, 18, tiles), ==, FAP_OK); /* the largest */
  g_assert_cmpint(tiles[0].width, ==, 19);
  g_assert_cmpint(tiles[1].x, ==, 1);
  /* one column: the overlap has nothing to overlap along x */
  g_assert_cmpint(fap_tiles_layout(area, 1, 2, 8, tiles), ==, FAP_OK);
  g_assert_cmpint(fap_tiles_layout(area, 2, 1, 0, NULL), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), "tiles is NULL"));
}

/* Where no tiles overlap (overlap 0, sides multiples of the tile counts), at
 * the rectangle's resolution, each output pixel is its tile's map resized
 * to the tile (here constant per tile: exactly it);
 * with any overlap a constant stays that constant; nothing is written past
 * the output. */
static void test_stitch_placement(void) {
  const int s = 5, cols = 3, rows = 2, w = 30, h = 16;
  fap_rect area = {4, 2, w, h}, tiles[6];
  float maps_data[6][25];
  const float *maps[6];
  for (int t = 0; t < 6; t++) {
    for (int k = 0; k < s * s; k++)
      maps_data[t][k] = 0.125f * (t + 1);
    maps[t] = maps_data[t];
  }
  float out[30 * 16 + 8];
  for (int k = 0; k < w * h + 8; k++)
    out[k] = -1.0f;
  g_assert_cmpint(fap_tiles_layout(area, cols, rows, 0, tiles), ==, FAP_OK);
  g_assert_cmpint(fap_tiles_stitch(area, cols, rows, 0, maps, s, out, w, h), ==, FAP_OK);
  for (int j = 0; j < h; j++)
    for (int i = 0; i < w; i++) {
      int fx = area.x + i, fy = area.y + j, hit = -1, n_hits = 0;
      for (int t = 0; t < 6; t++)
        if (fx >= tiles[t].x && fx < tiles[t].x + tiles[t].width && fy >= tiles[t].y &&
            fy < tiles[t].y + tiles[t].height)
          hit = t, n_hits++;
      g_assert_cmpint(n_hits, ==, 1);
      g_assert_cmpfloat(out[j * w + i], ==, maps_data[hit][0]);
    }
  for (int k = w * h; k < w * h + 8; k++)
    g_assert_cmpfloat(out[k], ==, -1.0f);

  for (int t = 0; t < 6; t++)
    for (int k = 0; k < s * s; k++)
      maps_data[t][k] = 0.375f;
  for (int overlap = 1; overlap <= 14; overlap += 3) {
    for (int k = 0; k < w * h + 8; k++)
      out[k] = -1.0f;
    g_assert_cmpint(fap_tiles_stitch(area, cols, rows, overlap, maps, s, out, 13, 29), ==,
                    FAP_OK);
    for (int k = 0; k < 13 * 29; k++)
      g_assert_cmpfloat(fabsf(out[k] - 0.375f), <=, 1e-7f);
    for (int k = 13 * 29; k < w * h + 8; k++)
      g_assert_cmpfloat(out[k], ==, -1.0f);
  }
}

/* Across the middle of an overlap band the two tiles weigh the same, so
 * one tile of 0 and one of 1 meet at 0.5, and the ramp runs monotonically
 * from 0 to 1 across the band: no step at a seam. */
static void test_stitch_seam(void) {
  fap_rect area = {0, 0, 40, 1}, tiles[2];
  float zero = 0.0f, one = 1.0f, out[40];
  const float *maps[2] = {&zero, &one};
  g_assert_cmpint(fap_tiles_layout(area, 2, 1, 10, tiles), ==, FAP_OK);
  g_assert_cmpint(tiles[0].width, ==, 25);
  g_assert_cmpint(tiles[1].x, ==, 15); /* band: pixels 15 .. 24 */
  g_assert_cmpint(fap_tiles_stitch(area, 2, 1, 10, maps, 1, out, 40, 1), ==, FAP_OK);
  for (int i = 0; i < 15; i++)
    g_assert_cmpfloat(out[i], ==, 0.0f);
  for (int i = 25; i < 40; i++)
    g_assert_cmpfloat(out[i], ==, 1.0f);
  for (int i = 15; i < 25; i++) /* pixel centre i + 0.5: tile 1 weighs (i + 0.5 - 15) / 10 */
    g_assert_cmpfloat(fabsf(out[i] - (i + 0.5f - 15.0f) / 10.0f), <=, 1e-7f);
}

static void test_stitch_errors(void) {
  fap_rect area = {0, 0, 8, 8};
  float m = 0.0f, out[64];
  const float *maps[4] = {&m, &m, NULL, &m};
  g_assert_cmpint(fap_tiles_stitch(area, 2, 2, 0, maps, 1, out, 8, 8), ==,
                  FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), "(column 0, row 1)"));
  maps[2] = &m;
  g_assert_cmpint(fap_tiles_stitch(area, 2, 2, 0, maps, 0, out, 8, 8), ==,
                  FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), "map size 0"));
  g_assert_cmpint(fap_tiles_stitch(area, 2, 2, 0, maps, 1, out, 8, 0), ==,
                  FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), "output 8x0"));
  g_assert_cmpint(fap_tiles_stitch(area, 2, 2, 0, NULL, 1, out, 8, 8), ==,
                  FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), "maps is NULL"));
  g_assert_cmpint(fap_tiles_stitch(area, 2, 2, 0, maps, 1, NULL, 8, 8), ==,
                  FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), "out is NULL"));
  g_assert_cmpint(fap_tiles_stitch(area, 2, 2, 0, maps, 1, out, 8, 8), ==, FAP_OK);
  g_assert_cmpstr(fap_last_error(), ==, "");
}

/* The stitcher computes in float where the reference loop sums in double:
 * on maps in [0, 1] the two differ by a few float roundings, held here to
 * 1e-6 (the numpy reference test's tolerance), over grids, overlaps
 * (none, some, the largest), offsets and outputs below, at and above the
 * rectangle; a second run over the same workspace gives the same bytes,
 * nothing is written past the output. */
static void test_stitcher_matches_reference(void) {
  GRand *rng = g_rand_new_with_seed(11);
  const int s_list[] = {1, 3, 7, 14};
  double worst = 0.0;
  int cases = 0;
  for (int w = 1; w <= 61; w += 12)
    for (int h = 1; h <= 37; h += 9)
      for (int cols = 1; cols <= 4 && cols <= w; cols++)
        for (int rows = 1; rows <= 3 && rows <= h; rows++)
          for (int oi = 0; oi < 3; oi++) {
            int max_o = MIN(cols > 1 ? w - cols : 1 << 20, rows > 1 ? h - rows : 1 << 20);
            if (max_o == 1 << 20)
              max_o = 0;
            int overlap = oi == 0 ? 0 : oi == 1 ? max_o / 3 : max_o;
            int s = s_list[(w + h + cols + rows + oi) % 4];
            int out_w = 1 + (w * (1 + oi)) / 2, out_h = 1 + (h * (3 - oi)) / 2;
            fap_rect area = {oi * 5, oi * 3, w, h};
            float *data = g_new(float, (size_t)cols * rows * s * s);
            const float *maps[12];
            for (int k = 0; k < cols * rows * s * s; k++)
              data[k] = (float)g_rand_double(rng);
            for (int t = 0; t < cols * rows; t++)
              maps[t] = data + (size_t)t * s * s;
            float *ref = g_new(float, (size_t)out_w * out_h);
            float *fast = g_new(float, (size_t)out_w * out_h + 4);
            for (int k = 0; k < 4; k++)
              fast[out_w * out_h + k] = -7.0f;
            g_assert_cmpint(
                fap_tiles_stitch(area, cols, rows, overlap, maps, s, ref, out_w, out_h), ==,
                FAP_OK);
            fap_tiles_stitcher *st = NULL;
            g_assert_cmpint(
                fap_tiles_stitcher_new(area, cols, rows, overlap, s, out_w, out_h, &st), ==,
                FAP_OK);
            g_assert_cmpint(fap_tiles_stitcher_run(st, maps, fast), ==, FAP_OK);
            for (int k = 0; k < out_w * out_h; k++) {
              double d = fabs((double)fast[k] - ref[k]);
              if (d > worst)
                worst = d;
              if (d > 1e-6)
                g_error("%dx%d tiles over %dx%d, overlap %d, map %d, out %dx%d: pixel %d: "
                        "%.9g vs reference %.9g",
                        cols, rows, w, h, overlap, s, out_w, out_h, k, fast[k], ref[k]);
            }
            for (int k = 0; k < 4; k++)
              g_assert_cmpfloat(fast[out_w * out_h + k], ==, -7.0f);
            float *again = g_new(float, (size_t)out_w * out_h);
            g_assert_cmpint(fap_tiles_stitcher_run(st, maps, again), ==, FAP_OK);
            g_assert_cmpint(memcmp(again, fast, (size_t)out_w * out_h * sizeof(float)), ==, 0);
            fap_tiles_stitcher_free(st);
            g_free(again);
            g_free(fast);
            g_free(ref);
            g_free(data);
            cases++;
          }
  g_test_message("%d layouts, largest |stitcher - reference| %.3g", cases, worst);
  g_assert_cmpint(cases, >, 300);
  g_rand_free(rng);
}

static void test_stitcher_errors(void) {
  fap_rect area = {0, 0, 8, 8};
  float m = 0.0f, out[64];
  const float *maps[4] = {&m, &m, NULL, &m};
  fap_tiles_stitcher *st = NULL;
  g_assert_cmpint(fap_tiles_stitcher_new(area, 2, 2, 0, 0, 8, 8, &st), ==,
                  FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), "map size 0"));
  g_assert_cmpint(fap_tiles_stitcher_new(area, 2, 2, 0, 1, 8, 0, &st), ==,
                  FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), "output 8x0"));
  g_assert_cmpint(fap_tiles_stitcher_new(area, 2, 2, 0, 1, 8, 8, NULL), ==,
                  FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), "out is NULL"));
  g_assert_cmpint(fap_tiles_stitcher_new(area, 2, 2, 0, 1, 8, 8, &st), ==, FAP_OK);
  g_assert_cmpint(fap_tiles_stitcher_run(st, maps, out), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), "(column 0, row 1)"));
  maps[2] = &m;
  g_assert_cmpint(fap_tiles_stitcher_run(st, NULL, out), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), "maps is NULL"));
  g_assert_cmpint(fap_tiles_stitcher_run(st, maps, NULL), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), "out is NULL"));
  g_assert_cmpint(fap_tiles_stitcher_run(st, maps, out), ==, FAP_OK);
  g_assert_cmpstr(fap_last_error(), ==, "");
  fap_tiles_stitcher_free(st);
  fap_tiles_stitcher_free(NULL);
}

/* the largest patch (frame pixels) of cols x rows tiles over the
 * rectangles, 0 where a layout is refused; written from docs/SPEC.md
 * section 1.2 (Tiles: tw = ceil((W + (C - 1) o) / C)) */
static double worst_patch(const fap_rect *a, int n, int cols, int rows, int overlap, int grid) {
  double px = 0;
  for (int i = 0; i < n; i++) {
    int w = a[i].width, h = a[i].height;
    if (cols > w || rows > h || (cols > 1 && overlap > w - cols) ||
        (rows > 1 && overlap > h - rows))
      return 0;
    int tw = cols == 1 ? w : (w + (cols - 1) * overlap + cols - 1) / cols;
    int th = rows == 1 ? h : (h + (rows - 1) * overlap + rows - 1) / rows;
    double p = (double)(tw > th ? tw : th) / grid;
    px = p > px ? p : px;
  }
  return px;
}

/* fap_tiles_auto against the rule by exhaustion (docs/SPEC.md section 1.2,
 * Automatic tiles): over sizes, grids, bounds, overlaps, caps and one or
 * two rectangles, the grid returned is allowed, meets the bound exactly
 * when some allowed grid does, has then the fewest tiles, and otherwise
 * the smallest worst patch; bad arguments are refused, named. */
static void test_auto(void) {
  int cases = 0, unmet = 0;
  for (int w = 1; w <= 200; w += 23)
    for (int h = 1; h <= 120; h += 17)
      for (int grid = 1; grid <= 8; grid *= 2)
        for (int k = 1; k <= 64; k *= 4)
          for (int overlap = 0; overlap <= 6; overlap += 3)
            for (int cap = 1; cap <= 16; cap += 5)
              for (int n = 1; n <= 2; n++) {
                fap_rect a[2] = {{0, 0, w, h}, {3, 1, h, w}};
                int c = 0, r = 0, met = -1;
                double worst = -1;
                g_assert_cmpint(fap_tiles_auto(a, n, grid, k, overlap, cap, &c, &r, &met, &worst),
                                ==, FAP_OK);
                g_assert_true(c * r == 1 || n * c * r <= cap);
                double px = worst_patch(a, n, c, r, overlap, grid);
                g_assert_cmpfloat(px, >, 0);
                g_assert_cmpfloat(fabs(px - worst), <=, 1e-12);
                int best_met_tiles = 1 << 30;
                double best_px = INFINITY;
                for (int cc = 1; cc <= 16; cc++)
                  for (int rr = 1; cc * rr <= 16; rr++) {
                    if (cc * rr > 1 && n * cc * rr > cap)
                      continue;
                    double p = worst_patch(a, n, cc, rr, overlap, grid);
                    if (p == 0)
                      continue;
                    if (p <= k && cc * rr < best_met_tiles)
                      best_met_tiles = cc * rr;
                    best_px = p < best_px ? p : best_px;
                  }
                g_assert_cmpint(met, ==, best_met_tiles < (1 << 30));
                if (met) {
                  g_assert_cmpfloat(px, <=, k);
                  g_assert_cmpint(c * r, ==, best_met_tiles);
                } else {
                  g_assert_cmpfloat(px, ==, best_px);
                  unmet++;
                }
                cases++;
              }
  g_test_message("%d cases, %d where the bound could not be met", cases, unmet);
  g_assert_cmpint(unmet, >, 100);
  g_assert_cmpint(cases - unmet, >, 100);
  fap_rect a = {0, 0, 10, 10}, z = {0, 0, 0, 5};
  int c, r, met;
  g_assert_cmpint(fap_tiles_auto(&a, 1, 0, 8, 0, 4, &c, &r, &met, NULL), ==,
                  FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), "0 patches a side"));
  g_assert_cmpint(fap_tiles_auto(&z, 1, 2, 8, 0, 4, &c, &r, &met, NULL), ==,
                  FAP_ERR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(fap_last_error(), "0x5"));
  g_assert_cmpint(fap_tiles_auto(&a, 1, 2, 8, 0, 4, NULL, &r, &met, NULL), ==,
                  FAP_ERR_INVALID_ARGUMENT);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  fap_set_log_callback(quiet, NULL);
  g_test_add_func("/tiles/layout-sweep", test_layout_sweep);
  g_test_add_func("/tiles/layout-errors", test_layout_errors);
  g_test_add_func("/tiles/stitch-placement", test_stitch_placement);
  g_test_add_func("/tiles/stitch-seam", test_stitch_seam);
  g_test_add_func("/tiles/stitch-errors", test_stitch_errors);
  g_test_add_func("/tiles/stitcher-matches-reference", test_stitcher_matches_reference);
  g_test_add_func("/tiles/stitcher-errors", test_stitcher_errors);
  g_test_add_func("/tiles/auto", test_auto);
  return g_test_run();
}
