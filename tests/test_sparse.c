/* test_sparse: the cold-neuron FFN kernels (core/sparse.h) on small random
 * layers of awkward sizes, slices at group-aligned starts, random neuron
 * permutations, random candidate masks and thresholds at several quantiles:
 *
 *   reference  against a double-precision FFN over the dequantized weights,
 *              both with the kernel's own 8-bit activations and re-quantized
 *              down (tight: every fired neuron must be right) and with the
 *              plain f32 math (loose: bounds of the quantization errors);
 *              neurons whose |h| lies within the error bound of the
 *              threshold may go either way and widen the tolerance
 *   dense      threshold < 0, no mask: ffn_partial_layer's result within the
 *              Q8_0 re-quantization of down
 *   invariance 1/2/3 threads, n_tok = 5 at once vs one at a time, one slice
 *              vs two slices split at a group boundary: bit-identical acc
 *   kernel     the AVX2 down kernel vs the scalar one: bit-identical
 *   errors     misaligned slice start, d_model not a multiple of 32, too
 *              many tokens for the scratch, ids outside the layer
 *
 * Seed: HEARTH_TEST_SEED or a fixed default; printed either way. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "fp16.h"
#include "quant.h"
#include "sparse.h"
#include "tpool.h"

#include "check.h"

/* One random layer: the quantized matrices and their dequantized floats. */
struct tlayer {
    struct llama_config c;
    struct llama_layer L;
    void *gate, *up, *down;   /* owned quantized data */
    float *gate_f, *up_f;     /* [hidden][dim] */
    float *down_f;            /* [dim][hidden] */
    int64_t dim, hidden;
};

static void make_weight(struct weight *w, void **data, float **deq, enum hearth_type type, int64_t n_out,
                        int64_t n_in, float scale) {
    const struct quant_traits *tr = quant_traits(type);
    const size_t row = hearth_row_size((uint32_t)type, n_in);
    uint8_t *q = xmalloc(row * (size_t)n_out);
    float *f = xmalloc((size_t)(n_out * n_in) * sizeof(float));
    for (int64_t r = 0; r < n_out; r++) {
        for (int64_t i = 0; i < n_in; i++) f[r * n_in + i] = rnd_normal() * scale;
        tr->from_float_ref(f + r * n_in, q + (size_t)r * row, n_in);
        tr->to_float(q + (size_t)r * row, f + r * n_in, n_in);
    }
    w->data = q;
    w->type = (uint32_t)type;
    w->n_in = n_in;
    w->n_out = n_out;
    *data = q;
    *deq = f;
}

static void tlayer_make(struct tlayer *tl, int64_t dim, int64_t hidden, int gated, enum ffn_act act,
                        enum hearth_type gt, enum hearth_type ut, enum hearth_type dt) {
    memset(tl, 0, sizeof *tl);
    tl->dim = dim;
    tl->hidden = hidden;
    tl->c.dim = (int)dim;
    tl->c.hidden_dim = (int)hidden;
    tl->c.ffn_gated = gated;
    tl->c.ffn_act = act;
    const float s = (float)(1.0 / sqrt((double)dim)) * 1.5f;
    if (gated) make_weight(&tl->L.w_gate, &tl->gate, &tl->gate_f, gt, hidden, dim, s);
    make_weight(&tl->L.w_up, &tl->up, &tl->up_f, ut, hidden, dim, s);
    make_weight(&tl->L.w_down, &tl->down, &tl->down_f, dt, dim, hidden, 0.05f);
}

static void tlayer_free(struct tlayer *tl) {
    free(tl->gate);
    free(tl->up);
    free(tl->down);
    free(tl->gate_f);
    free(tl->up_f);
    free(tl->down_f);
}

static double act_d(double g, enum ffn_act act) {
    switch (act) {
    case FFN_ACT_RELU: return g > 0 ? g : 0;
    case FFN_ACT_GELU: return 0.5 * g * (1.0 + tanh(0.7978845608 * (g + 0.044715 * g * g * g)));
    case FFN_ACT_SILU: break;
    }
    return g / (1.0 + exp(-g));
}

/* The activations one weight type's dot sees: quantized to its vec_dot_type
 * and back (tight), or x itself (plain); ex[i] bounds |x - xq| in plain mode. */
static void act_view(enum hearth_type wt, const float *x, int64_t dim, int plain, float *xv, double *ex,
                     uint8_t *xq) {
    const struct quant_traits *xt = quant_traits(quant_traits(wt)->vec_dot_type);
    if (xt->type == HEARTH_TYPE_F32) {
        memcpy(xv, x, (size_t)dim * sizeof(float));
        for (int64_t i = 0; i < dim; i++) ex[i] = 0;
        return;
    }
    xt->from_float(x, xq, dim);
    if (!plain) {
        xt->to_float(xq, xv, dim);
        for (int64_t i = 0; i < dim; i++) ex[i] = 0;
        return;
    }
    memcpy(xv, x, (size_t)dim * sizeof(float));
    for (int64_t b = 0; b < dim; b += 32) {
        double amax = 0;
        for (int i = 0; i < 32; i++) amax = fmax(amax, fabs(x[b + i]));
        for (int i = 0; i < 32; i++) ex[b + i] = amax / 254 * 1.01 + fabs(x[b + i]) * 0x1p-9;
    }
}

/* A dot's value and an error bound: float rounding, Q4_1's offset term (its
 * Q8_1 side sum s is an f16 of the unrounded scale times sum q), and in plain
 * mode the activation rounding. */
static double dot_ref(const struct weight *w, const float *wf, const float *xv, const double *ex, const uint8_t *xq,
                      int64_t r, int64_t dim, double *e) {
    double s = 0, abs_sum = 0, eb = 0;
    const float *row = wf + r * dim;
    for (int64_t i = 0; i < dim; i++) {
        s += (double)row[i] * xv[i];
        abs_sum += fabs((double)row[i] * xv[i]);
        eb += fabs(row[i]) * ex[i];
    }
    if (w->type == HEARTH_TYPE_Q4_1) {
        const block_q4_1 *blk = (const block_q4_1 *)((const uint8_t *)w->data + r * hearth_row_size(w->type, dim));
        const block_q8_1 *xb = (const block_q8_1 *)xq;
        for (int64_t b = 0; b < dim / 32; b++)
            eb += fabs(fp16_to_f32(blk[b].m) * fp16_to_f32(xb[b].s)) * 0x1p-9 +
                  fabs(fp16_to_f32(blk[b].m)) * 32 * fp16_to_f32(xb[b].d) * 0x1p-10;
    }
    *e = eb + 2e-6 * abs_sum + 1e-12;
    return s;
}

/* h of every neuron (original order) for one token, with error bounds eh,
 * and the firing score compared with the threshold: |act(gate x)| (|h|
 * ungated), with error bound es. */
static void h_ref(const struct tlayer *tl, const float *x, int plain, double *h, double *eh, double *sc,
                  double *es) {
    const int64_t dim = tl->dim;
    float *xg = xmalloc((size_t)dim * sizeof(float)), *xu = xmalloc((size_t)dim * sizeof(float));
    double *exg = xmalloc((size_t)dim * sizeof(double)), *exu = xmalloc((size_t)dim * sizeof(double));
    uint8_t *xqg = xmalloc((size_t)dim * 2), *xqu = xmalloc((size_t)dim * 2);
    if (tl->c.ffn_gated) act_view((enum hearth_type)tl->L.w_gate.type, x, dim, plain, xg, exg, xqg);
    act_view((enum hearth_type)tl->L.w_up.type, x, dim, plain, xu, exu, xqu);
    for (int64_t j = 0; j < tl->hidden; j++) {
        double eu, eg;
        const double u = dot_ref(&tl->L.w_up, tl->up_f, xu, exu, xqu, j, dim, &eu);
        if (tl->c.ffn_gated) {
            const double g = dot_ref(&tl->L.w_gate, tl->gate_f, xg, exg, xqg, j, dim, &eg);
            const double a = act_d(g, tl->c.ffn_act);
            h[j] = a * u;
            /* |act'| <= 1.13 for SiLU, GELU and ReLU */
            eh[j] = 1.2 * eg * (fabs(u) + eu) + fabs(a) * eu + 1e-6 * fabs(h[j]);
            sc[j] = fabs(a);
            es[j] = 1.2 * eg + 1e-6 * fabs(a);
        } else {
            h[j] = act_d(u, tl->c.ffn_act);
            eh[j] = 1.2 * eu + 1e-6 * fabs(h[j]);
            sc[j] = fabs(h[j]);
            es[j] = eh[j];
        }
    }
    free(xg);
    free(xu);
    free(exg);
    free(exu);
    free(xqg);
    free(xqu);
}

/* down column ids[j] as the kernel sees it (tight: its Q8_0 re-quantization)
 * or as the model has it (plain, with ed bounding the re-quantization). */
static void down_col(const struct tlayer *tl, int32_t id, int plain, double *d, double *ed) {
    const int64_t dim = tl->dim, hidden = tl->hidden;
    for (int64_t b = 0; b < dim; b += 32) {
        float col[32], back[32];
        block_q8_0 q;
        double amax = 0;
        for (int i = 0; i < 32; i++) {
            col[i] = tl->down_f[(b + i) * hidden + id];
            amax = fmax(amax, fabs(col[i]));
        }
        quant_traits(HEARTH_TYPE_Q8_0)->from_float_ref(col, &q, 32);
        quant_traits(HEARTH_TYPE_Q8_0)->to_float(&q, back, 32);
        for (int i = 0; i < 32; i++) {
            d[b + i] = plain ? col[i] : back[i];
            ed[b + i] = plain ? amax / 254 * 1.01 + fabs(col[i]) * 0x1p-9 : 0;
        }
    }
}

static double acc_value(int64_t a) { return (double)a * 0x1p-32; }

/* acc (from zero) against the reference for the slice sf of tl: every output
 * within the bound, and the fired count within [sure, sure + ambiguous]. */
static void check_reference(const struct tlayer *tl, const struct sparse_ffn *sf, const float *x, int n_tok,
                            const uint8_t *cand, const int64_t *acc, const struct sparse_stats *st, int plain,
                            const char *what) {
    const int64_t dim = tl->dim, n = sf->n;
    double *h = xmalloc((size_t)tl->hidden * sizeof(double)), *eh = xmalloc((size_t)tl->hidden * sizeof(double));
    double *sc = xmalloc((size_t)tl->hidden * sizeof(double)), *es = xmalloc((size_t)tl->hidden * sizeof(double));
    double *y = xmalloc((size_t)dim * sizeof(double)), *tol = xmalloc((size_t)dim * sizeof(double));
    double *d = xmalloc((size_t)dim * sizeof(double)), *ed = xmalloc((size_t)dim * sizeof(double));
    int64_t n_cand = 0, n_sure = 0, n_amb = 0;
    int bad = 0;
    for (int t = 0; t < n_tok; t++) {
        h_ref(tl, x + (size_t)t * dim, plain, h, eh, sc, es);
        for (int64_t i = 0; i < dim; i++) y[i] = tol[i] = 0;
        for (int64_t j = 0; j < n; j++) {
            if (cand && !cand[(size_t)t * n + j]) continue;
            n_cand++;
            const int32_t id = sf->ids[j];
            const double a = fabs(h[id]), thr = sf->threshold;
            const int sure = sc[id] - es[id] > thr, none = sc[id] + es[id] < thr;
            if (none) continue;
            down_col(tl, id, plain, d, ed);
            if (sure) {
                n_sure++;
                for (int64_t i = 0; i < dim; i++) {
                    y[i] += h[id] * d[i];
                    tol[i] += eh[id] * fabs(d[i]) + (a + eh[id]) * ed[i] + 4e-6 * fabs(h[id] * d[i]);
                }
            } else { /* may go either way */
                n_amb++;
                for (int64_t i = 0; i < dim; i++) tol[i] += (a + eh[id]) * (fabs(d[i]) + ed[i]);
            }
        }
        for (int64_t i = 0; i < dim; i++) {
            const double got = acc_value(acc[(size_t)t * dim + i]);
            if (!(fabs(got - y[i]) <= tol[i] + 1e-8)) {
                if (bad++ < 3)
                    fprintf(stderr, "  %s t=%d i=%lld: %.9g want %.9g tol %.3g\n", what, t, (long long)i, got, y[i],
                            tol[i]);
            }
        }
    }
    CHECK(bad == 0, "%s: %d outputs off the %s reference", what, bad, plain ? "plain" : "quantized");
    CHECK(st->evaluated == n_cand, "%s: evaluated %lld, candidates %lld", what, (long long)st->evaluated,
          (long long)n_cand);
    CHECK(st->fired >= n_sure && st->fired <= n_sure + n_amb, "%s: fired %lld, expected %lld..%lld", what,
          (long long)st->fired, (long long)n_sure, (long long)(n_sure + n_amb));
    free(h);
    free(eh);
    free(sc);
    free(es);
    free(y);
    free(tol);
    free(d);
    free(ed);
}

/* firing scores of the slice's candidates (tight reference), sorted: for
 * thresholds at quantiles. */
static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static float quantile_threshold(const struct tlayer *tl, const int32_t *ids, int64_t n, const float *x, int n_tok,
                                double q) {
    double *h = xmalloc((size_t)tl->hidden * sizeof(double)), *eh = xmalloc((size_t)tl->hidden * sizeof(double));
    double *sc = xmalloc((size_t)tl->hidden * sizeof(double)), *es = xmalloc((size_t)tl->hidden * sizeof(double));
    double *all = xmalloc((size_t)n_tok * (size_t)n * sizeof(double));
    for (int t = 0; t < n_tok; t++) {
        h_ref(tl, x + (size_t)t * tl->dim, 0, h, eh, sc, es);
        for (int64_t j = 0; j < n; j++) all[(size_t)t * n + j] = sc[ids[j]];
    }
    qsort(all, (size_t)n_tok * n, sizeof *all, cmp_double);
    const float thr = (float)all[(size_t)(q * (double)(n_tok * n - 1))];
    free(h);
    free(eh);
    free(sc);
    free(es);
    free(all);
    return thr;
}

static int32_t *random_perm(int64_t n) {
    int32_t *p = xmalloc((size_t)n * sizeof *p);
    for (int64_t i = 0; i < n; i++) p[i] = (int32_t)i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t k = (int64_t)(rnd64() % (uint64_t)(i + 1));
        int32_t tmp = p[i];
        p[i] = p[k];
        p[k] = tmp;
    }
    return p;
}

static uint8_t *random_mask(int n_tok, int64_t n, double frac) {
    uint8_t *m = xmalloc((size_t)n_tok * (size_t)n);
    for (size_t i = 0; i < (size_t)n_tok * (size_t)n; i++) m[i] = rnd_unit() < frac ? (uint8_t)(1 + rnd64() % 255) : 0;
    return m;
}

static int run(const struct sparse_ffn *sf, const float *x, int n_tok, const uint8_t *cand, int64_t *acc,
               struct sparse_stats *st, struct sparse_scratch *ss, struct tpool *tp, const char *what) {
    char err[256] = "";
    int rc = sparse_ffn_run(sf, x, n_tok, cand, acc, st, ss, tp, err, sizeof err);
    CHECK(rc == 0, "%s: sparse_ffn_run: %s", what, err);
    return rc;
}

struct tcase {
    const char *name;
    int64_t dim, hidden;
    int gated;
    enum ffn_act act;
    enum hearth_type gt, ut, dt;
};

#define N_TOK 5

static void check_case(const struct tcase *tc, struct tpool **pools) {
    struct tlayer tl;
    tlayer_make(&tl, tc->dim, tc->hidden, tc->gated, tc->act, tc->gt, tc->ut, tc->dt);
    const int64_t dim = tc->dim, hidden = tc->hidden;
    float *x = xmalloc((size_t)N_TOK * dim * sizeof(float));
    for (int64_t i = 0; i < N_TOK * dim; i++) x[i] = rnd_normal();
    int32_t *perm = random_perm(hidden);
    int64_t *acc = xmalloc((size_t)N_TOK * dim * sizeof(int64_t)), *acc2 = xmalloc((size_t)N_TOK * dim * sizeof(int64_t));
    struct sparse_scratch ss;
    char err[256] = "", what[160];
    if (sparse_scratch_create(&ss, dim, hidden, N_TOK, err, sizeof err) != 0) {
        CHECK(0, "%s: scratch: %s", tc->name, err);
        return;
    }

    /* 1. reference, on slices starting at several group-aligned positions */
    const int64_t n_groups = (hidden + SPARSE_GROUP - 1) / SPARSE_GROUP;
    for (int rep = 0; rep < 3; rep++) {
        const int64_t g0 = rep == 0 ? 0 : (int64_t)(rnd64() % (uint64_t)n_groups);
        const int64_t pos0 = g0 * SPARSE_GROUP;
        const int64_t n = rep == 0 ? hidden : 1 + (int64_t)(rnd64() % (uint64_t)(hidden - pos0));
        struct sparse_ffn sf;
        if (sparse_ffn_init(&sf, &tl.c, &tl.L, perm + pos0, n, pos0, -1.0f, err, sizeof err) != 0) {
            CHECK(0, "%s: init: %s", tc->name, err);
            continue;
        }
        const double qs[] = {-1, 0.5, 0.9};
        for (int qi = 0; qi < 3; qi++) {
            sf.threshold = qs[qi] < 0 ? -1.0f : quantile_threshold(&tl, sf.ids, n, x, N_TOK, qs[qi]);
            for (int masked = 0; masked < 2; masked++) {
                uint8_t *cand = masked ? random_mask(N_TOK, n, 0.6) : NULL;
                struct sparse_stats st = {0, 0};
                memset(acc, 0, (size_t)N_TOK * dim * sizeof *acc);
                struct tpool *tp = pools[(rep + qi) % 3];
                snprintf(what, sizeof what, "%s slice [%lld,+%lld) q=%.2f thr=%g mask=%d threads=%d", tc->name,
                         (long long)pos0, (long long)n, qs[qi], (double)sf.threshold, masked, tpool_size(tp));
                if (run(&sf, x, N_TOK, cand, acc, &st, &ss, tp, what) == 0) {
                    check_reference(&tl, &sf, x, N_TOK, cand, acc, &st, 0, what);
                    check_reference(&tl, &sf, x, N_TOK, cand, acc, &st, 1, what);
                }
                free(cand);
            }
        }
        sparse_ffn_free(&sf);
    }

    /* 2. all neurons firing == the dense FFN, up to down's re-quantization */
    {
        struct sparse_ffn sf;
        if (sparse_ffn_init(&sf, &tl.c, &tl.L, perm, hidden, 0, -1.0f, err, sizeof err) != 0) {
            CHECK(0, "%s: init: %s", tc->name, err);
        } else {
            struct llama_model m;
            memset(&m, 0, sizeof m);
            m.cfg = tl.c;
            struct ffn_scratch fs;
            memset(acc, 0, (size_t)N_TOK * dim * sizeof *acc);
            memset(acc2, 0, (size_t)N_TOK * dim * sizeof *acc2);
            struct sparse_stats st = {0, 0};
            if (ffn_scratch_create(&fs, &m, N_TOK, err, sizeof err) != 0 ||
                ffn_partial_layer(&tl.c, &tl.L, 0, x, N_TOK, 0, hidden, acc2, &fs, NULL, pools[1], err, sizeof err) != 0) {
                CHECK(0, "%s: dense: %s", tc->name, err);
            } else if (run(&sf, x, N_TOK, NULL, acc, &st, &ss, pools[1], tc->name) == 0) {
                /* bounds: down re-quantized to Q8_0 (sparse), h quantized to
                 * down's vec_dot_type in blocks of 32 neurons (dense) */
                double *h = xmalloc((size_t)hidden * sizeof(double)), *eh = xmalloc((size_t)hidden * sizeof(double));
                double *sc = xmalloc((size_t)hidden * sizeof(double)), *es = xmalloc((size_t)hidden * sizeof(double));
                double *d = xmalloc((size_t)dim * sizeof(double)), *ed = xmalloc((size_t)dim * sizeof(double));
                double *tol = xmalloc((size_t)dim * sizeof(double)), *ehq = xmalloc((size_t)hidden * sizeof(double));
                int bad = 0;
                const int h_quantized = quant_traits(quant_traits(tc->dt)->vec_dot_type)->type != HEARTH_TYPE_F32;
                for (int t = 0; t < N_TOK; t++) {
                    h_ref(&tl, x + (size_t)t * dim, 0, h, eh, sc, es);
                    for (int64_t b = 0; b < hidden; b += 32) {
                        double amax = 0;
                        for (int64_t j = b; j < b + 32 && j < hidden; j++) amax = fmax(amax, fabs(h[j]));
                        for (int64_t j = b; j < b + 32 && j < hidden; j++)
                            ehq[j] = h_quantized ? amax / 254 * 1.01 + fabs(h[j]) * 0x1p-9 : 0;
                    }
                    for (int64_t i = 0; i < dim; i++) tol[i] = 1e-8;
                    for (int64_t j = 0; j < hidden; j++) {
                        down_col(&tl, (int32_t)j, 1, d, ed);
                        for (int64_t i = 0; i < dim; i++)
                            tol[i] += (fabs(h[j]) + eh[j]) * ed[i] + (ehq[j] + 1e-5 * fabs(h[j])) * fabs(d[i]);
                    }
                    for (int64_t i = 0; i < dim; i++) {
                        const double got = acc_value(acc[(size_t)t * dim + i]),
                                     want = acc_value(acc2[(size_t)t * dim + i]);
                        if (!(fabs(got - want) <= tol[i]) && bad++ < 3)
                            fprintf(stderr, "  %s dense t=%d i=%lld: %.9g want %.9g tol %.3g\n", tc->name, t,
                                    (long long)i, got, want, tol[i]);
                    }
                }
                CHECK(bad == 0, "%s: %d outputs off the dense FFN", tc->name, bad);
                CHECK(st.fired == (int64_t)N_TOK * hidden && st.evaluated == st.fired,
                      "%s: threshold -1 fired %lld of %lld", tc->name, (long long)st.fired,
                      (long long)N_TOK * hidden);
                free(h);
                free(eh);
                free(sc);
                free(es);
                free(d);
                free(ed);
                free(tol);
                free(ehq);
            }
            ffn_scratch_free(&fs);
            sparse_ffn_free(&sf);
        }
    }

    /* 3. invariances, bit for bit, at the median threshold with a random mask */
    {
        struct sparse_ffn sf, sa, sb;
        const int64_t split = SPARSE_GROUP * (1 + (int64_t)(rnd64() % (uint64_t)(n_groups - 1)));
        const float thr = quantile_threshold(&tl, perm, hidden, x, N_TOK, 0.5);
        int ok = sparse_ffn_init(&sf, &tl.c, &tl.L, perm, hidden, 0, thr, err, sizeof err) == 0;
        ok = ok && sparse_ffn_init(&sa, &tl.c, &tl.L, perm, split, 0, thr, err, sizeof err) == 0;
        ok = ok && sparse_ffn_init(&sb, &tl.c, &tl.L, perm + split, hidden - split, split, thr, err, sizeof err) == 0;
        CHECK(ok, "%s: init: %s", tc->name, err);
        if (ok) {
            uint8_t *cand = random_mask(N_TOK, hidden, 0.7);
            const size_t bytes = (size_t)N_TOK * dim * sizeof(int64_t);
            struct sparse_stats st1 = {0, 0}, st = {0, 0};
            memset(acc, 0, bytes);
            run(&sf, x, N_TOK, cand, acc, &st1, &ss, pools[0], tc->name);
            for (int p = 1; p < 3; p++) {
                memset(acc2, 0, bytes);
                st.evaluated = st.fired = 0;
                run(&sf, x, N_TOK, cand, acc2, &st, &ss, pools[p], tc->name);
                CHECK(memcmp(acc, acc2, bytes) == 0 && st.fired == st1.fired && st.evaluated == st1.evaluated,
                      "%s: %d threads differ from 1", tc->name, p + 1);
            }
            memset(acc2, 0, bytes);
            for (int t = 0; t < N_TOK; t++)
                run(&sf, x + (size_t)t * dim, 1, cand + (size_t)t * hidden, acc2 + (size_t)t * dim, &st, &ss,
                    pools[t % 3], tc->name);
            CHECK(memcmp(acc, acc2, bytes) == 0, "%s: one token at a time differs from %d at once", tc->name, N_TOK);
            /* the two slices' masks are the columns of the whole one's */
            uint8_t *ca = xmalloc((size_t)N_TOK * hidden), *cb = xmalloc((size_t)N_TOK * hidden);
            for (int t = 0; t < N_TOK; t++) {
                memcpy(ca + (size_t)t * split, cand + (size_t)t * hidden, (size_t)split);
                memcpy(cb + (size_t)t * (hidden - split), cand + (size_t)t * hidden + split, (size_t)(hidden - split));
            }
            memset(acc2, 0, bytes);
            st.evaluated = st.fired = 0;
            run(&sb, x, N_TOK, cb, acc2, &st, &ss, pools[2], tc->name);
            run(&sa, x, N_TOK, ca, acc2, &st, &ss, pools[1], tc->name);
            CHECK(memcmp(acc, acc2, bytes) == 0 && st.fired == st1.fired,
                  "%s: slices [0,%lld) + [%lld,%lld) differ from [0,%lld)", tc->name, (long long)split,
                  (long long)split, (long long)hidden, (long long)hidden);
            CHECK(st1.fired > 0 && st1.fired < st1.evaluated, "%s: median threshold fired %lld of %lld", tc->name,
                  (long long)st1.fired, (long long)st1.evaluated);
            free(ca);
            free(cb);
            free(cand);
        }
        sparse_ffn_free(&sf);
        sparse_ffn_free(&sa);
        sparse_ffn_free(&sb);
    }
    printf("  %-28s ok so far (%d failures)\n", tc->name, failures);
    sparse_scratch_free(&ss);
    free(x);
    free(perm);
    free(acc);
    free(acc2);
    tlayer_free(&tl);
}

/* The dispatched down kernel (AVX2 where present) against the scalar one. */
static void check_kernel(void) {
    const int64_t row_blocks = 13, n_rows = 40;
    block_q8_0 *rows = xmalloc((size_t)(row_blocks * n_rows) * sizeof *rows);
    float f[32];
    for (int64_t r = 0; r < n_rows * row_blocks; r++) {
        const float scale = (float)exp(rnd_normal() * 2);
        for (int i = 0; i < 32; i++) f[i] = rnd_normal() * scale;
        quant_traits(HEARTH_TYPE_Q8_0)->from_float_ref(f, &rows[r], 32);
    }
    int32_t idx[33];
    float h[33];
    float *y1 = xmalloc(32 * row_blocks * sizeof(float)), *y2 = xmalloc(32 * row_blocks * sizeof(float));
    int diffs = 0;
    for (int rep = 0; rep < 50; rep++) {
        const int cnt = (int)(rnd64() % 33);
        for (int k = 0; k < cnt; k++) {
            idx[k] = (int32_t)(rnd64() % (uint64_t)n_rows);
            h[k] = rnd_normal() * (float)exp(rnd_normal());
        }
        const int64_t b0 = (int64_t)(rnd64() % (uint64_t)row_blocks);
        const int64_t b1 = b0 + (int64_t)(rnd64() % (uint64_t)(row_blocks - b0 + 1));
        for (int64_t i = 0; i < 32 * row_blocks; i++) y1[i] = y2[i] = 7.0f;
        sparse_down_q8_0_ref(y1, rows, row_blocks, idx, h, cnt, b0, b1);
        sparse_down_q8_0(y2, rows, row_blocks, idx, h, cnt, b0, b1);
        diffs += memcmp(y1, y2, 32 * row_blocks * sizeof(float)) != 0;
        /* the scalar one against a double fold: catches a broken reference */
        for (int64_t b = b0; b < b1; b++)
            for (int i = 0; i < 32; i++) {
                double want = 0, mag = 0;
                for (int k = 0; k < cnt; k++) {
                    const block_q8_0 *blk = &rows[(int64_t)idx[k] * row_blocks + b];
                    want += (double)h[k] * fp16_to_f32(blk->d) * blk->qs[i];
                    mag += fabs((double)h[k] * fp16_to_f32(blk->d) * blk->qs[i]);
                }
                CHECK(fabs(y1[b * 32 + i] - want) <= 1e-5 * mag + 1e-30, "down ref b=%lld i=%d: %g want %g",
                      (long long)b, i, (double)y1[b * 32 + i], want);
            }
        for (int64_t i = 0; i < 32 * row_blocks; i++)
            if ((i < 32 * b0 || i >= 32 * b1) && (y1[i] != 7.0f || y2[i] != 7.0f)) diffs++;
    }
    CHECK(diffs == 0, "down kernel (%s) differs from the scalar one in %d of 50 cases",
          quant_have_avx2() ? "AVX2" : "scalar", diffs);
    free(rows);
    free(y1);
    free(y2);
}

/* The dispatched fixed-point add against forward.c's: ties at half a step,
 * tiny, huge (saturating), infinite and NaN values, odd counts. */
static void check_acc_add(void) {
    enum { N = 203 };
    float y[N];
    int64_t a1[N], a2[N];
    int diffs = 0;
    for (int rep = 0; rep < 200; rep++) {
        for (int i = 0; i < N; i++) {
            const int kind = (int)(rnd64() % 8);
            if (kind == 0) y[i] = ((float)(int)(rnd64() % 2001) - 1000.5f) * 0x1p-32f; /* a tie */
            else if (kind == 1) y[i] = rnd_normal() * 0x1p-30f;
            else if (kind == 2) y[i] = rnd_normal() * 0x1p20f;                       /* beyond 2^51 */
            else if (kind == 3 && rep % 10 == 0) y[i] = rnd64() % 3 ? INFINITY : NAN;
            else if (kind == 4) y[i] = rnd_normal() * 1e9f;                           /* saturates */
            else y[i] = rnd_normal() * 3;
            a1[i] = a2[i] = (int64_t)(rnd64() >> 8) - (1ll << 55);
        }
        const size_t count = rep % 2 ? N : (size_t)(rnd64() % N);
        ffn_acc_add_fixed(a1, y, count);
        ffn_acc_add_fixed_fast(a2, y, count);
        diffs += memcmp(a1, a2, sizeof a1) != 0;
    }
    CHECK(diffs == 0, "fixed-point add (%s) differs from ffn_acc_add_fixed in %d of 200 cases",
          quant_have_avx2() ? "AVX2" : "scalar", diffs);
}

static void expect_error(int rc, const char *err, const char *needle, const char *what) {
    CHECK(rc < 0 && strstr(err, needle), "%s: rc=%d, error '%s' lacks '%s'", what, rc, err, needle);
}

static void check_errors(struct tpool *tp) {
    struct tlayer tl;
    tlayer_make(&tl, 96, 224, 1, FFN_ACT_SILU, HEARTH_TYPE_Q4_0, HEARTH_TYPE_Q4_0, HEARTH_TYPE_Q8_0);
    int32_t *perm = random_perm(224);
    struct sparse_ffn sf;
    char err[256] = "";
    expect_error(sparse_ffn_init(&sf, &tl.c, &tl.L, perm, 64, 48, 0.1f, err, sizeof err), err,
                 "slice start 48 is not a multiple of SPARSE_GROUP", "misaligned pos0");
    err[0] = 0;
    struct llama_config c80 = tl.c;
    c80.dim = 80;
    expect_error(sparse_ffn_init(&sf, &c80, &tl.L, perm, 64, 0, 0.1f, err, sizeof err), err,
                 "d_model 80 is not a positive multiple of 32", "dim 80");
    err[0] = 0;
    perm[5] = 224;
    expect_error(sparse_ffn_init(&sf, &tl.c, &tl.L, perm, 64, 0, 0.1f, err, sizeof err), err,
                 "ids[5] = 224 is outside the layer's 224 neurons", "id out of range");
    perm[5] = 0;
    err[0] = 0;
    struct llama_layer L2 = tl.L;
    L2.w_down.n_in = 192;
    expect_error(sparse_ffn_init(&sf, &tl.c, &L2, perm, 64, 0, 0.1f, err, sizeof err), err, "ffn_down is 96 x 192",
                 "down shape");
    err[0] = 0;
    struct sparse_scratch ss;
    int rc = sparse_ffn_init(&sf, &tl.c, &tl.L, perm, 100, 32, 0.1f, err, sizeof err);
    CHECK(rc == 0, "init: %s", err);
    rc = sparse_scratch_create(&ss, 96, 100, 2, err, sizeof err);
    CHECK(rc == 0, "scratch: %s", err);
    float x[3 * 96] = {0};
    int64_t acc[3 * 96] = {0};
    err[0] = 0;
    expect_error(sparse_ffn_run(&sf, x, 3, NULL, acc, NULL, &ss, tp, err, sizeof err), err,
                 "3 tokens exceed the scratch's capacity of 2", "n_tok over capacity");
    struct sparse_scratch small;
    CHECK(sparse_scratch_create(&small, 96, 99, 2, err, sizeof err) == 0, "scratch: %s", err);
    err[0] = 0;
    expect_error(sparse_ffn_run(&sf, x, 1, NULL, acc, NULL, &small, tp, err, sizeof err), err,
                 "scratch made for d_model 96 and 99 neurons cannot run a slice of d_model 96 and 100 neurons",
                 "slice over scratch");
    err[0] = 0;
    CHECK(sparse_ffn_run(&sf, x, 2, NULL, acc, NULL, &ss, tp, err, sizeof err) == 0, "a fitting run fails: %s", err);
    sparse_scratch_free(&small);
    sparse_scratch_free(&ss);
    sparse_ffn_free(&sf);
    free(perm);
    tlayer_free(&tl);
}

int main(void) {
    uint64_t seed = 0x5EED5BA75E0001ull;
    const char *env = getenv("HEARTH_TEST_SEED");
    if (env && env[0]) seed = strtoull(env, NULL, 0);
    check_seed(seed);
    printf("test_sparse: seed 0x%llx, kernels %s\n", (unsigned long long)seed, quant_have_avx2() ? "AVX2" : "scalar");
    char err[256];
    struct tpool *pools[3];
    for (int i = 0; i < 3; i++) {
        pools[i] = tpool_create(i + 1, err, sizeof err);
        if (!pools[i]) {
            fprintf(stderr, "tpool_create: %s\n", err);
            return 2;
        }
    }
    const struct tcase cases[] = {
        {"q4_1 silu 96x224", 96, 224, 1, FFN_ACT_SILU, HEARTH_TYPE_Q4_1, HEARTH_TYPE_Q4_1, HEARTH_TYPE_Q4_1},
        {"q4_0/q8_0 gelu 160x1000", 160, 1000, 1, FFN_ACT_GELU, HEARTH_TYPE_Q4_0, HEARTH_TYPE_Q8_0, HEARTH_TYPE_F16},
        {"q8_0/q4_1 relu 96x1000", 96, 1000, 1, FFN_ACT_RELU, HEARTH_TYPE_Q8_0, HEARTH_TYPE_Q4_1, HEARTH_TYPE_F32},
        {"ungated f16 relu 160x224", 160, 224, 0, FFN_ACT_RELU, HEARTH_TYPE_F32, HEARTH_TYPE_F16, HEARTH_TYPE_Q8_0},
        {"q4_k/q6_k silu 256x512", 256, 512, 1, FFN_ACT_SILU, HEARTH_TYPE_Q4_K, HEARTH_TYPE_Q5_K, HEARTH_TYPE_Q6_K},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i], pools);
    check_kernel();
    check_acc_add();
    check_errors(pools[1]);
    for (int i = 0; i < 3; i++) tpool_destroy(pools[i]);
    return check_done("test_sparse");
}
