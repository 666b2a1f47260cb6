/* The faprompt plugin: faprompt, fapromptpublish (with libmosquitto), the
 * RTP header extension. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <gst/gst.h>
#include "gstfaprompt.h"
#ifdef HAVE_PUBLISH
#include "gstfapromptpublish.h"
#endif
#include "gstfapromptrecord.h"
#ifdef HAVE_RTP_HDREXT
#include "gstrtphdrextfaprompt.h"
#endif

static gboolean
plugin_init (GstPlugin * plugin)
{
  gboolean ok = GST_ELEMENT_REGISTER (faprompt, plugin);
#ifdef HAVE_PUBLISH
  ok &= GST_ELEMENT_REGISTER (fapromptpublish, plugin);
#endif
  ok &= GST_ELEMENT_REGISTER (fapromptrecord, plugin);
#ifdef HAVE_RTP_HDREXT
  ok &= GST_ELEMENT_REGISTER (rtphdrextfaprompt, plugin);
#endif
  return ok;
}

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, faprompt,
    "FAPrompt zero-shot visual anomaly detection", plugin_init, VERSION,
    "MIT/X11", PACKAGE, ORIGIN)
