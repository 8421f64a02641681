/* engine: see engine.h. */
#include "engine.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fetch.h"
#include "insparse.h"
#include "log.h"

double engine_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int engine_default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

void engine_opts_default(struct engine_opts *o) {
    memset(o, 0, sizeof *o);
    kv_config_default(&o->kv);
}

int engine_open(struct engine *s, const struct engine_opts *o, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    if (o->model_path) {
        snprintf(s->model_path, sizeof s->model_path, "%s", o->model_path);
    } else if (fetch_default_model(s->model_path, sizeof s->model_path, err, errlen) != 0) {
        return -1;
    }
    if (model_load(&s->model, s->model_path, err, errlen) != 0) return -1;
    char inner[512];
    s->tok = tokenizer_load(s->model.gguf, inner, sizeof inner);
    if (!s->tok) {
        snprintf(err, errlen, "%s: tokenizer: %s", s->model_path, inner);
        model_free(&s->model);
        return -1;
    }
    const struct llama_config *c = &s->model.cfg;
    if (tokenizer_n_vocab(s->tok) > c->n_vocab) {
        snprintf(err, errlen, "%s: the tokenizer has %d tokens but the embedding only %d rows", s->model_path,
                 (int)tokenizer_n_vocab(s->tok), c->n_vocab);
        engine_close(s);
        return -1;
    }
    int n_ctx = o->n_ctx > 0 ? o->n_ctx : (c->n_ctx_train < 4096 ? c->n_ctx_train : 4096);
    int n_threads = o->n_threads > 0 ? o->n_threads : engine_default_threads();
    int max_batch = o->max_batch > 0 ? o->max_batch : 512;
    if (max_batch > n_ctx) max_batch = n_ctx;
    const int n_seq = o->n_seq > 0 ? o->n_seq : 1;
    if (n_seq > max_batch) {
        snprintf(err, errlen, "--parallel %d: more sequences than a step's batch of %d tokens (raise -b)", n_seq,
                 max_batch);
        engine_close(s);
        return -1;
    }
    s->n_seq = n_seq;
    s->chunk = max_batch - (n_seq - 1);
    s->n_ctx = n_ctx;
    s->max_batch = max_batch;
    s->n_threads = n_threads;
    s->kv = o->kv;
    if (kv_config_resolve(&s->kv, n_ctx, err, errlen) != 0) {
        engine_close(s);
        return -1;
    }
    if (o->sidecar_path && hotcold_load_sidecar(&s->sc, o->sidecar_path, &s->model, err, errlen) != 0) {
        engine_close(s);
        return -1;
    }
    if (o->single_process) {
        if (state_create_seqs(&s->st, &s->model, n_ctx, n_seq, max_batch, n_threads, err, errlen) != 0 ||
            state_set_kv(&s->st, &s->kv, 0, err, errlen) != 0) {
            engine_close(s);
            return -1;
        }
        if (s->sc.planned) {
            int64_t *p0 = calloc((size_t)c->n_layers, sizeof *p0), *p1 = malloc((size_t)c->n_layers * sizeof *p1);
            int hrc = -1;
            if (p0 && p1) {
                for (int l = 0; l < c->n_layers; l++) p1[l] = c->hidden_dim;
                hrc = hotcold_create(&s->hc, &s->sc, &s->model, p0, p1, max_batch, err, errlen);
            } else {
                snprintf(err, errlen, "out of memory");
            }
            free(p0);
            free(p1);
            if (hrc) {
                engine_close(s);
                return -1;
            }
            s->st.ffn = hotcold_ffn_cb;
            s->st.ffn_ctx = &s->hc;
        }
        /* the weights this process computes, in the kernels' 8-row layout:
         * attention always, the FFN unless the sparse FFN reads it */
        const double t0 = engine_now();
        size_t bytes = 0;
        if (model_repack_all(&s->model, !s->sc.planned, &bytes, err, errlen) != 0) {
            engine_close(s);
            return -1;
        }
        log_info("repacked %.1f MiB of weights into 8-row groups in %.0f ms", (double)bytes / (1 << 20),
                 (engine_now() - t0) * 1e3);
        /* input sparsity: every matrix's input here, the FFN's unless the plan's hot/cold FFN computes it */
        if (s->sc.in_thr) {
            if (insparse_model_create(&s->ins, c->n_layers, err, errlen) != 0 ||
                insparse_layers_apply(s->ins.layers, s->model.layers, c->n_layers, s->sc.in_thr, s->sc.in_use, 1,
                                      !s->sc.planned, NULL, NULL, &bytes, err, errlen) != 0) {
                engine_close(s);
                return -1;
            }
            s->st.taps = insparse_taps(&s->ins);
            log_info("input sparsity: %.1f MiB of input-major weights", (double)bytes / (1 << 20));
        }
    } else {
        struct runtime_opts ro = {.model_path = s->model_path,
                                  .n_cpu_workers = o->n_cpu_workers,
                                  .pin = o->pin,
                                  .gpu_backend = o->gpu_backend,
                                  .hot_fraction = o->hot_fraction,
                                  .n_ctx = n_ctx,
                                  .max_batch = max_batch,
                                  .n_seq = n_seq,
                                  .n_threads = n_threads,
                                  .verbose = log_get_level() >= LOG_INFO,
                                  .kv = s->kv,
                                  .sidecar_path = o->sidecar_path,
                                  .sidecar = o->sidecar_path ? &s->sc : NULL};
        s->rt = runtime_start(&ro, &s->model, err, errlen);
        if (!s->rt) {
            engine_close(s);
            return -1;
        }
    }
    s->logits = malloc((size_t)max_batch * c->n_vocab * sizeof(float));
    s->seqs = calloc((size_t)n_seq, sizeof *s->seqs);
    int ok = s->logits && s->seqs;
    for (int q = 0; ok && q < n_seq; q++) {
        struct engine_seq *sq = &s->seqs[q];
        sq->past = malloc((size_t)n_ctx * sizeof *sq->past);
        sq->pending = malloc((size_t)n_ctx * sizeof *sq->pending);
        sq->logits = malloc((size_t)c->n_vocab * sizeof *sq->logits);
        ok = sq->past && sq->pending && sq->logits;
    }
    if (!ok) {
        snprintf(err, errlen, "out of memory for logits");
        engine_close(s);
        return -1;
    }
    log_info("model %s: %s, %d layers, dim %d, ffn %d, heads %d/%d, vocab %d; context %d x %d sequences, %d threads, "
             "%s",
             s->model_path, c->arch, c->n_layers, c->dim, c->hidden_dim, c->n_heads, c->n_kv_heads, c->n_vocab, n_ctx,
             n_seq, n_threads, s->rt ? "multi-process" : "single process");
    if (kv_config_active(&s->kv, n_ctx))
        log_info("KV cache: H2O, %s budget of %d tokens (%d sinks, %d recent%s), %s, %.1f MiB",
                 s->kv.window ? "sliding-window" : "heavy-hitter", s->kv.budget, s->kv.n_sinks, s->kv.n_recent,
                 s->kv.window ? "" : ", the rest heavy hitters", kv_type_name(s->kv.type),
                 (double)engine_kv_bytes(s) / (1 << 20));
    return 0;
}

void engine_close(struct engine *s) {
    free(s->logits);
    for (int q = 0; s->seqs && q < s->n_seq; q++) {
        free(s->seqs[q].past);
        free(s->seqs[q].pending);
        free(s->seqs[q].logits);
    }
    free(s->seqs);
    if (s->st.m) state_free(&s->st);
    if (s->hc.hot) hotcold_destroy(&s->hc);
    if (s->ins.layers) insparse_model_free(&s->ins);
    if (s->sc.layers) sidecar_free(&s->sc);
    if (s->rt) runtime_stop(s->rt);
    if (s->tok) tokenizer_free(s->tok);
    model_free(&s->model);
    memset(s, 0, sizeof *s);
}

size_t engine_kv_bytes(const struct engine *s) {
    const struct llama_config *c = &s->model.cfg;
    if (s->st.m) return state_kv_bytes(&s->st);
    if (kv_config_active(&s->kv, s->n_ctx))
        return (size_t)s->n_seq * kv_config_bytes(&s->kv, c->n_layers, c->n_kv_heads, c->head_dim, s->max_batch);
    return 2 * (size_t)s->n_seq * c->n_layers * (size_t)s->n_ctx * (size_t)c->n_kv_heads * c->head_dim *
           sizeof(float);
}

size_t engine_kv_cold_bytes(const struct engine *s) {
    return s->rt ? runtime_kv_cold_bytes(s->rt) : state_kv_cold_bytes(&s->st);
}

double engine_attn_seconds(const struct engine *s) {
    return s->rt ? runtime_attn_seconds(s->rt) : (double)s->st.attn_ns * 1e-9;
}

void engine_ffn_bytes(const struct engine *s, double *weight_bytes, double *dense_bytes) {
    if (s->rt) {
        runtime_ffn_bytes(s->rt, weight_bytes, dense_bytes);
    } else {
        *weight_bytes = s->hc.stats.weight_bytes;
        *dense_bytes = s->hc.stats.dense_bytes;
    }
}

/* One batch in whichever engine computes it. */
static int run_batch(struct engine *s, const int32_t *tokens, const struct seq_span *spans, int n_spans, float *logits,
                     char *err, size_t errlen) {
    return s->rt ? runtime_step(s->rt, tokens, spans, n_spans, logits, err, errlen)
                 : forward_batch(&s->st, tokens, spans, n_spans, logits, err, errlen);
}

/* Sequence q now holds tokens[0..n) after what it held. */
static void seq_advance(struct engine *s, struct engine_seq *sq, const int32_t *tokens, int n) {
    memcpy(sq->past + sq->n_past, tokens, (size_t)n * sizeof *tokens);
    sq->n_past += n;
    /* the H2O cache evicts once a head holds more than the budget: from then
     * on the cached prefix is no longer what a fresh evaluation would give */
    if (kv_config_active(&s->kv, s->n_ctx) && sq->n_past > s->kv.budget) sq->evicted = 1;
    sq->last_used = s->n_steps;
}

void engine_truncate(struct engine *s, int n) {
    struct engine_seq *sq = &s->seqs[0];
    if (n < sq->n_past) sq->n_past = n < 0 ? 0 : n;
}

int engine_eval(struct engine *s, const int32_t *tokens, int n, int all_logits, char *err, size_t errlen) {
    struct engine_seq *sq = &s->seqs[0];
    if (all_logits && n > s->max_batch) {
        snprintf(err, errlen, "internal: %d tokens with all logits exceed the batch of %d", n, s->max_batch);
        return -1;
    }
    if (n < 1 || n > s->n_ctx - sq->n_past) {
        snprintf(err, errlen, "context full: positions %d..%d do not fit a context of %d tokens (raise -c)",
                 sq->n_past, sq->n_past + n - 1, s->n_ctx);
        return -1;
    }
    for (int done = 0; done < n;) {
        const int chunk = n - done < s->max_batch ? n - done : s->max_batch;
        const struct seq_span one = {0, sq->n_past, chunk,
                                     all_logits           ? SPAN_LOGITS_ALL
                                     : done + chunk == n ? SPAN_LOGITS_LAST
                                                         : SPAN_LOGITS_NONE};
        if (run_batch(s, tokens + done, &one, 1, s->logits, err, errlen) != 0) return -1;
        s->n_steps++;
        seq_advance(s, sq, tokens + done, chunk);
        done += chunk;
    }
    sq->has_logits = 0; /* s->logits holds them, not the sequence's row */
    return 0;
}

/* ---- sequences ---- */

static int check_tokens(const struct engine *s, const int32_t *tokens, int n, char *err, size_t errlen) {
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= s->model.cfg.n_vocab) {
            snprintf(err, errlen, "token id %d at index %d is outside the vocabulary [0, %d)", tokens[i], i,
                     s->model.cfg.n_vocab);
            return -1;
        }
    }
    return 0;
}

int engine_seq_open(struct engine *s, const int32_t *prompt, int n_prompt, int *n_cached, char *err, size_t errlen) {
    if (n_prompt < 1 || n_prompt > s->n_ctx) {
        snprintf(err, errlen, "a prompt of %d tokens does not fit a context of %d (1 to %d)", n_prompt, s->n_ctx,
                 s->n_ctx);
        return -1;
    }
    if (check_tokens(s, prompt, n_prompt, err, errlen) != 0) return -1;
    int best = -1, best_common = -1;
    for (int q = 0; q < s->n_seq; q++) {
        const struct engine_seq *sq = &s->seqs[q];
        if (sq->open) continue;
        int common = 0;
        if (!sq->evicted)
            while (common < sq->n_past && common < n_prompt - 1 && sq->past[common] == prompt[common]) common++;
        if (common > best_common || (common == best_common && sq->last_used < s->seqs[best].last_used)) {
            best = q;
            best_common = common;
        }
    }
    if (best < 0) {
        snprintf(err, errlen, "all %d sequences are busy", s->n_seq);
        return -1;
    }
    struct engine_seq *sq = &s->seqs[best];
    sq->open = 1;
    atomic_store_explicit(&sq->cancel, 0, memory_order_relaxed);
    sq->n_past = best_common;
    if (best_common == 0) sq->evicted = 0;
    memcpy(sq->pending, prompt + best_common, (size_t)(n_prompt - best_common) * sizeof *prompt);
    sq->n_pending = n_prompt - best_common;
    sq->has_logits = 0;
    sq->last_used = s->n_steps;
    if (n_cached) *n_cached = best_common;
    log_debug("sequence %d: a prompt of %d tokens, %d of them cached", best, n_prompt, best_common);
    return best;
}

static struct engine_seq *open_seq(const struct engine *s, int seq) {
    return seq >= 0 && seq < s->n_seq && s->seqs[seq].open ? &s->seqs[seq] : NULL;
}

int engine_seq_submit(struct engine *s, int seq, const int32_t *tokens, int n, char *err, size_t errlen) {
    struct engine_seq *sq = open_seq(s, seq);
    if (!sq) {
        snprintf(err, errlen, "sequence %d is not open", seq);
        return -1;
    }
    if (n < 0 || n > s->n_ctx - sq->n_past - sq->n_pending) {
        snprintf(err, errlen, "context full: sequence %d holds %d tokens, %d more do not fit a context of %d", seq,
                 sq->n_past + sq->n_pending, n, s->n_ctx);
        return -1;
    }
    if (check_tokens(s, tokens, n, err, errlen) != 0) return -1;
    memcpy(sq->pending + sq->n_pending, tokens, (size_t)n * sizeof *tokens);
    sq->n_pending += n;
    if (n > 0) sq->has_logits = 0;
    return 0;
}

void engine_seq_cancel(struct engine *s, int seq) {
    if (seq >= 0 && seq < s->n_seq) atomic_store_explicit(&s->seqs[seq].cancel, 1, memory_order_release);
}

void engine_seq_close(struct engine *s, int seq) {
    if (seq < 0 || seq >= s->n_seq) return;
    struct engine_seq *sq = &s->seqs[seq];
    sq->open = 0;
    sq->n_pending = 0;
    sq->has_logits = 0;
    atomic_store_explicit(&sq->cancel, 0, memory_order_relaxed);
}

int engine_seq_is_open(const struct engine *s, int seq) { return open_seq(s, seq) != NULL; }

int engine_seq_n_past(const struct engine *s, int seq) {
    return seq >= 0 && seq < s->n_seq ? s->seqs[seq].n_past : 0;
}

int engine_n_open(const struct engine *s) {
    int n = 0;
    for (int q = 0; q < s->n_seq; q++) n += s->seqs[q].open;
    return n;
}

const float *engine_seq_logits(const struct engine *s, int seq) {
    const struct engine_seq *sq = open_seq(s, seq);
    return sq && sq->has_logits && sq->n_pending == 0 ? sq->logits : NULL;
}

int32_t engine_seq_sample(struct engine *s, int seq, struct sampler *smp) {
    const float *logits = engine_seq_logits(s, seq);
    if (!logits) return -1;
    const int32_t tok = sampler_sample(smp, logits);
    if (tok >= 0) sampler_accept(smp, tok);
    return tok;
}

int engine_step(struct engine *s, char *err, size_t errlen) {
    for (int q = 0; q < s->n_seq; q++)
        if (s->seqs[q].open && atomic_load_explicit(&s->seqs[q].cancel, memory_order_acquire))
            engine_seq_close(s, q);
    /* The batch: one token of every decoding sequence first (they wait on it
     * to sample), then whole prompt chunks, the sequences taken round-robin
     * from where the last step stopped. A chunk is min(pending, s->chunk),
     * the same whatever else runs; s->chunk leaves room for one token of
     * every other sequence, so a prompt chunk always fits beside them. */
    struct seq_span spans[s->n_seq];
    int order[s->n_seq], n_order = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < s->n_seq; i++) {
            const int q = (int)((s->n_steps + (uint64_t)i) % (uint64_t)s->n_seq);
            const struct engine_seq *sq = &s->seqs[q];
            if (sq->open && sq->n_pending > 0 && (sq->n_pending == 1) == (pass == 0)) order[n_order++] = q;
        }
    int n_spans = 0, rows = 0;
    for (int i = 0; i < n_order; i++) {
        const struct engine_seq *sq = &s->seqs[order[i]];
        const int take = sq->n_pending < s->chunk ? sq->n_pending : s->chunk;
        if (take > s->max_batch - rows) continue;
        spans[n_spans++] = (struct seq_span){order[i], sq->n_past, take,
                                             take == sq->n_pending ? SPAN_LOGITS_LAST : SPAN_LOGITS_NONE};
        rows += take;
    }
    if (n_spans == 0) return 0;
    int32_t batch[rows];
    for (int i = 0, r = 0; i < n_spans; r += spans[i++].n)
        memcpy(batch + r, s->seqs[spans[i].seq].pending, (size_t)spans[i].n * sizeof *batch);
    if (run_batch(s, batch, spans, n_spans, s->logits, err, errlen) != 0) return -1;
    s->n_steps++;
    const size_t n_vocab = (size_t)s->model.cfg.n_vocab;
    for (int i = 0, r = 0, row = 0; i < n_spans; r += spans[i++].n) {
        struct engine_seq *sq = &s->seqs[spans[i].seq];
        seq_advance(s, sq, batch + r, spans[i].n);
        sq->n_pending -= spans[i].n;
        memmove(sq->pending, sq->pending + spans[i].n, (size_t)sq->n_pending * sizeof *sq->pending);
        if (spans[i].logits == SPAN_LOGITS_LAST) {
            memcpy(sq->logits, s->logits + (size_t)row++ * n_vocab, n_vocab * sizeof *sq->logits);
            sq->has_logits = 1;
        }
    }
    return rows;
}

int engine_generate(struct engine *s, const int32_t *prompt, int n_prompt, int n_predict, struct sampler *smp,
                     FILE *out, int32_t **gen, int *n_gen, struct gen_stats *stats, char *err, size_t errlen) {
    struct gen_stats local = {0};
    struct tok_decoder *dec = tok_decoder_create(s->tok, 0);
    if (!dec) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = -1, n_cached = 0;
    double t0 = engine_now();
    const int seq = engine_seq_open(s, prompt, n_prompt, &n_cached, err, errlen);
    if (seq < 0) goto done;
    while (!engine_seq_logits(s, seq))
        if (engine_step(s, err, errlen) < 0) goto done;
    for (int i = n_cached; i < n_prompt; i++) sampler_accept(smp, prompt[i]);
    local.n_prompt = n_prompt - n_cached;
    local.prompt_s = engine_now() - t0;

    double t1 = engine_now();
    const char *piece;
    size_t len;
    for (int i = 0; i < n_predict; i++) {
        int32_t next = engine_seq_sample(s, seq, smp);
        if (next < 0) {
            snprintf(err, errlen, "no token to sample: every logit is -inf or NaN");
            goto done;
        }
        if (gen) {
            int32_t *grown = realloc(*gen, (size_t)(*n_gen + 1) * sizeof **gen);
            if (!grown) {
                snprintf(err, errlen, "out of memory");
                goto done;
            }
            *gen = grown;
            (*gen)[(*n_gen)++] = next;
        }
        local.n_gen++;
        if (tokenizer_is_eog(s->tok, next)) break;
        if (out) {
            if (tok_decoder_push(dec, next, &piece, &len) != 0) {
                snprintf(err, errlen, "cannot decode token %d", next);
                goto done;
            }
            fwrite(piece, 1, len, out);
            fflush(out);
        }
        if (i + 1 == n_predict) break; /* the last token needs no evaluation */
        if (engine_seq_submit(s, seq, &next, 1, err, errlen) != 0) goto done;
        while (!engine_seq_logits(s, seq))
            if (engine_step(s, err, errlen) < 0) goto done;
    }
    if (out && tok_decoder_flush(dec, &piece, &len) == 0) {
        fwrite(piece, 1, len, out);
        fflush(out);
    }
    local.gen_s = engine_now() - t1;
    rc = 0;
done:
    if (seq >= 0) engine_seq_close(s, seq);
    tok_decoder_free(dec);
    if (stats) *stats = local;
    return rc;
}
