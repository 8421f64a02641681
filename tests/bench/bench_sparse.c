/* bench_sparse: one layer's FFN at decode (n_tok = 1) on the real model,
 * dense (ffn_partial_layer over every neuron) vs sparse (sparse_ffn_run over
 * a random permutation of all neurons) with random candidate masks of
 * 100/60/40/20% of the neurons, once with every candidate firing
 * (threshold < 0: a predictor of perfect precision) and once with the
 * threshold at the median |h| of the layer (about half the candidates fire).
 *
 *   bench_sparse [-m MODEL] [-l LAYER] [-t THREADS] [-r REPS]
 *
 * MODEL: -m, else $HEARTH_TEST_MODEL, else the default SmolLM2 Q4_1 in
 * ~/.cache/hearth/models. Prints the median microseconds per token and the
 * weight bytes touched per token (gate/up rows of evaluated neurons, down_t
 * rows of fired ones; dense: all three matrices). The input is the layer's
 * ffn_norm times gaussian noise (realistic scale per channel). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "forward.h"
#include "matmul.h"
#include "model.h"
#include "sparse.h"
#include "tpool.h"

#include "../check.h"

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define N_MASKS 16 /* masks cycled through, so no one set of rows stays hot */

int main(int argc, char **argv) {
    const char *path = getenv("HEARTH_TEST_MODEL");
    static char def[4096];
    const uint64_t seed = 0x243F6A8885A308D3ull; /* input noise, permutation, masks */
    check_seed(seed);
    int layer = -1, n_threads = 1, reps = 400;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "-l") && i + 1 < argc) layer = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) n_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_sparse [-m MODEL] [-l LAYER] [-t THREADS] [-r REPS]\n");
            return 2;
        }
    }
    if (!path || !path[0]) {
        const char *home = getenv("HOME");
        snprintf(def, sizeof def, "%s/.cache/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : "/root");
        path = def;
    }
    if (reps < 1 || n_threads < 1) {
        fprintf(stderr, "bench_sparse: repeats and threads must be positive\n");
        return 2;
    }
    char err[512];
    struct llama_model m;
    if (model_load(&m, path, err, sizeof err) != 0) {
        fprintf(stderr, "bench_sparse: %s: %s\n", path, err);
        return 1;
    }
    const struct llama_config *c = &m.cfg;
    if (layer < 0) layer = c->n_layers / 2;
    if (layer >= c->n_layers) {
        fprintf(stderr, "bench_sparse: layer %d of %d\n", layer, c->n_layers);
        return 2;
    }
    const struct llama_layer *L = &m.layers[layer];
    const int64_t dim = c->dim, hidden = c->hidden_dim;
    struct tpool *tp = tpool_create(n_threads, err, sizeof err);
    struct ffn_scratch fs;
    struct sparse_scratch ss;
    if (!tp || ffn_scratch_create(&fs, &m, 1, err, sizeof err) != 0 ||
        sparse_scratch_create(&ss, dim, hidden, 1, err, sizeof err) != 0) {
        fprintf(stderr, "bench_sparse: %s\n", err);
        return 1;
    }
    float *xn = xmalloc((size_t)dim * sizeof(float));
    for (int64_t i = 0; i < dim; i++) xn[i] = L->ffn_norm[i] * rnd_normal();
    int64_t *acc = xmalloc((size_t)dim * sizeof(int64_t));
    double *t_us = xmalloc((size_t)reps * sizeof(double));

    /* dense */
    const size_t g_row = c->ffn_gated ? hearth_row_size(L->w_gate.type, dim) : 0;
    const size_t u_row = hearth_row_size(L->w_up.type, dim);
    const size_t dense_bytes = (size_t)hidden * (g_row + u_row) + (size_t)dim * hearth_row_size(L->w_down.type, hidden);
    for (int r = -reps / 10 - 1; r < reps; r++) {
        memset(acc, 0, (size_t)dim * sizeof *acc);
        const double t0 = now_us();
        if (ffn_partial_layer(c, L, layer, xn, 1, 0, hidden, acc, &fs, NULL, tp, err, sizeof err) != 0) {
            fprintf(stderr, "bench_sparse: dense: %s\n", err);
            return 1;
        }
        if (r >= 0) t_us[r] = now_us() - t0;
    }
    const double dense_us = median(t_us, reps);
    printf("bench_sparse: %s layer %d (d_model %lld, %lld neurons, gate %s up %s down %s), %d thread%s, median of %d, "
           "seed 0x%llx\n",
           path, layer, (long long)dim, (long long)hidden, hearth_type_name(L->w_gate.type),
           hearth_type_name(L->w_up.type), hearth_type_name(L->w_down.type), n_threads, n_threads > 1 ? "s" : "",
           reps, (unsigned long long)seed);
    printf("  %-34s %9.1f us  %8.1f KiB/token\n", "dense ffn_partial_layer", dense_us, dense_bytes / 1024.0);

    /* sparse over a random permutation of every neuron */
    int32_t *ids = xmalloc((size_t)hidden * sizeof *ids);
    for (int64_t i = 0; i < hidden; i++) ids[i] = (int32_t)i;
    for (int64_t i = hidden - 1; i > 0; i--) {
        int64_t k = (int64_t)(rnd64() % (uint64_t)(i + 1));
        int32_t tmp = ids[i];
        ids[i] = ids[k];
        ids[k] = tmp;
    }
    struct sparse_ffn sf;
    const double ti = now_us();
    if (sparse_ffn_init(&sf, c, L, ids, hidden, 0, -1.0f, err, sizeof err) != 0) {
        fprintf(stderr, "bench_sparse: %s\n", err);
        return 1;
    }
    printf("  sparse_ffn_init: %.1f ms, down_t %.1f KiB (%zu bytes per neuron)\n", (now_us() - ti) / 1000,
           (double)hidden * sparse_down_row_bytes(&sf) / 1024.0, sparse_down_row_bytes(&sf));

    /* the median |h| of this input, for the second threshold */
    float *g = xmalloc((size_t)hidden * sizeof(float)), *u = xmalloc((size_t)hidden * sizeof(float));
    double *ah = xmalloc((size_t)hidden * sizeof(double));
    struct matmul_scratch ms = MATMUL_SCRATCH_INIT;
    if (matmul(tp, u, L->w_up.data, (enum hearth_type)L->w_up.type, xn, dim, hidden, 1, &ms, err, sizeof err) != 0 ||
        (c->ffn_gated &&
         matmul(tp, g, L->w_gate.data, (enum hearth_type)L->w_gate.type, xn, dim, hidden, 1, &ms, err, sizeof err))) {
        fprintf(stderr, "bench_sparse: %s\n", err);
        return 1;
    }
    for (int64_t i = 0; i < hidden; i++) {
        const double a = c->ffn_gated ? g[i] : u[i]; /* SiLU for the estimate, whatever the model's act */
        ah[i] = fabs(a / (1 + exp(-a)) * (c->ffn_gated ? u[i] : 1.0));
    }
    const float thr_median = (float)median(ah, (int)hidden);

    uint8_t *masks = xmalloc((size_t)N_MASKS * hidden);
    const double fracs[] = {1.0, 0.6, 0.4, 0.2};
    const size_t d_row = sparse_down_row_bytes(&sf);
    for (int th = 0; th < 2; th++) {
        sf.threshold = th ? thr_median : -1.0f;
        for (int fi = 0; fi < 4; fi++) {
            for (size_t i = 0; i < (size_t)N_MASKS * hidden; i++) masks[i] = rnd_unit() < fracs[fi];
            struct sparse_stats st = {0, 0};
            for (int r = -reps / 10 - 1; r < reps; r++) {
                memset(acc, 0, (size_t)dim * sizeof *acc);
                const uint8_t *cand = fracs[fi] >= 1.0 ? NULL : masks + (size_t)((r + N_MASKS) % N_MASKS) * hidden;
                struct sparse_stats s1 = {0, 0};
                const double t0 = now_us();
                if (sparse_ffn_run(&sf, xn, 1, cand, acc, &s1, &ss, tp, err, sizeof err) != 0) {
                    fprintf(stderr, "bench_sparse: %s\n", err);
                    return 1;
                }
                if (r >= 0) {
                    t_us[r] = now_us() - t0;
                    st.evaluated += s1.evaluated;
                    st.fired += s1.fired;
                }
            }
            const double us = median(t_us, reps), ev = (double)st.evaluated / reps, fired = (double)st.fired / reps;
            const double bytes = ev * (double)(g_row + u_row) + fired * (double)d_row;
            char label[96];
            snprintf(label, sizeof label, "sparse %3.0f%% cand, %s", fracs[fi] * 100,
                     th ? "thr = median|h|" : "all fire");
            printf("  %-34s %9.1f us  %8.1f KiB/token  (%.0f evaluated, %.0f fired; %.2fx dense time)\n", label, us,
                   bytes / 1024.0, ev, fired, us / dense_us);
        }
    }

    free(masks);
    free(g);
    free(u);
    free(ah);
    free(ids);
    free(xn);
    free(acc);
    free(t_us);
    matmul_scratch_free(&ms);
    sparse_ffn_free(&sf);
    sparse_scratch_free(&ss);
    ffn_scratch_free(&fs);
    tpool_destroy(tp);
    model_free(&m);
    return 0;
}
