/* engine: see engine.h. */
#include "engine.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fetch.h"
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
        if (state_create(&s->st, &s->model, n_ctx, max_batch, n_threads, err, errlen) != 0 ||
            state_set_kv(&s->st, &s->kv, 0, err, errlen) != 0) {
            engine_close(s);
            return -1;
        }
        if (o->sidecar_path) {
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
            s->st.hc = &s->hc;
        }
        /* the weights this process computes, in the kernels' 8-row layout:
         * attention always, the FFN unless the sparse FFN reads it */
        const double t0 = engine_now();
        size_t bytes = 0;
        if (model_repack_all(&s->model, !o->sidecar_path, &bytes, err, errlen) != 0) {
            engine_close(s);
            return -1;
        }
        log_info("repacked %.1f MiB of weights into 8-row groups in %.0f ms", (double)bytes / (1 << 20),
                 (engine_now() - t0) * 1e3);
    } else {
        struct runtime_opts ro = {s->model_path, o->n_cpu_workers, o->pin, o->gpu_backend, o->hot_fraction,
                                  n_ctx, max_batch, n_threads, log_get_level() >= LOG_INFO, s->kv,
                                  o->sidecar_path, o->sidecar_path ? &s->sc : NULL};
        s->rt = runtime_start(&ro, &s->model, err, errlen);
        if (!s->rt) {
            engine_close(s);
            return -1;
        }
    }
    s->logits = malloc((size_t)max_batch * c->n_vocab * sizeof(float));
    s->past = malloc((size_t)n_ctx * sizeof *s->past);
    if (!s->logits || !s->past) {
        snprintf(err, errlen, "out of memory for logits");
        engine_close(s);
        return -1;
    }
    log_info("model %s: %s, %d layers, dim %d, ffn %d, heads %d/%d, vocab %d; context %d, %d threads, %s",
             s->model_path, c->arch, c->n_layers, c->dim, c->hidden_dim, c->n_heads, c->n_kv_heads, c->n_vocab, n_ctx,
             n_threads, s->rt ? "multi-process" : "single process");
    if (kv_config_active(&s->kv, n_ctx))
        log_info("KV cache: H2O, %s budget of %d tokens (%d sinks, %d recent%s), %s, %.1f MiB",
                 s->kv.window ? "sliding-window" : "heavy-hitter", s->kv.budget, s->kv.n_sinks, s->kv.n_recent,
                 s->kv.window ? "" : ", the rest heavy hitters", kv_type_name(s->kv.type),
                 (double)engine_kv_bytes(s) / (1 << 20));
    return 0;
}

void engine_close(struct engine *s) {
    free(s->logits);
    free(s->past);
    if (s->st.m) state_free(&s->st);
    if (s->hc.hot) hotcold_destroy(&s->hc);
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
        return kv_config_bytes(&s->kv, c->n_layers, c->n_kv_heads, c->head_dim, s->max_batch);
    return 2 * (size_t)c->n_layers * (size_t)s->n_ctx * (size_t)c->n_kv_heads * c->head_dim * sizeof(float);
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

void engine_truncate(struct engine *s, int n) {
    if (n < s->n_past) s->n_past = n < 0 ? 0 : n;
}

int engine_eval(struct engine *s, const int32_t *tokens, int n, int all_logits, char *err, size_t errlen) {
    if (all_logits && n > s->max_batch) {
        snprintf(err, errlen, "internal: %d tokens with all logits exceed the batch of %d", n, s->max_batch);
        return -1;
    }
    int rc = s->rt ? runtime_eval(s->rt, tokens, n, s->n_past, s->past, s->logits, all_logits, err, errlen)
                   : forward(&s->st, tokens, n, s->n_past, s->logits, all_logits, err, errlen);
    if (rc != 0) return -1;
    memcpy(s->past + s->n_past, tokens, (size_t)n * sizeof *tokens);
    s->n_past += n;
    return 0;
}

int engine_generate(struct engine *s, const int32_t *prompt, int n_prompt, int n_predict, struct sampler *smp,
                     FILE *out, int32_t **gen, int *n_gen, struct gen_stats *stats, char *err, size_t errlen) {
    struct gen_stats local = {0};
    struct tok_decoder *dec = tok_decoder_create(s->tok, 0);
    if (!dec) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = -1;
    double t0 = engine_now();
    if (n_prompt > 0 && engine_eval(s, prompt, n_prompt, 0, err, errlen) != 0) goto done;
    for (int i = 0; i < n_prompt; i++) sampler_accept(smp, prompt[i]);
    local.n_prompt = n_prompt;
    local.prompt_s = engine_now() - t0;

    double t1 = engine_now();
    const char *piece;
    size_t len;
    for (int i = 0; i < n_predict; i++) {
        int32_t next = sampler_sample(smp, s->logits);
        sampler_accept(smp, next);
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
        if (engine_eval(s, &next, 1, 0, err, errlen) != 0) goto done;
    }
    if (out && tok_decoder_flush(dec, &piece, &len) == 0) {
        fwrite(piece, 1, len, out);
        fflush(out);
    }
    local.gen_s = engine_now() - t1;
    rc = 0;
done:
    tok_decoder_free(dec);
    if (stats) *stats = local;
    return rc;
}
