/* predictor_avx2: AVX2/FMA bodies of predictor.c's inner kernels (this file is
 * built with -mavx2 -mfma; predictor.c calls it only when quant_have_avx2()).
 *
 * Every output element is accumulated with one fused multiply-add per k, in
 * increasing k, whichever tile (16, 8 or 1 columns; 4 or 1 rows) it falls in:
 * results do not depend on how rows are split between threads. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

void predictor_gemm_avx2(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float *C, int64_t ldc, int acc);
void predictor_bce_grad_avx2(const float *l, const uint8_t *y, float *g, int64_t n, float pos_w, float scale);

/* C[i][j] (+)= sum_k A[i][k] * B[k][j] for rows i in [m0, m1), all N columns. */
void predictor_gemm_avx2(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float *C, int64_t ldc, int acc) {
    int64_t i = m0;
    for (; i + 4 <= m1; i += 4) {
        const float *a0 = A + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        float *c0 = C + i * ldc, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
        int64_t j = 0;
        for (; j + 16 <= N; j += 16) {
            __m256 s00, s01, s10, s11, s20, s21, s30, s31;
            if (acc) {
                s00 = _mm256_loadu_ps(c0 + j), s01 = _mm256_loadu_ps(c0 + j + 8);
                s10 = _mm256_loadu_ps(c1 + j), s11 = _mm256_loadu_ps(c1 + j + 8);
                s20 = _mm256_loadu_ps(c2 + j), s21 = _mm256_loadu_ps(c2 + j + 8);
                s30 = _mm256_loadu_ps(c3 + j), s31 = _mm256_loadu_ps(c3 + j + 8);
            } else {
                s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = _mm256_setzero_ps();
            }
            const float *b = B + j;
            for (int64_t k = 0; k < K; k++, b += ldb) {
                __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
                __m256 a = _mm256_broadcast_ss(a0 + k);
                s00 = _mm256_fmadd_ps(a, b0, s00), s01 = _mm256_fmadd_ps(a, b1, s01);
                a = _mm256_broadcast_ss(a1 + k);
                s10 = _mm256_fmadd_ps(a, b0, s10), s11 = _mm256_fmadd_ps(a, b1, s11);
                a = _mm256_broadcast_ss(a2 + k);
                s20 = _mm256_fmadd_ps(a, b0, s20), s21 = _mm256_fmadd_ps(a, b1, s21);
                a = _mm256_broadcast_ss(a3 + k);
                s30 = _mm256_fmadd_ps(a, b0, s30), s31 = _mm256_fmadd_ps(a, b1, s31);
            }
            _mm256_storeu_ps(c0 + j, s00), _mm256_storeu_ps(c0 + j + 8, s01);
            _mm256_storeu_ps(c1 + j, s10), _mm256_storeu_ps(c1 + j + 8, s11);
            _mm256_storeu_ps(c2 + j, s20), _mm256_storeu_ps(c2 + j + 8, s21);
            _mm256_storeu_ps(c3 + j, s30), _mm256_storeu_ps(c3 + j + 8, s31);
        }
        for (; j + 8 <= N; j += 8) {
            __m256 s0, s1, s2, s3;
            if (acc) {
                s0 = _mm256_loadu_ps(c0 + j), s1 = _mm256_loadu_ps(c1 + j);
                s2 = _mm256_loadu_ps(c2 + j), s3 = _mm256_loadu_ps(c3 + j);
            } else {
                s0 = s1 = s2 = s3 = _mm256_setzero_ps();
            }
            const float *b = B + j;
            for (int64_t k = 0; k < K; k++, b += ldb) {
                __m256 b0 = _mm256_loadu_ps(b);
                s0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a0 + k), b0, s0);
                s1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a1 + k), b0, s1);
                s2 = _mm256_fmadd_ps(_mm256_broadcast_ss(a2 + k), b0, s2);
                s3 = _mm256_fmadd_ps(_mm256_broadcast_ss(a3 + k), b0, s3);
            }
            _mm256_storeu_ps(c0 + j, s0), _mm256_storeu_ps(c1 + j, s1);
            _mm256_storeu_ps(c2 + j, s2), _mm256_storeu_ps(c3 + j, s3);
        }
        for (; j < N; j++) {
            float s0 = acc ? c0[j] : 0.0f, s1 = acc ? c1[j] : 0.0f, s2 = acc ? c2[j] : 0.0f, s3 = acc ? c3[j] : 0.0f;
            for (int64_t k = 0; k < K; k++) {
                float bk = B[k * ldb + j];
                s0 = fmaf(a0[k], bk, s0), s1 = fmaf(a1[k], bk, s1);
                s2 = fmaf(a2[k], bk, s2), s3 = fmaf(a3[k], bk, s3);
            }
            c0[j] = s0, c1[j] = s1, c2[j] = s2, c3[j] = s3;
        }
    }
    for (; i < m1; i++) {
        const float *a0 = A + i * lda;
        float *c0 = C + i * ldc;
        int64_t j = 0;
        for (; j + 16 <= N; j += 16) {
            __m256 s0 = acc ? _mm256_loadu_ps(c0 + j) : _mm256_setzero_ps();
            __m256 s1 = acc ? _mm256_loadu_ps(c0 + j + 8) : _mm256_setzero_ps();
            const float *b = B + j;
            for (int64_t k = 0; k < K; k++, b += ldb) {
                __m256 a = _mm256_broadcast_ss(a0 + k);
                s0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(b), s0);
                s1 = _mm256_fmadd_ps(a, _mm256_loadu_ps(b + 8), s1);
            }
            _mm256_storeu_ps(c0 + j, s0), _mm256_storeu_ps(c0 + j + 8, s1);
        }
        for (; j + 8 <= N; j += 8) {
            __m256 s0 = acc ? _mm256_loadu_ps(c0 + j) : _mm256_setzero_ps();
            const float *b = B + j;
            for (int64_t k = 0; k < K; k++, b += ldb)
                s0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a0 + k), _mm256_loadu_ps(b), s0);
            _mm256_storeu_ps(c0 + j, s0);
        }
        for (; j < N; j++) {
            float s0 = acc ? c0[j] : 0.0f;
            for (int64_t k = 0; k < K; k++) s0 = fmaf(a0[k], B[k * ldb + j], s0);
            c0[j] = s0;
        }
    }
}

/* exp(x) for x in about [-88, 88] (callers clamp): 2^(x log2 e) as 2^i times a
 * degree-6 polynomial of the fraction; relative error ~2e-7. */
static inline __m256 exp_ps(__m256 x) {
    const __m256 log2e = _mm256_set1_ps(1.44269504f);
    __m256 t = _mm256_mul_ps(x, log2e);
    __m256 fi = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(t, fi); /* [-0.5, 0.5] */
    /* 2^f = exp(f ln2): Taylor in f ln2 to degree 6 */
    __m256 u = _mm256_mul_ps(f, _mm256_set1_ps(0.693147181f));
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fi), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* g[i] = scale * (y ? pos_w * (s - 1) : s), s = sigmoid(l[i]): the gradient
 * of the weighted cross-entropy with respect to the logit. */
void predictor_bce_grad_avx2(const float *l, const uint8_t *y, float *g, int64_t n, float pos_w, float scale) {
    const __m256 one = _mm256_set1_ps(1.0f), lo = _mm256_set1_ps(-80.0f), hi = _mm256_set1_ps(80.0f);
    const __m256 vs = _mm256_set1_ps(scale), vps = _mm256_set1_ps(pos_w * scale);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_loadu_ps(l + i), lo), hi);
        __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), v))));
        /* labels are bytes 0/1: widen 8 of them to a lane mask */
        __m128i yb = _mm_loadl_epi64((const __m128i *)(const void *)(y + i));
        __m256i yi = _mm256_cvtepu8_epi32(yb);
        __m256 pos = _mm256_castsi256_ps(_mm256_cmpgt_epi32(yi, _mm256_setzero_si256()));
        __m256 gp = _mm256_mul_ps(vps, _mm256_sub_ps(s, one));
        __m256 gn = _mm256_mul_ps(vs, s);
        _mm256_storeu_ps(g + i, _mm256_blendv_ps(gn, gp, pos));
    }
    for (; i < n; i++) {
        float v = fminf(fmaxf(l[i], -80.0f), 80.0f);
        float s = 1.0f / (1.0f + expf(-v));
        g[i] = y[i] ? pos_w * scale * (s - 1.0f) : scale * s;
    }
}

/* One AdamW step over n parameters (see adam_range in predictor.c, whose
 * arithmetic this repeats operation for operation, without fused
 * multiply-adds, so an element gets the same value in either loop). */
void predictor_adam_avx2(float *p, const float *g, float *m, float *v, int64_t n, float b1, float b2, float lr_t,
                         float eps_t, float decay) {
    const __m256 vb1 = _mm256_set1_ps(b1), vb1c = _mm256_set1_ps(1.0f - b1);
    const __m256 vb2 = _mm256_set1_ps(b2), vb2c = _mm256_set1_ps(1.0f - b2);
    const __m256 vlr = _mm256_set1_ps(lr_t), veps = _mm256_set1_ps(eps_t), vdec = _mm256_set1_ps(decay);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i), pi = _mm256_loadu_ps(p + i);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(vb1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(vb1c, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(vb2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(vb2c, gi), gi));
        __m256 step = _mm256_div_ps(_mm256_mul_ps(vlr, mi), _mm256_add_ps(_mm256_sqrt_ps(vi), veps));
        pi = _mm256_sub_ps(pi, _mm256_add_ps(step, _mm256_mul_ps(vdec, pi)));
        _mm256_storeu_ps(m + i, mi), _mm256_storeu_ps(v + i, vi), _mm256_storeu_ps(p + i, pi);
    }
    for (; i < n; i++) {
        float t1 = b1 * m[i], t2 = (1.0f - b1) * g[i];
        float mi = t1 + t2;
        float t3 = b2 * v[i], t4 = (1.0f - b2) * g[i];
        t4 = t4 * g[i];
        float vi = t3 + t4;
        float num = lr_t * mi, den = sqrtf(vi);
        den = den + eps_t;
        float step = num / den, dec = decay * p[i];
        step = step + dec;
        m[i] = mi, v[i] = vi, p[i] = p[i] - step;
    }
}
