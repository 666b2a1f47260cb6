/* See web.h. */
#include "web.h"

#include <string.h>

#include "events.h"
#include "evidence.h"
#include "live.h"
#include "serve-web-resources.h"

#define RESOURCE_ROOT "/org/faprompt/serve/web/"

static void reply_node(SoupServerMessage *msg, JsonNode *node) {
  gchar *text = json_to_string(node, FALSE);
  gchar *body = g_strconcat(text, "\n", NULL);
  g_free(text);
  SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);
  soup_message_headers_replace(h, "Cache-Control", "no-store");
  http_reply(msg, SOUP_STATUS_OK, "application/json", body, strlen(body));
  json_node_unref(node);
}

static gboolean only_get(SoupServerMessage *msg, const gchar *path) {
  const char *method = soup_server_message_get_method(msg);
  if (!strcmp(method, "GET") || !strcmp(method, "HEAD"))
    return TRUE;
  soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow", "GET, HEAD");
  http_reply_error(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "%s takes GET, HEAD", path);
  return FALSE;
}

gboolean web_camera_part(Service *svc, SoupServerMessage *msg, const gchar *rest) {
  const gchar *slash = strchr(rest, '/');
  if (!slash || (strcmp(slash, "/history") && strcmp(slash, "/events")))
    return FALSE;
  if (!only_get(msg, slash + 1))
    return TRUE;
  gchar *name = g_strndup(rest, slash - rest);
  Camera *cam = service_find(svc, name);
  if (!cam)
    http_reply_error(msg, SOUP_STATUS_NOT_FOUND, "no camera named \"%s\"", name);
  else if (!strcmp(slash, "/history"))
    reply_node(msg, cam_events_history_json(camera_events(cam), name));
  else
    reply_node(msg, cam_events_to_json(camera_events(cam), name));
  g_free(name);
  return TRUE;
}

/* ---- /live/NAME.mjpg ----------------------------------------------------------- */

static void serve_live(SoupServerMessage *msg, const gchar *path, GBytes *body, gpointer data) {
  Service *svc = data;
  if (!only_get(msg, path))
    return;
  const gchar *file = g_str_has_prefix(path, "/live/") ? path + strlen("/live/") : "";
  if (!g_str_has_suffix(file, ".mjpg") || strchr(file, '/')) {
    http_reply_error(msg, SOUP_STATUS_NOT_FOUND,
                     "no such path: %s (a camera's live view is /live/NAME.mjpg)", path);
    return;
  }
  gchar *name = g_strndup(file, strlen(file) - strlen(".mjpg"));
  Camera *cam = service_find(svc, name);
  if (cam)
    live_view_serve(camera_live(cam), msg);
  else
    http_reply_error(msg, SOUP_STATUS_NOT_FOUND, "no camera named \"%s\"", name);
  g_free(name);
}

/* ---- the page ------------------------------------------------------------------- */

static void reply_resource(SoupServerMessage *msg, const gchar *file, const gchar *type) {
  gchar *where = g_strconcat(RESOURCE_ROOT, file, NULL);
  GBytes *bytes =
      g_resource_lookup_data(serve_web_get_resource(), where, G_RESOURCE_LOOKUP_FLAGS_NONE, NULL);
  g_free(where);
  if (!bytes) {
    http_reply_error(msg, SOUP_STATUS_NOT_FOUND, "no such path: /web/%s", file);
    return;
  }
  SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);
  /* everything comes from this port: no inline script, no other origin */
  soup_message_headers_replace(h, "Content-Security-Policy",
                               "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'");
  soup_message_headers_replace(h, "X-Content-Type-Options", "nosniff");
  soup_message_headers_replace(h, "Cache-Control", "no-cache");
  soup_message_headers_set_content_type(h, type, NULL);
  soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
  soup_message_body_append_bytes(soup_server_message_get_response_body(msg), bytes);
  g_bytes_unref(bytes);
}

/* "/" is every path no other route takes: the page, its files, else 404. */
static void serve_page(SoupServerMessage *msg, const gchar *path, GBytes *body, gpointer data) {
  static const gchar *const files[][2] = {
      {"app.js", "text/javascript; charset=utf-8"},
      {"style.css", "text/css; charset=utf-8"},
  };
  if (!strcmp(path, "/") || !strcmp(path, "/index.html")) {
    if (only_get(msg, path))
      reply_resource(msg, "index.html", "text/html; charset=utf-8");
    return;
  }
  for (guint i = 0; i < G_N_ELEMENTS(files); i++)
    if (g_str_has_prefix(path, "/web/") && !strcmp(path + strlen("/web/"), files[i][0])) {
      if (only_get(msg, path))
        reply_resource(msg, files[i][0], files[i][1]);
      return;
    }
  http_reply_error(msg, SOUP_STATUS_NOT_FOUND, "no such path: %s (try /, /metrics, /api/cameras)",
                   path);
}

void web_register(HttpServer *http, Service *svc) {
  http_server_route(http, "/", serve_page, svc);
  http_server_route(http, "/live", serve_live, svc);
  evidence_register(http, service_config(svc)->evidence);
}
