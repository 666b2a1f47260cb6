/* faprompt-bench-stitch: what stitching a rectangle's tiles' maps costs,
 * the reference loop (fap_tiles_stitch, point by point as docs/SPEC.md
 * section 1.2, Stitching reads) against the precomputed stitcher
 * (fap_tiles_stitcher, what the element runs).
 *
 *   faprompt-bench-stitch [--rounds N]
 *
 * For each case (a 1920 x 1080 rectangle in C x R tiles with an overlap, the
 * tiles' S x S maps, an output size: the element's stitched side
 * S * max (C, R) capped at 1024, or the rectangle's own 1920 x 1080), in
 * interleaved rounds, the minimum over the rounds of each; plus what making
 * the stitcher costs (once per layout) and the largest difference between
 * the two outputs. Prints the CPU it ran on; one thread, as the element. */
#include "fap.h"
#include "hostinfo.h"

#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

typedef struct {
  int cols, rows, overlap, map_size, out_w, out_h;
} bench_case;

static const bench_case CASES[] = {
    /* a tiny model (S = 37 in the tests) and ViT-L/14@336 (S = 336) */
    {4, 2, 0, 37, 148, 148},     {4, 2, 64, 37, 148, 148},   {4, 2, 0, 37, 1920, 1080},
    {4, 2, 64, 37, 1920, 1080},  {4, 2, 0, 336, 1024, 1024}, {4, 2, 64, 336, 1024, 1024},
    {4, 2, 64, 336, 1920, 1080}, {2, 2, 32, 336, 672, 672},  {4, 4, 64, 336, 1024, 1024},
};

int main(int argc, char **argv) {
  int rounds = 7;
  GOptionEntry entries[] = {
      {"rounds", 0, 0, G_OPTION_ARG_INT, &rounds, "rounds per case, minimum reported (7)", "N"},
      {NULL}};
  GOptionContext *ctx = g_option_context_new("- the cost of stitching tiles' maps");
  g_option_context_add_main_entries(ctx, entries, NULL);
  GError *err = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &err) || rounds < 1) {
    fprintf(stderr, "faprompt-bench-stitch: %s\n", err ? err->message : "--rounds: at least 1");
    return 2;
  }
  g_option_context_free(ctx);
  char host[512];
  host_describe(host, sizeof host);
  printf("cpu: %s\n", host);
  printf("rectangle 1920x1080 at (0, 0); min of %d rounds; one thread\n\n", rounds);
  printf("| tiles | overlap | map | output | reference ms | stitcher ms | speed-up | plan ms | "
         "max diff |\n");
  printf("|---|---|---|---|---|---|---|---|---|\n");
  fap_rect area = {0, 0, 1920, 1080};
  GRand *rng = g_rand_new_with_seed(5);
  for (size_t k = 0; k < G_N_ELEMENTS(CASES); k++) {
    const bench_case *c = &CASES[k];
    int n = c->cols * c->rows, s = c->map_size;
    float *data = g_new(float, (size_t)n * s * s);
    const float **maps = g_new(const float *, n);
    for (size_t i = 0; i < (size_t)n * s * s; i++)
      data[i] = (float)g_rand_double(rng);
    for (int t = 0; t < n; t++)
      maps[t] = data + (size_t)t * s * s;
    size_t px = (size_t)c->out_w * c->out_h;
    float *ref = g_new(float, px), *fast = g_new(float, px);
    double t0 = now_ms();
    fap_tiles_stitcher *st = NULL;
    if (fap_tiles_stitcher_new(area, c->cols, c->rows, c->overlap, s, c->out_w, c->out_h, &st) !=
        FAP_OK) {
      fprintf(stderr, "faprompt-bench-stitch: %s\n", fap_last_error());
      return 1;
    }
    double plan = now_ms() - t0, best_ref = INFINITY, best_fast = INFINITY;
    for (int r = 0; r < rounds; r++) {
      t0 = now_ms();
      if (fap_tiles_stitch(area, c->cols, c->rows, c->overlap, maps, s, ref, c->out_w,
                           c->out_h) != FAP_OK) {
        fprintf(stderr, "faprompt-bench-stitch: %s\n", fap_last_error());
        return 1;
      }
      double t1 = now_ms();
      if (fap_tiles_stitcher_run(st, maps, fast) != FAP_OK) {
        fprintf(stderr, "faprompt-bench-stitch: %s\n", fap_last_error());
        return 1;
      }
      double t2 = now_ms();
      best_ref = fmin(best_ref, t1 - t0);
      best_fast = fmin(best_fast, t2 - t1);
    }
    double diff = 0.0;
    for (size_t i = 0; i < px; i++)
      diff = fmax(diff, fabs((double)fast[i] - ref[i]));
    printf("| %dx%d | %d | %d | %dx%d | %.3f | %.3f | %.0fx | %.3f | %.2g |\n", c->cols, c->rows,
           c->overlap, s, c->out_w, c->out_h, best_ref, best_fast, best_ref / best_fast, plan,
           diff);
    fap_tiles_stitcher_free(st);
    g_free(ref);
    g_free(fast);
    g_free(maps);
    g_free(data);
  }
  g_rand_free(rng);
  return 0;
}
