/* ffn_sum_avx2: the exact FFN sum's AVX2 kernel (ffn_sum.h), built with
 * -mavx2; ffn_sum.c calls it only when the CPU has AVX2. */
#include <immintrin.h>

#include "ffn_sum.h"

void ffn_acc_add_fixed_avx2(int64_t *acc, const float *y, size_t count);

/* acc[i] += llrint(y[i] * 2^FFN_FIXED_SHIFT), bit-identical to
 * ffn_acc_add_fixed: y * 2^32 is exact in double; for |v| < 2^51, adding
 * 1.5 * 2^52 rounds v to an integer (to nearest even, as llrint in the
 * default rounding mode) and leaves it in the low mantissa bits. Vectors with
 * a larger (or non-finite) value take the scalar definition, which saturates. */
void ffn_acc_add_fixed_avx2(int64_t *acc, const float *y, size_t count) {
    const __m256d scale = _mm256_set1_pd(0x1p32), magic = _mm256_set1_pd(0x1.8p52), lim = _mm256_set1_pd(0x1p51);
    const __m256d abs_mask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffll));
    const __m256i magic_bits = _mm256_castpd_si256(magic);
    size_t i = 0;
    for (; i + 4 <= count; i += 4) {
        const __m256d v = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(y + i)), scale);
        const __m256d in_range = _mm256_cmp_pd(_mm256_and_pd(v, abs_mask), lim, _CMP_LT_OQ);
        if (_mm256_movemask_pd(in_range) != 0xf) {
            ffn_acc_add_fixed(acc + i, y + i, 4);
            continue;
        }
        const __m256i q = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(v, magic)), magic_bits);
        __m256i *a = (__m256i *)(acc + i);
        _mm256_storeu_si256(a, _mm256_add_epi64(_mm256_loadu_si256(a), q));
    }
    if (i < count) ffn_acc_add_fixed(acc + i, y + i, count - i);
}
