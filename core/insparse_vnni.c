/* insparse_vnni: insparse_avx2.c's q4t kernel built again with AVX-512
 * VNNI (256-bit vpdpbusd instead of maddubs + madd; the integer sums, and so
 * the results, are the same). insparse.c chooses it where quant.c chose its
 * VNNI kernels (quant_isa). Compiled with -mavx512vnni -mavx512vl. */
#define HEARTH_VNNI 1
#include "insparse_avx2.c"
