/* The boundary between the detector and a backend's own frame program
 * (FAP_CAP_FRAME_PROGRAM: the CUDA backend's batched, graph-captured
 * FAPrompt frame, kernels/cuda_frames.c). Everything such a program may read
 * of the detector is in fap_frame_inputs, handed over once at creation; what
 * it gives back is in fap_result and the scalars of frames_run. It never sees
 * struct fap_detector. */
#ifndef FAP_FRAME_PROGRAM_H
#define FAP_FRAME_PROGRAM_H

#include "backend.h"
#include "model.h"

/* Model weights as the backend sees them (import_weights handles; CPU: the
 * model's own storage). */
typedef struct {
  const float *conv1, *class_emb, *ln_pre_w, *ln_pre_b, *ln_post_w, *ln_post_b, *vproj;
  fap_block *vblocks;
  const float *ln_final_w, *ln_final_b, *tproj;
  fap_block *tblocks;
  const float **deep;
  const float *prior1_w, *prior1_b, *prior2_w, *prior2_b;
} fap_net;

/* Where the last frame's intermediates go (backend memory, the detector's
 * buffers), for fap_detector_intermediate; NULL-free when kept. */
typedef struct {
  float *image, *tokens, *global, *map1, *map2, *prior, *feats_dynamic, *text_abnormal_dynamic;
  float *scalars, *map_raw;
  int32_t *topk;
} fap_frame_keep;

/* What depends only on the model and the detector's options, computed by the
 * detector through the op table before frames_prepare (backend memory unless
 * named _host). */
struct fap_frame_inputs {
  const fap_config *cfg;
  int batch, size, grid, n_patches; /* B, S, G, N */
  int text_rows;                    /* per-frame rows of each abnormality prompt */
  int text_lmax;                    /* rows of each prompt's key/value cache */
  int radius;                       /* of the Gaussian; 0: no smoothing */
  const fap_net *net;
  const float *conv1_host; /* [Cv, 3 P P] f32: the patch embedding, for its own layout */
  const float *pos;        /* [N+1, Cv] resized positional embedding */
  const float *kv;         /* key/value cache, layout of core/text.c */
  const float *text_init;  /* [K, R, Ct] per-frame text rows before the prior */
  const float *text_normal, *text_abnormal; /* [E] t_n, static t_a */
  const float *gauss;      /* [2 radius + 1] */
  const fap_frame_keep *keep; /* NULL: intermediates not kept */
};

#endif
