/* See config.h. */
#include "config.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <gst/gst.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

G_DEFINE_QUARK(serve-config-error-quark, serve_config_error)

const gchar *const camera_keys[] = {"source", "model", "image-threshold", "pixel-threshold",
                                    "inference-interval", "draw-heatmap", "record", "publish",
                                    "publish-policy", NULL};
static const gchar *const service_keys[] = {"listen", "token-file", "evidence", "stall-timeout",
                                            "backend", "batch-size", "live-width", "live-fps",
                                            NULL};
static const gchar *const policies[] = {"on-change", "every-frame", "anomalous", NULL};
static const gchar *const backends[] = {"auto", "cpu", "cuda", NULL};

#define CAMERA_PREFIX "camera "
#define MQTT_DEFAULT_PORT 1883

static gboolean fail(GError **error, const gchar *where, const gchar *key, const gchar *fmt, ...)
    G_GNUC_PRINTF(4, 5);

/* Every message: WHERE KEY: WHAT, e.g. "cams.conf: [camera door] model: ..." */
static gboolean fail(GError **error, const gchar *where, const gchar *key, const gchar *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  gchar *what = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, SERVE_CONFIG_ERROR, 0, "%s%s%s: %s", where, key ? " " : "", key ? key : "",
              what);
  g_free(what);
  return FALSE;
}

static gchar *join(const gchar *const *words) { return g_strjoinv(", ", (gchar **)words); }

gboolean camera_name_valid(const gchar *name) {
  gsize n = strlen(name);
  if (n == 0 || n > SERVE_NAME_MAX || name[0] == '.')
    return FALSE;
  for (const gchar *p = name; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '_' && *p != '-' && *p != '.')
      return FALSE;
  return TRUE;
}

/* ---- values ------------------------------------------------------------------- */

/* The key's value as a string (GKeyFile escapes resolved), NULL if absent. */
static gboolean get_string(GKeyFile *kf, const gchar *group, const gchar *key, gchar **out,
                           const gchar *where, GError **error) {
  GError *err = NULL;
  *out = NULL;
  if (!g_key_file_has_key(kf, group, key, NULL))
    return TRUE;
  *out = g_key_file_get_string(kf, group, key, &err);
  if (!*out) {
    fail(error, where, key, "%s", err->message);
    g_error_free(err);
    return FALSE;
  }
  g_strstrip(*out);
  return TRUE;
}

static gboolean parse_double(const gchar *text, gdouble *out) {
  gchar *end;
  errno = 0;
  *out = g_ascii_strtod(text, &end);
  return *text && !*end && errno == 0 && isfinite(*out);
}

static gboolean get_double(GKeyFile *kf, const gchar *group, const gchar *key, gdouble lo,
                           gdouble hi, gdouble *out, const gchar *range, const gchar *where,
                           GError **error) {
  gchar *s;
  if (!get_string(kf, group, key, &s, where, error))
    return FALSE;
  if (!s)
    return TRUE;
  gdouble v;
  gboolean ok = parse_double(s, &v) && v >= lo && v <= hi;
  if (ok)
    *out = v;
  else
    fail(error, where, key, "\"%s\" is not %s", s, range);
  g_free(s);
  return ok;
}

static gboolean get_uint(GKeyFile *kf, const gchar *group, const gchar *key, guint lo, guint hi,
                         guint *out, const gchar *where, GError **error) {
  gchar *s;
  if (!get_string(kf, group, key, &s, where, error))
    return FALSE;
  if (!s)
    return TRUE;
  guint64 v;
  gboolean ok = g_ascii_string_to_unsigned(s, 10, lo, hi, &v, NULL);
  if (ok)
    *out = (guint)v;
  else
    fail(error, where, key, "\"%s\" is not a whole number from %u to %u", s, lo, hi);
  g_free(s);
  return ok;
}

static gboolean get_bool(GKeyFile *kf, const gchar *group, const gchar *key, gboolean *out,
                         const gchar *where, GError **error) {
  static const gchar *const yes[] = {"true", "yes", "on", "1", NULL};
  static const gchar *const no[] = {"false", "no", "off", "0", NULL};
  gchar *s;
  if (!get_string(kf, group, key, &s, where, error))
    return FALSE;
  if (!s)
    return TRUE;
  gchar *lower = g_ascii_strdown(s, -1);
  gboolean ok = TRUE;
  if (g_strv_contains(yes, lower))
    *out = TRUE;
  else if (g_strv_contains(no, lower))
    *out = FALSE;
  else
    ok = fail(error, where, key, "\"%s\" is not true or false", s);
  g_free(lower);
  g_free(s);
  return ok;
}

static gboolean get_word(GKeyFile *kf, const gchar *group, const gchar *key,
                         const gchar *const *words, gchar **out, const gchar *where,
                         GError **error) {
  gchar *s;
  if (!get_string(kf, group, key, &s, where, error))
    return FALSE;
  if (!s)
    return TRUE;
  if (!g_strv_contains(words, s)) {
    gchar *all = join(words);
    fail(error, where, key, "\"%s\" is not one of %s", s, all);
    g_free(all);
    g_free(s);
    return FALSE;
  }
  g_free(*out);
  *out = s;
  return TRUE;
}

static gboolean check_keys(GKeyFile *kf, const gchar *group, const gchar *const *known,
                           const gchar *where, GError **error) {
  gchar **keys = g_key_file_get_keys(kf, group, NULL, NULL);
  gboolean ok = TRUE;
  for (gchar **k = keys; ok && k && *k; k++)
    if (!g_strv_contains(known, *k)) {
      gchar *all = join(known);
      ok = fail(error, where, *k, "unknown key (this group takes: %s)", all);
      g_free(all);
    }
  g_strfreev(keys);
  return ok;
}

/* The folder a file would be written into can be written (or made). */
static gboolean folder_writable(const gchar *path) {
  gchar *dir = g_strdup(path);
  while (!g_file_test(dir, G_FILE_TEST_EXISTS)) {
    gchar *up = g_path_get_dirname(dir);
    gboolean top = !strcmp(up, dir);
    g_free(dir);
    dir = up;
    if (top)
      break;
  }
  gboolean ok = g_file_test(dir, G_FILE_TEST_IS_DIR) && g_access(dir, W_OK | X_OK) == 0;
  g_free(dir);
  return ok;
}

/* ---- a camera ----------------------------------------------------------------- */

static gboolean parse_publish(CameraConfig *c, const gchar *where, GError **error) {
  const gchar *uri = c->publish_uri;
  GstElementFactory *factory = gst_element_factory_find("fapromptpublish");
  if (factory)
    gst_object_unref(factory);
  else
    return fail(error, where, "publish",
                "needs the fapromptpublish element, which this build of the faprompt plugin "
                "lacks (it is built with libmosquitto, Debian: libmosquitto-dev)");
  if (g_str_has_prefix(uri, "mqtt://")) {
    const gchar *hostport = uri + strlen("mqtt://");
    const gchar *slash = strchr(hostport, '/');
    if (!slash || !slash[1])
      return fail(error, where, "publish", "\"%s\": an MQTT target is mqtt://HOST[:PORT]/TOPIC",
                  uri);
    gchar *hp = g_strndup(hostport, slash - hostport);
    gchar *colon = strrchr(hp, ':');
    guint64 port = MQTT_DEFAULT_PORT;
    if (colon) {
      *colon = '\0';
      if (!g_ascii_string_to_unsigned(colon + 1, 10, 1, 65535, &port, NULL)) {
        g_free(hp);
        return fail(error, where, "publish", "\"%s\": the port is not from 1 to 65535", uri);
      }
    }
    if (!*hp || strchr(slash + 1, '+') || strchr(slash + 1, '#')) {
      g_free(hp);
      return fail(error, where, "publish",
                  "\"%s\": an MQTT target needs a host and a topic without wildcards (+, #)", uri);
    }
    c->publish = PUBLISH_MQTT;
    c->publish_host = hp;
    c->publish_port = (guint)port;
    c->publish_topic = g_strdup(slash + 1);
    return TRUE;
  }
  if (g_str_has_prefix(uri, "file://")) {
    gchar *path = g_filename_from_uri(uri, NULL, NULL);
    if (!path)
      return fail(error, where, "publish", "\"%s\" is not a file URI (file:///absolute/path)",
                  uri);
    gchar *dir = g_path_get_dirname(path);
    gboolean ok = folder_writable(dir);
    g_free(dir);
    if (!ok) {
      g_free(path);
      return fail(error, where, "publish", "\"%s\": its folder cannot be written", uri);
    }
    c->publish = PUBLISH_FILE;
    c->publish_location = path;
    return TRUE;
  }
  if (!strcmp(uri, "stdout:") || !strcmp(uri, "stdout")) {
    c->publish = PUBLISH_STDOUT;
    return TRUE;
  }
  return fail(error, where, "publish",
              "\"%s\" is not a target (mqtt://HOST[:PORT]/TOPIC, file:///PATH, stdout)", uri);
}

static gboolean read_model(CameraConfig *c, GKeyFile *kf, const gchar *group,
                           const gchar *base_dir, const gchar *where, GError **error) {
  gchar *model;
  if (!get_string(kf, group, "model", &model, where, error))
    return FALSE;
  if (!model || !*model) {
    g_free(model);
    return fail(error, where, "model", "missing: every camera names its model file");
  }
  if (!g_path_is_absolute(model) && !base_dir) {
    fail(error, where, "model", "\"%s\" is not an absolute path", model);
    g_free(model);
    return FALSE;
  }
  c->model = g_canonicalize_filename(model, base_dir);
  g_free(model);
  if (!g_file_test(c->model, G_FILE_TEST_IS_REGULAR) || g_access(c->model, R_OK) != 0)
    return fail(error, where, "model", "%s: not a readable file (make one with "
                "models/faprompt-convert or models/faprompt-gen-random)", c->model);
  return TRUE;
}

CameraConfig *camera_config_from_group(GKeyFile *kf, const gchar *group, const gchar *name,
                                       const gchar *base_dir, const gchar *evidence,
                                       const gchar *where, GError **error) {
  CameraConfig *c = g_new0(CameraConfig, 1);
  gchar *source = NULL;

  c->name = g_strdup(name);
  c->image_threshold = -1;
  c->pixel_threshold = -1;
  c->inference_interval = 1;
  c->draw_heatmap = TRUE;
  c->record = evidence != NULL;
  c->publish_policy = g_strdup("on-change");
  if (!camera_name_valid(name)) {
    fail(error, where, NULL, "\"%s\" cannot name a camera: 1 to %d letters, digits, '_', '-' "
         "or '.', not starting with '.'", name, SERVE_NAME_MAX);
    goto bad;
  }
  if (!check_keys(kf, group, camera_keys, where, error))
    goto bad;
  if (!get_string(kf, group, "source", &source, where, error))
    goto bad;
  if (!source || !*source) {
    fail(error, where, "source", "missing: every camera needs one (rtsp://, http://, file://, "
         "v4l2:///dev/videoN, test://PATTERN)");
    goto bad;
  }
  gchar *why = NULL;
  if (!source_spec_parse(source, &c->source, &why)) {
    fail(error, where, "source", "%s", why);
    g_free(why);
    goto bad;
  }
  if (!read_model(c, kf, group, base_dir, where, error) ||
      !get_double(kf, group, "image-threshold", -1, 1, &c->image_threshold,
                  "-1 (the model's calibration) or from 0 to 1", where, error) ||
      !get_double(kf, group, "pixel-threshold", -1, 1, &c->pixel_threshold,
                  "-1 (the model's calibration) or from 0 to 1", where, error) ||
      !get_uint(kf, group, "inference-interval", 1, G_MAXINT, &c->inference_interval, where,
                error) ||
      !get_bool(kf, group, "draw-heatmap", &c->draw_heatmap, where, error) ||
      !get_bool(kf, group, "record", &c->record, where, error) ||
      !get_string(kf, group, "publish", &c->publish_uri, where, error) ||
      !get_word(kf, group, "publish-policy", policies, &c->publish_policy, where, error))
    goto bad;
  if ((c->image_threshold < 0 && c->image_threshold != -1) ||
      (c->pixel_threshold < 0 && c->pixel_threshold != -1)) {
    fail(error, where, c->image_threshold < 0 && c->image_threshold != -1 ? "image-threshold"
                                                                           : "pixel-threshold",
         "a negative value means the model's calibration: write -1");
    goto bad;
  }
  if (c->record && !evidence) {
    fail(error, where, "record", "true, but [service] has no evidence folder to record into");
    goto bad;
  }
  if (c->publish_uri && *c->publish_uri && !parse_publish(c, where, error))
    goto bad;
  g_free(source);
  return c;
bad:
  g_free(source);
  camera_config_free(c);
  return NULL;
}

CameraConfig *camera_config_copy(const CameraConfig *c) {
  CameraConfig *d = g_memdup2(c, sizeof *c);
  d->name = g_strdup(c->name);
  source_spec_copy(&d->source, &c->source);
  d->model = g_strdup(c->model);
  d->publish_uri = g_strdup(c->publish_uri);
  d->publish_host = g_strdup(c->publish_host);
  d->publish_topic = g_strdup(c->publish_topic);
  d->publish_location = g_strdup(c->publish_location);
  d->publish_policy = g_strdup(c->publish_policy);
  return d;
}

void camera_config_free(CameraConfig *c) {
  if (!c)
    return;
  g_free(c->name);
  source_spec_clear(&c->source);
  g_free(c->model);
  g_free(c->publish_uri);
  g_free(c->publish_host);
  g_free(c->publish_topic);
  g_free(c->publish_location);
  g_free(c->publish_policy);
  g_free(c);
}

/* ---- the service -------------------------------------------------------------- */

gboolean parse_listen(const gchar *text, gchar **host, guint *port, GError **error) {
  const gchar *colon = strrchr(text, ':');
  guint64 p;
  if (!colon || !g_ascii_string_to_unsigned(colon + 1, 10, 0, 65535, &p, NULL)) {
    g_set_error(error, SERVE_CONFIG_ERROR, 0,
                "\"%s\" is not ADDRESS:PORT (e.g. 127.0.0.1:8090, [::1]:8090, :8090 for every "
                "address; port 0: any free one)",
                text);
    return FALSE;
  }
  gchar *h = g_strndup(text, colon - text);
  if (h[0] == '[' && h[strlen(h) - 1] == ']') {
    gchar *inner = g_strndup(h + 1, strlen(h) - 2);
    g_free(h);
    h = inner;
  }
  if (*h && !g_hostname_is_ip_address(h)) {
    g_set_error(error, SERVE_CONFIG_ERROR, 0, "\"%s\": \"%s\" is not an IP address", text, h);
    g_free(h);
    return FALSE;
  }
  *host = h;
  *port = (guint)p;
  return TRUE;
}

static gboolean read_token(ServeConfig *cfg, const gchar *where, GError **error) {
  gchar *content;
  GError *err = NULL;
  if (!g_file_get_contents(cfg->token_file, &content, NULL, &err)) {
    fail(error, where, "token-file", "%s", err->message);
    g_error_free(err);
    return FALSE;
  }
  cfg->token = g_strdup(g_strstrip(content));
  g_free(content);
  if (!*cfg->token)
    return fail(error, where, "token-file", "%s is empty: write the token into it",
                cfg->token_file);
  return TRUE;
}

static gboolean read_service(ServeConfig *cfg, GKeyFile *kf, const gchar *base_dir,
                             const gchar *listen, const gchar *token_file, GError **error) {
  const gchar *group = "service";
  gchar *where = g_strdup_printf("%s: [service]", cfg->path ? cfg->path : "faprompt-serve");
  gchar *listen_text = NULL, *token = NULL, *evidence = NULL;
  gboolean ok = FALSE;

  if (g_key_file_has_group(kf, group)) {
    if (!check_keys(kf, group, service_keys, where, error) ||
        !get_string(kf, group, "listen", &listen_text, where, error) ||
        !get_string(kf, group, "token-file", &token, where, error) ||
        !get_string(kf, group, "evidence", &evidence, where, error) ||
        !get_double(kf, group, "stall-timeout", 0.1, 3600, &cfg->stall_seconds,
                    "a number of seconds from 0.1 to 3600", where, error) ||
        !get_word(kf, group, "backend", backends, &cfg->backend, where, error) ||
        !get_uint(kf, group, "batch-size", 1, 64, &cfg->batch_size, where, error) ||
        !get_uint(kf, group, "live-width", 16, 4096, &cfg->live_width, where, error) ||
        !get_uint(kf, group, "live-fps", 1, 30, &cfg->live_fps, where, error))
      goto out;
  }
  if (listen) { /* the command line's */
    g_free(listen_text);
    listen_text = g_strdup(listen);
  }
  GError *err = NULL;
  if (!parse_listen(listen_text ? listen_text : SERVE_DEFAULT_LISTEN, &cfg->listen_host,
                    &cfg->listen_port, &err)) {
    fail(error, listen ? "--listen" : where, listen ? NULL : "listen", "%s", err->message);
    g_error_free(err);
    goto out;
  }
  if (token_file) {
    g_free(token);
    token = g_strdup(token_file);
  }
  if (token && *token) {
    cfg->token_file = g_canonicalize_filename(token, token_file ? NULL : base_dir);
    if (!read_token(cfg, token_file ? "--token-file" : where, error))
      goto out;
  }
  if (evidence && *evidence) {
    cfg->evidence = g_canonicalize_filename(evidence, base_dir);
    if (!folder_writable(cfg->evidence)) {
      fail(error, where, "evidence", "%s cannot be written or made", cfg->evidence);
      goto out;
    }
  }
  ok = TRUE;
out:
  g_free(where);
  g_free(listen_text);
  g_free(token);
  g_free(evidence);
  return ok;
}

/* GKeyFile merges a group given twice and keeps the last of a key given
 * twice, silently; a camera pasted twice must not become one. This scan
 * finds those, and lines that are nothing, with their line numbers. */
static gboolean scan_lines(const gchar *path, const gchar *text, GError **error) {
  gchar **lines = g_strsplit(text, "\n", -1);
  GHashTable *groups = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  GHashTable *keys = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  gchar *group = NULL;
  gboolean ok = TRUE;

  for (guint i = 0; ok && lines[i]; i++) {
    gchar *line = g_strstrip(lines[i]);
    guint no = i + 1;
    if (!*line || *line == '#')
      continue;
    if (*line == '[') {
      gsize n = strlen(line);
      if (line[n - 1] != ']') {
        g_set_error(error, SERVE_CONFIG_ERROR, 0, "%s:%u: \"%s\": a group is [NAME]", path, no,
                    line);
        ok = FALSE;
        break;
      }
      g_free(group);
      group = g_strndup(line + 1, n - 2);
      gpointer first = g_hash_table_lookup(groups, group);
      if (first) {
        g_set_error(error, SERVE_CONFIG_ERROR, 0, "%s:%u: [%s] again (first at line %u)", path,
                    no, group, GPOINTER_TO_UINT(first));
        ok = FALSE;
      }
      g_hash_table_insert(groups, g_strdup(group), GUINT_TO_POINTER(no));
      continue;
    }
    gchar *eq = strchr(line, '=');
    if (!eq || !group) {
      g_set_error(error, SERVE_CONFIG_ERROR, 0,
                  "%s:%u: \"%s\" is %s", path, no, line,
                  group ? "not KEY = VALUE, a [group] or a # comment"
                        : "before the first [group]");
      ok = FALSE;
      break;
    }
    gchar *key = g_strstrip(g_strndup(line, eq - line));
    gchar *full = g_strdup_printf("%s\x1f%s", group, key);
    gpointer first = g_hash_table_lookup(keys, full);
    if (first) {
      g_set_error(error, SERVE_CONFIG_ERROR, 0, "%s:%u: [%s] %s given again (first at line %u)",
                  path, no, group, key, GPOINTER_TO_UINT(first));
      ok = FALSE;
      g_free(full);
    } else {
      g_hash_table_insert(keys, full, GUINT_TO_POINTER(no));
    }
    g_free(key);
  }
  g_free(group);
  g_hash_table_unref(groups);
  g_hash_table_unref(keys);
  g_strfreev(lines);
  return ok;
}

static gboolean read_cameras(ServeConfig *cfg, GKeyFile *kf, const gchar *base_dir,
                             GError **error) {
  gchar **groups = g_key_file_get_groups(kf, NULL);
  gboolean ok = TRUE;
  for (gchar **g = groups; ok && *g; g++) {
    if (!strcmp(*g, "service"))
      continue;
    if (!g_str_has_prefix(*g, CAMERA_PREFIX)) {
      g_set_error(error, SERVE_CONFIG_ERROR, 0,
                  "%s: [%s]: unknown group (groups are [service] and [camera NAME])", cfg->path,
                  *g);
      ok = FALSE;
      break;
    }
    const gchar *name = *g + strlen(CAMERA_PREFIX);
    gchar *where = g_strdup_printf("%s: [%s]", cfg->path, *g);
    CameraConfig *c = camera_config_from_group(kf, *g, name, base_dir, cfg->evidence, where, error);
    g_free(where);
    if (c)
      g_ptr_array_add(cfg->cameras, c);
    else
      ok = FALSE;
  }
  g_strfreev(groups);
  return ok;
}

ServeConfig *serve_config_load(const gchar *path, const gchar *listen, const gchar *token_file,
                               GError **error) {
  ServeConfig *cfg = g_new0(ServeConfig, 1);
  GKeyFile *kf = g_key_file_new();
  gchar *base_dir = NULL, *text = NULL;
  GError *err = NULL;
  gboolean ok = FALSE;

  cfg->stall_seconds = SERVE_DEFAULT_STALL_SECONDS;
  cfg->backend = g_strdup("auto");
  cfg->batch_size = SERVE_DEFAULT_BATCH;
  cfg->live_width = SERVE_DEFAULT_LIVE_WIDTH;
  cfg->live_fps = SERVE_DEFAULT_LIVE_FPS;
  cfg->cameras = g_ptr_array_new_with_free_func((GDestroyNotify)camera_config_free);
  if (path) {
    cfg->path = g_strdup(path);
    gchar *abs = g_canonicalize_filename(path, NULL);
    base_dir = g_path_get_dirname(abs);
    g_free(abs);
    gsize len;
    if (!g_file_get_contents(path, &text, &len, &err)) {
      g_set_error(error, SERVE_CONFIG_ERROR, 0, "%s", err->message);
      g_error_free(err);
      goto out;
    }
    if (!scan_lines(path, text, error))
      goto out;
    if (!g_key_file_load_from_data(kf, text, len, G_KEY_FILE_NONE, &err)) {
      g_set_error(error, SERVE_CONFIG_ERROR, 0, "%s: %s", path, err->message);
      g_error_free(err);
      goto out;
    }
  }
  ok = read_service(cfg, kf, base_dir, listen, token_file, error) &&
       read_cameras(cfg, kf, base_dir, error);
out:
  g_free(text);
  g_free(base_dir);
  g_key_file_unref(kf);
  if (!ok) {
    serve_config_free(cfg);
    return NULL;
  }
  return cfg;
}

void serve_config_free(ServeConfig *cfg) {
  if (!cfg)
    return;
  g_free(cfg->path);
  g_free(cfg->listen_host);
  g_free(cfg->token_file);
  g_free(cfg->token);
  g_free(cfg->evidence);
  g_free(cfg->backend);
  g_ptr_array_unref(cfg->cameras);
  g_free(cfg);
}
