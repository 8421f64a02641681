/* test_predictor: the activation predictors (core/predictor.h).
 *
 *   test_predictor grad     loss and gradients against a double-precision
 *                           reference with central differences; 1 and 3
 *                           threads give bit-identical gradients
 *   test_predictor learn    synthetic labels that are functions of x (signs
 *                           and magnitudes of projections onto a rank-6
 *                           subspace, always-on and never-on neurons): held-out
 *                           recall >= 0.95 with high precision; the same x
 *                           with shuffled labels must NOT reach that
 *   test_predictor cutoff   training recall >= target (and tight) for several
 *                           targets; predictor_evaluate equals a direct count
 *   test_predictor determ   same seed -> identical weights for 1/2/3 threads
 *   test_predictor rt       Q8_0 run-time form vs the f32 model; subsets and
 *                           permutations of ids; batch vs token by token;
 *                           1/2/3 threads bit-identical
 *   test_predictor rank     predictor_choose_rank's rule
 *   test_predictor errors   bad sizes and arguments give specific messages
 *   test_predictor timing   prints the training time of a full-size layer
 *                           (dim 576, n_out 1536, 3000 samples, rank 64)
 *
 * Random data from check.h's splitmix64 stream; seed HEARTH_TEST_SEED or a fixed
 * default, printed either way. */
#include "predictor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

static struct tpool *pool(int n) {
    char err[256];
    struct tpool *tp = tpool_create(n, err, sizeof err);
    if (!tp) {
        fprintf(stderr, "tpool_create(%d): %s\n", n, err);
        exit(2);
    }
    return tp;
}

static void must(int rc, const char *what, const char *err) {
    if (rc != 0) {
        fprintf(stderr, "%s failed: %s\n", what, err);
        exit(1);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- synthetic data --------------------------------------------------------- */

/* A layer's ground truth: u = P x (rank-6 latent, unit variance per
 * component), neuron o fires by its kind:
 *   o < 4: always;  4 <= o < 8: never;
 *   o even: a_o . u > c_o            (a half-space, c_o in (-1.2, 1.2))
 *   o odd:  |a_o . u| > c_o          (a slab's outside: needs the hidden layer)
 * x is N(0, 9) per component, not unit variance, so the data init matters. */
struct truth {
    int64_t dim, n_out, lat;
    float *P;   /* [lat][dim] */
    float *a;   /* [n_out][lat], unit rows */
    float *c;   /* [n_out] */
};

static void truth_make(struct truth *T, int64_t dim, int64_t n_out) {
    T->dim = dim, T->n_out = n_out, T->lat = 6;
    T->P = xmalloc((size_t)(T->lat * dim) * sizeof(float));
    T->a = xmalloc((size_t)(n_out * T->lat) * sizeof(float));
    T->c = xmalloc((size_t)n_out * sizeof(float));
    for (int64_t i = 0; i < T->lat * dim; i++) T->P[i] = rnd_normal() / 3.0f / sqrtf((float)dim);
    for (int64_t o = 0; o < n_out; o++) {
        double nn = 0;
        for (int64_t k = 0; k < T->lat; k++) {
            T->a[o * T->lat + k] = rnd_normal();
            nn += (double)T->a[o * T->lat + k] * T->a[o * T->lat + k];
        }
        for (int64_t k = 0; k < T->lat; k++) T->a[o * T->lat + k] /= (float)sqrt(nn);
        T->c[o] = o % 2 == 0 ? (float)(2.4 * rnd_unit() - 1.2) : (float)(0.2 + 1.2 * rnd_unit());
    }
}

static void truth_free(struct truth *T) {
    free(T->P), free(T->a), free(T->c);
}

static void truth_sample(const struct truth *T, int64_t n, float **xo, uint8_t **yo) {
    const int64_t dim = T->dim, no = T->n_out;
    float *x = xmalloc((size_t)(n * dim) * sizeof(float));
    uint8_t *y = xmalloc((size_t)(n * no));
    float u[16];
    for (int64_t i = 0; i < n; i++) {
        float *xi = x + i * dim;
        for (int64_t d = 0; d < dim; d++) xi[d] = 3.0f * rnd_normal();
        for (int64_t k = 0; k < T->lat; k++) {
            double s = 0;
            for (int64_t d = 0; d < dim; d++) s += (double)T->P[k * dim + d] * xi[d];
            u[k] = (float)s;
        }
        for (int64_t o = 0; o < no; o++) {
            double s = 0;
            for (int64_t k = 0; k < T->lat; k++) s += (double)T->a[o * T->lat + k] * u[k];
            int fire = o < 4 ? 1 : o < 8 ? 0 : o % 2 == 0 ? s > T->c[o] : fabs(s) > T->c[o];
            y[i * no + o] = (uint8_t)fire;
        }
    }
    *xo = x, *yo = y;
}

/* ---- grad -------------------------------------------------------------------- */

/* The loss of predictor.h in double, from double copies of the parameters. */
struct dmodel {
    int64_t dim, r, no;
    double *w1, *b1, *w2, *b2;
};

static double dloss(const struct dmodel *m, const float *x, const uint8_t *y, int64_t n, double pw) {
    double *z = xmalloc((size_t)m->r * sizeof(double)), s = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t k = 0; k < m->r; k++) {
            double h = m->b1[k];
            for (int64_t d = 0; d < m->dim; d++) h += m->w1[k * m->dim + d] * x[i * m->dim + d];
            z[k] = h > 0 ? h : 0;
        }
        for (int64_t o = 0; o < m->no; o++) {
            double l = m->b2[o];
            for (int64_t k = 0; k < m->r; k++) l += m->w2[o * m->r + k] * z[k];
            double sg = 1.0 / (1.0 + exp(-l));
            s -= y[i * m->no + o] ? pw * log(sg) : log(1.0 - sg);
        }
    }
    free(z);
    return s / (double)(n * m->no);
}

static double *dcopy(const float *f, int64_t n) {
    double *d = xmalloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) d[i] = f[i];
    return d;
}

/* Central differences on every stride-th entry of one tensor. */
static void check_tensor(const char *name, struct dmodel *m, double *t, const float *g, int64_t count, int64_t stride,
                         const float *x, const uint8_t *y, int64_t n, double pw) {
    const double eps = 1e-4;
    double worst = 0;
    int64_t checked = 0;
    for (int64_t i = 0; i < count; i += stride) {
        double keep = t[i];
        t[i] = keep + eps;
        double lp = dloss(m, x, y, n, pw);
        t[i] = keep - eps;
        double lm = dloss(m, x, y, n, pw);
        t[i] = keep;
        double fd = (lp - lm) / (2 * eps), err = fabs(fd - g[i]);
        double tol = 1e-4 * fabs(fd) + 2e-6;
        CHECK(err <= tol, "grad %s[%lld]: analytic %.8g, finite differences %.8g", name, (long long)i, (double)g[i],
              fd);
        worst = err > worst ? err : worst;
        checked++;
    }
    printf("  %s: %lld entries checked, worst |analytic - fd| %.3g\n", name, (long long)checked, worst);
}

static void test_grad(void) {
    char err[256];
    const int64_t dim = 40, r = 32, no = 7, n = 5;
    const float pw = 1.7f;
    struct predictor p, g1, g3;
    must(predictor_init(&p, dim, r, no, 11, err, sizeof err), "predictor_init", err);
    must(predictor_init(&g1, dim, r, no, 0, err, sizeof err), "predictor_init", err);
    must(predictor_init(&g3, dim, r, no, 0, err, sizeof err), "predictor_init", err);
    for (int64_t k = 0; k < r; k++) p.b1[k] = 0.1f * rnd_normal();
    for (int64_t o = 0; o < no; o++) p.b2[o] = 0.5f * rnd_normal();
    float *x = xmalloc((size_t)(n * dim) * sizeof(float));
    uint8_t *y = xmalloc((size_t)(n * no));
    for (int64_t i = 0; i < n * dim; i++) x[i] = rnd_normal();
    for (int64_t i = 0; i < n * no; i++) y[i] = rnd64() % 3 == 0;

    double loss1, loss3;
    must(predictor_loss_grad(&p, x, y, n, pw, &loss1, &g1, NULL, err, sizeof err), "predictor_loss_grad", err);
    struct tpool *tp = pool(3);
    must(predictor_loss_grad(&p, x, y, n, pw, &loss3, &g3, tp, err, sizeof err), "predictor_loss_grad", err);
    tpool_destroy(tp);

    struct dmodel m = {dim, r, no, dcopy(p.w1, r * dim), dcopy(p.b1, r), dcopy(p.w2, no * r), dcopy(p.b2, no)};
    double ref = dloss(&m, x, y, n, pw);
    printf("  loss %.9g, reference %.9g\n", loss1, ref);
    CHECK(fabs(loss1 - ref) <= 1e-5 * fabs(ref), "loss %.9g vs reference %.9g", loss1, ref);
    check_tensor("w1", &m, m.w1, g1.w1, r * dim, 7, x, y, n, pw);
    check_tensor("b1", &m, m.b1, g1.b1, r, 1, x, y, n, pw);
    check_tensor("w2", &m, m.w2, g1.w2, no * r, 1, x, y, n, pw);
    check_tensor("b2", &m, m.b2, g1.b2, no, 1, x, y, n, pw);

    CHECK(loss1 == loss3, "loss differs between 1 and 3 threads: %.17g vs %.17g", loss1, loss3);
    CHECK(!memcmp(g1.w1, g3.w1, (size_t)(r * dim) * sizeof(float)) && !memcmp(g1.w2, g3.w2, (size_t)(no * r) * 4) &&
              !memcmp(g1.b1, g3.b1, (size_t)r * 4) && !memcmp(g1.b2, g3.b2, (size_t)no * 4),
          "gradients differ between 1 and 3 threads");
    free(m.w1), free(m.b1), free(m.w2), free(m.b2);
    free(x), free(y);
    predictor_free(&p), predictor_free(&g1), predictor_free(&g3);
}

/* ---- learn --------------------------------------------------------------------- */

/* The bar a useful predictor clears on held-out tokens: recall >= 0.95 with
 * at most a third of the non-firing neurons computed needlessly. */
static int useful(const struct predictor_metrics *m) {
    double fp_rate = (double)m->fp / (double)(m->fp + m->tn);
    return m->recall >= 0.95 && fp_rate <= 1.0 / 3.0;
}

static void train_eval(const char *what, const float *x, const uint8_t *y, int64_t n, const float *xt,
                       const uint8_t *yt, int64_t nt, int64_t dim, int64_t no, float target, float calib,
                       struct predictor_metrics *mt) {
    char err[256];
    struct predictor p;
    must(predictor_init(&p, dim, 32, no, 5, err, sizeof err), "predictor_init", err);
    struct predictor_train_opts o;
    predictor_train_opts_default(&o);
    o.target_recall = target;
    o.calib_frac = calib;
    o.epochs = 12;
    struct tpool *tp = pool(2);
    double t0 = now_s();
    must(predictor_train(&p, x, y, n, &o, tp, err, sizeof err), "predictor_train", err);
    double t1 = now_s();
    struct predictor_metrics mtr;
    must(predictor_evaluate(&p, x, y, n, &mtr, tp, err, sizeof err), "predictor_evaluate", err);
    must(predictor_evaluate(&p, xt, yt, nt, mt, tp, err, sizeof err), "predictor_evaluate", err);
    printf("  %s (%.2f s): train recall %.4f precision %.4f | held-out recall %.4f precision %.4f "
           "predicted %.3f actual %.3f fp rate %.3f\n",
           what, t1 - t0, mtr.recall, mtr.precision, mt->recall, mt->precision, mt->predicted_frac, mt->actual_frac,
           (double)mt->fp / (double)(mt->fp + mt->tn));
    tpool_destroy(tp);
    predictor_free(&p);
}

static void test_learn(void) {
    const int64_t dim = 96, no = 200, n = 2400, nt = 600;
    struct truth T;
    truth_make(&T, dim, no);
    float *x, *xt;
    uint8_t *y, *yt;
    truth_sample(&T, n, &x, &y);
    truth_sample(&T, nt, &xt, &yt);

    struct predictor_metrics m;
    train_eval("learnable", x, y, n, xt, yt, nt, dim, no, 0.97f, 0.0f, &m);
    CHECK(useful(&m), "learnable labels: held-out recall %.4f, precision %.4f (base rate %.4f) not useful", m.recall,
          m.precision, m.actual_frac);
    CHECK(m.recall >= 0.95, "held-out recall %.4f < 0.95", m.recall);
    /* a cutoff calibrated on samples kept out of training: its recall holds
     * on new samples, where the training set's overstates it */
    train_eval("learnable, calibrated", x, y, n, xt, yt, nt, dim, no, 0.96f, 0.2f, &m);
    CHECK(useful(&m), "calibrated: held-out recall %.4f, precision %.4f not useful", m.recall, m.precision);

    /* The same inputs with the label rows shuffled between samples (every
     * neuron keeps its frequency, but x no longer tells anything). */
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(rnd64() % (uint64_t)(i + 1));
        for (int64_t o = 0; o < no; o++) {
            uint8_t t = y[i * no + o];
            y[i * no + o] = y[j * no + o], y[j * no + o] = t;
        }
    }
    for (int64_t i = nt - 1; i > 0; i--) {
        int64_t j = (int64_t)(rnd64() % (uint64_t)(i + 1));
        for (int64_t o = 0; o < no; o++) {
            uint8_t t = yt[i * no + o];
            yt[i * no + o] = yt[j * no + o], yt[j * no + o] = t;
        }
    }
    struct predictor_metrics mr;
    train_eval("shuffled labels", x, y, n, xt, yt, nt, dim, no, 0.97f, 0.0f, &mr);
    CHECK(!useful(&mr), "shuffled labels look learnable: held-out recall %.4f precision %.4f", mr.recall,
          mr.precision);
    free(x), free(y), free(xt), free(yt);
    truth_free(&T);
}

/* ---- cutoff ---------------------------------------------------------------------- */

static void test_cutoff(void) {
    char err[256];
    const int64_t dim = 64, no = 77, n = 700;
    struct truth T;
    truth_make(&T, dim, no);
    float *x;
    uint8_t *y;
    truth_sample(&T, n, &x, &y);
    /* label noise, so that no cutoff separates the classes perfectly */
    for (int64_t i = 0; i < n * no; i++)
        if (rnd64() % 10 == 0)
            y[i] ^= 1;
    float *logits = xmalloc((size_t)(n * no) * sizeof(float));
    const float targets[] = {0.5f, 0.8f, 0.95f, 0.99f, 1.0f};
    double prev_pred = 0;
    for (size_t ti = 0; ti < sizeof targets / sizeof targets[0]; ti++) {
        struct predictor p;
        must(predictor_init(&p, dim, 32, no, 3, err, sizeof err), "predictor_init", err);
        struct predictor_train_opts o;
        predictor_train_opts_default(&o);
        o.epochs = 3;
        o.target_recall = targets[ti];
        must(predictor_train(&p, x, y, n, &o, NULL, err, sizeof err), "predictor_train", err);
        struct predictor_metrics m;
        must(predictor_evaluate(&p, x, y, n, &m, NULL, err, sizeof err), "predictor_evaluate", err);
        must(predictor_forward(&p, x, n, logits, NULL, err, sizeof err), "predictor_forward", err);
        int64_t tp = 0, fp = 0, fn = 0, tn = 0;
        for (int64_t i = 0; i < n * no; i++) {
            int f = logits[i] > p.cutoff;
            tp += f && y[i], fp += f && !y[i], fn += !f && y[i], tn += !f && !y[i];
        }
        printf("  target %.2f: cutoff %.4f recall %.5f precision %.4f predicted %.4f\n", (double)targets[ti],
               (double)p.cutoff, m.recall, m.precision, m.predicted_frac);
        CHECK(m.tp == tp && m.fp == fp && m.fn == fn && m.tn == tn,
              "evaluate counts %lld/%lld/%lld/%lld, direct %lld/%lld/%lld/%lld", (long long)m.tp, (long long)m.fp,
              (long long)m.fn, (long long)m.tn, (long long)tp, (long long)fp, (long long)fn, (long long)tn);
        CHECK(fabs(m.recall - (double)tp / (double)(tp + fn)) < 1e-12 &&
                  fabs(m.precision - (double)tp / (double)(tp + fp)) < 1e-12 &&
                  fabs(m.predicted_frac - (double)(tp + fp) / (double)(n * no)) < 1e-12 &&
                  fabs(m.actual_frac - (double)(tp + fn) / (double)(n * no)) < 1e-12,
              "evaluate's ratios differ from the counts");
        CHECK(m.recall >= targets[ti], "target %.2f: training recall %.5f", (double)targets[ti], m.recall);
        /* the largest cutoff that keeps the target: one positive more would
         * be above it only through ties */
        CHECK(m.recall <= targets[ti] + 0.002, "target %.2f: recall %.5f: cutoff not tight", (double)targets[ti],
              m.recall);
        CHECK(m.predicted_frac >= prev_pred, "a higher target predicted fewer neurons (%.4f < %.4f)",
              m.predicted_frac, prev_pred);
        prev_pred = m.predicted_frac;
        predictor_free(&p);
    }
    free(logits), free(x), free(y);
    truth_free(&T);
}

/* ---- determinism ------------------------------------------------------------------- */

static void test_determ(void) {
    char err[256];
    const int64_t dim = 72, no = 130, n = 333, r = 64;
    struct truth T;
    truth_make(&T, dim, no);
    float *x;
    uint8_t *y;
    truth_sample(&T, n, &x, &y);
    struct predictor p[4];
    for (int t = 0; t < 4; t++) {
        must(predictor_init(&p[t], dim, r, no, 9, err, sizeof err), "predictor_init", err);
        struct predictor_train_opts o;
        predictor_train_opts_default(&o);
        o.epochs = 2;
        o.batch = 50; /* 333 = 6 * 50 + 33: a short last batch */
        o.seed = t == 3 ? 2 : 1;
        struct tpool *tp = t == 0 ? NULL : pool(t == 3 ? 2 : t + 1);
        must(predictor_train(&p[t], x, y, n, &o, tp, err, sizeof err), "predictor_train", err);
        tpool_destroy(tp);
    }
    for (int t = 1; t < 3; t++) {
        int same = !memcmp(p[0].w1, p[t].w1, (size_t)(r * dim) * 4) && !memcmp(p[0].w2, p[t].w2, (size_t)(no * r) * 4) &&
                   !memcmp(p[0].b1, p[t].b1, (size_t)r * 4) && !memcmp(p[0].b2, p[t].b2, (size_t)no * 4) &&
                   p[0].cutoff == p[t].cutoff;
        CHECK(same, "training with %d threads differs from 1 thread", t + 1);
    }
    CHECK(memcmp(p[0].w1, p[3].w1, (size_t)(r * dim) * 4) != 0, "another shuffling seed gave the same weights");
    for (int t = 0; t < 4; t++) predictor_free(&p[t]);
    free(x), free(y);
    truth_free(&T);
}

/* ---- run-time form ------------------------------------------------------------------ */

static void test_rt(void) {
    char err[256];
    const int64_t dim = 96, no = 200, n = 1500, r = 64, ntok = 37;
    struct truth T;
    truth_make(&T, dim, no);
    float *x, *xt;
    uint8_t *y, *yt;
    truth_sample(&T, n, &x, &y);
    truth_sample(&T, ntok, &xt, &yt);
    struct predictor p;
    must(predictor_init(&p, dim, r, no, 21, err, sizeof err), "predictor_init", err);
    struct predictor_train_opts o;
    predictor_train_opts_default(&o);
    o.epochs = 4;
    struct tpool *tp2 = pool(2);
    must(predictor_train(&p, x, y, n, &o, tp2, err, sizeof err), "predictor_train", err);
    float *lf = xmalloc((size_t)(ntok * no) * sizeof(float));
    must(predictor_forward(&p, xt, ntok, lf, NULL, err, sizeof err), "predictor_forward", err);

    /* all neurons, in order */
    int32_t *all = xmalloc((size_t)no * sizeof(int32_t));
    for (int64_t j = 0; j < no; j++) all[j] = (int32_t)j;
    struct predictor_rt rt;
    must(predictor_rt_init(&rt, &p, all, no, err, sizeof err), "predictor_rt_init", err);
    CHECK(predictor_rt_bytes(&rt) == (size_t)(r * (dim / 32 * 34 + 4) + no * (r / 32 * 34 + 4)),
          "predictor_rt_bytes %zu", predictor_rt_bytes(&rt));
    uint8_t *mask[3];
    float *lrt = xmalloc((size_t)(ntok * no) * sizeof(float));
    struct predictor_rt_scratch s = PREDICTOR_RT_SCRATCH_INIT;
    for (int t = 0; t < 3; t++) {
        struct tpool *tp = t == 0 ? NULL : t == 1 ? tp2 : pool(3);
        mask[t] = xmalloc((size_t)(ntok * no));
        must(predictor_rt_eval(&rt, xt, ntok, mask[t], &s, tp, err, sizeof err), "predictor_rt_eval", err);
        if (t == 0)
            memcpy(lrt, s.logit, (size_t)(ntok * no) * sizeof(float));
        else
            CHECK(!memcmp(lrt, s.logit, (size_t)(ntok * no) * sizeof(float)), "logits differ with %d threads", t + 1);
        CHECK(!memcmp(mask[0], mask[t], (size_t)(ntok * no)), "masks differ with %d threads", t + 1);
        if (t == 2)
            tpool_destroy(tp);
    }
    /* 8-bit rounding of W1, x, W2 and z moves logits a little: measure it
     * against the logits' spread and allow disagreement only near the cutoff */
    double maxerr = 0, spread = 0;
    for (int64_t i = 0; i < ntok * no; i++) {
        maxerr = fmax(maxerr, fabs((double)lrt[i] - lf[i]));
        spread = fmax(spread, fabs((double)lf[i] - p.cutoff));
    }
    const double delta = 0.02 * spread;
    int64_t disagree = 0, near = 0;
    for (int64_t i = 0; i < ntok * no; i++) {
        int f32 = lf[i] > p.cutoff;
        CHECK(mask[0][i] == (lrt[i] > p.cutoff), "mask[%lld] disagrees with its own logit", (long long)i);
        near += fabs((double)lf[i] - p.cutoff) < delta;
        if (f32 != mask[0][i]) {
            disagree++;
            CHECK(fabs((double)lf[i] - p.cutoff) < delta, "token %lld neuron %lld: f32 logit %.5f, Q8_0 %.5f, cutoff %.5f",
                  (long long)(i / no), (long long)(i % no), (double)lf[i], (double)lrt[i], (double)p.cutoff);
        }
    }
    printf("  Q8_0 vs f32: max |logit error| %.4f (%.2f%% of the spread %.2f); %lld of %lld masks differ, all within "
           "%.3f of the cutoff (%lld logits are)\n",
           maxerr, 100 * maxerr / spread, spread, (long long)disagree, (long long)(ntok * no), delta, (long long)near);
    CHECK(maxerr < delta, "Q8_0 logit error %.4f >= %.4f", maxerr, delta);

    /* token by token equals the batch (matmul's batch invariance) */
    uint8_t *m1 = xmalloc((size_t)no);
    for (int64_t t = 0; t < ntok; t++) {
        must(predictor_rt_eval(&rt, xt + t * dim, 1, m1, &s, NULL, err, sizeof err), "predictor_rt_eval", err);
        CHECK(!memcmp(m1, mask[0] + t * no, (size_t)no), "token %lld alone differs from the batch", (long long)t);
    }

    /* a permuted subset with a repeat: the same per-neuron answers */
    const int64_t ns = 77;
    int32_t *ids = xmalloc((size_t)ns * sizeof(int32_t));
    for (int64_t j = no - 1; j > 0; j--) {
        int64_t k = (int64_t)(rnd64() % (uint64_t)(j + 1));
        int32_t tmp = all[j];
        all[j] = all[k], all[k] = tmp;
    }
    memcpy(ids, all, (size_t)(ns - 1) * sizeof(int32_t));
    ids[ns - 1] = ids[3];
    struct predictor_rt rts;
    must(predictor_rt_init(&rts, &p, ids, ns, err, sizeof err), "predictor_rt_init", err);
    uint8_t *ms = xmalloc((size_t)(ntok * ns));
    struct predictor_rt_scratch s2 = PREDICTOR_RT_SCRATCH_INIT;
    must(predictor_rt_eval(&rts, xt, ntok, ms, &s2, tp2, err, sizeof err), "predictor_rt_eval", err);
    int64_t diff = 0;
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t j = 0; j < ns; j++) diff += ms[t * ns + j] != mask[0][t * no + ids[j]];
    CHECK(diff == 0, "%lld answers of the subset differ from the full set", (long long)diff);

    /* an empty subset is fine */
    struct predictor_rt rt0;
    must(predictor_rt_init(&rt0, &p, NULL, 0, err, sizeof err), "predictor_rt_init", err);
    must(predictor_rt_eval(&rt0, xt, ntok, ms, &s2, NULL, err, sizeof err), "predictor_rt_eval", err);
    predictor_rt_free(&rt0);

    predictor_rt_scratch_free(&s), predictor_rt_scratch_free(&s2);
    predictor_rt_free(&rt), predictor_rt_free(&rts);
    for (int t = 0; t < 3; t++) free(mask[t]);
    free(m1), free(ms), free(ids), free(all), free(lrt), free(lf);
    free(x), free(y), free(xt), free(yt);
    tpool_destroy(tp2);
    predictor_free(&p);
    truth_free(&T);
}

/* ---- rank ------------------------------------------------------------------------ */

static void test_rank(void) {
    const int64_t no = 1536;
    float *f = xmalloc((size_t)no * sizeof(float));
    /* flat and dense: c90 ~ 0.9 * 1536 -> 1383 / 8 -> 192, clamped */
    for (int64_t i = 0; i < no; i++) f[i] = 0.5f;
    int64_t flat = predictor_choose_rank(f, no, 128);
    CHECK(flat == 128, "flat dense layer: rank %lld, want 128 (clamped)", (long long)flat);
    CHECK(predictor_choose_rank(f, no, 1000) == 192, "flat dense layer, max 1000: rank %lld, want 192",
          (long long)predictor_choose_rank(f, no, 1000));
    CHECK(predictor_choose_rank(f, no, 100) == 96, "max_rank 100 -> 96, got %lld",
          (long long)predictor_choose_rank(f, no, 100));
    /* power law: freq ~ 1 / (i + 1): firings concentrated in few neurons */
    for (int64_t i = 0; i < no; i++) f[i] = 0.9f / (float)(i + 1);
    int64_t skew = predictor_choose_rank(f, no, 128);
    /* 512 neurons at 0.3, the rest 0: c90 = 0.9 * 512 -> 461 / 8 -> 64 */
    for (int64_t i = 0; i < no; i++) f[i] = i < 512 ? 0.3f : 0.0f;
    int64_t half = predictor_choose_rank(f, no, 128);
    CHECK(half == 64, "512 equal neurons: rank %lld, want 64", (long long)half);
    /* always-on neurons need no capacity */
    for (int64_t i = 0; i < no; i++) f[i] = i < 1000 ? 1.0f : 0.0f;
    int64_t on = predictor_choose_rank(f, no, 128);
    CHECK(on == 32, "always-on neurons: rank %lld, want 32", (long long)on);
    printf("  ranks: flat %lld, power law %lld, 512 equal %lld, always-on %lld\n", (long long)flat, (long long)skew,
           (long long)half, (long long)on);
    CHECK(skew < flat && skew >= 32 && skew % 32 == 0, "power law rank %lld", (long long)skew);
    free(f);
}

/* ---- errors ---------------------------------------------------------------------- */

#define EXPECT_ERR(call, needle)                                                                          \
    do {                                                                                                  \
        err[0] = '\0';                                                                                    \
        int rc_ = (call);                                                                                 \
        CHECK(rc_ < 0, "%s returned %d", #call, rc_);                                                     \
        CHECK(strstr(err, needle) != NULL, "%s: message \"%s\" lacks \"%s\"", #call, err, needle);        \
        printf("  %s\n", err);                                                                            \
    } while (0)

static void test_errors(void) {
    char err[256];
    struct predictor p, q;
    EXPECT_ERR(predictor_init(&p, 64, 40, 100, 1, err, sizeof err), "rank 40 is not a positive multiple of 32");
    EXPECT_ERR(predictor_init(&p, 64, 0, 100, 1, err, sizeof err), "rank 0");
    EXPECT_ERR(predictor_init(&p, 0, 32, 100, 1, err, sizeof err), "dim 0");
    EXPECT_ERR(predictor_init(&p, 64, 32, -3, 1, err, sizeof err), "n_out -3");
    CHECK(p.w1 == NULL, "failed init left weights");

    must(predictor_init(&p, 40, 32, 10, 1, err, sizeof err), "predictor_init", err);
    float x[40 * 3] = {0};
    uint8_t y[10 * 3] = {0};
    struct predictor_train_opts o;
    predictor_train_opts_default(&o);
    EXPECT_ERR(predictor_train(&p, x, y, 0, &o, NULL, err, sizeof err), "predictor_train: no samples (n = 0)");
    EXPECT_ERR(predictor_train(&p, NULL, y, 3, &o, NULL, err, sizeof err), "x is NULL");
    o.target_recall = 1.5f;
    EXPECT_ERR(predictor_train(&p, x, y, 3, &o, NULL, err, sizeof err), "target_recall 1.5 not in (0, 1]");
    predictor_train_opts_default(&o);
    o.calib_frac = 0.2f;
    EXPECT_ERR(predictor_train(&p, x, y, 3, &o, NULL, err, sizeof err),
               "calib_frac 0.2 of 3 samples leaves an empty training or calibration set");
    o.calib_frac = 0.95f;
    EXPECT_ERR(predictor_train(&p, x, y, 3, &o, NULL, err, sizeof err), "calib_frac 0.95 not in [0, 0.9]");
    predictor_train_opts_default(&o);
    o.batch = 0;
    EXPECT_ERR(predictor_train(&p, x, y, 3, &o, NULL, err, sizeof err), "batch 0");
    predictor_train_opts_default(&o);
    o.lr = -1;
    EXPECT_ERR(predictor_train(&p, x, y, 3, &o, NULL, err, sizeof err), "lr -1");
    struct predictor_metrics m;
    EXPECT_ERR(predictor_evaluate(&p, x, y, 0, &m, NULL, err, sizeof err), "predictor_evaluate: no samples");

    /* mismatched sizes */
    must(predictor_init(&q, 40, 64, 10, 1, err, sizeof err), "predictor_init", err);
    double loss;
    EXPECT_ERR(predictor_loss_grad(&p, x, y, 3, 1.0f, &loss, &q, NULL, err, sizeof err),
               "grad is 40 x 64 x 10 but the model 40 x 32 x 10");
    struct predictor_rt rt;
    EXPECT_ERR(predictor_rt_init(&rt, &p, NULL, 0, err, sizeof err), "dim 40 is not a multiple of 32");
    predictor_free(&q);
    must(predictor_init(&q, 64, 32, 10, 1, err, sizeof err), "predictor_init", err);
    int32_t ids[4] = {1, 2, 9, 10};
    EXPECT_ERR(predictor_rt_init(&rt, &q, ids, 4, err, sizeof err), "ids[3] = 10 is not a neuron of this layer (0..9)");
    ids[3] = -1;
    EXPECT_ERR(predictor_rt_init(&rt, &q, ids, 4, err, sizeof err), "ids[3] = -1");
    struct predictor empty;
    memset(&empty, 0, sizeof empty);
    EXPECT_ERR(predictor_forward(&empty, x, 1, NULL, NULL, err, sizeof err), "no weights");
    struct predictor_rt_scratch s = PREDICTOR_RT_SCRATCH_INIT;
    memset(&rt, 0, sizeof rt);
    EXPECT_ERR(predictor_rt_eval(&rt, x, 1, y, &s, NULL, err, sizeof err), "not initialised");
    predictor_free(&p), predictor_free(&q);
}

/* ---- timing ---------------------------------------------------------------------- */

static void test_timing(int epochs) {
    char err[256];
    const int64_t dim = 576, no = 1536, n = 3000, nt = 500, r = 64;
    struct truth T;
    truth_make(&T, dim, no);
    float *x, *xt;
    uint8_t *y, *yt;
    truth_sample(&T, n, &x, &y);
    truth_sample(&T, nt, &xt, &yt);
    for (int threads = 1; threads <= 2; threads++) {
        struct predictor p;
        must(predictor_init(&p, dim, r, no, 1, err, sizeof err), "predictor_init", err);
        struct predictor_train_opts o;
        predictor_train_opts_default(&o);
        o.epochs = epochs;
        struct tpool *tp = pool(threads);
        double t0 = now_s();
        must(predictor_train(&p, x, y, n, &o, tp, err, sizeof err), "predictor_train", err);
        double t1 = now_s();
        struct predictor_metrics m;
        must(predictor_evaluate(&p, xt, yt, nt, &m, tp, err, sizeof err), "predictor_evaluate", err);
        printf("  dim %lld n_out %lld rank %lld, %lld samples, %d epochs, %d thread(s): %.2f s; held-out recall "
               "%.4f precision %.4f (base %.3f)\n",
               (long long)dim, (long long)no, (long long)r, (long long)n, epochs, threads, t1 - t0, m.recall,
               m.precision, m.actual_frac);
        CHECK(m.recall > 0.9, "held-out recall %.4f", m.recall);
        tpool_destroy(tp);
        predictor_free(&p);
    }
    free(x), free(y), free(xt), free(yt);
    truth_free(&T);
}

int main(int argc, char **argv) {
    const char *seed_env = getenv("HEARTH_TEST_SEED");
    uint64_t seed = seed_env && seed_env[0] ? strtoull(seed_env, NULL, 0) : 0x5eed0f2a11ull;
    const char *what = argc > 1 ? argv[1] : "all";
    printf("test_predictor %s: seed 0x%llx (HEARTH_TEST_SEED)\n", what, (unsigned long long)seed);
    check_seed(seed);
    int all = !strcmp(what, "all"), ran = 0;
    if (all || !strcmp(what, "grad")) ran = 1, test_grad();
    if (all || !strcmp(what, "learn")) ran = 1, test_learn();
    if (all || !strcmp(what, "cutoff")) ran = 1, test_cutoff();
    if (all || !strcmp(what, "determ")) ran = 1, test_determ();
    if (all || !strcmp(what, "rt")) ran = 1, test_rt();
    if (all || !strcmp(what, "rank")) ran = 1, test_rank();
    if (all || !strcmp(what, "errors")) ran = 1, test_errors();
    if (!strcmp(what, "timing")) ran = 1, test_timing(argc > 2 ? atoi(argv[2]) : 10);
    if (!ran) {
        fprintf(stderr, "usage: test_predictor [all|grad|learn|cutoff|determ|rt|rank|errors|timing [epochs]]\n");
        return 2;
    }
    char name[64];
    snprintf(name, sizeof name, "test_predictor %s", what);
    return check_done(name);
}
