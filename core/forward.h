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

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "kvcache.h"
#include "matmul.h"
#include "model.h"
#include "tpool.h"

/* Buffers of the FFN of one layer for up to max_batch tokens. */
struct ffn_scratch {
    int max_batch;
    float *gate; /* [B, hidden_dim] */
    float *up;   /* [B, hidden_dim] */
    struct matmul_scratch ms;
    /* input sparsity's products (insparse.h, q4t), grown on demand */
    void *q4t;
    size_t q4t_bytes;
    /* input rows of the q4t products: read (a nonzero quantised input), and
     * all, summed over tokens and matrices, weighted by each row's bytes */
    uint64_t in_read_bytes, in_dense_bytes;
};

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
    /* NULL: the dense FFN; else the sparse hot/cold FFN of a sidecar plan
     * (core/hotcold.h), set by the caller, who owns it */
    struct hotcold *hc;
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

/* The FFN's down projection is a sum over neurons, and the runtime splits the
 * neurons among processes (hot ones on the GPU worker, cold shards on CPU
 * workers). Float addition is not associative, so summing partial results
 * in another grouping would change the last bits, and greedy decoding
 * amplifies that into other tokens. hearth therefore defines the sum
 * exactly: neurons form fixed groups of FFN_GROUP; each group's partial
 * product (computed by the same kernel wherever it runs) is rounded to fixed
 * point with FFN_FIXED_SHIFT fraction bits and the groups are added as
 * int64, which is associative. Any partition of the neurons into whole
 * groups then gives bit-identical layer outputs, and the dense pass uses the
 * same definition. The rounding step is 2^-32 (2.3e-10), far below float32
 * precision for the values involved; the range is +-2^31. */
#define FFN_GROUP 256
#define FFN_FIXED_SHIFT 32

/* The FFN's activation function: h = act(gate x) * (up x), or act(up x) ungated. */
static inline float ffn_activation(float g, enum ffn_act act) {
    switch (act) {
    case FFN_ACT_RELU: return g > 0.0f ? g : 0.0f;
    case FFN_ACT_GELU: return 0.5f * g * (1.0f + tanhf(0.7978845608f * (g + 0.044715f * g * g * g)));
    case FFN_ACT_SILU: break;
    }
    return g / (1.0f + expf(-g));
}

int ffn_scratch_create(struct ffn_scratch *fs, const struct llama_model *m, int max_batch, char *err, size_t errlen);
void ffn_scratch_free(struct ffn_scratch *fs);
/* Neuron ranges must start (and end, unless at hidden_dim) on multiples of
 * this: FFN_GROUP, or ffn_down's block size if larger. */
int64_t ffn_neuron_align(const struct llama_model *m);
/* y [n, w->n_out] = W x for a whole weight through the forward pass's dense
 * kernels (its 8-row copy where there is one): e.g. to time them. */
int forward_weight_matmul(struct tpool *tp, const struct weight *w, const float *x, int n, float *y,
                          struct matmul_scratch *ms, char *err, size_t errlen);
/* acc[n, dim] += FFN_l restricted to neurons [n0, n1) of input xn[n, dim],
 *   down[:, n0:n1] (act(gate[n0:n1] xn) * up[n0:n1] xn),
 * in fixed point (see FFN_GROUP). Summing acc over a partition of
 * [0, hidden_dim) gives the whole FFN exactly. */
int ffn_partial(const struct llama_model *m, int l, const float *xn, int n, int64_t n0, int64_t n1, int64_t *acc,
                struct ffn_scratch *fs, struct tpool *tp, char *err, size_t errlen);
/* The same for one layer's weights given directly: the model's, or a CPU
 * worker's NUMA-local copy of its shard (a layer whose hidden size is the
 * shard's width; neuron indices then count from the shard's start, which
 * keeps the groups aligned because shards start on group boundaries). */
int ffn_partial_layer(const struct llama_config *c, const struct llama_layer *L, const float *xn, int n, int64_t n0,
                      int64_t n1, int64_t *acc, struct ffn_scratch *fs, struct tpool *tp, char *err, size_t errlen);
/* acc[i] += round(y[i] * 2^FFN_FIXED_SHIFT) for count elements */
void ffn_acc_add_fixed(int64_t *acc, const float *y, size_t count);
/* x[i] += acc[i] * 2^-FFN_FIXED_SHIFT for count elements */
void ffn_acc_add_to(float *x, const int64_t *acc, size_t count);

/* Bytes of the KV cache as allocated (all sequences): the resident (hot) KV. */
size_t state_kv_bytes(const struct llama_state *s);
/* Host bytes the H2O caches' cold stores hold now (all sequences; 0 without). */
size_t state_kv_cold_bytes(const struct llama_state *s);

#endif
