/* Finds the CUDA backend: built in (FAP_CUDA_BUILTIN: tests, the emulator) or
 * the module libfaprompt-cuda.so, looked up once per process in
 *   1. $FAPROMPT_BACKEND_PATH: folders (or module files), ':'-separated;
 *   2. the folder of the libfaprompt that is running, and its faprompt/
 *      subfolder (installed: libdir/faprompt/; the build tree: side by side).
 * Each failure is told apart, because each has its own remedy: no module
 * (install faprompt-cuda), a module whose CUDA libraries are missing (install
 * the CUDA runtime), a module of another build, no driver or no device. */
#define _GNU_SOURCE /* dladdr */
#include "backend_module.h"
#include "log.h"

#include <dlfcn.h>
#include <glib.h>
#include <string.h>

static const fap_backend_host host = {.log_message = fap_log_message};

typedef struct {
  const fap_backend_module *module;
  char *path;  /* the module file that loaded */
  char *why;   /* why there is none */
} loaded;

#ifdef FAP_CUDA_BUILTIN

static loaded load(void) {
  loaded l = {fap_backend_module_entry(&host), NULL, NULL};
  return l;
}

#else

/* NULL when the file is not there (the caller moves on); otherwise a loaded
 * module, or *why set. */
static const fap_backend_module *try_file(const char *file, char **why, gboolean *exists) {
  *exists = g_file_test(file, G_FILE_TEST_EXISTS);
  if (!*exists)
    return NULL;
  void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *e = dlerror();
    *why = g_strdup_printf(
        "the CUDA module %s is there but cannot load: %s. Its CUDA libraries (libcudart.so.13, "
        "libcublasLt.so.13) are missing: install the CUDA runtime (NVIDIA's cuda-cudart-13-0 and "
        "libcublas-13-0 packages, or the CUDA toolkit) or put their folder in LD_LIBRARY_PATH",
        file, e ? e : "unknown dlopen error");
    return NULL;
  }
  fap_backend_module_entry_fn entry = (fap_backend_module_entry_fn)dlsym(h, FAP_BACKEND_MODULE_ENTRY);
  const fap_backend_module *m = entry ? entry(&host) : NULL;
  if (!m || m->abi != FAP_BACKEND_MODULE_ABI || !m->version || strcmp(m->version, FAP_VERSION) ||
      m->shared_size != FAP_BACKEND_SHARED_SIZE) {
    *why = g_strdup_printf(
        "%s is not a CUDA module of this faprompt (core %s; module %s): install the faprompt-cuda "
        "package of the same version as the core",
        file, FAP_VERSION, m && m->version ? m->version : "without a faprompt entry point");
    dlclose(h);
    return NULL;
  }
  return m; /* never closed: its code backs detectors until the process ends */
}

static void add_candidates(GPtrArray *files, const char *entry) {
  if (!entry || !*entry)
    return;
  if (g_file_test(entry, G_FILE_TEST_IS_DIR))
    g_ptr_array_add(files, g_build_filename(entry, FAP_CUDA_MODULE_FILE, NULL));
  else
    g_ptr_array_add(files, g_strdup(entry));
}

static loaded load(void) {
  loaded l = {0};
  GPtrArray *files = g_ptr_array_new_with_free_func(g_free);
  const char *env = g_getenv("FAPROMPT_BACKEND_PATH");
  if (env) {
    gchar **parts = g_strsplit(env, ":", -1);
    for (gchar **p = parts; *p; p++)
      add_candidates(files, *p);
    g_strfreev(parts);
  }
  Dl_info info;
  if (dladdr((void *)fap_backend_cuda_probe, &info) && info.dli_fname) {
    gchar *dir = g_path_get_dirname(info.dli_fname);
    g_ptr_array_add(files, g_build_filename(dir, "faprompt", FAP_CUDA_MODULE_FILE, NULL));
    g_ptr_array_add(files, g_build_filename(dir, FAP_CUDA_MODULE_FILE, NULL));
    g_free(dir);
  }
  for (guint i = 0; i < files->len && !l.module && !l.why; i++) {
    gboolean exists;
    l.module = try_file(files->pdata[i], &l.why, &exists);
    if (l.module)
      l.path = g_strdup(files->pdata[i]);
  }
  if (!l.module && !l.why) {
    GString *looked = g_string_new(NULL);
    for (guint i = 0; i < files->len; i++)
      g_string_append_printf(looked, "%s%s", i ? ", " : "", (char *)files->pdata[i]);
    l.why = g_strdup_printf("the CUDA module %s was not found (looked for %s): install the "
                            "faprompt-cuda package, or set FAPROMPT_BACKEND_PATH to the folder "
                            "that holds it",
                            FAP_CUDA_MODULE_FILE, looked->str);
    g_string_free(looked, TRUE);
  }
  g_ptr_array_unref(files);
  return l;
}

#endif

static const loaded *module(void) {
  static gsize once;
  static loaded l;
  if (g_once_init_enter(&once)) {
    l = load();
    if (l.module)
      fap_log(FAP_LOG_DEBUG, "cuda backend module: %s", l.path ? l.path : "built in");
    g_once_init_leave(&once, 1);
  }
  return &l;
}

const char *fap_backend_cuda_module_path(void) { return module()->path; }

int fap_backend_cuda_probe(const char **why) {
  const loaded *l = module();
  const char *reason = l->why;
  int n = 0;
  if (l->module)
    n = l->module->device_count(&reason);
  if (why)
    *why = n > 0 ? NULL : reason;
  return n;
}

int fap_backend_cuda_available(void) { return fap_backend_cuda_probe(NULL) > 0; }

fap_status fap_backend_cuda_new(int device_id, fap_precision precision, fap_backend *out) {
  const loaded *l = module();
  if (!l->module)
    return fap_fail(FAP_ERR_UNSUPPORTED, "backend cuda requested (device %d), but %s; or use the "
                    "CPU backend", device_id, l->why);
  return l->module->backend_new(device_id, precision, out);
}
