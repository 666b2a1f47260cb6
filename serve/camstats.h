/* A camera's figures, counted on its streaming threads by pad probes on the
 * faprompt element (frames in at its sink pad; frames out, and each new
 * result read from the GstFAPromptMeta, at its src pad) and read by the
 * main loop (API, metrics, the stall check). Lock-free atomics, nothing
 * allocated per frame. Totals run across the camera's restarts. */
#ifndef SERVE_CAMSTATS_H
#define SERVE_CAMSTATS_H

#include <gst/gst.h>
#include <stdatomic.h>

/* Upper bounds (seconds) of the inference-time histogram; +Inf is the
 * count. From a tiny model on a GPU (milliseconds) to ViT-L on a small CPU
 * (seconds). */
#define CAMSTATS_BUCKETS 12
extern const double camstats_bucket_bounds[CAMSTATS_BUCKETS];

typedef struct {
  atomic_uint_fast64_t frames_in, frames_out;
  atomic_uint_fast64_t inferences, anomalies;
  atomic_int_fast64_t last_frame_us;     /* monotonic; 0: none yet */
  atomic_uint_fast64_t last_score_bits;  /* a double's bits */
  atomic_bool have_score;
  atomic_uint_fast64_t model_generation; /* of the newest result */
  atomic_uint_fast64_t bucket[CAMSTATS_BUCKETS]; /* not cumulative */
  atomic_uint_fast64_t inference_us_sum;
} CamStats;

typedef struct {
  guint64 frames_in, frames_out, inferences, anomalies;
  gint64 last_frame_us;
  gboolean have_score;
  double last_score;
  guint64 model_generation;
  guint64 cumulative[CAMSTATS_BUCKETS];  /* le bound */
  double inference_seconds_sum;
} CamStatsSnapshot;

CamStats *camstats_new(void);
CamStats *camstats_ref(CamStats *s);
void camstats_unref(CamStats *s);
void camstats_read(CamStats *s, CamStatsSnapshot *out);

/* Adds the probes to @detector (a faprompt element). They hold @s, and
 * per-pipeline state of their own, until the element goes. */
void camstats_attach(CamStats *s, GstElement *detector);

#endif
