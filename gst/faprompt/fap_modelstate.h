/* A loaded model as the element runs it: the model, its detector (private,
 * or a share of a model instance) and what its results are tagged with.
 * Reference counted: the streaming thread holds the current one, the worker
 * holds the one its inference runs on, so a model swapped out while an
 * inference still uses it is freed when that inference ends. Built the same
 * way at start () (on the streaming thread's caller) and for a swap (on the
 * loader thread, fap_modelswap.h). */
#ifndef FAP_MODELSTATE_H
#define FAP_MODELSTATE_H

#include <gst/gst.h>
#include <fap.h>

#include "fap_cuda.h"
#include "fap_instance.h"

/* What every load of one element uses, fixed at start () (the properties
 * behind it change in READY only). */
typedef struct {
  fap_detector_options options; /* log / log_user_data: the element's sink */
  gchar *instance_id;           /* model-instance-id, NULL: a private detector */
  guint64 batch_timeout_us;
} FapLoadSettings;

void fap_load_settings_clear (FapLoadSettings * s);

typedef struct {
  guint64 generation;           /* 1 for the first model an element runs, +1
                                 * each model swapped in */
  const gchar *path;            /* interned: the file it came from */
  fap_model *model;             /* from the model cache */
  fap_detector *detector;       /* private, or the instance's (borrowed) */
  FapInstance *instance;        /* model-instance-id, or NULL */
  gboolean model_shared;        /* the model cache had it already */
  gfloat image_threshold, pixel_threshold;      /* the model's calibration */
  gdouble load_ms;              /* file read + detector built */
  GstObject *cuda_context;      /* the detector's GstCudaContext (a ref) */
  /*< private >*/
  fap_log_fn log;               /* the element's sink: the detector's */
  void *log_user_data;          /* messages go through the state */
  gchar load_error[512];        /* the last error while loading */
} FapModelState;

typedef enum {
  FAP_LOAD_OK,
  FAP_LOAD_NOT_FOUND,           /* no such file */
  FAP_LOAD_BAD_FILE,            /* the file did not load (schema, I/O) */
  FAP_LOAD_NO_DETECTOR,         /* the detector could not be built (device
                                 * memory, backend) */
} FapLoadFailure;

/* Loads @path (through the model cache; generation 0 until the element
 * gives it one when it takes over) and builds its detector in @cuda's
 * context when it has one (CUDA frames and weights then share it). On
 * failure: NULL, *failure and *error (g_free: the core's message). An
 * instance created with other settings than @s gives *warning (g_free). */
FapModelState *fap_model_state_load (const gchar * path,
    const FapLoadSettings * s, FapCuda * cuda, GstElement * element,
    FapLoadFailure * failure, gchar ** error, gchar ** warning);

FapModelState *fap_model_state_ref (FapModelState * m);
/* The last reference frees the detector (in its CUDA context) and releases
 * the model: tens of ms for a full-size model, so the streaming thread hands
 * its old state to the loader (fap_model_swap_dispose) instead. */
void fap_model_state_unref (FapModelState * m);

#endif
