/* predictor: see predictor.h.
 *
 * Training works on a `struct net`: the parameters in one buffer
 *     par = [ W1 [r][dim] | b1 [r] | W2T [r][n_out] | b2 [n_out] ]
 * with Adam's gradient and moments in the same layout, plus copies of W1 and
 * W2 in the other orientation (W1T [dim][r], W2 [n_out][r]) refreshed after
 * each step. With both orientations at hand every matrix product of a
 * minibatch of B samples is a plain row-major C = A B whose inner loop runs
 * along contiguous rows of B and C (it vectorises, see predictor_avx2.c):
 *
 *     forward   Z  = relu(Xb W1T + b1)       [B][r]     = [B][dim] [dim][r]
 *               L  = Z W2T + b2              [B][n_out] = [B][r] [r][n_out]
 *               G  = dloss/dL                elementwise, in place of L
 *     backward  gW2T = Z^T G                 [r][n_out] = [r][B] [B][n_out]
 *               dZ   = (G W2) * (Z > 0)      [B][r]     = [B][n_out] [n_out][r]
 *               gW1  = dZ^T Xb               [r][dim]   = [r][B] [B][dim]
 *               gb2, gb1: column sums of G, dZ
 *
 * Each product is split over the pool's threads by rows of C, and each
 * element of C is summed over k in order whatever the split, so training is
 * invariant to the thread count (and deterministic for a seed). */
#include "predictor.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "types.h"
#include "vec.h"

#if defined(HEARTH_HAVE_AVX2_BUILD)
void predictor_gemm_avx2(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float *C, int64_t ldc, int acc);
void predictor_bce_grad_avx2(const float *l, const uint8_t *y, float *g, int64_t n, float pos_w, float scale);
void predictor_adam_avx2(float *p, const float *g, float *m, float *v, int64_t n, float b1, float b2, float lr_t,
                         float eps_t, float decay);
#endif

#define MAX_SIZE ((int64_t)1 << 30) /* any one dimension (kernels take int lengths) */

/* ---- random numbers (splitmix64) ---------------------------------------- */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

static float rng_normal(uint64_t *s) { /* Box-Muller */
    double u = rng_unit(s), v = rng_unit(s);
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

/* ---- model --------------------------------------------------------------- */

static int check_sizes(const char *who, int64_t dim, int64_t rank, int64_t n_out, char *err, size_t errlen) {
    if (dim < 1 || dim > MAX_SIZE) {
        snprintf(err, errlen, "%s: dim %lld out of range [1, 2^30]", who, (long long)dim);
        return -1;
    }
    if (n_out < 1 || n_out > MAX_SIZE) {
        snprintf(err, errlen, "%s: n_out %lld out of range [1, 2^30]", who, (long long)n_out);
        return -1;
    }
    if (rank < 32 || rank > MAX_SIZE || rank % 32 != 0) {
        snprintf(err, errlen, "%s: rank %lld is not a positive multiple of 32 (W2 rows must be whole Q8_0 blocks)",
                 who, (long long)rank);
        return -1;
    }
    return 0;
}

int predictor_init(struct predictor *p, int64_t dim, int64_t rank, int64_t n_out, uint64_t seed, char *err,
                   size_t errlen) {
    memset(p, 0, sizeof *p);
    if (check_sizes("predictor_init", dim, rank, n_out, err, errlen) != 0)
        return -1;
    p->w1 = malloc((size_t)(rank * dim) * sizeof(float));
    p->b1 = calloc((size_t)rank, sizeof(float));
    p->w2 = malloc((size_t)(n_out * rank) * sizeof(float));
    p->b2 = calloc((size_t)n_out, sizeof(float));
    if (!p->w1 || !p->b1 || !p->w2 || !p->b2) {
        predictor_free(p);
        snprintf(err, errlen, "predictor_init: out of memory for dim %lld rank %lld n_out %lld", (long long)dim,
                 (long long)rank, (long long)n_out);
        return -1;
    }
    p->dim = dim, p->rank = rank, p->n_out = n_out;
    uint64_t s = seed;
    float s1 = sqrtf(2.0f / (float)dim), s2 = sqrtf(1.0f / (float)rank);
    for (int64_t i = 0; i < rank * dim; i++) p->w1[i] = s1 * rng_normal(&s);
    for (int64_t i = 0; i < n_out * rank; i++) p->w2[i] = s2 * rng_normal(&s);
    return 0;
}

void predictor_free(struct predictor *p) {
    free(p->w1);
    free(p->b1);
    free(p->w2);
    free(p->b2);
    memset(p, 0, sizeof *p);
}

static int check_model(const char *who, const struct predictor *p, char *err, size_t errlen) {
    if (!p || !p->w1 || !p->b1 || !p->w2 || !p->b2) {
        snprintf(err, errlen, "%s: predictor has no weights (not initialised)", who);
        return -1;
    }
    return check_sizes(who, p->dim, p->rank, p->n_out, err, errlen);
}

int64_t predictor_choose_rank(const float *freq, int64_t n_out, int64_t max_rank) {
    max_rank = max_rank / 32 * 32;
    if (max_rank < 32)
        max_rank = 32;
    /* Total firings of the neurons that are not always on; then bisect for
     * the largest frequency threshold tau whose neurons (freq >= tau) still
     * cover 90% of them. No sort: no allocation, O(40 n_out). */
    double total = 0.0;
    for (int64_t i = 0; i < n_out; i++)
        if (freq[i] > 0.0f && freq[i] <= 0.99f)
            total += freq[i];
    if (total <= 0.0)
        return 32;
    double lo = 0.0, hi = 1.0; /* S(lo) >= 0.9 total always; S(hi) maybe not */
    for (int it = 0; it < 40; it++) {
        double mid = 0.5 * (lo + hi), s = 0.0;
        for (int64_t i = 0; i < n_out; i++)
            if (freq[i] <= 0.99f && freq[i] >= mid)
                s += freq[i];
        if (s >= 0.9 * total)
            lo = mid;
        else
            hi = mid;
    }
    int64_t c90 = 0;
    for (int64_t i = 0; i < n_out; i++)
        if (freq[i] > 0.0f && freq[i] <= 0.99f && freq[i] >= lo)
            c90++;
    int64_t rank = (c90 / 8 + 31) / 32 * 32;
    if (rank < 32)
        rank = 32;
    return rank > max_rank ? max_rank : rank;
}

/* ---- kernels ------------------------------------------------------------- */

/* C[i][j] (+)= sum_k A[i][k] B[k][j], rows [m0, m1): each element summed in
 * increasing k (see predictor_avx2.c for the same contract). */
static void gemm_scalar(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                        int64_t ldb, float *C, int64_t ldc, int acc) {
    for (int64_t i = m0; i < m1; i++) {
        float *c = C + i * ldc;
        if (!acc)
            memset(c, 0, (size_t)N * sizeof(float));
        for (int64_t k = 0; k < K; k++) {
            const float a = A[i * lda + k], *b = B + k * ldb;
            for (int64_t j = 0; j < N; j++) c[j] += a * b[j];
        }
    }
}

static void bce_grad_scalar(const float *l, const uint8_t *y, float *g, int64_t n, float pos_w, float scale) {
    for (int64_t i = 0; i < n; i++) {
        float v = fminf(fmaxf(l[i], -80.0f), 80.0f);
        float s = 1.0f / (1.0f + expf(-v));
        g[i] = y[i] ? pos_w * scale * (s - 1.0f) : scale * s;
    }
}

static void gemm(int64_t m0, int64_t m1, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                 int64_t ldb, float *C, int64_t ldc, int acc) {
    if (m0 >= m1)
        return;
#if defined(HEARTH_HAVE_AVX2_BUILD)
    if (quant_have_avx2()) {
        predictor_gemm_avx2(m0, m1, N, K, A, lda, B, ldb, C, ldc, acc);
        return;
    }
#endif
    gemm_scalar(m0, m1, N, K, A, lda, B, ldb, C, ldc, acc);
}

static void bce_grad(const float *l, const uint8_t *y, float *g, int64_t n, float pos_w, float scale) {
#if defined(HEARTH_HAVE_AVX2_BUILD)
    if (quant_have_avx2()) {
        predictor_bce_grad_avx2(l, y, g, n, pos_w, scale);
        return;
    }
#endif
    bce_grad_scalar(l, y, g, n, pos_w, scale);
}

/* The weighted cross-entropy of one row of logits, summed (double). */
static double bce_loss(const float *l, const uint8_t *y, int64_t n, float pos_w) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double v = l[i];
        /* log sigmoid(v) = -log1p(exp(-v)), stable for both signs */
        double ls = v >= 0 ? -log1p(exp(-v)) : v - log1p(exp(v));
        double l1s = ls - v; /* log(1 - sigmoid(v)) = log sigmoid(-v) */
        s -= y[i] ? pos_w * ls : l1s;
    }
    return s;
}

/* [s, e) of n items for thread ith of nth, in pieces that are multiples of align. */
static void split(int64_t n, int ith, int nth, int64_t align, int64_t *s, int64_t *e) {
    int64_t per = (n + nth - 1) / nth;
    per = (per + align - 1) / align * align;
    *s = per * ith < n ? per * ith : n;
    *e = *s + per < n ? *s + per : n;
}

/* ---- the working network ------------------------------------------------- */

struct net {
    int64_t dim, r, no, cap; /* cap: samples a batch buffer holds */
    int64_t npar;            /* floats in par */
    float *par, *w1, *b1, *w2t, *b2;
    float *w1t; /* [dim][r] */
    float *w2;  /* [no][r]; training only */
    float *grad, *gw1, *gb1, *gw2t, *gb2, *m, *v; /* training only, par's layout */
    float *xb;       /* [cap][dim] */
    uint8_t *yb;     /* [cap][no] */
    float *z, *zt;   /* [cap][r], [r][cap] */
    float *l;        /* [cap][no]: logits, then their gradient */
    float *dz, *dzt; /* [cap][r], [r][cap] */
    double *rowloss; /* [cap] */
};

static void net_free(struct net *nt) {
    free(nt->par), free(nt->w1t), free(nt->w2), free(nt->grad), free(nt->m), free(nt->v);
    free(nt->xb), free(nt->yb), free(nt->z), free(nt->zt), free(nt->l), free(nt->dz), free(nt->dzt);
    free(nt->rowloss);
    memset(nt, 0, sizeof *nt);
}

static void net_sync(struct net *nt, int ith, int nth);


/* Copies p into nt's layouts, with batch buffers for cap samples. train: also
 * the gradient and Adam buffers. */
static int net_init(struct net *nt, const struct predictor *p, int64_t cap, int train, const char *who, char *err,
                    size_t errlen) {
    memset(nt, 0, sizeof *nt);
    const int64_t dim = p->dim, r = p->rank, no = p->n_out;
    const size_t f = sizeof(float);
    nt->dim = dim, nt->r = r, nt->no = no, nt->cap = cap;
    nt->npar = r * dim + r + r * no + no;
    nt->par = malloc((size_t)nt->npar * f);
    nt->w1t = malloc((size_t)(dim * r) * f);
    nt->z = malloc((size_t)(cap * r) * f);
    nt->l = malloc((size_t)(cap * no) * f);
    int ok = nt->par && nt->w1t && nt->z && nt->l;
    if (train) {
        nt->w2 = malloc((size_t)(no * r) * f);
        nt->grad = calloc((size_t)nt->npar, f);
        nt->m = calloc((size_t)nt->npar, f);
        nt->v = calloc((size_t)nt->npar, f);
        nt->xb = malloc((size_t)(cap * dim) * f);
        nt->yb = malloc((size_t)(cap * no));
        nt->zt = malloc((size_t)(r * cap) * f);
        nt->dz = malloc((size_t)(cap * r) * f);
        nt->dzt = malloc((size_t)(r * cap) * f);
        nt->rowloss = malloc((size_t)cap * sizeof(double));
        ok = ok && nt->w2 && nt->grad && nt->m && nt->v && nt->xb && nt->yb && nt->zt && nt->dz && nt->dzt &&
             nt->rowloss;
    }
    if (!ok) {
        net_free(nt);
        snprintf(err, errlen, "%s: out of memory (dim %lld rank %lld n_out %lld, %lld samples per batch)", who,
                 (long long)dim, (long long)r, (long long)no, (long long)cap);
        return -1;
    }
    nt->w1 = nt->par;
    nt->b1 = nt->w1 + r * dim;
    nt->w2t = nt->b1 + r;
    nt->b2 = nt->w2t + r * no;
    if (train) {
        nt->gw1 = nt->grad;
        nt->gb1 = nt->gw1 + r * dim;
        nt->gw2t = nt->gb1 + r;
        nt->gb2 = nt->gw2t + r * no;
    }
    memcpy(nt->w1, p->w1, (size_t)(r * dim) * f);
    memcpy(nt->b1, p->b1, (size_t)r * f);
    memcpy(nt->b2, p->b2, (size_t)no * f);
    for (int64_t o = 0; o < no; o++)
        for (int64_t k = 0; k < r; k++) nt->w2t[k * no + o] = p->w2[o * r + k];
    net_sync(nt, 0, 1);
    return 0;
}

/* dst[d][k] = src[k][d] for d in [d0, d1), k in [0, n): rows [d0, d1) of
 * the transpose of src [n][>= d1], in 16 x 16 tiles so that both sides stay
 * in cache. */
static void transpose_rows(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t d0, int64_t d1,
                           int64_t n) {
    for (int64_t db = d0; db < d1; db += 16) {
        int64_t de = db + 16 < d1 ? db + 16 : d1;
        for (int64_t kb = 0; kb < n; kb += 16) {
            int64_t ke = kb + 16 < n ? kb + 16 : n;
            for (int64_t d = db; d < de; d++)
                for (int64_t k = kb; k < ke; k++) dst[d * ldd + k] = src[k * lds + d];
        }
    }
}

/* Refreshes the copies: W1T from W1, and (training) W2 from W2T. */
static void net_sync(struct net *nt, int ith, int nth) {
    int64_t s, e;
    split(nt->dim, ith, nth, 16, &s, &e);
    transpose_rows(nt->w1t, nt->r, nt->w1, nt->dim, s, e, nt->r);
    if (nt->w2) {
        split(nt->no, ith, nth, 16, &s, &e);
        transpose_rows(nt->w2, nt->r, nt->w2t, nt->no, s, e, nt->r);
    }
}

#define ADAM_B1 0.9f
#define ADAM_B2 0.999f
#define ADAM_EPS 1e-8f

enum { PH_FWD, PH_OUT, PH_BWD1, PH_BWD2, PH_ADAM, PH_SYNC };

/* One phase of a step, run on every thread of the pool. */
struct step {
    struct net *nt;
    int phase;
    const float *xa; /* [B][dim]: the batch's inputs */
    const uint8_t *ya; /* [B][n_out]: their labels */
    /* training: PH_FWD first gathers xa = x[perm[b0 + b]], ya likewise */
    const float *x;
    const uint8_t *y;
    const int64_t *perm;
    int64_t b0, B;
    int want_grad, want_loss;
    float pos_w, scale; /* scale: 1 / pairs in the loss's mean */
    float lr_t, eps_t, lr_wd;
};

/* AdamW on p[s, e): m, v the moments; lr_t and eps_t carry the bias
 * correction; decay = lr * weight_decay (0 for biases). */
static void adam_range(float *p, const float *g, float *m, float *v, int64_t s, int64_t e, float lr_t, float eps_t,
                       float decay) {
#if defined(HEARTH_HAVE_AVX2_BUILD)
    if (quant_have_avx2()) {
        predictor_adam_avx2(p + s, g + s, m + s, v + s, e - s, ADAM_B1, ADAM_B2, lr_t, eps_t, decay);
        return;
    }
#endif
    for (int64_t i = s; i < e; i++) {
        m[i] = ADAM_B1 * m[i] + (1.0f - ADAM_B1) * g[i];
        v[i] = ADAM_B2 * v[i] + (1.0f - ADAM_B2) * g[i] * g[i];
        p[i] -= lr_t * m[i] / (sqrtf(v[i]) + eps_t) + decay * p[i];
    }
}

static void step_task(void *arg, int ith, int nth) {
    struct step *st = arg;
    struct net *nt = st->nt;
    const int64_t dim = nt->dim, r = nt->r, no = nt->no, B = st->B;
    int64_t s, e;
    switch (st->phase) {
    case PH_FWD: /* Z = relu(X W1T + b1) */
        split(B, ith, nth, 4, &s, &e);
        for (int64_t b = s; st->perm && b < e; b++) {
            memcpy(nt->xb + b * dim, st->x + st->perm[st->b0 + b] * dim, (size_t)dim * sizeof(float));
            memcpy(nt->yb + b * no, st->y + st->perm[st->b0 + b] * no, (size_t)no);
        }
        gemm(s, e, r, dim, st->xa, dim, nt->w1t, r, nt->z, r, 0);
        for (int64_t b = s; b < e; b++) {
            float *zb = nt->z + b * r;
            for (int64_t k = 0; k < r; k++) {
                float h = zb[k] + nt->b1[k];
                zb[k] = h > 0.0f ? h : 0.0f;
            }
        }
        break;
    case PH_OUT: /* L = Z W2T + b2, then (training) G = dloss/dL in place */
        split(B, ith, nth, 4, &s, &e);
        gemm(s, e, no, r, nt->z, r, nt->w2t, no, nt->l, no, 0);
        for (int64_t b = s; b < e; b++) {
            float *lb = nt->l + b * no;
            vec_axpy_f32(lb, 1.0f, nt->b2, (int)no);
            if (st->want_loss)
                nt->rowloss[b] = bce_loss(lb, st->ya + b * no, no, st->pos_w);
            if (st->want_grad)
                bce_grad(lb, st->ya + b * no, lb, no, st->pos_w, st->scale);
        }
        break;
    case PH_BWD1: /* gW2T = Z^T G, gb2 = sum_b G, dZ = (G W2) * (Z > 0) */
        split(r, ith, nth, 4, &s, &e);
        transpose_rows(nt->zt, B, nt->z, r, s, e, B);
        gemm(s, e, no, B, nt->zt, B, nt->l, no, nt->gw2t, no, 0);
        split(no, ith, nth, 8, &s, &e);
        memset(nt->gb2 + s, 0, (size_t)(e - s) * sizeof(float));
        for (int64_t b = 0; b < B; b++) vec_axpy_f32(nt->gb2 + s, 1.0f, nt->l + b * no + s, (int)(e - s));
        split(B, ith, nth, 4, &s, &e);
        gemm(s, e, r, no, nt->l, no, nt->w2, r, nt->dz, r, 0);
        for (int64_t i = s * r; i < e * r; i++)
            if (!(nt->z[i] > 0.0f))
                nt->dz[i] = 0.0f;
        break;
    case PH_BWD2: /* gW1 = dZ^T X, gb1 = sum_b dZ */
        split(r, ith, nth, 4, &s, &e);
        transpose_rows(nt->dzt, B, nt->dz, r, s, e, B);
        gemm(s, e, dim, B, nt->dzt, B, st->xa, dim, nt->gw1, dim, 0);
        for (int64_t k = s; k < e; k++) {
            float acc = 0.0f;
            for (int64_t b = 0; b < B; b++) acc += nt->dzt[k * B + b];
            nt->gb1[k] = acc;
        }
        break;
    case PH_ADAM: { /* decoupled decay on W1 and W2T only */
        const int64_t seg[5] = {0, r * dim, r * dim + r, r * dim + r + r * no, nt->npar};
        split(nt->npar, ith, nth, 16, &s, &e);
        for (int i = 0; i < 4; i++) {
            int64_t a = seg[i] > s ? seg[i] : s, z = seg[i + 1] < e ? seg[i + 1] : e;
            if (a < z)
                adam_range(nt->par, nt->grad, nt->m, nt->v, a, z, st->lr_t, st->eps_t, i % 2 == 0 ? st->lr_wd : 0.0f);
        }
        break;
    }
    case PH_SYNC:
        net_sync(nt, ith, nth);
        break;
    }
}

/* Forward (and with want_grad, backward) of B samples at st->xa, st->ya. */
static void net_run(struct step *st, struct tpool *tp) {
    st->phase = PH_FWD;
    tpool_run(tp, step_task, st);
    st->phase = PH_OUT;
    tpool_run(tp, step_task, st);
    if (!st->want_grad)
        return;
    st->phase = PH_BWD1;
    tpool_run(tp, step_task, st);
    st->phase = PH_BWD2;
    tpool_run(tp, step_task, st);
}

/* Logits of x[i0 .. i0 + B) into nt->l (B <= nt->cap). */
static void net_logits(struct net *nt, const float *x, int64_t i0, int64_t B, struct tpool *tp) {
    struct step st = {.nt = nt, .xa = x + i0 * nt->dim, .B = B};
    net_run(&st, tp);
}

/* ---- cutoff -------------------------------------------------------------- */

/* Rearranges a so that a[k] is the k-th smallest and a[0..k) <= a[k]
 * (Hoare partitioning around a median of three; no NaN in a). */
static float select_kth(float *a, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (hi > lo) {
        float x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi];
        float pv = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pv) i++;
            while (a[j] > pv) j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j], a[j] = t;
                i++, j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break; /* a[j+1 .. i-1] all equal the pivot */
    }
    return a[k];
}

/* The cutoff that keeps fraction target of the positive pairs of (x, y) above
 * it: halfway between the smallest logit it must keep and the largest
 * positive one it may drop (a margin for unseen tokens). */
static int choose_cutoff(struct net *nt, const float *x, const uint8_t *y, int64_t n, float target, struct tpool *tp,
                         float *cutoff, char *err, size_t errlen) {
    const int64_t no = nt->no;
    int64_t P = 0;
    for (int64_t i = 0; i < n * no; i++) P += y[i] != 0;
    if (P == 0) { /* nothing fires: predict nothing */
        *cutoff = FLT_MAX;
        return 0;
    }
    float *pos = malloc((size_t)P * sizeof(float));
    if (!pos) {
        snprintf(err, errlen, "predictor_train: out of memory for %lld positive logits", (long long)P);
        return -1;
    }
    int64_t k = 0;
    for (int64_t i0 = 0; i0 < n; i0 += nt->cap) {
        int64_t B = n - i0 < nt->cap ? n - i0 : nt->cap;
        net_logits(nt, x, i0, B, tp);
        for (int64_t i = 0; i < B * no; i++) {
            if (!isfinite(nt->l[i])) {
                free(pos);
                snprintf(err, errlen, "predictor_train: non-finite logit for sample %lld neuron %lld (training "
                         "diverged: lower lr or check the inputs)", (long long)(i0 + i / no), (long long)(i % no));
                return -1;
            }
            if (y[i0 * no + i])
                pos[k++] = nt->l[i];
        }
    }
    int64_t need = (int64_t)ceil((double)target * (double)P);
    if (need > P)
        need = P;
    if (need < 1)
        need = 1;
    int64_t idx = P - need;
    float hi = select_kth(pos, P, idx), lo = hi - 1.0f;
    if (idx > 0) {
        lo = pos[0];
        for (int64_t i = 1; i < idx; i++) lo = pos[i] > lo ? pos[i] : lo;
    }
    free(pos);
    float c = lo + 0.5f * (hi - lo);
    *cutoff = c < hi ? c : nextafterf(hi, -INFINITY);
    return 0;
}

/* ---- training -------------------------------------------------------------- */

void predictor_train_opts_default(struct predictor_train_opts *o) {
    o->epochs = 10;
    o->batch = 64;
    o->lr = 1e-2f;
    o->weight_decay = 1e-2f;
    o->pos_weight = 2.0f;
    o->target_recall = 0.95f;
    o->data_init = 1;
    o->calib_frac = 0.0f;
    o->seed = 1;
}

static int check_data(const char *who, const struct predictor *p, const float *x, const uint8_t *y, int64_t n,
                      char *err, size_t errlen) {
    if (check_model(who, p, err, errlen) != 0)
        return -1;
    if (n < 1) {
        snprintf(err, errlen, "%s: no samples (n = %lld)", who, (long long)n);
        return -1;
    }
    if (n > MAX_SIZE) {
        snprintf(err, errlen, "%s: %lld samples is more than 2^30", who, (long long)n);
        return -1;
    }
    if (!x || !y) {
        snprintf(err, errlen, "%s: %s is NULL", who, !x ? "x" : "y");
        return -1;
    }
    return 0;
}

static void shuffle(int64_t *a, int64_t n, uint64_t *rs) { /* Fisher-Yates */
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(rng_next(rs) % (uint64_t)(i + 1)), t = a[i];
        a[i] = a[j], a[j] = t;
    }
}

int predictor_train(struct predictor *p, const float *x, const uint8_t *y, int64_t n,
                    const struct predictor_train_opts *o, struct tpool *tp, char *err, size_t errlen) {
    const char *who = "predictor_train";
    if (check_data(who, p, x, y, n, err, errlen) != 0)
        return -1;
    if (o->epochs < 1 || o->batch < 1) {
        snprintf(err, errlen, "%s: epochs %d and batch %d must be >= 1", who, o->epochs, o->batch);
        return -1;
    }
    if (!(o->lr > 0.0f) || !(o->weight_decay >= 0.0f) || !(o->pos_weight > 0.0f) || !isfinite(o->lr) ||
        !isfinite(o->pos_weight)) {
        snprintf(err, errlen, "%s: lr %g, pos_weight %g must be > 0 and weight_decay %g >= 0", who, (double)o->lr,
                 (double)o->pos_weight, (double)o->weight_decay);
        return -1;
    }
    if (!(o->target_recall > 0.0f && o->target_recall <= 1.0f)) {
        snprintf(err, errlen, "%s: target_recall %g not in (0, 1]", who, (double)o->target_recall);
        return -1;
    }
    if (!(o->calib_frac >= 0.0f && o->calib_frac <= 0.9f)) {
        snprintf(err, errlen, "%s: calib_frac %g not in [0, 0.9]", who, (double)o->calib_frac);
        return -1;
    }
    /* the last n_cal samples of a seeded shuffle calibrate the cutoff and are
     * never trained on */
    const int64_t n_cal = (int64_t)((double)o->calib_frac * (double)n), n_tr = n - n_cal;
    if (o->calib_frac > 0.0f && (n_cal < 1 || n_tr < 1)) {
        snprintf(err, errlen, "%s: calib_frac %g of %lld samples leaves an empty training or calibration set", who,
                 (double)o->calib_frac, (long long)n);
        return -1;
    }
    const int64_t dim = p->dim, no = p->n_out, B = o->batch < n_tr ? o->batch : n_tr;
    const int64_t cap = B > 256 ? B : (n < 256 ? n : 256); /* the cutoff pass runs 256 at a time */
    struct net nt;
    if (net_init(&nt, p, cap, 1, who, err, errlen) != 0)
        return -1;
    int64_t *perm = malloc((size_t)n * sizeof(int64_t));
    if (!perm) {
        net_free(&nt);
        snprintf(err, errlen, "%s: out of memory for %lld sample indices", who, (long long)n);
        return -1;
    }
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    uint64_t rs = o->seed;
    if (n_cal > 0)
        shuffle(perm, n, &rs);

    if (o->data_init) {
        /* He init assumes unit-variance inputs: scale W1 by 1 / rms(x). And
         * start every neuron at its base rate, so the first steps learn
         * structure rather than the frequencies. */
        double ss = 0.0;
        for (int64_t i = 0; i < n_tr; i++)
            for (int64_t d = 0; d < dim; d++) ss += (double)x[perm[i] * dim + d] * x[perm[i] * dim + d];
        double rms = sqrt(ss / (double)(n_tr * dim));
        if (rms > 1e-30)
            for (int64_t i = 0; i < nt.r * dim; i++) nt.w1[i] = (float)(nt.w1[i] / rms);
        for (int64_t o2 = 0; o2 < no; o2++) {
            int64_t c = 0;
            for (int64_t i = 0; i < n_tr; i++) c += y[perm[i] * no + o2] != 0;
            nt.b2[o2] = (float)log(((double)c + 0.5) / ((double)(n_tr - c) + 0.5));
        }
        net_sync(&nt, 0, 1);
    }

    const int64_t steps_per_epoch = (n_tr + B - 1) / B, T = steps_per_epoch * o->epochs;
    int64_t t = 0;
    struct step st = {.nt = &nt, .xa = nt.xb, .ya = nt.yb, .x = x, .y = y, .perm = perm, .want_grad = 1,
                      .pos_w = o->pos_weight};
    for (int ep = 0; ep < o->epochs; ep++) {
        shuffle(perm, n_tr, &rs);
        for (int64_t b0 = 0; b0 < n_tr; b0 += B) {
            const int64_t Bc = n_tr - b0 < B ? n_tr - b0 : B;
            st.b0 = b0;
            st.B = Bc;
            st.scale = 1.0f / (float)(Bc * no);
            net_run(&st, tp);
            /* Adam with bias correction folded into the step and epsilon;
             * learning rate on a cosine from lr down to lr / 10. */
            t++;
            double sched = 0.1 + 0.9 * 0.5 * (1.0 + cos(3.141592653589793 * (double)(t - 1) / (double)T));
            double c1 = 1.0 - pow(ADAM_B1, (double)t), c2 = sqrt(1.0 - pow(ADAM_B2, (double)t));
            double lr = o->lr * sched;
            st.lr_t = (float)(lr * c2 / c1);
            st.eps_t = (float)(ADAM_EPS * c2);
            st.lr_wd = (float)(lr * o->weight_decay);
            st.phase = PH_ADAM;
            tpool_run(tp, step_task, &st);
            st.phase = PH_SYNC;
            tpool_run(tp, step_task, &st);
        }
    }
    float cutoff;
    int rc;
    if (n_cal == 0) {
        rc = choose_cutoff(&nt, x, y, n, o->target_recall, tp, &cutoff, err, errlen);
    } else {
        float *xc = malloc((size_t)(n_cal * dim) * sizeof(float));
        uint8_t *yc = malloc((size_t)(n_cal * no));
        rc = -1;
        if (!xc || !yc) {
            snprintf(err, errlen, "%s: out of memory for %lld calibration samples", who, (long long)n_cal);
        } else {
            for (int64_t i = 0; i < n_cal; i++) {
                memcpy(xc + i * dim, x + perm[n_tr + i] * dim, (size_t)dim * sizeof(float));
                memcpy(yc + i * no, y + perm[n_tr + i] * no, (size_t)no);
            }
            rc = choose_cutoff(&nt, xc, yc, n_cal, o->target_recall, tp, &cutoff, err, errlen);
        }
        free(xc), free(yc);
    }
    free(perm);
    if (rc != 0) {
        net_free(&nt);
        return -1;
    }
    memcpy(p->w1, nt.w1, (size_t)(nt.r * dim) * sizeof(float));
    memcpy(p->b1, nt.b1, (size_t)nt.r * sizeof(float));
    memcpy(p->w2, nt.w2, (size_t)(no * nt.r) * sizeof(float));
    memcpy(p->b2, nt.b2, (size_t)no * sizeof(float));
    p->cutoff = cutoff;
    net_free(&nt);
    return 0;
}

/* ---- inference with the f32 model ---------------------------------------- */

int predictor_forward(const struct predictor *p, const float *x, int64_t n, float *logits, struct tpool *tp,
                      char *err, size_t errlen) {
    const char *who = "predictor_forward";
    if (check_model(who, p, err, errlen) != 0)
        return -1;
    if (n < 0 || n > MAX_SIZE || (n > 0 && (!x || !logits))) {
        snprintf(err, errlen, "%s: bad arguments (n = %lld, x %s, logits %s)", who, (long long)n, x ? "set" : "NULL",
                 logits ? "set" : "NULL");
        return -1;
    }
    if (n == 0)
        return 0;
    struct net nt;
    if (net_init(&nt, p, n < 256 ? n : 256, 0, who, err, errlen) != 0)
        return -1;
    for (int64_t i0 = 0; i0 < n; i0 += nt.cap) {
        int64_t B = n - i0 < nt.cap ? n - i0 : nt.cap;
        net_logits(&nt, x, i0, B, tp);
        memcpy(logits + i0 * nt.no, nt.l, (size_t)(B * nt.no) * sizeof(float));
    }
    net_free(&nt);
    return 0;
}

int predictor_loss_grad(const struct predictor *p, const float *x, const uint8_t *y, int64_t n, float pos_weight,
                        double *loss, struct predictor *grad, struct tpool *tp, char *err, size_t errlen) {
    const char *who = "predictor_loss_grad";
    if (check_data(who, p, x, y, n, err, errlen) != 0)
        return -1;
    if (check_model(who, grad, err, errlen) != 0)
        return -1;
    if (grad->dim != p->dim || grad->rank != p->rank || grad->n_out != p->n_out) {
        snprintf(err, errlen, "%s: grad is %lld x %lld x %lld but the model %lld x %lld x %lld (dim x rank x n_out)",
                 who, (long long)grad->dim, (long long)grad->rank, (long long)grad->n_out, (long long)p->dim,
                 (long long)p->rank, (long long)p->n_out);
        return -1;
    }
    if (!(pos_weight > 0.0f)) {
        snprintf(err, errlen, "%s: pos_weight %g must be > 0", who, (double)pos_weight);
        return -1;
    }
    struct net nt;
    if (net_init(&nt, p, n, 1, who, err, errlen) != 0) /* one batch of all n */
        return -1;
    const int64_t r = nt.r, no = nt.no, dim = nt.dim;
    struct step st = {.nt = &nt, .xa = x, .ya = y, .B = n, .want_grad = 1, .want_loss = 1,
                      .pos_w = pos_weight, .scale = 1.0f / (float)(n * no)};
    net_run(&st, tp);
    double s = 0.0;
    for (int64_t b = 0; b < n; b++) s += nt.rowloss[b];
    *loss = s / (double)(n * no);
    memcpy(grad->w1, nt.gw1, (size_t)(r * dim) * sizeof(float));
    memcpy(grad->b1, nt.gb1, (size_t)r * sizeof(float));
    memcpy(grad->b2, nt.gb2, (size_t)no * sizeof(float));
    for (int64_t o = 0; o < no; o++)
        for (int64_t k = 0; k < r; k++) grad->w2[o * r + k] = nt.gw2t[k * no + o];
    net_free(&nt);
    return 0;
}

int predictor_evaluate(const struct predictor *p, const float *x, const uint8_t *y, int64_t n,
                       struct predictor_metrics *m, struct tpool *tp, char *err, size_t errlen) {
    const char *who = "predictor_evaluate";
    memset(m, 0, sizeof *m);
    if (check_data(who, p, x, y, n, err, errlen) != 0)
        return -1;
    struct net nt;
    if (net_init(&nt, p, n < 256 ? n : 256, 0, who, err, errlen) != 0)
        return -1;
    const int64_t no = nt.no;
    for (int64_t i0 = 0; i0 < n; i0 += nt.cap) {
        int64_t B = n - i0 < nt.cap ? n - i0 : nt.cap;
        net_logits(&nt, x, i0, B, tp);
        for (int64_t i = 0; i < B * no; i++) {
            int fire = nt.l[i] > p->cutoff, lab = y[i0 * no + i] != 0;
            m->tp += fire && lab;
            m->fp += fire && !lab;
            m->fn += !fire && lab;
            m->tn += !fire && !lab;
        }
    }
    net_free(&nt);
    double pairs = (double)(n * no);
    m->recall = m->tp + m->fn ? (double)m->tp / (double)(m->tp + m->fn) : 1.0;
    m->precision = m->tp + m->fp ? (double)m->tp / (double)(m->tp + m->fp) : 1.0;
    m->predicted_frac = (double)(m->tp + m->fp) / pairs;
    m->actual_frac = (double)(m->tp + m->fn) / pairs;
    return 0;
}

/* ---- run-time form ----------------------------------------------------------- */

int predictor_rt_init(struct predictor_rt *rt, const struct predictor *p, const int32_t *ids, int64_t n, char *err,
                      size_t errlen) {
    const char *who = "predictor_rt_init";
    memset(rt, 0, sizeof *rt);
    if (check_model(who, p, err, errlen) != 0)
        return -1;
    if (p->dim % QK8_0 != 0) {
        snprintf(err, errlen, "%s: dim %lld is not a multiple of %d (W1 rows must be whole Q8_0 blocks)", who,
                 (long long)p->dim, QK8_0);
        return -1;
    }
    if (n < 0 || n > MAX_SIZE || (n > 0 && !ids)) {
        snprintf(err, errlen, "%s: bad neuron list (n = %lld, ids %s)", who, (long long)n, ids ? "set" : "NULL");
        return -1;
    }
    for (int64_t j = 0; j < n; j++)
        if (ids[j] < 0 || ids[j] >= p->n_out) {
            snprintf(err, errlen, "%s: ids[%lld] = %d is not a neuron of this layer (0..%lld)", who, (long long)j,
                     (int)ids[j], (long long)p->n_out - 1);
            return -1;
        }
    const struct quant_traits *q8 = quant_traits(HEARTH_TYPE_Q8_0);
    const size_t row1 = hearth_row_size(HEARTH_TYPE_Q8_0, p->dim), row2 = hearth_row_size(HEARTH_TYPE_Q8_0, p->rank);
    rt->w1q = malloc((size_t)p->rank * row1);
    rt->b1 = malloc((size_t)p->rank * sizeof(float));
    rt->w2q = malloc(n > 0 ? (size_t)n * row2 : 1);
    rt->b2 = malloc(n > 0 ? (size_t)n * sizeof(float) : 1);
    if (!q8 || !rt->w1q || !rt->b1 || !rt->w2q || !rt->b2) {
        predictor_rt_free(rt);
        snprintf(err, errlen, "%s: out of memory (rank %lld, %lld neurons)", who, (long long)p->rank, (long long)n);
        return -1;
    }
    rt->dim = p->dim, rt->rank = p->rank, rt->n = n, rt->cutoff = p->cutoff;
    /* the reference quantizer: the same bytes whatever the CPU */
    for (int64_t k = 0; k < p->rank; k++) q8->from_float_ref(p->w1 + k * p->dim, (char *)rt->w1q + k * row1, p->dim);
    memcpy(rt->b1, p->b1, (size_t)p->rank * sizeof(float));
    for (int64_t j = 0; j < n; j++) {
        q8->from_float_ref(p->w2 + (int64_t)ids[j] * p->rank, (char *)rt->w2q + j * row2, p->rank);
        rt->b2[j] = p->b2[ids[j]];
    }
    return 0;
}

void predictor_rt_free(struct predictor_rt *rt) {
    free(rt->w1q);
    free(rt->b1);
    free(rt->w2q);
    free(rt->b2);
    memset(rt, 0, sizeof *rt);
}

void predictor_rt_scratch_free(struct predictor_rt_scratch *s) {
    free(s->z);
    free(s->logit);
    matmul_scratch_free(&s->ms);
    s->z = s->logit = NULL;
    s->z_cap = s->logit_cap = 0;
}

int predictor_rt_eval(const struct predictor_rt *rt, const float *x, int64_t n_tok, uint8_t *mask,
                      struct predictor_rt_scratch *s, struct tpool *tp, char *err, size_t errlen) {
    const char *who = "predictor_rt_eval";
    if (!rt->w1q) {
        snprintf(err, errlen, "%s: predictor not initialised", who);
        return -1;
    }
    if (n_tok < 0 || n_tok > MAX_SIZE || (n_tok > 0 && (!x || !mask))) {
        snprintf(err, errlen, "%s: bad arguments (n_tok = %lld, x %s, mask %s)", who, (long long)n_tok,
                 x ? "set" : "NULL", mask ? "set" : "NULL");
        return -1;
    }
    if (n_tok == 0)
        return 0;
    const int64_t r = rt->rank, n = rt->n;
    const int64_t z_need = n_tok * r, logit_need = n_tok * (n > 0 ? n : 1);
    if (z_need > s->z_cap) {
        float *z = realloc(s->z, (size_t)z_need * sizeof(float));
        if (!z) {
            snprintf(err, errlen, "%s: out of memory for %lld tokens", who, (long long)n_tok);
            return -1;
        }
        s->z = z;
        s->z_cap = z_need;
    }
    if (logit_need > s->logit_cap) {
        float *l = realloc(s->logit, (size_t)logit_need * sizeof(float));
        if (!l) {
            snprintf(err, errlen, "%s: out of memory for %lld tokens", who, (long long)n_tok);
            return -1;
        }
        s->logit = l;
        s->logit_cap = logit_need;
    }
    if (matmul(tp, s->z, rt->w1q, HEARTH_TYPE_Q8_0, x, rt->dim, r, n_tok, &s->ms, err, errlen) != 0)
        return -1;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t k = 0; k < r; k++) s->z[t * r + k] = fmaxf(s->z[t * r + k] + rt->b1[k], 0.0f);
    if (n == 0)
        return 0;
    if (matmul(tp, s->logit, rt->w2q, HEARTH_TYPE_Q8_0, s->z, r, n, n_tok, &s->ms, err, errlen) != 0)
        return -1;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t j = 0; j < n; j++) {
            float l = s->logit[t * n + j] + rt->b2[j];
            s->logit[t * n + j] = l;
            mask[t * n + j] = l > rt->cutoff;
        }
    return 0;
}

size_t predictor_rt_size(int64_t dim, int64_t rank, int64_t n) {
    return (size_t)rank * (hearth_row_size(HEARTH_TYPE_Q8_0, dim) + sizeof(float)) +
           (size_t)n * (hearth_row_size(HEARTH_TYPE_Q8_0, rank) + sizeof(float));
}

size_t predictor_rt_bytes(const struct predictor_rt *rt) { return predictor_rt_size(rt->dim, rt->rank, rt->n); }
