/* bench_insparse: one token's product (decode) on the real model's matrices
 * of one layer, dense (matmul_fused over the model's rows, repacked into
 * 8-row groups as the forward pass runs them) against insparse_matmul over
 * the input-major copy (Q4_1 and Q8_0) at several densities (the share of
 * inputs active; |x| thresholded at its quantile, x gaussian), and
 * insparse_q4t_matmul (the model's own Q4_1 nibbles input-major, the
 * integer kernel) on the masked x.
 *
 *   bench_insparse [-m MODEL] [-l LAYER] [-t THREADS] [-r REPS] [--tiny]
 *
 * MODEL: -m, else $HEARTH_TEST_MODEL, else the default SmolLM2 Q4_1 in
 * ~/.cache/hearth/models. Prints, per matrix, the median microseconds per
 * token and the weight bytes read; the ratio dense / sparse is the speed-up
 * (> 1: sparse pays). Reps alternate dense and sparse so that a noisy
 * machine shifts both. --tiny: 3 reps, for ctest to keep it running. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "insparse.h"
#include "matmul.h"
#include "model.h"
#include "tpool.h"

#include "../check.h"

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const char *model = getenv("HEARTH_TEST_MODEL");
    int layer = 10, threads = 1, reps = 200;
    static char def[512];
    if (!model || !model[0]) {
        snprintf(def, sizeof def, "%s/.cache/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf", getenv("HOME"));
        model = def;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tiny")) {
            reps = 3;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_insparse: %s needs a value\n", argv[i]);
            return 2;
        }
        if (!strcmp(argv[i], "-m")) model = argv[i + 1];
        else if (!strcmp(argv[i], "-l")) layer = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) reps = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_insparse: unknown option %s (see its header)\n", argv[i]);
            return 2;
        }
        i++;
    }
    char err[256];
    struct llama_model m;
    FILE *probe = fopen(model, "rb");
    if (!probe) {
        printf("SKIP: no model at %s\n", model);
        return 77;
    }
    fclose(probe);
    if (model_load(&m, model, err, sizeof err) || model_repack_all(&m, 1, NULL, err, sizeof err)) {
        fprintf(stderr, "bench_insparse: %s\n", err);
        return 1;
    }
    if (layer < 0 || layer >= m.cfg.n_layers) layer = 0;
    struct tpool *tp = tpool_create(threads, err, sizeof err);
    if (!tp) {
        fprintf(stderr, "bench_insparse: %s\n", err);
        return 1;
    }
    check_seed(0xBE7C415Bull);
    const struct llama_layer *L = &m.layers[layer];
    const struct weight *mats[4] = {&L->wq, &L->wk, &L->w_up, &L->w_down};
    const char *names[4] = {"q", "k", "up", "down"};
    const double densities[] = {1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2};
    const int nd = (int)(sizeof densities / sizeof densities[0]);
    printf("bench_insparse: %s layer %d, %d threads, %d reps, kernels %s\n", model, layer, threads, reps, quant_isa());
    printf("| matrix | n_in x n_out | dense us (bytes) | copy | density: sparse us, dense/sparse |\n");
    for (int k = 0; k < 4; k++) {
        const struct weight *w = mats[k];
        const int64_t n_in = w->n_in, n_out = w->n_out;
        float *x = xmalloc((size_t)n_in * sizeof(float)), *y = xmalloc((size_t)n_out * sizeof(float));
        float *a = xmalloc((size_t)n_in * sizeof(float));
        int64_t *acc = xmalloc((size_t)n_out * sizeof(int64_t));
        for (int64_t i = 0; i < n_in; i++) {
            x[i] = rnd_normal();
            a[i] = fabsf(x[i]);
        }
        qsort(a, (size_t)n_in, sizeof(float), cmp_float);
        struct matmul_scratch ms = MATMUL_SCRATCH_INIT;
        struct matmul_out o = {.w = w->data, .wt = (enum hearth_type)w->type, .n_out = n_out, .r0 = 0, .r1 = n_out, .y = y};
        if (w->x8 && w->x8_r0 == 0 && w->x8_c0 == 0 && w->x8_c1 == n_in) {
            o.w8 = w->x8;
            o.w8_stride = w->x8_stride;
            o.n8 = w->x8_r1 / 8 * 8;
        }
        const struct matmul_in in = {x, NULL, NULL};
        float *xm = xmalloc((size_t)n_in * sizeof(float));
        for (int f = 0; f < 3; f++) {
            struct insparse_mat im;
            struct insparse_scratch ss;
            struct insparse_q4t qt = {0};
            void *qscr = NULL;
            if (f == 2) {
                if (insparse_q4t_build(&qt, w, err, sizeof err)) {
                    printf("| %s | q4t: %s |\n", names[k], err);
                    continue;
                }
                qscr = xmalloc(insparse_q4t_scratch_bytes(&qt, 1));
            }
            if (insparse_build(&im, w, f == 1 ? INSPARSE_Q8_0 : INSPARSE_Q4_1, err, sizeof err) ||
                insparse_scratch_create(&ss, n_in, n_out, 1, err, sizeof err)) {
                fprintf(stderr, "bench_insparse: %s\n", err);
                return 1;
            }
            double *td = xmalloc((size_t)reps * sizeof(double)), *ts = xmalloc((size_t)reps * sizeof(double));
            double dense_us = 0;
            printf("| %s | %lld x %lld |", names[k], (long long)n_in, (long long)n_out);
            for (int di = 0; di < nd; di++) {
                /* inputs with |x| above the (1 - density) quantile */
                const float thr = densities[di] >= 1.0 ? -1.0f : a[(int64_t)((1.0 - densities[di]) * (double)n_in)];
                for (int64_t i = 0; i < n_in; i++) xm[i] = fabsf(x[i]) > thr ? x[i] : 0.0f;
                for (int r = 0; r < reps; r++) {
                    double t0 = now_us();
                    if (matmul_fused(tp, &in, n_in, 1, &o, 1, &ms, err, sizeof err)) {
                        fprintf(stderr, "bench_insparse: %s\n", err);
                        return 1;
                    }
                    double t1 = now_us();
                    memset(acc, 0, (size_t)n_out * sizeof(int64_t));
                    if (f == 2 ? insparse_q4t_matmul(&qt, xm, 1, y, qscr, tp, err, sizeof err) < 0
                               : insparse_matmul(&im, x, 1, thr, NULL, acc, NULL, &ss, tp, err, sizeof err)) {
                        fprintf(stderr, "bench_insparse: %s\n", err);
                        return 1;
                    }
                    double t2 = now_us();
                    td[r] = t1 - t0;
                    ts[r] = t2 - t1;
                }
                const double d = median(td, reps), s = median(ts, reps);
                if (di == 0) {
                    dense_us = d;
                    if (f == 2)
                        printf(" %.1f (%zu) | q4t %zu B/input |", d, model_weight_size(w), (size_t)(n_out / 2));
                    else
                        printf(" %.1f (%zu) | %s %zu B/input |", d, model_weight_size(w), insparse_fmt_name(im.fmt),
                               im.row_bytes);
                }
                printf(" %.1f: %.1f, %.2fx |", densities[di], s, d / s);
            }
            (void)dense_us;
            printf("\n");
            fflush(stdout);
            free(td);
            free(ts);
            insparse_scratch_free(&ss);
            insparse_free(&im);
            insparse_q4t_free(&qt);
            free(qscr);
        }
        free(xm);
        matmul_scratch_free(&ms);
        free(x);
        free(y);
        free(a);
        free(acc);
    }
    tpool_destroy(tp);
    model_free(&m);
    return 0;
}
