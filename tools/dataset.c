#include "dataset.h"

#include "imageio.h"

#include <json-glib/json-glib.h>
#include <string.h>

const char *dataset_layout_name(dataset_layout layout) {
  switch (layout) {
  case DATASET_MVTEC: return "mvtec";
  case DATASET_VISA: return "visa";
  case DATASET_META: return "meta";
  default: return "auto";
  }
}

int dataset_layout_parse(const char *name) {
  for (int l = DATASET_AUTO; l <= DATASET_META; l++)
    if (g_ascii_strcasecmp(name, dataset_layout_name((dataset_layout)l)) == 0)
      return l;
  return -1;
}

static void sample_clear(gpointer p) {
  dataset_sample *s = p;
  g_free(s->image);
  g_free(s->mask);
  g_free(s->defect);
}

static dataset_class *class_new(const char *name) {
  dataset_class *c = g_new0(dataset_class, 1);
  c->name = g_strdup(name);
  c->samples = g_array_new(FALSE, TRUE, sizeof(dataset_sample));
  g_array_set_clear_func(c->samples, sample_clear);
  return c;
}

static void class_free(gpointer p) {
  dataset_class *c = p;
  g_free(c->name);
  g_array_unref(c->samples);
  g_free(c);
}

void dataset_free(dataset *d) {
  if (!d)
    return;
  g_ptr_array_unref(d->classes);
  g_free(d->root);
  g_free(d);
}

static void add_sample(dataset_class *c, char *image, char *mask, const char *defect, int anomaly) {
  dataset_sample s = {image, mask, g_strdup(defect ? defect : ""), anomaly};
  g_array_append_val(c->samples, s);
}

static gint compare_strings(gconstpointer a, gconstpointer b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted names of the sub-folders of dir. */
static GPtrArray *subdirs(const char *dir, GError **error) {
  GDir *d = g_dir_open(dir, 0, error);
  if (!d)
    return NULL;
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *name;
  while ((name = g_dir_read_name(d))) {
    gchar *path = g_build_filename(dir, name, NULL);
    if (g_file_test(path, G_FILE_TEST_IS_DIR))
      g_ptr_array_add(names, g_strdup(name));
    g_free(path);
  }
  g_dir_close(d);
  g_ptr_array_sort(names, compare_strings);
  return names;
}

/* Where the authors' loader would give an anomalous sample an all-zero mask
 * (an empty path joins to the root, a folder), returns NULL in *out; a path
 * that does not exist is an error. */
static int resolve_mask(dataset *d, const char *rel, const char *image, char **out, GError **error) {
  *out = NULL;
  gchar *path = g_build_filename(d->root, rel ? rel : "", NULL);
  if (!rel || !*rel || g_file_test(path, G_FILE_TEST_IS_DIR)) {
    d->missing_masks++;
    g_free(path);
    return 1;
  }
  if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
    g_set_error(error, TOOLS_ERROR, 0, "mask %s of anomalous image %s does not exist", path, image);
    g_free(path);
    return 0;
  }
  *out = path;
  return 1;
}

/* ---- MVTec AD --------------------------------------------------------------- */

static int mvtec_class(dataset *d, GHashTable *exts, const char *class_dir, const char *name,
                       GError **error) {
  gchar *test = g_build_filename(class_dir, "test", NULL);
  GPtrArray *defects = subdirs(test, error);
  if (!defects) {
    g_free(test);
    return 0;
  }
  dataset_class *c = class_new(name);
  g_ptr_array_add(d->classes, c);
  int ok = 1;
  if (defects->len == 0) {
    g_set_error(error, TOOLS_ERROR, 0,
                "%s holds no defect folders (expected test/good and test/<defect>)", test);
    ok = 0;
  }
  for (guint i = 0; ok && i < defects->len; i++) {
    const char *defect = defects->pdata[i];
    gchar *dir = g_build_filename(test, defect, NULL);
    GPtrArray *files = g_ptr_array_new_with_free_func(g_free);
    if (imageio_list_dir(files, exts, dir, error) < 0)
      ok = 0;
    int good = strcmp(defect, "good") == 0;
    gchar *gt = g_build_filename(class_dir, "ground_truth", defect, NULL);
    if (ok && !good && files->len > 0 && !g_file_test(gt, G_FILE_TEST_IS_DIR)) {
      g_set_error(error, TOOLS_ERROR, 0, "missing folder %s (the masks of %s)", gt, dir);
      ok = 0;
    }
    for (guint j = 0; ok && j < files->len; j++) {
      const char *image = files->pdata[j];
      char *mask = NULL;
      if (!good) {
        gchar *stem = imageio_stem(image);
        gchar *base = g_strconcat(stem, "_mask.png", NULL);
        mask = g_build_filename(gt, base, NULL);
        g_free(stem);
        g_free(base);
        if (!g_file_test(mask, G_FILE_TEST_IS_REGULAR)) {
          g_set_error(error, TOOLS_ERROR, 0, "no mask for %s: expected %s", image, mask);
          g_free(mask);
          ok = 0;
          break;
        }
      }
      add_sample(c, g_strdup(image), mask, defect, !good);
    }
    g_free(gt);
    g_free(dir);
    g_ptr_array_unref(files);
  }
  if (ok && c->samples->len == 0) {
    g_set_error(error, TOOLS_ERROR, 0, "no test images under %s", test);
    ok = 0;
  }
  g_ptr_array_unref(defects);
  g_free(test);
  return ok;
}

static int open_mvtec(dataset *d, GError **error) {
  GHashTable *exts = imageio_extensions();
  int ok = 1;
  gchar *test = g_build_filename(d->root, "test", NULL);
  if (g_file_test(test, G_FILE_TEST_IS_DIR)) { /* one class folder */
    gchar *name = g_path_get_basename(d->root);
    ok = mvtec_class(d, exts, d->root, name, error);
    g_free(name);
  } else {
    GPtrArray *names = subdirs(d->root, error);
    ok = names != NULL;
    for (guint i = 0; ok && i < names->len; i++) {
      gchar *dir = g_build_filename(d->root, names->pdata[i], NULL);
      gchar *t = g_build_filename(dir, "test", NULL);
      if (g_file_test(t, G_FILE_TEST_IS_DIR))
        ok = mvtec_class(d, exts, dir, names->pdata[i], error);
      g_free(t);
      g_free(dir);
    }
    if (ok && d->classes->len == 0) {
      g_set_error(error, TOOLS_ERROR, 0,
                  "%s: no class folders with a test/ folder inside (MVTec AD layout: "
                  "<class>/test/<defect>/*.png, <class>/ground_truth/<defect>/*_mask.png)",
                  d->root);
      ok = 0;
    }
    if (names)
      g_ptr_array_unref(names);
  }
  g_free(test);
  g_hash_table_unref(exts);
  return ok;
}

/* ---- VisA split_csv ---------------------------------------------------------- */

/* Splits one CSV record (RFC 4180 quoting) into fields. */
static GPtrArray *csv_fields(const char *line) {
  GPtrArray *f = g_ptr_array_new_with_free_func(g_free);
  GString *cur = g_string_new(NULL);
  int quoted = 0;
  for (const char *p = line;; p++) {
    if (quoted) {
      if (*p == '"' && p[1] == '"') {
        g_string_append_c(cur, '"');
        p++;
      } else if (*p == '"') {
        quoted = 0;
      } else if (*p) {
        g_string_append_c(cur, *p);
      } else {
        break;
      }
    } else if (*p == '"') {
      quoted = 1;
    } else if (*p == ',' || !*p || *p == '\r' || *p == '\n') {
      g_ptr_array_add(f, g_strstrip(g_string_free(cur, FALSE)));
      cur = g_string_new(NULL);
      if (*p != ',')
        break;
    } else {
      g_string_append_c(cur, *p);
    }
  }
  g_string_free(cur, TRUE);
  return f;
}

static dataset_class *class_named(dataset *d, GHashTable *by_name, const char *name) {
  dataset_class *c = g_hash_table_lookup(by_name, name);
  if (!c) {
    c = class_new(name);
    g_ptr_array_add(d->classes, c);
    g_hash_table_insert(by_name, c->name, c);
  }
  return c;
}

static int open_visa(dataset *d, GError **error) {
  gchar *csv = g_build_filename(d->root, "split_csv", "1cls.csv", NULL);
  gchar *text = NULL;
  int ok = g_file_get_contents(csv, &text, NULL, error);
  gchar **lines = ok ? g_strsplit(text, "\n", -1) : NULL;
  GHashTable *by_name = g_hash_table_new(g_str_hash, g_str_equal);
  const char *want[5] = {"object", "split", "label", "image", "mask"};
  int col[5] = {-1, -1, -1, -1, -1};
  if (ok && (!lines[0] || !*g_strstrip(lines[0]))) {
    g_set_error(error, TOOLS_ERROR, 0, "%s is empty (expected a header object,split,label,image,mask)", csv);
    ok = 0;
  }
  if (ok) {
    GPtrArray *head = csv_fields(lines[0]);
    for (guint i = 0; i < head->len; i++)
      for (int j = 0; j < 5; j++)
        if (g_ascii_strcasecmp(head->pdata[i], want[j]) == 0)
          col[j] = (int)i;
    g_ptr_array_unref(head);
    for (int j = 0; ok && j < 5; j++)
      if (col[j] < 0) {
        g_set_error(error, TOOLS_ERROR, 0,
                    "%s: no '%s' column in the header (expected object,split,label,image,mask)",
                    csv, want[j]);
        ok = 0;
      }
  }
  for (int ln = 1; ok && lines[ln]; ln++) {
    if (!*g_strstrip(lines[ln]))
      continue;
    GPtrArray *f = csv_fields(lines[ln]);
    int need = MAX(MAX(MAX(col[0], col[1]), MAX(col[2], col[3])), col[4]);
    if ((int)f->len <= need) {
      g_set_error(error, TOOLS_ERROR, 0, "%s:%d: %u fields, expected at least %d", csv, ln + 1,
                  f->len, need + 1);
      ok = 0;
    } else if (strcmp(f->pdata[col[1]], "test") == 0) {
      const char *label = f->pdata[col[2]];
      int anomaly = strcmp(label, "anomaly") == 0 ? 1 : strcmp(label, "normal") == 0 ? 0 : -1;
      gchar *image = g_build_filename(d->root, (const char *)f->pdata[col[3]], NULL);
      char *mask = NULL;
      if (anomaly < 0) {
        g_set_error(error, TOOLS_ERROR, 0, "%s:%d: label '%s', expected normal or anomaly", csv,
                    ln + 1, label);
        ok = 0;
      } else if (!g_file_test(image, G_FILE_TEST_IS_REGULAR)) {
        g_set_error(error, TOOLS_ERROR, 0, "%s:%d: image %s does not exist", csv, ln + 1, image);
        ok = 0;
      } else if (anomaly) {
        ok = resolve_mask(d, f->pdata[col[4]], image, &mask, error);
      }
      if (ok) {
        add_sample(class_named(d, by_name, f->pdata[col[0]]), image, mask, anomaly ? "anomaly" : "good",
                   anomaly);
      } else {
        g_free(image);
      }
    }
    g_ptr_array_unref(f);
  }
  if (ok && d->classes->len == 0) {
    g_set_error(error, TOOLS_ERROR, 0, "%s: no rows with split 'test'", csv);
    ok = 0;
  }
  g_hash_table_unref(by_name);
  g_strfreev(lines);
  g_free(text);
  g_free(csv);
  return ok;
}

/* ---- the authors' meta.json ------------------------------------------------- */

static const char *member_string(JsonObject *o, const char *name) {
  JsonNode *n = json_object_get_member(o, name);
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : NULL;
}

static int open_meta(dataset *d, GError **error) {
  gchar *path = g_build_filename(d->root, "meta.json", NULL);
  JsonParser *parser = json_parser_new();
  GHashTable *by_name = g_hash_table_new(g_str_hash, g_str_equal);
  int ok = json_parser_load_from_file(parser, path, error); /* its message names the file */
  JsonNode *root = ok ? json_parser_get_root(parser) : NULL;
  JsonObject *test = NULL;
  if (ok) {
    JsonNode *t = JSON_NODE_HOLDS_OBJECT(root) ? json_object_get_member(json_node_get_object(root), "test")
                                               : NULL;
    test = t && JSON_NODE_HOLDS_OBJECT(t) ? json_node_get_object(t) : NULL;
    if (!test) {
      g_set_error(error, TOOLS_ERROR, 0, "%s: no \"test\" object (expected {\"test\": {class: [...]}})",
                  path);
      ok = 0;
    }
  }
  GList *members = ok ? json_object_get_members(test) : NULL;
  for (GList *l = members; ok && l; l = l->next) {
    const char *key = l->data;
    JsonNode *arr = json_object_get_member(test, key);
    if (!JSON_NODE_HOLDS_ARRAY(arr)) {
      g_set_error(error, TOOLS_ERROR, 0, "%s: test.%s is not an array", path, key);
      ok = 0;
      break;
    }
    JsonArray *a = json_node_get_array(arr);
    for (guint i = 0; ok && i < json_array_get_length(a); i++) {
      JsonNode *en = json_array_get_element(a, i);
      JsonObject *e = JSON_NODE_HOLDS_OBJECT(en) ? json_node_get_object(en) : NULL;
      const char *img = e ? member_string(e, "img_path") : NULL;
      JsonNode *an = e ? json_object_get_member(e, "anomaly") : NULL;
      if (!img || !an || !JSON_NODE_HOLDS_VALUE(an) ||
          (json_node_get_value_type(an) != G_TYPE_INT64 && json_node_get_value_type(an) != G_TYPE_BOOLEAN)) {
        g_set_error(error, TOOLS_ERROR, 0,
                    "%s: test.%s[%u] needs a string \"img_path\" and an integer \"anomaly\"", path,
                    key, i);
        ok = 0;
        break;
      }
      gint64 anomaly = json_node_get_value_type(an) == G_TYPE_BOOLEAN ? json_node_get_boolean(an)
                                                                       : json_node_get_int(an);
      if (anomaly != 0 && anomaly != 1) {
        g_set_error(error, TOOLS_ERROR, 0, "%s: test.%s[%u]: anomaly is %lld, expected 0 or 1",
                    path, key, i, (long long)anomaly);
        ok = 0;
        break;
      }
      const char *cls = member_string(e, "cls_name");
      const char *specie = member_string(e, "specie_name");
      gchar *image = g_build_filename(d->root, img, NULL);
      char *mask = NULL;
      if (!g_file_test(image, G_FILE_TEST_IS_REGULAR)) {
        g_set_error(error, TOOLS_ERROR, 0, "%s: test.%s[%u]: image %s does not exist", path, key,
                    i, image);
        ok = 0;
      } else if (anomaly) {
        ok = resolve_mask(d, member_string(e, "mask_path"), image, &mask, error);
      }
      if (ok)
        add_sample(class_named(d, by_name, cls && *cls ? cls : key), image, mask,
                   specie && *specie ? specie : anomaly ? "anomaly" : "good", (int)anomaly);
      else
        g_free(image);
    }
  }
  g_list_free(members);
  if (ok && d->classes->len == 0) {
    g_set_error(error, TOOLS_ERROR, 0, "%s: \"test\" lists no images", path);
    ok = 0;
  }
  g_hash_table_unref(by_name);
  g_object_unref(parser);
  g_free(path);
  return ok;
}

dataset *dataset_open(const char *root, dataset_layout layout, GError **error) {
  if (!g_file_test(root, G_FILE_TEST_IS_DIR)) {
    g_set_error(error, TOOLS_ERROR, 0, "dataset folder %s does not exist", root);
    return NULL;
  }
  dataset *d = g_new0(dataset, 1);
  d->root = g_strdup(root);
  d->classes = g_ptr_array_new_with_free_func(class_free);
  if (layout == DATASET_AUTO) {
    gchar *meta = g_build_filename(root, "meta.json", NULL);
    gchar *csv = g_build_filename(root, "split_csv", "1cls.csv", NULL);
    layout = g_file_test(meta, G_FILE_TEST_IS_REGULAR)  ? DATASET_META
             : g_file_test(csv, G_FILE_TEST_IS_REGULAR) ? DATASET_VISA
                                                        : DATASET_MVTEC;
    g_free(meta);
    g_free(csv);
  }
  d->layout = layout;
  int ok = layout == DATASET_META ? open_meta(d, error)
           : layout == DATASET_VISA ? open_visa(d, error)
                                    : open_mvtec(d, error);
  if (!ok) {
    dataset_free(d);
    return NULL;
  }
  return d;
}

void dataset_limit(dataset *d, int n) {
  if (n <= 0)
    return;
  for (guint i = 0; i < d->classes->len; i++) {
    dataset_class *c = d->classes->pdata[i];
    guint len = c->samples->len;
    if (len <= (guint)n)
      continue;
    GArray *kept = g_array_new(FALSE, TRUE, sizeof(dataset_sample));
    g_array_set_clear_func(kept, sample_clear);
    for (int j = 0; j < n; j++) {
      guint at = (guint)((guint64)j * len / (guint)n);
      dataset_sample *s = &g_array_index(c->samples, dataset_sample, at);
      g_array_append_val(kept, *s);
      memset(s, 0, sizeof *s); /* moved */
    }
    g_array_unref(c->samples);
    c->samples = kept;
  }
}

int dataset_select(dataset *d, const char *names, GError **error) {
  gchar **want = g_strsplit(names, ",", -1);
  GPtrArray *kept = g_ptr_array_new_with_free_func(class_free);
  int ok = 1;
  for (int i = 0; ok && want[i]; i++) {
    const char *w = g_strstrip(want[i]);
    if (!*w)
      continue;
    guint j = 0;
    while (j < d->classes->len && strcmp(((dataset_class *)d->classes->pdata[j])->name, w) != 0)
      j++;
    if (j == d->classes->len) {
      GString *all = g_string_new(NULL);
      for (guint k = 0; k < d->classes->len; k++)
        g_string_append_printf(all, "%s%s", k ? ", " : "", ((dataset_class *)d->classes->pdata[k])->name);
      g_set_error(error, TOOLS_ERROR, 0, "no class '%s' in %s (classes: %s)", w, d->root, all->str);
      g_string_free(all, TRUE);
      ok = 0;
    } else {
      g_ptr_array_add(kept, g_ptr_array_steal_index(d->classes, j));
    }
  }
  g_strfreev(want);
  if (ok) {
    g_ptr_array_unref(d->classes);
    d->classes = kept;
  } else {
    g_ptr_array_unref(kept);
  }
  return ok;
}
