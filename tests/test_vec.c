/* test_vec: vec.h's float kernels against a double-precision loop, on random
 * data of awkward lengths (run twice by ctest: fast path and HEARTH_NO_SIMD). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "vec.h"

static uint64_t g_state = 0x5eed1234abcdull;
static float frand(void) {
    g_state = g_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

int main(void) {
    printf("seed 0x5eed1234abcd\n");
    static const int sizes[] = {0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 127, 128, 129, 1000, 4099};
    int failures = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int n = sizes[s];
        float *a = malloc((size_t)(n + 1) * sizeof *a), *b = malloc((size_t)(n + 1) * sizeof *b);
        float *y = malloc((size_t)(n + 1) * sizeof *y);
        double ref = 0, mag = 0;
        for (int i = 0; i < n; i++) {
            a[i] = frand();
            b[i] = frand() * 10.0f;
            y[i] = frand();
            ref += (double)a[i] * b[i];
            mag += fabs((double)a[i] * b[i]);
        }
        float got = vec_dot_f32(a, b, n);
        /* float accumulation of n terms: error <= ~n * eps * sum|a b|; 1e-6 * mag is generous for n <= 4099 */
        if (fabs(got - ref) > 1e-6 * mag + 1e-6 * (n < 64 ? 64 : n) * 1e-3) {
            printf("FAIL dot n=%d: %.9g vs %.9g\n", n, got, ref);
            failures++;
        }
        float alpha = frand() * 3.0f;
        double *want = malloc((size_t)(n + 1) * sizeof *want);
        for (int i = 0; i < n; i++) want[i] = (double)y[i] + (double)alpha * b[i];
        vec_axpy_f32(y, alpha, b, n);
        for (int i = 0; i < n; i++) {
            /* one fused or two rounded operations: within 2 ulps of the result's magnitude */
            if (fabs(y[i] - want[i]) > 2.5e-7 * (fabs(want[i]) + fabs(alpha * b[i]))) {
                printf("FAIL axpy n=%d i=%d: %.9g vs %.9g\n", n, i, y[i], want[i]);
                failures++;
                break;
            }
        }
        free(a);
        free(b);
        free(y);
        free(want);
    }
    printf("%s\n", failures ? "vec: FAILED" : "vec: ok");
    return failures != 0;
}
