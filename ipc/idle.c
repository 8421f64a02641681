/* idle: see idle.h. */
#include "idle.h"

#include <sched.h>
#include <time.h>

const struct idle_strategy idle_spin = {"spin", UINT64_MAX, 0, 0};
const struct idle_strategy idle_yield = {"yield", 0, UINT64_MAX, 0};
const struct idle_strategy idle_park = {"park", 0, 0, 1};
const struct idle_strategy idle_default = {"default", 20000, 100000, 1};

uint64_t idle_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void idle_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

void idle_begin(struct idle_state *st, const struct idle_strategy *s, int timeout_ms) {
    st->s = s;
    st->t0_ns = 0; /* read the clock lazily: a ready ring costs no clock read */
    st->timeout_ns = timeout_ms < 0 ? UINT64_MAX : (uint64_t)timeout_ms * 1000000u;
    st->polls = 0;
    st->phase = IDLE_SPIN;
}

uint64_t idle_left_ns(const struct idle_state *st) {
    if (st->timeout_ns == UINT64_MAX) return UINT64_MAX;
    uint64_t t0 = st->polls ? st->t0_ns : idle_now_ns();
    uint64_t dt = idle_now_ns() - t0;
    return dt >= st->timeout_ns ? 0 : st->timeout_ns - dt;
}

enum idle_phase idle_step(struct idle_state *st) {
    const struct idle_strategy *s = st->s;
    if (st->polls == 0) st->t0_ns = idle_now_ns();
    st->polls++;
    /* A clock read costs ~20 ns; while spinning look at it every 64 polls. */
    if (st->phase == IDLE_SPIN && s->spin_ns > 0 && (st->polls & 63) != 0) {
        idle_cpu_relax();
        return IDLE_SPIN;
    }
    uint64_t dt = idle_now_ns() - st->t0_ns;
    if (dt >= st->timeout_ns) return IDLE_TIMEOUT;
    if (dt < s->spin_ns) {
        st->phase = IDLE_SPIN;
        idle_cpu_relax();
        return IDLE_SPIN;
    }
    if (!s->park || dt - s->spin_ns < s->yield_ns) {
        st->phase = IDLE_YIELD;
        sched_yield();
        return IDLE_YIELD;
    }
    st->phase = IDLE_PARK;
    return IDLE_PARK;
}
