/* The constant strings of fap.h: the library's version, the description of
 * each status and the name of each value of the public enums (and, beside
 * its name, the size of each element type). Pure functions of their
 * argument, used by every other file for messages: they depend on nothing,
 * so no file has to call up into the detector or the logger for a name. */
#include "fap.h"

const char *fap_version(void) { return FAP_VERSION; }

const char *fap_status_string(fap_status status) {
  switch (status) {
  case FAP_OK: return "ok";
  case FAP_ERR_INVALID_ARGUMENT: return "invalid argument";
  case FAP_ERR_IO: return "i/o error";
  case FAP_ERR_FORMAT: return "not a valid safetensors file";
  case FAP_ERR_SCHEMA: return "not a valid faprompt model";
  case FAP_ERR_UNSUPPORTED: return "unsupported";
  case FAP_ERR_NO_MEMORY: return "out of memory";
  case FAP_ERR_BACKEND: return "backend failure";
  }
  return "unknown status";
}

const char *fap_dtype_name(fap_dtype dtype) {
  switch (dtype) {
  case FAP_DTYPE_F32: return "F32";
  case FAP_DTYPE_F16: return "F16";
  case FAP_DTYPE_BF16: return "BF16";
  case FAP_DTYPE_I32: return "I32";
  case FAP_DTYPE_I64: return "I64";
  case FAP_DTYPE_U8: return "U8";
  }
  return "?";
}

size_t fap_dtype_size(fap_dtype dtype) {
  switch (dtype) {
  case FAP_DTYPE_F32: case FAP_DTYPE_I32: return 4;
  case FAP_DTYPE_F16: case FAP_DTYPE_BF16: return 2;
  case FAP_DTYPE_I64: return 8;
  case FAP_DTYPE_U8: return 1;
  }
  return 0;
}

const char *fap_family_name(fap_family family) {
  switch (family) {
  case FAP_FAMILY_FAPROMPT: return "faprompt";
  case FAP_FAMILY_ANOMALYCLIP: return "anomalyclip";
  }
  return "?";
}

const char *fap_backend_name(fap_backend_kind kind) {
  switch (kind) {
  case FAP_BACKEND_AUTO: return "auto";
  case FAP_BACKEND_CPU: return "cpu";
  case FAP_BACKEND_CUDA: return "cuda";
  }
  return "?";
}

const char *fap_precision_name(fap_precision p) {
  switch (p) {
  case FAP_PRECISION_AUTO: return "auto";
  case FAP_PRECISION_F32: return "f32";
  case FAP_PRECISION_F16: return "f16";
  case FAP_PRECISION_BF16: return "bf16";
  case FAP_PRECISION_INT8: return "int8";
  }
  return "?";
}

const char *fap_stage_name(fap_stage stage) {
  static const char *const names[FAP_STAGE_COUNT] = {
      "preprocess", "vision", "map1", "prior", "text", "map2", "map",
  };
  return (unsigned)stage < FAP_STAGE_COUNT ? names[stage] : "?";
}

const char *fap_pixel_format_name(fap_pixel_format f) {
  static const char *const names[] = {"RGB",  "BGR",  "RGBA", "BGRA", "RGBx", "BGRx",
                                      "xRGB", "xBGR", "NV12", "I420", "YUY2"};
  return (unsigned)f < sizeof names / sizeof names[0] ? names[f] : "?";
}
