/* A vectorisable expf for the CPU fast path (softmax, QuickGELU).
 *
 * libm's expf is a call per element and keeps those loops scalar; this one is
 * inline arithmetic the compiler turns into SIMD. Cody-Waite range reduction
 * x = n ln2 + r and the Cephes degree-6 polynomial for e^r: max relative error
 * ~2 ulp (1.2e-7) over the range used, far below the 1e-4 parity contract; the
 * reference loops keep libm's expf. Inputs are clamped to [-87.3, 88], where
 * the result is still a normal float. */
#ifndef FAP_FASTMATH_H
#define FAP_FASTMATH_H

#include <stdint.h>
#include <string.h>

/* Hot elementwise kernels are compiled for AVX-512, AVX2+FMA and the baseline
 * and picked at load time (ifunc), so one binary runs everywhere. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FAP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FAP_CLONES
#endif

static inline float fap_expf_fast(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.0f ? 88.0f : x;
  /* n = round(x / ln2) via the 1.5 * 2^23 trick (no rounding instruction needed) */
  const float magic = 12582912.0f;
  float n = (x * 1.44269504088896341f + magic) - magic;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

#endif
