/* test_matmul: matmul against a naive double loop over the dequantized
 * weights and the dequantized (quantized) activations, for every weight type,
 * n_tok in {1,2,3,7,64}, awkward n_out, 1/2/3 threads; matmul_rows writes
 * only its rows; bad arguments give errors. matmul_fused (several outputs
 * over one input, a computed input, per-group sums into a sink) gives the
 * separate calls' results bit for bit.
 *
 * Seed: HEARTH_TEST_SEED or a fixed default; printed either way. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp16.h"
#include "matmul.h"
#include "quant.h"

static int failures;
#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            failures++;                                                                                      \
            if (failures < 30) {                                                                             \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                        \
                fprintf(stderr, __VA_ARGS__);                                                                \
                fputc('\n', stderr);                                                                         \
            }                                                                                                \
        }                                                                                                    \
    } while (0)

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t rng_u64(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}
static float rng_normal(void) {
    double u1 = ((rng_u64() >> 11) + 1) * 0x1p-53, u2 = (rng_u64() >> 11) * 0x1p-53;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

/* weights: quantize gaussian rows with the type's reference quantizer (the
 * realistic case: scales fit the data) */
static void *make_weights(enum hearth_type wt, int64_t n_out, int64_t n_in) {
    const struct quant_traits *tr = quant_traits(wt);
    size_t row = hearth_row_size((uint32_t)wt, n_in);
    uint8_t *w = xmalloc(row * (size_t)n_out);
    float *f = xmalloc((size_t)n_in * sizeof(float));
    for (int64_t r = 0; r < n_out; r++) {
        for (int64_t i = 0; i < n_in; i++)
            f[i] = rng_normal() * 0.05f;
        tr->from_float_ref(f, w + (size_t)r * row, n_in);
    }
    free(f);
    return w;
}

/* Tolerance per output, see test_quant.c's dot_tolerance: float rounding is
 * below 1e-5 * sum|w x|; the Q8_1 side sum s differs from the dequantized
 * activations' sum by up to 2 * 2^-11 relative (s = f16(d * sum q) uses d
 * before its own f16 rounding), and meets the block's offset m. */
static double out_tolerance(enum hearth_type wt, const uint8_t *wrow, const void *xq, const float *wf,
                            const float *xf, int64_t n) {
    double abs_sum = 0;
    for (int64_t i = 0; i < n; i++)
        abs_sum += fabs((double)wf[i] * xf[i]);
    double tol = 1e-5 * abs_sum + 1e-30;
    if (wt == HEARTH_TYPE_Q4_1 || wt == HEARTH_TYPE_Q5_1) {
        size_t bs = hearth_type_size((uint32_t)wt);
        for (int64_t b = 0; b < n / 32; b++) {
            uint16_t m;
            memcpy(&m, wrow + (size_t)b * bs + 2, 2);
            tol += fabs(fp16_to_f32(m) * fp16_to_f32(((const block_q8_1 *)xq)[b].s)) * 0x1p-10;
        }
    }
    return tol;
}

static void check_case(struct tpool *tp, struct matmul_scratch *s, enum hearth_type wt, int64_t n_in, int64_t n_out,
                       int64_t n_tok, int64_t r0, int64_t r1) {
    const struct quant_traits *tr = quant_traits(wt);
    const struct quant_traits *xt = quant_traits(tr->vec_dot_type);
    uint8_t *w = make_weights(wt, n_out, n_in);
    size_t wrow = hearth_row_size((uint32_t)wt, n_in);
    float *x = xmalloc((size_t)(n_in * n_tok) * sizeof(float));
    for (int64_t i = 0; i < n_in * n_tok; i++)
        x[i] = rng_normal();
    float *y = xmalloc((size_t)(n_out * n_tok) * sizeof(float));
    const float sentinel = 12345.678f;
    for (int64_t i = 0; i < n_out * n_tok; i++)
        y[i] = sentinel;
    char err[256] = "";
    int rc = matmul_rows(tp, y, w, wt, x, n_in, n_out, n_tok, r0, r1, s, err, sizeof err);
    CHECK(rc == 0, "%s %lldx%lld n_tok=%lld: %s", tr->name, (long long)n_out, (long long)n_in, (long long)n_tok, err);

    /* naive: the activations quantized as matmul does (the traits'
     * from_float), dequantized, and a double dot per (token, row) */
    size_t xrow = hearth_row_size((uint32_t)xt->type, n_in);
    uint8_t *xq = xmalloc(xrow);
    float *xf = xmalloc((size_t)n_in * sizeof(float));
    float *wall = xmalloc((size_t)(n_in * n_out) * sizeof(float)); /* W dequantized, [n_out, n_in] */
    for (int64_t r = r0; r < r1; r++)
        tr->to_float(w + (size_t)r * wrow, wall + r * n_in, n_in);
    int bad = 0, untouched_bad = 0;
    for (int64_t t = 0; t < n_tok; t++) {
        xt->from_float(x + t * n_in, xq, n_in);
        xt->to_float(xq, xf, n_in);
        for (int64_t r = 0; r < n_out; r++) {
            float got = y[t * n_out + r];
            if (r < r0 || r >= r1) {
                untouched_bad += got != sentinel;
                continue;
            }
            const float *wf = wall + r * n_in;
            double want = 0;
            for (int64_t i = 0; i < n_in; i++)
                want += (double)wf[i] * xf[i];
            double tol = out_tolerance(wt, w + (size_t)r * wrow, xq, wf, xf, n_in);
            if (!(fabs(got - want) <= tol)) {
                if (bad++ < 3)
                    fprintf(stderr, "  %s t=%lld r=%lld: %.9g want %.9g tol %.3g\n", tr->name, (long long)t,
                            (long long)r, (double)got, want, tol);
            }
        }
    }
    CHECK(bad == 0, "%s n_in=%lld n_out=%lld n_tok=%lld rows [%lld,%lld) threads=%d: %d wrong outputs", tr->name,
          (long long)n_in, (long long)n_out, (long long)n_tok, (long long)r0, (long long)r1, tpool_size(tp), bad);
    CHECK(untouched_bad == 0, "%s: %d outputs outside rows [%lld,%lld) were written", tr->name, untouched_bad,
          (long long)r0, (long long)r1);
    free(w);
    free(x);
    free(y);
    free(xq);
    free(xf);
    free(wall);
}

/* matmul_strided on a column slice of a wider matrix must give exactly what
 * matmul gives on the same slice copied out compactly (same kernels, same
 * bytes: bitwise equal). */
static void check_strided(struct tpool *tp, struct matmul_scratch *s, enum hearth_type wt) {
    const int64_t blck = quant_traits(wt)->blck;
    const int64_t wide = 9 * (blck == 1 ? 8 : blck), c0 = 2 * (blck == 1 ? 8 : blck), n_in = 5 * (blck == 1 ? 8 : blck);
    const int64_t n_out = 37, n_tok = 4;
    uint8_t *w = make_weights(wt, n_out, wide);
    const size_t wrow = hearth_row_size((uint32_t)wt, wide), srow = hearth_row_size((uint32_t)wt, n_in);
    const size_t off = hearth_row_size((uint32_t)wt, c0);
    uint8_t *ws = xmalloc(srow * (size_t)n_out);
    for (int64_t r = 0; r < n_out; r++)
        memcpy(ws + (size_t)r * srow, w + (size_t)r * wrow + off, srow);
    float *x = xmalloc((size_t)(n_in * n_tok) * sizeof(float));
    for (int64_t i = 0; i < n_in * n_tok; i++)
        x[i] = rng_normal();
    float *y1 = xmalloc((size_t)(n_out * n_tok) * sizeof(float)), *y2 = xmalloc((size_t)(n_out * n_tok) * sizeof(float));
    char err[256] = "";
    int rc1 = matmul(tp, y1, ws, wt, x, n_in, n_out, n_tok, s, err, sizeof err);
    int rc2 = matmul_strided(tp, y2, w + off, wt, wrow, x, n_in, n_out, n_tok, s, err, sizeof err);
    CHECK(rc1 == 0 && rc2 == 0, "%s strided: %s", quant_traits(wt)->name, err);
    CHECK(memcmp(y1, y2, (size_t)(n_out * n_tok) * sizeof(float)) == 0, "%s: strided result differs from compact",
          quant_traits(wt)->name);
    err[0] = 0;
    CHECK(matmul_strided(tp, y2, w, wt, srow - 1, x, n_in, n_out, n_tok, s, err, sizeof err) < 0 &&
              strstr(err, "stride"),
          "a stride shorter than a row must fail: '%s'", err);
    free(w);
    free(ws);
    free(x);
    free(y1);
    free(y2);
}

/* Batch invariance: a token's outputs must not depend on how many tokens
 * share the call (the runtime rebuilds a KV cache in other batch sizes than
 * the first pass and must get the same bits). n_tok tokens at once vs one
 * at a time, compared bit for bit. */
static void check_batch_invariance(struct tpool *tp, struct matmul_scratch *s, enum hearth_type wt) {
    const int64_t blck = quant_traits(wt)->blck, n_in = blck == 1 ? 67 : blck == 32 ? 32 * 9 : 256 * 2;
    const int64_t n_out = 37, n_tok = 11;
    uint8_t *w = make_weights(wt, n_out, n_in);
    float *x = xmalloc((size_t)(n_tok * n_in) * sizeof(float));
    float *yb = xmalloc((size_t)(n_tok * n_out) * sizeof(float)), *y1 = xmalloc((size_t)n_out * sizeof(float));
    for (int64_t i = 0; i < n_tok * n_in; i++) x[i] = rng_normal();
    char err[256];
    CHECK(matmul(tp, yb, w, wt, x, n_in, n_out, n_tok, s, err, sizeof err) == 0, "%s batch: %s",
          hearth_type_name(wt), err);
    int diffs = 0;
    for (int64_t t = 0; t < n_tok; t++) {
        CHECK(matmul(tp, y1, w, wt, x + t * n_in, n_in, n_out, 1, s, err, sizeof err) == 0, "%s: %s",
              hearth_type_name(wt), err);
        diffs += memcmp(y1, yb + t * n_out, (size_t)n_out * sizeof(float)) != 0;
    }
    CHECK(diffs == 0, "%s: %d of %lld tokens differ between one call of %lld tokens and one call each",
          hearth_type_name(wt), diffs, (long long)n_tok, (long long)n_tok);
    free(w);
    free(x);
    free(yb);
    free(y1);
}

/* ---- matmul_fused ---- */

/* a computed input: x[t, i] = 0.5 * base[t, i] - 0.25 */
struct fill_ctx {
    const float *base;
    int64_t n_in;
};
static void fill_affine(void *ctx, int64_t t, int64_t i0, int64_t n, float *dst) {
    const struct fill_ctx *c = ctx;
    for (int64_t i = 0; i < n; i++) dst[i] = 0.5f * c->base[t * c->n_in + i0 + i] - 0.25f;
}

/* a commutative sink: acc += round(v * 2^20) */
static void sink_fixed20(int64_t *acc, const float *v, size_t count) {
    for (size_t i = 0; i < count; i++) acc[i] += (int64_t)llrint((double)v[i] * 1048576.0);
}

/* Q, K, V-like outputs of mixed types (two activation types: two runs), one
 * restricted to a range of rows; the input given or computed; then the
 * grouped sink against per-group matmul_strided calls. All bit for bit. */
static void check_fused(struct tpool *tp, struct matmul_scratch *s, enum hearth_type t0, enum hearth_type t1,
                        int64_t n_tok) {
    /* an odd number of the larger block: the kernels' two-block tails */
    const int64_t n_in = quant_traits(t0)->blck == 256 || quant_traits(t1)->blck == 256 ? 256 * 3 : 32 * 7;
    const int64_t n_out[3] = {97, 13, 40};
    const enum hearth_type wt[3] = {t0, t1, t0};
    const int64_t r0[3] = {0, 0, 7}, r1[3] = {97, 13, 33};
    uint8_t *w[3];
    float *ya[3], *yb[3];
    for (int k = 0; k < 3; k++) {
        w[k] = make_weights(wt[k], n_out[k], n_in);
        ya[k] = xmalloc((size_t)(n_out[k] * n_tok) * sizeof(float));
        yb[k] = xmalloc((size_t)(n_out[k] * n_tok) * sizeof(float));
        for (int64_t i = 0; i < n_out[k] * n_tok; i++) ya[k][i] = yb[k][i] = -1.0f;
    }
    float *base = xmalloc((size_t)(n_in * n_tok) * sizeof(float)), *x = xmalloc((size_t)(n_in * n_tok) * sizeof(float));
    for (int64_t i = 0; i < n_in * n_tok; i++) {
        base[i] = rng_normal();
        x[i] = 0.5f * base[i] - 0.25f;
    }
    char err[256] = "";
    for (int k = 0; k < 3; k++)
        CHECK(matmul_rows(tp, ya[k], w[k], wt[k], x, n_in, n_out[k], n_tok, r0[k], r1[k], s, err, sizeof err) == 0,
              "fused reference: %s", err);
    struct matmul_out outs[3];
    for (int k = 0; k < 3; k++)
        outs[k] = (struct matmul_out){.w = w[k], .wt = wt[k], .n_out = n_out[k], .r0 = r0[k], .r1 = r1[k], .y = yb[k]};
    for (int computed = 0; computed < 2; computed++) {
        struct fill_ctx fc = {base, n_in};
        const struct matmul_in in = computed ? (struct matmul_in){NULL, fill_affine, &fc} : (struct matmul_in){x, NULL, NULL};
        CHECK(matmul_fused(tp, &in, n_in, n_tok, outs, 3, s, err, sizeof err) == 0, "fused: %s", err);
        for (int k = 0; k < 3; k++)
            CHECK(memcmp(ya[k], yb[k], (size_t)(n_out[k] * n_tok) * sizeof(float)) == 0,
                  "fused %s+%s n_tok=%lld (%s input): output %d differs from matmul_rows", hearth_type_name(t0),
                  hearth_type_name(t1), (long long)n_tok, computed ? "computed" : "given", k);
    }

    /* grouped sums: groups of 2 blocks of the larger block size; the last group shorter */
    const int64_t blck = quant_traits(t0)->blck > 32 ? quant_traits(t0)->blck : 32;
    const int64_t n_g = blck * 7, group = 2 * blck; /* 4 groups: 2+2+2+1 blocks */
    uint8_t *wg = make_weights(t0, n_out[0], n_g);
    const size_t grow = hearth_row_size((uint32_t)t0, n_g);
    float *xg = xmalloc((size_t)(n_g * n_tok) * sizeof(float)), *xs = xmalloc((size_t)(group * n_tok) * sizeof(float));
    float *yg = xmalloc((size_t)(n_out[0] * n_tok) * sizeof(float));
    int64_t *acc_a = calloc((size_t)(n_out[0] * n_tok), sizeof(int64_t)), *acc_b = calloc((size_t)(n_out[0] * n_tok), sizeof(int64_t));
    for (int64_t i = 0; i < n_g * n_tok; i++) xg[i] = rng_normal();
    for (int64_t g0 = 0; g0 < n_g; g0 += group) {
        const int64_t gw = g0 + group < n_g ? group : n_g - g0;
        for (int64_t t = 0; t < n_tok; t++) memcpy(xs + t * gw, xg + t * n_g + g0, (size_t)gw * sizeof(float));
        CHECK(matmul_strided(tp, yg, wg + hearth_row_size((uint32_t)t0, g0), t0, grow, xs, gw, n_out[0], n_tok, s,
                             err, sizeof err) == 0,
              "group reference: %s", err);
        sink_fixed20(acc_a, yg, (size_t)(n_out[0] * n_tok));
    }
    const struct matmul_in gin = {xg, NULL, NULL};
    const struct matmul_out go = {.w = wg, .wt = t0, .n_out = n_out[0], .r0 = 0, .r1 = n_out[0], .acc = acc_b,
                                  .group = group, .acc_add = sink_fixed20};
    CHECK(matmul_fused(tp, &gin, n_g, n_tok, &go, 1, s, err, sizeof err) == 0, "grouped: %s", err);
    CHECK(memcmp(acc_a, acc_b, (size_t)(n_out[0] * n_tok) * sizeof(int64_t)) == 0,
          "grouped %s n_tok=%lld: sums differ from per-group matmul_strided", hearth_type_name(t0), (long long)n_tok);

    /* errors */
    struct matmul_out bad = go;
    bad.y = yg;
    err[0] = 0;
    CHECK(matmul_fused(tp, &gin, n_g, n_tok, &bad, 1, s, err, sizeof err) < 0 && strstr(err, "both"),
          "y and acc together must fail: '%s'", err);
    bad = go;
    bad.group = blck + 16;
    err[0] = 0;
    CHECK(matmul_fused(tp, &gin, n_g, n_tok, &bad, 1, s, err, sizeof err) < 0 && strstr(err, "group"),
          "a group of part blocks must fail: '%s'", err);
    bad = go;
    bad.acc_add = NULL;
    err[0] = 0;
    CHECK(matmul_fused(tp, &gin, n_g, n_tok, &bad, 1, s, err, sizeof err) < 0 && strstr(err, "acc_add"),
          "acc without a sink must fail: '%s'", err);
    for (int k = 0; k < 3; k++) free(w[k]), free(ya[k]), free(yb[k]);
    free(base), free(x), free(wg), free(xg), free(xs), free(yg), free(acc_a), free(acc_b);
}

/* Rows interleaved by 8 (quant.h, repack8) give the row layout's results
 * bit for bit: a matrix of 61 rows with groups over rows [8, 56) computes
 * rows [8, 61) (48 interleaved, 5 plain), on a column slice [c0, c0 + n_in)
 * of a wider matrix whose interleaved copy covers more columns [c0 - blck,
 * c0 + n_in + blck); as y, and as per-group sums into a sink. */
static void check_repacked(struct tpool *tp, struct matmul_scratch *s, enum hearth_type wt, int64_t n_tok) {
    const struct quant_traits *tr = quant_traits(wt);
    const int64_t blck = tr->blck, wide = 9 * blck, c0 = 2 * blck, n_in = 5 * blck, n_out = 61, r0 = 8, r1 = 61;
    uint8_t *w = make_weights(wt, n_out, wide);
    const size_t row = hearth_row_size((uint32_t)wt, wide), off = hearth_row_size((uint32_t)wt, c0);
    const int64_t xc0 = c0 - blck, xc1 = c0 + n_in + blck; /* the copy's columns */
    const size_t gstride = 8 * hearth_row_size((uint32_t)wt, xc1 - xc0);
    uint8_t *x8 = xmalloc(6 * gstride);
    for (int g = 0; g < 6; g++)
        tr->repack8(w + (size_t)(r0 + 8 * g) * row + hearth_row_size((uint32_t)wt, xc0), row, x8 + (size_t)g * gstride,
                    xc1 - xc0);
    float *x = xmalloc((size_t)(n_in * n_tok) * sizeof(float));
    for (int64_t i = 0; i < n_in * n_tok; i++) x[i] = rng_normal();
    float *ya = xmalloc((size_t)(n_out * n_tok) * sizeof(float)), *yb = xmalloc((size_t)(n_out * n_tok) * sizeof(float));
    for (int64_t i = 0; i < n_out * n_tok; i++) ya[i] = yb[i] = -3.0f;
    char err[256] = "";
    const struct matmul_in in = {x, NULL, NULL};
    struct matmul_out o = {.w = w + off, .wt = wt, .w_stride = row, .n_out = n_out, .r0 = r0, .r1 = r1, .y = ya};
    CHECK(matmul_fused(tp, &in, n_in, n_tok, &o, 1, s, err, sizeof err) == 0, "rows: %s", err);
    o.y = yb;
    o.w8 = x8 + 8 * hearth_row_size((uint32_t)wt, c0 - xc0);
    o.w8_stride = gstride;
    o.n8 = 48;
    CHECK(matmul_fused(tp, &in, n_in, n_tok, &o, 1, s, err, sizeof err) == 0, "interleaved: %s", err);
    CHECK(memcmp(ya, yb, (size_t)(n_out * n_tok) * sizeof(float)) == 0,
          "%s n_tok=%lld: interleaved rows differ from the row layout", tr->name, (long long)n_tok);
    /* per-group sums, groups of 2 blocks (2 + 2 + 1) */
    int64_t *aa = calloc((size_t)(n_out * n_tok), sizeof(int64_t)), *ab = calloc((size_t)(n_out * n_tok), sizeof(int64_t));
    struct matmul_out g = o;
    g.y = NULL;
    g.acc = aa;
    g.group = 2 * blck;
    g.acc_add = sink_fixed20;
    g.w8 = NULL;
    g.n8 = 0;
    CHECK(matmul_fused(tp, &in, n_in, n_tok, &g, 1, s, err, sizeof err) == 0, "grouped rows: %s", err);
    g.acc = ab;
    g.w8 = o.w8;
    g.n8 = 48;
    CHECK(matmul_fused(tp, &in, n_in, n_tok, &g, 1, s, err, sizeof err) == 0, "grouped interleaved: %s", err);
    CHECK(memcmp(aa, ab, (size_t)(n_out * n_tok) * sizeof(int64_t)) == 0,
          "%s n_tok=%lld: interleaved group sums differ from the row layout", tr->name, (long long)n_tok);
    g.n8 = 44;
    err[0] = 0;
    CHECK(matmul_fused(tp, &in, n_in, n_tok, &g, 1, s, err, sizeof err) < 0 && strstr(err, "groups of 8"),
          "n8 not a multiple of 8 must fail: '%s'", err);
    free(w), free(x8), free(x), free(ya), free(yb), free(aa), free(ab);
}

/* A tall matrix decoded by one thread: a tile of thousands of rows (more
 * than the per-tile buffer of group sums holds) must still give the
 * per-group references' sums, for a type without an interleaved layout. */
static void check_grouped_tall(struct tpool *tp, struct matmul_scratch *s) {
    const enum hearth_type wt = HEARTH_TYPE_Q8_0;
    const int64_t n_out = 5003, n_in = 96, group = 64; /* groups of 2 + 1 blocks */
    uint8_t *w = make_weights(wt, n_out, n_in);
    const size_t row = hearth_row_size((uint32_t)wt, n_in);
    float *x = xmalloc((size_t)n_in * sizeof(float)), *xs = xmalloc((size_t)group * sizeof(float));
    float *y = xmalloc((size_t)n_out * sizeof(float));
    int64_t *aa = calloc((size_t)n_out, sizeof(int64_t)), *ab = calloc((size_t)n_out, sizeof(int64_t));
    for (int64_t i = 0; i < n_in; i++) x[i] = rng_normal();
    char err[256] = "";
    for (int64_t g0 = 0; g0 < n_in; g0 += group) {
        const int64_t gw = g0 + group < n_in ? group : n_in - g0;
        CHECK(matmul_strided(tp, y, w + hearth_row_size((uint32_t)wt, g0), wt, row, x + g0, gw, n_out, 1, s, err,
                             sizeof err) == 0,
              "tall reference: %s", err);
        sink_fixed20(aa, y, (size_t)n_out);
    }
    const struct matmul_in in = {x, NULL, NULL};
    const struct matmul_out o = {.w = w, .wt = wt, .n_out = n_out, .r1 = n_out, .acc = ab, .group = group,
                                 .acc_add = sink_fixed20};
    CHECK(matmul_fused(tp, &in, n_in, 1, &o, 1, s, err, sizeof err) == 0, "tall grouped: %s", err);
    CHECK(memcmp(aa, ab, (size_t)n_out * sizeof(int64_t)) == 0, "tall grouped sums differ from the references");
    free(w), free(x), free(xs), free(y), free(aa), free(ab);
}

static const enum hearth_type types[] = {
    HEARTH_TYPE_Q4_1, HEARTH_TYPE_Q8_0, HEARTH_TYPE_Q4_0, HEARTH_TYPE_Q5_0, HEARTH_TYPE_Q5_1, HEARTH_TYPE_Q4_K,
    HEARTH_TYPE_Q5_K, HEARTH_TYPE_Q6_K, HEARTH_TYPE_F32,  HEARTH_TYPE_F16,  HEARTH_TYPE_BF16,
};

int main(void) {
    unsigned long long seed = 7771;
    const char *env = getenv("HEARTH_TEST_SEED");
    if (env)
        seed = strtoull(env, NULL, 0);
    rng ^= seed * 0x9E3779B97F4A7C15ull;
    if (!rng)
        rng = 1;
    printf("test_matmul: seed %llu, simd %s\n", seed, quant_have_avx2() ? "avx2" : "scalar");

    char err[256];
    struct tpool *pools[3];
    for (int i = 0; i < 3; i++) {
        pools[i] = tpool_create(i + 1, err, sizeof err);
        if (!pools[i]) {
            fprintf(stderr, "tpool_create: %s\n", err);
            return 1;
        }
    }
    struct matmul_scratch s = MATMUL_SCRATCH_INIT;
    static const int64_t n_outs[] = {1, 5, 97, 579};
    static const int64_t n_toks[] = {1, 2, 3, 7, 64};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        enum hearth_type wt = types[k];
        int64_t blck = quant_traits(wt)->blck;
        /* awkward n_in: an odd number of blocks (the two-block loops' tail),
         * or an odd element count for the float types */
        int64_t n_in = blck == 1 ? 67 : blck == 32 ? 32 * 7 : 256 * 3;
        for (size_t a = 0; a < 4; a++)
            for (size_t b = 0; b < 5; b++) {
                /* the biggest shapes with one pool only, to keep the test quick */
                int big = n_outs[a] * n_toks[b] > 5000;
                for (int p = 0; p < 3; p++) {
                    if (big && p != (int)((a + b + k) % 3))
                        continue;
                    check_case(pools[p], &s, wt, n_in, n_outs[a], n_toks[b], 0, n_outs[a]);
                }
            }
        /* a shard of rows */
        check_case(pools[1], &s, wt, n_in, 97, 3, 13, 71);
        check_case(pools[2], &s, wt, n_in, 97, 1, 96, 97);
        check_case(NULL, &s, wt, n_in, 97, 2, 0, 97);
        check_strided(pools[(k % 2) + 1], &s, wt);
        check_batch_invariance(pools[1], &s, wt);
    }

    static const enum hearth_type fused_pairs[][2] = {
        {HEARTH_TYPE_Q4_1, HEARTH_TYPE_Q4_1}, {HEARTH_TYPE_Q4_1, HEARTH_TYPE_Q8_0}, {HEARTH_TYPE_Q4_K, HEARTH_TYPE_Q6_K},
        {HEARTH_TYPE_Q8_0, HEARTH_TYPE_F16},
    };
    static const int64_t fused_toks[] = {1, 5, 9, 40};
    for (size_t k = 0; k < sizeof fused_pairs / sizeof fused_pairs[0]; k++)
        for (size_t b = 0; b < 4; b++)
            check_fused(pools[(k + b) % 3], &s, fused_pairs[k][0], fused_pairs[k][1], fused_toks[b]);

    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++)
        if (quant_traits(types[k])->repack8)
            for (size_t b = 0; b < 4; b++) check_repacked(pools[(k + b) % 3], &s, types[k], fused_toks[b]);

    check_grouped_tall(pools[0], &s);
    check_grouped_tall(pools[1], &s);

    /* errors */
    float x[64] = {0}, y[8];
    uint8_t w[1024] = {0};
    err[0] = 0;
    CHECK(matmul(pools[1], y, w, HEARTH_TYPE_Q4_1, x, 48, 1, 1, &s, err, sizeof err) < 0 && strstr(err, "48"),
          "n_in=48 for Q4_1 must fail: '%s'", err);
    err[0] = 0;
    CHECK(matmul(pools[1], y, w, HEARTH_TYPE_Q2_K, x, 256, 1, 1, &s, err, sizeof err) < 0 && strstr(err, "Q2_K"),
          "Q2_K must fail: '%s'", err);
    err[0] = 0;
    CHECK(matmul(pools[1], y, w, HEARTH_TYPE_Q8_K, x, 256, 1, 1, &s, err, sizeof err) < 0,
          "Q8_K weights must fail: '%s'", err);
    err[0] = 0;
    CHECK(matmul_rows(pools[1], y, w, HEARTH_TYPE_Q8_0, x, 32, 4, 1, 3, 5, &s, err, sizeof err) < 0 &&
              strstr(err, "rows"),
          "rows past n_out must fail: '%s'", err);
    CHECK(matmul(pools[1], y, w, HEARTH_TYPE_Q8_0, x, 32, 4, 0, &s, err, sizeof err) == 0, "n_tok = 0 is a no-op");

    matmul_scratch_free(&s);
    matmul_scratch_free(&s); /* twice is fine */
    for (int i = 0; i < 3; i++)
        tpool_destroy(pools[i]);
    if (failures) {
        printf("test_matmul: %d FAILED (seed %llu)\n", failures, seed);
        return 1;
    }
    printf("test_matmul: ok\n");
    return 0;
}
