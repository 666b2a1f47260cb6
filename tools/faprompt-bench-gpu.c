/* faprompt-bench-gpu: the CUDA backend end to end (frame in host memory ->
 * score and map in host memory), per image size, batch and precision:
 * latency per call and per frame, frames per second, per-stage device time,
 * GPU memory; set against the PyTorch reference run the authors' way on the
 * same GPU (tests/reference/faprompt_ref.py --bench --device cuda, fp32 and
 * fp16 autocast), whose time per frame over ours is the speed-up.
 *
 *   faprompt-bench-gpu MODEL [--sizes 336,518] [--batches 1,8]
 *                      [--precisions f16,bf16] [--frames 64] [--input 1280x720]
 *                      [--format RGB|BGRx|NV12|I420|YUY2] [--device 0]
 *                      [--torch-frames 5] [--no-torch] [--json FILE]
 *                      [--tiles CxR [--tile-overlap N]]
 *
 * --tiles adds, per S and precision, the element's tiled path on the input
 * frame: its C x R tiles (fap_tiles_layout) as crops of the one host frame
 * in one batch, timed per frame (one call) and per tile, and the stitching
 * of their maps (fap_tiles_stitcher, into the element's S * max (C, R)
 * side, at most 1024) on the host, checked against the reference loop
 * fap_tiles_stitch (within 1e-6, else the run fails).
 *
 * Timing: 3 warm-up calls (the first runs eagerly and captures the CUDA
 * graph), then max(frames / B, 8) timed calls; host wall clock around each
 * fap_detector_run_batch(), median reported. Memory: device memory in use
 * (all processes) after creating the detector minus before. */
#include "fap.h"

#include "datafile.h"
#include "fap_kernels.h"
#include "torch_ref.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double quantile(double *v, int n, double q) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  int i = (int)(q * (n - 1) + 0.5);
  return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

typedef struct {
  double frame_ms;
  int ok;
} torch_time;

static torch_time run_torch(const char *python, const char *script, const char *model, int size,
                            int frames, int autocast, int w, int h, GString *log) {
  torch_time t = {0};
  char s_size[16], s_frames[16], s_w[16], s_h[16];
  snprintf(s_size, sizeof s_size, "%d", size);
  snprintf(s_frames, sizeof s_frames, "%d", frames);
  snprintf(s_w, sizeof s_w, "%d", w);
  snprintf(s_h, sizeof s_h, "%d", h);
  const char *args[] = {"--model", model,  "--image-size", s_size, "--frames", s_frames,
                        "--warmup", "2",   "--device",     "cuda", "--width",  s_w,
                        "--height", s_h,   autocast ? "--autocast" : NULL,     NULL};
  JsonParser *p;
  char *line = NULL;
  JsonObject *o = torch_ref_bench("faprompt-bench-gpu", python, script, args, &p, &line);
  if (o) {
    t.frame_ms = 1e3 * json_object_get_double_member_with_default(o, "frame_s", 0);
    t.ok = t.frame_ms > 0;
    g_string_append_printf(log, "%s\n", line);
    g_object_unref(p);
    g_free(line);
  }
  return t;
}

/* a deterministic test frame in the requested format */
static fap_frame make_frame(fap_pixel_format format, int w, int h, uint8_t **buffers) {
  fap_frame f;
  memset(&f, 0, sizeof f);
  f.format = format;
  f.width = w;
  f.height = h;
  const size_t cw = ((size_t)w + 1) / 2, ch = ((size_t)h + 1) / 2;
  size_t sizes[3] = {0, 0, 0};
  switch (format) {
  case FAP_PIXEL_NV12:
    f.stride = (size_t)w, f.plane_stride[0] = 2 * cw;
    sizes[0] = f.stride * h, sizes[1] = 2 * cw * ch;
    break;
  case FAP_PIXEL_I420:
    f.stride = (size_t)w, f.plane_stride[0] = f.plane_stride[1] = cw;
    sizes[0] = f.stride * h, sizes[1] = sizes[2] = cw * ch;
    break;
  case FAP_PIXEL_YUY2:
    f.stride = 4 * cw, sizes[0] = f.stride * h;
    break;
  default:
    f.stride = (size_t)w * (format <= FAP_PIXEL_BGR ? 3 : 4), sizes[0] = f.stride * h;
  }
  for (int p = 0; p < 3; p++) {
    buffers[p] = NULL;
    if (!sizes[p])
      continue;
    buffers[p] = malloc(sizes[p]);
    for (size_t i = 0; i < sizes[p]; i++)
      buffers[p][i] = (uint8_t)((i * 2654435761u) >> 24);
  }
  f.data = buffers[0];
  f.plane[0] = buffers[1];
  f.plane[1] = buffers[2];
  return f;
}

static int parse_list(const char *s, int *out, int max) {
  gchar **parts = g_strsplit(s, ",", 0);
  int n = 0;
  for (int i = 0; parts[i] && n < max; i++)
    if (*parts[i])
      out[n++] = atoi(parts[i]);
  g_strfreev(parts);
  return n;
}

/* The element's tiled path at S: the input's cols x rows tiles as crops of
 * the one frame, one batch a frame; the stitching of their maps. Nonzero
 * on failure (a run, or the stitcher off the reference loop). */
static int bench_tiles(fap_model *model, int size, fap_precision prec, int device,
                       const fap_frame *one, int cols, int rows, int overlap, int frames,
                       GString *table, FILE *json, const char *gpu) {
  const int n = cols * rows;
  fap_rect area = {0, 0, one->width, one->height}, tiles[16];
  if (fap_tiles_layout(area, cols, rows, overlap, tiles) != FAP_OK) {
    fprintf(stderr, "faprompt-bench-gpu: --tiles: %s\n", fap_last_error());
    return 1;
  }
  fap_detector_options o;
  fap_detector_options_init(&o);
  o.backend = FAP_BACKEND_CUDA;
  o.device_id = device;
  o.image_size = size;
  o.batch = n;
  o.precision = prec;
  fap_detector *det = NULL;
  if (fap_detector_new(model, &o, &det) != FAP_OK)
    return 1;
  fap_frame fr[16];
  fap_result res[16];
  for (int t = 0; t < n; t++) {
    fr[t] = *one;
    fr[t].crop = tiles[t];
  }
  int rc = 0;
  for (int i = 0; i < 3 && !rc; i++) /* eager run + capture, then graph replays */
    rc = fap_detector_run_batch(det, fr, n, NULL, res) != FAP_OK;
  const int calls = frames > 8 ? frames : 8;
  double *ms = malloc((size_t)calls * sizeof *ms), *st_ms = malloc((size_t)calls * sizeof *st_ms);
  const int s = rc ? 1 : res[0].map_size;
  const int side = s * (cols > rows ? cols : rows) > 1024 ? 1024 : s * (cols > rows ? cols : rows);
  float *out = malloc((size_t)side * side * sizeof *out);
  float *ref = malloc((size_t)side * side * sizeof *ref);
  fap_tiles_stitcher *stitcher = NULL;
  if (!rc && fap_tiles_stitcher_new(area, cols, rows, overlap, s, side, side, &stitcher) != FAP_OK)
    rc = 1;
  const float *maps[16];
  int done = 0;
  for (int c = 0; c < calls && !rc; c++, done++) {
    double t = now_ms();
    if (fap_detector_run_batch(det, fr, n, NULL, res) != FAP_OK) {
      rc = 1;
      break;
    }
    ms[c] = now_ms() - t;
    for (int k = 0; k < n; k++)
      maps[k] = res[k].map;
    t = now_ms();
    rc = fap_tiles_stitcher_run(stitcher, maps, out) != FAP_OK;
    st_ms[c] = now_ms() - t;
  }
  double worst = 0;
  if (!rc && fap_tiles_stitch(area, cols, rows, overlap, maps, s, ref, side, side) == FAP_OK)
    for (int i = 0; i < side * side; i++)
      worst = fmax(worst, fabs((double)out[i] - ref[i]));
  else
    rc = 1;
  if (worst > 1e-6) {
    fprintf(stderr, "faprompt-bench-gpu: stitched map %.3g off the reference loop\n", worst);
    rc = 1;
  }
  if (!rc) {
    const double p50 = quantile(ms, done, 0.5), st50 = quantile(st_ms, done, 0.5);
    printf("S=%d tiles %dx%d (overlap %d) %s: %.3f ms/frame, %.3f ms/tile; stitch %.3f ms "
           "(%dx%d, %.2g off the reference loop)\n",
           size, cols, rows, overlap, fap_precision_name(prec), p50, p50 / n, st50, side, side,
           worst);
    g_string_append_printf(table, "| %d | %dx%d (%d) | %s | %.3f | %.3f | %.3f (%d) |\n", size,
                           cols, rows, overlap, fap_precision_name(prec), p50, p50 / n, st50,
                           side);
    if (json)
      fprintf(json,
              "{\"size\": %d, \"tiles\": \"%dx%d\", \"tile_overlap\": %d, \"precision\": "
              "\"%s\", \"ms_per_frame\": %.4f, \"ms_per_tile\": %.4f, \"stitch_ms\": %.4f, "
              "\"stitch_side\": %d, \"input\": \"%dx%d\", \"gpu\": \"%s\"}\n",
              size, cols, rows, overlap, fap_precision_name(prec), p50, p50 / n, st50, side,
              one->width, one->height, gpu);
  }
  fap_tiles_stitcher_free(stitcher);
  free(out);
  free(ref);
  free(ms);
  free(st_ms);
  fap_detector_free(det);
  return rc;
}

int main(int argc, char **argv) {
  char *sizes_arg = NULL, *batches_arg = NULL, *prec_arg = NULL, *input_arg = NULL;
  char *format_arg = NULL, *python = NULL, *script = NULL, *json_path = NULL;
  int frames = 64, device = 0, torch_frames = 5, no_torch = 0, tile_overlap = 0;
  char *tiles_arg = NULL;
  GOptionEntry entries[] = {
      {"tiles", 0, 0, G_OPTION_ARG_STRING, &tiles_arg, "also the input in CxR tiles", "CxR"},
      {"tile-overlap", 0, 0, G_OPTION_ARG_INT, &tile_overlap, "tiles' overlap in pixels (0)",
       "N"},
      {"sizes", 0, 0, G_OPTION_ARG_STRING, &sizes_arg, "S values (336,518)", "L"},
      {"batches", 0, 0, G_OPTION_ARG_STRING, &batches_arg, "batch sizes B (1,8)", "L"},
      {"precisions", 0, 0, G_OPTION_ARG_STRING, &prec_arg, "f16,bf16", "L"},
      {"frames", 0, 0, G_OPTION_ARG_INT, &frames, "frames timed per case (64)", "N"},
      {"input", 0, 0, G_OPTION_ARG_STRING, &input_arg, "input frame size (1280x720)", "WxH"},
      {"format", 0, 0, G_OPTION_ARG_STRING, &format_arg, "pixel format (RGB)", "F"},
      {"device", 0, 0, G_OPTION_ARG_INT, &device, "CUDA device (0)", "N"},
      {"torch-frames", 0, 0, G_OPTION_ARG_INT, &torch_frames, "PyTorch frames per case (5)", "N"},
      {"no-torch", 0, 0, G_OPTION_ARG_NONE, &no_torch, "skip the PyTorch reference", NULL},
      {"python", 0, 0, G_OPTION_ARG_STRING, &python, "python with torch (python3)", "P"},
      {"torch-script", 0, 0, G_OPTION_ARG_FILENAME, &script, "faprompt_ref.py", "F"},
      {"json", 0, 0, G_OPTION_ARG_FILENAME, &json_path, "append one JSON line per case", "F"},
      {NULL},
  };
  GOptionContext *ctx = g_option_context_new("MODEL - benchmark the CUDA backend");
  g_option_context_add_main_entries(ctx, entries, NULL);
  GError *error = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error) || argc != 2 || frames < 1) {
    fprintf(stderr, "%s\n%s", error ? error->message : "one MODEL argument expected",
            g_option_context_get_help(ctx, TRUE, NULL));
    return 2;
  }
  g_option_context_free(ctx);
  if (!python)
    python = g_strdup("python3");
  if (!script)
    script = tool_data_file("reference/faprompt_ref.py");
  int in_w = 1280, in_h = 720;
  if (input_arg && sscanf(input_arg, "%dx%d", &in_w, &in_h) != 2) {
    fprintf(stderr, "--input wants WxH\n");
    return 2;
  }
  fap_pixel_format format = FAP_PIXEL_RGB;
  if (format_arg) {
    int found = 0;
    for (int f = FAP_PIXEL_RGB; f <= FAP_PIXEL_YUY2; f++)
      if (g_ascii_strcasecmp(format_arg, fap_pixel_format_name((fap_pixel_format)f)) == 0)
        format = (fap_pixel_format)f, found = 1;
    if (!found) {
      fprintf(stderr, "unknown --format %s\n", format_arg);
      return 2;
    }
  }
  int tile_cols = 0, tile_rows = 0;
  if (tiles_arg && (sscanf(tiles_arg, "%dx%d", &tile_cols, &tile_rows) != 2 || tile_cols < 1 ||
                    tile_rows < 1 || tile_cols * tile_rows > 16)) {
    fprintf(stderr, "--tiles wants CxR, at most 16 tiles\n");
    return 2;
  }
  int sizes[8], batches[8], nsizes, nbatches, nprec = 0;
  fap_precision precs[2];
  nsizes = parse_list(sizes_arg ? sizes_arg : "336,518", sizes, 8);
  nbatches = parse_list(batches_arg ? batches_arg : "1,8", batches, 8);
  gchar **pp = g_strsplit(prec_arg ? prec_arg : "f16,bf16", ",", 0);
  for (int i = 0; pp[i] && nprec < 2; i++)
    if (!strcmp(pp[i], "f16") || !strcmp(pp[i], "bf16"))
      precs[nprec++] = !strcmp(pp[i], "f16") ? FAP_PRECISION_F16 : FAP_PRECISION_BF16;
  g_strfreev(pp);

  if (fap_rt_device_count() < 1) {
    fprintf(stderr, "faprompt-bench-gpu: no CUDA device: %s\n", fap_rt_error());
    return 77;
  }
  fap_rt_device_info info;
  if (fap_rt_open(device, &info)) {
    fprintf(stderr, "faprompt-bench-gpu: device %d: %s\n", device, fap_rt_error());
    return 1;
  }
  fap_model *model = NULL;
  if (fap_model_load(argv[1], &model) != FAP_OK)
    return 1;
  printf("model %s: %.1f M parameters; %s (sm_%d%d, %d SMs, %zu MiB)%s\n", argv[1],
         fap_model_parameter_count(model) / 1e6, info.name, info.major, info.minor,
         info.sm_count, info.total_memory >> 20, fap_rt_is_emulated() ? " [host emulator]" : "");
  printf("input %dx%d %s, end to end (host frame -> host score and map)\n\n", in_w, in_h,
         fap_pixel_format_name(format));
  FILE *json = json_path ? fopen(json_path, "a") : NULL;

  uint8_t *bufs[3];
  fap_frame one = make_frame(format, in_w, in_h, bufs);
  GString *table = g_string_new(NULL), *torch_log = g_string_new(NULL);
  GString *tiles_table = g_string_new(NULL);
  g_string_append(table, "| S | B | precision | ms / call | ms / frame | frames/s | stage ms "
                         "(pre/vision/map1/prior/text/map2/map) | GPU MiB | PyTorch fp32 / fp16 "
                         "ms/frame | speed-up vs fp32 / fp16 |\n|---|---|---|---|---|---|---|---|"
                         "---|---|\n");
  int rc = 0;
  for (int si = 0; si < nsizes; si++) {
    const int size = sizes[si];
    torch_time t32 = {0}, t16 = {0};
    if (!no_torch && !fap_rt_is_emulated()) {
      printf("S=%d: PyTorch reference on the GPU (fp32, then fp16 autocast)...\n", size);
      fflush(stdout);
      t32 = run_torch(python, script, argv[1], size, torch_frames, 0, in_w, in_h, torch_log);
      t16 = run_torch(python, script, argv[1], size, torch_frames, 1, in_w, in_h, torch_log);
      printf("  PyTorch: fp32 %.1f ms/frame, fp16 autocast %.1f ms/frame\n", t32.frame_ms,
             t16.frame_ms);
    }
    for (int pi = 0; pi < nprec; pi++)
      for (int bi = 0; bi < nbatches; bi++) {
        const int b = batches[bi];
        fap_detector_options o;
        fap_detector_options_init(&o);
        o.backend = FAP_BACKEND_CUDA;
        o.device_id = device;
        o.image_size = size;
        o.batch = b;
        o.precision = precs[pi];
        size_t free0 = 0, free1 = 0, total = 0;
        fap_rt_mem_info(&free0, &total);
        fap_detector *det = NULL;
        double t0 = now_ms();
        if (fap_detector_new(model, &o, &det) != FAP_OK) {
          rc = 1;
          continue;
        }
        const double create_ms = now_ms() - t0;
        fap_rt_mem_info(&free1, &total);
        const double mib = (double)(free0 > free1 ? free0 - free1 : 0) / 1048576.0;
        fap_frame *fr = malloc((size_t)b * sizeof *fr);
        fap_result *res = malloc((size_t)b * sizeof *res);
        for (int i = 0; i < b; i++)
          fr[i] = one;
        for (int i = 0; i < 3; i++) /* eager run + capture, then graph replays */
          if (fap_detector_run_batch(det, fr, b, NULL, res) != FAP_OK)
            rc = 1;
        const int calls = frames / b > 8 ? frames / b : 8;
        double *ms = malloc((size_t)calls * sizeof *ms);
        double stage[FAP_STAGE_COUNT] = {0};
        for (int c = 0; c < calls; c++) {
          double t = now_ms();
          if (fap_detector_run_batch(det, fr, b, NULL, res) != FAP_OK) {
            rc = 1;
            break;
          }
          ms[c] = now_ms() - t;
          for (int s = 0; s < FAP_STAGE_COUNT; s++)
            stage[s] += res[0].stage_ms[s] / calls;
        }
        const double p50 = quantile(ms, calls, 0.5), p90 = quantile(ms, calls, 0.9);
        const double per_frame = p50 / b, fps = 1e3 * b / p50;
        printf("S=%d B=%d %s: %.3f ms/call (p90 %.3f), %.3f ms/frame, %.0f frames/s; GPU %.0f "
               "MiB; created in %.0f ms; score %.4f\n",
               size, b, fap_precision_name(precs[pi]), p50, p90, per_frame, fps, mib, create_ms,
               res[0].score);
        printf("  stages (device, ms): pre %.3f vision %.3f map1 %.3f prior %.3f text %.3f map2 "
               "%.3f map %.3f\n",
               stage[0], stage[1], stage[2], stage[3], stage[4], stage[5], stage[6]);
        g_string_append_printf(table, "| %d | %d | %s | %.3f | %.3f | %.0f | %.2f/%.2f/%.2f/%.2f/"
                                      "%.2f/%.2f/%.2f | %.0f | ",
                               size, b, fap_precision_name(precs[pi]), p50, per_frame, fps,
                               stage[0], stage[1], stage[2], stage[3], stage[4], stage[5],
                               stage[6], mib);
        if (t32.ok || t16.ok)
          g_string_append_printf(table, "%.1f / %.1f | %.0fx / %.0fx |\n", t32.frame_ms,
                                 t16.frame_ms, t32.ok ? t32.frame_ms / per_frame : 0,
                                 t16.ok ? t16.frame_ms / per_frame : 0);
        else
          g_string_append(table, "– | – |\n");
        if (json)
          fprintf(json,
                  "{\"size\": %d, \"batch\": %d, \"precision\": \"%s\", \"ms_per_call\": %.4f, "
                  "\"ms_per_call_p90\": %.4f, \"ms_per_frame\": %.4f, \"fps\": %.1f, "
                  "\"gpu_mib\": %.1f, \"torch_fp32_ms\": %.3f, \"torch_fp16_ms\": %.3f, "
                  "\"input\": \"%dx%d %s\", \"gpu\": \"%s\"}\n",
                  size, b, fap_precision_name(precs[pi]), p50, p90, per_frame, fps, mib,
                  t32.frame_ms, t16.frame_ms, in_w, in_h, fap_pixel_format_name(format),
                  info.name);
        free(ms);
        free(fr);
        free(res);
        fap_detector_free(det);
      }
    for (int pi = 0; tile_cols && pi < nprec; pi++)
      if (bench_tiles(model, size, precs[pi], device, &one, tile_cols, tile_rows, tile_overlap,
                      frames, tiles_table, json, info.name))
        rc = 1;
  }
  if (tiles_table->len)
    printf("\n| S | tiles (overlap) | precision | ms / frame | ms / tile | stitch ms (side) |\n"
           "|---|---|---|---|---|---|\n%s",
           tiles_table->str);
  if (torch_log->len)
    printf("\nPyTorch runs:\n%s", torch_log->str);
  printf("\n%s", table->str);
  if (json)
    fclose(json);
  g_string_free(table, TRUE);
  g_string_free(torch_log, TRUE);
  g_string_free(tiles_table, TRUE);
  g_free(tiles_arg);
  for (int p = 0; p < 3; p++)
    free(bufs[p]);
  fap_model_free(model);
  g_free(sizes_arg), g_free(batches_arg), g_free(prec_arg), g_free(input_arg);
  g_free(format_arg), g_free(python), g_free(script), g_free(json_path);
  return rc;
}
