/* See fap_maskwatch.h. */
#include "fap_maskwatch.h"

#include <gio/gio.h>
#include <glib/gstdio.h>

struct FapMaskWatch
{
  gchar *path;
  guint settle_ms;
  FapMaskLoaded loaded;
  gpointer user_data;
  GMainContext *context;
  GMainLoop *loop;
  GThread *thread;
  /* watch thread only */
  GFileMonitor *monitor;
  GSource *settle;
  gchar *armed, *seen;          /* the file's identity when the timer was
                                 * armed, and as last loaded */
};

/* size, mtime and inode: what tells a changed file ("-": missing) */
static gchar *
identity (const gchar * path)
{
  GStatBuf st;
  if (g_stat (path, &st) != 0)
    return g_strdup ("-");
  return g_strdup_printf ("%" G_GINT64_FORMAT " %" G_GINT64_FORMAT " %"
      G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, (gint64) st.st_size,
      (gint64) st.st_mtime, (guint64) st.st_ino, (guint64) st.st_ctime);
}

static void arm (FapMaskWatch * w);

static gboolean
on_settled (gpointer data)
{
  FapMaskWatch *w = data;
  gchar *now = identity (w->path), *error = NULL;
  FapMask *mask;

  g_source_unref (w->settle);
  w->settle = NULL;
  if (g_strcmp0 (now, w->armed) != 0) {
    g_free (now);               /* still being written */
    arm (w);
    return G_SOURCE_REMOVE;
  }
  if (g_strcmp0 (now, w->seen) == 0 || g_str_equal (now, "-")) {
    g_free (now);               /* back as it was, or gone (kept until back) */
    return G_SOURCE_REMOVE;
  }
  g_free (w->seen);
  w->seen = now;
  mask = fap_mask_load (w->path, &error);
  w->loaded (mask, error, w->user_data);
  g_free (error);
  return G_SOURCE_REMOVE;
}

static void
arm (FapMaskWatch * w)
{
  if (w->settle) {
    g_source_destroy (w->settle);
    g_source_unref (w->settle);
  }
  g_free (w->armed);
  w->armed = identity (w->path);
  w->settle = g_timeout_source_new (w->settle_ms);
  g_source_set_callback (w->settle, on_settled, w, NULL);
  g_source_attach (w->settle, w->context);
}

static void
on_changed (GFileMonitor * monitor, GFile * file, GFile * other,
    GFileMonitorEvent event, gpointer data)
{
  if (event != G_FILE_MONITOR_EVENT_PRE_UNMOUNT
      && event != G_FILE_MONITOR_EVENT_UNMOUNTED)
    arm (data);
}

static gpointer
watch_main (gpointer data)
{
  FapMaskWatch *w = data;
  GFile *f;

  g_main_context_push_thread_default (w->context);
  f = g_file_new_for_path (w->path);
  w->monitor = g_file_monitor_file (f, G_FILE_MONITOR_NONE, NULL, NULL);
  g_object_unref (f);
  if (w->monitor)
    g_signal_connect (w->monitor, "changed", G_CALLBACK (on_changed), w);
  g_main_loop_run (w->loop);
  if (w->settle) {
    g_source_destroy (w->settle);
    g_clear_pointer (&w->settle, g_source_unref);
  }
  g_clear_object (&w->monitor);
  g_main_context_pop_thread_default (w->context);
  return NULL;
}

FapMaskWatch *
fap_mask_watch_new (const gchar * path, guint settle_ms, FapMaskLoaded loaded,
    gpointer user_data)
{
  FapMaskWatch *w = g_new0 (FapMaskWatch, 1);

  w->path = g_strdup (path);
  w->settle_ms = settle_ms;
  w->loaded = loaded;
  w->user_data = user_data;
  w->seen = identity (path);    /* the version the element loaded itself */
  w->context = g_main_context_new ();
  w->loop = g_main_loop_new (w->context, FALSE);
  w->thread = g_thread_new ("faprompt-mask", watch_main, w);
  return w;
}

static gboolean
quit (gpointer loop)
{
  g_main_loop_quit (loop);
  return G_SOURCE_REMOVE;
}

void
fap_mask_watch_free (FapMaskWatch * w)
{
  if (!w)
    return;
  /* a source of the watch's context: run by its loop, even one that has
   * not started yet */
  GSource *stop = g_idle_source_new ();
  g_source_set_callback (stop, quit, w->loop, NULL);
  g_source_attach (stop, w->context);
  g_source_unref (stop);
  g_thread_join (w->thread);
  g_main_loop_unref (w->loop);
  g_main_context_unref (w->context);
  g_free (w->armed);
  g_free (w->seen);
  g_free (w->path);
  g_free (w);
}
