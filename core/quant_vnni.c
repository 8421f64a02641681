/* quant_vnni: quant_avx2.c's kernels built again with AVX-512 VNNI (and
 * AVX-512 VL, for its 256-bit form): the byte dot products of the Q4/Q5/Q8
 * kernels become one vpdpbusd each instead of maddubs + madd. The integer
 * sums are the same, so results are bit-identical to the AVX2 build (and
 * tested so: quant_kernels runs with HEARTH_NO_VNNI too). quant.c installs
 * this table instead of the AVX2 one where the CPU (and the OS, for the
 * AVX-512 state) supports it, unless HEARTH_NO_VNNI is set. This file alone
 * is compiled with -mavx512vnni -mavx512vl. */
#define HEARTH_VNNI 1
#define quant_avx2_install quant_vnni_install
#include "quant_avx2.c"
