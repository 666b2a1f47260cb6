/* See api.h. */
#include "api.h"

#include <math.h>
#include <string.h>

#include "web.h"

#define PREFIX "/api/cameras"

/* ---- a camera in ------------------------------------------------------------ */

/* The members of a POST body become keys of a camera group, so the body is
 * checked by the config file's own code, with its messages. */
static gboolean member_to_key(GKeyFile *kf, const gchar *group, const gchar *camera,
                              const gchar *name, JsonNode *node, GError **error) {
  if (JSON_NODE_HOLDS_NULL(node))
    return TRUE; /* null: the default */
  if (!JSON_NODE_HOLDS_VALUE(node)) {
    g_set_error(error, SERVE_CONFIG_ERROR, 0, "camera %s: %s: must be a string, number or boolean",
                camera, name);
    return FALSE;
  }
  GType t = json_node_get_value_type(node);
  if (t == G_TYPE_STRING) {
    g_key_file_set_string(kf, group, name, json_node_get_string(node));
  } else if (t == G_TYPE_BOOLEAN) {
    g_key_file_set_value(kf, group, name, json_node_get_boolean(node) ? "true" : "false");
  } else if (t == G_TYPE_INT64) {
    gchar buf[32];
    g_snprintf(buf, sizeof buf, "%" G_GINT64_FORMAT, json_node_get_int(node));
    g_key_file_set_value(kf, group, name, buf);
  } else {
    gchar buf[G_ASCII_DTOSTR_BUF_SIZE];
    g_key_file_set_value(kf, group, name,
                         g_ascii_dtostr(buf, sizeof buf, json_node_get_double(node)));
  }
  return TRUE;
}

CameraConfig *api_camera_from_json(const gchar *json, gsize length, const gchar *evidence,
                                   GError **error) {
  JsonParser *parser = json_parser_new();
  GError *err = NULL;
  CameraConfig *c = NULL;
  GKeyFile *kf = NULL;

  if (!json_parser_load_from_data(parser, json, (gssize)length, &err)) {
    g_set_error(error, SERVE_CONFIG_ERROR, 0, "the body is not JSON: %s", err->message);
    g_error_free(err);
    goto out;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
    g_set_error(error, SERVE_CONFIG_ERROR, 0,
                "the body must be a JSON object: {\"name\": ..., \"source\": ..., \"model\": ...}");
    goto out;
  }
  JsonObject *obj = json_node_get_object(root);
  JsonNode *name = json_object_get_member(obj, "name");
  if (!name || json_node_get_value_type(name) != G_TYPE_STRING) {
    g_set_error(error, SERVE_CONFIG_ERROR, 0, "the body needs \"name\", a string");
    goto out;
  }
  const gchar *group = "camera";
  kf = g_key_file_new();
  GList *members = json_object_get_members(obj);
  gboolean ok = TRUE;
  for (GList *m = members; ok && m; m = m->next)
    if (strcmp(m->data, "name") != 0)
      ok = member_to_key(kf, group, json_node_get_string(name), m->data,
                         json_object_get_member(obj, m->data), error);
  g_list_free(members);
  if (!ok)
    goto out;
  if (!g_key_file_has_group(kf, group)) /* only a name: say what is missing */
    g_key_file_set_value(kf, group, "source", "");
  gchar *where = g_strdup_printf("camera %s:", json_node_get_string(name));
  c = camera_config_from_group(kf, group, json_node_get_string(name), NULL, evidence, where, error);
  g_free(where);
out:
  if (kf)
    g_key_file_unref(kf);
  g_object_unref(parser);
  return c;
}

/* ---- a camera out ----------------------------------------------------------- */

static void add_string_or_null(JsonBuilder *b, const gchar *member, const gchar *value) {
  json_builder_set_member_name(b, member);
  if (value)
    json_builder_add_string_value(b, value);
  else
    json_builder_add_null_value(b);
}

static void add_int(JsonBuilder *b, const gchar *member, gint64 v) {
  json_builder_set_member_name(b, member);
  json_builder_add_int_value(b, v);
}

static void add_double(JsonBuilder *b, const gchar *member, gdouble v) {
  json_builder_set_member_name(b, member);
  json_builder_add_double_value(b, v);
}

static void add_bool(JsonBuilder *b, const gchar *member, gboolean v) {
  json_builder_set_member_name(b, member);
  json_builder_add_boolean_value(b, v);
}

JsonNode *api_camera_to_json(Camera *cam, gint64 now) {
  const CameraConfig *c = camera_config(cam);
  CameraStatus st;
  camera_status(cam, now, &st);
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  /* its settings, the config file's keys */
  add_string_or_null(b, "name", c->name);
  gchar *source = source_spec_display(&c->source);
  add_string_or_null(b, "source", source);
  g_free(source);
  add_string_or_null(b, "model", c->model);
  add_double(b, "image-threshold", c->image_threshold);
  add_double(b, "pixel-threshold", c->pixel_threshold);
  add_int(b, "inference-interval", c->inference_interval);
  add_bool(b, "draw-heatmap", c->draw_heatmap);
  add_bool(b, "record", c->record);
  add_string_or_null(b, "publish", c->publish_uri);
  add_string_or_null(b, "publish-policy", c->publish_policy);
  /* its state */
  add_string_or_null(b, "state", camera_state_name(st.state));
  add_string_or_null(b, "reason", st.reason);
  add_double(b, "fps", round(st.fps * 1000) / 1000);
  json_builder_set_member_name(b, "last-score");
  if (st.stats.have_score)
    json_builder_add_double_value(b, st.stats.last_score);
  else
    json_builder_add_null_value(b);
  json_builder_set_member_name(b, "model-generation");
  if (st.stats.have_score)
    json_builder_add_int_value(b, (gint64)st.stats.model_generation);
  else
    json_builder_add_null_value(b);
  add_int(b, "restarts", (gint64)st.restarts);
  add_int(b, "frames", (gint64)st.stats.frames_out);
  add_int(b, "frames-received", (gint64)st.stats.frames_in);
  add_int(b, "inferences", (gint64)st.stats.inferences);
  add_int(b, "anomalies", (gint64)st.stats.anomalies);
  json_builder_set_member_name(b, "last-frame-age");
  if (st.last_frame_age >= 0)
    json_builder_add_double_value(b, st.last_frame_age);
  else
    json_builder_add_null_value(b);
  live_view_add_json(camera_live(cam), b);
  json_builder_set_member_name(b, "events");
  json_builder_add_int_value(b, (gint64)cam_events_total(camera_events(cam)));
  json_builder_end_object(b);
  JsonNode *node = json_builder_get_root(b);
  g_object_unref(b);
  return node;
}

/* ---- the routes ------------------------------------------------------------- */

static void reply_json(SoupServerMessage *msg, guint status, JsonNode *node) {
  gchar *text = json_to_string(node, TRUE);
  gchar *body = g_strconcat(text, "\n", NULL);
  g_free(text);
  http_reply(msg, status, "application/json", body, strlen(body));
  json_node_unref(node);
}

static void list(Service *svc, SoupServerMessage *msg) {
  gint64 now = g_get_monotonic_time();
  JsonArray *arr = json_array_new();
  for (guint i = 0; i < service_count(svc); i++)
    json_array_add_element(arr, api_camera_to_json(service_camera(svc, i), now));
  JsonObject *obj = json_object_new();
  json_object_set_array_member(obj, "cameras", arr);
  JsonNode *node = json_node_new(JSON_NODE_OBJECT);
  json_node_take_object(node, obj);
  reply_json(msg, SOUP_STATUS_OK, node);
}

static void add(Service *svc, SoupServerMessage *msg, GBytes *body) {
  const ServeConfig *cfg = service_config(svc);
  if (!http_authorized(msg, cfg->token))
    return;
  gsize len;
  const gchar *data = g_bytes_get_data(body, &len);
  GError *err = NULL;
  CameraConfig *c = api_camera_from_json(data ? data : "", len, cfg->evidence, &err);
  if (!c) {
    http_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "%s", err->message);
    g_error_free(err);
    return;
  }
  gchar *name = g_strdup(c->name);
  switch (service_add(svc, c, &err)) {
  case SERVICE_ADD_OK: {
    gchar *location = g_strconcat(PREFIX "/", name, NULL);
    soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Location",
                                 location);
    g_free(location);
    reply_json(msg, SOUP_STATUS_CREATED,
               api_camera_to_json(service_find(svc, name), g_get_monotonic_time()));
    break;
  }
  case SERVICE_ADD_EXISTS:
    http_reply_error(msg, SOUP_STATUS_CONFLICT, "%s", err->message);
    break;
  case SERVICE_ADD_CLOSED:
    http_reply_error(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "%s", err->message);
    break;
  default:
    http_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "%s", err->message);
  }
  g_clear_error(&err);
  g_free(name);
}

static void method_not_allowed(SoupServerMessage *msg, const gchar *allow, const gchar *path) {
  soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow", allow);
  http_reply_error(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "%s takes %s", path, allow);
}

static void serve_api(SoupServerMessage *msg, const gchar *path, GBytes *body, gpointer data) {
  Service *svc = data;
  const char *method = soup_server_message_get_method(msg);
  gboolean get = !strcmp(method, "GET");

  if (!strcmp(path, PREFIX) || !strcmp(path, PREFIX "/")) {
    if (get)
      list(svc, msg);
    else if (!strcmp(method, "POST"))
      add(svc, msg, body);
    else
      method_not_allowed(msg, "GET, POST", PREFIX);
    return;
  }
  const gchar *name = path + strlen(PREFIX "/");
  if (g_str_has_prefix(path, PREFIX "/") && strchr(name, '/') && web_camera_part(svc, msg, name))
    return; /* NAME/history, NAME/events */
  if (!g_str_has_prefix(path, PREFIX "/") || strchr(name, '/')) {
    http_reply_error(msg, SOUP_STATUS_NOT_FOUND, "no such path: %s", path);
    return;
  }
  gboolean del = !strcmp(method, "DELETE");
  if (!get && !del) {
    method_not_allowed(msg, "GET, DELETE", path);
    return;
  }
  if (del && !http_authorized(msg, service_config(svc)->token))
    return;
  Camera *cam = service_find(svc, name);
  if (!cam) {
    http_reply_error(msg, SOUP_STATUS_NOT_FOUND, "no camera named \"%s\"", name);
    return;
  }
  if (get) {
    reply_json(msg, SOUP_STATUS_OK, api_camera_to_json(cam, g_get_monotonic_time()));
    return;
  }
  service_remove(svc, name);
  JsonObject *obj = json_object_new();
  json_object_set_string_member(obj, "removed", name);
  JsonNode *node = json_node_new(JSON_NODE_OBJECT);
  json_node_take_object(node, obj);
  reply_json(msg, SOUP_STATUS_OK, node);
}

void api_register(HttpServer *http, Service *svc) {
  http_server_route(http, PREFIX, serve_api, svc);
}
