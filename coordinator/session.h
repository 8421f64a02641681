/* session: a loaded model ready to generate: weights, tokenizer, run state.
 *
 * Shared by the commands that generate (run, chat, bench, perplexity). The
 * evaluation itself goes through `session_eval`, the one place that decides
 * which engine computes a step; today that is the dense in-process pass
 * (forward.h). */
#ifndef HEARTH_SESSION_H
#define HEARTH_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "forward.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

struct session_opts {
    const char *model_path; /* NULL: the default model */
    int n_ctx;              /* 0: min(4096, training context) */
    int n_threads;          /* 0: online CPUs */
    int max_batch;          /* 0: 512 */
};

struct session {
    struct llama_model model;
    struct tokenizer *tok;
    struct llama_state st;
    float *logits; /* [max_batch, n_vocab] */
    char model_path[4096];
    int n_past;    /* tokens in the KV cache */
    int32_t *past; /* [n_ctx] the tokens in the KV cache, in order */
};

struct gen_stats {
    int n_prompt, n_gen;
    double prompt_s, gen_s;
};

void session_opts_default(struct session_opts *o);
int session_open(struct session *s, const struct session_opts *o, char *err, size_t errlen);
void session_close(struct session *s);

/* Keeps the first n tokens of the KV cache (a shared prefix) and drops the rest. */
void session_truncate(struct session *s, int n);

/* Evaluates tokens at positions n_past.. and advances n_past. Logits of the
 * last token (or of all, when all_logits) land in s->logits. */
int session_eval(struct session *s, const int32_t *tokens, int n, int all_logits, char *err, size_t errlen);

/* Evaluates the prompt (after any cached prefix the caller left in place),
 * then samples up to n_predict tokens, streaming their text to `out` (may be
 * NULL). Stops at an end-of-generation token. Generated ids are appended to
 * *gen / *n_gen when gen is non-NULL (caller frees). */
int session_generate(struct session *s, const int32_t *prompt, int n_prompt, int n_predict, struct sampler *smp,
                     FILE *out, int32_t **gen, int *n_gen, struct gen_stats *stats, char *err, size_t errlen);

/* Number of online CPUs (at least 1). */
int session_default_threads(void);

double session_now(void); /* monotonic seconds */

#endif
