/* The model family through the element (docs/ANOMALYCLIP.md, gst/README.md),
 * GstHarness and real pipelines, isolated registry; TAP via g_test:
 *   - the read-only property model-family: NULL while stopped (NULL, READY,
 *     and again after stopping), the running model's family while playing;
 *   - every result says it: GstFAPromptMeta.model_family (the static string
 *     fap_family_name() returns; kept by buffer copies), the structure
 *     meta's model-family, the per-frame "faprompt" message's model-family;
 *   - an AnomalyCLIP model's meta equals the core's fap_detector_run on the
 *     same frame (score q, the map on [0, 1], not the authors' sum);
 *   - a hot swap FAPrompt -> AnomalyCLIP -> FAPrompt: model-loaded carries
 *     family, the property, meta and messages follow the model that computed
 *     each result;
 *   - a gst-launch pipeline with the AnomalyCLIP model runs to EOS;
 *   - gst-inspect-1.0 faprompt lists model-family.
 *
 *   test_family FAPROMPT_MODEL ANOMALYCLIP_MODEL */
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <math.h>
#include <string.h>

#include <fap.h>

#include "frames.h"
#include "gstfapromptmeta.h"

static const char *fa_model, *ac_model;

static GstElement *make_element(const char *model, const char *post) {
  GstElement *e = gst_element_factory_make("faprompt", NULL);
  g_assert_nonnull(e);
  g_object_set(e, "model-file", model, "threads", 1, NULL);
  gst_util_set_object_arg(G_OBJECT(e), "post-messages", post);
  gst_util_set_object_arg(G_OBJECT(e), "non-blocking", "false");
  return e;
}

static GstHarness *harness(GstElement *e, const char *fmt, int w, int h) {
  gst_object_ref_sink(e);
  GstHarness *hh = gst_harness_new_with_element(e, "sink", "src");
  gst_object_unref(e);
  GstCaps *caps = gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, fmt, "width",
                                      G_TYPE_INT, w, "height", G_TYPE_INT, h, "framerate",
                                      GST_TYPE_FRACTION, 30, 1, NULL);
  gst_harness_set_src_caps(hh, caps);
  return hh;
}

static gchar *family_property(GstElement *e) {
  gchar *f = (gchar *)"unset";
  g_object_get(e, "model-family", &f, NULL);
  return f;
}

static const gchar *structure_family(GstBuffer *b) {
  GstCustomMeta *cm = gst_buffer_get_custom_meta(b, GST_FAPROMPT_STRUCTURE_META_NAME);
  g_assert_nonnull(cm);
  const GstStructure *s = gst_custom_meta_get_structure(cm);
  g_assert_true(gst_structure_has_field_typed(s, "model-family", G_TYPE_STRING));
  return gst_structure_get_string(s, "model-family");
}

static GList *pop_faprompt_messages(GstBus *bus) {
  GList *l = NULL;
  GstMessage *msg;
  while ((msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ELEMENT))) {
    if (gst_structure_has_name(gst_message_get_structure(msg), "faprompt"))
      l = g_list_append(l, msg);
    else
      gst_message_unref(msg);
  }
  return l;
}

/* ---- the property ---------------------------------------------------------- */

static void check_property(const char *model, const char *family) {
  GstElement *e = make_element(model, "none");
  gst_object_ref_sink(e);
  gchar *f = family_property(e);
  g_assert_null(f); /* NULL state: nothing loaded */
  g_assert_cmpint(gst_element_set_state(e, GST_STATE_READY), ==, GST_STATE_CHANGE_SUCCESS);
  f = family_property(e);
  g_assert_null(f); /* READY: still stopped */
  gst_element_set_state(e, GST_STATE_NULL);
  gst_object_unref(e);

  GstHarness *hh = harness(make_element(model, "none"), "RGB", 64, 48);
  f = family_property(hh->element);
  g_assert_cmpstr(f, ==, family);
  g_free(f);
  gst_buffer_unref(gst_harness_push_and_pull(hh, make_frame("RGB", 64, 48, 1, 0)));
  f = family_property(hh->element);
  g_assert_cmpstr(f, ==, family);
  g_free(f);
  /* stopped again: NULL, and the family of a new start after that */
  g_assert_cmpint(gst_element_set_state(hh->element, GST_STATE_NULL), ==,
                  GST_STATE_CHANGE_SUCCESS);
  f = family_property(hh->element);
  g_assert_null(f);
  g_assert_cmpint(gst_element_set_state(hh->element, GST_STATE_PLAYING), ==,
                  GST_STATE_CHANGE_SUCCESS);
  f = family_property(hh->element);
  g_assert_cmpstr(f, ==, family);
  g_free(f);
  gst_harness_teardown(hh);
}

static void test_property(void) {
  check_property(ac_model, "anomalyclip");
  check_property(fa_model, "faprompt");
  /* read-only, a string, NULL by default */
  GstElement *e = gst_element_factory_make("faprompt", NULL);
  GParamSpec *p = g_object_class_find_property(G_OBJECT_GET_CLASS(e), "model-family");
  g_assert_nonnull(p);
  g_assert_true(G_IS_PARAM_SPEC_STRING(p));
  g_assert_true(p->flags & G_PARAM_READABLE);
  g_assert_false(p->flags & G_PARAM_WRITABLE);
  g_assert_null(G_PARAM_SPEC_STRING(p)->default_value);
  gst_object_unref(gst_object_ref_sink(e));
}

/* ---- results: meta, structure meta, messages ----------------------------------- */

static void check_results(const char *model, const char *family) {
  GstHarness *hh = harness(make_element(model, "every-frame"), "NV12", 64, 48);
  GstBus *bus = gst_bus_new();
  gst_element_set_bus(hh->element, bus);
  for (int i = 0; i < 3; i++) {
    GstBuffer *out = gst_harness_push_and_pull(hh, make_frame("NV12", 64, 48, i, i));
    GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
    g_assert_nonnull(m);
    g_assert_nonnull(m->model_family);
    g_assert_cmpstr(m->model_family, ==, family);
    /* documented as a static string: fap_family_name()'s */
    g_assert_true(m->model_family ==
                  fap_family_name(!strcmp(family, "anomalyclip") ? FAP_FAMILY_ANOMALYCLIP
                                                                 : FAP_FAMILY_FAPROMPT));
    g_assert_cmpstr(structure_family(out), ==, family);
    /* the map is on [0, 1] whatever the family (AnomalyCLIP: sum / L) */
    for (guint j = 0; j < m->map_width * m->map_height; j++)
      if (!(m->map[j] >= 0.f && m->map[j] <= 1.f))
        g_error("%s: map[%u] = %g outside [0, 1]", family, j, m->map[j]);
    /* copies keep it */
    GstBuffer *copy = gst_buffer_copy(out);
    gst_buffer_unref(out);
    GstFAPromptMeta *c = gst_buffer_get_faprompt_meta(copy);
    g_assert_nonnull(c);
    g_assert_cmpstr(c->model_family, ==, family);
    g_assert_cmpstr(structure_family(copy), ==, family);
    gst_buffer_unref(copy);
  }
  GList *l = pop_faprompt_messages(bus);
  g_assert_cmpuint(g_list_length(l), ==, 3);
  for (GList *it = l; it; it = it->next) {
    const GstStructure *s = gst_message_get_structure(it->data);
    g_assert_true(gst_structure_has_field_typed(s, "model-family", G_TYPE_STRING));
    g_assert_cmpstr(gst_structure_get_string(s, "model-family"), ==, family);
  }
  g_list_free_full(l, (GDestroyNotify)gst_message_unref);
  /* frames that reuse the last result (inference-interval) say it too */
  g_object_set(hh->element, "inference-interval", 2, NULL);
  guint reused = 0;
  for (int i = 3; i < 7; i++) {
    GstBuffer *out = gst_harness_push_and_pull(hh, make_frame("NV12", 64, 48, i, i));
    GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
    g_assert_nonnull(m);
    reused += m->reused;
    g_assert_cmpstr(m->model_family, ==, family);
    g_assert_cmpstr(structure_family(out), ==, family);
    gst_buffer_unref(out);
  }
  g_assert_cmpuint(reused, >=, 1);
  l = pop_faprompt_messages(bus);
  for (GList *it = l; it; it = it->next)
    g_assert_cmpstr(gst_structure_get_string(gst_message_get_structure(it->data), "model-family"),
                    ==, family);
  g_list_free_full(l, (GDestroyNotify)gst_message_unref);
  gst_element_set_bus(hh->element, NULL);
  gst_object_unref(bus);
  gst_harness_teardown(hh);
}

static void test_results_anomalyclip(void) { check_results(ac_model, "anomalyclip"); }
static void test_results_faprompt(void) { check_results(fa_model, "faprompt"); }

/* The element's result for an AnomalyCLIP model is the core's: score q, the
 * map on the element's [0, 1] scale (fap_result.map, not map_sum). */
static void test_anomalyclip_equals_core(void) {
  fap_model *model = NULL;
  fap_detector *det = NULL;
  fap_detector_options o;
  g_assert_cmpint(fap_model_load(ac_model, &model), ==, FAP_OK);
  g_assert_cmpint(fap_model_config(model)->family, ==, FAP_FAMILY_ANOMALYCLIP);
  const int layers = fap_model_config(model)->n_out_layers;
  g_assert_cmpint(layers, >, 1); /* else map and map_sum could not be told apart */
  fap_detector_options_init(&o);
  o.threads = 1;
  g_assert_cmpint(fap_detector_new(model, &o, &det), ==, FAP_OK);
  GstVideoInfo info;
  gst_video_info_set_format(&info, GST_VIDEO_FORMAT_RGB, 80, 60);
  GstBuffer *in = make_frame("RGB", 80, 60, 7, 0);
  GstVideoFrame f;
  g_assert_true(gst_video_frame_map(&f, &info, in, GST_MAP_READ));
  fap_frame frame = core_frame(&f);
  fap_result r;
  g_assert_cmpint(fap_detector_run(det, &frame, &r), ==, FAP_OK);
  gst_video_frame_unmap(&f);

  GstElement *e = make_element(ac_model, "none");
  g_object_set(e, "draw-heatmap", FALSE, NULL);
  GstHarness *hh = harness(e, "RGB", 80, 60);
  GstBuffer *out = gst_harness_push_and_pull(hh, in);
  GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
  g_assert_nonnull(m);
  g_assert_cmpfloat_with_epsilon(m->score, r.score, 1e-6);
  g_assert_cmpuint(m->map_width, ==, (guint)r.map_size);
  g_assert_cmpuint(m->map_height, ==, (guint)r.map_size);
  double maxdiff = 0, peak = 0;
  for (int i = 0; i < r.map_size * r.map_size; i++) {
    maxdiff = MAX(maxdiff, fabs(m->map[i] - r.map[i]));
    peak = MAX(peak, m->map[i]);
  }
  g_assert_cmpfloat(maxdiff, <=, 1e-6);
  g_assert_cmpfloat(peak, >, 0.0);
  g_assert_cmpint(m->anomalous, ==, m->score > m->image_threshold);
  gst_buffer_unref(out);
  gst_harness_teardown(hh);
  fap_detector_free(det);
  fap_model_free(model);
}

/* ---- hot swap across families ---------------------------------------------------- */

/* the next faprompt-model message with event model-loaded, or NULL */
static GstMessage *model_loaded(GstBus *bus) {
  GstMessage *msg;
  while ((msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ELEMENT))) {
    const GstStructure *s = gst_message_get_structure(msg);
    if (gst_structure_has_name(s, "faprompt-model") &&
        g_strcmp0(gst_structure_get_string(s, "event"), "model-loaded") == 0)
      return msg;
    gst_message_unref(msg);
  }
  return NULL;
}

/* pushes frames until one carries generation gen; every result's family is
 * the one of the model that computed it */
static void push_until(GstHarness *hh, guint64 gen, const char *old_family,
                       const char *new_family, guint64 *index) {
  gint64 end = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
  for (;;) {
    GstBuffer *out =
        gst_harness_push_and_pull(hh, make_frame("RGB", 64, 48, (int)*index, *index));
    (*index)++;
    GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
    g_assert_nonnull(m);
    const char *want = m->model_generation == gen ? new_family : old_family;
    g_assert_cmpuint(m->model_generation, >=, gen - 1);
    g_assert_cmpstr(m->model_family, ==, want);
    g_assert_cmpstr(structure_family(out), ==, want);
    guint64 g = m->model_generation;
    gst_buffer_unref(out);
    if (g == gen)
      return;
    g_assert_cmpint(g_get_monotonic_time(), <, end);
    g_usleep(2000);
  }
}

static void test_swap_families(void) {
  GstElement *e = make_element(fa_model, "every-frame");
  GstBus *bus = gst_bus_new();
  gst_element_set_bus(e, bus);
  GstHarness *hh = harness(e, "RGB", 64, 48);
  guint64 index = 0;
  push_until(hh, 1, "faprompt", "faprompt", &index);
  const char *steps[][2] = {{"faprompt", "anomalyclip"}, {"anomalyclip", "faprompt"}};
  for (guint k = 0; k < G_N_ELEMENTS(steps); k++) {
    const guint64 gen = k + 2;
    g_object_set(hh->element, "model-file", k == 0 ? ac_model : fa_model, NULL);
    push_until(hh, gen, steps[k][0], steps[k][1], &index);
    GstMessage *msg = model_loaded(bus);
    g_assert_nonnull(msg);
    const GstStructure *s = gst_message_get_structure(msg);
    guint64 mgen = 0;
    g_assert_true(gst_structure_get_uint64(s, "model-generation", &mgen));
    g_assert_cmpuint(mgen, ==, gen);
    g_assert_true(gst_structure_has_field_typed(s, "family", G_TYPE_STRING));
    g_assert_cmpstr(gst_structure_get_string(s, "family"), ==, steps[k][1]);
    gst_message_unref(msg);
    gchar *f = family_property(hh->element);
    g_assert_cmpstr(f, ==, steps[k][1]);
    g_free(f);
    /* the per-frame messages of the new model's frames say its family */
    while (gst_bus_have_pending(bus))
      gst_message_unref(gst_bus_pop(bus));
    gst_buffer_unref(
        gst_harness_push_and_pull(hh, make_frame("RGB", 64, 48, (int)index, index)));
    index++;
    GList *l = pop_faprompt_messages(bus);
    g_assert_cmpuint(g_list_length(l), ==, 1);
    g_assert_cmpstr(gst_structure_get_string(gst_message_get_structure(l->data), "model-family"),
                    ==, steps[k][1]);
    g_list_free_full(l, (GDestroyNotify)gst_message_unref);
  }
  gst_element_set_bus(hh->element, NULL);
  gst_object_unref(bus);
  gst_harness_teardown(hh);
}

/* Two elements sharing one AnomalyCLIP instance (model-instance-id, batches
 * across the streams): each says the family, in the property and its results. */
static void test_shared_instance(void) {
  GstHarness *h[2];
  for (int k = 0; k < 2; k++) {
    GstElement *e = make_element(ac_model, "none");
    g_object_set(e, "model-instance-id", "family-test", "batch-size", 2, "batch-timeout",
                 (guint64)2000, NULL);
    h[k] = harness(e, k ? "NV12" : "RGB", 64, 48);
  }
  for (int i = 0; i < 3; i++)
    for (int k = 0; k < 2; k++) {
      GstBuffer *out =
          gst_harness_push_and_pull(h[k], make_frame(k ? "NV12" : "RGB", 64, 48, i + 10 * k, i));
      GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(out);
      g_assert_nonnull(m);
      g_assert_cmpstr(m->model_family, ==, "anomalyclip");
      g_assert_cmpstr(structure_family(out), ==, "anomalyclip");
      gst_buffer_unref(out);
    }
  for (int k = 0; k < 2; k++) {
    gchar *f = family_property(h[k]->element);
    g_assert_cmpstr(f, ==, "anomalyclip");
    g_free(f);
  }
  gst_harness_teardown(h[1]);
  gst_harness_teardown(h[0]);
}

/* ---- a real pipeline, and gst-inspect ----------------------------------------- */

static void test_pipeline(void) {
  gchar *desc = g_strdup_printf("videotestsrc num-buffers=5 pattern=ball ! "
                                "video/x-raw,format=I420,width=96,height=72 ! "
                                "faprompt name=f model-file=\"%s\" threads=1 "
                                "post-messages=every-frame ! videoconvert ! fakesink",
                                ac_model);
  GError *err = NULL;
  GstElement *pipe = gst_parse_launch(desc, &err);
  g_assert_no_error(err);
  g_free(desc);
  GstBus *bus = gst_element_get_bus(pipe);
  g_assert_cmpint(gst_element_set_state(pipe, GST_STATE_PLAYING), !=, GST_STATE_CHANGE_FAILURE);
  guint results = 0;
  gboolean eos = FALSE;
  while (!eos) {
    GstMessage *msg = gst_bus_timed_pop_filtered(
        bus, 60 * GST_SECOND, GST_MESSAGE_EOS | GST_MESSAGE_ERROR | GST_MESSAGE_ELEMENT);
    g_assert_nonnull(msg);
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
      GError *e = NULL;
      gst_message_parse_error(msg, &e, NULL);
      g_error("pipeline error: %s", e->message);
    }
    eos = GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS;
    const GstStructure *s = gst_message_get_structure(msg);
    if (!eos && s && gst_structure_has_name(s, "faprompt")) {
      g_assert_cmpstr(gst_structure_get_string(s, "model-family"), ==, "anomalyclip");
      results++;
    }
    gst_message_unref(msg);
  }
  g_assert_cmpuint(results, ==, 5);
  GstElement *f = gst_bin_get_by_name(GST_BIN(pipe), "f");
  gchar *family = family_property(f);
  g_assert_cmpstr(family, ==, "anomalyclip"); /* PLAYING still, after EOS */
  g_free(family);
  gst_element_set_state(pipe, GST_STATE_NULL);
  family = family_property(f);
  g_assert_null(family);
  gst_object_unref(f);
  gst_object_unref(bus);
  gst_object_unref(pipe);
}

static void test_inspect(void) {
  gchar *inspect = g_find_program_in_path("gst-inspect-1.0");
  if (!inspect) {
    g_test_skip("gst-inspect-1.0 not found");
    return;
  }
  /* GST_PLUGIN_PATH and GST_REGISTRY are the test's (tests/gst/meson.build) */
  const char *argv[] = {inspect, "faprompt", NULL};
  gchar *out = NULL, *err = NULL;
  gint status = -1;
  GError *error = NULL;
  /* under the sanitizers (tests/sanitize/run-test) an uninstrumented
   * gst-inspect-1.0 loads the instrumented plugin: their runtimes go first */
  gchar **envp = g_get_environ();
  const char *preload = g_getenv("FAP_SANITIZE_PRELOAD");
  if (preload && *preload)
    envp = g_environ_setenv(envp, "LD_PRELOAD", preload, TRUE);
  g_assert_true(g_spawn_sync(NULL, (gchar **)argv, envp, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
                             &status, &error));
  g_strfreev(envp);
  g_assert_no_error(error);
  if (!g_spawn_check_wait_status(status, NULL))
    g_error("gst-inspect-1.0 faprompt failed: %s", err);
  /* the property's block: name, read-only, a string, NULL default */
  const char *at = strstr(out, "  model-family ");
  if (!at)
    g_error("gst-inspect-1.0 faprompt does not list model-family:\n%s", out);
  const char *next = strstr(at + 3, "\n  ");
  for (; next && next[3] == ' '; next = strstr(next + 3, "\n  ")) /* continuation lines */
    ;
  gchar *block = g_strndup(at, next ? (gsize)(next - at) : strlen(at));
  g_test_message("%s", block);
  g_assert_nonnull(strstr(block, "readable"));
  g_assert_null(strstr(block, "writable"));
  g_assert_nonnull(strstr(block, "String"));
  g_assert_nonnull(strstr(block, "anomalyclip"));
  g_assert_nonnull(strstr(block, "faprompt"));
  g_free(block);
  /* the element's description names both families */
  g_assert_nonnull(strstr(out, "AnomalyCLIP"));
  g_free(out);
  g_free(err);
  g_free(inspect);
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  if (argc < 3) {
    g_printerr("usage: %s FAPROMPT_MODEL ANOMALYCLIP_MODEL\n", argv[0]);
    return 2;
  }
  fa_model = argv[1];
  ac_model = argv[2];
  GstElementFactory *f = gst_element_factory_find("faprompt");
  if (!f) {
    g_printerr("faprompt element not found: set GST_PLUGIN_PATH to the build's gst/\n");
    return 1;
  }
  gst_object_unref(f);
  gst_faprompt_meta_get_info();
  g_test_add_func("/gst/family/property", test_property);
  g_test_add_func("/gst/family/results-anomalyclip", test_results_anomalyclip);
  g_test_add_func("/gst/family/results-faprompt", test_results_faprompt);
  g_test_add_func("/gst/family/anomalyclip-equals-core", test_anomalyclip_equals_core);
  g_test_add_func("/gst/family/swap", test_swap_families);
  g_test_add_func("/gst/family/shared-instance", test_shared_instance);
  g_test_add_func("/gst/family/pipeline", test_pipeline);
  g_test_add_func("/gst/family/inspect", test_inspect);
  return g_test_run();
}
