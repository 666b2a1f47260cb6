/* fapromptpublish in GstHarness, on buffers whose results the test attaches
 * itself (no model, no broker: this one also runs under valgrind):
 *   - file target: one JSON line per result, every field equal to the metas
 *     pushed (score bit for bit, boxes, thresholds, model SHA-256, PTS),
 *     nothing for a buffer without a result, sequence 1..N;
 *   - on-change: events pair up, the last one closed at EOS;
 *   - a full disk (/dev/full): a warning, the streaming thread never waits,
 *     the queue keeps max-queued and counts the rest dropped;
 *   - rotation by size keeps max-files.
 *
 *   test_publish_harness      (TAP) */
#include <glib/gstdio.h>
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <json-glib/json-glib.h>
#include <string.h>

#include "gstfapromptmeta.h"

static gchar *tmpdir, *model_file;

static GstBuffer *result_buffer(guint i, gfloat score, gboolean anomalous) {
  GstBuffer *buf = gst_buffer_new_allocate(NULL, 64 * 48 * 3, NULL);
  gfloat *map = g_new(gfloat, 8 * 8);
  for (int k = 0; k < 64; k++)
    map[k] = (gfloat)k / 64;
  GBytes *bytes = g_bytes_new_take(map, 64 * sizeof(gfloat));
  GstFAPromptMeta *m = gst_buffer_add_faprompt_meta(buf, bytes, 8, 8, 8 * sizeof(gfloat));
  g_bytes_unref(bytes);
  m->score = score;
  m->anomalous = anomalous;
  m->width = 64;
  m->height = 48;
  m->inference_timestamp = i * 40 * GST_MSECOND;
  m->inference_ms = 1.5;
  m->image_threshold = 0.5f;
  m->pixel_threshold = 0.25f;
  m->n_regions = anomalous ? 2 : 0;
  m->model_generation = 7;
  GstStructure *s = gst_buffer_add_faprompt_structure_meta(buf, m);
  gst_structure_set(s, "model-file", G_TYPE_STRING, model_file, NULL);
  for (guint r = 0; r < m->n_regions; r++) {
    GstVideoRegionOfInterestMeta *roi =
        gst_buffer_add_video_region_of_interest_meta(buf, "anomaly", 10 * r, 5 + r, 20, 10 + r);
    gst_video_region_of_interest_meta_add_param(
        roi, gst_structure_new("faprompt", "peak", G_TYPE_DOUBLE, 0.9 - 0.1 * r, "mean",
                               G_TYPE_DOUBLE, 0.7 - 0.1 * r, "area", G_TYPE_UINT, 12, NULL));
  }
  GST_BUFFER_PTS(buf) = i * 40 * GST_MSECOND;
  GST_BUFFER_DURATION(buf) = 40 * GST_MSECOND;
  return buf;
}

/* the element itself (gst_harness_new_parse would wrap it in a bin) with
 * "key=value ..." properties */
static GstHarness *publisher(const char *props, GstBus **bus) {
  GstElement *e = gst_element_factory_make("fapromptpublish", NULL);
  g_assert_nonnull(e);
  gchar **kv = g_strsplit(props, " ", -1);
  for (gchar **p = kv; *p; p++) {
    gchar *eq = strchr(*p, '=');
    if (!eq)
      continue;
    *eq = '\0';
    gst_util_set_object_arg(G_OBJECT(e), *p, eq + 1);
  }
  g_strfreev(kv);
  gst_object_ref_sink(e);
  GstHarness *h = gst_harness_new_with_element(e, "sink", "src");
  gst_object_unref(e);
  *bus = gst_bus_new();
  gst_element_set_bus(h->element, *bus);
  gst_harness_set_src_caps_str(h, "video/x-raw,format=RGB,width=64,height=48,framerate=25/1");
  return h;
}

/* the bus's queued messages hold the element: drop them before teardown */
static void finish(GstHarness *h, GstBus *bus) {
  gst_harness_teardown(h);
  gst_bus_set_flushing(bus, TRUE);
  g_object_unref(bus);
}

static gchar **read_lines(const gchar *path, guint *n) {
  gchar *text = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  gchar **lines = g_strsplit(text, "\n", -1);
  g_free(text);
  *n = g_strv_length(lines);
  if (*n && lines[*n - 1][0] == '\0')
    (*n)--;
  return lines;
}

static JsonObject *parse(JsonParser *p, const gchar *line) {
  GError *err = NULL;
  g_assert_true(json_parser_load_from_data(p, line, -1, &err));
  g_assert_no_error(err);
  return json_node_get_object(json_parser_get_root(p));
}

static void test_file_fields(void) {
  gchar *out = g_build_filename(tmpdir, "fields.jsonl", NULL);
  gchar *props = g_strdup_printf("target=file location=%s policy=every-frame source-id=line/3 "
                                 "include-map=array map-size=2 stats-interval=0",
                                 out);
  GstBus *bus;
  GstHarness *h = publisher(props, &bus);
  const guint N = 20;
  gfloat scores[20];
  for (guint i = 0; i < N; i++) {
    scores[i] = 0.1f + 0.037f * i;
    gst_harness_push(h, result_buffer(i, scores[i], i >= 10));
    gst_buffer_unref(gst_harness_pull(h));
    if (i == 5) { /* a buffer without a result says nothing */
      gst_harness_push(h, gst_buffer_new_allocate(NULL, 64 * 48 * 3, NULL));
      gst_buffer_unref(gst_harness_pull(h));
    }
  }
  gst_harness_push_event(h, gst_event_new_eos());
  guint64 sent = 0;
  g_object_get(h->element, "messages-sent", &sent, NULL);
  g_assert_cmpuint(sent, ==, N); /* EOS waited for the queue to empty */
  finish(h, bus);

  gchar *data = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(model_file, &data, &len, NULL));
  gchar *sha = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (guchar *)data, len);
  g_free(data);
  guint n;
  gchar **lines = read_lines(out, &n);
  g_assert_cmpuint(n, ==, N);
  JsonParser *p = json_parser_new();
  for (guint i = 0; i < N; i++) {
    JsonObject *o = parse(p, lines[i]);
    g_assert_cmpstr(json_object_get_string_member(o, "schema"), ==, "faprompt-result/1");
    g_assert_cmpstr(json_object_get_string_member(o, "source"), ==, "line/3");
    g_assert_cmpint(json_object_get_int_member(o, "sequence"), ==, i + 1);
    g_assert_cmpint(json_object_get_int_member(o, "pts_ns"), ==, i * 40 * GST_MSECOND);
    /* shortest round-trip form: the float32 comes back bit for bit */
    g_assert_cmpfloat((gfloat)json_object_get_double_member(o, "score"), ==, scores[i]);
    g_assert_cmpint(json_object_get_boolean_member(o, "anomalous"), ==, i >= 10);
    JsonObject *t = json_object_get_object_member(o, "thresholds");
    g_assert_cmpfloat(json_object_get_double_member(t, "pixel"), ==, 0.25);
    JsonArray *regions = json_object_get_array_member(o, "regions");
    g_assert_cmpuint(json_array_get_length(regions), ==, i >= 10 ? 2 : 0);
    for (guint r = 0; r < json_array_get_length(regions); r++) {
      JsonObject *b = json_array_get_object_element(regions, r);
      g_assert_cmpint(json_object_get_int_member(b, "x"), ==, 10 * r);
      g_assert_cmpint(json_object_get_int_member(b, "height"), ==, 10 + r);
      g_assert_cmpfloat((gfloat)json_object_get_double_member(b, "peak"), ==,
                        (gfloat)(0.9 - 0.1 * r));
    }
    JsonObject *model = json_object_get_object_member(o, "model");
    g_assert_cmpstr(json_object_get_string_member(model, "sha256"), ==, sha);
    g_assert_cmpint(json_object_get_int_member(model, "generation"), ==, 7);
    gchar *base = g_path_get_basename(model_file);
    g_assert_cmpstr(json_object_get_string_member(model, "file"), ==, base);
    g_free(base);
    JsonObject *map = json_object_get_object_member(o, "map");
    JsonArray *rows = json_object_get_array_member(map, "data");
    /* the 8x8 map (y * 8 + x) / 64 as 2x2 cells of 4x4: cell (0,0) is the
     * mean of y, x in 0..3: (8 * 1.5 + 1.5) / 64; cell (1,1): (8 * 5.5 + 5.5) / 64 */
    JsonArray *row0 = json_array_get_array_element(rows, 0);
    JsonArray *row1 = json_array_get_array_element(rows, 1);
    g_assert_cmpfloat_with_epsilon(json_array_get_double_element(row0, 0), 13.5 / 64, 1e-7);
    g_assert_cmpfloat_with_epsilon(json_array_get_double_element(row1, 1), 49.5 / 64, 1e-7);
  }
  g_object_unref(p);
  g_strfreev(lines);
  g_free(sha);
  g_free(props);
  g_free(out);
}

static void test_on_change(void) {
  gchar *out = g_build_filename(tmpdir, "change.jsonl", NULL);
  gchar *props = g_strdup_printf("target=file location=%s policy=on-change stats-interval=0", out);
  GstBus *bus;
  GstHarness *h = publisher(props, &bus);
  const gboolean pattern[] = {FALSE, FALSE, TRUE, TRUE, FALSE, TRUE, TRUE};
  for (guint i = 0; i < G_N_ELEMENTS(pattern); i++) {
    gst_harness_push(h, result_buffer(i, pattern[i] ? 0.8f : 0.2f, pattern[i]));
    gst_buffer_unref(gst_harness_pull(h));
  }
  gst_harness_push_event(h, gst_event_new_eos());
  finish(h, bus);
  guint n;
  gchar **lines = read_lines(out, &n);
  const char *want[] = {"anomaly-started", "anomaly-ended", "anomaly-started", "anomaly-ended"};
  const gint64 pts[] = {2, 4, 5, -1};
  g_assert_cmpuint(n, ==, 4);
  JsonParser *p = json_parser_new();
  for (guint i = 0; i < n; i++) {
    JsonObject *o = parse(p, lines[i]);
    g_assert_cmpstr(json_object_get_string_member(o, "event"), ==, want[i]);
    g_assert_cmpint(json_object_get_boolean_member(o, "anomalous"), ==, i % 2 == 0);
    if (pts[i] >= 0)
      g_assert_cmpint(json_object_get_int_member(o, "pts_ns"), ==, pts[i] * 40 * GST_MSECOND);
    else /* the one EOS closes has no frame */
      g_assert_true(json_object_get_null_member(o, "pts_ns"));
  }
  g_object_unref(p);
  g_strfreev(lines);
  g_free(props);
  g_free(out);
}

static void test_full_disk(void) {
  if (!g_file_test("/dev/full", G_FILE_TEST_EXISTS)) {
    g_test_skip("no /dev/full");
    return;
  }
  GstBus *bus;
  GstHarness *h = publisher("target=file location=/dev/full policy=every-frame max-queued=5 "
                            "flush-timeout=100 stats-interval=0",
                            &bus);
  gint64 worst = 0;
  for (guint i = 0; i < 12; i++) {
    gint64 t0 = g_get_monotonic_time();
    gst_harness_push(h, result_buffer(i, 0.3f, FALSE));
    worst = MAX(worst, g_get_monotonic_time() - t0);
    gst_buffer_unref(gst_harness_pull(h));
  }
  /* the sender retries every second; give it one failed write */
  GstMessage *w = gst_bus_timed_pop_filtered(bus, 5 * GST_SECOND, GST_MESSAGE_WARNING);
  g_assert_nonnull(w);
  GError *err = NULL;
  gst_message_parse_warning(w, &err, NULL);
  g_assert_nonnull(strstr(err->message, "/dev/full"));
  g_assert_nonnull(strstr(err->message, g_strerror(ENOSPC)));
  g_error_free(err);
  gst_message_unref(w);
  guint64 dropped = 0, sent = 1;
  guint queued = 0;
  g_object_get(h->element, "messages-dropped", &dropped, "messages-queued", &queued,
               "messages-sent", &sent, NULL);
  g_assert_cmpuint(sent, ==, 0);
  g_assert_cmpuint(queued, ==, 5);
  g_assert_cmpuint(dropped, ==, 7);
  g_printerr("# full disk: slowest push %.3f ms (the streaming thread never waits)\n",
             worst / 1000.0);
  gst_harness_push_event(h, gst_event_new_eos()); /* flush-timeout 100 ms, then a warning */
  finish(h, bus);
}

static void test_rotation(void) {
  gchar *out = g_build_filename(tmpdir, "rot.jsonl", NULL);
  gchar *props = g_strdup_printf("target=file location=%s policy=every-frame max-file-bytes=2000 "
                                 "max-files=1 stats-interval=0",
                                 out);
  GstBus *bus;
  GstHarness *h = publisher(props, &bus);
  for (guint i = 0; i < 40; i++) {
    gst_harness_push(h, result_buffer(i, 0.3f, FALSE));
    gst_buffer_unref(gst_harness_pull(h));
  }
  gst_harness_push_event(h, gst_event_new_eos());
  finish(h, bus);
  gchar *one = g_strconcat(out, ".1", NULL), *two = g_strconcat(out, ".2", NULL);
  GStatBuf st;
  g_assert_true(g_stat(out, &st) == 0 && st.st_size <= 2000);
  g_assert_true(g_stat(one, &st) == 0 && st.st_size <= 2000);
  g_assert_false(g_file_test(two, G_FILE_TEST_EXISTS));
  guint n;
  gchar **lines = read_lines(out, &n);
  JsonParser *p = json_parser_new();
  g_assert_cmpint(json_object_get_int_member(parse(p, lines[n - 1]), "sequence"), ==, 40);
  g_object_unref(p);
  g_strfreev(lines);
  g_free(one);
  g_free(two);
  g_free(props);
  g_free(out);
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  tmpdir = g_dir_make_tmp("fapromptpublish-XXXXXX", NULL);
  model_file = g_build_filename(tmpdir, "model.safetensors", NULL);
  g_assert_true(g_file_set_contents(model_file, "not really a model, hashed all the same", -1,
                                    NULL));
  g_test_add_func("/publish/file-fields", test_file_fields);
  g_test_add_func("/publish/on-change", test_on_change);
  g_test_add_func("/publish/full-disk", test_full_disk);
  g_test_add_func("/publish/rotation", test_rotation);
  int rc = g_test_run();
  gchar *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
  g_assert_true(system(cmd) == 0);
  g_free(cmd);
  g_free(model_file);
  g_free(tmpdir);
  return rc;
}
