/* Watches the ignore-mask file as the model file is watched
 * (fap_modelswap.c): a thread of its own with a GFileMonitor; a change is
 * loaded once the file has been quiet for the settle time (a half-written
 * file is not read), and handed to the element's callback, a good mask or
 * the reason it is not one. */
#ifndef FAP_MASKWATCH_H
#define FAP_MASKWATCH_H

#include <glib.h>

#include "fap_ignoremask.h"

typedef struct FapMaskWatch FapMaskWatch;

/* On the watch thread: @mask (a reference to take over) or NULL and
 * @error, for the file as it is now. */
typedef void (*FapMaskLoaded) (FapMask * mask, const gchar * error,
    gpointer user_data);

FapMaskWatch *fap_mask_watch_new (const gchar * path, guint settle_ms,
    FapMaskLoaded loaded, gpointer user_data);
/* Stops the thread (waits for a callback in progress); NULL is fine. */
void fap_mask_watch_free (FapMaskWatch * w);

#endif
