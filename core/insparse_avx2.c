/* insparse_avx2: AVX2/FMA body of insparse_axpy_q4_1 (built with -mavx2
 * -mfma -mf16c). Per Q4_1 block of 32 outputs the sums stay in four
 * registers while the active rows are folded in; each step is one fused
 * multiply-add then one add, as fmaf and + in the scalar reference, so the
 * two agree to the bit. */
#include <immintrin.h>

#include "fp16.h"
#include "insparse.h"

void insparse_axpy_q4_1_avx2(float *y, const block_q4_1 *rows, int64_t row_blocks, const int32_t *idx,
                             const float *h, int64_t cnt, int64_t b0, int64_t b1);

/* 8 bytes at p -> 8 floats */
static inline __m256 u8_to_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }

void insparse_axpy_q4_1_avx2(float *y, const block_q4_1 *rows, int64_t row_blocks, const int32_t *idx,
                             const float *h, int64_t cnt, int64_t b0, int64_t b1) {
    const __m128i lo_mask = _mm_set1_epi8(15);
    for (int64_t b = b0; b < b1; b++) {
        /* a0, a1: outputs 0..15 (low nibbles); a2, a3: 16..31 (high) */
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
               a3 = _mm256_setzero_ps();
        for (int64_t k = 0; k < cnt; k++) {
            const block_q4_1 *blk = rows + (int64_t)idx[k] * row_blocks + b;
            const __m256 s = _mm256_set1_ps(h[k] * fp16_to_f32(blk->d));
            const __m256 o = _mm256_set1_ps(h[k] * fp16_to_f32(blk->m));
            const __m128i q = _mm_loadu_si128((const __m128i *)blk->qs);
            const __m128i lo = _mm_and_si128(q, lo_mask);
            const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), lo_mask);
            a0 = _mm256_add_ps(a0, _mm256_fmadd_ps(s, u8_to_ps(lo), o));
            a1 = _mm256_add_ps(a1, _mm256_fmadd_ps(s, u8_to_ps(_mm_srli_si128(lo, 8)), o));
            a2 = _mm256_add_ps(a2, _mm256_fmadd_ps(s, u8_to_ps(hi), o));
            a3 = _mm256_add_ps(a3, _mm256_fmadd_ps(s, u8_to_ps(_mm_srli_si128(hi, 8)), o));
        }
        float *yb = y + b * QK4_1;
        _mm256_storeu_ps(yb, a0);
        _mm256_storeu_ps(yb + 8, a1);
        _mm256_storeu_ps(yb + 16, a2);
        _mm256_storeu_ps(yb + 24, a3);
    }
}
