/* serve: `hearth serve`, the engine behind an OpenAI-compatible HTTP API.
 *
 * Four parts, one file each:
 *   serve_req.c    a request body (JSON) -> struct serve_request, every
 *                  field checked; no engine, no I/O (the fuzz target);
 *   serve_out.c    the JSON the server answers (completions, chunks,
 *                  errors, tokenize) and the stop-string scan;
 *   serve_engine.c the engine thread: it owns the engine (every engine_*
 *                  call comes from it), admits queued jobs as sequences,
 *                  steps them together, samples, and publishes each job's
 *                  text; metrics;
 *   serve_http.c   libmicrohttpd: routing, the API key, body limits,
 *                  blocking waits for a job (one thread per connection),
 *                  SSE streaming, client disconnects;
 * and serve.c, the command.
 *
 * Threads and data. HTTP threads parse, render the chat template and
 * tokenize (the tokenizer is immutable), then queue a job. The engine thread
 * takes jobs from the queue when a sequence slot is free. Everything a job
 * shares between the two sides is under srv->mu; the engine thread signals
 * job->cond when it appended text or finished, the HTTP thread signals
 * srv->work when it queued or cancelled a job. A job is freed by whichever
 * side drops the last reference. */
#ifndef HEARTH_SERVE_H
#define HEARTH_SERVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "engine.h"
#include "sampler.h"

#define SERVE_MAX_BODY (1u << 20)  /* bytes of a request body; beyond: 413 */
#define SERVE_MAX_DEPTH 32         /* nesting of a request's JSON */
#define SERVE_MAX_MESSAGES 4096
#define SERVE_MAX_STOPS 16
#define SERVE_MAX_STOP_LEN 256     /* bytes of one stop string */
#define SERVE_MAX_TOP_LOGPROBS 20
#define SERVE_MAX_TOKENS_IN (1 << 20) /* token ids in a /detokenize or a completion prompt */

enum serve_kind { SERVE_CHAT = 0, SERVE_COMPLETION, SERVE_TOKENIZE, SERVE_DETOKENIZE };

/* An error as the client sees it: {"error": {"code", "message", "type"}}. */
struct serve_error {
    int status;       /* HTTP status; 0: no error */
    const char *type; /* "invalid_request_error", "exceed_context_size_error", ... */
    char message[512];
    int n_prompt_tokens, n_ctx; /* exceed_context_size_error only */
};

void serve_error_set(struct serve_error *e, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A parsed request; every pointer owned (serve_request_free). */
struct serve_request {
    enum serve_kind kind;
    char *model;              /* NULL: not given */
    struct chat_msg *msgs;    /* chat */
    size_t n_msgs;
    char *prompt;             /* completion, tokenize: the text (NUL-terminated, may hold no NUL) */
    size_t prompt_len;
    int32_t *tokens;          /* completion given as ids; detokenize */
    size_t n_tokens;
    int stream;
    int include_usage;        /* stream_options.include_usage */
    int max_tokens;           /* -1: until end of generation or the context is full */
    struct sampler_params sp;
    char *stops[SERVE_MAX_STOPS];
    size_t n_stops;
    int logprobs;             /* 1: per-token log-probabilities in the answer */
    int top_logprobs;         /* alternatives per token, 0..SERVE_MAX_TOP_LOGPROBS */
    int add_special;          /* tokenize: add BOS as a prompt would */
    int parse_special;        /* tokenize: special-token text becomes the token (default 1) */
    int with_pieces;          /* tokenize: [{id, piece}] instead of ids */
};

/* Parses body[0..len) as a request of `kind`. Sampling fields absent from the
 * body take `defaults` (the server's); max_tokens absent takes
 * default_max_tokens. 0, or -1 with err filled (status 400). */
int serve_parse_request(enum serve_kind kind, const char *body, size_t len, const struct sampler_params *defaults,
                        int default_max_tokens, struct serve_request *out, struct serve_error *err);
void serve_request_free(struct serve_request *r);

/* Stop strings. text[0..len) is what was generated so far; `from` the first
 * byte that may begin a match not seen before. Returns the offset of the
 * earliest match of any stop string (the text ends there), or -1; when -1,
 * *hold gets how many trailing bytes could still begin one (they are held
 * back from the client until the next token decides). */
long serve_stop_find(const char *text, size_t len, size_t from, char *const *stops, size_t n_stops, size_t *hold);

/* One generated token, for logprobs. */
struct serve_tok {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_id[SERVE_MAX_TOP_LOGPROBS];
    float top_lp[SERVE_MAX_TOP_LOGPROBS];
};

enum serve_job_state { JOB_QUEUED = 0, JOB_RUNNING, JOB_DONE };

struct serve_job {
    /* set by the HTTP thread before queueing; read-only afterwards */
    struct serve_request req;
    int32_t *prompt;
    int n_prompt;
    struct sampler *smp;      /* used by the engine thread only, once queued */
    double t_queued;
    char id[40];              /* "chatcmpl-..." / "cmpl-...": every chunk of a stream shares it */
    long created;             /* unix seconds */

    /* under srv->mu, written by the engine thread */
    enum serve_job_state state;
    int seq;                  /* the engine sequence while running; -1 otherwise */
    char *text;               /* generated text; at the end cut before a stop string */
    size_t len, cap;
    size_t sendable;          /* text[0..sendable) can go to the client */
    struct serve_tok *toks;   /* with logprobs */
    size_t n_toks, cap_toks;
    int n_gen;                /* tokens sampled (not counting an end-of-generation token) */
    int n_cached;             /* prompt tokens reused from a slot's cache */
    const char *finish;       /* "stop", "length"; NULL while running */
    struct serve_error err;   /* status != 0: it failed */
    double t_start, t_first, t_end; /* admitted, first token sampled, finished */
    size_t stop_from;         /* serve_stop_find's `from` */

    /* engine thread only */
    struct tok_decoder *dec;

    /* any thread */
    atomic_int cancelled;     /* the client left or timed out: the engine drops the job at its next step */

    pthread_cond_t cond;      /* with srv->mu: the engine published text or finished */
    int refs;                 /* under srv->mu */
    struct serve_job *next;   /* the queue */
};

/* Counters and gauges for /metrics, under srv->mu. */
struct serve_metrics {
    uint64_t requests[600];   /* answered, by HTTP status (index = status) */
    uint64_t prompt_tokens, gen_tokens, cached_tokens;
    uint64_t rejected_queue_full, cancelled, timeouts;
    uint64_t worker_restarts;
    uint64_t steps;
    int running, queued;
    size_t kv_tokens;         /* tokens in the KV caches of open sequences */
    size_t kv_bytes;
    double started;
    /* generated tokens per second over the last seconds: one bucket per second */
    uint64_t tps_bucket[16];
    long tps_sec[16];
};

struct serve_opts {
    const char *host;
    int port;
    const char *api_key;      /* NULL: none */
    const char *alias;        /* the model's name in /v1/models; NULL: the file's */
    int queue_max;            /* jobs waiting beyond the running ones */
    double timeout_s;         /* per request, from arrival to the last byte */
    int default_max_tokens;   /* -n */
    struct sampler_params sp; /* the server's sampling defaults */
    struct engine_opts eng;
};

struct serve {
    struct serve_opts o;
    struct engine e;
    atomic_int loaded;        /* 1 once the engine is open (release); then e.tok, e.n_ctx are read-only */
    atomic_int failed;        /* engine_open failed: the server exits */
    atomic_int stopping;
    char load_err[1024];
    const char *chat_template;/* from the model, NULL: none */
    char model_name[256];
    uint8_t key_hash[32];     /* sha256 of the API key */
    int has_key;

    pthread_mutex_t mu;
    pthread_cond_t work;      /* the engine thread waits here for jobs */
    struct serve_job *q_head, *q_tail;
    int q_len;
    struct serve_job **active;/* [n_seq] by sequence id, engine thread (under mu) */
    struct serve_metrics m;
    pthread_t engine_thread;
    int engine_started;
    int wake_fd[2];           /* written on fatal errors and signals: the main thread leaves */
};

/* serve_engine.c */
int serve_engine_start(struct serve *s);
void serve_engine_stop(struct serve *s);
/* Queues a job (takes a reference for the engine). 0, or -1 with err (503 queue full). */
int serve_submit(struct serve *s, struct serve_job *j, struct serve_error *err);
/* The client is gone or timed out: the engine closes the sequence at its next step. */
void serve_cancel(struct serve *s, struct serve_job *j);
struct serve_job *serve_job_new(void);
/* Drops a reference (under srv->mu); frees at zero. */
void serve_job_unref_locked(struct serve_job *j);
void serve_count_status(struct serve *s, int status);
/* Prometheus text of the metrics (caller frees). */
char *serve_metrics_text(struct serve *s);

/* serve_out.c: JSON answers, as malloc'd compact strings (NULL: out of memory). */
char *serve_error_json(const struct serve_error *e);
/* The whole answer of a finished job (non-streaming). */
char *serve_final_json(const struct serve *s, const struct serve_job *j);
/* A streaming chunk: text[from..to) and toks[tok_from..tok_to); first: the
 * chat chunk that carries the role; final: the one with finish_reason. */
char *serve_chunk_json(const struct serve *s, const struct serve_job *j, size_t from, size_t to, size_t tok_from,
                       size_t tok_to, int first, int final);
/* The usage-only chunk of stream_options.include_usage. */
char *serve_usage_chunk_json(const struct serve *s, const struct serve_job *j);
char *serve_models_json(const struct serve *s);
char *serve_props_json(const struct serve *s);
/* /tokenize and /detokenize; NULL with err on a bad request. */
char *serve_tokenize_json(const struct serve *s, const struct serve_request *r, struct serve_error *err);
char *serve_detokenize_json(const struct serve *s, const struct serve_request *r, struct serve_error *err);
/* Renders and tokenizes a chat or completion request into j->prompt. 0, or -1 with err. */
int serve_build_prompt(const struct serve *s, struct serve_job *j, struct serve_error *err);

/* serve_http.c */
struct MHD_Daemon;
struct MHD_Daemon *serve_http_start(struct serve *s, char *err, size_t errlen);
void serve_http_stop(struct MHD_Daemon *d);

#endif
