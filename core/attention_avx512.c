/* The fused attention's AVX-512 kernels (core/attention_cpu.c drives them).
 *
 * Why a second set: with 32 vector registers of 16 floats the register tile
 * grows from the AVX2 kernels' 6 x 16 (12 ymm accumulators) to 12 x 32 (24
 * zmm accumulators, two value loads and twelve broadcasts per step), so a
 * step does four times the work for about twice the loads; the FMAs take
 * their broadcast from memory; the softmax's tails are masked instead of
 * scalar. Key panels and value column blocks are 32 floats wide; where hd is
 * an odd multiple of 16 (the tiny test models: 16) the value blocks are 16
 * wide, through a 12 x 16 tile, so this kernel runs wherever the AVX2 one
 * does (ViT-L and CLIP's text encoder: hd = 64, the wide tile).
 *
 * Numerics: those of the AVX2 kernels with 16 lanes: the same exp polynomial
 * (core/fastmath.h), FMA dot products in the same order over t, the softmax's
 * sum in 16 partial sums instead of 8. */
#include "attention_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>
#include <math.h>

/* Per function, as in attention_cpu.c: the file compiles for the baseline
 * (clang ignores `#pragma GCC target`) and only these functions use
 * AVX-512F. */
#define AVX512 __attribute__((target("avx512f")))

#define TILE_ROWS 12
#define PANEL 32

/* 16 lanes of fap_expf_fast: same clamp, reduction and polynomial. */
AVX512 static inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  x = _mm512_min_ps(x, _mm512_set1_ps(88.0f));
  const __m512 magic = _mm512_set1_ps(12582912.0f);
  __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), magic), magic);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  __m512i bits =
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

/* the lanes below `left` (1..16) */
static inline __mmask16 tail_mask(int left) { return (__mmask16)((1u << left) - 1u); }

/* s[0..vis) <- exp(s - max), s[vis..end) <- 0; returns 1 / sum. */
AVX512 static float softmax_avx512(float *s, int vis, int end) {
  __m512 mx16 = _mm512_set1_ps(-INFINITY);
  int j = 0;
  for (; j + 16 <= vis; j += 16)
    mx16 = _mm512_max_ps(mx16, _mm512_loadu_ps(s + j));
  if (j < vis) /* the lanes past vis keep -inf */
    mx16 = _mm512_mask_max_ps(mx16, tail_mask(vis - j), mx16,
                              _mm512_maskz_loadu_ps(tail_mask(vis - j), s + j));
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx16));
  __m512 sum16 = _mm512_setzero_ps();
  for (j = 0; j + 16 <= vis; j += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(s + j), m));
    _mm512_storeu_ps(s + j, e);
    sum16 = _mm512_add_ps(sum16, e);
  }
  if (j < vis) {
    const __mmask16 k = tail_mask(vis - j);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j), m));
    _mm512_mask_storeu_ps(s + j, k, e);
    sum16 = _mm512_mask_add_ps(sum16, k, sum16, e);
  }
  const float sum = _mm512_reduce_add_ps(sum16);
  for (j = vis; j < end; j++)
    s[j] = 0.0f;
  return 1.0f / sum;
}

/* out[i][0..32) = f_i * sum_t a[i][t] b[t][0..32) over t < n for the m <= 12
 * rows of a (attention_kernels.h). 24 named accumulators, as the AVX2 kernel
 * names its 12 (GCC keeps an array of vectors in memory); a tile of fewer
 * rows repeats its last row (the same data: no NaN or overflow can appear)
 * and stores only its own rows. */
#define FMA_ROW(acc0, acc1, row_ptr, b0, b1)         \
  do {                                               \
    const __m512 x_ = _mm512_set1_ps(*(row_ptr));    \
    acc0 = _mm512_fmadd_ps(x_, b0, acc0);            \
    acc1 = _mm512_fmadd_ps(x_, b1, acc1);            \
  } while (0)

AVX512 static void tile_avx512(int m, const float *a, int lda, const float *b, int n, float *out,
                               int ldo, const float *factor, int factor_step) {
  const float *r[TILE_ROWS];
  for (int i = 0; i < TILE_ROWS; i++)
    r[i] = a + (size_t)(i < m ? i : m - 1) * lda;
  const float *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3], *r4 = r[4], *r5 = r[5];
  const float *r6 = r[6], *r7 = r[7], *r8 = r[8], *r9 = r[9], *r10 = r[10], *r11 = r[11];
  __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0,
         a4 = a0, b4 = a0, a5 = a0, b5 = a0, a6 = a0, b6 = a0, a7 = a0, b7 = a0, a8 = a0, b8 = a0,
         a9 = a0, b9 = a0, a10 = a0, b10 = a0, a11 = a0, b11 = a0;
  for (int t = 0; t < n; t++) {
    const __m512 p0 = _mm512_load_ps(b + (size_t)t * PANEL),
                 p1 = _mm512_load_ps(b + (size_t)t * PANEL + 16);
    FMA_ROW(a0, b0, r0 + t, p0, p1);
    FMA_ROW(a1, b1, r1 + t, p0, p1);
    FMA_ROW(a2, b2, r2 + t, p0, p1);
    FMA_ROW(a3, b3, r3 + t, p0, p1);
    FMA_ROW(a4, b4, r4 + t, p0, p1);
    FMA_ROW(a5, b5, r5 + t, p0, p1);
    FMA_ROW(a6, b6, r6 + t, p0, p1);
    FMA_ROW(a7, b7, r7 + t, p0, p1);
    FMA_ROW(a8, b8, r8 + t, p0, p1);
    FMA_ROW(a9, b9, r9 + t, p0, p1);
    FMA_ROW(a10, b10, r10 + t, p0, p1);
    FMA_ROW(a11, b11, r11 + t, p0, p1);
  }
  const __m512 lo[TILE_ROWS] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11};
  const __m512 hi[TILE_ROWS] = {b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11};
  for (int i = 0; i < m; i++) {
    /* no __m512 crosses a call: clang's OpenMP-outlined callers are not AVX functions */
    const __m512 f = _mm512_set1_ps(factor[i * factor_step]);
    _mm512_storeu_ps(out + (size_t)i * ldo, _mm512_mul_ps(lo[i], f));
    _mm512_storeu_ps(out + (size_t)i * ldo + 16, _mm512_mul_ps(hi[i], f));
  }
}

/* The same, 16 columns wide (12 accumulators): value blocks where hd is an
 * odd multiple of 16. */
#define FMA_ROW1(acc, row_ptr, b0) acc = _mm512_fmadd_ps(_mm512_set1_ps(*(row_ptr)), b0, acc)

AVX512 static void tile16_avx512(int m, const float *a, int lda, const float *b, int n,
                                 float *out, int ldo, const float *factor, int factor_step) {
  const float *r[TILE_ROWS];
  for (int i = 0; i < TILE_ROWS; i++)
    r[i] = a + (size_t)(i < m ? i : m - 1) * lda;
  const float *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3], *r4 = r[4], *r5 = r[5];
  const float *r6 = r[6], *r7 = r[7], *r8 = r[8], *r9 = r[9], *r10 = r[10], *r11 = r[11];
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0,
         a8 = a0, a9 = a0, a10 = a0, a11 = a0;
  for (int t = 0; t < n; t++) {
    const __m512 p0 = _mm512_load_ps(b + (size_t)t * 16);
    FMA_ROW1(a0, r0 + t, p0);
    FMA_ROW1(a1, r1 + t, p0);
    FMA_ROW1(a2, r2 + t, p0);
    FMA_ROW1(a3, r3 + t, p0);
    FMA_ROW1(a4, r4 + t, p0);
    FMA_ROW1(a5, r5 + t, p0);
    FMA_ROW1(a6, r6 + t, p0);
    FMA_ROW1(a7, r7 + t, p0);
    FMA_ROW1(a8, r8 + t, p0);
    FMA_ROW1(a9, r9 + t, p0);
    FMA_ROW1(a10, r10 + t, p0);
    FMA_ROW1(a11, r11 + t, p0);
  }
  const __m512 acc[TILE_ROWS] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11};
  for (int i = 0; i < m; i++)
    _mm512_storeu_ps(out + (size_t)i * ldo,
                     _mm512_mul_ps(acc[i], _mm512_set1_ps(factor[i * factor_step])));
}

const fap_attention_isa fap_attention_isa_avx512 = {
    .tile_rows = TILE_ROWS,
    .panel = PANEL,
    .narrow_panel = 16,
    .tile = tile_avx512,
    .narrow_tile = tile16_avx512,
    .softmax = softmax_avx512};

#endif
