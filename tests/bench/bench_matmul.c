/* bench_matmul: GEMV and prefill speed of matmul per weight type.
 *
 *   bench_matmul [--tiny] [--no-ref] [-r REPEATS] [TYPE...]
 *
 * Shapes: the default model's FFN up/gate (n_in 576 -> n_out 1536) and its
 * LM head (576 -> 49152). Reports the median of repeats: GB/s of weights
 * streamed and GFLOP/s (2 flops per weight per token), with 1 and 2 threads;
 * prefill GFLOP/s (n_tok 512 on the FFN shape, 64 on the LM head) and its
 * speed-up over as many separate GEMVs. After the fast (AVX2) numbers the program re-executes
 * itself with HEARTH_NO_SIMD=1 to print the scalar reference numbers
 * (--no-ref skips that). --tiny runs tiny sizes once (a smoke test). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "matmul.h"
#include "quant.h"

static uint64_t rng = 0x243F6A8885A308D3ull;
static float rng_normal(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    uint64_t a = rng * 0x2545F4914F6CDD1Dull;
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    uint64_t b = rng * 0x2545F4914F6CDD1Dull;
    double u1 = ((a >> 11) + 1) * 0x1p-53, u2 = (b >> 11) * 0x1p-53;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* 64 distinct quantized rows of gaussian data, repeated to n_out rows (real
 * scales, and quick to build even for 49152 rows) */
static void *make_weights(enum hearth_type wt, int64_t n_in, int64_t n_out) {
    const struct quant_traits *tr = quant_traits(wt);
    size_t row = hearth_row_size((uint32_t)wt, n_in);
    uint8_t *w = malloc(row * (size_t)n_out);
    float *f = malloc((size_t)n_in * sizeof(float));
    if (!w || !f) {
        fprintf(stderr, "bench_matmul: out of memory\n");
        exit(1);
    }
    for (int64_t r = 0; r < n_out; r++) {
        if (r < 64) {
            for (int64_t i = 0; i < n_in; i++)
                f[i] = rng_normal() * 0.05f;
            tr->from_float_ref(f, w + (size_t)r * row, n_in);
        } else {
            memcpy(w + (size_t)r * row, w + (size_t)(r % 64) * row, row);
        }
    }
    free(f);
    return w;
}

/* median seconds of `reps` matmul calls; w8: the same rows interleaved by 8
 * (quant.h, repack8), or NULL */
static double time_matmul(struct tpool *tp, enum hearth_type wt, const void *w, const void *w8, const float *x,
                          float *y, int64_t n_in, int64_t n_out, int64_t n_tok, int reps, struct matmul_scratch *s) {
    char err[256];
    double t[64];
    if (reps > 64)
        reps = 64;
    const struct matmul_in in = {x, NULL, NULL};
    const size_t row = hearth_row_size((uint32_t)wt, n_in);
    const struct matmul_out o = {.w = w, .wt = wt, .n_out = n_out, .r1 = n_out, .y = y, .w8 = w8,
                                 .w8_stride = 8 * row, .n8 = w8 ? n_out / 8 * 8 : 0};
    /* one warm-up call: scratch allocation, page faults, caches */
    if (matmul_fused(tp, &in, n_in, n_tok, &o, 1, s, err, sizeof err) != 0) {
        fprintf(stderr, "bench_matmul: %s\n", err);
        exit(1);
    }
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        matmul_fused(tp, &in, n_in, n_tok, &o, 1, s, err, sizeof err);
        t[r] = now_s() - t0;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    return t[reps / 2];
}

int main(int argc, char **argv) {
    int tiny = 0, no_ref = 0, reps = 0;
    enum hearth_type types[32];
    int n_types = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tiny"))
            tiny = 1;
        else if (!strcmp(argv[i], "--no-ref"))
            no_ref = 1;
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: bench_matmul [--tiny] [--no-ref] [-r REPEATS] [TYPE...]\n");
            return 0;
        } else {
            int found = 0;
            for (uint32_t t = 0; t < HEARTH_TYPE_COUNT && n_types < 32; t++)
                if (quant_traits((enum hearth_type)t) && !strcmp(hearth_type_name(t), argv[i])) {
                    types[n_types++] = (enum hearth_type)t;
                    found = 1;
                }
            if (!found) {
                fprintf(stderr, "bench_matmul: unknown argument or type '%s'\n", argv[i]);
                return 2;
            }
        }
    }
    if (!n_types) {
        static const enum hearth_type def[] = {HEARTH_TYPE_Q4_1, HEARTH_TYPE_Q8_0, HEARTH_TYPE_Q4_0,
                                               HEARTH_TYPE_Q5_0, HEARTH_TYPE_Q5_1, HEARTH_TYPE_Q4_K,
                                               HEARTH_TYPE_Q5_K, HEARTH_TYPE_Q6_K, HEARTH_TYPE_F16,
                                               HEARTH_TYPE_BF16, HEARTH_TYPE_F32};
        n_types = (int)(sizeof def / sizeof def[0]);
        memcpy(types, def, sizeof def);
    }
    const int scalar = !quant_have_avx2();
    if (!reps)
        reps = tiny ? 1 : scalar ? 3 : 9;
    const int pp_tok = tiny ? 5 : 512;
    const int pp_reps = tiny ? 1 : scalar ? 1 : 3;
    struct {
        int64_t n_in, n_out;
    } shapes[2] = {{576, 1536}, {576, 49152}};
    if (tiny) {
        shapes[0].n_in = shapes[1].n_in = 256;
        shapes[0].n_out = 33;
        shapes[1].n_out = 70;
    }

    char err[256];
    struct tpool *pools[2];
    for (int i = 0; i < 2; i++)
        if (!(pools[i] = tpool_create(i + 1, err, sizeof err))) {
            fprintf(stderr, "bench_matmul: %s\n", err);
            return 1;
        }
    struct matmul_scratch s = MATMUL_SCRATCH_INIT;
    const int64_t max_in = (shapes[0].n_in + 255) / 256 * 256; /* room for K types' n_in */
    float *x = malloc((size_t)max_in * pp_tok * sizeof(float));
    const int64_t ny0 = shapes[0].n_out * pp_tok, ny1 = shapes[1].n_out * (tiny ? pp_tok : 64);
    float *y = malloc((size_t)(ny0 > ny1 ? ny0 : ny1) * sizeof(float));
    if (!x || !y) {
        fprintf(stderr, "bench_matmul: out of memory\n");
        return 1;
    }
    for (int64_t i = 0; i < max_in * pp_tok; i++)
        x[i] = rng_normal();

    printf("bench_matmul: kernels %s, median of %d (prefill %d)\n", scalar ? "scalar reference" : "avx2", reps,
           pp_reps);
    printf("%-7s %-12s %3s %9s %9s %9s\n", "type", "shape", "thr", "GEMV us", "GB/s", "GFLOP/s");
    for (int k = 0; k < n_types; k++) {
        enum hearth_type wt = types[k];
        for (int sh = 0; sh < 2; sh++) {
            /* K types need n_in a multiple of 256: 768 stands in for 576 */
            int64_t blck = quant_traits(wt)->blck;
            int64_t n_in = (shapes[sh].n_in + blck - 1) / blck * blck, n_out = shapes[sh].n_out;
            void *w = make_weights(wt, n_in, n_out);
            const struct quant_traits *tr = quant_traits(wt);
            const size_t row = hearth_row_size((uint32_t)wt, n_in);
            uint8_t *w8 = tr->repack8 ? malloc(row * (size_t)n_out) : NULL;
            for (int64_t g = 0; w8 && g < n_out / 8; g++)
                tr->repack8((const uint8_t *)w + (size_t)g * 8 * row, row, w8 + (size_t)g * 8 * row, n_in);
            double bytes = (double)hearth_row_size((uint32_t)wt, n_in) * (double)n_out;
            double flops = 2.0 * (double)n_in * (double)n_out;
            char shape[32];
            snprintf(shape, sizeof shape, "%lldx%lld", (long long)n_out, (long long)n_in);
            for (int v = 0; v < (w8 ? 4 : 2); v++) {
                const int p = v % 2;
                const void *wv = v >= 2 ? w8 : NULL; /* rows, then interleaved by 8 */
                char name[16];
                snprintf(name, sizeof name, "%s%s", hearth_type_name((uint32_t)wt), wv ? "x8" : "");
                double t = time_matmul(pools[p], wt, w, wv, x, y, n_in, n_out, 1, reps, &s);
                printf("%-7s %-12s %3d %9.1f %9.2f %9.2f\n", name, shape, p + 1, t * 1e6, bytes / t * 1e-9,
                       flops / t * 1e-9);
                /* prefill: 512 tokens on the FFN shape, 64 on the LM head
                 * (whose 49152 outputs per token make y large) */
                int nt = sh == 0 ? pp_tok : (tiny ? pp_tok : 64);
                if (!scalar || sh == 0) {
                    double tp = time_matmul(pools[p], wt, w, wv, x, y, n_in, n_out, nt, pp_reps, &s);
                    printf("%-7s %-12s %3d prefill n_tok=%d: %.1f ms, %.2f GFLOP/s, %.1fx the GEMV rate\n", name,
                           shape, p + 1, nt, tp * 1e3, flops * nt / tp * 1e-9, t * nt / tp);
                }
            }
            free(w);
            free(w8);
        }
        fflush(stdout);
    }
    matmul_scratch_free(&s);
    free(x);
    free(y);
    for (int i = 0; i < 2; i++)
        tpool_destroy(pools[i]);

    if (!scalar && !no_ref && !tiny && !getenv("HEARTH_NO_SIMD")) {
        fflush(stdout);
        setenv("HEARTH_NO_SIMD", "1", 1);
        execv("/proc/self/exe", argv);
        perror("bench_matmul: re-exec for the reference numbers");
        return 1;
    }
    return 0;
}
