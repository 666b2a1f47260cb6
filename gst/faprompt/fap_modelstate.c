/* See fap_modelstate.h. */
#include "fap_modelstate.h"

#include <string.h>

#include "fap_modelcache.h"

void
fap_load_settings_clear (FapLoadSettings * s)
{
  g_free (s->instance_id);
  memset (s, 0, sizeof *s);
}

/* The detector's sink, and the thread's during the load: forwarded to the
 * element's, the last error of the load kept (a load may run on the loader
 * thread while the streaming thread reports errors of its own). The state
 * outlives its detector, so the pointer stays valid for every message. */
static void
state_log (fap_log_level level, const char *message, void *user_data)
{
  FapModelState *m = user_data;

  if (level == FAP_LOG_ERROR && m->detector == NULL)
    g_strlcpy (m->load_error, message, sizeof m->load_error);
  if (m->log)
    m->log (level, message, m->log_user_data);
}

static gchar *
take_error (FapModelState * m, fap_status st)
{
  return g_strdup_printf ("%s: %s", fap_status_string (st),
      m->load_error[0] ? m->load_error : "(no message)");
}

FapModelState *
fap_model_state_load (const gchar * path, const FapLoadSettings * s,
    FapCuda * cuda, GstElement * element, FapLoadFailure * failure,
    gchar ** error, gchar ** warning)
{
  FapModelState *m;
  fap_detector_options o = s->options;
  gint64 t0 = g_get_monotonic_time ();
  const fap_config *cfg;
  fap_status st;

  *failure = FAP_LOAD_OK;
  *error = *warning = NULL;
  if (!g_file_test (path, G_FILE_TEST_EXISTS)) {
    *failure = FAP_LOAD_NOT_FOUND;
    *error = g_strdup ("no such file");
    return NULL;
  }

  m = g_atomic_rc_box_new0 (FapModelState);
  m->path = g_intern_string (path);
  m->log = s->options.log;
  m->log_user_data = s->options.log_user_data;
  o.log = state_log;
  o.log_user_data = m;
  fap_set_thread_log_callback (state_log, m);
  st = fap_modelcache_acquire (path, &m->model, &m->model_shared);
  if (st != FAP_OK) {
    *failure = FAP_LOAD_BAD_FILE;
    *error = take_error (m, st);
    goto fail;
  }

  if (cuda->context)
    m->cuda_context = gst_object_ref (cuda->context);
  fap_cuda_push (cuda);
  if (s->instance_id) {
    FapInstanceConfig ic = { (gchar *) path, s->options, s->batch_timeout_us,
      cuda->context
    };
    gchar *why = NULL;
    m->instance = fap_instance_acquire (s->instance_id, &ic, element,
        warning, &why);
    if (m->instance) {
      m->detector = fap_instance_detector (m->instance);
    } else {
      st = FAP_ERR_BACKEND;
      if (why && !m->load_error[0])
        g_strlcpy (m->load_error, why, sizeof m->load_error);
    }
    g_free (why);
  } else {
    st = fap_detector_new (m->model, &o, &m->detector);
  }
  fap_cuda_pop (cuda);
  if (st != FAP_OK) {
    *failure = FAP_LOAD_NO_DETECTOR;
    *error = take_error (m, st);
    goto fail;
  }
  fap_set_thread_log_callback (NULL, NULL);

  cfg = fap_model_config (m->model);
  m->image_threshold = cfg->image_threshold;
  m->pixel_threshold = cfg->pixel_threshold;
  m->load_ms = (g_get_monotonic_time () - t0) / 1000.0;
  return m;

fail:
  fap_set_thread_log_callback (NULL, NULL);
  fap_model_state_unref (m);
  return NULL;
}

FapModelState *
fap_model_state_ref (FapModelState * m)
{
  return m ? g_atomic_rc_box_acquire (m) : NULL;
}

static void
model_state_clear (gpointer data)
{
  FapModelState *m = data;

  if (m->instance) {
    fap_instance_release (m->instance);
  } else if (m->detector) {
    /* its device memory belongs to that context */
    FapCuda cuda = { m->cuda_context, NULL, };
    fap_cuda_push (&cuda);
    fap_detector_free (m->detector);
    fap_cuda_pop (&cuda);
  }
  if (m->cuda_context)
    gst_object_unref (m->cuda_context);
  fap_modelcache_release (m->model);
}

void
fap_model_state_unref (FapModelState * m)
{
  if (m)
    g_atomic_rc_box_release_full (m, model_state_clear);
}
