/* Strict, mmap-based reader of the safetensors container
 * (8-byte little-endian header length, JSON header, raw little-endian data).
 *
 * Validation, each failure logged with the file name and the offending entry:
 * header length within [2, FAP_ST_MAX_HEADER] and within the file; header is a
 * JSON object; every entry but "__metadata__" has dtype (F32 F16 BF16 I32 I64
 * U8), shape (array of non-negative integers, at most FAP_MAX_DIMS) and
 * data_offsets [begin, end] with begin <= end; element count x dtype size ==
 * end - begin with no integer overflow; entries contiguous, non-overlapping
 * and together covering the data area exactly; no duplicate names;
 * "__metadata__" (optional) maps strings to strings. */
#ifndef FAP_SAFETENSORS_H
#define FAP_SAFETENSORS_H

#include "fap.h"

#define FAP_ST_MAX_HEADER (100u * 1024u * 1024u)

typedef struct {
  const char *name;
  fap_dtype dtype;
  int ndim;
  int64_t shape[FAP_MAX_DIMS];
  int64_t numel;
  const void *data; /* inside the mapping; little-endian, may be unaligned */
  size_t nbytes;
} fap_st_tensor;

typedef struct fap_safetensors fap_safetensors;

/* Maps path read-only and validates it. */
fap_status fap_safetensors_open(const char *path, fap_safetensors **out);
/* Validates a buffer the caller keeps alive (used by tests); label names it in logs. */
fap_status fap_safetensors_open_memory(const void *data, size_t size, const char *label,
                                       fap_safetensors **out);
void fap_safetensors_close(fap_safetensors *st);

size_t fap_safetensors_count(const fap_safetensors *st);
/* Tensors in file order (ascending data offset). */
const fap_st_tensor *fap_safetensors_tensor(const fap_safetensors *st, size_t index);
const fap_st_tensor *fap_safetensors_find(const fap_safetensors *st, const char *name);
/* Value of a __metadata__ key, NULL when absent. */
const char *fap_safetensors_metadata(const fap_safetensors *st, const char *key);
size_t fap_safetensors_metadata_count(const fap_safetensors *st);
const char *fap_safetensors_metadata_key(const fap_safetensors *st, size_t index);
const char *fap_safetensors_label(const fap_safetensors *st);
/* Hint that a tensor's bytes are no longer needed: its pages leave this
 * process's resident set (the loader widens a 0.8 GB f16 file tensor by tensor
 * and would otherwise hold file pages and f32 copies at once). The data stay
 * readable (re-read from the file on access). No-op for memory buffers. */
void fap_safetensors_drop(const fap_safetensors *st, const fap_st_tensor *t);

/* Widens elements [first, first + count) of t (F32, F16 or BF16) into dst,
 * read from the file with pread (page cache, not this process's resident
 * set), for weights kept out of memory until asked for. The file must be the
 * one opened: a file written over in place since (size or modification time
 * changed) is refused with FAP_ERR_IO and a message saying to load it again;
 * one replaced by a rename is still the opened file. Memory buffers are read
 * where they are. Safe from several threads at once. */
fap_status fap_safetensors_widen(const fap_safetensors *st, const fap_st_tensor *t, size_t first,
                                 size_t count, float *dst);

#endif
