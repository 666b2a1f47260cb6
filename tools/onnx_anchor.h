/* ONNX Runtime as a speed anchor of faprompt-bench (--onnx, --onnx-int8):
 * the authors' vision encoder exported to ONNX (tests/reference/export_onnx.py)
 * and run by ONNX Runtime's CPU provider through npm's onnxruntime-node
 * (tests/reference/ort_speed.js), as users who ship CLIP detectors deploy
 * it. Dev-only: tools/setup-onnxruntime.sh installs it into
 * <build>/onnxruntime; nothing of faprompt links or loads it. */
#ifndef FAP_TOOLS_ONNX_ANCHOR_H
#define FAP_TOOLS_ONNX_ANCHOR_H

#include "fap.h"
#include "torch_ref.h"

#include <stdint.h>

/* The setup step's folder: `given` (--onnx-dir) when set, else
 * $FAP_ONNXRUNTIME_DIR, else <build>/onnxruntime beside this tool's tools/
 * folder. NULL, with why printed under `tool`'s name, when it holds no
 * node_modules/onnxruntime-node. g_free the result. */
char *onnx_anchor_dir(const char *tool, const char *given);

/* The exported encoder and its reference pair at one image size. */
typedef struct {
  char *prefix;             /* <dir>/exports/<model name>-S<size> */
  int width, height;        /* the reference frame (RGB, width x height) */
  uint8_t *image;
  float *tokens, *global;   /* PyTorch fp32's outputs on it */
  int tokens_ndim;
  int64_t tokens_shape[3];  /* [N+1, E] or, AnomalyCLIP, [L, N+1, E] */
  size_t n_global;
  double ref_max_abs;       /* the largest |value| the errors are taken over */
} onnx_export;

/* Runs `python export_script --model MODEL --image-size SIZE ...` (it reuses
 * files that are up to date) and loads the reference pair. NULL with the
 * reason printed. */
onnx_export *onnx_export_make(const char *tool, const char *python, const char *export_script,
                              const char *dir, const char *model, int size, int width,
                              int height, int threads, int int8);
void onnx_export_free(onnx_export *e);

/* Largest |difference| of a detector's "tokens" (patch rows: row 0 is never
 * read) and "global" intermediates from PyTorch fp32's, after a run on
 * e->image with keep_intermediates; -1 when they are missing or of another
 * shape. */
double onnx_export_error(const onnx_export *e, const fap_detector *d);

/* Starts `node runner --serve ...` on the f32 or int8 graph (the
 * torch_server protocol); NULL with the reason printed. */
torch_server *onnx_anchor_start(const char *tool, const char *node, const char *runner,
                                const char *dir, const onnx_export *e, int int8, int threads);

#endif
