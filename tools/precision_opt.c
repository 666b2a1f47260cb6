#include "precision_opt.h"

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
