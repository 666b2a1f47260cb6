/* libFuzzer target: the model schema check on top of the container reader
 * (fap_model_load: metadata, every tensor's name, dtype and shape against
 * the config, widening to f32). The input goes to a memfd, as a file would. */
#define _GNU_SOURCE
#include "fap.h"

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

static void quiet(fap_log_level level, const char *message, void *user_data) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fap_set_log_callback(quiet, NULL);
  int fd = memfd_create("fuzz-model", 0);
  if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
    if (fd >= 0)
      close(fd);
    return 0;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  fap_model *m = NULL;
  if (fap_model_load(path, &m) == FAP_OK) {
    const fap_config *c = fap_model_config(m);
    if (c->image_size <= 0 || c->patch_size <= 0 || fap_model_parameter_count(m) <= 0)
      __builtin_trap(); /* an accepted model is a usable one */
    fap_model_free(m);
  }
  close(fd);
  return 0;
}
