#include "npy.h"

#include "imageio.h" /* TOOLS_ERROR */

#include <errno.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADER_TOTAL 128 /* magic + len + dict, fixed so a header can be rewritten */

static int format_header(uint8_t head[HEADER_TOTAL], const char *descr, int ndim,
                         const int64_t *shape) {
  char dict[HEADER_TOTAL];
  int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
  for (int i = 0; i < ndim && n < (int)sizeof dict; i++)
    n += snprintf(dict + n, sizeof dict - n, "%lld,%s", (long long)shape[i],
                  i + 1 < ndim ? " " : "");
  if (n < (int)sizeof dict)
    n += snprintf(dict + n, sizeof dict - n, "), }");
  size_t header_len = HEADER_TOTAL - 10;
  if (n + 1 > (int)header_len)
    return 0;
  memcpy(head, "\x93NUMPY\x01\x00", 8);
  head[8] = (uint8_t)(header_len & 0xff);
  head[9] = (uint8_t)(header_len >> 8);
  memset(head + 10, ' ', header_len);
  memcpy(head + 10, dict, (size_t)n);
  head[HEADER_TOTAL - 1] = '\n';
  return 1;
}

int npy_write_f32_2d(const char *path, const float *data, int rows, int cols, GError **error) {
  int64_t inner[1] = {cols};
  npy_writer *w = npy_writer_open(path, "<f4", 1, inner, error);
  if (!w)
    return 0;
  for (int r = 0; r < rows; r++)
    if (!npy_writer_append(w, data + (size_t)r * cols, error)) {
      npy_writer_close(w, NULL);
      g_unlink(path);
      return 0;
    }
  return npy_writer_close(w, error);
}

struct npy_writer {
  FILE *f;
  char *path;
  char descr[8];
  int ndim;
  int64_t shape[8];
  size_t item_bytes;
  int failed;
};

npy_writer *npy_writer_open(const char *path, const char *descr, int inner_ndim,
                            const int64_t *inner_shape, GError **error) {
  g_return_val_if_fail(inner_ndim >= 0 && inner_ndim < 7, NULL);
  size_t elsize = strcmp(descr, "<f4") == 0 ? 4 : strcmp(descr, "|u1") == 0 ? 1 : 0;
  g_return_val_if_fail(elsize > 0, NULL);
  FILE *f = fopen(path, "wb");
  if (!f) {
    g_set_error(error, TOOLS_ERROR, 0, "cannot write %s: %s", path, g_strerror(errno));
    return NULL;
  }
  npy_writer *w = g_new0(npy_writer, 1);
  w->f = f;
  w->path = g_strdup(path);
  g_strlcpy(w->descr, descr, sizeof w->descr);
  w->ndim = inner_ndim + 1;
  w->item_bytes = elsize;
  for (int i = 0; i < inner_ndim; i++) {
    w->shape[i + 1] = inner_shape[i];
    w->item_bytes *= (size_t)inner_shape[i];
  }
  uint8_t head[HEADER_TOTAL];
  format_header(head, w->descr, w->ndim, w->shape);
  if (fwrite(head, 1, HEADER_TOTAL, f) != HEADER_TOTAL)
    w->failed = errno ? errno : EIO;
  return w;
}

int npy_writer_append(npy_writer *w, const void *item, GError **error) {
  if (!w->failed && fwrite(item, 1, w->item_bytes, w->f) != w->item_bytes)
    w->failed = errno ? errno : EIO;
  if (w->failed) {
    g_set_error(error, TOOLS_ERROR, 0, "cannot write %s: %s", w->path, g_strerror(w->failed));
    return 0;
  }
  w->shape[0]++;
  return 1;
}

int npy_writer_close(npy_writer *w, GError **error) {
  if (!w)
    return 1;
  uint8_t head[HEADER_TOTAL];
  format_header(head, w->descr, w->ndim, w->shape);
  if (!w->failed && (fseek(w->f, 0, SEEK_SET) != 0 || fwrite(head, 1, HEADER_TOTAL, w->f) != HEADER_TOTAL))
    w->failed = errno ? errno : EIO;
  if (fclose(w->f) != 0 && !w->failed)
    w->failed = errno ? errno : EIO;
  int ok = !w->failed;
  if (!ok)
    g_set_error(error, TOOLS_ERROR, 0, "cannot write %s: %s", w->path, g_strerror(w->failed));
  g_free(w->path);
  g_free(w);
  return ok;
}

/* ---- reading ---------------------------------------------------------------- */

/* Value of 'key' in the header dict: a pointer just past "'key':" and blanks. */
static const char *dict_value(const char *dict, const char *key) {
  gchar *pat = g_strdup_printf("'%s':", key);
  const char *p = strstr(dict, pat);
  size_t len = strlen(pat);
  g_free(pat);
  if (!p)
    return NULL;
  p += len;
  while (*p == ' ')
    p++;
  return p;
}

int npy_read(const char *path, npy_array *out, GError **error) {
  memset(out, 0, sizeof *out);
  gchar *buf = NULL;
  gsize len = 0;
  if (!g_file_get_contents(path, &buf, &len, error))
    return 0;
#define BAD(...)                                                                                   \
  do {                                                                                             \
    g_set_error(error, TOOLS_ERROR, 0, __VA_ARGS__);                                               \
    g_free(buf);                                                                                   \
    return 0;                                                                                      \
  } while (0)
  if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0)
    BAD("%s is not a .npy file", path);
  int major = (uint8_t)buf[6];
  size_t hlen, hstart;
  if (major == 1) {
    hlen = (uint8_t)buf[8] | ((size_t)(uint8_t)buf[9] << 8);
    hstart = 10;
  } else if (major == 2 || major == 3) {
    if (len < 12)
      BAD("%s: truncated header", path);
    hlen = (uint8_t)buf[8] | ((size_t)(uint8_t)buf[9] << 8) | ((size_t)(uint8_t)buf[10] << 16) |
           ((size_t)(uint8_t)buf[11] << 24);
    hstart = 12;
  } else {
    BAD("%s: .npy format version %d is not supported", path, major);
  }
  if (hstart + hlen > len)
    BAD("%s: truncated header", path);
  gchar *dict = g_strndup(buf + hstart, hlen);
  const char *d = dict_value(dict, "descr"), *fo = dict_value(dict, "fortran_order"),
             *sh = dict_value(dict, "shape");
  int ok = d && fo && sh && *d == '\'' && *sh == '(';
  if (ok) {
    const char *e = strchr(d + 1, '\'');
    ok = e && e - d - 1 < (long)sizeof out->descr;
    if (ok)
      memcpy(out->descr, d + 1, (size_t)(e - d - 1));
  }
  if (ok && strncmp(fo, "False", 5) != 0) {
    g_free(dict);
    BAD("%s: Fortran-order arrays are not supported", path);
  }
  out->count = 1;
  if (ok) {
    const char *p = sh + 1;
    while (ok) {
      while (*p == ' ' || *p == ',')
        p++;
      if (*p == ')')
        break;
      char *end;
      long long v = strtoll(p, &end, 10);
      if (end == p || v < 0 || out->ndim == 8) {
        ok = 0;
        break;
      }
      out->shape[out->ndim++] = v;
      out->count *= (size_t)v;
      p = end;
    }
  }
  g_free(dict);
  if (!ok)
    BAD("%s: cannot parse the .npy header", path);
  static const struct {
    const char *descr;
    size_t size;
  } known[] = {{"<f4", 4}, {"<f8", 8}, {"|u1", 1}, {"|b1", 1}, {"<i4", 4}, {"<i8", 8}};
  for (size_t i = 0; i < G_N_ELEMENTS(known); i++)
    if (strcmp(out->descr, known[i].descr) == 0)
      out->elsize = known[i].size;
  if (!out->elsize)
    BAD("%s: dtype '%s' is not supported (use float32, float64, uint8, bool, int32 or int64)",
        path, out->descr);
  size_t start = hstart + hlen;
  if (len - start != out->count * out->elsize)
    BAD("%s: holds %zu data bytes, the header implies %zu", path, len - start,
        out->count * out->elsize);
  out->data = g_malloc(out->count * out->elsize + 1);
  memcpy(out->data, buf + start, out->count * out->elsize);
  g_free(buf);
  return 1;
#undef BAD
}

void npy_array_clear(npy_array *a) {
  g_free(a->data);
  memset(a, 0, sizeof *a);
}
