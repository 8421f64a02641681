/* kv_unit / kv_model: the H2O KV cache (core/kvcache.h).
 *
 * kv_unit: the policy on hand-made attention patterns (keys that draw all,
 * none or a known share of the attention), checked slot by slot: sinks,
 * the recent window, heavy hitters, GQA score sums, ties, the window
 * baseline, mean and decayed rankings (decay against a reference for any
 * batch split), prefill column sums and a batch longer than the budget, rewind,
 * and the f16/q8 round-trip error bounds. Random data: splitmix64, seed printed.
 *
 * The cold store (hot/cold KV): pages, their bounds against brute force,
 * the stored values' rounding, the bound on its bytes.
 *
 * kv_model (argument "model"; needs HEARTH_TEST_MODEL, else exits 77): on the
 * real model, the H2O path with a budget >= the context gives logits
 * bit-identical to the dense cache, and a prompt longer than the budget runs
 * and keeps exactly the budget; with an f32 cold store recalled whole the
 * logits are the full cache's bit for bit, and a q8 store with a recall of
 * two pages is closer to them than plain H2O. */
#include "kvcache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "forward.h"
#include "model.h"
#include "vec.h"

static float rnd_sym(void) { return (float)((double)(rnd64() >> 11) * 0x1.0p-52 - 1.0); } /* [-1, 1) */

static void make(struct kvcache *kv, int budget, int sinks, int recent, int window, enum kv_type type, int n_heads,
                 int n_kv_heads, int hd, int max_batch) {
    struct kv_config c;
    kv_config_default(&c);
    c.budget = budget;
    c.n_sinks = sinks;
    c.n_recent = recent;
    c.window = window;
    c.type = type;
    char err[256];
    if (kvcache_create(kv, &c, 1, n_heads, n_kv_heads, hd, max_batch, 1, err, sizeof err) != 0) {
        fprintf(stderr, "kvcache_create: %s\n", err);
        exit(1);
    }
}

static void make_layers(struct kvcache *kv, int budget, int sinks, int recent, enum kv_type type, int n_layers,
                        int n_heads, int n_kv_heads, int hd) {
    struct kv_config c;
    kv_config_default(&c);
    c.budget = budget;
    c.n_sinks = sinks;
    c.n_recent = recent;
    c.type = type;
    char err[256];
    if (kvcache_create(kv, &c, n_layers, n_heads, n_kv_heads, hd, 1, 1, err, sizeof err) != 0) {
        fprintf(stderr, "kvcache_create: %s\n", err);
        exit(1);
    }
}

/* the newest cached position of layer 0, head 0 */
static int kvcache_max_pos(const struct kvcache *kv) {
    const int32_t *P = kvcache_positions(kv, 0, 0);
    int m = -1;
    for (int i = 0; i < kvcache_n_used(kv, 0, 0); i++) m = P[i] > m ? P[i] : m;
    return m;
}

static int attend(struct kvcache *kv, const float *q, const float *k, const float *v, int n, int pos0, float *out) {
    char err[256];
    int rc = kvcache_attend(kv, 0, q, k, v, n, pos0, out, NULL, err, sizeof err);
    if (rc) fprintf(stderr, "kvcache_attend: %s\n", err);
    return rc;
}

static int kept(const struct kvcache *kv, int kvh, int pos) {
    const int32_t *P = kvcache_positions(kv, 0, kvh);
    for (int i = 0; i < kvcache_n_used(kv, 0, kvh); i++)
        if (P[i] == pos) return 1;
    return 0;
}

static void print_kept(const char *what, const struct kvcache *kv, int kvh) {
    const int32_t *P = kvcache_positions(kv, 0, kvh);
    fprintf(stderr, "  %s kept:", what);
    for (int i = 0; i < kvcache_n_used(kv, 0, kvh); i++) fprintf(stderr, " %d", P[i]);
    fprintf(stderr, "\n");
}

/* One head of dim 4, one token per step. The query is e0; a token's key is
 * key_e0[pos] * e0, so e^(key*q/2) sets how much attention it draws. */
static void decode_pattern(struct kvcache *kv, const float *key_e0, int n_tok) {
    float q[4] = {1, 0, 0, 0}, out[4];
    for (int p = 0; p < n_tok; p++) {
        float k[4] = {key_e0[p], 0, 0, 0}, v[4] = {(float)p, 1, 0, 0};
        if (attend(kv, q, k, v, 1, p, out)) failures++;
    }
}

static void test_config(void) {
    struct kv_config c;
    char err[256];
    kv_config_default(&c);
    CHECK(kv_config_resolve(&c, 1000, err, sizeof err) == 0 && c.budget == 0 && !kv_config_active(&c, 1000),
          "no budget: dense");
    kv_config_default(&c);
    c.budget_frac = 0.2f;
    CHECK(kv_config_resolve(&c, 1000, err, sizeof err) == 0 && c.budget == 200 && c.n_sinks == 4 &&
              c.n_recent == 98 && kv_config_active(&c, 1000),
          "20%% of 1000: budget %d sinks %d recent %d", c.budget, c.n_sinks, c.n_recent);
    kv_config_default(&c);
    c.budget = 5000;
    CHECK(kv_config_resolve(&c, 1000, err, sizeof err) == 0 && c.budget == 1000 && !kv_config_active(&c, 1000),
          "budget above the context: clamped, dense");
    c.type = KV_Q8;
    CHECK(kv_config_active(&c, 1000), "q8 at full budget needs the kvcache");
    kv_config_default(&c);
    c.budget = 10;
    c.n_sinks = 4;
    c.n_recent = 7;
    CHECK(kv_config_resolve(&c, 1000, err, sizeof err) != 0 && strstr(err, "recent"), "sinks + recent > budget");
    kv_config_default(&c);
    c.budget = 64;
    c.window = 1;
    CHECK(kv_config_resolve(&c, 1000, err, sizeof err) == 0 && c.n_recent == 60, "window: recent = budget - sinks");
    kv_config_default(&c);
    c.budget = 64;
    c.decay = 0.0f;
    CHECK(kv_config_resolve(&c, 1000, err, sizeof err) != 0 && strstr(err, "decay"), "decay 0 refused");
    c.decay = 1.5f;
    CHECK(kv_config_resolve(&c, 1000, err, sizeof err) != 0 && strstr(err, "decay"), "decay 1.5 refused");
    c.decay = 0.9f;
    c.score_mean = 1;
    CHECK(kv_config_resolve(&c, 1000, err, sizeof err) != 0 && strstr(err, "mean"), "decay with mean refused");
    c.score_mean = 0;
    CHECK(kv_config_resolve(&c, 1000, err, sizeof err) == 0, "decay 0.9 with the sum: %s", err);
    kv_config_default(&c);
    c.budget_frac = 0.2f;
    c.cold = KV_COLD_Q8;
    CHECK(kv_config_resolve(&c, 1000, err, sizeof err) == 0 && c.recall == 112 && c.cands == KV_RECALL_CANDS,
          "cold defaults: recall %d (a tenth of 1000 in pages), candidates %d", c.recall, c.cands);
    c.cands = 1000; /* more than every page: cut to the context's pages */
    CHECK(kv_config_resolve(&c, 1000, err, sizeof err) == 0 && c.cands == 10, "candidates cut to %d", c.cands);
    c.cands = -1;
    CHECK(kv_config_resolve(&c, 1000, err, sizeof err) != 0 && strstr(err, "candidates"), "candidates -1 refused");
    enum kv_type t;
    CHECK(kv_type_parse("q8", &t) == 0 && t == KV_Q8 && kv_type_parse("q4", &t) != 0, "type names");
}

/* Heavy hitters at 5 and 9, everything else draws the same small share:
 * budget 6 = sink 0 + recent {18, 19} + 3 heavy. */
static void test_heavy_sinks_recent(void) {
    struct kvcache kv;
    float key[20];
    for (int p = 0; p < 20; p++) key[p] = 0.0f;
    key[5] = key[9] = 8.0f;
    make(&kv, 6, 1, 2, 0, KV_F32, 1, 1, 4, 4);
    decode_pattern(&kv, key, 20);
    CHECK(kvcache_n_used(&kv, 0, 0) == 6, "budget 6, %d used", kvcache_n_used(&kv, 0, 0));
    CHECK(kept(&kv, 0, 0), "sink 0 kept though it is light");
    CHECK(kept(&kv, 0, 5) && kept(&kv, 0, 9), "heavy hitters 5 and 9 kept");
    CHECK(kept(&kv, 0, 18) && kept(&kv, 0, 19), "recent 18, 19 kept");
    if (failures) print_kept("heavy", &kv, 0);
    kvcache_destroy(&kv);

    /* without the sink, position 0 goes: it is light */
    make(&kv, 6, 0, 2, 0, KV_F32, 1, 1, 4, 4);
    decode_pattern(&kv, key, 20);
    CHECK(kept(&kv, 0, 5) && kept(&kv, 0, 9) && kept(&kv, 0, 18) && kept(&kv, 0, 19), "no sinks: heavy + recent");
    kvcache_destroy(&kv);

    /* the recent window protects even the lightest tokens: keys of -60 draw
     * (almost) nothing; with recent 3 the last three must stay anyway */
    for (int p = 0; p < 20; p++) key[p] = p >= 10 ? -60.0f : 0.0f;
    make(&kv, 6, 0, 3, 0, KV_F32, 1, 1, 4, 4);
    decode_pattern(&kv, key, 20);
    CHECK(kept(&kv, 0, 17) && kept(&kv, 0, 18) && kept(&kv, 0, 19), "recent 17..19 kept");
    int old = 0;
    for (int p = 0; p < 10; p++) old += kept(&kv, 0, p);
    CHECK(old == 3, "the other 3 slots go to the heavier old tokens, got %d", old);
    kvcache_destroy(&kv);
}

/* Sum against mean. A (position 1) draws a moderate weight from step 1 on;
 * B (position 8) a larger one, but only from step 8. With one heavy-hitter
 * slot (budget 3, recent 2), once B leaves the recent window A has the
 * larger sum (more steps) and B the larger mean (more per step): H2O's sum
 * keeps A, --kv-score mean keeps B, and so does a decay of 0.5 (it forgets
 * what A drew early). */
static void test_score_mean(void) {
    float key[14] = {0};
    key[1] = 3.0f;
    key[8] = 5.0f;
    static const char *const names[] = {"sum", "mean", "decay 0.5"};
    for (int mode = 0; mode < 3; mode++) {
        struct kvcache kv;
        struct kv_config c;
        kv_config_default(&c);
        c.budget = 3;
        c.n_sinks = 0;
        c.n_recent = 2;
        c.score_mean = mode == 1;
        c.decay = mode == 2 ? 0.5f : 1.0f;
        char err[256];
        if (kvcache_create(&kv, &c, 1, 1, 1, 4, 1, 1, err, sizeof err) != 0) {
            fprintf(stderr, "kvcache_create: %s\n", err);
            exit(1);
        }
        decode_pattern(&kv, key, 12);
        if (mode)
            CHECK(kept(&kv, 0, 8) && !kept(&kv, 0, 1), "%s: the late heavy hitter 8 stays, 1 goes", names[mode]);
        else CHECK(kept(&kv, 0, 1) && !kept(&kv, 0, 8), "sum: the old token 1 stays, 8 goes");
        if (failures) print_kept(names[mode], &kv, 0);
        kvcache_destroy(&kv);
    }
}

/* Keys of -1000 draw exactly zero weight (expf underflows), so those slots
 * have score 0.0 exactly: a tie, which must evict the oldest. */
static void test_ties(void) {
    struct kvcache kv;
    float key[6] = {0, -1000, -1000, -1000, 0, 0};
    make(&kv, 5, 0, 1, 0, KV_F32, 1, 1, 4, 2);
    decode_pattern(&kv, key, 6);
    CHECK(!kept(&kv, 0, 1) && kept(&kv, 0, 2) && kept(&kv, 0, 3), "tie at score 0: the oldest (1) goes");
    const double *S = kvcache_scores(&kv, 0, 0);
    const int32_t *P = kvcache_positions(&kv, 0, 0);
    for (int i = 0; i < kvcache_n_used(&kv, 0, 0); i++)
        if (P[i] == 2) CHECK(S[i] == 0.0, "zero weight gives score exactly 0, got %g", S[i]);
    kvcache_destroy(&kv);

    /* all equal keys: older tokens collect more (they were attended longer),
     * so H2O keeps old ones; the window baseline keeps the newest */
    float flat[12] = {0};
    make(&kv, 4, 0, 0, 1, KV_F32, 1, 1, 4, 2);
    decode_pattern(&kv, flat, 12);
    for (int p = 8; p < 12; p++) CHECK(kept(&kv, 0, p), "window keeps the last 4 (%d)", p);
    kvcache_destroy(&kv);
    /* window with a sink = StreamingLLM; heavy keys do not matter */
    float heavy[12] = {0, 0, 0, 9, 9, 9, 0, 0, 0, 0, 0, 0};
    make(&kv, 4, 1, 3, 1, KV_F32, 1, 1, 4, 2);
    decode_pattern(&kv, heavy, 12);
    CHECK(kept(&kv, 0, 0) && kept(&kv, 0, 9) && kept(&kv, 0, 10) && kept(&kv, 0, 11) && !kept(&kv, 0, 3),
          "streaming: sink + last 3");
    kvcache_destroy(&kv);
}

/* Reference attention of one query over rows (k, v)[0..n), f64. */
static void ref_attn(const float *q, const float *k, const float *v, int n, int stride, int hd, double *w,
                     double *out) {
    double maxv = -INFINITY, sum = 0.0;
    for (int j = 0; j < n; j++) {
        double d = 0.0;
        for (int i = 0; i < hd; i++) d += (double)q[i] * k[(size_t)j * stride + i];
        w[j] = d / sqrt((double)hd);
        if (w[j] > maxv) maxv = w[j];
    }
    for (int j = 0; j < n; j++) sum += (w[j] = exp(w[j] - maxv));
    for (int i = 0; i < hd; i++) out[i] = 0.0;
    for (int j = 0; j < n; j++) {
        w[j] /= sum;
        for (int i = 0; i < hd; i++) out[i] += w[j] * v[(size_t)j * stride + i];
    }
}

/* Decayed scores (--kv-decay): with no eviction (budget >= n) every slot's
 * score must be sum over queries t >= j and the group's query heads of
 * decay^(n-1-t) * w_t(j) (double reference), whether the n tokens come as
 * one batch, one by one, or in uneven batches; GQA 6/2 heads of 13. */
static void test_decay_scores(void) {
    enum { N = 23, NH = 6, NKV = 2, HD = 13 };
    const int group = NH / NKV, q_dim = NH * HD, kv_dim = NKV * HD;
    const double d = 0.9;
    float q[N * q_dim], k[N * kv_dim], v[N * kv_dim], out[N * q_dim];
    double ref[NKV][N] = {{0}}, w[N], ro[HD];
    for (int i = 0; i < N * q_dim; i++) q[i] = 2.0f * rnd_sym();
    for (int i = 0; i < N * kv_dim; i++) k[i] = 2.0f * rnd_sym(), v[i] = rnd_sym();
    for (int t = 0; t < N; t++)
        for (int h = 0; h < NH; h++) {
            ref_attn(q + (size_t)t * q_dim + h * HD, k + (h / group) * HD, v + (h / group) * HD, t + 1, kv_dim, HD,
                     w, ro);
            for (int j = 0; j <= t; j++) ref[h / group][j] += pow(d, N - 1 - t) * w[j];
        }
    const int splits[3][4] = {{N, 0}, {1, 0}, {7, 1, 11, 4}}; /* one batch; one by one; uneven */
    for (int s = 0; s < 3; s++) {
        struct kvcache kv;
        struct kv_config c;
        kv_config_default(&c);
        c.budget = N;
        c.n_sinks = 0;
        c.n_recent = 0;
        c.decay = (float)d;
        char err[256];
        if (kvcache_create(&kv, &c, 1, NH, NKV, HD, N, 1, err, sizeof err) != 0) {
            fprintf(stderr, "kvcache_create: %s\n", err);
            exit(1);
        }
        for (int p = 0, i = 0; p < N; i++) {
            int n = s == 1 ? 1 : splits[s][i % 4];
            if (n == 0 || n > N - p) n = N - p;
            if (attend(&kv, q + (size_t)p * q_dim, k + (size_t)p * kv_dim, v + (size_t)p * kv_dim, n, p,
                       out + (size_t)p * q_dim))
                failures++;
            p += n;
        }
        double max_rel = 0.0;
        for (int h = 0; h < NKV; h++) {
            const int32_t *P = kvcache_positions(&kv, 0, h);
            const double *S = kvcache_scores(&kv, 0, h);
            CHECK(kvcache_n_used(&kv, 0, h) == N, "split %d head %d: %d slots", s, h, kvcache_n_used(&kv, 0, h));
            for (int i = 0; i < kvcache_n_used(&kv, 0, h); i++) {
                double e = fabs(S[i] - ref[h][P[i]]) / ref[h][P[i]];
                if (e > max_rel) max_rel = e;
            }
        }
        CHECK(max_rel < 1e-5, "split %d: decayed scores off the reference by %g (relative)", s, max_rel);
        kvcache_destroy(&kv);
    }
}

/* Prefill: a batch of n tokens, 6 query heads on 2 KV heads (GQA group 3),
 * head_dim 13. Scores must be the causal column sums over the batch's
 * queries summed over the group's heads, outputs the plain attention. */
static void test_prefill_gqa(int n, int budget) {
    enum { NH = 6, NKV = 2, HD = 13 };
    const int group = NH / NKV, q_dim = NH * HD, kv_dim = NKV * HD;
    float *q = malloc(sizeof(float) * n * q_dim), *k = malloc(sizeof(float) * n * kv_dim);
    float *v = malloc(sizeof(float) * n * kv_dim), *out = malloc(sizeof(float) * n * q_dim);
    double *colsum = calloc((size_t)NKV * n, sizeof(double)), *w = malloc(sizeof(double) * n), ro[HD];
    for (int i = 0; i < n * q_dim; i++) q[i] = 2.0f * rnd_sym();
    for (int i = 0; i < n * kv_dim; i++) k[i] = 2.0f * rnd_sym(), v[i] = rnd_sym();
    struct kvcache kv;
    make(&kv, budget, 1, 2, 0, KV_F32, NH, NKV, HD, n);
    CHECK(attend(&kv, q, k, v, n, 0, out) == 0, "prefill of %d", n);
    double max_err = 0.0;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < NH; h++) {
            ref_attn(q + (size_t)t * q_dim + h * HD, k + (h / group) * HD, v + (h / group) * HD, t + 1, kv_dim, HD,
                     w, ro);
            for (int j = 0; j <= t; j++) colsum[(h / group) * n + j] += w[j];
            for (int i = 0; i < HD; i++) {
                double e = fabs(ro[i] - out[(size_t)t * q_dim + h * HD + i]);
                if (e > max_err) max_err = e;
            }
        }
    CHECK(max_err < 1e-5, "prefill %d: attention output off by %g", n, max_err);
    for (int h = 0; h < NKV; h++) {
        const int nu = kvcache_n_used(&kv, 0, h);
        CHECK(nu == (n < budget ? n : budget), "head %d: %d used for %d tokens, budget %d", h, nu, n, budget);
        const int32_t *P = kvcache_positions(&kv, 0, h);
        const double *S = kvcache_scores(&kv, 0, h);
        double min_kept = INFINITY;
        for (int i = 0; i < nu; i++) {
            CHECK(fabs(S[i] - colsum[h * n + P[i]]) < 1e-5, "head %d pos %d: score %g, column sum %g", h, P[i], S[i],
                  colsum[h * n + P[i]]);
            if (P[i] >= 1 && P[i] < n - 2 && S[i] < min_kept) min_kept = S[i];
        }
        /* every evicted token is no heavier than every kept heavy hitter */
        for (int p = 1; p < n - 2; p++)
            if (!kept(&kv, h, p))
                CHECK(colsum[h * n + p] <= min_kept + 1e-12, "head %d: evicted %d (%g) heavier than a kept (%g)", h,
                      p, colsum[h * n + p], min_kept);
        CHECK(kept(&kv, h, 0) && kept(&kv, h, n - 1) && kept(&kv, h, n - 2), "head %d: sink and recent", h);
    }
    /* heads evict independently: random data makes their kept sets differ */
    if (n > budget + 4) {
        int same = 1;
        for (int p = 0; p < n; p++) same &= kept(&kv, 0, p) == kept(&kv, 1, p);
        CHECK(!same, "the two KV heads kept the same tokens");
    }
    kvcache_destroy(&kv);
    free(q), free(k), free(v), free(out), free(colsum), free(w);
}

/* A batch longer than KV_CALL_TOKENS is attended as its parts of
 * KV_CALL_TOKENS one after the other (evicting after each): the same
 * outputs, positions and scores, bit for bit, as feeding the parts by hand. */
static void test_call_parts(void) {
    enum { NH = 6, NKV = 2, HD = 13, N = KV_CALL_TOKENS + 11 };
    const int q_dim = NH * HD, kv_dim = NKV * HD;
    static float q[N * NH * HD], k[N * NKV * HD], v[N * NKV * HD], o1[N * NH * HD], o2[N * NH * HD];
    for (int i = 0; i < N * q_dim; i++) q[i] = 2.0f * rnd_sym();
    for (int i = 0; i < N * kv_dim; i++) k[i] = 2.0f * rnd_sym(), v[i] = rnd_sym();
    struct kvcache a, b;
    make(&a, 9, 1, 2, 0, KV_F32, NH, NKV, HD, N);
    make(&b, 9, 1, 2, 0, KV_F32, NH, NKV, HD, N);
    CHECK(attend(&a, q, k, v, N, 0, o1) == 0, "one batch of %d", N);
    CHECK(attend(&b, q, k, v, KV_CALL_TOKENS, 0, o2) == 0 &&
              attend(&b, q + KV_CALL_TOKENS * q_dim, k + KV_CALL_TOKENS * kv_dim, v + KV_CALL_TOKENS * kv_dim,
                     N - KV_CALL_TOKENS, KV_CALL_TOKENS, o2 + KV_CALL_TOKENS * q_dim) == 0,
          "the parts by hand");
    CHECK(!memcmp(o1, o2, sizeof o1), "a long batch differs from its parts");
    for (int h = 0; h < NKV; h++) {
        const int nu = kvcache_n_used(&a, 0, h);
        CHECK(nu == kvcache_n_used(&b, 0, h) &&
                  !memcmp(kvcache_positions(&a, 0, h), kvcache_positions(&b, 0, h), (size_t)nu * sizeof(int32_t)) &&
                  !memcmp(kvcache_scores(&a, 0, h), kvcache_scores(&b, 0, h), (size_t)nu * sizeof(double)),
              "head %d: a long batch keeps other slots than its parts", h);
    }
    CHECK(a.n_slots == 9 + KV_CALL_TOKENS, "%d slots for a budget of 9 and batches of %d", a.n_slots, N);
    printf("call parts: a batch of %d = its parts of %d, %d slots\n", N, KV_CALL_TOKENS, a.n_slots);
    kvcache_destroy(&a);
    kvcache_destroy(&b);
}

/* GQA: on KV head 0, query heads 0 and 1 both look at token 3, and head 1
 * at token 5 on odd steps only; on KV head 1, head 2 looks at token 7 and
 * head 3 at token 5. With room for one heavy hitter (sink 0 absorbs the early
 * steps' mass), KV head 0 keeps 3 (its two heads' sum), KV head 1 keeps 5
 * (longer attended than 7) and not 3, which none of its heads looks at. */
static void test_gqa_grouping(void) {
    enum { HD = 4 };
    struct kvcache kv;
    /* 4 query heads, 2 KV heads: heads 0,1 -> kv 0; heads 2,3 -> kv 1 */
    make(&kv, 4, 1, 2, 0, KV_F32, 4, 2, HD, 1);
    float out[4 * HD];
    for (int p = 0; p < 12; p++) {
        float k[2 * HD] = {0}, v[2 * HD] = {0}, q[4 * HD] = {0};
        /* dims: 0 marks token 3, 1 token 5, 2 token 7 */
        if (p == 3) k[0] = k[HD + 0] = 12.0f;
        if (p == 5) k[1] = k[HD + 1] = 12.0f;
        if (p == 7) k[2] = k[HD + 2] = 12.0f;
        q[0 * HD + 0] = 1.0f;                    /* head 0 -> token 3 */
        q[1 * HD + 0] = 1.0f;                    /* head 1 -> token 3 as well */
        q[1 * HD + 1] = p % 2 ? 1.0f : 0.0f;     /* ... and to 5 on odd steps */
        q[2 * HD + 2] = 1.0f;                    /* head 2 -> token 7 */
        q[3 * HD + 1] = 1.0f;                    /* head 3 -> token 5 */
        if (attend(&kv, q, k, v, 1, p, out)) failures++;
    }
    CHECK(kept(&kv, 0, 3) && !kept(&kv, 0, 5), "kv head 0: token 3 (heads 0+1) beats 5 (head 1, half the time)");
    CHECK(kept(&kv, 1, 5) && !kept(&kv, 1, 7), "kv head 1: token 5 (7 steps of head 3) beats 7 (5 steps of head 2)");
    CHECK(!kept(&kv, 1, 3), "kv head 1 does not keep kv head 0's hitter 3");
    if (failures) print_kept("gqa0", &kv, 0), print_kept("gqa1", &kv, 1);
    kvcache_destroy(&kv);
}

/* The scores sum the group's softmax weights over decode steps: compare
 * with a reference that tracks every slot (budget large, no eviction). */
static void test_decode_scores(void) {
    enum { NH = 4, NKV = 2, HD = 8, N = 23 };
    const int q_dim = NH * HD, kv_dim = NKV * HD;
    static float K[N * NKV * HD], V[N * NKV * HD];
    double score[NKV][N] = {{0}}, w[N], ro[HD];
    struct kvcache kv;
    make(&kv, N, 0, 0, 0, KV_F32, NH, NKV, HD, 1);
    for (int p = 0; p < N; p++) {
        float q[NH * HD], out[NH * HD];
        for (int i = 0; i < q_dim; i++) q[i] = 3.0f * rnd_sym();
        for (int i = 0; i < kv_dim; i++) K[p * kv_dim + i] = rnd_sym(), V[p * kv_dim + i] = rnd_sym();
        if (attend(&kv, q, K + p * kv_dim, V + p * kv_dim, 1, p, out)) failures++;
        for (int h = 0; h < NH; h++) {
            ref_attn(q + h * HD, K + (h / 2) * HD, V + (h / 2) * HD, p + 1, kv_dim, HD, w, ro);
            for (int j = 0; j <= p; j++) score[h / 2][j] += w[j];
        }
    }
    for (int h = 0; h < NKV; h++) {
        const int32_t *P = kvcache_positions(&kv, 0, h);
        const double *S = kvcache_scores(&kv, 0, h);
        for (int i = 0; i < kvcache_n_used(&kv, 0, h); i++)
            CHECK(fabs(S[i] - score[h][P[i]]) < 1e-5, "decode score head %d pos %d: %g vs %g", h, P[i], S[i],
                  score[h][P[i]]);
    }
    /* rewind: attending at position 10 drops 10.. and appends the new 10 */
    float q[NH * HD] = {0}, out[NH * HD];
    if (attend(&kv, q, K, V, 1, 10, out)) failures++;
    CHECK(kvcache_n_used(&kv, 0, 0) == 11 && kept(&kv, 0, 10) && !kept(&kv, 0, 11), "rewind to 10");
    kvcache_destroy(&kv);
}

/* f16 and q8 rows read back within their bounds: f16 relative 2^-11,
 * q8 absolute max|x| / 254 per token and head (rounding to the nearest of 255 levels). */
static void test_roundtrip(void) {
    enum { NKV = 3, HD = 37, N = 9 };
    const int kv_dim = NKV * HD;
    for (int t = KV_F16; t <= KV_Q8; t++) {
        struct kvcache kv;
        make(&kv, 2 * N, 0, 0, 0, (enum kv_type)t, NKV, NKV, HD, N);
        float k[N * NKV * HD], v[N * NKV * HD], q[N * NKV * HD], out[N * NKV * HD], back[HD];
        for (int i = 0; i < N * kv_dim; i++) {
            float mag = (i / HD) % 3 == 0 ? 100.0f : (i / HD) % 3 == 1 ? 0.01f : 1.0f; /* scales per row */
            k[i] = mag * rnd_sym(), v[i] = mag * rnd_sym(), q[i] = rnd_sym();
        }
        k[5] = 0.0f;
        if (attend(&kv, q, k, v, N, 0, out)) failures++;
        double worst = 0.0;
        for (int h = 0; h < NKV; h++)
            for (int s = 0; s < N; s++) {
                const float *src[2] = {k + (size_t)s * kv_dim + h * HD, v + (size_t)s * kv_dim + h * HD};
                for (int which = 0; which < 2; which++) {
                    if (which == 0) kvcache_read_key(&kv, 0, h, s, back);
                    else kvcache_read_value(&kv, 0, h, s, back);
                    float amax = 0.0f;
                    for (int i = 0; i < HD; i++) amax = fabsf(src[which][i]) > amax ? fabsf(src[which][i]) : amax;
                    for (int i = 0; i < HD; i++) {
                        double e = fabs((double)back[i] - src[which][i]);
                        double bound = t == KV_F16 ? fabs(src[which][i]) * 0x1p-11 + 1e-7 : amax / 254.0 * 1.0001;
                        if (e / (bound > 0 ? bound : 1) > worst) worst = e / (bound > 0 ? bound : 1);
                        CHECK(e <= bound, "%s head %d slot %d [%d]: %g read back as %g", kv_type_name(t), h, s, i,
                              src[which][i], back[i]);
                    }
                }
            }
        printf("%s round trip: worst error %.3f of the bound\n", kv_type_name(t), worst);
        CHECK(worst > 0.1, "%s: suspiciously exact (is it stored as f32?)", kv_type_name(t));
        kvcache_destroy(&kv);
    }
}

/* The real model: H2O path with budget = context against the dense pass. */
/* The cold store: every evicted token is in exactly one page, stored within
 * its type's rounding; each page's bound is sum_c max(q_c min_c, q_c max_c)
 * over its stored keys (computed here by brute force, the same float sum)
 * and no stored key's q . k exceeds it; with cold_max the store stays
 * within its bound. Odd head_dim (q4 packs two per byte), GQA, prefill
 * batches longer than KV_CALL_TOKENS and decode steps. */
static void test_cold_pages(enum kv_cold type, int64_t cold_max) {
    enum { HD = 13, NKV = 2, NH = 6, N = 190, BUDGET = 20 };
    struct kv_config c;
    kv_config_default(&c);
    c.budget = BUDGET;
    c.cold = type;
    c.recall = 2 * KV_PAGE;
    c.cold_max = cold_max;
    char err[256];
    struct kvcache kv;
    if (kv_config_resolve(&c, 4096, err, sizeof err) || kvcache_create(&kv, &c, 2, NH, NKV, HD, 80, 1, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    static float q[N * NH * HD], k[N * NKV * HD], v[N * NKV * HD], out[N * NH * HD];
    for (int i = 0; i < N * NH * HD; i++) q[i] = rnd_sym();
    for (int i = 0; i < N * NKV * HD; i++) k[i] = rnd_sym() * 3.0f, v[i] = rnd_sym();
    /* a prompt of 75 (two parts of KV_CALL_TOKENS at most), then one by one */
    for (int l = 0; l < 2; l++) {
        CHECK(kvcache_attend(&kv, l, q, k, v, 75, 0, out, NULL, err, sizeof err) == 0, "prompt: %s", err);
        for (int t = 75; t < N; t++)
            CHECK(kvcache_attend(&kv, l, q + (size_t)t * NH * HD, k + (size_t)t * NKV * HD, v + (size_t)t * NKV * HD, 1,
                                 t, out, NULL, err, sizeof err) == 0,
                  "decode: %s", err);
    }
    const float tol = type == KV_COLD_F32 ? 0.0f : type == KV_COLD_Q8 ? 3.0f / 127 * 0.51f : 3.0f / 7 * 0.51f;
    int stored = 0, bad_bound = 0, bad_value = 0, bad_score = 0, over = 0;
    for (int l = 0; l < 2; l++)
        for (int h = 0; h < NKV; h++) {
            const struct kv_page *const *pages;
            const int np = kvcache_cold_pages(&kv, l, h, &pages);
            int seen[N] = {0};
            for (int i = 0; i < kvcache_n_used(&kv, l, h); i++) seen[kvcache_positions(&kv, l, h)[i]]++;
            for (int p = 0; p < np; p++) {
                if (!pages[p]) continue;
                float mn[HD], mx[HD], key[HD], val[HD];
                for (int d = 0; d < HD; d++) mn[d] = INFINITY, mx[d] = -INFINITY;
                for (int i = 0; i < pages[p]->n; i++) {
                    kvcache_cold_read(&kv, pages[p], i, key, val);
                    const int pos = pages[p]->pos[i];
                    bad_value += pos / KV_PAGE != p; /* the page of its 16 positions */
                    seen[pos]++;
                    stored++;
                    for (int d = 0; d < HD; d++) {
                        mn[d] = fminf(mn[d], key[d]), mx[d] = fmaxf(mx[d], key[d]);
                        bad_value += fabsf(key[d] - k[(size_t)pos * NKV * HD + h * HD + d]) > tol + 1e-6f;
                        bad_value += fabsf(val[d] - v[(size_t)pos * NKV * HD + h * HD + d]) > tol / 3 + 1e-6f;
                    }
                }
                for (int trial = 0; trial < 4; trial++) {
                    const float *qq = q + (size_t)(rnd64() % N) * NH * HD + (size_t)(rnd64() % NH) * HD;
                    float lane[8] = {0}; /* the definition: channel d into lane d % 8, lanes added pairwise */
                    for (int d = 0; d < HD; d++) lane[d % 8] += fmaxf(qq[d] * mn[d], qq[d] * mx[d]);
                    const float ref =
                        ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
                    const float got = kvcache_page_bound(&kv, pages[p], qq);
                    bad_bound += got != ref;
                    for (int i = 0; i < pages[p]->n; i++) {
                        kvcache_cold_read(&kv, pages[p], i, key, val);
                        double dot = 0, mag = 0;
                        for (int d = 0; d < HD; d++) dot += (double)qq[d] * key[d], mag += fabs((double)qq[d] * key[d]);
                        bad_bound += dot > (double)got + 1e-4;
                        /* recall's score of the token, on its stored row: the dot with the dequantized key */
                        float one;
                        bad_score += fabs(kvcache_cold_score(&kv, pages[p], i, qq, 1, &one) - dot) > 1e-5 * mag + 1e-30;
                    }
                }
            }
            if (!cold_max)
                for (int pos = 0; pos < N; pos++) over += seen[pos] != 1; /* hot or cold, once */
        }
    CHECK(stored > 0, "%s: nothing went cold", kv_cold_name(type));
    CHECK(bad_bound == 0, "%s: %d page bounds differ from brute force or are exceeded", kv_cold_name(type), bad_bound);
    CHECK(bad_value == 0, "%s: %d stored values outside the rounding bound", kv_cold_name(type), bad_value);
    CHECK(bad_score == 0, "%s: %d token scores differ from the dequantized key's dot", kv_cold_name(type), bad_score);
    CHECK(over == 0, "%s: %d positions not in exactly one of hot and cold", kv_cold_name(type), over);
    if (cold_max)
        CHECK(kvcache_cold_bytes(&kv) <= (size_t)cold_max + 2 * 2 * 600 && kv.cold_dropped > 0,
              "%s: the cold store holds %zu bytes, bound %lld, %lld pages dropped", kv_cold_name(type),
              kvcache_cold_bytes(&kv), (long long)cold_max, (long long)kv.cold_dropped);
    CHECK(kv.recalled > 0, "%s: nothing recalled", kv_cold_name(type));
    printf("cold %s%s: %d tokens in pages, %zu bytes (peak %zu), %lld recalled, %lld pages dropped\n",
           kv_cold_name(type), cold_max ? " (bounded)" : "", stored, kvcache_cold_bytes(&kv),
           kvcache_cold_peak_bytes(&kv), (long long)kv.recalled, (long long)kv.cold_dropped);
    kvcache_destroy(&kv);
}

struct ranked {
    float v;
    int id;
};
static int ranked_cmp(const void *a, const void *b) { /* best first, ties to the smaller id */
    const struct ranked *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Recall's choice against brute force, at every decode step: the
 * cands * recall / KV_PAGE pages of largest bound (the best over the
 * group's query heads; ties to the older page), then, where their tokens
 * are more than the recall, the tokens of largest q . k (kvcache_cold_score;
 * ties to the older position); the attention list holds them in position
 * order. cands 0: the default, KV_RECALL_CANDS. */
static void test_recall_choice(enum kv_cold type, int recall, int cands) {
    enum { HD = 7, NKV = 2, NH = 6, N = 260, BUDGET = 20, GROUP = NH / NKV };
    struct kv_config c;
    kv_config_default(&c);
    c.budget = BUDGET;
    c.cold = type;
    c.recall = recall;
    c.cands = cands;
    char err[256];
    struct kvcache kv;
    if (kv_config_resolve(&c, 4096, err, sizeof err) ||
        kvcache_create(&kv, &c, 1, NH, NKV, HD, 40, 1, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    static float q[N * NH * HD], k[N * NKV * HD], v[N * NKV * HD], out[N * NH * HD];
    for (int i = 0; i < N * NH * HD; i++) q[i] = rnd_sym();
    for (int i = 0; i < N * NKV * HD; i++) k[i] = rnd_sym() * 3.0f, v[i] = rnd_sym();
    CHECK(attend(&kv, q, k, v, 40, 0, out) == 0, "prompt");
    const int m = cands ? cands : KV_RECALL_CANDS, max_pages = m * recall / KV_PAGE > 0 ? m * recall / KV_PAGE : 1;
    int wrong = 0, steps_selecting = 0, steps = 0;
    for (int t = 40; t < N; t++) {
        const float *qt = q + (size_t)t * NH * HD;
        int want[NKV][N], n_want[NKV];
        for (int h = 0; h < NKV; h++) {
            const struct kv_page *const *pages;
            const int np = kvcache_cold_pages(&kv, 0, h, &pages);
            struct ranked pr[N], tr[N * KV_PAGE];
            int n_pr = 0, n_tr = 0;
            for (int p = 0; p < np; p++) {
                if (!pages[p]) continue;
                float best = -INFINITY;
                for (int g = 0; g < GROUP; g++)
                    best = fmaxf(best, kvcache_page_bound(&kv, pages[p], qt + (h * GROUP + g) * HD));
                pr[n_pr++] = (struct ranked){best, p};
            }
            qsort(pr, (size_t)n_pr, sizeof *pr, ranked_cmp);
            for (int i = 0; i < n_pr && i < max_pages; i++)
                for (int j = 0; j < pages[pr[i].id]->n; j++) {
                    float dots[GROUP];
                    const float best = kvcache_cold_score(&kv, pages[pr[i].id], j, qt + h * GROUP * HD, GROUP, dots);
                    tr[n_tr++] = (struct ranked){best, pages[pr[i].id]->pos[j]};
                }
            if (n_tr > recall) {
                qsort(tr, (size_t)n_tr, sizeof *tr, ranked_cmp);
                n_tr = recall;
                steps_selecting += h == 0;
            }
            int mark[N] = {0};
            for (int i = 0; i < n_tr; i++) mark[tr[i].id] = 1;
            n_want[h] = 0;
            for (int p = 0; p < N; p++)
                if (mark[p]) want[h][n_want[h]++] = p;
        }
        CHECK(attend(&kv, qt, k + (size_t)t * NKV * HD, v + (size_t)t * NKV * HD, 1, t, out + (size_t)t * NH * HD) == 0,
              "decode %d", t);
        steps++;
        for (int h = 0; h < NKV; h++) {
            const struct kv_entry *E = kv.list + (size_t)h * (kv.n_slots + kv.recall);
            int got = 0, last = -1;
            for (int i = 0; i < kv.n_list[h]; i++) {
                if (E[i].slot >= 0) continue;
                wrong += got >= n_want[h] || E[i].pos != want[h][got] || E[i].pos <= last;
                last = E[i].pos;
                got++;
            }
            wrong += got != n_want[h];
        }
    }
    CHECK(wrong == 0, "%s, recall %d: %d recalled tokens differ from brute force", kv_cold_name(type), recall, wrong);
    CHECK(recall >= N || steps_selecting > steps / 2, "%s, recall %d: tokens chosen one by one at %d of %d steps",
          kv_cold_name(type), recall, steps_selecting, steps);
    kvcache_destroy(&kv);
}

/* A cold cache rewound to position 0 is a fresh cache (its pages gone), and
 * one rewound to p gives what a cache that only ever saw [0, p) and then
 * the new tokens gives: outputs bit for bit. */
static void test_cold_rewind(void) {
    enum { HD = 8, NKV = 1, NH = 2, N = 90, BUDGET = 12, P = 50 };
    static float qa[N * NH * HD], ka[N * NKV * HD], va[N * NKV * HD], qb[N * NH * HD], kb[N * NKV * HD],
        vb[N * NKV * HD], o1[N * NH * HD], o2[N * NH * HD];
    for (int i = 0; i < N * NH * HD; i++) qa[i] = rnd_sym(), qb[i] = rnd_sym();
    for (int i = 0; i < N * NKV * HD; i++) ka[i] = rnd_sym(), va[i] = rnd_sym(), kb[i] = rnd_sym(), vb[i] = rnd_sym();
    struct kv_config c;
    kv_config_default(&c);
    c.budget = BUDGET;
    c.cold = KV_COLD_Q8;
    c.recall = 2 * KV_PAGE;
    char err[256];
    for (int rewind = 0; rewind <= P; rewind += P) {
        struct kvcache used, fresh;
        if (kv_config_resolve(&c, 4096, err, sizeof err) ||
            kvcache_create(&used, &c, 1, NH, NKV, HD, 1, 1, err, sizeof err) ||
            kvcache_create(&fresh, &c, 1, NH, NKV, HD, 1, 1, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            exit(1);
        }
        int ok = 1;
        /* used: sequence a to N, then b from `rewind` on; fresh: a to `rewind`, then b */
        for (int t = 0; t < N && ok; t++)
            ok = attend(&used, qa + t * NH * HD, ka + t * NKV * HD, va + t * NKV * HD, 1, t, o1) == 0;
        for (int t = 0; t < rewind && ok; t++)
            ok = attend(&fresh, qa + t * NH * HD, ka + t * NKV * HD, va + t * NKV * HD, 1, t, o2) == 0;
        int same = 1;
        for (int t = rewind; t < N && ok; t++) {
            ok = attend(&used, qb + t * NH * HD, kb + t * NKV * HD, vb + t * NKV * HD, 1, t, o1) == 0 &&
                 attend(&fresh, qb + t * NH * HD, kb + t * NKV * HD, vb + t * NKV * HD, 1, t, o2) == 0;
            same &= !memcmp(o1, o2, sizeof(float) * NH * HD);
        }
        CHECK(ok, "cold rewind: attend failed");
        /* from 0 the pages must all be gone and rebuilt; from P the history before P is the same,
         * but the H2O scores keep what the rewound queries gave, so only 0 is compared bit for bit */
        if (rewind == 0) CHECK(same, "a cold cache rewound to 0 differs from a fresh one");
        printf("cold rewind to %d: %s, %zu cold bytes (fresh %zu)\n", rewind, same ? "same outputs" : "outputs differ",
               kvcache_cold_bytes(&used), kvcache_cold_bytes(&fresh));
        kvcache_destroy(&used);
        kvcache_destroy(&fresh);
    }
}

static int test_model(void) {
    const char *path = getenv("HEARTH_TEST_MODEL");
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) {
        printf("SKIP: no model at HEARTH_TEST_MODEL (%s)\n", path ? path : "unset");
        return 77;
    }
    fclose(f);
    char err[512];
    struct llama_model m;
    if (model_load(&m, path, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    enum { N_CTX = 61, N_PROMPT = 37, BATCH = 16, N_DEC = 6 }; /* small: the sanitizer build runs it too */
    const int nv = m.cfg.n_vocab;
    int32_t toks[N_PROMPT + N_DEC];
    for (int i = 0; i < N_PROMPT + N_DEC; i++) toks[i] = (int32_t)(rnd64() % 20000) + 100;
    float *la = malloc(sizeof(float) * nv), *lb = malloc(sizeof(float) * nv);
    struct llama_state dense, h2o;
    struct kv_config c;
    kv_config_default(&c);
    c.budget = N_CTX;
    if (!la || !lb || kv_config_resolve(&c, N_CTX, err, sizeof err) ||
        state_create(&dense, &m, N_CTX, BATCH, 2, err, sizeof err) ||
        state_create(&h2o, &m, N_CTX, BATCH, 2, err, sizeof err) || state_set_kv(&h2o, &c, 1, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    CHECK(h2o.kv && !h2o.key_cache, "forced H2O path");
    /* a prompt in batches (37 = 2 x 16 + 5), then token by token */
    int ok = forward(&dense, toks, N_PROMPT, 0, la, 0, err, sizeof err) == 0 &&
             forward(&h2o, toks, N_PROMPT, 0, lb, 0, err, sizeof err) == 0;
    CHECK(ok, "prompt: %s", err);
    int diff = memcmp(la, lb, sizeof(float) * nv) != 0;
    for (int i = 0; ok && i < N_DEC; i++) {
        ok = forward(&dense, toks + N_PROMPT + i, 1, N_PROMPT + i, la, 0, err, sizeof err) == 0 &&
             forward(&h2o, toks + N_PROMPT + i, 1, N_PROMPT + i, lb, 0, err, sizeof err) == 0;
        diff |= memcmp(la, lb, sizeof(float) * nv) != 0;
    }
    CHECK(ok && !diff, "budget >= context: logits differ from the dense cache");
    printf("model: budget = context (%d), %d prompt + %d decode tokens: logits %s\n", N_CTX, N_PROMPT, N_DEC,
           diff ? "DIFFER" : "bit-identical");
    state_free(&h2o);

    /* a prompt (37) longer than the budget (12), then decoding; f32 and q8 (f16: kv_unit) */
    for (int t = KV_F32; t <= KV_Q8; t += KV_Q8 - KV_F32) {
        kv_config_default(&c);
        c.budget = 12;
        c.type = (enum kv_type)t;
        if (kv_config_resolve(&c, N_CTX, err, sizeof err) || state_create(&h2o, &m, N_CTX, BATCH, 2, err, sizeof err) ||
            state_set_kv(&h2o, &c, 0, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        ok = forward(&h2o, toks, N_PROMPT + N_DEC, 0, lb, 0, err, sizeof err) == 0;
        CHECK(ok, "%s: prompt longer than the budget: %s", kv_type_name(t), err);
        int finite = 1;
        for (int i = 0; i < nv; i++) finite &= isfinite(lb[i]);
        CHECK(finite, "non-finite logits");
        for (int l = 0; l < m.cfg.n_layers; l++)
            for (int h = 0; h < m.cfg.n_kv_heads; h++)
                CHECK(kvcache_n_used(h2o.kv, l, h) == 12, "layer %d head %d holds %d", l, h,
                      kvcache_n_used(h2o.kv, l, h));
        printf("model: %s, budget 12 for %d tokens: ok, KV %zu bytes\n", kv_type_name(t), N_PROMPT + N_DEC,
               state_kv_bytes(&h2o));
        state_free(&h2o);
    }
    /* hot/cold KV: a budget of 12 for 43 tokens, what it evicts kept exactly
     * (f32 cold store) and recalled whole: the full cache's logits, bit for bit */
    {
        struct llama_state ref, hc;
        kv_config_default(&c);
        c.budget = 12;
        c.cold = KV_COLD_F32;
        c.recall = N_CTX; /* every page */
        if (kv_config_resolve(&c, N_CTX, err, sizeof err) || state_create(&ref, &m, N_CTX, BATCH, 2, err, sizeof err) ||
            state_create(&hc, &m, N_CTX, BATCH, 2, err, sizeof err) || state_set_kv(&hc, &c, 0, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        ok = forward(&ref, toks, N_PROMPT, 0, la, 0, err, sizeof err) == 0 &&
             forward(&hc, toks, N_PROMPT, 0, lb, 0, err, sizeof err) == 0;
        diff = memcmp(la, lb, sizeof(float) * nv) != 0;
        for (int i = 0; ok && i < N_DEC; i++) {
            ok = forward(&ref, toks + N_PROMPT + i, 1, N_PROMPT + i, la, 0, err, sizeof err) == 0 &&
                 forward(&hc, toks + N_PROMPT + i, 1, N_PROMPT + i, lb, 0, err, sizeof err) == 0;
            diff |= memcmp(la, lb, sizeof(float) * nv) != 0;
        }
        CHECK(ok, "hot/cold: %s", err);
        CHECK(hc.kv->cold_bytes > 0 && kvcache_n_used(hc.kv, 0, 0) == 12, "hot/cold: nothing went cold");
        CHECK(!diff, "hot/cold, f32 cold store recalled whole: logits differ from the full cache");
        printf("model: hot/cold, budget 12 for %d tokens, f32 cold store (%zu bytes) recalled whole: logits %s\n",
               N_PROMPT + N_DEC, hc.kv->cold_bytes, diff ? "DIFFER" : "bit-identical to the full cache");
        state_free(&hc);
        /* q8 cold store, a recall of 2 pages: close to the full cache, not equal to plain H2O */
        float *lh = malloc(sizeof(float) * nv);
        struct llama_state h2 = {0};
        double dq = 0, dh = 0;
        for (int pass = 0; pass < 2 && lh; pass++) {
            kv_config_default(&c);
            c.budget = 12;
            c.cold = pass ? KV_COLD_Q8 : KV_COLD_OFF;
            c.recall = 2 * KV_PAGE;
            if (kv_config_resolve(&c, N_CTX, err, sizeof err) || state_create(&h2, &m, N_CTX, BATCH, 2, err, sizeof err) ||
                state_set_kv(&h2, &c, 0, err, sizeof err) ||
                forward(&h2, toks, N_PROMPT + N_DEC, 0, pass ? lb : lh, 0, err, sizeof err)) {
                CHECK(0, "hot/cold q8: %s", err);
                break;
            }
            state_free(&h2);
        }
        for (int i = 0; lh && i < nv; i++) {
            dq = fmax(dq, fabs((double)lb[i] - la[i]));
            dh = fmax(dh, fabs((double)lh[i] - la[i]));
        }
        printf("model: max |logit - full cache|: H2O %.4f, hot/cold q8 recall 32: %.4f\n", dh, dq);
        CHECK(dq < dh, "hot/cold q8 with recall is not closer to the full cache than H2O (%g vs %g)", dq, dh);
        free(lh);
        state_free(&ref);
    }
    state_free(&dense);
    free(la), free(lb);
    model_free(&m);
    return failures ? 1 : 0;
}

/* `test_kvcache bench`: attention time per decoded token (one thread, the
 * default model's shape: 30 layers x 9 query / 3 KV heads of 64; thread CPU
 * time) as the context grows to 2048, full cache (budget = context) against a fixed budget. Not a
 * ctest: timings for docs/kv-cache.md. */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* CPU time: the machine is shared */
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bench(void) {
    enum { NL = 30, NH = 9, NKV = 3, HD = 64, MAXCTX = 2048 + 32, STEPS = 32 };
    const int budgets[] = {MAXCTX, 819, 256};
    static float q[NH * HD], k[NKV * HD], v[NKV * HD], out[NH * HD];
    printf("| context | full f32 (us/token) | budget 819 f32 | budget 256 f32 | budget 819 q8 |\n|---|---|---|---|---|\n");
    struct kvcache kv[4];
    for (int b = 0; b < 4; b++)
        make_layers(&kv[b], b < 3 ? budgets[b] : 819, 4, b < 3 ? (budgets[b] - 4) / 2 : 407, b == 3 ? KV_Q8 : KV_F32,
                    NL, NH, NKV, HD);
    int pos = 0;
    for (int ctx = 512; ctx <= MAXCTX - STEPS; ctx *= 2) {
        double us[4];
        for (int b = 0; b < 4; b++) {
            /* fill up to ctx (untimed), then time STEPS decode steps over all layers */
            for (pos = kv[b].n_used[0] ? kvcache_max_pos(&kv[b]) + 1 : 0; pos < ctx + STEPS; pos++) {
                for (int i = 0; i < NH * HD; i++) q[i] = rnd_sym();
                for (int i = 0; i < NKV * HD; i++) k[i] = rnd_sym(), v[i] = rnd_sym();
                double t0 = now_s();
                for (int l = 0; l < NL; l++) {
                    char err[128];
                    if (kvcache_attend(&kv[b], l, q, k, v, 1, pos, out, NULL, err, sizeof err)) {
                        fprintf(stderr, "%s\n", err);
                        exit(1);
                    }
                }
                if (pos == ctx) us[b] = 0.0;
                if (pos >= ctx) us[b] += (now_s() - t0) * 1e6 / STEPS;
            }
        }
        printf("| %d | %.0f | %.0f | %.0f | %.0f |\n", ctx, us[0], us[1], us[2], us[3]);
        fflush(stdout);
    }
    for (int b = 0; b < 4; b++) kvcache_destroy(&kv[b]);
}

int main(int argc, char **argv) {
    check_seed(0x4b5643616368ull);
    if (argc > 1 && !strcmp(argv[1], "bench")) {
        bench();
        return 0;
    }
    printf("seed 0x%llx\n", (unsigned long long)check_seed_used);
    if (argc > 1 && !strcmp(argv[1], "model")) {
        int rc = test_model();
        printf("%s\n", rc == 0 ? "kv_model: ok" : rc == 77 ? "kv_model: skipped" : "kv_model: FAILED");
        return rc;
    }
    test_config();
    test_heavy_sinks_recent();
    test_ties();
    test_score_mean();
    test_decay_scores();
    test_gqa_grouping();
    test_decode_scores();
    test_prefill_gqa(10, 16); /* fits */
    test_prefill_gqa(29, 9);  /* a batch longer than the budget (within one call's KV_CALL_TOKENS) */
    test_call_parts();
    test_roundtrip();
    test_cold_pages(KV_COLD_F32, 0);
    test_cold_pages(KV_COLD_Q8, 0);
    test_cold_pages(KV_COLD_Q4, 0);
    test_cold_pages(KV_COLD_Q8, 3000);
    test_cold_rewind();
    test_recall_choice(KV_COLD_Q8, 2 * KV_PAGE, 0);
    test_recall_choice(KV_COLD_Q8, 2 * KV_PAGE, 2);
    test_recall_choice(KV_COLD_Q8, KV_PAGE, 9);
    test_recall_choice(KV_COLD_Q4, 2 * KV_PAGE + 3, 0);
    test_recall_choice(KV_COLD_F32, 5, 0);
    test_recall_choice(KV_COLD_F32, 4096, 0);
    if (failures) {
        printf("%d failure(s)\n", failures);
        return 1;
    }
    printf("kv_unit: ok\n");
    return 0;
}
