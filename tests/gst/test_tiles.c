/* faprompt's tiles and tile-overlap properties (GstHarness, isolated
 * registry; TAP via g_test):
 *
 *   - with roi rectangles in tiles, each tile's score (the structure twin's
 *     tile-scores) equals the core's run of the same crop, bit for bit; each
 *     rectangle's meta covers the rectangle (frame pixels), its score is the
 *     highest tile's and its map is fap_tiles_stitcher's of the tiles'
 *     maps, bit for bit (and within 1e-6 of the reference loop
 *     fap_tiles_stitch, as tests/test_tiles.c holds the two); the pixels
 *     are those fap_blend_frame draws with the stitched maps, and no pixel
 *     outside every rectangle changes; a model instance runs a frame's tiles in one batch, with the same results;
 *   - bad values (unparsable, zero, more crops than the batch or than 16,
 *     an overlap too large for a rectangle) are refused with a warning
 *     naming the value, the setting in force stays;
 *   - tiles=auto picks the fewest tiles for which a patch covers at most
 *     tile-max-patch-pixels frame pixels along each axis (worked out here
 *     from the model's S / P and the layout rule), shown as "tiles" in the
 *     structure twin and the messages; a bound the batch cannot meet gives
 *     the grid with the smallest patch and one warning naming the bound and
 *     the grid, once;
 *   - tiles and tile-overlap changed while playing, from another thread, in
 *     blocking and non-blocking mode: every frame comes out.
 *
 *   test_tiles MODEL */
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <math.h>
#include <string.h>

#include <fap.h>

#include "element_output.h"
#include "frames.h"
#include "gstfapromptmeta.h"

static const char *model_path;

/* instance: a model-instance-id (with a batch of 8), or NULL */
static GstHarness *harness_on(const char *roi, const char *tiles, guint overlap,
                              const char *non_blocking, int w, int h, const char *instance) {
  GstElement *e = gst_element_factory_make("faprompt", NULL);
  g_assert_nonnull(e);
  g_object_set(e, "model-file", model_path, "roi", roi, "tiles", tiles, "tile-overlap", overlap,
               NULL);
  if (instance)
    g_object_set(e, "model-instance-id", instance, "batch-size", 8, "batch-timeout",
                 (guint64)1000, NULL);
  gst_util_set_object_arg(G_OBJECT(e), "non-blocking", non_blocking);
  gst_object_ref_sink(e);
  GstHarness *hh = gst_harness_new_with_element(e, "sink", "src");
  gst_object_unref(e);
  gst_harness_set_src_caps(hh, gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, "RGB",
                                                   "width", G_TYPE_INT, w, "height", G_TYPE_INT,
                                                   h, "framerate", GST_TYPE_FRACTION, 30, 1,
                                                   NULL));
  return hh;
}

static GstHarness *harness(const char *roi, const char *tiles, guint overlap,
                           const char *non_blocking, int w, int h) {
  return harness_on(roi, tiles, overlap, non_blocking, w, h, NULL);
}

/* the structure twins' tile-scores, in order (NULL where absent) */
static guint twins_of(GstBuffer *b, const GValue **tile_scores, guint max) {
  const GstMetaInfo *info = gst_meta_get_info(GST_FAPROMPT_STRUCTURE_META_NAME);
  gpointer state = NULL;
  GstMeta *m;
  guint n = 0;
  while ((m = gst_buffer_iterate_meta(b, &state)))
    if (m->info == info && n < max)
      tile_scores[n++] =
          gst_structure_get_value(gst_custom_meta_get_structure((GstCustomMeta *)m), "tile-scores");
  return n;
}

/* ---- against the core ----------------------------------------------------- */

static void test_against_core(void) {
  const int w = 80, h = 60, cols = 2, rows = 2, overlap = 4, T = cols * rows;
  static const fap_rect rois[] = {{7, 9, 37, 29}, {40, 21, 40, 39}};
  const guint n = G_N_ELEMENTS(rois);
  fap_model *model;
  fap_detector *det;
  fap_detector_options o;
  g_assert_cmpint(fap_model_load(model_path, &model), ==, FAP_OK);
  fap_detector_options_init(&o);
  o.batch = (int)n * T;
  g_assert_cmpint(fap_detector_new(model, &o, &det), ==, FAP_OK);
  const int S = fap_detector_image_size(det), M = S * 2;

  GstVideoInfo info;
  gst_video_info_set_format(&info, GST_VIDEO_FORMAT_RGB, w, h);
  GstBuffer *in = make_frame("RGB", w, h, 5, 0);
  GstBuffer *orig = gst_buffer_copy_deep(in), *expect = gst_buffer_copy_deep(in);

  /* the core: every tile of every rectangle, one batch; the maps stitched */
  GstVideoFrame fo;
  g_assert_true(gst_video_frame_map(&fo, &info, orig, GST_MAP_READ));
  fap_frame base = core_frame(&fo), frames[16];
  fap_rect crops[16];
  fap_result r[16];
  for (guint k = 0; k < n; k++)
    g_assert_cmpint(fap_tiles_layout(rois[k], cols, rows, overlap, crops + k * T), ==, FAP_OK);
  for (guint i = 0; i < n * T; i++) {
    frames[i] = base;
    frames[i].crop = crops[i];
  }
  g_assert_cmpint(fap_detector_run_batch(det, frames, (int)(n * T), NULL, r), ==, FAP_OK);
  float *stitched[2];
  for (guint k = 0; k < n; k++) {
    const float *maps[4];
    for (int t = 0; t < T; t++)
      maps[t] = r[k * T + t].map;
    stitched[k] = g_new(float, (gsize)M * M);
    fap_tiles_stitcher *st = NULL;
    g_assert_cmpint(fap_tiles_stitcher_new(rois[k], cols, rows, overlap, S, M, M, &st), ==,
                    FAP_OK);
    g_assert_cmpint(fap_tiles_stitcher_run(st, maps, stitched[k]), ==, FAP_OK);
    fap_tiles_stitcher_free(st);
    float *ref = g_new(float, (gsize)M * M);
    g_assert_cmpint(fap_tiles_stitch(rois[k], cols, rows, overlap, maps, S, ref, M, M), ==,
                    FAP_OK);
    for (int i = 0; i < M * M; i++)
      g_assert_cmpfloat(fabsf(ref[i] - stitched[k][i]), <=, 1e-6f);
    g_free(ref);
  }

  GstHarness *hh = harness("7,9,37,29;40,21,40,39", "2x2", overlap, "false", w, h);
  g_object_set(hh->element, "pixel-threshold", 0.0f, "heatmap-alpha", 0.8, NULL);
  GstBus *bus = attach_bus(hh);
  g_assert_cmpint(gst_harness_push(hh, in), ==, GST_FLOW_OK);
  GstBuffer *out = gst_harness_pull(hh);
  GstFAPromptMeta *m[16];
  const GValue *tile_scores[16];
  g_assert_cmpuint(metas_of(out, m, 16), ==, n);
  g_assert_cmpuint(twins_of(out, tile_scores, 16), ==, n);
  for (guint k = 0; k < n; k++) {
    g_assert_cmpint(m[k]->x, ==, rois[k].x);
    g_assert_cmpint(m[k]->y, ==, rois[k].y);
    g_assert_cmpuint(m[k]->width, ==, (guint)rois[k].width);
    g_assert_cmpuint(m[k]->height, ==, (guint)rois[k].height);
    float best = r[k * T].score;
    g_assert_nonnull(tile_scores[k]);
    g_assert_cmpuint(gst_value_array_get_size(tile_scores[k]), ==, (guint)T);
    for (int t = 0; t < T; t++) {
      double got = g_value_get_double(gst_value_array_get_value(tile_scores[k], t));
      g_assert_true(got == (double)r[k * T + t].score); /* bit for bit */
      best = MAX(best, r[k * T + t].score);
    }
    g_assert_true(m[k]->score == best);
    g_assert_cmpuint(m[k]->map_width, ==, (guint)M);
    g_assert_cmpuint(m[k]->map_height, ==, (guint)M);
    g_assert_cmpint(memcmp(m[k]->map, stitched[k], (gsize)M * M * sizeof(float)), ==, 0);
  }

  /* pixels: fap_blend_frame with the stitched maps, crop after crop;
   * nothing outside the rectangles */
  GstVideoFrame fe, fout;
  g_assert_true(gst_video_frame_map(&fe, &info, expect, GST_MAP_READWRITE));
  fap_frame ef = core_frame(&fe);
  fap_blend blend = {0.8f, 0.0f, 0.0f, 1.0f};
  g_object_get(hh->element, "pixel-threshold", &blend.threshold, NULL);
  for (guint k = 0; k < n; k++) {
    fap_frame f = ef;
    f.crop = rois[k];
    g_assert_cmpint(fap_blend_frame(&f, stitched[k], M, &blend), ==, FAP_OK);
  }
  gst_video_frame_unmap(&fe);
  g_assert_true(same_buffer_bytes(out, expect));
  g_assert_false(same_buffer_bytes(out, orig));
  g_assert_true(gst_video_frame_map(&fout, &info, out, GST_MAP_READ));
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      gboolean in_roi = FALSE;
      for (guint k = 0; k < n; k++)
        in_roi |= x >= rois[k].x && x < rois[k].x + rois[k].width && y >= rois[k].y &&
                  y < rois[k].y + rois[k].height;
      if (!in_roi)
        g_assert_cmpint(memcmp(base.data + y * base.stride + 3 * x,
                               (const uint8_t *)GST_VIDEO_FRAME_PLANE_DATA(&fout, 0) +
                                   y * GST_VIDEO_FRAME_PLANE_STRIDE(&fout, 0) + 3 * x,
                               3),
                        ==, 0);
    }
  gst_video_frame_unmap(&fout);
  gst_video_frame_unmap(&fo);
  gchar *warnings = pop_warnings(bus);
  g_assert_cmpstr(warnings, ==, "");
  g_free(warnings);

  /* a model instance: the frame's eight crops in one of its batches, the
   * same tile scores and stitched maps */
  GstHarness *hi = harness_on("7,9,37,29;40,21,40,39", "2x2", overlap, "false", w, h, "tiles-test");
  GstBuffer *out_i = gst_harness_push_and_pull(hi, gst_buffer_copy_deep(orig));
  GstFAPromptMeta *mi[16];
  const GValue *ts_i[16];
  g_assert_cmpuint(metas_of(out_i, mi, 16), ==, n);
  g_assert_cmpuint(twins_of(out_i, ts_i, 16), ==, n);
  for (guint k = 0; k < n; k++) {
    g_assert_true(mi[k]->score == m[k]->score);
    g_assert_cmpuint(gst_value_array_get_size(ts_i[k]), ==, (guint)T);
    for (int t = 0; t < T; t++)
      g_assert_true(g_value_get_double(gst_value_array_get_value(ts_i[k], t)) ==
                    (double)r[k * T + t].score);
    g_assert_cmpint(memcmp(mi[k]->map, stitched[k], (gsize)M * M * sizeof(float)), ==, 0);
  }
  double avg;
  g_object_get(hi->element, "average-batch", &avg, NULL);
  g_assert_cmpfloat(avg, ==, (double)(n * T));
  gst_buffer_unref(out_i);
  gst_harness_teardown(hi);

  for (guint k = 0; k < n; k++)
    g_free(stitched[k]);
  gst_buffer_unref(out);
  gst_buffer_unref(orig);
  gst_buffer_unref(expect);
  detach_bus(hh, bus);
  gst_harness_teardown(hh);
  fap_detector_free(det);
  fap_model_free(model);
}

/* ---- refused --------------------------------------------------------------- */

static void expect_refused(GstHarness *hh, GstBus *bus, const char *prop, const char *value,
                           const char *phrase) {
  gchar *before = NULL, *after = NULL;
  guint overlap_before, overlap_after;
  g_object_get(hh->element, "tiles", &before, "tile-overlap", &overlap_before, NULL);
  gst_util_set_object_arg(G_OBJECT(hh->element), prop, value);
  gchar *w = pop_warnings(bus);
  if (!strstr(w, value) || !strstr(w, phrase))
    g_error("%s=%s: warning \"%s\" does not name the value and \"%s\"", prop, value, w, phrase);
  g_object_get(hh->element, "tiles", &after, "tile-overlap", &overlap_after, NULL);
  g_assert_cmpstr(after, ==, before); /* the setting in force stays */
  g_assert_cmpuint(overlap_after, ==, overlap_before);
  g_free(before);
  g_free(after);
  g_free(w);
}

static guint tiles_of_next(GstHarness *hh, int i) {
  GstBuffer *out = gst_harness_push_and_pull(hh, make_frame("RGB", 64, 48, i, i));
  GstFAPromptMeta *m[16];
  const GValue *ts[16];
  g_assert_cmpuint(metas_of(out, m, 16), ==, 1);
  g_assert_cmpuint(twins_of(out, ts, 16), ==, 1);
  guint n = ts[0] ? gst_value_array_get_size(ts[0]) : 1;
  gst_buffer_unref(out);
  return n;
}

static void test_refused(void) {
  GstHarness *hh = harness("", "2x2", 3, "false", 64, 48); /* the detector takes 4 */
  GstBus *bus = attach_bus(hh);
  g_assert_cmpuint(tiles_of_next(hh, 0), ==, 4);
  expect_refused(hh, bus, "tiles", "abc", "is not CxR");
  expect_refused(hh, bus, "tiles", "0x2", "is not CxR");
  expect_refused(hh, bus, "tiles", "2x", "is not CxR");
  expect_refused(hh, bus, "tiles", "17x1", "is not CxR");
  expect_refused(hh, bus, "tiles", "3x2", "6 crops, but the detector runs at most 4");
  expect_refused(hh, bus, "tile-overlap", "47", "overlap 47 too large");
  g_assert_cmpuint(tiles_of_next(hh, 1), ==, 4); /* frames go on with the setting in force */
  /* a good one is taken (no warning); empty: no tiles */
  g_object_set(hh->element, "tiles", "1x3", "tile-overlap", 5, NULL);
  gchar *w = pop_warnings(bus);
  g_assert_cmpstr(w, ==, "");
  g_free(w);
  g_assert_cmpuint(tiles_of_next(hh, 2), ==, 3);
  g_object_set(hh->element, "tiles", "", NULL);
  g_assert_cmpuint(tiles_of_next(hh, 3), ==, 1);
  /* roi refused when its rectangles in the tiles in force are too many */
  g_object_set(hh->element, "tiles", "2x1", NULL);
  g_object_set(hh->element, "roi", "0,0,8,8;8,0,8,8;16,0,8,8", NULL);
  w = pop_warnings(bus);
  g_assert_nonnull(strstr(w, "6 crops"));
  g_free(w);
  detach_bus(hh, bus);
  gst_harness_teardown(hh);
}

/* ---- tiles=auto ---------------------------------------------------------- */

/* the smallest count of tiles over len pixels (overlap o) whose side, over
 * grid patches, is at most k pixels a patch (docs/SPEC.md section 1.2,
 * Tiles: side ceil((len + (n - 1) o) / n)) */
static int auto_count(int len, int o, int grid, int k) {
  for (int n = 1; n <= len; n++) {
    int side = n == 1 ? len : (len + (n - 1) * o + n - 1) / n;
    if ((n == 1 || o <= len - n) && side <= k * grid)
      return n;
  }
  return -1;
}

/* the twin's "tiles" of the next frame's single roi, and the message's;
 * the warnings posted meanwhile appended to warnings */
static gchar *auto_grid_of_next(GstHarness *hh, GstBus *bus, int w, int h, int i, guint *n_scores,
                                GString *warnings) {
  GstBuffer *out = gst_harness_push_and_pull(hh, make_frame("RGB", w, h, i, i));
  const GstMetaInfo *info = gst_meta_get_info(GST_FAPROMPT_STRUCTURE_META_NAME);
  gpointer state = NULL;
  GstMeta *m;
  gchar *grid = NULL;
  *n_scores = 1;
  while ((m = gst_buffer_iterate_meta(out, &state)))
    if (m->info == info) {
      const GstStructure *s = gst_custom_meta_get_structure((GstCustomMeta *)m);
      gboolean is_auto = FALSE;
      g_assert_true(gst_structure_get_boolean(s, "tiles-auto", &is_auto) && is_auto);
      grid = g_strdup(gst_structure_get_string(s, "tiles"));
      const GValue *ts = gst_structure_get_value(s, "tile-scores");
      if (ts)
        *n_scores = gst_value_array_get_size(ts);
    }
  gst_buffer_unref(out);
  GstMessage *msg;
  gboolean seen = FALSE;
  while ((msg = gst_bus_pop(bus))) {
    const GstStructure *s = gst_message_get_structure(msg);
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_WARNING) {
      GError *err = NULL;
      gst_message_parse_warning(msg, &err, NULL);
      g_string_append_printf(warnings, "%s\n", err->message);
      g_error_free(err);
    } else if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ELEMENT &&
               gst_structure_has_name(s, "faprompt")) {
      g_assert_cmpstr(gst_structure_get_string(s, "tiles"), ==, grid);
      seen = TRUE;
    }
    gst_message_unref(msg);
  }
  g_assert_true(seen);
  return grid;
}

static void test_auto(void) {
  fap_model *model;
  g_assert_cmpint(fap_model_load(model_path, &model), ==, FAP_OK);
  const fap_config *cfg = fap_model_config(model);
  const int grid = cfg->image_size / cfg->patch_size, w = 160, h = 96, overlap = 3;
  fap_model_free(model);

  GstHarness *hh = harness("", "auto", overlap, "false", w, h);
  gst_util_set_object_arg(G_OBJECT(hh->element), "post-messages", "every-frame");
  GstBus *bus = attach_bus(hh);
  const int ks[] = {1000, 40, 25, 17};
  GString *warned = g_string_new(NULL);
  for (guint k = 0; k < G_N_ELEMENTS(ks); k++) {
    int c = auto_count(w, overlap, grid, ks[k]), r = auto_count(h, overlap, grid, ks[k]);
    if (c * r > 16)
      continue; /* beyond the batch: below */
    g_object_set(hh->element, "tile-max-patch-pixels", (guint)ks[k], NULL);
    guint n_scores;
    gchar *got = auto_grid_of_next(hh, bus, w, h, (int)k, &n_scores, warned);
    gchar *want = g_strdup_printf("%dx%d", c, r);
    if (g_strcmp0(got, want))
      g_error("tile-max-patch-pixels %d, grid %d: tiles=auto picked %s, want %s", ks[k], grid,
              got, want);
    g_assert_cmpuint(n_scores, ==, (guint)(c * r));
    g_free(got);
    g_free(want);
  }
  g_assert_cmpstr(warned->str, ==, "");
  /* a bound 16 crops cannot meet: the smallest patch they allow, one warning */
  g_object_set(hh->element, "tile-max-patch-pixels", 1u, NULL);
  guint n_scores;
  gchar *got = auto_grid_of_next(hh, bus, w, h, 7, &n_scores, warned);
  if (!strstr(warned->str, "tile-max-patch-pixels 1 ") || !strstr(warned->str, got))
    g_error("warning \"%s\" does not name the bound and the grid %s", warned->str, got);
  g_assert_cmpuint(n_scores, <=, 16);
  g_assert_cmpuint(n_scores, >=, 8);
  g_string_truncate(warned, 0);
  g_free(auto_grid_of_next(hh, bus, w, h, 8, &n_scores, warned));
  g_assert_cmpstr(warned->str, ==, ""); /* once */
  g_string_free(warned, TRUE);
  g_free(got);
  gchar *text = NULL;
  g_object_get(hh->element, "tiles", &text, NULL);
  g_assert_cmpstr(text, ==, "auto");
  g_free(text);
  detach_bus(hh, bus);
  gst_harness_teardown(hh);
}

/* ---- changed while playing ------------------------------------------------- */

static const char *tilings[] = {"2x2", "", "3x1", "1x2"};

typedef struct {
  GstElement *e;
  volatile gint stop;
  guint changes;
} Changer;

static gpointer change_tiles(gpointer data) {
  Changer *c = data;
  while (!g_atomic_int_get(&c->stop)) {
    g_object_set(c->e, "tiles", tilings[c->changes % G_N_ELEMENTS(tilings)], "tile-overlap",
                 c->changes % 5, NULL);
    c->changes++;
    g_usleep(700);
  }
  return NULL;
}

static void check_changes(const char *non_blocking) {
  GstHarness *hh = harness("", "2x2", 0, non_blocking, 64, 48);
  GstBus *bus = attach_bus(hh);
  Changer c = {hh->element, 0, 0};
  GThread *t = g_thread_new("tiles-changer", change_tiles, &c);
  const gboolean nb = !g_str_equal(non_blocking, "false");
  const gint64 until = g_get_monotonic_time() + 120 * G_USEC_PER_SEC;
  const int changing = 60;
  guint with_meta = 0;
  int frames = 0;
  for (int i = 0; i < changing || (nb && !with_meta && g_get_monotonic_time() < until); i++) {
    if (i == changing) {
      g_atomic_int_set(&c.stop, 1);
      g_thread_join(t);
      t = NULL;
    }
    frames++;
    g_assert_cmpint(gst_harness_push(hh, make_frame("RGB", 64, 48, i, i)), ==, GST_FLOW_OK);
    GstBuffer *out = gst_harness_pull(hh); /* every frame comes out, in order */
    g_assert_cmpuint(GST_BUFFER_PTS(out), ==, (guint64)i * GST_SECOND / 30);
    GstFAPromptMeta *m[4];
    guint n = metas_of(out, m, 4);
    if (n) {
      with_meta++;
      g_assert_cmpuint(n, ==, 1);
      g_assert_cmpuint(m[0]->width, ==, 64);
    }
    gst_buffer_unref(out);
    g_usleep(500);
  }
  if (t) {
    g_atomic_int_set(&c.stop, 1);
    g_thread_join(t);
  }
  g_assert_cmpuint(c.changes, >, 10);
  if (!nb)
    g_assert_cmpuint(with_meta, ==, frames);
  else
    g_assert_cmpuint(with_meta, >, 0);
  guint64 processed;
  g_object_get(hh->element, "frames-processed", &processed, NULL);
  g_assert_cmpuint(processed, ==, (guint64)frames);
  GstMessage *msg = gst_bus_pop_filtered(bus, GST_MESSAGE_WARNING | GST_MESSAGE_ERROR);
  g_assert_null(msg); /* nothing refused, nothing failed */
  detach_bus(hh, bus);
  gst_harness_teardown(hh);
}

static void test_change_blocking(void) { check_changes("false"); }
static void test_change_non_blocking(void) { check_changes("true"); }

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  if (argc < 2) {
    g_printerr("usage: %s MODEL\n", argv[0]);
    return 2;
  }
  model_path = argv[1];
  gst_faprompt_meta_get_info();
  g_test_add_func("/tiles/against-core", test_against_core);
  g_test_add_func("/tiles/refused", test_refused);
  g_test_add_func("/tiles/auto", test_auto);
  g_test_add_func("/tiles/change-blocking", test_change_blocking);
  g_test_add_func("/tiles/change-non-blocking", test_change_non_blocking);
  return g_test_run();
}
