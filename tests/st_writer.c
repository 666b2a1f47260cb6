#include "st_writer.h"

#include "safetensors.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <string.h>

static void entry_free(gpointer p) {
  st_entry *e = p;
  g_free(e->name);
  g_bytes_unref(e->data);
  g_free(e);
}

st_builder *st_builder_new(void) {
  st_builder *b = g_new0(st_builder, 1);
  b->entries = g_ptr_array_new_with_free_func(entry_free);
  b->metadata = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  return b;
}

st_builder *st_builder_from_file(const char *path) {
  fap_safetensors *st = NULL;
  if (fap_safetensors_open(path, &st) != FAP_OK)
    return NULL;
  st_builder *b = st_builder_new();
  for (size_t i = 0; i < fap_safetensors_count(st); i++) {
    const fap_st_tensor *t = fap_safetensors_tensor(st, i);
    st_builder_set(b, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes);
  }
  for (size_t i = 0; i < fap_safetensors_metadata_count(st); i++) {
    const char *k = fap_safetensors_metadata_key(st, i);
    st_builder_meta(b, k, fap_safetensors_metadata(st, k));
  }
  fap_safetensors_close(st);
  return b;
}

void st_builder_free(st_builder *b) {
  if (!b)
    return;
  g_ptr_array_unref(b->entries);
  g_hash_table_unref(b->metadata);
  g_free(b);
}

st_entry *st_builder_get(st_builder *b, const char *name) {
  for (guint i = 0; i < b->entries->len; i++) {
    st_entry *e = g_ptr_array_index(b->entries, i);
    if (strcmp(e->name, name) == 0)
      return e;
  }
  return NULL;
}

gboolean st_builder_remove(st_builder *b, const char *name) {
  st_entry *e = st_builder_get(b, name);
  return e ? g_ptr_array_remove(b->entries, e) : FALSE;
}

void st_builder_set(st_builder *b, const char *name, fap_dtype dtype, int ndim,
                    const int64_t *shape, const void *data, size_t bytes) {
  st_builder_remove(b, name);
  st_entry *e = g_new0(st_entry, 1);
  e->name = g_strdup(name);
  e->dtype = dtype;
  e->ndim = ndim;
  memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
  e->data = g_bytes_new(data, bytes);
  g_ptr_array_add(b->entries, e);
}

void st_builder_meta(st_builder *b, const char *key, const char *value) {
  if (value)
    g_hash_table_replace(b->metadata, g_strdup(key), g_strdup(value));
  else
    g_hash_table_remove(b->metadata, key);
}

char *st_builder_write(st_builder *b, const char *basename) {
  JsonBuilder *jb = json_builder_new();
  json_builder_begin_object(jb);
  if (g_hash_table_size(b->metadata)) {
    json_builder_set_member_name(jb, "__metadata__");
    json_builder_begin_object(jb);
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, b->metadata);
    while (g_hash_table_iter_next(&it, &k, &v)) {
      json_builder_set_member_name(jb, k);
      json_builder_add_string_value(jb, v);
    }
    json_builder_end_object(jb);
  }
  gint64 offset = 0;
  for (guint i = 0; i < b->entries->len; i++) {
    st_entry *e = g_ptr_array_index(b->entries, i);
    json_builder_set_member_name(jb, e->name);
    json_builder_begin_object(jb);
    json_builder_set_member_name(jb, "dtype");
    json_builder_add_string_value(jb, fap_dtype_name(e->dtype));
    json_builder_set_member_name(jb, "shape");
    json_builder_begin_array(jb);
    for (int d = 0; d < e->ndim; d++)
      json_builder_add_int_value(jb, e->shape[d]);
    json_builder_end_array(jb);
    json_builder_set_member_name(jb, "data_offsets");
    json_builder_begin_array(jb);
    json_builder_add_int_value(jb, offset);
    offset += (gint64)g_bytes_get_size(e->data);
    json_builder_add_int_value(jb, offset);
    json_builder_end_array(jb);
    json_builder_end_object(jb);
  }
  json_builder_end_object(jb);
  JsonNode *root = json_builder_get_root(jb);
  char *header = json_to_string(root, FALSE);
  json_node_unref(root);
  g_object_unref(jb);

  GError *err = NULL;
  char *dir = g_dir_make_tmp("faptest-XXXXXX", &err);
  g_assert_no_error(err);
  char *path = g_build_filename(dir, basename, NULL);
  g_free(dir);
  FILE *f = fopen(path, "wb");
  g_assert_nonnull(f);
  guint64 len = strlen(header);
  guint8 le[8];
  for (int i = 0; i < 8; i++)
    le[i] = (guint8)(len >> (8 * i));
  fwrite(le, 1, 8, f);
  fwrite(header, 1, len, f);
  for (guint i = 0; i < b->entries->len; i++) {
    st_entry *e = g_ptr_array_index(b->entries, i);
    gsize n;
    const void *d = g_bytes_get_data(e->data, &n);
    if (n)
      fwrite(d, 1, n, f);
  }
  fclose(f);
  g_free(header);
  return path;
}

void st_builder_unlink(const char *path) {
  char *dir = g_path_get_dirname(path);
  g_unlink(path);
  g_rmdir(dir);
  g_free(dir);
}
