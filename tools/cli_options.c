#include "cli_options.h"

#include <glib.h>
#include <string.h>

int tool_parse_precision(const char *name, fap_precision *out) {
  if (!name) {
    *out = FAP_PRECISION_AUTO;
    return 1;
  }
  for (int p = FAP_PRECISION_AUTO; p <= FAP_PRECISION_INT8; p++)
    if (strcmp(name, fap_precision_name((fap_precision)p)) == 0) {
      *out = (fap_precision)p;
      return 1;
    }
  return 0;
}

int tool_parse_tiles(const char *text, int *cols, int *rows) {
  gchar **parts = g_strsplit(text, "x", -1);
  guint64 v[2] = {0, 0};
  int ok = g_strv_length(parts) == 2;
  for (int i = 0; ok && i < 2; i++)
    ok = g_ascii_string_to_unsigned(parts[i], 10, 1, 32768, &v[i], NULL);
  g_strfreev(parts);
  *cols = (int)v[0];
  *rows = (int)v[1];
  return ok;
}
