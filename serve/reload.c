/* See reload.h. */
#include "reload.h"

#include <string.h>

#include "log.h"

struct Reload {
  ServeConfig *config; /* the running one (main's) */
  Service *svc;
  gchar *listen, *token_file; /* the command line's */
  GHashTable *file_names;     /* names of the cameras the file has */
};

static void remember_file_names(Reload *r) {
  g_hash_table_remove_all(r->file_names);
  for (guint i = 0; i < r->config->cameras->len; i++)
    g_hash_table_add(r->file_names,
                     g_strdup(((CameraConfig *)r->config->cameras->pdata[i])->name));
}

Reload *reload_new(ServeConfig *config, Service *svc, const gchar *listen,
                   const gchar *token_file) {
  Reload *r = g_new0(Reload, 1);
  r->config = config;
  r->svc = svc;
  r->listen = g_strdup(listen);
  r->token_file = g_strdup(token_file);
  r->file_names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  remember_file_names(r);
  return r;
}

void reload_free(Reload *r) {
  if (!r)
    return;
  g_free(r->listen);
  g_free(r->token_file);
  g_hash_table_unref(r->file_names);
  g_free(r);
}

/* ---- what changed in a camera ----------------------------------------------- */

typedef enum { SAME, LIVE, RESTART } Change;

static gboolean str_eq(const gchar *a, const gchar *b) { return !g_strcmp0(a, b); }

/* record as it takes effect: the running service's evidence folder (a new
 * one needs the process started again) */
static gboolean records(const CameraConfig *c, const ServeConfig *running) {
  return c->record && running->evidence;
}

static Change change_of(const CameraConfig *a, const CameraConfig *b, const ServeConfig *running) {
  if (!str_eq(a->source.uri, b->source.uri) || records(a, running) != records(b, running) ||
      !str_eq(a->publish_uri, b->publish_uri) || !str_eq(a->publish_policy, b->publish_policy))
    return RESTART;
  if (a->image_threshold != b->image_threshold || a->pixel_threshold != b->pixel_threshold ||
      a->inference_interval != b->inference_interval || a->draw_heatmap != b->draw_heatmap ||
      !str_eq(a->model, b->model))
    return LIVE;
  return SAME;
}

static const CameraConfig *find(const ServeConfig *cfg, const gchar *name) {
  for (guint i = 0; i < cfg->cameras->len; i++)
    if (!strcmp(((CameraConfig *)cfg->cameras->pdata[i])->name, name))
      return cfg->cameras->pdata[i];
  return NULL;
}

/* ---- [service] ---------------------------------------------------------------- */

static void needs_restart(const gchar *key, const gchar *running, const gchar *wanted) {
  serve_log("reload: [service] %s changed to %s: it takes effect when the process starts again "
            "(it runs with %s)",
            key, wanted ? wanted : "(none)", running ? running : "(none)");
}

static void apply_service(Reload *r, ServeConfig *next) {
  ServeConfig *run = r->config;
  if (strcmp(run->listen_host, next->listen_host) || run->listen_port != next->listen_port) {
    gchar *a = g_strdup_printf("%s:%u", run->listen_host, run->listen_port);
    gchar *b = g_strdup_printf("%s:%u", next->listen_host, next->listen_port);
    needs_restart("listen", a, b);
    g_free(a);
    g_free(b);
  }
  if (!str_eq(run->evidence, next->evidence))
    needs_restart("evidence", run->evidence, next->evidence);
  if (strcmp(run->backend, next->backend))
    needs_restart("backend", run->backend, next->backend);
  if (run->batch_size != next->batch_size) {
    gchar *a = g_strdup_printf("%u", run->batch_size), *b = g_strdup_printf("%u", next->batch_size);
    needs_restart("batch-size", a, b);
    g_free(a);
    g_free(b);
  }
  if (run->live_width != next->live_width || run->live_fps != next->live_fps) {
    gchar *a = g_strdup_printf("%u px, %u/s", run->live_width, run->live_fps);
    gchar *b = g_strdup_printf("%u px, %u/s", next->live_width, next->live_fps);
    needs_restart("live-width / live-fps", a, b);
    g_free(a);
    g_free(b);
  }
  if (run->stall_seconds != next->stall_seconds) {
    serve_log("reload: [service] stall-timeout %g s (was %g s)", next->stall_seconds,
              run->stall_seconds);
    run->stall_seconds = next->stall_seconds;
    service_set_stall_seconds(r->svc, next->stall_seconds);
  }
  /* the token file read again: a new token, or none any more */
  if (!str_eq(run->token_file, next->token_file) || !str_eq(run->token, next->token))
    serve_log("reload: API token %s", next->token ? "read again" : "removed: API changes off");
  g_free(run->token_file);
  g_free(run->token);
  run->token_file = g_steal_pointer(&next->token_file);
  run->token = g_steal_pointer(&next->token);
}

/* ---- the whole ---------------------------------------------------------------- */

/* Everything that could refuse the new file, before anything changes. */
static gboolean check(Reload *r, const ServeConfig *next, GError **error) {
  if (service_closing(r->svc)) {
    g_set_error(error, SERVE_CONFIG_ERROR, 0, "the service is shutting down");
    return FALSE;
  }
  for (guint i = 0; i < next->cameras->len; i++) {
    const CameraConfig *c = next->cameras->pdata[i];
    Camera *cam = service_find(r->svc, c->name);
    if (cam && !g_hash_table_contains(r->file_names, c->name)) {
      g_set_error(error, SERVE_CONFIG_ERROR, 0,
                  "%s: [camera %s]: a camera of that name was added through the API (DELETE "
                  "it first, or name the file's another way)",
                  next->path, c->name);
      return FALSE;
    }
    if (cam && change_of(camera_config(cam), c, r->config) == SAME)
      continue;
    if (!service_check_camera(r->svc, c, error))
      return FALSE;
  }
  return TRUE;
}

gboolean reload_apply(Reload *r, GError **error) {
  if (!r->config->path) {
    g_set_error(error, SERVE_CONFIG_ERROR, 0,
                "started without a configuration file: there is nothing to read again");
    return FALSE;
  }
  ServeConfig *next = serve_config_load(r->config->path, r->listen, r->token_file, error);
  if (!next)
    return FALSE;
  if (!check(r, next, error)) {
    serve_config_free(next);
    return FALSE;
  }
  apply_service(r, next);

  guint added = 0, removed = 0, restarted = 0, updated = 0, same = 0;
  /* the file's cameras it no longer names */
  GHashTableIter it;
  gpointer name;
  g_hash_table_iter_init(&it, r->file_names);
  while (g_hash_table_iter_next(&it, &name, NULL))
    if (!find(next, name) && service_remove(r->svc, name))
      removed++;
  for (guint i = 0; i < next->cameras->len; i++) {
    const CameraConfig *c = next->cameras->pdata[i];
    Camera *cam = service_find(r->svc, c->name);
    GError *err = NULL;
    if (!cam) {
      if (service_add(r->svc, camera_config_copy(c), &err) == SERVICE_ADD_OK)
        added++;
    } else {
      switch (change_of(camera_config(cam), c, r->config)) {
      case SAME:
        same++;
        break;
      case LIVE:
        serve_log("camera %s: new settings set while it runs", c->name);
        camera_update(cam, camera_config_copy(c));
        updated++;
        break;
      case RESTART:
        serve_log("camera %s: started again with its new settings", c->name);
        service_remove(r->svc, c->name);
        if (service_add(r->svc, camera_config_copy(c), &err) == SERVICE_ADD_OK)
          restarted++;
        break;
      }
    }
    if (err) { /* checked above: only a file changed since can get here */
      serve_log("reload: camera %s: %s", c->name, err->message);
      g_error_free(err);
    }
  }
  /* the running configuration's cameras are now the file's */
  GPtrArray *cams = r->config->cameras;
  r->config->cameras = next->cameras;
  next->cameras = cams;
  remember_file_names(r);
  serve_config_free(next);
  serve_log("reload: %s: %u added, %u removed, %u started again, %u changed while running, "
            "%u unchanged",
            r->config->path, added, removed, restarted, updated, same);
  return TRUE;
}
