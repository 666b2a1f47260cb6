/* Reduced-precision linear layers through oneDNN matmul (see linear_dnnl.h).
 *
 * Why oneDNN: it is in Debian (libdnnl-dev 2.6), picks its kernels by CPU at
 * run time (AVX2 u8s8 GEMM, AVX512-VNNI, AVX512-BF16, AMX) and is what
 * PyTorch uses for the same job; OpenBLAS 0.3.21 has no bf16 or int8 GEMM,
 * and a hand-written int8 GEMM per ISA is a project of its own.
 *
 * int8: weights symmetric per output channel in 7 bits (|q| <= 63), rows of
 * activations symmetric per row in 8 bits, stored as u8 with zero point 128
 * (the u8 x s8 form every x86 int8 kernel is built on; oneDNN's s8 x s8 adds
 * the 128 itself, slower). 7-bit weights keep pairs of u8 x s8 products
 * inside the s16 that AVX2's vpmaddubsw sums them in (2 * 255 * 63 < 2^15),
 * so no kernel on any ISA saturates. The zero point comes out in the
 * epilogue: y = sa[m] sw[n] (acc[m, n] - 128 sum_k wq[n, k]) + b[n].
 * bf16: weights and activations rounded to nearest even, f32 accumulation,
 * bias in f32; the primitive writes y itself (bias, and += as its sum
 * post-op: y + (x W^T + b), the order of the f32 path).
 *
 * Weights are converted on first use (the detector's first frame), their
 * values read through the backend's weight reader (the model's f32 copy of
 * them is never made: model.h), and shared by every fap_dnnl of the
 * process: keyed by their host pointer (the model's storage, unique while
 * the model lives, and every user holds the model), view shape, form and
 * layout. Detectors on one model hold one copy, whatever their row counts.
 * One primitive per (weights, row count) and fap_dnnl. No allocation per
 * frame after the first. */
#include "linear_dnnl.h"

#include "backend.h"
#include "fastmath.h"
#include "log.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef FAP_HAVE_DNNL

int fap_dnnl_built(void) { return 0; }

int fap_dnnl_has_bf16_units(void) { return 0; }

fap_status fap_dnnl_new(fap_precision precision, int threads, fap_dnnl **out, const char **why) {
  (void)precision, (void)threads;
  *out = NULL;
  *why = "this build has no oneDNN (Debian: libdnnl-dev, then rebuild)";
  return FAP_ERR_UNSUPPORTED;
}

void fap_dnnl_free(fap_dnnl *dnnl) { (void)dnnl; }

fap_status fap_dnnl_linear(fap_dnnl *dnnl, float *y, int ldy, const float *x, int ldx,
                           const float *w, const float *b, int rows, int in, int out,
                           int accumulate) {
  (void)dnnl, (void)y, (void)ldy, (void)x, (void)ldx, (void)w, (void)b, (void)rows, (void)in;
  (void)out, (void)accumulate;
  return fap_fail(FAP_ERR_UNSUPPORTED, "linear: no oneDNN in this build");
}

const char *fap_dnnl_isa_name(void) { return "none"; }

void fap_dnnl_set_reader(fap_dnnl *dnnl, const fap_weight_reader *reader) {
  (void)dnnl, (void)reader;
}

size_t fap_dnnl_shared_bytes(void) { return 0; }

int fap_dnnl_takes(const fap_dnnl *dnnl, int role) {
  (void)dnnl, (void)role;
  return 0;
}

#else

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#ifdef FAP_HAVE_OPENBLAS
#include <cblas.h>
#endif

#define INT8_WEIGHT_MAX 63.0f
#define INT8_ACT_MAX 127.0f
#define ZERO_POINT 128

/* One converted weight view, shared (see the top of the file). */
typedef struct shared_weights {
  const float *w;
  int in, out;
  fap_precision precision;
  int emulate;
  dnnl_memory_desc_t md; /* data's layout (not emulated) */
  void *data;            /* the converted weights */
  float *wscale;         /* int8: per output channel */
  float *wround;         /* bf16 emulation: W rounded to bf16, as f32 */
  int32_t *comp;         /* int8: 128 * sum_k wq[n, k] (< 2^31: |wq| <= 63, in <= 2^18) */
  size_t bytes;
  int refs; /* under shared_lock */
  struct shared_weights *next;
} shared_weights;

static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static shared_weights *shared_list;

typedef struct {
  const float *w;
  int in, out, rows;
  int ldy, bias, accumulate; /* bf16 writes y itself: bias and += in the primitive */
  dnnl_primitive_t prim;
  dnnl_memory_t src, wei, dst, bia, scratch; /* wei: over sw->data */
  shared_weights *sw;
} dnnl_linear;

struct fap_dnnl {
  fap_precision precision;
  int threads;
  int emulate; /* bf16 numerics through OpenBLAS (FAP_CPU_BF16_EMULATE) */
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  dnnl_linear *layers;
  int n_layers, cap_layers;
  void *src_buf; /* quantised / rounded activations */
  size_t src_cap;
  void *acc_buf; /* s32 or f32 products before the epilogue */
  size_t acc_cap;
  float *row_scale;
  size_t row_cap;
  fap_weight_reader reader; /* read NULL: the values are at the weights' pointer */
  void *scratch;             /* oneDNN's scratchpad, shared by this fap_dnnl's primitives */
  size_t scratch_cap;
};

#define PAR _Pragma("omp parallel for num_threads(dn->threads) schedule(static)")

int fap_dnnl_built(void) { return 1; }

int fap_dnnl_takes(const fap_dnnl *dn, int role) {
  return role == FAP_WEIGHT_READS_LN || (role == FAP_WEIGHT_RESIDUAL && dn->precision == FAP_PRECISION_BF16);
}

const char *fap_dnnl_isa_name(void) {
  switch (dnnl_get_effective_cpu_isa()) {
  case dnnl_cpu_isa_sse41: return "sse41";
  case dnnl_cpu_isa_avx: return "avx";
  case dnnl_cpu_isa_avx2: return "avx2";
  case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
  case dnnl_cpu_isa_avx512_core: return "avx512_core";
  case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
  case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
  case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
  default: return "other";
  }
}

/* Where the mode beats f32 and is accurate enough. int8: oneDNN's u8s8 GEMM
 * runs 2x OpenBLAS SGEMM on the vision shapes on AVX2, but the frame only
 * 1.1-1.3x (attention and the f32 layers stay) and its error is beyond the
 * bounds, so it runs only when asked for as an experiment. bf16: oneDNN 2.6
 * has no bf16 matmul below AVX512-BF16. */
static const char *unfit_reason(fap_precision p) {
  dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  int avx2 = isa == dnnl_cpu_isa_avx2 || isa == dnnl_cpu_isa_avx2_vnni ||
             isa == dnnl_cpu_isa_avx512_core || isa == dnnl_cpu_isa_avx512_core_vnni ||
             isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
  int bf16 = isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
  if (p == FAP_PRECISION_INT8) {
    const char *opt = getenv("FAP_CPU_INT8");
    if (!opt || strcmp(opt, "experimental") != 0)
      return "int8 is not offered: it moves A1 by up to 1.4e-2 against f32 (tiny model; the "
             "bound is 1e-2) for 1.1-1.3x per frame on AVX2 (docs/BENCHMARKS.md); "
             "FAP_CPU_INT8=experimental runs it anyway";
    return avx2 ? NULL : "this CPU has no AVX2, where int8 would be slower than f32";
  }
  if (p == FAP_PRECISION_BF16)
    return bf16 ? NULL
                : "this CPU has neither AVX512-BF16 nor AMX, where bf16 would be slower than f32";
  return "the CPU backend's reduced precisions are bf16 and int8";
}

int fap_dnnl_has_bf16_units(void) { return unfit_reason(FAP_PRECISION_BF16) == NULL; }

fap_status fap_dnnl_new(fap_precision precision, int threads, fap_dnnl **out, const char **why) {
  *out = NULL;
  const char *emu = getenv("FAP_CPU_BF16_EMULATE");
  int emulate = 0;
#ifdef FAP_HAVE_OPENBLAS
  emulate = precision == FAP_PRECISION_BF16 && emu && strcmp(emu, "1") == 0 &&
            unfit_reason(precision) != NULL; /* a CPU with the units runs them */
#endif
  *why = emulate ? NULL : unfit_reason(precision);
  if (*why)
    return FAP_ERR_UNSUPPORTED;
  fap_dnnl *dn = calloc(1, sizeof *dn);
  if (!dn)
    return fap_fail(FAP_ERR_NO_MEMORY, "cpu backend: out of memory");
  dn->precision = precision;
  dn->threads = threads > 0 ? threads : 1;
  dn->emulate = emulate;
  if (emulate) {
    fap_log(FAP_LOG_INFO, "cpu backend: bf16 emulated (FAP_CPU_BF16_EMULATE=1): bf16 numbers, "
                          "f32 speed");
    *out = dn;
    return FAP_OK;
  }
  if (dnnl_engine_create(&dn->engine, dnnl_cpu, 0) != dnnl_success ||
      dnnl_stream_create(&dn->stream, dn->engine, dnnl_stream_default_flags) != dnnl_success) {
    fap_dnnl_free(dn);
    return fap_fail(FAP_ERR_BACKEND, "cpu backend: oneDNN could not create its CPU engine");
  }
  *out = dn;
  return FAP_OK;
}

static void shared_put(shared_weights *sw) {
  if (!sw)
    return;
  pthread_mutex_lock(&shared_lock);
  int last = --sw->refs == 0;
  if (last)
    for (shared_weights **at = &shared_list; *at; at = &(*at)->next)
      if (*at == sw) {
        *at = sw->next;
        break;
      }
  pthread_mutex_unlock(&shared_lock);
  if (!last)
    return;
  free(sw->data);
  free(sw->wscale);
  free(sw->comp);
  free(sw->wround);
  free(sw);
}

void fap_dnnl_set_reader(fap_dnnl *dn, const fap_weight_reader *reader) {
  if (dn && reader)
    dn->reader = *reader;
}

size_t fap_dnnl_shared_bytes(void) {
  size_t bytes = 0;
  pthread_mutex_lock(&shared_lock);
  for (const shared_weights *sw = shared_list; sw; sw = sw->next)
    bytes += sw->bytes;
  pthread_mutex_unlock(&shared_lock);
  return bytes;
}

void fap_dnnl_free(fap_dnnl *dn) {
  if (!dn)
    return;
  for (int i = 0; i < dn->n_layers; i++) {
    dnnl_linear *l = &dn->layers[i];
    dnnl_primitive_destroy(l->prim);
    dnnl_memory_destroy(l->src);
    dnnl_memory_destroy(l->wei);
    dnnl_memory_destroy(l->dst);
    dnnl_memory_destroy(l->bia);
    dnnl_memory_destroy(l->scratch);
    shared_put(l->sw);
  }
  free(dn->layers);
  free(dn->src_buf);
  free(dn->acc_buf);
  free(dn->row_scale);
  free(dn->scratch);
  if (dn->stream)
    dnnl_stream_destroy(dn->stream);
  if (dn->engine)
    dnnl_engine_destroy(dn->engine);
  free(dn);
}

static int grow(void **buf, size_t *cap, size_t bytes) {
  if (bytes <= *cap)
    return 1;
  free(*buf);
  *buf = NULL;
  *cap = 0;
  if (posix_memalign(buf, 64, bytes) != 0) {
    *buf = NULL;
    return 0;
  }
  *cap = bytes;
  return 1;
}

/* round to nearest even for |v| < 2^22, in a form that vectorises */
static inline float round_even(float v) { return (v + 12582912.0f) - 12582912.0f; }

/* The per-row passes, written to vectorise (ternaries, not fmaxf: without
 * -ffast-math GCC calls libm for those). */
FAP_CLONES static float abs_max(const float *x, int n) {
  float m = 0.0f;
  for (int k = 0; k < n; k++) {
    float a = x[k] < 0.0f ? -x[k] : x[k];
    m = a > m ? a : m;
  }
  return m;
}

/* q = clamp(round(x / scale), +-127) + 128, the row's scale from its |max| */
FAP_CLONES static float quantise_row(uint8_t *q, const float *x, int n) {
  const float amax = abs_max(x, n);
  const float scale = amax > 0.0f ? amax / INT8_ACT_MAX : 1.0f, inv = 1.0f / scale;
  for (int k = 0; k < n; k++) {
    float v = round_even(x[k] * inv);
    v = v > INT8_ACT_MAX ? INT8_ACT_MAX : v < -INT8_ACT_MAX ? -INT8_ACT_MAX : v;
    q[k] = (uint8_t)(int)(v + (float)ZERO_POINT);
  }
  return scale;
}

/* the bf16 nearest to x (ties to even; inputs are finite), as its 16 bits */
static inline uint16_t bf16_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

FAP_CLONES static void bf16_row(uint16_t *q, const float *x, int n) {
  for (int k = 0; k < n; k++)
    q[k] = bf16_bits(x[k]);
}

/* x rounded to bf16 and widened back: what a bf16 unit multiplies */
FAP_CLONES static void round_row_bf16(float *q, const float *x, int n) {
  for (int k = 0; k < n; k++) {
    uint32_t u = (uint32_t)bf16_bits(x[k]) << 16;
    memcpy(&q[k], &u, sizeof u);
  }
}

FAP_CLONES static void epilogue_int8(float *y, const int32_t *acc, const int32_t *comp,
                                     const float *wscale, const float *b, float s_m, int n,
                                     int accumulate) {
  for (int j = 0; j < n; j++) {
    /* in s32 first: acc and comp reach 2^26, beyond f32's exact integers */
    float v = s_m * wscale[j] * (float)(acc[j] - comp[j]) + (b ? b[j] : 0.0f);
    y[j] = accumulate ? y[j] + v : v;
  }
}

FAP_CLONES static void epilogue_f32(float *y, const float *acc, const float *b, int n,
                                    int accumulate) {
  for (int j = 0; j < n; j++) {
    float v = acc[j] + (b ? b[j] : 0.0f);
    y[j] = accumulate ? y[j] + v : v;
  }
}

static fap_status dnnl_failed(const fap_dnnl *dn, dnnl_status_t st, const char *what, int rows,
                              int in, int out) {
  return fap_fail(FAP_ERR_BACKEND, "cpu backend (oneDNN, %s): %s failed for %d x %d -> %d: %s",
                  fap_precision_name(dn->precision), what, rows, in, out, dnnl_status2str(st));
}

/* The f32 values of W [out, in]: through the reader (the model's lazy
 * weights), else where W is. Freed by the caller. */
static float *read_weights(fap_dnnl *dn, const float *w, int in, int out, fap_status *s) {
  const size_t n = (size_t)in * out;
  float *v = malloc(n * sizeof(float));
  if (!v) {
    *s = fap_fail(FAP_ERR_NO_MEMORY, "cpu backend: out of memory for %d x %d weights", out, in);
    return NULL;
  }
  if (dn->reader.read)
    *s = dn->reader.read(dn->reader.user, w, n, v);
  else
    memcpy(v, w, n * sizeof(float));
  if (*s) {
    free(v);
    return NULL;
  }
  return v;
}

/* Converts W [out, in] (f32 values wv) into sw: the layout md (a reorder
 * from the plain form on dn's engine), int8 also its per-channel scales and
 * zero-point compensation; emulated bf16 as f32 rounded to bf16. */
static fap_status convert_weights(fap_dnnl *dn, shared_weights *sw, const float *wv) {
  const int in = sw->in, out = sw->out;
  const int int8 = dn->precision == FAP_PRECISION_INT8;
  if (dn->emulate) {
    sw->bytes = (size_t)in * out * sizeof(float);
    if (!(sw->wround = malloc(sw->bytes)))
      return fap_fail(FAP_ERR_NO_MEMORY, "cpu backend: out of memory for %d x %d weights", out, in);
    PAR for (int n = 0; n < out; n++)
      round_row_bf16(sw->wround + (size_t)n * in, wv + (size_t)n * in, in);
    return FAP_OK;
  }
  dnnl_memory_desc_t plain;
  dnnl_dims_t dims = {in, out};
  dnnl_status_t st = dnnl_memory_desc_init_by_tag(&plain, 2, dims, int8 ? dnnl_s8 : dnnl_bf16,
                                                  dnnl_ba); /* [out][in] row-major */
  if (st)
    return dnnl_failed(dn, st, "weight descriptor", 0, in, out);
  sw->bytes = dnnl_memory_desc_get_size(&sw->md);
  void *tmp = malloc((size_t)in * out * (int8 ? 1 : 2));
  if (int8) {
    sw->wscale = malloc((size_t)out * sizeof(float));
    sw->comp = malloc((size_t)out * sizeof(int32_t));
  }
  if (posix_memalign(&sw->data, 64, sw->bytes ? sw->bytes : 64) != 0)
    sw->data = NULL;
  if (!tmp || !sw->data || (int8 && (!sw->wscale || !sw->comp))) {
    free(tmp);
    return fap_fail(FAP_ERR_NO_MEMORY, "cpu backend: out of memory for %d x %d weights", out, in);
  }
  PAR for (int n = 0; n < out; n++) {
    const float *wr = wv + (size_t)n * in;
    if (int8) {
      const float amax = abs_max(wr, in);
      const float scale = amax > 0.0f ? amax / INT8_WEIGHT_MAX : 1.0f, inv = 1.0f / scale;
      int8_t *q = (int8_t *)tmp + (size_t)n * in;
      int sum = 0;
      for (int k = 0; k < in; k++) {
        float v = round_even(wr[k] * inv);
        v = v > INT8_WEIGHT_MAX ? INT8_WEIGHT_MAX : v < -INT8_WEIGHT_MAX ? -INT8_WEIGHT_MAX : v;
        q[k] = (int8_t)v;
        sum += q[k];
      }
      sw->wscale[n] = scale;
      sw->comp[n] = ZERO_POINT * sum;
    } else {
      bf16_row((uint16_t *)tmp + (size_t)n * in, wr, in);
    }
  }
  dnnl_memory_t from = NULL, to = NULL;
  dnnl_primitive_desc_t rpd = NULL;
  dnnl_primitive_t reorder = NULL;
  if (!(st = dnnl_memory_create(&from, &plain, dn->engine, tmp)) &&
      !(st = dnnl_memory_create(&to, &sw->md, dn->engine, sw->data)) &&
      !(st = dnnl_reorder_primitive_desc_create(&rpd, &plain, dn->engine, &sw->md, dn->engine,
                                                NULL)) &&
      !(st = dnnl_primitive_create(&reorder, rpd))) {
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    if (!(st = dnnl_primitive_execute(reorder, dn->stream, 2, args)))
      st = dnnl_stream_wait(dn->stream);
  }
  if (reorder)
    dnnl_primitive_destroy(reorder);
  if (rpd)
    dnnl_primitive_desc_destroy(rpd);
  if (from)
    dnnl_memory_destroy(from);
  if (to)
    dnnl_memory_destroy(to);
  free(tmp);
  return st ? dnnl_failed(dn, st, "weight reorder", 0, in, out) : FAP_OK;
}

/* The shared converted form of the view W [out, in] at w in layout md (NULL
 * when emulated), converted now if no fap_dnnl of the process has it. */
static shared_weights *shared_get(fap_dnnl *dn, const float *w, int in, int out,
                                  const dnnl_memory_desc_t *md, fap_status *s) {
  pthread_mutex_lock(&shared_lock);
  shared_weights *sw = shared_list;
  for (; sw; sw = sw->next)
    if (sw->w == w && sw->in == in && sw->out == out && sw->precision == dn->precision &&
        sw->emulate == dn->emulate && (dn->emulate || dnnl_memory_desc_equal(&sw->md, md)))
      break;
  if (sw) {
    sw->refs++;
    pthread_mutex_unlock(&shared_lock);
    return sw;
  }
  /* converted under the lock: a second detector on the model waits for
   * this copy rather than making its own */
  sw = calloc(1, sizeof *sw);
  float *wv = sw ? read_weights(dn, w, in, out, s) : NULL;
  if (!sw)
    *s = fap_fail(FAP_ERR_NO_MEMORY, "cpu backend: out of memory");
  if (wv) {
    *sw = (shared_weights){.w = w, .in = in, .out = out, .precision = dn->precision,
                           .emulate = dn->emulate, .refs = 1};
    if (md)
      sw->md = *md;
    *s = convert_weights(dn, sw, wv);
    free(wv);
  }
  if (!*s) {
    sw->next = shared_list;
    shared_list = sw;
  }
  pthread_mutex_unlock(&shared_lock);
  if (*s) {
    if (sw) {
      free(sw->data);
      free(sw->wscale);
      free(sw->comp);
      free(sw->wround);
      free(sw);
    }
    return NULL;
  }
  return sw;
}

/* One (weights, rows) matmul. bf16: src [rows, in] bf16, dst y itself
 * (rows ldy apart, f32) with the bias and += (the sum post-op) in the
 * primitive, so nothing passes over the output again. int8: an s32 product
 * the epilogue scales. The weights in the layout the primitive picks
 * (`any`), shared (shared_get). */
static fap_status make_layer(fap_dnnl *dn, dnnl_linear *l) {
  const int int8 = dn->precision == FAP_PRECISION_INT8;
  dnnl_memory_desc_t src, wei, dst, bia;
  dnnl_dims_t ds = {l->rows, l->in}, dw = {l->in, l->out}, dd = {l->rows, l->out},
              sd = {l->ldy, 1}, db = {1, l->out};
  dnnl_matmul_desc_t md;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t post = NULL;
  dnnl_status_t st;
  if ((st = dnnl_memory_desc_init_by_tag(&src, 2, ds, int8 ? dnnl_u8 : dnnl_bf16, dnnl_ab)) ||
      (st = dnnl_memory_desc_init_by_tag(&wei, 2, dw, int8 ? dnnl_s8 : dnnl_bf16,
                                         dnnl_format_tag_any)) ||
      (st = int8 ? dnnl_memory_desc_init_by_tag(&dst, 2, dd, dnnl_s32, dnnl_ab)
                 : dnnl_memory_desc_init_by_strides(&dst, 2, dd, dnnl_f32, sd)) ||
      (st = dnnl_memory_desc_init_by_tag(&bia, 2, db, dnnl_f32, dnnl_ab)) ||
      (st = dnnl_matmul_desc_init(&md, &src, &wei, !int8 && l->bias ? &bia : NULL, &dst)) ||
      (st = dnnl_primitive_attr_create(&attr)) ||
      (st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user)) ||
      (st = dnnl_post_ops_create(&post)) ||
      (st = !int8 && l->accumulate ? dnnl_post_ops_append_sum(post, 1.0f) : dnnl_success) ||
      (st = dnnl_primitive_attr_set_post_ops(attr, post)) ||
      (st = dnnl_primitive_desc_create(&pd, &md, attr, dn->engine, NULL))) {
    if (post)
      dnnl_post_ops_destroy(post);
    if (attr)
      dnnl_primitive_attr_destroy(attr);
    return dnnl_failed(dn, st, "matmul descriptor", l->rows, l->in, l->out);
  }
  dnnl_post_ops_destroy(post);
  dnnl_primitive_attr_destroy(attr);
  fap_status s = FAP_OK;
  const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  const dnnl_memory_desc_t *scratch = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  const size_t need = dnnl_memory_desc_get_size(scratch);
  if ((st = dnnl_primitive_create(&l->prim, pd)) ||
      (st = dnnl_memory_create(&l->src, &src, dn->engine, DNNL_MEMORY_NONE)) ||
      (st = dnnl_memory_create(&l->dst, &dst, dn->engine, DNNL_MEMORY_NONE)) ||
      (st = dnnl_memory_create(&l->bia, &bia, dn->engine, DNNL_MEMORY_NONE)) ||
      (st = dnnl_memory_create(&l->scratch, scratch, dn->engine, DNNL_MEMORY_NONE)))
    s = dnnl_failed(dn, st, "matmul primitive", l->rows, l->in, l->out);
  if (!s && !grow(&dn->scratch, &dn->scratch_cap, need ? need : 64))
    s = fap_fail(FAP_ERR_NO_MEMORY, "cpu backend: out of memory for oneDNN's scratchpad");
  if (!s && (l->sw = shared_get(dn, l->w, l->in, l->out, want, &s)) &&
      (st = dnnl_memory_create(&l->wei, want, dn->engine, l->sw->data)))
    s = dnnl_failed(dn, st, "weight memory", l->rows, l->in, l->out);
  dnnl_primitive_desc_destroy(pd);
  return s;
}

static dnnl_linear *find_layer(fap_dnnl *dn, const float *w, int rows, int in, int out, int ldy,
                               int bias, int accumulate, fap_status *s) {
  for (int i = 0; i < dn->n_layers; i++) {
    dnnl_linear *l = &dn->layers[i];
    if (l->w == w && l->rows == rows && l->in == in && l->out == out && l->ldy == ldy &&
        l->bias == bias && l->accumulate == accumulate)
      return l;
  }
  if (dn->n_layers == dn->cap_layers) { /* the first frame only */
    int cap = dn->cap_layers ? 2 * dn->cap_layers : 64;
    dnnl_linear *grown = realloc(dn->layers, (size_t)cap * sizeof *grown);
    if (!grown) {
      *s = fap_fail(FAP_ERR_NO_MEMORY, "cpu backend: out of memory");
      return NULL;
    }
    dn->layers = grown;
    dn->cap_layers = cap;
  }
  dnnl_linear *l = &dn->layers[dn->n_layers];
  memset(l, 0, sizeof *l);
  l->w = w, l->rows = rows, l->in = in, l->out = out;
  l->ldy = ldy, l->bias = bias, l->accumulate = accumulate;
  dn->n_layers++; /* counted at once, so fap_dnnl_free releases a half-made layer */
  if (dn->emulate)
    *s = (l->sw = shared_get(dn, w, in, out, NULL, s)) ? FAP_OK : *s;
  else
    *s = make_layer(dn, l);
  return *s ? NULL : l;
}

fap_status fap_dnnl_linear(fap_dnnl *dn, float *y, int ldy, const float *x, int ldx,
                           const float *w, const float *b, int rows, int in, int out,
                           int accumulate) {
  fap_status s = FAP_OK;
  dnnl_linear *l = find_layer(dn, w, rows, in, out, ldy, b != NULL, accumulate, &s);
  if (!l)
    return s;
  const int int8 = dn->precision == FAP_PRECISION_INT8;
  const int direct = !int8 && !dn->emulate; /* the primitive writes y */
  if (!grow(&dn->src_buf, &dn->src_cap, (size_t)rows * in * (int8 ? 1 : dn->emulate ? 4 : 2)) ||
      (!direct && !grow(&dn->acc_buf, &dn->acc_cap, (size_t)rows * out * 4)) ||
      !grow((void **)&dn->row_scale, &dn->row_cap, (size_t)rows * sizeof(float)))
    return fap_fail(FAP_ERR_NO_MEMORY, "cpu backend: out of memory for %d x %d activations",
                    rows, in);

  /* activations: int8 per row, or bf16 */
  float *const sa = dn->row_scale;
  PAR for (int m = 0; m < rows; m++) {
    if (int8)
      sa[m] = quantise_row((uint8_t *)dn->src_buf + (size_t)m * in, x + (size_t)m * ldx, in);
    else if (dn->emulate)
      round_row_bf16((float *)dn->src_buf + (size_t)m * in, x + (size_t)m * ldx, in);
    else
      bf16_row((uint16_t *)dn->src_buf + (size_t)m * in, x + (size_t)m * ldx, in);
  }
#ifdef FAP_HAVE_OPENBLAS
  if (dn->emulate) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, dn->src_buf, in,
                l->sw->wround, in, 0.0f, dn->acc_buf, out);
    PAR for (int m = 0; m < rows; m++)
      epilogue_f32(y + (size_t)m * ldy, (const float *)dn->acc_buf + (size_t)m * out, b, out,
                   accumulate);
    return FAP_OK;
  }
#endif

#ifdef _OPENMP
  omp_set_num_threads(dn->threads); /* oneDNN's OpenMP regions take this thread's setting */
#endif
  dnnl_status_t st;
  if ((st = dnnl_memory_set_data_handle(l->src, dn->src_buf)) ||
      (st = dnnl_memory_set_data_handle(l->dst, direct ? (void *)y : dn->acc_buf)) ||
      (st = dnnl_memory_set_data_handle(l->scratch, dn->scratch)) ||
      (direct && b && (st = dnnl_memory_set_data_handle(l->bia, (void *)b))))
    return dnnl_failed(dn, st, "memory handle", rows, in, out);
  dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, l->src},
                             {DNNL_ARG_WEIGHTS, l->wei},
                             {DNNL_ARG_DST, l->dst},
                             {DNNL_ARG_SCRATCHPAD, l->scratch},
                             {DNNL_ARG_BIAS, l->bia}};
  if ((st = dnnl_primitive_execute(l->prim, dn->stream, direct && b ? 5 : 4, args)) ||
      (st = dnnl_stream_wait(dn->stream)))
    return dnnl_failed(dn, st, "matmul", rows, in, out);
  if (direct)
    return FAP_OK;

  /* int8's epilogue: scales, zero point, bias, residual */
  PAR for (int m = 0; m < rows; m++)
    epilogue_int8(y + (size_t)m * ldy, (const int32_t *)dn->acc_buf + (size_t)m * out,
                  l->sw->comp, l->sw->wscale, b, sa[m], out, accumulate);
  return FAP_OK;
}

#endif
