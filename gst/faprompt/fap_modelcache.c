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

/* The file's identity and the calibration sidecar's (its thresholds are
 * applied at load): a recalibration changes the sidecar only. */
static void
append_stat (GString * key, const gchar * path)
{
  GStatBuf st;

  if (g_stat (path, &st) != 0) {
    g_string_append (key, "|-");
    return;
  }
  g_string_append_printf (key, "|%lu|%lu|%lld|%lld.%09ld",
      (unsigned long) st.st_dev, (unsigned long) st.st_ino,
      (long long) st.st_size, (long long) st.st_mtim.tv_sec,
      (long) st.st_mtim.tv_nsec);
}

gchar *
fap_modelcache_key (const gchar * path)
{
  char *real = realpath (path, NULL);
  GString *key;
  gchar *sidecar;

  if (!real || !g_file_test (real, G_FILE_TEST_IS_REGULAR)) {
    free (real);
    return NULL;
  }
  key = g_string_new (real);
  append_stat (key, real);
  sidecar = g_strconcat (real, ".calibration.json", NULL);
  append_stat (key, sidecar);
  g_free (sidecar);
  free (real);
  return g_string_free (key, FALSE);
}

fap_status
fap_modelcache_acquire (const gchar * path, fap_model ** out,
    gboolean * shared)
{
  gchar *key = fap_modelcache_key (path);
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

guint
fap_modelcache_users (fap_model * model)
{
  guint n = 0;
  GList *l;

  g_mutex_lock (&cache_lock);
  for (l = cache; l; l = l->next) {
    Entry *e = l->data;
    if (e->model == model) {
      n = e->users;
      break;
    }
  }
  g_mutex_unlock (&cache_lock);
  return n;
}
