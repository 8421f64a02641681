/* forward: the dense, single-process forward pass of a llama-family model.
 *
 * This is hearth's correctness oracle: every later feature (multi-process
 * runtime, hot/cold neurons, KV eviction, CUDA) is checked against it, and it
 * is itself checked against an independent NumPy implementation
 * (tests/reference/llama_numpy.py). It therefore favours reading like the
 * model (llama2.c's run.c) over cleverness; speed comes from the matmul
 * kernels (8-bit activations, integer dot products, threads over rows).
 *
 * Batched: a call runs n_tokens consecutive positions at once (prefill as
 * matrix-matrix products); decode is the n_tokens = 1 case. */
#ifndef HEARTH_FORWARD_H
#define HEARTH_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "ffn.h"
#include "kvcache.h"
#include "matmul.h"
#include "model.h"
#include "tpool.h"

/* An FFN computed another way than the dense one (e.g. the sparse hot/cold
 * FFN of a sidecar plan, hotcold.h): acc[n, dim] += its part of layer l's
 * FFN of xn[n, dim], in fixed point (ffn_sum.h). */
typedef int (*forward_ffn_fn)(void *ctx, int l, const float *xn, int n, int64_t *acc, struct tpool *tp, char *err,
                              size_t errlen);

/* A batch holds several independent sequences (continuous batching): one
 * span per sequence, its n consecutive tokens at positions pos0.., the spans'
 * rows in span order. Every per-layer matmul runs over all rows at once;
 * attention runs per span, against its sequence's own KV cache. */
enum span_logits { SPAN_LOGITS_NONE = 0, SPAN_LOGITS_LAST = 1, SPAN_LOGITS_ALL = 2 };
struct seq_span {
    int seq;  /* KV cache slot, [0, n_seq) */
    int pos0; /* position of its first token; positions >= pos0 of the slot are replaced */
    int n;    /* tokens, >= 1 */
    int logits; /* enum span_logits: which rows' logits the batch outputs, in span order */
};

struct llama_state {
    const struct llama_model *m;
    int n_ctx;     /* KV cache capacity in positions, per sequence */
    int n_seq;     /* sequences, each with its own KV cache */
    int max_batch; /* tokens per internal chunk */
    int n_threads;

    /* activations, each [max_batch, width] row-major */
    float *x;   /* residual stream [B, dim] */
    float *xb;  /* normed input of attention / FFN [B, dim] */
    float *xb2; /* projection output [B, dim] */
    float *q;   /* queries [B, n_heads * head_dim] */
    float *k;   /* keys of this chunk [B, kv_dim] */
    float *v;   /* values of this chunk [B, kv_dim] */
    float *att_out; /* attention output before wo [B, n_heads * head_dim] */
    int64_t *acc;   /* FFN output in fixed point [B, dim] */
    float *att; /* attention scores scratch [n_threads, min(group, VEC_RUN), n_ctx] */
    float *inv_freq; /* RoPE frequencies [rope_dim / 2] */

    /* KV cache, float32, [n_seq, n_layers, n_ctx, kv_dim]; RoPE already applied to keys.
     * NULL when kv is set: the budgeted H2O caches (core/kvcache.h) replace it. */
    float *key_cache;
    float *value_cache;
    struct kvcache *kv; /* [n_seq], one per sequence; NULL: the dense cache above */

    /* the batch in progress (state_begin_batch): its spans, and each row's
     * sequence and position */
    struct seq_span *spans; /* [max_batch] */
    int n_spans, n_rows;
    int *row_seq, *row_pos; /* [max_batch] */

    struct tpool *tp;
    struct matmul_scratch ms;
    struct ffn_scratch fs;
    /* What the caller installs (it owns what they point to); zeroed: the
     * dense model. ffn (with ffn_ctx) replaces the dense FFN; taps reach
     * every matrix product of the pass (model.h: input sparsity, profiling). */
    forward_ffn_fn ffn;
    void *ffn_ctx;
    struct layer_taps taps;
    /* wall time spent in the attention core (scores, softmax, weighted sum
     * over the cache, H2O scoring and eviction; not the projections), summed
     * over every call: what a budget keeps flat as the context grows */
    uint64_t attn_ns;
};

int state_create(struct llama_state *s, const struct llama_model *m, int n_ctx, int max_batch, int n_threads,
                 char *err, size_t errlen);
/* The same with n_seq sequences (KV caches of n_ctx positions each). */
int state_create_seqs(struct llama_state *s, const struct llama_model *m, int n_ctx, int n_seq, int max_batch,
                      int n_threads, char *err, size_t errlen);
void state_free(struct llama_state *s);
/* Replaces the dense KV cache by the H2O cache of cfg (resolved, see
 * kv_config_resolve) when kv_config_active(cfg, n_ctx) or force; else keeps
 * the dense cache (identical output). Call right after state_create. */
int state_set_kv(struct llama_state *s, const struct kv_config *cfg, int force, char *err, size_t errlen);

/* Runs tokens[0..n_tokens) at positions pos0..pos0+n_tokens-1, appending to
 * the KV cache (positions >= pos0 are overwritten). If logits is non-NULL it
 * receives the logits of every token ([n_tokens, n_vocab]) when all_logits,
 * else of the last token only ([n_vocab]). Fails on a token id outside the
 * vocabulary or when the context is full. */
int forward(struct llama_state *s, const int32_t *tokens, int n_tokens, int pos0, float *logits, int all_logits,
            char *err, size_t errlen);

/* One batch of several sequences: tokens[] are the spans' tokens in span
 * order (at most max_batch in all; a sequence appears in one span at most).
 * logits receives, in span order, the last row of each SPAN_LOGITS_LAST
 * span and every row of each SPAN_LOGITS_ALL span ([rows, n_vocab]). Fails
 * on a bad span (sequence, positions past the context) or token id. */
int forward_batch(struct llama_state *s, const int32_t *tokens, const struct seq_span *spans, int n_spans,
                  float *logits, char *err, size_t errlen);
/* Checks and records a batch's spans (forward_batch's first step; the
 * runtime's GPU worker calls it before the pieces below). */
int state_begin_batch(struct llama_state *s, const struct seq_span *spans, int n_spans, char *err, size_t errlen);
/* Rows of logits a batch outputs. */
int spans_logit_rows(const struct seq_span *spans, int n_spans);

/* The pieces of forward(), for the multi-process runtime: the GPU worker
 * runs embed, attention, FFN norm and output on a llama_state, and the FFN
 * of its hot neurons; CPU workers run ffn_partial on their shards. */

/* x[0..n) = embeddings of tokens */
void forward_embed(struct llama_state *s, const int32_t *tokens, int n);
/* x += Attn_l(RMSNorm(x)) over the batch's rows (state_begin_batch), each
 * span attending over its own sequence's cache, to which its K/V go */
int forward_attention_batch(struct llama_state *s, int l, char *err, size_t errlen);
/* the same for one span of sequence 0: n tokens at pos0.. */
int forward_attention(struct llama_state *s, int l, int n, int pos0, char *err, size_t errlen);
/* xb = RMSNorm_ffn_l(x): the FFN input [n, dim] */
void forward_ffn_norm(struct llama_state *s, int l, int n);
/* the batch's logits rows (see forward_batch) from x */
int forward_output_batch(struct llama_state *s, float *logits, char *err, size_t errlen);

/* acc[n, dim] = layer l's FFN of xb: the installed FFN (what it was built
 * for), else the dense FFN of neurons [n0, n1) through the taps; the caller
 * adds acc to x (ffn_acc_add_to). */
int forward_ffn(struct llama_state *s, int l, int n, int64_t n0, int64_t n1, char *err, size_t errlen);

/* Bytes of the KV cache as allocated (all sequences): the resident (hot) KV. */
size_t state_kv_bytes(const struct llama_state *s);
/* Host bytes the H2O caches' cold stores hold now (all sequences; 0 without). */
size_t state_kv_cold_bytes(const struct llama_state *s);

#endif
