/* engine: a loaded model ready to generate: weights, tokenizer, run state.
 *
 * Shared by the commands that generate (run, chat, bench, perplexity). The
 * evaluation itself goes through `engine_eval`, the one place that decides
 * which engine computes a step; today that is the dense in-process pass
 * (forward.h), or the multi-process runtime (runtime.h), which must give the
 * same results. */
#ifndef HEARTH_ENGINE_H
#define HEARTH_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "forward.h"
#include "hotcold.h"
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
};

struct engine {
    struct llama_model model;
    struct tokenizer *tok;
    struct llama_state st;    /* single process only */
    struct runtime *rt;       /* multi-process only */
    struct sidecar sc;        /* --sidecar; sc.layers NULL without */
    struct hotcold hc;        /* single process with --sidecar */
    int n_ctx, max_batch, n_threads;
    struct kv_config kv; /* resolved; kv_config_active(): the H2O cache is in use */
    float *logits; /* [max_batch, n_vocab] */
    char model_path[4096];
    int n_past;    /* tokens in the KV cache */
    int32_t *past; /* [n_ctx] the tokens in the KV cache, in order */
};

struct gen_stats {
    int n_prompt, n_gen;
    double prompt_s, gen_s;
};

void engine_opts_default(struct engine_opts *o);
int engine_open(struct engine *s, const struct engine_opts *o, char *err, size_t errlen);
void engine_close(struct engine *s);

/* Keeps the first n tokens of the KV cache (a shared prefix) and drops the rest.
 * With the H2O cache, prefix tokens evicted earlier stay evicted. */
void engine_truncate(struct engine *s, int n);

/* Evaluates tokens at positions n_past.. and advances n_past. Logits of the
 * last token (or of all, when all_logits) land in s->logits. */
int engine_eval(struct engine *s, const int32_t *tokens, int n, int all_logits, char *err, size_t errlen);

/* Evaluates the prompt (after any cached prefix the caller left in place),
 * then samples up to n_predict tokens, streaming their text to `out` (may be
 * NULL). Stops at an end-of-generation token. Generated ids are appended to
 * *gen / *n_gen when gen is non-NULL (caller frees). */
int engine_generate(struct engine *s, const int32_t *prompt, int n_prompt, int n_predict, struct sampler *smp,
                     FILE *out, int32_t **gen, int *n_gen, struct gen_stats *stats, char *err, size_t errlen);

/* Bytes of the KV cache (in whichever process holds it). */
size_t engine_kv_bytes(const struct engine *s);
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
