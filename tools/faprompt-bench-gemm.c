/* faprompt-bench-gemm: SGEMM speed of several BLAS libraries on exactly the
 * vision encoder's linear shapes (row-major y = x W^T, NoTrans x Trans), to
 * decide between them (e.g. BLIS vs OpenBLAS). Each LIB is a shared library
 * exporting cblas_sgemm, loaded with dlopen (RTLD_LOCAL, so several coexist);
 * its thread count is set through openblas_set_num_threads or
 * bli_thread_set_num_threads where exported, and OMP_NUM_THREADS. The machines
 * are shared and noisy, so the libraries run interleaved (each round runs every
 * library once on each shape, the starting library rotating), and the table
 * gives the minimum and the median of each and the ratio of the minima. Every
 * result is checked against the first library's. It prints the CPU and its ISA
 * extensions first.
 *
 * Where the build has oneDNN, its f32 matmul runs beside them as two more
 * columns, as a layer would run it: "onednn sgemm" is its BLAS-like
 * dnnl_sgemm (row-major, packing as it goes, like a BLAS; no primitive),
 * "onednn plain" its matmul primitive reading the weights where
 * they are (row-major [out, in], format `ba`: nothing copied), "onednn packed"
 * reads a copy reordered once into the layout the primitive asks for (format
 * `any`: one more copy of every weight). The activations are never reordered.
 * Each primitive is made once per shape and row count, outside the timing; its
 * implementation (oneDNN's name for the kernel) is printed. The process's
 * OpenMP runtime is libgomp (oneDNN's), which an OpenMP build of OpenBLAS
 * shares, as in libfaprompt.
 *
 * --rows and --width measure other layers: the text tower's (width 768) at
 * its row counts, or the vision tower's single-row last layer.
 *
 *   faprompt-bench-gemm [--threads N] [--rounds 5] [--sizes 336,518 | --rows 1,60]
 *                       [--width 1024] [--no-dnnl]
 *                       [LIB.so ...]   (default: libopenblas.so.0; N: all cores)
 */
#include "hostinfo.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef FAP_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#endif

/* the CBLAS enum values (cblas.h), the same in every implementation */
enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };
typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *b, int ldb, float beta, float *c,
                         int ldc);

#define MAX_LIBS 10
#define MAX_SIZES 8
#define N_SHAPES 4
#define VISION_WIDTH 1024 /* ViT-L/14's */
#define PATCH 14

/* how a column computes: a BLAS library's cblas_sgemm, or oneDNN's matmul */
typedef enum { RUN_BLAS, RUN_DNNL_SGEMM, RUN_DNNL_PLAIN, RUN_DNNL_PACKED } run_kind;

#ifdef FAP_HAVE_DNNL
typedef struct {
  dnnl_primitive_t prim;
  dnnl_memory_t src, wei, dst; /* wei: the weights in place (plain) or its copy (packed) */
  char impl[64];
} onednn_gemm;
static dnnl_engine_t engine;
static dnnl_stream_t stream;
#endif

typedef struct {
  const char *path, *name;
  run_kind kind;
  sgemm_fn sgemm;
#ifdef FAP_HAVE_DNNL
  onednn_gemm dn[N_SHAPES]; /* for the current size */
#endif
  float *y; /* this library's output, r x 4 width at most */
  double t[N_SHAPES + 1][64]; /* seconds per shape (and the layer) per round */
  double max_rel;             /* largest difference to the first library / max |y| */
} lib;

/* the four GEMMs of one transformer layer: y (r x n) = x (r x k) W^T (n x k) */
static struct {
  const char *name;
  int n, k;
} shapes[N_SHAPES] = {{"qkv in_proj", 3, 1}, {"attn out_proj", 1, 1}, {"mlp c_fc", 4, 1},
                      {"mlp c_proj", 1, 4}}; /* in widths, scaled by main */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double min_of(const double *v, int n) {
  double m = v[0];
  for (int i = 1; i < n; i++)
    m = v[i] < m ? v[i] : m;
  return m;
}

static double median_of(const double *v, int n) {
  double c[64];
  memcpy(c, v, (size_t)n * sizeof *c);
  qsort(c, (size_t)n, sizeof *c, cmp_double);
  return n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
}

static float *alloc_floats(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, 64, ((n * sizeof(float) + 63) / 64) * 64)) {
    fprintf(stderr, "faprompt-bench-gemm: out of memory\n");
    exit(1);
  }
  return p;
}

/* deterministic small values in [-0.5, 0.5) (a hash of the index, not zeros) */
static void fill(float *v, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) {
    unsigned h = (unsigned)i * 2654435761u + seed * 40503u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    v[i] = (float)(h % 1024u) / 1024.0f - 0.5f;
  }
}

/* largest |y - ref| over the largest |ref| */
static double rel_diff(const float *y, const float *ref, size_t n) {
  double d = 0, m = 0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)y[i] - ref[i]), a = fabs((double)ref[i]);
    d = e > d ? e : d;
    m = a > m ? a : m;
  }
  return m > 0 ? d / m : d;
}

/* "openblas-openmp/libopenblas.so.0": the file and its folder */
static const char *short_name(const char *path) {
  const char *s = strrchr(path, '/');
  if (!s)
    return path;
  for (const char *p = s - 1; p >= path; p--)
    if (*p == '/')
      return p + 1;
  return path;
}

/* a function of the library, or NULL (copied: ISO C has no cast from void *) */
typedef void (*any_fn)(void);
static any_fn sym(void *h, const char *name) {
  void *p = dlsym(h, name);
  any_fn f;
  memcpy(&f, &p, sizeof f);
  return f;
}

static void open_lib(lib *l, int threads) {
  void *h = dlopen(l->path, RTLD_LOCAL | RTLD_NOW);
  if (!h || !(l->sgemm = (sgemm_fn)sym(h, "cblas_sgemm"))) {
    fprintf(stderr, "faprompt-bench-gemm: %s\n", h ? "no cblas_sgemm" : dlerror());
    exit(1);
  }
  l->name = short_name(l->path);
  /* the thread setter and what the library says about itself */
  void (*set_ob)(int) = (void (*)(int))sym(h, "openblas_set_num_threads");
  void (*set_bli)(long long) = (void (*)(long long))sym(h, "bli_thread_set_num_threads");
  char *(*ob_config)(void) = (char *(*)(void))sym(h, "openblas_get_config");
  int (*bli_arch)(void) = (int (*)(void))sym(h, "bli_arch_query_id");
  const char *(*bli_arch_str)(int) = (const char *(*)(int))sym(h, "bli_arch_string");
  const char *(*bli_version)(void) = (const char *(*)(void))sym(h, "bli_info_get_version_str");
  if (set_ob)
    set_ob(threads);
  if (set_bli)
    set_bli(threads); /* dim_t: 64-bit */
  printf("- %s: %s", l->path,
         set_ob ? "openblas_set_num_threads" : set_bli ? "bli_thread_set_num_threads" : "no thread setter (OMP_NUM_THREADS only)");
  if (ob_config)
    printf("; %s", ob_config());
  if (bli_version && bli_arch && bli_arch_str)
    printf("; BLIS %s, kernels %s", bli_version(), bli_arch_str(bli_arch()));
  printf("\n");
}

#ifdef FAP_HAVE_DNNL
static void dnnl_check(dnnl_status_t st, const char *what) {
  if (st != dnnl_success) {
    fprintf(stderr, "faprompt-bench-gemm: oneDNN %s failed (status %d)\n", what, (int)st);
    exit(1);
  }
}

static void onednn_gemm_free(onednn_gemm *g) {
  if (g->prim) {
    dnnl_primitive_destroy(g->prim);
    dnnl_memory_destroy(g->src);
    dnnl_memory_destroy(g->wei);
    dnnl_memory_destroy(g->dst);
  }
  memset(g, 0, sizeof *g);
}

/* y (r x n) = x (r x k) W^T, W [n, k] row-major: oneDNN's weights are k x n,
 * which W is in format `ba`. Packed: the primitive picks the layout (`any`)
 * and W is reordered into it once, here. */
static void onednn_gemm_make(onednn_gemm *g, int packed, int r, int n, int k, float *x, float *w,
                           float *y) {
  dnnl_memory_desc_t src, wei, dst, plain;
  dnnl_dims_t ds = {r, k}, dw = {k, n}, dd = {r, n};
  dnnl_matmul_desc_t md;
  dnnl_primitive_desc_t pd;
  dnnl_check(dnnl_memory_desc_init_by_tag(&src, 2, ds, dnnl_f32, dnnl_ab), "src descriptor");
  dnnl_check(dnnl_memory_desc_init_by_tag(&plain, 2, dw, dnnl_f32, dnnl_ba), "weight descriptor");
  dnnl_check(dnnl_memory_desc_init_by_tag(&wei, 2, dw, dnnl_f32, packed ? dnnl_format_tag_any : dnnl_ba),
             "weight descriptor");
  dnnl_check(dnnl_memory_desc_init_by_tag(&dst, 2, dd, dnnl_f32, dnnl_ab), "dst descriptor");
  dnnl_check(dnnl_matmul_desc_init(&md, &src, &wei, NULL, &dst), "matmul descriptor");
  dnnl_check(dnnl_primitive_desc_create(&pd, &md, NULL, engine, NULL), "matmul primitive descriptor");
  const char *impl = NULL;
  dnnl_check(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl), "query");
  snprintf(g->impl, sizeof g->impl, "%s", impl);
  dnnl_check(dnnl_primitive_create(&g->prim, pd), "matmul primitive");
  dnnl_check(dnnl_memory_create(&g->src, &src, engine, x), "src memory");
  dnnl_check(dnnl_memory_create(&g->dst, &dst, engine, y), "dst memory");
  if (!packed) {
    dnnl_check(dnnl_memory_create(&g->wei, &plain, engine, w), "weight memory");
  } else {
    const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_memory_t from;
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_t reorder;
    dnnl_check(dnnl_memory_create(&from, &plain, engine, w), "weight memory");
    dnnl_check(dnnl_memory_create(&g->wei, want, engine, DNNL_MEMORY_ALLOCATE), "packed weights");
    dnnl_check(dnnl_reorder_primitive_desc_create(&rpd, &plain, engine, want, engine, NULL), "reorder");
    dnnl_check(dnnl_primitive_create(&reorder, rpd), "reorder");
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, g->wei}};
    dnnl_check(dnnl_primitive_execute(reorder, stream, 2, args), "reorder");
    dnnl_check(dnnl_stream_wait(stream), "reorder");
    dnnl_primitive_destroy(reorder);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(from);
  }
  dnnl_primitive_desc_destroy(pd);
}
#endif

/* one product of column L: y = x W^T for shape k at r rows */
static void run_gemm(lib *L, int k, int r, const float *x, const float *w, float *y) {
#ifdef FAP_HAVE_DNNL
  if (L->kind == RUN_DNNL_SGEMM) {
    dnnl_check(dnnl_sgemm('N', 'T', r, shapes[k].n, shapes[k].k, 1, x, shapes[k].k, w, shapes[k].k,
                          0, y, shapes[k].n),
               "sgemm");
    return;
  }
#endif
  if (L->kind == RUN_BLAS) {
    L->sgemm(ROW_MAJOR, NO_TRANS, TRANS, r, shapes[k].n, shapes[k].k, 1, x, shapes[k].k, w,
             shapes[k].k, 0, y, shapes[k].n);
    return;
  }
#ifdef FAP_HAVE_DNNL
  onednn_gemm *g = &L->dn[k];
  dnnl_exec_arg_t args[3] = {
      {DNNL_ARG_SRC, g->src}, {DNNL_ARG_WEIGHTS, g->wei}, {DNNL_ARG_DST, g->dst}};
  dnnl_check(dnnl_primitive_execute(g->prim, stream, 3, args), "matmul");
  dnnl_check(dnnl_stream_wait(stream), "matmul");
#endif
}

static int parse_sizes(const char *s, int *sizes, int least) {
  int n = 0;
  for (char *end; *s && n < MAX_SIZES; s = *end ? end + 1 : end) {
    long v = strtol(s, &end, 10);
    if (end == s || v < least || v > 100000 || (*end && *end != ','))
      return 0;
    sizes[n++] = (int)v;
  }
  return n;
}

static int usage(void) {
  fprintf(stderr, "usage: faprompt-bench-gemm [--threads N (0: all cores)] [--rounds R (1-64)] [--sizes 336,518 | --rows 1,60] [--width 1024] [--no-dnnl] [LIB.so ...]\n");
  return 2;
}

int main(int argc, char **argv) {
  int threads = 0, rounds = 5, sizes[MAX_SIZES] = {336, 518}, n_sizes = 2, n_libs = 0, dnnl = 1;
  int rows[MAX_SIZES], n_rows = 0, width = VISION_WIDTH;
  static lib libs[MAX_LIBS];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--sizes") && i + 1 < argc) {
      if (!(n_sizes = parse_sizes(argv[++i], sizes, PATCH)))
        return usage();
    } else if (!strcmp(argv[i], "--rows") && i + 1 < argc) {
      if (!(n_rows = parse_sizes(argv[++i], rows, 1)))
        return usage();
    } else if (!strcmp(argv[i], "--width") && i + 1 < argc)
      width = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-dnnl"))
      dnnl = 0;
    else if (argv[i][0] == '-' || n_libs == MAX_LIBS - 3)
      return usage();
    else
      libs[n_libs++].path = argv[i];
  }
  if (threads < 0 || rounds < 1 || rounds > 64 || width < 1 || width > 16384)
    return usage();
  for (int k = 0; k < N_SHAPES; k++)
    shapes[k].n *= width, shapes[k].k *= width;
  /* what runs: the rows of each image size (its patches and the class token), or --rows */
  if (!n_rows)
    for (int s = 0; s < n_sizes; s++)
      rows[n_rows++] = (sizes[s] / PATCH) * (sizes[s] / PATCH) + 1;
  else
    n_sizes = 0;
  if (!threads)
    threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (!n_libs)
    libs[n_libs++].path = "libopenblas.so.0";

  char host[1024];
  host_describe(host, sizeof host);
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) < 0)
    load[0] = load[1] = load[2] = -1;
  printf("host: %s\nload average: %.2f %.2f %.2f; threads %d, rounds %d\n", host, load[0], load[1],
         load[2], threads, rounds);

  /* before the first dlopen, so that an OpenMP runtime loaded with it reads it */
  char nt[16];
  snprintf(nt, sizeof nt, "%d", threads);
  setenv("OMP_NUM_THREADS", nt, 1);
  setenv("BLIS_NUM_THREADS", nt, 1);
  for (int l = 0; l < n_libs; l++)
    open_lib(&libs[l], threads);
#ifdef FAP_HAVE_DNNL
  if (dnnl) {
    /* libgomp read OMP_NUM_THREADS when it loaded, before main */
    omp_set_num_threads(threads);
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) {
      fprintf(stderr, "faprompt-bench-gemm: oneDNN has no CPU engine\n");
      return 1;
    }
    const dnnl_version_t *v = dnnl_version();
    printf("- oneDNN %d.%d.%d (cpu runtime %s), ISA %d (dnnl_cpu_isa_t); plain: W as stored "
           "(ba), packed: W reordered once (any)\n",
           v->major, v->minor, v->patch, v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other",
           (int)dnnl_get_effective_cpu_isa());
    libs[n_libs++] = (lib){.path = "onednn sgemm", .name = "onednn sgemm", .kind = RUN_DNNL_SGEMM};
    libs[n_libs++] = (lib){.path = "onednn plain", .name = "onednn plain", .kind = RUN_DNNL_PLAIN};
    libs[n_libs++] = (lib){.path = "onednn packed", .name = "onednn packed", .kind = RUN_DNNL_PACKED};
  }
#else
  (void)dnnl;
#endif

  /* everything allocated once, for the largest size: x (r x 4 width), a weight
   * matrix per shape (48 MiB in all, more than a cache, as in the model), the
   * first library's outputs as the reference, and an output per library */
  int r_max = 0;
  for (int s = 0; s < n_rows; s++)
    r_max = rows[s] > r_max ? rows[s] : r_max;
  float *x = alloc_floats((size_t)r_max * 4 * width), *w[N_SHAPES], *ref[N_SHAPES];
  fill(x, (size_t)r_max * 4 * width, 1);
  for (int k = 0; k < N_SHAPES; k++) {
    w[k] = alloc_floats((size_t)shapes[k].n * shapes[k].k);
    fill(w[k], (size_t)shapes[k].n * shapes[k].k, 2 + (unsigned)k);
    ref[k] = alloc_floats((size_t)r_max * shapes[k].n);
  }
  for (int l = 0; l < n_libs; l++)
    libs[l].y = alloc_floats((size_t)r_max * 4 * width);

  int failed = 0;
  for (int s = 0; s < n_rows; s++) {
    int r = rows[s];
#ifdef FAP_HAVE_DNNL
    for (int l = 0; l < n_libs; l++)
      for (int k = 0; k < N_SHAPES && libs[l].kind >= RUN_DNNL_PLAIN; k++) {
        onednn_gemm_free(&libs[l].dn[k]);
        onednn_gemm_make(&libs[l].dn[k], libs[l].kind == RUN_DNNL_PACKED, r, shapes[k].n,
                       shapes[k].k, x, w[k], libs[l].y);
      }
#endif
    /* untimed warm-up, the first library's results kept as the reference */
    for (int k = 0; k < N_SHAPES; k++)
      for (int l = 0; l < n_libs; l++) {
        run_gemm(&libs[l], k, r, x, w[k], libs[l].y);
        if (!l)
          memcpy(ref[k], libs[l].y, (size_t)r * shapes[k].n * sizeof(float));
      }
    for (int l = 0; l < n_libs; l++)
      libs[l].max_rel = 0;
    for (int rd = 0; rd < rounds; rd++) {
      for (int l = 0; l < n_libs; l++)
        libs[l].t[N_SHAPES][rd] = 0;
      for (int k = 0; k < N_SHAPES; k++)
        for (int j = 0; j < n_libs; j++) {
          lib *L = &libs[(j + rd) % n_libs]; /* A B, then B A, ... */
          double t0 = now_s();
          run_gemm(L, k, r, x, w[k], L->y);
          double t = now_s() - t0;
          L->t[k][rd] = t;
          L->t[N_SHAPES][rd] += t;
          double d = rel_diff(L->y, ref[k], (size_t)r * shapes[k].n);
          L->max_rel = d > L->max_rel ? d : L->max_rel;
        }
    }

    /* the table: min / median ms and GFLOP/s of the minimum, per library */
    if (s < n_sizes)
      printf("\n### S=%d (grid %d, %d rows, width %d)\n\n| shape | GFLOP |", sizes[s],
             sizes[s] / PATCH, r, width);
    else
      printf("\n### %d rows, width %d\n\n| shape | GFLOP |", r, width);
    for (int l = 0; l < n_libs; l++)
      printf(" %c: %s ms min / med (GFLOP/s) |", 'A' + l, libs[l].name);
    for (int l = 1; l < n_libs; l++)
      printf(" min %c / min %c |", 'A' + l, 'A');
    printf("\n|---|---|");
    for (int l = 1; l < 2 * n_libs; l++)
      printf("---|");
    printf("\n");
    double layer_flops = 0;
    for (int k = 0; k <= N_SHAPES; k++) {
      double flops = k < N_SHAPES ? 2.0 * r * shapes[k].n * shapes[k].k : layer_flops;
      layer_flops += k < N_SHAPES ? flops : 0;
      if (k < N_SHAPES)
        printf("| %s %dx%d·(%dx%d)^T | %.2f |", shapes[k].name, r, shapes[k].k, shapes[k].n,
               shapes[k].k, 1e-9 * flops);
      else
        printf("| **layer** (one of each) | %.2f |", 1e-9 * flops);
      double t_first = min_of(libs[0].t[k], rounds);
      for (int l = 0; l < n_libs; l++) {
        double t = min_of(libs[l].t[k], rounds);
        printf(" %.1f / %.1f (%.0f) |", 1e3 * t, 1e3 * median_of(libs[l].t[k], rounds), 1e-9 * flops / t);
      }
      for (int l = 1; l < n_libs; l++)
        printf(" %.3f |", min_of(libs[l].t[k], rounds) / t_first);
      printf("\n");
    }
#ifdef FAP_HAVE_DNNL
    for (int l = 0; l < n_libs; l++)
      for (int k = 0; k < N_SHAPES && libs[l].kind >= RUN_DNNL_PLAIN; k++)
        printf("%s%s %s: %s", k ? "; " : "\n", libs[l].name, shapes[k].name, libs[l].dn[k].impl);
#endif
    printf("\nLibraries: ");
    for (int l = 0; l < n_libs; l++)
      printf("%s%c = %s", l ? ", " : "", 'A' + l, libs[l].name);
    printf(" (a ratio below 1: faster than A).\nmax |y - y_A| / max |y_A|:");
    for (int l = 0; l < n_libs; l++) {
      printf(" %c %.2e%s", 'A' + l, libs[l].max_rel, libs[l].max_rel > 1e-4 ? " FAILED" : "");
      failed |= libs[l].max_rel > 1e-4;
    }
    printf("\n");
    fflush(stdout);
  }
  if (failed)
    fprintf(stderr, "faprompt-bench-gemm: a library's results differ from the first's by more than 1e-4\n");
  return failed ? 1 : 0;
}
