/* See fap_stats.h. */
#include "fap_stats.h"

void
fap_stats_init (FapStats * s)
{
  g_mutex_init (&s->lock);
  fap_stats_reset (s);
}

void
fap_stats_clear (FapStats * s)
{
  g_mutex_clear (&s->lock);
}

void
fap_stats_reset (FapStats * s)
{
  g_mutex_lock (&s->lock);
  s->frames = s->inferences = 0;
  s->last_score = -1.0f;
  s->inference_ms_total = s->inference_ms_avg = 0.0;
  s->frame_ms_avg = s->latency_reported_ms = 0.0;
  s->light_frames = 0;
  s->light_ms_total = 0.0;
  s->pixel_bytes = 0;
  g_mutex_unlock (&s->lock);
}

gboolean
fap_stats_add_inference (FapStats * s, gdouble ms, gsize pixel_bytes,
    gboolean frame_waited)
{
  gboolean post = FALSE;

  g_mutex_lock (&s->lock);
  s->inferences++;
  s->pixel_bytes += pixel_bytes;
  s->inference_ms_total += ms;
  s->inference_ms_avg = s->inferences == 1 ? ms :
      0.8 * s->inference_ms_avg + 0.2 * ms;
  if (frame_waited) {
    gdouble rep = s->latency_reported_ms;
    if (rep <= 0.0 || ABS (s->inference_ms_avg - rep) > 0.25 * rep) {
      s->latency_reported_ms = s->inference_ms_avg;
      post = TRUE;
    }
  }
  g_mutex_unlock (&s->lock);
  return post;
}

void
fap_stats_add_pixel_bytes (FapStats * s, gsize bytes)
{
  g_mutex_lock (&s->lock);
  s->pixel_bytes += bytes;
  g_mutex_unlock (&s->lock);
}

gboolean
fap_stats_add_frame (FapStats * s, gdouble ms, gboolean inferred,
    gboolean non_blocking)
{
  gboolean post = FALSE;

  g_mutex_lock (&s->lock);
  s->frames++;
  if (!inferred) {
    s->light_frames++;
    s->light_ms_total += ms;
  }
  s->frame_ms_avg = s->frames == 1 ? ms : 0.95 * s->frame_ms_avg + 0.05 * ms;
  /* non-blocking: what a frame waits here is the streaming-thread cost;
   * say so when it moves by a quarter (blocking: fap_stats_add_inference) */
  if (non_blocking && s->frames % 30 == 0
      && ABS (s->frame_ms_avg - s->latency_reported_ms) >
      0.25 * MAX (s->latency_reported_ms, 0.1)) {
    s->latency_reported_ms = s->frame_ms_avg;
    post = TRUE;
  }
  g_mutex_unlock (&s->lock);
  return post;
}

void
fap_stats_set_last_score (FapStats * s, gfloat score)
{
  g_mutex_lock (&s->lock);
  s->last_score = score;
  g_mutex_unlock (&s->lock);
}

GstClockTime
fap_stats_added_latency (FapStats * s, gboolean non_blocking)
{
  gdouble ms;

  g_mutex_lock (&s->lock);
  ms = non_blocking ? s->frame_ms_avg : s->inference_ms_avg;
  g_mutex_unlock (&s->lock);
  return (GstClockTime) (ms * GST_MSECOND);
}

void
fap_stats_report (FapStats * s, FapStatsReport * r)
{
  g_mutex_lock (&s->lock);
  r->frames = s->frames;
  r->inferences = s->inferences;
  r->pixel_bytes = s->pixel_bytes;
  r->average_inference_ms = s->inferences ?
      s->inference_ms_total / s->inferences : 0.0;
  r->average_frame_ms = s->light_frames ?
      s->light_ms_total / s->light_frames : 0.0;
  r->last_score = s->last_score;
  g_mutex_unlock (&s->lock);
}
