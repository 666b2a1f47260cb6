/* libFuzzer target: the calibration sidecar parser (JSON text beside a model). */
#include "model.h"

#include <math.h>

static void quiet(fap_log_level level, const char *message, void *user_data) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fap_set_log_callback(quiet, NULL);
  float image = -2, pixel = -2;
  if (fap_calibration_parse((const char *)data, size, "fuzz", &image, &pixel) == FAP_OK) {
    /* accepted: each threshold absent (-1) or in [0, 1] */
    if (!((image == -1.0f || (image >= 0 && image <= 1)) &&
          (pixel == -1.0f || (pixel >= 0 && pixel <= 1))) ||
        (image == -1.0f && pixel == -1.0f))
      __builtin_trap();
  }
  return 0;
}
