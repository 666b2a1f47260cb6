/* See fap_mode.h. */
#include "fap_mode.h"

#include <gst/base/gstbasetransform.h>

#include "fap_log.h"

#define GST_CAT_DEFAULT fap_debug

/* an upstream that has not answered after this many frames is not live */
#define MAX_QUERIES 30

void
fap_mode_init (FapMode * m)
{
  g_mutex_init (&m->lock);
  m->decided = TRUE;            /* until start (): no query decides anything */
  m->non_blocking = FALSE;
  m->queries = 0;
}

void
fap_mode_clear (FapMode * m)
{
  g_mutex_clear (&m->lock);
}

void
fap_mode_reset (FapMode * m, GstFAPromptNonBlocking setting)
{
  g_mutex_lock (&m->lock);
  m->decided = setting != GST_FA_PROMPT_NON_BLOCKING_AUTO;
  m->queries = 0;
  m->non_blocking = setting == GST_FA_PROMPT_NON_BLOCKING_TRUE;
  g_mutex_unlock (&m->lock);
}

void
fap_mode_decide (FapMode * m, GstElement * element, gboolean live)
{
  gboolean now = FALSE;

  g_mutex_lock (&m->lock);
  if (!m->decided) {
    m->non_blocking = live;
    m->decided = now = TRUE;
  }
  g_mutex_unlock (&m->lock);
  if (now)
    GST_INFO_OBJECT (element, "non-blocking=auto: upstream is %s, running %s",
        live ? "live" : "not live", live ? "non-blocking" : "blocking");
}

/* TRUE when upstream answered the LATENCY query (*live says what) */
static gboolean
query_upstream_live (GstElement * element, gboolean * live)
{
  GstQuery *q = gst_query_new_latency ();
  gboolean answered;

  *live = FALSE;
  answered = gst_pad_peer_query (GST_BASE_TRANSFORM_SINK_PAD (element), q);
  if (answered)
    gst_query_parse_latency (q, live, NULL, NULL);
  gst_query_unref (q);
  return answered;
}

gboolean
fap_mode_settle (FapMode * m, GstElement * element)
{
  if (!fap_mode_decided (m)) {
    gboolean live;
    if (query_upstream_live (element, &live) || ++m->queries > MAX_QUERIES)
      fap_mode_decide (m, element, live);
  }
  return fap_mode_non_blocking (m);
}

gboolean
fap_mode_non_blocking (FapMode * m)
{
  gboolean nb;

  g_mutex_lock (&m->lock);
  nb = m->non_blocking;
  g_mutex_unlock (&m->lock);
  return nb;
}

gboolean
fap_mode_decided (FapMode * m)
{
  gboolean decided;

  g_mutex_lock (&m->lock);
  decided = m->decided;
  g_mutex_unlock (&m->lock);
  return decided;
}
