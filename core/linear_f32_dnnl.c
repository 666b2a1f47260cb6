/* f32 linear layers through oneDNN's matmul, and the GEMM choice (see
 * linear_f32_dnnl.h).
 *
 * Why: Debian 12's OpenBLAS (0.3.21) runs AVX2 SGEMM kernels at most on AMD
 * CPUs with AVX-512 (it predates Zen 5, and such CPUs run it as Haswell:
 * OPENBLAS_CORETYPE), while oneDNN (already linked for bf16 / int8) has
 * AVX-512 f32 kernels (brgemm) and picks them by CPU at run time.
 *
 * Measured with tools/faprompt-bench-gemm (interleaved rounds, minima) on an
 * AMD Zen 5 (2 vCPUs, AVX-512 F/BW/VL/BF16/VNNI), OpenBLAS 0.3.21 OpenMP
 * build on its Haswell kernels, oneDNN 2.6.3; a shared machine under heavy
 * load (load average 5-11 on 2 cores), so the GFLOP/s are low and the
 * ratios (time / OpenBLAS's, below 1: faster) are what decide. One
 * transformer layer (qkv, out_proj, c_fc, c_proj):
 *
 *   rows x width (threads, rounds)  OpenBLAS    oneDNN      matmul, W    matmul, W
 *                                   GFLOP/s     dnnl_sgemm  in place     packed once
 *   577 x 1024 (2, 64)  S=336         75        0.75        0.64         0.59
 *   1370 x 1024 (2, 15) S=518         78        0.67        0.50         0.50
 *   577 x 1024 (1, 10)                61        0.48        0.65         0.53
 *   1370 x 1024 (1, 10)               61        0.45        0.53         0.48
 *   60 x 768 (2, 15)    text tower    20        0.11        0.06         0.05
 *   9 x 768 (2, 15)                    7        0.05        0.05         0.03
 *   577 x 1024 (2, 20), oneDNN held   74        0.96        0.94         0.95
 *     to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2: its gemm:jit kernels)
 *
 * oneDNN's kernels are brg:avx512_core for every vision and text layer, and
 * gemm:jit (its sgemm, also AVX-512) for the last vision layer's key/value
 * rows, whose output is strided. With AVX2 kernels oneDNN and OpenBLAS are
 * even (the last row), so the gain is AVX-512's, not oneDNN's as such.
 * Per frame (faprompt-bench, ViT-L/14 at S=336, 2 threads, A B A B) the
 * vision stage's minimum went from 11.6 s to 9.6 s under that load; one
 * thread, 7.0 s to 5.4 s.
 *
 * The rule: oneDNN where its kernels are AVX-512 (dnnl_get_effective_cpu_isa
 * avx512_core or above) and OpenBLAS's are not (openblas_get_corename not
 * SkylakeX / Cooperlake / SapphireRapids: those AVX-512 SGEMM kernels were
 * not measured against oneDNN, so they stay). Everywhere else OpenBLAS:
 * AVX2-only CPUs (Zen 3, Haswell ... Alder Lake) keep the path they had.
 *
 * The weights are read where they are: format `ba` of oneDNN's [in, out]
 * weights is exactly the model's row-major [out, in]. A copy reordered into
 * the primitive's own layout (format `any`, "packed once" above) would cost
 * one more copy of every weight (1.2 GB for ViT-L's vision encoder, per
 * detector, beside the model's shared f32 weights) for 0-10 % of the GEMM
 * time (within the noise at S=518). The matmul primitive rather than
 * dnnl_sgemm: even or faster with 2 threads, and 2x at the text tower's few
 * rows. The bias and the residual sum run in the primitive (bias
 * argument, sum post-op); the activations' leading dimensions are the
 * memory descriptors' strides, so nothing is copied around the product.
 *
 * Primitives are keyed by shape, not by weight: oneDNN binds the weights at
 * execution, so the vision encoder's ~120 linear calls share a handful of
 * primitives. Their scratchpad is the caller's (user mode), one buffer grown
 * to the largest on the first frame. */
#include "linear_f32_dnnl.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifdef FAP_HAVE_OPENBLAS
#include <cblas.h>
#endif
#ifdef FAP_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

/* whether OpenBLAS runs AVX-512 SGEMM kernels here (its core names) */
static int openblas_avx512(void) {
#ifdef FAP_HAVE_OPENBLAS
  const char *core = openblas_get_corename();
  static const char *const wide[] = {"skylakex", "cooperlake", "sapphirerapids"};
  for (size_t i = 0; core && i < sizeof wide / sizeof wide[0]; i++)
    if (strcasecmp(core, wide[i]) == 0)
      return 1;
#endif
  return 0;
}

static int dnnl_avx512(void) {
#ifdef FAP_HAVE_DNNL
  switch (dnnl_get_effective_cpu_isa()) {
  case dnnl_cpu_isa_avx512_core:
  case dnnl_cpu_isa_avx512_core_vnni:
  case dnnl_cpu_isa_avx512_core_bf16:
  case dnnl_cpu_isa_avx512_core_amx: return 1;
  default: return 0;
  }
#else
  return 0;
#endif
}

static fap_cpu_gemm gemm_by_cpu(const char **why) {
#if !defined(FAP_HAVE_DNNL)
  *why = "this build has no oneDNN";
  return FAP_GEMM_OPENBLAS;
#elif !defined(FAP_HAVE_OPENBLAS)
  *why = "this build has no OpenBLAS";
  return FAP_GEMM_DNNL;
#else
  if (!dnnl_avx512()) {
    *why = "oneDNN has no AVX-512 kernels on this CPU";
    return FAP_GEMM_OPENBLAS;
  }
  if (openblas_avx512()) {
    *why = "OpenBLAS runs AVX-512 kernels on this CPU";
    return FAP_GEMM_OPENBLAS;
  }
  *why = "oneDNN's AVX-512 kernels, where OpenBLAS runs AVX2 ones";
  return FAP_GEMM_DNNL;
#endif
}

fap_cpu_gemm fap_cpu_gemm_choose(const char **why) {
  const char *env = getenv("FAP_CPU_GEMM");
  if (env && *env) {
#ifdef FAP_HAVE_DNNL
    if (strcmp(env, "dnnl") == 0) {
      *why = "FAP_CPU_GEMM=dnnl";
      return FAP_GEMM_DNNL;
    }
#endif
    if (strcmp(env, "openblas") == 0) {
      *why = "FAP_CPU_GEMM=openblas";
      return FAP_GEMM_OPENBLAS;
    }
    static int warned;
    if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
      fap_log(FAP_LOG_WARNING, "FAP_CPU_GEMM=%s ignored: this build knows openblas%s", env,
#ifdef FAP_HAVE_DNNL
              " and dnnl"
#else
              " (no oneDNN)"
#endif
      );
  }
  return gemm_by_cpu(why);
}

#ifndef FAP_HAVE_DNNL

fap_status fap_dnnl_f32_new(int threads, fap_dnnl_f32 **out) {
  (void)threads;
  *out = NULL;
  return fap_fail(FAP_ERR_UNSUPPORTED, "cpu backend: no oneDNN in this build");
}

void fap_dnnl_f32_free(fap_dnnl_f32 *dnnl) { (void)dnnl; }

fap_status fap_dnnl_f32_linear(fap_dnnl_f32 *dnnl, float *y, int ldy, const float *x, int ldx,
                               const float *w, const float *b, int rows, int in, int out,
                               int accumulate) {
  (void)dnnl, (void)y, (void)ldy, (void)x, (void)ldx, (void)w, (void)b, (void)rows, (void)in;
  (void)out, (void)accumulate;
  return fap_fail(FAP_ERR_UNSUPPORTED, "linear: no oneDNN in this build");
}

#else

typedef struct {
  int rows, in, out, ldx, ldy, bias, accumulate; /* the key */
  dnnl_primitive_t prim;
  /* memory objects without data: the pointers of each call are set into them */
  dnnl_memory_t src, wei, bia, dst, scratch;
} f32_layer;

struct fap_dnnl_f32 {
  int threads;
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  f32_layer *layers;
  int n_layers, cap_layers;
  void *scratch; /* shared by every primitive (one runs at a time) */
  size_t scratch_cap;
};

fap_status fap_dnnl_f32_new(int threads, fap_dnnl_f32 **out) {
  *out = NULL;
  fap_dnnl_f32 *dn = calloc(1, sizeof *dn);
  if (!dn)
    return fap_fail(FAP_ERR_NO_MEMORY, "cpu backend: out of memory");
  dn->threads = threads > 0 ? threads : 1;
  if (dnnl_engine_create(&dn->engine, dnnl_cpu, 0) != dnnl_success ||
      dnnl_stream_create(&dn->stream, dn->engine, dnnl_stream_default_flags) != dnnl_success) {
    fap_dnnl_f32_free(dn);
    return fap_fail(FAP_ERR_BACKEND, "cpu backend: oneDNN could not create its CPU engine");
  }
  *out = dn;
  return FAP_OK;
}

static void layer_free(f32_layer *l) {
  if (l->prim)
    dnnl_primitive_destroy(l->prim);
  dnnl_memory_t *mems[] = {&l->src, &l->wei, &l->bia, &l->dst, &l->scratch};
  for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
    if (*mems[i])
      dnnl_memory_destroy(*mems[i]);
}

void fap_dnnl_f32_free(fap_dnnl_f32 *dn) {
  if (!dn)
    return;
  for (int i = 0; i < dn->n_layers; i++)
    layer_free(&dn->layers[i]);
  free(dn->layers);
  free(dn->scratch);
  if (dn->stream)
    dnnl_stream_destroy(dn->stream);
  if (dn->engine)
    dnnl_engine_destroy(dn->engine);
  free(dn);
}

static fap_status dnnl_failed(dnnl_status_t st, const char *what, const f32_layer *l) {
  return fap_fail(FAP_ERR_BACKEND, "cpu backend (oneDNN, f32): %s failed for %d x %d -> %d: %s",
                  what, l->rows, l->in, l->out, dnnl_status2str(st));
}

/* The matmul of one shape: src [rows, in] rows ldx apart, weights [in, out]
 * as `ba` (= W [out, in] row-major), bias [1, out], dst [rows, out] rows ldy
 * apart, += through the sum post-op. */
static fap_status make_layer(fap_dnnl_f32 *dn, f32_layer *l) {
  dnnl_memory_desc_t src, wei, bia, dst;
  dnnl_dims_t ds = {l->rows, l->in}, ss = {l->ldx, 1}, dw = {l->in, l->out}, db = {1, l->out},
              dd = {l->rows, l->out}, sd = {l->ldy, 1};
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t post = NULL;
  dnnl_matmul_desc_t md;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t st;
  const char *what = "matmul descriptor";
  if (!(st = dnnl_memory_desc_init_by_strides(&src, 2, ds, dnnl_f32, ss)) &&
      !(st = dnnl_memory_desc_init_by_tag(&wei, 2, dw, dnnl_f32, dnnl_ba)) &&
      !(st = dnnl_memory_desc_init_by_tag(&bia, 2, db, dnnl_f32, dnnl_ab)) &&
      !(st = dnnl_memory_desc_init_by_strides(&dst, 2, dd, dnnl_f32, sd)) &&
      !(st = dnnl_matmul_desc_init(&md, &src, &wei, l->bias ? &bia : NULL, &dst)) &&
      !(st = dnnl_primitive_attr_create(&attr)) &&
      !(st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user)) &&
      !(st = dnnl_post_ops_create(&post)) &&
      !(st = l->accumulate ? dnnl_post_ops_append_sum(post, 1.0f) : dnnl_success) &&
      !(st = dnnl_primitive_attr_set_post_ops(attr, post)) &&
      !(st = dnnl_primitive_desc_create(&pd, &md, attr, dn->engine, NULL))) {
    what = "matmul primitive";
    const dnnl_memory_desc_t *scratch = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    const char *impl = "?";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    fap_log(FAP_LOG_DEBUG, "cpu backend: f32 matmul %d x %d -> %d (ld %d, %d%s%s): %s", l->rows,
            l->in, l->out, l->ldx, l->ldy, l->bias ? ", bias" : "", l->accumulate ? ", +=" : "",
            impl);
    size_t need = dnnl_memory_desc_get_size(scratch);
    if (!(st = dnnl_primitive_create(&l->prim, pd)) &&
        !(st = dnnl_memory_create(&l->src, &src, dn->engine, DNNL_MEMORY_NONE)) &&
        !(st = dnnl_memory_create(&l->wei, &wei, dn->engine, DNNL_MEMORY_NONE)) &&
        !(st = dnnl_memory_create(&l->bia, &bia, dn->engine, DNNL_MEMORY_NONE)) &&
        !(st = dnnl_memory_create(&l->dst, &dst, dn->engine, DNNL_MEMORY_NONE)) &&
        !(st = dnnl_memory_create(&l->scratch, scratch, dn->engine, DNNL_MEMORY_NONE)) &&
        need > dn->scratch_cap) {
      free(dn->scratch);
      dn->scratch_cap = 0;
      if (posix_memalign(&dn->scratch, 64, need) != 0) {
        dn->scratch = NULL;
        st = dnnl_out_of_memory;
      } else {
        dn->scratch_cap = need;
      }
    }
  }
  if (pd)
    dnnl_primitive_desc_destroy(pd);
  if (post)
    dnnl_post_ops_destroy(post);
  if (attr)
    dnnl_primitive_attr_destroy(attr);
  return st ? dnnl_failed(st, what, l) : FAP_OK;
}

static f32_layer *find_layer(fap_dnnl_f32 *dn, const f32_layer *key, fap_status *s) {
  for (int i = 0; i < dn->n_layers; i++) {
    f32_layer *l = &dn->layers[i];
    if (l->rows == key->rows && l->in == key->in && l->out == key->out && l->ldx == key->ldx &&
        l->ldy == key->ldy && l->bias == key->bias && l->accumulate == key->accumulate)
      return l;
  }
  if (dn->n_layers == dn->cap_layers) { /* the first frame only */
    int cap = dn->cap_layers ? 2 * dn->cap_layers : 16;
    f32_layer *grown = realloc(dn->layers, (size_t)cap * sizeof *grown);
    if (!grown) {
      *s = fap_fail(FAP_ERR_NO_MEMORY, "cpu backend: out of memory");
      return NULL;
    }
    dn->layers = grown;
    dn->cap_layers = cap;
  }
  f32_layer *l = &dn->layers[dn->n_layers];
  *l = *key;
  dn->n_layers++; /* counted at once, so fap_dnnl_f32_free releases a half-made layer */
  if ((*s = make_layer(dn, l)))
    return NULL;
  return l;
}

static fap_status run_rows(fap_dnnl_f32 *dn, float *y, int ldy, const float *x, int ldx,
                           const float *w, const float *b, int rows, int in, int out,
                           int accumulate) {
  const f32_layer key = {rows, in, out, ldx, ldy, b != NULL, accumulate != 0};
  fap_status s = FAP_OK;
  f32_layer *l = find_layer(dn, &key, &s);
  if (!l)
    return s;
  dnnl_status_t st;
  /* oneDNN's API takes void *; nothing writes through src, weights or bias */
  if ((st = dnnl_memory_set_data_handle(l->src, (void *)x)) ||
      (st = dnnl_memory_set_data_handle(l->wei, (void *)w)) ||
      (b && (st = dnnl_memory_set_data_handle(l->bia, (void *)b))) ||
      (st = dnnl_memory_set_data_handle(l->dst, y)) ||
      (st = dnnl_memory_set_data_handle(l->scratch, dn->scratch)))
    return dnnl_failed(st, "memory handle", l);
  dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, l->src},
                             {DNNL_ARG_WEIGHTS, l->wei},
                             {DNNL_ARG_DST, l->dst},
                             {DNNL_ARG_SCRATCHPAD, l->scratch},
                             {DNNL_ARG_BIAS, l->bia}};
  if ((st = dnnl_primitive_execute(l->prim, dn->stream, b ? 5 : 4, args)) ||
      (st = dnnl_stream_wait(dn->stream)))
    return dnnl_failed(st, "matmul", l);
  return FAP_OK;
}

/* Rows in a multiple of 4, and the 1-3 left in a second product: oneDNN
 * 2.6's brgemm matmul over weights in place runs some row counts at three
 * quarters of its speed, among them the vision encoder's
 * (tools/faprompt-bench-gemm --rows 576,577,578,579,1368,1369, Zen 5, 2
 * threads, a layer's four products: 577 and 578 rows 40.7 / 41.3 ms, 576
 * 32.4, 579 34.0; 1369 98.2, 1368 73.9), and a product of 1-3 rows costs one
 * read of the weights (0.35-0.54 ms for 1024 -> 4096). Each row's sum is its
 * own either way; the rows of the small product may round differently
 * (another kernel), which the f32 contract allows. */
fap_status fap_dnnl_f32_linear(fap_dnnl_f32 *dn, float *y, int ldy, const float *x, int ldx,
                               const float *w, const float *b, int rows, int in, int out,
                               int accumulate) {
  /* oneDNN's OpenMP regions take the calling thread's setting, at creation
   * (its blocking) and at execution; inside a parallel region they run on
   * the calling thread alone (no nested teams) */
#ifdef _OPENMP
  omp_set_num_threads(dn->threads);
#endif
  const int main_rows = rows >= 64 ? rows & ~3 : rows;
  fap_status s = run_rows(dn, y, ldy, x, ldx, w, b, main_rows, in, out, accumulate);
  if (!s && main_rows < rows)
    s = run_rows(dn, y + (size_t)main_rows * ldy, ldy, x + (size_t)main_rows * ldx, ldx, w, b,
                 rows - main_rows, in, out, accumulate);
  return s;
}

#endif
