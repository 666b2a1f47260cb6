/* faprompt-bench-draw: what drawing the heatmap costs per frame, on the host.
 *
 *   faprompt-bench-draw [--rounds N] [--map-size S]
 *
 * For each frame size and pixel format, in interleaved rounds (reference,
 * first draw, later draws; minima reported): fap_blend_frame (the per-pixel
 * reference), fap_overlay_draw of a new map (works out the paint table, what
 * a stream pays once per result: the element's non-blocking worker pays it
 * beside the stream) and of the same map again (what every reused frame
 * costs the streaming thread). Every pixel is drawn (threshold below the
 * whole map). Prints the CPU it ran on; one thread, as the streaming thread. */
#include "fap.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* the model name and the SIMD flags of /proc/cpuinfo */
static void print_cpu(void) {
  gchar *text = NULL;
  if (!g_file_get_contents("/proc/cpuinfo", &text, NULL, NULL)) {
    printf("cpu: unknown\n");
    return;
  }
  const char *want[] = {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16",
                        "avx512_vnni", "amx_bf16"};
  gchar **lines = g_strsplit(text, "\n", -1);
  const char *model = "unknown";
  GString *isa = g_string_new("");
  for (gchar **l = lines; *l; l++) {
    if (g_str_has_prefix(*l, "model name") && strchr(*l, ':') && !strcmp(model, "unknown"))
      model = g_strstrip(strchr(*l, ':') + 1);
    if (g_str_has_prefix(*l, "flags") && strchr(*l, ':') && isa->len == 0) {
      gchar **flags = g_strsplit(strchr(*l, ':') + 1, " ", -1);
      for (size_t i = 0; i < G_N_ELEMENTS(want); i++)
        for (gchar **f = flags; *f; f++)
          if (!strcmp(*f, want[i]))
            g_string_append_printf(isa, "%s%s", isa->len ? " " : "", want[i]);
      g_strfreev(flags);
    }
  }
  printf("cpu: %s; %s (%u online)\n", model, isa->str, (unsigned)g_get_num_processors());
  g_string_free(isa, TRUE);
  g_strfreev(lines);
  g_free(text);
}

typedef struct {
  fap_frame f;
  uint8_t *p[3];
} owned;

static owned make(fap_pixel_format fmt, int w, int h) {
  owned o;
  memset(&o, 0, sizeof o);
  o.f.format = fmt;
  o.f.width = w;
  o.f.height = h;
  const size_t cw = ((size_t)w + 1) / 2, ch = ((size_t)h + 1) / 2;
  size_t sz[3] = {0, 0, 0};
  if (fmt == FAP_PIXEL_NV12 || fmt == FAP_PIXEL_I420) {
    o.f.stride = w;
    sz[0] = (size_t)w * h;
    o.f.plane_stride[0] = fmt == FAP_PIXEL_NV12 ? 2 * cw : cw;
    sz[1] = o.f.plane_stride[0] * ch;
    if (fmt == FAP_PIXEL_I420)
      o.f.plane_stride[1] = cw, sz[2] = cw * ch;
  } else {
    o.f.stride = fmt == FAP_PIXEL_YUY2 ? 4 * cw : (size_t)w * (fmt <= FAP_PIXEL_BGR ? 3 : 4);
    sz[0] = o.f.stride * h;
  }
  for (int i = 0; i < 3; i++)
    if (sz[i]) {
      o.p[i] = malloc(sz[i]);
      memset(o.p[i], 100 + 20 * i, sz[i]);
    }
  o.f.data = o.p[0];
  o.f.plane[0] = o.p[1];
  o.f.plane[1] = o.p[2];
  return o;
}

int main(int argc, char **argv) {
  int rounds = 7, map_size = 518;
  GOptionEntry entries[] = {
      {"rounds", 0, 0, G_OPTION_ARG_INT, &rounds, "interleaved rounds (minima reported)", "N"},
      {"map-size", 0, 0, G_OPTION_ARG_INT, &map_size, "S of the map (518: ViT-L's)", "S"},
      {NULL},
  };
  GOptionContext *ctx = g_option_context_new("- cost of drawing the heatmap into frames");
  g_option_context_add_main_entries(ctx, entries, NULL);
  GError *error = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error) || rounds < 1 || map_size < 1) {
    fprintf(stderr, "faprompt-bench-draw: %s\n", error ? error->message : "bad --rounds / --map-size");
    return 2;
  }
  g_option_context_free(ctx);
  print_cpu();
  float *map = malloc((size_t)map_size * map_size * sizeof(float));
  for (int i = 0; i < map_size * map_size; i++)
    map[i] = 0.05f + 0.9f * (float)(i % map_size) / (float)map_size;
  const fap_blend blend = {0.5f, 0.0f, 0.0f, 1.0f}; /* every pixel drawn */
  const int sizes[][2] = {{1280, 720}, {1920, 1080}};
  const fap_pixel_format fmts[] = {FAP_PIXEL_NV12, FAP_PIXEL_I420, FAP_PIXEL_YUY2, FAP_PIXEL_RGB,
                                   FAP_PIXEL_BGRX};
  printf("map %dx%d, every pixel drawn, %d rounds, minimum ms per frame\n\n", map_size, map_size,
         rounds);
  printf("| frame | format | fap_blend_frame (reference) | overlay, new map (table) | overlay, "
         "same map (reused frame) | reference / reused |\n|---|---|---|---|---|---|\n");
  for (size_t si = 0; si < G_N_ELEMENTS(sizes); si++)
    for (size_t fi = 0; fi < G_N_ELEMENTS(fmts); fi++) {
      owned o = make(fmts[fi], sizes[si][0], sizes[si][1]);
      fap_overlay *ov;
      if (fap_overlay_new(&ov) != FAP_OK)
        return 1;
      double ref = 1e30, first = 1e30, again = 1e30;
      for (int r = 0; r < rounds; r++) {
        double t0 = now_ms();
        fap_blend_frame(&o.f, map, map_size, &blend);
        double t1 = now_ms();
        fap_overlay_draw(ov, &o.f, map, map_size, 1000 + r, &blend);
        double t2 = now_ms();
        fap_overlay_draw(ov, &o.f, map, map_size, 1000 + r, &blend);
        double t3 = now_ms();
        ref = t1 - t0 < ref ? t1 - t0 : ref;
        first = t2 - t1 < first ? t2 - t1 : first;
        again = t3 - t2 < again ? t3 - t2 : again;
      }
      printf("| %dx%d | %s | %.2f | %.2f | %.3f | %.0fx |\n", sizes[si][0], sizes[si][1],
             fap_pixel_format_name(fmts[fi]), ref, first, again, ref / again);
      fflush(stdout);
      fap_overlay_free(ov);
      for (int i = 0; i < 3; i++)
        free(o.p[i]);
    }
  free(map);
  return 0;
}
