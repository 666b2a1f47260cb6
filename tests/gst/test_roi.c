/* faprompt's roi property (GstHarness, isolated registry; TAP via g_test):
 *
 *   - each rectangle's meta (score, map) equals fap_detector_run on the same
 *     frame with that crop, in RGB, NV12, I420 and YUY2, at odd offsets and
 *     at the frame's edges; the frame's message says score = the highest,
 *     anomalous = any, and lists the rectangles;
 *   - regions come out in frame pixels, inside their rectangle; the pixels
 *     are those fap_blend_frame draws crop after crop, and no pixel outside
 *     every rectangle changes (its luma, chroma or RGB bytes);
 *   - fractions of the frame: edges rounded to pixels;
 *   - bad values (unparsable, zero size, outside the frame, pixels and
 *     fractions mixed, more than the batch or than 16 rectangles) are
 *     refused with a warning naming the value, the setting in force stays;
 *     a setting that no longer fits new caps falls back to the whole frame;
 *   - roi changed while playing, from another thread, in blocking and
 *     non-blocking mode: every frame comes out, each carrying the
 *     rectangles of one setting;
 *   - a model instance runs a frame's rectangles in its batch;
 *   - fapromptpublish's JSON: the highest score, any decision, the
 *     rectangles, regions in frame pixels inside them.
 *
 *   test_roi MODEL */
#include <glib/gstdio.h>
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

#include <fap.h>

#include "element_output.h"
#include "frames.h"
#include "gstfapromptmeta.h"

static const char *model_path;

static GstElement *element(const char *roi, const char *non_blocking) {
  GstElement *e = gst_element_factory_make("faprompt", NULL);
  g_assert_nonnull(e);
  g_object_set(e, "model-file", model_path, "post-messages", 1, "roi", roi, NULL);
  gst_util_set_object_arg(G_OBJECT(e), "non-blocking", non_blocking);
  return e;
}

static GstHarness *harness(GstElement *e, const char *fmt, int w, int h) {
  gst_object_ref_sink(e);
  GstHarness *hh = gst_harness_new_with_element(e, "sink", "src");
  gst_object_unref(e);
  gst_harness_set_src_caps(hh, gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, fmt,
                                                   "width", G_TYPE_INT, w, "height", G_TYPE_INT,
                                                   h, "framerate", GST_TYPE_FRACTION, 30, 1,
                                                   NULL));
  return hh;
}

static gboolean inside(int x, int y, const fap_rect *r, guint n) {
  for (guint i = 0; i < n; i++)
    if (x >= r[i].x && x < r[i].x + r[i].width && y >= r[i].y && y < r[i].y + r[i].height)
      return TRUE;
  return FALSE;
}

/* pixels outside every rectangle whose bytes (RGB; luma and chroma) differ */
static guint pixels_changed_outside(const fap_frame *a, const fap_frame *b, const fap_rect *r,
                                    guint n) {
  guint bad = 0;
  for (int y = 0; y < a->height; y++)
    for (int x = 0; x < a->width; x++) {
      if (inside(x, y, r, n))
        continue;
      const uint8_t *pa[3], *pb[3];
      int k = 0;
      switch (a->format) {
      case FAP_PIXEL_NV12:
        pa[0] = a->data + y * a->stride + x, pb[0] = b->data + y * b->stride + x;
        pa[1] = a->plane[0] + (y / 2) * a->plane_stride[0] + (x / 2) * 2;
        pb[1] = b->plane[0] + (y / 2) * b->plane_stride[0] + (x / 2) * 2;
        pa[2] = pa[1] + 1, pb[2] = pb[1] + 1;
        k = 3;
        break;
      case FAP_PIXEL_I420:
        pa[0] = a->data + y * a->stride + x, pb[0] = b->data + y * b->stride + x;
        for (int p = 0; p < 2; p++) {
          pa[p + 1] = a->plane[p] + (y / 2) * a->plane_stride[p] + x / 2;
          pb[p + 1] = b->plane[p] + (y / 2) * b->plane_stride[p] + x / 2;
        }
        k = 3;
        break;
      case FAP_PIXEL_YUY2: {
        const uint8_t *qa = a->data + y * a->stride + (x / 2) * 4, *qb = b->data + y * b->stride + (x / 2) * 4;
        pa[0] = qa + 2 * (x & 1), pb[0] = qb + 2 * (x & 1);
        pa[1] = qa + 1, pb[1] = qb + 1, pa[2] = qa + 3, pb[2] = qb + 3;
        k = 3;
        break;
      }
      default: /* RGB */
        for (int c = 0; c < 3; c++)
          pa[c] = a->data + y * a->stride + x * 3 + c, pb[c] = b->data + y * b->stride + x * 3 + c;
        k = 3;
      }
      for (int c = 0; c < k; c++)
        if (*pa[c] != *pb[c]) {
          bad++;
          break;
        }
    }
  return bad;
}

/* ---- against the core ----------------------------------------------------- */

static void check_against_core(const char *fmt, int w, int h, const char *roi,
                               const fap_rect *rects, guint n) {
  fap_model *model;
  fap_detector *det;
  fap_detector_options o;
  g_assert_cmpint(fap_model_load(model_path, &model), ==, FAP_OK);
  fap_detector_options_init(&o);
  o.batch = (int)n;
  g_assert_cmpint(fap_detector_new(model, &o, &det), ==, FAP_OK);

  GstVideoInfo info;
  gst_video_info_set_format(&info, gst_video_format_from_string(fmt), w, h);
  GstBuffer *in = make_frame(fmt, w, h, 3, 0);
  GstBuffer *orig = gst_buffer_copy_deep(in), *expect = gst_buffer_copy_deep(in);

  /* the core: each crop of the frame, one batch */
  GstVideoFrame fo;
  g_assert_true(gst_video_frame_map(&fo, &info, orig, GST_MAP_READ));
  fap_frame base = core_frame(&fo), frames[16];
  fap_result r[16];
  for (guint i = 0; i < n; i++) {
    frames[i] = base;
    frames[i].crop = rects[i];
  }
  g_assert_cmpint(fap_detector_run_batch(det, frames, (int)n, NULL, r), ==, FAP_OK);
  float lo = 1, hi = 0, smin = 1, smax = 0;
  for (guint i = 0; i < n; i++) {
    for (int k = 0; k < r[i].map_size * r[i].map_size; k++)
      lo = MIN(lo, r[i].map[k]), hi = MAX(hi, r[i].map[k]);
    smin = MIN(smin, r[i].score), smax = MAX(smax, r[i].score);
  }
  const float thr = 0.5f * (lo + hi), ithr = 0.5f * (smin + smax);

  GstElement *e = element(roi, "false");
  g_object_set(e, "pixel-threshold", thr, "heatmap-alpha", 0.8, "image-threshold", ithr,
               "max-regions", 0, NULL);
  GstHarness *hh = harness(e, fmt, w, h);
  GstBus *bus = attach_bus(hh);
  g_assert_cmpint(gst_harness_push(hh, in), ==, GST_FLOW_OK);
  GstBuffer *out = gst_harness_pull(hh);
  GstFAPromptMeta *m[16];
  g_assert_cmpuint(metas_of(out, m, 16), ==, n);
  gboolean any = FALSE;
  guint regions = 0;
  for (guint i = 0; i < n; i++) {
    g_assert_cmpint(m[i]->x, ==, rects[i].x);
    g_assert_cmpint(m[i]->y, ==, rects[i].y);
    g_assert_cmpuint(m[i]->width, ==, (guint)rects[i].width);
    g_assert_cmpuint(m[i]->height, ==, (guint)rects[i].height);
    g_assert_cmpfloat_with_epsilon(m[i]->score, r[i].score, 1e-6);
    double maxdiff = 0;
    for (int k = 0; k < r[i].map_size * r[i].map_size; k++)
      maxdiff = MAX(maxdiff, fabs(m[i]->map[k] - r[i].map[k]));
    g_assert_cmpfloat(maxdiff, <=, 1e-6);
    g_assert_cmpint(m[i]->anomalous, ==, r[i].score > ithr);
    any |= m[i]->anomalous;
    regions += m[i]->n_regions;
  }
  /* regions: frame pixels, inside the rectangle they were found in */
  gpointer state = NULL;
  GstMeta *gm;
  guint n_regions = 0;
  while ((gm = gst_buffer_iterate_meta_filtered(out, &state,
                                                GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
    GstVideoRegionOfInterestMeta *rm = (GstVideoRegionOfInterestMeta *)gm;
    guint k = 99;
    g_assert_true(gst_structure_get_uint(gst_video_region_of_interest_meta_get_param(rm, "faprompt"),
                                         "roi", &k));
    g_assert_cmpuint(k, <, n);
    g_assert_cmpint(rm->x, >=, rects[k].x);
    g_assert_cmpint(rm->y, >=, rects[k].y);
    g_assert_cmpint(rm->x + rm->w, <=, rects[k].x + rects[k].width);
    g_assert_cmpint(rm->y + rm->h, <=, rects[k].y + rects[k].height);
    n_regions++;
  }
  g_assert_cmpuint(n_regions, ==, regions);
  g_assert_cmpuint(n_regions, >, 0); /* the threshold splits the maps */
  /* the structure twins say which rectangle */
  state = NULL;
  guint twin = 0;
  const GstMetaInfo *twin_info = gst_meta_get_info(GST_FAPROMPT_STRUCTURE_META_NAME);
  while ((gm = gst_buffer_iterate_meta(out, &state))) {
    if (gm->info != twin_info)
      continue;
    GstStructure *s = gst_custom_meta_get_structure((GstCustomMeta *)gm);
    guint idx, count;
    g_assert_true(gst_structure_get_uint(s, "roi-index", &idx));
    g_assert_true(gst_structure_get_uint(s, "roi-count", &count));
    g_assert_cmpuint(idx, ==, twin);
    g_assert_cmpuint(count, ==, n);
    twin++;
  }
  g_assert_cmpuint(twin, ==, n);

  /* the frame's message: the highest score, any decision, the rectangles */
  GstMessage *msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ELEMENT);
  g_assert_nonnull(msg);
  const GstStructure *s = gst_message_get_structure(msg);
  double score;
  gboolean an;
  guint rc;
  g_assert_true(gst_structure_get_double(s, "score", &score));
  g_assert_cmpfloat_with_epsilon(score, smax, 1e-6);
  g_assert_true(gst_structure_get_boolean(s, "anomalous", &an));
  g_assert_cmpint(an, ==, any);
  g_assert_cmpint(an, ==, n > 1 || smax > ithr); /* several: one is above the midpoint */
  g_assert_true(gst_structure_get_uint(s, "region-count", &rc));
  g_assert_cmpuint(rc, ==, regions);
  const GValue *rois = gst_structure_get_value(s, "rois");
  g_assert_nonnull(rois);
  g_assert_cmpuint(gst_value_array_get_size(rois), ==, n);
  for (guint i = 0; i < n; i++) {
    const GstStructure *rs = gst_value_get_structure(gst_value_array_get_value(rois, i));
    gint x;
    g_assert_true(gst_structure_get_int(rs, "x", &x));
    g_assert_cmpint(x, ==, rects[i].x);
    g_assert_true(gst_structure_get_double(rs, "score", &score));
    g_assert_cmpfloat_with_epsilon(score, r[i].score, 1e-6);
  }
  gst_message_unref(msg);
  gfloat last;
  g_object_get(hh->element, "last-score", &last, NULL);
  g_assert_cmpfloat_with_epsilon(last, smax, 1e-6);

  /* pixels: fap_blend_frame crop after crop; nothing outside them */
  GstVideoFrame fe, fout;
  g_assert_true(gst_video_frame_map(&fe, &info, expect, GST_MAP_READWRITE));
  fap_frame ef = core_frame(&fe);
  fap_blend blend = {0.8f, thr, 0.0f, 1.0f};
  g_object_get(hh->element, "pixel-threshold", &blend.threshold, NULL);
  for (guint i = 0; i < n; i++) {
    fap_frame f = ef;
    f.crop = rects[i];
    g_assert_cmpint(fap_blend_frame(&f, m[i]->map, (int)m[i]->map_width, &blend), ==, FAP_OK);
  }
  gst_video_frame_unmap(&fe);
  g_assert_true(same_buffer_bytes(out, expect));
  g_assert_false(same_buffer_bytes(out, orig)); /* something was drawn */
  g_assert_true(gst_video_frame_map(&fout, &info, out, GST_MAP_READ));
  fap_frame of = core_frame(&fout);
  g_assert_cmpuint(pixels_changed_outside(&base, &of, rects, n), ==, 0);
  gst_video_frame_unmap(&fout);
  gst_video_frame_unmap(&fo);

  gst_buffer_unref(out);
  gst_buffer_unref(orig);
  gst_buffer_unref(expect);
  detach_bus(hh, bus);
  gst_harness_teardown(hh);
  fap_detector_free(det);
  fap_model_free(model);
}

static void test_against_core(void) {
  /* an odd offset, the bottom-right corner, an odd size, the left edge */
  static const fap_rect rects[] = {{7, 9, 23, 15}, {40, 30, 40, 30}, {0, 20, 17, 33}};
  const char *roi = "7,9,23,15;40,30,40,30; 0,20,17,33";
  const char *fmts[] = {"RGB", "NV12", "I420", "YUY2"};
  for (guint i = 0; i < G_N_ELEMENTS(fmts); i++)
    check_against_core(fmts[i], 80, 60, roi, rects, 3);
  static const fap_rect one[] = {{1, 1, 66, 44}}; /* an odd frame, all but its first row and column */
  check_against_core("NV12", 67, 45, "1,1,66,44", one, 1);
}

/* ---- fractions ---------------------------------------------------------------- */

static void test_fractions(void) {
  GstHarness *hh = harness(element("0.5,0.0,0.5,1.0;0.0,0.25,0.5,0.5", "false"), "RGB", 67, 45);
  GstBuffer *out = gst_harness_push_and_pull(hh, make_frame("RGB", 67, 45, 1, 0));
  GstFAPromptMeta *m[4];
  g_assert_cmpuint(metas_of(out, m, 4), ==, 2);
  /* edges at round(0.5 * 67) = 34 and 67; rows round(0.25 * 45) = 11 .. round(0.75 * 45) = 34 */
  g_assert_cmpint(m[0]->x, ==, 34);
  g_assert_cmpuint(m[0]->width, ==, 33);
  g_assert_cmpint(m[0]->y, ==, 0);
  g_assert_cmpuint(m[0]->height, ==, 45);
  g_assert_cmpint(m[1]->x, ==, 0);
  g_assert_cmpuint(m[1]->width, ==, 34);
  g_assert_cmpint(m[1]->y, ==, 11);
  g_assert_cmpuint(m[1]->height, ==, 23);
  gst_buffer_unref(out);
  gst_harness_teardown(hh);
}

/* ---- bad values ------------------------------------------------------------------- */

static void expect_refused(GstHarness *hh, GstBus *bus, const char *value, const char *kept,
                           const char *phrase) {
  g_object_set(hh->element, "roi", value, NULL);
  gchar *w = pop_warnings(bus), *now = NULL;
  gchar *quoted = g_strdup_printf("\"%s\"", value);
  g_assert_nonnull(strstr(w, quoted)); /* names the value */
  g_assert_nonnull(strstr(w, phrase));
  g_object_get(hh->element, "roi", &now, NULL);
  g_assert_cmpstr(now, ==, kept); /* the setting in force stays */
  g_free(now);
  g_free(quoted);
  g_free(w);
}

static guint roi_count_of_next(GstHarness *hh, int i, int w, int h) {
  GstBuffer *out = gst_harness_push_and_pull(hh, make_frame("RGB", w, h, i, i));
  GstFAPromptMeta *m[16];
  guint n = metas_of(out, m, 16);
  gst_buffer_unref(out);
  return n;
}

static void test_refused(void) {
  const char *good = "0,0,32,24;32,24,32,24";
  GstElement *e = element(good, "false");
  g_object_set(e, "batch-size", 1, NULL); /* the detector takes 2: the rectangles at start */
  GstHarness *hh = harness(e, "RGB", 64, 48);
  GstBus *bus = attach_bus(hh);
  g_assert_cmpuint(roi_count_of_next(hh, 0, 64, 48), ==, 2);
  expect_refused(hh, bus, "abc", good, "is not x,y,w,h");
  expect_refused(hh, bus, "0,0,10", good, "is not x,y,w,h");
  expect_refused(hh, bus, "1,2,0,10", good, "zero size");
  expect_refused(hh, bus, "10,10,60,10", good, "past the 64x48 frame");
  expect_refused(hh, bus, "0.5,0,0.5,1", good, "mixes pixels and fractions");
  expect_refused(hh, bus, "0.5,0.0,0.6,1.0", good, "reaches past the frame");
  expect_refused(hh, bus, "-1,0,5,5", good, "is not x,y,w,h");
  expect_refused(hh, bus, "0,0,8,8;8,0,8,8;16,0,8,8", good, "at most 2 in one batch");
  GString *many = g_string_new(NULL);
  for (int i = 0; i < 17; i++)
    g_string_append_printf(many, "%s%d,0,2,2", i ? ";" : "", i * 2);
  expect_refused(hh, bus, many->str, good, "17 rectangles");
  g_string_free(many, TRUE);
  /* frames go on with the setting in force */
  g_assert_cmpuint(roi_count_of_next(hh, 1, 64, 48), ==, 2);
  /* a good one is taken (no warning), the empty one is the whole frame */
  g_object_set(hh->element, "roi", "1,1,10,10", NULL);
  gchar *w = pop_warnings(bus);
  g_assert_cmpstr(w, ==, "");
  g_free(w);
  g_assert_cmpuint(roi_count_of_next(hh, 2, 64, 48), ==, 1);
  /* new caps the setting does not fit: the whole frame, said */
  g_object_set(hh->element, "roi", "40,30,24,18", NULL);
  gst_harness_set_src_caps(hh, gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, "RGB",
                                                   "width", G_TYPE_INT, 32, "height", G_TYPE_INT,
                                                   24, "framerate", GST_TYPE_FRACTION, 30, 1,
                                                   NULL));
  GstBuffer *out = gst_harness_push_and_pull(hh, make_frame("RGB", 32, 24, 3, 3));
  GstFAPromptMeta *m[4];
  g_assert_cmpuint(metas_of(out, m, 4), ==, 1);
  g_assert_cmpuint(m[0]->width, ==, 32);
  gst_buffer_unref(out);
  w = pop_warnings(bus);
  g_assert_nonnull(strstr(w, "\"40,30,24,18\" does not fit"));
  g_free(w);
  gchar *now = NULL;
  g_object_get(hh->element, "roi", &now, NULL);
  g_assert_cmpstr(now, ==, "");
  g_free(now);
  detach_bus(hh, bus);
  gst_harness_teardown(hh);
}

/* ---- changed while playing ------------------------------------------------------------ */

static const char *settings[] = {"0,0,32,24", "10,5,40,30;0,0,64,48", "", "0.0,0.5,1.0,0.5"};

typedef struct {
  GstElement *e;
  volatile gint stop;
  guint changes;
} Changer;

static gpointer change_roi(gpointer data) {
  Changer *c = data;
  while (!g_atomic_int_get(&c->stop)) {
    g_object_set(c->e, "roi", settings[c->changes % G_N_ELEMENTS(settings)], NULL);
    c->changes++;
    g_usleep(700);
  }
  return NULL;
}

/* the rectangles of a frame are those of one of the settings */
static gboolean one_setting(GstFAPromptMeta **m, guint n) {
  const fap_rect whole = {0, 0, 64, 48};
  const fap_rect sets[][2] = {{{0, 0, 32, 24}}, {{10, 5, 40, 30}, whole}, {whole}, {{0, 24, 64, 24}}};
  const guint counts[] = {1, 2, 1, 1};
  for (guint s = 0; s < G_N_ELEMENTS(counts); s++) {
    gboolean same = n == counts[s];
    for (guint i = 0; same && i < n; i++)
      same = m[i]->x == sets[s][i].x && m[i]->y == sets[s][i].y &&
             m[i]->width == (guint)sets[s][i].width && m[i]->height == (guint)sets[s][i].height;
    if (same)
      return TRUE;
  }
  return FALSE;
}

static void check_changes(const char *non_blocking) {
  GstElement *e = element(settings[1], non_blocking);
  GstHarness *hh = harness(e, "NV12", 64, 48);
  GstBus *bus = attach_bus(hh);
  Changer c = {hh->element, 0, 0};
  GThread *t = g_thread_new("roi-changer", change_roi, &c);
  guint with_meta = 0;
  const int changing = 120;
  const gboolean nb = !g_str_equal(non_blocking, "false");
  const gint64 until = g_get_monotonic_time() + 120 * G_USEC_PER_SEC;
  int frames = 0;
  /* non-blocking: on until a result came back (slow under valgrind) */
  for (int i = 0; i < changing || (nb && !with_meta && g_get_monotonic_time() < until); i++) {
    if (i == changing) {
      g_atomic_int_set(&c.stop, 1);
      g_thread_join(t);
      t = NULL;
    }
    frames++;
    g_assert_cmpint(gst_harness_push(hh, make_frame("NV12", 64, 48, i, i)), ==, GST_FLOW_OK);
    GstBuffer *out = gst_harness_pull(hh); /* every frame comes out, in order */
    g_assert_cmpuint(GST_BUFFER_PTS(out), ==, (guint64)i * GST_SECOND / 30);
    GstFAPromptMeta *m[16];
    guint n = metas_of(out, m, 16);
    if (n) {
      with_meta++;
      g_assert_true(one_setting(m, n));
    }
    gst_buffer_unref(out);
    g_usleep(500);
  }
  if (t) {
    g_atomic_int_set(&c.stop, 1);
    g_thread_join(t);
  }
  g_assert_cmpuint(gst_harness_buffers_in_queue(hh), ==, 0);
  g_assert_cmpuint(c.changes, >, 10);
  if (!nb)
    g_assert_cmpuint(with_meta, ==, frames);
  else
    g_assert_cmpuint(with_meta, >, 0);
  guint64 processed;
  g_object_get(hh->element, "frames-processed", &processed, NULL);
  g_assert_cmpuint(processed, ==, (guint64)frames);
  /* nothing was refused, nothing failed */
  GstMessage *msg = gst_bus_pop_filtered(bus, GST_MESSAGE_WARNING | GST_MESSAGE_ERROR);
  g_assert_null(msg);
  /* blocking: the next inference runs on a setting changed between frames */
  if (!nb) {
    g_object_set(hh->element, "roi", "3,4,20,21", NULL);
    GstBuffer *out = gst_harness_push_and_pull(hh, make_frame("NV12", 64, 48, 0, frames));
    GstFAPromptMeta *m[16];
    g_assert_cmpuint(metas_of(out, m, 16), ==, 1);
    g_assert_cmpint(m[0]->x, ==, 3);
    g_assert_cmpuint(m[0]->height, ==, 21);
    gst_buffer_unref(out);
  }
  detach_bus(hh, bus);
  gst_harness_teardown(hh);
}

static void test_change_blocking(void) { check_changes("false"); }
static void test_change_non_blocking(void) { check_changes("true"); }

/* ---- a model instance ----------------------------------------------------------------- */

static void test_instance(void) {
  GstElement *e = element("0,0,20,20;20,20,44,28;5,5,10,10", "false");
  g_object_set(e, "model-instance-id", "roi-test", "batch-size", 4, "batch-timeout",
               (guint64)1000, NULL);
  GstHarness *hh = harness(e, "I420", 64, 48);
  GstBus *bus = attach_bus(hh);
  GstBuffer *in = make_frame("I420", 64, 48, 2, 0), *keep = gst_buffer_copy_deep(in);
  GstBuffer *out = gst_harness_push_and_pull(hh, in);
  GstFAPromptMeta *m[16];
  g_assert_cmpuint(metas_of(out, m, 16), ==, 3);
  /* the same results as a detector of its own */
  fap_model *model;
  fap_detector *det;
  fap_detector_options o;
  g_assert_cmpint(fap_model_load(model_path, &model), ==, FAP_OK);
  fap_detector_options_init(&o);
  g_assert_cmpint(fap_detector_new(model, &o, &det), ==, FAP_OK);
  GstVideoInfo info;
  gst_video_info_set_format(&info, GST_VIDEO_FORMAT_I420, 64, 48);
  GstVideoFrame f;
  g_assert_true(gst_video_frame_map(&f, &info, keep, GST_MAP_READ));
  for (guint i = 0; i < 3; i++) {
    fap_frame fr = core_frame(&f);
    fr.crop = (fap_rect){m[i]->x, m[i]->y, (int)m[i]->width, (int)m[i]->height};
    fap_result r;
    g_assert_cmpint(fap_detector_run(det, &fr, &r), ==, FAP_OK);
    g_assert_cmpfloat_with_epsilon(m[i]->score, r.score, 1e-6);
  }
  gst_video_frame_unmap(&f);
  double avg;
  g_object_get(hh->element, "average-batch", &avg, NULL);
  g_assert_cmpfloat(avg, ==, 3.0); /* the frame's three crops in one batch */
  /* five do not fit a batch of four */
  g_object_set(hh->element, "roi", "0,0,8,8;8,0,8,8;16,0,8,8;24,0,8,8;32,0,8,8", NULL);
  gchar *w = pop_warnings(bus);
  g_assert_nonnull(strstr(w, "at most 4 in one batch"));
  g_free(w);
  gst_buffer_unref(out);
  gst_buffer_unref(keep);
  fap_detector_free(det);
  fap_model_free(model);
  detach_bus(hh, bus);
  gst_harness_teardown(hh);
}

/* ---- the JSON documents of fapromptpublish -------------------------------------------- */

static void test_publish_json(void) {
  GstElementFactory *f = gst_element_factory_find("fapromptpublish");
  if (!f) {
    g_test_skip("fapromptpublish not built (libmosquitto)");
    return;
  }
  gst_object_unref(f);
  gchar *dir = g_dir_make_tmp("faprompt-roi-XXXXXX", NULL);
  gchar *path = g_build_filename(dir, "out.jsonl", NULL);
  gchar *desc = g_strdup_printf(
      "faprompt model-file=%s non-blocking=false roi=\"5,6,30,20;40,20,24,28\" "
      "pixel-threshold=0 max-regions=0 ! fapromptpublish target=file location=%s "
      "policy=every-frame include-map=array map-size=2 stats-interval=0",
      model_path, path);
  GstHarness *hh = gst_harness_new_parse(desc);
  gst_harness_set_src_caps_str(hh, "video/x-raw,format=NV12,width=64,height=48,framerate=30/1");
  GstBuffer *out = gst_harness_push_and_pull(hh, make_frame("NV12", 64, 48, 1, 0));
  GstFAPromptMeta *m[4];
  g_assert_cmpuint(metas_of(out, m, 4), ==, 2);
  gst_harness_push_event(hh, gst_event_new_eos());
  gst_harness_teardown(hh);

  gchar *text = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  JsonParser *p = json_parser_new();
  g_assert_true(json_parser_load_from_data(p, text, -1, NULL));
  JsonObject *o = json_node_get_object(json_parser_get_root(p));
  const float top = MAX(m[0]->score, m[1]->score);
  g_assert_cmpfloat((float)json_object_get_double_member(o, "score"), ==, top);
  g_assert_cmpint(json_object_get_boolean_member(o, "anomalous"), ==,
                  m[0]->anomalous || m[1]->anomalous);
  g_assert_cmpint(json_object_get_int_member(o, "region_count"), ==,
                  m[0]->n_regions + m[1]->n_regions);
  JsonObject *frame = json_object_get_object_member(o, "frame"); /* the box around both */
  g_assert_cmpint(json_object_get_int_member(frame, "x"), ==, 5);
  g_assert_cmpint(json_object_get_int_member(frame, "y"), ==, 6);
  g_assert_cmpint(json_object_get_int_member(frame, "width"), ==, 59);
  g_assert_cmpint(json_object_get_int_member(frame, "height"), ==, 42);
  JsonArray *rois = json_object_get_array_member(o, "rois");
  g_assert_cmpuint(json_array_get_length(rois), ==, 2);
  for (guint i = 0; i < 2; i++) {
    JsonObject *r = json_array_get_object_element(rois, i);
    g_assert_cmpint(json_object_get_int_member(r, "x"), ==, m[i]->x);
    g_assert_cmpint(json_object_get_int_member(r, "height"), ==, m[i]->height);
    g_assert_cmpfloat((float)json_object_get_double_member(r, "score"), ==, m[i]->score);
  }
  /* regions: frame pixels, each inside one of the rectangles */
  JsonArray *regions = json_object_get_array_member(o, "regions");
  g_assert_cmpuint(json_array_get_length(regions), >=, 2); /* threshold 0: one per rectangle */
  for (guint i = 0; i < json_array_get_length(regions); i++) {
    JsonObject *r = json_array_get_object_element(regions, i);
    gint x = json_object_get_int_member(r, "x"), y = json_object_get_int_member(r, "y");
    gint w = json_object_get_int_member(r, "width"), h = json_object_get_int_member(r, "height");
    gboolean in = FALSE;
    for (guint k = 0; k < 2; k++)
      in |= x >= m[k]->x && y >= m[k]->y && x + w <= m[k]->x + (gint)m[k]->width &&
            y + h <= m[k]->y + (gint)m[k]->height;
    g_assert_true(in);
  }
  JsonObject *map = json_object_get_object_member(o, "map");
  g_assert_cmpint(json_object_get_int_member(map, "roi"), ==, m[1]->score > m[0]->score);
  g_object_unref(p);
  gst_buffer_unref(out);
  g_free(text);
  g_unlink(path);
  g_rmdir(dir);
  g_free(path);
  g_free(dir);
  g_free(desc);
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  if (argc < 2) {
    g_printerr("usage: %s MODEL\n", argv[0]);
    return 2;
  }
  model_path = argv[1];
  gst_faprompt_meta_get_info();
  g_test_add_func("/roi/against-core", test_against_core);
  g_test_add_func("/roi/fractions", test_fractions);
  g_test_add_func("/roi/refused", test_refused);
  g_test_add_func("/roi/change-blocking", test_change_blocking);
  g_test_add_func("/roi/change-non-blocking", test_change_non_blocking);
  g_test_add_func("/roi/instance", test_instance);
  g_test_add_func("/roi/publish-json", test_publish_json);
  return g_test_run();
}
