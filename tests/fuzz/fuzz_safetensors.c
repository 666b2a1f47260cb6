/* libFuzzer target: the safetensors container reader on arbitrary bytes
 * (header length, JSON header, dtypes, shapes, offsets, metadata). Every
 * accepted file is walked: tensors, their bytes, metadata keys. */
#include "safetensors.h"

#include <string.h>

static void quiet(fap_log_level level, const char *message, void *user_data) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fap_set_log_callback(quiet, NULL);
  fap_safetensors *st = NULL;
  if (fap_safetensors_open_memory(data, size, "fuzz", &st) != FAP_OK)
    return 0;
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < fap_safetensors_count(st); i++) {
    const fap_st_tensor *t = fap_safetensors_tensor(st, i);
    const uint8_t *bytes = t->data;
    if (t->nbytes != (size_t)t->numel * fap_dtype_size(t->dtype))
      __builtin_trap(); /* the size the reader vouched for */
    if (t->nbytes) /* its first and last byte are inside the input */
      sink ^= bytes[0] ^ bytes[t->nbytes - 1];
    if (fap_safetensors_find(st, t->name) != t)
      __builtin_trap(); /* a listed tensor is found by its name */
  }
  for (size_t i = 0; fap_safetensors_metadata_key(st, i); i++)
    (void)strlen(fap_safetensors_metadata(st, fap_safetensors_metadata_key(st, i)));
  fap_safetensors_close(st);
  return 0;
}
