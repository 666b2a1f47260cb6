/* See fap_log.h. */
#include "fap_log.h"

GST_DEBUG_CATEGORY (fap_debug);
#define GST_CAT_DEFAULT fap_debug

void
fap_debug_init (void)
{
  static gsize done = 0;

  if (g_once_init_enter (&done)) {
    GST_DEBUG_CATEGORY_INIT (fap_debug, "faprompt", 0,
        "FAPrompt anomaly detection");
    g_once_init_leave (&done, 1);
  }
}

void
fap_core_log (fap_log_level level, const char *message, void *object)
{
  switch (level) {
    case FAP_LOG_ERROR:
    case FAP_LOG_WARNING:
      GST_WARNING_OBJECT (object, "core: %s", message);
      break;
    case FAP_LOG_INFO:
      GST_INFO_OBJECT (object, "core: %s", message);
      break;
    default:
      GST_DEBUG_OBJECT (object, "core: %s", message);
      break;
  }
}

void
fap_core_log_to (GstObject * object)
{
  fap_set_thread_log_callback (object ? fap_core_log : NULL, object);
}

gchar *
fap_core_failure (fap_status st)
{
  const char *msg = fap_last_error ();

  return g_strdup_printf ("%s: %s", fap_status_string (st),
      msg && *msg ? msg : "(no message)");
}
