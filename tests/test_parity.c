/* Parity with the PyTorch reference (tests/reference/faprompt_ref.py).
 *
 * usage: test_parity MODEL GOLDEN...
 * Each golden file (tests/reference/make_golden.py) holds an input image and
 * every intermediate of docs/SPEC.md as the reference computed it. The detector
 * runs on the same image and every intermediate is compared:
 *   - map, map_raw, map1, map2, image_text_prob, score, text_normal,
 *     text_abnormal, text_abnormal_dynamic (values in [0,1] or unit vectors):
 *     max abs error <= 1e-4 (docs/SPEC.md, Tolerances: fp32);
 *   - unnormalised features (preprocessed, tokens, global, text_features,
 *     text_features_dynamic, prior): max abs error <= 1e-4 * max(1, max |ref|);
 *   - topk_index: identical.
 * Both the fast path (OpenBLAS, or oneDNN for the linear layers where the CPU
 * picks it: core/linear_f32_dnnl.h) and the reference loops are checked, the
 * fast path in every packed pixel format with a padded stride. */
#include "fap.h"
#include "safetensors.h"

#include <glib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *model_path;
static fap_model *model;

typedef struct {
  const char *golden;
  fap_pixel_format format;
  int reference;
  char *label;
} parity_case;

static gboolean scale_tolerance(const char *name) {
  static const char *const scaled[] = {"preprocessed", "tokens", "global", "text_features",
                                       "text_features_dynamic", "prior", NULL};
  for (int i = 0; scaled[i]; i++)
    if (strcmp(name, scaled[i]) == 0)
      return TRUE;
  return FALSE;
}

/* Packs RGB [h, w, 3] into `format` with 13 bytes of row padding. */
static uint8_t *pack_frame(const uint8_t *rgb, int w, int h, fap_pixel_format format,
                           size_t *stride) {
  static const int layout[][4] = {
      /* bpp, r, g, b offsets */
      [FAP_PIXEL_RGB] = {3, 0, 1, 2},  [FAP_PIXEL_BGR] = {3, 2, 1, 0},
      [FAP_PIXEL_RGBA] = {4, 0, 1, 2}, [FAP_PIXEL_BGRA] = {4, 2, 1, 0},
      [FAP_PIXEL_RGBX] = {4, 0, 1, 2}, [FAP_PIXEL_BGRX] = {4, 2, 1, 0},
      [FAP_PIXEL_XRGB] = {4, 1, 2, 3}, [FAP_PIXEL_XBGR] = {4, 3, 2, 1},
  };
  const int *l = layout[format];
  *stride = (size_t)w * l[0] + 13;
  uint8_t *out = g_malloc(*stride * h);
  memset(out, 0xA5, *stride * h); /* padding and alpha/x hold junk the core must ignore */
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int c = 0; c < 3; c++)
        out[y * *stride + (size_t)x * l[0] + l[c + 1]] = rgb[((size_t)y * w + x) * 3 + c];
  return out;
}

static void run_case(gconstpointer data) {
  const parity_case *pc = data;
  fap_safetensors *golden = NULL;
  g_assert_cmpint(fap_safetensors_open(pc->golden, &golden), ==, FAP_OK);
  const fap_st_tensor *in = fap_safetensors_find(golden, "input.rgb");
  g_assert_nonnull(in);
  g_assert_cmpint(in->dtype, ==, FAP_DTYPE_U8);
  int h = (int)in->shape[0], w = (int)in->shape[1];

  fap_detector_options o;
  fap_detector_options_init(&o);
  o.backend = FAP_BACKEND_CPU;
  o.precision = FAP_PRECISION_F32; /* the authors' numbers */
  o.reference = pc->reference;
  o.keep_intermediates = 1;
  o.image_size = atoi(fap_safetensors_metadata(golden, "image_size"));
  o.sigma = (float)g_ascii_strtod(fap_safetensors_metadata(golden, "sigma"), NULL);
  fap_detector *det = NULL;
  g_assert_cmpint(fap_detector_new(model, &o, &det), ==, FAP_OK);

  size_t stride;
  uint8_t *pixels = pack_frame(in->data, w, h, pc->format, &stride);
  fap_frame frame = {pc->format, w, h, stride, pixels};
  fap_result result;
  /* twice: the second run reuses every buffer and must give the same numbers */
  for (int pass = 0; pass < 2; pass++) {
    g_assert_cmpint(fap_detector_run(det, &frame, &result), ==, FAP_OK);
    int checked = 0;
    for (size_t i = 0; i < fap_safetensors_count(golden); i++) {
      const fap_st_tensor *ref = fap_safetensors_tensor(golden, i);
      if (strcmp(ref->name, "input.rgb") == 0)
        continue;
      fap_tensor_view got;
      g_assert_cmpint(fap_detector_intermediate(det, ref->name, &got), ==, FAP_OK);
      g_assert_cmpint(got.ndim, ==, ref->ndim);
      for (int dd = 0; dd < ref->ndim; dd++)
        g_assert_cmpint(got.shape[dd], ==, ref->shape[dd]);
      if (ref->dtype == FAP_DTYPE_I32) {
        g_assert_cmpint(got.dtype, ==, FAP_DTYPE_I32);
        if (memcmp(got.data, ref->data, ref->nbytes) != 0)
          g_error("%s: %s differs from the reference", pc->label, ref->name);
        checked++;
        continue;
      }
      g_assert_cmpint(ref->dtype, ==, FAP_DTYPE_F32);
      const float *a = got.data;
      double max_ref = 0.0, max_err = 0.0;
      int64_t worst = 0;
      for (int64_t j = 0; j < ref->numel; j++) {
        float r;
        memcpy(&r, (const char *)ref->data + 4 * j, 4);
        max_ref = fmax(max_ref, fabs(r));
        double err = fabs((double)a[j] - r);
        if (!(err <= max_err)) { /* also catches NaN */
          max_err = isnan(err) ? INFINITY : err;
          worst = j;
        }
      }
      double tol = 1e-4 * (scale_tolerance(ref->name) ? fmax(1.0, max_ref) : 1.0);
      if (g_test_verbose())
        g_print("  %-24s max|ref| %9.4g  max err %9.3g  (tol %.3g)\n", ref->name, max_ref,
                max_err, tol);
      if (!(max_err <= tol))
        g_error("%s: %s max abs error %.3g at index %lld exceeds %.3g", pc->label, ref->name,
                max_err, (long long)worst, tol);
      checked++;
    }
    g_assert_cmpint(checked, ==, (int)fap_safetensors_count(golden) - 1);
    g_assert_cmpint(checked, >=, 12);
  }
  float *map = (float *)result.map;
  g_assert_true(result.score >= 0.0f && result.score <= 1.0f);
  g_assert_cmpint(result.map_size, ==, o.image_size);
  g_assert_nonnull(map);

  g_free(pixels);
  fap_detector_free(det);
  fap_safetensors_close(golden);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  if (argc < 3) {
    g_printerr("usage: %s MODEL GOLDEN...\n", argv[0]);
    return 2;
  }
  model_path = argv[1];
  if (fap_model_load(model_path, &model) != FAP_OK)
    return 1;
  GPtrArray *cases = g_ptr_array_new();
  for (int i = 2; i < argc; i++) {
    char *base = g_path_get_basename(argv[i]);
    for (int f = FAP_PIXEL_RGB; f <= FAP_PIXEL_XBGR + 1; f++) {
      parity_case *pc = g_new0(parity_case, 1);
      pc->golden = argv[i];
      pc->reference = f > FAP_PIXEL_XBGR;
      pc->format = pc->reference ? FAP_PIXEL_RGB : (fap_pixel_format)f;
      pc->label = g_strdup_printf("/parity/%s/%s/%s", base, pc->reference ? "reference" : "blas",
                                  fap_pixel_format_name(pc->format));
      g_test_add_data_func(pc->label, pc, run_case);
      g_ptr_array_add(cases, pc);
    }
    g_free(base);
  }
  int rc = g_test_run();
  for (guint i = 0; i < cases->len; i++) {
    parity_case *pc = g_ptr_array_index(cases, i);
    g_free(pc->label);
    g_free(pc);
  }
  g_ptr_array_unref(cases);
  fap_model_free(model);
  return rc;
}
