/* vec: see vec.h. The choice is made once; both versions are exercised by
 * tests/test_vec.c. */
#include "vec.h"

#include <pthread.h>

#include "quant.h"

#if defined(HEARTH_HAVE_AVX2_BUILD)
float vec_dot_f32_avx2(const float *a, const float *b, int n);
void vec_axpy_f32_avx2(float *y, float alpha, const float *x, int n);
#endif

static float dot_scalar(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_scalar(float *y, float alpha, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += alpha * x[i];
}

static float (*g_dot)(const float *, const float *, int);
static void (*g_axpy)(float *, float, const float *, int);
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void vec_init(void) {
    g_dot = dot_scalar;
    g_axpy = axpy_scalar;
#if defined(HEARTH_HAVE_AVX2_BUILD)
    if (quant_have_avx2()) { /* the same CPU check and HEARTH_NO_SIMD rule as the quant kernels */
        g_dot = vec_dot_f32_avx2;
        g_axpy = vec_axpy_f32_avx2;
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
