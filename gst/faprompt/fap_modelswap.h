/* Hot model swap: one loader thread per started element loads a new model
 * and builds its detector while frames keep flowing on the old one, then
 * leaves it for the streaming thread, which swaps it in between two frames
 * (fap_model_swap_take). It also frees swapped-out models (a full-size model
 * takes tens of ms to release) and watches the model file and its
 * calibration sidecar (GFileMonitor in the loader's own main context, so no
 * application main loop is needed), loading a changed file once it has been
 * quiet for the settle time: a half-copied file is not loaded. */
#ifndef FAP_MODELSWAP_H
#define FAP_MODELSWAP_H

#include <glib.h>

#include "fap_modelstate.h"

typedef struct FapModelSwap FapModelSwap;

/* Called on the loader thread: loads @path (fap_model_state_load), or NULL
 * with *error (g_free) saying what is wrong with it. */
typedef FapModelState *(*FapSwapLoadFunc) (gpointer user_data,
    const gchar * path, gchar ** error);
/* Called on the loader thread after a failed load; the old model runs on. */
typedef void (*FapSwapFailedFunc) (gpointer user_data, const gchar * path,
    const gchar * reason, const gchar * error);

FapModelSwap *fap_model_swap_new (FapSwapLoadFunc load,
    FapSwapFailedFunc failed, gpointer user_data);
/* Waits for a load in progress (the core cannot be cancelled), frees what
 * was loaded and not taken and every state handed to dispose. */
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

/* Releases @m on the loader thread (any thread, never waits). */
void fap_model_swap_dispose (FapModelSwap * s, FapModelState * m);

#endif
