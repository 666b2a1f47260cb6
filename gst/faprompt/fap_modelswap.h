/* Hot model swap: one loader thread per started element loads a new model
 * and builds its detector while frames keep flowing on the old one, then
 * leaves it for the streaming thread, which swaps it in between two frames
 * (fap_model_swap_take). It also frees swapped-out models (a full-size model
 * takes tens of ms to release) and watches the model file and its
 * calibration sidecar (GFileMonitor in the loader's own main context, so no
 * application main loop is needed), loading a changed file once it has been
 * quiet for the settle time: a half-copied file is not loaded. What the
 * application hears of it (messages, warnings, the element error of a load
 * that failed at start) is said here. */
#ifndef FAP_MODELSWAP_H
#define FAP_MODELSWAP_H

#include <gst/gst.h>

#include "fap_modelstate.h"

typedef struct FapModelSwap FapModelSwap;

/* The loader of @element (started): loads with @settings in @cuda's context
 * (the element's, both unchanged until fap_model_swap_free); @running is the
 * model start () loaded, its generation given. Failed loads post a warning
 * and a "faprompt-model" message (event model-load-failed) on @element. */
FapModelSwap *fap_model_swap_new (GstElement * element,
    const FapLoadSettings * settings, FapCuda * cuda,
    const FapModelState * running);
/* Waits for a load in progress (the core cannot be cancelled), frees what
 * was loaded and not taken and every model swapped out. */
void fap_model_swap_free (FapModelSwap * s);

/* Asks for @path to be loaded (any thread, never waits). A request not yet
 * started is replaced by a newer one: only the newest path is loaded.
 * @reason ("model-file", "reload", "file changed") goes to the logs. */
void fap_model_swap_request (FapModelSwap * s, const gchar * path,
    const gchar * reason);

/* Watches @path and <path>.calibration.json (NULL: stop watching); a change
 * requests a load once neither file has changed for @settle_ms. */
void fap_model_swap_watch (FapModelSwap * s, const gchar * path,
    guint settle_ms);

/* Streaming thread, every frame: a newly loaded state (the caller's
 * reference) or NULL. No lock when none is waiting. */
FapModelState *fap_model_swap_take (FapModelSwap * s);

/* Streaming thread: @m (from fap_model_swap_take, its generation given)
 * took over from @old (the caller's reference, released on the loader
 * thread). Posts the "faprompt-model" message (event model-loaded). */
void fap_model_swap_took_over (FapModelSwap * s, FapModelState * m,
    FapModelState * old);

/* The failure mapping, one for start () and a swap: a load that failed at
 * start () stops the pipeline with the element error posted here
 * (GST_RESOURCE_ERROR: NOT_FOUND, OPEN_READ or SETTINGS, saying how to get
 * a model where the file is missing or bad); a swap's warning names the
 * same failure with its short reason. @error: the core's message. */
void fap_load_failure_post (GstElement * element, FapLoadFailure failure,
    const gchar * path, const FapLoadSettings * s, const gchar * error);

#endif
