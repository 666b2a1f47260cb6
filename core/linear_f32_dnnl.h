/* f32 linear layers of the CPU backend through oneDNN's matmul
 * (core/linear_f32_dnnl.c), and the choice between it and OpenBLAS's SGEMM.
 * Same numbers format as OpenBLAS (f32 products, f32 sums), a different
 * summation order: results agree to rounding, not bit for bit, so the choice
 * is made from the CPU alone and never from a timing, and every process on
 * the same CPU (and environment) computes the same bits. */
#ifndef FAP_LINEAR_F32_DNNL_H
#define FAP_LINEAR_F32_DNNL_H

#include "fap.h"

typedef enum {
  FAP_GEMM_OPENBLAS, /* cblas_sgemm (or the reference loops in a build without OpenBLAS) */
  FAP_GEMM_DNNL,     /* oneDNN's f32 matmul, fap_dnnl_f32_linear */
} fap_cpu_gemm;

/* The GEMM the f32 linear layers of this process run on: oneDNN where it has
 * AVX-512 kernels and OpenBLAS runs narrower ones (the measurement behind the
 * rule is in core/linear_f32_dnnl.c), OpenBLAS everywhere else.
 * FAP_CPU_GEMM=openblas|dnnl overrides it (A/B runs, tests); a value this
 * build cannot run is ignored with a warning. *why: a static sentence saying
 * what decided (for the log). */
fap_cpu_gemm fap_cpu_gemm_choose(const char **why);

typedef struct fap_dnnl_f32 fap_dnnl_f32;

/* NULL with *out when the build has no oneDNN or its CPU engine fails (logged). */
fap_status fap_dnnl_f32_new(int threads, fap_dnnl_f32 **out);
void fap_dnnl_f32_free(fap_dnnl_f32 *dnnl);

/* The backend's linear op: y = [y +] x W^T + b, W [out, in] row-major f32,
 * read where it is (no copy of any weight). One primitive per shape (rows,
 * in, out, leading dimensions, bias, accumulate), made on the first call with
 * it: the detector's first frame; nothing is allocated after that. Called
 * inside an OpenMP parallel region, oneDNN runs on the calling thread alone.
 * Errors are logged. */
fap_status fap_dnnl_f32_linear(fap_dnnl_f32 *dnnl, float *y, int ldy, const float *x, int ldx,
                               const float *w, const float *b, int rows, int in, int out,
                               int accumulate);

#endif
