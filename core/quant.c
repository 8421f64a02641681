/* quant: scalar reference kernels and the type-traits table.
 *
 * Everything here is plain C and is the definition of correct: the AVX2
 * kernels in quant_avx2.c are tested against these. Quantizers round to
 * nearest as ggml's *_ref quantizers do, so rows we quantize match files
 * written by llama.cpp's tools bit for bit (up to ties). */
#include "quant.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp16.h"

#if defined(HEARTH_HAVE_AVX2_BUILD)
#include <cpuid.h>
#endif

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* round to nearest, ties away from zero, as roundf; |v| is small here */
static inline int round_int(float v) { return (int)roundf(v); }

/* ---- F32 / F16 / BF16 ---------------------------------------------------- */

static void f32_to_float(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}
static void f32_from_float(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}
static void f16_to_float(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = fp16_to_f32(h[i]);
}
static void f16_from_float(const float *src, void *dst, int64_t n) {
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++)
        h[i] = fp16_from_f32(src[i]);
}
static void bf16_to_float(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = bf16_to_f32(h[i]);
}
static void bf16_from_float(const float *src, void *dst, int64_t n) {
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++)
        h[i] = bf16_from_f32(src[i]);
}

/* Float dots accumulate in double: the reference should not be the thing
 * that loses precision on long rows. */
static void vec_dot_f32_ref(int64_t n, float *s, const void *w, const void *x) {
    const float *a = w, *b = x;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)a[i] * b[i];
    *s = (float)sum;
}
static void vec_dot_f16_ref(int64_t n, float *s, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)fp16_to_f32(a[i]) * b[i];
    *s = (float)sum;
}
static void vec_dot_bf16_ref(int64_t n, float *s, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)bf16_to_f32(a[i]) * b[i];
    *s = (float)sum;
}

/* ---- 32-element blocks: dequantize --------------------------------------- */

static void q4_0_to_float(const void *src, float *dst, int64_t n) {
    const block_q4_0 *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++, dst += QK4_0) {
        float d = fp16_to_f32(b[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            dst[j] = (float)((b[i].qs[j] & 0xf) - 8) * d;
            dst[j + 16] = (float)((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void q4_1_to_float(const void *src, float *dst, int64_t n) {
    const block_q4_1 *b = src;
    for (int64_t i = 0; i < n / QK4_1; i++, dst += QK4_1) {
        float d = fp16_to_f32(b[i].d), m = fp16_to_f32(b[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            dst[j] = (float)(b[i].qs[j] & 0xf) * d + m;
            dst[j + 16] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

/* the 5-bit value of element j (0..31) of a Q5 block */
static inline int q5_value(const uint8_t *qs, uint32_t qh, int j) {
    int lo = j < 16 ? (qs[j] & 0xf) : (qs[j - 16] >> 4);
    return lo | (int)((qh >> j) & 1u) << 4;
}

static void q5_0_to_float(const void *src, float *dst, int64_t n) {
    const block_q5_0 *b = src;
    for (int64_t i = 0; i < n / QK5_0; i++, dst += QK5_0) {
        float d = fp16_to_f32(b[i].d);
        uint32_t qh;
        memcpy(&qh, b[i].qh, 4);
        for (int j = 0; j < QK5_0; j++)
            dst[j] = (float)(q5_value(b[i].qs, qh, j) - 16) * d;
    }
}

static void q5_1_to_float(const void *src, float *dst, int64_t n) {
    const block_q5_1 *b = src;
    for (int64_t i = 0; i < n / QK5_1; i++, dst += QK5_1) {
        float d = fp16_to_f32(b[i].d), m = fp16_to_f32(b[i].m);
        uint32_t qh;
        memcpy(&qh, b[i].qh, 4);
        for (int j = 0; j < QK5_1; j++)
            dst[j] = (float)q5_value(b[i].qs, qh, j) * d + m;
    }
}

static void q8_0_to_float(const void *src, float *dst, int64_t n) {
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++, dst += QK8_0) {
        float d = fp16_to_f32(b[i].d);
        for (int j = 0; j < QK8_0; j++)
            dst[j] = (float)b[i].qs[j] * d;
    }
}

static void q8_1_to_float(const void *src, float *dst, int64_t n) {
    const block_q8_1 *b = src;
    for (int64_t i = 0; i < n / QK8_1; i++, dst += QK8_1) {
        float d = fp16_to_f32(b[i].d);
        for (int j = 0; j < QK8_1; j++)
            dst[j] = (float)b[i].qs[j] * d;
    }
}

/* ---- 32-element blocks: quantize (ggml's round-to-nearest _ref rules) ---- */

/* the element of largest magnitude, with its sign (first one on ties) */
static float signed_absmax(const float *x, int n) {
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void q4_0_from_float(const float *x, void *dst, int64_t n) {
    block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, x += QK4_0) {
        /* the extreme maps to q = 0 (value -8d), the full range of 16 levels */
        float d = signed_absmax(x, QK4_0) / -8;
        float id = d != 0 ? 1.0f / d : 0.0f;
        b[i].d = fp16_from_f32(d);
        for (int j = 0; j < 16; j++) {
            int q0 = MIN(15, (int)(x[j] * id + 8.5f));
            int q1 = MIN(15, (int)(x[j + 16] * id + 8.5f));
            b[i].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

static void minmax(const float *x, int n, float *mn, float *mx) {
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        lo = MIN(lo, x[j]);
        hi = MAX(hi, x[j]);
    }
    *mn = lo;
    *mx = hi;
}

static void q4_1_from_float(const float *x, void *dst, int64_t n) {
    block_q4_1 *b = dst;
    for (int64_t i = 0; i < n / QK4_1; i++, x += QK4_1) {
        float mn, mx;
        minmax(x, QK4_1, &mn, &mx);
        float d = (mx - mn) / 15;
        float id = d != 0 ? 1.0f / d : 0.0f;
        b[i].d = fp16_from_f32(d);
        b[i].m = fp16_from_f32(mn);
        for (int j = 0; j < 16; j++) {
            int q0 = MIN(15, (int)((x[j] - mn) * id + 0.5f));
            int q1 = MIN(15, (int)((x[j + 16] - mn) * id + 0.5f));
            b[i].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

static void q5_pack(const int *q, uint8_t *qs, uint8_t qh_out[4]) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((q[j] & 0xf) | (q[j + 16] & 0xf) << 4);
    for (int j = 0; j < 32; j++)
        qh |= (uint32_t)((q[j] >> 4) & 1) << j;
    memcpy(qh_out, &qh, 4);
}

static void q5_0_from_float(const float *x, void *dst, int64_t n) {
    block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / QK5_0; i++, x += QK5_0) {
        float d = signed_absmax(x, QK5_0) / -16;
        float id = d != 0 ? 1.0f / d : 0.0f;
        int q[32];
        for (int j = 0; j < 32; j++)
            q[j] = MIN(31, (int)(x[j] * id + 16.5f));
        b[i].d = fp16_from_f32(d);
        q5_pack(q, b[i].qs, b[i].qh);
    }
}

static void q5_1_from_float(const float *x, void *dst, int64_t n) {
    block_q5_1 *b = dst;
    for (int64_t i = 0; i < n / QK5_1; i++, x += QK5_1) {
        float mn, mx;
        minmax(x, QK5_1, &mn, &mx);
        float d = (mx - mn) / 31;
        float id = d != 0 ? 1.0f / d : 0.0f;
        int q[32];
        for (int j = 0; j < 32; j++)
            q[j] = MIN(31, (int)((x[j] - mn) * id + 0.5f));
        b[i].d = fp16_from_f32(d);
        b[i].m = fp16_from_f32(mn);
        q5_pack(q, b[i].qs, b[i].qh);
    }
}

static void q8_0_from_float(const float *x, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        float amax = 0;
        for (int j = 0; j < QK8_0; j++)
            amax = MAX(amax, fabsf(x[j]));
        float d = amax / 127;
        float id = d != 0 ? 1.0f / d : 0.0f;
        b[i].d = fp16_from_f32(d);
        for (int j = 0; j < QK8_0; j++)
            b[i].qs[j] = (int8_t)round_int(x[j] * id);
    }
}

static void q8_1_from_float(const float *x, void *dst, int64_t n) {
    block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / QK8_1; i++, x += QK8_1) {
        float amax = 0;
        for (int j = 0; j < QK8_1; j++)
            amax = MAX(amax, fabsf(x[j]));
        float d = amax / 127;
        float id = d != 0 ? 1.0f / d : 0.0f;
        int sum = 0;
        b[i].d = fp16_from_f32(d);
        for (int j = 0; j < QK8_1; j++) {
            b[i].qs[j] = (int8_t)round_int(x[j] * id);
            sum += b[i].qs[j];
        }
        b[i].s = fp16_from_f32((float)sum * d);
    }
}

/* ---- 32-element blocks: dot products --------------------------------------*/

static void vec_dot_q4_0_q8_0_ref(int64_t n, float *s, const void *w, const void *x) {
    const block_q4_0 *a = w;
    const block_q8_0 *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            sumi += ((a[i].qs[j] & 0xf) - 8) * b[i].qs[j];
            sumi += ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + 16];
        }
        sum += (float)sumi * fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d);
    }
    *s = sum;
}

/* sum_j (q_j d + m) x_j d_x = d d_x sum_j q_j x_j + m (d_x sum_j x_j) = ... + m s */
static void vec_dot_q4_1_q8_1_ref(int64_t n, float *s, const void *w, const void *x) {
    const block_q4_1 *a = w;
    const block_q8_1 *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            sumi += (a[i].qs[j] & 0xf) * b[i].qs[j];
            sumi += (a[i].qs[j] >> 4) * b[i].qs[j + 16];
        }
        sum += (float)sumi * fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d) +
               fp16_to_f32(a[i].m) * fp16_to_f32(b[i].s);
    }
    *s = sum;
}

static void vec_dot_q5_0_q8_0_ref(int64_t n, float *s, const void *w, const void *x) {
    const block_q5_0 *a = w;
    const block_q8_0 *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n / QK5_0; i++) {
        uint32_t qh;
        memcpy(&qh, a[i].qh, 4);
        int sumi = 0;
        for (int j = 0; j < 32; j++)
            sumi += (q5_value(a[i].qs, qh, j) - 16) * b[i].qs[j];
        sum += (float)sumi * fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d);
    }
    *s = sum;
}

static void vec_dot_q5_1_q8_1_ref(int64_t n, float *s, const void *w, const void *x) {
    const block_q5_1 *a = w;
    const block_q8_1 *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        uint32_t qh;
        memcpy(&qh, a[i].qh, 4);
        int sumi = 0;
        for (int j = 0; j < 32; j++)
            sumi += q5_value(a[i].qs, qh, j) * b[i].qs[j];
        sum += (float)sumi * fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d) +
               fp16_to_f32(a[i].m) * fp16_to_f32(b[i].s);
    }
    *s = sum;
}

static void vec_dot_q8_0_q8_0_ref(int64_t n, float *s, const void *w, const void *x) {
    const block_q8_0 *a = w;
    const block_q8_0 *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int sumi = 0;
        for (int j = 0; j < 32; j++)
            sumi += a[i].qs[j] * b[i].qs[j];
        sum += (float)sumi * fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d);
    }
    *s = sum;
}

/* ---- K types ---------------------------------------------------------------*/

/* 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes. */
static inline void k_scale_min(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xf) | (q[j - 4] >> 6) << 4;
        *m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
    }
}

/* q of element e (0..255) of a Q4_K / Q5_K block, without the fifth bit */
static inline int k4_nibble(const uint8_t *qs, int e) {
    int chunk = e / 64, l = e % 32;
    return (e % 64) < 32 ? (qs[32 * chunk + l] & 0xf) : (qs[32 * chunk + l] >> 4);
}

static void q4_K_to_float(const void *src, float *dst, int64_t n) {
    const block_q4_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        float d = fp16_to_f32(b[i].d), dmin = fp16_to_f32(b[i].dmin);
        for (int sb = 0; sb < 8; sb++) {
            int sc, m;
            k_scale_min(sb, b[i].scales, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                dst[32 * sb + l] = d1 * (float)k4_nibble(b[i].qs, 32 * sb + l) - m1;
        }
    }
}

static inline int k5_value(const block_q5_K *b, int e) {
    int sb = e / 32, l = e % 32;
    return k4_nibble(b->qs, e) | ((b->qh[l] >> sb) & 1) << 4;
}

static void q5_K_to_float(const void *src, float *dst, int64_t n) {
    const block_q5_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        float d = fp16_to_f32(b[i].d), dmin = fp16_to_f32(b[i].dmin);
        for (int sb = 0; sb < 8; sb++) {
            int sc, m;
            k_scale_min(sb, b[i].scales, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                dst[32 * sb + l] = d1 * (float)k5_value(&b[i], 32 * sb + l) - m1;
        }
    }
}

/* q - 32 of element e (0..255) of a Q6_K block */
static inline int k6_value(const block_q6_K *b, int e) {
    int h = e / 128, k = (e % 128) / 32, l = e % 32;
    uint8_t lo = b->ql[64 * h + l + 32 * (k & 1)];
    int q = (k < 2 ? lo & 0xf : lo >> 4) | ((b->qh[32 * h + l] >> (2 * k)) & 3) << 4;
    return q - 32;
}

static void q6_K_to_float(const void *src, float *dst, int64_t n) {
    const block_q6_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        float d = fp16_to_f32(b[i].d);
        for (int e = 0; e < QK_K; e++)
            dst[e] = d * (float)b[i].scales[e / 16] * (float)k6_value(&b[i], e);
    }
}

static void q8_K_to_float(const void *src, float *dst, int64_t n) {
    const block_q8_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K)
        for (int e = 0; e < QK_K; e++)
            dst[e] = b[i].d * (float)b[i].qs[e];
}

static void q8_K_from_float(const float *x, void *dst, int64_t n) {
    block_q8_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float max = signed_absmax(x, QK_K);
        if (max == 0) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        /* the extreme maps to -127 so that the range stays symmetric */
        float iscale = -127.f / max;
        for (int e = 0; e < QK_K; e++)
            b[i].qs[e] = (int8_t)MIN(127, (int)lrintf(iscale * x[e]));
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int l = 0; l < 16; l++)
                sum += b[i].qs[16 * g + l];
            b[i].bsums[g] = (int16_t)sum;
        }
        b[i].d = 1 / iscale;
    }
}

/* Simple (not error-minimising) K quantizers: per sub-block min/max, then the
 * sub-block scales and mins themselves quantized to 6 bits against the block's
 * largest. Good enough for tests and for writing small fixtures. */
static void k_pack_scales(const int *sc, const int *m, uint8_t *q) {
    for (int j = 0; j < 4; j++) {
        q[j] = (uint8_t)(sc[j] & 63);
        q[j + 4] = (uint8_t)(m[j] & 63);
    }
    for (int j = 4; j < 8; j++) {
        q[j + 4] = (uint8_t)((sc[j] & 0xf) | (m[j] & 0xf) << 4);
        q[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
        q[j] |= (uint8_t)((m[j] >> 4) << 6);
    }
}

/* fills sc/m (6-bit), d and dmin for one 256 block; nmax = 15 or 31 */
static void k_block_scales(const float *x, int nmax, int *sc, int *m, float *d_out, float *dmin_out) {
    float scale[8], mins[8], max_scale = 0, max_min = 0;
    for (int sb = 0; sb < 8; sb++) {
        float mn, mx;
        minmax(x + 32 * sb, 32, &mn, &mx);
        mn = MIN(mn, 0.0f); /* x = d q - m with m >= 0 */
        scale[sb] = (mx - mn) / (float)nmax;
        mins[sb] = -mn;
        max_scale = MAX(max_scale, scale[sb]);
        max_min = MAX(max_min, mins[sb]);
    }
    float d = max_scale / 63, dmin = max_min / 63;
    for (int sb = 0; sb < 8; sb++) {
        sc[sb] = d > 0 ? MIN(63, round_int(scale[sb] / d)) : 0;
        /* round the min up so the reconstructed range still covers x */
        m[sb] = dmin > 0 ? MIN(63, (int)ceilf(mins[sb] / dmin)) : 0;
    }
    *d_out = d;
    *dmin_out = dmin;
}

static void k_quants(const float *x, int nmax, int sc, int m, float d, float dmin, int *q) {
    float d1 = d * (float)sc, m1 = dmin * (float)m;
    for (int l = 0; l < 32; l++) {
        int v = d1 > 0 ? round_int((x[l] + m1) / d1) : 0;
        q[l] = MAX(0, MIN(nmax, v));
    }
}

static void q4_K_from_float(const float *x, void *dst, int64_t n) {
    block_q4_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        int sc[8], m[8], q[256];
        float d, dmin;
        k_block_scales(x, 15, sc, m, &d, &dmin);
        b[i].d = fp16_from_f32(d);
        b[i].dmin = fp16_from_f32(dmin);
        /* quantize against the scales as stored (f16-rounded) */
        d = fp16_to_f32(b[i].d);
        dmin = fp16_to_f32(b[i].dmin);
        for (int sb = 0; sb < 8; sb++)
            k_quants(x + 32 * sb, 15, sc[sb], m[sb], d, dmin, q + 32 * sb);
        memset(b[i].scales, 0, sizeof b[i].scales);
        k_pack_scales(sc, m, b[i].scales);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b[i].qs[32 * c + l] = (uint8_t)(q[64 * c + l] | q[64 * c + 32 + l] << 4);
    }
}

static void q5_K_from_float(const float *x, void *dst, int64_t n) {
    block_q5_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        int sc[8], m[8], q[256];
        float d, dmin;
        k_block_scales(x, 31, sc, m, &d, &dmin);
        b[i].d = fp16_from_f32(d);
        b[i].dmin = fp16_from_f32(dmin);
        d = fp16_to_f32(b[i].d);
        dmin = fp16_to_f32(b[i].dmin);
        for (int sb = 0; sb < 8; sb++)
            k_quants(x + 32 * sb, 31, sc[sb], m[sb], d, dmin, q + 32 * sb);
        memset(b[i].scales, 0, sizeof b[i].scales);
        k_pack_scales(sc, m, b[i].scales);
        memset(b[i].qh, 0, sizeof b[i].qh);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
                b[i].qs[32 * c + l] = (uint8_t)((lo & 0xf) | (hi & 0xf) << 4);
                b[i].qh[l] |= (uint8_t)(((lo >> 4) & 1) << (2 * c) | ((hi >> 4) & 1) << (2 * c + 1));
            }
    }
}

static void q6_K_from_float(const float *x, void *dst, int64_t n) {
    block_q6_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        /* per group of 16: scale = signed extreme / -32 (q - 32 in -32..31);
         * group scales as int8 against the block's signed extreme scale */
        float gscale[16], max_scale = 0, amax_scale = 0;
        for (int g = 0; g < 16; g++) {
            gscale[g] = signed_absmax(x + 16 * g, 16) / -32;
            if (fabsf(gscale[g]) > amax_scale) {
                amax_scale = fabsf(gscale[g]);
                max_scale = gscale[g];
            }
        }
        memset(&b[i], 0, sizeof b[i]);
        if (max_scale == 0)
            continue;
        float iscale = -128.f / max_scale;
        for (int g = 0; g < 16; g++)
            b[i].scales[g] = (int8_t)MIN(127, round_int(iscale * gscale[g]));
        b[i].d = fp16_from_f32(1 / iscale);
        float d = fp16_to_f32(b[i].d);
        for (int e = 0; e < QK_K; e++) {
            float dg = d * (float)b[i].scales[e / 16];
            int q = dg != 0 ? round_int(x[e] / dg) : 0;
            q = MAX(-32, MIN(31, q)) + 32;
            int h = e / 128, k = (e % 128) / 32, l = e % 32;
            uint8_t *lo = &b[i].ql[64 * h + l + 32 * (k & 1)];
            *lo |= (uint8_t)(k < 2 ? (q & 0xf) : (q & 0xf) << 4);
            b[i].qh[32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
        }
    }
}

/* sum over the block of w*x = d_x (d sum_sb sc_sb sum_l q x - dmin sum_sb m_sb sum_l x) */
static void vec_dot_q4_K_q8_K_ref(int64_t n, float *s, const void *w, const void *x) {
    const block_q4_K *a = w;
    const block_q8_K *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sumi = 0, summ = 0;
        for (int sb = 0; sb < 8; sb++) {
            int sc, m, dot = 0;
            k_scale_min(sb, a[i].scales, &sc, &m);
            for (int l = 0; l < 32; l++)
                dot += k4_nibble(a[i].qs, 32 * sb + l) * b[i].qs[32 * sb + l];
            sumi += sc * dot;
            summ += m * (b[i].bsums[2 * sb] + b[i].bsums[2 * sb + 1]);
        }
        sum += b[i].d * (fp16_to_f32(a[i].d) * (float)sumi - fp16_to_f32(a[i].dmin) * (float)summ);
    }
    *s = sum;
}

static void vec_dot_q5_K_q8_K_ref(int64_t n, float *s, const void *w, const void *x) {
    const block_q5_K *a = w;
    const block_q8_K *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sumi = 0, summ = 0;
        for (int sb = 0; sb < 8; sb++) {
            int sc, m, dot = 0;
            k_scale_min(sb, a[i].scales, &sc, &m);
            for (int l = 0; l < 32; l++)
                dot += k5_value(&a[i], 32 * sb + l) * b[i].qs[32 * sb + l];
            sumi += sc * dot;
            summ += m * (b[i].bsums[2 * sb] + b[i].bsums[2 * sb + 1]);
        }
        sum += b[i].d * (fp16_to_f32(a[i].d) * (float)sumi - fp16_to_f32(a[i].dmin) * (float)summ);
    }
    *s = sum;
}

static void vec_dot_q6_K_q8_K_ref(int64_t n, float *s, const void *w, const void *x) {
    const block_q6_K *a = w;
    const block_q8_K *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sumi = 0;
        for (int g = 0; g < 16; g++) {
            int dot = 0;
            for (int l = 0; l < 16; l++)
                dot += k6_value(&a[i], 16 * g + l) * b[i].qs[16 * g + l];
            sumi += a[i].scales[g] * dot;
        }
        sum += fp16_to_f32(a[i].d) * b[i].d * (float)sumi;
    }
    *s = sum;
}

/* ---- 8-row interleaved layouts ---------------------------------------------*/

static struct quant_traits table[HEARTH_TYPE_COUNT]; /* defined below */

static void q4_1_repack8(const void *src, size_t src_stride, void *dst, int64_t n) {
    block_q4_1x8 *o = dst;
    for (int r = 0; r < 8; r++) {
        const block_q4_1 *a = (const block_q4_1 *)((const char *)src + (size_t)r * src_stride);
        const int slot = 2 * (r % 4) + r / 4;
        for (int64_t i = 0; i < n / QK4_1; i++) {
            o[i].d[r] = a[i].d;
            o[i].m[r] = a[i].m;
            memcpy(o[i].qs[slot], a[i].qs, sizeof a[i].qs);
        }
    }
}

static void q4_1_unpack8(const void *w8, int r, void *dst, int64_t n) {
    const block_q4_1x8 *g = w8;
    block_q4_1 *a = dst;
    const int slot = 2 * (r % 4) + r / 4;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        a[i].d = g[i].d[r];
        a[i].m = g[i].m[r];
        memcpy(a[i].qs, g[i].qs[slot], sizeof a[i].qs);
    }
}

/* Without SIMD (or as the reference of the SIMD kernel): each row unpacked
 * and dotted by the table's vec_dot, so equal to it by construction. */
static void vec_dot8_generic(enum hearth_type type, int64_t n, float *s, size_t s_stride, const void *w8,
                             const void *x, size_t x_stride, int ntok) {
    const struct quant_traits *t = &table[type];
    _Alignas(64) uint8_t row[QUANT_ROW8_MAX_BYTES];
    for (int r = 0; r < 8; r++) {
        t->unpack8(w8, r, row, n);
        for (int j = 0; j < ntok; j++) t->vec_dot(n, &s[(size_t)j * s_stride + (size_t)r], row, (const char *)x + (size_t)j * x_stride);
    }
}

static void vec_dot8_q4_1_generic(int64_t n, float *s, size_t s_stride, const void *w8, const void *x,
                                  size_t x_stride, int ntok) {
    vec_dot8_generic(HEARTH_TYPE_Q4_1, n, s, s_stride, w8, x, x_stride, ntok);
}

/* ---- the table ------------------------------------------------------------*/

#define ENTRY(T, NAME, BLCK, SIZE, TOF, FROMF, VDT, VD)                                          \
    [HEARTH_TYPE_##T] = {.type = HEARTH_TYPE_##T, .name = NAME, .blck = BLCK, .size = SIZE,      \
                         .to_float = TOF, .from_float = FROMF, .from_float_ref = FROMF,          \
                         .vec_dot_type = HEARTH_TYPE_##VDT, .vec_dot = VD, .vec_dot_ref = VD}

static struct quant_traits table[HEARTH_TYPE_COUNT] = {
    ENTRY(F32, "F32", 1, 4, f32_to_float, f32_from_float, F32, vec_dot_f32_ref),
    ENTRY(F16, "F16", 1, 2, f16_to_float, f16_from_float, F32, vec_dot_f16_ref),
    ENTRY(BF16, "BF16", 1, 2, bf16_to_float, bf16_from_float, F32, vec_dot_bf16_ref),
    ENTRY(Q4_0, "Q4_0", QK4_0, sizeof(block_q4_0), q4_0_to_float, q4_0_from_float, Q8_0,
          vec_dot_q4_0_q8_0_ref),
    [HEARTH_TYPE_Q4_1] = {.type = HEARTH_TYPE_Q4_1, .name = "Q4_1", .blck = QK4_1, .size = sizeof(block_q4_1),
                          .to_float = q4_1_to_float, .from_float = q4_1_from_float,
                          .from_float_ref = q4_1_from_float, .vec_dot_type = HEARTH_TYPE_Q8_1,
                          .vec_dot = vec_dot_q4_1_q8_1_ref, .vec_dot_ref = vec_dot_q4_1_q8_1_ref,
                          .repack8 = q4_1_repack8, .unpack8 = q4_1_unpack8, .vec_dot8 = vec_dot8_q4_1_generic},
    ENTRY(Q5_0, "Q5_0", QK5_0, sizeof(block_q5_0), q5_0_to_float, q5_0_from_float, Q8_0,
          vec_dot_q5_0_q8_0_ref),
    ENTRY(Q5_1, "Q5_1", QK5_1, sizeof(block_q5_1), q5_1_to_float, q5_1_from_float, Q8_1,
          vec_dot_q5_1_q8_1_ref),
    ENTRY(Q8_0, "Q8_0", QK8_0, sizeof(block_q8_0), q8_0_to_float, q8_0_from_float, Q8_0,
          vec_dot_q8_0_q8_0_ref),
    ENTRY(Q8_1, "Q8_1", QK8_1, sizeof(block_q8_1), q8_1_to_float, q8_1_from_float, Q8_1, NULL),
    ENTRY(Q4_K, "Q4_K", QK_K, sizeof(block_q4_K), q4_K_to_float, q4_K_from_float, Q8_K,
          vec_dot_q4_K_q8_K_ref),
    ENTRY(Q5_K, "Q5_K", QK_K, sizeof(block_q5_K), q5_K_to_float, q5_K_from_float, Q8_K,
          vec_dot_q5_K_q8_K_ref),
    ENTRY(Q6_K, "Q6_K", QK_K, sizeof(block_q6_K), q6_K_to_float, q6_K_from_float, Q8_K,
          vec_dot_q6_K_q8_K_ref),
    ENTRY(Q8_K, "Q8_K", QK_K, sizeof(block_q8_K), q8_K_to_float, q8_K_from_float, Q8_K, NULL),
};

static pthread_once_t table_once = PTHREAD_ONCE_INIT;
static int have_avx2;
static const char *isa = "scalar";

static void table_init(void) {
#if defined(HEARTH_HAVE_AVX2_BUILD)
    const char *no_simd = getenv("HEARTH_NO_SIMD");
    if (no_simd && no_simd[0] && strcmp(no_simd, "0") != 0)
        return;
    __builtin_cpu_init();
    /* F16C by cpuid (leaf 1, ecx bit 29): clang 14's __builtin_cpu_supports
     * does not know "f16c". Every AVX2 CPU has it; check anyway. */
    unsigned eax, ebx, ecx = 0, edx;
    int f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29));
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) {
        /* libgcc's and compiler-rt's checks include the OS saving the AVX-512 state */
        const char *no_vnni = getenv("HEARTH_NO_VNNI");
        if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
            !(no_vnni && no_vnni[0] && strcmp(no_vnni, "0") != 0)) {
            quant_vnni_install(table, HEARTH_TYPE_COUNT);
            isa = "avx512-vnni";
        } else {
            quant_avx2_install(table, HEARTH_TYPE_COUNT);
            isa = "avx2";
        }
        have_avx2 = 1;
    }
#endif
}

const struct quant_traits *quant_traits(enum hearth_type type) {
    if ((unsigned)type >= HEARTH_TYPE_COUNT)
        return NULL;
    pthread_once(&table_once, table_init);
    return table[type].name ? &table[type] : NULL;
}

const char *quant_isa(void) {
    pthread_once(&table_once, table_init);
    return isa;
}

int quant_have_avx2(void) {
    pthread_once(&table_once, table_init);
    return have_avx2;
}

static const struct quant_traits *row_traits(enum hearth_type type, int64_t n, const char *what,
                                             char *err, size_t errlen) {
    const struct quant_traits *t = quant_traits(type);
    if (!t) {
        snprintf(err, errlen, "%s: no kernels for tensor type %s (id %u)", what,
                 hearth_type_name((uint32_t)type), (unsigned)type);
        return NULL;
    }
    if (n < 0 || n % t->blck != 0) {
        snprintf(err, errlen, "%s: row of %lld elements is not a multiple of the %s block size %lld",
                 what, (long long)n, t->name, (long long)t->blck);
        return NULL;
    }
    return t;
}

int quant_dequantize_row(enum hearth_type type, const void *src, float *dst, int64_t n, char *err,
                         size_t errlen) {
    const struct quant_traits *t = row_traits(type, n, "dequantize", err, errlen);
    if (!t)
        return -1;
    t->to_float(src, dst, n);
    return 0;
}

int quant_quantize_row(enum hearth_type type, const float *src, void *dst, int64_t n, char *err,
                       size_t errlen) {
    const struct quant_traits *t = row_traits(type, n, "quantize", err, errlen);
    if (!t)
        return -1;
    if (!t->from_float) {
        snprintf(err, errlen, "quantize: no quantizer for tensor type %s", t->name);
        return -1;
    }
    t->from_float(src, dst, n);
    return 0;
}
