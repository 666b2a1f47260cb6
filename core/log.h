/* Internal logging: every failure path logs one message naming what is wrong,
 * then returns a fap_status. Sink chosen by fap_set_log_callback(). */
#ifndef FAP_LOG_H
#define FAP_LOG_H

#include "fap.h"

#if defined(__GNUC__)
#define FAP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FAP_PRINTF(a, b)
#endif

void fap_log(fap_log_level level, const char *fmt, ...) FAP_PRINTF(2, 3);

/* Logs at error level and returns status, so failure paths read
 *   return fap_fail(FAP_ERR_SCHEMA, "%s: tensor %s ...", path, name); */
fap_status fap_fail(fap_status status, const char *fmt, ...) FAP_PRINTF(2, 3);

#endif
