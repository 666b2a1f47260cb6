/* The loaded model: configuration plus every weight widened to f32 in one
 * host allocation. Internal to core/; the public handle is fap_model.
 *
 * Except the vision blocks' linear weights (in_proj, out_proj, c_fc, c_proj:
 * 98 % of the vision encoder's parameters, 1.2 GB in f32 for ViT-L/14): they
 * are checked at load and widened into their place in storage only when a
 * detector asks for them in f32 (fap_model_need_weights). A backend that
 * keeps its own reduced copy (bf16, int8) reads them once through
 * fap_model_read_weights instead, and their f32 pages are never touched: a
 * process running bf16 holds 2 bytes per weight, not 6. The file stays
 * open for that (a file replaced by a rename stays readable; one written
 * over in place is refused, safetensors.h). */
#ifndef FAP_MODEL_H
#define FAP_MODEL_H

#include "fap.h"
#include "safetensors.h"

#include <glib.h>

/* One pre-LN transformer block (vision or text), CLIP layout. */
typedef struct {
  const float *ln1_w, *ln1_b;
  const float *in_w, *in_b;   /* [3C, C], [3C] */
  const float *out_w, *out_b; /* [C, C], [C] */
  const float *ln2_w, *ln2_b;
  const float *fc_w, *fc_b;     /* [4C, C], [4C] */
  const float *cproj_w, *cproj_b; /* [C, 4C], [C] */
} fap_block;

typedef struct {
  float *slot;                 /* its place in storage */
  size_t count;
  const fap_st_tensor *tensor; /* in file */
  int resident;                /* slot holds the values (under lazy_lock) */
} fap_lazy_tensor;

struct fap_model {
  int refcount; /* atomic */
  fap_config cfg;
  char *path;
  double load_seconds;
  int64_t params;

  float *storage; /* every tensor below points into it */
  size_t storage_floats;
  fap_lazy_tensor *lazy; /* storage order */
  size_t n_lazy;
  GMutex lazy_lock;
  fap_safetensors *file; /* open while lazy tensors exist */

  /* vision */
  const float *conv1;     /* [Cv, 3, P, P] */
  const float *class_emb; /* [Cv] */
  const float *vpos;      /* [G0*G0 + 1, Cv] */
  const float *ln_pre_w, *ln_pre_b, *ln_post_w, *ln_post_b;
  const float *vproj; /* [Cv, E] */
  fap_block *vblocks; /* [Lv] */

  /* text */
  const float *tpos; /* [context_length, Ct] */
  const float *ln_final_w, *ln_final_b;
  const float *tproj; /* [Ct, E] */
  fap_block *tblocks; /* [Lt] */

  /* prompt learner */
  const float *ctx_pos;    /* [n_pos, Ct] */
  const float *ctx_neg;    /* [K, n_neg, Ct] */
  const float *prefix_pos; /* [1, Ct] */
  const float *prefix_neg; /* [K, 1, Ct] */
  const float *suffix_pos; /* [ctx - 1 - n_pos, Ct] */
  const float *suffix_neg; /* [K, ctx - 1 - n_pos - n_neg, Ct] */
  const float **deep;      /* [depth - 1] each [t, Ct], already rounded to f16 */
  const float *prior1_w, *prior1_b; /* [hidden, M*E], [hidden] */
  const float *prior2_w, *prior2_b; /* [Ct, hidden], [Ct] */
};

/* Parses a calibration sidecar's text (see model.c); thresholds absent from it
 * come back as -1. label names it in messages. */
fap_status fap_calibration_parse(const char *text, size_t length, const char *label,
                                 float *image_threshold, float *pixel_threshold);

/* Makes [w, w + count) (inside one tensor) hold its f32 values, widening a
 * lazy tensor from the file on first use; thread-safe. Every f32 reader of
 * a vision linear weight calls it first (the detector does, at creation). */
fap_status fap_model_need_weights(fap_model *m, const float *w, size_t count);
/* Copies the f32 values of [w, w + count) (inside one tensor) into dst, from
 * storage when resident, else from the file (nothing becomes resident). */
fap_status fap_model_read_weights(const fap_model *m, const float *w, size_t count, float *dst);
/* Weights held in f32 now (the parameter count less the lazy tensors not yet widened). */
size_t fap_model_resident_floats(const fap_model *m);

#endif
