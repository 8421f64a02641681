/* sampler: penalties, top-k, top-p, min-p, temperature and the draw, in llama.cpp's
 * order and with its semantics (see sampler.h).
 *
 * Per token the logits are copied once into a candidate array (id, penalised
 * logit), dropping tokens at -inf/NaN, which can never be drawn. The filters keep
 * a prefix of the candidates in descending order, and only as much of that order
 * as they need is established: `n_sorted` candidates at the front are in order and
 * every later one ranks below them. Top-k is taken while copying (a heap of the k
 * best so far: most tokens cost one comparison with its root), so top-k 40 over
 * 49152 tokens is one O(n) pass plus a sort of 40, not an O(n log n) sort. Without
 * top-k, top-p extends the ordered prefix in doubling steps (quickselect on the
 * rest, then a sort of the selected few). The order is total (logit, then lower id
 * first), which makes every step, and so every draw for a given seed, deterministic. */
#include "sampler.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct sampler {
    struct sampler_params p;
    int32_t n_vocab;
    uint64_t seed; /* the seed in use (drawn when p.seed was SAMPLER_SEED_RANDOM) */
    uint64_t rng[4]; /* xoshiro256** state */

    struct sampler_cand *cand; /* [n_vocab] workspace of one call */
    int32_t n_cand;            /* candidates alive, [0, n_cand) */
    int32_t n_sorted;          /* [0, n_sorted) in order; all later rank below them */

    int32_t *hist;     /* [repeat_last_n] ring of recent tokens */
    int32_t n_hist;    /* tokens in the ring, <= repeat_last_n */
    int32_t hist_pos;  /* next slot to write */
    uint32_t *mark;    /* [n_vocab]: mark[id] == mark_gen when id is in the history */
    uint32_t mark_gen;
};

void sampler_params_default(struct sampler_params *p) {
    p->temp = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->seed = SAMPLER_SEED_RANDOM;
}

/* ---- PRNG: xoshiro256** (Blackman & Vigna), state filled by splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* uniform in [0, 1) with 53 random bits */
static double rng_uniform(uint64_t s[4]) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

static void rng_seed(struct sampler *s) {
    uint64_t x = s->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
}

/* ---- creation ---- */

struct sampler *sampler_create(const struct sampler_params *p, int32_t n_vocab, char *err, size_t errlen) {
    if (n_vocab < 1) {
        snprintf(err, errlen, "sampler: n_vocab %d must be at least 1", (int)n_vocab);
        return NULL;
    }
    if (isnan(p->temp)) {
        snprintf(err, errlen, "sampler: temperature is NaN");
        return NULL;
    }
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f)) {
        snprintf(err, errlen, "sampler: top_p %g outside [0, 1]", (double)p->top_p);
        return NULL;
    }
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) {
        snprintf(err, errlen, "sampler: min_p %g outside [0, 1]", (double)p->min_p);
        return NULL;
    }
    if (!(p->repeat_penalty > 0.0f) || isinf(p->repeat_penalty)) {
        snprintf(err, errlen, "sampler: repeat_penalty %g must be a positive finite number (1 = off)",
                 (double)p->repeat_penalty);
        return NULL;
    }
    if (p->repeat_last_n < 0) {
        snprintf(err, errlen, "sampler: repeat_last_n %d must be >= 0 (0 = off)", p->repeat_last_n);
        return NULL;
    }
    struct sampler *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "sampler: out of memory");
        return NULL;
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->mark = calloc((size_t)n_vocab, sizeof *s->mark);
    if (p->repeat_last_n > 0)
        s->hist = malloc((size_t)p->repeat_last_n * sizeof *s->hist);
    if (!s->cand || !s->mark || (p->repeat_last_n > 0 && !s->hist)) {
        snprintf(err, errlen, "sampler: out of memory for a vocabulary of %d", (int)n_vocab);
        sampler_free(s);
        return NULL;
    }
    if (p->seed == SAMPLER_SEED_RANDOM) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        x ^= (uint64_t)getpid() << 32;
        s->seed = splitmix64(&x);
    } else {
        s->seed = p->seed;
    }
    rng_seed(s);
    return s;
}

void sampler_free(struct sampler *s) {
    if (!s)
        return;
    free(s->cand);
    free(s->mark);
    free(s->hist);
    free(s);
}

uint64_t sampler_seed(const struct sampler *s) { return s->seed; }

void sampler_accept(struct sampler *s, int32_t token) {
    if (s->p.repeat_last_n <= 0 || token < 0 || token >= s->n_vocab)
        return;
    s->hist[s->hist_pos] = token;
    s->hist_pos = (s->hist_pos + 1) % s->p.repeat_last_n;
    if (s->n_hist < s->p.repeat_last_n)
        s->n_hist++;
}

void sampler_reset(struct sampler *s) {
    s->n_hist = 0;
    s->hist_pos = 0;
    rng_seed(s);
}

/* ---- penalties ---- */

static int penalty_active(const struct sampler *s) { return s->p.repeat_penalty != 1.0f && s->n_hist > 0; }

/* Marks the distinct tokens of the history: each is penalised once, however often
 * it occurred (llama.cpp's repeat penalty; frequency/presence penalties count). */
static void penalty_mark(struct sampler *s) {
    if (++s->mark_gen == 0) { /* wrapped: old marks could collide */
        memset(s->mark, 0, (size_t)s->n_vocab * sizeof *s->mark);
        s->mark_gen = 1;
    }
    for (int32_t i = 0; i < s->n_hist; i++)
        s->mark[s->hist[i]] = s->mark_gen;
}

/* Logit as the sampler sees it: NaN -> -inf, +inf -> FLT_MAX, then the penalty
 * (positive logits divided, negative multiplied, so both move down for penalty > 1),
 * kept finite so that an overflow cannot turn a live token into -inf (or +inf,
 * which would make the softmax NaN). */
static float logit_at(const struct sampler *s, const float *logits, int32_t id, int penalise) {
    float l = logits[id];
    if (isnan(l) || l == -INFINITY)
        return -INFINITY;
    if (l > FLT_MAX)
        l = FLT_MAX;
    if (penalise && s->mark[id] == s->mark_gen) {
        l = l <= 0.0f ? l * s->p.repeat_penalty : l / s->p.repeat_penalty;
        l = l < -FLT_MAX ? -FLT_MAX : l > FLT_MAX ? FLT_MAX : l;
    }
    return l;
}

/* ---- ordering: higher logit first, then lower id ---- */

static int better(const struct sampler_cand *a, const struct sampler_cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb) {
    const struct sampler_cand *a = pa, *b = pb;
    return better(a, b) ? -1 : better(b, a) ? 1 : 0;
}

static void cand_swap(struct sampler_cand *a, struct sampler_cand *b) {
    struct sampler_cand t = *a;
    *a = *b;
    *b = t;
}

/* Quickselect: afterwards a[0..m) hold the m best of a[0..n), in no order.
 * Median-of-three pivots; the order is total, so there are no equal keys. */
static void select_top(struct sampler_cand *a, int32_t n, int32_t m) {
    int32_t lo = 0, hi = n;
    while (hi - lo > 1) {
        int32_t mid = lo + (hi - lo) / 2, last = hi - 1;
        /* median of a[lo], a[mid], a[last] into a[last] as the pivot */
        if (better(&a[mid], &a[lo]))
            cand_swap(&a[mid], &a[lo]);
        if (better(&a[last], &a[lo]))
            cand_swap(&a[last], &a[lo]);
        if (better(&a[mid], &a[last]))
            cand_swap(&a[mid], &a[last]);
        int32_t store = lo;
        for (int32_t i = lo; i < last; i++)
            if (better(&a[i], &a[last]))
                cand_swap(&a[i], &a[store++]);
        cand_swap(&a[store], &a[last]);
        /* [lo, store) rank above the pivot at store, (store, hi) below */
        if (store == m || store + 1 == m)
            return;
        if (m < store)
            hi = store;
        else
            lo = store + 1;
    }
}

/* Extends the ordered prefix to min(k, n_cand) candidates. */
static void ensure_sorted(struct sampler *s, int32_t k) {
    if (k > s->n_cand)
        k = s->n_cand;
    if (k <= s->n_sorted)
        return;
    struct sampler_cand *rest = s->cand + s->n_sorted;
    int32_t m = k - s->n_sorted;
    select_top(rest, s->n_cand - s->n_sorted, m);
    qsort(rest, (size_t)m, sizeof *rest, cand_cmp);
    s->n_sorted = k;
}

/* ---- the filter chain ---- */

/* Min-heap on `better` (the worst candidate at the root) of n entries: sift a[i] down. */
static void heap_down(struct sampler_cand *a, int32_t n, int32_t i) {
    for (;;) {
        int32_t w = i, l = 2 * i + 1, r = l + 1;
        if (l < n && better(&a[w], &a[l]))
            w = l;
        if (r < n && better(&a[w], &a[r]))
            w = r;
        if (w == i)
            return;
        cand_swap(&a[i], &a[w]);
        i = w;
    }
}

static void heap_up(struct sampler_cand *a, int32_t i) {
    while (i > 0 && better(&a[(i - 1) / 2], &a[i])) {
        cand_swap(&a[i], &a[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
}

/* Penalties, top-k, top-p, min-p: leaves the survivors in cand[0, n_cand) with
 * cand[0] the best (n_sorted >= 1) when any survive. */
static void filter(struct sampler *s, const float *logits) {
    int penalise = penalty_active(s);
    if (penalise)
        penalty_mark(s);
    const int32_t k = s->p.top_k;
    int32_t n = 0;
    s->n_sorted = 0;
    if (k > 0 && k < s->n_vocab) {
        /* top-k while copying: a heap of the k best so far, so the common case
         * (a logit below the k-th best) costs one comparison with the root */
        for (int32_t id = 0; id < s->n_vocab; id++) {
            struct sampler_cand c = {id, logit_at(s, logits, id, penalise), 0.0f};
            if (c.logit == -INFINITY)
                continue;
            if (n < k) {
                s->cand[n] = c;
                heap_up(s->cand, n++);
            } else if (better(&c, &s->cand[0])) {
                s->cand[0] = c;
                heap_down(s->cand, n, 0);
            }
        }
        qsort(s->cand, (size_t)n, sizeof *s->cand, cand_cmp);
        s->n_cand = s->n_sorted = n;
    } else {
        for (int32_t id = 0; id < s->n_vocab; id++) {
            float l = logit_at(s, logits, id, penalise);
            if (l == -INFINITY)
                continue;
            s->cand[n].id = id;
            s->cand[n].logit = l;
            s->cand[n].p = 0.0f;
            n++;
        }
        s->n_cand = n;
    }
    if (n == 0)
        return;
    ensure_sorted(s, 1);
    const float lmax = s->cand[0].logit;

    if (s->p.top_p < 1.0f) {
        /* smallest prefix whose mass (temperature 1, over the current set) >= top_p */
        double z = 0.0;
        for (int32_t i = 0; i < s->n_cand; i++)
            z += exp((double)s->cand[i].logit - lmax);
        double target = (double)s->p.top_p * z, cum = 0.0;
        for (int32_t i = 0; i < s->n_cand; i++) {
            if (i == s->n_sorted)
                ensure_sorted(s, s->n_sorted < 32 ? 64 : 2 * s->n_sorted);
            cum += exp((double)s->cand[i].logit - lmax);
            if (cum >= target) {
                s->n_cand = i + 1;
                break;
            }
        }
        if (s->n_sorted > s->n_cand)
            s->n_sorted = s->n_cand;
    }

    if (s->p.min_p > 0.0f) {
        /* p_i >= min_p * p_max  <=>  logit_i >= lmax + log(min_p) (llama.cpp works on logits) */
        float thr = lmax + logf(s->p.min_p);
        int32_t i = 0;
        while (i < s->n_sorted && s->cand[i].logit >= thr)
            i++;
        if (i < s->n_sorted) {
            s->n_cand = s->n_sorted = i; /* the cut falls inside the ordered prefix */
        } else {
            int32_t keep = s->n_sorted; /* partition the unordered rest: survivors first */
            for (int32_t j = s->n_sorted; j < s->n_cand; j++)
                if (s->cand[j].logit >= thr)
                    cand_swap(&s->cand[j], &s->cand[keep++]);
            s->n_cand = keep;
        }
    }
}

/* Writes p (after the temperature, normalised to sum 1) into the survivors;
 * cand[0] is the best, so every weight is in [0, 1] and their sum is >= 1. */
static void apply_temperature(struct sampler *s) {
    const double lmax = s->cand[0].logit, t = s->p.temp;
    double z = 0.0;
    for (int32_t i = 0; i < s->n_cand; i++) {
        float w = (float)exp(((double)s->cand[i].logit - lmax) / t);
        s->cand[i].p = w;
        z += w;
    }
    for (int32_t i = 0; i < s->n_cand; i++)
        s->cand[i].p = (float)(s->cand[i].p / z);
}

static int32_t greedy(struct sampler *s, const float *logits) {
    int penalise = penalty_active(s);
    if (penalise)
        penalty_mark(s);
    int32_t best = -1;
    float lbest = -INFINITY;
    for (int32_t id = 0; id < s->n_vocab; id++) {
        float l = logit_at(s, logits, id, penalise);
        if (l > lbest) { /* strictly: ties keep the lower id */
            lbest = l;
            best = id;
        }
    }
    return best;
}

int32_t sampler_sample(struct sampler *s, const float *logits) {
    if (!(s->p.temp > 0.0f))
        return greedy(s, logits);
    filter(s, logits);
    if (s->n_cand == 0)
        return -1;
    apply_temperature(s);
    /* walk the survivors in their (deterministic) order until the mass passes u */
    double u = rng_uniform(s->rng), cum = 0.0;
    for (int32_t i = 0; i < s->n_cand; i++) {
        cum += s->cand[i].p;
        if (u < cum)
            return s->cand[i].id;
    }
    /* rounding left the total just under u: the last survivor with weight */
    for (int32_t i = s->n_cand - 1; i > 0; i--)
        if (s->cand[i].p > 0.0f)
            return s->cand[i].id;
    return s->cand[0].id;
}

int32_t sampler_candidates(struct sampler *s, const float *logits, const struct sampler_cand **out) {
    *out = s->cand;
    if (!(s->p.temp > 0.0f)) {
        int32_t id = greedy(s, logits);
        if (id < 0)
            return 0;
        s->cand[0].id = id;
        s->cand[0].logit = logit_at(s, logits, id, penalty_active(s));
        s->cand[0].p = 1.0f;
        return 1;
    }
    filter(s, logits);
    if (s->n_cand == 0)
        return 0;
    ensure_sorted(s, s->n_cand);
    apply_temperature(s);
    return s->n_cand;
}
