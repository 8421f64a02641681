/* bench_ring: what a ring handoff costs, against a plain ZeroMQ message.
 *
 *   bench_ring [--smoke]
 *
 * Two processes (fork). For 2 KiB (one token's activations, d_model 512
 * floats) and 1 MiB (a prefill batch) payloads:
 *   latency    ping-pong through two rings (or a ZeroMQ PAIR over ipc://),
 *              one-way = round trip / 2, median of all round trips;
 *   throughput one side pushes N messages, the other pops them, then acks.
 * Ring modes: "spin" (consumer busy-polls, idle_spin) and "park" (consumer
 * blocks on its doorbell at once, idle_park: every message pays a wakeup).
 * Every message is copied in by the sender and out by the receiver, for
 * the ring as for ZeroMQ. --smoke: a few messages each, to test the bench. */
#include "doorbell.h"
#include "idle.h"
#include "ipc.h"
#include "ring.h"
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

enum mode { M_SPIN, M_PARK, M_ZMQ };
static const char *mode_name[] = {"ring spin", "ring park", "zmq ipc PAIR"};

struct chan { /* one direction */
    void *mem;
    size_t size;
    char bell[IPC_PATH_MAX + 32];
};

struct ends {
    struct ring r;
    struct doorbell d;
    int consumer;
};

static int ends_open(struct ends *e, struct chan *c, int consumer) {
    char err[256];
    e->consumer = consumer;
    if (ring_attach(&e->r, c->mem, c->size, err, sizeof err) ||
        (consumer ? doorbell_bind(&e->d, NULL, c->bell, err, sizeof err)
                  : doorbell_connect(&e->d, NULL, c->bell, err, sizeof err))) {
        fprintf(stderr, "bench_ring: %s\n", err);
        return -1;
    }
    return 0;
}

static const struct idle_strategy *strat(enum mode m) { return m == M_SPIN ? &idle_spin : &idle_park; }

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Child side of a ring run: echo (latency) or drain (throughput). */
static void ring_child(enum mode m, struct chan *ab, struct chan *ba, size_t size, int n, int echo) {
    struct ends in, out;
    if (ends_open(&in, ab, 1) || ends_open(&out, ba, 0)) _exit(1);
    unsigned char *buf = malloc(size);
    uint32_t len;
    for (int i = 0; i < n; i++) {
        if (ring_wait_pop(&in.r, &in.d, strat(m), 10000, buf, (uint32_t)size, &len)) _exit(2);
        if (echo && ring_push_notify(&out.r, &out.d, buf, len, &idle_spin, 10000)) _exit(3);
    }
    if (!echo && ring_push_notify(&out.r, &out.d, buf, 1, &idle_spin, 10000)) _exit(3);
    doorbell_close(&in.d);
    doorbell_close(&out.d);
    free(buf);
    _exit(0);
}

static void zmq_child(const char *ep, size_t size, int n, int echo) {
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_PAIR);
    if (zmq_bind(s, ep)) _exit(1);
    unsigned char *buf = malloc(size);
    for (int i = 0; i < n; i++) {
        int got = zmq_recv(s, buf, size, 0);
        if (got < 0) _exit(2);
        if (echo && zmq_send(s, buf, (size_t)got, 0) < 0) _exit(3);
    }
    if (!echo) zmq_send(s, buf, 1, 0);
    zmq_close(s);
    zmq_ctx_term(ctx);
    free(buf);
    _exit(0);
}

/* Returns the median one-way latency (ns) or the throughput (msgs/s). */
static double run(enum mode m, struct ipc_session *ses, size_t size, int n, int echo, int idx) {
    static struct chan ab, ba;
    char ep[IPC_PATH_MAX + 32], err[256];
    snprintf(ep, sizeof ep, "b%d", idx);
    if (m != M_ZMQ) {
        size_t rb = ring_bytes((uint32_t)size, 4);
        struct chan *cs[2] = {&ab, &ba};
        for (int k = 0; k < 2; k++) {
            struct chan *c = cs[k];
            c->size = rb;
            c->mem = mmap(NULL, rb, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
            struct ring r;
            if (c->mem == MAP_FAILED || ring_init(&r, c->mem, rb, (uint32_t)size, 4, err, sizeof err)) {
                fprintf(stderr, "bench_ring: ring: %s\n", err);
                exit(1);
            }
            char what[32];
            snprintf(what, sizeof what, "b%d-%d.bell", idx, k);
            ipc_session_endpoint(ses, what, c->bell, sizeof c->bell);
        }
    } else {
        char what[32];
        snprintf(what, sizeof what, "b%d.zmq", idx);
        ipc_session_endpoint(ses, what, ep, sizeof ep);
    }
    pid_t pid = fork();
    if (pid == 0) {
        if (m == M_ZMQ) zmq_child(ep, size, n, echo);
        ring_child(m, &ab, &ba, size, n, echo);
    }
    unsigned char *buf = malloc(size);
    memset(buf, 0x5a, size);
    uint64_t *rt = calloc((size_t)n, sizeof *rt);
    struct ends out = {0}, in = {0};
    void *ctx = NULL, *s = NULL;
    if (m == M_ZMQ) {
        ctx = zmq_ctx_new();
        s = zmq_socket(ctx, ZMQ_PAIR);
        zmq_connect(s, ep);
    } else if (ends_open(&out, &ab, 0) || ends_open(&in, &ba, 1)) {
        exit(1);
    }
    /* Warm up the connection (ZeroMQ connects asynchronously). */
    uint64_t t0 = idle_now_ns();
    uint32_t len;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        uint64_t t = idle_now_ns();
        if (m == M_ZMQ) {
            if (zmq_send(s, buf, size, 0) < 0) bad = 1;
            if (echo && zmq_recv(s, buf, size, 0) < 0) bad = 1;
        } else {
            if (ring_push_notify(&out.r, &out.d, buf, (uint32_t)size, &idle_spin, 10000)) bad = 1;
            if (echo && ring_wait_pop(&in.r, &in.d, strat(m), 10000, buf, (uint32_t)size, &len)) bad = 1;
        }
        rt[i] = idle_now_ns() - t;
    }
    if (!echo) {
        if (m == M_ZMQ) bad |= zmq_recv(s, buf, size, 0) < 0;
        else bad |= ring_wait_pop(&in.r, &in.d, &idle_spin, 10000, buf, (uint32_t)size, &len) != 0;
    }
    double total_s = (double)(idle_now_ns() - t0) / 1e9;
    int st = 0;
    waitpid(pid, &st, 0);
    if (bad || !WIFEXITED(st) || WEXITSTATUS(st)) {
        fprintf(stderr, "bench_ring: %s run failed (child status %d)\n", mode_name[m], st);
        exit(1);
    }
    double result;
    if (echo) {
        /* Skip the first tenth: connection setup and cold caches. */
        int skip = n / 10;
        qsort(rt + skip, (size_t)(n - skip), sizeof *rt, cmp_u64);
        result = (double)rt[skip + (n - skip) / 2] / 2.0;
    } else {
        result = n / total_s;
    }
    if (m == M_ZMQ) {
        zmq_close(s);
        zmq_ctx_term(ctx);
    } else {
        doorbell_close(&out.d);
        doorbell_close(&in.d);
        munmap(ab.mem, ab.size);
        munmap(ba.mem, ba.size);
    }
    free(rt);
    free(buf);
    return result;
}

int main(int argc, char **argv) {
    int smoke = argc > 1 && !strcmp(argv[1], "--smoke");
    char root[] = "/tmp/hearth-bench-ring-XXXXXX", err[256];
    struct ipc_session ses;
    if (!mkdtemp(root) || ipc_session_create(&ses, root, err, sizeof err)) {
        fprintf(stderr, "bench_ring: session: %s\n", err);
        return 1;
    }
    const size_t sizes[2] = {2048, 1u << 20};
    printf("%-13s %8s %14s %14s %12s\n", "transport", "payload", "one-way p50", "throughput", "bandwidth");
    int idx = 0;
    for (int si = 0; si < 2; si++) {
        size_t size = sizes[si];
        int n_lat = smoke ? 10 : (si == 0 ? 20000 : 400);
        int n_tput = smoke ? 10 : (si == 0 ? 200000 : 2000);
        for (int m = 0; m < 3; m++) {
            double lat = run((enum mode)m, &ses, size, n_lat, 1, idx++);
            double tput = run((enum mode)m, &ses, size, n_tput, 0, idx++);
            printf("%-13s %7zuK %11.2f us %9.0f msg/s %7.2f GB/s\n", mode_name[m], size / 1024, lat / 1e3,
                   tput, tput * (double)size / 1e9);
            fflush(stdout);
        }
    }
    ipc_session_destroy(&ses);
    rmdir(root);
    return 0;
}
