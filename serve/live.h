/* A camera's live view: Motion-JPEG over HTTP (GET /live/NAME.mjpg) from a
 * branch of the camera's tee,
 *
 *   out. ! [gate] queue leaky=downstream max-size-buffers=1
 *        ! [pace] videoscale ! capsfilter ! videoconvert ! jpegenc ! appsink
 *
 * The gate (a buffer probe) drops every frame while nobody watches (the
 * branch then costs one atomic load a frame; events pass, so the branch
 * follows flushes and EOS); the first client opens it, the last one to
 * leave closes it again. The pace probe lets at most FPS frames a second
 * through and sets the size: at most W wide, the camera's shape. All
 * clients of a camera share the one encoder: each JPEG becomes one
 * multipart part, made once (on the branch's thread) and handed to every
 * client. A client takes at most one part in the socket's hands and one
 * waiting; a newer frame replaces the waiting one, so a slow client only
 * sees fewer frames and never holds the camera, the encoder or the main
 * loop back; one that takes nothing for LIVE_STUCK_SECONDS is cut off.
 * The view outlives the camera's pipelines: after a restart its clients go
 * on with the new pipeline's frames. When the camera is removed (or the
 * service stops) every stream is ended cleanly: a closing boundary, then
 * the end of the chunked body. The view itself is main-loop only, but for
 * the frames the branch hands over (under its lock). */
#ifndef SERVE_LIVE_H
#define SERVE_LIVE_H

#include <gst/gst.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

/* Most clients of one camera at once (503 beyond): memory stays bounded. */
#define LIVE_MAX_CLIENTS 16
#define LIVE_BOUNDARY "faprompt-live-frame"
/* A client whose socket took nothing for this long is cut off. */
#define LIVE_STUCK_SECONDS 20

typedef struct LiveView LiveView;

/* A view of frames @width wide (height: the camera's aspect ratio) at most
 * @fps a second; nothing runs until a client comes. */
LiveView *live_view_new(const gchar *camera, guint width, guint fps);
/* Ends every stream (live_view_end) and drops the caller's reference. */
void live_view_close(LiveView *live);

/* Adds the branch to @bin, fed by @tee (a new pipeline of the camera):
 * FALSE with @why when an element is missing or will not link. */
gboolean live_view_build(LiveView *live, GstBin *bin, GstElement *tee, gchar **why);
/* The element factories the branch needs (NULL-terminated). */
extern const gchar *const live_view_elements[];

/* Takes @msg as a new client (status, headers, streaming): 503 when the
 * camera has LIVE_MAX_CLIENTS already. */
void live_view_serve(LiveView *live, SoupServerMessage *msg);
/* Ends every client's stream cleanly; new clients are refused (410). */
void live_view_end(LiveView *live);

guint live_view_clients(const LiveView *live);
/* JPEGs encoded by the branch, over every pipeline of the camera. */
guint64 live_view_frames(const LiveView *live);
/* "viewers" and "live-frames" members into an object being built. */
void live_view_add_json(const LiveView *live, JsonBuilder *b);

#endif
