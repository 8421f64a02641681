/* vec: see vec.h. The choice is made once; both versions are exercised by
 * tests/test_vec.c. */
#include "vec.h"

#include <math.h>
#include <pthread.h>

#include "quant.h"

#if defined(HEARTH_HAVE_AVX2_BUILD)
float vec_dot_f32_avx2(const float *a, const float *b, int n);
void vec_axpy_f32_avx2(float *y, float alpha, const float *x, int n);
void vec_dots_f32_i8_avx2(const float *q, int nq, const int8_t *k, int n, float *out);
void vec_dots_f32_q4_avx2(const float *q, int nq, const uint8_t *k, int n, float *out);
void vec_i8_to_f32_avx2(float *out, const int8_t *k, float d, int n);
void vec_q4_to_f32_avx2(float *out, const uint8_t *k, float d, int n);
float vec_bound_f32_avx2(const float *q, int nq, const float *lo, const float *hi, int n);
void vec_dots_f32_avx2(const float *q, int nq, const float *k, int n, float *out);
void vec_axpys_f32_avx2(float *y, int ny, const float *alpha, const float *x, int n);
#endif

static float dot_scalar(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_scalar(float *y, float alpha, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += alpha * x[i];
}

static void dots_scalar(const float *q, int nq, const float *k, int n, float *out) {
    for (int j = 0; j < nq; j++) out[j] = dot_scalar(q + (size_t)j * n, k, n);
}

static void axpys_scalar(float *y, int ny, const float *alpha, const float *x, int n) {
    for (int j = 0; j < ny; j++) axpy_scalar(y + (size_t)j * n, alpha[j], x, n);
}

static int q4_at(const uint8_t *k, int c) { return ((k[c / 2] >> (4 * (c & 1))) & 15) - 8; }

static void dots_i8_scalar(const float *q, int nq, const int8_t *k, int n, float *out) {
    for (int j = 0; j < nq; j++) {
        float s = 0.0f;
        for (int c = 0; c < n; c++) s += q[(size_t)j * n + c] * (float)k[c];
        out[j] = s;
    }
}

static void dots_q4_scalar(const float *q, int nq, const uint8_t *k, int n, float *out) {
    for (int j = 0; j < nq; j++) {
        float s = 0.0f;
        for (int c = 0; c < n; c++) s += q[(size_t)j * n + c] * (float)q4_at(k, c);
        out[j] = s;
    }
}

static void i8_to_f32_scalar(float *out, const int8_t *k, float d, int n) {
    for (int c = 0; c < n; c++) out[c] = (float)k[c] * d;
}

static void q4_to_f32_scalar(float *out, const uint8_t *k, float d, int n) {
    for (int c = 0; c < n; c++) out[c] = (float)q4_at(k, c) * d;
}

static float bound_scalar(const float *q, int nq, const float *lo, const float *hi, int n) {
    float best = -INFINITY;
    for (int j = 0; j < nq; j++) {
        const float *qj = q + (size_t)j * n;
        float s[8] = {0};
        for (int c = 0; c < n; c++) {
            const float a = qj[c] * lo[c], b = qj[c] * hi[c];
            s[c % 8] += a > b ? a : b;
        }
        const float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
        best = r > best ? r : best;
    }
    return best;
}

static float (*g_dot)(const float *, const float *, int);
static void (*g_axpy)(float *, float, const float *, int);
static void (*g_dots_i8)(const float *, int, const int8_t *, int, float *);
static void (*g_dots_q4)(const float *, int, const uint8_t *, int, float *);
static void (*g_i8_to_f32)(float *, const int8_t *, float, int);
static void (*g_q4_to_f32)(float *, const uint8_t *, float, int);
static float (*g_bound)(const float *, int, const float *, const float *, int);
static void (*g_dots)(const float *, int, const float *, int, float *);
static void (*g_axpys)(float *, int, const float *, const float *, int);
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void vec_init(void) {
    g_dot = dot_scalar;
    g_axpy = axpy_scalar;
    g_dots_i8 = dots_i8_scalar;
    g_dots_q4 = dots_q4_scalar;
    g_i8_to_f32 = i8_to_f32_scalar;
    g_q4_to_f32 = q4_to_f32_scalar;
    g_bound = bound_scalar;
    g_dots = dots_scalar;
    g_axpys = axpys_scalar;
#if defined(HEARTH_HAVE_AVX2_BUILD)
    if (quant_have_avx2()) { /* the same CPU check and HEARTH_NO_SIMD rule as the quant kernels */
        g_dot = vec_dot_f32_avx2;
        g_axpy = vec_axpy_f32_avx2;
        g_dots_i8 = vec_dots_f32_i8_avx2;
        g_dots_q4 = vec_dots_f32_q4_avx2;
        g_i8_to_f32 = vec_i8_to_f32_avx2;
        g_q4_to_f32 = vec_q4_to_f32_avx2;
        g_bound = vec_bound_f32_avx2;
        g_dots = vec_dots_f32_avx2;
        g_axpys = vec_axpys_f32_avx2;
    }
#endif
}

float vec_dot_f32(const float *a, const float *b, int n) {
    pthread_once(&g_once, vec_init);
    return g_dot(a, b, n);
}

void vec_axpy_f32(float *y, float alpha, const float *x, int n) {
    pthread_once(&g_once, vec_init);
    g_axpy(y, alpha, x, n);
}

void vec_dots_f32_i8(const float *q, int nq, const int8_t *k, int n, float *out) {
    pthread_once(&g_once, vec_init);
    g_dots_i8(q, nq, k, n, out);
}

void vec_dots_f32_q4(const float *q, int nq, const uint8_t *k, int n, float *out) {
    pthread_once(&g_once, vec_init);
    g_dots_q4(q, nq, k, n, out);
}

void vec_i8_to_f32(float *out, const int8_t *k, float d, int n) {
    pthread_once(&g_once, vec_init);
    g_i8_to_f32(out, k, d, n);
}

void vec_q4_to_f32(float *out, const uint8_t *k, float d, int n) {
    pthread_once(&g_once, vec_init);
    g_q4_to_f32(out, k, d, n);
}

float vec_bound_f32(const float *q, int nq, const float *lo, const float *hi, int n) {
    pthread_once(&g_once, vec_init);
    return g_bound(q, nq, lo, hi, n);
}

void vec_dots_f32(const float *q, int nq, const float *k, int n, float *out) {
    pthread_once(&g_once, vec_init);
    g_dots(q, nq, k, n, out);
}

void vec_axpys_f32(float *y, int ny, const float *alpha, const float *x, int n) {
    pthread_once(&g_once, vec_init);
    g_axpys(y, ny, alpha, x, n);
}
