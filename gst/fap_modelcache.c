#include "fap_modelcache.h"

#include <glib/gstdio.h>
#include <stdlib.h>

typedef struct {
  gchar *key;
  fap_model *model;
  guint users;
} Entry;

static GMutex cache_lock;
static GList *cache;            /* Entry */

static gchar *
make_key (const gchar * path)
{
  GStatBuf st;
  char *real = realpath (path, NULL);
  gchar *key;

  if (!real || g_stat (real, &st) != 0) {
    free (real);
    return NULL;
  }
  key = g_strdup_printf ("%s|%lu|%lu|%lld|%lld.%09ld", real,
      (unsigned long) st.st_dev, (unsigned long) st.st_ino,
      (long long) st.st_size, (long long) st.st_mtim.tv_sec,
      (long) st.st_mtim.tv_nsec);
  free (real);
  return key;
}

fap_status
fap_modelcache_acquire (const gchar * path, fap_model ** out,
    gboolean * shared)
{
  gchar *key = make_key (path);
  fap_status st;
  GList *l;
  Entry *e;

  *out = NULL;
  *shared = FALSE;
  if (!key)                     /* let the core report the I/O error */
    return fap_model_load (path, out);

  /* held across the load: a second element naming the same file waits for
   * the first load instead of loading it twice */
  g_mutex_lock (&cache_lock);
  for (l = cache; l; l = l->next) {
    e = l->data;
    if (g_str_equal (e->key, key)) {
      e->users++;
      *out = e->model;
      *shared = TRUE;
      g_mutex_unlock (&cache_lock);
      g_free (key);
      return FAP_OK;
    }
  }
  st = fap_model_load (path, out);
  if (st == FAP_OK) {
    e = g_new0 (Entry, 1);
    e->key = key;
    e->model = *out;
    e->users = 1;
    cache = g_list_prepend (cache, e);
    key = NULL;
  }
  g_mutex_unlock (&cache_lock);
  g_free (key);
  return st;
}

void
fap_modelcache_release (fap_model * model)
{
  GList *l;

  if (!model)
    return;
  g_mutex_lock (&cache_lock);
  for (l = cache; l; l = l->next) {
    Entry *e = l->data;
    if (e->model == model) {
      if (--e->users == 0) {
        cache = g_list_delete_link (cache, l);
        fap_model_free (e->model);
        g_free (e->key);
        g_free (e);
      }
      g_mutex_unlock (&cache_lock);
      return;
    }
  }
  g_mutex_unlock (&cache_lock);
  /* not cached (loaded when the key could not be made) */
  fap_model_free (model);
}

guint
fap_modelcache_size (void)
{
  guint n;
  g_mutex_lock (&cache_lock);
  n = g_list_length (cache);
  g_mutex_unlock (&cache_lock);
  return n;
}
