/* The detector's private state, shared by detector.c (creation, run, results),
 * vision.c and text.c (the two encoders). Every float* / int32_t* here lives in
 * the backend's address space unless its name ends in _host. */
#ifndef FAP_DETECTOR_INTERNAL_H
#define FAP_DETECTOR_INTERNAL_H

#include "backend.h"
#include "log.h"
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

/* Buffers for one frame's description (SPEC.md names). Those the frame
 * writes are frame buffers (backend.h: one part per frame of a scope); the
 * model's constants (pos, gauss, kv, text_init, the static text features)
 * are shared. h, qkv, attn, attn_y, hidden and the text encoder's th,
 * tqkv, tattn, thidden are activations (the backend's activation type). */
typedef struct {
  /* vision */
  float *image;  /* [3, S, S] */
  float *cols;   /* [N, 3 P P] */
  float *pos;    /* [N+1, Cv] resized positional embedding (constant) */
  float *x, *y;  /* [N+1, Cv] standard path, V-V side path */
  float *h;      /* [N+1, Cv] LayerNorm output */
  float *qkv;    /* [N+1, 3 Cv] */
  float *attn;   /* [N+1, Cv] */
  float *attn_y; /* [N+1, Cv] the V-V path's attention */
  float *hidden; /* [N+1, 4 Cv] */
  float *post;   /* [N+1, Cv] LN_post(y), f32 (the features come from it) */
  float *tokens; /* [L, N+1, E] T per out layer (FAPrompt: L = 1) */
  float *global; /* [E] g */
  /* scoring */
  float *tokens_n; /* [L, N+1, E] normalised */
  float *global_n; /* [E] */
  float *map1, *map2;   /* [N]; AnomalyCLIP: map1 [L, N] = A_l, no map2 */
  int32_t *topk;        /* [M] */
  float *prior_in;      /* [M E] */
  float *prior_hidden;  /* [hidden] */
  float *prior;         /* [Ct] b */
  float *feats_static;  /* [K+1, E] */
  float *feats_dynamic; /* [K, E] */
  float *mean;          /* [E] */
  float *text_normal, *text_abnormal, *text_abnormal_dynamic; /* [E] */
  float *scalars;       /* [4]: max1, max2, q, score (output) */
  float *map_raw, *map, *blur_tmp; /* [S, S]; map: output */
  float *layer_up;      /* AnomalyCLIP: [L, S, S] up(A_l) */
  float *gauss;         /* [2 r + 1] */
  /* text */
  float *kv;            /* [Lt][K+1][2][Lmax, Ct] keys and values per prompt */
  float *text_init;     /* [K, R, Ct] per-frame rows before adding b (constant) */
  float *tx;            /* text rows, max(K R, Lmax) */
  float *th, *tqkv, *tattn, *thidden; /* per-frame text scratch, K R rows (activations) */
  float *prep_h, *prep_qkv, *prep_attn, *prep_hidden; /* the same at creation, f32 */
  float *tfeat_h;       /* [K+1, Ct] */
} fap_buffers;

struct fap_detector {
  fap_model *model;
  const fap_config *cfg;
  fap_backend backend;
  fap_backend_kind backend_kind;
  fap_net net;
  fap_buffers b;
  void *arena; /* the shared buffers */
  size_t arena_bytes;
  struct fap_frame_buffer {
    void *base;
    size_t frame_bytes, total_bytes;
  } frame_buffers[48];
  int n_frame_buffers;

  int size, grid, n_patches; /* S, G, N */
  int batch;                 /* B */
  int scope;                 /* frames per scope: B with FAP_CAP_BATCH, else 1 */
  fap_precision precision;
  float sigma;
  int radius;
  int text_rows;  /* R: per-frame rows per abnormality prompt (n_pos+1 .. end) */
  int text_lmax;  /* rows of each prompt's key/value cache */

  float *map_host; /* [B, S, S] results of one-frame scopes (no FAP_CAP_BATCH) */
  const float *last_map; /* the last frame's map (intermediate "map") */
  float *map_sum_host;   /* AnomalyCLIP with intermediates: last map * L */
  float scalars_host[4]; /* the last frame's max1, max2, q, score */
  int last_count;        /* frames of the last scope: its last frame holds the intermediates */
  int keep_intermediates;
  int has_run; /* a run completed: intermediates hold data */
  void *inter_host; /* host copies of the intermediates */
  int n_intermediates; /* of the model family's list */
  fap_log_sink log;  /* the owner's sink (fap_detector_options.log) */
};

/* detector.c: fap_detector_new with a seam for tests. A detector gets its
 * backend in one place (the kind and precision of the options, AUTO
 * resolved); right after, wrap (when not NULL) is called with it and may
 * replace it by a backend that forwards to it and owns it (released through
 * the wrapper's destroy). Tests record the op sequence a detector runs this
 * way (tests/gpu/backend_trace.c) on exactly the backend fap_detector_new
 * would have chosen; libfaprompt itself never wraps, and no wrapper is part
 * of it. A wrapper's failure fails the creation with its status. */
typedef fap_status (*fap_backend_wrap_fn)(fap_backend *backend, void *user_data);
fap_status fap_detector_new_wrapped(fap_model *model, const fap_detector_options *options,
                                    fap_backend_wrap_fn wrap, void *user_data,
                                    fap_detector **out);

/* vision.c: describes the encoder: b.image -> b.tokens (one [N+1, E] block
 * per out layer) and b.global. */
void fap_vision_forward(fap_detector *d);

/* text.c */
/* Creation time: encodes all K+1 prompts, fills b.feats_static and, for
 * FAPrompt, the prefix of every key/value cache and b.text_init. */
fap_status fap_text_prepare(fap_detector *d);
/* Per frame: prompts with a + b (b in b.prior) -> b.feats_dynamic. */
void fap_text_forward_dynamic(fap_detector *d);

#endif
