/* The faprompt element on the CUDA backend, with the kernels running on the
 * host emulator (tests/gst/emu-plugin: the same plugin sources linked with
 * the emulator build of the core), in GstHarness, against the same element
 * on the CPU backend:
 *   - scores and maps within the CUDA backend's bounds (map <= 1e-2, score
 *     <= 5e-3, f16; the GPU targets) in every format;
 *   - the drawing happens in the backend (in the inference's pass, and with
 *     fap_detector_draw for reused frames), byte for byte what
 *     fap_blend_frame draws with the same map; pixel-bytes-copied counts the
 *     frame going up and back;
 *   - inference-interval and non-blocking (drawing beside a running batch).
 *
 *   GST_PLUGIN_PATH=build/tests/gst/emu-plugin test_element_emu MODEL   (TAP) */
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <math.h>
#include <string.h>

#include <fap.h>

#include "frames.h"
#include "gstfapromptmeta.h"

static const char *model_path;

static GstHarness *harness(const char *backend, const char *fmt, int w, int h,
                           const char *extra) {
  GstElement *e = gst_element_factory_make("faprompt", NULL);
  g_assert_nonnull(e);
  g_object_set(e, "model-file", model_path, "post-messages", 0, NULL);
  gst_util_set_object_arg(G_OBJECT(e), "backend", backend);
  gst_util_set_object_arg(G_OBJECT(e), "non-blocking", "false");
  if (extra) {
    gchar **kv = g_strsplit(extra, " ", -1);
    for (gchar **p = kv; *p; p++) {
      gchar **pair = g_strsplit(*p, "=", 2);
      if (pair[0] && pair[1])
        gst_util_set_object_arg(G_OBJECT(e), pair[0], pair[1]);
      g_strfreev(pair);
    }
    g_strfreev(kv);
  }
  gst_object_ref_sink(e);
  GstHarness *hh = gst_harness_new_with_element(e, "sink", "src");
  gst_object_unref(e);
  gst_harness_set_src_caps(hh, gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, fmt,
                                                   "width", G_TYPE_INT, w, "height", G_TYPE_INT,
                                                   h, "framerate", GST_TYPE_FRACTION, 30, 1,
                                                   NULL));
  return hh;
}



/* the frame `in` drawn by fap_blend_frame with the meta's map equals `out` */
static gboolean drawn_as_reference(GstBuffer *in, GstBuffer *out, const char *fmt, int w, int h,
                                   const GstFAPromptMeta *m, float threshold) {
  GstVideoInfo info;
  GstVideoFrame f;
  gst_video_info_set_format(&info, gst_video_format_from_string(fmt), w, h);
  GstBuffer *ref = gst_buffer_copy_deep(in);
  g_assert_true(gst_video_frame_map(&f, &info, ref, GST_MAP_READWRITE));
  fap_frame frame = core_frame(&f);
  const fap_blend blend = {0.5f, threshold, 0.0f, 1.0f};
  g_assert_cmpint(fap_blend_frame(&frame, m->map, (int)m->map_width, &blend), ==, FAP_OK);
  gst_video_frame_unmap(&f);
  gboolean same = same_buffer_bytes(ref, out);
  gst_buffer_unref(ref);
  return same;
}

static const char *formats[] = {"RGBA", "NV12", "I420", "YUY2", "BGR"};

static void test_cuda_equals_cpu(void) {
  const int w = 72, h = 54;
  for (guint fi = 0; fi < G_N_ELEMENTS(formats); fi++) {
    const char *fmt = formats[fi];
    GstHarness *cpu = harness("cpu", fmt, w, h, "pixel-threshold=0.3 precision=f32");
    GstHarness *cuda = harness("cuda", fmt, w, h, "pixel-threshold=0.3");
    GstBuffer *in = make_frame(fmt, w, h, 4 + fi, 0);
    GstBuffer *keep = gst_buffer_copy_deep(in);
    g_assert_cmpint(gst_harness_push(cpu, gst_buffer_copy_deep(in)), ==, GST_FLOW_OK);
    g_assert_cmpint(gst_harness_push(cuda, in), ==, GST_FLOW_OK);
    GstBuffer *oc = gst_harness_pull(cpu), *og = gst_harness_pull(cuda);
    GstFAPromptMeta *mc = gst_buffer_get_faprompt_meta(oc), *mg = gst_buffer_get_faprompt_meta(og);
    g_assert_nonnull(mc);
    g_assert_nonnull(mg);
    g_assert_cmpuint(mc->map_width, ==, mg->map_width);
    double e = 0;
    for (guint k = 0; k < mc->map_width * mc->map_height; k++)
      e = MAX(e, fabs((double)mc->map[k] - mg->map[k]));
    g_test_message("%s: CUDA (emulator) vs CPU: map %.2e, score %.2e", fmt, e,
                   fabs(mc->score - mg->score));
    g_assert_cmpfloat(e, <=, 1e-2);
    g_assert_cmpfloat(fabs(mc->score - mg->score), <=, 5e-3);
    /* drawn in the backend, with the reference's bytes */
    g_assert_true(drawn_as_reference(keep, og, fmt, w, h, mg, 0.3f));
    guint64 bytes = 0;
    g_object_get(cuda->element, "pixel-bytes-copied", &bytes, NULL);
    GstVideoInfo info;
    gst_video_info_set_format(&info, gst_video_format_from_string(fmt), w, h);
    g_assert_cmpuint(bytes, >=, 2 * (guint64)(GST_VIDEO_INFO_SIZE(&info) * 9 / 10));
    g_assert_cmpuint(bytes, <=, 2 * (guint64)GST_VIDEO_INFO_SIZE(&info));
    g_object_get(cpu->element, "pixel-bytes-copied", &bytes, NULL);
    g_assert_cmpuint(bytes, ==, 0);
    gst_buffer_unref(keep);
    gst_buffer_unref(oc);
    gst_buffer_unref(og);
    gst_harness_teardown(cpu);
    gst_harness_teardown(cuda);
  }
}

/* interval 3: frames 1 and 2 carry frame 0's result, drawn on the device */
static void test_interval(void) {
  const int w = 64, h = 48;
  GstHarness *hh = harness("cuda", "NV12", w, h, "inference-interval=3 pixel-threshold=0.2");
  for (int i = 0; i < 6; i++) {
    GstBuffer *in = make_frame("NV12", w, h, 9 + i, i), *keep = gst_buffer_copy_deep(in);
    g_assert_cmpint(gst_harness_push(hh, in), ==, GST_FLOW_OK);
    GstBuffer *out = gst_harness_pull(hh);
    GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
    g_assert_nonnull(m);
    g_assert_cmpint(m->reused, ==, i % 3 != 0);
    g_assert_true(drawn_as_reference(keep, out, "NV12", w, h, m, 0.2f));
    gst_buffer_unref(keep);
    gst_buffer_unref(out);
  }
  guint64 inferences = 0;
  g_object_get(hh->element, "inferences", &inferences, NULL);
  g_assert_cmpuint(inferences, ==, 2);
  gst_harness_teardown(hh);
}

/* non-blocking: frames never wait; the streaming thread draws reused
 * results on the device while the worker runs a batch */
static void test_non_blocking(void) {
  const int w = 64, h = 48;
  GstHarness *hh = harness("cuda", "RGBA", w, h,
                           "inference-interval=2 pixel-threshold=0.1 non-blocking=true");
  int with_meta = 0;
  for (int i = 0; i < 400 && with_meta < 12; i++) {
    GstBuffer *in = make_frame("RGBA", w, h, i, i), *keep = gst_buffer_copy_deep(in);
    g_assert_cmpint(gst_harness_push(hh, in), ==, GST_FLOW_OK);
    GstBuffer *out = gst_harness_pull(hh);
    GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
    if (m) {
      with_meta++;
      g_assert_true(m->reused);
      g_assert_true(drawn_as_reference(keep, out, "RGBA", w, h, m, 0.1f));
    }
    gst_buffer_unref(keep);
    gst_buffer_unref(out);
    g_usleep(5000);
  }
  g_assert_cmpint(with_meta, >, 0);
  gst_harness_teardown(hh);
}

/* two elements sharing one CUDA instance (B = 2), pushed from two threads:
 * each result within the CUDA bounds of the CPU element's on the same frame,
 * drawn by the element on the device as fap_blend_frame draws it */
typedef struct {
  GstHarness *hh;
  const char *fmt;
  int w, h, seed;
  GstBuffer *in[3], *out[3];
} Shared;

static gpointer shared_push(gpointer data) {
  Shared *s = data;
  for (int i = 0; i < 3; i++) {
    s->in[i] = make_frame(s->fmt, s->w, s->h, s->seed + i, i);
    g_assert_cmpint(gst_harness_push(s->hh, gst_buffer_copy_deep(s->in[i])), ==, GST_FLOW_OK);
    s->out[i] = gst_harness_pull(s->hh);
  }
  return NULL;
}

static void test_shared_instance(void) {
  const char *inst = "model-instance-id=emu-shared batch-size=2 batch-timeout=200000 "
                     "pixel-threshold=0.3";
  Shared s[2] = {{harness("cuda", "NV12", 64, 48, inst), "NV12", 64, 48, 21, {0}, {0}},
                 {harness("cuda", "RGBA", 40, 30, inst), "RGBA", 40, 30, 41, {0}, {0}}};
  GThread *t[2] = {g_thread_new("a", shared_push, &s[0]), g_thread_new("b", shared_push, &s[1])};
  g_thread_join(t[0]);
  g_thread_join(t[1]);
  gdouble batch = 0;
  g_object_get(s[0].hh->element, "average-batch", &batch, NULL);
  g_test_message("shared CUDA instance (emulator): %.2f frames per batch", batch);
  g_assert_cmpfloat(batch, >, 1.0);
  for (int k = 0; k < 2; k++) {
    GstHarness *cpu = harness("cpu", s[k].fmt, s[k].w, s[k].h, "pixel-threshold=0.3 precision=f32");
    for (int i = 0; i < 3; i++) {
      g_assert_cmpint(gst_harness_push(cpu, gst_buffer_copy_deep(s[k].in[i])), ==, GST_FLOW_OK);
      GstBuffer *oc = gst_harness_pull(cpu);
      GstFAPromptMeta *mc = gst_buffer_get_faprompt_meta(oc);
      GstFAPromptMeta *mg = gst_buffer_get_faprompt_meta(s[k].out[i]);
      g_assert_nonnull(mg);
      double e = 0;
      for (guint c = 0; c < mc->map_width * mc->map_height; c++)
        e = MAX(e, fabs((double)mc->map[c] - mg->map[c]));
      g_assert_cmpfloat(e, <=, 1e-2);
      g_assert_cmpfloat(fabs(mc->score - mg->score), <=, 5e-3);
      g_assert_true(drawn_as_reference(s[k].in[i], s[k].out[i], s[k].fmt, s[k].w, s[k].h, mg,
                                       0.3f));
      gst_buffer_unref(oc);
      gst_buffer_unref(s[k].in[i]);
      gst_buffer_unref(s[k].out[i]);
    }
    gst_harness_teardown(cpu);
  }
  gst_harness_teardown(s[0].hh);
  gst_harness_teardown(s[1].hh);
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  if (argc < 2) {
    g_printerr("usage: test_element_emu MODEL\n");
    return 2;
  }
  model_path = argv[1];
  g_test_add_func("/gst-emu/cuda-equals-cpu", test_cuda_equals_cpu);
  g_test_add_func("/gst-emu/interval", test_interval);
  g_test_add_func("/gst-emu/non-blocking", test_non_blocking);
  g_test_add_func("/gst-emu/shared-instance", test_shared_instance);
  return g_test_run();
}
