/* See source.h. */
#include "source.h"

#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#define TEST_WIDTH 320
#define TEST_HEIGHT 240
#define TEST_FRAMERATE 15
#define RTSP_LATENCY_MS 200

static const gchar *const uri_elements[] = {"uridecodebin", NULL};
static const gchar *const file_elements[] = {"uridecodebin", "clocksync", NULL};
static const gchar *const v4l2_elements[] = {"v4l2src", "decodebin", NULL};
static const gchar *const http_elements[] = {"souphttpsrc", "multipartdemux", "jpegdec", NULL};
static const gchar *const test_elements[] = {"videotestsrc", "capsfilter", NULL};

const gchar *const *source_elements(SourceKind kind) {
  switch (kind) {
  case SOURCE_V4L2:
    return v4l2_elements;
  case SOURCE_HTTP:
    return http_elements;
  case SOURCE_TEST:
    return test_elements;
  case SOURCE_FILE:
    return file_elements;
  default:
    return uri_elements;
  }
}

void source_spec_clear(SourceSpec *spec) {
  g_clear_pointer(&spec->uri, g_free);
  g_clear_pointer(&spec->location, g_free);
}

void source_spec_copy(SourceSpec *dst, const SourceSpec *src) {
  *dst = *src;
  dst->uri = g_strdup(src->uri);
  dst->location = g_strdup(src->location);
}

gboolean source_spec_loops(const SourceSpec *spec) { return spec->kind == SOURCE_FILE; }

gboolean source_spec_live(const SourceSpec *spec) { return spec->kind != SOURCE_FILE; }

gchar *source_spec_display(const SourceSpec *spec) {
  if (spec->kind == SOURCE_RTSP || spec->kind == SOURCE_HTTP) {
    GUri *u = g_uri_parse(spec->uri, G_URI_FLAGS_HAS_PASSWORD | G_URI_FLAGS_ENCODED, NULL);
    if (u) {
      gchar *s = g_uri_to_string_partial(u, G_URI_HIDE_PASSWORD);
      g_uri_unref(u);
      return s;
    }
  }
  return g_strdup(spec->uri);
}

/* The pattern names videotestsrc knows, for the message of a wrong one. */
static gboolean test_pattern_known(const gchar *nick, gchar **why) {
  GstElement *probe = gst_element_factory_make("videotestsrc", NULL);
  if (!probe) {
    *why = g_strdup("test:// needs the videotestsrc element (Debian: gstreamer1.0-plugins-base)");
    return FALSE;
  }
  GParamSpec *ps = g_object_class_find_property(G_OBJECT_GET_CLASS(probe), "pattern");
  GEnumClass *ec = G_PARAM_SPEC_ENUM(ps)->enum_class;
  gboolean ok = g_enum_get_value_by_nick(ec, nick) != NULL;
  if (!ok) {
    GString *names = g_string_new(NULL);
    for (guint i = 0; i < ec->n_values; i++)
      g_string_append_printf(names, "%s%s", i ? ", " : "", ec->values[i].value_nick);
    *why = g_strdup_printf("unknown test pattern \"%s\" (videotestsrc has: %s)", nick, names->str);
    g_string_free(names, TRUE);
  }
  gst_object_unref(probe);
  return ok;
}

static gboolean parse_dimension(const gchar *key, const gchar *value, guint max, guint *out,
                                gchar **why) {
  guint64 v;
  if (!g_ascii_string_to_unsigned(value, 10, 1, max, &v, NULL)) {
    *why = g_strdup_printf("test:// %s \"%s\" is not a whole number from 1 to %u", key, value, max);
    return FALSE;
  }
  *out = (guint)v;
  return TRUE;
}

static gboolean parse_test(const gchar *text, SourceSpec *spec, gchar **why) {
  const gchar *rest = text + strlen("test://");
  const gchar *q = strchr(rest, '?');
  gchar *pattern = q ? g_strndup(rest, q - rest) : g_strdup(rest);
  gboolean ok = TRUE;

  spec->width = TEST_WIDTH;
  spec->height = TEST_HEIGHT;
  spec->framerate = TEST_FRAMERATE;
  if (!*pattern) {
    *why = g_strdup("test:// needs a pattern name, e.g. test://ball");
    g_free(pattern);
    return FALSE;
  }
  if (q) {
    GError *err = NULL;
    GHashTable *params = g_uri_parse_params(q + 1, -1, "&", G_URI_PARAMS_NONE, &err);
    if (!params) {
      *why = g_strdup_printf("test:// parameters: %s", err->message);
      g_error_free(err);
      g_free(pattern);
      return FALSE;
    }
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, params);
    while (ok && g_hash_table_iter_next(&it, &k, &v)) {
      if (!strcmp(k, "width"))
        ok = parse_dimension(k, v, 8192, &spec->width, why);
      else if (!strcmp(k, "height"))
        ok = parse_dimension(k, v, 8192, &spec->height, why);
      else if (!strcmp(k, "framerate"))
        ok = parse_dimension(k, v, 240, &spec->framerate, why);
      else {
        *why = g_strdup_printf("test:// takes width, height and framerate, not \"%s\"",
                               (const gchar *)k);
        ok = FALSE;
      }
    }
    g_hash_table_unref(params);
  }
  if (ok)
    ok = test_pattern_known(pattern, why);
  if (ok)
    spec->location = pattern;
  else
    g_free(pattern);
  return ok;
}

static gboolean parse_file(const gchar *text, SourceSpec *spec, gchar **why) {
  GError *err = NULL;
  gchar *path = g_filename_from_uri(text, NULL, &err);
  if (!path) {
    *why = g_strdup_printf("not a file URI (file:///absolute/path): %s", err->message);
    g_error_free(err);
    return FALSE;
  }
  if (!g_file_test(path, G_FILE_TEST_IS_REGULAR) || g_access(path, R_OK) != 0) {
    *why = g_strdup_printf("%s: not a readable file", path);
    g_free(path);
    return FALSE;
  }
  spec->location = path;
  return TRUE;
}

static gboolean parse_network(const gchar *text, SourceSpec *spec, gchar **why) {
  GError *err = NULL;
  GUri *u = g_uri_parse(text, G_URI_FLAGS_HAS_PASSWORD | G_URI_FLAGS_ENCODED, &err);
  if (!u) {
    *why = g_strdup_printf("not a valid URI: %s", err->message);
    g_error_free(err);
    return FALSE;
  }
  gboolean ok = g_uri_get_host(u) && *g_uri_get_host(u);
  if (!ok)
    *why = g_strdup_printf("%s has no host", g_uri_get_scheme(u));
  else
    spec->location = g_strdup(text);
  g_uri_unref(u);
  return ok;
}

static gboolean parse_v4l2(const gchar *text, SourceSpec *spec, gchar **why) {
  const gchar *dev = text + strlen("v4l2://");
  if (dev[0] != '/' || !dev[1]) {
    *why = g_strdup("v4l2:// needs the device's absolute path, e.g. v4l2:///dev/video0");
    return FALSE;
  }
  /* the device is opened at start: a camera plugged in later comes up then */
  spec->location = g_strdup(dev);
  return TRUE;
}

gboolean source_spec_parse(const gchar *text, SourceSpec *spec, gchar **why) {
  static const struct {
    const gchar *prefix;
    SourceKind kind;
  } forms[] = {
      {"rtsp://", SOURCE_RTSP}, {"rtsps://", SOURCE_RTSP}, {"rtspt://", SOURCE_RTSP},
      {"http://", SOURCE_HTTP}, {"https://", SOURCE_HTTP}, {"file://", SOURCE_FILE},
      {"v4l2://", SOURCE_V4L2}, {"test://", SOURCE_TEST},
  };
  memset(spec, 0, sizeof *spec);
  for (guint i = 0; i < G_N_ELEMENTS(forms); i++) {
    if (g_ascii_strncasecmp(text, forms[i].prefix, strlen(forms[i].prefix)))
      continue;
    gboolean ok;
    spec->kind = forms[i].kind;
    switch (spec->kind) {
    case SOURCE_TEST:
      ok = parse_test(text, spec, why);
      break;
    case SOURCE_FILE:
      ok = parse_file(text, spec, why);
      break;
    case SOURCE_V4L2:
      ok = parse_v4l2(text, spec, why);
      break;
    default:
      ok = parse_network(text, spec, why);
    }
    if (!ok) {
      source_spec_clear(spec);
      return FALSE;
    }
    spec->uri = g_strdup(text);
    return TRUE;
  }
  *why = g_strdup_printf("\"%s\" is not a source faprompt-serve takes (rtsp://, http://, "
                         "file://, v4l2:///dev/videoN, test://PATTERN)",
                         text);
  return FALSE;
}

/* ---- the elements ----------------------------------------------------------- */

static void set_if_present(gpointer obj, const gchar *prop, const gchar *value) {
  if (g_object_class_find_property(G_OBJECT_GET_CLASS(obj), prop))
    gst_util_set_object_arg(G_OBJECT(obj), prop, value);
}

/* uridecodebin made its source element: RTSP with a short jitter buffer. */
static void on_source_setup(GstElement *uridecodebin, GstElement *src, gpointer data) {
  const SourceSpec *spec = data;
  if (spec->kind == SOURCE_RTSP) {
    gchar *latency = g_strdup_printf("%d", RTSP_LATENCY_MS);
    set_if_present(src, "latency", latency);
    g_free(latency);
  }
}

/* Whether what @pad carries can go into @sink (raw video into videoconvert,
 * JPEG into jpegdec). */
static gboolean pad_fits(GstPad *pad, GstPad *sink) {
  GstCaps *caps = gst_pad_get_current_caps(pad);
  if (!caps)
    caps = gst_pad_query_caps(pad, NULL);
  GstCaps *accepted = gst_pad_query_caps(sink, NULL);
  gboolean fits = caps && accepted && !gst_caps_is_empty(caps) &&
                  gst_caps_can_intersect(caps, accepted);
  if (caps)
    gst_caps_unref(caps);
  if (accepted)
    gst_caps_unref(accepted);
  return fits;
}

/* A demuxer or decoder exposed a stream (its streaming thread): the first
 * that fits goes on to @data's sink pad, anything else into a fakesink of
 * its own, so an audio track never stops the pipeline as not-linked. */
static void on_pad_added(GstElement *decoder, GstPad *pad, gpointer data) {
  GstElement *next = data;
  GstPad *sink = gst_element_get_static_pad(next, "sink");
  if (!gst_pad_is_linked(sink) && pad_fits(pad, sink) &&
      gst_pad_link(pad, sink) == GST_PAD_LINK_OK) {
    gst_object_unref(sink);
    return;
  }
  gst_object_unref(sink);
  GstElement *drop = gst_element_factory_make("fakesink", NULL);
  GstObject *bin = gst_object_get_parent(GST_OBJECT(decoder));
  if (!drop || !bin) {
    if (drop)
      gst_object_unref(drop);
  } else {
    g_object_set(drop, "sync", FALSE, "async", FALSE, NULL);
    gst_bin_add(GST_BIN(bin), drop);
    GstPad *dsink = gst_element_get_static_pad(drop, "sink");
    gst_pad_link(pad, dsink);
    gst_object_unref(dsink);
    gst_element_sync_state_with_parent(drop);
  }
  if (bin)
    gst_object_unref(bin);
}

static GstElement *make(const gchar *factory, gchar **why) {
  GstElement *e = gst_element_factory_make(factory, NULL);
  if (!e)
    *why = g_strdup_printf("the GStreamer element %s is missing", factory);
  return e;
}

gboolean source_build(const SourceSpec *spec, GstBin *bin, GstElement *next, gchar **why) {
  if (spec->kind == SOURCE_TEST) {
    GstElement *src = make("videotestsrc", why), *filter = src ? make("capsfilter", why) : NULL;
    if (!filter) {
      if (src)
        gst_object_unref(src);
      return FALSE;
    }
    g_object_set(src, "is-live", TRUE, NULL);
    gst_util_set_object_arg(G_OBJECT(src), "pattern", spec->location);
    GstCaps *caps = gst_caps_new_simple("video/x-raw", "width", G_TYPE_INT, (gint)spec->width,
                                        "height", G_TYPE_INT, (gint)spec->height, "framerate",
                                        GST_TYPE_FRACTION, (gint)spec->framerate, 1, NULL);
    g_object_set(filter, "caps", caps, NULL);
    gst_caps_unref(caps);
    gst_bin_add_many(bin, src, filter, NULL);
    if (!gst_element_link_many(src, filter, next, NULL)) {
      *why = g_strdup("could not link videotestsrc to the detector");
      return FALSE;
    }
    return TRUE;
  }

  GstElement *decoder;
  if (spec->kind == SOURCE_HTTP) {
    /* souphttpsrc ! multipartdemux ! jpegdec, not uridecodebin or decodebin:
     * those buffer a network stream (queue2, multiqueue) and expose it only
     * once full or played on by the application, which a live camera
     * stream never does for seconds; typefinding guesses at the parts */
    GstElement *src = make("souphttpsrc", why);
    GstElement *demux = src ? make("multipartdemux", why) : NULL;
    GstElement *jpeg = demux ? make("jpegdec", why) : NULL;
    if (!jpeg) {
      if (src)
        gst_object_unref(src);
      if (demux)
        gst_object_unref(demux);
      return FALSE;
    }
    g_object_set(src, "location", spec->location, "is-live", TRUE, "do-timestamp", TRUE, NULL);
    gst_bin_add_many(bin, src, demux, jpeg, NULL);
    if (!gst_element_link(src, demux) || !gst_element_link(jpeg, next)) {
      *why = g_strdup("could not link souphttpsrc, multipartdemux and jpegdec");
      return FALSE;
    }
    g_signal_connect(demux, "pad-added", G_CALLBACK(on_pad_added), jpeg);
    return TRUE;
  }
  if (spec->kind == SOURCE_V4L2) {
    GstElement *src = make("v4l2src", why);
    if (!src)
      return FALSE;
    decoder = make("decodebin", why);
    if (!decoder) {
      gst_object_unref(src);
      return FALSE;
    }
    g_object_set(src, "device", spec->location, NULL);
    gst_bin_add_many(bin, src, decoder, NULL);
    if (!gst_element_link(src, decoder)) {
      *why = g_strdup("could not link v4l2src to decodebin");
      return FALSE;
    }
  } else {
    decoder = make("uridecodebin", why);
    if (!decoder)
      return FALSE;
    gchar *uri = spec->kind == SOURCE_FILE ? g_filename_to_uri(spec->location, NULL, NULL)
                                           : g_strdup(spec->location);
    g_object_set(decoder, "uri", uri, NULL);
    g_free(uri);
    /* spec outlives the pipeline (the camera owns both, and drops the
     * pipeline first) */
    g_signal_connect(decoder, "source-setup", G_CALLBACK(on_source_setup), (gpointer)spec);
    gst_bin_add(bin, decoder);
  }
  g_signal_connect(decoder, "pad-added", G_CALLBACK(on_pad_added), next);
  return TRUE;
}
