/* Runs the PyTorch reference's benchmark mode (tests/reference/faprompt_ref.py
 * --bench ...) for the benchmark tools, which set its numbers beside ours. */
#ifndef FAP_TOOLS_TORCH_REF_H
#define FAP_TOOLS_TORCH_REF_H

#include <glib.h>
#include <json-glib/json-glib.h>

/* Spawns `python script --bench <args...>` (args NULL-terminated) and parses
 * the last line it prints as a JSON object. On failure prints the reason and
 * the child's stderr under `tool`'s name and returns NULL. The caller unrefs
 * the parser (*parser) after reading the object; *line (may be NULL) gets a
 * copy of the JSON line, freed with g_free. */
JsonObject *torch_ref_bench(const char *tool, const char *python, const char *script,
                            const char *const *args, JsonParser **parser, char **line);

/* A PyTorch process kept running beside the benchmark
 * (tests/reference/authors_speed.py --serve), so faprompt and PyTorch rounds
 * can alternate in one run (A B A B ...) without re-loading the model. */
typedef struct torch_server torch_server;

/* Spawns `python script --serve <args...>` and waits for its ready line
 * (model loaded, one warm-up frame run). NULL with the reason printed. The
 * same protocol serves other anchors: the ONNX Runtime runner is
 * `node tests/reference/ort_speed.js --serve ...` (python = the
 * interpreter, looked up in PATH when it has no slash). */
torch_server *torch_server_start(const char *tool, const char *python, const char *script,
                                 const char *const *args);
/* The same with NAME=VALUE entries (NULL-terminated, may be NULL) set in its
 * environment on top of ours: LD_PRELOAD of an allocator, malloc tunables. */
torch_server *torch_server_start_env(const char *tool, const char *python, const char *script,
                                     const char *const *args, const char *const *env);
/* "torch 1.13.1, 2 threads", or the anchor the ready line names
 * ("onnxruntime-node 1.30.0, 2 threads"): what the server runs (valid until stop). */
const char *torch_server_describe(const torch_server *s);
/* A number of the ready line (e.g. "max_abs_err": its outputs' error against
 * PyTorch fp32), or fallback when it has none. */
double torch_server_ready_number(const torch_server *s, const char *name, double fallback);
/* A string of the ready line (e.g. "allocator"), or fallback; valid until stop. */
const char *torch_server_ready_string(const torch_server *s, const char *name,
                                      const char *fallback);
/* Minor page faults of the last torch_server_run()'s frames, summed; -1 when
 * the server does not report them. */
double torch_server_minflt(const torch_server *s);
/* Runs @n frames; seconds per frame of the frame, its vision encoder and its
 * text encoder in frame_s[i], vision_s[i], text_s[i]. FALSE on failure. */
gboolean torch_server_run(torch_server *s, int n, double *frame_s, double *vision_s,
                          double *text_s);
void torch_server_stop(torch_server *s);

#endif
