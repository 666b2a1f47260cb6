/* See fap_modelswap.h. Everything that is not a request, a take or a
 * took-over runs on the loader thread, in its own GMainContext: the loads,
 * the file monitors, the settle timer. */
#include "fap_modelswap.h"

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "fap_log.h"
#include "fap_modelcache.h"

#define GST_CAT_DEFAULT fap_debug

struct FapModelSwap {
  GstElement *element;          /* posted on; outlives the loader */
  const FapLoadSettings *settings;      /* the element's, as at start () */
  FapCuda *cuda;                /* the element's: its context */

  GMainContext *context;
  GMainLoop *loop;
  GThread *thread;

  GMutex lock;                  /* the fields up to "loader thread only" */
  gchar *request_path, *request_reason;
  guint64 request_seq, handled_seq;
  FapModelState *ready;         /* loaded, not yet taken */
  gint have_ready;              /* atomic: ready != NULL */
  gchar *watch_path;            /* what fap_model_swap_watch asked for */
  guint settle_ms;
  const gchar *running_path;    /* the model running now (interned) and */
  guint64 running_generation;   /* its generation, for failure messages */

  /* loader thread only */
  GFileMonitor *monitors[2];    /* the model, its calibration sidecar */
  gchar *watching;              /* the path the monitors watch */
  gchar *loaded_key;            /* fap_modelcache_key of the watched file
                                 * as last loaded (or first watched) */
  GSource *settle;              /* pending "quiet for settle_ms" check */
  gchar *settle_snapshot;       /* the files' key when it was armed */
};

static gpointer
loader_main (gpointer data)
{
  FapModelSwap *s = data;

  g_main_context_push_thread_default (s->context);
  g_main_loop_run (s->loop);
  /* the monitors and the timer belong to this context: dropped here */
  if (s->settle) {
    g_source_destroy (s->settle);
    g_source_unref (s->settle);
    s->settle = NULL;
  }
  for (guint i = 0; i < G_N_ELEMENTS (s->monitors); i++)
    g_clear_object (&s->monitors[i]);
  g_main_context_pop_thread_default (s->context);
  return NULL;
}

/* Runs @func on the loader thread at @priority; @notify (if any) frees
 * @data after it, or when the loader stops first. Never runs inline. */
static void
in_loader_at (FapModelSwap * s, gint priority, GSourceFunc func,
    gpointer data, GDestroyNotify notify)
{
  GSource *src = g_idle_source_new ();
  g_source_set_priority (src, priority);
  g_source_set_callback (src, func, data, notify);
  g_source_attach (src, s->context);
  g_source_unref (src);
}

static void
in_loader (FapModelSwap * s, GSourceFunc func, gpointer data,
    GDestroyNotify notify)
{
  in_loader_at (s, G_PRIORITY_DEFAULT_IDLE, func, data, notify);
}

FapModelSwap *
fap_model_swap_new (GstElement * element, const FapLoadSettings * settings,
    FapCuda * cuda, const FapModelState * running)
{
  FapModelSwap *s = g_new0 (FapModelSwap, 1);

  s->element = element;
  s->settings = settings;
  s->cuda = cuda;
  s->running_path = running->path;
  s->running_generation = running->generation;
  g_mutex_init (&s->lock);
  s->context = g_main_context_new ();
  s->loop = g_main_loop_new (s->context, FALSE);
  s->thread = g_thread_new ("faprompt-loader", loader_main, s);
  return s;
}

static gboolean
quit_loop (gpointer data)
{
  g_main_loop_quit (data);
  return G_SOURCE_REMOVE;
}

void
fap_model_swap_free (FapModelSwap * s)
{
  if (!s)
    return;
  /* from inside the loop: a quit before g_main_loop_run starts is lost;
   * after the load in progress, if any */
  /* before any load still waiting (those are dropped); a load in progress
   * finishes first */
  in_loader_at (s, G_PRIORITY_HIGH, quit_loop, s->loop, NULL);
  g_thread_join (s->thread);
  g_main_loop_unref (s->loop);
  /* sources not dispatched are destroyed here: their notify releases the
   * models swapped out */
  g_main_context_unref (s->context);
  fap_model_state_unref (s->ready);
  g_free (s->request_path);
  g_free (s->request_reason);
  g_free (s->watch_path);
  g_free (s->watching);
  g_free (s->loaded_key);
  g_free (s->settle_snapshot);
  g_mutex_clear (&s->lock);
  g_free (s);
}

static gboolean
nothing (gpointer data)
{
  return G_SOURCE_REMOVE;
}

/* releases @m on the loader thread (any thread, never waits) */
static void
dispose_in_loader (FapModelSwap * s, FapModelState * m)
{
  if (m)
    in_loader (s, nothing, m, (GDestroyNotify) fap_model_state_unref);
}

/* ---- what the application hears ----------------------------------------- */

#define HOW_TO_GET_A_MODEL \
  "Set the model-file property or $FAPROMPT_MODEL. Make a model from the " \
  "authors' checkpoint with models/faprompt-convert (see models/README.md), " \
  "or generate a random test model with: python3 models/faprompt-gen-random " \
  "--preset tiny -o model.safetensors"

/* a swap's short reason for each failure */
static const gchar *
failure_reason (FapLoadFailure failure)
{
  switch (failure) {
    case FAP_LOAD_NOT_FOUND:
      return "not found";
    case FAP_LOAD_BAD_FILE:
      return "the file did not load";
    default:
      return "the detector could not be built";
  }
}

void
fap_load_failure_post (GstElement * element, FapLoadFailure failure,
    const gchar * path, const FapLoadSettings * s, const gchar * error)
{
  GError *e;
  gchar *debug = NULL;

  switch (failure) {
    case FAP_LOAD_NOT_FOUND:
      e = g_error_new (GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND,
          "faprompt model file \"%s\" not found. " HOW_TO_GET_A_MODEL, path);
      debug = g_strdup_printf ("model-file=%s", path);
      break;
    case FAP_LOAD_BAD_FILE:
      e = g_error_new (GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ,
          "Could not load faprompt model \"%s\" (%s). " HOW_TO_GET_A_MODEL,
          path, error);
      debug = g_strdup_printf ("model-file=%s", path);
      break;
    default:
      e = g_error_new (GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS,
          "Could not create the faprompt detector for \"%s\" (backend %s, "
          "image-size %d): %s", path, fap_backend_name (s->options.backend),
          s->options.image_size, error);
      break;
  }
  gst_element_message_full (element, GST_MESSAGE_ERROR, e->domain, e->code,
      g_strdup (e->message), debug, __FILE__, GST_FUNCTION, __LINE__);
  g_error_free (e);
}

/* A load that failed, or a watched file that went away: the old model runs
 * on, the application hears which file and why (a warning, and a
 * "faprompt-model" message it can match on). Loader thread. */
static void
post_load_failed (FapModelSwap * s, const gchar * path, const gchar * reason,
    const gchar * error)
{
  const gchar *running;
  guint64 generation;

  g_mutex_lock (&s->lock);
  running = s->running_path;
  generation = s->running_generation;
  g_mutex_unlock (&s->lock);
  /* the structured message first: an application that sees the warning
   * finds it already posted */
  gst_element_post_message (s->element,
      gst_message_new_element (GST_OBJECT (s->element),
          gst_structure_new ("faprompt-model",
              "event", G_TYPE_STRING, "model-load-failed",
              "model-file", G_TYPE_STRING, path,
              "reason", G_TYPE_STRING, reason,
              "error", G_TYPE_STRING, error,
              "model-generation", G_TYPE_UINT64, generation, NULL)));
  GST_ELEMENT_WARNING (s->element, RESOURCE, OPEN_READ,
      ("faprompt kept its model: \"%s\" (%s) %s; still running \"%s\" "
          "(model generation %" G_GUINT64_FORMAT "): fix the file, then set "
          "model-file again or emit \"reload\"", path, reason, error,
          running ? running : "?", generation), (NULL));
}

void
fap_model_swap_took_over (FapModelSwap * s, FapModelState * m,
    FapModelState * old)
{
  fap_detector *d = m->detector;

  g_mutex_lock (&s->lock);
  s->running_path = m->path;
  s->running_generation = m->generation;
  g_mutex_unlock (&s->lock);
  GST_INFO_OBJECT (s->element, "model swapped: %s (generation %"
      G_GUINT64_FORMAT ") replaces %s (generation %" G_GUINT64_FORMAT ")",
      m->path, m->generation, old->path, old->generation);
  gst_element_post_message (s->element,
      gst_message_new_element (GST_OBJECT (s->element),
          gst_structure_new ("faprompt-model",
              "event", G_TYPE_STRING, "model-loaded",
              "model-file", G_TYPE_STRING, m->path,
              "model-generation", G_TYPE_UINT64, m->generation,
              "previous-generation", G_TYPE_UINT64, old->generation,
              "load-ms", G_TYPE_DOUBLE, m->load_ms,
              "backend", G_TYPE_STRING,
              fap_backend_name (fap_detector_backend (d)),
              "precision", G_TYPE_STRING,
              fap_precision_name (fap_detector_precision (d)),
              "image-size", G_TYPE_INT, fap_detector_image_size (d),
              "family", G_TYPE_STRING,
              fap_family_name (fap_model_config (m->model)->family), NULL)));
  dispose_in_loader (s, old);
}

/* ---- loading ------------------------------------------------------------ */

/* The same settings as the model loaded at start. Its generation is given
 * when it takes over (a loaded model replaced by a newer request before any
 * frame ran on it gets none). NULL with *error saying what is wrong. */
static FapModelState *
load (FapModelSwap * s, const gchar * path, gchar ** error)
{
  FapLoadFailure failure;
  gchar *err = NULL;
  FapModelState *m;

  m = fap_model_state_load (path, s->settings, s->cuda, s->element, &failure,
      &err);
  if (!m) {
    *error = g_strdup_printf ("%s: %s", failure_reason (failure), err);
    g_free (err);
    return NULL;
  }
  GST_INFO_OBJECT (s->element, "model %s loaded for a swap in %.1f ms", path,
      m->load_ms);
  return m;
}

static gboolean
do_load (gpointer data)
{
  FapModelSwap *s = data;
  FapModelState *m, *replaced = NULL;
  gchar *path, *reason, *error = NULL, *key;
  guint64 seq;

  g_mutex_lock (&s->lock);
  if (s->handled_seq == s->request_seq) {       /* superseded and done */
    g_mutex_unlock (&s->lock);
    return G_SOURCE_REMOVE;
  }
  path = g_strdup (s->request_path);
  reason = g_strdup (s->request_reason);
  seq = s->request_seq;
  g_mutex_unlock (&s->lock);

  key = fap_modelcache_key (path);      /* before: a change during the load
                                         * brings another event */
  m = load (s, path, &error);

  g_mutex_lock (&s->lock);
  s->handled_seq = seq;
  if (m) {
    replaced = s->ready;        /* loaded but never taken: the newer wins */
    s->ready = m;
    g_atomic_int_set (&s->have_ready, 1);
  }
  g_mutex_unlock (&s->lock);

  if (m && g_strcmp0 (path, s->watching) == 0) {
    g_free (s->loaded_key);
    s->loaded_key = key;
    key = NULL;
  }
  if (!m)
    post_load_failed (s, path, reason, error);
  fap_model_state_unref (replaced);
  g_free (key);
  g_free (error);
  g_free (reason);
  g_free (path);
  return G_SOURCE_REMOVE;
}

void
fap_model_swap_request (FapModelSwap * s, const gchar * path,
    const gchar * reason)
{
  g_mutex_lock (&s->lock);
  g_free (s->request_path);
  g_free (s->request_reason);
  s->request_path = g_strdup (path);
  s->request_reason = g_strdup (reason);
  s->request_seq++;
  g_mutex_unlock (&s->lock);
  in_loader (s, do_load, s, NULL);
}

FapModelState *
fap_model_swap_take (FapModelSwap * s)
{
  FapModelState *m;

  if (!g_atomic_int_get (&s->have_ready))
    return NULL;
  g_mutex_lock (&s->lock);
  m = s->ready;
  s->ready = NULL;
  g_atomic_int_set (&s->have_ready, 0);
  g_mutex_unlock (&s->lock);
  return m;
}


/* ---- watching ------------------------------------------------------------- */

static gchar *
sidecar_of (const gchar * path)
{
  return g_strconcat (path, ".calibration.json", NULL);
}

/* What the settle timer compares: the cache key (identity, size, mtime of
 * both files), or "-" while the model file is missing */
static gchar *
snapshot (const gchar * path)
{
  gchar *key = fap_modelcache_key (path);
  return key ? key : g_strdup ("-");
}

static void arm_settle (FapModelSwap * s);

static gboolean
on_settled (gpointer data)
{
  FapModelSwap *s = data;
  gchar *now = snapshot (s->watching);

  g_source_unref (s->settle);
  s->settle = NULL;
  if (g_strcmp0 (now, s->settle_snapshot) != 0) {
    /* still being written (an event may be rate-limited away) */
    g_free (now);
    arm_settle (s);
    return G_SOURCE_REMOVE;
  }
  if (g_str_equal (now, "-")) {
    post_load_failed (s, s->watching, "file changed",
        "the file is gone (deleted or moved away); the loaded model runs on "
        "and the file is loaded when it is back");
  } else if (g_strcmp0 (now, s->loaded_key) != 0) {
    fap_model_swap_request (s, s->watching, "file changed");
  }
  g_free (now);
  return G_SOURCE_REMOVE;
}

static void
arm_settle (FapModelSwap * s)
{
  guint ms;

  g_mutex_lock (&s->lock);
  ms = s->settle_ms;
  g_mutex_unlock (&s->lock);
  if (s->settle) {
    g_source_destroy (s->settle);
    g_source_unref (s->settle);
  }
  g_free (s->settle_snapshot);
  s->settle_snapshot = snapshot (s->watching);
  s->settle = g_timeout_source_new (ms);
  g_source_set_callback (s->settle, on_settled, s, NULL);
  g_source_attach (s->settle, s->context);
}

static void
on_file_changed (GFileMonitor * monitor, GFile * file, GFile * other,
    GFileMonitorEvent event, gpointer data)
{
  if (event == G_FILE_MONITOR_EVENT_PRE_UNMOUNT
      || event == G_FILE_MONITOR_EVENT_UNMOUNTED)
    return;
  arm_settle (data);
}

static gboolean
do_watch (gpointer data)
{
  FapModelSwap *s = data;
  gchar *path;

  g_mutex_lock (&s->lock);
  path = g_strdup (s->watch_path);
  g_mutex_unlock (&s->lock);
  if (g_strcmp0 (path, s->watching) == 0) {
    g_free (path);
    return G_SOURCE_REMOVE;
  }
  for (guint i = 0; i < G_N_ELEMENTS (s->monitors); i++)
    g_clear_object (&s->monitors[i]);
  if (s->settle) {
    g_source_destroy (s->settle);
    g_clear_pointer (&s->settle, g_source_unref);
  }
  g_free (s->watching);
  s->watching = path;
  g_clear_pointer (&s->loaded_key, g_free);
  if (path) {
    gchar *files[2] = { path, sidecar_of (path) };
    s->loaded_key = fap_modelcache_key (path);
    for (guint i = 0; i < 2; i++) {
      GFile *f = g_file_new_for_path (files[i]);
      GError *err = NULL;
      s->monitors[i] = g_file_monitor_file (f, G_FILE_MONITOR_NONE, NULL,
          &err);
      if (s->monitors[i])
        g_signal_connect (s->monitors[i], "changed",
            G_CALLBACK (on_file_changed), s);
      else
        post_load_failed (s, files[i], "watch-model", err->message);
      g_clear_error (&err);
      g_object_unref (f);
    }
    g_free (files[1]);
  }
  return G_SOURCE_REMOVE;
}

void
fap_model_swap_watch (FapModelSwap * s, const gchar * path, guint settle_ms)
{
  g_mutex_lock (&s->lock);
  g_free (s->watch_path);
  s->watch_path = g_strdup (path);
  s->settle_ms = settle_ms;
  g_mutex_unlock (&s->lock);
  in_loader (s, do_watch, s, NULL);
}
