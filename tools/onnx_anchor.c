#include "onnx_anchor.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *onnx_anchor_dir(const char *tool, const char *given) {
  char *dir = NULL;
  if (given && given[0])
    dir = g_strdup(given);
  else if (g_getenv("FAP_ONNXRUNTIME_DIR"))
    dir = g_strdup(g_getenv("FAP_ONNXRUNTIME_DIR"));
  else { /* <build>/tools/faprompt-bench -> <build>/onnxruntime */
    char *exe = g_file_read_link("/proc/self/exe", NULL);
    char *tools = exe ? g_path_get_dirname(exe) : g_strdup(".");
    char *build = g_path_get_dirname(tools);
    dir = g_build_filename(build, "onnxruntime", NULL);
    g_free(exe);
    g_free(tools);
    g_free(build);
  }
  char *pkg = g_build_filename(dir, "node_modules", "onnxruntime-node", "package.json", NULL);
  gboolean ok = g_file_test(pkg, G_FILE_TEST_EXISTS);
  g_free(pkg);
  if (!ok) {
    fprintf(stderr, "%s: no ONNX Runtime in %s (bash tools/setup-onnxruntime.sh [DIR] installs "
            "it; --onnx-dir or FAP_ONNXRUNTIME_DIR name another folder)\n", tool, dir);
    g_free(dir);
    return NULL;
  }
  return dir;
}

/* A raw little-endian f32 file of exactly n values. */
static float *read_f32(const char *path, size_t n) {
  char *bytes = NULL;
  gsize len = 0;
  if (!g_file_get_contents(path, &bytes, &len, NULL) || len != n * sizeof(float)) {
    g_free(bytes);
    return NULL;
  }
  float *out = malloc(n * sizeof(float));
  memcpy(out, bytes, len);
  g_free(bytes);
  return out;
}

void onnx_export_free(onnx_export *e) {
  if (!e)
    return;
  g_free(e->prefix);
  g_free(e->image);
  free(e->tokens);
  free(e->global);
  g_free(e);
}

/* The tensors of ref.json: shapes and the largest |value| over what errors are taken on. */
static int load_reference(onnx_export *e) {
  char *path = g_strconcat(e->prefix, ".ref.json", NULL);
  JsonParser *p = json_parser_new();
  int ok = json_parser_load_from_file(p, path, NULL) &&
           JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p));
  g_free(path);
  JsonObject *root = ok ? json_node_get_object(json_parser_get_root(p)) : NULL;
  JsonArray *tensors = root ? json_object_get_array_member(root, "tensors") : NULL;
  JsonObject *image = root ? json_object_get_object_member(root, "image") : NULL;
  ok = tensors && image;
  if (ok) {
    e->width = (int)json_object_get_int_member(image, "width");
    e->height = (int)json_object_get_int_member(image, "height");
  }
  for (guint i = 0; ok && i < json_array_get_length(tensors); i++) {
    JsonObject *t = json_array_get_object_element(tensors, i);
    const char *name = json_object_get_string_member(t, "name");
    JsonArray *shape = json_object_get_array_member(t, "shape");
    size_t n = 1;
    for (guint k = 0; k < json_array_get_length(shape); k++)
      n *= (size_t)json_array_get_int_element(shape, k);
    double max_abs = json_object_get_double_member_with_default(t, "max_abs", 0);
    char *file = g_strdup_printf("%s.%s.f32", e->prefix, name);
    if (strcmp(name, "tokens") == 0) {
      e->tokens_ndim = (int)json_array_get_length(shape);
      ok = e->tokens_ndim == 2 || e->tokens_ndim == 3;
      for (int k = 0; ok && k < e->tokens_ndim; k++)
        e->tokens_shape[k] = json_array_get_int_element(shape, (guint)k);
      ok = ok && (e->tokens = read_f32(file, n)) != NULL;
      e->ref_max_abs = fmax(e->ref_max_abs, max_abs);
    } else if (strcmp(name, "global") == 0) {
      e->n_global = n;
      ok = (e->global = read_f32(file, n)) != NULL;
      e->ref_max_abs = fmax(e->ref_max_abs, max_abs);
    }
    g_free(file);
  }
  g_object_unref(p);
  if (ok) {
    char *file = g_strconcat(e->prefix, ".image.rgb", NULL);
    gsize len = 0;
    ok = g_file_get_contents(file, (char **)&e->image, &len, NULL) &&
         len == (gsize)e->width * e->height * 3;
    g_free(file);
  }
  return ok && e->tokens && e->global;
}

onnx_export *onnx_export_make(const char *tool, const char *python, const char *export_script,
                              const char *dir, const char *model, int size, int width,
                              int height, int threads, int int8) {
  char *name = g_path_get_basename(model);
  char *dot = strrchr(name, '.');
  if (dot && dot != name)
    *dot = '\0';
  char *leaf = g_strdup_printf("%s-S%d", name, size);
  onnx_export *e = g_new0(onnx_export, 1);
  e->prefix = g_build_filename(dir, "exports", leaf, NULL);
  g_free(leaf);
  g_free(name);
  char s_size[16], s_w[16], s_h[16], s_threads[16];
  snprintf(s_size, sizeof s_size, "%d", size);
  snprintf(s_w, sizeof s_w, "%d", width);
  snprintf(s_h, sizeof s_h, "%d", height);
  snprintf(s_threads, sizeof s_threads, "%d", threads);
  const char *argv[] = {python, export_script, "--model", model, "--image-size", s_size,
                        "--out", e->prefix, "--width", s_w, "--height", s_h,
                        "--threads", s_threads, int8 ? "--int8" : NULL, NULL};
  int status = 0;
  GError *error = NULL;
  /* its messages (the export takes a minute or two at full size) go to our stderr */
  if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_CHILD_INHERITS_STDIN, NULL, NULL, NULL,
                    NULL, &status, &error) ||
      !g_spawn_check_wait_status(status, &error)) {
    fprintf(stderr, "%s: the ONNX export (%s) failed: %s\n", tool, export_script,
            error ? error->message : "?");
    g_clear_error(&error);
    onnx_export_free(e);
    return NULL;
  }
  if (!load_reference(e)) {
    fprintf(stderr, "%s: %s.ref.json or its files are missing or do not match\n", tool, e->prefix);
    onnx_export_free(e);
    return NULL;
  }
  return e;
}

double onnx_export_error(const onnx_export *e, const fap_detector *d) {
  fap_tensor_view t, g;
  if (fap_detector_intermediate(d, "tokens", &t) != FAP_OK ||
      fap_detector_intermediate(d, "global", &g) != FAP_OK || t.dtype != FAP_DTYPE_F32 ||
      g.dtype != FAP_DTYPE_F32 || t.ndim != e->tokens_ndim)
    return -1;
  size_t n = 1;
  for (int k = 0; k < t.ndim; k++) {
    if (t.shape[k] != e->tokens_shape[k])
      return -1;
    n *= (size_t)t.shape[k];
  }
  if (g.ndim != 1 || (size_t)g.shape[0] != e->n_global)
    return -1;
  const int64_t width = t.shape[t.ndim - 1], rows = t.shape[t.ndim - 2];
  const float *a = t.data, *b = e->tokens;
  double m = 0;
  for (size_t i = 0; i < n; i++)
    if ((int64_t)(i / (size_t)width) % rows != 0) /* row 0 of T is never read */
      m = fmax(m, fabs((double)a[i] - (double)b[i]));
  a = g.data;
  for (size_t i = 0; i < e->n_global; i++)
    m = fmax(m, fabs((double)a[i] - (double)e->global[i]));
  return m;
}

torch_server *onnx_anchor_start(const char *tool, const char *node, const char *runner,
                                const char *dir, const onnx_export *e, int int8, int threads) {
  char s_threads[16];
  snprintf(s_threads, sizeof s_threads, "%d", threads);
  char *ref = g_strconcat(e->prefix, ".ref.json", NULL);
  char *onnx = g_strconcat(e->prefix, int8 ? ".int8.onnx" : ".onnx", NULL);
  const char *args[] = {"--ort-dir", dir, "--ref", ref, "--onnx", onnx, "--threads", s_threads,
                        NULL};
  torch_server *s = torch_server_start(tool, node, runner, args);
  g_free(ref);
  g_free(onnx);
  return s;
}
