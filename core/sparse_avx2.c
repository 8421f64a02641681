/* sparse_avx2: AVX2/FMA body of sparse_down_q8_0 (built with -mavx2 -mfma
 * -mf16c). Per Q8_0 block of output columns the 32 sums stay in four
 * registers while the group's fired rows are folded in; each step is one
 * fused multiply-add, as fmaf in the scalar reference, so the two agree to
 * the bit. Two blocks at a time give the loads of one row's neighbouring
 * blocks to one iteration. */
#include <immintrin.h>

#include "fp16.h"
#include "sparse.h"

void sparse_down_q8_0_avx2(float *y, const block_q8_0 *rows, int64_t row_blocks, const int32_t *idx, const float *h,
                           int cnt, int64_t b0, int64_t b1);

/* 8 int8 quants at q -> 8 floats (exact) */
static inline __m256 q8_to_ps(const int8_t *q) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
}

void sparse_down_q8_0_avx2(float *y, const block_q8_0 *rows, int64_t row_blocks, const int32_t *idx, const float *h,
                           int cnt, int64_t b0, int64_t b1) {
    int64_t b = b0;
    for (; b + 2 <= b1; b += 2) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
               a3 = _mm256_setzero_ps();
        __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps(), c2 = _mm256_setzero_ps(),
               c3 = _mm256_setzero_ps();
        for (int k = 0; k < cnt; k++) {
            const block_q8_0 *blk = rows + (int64_t)idx[k] * row_blocks + b;
            const __m256 s = _mm256_set1_ps(h[k] * fp16_to_f32(blk[0].d));
            const __m256 t = _mm256_set1_ps(h[k] * fp16_to_f32(blk[1].d));
            a0 = _mm256_fmadd_ps(s, q8_to_ps(blk[0].qs), a0);
            a1 = _mm256_fmadd_ps(s, q8_to_ps(blk[0].qs + 8), a1);
            a2 = _mm256_fmadd_ps(s, q8_to_ps(blk[0].qs + 16), a2);
            a3 = _mm256_fmadd_ps(s, q8_to_ps(blk[0].qs + 24), a3);
            c0 = _mm256_fmadd_ps(t, q8_to_ps(blk[1].qs), c0);
            c1 = _mm256_fmadd_ps(t, q8_to_ps(blk[1].qs + 8), c1);
            c2 = _mm256_fmadd_ps(t, q8_to_ps(blk[1].qs + 16), c2);
            c3 = _mm256_fmadd_ps(t, q8_to_ps(blk[1].qs + 24), c3);
        }
        float *yb = y + b * QK8_0;
        _mm256_storeu_ps(yb, a0);
        _mm256_storeu_ps(yb + 8, a1);
        _mm256_storeu_ps(yb + 16, a2);
        _mm256_storeu_ps(yb + 24, a3);
        _mm256_storeu_ps(yb + 32, c0);
        _mm256_storeu_ps(yb + 40, c1);
        _mm256_storeu_ps(yb + 48, c2);
        _mm256_storeu_ps(yb + 56, c3);
    }
    for (; b < b1; b++) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
               a3 = _mm256_setzero_ps();
        for (int k = 0; k < cnt; k++) {
            const block_q8_0 *blk = rows + (int64_t)idx[k] * row_blocks + b;
            const __m256 s = _mm256_set1_ps(h[k] * fp16_to_f32(blk->d));
            a0 = _mm256_fmadd_ps(s, q8_to_ps(blk->qs), a0);
            a1 = _mm256_fmadd_ps(s, q8_to_ps(blk->qs + 8), a1);
            a2 = _mm256_fmadd_ps(s, q8_to_ps(blk->qs + 16), a2);
            a3 = _mm256_fmadd_ps(s, q8_to_ps(blk->qs + 24), a3);
        }
        float *yb = y + b * QK8_0;
        _mm256_storeu_ps(yb, a0);
        _mm256_storeu_ps(yb + 8, a1);
        _mm256_storeu_ps(yb + 16, a2);
        _mm256_storeu_ps(yb + 24, a3);
    }
}
