/* What an element under test (GstHarness) hands out besides its buffers, for
 * the element tests: a bus of the test's own to read its messages from, the
 * GstFAPromptMetas of a buffer in order, and the warnings it posted. */
#ifndef FAP_TEST_GST_ELEMENT_OUTPUT_H
#define FAP_TEST_GST_ELEMENT_OUTPUT_H

#include <gst/check/gstharness.h>
#include <gst/gst.h>

#include "gstfapromptmeta.h"

/* A bus for the harness's element (a harness gives it none). */
static inline GstBus *attach_bus(GstHarness *hh) {
  GstBus *bus = gst_bus_new();
  gst_element_set_bus(hh->element, bus);
  return bus;
}

static inline void detach_bus(GstHarness *hh, GstBus *bus) {
  gst_element_set_bus(hh->element, NULL);
  gst_object_unref(bus);
}

/* The metas of a buffer in order: the count, the first max of them in out. */
static inline guint metas_of(GstBuffer *b, GstFAPromptMeta **out, guint max) {
  gpointer state = NULL;
  GstMeta *m;
  guint n = 0;
  while ((m = gst_buffer_iterate_meta_filtered(b, &state, GST_FAPROMPT_META_API_TYPE)))
    if (n < max)
      out[n++] = (GstFAPromptMeta *)m;
  return n;
}

/* The WARNING messages' texts, a line each, popped from bus (g_free). */
static inline gchar *pop_warnings(GstBus *bus) {
  GString *all = g_string_new(NULL);
  GstMessage *msg;
  while ((msg = gst_bus_pop_filtered(bus, GST_MESSAGE_WARNING))) {
    GError *err = NULL;
    gst_message_parse_warning(msg, &err, NULL);
    g_string_append_printf(all, "%s\n", err->message);
    g_error_free(err);
    gst_message_unref(msg);
  }
  return g_string_free(all, FALSE);
}

#endif
