/* The CLIP residual block shared by the vision and the text encoder
 * (block.c). */
#ifndef FAP_BLOCK_H
#define FAP_BLOCK_H

#include "detector_internal.h"

/* The buffers one block works in, rows of `width` (qkv: 3 width, hidden:
 * 4 width), leading dimensions = their widths. */
typedef struct {
  float *x;      /* residual stream, updated in place */
  float *h;      /* LayerNorm output */
  float *qkv;    /* [rows, 3 width] */
  float *attn;   /* [q_rows, width]: written by attend */
  float *hidden; /* [q_rows, 4 width] */
  int width;
} fap_block_bufs;

/* Writes io->attn for the first q_rows rows from io->qkv (queries of rows
 * 0..q_rows-1, keys and values of all rows). */
typedef void (*fap_attend_fn)(fap_detector *d, const fap_block *w, const fap_block_bufs *io,
                              int rows, int q_rows, void *user);

/* One block over `rows` rows of io->x. Only the first q_rows rows of x come
 * out updated (the rest is not read afterwards: the vision tower's last
 * layer needs its CLS row only); the keys and values are those of every row. */
void fap_residual_block(fap_detector *d, const fap_block *w, const fap_block_bufs *io, int rows,
                        int q_rows, fap_attend_fn attend, void *user);

#endif
