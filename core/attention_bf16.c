/* Fused attention with bf16 products (AVX512-BF16), the CPU backend's
 * attention where it runs precision bf16 (core/attention_cpu.h).
 *
 * Why: in bf16 the linear layers run on oneDNN's bf16 kernels at about twice
 * f32's speed, and the f32 attention becomes a quarter of the vision
 * encoder's time at S = 336 and more at 518 (its cost grows with the square
 * of the tokens). vdpbf16ps does 32 products per instruction where an f32
 * FMA does 16.
 *
 * The driver of attention_cpu.c, specialised: one task is one head and a
 * block of query rows; keys are packed per call in panels of 32 keys, as
 * bf16 pairs along the head dimension ([hd / 2][32][2]), values per head in
 * column blocks of 32 (16 where hd is an odd multiple of 16) as pairs along
 * the keys ([nk' / 2][V][2], keys past nk zero). A 12 x 32 register tile
 * (24 zmm accumulators) computes both products, a row of a broadcast one
 * pair at a time.
 *
 * Numerics (what tests/test_ops.c holds the kernel to, against double
 * precision): q, k, v rounded to bf16 (nearest even), each score an f32 sum
 * of exact products, times 1 / sqrt(hd); the softmax in f32 (the fast exp
 * polynomial, core/fastmath.h) with its sum over the f32 exponentials; the
 * exponentials rounded to bf16 for P v (f32 sums of exact products), and
 * 1 / sum applied to the hd outputs. This is what bf16 autocast does in
 * PyTorch's attention (bf16 operands, f32 softmax). Unmasked attention only:
 * the vision encoder's. */
#include "attention_cpu.h"

#include "log.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && (defined(__clang__) || __GNUC__ >= 10)
#define FAP_BF16_X86 1
#endif

void fap_attention_bf16_ws_free(fap_attention_bf16_ws *ws) {
  free(ws->buf);
  ws->buf = NULL;
  ws->cap = 0;
}

#ifndef FAP_BF16_X86

int fap_attention_bf16_usable(int hd) {
  (void)hd;
  return 0;
}

fap_status fap_attention_bf16(fap_attention_bf16_ws *ws, int threads, float *out, int ldo,
                              const float *q, int ldq, const float *k, int ldk, const float *v,
                              int ldv, int nq, int nk, int heads, int hd) {
  (void)ws, (void)threads, (void)out, (void)ldo, (void)q, (void)ldq, (void)k, (void)ldk;
  (void)v, (void)ldv, (void)nq, (void)nk, (void)heads, (void)hd;
  return fap_fail(FAP_ERR_UNSUPPORTED, "attention: no bf16 kernel in this build");
}

#else

#include <immintrin.h>

#define BF16 __attribute__((target("avx512f,avx512bf16")))

#define TILE_ROWS 12
#define PANEL 32
#define SCORE_TILE_FLOATS (40 * 1024) /* as attention_cpu.c: a task's scores in L2 */
#define MAX_BLOCK_ROWS 96

/* 16 lanes of fap_expf_fast (the polynomial of attention_avx512.c). */
BF16 static inline __m512 exp16(__m512 x) {
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

static inline __mmask16 tail_mask(int left) { return (__mmask16)((1u << left) - 1u); }

/* n floats (a multiple of 16) -> bf16, nearest even */
BF16 static void to_bf16(uint16_t *dst, const float *src, int n) {
  int j = 0;
  for (; j + 32 <= n; j += 32) {
    __m512bh b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + j + 16), _mm512_loadu_ps(src + j));
    _mm512_storeu_si512(dst + j, (__m512i)b);
  }
  if (j < n)
    _mm256_storeu_si256((__m256i *)(dst + j), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + j)));
}

/* a pair of bf16 as one 32-bit lane */
static inline int32_t pair_at(const uint16_t *p) {
  int32_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

/* s[0..nk) <- exp(s - max) as bf16 into p[0..nk), p[nk..end) <- 0; returns
 * 1 / sum of the f32 exponentials. */
BF16 static float softmax_bf16(const float *s, uint16_t *p, int nk, int end) {
  __m512 mx16 = _mm512_set1_ps(-INFINITY);
  int j = 0;
  for (; j + 16 <= nk; j += 16)
    mx16 = _mm512_max_ps(mx16, _mm512_loadu_ps(s + j));
  if (j < nk)
    mx16 = _mm512_mask_max_ps(mx16, tail_mask(nk - j), mx16,
                              _mm512_maskz_loadu_ps(tail_mask(nk - j), s + j));
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx16));
  __m512 sum16 = _mm512_setzero_ps();
  for (j = 0; j < end; j += 16) {
    const __mmask16 k = j + 16 <= nk ? 0xffff : j < nk ? tail_mask(nk - j) : 0;
    const __m512 e = _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j), m)));
    sum16 = _mm512_add_ps(sum16, e);
    _mm256_storeu_si256((__m256i *)(p + j), (__m256i)_mm512_cvtneps_pbh(e));
  }
  return 1.0f / _mm512_reduce_add_ps(sum16);
}

#define DP_ROW(acc0, acc1, row, b0, b1)                                                          \
  do {                                                                                           \
    const __m512bh x_ = (__m512bh)_mm512_set1_epi32(pair_at(row));                    \
    acc0 = _mm512_dpbf16_ps(acc0, x_, b0);                                                       \
    acc1 = _mm512_dpbf16_ps(acc1, x_, b1);                                                       \
  } while (0)

/* out[i][0..32) = f_i * sum_{t < n} a[i][t] b[t][0..32) for the m <= 12 rows
 * of a (bf16, lda elements apart; n even), b packed [n / 2][32][2]. A tile
 * of fewer rows repeats its last row and stores only its own. */
BF16 static void tile_bf16(int m, const uint16_t *a, int lda, const uint16_t *b, int n, float *out,
                           int ldo, const float *factor, int factor_step) {
  const uint16_t *r[TILE_ROWS];
  for (int i = 0; i < TILE_ROWS; i++)
    r[i] = a + (size_t)(i < m ? i : m - 1) * lda;
  const uint16_t *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3], *r4 = r[4], *r5 = r[5];
  const uint16_t *r6 = r[6], *r7 = r[7], *r8 = r[8], *r9 = r[9], *r10 = r[10], *r11 = r[11];
  __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0,
         a4 = a0, b4 = a0, a5 = a0, b5 = a0, a6 = a0, b6 = a0, a7 = a0, b7 = a0, a8 = a0, b8 = a0,
         a9 = a0, b9 = a0, a10 = a0, b10 = a0, a11 = a0, b11 = a0;
  for (int t = 0; t < n; t += 2) {
    const __m512bh p0 = (__m512bh)_mm512_load_si512(b + (size_t)t * PANEL),
                   p1 = (__m512bh)_mm512_load_si512(b + (size_t)t * PANEL + 32);
    DP_ROW(a0, b0, r0 + t, p0, p1);
    DP_ROW(a1, b1, r1 + t, p0, p1);
    DP_ROW(a2, b2, r2 + t, p0, p1);
    DP_ROW(a3, b3, r3 + t, p0, p1);
    DP_ROW(a4, b4, r4 + t, p0, p1);
    DP_ROW(a5, b5, r5 + t, p0, p1);
    DP_ROW(a6, b6, r6 + t, p0, p1);
    DP_ROW(a7, b7, r7 + t, p0, p1);
    DP_ROW(a8, b8, r8 + t, p0, p1);
    DP_ROW(a9, b9, r9 + t, p0, p1);
    DP_ROW(a10, b10, r10 + t, p0, p1);
    DP_ROW(a11, b11, r11 + t, p0, p1);
  }
  const __m512 lo[TILE_ROWS] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11};
  const __m512 hi[TILE_ROWS] = {b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11};
  for (int i = 0; i < m; i++) {
    const __m512 f = _mm512_set1_ps(factor[i * factor_step]);
    _mm512_storeu_ps(out + (size_t)i * ldo, _mm512_mul_ps(lo[i], f));
    _mm512_storeu_ps(out + (size_t)i * ldo + 16, _mm512_mul_ps(hi[i], f));
  }
}

#define DP_ROW1(acc, row, b0)                                                                    \
  acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_set1_epi32(pair_at(row)), b0)

/* The same, 16 columns wide: b packed [n / 2][16][2]. */
BF16 static void tile16_bf16(int m, const uint16_t *a, int lda, const uint16_t *b, int n,
                             float *out, int ldo, const float *factor, int factor_step) {
  const uint16_t *r[TILE_ROWS];
  for (int i = 0; i < TILE_ROWS; i++)
    r[i] = a + (size_t)(i < m ? i : m - 1) * lda;
  const uint16_t *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3], *r4 = r[4], *r5 = r[5];
  const uint16_t *r6 = r[6], *r7 = r[7], *r8 = r[8], *r9 = r[9], *r10 = r[10], *r11 = r[11];
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0,
         a8 = a0, a9 = a0, a10 = a0, a11 = a0;
  for (int t = 0; t < n; t += 2) {
    const __m512bh p0 = (__m512bh)_mm512_load_si512(b + (size_t)t * 16);
    DP_ROW1(a0, r0 + t, p0);
    DP_ROW1(a1, r1 + t, p0);
    DP_ROW1(a2, r2 + t, p0);
    DP_ROW1(a3, r3 + t, p0);
    DP_ROW1(a4, r4 + t, p0);
    DP_ROW1(a5, r5 + t, p0);
    DP_ROW1(a6, r6 + t, p0);
    DP_ROW1(a7, r7 + t, p0);
    DP_ROW1(a8, r8 + t, p0);
    DP_ROW1(a9, r9 + t, p0);
    DP_ROW1(a10, r10 + t, p0);
    DP_ROW1(a11, r11 + t, p0);
  }
  const __m512 acc[TILE_ROWS] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11};
  for (int i = 0; i < m; i++)
    _mm512_storeu_ps(out + (size_t)i * ldo,
                     _mm512_mul_ps(acc[i], _mm512_set1_ps(factor[i * factor_step])));
}

/* Packs key panel p of a head, [hd / 2][32][2], keys past nk zero: a
 * transpose of 32-bit pairs. */
static void pack_keys(uint16_t *kp, const float *k, int ldk, int p, int nk, int hd,
                      uint16_t *row) {
  for (int c = 0; c < PANEL; c++) {
    const int j = p * PANEL + c;
    if (j < nk)
      to_bf16(row, k + (size_t)j * ldk, hd);
    else
      memset(row, 0, (size_t)hd * sizeof *row);
    for (int d = 0; d < hd / 2; d++) {
      const int32_t two = pair_at(row + 2 * d);
      memcpy(kp + ((size_t)d * PANEL + c) * 2, &two, sizeof two);
    }
  }
}

/* Packs keys j0, j0 + 1 of a head's values into its column blocks of width
 * vw, [nk' / 2][vw][2]; keys past nk zero. */
static void pack_values(uint16_t *vp, size_t block_elems, const float *v, int ldv, int j0, int nk,
                        int hd, int vw, uint16_t *row0, uint16_t *row1) {
  if (j0 < nk)
    to_bf16(row0, v + (size_t)j0 * ldv, hd);
  else
    memset(row0, 0, (size_t)hd * sizeof *row0);
  if (j0 + 1 < nk)
    to_bf16(row1, v + (size_t)(j0 + 1) * ldv, hd);
  else
    memset(row1, 0, (size_t)hd * sizeof *row1);
  for (int b = 0; b < hd / vw; b++) {
    uint16_t *dst = vp + (size_t)b * block_elems + (size_t)(j0 / 2) * vw * 2;
    for (int c = 0; c < vw; c++) {
      dst[2 * c] = row0[b * vw + c];
      dst[2 * c + 1] = row1[b * vw + c];
    }
  }
}

int fap_attention_bf16_usable(int hd) {
  __builtin_cpu_init();
  return hd > 0 && hd % 16 == 0 && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bf16");
}

fap_status fap_attention_bf16(fap_attention_bf16_ws *ws, int threads, float *out, int ldo,
                              const float *q, int ldq, const float *k, int ldk, const float *v,
                              int ldv, int nq, int nk, int heads, int hd) {
  if (!fap_attention_bf16_usable(hd))
    return fap_fail(FAP_ERR_UNSUPPORTED, "attention: the bf16 kernel does not run here (head dim "
                    "%d)", hd);
  if (threads < 1)
    threads = 1;
  const int nkp = (nk + PANEL - 1) / PANEL * PANEL, panels = nkp / PANEL;
  int bq = SCORE_TILE_FLOATS / nkp / TILE_ROWS * TILE_ROWS;
  bq = bq < TILE_ROWS ? TILE_ROWS : bq > MAX_BLOCK_ROWS ? MAX_BLOCK_ROWS : bq;
  bq = bq < nq ? bq : nq;
  const int blocks = (nq + bq - 1) / bq;
  const int wide = hd % PANEL == 0, vw = wide ? PANEL : 16, vblocks = hd / vw;
  /* bytes: packed keys and values per head; per thread: f32 scores, bf16
   * probabilities, 1 / sums, bf16 query rows and two scratch rows */
  const size_t head_elems = (size_t)nkp * hd, block_elems = (size_t)nkp * vw;
  const size_t tile_bytes = (size_t)bq * nkp * 4 + (size_t)bq * nkp * 2 + (size_t)bq * 4 +
                            (size_t)bq * hd * 2 + 2 * (size_t)hd * 2;
  const size_t tile_stride = (tile_bytes + 63) / 64 * 64;
  const size_t need = 2 * (size_t)heads * head_elems * 2 + (size_t)threads * tile_stride;
  if (need > ws->cap) {
    free(ws->buf);
    ws->buf = NULL;
    ws->cap = 0;
    void *p = NULL;
    if (posix_memalign(&p, 64, need) != 0)
      return fap_fail(FAP_ERR_NO_MEMORY, "attention: out of memory for %d x %d keys x %d heads",
                      nq, nk, heads);
    ws->buf = p;
    ws->cap = need;
  }
  uint16_t *const kpack = ws->buf, *const vpack = kpack + (size_t)heads * head_elems;
  uint8_t *const tiles = (uint8_t *)(vpack + (size_t)heads * head_elems);
  const float scale = 1.0f / sqrtf((float)hd);

  _Pragma("omp parallel num_threads(threads)") {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
    uint8_t *const mine = tiles + (size_t)tid * tile_stride;
    float *const s = (float *)mine;
    uint16_t *const pr = (uint16_t *)(s + (size_t)bq * nkp);
    float *const inv = (float *)(pr + (size_t)bq * nkp);
    uint16_t *const qb = (uint16_t *)(inv + bq), *const row0 = qb + (size_t)bq * hd,
                    *const row1 = row0 + hd;
    _Pragma("omp for schedule(static)") for (int t = 0; t < heads * panels; t++) {
      const int h = t / panels, p = t % panels;
      pack_keys(kpack + h * head_elems + (size_t)p * hd * PANEL, k + h * hd, ldk, p, nk, hd, row0);
      for (int j = p * PANEL; j < (p + 1) * PANEL; j += 2)
        pack_values(vpack + h * head_elems, block_elems, v + h * hd, ldv, j, nk, hd, vw, row0,
                    row1);
    }
    _Pragma("omp for schedule(dynamic, 1)") for (int t = 0; t < heads * blocks; t++) {
      const int h = t / blocks, i0 = (t % blocks) * bq, m = nq - i0 < bq ? nq - i0 : bq;
      const uint16_t *kh = kpack + h * head_elems, *vh = vpack + h * head_elems;
      for (int i = 0; i < m; i++)
        to_bf16(qb + (size_t)i * hd, q + (size_t)(i0 + i) * ldq + h * hd, hd);
      for (int r = 0; r < m; r += TILE_ROWS) {
        const int mr = m - r < TILE_ROWS ? m - r : TILE_ROWS;
        for (int p = 0; p < panels; p++)
          tile_bf16(mr, qb + (size_t)r * hd, hd, kh + (size_t)p * hd * PANEL, hd,
                    s + (size_t)r * nkp + p * PANEL, nkp, &scale, 0);
      }
      for (int i = 0; i < m; i++)
        inv[i] = softmax_bf16(s + (size_t)i * nkp, pr + (size_t)i * nkp, nk, nkp);
      for (int r = 0; r < m; r += TILE_ROWS) {
        const int mr = m - r < TILE_ROWS ? m - r : TILE_ROWS;
        float *o = out + (size_t)(i0 + r) * ldo + h * hd;
        for (int b = 0; b < vblocks; b++) {
          if (wide)
            tile_bf16(mr, pr + (size_t)r * nkp, nkp, vh + (size_t)b * block_elems, nkp,
                      o + b * vw, ldo, inv + r, 1);
          else
            tile16_bf16(mr, pr + (size_t)r * nkp, nkp, vh + (size_t)b * block_elems, nkp,
                        o + b * vw, ldo, inv + r, 1);
        }
      }
    }
  }
  return FAP_OK;
}

#endif
