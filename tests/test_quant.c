/* test_quant: fp16 conversions, every type's dequantizer against an
 * independent one written here from the format description, quantize ->
 * dequantize round trips, and every vec_dot (fast and reference) against
 * dequantize-then-dot in double.
 *
 * Seed: HEARTH_TEST_SEED or a fixed default; printed either way. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp16.h"
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
static float rng_unif(float lo, float hi) { return lo + (hi - lo) * (float)((rng_u64() >> 40) * 0x1p-24); }
static float rng_normal(void) {
    double u1 = ((rng_u64() >> 11) + 1) * 0x1p-53, u2 = (rng_u64() >> 11) * 0x1p-53;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}
static float rng_sign(void) { return (rng_u64() >> 63) ? -1.0f : 1.0f; }

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

/* ---- independent dequantizers, from the format description ---------------*/

static float h2f(uint16_t h) { return fp16_to_f32_scalar(h); }

static void ind_dequant(enum hearth_type t, const void *src, float *y, int64_t n) {
    const uint8_t *p = src;
    switch (t) {
    case HEARTH_TYPE_F32:
        memcpy(y, src, (size_t)n * 4);
        return;
    case HEARTH_TYPE_F16:
        for (int64_t i = 0; i < n; i++)
            y[i] = h2f(((const uint16_t *)src)[i]);
        return;
    case HEARTH_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)((const uint16_t *)src)[i] << 16;
            memcpy(&y[i], &u, 4);
        }
        return;
    default:
        break;
    }
    for (int64_t b = 0; b < n / hearth_type_blck((uint32_t)t); b++) {
        uint16_t d16, m16;
        memcpy(&d16, p, 2);
        memcpy(&m16, p + 2, 2);
        float d = h2f(d16), m = h2f(m16);
        switch (t) {
        case HEARTH_TYPE_Q4_0: /* d, qs[16] */
            for (int j = 0; j < 16; j++) {
                *y++ = ((p[2 + j] & 15) - 8) * d;
            }
            for (int j = 0; j < 16; j++)
                *y++ = ((p[2 + j] >> 4) - 8) * d;
            p += 18;
            break;
        case HEARTH_TYPE_Q4_1: /* d, m, qs[16] */
            for (int j = 0; j < 32; j++)
                *y++ = (j < 16 ? p[4 + j] & 15 : p[4 + j - 16] >> 4) * d + m;
            p += 20;
            break;
        case HEARTH_TYPE_Q5_0: { /* d, qh[4], qs[16] */
            uint32_t qh = (uint32_t)p[2] | (uint32_t)p[3] << 8 | (uint32_t)p[4] << 16 | (uint32_t)p[5] << 24;
            for (int j = 0; j < 16; j++)
                y[j] = (float)((int)((p[6 + j] & 15) | (((qh >> j) << 4) & 0x10)) - 16) * d;
            for (int j = 0; j < 16; j++)
                y[j + 16] = (float)((int)((p[6 + j] >> 4) | ((qh >> (j + 12)) & 0x10)) - 16) * d;
            y += 32;
            p += 22;
            break;
        }
        case HEARTH_TYPE_Q5_1: { /* d, m, qh[4], qs[16] */
            uint32_t qh = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
            for (int j = 0; j < 16; j++)
                y[j] = (float)((p[8 + j] & 15) | (((qh >> j) << 4) & 0x10)) * d + m;
            for (int j = 0; j < 16; j++)
                y[j + 16] = (float)((p[8 + j] >> 4) | ((qh >> (j + 12)) & 0x10)) * d + m;
            y += 32;
            p += 24;
            break;
        }
        case HEARTH_TYPE_Q8_0:
            for (int j = 0; j < 32; j++)
                *y++ = (int8_t)p[2 + j] * d;
            p += 34;
            break;
        case HEARTH_TYPE_Q8_1:
            for (int j = 0; j < 32; j++)
                *y++ = (int8_t)p[4 + j] * d;
            p += 36;
            break;
        case HEARTH_TYPE_Q4_K:
        case HEARTH_TYPE_Q5_K: {
            /* d, dmin, scales[12], (Q5_K: qh[32]), qs[128] */
            const uint8_t *sc = p + 4;
            const int five = t == HEARTH_TYPE_Q5_K;
            const uint8_t *qh = p + 16;
            const uint8_t *q = p + (five ? 48 : 16);
            for (int c = 0; c < 4; c++) { /* 64 weights: two sub-blocks */
                for (int half = 0; half < 2; half++) {
                    int is = 2 * c + half, s6, m6;
                    if (is < 4) {
                        s6 = sc[is] & 63;
                        m6 = sc[is + 4] & 63;
                    } else {
                        s6 = (sc[is + 4] & 0xF) | ((sc[is - 4] >> 6) << 4);
                        m6 = (sc[is + 4] >> 4) | ((sc[is] >> 6) << 4);
                    }
                    for (int l = 0; l < 32; l++) {
                        int v = half ? q[32 * c + l] >> 4 : q[32 * c + l] & 15;
                        if (five && (qh[l] & (1 << is)))
                            v += 16;
                        *y++ = d * s6 * v - m * m6;
                    }
                }
            }
            p += five ? 176 : 144;
            break;
        }
        case HEARTH_TYPE_Q6_K: { /* ql[128], qh[64], scales[16] (int8), d */
            const uint8_t *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            uint16_t dd;
            memcpy(&dd, p + 208, 2);
            float d6 = h2f(dd);
            for (int h = 0; h < 2; h++) {
                for (int l = 0; l < 32; l++) {
                    int q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                    int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d6 * sc[l / 16] * q1;
                    y[l + 32] = d6 * sc[2 + l / 16] * q2;
                    y[l + 64] = d6 * sc[4 + l / 16] * q3;
                    y[l + 96] = d6 * sc[6 + l / 16] * q4;
                }
                y += 128;
                ql += 64;
                qh += 32;
                sc += 8;
            }
            p += 210;
            break;
        }
        case HEARTH_TYPE_Q8_K: { /* f32 d, qs[256], bsums[16] */
            float dk;
            memcpy(&dk, p, 4);
            for (int j = 0; j < 256; j++)
                *y++ = dk * (int8_t)p[4 + j];
            p += 292;
            break;
        }
        default:
            fprintf(stderr, "ind_dequant: type %d\n", (int)t);
            exit(2);
        }
    }
}

/* ---- random rows ----------------------------------------------------------*/

static void put_h(uint8_t *p, float v) {
    uint16_t h = fp16_from_f32_scalar(v);
    memcpy(p, &h, 2);
}

/* n_rows rows of n elements of type t: random bits with sane scales */
static void *random_rows(enum hearth_type t, int64_t n_rows, int64_t n) {
    size_t row = hearth_row_size((uint32_t)t, n);
    uint8_t *buf = xmalloc(row * (size_t)n_rows);
    if (t == HEARTH_TYPE_F32) {
        float *f = (float *)buf;
        for (int64_t i = 0; i < n * n_rows; i++)
            f[i] = rng_normal();
        return buf;
    }
    if (t == HEARTH_TYPE_F16 || t == HEARTH_TYPE_BF16) {
        uint16_t *h = (uint16_t *)buf;
        for (int64_t i = 0; i < n * n_rows; i++)
            h[i] = t == HEARTH_TYPE_F16 ? fp16_from_f32_scalar(rng_normal()) : bf16_from_f32(rng_normal());
        return buf;
    }
    for (size_t i = 0; i < row * (size_t)n_rows; i++)
        buf[i] = (uint8_t)rng_u64();
    size_t bs = hearth_type_size((uint32_t)t);
    for (uint8_t *b = buf; b < buf + row * (size_t)n_rows; b += bs) {
        switch (t) {
        case HEARTH_TYPE_Q4_0:
        case HEARTH_TYPE_Q5_0:
        case HEARTH_TYPE_Q8_0:
            put_h(b, rng_sign() * rng_unif(0.001f, 0.05f));
            break;
        case HEARTH_TYPE_Q4_1:
        case HEARTH_TYPE_Q5_1:
            put_h(b, rng_unif(0.001f, 0.05f));
            put_h(b + 2, rng_sign() * rng_unif(0.0f, 0.5f));
            break;
        case HEARTH_TYPE_Q4_K:
        case HEARTH_TYPE_Q5_K:
            put_h(b, rng_unif(1e-4f, 1e-3f));
            put_h(b + 2, rng_unif(1e-4f, 1e-3f));
            break;
        case HEARTH_TYPE_Q6_K:
            put_h(b + 208, rng_unif(1e-4f, 1e-3f));
            break;
        case HEARTH_TYPE_Q8_1:
            put_h(b, rng_unif(0.001f, 0.05f));
            break;
        case HEARTH_TYPE_Q8_K: {
            float d = rng_unif(0.001f, 0.05f);
            memcpy(b, &d, 4);
            break;
        }
        default:
            break;
        }
    }
    return buf;
}

static void random_floats(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = rng_normal();
    /* a few outliers, as real activations have */
    for (int64_t i = 0; i < n / 97; i++)
        x[rng_u64() % (uint64_t)n] *= 8;
}

/* ---- fp16 -----------------------------------------------------------------*/

static void test_fp16(void) {
    /* every half: to f32 and back is the identity (NaNs stay NaN) */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fp16_to_f32_scalar((uint16_t)h);
        uint16_t back = fp16_from_f32_scalar(f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            CHECK(isnan(f) && (back & 0x7c00) == 0x7c00 && (back & 0x3ff), "half %04x: NaN lost", h);
        } else {
            CHECK(back == h, "half %04x -> %g -> %04x", h, (double)f, back);
        }
    }
    /* the value of subnormals, independently: mant * 2^-24 */
    CHECK(fp16_to_f32_scalar(0x0001) == ldexpf(1, -24), "smallest subnormal");
    CHECK(fp16_to_f32_scalar(0x03ff) == 1023 * ldexpf(1, -24), "largest subnormal");
    CHECK(fp16_to_f32_scalar(0x8400) == -ldexpf(1, -14), "-smallest normal");
    CHECK(fp16_to_f32_scalar(0x7bff) == 65504.f, "max half");
    CHECK(isinf(fp16_to_f32_scalar(0x7c00)), "inf");
    /* rounding at the edges */
    CHECK(fp16_from_f32_scalar(65519.f) == 0x7bff, "65519 -> max");
    CHECK(fp16_from_f32_scalar(65520.f) == 0x7c00, "65520 -> inf");
    CHECK(fp16_from_f32_scalar(-1e9f) == 0xfc00, "-1e9 -> -inf");
    CHECK(fp16_from_f32_scalar(ldexpf(1, -25)) == 0, "2^-25 ties to even 0");
    CHECK(fp16_from_f32_scalar(ldexpf(3, -26)) == 1, "3*2^-26 -> 2^-24");
    CHECK(fp16_from_f32_scalar(ldexpf(3, -25)) == 2, "3*2^-25 ties to even 2*2^-24");
    CHECK(fp16_from_f32_scalar(1.0f + ldexpf(1, -11)) == 0x3c00, "1+2^-11 ties to even 1");
    CHECK(fp16_from_f32_scalar(1.0f + ldexpf(3, -11)) == 0x3c02, "1+3*2^-11 ties to even");
    CHECK(fp16_from_f32_scalar(ldexpf(1023.5f, -24)) == 0x0400, "rounds up into the normals");
    CHECK(fp16_from_f32_scalar(-0.0f) == 0x8000, "-0");
    /* random floats of all magnitudes: the result is a nearest half */
    for (int i = 0; i < 200000; i++) {
        float f = rng_sign() * ldexpf(rng_unif(1, 2), (int)(rng_u64() % 44) - 30);
        uint16_t h = fp16_from_f32_scalar(f);
        double v = fp16_to_f32_scalar(h);
        if (isinf(v)) {
            CHECK(fabsf(f) >= 65520.f, "%g -> inf", (double)f);
            continue;
        }
        uint16_t up = (uint16_t)(h + 1), dn = (uint16_t)(h - 1);
        double e = fabs(v - f);
        if ((h & 0x7fff) != 0x7bff)
            CHECK(e <= fabs(fp16_to_f32_scalar(up) - f), "%g -> %04x not nearest (up)", (double)f, h);
        if ((h & 0x7fff) != 0)
            CHECK(e <= fabs(fp16_to_f32_scalar(dn) - f), "%g -> %04x not nearest (down)", (double)f, h);
    }
    /* bf16 */
    CHECK(bf16_from_f32(1.0f) == 0x3f80, "bf16 1");
    CHECK(bf16_to_f32(0x3f80) == 1.0f, "bf16 1 back");
    CHECK(bf16_from_f32(1.0f + ldexpf(1, -8)) == 0x3f80, "bf16 tie to even");
    CHECK(bf16_from_f32(1.0f + ldexpf(3, -8)) == 0x3f82, "bf16 tie to even up");
    CHECK(isnan(bf16_to_f32(bf16_from_f32(nanf("")))), "bf16 NaN");
    uint32_t snan_bits = 0x7f800001;
    float snan;
    memcpy(&snan, &snan_bits, 4);
    CHECK(isnan(bf16_to_f32(bf16_from_f32(snan))), "bf16 low-payload NaN stays NaN");
}

/* ---- dequantizers and quantizers -------------------------------------------*/

static const enum hearth_type all_types[] = {
    HEARTH_TYPE_F32,  HEARTH_TYPE_F16,  HEARTH_TYPE_BF16, HEARTH_TYPE_Q4_0, HEARTH_TYPE_Q4_1,
    HEARTH_TYPE_Q5_0, HEARTH_TYPE_Q5_1, HEARTH_TYPE_Q8_0, HEARTH_TYPE_Q8_1, HEARTH_TYPE_Q4_K,
    HEARTH_TYPE_Q5_K, HEARTH_TYPE_Q6_K, HEARTH_TYPE_Q8_K,
};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

static const int64_t sizes_32[] = {32, 96, 256, 288, 2816, 4352};
static const int64_t sizes_256[] = {256, 768, 2816, 4352};
static const int64_t sizes_1[] = {1, 7, 31, 33, 577, 4353};

static const int64_t *sizes_for(enum hearth_type t, int *count) {
    int64_t b = hearth_type_blck((uint32_t)t);
    if (b == 1) {
        *count = 6;
        return sizes_1;
    }
    if (b == 32) {
        *count = 6;
        return sizes_32;
    }
    *count = 4;
    return sizes_256;
}

static void test_to_float(void) {
    for (size_t k = 0; k < N_TYPES; k++) {
        enum hearth_type t = all_types[k];
        const struct quant_traits *tr = quant_traits(t);
        CHECK(tr != NULL, "no traits for type %d", (int)t);
        if (!tr)
            continue;
        CHECK(tr->blck == hearth_type_blck((uint32_t)t) && tr->size == hearth_type_size((uint32_t)t),
              "%s: traits size disagrees with types.c", tr->name);
        int ns;
        const int64_t *sz = sizes_for(t, &ns);
        for (int s = 0; s < ns; s++) {
            int64_t n = sz[s];
            void *row = random_rows(t, 1, n);
            float *a = xmalloc((size_t)n * 4), *b = xmalloc((size_t)n * 4);
            tr->to_float(row, a, n);
            ind_dequant(t, row, b, n);
            int bad = 0;
            for (int64_t i = 0; i < n; i++)
                if (a[i] != b[i] && !(isnan(a[i]) && isnan(b[i])))
                    bad++;
            CHECK(bad == 0, "%s n=%lld: to_float differs from the format in %d places", tr->name, (long long)n,
                  bad);
            free(row);
            free(a);
            free(b);
        }
    }
    CHECK(quant_traits(HEARTH_TYPE_Q2_K) == NULL, "Q2_K should have no traits");
    CHECK(quant_traits((enum hearth_type)4) == NULL, "id 4 should have no traits");
    CHECK(quant_traits((enum hearth_type)999) == NULL, "id 999 should have no traits");
}

/* Round trips on gaussian data: the RMS error relative to the data's RMS is
 * about step/sqrt(12), step = (block's amax)/levels or (block's range)/levels.
 * The bounds below hold for a block whose extreme reaches 3.5 sigma (32
 * elements) or 4 sigma (256), rarer than 2% per block, and a row's RMS
 * averages over its blocks: Q4_0 amax/8 -> 0.126, Q4_1 range 7 sigma /15 ->
 * 0.135, Q5_0 0.063, Q5_1 0.065, Q8 amax/127 -> 0.008 (32) and 0.009 (256),
 * each with ~25% margin; f16 and bf16 keep 2^-11 and 2^-8 relative. The
 * simple K quantizers lose a little more to their 6-bit scales. Every
 * element is also checked against its own block's worst case. */
static void test_round_trip(void) {
    struct {
        enum hearth_type t;
        double rms_bound;
    } cases[] = {
        {HEARTH_TYPE_F32, 0},      {HEARTH_TYPE_F16, 6e-4},   {HEARTH_TYPE_BF16, 4e-3},
        {HEARTH_TYPE_Q4_0, 0.16},  {HEARTH_TYPE_Q4_1, 0.17},  {HEARTH_TYPE_Q5_0, 0.08},
        {HEARTH_TYPE_Q5_1, 0.08},  {HEARTH_TYPE_Q8_0, 0.01},  {HEARTH_TYPE_Q8_1, 0.01},
        {HEARTH_TYPE_Q8_K, 0.012}, {HEARTH_TYPE_Q4_K, 0.2},   {HEARTH_TYPE_Q5_K, 0.1},
        {HEARTH_TYPE_Q6_K, 0.05},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const struct quant_traits *tr = quant_traits(cases[c].t);
        int ns;
        const int64_t *sz = sizes_for(cases[c].t, &ns);
        for (int s = 0; s < ns; s++) {
            int64_t n = sz[s];
            float *x = xmalloc((size_t)n * 4), *y = xmalloc((size_t)n * 4);
            void *q = xmalloc(hearth_row_size((uint32_t)cases[c].t, n));
            for (int64_t i = 0; i < n; i++)
                x[i] = rng_normal();
            for (int pass = 0; pass < 2; pass++) {
                quant_from_float_fn from = pass ? tr->from_float : tr->from_float_ref;
                from(x, q, n);
                tr->to_float(q, y, n);
                double se = 0, sx = 0;
                for (int64_t i = 0; i < n; i++) {
                    se += (double)(x[i] - y[i]) * (x[i] - y[i]);
                    sx += (double)x[i] * x[i];
                }
                double rel = sqrt(se / sx);
                CHECK(rel <= cases[c].rms_bound, "%s n=%lld %s: relative RMS error %.4g > %.4g", tr->name,
                      (long long)n, pass ? "fast" : "ref", rel, cases[c].rms_bound);
                /* per element: at most one step of the block (the 8-bit and
                 * _0 types clamp one end by up to a step; halves add 2^-11) */
                int64_t blck = tr->blck == 1 ? 1 : tr->blck;
                for (int64_t b0 = 0; b0 < n && blck > 1; b0 += blck) {
                    float mn = x[b0], mx = x[b0];
                    for (int64_t i = b0; i < b0 + blck; i++) {
                        mn = fminf(mn, x[i]);
                        mx = fmaxf(mx, x[i]);
                    }
                    float amax = fmaxf(fabsf(mn), fabsf(mx));
                    float step;
                    switch (cases[c].t) {
                    case HEARTH_TYPE_Q4_0: step = amax / 8; break;
                    case HEARTH_TYPE_Q5_0: step = amax / 16; break;
                    case HEARTH_TYPE_Q4_1: step = (mx - mn) / 15; break;
                    case HEARTH_TYPE_Q5_1: step = (mx - mn) / 31; break;
                    case HEARTH_TYPE_Q8_0:
                    case HEARTH_TYPE_Q8_1:
                    case HEARTH_TYPE_Q8_K: step = amax / 127; break;
                    default: step = (mx - mn) / 4; break; /* K types: only a sanity bound */
                    }
                    float bound = step * 1.01f + amax * 0x1p-10f;
                    for (int64_t i = b0; i < b0 + blck; i++)
                        CHECK(fabsf(x[i] - y[i]) <= bound, "%s n=%lld %s: element %lld %g -> %g, bound %g", tr->name,
                              (long long)n, pass ? "fast" : "ref", (long long)i, (double)x[i], (double)y[i],
                              (double)bound);
                }
            }
            free(x);
            free(y);
            free(q);
        }
    }
}

/* The fast activation quantizers against the reference ones: the same scale,
 * the same integers except +-1 where a product lands on a rounding tie, and
 * consistent side sums (Q8_1 s, Q8_K bsums). */
static void test_quantizer_agreement(void) {
    enum hearth_type ts[] = {HEARTH_TYPE_Q8_0, HEARTH_TYPE_Q8_1, HEARTH_TYPE_Q8_K};
    for (size_t k = 0; k < 3; k++) {
        const struct quant_traits *tr = quant_traits(ts[k]);
        int64_t n = 4352;
        float *x = xmalloc((size_t)n * 4);
        random_floats(x, n);
        x[5] = 0; /* an all-zero block too */
        for (int i = 0; i < 32; i++)
            x[32 + i] = 0;
        for (int i = 0; i < 256; i++)
            x[512 + i] = 0;
        size_t bytes = hearth_row_size((uint32_t)ts[k], n);
        uint8_t *a = xmalloc(bytes), *b = xmalloc(bytes);
        tr->from_float_ref(x, a, n);
        tr->from_float(x, b, n);
        int64_t nb = n / tr->blck;
        int qdiff = 0, qbig = 0, dbad = 0, sums_bad = 0;
        for (int64_t i = 0; i < nb; i++) {
            const int8_t *qa, *qb;
            int nq = (int)tr->blck;
            if (ts[k] == HEARTH_TYPE_Q8_0) {
                const block_q8_0 *ba = (const block_q8_0 *)a + i, *bb = (const block_q8_0 *)b + i;
                dbad += ba->d != bb->d;
                qa = ba->qs;
                qb = bb->qs;
            } else if (ts[k] == HEARTH_TYPE_Q8_1) {
                const block_q8_1 *ba = (const block_q8_1 *)a + i, *bb = (const block_q8_1 *)b + i;
                dbad += ba->d != bb->d;
                qa = ba->qs;
                qb = bb->qs;
                for (int pass = 0; pass < 2; pass++) {
                    const block_q8_1 *bl = pass ? bb : ba;
                    int sum = 0;
                    for (int j = 0; j < 32; j++)
                        sum += bl->qs[j];
                    float want = h2f(bl->d) * (float)sum, got = h2f(bl->s);
                    /* s is d*sum rounded once to f16 (d unrounded: 2 roundings) */
                    sums_bad += fabsf(got - want) > fabsf(want) * 2e-3f + 1e-6f;
                }
            } else {
                const block_q8_K *ba = (const block_q8_K *)a + i, *bb = (const block_q8_K *)b + i;
                /* a +/- tie in the extreme may flip the sign of d: compare |d| */
                dbad += fabsf(ba->d) != fabsf(bb->d);
                qa = ba->qs;
                qb = bb->qs;
                for (int pass = 0; pass < 2; pass++) {
                    const block_q8_K *bl = pass ? bb : ba;
                    for (int g = 0; g < 16; g++) {
                        int sum = 0;
                        for (int j = 0; j < 16; j++)
                            sum += bl->qs[16 * g + j];
                        sums_bad += sum != bl->bsums[g];
                    }
                }
            }
            for (int j = 0; j < nq; j++) {
                int dq = abs(qa[j] - qb[j]);
                qdiff += dq != 0;
                qbig += dq > 1;
            }
        }
        CHECK(dbad == 0, "%s: %d block scales differ between fast and ref", tr->name, dbad);
        CHECK(qbig == 0, "%s: %d quants differ by more than 1", tr->name, qbig);
        CHECK(qdiff <= n / 100, "%s: %d quants differ (ties should be rare)", tr->name, qdiff);
        CHECK(sums_bad == 0, "%s: %d block sums inconsistent", tr->name, sums_bad);
        free(x);
        free(a);
        free(b);
    }
}

/* ---- dot products ----------------------------------------------------------*/

static const enum hearth_type weight_types[] = {
    HEARTH_TYPE_F32,  HEARTH_TYPE_F16,  HEARTH_TYPE_BF16, HEARTH_TYPE_Q4_0, HEARTH_TYPE_Q4_1, HEARTH_TYPE_Q5_0,
    HEARTH_TYPE_Q5_1, HEARTH_TYPE_Q8_0, HEARTH_TYPE_Q4_K, HEARTH_TYPE_Q5_K, HEARTH_TYPE_Q6_K,
};

/* Tolerance. Both kernels compute exactly the same products as the double
 * reference (integer parts are exact); they differ only in float rounding:
 * per-block scale products (a few ulps each) and float accumulation over at
 * most n/32 blocks per lane. That is below 1e-5 * sum|w_i x_i| for n <= 4353
 * (n/32 * 2^-24 * a few = 1e-5 at n = 4352), with margin. The *_1 types use
 * the activation block's s = d*sum(q) stored as f16, one rounding of 2^-11
 * relative per block, which the reference (using f16(d)*q) does not have,
 * and s was computed from d before d itself was rounded to f16 (another
 * 2^-11): that adds sum_b |m_b * s_b| * 2^-10. */
static double dot_tolerance(enum hearth_type wt, const void *w, const void *xq, const float *wf, const float *xf,
                            int64_t n) {
    double abs_sum = 0;
    for (int64_t i = 0; i < n; i++)
        abs_sum += fabs((double)wf[i] * xf[i]);
    double tol = 1e-5 * abs_sum + 1e-30;
    if (wt == HEARTH_TYPE_Q4_1 || wt == HEARTH_TYPE_Q5_1) {
        const size_t ws = hearth_type_size((uint32_t)wt);
        for (int64_t b = 0; b < n / 32; b++) {
            uint16_t m;
            memcpy(&m, (const uint8_t *)w + (size_t)b * ws + 2, 2);
            tol += fabs(h2f(m) * h2f(((const block_q8_1 *)xq)[b].s)) * 0x1p-10;
        }
    }
    return tol;
}

static void test_vec_dot(void) {
    for (size_t k = 0; k < sizeof weight_types / sizeof weight_types[0]; k++) {
        enum hearth_type wt = weight_types[k];
        const struct quant_traits *tr = quant_traits(wt);
        const struct quant_traits *xt = quant_traits(tr->vec_dot_type);
        CHECK(tr->vec_dot && tr->vec_dot_ref && xt && xt->from_float, "%s: missing kernels", tr->name);
        int ns;
        const int64_t *sz = sizes_for(wt, &ns);
        for (int s = 0; s < ns; s++) {
            int64_t n = sz[s];
            for (int rep = 0; rep < 3; rep++) {
                void *w = random_rows(wt, 1, n);
                float *x = xmalloc((size_t)n * 4), *wf = xmalloc((size_t)n * 4), *xf = xmalloc((size_t)n * 4);
                random_floats(x, n);
                void *xq = xmalloc(hearth_row_size((uint32_t)xt->type, n));
                xt->from_float_ref(x, xq, n);
                ind_dequant(wt, w, wf, n);
                ind_dequant(xt->type, xq, xf, n);
                double want = 0;
                for (int64_t i = 0; i < n; i++)
                    want += (double)wf[i] * xf[i];
                double tol = dot_tolerance(wt, w, xq, wf, xf, n);
                float got_ref = NAN, got_fast = NAN;
                tr->vec_dot_ref(n, &got_ref, w, xq);
                tr->vec_dot(n, &got_fast, w, xq);
                CHECK(fabs(got_ref - want) <= tol, "%s n=%lld ref: %.9g, want %.9g (tol %.3g)", tr->name,
                      (long long)n, (double)got_ref, want, tol);
                CHECK(fabs(got_fast - want) <= tol, "%s n=%lld fast: %.9g, want %.9g (tol %.3g)", tr->name,
                      (long long)n, (double)got_fast, want, tol);
                CHECK(fabs(got_fast - got_ref) <= 2 * tol, "%s n=%lld fast %.9g vs ref %.9g", tr->name,
                      (long long)n, (double)got_fast, (double)got_ref);
                free(w);
                free(x);
                free(wf);
                free(xf);
                free(xq);
            }
        }
    }
}

/* Extreme values the integer paths must not overflow on: all-max weights and
 * activations of one sign, and the signed extremes. */
static void test_vec_dot_extremes(void) {
    for (size_t k = 0; k < sizeof weight_types / sizeof weight_types[0]; k++) {
        enum hearth_type wt = weight_types[k];
        const struct quant_traits *tr = quant_traits(wt);
        const struct quant_traits *xt = quant_traits(tr->vec_dot_type);
        const int64_t n = tr->blck == 1 ? 67 : tr->blck * 3;
        static const uint8_t fills[4] = {0x00, 0xff, 0x80, 0x7f};
        for (int v = 0; v < 8; v++) {
            void *w = random_rows(wt, 1, n);
            if (tr->blck > 1) {
                /* the quants (not the scales) all 0, all max, or halves */
                size_t bs = tr->size;
                size_t q0 = wt == HEARTH_TYPE_Q4_1 || wt == HEARTH_TYPE_Q5_1                 ? 4
                            : wt == HEARTH_TYPE_Q6_K                                        ? 0
                            : (wt == HEARTH_TYPE_Q4_K || wt == HEARTH_TYPE_Q5_K) ? 16
                                                                                             : 2;
                size_t q1 = wt == HEARTH_TYPE_Q6_K ? 192 : bs;
                for (int64_t b = 0; b < n / tr->blck; b++)
                    memset((uint8_t *)w + (size_t)b * bs + q0, fills[v % 4], q1 - q0);
            }
            float *x = xmalloc((size_t)n * 4), *wf = xmalloc((size_t)n * 4), *xf = xmalloc((size_t)n * 4);
            for (int64_t i = 0; i < n; i++)
                x[i] = v & 4 ? -1.0f : 1.0f;
            void *xq = xmalloc(hearth_row_size((uint32_t)xt->type, n));
            xt->from_float_ref(x, xq, n);
            ind_dequant(wt, w, wf, n);
            ind_dequant(xt->type, xq, xf, n);
            double want = 0;
            for (int64_t i = 0; i < n; i++)
                want += (double)wf[i] * xf[i];
            double tol = dot_tolerance(wt, w, xq, wf, xf, n);
            float got_ref, got_fast;
            tr->vec_dot_ref(n, &got_ref, w, xq);
            tr->vec_dot(n, &got_fast, w, xq);
            CHECK(fabs(got_ref - want) <= tol && fabs(got_fast - want) <= tol,
                  "%s extremes %d: ref %.9g fast %.9g want %.9g", tr->name, v, (double)got_ref, (double)got_fast,
                  want);
            free(w);
            free(x);
            free(wf);
            free(xf);
            free(xq);
        }
    }
}

/* The 8-row interleaved layout: unpack8(repack8(rows)) gives the rows back
 * byte for byte; vec_dot8 over 1..4 tokens equals vec_dot on each row and
 * token bit for bit (the property that lets any process repack any rows),
 * and vec_dot4 equals vec_dot too; both within the reference's tolerance
 * through test_vec_dot. Awkward sizes: 1, 3, 7, 18 and 49 blocks. */
static void test_interleaved(void) {
    static const int64_t blocks[] = {1, 3, 7, 18, 49};
    for (size_t k = 0; k < sizeof weight_types / sizeof weight_types[0]; k++) {
        enum hearth_type wt = weight_types[k];
        const struct quant_traits *tr = quant_traits(wt);
        const struct quant_traits *xt = quant_traits(tr->vec_dot_type);
        if (!tr->repack8)
            continue;
        CHECK(tr->unpack8 && tr->vec_dot8, "%s: repack8 without unpack8/vec_dot8", tr->name);
        for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++) {
            const int64_t n = blocks[b] * tr->blck;
            const size_t row = hearth_row_size((uint32_t)wt, n), xrow = hearth_row_size((uint32_t)xt->type, n);
            uint8_t *w = random_rows(wt, 8, n), *w8 = xmalloc(8 * row), *back = xmalloc(row);
            tr->repack8(w, row, w8, n);
            for (int r = 0; r < 8; r++) {
                tr->unpack8(w8, r, back, n);
                CHECK(memcmp(back, w + (size_t)r * row, row) == 0, "%s n=%lld: row %d does not survive repack8/unpack8",
                      tr->name, (long long)n, r);
            }
            uint8_t *xq = xmalloc(4 * xrow);
            float *x = xmalloc((size_t)n * 4);
            for (int j = 0; j < 4; j++) {
                random_floats(x, n);
                xt->from_float(x, xq + (size_t)j * xrow, n);
            }
            float one[4][8], eight[4][8], four[8][4];
            for (int r = 0; r < 8; r++)
                for (int j = 0; j < 4; j++) tr->vec_dot(n, &one[j][r], w + (size_t)r * row, xq + (size_t)j * xrow);
            for (int ntok = 1; ntok <= 4; ntok++) {
                for (int j = 0; j < 4; j++)
                    for (int r = 0; r < 8; r++) eight[j][r] = NAN;
                tr->vec_dot8(n, &eight[0][0], 8, w8, xq, xrow, ntok);
                for (int j = 0; j < 4; j++)
                    for (int r = 0; r < 8; r++)
                        CHECK(j < ntok ? memcmp(&eight[j][r], &one[j][r], sizeof(float)) == 0 : isnan(eight[j][r]),
                              "%s n=%lld ntok=%d: vec_dot8 row %d token %d = %.9g, vec_dot %.9g", tr->name,
                              (long long)n, ntok, r, j, (double)eight[j][r], (double)one[j][r]);
            }
            if (tr->vec_dot4)
                for (int r = 0; r < 8; r++) {
                    tr->vec_dot4(n, four[r], 1, w + (size_t)r * row, xq, xrow);
                    for (int j = 0; j < 4; j++)
                        CHECK(memcmp(&four[r][j], &one[j][r], sizeof(float)) == 0,
                              "%s n=%lld: vec_dot4 row %d token %d = %.9g, vec_dot %.9g", tr->name, (long long)n, r,
                              j, (double)four[r][j], (double)one[j][r]);
                }
            free(w), free(w8), free(back), free(xq), free(x);
        }
    }
}

static void test_row_helpers(void) {
    char err[256] = "";
    float x[64] = {0}, y[64];
    uint8_t q[64 * 4];
    CHECK(quant_quantize_row(HEARTH_TYPE_Q4_0, x, q, 33, err, sizeof err) < 0 && strstr(err, "multiple"),
          "33 elements of Q4_0 must be refused: '%s'", err);
    err[0] = 0;
    CHECK(quant_dequantize_row(HEARTH_TYPE_Q2_K, q, y, 256, err, sizeof err) < 0 && strstr(err, "Q2_K"),
          "Q2_K must be refused: '%s'", err);
    CHECK(quant_quantize_row(HEARTH_TYPE_Q8_0, x, q, 64, err, sizeof err) == 0, "Q8_0 quantize: %s", err);
    CHECK(quant_dequantize_row(HEARTH_TYPE_Q8_0, q, y, 64, err, sizeof err) == 0 && y[3] == 0,
          "Q8_0 dequantize: %s", err);
}

int main(void) {
    unsigned long long seed = 20240611;
    const char *env = getenv("HEARTH_TEST_SEED");
    if (env)
        seed = strtoull(env, NULL, 0);
    rng ^= seed * 0x9E3779B97F4A7C15ull;
    if (!rng)
        rng = 1;
    printf("test_quant: seed %llu, simd %s\n", seed, quant_have_avx2() ? "avx2" : "scalar");
    test_fp16();
    test_to_float();
    test_round_trip();
    test_quantizer_agreement();
    test_vec_dot();
    test_vec_dot_extremes();
    test_interleaved();
    test_row_helpers();
    if (failures) {
        printf("test_quant: %d FAILED (seed %llu)\n", failures, seed);
        return 1;
    }
    printf("test_quant: ok\n");
    return 0;
}
