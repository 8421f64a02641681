/* engine: a loaded model ready to generate: weights, tokenizer, run state,
 * and the sequences it decodes together.
 *
 * Shared by every command that generates (run, chat, bench, perplexity,
 * batch, serve): the one C interface on top of which the CLI and the HTTP
 * server both sit. A step is computed by the dense in-process pass
 * (forward.h) or by the multi-process runtime (runtime.h); they give the same
 * results bit for bit.
 *
 * Sequences (continuous batching). The engine holds n_seq sequence slots
 * (--parallel), each with its own KV cache, all allocated at open. A caller
 *   opens a sequence with its prompt (engine_seq_open: a free slot whose
 *     cached tokens begin the prompt is reused, that prefix is not evaluated
 *     again),
 *   calls engine_step, which evaluates one batch: one pending token of every
 *     decoding sequence and whole prompt chunks of new ones, so a sequence
 *     joins or leaves between steps and never waits for the others,
 *   samples from a sequence's logits once it has them (engine_seq_logits,
 *     engine_seq_sample with its own sampler), submits the sampled token,
 *   and closes it (engine_seq_close), or cancels it from any thread
 *     (engine_seq_cancel: the slot is freed at the next step).
 * A sequence's tokens and logits do not depend on what else is in the batch:
 * the matmuls are batch-invariant (each row's sums in a fixed order) and
 * attention and sampling are per sequence. A prompt is cut into chunks of
 * engine.chunk tokens counted from its first uncached token, whatever runs
 * beside it (the cut matters to an H2O cache's evictions).
 *
 * Threads: every engine_* call comes from one thread, except
 * engine_seq_cancel, which any thread may call at any time.
 *
 * The single-sequence calls (engine_eval, engine_generate, engine_truncate)
 * work on sequence 0 and are what the CLI's run, chat, bench and perplexity
 * use. */
#ifndef HEARTH_ENGINE_H
#define HEARTH_ENGINE_H

#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "forward.h"
#include "hotcold.h"
#include "insparse.h"
#include "sidecar.h"
#include "kvcache.h"
#include "runtime.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

struct engine_opts {
    const char *model_path; /* NULL: the default model */
    int n_ctx;              /* 0: min(4096, training context) */
    int n_threads;          /* 0: online CPUs */
    int max_batch;          /* 0: 512 */
    int single_process;     /* 1: the dense in-process pass; 0: the multi-process runtime */
    int n_cpu_workers;      /* runtime: 0 = one per NUMA node */
    const char *pin;        /* runtime: --pin SPEC */
    const char *gpu_backend;/* runtime: --gpu-backend */
    float hot_fraction;     /* runtime: --hot-fraction */
    const char *sidecar_path; /* --sidecar: hot/cold placement and predictors (core/sidecar.h) */
    struct kv_config kv;    /* --kv-budget/-sinks/-recent/-type/-window (core/kvcache.h) */
    int n_seq;              /* --parallel: sequence slots, each with a KV cache of n_ctx; 0: 1 */
};

/* One sequence slot. */
struct engine_seq {
    int open;          /* opened and not closed */
    int32_t *past;     /* [n_ctx] the tokens in its KV cache, in order */
    int n_past;
    int32_t *pending;  /* [n_ctx] submitted, not yet evaluated */
    int n_pending;
    int has_logits;    /* 1: logits hold the output of its last evaluated token */
    float *logits;     /* [n_vocab] */
    int evicted;       /* its cache ever held more than the H2O budget: the prefix is not reusable */
    uint64_t last_used;/* engine step counter at its last use (for choosing a free slot) */
    _Atomic int cancel;/* set by engine_seq_cancel, acted on at the next step */
};

struct engine {
    struct llama_model model;
    struct tokenizer *tok;
    struct llama_state st;    /* single process only */
    struct runtime *rt;       /* multi-process only */
    struct sidecar sc;        /* --sidecar; sc.layers NULL without */
    struct hotcold hc;        /* single process with --sidecar */
    struct insparse_model ins; /* single process with a sidecar's input sparsity */
    int n_ctx, max_batch, n_threads;
    struct kv_config kv; /* resolved; kv_config_active(): the H2O cache is in use */
    float *logits; /* [max_batch, n_vocab]: engine_eval's; a step's logits rows */
    char model_path[4096];
    int n_seq;
    struct engine_seq *seqs; /* [n_seq] */
    int chunk;     /* prompt tokens of one sequence per step: max_batch - (n_seq - 1) */
    uint64_t n_steps;
};

struct gen_stats {
    int n_prompt, n_gen;
    double prompt_s, gen_s;
};

void engine_opts_default(struct engine_opts *o);
int engine_open(struct engine *s, const struct engine_opts *o, char *err, size_t errlen);
void engine_close(struct engine *s);

/* The single-sequence calls of bench and perplexity, on sequence 0 (not
 * to be mixed with engine_seq_* calls on it). */

/* Keeps the first n tokens of the KV cache (a shared prefix) and drops the rest.
 * With the H2O cache, prefix tokens evicted earlier stay evicted. */
void engine_truncate(struct engine *s, int n);

/* Evaluates tokens at positions n_past.. of sequence 0 and advances its
 * n_past. Logits of the last token (or of all, when all_logits) land in
 * s->logits. */
int engine_eval(struct engine *s, const int32_t *tokens, int n, int all_logits, char *err, size_t errlen);

/* One generation on the sequences interface: opens a sequence for the
 * prompt (reusing a free slot's cached prefix: a chat's earlier turns are
 * not evaluated again), then samples up to n_predict tokens, streaming
 * their text to `out` (may be NULL), and closes it. Stops at an
 * end-of-generation token. The sampler accepts the prompt tokens it did not
 * see (those after the cached prefix). Generated ids are appended to *gen /
 * *n_gen when gen is non-NULL (caller frees). */
int engine_generate(struct engine *s, const int32_t *prompt, int n_prompt, int n_predict, struct sampler *smp,
                     FILE *out, int32_t **gen, int *n_gen, struct gen_stats *stats, char *err, size_t errlen);

/* ---- sequences ---- */

/* Opens a sequence for prompt[0..n_prompt) (n_prompt >= 1) in a free slot:
 * the one whose cached tokens share the longest prefix with the prompt (at
 * most n_prompt - 1 of them, so the last prompt token is evaluated and gives
 * logits), else the least recently used. *n_cached (may be NULL) tells how
 * many prompt tokens were reused. Returns the sequence id in [0, n_seq), or
 * -1 with err: every slot busy, the prompt longer than the context, a token
 * outside the vocabulary. Nothing is evaluated until engine_step. */
int engine_seq_open(struct engine *e, const int32_t *prompt, int n_prompt, int *n_cached, char *err, size_t errlen);
/* Queues tokens (a sampled one, a user's next turn) after what the sequence
 * holds; its logits are those of the last of them once a step evaluated
 * them. -1 with err when the context would overflow or a token is bad. */
int engine_seq_submit(struct engine *e, int seq, const int32_t *tokens, int n, char *err, size_t errlen);
/* Evaluates one batch of every open sequence's pending tokens (cancelled ones
 * are closed first). Returns the number of tokens evaluated (0: nothing was
 * pending), or -1 with err (the engine is then unusable only if the runtime
 * failed beyond recovery). */
int engine_step(struct engine *e, char *err, size_t errlen);
/* The logits [n_vocab] after the sequence's last submitted token, or NULL
 * while tokens are pending (or for a closed sequence). */
const float *engine_seq_logits(const struct engine *e, int seq);
/* Samples the next token from the sequence's logits with the caller's
 * sampler and accepts it into the sampler's history (not into the
 * sequence: submit it to continue). -1: no logits yet, or all are -inf. */
int32_t engine_seq_sample(struct engine *e, int seq, struct sampler *smp);
/* Any thread: asks the engine to close the sequence at its next step. */
void engine_seq_cancel(struct engine *e, int seq);
/* Closes the sequence now; its slot is free and keeps its cached tokens for
 * a later prompt that begins with them. */
void engine_seq_close(struct engine *e, int seq);
/* 1 while open (not closed, and not cancelled by a step yet). */
int engine_seq_is_open(const struct engine *e, int seq);
/* Tokens in the sequence's KV cache (evaluated), and open slots in all. */
int engine_seq_n_past(const struct engine *e, int seq);
int engine_n_open(const struct engine *e);

/* Bytes of the KV cache (in whichever process holds it): the resident (hot) KV. */
size_t engine_kv_bytes(const struct engine *s);
/* Host bytes of the cold KV store (--kv-cold) now, all sequences. */
size_t engine_kv_cold_bytes(const struct engine *s);
/* FFN weight bytes read so far and what the dense FFN would have read, over
 * all tokens and layers (with --sidecar; both 0 without). */
void engine_ffn_bytes(const struct engine *s, double *weight_bytes, double *dense_bytes);
/* Seconds spent in the attention core over the KV cache so far (in the GPU
 * worker with the runtime); cumulative, so callers take differences. */
double engine_attn_seconds(const struct engine *s);

/* Number of online CPUs (at least 1). */
int engine_default_threads(void);

double engine_now(void); /* monotonic seconds */

#endif
