/* Fused multi-head attention for the CPU fast path (core/attention_cpu.c).
 *
 * Same contract as the backend's attention op (backend.h): heads of dim hd
 * side by side in each row, out[i] = softmax(q[i] k^T / sqrt(hd)) v per head,
 * q_pos0 < 0 no mask, otherwise query i sits at q_pos0 + i and sees keys
 * j <= q_pos0 + i. Two kernels, picked at run time where hd is a multiple
 * of 16: AVX-512 (core/attention_avx512.c) where the CPU has AVX-512F, else
 * AVX2 + FMA; the backend asks fap_attention_kernel_for first and keeps its
 * BLAS path for the rest. */
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

typedef enum {
  FAP_ATTENTION_AUTO = 0, /* the fastest kernel that runs */
  FAP_ATTENTION_BLAS,     /* no fused kernel: the backend's BLAS path */
  FAP_ATTENTION_AVX2,
  FAP_ATTENTION_AVX512,
} fap_attention_kernel;

/* The kernel FAP_CPU_ATTENTION names (auto, blas, avx2, avx512; NULL or
 * empty: auto), for A/B runs. A name it does not know, or a kernel this CPU
 * cannot run, is logged once and gives FAP_ATTENTION_AUTO. */
fap_attention_kernel fap_attention_kernel_named(const char *name);

/* The kernel that runs for head dim hd: `preferred` where it can (this CPU,
 * this hd), otherwise the automatic choice; FAP_ATTENTION_BLAS where no
 * fused kernel runs, or where `preferred` is FAP_ATTENTION_BLAS. */
fap_attention_kernel fap_attention_kernel_for(fap_attention_kernel preferred, int hd);

/* The automatic kernel for hd is not FAP_ATTENTION_BLAS. */
int fap_attention_fused_usable(int hd);

/* Runs `kernel` (FAP_ATTENTION_AUTO: the automatic choice for hd), which
 * fap_attention_kernel_for must have given for this hd: FAP_ERR_UNSUPPORTED
 * otherwise. FAP_ERR_NO_MEMORY (logged) when the workspace cannot grow; out
 * untouched then. */
fap_status fap_attention_fused_with(fap_attention_kernel kernel, fap_attention_ws *ws,
                                    int threads, float *out, int ldo, const float *q, int ldq,
                                    const float *k, int ldk, const float *v, int ldv, int nq,
                                    int nk, int heads, int hd, int q_pos0);

/* fap_attention_fused_with the automatic kernel. */
fap_status fap_attention_fused(fap_attention_ws *ws, int threads, float *out, int ldo,
                               const float *q, int ldq, const float *k, int ldk, const float *v,
                               int ldv, int nq, int nk, int heads, int hd, int q_pos0);

void fap_attention_ws_free(fap_attention_ws *ws);

/* ---- bf16 products (core/attention_bf16.c) ---- */

/* Its packed keys / values and per-thread tiles, grown like fap_attention_ws. */
typedef struct {
  void *buf;
  size_t cap; /* bytes */
} fap_attention_bf16_ws;

/* 1 where this CPU has AVX512-BF16 and hd is a multiple of 16. */
int fap_attention_bf16_usable(int hd);

/* Unmasked attention (the vision encoder's) with q, k, v and the
 * probabilities rounded to bf16, f32 sums and softmax (attention_bf16.c
 * says exactly what it computes): the attention of the CPU backend's bf16
 * precision. FAP_ERR_UNSUPPORTED where fap_attention_bf16_usable is 0,
 * FAP_ERR_NO_MEMORY (logged) when the workspace cannot grow. */
fap_status fap_attention_bf16(fap_attention_bf16_ws *ws, int threads, float *out, int ldo,
                              const float *q, int ldq, const float *k, int ldk, const float *v,
                              int ldv, int nq, int nk, int heads, int hd);

void fap_attention_bf16_ws_free(fap_attention_bf16_ws *ws);

#endif
