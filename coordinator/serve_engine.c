/* serve_engine: the engine thread of `hearth serve` (see serve.h).
 *
 * It opens the engine, then loops: drop the jobs whose client left (their
 * sequences close, their slots are free at once), admit queued jobs while
 * a sequence slot is free, run one engine_step (a token of every decoding
 * sequence and prompt chunks of new ones, all in one batch), and sample a
 * token for every sequence that has logits. A sampled token is decoded to
 * text, checked against the stop strings and published to the job under
 * srv->mu; the HTTP thread waiting on it wakes.
 *
 * A request's answer does not depend on the others in the batch (engine.h),
 * so a greedy answer is the same alone or among seven others. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "serve.h"

void serve_signals_install(void); /* serve.c */

struct serve_job *serve_job_new(void) {
    struct serve_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->seq = -1;
    pthread_cond_init(&j->cond, NULL);
    atomic_init(&j->cancelled, 0);
    return j;
}

void serve_job_unref_locked(struct serve_job *j) {
    if (!j || --j->refs > 0) return;
    serve_request_free(&j->req);
    free(j->prompt);
    sampler_free(j->smp);
    tok_decoder_free(j->dec);
    free(j->text);
    free(j->toks);
    pthread_cond_destroy(&j->cond);
    free(j);
}

void serve_count_status(struct serve *s, int status) {
    pthread_mutex_lock(&s->mu);
    if (status > 0 && status < (int)(sizeof s->m.requests / sizeof s->m.requests[0])) s->m.requests[status]++;
    pthread_mutex_unlock(&s->mu);
}

int serve_submit(struct serve *s, struct serve_job *j, struct serve_error *err) {
    pthread_mutex_lock(&s->mu);
    if (atomic_load(&s->stopping)) {
        pthread_mutex_unlock(&s->mu);
        serve_error_set(err, 503, "unavailable_error", "the server is shutting down");
        return -1;
    }
    /* a request waits only when every slot is taken: the bound is on those waiting */
    int free_slots = s->e.n_seq - s->m.running;
    if (s->q_len >= s->o.queue_max + (free_slots > 0 ? free_slots : 0)) {
        s->m.rejected_queue_full++;
        pthread_mutex_unlock(&s->mu);
        serve_error_set(err, 503, "unavailable_error",
                        "the server is busy: %d requests are running and %d are waiting (--queue %d); retry later",
                        s->e.n_seq, s->o.queue_max, s->o.queue_max);
        return -1;
    }
    j->refs++; /* the engine's */
    j->state = JOB_QUEUED;
    j->next = NULL;
    if (s->q_tail) s->q_tail->next = j;
    else s->q_head = j;
    s->q_tail = j;
    s->q_len++;
    s->m.queued = s->q_len;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void serve_cancel(struct serve *s, struct serve_job *j) {
    pthread_mutex_lock(&s->mu);
    if (j->state != JOB_DONE && !atomic_exchange(&j->cancelled, 1)) {
        s->m.cancelled++;
        /* j->seq is this job's while it runs: the engine thread changes it only under mu */
        if (j->state == JOB_RUNNING && j->seq >= 0) engine_seq_cancel(&s->e, j->seq);
        pthread_cond_signal(&s->work);
    }
    pthread_mutex_unlock(&s->mu);
}

/* Ends a job (under mu): done, its sequence gone, the waiting side woken. */
static void finish_locked(struct serve *s, struct serve_job *j, const char *reason) {
    j->state = JOB_DONE;
    if (!j->finish && !j->err.status) j->finish = reason ? reason : "stop";
    j->t_end = engine_now();
    j->sendable = j->len;
    if (j->seq >= 0) s->active[j->seq] = NULL;
    j->seq = -1;
    pthread_cond_broadcast(&j->cond);
    serve_job_unref_locked(j);
}

static void fail_locked(struct serve *s, struct serve_job *j, int status, const char *type, const char *msg) {
    serve_error_set(&j->err, status, type, "%s", msg);
    finish_locked(s, j, NULL);
}

static int append(char **buf, size_t *len, size_t *cap, const char *p, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + n + 1) c *= 2;
        char *g = realloc(*buf, c);
        if (!g) return -1;
        *buf = g;
        *cap = c;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

/* log-softmax of the raw logits: the chosen token's and the top n (OpenAI's
 * logprobs are of the model's distribution, before the sampler's filters). */
static void compute_logprobs(const float *logits, int32_t n_vocab, int32_t chosen, int n_top, struct serve_tok *t) {
    float mx = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int32_t i = 0; i < n_vocab; i++) sum += isfinite(logits[i]) ? exp((double)(logits[i] - mx)) : 0.0;
    float lse = mx + (float)log(sum);
    t->id = chosen;
    t->logprob = chosen >= 0 ? logits[chosen] - lse : -INFINITY;
    t->n_top = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        float v = logits[i];
        if (!isfinite(v)) continue;
        if (t->n_top == n_top && (n_top == 0 || v <= t->top_lp[n_top - 1])) continue;
        int k = t->n_top < n_top ? t->n_top++ : n_top - 1;
        while (k > 0 && t->top_lp[k - 1] < v) {
            t->top_lp[k] = t->top_lp[k - 1];
            t->top_id[k] = t->top_id[k - 1];
            k--;
        }
        t->top_lp[k] = v;
        t->top_id[k] = i;
    }
    for (int k = 0; k < t->n_top; k++) t->top_lp[k] -= lse;
}

/* A token sampled for j: its text into the job (under mu). Returns 1 when the job is finished. */
static int take_token_locked(struct serve *s, struct serve_job *j, int32_t tok, const struct serve_tok *lp) {
    const char *piece = NULL;
    size_t n = 0;
    const char *reason = NULL;
    if (j->t_first == 0) j->t_first = engine_now();
    int eog = tok < 0 || tokenizer_is_eog(s->e.tok, tok);
    if (!eog) {
        j->n_gen++;
        s->m.gen_tokens++;
        long sec = (long)engine_now();
        int b = (int)(sec % 16);
        if (s->m.tps_sec[b] != sec) s->m.tps_sec[b] = sec, s->m.tps_bucket[b] = 0;
        s->m.tps_bucket[b]++;
        if (lp) {
            if (j->n_toks == j->cap_toks) {
                size_t c = j->cap_toks ? 2 * j->cap_toks : 64;
                struct serve_tok *g = realloc(j->toks, c * sizeof *g);
                if (!g) {
                    fail_locked(s, j, 500, "server_error", "out of memory");
                    return 1;
                }
                j->toks = g;
                j->cap_toks = c;
            }
            j->toks[j->n_toks++] = *lp;
        }
        if (tok_decoder_push(j->dec, tok, &piece, &n) != 0) {
            fail_locked(s, j, 500, "server_error", "cannot decode a generated token");
            return 1;
        }
    } else {
        reason = "stop";
    }
    if (!reason && (j->n_gen >= j->req.max_tokens && j->req.max_tokens > 0)) reason = "length";
    if (!reason && j->n_prompt + j->n_gen >= s->e.n_ctx) reason = "length";
    if (n && append(&j->text, &j->len, &j->cap, piece, n) != 0) {
        fail_locked(s, j, 500, "server_error", "out of memory");
        return 1;
    }
    if (reason && tok_decoder_flush(j->dec, &piece, &n) == 0 && n && append(&j->text, &j->len, &j->cap, piece, n)) {
        fail_locked(s, j, 500, "server_error", "out of memory");
        return 1;
    }
    size_t hold = 0;
    long at = serve_stop_find(j->text, j->len, j->stop_from, j->req.stops, j->req.n_stops, &hold);
    if (at >= 0) {
        j->len = (size_t)at;
        if (j->text) j->text[j->len] = '\0';
        reason = "stop";
    }
    j->stop_from = j->len;
    j->sendable = reason ? j->len : j->len - hold;
    if (reason) {
        finish_locked(s, j, reason);
        return 1;
    }
    pthread_cond_broadcast(&j->cond);
    return 0;
}

/* Worker restarts: a role whose pid changed was restarted (the runtime has no counter). */
static void count_restarts(struct serve *s, struct runtime_proc *prev, int *n_prev) {
    if (!s->e.rt) return;
    struct runtime_proc now[32];
    int n = runtime_procs(s->e.rt, now, 32);
    int restarts = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < *n_prev; k++)
            if (!strcmp(now[i].role, prev[k].role) && now[i].pid != prev[k].pid) restarts++;
    memcpy(prev, now, (size_t)n * sizeof *now);
    *n_prev = n;
    if (restarts) {
        pthread_mutex_lock(&s->mu);
        s->m.worker_restarts += (uint64_t)restarts;
        pthread_mutex_unlock(&s->mu);
    }
}

static void *engine_main(void *arg) {
    struct serve *s = arg;
    char err[1024];
    if (engine_open(&s->e, &s->o.eng, s->load_err, sizeof s->load_err) != 0) {
        atomic_store(&s->failed, 1);
        if (write(s->wake_fd[1], "f", 1) < 0) { /* the main thread reads it */
        }
        return NULL;
    }
    serve_signals_install(); /* the runtime installed its own handlers */
    struct engine *e = &s->e;
    s->chat_template = NULL;
    if (gguf_find_key(e->model.gguf, "tokenizer.chat_template") >= 0)
        gguf_get_str(e->model.gguf, "tokenizer.chat_template", &s->chat_template, err, sizeof err);
    s->active = calloc((size_t)e->n_seq, sizeof *s->active);
    struct serve_tok *lp = malloc(sizeof *lp);
    if (!s->active || !lp) {
        snprintf(s->load_err, sizeof s->load_err, "out of memory");
        atomic_store(&s->failed, 1);
        if (write(s->wake_fd[1], "f", 1) < 0) {
        }
        free(lp);
        return NULL;
    }
    if (s->o.alias) {
        snprintf(s->model_name, sizeof s->model_name, "%s", s->o.alias);
    } else {
        const char *base = strrchr(e->model_path, '/');
        const char *name = base ? base + 1 : e->model_path;
        size_t n_name = strlen(name) < sizeof s->model_name - 1 ? strlen(name) : sizeof s->model_name - 1;
        memcpy(s->model_name, name, n_name);
        s->model_name[n_name] = '\0';
        size_t n = strlen(s->model_name);
        if (n > 5 && !strcmp(s->model_name + n - 5, ".gguf")) s->model_name[n - 5] = '\0';
    }
    s->m.kv_bytes = engine_kv_bytes(e);
    struct runtime_proc procs[32];
    int n_procs = e->rt ? runtime_procs(e->rt, procs, 32) : 0;
    double last_restart_check = engine_now();
    atomic_store_explicit(&s->loaded, 1, memory_order_release);
    log_info("model loaded: %s, context %d, %d sequences, %s", s->model_name, e->n_ctx, e->n_seq,
             e->rt ? "multi-process runtime" : "single process");

    const int32_t n_vocab = e->model.cfg.n_vocab;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        if (!s->q_head && s->m.running == 0 && !atomic_load(&s->stopping)) {
            /* going idle: count the restarts of the last steps first */
            pthread_mutex_unlock(&s->mu);
            count_restarts(s, procs, &n_procs);
            last_restart_check = engine_now();
            pthread_mutex_lock(&s->mu);
        }
        while (!atomic_load(&s->stopping) && !s->q_head && s->m.running == 0) pthread_cond_wait(&s->work, &s->mu);
        if (atomic_load(&s->stopping)) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        /* the clients that left: their slots are free before this step */
        for (int q = 0; q < e->n_seq; q++) {
            struct serve_job *j = s->active[q];
            if (j && atomic_load(&j->cancelled)) {
                engine_seq_close(e, q);
                finish_locked(s, j, "stop");
            }
        }
        while (s->q_head && engine_n_open(e) < e->n_seq) {
            struct serve_job *j = s->q_head;
            s->q_head = j->next;
            if (!s->q_head) s->q_tail = NULL;
            s->q_len--;
            if (atomic_load(&j->cancelled)) {
                finish_locked(s, j, "stop");
                continue;
            }
            int cached = 0;
            int seq = engine_seq_open(e, j->prompt, j->n_prompt, &cached, err, sizeof err);
            if (seq < 0) {
                fail_locked(s, j, 500, "server_error", err);
                continue;
            }
            if (!(j->dec = tok_decoder_create(e->tok, 0))) {
                engine_seq_close(e, seq);
                fail_locked(s, j, 500, "server_error", "out of memory");
                continue;
            }
            j->seq = seq;
            j->state = JOB_RUNNING;
            j->t_start = engine_now();
            j->n_cached = cached;
            s->active[seq] = j;
            s->m.prompt_tokens += (uint64_t)j->n_prompt;
            s->m.cached_tokens += (uint64_t)cached;
        }
        int running = 0;
        size_t kv = 0;
        for (int q = 0; q < e->n_seq; q++) {
            running += s->active[q] != NULL;
            if (engine_seq_is_open(e, q)) kv += (size_t)engine_seq_n_past(e, q);
        }
        s->m.running = running;
        s->m.queued = s->q_len;
        s->m.kv_tokens = kv;
        pthread_mutex_unlock(&s->mu);
        if (running == 0) continue;

        int n = engine_step(e, err, sizeof err);
        if (n < 0) {
            log_error("engine step failed: %s", err);
            pthread_mutex_lock(&s->mu);
            for (int q = 0; q < e->n_seq; q++)
                if (s->active[q]) {
                    engine_seq_close(e, q);
                    fail_locked(s, s->active[q], 500, "server_error", err);
                }
            pthread_mutex_unlock(&s->mu);
            if (runtime_interrupted()) break;
            continue;
        }
        pthread_mutex_lock(&s->mu);
        s->m.steps++;
        pthread_mutex_unlock(&s->mu);
        for (int q = 0; q < e->n_seq; q++) {
            struct serve_job *j = s->active[q]; /* only this thread changes active[] */
            if (!j || atomic_load(&j->cancelled)) continue;
            const float *logits = engine_seq_logits(e, q);
            if (!logits) continue; /* its prompt is still being evaluated */
            int32_t tok;
            if (j->req.logprobs) {
                /* the sampler may rewrite nothing in logits; the distribution is the model's */
                tok = engine_seq_sample(e, q, j->smp);
                compute_logprobs(logits, n_vocab, tok, j->req.top_logprobs, lp);
            } else {
                tok = engine_seq_sample(e, q, j->smp);
            }
            pthread_mutex_lock(&s->mu);
            int done = take_token_locked(s, j, tok, j->req.logprobs ? lp : NULL);
            if (done) engine_seq_close(e, q);
            pthread_mutex_unlock(&s->mu);
            if (!done && engine_seq_submit(e, q, &tok, 1, err, sizeof err) != 0) {
                pthread_mutex_lock(&s->mu);
                engine_seq_close(e, q);
                if (s->active[q] == j) fail_locked(s, j, 500, "server_error", err);
                pthread_mutex_unlock(&s->mu);
            }
        }
        if (engine_now() - last_restart_check > 1.0) {
            count_restarts(s, procs, &n_procs);
            last_restart_check = engine_now();
        }
    }

    /* leaving: nothing waits forever */
    pthread_mutex_lock(&s->mu);
    for (int q = 0; q < e->n_seq; q++)
        if (s->active[q]) {
            engine_seq_close(e, q);
            fail_locked(s, s->active[q], 503, "unavailable_error", "the server is shutting down");
        }
    while (s->q_head) {
        struct serve_job *j = s->q_head;
        s->q_head = j->next;
        s->q_len--;
        fail_locked(s, j, 503, "unavailable_error", "the server is shutting down");
    }
    s->q_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    free(lp);
    return NULL;
}

int serve_engine_start(struct serve *s) {
    if (pthread_create(&s->engine_thread, NULL, engine_main, s) != 0) return -1;
    s->engine_started = 1;
    return 0;
}

void serve_engine_stop(struct serve *s) {
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stopping, 1);
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->mu);
    if (s->engine_started) pthread_join(s->engine_thread, NULL);
    s->engine_started = 0;
}

char *serve_metrics_text(struct serve *s) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    pthread_mutex_lock(&s->mu);
    struct serve_metrics m = s->m;
    pthread_mutex_unlock(&s->mu);
    long now = (long)engine_now();
    uint64_t recent = 0;
    int window = 10;
    for (int b = 0; b < 16; b++)
        if (m.tps_sec[b] < now && m.tps_sec[b] >= now - window) recent += m.tps_bucket[b];
    int n_seq = atomic_load(&s->loaded) ? s->e.n_seq : s->o.eng.n_seq;
    int n_ctx = atomic_load(&s->loaded) ? s->e.n_ctx : 0;
#define METRIC(name, type, help, fmt, ...)                                                                           \
    fprintf(f, "# HELP hearth_" name " " help "\n# TYPE hearth_" name " " type "\nhearth_" name " " fmt "\n",        \
            __VA_ARGS__)
    fprintf(f, "# HELP hearth_requests_total HTTP requests answered, by status code\n"
               "# TYPE hearth_requests_total counter\n");
    for (int c = 0; c < 600; c++)
        if (m.requests[c]) fprintf(f, "hearth_requests_total{code=\"%d\"} %llu\n", c, (unsigned long long)m.requests[c]);
    METRIC("prompt_tokens_total", "counter", "prompt tokens of admitted requests", "%llu",
           (unsigned long long)m.prompt_tokens);
    METRIC("prompt_tokens_cached_total", "counter", "prompt tokens reused from a slot's KV cache", "%llu",
           (unsigned long long)m.cached_tokens);
    METRIC("tokens_generated_total", "counter", "generated tokens", "%llu", (unsigned long long)m.gen_tokens);
    METRIC("tokens_per_second", "gauge", "generated tokens per second over the last 10 s", "%.3f",
           (double)recent / window);
    METRIC("requests_running", "gauge", "requests holding a sequence slot", "%d", m.running);
    METRIC("requests_queued", "gauge", "requests waiting for a slot (the queue depth)", "%d", m.queued);
    METRIC("queue_capacity", "gauge", "requests that may wait beyond the slots (--queue)", "%d", s->o.queue_max);
    METRIC("slots", "gauge", "sequence slots (-np)", "%d", n_seq);
    METRIC("requests_rejected_total", "counter", "requests refused with 503 because the queue was full", "%llu",
           (unsigned long long)m.rejected_queue_full);
    METRIC("requests_cancelled_total", "counter", "requests whose client left or that timed out", "%llu",
           (unsigned long long)m.cancelled);
    METRIC("requests_timed_out_total", "counter", "requests that ran past --timeout", "%llu",
           (unsigned long long)m.timeouts);
    METRIC("kv_cache_tokens", "gauge", "tokens in the KV caches of the running sequences", "%zu", m.kv_tokens);
    METRIC("kv_cache_usage_ratio", "gauge", "kv_cache_tokens over the slots' capacity (slots x context)", "%.6f",
           n_seq && n_ctx ? (double)m.kv_tokens / ((double)n_seq * n_ctx) : 0.0);
    METRIC("kv_cache_bytes", "gauge", "bytes allocated for the KV caches", "%zu", m.kv_bytes);
    METRIC("worker_restarts_total", "counter", "worker processes restarted by the supervisor", "%llu",
           (unsigned long long)m.worker_restarts);
    METRIC("engine_steps_total", "counter", "engine steps (batches) evaluated", "%llu", (unsigned long long)m.steps);
    METRIC("loaded", "gauge", "1 once the model is loaded", "%d", atomic_load(&s->loaded));
#undef METRIC
    fclose(f);
    return buf;
}
