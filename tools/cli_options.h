/* Option values several faprompt-* tools take alike: --precision and
 * --tiles. */
#ifndef FAP_TOOLS_CLI_OPTIONS_H
#define FAP_TOOLS_CLI_OPTIONS_H

#include "fap.h"

/* The help text of a --precision option, shared so that every tool says the same. */
#define TOOL_PRECISION_HELP                                                                   \
  "number format of the matrix products: auto (default: CPU bf16 where it has AVX512-BF16 " \
  "or AMX, else f32; CUDA f16), f32 (exactly the authors' numbers), f16, bf16 or int8"

/* 1 and *out set when name is one of the names; 0 otherwise. NULL is auto. */
int tool_parse_precision(const char *name, fap_precision *out);

/* --tiles "CxR": two whole numbers from 1 to 32768; 1 and *cols, *rows set
 * when text is one, 0 otherwise. */
int tool_parse_tiles(const char *text, int *cols, int *rows);

#endif
