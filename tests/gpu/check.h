/* The small check harness of the frame and CUDA detector tests: CHECK counts
 * failures instead of aborting (a test reports every mismatch in one run), and
 * capture() keeps the last core error so tests can assert what it names.
 * Include once per test program. */
#ifndef FAP_TESTS_GPU_CHECK_H
#define FAP_TESTS_GPU_CHECK_H

#include "fap.h"

#include <stdio.h>
#include <stdlib.h>

static int failures;
static char last_error[2048];
static int n_errors;

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                  \
      printf(__VA_ARGS__);                                                                         \
      printf("\n");                                                                                \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

/* Log sink: errors are kept (last_error, n_errors); with FAP_TEST_VERBOSE set,
 * everything down to info is echoed. */
static void capture(fap_log_level level, const char *message, void *user_data) {
  (void)user_data;
  if (level == FAP_LOG_ERROR) {
    snprintf(last_error, sizeof last_error, "%s", message);
    n_errors++;
  }
  if (level <= FAP_LOG_INFO && getenv("FAP_TEST_VERBOSE"))
    printf("  [log] %s\n", message);
}

#endif
