/* test_plan: the hot-neuron placement solver (core/plan.h).
 *
 *   test_plan random [SEED]  random tiny instances: GLPK's plan against an
 *                            exhaustive search written here (every hot count
 *                            0..n of every layer, filtered by the rules),
 *                            against plan_brute_force, and against the greedy
 *   test_plan cases          hand-made instances: greedy is suboptimal, all
 *                            fits, nothing fits, min_hot above a layer's size
 *   test_plan full           30 layers x 1536 neurons, power-law frequencies
 *   test_plan errors         invalid input and its exact messages
 *
 * Random data comes from check.h's splitmix64 stream with a printed seed. */
#include "plan.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* The rules of plan.h, written out independently of plan.c. */
static int count_allowed(const struct plan_problem *p, int l, int64_t hot) {
    int64_t n = p->layers[l].n, m = p->min_hot < n ? p->min_hot : n;
    if (hot == 0) return 1;
    if (hot < 0 || hot > n) return 0;
    return (hot % p->group == 0 || hot == n) && hot >= m;
}

static double served_of(const struct plan_problem *p, const int64_t *hot, int64_t *bytes) {
    double s = 0.0;
    *bytes = p->fixed;
    for (int l = 0; l < p->n_layers; l++) {
        for (int64_t i = 0; i < hot[l]; i++) s += p->layers[l].freq[i];
        *bytes += hot[l] * p->layers[l].neuron_bytes;
    }
    return s;
}

/* Check a result against the rules; returns 1 when it obeys them. */
static int check_result(const struct plan_problem *p, const struct plan_result *r, const char *who) {
    int ok = 1;
    for (int l = 0; l < p->n_layers; l++) {
        if (!count_allowed(p, l, r->hot[l])) {
            CHECK(0, "%s: layer %d: hot %" PRId64 " of %" PRId64 " breaks group %" PRId64 " / min_hot %" PRId64, who,
                  l, r->hot[l], p->layers[l].n, p->group, p->min_hot);
            ok = 0;
        }
    }
    int64_t bytes;
    double s = served_of(p, r->hot, &bytes);
    CHECK(bytes == r->bytes, "%s: bytes %" PRId64 " reported, %" PRId64 " counted", who, r->bytes, bytes);
    CHECK(bytes <= p->budget, "%s: %" PRId64 " bytes over the budget of %" PRId64, who, bytes, p->budget);
    CHECK(fabs(s - r->served) <= 1e-9, "%s: served %.12g reported, %.12g counted", who, r->served, s);
    return ok && bytes == r->bytes && bytes <= p->budget;
}

/* Exhaustive: every count 0..n of every layer, the rules as a filter. */
static double exhaustive(const struct plan_problem *p) {
    int64_t cur[8] = {0}, bytes;
    double best = -1.0;
    for (;;) {
        int ok = 1;
        for (int l = 0; l < p->n_layers; l++) ok &= count_allowed(p, l, cur[l]);
        if (ok) {
            double s = served_of(p, cur, &bytes);
            if (bytes <= p->budget && s > best) best = s;
        }
        int l = 0;
        for (; l < p->n_layers; l++) {
            if (cur[l] < p->layers[l].n) {
                cur[l]++;
                break;
            }
            cur[l] = 0;
        }
        if (l == p->n_layers) return best;
    }
}

static void test_random(uint64_t seed) {
    check_seed(seed);
    printf("plan random: seed %" PRIu64 " (rerun: test_plan random %" PRIu64 ")\n", seed, seed);
    enum { N_CASES = 400 };
    int greedy_worse = 0, zero_layers = 0;
    for (int t = 0; t < N_CASES; t++) {
        float freq[4][12];
        struct plan_layer L[4];
        int n_layers = (int)rnd_range(2, 4);
        int64_t total_bytes = 0;
        for (int l = 0; l < n_layers; l++) {
            L[l].n = rnd_range(3, 12);
            L[l].neuron_bytes = rnd_range(1, 5);
            int ties = rnd64() % 3 == 0; /* coarse values: many equal frequencies */
            for (int64_t i = 0; i < L[l].n; i++) {
                double u = rnd_unit();
                freq[l][i] = ties ? (float)floor(u * 4.0) / 4.0f : (float)(u * u);
            }
            qsort(freq[l], (size_t)L[l].n, sizeof(float), cmp_desc);
            L[l].freq = freq[l];
            total_bytes += L[l].n * L[l].neuron_bytes;
        }
        struct plan_problem p = {.n_layers = n_layers,
                                 .layers = L,
                                 .group = rnd_range(1, 3),
                                 .min_hot = rnd_range(0, 5),
                                 .fixed = rnd_range(0, 10)};
        p.budget = p.fixed + rnd_range(0, total_bytes + 2);
        int64_t hot[4], hot_bf[4], hot_g[4];
        struct plan_result r = {.hot = hot}, bf = {.hot = hot_bf}, g = {.hot = hot_g};
        char err[256];
        if (plan_solve(&p, &r, err, sizeof err) < 0) {
            CHECK(0, "case %d: plan_solve: %s", t, err);
            continue;
        }
        if (plan_brute_force(&p, &bf, err, sizeof err) < 0) {
            CHECK(0, "case %d: plan_brute_force: %s", t, err);
            continue;
        }
        if (plan_greedy(&p, &g, err, sizeof err) < 0) {
            CHECK(0, "case %d: plan_greedy: %s", t, err);
            continue;
        }
        double best = exhaustive(&p);
        int ok = check_result(&p, &r, "plan_solve") & check_result(&p, &bf, "plan_brute_force") &
                 check_result(&p, &g, "plan_greedy");
        CHECK(r.optimal == 1, "case %d: not proven optimal", t);
        CHECK(fabs(r.served - best) <= 1e-9, "case %d: GLPK served %.12g, exhaustive %.12g", t, r.served, best);
        CHECK(fabs(bf.served - best) <= 1e-9, "case %d: brute force served %.12g, exhaustive %.12g", t, bf.served,
              best);
        CHECK(g.served <= best + 1e-9, "case %d: greedy served %.12g beats the optimum %.12g", t, g.served, best);
        if (!ok || fabs(r.served - best) > 1e-9) {
            fprintf(stderr, "  case %d: group %" PRId64 " min_hot %" PRId64 " fixed %" PRId64 " budget %" PRId64 "\n",
                    t, p.group, p.min_hot, p.fixed, p.budget);
            for (int l = 0; l < n_layers; l++)
                fprintf(stderr, "  layer %d: n %" PRId64 " bytes %" PRId64 " hot %" PRId64 " (brute %" PRId64 ")\n", l,
                        L[l].n, L[l].neuron_bytes, hot[l], hot_bf[l]);
        }
        greedy_worse += g.served < best - 1e-9;
        for (int l = 0; l < n_layers; l++) zero_layers += hot[l] == 0;
    }
    printf("plan random: %d instances; greedy below the optimum in %d, %d layers left cold\n", N_CASES, greedy_worse,
           zero_layers);
    CHECK(greedy_worse > 0, "the random instances never separate greedy from the optimum: the test is too weak");
}

static void test_cases(void) {
    char err[256];
    /* greedy takes layer 0's block (value 1.2 for 2 bytes, 0.6 per byte) and
     * then nothing else fits; the optimum is layer 1 whole (1.5 for 3 bytes). */
    {
        const float f0[] = {0.7f, 0.5f}, f1[] = {0.5f, 0.5f, 0.5f};
        struct plan_layer L[2] = {{2, f0, 1}, {3, f1, 1}};
        struct plan_problem p = {.n_layers = 2, .layers = L, .group = 1, .min_hot = 2, .budget = 103, .fixed = 100};
        int64_t hot[2], hot_g[2];
        struct plan_result r = {.hot = hot}, g = {.hot = hot_g};
        CHECK(plan_greedy(&p, &g, err, sizeof err) == 0, "greedy: %s", err);
        CHECK(plan_solve(&p, &r, err, sizeof err) == 0, "solve: %s", err);
        CHECK(hot_g[0] == 2 && hot_g[1] == 0 && fabs(g.served - 1.2) < 1e-6, "greedy gave %" PRId64 "/%" PRId64
              " served %g, expected 2/0 and 1.2", hot_g[0], hot_g[1], g.served);
        CHECK(hot[0] == 0 && hot[1] == 3 && fabs(r.served - 1.5) < 1e-6 && r.optimal && r.bytes == 103,
              "solve gave %" PRId64 "/%" PRId64 " served %g bytes %" PRId64 ", expected 0/3, 1.5, 103", hot[0], hot[1],
              r.served, r.bytes);
        CHECK(fabs(r.total - 2.7) < 1e-6, "total %g, expected 2.7", r.total);
        printf("plan cases: greedy %.2f, ILP %.2f firings/token\n", g.served, r.served);
    }
    /* Groups and the minimum: G = 4, min_hot = 6 -> layer counts 0, 8, 10 (n = 10).
     * A budget of 9 neurons allows 8 on one layer, not 1 + 8. */
    {
        float f[10];
        for (int i = 0; i < 10; i++) f[i] = 0.9f - 0.05f * (float)i;
        struct plan_layer L[2] = {{10, f, 1}, {10, f, 1}};
        struct plan_problem p = {.n_layers = 2, .layers = L, .group = 4, .min_hot = 6, .budget = 9};
        int64_t hot[2];
        struct plan_result r = {.hot = hot};
        CHECK(plan_solve(&p, &r, err, sizeof err) == 0, "solve: %s", err);
        CHECK(hot[0] + hot[1] == 8 && (hot[0] == 0 || hot[1] == 0), "groups: %" PRId64 "/%" PRId64 ", expected 8/0",
              hot[0], hot[1]);
        p.budget = 18; /* 8 + 10 > 18: one layer whole (10) and one at 8 */
        CHECK(plan_solve(&p, &r, err, sizeof err) == 0, "solve: %s", err);
        CHECK(hot[0] + hot[1] == 18, "groups at 18: %" PRId64 "/%" PRId64, hot[0], hot[1]);
        p.budget = 20; /* everything fits */
        CHECK(plan_solve(&p, &r, err, sizeof err) == 0 && hot[0] == 10 && hot[1] == 10 && r.optimal &&
                  r.bytes == 20 && r.served == r.total,
              "all fit: %" PRId64 "/%" PRId64, hot[0], hot[1]);
        p.budget = 5; /* below the minimum of either layer: nothing is hot */
        CHECK(plan_solve(&p, &r, err, sizeof err) == 0 && hot[0] == 0 && hot[1] == 0 && r.served == 0.0 &&
                  r.bytes == 0,
              "nothing fits: %" PRId64 "/%" PRId64, hot[0], hot[1]);
        p.min_hot = 50; /* above n: the minimum is capped at n, a layer may be whole */
        p.budget = 12;
        CHECK(plan_solve(&p, &r, err, sizeof err) == 0 && hot[0] + hot[1] == 10, "min_hot > n: %" PRId64 "/%" PRId64,
              hot[0], hot[1]);
    }
    /* Zero frequencies, an empty layer and free neurons. */
    {
        const float f0[] = {0.0f, 0.0f, 0.0f}, f2[] = {0.3f, 0.2f};
        struct plan_layer L[3] = {{3, f0, 2}, {0, NULL, 7}, {2, f2, 0}};
        struct plan_problem p = {.n_layers = 3, .layers = L, .group = 1, .budget = 3};
        int64_t hot[3];
        struct plan_result r = {.hot = hot};
        CHECK(plan_solve(&p, &r, err, sizeof err) == 0, "solve: %s", err);
        CHECK(hot[1] == 0 && hot[2] == 2 && fabs(r.served - 0.5) < 1e-6 && r.bytes <= 3,
              "degenerate: %" PRId64 "/%" PRId64 "/%" PRId64 " served %g", hot[0], hot[1], hot[2], r.served);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* SmolLM2-135M's shape: a hot neuron costs its gate and up rows and its down
 * column, 3 x 576 Q4_1 weights = 3 x 360 bytes. Frequencies follow a power law
 * whose exponent varies with depth; min_hot 128 and group 32. */
static void test_full(uint64_t seed) {
    check_seed(seed);
    printf("plan full: seed %" PRIu64 "\n", seed);
    enum { NL = 30, N = 1536 };
    float *freq = malloc((size_t)NL * N * sizeof *freq);
    struct plan_layer L[NL];
    if (!freq) {
        CHECK(0, "out of memory");
        return;
    }
    int64_t all = 0;
    for (int l = 0; l < NL; l++) {
        double alpha = 0.3 + 0.9 * rnd_unit(), a = 0.2 + 0.8 * rnd_unit();
        for (int i = 0; i < N; i++) {
            double f = a * pow((double)(i + 1), -alpha) * (1.0 + 0.05 * rnd_unit());
            freq[l * N + i] = (float)(f > 1.0 ? 1.0 : f);
        }
        qsort(freq + l * N, N, sizeof(float), cmp_desc);
        L[l] = (struct plan_layer){N, freq + l * N, 3 * 360};
        all += (int64_t)N * 3 * 360;
    }
    struct plan_problem p = {.n_layers = NL, .layers = L, .group = 32, .min_hot = 128, .fixed = 40 << 20};
    int64_t hot[NL], hot_g[NL];
    struct plan_result r = {.hot = hot}, g = {.hot = hot_g};
    char err[256];
    /* budgets as fractions of all FFN bytes, first with uniform layers, then
     * mixed: every third layer Q8_0 (3 x 612 bytes a neuron) with 1000 neurons
     * (not a multiple of 32), min_hot 256 */
    const double fractions[] = {0.05, 0.2, 0.5, 0.9};
    for (int k = 0; k < 8; k++) {
        int mixed = k >= 4;
        if (k == 4) {
            p.min_hot = 256;
            for (int l = 0; l < NL; l += 3) {
                all -= L[l].n * L[l].neuron_bytes;
                L[l].neuron_bytes = 3 * 612;
                L[l].n = 1000;
                all += L[l].n * L[l].neuron_bytes;
            }
        }
        p.budget = p.fixed + (int64_t)(fractions[k % 4] * (double)all) + 12345; /* awkward: a multiple of nothing */
        double t0 = now_s();
        int rc = plan_solve(&p, &r, err, sizeof err);
        double dt = now_s() - t0;
        CHECK(rc == 0, "full %.2f: %s", fractions[k % 4], err);
        if (rc) continue;
        CHECK(plan_greedy(&p, &g, err, sizeof err) == 0, "greedy: %s", err);
        check_result(&p, &r, "full");
        CHECK(r.served >= g.served - 1e-9, "full %.2f: ILP %.6f below greedy %.6f", fractions[k % 4], r.served,
              g.served);
        CHECK(r.optimal, "full %.2f: not proven optimal", fractions[k % 4]);
        /* uniform layers take ~0.02 s, mixed ones up to ~1 s (2 s under ASan on a busy machine) */
        CHECK(dt < (mixed ? 8.0 : 2.0), "full %.2f: %.2f s, expected well under a second", fractions[k % 4], dt);
        int64_t n_hot = 0;
        for (int l = 0; l < NL; l++) n_hot += hot[l];
        printf("plan full%s: budget %.0f%% of FFN: %" PRId64 " hot neurons, served %.3f of %.3f firings/token "
               "(greedy %.3f), %s, %.3f s\n",
               mixed ? " mixed" : "", 100 * fractions[k % 4], n_hot, r.served, r.total, g.served,
               r.optimal ? "optimal" : "NOT proven optimal", dt);
    }
    /* a time limit too short to prove anything still gives a plan within the
     * budget, at least as good as the greedy one (1 ms: before the LP is
     * solved; 100 ms: during branch and cut, on a machine as fast as expected) */
    p.budget = p.fixed + all / 2 + 12345;
    for (int ms = 1; ms <= 100; ms *= 100) {
        p.time_limit_ms = ms;
        int rc = plan_solve(&p, &r, err, sizeof err);
        CHECK(rc == 0, "%d ms: %s", ms, err);
        if (rc) continue;
        CHECK(plan_greedy(&p, &g, err, sizeof err) == 0, "greedy: %s", err);
        check_result(&p, &r, "time limit");
        CHECK(r.served >= g.served - 1e-9, "%d ms: %.6f below greedy %.6f", ms, r.served, g.served);
        printf("plan full: %d ms limit: served %.3f (greedy %.3f), %s\n", ms, r.served, g.served,
               r.optimal ? "optimal" : "not proven optimal");
    }
    free(freq);
}

static void expect_error(const struct plan_problem *p, int64_t *hot, const char *want) {
    char err[256] = "";
    struct plan_result r = {.hot = hot};
    int rc = plan_solve(p, &r, err, sizeof err);
    CHECK(rc < 0 && strcmp(err, want) == 0, "rc %d, message\n  got:  %s\n  want: %s", rc, err, want);
}

static void test_errors(void) {
    const float f[] = {0.5f, 0.25f, 0.125f}, unsorted[] = {0.5f, 0.125f, 0.25f}, nan_f[] = {0.5f, NAN, 0.1f},
                big[] = {1.5f, 0.5f, 0.1f};
    struct plan_layer L[2] = {{3, f, 10}, {3, f, 10}};
    struct plan_problem p = {.n_layers = 2, .layers = L, .group = 1, .budget = 100, .fixed = 50};
    int64_t hot[2];

    p.budget = 1048576;
    p.fixed = 3 * 1048576;
    expect_error(&p, hot,
                 "plan: GPU budget of 1048576 bytes (1.0 MiB) is smaller than the 3145728 bytes (3.0 MiB) always "
                 "resident (attention weights, KV cache, predictors)");
    p.budget = 100;
    p.fixed = 50;
    p.n_layers = 0;
    expect_error(&p, hot, "plan: no layers (n_layers = 0)");
    p.n_layers = 2;
    p.group = 0;
    expect_error(&p, hot, "plan: group size 0 must be at least 1");
    p.group = 1;
    p.min_hot = -1;
    expect_error(&p, hot, "plan: min_hot -1 must not be negative");
    p.min_hot = 0;
    p.fixed = -5;
    expect_error(&p, hot, "plan: fixed size -5 bytes must not be negative");
    p.fixed = 50;
    L[1].freq = unsorted;
    expect_error(&p, hot,
                 "plan: layer 1: frequencies are not sorted in descending order (rank 1: 0.125 < rank 2: 0.25)");
    L[1].freq = nan_f;
    expect_error(&p, hot, "plan: layer 1: frequency nan of neuron rank 1 is not in [0, 1]");
    L[1].freq = big;
    expect_error(&p, hot, "plan: layer 1: frequency 1.5 of neuron rank 0 is not in [0, 1]");
    L[1].freq = NULL;
    expect_error(&p, hot, "plan: layer 1: no frequencies for its 3 neurons");
    L[1].freq = f;
    L[0].neuron_bytes = -1;
    expect_error(&p, hot, "plan: layer 0: neuron_bytes -1 must not be negative");
    L[0].neuron_bytes = INT64_MAX / 2;
    expect_error(&p, hot, "plan: layer 0: 3 neurons of 4611686018427387903 bytes overflow a 64-bit byte count");
    L[0].neuron_bytes = 10;
    L[0].n = -2;
    expect_error(&p, hot, "plan: layer 0: neuron count -2 must not be negative");
    L[0].n = 3;
    expect_error(&p, NULL, "plan: no result array (hot is NULL)");

    /* the brute force refuses what it cannot enumerate */
    float many[100];
    for (int i = 0; i < 100; i++) many[i] = 0.5f;
    struct plan_layer M[5];
    for (int l = 0; l < 5; l++) M[l] = (struct plan_layer){100, many, 1};
    struct plan_problem q = {.n_layers = 5, .layers = M, .group = 1, .budget = 10};
    int64_t hot5[5];
    struct plan_result r = {.hot = hot5};
    char err[256] = "";
    CHECK(plan_brute_force(&q, &r, err, sizeof err) < 0 &&
              strcmp(err, "plan: brute force over 1.05e+10 combinations is too many (at most 10000000)") == 0,
          "brute force limit: %s", err);
    /* too many binaries for GLPK: group 1 over millions of neurons */
    float *zeros = calloc(500001, sizeof *zeros);
    if (zeros) {
        struct plan_layer Z[2] = {{500001, zeros, 1}, {500001, zeros, 1}};
        struct plan_problem z = {.n_layers = 2, .layers = Z, .group = 1, .budget = 1000};
        int64_t hot2[2];
        err[0] = 0;
        CHECK(plan_solve(&z, &(struct plan_result){.hot = hot2}, err, sizeof err) < 0 &&
                  !strcmp(err, "plan: more than 1000000 hot-count choices (layer 1: 500001 neurons in groups of 1); "
                               "use a larger group"),
              "too many blocks: '%s'", err);
        free(zeros);
    }
    /* an error leaves a usable message even in a tiny buffer */
    char tiny[8];
    p.n_layers = 0;
    CHECK(plan_solve(&p, &(struct plan_result){.hot = hot}, tiny, sizeof tiny) < 0 && strlen(tiny) == 7,
          "tiny buffer: '%s'", tiny);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "all";
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 20240611u;
    int all = !strcmp(what, "all");
    if (all || !strcmp(what, "random")) test_random(seed);
    if (all || !strcmp(what, "cases")) test_cases();
    if (all || !strcmp(what, "full")) test_full(seed);
    if (all || !strcmp(what, "errors")) test_errors();
    char name[64];
    snprintf(name, sizeof name, "test_plan %s", what);
    return check_done(name);
}
