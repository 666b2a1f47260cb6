#include "torch_ref.h"

#include <stdio.h>
#include <string.h>

JsonObject *torch_ref_bench(const char *tool, const char *python, const char *script,
                            const char *const *args, JsonParser **parser, char **line) {
  *parser = NULL;
  if (line)
    *line = NULL;
  GPtrArray *argv = g_ptr_array_new();
  g_ptr_array_add(argv, (gpointer)python);
  g_ptr_array_add(argv, (gpointer)script);
  g_ptr_array_add(argv, (gpointer) "--bench");
  for (int i = 0; args[i]; i++)
    g_ptr_array_add(argv, (gpointer)args[i]);
  g_ptr_array_add(argv, NULL);

  char *out = NULL, *err = NULL;
  int status = 0;
  GError *error = NULL;
  JsonObject *result = NULL;
  if (!g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
                    &status, &error) ||
      !g_spawn_check_wait_status(status, &error)) {
    fprintf(stderr, "%s: PyTorch reference failed: %s\n%s\n", tool, error ? error->message : "?",
            err ? err : "");
    g_clear_error(&error);
    goto done;
  }
  const char *last = out ? strrchr(g_strchomp(out), '\n') : NULL;
  const char *text = last ? last + 1 : out;
  JsonParser *p = json_parser_new();
  if (text && json_parser_load_from_data(p, text, -1, NULL) &&
      JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
    result = json_node_get_object(json_parser_get_root(p));
    *parser = p;
    if (line)
      *line = g_strdup(text);
  } else {
    fprintf(stderr, "%s: PyTorch reference printed no JSON result line\n", tool);
    g_object_unref(p);
  }
done:
  g_free(out);
  g_free(err);
  g_ptr_array_unref(argv);
  return result;
}
