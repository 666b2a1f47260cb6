/* See camera.h. */
#include "camera.h"

#include <string.h>

#include "events.h"
#include "live.h"
#include "log.h"

#define FPS_TICKS 3 /* with the service's 0.5 s tick: a 1 s window */

struct Camera {
  guint refs;                /* main thread only */
  CameraConfig *config;
  CameraEnv *env;
  CameraState state;
  gchar *reason;
  GstElement *pipeline;      /* NULL while backing off or stopped */
  guint bus_watch;
  guint timer;               /* the back-off */
  gdouble backoff;           /* seconds before the next start */
  gint64 started_us;         /* the current pipeline's start, then when it
                              * reached PLAYING (its model loaded), then when
                              * a file was sent back to its start: where
                              * the stall check's window begins at least */
  gboolean playing;
  gint64 running_since_us;
  guint64 frames_at_start;   /* frames out when the pipeline started */
  guint64 frames_at_loop;    /* frames out when a file last began again */
  guint64 restarts;
  guint reaping;             /* pipelines of this camera still stopping */
  gboolean start_when_reaped;
  gboolean stopping;         /* drain or stop asked for: never restarts */
  gboolean draining;         /* EOS sent, waiting for it at the end */
  CamStats *stats;
  CamEvents *events;         /* anomaly starts, score history (the web page) */
  LiveView *live;            /* the MJPEG view, across pipelines */
  double fps;
  double average_batch; /* the detector's average-batch, read at each tick; 0 before */
  guint instance_queue; /* and its instance-queue */
  /* frames out at the last ticks, oldest first: the rate is taken over
   * about a second */
  guint64 rate_frames[FPS_TICKS];
  gint64 rate_at_us[FPS_TICKS];
};

typedef struct {
  GstElement *pipeline;
  Camera *cam;
} ReapTask;

static void start_pipeline(Camera *cam);

Camera *camera_new(CameraConfig *config, CameraEnv *env) {
  Camera *cam = g_new0(Camera, 1);
  cam->refs = 1;
  cam->config = config;
  cam->env = env;
  cam->state = CAMERA_STOPPED;
  cam->backoff = CAMERA_BACKOFF_FIRST;
  cam->stats = camstats_new();
  cam->events = cam_events_new();
  cam->live = live_view_new(config->name, env->live_width, env->live_fps);
  return cam;
}

Camera *camera_ref(Camera *cam) {
  cam->refs++;
  return cam;
}

void camera_unref(Camera *cam) {
  if (!cam || --cam->refs)
    return;
  g_assert(!cam->pipeline && !cam->timer && !cam->bus_watch);
  camstats_unref(cam->stats);
  cam_events_unref(cam->events);
  live_view_close(cam->live);
  camera_config_free(cam->config);
  g_free(cam->reason);
  g_free(cam);
}

const CameraConfig *camera_config(const Camera *cam) { return cam->config; }
const gchar *camera_name(const Camera *cam) { return cam->config->name; }
CamEvents *camera_events(Camera *cam) { return cam->events; }
LiveView *camera_live(Camera *cam) { return cam->live; }

const gchar *camera_state_name(CameraState state) {
  static const gchar *const names[CAMERA_STATES] = {"starting", "running", "backoff", "stopped"};
  return names[state];
}

/* ---- stopping a pipeline ---------------------------------------------------- */

static gboolean reaped(gpointer data) {
  ReapTask *task = data;
  Camera *cam = task->cam;
  cam->reaping--;
  cam->env->reaping--;
  if (cam->reaping == 0 && cam->start_when_reaped && !cam->stopping) {
    cam->start_when_reaped = FALSE;
    start_pipeline(cam);
  }
  camera_unref(cam);
  g_free(task);
  return G_SOURCE_REMOVE;
}

/* A pipeline's start (set_playing, on GStreamer's thread pool) may still be
 * queued when the pipeline is handed to the reaper: this flag, set before
 * the reaper takes the state lock, makes a late start a no-op instead of
 * leaving a pipeline playing that nobody will stop. */
#define STOPPING_KEY "serve-stopping"

void camera_reap(gpointer data, gpointer unused) {
  ReapTask *task = data;
  g_atomic_int_set((gint *)g_object_get_data(G_OBJECT(task->pipeline), STOPPING_KEY), 1);
  gst_element_set_state(task->pipeline, GST_STATE_NULL);
  gst_object_unref(task->pipeline);
  task->pipeline = NULL;
  /* an idle source, always dispatched by the main loop: g_main_context_invoke
   * would run reaped() right here whenever the main loop is not iterating */
  GSource *idle = g_idle_source_new();
  g_source_set_callback(idle, reaped, task, NULL);
  g_source_attach(idle, task->cam->env->context);
  g_source_unref(idle);
}

/* Hands the pipeline to the reaper; its bus is no longer listened to. */
static void teardown(Camera *cam) {
  if (!cam->pipeline)
    return;
  if (cam->bus_watch) {
    g_source_remove(cam->bus_watch);
    cam->bus_watch = 0;
  }
  ReapTask *task = g_new0(ReapTask, 1);
  task->pipeline = cam->pipeline;
  task->cam = camera_ref(cam);
  cam->pipeline = NULL;
  cam->draining = FALSE;
  cam->reaping++;
  cam->env->reaping++;
  g_thread_pool_push(cam->env->reaper, task, NULL);
}

/* ---- failure and back-off ----------------------------------------------------- */

static gboolean backoff_done(gpointer data) {
  Camera *cam = data;
  cam->timer = 0;
  cam->restarts++;
  cam->state = CAMERA_STARTING;
  if (cam->reaping)
    cam->start_when_reaped = TRUE;
  else
    start_pipeline(cam);
  return G_SOURCE_REMOVE;
}

static void fail(Camera *cam, const gchar *reason) {
  g_free(cam->reason);
  cam->reason = g_strdup(reason);
  teardown(cam);
  if (cam->stopping) {
    cam->state = CAMERA_STOPPED;
    return;
  }
  serve_log("camera %s: %s; starting again in %.1f s", cam->config->name, reason, cam->backoff);
  cam->state = CAMERA_BACKOFF;
  cam->timer = g_timeout_add_full(G_PRIORITY_DEFAULT, (guint)(cam->backoff * 1000), backoff_done,
                                  camera_ref(cam), (GDestroyNotify)camera_unref);
  cam->backoff = MIN(cam->backoff * 2, CAMERA_BACKOFF_MAX);
}

/* "element: message (detail)", the detail being the last line of the debug
 * text (where GStreamer says what failed underneath, e.g. "Connection
 * refused"). */
static gchar *error_reason(GstMessage *msg) {
  GError *err = NULL;
  gchar *debug = NULL, *out;
  gst_message_parse_error(msg, &err, &debug);
  const gchar *detail = debug ? strrchr(debug, '\n') : NULL;
  detail = detail ? detail + 1 : debug;
  if (detail && *detail && !strstr(err->message, detail))
    out = g_strdup_printf("%s: %s (%s)", GST_MESSAGE_SRC_NAME(msg), err->message, detail);
  else
    out = g_strdup_printf("%s: %s", GST_MESSAGE_SRC_NAME(msg), err->message);
  g_error_free(err);
  g_free(debug);
  return out;
}

/* ---- the bus ---------------------------------------------------------------- */

static void on_eos(Camera *cam) {
  if (cam->draining) {
    cam->state = CAMERA_STOPPED;
    teardown(cam);
    cam->env->drained(cam, cam->env->user_data);
    return;
  }
  if (!source_spec_loops(&cam->config->source)) {
    fail(cam, "the stream ended (end of stream from the source)");
    return;
  }
  guint64 frames = atomic_load(&cam->stats->frames_out);
  if (frames == cam->frames_at_loop) {
    fail(cam, "the file ended without a frame reaching the detector");
    return;
  }
  cam->frames_at_loop = frames;
  if (!gst_element_seek_simple(cam->pipeline, GST_FORMAT_TIME,
                               GST_SEEK_FLAG_FLUSH | GST_SEEK_FLAG_KEY_UNIT, 0)) {
    fail(cam, "the file could not be played again from its start (seek refused)");
    return;
  }
  /* the seek (its flush waits for the frame the detector holds) is no stall:
   * the window starts again when it is done */
  cam->started_us = g_get_monotonic_time();
}

static gboolean on_bus(GstBus *bus, GstMessage *msg, gpointer data) {
  Camera *cam = data;
  switch (GST_MESSAGE_TYPE(msg)) {
  case GST_MESSAGE_ERROR: {
    gchar *reason = error_reason(msg);
    if (cam->draining) { /* it stops anyway; the drain ends here */
      cam->state = CAMERA_STOPPED;
      teardown(cam);
      cam->env->drained(cam, cam->env->user_data);
    } else {
      fail(cam, reason);
    }
    g_free(reason);
    break;
  }
  case GST_MESSAGE_EOS:
    on_eos(cam);
    break;
  case GST_MESSAGE_STATE_CHANGED:
    if (GST_MESSAGE_SRC(msg) == GST_OBJECT(cam->pipeline) && !cam->playing) {
      GstState state;
      gst_message_parse_state_changed(msg, NULL, &state, NULL);
      if (state == GST_STATE_PLAYING) {
        cam->playing = TRUE;
        cam->started_us = g_get_monotonic_time();
      }
    }
    break;
  case GST_MESSAGE_WARNING: {
    GError *err = NULL;
    gst_message_parse_warning(msg, &err, NULL);
    serve_log("camera %s: warning from %s: %s", cam->config->name, GST_MESSAGE_SRC_NAME(msg),
              err->message);
    g_error_free(err);
    break;
  }
  case GST_MESSAGE_ELEMENT: /* fapromptrecord's files */
    cam_events_message(cam->events, msg, cam->env->evidence);
    break;
  default:
    break;
  }
  /* fail() and teardown() remove this watch themselves */
  return cam->bus_watch ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

/* ---- building and starting -------------------------------------------------- */

static GstElement *element(GstBin *bin, const gchar *factory, const gchar *name, gchar **why) {
  GstElement *e = gst_element_factory_make(factory, name);
  if (!e) {
    *why = g_strdup_printf("the GStreamer element %s is missing", factory);
    return NULL;
  }
  gst_bin_add(bin, e);
  return e;
}

static gboolean build_detector(Camera *cam, GstBin *bin, GstElement *detect) {
  const CameraConfig *c = cam->config;
  gchar *instance = g_strconcat("serve:", c->model, NULL);
  g_object_set(detect, "model-file", c->model, "model-instance-id", instance, "batch-size",
               cam->env->batch_size, "image-threshold", (gfloat)c->image_threshold,
               "pixel-threshold", (gfloat)c->pixel_threshold, "inference-interval",
               c->inference_interval, "draw-heatmap", c->draw_heatmap, NULL);
  gst_util_set_object_arg(G_OBJECT(detect), "backend", cam->env->backend);
  /* the figures come from the metas (camstats.c), no messages needed */
  gst_util_set_object_arg(G_OBJECT(detect), "post-messages", "none");
  g_free(instance);
  return TRUE;
}

static void build_publish(Camera *cam, GstElement *pub) {
  const CameraConfig *c = cam->config;
  static const gchar *const targets[] = {NULL, "mqtt", "file", "stdout"};
  gst_util_set_object_arg(G_OBJECT(pub), "target", targets[c->publish]);
  gst_util_set_object_arg(G_OBJECT(pub), "policy", c->publish_policy);
  g_object_set(pub, "source-id", c->name, NULL);
  if (c->publish == PUBLISH_MQTT)
    g_object_set(pub, "host", c->publish_host, "port", c->publish_port, "topic", c->publish_topic,
                 NULL);
  else if (c->publish == PUBLISH_FILE)
    g_object_set(pub, "location", c->publish_location, NULL);
}

static GstElement *build(Camera *cam, GstElement **detect_out, gchar **why) {
  const CameraConfig *c = cam->config;
  GstElement *pipeline = gst_pipeline_new(c->name);
  GstBin *bin = GST_BIN(pipeline);
  GstElement *chain[9];
  guint n = 0;

  /* a file is paced to the clock before the detector, as a camera would
   * deliver it: the detector's frame rate and stall check see the real
   * rate, and no queue downstream runs ahead of it */
  if (!source_spec_live(&c->source) && !(chain[n++] = element(bin, "clocksync", NULL, why)))
    goto bad;
  if (!(chain[n++] = element(bin, "videoconvert", NULL, why)))
    goto bad;
  GstElement *detect = chain[n++] = element(bin, "faprompt", "detect", why);
  if (!detect)
    goto bad;
  build_detector(cam, bin, detect);
  if (c->publish != PUBLISH_NONE) {
    if (!(chain[n++] = element(bin, "fapromptpublish", "publish", why)))
      goto bad;
    build_publish(cam, chain[n - 1]);
  }
  if (c->record && cam->env->evidence) {
    if (!(chain[n++] = element(bin, "fapromptrecord", "record", why)))
      goto bad;
    g_object_set(chain[n - 1], "location", cam->env->evidence, "source-id", c->name, NULL);
  }
  if (!(chain[n++] = element(bin, "tee", "out", why)) ||
      !(chain[n++] = element(bin, "queue", NULL, why)) ||
      !(chain[n++] = element(bin, "fakesink", NULL, why)))
    goto bad;
  g_object_set(chain[n - 1], "sync", FALSE, "enable-last-sample", FALSE, NULL);
  for (guint i = 0; i + 1 < n; i++)
    if (!gst_element_link(chain[i], chain[i + 1])) {
      *why = g_strdup_printf("could not link %s to %s", GST_ELEMENT_NAME(chain[i]),
                             GST_ELEMENT_NAME(chain[i + 1]));
      goto bad;
    }
  if (!live_view_build(cam->live, bin, chain[n - 3], why))
    goto bad;
  if (!source_build(&c->source, bin, chain[0], why))
    goto bad;
  *detect_out = detect;
  return pipeline;
bad:
  gst_object_unref(pipeline);
  return NULL;
}

/* On GStreamer's thread pool: the first camera of a model loads it during
 * this state change, which must not hold the main loop. A failure without
 * an ERROR of its own still reaches the bus. */
static void set_playing(GstElement *pipeline, gpointer unused) {
  GstStateChangeReturn ret = GST_STATE_CHANGE_SUCCESS;
  GST_STATE_LOCK(pipeline);
  if (!g_atomic_int_get((gint *)g_object_get_data(G_OBJECT(pipeline), STOPPING_KEY)))
    ret = gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GST_STATE_UNLOCK(pipeline);
  if (ret == GST_STATE_CHANGE_FAILURE) {
    GError *err = g_error_new_literal(GST_CORE_ERROR, GST_CORE_ERROR_STATE_CHANGE,
                                      "the pipeline refused to start");
    gst_element_post_message(pipeline, gst_message_new_error(GST_OBJECT(pipeline), err, NULL));
    g_error_free(err);
  }
}

static void start_pipeline(Camera *cam) {
  gchar *why = NULL;
  GstElement *detect = NULL;
  GstElement *pipeline = build(cam, &detect, &why);
  if (!pipeline) {
    fail(cam, why);
    g_free(why);
    return;
  }
  gint64 now = g_get_monotonic_time();
  camstats_attach(cam->stats, detect);
  cam_events_attach(cam->events, detect);
  GstBus *bus = gst_pipeline_get_bus(GST_PIPELINE(pipeline));
  cam->bus_watch = gst_bus_add_watch_full(bus, G_PRIORITY_DEFAULT, on_bus, camera_ref(cam),
                                          (GDestroyNotify)camera_unref);
  gst_object_unref(bus);
  g_object_set_data_full(G_OBJECT(pipeline), STOPPING_KEY, g_new0(gint, 1), g_free);
  cam->pipeline = pipeline;
  cam->state = CAMERA_STARTING;
  cam->started_us = now;
  cam->playing = FALSE;
  cam->frames_at_start = cam->frames_at_loop = atomic_load(&cam->stats->frames_out);
  gst_element_call_async(pipeline, set_playing, NULL, NULL);
}

void camera_start(Camera *cam) {
  if (cam->pipeline || cam->timer || cam->stopping)
    return;
  start_pipeline(cam);
}

/* ---- supervision ------------------------------------------------------------ */

void camera_tick(Camera *cam, gint64 now) {
  guint64 frames = atomic_load(&cam->stats->frames_out);
  gint64 last = atomic_load(&cam->stats->last_frame_us);

  memmove(cam->rate_frames, cam->rate_frames + 1, (FPS_TICKS - 1) * sizeof cam->rate_frames[0]);
  memmove(cam->rate_at_us, cam->rate_at_us + 1, (FPS_TICKS - 1) * sizeof cam->rate_at_us[0]);
  cam->rate_frames[FPS_TICKS - 1] = frames;
  cam->rate_at_us[FPS_TICKS - 1] = now;
  cam_events_tick(cam->events, cam->stats, now);
  for (int i = 0; i < FPS_TICKS - 1; i++) /* the oldest tick there is */
    if (cam->rate_at_us[i]) {
      cam->fps = (frames - cam->rate_frames[i]) * 1e6 / (double)(now - cam->rate_at_us[i]);
      break;
    }
  if (!cam->pipeline || cam->draining)
    return;
  /* the shared instance's batching as this camera's detector sees it (a
   * property read under the element's lock, once a second) */
  GstElement *detect = gst_bin_get_by_name(GST_BIN(cam->pipeline), "detect");
  if (detect) {
    g_object_get(detect, "average-batch", &cam->average_batch, "instance-queue",
                 &cam->instance_queue, NULL);
    gst_object_unref(detect);
  }
  if (cam->state == CAMERA_STARTING && frames > cam->frames_at_start) {
    cam->state = CAMERA_RUNNING;
    cam->running_since_us = now;
    serve_log("camera %s: running", cam->config->name);
  }
  if (cam->state == CAMERA_RUNNING && now - cam->running_since_us >= CAMERA_HEALTHY_SECONDS * 1e6)
    cam->backoff = CAMERA_BACKOFF_FIRST;
  /* before PLAYING the first camera of a model may be loading it */
  gint64 since = cam->playing ? MAX(last, cam->started_us) : cam->started_us;
  gdouble limit = cam->playing ? cam->env->stall_seconds
                               : MAX(cam->env->stall_seconds, CAMERA_START_SECONDS);
  if (now - since > limit * 1e6) {
    gchar *reason = !cam->playing
                        ? g_strdup_printf("not playing %g s after starting", limit)
                    : cam->state == CAMERA_STARTING
                        ? g_strdup_printf("no frame within %g s of starting", limit)
                        : g_strdup_printf("no frame for %g s (stalled)", limit);
    fail(cam, reason);
    g_free(reason);
  }
}

void camera_drain(Camera *cam) {
  cam->stopping = TRUE;
  live_view_end(cam->live);
  cam->start_when_reaped = FALSE;
  if (cam->timer) {
    g_source_remove(cam->timer);
    cam->timer = 0;
  }
  if (cam->pipeline) {
    if (cam->draining)
      return;
    cam->draining = TRUE;
    /* Only a pipeline that reached PLAYING gets an EOS: before that no frame
     * has flowed, so there is nothing to drain, and sending an event takes
     * the pipeline's state lock, which its start (set_playing) holds while
     * the first camera of a model loads it: the main loop would wait that
     * long (under valgrind, longer than any test). */
    if (cam->playing && gst_element_send_event(cam->pipeline, gst_event_new_eos()))
      return; /* on_eos() ends it */
  }
  cam->state = CAMERA_STOPPED;
  teardown(cam);
  cam->env->drained(cam, cam->env->user_data);
}

void camera_stop(Camera *cam) {
  cam->stopping = TRUE;
  live_view_end(cam->live);
  cam->start_when_reaped = FALSE;
  if (cam->timer) {
    g_source_remove(cam->timer);
    cam->timer = 0;
  }
  teardown(cam);
  cam->state = CAMERA_STOPPED;
}

void camera_update(Camera *cam, CameraConfig *config) {
  CameraConfig *old = cam->config;
  GstElement *detect = cam->pipeline ? gst_bin_get_by_name(GST_BIN(cam->pipeline), "detect") : NULL;
  if (detect) {
    g_object_set(detect, "image-threshold", (gfloat)config->image_threshold, "pixel-threshold",
                 (gfloat)config->pixel_threshold, "inference-interval",
                 config->inference_interval, "draw-heatmap", config->draw_heatmap, NULL);
    /* the same file set again would load it again */
    if (strcmp(old->model, config->model))
      g_object_set(detect, "model-file", config->model, NULL);
    gst_object_unref(detect);
  }
  cam->config = config;
  camera_config_free(old);
}

void camera_status(Camera *cam, gint64 now, CameraStatus *out) {
  camstats_read(cam->stats, &out->stats);
  out->state = cam->state;
  out->reason = cam->reason;
  out->fps = cam->state == CAMERA_RUNNING ? cam->fps : 0;
  out->restarts = cam->restarts;
  out->average_batch = cam->average_batch;
  out->instance_queue = cam->instance_queue;
  out->last_frame_age =
      out->stats.last_frame_us ? (now - out->stats.last_frame_us) / 1e6 : -1.0;
}
