/* Strict safetensors reader; safetensors.h lists the rules it enforces.
 *
 * json-glib builds the tree but is lenient: it takes single quotes, hex numbers, comments
 * and several top-level values, wraps integers past 64 bits and keeps the last of duplicate
 * keys. So a small strict RFC 8259 scanner runs first: it rejects all of that and finds
 * duplicate keys (compared after unescaping) in every object. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _DEFAULT_SOURCE /* madvise */
#define _POSIX_C_SOURCE 200809L
#endif

#include "safetensors.h"

#include "half.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <json-glib/json-glib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A valid header nests 3 deep ({name: {shape: [...]}}); the slack lets a wrong but
 * shallow header reach the checks that name the problem, the cap bounds recursion. */
#define ST_MAX_DEPTH 16

typedef struct {
  fap_st_tensor t;
  uint64_t begin, end;
  size_t order; /* position in the header: a deterministic tie-break for sorting */
} st_entry;

struct fap_safetensors {
  char *label;
  void *map; /* NULL for fap_safetensors_open_memory */
  size_t map_size;
  int fd;                  /* the file, for fap_safetensors_widen; -1 for memory */
  off_t size;              /* and what it was when opened */
  struct timespec mtime;
  GStringChunk *strings; /* every name, key and value below */
  st_entry *entries;     /* ascending data offset */
  size_t count;
  GHashTable *by_name; /* name -> st_entry *, keys borrowed */
  const char **meta_keys, **meta_values;
  size_t meta_count;
};

/* Logs "<label>: [tensor '<name>': ]<message>" and returns FAP_ERR_FORMAT. */
static fap_status bad(const char *label, const char *name, const char *fmt, ...) FAP_PRINTF(3, 4);
static fap_status bad(const char *label, const char *name, const char *fmt, ...) {
  char what[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (!name) return fap_fail(FAP_ERR_FORMAT, "%s: %s", label, what);
  return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': %s", label, name, what);
}

/* ---- strict JSON scanner ---------------------------------------------------- */

typedef struct {
  const char *s, *label;
  size_t n, i, top_keys;
} scan;

static fap_status scan_fail(const scan *sc, const char *fmt, ...) FAP_PRINTF(2, 3);
static fap_status scan_fail(const scan *sc, const char *fmt, ...) {
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return bad(sc->label, NULL, "header byte %zu: %s", sc->i, what);
}

static fap_status scan_expected(const scan *sc, const char *expected) {
  if (sc->i >= sc->n) return scan_fail(sc, "header ends early, expected %s", expected);
  unsigned char c = (unsigned char)sc->s[sc->i];
  if (g_ascii_isprint(c)) return scan_fail(sc, "unexpected '%c', expected %s", c, expected);
  return scan_fail(sc, "unexpected byte 0x%02x, expected %s", c, expected);
}

static int at(const scan *sc, char c) { return sc->i < sc->n && sc->s[sc->i] == c; }
static int at_digit(const scan *sc) { return sc->i < sc->n && g_ascii_isdigit(sc->s[sc->i]); }
static void skip_digits(scan *sc) {
  while (at_digit(sc)) sc->i++;
}
static void skip_ws(scan *sc) {
  while (at(sc, ' ') || at(sc, '\t') || at(sc, '\n') || at(sc, '\r')) sc->i++;
}

static int hex4(const scan *sc, size_t pos, gunichar *out) {
  if (pos > sc->n || sc->n - pos < 4) return 0;
  *out = 0;
  for (size_t k = 0; k < 4; k++) {
    int v = g_ascii_xdigit_value(sc->s[pos + k]);
    if (v < 0) return 0;
    *out = *out << 4 | (gunichar)v;
  }
  return 1;
}

/* Scans the string at sc->i (its opening quote); decodes it into out if not NULL. */
static fap_status scan_string(scan *sc, GString *out) {
  static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
  for (sc->i++; sc->i < sc->n;) {
    unsigned char c = (unsigned char)sc->s[sc->i];
    if (c == '"') {
      sc->i++;
      return FAP_OK;
    }
    if (c < 0x20) return scan_fail(sc, "control byte 0x%02x inside a string must be escaped", c);
    if (c != '\\') {
      if (out) g_string_append_c(out, (char)c);
      sc->i++;
      continue;
    }
    if (sc->i + 1 >= sc->n) break;
    char e = sc->s[sc->i + 1];
    if (e != 'u') {
      const char *p = e ? strchr(from, e) : NULL;
      if (!p) return scan_fail(sc, "invalid escape '\\%c' in a string", e);
      if (out) g_string_append_c(out, to[p - from]);
      sc->i += 2;
      continue;
    }
    gunichar cp, lo;
    size_t len = 6;
    if (!hex4(sc, sc->i + 2, &cp)) return scan_fail(sc, "'\\u' needs four hex digits");
    if (cp == 0) return scan_fail(sc, "escaped NUL (\\u0000) in a string is not supported");
    if (cp >= 0xD800 && cp <= 0xDFFF) {
      const char *s = sc->s + sc->i;
      if (cp >= 0xDC00 || sc->n - sc->i < 12 || s[6] != '\\' || s[7] != 'u' ||
          !hex4(sc, sc->i + 8, &lo) || lo < 0xDC00 || lo > 0xDFFF)
        return scan_fail(sc, "unpaired UTF-16 surrogate \\u%04X in a string", (unsigned)cp);
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      len = 12;
    }
    if (out) g_string_append_unichar(out, cp);
    sc->i += len;
  }
  return scan_fail(sc, "unterminated string");
}

static fap_status scan_number(scan *sc) {
  size_t start = sc->i;
  if (at(sc, '-')) sc->i++;
  if (!at_digit(sc)) return scan_expected(sc, "a digit");
  if (at(sc, '0') && sc->i + 1 < sc->n && g_ascii_isdigit(sc->s[sc->i + 1]))
    return scan_fail(sc, "numbers must not have leading zeros");
  size_t digits = sc->i;
  skip_digits(sc);
  size_t digits_end = sc->i;
  if (at(sc, '.')) {
    sc->i++;
    if (!at_digit(sc)) return scan_expected(sc, "a digit after '.'");
    skip_digits(sc);
  }
  if (at(sc, 'e') || at(sc, 'E')) {
    sc->i++;
    if (at(sc, '+') || at(sc, '-')) sc->i++;
    if (!at_digit(sc)) return scan_expected(sc, "a digit in the exponent");
    skip_digits(sc);
  }
  /* an integer must fit: json-glib would silently wrap it */
  uint64_t v = 0;
  for (size_t k = digits; sc->i == digits_end && k < digits_end; k++) {
    unsigned d = (unsigned)(sc->s[k] - '0');
    if (v > ((uint64_t)INT64_MAX - d) / 10) {
      sc->i = start;
      return scan_fail(sc, "integer %.*s does not fit in 64 bits", (int)MIN(digits_end - start, 40),
                       sc->s + start);
    }
    v = v * 10 + d;
  }
  return FAP_OK;
}

static fap_status scan_value(scan *sc, int depth, const char *key);

/* A key and its ':'; *key stays valid while keys (which owns it) lives. */
static fap_status scan_key(scan *sc, GHashTable *keys, int depth, const char *parent,
                           const char **key) {
  if (!at(sc, '"')) return scan_expected(sc, "a string key");
  size_t key_at = sc->i;
  GString *str = g_string_new(NULL);
  fap_status status = scan_string(sc, str);
  if (status == FAP_OK && g_hash_table_contains(keys, str->str)) {
    sc->i = key_at;
    if (depth > 1) status = scan_fail(sc, "entry '%s': duplicate key '%s'", parent, str->str);
    else if (!strcmp(str->str, "__metadata__"))
      status = scan_fail(sc, "'__metadata__' appears twice");
    else status = scan_fail(sc, "duplicate tensor name '%s'", str->str);
  }
  if (status != FAP_OK) {
    g_string_free(str, TRUE);
    return status;
  }
  char *k = g_string_free(str, FALSE);
  g_hash_table_add(keys, k);
  *key = k;
  sc->top_keys += depth == 1;
  skip_ws(sc);
  if (!at(sc, ':')) return scan_expected(sc, "':'");
  sc->i++;
  return FAP_OK;
}

/* An object or array, from its opening bracket; parent names the entry it is under. */
static fap_status scan_container(scan *sc, int depth, const char *parent) {
  int object = at(sc, '{');
  char end = object ? '}' : ']';
  GHashTable *keys = object ? g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL) : NULL;
  const char *key = parent;
  fap_status status = FAP_OK;
  sc->i++;
  skip_ws(sc);
  for (int more = !at(sc, end); more && status == FAP_OK;) {
    skip_ws(sc);
    if (object) status = scan_key(sc, keys, depth, parent, &key);
    if (status == FAP_OK) status = scan_value(sc, depth + 1, key);
    skip_ws(sc);
    if ((more = at(sc, ','))) sc->i++;
  }
  if (status == FAP_OK && !at(sc, end))
    status = scan_expected(sc, object ? "',' or '}'" : "',' or ']'");
  if (status == FAP_OK) sc->i++;
  if (keys) g_hash_table_destroy(keys);
  return status;
}

static fap_status scan_value(scan *sc, int depth, const char *key) {
  static const char *const literals[] = {"true", "false", "null"};
  skip_ws(sc);
  if (at(sc, '{') || at(sc, '[')) {
    if (depth > ST_MAX_DEPTH)
      return scan_fail(sc, "JSON nested deeper than %d levels", ST_MAX_DEPTH);
    return scan_container(sc, depth, key);
  }
  if (at(sc, '"')) return scan_string(sc, NULL);
  if (at(sc, '-') || at_digit(sc)) return scan_number(sc);
  for (size_t k = 0; k < G_N_ELEMENTS(literals); k++) {
    size_t len = strlen(literals[k]);
    if (sc->n - sc->i >= len && !memcmp(sc->s + sc->i, literals[k], len)) {
      sc->i += len;
      return FAP_OK;
    }
  }
  return scan_expected(sc, "a value");
}

/* ---- header entries ---------------------------------------------------------- */

static const char *node_kind(JsonNode *node) {
  switch (json_node_get_node_type(node)) {
  case JSON_NODE_OBJECT: return "an object";
  case JSON_NODE_ARRAY: return "an array";
  case JSON_NODE_NULL: return "null";
  case JSON_NODE_VALUE: break;
  }
  GType type = json_node_get_value_type(node);
  if (type == G_TYPE_STRING) return "a string";
  if (type == G_TYPE_INT64) return "an integer";
  if (type == G_TYPE_DOUBLE) return "a non-integer number";
  if (type == G_TYPE_BOOLEAN) return "a boolean";
  return "a value";
}

static int node_is(JsonNode *node, GType type) {
  return JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == type;
}

static const char *shape_str(const fap_st_tensor *t, char *buf, size_t size) {
  size_t len = (size_t)snprintf(buf, size, "[");
  for (int d = 0; d < t->ndim && len < size; d++)
    len += (size_t)snprintf(buf + len, size - len, "%s%" PRId64, d ? ", " : "", t->shape[d]);
  if (len < size) snprintf(buf + len, size - len, "]");
  return buf;
}

/* Reads an array of n non-negative integers (shape, data_offsets) into out. */
static fap_status read_ints(const char *label, const char *name, const char *field,
                            JsonArray *arr, guint n, int64_t *out) {
  for (guint k = 0; k < n; k++) {
    JsonNode *node = json_array_get_element(arr, k);
    if (!node_is(node, G_TYPE_INT64))
      return bad(label, name, "%s[%u] is %s, expected a non-negative integer", field, k,
                 node_kind(node));
    if ((out[k] = json_node_get_int(node)) < 0)
      return bad(label, name, "%s[%u] is %" PRId64 ", expected a non-negative integer", field, k,
                 out[k]);
  }
  return FAP_OK;
}

static fap_status parse_entry(const char *label, const char *name, JsonNode *node,
                              uint64_t data_size, st_entry *e) {
  static const char *const fields[] = {"dtype", "shape", "data_offsets"};
  if (!*name) return bad(label, NULL, "a tensor has an empty name");
  if (!JSON_NODE_HOLDS_OBJECT(node))
    return bad(label, NULL, "tensor '%s' is %s, expected an object with dtype, shape and "
               "data_offsets", name, node_kind(node));
  JsonObject *obj = json_node_get_object(node);
  JsonObjectIter it;
  const char *key;
  JsonNode *value;
  json_object_iter_init_ordered(&it, obj);
  while (json_object_iter_next_ordered(&it, &key, &value))
    if (strcmp(key, fields[0]) && strcmp(key, fields[1]) && strcmp(key, fields[2]))
      return bad(label, name, "unknown field '%s' (expected only dtype, shape and data_offsets)",
                 key);
  for (size_t k = 0; k < G_N_ELEMENTS(fields); k++)
    if (!json_object_has_member(obj, fields[k]))
      return bad(label, name, "missing field '%s'", fields[k]);

  value = json_object_get_member(obj, "dtype");
  if (!node_is(value, G_TYPE_STRING))
    return bad(label, name, "dtype is %s, expected a string such as \"F32\"", node_kind(value));
  const char *dtype = json_node_get_string(value);
  int d = FAP_DTYPE_F32;
  while (d <= FAP_DTYPE_U8 && strcmp(dtype, fap_dtype_name((fap_dtype)d))) d++;
  if (d > FAP_DTYPE_U8)
    return bad(label, name, "dtype '%s' is not supported (expected F32, F16, BF16, I32, I64 or "
               "U8)", dtype);
  e->t.dtype = (fap_dtype)d;

  value = json_object_get_member(obj, "shape");
  if (!JSON_NODE_HOLDS_ARRAY(value))
    return bad(label, name, "shape is %s, expected an array of non-negative integers",
               node_kind(value));
  guint ndim = json_array_get_length(json_node_get_array(value));
  if (ndim > FAP_MAX_DIMS)
    return bad(label, name, "shape has %u dimensions, at most %d are supported", ndim,
               FAP_MAX_DIMS);
  e->t.ndim = (int)ndim;
  fap_status status = read_ints(label, name, "shape", json_node_get_array(value), ndim, e->t.shape);
  if (status != FAP_OK) return status;

  value = json_object_get_member(obj, "data_offsets");
  if (!JSON_NODE_HOLDS_ARRAY(value))
    return bad(label, name, "data_offsets is %s, expected [begin, end]", node_kind(value));
  guint n = json_array_get_length(json_node_get_array(value));
  if (n != 2) return bad(label, name, "data_offsets has %u elements, expected 2 ([begin, end])", n);
  int64_t off[2];
  if ((status = read_ints(label, name, "data_offsets", json_node_get_array(value), 2, off)))
    return status;
  e->begin = (uint64_t)off[0];
  e->end = (uint64_t)off[1];
  if (e->begin > e->end)
    return bad(label, name, "data_offsets [%" PRIu64 ", %" PRIu64 "] begin after they end",
               e->begin, e->end);

  /* element count, then bytes, refusing to wrap (in order, like the Rust reader) */
  char shape[256];
  int64_t numel = 1;
  for (int k = 0; k < e->t.ndim; k++) {
    if (e->t.shape[k] != 0 && numel > INT64_MAX / e->t.shape[k])
      return bad(label, name, "shape %s has more elements than fit in 64 bits",
                 shape_str(&e->t, shape, sizeof shape));
    numel *= e->t.shape[k];
  }
  int64_t esize = (int64_t)fap_dtype_size(e->t.dtype);
  if (numel > INT64_MAX / esize)
    return bad(label, name, "%s %s needs more bytes than fit in 64 bits", dtype,
               shape_str(&e->t, shape, sizeof shape));
  uint64_t nbytes = (uint64_t)(numel * esize);
  if (nbytes != e->end - e->begin)
    return bad(label, name, "data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64 " bytes but "
               "%s %s needs %" PRIu64, e->begin, e->end, e->end - e->begin, dtype,
               shape_str(&e->t, shape, sizeof shape), nbytes);
  if (e->end > data_size)
    return bad(label, name, "data_offsets [%" PRIu64 ", %" PRIu64 "] run past the end of the "
               "%" PRIu64 "-byte data area: truncated file?", e->begin, e->end, data_size);
  e->t.numel = numel;
  e->t.nbytes = (size_t)nbytes;
  return FAP_OK;
}

static fap_status parse_metadata(fap_safetensors *st, JsonNode *node) {
  if (!JSON_NODE_HOLDS_OBJECT(node))
    return bad(st->label, NULL, "__metadata__ is %s, expected an object of strings",
               node_kind(node));
  JsonObject *obj = json_node_get_object(node);
  st->meta_keys = g_new0(const char *, json_object_get_size(obj));
  st->meta_values = g_new0(const char *, json_object_get_size(obj));
  JsonObjectIter it;
  const char *key;
  JsonNode *value;
  json_object_iter_init_ordered(&it, obj);
  while (json_object_iter_next_ordered(&it, &key, &value)) {
    if (!node_is(value, G_TYPE_STRING))
      return bad(st->label, NULL, "__metadata__ '%s' is %s, expected a string", key,
                 node_kind(value));
    st->meta_keys[st->meta_count] = g_string_chunk_insert(st->strings, key);
    st->meta_values[st->meta_count++] =
        g_string_chunk_insert(st->strings, json_node_get_string(value));
  }
  return FAP_OK;
}

static int entry_cmp(const void *pa, const void *pb) {
  const st_entry *a = pa, *b = pb;
  if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
  if (a->end != b->end) return a->end < b->end ? -1 : 1;
  return a->order < b->order ? -1 : a->order > b->order;
}

/* Entries sorted by offset must tile the data area exactly. */
static fap_status check_layout(const fap_safetensors *st, uint64_t data_size) {
  uint64_t pos = 0;
  const st_entry *prev = NULL;
  for (size_t k = 0; k < st->count; prev = &st->entries[k], pos = prev->end, k++) {
    const st_entry *e = &st->entries[k];
    if (e->begin < pos)
      return bad(st->label, e->t.name, "data_offsets [%" PRIu64 ", %" PRIu64 "] overlap tensor "
                 "'%s' [%" PRIu64 ", %" PRIu64 "]", e->begin, e->end, prev->t.name, prev->begin,
                 prev->end);
    if (e->begin > pos && prev)
      return bad(st->label, NULL, "%" PRIu64 "-byte gap in the data area between tensor '%s' "
                 "(ends at %" PRIu64 ") and tensor '%s' (begins at %" PRIu64 ")", e->begin - pos,
                 prev->t.name, pos, e->t.name, e->begin);
    if (e->begin > pos)
      return bad(st->label, NULL, "%" PRIu64 "-byte gap at the start of the data area, before "
                 "tensor '%s'", e->begin, e->t.name);
  }
  if (pos != data_size)
    return bad(st->label, NULL, "data area has %" PRIu64 " trailing bytes not covered by any "
               "tensor (tensors end at %" PRIu64 " of %" PRIu64 ")", data_size - pos, pos,
               data_size);
  return FAP_OK;
}

static fap_status parse(fap_safetensors *st, const uint8_t *data, size_t size) {
  const char *label = st->label;
  if (size < 8)
    return bad(label, NULL, "file is %zu bytes, too short for the 8-byte header length: "
               "truncated or not a safetensors file", size);
  uint64_t hlen = 0;
  for (int k = 7; k >= 0; k--) hlen = hlen << 8 | data[k];
  if (hlen < 2)
    return bad(label, NULL, "header length %" PRIu64 " is below the minimum of 2 (\"{}\")", hlen);
  if (hlen > FAP_ST_MAX_HEADER)
    return bad(label, NULL, "header length %" PRIu64 " exceeds the limit of %u bytes: corrupt or "
               "not a safetensors file", hlen, FAP_ST_MAX_HEADER);
  if (hlen > size - 8)
    return bad(label, NULL, "header length %" PRIu64 " runs past the end of the file (%zu bytes "
               "follow the length field): truncated", hlen, size - 8);
  const char *h = (const char *)data + 8, *invalid;
  scan sc = {h, label, (size_t)hlen, 0, 0};
  if (!at(&sc, '{')) return scan_expected(&sc, "'{' (the header must be a JSON object)");
  if (!g_utf8_validate(h, (gssize)hlen, &invalid)) {
    sc.i = (size_t)(invalid - h);
    return scan_fail(&sc, "not valid UTF-8 (or a NUL byte)");
  }
  fap_status status = scan_value(&sc, 1, NULL);
  if (status != FAP_OK) return status;
  skip_ws(&sc);
  if (sc.i < sc.n) return scan_fail(&sc, "content after the header object (only whitespace may "
                                         "follow it)");

  /* the copy ends in a NUL, so json-glib cannot read past the header */
  char *text = g_strndup(h, (gsize)hlen);
  JsonParser *parser = json_parser_new_immutable();
  GError *err = NULL;
  JsonObject *obj = NULL;
  if (!json_parser_load_from_data(parser, text, (gssize)hlen, &err)) {
    status = bad(label, NULL, "header is not valid JSON: %s", err->message);
    g_error_free(err);
    goto out;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (root && JSON_NODE_HOLDS_OBJECT(root)) obj = json_node_get_object(root);
  if (!obj || json_object_get_size(obj) != sc.top_keys) { /* cannot happen after the scan */
    status = bad(label, NULL, "header has %zu entries but json-glib read %u", sc.top_keys,
                 obj ? json_object_get_size(obj) : 0);
    goto out;
  }
  uint64_t data_size = size - 8 - hlen;
  st->entries = g_new0(st_entry, sc.top_keys);
  JsonObjectIter it;
  const char *name;
  JsonNode *value;
  json_object_iter_init_ordered(&it, obj);
  while (status == FAP_OK && json_object_iter_next_ordered(&it, &name, &value)) {
    if (!strcmp(name, "__metadata__")) {
      status = parse_metadata(st, value);
      continue;
    }
    st_entry *e = &st->entries[st->count];
    e->order = st->count++;
    e->t.name = g_string_chunk_insert(st->strings, name);
    status = parse_entry(label, name, value, data_size, e);
  }
  if (status != FAP_OK) goto out;
  if (st->count) qsort(st->entries, st->count, sizeof *st->entries, entry_cmp);
  if ((status = check_layout(st, data_size)) != FAP_OK) goto out;
  st->by_name = g_hash_table_new(g_str_hash, g_str_equal);
  for (size_t k = 0; k < st->count; k++) {
    st->entries[k].t.data = data + 8 + hlen + st->entries[k].begin;
    g_hash_table_insert(st->by_name, (gpointer)st->entries[k].t.name, &st->entries[k]);
  }
out:
  g_object_unref(parser);
  g_free(text);
  return status;
}

/* ---- public API ------------------------------------------------------------ */

static fap_safetensors *st_new(const char *label) {
  fap_safetensors *st = g_new0(fap_safetensors, 1);
  st->label = g_strdup(label);
  st->strings = g_string_chunk_new(1024);
  st->fd = -1;
  return st;
}

fap_status fap_safetensors_open_memory(const void *data, size_t size, const char *label,
                                       fap_safetensors **out) {
  if (!out) return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_safetensors_open_memory: out is NULL");
  *out = NULL;
  if (!data && size)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_safetensors_open_memory: data is NULL");
  fap_safetensors *st = st_new(label ? label : "<memory>");
  fap_status status = parse(st, data ? data : (const void *)"", size);
  if (status != FAP_OK) {
    fap_safetensors_close(st);
    return status;
  }
  *out = st;
  return FAP_OK;
}

fap_status fap_safetensors_open(const char *path, fap_safetensors **out) {
  if (!out) return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_safetensors_open: out is NULL");
  *out = NULL;
  if (!path) return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_safetensors_open: path is NULL");
  /* O_NONBLOCK: a FIFO or device must not hang the open; fstat then rejects it */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return fap_fail(FAP_ERR_IO, "%s: cannot open: %s", path, g_strerror(errno));
  struct stat sb;
  fap_status status = FAP_OK;
  if (fstat(fd, &sb) != 0)
    status = fap_fail(FAP_ERR_IO, "%s: cannot stat: %s", path, g_strerror(errno));
  else if (S_ISDIR(sb.st_mode))
    status = fap_fail(FAP_ERR_IO, "%s: is a directory, expected a safetensors file", path);
  else if (!S_ISREG(sb.st_mode))
    status = fap_fail(FAP_ERR_IO, "%s: is not a regular file", path);
  else if ((uint64_t)sb.st_size > SIZE_MAX)
    status = fap_fail(FAP_ERR_IO, "%s: too large to map", path);
  size_t size = status == FAP_OK ? (size_t)sb.st_size : 0;
  void *map = NULL;
  /* too short files get their FORMAT error from parse(); mmap cannot map 0 bytes */
  if (status == FAP_OK && size >= 8) {
    map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      map = NULL;
      status = fap_fail(FAP_ERR_IO, "%s: cannot map %zu bytes: %s", path, size, g_strerror(errno));
    }
  }
  if (status != FAP_OK) {
    close(fd);
    return status;
  }
  fap_safetensors *st = st_new(path);
  st->map = map;
  st->map_size = size;
  st->fd = fd;
  st->size = sb.st_size;
  st->mtime = sb.st_mtim;
  status = parse(st, map ? map : (const void *)"", size);
  if (status != FAP_OK) {
    fap_safetensors_close(st);
    return status;
  }
  *out = st;
  return FAP_OK;
}

void fap_safetensors_close(fap_safetensors *st) {
  if (!st) return;
  if (st->map) munmap(st->map, st->map_size);
  if (st->fd >= 0) close(st->fd);
  if (st->by_name) g_hash_table_destroy(st->by_name);
  g_free(st->entries);
  g_free(st->meta_keys);
  g_free(st->meta_values);
  g_string_chunk_free(st->strings);
  g_free(st->label);
  g_free(st);
}

size_t fap_safetensors_count(const fap_safetensors *st) { return st ? st->count : 0; }

const fap_st_tensor *fap_safetensors_tensor(const fap_safetensors *st, size_t index) {
  return st && index < st->count ? &st->entries[index].t : NULL;
}

const fap_st_tensor *fap_safetensors_find(const fap_safetensors *st, const char *name) {
  if (!st || !name || !st->by_name) return NULL;
  const st_entry *e = g_hash_table_lookup(st->by_name, name);
  return e ? &e->t : NULL;
}

const char *fap_safetensors_metadata(const fap_safetensors *st, const char *key) {
  for (size_t k = 0; st && key && k < st->meta_count; k++)
    if (!strcmp(st->meta_keys[k], key)) return st->meta_values[k];
  return NULL;
}

size_t fap_safetensors_metadata_count(const fap_safetensors *st) { return st ? st->meta_count : 0; }

const char *fap_safetensors_metadata_key(const fap_safetensors *st, size_t index) {
  return st && index < st->meta_count ? st->meta_keys[index] : NULL;
}

const char *fap_safetensors_label(const fap_safetensors *st) { return st ? st->label : NULL; }

void fap_safetensors_drop(const fap_safetensors *st, const fap_st_tensor *t) {
  if (!st || !st->map || !t || !t->nbytes)
    return;
  /* whole pages inside the tensor only: neighbours may still be needed */
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t begin = ((uintptr_t)t->data + page - 1) & ~(page - 1);
  uintptr_t end = ((uintptr_t)t->data + t->nbytes) & ~(page - 1);
  if (end > begin)
    madvise((void *)begin, end - begin, MADV_DONTNEED);
}

static void widen_bytes(float *dst, const void *src, fap_dtype dtype, size_t n) {
  if (dtype == FAP_DTYPE_F32)
    memcpy(dst, src, n * sizeof(float));
  else if (dtype == FAP_DTYPE_F16)
    fap_widen_f16(dst, src, n);
  else
    fap_widen_bf16(dst, src, n);
}

fap_status fap_safetensors_widen(const fap_safetensors *st, const fap_st_tensor *t, size_t first,
                                 size_t count, float *dst) {
  if (!st || !t || !dst || first > (size_t)t->numel || count > (size_t)t->numel - first)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "fap_safetensors_widen: bad arguments");
  if (t->dtype != FAP_DTYPE_F32 && t->dtype != FAP_DTYPE_F16 && t->dtype != FAP_DTYPE_BF16)
    return fap_fail(FAP_ERR_INVALID_ARGUMENT, "%s: tensor '%s' has dtype %s, not a float type",
                    st->label, t->name, fap_dtype_name(t->dtype));
  const size_t es = fap_dtype_size(t->dtype);
  if (st->fd < 0) {
    widen_bytes(dst, (const uint8_t *)t->data + first * es, t->dtype, count);
    return FAP_OK;
  }
  struct stat sb;
  if (fstat(st->fd, &sb) != 0 || sb.st_size != st->size || sb.st_mtim.tv_sec != st->mtime.tv_sec ||
      sb.st_mtim.tv_nsec != st->mtime.tv_nsec)
    return fap_fail(FAP_ERR_IO,
                    "%s: the file was written over since it was loaded, so its weights can no "
                    "longer be read; load the model again (replace model files by renaming a "
                    "new file over them, never by writing into them)",
                    st->label);
  /* in chunks through a bounce buffer: at most 1 MiB of file bytes at a time */
  enum { CHUNK = 1 << 20 };
  uint8_t *bounce = g_malloc(CHUNK);
  const size_t per = CHUNK / es;
  off_t at = (off_t)((const uint8_t *)t->data - (const uint8_t *)st->map) + (off_t)(first * es);
  fap_status status = FAP_OK;
  for (size_t done = 0; done < count && !status;) {
    const size_t n = count - done < per ? count - done : per;
    size_t got = 0;
    while (got < n * es) {
      ssize_t r = pread(st->fd, bounce + got, n * es - got, at + (off_t)got);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0) {
        status = fap_fail(FAP_ERR_IO, "%s: cannot read tensor '%s': %s", st->label, t->name,
                          r < 0 ? g_strerror(errno) : "the file is shorter than when it was loaded");
        break;
      }
      got += (size_t)r;
    }
    if (!status)
      widen_bytes(dst + done, bounce, t->dtype, n);
    done += n;
    at += (off_t)(n * es);
  }
  g_free(bounce);
  return status;
}
