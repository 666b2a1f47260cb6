/* faprompt-serve's reload (serve/reload.c) in this process, so that valgrind
 * and the sanitizers watch it (suite serve-valgrind): a file rewritten with
 * a camera added, one removed, one whose source changed, one whose
 * threshold, interval and model changed, one untouched; the untouched and
 * the tuned cameras are the same Camera objects after it, their counts
 * going on; an invalid file and one naming an API camera change nothing;
 * a reload while shutting down is refused. The program's side (SIGHUP, the
 * log, frames counted in every second) is tests/serve/test_reload.py.
 *
 * usage: test_serve_reload TINY_MODEL   (TAP via g_test) */
#include <glib/gstdio.h>
#include <gst/gst.h>
#include <string.h>

#include "config.h"
#include "reload.h"
#include "service.h"

static char *model, *model2, *tmpdir, *path;

#define WAIT_S 90

static void write_config(const gchar *text) {
  GString *t = g_string_new(text);
  g_string_replace(t, "MODEL2", model2, 0);
  g_string_replace(t, "MODEL", model, 0);
  g_assert_true(g_file_set_contents(path, t->str, -1, NULL));
  g_string_free(t, TRUE);
}

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

static CameraStatus status_of(Service *svc, const gchar *name) {
  CameraStatus st;
  Camera *cam = service_find(svc, name);
  g_assert_nonnull(cam);
  camera_status(cam, g_get_monotonic_time(), &st);
  return st;
}

static gboolean all_running(Service *svc) {
  for (guint i = 0; i < service_count(svc); i++) {
    CameraStatus st;
    camera_status(service_camera(svc, i), g_get_monotonic_time(), &st);
    if (st.state != CAMERA_RUNNING || st.stats.frames_out < 3)
      return FALSE;
  }
  return TRUE;
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

#define CAM(name, pattern, extra)                                                                  \
  "[camera " name "]\nsource = test://" pattern "?width=64&height=48&framerate=15\n"              \
  "model = MODEL\n" extra "\n"

static void stopped(gboolean all, gpointer data) {
  g_assert_true(all);
  *(gboolean *)data = TRUE;
}

static void test_reload(void) {
  GError *err = NULL;
  write_config("[service]\nlisten = 127.0.0.1:0\n\n" CAM("keep", "ball", "")
                   CAM("gone", "smpte", "") CAM("moved", "snow", "")
                       CAM("tuned", "gradient", "image-threshold = 0.9\n"));
  ServeConfig *config = serve_config_load(path, NULL, NULL, &err);
  g_assert_no_error(err);
  Service *svc = service_new(config, &err);
  g_assert_no_error(err);
  service_start(svc);
  Reload *r = reload_new(config, svc, NULL, NULL);
  /* a camera of the API's own */
  GKeyFile *kf = g_key_file_new();
  g_key_file_set_string(kf, "c", "source", "test://pinwheel?width=64&height=48&framerate=15");
  g_key_file_set_string(kf, "c", "model", model);
  CameraConfig *api = camera_config_from_group(kf, "c", "api-cam", NULL, NULL, "request", &err);
  g_assert_no_error(err);
  g_key_file_unref(kf);
  g_assert_cmpint(service_add(svc, api, &err), ==, SERVICE_ADD_OK);
  WAIT_FOR(all_running(svc), "five cameras running");
  Camera *keep = service_find(svc, "keep"), *tuned = service_find(svc, "tuned"),
         *apic = service_find(svc, "api-cam");
  CameraStatus keep0 = status_of(svc, "keep"), tuned0 = status_of(svc, "tuned");

  write_config("[service]\nlisten = 127.0.0.1:0\nstall-timeout = 20\n\n" CAM("keep", "ball", "")
                   CAM("moved", "checkers-4", "")
                       CAM("tuned", "gradient", "image-threshold = 0.3\ninference-interval = 2\n"
                                                "model = MODEL2\n")
                           CAM("new", "circular", ""));
  /* MODEL2 given twice in tuned: the file's own check refuses that */
  g_assert_false(reload_apply(r, &err));
  g_test_message("refused: %s", err->message);
  g_assert_nonnull(strstr(err->message, "[camera tuned] model given again"));
  g_clear_error(&err);
  g_assert_nonnull(service_find(svc, "gone"));
  g_assert_cmpstr(camera_config(service_find(svc, "moved"))->source.uri, ==,
                  "test://snow?width=64&height=48&framerate=15");
  g_assert_null(service_find(svc, "new"));

  write_config("[service]\nlisten = 127.0.0.1:0\nstall-timeout = 20\n\n" CAM("keep", "ball", "")
                   CAM("moved", "checkers-4", "")
                   "[camera tuned]\nsource = test://gradient?width=64&height=48&framerate=15\n"
                   "model = MODEL2\nimage-threshold = 0.3\ninference-interval = 2\n\n"
                   CAM("new", "circular", ""));
  g_assert_true(reload_apply(r, &err));
  g_assert_no_error(err);
  g_assert_null(service_find(svc, "gone"));
  g_assert_nonnull(service_find(svc, "new"));
  g_assert_true(service_find(svc, "keep") == keep);     /* untouched: the same camera */
  g_assert_true(service_find(svc, "tuned") == tuned);   /* changed while running */
  g_assert_true(service_find(svc, "api-cam") == apic);  /* the API's own */
  g_assert_cmpstr(camera_config(service_find(svc, "moved"))->source.uri, ==,
                  "test://checkers-4?width=64&height=48&framerate=15");
  g_assert_cmpfloat(camera_config(tuned)->image_threshold, ==, 0.3);
  g_assert_cmpuint(camera_config(tuned)->inference_interval, ==, 2);
  g_assert_cmpstr(camera_config(tuned)->model, ==, model2);
  g_assert_cmpfloat(config->stall_seconds, ==, 20);
  WAIT_FOR(all_running(svc), "the new set running");
  WAIT_FOR(status_of(svc, "tuned").stats.model_generation >= 2, "tuned: the new model took over");
  CameraStatus keep1 = status_of(svc, "keep"), tuned1 = status_of(svc, "tuned");
  g_assert_cmpuint(keep1.stats.frames_out, >, keep0.stats.frames_out);
  g_assert_cmpuint(keep1.restarts, ==, 0);
  g_assert_cmpuint(tuned1.stats.frames_out, >, tuned0.stats.frames_out);
  g_assert_cmpuint(tuned1.restarts, ==, 0);

  /* the file naming the API's camera: refused, nothing changed */
  write_config("[service]\nlisten = 127.0.0.1:0\n\n" CAM("keep", "ball", "")
                   CAM("api-cam", "snow", ""));
  g_assert_false(reload_apply(r, &err));
  g_test_message("refused: %s", err->message);
  g_assert_nonnull(strstr(err->message, "[camera api-cam]: a camera of that name was added"));
  g_clear_error(&err);
  g_assert_nonnull(service_find(svc, "new"));
  g_assert_cmpfloat(config->stall_seconds, ==, 20);

  gboolean done = FALSE;
  service_shutdown(svc, stopped, &done);
  g_assert_false(reload_apply(r, &err));
  g_assert_nonnull(strstr(err->message, "shutting down"));
  g_clear_error(&err);
  while (!done)
    g_main_context_iteration(NULL, TRUE);
  reload_free(r);
  service_free(svc);
  serve_config_free(config);
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  if (argc < 2) {
    g_printerr("usage: %s TINY_MODEL\n", argv[0]);
    return 2;
  }
  model = g_canonicalize_filename(argv[1], NULL);
  tmpdir = g_dir_make_tmp("fap-serve-reload-XXXXXX", NULL);
  path = g_build_filename(tmpdir, "serve.conf", NULL);
  model2 = g_build_filename(tmpdir, "model-copy.safetensors", NULL);
  gchar *bytes;
  gsize n;
  g_assert_true(g_file_get_contents(model, &bytes, &n, NULL));
  g_assert_true(g_file_set_contents(model2, bytes, (gssize)n, NULL));
  g_free(bytes);
  g_test_add_func("/serve-reload/difference", test_reload);
  int rc = g_test_run();
  g_unlink(model2);
  g_unlink(path);
  g_rmdir(tmpdir);
  g_free(model2);
  g_free(path);
  g_free(tmpdir);
  g_free(model);
  gst_deinit();
  return rc;
}
