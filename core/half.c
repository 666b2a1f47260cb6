#include "half.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

float fap_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  if (exp == 0x1f) /* inf / nan */
    return bits_f32(sign | 0x7f800000u | (man << 13));
  if (exp == 0) { /* zero / subnormal: man * 2^-24 */
    float v = (float)man * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t fap_f32_to_f16(float f) {
  uint32_t u = f32_bits(f);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
  uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) /* inf or nan (keep nan quiet) */
    return sign | (abs > 0x7f800000u ? 0x7e00 : 0x7c00);
  if (abs >= 0x477ff000u) /* rounds to >= 65520: overflow */
    return sign | 0x7c00;
  if (abs < 0x38800000u) { /* result is subnormal (or zero) in f16 */
    /* value / 2^-24, rounded to nearest even by the FPU's default mode */
    float v = bits_f32(abs) * 16777216.0f;
    return sign | (uint16_t)nearbyintf(v);
  }
  /* normal: rebias exponent, round mantissa 23 -> 10 bits to nearest even */
  uint32_t r = abs + 0x0fffu + ((abs >> 13) & 1u) - (112u << 23);
  return sign | (uint16_t)(r >> 13);
}

float fap_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

float fap_round_f16(float f) { return fap_f16_to_f32(fap_f32_to_f16(f)); }

/* 65536-entry table: widening a 0.9 GB f16 model is then a memory-bound gather. */
static float f16_table[65536];
static pthread_once_t f16_table_once = PTHREAD_ONCE_INIT;

static void f16_table_init(void) {
  for (uint32_t i = 0; i < 65536; i++)
    f16_table[i] = fap_f16_to_f32((uint16_t)i);
}

void fap_widen_f16(float *dst, const void *src, size_t n) {
  pthread_once(&f16_table_once, f16_table_init);
  const uint8_t *s = src;
#pragma omp parallel for schedule(static) if (n > (1u << 20))
  for (size_t i = 0; i < n; i++)
    dst[i] = f16_table[(uint16_t)(s[2 * i] | (s[2 * i + 1] << 8))];
}

void fap_widen_bf16(float *dst, const void *src, size_t n) {
  const uint8_t *s = src;
#pragma omp parallel for schedule(static) if (n > (1u << 20))
  for (size_t i = 0; i < n; i++)
    dst[i] = bits_f32((uint32_t)(s[2 * i] | (s[2 * i + 1] << 8)) << 16);
}
