/* Shared model instances: elements of one process that name the same
 * model-instance-id and the same model file share one detector (one copy of the weights on the
 * device, one activation arena) created with batch B, and their due frames
 * are run together: a batch starts when B frames wait or batch-timeout has
 * passed since the first of them. Each element waits for its own frame only
 * (the streaming thread in blocking mode, the worker in non-blocking mode);
 * one stream stalling or stopping never holds the others (a batch never
 * waits longer than the timeout). The last element to release an instance
 * frees it. */
#ifndef FAP_INSTANCE_H
#define FAP_INSTANCE_H

#include <gst/gst.h>
#include <fap.h>

#include "fap_request.h"
#include "fap_results.h"

typedef struct FapInstance FapInstance;

/* What the first element decides; later ones are compared against it. */
typedef struct {
  gchar *model_path;
  fap_detector_options options; /* .batch = batch-size */
  guint64 timeout_us;
  GstObject *cuda_context;      /* the creator's GstCudaContext, or NULL:
                                 * pushed around every run of the batch */
} FapInstanceConfig;

/* Finds instance @id or creates it from @config (loading the model through
 * the model cache, creating the detector in the calling thread's CUDA
 * context when one is pushed). A later element whose settings differ gets
 * the instance as it is and a warning naming both elements in *warning
 * (g_free). NULL with *error on failure. */
FapInstance *fap_instance_acquire (const gchar * id,
    const FapInstanceConfig * config, GstElement * element, gchar ** warning,
    gchar ** error);
void fap_instance_release (FapInstance * inst);

fap_detector *fap_instance_detector (FapInstance * inst);
guint fap_instance_users (FapInstance * inst);

/* Runs @frames (the crops of one frame, req->n_rois of them, at most the
 * instance's batch) together in the next batch and waits for their result:
 * a new inference (its maps copied) tagged as @req says, or NULL with
 * *error naming what failed for this frame. @frames must stay valid until
 * it returns. The frames run without drawing (settings are per element). */
FapInference *fap_instance_run (FapInstance * inst, const fap_frame * frames,
    const FapInferRequest * req, gsize * pixel_bytes, gchar ** error);

/* Statistics (tests, benchmarks, monitoring): batches run and frames in
 * them; @pending (may be NULL): frames waiting for a batch now. */
void fap_instance_stats (FapInstance * inst, guint64 * batches,
    guint64 * frames, guint * pending);

#endif
