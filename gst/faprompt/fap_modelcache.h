/* Process-wide cache of loaded models: elements that name the same file share
 * one fap_model (weights mapped and widened once); each element still has its
 * own detector (activation arena). */
#ifndef FAP_MODELCACHE_H
#define FAP_MODELCACHE_H

#include <fap.h>
#include <glib.h>

/* Returns a model for @path (loaded on first use) in *out; *shared tells
 * whether it was already loaded. Release with fap_modelcache_release (). The
 * key is fap_modelcache_key (), so a file rewritten in place or recalibrated
 * is loaded afresh. */
fap_status fap_modelcache_acquire (const gchar * path, fap_model ** out,
    gboolean * shared);
void fap_modelcache_release (fap_model * model);
/* The cache's key for @path: its canonical path with the device, inode,
 * size and mtime of the file and of its calibration sidecar
 * (<path>.calibration.json); NULL when it is not a readable regular file.
 * Two keys differ whenever a load could give another model. */
gchar *fap_modelcache_key (const gchar * path);
/* How many holders @model has now (0: not cached). */
guint fap_modelcache_users (fap_model * model);
/* Entries currently loaded (tests). */
guint fap_modelcache_size (void);

#endif
