#include "torch_ref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* ---- the persistent server ------------------------------------------------ */

struct torch_server {
  const char *tool;
  GPid pid;
  FILE *to, *from;
  char describe[128];
  JsonParser *ready;   /* the ready line, for torch_server_ready_number() */
  double minflt;       /* the last run's minor page faults, summed; < 0: not reported */
};

/* the next JSON object line the server prints (others are its chatter) */
static JsonParser *read_object(torch_server *s) {
  char line[1 << 16];
  while (fgets(line, sizeof line, s->from)) {
    if (line[0] != '{')
      continue;
    JsonParser *p = json_parser_new();
    if (json_parser_load_from_data(p, line, -1, NULL) &&
        JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
      return p;
    g_object_unref(p);
  }
  fprintf(stderr, "%s: the anchor's server stopped (see its messages above)\n", s->tool);
  return NULL;
}

torch_server *torch_server_start(const char *tool, const char *python, const char *script,
                                 const char *const *args) {
  return torch_server_start_env(tool, python, script, args, NULL);
}

torch_server *torch_server_start_env(const char *tool, const char *python, const char *script,
                                     const char *const *args, const char *const *env) {
  GPtrArray *argv = g_ptr_array_new();
  g_ptr_array_add(argv, (gpointer)python);
  g_ptr_array_add(argv, (gpointer)script);
  g_ptr_array_add(argv, (gpointer) "--serve");
  for (int i = 0; args[i]; i++)
    g_ptr_array_add(argv, (gpointer)args[i]);
  g_ptr_array_add(argv, NULL);
  /* ours, with env's NAME=VALUE entries set on top */
  char **envp = g_get_environ();
  for (int i = 0; env && env[i]; i++) {
    char **kv = g_strsplit(env[i], "=", 2);
    envp = g_environ_setenv(envp, kv[0], kv[1] ? kv[1] : "", TRUE);
    g_strfreev(kv);
  }
  torch_server *s = g_new0(torch_server, 1);
  s->tool = tool;
  s->minflt = -1;
  int in_fd, out_fd;
  GError *error = NULL;
  /* its stderr stays ours: a traceback shows where it failed */
  gboolean ok = g_spawn_async_with_pipes(NULL, (char **)argv->pdata, envp,
                                         G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH, NULL,
                                         NULL, &s->pid, &in_fd, &out_fd, NULL, &error);
  g_ptr_array_unref(argv);
  g_strfreev(envp);
  if (!ok) {
    fprintf(stderr, "%s: cannot start the server %s: %s\n", tool, script, error->message);
    g_error_free(error);
    g_free(s);
    return NULL;
  }
  s->to = fdopen(in_fd, "w");
  s->from = fdopen(out_fd, "r");
  JsonParser *p = read_object(s);
  if (!p) {
    torch_server_stop(s);
    return NULL;
  }
  JsonObject *o = json_node_get_object(json_parser_get_root(p));
  /* an anchor other than PyTorch names itself ("onnxruntime-node 1.30.0") */
  if (json_object_has_member(o, "anchor"))
    snprintf(s->describe, sizeof s->describe, "%s, %d threads",
             json_object_get_string_member(o, "anchor"),
             (int)json_object_get_int_member_with_default(o, "threads", 0));
  else
    snprintf(s->describe, sizeof s->describe, "torch %s, %d threads",
             json_object_get_string_member_with_default(o, "torch", "?"),
             (int)json_object_get_int_member_with_default(o, "threads", 0));
  s->ready = p;
  return s;
}

double torch_server_ready_number(const torch_server *s, const char *name, double fallback) {
  JsonObject *o = json_node_get_object(json_parser_get_root(s->ready));
  JsonNode *n = json_object_get_member(o, name);
  return n && JSON_NODE_HOLDS_VALUE(n) ? json_node_get_double(n) : fallback;
}

const char *torch_server_ready_string(const torch_server *s, const char *name,
                                      const char *fallback) {
  JsonObject *o = json_node_get_object(json_parser_get_root(s->ready));
  JsonNode *n = json_object_get_member(o, name);
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : fallback;
}

double torch_server_minflt(const torch_server *s) { return s->minflt; }

const char *torch_server_describe(const torch_server *s) { return s->describe; }

gboolean torch_server_run(torch_server *s, int n, double *frame_s, double *vision_s,
                          double *text_s) {
  fprintf(s->to, "run %d\n", n);
  fflush(s->to);
  JsonParser *p = read_object(s);
  if (!p)
    return FALSE;
  JsonArray *frames =
      json_object_get_array_member(json_node_get_object(json_parser_get_root(p)), "frames");
  gboolean ok = frames && (int)json_array_get_length(frames) == n;
  s->minflt = 0;
  for (int i = 0; ok && i < n; i++) {
    JsonObject *f = json_array_get_object_element(frames, (guint)i);
    frame_s[i] = json_object_get_double_member_with_default(f, "frame_s", 0);
    vision_s[i] = json_object_get_double_member_with_default(f, "vision_s", 0);
    text_s[i] = json_object_get_double_member_with_default(f, "text_s", 0);
    double faults = json_object_get_double_member_with_default(f, "minflt", -1);
    s->minflt = faults < 0 || s->minflt < 0 ? -1 : s->minflt + faults;
  }
  g_object_unref(p);
  return ok;
}

void torch_server_stop(torch_server *s) {
  if (!s)
    return;
  if (s->to) {
    fputs("quit\n", s->to);
    fclose(s->to);
  }
  if (s->from)
    fclose(s->from);
  int status;
  waitpid(s->pid, &status, 0);
  g_spawn_close_pid(s->pid);
  if (s->ready)
    g_object_unref(s->ready);
  g_free(s);
}
