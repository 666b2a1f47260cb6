/* Text encoder with learned prompts, docs/SPEC.md section 3, computed
 * incrementally: the causal mask means the end token only sees positions <= end,
 * so nothing after it is computed, and positions 0..n_pos (SOT and the learned
 * normal context, overwritten by the deep prompts) never change, so their keys
 * and values are cached once per detector. Per frame only positions
 * n_pos+1..end of the K abnormality prompts run (6 rows each at ViT-L).
 *
 * AnomalyCLIP's two prompts share only SOT and are static: they are encoded
 * once, at creation, and nothing runs per frame.
 *
 * Key/value cache of prompt p (0 = normal, 1..K abnormality) at layer l:
 *   keys   kv + ((l * (K+1) + p) * 2 + 0) * Lmax * Ct, rows = positions
 *   values kv + ((l * (K+1) + p) * 2 + 1) * Lmax * Ct
 */
#include "block.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

static float *kv_rows(fap_detector *d, int layer, int prompt, int which) {
  const fap_config *c = d->cfg;
  size_t slot = ((size_t)layer * (c->n_prompts + 1) + prompt) * 2 + which;
  return d->b.kv + slot * d->text_lmax * c->text_width;
}

/* The prompts a text pass runs: `count` of them from prompt index `first`,
 * each `rows` rows for positions pos0 .. pos0 + rows - 1 of one layer;
 * store: the pass's keys and values go to the cache (creation). */
typedef struct {
  int layer, first, count, pos0, rows, store;
} text_pass;

/* Causal attention of each prompt over its key/value cache (positions <
 * pos0) and this pass's rows. */
static void text_attend(fap_detector *d, const fap_block *w, const fap_block_bufs *io, int rows,
                        int q_rows, void *user) {
  (void)w, (void)rows, (void)q_rows;
  const text_pass *t = user;
  const int ct = io->width, heads = d->cfg->text_heads;
  const size_t slot = (size_t)d->text_lmax * ct; /* keys, then values, per prompt */
  d->backend.ops->attention_cached(d->backend.ctx, io->attn, ct, io->qkv, 3 * ct, t->count,
                                   t->rows, t->pos0, kv_rows(d, t->layer, t->first, 0), 2 * slot,
                                   slot, t->store, heads, ct / heads);
}

/* Runs the text transformer on `count` prompts starting at prompt index
 * `first`. x holds, per prompt, rows for positions pos0 .. pos0 + rows - 1
 * (the last row is the end token). Earlier positions' keys/values must be in
 * the caches; a pass from position 0 (creation) puts its own there. Writes
 * LN_final(x[end]) @ text_projection for each prompt to feats [count, E]. */
static void text_encode(fap_detector *d, float *x, int first, int count, int pos0, int rows,
                        float *feats) {
  const fap_backend_ops *op = d->backend.ops;
  void *be = d->backend.ctx;
  const fap_config *c = d->cfg;
  fap_buffers *b = &d->b;
  const int ct = c->text_width, total = count * rows;
  const size_t row_bytes = (size_t)ct * sizeof(float);
  /* from position 0: a creation pass, in f32 (detector.c, plan_buffers) */
  const fap_block_bufs io = pos0 == 0
                                ? (fap_block_bufs){x, b->prep_h, b->prep_qkv, b->prep_attn,
                                                   b->prep_hidden, ct}
                                : (fap_block_bufs){x, b->th, b->tqkv, b->tattn, b->thidden, ct};

  for (int l = 0; l < c->text_layers; l++) {
    /* deep prompt l-1 replaces positions 1..t before layer l (1 <= l <= depth-1) */
    if (l >= 1 && l <= c->prompt_depth - 1 && c->prompt_length > 0 && pos0 <= 1) {
      for (int p = 0; p < count; p++)
        op->copy2d(be, x + ((size_t)p * rows + 1 - pos0) * ct, row_bytes, d->net.deep[l - 1],
                   row_bytes, (size_t)c->prompt_length, row_bytes);
    }
    text_pass pass = {l, first, count, pos0, rows, pos0 == 0};
    fap_residual_block(d, &d->net.tblocks[l], &io, total, total, text_attend, &pass);
  }
  /* the end token is the last row of each prompt */
  op->layernorm(be, b->tfeat_h, ct, x + (size_t)(rows - 1) * ct, rows * ct, d->net.ln_final_w,
                d->net.ln_final_b, count, ct);
  op->matmul(be, feats, c->embed_dim, b->tfeat_h, ct, d->net.tproj, count, ct, c->embed_dim);
}

/* Host-side assembly of prompt embeddings: row r of prompt p is the token
 * embedding at position r plus the positional embedding. */
static void put_row(float *dst, const float *token, const float *pos, int ct) {
  for (int i = 0; i < ct; i++)
    dst[i] = token[i] + pos[i];
}

fap_status fap_text_prepare(fap_detector *d) {
  const fap_backend_ops *op = d->backend.ops;
  void *be = d->backend.ctx;
  const fap_config *c = d->cfg;
  const fap_model *m = d->model;
  fap_buffers *b = &d->b;
  const int ct = c->text_width, k = c->n_prompts, np = c->n_pos, nn = c->n_neg;
  const int ln = c->end_pos_normal + 1, la = c->end_pos_abnormal + 1, r = d->text_rows;
  const size_t rb = (size_t)ct * sizeof(float);
  size_t host_rows = (size_t)(ln > k * la ? ln : k * la);
  if ((size_t)k * r > host_rows)
    host_rows = (size_t)k * r;
  float *host = malloc(host_rows * rb);
  if (!host)
    return fap_fail(FAP_ERR_NO_MEMORY, "text encoder: out of memory");
  fap_status s;

  /* normal prompt: SOT, c_1..c_n, suffix (object . EOT) up to the end token */
  for (int pos = 0; pos < ln; pos++) {
    const float *tok = pos == 0 ? m->prefix_pos
                       : pos <= np ? m->ctx_pos + (size_t)(pos - 1) * ct
                                   : m->suffix_pos + (size_t)(pos - 1 - np) * ct;
    put_row(host + (size_t)pos * ct, tok, m->tpos + (size_t)pos * ct, ct);
  }
  if ((s = op->upload(be, b->tx, host, (size_t)ln * rb)))
    goto done;
  text_encode(d, b->tx, 0, 1, 0, ln, b->feats_static);

  if (c->family == FAP_FAMILY_ANOMALYCLIP) {
    /* the one abnormal prompt: SOT, its own a_1..a_n, suffix (damaged object
     * . EOT); static, so nothing per frame (docs/SPEC.md section 6.3) */
    for (int pos = 0; pos < la; pos++) {
      const float *tok = pos == 0    ? m->prefix_neg
                         : pos <= nn ? m->ctx_neg + (size_t)(pos - 1) * ct
                                     : m->suffix_neg + (size_t)(pos - 1 - nn) * ct;
      put_row(host + (size_t)pos * ct, tok, m->tpos + (size_t)pos * ct, ct);
    }
    if (!(s = op->upload(be, b->tx, host, (size_t)la * rb)))
      text_encode(d, b->tx, 1, 1, 0, la, b->feats_static + c->embed_dim);
    goto done;
  }

  /* abnormality prompts: SOT, c, a_i1..a_in, suffix (damaged object . EOT) */
  for (int p = 0; p < k; p++)
    for (int pos = 0; pos < la; pos++) {
      const float *tok = pos == 0 ? m->prefix_neg + (size_t)p * ct
                         : pos <= np ? m->ctx_pos + (size_t)(pos - 1) * ct
                         : pos <= np + nn
                             ? m->ctx_neg + ((size_t)p * nn + pos - 1 - np) * ct
                             : m->suffix_neg + ((size_t)p * (c->context_length - 1 - np - nn) +
                                                pos - 1 - np - nn) * ct;
      put_row(host + ((size_t)p * la + pos) * ct, tok, m->tpos + (size_t)pos * ct, ct);
    }
  if ((s = op->upload(be, b->tx, host, (size_t)k * la * rb)))
    goto done;
  text_encode(d, b->tx, 1, k, 0, la, b->feats_static + c->embed_dim);

  /* per-frame starting rows: positions n_pos+1..end of each abnormality
   * prompt (a_i then suffix), b is added to the first n_neg of them per frame */
  for (int p = 0; p < k; p++)
    memmove(host + (size_t)p * r * ct, host + ((size_t)p * la + np + 1) * ct, (size_t)r * rb);
  s = op->upload(be, b->text_init, host, (size_t)k * r * rb);
done:
  free(host);
  return s;
}

void fap_text_forward_dynamic(fap_detector *d) {
  const fap_backend_ops *op = d->backend.ops;
  void *be = d->backend.ctx;
  const fap_config *c = d->cfg;
  fap_buffers *b = &d->b;
  const int ct = c->text_width, k = c->n_prompts, r = d->text_rows;

  op->copy2d(be, b->tx, 0, b->text_init, 0, 1, (size_t)k * r * ct * sizeof(float));
  for (int p = 0; p < k; p++) /* a'_ik = a_ik + b */
    op->add_row(be, b->tx + (size_t)p * r * ct, ct, b->prior, c->n_neg, ct);
  text_encode(d, b->tx, 1, k, c->n_pos + 1, r, b->feats_dynamic);
}
