/* ffn_sum: see ffn_sum.h. */
#include "ffn_sum.h"

#include <pthread.h>

#include "quant.h"

#if defined(HEARTH_HAVE_AVX2_BUILD)
void ffn_acc_add_fixed_avx2(int64_t *acc, const float *y, size_t count); /* ffn_sum_avx2.c */
#endif

void ffn_acc_add_to(float *x, const int64_t *acc, size_t count) {
    const double scale = 1.0 / (double)(1ull << FFN_FIXED_SHIFT);
    for (size_t i = 0; i < count; i++) x[i] += (float)((double)acc[i] * scale);
}

void ffn_acc_add_fixed(int64_t *acc, const float *y, size_t count) {
    const double scale = (double)(1ull << FFN_FIXED_SHIFT), lim = 9.0e18;
    for (size_t i = 0; i < count; i++) {
        double v = (double)y[i] * scale;
        if (!(v > -lim)) v = -lim; /* also NaN */
        if (v > lim) v = lim;
        acc[i] += (int64_t)llrint(v);
    }
}

static void (*g_add)(int64_t *acc, const float *y, size_t count);
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void add_init(void) {
    g_add = ffn_acc_add_fixed;
#if defined(HEARTH_HAVE_AVX2_BUILD)
    if (quant_have_avx2()) g_add = ffn_acc_add_fixed_avx2; /* the quant kernels' CPU check and HEARTH_NO_SIMD */
#endif
}

void ffn_acc_add_fixed_fast(int64_t *acc, const float *y, size_t count) {
    pthread_once(&g_once, add_init);
    g_add(acc, y, count);
}
