/* test_batch: many sequences at once (the engine's sequences, continuous
 * batching) change no sequence's result.
 *
 *   test_batch [engine options: --single-process, --kv-budget N, --sidecar F, --cpu-workers N, ...]
 *
 * 1. Batching changes nothing. Eight sequences with prompts of different
 *    lengths and different sampling settings (greedy, temperature with
 *    top-k/top-p/min-p, a repetition penalty), each with its own seed, are
 *    run alone, one after another, and then together, joining at different
 *    steps (so prompt chunks and decode tokens share steps, and the batch
 *    changes as sequences finish). Every sequence must give the same tokens
 *    and the same logits, bit for bit, at every step.
 * 2. Cancel. Three sequences fill three slots; a fourth open fails (busy);
 *    one is cancelled from another thread mid-generation: after the next
 *    step its slot is free (the fourth opens), and the other two give
 *    their tokens alone.
 * 3. Prompt reuse. A chat's next turn (the first turn's prompt and answer,
 *    then more) reuses the cached tokens of the slot that holds them, and
 *    gives the logits of a fresh evaluation; with an H2O budget the
 *    reused cache must be one no eviction touched (else nothing is reused).
 *    Through the runtime the GPU worker is killed (kill -9) between the
 *    turns: the rebuilt caches must give the same logits.
 *
 * Needs HEARTH_TEST_MODEL (exits 77 without it). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"

#define N_SEQ 8

static const char *const k_prompts[N_SEQ] = {
    "The capital of France is",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<|im_start|>user\nWhat are the three primary colors?<|im_end|>\n<|im_start|>assistant\n",
    "1, 2, 3, 5, 8, 13,",
    ("Water boils at 100 degrees Celsius at sea level because the air pressure above the water is exactly one "
     "atmosphere, and the molecules need enough energy to escape into the air. At higher altitudes"),
    "A haiku about winter:\n",
    "In 1969,",
};

struct spec {
    int32_t *prompt;
    int n_prompt, n_gen, start; /* tokens to generate, the step at which it joins */
    struct sampler_params sp;
};

struct outcome {
    int32_t *tok; /* [n_gen] */
    float *logits; /* [n_gen, n_vocab] the logits each token was sampled from */
    int n;
};

static int failures;
static char err[2048];

#define CHECK(cond, ...)                                                                                             \
    do {                                                                                                             \
        if (!(cond)) {                                                                                               \
            printf("FAIL: " __VA_ARGS__);                                                                            \
            printf("\n");                                                                                            \
            failures++;                                                                                              \
        }                                                                                                            \
    } while (0)

static int n_vocab;

/* A running sequence of a schedule. */
struct run {
    const struct spec *sp;
    struct outcome *out;
    struct sampler *smp;
    int seq, done;
};

/* Samples every run that has logits; submits or closes. -1 on error. */
static int advance(struct engine *e, struct run *r, int n) {
    for (int i = 0; i < n; i++) {
        if (r[i].seq < 0 || r[i].done) continue;
        const float *lg = engine_seq_logits(e, r[i].seq);
        if (!lg) continue;
        struct outcome *o = r[i].out;
        memcpy(o->logits + (size_t)o->n * n_vocab, lg, (size_t)n_vocab * sizeof *lg);
        const int32_t t = engine_seq_sample(e, r[i].seq, r[i].smp);
        if (t < 0) {
            snprintf(err, sizeof err, "no token to sample");
            return -1;
        }
        o->tok[o->n++] = t;
        if (o->n == r[i].sp->n_gen) {
            engine_seq_close(e, r[i].seq);
            r[i].done = 1;
        } else if (engine_seq_submit(e, r[i].seq, &t, 1, err, sizeof err) != 0) {
            return -1;
        }
    }
    return 0;
}

static struct sampler *make_sampler(const struct spec *s) {
    struct sampler *smp = sampler_create(&s->sp, n_vocab, err, sizeof err);
    if (smp)
        for (int t = 0; t < s->n_prompt; t++) sampler_accept(smp, s->prompt[t]);
    return smp;
}

/* Runs specs[0..n): alone (together = 0: each to its end before the next
 * opens) or together (each opens at its start step). */
static int schedule(struct engine *e, const struct spec *specs, int n, int together, struct outcome *out) {
    struct run r[N_SEQ];
    int rc = -1;
    memset(r, 0, sizeof r);
    for (int i = 0; i < n; i++) {
        r[i] = (struct run){&specs[i], &out[i], make_sampler(&specs[i]), -1, 0};
        out[i].n = 0;
        if (!r[i].smp) goto out;
    }
    int finished = 0;
    for (int step = 0, next = 0; finished < n; step++) {
        for (; next < n && (together ? specs[next].start <= step : finished == next); next++) {
            r[next].seq = engine_seq_open(e, specs[next].prompt, specs[next].n_prompt, NULL, err, sizeof err);
            if (r[next].seq < 0) goto out;
        }
        if (engine_step(e, err, sizeof err) < 0 || advance(e, r, n) != 0) goto out;
        finished = 0;
        for (int i = 0; i < n; i++) finished += r[i].done;
    }
    rc = 0;
out:
    for (int i = 0; i < n; i++) sampler_free(r[i].smp);
    return rc;
}

static int same(const struct outcome *a, const struct outcome *b, const char *what, int i) {
    if (a->n != b->n) {
        CHECK(0, "%s: sequence %d gave %d tokens together, %d alone", what, i, b->n, a->n);
        return 0;
    }
    for (int t = 0; t < a->n; t++) {
        if (a->tok[t] != b->tok[t] ||
            memcmp(a->logits + (size_t)t * n_vocab, b->logits + (size_t)t * n_vocab, (size_t)n_vocab * sizeof(float))) {
            float d = 0.0f;
            for (int k = 0; k < n_vocab; k++) {
                float x = a->logits[(size_t)t * n_vocab + k] - b->logits[(size_t)t * n_vocab + k];
                if (x < 0) x = -x;
                if (x > d) d = x;
            }
            CHECK(0, "%s: sequence %d differs at token %d: %d alone, %d together, logits max |diff| %g", what, i, t,
                  a->tok[t], b->tok[t], (double)d);
            return 0;
        }
    }
    return 1;
}

static void outcome_alloc(struct outcome *o, int n_gen) {
    o->tok = calloc((size_t)n_gen, sizeof *o->tok);
    o->logits = calloc((size_t)n_gen * n_vocab, sizeof *o->logits);
    o->n = 0;
    if (!o->tok || !o->logits) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
}

static void outcome_free(struct outcome *o) {
    free(o->tok);
    free(o->logits);
}

/* ---- 1: batching changes nothing ---- */
static void test_together(struct engine *e, struct spec *specs) {
    struct outcome alone[N_SEQ], together[N_SEQ];
    for (int i = 0; i < N_SEQ; i++) {
        outcome_alloc(&alone[i], specs[i].n_gen);
        outcome_alloc(&together[i], specs[i].n_gen);
    }
    if (schedule(e, specs, N_SEQ, 0, alone) != 0 || schedule(e, specs, N_SEQ, 1, together) != 0) {
        CHECK(0, "schedule: %s", err);
    } else {
        int ok = 0;
        for (int i = 0; i < N_SEQ; i++) ok += same(&alone[i], &together[i], "together", i);
        printf("together: %d of %d sequences identical to alone (tokens and logits)\n", ok, N_SEQ);
    }
    for (int i = 0; i < N_SEQ; i++) {
        outcome_free(&alone[i]);
        outcome_free(&together[i]);
    }
}

/* ---- 2: cancel ---- */
struct canceller {
    struct engine *e;
    int seq;
};

static void *cancel_thread(void *arg) {
    struct canceller *c = arg;
    engine_seq_cancel(c->e, c->seq);
    return NULL;
}

static void test_cancel(struct engine *e, struct spec *specs) {
    if (e->n_seq != 3) return;
    struct outcome alone[3], got[3];
    struct run r[3];
    for (int i = 0; i < 3; i++) {
        outcome_alloc(&alone[i], specs[i].n_gen);
        outcome_alloc(&got[i], specs[i].n_gen);
    }
    memset(r, 0, sizeof r);
    if (schedule(e, specs, 3, 0, alone) != 0) {
        CHECK(0, "cancel: alone: %s", err);
        goto out;
    }
    for (int i = 0; i < 3; i++) {
        r[i] = (struct run){&specs[i], &got[i], make_sampler(&specs[i]), -1, 0};
        if (!r[i].smp || (r[i].seq = engine_seq_open(e, specs[i].prompt, specs[i].n_prompt, NULL, err, sizeof err)) < 0) {
            CHECK(0, "cancel: open %d: %s", i, err);
            goto out;
        }
    }
    CHECK(engine_seq_open(e, specs[3].prompt, specs[3].n_prompt, NULL, err, sizeof err) < 0 && strstr(err, "busy"),
          "a fourth sequence in three slots: '%s'", err);
    int cancelled = 0, fourth = -1;
    for (int step = 0; step < 400 && !(r[0].done && r[2].done); step++) {
        if (engine_step(e, err, sizeof err) < 0) {
            CHECK(0, "cancel: step: %s", err);
            goto out;
        }
        if (cancelled == 1) {
            CHECK(!engine_seq_is_open(e, r[1].seq), "the cancelled sequence is still open after a step");
            CHECK(engine_seq_logits(e, r[1].seq) == NULL, "the cancelled sequence still has logits");
            fourth = engine_seq_open(e, specs[3].prompt, specs[3].n_prompt, NULL, err, sizeof err);
            CHECK(fourth == r[1].seq, "the fourth sequence takes the freed slot %d (got %d: %s)", r[1].seq, fourth,
                  fourth < 0 ? err : "");
            r[1].done = 1; /* stop sampling it */
            cancelled = 2;
        }
        if (advance(e, r, 3) != 0) {
            CHECK(0, "cancel: %s", err);
            goto out;
        }
        if (!cancelled && got[1].n == 5) {
            struct canceller c = {e, r[1].seq};
            pthread_t th;
            if (pthread_create(&th, NULL, cancel_thread, &c) == 0) pthread_join(th, NULL);
            cancelled = 1;
        }
    }
    if (fourth >= 0) engine_seq_close(e, fourth);
    CHECK(cancelled == 2, "the cancel was never seen");
    CHECK(same(&alone[0], &got[0], "beside a cancel", 0) && same(&alone[2], &got[2], "beside a cancel", 2),
          "the others are unaffected by the cancel");
    printf("cancel: slot freed at the next step, the others unaffected\n");
out:
    for (int i = 0; i < 3; i++) {
        sampler_free(r[i].smp);
        if (r[i].seq >= 0) engine_seq_close(e, r[i].seq);
        outcome_free(&alone[i]);
        outcome_free(&got[i]);
    }
}

/* ---- 3: prompt reuse ---- */
static void test_reuse(struct engine *e, const struct spec *s) {
    const int n_turn = 12, n_more = 9;
    int n_cached = -1;
    const int32_t more[9] = {198, 1, 4093, 198, 1, 520, 9533, 198, 1}; /* any ids: "\n", turn tokens */
    int32_t *full = malloc((size_t)(s->n_prompt + n_turn + n_more) * sizeof *full);
    float *reused = malloc((size_t)n_vocab * sizeof *reused);
    if (!full || !reused) exit(1);
    memcpy(full, s->prompt, (size_t)s->n_prompt * sizeof *full);
    int n = s->n_prompt;
    /* turn 1: the prompt and a greedy answer */
    int seq = engine_seq_open(e, s->prompt, s->n_prompt, &n_cached, err, sizeof err);
    CHECK(seq >= 0, "reuse: open: %s", err);
    if (seq < 0) goto out;
    for (int t = 0; t < n_turn; t++) {
        const float *lg;
        while (!(lg = engine_seq_logits(e, seq)))
            if (engine_step(e, err, sizeof err) < 0) goto fail;
        int32_t best = 0;
        for (int k = 1; k < n_vocab; k++)
            if (lg[k] > lg[best]) best = k;
        full[n++] = best;
        if (engine_seq_submit(e, seq, &best, 1, err, sizeof err) != 0) goto fail;
    }
    while (!engine_seq_logits(e, seq))
        if (engine_step(e, err, sizeof err) < 0) goto fail;
    const int held = engine_seq_n_past(e, seq);
    engine_seq_close(e, seq);
    /* turn 2: the prompt, the first half of the answer (an edited turn: the
     * slot rewinds past its second half) and the user's next message */
    int32_t answer[12];
    memcpy(answer, full + s->n_prompt, sizeof answer);
    n = s->n_prompt + n_turn / 2;
    memcpy(full + n, more, sizeof more);
    n += n_more;
    int want_cached = s->n_prompt + n_turn / 2; /* and any of more that happens to match the rest of the answer */
    while (want_cached < held && want_cached < n - 1 && full[want_cached] == answer[want_cached - s->n_prompt])
        want_cached++;
    const int evicted = kv_config_active(&e->kv, e->n_ctx) && held > e->kv.budget;
    if (e->rt) { /* the caches are rebuilt from the runtime's log at the next step */
        struct runtime_proc procs[8];
        const int np = runtime_procs(e->rt, procs, 8);
        for (int i = 0; i < np; i++)
            if (!strcmp(procs[i].role, "gpu0")) CHECK(kill(procs[i].pid, SIGKILL) == 0, "reuse: kill gpu0");
    }
    seq = engine_seq_open(e, full, n, &n_cached, err, sizeof err);
    CHECK(seq >= 0, "reuse: open turn 2: %s", err);
    if (seq < 0) goto out;
    if (evicted)
        CHECK(n_cached == 0, "reuse: a prefix an eviction touched was reused (%d tokens)", n_cached);
    else
        CHECK(n_cached == want_cached, "reuse: %d tokens reused, the slot held %d, %d of them the prompt's", n_cached,
              held, want_cached);
    while (!engine_seq_logits(e, seq))
        if (engine_step(e, err, sizeof err) < 0) goto fail;
    memcpy(reused, engine_seq_logits(e, seq), (size_t)n_vocab * sizeof *reused);
    engine_seq_close(e, seq);
    /* the same prompt from nothing: sequence 0's single-sequence path */
    if (!evicted && !kv_config_active(&e->kv, e->n_ctx)) {
        engine_truncate(e, 0);
        if (engine_eval(e, full, n, 0, err, sizeof err) != 0) goto fail;
        CHECK(!memcmp(reused, e->logits, (size_t)n_vocab * sizeof *reused),
              "reuse: the logits after a reused prefix differ from a fresh evaluation");
        engine_truncate(e, 0);
    }
    printf("reuse: turn 2 of %d tokens reused %d cached tokens%s%s\n", n, n_cached,
           evicted ? " (none: an eviction touched them)" : "", e->rt ? ", after a kill -9 of gpu0" : "");
    goto out;
fail:
    CHECK(0, "reuse: %s", err);
out:
    free(full);
    free(reused);
}

int main(int argc, char **argv) {
    const char *model = getenv("HEARTH_TEST_MODEL");
    if (!model || access(model, R_OK) != 0) {
        printf("SKIP: HEARTH_TEST_MODEL not set or unreadable\n");
        return 77;
    }
    struct cli_opts o;
    if (cli_parse(&o, argc, argv, 1, CLI_RUNTIME | CLI_GEN, "test_batch") != 0) return 2;
    o.eng.model_path = model;
    if (o.eng.n_ctx == 0) o.eng.n_ctx = 320;
    if (o.eng.max_batch == 0) o.eng.max_batch = 40; /* prompts of several chunks */
    if (o.eng.n_threads == 0) o.eng.n_threads = 2;
    struct engine e;
    o.eng.n_seq = N_SEQ;
    if (engine_open(&e, &o.eng, err, sizeof err) != 0) {
        printf("FAIL: %s\n", err);
        return 1;
    }
    n_vocab = e.model.cfg.n_vocab;
    struct spec specs[N_SEQ];
    for (int i = 0; i < N_SEQ; i++) {
        size_t n = 0;
        specs[i].prompt = NULL;
        if (tokenizer_encode(e.tok, k_prompts[i], strlen(k_prompts[i]), 1, &specs[i].prompt, &n) != 0 || n == 0) {
            printf("FAIL: cannot tokenize prompt %d\n", i);
            return 1;
        }
        specs[i].n_prompt = (int)n;
        specs[i].n_gen = 10 + 7 * i % 23;
        specs[i].start = (i * 5) % 13;
        sampler_params_default(&specs[i].sp);
        specs[i].sp.seed = 1000 + (uint64_t)i;
        switch (i % 4) {
        case 0: specs[i].sp.temp = 0.0f; break;                                  /* greedy */
        case 1: specs[i].sp.temp = 0.8f; break;                                  /* llama.cpp's defaults */
        case 2: specs[i].sp.temp = 1.2f, specs[i].sp.top_k = 0, specs[i].sp.min_p = 0.1f; break;
        case 3: specs[i].sp.temp = 0.7f, specs[i].sp.repeat_penalty = 1.3f, specs[i].sp.top_p = 0.8f; break;
        }
    }
    printf("test_batch: %s, %d sequences, context %d, batch %d (prompt chunks of %d)%s%s\n",
           e.rt ? "multi-process" : "single process", e.n_seq, e.n_ctx, e.max_batch, e.chunk,
           kv_config_active(&e.kv, e.n_ctx) ? ", H2O cache" : "", o.eng.sidecar_path ? ", sidecar" : "");
    test_together(&e, specs);
    test_reuse(&e, &specs[3]);
    engine_close(&e);

    /* cancel: three slots */
    o.eng.n_seq = 3;
    if (engine_open(&e, &o.eng, err, sizeof err) != 0) {
        printf("FAIL: %s\n", err);
        return 1;
    }
    test_cancel(&e, specs);
    engine_close(&e);
    for (int i = 0; i < N_SEQ; i++) free(specs[i].prompt);
    printf(failures ? "test_batch: %d FAILED\n" : "test_batch: ok\n", failures);
    return failures ? 1 : 0;
}
