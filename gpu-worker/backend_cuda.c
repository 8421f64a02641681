/* backend_cuda: the GPU worker's backend on cuda/'s kernels. Each step does
 * what backend_host does (core/forward.c), on the device; the only host
 * round trips are the ones the runtime needs: the FFN input goes to the CPU
 * workers (pinned buffer), their int64 partials come back (added on the host
 * into a pinned buffer, uploaded once per layer), and the logits. */
#include "backend_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "hearth_cuda.h"
#include "log.h"
#include "quant.h"

/* a matrix on the device, in its GGUF type */
struct dweight {
    void *d;
    enum hearth_type type;
    int64_t n_in, n_out;
};

struct cu_layer {
    float *attn_norm, *ffn_norm, *bq, *bk, *bv; /* bq.. NULL when absent */
    struct dweight wq, wk, wv, wo;
    struct hcu_kv kv;
    /* hot FFN: n_hot neurons; [hot_n0, hot_n1) when they are that range
     * (-1 otherwise); gate/up rows [n_hot, dim]; down_t [n_hot, dim]; seg
     * [n_seg + 1] (see hcu_ffn_down_fixed) */
    int64_t n_hot, hot_n0, hot_n1;
    struct dweight gate, up;
    float *down_t;
    int32_t *seg;
    int n_seg;
};

/* a device allocation, for freeing everything at destroy */
struct dalloc {
    void *d;
    size_t bytes;
};

struct cuda_be {
    struct hcu_ctx *c;
    const struct llama_model *m;
    int n_ctx, max_batch;
    struct seq_span span; /* the step's one span (one sequence: see cuda_begin) */
    struct cu_layer *L;
    struct dweight embd, output;
    float *output_norm, *inv_freq;
    /* activations, [max_batch, width] as in struct llama_state */
    float *x, *xb, *xb2, *q, *k, *v, *att_out, *gate, *up, *h, *att, *logits;
    int64_t *acc, *part;
    int32_t *tokens;
    float *h_xn;    /* pinned [max_batch, dim]: the FFN input for the CPU workers */
    int64_t *h_acc; /* pinned [max_batch, dim]: the CPU workers' partials, summed */
    /* a failure in a step function that returns void, reported by the next one that can */
    int failed;
    char failmsg[640];
    struct dalloc *allocs;
    size_t n_allocs, cap_allocs;
};

static struct cuda_be *CB(struct gpu_backend *b) { return b->impl; }

static void *dalloc(struct cuda_be *cb, size_t bytes, char *err, size_t errlen) {
    if (cb->n_allocs == cb->cap_allocs) {
        size_t cap = cb->cap_allocs ? 2 * cb->cap_allocs : 64;
        struct dalloc *a = realloc(cb->allocs, cap * sizeof *a);
        if (!a) {
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        cb->allocs = a;
        cb->cap_allocs = cap;
    }
    void *d = hcu_alloc(cb->c, bytes, err, errlen);
    if (d) cb->allocs[cb->n_allocs++] = (struct dalloc){d, bytes};
    return d;
}

static void dfree(struct cuda_be *cb, void *d) {
    if (!d) return;
    for (size_t i = 0; i < cb->n_allocs; i++) {
        if (cb->allocs[i].d == d) {
            hcu_free(cb->c, d, cb->allocs[i].bytes);
            cb->allocs[i] = cb->allocs[--cb->n_allocs];
            return;
        }
    }
}

static void *upload(struct cuda_be *cb, const void *h, size_t bytes, char *err, size_t errlen) {
    void *d = dalloc(cb, bytes, err, errlen);
    if (d && hcu_upload(cb->c, d, h, bytes, err, errlen) != 0) return NULL;
    return d;
}

static float *upload_f32(struct cuda_be *cb, const float *h, int64_t n, char *err, size_t errlen) {
    return h ? upload(cb, h, (size_t)n * sizeof(float), err, errlen) : NULL;
}

static int upload_weight(struct cuda_be *cb, struct dweight *dw, const struct weight *w, const char *name, int layer,
                         char *err, size_t errlen) {
    if (!hcu_type_supported((enum hearth_type)w->type)) {
        snprintf(err, errlen, "cuda backend: layer %d %s is %s, which has no CUDA kernel", layer, name,
                 hearth_type_name(w->type));
        return -1;
    }
    dw->type = (enum hearth_type)w->type;
    dw->n_in = w->n_in;
    dw->n_out = w->n_out;
    dw->d = upload(cb, w->data, hearth_row_size(w->type, w->n_in) * (size_t)w->n_out, err, errlen);
    return dw->d ? 0 : -1;
}

static int mm(struct cuda_be *cb, float *y, const struct dweight *w, const float *x, int n, char *err,
              size_t errlen) {
    return hcu_matmul(cb->c, y, w->d, w->type, x, w->n_in, w->n_out, n, err, errlen);
}

static int check_failed(struct cuda_be *cb, char *err, size_t errlen) {
    if (!cb->failed) return 0;
    snprintf(err, errlen, "%s", cb->failmsg);
    return -1;
}

static int cuda_begin(struct gpu_backend *b, const int32_t *tokens, int n, const struct seq_span *spans, int n_spans,
                      char *err, size_t errlen) {
    struct cuda_be *cb = CB(b);
    if (check_failed(cb, err, errlen)) return -1;
    /* the device holds one sequence's KV cache (a pool of several is left
     * to the CUDA issue, with the rest of this backend's first run) */
    if (n_spans != 1 || spans[0].seq != 0 || spans[0].n != n) {
        snprintf(err, errlen, "cuda backend: one sequence per step (a step of %d spans, first of sequence %d)",
                 n_spans, n_spans > 0 ? spans[0].seq : -1);
        return -1;
    }
    if (n < 1 || n > cb->max_batch) {
        snprintf(err, errlen, "step of %d tokens outside [1, %d]", n, cb->max_batch);
        return -1;
    }
    cb->span = spans[0];
    for (int t = 0; t < n; t++) {
        if (tokens[t] < 0 || tokens[t] >= cb->m->cfg.n_vocab) {
            snprintf(err, errlen, "token id %d outside the vocabulary", tokens[t]);
            return -1;
        }
    }
    if (hcu_upload(cb->c, cb->tokens, tokens, (size_t)n * sizeof *tokens, err, errlen)) return -1;
    return hcu_embed(cb->c, cb->x, cb->embd.d, cb->embd.type, cb->m->cfg.dim, cb->tokens, n, err, errlen);
}

static int cuda_attention(struct gpu_backend *b, int layer, char *err, size_t errlen) {
    struct cuda_be *cb = CB(b);
    const int n = cb->span.n, pos0 = cb->span.pos0;
    const struct llama_config *c = &cb->m->cfg;
    struct cu_layer *L = &cb->L[layer];
    struct hcu_ctx *hc = cb->c;
    const int hd = c->head_dim, q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;
    if (check_failed(cb, err, errlen)) return -1;
    if (pos0 < 0 || n > cb->n_ctx - pos0) {
        snprintf(err, errlen, "positions %d..%d outside the context of %d", pos0, pos0 + n - 1, cb->n_ctx);
        return -1;
    }
    if (hcu_rmsnorm(hc, cb->xb, cb->x, L->attn_norm, c->dim, n, c->norm_eps, err, errlen) ||
        mm(cb, cb->q, &L->wq, cb->xb, n, err, errlen) || mm(cb, cb->k, &L->wk, cb->xb, n, err, errlen) ||
        mm(cb, cb->v, &L->wv, cb->xb, n, err, errlen))
        return -1;
    if ((L->bq && hcu_add_bias(hc, cb->q, L->bq, q_dim, n, err, errlen)) ||
        (L->bk && hcu_add_bias(hc, cb->k, L->bk, kv_dim, n, err, errlen)) ||
        (L->bv && hcu_add_bias(hc, cb->v, L->bv, kv_dim, n, err, errlen)))
        return -1;
    if (hcu_rope(hc, cb->q, n, c->n_heads, hd, c->rope_dim, pos0, cb->inv_freq, (int)c->rope_mode, err, errlen) ||
        hcu_rope(hc, cb->k, n, c->n_kv_heads, hd, c->rope_dim, pos0, cb->inv_freq, (int)c->rope_mode, err, errlen))
        return -1;
    /* No eviction yet: position p lives in slot p, so the slots a query at
     * p can see are within [0, pos0 + n); slots beyond hold a previous
     * sequence's later positions, which the causal mask hides. */
    if (hcu_kv_write(hc, &L->kv, cb->k, cb->v, n, pos0, pos0, err, errlen) ||
        hcu_attention(hc, cb->att_out, cb->q, &L->kv, pos0 + n, n, pos0, c->n_heads, cb->att, err, errlen) ||
        mm(cb, cb->xb2, &L->wo, cb->att_out, n, err, errlen) ||
        hcu_add(hc, cb->x, cb->xb2, (size_t)n * c->dim, err, errlen))
        return -1;
    return 0;
}

static const float *cuda_ffn_input(struct gpu_backend *b, int layer, int n) {
    struct cuda_be *cb = CB(b);
    const struct llama_config *c = &cb->m->cfg;
    char err[512];
    if (!cb->failed &&
        (hcu_rmsnorm(cb->c, cb->xb, cb->x, cb->L[layer].ffn_norm, c->dim, n, c->norm_eps, err, sizeof err) ||
         hcu_download(cb->c, cb->h_xn, cb->xb, (size_t)n * c->dim * sizeof(float), err, sizeof err))) {
        cb->failed = 1;
        snprintf(cb->failmsg, sizeof cb->failmsg, "layer %d FFN input: %.500s", layer, err);
    }
    return cb->h_xn; /* stale after a failure, which ffn_hot reports */
}

static int cuda_ffn_hot(struct gpu_backend *b, int layer, int n, int64_t n0, int64_t n1, char *err, size_t errlen) {
    struct cuda_be *cb = CB(b);
    const struct llama_config *c = &cb->m->cfg;
    struct cu_layer *L = &cb->L[layer];
    if (check_failed(cb, err, errlen)) return -1;
    const int64_t align = ffn_neuron_align(cb->m);
    if (n0 < 0 || n1 > c->hidden_dim || n0 > n1 || n0 % align || (n1 % align && n1 != c->hidden_dim)) {
        snprintf(err, errlen, "ffn: neurons [%lld, %lld) of %d (aligned to %lld) are not computable", (long long)n0,
                 (long long)n1, c->hidden_dim, (long long)align);
        return -1;
    }
    /* a range set by backend_cuda_set_hot other than [n0, n1) (or none at
     * all) is replaced by [n0, n1); a set that is not one range stays (the
     * backend interface names ranges only, for now) */
    if (L->hot_n0 >= 0 && (L->hot_n0 != n0 || L->hot_n1 != n1)) {
        log_warn("cuda: layer %d hot set is not [%lld, %lld): uploading it now", layer, (long long)n0, (long long)n1);
        int64_t *idx = malloc((size_t)(n1 - n0 + 1) * sizeof *idx);
        if (!idx) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        for (int64_t i = n0; i < n1; i++) idx[i - n0] = i;
        int rc = backend_cuda_set_hot(b, layer, idx, n1 - n0, err, errlen);
        free(idx);
        if (rc) return -1;
    }
    memset(cb->h_acc, 0, (size_t)n * c->dim * sizeof *cb->h_acc);
    if (hcu_memset0(cb->c, cb->acc, (size_t)n * c->dim * sizeof *cb->acc, err, errlen)) return -1;
    if (L->n_hot == 0) return 0;
    const size_t count = (size_t)n * L->n_hot;
    /* gate and up of the hot rows: [n, n_hot]; h = act(gate) * up */
    if (mm(cb, cb->up, &L->up, cb->xb, n, err, errlen) ||
        (c->ffn_gated && mm(cb, cb->gate, &L->gate, cb->xb, n, err, errlen)) ||
        hcu_ffn_act(cb->c, cb->h, c->ffn_gated ? cb->gate : NULL, cb->up, count, (int)c->ffn_act, err, errlen))
        return -1;
    /* queued: runs while the CPU workers compute their shards */
    return hcu_ffn_down_fixed(cb->c, cb->acc, cb->h, L->down_t, L->seg, L->n_seg, (int)L->n_hot, c->dim, n, err,
                              errlen);
}

static void cuda_add_partial(struct gpu_backend *b, int n, const int64_t *acc) {
    struct cuda_be *cb = CB(b);
    const size_t count = (size_t)n * cb->m->cfg.dim;
    /* two's complement wrap-around, as the device's atomics */
    for (size_t i = 0; i < count; i++) cb->h_acc[i] = (int64_t)((uint64_t)cb->h_acc[i] + (uint64_t)acc[i]);
}

static void cuda_ffn_finish(struct gpu_backend *b, int n) {
    struct cuda_be *cb = CB(b);
    const size_t count = (size_t)n * cb->m->cfg.dim;
    char err[512];
    if (cb->failed) return;
    if (hcu_upload(cb->c, cb->part, cb->h_acc, count * sizeof *cb->part, err, sizeof err) ||
        hcu_acc_add_to(cb->c, cb->x, cb->acc, cb->part, count, err, sizeof err)) {
        cb->failed = 1;
        snprintf(cb->failmsg, sizeof cb->failmsg, "FFN finish: %.500s", err);
    }
}

static int cuda_output(struct gpu_backend *b, float *logits, char *err, size_t errlen) {
    struct cuda_be *cb = CB(b);
    const struct llama_config *c = &cb->m->cfg;
    if (check_failed(cb, err, errlen)) return -1;
    if (cb->span.logits == SPAN_LOGITS_NONE) return 0;
    const int n = cb->span.n, first = cb->span.logits == SPAN_LOGITS_ALL ? 0 : n - 1, n_out = n - first;
    if (hcu_rmsnorm(cb->c, cb->xb, cb->x + (size_t)first * c->dim, cb->output_norm, c->dim, n_out, c->norm_eps, err,
                    errlen) ||
        mm(cb, cb->logits, &cb->output, cb->xb, n_out, err, errlen))
        return -1;
    return hcu_download(cb->c, logits, cb->logits, (size_t)n_out * c->n_vocab * sizeof(float), err, errlen);
}

static void cuda_destroy(struct gpu_backend *b) {
    struct cuda_be *cb = CB(b);
    if (!cb) return;
    if (cb->c) {
        char err[256];
        hcu_sync(cb->c, err, sizeof err);
        if (cb->L)
            for (int l = 0; l < cb->m->cfg.n_layers; l++) hcu_kv_destroy(cb->c, &cb->L[l].kv);
        for (size_t i = 0; i < cb->n_allocs; i++) hcu_free(cb->c, cb->allocs[i].d, cb->allocs[i].bytes);
        hcu_host_free(cb->h_xn);
        hcu_host_free(cb->h_acc);
        hcu_destroy(cb->c);
    }
    free(cb->allocs);
    free(cb->L);
    free(cb);
    b->impl = NULL;
}

int backend_cuda_set_hot(struct gpu_backend *b, int layer, const int64_t *idx, int64_t n, char *err,
                         size_t errlen) {
    struct cuda_be *cb = CB(b);
    const struct llama_config *c = &cb->m->cfg;
    const struct llama_layer *ml = &cb->m->layers[layer];
    struct cu_layer *L = &cb->L[layer];
    const int dim = c->dim;
    if (layer < 0 || layer >= c->n_layers || n < 0 || n > c->hidden_dim) {
        snprintf(err, errlen, "cuda: hot set of %lld neurons for layer %d", (long long)n, layer);
        return -1;
    }
    for (int64_t j = 0; j < n; j++) {
        if (idx[j] < 0 || idx[j] >= c->hidden_dim || (j > 0 && idx[j] <= idx[j - 1])) {
            snprintf(err, errlen, "cuda: layer %d hot neuron %lld at index %lld is not ascending within [0, %d)",
                     layer, (long long)idx[j], (long long)j, c->hidden_dim);
            return -1;
        }
    }
    /* the previous set goes first: queued kernels may still read it */
    if (hcu_sync(cb->c, err, errlen)) return -1;
    dfree(cb, L->gate.d);
    dfree(cb, L->up.d);
    dfree(cb, L->down_t);
    dfree(cb, L->seg);
    L->gate.d = L->up.d = NULL;
    L->down_t = NULL;
    L->seg = NULL;
    L->n_hot = L->n_seg = 0;
    L->hot_n0 = L->hot_n1 = -1;
    if (n == 0) {
        L->hot_n0 = L->hot_n1 = 0;
        return 0;
    }

    size_t max_row = hearth_row_size(ml->w_up.type, dim);
    if (ml->w_gate.data && hearth_row_size(ml->w_gate.type, dim) > max_row)
        max_row = hearth_row_size(ml->w_gate.type, dim);
    const int64_t hidden = c->hidden_dim;
    const size_t rows_bytes = (size_t)n * max_row, down_bytes = (size_t)n * dim * sizeof(float);
    char *rows = malloc(rows_bytes > down_bytes ? rows_bytes : down_bytes);
    float *drow = malloc((size_t)hidden * sizeof *drow);
    int32_t *seg = malloc((size_t)(n + 1) * sizeof *seg);
    int rc = -1;
    if (!rows || !drow || !seg) {
        snprintf(err, errlen, "out of memory for layer %d's hot set of %lld neurons", layer, (long long)n);
        goto done;
    }
    /* gate and up: the hot rows, as stored */
    const struct weight *src[2] = {&ml->w_up, ml->w_gate.data ? &ml->w_gate : NULL};
    struct dweight *dst[2] = {&L->up, &L->gate};
    for (int k = 0; k < 2; k++) {
        if (!src[k]) continue;
        const size_t rb = hearth_row_size(src[k]->type, dim);
        if (!hcu_type_supported((enum hearth_type)src[k]->type)) {
            snprintf(err, errlen, "cuda backend: layer %d FFN is %s, which has no CUDA kernel", layer,
                     hearth_type_name(src[k]->type));
            goto done;
        }
        for (int64_t j = 0; j < n; j++)
            memcpy(rows + (size_t)j * rb, (const char *)src[k]->data + (size_t)idx[j] * rb, rb);
        dst[k]->type = (enum hearth_type)src[k]->type;
        dst[k]->n_in = dim;
        dst[k]->n_out = n;
        if (!(dst[k]->d = upload(cb, rows, (size_t)n * rb, err, errlen))) goto done;
    }
    /* down: row r of down (hidden weights) gives element r of every hot
     * neuron's transposed row */
    float *down_t = (float *)rows;
    const size_t down_row = hearth_row_size(ml->w_down.type, hidden);
    for (int r = 0; r < dim; r++) {
        if (quant_dequantize_row((enum hearth_type)ml->w_down.type, (const char *)ml->w_down.data + (size_t)r * down_row,
                                 drow, hidden, err, errlen))
            goto done;
        for (int64_t j = 0; j < n; j++) down_t[(size_t)j * dim + r] = drow[idx[j]];
    }
    if (!(L->down_t = upload(cb, down_t, down_bytes, err, errlen))) goto done;
    /* segments: runs of hot neurons within one FFN_GROUP */
    int n_seg = 0;
    for (int64_t j = 0; j < n; j++)
        if (j == 0 || idx[j] / FFN_GROUP != idx[j - 1] / FFN_GROUP) seg[n_seg++] = (int32_t)j;
    seg[n_seg] = (int32_t)n;
    if (!(L->seg = upload(cb, seg, (size_t)(n_seg + 1) * sizeof *seg, err, errlen))) goto done;
    L->n_seg = n_seg;
    L->n_hot = n;
    if (idx[n - 1] - idx[0] == n - 1) {
        L->hot_n0 = idx[0];
        L->hot_n1 = idx[n - 1] + 1;
    }
    rc = 0;
done:
    free(rows);
    free(drow);
    free(seg);
    return rc;
}

size_t backend_cuda_device_bytes(struct gpu_backend *b) { return hcu_bytes(CB(b)->c); }

int backend_cuda_kv_scores(struct gpu_backend *b, int layer, float *scores, char *err, size_t errlen) {
    struct cuda_be *cb = CB(b);
    const struct hcu_kv *kv = &cb->L[layer].kv;
    return hcu_download(cb->c, scores, kv->d_score, (size_t)kv->n_kv_heads * kv->n_slots * sizeof(float), err,
                        errlen);
}

/* The run state's buffers, sized as struct llama_state's. */
static int create_buffers(struct cuda_be *cb, char *err, size_t errlen) {
    const struct llama_config *c = &cb->m->cfg;
    const size_t B = (size_t)cb->max_batch, q_dim = (size_t)c->n_heads * c->head_dim,
                 kv_dim = (size_t)c->n_kv_heads * c->head_dim, F = sizeof(float);
    if (!(cb->x = dalloc(cb, B * c->dim * F, err, errlen)) || !(cb->xb = dalloc(cb, B * c->dim * F, err, errlen)) ||
        !(cb->xb2 = dalloc(cb, B * c->dim * F, err, errlen)) || !(cb->q = dalloc(cb, B * q_dim * F, err, errlen)) ||
        !(cb->k = dalloc(cb, B * kv_dim * F, err, errlen)) || !(cb->v = dalloc(cb, B * kv_dim * F, err, errlen)) ||
        !(cb->att_out = dalloc(cb, B * q_dim * F, err, errlen)) ||
        !(cb->gate = dalloc(cb, B * c->hidden_dim * F, err, errlen)) ||
        !(cb->up = dalloc(cb, B * c->hidden_dim * F, err, errlen)) ||
        !(cb->h = dalloc(cb, B * c->hidden_dim * F, err, errlen)) ||
        !(cb->att = dalloc(cb, B * c->n_heads * (size_t)cb->n_ctx * F, err, errlen)) ||
        !(cb->logits = dalloc(cb, B * c->n_vocab * F, err, errlen)) ||
        !(cb->acc = dalloc(cb, B * c->dim * sizeof(int64_t), err, errlen)) ||
        !(cb->part = dalloc(cb, B * c->dim * sizeof(int64_t), err, errlen)) ||
        !(cb->tokens = dalloc(cb, B * sizeof(int32_t), err, errlen)) ||
        !(cb->h_xn = hcu_host_alloc(B * c->dim * F, err, errlen)) ||
        !(cb->h_acc = hcu_host_alloc(B * c->dim * sizeof(int64_t), err, errlen)))
        return -1;
    float *inv_freq = malloc((size_t)(c->rope_dim / 2 + 1) * sizeof *inv_freq);
    if (!inv_freq) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < c->rope_dim / 2; i++) inv_freq[i] = (float)pow((double)c->rope_base, -2.0 * i / c->rope_dim);
    cb->inv_freq = upload_f32(cb, inv_freq, c->rope_dim / 2 + 1, err, errlen);
    free(inv_freq);
    return cb->inv_freq ? 0 : -1;
}

static int upload_model(struct cuda_be *cb, char *err, size_t errlen) {
    const struct llama_model *m = cb->m;
    const struct llama_config *c = &m->cfg;
    const int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    if (upload_weight(cb, &cb->embd, &m->tok_embd, "token_embd", -1, err, errlen)) return -1;
    if (m->output.data == m->tok_embd.data) cb->output = cb->embd; /* tied */
    else if (upload_weight(cb, &cb->output, &m->output, "output", -1, err, errlen))
        return -1;
    if (!(cb->output_norm = upload_f32(cb, m->output_norm, c->dim, err, errlen))) return -1;
    for (int l = 0; l < c->n_layers; l++) {
        const struct llama_layer *ml = &m->layers[l];
        struct cu_layer *L = &cb->L[l];
        L->hot_n0 = L->hot_n1 = 0; /* no hot neurons until set */
        if (!(L->attn_norm = upload_f32(cb, ml->attn_norm, c->dim, err, errlen)) ||
            !(L->ffn_norm = upload_f32(cb, ml->ffn_norm, c->dim, err, errlen)) ||
            (ml->bq && !(L->bq = upload_f32(cb, ml->bq, q_dim, err, errlen))) ||
            (ml->bk && !(L->bk = upload_f32(cb, ml->bk, kv_dim, err, errlen))) ||
            (ml->bv && !(L->bv = upload_f32(cb, ml->bv, kv_dim, err, errlen))) ||
            upload_weight(cb, &L->wq, &ml->wq, "attn_q", l, err, errlen) ||
            upload_weight(cb, &L->wk, &ml->wk, "attn_k", l, err, errlen) ||
            upload_weight(cb, &L->wv, &ml->wv, "attn_v", l, err, errlen) ||
            upload_weight(cb, &L->wo, &ml->wo, "attn_output", l, err, errlen) ||
            hcu_kv_create(cb->c, &L->kv, cb->n_ctx, c->n_kv_heads, c->head_dim, err, errlen))
            return -1;
    }
    return 0;
}

int backend_cuda_create(struct gpu_backend *b, const struct llama_model *m, int n_ctx, int max_batch, int n_threads,
                        char *err, size_t errlen) {
    (void)n_threads; /* the host side is one thread */
    memset(b, 0, sizeof *b);
    if (n_ctx < 1 || max_batch < 1) {
        snprintf(err, errlen, "context (%d) and batch (%d) must be positive", n_ctx, max_batch);
        return -1;
    }
    if (m->cfg.head_dim % 2 || m->cfg.n_heads % m->cfg.n_kv_heads) {
        snprintf(err, errlen, "cuda backend: %d heads of %d over %d KV heads are not supported", m->cfg.n_heads,
                 m->cfg.head_dim, m->cfg.n_kv_heads);
        return -1;
    }
    struct cuda_be *cb = calloc(1, sizeof *cb);
    if (!cb) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    b->impl = cb;
    cb->m = m;
    cb->n_ctx = n_ctx;
    cb->max_batch = max_batch;
    if (!(cb->c = hcu_create(0, err, errlen)) || !(cb->L = calloc((size_t)m->cfg.n_layers, sizeof *cb->L)) ||
        upload_model(cb, err, errlen) || create_buffers(cb, err, errlen)) {
        if (cb->c && !cb->L) snprintf(err, errlen, "out of memory");
        cuda_destroy(b);
        return -1;
    }
    b->name = "cuda";
    b->begin = cuda_begin;
    b->attention = cuda_attention;
    b->ffn_input = cuda_ffn_input;
    b->ffn_hot = cuda_ffn_hot;
    b->add_partial = cuda_add_partial;
    b->ffn_finish = cuda_ffn_finish;
    b->output = cuda_output;
    b->destroy = cuda_destroy;
    log_info("cuda: %s, %.1f MiB of device memory (KV cache of %d positions included)", hcu_device_name(cb->c),
             (double)hcu_bytes(cb->c) / (1 << 20), n_ctx);
    return 0;
}
