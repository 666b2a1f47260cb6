/* Reduced-precision linear layers for the CPU backend through oneDNN's
 * matmul (core/linear_dnnl.c): bf16 (weights and activations rounded to
 * bf16, f32 accumulation) and int8 (weights per output channel, activations
 * per row, both symmetric, s32 accumulation). oneDNN picks the kernels for
 * the CPU at run time; fap_dnnl_new says whether this CPU has units that
 * make the mode faster than f32 and refuses it otherwise. */
#ifndef FAP_LINEAR_DNNL_H
#define FAP_LINEAR_DNNL_H

#include "backend.h"
#include "fap.h"

typedef struct fap_dnnl fap_dnnl;

/* 1 when the build has oneDNN. */
int fap_dnnl_built(void);

/* FAP_ERR_UNSUPPORTED with *why set (a static sentence) when the CPU or the
 * build cannot run precision fast; nothing is logged then, the caller decides.
 * FAP_CPU_BF16_EMULATE=1 runs bf16 on CPUs without bf16 units by rounding weights and
 * activations to bf16 and multiplying in f32 with OpenBLAS: the numbers of
 * a bf16 unit (exact products, f32 sums), not its speed; it is how bf16's
 * error is measured on CPUs without one (tests, faprompt-bench). */
fap_status fap_dnnl_new(fap_precision precision, int threads, fap_dnnl **out, const char **why);
void fap_dnnl_free(fap_dnnl *dnnl);

/* 1 when this CPU runs oneDNN's bf16 matmul on bf16 units (AVX512-BF16 or
 * AMX): where precision auto means bf16. 0 without oneDNN. */
int fap_dnnl_has_bf16_units(void);

/* Whether layers of this role run reduced: bf16 both roles; int8 only
 * FAP_WEIGHT_READS_LN (qkv, MLP c_fc: 58 % of the vision encoder's linear
 * FLOPs). out_proj and c_proj stay f32 in int8: their inputs (attention
 * outputs, QuickGELU outputs) quantise worst per row and their error lands
 * in the residual stream unfiltered (measured: docs/BENCHMARKS.md). */
int fap_dnnl_takes(const fap_dnnl *dnnl, int role);

/* The backend's linear op: y = [y +] x W^T + b, W [out, in] f32 host weights
 * (the key of the converted copy, made on the first call with that weight
 * by any fap_dnnl of the process, usually the first detector's first frame;
 * a primitive per row count). Errors are logged. */
fap_status fap_dnnl_linear(fap_dnnl *dnnl, float *y, int ldy, const float *x, int ldx,
                           const float *w, const float *b, int rows, int in, int out,
                           int accumulate);

/* Where the values of the weights come from when they are converted (the
 * detector's reader of the model's lazy weights: model.h); without one,
 * they are read at the weights' pointer. */
void fap_dnnl_set_reader(fap_dnnl *dnnl, const fap_weight_reader *reader);

/* Bytes of converted weights the process holds (shared by every fap_dnnl:
 * one copy per weight view, form and layout, whatever the number of
 * detectors and row counts), for tests and benchmarks. */
size_t fap_dnnl_shared_bytes(void);

/* What the instruction set oneDNN runs on is called (for logs and benchmarks). */
const char *fap_dnnl_isa_name(void);

#endif
