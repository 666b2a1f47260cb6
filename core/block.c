/* One CLIP residual block (pre-LN), written once for the vision and the
 * text encoder (docs/SPEC.md sections 2 and 3):
 *
 *   h = LN_1(x); qkv = h W_in^T + b_in
 *   x += attend(qkv) W_out^T + b_out      (the attention is the caller's)
 *   x += c_proj(QuickGELU(c_fc(LN_2(x))))
 *
 * What differs between the encoders is the attention: the vision tower's
 * standard + V-V side path, the text tower's causal attention over a cached
 * prefix. The caller passes it as `attend`, which writes attn[q_rows] rows
 * (and may update its own streams, e.g. the V-V path y). */
#include "block.h"

void fap_residual_block(fap_detector *d, const fap_block *w, const fap_block_bufs *io, int rows,
                        int q_rows, fap_attend_fn attend, void *user) {
  const fap_backend_ops *op = d->backend.ops;
  void *be = d->backend.ctx;
  const int c = io->width;
  float *x = io->x;

  op->layernorm(be, io->h, c, x, c, w->ln1_w, w->ln1_b, rows, c);
  if (q_rows == rows) {
    op->linear(be, io->qkv, 3 * c, io->h, c, w->in_w, w->in_b, rows, c, 3 * c, 0);
  } else { /* keys and values of every row, the queries of the first q_rows */
    op->linear(be, io->qkv + c, 3 * c, io->h, c, w->in_w + (size_t)c * c, w->in_b + c, rows, c,
               2 * c, 0);
    op->linear(be, io->qkv, 3 * c, io->h, c, w->in_w, w->in_b, q_rows, c, c, 0);
  }
  attend(d, w, io, rows, q_rows, user);
  op->linear(be, x, c, io->attn, c, w->out_w, w->out_b, q_rows, c, c, 1);

  op->layernorm(be, io->h, c, x, c, w->ln2_w, w->ln2_b, q_rows, c);
  op->linear(be, io->hidden, 4 * c, io->h, c, w->fc_w, w->fc_b, q_rows, c, 4 * c, 0);
  op->quickgelu(be, io->hidden, (size_t)q_rows * 4 * c);
  op->linear(be, x, c, io->hidden, 4 * c, w->cproj_w, w->cproj_b, q_rows, 4 * c, c, 1);
}
