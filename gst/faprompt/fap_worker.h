/* The non-blocking worker: one thread that runs the frame it was handed
 * while the streaming thread goes on. The streaming thread never waits for
 * it: it offers a frame when the worker is idle and collects the newest
 * result (or error) when there is one. */
#ifndef FAP_WORKER_H
#define FAP_WORKER_H

#include <gst/gst.h>

#include "fap_frameview.h"
#include "fap_results.h"

/* Runs one frame on the worker thread: a new inference, or NULL with *error
 * set (g_free'd by the worker's owner). With @blend, it also prepares @spare
 * (fap_overlay_prepare) for the new map and the frame's geometry, so the
 * streaming thread only mixes when it draws the result. */
typedef FapInference *(*FapWorkerRunFunc) (gpointer user_data,
    const fap_frame * frame, GstClockTime pts, guint64 generation,
    const fap_blend * blend, fap_overlay * spare, gchar ** error);

/* A frame in CUDA memory handed to the worker: a device-side copy, mapped
 * (fap_cuda_copy); the worker unmaps and drops it after the run. */
typedef struct {
  GstBuffer *buffer;
  GstVideoFrame vframe;
  fap_frame view;
} FapDeviceJob;

typedef struct {
  GThread *thread;
  GMutex lock;
  GCond cond;
  gboolean pending, busy, quit;
  FapFrameCopy job;             /* the frame in its own format, under lock */
  FapDeviceJob device_job;      /* or its device copy (buffer != NULL) */
  GstClockTime job_pts;
  guint64 job_generation;
  gboolean job_draw;
  fap_blend job_blend;
  FapInference *finished;       /* newest result, not yet collected */
  fap_overlay *spare;           /* prepared for finished when spare_ready */
  gboolean spare_ready;
  gchar *error;                 /* an inference that failed */
  FapWorkerRunFunc run;
  gpointer user_data;
} FapWorker;

void fap_worker_init (FapWorker * w);   /* once per element */
void fap_worker_clear (FapWorker * w);  /* at finalize; stopped first */
void fap_worker_start (FapWorker * w, FapWorkerRunFunc run,
    gpointer user_data);
/* Waits for the inference in flight (the core cannot be cancelled), then
 * drops every job and result. */
void fap_worker_stop (FapWorker * w);
gboolean fap_worker_running (FapWorker * w);

/* Never waits. Collects the newest result of @generation (older ones are
 * dropped) into *result (NULL when none) and a pending error into *error;
 * with a result whose overlay the worker prepared, *overlay and the worker's
 * spare change places. When @frame is not NULL and the worker is idle, hands
 * it a copy of it (and @blend, NULL when not drawing). Returns TRUE when the
 * frame was taken. */
gboolean fap_worker_exchange (FapWorker * w, guint64 generation,
    const fap_frame * frame, GstClockTime pts, const fap_blend * blend,
    fap_overlay ** overlay, FapInference ** result, gchar ** error);
/* The same for a frame in CUDA memory: @job (a device copy) is taken over
 * when TRUE is returned, else left to the caller. Call only when
 * fap_worker_idle (): the copy is made for the worker. */
gboolean fap_worker_exchange_device (FapWorker * w, guint64 generation,
    FapDeviceJob * job, GstClockTime pts, FapInference ** result,
    gchar ** error);
/* TRUE when a frame offered now would be taken (streaming thread only). */
gboolean fap_worker_idle (FapWorker * w);
void fap_device_job_release (FapDeviceJob * job);

/* Drops a job not yet started and any uncollected result (flush, caps). */
void fap_worker_reset (FapWorker * w);

#endif
