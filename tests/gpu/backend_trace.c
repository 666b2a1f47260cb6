/* The op-recording backend (backend_trace.h). Each wrapper prints the call's
 * shape arguments and forwards it; pointers are left out, so two backends
 * running the same description give the same text. */
#include "backend_trace.h"

#include "log.h"

#include <stdlib.h>

typedef struct {
  fap_backend inner;
  GString *log;
  fap_backend_ops ops; /* this wrapper's table: the inner's caps and name */
} trace_ctx;

#define IN(c) ((trace_ctx *)(c))->inner.ops
#define ICTX(c) ((trace_ctx *)(c))->inner.ctx
#define LOG(c, ...) g_string_append_printf(((trace_ctx *)(c))->log, __VA_ARGS__)

static void t_destroy(void *c) {
  trace_ctx *t = c;
  fap_backend_free(&t->inner);
  free(t);
}
static void *t_alloc(void *c, size_t bytes) { return IN(c)->alloc(ICTX(c), bytes); }
static void t_release(void *c, void *p) { IN(c)->release(ICTX(c), p); }
static const float *t_import(void *c, const float *host, size_t n) {
  return IN(c)->import_weights(ICTX(c), host, n);
}
static int t_role(void *c, const float *w, size_t n, fap_weight_role role,
                  const fap_weight_reader *reader) {
  LOG(c, "weight_role count=%zu role=%d\n", n, (int)role);
  return IN(c)->weight_role ? IN(c)->weight_role(ICTX(c), w, n, role, reader) : 0;
}
static fap_status t_upload(void *c, void *dst, const void *host, size_t bytes) {
  LOG(c, "upload bytes=%zu\n", bytes);
  return IN(c)->upload(ICTX(c), dst, host, bytes);
}
static fap_status t_download(void *c, void *host, const void *src, size_t bytes) {
  LOG(c, "download bytes=%zu\n", bytes);
  return IN(c)->download(ICTX(c), host, src, bytes);
}
static fap_status t_sync(void *c) { return IN(c)->synchronize(ICTX(c)); }
static fap_status t_preprocess(void *c, float *out, const fap_frame *f, int size, size_t *up) {
  LOG(c, "preprocess %dx%d size=%d\n", f->width, f->height, size);
  return IN(c)->preprocess(ICTX(c), out, f, size, up);
}
static void t_im2col(void *c, float *out, const float *image, int size, int patch) {
  LOG(c, "im2col size=%d patch=%d\n", size, patch);
  IN(c)->im2col(ICTX(c), out, image, size, patch);
}
static void t_linear(void *c, float *y, int ldy, const float *x, int ldx, const float *w,
                     const float *b, int rows, int in, int out, int acc) {
  LOG(c, "linear ldy=%d ldx=%d bias=%d rows=%d in=%d out=%d accumulate=%d\n", ldy, ldx, b != NULL,
      rows, in, out, acc);
  IN(c)->linear(ICTX(c), y, ldy, x, ldx, w, b, rows, in, out, acc);
}
static void t_matmul(void *c, float *y, int ldy, const float *x, int ldx, const float *p, int rows,
                     int in, int out) {
  LOG(c, "matmul ldy=%d ldx=%d rows=%d in=%d out=%d\n", ldy, ldx, rows, in, out);
  IN(c)->matmul(ICTX(c), y, ldy, x, ldx, p, rows, in, out);
}
static void t_layernorm(void *c, float *y, int ldy, const float *x, int ldx, const float *w,
                        const float *b, int rows, int dim) {
  LOG(c, "layernorm ldy=%d ldx=%d rows=%d dim=%d\n", ldy, ldx, rows, dim);
  IN(c)->layernorm(ICTX(c), y, ldy, x, ldx, w, b, rows, dim);
}
static void t_quickgelu(void *c, float *x, size_t n) {
  LOG(c, "quickgelu n=%zu\n", n);
  IN(c)->quickgelu(ICTX(c), x, n);
}
static void t_relu(void *c, float *x, size_t n) {
  LOG(c, "relu n=%zu\n", n);
  IN(c)->relu(ICTX(c), x, n);
}
static void t_add(void *c, float *y, const float *x, size_t n) {
  LOG(c, "add n=%zu\n", n);
  IN(c)->add(ICTX(c), y, x, n);
}
static void t_add_row(void *c, float *y, int ldy, const float *row, int rows, int dim) {
  LOG(c, "add_row ldy=%d rows=%d dim=%d\n", ldy, rows, dim);
  IN(c)->add_row(ICTX(c), y, ldy, row, rows, dim);
}
static void t_copy2d(void *c, void *dst, size_t ldd, const void *src, size_t lds, size_t rows,
                     size_t row_bytes) {
  LOG(c, "copy2d ld_dst=%zu ld_src=%zu rows=%zu row_bytes=%zu\n", ldd, lds, rows, row_bytes);
  IN(c)->copy2d(ICTX(c), dst, ldd, src, lds, rows, row_bytes);
}
static void t_attention(void *c, float *out, int ldo, const float *q, int ldq, const float *k,
                        int ldk, const float *v, int ldv, int nq, int nk, int heads, int hd,
                        int q_pos0) {
  /* which of q, k, v alias: the V-V path passes v three times */
  LOG(c, "attention ldo=%d ldq=%d ldk=%d ldv=%d nq=%d nk=%d heads=%d hd=%d q_pos0=%d q=k:%d k=v:%d\n",
      ldo, ldq, ldk, ldv, nq, nk, heads, hd, q_pos0, q == k, k == v);
  IN(c)->attention(ICTX(c), out, ldo, q, ldq, k, ldk, v, ldv, nq, nk, heads, hd, q_pos0);
}
static void t_l2norm(void *c, float *y, int ldy, const float *x, int ldx, int rows, int dim) {
  LOG(c, "l2norm_rows ldy=%d ldx=%d rows=%d dim=%d\n", ldy, ldx, rows, dim);
  IN(c)->l2norm_rows(ICTX(c), y, ldy, x, ldx, rows, dim);
}
static void t_two_way(void *c, float *out, const float *x, int ldx, int rows, int dim,
                      const float *t0, const float *t1, float inv_tau) {
  LOG(c, "two_way_prob ldx=%d rows=%d dim=%d inv_tau=%.9g\n", ldx, rows, dim, inv_tau);
  IN(c)->two_way_prob(ICTX(c), out, x, ldx, rows, dim, t0, t1, inv_tau);
}
static void t_reduce_max(void *c, float *out, const float *x, int n) {
  LOG(c, "reduce_max n=%d\n", n);
  IN(c)->reduce_max(ICTX(c), out, x, n);
}
static void t_topk(void *c, int32_t *idx, const float *x, int n, int k) {
  LOG(c, "topk n=%d k=%d\n", n, k);
  IN(c)->topk(ICTX(c), idx, x, n, k);
}
static void t_gather(void *c, float *dst, const float *src, int lds, const int32_t *idx, int n,
                     int dim) {
  LOG(c, "gather_rows lds=%d n=%d dim=%d\n", lds, n, dim);
  IN(c)->gather_rows(ICTX(c), dst, src, lds, idx, n, dim);
}
static void t_mean_rows(void *c, float *y, const float *x, int rows, int dim) {
  LOG(c, "mean_rows rows=%d dim=%d\n", rows, dim);
  IN(c)->mean_rows(ICTX(c), y, x, rows, dim);
}
static void t_upsample(void *c, float *out, const float *a, const float *b, int grid, int size) {
  LOG(c, "upsample_mean grid=%d size=%d a=b:%d\n", grid, size, a == b);
  IN(c)->upsample_mean(ICTX(c), out, a, b, grid, size);
}
static void t_blur(void *c, float *out, const float *in, float *tmp, int size, const float *kernel,
                   int radius) {
  LOG(c, "gaussian_blur size=%d radius=%d\n", size, radius);
  IN(c)->gaussian_blur(ICTX(c), out, in, tmp, size, kernel, radius);
}
static void *t_alloc_frames(void *c, size_t frame, size_t total, fap_buffer_kind kind) {
  LOG(c, "alloc_frames frame_bytes=%zu total_bytes=%zu kind=%d\n", frame, total, (int)kind);
  return IN(c)->alloc_frames(ICTX(c), frame, total, kind);
}
static void t_attention_dual(void *c, float *ox, float *oy, int ldo, const float *qkv, int ldqkv,
                             int rows, int nq_std, int heads, int hd) {
  LOG(c, "attention_dual ldo=%d ldqkv=%d rows=%d nq_std=%d heads=%d hd=%d\n", ldo, ldqkv, rows,
      nq_std, heads, hd);
  IN(c)->attention_dual(ICTX(c), ox, oy, ldo, qkv, ldqkv, rows, nq_std, heads, hd);
}
static void t_attention_cached(void *c, float *out, int ldo, const float *qkv, int ldqkv,
                               int prompts, int rows, int pos0, float *cache, size_t cache_stride,
                               size_t values_offset, int store, int heads, int hd) {
  LOG(c, "attention_cached ldo=%d ldqkv=%d prompts=%d rows=%d pos0=%d cache_stride=%zu "
         "values_offset=%zu store=%d heads=%d hd=%d\n",
      ldo, ldqkv, prompts, rows, pos0, cache_stride, values_offset, store, heads, hd);
  IN(c)->attention_cached(ICTX(c), out, ldo, qkv, ldqkv, prompts, rows, pos0, cache,
                          cache_stride, values_offset, store, heads, hd);
}
static void t_score(void *c, float *scalars) {
  LOG(c, "faprompt_score\n");
  IN(c)->faprompt_score(ICTX(c), scalars);
}
/* the scope's calls go into the log too, so a diff shows where a
 * description starts and whether it was asked for */
static fap_status t_frames_begin(void *c, const fap_frame *frames, int count, int size,
                                 const fap_blend *blend) {
  LOG(c, "frames_begin count=%d size=%d blend=%d\n", count, size, blend != NULL);
  return IN(c)->frames_begin(ICTX(c), frames, count, size, blend);
}
static fap_status t_frames_pass(void *c, int pass, int *describe) {
  fap_status s = IN(c)->frames_pass(ICTX(c), pass, describe);
  LOG(c, "frames_pass %d describe=%d\n", pass, *describe);
  return s;
}
static void t_preprocess_frames(void *c, float *image, int size) {
  LOG(c, "preprocess_frames size=%d\n", size);
  IN(c)->preprocess_frames(ICTX(c), image, size);
}
static void t_blend_frames(void *c, const float *maps, int size) {
  LOG(c, "blend_frames size=%d\n", size);
  IN(c)->blend_frames(ICTX(c), maps, size);
}
static void t_frames_mark(void *c, int stage) {
  LOG(c, "frames_mark %d\n", stage);
  IN(c)->frames_mark(ICTX(c), stage);
}
static fap_status t_frames_end(void *c, fap_result *results) {
  LOG(c, "frames_end\n");
  return IN(c)->frames_end(ICTX(c), results);
}
static const void *t_frames_output(void *c, const void *buffer) {
  return IN(c)->frames_output(ICTX(c), buffer);
}
static fap_status t_frames_draw(void *c, const fap_frame *frame, const float *map, int map_size,
                                const fap_blend *blend, size_t *bytes) {
  LOG(c, "frames_draw map_size=%d\n", map_size);
  return IN(c)->frames_draw(ICTX(c), frame, map, map_size, blend, bytes);
}

fap_status fap_backend_trace_wrap(fap_backend *b, void *log) {
  trace_ctx *t = calloc(1, sizeof *t);
  if (!t)
    return fap_fail(FAP_ERR_NO_MEMORY, "trace backend: out of memory");
  t->inner = *b;
  t->log = log;
  const fap_backend_ops *in = b->ops;
  t->ops = (fap_backend_ops){
      .name = in->name, .caps = in->caps, .destroy = t_destroy, .alloc = t_alloc,
      .release = t_release, .import_weights = t_import, .weight_role = t_role,
      .upload = t_upload, .download = t_download, .synchronize = t_sync,
      .preprocess = t_preprocess, .im2col = t_im2col, .linear = t_linear, .matmul = t_matmul,
      .layernorm = t_layernorm, .quickgelu = t_quickgelu, .relu = t_relu, .add = t_add,
      .add_row = t_add_row, .copy2d = t_copy2d, .attention = t_attention,
      .l2norm_rows = t_l2norm, .two_way_prob = t_two_way, .reduce_max = t_reduce_max,
      .topk = t_topk, .gather_rows = t_gather, .mean_rows = t_mean_rows,
      .upsample_mean = t_upsample, .gaussian_blur = t_blur,
      .alloc_frames = t_alloc_frames, .attention_dual = t_attention_dual,
      .attention_cached = t_attention_cached, .faprompt_score = t_score,
      .frames_begin = t_frames_begin, .frames_pass = t_frames_pass,
      .preprocess_frames = t_preprocess_frames, .blend_frames = t_blend_frames,
      .frames_mark = t_frames_mark, .frames_end = t_frames_end,
      .frames_output = t_frames_output,
      .frames_draw = in->frames_draw ? t_frames_draw : NULL};
  b->ops = &t->ops;
  b->ctx = t;
  return FAP_OK;
}
