/* numpy .npy files (format version 1.0), little-endian hosts' native layout:
 * magic, version, u16 header length, a Python dict literal padded with spaces
 * to a newline so that the data starts on a 64-byte boundary, then the raw
 * array in C order. */
#ifndef FAP_TOOLS_NPY_H
#define FAP_TOOLS_NPY_H

#include <glib.h>
#include <stdint.h>
#include <stdio.h>

/* One float32 [rows, cols] array. */
int npy_write_f32_2d(const char *path, const float *data, int rows, int cols, GError **error);

/* A streaming writer of arrays [N, d1, ...] whose first dimension is only
 * known at the end: items of d1 x ... elements are appended, and close
 * rewrites the header with the final N. descr: "<f4" or "|u1". */
typedef struct npy_writer npy_writer;
npy_writer *npy_writer_open(const char *path, const char *descr, int inner_ndim,
                            const int64_t *inner_shape, GError **error);
int npy_writer_append(npy_writer *w, const void *item, GError **error);
/* Finishes (rewrites the header) and frees; returns 0 on a write error. */
int npy_writer_close(npy_writer *w, GError **error);

/* A whole array read into memory. descr as in the file ("<f4", "|u1", "|b1",
 * "<i4", "<i8", "<f8"); fortran_order arrays are refused. */
typedef struct {
  char descr[8];
  int ndim;
  int64_t shape[8];
  size_t count;    /* elements */
  size_t elsize;
  void *data;      /* g_free */
} npy_array;

int npy_read(const char *path, npy_array *out, GError **error);
void npy_array_clear(npy_array *a);

#endif
