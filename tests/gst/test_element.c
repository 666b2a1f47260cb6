/* faprompt element tests (GstHarness, isolated registry; TAP via g_test).
 *
 *   test_element MODEL [OTHER_MODEL]
 *
 * MODEL is a tiny random model (tests/meson.build: tiny-a), OTHER_MODEL a
 * second file for the model-cache test. The plugin comes from
 * GST_PLUGIN_PATH (the build tree), the registry from GST_REGISTRY. */
#include <glib/gstdio.h>
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/controller/controller.h>
#include <gst/video/video.h>
#include <math.h>
#include <string.h>

#include <fap.h>

#include "frames.h"
#include "gstfapromptmeta.h"

static const char *model_path;
static const char *other_model_path;

static const char *all_formats[] = {"RGB",  "BGR",  "RGBA", "BGRA", "RGBx", "BGRx",
                                    "xRGB", "xBGR", "NV12", "I420", "YUY2"};

/* ---- helpers -------------------------------------------------------------- */

static GstElement *make_element(const char *props_fmt, ...) G_GNUC_PRINTF(1, 2);
static GstElement *make_element(const char *props_fmt, ...) {
  GstElement *e = gst_element_factory_make("faprompt", NULL);
  g_assert_nonnull(e);
  /* GstHarness answers LATENCY as a live source: non-blocking=auto would run
   * non-blocking, so the harness tests say which mode they test */
  g_object_set(e, "model-file", model_path, "post-messages", 0, NULL);
  gst_util_set_object_arg(G_OBJECT(e), "non-blocking", "false");
  if (props_fmt) {
    va_list ap;
    va_start(ap, props_fmt);
    gchar *props = g_strdup_vprintf(props_fmt, ap);
    va_end(ap);
    gchar **kv = g_strsplit(props, " ", -1);
    for (gchar **p = kv; *p; p++) {
      if (!**p)
        continue;
      gchar **pair = g_strsplit(*p, "=", 2);
      gst_util_set_object_arg(G_OBJECT(e), pair[0], pair[1]);
      g_strfreev(pair);
    }
    g_strfreev(kv);
    g_free(props);
  }
  return e;
}

static GstCaps *video_caps(const char *fmt, int w, int h) {
  return gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, fmt, "width", G_TYPE_INT, w,
                             "height", G_TYPE_INT, h, "framerate", GST_TYPE_FRACTION, 30, 1,
                             NULL);
}

static GstHarness *harness(GstElement *e, const char *fmt, int w, int h) {
  gst_object_ref_sink(e);
  GstHarness *hh = gst_harness_new_with_element(e, "sink", "src");
  gst_object_unref(e); /* the harness holds its own reference */
  gst_harness_set_src_caps(hh, video_caps(fmt, w, h));
  return hh;
}


static GstBuffer *push_pull(GstHarness *hh, GstBuffer *in) {
  g_assert_cmpint(gst_harness_push(hh, in), ==, GST_FLOW_OK);
  return gst_harness_pull(hh);
}

/* Which buffers reached a pad with a result, as the streaming thread sees them. */
typedef struct {
  GMutex lock;
  GArray *had; /* gboolean per buffer */
  guint with;  /* how many had one */
} meta_record;

static GstPadProbeReturn record_meta_probe(GstPad *pad, GstPadProbeInfo *info, gpointer data) {
  (void)pad;
  meta_record *r = data;
  gboolean has = gst_buffer_get_faprompt_meta(GST_PAD_PROBE_INFO_BUFFER(info)) != NULL;
  g_mutex_lock(&r->lock);
  g_array_append_val(r->had, has);
  r->with += has;
  g_mutex_unlock(&r->lock);
  return GST_PAD_PROBE_OK;
}

static guint count_roi(GstBuffer *b) {
  gpointer state = NULL;
  GstMeta *m;
  guint n = 0;
  while ((m = gst_buffer_iterate_meta_filtered(b, &state,
                                               GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE)))
    n++;
  return n;
}

/* ---- negotiation in every format ------------------------------------------ */

static void test_formats(void) {
  for (guint i = 0; i < G_N_ELEMENTS(all_formats); i++) {
    const char *fmt = all_formats[i];
    for (int sz = 0; sz < 3; sz++) {
      int w = sz == 0 ? 64 : sz == 1 ? 33 : 1, h = sz == 0 ? 48 : sz == 1 ? 17 : 1;
      GstHarness *hh = harness(make_element(NULL), fmt, w, h);
      GstBuffer *out = push_pull(hh, make_frame(fmt, w, h, 1, 0));
      GstCaps *caps = gst_pad_get_current_caps(hh->sinkpad);
      GstStructure *s = gst_caps_get_structure(caps, 0);
      g_assert_cmpstr(gst_structure_get_string(s, "format"), ==, fmt);
      GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
      g_assert_nonnull(m);
      g_assert_cmpuint(m->width, ==, (guint)w);
      g_assert_cmpuint(m->height, ==, (guint)h);
      g_assert_true(m->score >= 0.f && m->score <= 1.f);
      g_assert_nonnull(gst_buffer_get_custom_meta(out, GST_FAPROMPT_STRUCTURE_META_NAME));
      g_assert_cmpuint(count_roi(out), ==, m->n_regions);
      gst_caps_unref(caps);
      gst_buffer_unref(out);
      gst_harness_teardown(hh);
    }
  }
}

/* YUY2 from a "camera" negotiates straight into faprompt, no videoconvert. */
static void test_yuy2_pipeline(void) {
  gchar *desc = g_strdup_printf("videotestsrc num-buffers=3 ! video/x-raw,format=YUY2,width=64,"
                                "height=48 ! faprompt model-file=%s ! fakesink",
                                model_path);
  GError *err = NULL;
  GstElement *pipe = gst_parse_launch(desc, &err);
  g_assert_no_error(err);
  gst_element_set_state(pipe, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus(pipe);
  GstMessage *msg = gst_bus_timed_pop_filtered(bus, 30 * GST_SECOND,
                                               GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  gst_object_unref(bus);
  g_assert_nonnull(msg);
  g_assert_cmpint(GST_MESSAGE_TYPE(msg), ==, GST_MESSAGE_EOS);
  gst_message_unref(msg);
  gst_element_set_state(pipe, GST_STATE_NULL);
  gst_object_unref(pipe);
  g_free(desc);
}

/* ---- meta and pixels equal the core's, in every format and colorimetry ------ */


static GstHarness *harness_info(GstElement *e, const GstVideoInfo *info) {
  gst_object_ref_sink(e);
  GstHarness *hh = gst_harness_new_with_element(e, "sink", "src");
  gst_object_unref(e);
  gst_harness_set_src_caps(hh, gst_video_info_to_caps(info));
  return hh;
}


/* One frame through the element (drawing with a threshold that splits the
 * map) against the core on the same planes: the meta equals
 * fap_detector_run to 1e-6, the pixels equal fap_blend_frame byte for byte. */
static void check_against_core(const char *fmt, int w, int h, GstVideoColorMatrix matrix,
                               GstVideoColorRange range) {
  fap_model *model;
  fap_detector *det;
  fap_detector_options o;
  g_assert_cmpint(fap_model_load(model_path, &model), ==, FAP_OK);
  fap_detector_options_init(&o);
  g_assert_cmpint(fap_detector_new(model, &o, &det), ==, FAP_OK);

  GstVideoInfo info;
  gst_video_info_set_format(&info, gst_video_format_from_string(fmt), w, h);
  if (GST_VIDEO_INFO_IS_YUV(&info)) {
    info.colorimetry.matrix = matrix;
    info.colorimetry.range = range;
  }
  GstBuffer *in = make_frame(fmt, w, h, 5, 0);
  GstBuffer *keep = gst_buffer_copy_deep(in); /* the element draws into in */

  /* the core first, to pick a pixel threshold that splits the map */
  GstVideoFrame f;
  g_assert_true(gst_video_frame_map(&f, &info, keep, GST_MAP_READWRITE));
  fap_frame frame = core_frame(&f);
  fap_result r;
  g_assert_cmpint(fap_detector_run(det, &frame, &r), ==, FAP_OK);
  float lo = 1, hi = 0;
  for (int i = 0; i < r.map_size * r.map_size; i++)
    lo = MIN(lo, r.map[i]), hi = MAX(hi, r.map[i]);
  const float thr = 0.5f * (lo + hi);

  GstHarness *hh = harness_info(
      make_element("pixel-threshold=%.6f heatmap-alpha=0.8 heatmap-min=%.6f heatmap-max=%.6f",
                   thr, lo, hi),
      &info);
  GstBuffer *out = push_pull(hh, in);
  GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
  g_assert_nonnull(m);
  g_assert_false(m->reused);
  g_assert_cmpfloat_with_epsilon(m->score, r.score, 1e-6);
  g_assert_cmpuint(m->map_width, ==, (guint)r.map_size);
  g_assert_cmpuint(m->map_height, ==, (guint)r.map_size);
  g_assert_cmpuint(m->map_stride, ==, r.map_size * sizeof(float));
  double maxdiff = 0;
  for (int i = 0; i < r.map_size * r.map_size; i++)
    maxdiff = MAX(maxdiff, fabs(m->map[i] - r.map[i]));
  g_assert_cmpfloat(maxdiff, <=, 1e-6);
  g_assert_cmpint(m->x, ==, 0);
  g_assert_cmpint(m->y, ==, 0);
  g_assert_cmpuint(m->width, ==, (guint)w);
  g_assert_cmpuint(m->height, ==, (guint)h);
  g_assert_cmpuint(m->inference_timestamp, ==, 0);
  g_assert_cmpint(m->anomalous, ==, r.score > 0.5f);
  /* both on precision auto: the same choice, said by the meta and the property */
  const char *prec = fap_precision_name(fap_detector_precision(det));
  g_assert_cmpstr(m->precision, ==, prec);
  gchar *running = NULL;
  g_object_get(hh->element, "running-precision", &running, NULL);
  g_assert_cmpstr(running, ==, prec);
  g_free(running);

  /* the pixels: fap_blend_frame with the element's parameters, on the meta's map */
  gfloat pthr, pmin, pmax; /* as the element holds them (parsed from text) */
  gdouble palpha;
  g_object_get(hh->element, "pixel-threshold", &pthr, "heatmap-min", &pmin, "heatmap-max", &pmax,
               "heatmap-alpha", &palpha, NULL);
  fap_blend blend = {(float)palpha, pthr, pmin, pmax};
  gboolean drawn_differs = !same_buffer_bytes(out, keep);
  g_assert_cmpint(fap_blend_frame(&frame, m->map, (int)m->map_width, &blend), ==, FAP_OK);
  gst_video_frame_unmap(&f);
  g_assert_true(drawn_differs); /* the threshold splits the map: something was drawn */
  g_assert_true(same_buffer_bytes(out, keep));

  /* the structure-backed twin says the same */
  GstCustomMeta *cm = gst_buffer_get_custom_meta(out, GST_FAPROMPT_STRUCTURE_META_NAME);
  GstStructure *s = gst_custom_meta_get_structure(cm);
  double score;
  guint mw;
  g_assert_true(gst_structure_get_double(s, "score", &score));
  g_assert_cmpfloat_with_epsilon(score, r.score, 1e-6);
  g_assert_true(gst_structure_get_uint(s, "map-width", &mw));
  g_assert_cmpuint(mw, ==, (guint)r.map_size);
  g_assert_cmpstr(gst_structure_get_string(s, "precision"), ==, prec);
  GBytes *bytes = g_value_get_boxed(gst_structure_get_value(s, "map"));
  g_assert_true(g_bytes_get_data(bytes, NULL) == (gconstpointer)m->map); /* shared, not copied */

  gst_buffer_unref(keep);
  gst_buffer_unref(out);
  gst_harness_teardown(hh);
  fap_detector_free(det);
  fap_model_free(model);
}

static void test_meta_equals_detector(void) {
  static const GstVideoColorMatrix matrices[] = {
      GST_VIDEO_COLOR_MATRIX_BT601, GST_VIDEO_COLOR_MATRIX_BT709, GST_VIDEO_COLOR_MATRIX_BT2020};
  static const GstVideoColorRange ranges[] = {GST_VIDEO_COLOR_RANGE_16_235,
                                              GST_VIDEO_COLOR_RANGE_0_255};
  for (guint i = 0; i < G_N_ELEMENTS(all_formats); i++) {
    GstVideoInfo probe;
    gst_video_info_set_format(&probe, gst_video_format_from_string(all_formats[i]), 8, 8);
    if (!GST_VIDEO_INFO_IS_YUV(&probe)) {
      check_against_core(all_formats[i], 80, 60, GST_VIDEO_COLOR_MATRIX_RGB,
                         GST_VIDEO_COLOR_RANGE_0_255);
      check_against_core(all_formats[i], 33, 17, GST_VIDEO_COLOR_MATRIX_RGB,
                         GST_VIDEO_COLOR_RANGE_0_255);
      continue;
    }
    for (guint mi = 0; mi < G_N_ELEMENTS(matrices); mi++)
      for (guint ri = 0; ri < G_N_ELEMENTS(ranges); ri++)
        check_against_core(all_formats[i], mi == 1 ? 33 : 80, mi == 1 ? 17 : 60, matrices[mi],
                           ranges[ri]);
  }
}

/* Colorimetry the core has no coefficients for is refused with a message
 * that says what to do. */
static void test_unsupported_matrix(void) {
  GstVideoInfo info;
  gst_video_info_set_format(&info, GST_VIDEO_FORMAT_NV12, 64, 48);
  info.colorimetry.matrix = GST_VIDEO_COLOR_MATRIX_SMPTE240M;
  GstElement *e = make_element(NULL);
  GstBus *bus = gst_bus_new();
  gst_element_set_bus(e, bus);
  GstHarness *hh = harness_info(e, &info);
  g_assert_cmpint(gst_harness_push(hh, make_frame("NV12", 64, 48, 1, 0)), ==,
                  GST_FLOW_NOT_NEGOTIATED);
  GstMessage *msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
  g_assert_nonnull(msg);
  GError *err = NULL;
  gst_message_parse_error(msg, &err, NULL);
  g_assert_nonnull(strstr(err->message, "smpte240m") ? err->message : NULL);
  g_assert_nonnull(strstr(err->message, "videoconvert"));
  g_error_free(err);
  gst_message_unref(msg);
  gst_element_set_bus(hh->element, NULL);
  gst_object_unref(bus);
  gst_harness_teardown(hh);
}

/* Buffer copies share the map block and keep every field. */
static void test_meta_copy(void) {
  GstHarness *hh = harness(make_element(NULL), "RGBA", 64, 48);
  GstBuffer *out = push_pull(hh, make_frame("RGBA", 64, 48, 2, 0));
  GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
  GstBuffer *copy = gst_buffer_copy(out);
  gst_buffer_unref(out); /* the copy must stand alone */
  GstFAPromptMeta *c = gst_buffer_get_faprompt_meta(copy);
  g_assert_nonnull(c);
  g_assert_true(c != m);
  g_assert_true(c->map_bytes != NULL);
  g_assert_cmpuint(c->width, ==, 64);
  g_assert_cmpfloat(c->map[0], >=, 0.f);
  g_assert_nonnull(gst_buffer_get_custom_meta(copy, GST_FAPROMPT_STRUCTURE_META_NAME));
  /* the map block is shared: same data pointer in a second copy */
  GstBuffer *copy2 = gst_buffer_copy(copy);
  g_assert_true(gst_buffer_get_faprompt_meta(copy2)->map == c->map);
  gst_buffer_unref(copy2);
  gst_buffer_unref(copy);
  gst_harness_teardown(hh);
}

/* ---- CUDA memory caps (no device needed) -------------------------------------- */

static gboolean template_has_cuda(GstElement *e, const char *pad) {
  GstPadTemplate *t = gst_element_class_get_pad_template(GST_ELEMENT_GET_CLASS(e), pad);
  GstCaps *caps = gst_pad_template_get_caps(t);
  gboolean found = FALSE;
  for (guint i = 0; i < gst_caps_get_size(caps); i++) {
    GstCapsFeatures *f = gst_caps_get_features(caps, i);
    if (f && gst_caps_features_contains(f, "memory:CUDAMemory")) {
      const GValue *formats = gst_structure_get_value(gst_caps_get_structure(caps, i), "format");
      gchar *txt = gst_value_serialize(formats);
      found = strstr(txt, "NV12") && strstr(txt, "I420") && strstr(txt, "RGBA") &&
              strstr(txt, "BGRx");
      g_free(txt);
    }
  }
  gst_caps_unref(caps);
  return found;
}

/* Built with gstreamer-cuda, both pads offer memory:CUDAMemory beside
 * system memory; on the CPU backend such caps are refused with a message
 * that says what to do, never downloaded silently. */
static void test_cuda_caps(void) {
  GstElement *e = make_element("backend=cpu");
#ifdef FAP_EXPECT_GST_CUDA
  g_assert_true(template_has_cuda(e, "sink"));
  g_assert_true(template_has_cuda(e, "src"));
#else
  g_assert_false(template_has_cuda(e, "sink"));
  g_test_message("built without gstreamer-cuda: system memory only");
#endif
  GstBus *bus = gst_bus_new();
  gst_element_set_bus(e, bus);
  gst_object_ref_sink(e);
  GstHarness *hh = gst_harness_new_with_element(e, "sink", "src");
  gst_object_unref(e);
  /* system memory first, then the same format and size in CUDA memory: the
   * feature alone changes, and is noticed */
  gst_harness_set_src_caps(hh, gst_caps_from_string("video/x-raw,format=NV12,width=64,"
                                                    "height=48,framerate=30/1"));
  g_assert_cmpint(gst_harness_push(hh, make_frame("NV12", 64, 48, 1, 0)), ==, GST_FLOW_OK);
  gst_buffer_unref(gst_harness_pull(hh));
  GstCaps *caps = gst_caps_from_string("video/x-raw(memory:CUDAMemory),format=NV12,width=64,"
                                       "height=48,framerate=30/1");
  gst_harness_set_src_caps(hh, caps);
  GstFlowReturn fr = gst_harness_push(hh, make_frame("NV12", 64, 48, 1, 0));
  g_assert_cmpint(fr, ==, GST_FLOW_NOT_NEGOTIATED);
#ifdef FAP_EXPECT_GST_CUDA
  GstMessage *msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
  g_assert_nonnull(msg);
  GError *err = NULL;
  gst_message_parse_error(msg, &err, NULL);
  g_test_message("refused: %s", err->message);
  g_assert_nonnull(strstr(err->message, "memory:CUDAMemory"));
  g_assert_nonnull(strstr(err->message, "cpu backend"));
  g_assert_nonnull(strstr(err->message, "cudadownload"));
  g_error_free(err);
  gst_message_unref(msg);
#endif
  guint64 bytes = 1;
  g_object_get(hh->element, "pixel-bytes-copied", &bytes, NULL);
  g_assert_cmpuint(bytes, ==, 0);
  gst_element_set_bus(hh->element, NULL);
  gst_object_unref(bus);
  gst_harness_teardown(hh);
}

/* ---- overlay --------------------------------------------------------------- */

/* draw-heatmap=false leaves every byte alone; a threshold above the whole map
 * leaves a frame alone; reused frames (interval) are drawn from the last
 * result exactly as fap_blend_frame draws it. */
static void check_overlay(const char *fmt) {
  const int w = 96, h = 72;
  GstHarness *hh = harness(make_element("draw-heatmap=false"), fmt, w, h);
  GstBuffer *in = make_frame(fmt, w, h, 3, 0);
  GstBuffer *ref = gst_buffer_copy_deep(in);
  GstBuffer *out = push_pull(hh, in);
  GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
  g_assert_nonnull(m);
  g_assert_true(same_buffer_bytes(out, ref));
  float lo = 1, hi = 0;
  for (guint i = 0; i < m->map_width * m->map_height; i++) {
    lo = MIN(lo, m->map[i]);
    hi = MAX(hi, m->map[i]);
  }
  const float thr = 0.5f * (lo + hi);
  gst_buffer_unref(out);
  gst_harness_teardown(hh);

  /* interval 3: frame 0 inferred, frames 1 and 2 reused and drawn */
  hh = harness(make_element("pixel-threshold=%.6f heatmap-alpha=1.0 inference-interval=3", thr),
               fmt, w, h);
  GstVideoInfo info;
  gst_video_info_set_format(&info, gst_video_format_from_string(fmt), w, h);
  const float *map0 = NULL;
  GstBuffer *first = NULL;
  for (int i = 0; i < 3; i++) {
    GstBuffer *src = make_frame(fmt, w, h, 3 + i, i);
    GstBuffer *expect = gst_buffer_copy_deep(src);
    out = push_pull(hh, src);
    m = gst_buffer_get_faprompt_meta(out);
    g_assert_nonnull(m);
    g_assert_cmpint(m->reused, ==, i > 0);
    if (i == 0) {
      first = gst_buffer_ref(out);
      map0 = m->map;
    }
    g_assert_true(m->map == map0); /* the same result */
    GstVideoFrame f;
    g_assert_true(gst_video_frame_map(&f, &info, expect, GST_MAP_READWRITE));
    fap_frame frame = core_frame(&f);
    gfloat pthr;
    g_object_get(hh->element, "pixel-threshold", &pthr, NULL);
    fap_blend blend = {1.0f, pthr, 0.0f, 1.0f};
    g_assert_cmpint(fap_blend_frame(&frame, m->map, (int)m->map_width, &blend), ==, FAP_OK);
    gst_video_frame_unmap(&f);
    g_assert_true(same_buffer_bytes(out, expect));
    gst_buffer_unref(expect);
    gst_buffer_unref(out);
  }
  gst_buffer_unref(first);

  /* a threshold above the whole map: a calm frame stays untouched */
  g_object_set(hh->element, "pixel-threshold", MIN(hi + 0.01f, 1.0f), NULL);
  in = make_frame(fmt, w, h, 3, 3);
  GstBuffer *ref2 = gst_buffer_copy_deep(in);
  out = push_pull(hh, in);
  g_assert_true(same_buffer_bytes(out, ref2));
  gst_buffer_unref(ref2);
  gst_buffer_unref(out);
  gst_buffer_unref(ref);
  gst_harness_teardown(hh);
}

static void test_overlay(void) {
  for (guint i = 0; i < G_N_ELEMENTS(all_formats); i++)
    check_overlay(all_formats[i]);
}

/* ---- messages -------------------------------------------------------------- */

static GstBus *attach_bus(GstHarness *hh) {
  GstBus *bus = gst_bus_new();
  gst_element_set_bus(hh->element, bus);
  return bus;
}

static GList *pop_faprompt_messages(GstBus *bus) {
  GList *l = NULL;
  GstMessage *msg;
  while ((msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ELEMENT))) {
    if (gst_structure_has_name(gst_message_get_structure(msg), "faprompt"))
      l = g_list_append(l, msg);
    else
      gst_message_unref(msg);
  }
  return l;
}

static void run_frames(GstHarness *hh, int first, int n) {
  for (int i = first; i < first + n; i++)
    gst_buffer_unref(push_pull(hh, make_frame("RGB", 64, 48, i, i)));
}

static void test_messages(void) {
  /* none */
  GstHarness *hh = harness(make_element("post-messages=none"), "RGB", 64, 48);
  GstBus *bus = attach_bus(hh);
  run_frames(hh, 0, 4);
  GList *l = pop_faprompt_messages(bus);
  g_assert_cmpuint(g_list_length(l), ==, 0);

  /* every-frame: one per frame, with the documented fields */
  g_object_set(hh->element, "post-messages", 1, NULL);
  run_frames(hh, 4, 5);
  l = pop_faprompt_messages(bus);
  g_assert_cmpuint(g_list_length(l), ==, 5);
  int i = 4;
  for (GList *it = l; it; it = it->next, i++) {
    const GstStructure *s = gst_message_get_structure(it->data);
    guint64 ts, st, rt;
    double score;
    gboolean an;
    guint rc;
    g_assert_true(gst_structure_get_uint64(s, "timestamp", &ts));
    g_assert_true(gst_structure_get_uint64(s, "stream-time", &st));
    g_assert_true(gst_structure_get_uint64(s, "running-time", &rt));
    g_assert_true(gst_structure_get_double(s, "score", &score));
    g_assert_true(gst_structure_get_boolean(s, "anomalous", &an));
    g_assert_true(gst_structure_get_uint(s, "region-count", &rc));
    g_assert_true(gst_structure_has_field(s, "reused"));
    g_assert_cmpuint(ts, ==, (guint64)i * GST_SECOND / 30);
    g_assert_cmpuint(st, ==, ts);
    g_assert_cmpuint(rt, ==, ts);
    g_assert_true(GST_MESSAGE_SRC(it->data) == GST_OBJECT(hh->element));
  }
  g_list_free_full(l, (GDestroyNotify)gst_message_unref);

  /* anomalous: none above a threshold of 1, all above 0 */
  g_object_set(hh->element, "post-messages", 3, "image-threshold", 1.0f, NULL);
  run_frames(hh, 9, 3);
  l = pop_faprompt_messages(bus);
  g_assert_cmpuint(g_list_length(l), ==, 0);
  g_object_set(hh->element, "image-threshold", 0.0f, NULL);
  run_frames(hh, 12, 3);
  l = pop_faprompt_messages(bus);
  g_assert_cmpuint(g_list_length(l), ==, 3);
  g_list_free_full(l, (GDestroyNotify)gst_message_unref);

  /* on-change: started when the decision flips, ended when it flips back */
  g_object_set(hh->element, "post-messages", 2, "image-threshold", 1.0f, NULL);
  run_frames(hh, 15, 3); /* not anomalous: nothing to say */
  l = pop_faprompt_messages(bus);
  g_assert_cmpuint(g_list_length(l), ==, 0);
  g_object_set(hh->element, "image-threshold", 0.0f, NULL);
  run_frames(hh, 18, 3);
  g_object_set(hh->element, "image-threshold", 1.0f, NULL);
  run_frames(hh, 21, 3);
  g_object_set(hh->element, "image-threshold", 0.0f, NULL);
  run_frames(hh, 24, 2);
  gst_harness_push_event(hh, gst_event_new_eos()); /* closes the open anomaly */
  l = pop_faprompt_messages(bus);
  g_assert_cmpuint(g_list_length(l), ==, 4);
  const char *expect[] = {"anomaly-started", "anomaly-ended", "anomaly-started",
                          "anomaly-ended"};
  i = 0;
  for (GList *it = l; it; it = it->next, i++) {
    const GstStructure *s = gst_message_get_structure(it->data);
    g_assert_cmpstr(gst_structure_get_string(s, "event"), ==, expect[i]);
  }
  guint64 ts;
  gst_structure_get_uint64(gst_message_get_structure(l->data), "timestamp", &ts);
  g_assert_cmpuint(ts, ==, 18 * GST_SECOND / 30);
  g_list_free_full(l, (GDestroyNotify)gst_message_unref);

  gst_element_set_bus(hh->element, NULL);
  gst_object_unref(bus);
  gst_harness_teardown(hh);
}

/* ---- interval and non-blocking ---------------------------------------------- */

static void test_interval(void) {
  GstHarness *hh = harness(make_element("inference-interval=3"), "NV12", 64, 48);
  for (int i = 0; i < 8; i++) {
    GstBuffer *out = push_pull(hh, make_frame("NV12", 64, 48, i, i));
    GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
    g_assert_nonnull(m);
    g_assert_cmpint(m->reused, ==, i % 3 != 0);
    g_assert_cmpuint(m->inference_timestamp, ==, (guint64)(i / 3 * 3) * GST_SECOND / 30);
    gst_buffer_unref(out);
  }
  guint64 inferences, frames;
  g_object_get(hh->element, "inferences", &inferences, "frames-processed", &frames, NULL);
  g_assert_cmpuint(inferences, ==, 3);
  g_assert_cmpuint(frames, ==, 8);
  /* the interval can change while playing */
  g_object_set(hh->element, "inference-interval", 1, NULL);
  for (int i = 8; i < 12; i++) {
    GstBuffer *out = push_pull(hh, make_frame("NV12", 64, 48, i, i));
    g_assert_false(gst_buffer_get_faprompt_meta(out)->reused);
    gst_buffer_unref(out);
  }
  gst_harness_teardown(hh);
}

static void test_non_blocking(void) {
  GstHarness *hh = harness(make_element("non-blocking=true inference-interval=2 pixel-threshold=0"),
                            "RGBx", 64, 48);
  guint64 last_pts = 0, with_meta = 0;
  gboolean first = TRUE;
  GstVideoInfo info;
  gst_video_info_set_format(&info, GST_VIDEO_FORMAT_RGBx, 64, 48);
  /* frames flow without waiting; results arrive a few frames later */
  for (int i = 0; i < 200 && with_meta < 20; i++) {
    GstBuffer *in = make_frame("RGBx", 64, 48, i, i), *expect = gst_buffer_copy_deep(in);
    GstBuffer *out = push_pull(hh, in);
    if (!first)
      g_assert_cmpuint(GST_BUFFER_PTS(out), >, last_pts); /* order kept */
    first = FALSE;
    last_pts = GST_BUFFER_PTS(out);
    GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
    if (m) {
      with_meta++;
      g_assert_true(m->reused);
      g_assert_cmpuint(m->inference_timestamp, <=, GST_BUFFER_PTS(out));
      g_assert_cmpfloat(m->inference_ms, >, 0.0);
      /* drawn from the carried result (the table the worker prepared), as
       * fap_blend_frame draws it */
      GstVideoFrame f;
      g_assert_true(gst_video_frame_map(&f, &info, expect, GST_MAP_READWRITE));
      fap_frame frame = core_frame(&f);
      fap_blend blend = {0.5f, 0.0f, 0.0f, 1.0f};
      g_assert_cmpint(fap_blend_frame(&frame, m->map, (int)m->map_width, &blend), ==, FAP_OK);
      gst_video_frame_unmap(&f);
      g_assert_true(same_buffer_bytes(out, expect));
    } else {
      g_assert_true(same_buffer_bytes(out, expect)); /* nothing to draw yet */
    }
    gst_buffer_unref(expect);
    gst_buffer_unref(out);
    g_usleep(2000);
  }
  g_assert_cmpuint(with_meta, >, 0);
  /* the latency query carries what a frame may wait here: small */
  GstClockTime lat = gst_harness_query_latency(hh);
  g_assert_cmpuint(lat, <, 50 * GST_MSECOND);
  /* flush mid-stream, then more frames */
  gst_harness_push_event(hh, gst_event_new_flush_start());
  gst_harness_push_event(hh, gst_event_new_flush_stop(TRUE));
  gst_harness_set_src_caps(hh, video_caps("I420", 32, 24));
  for (int i = 0; i < 30; i++) {
    GstBuffer *out = push_pull(hh, make_frame("I420", 32, 24, i, i));
    GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
    if (m)
      g_assert_cmpuint(m->width, ==, 32); /* never a result of the old caps */
    gst_buffer_unref(out);
    g_usleep(1000);
  }
  gst_harness_teardown(hh);
}

/* non-blocking=auto: a live source runs non-blocking (the first frame goes
 * on without a result), a file-like one blocking (every frame scored). The
 * live source runs until results have arrived on at least 12 frames' worth
 * of stream (or 60 s): how long the first inference takes depends on the
 * machine (valgrind, a loaded CI host), not on the mode. */
static void check_auto_mode(gboolean live) {
  gchar *desc = g_strdup_printf(
      "videotestsrc is-live=%s num-buffers=%d ! video/x-raw,format=NV12,width=64,height=48,"
      "framerate=30/1 ! faprompt name=f model-file=%s ! fakesink name=sink sync=%s",
      live ? "true" : "false", live ? 1800 : 12, model_path, live ? "true" : "false");
  GError *err = NULL;
  GstElement *pipe = gst_parse_launch(desc, &err);
  g_assert_no_error(err);
  GstElement *sink = gst_bin_get_by_name(GST_BIN(pipe), "sink");
  GstPad *pad = gst_element_get_static_pad(sink, "sink");
  meta_record rec = {.had = g_array_new(FALSE, FALSE, sizeof(gboolean))};
  g_mutex_init(&rec.lock);
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, record_meta_probe, &rec, NULL);
  gst_element_set_state(pipe, GST_STATE_PLAYING);
  if (live) {
    const gint64 deadline = g_get_monotonic_time() + 60 * G_TIME_SPAN_SECOND;
    for (;;) {
      g_mutex_lock(&rec.lock);
      gboolean enough = rec.with > 0 && rec.had->len >= 12;
      g_mutex_unlock(&rec.lock);
      if (enough || g_get_monotonic_time() > deadline)
        break;
      g_usleep(20000);
    }
    gst_element_send_event(pipe, gst_event_new_eos());
  }
  GstBus *bus = gst_element_get_bus(pipe);
  GstMessage *msg = gst_bus_timed_pop_filtered(bus, 60 * GST_SECOND,
                                               GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  gst_object_unref(bus);
  g_assert_nonnull(msg);
  g_assert_cmpint(GST_MESSAGE_TYPE(msg), ==, GST_MESSAGE_EOS);
  gst_message_unref(msg);
  gst_element_set_state(pipe, GST_STATE_NULL); /* the streaming thread has stopped */
  if (live) {
    g_assert_cmpuint(rec.had->len, >=, 12);
    g_assert_false(g_array_index(rec.had, gboolean, 0)); /* did not wait for the first inference */
    g_assert_cmpuint(rec.with, >, 0);                       /* results arrived later */
  } else {
    g_assert_cmpuint(rec.had->len, ==, 12);
    g_assert_cmpuint(rec.with, ==, 12); /* every frame waited for its own result */
  }
  g_array_unref(rec.had);
  g_mutex_clear(&rec.lock);
  gst_object_unref(pad);
  gst_object_unref(sink);
  gst_object_unref(pipe);
  g_free(desc);
}

static void test_auto_mode(void) {
  check_auto_mode(FALSE);
  check_auto_mode(TRUE);
}

/* Controllable properties follow a control source, frame by frame. */
static void test_controller(void) {
  GstHarness *hh = harness(make_element(NULL), "RGB", 64, 48);
  GstControlSource *cs = gst_interpolation_control_source_new();
  g_object_set(cs, "mode", GST_INTERPOLATION_MODE_LINEAR, NULL);
  GstTimedValueControlSource *tv = GST_TIMED_VALUE_CONTROL_SOURCE(cs);
  gst_timed_value_control_source_set(tv, 0, 0.1);
  gst_timed_value_control_source_set(tv, 9 * GST_SECOND / 30, 0.9);
  g_assert_true(gst_object_add_control_binding(
      GST_OBJECT(hh->element),
      gst_direct_control_binding_new_absolute(GST_OBJECT(hh->element), "image-threshold", cs)));
  for (int i = 0; i < 10; i++) {
    GstBuffer *out = push_pull(hh, make_frame("RGB", 64, 48, 1, i));
    GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
    g_assert_nonnull(m);
    g_assert_cmpfloat_with_epsilon(m->image_threshold, 0.1 + 0.8 * i / 9.0, 1e-5);
    gst_buffer_unref(out);
  }
  gst_object_unref(cs);
  gst_harness_teardown(hh);
}

static void test_latency_blocking(void) {
  GstHarness *hh = harness(make_element(NULL), "RGB", 64, 48);
  run_frames(hh, 0, 2);
  double avg;
  g_object_get(hh->element, "average-inference-ms", &avg, NULL);
  g_assert_cmpfloat(avg, >, 0.0);
  GstClockTime lat = gst_harness_query_latency(hh);
  g_assert_cmpuint(lat, >, 0);
  gst_harness_teardown(hh);
}

/* ---- caps changes, state changes, flushes ------------------------------------ */

static void test_caps_change(void) {
  GstHarness *hh = harness(make_element("inference-interval=5"), "RGB", 64, 48);
  struct {
    const char *fmt;
    int w, h;
  } seq[] = {{"RGB", 64, 48}, {"NV12", 32, 24}, {"YUY2", 50, 30}, {"BGRA", 64, 48}, {"I420", 65, 49}};
  for (guint k = 0; k < G_N_ELEMENTS(seq); k++) {
    gst_harness_set_src_caps(hh, video_caps(seq[k].fmt, seq[k].w, seq[k].h));
    for (int i = 0; i < 3; i++) {
      GstBuffer *out = push_pull(hh, make_frame(seq[k].fmt, seq[k].w, seq[k].h, i, k * 3 + i));
      GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
      g_assert_nonnull(m);
      g_assert_cmpuint(m->width, ==, (guint)seq[k].w);
      g_assert_cmpuint(m->height, ==, (guint)seq[k].h);
      g_assert_cmpint(m->reused, ==, i != 0); /* a caps change makes the next frame due */
      gst_buffer_unref(out);
    }
  }
  gst_harness_teardown(hh);
}

static void test_state_changes(void) {
  for (int nb = 0; nb < 2; nb++) {
    GstHarness *hh = harness(make_element("non-blocking=%s", nb ? "true" : "false"), "RGB", 64,
                             48);
    for (int round = 0; round < 3; round++) {
      run_frames(hh, 0, 3);
      gst_harness_push_event(hh, gst_event_new_flush_start());
      gst_harness_push_event(hh, gst_event_new_flush_stop(TRUE));
      gst_harness_set_src_caps(hh, video_caps("RGB", 64, 48));
      run_frames(hh, 3, 2);
      g_assert_cmpint(gst_element_set_state(hh->element, GST_STATE_READY), ==,
                      GST_STATE_CHANGE_SUCCESS);
      g_assert_cmpint(gst_element_set_state(hh->element, GST_STATE_NULL), ==,
                      GST_STATE_CHANGE_SUCCESS);
      g_assert_cmpint(gst_element_set_state(hh->element, GST_STATE_PLAYING), ==,
                      GST_STATE_CHANGE_SUCCESS);
      gst_harness_push_event(hh, gst_event_new_stream_start("again"));
      gst_harness_set_src_caps(hh, video_caps("RGB", 64, 48));
    }
    gst_harness_teardown(hh);
  }
}

/* ---- errors on start --------------------------------------------------------- */

static gchar *start_error(const char *path) {
  GstElement *e = gst_element_factory_make("faprompt", NULL);
  GstBus *bus = gst_bus_new();
  gst_element_set_bus(e, bus);
  g_object_set(e, "model-file", path, NULL);
  g_assert_cmpint(gst_element_set_state(e, GST_STATE_READY), ==, GST_STATE_CHANGE_SUCCESS);
  g_assert_cmpint(gst_element_set_state(e, GST_STATE_PAUSED), ==, GST_STATE_CHANGE_FAILURE);
  GstMessage *msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
  g_assert_nonnull(msg);
  GError *err = NULL;
  gchar *dbg = NULL;
  gst_message_parse_error(msg, &err, &dbg);
  gchar *text = g_strdup(err->message);
  g_error_free(err);
  g_free(dbg);
  gst_message_unref(msg);
  gst_element_set_state(e, GST_STATE_NULL);
  gst_element_set_bus(e, NULL);
  gst_object_unref(bus);
  gst_object_unref(e);
  return text;
}

static int app_log_calls;
static void app_log(fap_log_level level, const char *message, void *user_data) {
  (void)level, (void)message, (void)user_data;
  app_log_calls++;
}

static void test_model_errors(void) {
  gchar *dir = g_dir_make_tmp("faprompt-XXXXXX", NULL);
  gchar *missing = g_build_filename(dir, "missing.safetensors", NULL);
  gchar *text = start_error(missing);
  g_assert_nonnull(strstr(text, missing));
  g_assert_nonnull(strstr(text, "not found"));
  g_assert_nonnull(strstr(text, "faprompt-gen-random"));
  g_assert_nonnull(strstr(text, "faprompt-convert"));
  g_free(text);

  gchar *corrupt = g_build_filename(dir, "corrupt.safetensors", NULL);
  g_assert_true(g_file_set_contents(corrupt, "\x10\0\0\0\0\0\0\0{\"a\":garbage}   ", 24, NULL));
  /* the core's reason reaches the element's error, and only the element: the
   * application's process-wide sink hears nothing of it */
  app_log_calls = 0;
  fap_set_log_callback(app_log, NULL);
  text = start_error(corrupt);
  fap_set_log_callback(NULL, NULL);
  g_assert_cmpint(app_log_calls, ==, 0);
  g_assert_nonnull(strstr(text, "Could not load"));
  g_assert_nonnull(strstr(text, corrupt));
  g_assert_nonnull(strstr(text, "faprompt-gen-random"));
  g_assert_nonnull(strstr(text, "not a valid safetensors file:")); /* status: core message */
  g_free(text);

  /* the default location follows $FAPROMPT_MODEL */
  g_setenv("FAPROMPT_MODEL", missing, TRUE);
  GstElement *e = gst_element_factory_make("faprompt", NULL);
  GstBus *bus = gst_bus_new();
  gst_element_set_bus(e, bus);
  g_assert_cmpint(gst_element_set_state(e, GST_STATE_PAUSED), ==, GST_STATE_CHANGE_FAILURE);
  GstMessage *msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
  GError *err = NULL;
  gst_message_parse_error(msg, &err, NULL);
  g_assert_nonnull(strstr(err->message, missing));
  g_error_free(err);
  gst_message_unref(msg);
  gst_element_set_state(e, GST_STATE_NULL);
  gst_element_set_bus(e, NULL);
  gst_object_unref(bus);
  gst_object_unref(e);
  g_unsetenv("FAPROMPT_MODEL");

  g_unlink(corrupt);
  g_rmdir(dir);
  g_free(corrupt);
  g_free(missing);
  g_free(dir);
}

/* ---- one model per process --------------------------------------------------- */

static void test_model_shared(void) {
  GstHarness *a = harness(make_element(NULL), "RGB", 64, 48);
  gboolean sa, sb;
  g_object_get(a->element, "model-shared", &sa, NULL);
  g_assert_false(sa); /* alone */
  GstHarness *b = harness(make_element(NULL), "NV12", 64, 48);
  /* it says how things are now: both share it while both run */
  g_object_get(a->element, "model-shared", &sa, NULL);
  g_object_get(b->element, "model-shared", &sb, NULL);
  g_assert_true(sa);
  g_assert_true(sb);
  gst_buffer_unref(push_pull(a, make_frame("RGB", 64, 48, 1, 0)));
  gst_buffer_unref(push_pull(b, make_frame("NV12", 64, 48, 1, 0)));
  if (other_model_path) {
    GstElement *e = make_element(NULL);
    g_object_set(e, "model-file", other_model_path, NULL);
    GstHarness *c = harness(e, "RGB", 64, 48);
    gboolean sc;
    g_object_get(c->element, "model-shared", &sc, NULL);
    g_assert_false(sc);
    gst_harness_teardown(c);
  }
  gst_harness_teardown(b);
  g_object_get(a->element, "model-shared", &sa, NULL);
  g_assert_false(sa); /* alone again */
  gst_harness_teardown(a);
  /* all released: a new element loads it again */
  GstHarness *d = harness(make_element(NULL), "RGB", 64, 48);
  gboolean sd;
  g_object_get(d->element, "model-shared", &sd, NULL);
  g_assert_false(sd);
  gst_harness_teardown(d);
}

/* ---- regions ---------------------------------------------------------------- */

static void test_regions(void) {
  GstHarness *hh = harness(make_element("pixel-threshold=0.0 max-regions=0"), "RGB", 64, 48);
  GstBuffer *out = push_pull(hh, make_frame("RGB", 64, 48, 4, 0));
  GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
  /* threshold 0: the whole map is one region covering the frame */
  g_assert_cmpuint(m->n_regions, ==, 1);
  GstVideoRegionOfInterestMeta *roi = gst_buffer_get_video_region_of_interest_meta_id(out, 0);
  g_assert_nonnull(roi);
  g_assert_cmpuint(roi->x, ==, 0);
  g_assert_cmpuint(roi->y, ==, 0);
  g_assert_cmpuint(roi->w, ==, 64);
  g_assert_cmpuint(roi->h, ==, 48);
  g_assert_cmpstr(g_quark_to_string(roi->roi_type), ==, "anomaly");
  GstStructure *p = gst_video_region_of_interest_meta_get_param(roi, "faprompt");
  double peak, mean;
  g_assert_true(gst_structure_get_double(p, "peak", &peak));
  g_assert_true(gst_structure_get_double(p, "mean", &mean));
  float mx = 0;
  double sum = 0;
  for (guint i = 0; i < m->map_width * m->map_height; i++) {
    mx = MAX(mx, m->map[i]);
    sum += m->map[i];
  }
  g_assert_cmpfloat_with_epsilon(peak, mx, 1e-6);
  g_assert_cmpfloat_with_epsilon(mean, sum / (m->map_width * m->map_height), 1e-5);
  gst_buffer_unref(out);

  /* threshold above the map: no region */
  g_object_set(hh->element, "pixel-threshold", 1.0f, NULL);
  out = push_pull(hh, make_frame("RGB", 64, 48, 4, 1));
  g_assert_cmpuint(gst_buffer_get_faprompt_meta(out)->n_regions, ==, 0);
  g_assert_cmpuint(count_roi(out), ==, 0);
  gst_buffer_unref(out);
  gst_harness_teardown(hh);
}

/* ---- long run (also run under valgrind) --------------------------------------- */

static void test_long_run(void) {
  const char *n_env = g_getenv("FAP_GST_FRAMES");
  int n = n_env ? atoi(n_env) : 500;
  GstHarness *hh = harness(make_element("inference-interval=2 post-messages=every-frame"),
                           "RGB", 64, 48);
  GstBus *bus = attach_bus(hh);
  const char *fmts[] = {"RGB", "NV12", "YUY2", "BGRx", "I420"};
  int metas = 0;
  for (int i = 0; i < n; i++) {
    if (i % 100 == 0)
      gst_harness_set_src_caps(hh, video_caps(fmts[(i / 100) % 5], 64, 48));
    if (i == n / 2) {
      /* the second half non-blocking */
      gst_element_set_state(hh->element, GST_STATE_NULL);
      gst_util_set_object_arg(G_OBJECT(hh->element), "non-blocking", "true");
      gst_element_set_state(hh->element, GST_STATE_PLAYING);
      gst_harness_push_event(hh, gst_event_new_stream_start("second"));
      gst_harness_set_src_caps(hh, video_caps(fmts[(i / 100) % 5], 64, 48));
    }
    GstBuffer *out = push_pull(hh, make_frame(fmts[(i / 100) % 5], 64, 48, i, i));
    metas += gst_buffer_get_faprompt_meta(out) != NULL;
    gst_buffer_unref(out);
    if (i >= n / 2)
      g_usleep(1000); /* a 1 kHz "camera": lets the worker finish some */
    GList *l = pop_faprompt_messages(bus);
    g_list_free_full(l, (GDestroyNotify)gst_message_unref);
  }
  g_assert_cmpint(metas, >, n / 2);
  gst_element_set_bus(hh->element, NULL);
  gst_object_unref(bus);
  gst_harness_teardown(hh);
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  if (argc < 2) {
    g_printerr("usage: %s MODEL [OTHER_MODEL]\n", argv[0]);
    return 2;
  }
  model_path = argv[1];
  other_model_path = argc > 2 ? argv[2] : NULL;
  GstElementFactory *f = gst_element_factory_find("faprompt");
  if (!f) {
    g_printerr("faprompt element not found: set GST_PLUGIN_PATH to the build's gst/\n");
    return 1;
  }
  gst_object_unref(f);
  gst_faprompt_meta_get_info();

  if (g_getenv("FAP_GST_LONG_ONLY")) {
    g_test_add_func("/gst/long-run", test_long_run);
    return g_test_run();
  }
  g_test_add_func("/gst/formats", test_formats);
  g_test_add_func("/gst/yuy2-pipeline", test_yuy2_pipeline);
  g_test_add_func("/gst/meta-equals-detector", test_meta_equals_detector);
  g_test_add_func("/gst/unsupported-matrix", test_unsupported_matrix);
  g_test_add_func("/gst/cuda-caps", test_cuda_caps);
  g_test_add_func("/gst/meta-copy", test_meta_copy);
  g_test_add_func("/gst/overlay", test_overlay);
  g_test_add_func("/gst/messages", test_messages);
  g_test_add_func("/gst/interval", test_interval);
  g_test_add_func("/gst/non-blocking", test_non_blocking);
  g_test_add_func("/gst/auto-mode", test_auto_mode);
  g_test_add_func("/gst/controller", test_controller);
  g_test_add_func("/gst/latency-blocking", test_latency_blocking);
  g_test_add_func("/gst/caps-change", test_caps_change);
  g_test_add_func("/gst/state-changes", test_state_changes);
  g_test_add_func("/gst/model-errors", test_model_errors);
  g_test_add_func("/gst/model-shared", test_model_shared);
  g_test_add_func("/gst/regions", test_regions);
  g_test_add_func("/gst/long-run", test_long_run);
  return g_test_run();
}
