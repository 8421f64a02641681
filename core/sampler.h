/* sampler: choose the next token from a row of logits.
 *
 * llama.cpp's sampling semantics and order:
 *   repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw
 * top-k, top-p and min-p therefore see the (penalised) logits at temperature 1,
 * and the temperature only reshapes the distribution over the survivors.
 * temp <= 0 means greedy: the argmax of the penalised logits, ties to the lowest id.
 *
 * Logits that are NaN are treated as -inf: such a token is never chosen (a
 * deterministic rule, not an error, so one bad entry cannot stop a generation);
 * +inf counts as the largest finite float. When no token has a logit above -inf,
 * sampler_sample returns -1.
 *
 * The sampler owns its PRNG (xoshiro256**, seeded through splitmix64), so a seed
 * fully determines the sequence of draws on every platform. Work per token is
 * O(n_vocab) plus a sort of the few candidates the filters keep (partial
 * selection), never a full sort of the vocabulary unless every filter needs it. */
#ifndef HEARTH_SAMPLER_H
#define HEARTH_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

/* seed value meaning "choose one from the clock and pid" (llama.cpp's LLAMA_DEFAULT_SEED) */
#define SAMPLER_SEED_RANDOM 0xFFFFFFFFull

struct sampler_params {
    float temp;           /* <= 0: greedy; otherwise logits are divided by temp */
    float top_p;          /* keep the smallest most-likely set with mass >= top_p; >= 1 disables */
    float min_p;          /* keep tokens with p >= min_p * p_max; <= 0 disables */
    float repeat_penalty; /* 1 disables; > 1 discourages tokens of the recent history */
    int top_k;            /* keep the top_k most likely; <= 0 disables */
    int repeat_last_n;    /* history length for the penalty; 0 disables; must be >= 0 */
    uint64_t seed;        /* SAMPLER_SEED_RANDOM: from the clock; sampler_seed() tells which */
};

/* llama.cpp's defaults: temp 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_penalty 1.0 (off), repeat_last_n 64, seed SAMPLER_SEED_RANDOM. */
void sampler_params_default(struct sampler_params *p);

struct sampler;

/* NULL with err filled when a parameter is out of range (NaN temperature, top_p
 * or min_p outside [0, 1], repeat_penalty <= 0, repeat_last_n < 0, n_vocab < 1)
 * or memory runs out. */
struct sampler *sampler_create(const struct sampler_params *p, int32_t n_vocab, char *err, size_t errlen);
void sampler_free(struct sampler *s);

/* The next token for logits [n_vocab]; the caller's array is not modified.
 * -1 when every logit is -inf or NaN. */
int32_t sampler_sample(struct sampler *s, const float *logits);

/* Appends token to the penalty history (call it for prompt tokens too, as
 * llama.cpp does, when they should be penalised). Out-of-range ids are ignored. */
void sampler_accept(struct sampler *s, int32_t token);

/* Clears the history and restarts the PRNG from the seed: after a reset the same
 * logits give the same tokens again. */
void sampler_reset(struct sampler *s);

/* The seed actually in use (the drawn one when SAMPLER_SEED_RANDOM was asked). */
uint64_t sampler_seed(const struct sampler *s);

/* One candidate after the filters: id and its final probability (after the
 * temperature; the probabilities of the returned set sum to 1). */
struct sampler_cand {
    int32_t id;
    float logit; /* penalised logit, before the temperature */
    float p;
};

/* Runs penalties and filters without drawing; *out points at n candidates (the
 * return value) inside the sampler, valid until its next call. Candidates come in
 * descending probability (ties: lower id first). With temp <= 0 the set is the one
 * greedy token with p = 1. Returns 0 when every logit is -inf or NaN. Sorting the
 * survivors costs O(n log n) in their number, so this is a diagnostic (tests,
 * --verbose, logprobs), not the per-token path. */
int32_t sampler_candidates(struct sampler *s, const float *logits, const struct sampler_cand **out);

#endif
