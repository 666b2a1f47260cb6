/* faprompt-bench-attention: speed of the CPU backend's attention kernels
 * alone, on the shapes of ViT-L/14 and CLIP's text encoder, to decide which
 * runs where (core/attention_cpu.c, fap_attention_kernel_for).
 *
 * Each KERNEL (avx2, avx512, blas, auto: the values of FAP_CPU_ATTENTION) is a
 * CPU backend created with FAP_CPU_ATTENTION set to it, so what runs is the
 * backend's attention op exactly as a detector calls it (its workspace grown
 * on the first call, which is not timed). The machines are shared and noisy:
 * the kernels run interleaved (each round runs every kernel once on each
 * shape, the starting kernel rotating), a run is the best of --reps calls,
 * and the table gives the minimum and the median over the rounds and GFLOP/s
 * of the minimum (2 hd flops per visible query-key pair for q k^T and as many
 * for P v; the exp not counted). Every kernel's output is checked against the
 * first's. It prints the CPU and its ISA extensions first. KERNEL bf16 is
 * the backend at precision bf16, whose unmasked (vision) attention runs
 * with bf16 products (core/attention_bf16.c); its difference from an f32
 * kernel is bf16's rounding, not an error.
 *
 *   faprompt-bench-attention [--threads 2] [--rounds 5] [--reps 3]
 *                            [--sizes 336,518] [KERNEL ...]  (default: avx2 avx512)
 */
#include "attention_cpu.h"
#include "backend.h"
#include "hostinfo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_KERNELS 4
#define MAX_SHAPES 16
#define MAX_ROUNDS 64
#define VISION_HEADS 16
#define VISION_WIDTH 1024
#define PATCH 14
#define TEXT_HEADS 12
#define TEXT_WIDTH 768
#define TEXT_PROMPTS 10 /* abnormality prompts, 6 rows each after a 6-row cached prefix */
#define TEXT_ROWS 6
#define TEXT_POS0 6

typedef enum { STANDARD, VV, CLS, TEXT } shape_kind;

typedef struct {
  char name[48];
  shape_kind kind;
  int tokens; /* vision: rows of the qkv buffer */
  double flops;
  double t[MAX_KERNELS][MAX_ROUNDS]; /* seconds of one call (text: all prompts) */
  float *out[MAX_KERNELS];
} shape;

typedef struct {
  const char *name;
  fap_backend be;
} kernel;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void usage(FILE *to, int status) {
  fprintf(to, "usage: faprompt-bench-attention [--threads 2] [--rounds 5] [--reps 3] "
              "[--sizes 336,518] [KERNEL ...]\n"
              "  KERNEL: avx2, avx512, blas, auto (FAP_CPU_ATTENTION's values), bf16 (precision bf16); "
              "default: avx2 avx512\n");
  exit(status);
}

/* the inputs every kernel reads: one vision qkv buffer per token count (rows
 * x 3W, q | k | v), the text pass's qkv and its key/value cache */
typedef struct {
  float *qkv;
  int rows;
} vision_input;

static float *random_floats(size_t n, unsigned *seed) {
  float *p = malloc(n * sizeof *p);
  if (!p) {
    fprintf(stderr, "faprompt-bench-attention: out of memory\n");
    exit(1);
  }
  for (size_t i = 0; i < n; i++) {
    *seed = *seed * 1664525u + 1013904223u;
    p[i] = (float)((*seed >> 8) * (1.0 / 16777216.0) * 3.0 - 1.5);
  }
  return p;
}

/* one call of the shape through kernel k's backend */
static void run_shape(const shape *s, kernel *k, float *out, const float *qkv, float *text_qkv,
                      float *text_cache) {
  const fap_backend_ops *op = k->be.ops;
  void *ctx = k->be.ctx;
  const int cv = VISION_WIDTH, hd = VISION_WIDTH / VISION_HEADS, ld = 3 * cv;
  switch (s->kind) {
  case STANDARD:
    op->attention(ctx, out, cv, qkv, ld, qkv + cv, ld, qkv + 2 * cv, ld, s->tokens, s->tokens,
                  VISION_HEADS, hd, -1);
    break;
  case VV:
    op->attention(ctx, out, cv, qkv + 2 * cv, ld, qkv + 2 * cv, ld, qkv + 2 * cv, ld, s->tokens,
                  s->tokens, VISION_HEADS, hd, -1);
    break;
  case CLS:
    op->attention(ctx, out, cv, qkv, ld, qkv + cv, ld, qkv + 2 * cv, ld, 1, s->tokens,
                  VISION_HEADS, hd, -1);
    break;
  case TEXT: {
    const int ct = TEXT_WIDTH, nk = TEXT_POS0 + TEXT_ROWS;
    const size_t slot = (size_t)nk * ct;
    op->attention_cached(ctx, out, ct, text_qkv, 3 * ct, TEXT_PROMPTS, TEXT_ROWS, TEXT_POS0,
                         text_cache, 2 * slot, slot, 0, TEXT_HEADS, ct / TEXT_HEADS);
    break;
  }
  }
  if (op->synchronize(ctx) != FAP_OK) {
    fprintf(stderr, "faprompt-bench-attention: %s failed on %s\n", k->name, s->name);
    exit(1);
  }
}

static size_t out_floats(const shape *s) {
  if (s->kind == TEXT)
    return (size_t)TEXT_PROMPTS * TEXT_ROWS * TEXT_WIDTH;
  return (size_t)(s->kind == CLS ? 1 : s->tokens) * VISION_WIDTH;
}

int main(int argc, char **argv) {
  int threads = 2, rounds = 5, reps = 3;
  int sizes[8] = {336, 518}, n_sizes = 2;
  kernel kernels[MAX_KERNELS];
  int n_kernels = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--sizes") == 0 && i + 1 < argc) {
      n_sizes = 0;
      for (char *tok = strtok(argv[++i], ","); tok && n_sizes < 8; tok = strtok(NULL, ","))
        sizes[n_sizes++] = atoi(tok);
    } else if (strcmp(argv[i], "--help") == 0)
      usage(stdout, 0);
    else if (argv[i][0] == '-')
      usage(stderr, 2);
    else if (n_kernels < MAX_KERNELS)
      kernels[n_kernels++].name = argv[i];
    else
      usage(stderr, 2);
  }
  if (n_kernels == 0) {
    kernels[0].name = "avx2";
    kernels[1].name = "avx512";
    n_kernels = 2;
  }
  if (threads < 1 || rounds < 1 || rounds > MAX_ROUNDS || reps < 1)
    usage(stderr, 2);

  char host[512];
  host_describe(host, sizeof host);
  printf("host: %s\nthreads %d, %d rounds, best of %d calls per run\n", host, threads, rounds,
         reps);
  for (int k = 0; k < n_kernels; k++) {
    if (strcmp(kernels[k].name, "bf16") == 0) {
      fap_precision runs;
      if (!fap_attention_bf16_usable(VISION_WIDTH / VISION_HEADS) ||
          fap_backend_cpu_new_precision(threads, 0, FAP_PRECISION_BF16, &kernels[k].be, &runs) !=
              FAP_OK ||
          runs != FAP_PRECISION_BF16) {
        fprintf(stderr, "faprompt-bench-attention: bf16 attention does not run here\n");
        return 1;
      }
      continue;
    }
    const fap_attention_kernel want = fap_attention_kernel_named(kernels[k].name);
    if (strcmp(kernels[k].name, "auto") != 0 && want == FAP_ATTENTION_AUTO) {
      fprintf(stderr, "faprompt-bench-attention: kernel %s does not run here\n", kernels[k].name);
      return 1;
    }
    setenv("FAP_CPU_ATTENTION", kernels[k].name, 1);
    if (fap_backend_cpu_new(threads, 0, &kernels[k].be) != FAP_OK)
      return 1;
  }
  unsetenv("FAP_CPU_ATTENTION");

  /* the shapes: per size the standard attention (23 layers a frame), the V-V
   * attention (19 dual layers), the last layer's CLS row; the text pass */
  shape shapes[MAX_SHAPES];
  int n_shapes = 0;
  vision_input inputs[8];
  unsigned seed = 12345;
  const int hd = VISION_WIDTH / VISION_HEADS;
  for (int z = 0; z < n_sizes; z++) {
    const int grid = sizes[z] / PATCH, tokens = grid * grid + 1;
    inputs[z].rows = tokens;
    inputs[z].qkv = random_floats((size_t)tokens * 3 * VISION_WIDTH, &seed);
    static const char *const kind_name[] = {"standard", "V-V", "CLS row"};
    for (int kind = STANDARD; kind <= CLS && n_shapes < MAX_SHAPES; kind++) {
      shape *s = &shapes[n_shapes++];
      memset(s, 0, sizeof *s);
      s->kind = kind;
      s->tokens = tokens;
      snprintf(s->name, sizeof s->name, "S=%d %s %dx%d", sizes[z], kind_name[kind],
               kind == CLS ? 1 : tokens, tokens);
      s->flops = 4.0 * hd * VISION_HEADS * (kind == CLS ? 1 : tokens) * tokens;
    }
  }
  float *text_qkv = random_floats((size_t)TEXT_PROMPTS * TEXT_ROWS * 3 * TEXT_WIDTH, &seed);
  const int text_nk = TEXT_POS0 + TEXT_ROWS;
  float *text_cache = random_floats((size_t)TEXT_PROMPTS * 2 * text_nk * TEXT_WIDTH, &seed);
  if (n_shapes < MAX_SHAPES) {
    shape *s = &shapes[n_shapes++];
    memset(s, 0, sizeof *s);
    s->kind = TEXT;
    snprintf(s->name, sizeof s->name, "text %d x (%d rows, causal over %d)", TEXT_PROMPTS,
             TEXT_ROWS, text_nk);
    double pairs = 0;
    for (int i = 0; i < TEXT_ROWS; i++)
      pairs += TEXT_POS0 + i + 1;
    s->flops = 4.0 * TEXT_WIDTH * pairs * TEXT_PROMPTS; /* heads * hd = width */
  }

  /* outputs, and a first (untimed) call of each: workspaces grow there */
  for (int si = 0; si < n_shapes; si++) {
    shape *s = &shapes[si];
    const float *qkv = NULL;
    for (int z = 0; z < n_sizes; z++)
      if (s->kind != TEXT && inputs[z].rows == s->tokens)
        qkv = inputs[z].qkv;
    for (int k = 0; k < n_kernels; k++) {
      s->out[k] = calloc(out_floats(s), sizeof(float));
      if (!s->out[k])
        return 1;
      run_shape(s, &kernels[k], s->out[k], qkv, text_qkv, text_cache);
    }
  }

  for (int r = 0; r < rounds; r++)
    for (int si = 0; si < n_shapes; si++) {
      shape *s = &shapes[si];
      const float *qkv = NULL;
      for (int z = 0; z < n_sizes; z++)
        if (s->kind != TEXT && inputs[z].rows == s->tokens)
          qkv = inputs[z].qkv;
      for (int kk = 0; kk < n_kernels; kk++) {
        const int k = (kk + r) % n_kernels; /* the starting kernel rotates */
        double best = INFINITY;
        for (int rep = 0; rep < reps; rep++) {
          const double t0 = now_s();
          run_shape(s, &kernels[k], s->out[k], qkv, text_qkv, text_cache);
          const double t = now_s() - t0;
          best = t < best ? t : best;
        }
        s->t[k][r] = best;
      }
    }

  printf("\n%-36s", "shape");
  for (int k = 0; k < n_kernels; k++)
    printf(" | %-8s ms min / med (GFLOP/s)", kernels[k].name);
  if (n_kernels > 1)
    printf(" | %s / %s (min)", kernels[0].name, kernels[1].name);
  printf(" | max diff / max|out|\n");
  for (int si = 0; si < n_shapes; si++) {
    shape *s = &shapes[si];
    printf("%-36s", s->name);
    double mins[MAX_KERNELS];
    for (int k = 0; k < n_kernels; k++) {
      double sorted[MAX_ROUNDS];
      memcpy(sorted, s->t[k], (size_t)rounds * sizeof(double));
      qsort(sorted, (size_t)rounds, sizeof(double), cmp_double);
      mins[k] = sorted[0];
      printf(" | %8.3f / %8.3f (%6.1f)       ", 1e3 * sorted[0], 1e3 * sorted[rounds / 2],
             s->flops / sorted[0] * 1e-9);
    }
    if (n_kernels > 1)
      printf(" | %6.2fx          ", mins[0] / mins[1]);
    double diff = 0, mag = 0;
    const size_t n = out_floats(s);
    for (int k = 1; k < n_kernels; k++)
      for (size_t i = 0; i < n; i++)
        diff = fmax(diff, fabs((double)s->out[k][i] - s->out[0][i]));
    for (size_t i = 0; i < n; i++)
      mag = fmax(mag, fabs((double)s->out[0][i]));
    printf(" | %.2g\n", mag > 0 ? diff / mag : diff);
  }

  for (int si = 0; si < n_shapes; si++)
    for (int k = 0; k < n_kernels; k++)
      free(shapes[si].out[k]);
  for (int z = 0; z < n_sizes; z++)
    free(inputs[z].qkv);
  free(text_qkv);
  free(text_cache);
  for (int k = 0; k < n_kernels; k++)
    kernels[k].be.ops->destroy(kernels[k].be.ctx);
  return 0;
}
