/* The cameras of one faprompt-serve process: checked before anything
 * starts (the GStreamer elements they need, each model file loadable),
 * added and removed at run time without touching the others, supervised by
 * one tick on the main loop, drained on shutdown. */
#ifndef SERVE_SERVICE_H
#define SERVE_SERVICE_H

#include "camera.h"
#include "config.h"

/* Drain bound: how long a shutdown waits for every camera's EOS. */
#define SERVICE_DRAIN_SECONDS 5.0

typedef struct Service Service;

/* Checks @config (kept, not owned) and makes its cameras, none started:
 * NULL with @error naming what cannot work. */
Service *service_new(const ServeConfig *config, GError **error);
void service_start(Service *svc);
void service_free(Service *svc);

const ServeConfig *service_config(const Service *svc);

/* The cameras in the order they were added. */
guint service_count(const Service *svc);
Camera *service_camera(const Service *svc, guint i);
Camera *service_find(const Service *svc, const gchar *name);

typedef enum {
  SERVICE_ADD_OK,
  SERVICE_ADD_EXISTS,  /* a camera of that name runs */
  SERVICE_ADD_INVALID, /* its checks failed */
  SERVICE_ADD_CLOSED,  /* the service is shutting down */
} ServiceAdd;
/* Adds and starts a camera (@config taken) after the checks of a camera at
 * start (its model file loaded once, unless that file was checked before
 * and has not changed). */
ServiceAdd service_add(Service *svc, CameraConfig *config, GError **error);
/* The checks service_add makes (the elements, the model file loads),
 * nothing added: a reload checks every camera before changing any. */
gboolean service_check_camera(Service *svc, const CameraConfig *config, GError **error);
/* The stall timeout of every camera from its next tick on. */
void service_set_stall_seconds(Service *svc, gdouble seconds);
/* A shutdown has begun (nothing is added any more). */
gboolean service_closing(const Service *svc);

/* Forgets camera @name and drains it (at most SERVICE_DRAIN_SECONDS, then
 * it is stopped); FALSE if there is none. */
gboolean service_remove(Service *svc, const gchar *name);

/* Drains every camera (EOS, at most SERVICE_DRAIN_SECONDS), stops them all
 * and calls @done once every pipeline has stopped, or with @stopped FALSE
 * when some pipeline has not SERVICE_STOP_SECONDS later (a source stuck in
 * its state change): then the process can only leave without freeing. */
#define SERVICE_STOP_SECONDS 5.0
void service_shutdown(Service *svc, void (*done)(gboolean stopped, gpointer), gpointer user_data);

#endif
