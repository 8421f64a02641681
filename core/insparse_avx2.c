/* insparse_avx2: AVX2/FMA body of insparse_axpy_q4_1 (built with -mavx2
 * -mfma -mf16c). Per Q4_1 block of 32 outputs the sums stay in four
 * registers while the active rows are folded in; each step is one fused
 * multiply-add then one add, as fmaf and + in the scalar reference, so the
 * two agree to the bit. The q4t kernel below is built here for AVX2 and again
 * by insparse_vnni.c (HEARTH_VNNI), which leaves the axpy out. */
#include <immintrin.h>

#include "fp16.h"
#include "insparse.h"

#ifndef HEARTH_VNNI
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
#endif

/* ---- q4t (insparse.h): four active nibble rows interleaved per step ----
 *
 * Per group of 32 inputs, the nonzero entries of the group's Q8_1 block are
 * taken four at a time (the last quad padded with a zero x byte). For each
 * chunk of 64 outputs, the four rows' 32 bytes are interleaved (unpack
 * epi8, then epi16) so that every 32-bit lane holds one output's four
 * weights; the low and high nibbles then give eight registers of eight
 * outputs, each dotted with the quad's four bytes of x. The integer sums are
 * exact, so the float fold that follows is the scalar reference's. */
static inline __m256i q4t_dot4(__m256i isum, __m256i u, __m256i s) {
#ifdef HEARTH_VNNI
    return _mm256_dpbusd_epi32(isum, u, s);
#else
    return _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

#ifdef HEARTH_VNNI
int64_t insparse_q4t_dot_vnni(const struct insparse_q4t *m, const block_q8_1 *xq, float *acc, float *accm,
                              int64_t c0, int64_t c1, int64_t g0, int64_t g1);
int64_t insparse_q4t_dot_vnni(const struct insparse_q4t *m, const block_q8_1 *xq, float *acc, float *accm,
                              int64_t c0, int64_t c1, int64_t g0, int64_t g1) {
#else
int64_t insparse_q4t_dot_avx2(const struct insparse_q4t *m, const block_q8_1 *xq, float *acc, float *accm,
                              int64_t c0, int64_t c1, int64_t g0, int64_t g1);
int64_t insparse_q4t_dot_avx2(const struct insparse_q4t *m, const block_q8_1 *xq, float *acc, float *accm,
                              int64_t c0, int64_t c1, int64_t g0, int64_t g1) {
#endif
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    int64_t read = 0;
    for (int64_t r = 64 * c0; r < 64 * c1; r += 8) {
        _mm256_storeu_ps(acc + r, _mm256_setzero_ps());
        _mm256_storeu_ps(accm + r, _mm256_setzero_ps());
    }
    /* band by band (each one contiguous run over the groups), the groups in
     * ascending order within: each output's fold is the reference's */
    for (int64_t cb = c0; cb < c1;) {
        const int64_t b0 = cb / INSPARSE_Q4T_BAND * INSPARSE_Q4T_BAND;
        int64_t wb;
        (void)insparse_q4t_block(m, g0, cb, &wb);
        const int64_t ce = b0 + wb < c1 ? b0 + wb : c1;
        for (int64_t g = g0; g < g1; g++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)xq[g].qs);
            uint32_t nz = ~(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(xv, _mm256_setzero_si256()));
            if (!nz) continue;
            const uint8_t *blk = insparse_q4t_block(m, g, cb, &wb);
            const uint8_t *dsc = blk, *msc = blk + 128 * wb, *rows = blk + 256 * wb;
            /* the quads: row offsets within the band and the four x bytes */
            size_t off[32];
            int32_t xs[8];
            int n = 0, nq = 0;
            uint8_t xb[32];
            while (nz) {
                const int e = __builtin_ctz(nz);
                nz &= nz - 1;
                off[n] = (size_t)(e * 32 * wb);
                xb[n] = (uint8_t)xq[g].qs[e];
                n++;
            }
            read += (int64_t)n * (ce - cb);
            while (n % 4) {
                off[n] = off[0];
                xb[n] = 0;
                n++;
            }
            nq = n / 4;
            for (int q = 0; q < nq; q++) memcpy(&xs[q], xb + 4 * q, 4);
            const __m256 dx = _mm256_set1_ps(fp16_to_f32(xq[g].d)), sx = _mm256_set1_ps(fp16_to_f32(xq[g].s));
            for (int64_t c = cb; c < ce; c++) {
                __m256i is[8];
                for (int t = 0; t < 8; t++) is[t] = _mm256_setzero_si256();
                const uint8_t *base = rows + (size_t)(32 * (c - b0));
                for (int q = 0; q < nq; q++) {
                    const __m256i a = _mm256_loadu_si256((const __m256i *)(base + off[4 * q]));
                    const __m256i b = _mm256_loadu_si256((const __m256i *)(base + off[4 * q + 1]));
                    const __m256i cc = _mm256_loadu_si256((const __m256i *)(base + off[4 * q + 2]));
                    const __m256i d = _mm256_loadu_si256((const __m256i *)(base + off[4 * q + 3]));
                    const __m256i ablo = _mm256_unpacklo_epi8(a, b), abhi = _mm256_unpackhi_epi8(a, b);
                    const __m256i cdlo = _mm256_unpacklo_epi8(cc, d), cdhi = _mm256_unpackhi_epi8(cc, d);
                    const __m256i p[4] = {_mm256_unpacklo_epi16(ablo, cdlo), _mm256_unpackhi_epi16(ablo, cdlo),
                                          _mm256_unpacklo_epi16(abhi, cdhi), _mm256_unpackhi_epi16(abhi, cdhi)};
                    const __m256i xq4 = _mm256_set1_epi32(xs[q]);
#pragma GCC unroll 4
                    for (int k = 0; k < 4; k++) {
                        is[k] = q4t_dot4(is[k], _mm256_and_si256(p[k], m4), xq4);
                        is[4 + k] = q4t_dot4(is[4 + k], _mm256_and_si256(_mm256_srli_epi16(p[k], 4), m4), xq4);
                    }
                }
                const int64_t r0 = c * 64, o0 = (c - b0) * 64;
#pragma GCC unroll 8
                for (int t = 0; t < 8; t++) {
                    const int64_t r = r0 + 8 * t, o = o0 + 8 * t;
                    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dsc + 2 * o)));
                    const __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(msc + 2 * o)));
                    _mm256_storeu_ps(acc + r, _mm256_fmadd_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(is[t]),
                                                              _mm256_loadu_ps(acc + r)));
                    _mm256_storeu_ps(accm + r, _mm256_fmadd_ps(mw, sx, _mm256_loadu_ps(accm + r)));
                }
            }
        }
        cb = ce;
    }
    return read;
}
