/* Hot model swap, in GstHarness: the test thread is the streaming
 * thread, so "frames keep flowing during the load" is checked directly:
 * setting model-file returns at once and the frames pushed while the new
 * model loads come out carrying the old model's results.
 *   - blocking and non-blocking: every frame pushed comes out; the frames
 *     after the swap carry model generation 2, the new file's name and the
 *     model-loaded message's generation; set_property does not wait for the
 *     load; swap latency and frames during the load are printed;
 *   - bad new files (missing, truncated, not a model, a folder): the old
 *     model runs on (generation 1), a warning names the file and the
 *     problem, a "model-load-failed" message says the same; then a good file
 *     swaps in as generation 2;
 *   - reload, and a recalibrated sidecar: the thresholds of the results
 *     follow the new calibration;
 *   - watch-model: a file written in two halves with a pause shorter than the
 *     settle time loads once, whole (no failed load of the half); a deleted
 *     file leaves the model running and warns; a file moved into place loads;
 *   - model-instance-id: an element that changes model leaves its partner on
 *     the old instance without a stall; both on the new file share it again;
 *   - stop while a load is in progress: no hang, nothing leaked (valgrind).
 *
 *   test_swap SMALL_MODEL OTHER_MODEL SLOW_MODEL PATCH16_MODEL   (TAP;
 *   SLOW_MODEL: one that takes tens of ms to load, so the load is seen to
 *   overlap frames; PATCH16_MODEL: patch size 16, so no detector can be
 *   built at the running image-size 56) */
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <glib/gstdio.h>
#include <string.h>

#include <fap.h>

#include "frames.h"
#include "gstfapromptmeta.h"

static const char *small_model, *other_model, *slow_model, *patch16_model;
static gint64 deadline_us;

typedef struct {
  GstHarness *h;
  GstBus *bus;
  guint64 index;
} Run;

static Run start_run(const char *model, const char *mode) {
  Run r = {0};
  GstElement *e = gst_element_factory_make("faprompt", NULL);
  g_object_set(e, "model-file", model, "threads", 1, "post-messages", 0, NULL);
  gst_util_set_object_arg(G_OBJECT(e), "backend", "cpu");
  gst_util_set_object_arg(G_OBJECT(e), "non-blocking", mode);
  r.bus = gst_bus_new();
  gst_element_set_bus(e, r.bus);
  gst_object_ref_sink(e);
  r.h = gst_harness_new_with_element(e, "sink", "src");
  gst_object_unref(e);
  gst_harness_set_src_caps_str(r.h, "video/x-raw,format=I420,width=64,height=48,framerate=30/1");
  return r;
}

static void end_run(Run *r) {
  gst_element_set_bus(r->h->element, NULL);
  gst_harness_teardown(r->h);
  gst_object_unref(r->bus);
}

/* one frame in, the same frame out: its model generation (0 = no result
 * yet) and, optionally, the file and the image threshold it names */
static guint64 push_one(Run *r, const gchar **file, gdouble *image_threshold) {
  g_assert_cmpint(gst_harness_push(r->h, make_frame("I420", 64, 48, (int)r->index, r->index)), ==,
                  GST_FLOW_OK);
  r->index++;
  GstBuffer *out = gst_harness_pull(r->h);
  g_assert_nonnull(out);
  GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
  guint64 gen = m ? m->model_generation : 0;
  if (image_threshold)
    *image_threshold = m ? m->image_threshold : -1;
  if (file) {
    GstCustomMeta *cm = gst_buffer_get_custom_meta(out, "GstFAPromptStructureMeta");
    const gchar *f = cm ? gst_structure_get_string(gst_custom_meta_get_structure(cm), "model-file")
                        : NULL;
    *file = f ? g_intern_string(f) : NULL;
  }
  if (m) {
    GstCustomMeta *cm = gst_buffer_get_custom_meta(out, "GstFAPromptStructureMeta");
    guint64 sgen = 0;
    g_assert_nonnull(cm);
    g_assert_true(gst_structure_get_uint64(gst_custom_meta_get_structure(cm), "model-generation",
                                           &sgen));
    g_assert_cmpuint(sgen, ==, gen);
  }
  gst_buffer_unref(out);
  return gen;
}

/* the next "faprompt-model" message with event @event, or NULL (none yet) */
static GstMessage *model_message(Run *r, const char *event) {
  GstMessage *msg;
  while ((msg = gst_bus_pop_filtered(r->bus, GST_MESSAGE_ELEMENT))) {
    const GstStructure *s = gst_message_get_structure(msg);
    if (gst_structure_has_name(s, "faprompt-model") &&
        g_strcmp0(gst_structure_get_string(s, "event"), event) == 0)
      return msg;
    gst_message_unref(msg);
  }
  return NULL;
}

static gchar *pop_warning(Run *r) {
  GstMessage *msg = gst_bus_pop_filtered(r->bus, GST_MESSAGE_WARNING);
  if (!msg)
    return NULL;
  GError *err = NULL;
  gst_message_parse_warning(msg, &err, NULL);
  gchar *text = g_strdup(err->message);
  g_error_free(err);
  gst_message_unref(msg);
  return text;
}

/* warnings and "model-load-failed" messages waiting on the bus (all popped) */
static guint count_failures(Run *r) {
  GstMessage *m;
  guint n = 0;
  while ((m = gst_bus_pop(r->bus))) {
    const GstStructure *s = gst_message_get_structure(m);
    if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_WARNING ||
        (s && gst_structure_has_name(s, "faprompt-model") &&
         g_strcmp0(gst_structure_get_string(s, "event"), "model-load-failed") == 0))
      n++;
    gst_message_unref(m);
  }
  return n;
}

static gint64 deadline(void) { return g_get_monotonic_time() + deadline_us; }

/* pushes frames until one carries @gen; returns how many it took (each one
 * checked to come out, with the previous generation or @gen) */
static guint push_until_generation(Run *r, guint64 gen, const gchar **file) {
  gint64 end = deadline();
  guint n = 0;
  for (;;) {
    guint64 g = push_one(r, file, NULL);
    n++;
    if (g == gen)
      return n;
    g_assert_cmpuint(g, ==, gen - 1);
    g_assert_cmpint(g_get_monotonic_time(), <, end);
    g_usleep(1000);
  }
}

/* ---- swaps -------------------------------------------------------------- */

static void swap_in_mode(const char *mode) {
  Run r = start_run(small_model, mode);
  gint64 end = deadline();
  const gchar *file = NULL;
  guint64 gen = 0;

  while ((gen = push_one(&r, &file, NULL)) == 0) /* non-blocking: the first result */
    g_assert_cmpint(g_get_monotonic_time(), <, end);
  g_assert_cmpuint(gen, ==, 1);
  g_assert_cmpstr(file, ==, small_model);
  guint64 prop = 0;
  g_object_get(r.h->element, "model-generation", &prop, NULL);
  g_assert_cmpuint(prop, ==, 1);

  gint64 t0 = g_get_monotonic_time();
  g_object_set(r.h->element, "model-file", slow_model, NULL);
  gint64 set_us = g_get_monotonic_time() - t0;
  guint frames = push_until_generation(&r, 2, &file);
  gint64 swap_us = g_get_monotonic_time() - t0;
  g_assert_cmpstr(file, ==, slow_model);

  GstMessage *msg = model_message(&r, "model-loaded");
  g_assert_nonnull(msg);
  const GstStructure *s = gst_message_get_structure(msg);
  guint64 mgen = 0, prev = 0;
  gdouble load_ms = 0;
  g_assert_true(gst_structure_get_uint64(s, "model-generation", &mgen));
  g_assert_true(gst_structure_get_uint64(s, "previous-generation", &prev));
  g_assert_true(gst_structure_get_double(s, "load-ms", &load_ms));
  g_assert_cmpuint(mgen, ==, 2);
  g_assert_cmpuint(prev, ==, 1);
  g_assert_cmpstr(gst_structure_get_string(s, "model-file"), ==, slow_model);
  gst_message_unref(msg);
  g_object_get(r.h->element, "model-generation", &prop, NULL);
  g_assert_cmpuint(prop, ==, 2);
  /* the frames after the swap stay on it */
  for (int i = 0; i < 5; i++)
    g_assert_cmpuint(push_one(&r, NULL, NULL), ==, 2);
  g_test_message("%s: set_property %.2f ms, load %.1f ms, first frame of the new model %.1f ms "
                 "after the request; %u frames pushed meanwhile, all out (the ones before it "
                 "with generation 1)",
                 mode, set_us / 1000.0, load_ms, swap_us / 1000.0, frames - 1);
  /* the load ran beside the stream: setting the property did not wait for
   * it (where the load is long enough to tell) */
  if (load_ms > 20.0)
    g_assert_cmpfloat(set_us / 1000.0, <, load_ms / 4);
  g_assert_cmpuint(count_failures(&r), ==, 0);
  end_run(&r);
}

static void test_swap_blocking(void) { swap_in_mode("false"); }
static void test_swap_non_blocking(void) { swap_in_mode("true"); }

/* ---- bad files ----------------------------------------------------------- */

static gchar *tmpdir;

static gchar *write_file(const char *name, const void *data, gsize len) {
  gchar *p = g_build_filename(tmpdir, name, NULL);
  g_assert_true(g_file_set_contents(p, data, (gssize)len, NULL));
  return p;
}

/* sets @path and waits (frames flowing, all on the old model) for both the
 * warning and the "model-load-failed" message; every message popped, so
 * waiting for one never drops the other */
static void expect_kept(Run *r, const gchar *path, const char *problem) {
  gint64 end = deadline();
  gchar *w = NULL;
  gboolean failed_msg = FALSE;
  g_object_set(r->h->element, "model-file", path, NULL);
  while (!w || !failed_msg) {
    GstMessage *m;
    while ((m = gst_bus_pop(r->bus))) {
      if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_WARNING && !w) {
        GError *err = NULL;
        gst_message_parse_warning(m, &err, NULL);
        w = g_strdup(err->message);
        g_error_free(err);
      } else if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_ELEMENT) {
        const GstStructure *s = gst_message_get_structure(m);
        if (gst_structure_has_name(s, "faprompt-model") &&
            g_strcmp0(gst_structure_get_string(s, "event"), "model-load-failed") == 0) {
          g_assert_cmpstr(gst_structure_get_string(s, "model-file"), ==, path);
          failed_msg = TRUE;
        }
      }
      gst_message_unref(m);
    }
    g_assert_cmpuint(push_one(r, NULL, NULL), ==, 1); /* the old model runs on */
    g_assert_cmpint(g_get_monotonic_time(), <, end);
    g_usleep(1000);
  }
  g_test_message("%s: %s", problem, w);
  g_assert_nonnull(strstr(w, path));
  g_assert_nonnull(strstr(w, problem));
  g_free(w);
  for (int i = 0; i < 3; i++)
    g_assert_cmpuint(push_one(r, NULL, NULL), ==, 1);
}

static void test_bad_files(void) {
  gchar *bytes;
  gsize len;
  g_assert_true(g_file_get_contents(small_model, &bytes, &len, NULL));
  gchar *missing = g_build_filename(tmpdir, "missing.safetensors", NULL);
  gchar *truncated = write_file("truncated.safetensors", bytes, len / 2);
  const char junk[] = "this is not a safetensors file at all, just words";
  gchar *notmodel = write_file("junk.safetensors", junk, sizeof junk);
  /* a valid container whose tensors are not a model's */
  const char st[] = "\x1e\x00\x00\x00\x00\x00\x00\x00"
                    "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  GString *container = g_string_new_len(st, sizeof st - 1);
  /* fix the header length to the JSON's */
  guint64 hl = container->len - 8;
  memcpy(container->str, &hl, 8);
  g_string_append_len(container, "\0\0\0\0", 4);
  gchar *schema = write_file("schema.safetensors", container->str, container->len);
  g_string_free(container, TRUE);

  Run r = start_run(small_model, "false");
  g_assert_cmpuint(push_one(&r, NULL, NULL), ==, 1);
  expect_kept(&r, missing, "not found");
  expect_kept(&r, truncated, "did not load");
  expect_kept(&r, notmodel, "did not load");
  expect_kept(&r, schema, "did not load");
  expect_kept(&r, tmpdir, "did not load");
  guint64 prop = 0;
  g_object_get(r.h->element, "model-generation", &prop, NULL);
  g_assert_cmpuint(prop, ==, 1);
  /* failures count no generation: the good file is the second model */
  g_object_set(r.h->element, "model-file", other_model, NULL);
  push_until_generation(&r, 2, NULL);
  end_run(&r);
  g_free(bytes);
  g_free(missing);
  g_free(truncated);
  g_free(notmodel);
  g_free(schema);
}

/* A file that loads but whose detector cannot be built with the element's
 * settings (on a GPU: too big for the device) */
static void test_no_detector(void) {
  Run r = start_run(small_model, "false");
  g_assert_cmpint(gst_element_set_state(r.h->element, GST_STATE_NULL), ==, GST_STATE_CHANGE_SUCCESS);
  g_object_set(r.h->element, "image-size", 56, NULL);
  gst_harness_play(r.h);
  g_assert_cmpuint(push_one(&r, NULL, NULL), >=, 1);
  guint64 gen = 0;
  g_object_get(r.h->element, "model-generation", &gen, NULL);
  /* generations count per element across restarts */
  gint64 end = deadline();
  gchar *w = NULL;
  g_object_set(r.h->element, "model-file", patch16_model, NULL);
  while (!(w = pop_warning(&r))) {
    g_assert_cmpuint(push_one(&r, NULL, NULL), ==, gen);
    g_assert_cmpint(g_get_monotonic_time(), <, end);
    g_usleep(1000);
  }
  g_test_message("no detector: %s", w);
  g_assert_nonnull(strstr(w, "could not be built"));
  g_assert_nonnull(strstr(w, "patch size 16"));
  g_free(w);
  g_assert_cmpuint(push_one(&r, NULL, NULL), ==, gen);
  end_run(&r);
}

/* ---- reload, recalibration ------------------------------------------------ */

static gchar *copy_model(const char *from, const char *name) {
  gchar *bytes;
  gsize len;
  g_assert_true(g_file_get_contents(from, &bytes, &len, NULL));
  gchar *p = write_file(name, bytes, len);
  g_free(bytes);
  return p;
}

static void test_reload_calibration(void) {
  gchar *model = copy_model(small_model, "calibrated.safetensors");
  gchar *sidecar = g_strconcat(model, ".calibration.json", NULL);
  Run r = start_run(model, "false");
  gdouble thr = 0;
  gboolean ok = FALSE;

  g_assert_cmpuint(push_one(&r, NULL, &thr), ==, 1);
  g_assert_cmpfloat_with_epsilon(thr, 0.5, 1e-6); /* tiny-a: no calibration */
  g_signal_emit_by_name(r.h->element, "reload", &ok);
  g_assert_true(ok);
  push_until_generation(&r, 2, NULL);

  const char cal[] = "{\"image_threshold\": 0.125, \"pixel_threshold\": 0.375}";
  g_assert_true(g_file_set_contents(sidecar, cal, -1, NULL));
  g_signal_emit_by_name(r.h->element, "reload", &ok);
  push_until_generation(&r, 3, NULL);
  g_assert_cmpuint(push_one(&r, NULL, &thr), ==, 3);
  g_assert_cmpfloat_with_epsilon(thr, 0.125, 1e-6);
  end_run(&r);
  /* not started: nothing to reload */
  GstElement *idle = gst_element_factory_make("faprompt", NULL);
  g_signal_emit_by_name(idle, "reload", &ok);
  g_assert_false(ok);
  gst_object_unref(gst_object_ref_sink(idle));
  g_unlink(sidecar);
  g_unlink(model);
  g_free(sidecar);
  g_free(model);
}

/* ---- watch-model ------------------------------------------------------------ */

static void push_for(Run *r, guint ms, guint64 gen) {
  gint64 end = g_get_monotonic_time() + ms * 1000;
  while (g_get_monotonic_time() < end) {
    g_assert_cmpuint(push_one(r, NULL, NULL), ==, gen);
    g_usleep(2000);
  }
}

static void test_watch(void) {
  const guint settle = 400;
  gchar *model = copy_model(small_model, "watched.safetensors");
  gchar *bytes;
  gsize len;
  g_assert_true(g_file_get_contents(other_model, &bytes, &len, NULL));
  Run r = start_run(model, "false");
  g_object_set(r.h->element, "watch-model", TRUE, "watch-settle", settle, NULL);
  g_assert_cmpuint(push_one(&r, NULL, NULL), ==, 1);
  push_for(&r, 200, 1); /* the monitor is set up on the loader thread */

  /* rewritten in place in two halves, a pause shorter than the settle time
   * between them: no load of the half file, one load of the whole */
  FILE *f = fopen(model, "wb");
  g_assert_nonnull(f);
  g_assert_cmpuint(fwrite(bytes, 1, len / 2, f), ==, len / 2);
  fflush(f);
  push_for(&r, settle / 2, 1);
  g_assert_cmpuint(fwrite(bytes + len / 2, 1, len - len / 2, f), ==, len - len / 2);
  fclose(f);
  push_until_generation(&r, 2, NULL);
  g_assert_cmpuint(count_failures(&r), ==, 0);
  push_for(&r, settle * 2, 2); /* and no second load of the same file */

  /* deleted: the model runs on, a warning says the file is gone */
  g_assert_cmpint(g_unlink(model), ==, 0);
  gint64 end = deadline();
  gchar *w;
  while (!(w = pop_warning(&r))) {
    g_assert_cmpuint(push_one(&r, NULL, NULL), ==, 2);
    g_assert_cmpint(g_get_monotonic_time(), <, end);
    g_usleep(2000);
  }
  g_test_message("deleted: %s", w);
  g_assert_nonnull(strstr(w, "gone"));
  g_free(w);

  /* moved into place (the atomic way to replace a file): loaded */
  gchar *staged = copy_model(small_model, "staged.tmp");
  g_assert_cmpint(g_rename(staged, model), ==, 0);
  push_until_generation(&r, 3, NULL);
  end_run(&r);
  g_unlink(model);
  g_free(staged);
  g_free(model);
  g_free(bytes);
}

/* ---- model-instance-id ----------------------------------------------------- */

static GstHarness *instance_harness(const char *model) {
  GstElement *e = gst_element_factory_make("faprompt", NULL);
  g_object_set(e, "model-file", model, "threads", 1, "post-messages", 0, "model-instance-id",
               "swap", "batch-size", 2, "batch-timeout", (guint64)2000, NULL);
  gst_util_set_object_arg(G_OBJECT(e), "backend", "cpu");
  gst_util_set_object_arg(G_OBJECT(e), "non-blocking", "false");
  gst_object_ref_sink(e);
  GstHarness *h = gst_harness_new_with_element(e, "sink", "src");
  gst_object_unref(e);
  gst_harness_set_src_caps_str(h, "video/x-raw,format=RGB,width=40,height=30,framerate=30/1");
  return h;
}

static guint64 instance_push(GstHarness *h, int i, gint64 *us) {
  gint64 t0 = g_get_monotonic_time();
  g_assert_cmpint(gst_harness_push(h, make_frame("RGB", 40, 30, i, i)), ==, GST_FLOW_OK);
  GstBuffer *out = gst_harness_pull(h);
  if (us)
    *us = MAX(*us, g_get_monotonic_time() - t0);
  GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
  g_assert_nonnull(m);
  guint64 gen = m->model_generation;
  gst_buffer_unref(out);
  return gen;
}

static void test_instance(void) {
  GstHarness *a = instance_harness(small_model), *b = instance_harness(small_model);
  gboolean shared = FALSE;
  gint64 worst_b = 0;
  int i = 0;

  /* the two elements' frames alternate: each waits for a batch or its
   * timeout, never for the other's model */
  g_assert_cmpuint(instance_push(a, i, NULL), ==, 1);
  g_assert_cmpuint(instance_push(b, i++, NULL), ==, 1);
  g_object_get(a->element, "model-shared", &shared, NULL);
  g_assert_true(shared);
  g_object_set(a->element, "model-file", other_model, NULL);
  gint64 end = deadline();
  while (instance_push(a, i, NULL) != 2) {
    g_assert_cmpuint(instance_push(b, i++, &worst_b), ==, 1);
    g_assert_cmpint(g_get_monotonic_time(), <, end);
  }
  /* a runs alone on the new model's instance, b on the old one (once a's
   * loader has released a's share of it) */
  do {
    g_assert_cmpuint(instance_push(b, i++, &worst_b), ==, 1);
    g_object_get(b->element, "model-shared", &shared, NULL);
    g_assert_cmpint(g_get_monotonic_time(), <, end);
  } while (shared);
  g_object_set(b->element, "model-file", other_model, NULL);
  while (instance_push(b, i++, &worst_b) != 2)
    g_assert_cmpint(g_get_monotonic_time(), <, end);
  g_object_get(a->element, "model-shared", &shared, NULL);
  g_assert_true(shared); /* together again, on the new model */
  g_test_message("instance: the partner's slowest frame during the swaps %.1f ms",
                 worst_b / 1000.0);
  gst_harness_teardown(a);
  gst_harness_teardown(b);
}

/* ---- stop during a load ------------------------------------------------------ */

static void test_stop_during_load(void) {
  for (int i = 0; i < 5; i++) {
    Run r = start_run(small_model, i % 2 ? "true" : "false");
    push_one(&r, NULL, NULL);
    g_object_set(r.h->element, "model-file", slow_model, NULL);
    if (i >= 2) /* a second request replacing the first */
      g_object_set(r.h->element, "model-file", other_model, NULL);
    end_run(&r); /* waits for the load, frees what it made */
  }
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  if (argc < 5)
    return 2;
  /* linked against the core like the other element tests, so libgomp's
   * constructor runs at start-up, not inside the plugin's dlopen (where
   * valgrind reports its one-time allocations as lost) */
  g_test_message("core %s", fap_version());
  small_model = g_intern_string(argv[1]);
  other_model = g_intern_string(argv[2]);
  slow_model = g_intern_string(argv[3]);
  patch16_model = g_intern_string(argv[4]);
  /* valgrind (RUNNING_ON_VALGRIND is not worth a header here): a longer bound */
  deadline_us = (g_getenv("FAP_SLOW_RUN") ? 300 : 30) * G_USEC_PER_SEC;
  tmpdir = g_dir_make_tmp("faprompt-swap-XXXXXX", NULL);
  g_assert_nonnull(tmpdir);
  g_test_add_func("/swap/blocking", test_swap_blocking);
  g_test_add_func("/swap/non-blocking", test_swap_non_blocking);
  g_test_add_func("/swap/bad-files", test_bad_files);
  g_test_add_func("/swap/no-detector", test_no_detector);
  g_test_add_func("/swap/reload-calibration", test_reload_calibration);
  g_test_add_func("/swap/watch", test_watch);
  g_test_add_func("/swap/instance", test_instance);
  g_test_add_func("/swap/stop-during-load", test_stop_during_load);
  int rc = g_test_run();
  GDir *d = g_dir_open(tmpdir, 0, NULL);
  const gchar *n;
  while (d && (n = g_dir_read_name(d))) {
    gchar *p = g_build_filename(tmpdir, n, NULL);
    g_unlink(p);
    g_free(p);
  }
  if (d)
    g_dir_close(d);
  g_rmdir(tmpdir);
  g_free(tmpdir);
  return rc;
}
