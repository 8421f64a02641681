/* insparse: input-major matrices and the product over active inputs (see
 * insparse.h for the definition of the sum). The selection of each token's
 * active inputs is done once, by the caller's thread, before the pool runs:
 * it is n_in comparisons per token, small beside the rows it saves. */
#include "insparse.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp16.h"
#include "sparse.h"

void insparse_axpy_q4_1_avx2(float *y, const block_q4_1 *rows, int64_t row_blocks, const int32_t *idx,
                             const float *h, int64_t cnt, int64_t b0, int64_t b1);

typedef void (*axpy_q4_1_fn)(float *y, const block_q4_1 *rows, int64_t row_blocks, const int32_t *idx,
                             const float *h, int64_t cnt, int64_t b0, int64_t b1);

static axpy_q4_1_fn g_axpy_q4_1;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

int64_t insparse_q4t_dot_avx2(const struct insparse_q4t *m, const block_q8_1 *xq, float *acc, float *accm,
                              int64_t c0, int64_t c1, int64_t g0, int64_t g1);
int64_t insparse_q4t_dot_vnni(const struct insparse_q4t *m, const block_q8_1 *xq, float *acc, float *accm,
                              int64_t c0, int64_t c1, int64_t g0, int64_t g1);
typedef int64_t (*q4t_dot_fn)(const struct insparse_q4t *m, const block_q8_1 *xq, float *acc, float *accm,
                              int64_t c0, int64_t c1, int64_t g0, int64_t g1);
static q4t_dot_fn g_q4t_dot;

/* every kernel of this file chosen once: quant's CPU check, HEARTH_NO_SIMD
 * and (for q4t) its VNNI choice, HEARTH_NO_VNNI */
static void kernels_init(void) {
    g_axpy_q4_1 = insparse_axpy_q4_1_ref;
    g_q4t_dot = insparse_q4t_dot_ref;
#if defined(HEARTH_HAVE_AVX2_BUILD)
    if (quant_have_avx2()) {
        g_axpy_q4_1 = insparse_axpy_q4_1_avx2;
        g_q4t_dot = strcmp(quant_isa(), "avx512-vnni") ? insparse_q4t_dot_avx2 : insparse_q4t_dot_vnni;
    }
#endif
}

void insparse_axpy_q4_1_ref(float *y, const block_q4_1 *rows, int64_t row_blocks, const int32_t *idx, const float *h,
                            int64_t cnt, int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
        float *yb = y + b * QK4_1;
        for (int j = 0; j < QK4_1; j++) yb[j] = 0.0f;
        for (int64_t k = 0; k < cnt; k++) {
            const block_q4_1 *blk = rows + (int64_t)idx[k] * row_blocks + b;
            const float s = h[k] * fp16_to_f32(blk->d), o = h[k] * fp16_to_f32(blk->m);
            for (int j = 0; j < QK4_1 / 2; j++) {
                yb[j] = yb[j] + fmaf(s, (float)(blk->qs[j] & 15), o);
                yb[j + 16] = yb[j + 16] + fmaf(s, (float)(blk->qs[j] >> 4), o);
            }
        }
    }
}

void insparse_axpy_q4_1(float *y, const block_q4_1 *rows, int64_t row_blocks, const int32_t *idx, const float *h,
                        int64_t cnt, int64_t b0, int64_t b1) {
    pthread_once(&g_once, kernels_init);
    g_axpy_q4_1(y, rows, row_blocks, idx, h, cnt, b0, b1);
}

const char *insparse_fmt_name(enum insparse_fmt fmt) {
    return fmt == INSPARSE_Q8_0 ? "q8_0" : fmt == INSPARSE_Q4_1 ? "q4_1" : "?";
}

static enum hearth_type fmt_type(enum insparse_fmt fmt) {
    return fmt == INSPARSE_Q8_0 ? HEARTH_TYPE_Q8_0 : HEARTH_TYPE_Q4_1;
}

int insparse_build(struct insparse_mat *im, const struct weight *w, enum insparse_fmt fmt, char *err,
                   size_t errlen) {
    memset(im, 0, sizeof *im);
    const struct quant_traits *src = quant_traits((enum hearth_type)w->type);
    if (fmt != INSPARSE_Q8_0 && fmt != INSPARSE_Q4_1) {
        snprintf(err, errlen, "insparse: unknown format %d", (int)fmt);
        return -1;
    }
    const struct quant_traits *dst = quant_traits(fmt_type(fmt));
    if (!w->data || !src || !src->to_float || !dst || !dst->from_float_ref) {
        snprintf(err, errlen, "insparse: weight type %u cannot be dequantised", w->type);
        return -1;
    }
    if (w->n_in <= 0 || w->n_out <= 0 || w->n_out % 32 != 0 || w->n_in % src->blck != 0 ||
        w->n_in > INT32_MAX) {
        snprintf(err, errlen, "insparse: shape [%lld, %lld] is not usable (outputs must be a multiple of 32)",
                 (long long)w->n_in, (long long)w->n_out);
        return -1;
    }
    const int64_t n_in = w->n_in, n_out = w->n_out;
    const size_t src_row = hearth_row_size(w->type, n_in);
    im->n_in = n_in;
    im->n_out = n_out;
    im->fmt = fmt;
    im->row_bytes = (size_t)(n_out / 32) * dst->size;
    im->rows = malloc((size_t)n_in * im->row_bytes);
    im->norm = malloc((size_t)n_in * sizeof(float));
    /* the transpose in slabs of 64 input columns: [n_out] dequantised rows
     * would be the whole matrix in floats */
    const int64_t slab = 64;
    float *row = malloc((size_t)n_in * sizeof(float));
    float *col = malloc((size_t)(slab * n_out) * sizeof(float));
    double *ss = calloc((size_t)n_in, sizeof(double));
    if (!im->rows || !im->norm || !row || !col || !ss) {
        free(row);
        free(col);
        free(ss);
        insparse_free(im);
        snprintf(err, errlen, "insparse: out of memory for a [%lld, %lld] matrix", (long long)n_in,
                 (long long)n_out);
        return -1;
    }
    for (int64_t c0 = 0; c0 < n_in; c0 += slab) {
        const int64_t nc = n_in - c0 < slab ? n_in - c0 : slab;
        for (int64_t r = 0; r < n_out; r++) {
            /* whole rows are dequantised (blocks may be 256 wide); only the
             * slab's columns are kept */
            src->to_float((const char *)w->data + (size_t)r * src_row, row, n_in);
            for (int64_t c = 0; c < nc; c++) {
                col[c * n_out + r] = row[c0 + c];
                ss[c0 + c] += (double)row[c0 + c] * row[c0 + c];
            }
        }
        for (int64_t c = 0; c < nc; c++)
            dst->from_float_ref(col + c * n_out, (char *)im->rows + (size_t)(c0 + c) * im->row_bytes, n_out);
    }
    for (int64_t i = 0; i < n_in; i++) im->norm[i] = (float)sqrt(ss[i]);
    free(row);
    free(col);
    free(ss);
    return 0;
}

void insparse_free(struct insparse_mat *im) {
    free(im->rows);
    free(im->norm);
    memset(im, 0, sizeof *im);
}

size_t insparse_bytes(const struct insparse_mat *im) { return (size_t)im->n_in * im->row_bytes; }

int64_t insparse_select(const float *x, int64_t n, float threshold, const float *norm, int32_t *idx, float *h) {
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) {
        const float a = norm ? fabsf(x[i]) * norm[i] : fabsf(x[i]);
        if (threshold < 0.0f || a > threshold) {
            idx[c] = (int32_t)i;
            h[c] = x[i];
            c++;
        }
    }
    return c;
}

static int64_t n_groups(int64_t n_in) { return (n_in + INSPARSE_GROUP - 1) / INSPARSE_GROUP; }

int insparse_scratch_create(struct insparse_scratch *ss, int64_t n_in, int64_t n_out, int max_tok, char *err,
                            size_t errlen) {
    memset(ss, 0, sizeof *ss);
    ss->n_in = n_in;
    ss->n_out = n_out;
    ss->max_tok = max_tok;
    ss->idx = malloc((size_t)max_tok * (size_t)n_in * sizeof(int32_t));
    ss->h = malloc((size_t)max_tok * (size_t)n_in * sizeof(float));
    ss->gofs = malloc((size_t)max_tok * (size_t)(n_groups(n_in) + 1) * sizeof(int64_t));
    ss->y = malloc((size_t)n_out * sizeof(float));
    if (!ss->idx || !ss->h || !ss->gofs || !ss->y) {
        insparse_scratch_free(ss);
        snprintf(err, errlen, "insparse: out of memory for the scratch of %d tokens", max_tok);
        return -1;
    }
    return 0;
}

void insparse_scratch_free(struct insparse_scratch *ss) {
    free(ss->idx);
    free(ss->h);
    free(ss->gofs);
    free(ss->y);
    memset(ss, 0, sizeof *ss);
}

struct run_ctx {
    const struct insparse_mat *im;
    const struct insparse_scratch *ss;
    int n_tok;
    int64_t *acc;
};

/* thread ith: output blocks [b0, b1), every token, every group */
static void run_worker(void *arg, int ith, int nth) {
    const struct run_ctx *c = arg;
    const struct insparse_mat *im = c->im;
    const struct insparse_scratch *ss = c->ss;
    const int64_t nb = im->n_out / 32, ng = n_groups(im->n_in);
    const int64_t b0 = nb * ith / nth, b1 = nb * (ith + 1) / nth;
    if (b0 == b1) return;
    float *y = ss->y;
    for (int t = 0; t < c->n_tok; t++) {
        const int64_t *go = ss->gofs + (size_t)t * (size_t)(ng + 1);
        const int32_t *idx = ss->idx + (size_t)t * (size_t)im->n_in;
        const float *h = ss->h + (size_t)t * (size_t)im->n_in;
        int64_t *acc = c->acc + (size_t)t * (size_t)im->n_out;
        for (int64_t g = 0; g < ng; g++) {
            const int64_t k0 = go[g], cnt = go[g + 1] - go[g];
            if (cnt == 0) continue;
            if (im->fmt == INSPARSE_Q8_0)
                sparse_down_q8_0(y, im->rows, nb, idx + k0, h + k0, (int)cnt, b0, b1);
            else
                insparse_axpy_q4_1(y, im->rows, nb, idx + k0, h + k0, cnt, b0, b1);
            ffn_acc_add_fixed_fast(acc + 32 * b0, y + 32 * b0, (size_t)(32 * (b1 - b0)));
        }
    }
}

int insparse_matmul(const struct insparse_mat *im, const float *x, int n_tok, float threshold, const float *norm,
                    int64_t *acc, struct insparse_stats *st, struct insparse_scratch *ss, struct tpool *tp,
                    char *err, size_t errlen) {
    if (n_tok < 0 || n_tok > ss->max_tok || ss->n_in != im->n_in || ss->n_out != im->n_out) {
        snprintf(err, errlen, "insparse: %d tokens of [%lld, %lld] do not fit a scratch of %d of [%lld, %lld]",
                 n_tok, (long long)im->n_in, (long long)im->n_out, ss->max_tok, (long long)ss->n_in,
                 (long long)ss->n_out);
        return -1;
    }
    const int64_t n_in = im->n_in, ng = n_groups(n_in);
    int64_t active = 0;
    for (int t = 0; t < n_tok; t++) {
        int32_t *idx = ss->idx + (size_t)t * (size_t)n_in;
        float *h = ss->h + (size_t)t * (size_t)n_in;
        int64_t *go = ss->gofs + (size_t)t * (size_t)(ng + 1);
        const int64_t cnt = insparse_select(x + (size_t)t * (size_t)n_in, n_in, threshold, norm, idx, h);
        /* idx is ascending: each group's actives are one run */
        int64_t k = 0;
        for (int64_t g = 0; g < ng; g++) {
            go[g] = k;
            while (k < cnt && idx[k] < (g + 1) * INSPARSE_GROUP) k++;
        }
        go[ng] = cnt;
        active += cnt;
    }
    if (st) {
        st->inputs += (int64_t)n_tok * n_in;
        st->active += active;
    }
    struct run_ctx c = {im, ss, n_tok, acc};
    tpool_run(tp, run_worker, &c);
    return 0;
}

/* ---- masks and calibration ---- */

const char *insparse_site_name(int site) {
    static const char *const names[INSPARSE_N_SITES] = {"qkv", "o", "gate_up", "down"};
    return site >= 0 && site < INSPARSE_N_SITES ? names[site] : "?";
}

void insparse_probe_reset(struct insparse_probe *p) {
    for (int s = 0; s < INSPARSE_N_SITES; s++) {
        for (int k = 0; k < INSPARSE_BINS; k++) atomic_store_explicit(&p->hist[s][k], 0, memory_order_relaxed);
        atomic_store_explicit(&p->seen[s], 0, memory_order_relaxed);
        atomic_store_explicit(&p->kept[s], 0, memory_order_relaxed);
    }
}

float insparse_bin_edge(int k) {
    if (k <= 0) return 0.0f;
    return exp2f((float)INSPARSE_LOG2_MIN + (float)(k - 1) / (float)INSPARSE_BINS_PER_OCTAVE);
}

static int bin_of(float a) {
    if (!(a >= 0x1p-24f)) return 0; /* INSPARSE_LOG2_MIN; NaN too */
    const float e = (log2f(a) - (float)INSPARSE_LOG2_MIN) * (float)INSPARSE_BINS_PER_OCTAVE;
    const int k = 1 + (e < (float)INSPARSE_BINS ? (int)e : INSPARSE_BINS);
    return k < INSPARSE_BINS - 1 ? k : INSPARSE_BINS - 1;
}

float insparse_probe_threshold(const struct insparse_probe *p, int site, double sparsity) {
    const uint64_t n = atomic_load_explicit(&p->seen[site], memory_order_relaxed);
    if (sparsity <= 0.0 || n == 0) return 0.0f;
    const double want = sparsity * (double)n;
    uint64_t cum = 0;
    for (int k = 0; k < INSPARSE_BINS - 1; k++) {
        cum += atomic_load_explicit(&p->hist[site][k], memory_order_relaxed);
        if ((double)cum >= want) return insparse_bin_edge(k + 1);
    }
    return insparse_bin_edge(INSPARSE_BINS - 1);
}

double insparse_probe_energy_below(const struct insparse_probe *p, int site, float t) {
    double below = 0.0, all = 0.0;
    for (int k = 1; k < INSPARSE_BINS; k++) {
        const double c = k < INSPARSE_BINS - 1 ? (double)insparse_bin_edge(k) * 1.0054299011128027 /* 2^(1/128) */
                                               : (double)insparse_bin_edge(k);
        const double e = c * c * (double)atomic_load_explicit(&p->hist[site][k], memory_order_relaxed);
        all += e;
        if (insparse_bin_edge(k + 1) <= t) below += e;
    }
    return all > 0.0 ? below / all : 0.0;
}

double insparse_probe_kept(const struct insparse_probe *p, int site, float t) {
    const uint64_t seen = atomic_load(&p->seen[site]);
    if (!seen) return 1.0;
    uint64_t kept = 0;
    for (int k = 1; k < INSPARSE_BINS; k++)
        if (insparse_bin_edge(k) >= t) kept += atomic_load(&p->hist[site][k]);
    return t > 0 ? (double)kept / (double)seen : 1.0;
}

#define ALLOC_STEP 0.05
#define ALLOC_MAX 0.9

void insparse_allocate(const struct insparse_probe *probes, int n_layers, const double *bytes, double target,
                       enum insparse_alloc alloc, double *sp) {
    const int ns = n_layers * INSPARSE_N_SITES;
    if (alloc == INSPARSE_ALLOC_UNIFORM) {
        for (int k = 0; k < ns; k++) sp[k] = bytes[k] > 0 ? fmin(target, ALLOC_MAX) : 0.0;
        return;
    }
    double total = 0, skipped = 0;
    for (int k = 0; k < ns; k++) {
        sp[k] = 0;
        total += bytes[k];
    }
    while (skipped < target * total) {
        int best = -1;
        double best_cost = INFINITY;
        for (int k = 0; k < ns; k++) {
            if (sp[k] + ALLOC_STEP > ALLOC_MAX + 1e-9 || bytes[k] <= 0) continue;
            const struct insparse_probe *p = &probes[k / INSPARSE_N_SITES];
            const int s = k % INSPARSE_N_SITES;
            const double e0 = insparse_probe_energy_below(p, s, insparse_probe_threshold(p, s, sp[k]));
            const double e1 = insparse_probe_energy_below(p, s, insparse_probe_threshold(p, s, sp[k] + ALLOC_STEP));
            const double cost = (e1 - e0) / (ALLOC_STEP * bytes[k]);
            if (cost < best_cost) {
                best_cost = cost;
                best = k;
            }
        }
        if (best < 0) break;
        sp[best] += ALLOC_STEP;
        skipped += ALLOC_STEP * bytes[best];
    }
}

void insparse_mask(const struct insparse_layer *IL, int site, float *x, int64_t count, int64_t col0, int64_t width) {
    const float thr = IL->thr[site], *norm = IL->norm[site];
    struct insparse_probe *p = IL->probe;
    if (!p && thr <= 0.0f) return;
    /* counted locally, added once: the down input comes in small pieces from
     * every pool thread */
    uint64_t kept = 0;
    int64_t col = col0 % width;
    for (int64_t i = 0; i < count; i++) {
        const float a = norm ? fabsf(x[i]) * norm[col] : fabsf(x[i]);
        if (++col == width) col = 0;
        if (p) atomic_fetch_add_explicit(&p->hist[site][bin_of(a)], 1, memory_order_relaxed);
        if (a > thr)
            kept++;
        else if (thr > 0.0f)
            x[i] = 0.0f;
    }
    if (p) {
        atomic_fetch_add_explicit(&p->seen[site], (uint64_t)count, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->kept[site], kept, memory_order_relaxed);
    }
}

int insparse_site_norms(const struct llama_layer *L, int site, float *norm, char *err, size_t errlen) {
    const struct weight *ws[3] = {NULL, NULL, NULL};
    if (site == INSPARSE_QKV) {
        ws[0] = &L->wq;
        ws[1] = &L->wk;
        ws[2] = &L->wv;
    } else if (site == INSPARSE_O) {
        ws[0] = &L->wo;
    } else if (site == INSPARSE_GU) {
        ws[0] = &L->w_up;
        ws[1] = L->w_gate.data ? &L->w_gate : NULL;
    } else if (site == INSPARSE_DOWN) {
        ws[0] = &L->w_down;
    } else {
        snprintf(err, errlen, "insparse: no site %d", site);
        return -1;
    }
    const int64_t n_in = ws[0]->n_in;
    double *ss = calloc((size_t)n_in, sizeof(double));
    float *row = malloc((size_t)n_in * sizeof(float));
    if (!ss || !row) {
        free(ss);
        free(row);
        snprintf(err, errlen, "insparse: out of memory for %lld norms", (long long)n_in);
        return -1;
    }
    for (int k = 0; k < 3 && ws[k]; k++) {
        const struct quant_traits *qt = quant_traits((enum hearth_type)ws[k]->type);
        if (!qt || !qt->to_float || ws[k]->n_in != n_in) {
            free(ss);
            free(row);
            snprintf(err, errlen, "insparse: the %s matrices cannot be dequantised or differ in width",
                     insparse_site_name(site));
            return -1;
        }
        const size_t rs = hearth_row_size(ws[k]->type, n_in);
        for (int64_t r = 0; r < ws[k]->n_out; r++) {
            qt->to_float((const char *)ws[k]->data + (size_t)r * rs, row, n_in);
            for (int64_t i = 0; i < n_in; i++) ss[i] += (double)row[i] * row[i];
        }
    }
    for (int64_t i = 0; i < n_in; i++) norm[i] = (float)sqrt(ss[i]);
    free(ss);
    free(row);
    return 0;
}

/* ---- q4t: the model's Q4_1 weights input-major (insparse.h) ---- */

/* Output o (0..63) of a chunk sits in byte q4t_byte(o) of the chunk's 32,
 * low nibble for o < 32, high for o >= 32: the kernel's unpacks put byte
 * 4k + l (l < 4) and 16 + 4k + l - 4 (l >= 4) in lane l of its k-th
 * register, and lane l of register t holds output 8t + l. */
static int q4t_byte(int o) {
    const int k = (o / 8) % 4, l = o % 8;
    return l < 4 ? 4 * k + l : 16 + 4 * k + (l - 4);
}

int insparse_q4t_fits(const struct weight *w) {
    return w->data && w->type == HEARTH_TYPE_Q4_1 && w->n_in > 0 && w->n_in % 32 == 0 && w->n_out > 0 &&
           w->n_out % 64 == 0;
}

int insparse_q4t_build(struct insparse_q4t *m, const struct weight *w, char *err, size_t errlen) {
    return insparse_q4t_build_range(m, w, 0, w->n_out, 0, w->n_in, err, errlen);
}

int insparse_q4t_build_range(struct insparse_q4t *m, const struct weight *w, int64_t r0, int64_t r1, int64_t c0,
                             int64_t c1, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    if (w->type != HEARTH_TYPE_Q4_1 || !w->data) {
        snprintf(err, errlen, "insparse: q4t needs a Q4_1 weight (type %u)", w->type);
        return -1;
    }
    if (w->n_in <= 0 || w->n_in % 32 != 0 || r0 < 0 || r1 > w->n_out || r1 <= r0 || (r1 - r0) % 64 != 0 ||
        r0 % 64 != 0 || c0 < 0 || c1 > w->n_in || c1 <= c0 || c0 % 32 != 0 || c1 % 32 != 0) {
        snprintf(err, errlen,
                 "insparse: q4t rows [%lld, %lld), columns [%lld, %lld) of a [%lld, %lld] weight are not usable "
                 "(inputs in whole 32s, outputs in whole 64s)",
                 (long long)r0, (long long)r1, (long long)c0, (long long)c1, (long long)w->n_in,
                 (long long)w->n_out);
        return -1;
    }
    const int64_t n_in = c1 - c0, n_out = r1 - r0, ng = n_in / 32, src_ng = w->n_in / 32;
    m->n_in = n_in;
    m->n_out = n_out;
    m->group_bytes = (size_t)(4 * n_out + 16 * n_out);
    m->data = aligned_alloc(64, (size_t)ng * m->group_bytes); /* group_bytes: 1280 per 64 outputs */
    if (m->data) memset(m->data, 0, (size_t)ng * m->group_bytes);
    if (!m->data) {
        snprintf(err, errlen, "insparse: out of memory for a [%lld, %lld] q4t matrix", (long long)n_in,
                 (long long)n_out);
        return -1;
    }
    const block_q4_1 *src = w->data;
    for (int64_t r = 0; r < n_out; r++) {
        const int64_t c = r / 64;
        const int o = (int)(r % 64), byte = q4t_byte(o), shift = o < 32 ? 0 : 4;
        for (int64_t g = 0; g < ng; g++) {
            const block_q4_1 *b = src + (r0 + r) * src_ng + c0 / 32 + g;
            memcpy((uint8_t *)insparse_q4t_scale(m, g, r, 0), &b->d, 2);
            memcpy((uint8_t *)insparse_q4t_scale(m, g, r, 1), &b->m, 2);
            for (int e = 0; e < 32; e++) {
                const int q = e < 16 ? b->qs[e] & 15 : b->qs[e - 16] >> 4;
                uint8_t *row = (uint8_t *)insparse_q4t_row(m, g, e, c);
                row[byte] |= (uint8_t)(q << shift);
            }
        }
    }
    return 0;
}

void insparse_q4t_free(struct insparse_q4t *m) {
    free(m->data);
    memset(m, 0, sizeof *m);
}

int insparse_q4t_nibble(const struct insparse_q4t *m, int64_t r, int64_t i) {
    const int o = (int)(r % 64);
    const uint8_t b = insparse_q4t_row(m, i / 32, (int)(i % 32), r / 64)[q4t_byte(o)];
    return o < 32 ? b & 15 : b >> 4;
}

int64_t insparse_q4t_dot_ref(const struct insparse_q4t *m, const block_q8_1 *xq, float *acc, float *accm,
                             int64_t c0, int64_t c1, int64_t g0, int64_t g1) {
    int64_t read = 0;
    for (int64_t r = 64 * c0; r < 64 * c1; r++) {
        float a = 0.0f, am = 0.0f;
        for (int64_t g = g0; g < g1; g++) {
            int isum = 0, any = 0;
            for (int e = 0; e < 32; e++) {
                if (!xq[g].qs[e]) continue;
                any = 1;
                isum += insparse_q4t_nibble(m, r, 32 * g + e) * xq[g].qs[e];
                if (r % 64 == 0) read++;
            }
            if (!any) continue;
            uint16_t d, mm;
            memcpy(&d, insparse_q4t_scale(m, g, r, 0), 2);
            memcpy(&mm, insparse_q4t_scale(m, g, r, 1), 2);
            a = fmaf(fp16_to_f32(d) * fp16_to_f32(xq[g].d), (float)isum, a);
            am = fmaf(fp16_to_f32(mm), fp16_to_f32(xq[g].s), am);
        }
        acc[r] = a;
        accm[r] = am;
    }
    return read;
}


int64_t insparse_q4t_dot(const struct insparse_q4t *m, const block_q8_1 *xq, float *acc, float *accm, int64_t c0,
                         int64_t c1, int64_t g0, int64_t g1) {
    pthread_once(&g_once, kernels_init);
    return g_q4t_dot(m, xq, acc, accm, c0, c1, g0, g1);
}

size_t insparse_q4t_scratch_bytes(const struct insparse_q4t *m, int n_tok) {
    return (size_t)n_tok * ((size_t)(m->n_in / 32) * sizeof(block_q8_1) + 2 * (size_t)m->n_out * sizeof(float));
}

struct q4t_call {
    const struct insparse_q4t *m;
    const block_q8_1 *xq;
    float *acc, *accm, *y;
    int64_t *iacc;
    int64_t ldy, group;
    int n_tok;
    _Atomic int64_t read;
};

static void q4t_worker(void *arg, int ith, int nth) {
    struct q4t_call *c = arg;
    const int64_t nc = c->m->n_out / 64, ng = c->m->n_in / 32, n_out = c->m->n_out;
    const int64_t nb = (nc + INSPARSE_Q4T_BAND - 1) / INSPARSE_Q4T_BAND; /* whole bands: contiguous reads */
    const int64_t c0 = nb * ith / nth * INSPARSE_Q4T_BAND, c1e = nb * (ith + 1) / nth * INSPARSE_Q4T_BAND,
                  c1 = c1e < nc ? c1e : nc;
    if (c0 == c1) return;
    const int64_t gg = c->group ? c->group / 32 : ng;
    int64_t read = 0;
    for (int t = 0; t < c->n_tok; t++) {
        float *acc = c->acc + (size_t)t * (size_t)n_out, *accm = c->accm + (size_t)t * (size_t)n_out;
        for (int64_t g0 = 0; g0 < ng; g0 += gg) {
            const int64_t g1 = g0 + gg < ng ? g0 + gg : ng;
            read += insparse_q4t_dot(c->m, c->xq + (size_t)t * (size_t)ng, acc, accm, c0, c1, g0, g1);
            for (int64_t r = 64 * c0; r < 64 * c1; r++) acc[r] += accm[r];
            if (c->iacc)
                ffn_acc_add_fixed(c->iacc + (size_t)t * (size_t)c->ldy + 64 * c0, acc + 64 * c0,
                                  (size_t)(64 * (c1 - c0)));
            else
                memcpy(c->y + (size_t)t * (size_t)c->ldy + 64 * c0, acc + 64 * c0,
                       (size_t)(64 * (c1 - c0)) * sizeof(float));
        }
    }
    atomic_fetch_add(&c->read, read);
}

int64_t insparse_q4t_matmul(const struct insparse_q4t *m, const float *x, int n_tok, float *y, void *scratch,
                            struct tpool *tp, char *err, size_t errlen) {
    return insparse_q4t_matmul_ex(m, x, m->n_in, n_tok, y, NULL, m->n_out, 0, scratch, tp, err, errlen);
}

int64_t insparse_q4t_matmul_ex(const struct insparse_q4t *m, const float *x, int64_t ldx, int n_tok, float *y,
                               int64_t *acc, int64_t ldy, int64_t group, void *scratch, struct tpool *tp, char *err,
                               size_t errlen) {
    const struct quant_traits *q8 = quant_traits(HEARTH_TYPE_Q8_1);
    if (!q8 || !q8->from_float || n_tok <= 0 || (!y == !acc) || group < 0 || group % 32 || (y && group) ||
        ldx < m->n_in || ldy < m->n_out) {
        snprintf(err, errlen, "insparse: a q4t product needs the Q8_1 quantiser, at least one token, one output "
                              "(y, or acc with whole groups of 32) and strides that hold a row");
        return -1;
    }
    const int64_t ng = m->n_in / 32;
    block_q8_1 *xq = scratch;
    float *tmp = (float *)(xq + (size_t)n_tok * (size_t)ng);
    for (int t = 0; t < n_tok; t++) q8->from_float(x + (size_t)t * (size_t)ldx, xq + (size_t)t * (size_t)ng, m->n_in);
    struct q4t_call c = {m, xq, tmp, tmp + (size_t)n_tok * (size_t)m->n_out, y, acc, ldy, group, n_tok, 0};
    tpool_run(tp, q4t_worker, &c);
    return atomic_load(&c.read) / (m->n_out / 64);
}

/* ---- input sparsity's weights in a layer ---- */

const char *insparse_mat_name(int mat) {
    static const char *const names[INSPARSE_N_MATS] = {"q", "k", "v", "o", "gate", "up", "down"};
    return mat >= 0 && mat < INSPARSE_N_MATS ? names[mat] : "?";
}

int insparse_mat_site(int mat) {
    static const int sites[INSPARSE_N_MATS] = {INSPARSE_QKV, INSPARSE_QKV, INSPARSE_QKV, INSPARSE_O,
                                               INSPARSE_GU,  INSPARSE_GU,  INSPARSE_DOWN};
    return sites[mat];
}

const struct weight *insparse_mat_weight(const struct llama_layer *L, int mat) {
    const struct weight *all[INSPARSE_N_MATS] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    return all[mat];
}

void insparse_layer_free(struct insparse_layer *IL) {
    for (int k = 0; k < INSPARSE_N_MATS; k++) {
        if (!IL->q4t[k]) continue;
        insparse_q4t_free(IL->q4t[k]);
        free(IL->q4t[k]);
        IL->q4t[k] = NULL;
    }
    IL->n0 = IL->n1 = 0;
}

int insparse_layer_build(struct insparse_layer *IL, const struct llama_layer *L, const int *use, int64_t n0,
                         int64_t n1, size_t *bytes, char *err, size_t errlen) {
    insparse_layer_free(IL);
    for (int k = 0; k < INSPARSE_N_MATS; k++) {
        if (!use[k]) continue;
        const struct weight *w = insparse_mat_weight(L, k);
        const int site = insparse_mat_site(k), ffn = site >= INSPARSE_GU;
        if (!w->data) continue; /* an ungated FFN's gate */
        struct insparse_q4t *q = malloc(sizeof *q);
        char inner[256];
        int rc = -1;
        if (!q) snprintf(inner, sizeof inner, "out of memory");
        else if (!ffn) rc = insparse_q4t_build(q, w, inner, sizeof inner);
        else if (site == INSPARSE_GU) rc = insparse_q4t_build_range(q, w, n0, n1, 0, w->n_in, inner, sizeof inner);
        else rc = insparse_q4t_build_range(q, w, 0, w->n_out, n0, n1, inner, sizeof inner);
        if (rc != 0) {
            free(q);
            insparse_layer_free(IL);
            snprintf(err, errlen, "input-major %s: %s", insparse_mat_name(k), inner);
            return -1;
        }
        IL->q4t[k] = q;
        if (bytes) *bytes += (size_t)(q->n_in / 32) * q->group_bytes;
    }
    IL->n0 = n0;
    IL->n1 = n1;
    return 0;
}

const struct insparse_q4t *insparse_layer_q4t(const struct insparse_layer *IL, int mat, int64_t n0, int64_t n1,
                                              int n_tok) {
    const struct insparse_q4t *q = IL->q4t[mat];
    if (!q || n_tok > INSPARSE_Q4T_MAX_TOKENS) return NULL;
    if (insparse_mat_site(mat) >= INSPARSE_GU && (n0 != IL->n0 || n1 != IL->n1)) return NULL;
    return q;
}

int insparse_layers_apply(struct insparse_layer *ils, const struct llama_layer *layers, int n_layers,
                          const float *thr, const int32_t *use, int attn, int ffn, const int64_t *n0,
                          const int64_t *n1, size_t *bytes, char *err, size_t errlen) {
    size_t total = 0;
    for (int l = 0; l < n_layers; l++) {
        const struct llama_layer *L = &layers[l];
        struct insparse_layer *IL = &ils[l];
        const int64_t a = n0 ? n0[l] : 0, b = n1 ? n1[l] : L->w_up.n_out;
        int u[INSPARSE_N_MATS];
        for (int k = 0; k < INSPARSE_N_MATS; k++) {
            const int is_ffn = insparse_mat_site(k) >= INSPARSE_GU;
            u[k] = use[l * INSPARSE_N_MATS + k] && (is_ffn ? ffn && b > a : attn);
        }
        for (int site = 0; site < INSPARSE_N_SITES; site++)
            if (site >= INSPARSE_GU ? ffn : attn) IL->thr[site] = thr[l * INSPARSE_N_SITES + site];
        char inner[256];
        if (insparse_layer_build(IL, L, u, a, b, &total, inner, sizeof inner)) {
            snprintf(err, errlen, "layer %d: %s", l, inner);
            return -1;
        }
    }
    if (bytes) *bytes = total;
    return 0;
}

/* ---- input sparsity in a pass ---- */

int insparse_model_create(struct insparse_model *im, int n_layers, char *err, size_t errlen) {
    memset(im, 0, sizeof *im);
    im->layers = calloc((size_t)(n_layers > 0 ? n_layers : 1), sizeof *im->layers);
    if (!im->layers) {
        snprintf(err, errlen, "out of memory for input sparsity's %d layers", n_layers);
        return -1;
    }
    im->n_layers = n_layers;
    return 0;
}

void insparse_model_free(struct insparse_model *im) {
    for (int l = 0; im->layers && l < im->n_layers; l++) insparse_layer_free(&im->layers[l]);
    free(im->layers);
    free(im->scratch);
    memset(im, 0, sizeof *im);
}

static void tap_input(void *ctx, int l, int site, float *x, int64_t count, int64_t col0, int64_t width) {
    const struct insparse_model *im = ctx;
    insparse_mask(&im->layers[l], site, x, count, col0, width);
}

static int tap_owns(void *ctx, int l, int mat, int64_t n0, int64_t n1, int n) {
    const struct insparse_model *im = ctx;
    return insparse_layer_q4t(&im->layers[l], mat, n0, n1, n) != NULL;
}

static int tap_product(void *ctx, int l, int mat, int64_t n0, int64_t n1, const float *x, int64_t ldx, int n,
                       float *y, int64_t *acc, int64_t ldy, int64_t group, struct tpool *tp, char *err,
                       size_t errlen) {
    struct insparse_model *im = ctx;
    const struct insparse_q4t *q = insparse_layer_q4t(&im->layers[l], mat, n0, n1, n);
    if (!q) {
        snprintf(err, errlen, "layer %d %s: no input-major copy for neurons [%lld, %lld) and %d rows", l,
                 insparse_mat_name(mat), (long long)n0, (long long)n1, n);
        return -1;
    }
    const size_t need = insparse_q4t_scratch_bytes(q, n);
    if (need > im->scratch_bytes) {
        void *p = realloc(im->scratch, need);
        if (!p) {
            snprintf(err, errlen, "out of memory for an input-sparse product of %d tokens", n);
            return -1;
        }
        im->scratch = p;
        im->scratch_bytes = need;
    }
    const int64_t rows = insparse_q4t_matmul_ex(q, x, ldx, n, y, acc, ldy, group, im->scratch, tp, err, errlen);
    if (rows < 0) return -1;
    const uint64_t row_bytes = (uint64_t)q->group_bytes / 32;
    im->read_bytes += (uint64_t)rows * row_bytes;
    im->dense_bytes += (uint64_t)n * (uint64_t)q->n_in * row_bytes;
    return 0;
}

struct layer_taps insparse_taps(struct insparse_model *im) {
    return (struct layer_taps){.ctx = im, .input = tap_input, .owns = tap_owns, .product = tap_product};
}
