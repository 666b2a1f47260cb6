/* Unit tests of model loading (core/model.c): valid models load with the
 * configuration of their metadata and the right weights behind every pointer;
 * hostile or inconsistent files are rejected with the right status and one
 * logged message that names the file and the key or tensor at fault.
 *
 * usage: test_model TINY_A TINY_F16 TINY_BF16 [TINY_AC TINY_AC_B]
 * Hostile files are built from the valid tiny-a model (and, for the
 * AnomalyCLIP family, from tiny-ac: out layers 2,4 of 4, dual_start 1) with
 * the test-only safetensors writer (st_writer.h), changing one thing at a
 * time. */
#include "fap.h"
#include "half.h"
#include "model.h"
#include "safetensors.h"
#include "st_writer.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *tiny_a, *tiny_f16, *tiny_bf16, *tiny_ac, *tiny_ac_b;

/* ---- log capture ------------------------------------------------------------ */

static char last_error[2048];
static int n_errors, n_infos;

static void capture(fap_log_level level, const char *message, void *user_data) {
  (void)user_data;
  if (level == FAP_LOG_ERROR) {
    g_strlcpy(last_error, message, sizeof last_error);
    n_errors++;
    if (g_test_verbose())
      g_test_message("logged: %s", message);
  } else if (level == FAP_LOG_INFO) {
    n_infos++;
  }
}

static void log_reset(void) {
  last_error[0] = '\0';
  n_errors = n_infos = 0;
}

static void assert_logged(const char *phrase) {
  if (!strstr(last_error, phrase))
    g_error("logged message \"%s\" lacks \"%s\"", last_error, phrase);
}

/* Loads path, which must fail with `want`, logging exactly one error that names
 * the file and contains every phrase (NULL-terminated list). */
static void expect_fail_v(const char *path, fap_status want, va_list ap) {
  fap_model *m = (fap_model *)&m; /* must be reset to NULL */
  log_reset();
  fap_status got = fap_model_load(path, &m);
  if (got != want)
    g_error("%s: status %d (%s), expected %d (%s); message \"%s\"", path, got,
            fap_status_string(got), want, fap_status_string(want), last_error);
  g_assert_null(m);
  if (n_errors != 1)
    g_error("%s: %d error messages logged, expected 1 (last \"%s\")", path, n_errors, last_error);
  if (strcmp(fap_last_error(), last_error) != 0)
    g_error("%s: fap_last_error \"%s\", but the sink got \"%s\"", path, fap_last_error(),
            last_error);
  if (path && *path)
    assert_logged(path);
  for (const char *phrase; (phrase = va_arg(ap, const char *));)
    assert_logged(phrase);
}

static void expect_fail(const char *path, fap_status want, ...) G_GNUC_NULL_TERMINATED;
static void expect_fail(const char *path, fap_status want, ...) {
  va_list ap;
  va_start(ap, want);
  expect_fail_v(path, want, ap);
  va_end(ap);
}

/* Writes b, loads it (must fail as above), deletes the file. */
static void expect_builder_fail(st_builder *b, fap_status want, ...) G_GNUC_NULL_TERMINATED;
static void expect_builder_fail(st_builder *b, fap_status want, ...) {
  char *path = st_builder_write(b, "hostile.safetensors");
  va_list ap;
  va_start(ap, want);
  expect_fail_v(path, want, ap);
  va_end(ap);
  st_builder_unlink(path);
  g_free(path);
}

static fap_model *load_ok(const char *path) {
  fap_model *m = NULL;
  log_reset();
  fap_status s = fap_model_load(path, &m);
  if (s != FAP_OK)
    g_error("%s: status %d; message \"%s\"", path, s, last_error);
  g_assert_nonnull(m);
  g_assert_cmpint(n_errors, ==, 0);
  g_assert_cmpstr(fap_last_error(), ==, "");
  return m;
}

static fap_model *builder_load_ok(st_builder *b) {
  char *path = st_builder_write(b, "valid.safetensors");
  fap_model *m = load_ok(path);
  st_builder_unlink(path);
  g_free(path);
  return m;
}

/* Sets one metadata key of b to value, expects a schema error naming it, restores it. */
static void expect_meta_fail(st_builder *b, const char *key, const char *value, ...)
    G_GNUC_NULL_TERMINATED;
static void expect_meta_fail(st_builder *b, const char *key, const char *value, ...) {
  char *old = g_strdup(g_hash_table_lookup(b->metadata, key));
  st_builder_meta(b, key, value);
  char *path = st_builder_write(b, "hostile.safetensors");
  va_list ap;
  va_start(ap, value);
  expect_fail_v(path, FAP_ERR_SCHEMA, ap);
  va_end(ap);
  st_builder_unlink(path);
  g_free(path);
  st_builder_meta(b, key, old);
  g_free(old);
}

/* ---- the configuration keys ------------------------------------------------- */

static const struct {
  const char *key;
  size_t offset;
} int_keys[] = {
#define K(name) {#name, offsetof(fap_config, name)}
    K(image_size),    K(patch_size),   K(vision_grid),   K(vision_width),  K(vision_heads),
    K(vision_layers), K(dual_start),   K(embed_dim),     K(text_width),    K(text_heads),
    K(text_layers),   K(context_length), K(n_pos),       K(n_neg),         K(n_prompts),
    K(top_m),         K(prompt_depth), K(prompt_length), K(prior_hidden),  K(end_pos_normal),
    K(end_pos_abnormal),
#undef K
};

static int config_int(const fap_config *c, size_t i) {
  return *(const int *)((const char *)c + int_keys[i].offset);
}

/* Every configuration field equals the file's __metadata__ (parsed here). */
static void check_config(const char *path, const fap_config *c) {
  fap_safetensors *st = NULL;
  g_assert_cmpint(fap_safetensors_open(path, &st), ==, FAP_OK);
  for (size_t i = 0; i < G_N_ELEMENTS(int_keys); i++) {
    const char *v = fap_safetensors_metadata(st, int_keys[i].key);
    g_assert_nonnull(v);
    if (config_int(c, i) != (int)g_ascii_strtoll(v, NULL, 10))
      g_error("%s: config %s = %d, metadata says %s", path, int_keys[i].key, config_int(c, i), v);
  }
  g_assert_cmpfloat(c->sigma, ==, (float)g_ascii_strtod(fap_safetensors_metadata(st, "sigma"), NULL));
  char *sidecar = g_strconcat(path, ".calibration.json", NULL);
  gboolean calibrated = g_file_test(sidecar, G_FILE_TEST_EXISTS);
  g_free(sidecar);
  if (calibrated) { /* a calibration sidecar overrides the thresholds (test_calibration) */
    fap_safetensors_close(st);
    return;
  }
  const char *it = fap_safetensors_metadata(st, "image_threshold");
  const char *pt = fap_safetensors_metadata(st, "pixel_threshold");
  g_assert_cmpfloat(c->image_threshold, ==, it ? (float)g_ascii_strtod(it, NULL) : -1.0f);
  g_assert_cmpfloat(c->pixel_threshold, ==, pt ? (float)g_ascii_strtod(pt, NULL) : -1.0f);
  fap_safetensors_close(st);
}

/* ---- name -> widened weights, from the model's own pointers ----------------- */

static void add_block(GHashTable *t, const fap_block *b, const char *prefix, int i) {
  const struct {
    const char *suffix;
    const float *p;
  } items[] = {
      {"ln_1.weight", b->ln1_w},         {"ln_1.bias", b->ln1_b},
      {"attn.in_proj_weight", b->in_w},  {"attn.in_proj_bias", b->in_b},
      {"attn.out_proj.weight", b->out_w}, {"attn.out_proj.bias", b->out_b},
      {"ln_2.weight", b->ln2_w},         {"ln_2.bias", b->ln2_b},
      {"mlp.c_fc.weight", b->fc_w},      {"mlp.c_fc.bias", b->fc_b},
      {"mlp.c_proj.weight", b->cproj_w}, {"mlp.c_proj.bias", b->cproj_b},
  };
  for (size_t k = 0; k < G_N_ELEMENTS(items); k++)
    g_hash_table_insert(t, g_strdup_printf("%sresblocks.%d.%s", prefix, i, items[k].suffix),
                        (gpointer)items[k].p);
}

/* Every tensor of models/README.md -> the pointer the model holds for it. */
static GHashTable *model_tensors(const fap_model *m) {
  GHashTable *t = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  const struct {
    const char *name;
    const float *p;
  } items[] = {
      {"visual.conv1.weight", m->conv1},
      {"visual.class_embedding", m->class_emb},
      {"visual.positional_embedding", m->vpos},
      {"visual.ln_pre.weight", m->ln_pre_w},
      {"visual.ln_pre.bias", m->ln_pre_b},
      {"visual.ln_post.weight", m->ln_post_w},
      {"visual.ln_post.bias", m->ln_post_b},
      {"visual.proj", m->vproj},
      {"positional_embedding", m->tpos},
      {"ln_final.weight", m->ln_final_w},
      {"ln_final.bias", m->ln_final_b},
      {"text_projection", m->tproj},
      {"prompt_learner.ctx_pos", m->ctx_pos},
      {"prompt_learner.ctx_neg", m->ctx_neg},
      {"prompt_learner.token_prefix_pos", m->prefix_pos},
      {"prompt_learner.token_prefix_neg", m->prefix_neg},
      {"prompt_learner.token_suffix_pos", m->suffix_pos},
      {"prompt_learner.token_suffix_neg", m->suffix_neg},
      {"prompt_learner.patch_meta_net.linear1.weight", m->prior1_w},
      {"prompt_learner.patch_meta_net.linear1.bias", m->prior1_b},
      {"prompt_learner.patch_meta_net.linear2.weight", m->prior2_w},
      {"prompt_learner.patch_meta_net.linear2.bias", m->prior2_b},
  };
  for (size_t k = 0; k < G_N_ELEMENTS(items); k++) {
    /* AnomalyCLIP has no prior MLP: those four stay NULL (checked in test_valid_ac) */
    if (m->cfg.family != FAP_FAMILY_FAPROMPT && g_str_has_prefix(items[k].name,
                                                                 "prompt_learner.patch_meta_net."))
      continue;
    g_hash_table_insert(t, g_strdup(items[k].name), (gpointer)items[k].p);
  }
  for (int i = 0; i < m->cfg.vision_layers; i++)
    add_block(t, &m->vblocks[i], "visual.transformer.", i);
  for (int i = 0; i < m->cfg.text_layers; i++)
    add_block(t, &m->tblocks[i], "transformer.", i);
  for (int j = 0; j < m->cfg.prompt_depth - 1; j++)
    g_hash_table_insert(t, g_strdup_printf("prompt_learner.compound_prompts_text.%d", j),
                        (gpointer)m->deep[j]);
  return t;
}

static float stored_value(const fap_st_tensor *t, int64_t i) {
  const uint8_t *p = (const uint8_t *)t->data + i * (int64_t)fap_dtype_size(t->dtype);
  if (t->dtype == FAP_DTYPE_F32) {
    float f;
    memcpy(&f, p, 4);
    return f;
  }
  uint16_t h = (uint16_t)(p[0] | p[1] << 8);
  return t->dtype == FAP_DTYPE_F16 ? fap_f16_to_f32(h) : fap_bf16_to_f32(h);
}

/* Every tensor of the file sits behind the right pointer, widened exactly;
 * deep prompts rounded to f16. Returns the sum of the element counts. */
/* The vision blocks' four linear weights are the lazy ones (model.h). */
static gboolean lazy_name(const char *name) {
  return g_str_has_prefix(name, "visual.transformer.") &&
         (g_str_has_suffix(name, ".attn.in_proj_weight") ||
          g_str_has_suffix(name, ".attn.out_proj.weight") ||
          g_str_has_suffix(name, ".mlp.c_fc.weight") || g_str_has_suffix(name, ".mlp.c_proj.weight"));
}

static void make_resident(fap_model *m) {
  for (size_t i = 0; i < m->n_lazy; i++)
    g_assert_cmpint(fap_model_need_weights(m, m->lazy[i].slot, m->lazy[i].count), ==, FAP_OK);
  g_assert_cmpuint(fap_model_resident_floats(m), ==, (size_t)fap_model_parameter_count(m));
}

/* Every tensor of the file sits behind the right pointer, widened exactly:
 * first read through fap_model_read_weights (lazy tensors from the file,
 * nothing made resident), then in place after fap_model_need_weights. */
static int64_t check_weights(const char *path, fap_model *m) {
  fap_safetensors *st = NULL;
  g_assert_cmpint(fap_safetensors_open(path, &st), ==, FAP_OK);
  GHashTable *t = model_tensors(m);
  g_assert_cmpuint(g_hash_table_size(t), ==, fap_safetensors_count(st));
  g_assert_cmpuint(m->n_lazy, ==, 4 * (size_t)m->cfg.vision_layers);
  size_t lazy_floats = 0;
  for (size_t i = 0; i < m->n_lazy; i++)
    lazy_floats += m->lazy[i].count;
  const size_t resident = fap_model_resident_floats(m);
  g_assert_cmpuint(resident + lazy_floats, ==, (size_t)fap_model_parameter_count(m));
  int64_t total = 0, rounded = 0;
  for (int pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < fap_safetensors_count(st); i++) {
      const fap_st_tensor *ti = fap_safetensors_tensor(st, i);
      const float *p = g_hash_table_lookup(t, ti->name);
      if (!p)
        g_error("%s: the model has no pointer for tensor '%s'", path, ti->name);
      float *read = g_new(float, ti->numel);
      g_assert_cmpint(fap_model_read_weights(m, p, (size_t)ti->numel, read), ==, FAP_OK);
      if (pass == 1) {
        g_assert_cmpint(fap_model_need_weights(m, p, (size_t)ti->numel), ==, FAP_OK);
        memcpy(read, p, (size_t)ti->numel * sizeof(float)); /* now in place */
      }
      gboolean deep = g_str_has_prefix(ti->name, "prompt_learner.compound_prompts_text.");
      for (int64_t j = 0; j < ti->numel; j++) {
        float want = stored_value(ti, j);
        if (deep) {
          rounded += pass == 0 && fap_round_f16(want) != want;
          want = fap_round_f16(want);
        }
        if (memcmp(&read[j], &want, 4) != 0)
          g_error("%s: tensor '%s' element %lld is %.9g in the model (%s), %.9g in the file", path,
                  ti->name, (long long)j, read[j], pass ? "in place" : "read", want);
      }
      g_free(read);
      total += pass == 0 ? ti->numel : 0;
      if (pass == 0 && lazy_name(ti->name) && fap_model_resident_floats(m) != resident)
        g_error("%s: reading tensor '%s' made it resident", path, ti->name);
    }
    if (pass == 0)
      g_assert_cmpuint(fap_model_resident_floats(m), ==, resident);
  }
  g_assert_cmpuint(fap_model_resident_floats(m), ==, (size_t)fap_model_parameter_count(m));
  /* an f32 file's deep prompts are not f16 values: the rounding must have done something */
  const fap_st_tensor *d0 = fap_safetensors_find(st, "prompt_learner.compound_prompts_text.0");
  if (d0 && d0->dtype == FAP_DTYPE_F32)
    g_assert_cmpint(rounded, >, 0);
  g_hash_table_unref(t);
  fap_safetensors_close(st);
  return total;
}

/* ---- valid models ------------------------------------------------------------ */

static void test_valid(gconstpointer data) {
  const char *path = *(const char *const *)data;
  fap_model *m = load_ok(path);
  g_assert_cmpint(n_infos, >=, 1); /* "loaded N parameters" */
  const fap_config *c = fap_model_config(m);
  g_assert_nonnull(c);
  check_config(path, c);
  int64_t total = check_weights(path, m);
  g_assert_cmpint(fap_model_parameter_count(m), ==, total);
  double secs = fap_model_load_seconds(m);
  g_assert_true(secs >= 0 && secs < 60);
  fap_model_free(m);
}

/* The lazy vision weights (model.h): views inside one tensor read like the
 * tensor; ranges across a tensor's edge or outside storage are refused;
 * a file written over in place is refused with a message, a file
 * replaced by a rename still gives the weights that were loaded. */
static void test_lazy_views(void) {
  fap_model *m = load_ok(tiny_a);
  const int c = m->cfg.vision_width;
  const float *in_w = m->vblocks[0].in_w;
  float *whole = g_new(float, 3 * c * c), *part = g_new(float, 2 * c * c);
  g_assert_cmpint(fap_model_read_weights(m, in_w, 3 * (size_t)c * c, whole), ==, FAP_OK);
  g_assert_cmpint(fap_model_read_weights(m, in_w + c * c, 2 * (size_t)c * c, part), ==, FAP_OK);
  g_assert_cmpmem(part, 2 * c * c * sizeof(float), whole + c * c, 2 * c * c * sizeof(float));
  log_reset();
  g_assert_cmpint(fap_model_read_weights(m, in_w + c * c, 3 * (size_t)c * c, part), ==,
                  FAP_ERR_INVALID_ARGUMENT); /* runs past the tensor's end */
  g_assert_nonnull(strstr(last_error, "not inside one tensor"));
  g_assert_cmpint(fap_model_need_weights(m, in_w - 1, 2), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_cmpint(fap_model_need_weights(m, whole, 1), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_cmpint(fap_model_read_weights(m, m->storage + m->storage_floats, 1, part), ==,
                  FAP_ERR_INVALID_ARGUMENT);
  /* a view made resident makes its whole tensor resident, and only that one */
  const size_t before = fap_model_resident_floats(m);
  g_assert_cmpint(fap_model_need_weights(m, in_w + c * c, 1), ==, FAP_OK);
  g_assert_cmpuint(fap_model_resident_floats(m), ==, before + 3 * (size_t)c * c);
  g_assert_cmpmem(in_w, 3 * c * c * sizeof(float), whole, 3 * c * c * sizeof(float));
  g_free(whole);
  g_free(part);
  fap_model_free(m);
}

static void test_lazy_file_changes(void) {
  GError *err = NULL;
  char *dir = g_dir_make_tmp("faptest-XXXXXX", &err);
  g_assert_no_error(err);
  char *path = g_build_filename(dir, "m.safetensors", NULL);
  char *other = g_build_filename(dir, "other.safetensors", NULL);
  gchar *bytes = NULL;
  gsize size = 0;
  g_assert_true(g_file_get_contents(tiny_a, &bytes, &size, NULL));

  /* replaced by a rename: the loaded file (still open) gives the loaded weights */
  g_assert_true(g_file_set_contents(path, bytes, (gssize)size, NULL));
  fap_model *m = load_ok(path);
  const size_t n = m->lazy[0].count;
  float *want = g_new(float, n);
  g_assert_cmpint(fap_model_read_weights(m, m->lazy[0].slot, n, want), ==, FAP_OK);
  gchar *changed = g_memdup2(bytes, size);
  for (gsize i = size - 4096; i < size; i++) /* the data area's end: tensor values */
    changed[i] ^= 0x5a;
  g_assert_true(g_file_set_contents(other, changed, (gssize)size, NULL));
  g_assert_cmpint(g_rename(other, path), ==, 0);
  g_assert_cmpint(fap_model_need_weights(m, m->lazy[0].slot, n), ==, FAP_OK);
  g_assert_cmpmem(m->lazy[0].slot, n * sizeof(float), want, n * sizeof(float));
  fap_model_free(m);

  /* written over in place (as cp does): refused, saying what to do */
  g_assert_true(g_file_set_contents(path, bytes, (gssize)size, NULL));
  m = load_ok(path);
  g_usleep(20000); /* a modification time that differs on coarse clocks too */
  FILE *f = fopen(path, "r+b");
  g_assert_nonnull(f);
  g_assert_cmpint(fseek(f, (long)size - 4096, SEEK_SET), ==, 0);
  g_assert_cmpuint(fwrite(changed + size - 4096, 1, 4096, f), ==, 4096);
  fclose(f);
  log_reset();
  g_assert_cmpint(fap_model_need_weights(m, m->lazy[1].slot, m->lazy[1].count), ==, FAP_ERR_IO);
  g_assert_nonnull(strstr(last_error, "written over since it was loaded"));
  g_assert_nonnull(strstr(last_error, path));
  g_assert_cmpint(fap_model_read_weights(m, m->lazy[1].slot, 1, want), ==, FAP_ERR_IO);
  fap_model_free(m);

  g_remove(path);
  g_rmdir(dir);
  g_free(changed);
  g_free(want);
  g_free(bytes);
  g_free(other);
  g_free(path);
  g_free(dir);
}

static void test_getters_null(void) {
  g_assert_null(fap_model_config(NULL));
  g_assert_cmpint(fap_model_parameter_count(NULL), ==, 0);
  g_assert_cmpfloat(fap_model_load_seconds(NULL), ==, 0);
  g_assert_null(fap_model_ref(NULL));
  fap_model_free(NULL); /* no-op */
}

static void test_bad_arguments(void) {
  fap_model *m = (fap_model *)&m;
  log_reset();
  g_assert_cmpint(fap_model_load(NULL, &m), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_null(m);
  assert_logged("no model path");
  m = (fap_model *)&m;
  log_reset();
  g_assert_cmpint(fap_model_load("", &m), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_null(m);
  assert_logged("no model path");
  log_reset();
  g_assert_cmpint(fap_model_load(tiny_a, NULL), ==, FAP_ERR_INVALID_ARGUMENT);
  assert_logged("out is NULL");
  g_assert_cmpint(n_errors, ==, 1);
}

static int refcount(const fap_model *m) { return __atomic_load_n(&m->refcount, __ATOMIC_RELAXED); }

static void test_refcount(void) {
  fap_model *m = load_ok(tiny_a);
  g_assert_cmpint(refcount(m), ==, 1);
  g_assert_true(fap_model_ref(m) == m);
  g_assert_cmpint(refcount(m), ==, 2);
  fap_model_free(m);
  g_assert_cmpint(refcount(m), ==, 1);
  g_assert_cmpint(fap_model_config(m)->vision_layers, ==, 4); /* still alive (valgrind checks) */

  /* a detector keeps its own reference: the caller may drop theirs */
  fap_detector_options o;
  fap_detector_options_init(&o);
  o.backend = FAP_BACKEND_CPU;
  o.threads = 1;
  fap_detector *d = NULL;
  g_assert_cmpint(fap_detector_new(m, &o, &d), ==, FAP_OK);
  g_assert_cmpint(refcount(m), ==, 2);
  fap_model_free(m);
  g_assert_cmpint(refcount(m), ==, 1);
  uint8_t px[8 * 6 * 3];
  for (size_t i = 0; i < sizeof px; i++)
    px[i] = (uint8_t)(i * 37);
  fap_frame f = {FAP_PIXEL_RGB, 8, 6, 8 * 3, px};
  fap_result r;
  g_assert_cmpint(fap_detector_run(d, &f, &r), ==, FAP_OK);
  g_assert_true(isfinite(r.score) && r.score >= 0 && r.score <= 1);
  fap_detector_free(d); /* drops the last reference: valgrind sees the model freed */
}

/* Rounds every F32 tensor of tiny-a through half precision twice over: once
 * stored as F16 (or BF16), once rounded but stored as F32. Both must load to
 * bitwise the same weights and give bitwise the same map, which must differ
 * from the unrounded model's. */
static uint16_t to_bf16(float f) { /* round to nearest even; inputs are finite */
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static void run_map(fap_model *m, float *map, float *score) {
  fap_detector_options o;
  fap_detector_options_init(&o);
  o.backend = FAP_BACKEND_CPU;
  o.threads = 1;
  o.reference = 1; /* the plain loops: cheapest under valgrind */
  fap_detector *d = NULL;
  g_assert_cmpint(fap_detector_new(m, &o, &d), ==, FAP_OK);
  uint8_t px[40 * 30 * 3];
  GRand *rng = g_rand_new_with_seed(5);
  for (size_t i = 0; i < sizeof px; i++)
    px[i] = (uint8_t)g_rand_int(rng);
  g_rand_free(rng);
  fap_frame f = {FAP_PIXEL_RGB, 40, 30, 40 * 3, px};
  fap_result r;
  g_assert_cmpint(fap_detector_run(d, &f, &r), ==, FAP_OK);
  memcpy(map, r.map, (size_t)r.map_size * r.map_size * sizeof(float));
  *score = r.score;
  fap_detector_free(d);
}

static void test_half_storage(gconstpointer data) {
  const fap_dtype half = (fap_dtype)GPOINTER_TO_INT(data);
  st_builder *narrow = st_builder_from_file(tiny_a), *wide = st_builder_from_file(tiny_a);
  g_assert_nonnull(narrow);
  int64_t changed = 0;
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  for (guint i = 0; i < narrow->entries->len; i++)
    g_ptr_array_add(names, g_strdup(((st_entry *)g_ptr_array_index(narrow->entries, i))->name));
  for (guint i = 0; i < names->len; i++) {
    const char *name = g_ptr_array_index(names, i);
    st_entry *e = st_builder_get(narrow, name);
    g_assert_cmpint(e->dtype, ==, FAP_DTYPE_F32);
    gsize bytes;
    const float *src = g_bytes_get_data(e->data, &bytes);
    size_t n = bytes / 4;
    uint16_t *h = g_new(uint16_t, n + 1);
    float *r = g_new(float, n + 1);
    for (size_t j = 0; j < n; j++) {
      h[j] = half == FAP_DTYPE_F16 ? fap_f32_to_f16(src[j]) : to_bf16(src[j]);
      r[j] = half == FAP_DTYPE_F16 ? fap_f16_to_f32(h[j]) : fap_bf16_to_f32(h[j]);
      changed += r[j] != src[j];
    }
    int ndim = e->ndim;
    int64_t shape[FAP_MAX_DIMS];
    memcpy(shape, e->shape, sizeof shape);
    st_builder_set(wide, name, FAP_DTYPE_F32, ndim, shape, r, n * 4);
    st_builder_set(narrow, name, half, ndim, shape, h, n * 2); /* frees e and src */
    g_free(h);
    g_free(r);
  }
  g_ptr_array_unref(names);
  g_assert_cmpint(changed, >, 1000);
  fap_model *mn = builder_load_ok(narrow), *mw = builder_load_ok(wide), *m0 = load_ok(tiny_a);
  g_assert_cmpint(mn->storage_floats, ==, mw->storage_floats);
  make_resident(mn);
  make_resident(mw);
  /* same weights behind every pointer, bit for bit */
  GHashTable *tn = model_tensors(mn), *tw = model_tensors(mw);
  fap_safetensors *st = NULL;
  g_assert_cmpint(fap_safetensors_open(tiny_a, &st), ==, FAP_OK);
  for (size_t i = 0; i < fap_safetensors_count(st); i++) {
    const fap_st_tensor *t = fap_safetensors_tensor(st, i);
    const float *a = g_hash_table_lookup(tn, t->name), *b = g_hash_table_lookup(tw, t->name);
    g_assert_nonnull(a);
    g_assert_nonnull(b);
    if (memcmp(a, b, (size_t)t->numel * 4) != 0)
      g_error("%s: tensor '%s' stored as %s widens differently from the rounded F32 copy",
              fap_dtype_name(half), t->name, fap_dtype_name(half));
  }
  fap_safetensors_close(st);
  g_hash_table_unref(tn);
  g_hash_table_unref(tw);

  const int s = fap_model_config(m0)->image_size;
  float *map_n = g_new(float, s * s), *map_w = g_new(float, s * s), *map_0 = g_new(float, s * s);
  float score_n, score_w, score_0;
  run_map(mn, map_n, &score_n);
  run_map(mw, map_w, &score_w);
  run_map(m0, map_0, &score_0);
  g_assert_true(memcmp(map_n, map_w, (size_t)s * s * 4) == 0);
  g_assert_true(memcmp(&score_n, &score_w, 4) == 0);
  g_assert_false(memcmp(map_n, map_0, (size_t)s * s * 4) == 0);
  double maxdiff = 0;
  for (int i = 0; i < s * s; i++)
    maxdiff = fmax(maxdiff, fabs(map_n[i] - map_0[i]));
  g_assert_cmpfloat(maxdiff, <, 0.1); /* a rounding, not a different model */
  g_free(map_n);
  g_free(map_w);
  g_free(map_0);
  fap_model_free(mn);
  fap_model_free(mw);
  fap_model_free(m0);
  st_builder_free(narrow);
  st_builder_free(wide);
}

static void test_thresholds(void) {
  st_builder *b = st_builder_from_file(tiny_a);
  st_builder_meta(b, "image_threshold", "0.25");
  st_builder_meta(b, "pixel_threshold", "0.75");
  st_builder_meta(b, "source_clip_sha256", "0123abc"); /* other keys are ignored */
  fap_model *m = builder_load_ok(b);
  g_assert_cmpfloat(fap_model_config(m)->image_threshold, ==, 0.25f);
  g_assert_cmpfloat(fap_model_config(m)->pixel_threshold, ==, 0.75f);
  fap_model_free(m);
  st_builder_meta(b, "image_threshold", "0");
  st_builder_meta(b, "pixel_threshold", "1");
  m = builder_load_ok(b);
  g_assert_cmpfloat(fap_model_config(m)->image_threshold, ==, 0.0f);
  g_assert_cmpfloat(fap_model_config(m)->pixel_threshold, ==, 1.0f);
  fap_model_free(m);
  static const char *const bad[] = {"1.5", "-0.1", "abc", "nan", "inf", "", "0.5x"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    char *quoted = g_strdup_printf("\"%s\"", bad[i]);
    expect_meta_fail(b, "image_threshold", bad[i], "'image_threshold'", quoted, NULL);
    expect_meta_fail(b, "pixel_threshold", bad[i], "'pixel_threshold'", quoted, NULL);
    g_free(quoted);
  }
  /* absent: -1 */
  st_builder_meta(b, "image_threshold", NULL);
  st_builder_meta(b, "pixel_threshold", NULL);
  m = builder_load_ok(b); /* a fresh directory: no calibration sidecar either */
  g_assert_cmpfloat(fap_model_config(m)->image_threshold, ==, -1.0f);
  g_assert_cmpfloat(fap_model_config(m)->pixel_threshold, ==, -1.0f);
  fap_model_free(m);
  st_builder_free(b);
}

/* Removes a directory tree made by a test. */
static void rm_tree(const char *path) {
  if (g_file_test(path, G_FILE_TEST_IS_DIR) && !g_file_test(path, G_FILE_TEST_IS_SYMLINK)) {
    GDir *d = g_dir_open(path, 0, NULL);
    for (const char *name; d && (name = g_dir_read_name(d));) {
      char *child = g_build_filename(path, name, NULL);
      rm_tree(child);
      g_free(child);
    }
    if (d)
      g_dir_close(d);
    g_rmdir(path);
  } else {
    g_unlink(path);
  }
}

/* Metadata numbers are plain decimal whatever the process locale: a
 * GStreamer application that calls setlocale(LC_ALL, "") in a locale with a
 * decimal comma (de_DE, fr_FR, ...) must still load "sigma": "2.0", and "2,5"
 * must stay invalid. The test compiles a minimal locale with a decimal comma
 * (localedef, a few ms) into a temp dir; skipped where localedef is missing. */
static const char comma_locale_src[] =
    "LC_CTYPE\ncopy \"POSIX\"\nEND LC_CTYPE\n"
    "LC_NUMERIC\ndecimal_point \",\"\nthousands_sep \".\"\ngrouping 3\nEND LC_NUMERIC\n"
    "LC_TIME\ncopy \"POSIX\"\nEND LC_TIME\nLC_COLLATE\ncopy \"POSIX\"\nEND LC_COLLATE\n"
    "LC_MONETARY\ncopy \"POSIX\"\nEND LC_MONETARY\n"
    "LC_MESSAGES\ncopy \"POSIX\"\nEND LC_MESSAGES\n";

static void test_comma_locale(void) {
  char *localedef = g_find_program_in_path("localedef");
  if (!localedef) {
    g_test_skip("localedef not found: cannot make a decimal-comma locale");
    return;
  }
  GError *err = NULL;
  char *dir = g_dir_make_tmp("faptest-XXXXXX", &err);
  g_assert_no_error(err);
  char *src = g_build_filename(dir, "comma.src", NULL);
  char *out = g_build_filename(dir, "xx_XX", NULL);
  g_assert_true(g_file_set_contents(src, comma_locale_src, -1, NULL));
  const char *argv[] = {localedef, "-c", "-i", src, "-f", "ANSI_X3.4-1968", out, NULL};
  g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
               NULL, NULL, NULL, NULL, NULL, NULL);
  g_setenv("LOCPATH", dir, TRUE);
  char *saved = g_strdup(setlocale(LC_NUMERIC, NULL));
  gboolean have = setlocale(LC_NUMERIC, "xx_XX") != NULL;
  if (have && strcmp(localeconv()->decimal_point, ",") != 0)
    have = FALSE;
  fap_status status = FAP_OK, status_comma = FAP_OK;
  float sigma = 0;
  char message[2048] = "";
  if (have) {
    fap_model *m = NULL;
    log_reset();
    status = fap_model_load(tiny_a, &m);
    g_strlcpy(message, last_error, sizeof message);
    if (m)
      sigma = fap_model_config(m)->sigma;
    fap_model_free(m);
    st_builder *b = st_builder_from_file(tiny_a);
    st_builder_meta(b, "sigma", "2,5");
    char *path = st_builder_write(b, "comma.safetensors");
    m = NULL;
    status_comma = fap_model_load(path, &m);
    fap_model_free(m);
    st_builder_unlink(path);
    g_free(path);
    st_builder_free(b);
  }
  setlocale(LC_NUMERIC, saved); /* restore before asserting */
  g_unsetenv("LOCPATH");
  rm_tree(dir);
  g_free(saved);
  g_free(src);
  g_free(out);
  g_free(dir);
  g_free(localedef);
  if (!have) {
    g_test_skip("could not switch LC_NUMERIC to a decimal-comma locale");
    return;
  }
  if (status != FAP_OK || status_comma == FAP_OK) {
    g_test_message("REGRESSION: with LC_NUMERIC using a decimal comma, tiny-a (sigma \"2.0\") "
                   "loads with status %d (\"%s\"); sigma \"2,5\" gives status %d",
                   status, message, status_comma);
    g_test_fail_printf("core/model.c parses float metadata with strtod(), which follows "
                      "LC_NUMERIC; use g_ascii_strtod() or a C-locale parser");
    return;
  }
  g_assert_cmpfloat(sigma, ==, 2.0f);
}

/* ---- hostile: tensors --------------------------------------------------------- */

static void test_missing_tensor(void) {
  st_builder *b = st_builder_from_file(tiny_a);
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  for (guint i = 0; i < b->entries->len; i++)
    g_ptr_array_add(names, g_strdup(((st_entry *)g_ptr_array_index(b->entries, i))->name));
  g_assert_cmpuint(names->len, ==, 108);
  int tried = 0;
  for (guint i = 0; i < names->len; i++) {
    const char *name = g_ptr_array_index(names, i);
    /* every tensor outside the blocks, and every tensor of the last vision block
     * and the first text block (the blocks share one code path; valgrind time) */
    if (strstr(name, "resblocks.") && !g_str_has_prefix(name, "visual.transformer.resblocks.3.") &&
        !g_str_has_prefix(name, "transformer.resblocks.0."))
      continue;
    tried++;
    st_entry *e = st_builder_get(b, name);
    fap_dtype dtype = e->dtype;
    int ndim = e->ndim;
    int64_t shape[FAP_MAX_DIMS];
    memcpy(shape, e->shape, sizeof shape);
    GBytes *data = g_bytes_ref(e->data);
    g_assert_true(st_builder_remove(b, name));
    char *phrase = g_strdup_printf("tensor '%s' is missing", name);
    expect_builder_fail(b, FAP_ERR_SCHEMA, phrase, NULL);
    g_free(phrase);
    gsize n;
    const void *p = g_bytes_get_data(data, &n);
    st_builder_set(b, name, dtype, ndim, shape, p, n); /* back, at the end of the file */
    g_bytes_unref(data);
  }
  g_assert_cmpint(tried, ==, 108 - 7 * 12 + 2 * 12);
  fap_model_free(builder_load_ok(b)); /* everything is back: it loads again */
  g_ptr_array_unref(names);
  st_builder_free(b);
}

static void test_extra_tensor(void) {
  static const struct {
    const char *name;
    int ndim;
    int64_t shape[2];
  } extra[] = {
      {"token_embedding.weight", 2, {10, 48}},
      {"logit_scale", 0, {0}},
      {"prompt_learner.compound_prompts_text.2", 2, {4, 48}}, /* depth 3: only .0 and .1 */
      {"visual.transformer.resblocks.4.ln_1.weight", 1, {64}}, /* 4 layers: 0..3 */
      {"transformer.resblocks.3.ln_2.bias", 1, {48}},
      {"prompt_learner.compound_prompt_projections.0.weight", 2, {3, 48}},
      {"zzz", 1, {1}},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(extra); i++) {
    st_builder *b = st_builder_from_file(tiny_a);
    int64_t n = 1;
    for (int d = 0; d < extra[i].ndim; d++)
      n *= extra[i].shape[d];
    float *zeros = g_new0(float, n);
    st_builder_set(b, extra[i].name, FAP_DTYPE_F32, extra[i].ndim, extra[i].shape, zeros,
                   (size_t)n * 4);
    char *phrase = g_strdup_printf("unexpected tensor '%s'", extra[i].name);
    expect_builder_fail(b, FAP_ERR_SCHEMA, phrase, NULL);
    g_free(phrase);
    g_free(zeros);
    st_builder_free(b);
  }
}

/* Re-declares tensor name with a new shape of the same element count. */
static void reshape(st_builder *b, const char *name, int ndim, const int64_t *shape) {
  st_entry *e = st_builder_get(b, name);
  g_assert_nonnull(e);
  GBytes *data = g_bytes_ref(e->data);
  fap_dtype dtype = e->dtype;
  gsize n;
  const void *p = g_bytes_get_data(data, &n);
  st_builder_set(b, name, dtype, ndim, shape, p, n);
  g_bytes_unref(data);
}

static void test_wrong_shape(void) {
  static const struct {
    const char *name;
    int ndim;
    int64_t shape[4];
    const char *got, *want;
  } cases[] = {
      {"visual.proj", 2, {32, 64}, "[32, 64]", "[64, 32]"}, /* transposed */
      {"text_projection", 2, {32, 48}, "[32, 48]", "[48, 32]"},
      {"visual.conv1.weight", 4, {64, 14, 14, 3}, "[64, 14, 14, 3]", "[64, 3, 14, 14]"},
      {"visual.class_embedding", 2, {1, 64}, "[1, 64]", "[64]"},
      {"visual.transformer.resblocks.2.attn.in_proj_weight", 1, {192 * 64}, "[12288]", "[192, 64]"},
      {"transformer.resblocks.1.mlp.c_fc.weight", 2, {48, 192}, "[48, 192]", "[192, 48]"},
      {"prompt_learner.ctx_pos", 3, {1, 5, 48}, "[1, 5, 48]", "[1, 1, 5, 48]"},
      {"prompt_learner.ctx_neg", 4, {1, 2, 3, 48}, "[1, 2, 3, 48]", "[1, 3, 2, 48]"},
      {"prompt_learner.compound_prompts_text.1", 2, {48, 4}, "[48, 4]", "[4, 48]"},
      {"prompt_learner.patch_meta_net.linear1.weight", 2, {160, 10}, "[160, 10]", "[10, 160]"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    st_builder *b = st_builder_from_file(tiny_a);
    reshape(b, cases[i].name, cases[i].ndim, cases[i].shape);
    char *phrase = g_strdup_printf("tensor '%s' has shape %s", cases[i].name, cases[i].got);
    char *implies = g_strdup_printf("implies %s", cases[i].want);
    expect_builder_fail(b, FAP_ERR_SCHEMA, phrase, implies, NULL);
    g_free(phrase);
    g_free(implies);
    st_builder_free(b);
  }
}

/* The metadata changed, the tensors not: the first tensor the new
 * configuration disagrees with is named. */
static void test_config_mismatch(void) {
  static const struct {
    const char *key, *value, *phrase;
  } cases[] = {
      {"vision_layers", "5", "tensor 'visual.transformer.resblocks.4.ln_1.weight' is missing"},
      {"vision_layers", "3", "unexpected tensor 'visual.transformer.resblocks.3."},
      {"text_layers", "4", "tensor 'transformer.resblocks.3.ln_1.weight' is missing"},
      {"text_layers", "2", "unexpected tensor 'transformer.resblocks.2."},
      {"text_width", "64", "tensor 'positional_embedding' has shape [16, 48]"},
      {"vision_width", "128", "tensor 'visual.conv1.weight' has shape [64, 3, 14, 14]"},
      {"vision_grid", "4", "tensor 'visual.positional_embedding' has shape [10, 64]"},
      {"embed_dim", "16", "tensor 'visual.proj' has shape [64, 32]"},
      {"patch_size", "7", "tensor 'visual.conv1.weight' has shape [64, 3, 14, 14]"},
      {"context_length", "17", "tensor 'positional_embedding' has shape [16, 48]"},
      {"n_prompts", "2", "tensor 'prompt_learner.ctx_neg' has shape [1, 3, 2, 48]"},
      {"n_neg", "1", "tensor 'prompt_learner.ctx_neg' has shape [1, 3, 2, 48]"},
      {"n_pos", "4", "tensor 'prompt_learner.ctx_pos' has shape [1, 1, 5, 48]"},
      {"prompt_length", "3", "tensor 'prompt_learner.compound_prompts_text.0' has shape [4, 48]"},
      {"prompt_depth", "4", "tensor 'prompt_learner.compound_prompts_text.2' is missing"},
      {"prompt_depth", "2", "unexpected tensor 'prompt_learner.compound_prompts_text.1'"},
      {"top_m", "4", "tensor 'prompt_learner.patch_meta_net.linear1.weight' has shape [10, 160]"},
      {"prior_hidden", "11", "tensor 'prompt_learner.patch_meta_net.linear1.weight' has shape [10, 160]"},
  };
  st_builder *b = st_builder_from_file(tiny_a);
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
    expect_meta_fail(b, cases[i].key, cases[i].value, cases[i].phrase, NULL);
  st_builder_free(b);
}

static void test_dtype(void) {
  static const fap_dtype bad[] = {FAP_DTYPE_I32, FAP_DTYPE_I64, FAP_DTYPE_U8};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    st_builder *b = st_builder_from_file(tiny_a);
    const int64_t shape[1] = {64};
    size_t bytes = 64 * fap_dtype_size(bad[i]);
    void *data = g_malloc0(bytes);
    st_builder_set(b, "visual.ln_pre.weight", bad[i], 1, shape, data, bytes);
    char *phrase = g_strdup_printf("tensor 'visual.ln_pre.weight' has dtype %s", fap_dtype_name(bad[i]));
    expect_builder_fail(b, FAP_ERR_SCHEMA, phrase, NULL);
    g_free(phrase);
    g_free(data);
    st_builder_free(b);
  }
}

/* Overwrites element index of tensor name with the bytes of value. */
static void poke(st_builder *b, const char *name, size_t index, const void *value, size_t size) {
  st_entry *e = st_builder_get(b, name);
  g_assert_nonnull(e);
  gsize n;
  guint8 *copy = g_bytes_unref_to_data(g_bytes_ref(e->data), &n);
  g_assert_cmpuint((index + 1) * size, <=, n);
  memcpy(copy + index * size, value, size);
  g_bytes_unref(e->data);
  e->data = g_bytes_new_take(copy, n);
}

static void test_non_finite(void) {
  const float f32_bad[] = {NAN, INFINITY, -INFINITY};
  const char *const f32_names[] = {"visual.proj", "transformer.resblocks.2.attn.out_proj.bias",
                                   "prompt_learner.ctx_neg"};
  const size_t f32_index[] = {7, 47, 0};
  for (size_t i = 0; i < G_N_ELEMENTS(f32_bad); i++) {
    st_builder *b = st_builder_from_file(tiny_a);
    poke(b, f32_names[i], f32_index[i], &f32_bad[i], 4);
    char *phrase = g_strdup_printf("tensor '%s' holds a non-finite value at index %zu",
                                   f32_names[i], f32_index[i]);
    expect_builder_fail(b, FAP_ERR_SCHEMA, phrase, NULL);
    g_free(phrase);
    st_builder_free(b);
  }
  /* half-precision storage: inf and NaN bit patterns in F16 / BF16 tensors */
  const struct {
    const char **model;
    uint16_t bits;
    const char *name;
    size_t index;
  } halves[] = {
      {&tiny_f16, 0x7c00, "visual.conv1.weight", 5},
      {&tiny_f16, 0xfe01, "transformer.resblocks.0.ln_1.weight", 47},
      {&tiny_f16, 0x7e00, "visual.transformer.resblocks.3.mlp.c_proj.weight", 1000},
      {&tiny_bf16, 0x7f80, "text_projection", 3},
      {&tiny_bf16, 0xffc1, "visual.positional_embedding", 9},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(halves); i++) {
    st_builder *b = st_builder_from_file(*halves[i].model);
    st_entry *e = st_builder_get(b, halves[i].name);
    g_assert_nonnull(e);
    g_assert_true(e->dtype == FAP_DTYPE_F16 || e->dtype == FAP_DTYPE_BF16);
    uint8_t le[2] = {(uint8_t)(halves[i].bits & 0xff), (uint8_t)(halves[i].bits >> 8)};
    poke(b, halves[i].name, halves[i].index, le, 2);
    char *phrase = g_strdup_printf("tensor '%s' holds a non-finite value at index %zu",
                                   halves[i].name, halves[i].index);
    expect_builder_fail(b, FAP_ERR_SCHEMA, phrase, NULL);
    g_free(phrase);
    st_builder_free(b);
  }
}

/* A deep prompt value that is finite in f32 but past the f16 range becomes inf
 * when the core rounds it through f16 at load (as the reference's .half()
 * does); every map of such a model is NaN. The loader should reject it like any
 * other non-finite weight. */
static void test_deep_prompt_overflow(void) {
  st_builder *b = st_builder_from_file(tiny_a);
  const float big = 70000.0f; /* f32-finite, f16 max is 65504 */
  poke(b, "prompt_learner.compound_prompts_text.0", 3, &big, 4);
  char *path = st_builder_write(b, "deep-overflow.safetensors");
  fap_model *m = NULL;
  log_reset();
  fap_status s = fap_model_load(path, &m);
  if (s == FAP_OK) {
    fap_detector *d = NULL;
    fap_detector_options o;
    fap_detector_options_init(&o);
    o.backend = FAP_BACKEND_CPU;
    o.threads = 1;
    g_assert_cmpint(fap_detector_new(m, &o, &d), ==, FAP_OK);
    uint8_t px[3 * 16 * 16] = {0};
    fap_frame f = {FAP_PIXEL_RGB, 16, 16, 48, px};
    fap_result r;
    g_assert_cmpint(fap_detector_run(d, &f, &r), ==, FAP_OK);
    g_test_message("REGRESSION: deep prompt 70000 (f16 inf after rounding) loads; "
                   "score = %g, map[0] = %g", r.score, r.map[0]);
    fap_detector_free(d);
    fap_model_free(m);
    g_test_fail_printf("core/model.c checks finiteness before rounding the deep prompts to f16: "
                      "a value >= 65520 loads and makes every map NaN");
  } else {
    g_assert_cmpint(s, ==, FAP_ERR_SCHEMA);
    g_assert_null(m);
    assert_logged("prompt_learner.compound_prompts_text.0");
  }
  st_builder_unlink(path);
  g_free(path);
  st_builder_free(b);
}

/* ---- hostile: metadata --------------------------------------------------------- */

static void test_metadata_missing(void) {
  st_builder *b = st_builder_from_file(tiny_a);
  /* format first: a file without it is "not a faprompt model" */
  char *old = g_strdup(g_hash_table_lookup(b->metadata, "format"));
  st_builder_meta(b, "format", NULL);
  expect_builder_fail(b, FAP_ERR_SCHEMA, "not a faprompt model", "'format' is absent", NULL);
  st_builder_meta(b, "format", old);
  g_free(old);
  old = g_strdup(g_hash_table_lookup(b->metadata, "format_version"));
  st_builder_meta(b, "format_version", NULL);
  expect_builder_fail(b, FAP_ERR_SCHEMA, "format_version", "(absent)", NULL);
  st_builder_meta(b, "format_version", old);
  g_free(old);
  for (size_t i = 0; i <= G_N_ELEMENTS(int_keys); i++) {
    const char *key = i < G_N_ELEMENTS(int_keys) ? int_keys[i].key : "sigma";
    old = g_strdup(g_hash_table_lookup(b->metadata, key));
    g_assert_nonnull(old);
    st_builder_meta(b, key, NULL);
    char *phrase = g_strdup_printf("__metadata__ has no '%s'", key);
    expect_builder_fail(b, FAP_ERR_SCHEMA, phrase, NULL);
    g_free(phrase);
    st_builder_meta(b, key, old);
    g_free(old);
  }
  /* no __metadata__ at all */
  g_hash_table_remove_all(b->metadata);
  expect_builder_fail(b, FAP_ERR_SCHEMA, "not a faprompt model", NULL);
  st_builder_free(b);
}

static void test_metadata_values(void) {
  st_builder *b = st_builder_from_file(tiny_a);
  /* the parser is shared: every key gets two bad values, two keys all of them */
  static const char *const bad_ints[] = {"12abc", "-1", "", "1e99", "99999999999999999999",
                                         "0x10", "1048577", "4.0", "nan", "4 "};
  for (size_t i = 0; i < G_N_ELEMENTS(int_keys); i++) {
    const char *key = int_keys[i].key;
    gboolean all = !strcmp(key, "image_size") || !strcmp(key, "dual_start");
    for (size_t v = 0; v < (all ? G_N_ELEMENTS(bad_ints) : 2); v++) {
      char *phrase = g_strdup_printf("'%s' is \"%s\"", key, bad_ints[v]);
      expect_meta_fail(b, key, bad_ints[v], phrase, "expected an integer", NULL);
      g_free(phrase);
    }
  }
  /* zero where the minimum is 1 (2 for context_length) */
  for (size_t i = 0; i < G_N_ELEMENTS(int_keys); i++) {
    const char *key = int_keys[i].key;
    if (!strcmp(key, "dual_start") || !strcmp(key, "prompt_length"))
      continue;
    const char *zero = !strcmp(key, "context_length") ? "1" : "0";
    char *phrase = g_strdup_printf("'%s' is \"%s\"", key, zero);
    expect_meta_fail(b, key, zero, phrase, NULL);
    g_free(phrase);
  }
  static const char *const bad_sigma[] = {"12abc", "-1", "1e99", "", "nan", "inf", "1000.5",
                                          "-0.001", "2,5"};
  for (size_t v = 0; v < G_N_ELEMENTS(bad_sigma); v++) {
    char *phrase = g_strdup_printf("'sigma' is \"%s\"", bad_sigma[v]);
    expect_meta_fail(b, "sigma", bad_sigma[v], phrase, NULL);
    g_free(phrase);
  }
  /* the boundaries of sigma are accepted */
  st_builder_meta(b, "sigma", "0");
  fap_model *m = builder_load_ok(b);
  g_assert_cmpfloat(fap_model_config(m)->sigma, ==, 0.0f);
  fap_model_free(m);
  st_builder_meta(b, "sigma", "1000");
  m = builder_load_ok(b);
  g_assert_cmpfloat(fap_model_config(m)->sigma, ==, 1000.0f);
  fap_model_free(m);
  st_builder_free(b);
}

static void test_format(void) {
  st_builder *b = st_builder_from_file(tiny_a);
  expect_meta_fail(b, "format", "gguf", "not a faprompt model", "\"gguf\"", NULL);
  expect_meta_fail(b, "format", "Faprompt", "not a faprompt model", NULL);
  expect_meta_fail(b, "format", "pt", "not a faprompt model", NULL);
  expect_meta_fail(b, "format_version", "2", "format_version 2 is not supported", NULL);
  expect_meta_fail(b, "format_version", "0", "format_version 0", NULL);
  expect_meta_fail(b, "format_version", "1.0", "format_version 1.0", NULL);
  expect_meta_fail(b, "format_version", "", "format_version", NULL);
  st_builder_free(b);
}

static void test_constraints(void) {
  static const struct {
    const char *key, *value, *phrase;
  } cases[] = {
      {"vision_heads", "3", "vision_width 64 is not divisible by vision_heads 3"},
      {"vision_heads", "128", "vision_width 64 is not divisible by vision_heads 128"},
      {"text_heads", "5", "text_width 48 is not divisible by text_heads 5"},
      {"image_size", "50", "image_size 50 is not a multiple of patch_size 14"},
      {"image_size", "13", "image_size 13 is not a multiple of patch_size 14"},
      {"dual_start", "4", "dual_start 4 must be < vision_layers 4"},
      {"dual_start", "9", "dual_start 9 must be < vision_layers 4"},
      {"end_pos_normal", "16", "end_pos_normal 16 must lie in"},
      {"end_pos_normal", "5", "end_pos_normal 5 must lie in"},
      {"end_pos_abnormal", "16", "end_pos_abnormal 16 must lie in"},
      {"end_pos_abnormal", "7", "end_pos_abnormal 7 must lie in"},
      {"prompt_length", "6", "prompt_length 6 > n_pos 5"},
      {"prompt_depth", "5", "prompt_depth 5 needs > 3 text layers"},
  };
  st_builder *b = st_builder_from_file(tiny_a);
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
    expect_meta_fail(b, cases[i].key, cases[i].value, cases[i].phrase, NULL);
  st_builder_free(b);
}

/* ---- hostile: the file itself -------------------------------------------------- */

static void test_files(void) {
  GError *err = NULL;
  char *dir = g_dir_make_tmp("faptest-XXXXXX", &err);
  g_assert_no_error(err);

  char *missing = g_build_filename(dir, "no-such.safetensors", NULL);
  expect_fail(missing, FAP_ERR_IO, "cannot open", NULL);

  expect_fail(dir, FAP_ERR_IO, "is a directory", NULL);

  char *empty = g_build_filename(dir, "empty.safetensors", NULL);
  g_assert_true(g_file_set_contents(empty, "", 0, NULL));
  expect_fail(empty, FAP_ERR_FORMAT, "too short", NULL);

  char *contents;
  gsize size;
  g_assert_true(g_file_get_contents(tiny_a, &contents, &size, NULL));
  guint64 hlen = 0;
  for (int k = 7; k >= 0; k--)
    hlen = hlen << 8 | (guint8)contents[k];
  const gsize cuts[] = {1, 7, 8, 9, 8 + hlen / 2, 8 + hlen - 1, 8 + hlen, 8 + hlen + 1,
                        8 + hlen + 4, size / 2, size - 4, size - 1};
  char *cut = g_build_filename(dir, "truncated.safetensors", NULL);
  for (size_t i = 0; i < G_N_ELEMENTS(cuts); i++) {
    g_assert_cmpuint(cuts[i], <, size);
    g_assert_true(g_file_set_contents(cut, contents, (gssize)cuts[i], NULL));
    expect_fail(cut, FAP_ERR_FORMAT, NULL);
  }
  /* and one byte too many */
  char *longer = g_malloc(size + 1);
  memcpy(longer, contents, size);
  longer[size] = 0;
  g_assert_true(g_file_set_contents(cut, longer, (gssize)size + 1, NULL));
  expect_fail(cut, FAP_ERR_FORMAT, "trailing", NULL);
  /* a valid copy loads (the cases above fail for their cut alone) */
  g_assert_true(g_file_set_contents(cut, contents, (gssize)size, NULL));
  fap_model_free(load_ok(cut));

  g_unlink(cut);
  g_unlink(empty);
  g_rmdir(dir);
  g_free(longer);
  g_free(cut);
  g_free(contents);
  g_free(empty);
  g_free(missing);
  g_free(dir);
}

/* A named pipe is not a model file; loading it must fail, not wait for a
 * writer. The parent makes the pipe (and removes it: a child blocked in open()
 * is killed at the timeout). */
static void test_fifo(void) {
  if (g_test_subprocess()) {
    fap_set_log_callback(capture, NULL);
    fap_model *m = NULL;
    fap_status s = fap_model_load(g_getenv("FAPTEST_FIFO"), &m);
    g_assert_cmpint(s, ==, FAP_ERR_IO);
    g_assert_null(m);
    assert_logged("not a regular file");
    return;
  }
  GError *err = NULL;
  char *dir = g_dir_make_tmp("faptest-XXXXXX", &err);
  g_assert_no_error(err);
  char *fifo = g_build_filename(dir, "pipe.safetensors", NULL);
  g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
  g_setenv("FAPTEST_FIFO", fifo, TRUE);
  g_test_trap_subprocess(NULL, 2 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
  rm_tree(dir);
  g_free(fifo);
  g_free(dir);
  if (!g_test_trap_has_passed()) {
    /* the subprocess timed out in open(): blocked waiting for a writer */
    g_test_message("REGRESSION: fap_model_load() on a FIFO blocks in open()");
    g_test_fail_printf("core/safetensors.c opens the path before checking it is a regular file; "
                      "open(O_RDONLY) on a FIFO blocks until a writer appears");
  }
}

/* A small file whose metadata claims 65536 layers must be rejected like one
 * claiming five, without sizing anything by the claim before checking it
 * against the tensors the file has. Measured in a subprocess (which runs
 * natively even under valgrind): the rejection must be a schema error naming
 * the first missing block (or the key), and the peak resident size may grow by at most
 * 32 MiB. At 1048576 layers (the largest value the loader accepts) the
 * current loader takes 2.6 s and 1.7 GiB to say "missing tensor". */
static void test_huge_layer_count(gconstpointer data) {
  const char *key = data;
  if (g_test_subprocess()) {
    st_builder *b = st_builder_from_file(tiny_a);
    st_builder_meta(b, key, "65536");
    char *path = st_builder_write(b, "huge.safetensors");
    st_builder_free(b);
    fap_set_log_callback(capture, NULL);
    fap_model *m = NULL;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    fap_status s = fap_model_load(path, &m);
    getrusage(RUSAGE_SELF, &ru1);
    st_builder_unlink(path);
    g_free(path);
    if (s != FAP_ERR_SCHEMA)
      g_error("%s = 65536: status %d (%s), expected a schema error; \"%s\"", key, s,
              fap_status_string(s), last_error);
    if (!strstr(last_error, "resblocks.") && !strstr(last_error, key)) /* names a block or the key */
      g_error("message \"%s\" names neither a missing block nor '%s'", last_error, key);
    FILE *f = fopen(g_getenv("FAPTEST_RESULT"), "w");
    g_assert_nonnull(f);
    fprintf(f, "%ld\n", ru1.ru_maxrss - ru0.ru_maxrss);
    fclose(f);
    return;
  }
  GError *err = NULL;
  char *dir = g_dir_make_tmp("faptest-XXXXXX", &err);
  g_assert_no_error(err);
  char *result = g_build_filename(dir, "grew-kib", NULL);
  g_setenv("FAPTEST_RESULT", result, TRUE);
  g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_INHERIT_STDERR);
  g_test_trap_assert_passed();
  char *text = NULL;
  g_assert_true(g_file_get_contents(result, &text, NULL, NULL));
  long grew_kib = strtol(text, NULL, 10);
  g_test_message("%s = 65536: peak RSS grew by %ld KiB while loading", key, grew_kib);
  if (grew_kib > 32 * 1024) {
    g_test_message("REGRESSION: %s = 65536 costs %ld MiB before the schema check", key,
                   grew_kib >> 10);
    g_test_fail_printf("core/model.c builds its list of expected tensors (12 per claimed layer, "
                      "~150 bytes each) before comparing it with the file");
  }
  g_unlink(result);
  g_rmdir(dir);
  g_free(text);
  g_free(result);
  g_free(dir);
}

/* ---- model families (models/README.md, docs/SPEC.md section 6.1) ------------- */

/* The 1-based out layers of "2,4"-style metadata, parsed here independently. */
static int parse_layers(const char *v, int *out) {
  int n = 0;
  gchar **parts = g_strsplit(v, ",", -1);
  for (gchar **p = parts; *p; p++)
    out[n++] = (int)g_ascii_strtoll(*p, NULL, 10);
  g_strfreev(parts);
  return n;
}

static void check_family(const fap_config *c, fap_family family, int n, const int *layers) {
  g_assert_cmpint(c->family, ==, family);
  g_assert_cmpint(c->n_out_layers, ==, n);
  for (int i = 0; i < n; i++)
    if (c->out_layers[i] != layers[i])
      g_error("out_layers[%d] = %d, expected %d", i, c->out_layers[i], layers[i]);
}

/* FAPrompt files (family absent, as the generator writes them): family
 * FAPROMPT, one out layer, the last. An explicit "faprompt" says the same. */
static void test_family_faprompt(void) {
  const char *const paths[] = {tiny_a, tiny_f16, tiny_bf16};
  for (size_t i = 0; i < G_N_ELEMENTS(paths); i++) {
    fap_safetensors *st = NULL;
    g_assert_cmpint(fap_safetensors_open(paths[i], &st), ==, FAP_OK);
    g_assert_null(fap_safetensors_metadata(st, "family")); /* the case this test is about */
    fap_safetensors_close(st);
    fap_model *m = load_ok(paths[i]);
    const fap_config *c = fap_model_config(m);
    const int last = c->vision_layers;
    check_family(c, FAP_FAMILY_FAPROMPT, 1, &last);
    fap_model_free(m);
  }
  st_builder *b = st_builder_from_file(tiny_a);
  st_builder_meta(b, "family", "faprompt");
  fap_model *m = builder_load_ok(b);
  const int four = 4;
  check_family(fap_model_config(m), FAP_FAMILY_FAPROMPT, 1, &four);
  fap_model_free(m);
  st_builder_free(b);
  g_assert_cmpstr(fap_family_name(FAP_FAMILY_FAPROMPT), ==, "faprompt");
  g_assert_cmpstr(fap_family_name(FAP_FAMILY_ANOMALYCLIP), ==, "anomalyclip");
  g_assert_cmpstr(fap_family_name((fap_family)7), ==, "?");
}

/* The AnomalyCLIP models load: every key of the metadata in the config, the
 * family and out layers read right, every tensor behind the right pointer,
 * no prior MLP. */
static void test_valid_ac(gconstpointer data) {
  const char *path = *(const char *const *)data;
  fap_model *m = load_ok(path);
  const fap_config *c = fap_model_config(m);
  check_config(path, c);
  fap_safetensors *st = NULL;
  g_assert_cmpint(fap_safetensors_open(path, &st), ==, FAP_OK);
  g_assert_cmpstr(fap_safetensors_metadata(st, "family"), ==, "anomalyclip");
  int want[FAP_MAX_OUT_LAYERS + 1];
  int n = parse_layers(fap_safetensors_metadata(st, "out_layers"), want);
  fap_safetensors_close(st);
  g_assert_cmpint(n, >=, 2); /* tiny-ac: 2,4; tiny-ac-b: 1,2,3 */
  check_family(c, FAP_FAMILY_ANOMALYCLIP, n, want);
  g_assert_cmpint(c->n_prompts, ==, 1);
  g_assert_cmpint(c->top_m, ==, 0);
  g_assert_cmpint(c->prior_hidden, ==, 0);
  g_assert_null(m->prior1_w);
  g_assert_null(m->prior1_b);
  g_assert_null(m->prior2_w);
  g_assert_null(m->prior2_b);
  int64_t total = check_weights(path, m);
  g_assert_cmpint(fap_model_parameter_count(m), ==, total);
  fap_model_free(m);
}

/* out_layers values an AnomalyCLIP file may hold (tiny-ac: dual_start 1, 4
 * layers, so the V-V layers are 2..4) */
static void test_out_layers_valid(void) {
  static const struct {
    const char *value;
    int n, layers[3];
  } cases[] = {
      {"4", 1, {4}}, {"2", 1, {2}}, {"3", 1, {3}}, {"2,3,4", 3, {2, 3, 4}}, {"3,4", 2, {3, 4}},
  };
  st_builder *b = st_builder_from_file(tiny_ac);
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    st_builder_meta(b, "out_layers", cases[i].value);
    fap_model *m = builder_load_ok(b);
    check_family(fap_model_config(m), FAP_FAMILY_ANOMALYCLIP, cases[i].n, cases[i].layers);
    fap_model_free(m);
  }
  st_builder_free(b);
}

static void test_family_refused(void) {
  st_builder *b = st_builder_from_file(tiny_ac);
  static const char *const bad_family[] = {"clip", "AnomalyCLIP", "", "anomalyclip ", "winclip"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad_family); i++) {
    char *phrase = g_strdup_printf("'family' is \"%s\"", bad_family[i]);
    expect_meta_fail(b, "family", bad_family[i], phrase, "\"anomalyclip\"", "\"faprompt\"", NULL);
    g_free(phrase);
  }
  /* the same on a FAPrompt file */
  st_builder *fa = st_builder_from_file(tiny_a);
  expect_meta_fail(fa, "family", "clip", "'family' is \"clip\"", NULL);
  st_builder_free(fa);
  /* an AnomalyCLIP file without out_layers */
  expect_meta_fail(b, "out_layers", NULL, "AnomalyCLIP", "needs __metadata__ 'out_layers'", NULL);
  st_builder_free(b);
}

static void test_out_layers_malformed(void) {
  /* V-V layers of tiny-ac: [2, 4] */
  static const char *const bad[] = {
      "2,,4", "4,2", "0", "99", "2;4", "", "1,2,3,4,5,6,7,8,9", "1", "1,4", /* 1 = dual_start */
      "2,4,", ",2,4", "2,2", "2,4,4", " 2,4", "2, 4", "+2", "-2", "5", "2,5", "x", "2.0", "2 4",
      "4294967298" /* 2 mod 2^32 */, "99999999999999999999",
  };
  st_builder *b = st_builder_from_file(tiny_ac);
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    char *phrase = g_strdup_printf("'out_layers' is \"%s\"", bad[i]);
    expect_meta_fail(b, "out_layers", bad[i], phrase, "[2, 4]", NULL);
    g_free(phrase);
  }
  st_builder_free(b);
}

/* At most FAP_MAX_OUT_LAYERS: 9 V-V layers exist once vision_layers is 12
 * (dual_start 0), so a list of 9 is refused for its length alone. The
 * config is read before the tensors: 8 layers pass that check and fail only
 * for the blocks the file lacks, which shows the 9 failed for the cap. */
static void test_out_layers_cap(void) {
  g_assert_cmpint(FAP_MAX_OUT_LAYERS, ==, 8);
  st_builder *b = st_builder_from_file(tiny_ac);
  st_builder_meta(b, "vision_layers", "12");
  st_builder_meta(b, "dual_start", "0");
  expect_meta_fail(b, "out_layers", "1,2,3,4,5,6,7,8,9", "'out_layers' is \"1,2,3,4,5,6,7,8,9\"",
                   "at most 8", NULL);
  expect_meta_fail(b, "out_layers", "2,4,5,6,7,8,9,10,12", "at most 8", NULL);
  expect_meta_fail(b, "out_layers", "13", "'out_layers' is \"13\"", "[1, 12]", NULL);
  st_builder_meta(b, "out_layers", "1,2,3,4,5,6,7,12");
  expect_builder_fail(b, FAP_ERR_SCHEMA, NULL); /* the 8 layers themselves are fine: */
  if (strstr(last_error, "out_layers") || !strstr(last_error, "vision_layers 12"))
    g_error("8 out layers of 12: \"%s\" should blame the missing blocks, not out_layers",
            last_error);
  st_builder_free(b);
}

/* FAPrompt files must not carry out_layers (their patch features are the
 * last layer's), not even the value that would mean the same. */
static void test_out_layers_faprompt(void) {
  st_builder *b = st_builder_from_file(tiny_a);
  static const char *const values[] = {"4", "2,4", "", "bogus"};
  for (size_t i = 0; i < G_N_ELEMENTS(values); i++)
    expect_meta_fail(b, "out_layers", values[i], "'out_layers' is for AnomalyCLIP models", NULL);
  st_builder_meta(b, "family", "faprompt");
  expect_meta_fail(b, "out_layers", "4", "'out_layers' is for AnomalyCLIP models", NULL);
  st_builder_free(b);
}

/* AnomalyCLIP's fixed values and its own constraints */
static void test_ac_constraints(void) {
  static const struct {
    const char *key, *value, *phrase;
  } cases[] = {
      {"n_prompts", "2", "n_prompts 1, top_m 0 and prior_hidden 0 (found 2, 0, 0)"},
      {"n_prompts", "10", "(found 10, 0, 0)"},
      {"top_m", "5", "(found 1, 5, 0)"},
      {"prior_hidden", "10", "(found 1, 0, 10)"},
      /* 1 + n_neg <= end_pos_abnormal < context_length (tiny-ac: n_neg 5, ctx 16) */
      {"end_pos_abnormal", "5", "end_pos_abnormal 5 must lie in [1 + n_neg, context_length) = [6, 16)"},
      {"end_pos_abnormal", "16", "end_pos_abnormal 16 must lie in"},
      {"end_pos_normal", "5", "end_pos_normal 5 must lie in"},
      /* prompt_length <= min(n_pos, n_neg) */
      {"prompt_length", "6", "prompt_length 6 must be <= n_pos 5 and n_neg 5"},
      {"dual_start", "4", "dual_start 4 must be < vision_layers 4"},
  };
  st_builder *b = st_builder_from_file(tiny_ac);
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
    expect_meta_fail(b, cases[i].key, cases[i].value, cases[i].phrase, NULL);
  /* the n_neg bound alone: n_neg 3 < prompt_length 4 <= n_pos 5 */
  st_builder_meta(b, "n_neg", "3");
  expect_meta_fail(b, "end_pos_abnormal", "9", "prompt_length 4 must be <= n_pos 5 and n_neg 3", NULL);
  st_builder_free(b);
  /* top_m 0 / prior_hidden 0 stay invalid for FAPrompt */
  b = st_builder_from_file(tiny_a);
  expect_meta_fail(b, "top_m", "0", "'top_m' is \"0\"", NULL);
  expect_meta_fail(b, "prior_hidden", "0", "'prior_hidden' is \"0\"", NULL);
  st_builder_free(b);
}

/* Tensors: FAPrompt's token_suffix_neg shape, the prior MLP, K abnormal
 * prompts, all refused in an AnomalyCLIP file, naming the tensor. */
static void test_ac_tensors(void) {
  /* FAPrompt's suffix length ctx - 1 - n_pos - n_neg = 5, AnomalyCLIP's ctx - 1 - n_neg = 10 */
  st_builder *b = st_builder_from_file(tiny_ac);
  const int64_t fa_shape[4] = {1, 1, 5, 48};
  float *zeros = g_new0(float, 10 * 160);
  st_builder_set(b, "prompt_learner.token_suffix_neg", FAP_DTYPE_F32, 4, fa_shape, zeros,
                 5 * 48 * 4);
  expect_builder_fail(b, FAP_ERR_SCHEMA,
                      "tensor 'prompt_learner.token_suffix_neg' has shape [1, 1, 5, 48]",
                      "implies [1, 1, 10, 48]", NULL);
  st_builder_free(b);
  /* FAPrompt's K = 3 abnormal prompts in an AnomalyCLIP file */
  b = st_builder_from_file(tiny_ac);
  const int64_t k3[4] = {1, 3, 5, 48};
  float *ctx3 = g_new0(float, 3 * 5 * 48);
  st_builder_set(b, "prompt_learner.ctx_neg", FAP_DTYPE_F32, 4, k3, ctx3, 3 * 5 * 48 * 4);
  expect_builder_fail(b, FAP_ERR_SCHEMA, "tensor 'prompt_learner.ctx_neg' has shape [1, 3, 5, 48]",
                      "implies [1, 1, 5, 48]", NULL);
  g_free(ctx3);
  st_builder_free(b);
  /* the prior MLP: each tensor alone, shaped as in tiny-a */
  static const struct {
    const char *name;
    int ndim;
    int64_t shape[2];
  } prior[] = {
      {"prompt_learner.patch_meta_net.linear1.weight", 2, {10, 160}},
      {"prompt_learner.patch_meta_net.linear1.bias", 1, {10}},
      {"prompt_learner.patch_meta_net.linear2.weight", 2, {48, 10}},
      {"prompt_learner.patch_meta_net.linear2.bias", 1, {48}},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(prior); i++) {
    b = st_builder_from_file(tiny_ac);
    int64_t n = prior[i].ndim == 2 ? prior[i].shape[0] * prior[i].shape[1] : prior[i].shape[0];
    st_builder_set(b, prior[i].name, FAP_DTYPE_F32, prior[i].ndim, prior[i].shape, zeros,
                   (size_t)n * 4);
    char *phrase = g_strdup_printf("unexpected tensor '%s'", prior[i].name);
    expect_builder_fail(b, FAP_ERR_SCHEMA, phrase, NULL);
    g_free(phrase);
    st_builder_free(b);
  }
  /* and a FAPrompt file relabelled anomalyclip (n_prompts etc. fixed up):
   * its FAPrompt-only tensors are named */
  b = st_builder_from_file(tiny_a);
  st_builder_meta(b, "family", "anomalyclip");
  st_builder_meta(b, "out_layers", "4");
  expect_builder_fail(b, FAP_ERR_SCHEMA, "n_prompts 1, top_m 0 and prior_hidden 0 (found 3, 5, 10)",
                      NULL);
  g_free(zeros);
  st_builder_free(b);
  /* the reverse: an AnomalyCLIP file called FAPrompt has no prior and
   * AnomalyCLIP's suffix; with n_prompts etc. set as FAPrompt's it still
   * fails on a tensor, not silently */
  b = st_builder_from_file(tiny_ac);
  st_builder_meta(b, "family", NULL);
  st_builder_meta(b, "out_layers", NULL);
  st_builder_meta(b, "top_m", "5");
  st_builder_meta(b, "prior_hidden", "10");
  st_builder_meta(b, "end_pos_abnormal", "11");
  expect_builder_fail(b, FAP_ERR_SCHEMA, "prompt_learner.", NULL);
  st_builder_free(b);
}

/* ---- fap_last_error ------------------------------------------------------ */

/* the messages of another thread's calls must not reach this one's sink */
static void quiet(fap_log_level level, const char *message, void *user_data) {}

/* Two threads taking turns (a, then b, then a checks), so that one buffer
 * for the process would show b's message to a, or a's to b, every time. */
typedef struct {
  GAsyncQueue *to_a, *to_b;
  const char *path_a, *path_b;
  char problem[2 * 1024];
} turns;

static gpointer thread_a(gpointer data) {
  turns *t = data;
  fap_set_thread_log_callback(quiet, NULL);
  fap_model *m = NULL;
  fap_status s = fap_model_load(t->path_a, &m);
  g_async_queue_push(t->to_b, GINT_TO_POINTER(1));
  g_async_queue_pop(t->to_a); /* b has failed its own load meanwhile */
  if (s != FAP_ERR_IO || !strstr(fap_last_error(), t->path_a) ||
      strstr(fap_last_error(), t->path_b))
    g_snprintf(t->problem, sizeof t->problem, "thread a: status %d, fap_last_error \"%s\"", s,
               fap_last_error());
  return NULL;
}

static gpointer thread_b(gpointer data) {
  turns *t = data;
  fap_set_thread_log_callback(quiet, NULL);
  g_async_queue_pop(t->to_b); /* a has failed its load */
  char before[1024];
  g_strlcpy(before, fap_last_error(), sizeof before);
  fap_model *m = NULL;
  fap_status s = fap_model_load(t->path_b, &m);
  if (before[0] || s != FAP_ERR_IO || !strstr(fap_last_error(), t->path_b))
    g_snprintf(t->problem, sizeof t->problem,
               "thread b: before its call \"%s\" (expected \"\"); status %d, fap_last_error "
               "\"%s\"",
               before, s, fap_last_error());
  g_async_queue_push(t->to_a, GINT_TO_POINTER(1));
  return NULL;
}

/* The failing call's message names the file; a successful call clears it;
 * each thread sees its own. */
static void test_last_error(void) {
  char *missing = g_build_filename(g_get_tmp_dir(), "faprompt-no-such-model.safetensors", NULL);
  fap_model *m = NULL;
  log_reset();
  g_assert_cmpint(fap_model_load(missing, &m), ==, FAP_ERR_IO);
  if (!strstr(fap_last_error(), missing))
    g_error("fap_last_error \"%s\" does not name %s", fap_last_error(), missing);
  g_assert_cmpstr(fap_last_error(), ==, last_error); /* what the sink got */
  m = load_ok(tiny_a); /* checks fap_last_error() == "" */
  fap_model_free(m);
  /* any fallible call clears it, a detector's too */
  g_assert_cmpint(fap_model_load(missing, &m), ==, FAP_ERR_IO);
  g_assert_cmpstr(fap_last_error(), !=, "");
  fap_overlay *o = NULL;
  g_assert_cmpint(fap_overlay_new(&o), ==, FAP_OK);
  g_assert_cmpstr(fap_last_error(), ==, "");
  fap_overlay_free(o);
  g_free(missing);

  turns t = {g_async_queue_new(), g_async_queue_new(), "/nonexistent/thread-a.safetensors",
             "/nonexistent/thread-b.safetensors", ""};
  GThread *a = g_thread_new("last-error-a", thread_a, &t);
  GThread *b = g_thread_new("last-error-b", thread_b, &t);
  g_thread_join(a);
  g_thread_join(b);
  g_async_queue_unref(t.to_a);
  g_async_queue_unref(t.to_b);
  if (t.problem[0])
    g_error("%s", t.problem);
  g_assert_cmpstr(fap_last_error(), ==, ""); /* this thread's: untouched by theirs */
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  if (argc >= 4) {
    /* subprocesses (g_test_trap_subprocess) get no arguments: pass them on */
    g_setenv("FAPTEST_TINY_A", argv[1], TRUE);
    g_setenv("FAPTEST_TINY_F16", argv[2], TRUE);
    g_setenv("FAPTEST_TINY_BF16", argv[3], TRUE);
    if (argc >= 6) {
      g_setenv("FAPTEST_TINY_AC", argv[4], TRUE);
      g_setenv("FAPTEST_TINY_AC_B", argv[5], TRUE);
    }
  }
  tiny_a = g_getenv("FAPTEST_TINY_A");
  tiny_f16 = g_getenv("FAPTEST_TINY_F16");
  tiny_bf16 = g_getenv("FAPTEST_TINY_BF16");
  tiny_ac = g_getenv("FAPTEST_TINY_AC");
  tiny_ac_b = g_getenv("FAPTEST_TINY_AC_B");
  if (!tiny_a || !tiny_f16 || !tiny_bf16) {
    g_printerr("usage: %s TINY_A TINY_F16 TINY_BF16 [TINY_AC TINY_AC_B]\n", argv[0]);
    return 2;
  }
  fap_set_log_callback(capture, NULL);

  g_test_add_data_func("/model/valid/f32", &tiny_a, test_valid);
  g_test_add_data_func("/model/valid/f16", &tiny_f16, test_valid);
  g_test_add_data_func("/model/valid/bf16", &tiny_bf16, test_valid);
  g_test_add_func("/model/valid/getters-null", test_getters_null);
  g_test_add_func("/model/lazy/views", test_lazy_views);
  g_test_add_func("/model/lazy/file-changes", test_lazy_file_changes);
  g_test_add_func("/model/valid/thresholds", test_thresholds);
  g_test_add_func("/model/valid/refcount", test_refcount);
  g_test_add_func("/model/valid/comma-locale", test_comma_locale);
  g_test_add_data_func("/model/valid/f16-storage-equals-rounded-f32",
                       GINT_TO_POINTER(FAP_DTYPE_F16), test_half_storage);
  g_test_add_data_func("/model/valid/bf16-storage-equals-rounded-f32",
                       GINT_TO_POINTER(FAP_DTYPE_BF16), test_half_storage);
  g_test_add_func("/model/last-error", test_last_error);
  g_test_add_func("/model/hostile/bad-arguments", test_bad_arguments);
  g_test_add_func("/model/hostile/missing-tensor", test_missing_tensor);
  g_test_add_func("/model/hostile/extra-tensor", test_extra_tensor);
  g_test_add_func("/model/hostile/wrong-shape", test_wrong_shape);
  g_test_add_func("/model/hostile/config-mismatch", test_config_mismatch);
  g_test_add_func("/model/hostile/dtype", test_dtype);
  g_test_add_func("/model/hostile/non-finite", test_non_finite);
  g_test_add_func("/model/hostile/deep-prompt-overflow", test_deep_prompt_overflow);
  g_test_add_func("/model/hostile/metadata-missing", test_metadata_missing);
  g_test_add_func("/model/hostile/metadata-values", test_metadata_values);
  g_test_add_func("/model/hostile/format", test_format);
  g_test_add_func("/model/hostile/constraints", test_constraints);
  g_test_add_func("/model/hostile/files", test_files);
  g_test_add_func("/model/hostile/fifo", test_fifo);
  g_test_add_data_func("/model/hostile/huge-vision-layers", "vision_layers", test_huge_layer_count);
  g_test_add_data_func("/model/hostile/huge-text-layers", "text_layers", test_huge_layer_count);
  g_test_add_func("/model/family/faprompt", test_family_faprompt);
  if (tiny_ac && tiny_ac_b) {
    g_test_add_data_func("/model/family/anomalyclip/valid", &tiny_ac, test_valid_ac);
    g_test_add_data_func("/model/family/anomalyclip/valid-b-f16", &tiny_ac_b, test_valid_ac);
    g_test_add_func("/model/family/anomalyclip/out-layers-valid", test_out_layers_valid);
    g_test_add_func("/model/family/anomalyclip/family-refused", test_family_refused);
    g_test_add_func("/model/family/anomalyclip/out-layers-malformed", test_out_layers_malformed);
    g_test_add_func("/model/family/anomalyclip/out-layers-cap", test_out_layers_cap);
    g_test_add_func("/model/family/anomalyclip/constraints", test_ac_constraints);
    g_test_add_func("/model/family/anomalyclip/tensors", test_ac_tensors);
  }
  g_test_add_func("/model/family/faprompt-out-layers-refused", test_out_layers_faprompt);
  return g_test_run();
}
