/* bench_kvattn: the attention of one decode step over a KV cache at a given
 * depth, on the default model's shapes (9 query heads, 3 KV heads of 64),
 * for the full cache, H2O and hot/cold KV side by side: the kvcache alone,
 * with no model, so a change to the attention or the recall shows in its
 * time (or in callgrind's instruction counts, with -r small).
 *
 *   bench_kvattn [-d DEPTH] [-c CTX] [-L LAYERS] [-t THREADS] [-r REPS]
 *                [--budget F] [--recall N] [--cold q8|q4|f32] [--only full|H2O|hot/cold]
 *
 * Each of L layers (default 8: more KV than the last-level cache holds, as a
 * model's) is filled with DEPTH random tokens, then REPS decode steps run
 * over every layer; printed: the median microseconds per step (all L layers)
 * and per layer. Keys carry a few large channels and a drifting mean, as
 * real keys do, so pages differ in their bounds; queries are random. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvcache.h"
#include "tpool.h"

enum { NH = 9, NKV = 3, HD = 64 };

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float urand(void) { /* in [-1, 1) */
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* one token's q, k, v: keys drift slowly and have large channels 3 and 40 */
static void token(int t, float *q, float *k, float *v) {
    for (int i = 0; i < NH * HD; i++) q[i] = urand();
    for (int i = 0; i < NKV * HD; i++) {
        const int c = i % HD;
        k[i] = urand() + (c == 3 || c == 40 ? 6.0f : 0.0f) + 0.5f * sinf((float)t * 0.01f + (float)c);
        v[i] = urand();
    }
}

struct setup {
    const char *name;
    struct kv_config cfg;
};

int main(int argc, char **argv) {
    int depth = 3584, n_ctx = 8192, n_layers = 8, n_threads = 1, reps = 16, recall = -1;
    float budget = 0.2f;
    enum kv_cold cold = KV_COLD_Q8;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-d") && i + 1 < argc) depth = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-c") && i + 1 < argc) n_ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-L") && i + 1 < argc) n_layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) n_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--budget") && i + 1 < argc) budget = (float)atof(argv[++i]);
        else if (!strcmp(argv[i], "--recall") && i + 1 < argc) recall = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cold") && i + 1 < argc && kv_cold_parse(argv[i + 1], &cold) == 0) i++;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_kvattn [-d DEPTH] [-c CTX] [-L LAYERS] [-t THREADS] [-r REPS] [--budget F] "
                            "[--recall N] [--cold q8|q4|f32] [--only full|H2O|hot/cold]\n");
            return 2;
        }
    }
    if (depth < 1 || depth >= n_ctx || n_layers < 1 || n_threads < 1 || reps < 1 || budget <= 0 || budget >= 1) {
        fprintf(stderr, "bench_kvattn: need 0 < depth < ctx, budget in (0, 1), layers, threads and reps >= 1\n");
        return 2;
    }
    if (recall < 0) recall = n_ctx / 10;
    struct setup s[3];
    for (int i = 0; i < 3; i++) kv_config_default(&s[i].cfg);
    s[0].name = "full";
    s[0].cfg.budget = n_ctx;
    s[1].name = "H2O";
    s[1].cfg.budget_frac = budget;
    s[2].name = "hot/cold";
    s[2].cfg.budget_frac = budget;
    s[2].cfg.cold = cold;
    s[2].cfg.recall = recall;
    char err[256];
    struct tpool *tp = n_threads > 1 ? tpool_create(n_threads, err, sizeof err) : NULL;
    if (n_threads > 1 && !tp) {
        fprintf(stderr, "bench_kvattn: %s\n", err);
        return 1;
    }
    enum { BATCH = 32 };
    float *q = malloc(sizeof(float) * BATCH * NH * HD), *k = malloc(sizeof(float) * BATCH * NKV * HD);
    float *v = malloc(sizeof(float) * BATCH * NKV * HD), *out = malloc(sizeof(float) * BATCH * NH * HD);
    double *us = malloc(sizeof(double) * (size_t)reps);
    printf("depth %d, ctx %d, %d layers, %d threads, budget %.2f, %s recall %d; median of %d steps\n", depth, n_ctx,
           n_layers, n_threads, budget, kv_cold_name(cold), recall, reps);
    printf("| cache    | us / step | us / layer | ratio to full |\n|----------|-----------|------------|---------------|\n");
    double full_us = 0;
    for (int i = 0; i < 3; i++) {
        if (only && strcmp(only, s[i].name)) continue;
        struct kvcache kv;
        if (kv_config_resolve(&s[i].cfg, n_ctx, err, sizeof err) ||
            kvcache_create(&kv, &s[i].cfg, n_layers, NH, NKV, HD, BATCH, n_threads, err, sizeof err)) {
            fprintf(stderr, "bench_kvattn: %s: %s\n", s[i].name, err);
            return 1;
        }
        g_rng = 0x9E3779B97F4A7C15ull; /* the same tokens for each cache */
        for (int t0 = 0; t0 < depth; t0 += BATCH) {
            const int n = depth - t0 < BATCH ? depth - t0 : BATCH;
            for (int t = 0; t < n; t++) token(t0 + t, q + t * NH * HD, k + t * NKV * HD, v + t * NKV * HD);
            for (int l = 0; l < n_layers; l++)
                if (kvcache_attend(&kv, l, q, k, v, n, t0, out, tp, err, sizeof err) != 0) {
                    fprintf(stderr, "bench_kvattn: %s: %s\n", s[i].name, err);
                    return 1;
                }
        }
        for (int r = 0; r < reps; r++) {
            token(depth + r, q, k, v);
            const double t0 = now_us();
            for (int l = 0; l < n_layers; l++)
                if (kvcache_attend(&kv, l, q, k, v, 1, depth + r, out, tp, err, sizeof err) != 0) {
                    fprintf(stderr, "bench_kvattn: %s: %s\n", s[i].name, err);
                    return 1;
                }
            us[r] = now_us() - t0;
        }
        qsort(us, (size_t)reps, sizeof *us, cmp_double);
        const double med = reps % 2 ? us[reps / 2] : 0.5 * (us[reps / 2 - 1] + us[reps / 2]);
        if (i == 0) full_us = med;
        if (full_us > 0) printf("| %-8s | %9.1f | %10.1f | %12.2fx |\n", s[i].name, med, med / n_layers, med / full_us);
        else printf("| %-8s | %9.1f | %10.1f |               |\n", s[i].name, med, med / n_layers);
        kvcache_destroy(&kv);
    }
    tpool_destroy(tp);
    free(q);
    free(k);
    free(v);
    free(out);
    free(us);
    return 0;
}
