/* serve_http: the HTTP side of `hearth serve`, on libmicrohttpd (see serve.h).
 *
 * One thread per connection (MHD_USE_THREAD_PER_CONNECTION): a request
 * waiting for its answer blocks its own thread on the job's condition
 * variable, a streamed answer blocks inside the content reader until the
 * engine publishes the next token. While it waits, the thread looks at its
 * socket every 50 ms and at every token (recv with MSG_PEEK): a peer that
 * closed or reset the connection cancels the job, so its sequence is freed
 * at the engine's next step, streamed or not. (With suspend/resume MHD does
 * not watch a suspended socket, so a client leaving a non-streamed request
 * would go unnoticed until the answer is written.) The connection limit
 * bounds the threads.
 *
 * Order of checks for a request: route (404/405), loading (503), API key
 * (401), Content-Type (415), body size (413, from Content-Length before the
 * body is read, else while it arrives), then the body (400) and the engine
 * (400 context, 503 queue full). */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "serve.h"
#include "sha256.h"

extern const unsigned char serve_page_html[]; /* generated from coordinator/serve_page.html */
extern const size_t serve_page_html_len;

#define WAIT_SLICE_MS 50
#define SERVE_DRAIN (8u << 20)

enum route {
    R_NONE = 0,
    R_PAGE,
    R_HEALTH,
    R_MODELS,
    R_METRICS,
    R_PROPS,
    R_CHAT,
    R_COMPLETIONS,
    R_TOKENIZE,
    R_DETOKENIZE,
};

static const struct {
    const char *path;
    enum route route;
    int post; /* 1: POST, 0: GET */
} k_routes[] = {
    {"/", R_PAGE, 0},
    {"/index.html", R_PAGE, 0},
    {"/health", R_HEALTH, 0},
    {"/v1/health", R_HEALTH, 0},
    {"/v1/models", R_MODELS, 0},
    {"/models", R_MODELS, 0},
    {"/metrics", R_METRICS, 0},
    {"/props", R_PROPS, 0},
    {"/v1/chat/completions", R_CHAT, 1},
    {"/chat/completions", R_CHAT, 1},
    {"/v1/completions", R_COMPLETIONS, 1},
    {"/completions", R_COMPLETIONS, 1},
    {"/tokenize", R_TOKENIZE, 1},
    {"/detokenize", R_DETOKENIZE, 1},
};

/* One request on a connection (MHD's *con_cls), freed when it completes. */
struct req_ctx {
    enum route route;
    char *body;
    size_t len, cap;
    int too_big;
    size_t dropped; /* bytes of a too large body read and thrown away */
    int answered;
};

/* A streamed answer: the content reader's state, freed with the response. */
struct stream {
    struct serve *s;
    struct serve_job *job;
    int fd;
    double deadline;
    size_t sent, sent_toks;
    int first_done, final_done, ended;
    char *out;       /* SSE bytes formatted and not yet handed to MHD */
    size_t out_len, out_off;
};

static double now_s(void) { return engine_now(); }

static int peer_gone(int fd) {
    if (fd < 0) return 0;
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0) return 1;
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return 1;
    return 0;
}

static int conn_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

static void timed_wait(pthread_cond_t *cond, pthread_mutex_t *mu, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(cond, mu, &ts);
}

static enum MHD_Result send_body(struct serve *s, struct MHD_Connection *c, int status, const char *ctype, char *body,
                                 size_t len, int must_free) {
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body, must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (must_free) free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (!strncmp(ctype, "text/html", 9)) {
        /* the page: its own inline script and style, requests to this server only, never framed */
        MHD_add_response_header(r, "Content-Security-Policy",
                                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
        MHD_add_response_header(r, "X-Frame-Options", "DENY");
    }
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    if (status == 503) MHD_add_response_header(r, "Retry-After", "1");
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    serve_count_status(s, status);
    return rc;
}

static enum MHD_Result send_json(struct serve *s, struct MHD_Connection *c, int status, char *json) {
    if (!json) {
        static char oom[] = "{\"error\":{\"code\":500,\"message\":\"out of memory\",\"type\":\"server_error\"}}";
        return send_body(s, c, 500, "application/json", oom, strlen(oom), 0);
    }
    return send_body(s, c, status, "application/json", json, strlen(json), 1);
}

static enum MHD_Result send_error(struct serve *s, struct MHD_Connection *c, const struct serve_error *e) {
    return send_json(s, c, e->status, serve_error_json(e));
}

static enum MHD_Result send_err(struct serve *s, struct MHD_Connection *c, int status, const char *type,
                                const char *msg) {
    struct serve_error e;
    serve_error_set(&e, status, type, "%s", msg);
    return send_error(s, c, &e);
}

/* Constant time: both sides hashed (the length of the key does not leak
 * either), every byte compared. */
static int key_ok(const struct serve *s, struct MHD_Connection *c) {
    if (!s->has_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    const char *given = NULL;
    if (h && strncasecmp(h, "Bearer ", 7) == 0) given = h + 7;
    if (!given) given = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Api-Key");
    if (!given) return 0;
    while (*given == ' ') given++;
    uint8_t d[32];
    sha256_buf(given, strlen(given), d);
    volatile uint8_t diff = 0;
    for (int i = 0; i < 32; i++) diff |= (uint8_t)(d[i] ^ s->key_hash[i]);
    return diff == 0;
}

/* ---- streaming ---- */

static int out_printf_json(struct stream *st, char *json) {
    if (!json) return -1;
    size_t n = strlen(json);
    char *g = realloc(st->out, st->out_len + n + 9);
    if (!g) {
        free(json);
        return -1;
    }
    st->out = g;
    memcpy(st->out + st->out_len, "data: ", 6);
    memcpy(st->out + st->out_len + 6, json, n);
    memcpy(st->out + st->out_len + 6 + n, "\n\n", 2);
    st->out_len += n + 8;
    free(json);
    return 0;
}

static void out_raw(struct stream *st, const char *s) {
    size_t n = strlen(s);
    char *g = realloc(st->out, st->out_len + n);
    if (!g) return;
    st->out = g;
    memcpy(st->out + st->out_len, s, n);
    st->out_len += n;
}

/* Formats what the job published since the last call (under mu). Returns 1
 * when something was formatted, 0 when there is nothing new yet. */
static int stream_format_locked(struct stream *st) {
    struct serve_job *j = st->job;
    int done = j->state == JOB_DONE;
    if (done && j->err.status) {
        out_printf_json(st, serve_error_json(&j->err)); /* data: {"error": ...}, and the stream ends */
        st->ended = 1;
        return 1;
    }
    size_t to = j->sendable;
    size_t tok_to = done ? j->n_toks : j->n_toks;
    if (to > st->sent || (done && !st->final_done)) {
        if (to > st->sent || tok_to > st->sent_toks) {
            out_printf_json(st, serve_chunk_json(st->s, j, st->sent, to, st->sent_toks, tok_to, !st->first_done, 0));
            st->first_done = 1;
            st->sent = to;
            st->sent_toks = tok_to;
        }
        if (done) {
            out_printf_json(st, serve_chunk_json(st->s, j, to, to, tok_to, tok_to, !st->first_done, 1));
            if (j->req.include_usage) out_printf_json(st, serve_usage_chunk_json(st->s, j));
            out_raw(st, "data: [DONE]\n\n");
            st->final_done = 1;
            st->ended = 1;
        }
        return 1;
    }
    return 0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    struct stream *st = cls;
    struct serve *s = st->s;
    for (;;) {
        if (st->out_off < st->out_len) {
            size_t n = st->out_len - st->out_off;
            if (n > max) n = max;
            memcpy(buf, st->out + st->out_off, n);
            st->out_off += n;
            if (st->out_off == st->out_len) st->out_off = st->out_len = 0;
            return (ssize_t)n;
        }
        if (st->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&s->mu);
        while (!stream_format_locked(st)) {
            if (now_s() > st->deadline) {
                pthread_mutex_unlock(&s->mu);
                serve_cancel(s, st->job);
                pthread_mutex_lock(&s->mu);
                s->m.timeouts++;
                struct serve_error e;
                serve_error_set(&e, 504, "timeout_error", "the request ran past the server's timeout (--timeout %g s)",
                                s->o.timeout_s);
                out_printf_json(st, serve_error_json(&e));
                st->ended = 1;
                break;
            }
            timed_wait(&st->job->cond, &s->mu, WAIT_SLICE_MS);
            if (st->job->state != JOB_DONE && peer_gone(st->fd)) {
                pthread_mutex_unlock(&s->mu);
                serve_cancel(s, st->job);
                log_debug("client left a streamed request: its sequence is closed");
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
        }
        pthread_mutex_unlock(&s->mu);
        /* a client that left between two tokens is noticed before the next write */
        if (!st->ended && peer_gone(st->fd)) {
            serve_cancel(s, st->job);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void stream_free(void *cls) {
    struct stream *st = cls;
    struct serve *s = st->s;
    serve_cancel(s, st->job); /* no-op once done */
    pthread_mutex_lock(&s->mu);
    serve_job_unref_locked(st->job);
    pthread_mutex_unlock(&s->mu);
    free(st->out);
    free(st);
}

/* ---- generation requests ---- */

static int model_matches(const struct serve *s, const char *m) {
    if (!m || !*m) return 1;
    if (!strcmp(m, s->model_name)) return 1;
    const char *path = s->e.model_path;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (!strcmp(m, base) || !strcmp(m, path)) return 1;
    size_t bl = strlen(base);
    return bl > 5 && !strcmp(base + bl - 5, ".gguf") && strlen(m) == bl - 5 && !strncmp(m, base, bl - 5);
}

static enum MHD_Result handle_generate(struct serve *s, struct MHD_Connection *c, struct req_ctx *rc) {
    struct serve_error err = {0};
    struct serve_job *j = serve_job_new();
    if (!j) return send_err(s, c, 500, "server_error", "out of memory");
    j->refs = 1;
    enum serve_kind kind = rc->route == R_CHAT ? SERVE_CHAT : SERVE_COMPLETION;
    if (serve_parse_request(kind, rc->body ? rc->body : "", rc->len, &s->o.sp, s->o.default_max_tokens, &j->req,
                            &err) != 0)
        goto fail;
    if (!model_matches(s, j->req.model)) {
        serve_error_set(&err, 404, "not_found_error", "the model '%s' does not exist here (this server has '%s')",
                        j->req.model, s->model_name);
        goto fail;
    }
    if (serve_build_prompt(s, j, &err) != 0) goto fail;
    char serr[256];
    if (!(j->smp = sampler_create(&j->req.sp, s->e.model.cfg.n_vocab, serr, sizeof serr))) {
        serve_error_set(&err, 400, "invalid_request_error", "sampling: %s", serr);
        goto fail;
    }
    for (int i = 0; i < j->n_prompt; i++) sampler_accept(j->smp, j->prompt[i]); /* as engine_generate does */
    static atomic_ulong counter;
    unsigned long k = atomic_fetch_add(&counter, 1);
    snprintf(j->id, sizeof j->id, "%s-%lx%06lx", kind == SERVE_CHAT ? "chatcmpl" : "cmpl", (unsigned long)time(NULL),
             k & 0xffffff);
    j->created = (long)time(NULL);
    j->t_queued = now_s();
    if (serve_submit(s, j, &err) != 0) goto fail;

    double deadline = j->t_queued + s->o.timeout_s;
    int fd = conn_fd(c);
    if (j->req.stream) {
        struct stream *st = calloc(1, sizeof *st);
        if (!st) {
            serve_cancel(s, j);
            serve_error_set(&err, 500, "server_error", "out of memory");
            goto fail;
        }
        st->s = s;
        st->job = j; /* the HTTP side's reference moves to the stream */
        st->fd = fd;
        st->deadline = deadline;
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, st,
                                                                   stream_free);
        if (!r) {
            stream_free(st);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
        enum MHD_Result ok = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        serve_count_status(s, 200);
        return ok;
    }

    /* not streamed: wait here (this connection's own thread) */
    pthread_mutex_lock(&s->mu);
    while (j->state != JOB_DONE) {
        if (now_s() > deadline) {
            pthread_mutex_unlock(&s->mu);
            serve_cancel(s, j);
            pthread_mutex_lock(&s->mu);
            s->m.timeouts++;
            pthread_mutex_unlock(&s->mu);
            serve_error_set(&err, 504, "timeout_error", "the request ran past the server's timeout (--timeout %g s)",
                            s->o.timeout_s);
            goto fail;
        }
        timed_wait(&j->cond, &s->mu, WAIT_SLICE_MS);
        if (j->state != JOB_DONE && peer_gone(fd)) {
            pthread_mutex_unlock(&s->mu);
            serve_cancel(s, j);
            pthread_mutex_lock(&s->mu);
            serve_job_unref_locked(j);
            pthread_mutex_unlock(&s->mu);
            log_debug("client left a waiting request: its sequence is closed");
            return MHD_NO; /* closes the connection */
        }
    }
    char *body = j->err.status ? NULL : serve_final_json(s, j);
    if (j->err.status) err = j->err;
    serve_job_unref_locked(j);
    pthread_mutex_unlock(&s->mu);
    if (err.status) return send_error(s, c, &err);
    return send_json(s, c, 200, body);

fail:
    pthread_mutex_lock(&s->mu);
    serve_job_unref_locked(j);
    pthread_mutex_unlock(&s->mu);
    return send_error(s, c, &err);
}

static enum MHD_Result handle_tokens(struct serve *s, struct MHD_Connection *c, struct req_ctx *rc) {
    struct serve_error err = {0};
    struct serve_request r;
    enum serve_kind kind = rc->route == R_TOKENIZE ? SERVE_TOKENIZE : SERVE_DETOKENIZE;
    if (serve_parse_request(kind, rc->body ? rc->body : "", rc->len, &s->o.sp, s->o.default_max_tokens, &r, &err) != 0)
        return send_error(s, c, &err);
    char *out = kind == SERVE_TOKENIZE ? serve_tokenize_json(s, &r, &err) : serve_detokenize_json(s, &r, &err);
    serve_request_free(&r);
    if (!out) return err.status ? send_error(s, c, &err) : send_json(s, c, 500, NULL);
    return send_json(s, c, 200, out);
}

/* ---- the dispatcher ---- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)version;
    struct serve *s = cls;
    struct req_ctx *rc = *con_cls;
    if (!rc) {
        /* the headers are in: everything that needs no body is decided now */
        if (!(rc = calloc(1, sizeof *rc))) return MHD_NO;
        *con_cls = rc;
        int known = 0, post = !strcmp(method, "POST"), get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
        for (size_t i = 0; i < sizeof k_routes / sizeof k_routes[0]; i++)
            if (!strcmp(url, k_routes[i].path)) {
                known = 1;
                if (k_routes[i].post ? post : get) rc->route = k_routes[i].route;
            }
        rc->answered = 1;
        if (!known) return send_err(s, c, 404, "not_found_error", "no such endpoint");
        if (rc->route == R_NONE) return send_err(s, c, 405, "invalid_request_error", "method not allowed here");
        if (rc->route == R_PAGE)
            return send_body(s, c, 200, "text/html; charset=utf-8", (char *)serve_page_html, serve_page_html_len, 0);
        if (rc->route == R_HEALTH) {
            if (atomic_load_explicit(&s->loaded, memory_order_acquire)) {
                static char ok[] = "{\"status\":\"ok\"}";
                return send_body(s, c, 200, "application/json", ok, strlen(ok), 0);
            }
            return send_err(s, c, 503, "unavailable_error", "Loading model");
        }
        if (!key_ok(s, c)) return send_err(s, c, 401, "authentication_error", "Invalid API Key");
        if (!atomic_load_explicit(&s->loaded, memory_order_acquire))
            return send_err(s, c, 503, "unavailable_error", "Loading model");
        if (post) {
            /* JSON only: a cross-site form or text/plain POST (no preflight) never reaches the engine */
            const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
            if (!ct || strncasecmp(ct, "application/json", 16) != 0)
                return send_err(s, c, 415, "invalid_request_error",
                                "the body must be JSON: send the header Content-Type: application/json");
            /* A body over the limit is read and dropped up to SERVE_DRAIN bytes, so that a client that
             * writes it all before reading (most do) gets the 413; beyond that the answer goes at once
             * and the connection closes. */
            const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
            if (cl && strtoull(cl, NULL, 10) > SERVE_DRAIN)
                return send_err(s, c, 413, "invalid_request_error", "the request body is larger than 1 MiB");
        }
        rc->answered = 0;
        return MHD_YES;
    }
    if (rc->answered) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (rc->too_big || rc->len + n > SERVE_MAX_BODY) {
            rc->too_big = 1;
            rc->dropped += n;
            if (rc->dropped > SERVE_DRAIN) {
                rc->answered = 1;
                return send_err(s, c, 413, "invalid_request_error", "the request body is larger than 1 MiB");
            }
            return MHD_YES;
        }
        if (rc->len + n + 1 > rc->cap) {
            size_t cap = rc->cap ? rc->cap : 4096;
            while (cap < rc->len + n + 1) cap *= 2;
            char *g = realloc(rc->body, cap);
            if (!g) return MHD_NO;
            rc->body = g;
            rc->cap = cap;
        }
        memcpy(rc->body + rc->len, upload_data, n);
        rc->len += n;
        rc->body[rc->len] = '\0';
        return MHD_YES;
    }
    /* the whole body is in */
    rc->answered = 1;
    if (rc->too_big) return send_err(s, c, 413, "invalid_request_error", "the request body is larger than 1 MiB");
    switch (rc->route) {
    case R_MODELS: return send_json(s, c, 200, serve_models_json(s));
    case R_PROPS: return send_json(s, c, 200, serve_props_json(s));
    case R_METRICS: {
        char *t = serve_metrics_text(s);
        if (!t) return send_json(s, c, 500, NULL);
        return send_body(s, c, 200, "text/plain; version=0.0.4", t, strlen(t), 1);
    }
    case R_CHAT:
    case R_COMPLETIONS: return handle_generate(s, c, rc);
    case R_TOKENIZE:
    case R_DETOKENIZE: return handle_tokens(s, c, rc);
    default: return send_err(s, c, 404, "not_found_error", "no such endpoint");
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    struct req_ctx *rc = *con_cls;
    if (!rc) return;
    free(rc->body);
    free(rc);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    log_debug("http: %s", line);
}

struct MHD_Daemon *serve_http_start(struct serve *s, char *err, size_t errlen) {
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char port[16];
    snprintf(port, sizeof port, "%d", s->o.port);
    int gai = getaddrinfo(s->o.host, port, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(err, errlen, "--host %s: %s", s->o.host, gai_strerror(gai));
        return NULL;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    struct sockaddr_storage sa;
    memcpy(&sa, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    /* connections: the slots and the queue, plus room for /health, /metrics and idle keep-alives */
    unsigned limit = (unsigned)(s->o.eng.n_seq > 0 ? s->o.eng.n_seq : 1) + (unsigned)s->o.queue_max + 64;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)s->o.port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT, limit,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_END);
    if (!d) {
        snprintf(err, errlen, "cannot listen on %s port %d: %s", s->o.host, s->o.port,
                 errno ? strerror(errno) : "libmicrohttpd refused the settings");
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    if (di && di->port) s->o.port = di->port; /* --port 0: the port the kernel chose */
    return d;
}

void serve_http_stop(struct MHD_Daemon *d) {
    if (d) MHD_stop_daemon(d);
}
