/* RTSP loopback: a gst-rtsp-server on 127.0.0.1 (a free port) streams
 *   videotestsrc ! faprompt ! jpegenc ! rtpjpegpay (+ rtphdrextfaprompt)
 * and a client in the same process plays
 *   rtspsrc ! rtpjpegdepay ! jpegdec ! appsink
 * The result of each frame must reach the client's decoded buffers: score and
 * decision bit-exact, the coarse map close to the server's map.
 * A frame analysed in two roi rectangles (the higher score second, one
 * rectangle anomalous, the other not) goes through the extension's write
 * and read: the frame's decision arrives (the highest score bit-exact,
 * anomalous, the regions summed, roi-count 2) with the map of the highest
 * rectangle, not the first meta's.
 *
 *   test_rtsp MODEL
 */
#include <gst/app/app.h>
#include <gst/gst.h>
#include <gst/rtp/gstrtphdrext.h>
#include <gst/rtsp-server/rtsp-server.h>
#include <math.h>
#include <string.h>

#include "gstfapromptmeta.h"

static const char *model_path;

typedef struct {
  GMutex lock;
  GCond changed;
  GHashTable *scores;  /* server PTS -> score (as float bits) */
  GHashTable *maps;    /* server PTS -> 15x15 coarse map of the server's map */
  GstRTSPMedia *media; /* the served media, kept to stop it before teardown */
  gboolean unprepared; /* the server has stopped the media's pipeline */
  gboolean closed;     /* the tables are gone: late server buffers are ignored */
} ServerSide;

static ServerSide server_side;

static gfloat *coarse(const GstFAPromptMeta *m, guint n) {
  gfloat *c = g_new0(gfloat, n * n);
  for (guint j = 0; j < n; j++)
    for (guint i = 0; i < n; i++) {
      guint y0 = j * m->map_height / n, y1 = (j + 1) * m->map_height / n;
      guint x0 = i * m->map_width / n, x1 = (i + 1) * m->map_width / n;
      double sum = 0;
      for (guint y = y0; y < y1; y++)
        for (guint x = x0; x < x1; x++)
          sum += *(const gfloat *)((const guint8 *)m->map + y * m->map_stride + x * 4);
      c[j * n + i] = (gfloat)(sum / ((y1 - y0) * (x1 - x0)));
    }
  return c;
}

static GstPadProbeReturn server_probe(GstPad *pad, GstPadProbeInfo *info, gpointer data) {
  GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER(info);
  GstFAPromptMeta *m = gst_buffer_get_faprompt_meta(b);
  g_mutex_lock(&server_side.lock);
  if (m && !m->reused && !server_side.closed) {
    guint64 *key = g_new(guint64, 1);
    *key = m->inference_timestamp;
    g_hash_table_insert(server_side.scores, key, g_memdup2(&m->score, sizeof(gfloat)));
    key = g_new(guint64, 1);
    *key = m->inference_timestamp;
    g_hash_table_insert(server_side.maps, key, coarse(m, 15));
  }
  g_mutex_unlock(&server_side.lock);
  return GST_PAD_PROBE_OK;
}

static void media_unprepared(GstRTSPMedia *media, gpointer data) {
  g_mutex_lock(&server_side.lock);
  server_side.unprepared = TRUE;
  g_cond_broadcast(&server_side.changed);
  g_mutex_unlock(&server_side.lock);
}

static void media_configure(GstRTSPMediaFactory *factory, GstRTSPMedia *media, gpointer data) {
  GstElement *bin = gst_rtsp_media_get_element(media);
  GstElement *pay = gst_bin_get_by_name(GST_BIN(bin), "pay0");
  GstElement *fap = gst_bin_get_by_name(GST_BIN(bin), "fap");
  GstRTPHeaderExtension *ext = gst_rtp_header_extension_create_from_uri(
      "urn:faprompt:rtp-hdrext:result");
  g_assert_nonnull(ext);
  gst_rtp_header_extension_set_id(ext, 1);
  g_signal_emit_by_name(pay, "add-extension", ext);
  gst_object_unref(ext);
  GstPad *src = gst_element_get_static_pad(fap, "src");
  gst_pad_add_probe(src, GST_PAD_PROBE_TYPE_BUFFER, server_probe, NULL, NULL);
  gst_object_unref(src);
  gst_object_unref(fap);
  gst_object_unref(pay);
  gst_object_unref(bin);
  g_mutex_lock(&server_side.lock);
  g_assert_null(server_side.media); /* one client, one media */
  server_side.media = g_object_ref(media);
  g_mutex_unlock(&server_side.lock);
  g_signal_connect(media, "unprepared", G_CALLBACK(media_unprepared), NULL);
}

/* The server's pipeline runs on its own threads (300 frames, 10 s live) and
 * would go on calling server_probe after the test frees the tables: wait for
 * the client's TEARDOWN to stop it, stop it ourselves if that does not come,
 * and only then close the tables. */
static void stop_server_media(void) {
  gint64 deadline = g_get_monotonic_time() + 10 * G_TIME_SPAN_SECOND;
  g_mutex_lock(&server_side.lock);
  while (server_side.media && !server_side.unprepared &&
         g_cond_wait_until(&server_side.changed, &server_side.lock, deadline))
    ;
  GstRTSPMedia *media = server_side.media;
  gboolean unprepared = server_side.unprepared;
  server_side.media = NULL;
  g_mutex_unlock(&server_side.lock);
  if (media) {
    if (!unprepared) {
      g_printerr("# the server had not stopped the media 10 s after TEARDOWN: stopping it\n");
      g_assert_true(gst_rtsp_media_unprepare(media));
    }
    g_object_unref(media);
  }
  g_mutex_lock(&server_side.lock);
  server_side.closed = TRUE;
  g_mutex_unlock(&server_side.lock);
}

static gpointer server_thread(gpointer loop) {
  g_main_loop_run(loop);
  return NULL;
}

static void test_loopback(void) {
  g_mutex_init(&server_side.lock);
  g_cond_init(&server_side.changed);
  server_side.scores = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
  server_side.maps = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);

  GMainContext *ctx = g_main_context_new();
  GMainLoop *loop = g_main_loop_new(ctx, FALSE);
  GstRTSPServer *server = gst_rtsp_server_new();
  gst_rtsp_server_set_address(server, "127.0.0.1");
  gst_rtsp_server_set_service(server, "0"); /* any free port */
  GstRTSPMountPoints *mounts = gst_rtsp_server_get_mount_points(server);
  GstRTSPMediaFactory *factory = gst_rtsp_media_factory_new();
  gchar *launch = g_strdup_printf(
      "( videotestsrc is-live=true pattern=ball num-buffers=300 ! "
      "video/x-raw,format=I420,width=160,height=120,framerate=30/1 ! "
      "faprompt name=fap model-file=%s inference-interval=2 non-blocking=false ! "
      "jpegenc ! rtpjpegpay name=pay0 pt=96 )",
      model_path);
  gst_rtsp_media_factory_set_launch(factory, launch);
  g_free(launch);
  g_signal_connect(factory, "media-configure", G_CALLBACK(media_configure), NULL);
  gst_rtsp_mount_points_add_factory(mounts, "/test", factory);
  g_object_unref(mounts);
  guint source_id = gst_rtsp_server_attach(server, ctx);
  g_assert_cmpuint(source_id, >, 0);
  int port = gst_rtsp_server_get_bound_port(server);
  g_assert_cmpint(port, >, 0);
  GThread *thread = g_thread_new("rtsp-server", server_thread, loop);

  gchar *client_desc = g_strdup_printf(
      "rtspsrc location=rtsp://127.0.0.1:%d/test protocols=tcp latency=100 ! "
      "rtpjpegdepay name=depay ! jpegdec ! appsink name=sink sync=false max-buffers=100",
      port);
  GError *err = NULL;
  GstElement *client = gst_parse_launch(client_desc, &err);
  g_assert_no_error(err);
  g_free(client_desc);
  GstElement *sink = gst_bin_get_by_name(GST_BIN(client), "sink");
  gst_element_set_state(client, GST_STATE_PLAYING);

  int got = 0, with_meta = 0, matched = 0;
  double worst_cell = 0;
  while (got < 40) {
    GstSample *sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 20 * GST_SECOND);
    if (!sample) {
      GstBus *bus = gst_element_get_bus(client);
      GstMessage *msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
      gst_object_unref(bus);
      if (msg) {
        GError *e = NULL;
        gst_message_parse_error(msg, &e, NULL);
        g_printerr("client error: %s\n", e->message);
        g_error_free(e);
        gst_message_unref(msg);
      }
      break;
    }
    got++;
    GstBuffer *b = gst_sample_get_buffer(sample);
    /* after jpegdec only the structure-backed meta remains (decoders keep
     * "video"-only metas) */
    GstCustomMeta *cm = gst_buffer_get_custom_meta(b, GST_FAPROMPT_STRUCTURE_META_NAME);
    if (cm) {
      GstStructure *s = gst_custom_meta_get_structure(cm);
      double score;
      guint64 ts;
      guint w, h, mw;
      g_assert_true(gst_structure_get_double(s, "score", &score));
      g_assert_true(gst_structure_get_uint64(s, "inference-timestamp", &ts));
      g_assert_true(gst_structure_get_uint(s, "width", &w));
      g_assert_true(gst_structure_get_uint(s, "height", &h));
      g_assert_true(gst_structure_get_uint(s, "map-width", &mw));
      g_assert_cmpstr(gst_structure_get_string(s, "transport"), ==, "rtp");
      g_assert_cmpuint(w, ==, 160);
      g_assert_cmpuint(h, ==, 120);
      g_assert_cmpuint(mw, ==, 15);
      with_meta++;
      g_mutex_lock(&server_side.lock);
      gfloat *sscore = g_hash_table_lookup(server_side.scores, &ts);
      gfloat *smap = g_hash_table_lookup(server_side.maps, &ts);
      if (sscore) {
        matched++;
        g_assert_cmpfloat((gfloat)score, ==, *sscore); /* bit-exact */
        GBytes *bytes = g_value_get_boxed(gst_structure_get_value(s, "map"));
        const gfloat *cmap = g_bytes_get_data(bytes, NULL);
        for (int i = 0; i < 15 * 15; i++)
          worst_cell = MAX(worst_cell, fabs(cmap[i] - smap[i]));
      }
      g_mutex_unlock(&server_side.lock);
    }
    gst_sample_unref(sample);
  }
  g_printerr("# %d frames received, %d with the result, %d matched to the server's; worst "
             "coarse-map cell error %.4f\n",
             got, with_meta, matched, worst_cell);
  g_assert_cmpint(got, >=, 40);
  g_assert_cmpint(with_meta, >=, 35);
  g_assert_cmpint(matched, >=, 15);
  g_assert_cmpfloat(worst_cell, <=, 0.5 / 255 + 1e-6); /* u8 quantisation only */

  gst_element_set_state(client, GST_STATE_NULL);
  gst_object_unref(sink);
  gst_object_unref(client);
  stop_server_media();

  GstRTSPSessionPool *pool = gst_rtsp_server_get_session_pool(server);
  gst_rtsp_session_pool_cleanup(pool);
  g_object_unref(pool);
  GSource *src = g_main_context_find_source_by_id(ctx, source_id);
  if (src)
    g_source_destroy(src);
  g_main_loop_quit(loop);
  g_thread_join(thread);
  g_object_unref(server);
  g_main_loop_unref(loop);
  g_main_context_unref(ctx);
  g_hash_table_unref(server_side.scores);
  g_hash_table_unref(server_side.maps);
}

/* One RGB frame through faprompt with these rois and image-threshold. */
static GstBuffer *analysed(const char *roi, double threshold) {
  gchar *desc = g_strdup_printf(
      "videotestsrc num-buffers=1 pattern=ball ! video/x-raw,format=RGB,width=160,height=120 ! "
      "faprompt model-file=%s non-blocking=false pixel-threshold=0.0 image-threshold=%.9g "
      "roi=\"%s\" ! appsink name=sink",
      model_path, threshold, roi);
  GError *err = NULL;
  GstElement *p = gst_parse_launch(desc, &err);
  g_assert_no_error(err);
  g_free(desc);
  GstElement *sink = gst_bin_get_by_name(GST_BIN(p), "sink");
  gst_element_set_state(p, GST_STATE_PLAYING);
  GstSample *sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 60 * GST_SECOND);
  g_assert_nonnull(sample);
  GstBuffer *b = gst_buffer_ref(gst_sample_get_buffer(sample));
  gst_sample_unref(sample);
  gst_element_set_state(p, GST_STATE_NULL);
  gst_object_unref(sink);
  gst_object_unref(p);
  return b;
}

static guint rois_of(GstBuffer *b, GstFAPromptMeta **m) {
  gpointer state = NULL;
  GstMeta *meta;
  guint n = 0;
  while ((meta = gst_buffer_iterate_meta_filtered(b, &state, GST_FAPROMPT_META_API_TYPE)))
    if (n < 2)
      m[n++] = (GstFAPromptMeta *)meta;
  return n;
}

static void test_hdrext_rois(void) {
  const char *left = "0,0,80,120", *right = "80,0,80,120";
  GstBuffer *probe = analysed("0,0,80,120;80,0,80,120", 0.5);
  GstFAPromptMeta *m[2];
  g_assert_cmpuint(rois_of(probe, m), ==, 2);
  g_assert_true(m[0]->score != m[1]->score);
  /* the higher rectangle second, the threshold between the two */
  gboolean swap = m[0]->score > m[1]->score;
  double threshold = ((double)m[0]->score + m[1]->score) / 2;
  gst_buffer_unref(probe);
  gchar *roi = g_strdup_printf("%s;%s", swap ? right : left, swap ? left : right);
  GstBuffer *b = analysed(roi, threshold);
  g_free(roi);
  g_assert_cmpuint(rois_of(b, m), ==, 2);
  g_assert_cmpfloat(m[0]->score, <, m[1]->score);
  g_assert_false(m[0]->anomalous);
  g_assert_true(m[1]->anomalous);

  GstRTPHeaderExtension *ext =
      gst_rtp_header_extension_create_from_uri("urn:faprompt:rtp-hdrext:result");
  g_assert_nonnull(ext);
  gst_rtp_header_extension_set_id(ext, 1);
  guint8 data[255];
  gsize max = gst_rtp_header_extension_get_max_size(ext, b);
  g_assert_cmpuint(max, <=, sizeof data);
  GstBuffer *packet = gst_buffer_new();
  gssize n = gst_rtp_header_extension_write(ext, b, GST_RTP_HEADER_EXTENSION_TWO_BYTE, packet,
                                            data, max);
  g_assert_cmpint(n, >, 20);
  GstBuffer *rx = gst_buffer_new();
  g_assert_true(gst_rtp_header_extension_read(ext, GST_RTP_HEADER_EXTENSION_TWO_BYTE, data,
                                              (gsize)n, rx));
  GstCustomMeta *cm = gst_buffer_get_custom_meta(rx, GST_FAPROMPT_STRUCTURE_META_NAME);
  g_assert_nonnull(cm);
  GstStructure *s = gst_custom_meta_get_structure(cm);
  double score;
  gboolean anomalous = FALSE, decision = FALSE;
  guint regions, count, w;
  g_assert_true(gst_structure_get_double(s, "score", &score));
  g_assert_true(gst_structure_get_boolean(s, "anomalous", &anomalous));
  g_assert_true(gst_structure_get_uint(s, "region-count", &regions));
  g_assert_true(gst_structure_get_uint(s, "roi-count", &count));
  g_assert_true(gst_structure_get_boolean(s, "frame-decision", &decision));
  g_assert_true(gst_structure_get_uint(s, "width", &w));
  g_assert_cmpfloat((gfloat)score, ==, m[1]->score); /* the highest, bit-exact */
  g_assert_true(anomalous);
  g_assert_true(decision);
  g_assert_cmpuint(count, ==, 2);
  g_assert_cmpuint(regions, ==, MIN(m[0]->n_regions + m[1]->n_regions, 255));
  g_assert_cmpuint(w, ==, m[1]->width);
  /* the map: the highest rectangle's, to the u8 quantisation */
  GstFAPromptMeta *rm = gst_buffer_get_faprompt_meta(rx);
  g_assert_nonnull(rm);
  g_assert_cmpuint(rm->map_width, ==, 15);
  gfloat *want = coarse(m[1], 15);
  for (int i = 0; i < 15 * 15; i++) {
    gfloat got = *(const gfloat *)((const guint8 *)rm->map + (i / 15) * rm->map_stride +
                                   (i % 15) * 4);
    g_assert_cmpfloat(fabsf(got - want[i]), <=, 0.5f / 255 + 1e-6f);
  }
  g_free(want);
  gst_buffer_unref(rx);
  gst_buffer_unref(packet);
  gst_object_unref(ext);
  gst_buffer_unref(b);
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  if (argc < 2) {
    g_printerr("usage: %s MODEL\n", argv[0]);
    return 2;
  }
  model_path = argv[1];
  g_test_add_func("/gst/rtsp-loopback", test_loopback);
  g_test_add_func("/gst/rtp-hdrext-rois", test_hdrext_rois);
  return g_test_run();
}
