/* Test-only safetensors writer: lets tests build valid and hostile model
 * files from an existing one without Python. */
#ifndef FAP_ST_WRITER_H
#define FAP_ST_WRITER_H

#include "fap.h"

#include <glib.h>

typedef struct {
  char *name;
  fap_dtype dtype;
  int ndim;
  int64_t shape[FAP_MAX_DIMS];
  GBytes *data;
} st_entry;

typedef struct {
  GPtrArray *entries;   /* st_entry* */
  GHashTable *metadata; /* char* -> char* */
} st_builder;

st_builder *st_builder_new(void);
/* Copies every tensor and metadata entry of a model file (must be valid). */
st_builder *st_builder_from_file(const char *path);
void st_builder_free(st_builder *b);
void st_builder_set(st_builder *b, const char *name, fap_dtype dtype, int ndim,
                    const int64_t *shape, const void *data, size_t bytes);
st_entry *st_builder_get(st_builder *b, const char *name);
gboolean st_builder_remove(st_builder *b, const char *name);
void st_builder_meta(st_builder *b, const char *key, const char *value); /* NULL removes */
/* Writes the file; returns a newly allocated path in a fresh temp dir. */
char *st_builder_write(st_builder *b, const char *basename);



/* Removes a file written by st_builder_write and its temp dir. */
void st_builder_unlink(const char *path);
#endif
