/* The non-blocking worker: one thread that runs the frame it was handed,
 * on the model it was handed with it (fap_model_state_infer), while the
 * streaming thread goes on. The streaming thread never waits for it: it
 * offers a frame when the worker is idle and collects the newest result
 * (or error) when there is one. The worker records its inferences in the
 * element's statistics; it never calls the element. */
#ifndef FAP_WORKER_H
#define FAP_WORKER_H

#include <gst/gst.h>

#include "fap_frameview.h"
#include "fap_modelstate.h"
#include "fap_results.h"
#include "fap_stats.h"

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
  FapModelState *job_model;     /* the model it runs on (a reference) */
  FapInferRequest job_request;  /* never drawn in the pass (blend NULL) */
  gboolean job_draw;            /* prepare the host table for job_blend */
  fap_blend job_blend;
  FapInference *finished;       /* newest result, not yet collected */
  FapOverlays *spare;           /* prepared for finished when spare_ready */
  gboolean spare_ready;
  gchar *error;                 /* an inference that failed */
  FapStats *stats;              /* the element's: inferences recorded */
} FapWorker;

void fap_worker_init (FapWorker * w);   /* once per element */
void fap_worker_clear (FapWorker * w);  /* at finalize; stopped first */
/* Starts the thread; its inferences are recorded in @stats. */
void fap_worker_start (FapWorker * w, FapStats * stats);
/* Waits for the inference in flight (the core cannot be cancelled), then
 * drops every job and result. */
void fap_worker_stop (FapWorker * w);
gboolean fap_worker_running (FapWorker * w);

/* Never waits. Collects the newest result of @req's generation (older ones
 * are dropped) into *result (NULL when none) and a pending error into
 * *error; with a result whose overlay the worker prepared, *overlay and the
 * worker's spare change places. When @frame is not NULL and the worker is
 * idle, hands it a copy of it to run on @m as @req asks (@req->blend: the
 * drawing to prepare a host table for, NULL when not drawing). Returns TRUE
 * when the frame was taken. */
gboolean fap_worker_exchange (FapWorker * w, FapModelState * m,
    const fap_frame * frame, const FapInferRequest * req,
    FapOverlays ** overlay, FapInference ** result, gchar ** error);
/* The same for a frame in CUDA memory: @job (a device copy) is taken over
 * when TRUE is returned, else left to the caller. Call only when
 * fap_worker_idle (): the copy is made for the worker. */
gboolean fap_worker_exchange_device (FapWorker * w, FapModelState * m,
    FapDeviceJob * job, const FapInferRequest * req, FapInference ** result,
    gchar ** error);
/* TRUE when a frame offered now would be taken (streaming thread only). */
gboolean fap_worker_idle (FapWorker * w);
void fap_device_job_release (FapDeviceJob * job);

/* Drops a job not yet started and any uncollected result (flush, caps). */
void fap_worker_reset (FapWorker * w);

#endif
