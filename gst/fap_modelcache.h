/* Process-wide cache of loaded models: elements that name the same file share
 * one fap_model (weights mapped and widened once); each element still has its
 * own detector (activation arena). */
#ifndef FAP_MODELCACHE_H
#define FAP_MODELCACHE_H

#include <fap.h>
#include <glib.h>

/* Returns a model for @path (loaded on first use) in *out; *shared tells
 * whether it was already loaded. Release with fap_modelcache_release (). The
 * key is the canonical path plus the file's device, inode, size and mtime, so
 * a file rewritten in place is loaded afresh. */
fap_status fap_modelcache_acquire (const gchar * path, fap_model ** out,
    gboolean * shared);
void fap_modelcache_release (fap_model * model);
/* Entries currently loaded (tests). */
guint fap_modelcache_size (void);

#endif
