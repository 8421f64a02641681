/* test_ring: the SPSC ring (ipc/ring.h) and its doorbell (ipc/doorbell.h).
 *
 *   test_ring [--threads] [--scale F] [--seed N]
 *
 * Unit checks of layout and edge cases, then a producer and a consumer in
 * two real processes (fork; --threads: two threads, for ThreadSanitizer)
 * pass messages of random sizes up to the slot size through rings of
 * several geometries. Every message carries its sequence number, its length
 * and a checksum of its payload: the consumer fails on anything lost,
 * duplicated, reordered, truncated or corrupted. One geometry runs with a
 * slow producer so that the consumer parks on the doorbell (the sleep
 * path), one with a slow consumer so that the producer waits for room.
 * --scale multiplies the message counts (TSan runs use a fraction). */
#include "doorbell.h"
#include "idle.h"
#include "ipc.h"
#include "ring.h"
#include "session.h"
#include "shm.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
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

static uint64_t g_seed = 20240611;

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Message: [u64 seq][u32 total length][u32 checksum][payload]. */
#define MSG_HDR 16

static uint32_t checksum(const unsigned char *p, size_t n, uint64_t seq) {
    uint64_t h = 0xcbf29ce484222325ull ^ seq;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return (uint32_t)(h ^ (h >> 32));
}

static void fill_msg(unsigned char *m, uint32_t len, uint64_t seq, uint64_t *rs) {
    uint32_t i = MSG_HDR;
    for (; i + 8 <= len; i += 8) {
        uint64_t w = rng_next(rs);
        memcpy(m + i, &w, 8);
    }
    for (; i < len; i++) m[i] = (unsigned char)rng_next(rs);
    uint32_t ck = checksum(m + MSG_HDR, len - MSG_HDR, seq);
    memcpy(m, &seq, 8);
    memcpy(m + 8, &len, 4);
    memcpy(m + 12, &ck, 4);
}

/* 0 when m is message number `expect`, else a description in why. */
static int check_msg(const unsigned char *m, uint32_t len, uint64_t expect, char *why, size_t n) {
    if (len < MSG_HDR) {
        snprintf(why, n, "message %llu: %u bytes, shorter than the header", (unsigned long long)expect, len);
        return -1;
    }
    uint64_t seq;
    uint32_t tlen, ck;
    memcpy(&seq, m, 8);
    memcpy(&tlen, m + 8, 4);
    memcpy(&ck, m + 12, 4);
    if (seq != expect) {
        snprintf(why, n, "expected message %llu, got %llu (lost, duplicated or reordered)",
                 (unsigned long long)expect, (unsigned long long)seq);
        return -1;
    }
    if (tlen != len) {
        snprintf(why, n, "message %llu: slot says %u bytes, message says %u", (unsigned long long)seq, len, tlen);
        return -1;
    }
    if (checksum(m + MSG_HDR, len - MSG_HDR, seq) != ck) {
        snprintf(why, n, "message %llu: checksum mismatch (corrupted payload)", (unsigned long long)seq);
        return -1;
    }
    return 0;
}

/* ---- unit checks ---------------------------------------------------------- */

static void test_units(void) {
    char err[256];
    CHECK(ring_bytes(0, 4) == 0 && ring_bytes(4, 0) == 0, "zero geometry");
    CHECK(ring_bytes(1, 1) == RING_HEADER_BYTES + 64, "%zu", ring_bytes(1, 1));
    CHECK(ring_bytes(56, 3) == RING_HEADER_BYTES + 3 * 64, "56+8 fits one line: %zu", ring_bytes(56, 3));
    CHECK(ring_bytes(57, 3) == RING_HEADER_BYTES + 3 * 128, "57+8 needs two: %zu", ring_bytes(57, 3));
    CHECK(ring_bytes(UINT32_MAX, UINT32_MAX) == 0, "overflow must give 0");

    size_t sz = ring_bytes(100, 3);
    unsigned char *mem = aligned_alloc(64, sz + 64);
    CHECK(mem != NULL, "alloc");
    if (!mem) return;
    struct ring r, c;
    CHECK(ring_init(&r, mem + 8, sz, 100, 3, err, sizeof err) == IPC_EINVAL, "misaligned accepted");
    CHECK(ring_init(&r, mem, sz - 1, 100, 3, err, sizeof err) == IPC_EINVAL, "too small accepted");
    memset(mem, 0, sz);
    CHECK(ring_attach(&c, mem, sz, err, sizeof err) == IPC_ECORRUPT, "zeroed memory attached");
    CHECK(ring_init(&r, mem, sz, 100, 3, err, sizeof err) == 0, "%s", err);
    CHECK(ring_attach(&c, mem, sz - 64, err, sizeof err) == IPC_ECORRUPT, "short attach: %s", err);
    CHECK(ring_attach(&c, mem, sz, err, sizeof err) == 0, "%s", err);

    unsigned char in[128], out[128];
    uint32_t len = 0;
    CHECK(ring_try_pop(&c, out, sizeof out, &len) == IPC_EAGAIN, "empty pop");
    CHECK(ring_try_push(&r, in, 101) == IPC_ETOOBIG, "oversize push");
    for (int i = 0; i < 3; i++) {
        memset(in, i + 1, sizeof in);
        CHECK(ring_try_push(&r, in, (uint32_t)(10 * (i + 1))) == 0, "push %d", i);
    }
    CHECK(ring_try_push(&r, in, 1) == IPC_EAGAIN, "push into a full ring");
    CHECK(ring_reserve(&r) == NULL, "reserve in a full ring");
    CHECK(ring_count(&c) == 3, "count %u", ring_count(&c));
    CHECK(ring_try_pop(&c, out, 5, &len) == IPC_ETOOBIG && len == 10, "small buffer: len %u", len);
    /* The refused message stays; a second consumer view pops all three, then
     * wraps around many times with sizes 0..100. */
    struct ring c2;
    CHECK(ring_attach(&c2, mem, sz, err, sizeof err) == 0, "%s", err);
    uint64_t rs = g_seed;
    uint32_t expect_len[3] = {10, 20, 30};
    for (int i = 0; i < 3; i++) {
        CHECK(ring_try_pop(&c2, out, sizeof out, &len) == 0 && len == expect_len[i], "pop %d: len %u", i, len);
        if (len) CHECK(out[0] == i + 1 && out[len - 1] == i + 1, "pop %d: bytes", i);
    }
    for (uint64_t k = 0; k < 1000; k++) {
        uint32_t n = (uint32_t)(rng_next(&rs) % 101);
        memset(in, (int)(k & 0xff), n);
        CHECK(ring_try_push(&r, in, n) == 0, "wrap push %llu", (unsigned long long)k);
        CHECK(ring_try_pop(&c2, out, sizeof out, &len) == 0 && len == n, "wrap pop %llu", (unsigned long long)k);
        CHECK(n == 0 || (out[0] == (k & 0xff) && out[n - 1] == (k & 0xff)), "wrap bytes %llu", (unsigned long long)k);
    }
    /* A corrupt length field reads as slot_size, never beyond the slot. */
    CHECK(ring_try_push(&r, in, 4) == 0, "push");
    uint32_t bogus = 1u << 30;
    memcpy(mem + RING_HEADER_BYTES + (r.p_head - 1) % 3 * r.stride, &bogus, 4);
    const void *p = ring_peek(&c2, &len);
    CHECK(p != NULL && len == 100, "corrupt len clamped: %u", len);
    ring_release(&c2);
    /* A header that lies about its geometry is refused. */
    ((struct ring_shared *)mem)->n_slots = 1000;
    CHECK(ring_attach(&c, mem, sz, err, sizeof err) == IPC_ECORRUPT, "lying header attached");
    ((struct ring_shared *)mem)->n_slots = 3;
    ((struct ring_shared *)mem)->version = 99;
    CHECK(ring_attach(&c, mem, sz, err, sizeof err) == IPC_ECORRUPT, "wrong version attached");
    free(mem);
}

/* ---- two processes / threads ------------------------------------------------ */

struct cfg {
    const char *name;
    uint32_t slot_size, n_slots;
    uint64_t n_msgs;
    const struct idle_strategy *idle;
    int slow_producer;  /* sleep 50..300 us between messages: the consumer parks */
    int slow_consumer;  /* sleep now and then: the producer finds the ring full */
};

struct result { /* written by the consumer, read by the parent */
    uint64_t received, bytes, parks, wakes;
    int errors;
    char why[320];
};

struct side {
    const struct cfg *cfg;
    void *mem;
    size_t mem_size;
    const char *endpoint;
    uint64_t seed;
    struct result *res;
    uint64_t rings; /* producer: bells sent */
    int prod_errors;
};

static void nap_us(long us) {
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

static void *producer(void *arg) {
    struct side *sd = arg;
    const struct cfg *cf = sd->cfg;
    char err[256];
    struct ring r;
    struct doorbell bell;
    if (ring_attach(&r, sd->mem, sd->mem_size, err, sizeof err) ||
        doorbell_connect(&bell, NULL, sd->endpoint, err, sizeof err)) {
        fprintf(stderr, "producer: %s\n", err);
        sd->prod_errors++;
        return NULL;
    }
    unsigned char *buf = malloc(cf->slot_size);
    uint64_t rs = sd->seed, ls = sd->seed ^ 0x9e3779b97f4a7c15ull;
    for (uint64_t k = 0; buf && k < cf->n_msgs; k++) {
        uint32_t len = MSG_HDR + (uint32_t)(rng_next(&ls) % (cf->slot_size - MSG_HDR + 1));
        if (cf->slow_producer) nap_us(50 + (long)(rng_next(&ls) % 250));
        int rc;
        if (k & 1) { /* copying path */
            fill_msg(buf, len, k, &rs);
            rc = ring_push_notify(&r, &bell, buf, len, cf->idle, 10000);
        } else { /* zero-copy path */
            void *slot = ring_wait_reserve(&r, cf->idle, 10000);
            if (!slot) {
                rc = IPC_ETIMEDOUT;
            } else {
                fill_msg(slot, len, k, &rs);
                rc = ring_commit_notify(&r, &bell, len);
            }
        }
        if (rc) {
            fprintf(stderr, "producer: message %llu: %s\n", (unsigned long long)k, ipc_strerror(rc));
            sd->prod_errors++;
            break;
        }
    }
    free(buf);
    sd->rings = bell.n_rings;
    doorbell_close(&bell);
    return NULL;
}

static void *consumer(void *arg) {
    struct side *sd = arg;
    const struct cfg *cf = sd->cfg;
    struct result *res = sd->res;
    char err[256];
    struct ring r;
    struct doorbell bell;
    if (ring_attach(&r, sd->mem, sd->mem_size, err, sizeof err) ||
        doorbell_bind(&bell, NULL, sd->endpoint, err, sizeof err)) {
        snprintf(res->why, sizeof res->why, "consumer: %s", err);
        res->errors++;
        return NULL;
    }
    unsigned char *buf = malloc(cf->slot_size);
    uint64_t ls = sd->seed ^ 0x51ed27;
    for (uint64_t k = 0; buf && k < cf->n_msgs; k++) {
        uint32_t len = 0;
        int rc;
        if (cf->slow_consumer && rng_next(&ls) % 64 == 0) nap_us(200);
        if (k % 3 == 0) { /* copying path */
            rc = ring_wait_pop(&r, &bell, cf->idle, 10000, buf, cf->slot_size, &len);
            if (!rc && check_msg(buf, len, k, res->why, sizeof res->why)) rc = IPC_ECORRUPT;
        } else { /* zero-copy path */
            rc = ring_wait(&r, &bell, cf->idle, 10000);
            if (!rc) {
                const void *m = ring_peek(&r, &len);
                if (!m) {
                    snprintf(res->why, sizeof res->why, "ring_wait said ready, ring_peek empty");
                    rc = IPC_ECORRUPT;
                } else {
                    if (check_msg(m, len, k, res->why, sizeof res->why)) rc = IPC_ECORRUPT;
                    ring_release(&r);
                }
            }
        }
        if (rc) {
            if (rc != IPC_ECORRUPT)
                snprintf(res->why, sizeof res->why, "message %llu: %s", (unsigned long long)k, ipc_strerror(rc));
            res->errors++;
            break;
        }
        res->received++;
        res->bytes += len;
    }
    /* Nothing extra may follow the last message. */
    if (!res->errors && ring_peek(&r, &(uint32_t){0}) != NULL) {
        snprintf(res->why, sizeof res->why, "a message beyond the last one (duplicate?)");
        res->errors++;
    }
    free(buf);
    res->parks = bell.n_parks;
    res->wakes = bell.n_wakes;
    doorbell_close(&bell);
    return NULL;
}

static int run_cfg(const struct cfg *cf, int threads, struct ipc_session *ses, int idx) {
    char err[256], name[SHM_NAME_MAX], what[32], ep[IPC_PATH_MAX + 32];
    snprintf(what, sizeof what, "ring%d", idx);
    size_t sz = ring_bytes(cf->slot_size, cf->n_slots);
    struct shm_region reg;
    if (ipc_session_shm_name(ses, what, name, sizeof name) ||
        shm_region_create(&reg, name, sz, err, sizeof err)) {
        fprintf(stderr, "FAIL: region: %s\n", err);
        return -1;
    }
    struct ring r;
    if (ring_init(&r, reg.base, reg.size, cf->slot_size, cf->n_slots, err, sizeof err)) {
        fprintf(stderr, "FAIL: ring_init: %s\n", err);
        shm_region_close(&reg);
        return -1;
    }
    snprintf(what, sizeof what, "ring%d.bell", idx);
    ipc_session_endpoint(ses, what, ep, sizeof ep);
    struct result *res = mmap(NULL, sizeof *res, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (res == MAP_FAILED) {
        shm_region_close(&reg);
        return -1;
    }
    memset(res, 0, sizeof *res);
    uint64_t seed = g_seed + (uint64_t)idx * 7919;
    struct side ps = {cf, reg.base, reg.size, ep, seed, res, 0, 0};
    struct side cs = ps;
    uint64_t t0 = idle_now_ns();
    int bad = 0;
    if (threads) {
        pthread_t pt, ct;
        pthread_create(&ct, NULL, consumer, &cs);
        pthread_create(&pt, NULL, producer, &ps);
        pthread_join(pt, NULL);
        pthread_join(ct, NULL);
    } else {
        pid_t pid = fork();
        if (pid == 0) {
            consumer(&cs);
            _exit(res->errors ? 1 : 0);
        }
        producer(&ps);
        int st = 0;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st)) {
            snprintf(res->why, sizeof res->why, "consumer died (status %d)", st);
            bad = 1;
        }
    }
    double s = (double)(idle_now_ns() - t0) / 1e9;
    printf("  %-14s slot %6u x %2u  %8llu msgs  %7.1f MB  %.2f s  parks %llu wakes %llu bells %llu\n",
           cf->name, cf->slot_size, cf->n_slots, (unsigned long long)res->received, (double)res->bytes / 1e6, s,
           (unsigned long long)res->parks, (unsigned long long)res->wakes, (unsigned long long)ps.rings);
    if (res->errors || ps.prod_errors || bad || res->received != cf->n_msgs) {
        fprintf(stderr, "FAIL %s: %s (received %llu of %llu, producer errors %d)\n", cf->name, res->why,
                (unsigned long long)res->received, (unsigned long long)cf->n_msgs, ps.prod_errors);
        bad = 1;
    }
    if (cf->slow_producer && !bad) {
        /* The sleep path must really have run: the consumer parked and the
         * producer's bells woke it. */
        if (res->parks < cf->n_msgs / 4 || res->wakes == 0 || ps.rings == 0) {
            fprintf(stderr, "FAIL %s: sleep path not exercised (parks %llu, wakes %llu, bells %llu)\n",
                    cf->name, (unsigned long long)res->parks, (unsigned long long)res->wakes,
                    (unsigned long long)ps.rings);
            bad = 1;
        }
    }
    munmap(res, sizeof *res);
    shm_region_close(&reg);
    return bad ? -1 : 0;
}

/* A producer that dies must not hang its consumer: the wait times out and
 * the consumer finds the producer gone. */
static void test_dead_producer(struct ipc_session *ses) {
    char err[256], ep[IPC_PATH_MAX + 32];
    size_t sz = ring_bytes(64, 4);
    void *mem = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED, "mmap");
    if (mem == MAP_FAILED) return;
    struct ring r;
    CHECK(ring_init(&r, mem, sz, 64, 4, err, sizeof err) == 0, "%s", err);
    ipc_session_endpoint(ses, "dead.bell", ep, sizeof ep);
    struct doorbell bell;
    CHECK(doorbell_bind(&bell, NULL, ep, err, sizeof err) == 0, "%s", err);
    pid_t pid = fork();
    if (pid == 0) {
        struct ring p;
        struct doorbell pb;
        if (ring_attach(&p, mem, sz, err, sizeof err) || doorbell_connect(&pb, NULL, ep, err, sizeof err)) _exit(2);
        for (uint32_t i = 0; i < 3; i++) ring_push_notify(&p, &pb, &i, sizeof i, &idle_default, 1000);
        doorbell_close(&pb);
        _exit(0); /* dies with the consumer waiting for more */
    }
    uint32_t v, len;
    for (uint32_t i = 0; i < 3; i++) {
        int rc = ring_wait_pop(&r, &bell, &idle_default, 2000, &v, sizeof v, &len);
        CHECK(rc == 0 && v == i, "message %u: rc %d v %u", i, rc, v);
    }
    int timeouts = 0, gone = 0;
    uint64_t t0 = idle_now_ns();
    while (!gone && timeouts < 50) {
        int rc = ring_wait_pop(&r, &bell, &idle_default, 20, &v, sizeof v, &len);
        CHECK(rc == IPC_ETIMEDOUT, "wait on a dead producer: %d", rc);
        if (rc != IPC_ETIMEDOUT) break;
        timeouts++;
        gone = waitpid(pid, NULL, WNOHANG) == pid; /* the caller's liveness check */
    }
    double ms = (double)(idle_now_ns() - t0) / 1e6;
    CHECK(gone, "producer not seen dead after %d timeouts", timeouts);
    CHECK(ms < 2000, "took %.0f ms to notice", ms);
    CHECK(timeouts >= 1, "no timeout");
    printf("  dead producer noticed after %d timeout(s), %.0f ms\n", timeouts, ms);
    /* A timed-out wait lasts about its timeout. */
    t0 = idle_now_ns();
    int rc = ring_wait(&r, &bell, &idle_default, 30);
    ms = (double)(idle_now_ns() - t0) / 1e6;
    CHECK(rc == IPC_ETIMEDOUT && ms >= 29 && ms < 1000, "30 ms wait: rc %d, %.1f ms", rc, ms);
    rc = ring_wait(&r, NULL, &idle_spin, 5);
    CHECK(rc == IPC_ETIMEDOUT, "spin wait without doorbell: %d", rc);
    doorbell_close(&bell);
    munmap(mem, sz);
}

int main(int argc, char **argv) {
    int threads = 0;
    double scale = 1.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads")) threads = 1;
        else if (!strcmp(argv[i], "--scale") && i + 1 < argc) scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) g_seed = strtoull(argv[++i], NULL, 0);
        else {
            fprintf(stderr, "usage: %s [--threads] [--scale F] [--seed N]\n", argv[0]);
            return 2;
        }
    }
    printf("test_ring: seed %llu, %s, scale %.3f\n", (unsigned long long)g_seed,
           threads ? "two threads" : "two processes", scale);
    test_units();

    char root[] = "/tmp/hearth-test-ring-XXXXXX", err[256];
    struct ipc_session ses;
    if (!mkdtemp(root) || ipc_session_create(&ses, root, err, sizeof err)) {
        fprintf(stderr, "FAIL: session: %s\n", err);
        return 1;
    }
    /* Short spin and yield phases: this runs on a shared 2-core machine. */
    static const struct idle_strategy quick = {"quick", 5000, 50000, 1};
    /* The sleep case must park whatever the machine's load and the
     * sanitizer's slowdown: spin and yield for a few microseconds only, far
     * below the producer's 50-300 us naps. */
    static const struct idle_strategy parky = {"parky", 2000, 3000, 1};
    const struct cfg cfgs[] = {
        {"tiny", 16, 1, 50000, &quick, 0, 0},
        {"small", 64, 8, 1500000, &quick, 0, 0},
        {"awkward", 1000, 3, 300000, &idle_default, 0, 0},
        {"page+", 4109, 17, 150000, &idle_yield, 0, 0},
        {"big", 65536 + 24, 5, 8000, &quick, 0, 0},
        {"slow-consumer", 300, 2, 20000, &quick, 0, 1},
        {"sleep", 512, 4, 2000, &parky, 1, 0},
    };
    uint64_t total = 0;
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        struct cfg c = cfgs[i];
        c.n_msgs = (uint64_t)((double)c.n_msgs * scale);
        if (c.n_msgs < 200) c.n_msgs = 200;
        if (run_cfg(&c, threads, &ses, (int)i)) g_fail++;
        total += c.n_msgs;
    }
    printf("  %llu messages in all\n", (unsigned long long)total);
    if (!threads) test_dead_producer(&ses);
    ipc_session_destroy(&ses);
    rmdir(root);
    if (g_fail) {
        fprintf(stderr, "test_ring: %d failure(s) (seed %llu)\n", g_fail, (unsigned long long)g_seed);
        return 1;
    }
    printf("test_ring: ok\n");
    return 0;
}
