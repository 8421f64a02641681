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

static int q4_at(const uint8_t *k, int c) { return ((k[c / 2] >> (4 * (c & 1))) & 15) - 8; }

/* The quantized-row kernels: dots against a double loop, each query's dot
 * the same alone as among nq (the recall relies on it), and dequantizing
 * exactly (float)q * d. */
static int test_quantized_rows(int n) {
    enum { NQ = 11 };
    int failures = 0;
    float *q = malloc((size_t)(NQ * n + 1) * sizeof *q), *out = malloc((size_t)(n + 1) * sizeof *out);
    int8_t *k8 = malloc((size_t)n + 1);
    uint8_t *k4 = calloc((size_t)n / 2 + 1, 1);
    for (int i = 0; i < NQ * n; i++) q[i] = frand();
    for (int c = 0; c < n; c++) {
        k8[c] = (int8_t)(frand() * 127.5f);
        k4[c / 2] |= (uint8_t)((int)((frand() + 1.0f) * 7.99f) << (4 * (c & 1)));
    }
    for (int form = 0; form < 2; form++) {
        float all[NQ], one;
        for (int nq = 1; nq <= NQ; nq += 3) {
            if (form == 0) vec_dots_f32_i8(q, nq, k8, n, all);
            else vec_dots_f32_q4(q, nq, k4, n, all);
            for (int j = 0; j < nq; j++) {
                double ref = 0, mag = 0;
                for (int c = 0; c < n; c++) {
                    const double x = (double)q[(size_t)j * n + c] * (form == 0 ? k8[c] : q4_at(k4, c));
                    ref += x;
                    mag += fabs(x);
                }
                if (fabs(all[j] - ref) > 1e-6 * mag + 1e-30) {
                    printf("FAIL dots %s n=%d nq=%d j=%d: %.9g vs %.9g\n", form ? "q4" : "i8", n, nq, j, all[j], ref);
                    failures++;
                }
                if (form == 0) vec_dots_f32_i8(q + (size_t)j * n, 1, k8, n, &one);
                else vec_dots_f32_q4(q + (size_t)j * n, 1, k4, n, &one);
                if (one != all[j]) {
                    printf("FAIL dots %s n=%d: query %d of %d gives %.9g, alone %.9g\n", form ? "q4" : "i8", n, j, nq,
                           all[j], one);
                    failures++;
                }
            }
        }
        if (form == 0) { /* the page bound: the definition's eight lanes, exactly */
            float *lo = malloc((size_t)(n + 1) * sizeof *lo), *hi = malloc((size_t)(n + 1) * sizeof *hi);
            for (int c = 0; c < n; c++) lo[c] = frand(), hi[c] = lo[c] + fabsf(frand());
            for (int nq = 1; nq <= NQ; nq += 5) {
                float best = -INFINITY;
                for (int j = 0; j < nq; j++) {
                    float l[8] = {0};
                    for (int c = 0; c < n; c++) {
                        const float a = q[(size_t)j * n + c] * lo[c], b = q[(size_t)j * n + c] * hi[c];
                        l[c % 8] += a > b ? a : b;
                    }
                    best = fmaxf(best, ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])));
                }
                const float got = vec_bound_f32(q, nq, lo, hi, n);
                if (got != best) {
                    printf("FAIL bound n=%d nq=%d: %.9g vs %.9g\n", n, nq, got, best);
                    failures++;
                }
            }
            free(lo);
            free(hi);
        }
        const float d = 0.0123f;
        if (form == 0) vec_i8_to_f32(out, k8, d, n);
        else vec_q4_to_f32(out, k4, d, n);
        for (int c = 0; c < n; c++)
            if (out[c] != (float)(form == 0 ? k8[c] : q4_at(k4, c)) * d) {
                printf("FAIL %s dequantized n=%d c=%d\n", form ? "q4" : "i8", n, c);
                failures++;
                break;
            }
    }
    free(q);
    free(out);
    free(k8);
    free(k4);
    return failures;
}

/* vec_dots_f32 / vec_axpys_f32: every query and output bit for bit the
 * one-at-a-time call's (attention relies on it: core/forward.c's pass and
 * the kvcache's must agree) */
static int test_many(int n) {
    enum { NQ = 7 };
    int failures = 0;
    float *q = malloc((size_t)(NQ * n + 1) * sizeof *q), *x = malloc((size_t)(n + 1) * sizeof *x);
    float *y1 = malloc((size_t)(NQ * n + 1) * sizeof *y1), *y2 = malloc((size_t)(NQ * n + 1) * sizeof *y2);
    float alpha[NQ], dots[NQ];
    for (int i = 0; i < NQ * n; i++) q[i] = frand(), y1[i] = y2[i] = frand();
    for (int i = 0; i < n; i++) x[i] = frand() * 5.0f;
    for (int j = 0; j < NQ; j++) alpha[j] = frand();
    for (int nq = 1; nq <= NQ; nq++) {
        vec_dots_f32(q, nq, x, n, dots);
        for (int j = 0; j < nq; j++)
            if (dots[j] != vec_dot_f32(q + (size_t)j * n, x, n)) {
                printf("FAIL dots n=%d nq=%d j=%d differs from vec_dot_f32\n", n, nq, j);
                failures++;
            }
        vec_axpys_f32(y1, nq, alpha, x, n);
        for (int j = 0; j < nq; j++) vec_axpy_f32(y2 + (size_t)j * n, alpha[j], x, n);
        for (int i = 0; i < NQ * n; i++)
            if (y1[i] != y2[i]) {
                printf("FAIL axpys n=%d ny=%d at %d differs from vec_axpy_f32\n", n, nq, i);
                failures++;
                break;
            }
    }
    free(q);
    free(x);
    free(y1);
    free(y2);
    return failures;
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
        failures += test_quantized_rows(n);
        failures += test_many(n);
    }
    printf("%s\n", failures ? "vec: FAILED" : "vec: ok");
    return failures != 0;
}
