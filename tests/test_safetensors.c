/* Unit tests of the strict safetensors reader (core/safetensors.c).
 *
 * Files are assembled in memory (8-byte length + header + data) in buffers of exactly
 * their size, so AddressSanitizer catches any read past the end; a few go to disk to
 * cover the mmap path. Every rejection checks the status and a phrase of the message. */
#include "log.h"
#include "safetensors.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <stdint.h>
#include <string.h>

#define LABEL "t.safetensors"

static char last_msg[1024];
static int n_msgs;
static int quiet; /* the fuzz loop's messages would drown --verbose */

static void capture(fap_log_level level, const char *message, void *user_data) {
  (void)user_data;
  if (level != FAP_LOG_ERROR) return;
  g_strlcpy(last_msg, message, sizeof last_msg);
  n_msgs++;
  if (!quiet) g_test_message("logged: %s", message);
}

static void log_reset(void) {
  last_msg[0] = '\0';
  n_msgs = 0;
}

typedef struct {
  uint8_t *data;
  size_t size;
} blob;

static void set_len(blob *b, uint64_t len) {
  for (int k = 0; k < 8; k++) b->data[k] = (uint8_t)(len >> (8 * k));
}

/* header + data_size bytes of data (copied from data, or zeros when data is NULL) */
static blob make(const char *header, const void *data, size_t data_size) {
  size_t h = strlen(header);
  blob b = {g_malloc0(8 + h + data_size), 8 + h + data_size};
  set_len(&b, h);
  memcpy(b.data + 8, header, h);
  if (data) memcpy(b.data + 8 + h, data, data_size);
  return b;
}

static void assert_logged(const char *phrase) {
  if (!strstr(last_msg, phrase)) g_error("message \"%s\" lacks \"%s\"", last_msg, phrase);
}

static void expect_blob(blob b, fap_status status, const char *phrase) {
  fap_safetensors *st = (fap_safetensors *)&b; /* must be reset to NULL */
  log_reset();
  fap_status got = fap_safetensors_open_memory(b.data, b.size, LABEL, &st);
  g_free(b.data);
  if (got != status) g_error("status %d, expected %d; message \"%s\"", got, status, last_msg);
  g_assert_null(st);
  g_assert_cmpint(n_msgs, ==, 1);
  assert_logged(LABEL ": ");
  assert_logged(phrase);
}

static void expect(const char *header, size_t data_size, const char *phrase) {
  expect_blob(make(header, NULL, data_size), FAP_ERR_FORMAT, phrase);
}

static fap_safetensors *open_ok(blob b) {
  fap_safetensors *st = NULL;
  log_reset();
  fap_status got = fap_safetensors_open_memory(b.data, b.size, LABEL, &st);
  if (got != FAP_OK) g_error("status %d; message \"%s\"", got, last_msg);
  g_assert_nonnull(st);
  g_assert_cmpint(n_msgs, ==, 0);
  return st;
}

/* One entry "name": {dtype, shape, data_offsets}, as JSON text. */
#define T(name, dtype, shape, b, e)                                                                \
  "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

/* ---- valid files ------------------------------------------------------------ */

static const char valid_header[] =
    "{\"__metadata__\":{\"format\":\"pt\",\"config\":\"{\\\"a\\\": 1}\"},"
    T("b", "F16", "[3]", 16, 22) "," T("a", "F32", "[2,2]", 0, 16) ","
    T("c.d", "U8", "[]", 22, 23) "}";

static blob valid_blob(void) {
  uint8_t data[23];
  const float a[4] = {1.0f, 2.0f, -3.5f, 4.0f};
  const uint16_t b[3] = {0x3C00, 0x4000, 0xC200}; /* 1, 2, -3 in f16 */
  memcpy(data, a, sizeof a);
  memcpy(data + 16, b, sizeof b);
  data[22] = 7;
  return make(valid_header, data, sizeof data);
}

static void check_valid(fap_safetensors *st) {
  g_assert_cmpuint(fap_safetensors_count(st), ==, 3);
  const fap_st_tensor *a = fap_safetensors_tensor(st, 0), *b = fap_safetensors_tensor(st, 1);
  const fap_st_tensor *c = fap_safetensors_tensor(st, 2);
  g_assert_null(fap_safetensors_tensor(st, 3));
  /* file order is offset order, not header order */
  g_assert_cmpstr(a->name, ==, "a");
  g_assert_cmpstr(b->name, ==, "b");
  g_assert_cmpstr(c->name, ==, "c.d");
  g_assert_cmpint(a->dtype, ==, FAP_DTYPE_F32);
  g_assert_cmpint(a->ndim, ==, 2);
  g_assert_cmpint(a->shape[0], ==, 2);
  g_assert_cmpint(a->shape[1], ==, 2);
  g_assert_cmpint(a->numel, ==, 4);
  g_assert_cmpuint(a->nbytes, ==, 16);
  float af[4];
  memcpy(af, a->data, sizeof af);
  g_assert_cmpfloat(af[2], ==, -3.5f);
  g_assert_cmpint(b->dtype, ==, FAP_DTYPE_F16);
  g_assert_cmpint(b->numel, ==, 3);
  uint16_t bh[3];
  memcpy(bh, b->data, sizeof bh);
  g_assert_cmphex(bh[2], ==, 0xC200);
  g_assert_cmpint(c->dtype, ==, FAP_DTYPE_U8);
  g_assert_cmpint(c->ndim, ==, 0);
  g_assert_cmpint(c->numel, ==, 1);
  g_assert_cmpint(*(const uint8_t *)c->data, ==, 7);
  g_assert_true(fap_safetensors_find(st, "b") == b);
  g_assert_true(fap_safetensors_find(st, "c.d") == c);
  g_assert_null(fap_safetensors_find(st, "c"));
  g_assert_null(fap_safetensors_find(st, "__metadata__"));
  g_assert_cmpuint(fap_safetensors_metadata_count(st), ==, 2);
  g_assert_cmpstr(fap_safetensors_metadata_key(st, 0), ==, "format");
  g_assert_cmpstr(fap_safetensors_metadata_key(st, 1), ==, "config");
  g_assert_null(fap_safetensors_metadata_key(st, 2));
  g_assert_cmpstr(fap_safetensors_metadata(st, "format"), ==, "pt");
  g_assert_cmpstr(fap_safetensors_metadata(st, "config"), ==, "{\"a\": 1}");
  g_assert_null(fap_safetensors_metadata(st, "missing"));
}

static void test_valid(void) {
  blob b = valid_blob();
  fap_safetensors *st = open_ok(b);
  check_valid(st);
  g_assert_cmpstr(fap_safetensors_label(st), ==, LABEL);
  g_assert_true((const uint8_t *)fap_safetensors_tensor(st, 0)->data == b.data + b.size - 23);
  fap_safetensors_close(st);
  g_free(b.data);
}

static void test_valid_file(void) {
  blob b = valid_blob();
  GError *err = NULL;
  char *path = NULL;
  int fd = g_file_open_tmp("fap-st-XXXXXX.safetensors", &path, &err);
  g_assert_no_error(err);
  g_close(fd, NULL);
  g_assert_true(g_file_set_contents(path, (const char *)b.data, (gssize)b.size, &err));
  g_free(b.data);
  fap_safetensors *st = NULL;
  log_reset();
  g_assert_cmpint(fap_safetensors_open(path, &st), ==, FAP_OK);
  check_valid(st);
  g_assert_cmpstr(fap_safetensors_label(st), ==, path);
  fap_safetensors_close(st);
  g_unlink(path);
  g_free(path);
}

static void test_zero_size(void) {
  /* a zero-size tensor may sit at either end or between others */
  const char *header = "{" T("z0", "F32", "[0]", 0, 0) "," T("a", "I32", "[1]", 0, 4) ","
                       T("z1", "BF16", "[4,0,2]", 4, 4) "," T("b", "I64", "[1]", 4, 12) ","
                       T("z2", "U8", "[0]", 12, 12) "}";
  blob b = make(header, NULL, 12);
  fap_safetensors *st = open_ok(b);
  g_assert_cmpuint(fap_safetensors_count(st), ==, 5);
  const char *order[] = {"z0", "a", "z1", "b", "z2"};
  for (size_t k = 0; k < 5; k++) g_assert_cmpstr(fap_safetensors_tensor(st, k)->name, ==, order[k]);
  const fap_st_tensor *z1 = fap_safetensors_find(st, "z1");
  g_assert_cmpint(z1->numel, ==, 0);
  g_assert_cmpuint(z1->nbytes, ==, 0);
  g_assert_cmpint(z1->ndim, ==, 3);
  g_assert_cmpint(z1->dtype, ==, FAP_DTYPE_BF16);
  g_assert_cmpuint(fap_safetensors_metadata_count(st), ==, 0);
  fap_safetensors_close(st);
  g_free(b.data);
}

static void test_metadata_only(void) {
  const char *headers[] = {"{}", "{\"__metadata__\":{}}", "{\"__metadata__\":{\"k\":\"v\"}}   ",
                           "{ \"__metadata__\" : { \"k\" : \"v\" } }\n\t\r "};
  for (size_t k = 0; k < G_N_ELEMENTS(headers); k++) {
    blob b = make(headers[k], NULL, 0);
    fap_safetensors *st = open_ok(b);
    g_assert_cmpuint(fap_safetensors_count(st), ==, 0);
    g_assert_null(fap_safetensors_tensor(st, 0));
    g_assert_null(fap_safetensors_find(st, "k"));
    fap_safetensors_close(st);
    g_free(b.data);
  }
}

static void test_padding_and_escapes(void) {
  /* the Python writer pads the header with spaces to a multiple of 8; names may use escapes */
  const char *header = "{\"caf\\u00e9\\ud83d\\ude00\\n\\/\":{\"dtype\":\"U8\",\"shape\":[2],"
                       "\"data_offsets\":[0,2]}}        ";
  blob b = make(header, "xy", 2);
  fap_safetensors *st = open_ok(b);
  g_assert_nonnull(fap_safetensors_find(st, "caf\xc3\xa9\xf0\x9f\x98\x80\n/"));
  fap_safetensors_close(st);
  g_free(b.data);
}

/* ---- files on disk ------------------------------------------------------------ */

static void expect_path(const char *path, fap_status status, const char *phrase) {
  fap_safetensors *st = (fap_safetensors *)&st;
  log_reset();
  g_assert_cmpint(fap_safetensors_open(path, &st), ==, status);
  g_assert_null(st);
  g_assert_cmpint(n_msgs, ==, 1);
  assert_logged(path);
  assert_logged(phrase);
}

static void test_paths(void) {
  GError *err = NULL;
  char *dir = g_dir_make_tmp("fap-st-XXXXXX", &err);
  g_assert_no_error(err);
  char *missing = g_build_filename(dir, "missing.safetensors", NULL);
  char *empty = g_build_filename(dir, "empty.safetensors", NULL);
  char *shortf = g_build_filename(dir, "short.safetensors", NULL);
  expect_path(missing, FAP_ERR_IO, "cannot open");
  expect_path(dir, FAP_ERR_IO, "is a directory");
  g_assert_true(g_file_set_contents(empty, "", 0, &err));
  expect_path(empty, FAP_ERR_FORMAT, "file is 0 bytes, too short");
  g_assert_true(g_file_set_contents(shortf, "\x02\0\0\0\0\0\0", 7, &err));
  expect_path(shortf, FAP_ERR_FORMAT, "file is 7 bytes, too short for the 8-byte header length");
  blob b = make("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", NULL, 3);
  g_assert_true(g_file_set_contents(shortf, (const char *)b.data, (gssize)b.size, &err));
  g_free(b.data);
  expect_path(shortf, FAP_ERR_FORMAT, "run past the end of the 3-byte data area");
  g_unlink(empty);
  g_unlink(shortf);
  g_rmdir(dir);
  g_free(missing);
  g_free(empty);
  g_free(shortf);
  g_free(dir);
}

/* ---- header length and truncation ------------------------------------------- */

static void test_truncated(void) {
  blob v = valid_blob();
  size_t hlen = v.size - 8 - 23;
  for (size_t n = 0; n < 8; n++) {
    blob b = {g_memdup2(v.data, v.size), n};
    expect_blob(b, FAP_ERR_FORMAT, "too short for the 8-byte header length");
  }
  blob cut = {g_memdup2(v.data, v.size), 8 + hlen / 2};
  expect_blob(cut, FAP_ERR_FORMAT, "runs past the end of the file");
  blob data_cut = {g_memdup2(v.data, v.size), v.size - 1};
  expect_blob(data_cut, FAP_ERR_FORMAT, "tensor 'c.d': data_offsets [22, 23] run past the end");
  blob no_data = {g_memdup2(v.data, v.size), 8 + hlen};
  expect_blob(no_data, FAP_ERR_FORMAT, "run past the end of the 0-byte data area");
  g_free(v.data);
}

static void test_header_length(void) {
  const uint64_t lengths[] = {UINT64_C(1) << 63, UINT64_MAX, UINT64_C(1) << 40,
                              (uint64_t)FAP_ST_MAX_HEADER + 1};
  for (size_t k = 0; k < G_N_ELEMENTS(lengths); k++) {
    blob b = make("{}", NULL, 0);
    set_len(&b, lengths[k]);
    expect_blob(b, FAP_ERR_FORMAT, "exceeds the limit");
  }
  blob big = make("{}", NULL, 0);
  set_len(&big, 3);
  expect_blob(big, FAP_ERR_FORMAT, "header length 3 runs past the end of the file");
  for (uint64_t len = 0; len < 2; len++) {
    blob b = make("{}", NULL, 0);
    set_len(&b, len);
    expect_blob(b, FAP_ERR_FORMAT, "below the minimum of 2");
  }
}

/* ---- JSON syntax -------------------------------------------------------------- */

static void test_not_json(void) {
  expect("hello", 0, "header byte 0: unexpected 'h', expected '{' (the header must be a JSON "
                     "object)");
  expect("[1,2,3]", 0, "unexpected '[', expected '{'");
  expect("\"str\"", 0, "the header must be a JSON object");
  expect(" {}", 0, "unexpected ' ', expected '{'");
  expect("\x01{}", 0, "unexpected byte 0x01, expected '{'");
  expect("{\"a\"}", 0, "unexpected '}', expected ':'");
  expect("{\"a\":}", 0, "expected a value");
  expect("{\"a\":1,}", 0, "expected a string key");
  expect("{\"a\":1 \"b\":2}", 0, "expected ',' or '}'");
  expect("{\"a\":[1 2]}", 0, "expected ',' or ']'");
  expect("{\"a\":{", 0, "header ends early");
  expect("{\"a\":\"x", 0, "unterminated string");
  expect("{\"a\":tru}", 0, "expected a value");
  expect("{,}", 0, "header byte 1: unexpected ',', expected a string key");
  expect("{\"a\":[1,]}", 0, "unexpected ']', expected a value");
  expect("{\"a\":[,1]}", 0, "unexpected ',', expected a value");
  expect("{\"a\":1,,\"b\":2}", 0, "expected a string key");
}

static void test_lenient_json(void) {
  /* all accepted by json-glib, none valid JSON */
  expect("{'a':1}", 0, "expected a string key");
  expect("{\"a\":0x10}", 0, "expected ',' or '}'");
  expect("{\"a\":/*c*/1}", 0, "unexpected '/'");
  expect("{\"a\":01}", 0, "leading zeros");
  expect("{\"a\":.5}", 0, "unexpected '.'");
  expect("{\"a\":1.}", 0, "a digit after '.'");
  expect("{\"a\":1e}", 0, "a digit in the exponent");
  expect("{\"a\":-}", 0, "expected a digit");
  expect("{\"a\":\"\\x\"}", 0, "invalid escape '\\x'");
  expect("{\"a\":\"tab\there\"}", 0, "control byte 0x09 inside a string");
  expect("{\"a\":\"\\u12\"}", 0, "four hex digits");
  expect("{\"a\":\"\\ud800\"}", 0, "unpaired UTF-16 surrogate \\uD800");
  expect("{\"a\":\"\\udc00\\ud800\"}", 0, "unpaired UTF-16 surrogate \\uDC00");
  expect("{\"a\":\"x\\u0000y\"}", 0, "escaped NUL");
  expect("{\"a\\u0000b\":1}", 0, "escaped NUL");
  expect("{\"a\":\"\xff\"}", 0, "not valid UTF-8");
  expect("{\"a\":\"\xc3\"}", 0, "not valid UTF-8");
  blob nul = make("{\"a\":\"xx\"}", NULL, 0);
  nul.data[8 + 6] = 0;
  expect_blob(nul, FAP_ERR_FORMAT, "not valid UTF-8 (or a NUL byte)");
  char *deep = g_strdup_printf("{\"a\":%s1%s}", "[[[[[[[[[[[[[[[[[[[[", "]]]]]]]]]]]]]]]]]]]]");
  expect(deep, 0, "nested deeper than 16 levels");
  g_free(deep);
}

static void test_trailing(void) {
  expect("{}x", 0, "header byte 2: content after the header object");
  expect("{}{}", 0, "content after the header object");
  blob b = make("{}  xx", NULL, 0);
  b.data[8 + 4] = 0;
  expect_blob(b, FAP_ERR_FORMAT, "NUL byte");
  expect("{}  ,", 0, "content after the header object (only whitespace may follow it)");
}

/* ---- layout ---------------------------------------------------------------------- */

static void test_layout(void) {
  expect("{" T("a", "U8", "[4]", 0, 4) "," T("b", "U8", "[4]", 4, 8) "}", 6,
         "tensor 'b': data_offsets [4, 8] run past the end of the 6-byte data area");
  expect("{" T("a", "U8", "[4]", 0, 4) "," T("b", "U8", "[4]", 2, 6) "}", 6,
         "tensor 'b': data_offsets [2, 6] overlap tensor 'a' [0, 4]");
  expect("{" T("a", "U8", "[4]", 0, 4) "," T("b", "U8", "[4]", 0, 4) "}", 4,
         "tensor 'b': data_offsets [0, 4] overlap tensor 'a' [0, 4]");
  expect("{" T("a", "U8", "[4]", 0, 4) "," T("z", "U8", "[0]", 2, 2) "}", 4,
         "tensor 'z': data_offsets [2, 2] overlap tensor 'a'");
  expect("{" T("a", "U8", "[4]", 0, 4) "," T("b", "U8", "[4]", 6, 10) "}", 10,
         "2-byte gap in the data area between tensor 'a' (ends at 4) and tensor 'b' (begins at 6)");
  expect("{" T("a", "U8", "[4]", 3, 7) "}", 7, "3-byte gap at the start of the data area, before "
                                               "tensor 'a'");
  expect("{" T("a", "U8", "[4]", 0, 4) "}", 9, "data area has 5 trailing bytes not covered by any "
                                               "tensor");
  expect("{\"__metadata__\":{}}", 1, "data area has 1 trailing bytes");
  expect("{" T("a", "U8", "[0]", 5, 4) "}", 5, "tensor 'a': data_offsets [5, 4] begin after");
  expect("{" T("a", "U8", "[0]", 9223372036854775807, 9223372036854775807) "}", 0,
         "run past the end of the 0-byte data area");
}

/* ---- entries ----------------------------------------------------------------------- */

static void test_size_mismatch(void) {
  expect("{" T("visual.proj", "F16", "[1024,768]", 0, 100) "}", 100,
         "tensor 'visual.proj': data_offsets [0, 100] hold 100 bytes but F16 [1024, 768] needs "
         "1572864");
  expect("{" T("a", "F32", "[]", 0, 2) "}", 2, "hold 2 bytes but F32 [] needs 4");
  expect("{" T("a", "I64", "[2,0]", 0, 16) "}", 16, "hold 16 bytes but I64 [2, 0] needs 0");
}

static void test_shape(void) {
  expect("{" T("a", "U8", "[2,-1]", 0, 2) "}", 2, "tensor 'a': shape[1] is -1, expected a "
                                                  "non-negative integer");
  expect("{" T("a", "U8", "[3.5]", 0, 3) "}", 3, "shape[0] is a non-integer number");
  expect("{" T("a", "U8", "[3.0]", 0, 3) "}", 3, "shape[0] is a non-integer number");
  expect("{" T("a", "U8", "[3e0]", 0, 3) "}", 3, "shape[0] is a non-integer number");
  expect("{" T("a", "U8", "[\"3\"]", 0, 3) "}", 3, "shape[0] is a string");
  expect("{" T("a", "U8", "[true]", 0, 3) "}", 3, "shape[0] is a boolean");
  expect("{" T("a", "U8", "[null]", 0, 3) "}", 3, "shape[0] is null");
  expect("{" T("a", "U8", "[[3]]", 0, 3) "}", 3, "shape[0] is an array");
  expect("{" T("a", "U8", "3", 0, 3) "}", 3, "tensor 'a': shape is an integer, expected an array");
  expect("{" T("a", "U8", "{}", 0, 3) "}", 3, "shape is an object");
  expect("{" T("a", "U8", "[18446744073709551616]", 0, 3) "}", 3,
         "integer 18446744073709551616 does not fit in 64 bits");
  expect("{" T("a", "U8", "[9223372036854775808]", 0, 3) "}", 3, "does not fit in 64 bits");
  expect("{" T("a", "U8", "[1099511627776,1099511627776]", 0, 3) "}", 3,
         "tensor 'a': shape [1099511627776, 1099511627776] has more elements than fit in 64 bits");
  expect("{" T("a", "U8", "[1099511627776,1099511627776,0]", 0, 0) "}", 0, "more elements than");
  expect("{" T("a", "F32", "[4611686018427387904]", 0, 0) "}", 0,
         "F32 [4611686018427387904] needs more bytes than fit in 64 bits");
  expect("{" T("a", "U8", "[1,1,1,1,1,1,1,1,1]", 0, 1) "}", 1,
         "shape has 9 dimensions, at most 8 are supported");
  blob ok = make("{" T("a", "U8", "[1,1,1,1,1,1,1,2]", 0, 2) "}", NULL, 2);
  fap_safetensors *st = open_ok(ok);
  g_assert_cmpint(fap_safetensors_find(st, "a")->ndim, ==, 8);
  fap_safetensors_close(st);
  g_free(ok.data);
}

static void test_offsets(void) {
  expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1,
         "tensor 'a': data_offsets has 1 elements, expected 2");
  expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,1]}}", 1,
         "data_offsets has 3 elements");
  expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":\"0,1\"}}", 1,
         "data_offsets is a string, expected [begin, end]");
  expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,\"1\"]}}", 1,
         "data_offsets[1] is a string");
  expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 1,
         "data_offsets[0] is -1, expected a non-negative integer");
  expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1.0]}}", 1,
         "data_offsets[1] is a non-integer number");
}

static void test_dtype(void) {
  expect("{" T("w", "F64", "[1]", 0, 8) "}", 8, "tensor 'w': dtype 'F64' is not supported");
  expect("{" T("w", "BOOL", "[1]", 0, 1) "}", 1, "dtype 'BOOL' is not supported (expected F32");
  expect("{" T("w", "f32", "[1]", 0, 4) "}", 4, "dtype 'f32' is not supported");
  expect("{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "tensor 'w': dtype is an integer, expected a string");
}

static void test_fields(void) {
  expect("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'w': missing field 'dtype'");
  expect("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing field 'shape'");
  expect("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing field 'data_offsets'");
  expect("{\"w\":{}}", 4, "missing field 'dtype'");
  expect("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}}", 4,
         "tensor 'w': unknown field 'extra' (expected only dtype, shape and data_offsets)");
  expect("{\"w\":[1]}", 4, "tensor 'w' is an array, expected an object");
  expect("{\"w\":\"F32\"}", 4, "tensor 'w' is a string, expected an object");
  expect("{" T("", "F32", "[1]", 0, 4) "}", 4, "a tensor has an empty name");
}

static void test_duplicates(void) {
  expect("{" T("a", "U8", "[1]", 0, 1) "," T("a", "U8", "[1]", 1, 2) "}", 2,
         "duplicate tensor name 'a'");
  /* the same name spelled with an escape */
  expect("{" T("ab", "U8", "[1]", 0, 1) "," T("\\u0061b", "U8", "[1]", 1, 2) "}", 2,
         "duplicate tensor name 'ab'");
  expect("{" T("\\ud83d\\ude00", "U8", "[1]", 0, 1) ",\"\xf0\x9f\x98\x80\":{}}", 2,
         "duplicate tensor name '\xf0\x9f\x98\x80'");
  expect("{\"__metadata__\":{},\"__metadata__\":{\"k\":\"v\"}}", 0, "'__metadata__' appears twice");
  expect("{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0,
         "entry '__metadata__': duplicate key 'k'");
  /* json-glib would keep the last dtype, F32 */
  expect("{\"w\":{\"dtype\":\"F64\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "entry 'w': duplicate key 'dtype'");
}

static void test_metadata(void) {
  expect("{\"__metadata__\":{\"n\":1}}", 0, "__metadata__ 'n' is an integer, expected a string");
  expect("{\"__metadata__\":{\"n\":{}}}", 0, "__metadata__ 'n' is an object");
  expect("{\"__metadata__\":{\"n\":null}}", 0, "__metadata__ 'n' is null");
  expect("{\"__metadata__\":[]}", 0, "__metadata__ is an array, expected an object of strings");
  expect("{\"__metadata__\":\"x\"}", 0, "__metadata__ is a string");
}

static void test_arguments(void) {
  fap_safetensors *st = (fap_safetensors *)&st;
  log_reset();
  g_assert_cmpint(fap_safetensors_open_memory(NULL, 8, "x", &st), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_null(st);
  g_assert_cmpint(fap_safetensors_open_memory("", 0, NULL, NULL), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_cmpint(fap_safetensors_open(NULL, &st), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_cmpint(fap_safetensors_open("x", NULL), ==, FAP_ERR_INVALID_ARGUMENT);
  g_assert_cmpint(n_msgs, ==, 4);
  g_assert_cmpint(fap_safetensors_open_memory(NULL, 0, NULL, &st), ==, FAP_ERR_FORMAT);
  assert_logged("<memory>: file is 0 bytes");
  fap_safetensors_close(NULL);
  g_assert_cmpuint(fap_safetensors_count(NULL), ==, 0);
  g_assert_null(fap_safetensors_find(NULL, "a"));
  g_assert_null(fap_safetensors_metadata(NULL, "a"));
}

/* ---- fuzz ---------------------------------------------------------------------------- */

static void test_fuzz(void) {
  static const char interesting[] = "{}[]\":,\\-.eE0123456789 u\x80\xff";
  blob v = valid_blob();
  GRand *rng = g_rand_new_with_seed(20240611);
  int ok = 0, failed = 0;
  quiet = 1;
  for (int iter = 0; iter < 2000; iter++) {
    uint8_t *data = g_memdup2(v.data, v.size);
    size_t size = v.size;
    int edits = g_rand_int_range(rng, 1, 5);
    for (int k = 0; k < edits; k++) {
      int kind = g_rand_int_range(rng, 0, 10);
      size_t pos = (size_t)g_rand_int_range(rng, 0, (gint32)size);
      if (kind == 0) {
        size = pos; /* truncate */
        if (size == 0) break;
      } else if (kind < 5) {
        data[pos] = interesting[g_rand_int_range(rng, 0, sizeof interesting - 1)];
      } else if (kind < 9) {
        data[pos] = (uint8_t)g_rand_int_range(rng, 0, 256);
      } else {
        data[g_rand_int_range(rng, 0, 8)] ^= (uint8_t)(1u << g_rand_int_range(rng, 0, 8));
      }
    }
    uint8_t *exact = g_memdup2(data, size); /* exactly size bytes, so ASan sees over-reads */
    g_free(data);
    fap_safetensors *st = NULL;
    log_reset();
    fap_status status = fap_safetensors_open_memory(exact, size, LABEL, &st);
    if (status == FAP_OK) {
      unsigned sum = 0;
      for (size_t t = 0; t < fap_safetensors_count(st); t++) {
        const fap_st_tensor *tensor = fap_safetensors_tensor(st, t);
        for (size_t b = 0; b < tensor->nbytes; b++) sum += ((const uint8_t *)tensor->data)[b];
        g_assert_true(fap_safetensors_find(st, tensor->name) == tensor);
      }
      (void)sum;
      fap_safetensors_close(st);
      ok++;
    } else {
      g_assert_cmpint(status, ==, FAP_ERR_FORMAT);
      g_assert_null(st);
      g_assert_cmpint(n_msgs, ==, 1);
      assert_logged(LABEL ": ");
      /* the strict scan must reject everything json-glib would */
      g_assert_null(strstr(last_msg, "json-glib"));
      g_assert_null(strstr(last_msg, "not valid JSON"));
      failed++;
    }
    g_free(exact);
  }
  quiet = 0;
  g_test_message("fuzz: %d accepted, %d rejected", ok, failed);
  g_assert_cmpint(failed, >, 1000);
  g_rand_free(rng);
  g_free(v.data);
}

/* Token soup after '{' walks the scanner's grammar paths; whatever it accepts, json-glib
 * must accept too (else the log would name json-glib). */
static void test_fuzz_tokens(void) {
  static const char *const tokens[] = {
      "{", "}", "[", "]", ",", ":", " ", "\"a\"", "\"\\u0061\"", "\"dtype\"", "\"U8\"", "\"shape\"",
      "\"data_offsets\"", "\"__metadata__\"", "0", "1", "-1", "1.5", "2e1", "true", "null"};
  GRand *rng = g_rand_new_with_seed(7);
  int ok = 0;
  quiet = 1;
  for (int iter = 0; iter < 2000; iter++) {
    GString *header = g_string_new("{");
    for (int k = g_rand_int_range(rng, 0, 24); k > 0; k--)
      g_string_append(header, tokens[g_rand_int_range(rng, 0, G_N_ELEMENTS(tokens))]);
    blob b = make(header->str, NULL, 0);
    g_string_free(header, TRUE);
    fap_safetensors *st = NULL;
    log_reset();
    if (fap_safetensors_open_memory(b.data, b.size, LABEL, &st) == FAP_OK) {
      fap_safetensors_close(st);
      ok++;
    } else {
      g_assert_null(strstr(last_msg, "json-glib"));
      g_assert_null(strstr(last_msg, "not valid JSON"));
    }
    g_free(b.data);
  }
  quiet = 0;
  g_test_message("token fuzz: %d accepted", ok);
  g_rand_free(rng);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  fap_set_log_callback(capture, NULL);
  g_test_add_func("/safetensors/valid", test_valid);
  g_test_add_func("/safetensors/valid-file", test_valid_file);
  g_test_add_func("/safetensors/zero-size", test_zero_size);
  g_test_add_func("/safetensors/metadata-only", test_metadata_only);
  g_test_add_func("/safetensors/padding-and-escapes", test_padding_and_escapes);
  g_test_add_func("/safetensors/paths", test_paths);
  g_test_add_func("/safetensors/truncated", test_truncated);
  g_test_add_func("/safetensors/header-length", test_header_length);
  g_test_add_func("/safetensors/not-json", test_not_json);
  g_test_add_func("/safetensors/lenient-json", test_lenient_json);
  g_test_add_func("/safetensors/trailing", test_trailing);
  g_test_add_func("/safetensors/layout", test_layout);
  g_test_add_func("/safetensors/size-mismatch", test_size_mismatch);
  g_test_add_func("/safetensors/shape", test_shape);
  g_test_add_func("/safetensors/offsets", test_offsets);
  g_test_add_func("/safetensors/dtype", test_dtype);
  g_test_add_func("/safetensors/fields", test_fields);
  g_test_add_func("/safetensors/duplicates", test_duplicates);
  g_test_add_func("/safetensors/metadata", test_metadata);
  g_test_add_func("/safetensors/arguments", test_arguments);
  g_test_add_func("/safetensors/fuzz", test_fuzz);
  g_test_add_func("/safetensors/fuzz-tokens", test_fuzz_tokens);
  return g_test_run();
}
