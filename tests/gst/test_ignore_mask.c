/* faprompt's ignore-mask property (GstHarness, isolated registry; TAP via
 * g_test; docs/SPEC.md section 1.2, Ignore mask), with real PNG files:
 *
 *   - a mask whose left half is black: the meta's map is 0 bit for bit
 *     wherever the mask's nearest pixel is black and equal bit for bit to
 *     the unmasked element's map elsewhere; the score is the unmasked one;
 *     no region lies in the masked half; the heatmap leaves every byte of
 *     the masked half as it came in, and draws in the other half;
 *   - a mask of another aspect than the frames is refused with a warning
 *     naming the file and both aspects, and the setting in force stays;
 *   - the file replaced on disk (the right half black now) is reloaded;
 *   - then a corrupt PNG in its place keeps the last good mask, with a
 *     warning.
 *
 *   test_ignore_mask MODEL */
#include <gdk-pixbuf/gdk-pixbuf.h>
#include <glib/gstdio.h>
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <string.h>

#include "element_output.h"
#include "frames.h"
#include "gstfapromptmeta.h"

#define W 80
#define H 60

static const char *model_path;

/* a w x h PNG at path, black where x < split (left) or x >= split (!left),
 * written beside and renamed into place (the watch never sees half a file) */
static void write_mask(const char *path, int w, int h, int split, gboolean left) {
  GdkPixbuf *pb = gdk_pixbuf_new(GDK_COLORSPACE_RGB, FALSE, 8, w, h);
  guint8 *px = gdk_pixbuf_get_pixels(pb);
  int stride = gdk_pixbuf_get_rowstride(pb);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      gboolean black = left ? x < split : x >= split;
      memset(px + y * stride + x * 3, black ? 20 : 235, 3);
    }
  gchar *tmp = g_strconcat(path, ".part", NULL);
  GError *err = NULL;
  g_assert_true(gdk_pixbuf_save(pb, tmp, "png", &err, NULL));
  g_assert_no_error(err);
  g_assert_cmpint(g_rename(tmp, path), ==, 0);
  g_free(tmp);
  g_object_unref(pb);
}

static GstHarness *harness(const char *mask) {
  GstElement *e = gst_element_factory_make("faprompt", NULL);
  g_assert_nonnull(e);
  g_object_set(e, "model-file", model_path, "pixel-threshold", 0.0f, "heatmap-alpha", 0.8,
               "watch-settle", 50u, NULL);
  if (mask)
    g_object_set(e, "ignore-mask", mask, NULL);
  gst_util_set_object_arg(G_OBJECT(e), "non-blocking", "false");
  gst_object_ref_sink(e);
  GstHarness *hh = gst_harness_new_with_element(e, "sink", "src");
  gst_object_unref(e);
  gst_harness_set_src_caps(hh, gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, "RGB",
                                                   "width", G_TYPE_INT, W, "height", G_TYPE_INT,
                                                   H, "framerate", GST_TYPE_FRACTION, 30, 1,
                                                   NULL));
  return hh;
}

/* whether map column i (of M over the frame's W pixels) lies under a black
 * mask column: the mask is mw wide, black where x < split (left) or
 * x >= split */
static gboolean masked_col(int i, int M, int mw, int split, gboolean left) {
  double u = (i + 0.5) * W / M;
  int mx = (int)(u * mw / W);
  return left ? mx < split : mx >= split;
}

/* checks one output against the unmasked element's on the same frame */
static void check_masked(GstBuffer *out, GstBuffer *plain, GstBuffer *in, int mw, int split,
                         gboolean left) {
  GstFAPromptMeta *m[2], *p[2];
  g_assert_cmpuint(metas_of(out, m, 2), ==, 1);
  g_assert_cmpuint(metas_of(plain, p, 2), ==, 1);
  g_assert_true(m[0]->score == p[0]->score); /* the model's score, unchanged */
  const guint M = m[0]->map_width;
  int n_masked = 0, n_kept = 0;
  for (guint j = 0; j < M; j++)
    for (guint i = 0; i < M; i++) {
      float a = *(const float *)((const guint8 *)m[0]->map + j * m[0]->map_stride + i * 4);
      float b = *(const float *)((const guint8 *)p[0]->map + j * p[0]->map_stride + i * 4);
      if (masked_col((int)i, (int)M, mw, split, left)) {
        g_assert_true(a == 0.0f);
        n_masked++;
      } else {
        g_assert_true(a == b);
        n_kept++;
      }
    }
  g_assert_cmpint(n_masked, >, 0);
  g_assert_cmpint(n_kept, >, 0);
  /* regions: none in the masked half (a map column at the boundary may
   * reach one map pixel's width into it) */
  int edge = W * split / mw, slack = (W + (int)M - 1) / (int)M;
  gpointer state = NULL;
  GstMeta *meta;
  while ((meta = gst_buffer_iterate_meta_filtered(out, &state,
                                                  GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
    GstVideoRegionOfInterestMeta *r = (GstVideoRegionOfInterestMeta *)meta;
    if (left)
      g_assert_cmpint((int)r->x, >=, edge - slack);
    else
      g_assert_cmpint((int)(r->x + r->w), <=, edge + slack);
  }
  /* pixels: the masked frame pixels as they came in, bit for bit; some
   * drawn in the other half */
  GstMapInfo mo, mi;
  g_assert_true(gst_buffer_map(out, &mo, GST_MAP_READ));
  g_assert_true(gst_buffer_map(in, &mi, GST_MAP_READ));
  GstVideoInfo info;
  gst_video_info_set_format(&info, GST_VIDEO_FORMAT_RGB, W, H);
  int stride = GST_VIDEO_INFO_PLANE_STRIDE(&info, 0), changed = 0;
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      int mx = (int)((x + 0.5) * mw / W);
      gboolean off = left ? mx < split : mx >= split;
      const guint8 *a = mo.data + y * stride + x * 3, *b = mi.data + y * stride + x * 3;
      if (off)
        g_assert_cmpint(memcmp(a, b, 3), ==, 0);
      else
        changed += memcmp(a, b, 3) != 0;
    }
  g_assert_cmpint(changed, >, 0);
  gst_buffer_unmap(out, &mo);
  gst_buffer_unmap(in, &mi);
}

/* one frame through both elements; the masked output checked */
static void push_and_check(GstHarness *masked, GstHarness *plain, int seed, int mw, int split,
                           gboolean left) {
  GstBuffer *in = make_frame("RGB", W, H, seed, (guint64)seed);
  GstBuffer *out = gst_harness_push_and_pull(masked, gst_buffer_copy_deep(in));
  GstBuffer *ref = gst_harness_push_and_pull(plain, gst_buffer_copy_deep(in));
  check_masked(out, ref, in, mw, split, left);
  gst_buffer_unref(out);
  gst_buffer_unref(ref);
  gst_buffer_unref(in);
}

/* whether the next frame's map is zero in the right half (the reloaded
 * mask), rather than in the left */
static gboolean right_masked_now(GstHarness *hh, int seed) {
  GstBuffer *out = gst_harness_push_and_pull(hh, make_frame("RGB", W, H, seed, (guint64)seed));
  GstFAPromptMeta *m[2];
  g_assert_cmpuint(metas_of(out, m, 2), ==, 1);
  const guint M = m[0]->map_width;
  float last = *(const float *)((const guint8 *)m[0]->map + (M - 1) * 4);
  float first = *(const float *)m[0]->map;
  gst_buffer_unref(out);
  return last == 0.0f && first != 0.0f;
}

static void test_ignore_mask(void) {
  gchar *dir = g_dir_make_tmp("fap-mask-XXXXXX", NULL);
  g_assert_nonnull(dir);
  gchar *path = g_build_filename(dir, "mask.png", NULL);
  gchar *square = g_build_filename(dir, "square.png", NULL);
  write_mask(path, 40, 30, 20, TRUE); /* 4:3, left half black */
  write_mask(square, 40, 40, 20, TRUE);

  GstHarness *hh = harness(path), *plain = harness(NULL);
  GstBus *bus = attach_bus(hh);
  for (int i = 0; i < 2; i++)
    push_and_check(hh, plain, 3 + i, 40, 20, TRUE);

  /* another aspect: refused, naming the file and both aspects */
  g_object_set(hh->element, "ignore-mask", square, NULL);
  gchar *w = pop_warnings(bus);
  if (!strstr(w, square) || !strstr(w, "1.0000") || !strstr(w, "1.3333"))
    g_error("warning \"%s\" does not name %s and both aspects", w, square);
  g_free(w);
  gchar *now = NULL;
  g_object_get(hh->element, "ignore-mask", &now, NULL);
  g_assert_cmpstr(now, ==, path);
  g_free(now);
  push_and_check(hh, plain, 7, 40, 20, TRUE);

  /* the file replaced: the right half black now, reloaded after the
   * settle time */
  write_mask(path, 80, 60, 40, FALSE);
  gint64 deadline = g_get_monotonic_time() + 10 * G_TIME_SPAN_SECOND;
  int seed = 10;
  while (!right_masked_now(hh, seed++))
    if (g_get_monotonic_time() > deadline)
      g_error("the changed ignore-mask was not reloaded within 10 s");
  push_and_check(hh, plain, seed++, 80, 40, FALSE);

  /* a corrupt file in its place: a warning, the last good mask stays */
  g_assert_true(g_file_set_contents(path, "\x89PNG\r\n\x1a\nnot a png at all", -1, NULL));
  deadline = g_get_monotonic_time() + 10 * G_TIME_SPAN_SECOND;
  GString *warnings = g_string_new(NULL);
  while (!strstr(warnings->str, "cannot be used")) {
    g_assert_true(g_get_monotonic_time() < deadline);
    g_usleep(20000);
    push_and_check(hh, plain, seed++, 80, 40, FALSE);
    w = pop_warnings(bus);
    g_string_append(warnings, w);
    g_free(w);
  }
  g_assert_nonnull(strstr(warnings->str, "last good mask stays"));
  g_string_free(warnings, TRUE);
  push_and_check(hh, plain, seed++, 80, 40, FALSE);

  detach_bus(hh, bus);
  gst_harness_teardown(hh);
  gst_harness_teardown(plain);
  g_unlink(path);
  g_unlink(square);
  g_rmdir(dir);
  g_free(path);
  g_free(square);
  g_free(dir);
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  if (argc < 2) {
    g_printerr("usage: %s MODEL\n", argv[0]);
    return 2;
  }
  model_path = argv[1];
  g_test_add_func("/ignore-mask/masked-reloaded-refused", test_ignore_mask);
  return g_test_run();
}
