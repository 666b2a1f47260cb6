/* A loaded model as the element runs it: the model, its detector (private,
 * or a share of a model instance), what its results are tagged with, and
 * how a frame is run and drawn on it. Reference counted: the streaming
 * thread holds the current one, the worker holds the one its inference runs
 * on, so a model swapped out while an inference still uses it is freed when
 * that inference ends. Built the same way at start () (on the streaming
 * thread's caller) and for a swap (on the loader thread, fap_modelswap.h). */
#ifndef FAP_MODELSTATE_H
#define FAP_MODELSTATE_H

#include <gst/gst.h>
#include <fap.h>

#include "fap_cuda.h"
#include "fap_instance.h"
#include "fap_request.h"
#include "fap_results.h"

/* What every load of one element uses, fixed at start () (the properties
 * behind it change in READY only). */
typedef struct {
  fap_detector_options options; /* log / log_user_data: the element's debug
                                 * log (fap_core_log) */
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
  GstObject *log_object;        /* its core messages go to this debug log */
  FapStitchers *stitchers;      /* its tiled results' stitchers */
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
 * context when it has one (CUDA frames and weights then share it). An
 * instance created with other settings than @s is used as it is, with a
 * warning posted on @element. On failure: NULL, *failure and *error
 * (g_free: the core's message). */
FapModelState *fap_model_state_load (const gchar * path,
    const FapLoadSettings * s, FapCuda * cuda, GstElement * element,
    FapLoadFailure * failure, gchar ** error);

FapModelState *fap_model_state_ref (FapModelState * m);
/* The last reference frees the detector (in its CUDA context) and releases
 * the model: tens of ms for a full-size model, so the streaming thread hands
 * its old state to the loader (fap_model_swap_took_over) instead. */
void fap_model_state_unref (FapModelState * m);


/* The drawing tables (CPU backend) of one stream: one fap_overlay per roi,
 * each caching its roi's table. */
typedef struct {
  fap_overlay *o[FAP_ROI_MAX];
} FapOverlays;

/* NULL with *error (g_free) when out of memory. */
FapOverlays *fap_overlays_new (gchar ** error);
void fap_overlays_free (FapOverlays * o);

/* Runs the rois of @frame (req->rois, as crops: only they are resized to the
 * model's input) through @m as one batch: its private detector, or its
 * shared instance (which batches them with the other elements' frames and
 * never draws: drawing settings are per element). A new inference tagged
 * with the model (FapInference.model_*), *drawn when the frame was drawn in
 * the same pass (a private detector on the CUDA backend), *pixel_bytes the
 * frame pixels copied between host and device; or NULL with *error
 * (g_free). Any thread: the streaming thread (blocking) or the worker. */
FapInference *fap_model_state_infer (FapModelState * m,
    const fap_frame * frame, const FapInferRequest * req, gboolean * drawn,
    gsize * pixel_bytes, gchar ** error);

/* Draws @inf into @frame, which its own inference did not draw, each roi's
 * map into its rectangle (nothing outside the rois changes): on the CUDA
 * backend by the device (a host frame goes up and back, a CUDA frame is
 * drawn where it is; both far cheaper there than a host table for every new
 * map; *pixel_bytes what was copied), on the CPU backend with @overlays'
 * tables (the streaming thread's). FALSE with *error (g_free). */
gboolean fap_model_state_draw (FapModelState * m, FapOverlays * overlays,
    const fap_frame * frame, const FapInference * inf,
    const fap_blend * blend, gsize * pixel_bytes, gchar ** error);

/* On the thread that produced @inf (the worker): when @m draws with host
 * tables (the CPU backend), works out @overlays' tables for @inf's maps and
 * @frame's geometry so the streaming thread only mixes (tens of ms at
 * 1080p); TRUE then, the tables made or not (a failure only means the
 * streaming thread builds them, and reports it, itself). FALSE when @m
 * draws on the device: no table. */
gboolean fap_model_state_prepare_overlay (FapModelState * m,
    FapOverlays * overlays, const fap_frame * frame, const FapInference * inf,
    const fap_blend * blend);

#endif
