/* The calibration sidecar <model>.calibration.json (tools/faprompt-calibrate
 * writes it, core/model.c applies it at load): valid files override the
 * thresholds, malformed or out-of-range ones fail the load with a message
 * that names the sidecar.
 *
 * usage: test_calibration TINY_MODEL   (TAP via g_test) */
#include "fap.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

static const char *source_model;
static char *tmpdir, *model, *sidecar;
static GString *logged;

static void capture(fap_log_level level, const char *message, void *user_data) {
  (void)user_data;
  g_string_append_printf(logged, "[%d] %s\n", (int)level, message);
}

static void setup_once(void) {
  gchar *data;
  gsize len;
  g_assert_true(g_file_get_contents(source_model, &data, &len, NULL));
  tmpdir = g_dir_make_tmp("fap-calib-XXXXXX", NULL);
  g_assert_nonnull(tmpdir);
  model = g_build_filename(tmpdir, "model.safetensors", NULL);
  sidecar = g_strconcat(model, ".calibration.json", NULL);
  g_assert_true(g_file_set_contents(model, data, (gssize)len, NULL));
  g_free(data);
  logged = g_string_new(NULL);
  fap_set_log_callback(capture, NULL);
}

static void write_sidecar(const char *text) {
  g_assert_true(g_file_set_contents(sidecar, text, -1, NULL));
}

static fap_model *load(fap_status want) {
  g_string_truncate(logged, 0);
  fap_model *m = NULL;
  fap_status st = fap_model_load(model, &m);
  g_assert_cmpint(st, ==, want);
  if (want == FAP_OK)
    g_assert_nonnull(m);
  else
    g_assert_null(m);
  return m;
}

static void test_absent(void) {
  g_unlink(sidecar);
  fap_model *m = load(FAP_OK);
  g_assert_cmpfloat(fap_model_config(m)->image_threshold, <, 0.0f);
  g_assert_cmpfloat(fap_model_config(m)->pixel_threshold, <, 0.0f);
  g_assert_null(strstr(logged->str, "calibration"));
  fap_model_free(m);
}

static void test_valid(void) {
  write_sidecar("{\"image_threshold\": 0.4375, \"pixel_threshold\": 0.625, \"false_alarm_rate\": "
                "0.01, \"n_images\": 12, \"method\": \"normal-quantile\"}\n");
  fap_model *m = load(FAP_OK);
  g_assert_cmpfloat(fap_model_config(m)->image_threshold, ==, 0.4375f);
  g_assert_cmpfloat(fap_model_config(m)->pixel_threshold, ==, 0.625f);
  /* applied, at info level, naming the file */
  g_assert_nonnull(strstr(logged->str, "[2] "));
  g_assert_nonnull(strstr(logged->str, sidecar));
  g_assert_nonnull(strstr(logged->str, "calibration applied"));
  fap_model_free(m);
}

static void test_partial_and_bounds(void) {
  write_sidecar("{\"image_threshold\": 1}");
  fap_model *m = load(FAP_OK);
  g_assert_cmpfloat(fap_model_config(m)->image_threshold, ==, 1.0f);
  g_assert_cmpfloat(fap_model_config(m)->pixel_threshold, <, 0.0f);
  fap_model_free(m);
  write_sidecar("{\"pixel_threshold\": 0}");
  m = load(FAP_OK);
  g_assert_cmpfloat(fap_model_config(m)->image_threshold, <, 0.0f);
  g_assert_cmpfloat(fap_model_config(m)->pixel_threshold, ==, 0.0f);
  fap_model_free(m);
}

static void expect_refused(const char *text, const char *phrase) {
  write_sidecar(text);
  load(FAP_ERR_SCHEMA);
  if (!strstr(logged->str, sidecar) || !strstr(logged->str, phrase))
    g_error("sidecar %s: expected a message naming the file and saying '%s', got: %s", text,
            phrase, logged->str);
}

static void test_malformed(void) {
  expect_refused("{\"image_threshold\": 0.5,", "malformed");
  expect_refused("", "malformed");
  expect_refused("[0.5, 0.5]", "expected a JSON object");
  expect_refused("{}", "neither");
  expect_refused("{\"image_threshold\": \"0.5\"}", "'image_threshold' must be a number in [0, 1]");
  expect_refused("{\"image_threshold\": null}", "'image_threshold' must be a number in [0, 1]");
}

static void test_out_of_range(void) {
  expect_refused("{\"image_threshold\": 1.5}", "'image_threshold' must be a number in [0, 1]");
  expect_refused("{\"image_threshold\": 0.5, \"pixel_threshold\": -0.01}",
                 "'pixel_threshold' must be a number in [0, 1]");
  expect_refused("{\"pixel_threshold\": 2}", "'pixel_threshold'");
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  if (argc < 2) {
    g_printerr("usage: %s TINY_MODEL\n", argv[0]);
    return 2;
  }
  source_model = argv[1];
  setup_once();
  g_test_add_func("/calibration/absent", test_absent);
  g_test_add_func("/calibration/valid", test_valid);
  g_test_add_func("/calibration/partial-and-bounds", test_partial_and_bounds);
  g_test_add_func("/calibration/malformed", test_malformed);
  g_test_add_func("/calibration/out-of-range", test_out_of_range);
  int rc = g_test_run();
  g_unlink(sidecar);
  g_unlink(model);
  g_rmdir(tmpdir);
  g_free(sidecar);
  g_free(model);
  g_free(tmpdir);
  g_string_free(logged, TRUE);
  fap_set_log_callback(NULL, NULL);
  return rc;
}
