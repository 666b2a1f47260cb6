/* faprompt-serve's web view in this process (serve/ without main()), so that
 * valgrind watches it (suite serve-valgrind): the evidence path rule on a
 * folder with links leading out; the page; a camera's anomaly in its
 * events with the snapshot fapromptrecord wrote, served with its bytes;
 * the live view's stream (a part, a JPEG), its viewer counted and gone
 * again when the client leaves, a stream ended by the camera's removal;
 * the score history.
 *
 * usage: test_serve_web TINY_MODEL   (TAP via g_test) */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <gst/gst.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "config.h"
#include "evidence.h"
#include "http.h"
#include "live.h"
#include "service.h"
#include "web.h"

static char *model, *tmpdir;

#define WAIT_S 90 /* valgrind: generous, each wait ends when its condition holds */

static gboolean timer_fired(gpointer data) {
  *(gboolean *)data = TRUE;
  return G_SOURCE_REMOVE;
}

static void spin(double seconds) {
  gboolean fired = FALSE;
  g_timeout_add((guint)(seconds * 1000), timer_fired, &fired);
  while (!fired)
    g_main_context_iteration(NULL, TRUE);
}

#define WAIT_FOR(cond, what)                                                                       \
  do {                                                                                             \
    gint64 deadline_ = g_get_monotonic_time() + WAIT_S * G_USEC_PER_SEC;                           \
    while (!(cond)) {                                                                              \
      if (g_get_monotonic_time() > deadline_)                                                      \
        g_error("not within %d s: %s", WAIT_S, what);                                              \
      spin(0.05);                                                                                  \
    }                                                                                              \
  } while (0)

/* ---- the evidence path rule ----------------------------------------------------- */

static void test_evidence_open(void) {
  gchar *root = g_build_filename(tmpdir, "rule", NULL);
  gchar *inside = g_build_filename(root, "inside", NULL);
  gchar *secret = g_build_filename(tmpdir, "secret.txt", NULL);
  g_assert_cmpint(g_mkdir_with_parents(inside, 0700), ==, 0);
  g_assert_true(g_file_set_contents(secret, "secret", -1, NULL));
  gchar *ok = g_build_filename(inside, "ok.jpg", NULL);
  g_assert_true(g_file_set_contents(ok, "\xff\xd8ok\xff\xd9", -1, NULL));
  gchar *link = g_build_filename(root, "link.jpg", NULL);
  gchar *dirlink = g_build_filename(root, "out", NULL);
  gchar *innerlink = g_build_filename(root, "inner-link.jpg", NULL);
  g_assert_cmpint(symlink(secret, link), ==, 0);
  g_assert_cmpint(symlink(tmpdir, dirlink), ==, 0);
  g_assert_cmpint(symlink(ok, innerlink), ==, 0); /* even a link inside is not followed */

  int dir = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  g_assert_cmpint(dir, >=, 0);
  int fd = evidence_open(dir, "inside/ok.jpg");
  g_assert_cmpint(fd, >=, 0);
  close(fd);
  static const struct {
    const char *path;
    int err;
  } refused[] = {
      {"../secret.txt", EINVAL},     {"inside/../../secret.txt", EINVAL},
      {"/etc/passwd", EINVAL},       {"", EINVAL},
      {"inside/", EINVAL},           {"./inside/ok.jpg", EINVAL},
      {"inside//ok.jpg", EINVAL},    {"link.jpg", ELOOP},
      {"inner-link.jpg", ELOOP},     {"out/secret.txt", 0},
      {"missing.jpg", ENOENT},       {"inside/ok.jpg/x", ENOENT},
      {"a/b/c/d/e/f/g/h/i", EINVAL},
  };
  for (guint i = 0; i < G_N_ELEMENTS(refused); i++) {
    errno = 0;
    fd = evidence_open(dir, refused[i].path);
    int err = errno;
    g_test_message("%s: %d (%s)", refused[i].path, fd, g_strerror(err));
    g_assert_cmpint(fd, ==, -1);
    if (refused[i].err)
      g_assert_cmpint(err, ==, refused[i].err);
  }
  /* a folder opens (the route then finds it is not a regular file) */
  fd = evidence_open(dir, "inside");
  g_assert_cmpint(fd, >=, 0);
  close(fd);
  close(dir);
  g_assert_cmpstr(evidence_content_type("a/b.JPG"), ==, "image/jpeg");
  g_assert_cmpstr(evidence_content_type("b.json"), ==, "application/json");
  g_assert_cmpstr(evidence_content_type("b.mkv"), ==, "video/x-matroska");
  g_assert_cmpstr(evidence_content_type("b.png"), ==, "image/png");
  g_assert_cmpstr(evidence_content_type("b.mp4"), ==, "video/mp4");
  g_assert_cmpstr(evidence_content_type("x.d/noext"), ==, "application/octet-stream");
  g_free(root);
  g_free(inside);
  g_free(secret);
  g_free(ok);
  g_free(link);
  g_free(dirlink);
  g_free(innerlink);
}

/* ---- the service with its web routes ---------------------------------------------- */

typedef struct {
  ServeConfig *config;
  HttpServer *http;
  Service *svc;
  gchar *base;
  SoupSession *session;
} Serve;

static void serve_start(Serve *s, const gchar *text) {
  GString *t = g_string_new(text);
  g_string_replace(t, "MODEL", model, 0);
  g_string_replace(t, "TMP", tmpdir, 0);
  gchar *path = g_build_filename(tmpdir, "web.conf", NULL);
  g_assert_true(g_file_set_contents(path, t->str, -1, NULL));
  g_string_free(t, TRUE);
  GError *err = NULL;
  s->config = serve_config_load(path, NULL, NULL, &err);
  g_assert_no_error(err);
  g_free(path);
  s->http = http_server_new(s->config->listen_host, s->config->listen_port, &err);
  g_assert_no_error(err);
  s->svc = service_new(s->config, &err);
  g_assert_no_error(err);
  api_register(s->http, s->svc);
  web_register(s->http, s->svc);
  service_start(s->svc);
  s->base = g_strdup_printf("http://127.0.0.1:%u", http_server_port(s->http));
  GProxyResolver *direct = g_simple_proxy_resolver_new(NULL, NULL);
  s->session = soup_session_new_with_options("proxy-resolver", direct, NULL);
  g_object_unref(direct);
}

static void stopped(gboolean all, gpointer data) {
  g_assert_true(all);
  *(gboolean *)data = TRUE;
}

static void serve_stop(Serve *s) {
  gboolean done = FALSE;
  service_shutdown(s->svc, stopped, &done);
  while (!done)
    g_main_context_iteration(NULL, TRUE);
  g_object_unref(s->session);
  http_server_free(s->http);
  service_free(s->svc);
  serve_config_free(s->config);
  g_free(s->base);
}

typedef struct {
  gboolean done;
  GBytes *body;
  GInputStream *stream;
  GError *error;
} Reply;

static void read_done(GObject *source, GAsyncResult *res, gpointer data) {
  Reply *r = data;
  r->body = soup_session_send_and_read_finish(SOUP_SESSION(source), res, &r->error);
  r->done = TRUE;
}

static SoupMessage *message(Serve *s, const gchar *method, const gchar *path) {
  gchar *uri = g_strconcat(s->base, path, NULL);
  SoupMessage *msg = soup_message_new(method, uri);
  g_free(uri);
  return msg;
}

/* The status; the body in *out (g_free), its Content-Type in *type. */
static guint get(Serve *s, const gchar *method, const gchar *path, const gchar *token, gchar **out,
                 gsize *len, gchar **type) {
  SoupMessage *msg = message(s, method, path);
  if (token) {
    gchar *auth = g_strconcat("Bearer ", token, NULL);
    soup_message_headers_replace(soup_message_get_request_headers(msg), "Authorization", auth);
    g_free(auth);
  }
  Reply r = {0};
  soup_session_send_and_read_async(s->session, msg, G_PRIORITY_DEFAULT, NULL, read_done, &r);
  while (!r.done)
    g_main_context_iteration(NULL, TRUE);
  g_assert_no_error(r.error);
  guint status = soup_message_get_status(msg);
  gsize n;
  const gchar *data = g_bytes_get_data(r.body, &n);
  if (out) { /* bytes, NUL-terminated */
    *out = g_malloc(n + 1);
    if (n)
      memcpy(*out, data, n);
    (*out)[n] = '\0';
  }
  if (len)
    *len = n;
  if (type)
    *type = g_strdup(
        soup_message_headers_get_content_type(soup_message_get_response_headers(msg), NULL));
  g_bytes_unref(r.body);
  g_object_unref(msg);
  return status;
}

static JsonNode *get_json(Serve *s, const gchar *path) {
  gchar *out;
  g_assert_cmpuint(get(s, "GET", path, NULL, &out, NULL, NULL), ==, 200);
  JsonNode *node = json_from_string(out, NULL);
  g_assert_nonnull(node);
  g_free(out);
  return node;
}

static gint64 camera_member(Serve *s, const gchar *name, const gchar *member) {
  gchar *path = g_strconcat("/api/cameras/", name, NULL);
  JsonNode *n = get_json(s, path);
  gint64 v = json_object_get_int_member(json_node_get_object(n), member);
  json_node_unref(n);
  g_free(path);
  return v;
}

/* The first event's snapshot URL, or NULL. */
static gchar *first_snapshot(Serve *s, const gchar *name) {
  gchar *path = g_strconcat("/api/cameras/", name, "/events", NULL);
  JsonNode *n = get_json(s, path);
  JsonArray *events = json_object_get_array_member(json_node_get_object(n), "events");
  gchar *url = NULL;
  if (json_array_get_length(events) > 0) {
    JsonObject *e = json_array_get_object_element(events, 0);
    if (!json_object_get_null_member(e, "snapshot"))
      url = g_strdup(json_object_get_string_member(e, "snapshot"));
  }
  json_node_unref(n);
  g_free(path);
  return url;
}

static guint history_length(Serve *s, const gchar *name) {
  gchar *path = g_strconcat("/api/cameras/", name, "/history", NULL);
  JsonNode *n = get_json(s, path);
  guint len = json_array_get_length(json_object_get_array_member(json_node_get_object(n), "t"));
  json_node_unref(n);
  g_free(path);
  return len;
}

/* A live client: the stream and what has come so far. */
typedef struct {
  SoupMessage *msg;
  GInputStream *stream;
  GByteArray *data;
  gboolean opened, reading, eof;
  GError *error;
  guint8 buf[16384];
} Live;

static void live_read(Live *l);

static void live_got(GObject *source, GAsyncResult *res, gpointer data) {
  Live *l = data;
  gssize n = g_input_stream_read_finish(G_INPUT_STREAM(source), res, &l->error);
  l->reading = FALSE;
  if (n > 0)
    g_byte_array_append(l->data, l->buf, (guint)n);
  else
    l->eof = TRUE;
}

static void live_read(Live *l) {
  l->reading = TRUE;
  g_input_stream_read_async(l->stream, l->buf, sizeof l->buf, G_PRIORITY_DEFAULT, NULL, live_got,
                            l);
}

static void live_opened(GObject *source, GAsyncResult *res, gpointer data) {
  Live *l = data;
  l->stream = soup_session_send_finish(SOUP_SESSION(source), res, &l->error);
  l->opened = TRUE;
}

static Live *live_open(Serve *s, const gchar *name) {
  Live *l = g_new0(Live, 1);
  l->data = g_byte_array_new();
  gchar *path = g_strconcat("/live/", name, ".mjpg", NULL);
  l->msg = message(s, "GET", path);
  g_free(path);
  soup_session_send_async(s->session, l->msg, G_PRIORITY_DEFAULT, NULL, live_opened, l);
  WAIT_FOR(l->opened, "the live view's headers");
  g_assert_no_error(l->error);
  g_assert_cmpuint(soup_message_get_status(l->msg), ==, 200);
  const char *type =
      soup_message_headers_get_one(soup_message_get_response_headers(l->msg), "Content-Type");
  g_assert_true(g_str_has_prefix(type, "multipart/x-mixed-replace"));
  return l;
}

/* Reads until @data holds @needle (TRUE) or the stream ends (FALSE). */
static gboolean live_until(Live *l, const gchar *needle) {
  gint64 deadline = g_get_monotonic_time() + WAIT_S * G_USEC_PER_SEC;
  while (!l->data->len || !memmem(l->data->data, l->data->len, needle, strlen(needle))) {
    if (l->eof || g_get_monotonic_time() > deadline)
      return FALSE;
    if (!l->reading)
      live_read(l);
    g_main_context_iteration(NULL, TRUE);
  }
  return TRUE;
}

static void live_close(Live *l) {
  while (l->reading) /* the read in progress ends first */
    g_main_context_iteration(NULL, TRUE);
  g_input_stream_close(l->stream, NULL, NULL);
  g_object_unref(l->stream);
  g_object_unref(l->msg);
  g_byte_array_unref(l->data);
  g_clear_error(&l->error);
  g_free(l);
}

#define SMALL "width=64&height=48&framerate=15"

static void test_web(void) {
  Serve s = {0};
  serve_start(&s, "[service]\nlisten = 127.0.0.1:0\ntoken-file = TMP/token\n"
                  "evidence = TMP/evidence\nlive-width = 32\nlive-fps = 5\n\n"
                  "[camera hot]\nsource = test://ball?" SMALL "\nmodel = MODEL\n"
                  "image-threshold = 0\n\n"
                  "[camera calm]\nsource = test://snow?" SMALL "\nmodel = MODEL\n"
                  "image-threshold = 1\nrecord = false\n");
  gchar *out, *type;
  gsize len;
  g_assert_cmpuint(get(&s, "GET", "/", NULL, &out, NULL, &type), ==, 200);
  g_assert_cmpstr(type, ==, "text/html");
  g_assert_nonnull(strstr(out, "/web/app.js"));
  g_free(out);
  g_free(type);
  g_assert_cmpuint(get(&s, "GET", "/web/app.js", NULL, NULL, NULL, NULL), ==, 200);
  g_assert_cmpuint(get(&s, "GET", "/nothing", NULL, NULL, NULL, NULL), ==, 404);
  g_assert_cmpuint(get(&s, "POST", "/", NULL, NULL, NULL, NULL), ==, 405);
  g_assert_cmpuint(get(&s, "GET", "/api/cameras/nobody/events", NULL, NULL, NULL, NULL), ==, 404);
  g_assert_cmpuint(get(&s, "GET", "/api/cameras/hot/other", NULL, NULL, NULL, NULL), ==, 404);

  /* the anomaly, its snapshot served with the file's bytes */
  gchar *snap = NULL;
  WAIT_FOR((snap = first_snapshot(&s, "hot")) != NULL, "hot's first event with its snapshot");
  g_test_message("snapshot: %s", snap);
  gchar *file = g_build_filename(tmpdir, "evidence", snap + strlen("/evidence/"), NULL);
  gchar *want;
  gsize want_len;
  g_assert_true(g_file_get_contents(file, &want, &want_len, NULL));
  g_assert_cmpuint(get(&s, "GET", snap, NULL, &out, &len, &type), ==, 200);
  g_assert_cmpstr(type, ==, "image/jpeg");
  g_assert_cmpuint(len, ==, want_len);
  g_assert_cmpint(memcmp(out, want, len), ==, 0);
  g_free(out);
  g_free(type);
  g_free(want);
  g_free(file);
  g_free(snap);
  g_assert_cmpint(camera_member(&s, "calm", "events"), ==, 0);
  WAIT_FOR(history_length(&s, "calm") >= 2, "two seconds of calm's history");

  /* the live view: idle, then a client, then idle again */
  g_assert_cmpint(camera_member(&s, "calm", "live-frames"), ==, 0);
  Live *l = live_open(&s, "calm");
  g_assert_cmpint(camera_member(&s, "calm", "viewers"), ==, 1);
  g_assert_true(live_until(l, "\r\n\r\n\xff\xd8"));
  g_assert_true(live_until(l, "\xff\xd9\r\n--" LIVE_BOUNDARY));
  live_close(l);
  WAIT_FOR(camera_member(&s, "calm", "viewers") == 0, "calm's viewer gone");
  g_assert_cmpint(camera_member(&s, "calm", "live-frames"), >, 0);

  /* a camera removed under its client: the stream ends cleanly */
  l = live_open(&s, "hot");
  g_assert_true(live_until(l, "\r\n\r\n\xff\xd8"));
  g_assert_cmpuint(get(&s, "DELETE", "/api/cameras/hot", "s3cret", NULL, NULL, NULL), ==, 200);
  g_assert_true(live_until(l, "--" LIVE_BOUNDARY "--\r\n"));
  while (!l->eof) {
    if (!l->reading)
      live_read(l);
    g_main_context_iteration(NULL, TRUE);
  }
  g_assert_no_error(l->error);
  live_close(l);
  serve_stop(&s);
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  g_log_set_debug_enabled(FALSE);
  if (argc < 2) {
    g_printerr("usage: %s TINY_MODEL\n", argv[0]);
    return 2;
  }
  model = g_canonicalize_filename(argv[1], NULL);
  tmpdir = g_dir_make_tmp("fap-serve-web-XXXXXX", NULL);
  gchar *token = g_build_filename(tmpdir, "token", NULL);
  g_assert_true(g_file_set_contents(token, "s3cret\n", -1, NULL));
  g_free(token);
  g_test_add_func("/serve-web/evidence-open", test_evidence_open);
  g_test_add_func("/serve-web/page-events-live", test_web);
  int rc = g_test_run();
  gchar *rm = g_strdup_printf("rm -rf '%s'", tmpdir);
  if (system(rm) != 0)
    g_printerr("could not remove %s\n", tmpdir);
  g_free(rm);
  g_free(tmpdir);
  g_free(model);
  gst_deinit();
  return rc;
}
