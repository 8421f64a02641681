/* serve_req: request bodies -> struct serve_request (see serve.h).
 *
 * The JSON is parsed by jansson (which rejects invalid UTF-8, \u0000 in
 * strings and, with JSON_REJECT_DUPLICATES, repeated keys); this file only
 * checks the shape. Every field has one accepted type (null meaning "absent"
 * where OpenAI allows it), every number a range; a violation is a 400 that
 * names the field. Fields we do not know are ignored, as OpenAI's clients
 * send many; fields we know but cannot honour (tools, n > 1, JSON mode,
 * presence/frequency penalties) are refused rather than silently dropped.
 * Nothing in a request names a file. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"

void serve_error_set(struct serve_error *e, int status, const char *type, const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->n_prompt_tokens = e->n_ctx = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

static int bad(struct serve_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(struct serve_error *e, const char *fmt, ...) {
    char msg[sizeof e->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    serve_error_set(e, 400, "invalid_request_error", "%s", msg);
    return -1;
}
#define BAD(...) bad(err, __VA_ARGS__)

/* Depth of nested arrays and objects (a scalar is 0). jansson bounds its own
 * recursion (2048); this bounds what the server accepts. */
static int json_depth(const json_t *v, int limit) {
    int d = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            int c = json_depth(x, limit - 1);
            if (c > d) d = c;
            if (d >= limit) break;
        }
        return d + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            int c = json_depth(x, limit - 1);
            if (c > d) d = c;
            if (d >= limit) break;
        }
        return d + 1;
    }
    return 0;
}

static char *dup_str(const json_t *s, size_t *len) {
    size_t n = json_string_length(s);
    char *c = malloc(n + 1);
    if (!c) return NULL;
    memcpy(c, json_string_value(s), n);
    c[n] = '\0';
    if (len) *len = n;
    return c;
}

/* Optional number field in [lo, hi] (an integer JSON value counts). 1 set, 0 absent, -1 bad. */
static int get_num(const json_t *o, const char *key, double lo, double hi, double *out, struct serve_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return BAD("'%s' must be a number", key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) return BAD("'%s' must be in [%g, %g], got %g", key, lo, hi, x);
    *out = x;
    return 1;
}

static int get_int(const json_t *o, const char *key, long long lo, long long hi, long long *out,
                   struct serve_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    long long x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (long long)json_real_value(v); /* 64.0 from clients that only have doubles */
    } else {
        return BAD("'%s' must be an integer", key);
    }
    if (x < lo || x > hi) return BAD("'%s' must be in [%lld, %lld], got %lld", key, lo, hi, x);
    *out = x;
    return 1;
}

static int get_bool(const json_t *o, const char *key, int *out, struct serve_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return BAD("'%s' must be true or false", key);
    *out = json_is_true(v);
    return 1;
}

/* The sampling fields, named as OpenAI and llama-server name them. */
static int parse_sampling(const json_t *o, struct serve_request *r, int default_max_tokens, struct serve_error *err) {
    double x;
    long long n;
    int rc;
    if ((rc = get_num(o, "temperature", 0, 100, &x, err)) < 0) return -1;
    if (rc) r->sp.temp = (float)x;
    if ((rc = get_num(o, "top_p", 0, 1, &x, err)) < 0) return -1;
    if (rc) r->sp.top_p = (float)x;
    if ((rc = get_num(o, "min_p", 0, 1, &x, err)) < 0) return -1;
    if (rc) r->sp.min_p = (float)x;
    if ((rc = get_int(o, "top_k", 0, 1 << 30, &n, err)) < 0) return -1;
    if (rc) r->sp.top_k = (int)n;
    if ((rc = get_num(o, "repeat_penalty", 1e-3, 100, &x, err)) < 0) return -1;
    if (rc) r->sp.repeat_penalty = (float)x;
    if ((rc = get_int(o, "repeat_last_n", 0, 1 << 20, &n, err)) < 0) return -1;
    if (rc) r->sp.repeat_last_n = (int)n;
    static const char *const unsupported_penalties[] = {"frequency_penalty", "presence_penalty"};
    for (size_t i = 0; i < 2; i++) {
        if ((rc = get_num(o, unsupported_penalties[i], -2, 2, &x, err)) < 0) return -1;
        if (rc && x != 0)
            return BAD("'%s' is not supported; use 'repeat_penalty' (llama.cpp's repetition penalty, e.g. 1.1)",
                       unsupported_penalties[i]);
    }
    /* seed: any integer; -1 (llama-server) or absent: a random one */
    if ((rc = get_int(o, "seed", -1, INT64_MAX, &n, err)) < 0) return -1;
    if (rc) r->sp.seed = n < 0 ? SAMPLER_SEED_RANDOM : (uint64_t)n;

    r->max_tokens = default_max_tokens;
    static const char *const max_names[] = {"max_tokens", "max_completion_tokens", "n_predict"};
    for (size_t i = 0; i < 3; i++) {
        if ((rc = get_int(o, max_names[i], -1, 1 << 24, &n, err)) < 0) return -1;
        if (!rc) continue;
        if (n == 0) return BAD("'%s' must be at least 1 (or -1: until the end of the answer)", max_names[i]);
        r->max_tokens = (int)n;
    }
    if ((rc = get_int(o, "n", 1, 1, &n, err)) < 0) return BAD("'n' must be 1: one choice per request");

    json_t *stop = json_object_get(o, "stop");
    if (stop && !json_is_null(stop)) {
        json_t *one[1] = {stop};
        size_t count = 1;
        if (json_is_array(stop)) {
            count = json_array_size(stop);
            if (count > SERVE_MAX_STOPS) return BAD("'stop' takes at most %d strings", SERVE_MAX_STOPS);
        } else if (!json_is_string(stop)) {
            return BAD("'stop' must be a string or a list of strings");
        }
        for (size_t i = 0; i < count; i++) {
            json_t *s = json_is_array(stop) ? json_array_get(stop, i) : one[0];
            if (!json_is_string(s)) return BAD("'stop' must be a string or a list of strings");
            size_t n_s = json_string_length(s);
            if (n_s == 0) continue; /* an empty stop string would end every answer at once: ignore it */
            if (n_s > SERVE_MAX_STOP_LEN) return BAD("a stop string is longer than %d bytes", SERVE_MAX_STOP_LEN);
            if (!(r->stops[r->n_stops] = dup_str(s, NULL))) return BAD("out of memory");
            r->n_stops++;
        }
    }

    if (get_bool(o, "stream", &r->stream, err) < 0) return -1;
    json_t *so = json_object_get(o, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return BAD("'stream_options' must be an object");
        if (get_bool(so, "include_usage", &r->include_usage, err) < 0) return -1;
    }

    /* logprobs: a boolean for chat (with top_logprobs), an integer (the
     * number of alternatives) for the legacy completions */
    json_t *lp = json_object_get(o, "logprobs");
    if (r->kind == SERVE_CHAT) {
        if (get_bool(o, "logprobs", &r->logprobs, err) < 0) return -1;
        if ((rc = get_int(o, "top_logprobs", 0, SERVE_MAX_TOP_LOGPROBS, &n, err)) < 0) return -1;
        if (rc) {
            if (!r->logprobs) return BAD("'top_logprobs' needs 'logprobs': true");
            r->top_logprobs = (int)n;
        }
    } else if (lp && !json_is_null(lp)) {
        if (json_is_boolean(lp)) {
            r->logprobs = json_is_true(lp);
        } else {
            if ((rc = get_int(o, "logprobs", 0, SERVE_MAX_TOP_LOGPROBS, &n, err)) < 0) return -1;
            r->logprobs = 1;
            r->top_logprobs = (int)n;
        }
    }

    static const char *const refused[] = {"tools", "tool_choice", "functions", "function_call"};
    for (size_t i = 0; i < 4; i++) {
        json_t *v = json_object_get(o, refused[i]);
        if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0) &&
            !(json_is_string(v) && !strcmp(json_string_value(v), "none")))
            return BAD("'%s' is not supported by this server", refused[i]);
    }
    json_t *rf = json_object_get(o, "response_format");
    if (rf && !json_is_null(rf)) {
        json_t *t = json_is_object(rf) ? json_object_get(rf, "type") : NULL;
        if (!t || !json_is_string(t)) return BAD("'response_format' must be an object with a string 'type'");
        if (strcmp(json_string_value(t), "text") != 0)
            return BAD("'response_format' type '%s' is not supported (only 'text')", json_string_value(t));
    }
    return 0;
}

/* content: a string, null (an assistant turn with no text), or a list of
 * parts of which only {"type": "text", "text": ...} is accepted. */
static int parse_content(const json_t *c, size_t index, char **out, struct serve_error *err) {
    if (!c || json_is_null(c)) {
        *out = strdup("");
    } else if (json_is_string(c)) {
        *out = dup_str(c, NULL);
    } else if (json_is_array(c)) {
        size_t total = 0, i;
        json_t *p;
        json_array_foreach(c, i, p) {
            json_t *type = json_is_object(p) ? json_object_get(p, "type") : NULL;
            json_t *text = json_is_object(p) ? json_object_get(p, "text") : NULL;
            if (!type || !json_is_string(type) || strcmp(json_string_value(type), "text") != 0 || !text ||
                !json_is_string(text))
                return BAD("messages[%zu].content: only parts {\"type\": \"text\", \"text\": \"...\"} are supported",
                           index);
            total += json_string_length(text);
        }
        char *s = malloc(total + 1);
        if (!s) return BAD("out of memory");
        size_t at = 0;
        json_array_foreach(c, i, p) {
            json_t *text = json_object_get(p, "text");
            memcpy(s + at, json_string_value(text), json_string_length(text));
            at += json_string_length(text);
        }
        s[at] = '\0';
        *out = s;
    } else {
        return BAD("messages[%zu].content must be a string or a list of text parts", index);
    }
    if (!*out) return BAD("out of memory");
    return 0;
}

static int parse_messages(const json_t *o, struct serve_request *r, struct serve_error *err) {
    json_t *m = json_object_get(o, "messages");
    if (!m || json_is_null(m)) return BAD("'messages' is required");
    if (!json_is_array(m)) return BAD("'messages' must be a list of messages");
    size_t n = json_array_size(m);
    if (n == 0) return BAD("'messages' must not be empty");
    if (n > SERVE_MAX_MESSAGES) return BAD("'messages' holds more than %d messages", SERVE_MAX_MESSAGES);
    r->msgs = calloc(n, sizeof *r->msgs);
    if (!r->msgs) return BAD("out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *msg = json_array_get(m, i);
        if (!json_is_object(msg)) return BAD("messages[%zu] must be an object", i);
        json_t *role = json_object_get(msg, "role");
        if (!role || !json_is_string(role)) return BAD("messages[%zu].role must be a string", i);
        const char *rs = json_string_value(role);
        size_t rl = json_string_length(role);
        if (rl == 0 || rl > 32 || strlen(rs) != rl) return BAD("messages[%zu].role is empty or too long", i);
        for (size_t k = 0; k < rl; k++)
            if (!((rs[k] >= 'a' && rs[k] <= 'z') || rs[k] == '_'))
                return BAD("messages[%zu].role '%s' is not a role (system, user, assistant)", i, rs);
        char *content = NULL;
        if (parse_content(json_object_get(msg, "content"), i, &content, err) != 0) return -1;
        r->msgs[i].content = content;
        r->n_msgs = i + 1; /* owned from here on */
        if (!(r->msgs[i].role = strdup(!strcmp(rs, "developer") ? "system" : rs))) return BAD("out of memory");
    }
    return 0;
}

/* What a prompt field may hold: text (a string, or a list of one string),
 * token ids, or either. */
enum prompt_form { PROMPT_TEXT = 1, PROMPT_IDS = 2, PROMPT_ANY = 3 };

/* prompt: a string, a list of token ids, or a list of one string, as `form` allows. */
static int parse_prompt(const json_t *o, const char *key, struct serve_request *r, enum prompt_form form,
                        struct serve_error *err) {
    int ids_allowed = (form & PROMPT_IDS) != 0;
    json_t *p = json_object_get(o, key);
    if (!p || json_is_null(p)) return BAD("'%s' is required", key);
    if (!(form & PROMPT_TEXT)) {
        if (!json_is_array(p)) return BAD("'%s' must be a list of token ids", key);
    } else if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0))) {
        p = json_array_get(p, 0);
    }
    if (json_is_string(p)) {
        if (!(r->prompt = dup_str(p, &r->prompt_len))) return BAD("out of memory");
        return 0;
    }
    if (ids_allowed && json_is_array(p)) {
        size_t n = json_array_size(p);
        if (n > SERVE_MAX_TOKENS_IN) return BAD("'%s' holds more than %d token ids", key, SERVE_MAX_TOKENS_IN);
        r->tokens = malloc((n ? n : 1) * sizeof *r->tokens);
        if (!r->tokens) return BAD("out of memory");
        for (size_t i = 0; i < n; i++) {
            json_t *t = json_array_get(p, i);
            if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX)
                return BAD("'%s' must be %sa list of token ids (one prompt per request)", key,
                           form & PROMPT_TEXT ? "a string or " : "");
            r->tokens[i] = (int32_t)json_integer_value(t);
        }
        r->n_tokens = n;
        return 0;
    }
    return BAD("'%s' must be a string%s", key, ids_allowed ? " or a list of token ids (one prompt per request)" : "");
}

int serve_parse_request(enum serve_kind kind, const char *body, size_t len, const struct sampler_params *defaults,
                        int default_max_tokens, struct serve_request *r, struct serve_error *err) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->sp = *defaults;
    r->max_tokens = default_max_tokens;
    r->parse_special = 1;
    err->status = 0;
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        /* jansson's text says what and where ("invalid UTF-8", "end of file expected", ...) */
        return BAD("the body is not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
    }
    int rc = -1;
    if (!json_is_object(root)) {
        BAD("the body must be a JSON object");
        goto out;
    }
    if (json_depth(root, SERVE_MAX_DEPTH + 1) > SERVE_MAX_DEPTH) {
        BAD("the JSON is nested deeper than %d levels", SERVE_MAX_DEPTH);
        goto out;
    }
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model) || json_string_length(model) > 1024) {
            BAD("'model' must be a string");
            goto out;
        }
        if (!(r->model = dup_str(model, NULL))) {
            BAD("out of memory");
            goto out;
        }
    }
    switch (kind) {
    case SERVE_CHAT:
        if (parse_messages(root, r, err) != 0 || parse_sampling(root, r, default_max_tokens, err) != 0) goto out;
        break;
    case SERVE_COMPLETION:
        if (parse_prompt(root, "prompt", r, PROMPT_ANY, err) != 0 ||
            parse_sampling(root, r, default_max_tokens, err) != 0)
            goto out;
        break;
    case SERVE_TOKENIZE:
        if (parse_prompt(root, "content", r, PROMPT_TEXT, err) != 0 ||
            get_bool(root, "add_special", &r->add_special, err) < 0 ||
            get_bool(root, "parse_special", &r->parse_special, err) < 0 ||
            get_bool(root, "with_pieces", &r->with_pieces, err) < 0)
            goto out;
        break;
    case SERVE_DETOKENIZE:
        /* ids only: a list of one string is not a prompt here (the fuzzer found it taken as text) */
        if (parse_prompt(root, "tokens", r, PROMPT_IDS, err) != 0) goto out;
        break;
    }
    rc = 0;
out:
    json_decref(root);
    if (rc != 0) serve_request_free(r);
    return rc;
}

void serve_request_free(struct serve_request *r) {
    for (size_t i = 0; i < r->n_msgs; i++) {
        free((char *)r->msgs[i].role);
        free((char *)r->msgs[i].content);
    }
    free(r->msgs);
    for (size_t i = 0; i < r->n_stops; i++) free(r->stops[i]);
    free(r->model);
    free(r->prompt);
    free(r->tokens);
    memset(r, 0, sizeof *r);
}

long serve_stop_find(const char *text, size_t len, size_t from, char *const *stops, size_t n_stops, size_t *hold) {
    long best = -1;
    size_t keep = 0;
    for (size_t i = 0; i < n_stops; i++) {
        size_t sl = strlen(stops[i]);
        if (sl == 0) continue;
        /* a match may begin up to sl - 1 bytes before `from` (it was held back) */
        size_t start = from >= sl - 1 ? from - (sl - 1) : 0;
        for (size_t p = start; p + sl <= len; p++) {
            if (best >= 0 && (long)p >= best) break;
            if (memcmp(text + p, stops[i], sl) == 0) {
                best = (long)p;
                break;
            }
        }
        /* the longest suffix of text that is a proper prefix of this stop string */
        size_t max_k = sl - 1 < len ? sl - 1 : len;
        for (size_t k = max_k; k > keep; k--) {
            if (memcmp(text + len - k, stops[i], k) == 0) {
                keep = k;
                break;
            }
        }
    }
    if (hold) *hold = best >= 0 ? 0 : keep;
    return best;
}
