/* quant_avx2: AVX2 + FMA + F16C kernels for quant's table.
 *
 * This file alone is compiled with -mavx2 -mfma -mf16c; nothing here runs
 * unless quant.c found those features at run time and called
 * quant_avx2_install. Every kernel computes what its *_ref twin in quant.c
 * computes (the integer parts exactly; float sums in a different order).
 *
 * Integer dots follow llama.cpp's scheme: _mm256_maddubs_epi16 multiplies
 * unsigned bytes by signed bytes and adds adjacent pairs into int16, then
 * _mm256_madd_epi16 with ones (or with the sub-block scales) widens to int32.
 * The unsigned operand must be the weights (0..63) or |x| (sign trick); no
 * int16 pair sum can overflow: 63*128*2 < 32767, 127*127*2 < 32767.
 *
 * quant_vnni.c compiles this file again with HEARTH_VNNI: there the Q4_0,
 * Q4_1, Q5_*, Q8_0 dots take AVX-512 VNNI's vpdpbusd (on 256-bit
 * registers), which adds the four u8 x s8 products of each 32-bit lane in
 * one instruction. The integer sums are the same numbers (nothing
 * overflows either way), so both builds give the same bits. */
#include "quant.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "fp16.h"

static inline float hsum_f32x8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

static inline int hsum_i32x8(__m256i x) {
    __m128i r = _mm_add_epi32(_mm256_extracti128_si256(x, 1), _mm256_castsi256_si128(x));
    r = _mm_add_epi32(r, _mm_unpackhi_epi64(r, r));
    r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0xb1));
    return _mm_cvtsi128_si32(r);
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles first (elements 0..15), then
 * the high nibbles (elements 16..31), matching the *_0/_1 layouts. */
static inline __m256i nibbles_32(const uint8_t *p) {
    __m128i t = _mm_loadu_si128((const __m128i *)p);
    __m256i b = _mm256_insertf128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0f));
}

/* 32 bits -> 32 bytes, byte j = 0xff when bit j is set. */
static inline __m256i bits_32(const uint8_t *p) {
    uint32_t x;
    memcpy(&x, p, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                           0x0101010101010101, 0x0000000000000000);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/* unsigned bytes . signed bytes: each int32 lane the sum of its 4 products */
static inline __m256i dot4_us8(__m256i u, __m256i s) {
#ifdef HEARTH_VNNI
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

/* the same for two pairs, u0 . s0 + u1 . s1 (lane by lane) */
static inline __m256i dot4_us8_2(__m256i u0, __m256i s0, __m256i u1, __m256i s1) {
#ifdef HEARTH_VNNI
    return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u0, s0), u1, s1);
#else
    /* int16 sums of at most 2 * 2 * 15 * 128 (Q4 nibbles): no overflow */
    return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(u0, s0), _mm256_maddubs_epi16(u1, s1)),
                             _mm256_set1_epi16(1));
#endif
}

/* unsigned bytes . signed bytes -> 8 float partial sums */
static inline __m256 dot_us8(__m256i u, __m256i s) { return _mm256_cvtepi32_ps(dot4_us8(u, s)); }

/* signed . signed via the sign trick: |a| . (b * sign(a)) */
static inline __m256 dot_s8(__m256i a, __m256i b) {
    return dot_us8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}

/* ---- float rows ------------------------------------------------------------*/

static void vec_dot_f32(int64_t n, float *s, const void *w, const void *x) {
    const float *a = w, *b = x;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    float sum = hsum_f32x8(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++)
        sum += a[i] * b[i];
    *s = sum;
}

static inline __m256 load_f16x8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static void vec_dot_f16(int64_t n, float *s, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm256_fmadd_ps(load_f16x8(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(load_f16x8(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
        acc2 = _mm256_fmadd_ps(load_f16x8(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
        acc3 = _mm256_fmadd_ps(load_f16x8(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(load_f16x8(a + i), _mm256_loadu_ps(b + i), acc0);
    float sum = hsum_f32x8(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++)
        sum += fp16_to_f32(a[i]) * b[i];
    *s = sum;
}

static inline __m256 load_bf16x8(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static void vec_dot_bf16(int64_t n, float *s, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm256_fmadd_ps(load_bf16x8(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(load_bf16x8(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
        acc2 = _mm256_fmadd_ps(load_bf16x8(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
        acc3 = _mm256_fmadd_ps(load_bf16x8(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(load_bf16x8(a + i), _mm256_loadu_ps(b + i), acc0);
    float sum = hsum_f32x8(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++)
        sum += bf16_to_f32(a[i]) * b[i];
    *s = sum;
}

/* ---- 32-element blocks -------------------------------------------------------
 * Two blocks per iteration into two accumulators, so that the two dependency
 * chains of fmadd overlap; an odd last block goes into acc0. */

static void vec_dot_q4_0_q8_0(int64_t n, float *s, const void *w, const void *x) {
    const block_q4_0 *a = w;
    const block_q8_0 *b = x;
    const int64_t nb = n / QK4_0;
    const __m256i off = _mm256_set1_epi8(8);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 1 < nb; i += 2) {
        __m256 d0 = _mm256_set1_ps(fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d));
        __m256 d1 = _mm256_set1_ps(fp16_to_f32(a[i + 1].d) * fp16_to_f32(b[i + 1].d));
        __m256i q0 = _mm256_sub_epi8(nibbles_32(a[i].qs), off);
        __m256i q1 = _mm256_sub_epi8(nibbles_32(a[i + 1].qs), off);
        __m256i y0 = _mm256_loadu_si256((const __m256i *)b[i].qs);
        __m256i y1 = _mm256_loadu_si256((const __m256i *)b[i + 1].qs);
        acc0 = _mm256_fmadd_ps(d0, dot_s8(q0, y0), acc0);
        acc1 = _mm256_fmadd_ps(d1, dot_s8(q1, y1), acc1);
    }
    for (; i < nb; i++) {
        __m256 d0 = _mm256_set1_ps(fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d));
        __m256i q0 = _mm256_sub_epi8(nibbles_32(a[i].qs), off);
        acc0 = _mm256_fmadd_ps(d0, dot_s8(q0, _mm256_loadu_si256((const __m256i *)b[i].qs)), acc0);
    }
    *s = hsum_f32x8(_mm256_add_ps(acc0, acc1));
}

/* Q4_1 x Q8_1, in the one order that the 1-row, 4-token and 8-row kernels
 * share, so that all three give the same bits whatever layout a row is read
 * from (quant.h, vec_dot8): per row, over blocks i in order,
 *     acc  = fma(d_w[i] * d_x[i], (float) isum[i], acc)    isum: exact int32
 *     accm = fma(m_w[i], s_x[i], accm)
 *     result = acc + accm
 * The 8-row kernel runs the same chains in 8 lanes, one row each. */
static inline int q4_1_isum(const block_q4_1 *a, const block_q8_1 *b) {
    return hsum_i32x8(dot4_us8(nibbles_32(a->qs), _mm256_loadu_si256((const __m256i *)b->qs)));
}

static void vec_dot_q4_1_q8_1(int64_t n, float *s, const void *w, const void *x) {
    const block_q4_1 *a = w;
    const block_q8_1 *b = x;
    float acc = 0, accm = 0;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        acc = fmaf(fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d), (float)q4_1_isum(&a[i], &b[i]), acc);
        accm = fmaf(fp16_to_f32(a[i].m), fp16_to_f32(b[i].s), accm);
    }
    *s = acc + accm;
}

/* vec_dot_q4_1_q8_1 for four activation rows: each block's nibbles are
 * unpacked once for the four tokens (prefill); each token's chains as above. */
static void vec_dot4_q4_1_q8_1(int64_t n, float *s, size_t s_stride, const void *w, const void *x,
                               size_t x_stride) {
    const block_q4_1 *a = w;
    const block_q8_1 *b[4];
    for (int j = 0; j < 4; j++) b[j] = (const block_q8_1 *)((const char *)x + (size_t)j * x_stride);
    float acc[4] = {0}, accm[4] = {0};
    for (int64_t i = 0; i < n / QK4_1; i++) {
        const float da = fp16_to_f32(a[i].d), ma = fp16_to_f32(a[i].m);
        const __m256i q = nibbles_32(a[i].qs);
        for (int j = 0; j < 4; j++) {
            const int isum = hsum_i32x8(dot4_us8(q, _mm256_loadu_si256((const __m256i *)b[j][i].qs)));
            acc[j] = fmaf(da * fp16_to_f32(b[j][i].d), (float)isum, acc[j]);
            accm[j] = fmaf(ma, fp16_to_f32(b[j][i].s), accm[j]);
        }
    }
    for (int j = 0; j < 4; j++) s[(size_t)j * s_stride] = acc[j] + accm[j];
}

/* 8 rows (block_q4_1x8) x ntok tokens. Per block: four 32-byte loads hold
 * the 8 rows' nibbles (slots k, k+4 of a pair), unpacked once for all
 * tokens; per token, maddubs/madd give 4 partial sums per row, two rounds of
 * hadd turn the four pairs into the 8 rows' exact sums in row order, and the
 * 8 scales and 8 offsets are one F16C conversion each. No horizontal sum per
 * row, no scalar scale conversion per row. */
static inline __attribute__((always_inline)) void q4_1x8_dot(int64_t n, float *s, size_t s_stride, const void *w8,
                                                              const void *x, size_t x_stride, const int ntok) {
    const block_q4_1x8 *a = w8;
    const block_q8_1 *b[4];
    __m256 acc[4], accm[4];
    for (int j = 0; j < ntok; j++) {
        b[j] = (const block_q8_1 *)((const char *)x + (size_t)j * x_stride);
        acc[j] = accm[j] = _mm256_setzero_ps();
    }
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t i = 0; i < n / QK4_1; i++) {
        _mm_prefetch((const char *)(a + i + 16), _MM_HINT_T0);
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)a[i].d));
        const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)a[i].m));
        __m256i lo[4], hi[4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)a[i].qs[2 * k]);
            lo[k] = _mm256_and_si256(q, m4);
            hi[k] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        }
#pragma GCC unroll 4
        for (int j = 0; j < ntok; j++) {
            const block_q8_1 *bj = &b[j][i];
            const __m256i xlo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)bj->qs));
            const __m256i xhi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(bj->qs + 16)));
            __m256i v[4];
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) /* [row k: 4 partials | row k+4: 4 partials] */
                v[k] = dot4_us8_2(lo[k], xlo, hi[k], xhi);
            const __m256i isum = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
            acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(fp16_to_f32(bj->d))), _mm256_cvtepi32_ps(isum),
                                     acc[j]);
            accm[j] = _mm256_fmadd_ps(m, _mm256_set1_ps(fp16_to_f32(bj->s)), accm[j]);
        }
    }
    for (int j = 0; j < ntok; j++) _mm256_storeu_ps(s + (size_t)j * s_stride, _mm256_add_ps(acc[j], accm[j]));
}

/* one copy per token count, so that the accumulators stay in registers */
static void vec_dot8_q4_1_q8_1(int64_t n, float *s, size_t s_stride, const void *w8, const void *x,
                               size_t x_stride, int ntok) {
    switch (ntok) {
    case 1: q4_1x8_dot(n, s, s_stride, w8, x, x_stride, 1); break;
    case 2: q4_1x8_dot(n, s, s_stride, w8, x, x_stride, 2); break;
    case 3: q4_1x8_dot(n, s, s_stride, w8, x, x_stride, 3); break;
    default: q4_1x8_dot(n, s, s_stride, w8, x, x_stride, 4); break;
    }
}

/* q - 16 as signed bytes: where the fifth bit is clear, or-ing 0xf0 into the
 * nibble gives q - 16 in two's complement; where it is set, q - 16 = nibble. */
static inline __m256i q5_0_values(const block_q5_0 *blk) {
    __m256i hi = _mm256_andnot_si256(bits_32(blk->qh), _mm256_set1_epi8((char)0xf0));
    return _mm256_or_si256(nibbles_32(blk->qs), hi);
}

static void vec_dot_q5_0_q8_0(int64_t n, float *s, const void *w, const void *x) {
    const block_q5_0 *a = w;
    const block_q8_0 *b = x;
    const int64_t nb = n / QK5_0;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 1 < nb; i += 2) {
        __m256 d0 = _mm256_set1_ps(fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d));
        __m256 d1 = _mm256_set1_ps(fp16_to_f32(a[i + 1].d) * fp16_to_f32(b[i + 1].d));
        __m256i y0 = _mm256_loadu_si256((const __m256i *)b[i].qs);
        __m256i y1 = _mm256_loadu_si256((const __m256i *)b[i + 1].qs);
        acc0 = _mm256_fmadd_ps(d0, dot_s8(q5_0_values(&a[i]), y0), acc0);
        acc1 = _mm256_fmadd_ps(d1, dot_s8(q5_0_values(&a[i + 1]), y1), acc1);
    }
    for (; i < nb; i++) {
        __m256 d0 = _mm256_set1_ps(fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d));
        __m256i y0 = _mm256_loadu_si256((const __m256i *)b[i].qs);
        acc0 = _mm256_fmadd_ps(d0, dot_s8(q5_0_values(&a[i]), y0), acc0);
    }
    *s = hsum_f32x8(_mm256_add_ps(acc0, acc1));
}

static inline __m256i q5_1_values(const block_q5_1 *blk) {
    __m256i hi = _mm256_and_si256(bits_32(blk->qh), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(nibbles_32(blk->qs), hi);
}

static void vec_dot_q5_1_q8_1(int64_t n, float *s, const void *w, const void *x) {
    const block_q5_1 *a = w;
    const block_q8_1 *b = x;
    const int64_t nb = n / QK5_1;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float summs = 0;
    int64_t i = 0;
    for (; i + 1 < nb; i += 2) {
        __m256 d0 = _mm256_set1_ps(fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d));
        __m256 d1 = _mm256_set1_ps(fp16_to_f32(a[i + 1].d) * fp16_to_f32(b[i + 1].d));
        summs += fp16_to_f32(a[i].m) * fp16_to_f32(b[i].s) +
                 fp16_to_f32(a[i + 1].m) * fp16_to_f32(b[i + 1].s);
        __m256i y0 = _mm256_loadu_si256((const __m256i *)b[i].qs);
        __m256i y1 = _mm256_loadu_si256((const __m256i *)b[i + 1].qs);
        acc0 = _mm256_fmadd_ps(d0, dot_us8(q5_1_values(&a[i]), y0), acc0);
        acc1 = _mm256_fmadd_ps(d1, dot_us8(q5_1_values(&a[i + 1]), y1), acc1);
    }
    for (; i < nb; i++) {
        __m256 d0 = _mm256_set1_ps(fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d));
        summs += fp16_to_f32(a[i].m) * fp16_to_f32(b[i].s);
        __m256i y0 = _mm256_loadu_si256((const __m256i *)b[i].qs);
        acc0 = _mm256_fmadd_ps(d0, dot_us8(q5_1_values(&a[i]), y0), acc0);
    }
    *s = hsum_f32x8(_mm256_add_ps(acc0, acc1)) + summs;
}

static void vec_dot_q8_0_q8_0(int64_t n, float *s, const void *w, const void *x) {
    const block_q8_0 *a = w;
    const block_q8_0 *b = x;
    const int64_t nb = n / QK8_0;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 1 < nb; i += 2) {
        _mm_prefetch((const char *)(a + i + 8), _MM_HINT_T0);
        __m256 d0 = _mm256_set1_ps(fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d));
        __m256 d1 = _mm256_set1_ps(fp16_to_f32(a[i + 1].d) * fp16_to_f32(b[i + 1].d));
        __m256i q0 = _mm256_loadu_si256((const __m256i *)a[i].qs);
        __m256i q1 = _mm256_loadu_si256((const __m256i *)a[i + 1].qs);
        __m256i y0 = _mm256_loadu_si256((const __m256i *)b[i].qs);
        __m256i y1 = _mm256_loadu_si256((const __m256i *)b[i + 1].qs);
        acc0 = _mm256_fmadd_ps(d0, dot_s8(q0, y0), acc0);
        acc1 = _mm256_fmadd_ps(d1, dot_s8(q1, y1), acc1);
    }
    for (; i < nb; i++) {
        __m256 d0 = _mm256_set1_ps(fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d));
        __m256i q0 = _mm256_loadu_si256((const __m256i *)a[i].qs);
        __m256i y0 = _mm256_loadu_si256((const __m256i *)b[i].qs);
        acc0 = _mm256_fmadd_ps(d0, dot_s8(q0, y0), acc0);
    }
    *s = hsum_f32x8(_mm256_add_ps(acc0, acc1));
}

/* vec_dot_q8_0_q8_0 for four activation rows (the LM head of a batch of
 * sequences): each weight block is loaded and its absolute value taken once
 * for the four tokens; each token's sums are vec_dot_q8_0_q8_0's exactly
 * (the same two accumulators by block parity, the same products and the
 * same final sum), so a token's result does not depend on the kernel. */
static void vec_dot4_q8_0_q8_0(int64_t n, float *s, size_t s_stride, const void *w, const void *x,
                               size_t x_stride) {
    const block_q8_0 *a = w;
    const block_q8_0 *b[4];
    __m256 acc0[4], acc1[4];
    for (int j = 0; j < 4; j++) {
        b[j] = (const block_q8_0 *)((const char *)x + (size_t)j * x_stride);
        acc0[j] = acc1[j] = _mm256_setzero_ps();
    }
    const int64_t nb = n / QK8_0;
    int64_t i = 0;
    for (; i + 1 < nb; i += 2) {
        _mm_prefetch((const char *)(a + i + 8), _MM_HINT_T0);
        const float da0 = fp16_to_f32(a[i].d), da1 = fp16_to_f32(a[i + 1].d);
        const __m256i q0 = _mm256_loadu_si256((const __m256i *)a[i].qs);
        const __m256i q1 = _mm256_loadu_si256((const __m256i *)a[i + 1].qs);
        const __m256i u0 = _mm256_sign_epi8(q0, q0), u1 = _mm256_sign_epi8(q1, q1);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m256 d0 = _mm256_set1_ps(da0 * fp16_to_f32(b[j][i].d));
            const __m256 d1 = _mm256_set1_ps(da1 * fp16_to_f32(b[j][i + 1].d));
            const __m256i y0 = _mm256_loadu_si256((const __m256i *)b[j][i].qs);
            const __m256i y1 = _mm256_loadu_si256((const __m256i *)b[j][i + 1].qs);
            acc0[j] = _mm256_fmadd_ps(d0, dot_us8(u0, _mm256_sign_epi8(y0, q0)), acc0[j]);
            acc1[j] = _mm256_fmadd_ps(d1, dot_us8(u1, _mm256_sign_epi8(y1, q1)), acc1[j]);
        }
    }
    for (; i < nb; i++) {
        const float da0 = fp16_to_f32(a[i].d);
        const __m256i q0 = _mm256_loadu_si256((const __m256i *)a[i].qs);
        const __m256i u0 = _mm256_sign_epi8(q0, q0);
        for (int j = 0; j < 4; j++) {
            const __m256 d0 = _mm256_set1_ps(da0 * fp16_to_f32(b[j][i].d));
            const __m256i y0 = _mm256_loadu_si256((const __m256i *)b[j][i].qs);
            acc0[j] = _mm256_fmadd_ps(d0, dot_us8(u0, _mm256_sign_epi8(y0, q0)), acc0[j]);
        }
    }
    for (int j = 0; j < 4; j++) s[(size_t)j * s_stride] = hsum_f32x8(_mm256_add_ps(acc0[j], acc1[j]));
}

/* ---- K types -------------------------------------------------------------- */

/* Unpack the 12 bytes of 6-bit scales/mins into 16 bytes: sc0..sc7, m0..m7. */
static inline __m128i k_scales_mins(const uint8_t *q) {
    uint32_t u[4];
    memcpy(u, q, 12);
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    u[3] = ((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4); /* m4..m7 */
    uint32_t mins_lo = u[1] & m6;                          /* m0..m3 */
    u[1] = (u[2] & m4) | (((u[0] >> 6) & m2) << 4);        /* sc4..sc7 */
    u[2] = mins_lo;
    u[0] &= m6; /* sc0..sc3 */
    return _mm_set_epi32((int)u[3], (int)u[2], (int)u[1], (int)u[0]);
}

/* a shuffle that broadcasts int16 lane k of each 128-bit half */
static inline __m256i bcast16(int k) {
    return _mm256_set1_epi16((short)((2 * k) | (2 * k + 1) << 8));
}

/* -dmin * sum_sb m_sb * (sum of the sub-block's activations), as 4 floats */
static inline __m128 k_mins_term(__m256i mins_scales16, const int16_t *bsums, float dmin_x) {
    __m256i bs = _mm256_loadu_si256((const __m256i *)bsums);
    __m128i s32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    __m128i prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_scales16, 1), s32);
    return _mm_mul_ps(_mm_set1_ps(dmin_x), _mm_cvtepi32_ps(prod));
}

static void vec_dot_q4_K_q8_K(int64_t n, float *s, const void *w, const void *x) {
    const block_q4_K *a = w;
    const block_q8_K *b = x;
    const int64_t nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const float d = b[i].d * fp16_to_f32(a[i].d);
        const float dmin = -b[i].d * fp16_to_f32(a[i].dmin);
        const __m256i ms = _mm256_cvtepu8_epi16(k_scales_mins(a[i].scales));
        acc_m = _mm_add_ps(acc_m, k_mins_term(ms, b[i].bsums, dmin));
        const __m128i sc128 = _mm256_castsi256_si128(ms);
        const __m256i scales = _mm256_insertf128_si256(_mm256_castsi128_si256(sc128), sc128, 1);
        const uint8_t *q4 = a[i].qs;
        const int8_t *q8 = b[i].qs;
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / 64; j++) {
            const __m256i sc_l = _mm256_shuffle_epi8(scales, bcast16(2 * j));
            const __m256i sc_h = _mm256_shuffle_epi8(scales, bcast16(2 * j + 1));
            const __m256i bits = _mm256_loadu_si256((const __m256i *)q4);
            q4 += 32;
            const __m256i ql = _mm256_and_si256(bits, m4);
            const __m256i qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            const __m256i yl = _mm256_loadu_si256((const __m256i *)q8);
            const __m256i yh = _mm256_loadu_si256((const __m256i *)(q8 + 32));
            q8 += 64;
            __m256i pl = _mm256_madd_epi16(sc_l, _mm256_maddubs_epi16(ql, yl));
            __m256i ph = _mm256_madd_epi16(sc_h, _mm256_maddubs_epi16(qh, yh));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    *s = hsum_f32x8(acc) + _mm_cvtss_f32(acc_m);
}

static void vec_dot_q5_K_q8_K(int64_t n, float *s, const void *w, const void *x) {
    const block_q5_K *a = w;
    const block_q8_K *b = x;
    const int64_t nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i b16 = _mm256_set1_epi8(16);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const float d = b[i].d * fp16_to_f32(a[i].d);
        const float dmin = -b[i].d * fp16_to_f32(a[i].dmin);
        const __m256i ms = _mm256_cvtepu8_epi16(k_scales_mins(a[i].scales));
        acc_m = _mm_add_ps(acc_m, k_mins_term(ms, b[i].bsums, dmin));
        const __m128i sc128 = _mm256_castsi256_si128(ms);
        const __m256i scales = _mm256_insertf128_si256(_mm256_castsi128_si256(sc128), sc128, 1);
        const __m256i hbits = _mm256_loadu_si256((const __m256i *)a[i].qh);
        __m256i hmask = _mm256_set1_epi8(1);
        const uint8_t *q5 = a[i].qs;
        const int8_t *q8 = b[i].qs;
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / 64; j++) {
            const __m256i sc_l = _mm256_shuffle_epi8(scales, bcast16(2 * j));
            const __m256i sc_h = _mm256_shuffle_epi8(scales, bcast16(2 * j + 1));
            const __m256i bits = _mm256_loadu_si256((const __m256i *)q5);
            q5 += 32;
            /* fifth bit: 16 where (qh & mask) == mask */
            __m256i h_l = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, hmask), hmask), b16);
            hmask = _mm256_add_epi8(hmask, hmask);
            __m256i h_h = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, hmask), hmask), b16);
            hmask = _mm256_add_epi8(hmask, hmask);
            const __m256i ql = _mm256_or_si256(_mm256_and_si256(bits, m4), h_l);
            const __m256i qh = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), h_h);
            const __m256i yl = _mm256_loadu_si256((const __m256i *)q8);
            const __m256i yh = _mm256_loadu_si256((const __m256i *)(q8 + 32));
            q8 += 64;
            __m256i pl = _mm256_madd_epi16(sc_l, _mm256_maddubs_epi16(ql, yl));
            __m256i ph = _mm256_madd_epi16(sc_h, _mm256_maddubs_epi16(qh, yh));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    *s = hsum_f32x8(acc) + _mm_cvtss_f32(acc_m);
}

/* 16 bytes of group scales -> int16 scales of groups 2k (low lane) and 2k+1
 * (high lane), each repeated 8 times (a lane of maddubs output is 16 bytes of
 * input = one group of 16). */
static inline __m256i q6_scales(__m128i sc, int k) {
    const __m128i shuf = _mm_set_epi64x(0x0101010101010101LL * (2 * k + 1), 0x0101010101010101LL * (2 * k));
    return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, shuf));
}

static void vec_dot_q6_K_q8_K(int64_t n, float *s, const void *w, const void *x) {
    const block_q6_K *a = w;
    const block_q8_K *b = x;
    const int64_t nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i m2 = _mm256_set1_epi8(3);
    const __m256i k32 = _mm256_set1_epi8(32);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const float d = b[i].d * fp16_to_f32(a[i].d);
        const __m128i sc = _mm_loadu_si128((const __m128i *)a[i].scales);
        const uint8_t *ql = a[i].ql, *qh = a[i].qh;
        const int8_t *q8 = b[i].qs;
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < QK_K / 128; h++) {
            const __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
            qh += 32;
            const __m256i lo1 = _mm256_loadu_si256((const __m256i *)ql);
            const __m256i lo2 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            ql += 64;
            /* quarters k = 0..3 of this half: q in 0..63 */
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(lo1, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(lo2, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lo1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lo2, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4));
            for (int k = 0; k < 4; k++) {
                const __m256i y = _mm256_loadu_si256((const __m256i *)(q8 + 32 * k));
                /* (q - 32) . y = q . y - 32 * sum(y), both in int16 pairs */
                __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q[k], y), _mm256_maddubs_epi16(k32, y));
                p = _mm256_madd_epi16(q6_scales(sc, 4 * h + k), p);
                sumi = _mm256_add_epi32(sumi, p);
            }
            q8 += 128;
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_f32x8(acc);
}

/* ---- activation quantizers -------------------------------------------------*/

/* 4 x 8 int32 (elements 0..31 in order) -> 32 int8 in order */
static inline __m256i pack_i32_i8(__m256i i0, __m256i i1, __m256i i2, __m256i i3) {
    __m256i p01 = _mm256_packs_epi32(i0, i1); /* per lane: i0 lo, i1 lo | i0 hi, i1 hi */
    __m256i p23 = _mm256_packs_epi32(i2, i3);
    __m256i p = _mm256_packs_epi16(p01, p23);
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static inline __m256 abs_ps(__m256 v) {
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

static inline float hmax_f32x8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

#define ROUND_NEAREST (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* one block of 32 to int8 with scale 127 / amax; returns d; *sum = sum of q */
static inline float q8_block(const float *x, int8_t *qs, int *sum) {
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    __m256 amax = _mm256_max_ps(_mm256_max_ps(abs_ps(v0), abs_ps(v1)), _mm256_max_ps(abs_ps(v2), abs_ps(v3)));
    const float m = hmax_f32x8(amax);
    const float d = m / 127.f;
    const __m256 id = _mm256_set1_ps(m != 0 ? 127.f / m : 0.0f);
    __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, id), ROUND_NEAREST));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, id), ROUND_NEAREST));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, id), ROUND_NEAREST));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, id), ROUND_NEAREST));
    if (sum)
        *sum = hsum_i32x8(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
    _mm256_storeu_si256((__m256i *)qs, pack_i32_i8(i0, i1, i2, i3));
    return d;
}

static void q8_0_from_float(const float *x, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++)
        b[i].d = fp16_from_f32(q8_block(x + i * QK8_0, b[i].qs, NULL));
}

static void q8_1_from_float(const float *x, void *dst, int64_t n) {
    block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        int sum;
        float d = q8_block(x + i * QK8_1, b[i].qs, &sum);
        b[i].d = fp16_from_f32(d);
        b[i].s = fp16_from_f32(d * (float)sum);
    }
}

static void q8_K_from_float(const float *x, void *dst, int64_t n) {
    block_q8_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        /* the extreme with its sign: largest max or smallest min */
        __m256 mx = _mm256_loadu_ps(x), mn = mx;
        for (int j = 8; j < QK_K; j += 8) {
            __m256 v = _mm256_loadu_ps(x + j);
            mx = _mm256_max_ps(mx, v);
            mn = _mm256_min_ps(mn, v);
        }
        const float hi = hmax_f32x8(mx), lo = -hmax_f32x8(_mm256_sub_ps(_mm256_setzero_ps(), mn));
        const float max = hi >= -lo ? hi : lo;
        if (max == 0) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        const float iscale = -127.f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i k127 = _mm256_set1_epi32(127);
        for (int j = 0; j < QK_K; j += 32) {
            __m256i q[4];
            for (int k = 0; k < 4; k++) {
                __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * k), vs);
                q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_round_ps(v, ROUND_NEAREST)), k127);
            }
            b[i].bsums[j / 16] = (int16_t)hsum_i32x8(_mm256_add_epi32(q[0], q[1]));
            b[i].bsums[j / 16 + 1] = (int16_t)hsum_i32x8(_mm256_add_epi32(q[2], q[3]));
            _mm256_storeu_si256((__m256i *)(b[i].qs + j), pack_i32_i8(q[0], q[1], q[2], q[3]));
        }
        b[i].d = 1 / iscale;
    }
}

void quant_avx2_install(struct quant_traits *t, int count) {
    (void)count;
    t[HEARTH_TYPE_F32].vec_dot = vec_dot_f32;
    t[HEARTH_TYPE_F16].vec_dot = vec_dot_f16;
    t[HEARTH_TYPE_BF16].vec_dot = vec_dot_bf16;
    t[HEARTH_TYPE_Q4_0].vec_dot = vec_dot_q4_0_q8_0;
    t[HEARTH_TYPE_Q4_1].vec_dot = vec_dot_q4_1_q8_1;
    t[HEARTH_TYPE_Q4_1].vec_dot4 = vec_dot4_q4_1_q8_1;
    t[HEARTH_TYPE_Q4_1].vec_dot8 = vec_dot8_q4_1_q8_1;
    t[HEARTH_TYPE_Q5_0].vec_dot = vec_dot_q5_0_q8_0;
    t[HEARTH_TYPE_Q5_1].vec_dot = vec_dot_q5_1_q8_1;
    t[HEARTH_TYPE_Q8_0].vec_dot = vec_dot_q8_0_q8_0;
    t[HEARTH_TYPE_Q8_0].vec_dot4 = vec_dot4_q8_0_q8_0;
    t[HEARTH_TYPE_Q4_K].vec_dot = vec_dot_q4_K_q8_K;
    t[HEARTH_TYPE_Q5_K].vec_dot = vec_dot_q5_K_q8_K;
    t[HEARTH_TYPE_Q6_K].vec_dot = vec_dot_q6_K_q8_K;
    t[HEARTH_TYPE_Q8_0].from_float = q8_0_from_float;
    t[HEARTH_TYPE_Q8_1].from_float = q8_1_from_float;
    t[HEARTH_TYPE_Q8_K].from_float = q8_K_from_float;
}
