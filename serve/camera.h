/* One camera: its own GstPipeline (its own bus, watched from the service's
 * main loop), so nothing one camera does reaches another:
 *
 *   SOURCE (source.c) [! clocksync] ! videoconvert ! faprompt name=detect
 *     [! fapromptpublish] [! fapromptrecord] ! tee name=out ! queue ! fakesink
 *   out. ! queue ! ... ! jpegenc ! appsink   (the live view, live.h)
 *
 * The tee is where further branches go (the live view's).
 * An ERROR, an EOS (a file source seeks back to its start instead) or a
 * stall (no frame through the detector for the stall timeout) tears the
 * pipeline down and starts a new one after a back-off: 0.5 s, doubled at
 * each failure up to 30 s, back to 0.5 s once the camera has run 60 s.
 * Pipelines are stopped on a worker thread (a source that waits on a dead
 * network peer holds nobody else up); a camera's next pipeline starts only
 * after its previous one has stopped (a V4L2 device is free again).
 * Everything here runs on the main loop's thread. */
#ifndef SERVE_CAMERA_H
#define SERVE_CAMERA_H

#include <gst/gst.h>

#include "camstats.h"
#include "config.h"
#include "events.h"
#include "live.h"

typedef enum { CAMERA_STARTING, CAMERA_RUNNING, CAMERA_BACKOFF, CAMERA_STOPPED } CameraState;
#define CAMERA_STATES 4

#define CAMERA_BACKOFF_FIRST 0.5
#define CAMERA_BACKOFF_MAX 30.0
#define CAMERA_HEALTHY_SECONDS 60.0
/* most seconds from a start to PLAYING (the first camera of a model loads
 * it then) */
#define CAMERA_START_SECONDS 120.0

typedef struct Camera Camera;

/* What every camera of a service shares. */
typedef struct {
  gdouble stall_seconds;
  const gchar *backend;  /* auto | cpu | cuda */
  guint batch_size;
  guint live_width, live_fps; /* the live view's frames */
  const gchar *evidence; /* NULL: no recording */
  GThreadPool *reaper;   /* stops pipelines (camera_reap) */
  guint reaping;         /* pipelines of every camera still stopping */
  GMainContext *context; /* the main loop's */
  /* a camera finished draining (camera_drain) */
  void (*drained)(Camera *camera, gpointer user_data);
  gpointer user_data;
} CameraEnv;

typedef struct {
  CameraState state;
  const gchar *reason; /* why it last failed, NULL if it never did */
  double fps;
  guint64 restarts;
  CamStatsSnapshot stats;
  double last_frame_age; /* seconds; < 0: no frame yet */
  double average_batch;  /* frames per batch of its detector's model instance; 0: none yet */
  guint instance_queue;  /* frames waiting for that instance's next batch, at the last tick */
} CameraStatus;

/* A camera for @config (taken), stopped. */
Camera *camera_new(CameraConfig *config, CameraEnv *env);
Camera *camera_ref(Camera *cam);
void camera_unref(Camera *cam);

void camera_start(Camera *cam);
/* Periodic check (the service's tick): running after the first frame,
 * stalls, the frame rate, the back-off reset. */
void camera_tick(Camera *cam, gint64 now_us);
/* EOS into the pipeline; env->drained is called when it came out (at once
 * when there is no pipeline). The camera then stays stopped. */
void camera_drain(Camera *cam);
/* Tears the pipeline down (on the reaper) and keeps it stopped. */
void camera_stop(Camera *cam);

/* Takes @config (the same camera) that differs from the running one only
 * in what the element takes while playing: image-threshold,
 * pixel-threshold, inference-interval, draw-heatmap, model (the element's
 * hot swap: the old model runs until the new one has loaded). Set on the
 * running element, if there is one, and kept for the next start. */
void camera_update(Camera *cam, CameraConfig *config);

const CameraConfig *camera_config(const Camera *cam);
const gchar *camera_name(const Camera *cam);
/* The camera's recent anomalies and scores, and its live view: they last
 * as long as the camera, across its pipelines. */
CamEvents *camera_events(Camera *cam);
LiveView *camera_live(Camera *cam);
void camera_status(Camera *cam, gint64 now_us, CameraStatus *out);
const gchar *camera_state_name(CameraState state);

/* The reaper's work function (GThreadPool): stops a pipeline handed over
 * by a camera, then tells the camera on the main loop. */
void camera_reap(gpointer task, gpointer unused);

#endif
