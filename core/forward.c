/* forward: see forward.h. Symbols follow llama2.c: x (residual), xb (normed),
 * q/k/v, att (scores), gate/up/h (FFN), one function per piece of a layer. */
#include "forward.h"

#include <math.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "vec.h"

int state_create(struct llama_state *s, const struct llama_model *m, int n_ctx, int max_batch, int n_threads,
                 char *err, size_t errlen) {
    return state_create_seqs(s, m, n_ctx, 1, max_batch, n_threads, err, errlen);
}

int state_create_seqs(struct llama_state *s, const struct llama_model *m, int n_ctx, int n_seq, int max_batch,
                      int n_threads, char *err, size_t errlen) {
    const struct llama_config *c = &m->cfg;
    memset(s, 0, sizeof *s);
    if (n_ctx < 1 || max_batch < 1 || n_threads < 1 || n_seq < 1 || n_seq > max_batch) {
        snprintf(err, errlen,
                 "context (%d), batch (%d), threads (%d) and sequences (%d) must be positive, and no more sequences "
                 "than the batch",
                 n_ctx, max_batch, n_threads, n_seq);
        return -1;
    }
    s->m = m;
    s->n_ctx = n_ctx;
    s->n_seq = n_seq;
    s->max_batch = max_batch;
    s->n_threads = n_threads;
    const size_t B = (size_t)max_batch, q_dim = (size_t)c->n_heads * c->head_dim,
                 kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    const size_t cache = (size_t)n_seq * c->n_layers * (size_t)n_ctx * kv_dim;
    s->x = malloc(B * c->dim * sizeof(float));
    s->xb = malloc(B * c->dim * sizeof(float));
    s->xb2 = malloc(B * c->dim * sizeof(float));
    s->q = malloc(B * q_dim * sizeof(float));
    s->k = malloc(B * kv_dim * sizeof(float));
    s->v = malloc(B * kv_dim * sizeof(float));
    s->att_out = malloc(B * q_dim * sizeof(float));
    s->acc = malloc(B * c->dim * sizeof(int64_t));
    const int run = c->n_heads / c->n_kv_heads < VEC_RUN ? c->n_heads / c->n_kv_heads : VEC_RUN;
    s->att = malloc((size_t)n_threads * run * n_ctx * sizeof(float));
    s->inv_freq = malloc((size_t)(c->rope_dim / 2 + 1) * sizeof(float));
    s->key_cache = calloc(cache, sizeof(float));
    s->value_cache = calloc(cache, sizeof(float));
    s->spans = malloc(B * sizeof *s->spans);
    s->row_seq = malloc(B * sizeof *s->row_seq);
    s->row_pos = malloc(B * sizeof *s->row_pos);
    if (!s->spans || !s->row_seq || !s->row_pos || !s->x || !s->xb || !s->xb2 || !s->q || !s->k || !s->v ||
        !s->att_out || !s->acc || !s->att || !s->inv_freq || !s->key_cache || !s->value_cache) {
        snprintf(err, errlen, "out of memory for the run state (KV cache of %d sequences x %d positions: %.1f MiB)",
                 n_seq, n_ctx, 2.0 * (double)cache * sizeof(float) / (1 << 20));
        state_free(s);
        return -1;
    }
    for (int i = 0; i < c->rope_dim / 2; i++)
        s->inv_freq[i] = (float)pow((double)c->rope_base, -2.0 * i / c->rope_dim);
    s->tp = tpool_create(n_threads, err, errlen);
    if (!s->tp || ffn_scratch_create(&s->fs, m, max_batch, err, errlen) != 0) {
        state_free(s);
        return -1;
    }
    return 0;
}

void state_free(struct llama_state *s) {
    free(s->x);
    free(s->xb);
    free(s->xb2);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att_out);
    free(s->acc);
    free(s->att);
    free(s->inv_freq);
    free(s->key_cache);
    free(s->value_cache);
    free(s->spans);
    free(s->row_seq);
    free(s->row_pos);
    for (int q = 0; s->kv && q < s->n_seq; q++) kvcache_destroy(&s->kv[q]);
    free(s->kv);
    if (s->tp) tpool_destroy(s->tp);
    matmul_scratch_free(&s->ms);
    ffn_scratch_free(&s->fs);
    memset(s, 0, sizeof *s);
}

int state_set_kv(struct llama_state *s, const struct kv_config *cfg, int force, char *err, size_t errlen) {
    const struct llama_config *c = &s->m->cfg;
    if (!force && !kv_config_active(cfg, s->n_ctx)) return 0;
    struct kvcache *kv = calloc((size_t)s->n_seq, sizeof *kv);
    if (!kv) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int q = 0; q < s->n_seq; q++) {
        if (kvcache_create(&kv[q], cfg, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, s->max_batch,
                           s->n_threads, err, errlen) != 0) {
            while (q-- > 0) kvcache_destroy(&kv[q]);
            free(kv);
            return -1;
        }
    }
    for (int q = 0; s->kv && q < s->n_seq; q++) kvcache_destroy(&s->kv[q]);
    free(s->kv);
    s->kv = kv;
    free(s->key_cache);
    free(s->value_cache);
    s->key_cache = s->value_cache = NULL;
    return 0;
}

size_t state_kv_bytes(const struct llama_state *s) {
    const struct llama_config *c = &s->m->cfg;
    if (s->kv) return (size_t)s->n_seq * kvcache_bytes(&s->kv[0]);
    return 2 * (size_t)s->n_seq * c->n_layers * (size_t)s->n_ctx * (size_t)c->n_kv_heads * c->head_dim *
           sizeof(float);
}

size_t state_kv_cold_bytes(const struct llama_state *s) {
    size_t b = 0;
    for (int q = 0; s->kv && q < s->n_seq; q++) b += kvcache_cold_bytes(&s->kv[q]);
    return b;
}

int spans_logit_rows(const struct seq_span *spans, int n_spans) {
    int rows = 0;
    for (int i = 0; i < n_spans; i++)
        rows += spans[i].logits == SPAN_LOGITS_ALL ? spans[i].n : spans[i].logits == SPAN_LOGITS_LAST;
    return rows;
}

int state_begin_batch(struct llama_state *s, const struct seq_span *spans, int n_spans, char *err, size_t errlen) {
    if (n_spans < 1 || n_spans > s->max_batch) {
        snprintf(err, errlen, "a batch of %d sequences (1 to %d)", n_spans, s->max_batch);
        return -1;
    }
    int rows = 0;
    for (int i = 0; i < n_spans; i++) {
        const struct seq_span *p = &spans[i];
        if (p->seq < 0 || p->seq >= s->n_seq || p->n < 1 || p->logits < SPAN_LOGITS_NONE ||
            p->logits > SPAN_LOGITS_ALL) {
            snprintf(err, errlen, "batch span %d: sequence %d of %d, %d tokens, logits %d", i, p->seq, s->n_seq, p->n,
                     p->logits);
            return -1;
        }
        if (p->pos0 < 0 || p->n > s->n_ctx - p->pos0) {
            snprintf(err, errlen,
                     "context full: sequence %d's positions %d..%d do not fit a context of %d tokens (raise -c)",
                     p->seq, p->pos0, p->pos0 + p->n - 1, s->n_ctx);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (spans[j].seq == p->seq) {
                snprintf(err, errlen, "batch: sequence %d appears in two spans", p->seq);
                return -1;
            }
        if (p->n > s->max_batch - rows) {
            snprintf(err, errlen, "batch of more than %d tokens", s->max_batch);
            return -1;
        }
        for (int t = 0; t < p->n; t++) {
            s->row_seq[rows + t] = p->seq;
            s->row_pos[rows + t] = p->pos0 + t;
        }
        rows += p->n;
    }
    memcpy(s->spans, spans, (size_t)n_spans * sizeof *spans);
    s->n_spans = n_spans;
    s->n_rows = rows;
    return 0;
}

/* o[i] = w[i] * x[i] / sqrt(mean(x^2) + eps), for n_rows rows of dim */
static void rmsnorm(float *o, const float *x, const float *w, int dim, int n_rows, float eps) {
    for (int t = 0; t < n_rows; t++) {
        const float *xr = x + (size_t)t * dim;
        float *orow = o + (size_t)t * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
        float scale = (float)(1.0 / sqrt(ss / dim + eps));
        for (int i = 0; i < dim; i++) orow[i] = w[i] * (xr[i] * scale);
    }
}

/* Rotates the first rope_dim dims of each of n_heads heads of one token's vector. */
static void rope(float *vec, int n_heads, int head_dim, int rope_dim, int pos, const float *inv_freq,
                 enum rope_mode mode) {
    for (int h = 0; h < n_heads; h++) {
        float *hv = vec + (size_t)h * head_dim;
        for (int i = 0; i < rope_dim / 2; i++) {
            float theta = (float)pos * inv_freq[i];
            float cs = cosf(theta), sn = sinf(theta);
            int a = mode == ROPE_NEOX ? i : 2 * i;
            int b = mode == ROPE_NEOX ? i + rope_dim / 2 : 2 * i + 1;
            float x0 = hv[a], x1 = hv[b];
            hv[a] = x0 * cs - x1 * sn;
            hv[b] = x0 * sn + x1 * cs;
        }
    }
}

static int mm(struct llama_state *s, float *y, const struct weight *w, const float *x, int n_tok, char *err,
              size_t errlen) {
    return weight_matmul(s->tp, w, x, n_tok, y, &s->ms, err, errlen);
}

/* The taps (model.h, struct layer_taps): a matrix input, before its products */
static void tap_input(struct llama_state *s, int l, int site, float *x, int64_t count, int64_t width) {
    if (s->taps.input) s->taps.input(s->taps.ctx, l, site, x, count, 0, width);
}

/* The products of one site's matrices (mats[k] into outs[k], a whole
 * matrix each): those a tap computes, the rest in one fused dense product. */
static int site_mm(struct llama_state *s, int l, const int *mats, const struct matmul_out *outs, int n_mats,
                   const float *x, int64_t n_in, int n, char *err, size_t errlen) {
    const struct layer_taps *tp = &s->taps;
    struct matmul_out dense[3];
    int n_dense = 0;
    for (int k = 0; k < n_mats; k++) {
        if (!tp->owns || !tp->owns(tp->ctx, l, mats[k], 0, 0, n)) {
            dense[n_dense++] = outs[k];
            continue;
        }
        if (tp->product(tp->ctx, l, mats[k], 0, 0, x, n_in, n, outs[k].y, NULL, outs[k].n_out, 0, s->tp, err, errlen))
            return -1;
    }
    const struct matmul_in in = {x, NULL, NULL};
    return n_dense ? matmul_fused(s->tp, &in, n_in, n, dense, n_dense, &s->ms, err, errlen) : 0;
}

/* One query head of one row attends over its sequence's cached positions 0..pos. */
struct attn_job {
    struct llama_state *s;
    int layer;
};

static void attn_worker(void *arg, int ith, int nth) {
    const struct attn_job *job = arg;
    struct llama_state *s = job->s;
    const struct llama_config *c = &s->m->cfg;
    const int hd = c->head_dim, kv_dim = c->n_kv_heads * hd, q_dim = c->n_heads * hd;
    const int group = c->n_heads / c->n_kv_heads; /* query heads per KV head */
    const float scale = 1.0f / sqrtf((float)hd);
    float *att = s->att + (size_t)ith * (group < VEC_RUN ? group : VEC_RUN) * s->n_ctx;
    /* this thread's items (row, query head) are a contiguous range, walked in
     * runs of the heads of one row that share a KV head: each key and value
     * row is read once for the run (vec_dots_f32 and vec_axpys_f32 give each
     * head what the one-head calls give) */
    const int n_items = s->n_rows * c->n_heads, end = (int)((int64_t)n_items * (ith + 1) / nth);
    for (int item = (int)((int64_t)n_items * ith / nth); item < end;) {
        const int t = item / c->n_heads, h = item % c->n_heads, kvh = h / group;
        const int run_end = (kvh + 1) * group < c->n_heads ? (kvh + 1) * group : c->n_heads;
        int m = run_end - h < end - item ? run_end - h : end - item;
        m = m < VEC_RUN ? m : VEC_RUN;
        const int pos = s->row_pos[t];
        const size_t cache0 = ((size_t)s->row_seq[t] * c->n_layers + (size_t)job->layer) * s->n_ctx * kv_dim;
        const float *kc = s->key_cache + cache0, *vc = s->value_cache + cache0;
        const float *q = s->q + (size_t)t * q_dim + (size_t)h * hd;
        float maxv[VEC_RUN], dots[VEC_RUN], inv_sum[VEC_RUN], w[VEC_RUN];
        for (int g = 0; g < m; g++) maxv[g] = -INFINITY;
        for (int p = 0; p <= pos; p++) {
            vec_dots_f32(q, m, kc + (size_t)p * kv_dim + (size_t)kvh * hd, hd, dots);
            for (int g = 0; g < m; g++) {
                const float a = dots[g] * scale;
                att[(size_t)g * s->n_ctx + p] = a;
                if (a > maxv[g]) maxv[g] = a;
            }
        }
        for (int g = 0; g < m; g++) {
            float *ag = att + (size_t)g * s->n_ctx, sum = 0.0f;
            for (int p = 0; p <= pos; p++) {
                ag[p] = expf(ag[p] - maxv[g]);
                sum += ag[p];
            }
            inv_sum[g] = 1.0f / sum;
        }
        float *out = s->att_out + (size_t)t * q_dim + (size_t)h * hd;
        memset(out, 0, (size_t)m * hd * sizeof *out);
        for (int p = 0; p <= pos; p++) {
            for (int g = 0; g < m; g++) w[g] = att[(size_t)g * s->n_ctx + p] * inv_sum[g];
            vec_axpys_f32(out, m, w, vc + (size_t)p * kv_dim + (size_t)kvh * hd, hd);
        }
        item += m;
    }
}

void forward_embed(struct llama_state *s, const int32_t *tokens, int n) {
    const struct llama_model *m = s->m;
    const int dim = m->cfg.dim;
    const struct quant_traits *et = quant_traits((enum hearth_type)m->tok_embd.type);
    const size_t erow = hearth_row_size(m->tok_embd.type, dim);
    for (int t = 0; t < n; t++)
        et->to_float((const char *)m->tok_embd.data + (size_t)tokens[t] * erow, s->x + (size_t)t * dim, dim);
}

int forward_attention_batch(struct llama_state *s, int l, char *err, size_t errlen) {
    const struct llama_config *c = &s->m->cfg;
    const struct llama_layer *L = &s->m->layers[l];
    const int dim = c->dim, hd = c->head_dim, q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;
    const int n = s->n_rows;

    rmsnorm(s->xb, s->x, L->attn_norm, dim, n, c->norm_eps);
    tap_input(s, l, LLAMA_SITE_QKV, s->xb, (int64_t)n * dim, dim);
    const struct matmul_out qkv[3] = {
        weight_out(&L->wq, 0, L->wq.n_out, 0, dim, s->q),
        weight_out(&L->wk, 0, L->wk.n_out, 0, dim, s->k),
        weight_out(&L->wv, 0, L->wv.n_out, 0, dim, s->v),
    };
    static const int qkv_mats[3] = {LLAMA_MAT_Q, LLAMA_MAT_K, LLAMA_MAT_V};
    if (site_mm(s, l, qkv_mats, qkv, 3, s->xb, dim, n, err, errlen)) return -1;
    for (int t = 0; t < n; t++) {
        float *q = s->q + (size_t)t * q_dim, *k = s->k + (size_t)t * kv_dim, *v = s->v + (size_t)t * kv_dim;
        if (L->bq)
            for (int i = 0; i < q_dim; i++) q[i] += L->bq[i];
        if (L->bk)
            for (int i = 0; i < kv_dim; i++) k[i] += L->bk[i];
        if (L->bv)
            for (int i = 0; i < kv_dim; i++) v[i] += L->bv[i];
        rope(q, c->n_heads, hd, c->rope_dim, s->row_pos[t], s->inv_freq, c->rope_mode);
        rope(k, c->n_kv_heads, hd, c->rope_dim, s->row_pos[t], s->inv_freq, c->rope_mode);
        if (!s->kv) {
            const size_t at = (((size_t)s->row_seq[t] * c->n_layers + (size_t)l) * s->n_ctx + (size_t)s->row_pos[t]) *
                              kv_dim;
            memcpy(s->key_cache + at, k, (size_t)kv_dim * sizeof(float));
            memcpy(s->value_cache + at, v, (size_t)kv_dim * sizeof(float));
        }
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (s->kv) {
        /* each span over its own sequence's kept slots; scores, eviction (kvcache.h) */
        for (int i = 0, r = 0; i < s->n_spans; r += s->spans[i++].n) {
            const struct seq_span *p = &s->spans[i];
            if (kvcache_attend(&s->kv[p->seq], l, s->q + (size_t)r * q_dim, s->k + (size_t)r * kv_dim,
                               s->v + (size_t)r * kv_dim, p->n, p->pos0, s->att_out + (size_t)r * q_dim, s->tp, err,
                               errlen) != 0)
                return -1;
        }
    } else {
        struct attn_job job = {s, l};
        tpool_run(s->tp, attn_worker, &job);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    s->attn_ns += (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    tap_input(s, l, LLAMA_SITE_O, s->att_out, (int64_t)n * q_dim, q_dim);
    static const int o_mat[1] = {LLAMA_MAT_O};
    const struct matmul_out o = weight_out(&L->wo, 0, L->wo.n_out, 0, q_dim, s->xb2);
    if (site_mm(s, l, o_mat, &o, 1, s->att_out, q_dim, n, err, errlen)) return -1;
    for (size_t i = 0; i < (size_t)n * dim; i++) s->x[i] += s->xb2[i];
    return 0;
}

int forward_attention(struct llama_state *s, int l, int n, int pos0, char *err, size_t errlen) {
    const struct seq_span one = {0, pos0, n, SPAN_LOGITS_NONE};
    if (state_begin_batch(s, &one, 1, err, errlen) != 0) return -1;
    return forward_attention_batch(s, l, err, errlen);
}

void forward_ffn_norm(struct llama_state *s, int l, int n) {
    const struct llama_config *c = &s->m->cfg;
    rmsnorm(s->xb, s->x, s->m->layers[l].ffn_norm, c->dim, n, c->norm_eps);
    tap_input(s, l, LLAMA_SITE_GU, s->xb, (int64_t)n * c->dim, c->dim);
}

int forward_ffn(struct llama_state *s, int l, int n, int64_t n0, int64_t n1, char *err, size_t errlen) {
    memset(s->acc, 0, (size_t)n * s->m->cfg.dim * sizeof *s->acc);
    if (s->ffn) return s->ffn(s->ffn_ctx, l, s->xb, n, s->acc, s->tp, err, errlen);
    return ffn_partial_layer(&s->m->cfg, &s->m->layers[l], l, s->xb, n, n0, n1, s->acc, &s->fs, &s->taps, s->tp, err,
                             errlen);
}

/* x = x + Attn(RMSNorm(x)); x = x + FFN(RMSNorm(x)) for the batch's rows */
static int layer_forward(struct llama_state *s, int l, char *err, size_t errlen) {
    const int dim = s->m->cfg.dim, n = s->n_rows;
    if (forward_attention_batch(s, l, err, errlen) != 0) return -1;
    forward_ffn_norm(s, l, n);
    if (forward_ffn(s, l, n, 0, s->m->cfg.hidden_dim, err, errlen) != 0) return -1;
    ffn_acc_add_to(s->x, s->acc, (size_t)n * dim);
    return 0;
}

int forward_output_batch(struct llama_state *s, float *logits, char *err, size_t errlen) {
    const struct llama_model *m = s->m;
    const int dim = m->cfg.dim;
    int n_out = 0;
    for (int i = 0, r = 0; i < s->n_spans; r += s->spans[i++].n) {
        const struct seq_span *p = &s->spans[i];
        const int first = p->logits == SPAN_LOGITS_ALL ? 0 : p->n - 1;
        if (p->logits == SPAN_LOGITS_NONE) continue;
        for (int t = first; t < p->n; t++, n_out++)
            rmsnorm(s->xb + (size_t)n_out * dim, s->x + (size_t)(r + t) * dim, m->output_norm, dim, 1,
                    m->cfg.norm_eps);
    }
    return n_out ? mm(s, logits, &m->output, s->xb, n_out, err, errlen) : 0;
}

int forward_batch(struct llama_state *s, const int32_t *tokens, const struct seq_span *spans, int n_spans,
                  float *logits, char *err, size_t errlen) {
    const struct llama_config *c = &s->m->cfg;
    if (state_begin_batch(s, spans, n_spans, err, errlen) != 0) return -1;
    for (int t = 0; t < s->n_rows; t++) {
        if (tokens[t] < 0 || tokens[t] >= c->n_vocab) {
            snprintf(err, errlen, "token id %d at index %d is outside the vocabulary [0, %d)", tokens[t], t,
                     c->n_vocab);
            return -1;
        }
    }
    forward_embed(s, tokens, s->n_rows);
    for (int l = 0; l < c->n_layers; l++)
        if (layer_forward(s, l, err, errlen) != 0) return -1;
    return logits ? forward_output_batch(s, logits, err, errlen) : 0;
}

int forward(struct llama_state *s, const int32_t *tokens, int n_tokens, int pos0, float *logits, int all_logits,
            char *err, size_t errlen) {
    const struct llama_config *c = &s->m->cfg;
    if (n_tokens < 1) {
        snprintf(err, errlen, "forward: no tokens");
        return -1;
    }
    if (pos0 < 0 || n_tokens > s->n_ctx - pos0) {
        snprintf(err, errlen, "context full: positions %d..%d do not fit a context of %d tokens (raise -c)", pos0,
                 pos0 + n_tokens - 1, s->n_ctx);
        return -1;
    }
    for (int done = 0; done < n_tokens; done += s->max_batch) {
        int n = n_tokens - done < s->max_batch ? n_tokens - done : s->max_batch;
        int last_chunk = done + n == n_tokens;
        struct seq_span one = {0, pos0 + done, n, SPAN_LOGITS_NONE};
        float *out = NULL;
        if (logits && all_logits) {
            out = logits + (size_t)done * c->n_vocab;
            one.logits = SPAN_LOGITS_ALL;
        } else if (logits && last_chunk) {
            out = logits;
            one.logits = SPAN_LOGITS_LAST;
        }
        if (forward_batch(s, tokens + done, &one, 1, out, err, errlen) != 0) return -1;
    }
    return 0;
}
