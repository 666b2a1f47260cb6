/* What a benchmark ran on: the CPU model, the cores, and the ISA extensions
 * that decide which kernels can run (machines of one kind differ: Zen 3 has
 * AVX2 only, Zen 4 adds AVX-512, BF16 and VNNI). */
#ifndef FAP_TOOLS_HOSTINFO_H
#define FAP_TOOLS_HOSTINFO_H

#include <stddef.h>

/* "AMD EPYC 7B13, 2 CPUs; avx2 fma (no avx512f avx512_bf16 avx512_vnni
 * avx_vnni amx_bf16 amx_int8)" into buf. */
void host_describe(char *buf, size_t size);

#endif
