/* Model loading: container validation (safetensors.c), then a schema check
 * driven by the configuration in __metadata__, then widening to f32.
 * The schema is documented in models/README.md; keep the two in step. */
#include "model.h"

#include "half.h"
#include "log.h"
#include "safetensors.h"

#include <errno.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NAME_MAX_LEN 96

typedef struct {
  char name[NAME_MAX_LEN];
  int ndim;
  int64_t shape[4];
  const float **dst;
  int lazy; /* widened on demand (fap_model_need_weights) */
} expected_tensor;

typedef struct {
  expected_tensor *items;
  size_t count, capacity;
  int failed;
} schema;

static void expect(schema *s, const float **dst, int ndim, const int64_t *shape, const char *fmt,
                   ...) FAP_PRINTF(5, 6);

static void expect(schema *s, const float **dst, int ndim, const int64_t *shape, const char *fmt,
                   ...) {
  if (s->count == s->capacity) {
    size_t cap = s->capacity ? 2 * s->capacity : 64;
    expected_tensor *items = realloc(s->items, cap * sizeof *items);
    if (!items) {
      s->failed = 1;
      return;
    }
    s->items = items;
    s->capacity = cap;
  }
  expected_tensor *e = &s->items[s->count++];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->name, sizeof e->name, fmt, ap);
  va_end(ap);
  e->ndim = ndim;
  memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
  e->dst = dst;
  e->lazy = 0;
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define NDIM(...) ((int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define EXPECT(s, dst, name_fmt, shape_list, ...)                                                 \
  expect((s), (dst), NDIM shape_list, SHAPE shape_list, name_fmt, ##__VA_ARGS__)

/* lazy: the block's four linear weights are widened on demand (the vision
 * blocks': see model.h) */
static void expect_block(schema *s, fap_block *b, const char *prefix, int i, int64_t c, int lazy) {
  EXPECT(s, &b->ln1_w, "%sresblocks.%d.ln_1.weight", (c), prefix, i);
  EXPECT(s, &b->ln1_b, "%sresblocks.%d.ln_1.bias", (c), prefix, i);
  EXPECT(s, &b->in_w, "%sresblocks.%d.attn.in_proj_weight", (3 * c, c), prefix, i);
  s->items[s->count - 1].lazy = lazy && !s->failed;
  EXPECT(s, &b->in_b, "%sresblocks.%d.attn.in_proj_bias", (3 * c), prefix, i);
  EXPECT(s, &b->out_w, "%sresblocks.%d.attn.out_proj.weight", (c, c), prefix, i);
  s->items[s->count - 1].lazy = lazy && !s->failed;
  EXPECT(s, &b->out_b, "%sresblocks.%d.attn.out_proj.bias", (c), prefix, i);
  EXPECT(s, &b->ln2_w, "%sresblocks.%d.ln_2.weight", (c), prefix, i);
  EXPECT(s, &b->ln2_b, "%sresblocks.%d.ln_2.bias", (c), prefix, i);
  EXPECT(s, &b->fc_w, "%sresblocks.%d.mlp.c_fc.weight", (4 * c, c), prefix, i);
  s->items[s->count - 1].lazy = lazy && !s->failed;
  EXPECT(s, &b->fc_b, "%sresblocks.%d.mlp.c_fc.bias", (4 * c), prefix, i);
  EXPECT(s, &b->cproj_w, "%sresblocks.%d.mlp.c_proj.weight", (c, 4 * c), prefix, i);
  s->items[s->count - 1].lazy = lazy && !s->failed;
  EXPECT(s, &b->cproj_b, "%sresblocks.%d.mlp.c_proj.bias", (c), prefix, i);
}

/* Every tensor models/README.md lists, with the shape the config implies. */
static void build_schema(schema *s, fap_model *m) {
  const fap_config *c = &m->cfg;
  int64_t cv = c->vision_width, ct = c->text_width, e = c->embed_dim, p = c->patch_size;
  int64_t k = c->n_prompts, ctx = c->context_length;

  EXPECT(s, &m->conv1, "visual.conv1.weight", (cv, 3, p, p));
  EXPECT(s, &m->class_emb, "visual.class_embedding", (cv));
  EXPECT(s, &m->vpos, "visual.positional_embedding",
         ((int64_t)c->vision_grid * c->vision_grid + 1, cv));
  EXPECT(s, &m->ln_pre_w, "visual.ln_pre.weight", (cv));
  EXPECT(s, &m->ln_pre_b, "visual.ln_pre.bias", (cv));
  EXPECT(s, &m->ln_post_w, "visual.ln_post.weight", (cv));
  EXPECT(s, &m->ln_post_b, "visual.ln_post.bias", (cv));
  EXPECT(s, &m->vproj, "visual.proj", (cv, e));
  for (int i = 0; i < c->vision_layers; i++)
    expect_block(s, &m->vblocks[i], "visual.transformer.", i, cv, 1);

  EXPECT(s, &m->tpos, "positional_embedding", (ctx, ct));
  EXPECT(s, &m->ln_final_w, "ln_final.weight", (ct));
  EXPECT(s, &m->ln_final_b, "ln_final.bias", (ct));
  EXPECT(s, &m->tproj, "text_projection", (ct, e));
  for (int i = 0; i < c->text_layers; i++)
    expect_block(s, &m->tblocks[i], "transformer.", i, ct, 0);

  /* FAPrompt's abnormality prompts hold the normal context too; AnomalyCLIP's
   * one abnormal prompt has only its own (docs/SPEC.md section 6.1) */
  const int64_t neg_suffix = ctx - 1 - c->n_neg - (c->family == FAP_FAMILY_FAPROMPT ? c->n_pos : 0);
  EXPECT(s, &m->ctx_pos, "prompt_learner.ctx_pos", (1, 1, c->n_pos, ct));
  EXPECT(s, &m->ctx_neg, "prompt_learner.ctx_neg", (1, k, c->n_neg, ct));
  EXPECT(s, &m->prefix_pos, "prompt_learner.token_prefix_pos", (1, 1, 1, ct));
  EXPECT(s, &m->prefix_neg, "prompt_learner.token_prefix_neg", (1, k, 1, ct));
  EXPECT(s, &m->suffix_pos, "prompt_learner.token_suffix_pos", (1, 1, ctx - 1 - c->n_pos, ct));
  EXPECT(s, &m->suffix_neg, "prompt_learner.token_suffix_neg", (1, k, neg_suffix, ct));
  for (int j = 0; j < c->prompt_depth - 1; j++)
    EXPECT(s, &m->deep[j], "prompt_learner.compound_prompts_text.%d", (c->prompt_length, ct), j);
  if (c->family != FAP_FAMILY_FAPROMPT)
    return; /* no abnormality prior */
  EXPECT(s, &m->prior1_w, "prompt_learner.patch_meta_net.linear1.weight",
         (c->prior_hidden, (int64_t)c->top_m * e));
  EXPECT(s, &m->prior1_b, "prompt_learner.patch_meta_net.linear1.bias", (c->prior_hidden));
  EXPECT(s, &m->prior2_w, "prompt_learner.patch_meta_net.linear2.weight", (ct, c->prior_hidden));
  EXPECT(s, &m->prior2_b, "prompt_learner.patch_meta_net.linear2.bias", (ct));
}

/* ---- configuration from __metadata__ ---------------------------------- */

static fap_status meta_int(const fap_safetensors *st, const char *key, int lo, int hi, int *out) {
  const char *v = fap_safetensors_metadata(st, key);
  const char *label = fap_safetensors_label(st);
  if (!v)
    return fap_fail(FAP_ERR_SCHEMA,
                    "%s: __metadata__ has no '%s' (every faprompt model needs it; see "
                    "models/README.md, or re-create the file with models/faprompt-convert)",
                    label, key);
  char *end;
  errno = 0;
  /* plain decimal only: no sign but '-', no leading blanks (strtol allows both) */
  int plain = g_ascii_isdigit(v[0]) || (v[0] == '-' && g_ascii_isdigit(v[1]));
  long x = plain ? strtol(v, &end, 10) : 0;
  if (!plain || errno || end == v || *end || x < lo || x > hi)
    return fap_fail(FAP_ERR_SCHEMA, "%s: __metadata__ '%s' is \"%s\", expected an integer in [%d, %d]",
                    label, key, v, lo, hi);
  *out = (int)x;
  return FAP_OK;
}

static fap_status meta_float(const fap_safetensors *st, const char *key, int required, float lo,
                             float hi, float *out) {
  const char *v = fap_safetensors_metadata(st, key);
  const char *label = fap_safetensors_label(st);
  if (!v) {
    if (required)
      return fap_fail(FAP_ERR_SCHEMA, "%s: __metadata__ has no '%s' (see models/README.md)", label,
                      key);
    *out = -1.0f;
    return FAP_OK;
  }
  char *end;
  errno = 0;
  double x = g_ascii_strtod(v, &end); /* the C locale's '.', whatever LC_NUMERIC says */
  if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi)
    return fap_fail(FAP_ERR_SCHEMA, "%s: __metadata__ '%s' is \"%s\", expected a number in [%g, %g]",
                    label, key, v, lo, hi);
  *out = (float)x;
  return FAP_OK;
}

/* "6,12,18,24": 1-based, increasing, within [lo, hi] */
static fap_status meta_layers(const fap_safetensors *st, int lo, int hi, fap_config *c) {
  const char *label = fap_safetensors_label(st);
  const char *v = fap_safetensors_metadata(st, "out_layers");
  if (!v)
    return fap_fail(FAP_ERR_SCHEMA,
                    "%s: an AnomalyCLIP model needs __metadata__ 'out_layers' (the 1-based "
                    "vision layers whose maps are summed, e.g. \"%d\"); re-create the file with "
                    "models/faprompt-convert",
                    label, hi);
  const char *at = v;
  c->n_out_layers = 0;
  for (;;) {
    int plain = g_ascii_isdigit(at[0]);
    char *end = (char *)at;
    errno = 0;
    long x = plain ? strtol(at, &end, 10) : 0;
    int prev = c->n_out_layers ? c->out_layers[c->n_out_layers - 1] : lo - 1;
    if (!plain || errno || x < lo || x > hi || x <= prev || c->n_out_layers == FAP_MAX_OUT_LAYERS ||
        (*end != ',' && *end != 0))
      return fap_fail(FAP_ERR_SCHEMA,
                      "%s: __metadata__ 'out_layers' is \"%s\", expected at most %d increasing "
                      "1-based layer numbers in [%d, %d] (the V-V dual layers) separated by "
                      "commas, e.g. \"%d\"",
                      label, v, FAP_MAX_OUT_LAYERS, lo, hi, hi);
    c->out_layers[c->n_out_layers++] = (int)x;
    if (!*end)
      return FAP_OK;
    at = end + 1;
  }
}

static fap_status read_config(const fap_safetensors *st, fap_config *c) {
  const char *label = fap_safetensors_label(st);
  const char *format = fap_safetensors_metadata(st, "format");
  if (!format || strcmp(format, "faprompt") != 0)
    return fap_fail(FAP_ERR_SCHEMA,
                    "%s: not a faprompt model (__metadata__ 'format' is %s%s%s, expected "
                    "\"faprompt\"); convert the authors' checkpoints with models/faprompt-convert",
                    label, format ? "\"" : "", format ? format : "absent", format ? "\"" : "");
  const char *version = fap_safetensors_metadata(st, "format_version");
  if (!version || strcmp(version, "1") != 0)
    return fap_fail(FAP_ERR_SCHEMA,
                    "%s: model format_version %s is not supported by this build (expected 1)",
                    label, version ? version : "(absent)");
  const char *family = fap_safetensors_metadata(st, "family");
  if (!family || strcmp(family, "faprompt") == 0)
    c->family = FAP_FAMILY_FAPROMPT; /* files from before the key existed are FAPrompt */
  else if (strcmp(family, "anomalyclip") == 0)
    c->family = FAP_FAMILY_ANOMALYCLIP;
  else
    return fap_fail(FAP_ERR_SCHEMA,
                    "%s: __metadata__ 'family' is \"%s\"; this build runs \"faprompt\" and "
                    "\"anomalyclip\" models",
                    label, family);
  const int fa = c->family == FAP_FAMILY_FAPROMPT;
  const int big = 1 << 20;
  struct {
    const char *key;
    int lo;
    int *dst;
  } ints[] = {
      {"image_size", 1, &c->image_size},       {"patch_size", 1, &c->patch_size},
      {"vision_grid", 1, &c->vision_grid},     {"vision_width", 1, &c->vision_width},
      {"vision_heads", 1, &c->vision_heads},   {"vision_layers", 1, &c->vision_layers},
      {"dual_start", 0, &c->dual_start},       {"embed_dim", 1, &c->embed_dim},
      {"text_width", 1, &c->text_width},       {"text_heads", 1, &c->text_heads},
      {"text_layers", 1, &c->text_layers},     {"context_length", 2, &c->context_length},
      {"n_pos", 1, &c->n_pos},                 {"n_neg", 1, &c->n_neg},
      {"n_prompts", 1, &c->n_prompts},         {"top_m", fa, &c->top_m},
      {"prompt_depth", 1, &c->prompt_depth},   {"prompt_length", 0, &c->prompt_length},
      {"prior_hidden", fa, &c->prior_hidden},  {"end_pos_normal", 1, &c->end_pos_normal},
      {"end_pos_abnormal", 1, &c->end_pos_abnormal},
  };
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    fap_status s = meta_int(st, ints[i].key, ints[i].lo, big, ints[i].dst);
    if (s)
      return s;
  }
  fap_status s = meta_float(st, "sigma", 1, 0.0f, 1000.0f, &c->sigma);
  if (!s)
    s = meta_float(st, "image_threshold", 0, 0.0f, 1.0f, &c->image_threshold);
  if (!s)
    s = meta_float(st, "pixel_threshold", 0, 0.0f, 1.0f, &c->pixel_threshold);
  if (s)
    return s;

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      return fap_fail(FAP_ERR_SCHEMA, __VA_ARGS__);                                                \
  } while (0)
  CHECK(c->vision_width % c->vision_heads == 0,
        "%s: vision_width %d is not divisible by vision_heads %d", label, c->vision_width,
        c->vision_heads);
  CHECK(c->text_width % c->text_heads == 0, "%s: text_width %d is not divisible by text_heads %d",
        label, c->text_width, c->text_heads);
  CHECK(c->image_size % c->patch_size == 0,
        "%s: image_size %d is not a multiple of patch_size %d", label, c->image_size,
        c->patch_size);
  CHECK(c->dual_start < c->vision_layers, "%s: dual_start %d must be < vision_layers %d", label,
        c->dual_start, c->vision_layers);
  CHECK(c->end_pos_normal >= 1 + c->n_pos && c->end_pos_normal < c->context_length,
        "%s: end_pos_normal %d must lie in [1 + n_pos, context_length) = [%d, %d)", label,
        c->end_pos_normal, 1 + c->n_pos, c->context_length);
  CHECK(c->prompt_depth - 1 <= c->text_layers, "%s: prompt_depth %d needs > %d text layers",
        label, c->prompt_depth, c->text_layers);
  if (!fa) {
    /* AnomalyCLIP: one abnormal prompt [SOT, its own n_neg tokens, suffix],
     * static text, no prior */
    CHECK(c->n_prompts == 1 && c->top_m == 0 && c->prior_hidden == 0,
          "%s: an AnomalyCLIP model has n_prompts 1, top_m 0 and prior_hidden 0 (found %d, %d, "
          "%d)",
          label, c->n_prompts, c->top_m, c->prior_hidden);
    CHECK(c->end_pos_abnormal >= 1 + c->n_neg && c->end_pos_abnormal < c->context_length,
          "%s: end_pos_abnormal %d must lie in [1 + n_neg, context_length) = [%d, %d)", label,
          c->end_pos_abnormal, 1 + c->n_neg, c->context_length);
    CHECK(c->prompt_length <= c->n_pos && c->prompt_length <= c->n_neg,
          "%s: prompt_length %d must be <= n_pos %d and n_neg %d (the deep prompts overwrite "
          "learned tokens only)",
          label, c->prompt_length, c->n_pos, c->n_neg);
    return meta_layers(st, c->dual_start + 1, c->vision_layers, c);
  }
  CHECK(c->end_pos_abnormal >= 1 + c->n_pos + c->n_neg && c->end_pos_abnormal < c->context_length,
        "%s: end_pos_abnormal %d must lie in [1 + n_pos + n_neg, context_length) = [%d, %d)",
        label, c->end_pos_abnormal, 1 + c->n_pos + c->n_neg, c->context_length);
  CHECK(c->prompt_length <= c->n_pos,
        "%s: prompt_length %d > n_pos %d: deep prompts would overwrite tokens that differ "
        "between prompts, which this core does not support",
        label, c->prompt_length, c->n_pos);
  CHECK(!fap_safetensors_metadata(st, "out_layers"),
        "%s: __metadata__ 'out_layers' is for AnomalyCLIP models; a FAPrompt model's patch "
        "features are those after the last layer",
        label);
  c->n_out_layers = 1; /* T = LN_post(y) after the last layer */
  c->out_layers[0] = c->vision_layers;
#undef CHECK
  return FAP_OK;
}

/* ---- load ------------------------------------------------------------- */

static void widen(float *dst, const fap_st_tensor *t, size_t n) {
  if (t->dtype == FAP_DTYPE_F32)
    memcpy(dst, t->data, n * sizeof(float));
  else if (t->dtype == FAP_DTYPE_F16)
    fap_widen_f16(dst, t->data, n);
  else
    fap_widen_bf16(dst, t->data, n);
}

/* The load's check of a tensor left unwidened, through a small buffer. */
static fap_status check_finite(const fap_safetensors *st, const fap_st_tensor *t,
                               const char *label) {
  enum { CHUNK = 1 << 14 };
  float buf[CHUNK];
  const size_t es = fap_dtype_size(t->dtype);
  for (size_t at = 0; at < (size_t)t->numel; at += CHUNK) {
    const size_t n = (size_t)t->numel - at < CHUNK ? (size_t)t->numel - at : CHUNK;
    fap_st_tensor part = *t;
    part.data = (const uint8_t *)t->data + at * es;
    widen(buf, &part, n);
    for (size_t j = 0; j < n; j++)
      if (!isfinite(buf[j]))
        return fap_fail(FAP_ERR_SCHEMA, "%s: tensor '%s' holds a non-finite value at index %zu",
                        label, t->name, at + j);
  }
  (void)st;
  return FAP_OK;
}

static fap_status check_and_widen(const fap_safetensors *st, schema *s, fap_model *m) {
  const char *label = fap_safetensors_label(st);
  size_t total = 0;
  for (size_t i = 0; i < s->count; i++) {
    expected_tensor *e = &s->items[i];
    const fap_st_tensor *t = fap_safetensors_find(st, e->name);
    if (!t)
      return fap_fail(FAP_ERR_SCHEMA,
                      "%s: tensor '%s' is missing (the configuration in __metadata__ requires it; "
                      "see models/README.md)",
                      label, e->name);
    int same = t->ndim == e->ndim;
    for (int d = 0; same && d < e->ndim; d++)
      same = t->shape[d] == e->shape[d];
    if (!same) {
      char want[96], got[96];
      int n = 0;
      for (int d = 0; d < e->ndim; d++)
        n += snprintf(want + n, sizeof want - n, "%s%lld", d ? ", " : "", (long long)e->shape[d]);
      n = 0;
      got[0] = 0;
      for (int d = 0; d < t->ndim && n < (int)sizeof got - 24; d++)
        n += snprintf(got + n, sizeof got - n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
      return fap_fail(FAP_ERR_SCHEMA,
                      "%s: tensor '%s' has shape [%s], but the configuration in __metadata__ "
                      "implies [%s]",
                      label, e->name, got, want);
    }
    if (t->dtype != FAP_DTYPE_F32 && t->dtype != FAP_DTYPE_F16 && t->dtype != FAP_DTYPE_BF16)
      return fap_fail(FAP_ERR_SCHEMA, "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16",
                      label, e->name, fap_dtype_name(t->dtype));
    total += ((size_t)t->numel + 15) & ~(size_t)15; /* keep every tensor 64-byte aligned */
  }
  if (fap_safetensors_count(st) != s->count) {
    for (size_t i = 0; i < fap_safetensors_count(st); i++) {
      const char *name = fap_safetensors_tensor(st, i)->name;
      size_t j = 0;
      while (j < s->count && strcmp(s->items[j].name, name) != 0)
        j++;
      if (j == s->count)
        return fap_fail(FAP_ERR_SCHEMA,
                        "%s: unexpected tensor '%s' (not part of a faprompt model with this "
                        "configuration; see models/README.md)",
                        label, name);
    }
  }

  if (posix_memalign((void **)&m->storage, 64, total * sizeof(float)) != 0)
    return fap_fail(FAP_ERR_NO_MEMORY, "%s: cannot allocate %zu MiB for the weights", label,
                    total * sizeof(float) >> 20);
  m->storage_floats = total;
  size_t n_lazy = 0;
  for (size_t i = 0; i < s->count; i++)
    n_lazy += s->items[i].lazy;
  if (n_lazy && !(m->lazy = calloc(n_lazy, sizeof *m->lazy)))
    return fap_fail(FAP_ERR_NO_MEMORY, "%s: out of memory", label);
  float *at = m->storage;
  for (size_t i = 0; i < s->count; i++) {
    const fap_st_tensor *t = fap_safetensors_find(st, s->items[i].name);
    size_t n = (size_t)t->numel;
    if (s->items[i].lazy) {
      /* checked now, widened when a detector needs it in f32: its pages of
       * storage stay untouched (not resident) until then */
      fap_status status = check_finite(st, t, label);
      if (status)
        return status;
      m->lazy[m->n_lazy++] = (fap_lazy_tensor){at, n, t, 0};
    } else {
      widen(at, t, n);
      for (size_t j = 0; j < n; j++)
        if (!isfinite(at[j]))
          return fap_fail(FAP_ERR_SCHEMA, "%s: tensor '%s' holds a non-finite value at index %zu",
                          label, t->name, j);
    }
    fap_safetensors_drop(st, t);
    *s->items[i].dst = at;
    m->params += (int64_t)n;
    at += (n + 15) & ~(size_t)15;
  }
  /* The reference feeds the deep prompts through .half(): round them once here. */
  for (int j = 0; j < m->cfg.prompt_depth - 1; j++) {
    float *d = (float *)m->deep[j];
    for (int i = 0; i < m->cfg.prompt_length * m->cfg.text_width; i++) {
      d[i] = fap_round_f16(d[i]);
      if (!isfinite(d[i]))
        return fap_fail(FAP_ERR_SCHEMA,
                        "%s: tensor 'prompt_learner.compound_prompts_text.%d' holds a value that "
                        "overflows fp16 at index %d (the reference uses the deep prompts as fp16)",
                        label, j, i);
    }
  }
  return FAP_OK;
}

/* ---- calibration sidecar ------------------------------------------------ */

/* <model path>.calibration.json, written by tools/faprompt-calibrate:
 * {"image_threshold": x, "pixel_threshold": y, ...}. Either threshold may be
 * absent; present ones must be numbers in [0, 1] and override the metadata.
 * Other members are informational and ignored. A file that exists but does
 * not parse fails the load: thresholds silently dropped would be worse. */
fap_status fap_calibration_parse(const char *text, size_t length, const char *label,
                                 float *image_threshold, float *pixel_threshold) {
  JsonParser *parser = json_parser_new();
  GError *error = NULL;
  JsonObject *o = NULL;
  fap_status status = FAP_OK;
  if (length > (size_t)G_MAXSSIZE)
    status = fap_fail(FAP_ERR_SCHEMA, "%s: calibration sidecar too large", label);
  else if (!json_parser_load_from_data(parser, text, (gssize)length, &error)) {
    status = fap_fail(FAP_ERR_SCHEMA, "%s: malformed calibration sidecar: %s (fix or delete it; "
                      "tools/faprompt-calibrate writes it)", label, error->message);
    g_error_free(error);
  } else {
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root))
      status = fap_fail(FAP_ERR_SCHEMA, "%s: malformed calibration sidecar: expected a JSON "
                        "object {\"image_threshold\": x, \"pixel_threshold\": y}", label);
    else
      o = json_node_get_object(root);
  }
  const char *keys[2] = {"image_threshold", "pixel_threshold"};
  float value[2] = {-1.0f, -1.0f};
  int found = 0;
  for (int i = 0; o && !status && i < 2; i++) {
    JsonNode *v = json_object_get_member(o, keys[i]);
    if (!v)
      continue;
    GType t = JSON_NODE_HOLDS_VALUE(v) ? json_node_get_value_type(v) : G_TYPE_INVALID;
    double x = t == G_TYPE_DOUBLE ? json_node_get_double(v)
               : t == G_TYPE_INT64 ? (double)json_node_get_int(v)
                                   : NAN;
    if (!(x >= 0.0 && x <= 1.0))
      status = fap_fail(FAP_ERR_SCHEMA, "%s: calibration sidecar: '%s' must be a number in [0, 1]",
                        label, keys[i]);
    value[i] = (float)x;
    found++;
  }
  if (o && !status && !found)
    status = fap_fail(FAP_ERR_SCHEMA, "%s: calibration sidecar has neither 'image_threshold' nor "
                      "'pixel_threshold'", label);
  if (!status) {
    *image_threshold = value[0];
    *pixel_threshold = value[1];
  }
  g_object_unref(parser);
  return status;
}

static fap_status apply_calibration(const char *model_path, fap_config *c) {
  size_t n = strlen(model_path);
  char *path = malloc(n + sizeof ".calibration.json");
  if (!path)
    return fap_fail(FAP_ERR_NO_MEMORY, "%s: out of memory", model_path);
  memcpy(path, model_path, n);
  memcpy(path + n, ".calibration.json", sizeof ".calibration.json");
  fap_status status = FAP_OK;
  gchar *text = NULL;
  gsize length = 0;
  GError *error = NULL;
  if (!g_file_get_contents(path, &text, &length, &error)) {
    if (!g_error_matches(error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
      status = fap_fail(FAP_ERR_IO, "%s: cannot read the calibration sidecar: %s", path,
                        error->message);
    g_error_free(error);
    free(path);
    return status;
  }
  float image = -1.0f, pixel = -1.0f;
  status = fap_calibration_parse(text, length, path, &image, &pixel);
  if (!status) {
    if (image >= 0)
      c->image_threshold = image;
    if (pixel >= 0)
      c->pixel_threshold = pixel;
    fap_log(FAP_LOG_INFO, "%s: calibration applied (image_threshold %g, pixel_threshold %g)", path,
            c->image_threshold, c->pixel_threshold);
  }
  g_free(text);
  free(path);
  return status;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static fap_status model_load(const char *path, fap_model **out) {
  if (!out)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_model_load: out is NULL");
  *out = NULL;
  if (!path || !*path)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_model_load: no model path given");
  double t0 = now_seconds();
  fap_safetensors *st = NULL;
  fap_status status = fap_safetensors_open(path, &st);
  if (status)
    return status;

  fap_model *m = calloc(1, sizeof *m);
  schema s = {0};
  if (!m) {
    status = fap_fail(FAP_ERR_NO_MEMORY, "%s: out of memory", path);
    goto done;
  }
  m->refcount = 1;
  g_mutex_init(&m->lazy_lock);
  status = read_config(st, &m->cfg);
  if (status)
    goto done;
  /* Bound the claimed layer counts by what the file can hold before sizing
   * anything by them: each block is 12 tensors, each deep prompt one. */
  size_t claimed = 12 * ((size_t)m->cfg.vision_layers + (size_t)m->cfg.text_layers) +
                   (size_t)m->cfg.prompt_depth - 1;
  if (claimed > fap_safetensors_count(st)) {
    status = fap_fail(FAP_ERR_SCHEMA,
                      "%s: __metadata__ vision_layers %d, text_layers %d and prompt_depth %d need at "
                      "least %zu tensors, but the file holds only %zu: the metadata does not "
                      "describe these tensors",
                      path, m->cfg.vision_layers, m->cfg.text_layers, m->cfg.prompt_depth,
                      claimed, fap_safetensors_count(st));
    goto done;
  }
  m->path = strdup(path);
  m->vblocks = calloc((size_t)m->cfg.vision_layers, sizeof *m->vblocks);
  m->tblocks = calloc((size_t)m->cfg.text_layers, sizeof *m->tblocks);
  m->deep = calloc((size_t)m->cfg.prompt_depth, sizeof *m->deep);
  if (!m->path || !m->vblocks || !m->tblocks || !m->deep) {
    status = fap_fail(FAP_ERR_NO_MEMORY, "%s: out of memory", path);
    goto done;
  }
  build_schema(&s, m);
  if (s.failed) {
    status = fap_fail(FAP_ERR_NO_MEMORY, "%s: out of memory", path);
    goto done;
  }
  status = check_and_widen(st, &s, m);
  if (!status)
    status = apply_calibration(path, &m->cfg);
  m->load_seconds = now_seconds() - t0;

done:
  free(s.items);
  if (!status && m->n_lazy)
    m->file = st; /* the unwidened tensors are read from it (fap_model_read_weights) */
  else
    fap_safetensors_close(st);
  if (status) {
    fap_model_free(m);
    return status;
  }
  fap_log(FAP_LOG_INFO, "%s: loaded %lld parameters in %.2f s", path, (long long)m->params,
          m->load_seconds);
  *out = m;
  return FAP_OK;
}

fap_status fap_model_load(const char *path, fap_model **out) {
  fap_api_enter();
  return fap_api_return(model_load(path, out));
}

fap_model *fap_model_ref(fap_model *model) {
  if (model)
    __atomic_add_fetch(&model->refcount, 1, __ATOMIC_RELAXED);
  return model;
}

void fap_model_free(fap_model *model) {
  if (!model || __atomic_sub_fetch(&model->refcount, 1, __ATOMIC_ACQ_REL) > 0)
    return;
  free(model->storage);
  free(model->lazy);
  fap_safetensors_close(model->file);
  g_mutex_clear(&model->lazy_lock);
  free(model->vblocks);
  free(model->tblocks);
  free(model->deep);
  free(model->path);
  free(model);
}

const fap_config *fap_model_config(const fap_model *model) { return model ? &model->cfg : NULL; }
double fap_model_load_seconds(const fap_model *model) { return model ? model->load_seconds : 0; }
int64_t fap_model_parameter_count(const fap_model *model) { return model ? model->params : 0; }

/* ---- weights widened on demand --------------------------------------------- */

/* Where [w, w + count) lies: 0 not in storage, or across a lazy tensor's
 * edge; 1 in storage, in no lazy tensor (resident); 2 inside *lazy. */
static int locate(const fap_model *m, const float *w, size_t count, fap_lazy_tensor **lazy) {
  *lazy = NULL;
  if (!m || !m->storage || w < m->storage || count > m->storage_floats ||
      (size_t)(w - m->storage) > m->storage_floats - count)
    return 0;
  for (size_t i = 0; i < m->n_lazy; i++) {
    fap_lazy_tensor *l = &m->lazy[i];
    if (w < l->slot + l->count && w + count > l->slot) { /* overlaps it */
      if (w < l->slot || (size_t)(w - l->slot) > l->count - count)
        return 0;
      *lazy = l;
      return 2;
    }
  }
  return 1;
}

static fap_status not_a_weight(const fap_model *m, const float *w, size_t count) {
  return fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: %zu weights at %p are not inside one tensor of "
                  "this model", m ? m->path : "(no model)", count, (const void *)w);
}

fap_status fap_model_need_weights(fap_model *m, const float *w, size_t count) {
  fap_lazy_tensor *l;
  int where = locate(m, w, count, &l);
  if (!where)
    return not_a_weight(m, w, count);
  if (where == 1)
    return FAP_OK;
  fap_status status = FAP_OK;
  g_mutex_lock(&m->lazy_lock);
  if (!l->resident && !(status = fap_safetensors_widen(m->file, l->tensor, 0, l->count, l->slot)))
    l->resident = 1;
  g_mutex_unlock(&m->lazy_lock);
  return status;
}

fap_status fap_model_read_weights(const fap_model *m, const float *w, size_t count, float *dst) {
  fap_lazy_tensor *l;
  int where = locate(m, w, count, &l);
  if (!where || !dst)
    return not_a_weight(m, w, count);
  int resident = 1;
  if (where == 2) {
    g_mutex_lock((GMutex *)&m->lazy_lock);
    resident = l->resident;
    g_mutex_unlock((GMutex *)&m->lazy_lock);
  }
  if (resident) {
    memcpy(dst, w, count * sizeof(float));
    return FAP_OK;
  }
  return fap_safetensors_widen(m->file, l->tensor, (size_t)(w - l->slot), count, dst);
}

size_t fap_model_resident_floats(const fap_model *m) {
  if (!m)
    return 0;
  size_t lazy = 0;
  g_mutex_lock((GMutex *)&m->lazy_lock);
  for (size_t i = 0; i < m->n_lazy; i++)
    lazy += m->lazy[i].resident ? 0 : m->lazy[i].count;
  g_mutex_unlock((GMutex *)&m->lazy_lock);
  return (size_t)m->params - lazy;
}
