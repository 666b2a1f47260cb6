#include "datafile.h"

#include <glib.h>

#ifndef FAP_DATA_DIR
#error "FAP_DATA_DIR: the install's data folder (tools/meson.build)"
#endif

char *tool_data_file(const char *name) {
  /* the build tree: a file beside the executable names the source tree's
   * folder laid out like the installed one (tests/: tests/reference/...) */
  char *exe = g_file_read_link("/proc/self/exe", NULL);
  char *dir = exe ? g_path_get_dirname(exe) : NULL;
  char *marker = dir ? g_build_filename(dir, "faprompt-data-dir", NULL) : NULL;
  char *text = NULL;
  char *path = NULL;
  if (marker && g_file_get_contents(marker, &text, NULL, NULL)) {
    g_strstrip(text);
    path = g_build_filename(text, name, NULL);
  } else {
    path = g_build_filename(FAP_DATA_DIR, name, NULL);
  }
  g_free(text);
  g_free(marker);
  g_free(dir);
  g_free(exe);
  return path;
}
