/* The loaded model: configuration plus every weight widened to f32 in one
 * host allocation. Internal to core/; the public handle is fap_model. */
#ifndef FAP_MODEL_H
#define FAP_MODEL_H

#include "fap.h"

/* One pre-LN transformer block (vision or text), CLIP layout. */
typedef struct {
  const float *ln1_w, *ln1_b;
  const float *in_w, *in_b;   /* [3C, C], [3C] */
  const float *out_w, *out_b; /* [C, C], [C] */
  const float *ln2_w, *ln2_b;
  const float *fc_w, *fc_b;     /* [4C, C], [4C] */
  const float *cproj_w, *cproj_b; /* [C, 4C], [C] */
} fap_block;

struct fap_model {
  int refcount; /* atomic */
  fap_config cfg;
  char *path;
  double load_seconds;
  int64_t params;

  float *storage; /* every tensor below points into it */
  size_t storage_floats;

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

#endif
