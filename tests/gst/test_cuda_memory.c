/* The element on frames in CUDA memory, against the same frames in system
 * memory, on a GPU (exit 77 where there is none: no cudaupload element, as
 * GStreamer's nvcodec plugin registers nothing without a CUDA driver):
 *
 *   videotestsrc ! NV12 ! tee ! faprompt backend=cuda ! appsink            (system memory)
 *                         tee ! cudaupload ! faprompt backend=cuda ! cudadownload ! appsink
 *
 * Same scores and maps, the same drawn pixels (device drawing == host
 * drawing == fap_blend_frame), and no pixel copied between host and device
 * on the CUDA-memory branch (pixel-bytes-copied == 0; the system branch
 * uploads each inferred frame once).
 *
 *   test_cuda_memory MODEL      (plain exit status; 77 = skipped) */
#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gstfapromptmeta.h"

#define N 8

static int failures;
#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      failures++;                                                                                  \
      printf("FAIL: " __VA_ARGS__);                                                                \
      printf("\n");                                                                                \
    }                                                                                              \
  } while (0)

static gboolean same_frames(GstSample *a, GstSample *b) {
  GstVideoInfo ia, ib;
  GstVideoFrame fa, fb;
  gst_video_info_from_caps(&ia, gst_sample_get_caps(a));
  gst_video_info_from_caps(&ib, gst_sample_get_caps(b));
  if (!gst_video_frame_map(&fa, &ia, gst_sample_get_buffer(a), GST_MAP_READ))
    return FALSE;
  if (!gst_video_frame_map(&fb, &ib, gst_sample_get_buffer(b), GST_MAP_READ)) {
    gst_video_frame_unmap(&fa);
    return FALSE;
  }
  gboolean same = TRUE;
  for (guint p = 0; p < GST_VIDEO_FRAME_N_PLANES(&fa) && same; p++) {
    const guint rows = GST_VIDEO_FRAME_COMP_HEIGHT(&fa, p);
    const guint row = GST_VIDEO_FRAME_COMP_WIDTH(&fa, p) * GST_VIDEO_FRAME_COMP_PSTRIDE(&fa, p);
    for (guint y = 0; y < rows && same; y++)
      same = memcmp((guint8 *)GST_VIDEO_FRAME_PLANE_DATA(&fa, p) +
                        y * GST_VIDEO_FRAME_PLANE_STRIDE(&fa, p),
                    (guint8 *)GST_VIDEO_FRAME_PLANE_DATA(&fb, p) +
                        y * GST_VIDEO_FRAME_PLANE_STRIDE(&fb, p),
                    row) == 0;
  }
  gst_video_frame_unmap(&fa);
  gst_video_frame_unmap(&fb);
  return same;
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  if (argc < 2) {
    fprintf(stderr, "usage: test_cuda_memory MODEL\n");
    return 2;
  }
  GstElementFactory *up = gst_element_factory_find("cudaupload");
  if (!up) {
    printf("no cudaupload element (no CUDA driver or GPU, or gstreamer1.0-plugins-bad "
           "missing): skipped\n");
    return 77;
  }
  gst_object_unref(up);
  const char *common = "backend=cuda non-blocking=false inference-interval=2 "
                       "pixel-threshold=0.3 post-messages=none";
  gchar *desc = g_strdup_printf(
      "videotestsrc num-buffers=%d pattern=ball ! video/x-raw,format=NV12,width=320,height=240 "
      "! tee name=t "
      "t. ! queue ! faprompt name=sys model-file=%s %s ! appsink name=a sync=false "
      "t. ! queue ! cudaupload ! faprompt name=dev model-file=%s %s ! cudadownload ! "
      "video/x-raw,format=NV12 ! appsink name=b sync=false",
      N, argv[1], common, argv[1], common);
  GError *err = NULL;
  GstElement *pipe = gst_parse_launch(desc, &err);
  g_free(desc);
  if (!pipe) {
    printf("FAIL: pipeline: %s\n", err->message);
    return 1;
  }
  GstAppSink *a = GST_APP_SINK(gst_bin_get_by_name(GST_BIN(pipe), "a"));
  GstAppSink *b = GST_APP_SINK(gst_bin_get_by_name(GST_BIN(pipe), "b"));
  if (gst_element_set_state(pipe, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    printf("FAIL: the pipeline did not start\n");
    return 1;
  }
  int frames = 0, drawn_equal = 0;
  for (int i = 0; i < N; i++) {
    GstSample *sa = gst_app_sink_try_pull_sample(a, 30 * GST_SECOND);
    GstSample *sb = gst_app_sink_try_pull_sample(b, 30 * GST_SECOND);
    if (!sa || !sb) {
      CHECK(0, "frame %d: no sample (system %p, cuda %p)", i, (void *)sa, (void *)sb);
      if (sa)
        gst_sample_unref(sa);
      if (sb)
        gst_sample_unref(sb);
      break;
    }
    GstFAPromptMeta *ma = gst_buffer_get_faprompt_meta(gst_sample_get_buffer(sa));
    GstFAPromptMeta *mb = gst_buffer_get_faprompt_meta(gst_sample_get_buffer(sb));
    CHECK(ma && mb, "frame %d: meta on both branches", i);
    if (ma && mb) {
      CHECK(ma->score == mb->score, "frame %d: score %g (system) vs %g (CUDA memory)", i,
            ma->score, mb->score);
      CHECK(ma->map_width == mb->map_width, "frame %d: map size", i);
      double e = 0;
      for (guint k = 0; k < ma->map_width * ma->map_height; k++)
        e = MAX(e, fabs((double)ma->map[k] - mb->map[k]));
      CHECK(e == 0, "frame %d: maps differ by %g", i, e);
      CHECK(ma->reused == mb->reused, "frame %d: reused flag", i);
    }
    const gboolean same = same_frames(sa, sb);
    CHECK(same, "frame %d: the drawn pixels differ between system and CUDA memory", i);
    drawn_equal += same;
    frames++;
    gst_sample_unref(sa);
    gst_sample_unref(sb);
  }
  GstElement *sys = gst_bin_get_by_name(GST_BIN(pipe), "sys");
  GstElement *dev = gst_bin_get_by_name(GST_BIN(pipe), "dev");
  guint64 bs = 0, bd = 1, inf = 0;
  g_object_get(sys, "pixel-bytes-copied", &bs, "inferences", &inf, NULL);
  g_object_get(dev, "pixel-bytes-copied", &bd, NULL);
  const guint64 frame_bytes = 320 * 240 * 3 / 2;
  printf("%d frames, %d drawn identically; pixel bytes host<->device: system memory %" G_GUINT64_FORMAT
         " (%" G_GUINT64_FORMAT " inferences), CUDA memory %" G_GUINT64_FORMAT "\n",
         frames, drawn_equal, bs, inf, bd);
  CHECK(bd == 0, "CUDA memory: %" G_GUINT64_FORMAT " pixel bytes crossed, want 0", bd);
  CHECK(bs == inf * frame_bytes, "system memory: %" G_GUINT64_FORMAT " pixel bytes, want %" G_GUINT64_FORMAT,
        bs, inf * frame_bytes);
  gst_element_set_state(pipe, GST_STATE_NULL);
  gst_object_unref(sys);
  gst_object_unref(dev);
  gst_object_unref(a);
  gst_object_unref(b);
  gst_object_unref(pipe);
  printf("%s: %d failure%s\n", failures ? "FAILED" : "passed", failures, failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
