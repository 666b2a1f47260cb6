/* The detector: creation (the buffers, everything that depends only on the
 * model computed once), the description of a frame (docs/SPEC.md sections 4
 * and 6: the op calls every backend gets, in a frame scope),
 * results and intermediates. Written once against the backend table. */
#include "detector_internal.h"

#include "backend_module.h"
#include "log.h"
#include "pixel.h"
#include "resample.h"
#include "score.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


static const char *const intermediate_names[] = {
    "preprocessed", "tokens", "global", "text_features", "text_normal", "text_abnormal", "map1",
    "topk_index", "prior", "text_features_dynamic", "text_abnormal_dynamic", "map2",
    "image_text_prob", "map_raw", "map", "score", NULL,
};
/* docs/SPEC.md section 6 names; "map" (the result, on the host) stays second to last */
static const char *const anomalyclip_names[] = {
    "preprocessed", "tokens", "global", "text_features", "text_normal", "text_abnormal",
    "layer_maps", "image_text_prob", "map_raw", "map_sum", "map", "score", NULL,
};
enum { AC_MAP_RAW = 8, AC_MAP_SUM = 9 }; /* their places in that list */
#define MAX_INTERMEDIATES (sizeof intermediate_names / sizeof intermediate_names[0] - 1)

typedef struct {
  fap_tensor_view view; /* data = host copy */
  const void *src;      /* backend pointer (frame 0's part), NULL for host-computed ones */
  size_t bytes;
  size_t frame_bytes;   /* src's frame stride (0: shared) */
} intermediate;

const char *const *fap_intermediate_names(void) { return intermediate_names; }

static const char *const *names_of(const fap_detector *d) {
  return d->cfg->family == FAP_FAMILY_ANOMALYCLIP ? anomalyclip_names : intermediate_names;
}

const char *const *fap_detector_intermediate_names(const fap_detector *d) {
  return d ? names_of(d) : intermediate_names;
}

static size_t count_names(const char *const *names) {
  size_t n = 0;
  while (names[n])
    n++;
  return n;
}

void fap_detector_options_init(fap_detector_options *o) {
  memset(o, 0, sizeof *o);
  o->backend = FAP_BACKEND_AUTO;
  o->sigma = -1.0f;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* ---- buffers ------------------------------------------------------------- */

/* The shared buffers (one arena from alloc) and the frame buffers (one
 * alloc_frames each): `frame` elements per frame of a scope, `creation`
 * elements at least (the creation passes may use more rows than a frame). */
typedef struct {
  void **slot;
  size_t frame, total; /* bytes */
  fap_buffer_kind kind;
  int shared;
} buffer_entry;

typedef struct {
  buffer_entry items[80];
  int count;
  int scope; /* frames per scope */
} buffer_plan;

static void shared(buffer_plan *p, void *slot, size_t count, size_t elem) {
  p->items[p->count++] = (buffer_entry){slot, 0, (count * elem + 63) & ~(size_t)63,
                                        FAP_BUFFER_F32, 1};
}

static void per_frame(buffer_plan *p, void *slot, size_t frame, size_t creation, size_t elem,
                      fap_buffer_kind kind) {
  size_t total = frame * (size_t)p->scope;
  if (creation > total)
    total = creation;
  p->items[p->count++] = (buffer_entry){slot, frame * elem, total * elem, kind, 0};
}

static fap_status plan_buffers(fap_detector *d) {
  const fap_config *c = d->cfg;
  fap_buffers *b = &d->b;
  const size_t s2 = (size_t)d->size * d->size, n = d->n_patches, rows = n + 1;
  const size_t cv = c->vision_width, ct = c->text_width, e = c->embed_dim, k = c->n_prompts;
  const size_t p2 = (size_t)c->patch_size * c->patch_size;
  const size_t la = c->end_pos_abnormal + 1, ln = c->end_pos_normal + 1;
  const size_t trows = ln > k * la ? ln : k * la, fr = k * d->text_rows; /* text rows */
  const size_t f = sizeof(float), i4 = sizeof(int32_t);
  const size_t lo = c->n_out_layers; /* patch features and maps per out layer */
  const fap_buffer_kind F = FAP_BUFFER_F32, A = FAP_BUFFER_ACTIVATION, O = FAP_BUFFER_OUTPUT;
  buffer_plan p = {.scope = d->scope};

  per_frame(&p, &b->image, 3 * s2, 0, f, F);
  per_frame(&p, &b->cols, n * 3 * p2, 0, f, A);
  per_frame(&p, &b->x, rows * cv, 0, f, F);
  per_frame(&p, &b->y, rows * cv, 0, f, F);
  per_frame(&p, &b->h, rows * cv, 0, f, A);
  per_frame(&p, &b->qkv, rows * 3 * cv, 0, f, A);
  per_frame(&p, &b->attn, rows * cv, 0, f, A);
  per_frame(&p, &b->attn_y, rows * cv, 0, f, A);
  per_frame(&p, &b->hidden, rows * 4 * cv, 0, f, A);
  per_frame(&p, &b->post, rows * cv, 0, f, F);
  per_frame(&p, &b->tokens, lo * rows * e, 0, f, F);
  per_frame(&p, &b->global, e, 0, f, F);
  per_frame(&p, &b->tokens_n, lo * rows * e, 0, f, F);
  per_frame(&p, &b->global_n, e, 0, f, F);
  per_frame(&p, &b->map1, lo * n, 0, f, F);
  per_frame(&p, &b->map2, n, 0, f, F);
  per_frame(&p, &b->topk, c->top_m, 0, i4, F);
  per_frame(&p, &b->prior_in, (size_t)c->top_m * e, 0, f, F);
  per_frame(&p, &b->prior_hidden, c->prior_hidden, 0, f, F);
  per_frame(&p, &b->prior, ct, 0, f, F);
  per_frame(&p, &b->feats_dynamic, k * e, 0, f, F);
  per_frame(&p, &b->mean, e, e, f, F); /* also the static features' mean (creation) */
  per_frame(&p, &b->text_abnormal_dynamic, e, 0, f, F);
  per_frame(&p, &b->scalars, 4, 0, f, O);
  per_frame(&p, &b->map_raw, s2, 0, f, F);
  /* AnomalyCLIP with several out layers: their upsampled maps before the mean */
  per_frame(&p, &b->layer_up, (c->family == FAP_FAMILY_ANOMALYCLIP && lo > 1 ? lo : 0) * s2, 0,
            f, F);
  per_frame(&p, &b->map, s2, 0, f, O);
  per_frame(&p, &b->blur_tmp, s2, 0, f, F);
  per_frame(&p, &b->tx, fr * ct, trows * ct, f, F);
  per_frame(&p, &b->th, fr * ct, 0, f, A);
  per_frame(&p, &b->tqkv, fr * 3 * ct, 0, f, A);
  per_frame(&p, &b->tattn, fr * ct, 0, f, A);
  per_frame(&p, &b->thidden, fr * 4 * ct, 0, f, A);
  per_frame(&p, &b->tfeat_h, k * ct, (k + 1) * ct, f, F);

  shared(&p, &b->pos, rows * cv, f);
  shared(&p, &b->feats_static, (k + 1) * e, f);
  shared(&p, &b->text_normal, e, f);
  shared(&p, &b->text_abnormal, e, f);
  shared(&p, &b->gauss, 2 * (size_t)d->radius + 1, f);
  shared(&p, &b->kv, (size_t)c->text_layers * (k + 1) * 2 * d->text_lmax * ct, f);
  shared(&p, &b->text_init, k * d->text_rows * ct, f);
  /* the creation passes' text scratch: f32, as everything that depends only
   * on the model (every frame reuses it, so its rounding would be in every
   * frame; its cost is paid once) */
  shared(&p, &b->prep_h, trows * ct, f);
  shared(&p, &b->prep_qkv, trows * 3 * ct, f);
  shared(&p, &b->prep_attn, trows * ct, f);
  shared(&p, &b->prep_hidden, trows * 4 * ct, f);

  const fap_backend_ops *op = d->backend.ops;
  size_t total = 0, frames_total = 0;
  for (int i = 0; i < p.count; i++)
    total += p.items[i].shared ? p.items[i].total : 0;
  d->arena = op->alloc(d->backend.ctx, total);
  if (!d->arena)
    return fap_fail(FAP_ERR_NO_MEMORY, "detector: cannot allocate the %zu MiB of model buffers",
                    total >> 20);
  d->arena_bytes = total;
  char *at = d->arena;
  for (int i = 0; i < p.count; i++) {
    buffer_entry *it = &p.items[i];
    if (it->shared) {
      *it->slot = at;
      at += it->total;
      continue;
    }
    void *buf = op->alloc_frames(d->backend.ctx, it->frame, it->total ? it->total : 64, it->kind);
    if (!buf)
      return fap_fail(FAP_ERR_NO_MEMORY,
                      "detector: the %s backend cannot allocate %zu MiB of frame buffers for "
                      "batch %d at image size %d (%zu MiB so far); use a smaller batch or image "
                      "size",
                      op->name, it->total >> 20, d->scope, d->size, frames_total >> 20);
    d->frame_buffers[d->n_frame_buffers++] =
        (struct fap_frame_buffer){buf, it->frame, it->total};
    frames_total += it->total;
    *it->slot = buf;
  }
  return FAP_OK;
}

/* the frame stride of a pointer into a frame buffer, 0 for a shared one */
static size_t frame_bytes_of(const fap_detector *d, const void *p) {
  for (int i = 0; i < d->n_frame_buffers; i++) {
    const struct fap_frame_buffer *f = &d->frame_buffers[i];
    if ((const char *)p >= (const char *)f->base &&
        (const char *)p < (const char *)f->base + f->total_bytes)
      return f->frame_bytes;
  }
  return 0;
}

/* ---- weights -------------------------------------------------------------- */

static const float *import(fap_detector *d, const float *host, size_t count) {
  return d->backend.ops->import_weights(d->backend.ctx, host, count);
}

static void import_block(fap_detector *d, fap_block *dst, const fap_block *src, size_t c) {
  dst->ln1_w = import(d, src->ln1_w, c);
  dst->ln1_b = import(d, src->ln1_b, c);
  dst->in_w = import(d, src->in_w, 3 * c * c);
  dst->in_b = import(d, src->in_b, 3 * c);
  dst->out_w = import(d, src->out_w, c * c);
  dst->out_b = import(d, src->out_b, c);
  dst->ln2_w = import(d, src->ln2_w, c);
  dst->ln2_b = import(d, src->ln2_b, c);
  dst->fc_w = import(d, src->fc_w, 4 * c * c);
  dst->fc_b = import(d, src->fc_b, 4 * c);
  dst->cproj_w = import(d, src->cproj_w, 4 * c * c);
  dst->cproj_b = import(d, src->cproj_b, c);
}

static fap_status read_model_weights(void *model, const float *w, size_t count, float *dst) {
  return fap_model_read_weights(model, w, count, dst);
}

/* A vision block's linear weights are the model's lazy tensors (model.h):
 * each is made resident in f32 unless the backend takes it into a copy of
 * its own. The vision encoder is where reduced precision pays (the text
 * encoder runs 10 GFLOP per frame against its 350-830); text, the patch
 * embedding and the prior stay f32. */
static fap_status import_vision_block(fap_detector *d, fap_block *dst, const fap_block *src,
                                      size_t cv) {
  const fap_backend_ops *op = d->backend.ops;
  const struct {
    const float *w;
    size_t count;
    fap_weight_role role;
  } linears[] = {
      {src->in_w, 3 * cv * cv, FAP_WEIGHT_READS_LN},
      {src->fc_w, 4 * cv * cv, FAP_WEIGHT_READS_LN},
      {src->out_w, cv * cv, FAP_WEIGHT_RESIDUAL},
      {src->cproj_w, 4 * cv * cv, FAP_WEIGHT_RESIDUAL},
  };
  const fap_weight_reader reader = {read_model_weights, d->model};
  fap_status s = FAP_OK;
  for (size_t k = 0; k < 4 && !s && !op->weight_role; k++)
    s = fap_model_need_weights(d->model, linears[k].w, linears[k].count);
  if (s)
    return s;
  import_block(d, dst, src, cv);
  if (!op->weight_role)
    return FAP_OK;
  const float *handles[4] = {dst->in_w, dst->fc_w, dst->out_w, dst->cproj_w};
  for (size_t k = 0; k < 4 && !s; k++) {
    if (!handles[k])
      return fap_fail(FAP_ERR_BACKEND, "detector: the %s backend could not take the weights",
                      op->name);
    if (!op->weight_role(d->backend.ctx, handles[k], linears[k].count, linears[k].role, &reader))
      s = fap_model_need_weights(d->model, linears[k].w, linears[k].count);
  }
  return s;
}

static fap_status import_weights(fap_detector *d) {
  const fap_model *m = d->model;
  const fap_config *c = d->cfg;
  fap_net *w = &d->net;
  size_t cv = c->vision_width, ct = c->text_width, e = c->embed_dim, p = c->patch_size;
  w->vblocks = calloc((size_t)c->vision_layers, sizeof *w->vblocks);
  w->tblocks = calloc((size_t)c->text_layers, sizeof *w->tblocks);
  w->deep = calloc((size_t)c->prompt_depth, sizeof *w->deep);
  if (!w->vblocks || !w->tblocks || !w->deep)
    return fap_fail(FAP_ERR_NO_MEMORY, "detector: out of memory");
  w->conv1 = import(d, m->conv1, cv * 3 * p * p);
  w->class_emb = import(d, m->class_emb, cv);
  w->ln_pre_w = import(d, m->ln_pre_w, cv);
  w->ln_pre_b = import(d, m->ln_pre_b, cv);
  w->ln_post_w = import(d, m->ln_post_w, cv);
  w->ln_post_b = import(d, m->ln_post_b, cv);
  w->vproj = import(d, m->vproj, cv * e);
  for (int i = 0; i < c->vision_layers; i++) {
    fap_status s = import_vision_block(d, &w->vblocks[i], &m->vblocks[i], cv);
    if (s)
      return s;
  }
  w->ln_final_w = import(d, m->ln_final_w, ct);
  w->ln_final_b = import(d, m->ln_final_b, ct);
  w->tproj = import(d, m->tproj, ct * e);
  for (int i = 0; i < c->text_layers; i++)
    import_block(d, &w->tblocks[i], &m->tblocks[i], ct);
  for (int j = 0; j < c->prompt_depth - 1; j++)
    w->deep[j] = import(d, m->deep[j], (size_t)c->prompt_length * ct);
  if (c->family == FAP_FAMILY_FAPROMPT) {
    w->prior1_w = import(d, m->prior1_w, (size_t)c->prior_hidden * c->top_m * e);
    w->prior1_b = import(d, m->prior1_b, (size_t)c->prior_hidden);
    w->prior2_w = import(d, m->prior2_w, ct * c->prior_hidden);
    w->prior2_b = import(d, m->prior2_b, ct);
    if (!w->prior2_b)
      return fap_fail(FAP_ERR_BACKEND, "detector: the %s backend could not take the weights",
                      d->backend.ops->name);
  }
  if (!w->conv1 || !w->vproj || !w->tproj)
    return fap_fail(FAP_ERR_BACKEND, "detector: the %s backend could not take the weights",
                    d->backend.ops->name);
  return FAP_OK;
}

/* Positional embedding for grid G from the stored G0 grid: bilinear,
 * align_corners = false; the CLS row is kept. Done once per detector. */
static fap_status upload_positional(fap_detector *d) {
  const fap_config *c = d->cfg;
  const int g0 = c->vision_grid, g = d->grid, cv = c->vision_width;
  float *host = malloc(((size_t)g * g + 1) * cv * sizeof(float));
  if (!host)
    return fap_fail(FAP_ERR_NO_MEMORY, "detector: out of memory");
  const float *src = d->model->vpos;
  memcpy(host, src, (size_t)cv * sizeof(float));
  for (int y = 0; y < g; y++) {
    int y0, y1;
    float wy;
    fap_bilinear_coord(y, g0, g, &y0, &y1, &wy);
    for (int x = 0; x < g; x++) {
      int x0, x1;
      float wx;
      fap_bilinear_coord(x, g0, g, &x0, &x1, &wx);
      const float *a = src + (size_t)(1 + y0 * g0 + x0) * cv, *bb = src + (size_t)(1 + y0 * g0 + x1) * cv;
      const float *cc = src + (size_t)(1 + y1 * g0 + x0) * cv, *dd = src + (size_t)(1 + y1 * g0 + x1) * cv;
      float *o = host + (size_t)(1 + y * g + x) * cv;
      for (int i = 0; i < cv; i++)
        o[i] = (1 - wy) * ((1 - wx) * a[i] + wx * bb[i]) + wy * ((1 - wx) * cc[i] + wx * dd[i]);
    }
  }
  fap_status s = d->backend.ops->upload(d->backend.ctx, d->b.pos, host,
                                        ((size_t)g * g + 1) * cv * sizeof(float));
  free(host);
  return s;
}

static fap_status upload_gaussian(fap_detector *d) {
  float *w = malloc((2 * (size_t)d->radius + 1) * sizeof(float));
  if (!w)
    return fap_fail(FAP_ERR_NO_MEMORY, "detector: out of memory");
  fap_gaussian_fill(d->sigma, w);
  fap_status s = d->backend.ops->upload(d->backend.ctx, d->b.gauss, w,
                                        (2 * (size_t)d->radius + 1) * sizeof(float));
  free(w);
  return s;
}

/* ---- intermediates -------------------------------------------------------- */

static void describe(intermediate *it, const void *src, fap_dtype dtype, int ndim, int64_t d0,
                     int64_t d1, int64_t d2) {
  it->src = src;
  it->view.dtype = dtype;
  it->view.ndim = ndim;
  int64_t dims[3] = {d0, d1, d2};
  size_t count = 1;
  for (int i = 0; i < ndim; i++) {
    it->view.shape[i] = dims[i];
    count *= (size_t)dims[i];
  }
  it->bytes = count * fap_dtype_size(dtype);
}

/* docs/SPEC.md section 6 intermediates, in anomalyclip_names order */
static void describe_anomalyclip(fap_detector *d, intermediate *it) {
  const fap_config *c = d->cfg;
  fap_buffers *b = &d->b;
  int64_t s = d->size, n = d->n_patches, e = c->embed_dim, l = c->n_out_layers;
  describe(&it[0], b->image, FAP_DTYPE_F32, 3, 3, s, s);
  describe(&it[1], b->tokens, FAP_DTYPE_F32, 3, l, n + 1, e);
  describe(&it[2], b->global, FAP_DTYPE_F32, 1, e, 0, 0);
  describe(&it[3], b->feats_static, FAP_DTYPE_F32, 2, 2, e, 0);
  describe(&it[4], b->text_normal, FAP_DTYPE_F32, 1, e, 0, 0);
  describe(&it[5], b->text_abnormal, FAP_DTYPE_F32, 1, e, 0, 0);
  describe(&it[6], b->map1, FAP_DTYPE_F32, 2, l, n, 0);
  describe(&it[7], b->scalars + 2, FAP_DTYPE_F32, 1, 1, 0, 0);
  describe(&it[AC_MAP_RAW], b->map_raw, FAP_DTYPE_F32, 2, s, s, 0); /* times L when fetched */
  describe(&it[AC_MAP_SUM], NULL, FAP_DTYPE_F32, 2, s, s, 0);       /* map * L, on the host */
  it[AC_MAP_SUM].view.data = d->map_sum_host;
  describe(&it[10], NULL, FAP_DTYPE_F32, 2, s, s, 0); /* the result map, on the host already */
  describe(&it[11], NULL, FAP_DTYPE_F32, 1, 1, 0, 0);
}

static fap_status setup_intermediates(fap_detector *d) {
  const fap_config *c = d->cfg;
  fap_buffers *b = &d->b;
  const size_t count = count_names(names_of(d));
  intermediate *it = calloc(count, sizeof *it);
  if (!it)
    return fap_fail(FAP_ERR_NO_MEMORY, "detector: out of memory");
  d->inter_host = it;
  d->n_intermediates = (int)count;
  int64_t s = d->size, n = d->n_patches, e = c->embed_dim, k = c->n_prompts;
  if (c->family == FAP_FAMILY_ANOMALYCLIP) {
    if (!(d->map_sum_host = malloc((size_t)s * s * sizeof(float))))
      return fap_fail(FAP_ERR_NO_MEMORY, "detector: out of memory for intermediates");
    describe_anomalyclip(d, it);
    goto host_results;
  }
  describe(&it[0], b->image, FAP_DTYPE_F32, 3, 3, s, s);
  describe(&it[1], b->tokens, FAP_DTYPE_F32, 2, n + 1, e, 0);
  describe(&it[2], b->global, FAP_DTYPE_F32, 1, e, 0, 0);
  describe(&it[3], b->feats_static, FAP_DTYPE_F32, 2, k + 1, e, 0);
  describe(&it[4], b->text_normal, FAP_DTYPE_F32, 1, e, 0, 0);
  describe(&it[5], b->text_abnormal, FAP_DTYPE_F32, 1, e, 0, 0);
  describe(&it[6], b->map1, FAP_DTYPE_F32, 1, n, 0, 0);
  describe(&it[7], b->topk, FAP_DTYPE_I32, 1, c->top_m, 0, 0);
  describe(&it[8], b->prior, FAP_DTYPE_F32, 1, c->text_width, 0, 0);
  describe(&it[9], b->feats_dynamic, FAP_DTYPE_F32, 2, k, e, 0);
  describe(&it[10], b->text_abnormal_dynamic, FAP_DTYPE_F32, 1, e, 0, 0);
  describe(&it[11], b->map2, FAP_DTYPE_F32, 1, n, 0, 0);
  describe(&it[12], b->scalars + 2, FAP_DTYPE_F32, 1, 1, 0, 0);
  describe(&it[13], b->map_raw, FAP_DTYPE_F32, 2, s, s, 0);
  describe(&it[14], NULL, FAP_DTYPE_F32, 2, s, s, 0); /* the result map, on the host already */
  describe(&it[15], NULL, FAP_DTYPE_F32, 1, 1, 0, 0);
host_results:
  it[count - 2].view.data = d->map_host; /* re-pointed at the last frame's map by every run */
  it[count - 1].view.data = &d->scalars_host[3];
  for (size_t i = 0; i < count; i++) {
    if (!it[i].src)
      continue;
    it[i].frame_bytes = frame_bytes_of(d, it[i].src);
    it[i].view.data = malloc(it[i].bytes);
    if (!it[i].view.data)
      return fap_fail(FAP_ERR_NO_MEMORY, "detector: out of memory for intermediates");
  }
  return FAP_OK;
}

static void free_intermediates(fap_detector *d) {
  intermediate *it = d->inter_host;
  if (!it)
    return;
  for (int i = 0; i < d->n_intermediates; i++)
    if (it[i].src)
      free((void *)it[i].view.data);
  free(it);
}

static fap_status intermediate_of(const fap_detector *d, const char *name,
                                  fap_tensor_view *view) {
  if (!d || !name || !view)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_detector_intermediate: NULL argument");
  if (!d->keep_intermediates)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                    "intermediate '%s' requested, but the detector was created without "
                    "keep_intermediates",
                    name);
  if (!d->has_run)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                    "intermediate '%s' requested before any frame was run", name);
  const intermediate *it = d->inter_host;
  const char *const *names = names_of(d);
  for (int i = 0; i < d->n_intermediates; i++)
    if (strcmp(names[i], name) == 0) {
      *view = it[i].view;
      return FAP_OK;
    }
  return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                  "no intermediate named '%s' for a %s model (see fap.h for the list)", name,
                  fap_family_name(d->cfg->family));
}

/* ---- creation ----------------------------------------------------------- */

/* The one place a detector gets its backend (fap_detector_new_wrapped may
 * then wrap it): the kind asked for, AUTO resolved by probing for a device. */
static fap_status open_backend(fap_detector *d, const fap_detector_options *o) {
  fap_backend_kind kind = o->backend;
  if (kind == FAP_BACKEND_AUTO) {
    const char *why;
    int devices = fap_backend_cuda_probe(&why);
    kind = devices > 0 ? FAP_BACKEND_CUDA : FAP_BACKEND_CPU;
    if (devices > 0)
      fap_log(FAP_LOG_INFO, "backend auto: cuda (%d device%s)", devices, devices == 1 ? "" : "s");
    else
      fap_log(FAP_LOG_INFO, "backend auto: cpu, because %s", why);
  }
  d->backend_kind = kind;
  if (kind == FAP_BACKEND_CUDA) {
    if (o->precision == FAP_PRECISION_INT8)
      return fap_fail(FAP_ERR_UNSUPPORTED,
                      "precision int8 is a CPU backend mode; the CUDA backend computes in f16 "
                      "or bf16");
    /* what backend_cuda.c runs: bf16 when asked, f16 otherwise (it refuses f32) */
    d->precision = o->precision == FAP_PRECISION_BF16 ? FAP_PRECISION_BF16 : FAP_PRECISION_F16;
    return fap_backend_cuda_new(o->device_id, o->precision, &d->backend);
  }
  if (kind == FAP_BACKEND_CPU)
    return fap_backend_cpu_new_precision(o->threads, o->reference, o->precision, &d->backend,
                                         &d->precision);
  return fap_fail(FAP_ERR_INVALID_ARGUMENT, "unknown backend %d", (int)kind);
}

/* t_n = norm(f_n), t_a = norm(mean_i f_a,i): the static text features. */
static void static_text_features(fap_detector *d) {
  const fap_backend_ops *op = d->backend.ops;
  void *be = d->backend.ctx;
  const int e = d->cfg->embed_dim;
  fap_buffers *b = &d->b;
  op->l2norm_rows(be, b->text_normal, e, b->feats_static, e, 1, e);
  op->mean_rows(be, b->mean, b->feats_static + e, d->cfg->n_prompts, e);
  op->l2norm_rows(be, b->text_abnormal, e, b->mean, e, 1, e);
}

static fap_status detector_new(fap_model *model, const fap_detector_options *options,
                               fap_backend_wrap_fn wrap, void *wrap_data, fap_detector **out) {
  if (!out)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_detector_new: out is NULL");
  *out = NULL;
  if (!model)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_detector_new: no model");
  fap_detector_options defaults;
  if (!options) {
    fap_detector_options_init(&defaults);
    options = &defaults;
  }
  const fap_config *c = &model->cfg;
  int size = options->image_size ? options->image_size : c->image_size;
  if (size < c->patch_size || size % c->patch_size != 0 || size > 4096)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                    "image size %d is not usable: it must be a multiple of the patch size %d, "
                    "between %d and 4096",
                    size, c->patch_size, c->patch_size);
  int grid = size / c->patch_size;
  if (grid * grid < c->top_m)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                    "image size %d gives %d patches, fewer than the %d the prior selects; use a "
                    "larger image size",
                    size, grid * grid, c->top_m);
  float sigma = options->sigma < 0 ? c->sigma : options->sigma;
  if (!isfinite(sigma) || sigma > 1000.0f)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "sigma %g is out of range [0, 1000]", sigma);
  if (options->threads < 0 || options->threads > 1024)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "threads %d is out of range [0 (all cores), 1024]",
                    options->threads);
  int batch = options->batch ? options->batch : 1;
  if (batch < 1 || batch > FAP_MAX_BATCH)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "batch %d is out of range [1, %d]",
                    options->batch, FAP_MAX_BATCH);
  if ((unsigned)options->precision > FAP_PRECISION_INT8)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "unknown precision %d", (int)options->precision);

  fap_detector *d = calloc(1, sizeof *d);
  if (!d)
    return fap_fail(FAP_ERR_NO_MEMORY, "detector: out of memory");
  d->model = fap_model_ref(model);
  d->cfg = c;
  d->size = size;
  d->grid = grid;
  d->n_patches = grid * grid;
  d->sigma = sigma;
  d->batch = batch;
  d->radius = fap_gaussian_radius(sigma);
  /* FAPrompt's per-frame text rows; AnomalyCLIP's text runs once, at creation */
  d->text_rows = c->family == FAP_FAMILY_FAPROMPT ? c->end_pos_abnormal - c->n_pos : 0;
  d->text_lmax = (c->end_pos_abnormal > c->end_pos_normal ? c->end_pos_abnormal
                                                           : c->end_pos_normal) + 1;
  d->keep_intermediates = options->keep_intermediates;
  d->log.fn = options->log;
  d->log.user_data = options->log_user_data;

  fap_status s = open_backend(d, options); /* sets d->precision to what runs */
  if (!s && wrap)
    s = wrap(&d->backend, wrap_data);
  /* a backend that batches takes the whole batch in one scope; the others
   * take one frame per scope, its map copied out to the batch's results */
  d->scope = !s && (d->backend.ops->caps & FAP_CAP_BATCH) ? batch : 1;
  const size_t maps = d->scope > 1 || batch == 1 ? 1 : (size_t)batch;
  if (!s)
    s = plan_buffers(d);
  if (!s)
    s = import_weights(d);
  if (!s && !(d->map_host = malloc(maps * size * size * sizeof(float))))
    s = fap_fail(FAP_ERR_NO_MEMORY, "detector: out of memory");
  d->last_map = d->map_host;
  if (!s && d->keep_intermediates)
    s = setup_intermediates(d);
  if (!s)
    s = upload_positional(d);
  if (!s)
    s = upload_gaussian(d);
  if (!s)
    s = fap_text_prepare(d);
  if (!s) {
    static_text_features(d);
    s = d->backend.ops->synchronize(d->backend.ctx);
  }
  if (s) {
    fap_detector_free(d);
    return s;
  }
  *out = d;
  return FAP_OK;
}

void fap_detector_free(fap_detector *d) {
  if (!d)
    return;
  free_intermediates(d);
  if (d->backend.ops && d->arena)
    d->backend.ops->release(d->backend.ctx, d->arena);
  for (int i = 0; d->backend.ops && i < d->n_frame_buffers; i++)
    d->backend.ops->release(d->backend.ctx, d->frame_buffers[i].base);
  fap_backend_free(&d->backend);
  free(d->net.vblocks);
  free(d->net.tblocks);
  free(d->net.deep);
  free(d->map_host);
  free(d->map_sum_host);
  fap_model_free(d->model);
  free(d);
}

fap_backend_kind fap_detector_backend(const fap_detector *d) { return d ? d->backend_kind : 0; }
int fap_detector_image_size(const fap_detector *d) { return d ? d->size : 0; }
int fap_detector_batch(const fap_detector *d) { return d ? d->batch : 0; }
fap_precision fap_detector_precision(const fap_detector *d) {
  return d ? d->precision : FAP_PRECISION_AUTO;
}

/* ---- the frame's description ------------------------------------------------ */

/* b.map_raw -> b.map: smoothed, or as it is at sigma 0 */
static void describe_smoothing(fap_detector *d) {
  const fap_backend_ops *op = d->backend.ops;
  void *be = d->backend.ctx;
  fap_buffers *b = &d->b;
  if (d->radius > 0)
    op->gaussian_blur(be, b->map, b->map_raw, b->blur_tmp, d->size, b->gauss, d->radius);
  else
    op->copy2d(be, b->map, 0, b->map_raw, 0, 1, (size_t)d->size * d->size * sizeof(float));
}

/* docs/SPEC.md section 6.4: one map per out layer, summed, smoothed;
 * score q. The map is on the element's scale [0, 1]: the authors' sum over
 * the L layers / L. That division comes first (b.map_raw holds the mean of
 * the upsampled maps: the blur keeps [0, 1] maps in [0, 1]); the authors'
 * scale (map_raw, map_sum) is the host's intermediates times L. */
static void describe_anomalyclip_frame(fap_detector *d) {
  const fap_backend_ops *op = d->backend.ops;
  void *be = d->backend.ctx;
  const fap_config *c = d->cfg;
  fap_buffers *b = &d->b;
  const int e = c->embed_dim, n = d->n_patches, layers = c->n_out_layers;
  const size_t rows = (size_t)n + 1, s2 = (size_t)d->size * d->size;

  op->l2norm_rows(be, b->tokens_n, e, b->tokens, e, (int)(layers * rows), e);
  op->l2norm_rows(be, b->global_n, e, b->global, e, 1, e);
  for (int l = 0; l < layers; l++) /* A_l over patches (rows 1..N of layer l) */
    op->two_way_prob(be, b->map1 + (size_t)l * n, b->tokens_n + (l * rows + 1) * e, e, n, e,
                     b->text_normal, b->text_abnormal, FAP_INV_TAU);
  op->two_way_prob(be, b->scalars + 2, b->global_n, e, 1, e, b->text_normal, b->text_abnormal,
                   FAP_INV_TAU);
  op->copy2d(be, b->scalars + 3, 0, b->scalars + 2, 0, 1, sizeof(float)); /* score = q */
  op->frames_mark(be, FAP_STAGE_MAP1);

  /* (up(P1) + 1 - up(P0)) / 2 = up(A_l): upsample_mean of A_l with itself is
   * exactly up(A_l) ((x + x) / 2 = x in binary floating point) */
  for (int l = 0; l < layers; l++) {
    const float *a = b->map1 + (size_t)l * n;
    op->upsample_mean(be, layers == 1 ? b->map_raw : b->layer_up + l * s2, a, a, d->grid,
                      d->size);
  }
  if (layers > 1)
    op->mean_rows(be, b->map_raw, b->layer_up, layers, (int)s2);
  describe_smoothing(d);
}

/* docs/SPEC.md section 4 after the vision encoder */
static void describe_faprompt_frame(fap_detector *d) {
  const fap_backend_ops *op = d->backend.ops;
  void *be = d->backend.ctx;
  const fap_config *c = d->cfg;
  fap_buffers *b = &d->b;
  const int e = c->embed_dim, n = d->n_patches, ct = c->text_width;

  /* p_j = norm(T_j), g^ = norm(g); A1 over patches (rows 1..N) */
  op->l2norm_rows(be, b->tokens_n, e, b->tokens, e, n + 1, e);
  op->l2norm_rows(be, b->global_n, e, b->global, e, 1, e);
  op->two_way_prob(be, b->map1, b->tokens_n + e, e, n, e, b->text_normal, b->text_abnormal,
                   FAP_INV_TAU);
  op->reduce_max(be, b->scalars + 0, b->map1, n);
  op->frames_mark(be, FAP_STAGE_MAP1);

  /* abnormality prior: the M most abnormal patches, descending, through the MLP */
  op->topk(be, b->topk, b->map1, n, c->top_m);
  op->gather_rows(be, b->prior_in, b->tokens_n + e, e, b->topk, c->top_m, e);
  op->linear(be, b->prior_hidden, c->prior_hidden, b->prior_in, c->top_m * e, d->net.prior1_w,
             d->net.prior1_b, 1, c->top_m * e, c->prior_hidden, 0);
  op->relu(be, b->prior_hidden, (size_t)c->prior_hidden);
  op->linear(be, b->prior, ct, b->prior_hidden, c->prior_hidden, d->net.prior2_w,
             d->net.prior2_b, 1, c->prior_hidden, ct, 0);
  op->frames_mark(be, FAP_STAGE_PRIOR);

  fap_text_forward_dynamic(d);
  op->mean_rows(be, b->mean, b->feats_dynamic, c->n_prompts, e);
  op->l2norm_rows(be, b->text_abnormal_dynamic, e, b->mean, e, 1, e);
  op->frames_mark(be, FAP_STAGE_TEXT);

  op->two_way_prob(be, b->map2, b->tokens_n + e, e, n, e, b->text_normal,
                   b->text_abnormal_dynamic, FAP_INV_TAU);
  op->reduce_max(be, b->scalars + 1, b->map2, n);
  op->two_way_prob(be, b->scalars + 2, b->global_n, e, 1, e, b->text_normal,
                   b->text_abnormal_dynamic, FAP_INV_TAU);
  op->faprompt_score(be, b->scalars);
  op->frames_mark(be, FAP_STAGE_MAP2);

  op->upsample_mean(be, b->map_raw, b->map1, b->map2, d->grid, d->size);
  describe_smoothing(d);
}

/* The frame, once for every backend and family: what each frame of a scope
 * computes, from its pixels to b.map and b.scalars[3] (and drawn into the
 * frame when blending). */
static void describe_frame(fap_detector *d, int blend) {
  const fap_backend_ops *op = d->backend.ops;
  void *be = d->backend.ctx;
  op->preprocess_frames(be, d->b.image, d->size);
  op->frames_mark(be, FAP_STAGE_PREPROCESS);
  fap_vision_forward(d);
  op->frames_mark(be, FAP_STAGE_VISION);
  if (d->cfg->family == FAP_FAMILY_ANOMALYCLIP)
    describe_anomalyclip_frame(d);
  else
    describe_faprompt_frame(d);
  if (blend)
    op->blend_frames(be, d->b.map, d->size);
  op->frames_mark(be, FAP_STAGE_MAP);
}

/* One scope of `count` frames: the backend asks for the description as
 * often as it needs it (never while it replays a recorded one). maps_out
 * (NULL: the backend's output memory): where frame i's map is copied. */
static fap_status run_scope(fap_detector *d, const fap_frame *frames, int count,
                            const fap_blend *blend, fap_result *results, float *maps_out) {
  const fap_backend_ops *op = d->backend.ops;
  void *be = d->backend.ctx;
  const double start = now_ms();
  memset(results, 0, (size_t)count * sizeof *results);
  fap_status s = op->frames_begin(be, frames, count, d->size, blend);
  if (s)
    return s;
  for (int pass = 0; !s; pass++) {
    int describe = 0;
    if ((s = op->frames_pass(be, pass, &describe)) || !describe)
      break;
    describe_frame(d, blend != NULL);
  }
  const fap_status end = op->frames_end(be, results); /* closes the scope in any case */
  if (s || (s = end))
    return s;
  const float *scalars = op->frames_output(be, d->b.scalars);
  const float *maps = op->frames_output(be, d->b.map);
  const size_t s2 = (size_t)d->size * d->size;
  for (int i = 0; i < count; i++) {
    fap_result *r = &results[i];
    r->score = scalars[4 * i + 3];
    r->map = maps + i * s2;
    if (maps_out) {
      memcpy(maps_out + i * s2, r->map, s2 * sizeof(float));
      r->map = maps_out + i * s2;
    }
    r->map_size = d->size;
    r->total_ms = now_ms() - start;
  }
  memcpy(d->scalars_host, scalars + 4 * (count - 1), sizeof d->scalars_host);
  if (d->cfg->family == FAP_FAMILY_ANOMALYCLIP) /* no max1, max2 */
    d->scalars_host[0] = d->scalars_host[1] = 0.0f;
  d->last_map = results[count - 1].map;
  d->last_count = count;
  return FAP_OK;
}

/* downloads the intermediates of the last run (keep_intermediates) */
static fap_status fetch_intermediates(fap_detector *d) {
  const fap_backend_ops *op = d->backend.ops;
  void *be = d->backend.ctx;
  intermediate *it = d->inter_host;
  fap_status s;
  it[d->n_intermediates - 2].view.data = d->last_map;
  const size_t last = (size_t)d->last_count - 1; /* the scope's last frame */
  for (int i = 0; i < d->n_intermediates; i++)
    if (it[i].src && (s = op->download(be, (void *)it[i].view.data,
                                       (const char *)it[i].src + last * it[i].frame_bytes,
                                       it[i].bytes)))
      return s;
  if ((s = op->synchronize(be)))
    return s;
  const int layers = d->cfg->n_out_layers;
  if (d->cfg->family == FAP_FAMILY_ANOMALYCLIP) { /* the authors' scale: the sum over layers */
    float *raw = (float *)it[AC_MAP_RAW].view.data;
    for (size_t i = 0; i < (size_t)d->size * d->size; i++) {
      raw[i] *= (float)layers;
      d->map_sum_host[i] = d->last_map[i] * (float)layers;
    }
  }
  return FAP_OK;
}

static fap_status draw(fap_detector *d, const fap_frame *frame, const float *map, int map_size,
                       const fap_blend *blend, size_t *bytes);

static fap_status run_batch(fap_detector *d, const fap_frame *frames, int count,
                            const fap_blend *blend, fap_result *results) {
  if (!d || !results)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_detector_run: NULL detector or result");
  if (!frames)
    return fap_frame_check(NULL, "fap_detector_run");
  if (count < 1 || count > d->batch)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT,
                    "fap_detector_run_batch: %d frames, but this detector takes 1 .. %d per call "
                    "(fap_detector_options.batch)",
                    count, d->batch);
  fap_status s;
  for (int i = 0; i < count; i++)
    if ((s = fap_frame_check(&frames[i], "fap_detector_run")))
      return s;
  if (blend && (s = fap_blend_check(blend)))
    return s;
  const unsigned caps = d->backend.ops->caps;
  for (int i = 0; i < count && !(caps & FAP_CAP_DEVICE_FRAMES); i++)
    if (frames[i].memory == FAP_MEMORY_CUDA)
      return fap_fail(FAP_ERR_UNSUPPORTED,
                      "fap_detector_run: frame %d is in CUDA memory, but this detector runs on "
                      "the %s backend; use a CUDA detector, or download the frame first",
                      i, fap_backend_name(d->backend_kind));
  s = FAP_OK;
  if (d->scope > 1) {
    s = run_scope(d, frames, count, blend, results, NULL);
  } else {
    /* one frame per scope: each map is copied out before the next frame.
     * Every frame is read before any is drawn, as in a batched scope: the
     * frames may be crops of one frame, and a later crop must not read what
     * an earlier one drew */
    const fap_blend *in_scope = count > 1 ? NULL : blend;
    for (int i = 0; i < count && !s; i++)
      s = run_scope(d, &frames[i], 1, in_scope, &results[i],
                    count > 1 ? d->map_host + (size_t)i * d->size * d->size : NULL);
    for (int i = 0; i < count && !s && blend && !in_scope; i++)
      s = draw(d, &frames[i], results[i].map, d->size, blend, NULL);
  }
  if (s)
    return s;
  d->has_run = 1;
  if (d->keep_intermediates)
    return fetch_intermediates(d);
  return FAP_OK;
}

/* ---- public entry points: every message inside goes to the detector's sink;
 * fap_last_error's bookkeeping (log.h) */

fap_status fap_detector_new_wrapped(fap_model *model, const fap_detector_options *options,
                                    fap_backend_wrap_fn wrap, void *wrap_data,
                                    fap_detector **out) {
  fap_log_sink sink = {options ? options->log : NULL, options ? options->log_user_data : NULL},
               saved;
  fap_log_scope_enter(&sink, &saved);
  fap_api_enter();
  fap_status s = fap_api_return(detector_new(model, options, wrap, wrap_data, out));
  fap_log_scope_leave(&saved);
  return s;
}

fap_status fap_detector_new(fap_model *model, const fap_detector_options *options,
                            fap_detector **out) {
  return fap_detector_new_wrapped(model, options, NULL, NULL, out);
}

fap_status fap_detector_run_batch(fap_detector *d, const fap_frame *frames, int count,
                                  const fap_blend *blend, fap_result *results) {
  fap_log_sink saved;
  fap_log_scope_enter(d ? &d->log : NULL, &saved);
  fap_api_enter();
  fap_status s = fap_api_return(run_batch(d, frames, count, blend, results));
  fap_log_scope_leave(&saved);
  return s;
}

fap_status fap_detector_run(fap_detector *d, const fap_frame *frame, fap_result *r) {
  return fap_detector_run_batch(d, frame, 1, NULL, r);
}

static fap_status draw(fap_detector *d, const fap_frame *frame, const float *map, int map_size,
                       const fap_blend *blend, size_t *bytes) {
  size_t moved = 0;
  if (!bytes)
    bytes = &moved;
  *bytes = 0;
  if (!d)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_detector_draw: no detector");
  const int device_draw = (d->backend.ops->caps & FAP_CAP_DEVICE_DRAW) != 0;
  if (!frame || (frame->memory == FAP_MEMORY_HOST && !device_draw))
    return fap_frame_blend(frame, map, map_size, blend);
  fap_status s = fap_frame_check(frame, "fap_detector_draw");
  if (s || (s = fap_blend_check(blend)))
    return s;
  if (!map || map_size < 1)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_detector_draw: no map");
  if (!device_draw)
    return fap_fail(FAP_ERR_UNSUPPORTED,
                    "fap_detector_draw: the frame is in CUDA memory, but this detector runs on the "
                    "%s backend",
                    fap_backend_name(d->backend_kind));
  return d->backend.ops->frames_draw(d->backend.ctx, frame, map, map_size, blend, bytes);
}

fap_status fap_detector_draw(fap_detector *d, const fap_frame *frame, const float *map,
                             int map_size, const fap_blend *blend, size_t *pixel_bytes_copied) {
  fap_log_sink saved;
  fap_log_scope_enter(d ? &d->log : NULL, &saved);
  fap_api_enter();
  fap_status s = fap_api_return(draw(d, frame, map, map_size, blend, pixel_bytes_copied));
  fap_log_scope_leave(&saved);
  return s;
}

fap_status fap_detector_intermediate(const fap_detector *d, const char *name,
                                     fap_tensor_view *view) {
  fap_log_sink saved;
  fap_log_scope_enter(d ? &d->log : NULL, &saved);
  fap_api_enter();
  fap_status s = fap_api_return(intermediate_of(d, name, view));
  fap_log_scope_leave(&saved);
  return s;
}
