/* test_insparse: the input-sparse products (core/insparse.h) on random
 * matrices of awkward sizes and types:
 *   1. the input-major copy: each row is W[:, i] within its format's rounding,
 *      and norm_i is ||W[:, i]||;
 *   2. the Q4_1 axpy kernel (AVX2 where present) against the scalar one, bit
 *      for bit, on random active sets;
 *   3. insparse_matmul against this file's own scalar reading of the
 *      definition, bit for bit, with 1, 2 and 3 threads and batches of 1, 3
 *      and 8 tokens, TEAL and WINA, at several thresholds; the inputs split
 *      in whole groups, as processes would hold them, add up bit for bit;
 *   4. against the dense matmul (core/matmul.h) and an exact double product
 *      of the dequantised weights, both with the same mask applied to x,
 *      within the re-quantisation's error;
 *   5. threshold 0 keeps exactly the nonzero inputs (ReLU-family models lose
 *      nothing), and bad shapes are refused;
 *   6. the forward pass's masks and calibration probes: insparse_mask zeroes
 *      exactly |x| <= threshold and counts what it keeps, a probe's
 *      threshold zeroes the asked share of what it recorded, the x^2 mass
 *      below a threshold is the histogram's;
 *   7. with --model FILE, on the real model: thresholds 0 with probes give
 *      the dense logits bit for bit, a calibrated threshold zeroes its share
 *      of layer 0's attention input on the same tokens and moves the logits.
 * Run again with HEARTH_NO_SIMD=1 (tests/insparse.cmake). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/forward.h"
#include "../core/fp16.h"
#include "../core/insparse.h"
#include "../core/matmul.h"
#include "../core/quant.h"
#include "check.h"

#define MAX_TOK 8

struct tmat {
    struct weight w;
    void *q;   /* quantised rows */
    float *wf; /* [n_out][n_in] dequantised */
};

static void tmat_make(struct tmat *t, enum hearth_type type, int64_t n_in, int64_t n_out) {
    const struct quant_traits *qt = quant_traits(type);
    const size_t rs = hearth_row_size(type, n_in);
    float *src = xmalloc((size_t)n_in * sizeof(float));
    t->q = xmalloc(rs * (size_t)n_out);
    t->wf = xmalloc((size_t)(n_in * n_out) * sizeof(float));
    for (int64_t r = 0; r < n_out; r++) {
        /* a few columns much larger than the rest: WINA's norms then differ */
        for (int64_t i = 0; i < n_in; i++) src[i] = rnd_normal() * (i % 7 == 0 ? 3.0f : 1.0f);
        if (qt->from_float_ref)
            qt->from_float_ref(src, (char *)t->q + (size_t)r * rs, n_in);
        else
            memcpy((char *)t->q + (size_t)r * rs, src, rs); /* F32 */
        qt->to_float((char *)t->q + (size_t)r * rs, t->wf + r * n_in, n_in);
    }
    free(src);
    memset(&t->w, 0, sizeof t->w);
    t->w.data = t->q;
    t->w.type = type;
    t->w.n_in = n_in;
    t->w.n_out = n_out;
}

static void tmat_free(struct tmat *t) {
    free(t->q);
    free(t->wf);
}

/* x [n_tok, n]: normal, a fifth of the entries exactly zero */
static float *random_x(int n_tok, int64_t n) {
    float *x = xmalloc((size_t)(n_tok * n) * sizeof(float));
    for (int64_t i = 0; i < n_tok * n; i++) x[i] = rnd_unit() < 0.2 ? 0.0f : rnd_normal();
    return x;
}

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* the q-quantile of the scores over all tokens */
static float score_quantile(const float *x, int64_t count, int64_t n_in, const float *norm, double q) {
    float *s = xmalloc((size_t)count * sizeof(float));
    for (int64_t k = 0; k < count; k++) s[k] = fabsf(x[k]) * (norm ? norm[k % n_in] : 1.0f);
    qsort(s, (size_t)count, sizeof(float), cmp_float);
    const float v = s[(int64_t)(q * (double)(count - 1))];
    free(s);
    return v;
}

static int is_active(float xi, float normi, float thr, const float *norm) {
    const float a = norm ? fabsf(xi) * normi : fabsf(xi);
    return thr < 0.0f || a > thr;
}

/* The definition of insparse.h, read independently: acc[t, :] for one token. */
static void ref_product(const struct insparse_mat *im, const float *x, float thr, const float *norm, int64_t *acc) {
    const int64_t nb = im->n_out / 32;
    float *y = xmalloc((size_t)im->n_out * sizeof(float));
    for (int64_t g0 = 0; g0 < im->n_in; g0 += INSPARSE_GROUP) {
        const int64_t g1 = g0 + INSPARSE_GROUP < im->n_in ? g0 + INSPARSE_GROUP : im->n_in;
        int any = 0;
        for (int64_t r = 0; r < im->n_out; r++) y[r] = 0.0f;
        for (int64_t i = g0; i < g1; i++) {
            if (!is_active(x[i], im->norm[i], thr, norm)) continue;
            any = 1;
            for (int64_t b = 0; b < nb; b++) {
                if (im->fmt == INSPARSE_Q8_0) {
                    const block_q8_0 *blk = (const block_q8_0 *)im->rows + i * nb + b;
                    const float s = x[i] * fp16_to_f32(blk->d);
                    for (int j = 0; j < 32; j++) y[32 * b + j] = fmaf(s, (float)blk->qs[j], y[32 * b + j]);
                } else {
                    const block_q4_1 *blk = (const block_q4_1 *)im->rows + i * nb + b;
                    const float s = x[i] * fp16_to_f32(blk->d), o = x[i] * fp16_to_f32(blk->m);
                    for (int j = 0; j < 32; j++) {
                        const int q = j < 16 ? blk->qs[j] & 15 : blk->qs[j - 16] >> 4;
                        y[32 * b + j] = y[32 * b + j] + fmaf(s, (float)q, o);
                    }
                }
            }
        }
        if (any) ffn_acc_add_fixed(acc, y, (size_t)im->n_out);
    }
    free(y);
}

/* 1. the copy; fills deq [n_in][n_out] (the copy dequantised) and tolb
 * [n_in][n_out / 32] (each block's allowed rounding) */
static void check_build(const struct tmat *t, const struct insparse_mat *im, const char *name, float *deq,
                        float *tolb) {
    const int64_t n_in = t->w.n_in, n_out = t->w.n_out;
    const struct quant_traits *qt = quant_traits(im->fmt == INSPARSE_Q8_0 ? HEARTH_TYPE_Q8_0 : HEARTH_TYPE_Q4_1);
    float *row = xmalloc((size_t)n_out * sizeof(float));
    int bad = 0, bad_norm = 0;
    for (int64_t i = 0; i < n_in; i++) {
        qt->to_float((const char *)im->rows + (size_t)i * im->row_bytes, row, n_out);
        memcpy(deq + i * n_out, row, (size_t)n_out * sizeof(float));
        double ss = 0;
        for (int64_t b = 0; b < n_out / 32; b++) {
            float lo = INFINITY, hi = -INFINITY;
            for (int j = 0; j < 32; j++) {
                const float v = t->wf[(32 * b + j) * n_in + i];
                lo = fminf(lo, v);
                hi = fmaxf(hi, v);
            }
            /* half a step, plus the fp16 rounding of the scale and min */
            const float amax = fmaxf(fabsf(lo), fabsf(hi));
            const float tol = im->fmt == INSPARSE_Q8_0 ? amax / 127.0f * 0.5f + amax * 2e-3f
                                                       : (hi - lo) / 15.0f * 0.5f + (hi - lo) * 4e-3f + 1e-6f;
            tolb[i * (n_out / 32) + b] = tol;
            for (int j = 0; j < 32; j++) {
                const float v = t->wf[(32 * b + j) * n_in + i];
                if (fabsf(row[32 * b + j] - v) > tol) bad++;
                ss += (double)v * v;
            }
        }
        if (fabs(im->norm[i] - sqrt(ss)) > 1e-5 * sqrt(ss) + 1e-6) bad_norm++;
    }
    CHECK(bad == 0, "%s: %d weights of the input-major copy are off by more than the rounding", name, bad);
    CHECK(bad_norm == 0, "%s: %d column norms wrong", name, bad_norm);
    CHECK(im->row_bytes == (size_t)(n_out / 32) * qt->size, "%s: row bytes %zu", name, im->row_bytes);
    free(row);
}

/* 2. the Q4_1 kernel against its reference */
static void check_axpy_q4_1(const struct insparse_mat *im, const char *name) {
    if (im->fmt != INSPARSE_Q4_1) return;
    const int64_t nb = im->n_out / 32;
    int32_t *idx = xmalloc((size_t)im->n_in * sizeof(int32_t));
    float *h = xmalloc((size_t)im->n_in * sizeof(float));
    float *y0 = xmalloc((size_t)im->n_out * sizeof(float)), *y1 = xmalloc((size_t)im->n_out * sizeof(float));
    for (int rep = 0; rep < 20; rep++) {
        int64_t cnt = 0;
        const double keep = rnd_unit();
        for (int64_t i = 0; i < im->n_in; i++)
            if (rnd_unit() < keep) {
                idx[cnt] = (int32_t)i;
                h[cnt++] = rnd_normal() * (rep % 3 == 0 ? 100.0f : 1.0f);
            }
        const int64_t b0 = rnd_range(0, nb - 1), b1 = rnd_range(b0 + 1, nb);
        memset(y0, 0, (size_t)im->n_out * sizeof(float));
        memset(y1, 0, (size_t)im->n_out * sizeof(float));
        insparse_axpy_q4_1_ref(y0, im->rows, nb, idx, h, cnt, b0, b1);
        insparse_axpy_q4_1(y1, im->rows, nb, idx, h, cnt, b0, b1);
        CHECK(memcmp(y0, y1, (size_t)im->n_out * sizeof(float)) == 0,
              "%s: axpy_q4_1 differs from its reference (%lld actives, blocks [%lld, %lld))", name, (long long)cnt,
              (long long)b0, (long long)b1);
    }
    free(idx);
    free(h);
    free(y0);
    free(y1);
}

static void run_case(const char *name, enum hearth_type type, int64_t n_in, int64_t n_out, enum insparse_fmt fmt,
                     struct tpool **pools) {
    char err[256];
    struct tmat t;
    tmat_make(&t, type, n_in, n_out);
    struct insparse_mat im;
    if (insparse_build(&im, &t.w, fmt, err, sizeof err)) {
        CHECK(0, "%s: insparse_build: %s", name, err);
        tmat_free(&t);
        return;
    }
    float *deq = xmalloc((size_t)(n_in * n_out) * sizeof(float));
    float *tolb = xmalloc((size_t)(n_in * (n_out / 32)) * sizeof(float));
    check_build(&t, &im, name, deq, tolb);
    check_axpy_q4_1(&im, name);

    struct insparse_scratch ss;
    if (insparse_scratch_create(&ss, n_in, n_out, MAX_TOK, err, sizeof err)) {
        CHECK(0, "%s: scratch: %s", name, err);
        insparse_free(&im);
        tmat_free(&t);
        return;
    }
    const int n_tok = 2 * MAX_TOK + 3; /* run in batches of 1, 3 and 8 */
    float *x = random_x(n_tok, n_in);
    int64_t *want = xmalloc((size_t)(n_tok * n_out) * sizeof(int64_t));
    int64_t *got = xmalloc((size_t)(n_tok * n_out) * sizeof(int64_t));
    float *xm = xmalloc((size_t)(n_tok * n_in) * sizeof(float));
    float *yd = xmalloc((size_t)(n_tok * n_out) * sizeof(float));
    struct matmul_scratch ms = MATMUL_SCRATCH_INIT;
    const double quantiles[] = {-1.0, 0.0, 0.5, 0.8};
    for (int wina = 0; wina < 2; wina++) {
        const float *norm = wina ? im.norm : NULL;
        for (size_t qi = 0; qi < sizeof quantiles / sizeof quantiles[0]; qi++) {
            const float thr = quantiles[qi] < 0 ? -1.0f
                              : quantiles[qi] == 0 ? 0.0f
                                                   : score_quantile(x, n_tok * n_in, n_in, norm, quantiles[qi]);
            memset(want, 0, (size_t)(n_tok * n_out) * sizeof(int64_t));
            for (int tk = 0; tk < n_tok; tk++) ref_product(&im, x + tk * n_in, thr, norm, want + tk * n_out);

            /* 3. bit for bit, every thread count and batch size */
            int64_t active = 0;
            for (int p = 0; p < 3; p++) {
                const int batches[] = {1, 3, 8};
                for (int bi = 0; bi < 3; bi++) {
                    memset(got, 0, (size_t)(n_tok * n_out) * sizeof(int64_t));
                    struct insparse_stats st = {0, 0};
                    for (int t0 = 0; t0 < n_tok; t0 += batches[bi]) {
                        const int nt = n_tok - t0 < batches[bi] ? n_tok - t0 : batches[bi];
                        if (insparse_matmul(&im, x + t0 * n_in, nt, thr, norm, got + t0 * n_out, &st, &ss, pools[p],
                                            err, sizeof err))
                            CHECK(0, "%s: insparse_matmul: %s", name, err);
                    }
                    CHECK(memcmp(got, want, (size_t)(n_tok * n_out) * sizeof(int64_t)) == 0,
                          "%s %s thr q%.1f: %d threads, batch %d differs from the definition", name,
                          wina ? "wina" : "teal", quantiles[qi], p + 1, batches[bi]);
                    CHECK(st.inputs == (int64_t)n_tok * n_in, "%s: stats inputs %lld", name, (long long)st.inputs);
                    active = st.active;
                }
            }

            /* 4. the same mask on x, dense */
            int64_t want_active = 0, nonzero = 0;
            for (int64_t k = 0; k < n_tok * n_in; k++) {
                const int on = is_active(x[k], im.norm[k % n_in], thr, norm);
                xm[k] = on ? x[k] : 0.0f;
                want_active += on;
                nonzero += x[k] != 0.0f;
            }
            CHECK(active == want_active, "%s: %lld actives counted, %lld by the mask", name, (long long)active,
                  (long long)want_active);
            if (qi == 1) /* 5. threshold 0: exactly the nonzero inputs */
                CHECK(active == nonzero, "%s: threshold 0 keeps %lld of %lld nonzero inputs", name,
                      (long long)active, (long long)nonzero);
            if (matmul(pools[1], yd, t.q, type, xm, n_in, n_out, n_tok, &ms, err, sizeof err))
                CHECK(0, "%s: matmul: %s", name, err);
            /* the copy's product, exactly: only float rounding apart; the
             * dense product: apart by the copy's rounding of each active
             * weight (tolb) and by its own 8-bit rounding of x */
            int bad_exact = 0, bad_dense = 0;
            double worst = 0;
            for (int tk = 0; tk < n_tok; tk++)
                for (int64_t r = 0; r < n_out; r++) {
                    double exact = 0, mag = 0, mag_w = 0, round = 0;
                    for (int64_t i = 0; i < n_in; i++) {
                        const double xi = xm[tk * n_in + i];
                        exact += (double)deq[i * n_out + r] * xi;
                        mag += fabs((double)deq[i * n_out + r] * xi);
                        mag_w += fabs((double)t.wf[r * n_in + i] * xi);
                        round += fabs(xi) * tolb[i * (n_out / 32) + r / 32];
                    }
                    const double v = (double)got[tk * n_out + r] * 0x1p-32;
                    const double e = fabs(v - exact) / (mag + 1e-9);
                    if (e > worst) worst = e;
                    if (fabs(v - exact) > 1e-5 * mag + 1e-6) bad_exact++;
                    if (fabs(v - yd[tk * n_out + r]) > round + 0.02 * mag_w + 1e-5) bad_dense++;
                }
            CHECK(bad_exact == 0, "%s %s q%.1f: %d outputs off the exact masked product (worst %.4f of sum |w x|)",
                  name, wina ? "wina" : "teal", quantiles[qi], bad_exact, worst);
            CHECK(bad_dense == 0, "%s %s q%.1f: %d outputs off the dense matmul with the same mask", name,
                  wina ? "wina" : "teal", quantiles[qi], bad_dense);
        }
    }
    /* 3b. a split of the inputs in whole groups (as processes would hold
     * them) adds up to the whole product bit for bit: each part zeroes the
     * inputs it does not own, which a threshold >= 0 skips */
    if (n_in > INSPARSE_GROUP) {
        float *xp = xmalloc((size_t)(n_tok * n_in) * sizeof(float));
        const float thr = score_quantile(x, n_tok * n_in, n_in, NULL, 0.4);
        for (int part = 0; part < 3; part++) {
            memset(want, 0, (size_t)(n_tok * n_out) * sizeof(int64_t));
            for (int tk = 0; tk < n_tok; tk++) ref_product(&im, x + tk * n_in, thr, NULL, want + tk * n_out);
            memset(got, 0, (size_t)(n_tok * n_out) * sizeof(int64_t));
            /* parts: inputs [0, 256) and [256, n_in), added in either order */
            for (int k = 0; k < 2; k++) {
                const int own = part == 1 ? 1 - k : k;
                for (int64_t e = 0; e < n_tok * n_in; e++)
                    xp[e] = ((e % n_in) < INSPARSE_GROUP) == (own == 0) ? x[e] : 0.0f;
                for (int t0 = 0; t0 < n_tok; t0 += 3) {
                    const int nt = n_tok - t0 < 3 ? n_tok - t0 : 3;
                    if (insparse_matmul(&im, xp + t0 * n_in, nt, part == 2 ? 0.0f : thr, NULL, got + t0 * n_out,
                                        NULL, &ss, pools[k + 1], err, sizeof err))
                        CHECK(0, "%s: insparse_matmul: %s", name, err);
                }
            }
            if (part == 2) { /* threshold 0: the whole product at 0 */
                memset(want, 0, (size_t)(n_tok * n_out) * sizeof(int64_t));
                for (int tk = 0; tk < n_tok; tk++) ref_product(&im, x + tk * n_in, 0.0f, NULL, want + tk * n_out);
            }
            CHECK(memcmp(got, want, (size_t)(n_tok * n_out) * sizeof(int64_t)) == 0,
                  "%s: the inputs split in whole groups (%s) do not add up to the whole product", name,
                  part == 0 ? "in order" : part == 1 ? "reversed" : "threshold 0");
        }
        free(xp);
    }
    /* 5. threshold 0 and the dense -1 give the same bits when the skipped
     * inputs are exact zeros (a zero input adds +0) */
    memset(want, 0, (size_t)(n_tok * n_out) * sizeof(int64_t));
    memset(got, 0, (size_t)(n_tok * n_out) * sizeof(int64_t));
    for (int t0 = 0; t0 < n_tok; t0 += MAX_TOK) {
        const int nt = n_tok - t0 < MAX_TOK ? n_tok - t0 : MAX_TOK;
        if (insparse_matmul(&im, x + t0 * n_in, nt, -1.0f, NULL, want + t0 * n_out, NULL, &ss, pools[2], err,
                            sizeof err) ||
            insparse_matmul(&im, x + t0 * n_in, nt, 0.0f, NULL, got + t0 * n_out, NULL, &ss, pools[2], err,
                            sizeof err))
            CHECK(0, "%s: insparse_matmul: %s", name, err);
    }
    CHECK(memcmp(got, want, (size_t)(n_tok * n_out) * sizeof(int64_t)) == 0,
          "%s: threshold 0 differs from the dense product over the same rows", name);
    CHECK(insparse_matmul(&im, x, MAX_TOK + 1, 0.0f, NULL, got, NULL, &ss, pools[0], err, sizeof err) < 0,
          "%s: a batch larger than the scratch was accepted", name);
    printf("  %-28s %-5s %5lld B per input row (dense %zu B per output row)\n", name, insparse_fmt_name(fmt),
           (long long)im.row_bytes, hearth_row_size(type, n_in));
    matmul_scratch_free(&ms);
    free(x);
    free(xm);
    free(yd);
    free(want);
    free(got);
    free(deq);
    free(tolb);
    insparse_scratch_free(&ss);
    insparse_free(&im);
    tmat_free(&t);
}

static void check_refusals(void) {
    char err[256] = "";
    struct tmat t;
    tmat_make(&t, HEARTH_TYPE_Q8_0, 64, 40); /* 40 outputs: not whole blocks */
    struct insparse_mat im;
    CHECK(insparse_build(&im, &t.w, INSPARSE_Q8_0, err, sizeof err) < 0 && strstr(err, "multiple of 32"),
          "a matrix of 40 outputs was accepted (%s)", err);
    tmat_free(&t);
    tmat_make(&t, HEARTH_TYPE_Q4_1, 64, 64);
    CHECK(insparse_build(&im, &t.w, (enum insparse_fmt)7, err, sizeof err) < 0, "an unknown format was accepted");
    tmat_free(&t);
}

/* 6. masks and probes */
static void check_probe(void) {
    struct insparse_layer L;
    memset(&L, 0, sizeof L);
    struct insparse_probe *p = xmalloc(sizeof *p);
    insparse_probe_reset(p);
    L.probe = p;
    const int64_t n = 20000;
    float *x = xmalloc((size_t)n * sizeof(float)), *y = xmalloc((size_t)n * sizeof(float));
    double ss = 0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = i % 10 == 0 ? 0.0f : rnd_normal() * (i % 3 == 0 ? 10.0f : 1.0f);
        ss += (double)x[i] * x[i];
    }
    memcpy(y, x, (size_t)n * sizeof(float));
    insparse_mask(&L, INSPARSE_DOWN, y, n, 0, n); /* threshold 0: records, changes nothing */
    CHECK(memcmp(x, y, (size_t)n * sizeof(float)) == 0, "threshold 0 changed the input");
    CHECK(p->seen[INSPARSE_DOWN] == (uint64_t)n && p->seen[INSPARSE_QKV] == 0, "probe counts %llu",
          (unsigned long long)p->seen[INSPARSE_DOWN]);
    CHECK(p->kept[INSPARSE_DOWN] == (uint64_t)(n - n / 10), "threshold 0 kept %llu of %lld nonzero",
          (unsigned long long)p->kept[INSPARSE_DOWN], (long long)(n - n / 10));
    const double sps[] = {0.15, 0.3, 0.5, 0.77};
    for (size_t k = 0; k < sizeof sps / sizeof sps[0]; k++) {
        const float t = insparse_probe_threshold(p, INSPARSE_DOWN, sps[k]);
        int64_t below = 0;
        double ss_below = 0;
        for (int64_t i = 0; i < n; i++)
            if (fabsf(x[i]) <= t) {
                below++;
                ss_below += (double)x[i] * x[i];
            }
        /* at least the share, and not more than one bin (1/64 octave) above it */
        const float t_lo = t * 0.98923f; /* 2^(-1/64) */
        int64_t below_lo = 0;
        for (int64_t i = 0; i < n; i++) below_lo += fabsf(x[i]) < t_lo;
        CHECK((double)below >= sps[k] * (double)n && (double)below_lo < sps[k] * (double)n,
              "sparsity %.2f: threshold %g zeroes %lld of %lld (%lld one bin lower)", sps[k], (double)t,
              (long long)below, (long long)n, (long long)below_lo);
        const double e = insparse_probe_energy_below(p, INSPARSE_DOWN, t);
        CHECK(fabs(e - ss_below / ss) < 0.01 + 0.02 * (ss_below / ss), "sparsity %.2f: x^2 share %.4f, want %.4f",
              sps[k], e, ss_below / ss);
        L.thr[INSPARSE_DOWN] = t;
        memcpy(y, x, (size_t)n * sizeof(float));
        insparse_probe_reset(p);
        insparse_mask(&L, INSPARSE_DOWN, y, n, 0, n);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) bad += y[i] != (fabsf(x[i]) <= t ? 0.0f : x[i]);
        CHECK(bad == 0, "mask at %g: %d entries wrong", (double)t, bad);
        CHECK(p->kept[INSPARSE_DOWN] == (uint64_t)(n - below), "mask kept %llu, want %lld",
              (unsigned long long)p->kept[INSPARSE_DOWN], (long long)(n - below));
        /* put the distribution back for the next share */
        insparse_probe_reset(p);
        L.thr[INSPARSE_DOWN] = 0.0f;
        memcpy(y, x, (size_t)n * sizeof(float));
        insparse_mask(&L, INSPARSE_DOWN, y, n, 0, n);
    }
    CHECK(insparse_probe_threshold(p, INSPARSE_O, 0.5) == 0.0f, "an empty site has a threshold");
    /* WINA: rows of width 200 given in pieces that start mid-row, as the
     * down input comes; the score is |x| times the column's norm */
    const int64_t width = 200;
    float *norm = xmalloc((size_t)width * sizeof(float));
    for (int64_t i = 0; i < width; i++) norm[i] = 0.1f + 3.0f * rnd_unitf();
    L.norm[INSPARSE_O] = norm;
    L.thr[INSPARSE_O] = 1.0f;
    memcpy(y, x, (size_t)n * sizeof(float));
    insparse_probe_reset(p);
    for (int64_t at = 0; at < n;) {
        int64_t piece = rnd_range(1, 333);
        if (piece > n - at) piece = n - at;
        insparse_mask(&L, INSPARSE_O, y + at, piece, 50 + at, width); /* rows start at column 50 */
        at += piece;
    }
    int bad = 0;
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) {
        const int on = fabsf(x[i]) * norm[(50 + i) % width] > 1.0f;
        kept += on;
        bad += y[i] != (on ? x[i] : 0.0f);
    }
    CHECK(bad == 0, "wina mask: %d entries wrong", bad);
    CHECK(p->kept[INSPARSE_O] == (uint64_t)kept && p->seen[INSPARSE_O] == (uint64_t)n, "wina mask kept %llu, want %lld",
          (unsigned long long)p->kept[INSPARSE_O], (long long)kept);
    free(norm);
    free(x);
    free(y);
    free(p);
}

/* 7. on the real model */
/* q4t: the model's Q4_1 rows regrouped input-major. Its nibbles are the
 * source's; the scalar product equals the dense SIMD kernel (vec_dot on the
 * same Q8_1 input) bit for bit, over masked inputs too; the fast kernel and
 * the threaded product equal the scalar one and matmul. Under
 * HEARTH_NO_SIMD the dense kernel is quant.c's scalar one, whose fold
 * differs (one sum per block): there the two agree to float rounding. */
static int same_or_near(const float *a, const float *b, int64_t n, int exact) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (exact)
            bad += memcmp(&a[i], &b[i], sizeof a[i]) != 0;
        else
            bad += !(fabsf(a[i] - b[i]) <= 1e-4f * (1.0f + fabsf(b[i])));
    }
    return bad;
}

static int check_model(const char *path) {
    char err[256];
    struct llama_model m;
    struct llama_state s;
    struct insparse_model ins;
    if (model_load(&m, path, err, sizeof err) || state_create(&s, &m, 64, 32, 2, err, sizeof err) ||
        insparse_model_create(&ins, m.cfg.n_layers, err, sizeof err)) {
        fprintf(stderr, "test_insparse: %s\n", err);
        return 2;
    }
    s.taps = insparse_taps(&ins); /* thresholds 0, no probes: the dense model */
    const int n_tok = 32, nv = m.cfg.n_vocab, nl = m.cfg.n_layers;
    int32_t toks[32];
    for (int i = 0; i < n_tok; i++) toks[i] = (int32_t)rnd_range(0, nv - 1);
    float *dense = xmalloc((size_t)n_tok * nv * sizeof(float)), *got = xmalloc((size_t)n_tok * nv * sizeof(float));
    struct insparse_probe *pr = xmalloc((size_t)nl * sizeof *pr);
    CHECK(forward(&s, toks, n_tok, 0, dense, 1, err, sizeof err) == 0, "forward: %s", err);
    for (int l = 0; l < nl; l++) {
        insparse_probe_reset(&pr[l]);
        ins.layers[l].probe = &pr[l];
    }
    CHECK(forward(&s, toks, n_tok, 0, got, 1, err, sizeof err) == 0, "forward: %s", err);
    CHECK(memcmp(dense, got, (size_t)n_tok * nv * sizeof(float)) == 0, "probes with thresholds 0 changed the logits");
    const uint64_t seen_qkv = pr[0].seen[INSPARSE_QKV];
    CHECK(seen_qkv == (uint64_t)n_tok * (uint64_t)m.cfg.dim, "layer 0 saw %llu attention inputs",
          (unsigned long long)seen_qkv);
    CHECK(pr[nl - 1].seen[INSPARSE_DOWN] == (uint64_t)n_tok * (uint64_t)m.cfg.hidden_dim,
          "the last layer saw %llu down inputs", (unsigned long long)pr[nl - 1].seen[INSPARSE_DOWN]);
    /* WINA norms of layer 0's attention input: q, k and v together */
    {
        const struct llama_layer *L0 = &m.layers[0];
        float *norm = xmalloc((size_t)m.cfg.dim * sizeof(float)), *row = xmalloc((size_t)m.cfg.dim * sizeof(float));
        CHECK(insparse_site_norms(L0, INSPARSE_QKV, norm, err, sizeof err) == 0, "site norms: %s", err);
        const struct weight *ws[3] = {&L0->wq, &L0->wk, &L0->wv};
        const int cols[3] = {0, 17, m.cfg.dim - 1};
        for (int ci = 0; ci < 3; ci++) {
            double sq = 0;
            for (int k = 0; k < 3; k++)
                for (int64_t r = 0; r < ws[k]->n_out; r++) {
                    quant_dequantize_row((enum hearth_type)ws[k]->type,
                                         (const char *)ws[k]->data + (size_t)r * hearth_row_size(ws[k]->type, ws[k]->n_in),
                                         row, m.cfg.dim, err, sizeof err);
                    sq += (double)row[cols[ci]] * row[cols[ci]];
                }
            CHECK(fabs(norm[cols[ci]] - sqrt(sq)) <= 1e-5 * sqrt(sq), "norm of column %d: %g, want %g", cols[ci],
                  (double)norm[cols[ci]], sqrt(sq));
        }
        free(norm);
        free(row);
    }
    struct insparse_probe *calib = xmalloc((size_t)nl * sizeof *calib);
    memcpy(calib, pr, (size_t)nl * sizeof *calib);
    for (int l = 0; l < nl; l++)
        for (int site = 0; site < INSPARSE_N_SITES; site++) {
            ins.layers[l].thr[site] = insparse_probe_threshold(&calib[l], site, 0.3);
            insparse_probe_reset(&pr[l]);
        }
    CHECK(forward(&s, toks, n_tok, 0, got, 1, err, sizeof err) == 0, "forward: %s", err);
    /* layer 0's attention input is the first masked one: the same values as
     * calibrated, so at least 30% are zeroed */
    CHECK((double)pr[0].kept[INSPARSE_QKV] <= 0.7 * (double)pr[0].seen[INSPARSE_QKV],
          "layer 0 kept %llu of %llu attention inputs at sparsity 0.3", (unsigned long long)pr[0].kept[INSPARSE_QKV],
          (unsigned long long)pr[0].seen[INSPARSE_QKV]);
    double diff = 0;
    for (int64_t i = 0; i < (int64_t)n_tok * nv; i++) diff = fmax(diff, fabs((double)got[i] - dense[i]));
    CHECK(diff > 1e-3, "sparsity 0.3 left the logits as they were (max change %g)", diff);
    printf("  model: thresholds 0 bit-identical; sparsity 0.3 moves the logits by up to %.3f\n", diff);
    /* the same masks through the input-major copies of every matrix: the
     * same logits bit for bit, fewer bytes read (under HEARTH_NO_SIMD the
     * dense scalar kernel folds otherwise: near there) */
    {
        const int use[INSPARSE_N_MATS] = {1, 1, 1, 1, 1, 1, 1};
        for (int l = 0; l < nl; l++)
            CHECK(insparse_layer_build(&ins.layers[l], &m.layers[l], use, 0, m.cfg.hidden_dim, NULL, err, sizeof err) == 0,
                  "layer %d: %s", l, err);
        /* token by token (the copies serve single-row steps, decode): the
         * batch's logits, row by row */
        float *q4 = xmalloc((size_t)n_tok * nv * sizeof(float));
        ins.read_bytes = ins.dense_bytes = 0;
        for (int t = 0; t < n_tok; t++)
            CHECK(forward(&s, toks + t, 1, t, q4 + (size_t)t * nv, 0, err, sizeof err) == 0, "forward (q4t): %s",
                  err);
        if (quant_have_avx2()) {
            CHECK(same_or_near(q4, got, (int64_t)n_tok * nv, 1) == 0,
                  "the input-major copies changed the masked model's logits");
        } else { /* rounding differences flip inputs across the thresholds: the same top token, mostly */
            int same_top = 0;
            for (int t = 0; t < n_tok; t++) {
                int a = 0, b = 0;
                for (int i = 1; i < nv; i++) {
                    if (q4[(size_t)t * nv + i] > q4[(size_t)t * nv + a]) a = i;
                    if (got[(size_t)t * nv + i] > got[(size_t)t * nv + b]) b = i;
                }
                same_top += a == b;
            }
            CHECK(same_top >= n_tok * 3 / 4, "scalar kernels: the input-major copies agree on %d of %d top tokens",
                  same_top, n_tok);
        }
        const double share = ins.dense_bytes ? (double)ins.read_bytes / (double)ins.dense_bytes : 1.0;
        CHECK(ins.dense_bytes > 0 && share < 0.8, "the input-major copies read %.1f%% of their rows",
              100.0 * share);
        printf("  model: every matrix input-major: the same logits, %.1f%% of the rows read\n", 100.0 * share);
        free(q4);
    }
    free(calib);
    free(pr);
    free(dense);
    free(got);
    state_free(&s);
    insparse_model_free(&ins);
    model_free(&m);
    return 0;
}

static void check_q4t(int64_t n_in, int64_t n_out, struct tpool **pools) {
    char err[256];
    struct tmat t;
    tmat_make(&t, HEARTH_TYPE_Q4_1, n_in, n_out);
    struct insparse_q4t m;
    if (insparse_q4t_build(&m, &t.w, err, sizeof err)) {
        CHECK(0, "q4t %lldx%lld: build: %s", (long long)n_in, (long long)n_out, err);
        tmat_free(&t);
        return;
    }
    const size_t rs = hearth_row_size(HEARTH_TYPE_Q4_1, n_in);
    int bad_nib = 0;
    for (int64_t r = 0; r < n_out; r++)
        for (int64_t i = 0; i < n_in; i++) {
            const block_q4_1 *b = (const block_q4_1 *)((const char *)t.q + (size_t)r * rs) + i / 32;
            const int e = (int)(i % 32), q = e < 16 ? b->qs[e] & 15 : b->qs[e - 16] >> 4;
            bad_nib += insparse_q4t_nibble(&m, r, i) != q;
        }
    CHECK(bad_nib == 0, "q4t %lldx%lld: %d nibbles differ from the source", (long long)n_in, (long long)n_out,
          bad_nib);
    const struct quant_traits *qt = quant_traits(HEARTH_TYPE_Q4_1), *q8 = quant_traits(HEARTH_TYPE_Q8_1);
    const int64_t ng = n_in / 32, nc = n_out / 64;
    const int n_tok = 3;
    block_q8_1 *xq = xmalloc((size_t)ng * sizeof *xq);
    float *x = xmalloc((size_t)(n_tok * n_in) * sizeof(float));
    float *acc = xmalloc((size_t)n_out * sizeof(float)), *accm = xmalloc((size_t)n_out * sizeof(float));
    float *acc2 = xmalloc((size_t)n_out * sizeof(float)), *accm2 = xmalloc((size_t)n_out * sizeof(float));
    float *yd = xmalloc((size_t)(n_tok * n_out) * sizeof(float)), *ys = xmalloc((size_t)(n_tok * n_out) * sizeof(float));
    void *scratch = xmalloc(insparse_q4t_scratch_bytes(&m, n_tok));
    struct matmul_scratch ms = MATMUL_SCRATCH_INIT;
    const double dens[] = {1.0, 0.7, 0.3, 0.05, 0.0};
    for (int di = 0; di < 5; di++) {
        int64_t nonzero = 0;
        for (int64_t k = 0; k < n_tok * n_in; k++) {
            /* a masked input: some entries zero, and in places a whole block */
            const int64_t blk = (k % n_in) / 32;
            x[k] = (rnd_unit() < dens[di] && blk % 3 != 1) ? rnd_normal() : 0.0f;
        }
        /* 1. scalar against the dense kernel, token 0 */
        q8->from_float(x, xq, n_in);
        for (int64_t i = 0; i < n_in; i++) nonzero += xq[i / 32].qs[i % 32] != 0;
        const int64_t read = insparse_q4t_dot_ref(&m, xq, acc, accm, 0, nc, 0, ng);
        CHECK(read == nonzero * nc, "q4t %lldx%lld density %.2f: %lld rows read, %lld nonzero inputs x %lld chunks",
              (long long)n_in, (long long)n_out, dens[di], (long long)read, (long long)nonzero, (long long)nc);
        const int exact = quant_have_avx2();
        int bad_dense = 0, bad_fast = 0;
        for (int64_t r = 0; r < n_out; r++) {
            float want;
            qt->vec_dot(n_in, &want, (const char *)t.q + (size_t)r * rs, xq);
            const float got = acc[r] + accm[r];
            bad_dense += same_or_near(&got, &want, 1, exact);
        }
        CHECK(bad_dense == 0, "q4t %lldx%lld density %.2f: %d outputs differ from vec_dot", (long long)n_in,
              (long long)n_out, dens[di], bad_dense);
        /* 2. the fast kernel over every chunk range that splits the outputs in two */
        for (int64_t cut = 0; cut <= nc; cut++) {
            const int64_t r1 = insparse_q4t_dot(&m, xq, acc2, accm2, 0, cut, 0, ng);
            const int64_t r2 = insparse_q4t_dot(&m, xq, acc2, accm2, cut, nc, 0, ng);
            bad_fast += r1 + r2 != read;
            bad_fast += memcmp(acc, acc2, (size_t)n_out * sizeof(float)) != 0;
            bad_fast += memcmp(accm, accm2, (size_t)n_out * sizeof(float)) != 0;
        }
        CHECK(bad_fast == 0, "q4t %lldx%lld density %.2f: the fast kernel differs from the scalar one (%d)",
              (long long)n_in, (long long)n_out, dens[di], bad_fast);
        /* 3. the threaded product against matmul on the same masked input */
        if (matmul(pools[0], yd, t.q, HEARTH_TYPE_Q4_1, x, n_in, n_out, n_tok, &ms, err, sizeof err))
            CHECK(0, "q4t: matmul: %s", err);
        for (int p = 0; p < 3; p++) {
            memset(ys, 0xff, (size_t)(n_tok * n_out) * sizeof(float));
            const int64_t rd = insparse_q4t_matmul(&m, x, n_tok, ys, scratch, pools[p], err, sizeof err);
            CHECK(rd >= 0, "q4t: matmul: %s", err);
            CHECK(same_or_near(ys, yd, (int64_t)n_tok * n_out, exact) == 0,
                  "q4t %lldx%lld density %.2f, %d threads: differs from matmul", (long long)n_in, (long long)n_out,
                  dens[di], p + 1);
        }
    }
    /* 4. a shard: rows [64, n_out) and columns [32, n_in) (when there are
     * such), with each group of 64 inputs rounded to fixed point on its own
     * (the FFN's down), against vec_dot over the blocks of each group */
    if (n_out > 64 && n_in > 32) {
        struct insparse_q4t part;
        const int64_t pr0 = 64, pc0 = 32, pin = n_in - pc0, pout = n_out - pr0, group = 64;
        if (insparse_q4t_build_range(&part, &t.w, pr0, n_out, pc0, n_in, err, sizeof err)) {
            CHECK(0, "q4t range: %s", err);
        } else {
            int bad_nib2 = 0;
            for (int64_t r = 0; r < pout; r++)
                for (int64_t i = 0; i < pin; i++)
                    bad_nib2 += insparse_q4t_nibble(&part, r, i) != insparse_q4t_nibble(&m, r + pr0, i + pc0);
            CHECK(bad_nib2 == 0, "q4t range: %d nibbles differ from the whole matrix's", bad_nib2);
            const int64_t ldx = n_in, ldy = n_out + 3;
            int64_t *got = xmalloc((size_t)(n_tok * ldy) * sizeof(int64_t));
            int64_t *want = xmalloc((size_t)(n_tok * ldy) * sizeof(int64_t));
            void *ps = xmalloc(insparse_q4t_scratch_bytes(&part, n_tok));
            for (int64_t k = 0; k < n_tok * n_in; k++) x[k] = rnd_unit() < 0.5 ? rnd_normal() : 0.0f;
            memset(want, 0, (size_t)(n_tok * ldy) * sizeof(int64_t));
            for (int tk = 0; tk < n_tok; tk++) {
                q8->from_float(x + tk * ldx + pc0, xq, pin);
                for (int64_t r = 0; r < pout; r++)
                    for (int64_t g0 = 0; g0 < pin; g0 += group) {
                        const int64_t gn = g0 + group <= pin ? group : pin - g0;
                        float y;
                        qt->vec_dot(gn, &y, (const block_q4_1 *)((const char *)t.q + (size_t)(r + pr0) * rs) +
                                                (pc0 + g0) / 32, xq + g0 / 32);
                        ffn_acc_add_fixed(want + tk * ldy + r, &y, 1);
                    }
            }
            for (int p = 0; p < 3; p++) {
                for (int64_t k = 0; k < n_tok * ldy; k++) got[k] = 0;
                const int64_t rd = insparse_q4t_matmul_ex(&part, x + pc0, ldx, n_tok, NULL, got, ldy, group, ps,
                                                          pools[p], err, sizeof err);
                CHECK(rd >= 0, "q4t grouped: %s", err);
                int bad = 0;
                for (int64_t k = 0; k < n_tok * ldy; k++)
                    bad += quant_have_avx2() ? got[k] != want[k] : llabs(got[k] - want[k]) > (1ll << (FFN_FIXED_SHIFT - 12));
                CHECK(bad == 0, "q4t %lldx%lld grouped by %lld, %d threads: %d sums differ from vec_dot's",
                      (long long)pin, (long long)pout, (long long)group, p + 1, bad);
            }
            CHECK(insparse_q4t_matmul_ex(&part, x, ldx, n_tok, ys, got, ldy, group, ps, pools[0], err,
                                         sizeof err) < 0,
                  "q4t: both y and acc accepted");
            free(got);
            free(want);
            free(ps);
            insparse_q4t_free(&part);
        }
        CHECK(insparse_q4t_build_range(&part, &t.w, 32, n_out, 0, n_in, err, sizeof err) < 0,
              "q4t: rows from 32 accepted");
        CHECK(insparse_q4t_build_range(&part, &t.w, 0, n_out, 16, n_in, err, sizeof err) < 0,
              "q4t: columns from 16 accepted");
    }
    /* refusals: not Q4_1, outputs not a multiple of 64 */
    struct tmat t8;
    tmat_make(&t8, HEARTH_TYPE_Q8_0, 64, 64);
    struct insparse_q4t bad;
    CHECK(insparse_q4t_build(&bad, &t8.w, err, sizeof err) < 0 && strstr(err, "Q4_1"), "q4t: a Q8_0 weight accepted");
    tmat_free(&t8);
    struct tmat t32;
    tmat_make(&t32, HEARTH_TYPE_Q4_1, 64, 96);
    CHECK(insparse_q4t_build(&bad, &t32.w, err, sizeof err) < 0 && strstr(err, "outputs in whole 64s"),
          "q4t: 96 outputs accepted");
    tmat_free(&t32);
    matmul_scratch_free(&ms);
    free(xq);
    free(x);
    free(acc);
    free(accm);
    free(acc2);
    free(accm2);
    free(yd);
    free(ys);
    free(scratch);
    insparse_q4t_free(&m);
    tmat_free(&t);
}

int main(int argc, char **argv) {
    uint64_t seed = 0x1A5BA75E0015ull;
    const char *env = getenv("HEARTH_TEST_SEED");
    if (env && env[0]) seed = strtoull(env, NULL, 0);
    check_seed(seed);
    printf("test_insparse: seed 0x%llx, kernels %s\n", (unsigned long long)seed,
           quant_have_avx2() ? "AVX2" : "scalar");
    char err[256];
    struct tpool *pools[3];
    for (int i = 0; i < 3; i++) {
        pools[i] = tpool_create(i + 1, err, sizeof err);
        if (!pools[i]) {
            fprintf(stderr, "tpool_create: %s\n", err);
            return 2;
        }
    }
    run_case("q4_1 96x160", HEARTH_TYPE_Q4_1, 96, 160, INSPARSE_Q4_1, pools);
    run_case("q4_1 96x160", HEARTH_TYPE_Q4_1, 96, 160, INSPARSE_Q8_0, pools);
    run_case("q8_0 320x96 (short group)", HEARTH_TYPE_Q8_0, 320, 96, INSPARSE_Q4_1, pools);
    run_case("q8_0 320x96 (short group)", HEARTH_TYPE_Q8_0, 320, 96, INSPARSE_Q8_0, pools);
    run_case("q4_k 512x64", HEARTH_TYPE_Q4_K, 512, 64, INSPARSE_Q4_1, pools);
    run_case("q6_k 768x32", HEARTH_TYPE_Q6_K, 768, 32, INSPARSE_Q8_0, pools);
    run_case("f32 32x224", HEARTH_TYPE_F32, 32, 224, INSPARSE_Q4_1, pools);
    check_q4t(32, 64, pools);
    check_q4t(96, 192, pools);
    check_q4t(576, 576, pools);
    check_refusals();
    check_probe();
    for (int i = 0; i < 3; i++) tpool_destroy(pools[i]);
    if (argc == 3 && !strcmp(argv[1], "--model")) {
        FILE *f = fopen(argv[2], "rb");
        if (!f) {
            printf("SKIP: no model at %s\n", argv[2]);
            return 77;
        }
        fclose(f);
        if (check_model(argv[2]) != 0) return 2;
    }
    return check_done("test_insparse");
}
