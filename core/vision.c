/* Vision encoder, docs/SPEC.md section 2: the standard CLIP path x plus the V-V
 * side path y of the dual layers (l >= D0), which shares each layer's v and
 * out_proj, has no MLP and never feeds back into x. */
#include "block.h"

#include <string.h>

/* The attention of a vision block: with y (a dual layer, l >= D0) both
 * paths in one op, then the V-V side path's y += attn_y W_out^T + b_out
 * (same out_proj, bias included), otherwise the standard attention of the
 * first q_rows rows. */
static void vision_attend(fap_detector *d, const fap_block *w, const fap_block_bufs *io, int rows,
                          int q_rows, void *y) {
  const fap_backend_ops *op = d->backend.ops;
  void *be = d->backend.ctx;
  const int cv = io->width, heads = d->cfg->vision_heads, hd = cv / heads;
  const float *q = io->qkv, *k = io->qkv + cv, *v = io->qkv + 2 * cv;
  if (y) {
    float *attn_y = d->b.attn_y;
    op->attention_dual(be, io->attn, attn_y, cv, io->qkv, 3 * cv, rows, q_rows, heads, hd);
    op->linear(be, y, cv, attn_y, cv, w->out_w, w->out_b, rows, cv, cv, 1);
    return;
  }
  op->attention(be, io->attn, cv, q, 3 * cv, k, 3 * cv, v, 3 * cv, q_rows, rows, heads, hd, -1);
}

void fap_vision_forward(fap_detector *d) {
  const fap_backend_ops *op = d->backend.ops;
  void *be = d->backend.ctx;
  const fap_config *c = d->cfg;
  fap_buffers *b = &d->b;
  const int cv = c->vision_width, n = d->n_patches, rows = n + 1;
  const int p = c->patch_size, e = c->embed_dim;
  int out = 0; /* next out layer */

  /* patch embedding (conv1 as a GEMM over im2col rows) into rows 1..N, CLS into row 0 */
  op->im2col(be, b->cols, b->image, d->size, p);
  op->linear(be, b->x + cv, cv, b->cols, 3 * p * p, d->net.conv1, NULL, n, 3 * p * p, cv, 0);
  op->copy2d(be, b->x, 0, d->net.class_emb, 0, 1, (size_t)cv * sizeof(float));
  op->add(be, b->x, b->pos, (size_t)rows * cv);
  op->layernorm(be, b->x, cv, b->x, cv, d->net.ln_pre_w, d->net.ln_pre_b, rows, cv);

  const fap_block_bufs io = {b->x, b->h, b->qkv, b->attn, b->hidden, cv};
  for (int l = 0; l < c->vision_layers; l++) {
    /* After the last layer only x[0] is read (g); T comes from y. So the last
     * layer runs the standard path for the CLS row alone: its query, attention
     * row, out_proj and MLP (exact, ~3% of the encoder's FLOPs). */
    const int xrows = l == c->vision_layers - 1 ? 1 : rows;
    if (l == c->dual_start) /* the side path starts from the input of layer D0 */
      op->copy2d(be, b->y, 0, b->x, 0, 1, (size_t)rows * cv * sizeof(float));
    fap_residual_block(d, &d->net.vblocks[l], &io, rows, xrows, vision_attend,
                       l >= c->dual_start ? b->y : NULL);

    /* T_l = LN_post(y) @ proj for all rows, after each out layer (FAPrompt:
     * the last one), in f32: the features the maps compare */
    if (out < c->n_out_layers && c->out_layers[out] == l + 1) {
      op->layernorm(be, b->post, cv, b->y, cv, d->net.ln_post_w, d->net.ln_post_b, rows, cv);
      op->matmul(be, b->tokens + (size_t)out * rows * e, e, b->post, cv, d->net.vproj, rows, cv,
                 e);
      out++;
    }
  }

  /* g = x[0] @ proj without LN_post (SPEC quirk) */
  op->matmul(be, b->global, e, b->x, cv, d->net.vproj, 1, cv, e);
}
