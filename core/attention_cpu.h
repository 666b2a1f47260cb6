/* Fused multi-head attention for the CPU fast path (core/attention_cpu.c).
 *
 * Same contract as the backend's attention op (backend.h): heads of dim hd
 * side by side in each row, out[i] = softmax(q[i] k^T / sqrt(hd)) v per head,
 * q_pos0 < 0 no mask, otherwise query i sits at q_pos0 + i and sees keys
 * j <= q_pos0 + i. Runs where the CPU has AVX2 + FMA and hd is a multiple of
 * 16; the backend asks fap_attention_fused_usable first and keeps its BLAS
 * path for the rest. */
#ifndef FAP_ATTENTION_CPU_H
#define FAP_ATTENTION_CPU_H

#include "fap.h"

#include <stddef.h>

/* Packed keys / values and per-thread score tiles, grown to the largest call
 * (a detector's shapes are fixed, so on its first frame only). */
typedef struct {
  float *buf;
  size_t cap; /* floats */
} fap_attention_ws;

int fap_attention_fused_usable(int hd);

/* FAP_ERR_NO_MEMORY (logged) when the workspace cannot grow; out untouched then. */
fap_status fap_attention_fused(fap_attention_ws *ws, int threads, float *out, int ldo,
                               const float *q, int ldq, const float *k, int ldk, const float *v,
                               int ldv, int nq, int nk, int heads, int hd, int q_pos0);

void fap_attention_ws_free(fap_attention_ws *ws);

#endif
