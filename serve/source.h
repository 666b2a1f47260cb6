/* A camera's source: the URI forms faprompt-serve takes, their checks, and
 * the elements that turn each into raw video.
 *   rtsp://HOST[:PORT]/PATH (rtsps, rtspt too)  an RTSP camera
 *   http://HOST[:PORT]/PATH (https too)         MJPEG over HTTP
 *   file:///PATH                                 a video file, played in a loop
 *   v4l2:///dev/videoN                           a V4L2 device
 *   test://PATTERN[?width=W&height=H&framerate=F] a videotestsrc pattern
 *                                                (live; 320x240 at 15/s) */
#ifndef SERVE_SOURCE_H
#define SERVE_SOURCE_H

#include <gst/gst.h>

typedef enum { SOURCE_RTSP, SOURCE_HTTP, SOURCE_FILE, SOURCE_V4L2, SOURCE_TEST } SourceKind;

typedef struct {
  SourceKind kind;
  gchar *uri;      /* as written */
  gchar *location; /* rtsp/http: the URI; file: the path; v4l2: the device; test: the pattern */
  guint width, height, framerate; /* test only */
} SourceSpec;

/* Parses @text into @spec; FALSE with *why (g_free) saying what is wrong.
 * A file must exist and be readable; a test pattern must be one of
 * videotestsrc's (gst_init first). Network sources are not contacted. */
gboolean source_spec_parse(const gchar *text, SourceSpec *spec, gchar **why);
void source_spec_copy(SourceSpec *dst, const SourceSpec *src);
void source_spec_clear(SourceSpec *spec);

/* The URI with any password replaced (what the API and logs show; g_free). */
gchar *source_spec_display(const SourceSpec *spec);

/* A file source starts again at its end instead of ending. */
gboolean source_spec_loops(const SourceSpec *spec);
/* The source sets the pace itself (a camera, a live test pattern); a file
 * does not, and is paced to the clock (camera.c). */
gboolean source_spec_live(const SourceSpec *spec);

/* Adds the source elements for @spec to @bin and links their raw video to
 * @next (now, or when a decoder exposes it). Streams other than the first
 * video end in a fakesink. FALSE with *why when an element is missing. */
gboolean source_build(const SourceSpec *spec, GstBin *bin, GstElement *next, gchar **why);

/* The GStreamer elements a source of @kind needs (NULL-terminated), for the
 * check at start. */
const gchar *const *source_elements(SourceKind kind);

#endif
