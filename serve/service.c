/* See service.h. */
#include "service.h"

#include <errno.h>
#include <fap.h>
#include <glib/gstdio.h>
#include <string.h>

#include "log.h"

#define TICK_MS 500
#define REAP_POLL_MS 20

struct Service {
  const ServeConfig *config;
  CameraEnv env;
  GPtrArray *cameras;      /* Camera *, in the order added */
  GPtrArray *leaving;      /* Leaving *: removed cameras still draining */
  GHashTable *good_models; /* identities of model files that loaded */
  guint tick;
  gboolean closing;
  guint pending;           /* shutdown: cameras still draining */
  guint drain_timer, reap_timer;
  void (*done)(gboolean stopped, gpointer);
  gpointer done_data;
  gint64 stop_deadline_us;
};

/* ---- checks ------------------------------------------------------------------ */

/* The Debian package of the elements a user may lack. */
static const gchar *package_of(const gchar *element) {
  static const gchar *const map[][2] = {
      {"faprompt", "the faprompt plugin: meson install, or GST_PLUGIN_PATH=<build>/gst"},
      {"fapromptpublish", "the faprompt plugin built with libmosquitto"},
      {"fapromptrecord", "the faprompt plugin: meson install, or GST_PLUGIN_PATH=<build>/gst"},
      {"rtspsrc", "Debian: gstreamer1.0-plugins-good"},
      {"souphttpsrc", "Debian: gstreamer1.0-plugins-good"},
      {"v4l2src", "Debian: gstreamer1.0-plugins-good"},
      {"multipartdemux", "Debian: gstreamer1.0-plugins-good"},
      {"jpegenc", "Debian: gstreamer1.0-plugins-good"},
  };
  for (guint i = 0; i < G_N_ELEMENTS(map); i++)
    if (!strcmp(map[i][0], element))
      return map[i][1];
  return "Debian: gstreamer1.0-plugins-base";
}

static gboolean need_element(const gchar *name, const gchar *camera, GError **error) {
  GstElementFactory *f = gst_element_factory_find(name);
  if (f) {
    gst_object_unref(f);
    return TRUE;
  }
  g_set_error(error, SERVE_CONFIG_ERROR, 0, "%s%s%sthe GStreamer element %s is missing (%s)",
              camera ? "camera " : "", camera ? camera : "", camera ? ": " : "", name,
              package_of(name));
  return FALSE;
}

static gboolean check_elements(const CameraConfig *c, gboolean recording, GError **error) {
  /* faprompt first: the one a user is likely to lack */
  static const gchar *const always[] = {"faprompt", "videoconvert", "tee", "queue", "fakesink",
                                        NULL};
  for (const gchar *const *e = always; *e; e++)
    if (!need_element(*e, c->name, error))
      return FALSE;
  for (const gchar *const *e = source_elements(c->source.kind); *e; e++)
    if (!need_element(*e, c->name, error))
      return FALSE;
  for (const gchar *const *e = live_view_elements; *e; e++) /* the live view's branch */
    if (!need_element(*e, c->name, error))
      return FALSE;
  if (c->source.kind == SOURCE_RTSP && !need_element("rtspsrc", c->name, error))
    return FALSE;
  if (c->publish != PUBLISH_NONE && !need_element("fapromptpublish", c->name, error))
    return FALSE;
  if (recording && !need_element("fapromptrecord", c->name, error))
    return FALSE;
  return TRUE;
}

static void quiet(fap_log_level level, const char *message, void *user_data) {}

/* NULL when @path loads as a model (fap_model_load), else what is wrong. */
static gchar *load_error(const gchar *path) {
  fap_model *model = NULL;
  fap_set_thread_log_callback(quiet, NULL);
  fap_status st = fap_model_load(path, &model);
  gchar *why = st == FAP_OK ? NULL
                            : g_strdup(fap_last_error()[0] ? fap_last_error()
                                                           : fap_status_string(st));
  fap_set_thread_log_callback(NULL, NULL);
  if (model)
    fap_model_free(model);
  return why;
}

/* A file loads as a model: checked once per identity (path, inode, size,
 * time), so a camera added on a model already checked costs nothing, and a
 * file replaced since is checked again. */
static gboolean check_model(Service *svc, const CameraConfig *c, GError **error) {
  GStatBuf st;
  if (g_stat(c->model, &st) != 0) {
    g_set_error(error, SERVE_CONFIG_ERROR, 0, "camera %s: model %s: %s", c->name, c->model,
                g_strerror(errno));
    return FALSE;
  }
  gchar *id = g_strdup_printf("%s|%llu|%llu|%lld|%lld", c->model, (unsigned long long)st.st_dev,
                              (unsigned long long)st.st_ino, (long long)st.st_size,
                              (long long)st.st_mtime);
  if (g_hash_table_contains(svc->good_models, id)) {
    g_free(id);
    return TRUE;
  }
  gchar *why = load_error(c->model);
  if (why) {
    g_set_error(error, SERVE_CONFIG_ERROR, 0, "camera %s: model %s does not load: %s", c->name,
                c->model, why);
    g_free(why);
    g_free(id);
    return FALSE;
  }
  g_hash_table_add(svc->good_models, id);
  return TRUE;
}

/* ---- the set of cameras ----------------------------------------------------- */

static void on_drained(Camera *cam, gpointer data);
static void leaving_free(gpointer data);

static gboolean on_tick(gpointer data) {
  Service *svc = data;
  gint64 now = g_get_monotonic_time();
  for (guint i = 0; i < svc->cameras->len; i++)
    camera_tick(svc->cameras->pdata[i], now);
  return G_SOURCE_CONTINUE;
}

Service *service_new(const ServeConfig *config, GError **error) {
  Service *svc = g_new0(Service, 1);
  svc->config = config;
  svc->env.stall_seconds = config->stall_seconds;
  svc->env.backend = config->backend;
  svc->env.batch_size = config->batch_size;
  svc->env.live_width = config->live_width;
  svc->env.live_fps = config->live_fps;
  svc->env.evidence = config->evidence;
  svc->env.reaper = g_thread_pool_new(camera_reap, NULL, -1, FALSE, NULL);
  svc->env.context = g_main_context_ref_thread_default();
  svc->env.drained = on_drained;
  svc->env.user_data = svc;
  svc->cameras = g_ptr_array_new_with_free_func((GDestroyNotify)camera_unref);
  svc->leaving = g_ptr_array_new_with_free_func(leaving_free);
  svc->good_models = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);

  for (guint i = 0; i < config->cameras->len; i++) {
    const CameraConfig *c = config->cameras->pdata[i];
    if (!check_elements(c, c->record && config->evidence, error) || !check_model(svc, c, error)) {
      service_free(svc);
      return NULL;
    }
  }
  for (guint i = 0; i < config->cameras->len; i++)
    g_ptr_array_add(svc->cameras,
                    camera_new(camera_config_copy(config->cameras->pdata[i]), &svc->env));
  return svc;
}

void service_start(Service *svc) {
  for (guint i = 0; i < svc->cameras->len; i++)
    camera_start(svc->cameras->pdata[i]);
  svc->tick = g_timeout_add(TICK_MS, on_tick, svc);
}

const ServeConfig *service_config(const Service *svc) { return svc->config; }
guint service_count(const Service *svc) { return svc->cameras->len; }
Camera *service_camera(const Service *svc, guint i) { return svc->cameras->pdata[i]; }

Camera *service_find(const Service *svc, const gchar *name) {
  for (guint i = 0; i < svc->cameras->len; i++)
    if (!strcmp(camera_name(svc->cameras->pdata[i]), name))
      return svc->cameras->pdata[i];
  return NULL;
}

ServiceAdd service_add(Service *svc, CameraConfig *config, GError **error) {
  if (svc->closing) {
    camera_config_free(config);
    g_set_error(error, SERVE_CONFIG_ERROR, 0, "the service is shutting down");
    return SERVICE_ADD_CLOSED;
  }
  if (service_find(svc, config->name)) {
    g_set_error(error, SERVE_CONFIG_ERROR, 0, "camera %s exists already (DELETE it first)",
                config->name);
    camera_config_free(config);
    return SERVICE_ADD_EXISTS;
  }
  if (!check_elements(config, config->record && svc->config->evidence, error) ||
      !check_model(svc, config, error)) {
    camera_config_free(config);
    return SERVICE_ADD_INVALID;
  }
  Camera *cam = camera_new(config, &svc->env);
  g_ptr_array_add(svc->cameras, cam);
  serve_log("camera %s: added", camera_name(cam));
  camera_start(cam);
  return SERVICE_ADD_OK;
}

gboolean service_check_camera(Service *svc, const CameraConfig *config, GError **error) {
  return check_elements(config, config->record && svc->config->evidence, error) &&
         check_model(svc, config, error);
}

void service_set_stall_seconds(Service *svc, gdouble seconds) { svc->env.stall_seconds = seconds; }
gboolean service_closing(const Service *svc) { return svc->closing; }

/* A removed camera drains like at shutdown (an evidence clip in progress
 * is closed), for at most the drain bound. */
typedef struct {
  Service *svc;
  Camera *cam;
  guint timer;
} Leaving;

static void leaving_free(gpointer data) {
  Leaving *l = data;
  if (l->timer)
    g_source_remove(l->timer);
  camera_stop(l->cam); /* a no-op once it has drained */
  camera_unref(l->cam);
  g_free(l);
}

static gboolean leaving_timeout(gpointer data) {
  Leaving *l = data;
  l->timer = 0;
  serve_log("camera %s: did not drain within %g s: stopped", camera_name(l->cam),
            SERVICE_DRAIN_SECONDS);
  g_ptr_array_remove(l->svc->leaving, l);
  return G_SOURCE_REMOVE;
}

gboolean service_remove(Service *svc, const gchar *name) {
  Camera *cam = service_find(svc, name);
  if (!cam)
    return FALSE;
  Leaving *l = g_new0(Leaving, 1);
  l->svc = svc;
  l->cam = camera_ref(cam);
  g_ptr_array_remove(svc->cameras, cam);
  g_ptr_array_add(svc->leaving, l);
  serve_log("camera %s: removed", name);
  l->timer = g_timeout_add((guint)(SERVICE_DRAIN_SECONDS * 1000), leaving_timeout, l);
  camera_drain(cam);
  return TRUE;
}

/* ---- shutdown ---------------------------------------------------------------- */

static gboolean reap_poll(gpointer data) {
  Service *svc = data;
  gboolean late = g_get_monotonic_time() > svc->stop_deadline_us;
  if (svc->env.reaping && !late)
    return G_SOURCE_CONTINUE;
  svc->reap_timer = 0;
  if (svc->env.reaping)
    serve_log("%u pipeline(s) did not stop within %g s", svc->env.reaping, SERVICE_STOP_SECONDS);
  else
    serve_log("stopped");
  if (svc->done)
    svc->done(svc->env.reaping == 0, svc->done_data);
  return G_SOURCE_REMOVE;
}

/* Every camera has drained or the bound has passed: stop what still runs,
 * then wait for every pipeline to have stopped. */
static void finish(Service *svc) {
  if (svc->drain_timer) {
    g_source_remove(svc->drain_timer);
    svc->drain_timer = 0;
  }
  for (guint i = 0; i < svc->cameras->len; i++)
    camera_stop(svc->cameras->pdata[i]);
  g_ptr_array_set_size(svc->leaving, 0);
  svc->stop_deadline_us = g_get_monotonic_time() + (gint64)(SERVICE_STOP_SECONDS * 1e6);
  svc->reap_timer = g_timeout_add(REAP_POLL_MS, reap_poll, svc);
}

static gboolean drain_timeout(gpointer data) {
  Service *svc = data;
  svc->drain_timer = 0;
  serve_log("%u camera(s) did not drain within %g s: stopping them", svc->pending,
            SERVICE_DRAIN_SECONDS);
  svc->pending = 0;
  finish(svc);
  return G_SOURCE_REMOVE;
}

static void on_drained(Camera *cam, gpointer data) {
  Service *svc = data;
  serve_log("camera %s: drained", camera_name(cam));
  for (guint i = 0; i < svc->leaving->len; i++)
    if (((Leaving *)svc->leaving->pdata[i])->cam == cam) {
      g_ptr_array_remove_index(svc->leaving, i);
      return;
    }
  if (svc->closing && svc->pending && --svc->pending == 0)
    finish(svc);
}

void service_shutdown(Service *svc, void (*done)(gboolean stopped, gpointer),
                      gpointer user_data) {
  if (svc->closing)
    return;
  svc->closing = TRUE;
  svc->done = done;
  svc->done_data = user_data;
  serve_log("shutting down: draining %u camera(s)", svc->cameras->len);
  svc->pending = svc->cameras->len + 1; /* + 1: none finishes before all are asked */
  svc->drain_timer = g_timeout_add((guint)(SERVICE_DRAIN_SECONDS * 1000), drain_timeout, svc);
  for (guint i = 0; i < svc->cameras->len; i++)
    camera_drain(svc->cameras->pdata[i]);
  if (svc->pending && --svc->pending == 0)
    finish(svc);
}

void service_free(Service *svc) {
  if (!svc)
    return;
  if (svc->tick)
    g_source_remove(svc->tick);
  if (svc->drain_timer)
    g_source_remove(svc->drain_timer);
  if (svc->reap_timer)
    g_source_remove(svc->reap_timer);
  for (guint i = 0; i < svc->cameras->len; i++)
    camera_stop(svc->cameras->pdata[i]);
  g_ptr_array_set_size(svc->leaving, 0);
  /* every pipeline stopped, then the reaper's last word on the main loop */
  g_thread_pool_free(svc->env.reaper, FALSE, TRUE);
  while (svc->env.reaping)
    g_main_context_iteration(svc->env.context, TRUE);
  g_ptr_array_unref(svc->cameras);
  g_ptr_array_unref(svc->leaving);
  g_hash_table_unref(svc->good_models);
  g_main_context_unref(svc->env.context);
  g_free(svc);
}
