/* The CUDA backend's per-frame program: SPEC.md sections 1, 2 and 4 for a
 * batch of B frames, on the device from the upload of the frames to the
 * download of maps and scores, enqueued once per frame geometry, captured in
 * a CUDA graph and replayed.
 *
 *   upload frames (one copy from pinned staging) -> resize + normalise
 *   -> patch rows -> vision encoder: activations in the precision type
 *      (f16 / bf16), residual streams x, y in f32, matrix products through
 *      cuBLASLt (bias epilogue, residual added by beta = 1), flash attention
 *      with both paths of a dual layer in one pass
 *   -> tokens, global feature -> A1, max, top-M, prior MLP
 *   -> text encoder on the K abnormality prompts' per-frame rows, keys and
 *      values of the fixed positions from the detector's cache
 *   -> A2, q, score -> upsampled, smoothed maps [-> heatmap drawn into the
 *      frames] -> download (one copy to pinned memory).
 *
 * Everything that depends only on the model (static text features, key/
 * value prefix cache, positional embedding, Gaussian) was computed at
 * creation through the op table; the detector hands it over once as
 * fap_frame_inputs (core/frame_program.h), all this file sees of it. */
#include "backend_cuda.h"

#include "frame_program.h"
#include "half.h"
#include "log.h"
#include "pixel.h"
#include "resample.h"
#include "score.h"

#include <glib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ALIGN256(x) (((x) + 255) & ~(size_t)255)

/* ---- the program ------------------------------------------------------------------------- */

typedef struct {
  const float *ln1_w, *ln1_b, *ln2_w, *ln2_b, *out_b, *cproj_b;
  const void *in_w, *in_b, *out_w, *fc_w, *fc_b, *cproj_w; /* precision type */
} dev_block;

enum { EV_START, EV_PRE, EV_VISION, EV_MAP1, EV_PRIOR, EV_TEXT, EV_MAP2, EV_END, EV_COUNT };

typedef struct cuda_frames {
  const fap_frame_inputs *in;
  int batch, size, grid, n, rows, patch, kp;
  int cv, heads, hd, layers, dual_start, e, ct, theads, tlayers, k, r, pos0, m, hidden;
  fap_kdtype t;
  size_t ts; /* bytes of the precision type */

  /* device arena */
  void *arena;
  size_t arena_bytes;
  float *image, *x, *y, *tokens, *tokens_n, *global, *global_n, *map1, *map2;
  void *cols, *h, *qkv, *attn_x, *attn_y, *hidden_buf;
  int32_t *topk;
  float *prior_in, *prior_hidden, *prior, *tx, *feats, *mean, *t_a;
  void *th, *tqkv, *tattn, *thidden;
  float *map_raw, *blur_tmp;

  /* weights (device) */
  void *conv1; /* [Cv, kp], zero-padded */
  const float *cls, *ln_pre_w, *ln_pre_b, *ln_post_w, *ln_post_b, *ln_final_w, *ln_final_b;
  const float *vproj32, *tproj32; /* the final projections stay f32 */
  const void *prior1_w, *prior2_w;
  const float *prior1_b, *prior2_b;
  dev_block *vb, *tb;

  /* io: [scalars B x 4 | maps B x S x S | blend params | frames] */
  cuda_frameio io;
  size_t maps_offset, params_offset, results_bytes;

  /* the captured sequence */
  fap_graph graph;
  int graph_count, graph_blend, graphs_off;
  fap_event ev[EV_COUNT];
  int use_flash;
} cuda_frames;

static size_t plan_at(size_t *at, size_t bytes) {
  size_t off = *at;
  *at += ALIGN256(bytes);
  return off;
}

void fap_cuda_frames_free(cuda_ctx *c) {
  cuda_frames *p = c->frames;
  if (!p)
    return;
  if (p->graph)
    fap_rt_graph_free(p->graph);
  for (int i = 0; i < EV_COUNT; i++)
    if (p->ev[i])
      fap_rt_event_free(p->ev[i]);
  fap_cuda_frameio_free(&p->io);
  fap_rt_free(p->arena);
  fap_rt_free(p->conv1);
  free(p->vb);
  free(p->tb);
  free(p);
  c->frames = NULL;
}

static void resolve_block(cuda_ctx *c, dev_block *dst, const fap_block *src) {
  dst->ln1_w = fap_cuda_weight_f32(c, src->ln1_w);
  dst->ln1_b = fap_cuda_weight_f32(c, src->ln1_b);
  dst->ln2_w = fap_cuda_weight_f32(c, src->ln2_w);
  dst->ln2_b = fap_cuda_weight_f32(c, src->ln2_b);
  dst->out_b = fap_cuda_weight_f32(c, src->out_b);
  dst->cproj_b = fap_cuda_weight_f32(c, src->cproj_b);
  dst->in_w = fap_cuda_weight_t(c, src->in_w);
  dst->in_b = fap_cuda_weight_t(c, src->in_b);
  dst->out_w = fap_cuda_weight_t(c, src->out_w);
  dst->fc_w = fap_cuda_weight_t(c, src->fc_w);
  dst->fc_b = fap_cuda_weight_t(c, src->fc_b);
  dst->cproj_w = fap_cuda_weight_t(c, src->cproj_w);
}

static fap_status upload_conv1(cuda_ctx *c, cuda_frames *p) {
  const size_t cols = 3 * (size_t)p->patch * p->patch, n = (size_t)p->cv * p->kp;
  uint16_t *host = calloc(n, 2);
  float *row = malloc(p->kp * sizeof(float));
  int rc = host && row ? fap_rt_malloc(&p->conv1, n * 2) : FAP_RT_ENOMEM;
  if (!rc) {
    for (int o = 0; o < p->cv; o++) {
      memset(row, 0, p->kp * sizeof(float));
      memcpy(row, p->in->conv1_host + o * cols, cols * sizeof(float));
      for (int i = 0; i < p->kp; i++) {
        float f = row[i];
        uint16_t v;
        if (p->t == FAP_K_BF16) {
          uint32_t x;
          memcpy(&x, &f, 4);
          x += 0x7fff + ((x >> 16) & 1);
          v = (uint16_t)(x >> 16);
        } else {
          v = fap_f32_to_f16(f);
        }
        host[(size_t)o * p->kp + i] = v;
      }
    }
    rc = fap_rt_h2d(p->conv1, host, n * 2, c->stream);
    if (!rc)
      rc = fap_rt_stream_sync(c->stream);
  }
  free(host);
  free(row);
  if (rc) {
    fap_cuda_fail(c, rc, "patch embedding weights");
    return c->status;
  }
  c->weight_bytes += n * 2;
  return FAP_OK;
}

fap_status fap_cuda_frames_prepare(void *ctx, const fap_frame_inputs *in) {
  cuda_ctx *c = ctx;
  const fap_config *cfg = in->cfg;
  cuda_frames *p = calloc(1, sizeof *p);
  if (!p)
    return fap_fail(FAP_ERR_NO_MEMORY, "cuda backend: out of memory");
  c->frames = p;
  p->in = in;
  p->batch = in->batch;
  p->size = in->size;
  p->grid = in->grid;
  p->n = in->n_patches;
  p->rows = p->n + 1;
  p->patch = cfg->patch_size;
  p->kp = (3 * p->patch * p->patch + 7) / 8 * 8; /* 16-byte rows for the tensor cores */
  p->cv = cfg->vision_width;
  p->heads = cfg->vision_heads;
  p->hd = p->cv / p->heads;
  p->layers = cfg->vision_layers;
  p->dual_start = cfg->dual_start;
  p->e = cfg->embed_dim;
  p->ct = cfg->text_width;
  p->theads = cfg->text_heads;
  p->tlayers = cfg->text_layers;
  p->k = cfg->n_prompts;
  p->r = in->text_rows;
  p->pos0 = cfg->n_pos + 1;
  p->m = cfg->top_m;
  p->hidden = cfg->prior_hidden;
  p->t = c->t;
  p->ts = 2;
  p->use_flash = p->hd % 16 == 0 && p->hd >= 16 && p->hd <= 128 && (p->hd & (p->hd - 1)) == 0;
  const char *g = getenv("FAP_CUDA_GRAPHS");
  p->graphs_off = g && strcmp(g, "0") == 0;

  /* arena */
  const size_t B = (size_t)p->batch, R = B * p->rows, s2 = (size_t)p->size * p->size;
  const size_t TR = B * p->k * p->r, f4 = sizeof(float), ts = p->ts;
  size_t at = 0;
  size_t o_image = plan_at(&at, B * 3 * s2 * f4), o_cols = plan_at(&at, B * p->n * p->kp * ts);
  size_t o_x = plan_at(&at, R * p->cv * f4), o_y = plan_at(&at, R * p->cv * f4);
  size_t o_h = plan_at(&at, R * p->cv * ts), o_qkv = plan_at(&at, R * 3 * p->cv * ts);
  size_t o_ax = plan_at(&at, R * p->cv * ts), o_ay = plan_at(&at, R * p->cv * ts);
  size_t o_hid = plan_at(&at, R * 4 * p->cv * ts);
  size_t o_tok = plan_at(&at, R * p->e * f4), o_tokn = plan_at(&at, R * p->e * f4);
  size_t o_gl = plan_at(&at, B * p->e * f4);
  size_t o_gln = plan_at(&at, B * p->e * f4);
  size_t o_m1 = plan_at(&at, B * p->n * f4), o_m2 = plan_at(&at, B * p->n * f4);
  size_t o_topk = plan_at(&at, B * p->m * 4), o_pin = plan_at(&at, B * p->m * p->e * f4);
  size_t o_phid = plan_at(&at, B * p->hidden * f4), o_prior = plan_at(&at, B * p->ct * f4);
  size_t o_tx = plan_at(&at, TR * p->ct * f4), o_th = plan_at(&at, TR * p->ct * ts);
  size_t o_tqkv = plan_at(&at, TR * 3 * p->ct * ts), o_tatt = plan_at(&at, TR * p->ct * ts);
  size_t o_thid = plan_at(&at, TR * 4 * p->ct * ts);
  size_t o_feats = plan_at(&at, B * p->k * p->e * f4), o_mean = plan_at(&at, B * p->e * f4);
  size_t o_ta = plan_at(&at, B * p->e * f4);
  size_t o_raw = plan_at(&at, B * s2 * f4), o_blur = plan_at(&at, B * s2 * f4);
  p->arena_bytes = at;
  int rc = fap_rt_malloc(&p->arena, at);
  if (rc) {
    size_t free_b = 0, total_b = 0;
    fap_rt_mem_info(&free_b, &total_b);
    return fap_fail(rc == FAP_RT_ENOMEM ? FAP_ERR_NO_MEMORY : FAP_ERR_BACKEND,
                    "CUDA device %d: cannot allocate the %zu MiB activation arena for batch %d "
                    "at image size %d (%zu of %zu MiB free): %s; use a smaller batch or image "
                    "size",
                    c->device, at >> 20, p->batch, p->size, free_b >> 20, total_b >> 20,
                    fap_rt_error());
  }
  char *a = p->arena;
  p->image = (float *)(a + o_image);
  p->cols = a + o_cols;
  p->x = (float *)(a + o_x);
  p->y = (float *)(a + o_y);
  p->h = a + o_h;
  p->qkv = a + o_qkv;
  p->attn_x = a + o_ax;
  p->attn_y = a + o_ay;
  p->hidden_buf = a + o_hid;
  p->tokens = (float *)(a + o_tok);
  p->tokens_n = (float *)(a + o_tokn);
  p->global = (float *)(a + o_gl);
  p->global_n = (float *)(a + o_gln);
  p->map1 = (float *)(a + o_m1);
  p->map2 = (float *)(a + o_m2);
  p->topk = (int32_t *)(a + o_topk);
  p->prior_in = (float *)(a + o_pin);
  p->prior_hidden = (float *)(a + o_phid);
  p->prior = (float *)(a + o_prior);
  p->tx = (float *)(a + o_tx);
  p->th = a + o_th;
  p->tqkv = a + o_tqkv;
  p->tattn = a + o_tatt;
  p->thidden = a + o_thid;
  p->feats = (float *)(a + o_feats);
  p->mean = (float *)(a + o_mean);
  p->t_a = (float *)(a + o_ta);
  p->map_raw = (float *)(a + o_raw);
  p->blur_tmp = (float *)(a + o_blur);
  /* poison once: an unwritten read shows as NaN rather than as stale numbers */
  CUDA_CHECK(c, fap_rt_memset(p->arena, 0xff, at, c->stream), "arena");

  /* results: scalars, maps, blend parameters */
  p->maps_offset = ALIGN256(B * 4 * f4);
  p->params_offset = p->maps_offset + ALIGN256(B * s2 * f4);
  p->results_bytes = p->params_offset + 256;

  /* weights: every device copy is made now, none per frame */
  const fap_net *w = in->net;
  p->vb = calloc((size_t)p->layers, sizeof *p->vb);
  p->tb = calloc((size_t)p->tlayers, sizeof *p->tb);
  if (!p->vb || !p->tb)
    return fap_fail(FAP_ERR_NO_MEMORY, "cuda backend: out of memory");
  for (int l = 0; l < p->layers; l++)
    resolve_block(c, &p->vb[l], &w->vblocks[l]);
  for (int l = 0; l < p->tlayers; l++)
    resolve_block(c, &p->tb[l], &w->tblocks[l]);
  p->cls = fap_cuda_weight_f32(c, w->class_emb);
  p->ln_pre_w = fap_cuda_weight_f32(c, w->ln_pre_w);
  p->ln_pre_b = fap_cuda_weight_f32(c, w->ln_pre_b);
  p->ln_post_w = fap_cuda_weight_f32(c, w->ln_post_w);
  p->ln_post_b = fap_cuda_weight_f32(c, w->ln_post_b);
  p->ln_final_w = fap_cuda_weight_f32(c, w->ln_final_w);
  p->ln_final_b = fap_cuda_weight_f32(c, w->ln_final_b);
  p->vproj32 = fap_cuda_weight_f32(c, w->vproj);
  p->tproj32 = fap_cuda_weight_f32(c, w->tproj);
  p->prior1_w = fap_cuda_weight_t(c, w->prior1_w);
  p->prior2_w = fap_cuda_weight_t(c, w->prior2_w);
  p->prior1_b = fap_cuda_weight_f32(c, w->prior1_b);
  p->prior2_b = fap_cuda_weight_f32(c, w->prior2_b);
  if (!c->status)
    upload_conv1(c, p);
  for (int i = 0; i < EV_COUNT && !c->status; i++)
    CUDA_CHECK(c, fap_rt_event_new(&p->ev[i]), "events");
  CUDA_CHECK(c, fap_rt_stream_sync(c->stream), "program setup");
  if (c->status) {
    fap_status s = c->status;
    c->status = FAP_OK;
    return s;
  }
  if (!p->use_flash)
    fap_log(FAP_LOG_INFO, "cuda backend: vision head size %d has no flash kernel; using the "
                          "general attention kernel", p->hd);
  fap_log(FAP_LOG_INFO,
          "cuda backend: weights %.0f MiB, activations %.0f MiB (batch %d, S=%d)",
          c->weight_bytes / 1048576.0, p->arena_bytes / 1048576.0, p->batch, p->size);
  return FAP_OK;
}

/* ---- enqueueing ------------------------------------------------------------------------ */

typedef struct {
  cuda_ctx *c;
  cuda_frames *p;
  int rc;
  const char *what;
} run_state;

#define RUN(st, call, name)                                                                        \
  do {                                                                                             \
    if (!(st)->rc) {                                                                               \
      (st)->rc = (call);                                                                           \
      if ((st)->rc)                                                                                \
        (st)->what = (name);                                                                       \
    }                                                                                              \
  } while (0)

/* y [rows, out] = x W^T + bias (or x P), types as in fap_gemm_args */
static void mm(run_state *st, int rows, int in, int out, const void *x, int ldx, const void *w,
               int ldw, int in_out, const void *bias, void *y, int ldy, fap_kdtype yt,
               int accumulate) {
  fap_gemm_args a = {.rows = rows, .in = in, .out = out, .x = x, .ldx = ldx, .w = w, .ldw = ldw,
                     .w_in_out = in_out, .ab = st->p->t, .bias = bias, .y = y, .ldy = ldy,
                     .yt = yt, .accumulate = accumulate};
  RUN(st, fap_rt_gemm(st->c->blas, &a), "matrix product");
}

/* y [rows, out] = x P, all f32 (P [in, out]) */
static void mm32(run_state *st, int rows, int in, int out, const float *x, int ldx,
                 const float *p, float *y) {
  fap_gemm_args a = {.rows = rows, .in = in, .out = out, .x = x, .ldx = ldx, .w = p, .ldw = out,
                     .w_in_out = 1, .ab = FAP_K_F32, .y = y, .ldy = out, .yt = FAP_K_F32};
  RUN(st, fap_rt_gemm(st->c->blas, &a), "projection");
}

static void attention_vision(run_state *st, int count, int nq_std, int dual) {
  cuda_frames *p = st->p;
  const size_t ld = 3 * (size_t)p->cv;
  const char *qkv = p->qkv;
  if (p->use_flash) {
    fap_flash_args a = {.t = p->t, .q = qkv, .k = qkv + p->cv * p->ts,
                        .v = qkv + 2 * p->cv * p->ts, .ld = ld, .batch_stride = p->rows * ld,
                        .out_x = p->attn_x, .out_y = dual ? p->attn_y : NULL, .ldo = p->cv,
                        .out_batch_stride = (size_t)p->rows * p->cv, .rows = p->rows,
                        .nq_std = nq_std, .heads = p->heads, .hd = p->hd, .batch = count};
    RUN(st, fap_k_flash_attention(st->c->stream, &a), "flash attention");
    return;
  }
  fap_attn_args a = {.out = p->attn_x, .ot = p->t, .ldo = p->cv,
                     .out_group_stride = (size_t)p->rows * p->cv, .q = qkv,
                     .k = qkv + p->cv * p->ts, .v = qkv + 2 * p->cv * p->ts, .qkv_t = p->t,
                     .ldq = ld, .ldkv = ld, .q_group_stride = p->rows * ld,
                     .kv_group_stride = p->rows * ld, .nq = nq_std, .nk = p->rows,
                     .heads = p->heads, .hd = p->hd, .q_pos0 = -1, .groups = count};
  RUN(st, fap_k_attention(st->c->stream, &a), "attention");
  if (dual) { /* V-V: softmax(v v^T / sqrt(hd)) v */
    a.out = p->attn_y;
    a.q = a.k = qkv + 2 * p->cv * p->ts;
    a.nq = p->rows;
    RUN(st, fap_k_attention(st->c->stream, &a), "attention (V-V)");
  }
}

static void enqueue_vision(run_state *st, int count) {
  cuda_frames *p = st->p;
  const fap_frame_inputs *in = p->in;
  fap_stream s = st->c->stream;
  const int cv = p->cv, rows = p->rows, R = count * rows;
  fap_kdtype T = p->t;

  RUN(st, fap_k_im2col(s, p->cols, T, p->kp, p->image, p->size, p->patch, count), "im2col");
  /* patch embedding into y (free until layer D0), then CLS + positions into x */
  mm(st, count * p->n, p->kp, cv, p->cols, p->kp, p->conv1, p->kp, 0, NULL, p->y, cv, FAP_K_F32,
     0);
  RUN(st, fap_k_embed(s, p->x, p->y, p->cls, in->pos, p->n, cv, count), "embedding");
  RUN(st, fap_k_layernorm(s, p->x, FAP_K_F32, cv, p->x, cv, p->ln_pre_w, p->ln_pre_b, R, cv),
      "ln_pre");

  for (int l = 0; l < p->layers; l++) {
    const dev_block *w = &p->vb[l];
    const int dual = l >= p->dual_start, last = l == p->layers - 1;
    if (l == p->dual_start)
      RUN(st, fap_rt_d2d(p->y, p->x, (size_t)R * cv * sizeof(float), s), "side path copy");
    RUN(st, fap_k_layernorm(s, p->h, T, cv, p->x, cv, w->ln1_w, w->ln1_b, R, cv), "ln_1");
    mm(st, R, cv, 3 * cv, p->h, cv, w->in_w, cv, 0, w->in_b, p->qkv, 3 * cv, T, 0);
    /* after the last layer only x[0] is read: its standard path runs for the CLS row */
    attention_vision(st, count, last ? 1 : rows, dual);
    if (!last)
      mm(st, R, cv, cv, p->attn_x, cv, w->out_w, cv, 0, w->out_b, p->x, cv, FAP_K_F32, 1);
    else /* row 0 of each frame: rows `rows * cv` apart */
      mm(st, count, cv, cv, p->attn_x, rows * cv, w->out_w, cv, 0, w->out_b, p->x, rows * cv,
         FAP_K_F32, 1);
    if (dual)
      mm(st, R, cv, cv, p->attn_y, cv, w->out_w, cv, 0, w->out_b, p->y, cv, FAP_K_F32, 1);
    const int xr = last ? count : R, ldx = last ? rows * cv : cv;
    RUN(st, fap_k_layernorm(s, p->h, T, cv, p->x, ldx, w->ln2_w, w->ln2_b, xr, cv), "ln_2");
    mm(st, xr, cv, 4 * cv, p->h, cv, w->fc_w, cv, 0, w->fc_b, p->hidden_buf, 4 * cv, T, 0);
    RUN(st, fap_k_quickgelu(s, p->hidden_buf, T, (size_t)xr * 4 * cv), "quickgelu");
    mm(st, xr, 4 * cv, cv, p->hidden_buf, 4 * cv, w->cproj_w, 4 * cv, 0, w->cproj_b, p->x, ldx,
       FAP_K_F32, 1);
  }
  /* T = LN_post(y) @ proj; g = x[0] @ proj without LN_post (SPEC quirk). The
   * features the maps compare come out of these two products: in f32 (the
   * MLP buffer, free now, holds LN_post(y) in f32) */
  float *h32 = p->hidden_buf;
  RUN(st, fap_k_layernorm(s, h32, FAP_K_F32, cv, p->y, cv, p->ln_post_w, p->ln_post_b, R, cv),
      "ln_post");
  mm32(st, R, cv, p->e, h32, cv, p->vproj32, p->tokens);
  mm32(st, count, cv, p->e, p->x, rows * cv, p->vproj32, p->global);
}

static void enqueue_text(run_state *st, int count) {
  cuda_frames *p = st->p;
  const fap_frame_inputs *in = p->in;
  fap_stream s = st->c->stream;
  const int ct = p->ct, TR = count * p->k * p->r, lmax = in->text_lmax;
  fap_kdtype T = p->t;
  RUN(st, fap_k_text_init(s, p->tx, in->text_init, p->prior, p->k, p->r, in->cfg->n_neg, ct, count),
      "text rows");
  for (int l = 0; l < p->tlayers; l++) {
    const dev_block *w = &p->tb[l];
    RUN(st, fap_k_layernorm(s, p->th, T, ct, p->tx, ct, w->ln1_w, w->ln1_b, TR, ct), "text ln_1");
    mm(st, TR, ct, 3 * ct, p->th, ct, w->in_w, ct, 0, w->in_b, p->tqkv, 3 * ct, T, 0);
    /* keys and values: positions < pos0 from the cache of prompt 1 + (g % K)
     * (text.c's layout), the rest from this frame's rows */
    const size_t slot = (size_t)lmax * ct;
    const float *pre = in->kv + ((size_t)l * (p->k + 1) + 1) * 2 * slot;
    const char *tqkv = p->tqkv;
    fap_attn_args a = {.out = p->tattn, .ot = T, .ldo = ct, .out_group_stride = (size_t)p->r * ct,
                       .q = tqkv, .k = tqkv + ct * p->ts, .v = tqkv + 2 * ct * p->ts, .qkv_t = T,
                       .ldq = 3 * (size_t)ct, .ldkv = 3 * (size_t)ct,
                       .q_group_stride = (size_t)p->r * 3 * ct,
                       .kv_group_stride = (size_t)p->r * 3 * ct, .pre_k = pre,
                       .pre_v = pre + slot, .ld_pre = ct, .pre_group_stride = 2 * slot,
                       .n_pre = p->pos0, .pre_groups = p->k, .nq = p->r, .nk = p->pos0 + p->r,
                       .heads = p->theads, .hd = ct / p->theads, .q_pos0 = p->pos0,
                       .groups = count * p->k};
    RUN(st, fap_k_attention(s, &a), "text attention");
    mm(st, TR, ct, ct, p->tattn, ct, w->out_w, ct, 0, w->out_b, p->tx, ct, FAP_K_F32, 1);
    RUN(st, fap_k_layernorm(s, p->th, T, ct, p->tx, ct, w->ln2_w, w->ln2_b, TR, ct), "text ln_2");
    mm(st, TR, ct, 4 * ct, p->th, ct, w->fc_w, ct, 0, w->fc_b, p->thidden, 4 * ct, T, 0);
    RUN(st, fap_k_quickgelu(s, p->thidden, T, (size_t)TR * 4 * ct), "text quickgelu");
    mm(st, TR, 4 * ct, ct, p->thidden, 4 * ct, w->cproj_w, 4 * ct, 0, w->cproj_b, p->tx, ct,
       FAP_K_F32, 1);
  }
  /* the end token is the last row of each prompt; LN_final and the
   * projection in f32, as the vision features */
  float *f32 = p->thidden;
  RUN(st, fap_k_layernorm(s, f32, FAP_K_F32, ct, p->tx + (size_t)(p->r - 1) * ct,
                          (size_t)p->r * ct, p->ln_final_w, p->ln_final_b, count * p->k, ct),
      "ln_final");
  mm32(st, count * p->k, ct, p->e, f32, ct, p->tproj32, p->feats);
  RUN(st, fap_k_mean_rows(s, p->mean, p->feats, p->k, p->e, count), "text mean");
  RUN(st, fap_k_l2norm(s, p->t_a, p->e, p->mean, p->e, count, p->e), "text norm");
}

static void event(run_state *st, int which) {
  RUN(st, fap_rt_event_record(st->p->ev[which], st->c->stream), "event");
}

/* the whole batch, from upload to download */
static void enqueue_batch(run_state *st, int count, int blend) {
  cuda_frames *p = st->p;
  const fap_frame_inputs *in = p->in;
  fap_stream s = st->c->stream;
  cuda_frameio *io = &p->io;
  const int e = p->e, n = p->n;
  const size_t s2 = (size_t)p->size * p->size;
  float *scalars = io->io_dev;
  float *maps = (float *)((char *)io->io_dev + p->maps_offset);
  const float *params = (const float *)((char *)io->io_dev + p->params_offset);

  event(st, EV_START);
  /* one upload: blend parameters and every frame's planes */
  RUN(st, fap_rt_h2d((char *)io->io_dev + p->params_offset, (char *)io->io_host + p->params_offset,
                     io->frames_start + io->frames_bytes - p->params_offset, s),
      "frame upload");
  RUN(st, fap_k_preprocess(s, p->image, p->size, io->desc_dev, io->max_height, count),
      "preprocess");
  event(st, EV_PRE);

  enqueue_vision(st, count);
  event(st, EV_VISION);

  /* p_j = norm(T_j), g^ = norm(g); A1 over patches (rows 1..N of each frame) */
  RUN(st, fap_k_l2norm(s, p->tokens_n, e, p->tokens, e, count * p->rows, e), "token norm");
  RUN(st, fap_k_l2norm(s, p->global_n, e, p->global, e, count, e), "global norm");
  RUN(st, fap_k_two_way(s, p->map1, n, p->tokens_n + e, e, (size_t)p->rows * e, n, e,
                        in->text_normal, 0, in->text_abnormal, 0, FAP_INV_TAU, count),
      "map1");
  RUN(st, fap_k_reduce_max(s, scalars + 0, 4, p->map1, n, n, count), "max1");
  event(st, EV_MAP1);

  /* abnormality prior: the M most abnormal patches, descending, through the MLP */
  RUN(st, fap_k_topk(s, p->topk, p->map1, n, n, p->m, count), "top-M");
  RUN(st, fap_k_gather_rows(s, p->prior_in, p->tokens_n + e, e, (size_t)p->rows * e, p->topk,
                            p->m, e, count),
      "gather");
  RUN(st, fap_k_linear_rows(s, p->prior_hidden, p->hidden, p->prior_in, (size_t)p->m * e,
                            p->prior1_w, p->t, p->prior1_b, count, p->m * e, p->hidden, 1),
      "prior linear1");
  RUN(st, fap_k_linear_rows(s, p->prior, p->ct, p->prior_hidden, p->hidden, p->prior2_w, p->t,
                            p->prior2_b, count, p->hidden, p->ct, 0),
      "prior linear2");
  event(st, EV_PRIOR);

  enqueue_text(st, count);
  event(st, EV_TEXT);

  RUN(st, fap_k_two_way(s, p->map2, n, p->tokens_n + e, e, (size_t)p->rows * e, n, e,
                        in->text_normal, 0, p->t_a, e, FAP_INV_TAU, count),
      "map2");
  RUN(st, fap_k_reduce_max(s, scalars + 1, 4, p->map2, n, n, count), "max2");
  RUN(st, fap_k_two_way(s, scalars + 2, 4, p->global_n, e, e, 1, e, in->text_normal, 0, p->t_a,
                        e, FAP_INV_TAU, count),
      "image-text probability");
  RUN(st, fap_k_score(s, scalars, count), "score");
  event(st, EV_MAP2);

  RUN(st, fap_k_upsample_mean(s, p->map_raw, p->map1, p->map2, p->grid, p->size, count),
      "upsample");
  if (in->radius > 0)
    RUN(st, fap_k_gaussian(s, maps, p->map_raw, p->blur_tmp, p->size, in->gauss, in->radius, count),
        "smoothing");
  else
    RUN(st, fap_rt_d2d(maps, p->map_raw, count * s2 * sizeof(float), s), "map copy");
  if (blend)
    RUN(st, fap_k_blend(s, io->desc_dev, maps, p->size, params, io->max_width, io->max_height,
                        count),
        "blend");
  /* one download: scores and maps (and the frames when drawn into) */
  RUN(st, fap_rt_d2h(io->io_host, io->io_dev,
                     blend ? io->frames_start + io->frames_bytes : p->maps_offset + count * s2 * 4,
                     s),
      "download");
  event(st, EV_END);
}

/* the last frame's intermediates into the detector's buffers (keep_intermediates) */
static void copy_intermediates(run_state *st, int count) {
  cuda_frames *p = st->p;
  const fap_frame_keep *b = p->in->keep;
  fap_stream s = st->c->stream;
  const size_t f = (size_t)count - 1, s2 = (size_t)p->size * p->size, fl = sizeof(float);
  const int e = p->e;
  RUN(st, fap_rt_d2d(b->image, p->image + f * 3 * s2, 3 * s2 * fl, s), "intermediates");
  RUN(st, fap_rt_d2d(b->tokens, p->tokens + f * p->rows * e, (size_t)p->rows * e * fl, s),
      "intermediates");
  RUN(st, fap_rt_d2d(b->global, p->global + f * e, e * fl, s), "intermediates");
  RUN(st, fap_rt_d2d(b->map1, p->map1 + f * p->n, p->n * fl, s), "intermediates");
  RUN(st, fap_rt_d2d(b->map2, p->map2 + f * p->n, p->n * fl, s), "intermediates");
  RUN(st, fap_rt_d2d(b->topk, p->topk + f * p->m, p->m * 4, s), "intermediates");
  RUN(st, fap_rt_d2d(b->prior, p->prior + f * p->ct, p->ct * fl, s), "intermediates");
  RUN(st, fap_rt_d2d(b->feats_dynamic, p->feats + f * p->k * e, (size_t)p->k * e * fl, s),
      "intermediates");
  RUN(st, fap_rt_d2d(b->text_abnormal_dynamic, p->t_a + f * e, e * fl, s), "intermediates");
  RUN(st, fap_rt_d2d(b->scalars, (float *)p->io.io_dev + 4 * f, 4 * fl, s), "intermediates");
  RUN(st, fap_rt_d2d(b->map_raw, p->map_raw + f * s2, s2 * fl, s), "intermediates");
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

fap_status fap_cuda_frames_run(void *ctx, const fap_frame *frames, int count,
                               const fap_blend *blend, fap_result *results,
                               float last_scalars[4]) {
  cuda_ctx *c = ctx;
  cuda_frames *p = c->frames;
  const double start = now_ms();
  run_state st = {c, p, 0, NULL};
  RUN(&st, fap_rt_use(c->device), "selecting the device");
  if (c->status) { /* a failure left over from an op */
    fap_status s = c->status;
    c->status = FAP_OK;
    return s;
  }
  cuda_failure fail = {0, NULL};
  const int changed = st.rc ? -1
                            : fap_cuda_frameio_prepare(&p->io, frames, count, p->size,
                                                        p->results_bytes, c->stream, &fail);
  if (st.rc)
    fap_cuda_fail(c, st.rc, st.what);
  else if (changed < 0)
    fap_cuda_fail(c, fail.rc, fail.what);
  if (changed < 0) {
    fap_status s = c->status ? c->status : FAP_ERR_BACKEND;
    c->status = FAP_OK;
    return s;
  }
  size_t up[FAP_MAX_BATCH], down[FAP_MAX_BATCH];
  fap_cuda_frameio_stage(&p->io, frames, count, up);
  float *params = (float *)((char *)p->io.io_host + p->params_offset);
  fap_blend_params bp = {0.0f, 0.0f, 0.0f, 1.0f};
  if (blend)
    fap_blend_params_of(blend, &bp);
  memcpy(params, &bp, sizeof bp);

  const int want_blend = blend != NULL;
  if (p->graph && (changed || p->graph_count != count || p->graph_blend != want_blend)) {
    fap_rt_graph_free(p->graph);
    p->graph = NULL;
  }
  if (p->graph) {
    RUN(&st, fap_rt_graph_launch(p->graph, c->stream), "graph launch");
  } else {
    /* first run of this geometry: eagerly (this also settles cuBLASLt's
     * algorithm choices), then capture the sequence for the next runs */
    enqueue_batch(&st, count, want_blend);
    if (!st.rc)
      RUN(&st, fap_rt_stream_sync(c->stream), "first run");
    if (!st.rc && !p->graphs_off) {
      fap_graph g = NULL;
      run_state cap = {c, p, 0, NULL};
      RUN(&cap, fap_rt_capture_begin(c->stream), "capture begin");
      if (!cap.rc) {
        enqueue_batch(&cap, count, want_blend);
        const int end = fap_rt_capture_end(c->stream, &g); /* always ends a begun capture */
        RUN(&cap, end, "capture end");
      }
      if (cap.rc) {
        fap_log(FAP_LOG_WARNING,
                "cuda backend: capturing the frame sequence in a CUDA graph failed (%s: %s); "
                "running it without a graph from now on",
                cap.what, fap_rt_error());
        if (g)
          fap_rt_graph_free(g);
        p->graphs_off = 1;
      } else {
        p->graph = g;
        p->graph_count = count;
        p->graph_blend = want_blend;
      }
    }
  }
  if (!st.rc && p->in->keep)
    copy_intermediates(&st, count);
  if (!st.rc)
    RUN(&st, fap_rt_stream_sync(c->stream), "frame batch");
  if (st.rc) {
    fap_cuda_fail(c, st.rc, st.what);
    fap_status s = c->status;
    c->status = FAP_OK;
    return s;
  }

  memset(down, 0, sizeof down);
  if (want_blend)
    fap_cuda_frameio_unstage(&p->io, frames, count, down);
  float stage[FAP_STAGE_COUNT] = {0};
  float ms;
  int timed = 1;
  static const int ev_of_stage[FAP_STAGE_COUNT + 1] = {EV_START, EV_PRE,  EV_VISION, EV_MAP1,
                                                       EV_PRIOR, EV_TEXT, EV_MAP2,   EV_END};
  for (int i = 0; i < FAP_STAGE_COUNT && timed; i++) {
    timed = fap_rt_event_ms(p->ev[ev_of_stage[i]], p->ev[ev_of_stage[i + 1]], &ms) == 0;
    stage[i] = ms;
  }
  const float *scal = p->io.io_host;
  const float *maps = (const float *)((const char *)p->io.io_host + p->maps_offset);
  const size_t s2 = (size_t)p->size * p->size;
  const double total = now_ms() - start;
  for (int i = 0; i < count; i++) {
    fap_result *r = &results[i];
    memset(r, 0, sizeof *r);
    r->score = scal[4 * i + 3];
    r->map = maps + i * s2;
    r->map_size = p->size;
    for (int k = 0; k < FAP_STAGE_COUNT && timed; k++)
      r->stage_ms[k] = stage[k];
    r->total_ms = total;
    r->frame_bytes_to_device = up[i];
    r->frame_bytes_from_device = down[i];
  }
  memcpy(last_scalars, scal + 4 * (count - 1), 4 * sizeof(float));
  return FAP_OK;
}

/* A reused result drawn into a frame on the device: the map and the blend
 * parameters go up (with the frame's descriptor), the frame is drawn where
 * it is; a host frame's planes go up and come back. Its own stream, buffers
 * and lock, and no sticky status: it may run while another thread runs a
 * batch on the same detector. */
static int draw_locked(cuda_ctx *c, const fap_frame *frame, const float *map, int map_size,
                       const fap_blend *blend, size_t *bytes, const char **what) {
  cuda_frameio *io = &c->draw_io;
  const size_t map_bytes = (size_t)map_size * map_size * sizeof(float);
  int rc = fap_rt_use(c->device);
  *what = "selecting the device";
  if (!rc && !c->draw_stream) {
    rc = fap_rt_stream_new(&c->draw_stream);
    *what = "drawing stream";
  }
  if (rc)
    return rc;
  cuda_failure fail = {0, NULL};
  if (fap_cuda_frameio_prepare(io, frame, 1, map_size, 256 + map_bytes, c->draw_stream, &fail) <
      0) {
    *what = fail.what;
    return fail.rc ? fail.rc : FAP_RT_ENOMEM;
  }
  size_t up = 0, down = 0;
  fap_cuda_frameio_stage(io, frame, 1, &up);
  fap_blend_params bp;
  fap_blend_params_of(blend, &bp);
  memcpy(io->io_host, &bp, sizeof bp);
  memcpy((char *)io->io_host + 256, map, map_bytes);
  const float *params = io->io_dev, *map_dev = (const float *)((char *)io->io_dev + 256);
  fap_stream s = c->draw_stream;
  *what = "draw upload";
  rc = fap_rt_h2d(io->io_dev, io->io_host, io->frames_start + io->frames_bytes, s);
  if (!rc) {
    *what = "draw";
    rc = fap_k_blend(s, io->desc_dev, map_dev, map_size, params, frame->width, frame->height, 1);
  }
  if (!rc && frame->memory == FAP_MEMORY_HOST) {
    *what = "draw download";
    rc = fap_rt_d2h((char *)io->io_host + io->frames_start, (char *)io->io_dev + io->frames_start,
                    io->frames_bytes, s);
  }
  if (!rc) {
    *what = "draw";
    rc = fap_rt_stream_sync(s);
  }
  if (!rc && frame->memory == FAP_MEMORY_HOST)
    fap_cuda_frameio_unstage(io, frame, 1, &down);
  *bytes = up + down;
  return rc;
}

fap_status fap_cuda_frames_draw(void *ctx, const fap_frame *frame, const float *map, int map_size,
                                const fap_blend *blend, size_t *pixel_bytes) {
  cuda_ctx *c = ctx;
  const char *what = "draw";
  g_mutex_lock(c->draw_lock);
  const int rc = draw_locked(c, frame, map, map_size, blend, pixel_bytes, &what);
  g_mutex_unlock(c->draw_lock);
  if (!rc)
    return FAP_OK;
  fap_log(FAP_LOG_ERROR, "cuda backend (device %d): %s failed: %s", c->device, what,
          fap_rt_error());
  return rc == FAP_RT_ENOMEM ? FAP_ERR_NO_MEMORY : FAP_ERR_BACKEND;
}
