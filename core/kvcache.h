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
 * Layout (allocated once in kvcache_create; only the cold store grows).
 * n_slots = budget + min(max_batch, KV_CALL_TOKENS): up to that many new
 * tokens are appended after the kept ones, attended to (they need their own
 * K/V, causally), scored, and only then is the head cut back to budget; a
 * longer batch is processed KV_CALL_TOKENS at a time, each part followed by
 * eviction. So a prompt longer than the budget works, and a prompt batch
 * costs no budget-sized memory.
 *   keys, values  [n_layers][n_kv_heads][n_slots][head_dim] of the element
 *                 type: f32, f16 (IEEE half) or q8 (int8, x = q * scale);
 *   kscale, vscale [n_layers][n_kv_heads][n_slots] float, q8 only: per token
 *                 and head, scale = max|x| / 127;
 *   pos           [n_layers][n_kv_heads][n_slots] original position of slot;
 *   score         [n_layers][n_kv_heads][n_slots] accumulated attention;
 *   n_used        [n_layers][n_kv_heads] slots 0..n_used-1 are live.
 * Live slots are packed; an evicted slot is refilled by the last live one;
 * ord keeps each head's slots in position order, and attention visits them
 * (and any recalled cold tokens) in that order, as the dense pass
 * (core/forward.c) visits positions: with no eviction, or with an f32 cold
 * store recalled whole, the result for f32 is bit-identical to it.
 */
#ifndef HEARTH_KVCACHE_H
#define HEARTH_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "tpool.h"

enum kv_type { KV_F32 = 0, KV_F16 = 1, KV_Q8 = 2 };

/* The cold store (hot/cold KV): what H2O evicts is kept, compressed, in
 * pages of one (layer, KV head): page r holds the evicted tokens of
 * positions [KV_PAGE r, KV_PAGE r + KV_PAGE) (Quest's pages), with the
 * per-channel min and max of its stored keys (Quest's summary). At each
 * call, every KV head recalls in two steps: it scores its pages by the
 * upper bound of q . k over them (max over the group's query heads and the
 * call's rows of sum_c max(q_c min_c, q_c max_c)), takes the best pages up
 * to `cands` times `recall` tokens as candidates, then scores each
 * candidate by its q . k on the stored row (the same max; int8 / int4 dots,
 * then the row's scale: kvcache_cold_score) and keeps the best `recall`
 * tokens. Attention runs over the hot slots and the recalled tokens
 * together, in position order, in one softmax. Recalled
 * tokens stay cold (they gather no H2O score). With cold_max > 0 a head
 * keeping more than cold_max / (layers * KV heads) bytes drops its coldest
 * page (the smallest summed score of its tokens when they were evicted);
 * the cache then degrades towards plain H2O.
 * KV_COLD_F32 stores exact copies: with a recall covering every page the
 * output is bit-identical to the full cache (tested). */
enum kv_cold { KV_COLD_OFF = 0, KV_COLD_Q8 = 1, KV_COLD_Q4 = 2, KV_COLD_F32 = 3 };
#define KV_PAGE 16
/* New tokens of one call are attended and scored at most this many at a
 * time (a longer prompt batch is cut), so the hot cache holds budget + this
 * many slots, not budget + the batch. */
#define KV_CALL_TOKENS 32
/* With a cold store, a prompt batch is attended this many rows at a time:
 * the rows of a part share one recall, so fewer rows, a choice closer to
 * each query's (decode has one row). */
#define KV_RECALL_ROWS 8
/* Recall reads the keys of the best pages up to this many times its budget
 * (candidates; the default of kv_config.cands), scores each candidate token
 * (the best q . k over the group's query heads and the part's rows) and
 * keeps the best `recall` of them: pages narrow the search, tokens are
 * chosen one by one. More candidates: a choice closer to the query's own
 * (docs/kv-cache.md: the needle), more keys scored per step. */
#define KV_RECALL_CANDS 4

struct kv_config {
    int budget;        /* tokens kept per layer and KV head; 0 = none (dense cache) */
    float budget_frac; /* if > 0 and budget == 0: budget = round(frac * n_ctx) */
    int n_sinks;       /* first positions always kept; < 0: default 4 */
    int n_recent;      /* last positions always kept; < 0: default (budget - sinks) / 2 (H2O's even split) */
    int window;        /* 1: sliding window / StreamingLLM baseline (no heavy hitters) */
    enum kv_type type;
    int score_mean;    /* 1: rank heavy hitters by mean attention per query that saw them, not the sum */
    float decay;       /* in (0, 1]: each query's weight is decay^(its age); 1 = H2O's plain sum */
    enum kv_cold cold; /* the cold store's element type; OFF: evicted tokens are dropped (plain H2O) */
    int recall;        /* cold tokens recalled per layer and KV head per call (whole pages) */
    int cands;         /* the candidates of a recall, in multiples of it; 0: KV_RECALL_CANDS */
    int64_t cold_max;  /* bytes of the cold store, all layers and heads; 0: unbounded */
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
/* "off", "q8", "q4", "f32" */
const char *kv_cold_name(enum kv_cold c);
int kv_cold_parse(const char *s, enum kv_cold *c);

/* One page of the cold store (see enum kv_cold). */
struct kv_page { /* what recall reads of every page comes first: one cache line */
    int n;            /* tokens stored, <= KV_PAGE */
    float *kmin, *kmax; /* [head_dim] over the stored (dequantized) keys */
    void *k, *v;      /* [KV_PAGE][head_dim] elements (q4: two per byte) */
    double score;     /* their summed H2O scores when evicted */
    int32_t pos[KV_PAGE];
    float kscale[KV_PAGE], vscale[KV_PAGE]; /* q8, q4: x = q * scale */
    double tscore[KV_PAGE]; /* each token's H2O score when it went cold (score is their sum) */
};

struct kv_cold_head {
    struct kv_page **pages; /* [n_pages] by position range; NULL: none of its tokens is cold */
    int n_pages, cap;
    size_t bytes;
    int32_t max_pos; /* no stored token is later than this (a rewind before it has work to do) */
};

struct kvcache {
    int n_layers, n_kv_heads, n_heads, head_dim;
    int budget, max_batch, n_slots;
    int cands; /* recall's candidates, in multiples of the recall */
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
    int32_t *ord;   /* [n_layers][n_kv_heads][n_slots] each head's live slots in position order */
    /* the cold store */
    enum kv_cold cold;
    int recall;
    size_t cold_head_max; /* bytes per (layer, head); 0: unbounded */
    struct kv_cold_head *cheads; /* [n_layers][n_kv_heads] */
    size_t cold_bytes, cold_peak_bytes;
    int64_t cold_dropped;  /* pages dropped for cold_max */
    int64_t recalled;      /* tokens recalled, summed over calls, layers and heads */
    /* per call: the recalled tokens of each KV head (f32), and each head's
     * attention list (hot slots and recalled tokens merged by position) */
    float *rk, *rv;        /* [n_kv_heads][recall][head_dim] (their list entries have slot -1) */
    /* recall's scratch: candidate tokens (a page's token i, its score, kept or not), twice */
    struct kv_cand { float score; int32_t pos; const struct kv_page *pg; int i, keep; } *cand; /* [n_kv_heads][2][] */
    float *rq;     /* [n_kv_heads][KV_RECALL_ROWS * group][head_dim]: the call's queries of a KV head, packed */
    float *rdots;  /* [n_kv_heads][KV_RECALL_ROWS * group]: a candidate's dot with each */
    int *n_recall; /* [n_kv_heads]: tokens the call's recall listed */
    struct kv_entry { const float *k, *v; int32_t pos, slot; } *list; /* [n_kv_heads][n_slots + recall] */
    int *n_list;           /* [n_kv_heads] */
    struct page_rank *rank; /* [n_kv_heads][rank_cap] scratch: the pages of a head by bound */
    int *page_cand;         /* [n_kv_heads][rank_cap] scratch: a page's first candidate, or -1 */
    int rank_cap;
};

/* cfg must be resolved. n_heads: query heads (a multiple of n_kv_heads). */
int kvcache_create(struct kvcache *kv, const struct kv_config *cfg, int n_layers, int n_heads, int n_kv_heads,
                   int head_dim, int max_batch, int n_threads, char *err, size_t errlen);
void kvcache_destroy(struct kvcache *kv);

/* Bytes of the cache proper (keys, values, scales, positions, scores): the
 * resident (hot) KV. */
size_t kvcache_bytes(const struct kvcache *kv);
/* Bytes the cold store holds now (host memory), and its peak. */
size_t kvcache_cold_bytes(const struct kvcache *kv);
size_t kvcache_cold_peak_bytes(const struct kvcache *kv);
/* For tests: a page's upper bound of q . k (q [head_dim]) as recall ranks it. */
float kvcache_page_bound(const struct kvcache *kv, const struct kv_page *pg, const float *q);
/* For tests: the cold pages of (layer, kv head), by position range (entries may be NULL). */
int kvcache_cold_pages(const struct kvcache *kv, int layer, int kvh, const struct kv_page *const **pages);
/* A cold key's score as recall ranks it: the best q . k over the nq queries
 * q [nq][head_dim] (contiguous), computed on the stored row (int8 / int4
 * dots, then its scale); dots: nq floats of scratch. */
float kvcache_cold_score(const struct kvcache *kv, const struct kv_page *pg, int i, const float *q, int nq,
                         float *dots);
/* For tests: one stored cold key / value, dequantized */
void kvcache_cold_read(const struct kvcache *kv, const struct kv_page *pg, int i, float *key, float *value);
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
