/* test_cuda: cuda/'s kernels against the CPU code, and the cuda backend
 * against the host backend. Without a CUDA device every mode prints
 * "SKIP: no CUDA device" and exits 77 (ctest: skipped).
 *
 *   test_cuda kernels          each kernel on random data of awkward sizes
 *   test_cuda backend [MODEL]  cuda vs host backend on a model
 *                              (MODEL or $HEARTH_TEST_MODEL; skipped if absent)
 *
 * Tolerances. The GPU computes in float32 on float32 activations; the CPU
 * matmul quantizes activations to 8 bits first, so the GPU is compared with
 * a float reference built from core/quant.h's to_float dequantization:
 *   GEMV, F32 GEMM: |y - ref| <= 1e-4 * sum_i |w_i x_i| + 1e-6 (float
 *     accumulation over n_in <= 1024 terms: n_in * 2^-24 < 6.2e-5);
 *   F16 GEMM: 2e-3 * sum |w_i x_i| + 1e-6 (both inputs rounded to half,
 *     2^-11 = 4.9e-4 relative each, plus accumulation).
 * The whole backend differs from the host backend by the host's 8-bit
 * activations through 30 layers; see test_backend. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cuda.h"
#include "forward.h"
#include "hearth_cuda.h"
#include "model.h"
#include "quant.h"
#include "tpool.h"

static int fails;
static char err[1024];
static struct hcu_ctx *C;

#define CHECK(cond, ...)                                                                                          \
    do {                                                                                                          \
        if (!(cond)) {                                                                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                  \
            fprintf(stderr, __VA_ARGS__);                                                                         \
            fputc('\n', stderr);                                                                                  \
            fails++;                                                                                              \
        }                                                                                                         \
    } while (0)

/* a failed CUDA call ends the test: later checks would only repeat it */
#define OK(call)                                                                                                  \
    do {                                                                                                          \
        if ((call) != 0) {                                                                                        \
            fprintf(stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, err);                             \
            exit(1);                                                                                              \
        }                                                                                                         \
    } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}
static float frand(void) { return (float)rnd() / 2147483648.0f - 1.0f; } /* [-1, 1) */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static void *dev(const void *h, size_t bytes) {
    void *d = hcu_alloc(C, bytes, err, sizeof err);
    if (!d) OK(-1);
    if (h) OK(hcu_upload(C, d, h, bytes, err, sizeof err));
    return d;
}
static void get(void *h, const void *d, size_t bytes) { OK(hcu_download(C, h, d, bytes, err, sizeof err)); }

/* ---- matmul, dequantize, embed ---------------------------------------------- */

static void test_matmul(void) {
    static const enum hearth_type types[] = {HEARTH_TYPE_F16,  HEARTH_TYPE_Q8_0, HEARTH_TYPE_Q4_0,
                                             HEARTH_TYPE_Q4_1, HEARTH_TYPE_Q4_K, HEARTH_TYPE_Q6_K};
    static const int n_ins[] = {256, 288, 544, 768};
    static const int n_outs[] = {1, 5, 97, 579};
    static const int n_toks[] = {1, 3, 8, 17};
    int cases = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        const enum hearth_type type = types[ti];
        for (size_t ii = 0; ii < sizeof n_ins / sizeof *n_ins; ii++) {
            const int n_in = n_ins[ii];
            if (n_in % hearth_type_blck(type)) continue;
            const size_t rb = hearth_row_size(type, n_in);
            for (size_t oi = 0; oi < sizeof n_outs / sizeof *n_outs; oi++) {
                const int n_out = n_outs[oi];
                float *wf = xmalloc((size_t)n_out * n_in * sizeof *wf), *row = xmalloc((size_t)n_in * sizeof *row);
                char *wq = xmalloc((size_t)n_out * rb);
                for (int o = 0; o < n_out; o++) {
                    for (int i = 0; i < n_in; i++) row[i] = frand() * (1.0f + (float)(o % 7));
                    OK(quant_quantize_row(type, row, wq + (size_t)o * rb, n_in, err, sizeof err));
                    OK(quant_dequantize_row(type, wq + (size_t)o * rb, wf + (size_t)o * n_in, n_in, err, sizeof err));
                }
                void *d_w = dev(wq, (size_t)n_out * rb);
                /* dequantize: the device's to_float */
                float *d_deq = dev(NULL, (size_t)n_out * n_in * sizeof(float));
                float *deq = xmalloc((size_t)n_out * n_in * sizeof *deq);
                OK(hcu_dequantize(C, d_deq, d_w, type, n_in, n_out, err, sizeof err));
                get(deq, d_deq, (size_t)n_out * n_in * sizeof(float));
                for (size_t i = 0; i < (size_t)n_out * n_in; i++)
                    if (fabsf(deq[i] - wf[i]) > 1e-6f * fabsf(wf[i]) + 1e-7f) {
                        CHECK(0, "dequantize %s [%d x %d] element %zu: %g vs %g", hearth_type_name(type), n_out, n_in,
                              i, deq[i], wf[i]);
                        break;
                    }
                for (size_t ki = 0; ki < sizeof n_toks / sizeof *n_toks; ki++) {
                    const int n_tok = n_toks[ki];
                    for (int f32 = 0; f32 <= (n_tok > HCU_GEMV_MAX_TOK); f32++) {
                        float *x = xmalloc((size_t)n_tok * n_in * sizeof *x);
                        float *y = xmalloc((size_t)n_tok * n_out * sizeof *y);
                        for (int i = 0; i < n_tok * n_in; i++) x[i] = frand();
                        float *d_x = dev(x, (size_t)n_tok * n_in * sizeof *x);
                        float *d_y = dev(NULL, (size_t)n_tok * n_out * sizeof *y);
                        hcu_set_gemm_f32(C, f32);
                        OK(hcu_matmul(C, d_y, d_w, type, d_x, n_in, n_out, n_tok, err, sizeof err));
                        get(y, d_y, (size_t)n_tok * n_out * sizeof *y);
                        const double tol = n_tok > HCU_GEMV_MAX_TOK && !f32 ? 2e-3 : 1e-4;
                        int bad = 0;
                        for (int t = 0; t < n_tok && !bad; t++)
                            for (int o = 0; o < n_out && !bad; o++) {
                                double ref = 0.0, mag = 0.0;
                                for (int i = 0; i < n_in; i++) {
                                    ref += (double)wf[(size_t)o * n_in + i] * x[(size_t)t * n_in + i];
                                    mag += fabs((double)wf[(size_t)o * n_in + i] * x[(size_t)t * n_in + i]);
                                }
                                const double got = y[(size_t)t * n_out + o];
                                if (fabs(got - ref) > tol * mag + 1e-6) {
                                    CHECK(0, "matmul %s [%d x %d] x %d tokens (%s): y[%d, %d] = %.7g, reference %.7g",
                                          hearth_type_name(type), n_out, n_in, n_tok,
                                          n_tok <= HCU_GEMV_MAX_TOK ? "gemv" : f32 ? "gemm f32" : "gemm f16", t, o,
                                          got, ref);
                                    bad = 1;
                                }
                            }
                        hcu_free(C, d_x, (size_t)n_tok * n_in * sizeof *x);
                        hcu_free(C, d_y, (size_t)n_tok * n_out * sizeof *y);
                        free(x);
                        free(y);
                        cases++;
                    }
                }
                hcu_free(C, d_w, (size_t)n_out * rb);
                hcu_free(C, d_deq, (size_t)n_out * n_in * sizeof(float));
                free(wf);
                free(row);
                free(wq);
                free(deq);
            }
        }
    }
    hcu_set_gemm_f32(C, 0);
    printf("matmul: %d cases\n", cases);

    /* embed: rows of a Q8_0 table */
    const int dim = 576, n_vocab = 301, n = 5;
    const size_t rb = hearth_row_size(HEARTH_TYPE_Q8_0, dim);
    char *table = xmalloc((size_t)n_vocab * rb);
    float *row = xmalloc((size_t)dim * sizeof *row), *x = xmalloc((size_t)n * dim * sizeof *x);
    for (int r = 0; r < n_vocab; r++) {
        for (int i = 0; i < dim; i++) row[i] = frand();
        OK(quant_quantize_row(HEARTH_TYPE_Q8_0, row, table + (size_t)r * rb, dim, err, sizeof err));
    }
    const int32_t tokens[5] = {0, 300, 17, 17, 150};
    void *d_table = dev(table, (size_t)n_vocab * rb);
    int32_t *d_tok = dev(tokens, sizeof tokens);
    float *d_x = dev(NULL, (size_t)n * dim * sizeof *x);
    OK(hcu_embed(C, d_x, d_table, HEARTH_TYPE_Q8_0, dim, d_tok, n, err, sizeof err));
    get(x, d_x, (size_t)n * dim * sizeof *x);
    for (int t = 0; t < n; t++) {
        OK(quant_dequantize_row(HEARTH_TYPE_Q8_0, table + (size_t)tokens[t] * rb, row, dim, err, sizeof err));
        CHECK(memcmp(row, x + (size_t)t * dim, (size_t)dim * sizeof *row) == 0, "embed: token %d's row differs",
              tokens[t]);
    }
    hcu_free(C, d_table, (size_t)n_vocab * rb);
    hcu_free(C, d_tok, sizeof tokens);
    hcu_free(C, d_x, (size_t)n * dim * sizeof *x);
    free(table);
    free(row);
    free(x);
}

/* ---- elementwise ------------------------------------------------------------- */

static double max_rel(const float *a, const float *b, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / (fabs((double)b[i]) + 1e-3);
        if (!(d <= worst)) worst = d; /* NaN counts */
    }
    return worst;
}

static void test_elementwise(void) {
    /* RMSNorm: rows of 576 and 100 */
    for (int dim = 576; dim >= 100; dim -= 476) {
        const int rows = 3;
        float *x = xmalloc((size_t)rows * dim * 4), *w = xmalloc((size_t)dim * 4), *o = xmalloc((size_t)rows * dim * 4),
              *ref = xmalloc((size_t)rows * dim * 4);
        for (int i = 0; i < rows * dim; i++) x[i] = frand() * 3.0f;
        for (int i = 0; i < dim; i++) w[i] = frand();
        for (int r = 0; r < rows; r++) {
            double ss = 0.0;
            for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
            const float scale = (float)(1.0 / sqrt(ss / dim + 1e-5));
            for (int i = 0; i < dim; i++) ref[r * dim + i] = w[i] * (x[r * dim + i] * scale);
        }
        float *d_x = dev(x, (size_t)rows * dim * 4), *d_w = dev(w, (size_t)dim * 4), *d_o = dev(NULL, (size_t)rows * dim * 4);
        OK(hcu_rmsnorm(C, d_o, d_x, d_w, dim, rows, 1e-5f, err, sizeof err));
        get(o, d_o, (size_t)rows * dim * 4);
        double e = max_rel(o, ref, (size_t)rows * dim);
        CHECK(e < 1e-5, "rmsnorm dim %d: relative error %g", dim, e);
        hcu_free(C, d_x, 0), hcu_free(C, d_w, 0), hcu_free(C, d_o, 0);
        free(x), free(w), free(o), free(ref);
    }

    /* RoPE, both modes, whole and partial rotation, positions near 1000 */
    const int n_tok = 5, n_heads = 3, hd = 64, pos0 = 997;
    for (int mode = 0; mode <= 1; mode++)
        for (int rope_dim = 64; rope_dim >= 32; rope_dim -= 32) {
            const int width = n_heads * hd;
            float *v = xmalloc((size_t)n_tok * width * 4), *ref = xmalloc((size_t)n_tok * width * 4),
                  *inv = xmalloc((size_t)rope_dim / 2 * 4);
            for (int i = 0; i < n_tok * width; i++) ref[i] = v[i] = frand();
            for (int i = 0; i < rope_dim / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / rope_dim);
            for (int t = 0; t < n_tok; t++)
                for (int h = 0; h < n_heads; h++)
                    for (int i = 0; i < rope_dim / 2; i++) {
                        float *hv = ref + (size_t)t * width + (size_t)h * hd;
                        const float theta = (float)(pos0 + t) * inv[i], cs = cosf(theta), sn = sinf(theta);
                        const int a = mode ? i : 2 * i, b = mode ? i + rope_dim / 2 : 2 * i + 1;
                        const float x0 = hv[a], x1 = hv[b];
                        hv[a] = x0 * cs - x1 * sn;
                        hv[b] = x0 * sn + x1 * cs;
                    }
            float *d_v = dev(v, (size_t)n_tok * width * 4), *d_inv = dev(inv, (size_t)rope_dim / 2 * 4);
            OK(hcu_rope(C, d_v, n_tok, n_heads, hd, rope_dim, pos0, d_inv, mode, err, sizeof err));
            get(v, d_v, (size_t)n_tok * width * 4);
            double e = 0.0;
            for (int i = 0; i < n_tok * width; i++) e = fmax(e, fabs((double)v[i] - ref[i]));
            CHECK(e < 1e-5, "rope mode %d rope_dim %d: max error %g", mode, rope_dim, e);
            hcu_free(C, d_v, 0), hcu_free(C, d_inv, 0);
            free(v), free(ref), free(inv);
        }

    /* activations: SiLU, ReLU, GELU, gated and not */
    const size_t n = 1001;
    float *g = xmalloc(n * 4), *u = xmalloc(n * 4), *h = xmalloc(n * 4), *ref = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) g[i] = frand() * 8.0f, u[i] = frand() * 2.0f;
    float *d_g = dev(g, n * 4), *d_u = dev(u, n * 4), *d_h = dev(NULL, n * 4);
    for (int act = 0; act < 3; act++)
        for (int gated = 0; gated <= 1; gated++) {
            for (size_t i = 0; i < n; i++) {
                const float a = gated ? g[i] : u[i];
                float r = act == 1 ? (a > 0 ? a : 0)
                          : act == 2 ? 0.5f * a * (1.0f + tanhf(0.7978845608f * (a + 0.044715f * a * a * a)))
                                     : a / (1.0f + expf(-a));
                ref[i] = gated ? r * u[i] : r;
            }
            OK(hcu_ffn_act(C, d_h, gated ? d_g : NULL, d_u, n, act, err, sizeof err));
            get(h, d_h, n * 4);
            double e = max_rel(h, ref, n);
            CHECK(e < 1e-5, "ffn_act %d gated %d: relative error %g", act, gated, e);
        }
    hcu_free(C, d_g, 0), hcu_free(C, d_u, 0), hcu_free(C, d_h, 0);
    free(g), free(u), free(h), free(ref);
}

/* ---- FFN fixed point ------------------------------------------------------------ */

static void test_ffn_fixed(void) {
    /* hot neurons: an irregular ascending subset of 1000 (4 groups, one of
     * them partial), so segments have uneven lengths */
    const int hidden = 1000, dim = 579, n_tok = 3;
    int64_t idx[1000];
    int n_hot = 0;
    for (int i = 0; i < hidden; i++)
        if (rnd() % 3 != 0 || (i >= 256 && i < 300)) idx[n_hot++] = i;
    int32_t seg[1001];
    int n_seg = 0;
    for (int j = 0; j < n_hot; j++)
        if (j == 0 || idx[j] / FFN_GROUP != idx[j - 1] / FFN_GROUP) seg[n_seg++] = j;
    seg[n_seg] = n_hot;
    float *hh = xmalloc((size_t)n_tok * n_hot * 4), *dt = xmalloc((size_t)n_hot * dim * 4);
    for (int i = 0; i < n_tok * n_hot; i++) hh[i] = frand() * 4.0f;
    for (int i = 0; i < n_hot * dim; i++) dt[i] = frand() * 0.1f;
    int64_t *ref = calloc((size_t)n_tok * dim, sizeof *ref), *acc = xmalloc((size_t)n_tok * dim * 8);
    double *tol = calloc((size_t)n_tok * dim, sizeof *tol);
    if (!ref || !tol) exit(1);
    for (int t = 0; t < n_tok; t++)
        for (int s = 0; s < n_seg; s++)
            for (int r = 0; r < dim; r++) {
                double y = 0.0, mag = 0.0;
                for (int j = seg[s]; j < seg[s + 1]; j++) {
                    y += (double)hh[t * n_hot + j] * dt[(size_t)j * dim + r];
                    mag += fabs((double)hh[t * n_hot + j] * dt[(size_t)j * dim + r]);
                }
                ref[t * dim + r] += llrint((double)(float)y * 4294967296.0);
                /* float accumulation over <= 256 terms: 256 * 2^-24 * mag */
                tol[t * dim + r] += (2e-5 * mag + 1e-9) * 4294967296.0 + 1.0;
            }
    float *d_h = dev(hh, (size_t)n_tok * n_hot * 4), *d_dt = dev(dt, (size_t)n_hot * dim * 4);
    int32_t *d_seg = dev(seg, (size_t)(n_seg + 1) * 4);
    int64_t *d_acc = dev(NULL, (size_t)n_tok * dim * 8);
    /* acc starts non-zero: the kernel adds */
    for (int i = 0; i < n_tok * dim; i++) acc[i] = (int64_t)(rnd() % 1000) - 500;
    OK(hcu_upload(C, d_acc, acc, (size_t)n_tok * dim * 8, err, sizeof err));
    for (int i = 0; i < n_tok * dim; i++) ref[i] += acc[i];
    OK(hcu_ffn_down_fixed(C, d_acc, d_h, d_dt, d_seg, n_seg, n_hot, dim, n_tok, err, sizeof err));
    get(acc, d_acc, (size_t)n_tok * dim * 8);
    for (int i = 0; i < n_tok * dim; i++)
        if (fabs((double)(acc[i] - ref[i])) > tol[i]) {
            CHECK(0, "ffn_down_fixed: acc[%d] = %lld, reference %lld (tolerance %.0f)", i, (long long)acc[i],
                  (long long)ref[i], tol[i]);
            break;
        }

    /* x += (acc + acc2) 2^-32, as ffn_acc_add_to */
    float *x = xmalloc((size_t)n_tok * dim * 4), *xr = xmalloc((size_t)n_tok * dim * 4);
    int64_t *acc2 = xmalloc((size_t)n_tok * dim * 8), *sum = xmalloc((size_t)n_tok * dim * 8);
    for (int i = 0; i < n_tok * dim; i++) {
        xr[i] = x[i] = frand();
        acc2[i] = (int64_t)(frand() * 1e10);
        sum[i] = acc[i] + acc2[i];
    }
    ffn_acc_add_to(xr, sum, (size_t)n_tok * dim);
    float *d_x = dev(x, (size_t)n_tok * dim * 4);
    int64_t *d_acc2 = dev(acc2, (size_t)n_tok * dim * 8);
    OK(hcu_acc_add_to(C, d_x, d_acc, d_acc2, (size_t)n_tok * dim, err, sizeof err));
    get(x, d_x, (size_t)n_tok * dim * 4);
    CHECK(memcmp(x, xr, (size_t)n_tok * dim * 4) == 0, "acc_add_to differs from ffn_acc_add_to");
    printf("ffn fixed point: %d hot neurons in %d segments\n", n_hot, n_seg);
    hcu_free(C, d_h, 0), hcu_free(C, d_dt, 0), hcu_free(C, d_seg, 0), hcu_free(C, d_acc, 0), hcu_free(C, d_x, 0),
        hcu_free(C, d_acc2, 0);
    free(hh), free(dt), free(ref), free(acc), free(tol), free(x), free(xr), free(acc2), free(sum);
}

/* ---- attention -------------------------------------------------------------------- */

static void test_attention(void) {
    /* 37 slots written one by one at scattered positions (as eviction
     * leaves them), every 7th empty; 4 queries at positions 40..43 see the
     * slots whose position is <= theirs */
    const int n_slots = 37, n_kvh = 3, n_heads = 9, hd = 64, n_tok = 4, pos0 = 40;
    const int kv_dim = n_kvh * hd, q_dim = n_heads * hd, group = n_heads / n_kvh;
    struct hcu_kv kv;
    OK(hcu_kv_create(C, &kv, n_slots, n_kvh, hd, err, sizeof err));
    float *k = xmalloc((size_t)n_slots * kv_dim * 4), *v = xmalloc((size_t)n_slots * kv_dim * 4);
    int32_t pos[37];
    float *d_k1 = dev(NULL, (size_t)kv_dim * 4), *d_v1 = dev(NULL, (size_t)kv_dim * 4);
    for (int s = 0; s < n_slots; s++) {
        pos[s] = s % 7 == 3 ? -1 : (int)((s * 29 + 5) % 50); /* distinct for s < 50 */
        for (int i = 0; i < kv_dim; i++) k[s * kv_dim + i] = frand(), v[s * kv_dim + i] = frand();
        if (pos[s] < 0) continue;
        OK(hcu_upload(C, d_k1, k + (size_t)s * kv_dim, (size_t)kv_dim * 4, err, sizeof err));
        OK(hcu_upload(C, d_v1, v + (size_t)s * kv_dim, (size_t)kv_dim * 4, err, sizeof err));
        OK(hcu_kv_write(C, &kv, d_k1, d_v1, 1, s, pos[s], err, sizeof err));
    }
    int32_t got_pos[37];
    get(got_pos, kv.d_pos, sizeof got_pos);
    CHECK(memcmp(got_pos, pos, sizeof pos) == 0, "kv_write: slot positions differ");
    float *q = xmalloc((size_t)n_tok * q_dim * 4), *out = xmalloc((size_t)n_tok * q_dim * 4),
          *ref = xmalloc((size_t)n_tok * q_dim * 4), *score = xmalloc((size_t)n_kvh * n_slots * 4);
    double *ref_score = calloc((size_t)n_kvh * n_slots, sizeof *ref_score);
    if (!ref_score) exit(1);
    for (int i = 0; i < n_tok * q_dim; i++) q[i] = frand() * 2.0f;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int t = 0; t < n_tok; t++)
        for (int h = 0; h < n_heads; h++) {
            const int kvh = h / group;
            double att[37], maxv = -INFINITY, sum = 0.0;
            for (int s = 0; s < n_slots; s++) {
                att[s] = -INFINITY;
                if (pos[s] < 0 || pos[s] > pos0 + t) continue;
                double d = 0.0;
                for (int i = 0; i < hd; i++) d += (double)q[t * q_dim + h * hd + i] * k[s * kv_dim + kvh * hd + i];
                att[s] = d * scale;
                maxv = fmax(maxv, att[s]);
            }
            for (int s = 0; s < n_slots; s++) sum += att[s] == -INFINITY ? 0.0 : (att[s] = exp(att[s] - maxv));
            for (int s = 0; s < n_slots; s++) {
                att[s] = att[s] == -INFINITY ? 0.0 : att[s] / sum;
                ref_score[kvh * n_slots + s] += att[s];
            }
            for (int i = 0; i < hd; i++) {
                double o = 0.0;
                for (int s = 0; s < n_slots; s++) o += att[s] * v[s * kv_dim + kvh * hd + i];
                ref[t * q_dim + h * hd + i] = (float)o;
            }
        }
    float *d_q = dev(q, (size_t)n_tok * q_dim * 4), *d_out = dev(NULL, (size_t)n_tok * q_dim * 4),
          *d_att = dev(NULL, (size_t)n_tok * n_heads * n_slots * 4);
    OK(hcu_attention(C, d_out, d_q, &kv, n_slots, n_tok, pos0, n_heads, d_att, err, sizeof err));
    get(out, d_out, (size_t)n_tok * q_dim * 4);
    get(score, kv.d_score, (size_t)n_kvh * n_slots * 4);
    double e = 0.0, es = 0.0;
    for (int i = 0; i < n_tok * q_dim; i++) e = fmax(e, fabs((double)out[i] - ref[i]));
    for (int i = 0; i < n_kvh * n_slots; i++) es = fmax(es, fabs((double)score[i] - ref_score[i]));
    CHECK(e < 1e-5, "attention output: max error %g", e);
    CHECK(es < 1e-5, "attention scores: max error %g", es);
    /* scores accumulate over calls: a second call doubles them */
    OK(hcu_attention(C, d_out, d_q, &kv, n_slots, n_tok, pos0, n_heads, d_att, err, sizeof err));
    get(score, kv.d_score, (size_t)n_kvh * n_slots * 4);
    es = 0.0;
    for (int i = 0; i < n_kvh * n_slots; i++) es = fmax(es, fabs((double)score[i] - 2.0 * ref_score[i]));
    CHECK(es < 2e-5, "attention scores after a second call: max error %g", es);
    printf("attention: output error %g, scores error %g\n", e, es);
    hcu_kv_destroy(C, &kv);
    hcu_free(C, d_k1, 0), hcu_free(C, d_v1, 0), hcu_free(C, d_q, 0), hcu_free(C, d_out, 0), hcu_free(C, d_att, 0);
    free(k), free(v), free(q), free(out), free(ref), free(score), free(ref_score);
}

/* ---- the whole backend ------------------------------------------------------------- */

/* One step on a backend. GPU-side neurons: split 0 all of them, 1 the even
 * groups (a set that is not one range; the odd groups come from the CPU's
 * ffn_partial through add_partial, as CPU workers' shards), 2 none. */
static int step(struct gpu_backend *b, const struct llama_model *m, const int32_t *tok, int n, int pos0,
                float *logits, int split, struct ffn_scratch *fs, struct tpool *tp, int64_t *part) {
    const struct llama_config *c = &m->cfg;
    const struct seq_span one = {0, pos0, n, SPAN_LOGITS_LAST};
    if (b->begin(b, tok, n, &one, 1, err, sizeof err)) return -1;
    for (int l = 0; l < c->n_layers; l++) {
        if (b->attention(b, l, err, sizeof err)) return -1;
        const float *xn = b->ffn_input(b, l, n);
        const int64_t hot1 = split == 0 ? c->hidden_dim : 0;
        if (b->ffn_hot(b, l, n, 0, hot1, err, sizeof err)) return -1;
        for (int64_t g0 = 0; split && g0 < c->hidden_dim; g0 += FFN_GROUP) {
            if (split == 1 && (g0 / FFN_GROUP) % 2 == 0) continue;
            const int64_t g1 = g0 + FFN_GROUP < c->hidden_dim ? g0 + FFN_GROUP : c->hidden_dim;
            memset(part, 0, (size_t)n * c->dim * sizeof *part);
            if (ffn_partial(m, l, xn, n, g0, g1, part, fs, tp, err, sizeof err)) return -1;
            b->add_partial(b, n, part);
        }
        b->ffn_finish(b, n);
    }
    return b->output(b, logits, err, sizeof err);
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static int test_backend(const char *path) {
    struct llama_model m;
    if (model_load(&m, path, err, sizeof err)) {
        fprintf(stderr, "FAIL: %s\n", err);
        return 1;
    }
    const struct llama_config *c = &m.cfg;
    const int n_ctx = 96, max_batch = 16, n_prompt = 12, n_gen = 20;
    struct gpu_backend host, cu;
    OK(backend_host_create(&host, &m, n_ctx, 1, max_batch, 2, err, sizeof err));
    OK(backend_cuda_create(&cu, &m, n_ctx, max_batch, 1, err, sizeof err));
    printf("cuda backend: %.1f MiB of device memory\n", (double)backend_cuda_device_bytes(&cu) / (1 << 20));
    struct ffn_scratch fs;
    struct tpool *tp = tpool_create(2, err, sizeof err);
    if (!tp) OK(-1);
    OK(ffn_scratch_create(&fs, &m, max_batch, err, sizeof err));
    int64_t *part = xmalloc((size_t)max_batch * c->dim * sizeof *part);
    float *lh = xmalloc((size_t)c->n_vocab * 4), *lc = xmalloc((size_t)c->n_vocab * 4);
    double worst = 0.0;
    for (int prompt = 0; prompt < 3; prompt++) {
        /* the device's hot set: the even groups (not one range), then
         * every neuron, then none */
        const int split = prompt == 0 ? 1 : prompt == 1 ? 0 : 2;
        for (int l = 0; l < c->n_layers; l++) {
            int64_t *idx = xmalloc((size_t)c->hidden_dim * sizeof *idx), n_idx = 0;
            for (int64_t i = 0; i < c->hidden_dim; i++)
                if (split == 0 || (split == 1 && (i / FFN_GROUP) % 2 == 0)) idx[n_idx++] = i;
            OK(backend_cuda_set_hot(&cu, l, idx, n_idx, err, sizeof err));
            free(idx);
        }
        int32_t tok[16];
        for (int i = 0; i < n_prompt; i++) tok[i] = (int32_t)(rnd() % (uint32_t)c->n_vocab);
        int agree = 0, pos = 0, n = n_prompt;
        double prompt_worst = 0.0;
        for (int s = 0; s <= n_gen; s++) {
            OK(step(&host, &m, tok, n, pos, lh, 2, &fs, tp, part));
            OK(step(&cu, &m, tok, n, pos, lc, split, &fs, tp, part));
            double maxabs = 0.0, maxdiff = 0.0;
            for (int i = 0; i < c->n_vocab; i++) {
                maxabs = fmax(maxabs, fabs((double)lh[i]));
                double d = fabs((double)lh[i] - lc[i]);
                if (!(d <= maxdiff)) maxdiff = d;
            }
            const double rel = maxdiff / (maxabs + 1e-6);
            prompt_worst = fmax(prompt_worst, rel);
            agree += argmax(lh, c->n_vocab) == argmax(lc, c->n_vocab);
            /* teacher forcing: both continue with the host's token */
            pos += n;
            tok[0] = argmax(lh, c->n_vocab);
            n = 1;
        }
        printf("prompt %d (device neurons: %s): max |logit diff| / max |logit| = %.3g, argmax agrees %d/%d\n", prompt,
               split == 0 ? "all" : split == 1 ? "even groups" : "none", prompt_worst, agree, n_gen + 1);
        worst = fmax(worst, prompt_worst);
        /* 8-bit activations on the host through 30 layers: a few percent
         * of the logit range; a wrong kernel gives O(1) */
        CHECK(prompt_worst < 0.05, "prompt %d: logits differ by %.3g of their range", prompt, prompt_worst);
        CHECK(agree >= (n_gen + 1) / 2, "prompt %d: argmax agrees on only %d of %d steps", prompt, agree,
              n_gen + 1);
    }
    /* heavy-hitter scores exist and sum to (query heads per KV head) x queries */
    float *sc = xmalloc((size_t)c->n_kv_heads * n_ctx * 4);
    OK(backend_cuda_kv_scores(&cu, 0, sc, err, sizeof err));
    double total = 0.0;
    for (int i = 0; i < c->n_kv_heads * n_ctx; i++) total += sc[i];
    CHECK(total > 0.0, "no heavy-hitter scores accumulated");
    printf("backend: worst relative logit difference %.3g; layer 0 score total %.1f\n", worst, total);
    free(sc), free(part), free(lh), free(lc);
    ffn_scratch_free(&fs);
    tpool_destroy(tp);
    cu.destroy(&cu);
    host.destroy(&host);
    model_free(&m);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "kernels";
    printf("seed 0x%016llx\n", (unsigned long long)rng);
    if (hcu_device_count(err, sizeof err) < 1) {
        printf("SKIP: no CUDA device\n");
        fprintf(stderr, "%s\n", err);
        return 77;
    }
    if (strcmp(mode, "backend") == 0) {
        const char *path = argc > 2 ? argv[2] : getenv("HEARTH_TEST_MODEL");
        FILE *f = path ? fopen(path, "rb") : NULL;
        if (!f) {
            printf("SKIP: no model (%s)\n", path ? path : "set HEARTH_TEST_MODEL");
            return 77;
        }
        fclose(f);
        if (test_backend(path)) return 1;
    } else if (strcmp(mode, "kernels") == 0) {
        if (!(C = hcu_create(0, err, sizeof err))) OK(-1);
        printf("device: %s\n", hcu_device_name(C));
        test_matmul();
        test_elementwise();
        test_ffn_fixed();
        test_attention();
        hcu_destroy(C);
    } else {
        fprintf(stderr, "usage: test_cuda kernels | backend [MODEL]\n");
        return 2;
    }
    if (fails) {
        fprintf(stderr, "%d checks failed\n", fails);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
