/* See camstats.h. */
#include "camstats.h"

#include <string.h>

#include "gstfapromptmeta.h"

const double camstats_bucket_bounds[CAMSTATS_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                         0.1,   0.25,   0.5,   1,    2.5,   10};

typedef struct {
  CamStats stats;
  gatomicrefcount refs;
} CamStatsBox;

/* What the src-pad probe remembers between frames of one pipeline: which
 * result the previous frame carried. Only its streaming thread touches it. */
typedef struct {
  CamStats *stats;
  gboolean have_result;
  GstClockTime inference_ts;
  guint64 generation;
  gboolean anomalous;
} ResultTracker;

CamStats *camstats_new(void) {
  CamStatsBox *box = g_new0(CamStatsBox, 1);
  g_atomic_ref_count_init(&box->refs);
  return &box->stats;
}

CamStats *camstats_ref(CamStats *s) {
  g_atomic_ref_count_inc(&((CamStatsBox *)s)->refs);
  return s;
}

void camstats_unref(CamStats *s) {
  if (s && g_atomic_ref_count_dec(&((CamStatsBox *)s)->refs))
    g_free(s);
}

void camstats_read(CamStats *s, CamStatsSnapshot *out) {
  memset(out, 0, sizeof *out);
  out->frames_in = atomic_load_explicit(&s->frames_in, memory_order_relaxed);
  out->frames_out = atomic_load_explicit(&s->frames_out, memory_order_relaxed);
  out->inferences = atomic_load_explicit(&s->inferences, memory_order_relaxed);
  out->anomalies = atomic_load_explicit(&s->anomalies, memory_order_relaxed);
  out->last_frame_us = atomic_load_explicit(&s->last_frame_us, memory_order_relaxed);
  out->have_score = atomic_load_explicit(&s->have_score, memory_order_acquire);
  guint64 bits = atomic_load_explicit(&s->last_score_bits, memory_order_relaxed);
  memcpy(&out->last_score, &bits, sizeof bits);
  out->model_generation = atomic_load_explicit(&s->model_generation, memory_order_relaxed);
  guint64 run = 0;
  for (int i = 0; i < CAMSTATS_BUCKETS; i++) {
    run += atomic_load_explicit(&s->bucket[i], memory_order_relaxed);
    out->cumulative[i] = run;
  }
  out->inference_seconds_sum =
      atomic_load_explicit(&s->inference_us_sum, memory_order_relaxed) / 1e6;
}

static GstPadProbeReturn count_in(GstPad *pad, GstPadProbeInfo *info, gpointer data) {
  CamStats *s = data;
  atomic_fetch_add_explicit(&s->frames_in, 1, memory_order_relaxed);
  return GST_PAD_PROBE_OK;
}

/* A result is new when the frame it was computed on (its inference
 * timestamp) or the model that computed it differs from the previous
 * frame's: in non-blocking mode every frame carries a result flagged
 * reused, so the flag alone does not tell. */
static void note_result(ResultTracker *t, const GstFAPromptMeta *m) {
  CamStats *s = t->stats;
  if (t->have_result && m->reused && m->inference_timestamp == t->inference_ts &&
      m->model_generation == t->generation)
    return;
  t->have_result = TRUE;
  t->inference_ts = m->inference_timestamp;
  t->generation = m->model_generation;

  double seconds = m->inference_ms / 1000.0;
  int b = 0;
  while (b < CAMSTATS_BUCKETS && seconds > camstats_bucket_bounds[b])
    b++;
  if (b < CAMSTATS_BUCKETS)
    atomic_fetch_add_explicit(&s->bucket[b], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->inference_us_sum, (guint64)(m->inference_ms * 1000.0 + 0.5),
                            memory_order_relaxed);
  atomic_fetch_add_explicit(&s->inferences, 1, memory_order_relaxed);
  if (m->anomalous && !t->anomalous)
    atomic_fetch_add_explicit(&s->anomalies, 1, memory_order_relaxed);
  t->anomalous = m->anomalous;

  double score = m->score;
  guint64 bits;
  memcpy(&bits, &score, sizeof bits);
  atomic_store_explicit(&s->last_score_bits, bits, memory_order_relaxed);
  atomic_store_explicit(&s->have_score, TRUE, memory_order_release);
  atomic_store_explicit(&s->model_generation, m->model_generation, memory_order_relaxed);
}

static GstPadProbeReturn count_out(GstPad *pad, GstPadProbeInfo *info, gpointer data) {
  ResultTracker *t = data;
  CamStats *s = t->stats;
  GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(GST_PAD_PROBE_INFO_BUFFER(info));
  if (m)
    note_result(t, m);
  atomic_fetch_add_explicit(&s->frames_out, 1, memory_order_relaxed);
  atomic_store_explicit(&s->last_frame_us, g_get_monotonic_time(), memory_order_relaxed);
  return GST_PAD_PROBE_OK;
}

static void tracker_free(gpointer data) {
  ResultTracker *t = data;
  camstats_unref(t->stats);
  g_free(t);
}

void camstats_attach(CamStats *s, GstElement *detector) {
  GstPad *sink = gst_element_get_static_pad(detector, "sink");
  GstPad *src = gst_element_get_static_pad(detector, "src");
  ResultTracker *t = g_new0(ResultTracker, 1);
  t->stats = camstats_ref(s);
  gst_pad_add_probe(sink, GST_PAD_PROBE_TYPE_BUFFER, count_in, camstats_ref(s),
                    (GDestroyNotify)camstats_unref);
  gst_pad_add_probe(src, GST_PAD_PROBE_TYPE_BUFFER, count_out, t, tracker_free);
  gst_object_unref(sink);
  gst_object_unref(src);
}
