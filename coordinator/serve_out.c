/* serve_out: what the server answers, in OpenAI's and llama-server's shapes
 * (see serve.h), and the prompt a request becomes.
 *
 * Every text that goes into JSON is valid UTF-8: generated text comes from
 * the streaming decoder (complete characters only), token pieces for
 * logprobs may be partial characters and are sanitized (their raw bytes go
 * in "bytes"). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"
#include "unicode.h"

static char *dump(json_t *v) {
    if (!v) return NULL;
    char *s = json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(v);
    return s;
}

/* A JSON string of raw bytes, invalid UTF-8 replaced by U+FFFD. */
static json_t *str_sanitized(const char *s, size_t n) {
    char small[256];
    char *buf = 3 * n <= sizeof small ? small : malloc(3 * n + 1);
    if (!buf) return NULL;
    size_t m = unicode_sanitize((const unsigned char *)s, n, buf);
    json_t *v = json_stringn(buf, m);
    if (buf != small) free(buf);
    return v;
}

char *serve_error_json(const struct serve_error *e) {
    json_t *inner = json_pack("{s:i, s:s, s:s}", "code", e->status, "message", e->message, "type",
                              e->type ? e->type : "server_error");
    if (!inner) return NULL;
    if (e->type && !strcmp(e->type, "exceed_context_size_error")) {
        json_object_set_new(inner, "n_prompt_tokens", json_integer(e->n_prompt_tokens));
        json_object_set_new(inner, "n_ctx", json_integer(e->n_ctx));
    }
    return dump(json_pack("{s:o}", "error", inner));
}

static json_t *token_entry(const struct serve *s, int32_t id, float lp, int chat) {
    char piece[256];
    int n = tokenizer_token_to_piece(s->e.tok, id, 1, piece, sizeof piece);
    if (n < 0) n = 0;
    if (n > (int)sizeof piece) n = (int)sizeof piece;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(id));
    json_object_set_new(o, "token", str_sanitized(piece, (size_t)n));
    json_object_set_new(o, "logprob", json_real(isfinite(lp) ? lp : -9999.0));
    if (chat) {
        json_t *b = json_array();
        for (int i = 0; i < n; i++) json_array_append_new(b, json_integer((unsigned char)piece[i]));
        json_object_set_new(o, "bytes", b);
    }
    return o;
}

/* Chat: {"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]}.
 * Completions (legacy): {tokens, token_logprobs, top_logprobs: [{piece: lp}], text_offset}. */
static json_t *logprobs_json(const struct serve *s, const struct serve_job *j, size_t from, size_t to,
                             size_t text_offset) {
    if (!j->req.logprobs) return json_null();
    if (j->req.kind == SERVE_CHAT) {
        json_t *content = json_array();
        for (size_t i = from; i < to; i++) {
            const struct serve_tok *t = &j->toks[i];
            json_t *e = token_entry(s, t->id, t->logprob, 1);
            json_t *top = json_array();
            for (int k = 0; k < t->n_top; k++) json_array_append_new(top, token_entry(s, t->top_id[k], t->top_lp[k], 1));
            json_object_set_new(e, "top_logprobs", top);
            json_array_append_new(content, e);
        }
        return json_pack("{s:o}", "content", content);
    }
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    size_t off = text_offset;
    for (size_t i = from; i < to; i++) {
        const struct serve_tok *t = &j->toks[i];
        json_t *e = token_entry(s, t->id, t->logprob, 0);
        json_array_append(tokens, json_object_get(e, "token"));
        json_array_append_new(lps, json_real(t->logprob));
        json_array_append_new(offs, json_integer((json_int_t)off));
        off += json_string_length(json_object_get(e, "token"));
        json_decref(e);
        json_t *top = json_object();
        for (int k = 0; k < t->n_top; k++) {
            json_t *te = token_entry(s, t->top_id[k], t->top_lp[k], 0);
            json_object_set(top, json_string_value(json_object_get(te, "token")), json_object_get(te, "logprob"));
            json_decref(te);
        }
        json_array_append_new(tops, top);
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offs);
}

static json_t *usage_json(const struct serve_job *j) {
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", j->n_prompt, "completion_tokens", j->n_gen,
                     "total_tokens", j->n_prompt + j->n_gen, "prompt_tokens_details", "cached_tokens", j->n_cached);
}

/* llama-server's timings: the prompt from admission to the first token, the
 * generation from the first token to the end. */
static json_t *timings_json(const struct serve_job *j) {
    double t_first = j->t_first > 0 ? j->t_first : j->t_end;
    double prompt_ms = (t_first - j->t_start) * 1e3, gen_ms = (j->t_end - t_first) * 1e3;
    int prompt_n = j->n_prompt - j->n_cached;
    int gen_steps = j->n_gen > 1 ? j->n_gen - 1 : 0; /* the first token came with the prompt */
    if (prompt_ms < 0) prompt_ms = 0;
    if (gen_ms < 0) gen_ms = 0;
    return json_pack("{s:i, s:i, s:f, s:f, s:f, s:i, s:f, s:f, s:f}", "cache_n", j->n_cached, "prompt_n", prompt_n,
                     "prompt_ms", prompt_ms, "prompt_per_token_ms", prompt_n ? prompt_ms / prompt_n : 0.0,
                     "prompt_per_second", prompt_ms > 0 ? prompt_n * 1e3 / prompt_ms : 0.0, "predicted_n", j->n_gen,
                     "predicted_ms", gen_ms, "predicted_per_token_ms", gen_steps ? gen_ms / gen_steps : 0.0,
                     "predicted_per_second", gen_ms > 0 ? gen_steps * 1e3 / gen_ms : 0.0);
}

static json_t *envelope(const struct serve *s, const struct serve_job *j, const char *object) {
    return json_pack("{s:s, s:s, s:I, s:s, s:s}", "id", j->id, "object", object, "created", (json_int_t)j->created,
                     "model", s->model_name, "system_fingerprint", "hearth");
}

char *serve_final_json(const struct serve *s, const struct serve_job *j) {
    int chat = j->req.kind == SERVE_CHAT;
    json_t *o = envelope(s, j, chat ? "chat.completion" : "text_completion");
    json_t *text = json_stringn(j->text ? j->text : "", j->len);
    if (!o || !text) {
        json_decref(o);
        json_decref(text);
        return NULL;
    }
    json_t *choice;
    if (chat)
        choice = json_pack("{s:i, s:{s:s, s:o}, s:o, s:s}", "index", 0, "message", "role", "assistant", "content",
                           text, "logprobs", logprobs_json(s, j, 0, j->n_toks, 0), "finish_reason",
                           j->finish ? j->finish : "stop");
    else
        choice = json_pack("{s:i, s:o, s:o, s:s}", "index", 0, "text", text, "logprobs",
                           logprobs_json(s, j, 0, j->n_toks, 0), "finish_reason", j->finish ? j->finish : "stop");
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    json_object_set_new(o, "usage", usage_json(j));
    json_object_set_new(o, "timings", timings_json(j));
    return dump(o);
}

char *serve_chunk_json(const struct serve *s, const struct serve_job *j, size_t from, size_t to, size_t tok_from,
                       size_t tok_to, int first, int final) {
    int chat = j->req.kind == SERVE_CHAT;
    json_t *o = envelope(s, j, chat ? "chat.completion.chunk" : "text_completion");
    json_t *text = json_stringn(j->text ? j->text + from : "", to - from);
    if (!o || !text) {
        json_decref(o);
        json_decref(text);
        return NULL;
    }
    json_t *choice = json_pack("{s:i}", "index", 0);
    if (chat) {
        json_t *delta = json_object();
        if (first) json_object_set_new(delta, "role", json_string("assistant"));
        if (to > from || (first && !final)) json_object_set_new(delta, "content", text);
        else json_decref(text);
        json_object_set_new(choice, "delta", delta);
    } else {
        json_object_set_new(choice, "text", text);
    }
    json_object_set_new(choice, "logprobs", tok_to > tok_from ? logprobs_json(s, j, tok_from, tok_to, from) : json_null());
    json_object_set_new(choice, "finish_reason", final ? json_string(j->finish ? j->finish : "stop") : json_null());
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    if (final) json_object_set_new(o, "timings", timings_json(j)); /* as llama-server, on the last chunk */
    return dump(o);
}

char *serve_usage_chunk_json(const struct serve *s, const struct serve_job *j) {
    json_t *o = envelope(s, j, j->req.kind == SERVE_CHAT ? "chat.completion.chunk" : "text_completion");
    if (!o) return NULL;
    json_object_set_new(o, "choices", json_array());
    json_object_set_new(o, "usage", usage_json(j));
    json_object_set_new(o, "timings", timings_json(j));
    return dump(o);
}

char *serve_models_json(const struct serve *s) {
    json_t *meta = json_pack("{s:i, s:i, s:i, s:i}", "n_ctx", s->e.n_ctx, "n_vocab", s->e.model.cfg.n_vocab,
                             "n_seq", s->e.n_seq, "n_layers", s->e.model.cfg.n_layers);
    return dump(json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:o}]}", "object", "list", "data", "id", s->model_name,
                          "object", "model", "created", (json_int_t)s->m.started, "owned_by", "hearth", "meta", meta));
}

static const char *base_name(const char *p) {
    const char *b = p ? strrchr(p, '/') : NULL;
    return b ? b + 1 : (p ? p : "");
}

/* The settings the chat page shows: the KV cache and the FFN sparsity. */
char *serve_props_json(const struct serve *s) {
    const struct kv_config *kv = &s->e.kv;
    int active = kv_config_active(kv, s->e.n_ctx);
    json_t *kvj = json_pack("{s:b, s:i, s:i, s:i, s:s, s:s, s:f}", "compressed", active, "budget",
                            active ? kv->budget : s->e.n_ctx, "sinks", active ? kv->n_sinks : 0, "recent",
                            active ? kv->n_recent : 0, "type", kv_type_name(kv->type), "policy",
                            !active ? "dense" : kv->window ? "window" : kv->score_mean ? "h2o-mean" : "h2o",
                            "decay", (double)kv->decay);
    json_t *sp = json_pack("{s:b, s:s, s:f}", "sidecar", s->e.sc.layers != NULL, "file",
                           base_name(s->o.eng.sidecar_path), "hot_fraction", (double)s->o.eng.hot_fraction);
    return dump(json_pack("{s:s, s:i, s:i, s:s, s:o, s:o, s:{s:f, s:i, s:f, s:i, s:f}, s:i}", "model",
                          s->model_name, "n_ctx", s->e.n_ctx, "n_seq", s->e.n_seq, "runtime",
                          s->e.rt ? "multi-process" : "single-process", "kv_cache", kvj, "sparsity", sp,
                          "default_generation_settings", "temperature", (double)s->o.sp.temp, "top_k", s->o.sp.top_k,
                          "top_p", (double)s->o.sp.top_p, "max_tokens", s->o.default_max_tokens, "min_p",
                          (double)s->o.sp.min_p, "total_slots", s->e.n_seq));
}

/* Text -> ids with special tokens parsed and BOS first when the model wants
 * one and the text does not already begin with it (as cmd_run.c does). */
static int tokenize(const struct serve *s, const char *text, size_t len, int parse_special, int add_bos,
                    int32_t **ids, int *n) {
    int32_t *body = NULL;
    size_t n_body = 0;
    if (tokenizer_encode(s->e.tok, text, len, parse_special, &body, &n_body) != 0) return -1;
    int bos = add_bos && tokenizer_add_bos(s->e.tok) && tokenizer_bos(s->e.tok) >= 0 &&
              !(n_body > 0 && body[0] == tokenizer_bos(s->e.tok));
    int32_t *all = malloc((n_body + 1) * sizeof *all);
    if (!all) {
        free(body);
        return -1;
    }
    if (bos) all[0] = tokenizer_bos(s->e.tok);
    if (n_body) memcpy(all + bos, body, n_body * sizeof *body);
    free(body);
    *ids = all;
    *n = (int)n_body + bos;
    return 0;
}

char *serve_tokenize_json(const struct serve *s, const struct serve_request *r, struct serve_error *err) {
    int32_t *ids = NULL;
    int n = 0;
    if (tokenize(s, r->prompt, r->prompt_len, r->parse_special, r->add_special, &ids, &n) != 0) {
        serve_error_set(err, 500, "server_error", "out of memory");
        return NULL;
    }
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        if (!r->with_pieces) {
            json_array_append_new(arr, json_integer(ids[i]));
            continue;
        }
        char piece[256];
        int m = tokenizer_token_to_piece(s->e.tok, ids[i], 1, piece, sizeof piece);
        if (m < 0) m = 0;
        if (m > (int)sizeof piece) m = (int)sizeof piece;
        json_array_append_new(arr, json_pack("{s:i, s:o}", "id", ids[i], "piece", str_sanitized(piece, (size_t)m)));
    }
    free(ids);
    return dump(json_pack("{s:o}", "tokens", arr));
}

char *serve_detokenize_json(const struct serve *s, const struct serve_request *r, struct serve_error *err) {
    int32_t n_vocab = tokenizer_n_vocab(s->e.tok);
    for (size_t i = 0; i < r->n_tokens; i++)
        if (r->tokens[i] < 0 || r->tokens[i] >= n_vocab) {
            serve_error_set(err, 400, "invalid_request_error", "token id %d at %zu is outside the vocabulary [0, %d)",
                            r->tokens[i], i, n_vocab);
            return NULL;
        }
    char *text = NULL;
    size_t len = 0;
    if (tokenizer_decode(s->e.tok, r->tokens, r->n_tokens, &text, &len) != 0) {
        serve_error_set(err, 500, "server_error", "out of memory");
        return NULL;
    }
    char *out = dump(json_pack("{s:o}", "content", str_sanitized(text, len)));
    free(text);
    return out;
}

int serve_build_prompt(const struct serve *s, struct serve_job *j, struct serve_error *err) {
    const struct serve_request *r = &j->req;
    int32_t n_vocab = tokenizer_n_vocab(s->e.tok);
    if (r->kind == SERVE_CHAT) {
        char *text = NULL;
        char cerr[256];
        if (chat_format(s->chat_template, r->msgs, r->n_msgs, 1, &text, cerr, sizeof cerr) != 0) {
            serve_error_set(err, 400, "invalid_request_error", "messages: %s", cerr);
            return -1;
        }
        int rc = tokenize(s, text, strlen(text), 1, 1, &j->prompt, &j->n_prompt);
        free(text);
        if (rc != 0) {
            serve_error_set(err, 500, "server_error", "out of memory");
            return -1;
        }
    } else if (r->tokens) {
        for (size_t i = 0; i < r->n_tokens; i++)
            if (r->tokens[i] >= n_vocab) {
                serve_error_set(err, 400, "invalid_request_error",
                                "prompt token id %d at %zu is outside the vocabulary [0, %d)", r->tokens[i], i,
                                n_vocab);
                return -1;
            }
        j->prompt = malloc((r->n_tokens ? r->n_tokens : 1) * sizeof *j->prompt);
        if (!j->prompt) {
            serve_error_set(err, 500, "server_error", "out of memory");
            return -1;
        }
        memcpy(j->prompt, r->tokens, r->n_tokens * sizeof *j->prompt);
        j->n_prompt = (int)r->n_tokens;
    } else if (tokenize(s, r->prompt, r->prompt_len, 1, 1, &j->prompt, &j->n_prompt) != 0) {
        serve_error_set(err, 500, "server_error", "out of memory");
        return -1;
    }
    if (j->n_prompt == 0) {
        serve_error_set(err, 400, "invalid_request_error",
                        "the prompt is empty and the model adds no BOS token: nothing to continue from");
        return -1;
    }
    if (j->n_prompt >= s->e.n_ctx) {
        serve_error_set(err, 400, "exceed_context_size_error",
                        "the prompt has %d tokens, the context holds %d (with room for at least one generated token)",
                        j->n_prompt, s->e.n_ctx);
        err->n_prompt_tokens = j->n_prompt;
        err->n_ctx = s->e.n_ctx;
        return -1;
    }
    return 0;
}
