/* test_ctl: the control channel (ipc/ctl.h, proto/hearth.proto).
 *
 * Round trips of every message kind between a ROUTER server and a DEALER
 * client; proto3's skipping of unknown fields; and a server that refuses,
 * logs and survives what strangers send it: no token, a wrong token, a
 * wrong version, garbage bytes, a truncated protobuf, an empty frame, a
 * frame over the size limit, extra frames. After each, the legitimate
 * client is still served. */
#include "ctl.h"
#include "ipc.h"
#include "log.h"
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

static int g_fail;
#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
            g_fail++;                                                          \
        }                                                                      \
    } while (0)

static const uint64_t SEED = 77031;

static void test_unknown_fields(const uint8_t *token) {
    Hearth__Envelope *e = ctl_env_step(42, 7, 100, HEARTH__STEP_FLAG__STEP_FLAG_PREFILL);
    CHECK(e != NULL, "build");
    if (!e) return;
    e->version = HEARTH_PROTOCOL_VERSION;
    e->session_token.len = CTL_TOKEN_BYTES;
    e->session_token.data = (uint8_t *)token;
    size_t len = 0;
    uint8_t *buf = ctl_env_pack(e, &len);
    e->session_token.len = 0;
    e->session_token.data = NULL;
    ctl_env_free(e);
    CHECK(buf != NULL, "pack");
    if (!buf) return;
    /* Append field 99 (varint 1) and field 100 (length-delimited "hi"): a
     * newer peer's fields that this build does not know. */
    uint8_t extra[] = {0x98, 0x06, 0x01, 0xa2, 0x06, 0x02, 'h', 'i'};
    uint8_t *big = realloc(buf, len + sizeof extra);
    CHECK(big != NULL, "realloc");
    if (!big) {
        free(buf);
        return;
    }
    memcpy(big + len, extra, sizeof extra);
    char why[160] = "";
    Hearth__Envelope *got = ctl_env_check(big, len + sizeof extra, token, why, sizeof why);
    CHECK(got != NULL, "unknown fields refused: %s", why);
    if (got) {
        CHECK(got->body_case == HEARTH__ENVELOPE__BODY_STEP && got->step->step_id == 42 &&
                  got->step->n_tokens == 7 && got->step->pos0 == 100 && got->step->flags == 1,
              "fields changed");
        ctl_env_free(got);
    }
    /* The same bytes cut short do not parse. */
    got = ctl_env_check(big, len + sizeof extra - 1, token, why, sizeof why);
    CHECK(got == NULL, "truncated unknown field accepted");
    free(big);
}

/* A raw DEALER that sends whatever frames it is given. */
static void raw_send(void *sock, const void *a, size_t alen, const void *b, size_t blen) {
    zmq_send(sock, a, alen, b ? ZMQ_SNDMORE : 0);
    if (b) zmq_send(sock, b, blen, 0);
}

/* The server must drop exactly one message now (within 2 s), then still
 * serve the legitimate client: a Heartbeat goes and comes back. */
static void expect_dropped_then_served(struct ctl_server *srv, struct ctl_client *cli, const char *what,
                                       uint64_t *seq) {
    uint64_t before = srv->n_dropped;
    struct ctl_peer peer;
    Hearth__Envelope *env = NULL;
    for (int i = 0; i < 40 && srv->n_dropped == before; i++) {
        int rc = ctl_server_recv(srv, &peer, &env, 50);
        CHECK(rc == IPC_ETIMEDOUT, "%s: the caller saw it (rc %d)", what, rc);
        if (env) {
            ctl_env_free(env);
            env = NULL;
        }
    }
    CHECK(srv->n_dropped == before + 1, "%s: dropped %llu, want 1", what,
          (unsigned long long)(srv->n_dropped - before));
    printf("  refused %-22s -> %s\n", what, srv->last_drop);
    Hearth__Envelope *hb = ctl_env_heartbeat(++*seq, 123);
    CHECK(hb && ctl_client_send(cli, hb) == 0, "%s: client send", what);
    ctl_env_free(hb);
    int rc = ctl_server_recv(srv, &peer, &env, 2000);
    CHECK(rc == 0 && env && env->body_case == HEARTH__ENVELOPE__BODY_HEARTBEAT && env->heartbeat->seq == *seq,
          "%s: server stopped serving (rc %d)", what, rc);
    if (env) {
        CHECK(ctl_server_send(srv, &peer, env) == 0, "%s: echo", what);
        ctl_env_free(env);
        env = NULL;
        rc = ctl_client_recv(cli, &env, 2000);
        CHECK(rc == 0 && env && env->heartbeat->seq == *seq, "%s: echo back (rc %d)", what, rc);
        ctl_env_free(env);
    }
}

int main(void) {
    log_set_role("test_ctl");
    printf("test_ctl: seed %llu\n", (unsigned long long)SEED);
    char err[256], root[] = "/tmp/hearth-test-ctl-XXXXXX";
    struct ipc_session ses;
    if (!mkdtemp(root) || ipc_session_create(&ses, root, err, sizeof err)) {
        fprintf(stderr, "FAIL: session: %s\n", err);
        return 1;
    }
    test_unknown_fields(ses.token);

    char ep[IPC_PATH_MAX + 32];
    ipc_session_endpoint(&ses, "ctl", ep, sizeof ep);
    void *zctx = zmq_ctx_new();
    struct ctl_server srv;
    struct ctl_client cli;
    int rc = ctl_server_open(&srv, zctx, ep, ses.token, err, sizeof err);
    CHECK(rc == 0, "%s", err);
    struct ipc_session w;
    CHECK(ipc_session_attach(&w, root, ses.id, err, sizeof err) == 0, "%s", err);
    rc |= ctl_client_open(&cli, zctx, ep, w.token, err, sizeof err);
    CHECK(rc == 0, "%s", err);
    if (rc) return 1;

    /* Round trips. */
    const char *caps[] = {"avx2", "host"};
    Hearth__Envelope *e = ctl_env_hello("cpu1", 4242, caps, 2, "node0: 2 cores");
    CHECK(e && ctl_client_send(&cli, e) == 0, "send hello");
    ctl_env_free(e);
    struct ctl_peer peer;
    Hearth__Envelope *got = NULL;
    rc = ctl_server_recv(&srv, &peer, &got, 2000);
    CHECK(rc == 0 && got && got->body_case == HEARTH__ENVELOPE__BODY_HELLO, "hello rc %d", rc);
    if (got) {
        Hearth__Hello *h = got->hello;
        CHECK(!strcmp(h->role, "cpu1") && h->pid == 4242 && h->n_capabilities == 2 &&
                  !strcmp(h->capabilities[1], "host") && !strcmp(h->topology, "node0: 2 cores") &&
                  h->protocol_version == HEARTH_PROTOCOL_VERSION,
              "hello fields");
        ctl_env_free(got);
    }
    e = ctl_env_assign();
    CHECK(e != NULL, "assign");
    if (e) {
        Hearth__Assign *a = e->assign;
        CHECK(ctl_strdup(&a->model_path, "/m/x.gguf") == 0 && ctl_strdup(&a->cpuset, "0-1") == 0 &&
                  ctl_shards_new(a, 3) == 0 && ctl_rings_new(a, 2) == 0,
              "fill");
        a->n_threads = 2;
        a->hot_fraction = 0.25f;
        for (uint32_t l = 0; l < 3; l++) {
            a->shards[l]->layer = l;
            a->shards[l]->first_neuron = 100 * l;
            a->shards[l]->end_neuron = 100 * l + 37;
        }
        ctl_strdup(&a->rings[1]->name, "ffn_out.cpu1");
        a->rings[1]->offset = 4096;
        a->rings[1]->produce = 1;
        CHECK(ctl_server_send(&srv, &peer, e) == 0, "send assign");
        ctl_env_free(e);
        rc = ctl_client_recv(&cli, &got, 2000);
        CHECK(rc == 0 && got && got->body_case == HEARTH__ENVELOPE__BODY_ASSIGN, "assign rc %d", rc);
        if (got) {
            a = got->assign;
            CHECK(!strcmp(a->model_path, "/m/x.gguf") && a->n_threads == 2 && a->hot_fraction == 0.25f &&
                      a->n_shards == 3 && a->shards[2]->end_neuron == 237 && a->n_rings == 2 &&
                      !strcmp(a->rings[1]->name, "ffn_out.cpu1") && a->rings[1]->produce &&
                      !strcmp(a->rings[0]->name, ""),
                  "assign fields");
            ctl_env_free(got);
        }
    }
    uint64_t ns[5] = {1, 2, 3, 4, 5000000000ull};
    Hearth__Envelope *kinds[] = {ctl_env_step(9, 3, 17, 2), ctl_env_step_done(9, ns, 5, 77),
                                 ctl_env_stats(), ctl_env_shutdown("bye")};
    for (int i = 0; i < 4; i++) {
        CHECK(kinds[i] && ctl_client_send(&cli, kinds[i]) == 0, "send kind %d", i);
        rc = ctl_server_recv(&srv, &peer, &got, 2000);
        CHECK(rc == 0 && got && got->body_case == kinds[i]->body_case, "kind %d rc %d", i, rc);
        if (got && got->body_case == HEARTH__ENVELOPE__BODY_STEP_DONE)
            CHECK(got->step_done->n_layer_ns == 5 && got->step_done->layer_ns[4] == ns[4], "timings");
        if (got && got->body_case == HEARTH__ENVELOPE__BODY_SHUTDOWN)
            CHECK(!strcmp(got->shutdown->reason, "bye"), "reason");
        ctl_env_free(got);
        ctl_env_free(kinds[i]);
    }
    struct ctl_peer nobody = {{1, 2, 3}, 3};
    e = ctl_env_heartbeat(1, 1);
    CHECK(ctl_server_send(&srv, &nobody, e) == IPC_ENOENT, "send to an unknown peer");
    ctl_env_free(e);

    /* Strangers. A raw DEALER can send anything. */
    void *raw = zmq_socket(zctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(raw, ZMQ_LINGER, &zero, sizeof zero);
    CHECK(zmq_connect(raw, ep) == 0, "raw connect");
    uint64_t seq = 0;
    uint8_t wrong[CTL_TOKEN_BYTES];
    memcpy(wrong, ses.token, sizeof wrong);
    wrong[CTL_TOKEN_BYTES - 1] ^= 1;

    struct ctl_client stranger;
    CHECK(ctl_client_open(&stranger, zctx, ep, wrong, err, sizeof err) == 0, "%s", err);
    e = ctl_env_hello("evil", 1, NULL, 0, "");
    ctl_client_send(&stranger, e);
    expect_dropped_then_served(&srv, &cli, "wrong token", &seq);

    size_t len;
    uint8_t *buf = ctl_env_pack(e, &len); /* no token, version 0 */
    raw_send(raw, buf, len, NULL, 0);
    expect_dropped_then_served(&srv, &cli, "no token", &seq);
    free(buf);

    e->version = HEARTH_PROTOCOL_VERSION + 1;
    e->session_token.len = CTL_TOKEN_BYTES;
    e->session_token.data = ses.token;
    buf = ctl_env_pack(e, &len);
    raw_send(raw, buf, len, NULL, 0);
    expect_dropped_then_served(&srv, &cli, "future version", &seq);
    free(buf);

    e->version = HEARTH_PROTOCOL_VERSION;
    buf = ctl_env_pack(e, &len);
    raw_send(raw, buf, len / 2, NULL, 0);
    expect_dropped_then_served(&srv, &cli, "truncated protobuf", &seq);
    raw_send(raw, buf, len, buf, len);
    expect_dropped_then_served(&srv, &cli, "two frames", &seq);
    free(buf);
    e->session_token.len = 0;
    e->session_token.data = NULL;
    ctl_env_free(e);

    uint8_t garbage[997];
    uint64_t s = SEED;
    for (size_t i = 0; i < sizeof garbage; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        garbage[i] = (uint8_t)(s >> 56);
    }
    garbage[0] = 0xff; /* field 31, wire type 7: never valid */
    raw_send(raw, garbage, sizeof garbage, NULL, 0);
    expect_dropped_then_served(&srv, &cli, "garbage bytes", &seq);

    raw_send(raw, "", 0, NULL, 0);
    expect_dropped_then_served(&srv, &cli, "empty frame", &seq);

    size_t huge_len = CTL_MAX_MSG + 4096;
    uint8_t *huge = calloc(1, huge_len);
    CHECK(huge != NULL, "alloc");
    if (huge) {
        raw_send(raw, huge, huge_len, NULL, 0);
        expect_dropped_then_served(&srv, &cli, "huge frame", &seq);
        free(huge);
    }
    /* A server of another session (another token) refuses our client. */
    struct ctl_server other;
    char ep2[IPC_PATH_MAX + 32];
    ipc_session_endpoint(&ses, "ctl2", ep2, sizeof ep2);
    CHECK(ctl_server_open(&other, zctx, ep2, wrong, err, sizeof err) == 0, "%s", err);
    struct ctl_client victim;
    CHECK(ctl_client_open(&victim, zctx, ep2, ses.token, err, sizeof err) == 0, "%s", err);
    e = ctl_env_heartbeat(5, 5);
    ctl_client_send(&victim, e);
    CHECK(ctl_server_recv(&other, &peer, &got, 300) == IPC_ETIMEDOUT && other.n_dropped == 1, "other dropped");
    ctl_env_free(e);

    zmq_close(raw);
    ctl_client_close(&victim);
    ctl_server_close(&other);
    ctl_client_close(&stranger);
    ctl_client_close(&cli);
    ctl_server_close(&srv);
    zmq_ctx_term(zctx);
    ipc_session_destroy(&w);
    ipc_session_destroy(&ses);
    rmdir(root);
    if (g_fail) {
        fprintf(stderr, "test_ctl: %d failure(s)\n", g_fail);
        return 1;
    }
    printf("test_ctl: ok (%llu messages refused)\n", (unsigned long long)srv.n_dropped);
    return 0;
}
