/* See fap_worker.h. */
#include "fap_worker.h"

#include <string.h>

static gpointer
worker_main (gpointer data)
{
  FapWorker *w = data;

  g_mutex_lock (&w->lock);
  for (;;) {
    fap_frame frame;
    fap_blend blend;
    gboolean draw;
    GstClockTime pts;
    guint64 generation;
    FapInference *inf;
    gchar *err = NULL;

    while (!w->pending && !w->quit)
      g_cond_wait (&w->cond, &w->lock);
    if (w->quit)
      break;
    w->pending = FALSE;
    w->busy = TRUE;
    /* the copy is not touched by the streaming thread while busy */
    frame = w->device_job.buffer ? w->device_job.view : w->job.frame;
    pts = w->job_pts;
    generation = w->job_generation;
    draw = w->job_draw && w->spare;
    blend = w->job_blend;
    w->spare_ready = FALSE;     /* the spare is the worker's while busy */
    g_mutex_unlock (&w->lock);

    inf = w->run (w->user_data, &frame, pts, generation, draw ? &blend : NULL,
        w->spare, &err);

    g_mutex_lock (&w->lock);
    w->busy = FALSE;
    fap_device_job_release (&w->device_job);
    if (inf) {
      fap_inference_unref (w->finished);
      w->finished = inf;
      w->spare_ready = draw;
    } else if (!w->error) {
      w->error = err ? err : g_strdup ("inference failed");
    } else {
      g_free (err);
    }
    g_cond_broadcast (&w->cond);
  }
  g_mutex_unlock (&w->lock);
  return NULL;
}

void
fap_device_job_release (FapDeviceJob * job)
{
  if (!job->buffer)
    return;
  gst_video_frame_unmap (&job->vframe);
  gst_buffer_unref (job->buffer);
  memset (job, 0, sizeof *job);
}

void
fap_worker_init (FapWorker * w)
{
  memset (w, 0, sizeof *w);
  g_mutex_init (&w->lock);
  g_cond_init (&w->cond);
}

void
fap_worker_clear (FapWorker * w)
{
  fap_worker_stop (w);
  fap_framecopy_clear (&w->job);
  fap_overlay_free (w->spare);
  w->spare = NULL;
  g_mutex_clear (&w->lock);
  g_cond_clear (&w->cond);
}

void
fap_worker_start (FapWorker * w, FapWorkerRunFunc run, gpointer user_data)
{
  g_return_if_fail (w->thread == NULL);
  w->run = run;
  w->user_data = user_data;
  if (!w->spare && fap_overlay_new (&w->spare) != FAP_OK)
    w->spare = NULL;            /* then the streaming thread builds tables itself */
  w->spare_ready = FALSE;
  w->thread = g_thread_new ("faprompt-worker", worker_main, w);
}

gboolean
fap_worker_running (FapWorker * w)
{
  return w->thread != NULL;
}

void
fap_worker_stop (FapWorker * w)
{
  if (!w->thread)
    return;
  g_mutex_lock (&w->lock);
  w->quit = TRUE;
  g_cond_broadcast (&w->cond);
  g_mutex_unlock (&w->lock);
  g_thread_join (w->thread);
  w->thread = NULL;
  w->quit = w->pending = w->busy = FALSE;
  fap_device_job_release (&w->device_job);
  fap_inference_unref (w->finished);
  w->finished = NULL;
  w->spare_ready = FALSE;
  g_clear_pointer (&w->error, g_free);
}

void
fap_worker_reset (FapWorker * w)
{
  g_mutex_lock (&w->lock);
  if (w->pending)
    fap_device_job_release (&w->device_job);
  w->pending = FALSE;
  fap_inference_unref (w->finished);
  w->finished = NULL;
  w->spare_ready = FALSE;
  g_mutex_unlock (&w->lock);
}

/* the job in place (host copy or device job) goes to the worker; under lock */
static void
hand_over (FapWorker * w, GstClockTime pts, guint64 generation,
    const fap_blend * blend)
{
  w->job_pts = pts;
  w->job_generation = generation;
  w->job_draw = blend != NULL;
  if (blend)
    w->job_blend = *blend;
  w->pending = TRUE;
  g_cond_broadcast (&w->cond);
}

gboolean
fap_worker_exchange (FapWorker * w, guint64 generation,
    const fap_frame * frame, GstClockTime pts, const fap_blend * blend,
    fap_overlay ** overlay, FapInference ** result, gchar ** error)
{
  gboolean taken = FALSE;

  *result = NULL;
  *error = NULL;
  g_mutex_lock (&w->lock);
  if (w->error) {
    *error = w->error;
    w->error = NULL;
  }
  if (w->finished) {
    if (w->finished->generation == generation) {
      *result = w->finished;
      if (w->spare_ready && overlay) {
        fap_overlay *mine = *overlay;
        *overlay = w->spare;
        w->spare = mine;
      }
    } else {
      fap_inference_unref (w->finished);
    }
    w->finished = NULL;
    w->spare_ready = FALSE;
  }
  if (!*error && frame && !w->busy && !w->pending) {
    if (fap_framecopy_take (&w->job, frame)) {
      hand_over (w, pts, generation, blend);
      taken = TRUE;
    } else {
      *error = g_strdup_printf ("out of memory for a copy of a %dx%d frame",
          frame->width, frame->height);
    }
  }
  g_mutex_unlock (&w->lock);
  return taken;
}

gboolean
fap_worker_idle (FapWorker * w)
{
  gboolean idle;
  g_mutex_lock (&w->lock);
  idle = !w->busy && !w->pending && !w->error;
  g_mutex_unlock (&w->lock);
  return idle;
}

gboolean
fap_worker_exchange_device (FapWorker * w, guint64 generation,
    FapDeviceJob * job, GstClockTime pts, FapInference ** result,
    gchar ** error)
{
  gboolean taken = FALSE;

  /* collect first (no frame), then hand over the device copy */
  fap_worker_exchange (w, generation, NULL, pts, NULL, NULL, result, error);
  g_mutex_lock (&w->lock);
  if (!*error && job && job->buffer && !w->busy && !w->pending) {
    w->device_job = *job;
    memset (job, 0, sizeof *job);
    hand_over (w, pts, generation, NULL);       /* drawn on the device: no host table */
    taken = TRUE;
  }
  g_mutex_unlock (&w->lock);
  return taken;
}
