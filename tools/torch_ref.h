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

#endif
