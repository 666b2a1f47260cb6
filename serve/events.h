/* A camera's recent past, for the web page: the start of each anomaly (the
 * last EVENTS_MAX: wall time, score, the evidence snapshot fapromptrecord
 * wrote for it) and the score once a second over the last HISTORY_SECONDS.
 * Both are fixed rings allocated with the camera; nothing grows.
 *
 * Anomaly starts are seen by a pad probe on the detector's src pad, with
 * fapromptrecord's own rule (a frame is anomalous when any of its faprompt
 * metas is; an event starts at an anomalous frame after a normal one), so
 * the n-th start of a pipeline is the event fapromptrecord names `_n`: its
 * bus message `fapromptrecord` (kind "snapshot", location) gives the
 * event its snapshot; kind "removed" (the folder's byte budget) takes it
 * back. The probe takes the lock at an event's start only. */
#ifndef SERVE_EVENTS_H
#define SERVE_EVENTS_H

#include <gst/gst.h>
#include <json-glib/json-glib.h>

#include "camstats.h"

#define EVENTS_MAX 50
#define HISTORY_SECONDS 300

typedef struct CamEvents CamEvents;

CamEvents *cam_events_new(void);
void cam_events_unref(CamEvents *ev);

/* A new pipeline's detector (a faprompt element): its anomaly starts. */
void cam_events_attach(CamEvents *ev, GstElement *detector);
/* A bus message of the camera's current pipeline; @evidence: the evidence
 * folder (file locations are kept relative to it). */
void cam_events_message(CamEvents *ev, GstMessage *msg, const gchar *evidence);
/* The service's tick: one score sample a second (null when no frame came
 * in the last two seconds). */
void cam_events_tick(CamEvents *ev, CamStats *stats, gint64 now_us);

/* {"camera", "total", "events": [{"time", "unix", "score", "snapshot"}…]},
 * newest first; "snapshot" is an /evidence/ URL or null. */
JsonNode *cam_events_to_json(CamEvents *ev, const gchar *camera);
/* {"camera", "period", "threshold", "t": [unix seconds…], "score": […]},
 * oldest first; a score is null where there was none. */
JsonNode *cam_events_history_json(CamEvents *ev, const gchar *camera);
/* Anomaly starts seen, over every pipeline of the camera. */
guint64 cam_events_total(CamEvents *ev);

#endif
