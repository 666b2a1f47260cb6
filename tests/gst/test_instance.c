/* Elements sharing one model instance (model-instance-id, batch-size,
 * batch-timeout), in GstHarness, each stream pushed from its own thread:
 *   - every frame's result equals the same frame run alone on a private
 *     detector (CPU fp32, <= 1e-6) and reaches the stream it came from, for
 *     1, 2 and 3 streams with B = 2 (full batches, partial ones by timeout),
 *     mixed sizes and formats;
 *   - one stream's caps change, flush, EOS and teardown mid-run never hold
 *     the others; the last element to stop frees the instance;
 *   - a later element with other settings gets a warning naming both;
 *   - instance-queue counts the frames waiting for the next batch.
 *
 *   test_instance MODEL      (TAP) */
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <math.h>
#include <string.h>

#include <fap.h>

#include "frames.h"
#include "gstfapromptmeta.h"

static const char *model_path;

typedef struct {
  const char *fmt;
  int w, h;
} Stream;

static const Stream streams[] = {{"RGB", 64, 48}, {"NV12", 80, 60}, {"YUY2", 33, 17}};

static GstElement *make(const char *id, guint batch, guint64 timeout_us) {
  GstElement *e = gst_element_factory_make("faprompt", NULL);
  g_object_set(e, "model-file", model_path, "post-messages", 0, "threads", 1,
               "model-instance-id", id, "batch-size", batch, "batch-timeout", timeout_us, NULL);
  gst_util_set_object_arg(G_OBJECT(e), "non-blocking", "false");
  gst_util_set_object_arg(G_OBJECT(e), "backend", "cpu");
  return e;
}

static GstHarness *harness_for(GstElement *e, const Stream *s) {
  gst_object_ref_sink(e);
  GstHarness *hh = gst_harness_new_with_element(e, "sink", "src");
  gst_object_unref(e);
  gst_harness_set_src_caps(hh, gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, s->fmt,
                                                   "width", G_TYPE_INT, s->w, "height",
                                                   G_TYPE_INT, s->h, "framerate",
                                                   GST_TYPE_FRACTION, 30, 1, NULL));
  return hh;
}

/* distinct content per stream and frame, so a misrouted result shows */
static GstBuffer *stream_frame(const Stream *s, int stream, int index) {
  GstVideoInfo info;
  GstVideoFrame f;
  gst_video_info_set_format(&info, gst_video_format_from_string(s->fmt), s->w, s->h);
  GstBuffer *buf = gst_buffer_new_allocate(NULL, GST_VIDEO_INFO_SIZE(&info), NULL);
  g_assert_true(gst_video_frame_map(&f, &info, buf, GST_MAP_WRITE));
  for (guint p = 0; p < GST_VIDEO_FRAME_N_PLANES(&f); p++) {
    guint8 *d = GST_VIDEO_FRAME_PLANE_DATA(&f, p);
    const int stride = GST_VIDEO_FRAME_PLANE_STRIDE(&f, p), rows = GST_VIDEO_FRAME_COMP_HEIGHT(&f, p);
    for (int y = 0; y < rows; y++)
      for (int x = 0; x < stride; x++) {
        const int cx = (index * 13 + stream * 29) % s->w, cy = (index * 7 + stream * 11) % s->h;
        const int blob = (x - cx) * (x - cx) + (y - cy) * (y - cy) < s->w * s->h / 20 ? 110 : 0;
        d[(size_t)y * stride + x] = (guint8)((x * (3 + stream) + y * 5 + index * 17 + blob) & 0xff);
      }
  }
  gst_video_frame_unmap(&f);
  GST_BUFFER_PTS(buf) = (guint64)index * GST_SECOND / 30;
  return buf;
}

/* the frame alone on a private CPU detector */
static void run_alone(fap_detector *d, const Stream *s, GstBuffer *buf, fap_result *r) {
  GstVideoInfo info;
  GstVideoFrame f;
  gst_video_info_set_format(&info, gst_video_format_from_string(s->fmt), s->w, s->h);
  g_assert_true(gst_video_frame_map(&f, &info, buf, GST_MAP_READ));
  fap_frame fr = core_frame(&f);
  g_assert_cmpint(fap_detector_run(d, &fr, r), ==, FAP_OK);
  gst_video_frame_unmap(&f);
}

static void push_pull(GstHarness *hh, GstBuffer *in) {
  g_assert_cmpint(gst_harness_push(hh, in), ==, GST_FLOW_OK);
  gst_buffer_unref(gst_harness_pull(hh));
}

typedef struct {
  GstHarness *hh;
  const Stream *s;
  int stream, frames;
  GPtrArray *outputs; /* GstBuffer, in order */
} Pusher;

static gpointer push_thread(gpointer data) {
  Pusher *p = data;
  for (int i = 0; i < p->frames; i++) {
    g_assert_cmpint(gst_harness_push(p->hh, stream_frame(p->s, p->stream, i)), ==, GST_FLOW_OK);
    g_ptr_array_add(p->outputs, gst_harness_pull(p->hh));
  }
  return NULL;
}

static void check_streams(guint n, guint64 timeout_us) {
  const int frames = 4;
  fap_model *m;
  fap_detector *d;
  fap_detector_options o;
  g_assert_cmpint(fap_model_load(model_path, &m), ==, FAP_OK);
  fap_detector_options_init(&o);
  o.backend = FAP_BACKEND_CPU;
  o.threads = 1;
  g_assert_cmpint(fap_detector_new(m, &o, &d), ==, FAP_OK);

  gchar *id = g_strdup_printf("streams-%u-%" G_GUINT64_FORMAT, n, timeout_us);
  Pusher p[3];
  GThread *t[3];
  for (guint i = 0; i < n; i++) {
    p[i] = (Pusher){harness_for(make(id, 2, timeout_us), &streams[i]), &streams[i], (int)i, frames,
                    g_ptr_array_new_with_free_func((GDestroyNotify)gst_buffer_unref)};
  }
  for (guint i = 0; i < n; i++)
    t[i] = g_thread_new("pusher", push_thread, &p[i]);
  for (guint i = 0; i < n; i++)
    g_thread_join(t[i]);
  double worst = 0;
  for (guint i = 0; i < n; i++) {
    g_assert_cmpuint(p[i].outputs->len, ==, frames);
    for (int k = 0; k < frames; k++) {
      GstBuffer *out = p[i].outputs->pdata[k];
      GstFAPromptMeta *meta = gst_buffer_get_faprompt_meta(out);
      g_assert_nonnull(meta);
      g_assert_false(meta->reused);
      g_assert_cmpuint(meta->width, ==, (guint)streams[i].w);
      GstBuffer *again = stream_frame(&streams[i], (int)i, k);
      fap_result r;
      run_alone(d, &streams[i], again, &r);
      gst_buffer_unref(again);
      double e = fabs(meta->score - r.score);
      for (int c = 0; c < r.map_size * r.map_size; c++)
        e = MAX(e, fabs(meta->map[c] - r.map[c]));
      worst = MAX(worst, e);
      g_assert_cmpfloat(e, <=, 1e-6);
    }
  }
  gdouble avg = 0;
  gboolean shared = FALSE;
  g_object_get(p[0].hh->element, "average-batch", &avg, "model-shared", &shared, NULL);
  g_test_message("%u stream(s), B=2, timeout %" G_GUINT64_FORMAT " us: %.2f frames per batch, "
                 "worst difference from the frame alone %.1e",
                 n, timeout_us, avg, worst);
  g_assert_cmpfloat(avg, >=, 1.0);
  g_assert_cmpfloat(avg, <=, 2.0);
  if (n >= 2 && timeout_us >= 100000)
    g_assert_cmpfloat(avg, >, 1.0); /* the streams' frames met in batches */
  g_assert_cmpint(shared, ==, n > 1);
  for (guint i = 0; i < n; i++) {
    g_ptr_array_unref(p[i].outputs);
    gst_harness_teardown(p[i].hh);
  }
  g_free(id);
  fap_detector_free(d);
  fap_model_free(m);
}

static void test_routed(void) {
  for (guint n = 1; n <= 3; n++)
    check_streams(n, 300000); /* long timeout: batches fill */
  check_streams(3, 1000);     /* short: partial batches by timeout */
}

/* Stream B changes caps, flushes, ends and is torn down while A keeps going:
 * A's frames all come through, none waits more than a batch. */
typedef struct {
  GstHarness *hh;
  gint stop;
  gint done;
  gint64 worst_us;
} Runner;

static gpointer run_thread(gpointer data) {
  Runner *r = data;
  for (int i = 0; !g_atomic_int_get(&r->stop) && i < 2000; i++) {
    const gint64 t0 = g_get_monotonic_time();
    g_assert_cmpint(gst_harness_push(r->hh, stream_frame(&streams[0], 0, i)), ==, GST_FLOW_OK);
    gst_buffer_unref(gst_harness_pull(r->hh));
    r->worst_us = MAX(r->worst_us, g_get_monotonic_time() - t0);
    g_atomic_int_inc(&r->done);
  }
  return NULL;
}

static void test_one_stream_stops(void) {
  Runner a = {harness_for(make("stops", 2, 20000), &streams[0]), 0, 0, 0};
  GThread *t = g_thread_new("a", run_thread, &a);
  GstHarness *b = harness_for(make("stops", 2, 20000), &streams[1]);
  for (int i = 0; i < 3; i++)
    push_pull(b, stream_frame(&streams[1], 1, i));
  gst_harness_set_src_caps(b, gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, "YUY2",
                                                  "width", G_TYPE_INT, 33, "height", G_TYPE_INT,
                                                  17, "framerate", GST_TYPE_FRACTION, 30, 1, NULL));
  push_pull(b, stream_frame(&streams[2], 2, 0));
  gst_harness_push_event(b, gst_event_new_flush_start());
  gst_harness_push_event(b, gst_event_new_flush_stop(TRUE));
  gst_harness_push_event(b, gst_event_new_eos());
  gst_harness_teardown(b); /* B goes to NULL while A runs */
  const int before = g_atomic_int_get(&a.done);
  const gint64 until = g_get_monotonic_time() + 30 * G_USEC_PER_SEC; /* valgrind is slow */
  while (g_atomic_int_get(&a.done) < before + 3 && g_get_monotonic_time() < until)
    g_usleep(10000);
  g_assert_cmpint(g_atomic_int_get(&a.done), >=, before + 3); /* A still flowing */
  g_atomic_int_set(&a.stop, 1);
  g_thread_join(t);
  g_test_message("stream A: %d frames, slowest %.1f ms while B changed caps, flushed, ended "
                 "and stopped",
                 a.done, a.worst_us / 1000.0);
  gst_harness_teardown(a.hh); /* the last one frees the instance */
}

/* instance-queue: a frame waiting for its batch (B = 2, a long timeout) is
 * counted by every element of the instance, and no longer once the second
 * frame has made the batch run; an element of no instance says 0. */
static gpointer push_one(gpointer data) {
  push_pull(data, stream_frame(&streams[0], 0, 0));
  return NULL;
}

static guint queue_of(GstHarness *hh) {
  guint q = 0;
  g_object_get(hh->element, "instance-queue", &q, NULL);
  return q;
}

static void test_instance_queue(void) {
  GstHarness *a = harness_for(make("queue", 2, 10000000), &streams[0]);
  GstHarness *b = harness_for(make("queue", 2, 10000000), &streams[0]);
  GThread *t = g_thread_new("a", push_one, a);
  const gint64 until = g_get_monotonic_time() + 60 * G_USEC_PER_SEC; /* valgrind */
  while (queue_of(a) != 1 && g_get_monotonic_time() < until)
    g_usleep(2000);
  g_assert_cmpuint(queue_of(a), ==, 1);
  g_assert_cmpuint(queue_of(b), ==, 1); /* the same instance */
  push_pull(b, stream_frame(&streams[0], 1, 0)); /* completes the batch */
  g_thread_join(t);
  g_assert_cmpuint(queue_of(a), ==, 0);
  g_assert_cmpuint(queue_of(b), ==, 0);
  gst_harness_teardown(a);
  gst_harness_teardown(b);
  GstElement *alone = gst_element_factory_make("faprompt", NULL);
  guint q = 7;
  g_object_get(alone, "instance-queue", &q, NULL);
  g_assert_cmpuint(q, ==, 0);
  gst_object_unref(alone);
}

/* A later element with other settings: a warning naming both */
static void test_conflict_warning(void) {
  GstElement *first = make("conflict", 2, 5000);
  gst_object_set_name(GST_OBJECT(first), "first");
  GstHarness *a = harness_for(first, &streams[0]);
  GstElement *second = make("conflict", 4, 5000);
  gst_object_set_name(GST_OBJECT(second), "second");
  GstBus *bus = gst_bus_new();
  gst_element_set_bus(second, bus);
  GstHarness *b = harness_for(second, &streams[0]);
  GstMessage *msg = gst_bus_pop_filtered(bus, GST_MESSAGE_WARNING);
  g_assert_nonnull(msg);
  GError *err = NULL;
  gst_message_parse_warning(msg, &err, NULL);
  g_test_message("warning: %s", err->message);
  g_assert_nonnull(strstr(err->message, "first"));
  g_assert_nonnull(strstr(err->message, "second"));
  g_error_free(err);
  gst_message_unref(msg);
  /* and it works, with the first element's batch size */
  push_pull(b, stream_frame(&streams[0], 0, 0));
  gst_element_set_bus(b->element, NULL);
  gst_object_unref(bus);
  gst_harness_teardown(b);
  gst_harness_teardown(a);
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  if (argc < 2)
    return 2;
  model_path = argv[1];
  g_test_add_func("/instance/routed", test_routed);
  g_test_add_func("/instance/one-stream-stops", test_one_stream_stops);
  g_test_add_func("/instance/conflict-warning", test_conflict_warning);
  g_test_add_func("/instance/queue", test_instance_queue);
  return g_test_run();
}
