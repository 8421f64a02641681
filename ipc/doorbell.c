/* doorbell: see doorbell.h for the protocol and why it loses no wakeup. */
#include "doorbell.h"
#include "ipc.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

static int open_socket(struct doorbell *d, void *zctx, int type, const char *endpoint, int bind,
                       char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    d->consumer = bind;
    if (!zctx) {
        zctx = zmq_ctx_new();
        if (!zctx) {
            snprintf(err, errlen, "doorbell: zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
            return IPC_ERR;
        }
        d->own_ctx = 1;
    }
    d->zctx = zctx;
    d->sock = zmq_socket(zctx, type);
    if (!d->sock) {
        snprintf(err, errlen, "doorbell: zmq_socket: %s", zmq_strerror(zmq_errno()));
        doorbell_close(d);
        return IPC_ERR;
    }
    int linger = 0; /* a bell nobody will hear is not worth waiting for at close */
    zmq_setsockopt(d->sock, ZMQ_LINGER, &linger, sizeof linger);
    int rc = bind ? zmq_bind(d->sock, endpoint) : zmq_connect(d->sock, endpoint);
    if (rc != 0) {
        snprintf(err, errlen, "doorbell: %s %s: %s", bind ? "bind" : "connect", endpoint,
                 zmq_strerror(zmq_errno()));
        doorbell_close(d);
        return IPC_ERR;
    }
    return 0;
}

int doorbell_bind(struct doorbell *d, void *zctx, const char *endpoint, char *err, size_t errlen) {
    return open_socket(d, zctx, ZMQ_PULL, endpoint, 1, err, errlen);
}

int doorbell_connect(struct doorbell *d, void *zctx, const char *endpoint, char *err, size_t errlen) {
    return open_socket(d, zctx, ZMQ_PUSH, endpoint, 0, err, errlen);
}

void doorbell_close(struct doorbell *d) {
    if (!d) return;
    if (d->sock) zmq_close(d->sock);
    if (d->own_ctx && d->zctx) zmq_ctx_term(d->zctx);
    d->sock = NULL;
    d->zctx = NULL;
    d->own_ctx = 0;
}

int doorbell_ring(struct doorbell *d) {
    d->n_rings++;
    if (zmq_send(d->sock, "", 0, ZMQ_DONTWAIT) == 0) return 0;
    /* EAGAIN: the queue is full of bells the consumer has yet to read, so it
     * will wake anyway. */
    return zmq_errno() == EAGAIN ? 0 : IPC_ERR;
}

int doorbell_wait(struct doorbell *d, int timeout_ms) {
    zmq_pollitem_t it = {d->sock, 0, ZMQ_POLLIN, 0};
    d->n_parks++;
    int n = zmq_poll(&it, 1, timeout_ms < 0 ? -1 : timeout_ms);
    if (n < 0) return zmq_errno() == EINTR ? 0 : IPC_ERR; /* a signal: spurious wakeup */
    if (n == 0) return IPC_ETIMEDOUT;
    d->n_wakes++;
    char b;
    while (zmq_recv(d->sock, &b, sizeof b, ZMQ_DONTWAIT) >= 0) {
    }
    return 0;
}

static int ring_ready(struct ring *r) {
    uint32_t len;
    return ring_peek(r, &len) != NULL;
}

static void sleep_ns(uint64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    nanosleep(&ts, NULL);
}

static int ns_to_ms_ceil(uint64_t ns) {
    if (ns == UINT64_MAX) return -1;
    uint64_t ms = (ns + 999999u) / 1000000u;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

int ring_wait(struct ring *r, struct doorbell *d, const struct idle_strategy *s, int timeout_ms) {
    struct idle_state st;
    idle_begin(&st, s, timeout_ms);
    for (;;) {
        if (ring_ready(r)) return 0;
        enum idle_phase ph = idle_step(&st);
        if (ph == IDLE_TIMEOUT) return IPC_ETIMEDOUT;
        if (ph != IDLE_PARK) continue;
        uint64_t left = idle_left_ns(&st);
        if (left == 0) return IPC_ETIMEDOUT;
        if (!d) {
            sleep_ns(left < 50000 ? left : 50000);
            continue;
        }
        atomic_store_explicit(&r->sh->sleeping, 1, memory_order_seq_cst);
        atomic_thread_fence(memory_order_seq_cst);
        if (ring_ready(r)) {
            atomic_store_explicit(&r->sh->sleeping, 0, memory_order_relaxed);
            return 0;
        }
        int rc = doorbell_wait(d, ns_to_ms_ceil(left));
        /* Woken, timed out or failed: we are awake either way. If the
         * producer raced us to 0 and rang, that bell wakes a later park once,
         * spuriously. */
        atomic_store_explicit(&r->sh->sleeping, 0, memory_order_relaxed);
        if (rc == IPC_ERR) sleep_ns(50000); /* never spin hot on a broken socket */
    }
}

int ring_wait_pop(struct ring *r, struct doorbell *d, const struct idle_strategy *s, int timeout_ms,
                  void *buf, uint32_t cap, uint32_t *len) {
    int rc = ring_wait(r, d, s, timeout_ms);
    if (rc) return rc;
    return ring_try_pop(r, buf, cap, len);
}

void *ring_wait_reserve(struct ring *r, const struct idle_strategy *s, int timeout_ms) {
    struct idle_state st;
    idle_begin(&st, s, timeout_ms);
    uint64_t nap = 50000;
    for (;;) {
        void *p = ring_reserve(r);
        if (p) return p;
        enum idle_phase ph = idle_step(&st);
        if (ph == IDLE_TIMEOUT) return NULL;
        if (ph != IDLE_PARK) continue;
        uint64_t left = idle_left_ns(&st);
        if (left == 0) return NULL;
        sleep_ns(left < nap ? left : nap);
        if (nap < 1000000) nap *= 2;
    }
}

int ring_commit_notify(struct ring *r, struct doorbell *d, uint32_t len) {
    ring_commit(r, len);
    if (!d) return 0;
    atomic_thread_fence(memory_order_seq_cst);
    /* The plain load keeps the common case (consumer awake) free of a locked
     * instruction on the consumer's cache line. */
    if (atomic_load_explicit(&r->sh->sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&r->sh->sleeping, 0, memory_order_seq_cst))
        return doorbell_ring(d);
    return 0;
}

int ring_push_notify(struct ring *r, struct doorbell *d, const void *data, uint32_t len,
                     const struct idle_strategy *s, int timeout_ms) {
    if (len > r->slot_size) return IPC_ETOOBIG;
    void *p = ring_wait_reserve(r, s, timeout_ms);
    if (!p) return IPC_ETIMEDOUT;
    if (len) memcpy(p, data, len);
    return ring_commit_notify(r, d, len);
}
