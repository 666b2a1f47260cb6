/* Fused multi-head attention, CPU fast path: the driver and the AVX2 + FMA
 * kernels.
 *
 * Why: the BLAS path computes a head's whole nq x nk score matrix with one
 * SGEMM, softmaxes it and multiplies it by v with another. At S = 518 (1370
 * tokens) that matrix is 7.5 MB per head: each pass over it goes to memory,
 * OpenBLAS zeroes it before writing it, and the softmax's running sum keeps
 * its exp loop scalar (no -ffast-math, so the compiler may not reorder the
 * sum). Attention is 28 % of the vision encoder's FLOPs there (43 of its 24 +
 * 19 attention calls per frame run on 1370 x 1370 scores).
 *
 * How: one task is one head and a block of query rows whose scores fit the
 * core's L2 cache. Keys are packed once per call in panels of P (a panel is
 * [hd][P]), values per head in P-wide column blocks ([hd / P][nk][P];
 * narrower where hd is not a multiple of P), so both products read memory in
 * order. Scores come from an R x P register-tile kernel (the q row
 * broadcast), the softmax leaves the exponentials unnormalised and keeps its
 * partial sums in a register, and P v runs the same tile shape; the 1 / sum
 * is applied to the hd outputs of a row instead of its nk probabilities.
 * This file is the driver (workspace, packing, tasks) and the AVX2 + FMA
 * kernels (R = 6, P = 16: 12 ymm accumulators); attention_avx512.c has the
 * AVX-512 ones (R = 12, P = 32: 24 zmm accumulators). Which runs:
 * fap_attention_kernel_for.
 *
 * Numerics: the formula of the reference loops in fp32; what differs is the
 * order of the sums (8 or 16 lanes, FMA) and the exp (the fast path's
 * polynomial, core/fastmath.h, here 8 or 16 lanes at a time).
 * tests/test_ops.c holds each kernel to 1e-5 * max|v| of a double-precision
 * computation. */
#include "attention_cpu.h"

#include "attention_kernels.h"
#include "fastmath.h"
#include "log.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define FAP_FUSED_X86 1
#endif

void fap_attention_ws_free(fap_attention_ws *ws) {
  free(ws->buf);
  ws->buf = NULL;
  ws->cap = 0;
}

/* ---- the AVX2 + FMA kernels ----------------------------------------------- */

#ifdef FAP_FUSED_X86

/* The kernels carry the target attribute one by one (GCC and clang both
 * take it; clang ignores `#pragma GCC target`), so the file compiles for the
 * baseline and only these functions use AVX2 + FMA. */
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma")))

#define TILE_ROWS 6
#define PANEL 16

/* 8 lanes of fap_expf_fast: same clamp, reduction and polynomial. */
AVX2 static inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  __m256 n = _mm256_sub_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic), magic);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

AVX2 static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

AVX2 static inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* s[0..vis) <- exp(s - max), s[vis..end) <- 0; returns 1 / sum. */
AVX2 static float softmax_avx2(float *s, int vis, int end) {
  __m256 mx8 = _mm256_set1_ps(-INFINITY);
  int j = 0;
  for (; j + 8 <= vis; j += 8)
    mx8 = _mm256_max_ps(mx8, _mm256_loadu_ps(s + j));
  float mx = hmax8(mx8);
  for (; j < vis; j++)
    mx = s[j] > mx ? s[j] : mx;
  const __m256 m = _mm256_set1_ps(mx);
  __m256 sum8 = _mm256_setzero_ps();
  j = 0;
  for (; j + 8 <= vis; j += 8) {
    __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), m));
    _mm256_storeu_ps(s + j, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  float sum = hsum8(sum8);
  for (; j < vis; j++) {
    s[j] = fap_expf_fast(s[j] - mx);
    sum += s[j];
  }
  for (j = vis; j < end; j++)
    s[j] = 0.0f;
  return 1.0f / sum;
}

/* Both products are one kernel: out[i][0..16) = f_i * sum_t a[i][t] b[t][0..16)
 * over t < n for the m <= 6 rows of a, b a panel of 16-float rows. q k^T
 * runs it with a = q, b = one key panel [hd][16], f = scale; P v with a = P,
 * b = one value column block [nk][16], f = 1 / sum of the row. The tile is
 * held in 12 named registers: GCC keeps an array of __m256 accumulators in
 * memory and stores it every iteration. A tile of fewer rows repeats its
 * last row (the same data, so no NaN or overflow can appear) and stores only
 * its own rows. f is factor[i * factor_step] (step 0: one factor for all). */
#define FMA_ROW(acc0, acc1, row_ptr, b0, b1)               \
  do {                                                     \
    const __m256 x_ = _mm256_broadcast_ss(row_ptr);        \
    acc0 = _mm256_fmadd_ps(x_, b0, acc0);                  \
    acc1 = _mm256_fmadd_ps(x_, b1, acc1);                  \
  } while (0)

AVX2 static void tile_avx2(int m, const float *a, int lda, const float *b, int n, float *out,
                           int ldo, const float *factor, int factor_step) {
  const float *r[TILE_ROWS];
  for (int i = 0; i < TILE_ROWS; i++)
    r[i] = a + (size_t)(i < m ? i : m - 1) * lda;
  const float *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3], *r4 = r[4], *r5 = r[5];
  __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0,
         a4 = a0, b4 = a0, a5 = a0, b5 = a0;
  for (int t = 0; t < n; t++) {
    const __m256 p0 = _mm256_load_ps(b + (size_t)t * PANEL),
                 p1 = _mm256_load_ps(b + (size_t)t * PANEL + 8);
    FMA_ROW(a0, b0, r0 + t, p0, p1);
    FMA_ROW(a1, b1, r1 + t, p0, p1);
    FMA_ROW(a2, b2, r2 + t, p0, p1);
    FMA_ROW(a3, b3, r3 + t, p0, p1);
    FMA_ROW(a4, b4, r4 + t, p0, p1);
    FMA_ROW(a5, b5, r5 + t, p0, p1);
  }
  const __m256 lo[TILE_ROWS] = {a0, a1, a2, a3, a4, a5}, hi[TILE_ROWS] = {b0, b1, b2, b3, b4, b5};
  for (int i = 0; i < m; i++) {
    /* no __m256 crosses a call: clang's OpenMP-outlined callers are not AVX functions */
    const __m256 f = _mm256_set1_ps(factor[i * factor_step]);
    _mm256_storeu_ps(out + (size_t)i * ldo, _mm256_mul_ps(lo[i], f));
    _mm256_storeu_ps(out + (size_t)i * ldo + 8, _mm256_mul_ps(hi[i], f));
  }
}

const fap_attention_isa fap_attention_isa_avx2 = {
    .tile_rows = TILE_ROWS,
    .panel = PANEL,
    .narrow_panel = PANEL,
    .tile = tile_avx2,
    .narrow_tile = tile_avx2,
    .softmax = softmax_avx2};

#endif

/* ---- the driver ------------------------------------------------------------- */

/* score tile of one task: rows x nk floats kept in L2 (512 KiB on Zen 3,
 * 1 MiB on Zen 4 and Zen 5, 2 MiB on Sapphire Rapids), leaving room for the
 * packed keys or values it is multiplied with */
#define SCORE_TILE_FLOATS (40 * 1024)
#define MAX_BLOCK_ROWS 96 /* a multiple of every kernel's tile rows */

static inline int visible_keys(int i, int nk, int q_pos0) {
  if (q_pos0 < 0)
    return nk;
  int v = q_pos0 + i + 1;
  return v < nk ? v : nk;
}

static int block_rows(int nq, int nkp, int tile_rows) {
  int rows = SCORE_TILE_FLOATS / nkp / tile_rows * tile_rows;
  rows = rows < tile_rows ? tile_rows : rows > MAX_BLOCK_ROWS ? MAX_BLOCK_ROWS : rows;
  return rows < nq ? rows : nq;
}

static fap_status attention_run(const fap_attention_isa *isa, fap_attention_ws *ws, int threads,
                                float *out, int ldo, const float *q, int ldq, const float *k,
                                int ldk, const float *v, int ldv, int nq, int nk, int heads,
                                int hd, int q_pos0) {
  if (threads < 1)
    threads = 1;
  const int panel = isa->panel, tile_rows = isa->tile_rows;
  const int nkp = (nk + panel - 1) / panel * panel, panels = nkp / panel;
  const int bq = block_rows(nq, nkp, tile_rows), blocks = (nq + bq - 1) / bq;
  const size_t head_floats = (size_t)nkp * hd; /* one head's packed keys, or values */
  const size_t tile_floats = (size_t)bq * nkp + (size_t)bq; /* scores + 1 / sums */
  const size_t need = 2 * (size_t)heads * head_floats + (size_t)threads * tile_floats;
  if (need > ws->cap) {
    free(ws->buf);
    ws->buf = NULL;
    ws->cap = 0;
    void *p = NULL;
    if (posix_memalign(&p, 64, need * sizeof(float)) != 0)
      return fap_fail(FAP_ERR_NO_MEMORY, "attention: out of memory for %d x %d keys x %d heads",
                      nq, nk, heads);
    ws->buf = p;
    ws->cap = need;
  }
  float *const kpack = ws->buf, *const vpack = kpack + (size_t)heads * head_floats;
  float *const tiles = vpack + (size_t)heads * head_floats;
  const float scale = 1.0f / sqrtf((float)hd);
  /* value column blocks: the full panel width where hd allows it */
  const int wide = hd % panel == 0, vpanel = wide ? panel : isa->narrow_panel;
  const fap_attention_tile_fn vtile = wide ? isa->tile : isa->narrow_tile;
  const int vblocks = hd / vpanel;

  _Pragma("omp parallel num_threads(threads)") {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
    /* pack: keys as [panel][hd][P] (zero keys past nk), values as [hd/V][nk][V]
     * (V = vpanel) */
    _Pragma("omp for schedule(static)") for (int t = 0; t < heads * panels; t++) {
      const int h = t / panels, p = t % panels;
      float *kp = kpack + h * head_floats + (size_t)p * hd * panel;
      for (int c = 0; c < panel; c++) {
        const int j = p * panel + c;
        const float *kj = k + (size_t)j * ldk + h * hd, *vj = v + (size_t)j * ldv + h * hd;
        for (int d = 0; d < hd; d++)
          kp[d * panel + c] = j < nk ? kj[d] : 0.0f;
        if (j < nk)
          for (int b = 0; b < vblocks; b++)
            memcpy(vpack + h * head_floats + ((size_t)b * nkp + j) * vpanel, vj + b * vpanel,
                   vpanel * sizeof(float));
      }
    }
    float *const s = tiles + (size_t)tid * tile_floats, *const inv = s + (size_t)bq * nkp;
    _Pragma("omp for schedule(dynamic, 1)") for (int t = 0; t < heads * blocks; t++) {
      const int h = t / blocks, i0 = (t % blocks) * bq, m = nq - i0 < bq ? nq - i0 : bq;
      const float *kh = kpack + h * head_floats, *vh = vpack + h * head_floats;
      const int end = visible_keys(i0 + m - 1, nk, q_pos0); /* the block's widest row */
      for (int r = 0; r < m; r += tile_rows) {
        const int mr = m - r < tile_rows ? m - r : tile_rows;
        const int np = (visible_keys(i0 + r + mr - 1, nk, q_pos0) + panel - 1) / panel;
        const float *qr = q + (size_t)(i0 + r) * ldq + h * hd;
        for (int p = 0; p < np; p++)
          isa->tile(mr, qr, ldq, kh + (size_t)p * hd * panel, hd, s + (size_t)r * nkp + p * panel,
                    nkp, &scale, 0);
      }
      for (int i = 0; i < m; i++)
        inv[i] = isa->softmax(s + (size_t)i * nkp, visible_keys(i0 + i, nk, q_pos0), end);
      for (int r = 0; r < m; r += tile_rows) {
        const int mr = m - r < tile_rows ? m - r : tile_rows;
        const int jn = visible_keys(i0 + r + mr - 1, nk, q_pos0);
        float *o = out + (size_t)(i0 + r) * ldo + h * hd;
        for (int b = 0; b < vblocks; b++)
          vtile(mr, s + (size_t)r * nkp, nkp, vh + (size_t)b * nkp * vpanel, jn, o + b * vpanel,
                ldo, inv + r, 1);
      }
    }
  }
  return FAP_OK;
}

/* ---- which kernel runs ------------------------------------------------------ */

static const char *const kernel_names[] = {"auto", "blas", "avx2", "avx512"};

/* the kernel's pieces where this build has them, whatever the CPU */
static const fap_attention_isa *isa_of(fap_attention_kernel kernel) {
#ifdef FAP_FUSED_X86
  if (kernel == FAP_ATTENTION_AVX2)
    return &fap_attention_isa_avx2;
  if (kernel == FAP_ATTENTION_AVX512)
    return &fap_attention_isa_avx512;
#endif
  (void)kernel;
  return NULL;
}

/* Compiled for the baseline: callable on any CPU. */
static int cpu_runs(fap_attention_kernel kernel) {
#ifdef FAP_FUSED_X86
  __builtin_cpu_init();
  if (kernel == FAP_ATTENTION_AVX2)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (kernel == FAP_ATTENTION_AVX512)
    return __builtin_cpu_supports("avx512f");
#endif
  (void)kernel;
  return 0;
}

static int kernel_runs(fap_attention_kernel kernel, int hd) {
  const fap_attention_isa *isa = isa_of(kernel);
  return isa && hd > 0 && hd % isa->narrow_panel == 0 && cpu_runs(kernel);
}

fap_attention_kernel fap_attention_kernel_named(const char *name) {
  if (!name || !*name)
    return FAP_ATTENTION_AUTO;
  for (int i = 0; i < (int)(sizeof kernel_names / sizeof *kernel_names); i++)
    if (strcmp(name, kernel_names[i]) == 0) {
      if (isa_of(i) && !cpu_runs(i)) {
        fap_log(FAP_LOG_WARNING, "attention: this CPU cannot run the %s kernel; automatic choice",
                name);
        return FAP_ATTENTION_AUTO;
      }
      return (fap_attention_kernel)i;
    }
  fap_log(FAP_LOG_WARNING, "attention: no kernel named %s (auto, blas, avx2, avx512); automatic "
          "choice", name);
  return FAP_ATTENTION_AUTO;
}

fap_attention_kernel fap_attention_kernel_for(fap_attention_kernel preferred, int hd) {
  if (preferred == FAP_ATTENTION_BLAS)
    return FAP_ATTENTION_BLAS;
  if (preferred != FAP_ATTENTION_AUTO && kernel_runs(preferred, hd))
    return preferred;
  /* AVX-512 first: faster on Zen 5 (docs/BENCHMARKS.md) */
  if (kernel_runs(FAP_ATTENTION_AVX512, hd))
    return FAP_ATTENTION_AVX512;
  if (kernel_runs(FAP_ATTENTION_AVX2, hd))
    return FAP_ATTENTION_AVX2;
  return FAP_ATTENTION_BLAS;
}

int fap_attention_fused_usable(int hd) {
  return fap_attention_kernel_for(FAP_ATTENTION_AUTO, hd) != FAP_ATTENTION_BLAS;
}

fap_status fap_attention_fused_with(fap_attention_kernel kernel, fap_attention_ws *ws,
                                    int threads, float *out, int ldo, const float *q, int ldq,
                                    const float *k, int ldk, const float *v, int ldv, int nq,
                                    int nk, int heads, int hd, int q_pos0) {
  if (kernel == FAP_ATTENTION_AUTO)
    kernel = fap_attention_kernel_for(FAP_ATTENTION_AUTO, hd);
  if (!kernel_runs(kernel, hd))
    return fap_fail(FAP_ERR_UNSUPPORTED, "attention: the %s kernel does not run here (head dim %d)",
                    kernel_names[kernel], hd);
  return attention_run(isa_of(kernel), ws, threads, out, ldo, q, ldq, k, ldk, v, ldv, nq, nk,
                       heads, hd, q_pos0);
}

fap_status fap_attention_fused(fap_attention_ws *ws, int threads, float *out, int ldo,
                               const float *q, int ldq, const float *k, int ldk, const float *v,
                               int ldv, int nq, int nk, int heads, int hd, int q_pos0) {
  return fap_attention_fused_with(FAP_ATTENTION_AUTO, ws, threads, out, ldo, q, ldq, k, ldk, v,
                                  ldv, nq, nk, heads, hd, q_pos0);
}
