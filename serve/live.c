/* See live.h. */
#include "live.h"

#include <gst/app/gstappsink.h>
#include <stdatomic.h>
#include <string.h>

const gchar *const live_view_elements[] = {"queue",   "videoscale", "capsfilter", "videoconvert",
                                           "jpegenc", "appsink",    NULL};

typedef struct Client Client;

struct LiveView {
  gatomicrefcount refs;
  gchar *camera;
  guint width, fps;
  atomic_uint_fast64_t frames; /* JPEGs encoded, every pipeline */
  atomic_bool open;            /* someone watches: the gate lets frames in */

  /* shared with the branch's streaming thread */
  GMutex lock;
  GBytes *latest; /* the newest part not yet handed out */
  GSource *wake;  /* dispatches deliver() on the main loop; NULL once closed */

  /* main loop only */
  GList *clients; /* Client * */
  guint n_clients;
  gboolean ended; /* the camera is gone: no new client */
};

/* One HTTP client: at most one part written by libsoup (in_flight) and one
 * waiting (pending). */
struct Client {
  LiveView *live;
  SoupServerMessage *msg;
  GBytes *pending;
  gboolean in_flight;
  gint64 in_flight_since_us;
  gboolean ending; /* the closing boundary is queued: nothing more */
  gulong wrote_id, finished_id;
};

typedef struct {
  GSource base;
  LiveView *live;
} WakeSource;

static LiveView *live_ref(LiveView *live) {
  g_atomic_ref_count_inc(&live->refs);
  return live;
}

/* The last reference may go on any thread (a pipeline's appsink is freed
 * by the reaper); by then the main-loop side is empty. */
static void live_unref(gpointer data) {
  LiveView *live = data;
  if (!g_atomic_ref_count_dec(&live->refs))
    return;
  g_assert(!live->clients && !live->wake);
  if (live->latest)
    g_bytes_unref(live->latest);
  g_mutex_clear(&live->lock);
  g_free(live->camera);
  g_free(live);
}

/* ---- the branch's thread ------------------------------------------------------ */

/* One JPEG from the encoder becomes one multipart part, made once for every
 * client; an older part nobody took yet is dropped. */
static GstFlowReturn new_sample(GstAppSink *sink, gpointer data) {
  LiveView *live = data;
  GstSample *sample = gst_app_sink_pull_sample(sink);
  if (!sample)
    return GST_FLOW_OK;
  GstBuffer *buf = gst_sample_get_buffer(sample);
  GstMapInfo map;
  if (buf && gst_buffer_map(buf, &map, GST_MAP_READ)) {
    gchar head[128];
    gint n = g_snprintf(head, sizeof head,
                        "--" LIVE_BOUNDARY "\r\nContent-Type: image/jpeg\r\n"
                        "Content-Length: %" G_GSIZE_FORMAT "\r\n\r\n",
                        map.size);
    gsize total = (gsize)n + map.size + 2;
    guint8 *part = g_malloc(total);
    memcpy(part, head, (gsize)n);
    memcpy(part + n, map.data, map.size);
    memcpy(part + n + map.size, "\r\n", 2);
    gst_buffer_unmap(buf, &map);
    GBytes *bytes = g_bytes_new_take(part, total);
    atomic_fetch_add_explicit(&live->frames, 1, memory_order_relaxed);
    g_mutex_lock(&live->lock);
    GBytes *old = live->latest;
    live->latest = bytes;
    if (live->wake)
      g_source_set_ready_time(live->wake, 0);
    g_mutex_unlock(&live->lock);
    if (old)
      g_bytes_unref(old);
  }
  gst_sample_unref(sample);
  return GST_FLOW_OK;
}

/* What the branch's scaler is told (its sink pad's probe, on the branch's
 * streaming thread): every caps, the size to scale to (the view's width or
 * the camera's, whichever is smaller, and the height that keeps the
 * picture's shape); every frame, whether it is due (at most fps a second,
 * by the monotonic clock: a frame's timestamps may jump at a restart or a
 * file's loop). */
typedef struct {
  GstElement *capsfilter; /* in the same bin: outlives the probe */
  guint width;
  gint64 period_us, last_us;
} Pacer;

static GstCaps *scaled_caps(const GstCaps *in, guint most) {
  GstStructure *s = gst_caps_get_structure(in, 0);
  gint w = 0, h = 0, n = 1, d = 1;
  if (!gst_structure_get_int(s, "width", &w) || !gst_structure_get_int(s, "height", &h) || w <= 0 ||
      h <= 0)
    return NULL;
  if (!gst_structure_get_fraction(s, "pixel-aspect-ratio", &n, &d) || n <= 0 || d <= 0)
    n = d = 1;
  gint ow = MIN((gint)most, w) & ~1;
  gint oh = (gint)((gdouble)ow * h * d / ((gdouble)w * n) + 0.5) & ~1;
  return gst_caps_new_simple("video/x-raw", "width", G_TYPE_INT, MAX(ow, 2), "height", G_TYPE_INT,
                             MAX(oh, 2), "pixel-aspect-ratio", GST_TYPE_FRACTION, 1, 1, NULL);
}

static GstPadProbeReturn pace(GstPad *pad, GstPadProbeInfo *info, gpointer data) {
  Pacer *p = data;
  if (info->type & GST_PAD_PROBE_TYPE_BUFFER) {
    gint64 now = g_get_monotonic_time();
    /* a tenth of a period's slack: a camera's jitter costs no frame */
    if (p->last_us && now - p->last_us < p->period_us * 9 / 10)
      return GST_PAD_PROBE_DROP;
    p->last_us = now;
    return GST_PAD_PROBE_OK;
  }
  GstEvent *event = GST_PAD_PROBE_INFO_EVENT(info);
  if (GST_EVENT_TYPE(event) == GST_EVENT_CAPS) {
    GstCaps *in;
    gst_event_parse_caps(event, &in);
    GstCaps *out = scaled_caps(in, p->width);
    if (out) {
      g_object_set(p->capsfilter, "caps", out, NULL);
      gst_caps_unref(out);
    }
  }
  return GST_PAD_PROBE_OK;
}

/* The gate at the branch's entry: while nobody watches, every frame is
 * dropped there (one atomic load a frame); events pass always, so the
 * branch follows the pipeline's flushes and EOS like any other (the
 * pipeline's EOS waits for every sink's). */
static GstPadProbeReturn gate(GstPad *pad, GstPadProbeInfo *info, gpointer data) {
  LiveView *live = data;
  return atomic_load_explicit(&live->open, memory_order_relaxed) ? GST_PAD_PROBE_OK
                                                                 : GST_PAD_PROBE_DROP;
}

/* A seek sent to the pipeline goes to every sink (a file camera seeks back
 * to its start at its end): the camera's own sink carries it to the source,
 * this branch's would be a second one. */
static GstPadProbeReturn no_seek(GstPad *pad, GstPadProbeInfo *info, gpointer data) {
  return GST_EVENT_TYPE(GST_PAD_PROBE_INFO_EVENT(info)) == GST_EVENT_SEEK ? GST_PAD_PROBE_DROP
                                                                          : GST_PAD_PROBE_OK;
}

/* ---- clients (main loop) ------------------------------------------------------- */

static void set_open(LiveView *live, gboolean open) {
  atomic_store_explicit(&live->open, open, memory_order_relaxed);
}

static void client_write(Client *c, GBytes *part) {
  soup_message_body_append_bytes(soup_server_message_get_response_body(c->msg), part);
  c->in_flight = TRUE;
  c->in_flight_since_us = g_get_monotonic_time();
  soup_server_message_unpause(c->msg);
}

/* A new frame: written at once if the socket took the previous one, else
 * it replaces the one waiting. A client whose socket has taken nothing for
 * LIVE_STUCK_SECONDS is cut off (shut down: libsoup's write fails and the
 * response finishes), so one that never reads again does not keep its
 * slot and the encoder for ever. */
static void client_offer(Client *c, GBytes *part) {
  if (c->ending)
    return;
  if (c->in_flight &&
      g_get_monotonic_time() - c->in_flight_since_us > LIVE_STUCK_SECONDS * G_USEC_PER_SEC) {
    GSocket *sock = soup_server_message_get_socket(c->msg);
    c->ending = TRUE;
    g_clear_pointer(&c->pending, g_bytes_unref);
    if (sock)
      g_socket_shutdown(sock, TRUE, TRUE, NULL);
    return;
  }
  if (!c->in_flight) {
    client_write(c, part);
    return;
  }
  if (c->pending)
    g_bytes_unref(c->pending);
  c->pending = g_bytes_ref(part);
}

static void client_wrote(SoupServerMessage *msg, gpointer data) {
  Client *c = data;
  c->in_flight = FALSE;
  if (c->pending && !c->ending) {
    GBytes *part = c->pending;
    c->pending = NULL;
    client_write(c, part);
    g_bytes_unref(part);
  }
}

/* The closing boundary, then the end of the body. */
static void client_end(Client *c) {
  if (c->ending)
    return;
  c->ending = TRUE;
  g_clear_pointer(&c->pending, g_bytes_unref);
  SoupMessageBody *body = soup_server_message_get_response_body(c->msg);
  static const gchar closing[] = "--" LIVE_BOUNDARY "--\r\n";
  soup_message_body_append(body, SOUP_MEMORY_STATIC, closing, sizeof closing - 1);
  soup_message_body_complete(body);
  soup_server_message_unpause(c->msg);
}

/* The response is over (ended, or the client went away). */
static void client_finished(SoupServerMessage *msg, gpointer data) {
  Client *c = data;
  LiveView *live = c->live;
  g_signal_handler_disconnect(msg, c->wrote_id);
  g_signal_handler_disconnect(msg, c->finished_id);
  live->clients = g_list_remove(live->clients, c);
  if (--live->n_clients == 0)
    set_open(live, FALSE);
  if (c->pending)
    g_bytes_unref(c->pending);
  g_object_unref(c->msg);
  g_free(c);
  live_unref(live);
}

static void deliver(LiveView *live) {
  g_mutex_lock(&live->lock);
  GBytes *part = live->latest;
  live->latest = NULL;
  g_mutex_unlock(&live->lock);
  if (!part)
    return;
  for (GList *l = live->clients; l; l = l->next)
    client_offer(l->data, part);
  g_bytes_unref(part);
}

static gboolean wake_dispatch(GSource *source, GSourceFunc cb, gpointer data) {
  g_source_set_ready_time(source, -1);
  deliver(((WakeSource *)source)->live);
  return G_SOURCE_CONTINUE;
}

static GSourceFuncs wake_funcs = {NULL, NULL, wake_dispatch, NULL, NULL, NULL};

/* ---- the view ------------------------------------------------------------------ */

LiveView *live_view_new(const gchar *camera, guint width, guint fps) {
  LiveView *live = g_new0(LiveView, 1);
  g_atomic_ref_count_init(&live->refs);
  g_mutex_init(&live->lock);
  live->camera = g_strdup(camera);
  live->width = width;
  live->fps = fps;
  live->wake = g_source_new(&wake_funcs, sizeof(WakeSource));
  ((WakeSource *)live->wake)->live = live;
  g_source_set_ready_time(live->wake, -1);
  g_source_set_name(live->wake, "faprompt-serve live view");
  g_source_attach(live->wake, g_main_context_get_thread_default());
  return live;
}

void live_view_end(LiveView *live) {
  live->ended = TRUE;
  for (GList *l = live->clients; l; l = l->next)
    client_end(l->data);
}

void live_view_close(LiveView *live) {
  if (!live)
    return;
  live_view_end(live);
  g_mutex_lock(&live->lock);
  GSource *wake = live->wake;
  live->wake = NULL;
  g_mutex_unlock(&live->lock);
  g_source_destroy(wake);
  g_source_unref(wake);
  live_unref(live);
}

static GstElement *add(GstBin *bin, const gchar *factory, gchar **why) {
  GstElement *e = gst_element_factory_make(factory, NULL);
  if (!e) {
    *why = g_strdup_printf("the GStreamer element %s is missing (the live view needs it)", factory);
    return NULL;
  }
  gst_bin_add(bin, e);
  return e;
}

gboolean live_view_build(LiveView *live, GstBin *bin, GstElement *tee, gchar **why) {
  GstElement *e[6];
  for (guint i = 0; i < G_N_ELEMENTS(e); i++)
    if (!(e[i] = add(bin, live_view_elements[i], why)))
      return FALSE;
  GstElement *queue = e[0], *scale = e[1], *caps = e[2], *sink = e[5];
  /* never holds the camera's thread: the newest frame only */
  gst_util_set_object_arg(G_OBJECT(queue), "leaky", "downstream");
  g_object_set(queue, "max-size-buffers", 1, "max-size-bytes", 0, "max-size-time", (guint64)0,
               NULL);
  Pacer *p = g_new0(Pacer, 1);
  p->capsfilter = caps;
  p->width = live->width;
  p->period_us = G_USEC_PER_SEC / live->fps;
  GstPad *pad = gst_element_get_static_pad(scale, "sink");
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM, pace, p,
                    g_free);
  gst_object_unref(pad);
  pad = gst_element_get_static_pad(queue, "sink");
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, gate, live_ref(live), live_unref);
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_EVENT_UPSTREAM, no_seek, NULL, NULL);
  gst_object_unref(pad);
  /* async=false: a closed gate never prerolls it, and a file camera's
   * pipeline must reach PLAYING all the same */
  g_object_set(sink, "sync", FALSE, "async", FALSE, "max-buffers", 1, "drop", TRUE,
               "enable-last-sample", FALSE, "wait-on-eos", FALSE, NULL);
  GstAppSinkCallbacks cb = {.new_sample = new_sample};
  gst_app_sink_set_callbacks(GST_APP_SINK(sink), &cb, live_ref(live), live_unref);
  if (!gst_element_link(tee, queue) ||
      !gst_element_link_many(queue, scale, caps, e[3], e[4], sink, NULL)) {
    *why = g_strdup("could not link the live view's branch");
    return FALSE;
  }
  return TRUE;
}

void live_view_serve(LiveView *live, SoupServerMessage *msg) {
  SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);
  if (live->ended) {
    soup_server_message_set_status(msg, SOUP_STATUS_GONE, NULL);
    soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_STATIC,
                                     "{\"error\": \"the camera is gone\"}\n", 31);
    return;
  }
  if (live->n_clients >= LIVE_MAX_CLIENTS) {
    gchar *body = g_strdup_printf("{\"error\": \"camera %s has %d live viewers already, the "
                                  "most it serves\"}\n",
                                  live->camera, LIVE_MAX_CLIENTS);
    soup_message_headers_replace(h, "Retry-After", "10");
    soup_server_message_set_status(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, NULL);
    soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_TAKE, body, strlen(body));
    return;
  }
  Client *c = g_new0(Client, 1);
  c->live = live_ref(live);
  c->msg = g_object_ref(msg);
  soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
  soup_message_headers_set_content_type(h, "multipart/x-mixed-replace;boundary=" LIVE_BOUNDARY,
                                        NULL);
  soup_message_headers_replace(h, "Cache-Control", "no-cache, no-store");
  soup_message_headers_set_encoding(h, soup_server_message_get_http_version(msg) == SOUP_HTTP_1_0
                                           ? SOUP_ENCODING_EOF
                                           : SOUP_ENCODING_CHUNKED);
  /* written parts are dropped, not kept for the whole stream */
  soup_message_body_set_accumulate(soup_server_message_get_response_body(msg), FALSE);
  c->wrote_id = g_signal_connect(msg, "wrote-chunk", G_CALLBACK(client_wrote), c);
  c->finished_id = g_signal_connect(msg, "finished", G_CALLBACK(client_finished), c);
  live->clients = g_list_prepend(live->clients, c);
  if (live->n_clients++ == 0)
    set_open(live, TRUE);
}

guint live_view_clients(const LiveView *live) { return live->n_clients; }

guint64 live_view_frames(const LiveView *live) {
  return atomic_load_explicit(&((LiveView *)live)->frames, memory_order_relaxed);
}

void live_view_add_json(const LiveView *live, JsonBuilder *b) {
  json_builder_set_member_name(b, "viewers");
  json_builder_add_int_value(b, live->n_clients);
  json_builder_set_member_name(b, "live-frames");
  json_builder_add_int_value(b, (gint64)live_view_frames(live));
}
