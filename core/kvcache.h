/* kvcache: the H2O heavy-hitter KV cache (Zhang et al. 2023, "H2O: Heavy-
 * Hitter Oracle"), with StreamingLLM's attention sinks (Xiao et al. 2023).
 *
 * Per layer and per KV head the cache holds at most `budget` tokens, so KV
 * memory and attention time per token stop growing with the context. Of the
 * kept tokens
 *   - the first n_sinks positions are never evicted (attention sinks),
 *   - the last n_recent positions are never evicted (recent window),
 *   - the rest are the heavy hitters: the tokens with the largest accumulated
 *     attention score. The score of a slot is the sum of the softmax weights
 *     it received, over every query (prefill rows and decode steps) since it
 *     entered, summed over the query heads that share its KV head (GQA).
 * When a layer/head holds more than `budget` tokens, the non-protected slot
 * with the smallest score is evicted; ties go to the OLDEST position (the
 * smaller position is evicted first), so an all-equal pattern degrades to
 * a sliding window. With `window` set the scores are ignored and the oldest
 * non-sink is always evicted: a sliding window (n_sinks = 0) or StreamingLLM
 * (n_sinks > 0), the baseline H2O must beat.
 *
 * With `score_mean` a slot is ranked by its score divided by the number of
 * queries that could attend to it (last position - its position + 1: every
 * later query, causally): mean attention instead of accumulated. The sum
 * favours old tokens, which every later query has seen, over a recent
 * heavy hitter; the mean does not (the bias that made the needle test fail
 * at half the budget, docs/kv-cache.md).
 *
 * With `decay` d < 1 the sum is discounted by age: at the newest position
 * p a slot's score is sum over queries q of d^(p - q) * softmax weight from q.
 * Attention a token drew long ago fades, so a token that mattered to the
 * last few dozen queries outranks one that only mattered early on (the
 * plain sum, d = 1, favours old tokens, which every later query has seen).
 * At a 20% budget d = 0.95 (a horizon of ~20 queries) lowered perplexity by
 * 3.6% on one window but not over three (docs/kv-cache.md), so the default
 * stays H2O's plain sum. A batch of n queries weighs its row t by
 * d^(n-1-t), so a prompt scores the same in one batch or token by token.
 *
 * Keys are stored after RoPE at their original position, so evicting a token
 * never moves the others. Each head evicts independently, so different heads
 * keep different tokens.
 *
 * Layout (allocated once in kvcache_create; nothing grows afterwards).
 * n_slots = budget + max_batch: a batch of up to max_batch new tokens is
 * appended after the kept ones, attended to (the batch needs its own K/V,
 * causally), scored, and only then is the head cut back to budget. So a
 * prompt longer than the budget works: it is processed in batches of
 * max_batch, each followed by eviction.
 *   keys, values  [n_layers][n_kv_heads][n_slots][head_dim] of the element
 *                 type: f32, f16 (IEEE half) or q8 (int8, x = q * scale);
 *   kscale, vscale [n_layers][n_kv_heads][n_slots] float, q8 only: per token
 *                 and head, scale = max|x| / 127;
 *   pos           [n_layers][n_kv_heads][n_slots] original position of slot;
 *   score         [n_layers][n_kv_heads][n_slots] accumulated attention;
 *   n_used        [n_layers][n_kv_heads] slots 0..n_used-1 are live.
 * Live slots are packed; an evicted slot is refilled by the last live one,
 * so slot order is position order until the first eviction. With no
 * eviction the attention therefore visits the same positions in the same
 * order as the dense pass (core/forward.c) and, for f32, is bit-identical.
 */
#ifndef HEARTH_KVCACHE_H
#define HEARTH_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "tpool.h"

enum kv_type { KV_F32 = 0, KV_F16 = 1, KV_Q8 = 2 };

struct kv_config {
    int budget;        /* tokens kept per layer and KV head; 0 = none (dense cache) */
    float budget_frac; /* if > 0 and budget == 0: budget = round(frac * n_ctx) */
    int n_sinks;       /* first positions always kept; < 0: default 4 */
    int n_recent;      /* last positions always kept; < 0: default (budget - sinks) / 2 (H2O's even split) */
    int window;        /* 1: sliding window / StreamingLLM baseline (no heavy hitters) */
    enum kv_type type;
    int score_mean;    /* 1: rank heavy hitters by mean attention per query that saw them, not the sum */
    float decay;       /* in (0, 1]: each query's weight is decay^(its age); 1 = H2O's plain sum */
};

/* Defaults: no budget, f32, sinks and recent to be defaulted. */
void kv_config_default(struct kv_config *c);
/* Fills the budget (from budget_frac and n_ctx), sinks and recent defaults
 * and checks them: budget <= n_ctx is clamped, sinks + recent <= budget.
 * With window set, n_recent = budget - n_sinks. Returns 0 or -1 with err. */
int kv_config_resolve(struct kv_config *c, int n_ctx, char *err, size_t errlen);
/* 1 when the config needs the kvcache (a budget below n_ctx, a type other
 * than f32, or the window policy); 0: the dense cache gives the same output. */
int kv_config_active(const struct kv_config *c, int n_ctx);
/* "f32", "f16", "q8"; parse returns -1 on an unknown name. */
const char *kv_type_name(enum kv_type t);
int kv_type_parse(const char *s, enum kv_type *t);

struct kvcache {
    int n_layers, n_kv_heads, n_heads, head_dim;
    int budget, max_batch, n_slots;
    int n_sinks, n_recent, window, score_mean;
    double decay;
    enum kv_type type;
    size_t esize;  /* bytes per element */
    void *keys, *values;
    float *kscale, *vscale; /* q8 only, else NULL */
    int32_t *pos;
    double *score;
    int *n_used;
    /* scratch, not part of the cache proper */
    float *att;     /* [n_threads][n_slots] attention weights of one query */
    double *colsum; /* [n_heads][n_slots] this call's column sums per query head */
    double *row_weight; /* [max_batch] weight of each query row of a call: decay^(n-1-t) */
    float *deq;     /* f16/q8: [2][n_kv_heads][n_slots][head_dim] f32 copy of one layer's K, V
                       for the call in progress (shared by a group's query heads) */
    int n_threads;
};

/* cfg must be resolved. n_heads: query heads (a multiple of n_kv_heads). */
int kvcache_create(struct kvcache *kv, const struct kv_config *cfg, int n_layers, int n_heads, int n_kv_heads,
                   int head_dim, int max_batch, int n_threads, char *err, size_t errlen);
void kvcache_destroy(struct kvcache *kv);

/* Bytes of the cache proper (keys, values, scales, positions, scores). */
size_t kvcache_bytes(const struct kvcache *kv);
/* The same, before creating one (e.g. for a cache held by another process). */
size_t kv_config_bytes(const struct kv_config *c, int n_layers, int n_kv_heads, int head_dim, int max_batch);

/* Drops every slot of every layer with position >= pos (a rewind). */
void kvcache_truncate(struct kvcache *kv, int pos);

/* One layer's attention for n tokens (n <= max_batch) at positions
 * pos0..pos0+n-1, which must follow every cached position (older slots
 * with position >= pos0 are dropped first):
 *   q [n, n_heads * head_dim], k, v [n, n_kv_heads * head_dim] (RoPE applied),
 *   out [n, n_heads * head_dim] = softmax(q k^T / sqrt(head_dim)) V over the
 *   kept slots with position <= the query's (causal),
 * then adds the softmax weights to the slots' scores and evicts down to the
 * budget. tp may be NULL (one thread). Returns 0, or -1 with err. */
int kvcache_attend(struct kvcache *kv, int layer, const float *q, const float *k, const float *v, int n, int pos0,
                   float *out, struct tpool *tp, char *err, size_t errlen);

/* For tests and tools: the live slots of (layer, kv head). */
int kvcache_n_used(const struct kvcache *kv, int layer, int kvh);
const int32_t *kvcache_positions(const struct kvcache *kv, int layer, int kvh);
const double *kvcache_scores(const struct kvcache *kv, int layer, int kvh);
/* Dequantized key / value of one slot into out[head_dim]. */
void kvcache_read_key(const struct kvcache *kv, int layer, int kvh, int slot, float *out);
void kvcache_read_value(const struct kvcache *kv, int layer, int kvh, int slot, float *out);

#endif
