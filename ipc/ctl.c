/* ctl: see ctl.h. */
#include "ctl.h"
#include "idle.h"
#include "ipc.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* ---- envelopes ---------------------------------------------------------- */

static int ct_equal(const uint8_t *a, const uint8_t *b, size_t n) {
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++) d |= (uint8_t)(a[i] ^ b[i]);
    return d == 0;
}

Hearth__Envelope *ctl_env_check(const uint8_t *buf, size_t len, const uint8_t token[CTL_TOKEN_BYTES],
                                char *why, size_t whylen) {
    if (len > CTL_MAX_MSG) {
        snprintf(why, whylen, "frame of %zu bytes, limit %u", len, CTL_MAX_MSG);
        return NULL;
    }
    Hearth__Envelope *env = hearth__envelope__unpack(NULL, len, buf);
    if (!env) {
        snprintf(why, whylen, "%zu bytes that do not unpack as hearth.Envelope", len);
        return NULL;
    }
    if (env->session_token.len != CTL_TOKEN_BYTES ||
        !ct_equal(env->session_token.data, token, CTL_TOKEN_BYTES)) {
        snprintf(why, whylen, "%s session token (%zu bytes)",
                 env->session_token.len ? "wrong" : "missing", env->session_token.len);
        ctl_env_free(env);
        return NULL;
    }
    if (env->version != HEARTH_PROTOCOL_VERSION) {
        snprintf(why, whylen, "protocol version %u, we speak %u", env->version,
                 HEARTH_PROTOCOL_VERSION);
        ctl_env_free(env);
        return NULL;
    }
    if (env->body_case == HEARTH__ENVELOPE__BODY__NOT_SET) {
        snprintf(why, whylen, "envelope without a body (unknown message kind?)");
        ctl_env_free(env);
        return NULL;
    }
    return env;
}

uint8_t *ctl_env_pack(const Hearth__Envelope *env, size_t *len) {
    size_t n = hearth__envelope__get_packed_size(env);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return NULL;
    *len = hearth__envelope__pack(env, buf);
    return buf;
}

void ctl_env_free(Hearth__Envelope *env) {
    if (env) hearth__envelope__free_unpacked(env, NULL);
}

int ctl_strdup(char **field, const char *s) {
    char *p = strdup(s ? s : "");
    if (!p) return IPC_ERR;
    if (*field && *field != protobuf_c_empty_string) free(*field);
    *field = p;
    return 0;
}

/* An envelope whose body is a fresh, initialized message of `size` bytes. */
static Hearth__Envelope *env_new(Hearth__Envelope__BodyCase which, size_t size,
                                 void (*init)(void *), void **body) {
    Hearth__Envelope *env = malloc(sizeof *env);
    void *m = malloc(size);
    if (!env || !m) {
        free(env);
        free(m);
        return NULL;
    }
    hearth__envelope__init(env);
    init(m);
    env->body_case = which;
    /* The oneof members share one union slot, so any member stores the pointer. */
    env->hello = m;
    *body = m;
    return env;
}

#define ENV_NEW(CASE, Type, lower, var)                                                          \
    Type *var;                                                                                   \
    Hearth__Envelope *env = env_new(HEARTH__ENVELOPE__BODY_##CASE, sizeof(Type),                 \
                                    (void (*)(void *))hearth__##lower##__init, (void **)&var);  \
    if (!env) return NULL

Hearth__Envelope *ctl_env_hello(const char *role, int32_t pid, const char *const *caps,
                                size_t n_caps, const char *topology) {
    ENV_NEW(HELLO, Hearth__Hello, hello, h);
    h->pid = pid;
    h->protocol_version = HEARTH_PROTOCOL_VERSION;
    if (ctl_strdup(&h->role, role) || ctl_strdup(&h->topology, topology)) goto fail;
    if (n_caps) {
        h->capabilities = calloc(n_caps, sizeof *h->capabilities);
        if (!h->capabilities) goto fail;
        for (size_t i = 0; i < n_caps; i++) {
            h->capabilities[i] = strdup(caps[i] ? caps[i] : "");
            if (!h->capabilities[i]) goto fail;
            h->n_capabilities = i + 1;
        }
    }
    return env;
fail:
    ctl_env_free(env);
    return NULL;
}

Hearth__Envelope *ctl_env_assign(void) {
    ENV_NEW(ASSIGN, Hearth__Assign, assign, a);
    (void)a;
    return env;
}

Hearth__Envelope *ctl_env_step(uint64_t step_id, uint32_t n_tokens, uint32_t pos0, uint32_t flags) {
    ENV_NEW(STEP, Hearth__Step, step, s);
    s->step_id = step_id;
    s->n_tokens = n_tokens;
    s->pos0 = pos0;
    s->flags = flags;
    return env;
}

int ctl_env_step_tokens(Hearth__Envelope *env, const int32_t *tokens, size_t n) {
    if (!env || env->body_case != HEARTH__ENVELOPE__BODY_STEP || env->step->token_ids) return IPC_EINVAL;
    if (n == 0) return IPC_OK;
    int32_t *ids = malloc(n * sizeof *ids);
    if (!ids) return IPC_ERR;
    memcpy(ids, tokens, n * sizeof *ids);
    env->step->token_ids = ids;
    env->step->n_token_ids = n;
    return IPC_OK;
}

Hearth__Envelope *ctl_env_ready(const char *role) {
    ENV_NEW(READY, Hearth__Ready, ready, r);
    if (ctl_strdup(&r->role, role)) {
        ctl_env_free(env);
        return NULL;
    }
    return env;
}

Hearth__Envelope *ctl_env_step_done(uint64_t step_id, const uint64_t *layer_ns, size_t n_layers,
                                    uint64_t total_ns) {
    ENV_NEW(STEP_DONE, Hearth__StepDone, step_done, d);
    d->step_id = step_id;
    d->total_ns = total_ns;
    if (n_layers) {
        d->layer_ns = malloc(n_layers * sizeof *d->layer_ns);
        if (!d->layer_ns) {
            ctl_env_free(env);
            return NULL;
        }
        memcpy(d->layer_ns, layer_ns, n_layers * sizeof *d->layer_ns);
        d->n_layer_ns = n_layers;
    }
    return env;
}

Hearth__Envelope *ctl_env_heartbeat(uint64_t seq, uint64_t mono_ns) {
    ENV_NEW(HEARTBEAT, Hearth__Heartbeat, heartbeat, h);
    h->seq = seq;
    h->mono_ns = mono_ns;
    return env;
}

Hearth__Envelope *ctl_env_stats(void) {
    ENV_NEW(STATS, Hearth__Stats, stats, s);
    (void)s;
    return env;
}

Hearth__Envelope *ctl_env_shutdown(const char *reason) {
    ENV_NEW(SHUTDOWN, Hearth__Shutdown, shutdown, s);
    if (ctl_strdup(&s->reason, reason)) {
        ctl_env_free(env);
        return NULL;
    }
    return env;
}

/* n initialised messages of one type, each malloc'd as protobuf-c's unpacker
 * would (so ctl_env_free frees them), in a malloc'd array; NULL when out of memory. */
static void **msgs_new(size_t n, size_t size, void (*init)(void *)) {
    void **v = calloc(n ? n : 1, sizeof *v);
    if (!v) return NULL;
    for (size_t i = 0; i < n; i++) {
        v[i] = malloc(size);
        if (!v[i]) {
            for (size_t j = 0; j < i; j++) free(v[j]);
            free(v);
            return NULL;
        }
        init(v[i]);
    }
    return v;
}

static void msgs_free(void **v, size_t n) {
    for (size_t i = 0; i < n; i++) protobuf_c_message_free_unpacked(v[i], NULL);
    free(v);
}

int ctl_step_spans_new(Hearth__Step *s, size_t n) {
    void **v = msgs_new(n, sizeof(Hearth__Span), (void (*)(void *))hearth__span__init);
    if (!v) return IPC_ERR;
    msgs_free((void **)s->spans, s->n_spans);
    s->spans = (Hearth__Span **)v;
    s->n_spans = n;
    return 0;
}

int ctl_shards_new(Hearth__Assign *a, size_t n) {
    void **v = msgs_new(n, sizeof(Hearth__Shard), (void (*)(void *))hearth__shard__init);
    if (!v) return IPC_ERR;
    msgs_free((void **)a->shards, a->n_shards);
    a->shards = (Hearth__Shard **)v;
    a->n_shards = n;
    return 0;
}

int ctl_rings_new(Hearth__Assign *a, size_t n) {
    void **v = msgs_new(n, sizeof(Hearth__RingRef), (void (*)(void *))hearth__ring_ref__init);
    if (!v) return IPC_ERR;
    msgs_free((void **)a->rings, a->n_rings);
    a->rings = (Hearth__RingRef **)v;
    a->n_rings = n;
    return 0;
}

/* ---- sockets ------------------------------------------------------------ */

static int sock_open(void **zctx, int *own_ctx, void **sock, int type, const char *endpoint,
                     int bind, char *err, size_t errlen) {
    if (!*zctx) {
        *zctx = zmq_ctx_new();
        if (!*zctx) {
            snprintf(err, errlen, "ctl: zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
            return IPC_ERR;
        }
        *own_ctx = 1;
    }
    *sock = zmq_socket(*zctx, type);
    if (!*sock) {
        snprintf(err, errlen, "ctl: zmq_socket: %s", zmq_strerror(zmq_errno()));
        return IPC_ERR;
    }
    int linger = 0;
    int64_t maxmsg = 4 * (int64_t)CTL_MAX_MSG;
    zmq_setsockopt(*sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(*sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (type == ZMQ_ROUTER) {
        int one = 1; /* unknown peer: an error, not a silent drop */
        zmq_setsockopt(*sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    }
    int rc = bind ? zmq_bind(*sock, endpoint) : zmq_connect(*sock, endpoint);
    if (rc != 0) {
        snprintf(err, errlen, "ctl: %s %s: %s", bind ? "bind" : "connect", endpoint,
                 zmq_strerror(zmq_errno()));
        return IPC_ERR;
    }
    return 0;
}

static void sock_close(void **zctx, int *own_ctx, void **sock) {
    if (*sock) zmq_close(*sock);
    if (*own_ctx && *zctx) zmq_ctx_term(*zctx);
    *sock = NULL;
    *zctx = NULL;
    *own_ctx = 0;
}

/* Receives one whole multipart message: the first two frames are kept in
 * parts[0..1] (initialized by the caller), *n_parts counts all of them.
 * 0, IPC_ETIMEDOUT or IPC_ERR. */
static int recv_parts(void *sock, zmq_msg_t parts[2], int *n_parts, uint64_t deadline_ns) {
    for (;;) {
        uint64_t now = idle_now_ns();
        long wait_ms = -1;
        if (deadline_ns != UINT64_MAX)
            wait_ms = now >= deadline_ns ? 0 : (long)((deadline_ns - now + 999999u) / 1000000u);
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&it, 1, wait_ms);
        if (n < 0 && zmq_errno() != EINTR) return IPC_ERR;
        if (n > 0) break;
        if (deadline_ns != UINT64_MAX && idle_now_ns() >= deadline_ns) return IPC_ETIMEDOUT;
    }
    *n_parts = 0;
    int more;
    do {
        zmq_msg_t scratch;
        zmq_msg_t *m = *n_parts < 2 ? &parts[*n_parts] : &scratch;
        if (m == &scratch) zmq_msg_init(&scratch);
        if (zmq_msg_recv(m, sock, ZMQ_DONTWAIT) < 0) {
            if (m == &scratch) zmq_msg_close(&scratch);
            return *n_parts ? 0 : IPC_ETIMEDOUT; /* poll said ready; treat as spurious */
        }
        more = zmq_msg_more(m);
        if (m == &scratch) zmq_msg_close(&scratch);
        (*n_parts)++;
    } while (more);
    return 0;
}

static void drop(uint64_t *n_dropped, char *last, size_t lastlen, const char *side,
                 const uint8_t *peer, size_t peer_len, const char *why) {
    char hex[2 * 8 + 1] = "";
    for (size_t i = 0; i < peer_len && i < 8; i++) snprintf(hex + 2 * i, 3, "%02x", peer[i]);
    (*n_dropped)++;
    snprintf(last, lastlen, "%s", why);
    log_warn("ctl %s: dropped a message%s%s: %s", side, peer_len ? " from peer " : "", hex, why);
}

static uint64_t deadline_of(int timeout_ms) {
    return timeout_ms < 0 ? UINT64_MAX : idle_now_ns() + (uint64_t)timeout_ms * 1000000u;
}

static int send_env(void *sock, const uint8_t token[CTL_TOKEN_BYTES], const struct ctl_peer *peer,
                    Hearth__Envelope *env) {
    /* Stamp version and token for the packing only: the caller's envelope
     * comes back as it was (its token buffer, if any, is not ours to keep). */
    uint32_t old_version = env->version;
    ProtobufCBinaryData old_token = env->session_token;
    env->version = HEARTH_PROTOCOL_VERSION;
    env->session_token.len = CTL_TOKEN_BYTES;
    env->session_token.data = (uint8_t *)token;
    size_t len = 0;
    uint8_t *buf = ctl_env_pack(env, &len);
    env->version = old_version;
    env->session_token = old_token;
    if (!buf) return IPC_ERR;
    int rc = 0;
    if (peer && zmq_send(sock, peer->id, peer->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) rc = -1;
    if (rc == 0 && zmq_send(sock, buf, len, ZMQ_DONTWAIT) < 0) rc = -1;
    free(buf);
    if (rc == 0) return 0;
    int e = zmq_errno();
    if (e == EHOSTUNREACH) return IPC_ENOENT;
    if (e == EAGAIN) return IPC_EAGAIN;
    return IPC_ERR;
}

int ctl_server_open(struct ctl_server *s, void *zctx, const char *endpoint,
                    const uint8_t token[CTL_TOKEN_BYTES], char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    memcpy(s->token, token, CTL_TOKEN_BYTES);
    s->zctx = zctx;
    int rc = sock_open(&s->zctx, &s->own_ctx, &s->sock, ZMQ_ROUTER, endpoint, 1, err, errlen);
    if (rc) ctl_server_close(s);
    return rc;
}

int ctl_server_recv(struct ctl_server *s, struct ctl_peer *peer, Hearth__Envelope **env,
                    int timeout_ms) {
    uint64_t deadline = deadline_of(timeout_ms);
    *env = NULL;
    for (;;) {
        zmq_msg_t parts[2];
        zmq_msg_init(&parts[0]);
        zmq_msg_init(&parts[1]);
        int n = 0;
        int rc = recv_parts(s->sock, parts, &n, deadline);
        if (rc == 0) {
            const uint8_t *id = zmq_msg_data(&parts[0]);
            size_t id_len = n >= 1 ? zmq_msg_size(&parts[0]) : 0;
            char why[160];
            Hearth__Envelope *e = NULL;
            if (n != 2) {
                snprintf(why, sizeof why, "%d frames, expected 1 after the routing id", n - 1);
            } else if (id_len > CTL_PEER_MAX) {
                snprintf(why, sizeof why, "routing id of %zu bytes", id_len);
            } else {
                e = ctl_env_check(zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), s->token, why,
                                  sizeof why);
            }
            if (e) {
                memcpy(peer->id, id, id_len);
                peer->len = id_len;
                *env = e;
            } else {
                drop(&s->n_dropped, s->last_drop, sizeof s->last_drop, "server", id, id_len, why);
            }
        }
        zmq_msg_close(&parts[0]);
        zmq_msg_close(&parts[1]);
        if (rc) return rc;
        if (*env) return 0;
    }
}

int ctl_server_send(struct ctl_server *s, const struct ctl_peer *peer, Hearth__Envelope *env) {
    return send_env(s->sock, s->token, peer, env);
}

void ctl_server_close(struct ctl_server *s) {
    if (!s) return;
    sock_close(&s->zctx, &s->own_ctx, &s->sock);
}

int ctl_client_open(struct ctl_client *c, void *zctx, const char *endpoint,
                    const uint8_t token[CTL_TOKEN_BYTES], char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    memcpy(c->token, token, CTL_TOKEN_BYTES);
    c->zctx = zctx;
    int rc = sock_open(&c->zctx, &c->own_ctx, &c->sock, ZMQ_DEALER, endpoint, 0, err, errlen);
    if (rc) ctl_client_close(c);
    return rc;
}

int ctl_client_send(struct ctl_client *c, Hearth__Envelope *env) {
    return send_env(c->sock, c->token, NULL, env);
}

int ctl_client_recv(struct ctl_client *c, Hearth__Envelope **env, int timeout_ms) {
    uint64_t deadline = deadline_of(timeout_ms);
    *env = NULL;
    for (;;) {
        zmq_msg_t parts[2];
        zmq_msg_init(&parts[0]);
        zmq_msg_init(&parts[1]);
        int n = 0;
        int rc = recv_parts(c->sock, parts, &n, deadline);
        if (rc == 0) {
            char why[160];
            Hearth__Envelope *e = NULL;
            if (n != 1)
                snprintf(why, sizeof why, "%d frames, expected 1", n);
            else
                e = ctl_env_check(zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]), c->token, why,
                                  sizeof why);
            if (e)
                *env = e;
            else
                drop(&c->n_dropped, c->last_drop, sizeof c->last_drop, "client", NULL, 0, why);
        }
        zmq_msg_close(&parts[0]);
        zmq_msg_close(&parts[1]);
        if (rc) return rc;
        if (*env) return 0;
    }
}

void ctl_client_close(struct ctl_client *c) {
    if (!c) return;
    sock_close(&c->zctx, &c->own_ctx, &c->sock);
}
