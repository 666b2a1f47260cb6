/* Strict safetensors reader; safetensors.h lists the rules it enforces.
 *
 * json-glib builds the tree, but it is lenient: it takes single quotes, hex numbers,
 * comments, several top-level values, wraps integers past 64 bits and keeps the last of
 * duplicate keys. So a small strict RFC 8259 scanner runs first and rejects all of that,
 * and checks for duplicate keys in every object on the way. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "safetensors.h"

#include "log.h"

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
  GStringChunk *strings; /* every name, key and value below */
  st_entry *entries;     /* ascending data offset */
  size_t count;
  GHashTable *by_name; /* name -> st_entry *, keys borrowed */
  const char **meta_keys, **meta_values;
  size_t meta_count;
};

/* ---- strict JSON scanner ------------------------------------------------ */

typedef struct {
  const char *s;
  size_t n, i;
  const char *label;
  size_t top_keys;
} scan;

static fap_status scan_fail(const scan *sc, const char *fmt, ...) FAP_PRINTF(2, 3);
static fap_status scan_fail(const scan *sc, const char *fmt, ...) {
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return fap_fail(FAP_ERR_FORMAT, "%s: header byte %zu: %s", sc->label, sc->i, what);
}

static fap_status scan_expected(const scan *sc, const char *expected) {
  if (sc->i >= sc->n) return scan_fail(sc, "header ends early, expected %s", expected);
  unsigned char c = (unsigned char)sc->s[sc->i];
  if (g_ascii_isprint(c)) return scan_fail(sc, "unexpected '%c', expected %s", c, expected);
  return scan_fail(sc, "unexpected byte 0x%02x, expected %s", c, expected);
}

static void skip_ws(scan *sc) {
  while (sc->i < sc->n && sc->s[sc->i] && strchr(" \t\n\r", sc->s[sc->i])) sc->i++;
}

static int at(const scan *sc, char c) { return sc->i < sc->n && sc->s[sc->i] == c; }
static int at_digit(const scan *sc) { return sc->i < sc->n && g_ascii_isdigit(sc->s[sc->i]); }

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

/* Scans the string at sc->i (on its opening quote); decodes it into out if not NULL. */
static fap_status scan_string(scan *sc, GString *out) {
  static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
  sc->i++;
  while (sc->i < sc->n) {
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
  int integer = 1;
  if (at(sc, '-')) sc->i++;
  if (!at_digit(sc)) return scan_expected(sc, "a digit");
  size_t digits = sc->i;
  if (at(sc, '0') && sc->i + 1 < sc->n && g_ascii_isdigit(sc->s[sc->i + 1]))
    return scan_fail(sc, "numbers must not have leading zeros");
  while (at_digit(sc)) sc->i++;
  size_t digits_end = sc->i;
  if (at(sc, '.')) {
    integer = 0;
    sc->i++;
    if (!at_digit(sc)) return scan_expected(sc, "a digit after '.'");
    while (at_digit(sc)) sc->i++;
  }
  if (at(sc, 'e') || at(sc, 'E')) {
    integer = 0;
    sc->i++;
    if (at(sc, '+') || at(sc, '-')) sc->i++;
    if (!at_digit(sc)) return scan_expected(sc, "a digit in the exponent");
    while (at_digit(sc)) sc->i++;
  }
  /* json-glib would silently wrap larger integers */
  uint64_t v = 0;
  for (size_t k = digits; integer && k < digits_end; k++) {
    unsigned d = (unsigned)(sc->s[k] - '0');
    if (v > ((uint64_t)INT64_MAX - d) / 10) {
      sc->i = start;
      return scan_fail(sc, "integer %.*s does not fit in 64 bits",
                       (int)MIN(digits_end - start, 40), sc->s + start);
    }
    v = v * 10 + d;
  }
  return FAP_OK;
}

static fap_status scan_value(scan *sc, int depth, const char *key);

static fap_status dup_fail(const scan *sc, int depth, const char *parent, const char *key) {
  if (depth > 1) return scan_fail(sc, "entry '%s': duplicate key '%s'", parent ? parent : "", key);
  if (!strcmp(key, "__metadata__")) return scan_fail(sc, "'__metadata__' appears twice");
  return scan_fail(sc, "duplicate tensor name '%s'", key);
}

static fap_status scan_object(scan *sc, int depth, const char *parent) {
  GHashTable *keys = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  fap_status status = FAP_OK;
  sc->i++;
  skip_ws(sc);
  if (at(sc, '}')) {
    sc->i++;
    goto out;
  }
  for (;;) {
    skip_ws(sc);
    if (!at(sc, '"')) {
      status = scan_expected(sc, "a string key");
      goto out;
    }
    size_t key_at = sc->i;
    GString *key = g_string_new(NULL);
    status = scan_string(sc, key);
    if (status == FAP_OK && g_hash_table_contains(keys, key->str)) {
      sc->i = key_at;
      status = dup_fail(sc, depth, parent, key->str);
    }
    if (status != FAP_OK) {
      g_string_free(key, TRUE);
      goto out;
    }
    char *k = g_string_free(key, FALSE);
    g_hash_table_add(keys, k);
    if (depth == 1) sc->top_keys++;
    skip_ws(sc);
    if (!at(sc, ':')) {
      status = scan_expected(sc, "':'");
      goto out;
    }
    sc->i++;
    if ((status = scan_value(sc, depth + 1, k)) != FAP_OK) goto out;
    skip_ws(sc);
    if (at(sc, '}')) break;
    if (!at(sc, ',')) {
      status = scan_expected(sc, "',' or '}'");
      goto out;
    }
    sc->i++;
  }
  sc->i++;
out:
  g_hash_table_destroy(keys);
  return status;
}

static fap_status scan_array(scan *sc, int depth, const char *parent) {
  sc->i++;
  skip_ws(sc);
  if (at(sc, ']')) {
    sc->i++;
    return FAP_OK;
  }
  for (;;) {
    fap_status status = scan_value(sc, depth + 1, parent);
    if (status != FAP_OK) return status;
    skip_ws(sc);
    if (at(sc, ']')) break;
    if (!at(sc, ',')) return scan_expected(sc, "',' or ']'");
    sc->i++;
  }
  sc->i++;
  return FAP_OK;
}

static fap_status scan_value(scan *sc, int depth, const char *key) {
  static const char *const literals[] = {"true", "false", "null"};
  skip_ws(sc);
  if (at(sc, '{') || at(sc, '[')) {
    if (depth > ST_MAX_DEPTH) return scan_fail(sc, "JSON nested deeper than %d levels", ST_MAX_DEPTH);
    return at(sc, '{') ? scan_object(sc, depth, key) : scan_array(sc, depth, key);
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

/* ---- header entries ------------------------------------------------------- */

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

/* Reads one [begin, end] or shape element: a non-negative integer. */
static fap_status read_index(const char *label, const char *name, const char *field, guint k,
                             JsonNode *node, int64_t *out) {
  if (!node_is(node, G_TYPE_INT64))
    return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': %s[%u] is %s, expected a non-negative integer",
                    label, name, field, k, node_kind(node));
  *out = json_node_get_int(node);
  if (*out < 0)
    return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': %s[%u] is %" PRId64
                    ", expected a non-negative integer", label, name, field, k, *out);
  return FAP_OK;
}

static fap_status parse_entry(const char *label, const char *name, JsonNode *node,
                              uint64_t data_size, st_entry *e) {
  static const char *const fields[] = {"dtype", "shape", "data_offsets"};
  char shape[256];
  fap_status status;
  if (!*name) return fap_fail(FAP_ERR_FORMAT, "%s: a tensor has an empty name", label);
  if (!JSON_NODE_HOLDS_OBJECT(node))
    return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s' is %s, expected an object with dtype, shape "
                    "and data_offsets", label, name, node_kind(node));
  JsonObject *obj = json_node_get_object(node);
  JsonObjectIter it;
  const char *key;
  JsonNode *value;
  json_object_iter_init_ordered(&it, obj);
  while (json_object_iter_next_ordered(&it, &key, &value))
    if (strcmp(key, fields[0]) && strcmp(key, fields[1]) && strcmp(key, fields[2]))
      return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': unknown field '%s' (expected only dtype, "
                      "shape and data_offsets)", label, name, key);
  for (size_t k = 0; k < G_N_ELEMENTS(fields); k++)
    if (!json_object_has_member(obj, fields[k]))
      return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': missing field '%s'", label, name, fields[k]);

  value = json_object_get_member(obj, "dtype");
  if (!node_is(value, G_TYPE_STRING))
    return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': dtype is %s, expected a string such as \"F32\"",
                    label, name, node_kind(value));
  const char *dtype = json_node_get_string(value);
  int found = 0;
  for (int d = FAP_DTYPE_F32; d <= FAP_DTYPE_U8 && !found; d++)
    if (!strcmp(dtype, fap_dtype_name((fap_dtype)d))) e->t.dtype = (fap_dtype)d, found = 1;
  if (!found)
    return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': dtype '%s' is not supported (expected F32, "
                    "F16, BF16, I32, I64 or U8)", label, name, dtype);

  value = json_object_get_member(obj, "shape");
  if (!JSON_NODE_HOLDS_ARRAY(value))
    return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': shape is %s, expected an array of "
                    "non-negative integers", label, name, node_kind(value));
  JsonArray *arr = json_node_get_array(value);
  guint ndim = json_array_get_length(arr);
  if (ndim > FAP_MAX_DIMS)
    return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': shape has %u dimensions, at most %d are "
                    "supported", label, name, ndim, FAP_MAX_DIMS);
  e->t.ndim = (int)ndim;
  for (guint d = 0; d < ndim; d++)
    if ((status = read_index(label, name, "shape", d, json_array_get_element(arr, d),
                             &e->t.shape[d])) != FAP_OK)
      return status;

  value = json_object_get_member(obj, "data_offsets");
  if (!JSON_NODE_HOLDS_ARRAY(value))
    return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': data_offsets is %s, expected [begin, end]",
                    label, name, node_kind(value));
  if (json_array_get_length(json_node_get_array(value)) != 2)
    return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': data_offsets has %u elements, expected 2 "
                    "([begin, end])", label, name, json_array_get_length(json_node_get_array(value)));
  arr = json_node_get_array(value);
  int64_t off[2];
  for (guint k = 0; k < 2; k++)
    if ((status = read_index(label, name, "data_offsets", k, json_array_get_element(arr, k),
                             &off[k])) != FAP_OK)
      return status;
  e->begin = (uint64_t)off[0];
  e->end = (uint64_t)off[1];
  if (e->begin > e->end)
    return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                    "] begin after they end", label, name, e->begin, e->end);

  /* element count and byte size, refusing to wrap (like the Rust reader, in order) */
  int64_t numel = 1;
  for (int d = 0; d < e->t.ndim; d++) {
    int64_t dim = e->t.shape[d];
    if (dim != 0 && numel > INT64_MAX / dim)
      return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': shape %s has more elements than fit in "
                      "64 bits", label, name, shape_str(&e->t, shape, sizeof shape));
    numel *= dim;
  }
  int64_t esize = (int64_t)fap_dtype_size(e->t.dtype);
  if (numel > INT64_MAX / esize)
    return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': %s %s needs more bytes than fit in 64 bits",
                    label, name, dtype, shape_str(&e->t, shape, sizeof shape));
  uint64_t nbytes = (uint64_t)(numel * esize);
  if (nbytes != e->end - e->begin)
    return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                    "] hold %" PRIu64 " bytes but %s %s needs %" PRIu64, label, name, e->begin,
                    e->end, e->end - e->begin, dtype, shape_str(&e->t, shape, sizeof shape), nbytes);
  if (e->end > data_size)
    return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                    "] run past the end of the %" PRIu64 "-byte data area: truncated file?",
                    label, name, e->begin, e->end, data_size);
  e->t.numel = numel;
  e->t.nbytes = (size_t)nbytes;
  return FAP_OK;
}

static fap_status parse_metadata(fap_safetensors *st, JsonNode *node) {
  if (!JSON_NODE_HOLDS_OBJECT(node))
    return fap_fail(FAP_ERR_FORMAT, "%s: __metadata__ is %s, expected an object of strings",
                    st->label, node_kind(node));
  JsonObject *obj = json_node_get_object(node);
  st->meta_keys = g_new0(const char *, json_object_get_size(obj));
  st->meta_values = g_new0(const char *, json_object_get_size(obj));
  JsonObjectIter it;
  const char *key;
  JsonNode *value;
  json_object_iter_init_ordered(&it, obj);
  while (json_object_iter_next_ordered(&it, &key, &value)) {
    if (!node_is(value, G_TYPE_STRING))
      return fap_fail(FAP_ERR_FORMAT, "%s: __metadata__ '%s' is %s, expected a string", st->label,
                      key, node_kind(value));
    st->meta_keys[st->meta_count] = g_string_chunk_insert(st->strings, key);
    st->meta_values[st->meta_count++] = g_string_chunk_insert(st->strings, json_node_get_string(value));
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
  for (size_t k = 0; k < st->count; k++) {
    const st_entry *e = &st->entries[k];
    if (e->begin < pos)
      return fap_fail(FAP_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                      "] overlap tensor '%s' [%" PRIu64 ", %" PRIu64 "]", st->label, e->t.name,
                      e->begin, e->end, prev->t.name, prev->begin, prev->end);
    if (e->begin > pos && prev)
      return fap_fail(FAP_ERR_FORMAT, "%s: %" PRIu64 "-byte gap in the data area between tensor "
                      "'%s' (ends at %" PRIu64 ") and tensor '%s' (begins at %" PRIu64 ")",
                      st->label, e->begin - pos, prev->t.name, pos, e->t.name, e->begin);
    if (e->begin > pos)
      return fap_fail(FAP_ERR_FORMAT, "%s: %" PRIu64 "-byte gap at the start of the data area, "
                      "before tensor '%s'", st->label, e->begin, e->t.name);
    pos = e->end;
    prev = e;
  }
  if (pos != data_size)
    return fap_fail(FAP_ERR_FORMAT, "%s: data area has %" PRIu64 " trailing bytes not covered by "
                    "any tensor (tensors end at %" PRIu64 " of %" PRIu64 ")", st->label,
                    data_size - pos, pos, data_size);
  return FAP_OK;
}

static fap_status parse(fap_safetensors *st, const uint8_t *data, size_t size) {
  const char *label = st->label;
  if (size < 8)
    return fap_fail(FAP_ERR_FORMAT, "%s: file is %zu bytes, too short for the 8-byte header "
                    "length: truncated or not a safetensors file", label, size);
  uint64_t hlen = 0;
  for (int k = 7; k >= 0; k--) hlen = hlen << 8 | data[k];
  if (hlen < 2)
    return fap_fail(FAP_ERR_FORMAT, "%s: header length %" PRIu64 " is below the minimum of 2 "
                    "(\"{}\")", label, hlen);
  if (hlen > FAP_ST_MAX_HEADER)
    return fap_fail(FAP_ERR_FORMAT, "%s: header length %" PRIu64 " exceeds the limit of %u bytes: "
                    "corrupt or not a safetensors file", label, hlen, FAP_ST_MAX_HEADER);
  if (hlen > size - 8)
    return fap_fail(FAP_ERR_FORMAT, "%s: header length %" PRIu64 " runs past the end of the file "
                    "(%zu bytes follow the length field): truncated", label, hlen, size - 8);
  const char *h = (const char *)data + 8, *bad;
  unsigned char first = (unsigned char)h[0];
  if (first != '{' && g_ascii_isprint(first))
    return fap_fail(FAP_ERR_FORMAT, "%s: header is not a JSON object: it starts with '%c', "
                    "expected '{'", label, first);
  if (first != '{')
    return fap_fail(FAP_ERR_FORMAT, "%s: header is not a JSON object: it starts with byte 0x%02x, "
                    "expected '{'", label, first);
  if (!g_utf8_validate(h, (gssize)hlen, &bad))
    return fap_fail(FAP_ERR_FORMAT, "%s: header byte %td: not valid UTF-8 (or a NUL byte)", label,
                    bad - h);
  scan sc = {h, (size_t)hlen, 0, label, 0};
  fap_status status = scan_value(&sc, 1, NULL);
  if (status != FAP_OK) return status;
  skip_ws(&sc);
  if (sc.i < sc.n) return scan_fail(&sc, "content after the header object (only whitespace may follow it)");

  /* the copy ends in a NUL, so json-glib never reads past the header */
  char *text = g_strndup(h, (gsize)hlen);
  JsonParser *parser = json_parser_new_immutable();
  GError *err = NULL;
  if (!json_parser_load_from_data(parser, text, (gssize)hlen, &err)) {
    status = fap_fail(FAP_ERR_FORMAT, "%s: header is not valid JSON: %s", label, err->message);
    g_error_free(err);
    goto out;
  }
  JsonNode *root = json_parser_get_root(parser);
  JsonObject *obj = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  if (!obj || json_object_get_size(obj) != sc.top_keys) {
    status = fap_fail(FAP_ERR_FORMAT, "%s: header has %zu entries but json-glib read %u", label,
                      sc.top_keys, obj ? json_object_get_size(obj) : 0);
    goto out;
  }
  uint64_t data_size = size - 8 - hlen;
  st->entries = g_new0(st_entry, sc.top_keys);
  JsonObjectIter it;
  const char *name;
  JsonNode *value;
  json_object_iter_init_ordered(&it, obj);
  while (json_object_iter_next_ordered(&it, &name, &value)) {
    if (!strcmp(name, "__metadata__")) {
      status = parse_metadata(st, value);
    } else {
      st_entry *e = &st->entries[st->count];
      e->order = st->count++;
      e->t.name = g_string_chunk_insert(st->strings, name);
      status = parse_entry(label, name, value, data_size, e);
    }
    if (status != FAP_OK) goto out;
  }
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
  int fd = open(path, O_RDONLY | O_CLOEXEC);
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
  close(fd);
  if (status != FAP_OK) return status;
  fap_safetensors *st = st_new(path);
  st->map = map;
  st->map_size = size;
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

size_t fap_safetensors_metadata_count(const fap_safetensors *st) {
  return st ? st->meta_count : 0;
}

const char *fap_safetensors_metadata_key(const fap_safetensors *st, size_t index) {
  return st && index < st->meta_count ? st->meta_keys[index] : NULL;
}

const char *fap_safetensors_label(const fap_safetensors *st) { return st ? st->label : NULL; }
