/* The detector's private state, shared by detector.c (creation, run, results),
 * vision.c and text.c (the two encoders). Every float* / int32_t* here lives in
 * the backend's address space unless its name ends in _host. */
#ifndef FAP_DETECTOR_INTERNAL_H
#define FAP_DETECTOR_INTERNAL_H

#include "backend.h"
#include "frame_program.h"
#include "log.h"
#include "model.h"


typedef struct {
  /* vision */
  float *image;  /* [3, S, S] */
  float *cols;   /* [N, 3 P P] */
  float *pos;    /* [N+1, Cv] resized positional embedding (constant) */
  float *x, *y;  /* [N+1, Cv] standard path, V-V side path */
  float *h;      /* [N+1, Cv] LayerNorm output */
  float *qkv;    /* [N+1, 3 Cv] */
  float *attn;   /* [N+1, Cv] */
  float *hidden; /* [N+1, 4 Cv] */
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
  float *scalars;       /* [4]: max1, max2, q */
  float *map_raw, *map, *blur_tmp; /* [S, S] */
  float *layer_up;      /* AnomalyCLIP: [L, S, S] up(A_l) */
  float *gauss;         /* [2 r + 1] */
  /* text */
  float *kv;            /* [Lt][K+1][2][Lmax, Ct] keys and values per prompt */
  float *text_init;     /* [K, R, Ct] per-frame rows before adding b (constant) */
  float *tx, *th, *tqkv, *tattn, *thidden; /* text scratch, rows = max(K R, Lmax) */
  float *tfeat_h;       /* [K+1, Ct] */
} fap_buffers;

struct fap_detector {
  fap_model *model;
  const fap_config *cfg;
  fap_backend backend;
  fap_backend_kind backend_kind;
  fap_net net;
  fap_buffers b;
  fap_frame_inputs program_in; /* what the backend's frame program reads (d->program) */
  fap_frame_keep program_keep;
  void *arena;
  size_t arena_bytes;

  int size, grid, n_patches; /* S, G, N */
  int batch;                 /* B */
  fap_precision precision;
  /* 1: the backend's own frame program runs the frames (ops->frames_run, for
   * FAPrompt); 0: run_one drives the op table */
  int program;
  float sigma;
  int radius;
  int text_rows;  /* R: per-frame rows per abnormality prompt (n_pos+1 .. end) */
  int text_lmax;  /* rows of each prompt's key/value cache */

  float *map_host; /* [B, S, S] results of the CPU path; [S, S] with frames_run */
  const float *last_map; /* the last frame's map (intermediate "map") */
  float *map_sum_host;   /* AnomalyCLIP with intermediates: last map * L */
  float scalars_host[4]; /* the last frame's max1, max2, q, score */
  uint8_t *rgb_host;     /* YUV frames converted for the CPU path */
  size_t rgb_bytes;
  int keep_intermediates;
  int has_run; /* a run completed: intermediates hold data */
  void *inter_host; /* host copies of the intermediates */
  int n_intermediates; /* of the model family's list */
  fap_log_sink log;  /* the owner's sink (fap_detector_options.log) */
};

/* detector.c: downloads the intermediates of the last run (keep_intermediates). */
fap_status fap_detector_fetch_intermediates(fap_detector *d);

/* vision.c: image already in b.image; fills b.tokens (one [N+1, E] block
 * per out layer) and b.global. */
void fap_vision_forward(fap_detector *d);

/* text.c */
/* Creation time: encodes all K+1 prompts, fills b.feats_static and, for
 * FAPrompt, the prefix of every key/value cache and b.text_init. */
fap_status fap_text_prepare(fap_detector *d);
/* Per frame: prompts with a + b (b in b.prior) -> b.feats_dynamic. */
void fap_text_forward_dynamic(fap_detector *d);

#endif
