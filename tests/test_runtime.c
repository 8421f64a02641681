/* test_runtime: the multi-process runtime against the dense single-process
 * pass on the default model.
 *
 * With every neuron computed, the runtime must give the same greedy tokens
 * and the same logits as the dense pass, whatever the split of neurons
 * between the GPU worker and the CPU workers (hot fraction) and however
 * many CPU workers there are. The FFN's partial sums are exact (FFN_GROUP,
 * core/forward.h), so the logits are compared bit for bit; any difference
 * is reported with its size.
 *
 * Then the compressed KV cache, which the GPU worker owns: with an H2O
 * budget below the sequence (q8 storage, decayed scores) the runtime must
 * give the single-process engine's tokens and logits bit for bit, so the
 * cache options reach the worker and evict the same tokens there; the same
 * with the evicted tokens kept in a q4 cold store and recalled.
 *
 *   test_runtime [N_PROMPTS] [N_TOKENS]     (defaults 10 and 64)
 * Needs HEARTH_TEST_MODEL; exits 77 (skipped) without it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"

static const char *const k_prompts[] = {
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<|im_start|>user\nWhat are the three primary colors?<|im_end|>\n<|im_start|>assistant\n",
    "The mitochondria is the powerhouse of the cell. It",
    "1, 2, 3, 5, 8, 13,",
    "Translate to French: I like apples. ->",
    "Water boils at 100 degrees Celsius at sea level because",
    "A haiku about winter:\n",
    "In 1969, the first humans landed on the Moon. The mission was called",
};
#define N_PROMPTS_MAX ((int)(sizeof k_prompts / sizeof k_prompts[0]))

struct result {
    int32_t *tokens; /* [n_tokens] greedy continuation */
    float *logits;   /* [n_tokens, n_vocab] the logits each token was chosen from */
};

static int32_t argmax(const float *v, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* Greedy continuation of prompt p, recording every step's logits. */
static int generate(struct engine *e, int p, int n_tokens, struct result *r, char *err, size_t errlen) {
    const int n_vocab = e->model.cfg.n_vocab;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (tokenizer_encode(e->tok, k_prompts[p], strlen(k_prompts[p]), 1, &ids, &n_ids) != 0 || n_ids == 0) {
        snprintf(err, errlen, "cannot tokenize prompt %d", p);
        free(ids);
        return -1;
    }
    engine_truncate(e, 0);
    int rc = engine_eval(e, ids, (int)n_ids, 0, err, errlen);
    free(ids);
    if (rc != 0) return -1;
    for (int i = 0; i < n_tokens; i++) {
        memcpy(r->logits + (size_t)i * n_vocab, e->logits, (size_t)n_vocab * sizeof(float));
        r->tokens[i] = argmax(e->logits, n_vocab);
        if (i + 1 < n_tokens && engine_eval(e, &r->tokens[i], 1, 0, err, errlen) != 0) return -1;
    }
    return 0;
}

/* kv: NULL for the dense cache, else the H2O cache options (unresolved) */
static int run_config(const char *model, int single, float hot, int n_cpu, const struct kv_config *kv, int n_prompts,
                      int n_tokens, struct result *res, int n_vocab, char *err, size_t errlen) {
    struct engine_opts o;
    engine_opts_default(&o);
    o.model_path = model;
    o.n_ctx = 256;
    o.max_batch = 64;
    o.n_threads = 2;
    o.single_process = single;
    o.hot_fraction = hot;
    o.n_cpu_workers = n_cpu;
    if (kv) o.kv = *kv;
    struct engine e;
    if (engine_open(&e, &o, err, errlen) != 0) return -1;
    if (e.model.cfg.n_vocab != n_vocab) {
        snprintf(err, errlen, "vocab %d, expected %d", e.model.cfg.n_vocab, n_vocab);
        engine_close(&e);
        return -1;
    }
    for (int p = 0; p < n_prompts; p++) {
        if (generate(&e, p, n_tokens, &res[p], err, errlen) != 0) {
            engine_close(&e);
            return -1;
        }
    }
    engine_close(&e);
    return 0;
}

/* Prints how far got matches ref (tokens, then logits up to the first
 * differing token); returns 0 when identical bit for bit. */
static int compare(const struct result *ref, const struct result *got, int n_prompts, int n_tokens, int n_vocab,
                   const char *what) {
    int same_tokens = 0, same_prompts = 0;
    double max_diff = 0;
    for (int p = 0; p < n_prompts; p++) {
        int same = 0;
        while (same < n_tokens && got[p].tokens[same] == ref[p].tokens[same]) same++;
        same_tokens += same;
        same_prompts += same == n_tokens;
        /* logits are compared up to the first differing token (after it the inputs differ) */
        int rows = same < n_tokens ? same + 1 : n_tokens;
        for (size_t i = 0; i < (size_t)rows * n_vocab; i++) {
            double d = fabs((double)got[p].logits[i] - ref[p].logits[i]);
            if (d > max_diff || d != d) max_diff = d;
        }
        if (same < n_tokens)
            printf("  prompt %d: token %d differs (%d vs reference %d)\n", p, same, got[p].tokens[same],
                   ref[p].tokens[same]);
    }
    int ok = same_prompts == n_prompts && max_diff == 0.0;
    printf("%s: %s: %d/%d prompts identical (%d/%d tokens), max |logit diff| %.3g\n", ok ? "ok" : "FAIL", what,
           same_prompts, n_prompts, same_tokens, n_prompts * n_tokens, max_diff);
    return ok ? 0 : 1;
}

static void alloc_results(struct result *r, int n_prompts, int n_tokens, int n_vocab) {
    for (int p = 0; p < n_prompts; p++) {
        r[p].tokens = calloc((size_t)n_tokens, sizeof *r[p].tokens);
        r[p].logits = calloc((size_t)n_tokens * n_vocab, sizeof *r[p].logits);
        if (!r[p].tokens || !r[p].logits) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
    }
}

int main(int argc, char **argv) {
    const char *model = getenv("HEARTH_TEST_MODEL");
    if (!model || access(model, R_OK) != 0) {
        printf("SKIP: no model at HEARTH_TEST_MODEL (%s)\n", model ? model : "unset");
        return 77;
    }
    int n_prompts = argc > 1 ? atoi(argv[1]) : N_PROMPTS_MAX, n_tokens = argc > 2 ? atoi(argv[2]) : 64;
    if (n_prompts < 1 || n_prompts > N_PROMPTS_MAX || n_tokens < 1) {
        fprintf(stderr, "usage: test_runtime [N_PROMPTS <= %d] [N_TOKENS]\n", N_PROMPTS_MAX);
        return 2;
    }
    log_set_role("test");
    const int n_vocab = 49152;
    char err[1024];
    struct result *ref = calloc((size_t)n_prompts, sizeof *ref), *got = calloc((size_t)n_prompts, sizeof *got);
    alloc_results(ref, n_prompts, n_tokens, n_vocab);
    alloc_results(got, n_prompts, n_tokens, n_vocab);
    if (run_config(model, 1, 0, 0, NULL, n_prompts, n_tokens, ref, n_vocab, err, sizeof err) != 0) {
        printf("FAIL: dense pass: %s\n", err);
        return 1;
    }
    /* the grid of hot fractions x CPU workers, then once more with the CPU
     * workers computing from NUMA-local copies of their shards (forced: this
     * machine has one node) */
    static const struct {
        float hot;
        int n_cpu, numa_copy;
    } configs[] = {{0.0f, 1, 0}, {0.0f, 2, 0}, {0.3f, 1, 0}, {0.3f, 2, 0}, {1.0f, 1, 0}, {1.0f, 2, 0}, {0.3f, 2, 1}};
    int failures = 0;
    for (size_t k = 0; k < sizeof configs / sizeof configs[0]; k++) {
        const float hot = configs[k].hot;
        const int n_cpu = configs[k].n_cpu, numa_copy = configs[k].numa_copy;
        if (numa_copy) setenv("HEARTH_NUMA_COPY", "1", 1); /* the workers inherit it */
        if (run_config(model, 0, hot, n_cpu, NULL, n_prompts, n_tokens, got, n_vocab, err, sizeof err) != 0) {
            printf("FAIL: hot %.1f, %d CPU workers: %s\n", hot, n_cpu, err);
            failures++;
            continue;
        }
        char what[128];
        snprintf(what, sizeof what, "hot fraction %.1f, %d CPU worker%s%s", hot, n_cpu, n_cpu > 1 ? "s" : "",
                 numa_copy ? " (NUMA-local copies)" : "");
        failures += compare(ref, got, n_prompts, n_tokens, n_vocab, what) != 0;
    }
    /* the H2O cache: 16 tokens per layer and KV head (the prompts run to
     * 70-90 tokens with their continuations, 21 in the sanitizer run), q8,
     * decayed scores; the
     * single-process engine with the same cache is the reference */
    struct kv_config kv;
    kv_config_default(&kv);
    kv.budget = 16;
    kv.type = KV_Q8;
    kv.decay = 0.95f;
    if (run_config(model, 1, 0, 0, &kv, n_prompts, n_tokens, ref, n_vocab, err, sizeof err) != 0) {
        printf("FAIL: single process, H2O cache: %s\n", err);
        failures++;
    } else if (run_config(model, 0, 0.3f, 2, &kv, n_prompts, n_tokens, got, n_vocab, err, sizeof err) != 0) {
        printf("FAIL: runtime, H2O cache: %s\n", err);
        failures++;
    } else {
        failures += compare(ref, got, n_prompts, n_tokens, n_vocab,
                            "H2O cache (budget 16, q8, decay 0.95), hot fraction 0.3, 2 CPU workers") != 0;
    }
    /* hot/cold KV: what the budget evicts kept as q4 and recalled per step
     * (a page's worth, from two pages' candidates: not the default, so the
     * Assign must carry it): the cold store lives in the GPU worker */
    kv.cold = KV_COLD_Q4;
    kv.recall = KV_PAGE;
    kv.cands = 2;
    if (run_config(model, 1, 0, 0, &kv, n_prompts, n_tokens, ref, n_vocab, err, sizeof err) != 0) {
        printf("FAIL: single process, hot/cold KV: %s\n", err);
        failures++;
    } else if (run_config(model, 0, 0.3f, 2, &kv, n_prompts, n_tokens, got, n_vocab, err, sizeof err) != 0) {
        printf("FAIL: runtime, hot/cold KV: %s\n", err);
        failures++;
    } else {
        failures += compare(ref, got, n_prompts, n_tokens, n_vocab,
                            "hot/cold KV (budget 16, q8 hot, q4 cold, recall 16, 2x candidates), hot fraction 0.3, "
                            "2 CPU workers") != 0;
    }
    for (int p = 0; p < n_prompts; p++) {
        free(ref[p].tokens);
        free(ref[p].logits);
        free(got[p].tokens);
        free(got[p].logits);
    }
    free(ref);
    free(got);
    printf("%s\n", failures ? "FAILED" : "all configurations match the dense pass");
    return failures ? 1 : 0;
}
