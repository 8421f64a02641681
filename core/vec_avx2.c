/* vec_avx2: AVX2/FMA bodies of vec.h (this file is built with -mavx2 -mfma). */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

float vec_dot_f32_avx2(const float *a, const float *b, int n);
void vec_axpy_f32_avx2(float *y, float alpha, const float *x, int n);
void vec_dots_f32_i8_avx2(const float *q, int nq, const int8_t *k, int n, float *out);
void vec_dots_f32_q4_avx2(const float *q, int nq, const uint8_t *k, int n, float *out);
void vec_i8_to_f32_avx2(float *out, const int8_t *k, float d, int n);
void vec_q4_to_f32_avx2(float *out, const uint8_t *k, float d, int n);
float vec_bound_f32_avx2(const float *q, int nq, const float *lo, const float *hi, int n);
void vec_dots_f32_avx2(const float *q, int nq, const float *k, int n, float *out);
void vec_axpys_f32_avx2(float *y, int ny, const float *alpha, const float *x, int n);

float vec_dot_f32_avx2(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s0 = _mm256_add_ps(s0, s1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float s = _mm_cvtss_f32(h);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

void vec_axpy_f32_avx2(float *y, float alpha, const float *x, int n) {
    const __m256 va = _mm256_set1_ps(alpha);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += alpha * x[i];
}

static float hsum(__m256 s) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* Channels c..c+7 of a quantized row as floats. */
static __m256 i8_chunk(const int8_t *k, int c) {
    int64_t b;
    memcpy(&b, k + c, 8);
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(b)));
}

static __m256 q4_chunk(const uint8_t *k, int c) { /* c a multiple of 8: bytes c/2 .. c/2+3 */
    int32_t b;
    memcpy(&b, k + c / 2, 4);
    const __m128i x = _mm_cvtsi32_si128(b), m = _mm_set1_epi8(15);
    const __m128i lo = _mm_and_si128(x, m), hi = _mm_and_si128(_mm_srli_epi16(x, 4), m);
    const __m256i w = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi)), _mm256_set1_epi32(8));
    return _mm256_cvtepi32_ps(w);
}

static int q4_at(const uint8_t *k, int c) { return ((k[c / 2] >> (4 * (c & 1))) & 15) - 8; }

static int i8_at(const int8_t *k, int c) { return k[c]; }

/* m queries (a constant where it is inlined, so the sums live in registers)
 * over one row, each in two partial sums, chunks of 8 channels alternating
 * between them as vec_dot_f32_avx2 keeps them: a query's dot does not depend
 * on the others. The row's chunks are converted once for the m. */
#define DEFINE_DOTS_BLOCK(name, T, chunk, at)                                                                        \
    static inline __attribute__((always_inline)) void name(const float *q, const int m, const T *k, int n,           \
                                                           float *out) {                                             \
        __m256 s0[4], s1[4];                                                                                         \
        _Pragma("GCC unroll 4") for (int j = 0; j < m; j++) s0[j] = s1[j] = _mm256_setzero_ps();                     \
        int c = 0;                                                                                                   \
        for (; c + 16 <= n; c += 16) {                                                                               \
            const __m256 k0 = chunk(k, c), k1 = chunk(k, c + 8);                                                     \
            _Pragma("GCC unroll 4") for (int j = 0; j < m; j++) {                                                    \
                s0[j] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)j * n + c), k0, s0[j]);                          \
                s1[j] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)j * n + c + 8), k1, s1[j]);                      \
            }                                                                                                        \
        }                                                                                                            \
        if (c + 8 <= n) {                                                                                            \
            const __m256 k0 = chunk(k, c);                                                                           \
            _Pragma("GCC unroll 4") for (int j = 0; j < m; j++) s0[j] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)j * n + c), k0, s0[j]); \
            c += 8;                                                                                                  \
        }                                                                                                            \
        _Pragma("GCC unroll 4") for (int j = 0; j < m; j++) {                                                        \
            float r = hsum(_mm256_add_ps(s0[j], s1[j]));                                                             \
            for (int i = c; i < n; i++) r += q[(size_t)j * n + i] * (float)at(k, i);                                 \
            out[j] = r;                                                                                              \
        }                                                                                                            \
    }
static __m256 f32_chunk(const float *k, int c) { return _mm256_loadu_ps(k + c); }
static float f32_at(const float *k, int c) { return k[c]; }
DEFINE_DOTS_BLOCK(dots_f32_block, float, f32_chunk, f32_at)
DEFINE_DOTS_BLOCK(dots_i8_block, int8_t, i8_chunk, i8_at)
DEFINE_DOTS_BLOCK(dots_q4_block, uint8_t, q4_chunk, q4_at)

/* four queries at a time, then the rest in one block */
#define DEFINE_DOTS(name, T, block)                                                                                  \
    void name(const float *q, int nq, const T *k, int n, float *out) {                                               \
        int j = 0;                                                                                                   \
        for (; j + 4 <= nq; j += 4) block(q + (size_t)j * n, 4, k, n, out + j);                                      \
        switch (nq - j) {                                                                                            \
        case 3: block(q + (size_t)j * n, 3, k, n, out + j); break;                                                   \
        case 2: block(q + (size_t)j * n, 2, k, n, out + j); break;                                                   \
        case 1: block(q + (size_t)j * n, 1, k, n, out + j); break;                                                   \
        default: break;                                                                                              \
        }                                                                                                            \
    }
DEFINE_DOTS(vec_dots_f32_avx2, float, dots_f32_block)
DEFINE_DOTS(vec_dots_f32_i8_avx2, int8_t, dots_i8_block)
DEFINE_DOTS(vec_dots_f32_q4_avx2, uint8_t, dots_q4_block)

void vec_i8_to_f32_avx2(float *out, const int8_t *k, float d, int n) {
    const __m256 vd = _mm256_set1_ps(d);
    int c = 0;
    for (; c + 8 <= n; c += 8) _mm256_storeu_ps(out + c, _mm256_mul_ps(i8_chunk(k, c), vd));
    for (; c < n; c++) out[c] = (float)k[c] * d;
}

void vec_q4_to_f32_avx2(float *out, const uint8_t *k, float d, int n) {
    const __m256 vd = _mm256_set1_ps(d);
    int c = 0;
    for (; c + 8 <= n; c += 8) _mm256_storeu_ps(out + c, _mm256_mul_ps(q4_chunk(k, c), vd));
    for (; c < n; c++) out[c] = (float)q4_at(k, c) * d;
}

/* The lanes of vec_bound_f32's definition are the vector's: chunk after
 * chunk, then the tail's channels into lanes 0.. in turn, then pairwise. */
float vec_bound_f32_avx2(const float *q, int nq, const float *lo, const float *hi, int n) {
    float best = -INFINITY;
    const int n8 = n & ~7;
    for (int j = 0; j < nq; j++) {
        const float *qj = q + (size_t)j * n;
        __m256 s = _mm256_setzero_ps();
        for (int c = 0; c < n8; c += 8) {
            const __m256 x = _mm256_loadu_ps(qj + c);
            const __m256 a = _mm256_mul_ps(x, _mm256_loadu_ps(lo + c)), b = _mm256_mul_ps(x, _mm256_loadu_ps(hi + c));
            s = _mm256_add_ps(s, _mm256_max_ps(a, b)); /* a > b ? a : b */
        }
        float l[8];
        _mm256_storeu_ps(l, s);
        for (int c = n8; c < n; c++) {
            const float a = qj[c] * lo[c], b = qj[c] * hi[c];
            l[c - n8] += a > b ? a : b;
        }
        const float r = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
        best = r > best ? r : best;
    }
    return best;
}

/* each y row as vec_axpy_f32_avx2 leaves it; x's chunk loaded once for all */
void vec_axpys_f32_avx2(float *y, int ny, const float *alpha, const float *x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 xv = _mm256_loadu_ps(x + i);
        for (int j = 0; j < ny; j++) {
            float *yj = y + (size_t)j * n + i;
            _mm256_storeu_ps(yj, _mm256_fmadd_ps(_mm256_set1_ps(alpha[j]), xv, _mm256_loadu_ps(yj)));
        }
    }
    for (int j = 0; j < ny; j++)
        for (int c = i; c < n; c++) y[(size_t)j * n + c] += alpha[j] * x[c];
}
