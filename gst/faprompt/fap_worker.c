/* See fap_worker.h. */
#include "fap_worker.h"

#include <string.h>

/* One job on the worker thread, on the model it was handed with (a model
 * swapped in meanwhile is used from the next job; the old one is freed when
 * this job lets it go). With @blend, the drawing table of the new map is
 * prepared here rather than on the streaming thread: TRUE in *prepared. */
static FapInference *
run_job (FapWorker * w, FapModelState * m, const fap_frame * frame,
    const FapInferRequest * req, const fap_blend * blend, gboolean * prepared,
    gchar ** error)
{
  FapInference *inf;
  gboolean drawn;
  gsize bytes;

  *prepared = FALSE;
  inf = fap_model_state_infer (m, frame, req, &drawn, &bytes, error);
  if (!inf)
    return NULL;
  /* no frame waits for it: no LATENCY message from here */
  fap_stats_add_inference (w->stats, inf->ms, bytes, FALSE);
  if (blend)
    *prepared = fap_model_state_prepare_overlay (m, w->spare, frame, inf,
        blend);
  return inf;
}

static gpointer
worker_main (gpointer data)
{
  FapWorker *w = data;

  g_mutex_lock (&w->lock);
  for (;;) {
    fap_frame frame;
    fap_blend blend;
    gboolean draw, prepared;
    FapInferRequest req;
    FapModelState *m;
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
    m = w->job_model;
    w->job_model = NULL;
    req = w->job_request;
    draw = w->job_draw && w->spare;
    blend = w->job_blend;
    w->spare_ready = FALSE;     /* the spare is the worker's while busy */
    g_mutex_unlock (&w->lock);

    inf = run_job (w, m, &frame, &req, draw ? &blend : NULL, &prepared, &err);
    fap_model_state_unref (m);

    g_mutex_lock (&w->lock);
    w->busy = FALSE;
    fap_device_job_release (&w->device_job);
    if (inf) {
      fap_inference_unref (w->finished);
      w->finished = inf;
      w->spare_ready = prepared;
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
  fap_overlays_free (w->spare);
  w->spare = NULL;
  g_mutex_clear (&w->lock);
  g_cond_clear (&w->cond);
}

void
fap_worker_start (FapWorker * w, FapStats * stats)
{
  g_return_if_fail (w->thread == NULL);
  w->stats = stats;
  if (!w->spare) {
    gchar *err = NULL;
    /* NULL: then the streaming thread builds tables itself */
    w->spare = fap_overlays_new (&err);
    g_free (err);
  }
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
  g_clear_pointer (&w->job_model, fap_model_state_unref);
  fap_inference_unref (w->finished);
  w->finished = NULL;
  w->spare_ready = FALSE;
  g_clear_pointer (&w->error, g_free);
}

void
fap_worker_reset (FapWorker * w)
{
  g_mutex_lock (&w->lock);
  if (w->pending) {
    fap_device_job_release (&w->device_job);
    g_clear_pointer (&w->job_model, fap_model_state_unref);
  }
  w->pending = FALSE;
  fap_inference_unref (w->finished);
  w->finished = NULL;
  w->spare_ready = FALSE;
  g_mutex_unlock (&w->lock);
}

/* the job in place (host copy or device job) goes to the worker, to run on
 * @m as @req asks; under lock */
static void
hand_over (FapWorker * w, FapModelState * m, const FapInferRequest * req)
{
  w->job_model = fap_model_state_ref (m);
  w->job_request = *req;
  w->job_request.blend = NULL;  /* the worker's inference never draws */
  w->job_draw = req->blend != NULL;
  if (req->blend)
    w->job_blend = *req->blend;
  w->pending = TRUE;
  g_cond_broadcast (&w->cond);
}

/* collects the newest result of @generation; under lock */
static void
collect (FapWorker * w, guint64 generation, FapOverlays ** overlay,
    FapInference ** result, gchar ** error)
{
  *result = NULL;
  *error = NULL;
  if (w->error) {
    *error = w->error;
    w->error = NULL;
  }
  if (w->finished) {
    if (w->finished->generation == generation) {
      *result = w->finished;
      if (w->spare_ready && overlay) {
        FapOverlays *mine = *overlay;
        *overlay = w->spare;
        w->spare = mine;
      }
    } else {
      fap_inference_unref (w->finished);
    }
    w->finished = NULL;
    w->spare_ready = FALSE;
  }
}

gboolean
fap_worker_exchange (FapWorker * w, FapModelState * m,
    const fap_frame * frame, const FapInferRequest * req,
    FapOverlays ** overlay, FapInference ** result, gchar ** error)
{
  gboolean taken = FALSE;

  g_mutex_lock (&w->lock);
  collect (w, req->generation, overlay, result, error);
  if (!*error && frame && !w->busy && !w->pending) {
    if (fap_framecopy_take (&w->job, frame)) {
      hand_over (w, m, req);
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
fap_worker_exchange_device (FapWorker * w, FapModelState * m,
    FapDeviceJob * job, const FapInferRequest * req, FapInference ** result,
    gchar ** error)
{
  FapInferRequest device_req = *req;
  gboolean taken = FALSE;

  device_req.blend = NULL;      /* drawn on the device: no host table */
  g_mutex_lock (&w->lock);
  collect (w, req->generation, NULL, result, error);
  if (!*error && job && job->buffer && !w->busy && !w->pending) {
    w->device_job = *job;
    memset (job, 0, sizeof *job);
    hand_over (w, m, &device_req);
    taken = TRUE;
  }
  g_mutex_unlock (&w->lock);
  return taken;
}
