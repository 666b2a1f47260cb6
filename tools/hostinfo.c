#include "hostinfo.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* the extensions the CPU kernels care about, in the order printed */
static const char *const isa[] = {"avx2",        "fma",      "avx512f",  "avx512_bf16",
                                  "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8"};

static int has_flag(const char *flags, const char *flag) {
  size_t n = strlen(flag);
  for (const char *p = flags; (p = strstr(p, flag)); p += n)
    if ((p == flags || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\n' || p[n] == '\0'))
      return 1;
  return 0;
}

void host_describe(char *buf, size_t size) {
  char line[8192], model[256] = "unknown CPU", flags[8192] = "";
  FILE *f = fopen("/proc/cpuinfo", "r");
  while (f && fgets(line, sizeof line, f)) {
    char *colon = strchr(line, ':');
    if (!colon)
      continue;
    if (!strncmp(line, "model name", 10) && !strcmp(model, "unknown CPU")) {
      snprintf(model, sizeof model, "%s", colon + 2);
      model[strcspn(model, "\n")] = '\0';
    } else if (!strncmp(line, "flags", 5) && !flags[0]) {
      snprintf(flags, sizeof flags, "%s", colon + 2);
    }
  }
  if (f)
    fclose(f);
  char yes[256] = "", no[256] = "";
  for (size_t i = 0; i < sizeof isa / sizeof isa[0]; i++) {
    char *to = has_flag(flags, isa[i]) ? yes : no;
    if (*to)
      strncat(to, " ", sizeof yes - strlen(to) - 1);
    strncat(to, isa[i], sizeof yes - strlen(to) - 1);
  }
  snprintf(buf, size, "%s, %ld CPUs; %s%s%s%s", model, sysconf(_SC_NPROCESSORS_ONLN),
           yes[0] ? yes : "none of the listed extensions", no[0] ? " (no " : "", no,
           no[0] ? ")" : "");
}
