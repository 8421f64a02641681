/* doorbell: wakes a consumer that sleeps on an empty ring, over ZeroMQ; and
 * the ring + doorbell + idle-strategy combinations the runtime calls.
 *
 * The consumer binds a PULL socket at `ipc://<session dir>/<ring>.bell`;
 * the producer connects a PUSH socket to it. A bell is an empty message; it
 * carries no data (the data is in the ring) and several bells may collapse
 * into one wakeup.
 *
 * The protocol, on the ring's `sleeping` word (ipc/ring.h):
 *   consumer, to park:  sleeping = 1; fence(seq_cst); look at head;
 *                       if the ring is not empty: sleeping = 0, go on;
 *                       else block on the PULL socket (with a timeout)
 *   producer, per push: write slot; head = h + 1 (release); fence(seq_cst);
 *                       if sleeping == 1 and exchange(sleeping, 0) == 1:
 *                           send a bell
 * Why no wakeup is lost: the two fences are seq_cst, so they are totally
 * ordered. If the consumer's fence comes first, the producer's load of
 * `sleeping` (after its own fence) sees 1 and it rings; if the producer's
 * fence comes first, the consumer's look at head (after its fence) sees the
 * new message and it does not block. A bell sent before the consumer
 * reaches zmq_poll waits in the socket's queue, so it is not lost either.
 * The exchange makes sure only one bell is sent per park. A bell the
 * consumer did not need (it found the data on its re-check, or timed out)
 * stays queued and causes one spurious wakeup later: harmless, the waiter
 * loops and looks at the ring again.
 *
 * ZeroMQ contexts do not survive fork(): create them in the process that
 * uses them. Pass NULL as zctx to give the doorbell its own context. */
#ifndef HEARTH_DOORBELL_H
#define HEARTH_DOORBELL_H

#include "idle.h"
#include "ring.h"

#include <stddef.h>
#include <stdint.h>

struct doorbell {
    void *zctx;
    int own_ctx;     /* 1: zctx was created here and is destroyed on close */
    void *sock;      /* PULL (consumer) or PUSH (producer) */
    int consumer;
    uint64_t n_rings; /* producer: bells sent */
    uint64_t n_parks; /* consumer: times it blocked on the socket */
    uint64_t n_wakes; /* consumer: times a bell (not the timeout) woke it */
};

/* Consumer side: PULL bound at endpoint ("ipc://<dir>/<ring>.bell"). */
int doorbell_bind(struct doorbell *d, void *zctx, const char *endpoint, char *err, size_t errlen);
/* Producer side: PUSH connected to endpoint (it may be bound later). */
int doorbell_connect(struct doorbell *d, void *zctx, const char *endpoint, char *err, size_t errlen);
void doorbell_close(struct doorbell *d);

/* Producer: sends one bell, never blocks (a full queue already holds
 * bells). 0 or IPC_ERR. */
int doorbell_ring(struct doorbell *d);
/* Consumer: blocks until a bell arrives (then drains the others) or
 * timeout_ms passes (< 0: forever). 0, IPC_ETIMEDOUT or IPC_ERR. A return
 * of 0 does not promise data: look at the ring. */
int doorbell_wait(struct doorbell *d, int timeout_ms);

/* Consumer: waits until the ring holds a message (then ring_peek succeeds),
 * running the idle strategy and parking on d when it says so (d NULL: the
 * park phase sleeps 50 us at a time instead). timeout_ms < 0 waits forever,
 * which a runtime should never do: on IPC_ETIMEDOUT check that the producer
 * is alive (pid, heartbeat) and wait again. 0 or IPC_ETIMEDOUT. */
int ring_wait(struct ring *r, struct doorbell *d, const struct idle_strategy *s, int timeout_ms);

/* Consumer: ring_wait + ring_try_pop. 0, IPC_ETIMEDOUT or IPC_ETOOBIG (the
 * message, of *len bytes, stays in the ring). */
int ring_wait_pop(struct ring *r, struct doorbell *d, const struct idle_strategy *s, int timeout_ms,
                  void *buf, uint32_t cap, uint32_t *len);

/* Producer: a free slot, waiting while the ring is full (the consumer rings
 * no bell back: the park phase sleeps 50 us to 1 ms at a time). NULL on
 * timeout. */
void *ring_wait_reserve(struct ring *r, const struct idle_strategy *s, int timeout_ms);

/* Producer: ring_commit, then rings d if the consumer sleeps (d may be
 * NULL for a consumer that never parks). 0 or IPC_ERR (bell not sent). */
int ring_commit_notify(struct ring *r, struct doorbell *d, uint32_t len);

/* Producer: ring_wait_reserve + copy + ring_commit_notify. 0,
 * IPC_ETIMEDOUT (still full), IPC_ETOOBIG or IPC_ERR. */
int ring_push_notify(struct ring *r, struct doorbell *d, const void *data, uint32_t len,
                     const struct idle_strategy *s, int timeout_ms);

#endif
