/* sampler_unit: the sampler against hand-made distributions and against a plain
 * reference of the same chain (full sort, then penalties -> top-k -> top-p ->
 * min-p -> temperature) written here without partial selection.
 *
 * Random logits come from a splitmix64 stream with a printed seed. */
#include "sampler.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures;

#define CHECK(cond, ...)                                                 \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);         \
            fprintf(stderr, __VA_ARGS__);                                \
            fprintf(stderr, "\n");                                       \
            failures++;                                                  \
        }                                                                \
    } while (0)

static uint64_t rs = 0x5eed2024ull; /* test data stream; printed in main */

static uint64_t rnd64(void) {
    uint64_t z = (rs += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rnd01(void) { return (double)(rnd64() >> 11) * 0x1.0p-53; }
static float rnd_normal(void) { /* Box-Muller */
    double u = rnd01(), v = rnd01();
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

static struct sampler *make(float temp, int top_k, float top_p, float min_p, float pen, int last_n, uint64_t seed,
                            int32_t n_vocab) {
    struct sampler_params p;
    sampler_params_default(&p);
    p.temp = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.repeat_penalty = pen;
    p.repeat_last_n = last_n;
    p.seed = seed;
    char err[256];
    struct sampler *s = sampler_create(&p, n_vocab, err, sizeof err);
    if (!s) {
        fprintf(stderr, "sampler_create: %s\n", err);
        exit(1);
    }
    return s;
}

/* logits = log(p) for p given in the order of ids */
static void logits_of_probs(float *l, const double *p, int n) {
    for (int i = 0; i < n; i++)
        l[i] = p[i] > 0 ? (float)log(p[i]) : -INFINITY;
}

/* The set of ids returned by sampler_candidates, as a bitmap string "1101..." */
static void kept_ids(struct sampler *s, const float *logits, int n, char *out) {
    const struct sampler_cand *c;
    int32_t k = sampler_candidates(s, logits, &c);
    memset(out, '0', (size_t)n);
    out[n] = '\0';
    for (int32_t i = 0; i < k; i++)
        out[c[i].id] = '1';
}

static void test_greedy(void) {
    float l[7] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, -INFINITY, 1.0f};
    float copy[7];
    memcpy(copy, l, sizeof l);
    struct sampler *s = make(0.0f, 40, 0.95f, 0.05f, 1.0f, 64, 1, 7);
    CHECK(sampler_sample(s, l) == 1, "greedy: tie between ids 1 and 3 must go to 1");
    CHECK(memcmp(l, copy, sizeof l) == 0, "greedy modified the caller's logits");
    sampler_free(s);
    s = make(-1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 1, 7); /* negative temperature is greedy too */
    l[4] = 3.5f;
    CHECK(sampler_sample(s, l) == 4, "greedy with temp -1 picked the wrong id");
    sampler_free(s);
}

/* top-k = 1 at any temperature is greedy, on random logits of an awkward size */
static void test_topk1(void) {
    enum { V = 1003 };
    float l[V];
    for (int trial = 0; trial < 50; trial++) {
        for (int i = 0; i < V; i++)
            l[i] = rnd_normal() * 3.0f;
        if (trial % 5 == 0) /* exact ties at the top */
            l[17] = l[900] = 20.0f;
        struct sampler *g = make(0.0f, 0, 1.0f, 0.0f, 1.0f, 0, 1, V);
        struct sampler *k1 = make(1.5f, 1, 1.0f, 0.0f, 1.0f, 0, (uint64_t)trial, V);
        int32_t a = sampler_sample(g, l), b = sampler_sample(k1, l);
        CHECK(a == b, "trial %d: top-k 1 gave %d, greedy %d", trial, b, a);
        if (trial % 5 == 0)
            CHECK(a == 17, "trial %d: tie at the top must go to the lower id 17, got %d", trial, a);
        sampler_free(g);
        sampler_free(k1);
    }
}

/* top-p and min-p keep exactly the expected sets; the order of the chain matters */
static void test_sets(void) {
    /* ids shuffled so that the order of ids is not the order of probabilities */
    const double p5[5] = {0.15, 0.05, 0.5, 0.1, 0.2}; /* sorted: 2(.5) 4(.2) 0(.15) 3(.1) 1(.05) */
    float l[5];
    char got[8];
    logits_of_probs(l, p5, 5);
    struct {
        float top_p, min_p;
        int top_k;
        float temp;
        const char *want; /* bitmap by id */
    } cases[] = {
        {0.69f, 0.0f, 0, 1.0f, "00101"},  /* .5 .7 -> 2 kept */
        {0.71f, 0.0f, 0, 1.0f, "10101"},  /* .5 .7 .85 -> 3 */
        {0.49f, 0.0f, 0, 1.0f, "00100"},  /* .5 alone */
        {0.0f, 0.0f, 0, 1.0f, "00100"},   /* top_p 0 keeps one, as llama.cpp (min_keep 1) */
        {1.0f, 0.0f, 0, 1.0f, "11111"},   /* top_p 1: off */
        {1.0f, 0.19f, 0, 1.0f, "10111"},  /* p >= .095: drops .05 */
        {1.0f, 0.21f, 0, 1.0f, "10101"},  /* p >= .105: drops .1 and .05 */
        {1.0f, 0.41f, 0, 1.0f, "00100"},  /* p >= .205 */
        {1.0f, 0.0f, 2, 1.0f, "00101"},   /* top-k 2 */
        {0.69f, 0.0f, 0, 0.5f, "00101"},  /* temperature after top-p: still 2 kept */
        {0.69f, 0.0f, 0, 5.0f, "00101"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sampler *s = make(cases[i].temp, cases[i].top_k, cases[i].top_p, cases[i].min_p, 1.0f, 0, 1, 5);
        kept_ids(s, l, 5, got);
        CHECK(strcmp(got, cases[i].want) == 0, "set case %zu (top_p %g min_p %g top_k %d temp %g): kept %s want %s",
              i, (double)cases[i].top_p, (double)cases[i].min_p, cases[i].top_k, (double)cases[i].temp, got,
              cases[i].want);
        sampler_free(s);
    }

    /* probabilities of the kept set: renormalised, temperature applied last:
     * top_p .69, temp .5 keeps {2, 4}; p ~ p^2: .25 and .04 -> .862, .138 */
    struct sampler *s = make(0.5f, 0, 0.69f, 0.0f, 1.0f, 0, 1, 5);
    const struct sampler_cand *c;
    int32_t n = sampler_candidates(s, l, &c);
    CHECK(n == 2 && c[0].id == 2 && c[1].id == 4, "temp .5 top_p .69: wrong set (n %d)", (int)n);
    if (n == 2) {
        CHECK(fabs(c[0].p - 0.25 / 0.29) < 1e-5 && fabs(c[1].p - 0.04 / 0.29) < 1e-5,
              "temp .5 probabilities %g %g, want %g %g", (double)c[0].p, (double)c[1].p, 0.25 / 0.29, 0.04 / 0.29);
    }
    sampler_free(s);

    /* top-k before top-p: [.3 .25 .2 .15 .1], top_k 3, top_p .7. After top-k the
     * mass renormalises to .4 .333 .267, so top-p keeps 2 (top-p first would keep 3). */
    const double q[5] = {0.3, 0.25, 0.2, 0.15, 0.1};
    logits_of_probs(l, q, 5);
    s = make(1.0f, 3, 0.7f, 0.0f, 1.0f, 0, 1, 5);
    kept_ids(s, l, 5, got);
    CHECK(strcmp(got, "11000") == 0, "top-k then top-p: kept %s want 11000", got);
    sampler_free(s);

    /* top-p before min-p: [.4 .3 .2 .1], top_p .75 keeps 3 on the full mass; min_p .3
     * (p >= .12) keeps those 3. min-p first would renormalise and top-p keep 2. */
    const double r[4] = {0.4, 0.3, 0.2, 0.1};
    logits_of_probs(l, r, 4);
    s = make(1.0f, 0, 0.75f, 0.3f, 1.0f, 0, 1, 4);
    kept_ids(s, l, 4, got);
    CHECK(strcmp(got, "1110") == 0, "top-p then min-p: kept %s want 1110", got);
    sampler_free(s);
}

/* ---- reference chain: full sort, then the filters, straight from the definitions ---- */

struct rc {
    int id;
    float l;
};
static int rc_cmp(const void *pa, const void *pb) {
    const struct rc *a = pa, *b = pb;
    if (a->l != b->l)
        return a->l > b->l ? -1 : 1;
    return a->id - b->id;
}

/* probs[id] after the chain (0 for dropped ids); returns the number kept */
static int ref_chain(const float *logits, int V, const int *hist, int n_hist, float pen, int top_k, float top_p,
                     float min_p, float temp, double *probs) {
    struct rc *a = malloc((size_t)V * sizeof *a);
    if (!a)
        exit(1);
    int n = 0;
    for (int id = 0; id < V; id++) {
        float l = logits[id];
        if (isnan(l) || l == -INFINITY)
            continue;
        int in_hist = 0;
        for (int j = 0; j < n_hist; j++)
            in_hist |= hist[j] == id;
        if (in_hist && pen != 1.0f)
            l = l <= 0 ? l * pen : l / pen;
        a[n].id = id;
        a[n].l = l;
        n++;
    }
    qsort(a, (size_t)n, sizeof *a, rc_cmp);
    if (top_k > 0 && top_k < n)
        n = top_k;
    if (top_p < 1.0f) {
        double z = 0, cum = 0;
        for (int i = 0; i < n; i++)
            z += exp((double)a[i].l - a[0].l);
        for (int i = 0; i < n; i++) {
            cum += exp((double)a[i].l - a[0].l) / z;
            if (cum >= top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (min_p > 0.0f) {
        int m = 0;
        while (m < n && a[m].l >= a[0].l + logf(min_p))
            m++;
        n = m;
    }
    double z = 0;
    for (int i = 0; i < V; i++)
        probs[i] = 0;
    for (int i = 0; i < n; i++)
        z += exp(((double)a[i].l - a[0].l) / temp);
    for (int i = 0; i < n; i++)
        probs[a[i].id] = exp(((double)a[i].l - a[0].l) / temp) / z;
    free(a);
    return n;
}

/* The partial-selection sampler keeps the same sets with the same probabilities as
 * the full-sort reference, over random logits, parameters and histories. */
static void test_against_reference(void) {
    enum { V = 2049 };
    float *l = malloc(V * sizeof *l);
    double *want = malloc(V * sizeof *want);
    if (!l || !want)
        exit(1);
    for (int trial = 0; trial < 300; trial++) {
        float scale = (float)(0.5 + 6.0 * rnd01());
        for (int i = 0; i < V; i++)
            l[i] = rnd_normal() * scale;
        if (trial % 7 == 0) /* many equal logits: ties must be broken by id on both sides */
            for (int i = 0; i < V; i += 3)
                l[i] = 1.0f;
        if (trial % 11 == 0)
            for (int i = 0; i < V; i += 5)
                l[i] = -INFINITY;
        int top_k = (int)(rnd64() % 4 == 0 ? 0 : rnd64() % 300);
        float top_p = rnd64() % 4 == 0 ? 1.0f : (float)rnd01();
        float min_p = rnd64() % 3 == 0 ? 0.0f : (float)(0.3 * rnd01());
        float temp = (float)(0.1 + 2.0 * rnd01());
        float pen = rnd64() % 2 ? 1.0f : (float)(1.0 + rnd01());
        int last_n = (int)(rnd64() % 20);
        struct sampler *s = make(temp, top_k, top_p, min_p, pen, last_n, 1, V);
        int hist[40], n_acc = (int)(rnd64() % 40);
        int acc[40];
        for (int i = 0; i < n_acc; i++) {
            acc[i] = (int)(rnd64() % 50); /* low ids: repeats happen */
            sampler_accept(s, acc[i]);
        }
        int n_hist = n_acc < last_n ? n_acc : last_n; /* the last last_n accepted */
        for (int i = 0; i < n_hist; i++)
            hist[i] = acc[n_acc - n_hist + i];
        int n_want = ref_chain(l, V, hist, n_hist, pen, top_k, top_p, min_p, temp, want);
        const struct sampler_cand *c;
        int32_t n = sampler_candidates(s, l, &c);
        int bad = n != n_want;
        for (int32_t i = 0; i < n && !bad; i++) {
            bad |= fabs(c[i].p - want[c[i].id]) > 1e-5 + 1e-4 * want[c[i].id];
            bad |= i > 0 && (c[i].logit > c[i - 1].logit ||
                             (c[i].logit == c[i - 1].logit && c[i].id < c[i - 1].id));
        }
        CHECK(!bad, "reference trial %d (top_k %d top_p %g min_p %g temp %g pen %g last_n %d): kept %d want %d",
              trial, top_k, (double)top_p, (double)min_p, (double)temp, (double)pen, last_n, (int)n, n_want);
        /* the drawn token is always one the reference keeps */
        for (int d = 0; d < 5; d++) {
            int32_t t = sampler_sample(s, l);
            CHECK(t >= 0 && t < V && want[t] > 0, "reference trial %d: drew %d, not in the kept set", trial,
                  (int)t);
        }
        sampler_free(s);
    }
    free(l);
    free(want);
}

/* Pearson chi-square of counts against probabilities over the kept ids. */
static double chi2(const long *count, const double *p, int n, long draws) {
    double x = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] <= 0) {
            if (count[i] > 0)
                return INFINITY; /* drew a token of probability 0 */
            continue;
        }
        double e = p[i] * (double)draws;
        x += (count[i] - e) * (count[i] - e) / e;
    }
    return x;
}

/* Empirical frequencies match the renormalised distribution.
 * Pearson's statistic with k - 1 = 4 degrees of freedom (5 tokens kept); the
 * bound 30 is above its 99.999th percentile (28.5), so a correct sampler fails
 * this with probability 5e-6 for an arbitrary seed, and with the fixed seed the
 * test is deterministic. A wrong distribution (say, the temperature ignored, or
 * top-p not renormalised) gives statistics in the thousands at 200000 draws;
 * that power is checked below too. */
static void test_frequencies(void) {
    enum { V = 9, DRAWS = 200000 };
    const double p[V] = {0.02, 0.25, 0.01, 0.18, 0.12, 0.3, 0.07, 0.04, 0.01};
    float l[V];
    logits_of_probs(l, p, V);
    /* top_k 7 drops the two .01; top_p .9 over the renormalised mass (/.98) keeps
     * .3 .25 .18 .12 .07 (cum .92/.98 = .939 >= .9) and drops .04, .02; min_p .1
     * (p >= .03) keeps the same; temperature .7 then reshapes p^(1/.7). */
    const float temp = 0.7f;
    double want[V] = {0}, z = 0;
    const int kept[] = {5, 1, 3, 4, 6};
    for (int i = 0; i < 5; i++)
        z += pow(p[kept[i]], 1.0 / temp);
    for (int i = 0; i < 5; i++)
        want[kept[i]] = pow(p[kept[i]], 1.0 / temp) / z;
    struct sampler *s = make(temp, 7, 0.9f, 0.1f, 1.0f, 0, 424242, V);
    printf("frequencies: sampler seed %llu, %d draws\n", (unsigned long long)sampler_seed(s), DRAWS);
    long count[V] = {0};
    for (long d = 0; d < DRAWS; d++) {
        int32_t t = sampler_sample(s, l);
        if (t < 0 || t >= V) {
            CHECK(0, "drew %d", (int)t);
            break;
        }
        count[t]++;
    }
    double x = chi2(count, want, V, DRAWS);
    printf("frequencies: chi-square %.2f (4 degrees of freedom; bound 30)\n", x);
    CHECK(x < 30.0, "empirical frequencies differ from the renormalised distribution: chi-square %.2f", x);
    for (int i = 0; i < V; i++)
        printf("  id %d: p %.4f want %.4f got %.4f\n", i, p[i], want[i], (double)count[i] / DRAWS);

    /* power: the same counts against the distribution without the temperature */
    double no_temp[V] = {0}, z1 = 0;
    for (int i = 0; i < 5; i++)
        z1 += p[kept[i]];
    for (int i = 0; i < 5; i++)
        no_temp[kept[i]] = p[kept[i]] / z1;
    double x1 = chi2(count, no_temp, V, DRAWS);
    printf("frequencies: chi-square against the untempered distribution %.0f (must be large)\n", x1);
    CHECK(x1 > 1000.0, "the frequency test cannot tell temperature .7 from 1 (chi-square %.1f)", x1);
    sampler_free(s);
}

static void test_seeds(void) {
    enum { V = 1000, N = 100 };
    float *l = calloc(V, sizeof *l); /* flat: every draw uniform over 1000 */
    if (!l)
        exit(1);
    int32_t a[N], b[N], c[N], d[N];
    struct sampler *s1 = make(1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 12345, V);
    struct sampler *s2 = make(1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 12345, V);
    struct sampler *s3 = make(1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 12346, V);
    for (int i = 0; i < N; i++) {
        a[i] = sampler_sample(s1, l);
        b[i] = sampler_sample(s2, l);
        c[i] = sampler_sample(s3, l);
    }
    sampler_reset(s1);
    for (int i = 0; i < N; i++)
        d[i] = sampler_sample(s1, l);
    CHECK(memcmp(a, b, sizeof a) == 0, "same seed, different sequences");
    CHECK(memcmp(a, d, sizeof a) == 0, "after sampler_reset the sequence does not repeat");
    int same = 0;
    for (int i = 0; i < N; i++)
        same += a[i] == c[i];
    CHECK(same < 10, "seeds 12345 and 12346 agree on %d of %d uniform draws over 1000", same, N);
    int distinct = 0;
    for (int i = 0; i < N; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= a[j] == a[i];
        distinct += !seen;
    }
    CHECK(distinct > 80, "100 uniform draws over 1000 gave only %d distinct tokens", distinct);
    sampler_free(s1);
    sampler_free(s2);
    sampler_free(s3);

    struct sampler *r1 = make(1.0f, 0, 1.0f, 0.0f, 1.0f, 0, SAMPLER_SEED_RANDOM, V);
    printf("seeds: SAMPLER_SEED_RANDOM drew seed %llu\n", (unsigned long long)sampler_seed(r1));
    sampler_free(r1);
    free(l);
}

static void test_penalty(void) {
    /* logits 2.0, -1.0, 1.9, 0.5; penalty 1.5 on history {0, 1, 0}:
     * 0 -> 2/1.5 = 1.333 (once, not per occurrence), 1 -> -1.5; greedy moves to id 2 */
    float l[4] = {2.0f, -1.0f, 1.9f, 0.5f};
    struct sampler *s = make(0.0f, 0, 1.0f, 0.0f, 1.5f, 64, 1, 4);
    CHECK(sampler_sample(s, l) == 0, "no history yet: greedy must be 0");
    sampler_accept(s, 0);
    sampler_accept(s, 1);
    sampler_accept(s, 0);
    CHECK(sampler_sample(s, l) == 2, "penalty: greedy should move from 0 to 2");
    sampler_free(s);

    s = make(1.0f, 0, 1.0f, 0.0f, 1.5f, 64, 1, 4);
    sampler_accept(s, 0);
    sampler_accept(s, 1);
    sampler_accept(s, 0);
    const struct sampler_cand *c;
    int32_t n = sampler_candidates(s, l, &c);
    CHECK(n == 4, "penalty: all 4 kept, got %d", (int)n);
    for (int32_t i = 0; i < n; i++) {
        float want = c[i].id == 0 ? 2.0f / 1.5f : c[i].id == 1 ? -1.5f : l[c[i].id];
        CHECK(fabsf(c[i].logit - want) < 1e-6f, "penalty: id %d logit %g want %g", (int)c[i].id,
              (double)c[i].logit, (double)want);
    }
    sampler_reset(s); /* history cleared */
    n = sampler_candidates(s, l, &c);
    CHECK(n == 4 && c[0].id == 0 && c[0].logit == 2.0f, "after reset the penalty must be gone");
    sampler_free(s);

    /* the window: repeat_last_n 2 forgets older tokens */
    s = make(0.0f, 0, 1.0f, 0.0f, 1.5f, 2, 1, 4);
    sampler_accept(s, 0);
    sampler_accept(s, 3);
    sampler_accept(s, 3);
    CHECK(sampler_sample(s, l) == 0, "penalty window 2: token 0 fell out of the window but is still penalised");
    sampler_accept(s, -5); /* out of range: ignored */
    sampler_accept(s, 99);
    CHECK(sampler_sample(s, l) == 0, "out-of-range accepted tokens changed the result");
    sampler_free(s);

    /* penalty < 1 encourages: -1 * 0.1 = -0.1 and 0.5 / 0.1 = 5 */
    s = make(0.0f, 0, 1.0f, 0.0f, 0.1f, 8, 1, 4);
    sampler_accept(s, 3);
    CHECK(sampler_sample(s, l) == 3, "penalty 0.1 should favour token 3");
    sampler_free(s);
}

static void test_degenerate(void) {
    enum { V = 37 };
    float l[V];
    for (int i = 0; i < V; i++)
        l[i] = -INFINITY;
    struct sampler *g = make(0.0f, 40, 0.95f, 0.05f, 1.0f, 64, 1, V);
    struct sampler *t = make(1.0f, 40, 0.95f, 0.05f, 1.0f, 64, 1, V);
    struct sampler *flat = make(2.0f, 0, 1.0f, 0.0f, 1.3f, 64, 1, V);
    CHECK(sampler_sample(g, l) == -1 && sampler_sample(t, l) == -1, "all -inf must give -1");
    l[23] = -1000.0f;
    for (int i = 0; i < 100; i++) {
        CHECK(sampler_sample(g, l) == 23, "greedy: the only finite logit is 23");
        CHECK(sampler_sample(t, l) == 23, "sampling: the only finite logit is 23");
        CHECK(sampler_sample(flat, l) == 23, "sampling without filters: the only finite logit is 23");
    }
    /* NaN entries are never chosen, whatever their neighbours */
    for (int i = 0; i < V; i++)
        l[i] = i % 2 ? NAN : (float)i * 0.01f;
    for (int i = 0; i < 300; i++) {
        int32_t a = sampler_sample(t, l), b = sampler_sample(flat, l);
        CHECK(a >= 0 && a % 2 == 0 && b >= 0 && b % 2 == 0, "NaN logit chosen: %d %d", (int)a, (int)b);
    }
    CHECK(sampler_sample(g, l) == 36, "greedy with NaNs: want 36");
    for (int i = 0; i < V; i++)
        l[i] = NAN;
    CHECK(sampler_sample(g, l) == -1 && sampler_sample(t, l) == -1, "all NaN must give -1");
    /* +inf is the largest: greedy takes it, and sampling puts all mass on it */
    for (int i = 0; i < V; i++)
        l[i] = 0.0f;
    l[5] = INFINITY;
    l[30] = INFINITY;
    CHECK(sampler_sample(g, l) == 5, "greedy with +inf at 5 and 30: want 5");
    for (int i = 0; i < 100; i++) {
        int32_t a = sampler_sample(flat, l);
        CHECK(a == 5 || a == 30, "+inf logits: drew %d", (int)a);
    }
    /* penalised huge logits stay finite: -FLT_MAX * 1.3 must not become -inf */
    for (int i = 0; i < V; i++)
        l[i] = -FLT_MAX;
    sampler_accept(flat, 4);
    int32_t a = sampler_sample(flat, l);
    CHECK(a >= 0 && a < V, "-FLT_MAX logits with a penalty: drew %d", (int)a);
    /* and a penalty below 1 cannot push FLT_MAX to +inf: the draw stays among the maxima */
    struct sampler *enc = make(1.0f, 0, 1.0f, 0.0f, 0.5f, 8, 3, V);
    for (int i = 0; i < V; i++)
        l[i] = i < 3 ? FLT_MAX : 0.0f;
    sampler_accept(enc, 1);
    int seen[3] = {0, 0, 0};
    for (int i = 0; i < 300; i++) {
        int32_t b = sampler_sample(enc, l);
        CHECK(b >= 0 && b < 3, "FLT_MAX logits with penalty 0.5: drew %d", (int)b);
        if (b >= 0 && b < 3)
            seen[b]++;
    }
    CHECK(seen[0] > 50 && seen[1] > 50 && seen[2] > 50, "three tokens at FLT_MAX: drawn %d %d %d times of 300",
          seen[0], seen[1], seen[2]);
    const struct sampler_cand *c;
    int32_t nc = sampler_candidates(enc, l, &c);
    double sum = 0;
    for (int32_t i = 0; i < nc; i++)
        sum += c[i].p;
    CHECK(nc == V && fabs(sum - 1.0) < 1e-5, "FLT_MAX logits: %d candidates, probabilities sum to %g", (int)nc, sum);
    sampler_free(enc);
    sampler_free(g);
    sampler_free(t);
    sampler_free(flat);
}

static void test_params(void) {
    struct sampler_params p;
    sampler_params_default(&p);
    CHECK(p.temp == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f && p.repeat_penalty == 1.0f &&
              p.repeat_last_n == 64 && p.seed == SAMPLER_SEED_RANDOM,
          "defaults differ from llama.cpp's");
    char err[256];
    static const char *bad[] = {"temp NaN", "top_p 1.5", "min_p -0.1", "penalty 0", "last_n -1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sampler_params_default(&p);
        switch (i) {
        case 0: p.temp = NAN; break;
        case 1: p.top_p = 1.5f; break;
        case 2: p.min_p = -0.1f; break;
        case 3: p.repeat_penalty = 0.0f; break;
        case 4: p.repeat_last_n = -1; break;
        }
        err[0] = '\0';
        struct sampler *s = sampler_create(&p, 100, err, sizeof err);
        CHECK(s == NULL && err[0] != '\0', "%s accepted", bad[i]);
        printf("params: %s -> %s\n", bad[i], err);
        sampler_free(s);
    }
    sampler_params_default(&p);
    CHECK(sampler_create(&p, 0, err, sizeof err) == NULL, "n_vocab 0 accepted");
}

/* Cost per token at the real vocabulary with llama.cpp's defaults, and with top-k
 * off (top-p must then order a long prefix); printed, and bounded loosely (100 ms:
 * a full sort per token would pass,
 * and so would a sanitizer build on a busy machine: this catches quadratic work). */
static void test_speed(void) {
    enum { V = 49152, N = 200 };
    float *l = malloc(V * sizeof *l);
    if (!l)
        exit(1);
    for (int i = 0; i < V; i++)
        l[i] = rnd_normal() * 4.0f;
    struct sampler_params p;
    sampler_params_default(&p);
    p.seed = 7;
    char err[256];
    for (int mode = 0; mode < 2; mode++) {
        if (mode == 1) {
            p.top_k = 0;
            p.top_p = 0.9f;
            p.min_p = 0.0f;
        }
        struct sampler *s = sampler_create(&p, V, err, sizeof err);
        if (!s) {
            CHECK(0, "%s", err);
            break;
        }
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        long sum = 0;
        for (int i = 0; i < N; i++) {
            sum += sampler_sample(s, l);
            sampler_accept(s, (int32_t)(sum % V));
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double us = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / 1e3 / N;
        printf("speed: %s over %d tokens: %.1f us per sample\n",
               mode == 0 ? "defaults (top_k 40, top_p .95, min_p .05)" : "top_k off, top_p .9", V, us);
        CHECK(us < 100000.0, "sampling takes %.0f us per token", us); /* quadratic: seconds */
        sampler_free(s);
    }
    free(l);
}

int main(void) {
    printf("sampler_unit: test data seed 0x%llx\n", (unsigned long long)rs);
    test_greedy();
    test_topk1();
    test_sets();
    test_against_reference();
    test_frequencies();
    test_seeds();
    test_penalty();
    test_degenerate();
    test_params();
    test_speed();
    if (failures) {
        printf("sampler_unit: %d FAILED\n", failures);
        return 1;
    }
    printf("sampler_unit: all passed\n");
    return 0;
}
