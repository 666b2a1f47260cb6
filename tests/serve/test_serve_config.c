/* faprompt-serve's configuration (serve/config.c) and the API's camera
 * bodies (serve/api.c), which go through the same checks: every problem is
 * an error that names the file (or the camera of the request), the group,
 * the key and what is wrong; a good file gives the values written.
 *
 * usage: test_serve_config TINY_MODEL   (TAP via g_test; GStreamer for
 *        the test patterns and the element checks) */
#include <glib/gstdio.h>
#include <gst/gst.h>
#include <string.h>

#include "api.h"
#include "config.h"

static char *model;
static char *tmpdir;

static gchar *write_file(const gchar *name, const gchar *text) {
  gchar *path = g_build_filename(tmpdir, name, NULL);
  g_assert_true(g_file_set_contents(path, text, -1, NULL));
  return path;
}

/* The config @text (MODEL replaced by the tiny model's path) fails, and
 * the message holds every one of @parts (NULL-terminated). */
static void expect_error(const gchar *text, ...) {
  GString *t = g_string_new(text);
  g_string_replace(t, "MODEL", model, 0);
  gchar *path = write_file("bad.conf", t->str);
  g_string_free(t, TRUE);
  GError *err = NULL;
  ServeConfig *cfg = serve_config_load(path, NULL, NULL, &err);
  g_assert_null(cfg);
  g_assert_nonnull(err);
  g_test_message("%s", err->message);
  g_assert_true(g_str_has_prefix(err->message, path));
  va_list ap;
  va_start(ap, text);
  for (const gchar *part; (part = va_arg(ap, const gchar *));)
    if (!strstr(err->message, part))
      g_error("\"%s\" not in the message: %s", part, err->message);
  va_end(ap);
  g_error_free(err);
  g_free(path);
}

#define CAM "[camera door]\nsource = test://ball\nmodel = MODEL\n"

static void test_camera_values(void) {
  expect_error(CAM "inference-interval = abc\n", "[camera door] inference-interval:", "\"abc\"",
               "whole number", NULL);
  expect_error(CAM "inference-interval = 0\n", "[camera door] inference-interval:", NULL);
  expect_error(CAM "image-threshold = 1.5\n", "[camera door] image-threshold:", "\"1.5\"", NULL);
  expect_error(CAM "pixel-threshold = -0.5\n", "[camera door] pixel-threshold:", "write -1", NULL);
  expect_error(CAM "draw-heatmap = maybe\n", "[camera door] draw-heatmap:", "true or false", NULL);
  expect_error(CAM "treshold = 0.3\n", "[camera door] treshold:", "unknown key",
               "image-threshold", NULL);
  expect_error(CAM "publish-policy = sometimes\n", "[camera door] publish-policy:", "on-change",
               NULL);
  expect_error(CAM "record = true\n", "[camera door] record:", "evidence", NULL);
  expect_error(CAM "publish = ftp://x/y\n", "[camera door] publish:", "mqtt://", NULL);
  expect_error(CAM "publish = mqtt://broker/line/#\n", "[camera door] publish:", "wildcards", NULL);
  expect_error(CAM "publish = mqtt://broker:99999/t\n", "[camera door] publish:", "port", NULL);
}

static void test_camera_sources_models(void) {
  expect_error("[camera door]\nmodel = MODEL\n", "[camera door] source:", "missing", NULL);
  expect_error("[camera door]\nsource = ftp://cam/x\nmodel = MODEL\n", "[camera door] source:",
               "rtsp://", NULL);
  expect_error("[camera door]\nsource = test://sparkles\nmodel = MODEL\n",
               "[camera door] source:", "\"sparkles\"", "ball", NULL);
  expect_error("[camera door]\nsource = test://ball?width=0\nmodel = MODEL\n",
               "[camera door] source:", "width", NULL);
  expect_error("[camera door]\nsource = file:///nonexistent/clip.mkv\nmodel = MODEL\n",
               "[camera door] source:", "/nonexistent/clip.mkv", NULL);
  expect_error("[camera door]\nsource = rtsp:///path\nmodel = MODEL\n", "[camera door] source:",
               "host", NULL);
  expect_error("[camera door]\nsource = v4l2://video0\nmodel = MODEL\n", "[camera door] source:",
               "/dev/video0", NULL);
  expect_error("[camera door]\nsource = test://ball\n", "[camera door] model:", "missing", NULL);
  expect_error("[camera door]\nsource = test://ball\nmodel = /nonexistent/m.safetensors\n",
               "[camera door] model:", "/nonexistent/m.safetensors", "faprompt-convert", NULL);
  expect_error("[camera a/b]\nsource = test://ball\nmodel = MODEL\n", "[camera a/b]",
               "cannot name a camera", NULL);
}

static void test_service_and_syntax(void) {
  expect_error("[service]\nstall-timeout = 0\n", "[service] stall-timeout:", "0.1", NULL);
  expect_error("[service]\nlisten = localhost\n", "[service] listen:", "ADDRESS:PORT", NULL);
  expect_error("[service]\nlisten = example.org:80\n", "[service] listen:", "IP address", NULL);
  expect_error("[service]\nbackend = tpu\n", "[service] backend:", "cpu", NULL);
  expect_error("[service]\nbatch-size = 0\n", "[service] batch-size:", NULL);
  expect_error("[service]\nlive-width = 8\n", "[service] live-width:", "16 to 4096", NULL);
  expect_error("[service]\nlive-fps = 0\n", "[service] live-fps:", "1 to 30", NULL);
  expect_error("[service]\ntoken-file = /nonexistent/token\n", "[service] token-file:",
               "/nonexistent/token", NULL);
  gchar *empty = write_file("empty-token", "  \n");
  gchar *text = g_strdup_printf("[service]\ntoken-file = %s\n", empty);
  expect_error(text, "[service] token-file:", "empty", NULL);
  g_free(text);
  g_free(empty);
  expect_error("[service]\nport = 80\n", "[service] port:", "unknown key", NULL);
  expect_error("[cameras door]\nsource = test://ball\n", "[cameras door]", "unknown group", NULL);
  /* GKeyFile would merge these silently */
  expect_error(CAM "\n" CAM, ":5:", "[camera door] again (first at line 1)", NULL);
  expect_error(CAM "source = test://snow\n", ":4:", "[camera door] source given again", NULL);
  expect_error(CAM "this is not a key\n", ":4:", "not KEY = VALUE", NULL);
  expect_error("source = test://ball\n", ":1:", "before the first [group]", NULL);
}

/* Nothing starts half-configured: a good camera before a bad one does not
 * make the load succeed. */
static void test_all_or_nothing(void) {
  expect_error("[camera good]\nsource = test://ball\nmodel = MODEL\n\n"
               "[camera bad]\nsource = test://ball\nmodel = MODEL\ninference-interval = -3\n",
               "[camera bad] inference-interval:", NULL);
}

static void test_good_file(void) {
  gchar *sub = g_build_filename(tmpdir, "sub", NULL);
  g_mkdir(sub, 0700);
  gchar *model_copy = g_build_filename(sub, "m.safetensors", NULL);
  gchar *data;
  gsize len;
  g_assert_true(g_file_get_contents(model, &data, &len, NULL));
  g_assert_true(g_file_set_contents(model_copy, data, (gssize)len, NULL));
  g_free(data);
  gchar *token = write_file("token", "s3cret\n");
  gchar *evidence = g_build_filename(tmpdir, "evidence", NULL);
  gchar *text = g_strdup_printf(
      "# two cameras\n[service]\nlisten = [::1]:9000\ntoken-file = token\nevidence = %s\n"
      "stall-timeout = 2.5\nbackend = cpu\nbatch-size = 8\nlive-width = 320\nlive-fps = 2\n\n"
      "[camera door]\nsource = test://smpte?width=64&height=48&framerate=5\n"
      "model = sub/m.safetensors\nimage-threshold = 0.7\npixel-threshold = -1\n"
      "inference-interval = 10\ndraw-heatmap = no\nrecord = off\n"
      "publish = mqtt://broker.local:1884/line1/{source}\npublish-policy = anomalous\n\n"
      "[camera yard]\nsource = rtsp://user:pw@10.0.0.5:554/stream1\nmodel = %s\n"
      "publish = stdout\n",
      evidence, model);
  gchar *path = write_file("good.conf", text);
  GError *err = NULL;
  ServeConfig *cfg = serve_config_load(path, NULL, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpstr(cfg->listen_host, ==, "::1");
  g_assert_cmpuint(cfg->listen_port, ==, 9000);
  g_assert_cmpstr(cfg->token_file, ==, token);
  g_assert_cmpstr(cfg->token, ==, "s3cret");
  g_assert_cmpstr(cfg->evidence, ==, evidence);
  g_assert_cmpfloat(cfg->stall_seconds, ==, 2.5);
  g_assert_cmpstr(cfg->backend, ==, "cpu");
  g_assert_cmpuint(cfg->batch_size, ==, 8);
  g_assert_cmpuint(cfg->live_width, ==, 320);
  g_assert_cmpuint(cfg->live_fps, ==, 2);
  g_assert_cmpuint(cfg->cameras->len, ==, 2);
  const CameraConfig *door = cfg->cameras->pdata[0], *yard = cfg->cameras->pdata[1];
  g_assert_cmpstr(door->name, ==, "door");
  g_assert_cmpint(door->source.kind, ==, SOURCE_TEST);
  g_assert_cmpstr(door->source.location, ==, "smpte");
  g_assert_cmpuint(door->source.width, ==, 64);
  g_assert_cmpuint(door->source.height, ==, 48);
  g_assert_cmpuint(door->source.framerate, ==, 5);
  g_assert_cmpstr(door->model, ==, model_copy); /* relative to the file's folder */
  g_assert_cmpfloat(door->image_threshold, ==, 0.7);
  g_assert_cmpfloat(door->pixel_threshold, ==, -1);
  g_assert_cmpuint(door->inference_interval, ==, 10);
  g_assert_false(door->draw_heatmap);
  g_assert_false(door->record);
  g_assert_cmpint(door->publish, ==, PUBLISH_MQTT);
  g_assert_cmpstr(door->publish_host, ==, "broker.local");
  g_assert_cmpuint(door->publish_port, ==, 1884);
  g_assert_cmpstr(door->publish_topic, ==, "line1/{source}");
  g_assert_cmpstr(door->publish_policy, ==, "anomalous");
  g_assert_cmpint(yard->source.kind, ==, SOURCE_RTSP);
  g_assert_true(yard->record); /* evidence set: recorded unless record = false */
  g_assert_true(yard->draw_heatmap);
  g_assert_cmpuint(yard->inference_interval, ==, 1);
  g_assert_cmpint(yard->publish, ==, PUBLISH_STDOUT);
  g_assert_cmpstr(yard->publish_policy, ==, "on-change");
  gchar *shown = source_spec_display(&yard->source);
  g_assert_null(strstr(shown, "pw"));
  g_assert_nonnull(strstr(shown, "10.0.0.5:554/stream1"));
  g_free(shown);
  serve_config_free(cfg);

  /* the command line wins over the file */
  gchar *other = write_file("other-token", "t2");
  cfg = serve_config_load(path, "127.0.0.1:0", other, &err);
  g_assert_no_error(err);
  g_assert_cmpstr(cfg->listen_host, ==, "127.0.0.1");
  g_assert_cmpuint(cfg->listen_port, ==, 0);
  g_assert_cmpstr(cfg->token, ==, "t2");
  serve_config_free(cfg);
  cfg = serve_config_load(path, "nonsense", NULL, &err);
  g_assert_null(cfg);
  g_assert_true(g_str_has_prefix(err->message, "--listen: "));
  g_clear_error(&err);

  /* no file: the defaults, no cameras */
  cfg = serve_config_load(NULL, NULL, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpstr(cfg->listen_host, ==, "127.0.0.1");
  g_assert_cmpuint(cfg->listen_port, ==, 8090);
  g_assert_null(cfg->token);
  g_assert_cmpfloat(cfg->stall_seconds, ==, SERVE_DEFAULT_STALL_SECONDS);
  g_assert_cmpuint(cfg->cameras->len, ==, 0);
  serve_config_free(cfg);

  g_free(other);
  g_free(path);
  g_free(text);
  g_free(evidence);
  g_free(token);
  g_free(model_copy);
  g_free(sub);
}

static void expect_json_error(const gchar *json, const gchar *part) {
  GString *t = g_string_new(json);
  g_string_replace(t, "MODEL", model, 0);
  GError *err = NULL;
  CameraConfig *c = api_camera_from_json(t->str, t->len, NULL, &err);
  g_assert_null(c);
  g_test_message("%s", err->message);
  if (!strstr(err->message, part))
    g_error("\"%s\" not in the message: %s", part, err->message);
  g_error_free(err);
  g_string_free(t, TRUE);
}

static void test_json(void) {
  gchar *json = g_strdup_printf("{\"name\": \"gate\", \"source\": \"test://snow\", \"model\": "
                                "\"%s\", \"inference-interval\": 5, \"image-threshold\": 0.25, "
                                "\"draw-heatmap\": false, \"publish\": null}",
                                model);
  GError *err = NULL;
  CameraConfig *c = api_camera_from_json(json, strlen(json), NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpstr(c->name, ==, "gate");
  g_assert_cmpstr(c->source.location, ==, "snow");
  g_assert_cmpstr(c->model, ==, model);
  g_assert_cmpuint(c->inference_interval, ==, 5);
  g_assert_cmpfloat(c->image_threshold, ==, 0.25);
  g_assert_false(c->draw_heatmap);
  g_assert_cmpint(c->publish, ==, PUBLISH_NONE);
  camera_config_free(c);
  g_free(json);

  expect_json_error("{\"name\": \"gate\", ", "not JSON");
  expect_json_error("[1, 2]", "JSON object");
  expect_json_error("{\"source\": \"test://snow\"}", "\"name\"");
  expect_json_error("{\"name\": 7}", "\"name\"");
  expect_json_error("{\"name\": \"gate\"}", "camera gate: source: missing");
  expect_json_error("{\"name\": \"gate\", \"source\": \"test://snow\", \"model\": \"MODEL\", "
                    "\"inference-interval\": 0}",
                    "camera gate: inference-interval:");
  expect_json_error("{\"name\": \"gate\", \"source\": \"test://snow\", \"model\": \"MODEL\", "
                    "\"colour\": \"red\"}",
                    "camera gate: colour: unknown key");
  expect_json_error("{\"name\": \"gate\", \"source\": \"test://snow\", \"model\": \"MODEL\", "
                    "\"image-threshold\": [0.5]}",
                    "camera gate: image-threshold: must be a string, number or boolean");
  /* a request has no folder to resolve a relative path against */
  expect_json_error("{\"name\": \"gate\", \"source\": \"test://snow\", \"model\": \"m.st\"}",
                    "not an absolute path");
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  if (argc < 2) {
    g_printerr("usage: %s TINY_MODEL\n", argv[0]);
    return 2;
  }
  model = g_canonicalize_filename(argv[1], NULL); /* the configs name it from elsewhere */
  tmpdir = g_dir_make_tmp("fap-serve-config-XXXXXX", NULL);
  g_test_add_func("/serve-config/camera-values", test_camera_values);
  g_test_add_func("/serve-config/sources-models", test_camera_sources_models);
  g_test_add_func("/serve-config/service-and-syntax", test_service_and_syntax);
  g_test_add_func("/serve-config/all-or-nothing", test_all_or_nothing);
  g_test_add_func("/serve-config/good-file", test_good_file);
  g_test_add_func("/serve-config/json", test_json);
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
