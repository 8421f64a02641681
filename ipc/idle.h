/* idle: how a thread waits for a ring to change, as named, swappable
 * objects (after Aeron's idle strategies).
 *
 * A wait runs through up to three phases, in order:
 *   IDLE_SPIN   busy-poll with a CPU pause hint: the lowest latency (tens of
 *               ns to notice a message), burns a core;
 *   IDLE_YIELD  poll with sched_yield() between looks: gives the core to
 *               other runnable threads, still no syscall-free sleep;
 *   IDLE_PARK   block in the kernel on the doorbell (ipc/doorbell.h); the
 *               producer must then ring it, which costs it a syscall and
 *               the wakeup some microseconds.
 * spin_ns and yield_ns bound the first two phases; `park` says whether the
 * third may happen (if not, the yield phase lasts until the timeout). */
#ifndef HEARTH_IDLE_H
#define HEARTH_IDLE_H

#include <stdint.h>

/* IDLE_TIMEOUT is not a phase: idle_step's answer once the wait's deadline
 * has passed. */
enum idle_phase { IDLE_SPIN = 0, IDLE_YIELD = 1, IDLE_PARK = 2, IDLE_TIMEOUT = 3 };

struct idle_strategy {
    const char *name;
    uint64_t spin_ns;   /* busy-poll this long first */
    uint64_t yield_ns;  /* then poll with sched_yield this long */
    int park;           /* then block on the doorbell (1) or keep yielding (0) */
};

extern const struct idle_strategy idle_spin;    /* spin until the timeout */
extern const struct idle_strategy idle_yield;   /* yield until the timeout */
extern const struct idle_strategy idle_park;    /* park at once */
extern const struct idle_strategy idle_default; /* spin 20 us, yield 100 us, park */

/* One wait in progress. */
struct idle_state {
    const struct idle_strategy *s;
    uint64_t t0_ns;       /* when the wait began (read at the first idle_step) */
    uint64_t timeout_ns;  /* UINT64_MAX: none */
    uint32_t polls;       /* looks at the ring so far */
    enum idle_phase phase;
};

uint64_t idle_now_ns(void); /* CLOCK_MONOTONIC, nanoseconds */
/* Nanoseconds left of a wait begun by idle_begin (UINT64_MAX: no deadline). */
uint64_t idle_left_ns(const struct idle_state *st);
void idle_cpu_relax(void);  /* the CPU's pause hint (x86 pause, arm yield) */

/* timeout_ms < 0: no deadline. */
void idle_begin(struct idle_state *st, const struct idle_strategy *s, int timeout_ms);

/* Called after a look at the ring found nothing: pauses or yields as the
 * current phase says and returns that phase; returns IDLE_PARK (without
 * waiting) when the caller should now park, and IDLE_TIMEOUT once the
 * deadline has passed. In the spin phase the clock is read only every 64
 * polls, so the deadline may be overrun by that many pauses (~ 2 us). */
enum idle_phase idle_step(struct idle_state *st);

#endif
