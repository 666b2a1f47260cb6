/* The faprompt plugin: one element, faprompt. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <gst/gst.h>
#include "gstfaprompt.h"

static gboolean
plugin_init (GstPlugin * plugin)
{
  return GST_ELEMENT_REGISTER (faprompt, plugin);
}

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, faprompt,
    "FAPrompt zero-shot visual anomaly detection", plugin_init, VERSION,
    "MIT/X11", PACKAGE, ORIGIN)
