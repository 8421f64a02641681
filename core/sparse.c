/* sparse: see sparse.h. Two tpool runs per call: phase 1 computes h for the
 * candidates and lists the fired ones per (token, group); phase 2 folds the
 * fired down_t rows of each group into y and adds y to acc in fixed point. */
#include "sparse.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ffn_sum.h"
#include "fp16.h"

#if defined(HEARTH_HAVE_AVX2_BUILD)
void sparse_down_q8_0_avx2(float *y, const block_q8_0 *rows, int64_t row_blocks, const int32_t *idx, const float *h,
                           int cnt, int64_t b0, int64_t b1);
#endif

/* Bytes of quantized activations per 32 elements, bounding every
 * vec_dot_type (Q8_0 34, Q8_1 36, Q8_K 292 per 256 = 36.5). */
#define SPARSE_XQ_BYTES_PER_32 40

void sparse_down_q8_0_ref(float *y, const block_q8_0 *rows, int64_t row_blocks, const int32_t *idx, const float *h,
                          int cnt, int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
        float *yb = y + b * QK8_0;
        for (int i = 0; i < QK8_0; i++) yb[i] = 0.0f;
        for (int k = 0; k < cnt; k++) {
            const block_q8_0 *blk = rows + (int64_t)idx[k] * row_blocks + b;
            const float s = h[k] * fp16_to_f32(blk->d);
            /* one rounding per step, as _mm256_fmadd_ps: bit-identical to AVX2 */
            for (int i = 0; i < QK8_0; i++) yb[i] = fmaf(s, (float)blk->qs[i], yb[i]);
        }
    }
}

static sparse_down_fn g_down;
static pthread_once_t g_down_once = PTHREAD_ONCE_INIT;

static void down_init(void) {
    g_down = sparse_down_q8_0_ref;
#if defined(HEARTH_HAVE_AVX2_BUILD)
    if (quant_have_avx2()) { /* the CPU check and HEARTH_NO_SIMD rule of the quant kernels */
        g_down = sparse_down_q8_0_avx2;
    }
#endif
}

static sparse_down_fn down_kernel(void) {
    pthread_once(&g_down_once, down_init);
    return g_down;
}

void sparse_down_q8_0(float *y, const block_q8_0 *rows, int64_t row_blocks, const int32_t *idx, const float *h,
                      int cnt, int64_t b0, int64_t b1) {
    down_kernel()(y, rows, row_blocks, idx, h, cnt, b0, b1);
}

size_t sparse_down_row_bytes(const struct sparse_ffn *sf) {
    return (size_t)(sf->dim / QK8_0) * sizeof(block_q8_0);
}

/* gate/up must have a dot kernel whose activation rows fit a token of dim */
static int check_dot_weight(const struct weight *w, const char *what, int64_t dim, int64_t hidden, char *err,
                            size_t errlen) {
    const struct quant_traits *tr = quant_traits((enum hearth_type)w->type);
    if (!tr || !tr->vec_dot) {
        snprintf(err, errlen, "sparse: ffn_%s type %s (id %u) has no dot kernel", what,
                 hearth_type_name(w->type), (unsigned)w->type);
        return -1;
    }
    const struct quant_traits *xtr = quant_traits(tr->vec_dot_type);
    if (!xtr || !xtr->from_float || dim % tr->blck || dim % xtr->blck) {
        snprintf(err, errlen, "sparse: ffn_%s: d_model %lld is not a multiple of the %s block", what,
                 (long long)dim, tr->name);
        return -1;
    }
    if (!w->data || w->n_in != dim || w->n_out != hidden) {
        snprintf(err, errlen, "sparse: ffn_%s is %lld x %lld, expected %lld neurons of %lld", what,
                 (long long)w->n_out, (long long)w->n_in, (long long)hidden, (long long)dim);
        return -1;
    }
    return 0;
}

/* down_t[j][b] = Q8_0 of down[32b .. 32b+32)[ids[j]]: 32 of down's rows are
 * dequantized at a time (each row once), then every slice column is gathered
 * from them. The reference quantizer keeps down_t machine-independent. */
static int build_down_t(struct sparse_ffn *sf, const struct weight *down, char *err, size_t errlen) {
    const struct quant_traits *dtr = quant_traits((enum hearth_type)down->type);
    const struct quant_traits *q8 = quant_traits(HEARTH_TYPE_Q8_0);
    const int64_t nblk = sf->dim / QK8_0, hidden = sf->hidden;
    const size_t row_bytes = hearth_row_size(down->type, hidden);
    float *tmp = malloc((size_t)QK8_0 * (size_t)hidden * sizeof(float));
    if (!tmp) {
        snprintf(err, errlen, "sparse: out of memory for 32 dequantized ffn_down rows of %lld", (long long)hidden);
        return -1;
    }
    for (int64_t b = 0; b < nblk; b++) {
        for (int i = 0; i < QK8_0; i++)
            dtr->to_float((const char *)down->data + (size_t)(b * QK8_0 + i) * row_bytes, tmp + (size_t)i * hidden,
                          hidden);
        for (int64_t j = 0; j < sf->n; j++) {
            float col[QK8_0];
            for (int i = 0; i < QK8_0; i++) col[i] = tmp[(size_t)i * hidden + sf->ids[j]];
            q8->from_float_ref(col, &sf->down_t[j * nblk + b], QK8_0);
        }
    }
    free(tmp);
    return 0;
}

int sparse_ffn_init(struct sparse_ffn *sf, const struct llama_config *c, const struct llama_layer *L,
                    const int32_t *ids, int64_t n, int64_t pos0, float threshold, char *err, size_t errlen) {
    memset(sf, 0, sizeof *sf);
    const int64_t dim = c->dim, hidden = L->w_up.n_out;
    if (dim <= 0 || dim % QK8_0) {
        snprintf(err, errlen, "sparse: d_model %lld is not a positive multiple of 32 (the Q8_0 block of down_t)",
                 (long long)dim);
        return -1;
    }
    if (pos0 < 0 || pos0 % SPARSE_GROUP) {
        snprintf(err, errlen, "sparse: slice start %lld is not a multiple of SPARSE_GROUP (%d)", (long long)pos0,
                 SPARSE_GROUP);
        return -1;
    }
    if (n < 0 || n > INT32_MAX || (n > 0 && !ids)) {
        snprintf(err, errlen, "sparse: slice of %lld neurons%s", (long long)n, n > 0 && !ids ? " without ids" : "");
        return -1;
    }
    if (check_dot_weight(&L->w_up, "up", dim, hidden, err, errlen)) return -1;
    if (c->ffn_gated && check_dot_weight(&L->w_gate, "gate", dim, hidden, err, errlen)) return -1;
    const struct quant_traits *dtr = quant_traits((enum hearth_type)L->w_down.type);
    if (!dtr || !dtr->to_float) {
        snprintf(err, errlen, "sparse: ffn_down type %s (id %u) cannot be dequantized",
                 hearth_type_name(L->w_down.type), (unsigned)L->w_down.type);
        return -1;
    }
    if (!L->w_down.data || L->w_down.n_in != hidden || L->w_down.n_out != dim || hidden % dtr->blck) {
        snprintf(err, errlen, "sparse: ffn_down is %lld x %lld (%s), expected %lld rows of %lld neurons",
                 (long long)L->w_down.n_out, (long long)L->w_down.n_in, dtr->name, (long long)dim,
                 (long long)hidden);
        return -1;
    }
    for (int64_t j = 0; j < n; j++)
        if (ids[j] < 0 || ids[j] >= hidden) {
            snprintf(err, errlen, "sparse: ids[%lld] = %d is outside the layer's %lld neurons", (long long)j,
                     (int)ids[j], (long long)hidden);
            return -1;
        }

    sf->dim = dim;
    sf->n = n;
    sf->pos0 = pos0;
    sf->hidden = hidden;
    sf->ids = ids;
    sf->gated = c->ffn_gated;
    sf->act = c->ffn_act;
    sf->up = L->w_up;
    if (c->ffn_gated) sf->gate = L->w_gate;
    sf->threshold = threshold;
    const size_t bytes = (size_t)n * sparse_down_row_bytes(sf);
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) {
        snprintf(err, errlen, "sparse: out of memory for down_t (%lld neurons x %lld, %.1f MiB)", (long long)n,
                 (long long)dim, (double)bytes / (1 << 20));
        memset(sf, 0, sizeof *sf);
        return -1;
    }
    sf->down_t = p;
    if (build_down_t(sf, &L->w_down, err, errlen) != 0) {
        sparse_ffn_free(sf);
        return -1;
    }
    return 0;
}

void sparse_ffn_free(struct sparse_ffn *sf) {
    if (!sf) return;
    free(sf->down_t);
    memset(sf, 0, sizeof *sf);
}

static int64_t groups_of(int64_t n) { return (n + SPARSE_GROUP - 1) / SPARSE_GROUP; }

int sparse_scratch_create(struct sparse_scratch *ss, int64_t dim, int64_t max_n, int max_tok, char *err,
                          size_t errlen) {
    memset(ss, 0, sizeof *ss);
    if (dim <= 0 || dim % QK8_0 || max_n < 0 || max_tok < 1) {
        snprintf(err, errlen, "sparse: scratch for d_model %lld, %lld neurons, %d tokens is not possible",
                 (long long)dim, (long long)max_n, max_tok);
        return -1;
    }
    const size_t T = (size_t)max_tok, N = (size_t)max_n + 1;
    ss->dim = dim;
    ss->max_n = max_n;
    ss->max_tok = max_tok;
    ss->xq_bytes = T * (size_t)(dim / 32) * SPARSE_XQ_BYTES_PER_32;
    ss->xq_up = malloc(ss->xq_bytes);
    ss->xq_gate = malloc(ss->xq_bytes);
    ss->h = malloc(T * N * sizeof(float));
    ss->idx = malloc(T * N * sizeof(int32_t));
    ss->nfired = malloc(T * (size_t)(groups_of(max_n) + 1) * sizeof(int32_t));
    ss->y = malloc((size_t)dim * sizeof(float));
    if (!ss->xq_up || !ss->xq_gate || !ss->h || !ss->idx || !ss->nfired || !ss->y) {
        snprintf(err, errlen, "sparse: out of memory for the scratch of %d tokens x %lld neurons", max_tok,
                 (long long)max_n);
        sparse_scratch_free(ss);
        return -1;
    }
    return 0;
}

void sparse_scratch_free(struct sparse_scratch *ss) {
    if (!ss) return;
    free(ss->xq_up);
    free(ss->xq_gate);
    free(ss->h);
    free(ss->idx);
    free(ss->nfired);
    free(ss->y);
    memset(ss, 0, sizeof *ss);
}

struct sparse_task {
    const struct sparse_ffn *sf;
    const uint8_t *cand;
    int n_tok;
    int64_t *acc;
    float *y; /* [dim]: phase 2's threads write disjoint column ranges */
    const struct quant_traits *utr, *gtr;
    const uint8_t *xq_up, *xq_gate; /* [n_tok] rows */
    size_t xq_up_row, xq_gate_row;
    const float *xn;
    float *h;
    int32_t *idx, *nfired;
    int64_t stride;   /* h/idx entries per token (scratch max_n + 1) */
    int64_t g_stride; /* nfired entries per token */
    int64_t n_groups; /* groups of the slice */
    sparse_down_fn down;
    void (*acc_add)(int64_t *acc, const float *y, size_t count);
    atomic_llong next;
    atomic_llong evaluated, fired;
};

/* Activations quantized per token, tokens split across threads. */
static void quantize_worker(void *arg, int ith, int nth) {
    struct sparse_task *t = arg;
    const int64_t dim = t->sf->dim;
    for (int tok = ith; tok < t->n_tok; tok += nth) {
        const float *x = t->xn + (size_t)tok * dim;
        if (t->utr->vec_dot_type != HEARTH_TYPE_F32)
            quant_traits(t->utr->vec_dot_type)->from_float(x, (uint8_t *)t->xq_up + tok * t->xq_up_row, dim);
        if (t->gtr && t->xq_gate != t->xq_up && t->gtr->vec_dot_type != HEARTH_TYPE_F32)
            quant_traits(t->gtr->vec_dot_type)->from_float(x, (uint8_t *)t->xq_gate + tok * t->xq_gate_row, dim);
    }
}

/* Phase 1: whole groups from a shared counter (any split gives the same
 * lists); within a group neuron-major so a candidate's gate/up rows stay in
 * cache for all tokens. */
static void h_worker(void *arg, int ith, int nth) {
    struct sparse_task *t = arg;
    (void)nth; /* the counter hands out the groups */
    const struct sparse_ffn *sf = t->sf;
    const int64_t dim = sf->dim, n = sf->n;
    const size_t urow = hearth_row_size(sf->up.type, dim);
    const size_t grow = sf->gated ? hearth_row_size(sf->gate.type, dim) : 0;
    int64_t evaluated = 0, fired = 0;
    for (int64_t k = ith; k < t->n_groups; k = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed)) {
        const int64_t j0 = k * SPARSE_GROUP, j1 = j0 + SPARSE_GROUP < n ? j0 + SPARSE_GROUP : n;
        for (int tok = 0; tok < t->n_tok; tok++) t->nfired[tok * t->g_stride + k] = 0;
        for (int64_t j = j0; j < j1; j++) {
            const uint8_t *ur = (const uint8_t *)sf->up.data + (size_t)sf->ids[j] * urow;
            const uint8_t *gr = sf->gated ? (const uint8_t *)sf->gate.data + (size_t)sf->ids[j] * grow : NULL;
            for (int tok = 0; tok < t->n_tok; tok++) {
                if (t->cand && !t->cand[(size_t)tok * n + j]) continue;
                evaluated++;
                /* CATS: the gate decides; a neuron below the threshold
                 * never reads its up row (nor its down row) */
                float u, g, h;
                if (sf->gated) {
                    t->gtr->vec_dot(dim, &g, gr, t->xq_gate + tok * t->xq_gate_row);
                    const float a = ffn_activation(g, sf->act);
                    if (!(fabsf(a) * (sf->scale ? sf->scale[j] : 1.0f) > sf->threshold)) continue;
                    t->utr->vec_dot(dim, &u, ur, t->xq_up + tok * t->xq_up_row);
                    h = a * u;
                } else {
                    t->utr->vec_dot(dim, &u, ur, t->xq_up + tok * t->xq_up_row);
                    h = ffn_activation(u, sf->act);
                    if (!(fabsf(h) * (sf->scale ? sf->scale[j] : 1.0f) > sf->threshold)) continue;
                }
                int32_t *cnt = &t->nfired[tok * t->g_stride + k];
                const int64_t slot = tok * t->stride + j0 + *cnt;
                t->idx[slot] = (int32_t)j;
                t->h[slot] = h;
                (*cnt)++;
                fired++;
            }
        }
    }
    atomic_fetch_add_explicit(&t->evaluated, evaluated, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->fired, fired, memory_order_relaxed);
}

/* Phase 2: thread ith owns columns [32 b0, 32 b1) of every token's output. */
static void down_worker(void *arg, int ith, int nth) {
    struct sparse_task *t = arg;
    const struct sparse_ffn *sf = t->sf;
    const int64_t dim = sf->dim, nblk = dim / QK8_0;
    const int64_t b0 = nblk * ith / nth, b1 = nblk * (ith + 1) / nth;
    if (b1 == b0) return;
    for (int64_t k = 0; k < t->n_groups; k++)
        for (int tok = 0; tok < t->n_tok; tok++) {
            const int cnt = t->nfired[tok * t->g_stride + k];
            if (cnt == 0) continue; /* adding 0 would change nothing */
            const int64_t slot = tok * t->stride + k * SPARSE_GROUP;
            t->down(t->y, sf->down_t, nblk, t->idx + slot, t->h + slot, cnt, b0, b1);
            t->acc_add(t->acc + (size_t)tok * dim + b0 * QK8_0, t->y + b0 * QK8_0, (size_t)(b1 - b0) * QK8_0);
        }
}

int sparse_ffn_run(const struct sparse_ffn *sf, const float *xn, int n_tok, const uint8_t *cand, int64_t *acc,
                   struct sparse_stats *st, struct sparse_scratch *ss, struct tpool *tp, char *err, size_t errlen) {
    if (!sf || !ss || (sf->n > 0 && !sf->down_t)) {
        snprintf(err, errlen, "sparse: run without %s", !sf ? "a slice" : !ss ? "a scratch" : "an initialised slice");
        return -1;
    }
    if (n_tok < 0 || n_tok > ss->max_tok) {
        snprintf(err, errlen, "sparse: %d tokens exceed the scratch's capacity of %d", n_tok, ss->max_tok);
        return -1;
    }
    if (sf->n > ss->max_n || sf->dim != ss->dim) {
        snprintf(err, errlen,
                 "sparse: scratch made for d_model %lld and %lld neurons cannot run a slice of d_model %lld and "
                 "%lld neurons",
                 (long long)ss->dim, (long long)ss->max_n, (long long)sf->dim, (long long)sf->n);
        return -1;
    }
    if (n_tok == 0 || sf->n == 0) return 0;
    if (!xn || !acc) {
        snprintf(err, errlen, "sparse: NULL %s", !xn ? "input" : "accumulator");
        return -1;
    }

    struct sparse_task t;
    memset(&t, 0, sizeof t);
    t.sf = sf;
    t.cand = cand;
    t.n_tok = n_tok;
    t.acc = acc;
    t.xn = xn;
    t.utr = quant_traits((enum hearth_type)sf->up.type);
    t.gtr = sf->gated ? quant_traits((enum hearth_type)sf->gate.type) : NULL;
    /* activation rows: the up type's, and the gate type's only when it differs
     * (a scratch of this dim holds n_tok rows of any vec_dot_type) */
    t.xq_up_row = hearth_row_size(t.utr->vec_dot_type, sf->dim);
    t.xq_up = t.utr->vec_dot_type == HEARTH_TYPE_F32 ? (const uint8_t *)xn : ss->xq_up;
    if (t.gtr) {
        t.xq_gate_row = hearth_row_size(t.gtr->vec_dot_type, sf->dim);
        if (t.gtr->vec_dot_type == t.utr->vec_dot_type)
            t.xq_gate = t.xq_up;
        else
            t.xq_gate = t.gtr->vec_dot_type == HEARTH_TYPE_F32 ? (const uint8_t *)xn : ss->xq_gate;
    }
    t.h = ss->h;
    t.idx = ss->idx;
    t.nfired = ss->nfired;
    t.stride = ss->max_n + 1;
    t.g_stride = groups_of(ss->max_n) + 1;
    t.n_groups = groups_of(sf->n);
    t.y = ss->y;
    t.down = down_kernel();
    t.acc_add = ffn_acc_add_fixed_fast;
    atomic_init(&t.evaluated, 0);
    atomic_init(&t.fired, 0);

    const int nth = tpool_size(tp);
    if (n_tok == 1 || nth == 1)
        quantize_worker(&t, 0, 1);
    else
        tpool_run(tp, quantize_worker, &t);
    atomic_init(&t.next, nth);
    tpool_run(tp, h_worker, &t);
    tpool_run(tp, down_worker, &t);
    if (st) {
        st->evaluated += atomic_load_explicit(&t.evaluated, memory_order_relaxed);
        st->fired += atomic_load_explicit(&t.fired, memory_order_relaxed);
    }
    return 0;
}
