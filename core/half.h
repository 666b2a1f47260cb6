/* IEEE half and bfloat16 conversions (host side, used at load time only). */
#ifndef FAP_HALF_H
#define FAP_HALF_H

#include <stddef.h>
#include <stdint.h>

float fap_f16_to_f32(uint16_t h);
uint16_t fap_f32_to_f16(float f); /* round to nearest even, overflow to inf */
float fap_bf16_to_f32(uint16_t b);
/* f -> nearest f16 -> f32, as torch's x.half().float() */
float fap_round_f16(float f);

/* Widen n little-endian elements at src (any alignment) into dst. */
void fap_widen_f16(float *dst, const void *src, size_t n);
void fap_widen_bf16(float *dst, const void *src, size_t n);

#endif
