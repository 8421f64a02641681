/* ctl: the control channel (proto/hearth.proto) over ZeroMQ.
 *
 * The coordinator binds a ROUTER at `ipc://<session dir>/ctl`; each worker
 * connects a DEALER. One frame = one packed hearth.Envelope; the ROUTER adds
 * the peer's identity frame in front, which ctl_server_recv returns so that
 * ctl_server_send can answer that peer.
 *
 * Trust: the socket file sits in a 0700 folder, so only our user can
 * connect; the session token (32 bytes, the session's `token` file) also
 * keeps out processes of our user that belong to another session or are no
 * hearth at all. Both sides drop, with a log_warn line and never a crash,
 * any frame that: is not exactly [identity][payload] (server) or [payload]
 * (client); is larger than CTL_MAX_MSG; does not unpack; has a token other
 * than ours (compared in constant time); has a version other than
 * HEARTH_PROTOCOL_VERSION; or has no body. The caller never sees them;
 * n_dropped and last_drop tell tests and metrics. Frames far above
 * CTL_MAX_MSG (over ZMQ_MAXMSGSIZE, 4 x CTL_MAX_MSG) make ZeroMQ itself cut
 * the sender's connection, unlogged.
 *
 * Envelopes: every builder below allocates the envelope and everything in
 * it with malloc, exactly as protobuf-c's unpacker does, so ctl_env_free
 * frees built and received envelopes alike. Builders return NULL when out
 * of memory. Send functions fill version and session_token themselves. */
#ifndef HEARTH_CTL_H
#define HEARTH_CTL_H

#include "hearth.pb-c.h"

#include <stddef.h>
#include <stdint.h>

#define HEARTH_PROTOCOL_VERSION 1u
#define CTL_MAX_MSG (1u << 20) /* bytes of one packed envelope */
#define CTL_TOKEN_BYTES 32
#define CTL_PEER_MAX 256       /* ZeroMQ routing ids are at most 255 bytes */

struct ctl_peer {
    uint8_t id[CTL_PEER_MAX];
    size_t len;
};

struct ctl_server {
    void *zctx;
    int own_ctx;
    void *sock; /* ROUTER */
    uint8_t token[CTL_TOKEN_BYTES];
    uint64_t n_dropped;
    char last_drop[160]; /* why the last frame was dropped */
};

struct ctl_client {
    void *zctx;
    int own_ctx;
    void *sock; /* DEALER */
    uint8_t token[CTL_TOKEN_BYTES];
    uint64_t n_dropped;
    char last_drop[160];
};

/* Coordinator: ROUTER bound at endpoint. zctx NULL: own context. */
int ctl_server_open(struct ctl_server *s, void *zctx, const char *endpoint,
                    const uint8_t token[CTL_TOKEN_BYTES], char *err, size_t errlen);
/* Next valid envelope and its sender; the caller frees it (ctl_env_free).
 * Invalid frames are dropped and the wait goes on within the same timeout.
 * timeout_ms < 0: forever. 0, IPC_ETIMEDOUT or IPC_ERR. */
int ctl_server_recv(struct ctl_server *s, struct ctl_peer *peer, Hearth__Envelope **env,
                    int timeout_ms);
/* Sends env to peer (env stays the caller's). IPC_ENOENT when no such peer
 * is connected, IPC_EAGAIN when its queue is full, IPC_ERR otherwise. */
int ctl_server_send(struct ctl_server *s, const struct ctl_peer *peer, Hearth__Envelope *env);
void ctl_server_close(struct ctl_server *s);

/* Worker: DEALER connected to endpoint. */
int ctl_client_open(struct ctl_client *c, void *zctx, const char *endpoint,
                    const uint8_t token[CTL_TOKEN_BYTES], char *err, size_t errlen);
int ctl_client_send(struct ctl_client *c, Hearth__Envelope *env);
int ctl_client_recv(struct ctl_client *c, Hearth__Envelope **env, int timeout_ms);
void ctl_client_close(struct ctl_client *c);

/* Builders. Strings are copied; NULL strings read as "". */
Hearth__Envelope *ctl_env_hello(const char *role, int32_t pid, const char *const *caps,
                                size_t n_caps, const char *topology);
/* An Assign with every field at its default; fill it with plain stores and
 * ctl_strdup / ctl_shards_new / ctl_rings_new for the allocated ones. */
Hearth__Envelope *ctl_env_assign(void);
Hearth__Envelope *ctl_env_step(uint64_t step_id, uint32_t n_tokens, uint32_t pos0, uint32_t flags);
/* Attaches a copy of the step's n token ids (Step.token_ids). */
int ctl_env_step_tokens(Hearth__Envelope *env, const int32_t *tokens, size_t n);
/* n empty Span messages in a Step (filled by the caller); 0 or IPC_ERR */
int ctl_step_spans_new(Hearth__Step *s, size_t n);
Hearth__Envelope *ctl_env_ready(const char *role);
Hearth__Envelope *ctl_env_step_done(uint64_t step_id, const uint64_t *layer_ns, size_t n_layers,
                                    uint64_t total_ns);
Hearth__Envelope *ctl_env_heartbeat(uint64_t seq, uint64_t mono_ns);
Hearth__Envelope *ctl_env_stats(void); /* all zero; set the fields */
Hearth__Envelope *ctl_env_shutdown(const char *reason);
void ctl_env_free(Hearth__Envelope *env);

/* Allocation helpers for filling an Assign (0 or IPC_ERR when out of
 * memory; on failure the field is left as it was). */
int ctl_strdup(char **field, const char *s);
int ctl_shards_new(Hearth__Assign *a, size_t n);  /* n zeroed Shard messages */
int ctl_rings_new(Hearth__Assign *a, size_t n);   /* n empty RingRef messages */

/* Packs env into a malloc'd buffer (for tests and logs); NULL on failure. */
uint8_t *ctl_env_pack(const Hearth__Envelope *env, size_t *len);

/* Checks a received payload the way both ends do (unpack, version, token,
 * body) and returns the envelope, or NULL with the reason in why. */
Hearth__Envelope *ctl_env_check(const uint8_t *buf, size_t len, const uint8_t token[CTL_TOKEN_BYTES],
                                char *why, size_t whylen);

#endif
