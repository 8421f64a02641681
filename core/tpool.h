/* tpool: a fixed pool of threads that run one function on every thread.
 *
 * Kernels (matmul, attention) split their work by (ith, nth): tpool_run calls
 * fn(arg, ith, nth) once on each of the pool's nth threads, the calling thread
 * being ith 0, and returns when all have returned. A decode step calls this a
 * few hundred times per token, so a run must cost microseconds, not a
 * syscall per worker: workers spin on a generation counter for a short while
 * after each run (the next run usually comes within microseconds) and only
 * then sleep on a condition variable, so an idle pool burns no CPU.
 *
 * Protocol (all counters C11 atomics):
 *   caller (tpool_run)                       worker ith
 *   ------------------                       ----------
 *   fn, arg = ... (plain stores)
 *   n_done = 0 (relaxed)
 *   gen += 1 (seq_cst)  ----- publishes ---> sees gen != my_gen (acquire),
 *   if n_sleeping > 0 (seq_cst):               reads fn, arg; runs fn(arg, ith, nth)
 *       lock; broadcast; unlock              n_done += 1 (release)
 *   fn(arg, 0, nth)
 *   wait until n_done == nth - 1 (acquire)   spin on gen a while; then
 *                                            lock; n_sleeping += 1 (seq_cst);
 *                                            while gen == my_gen: cond_wait;
 *                                            n_sleeping -= 1; unlock
 * The seq_cst pair (caller: store gen, load n_sleeping; worker: store
 * n_sleeping, load gen) means either the caller sees a sleeper and broadcasts
 * under the mutex, or the worker sees the new generation before it waits: no
 * lost wake-up. fn must not call tpool_run on the same pool. */
#ifndef HEARTH_TPOOL_H
#define HEARTH_TPOOL_H

#include <stddef.h>

struct tpool;

typedef void (*tpool_fn)(void *arg, int ith, int nth);

/* n_threads counts the calling thread; 1 means no extra threads. NULL on
 * failure (err says why). */
struct tpool *tpool_create(int n_threads, char *err, size_t errlen);
void tpool_destroy(struct tpool *tp); /* NULL is fine */
int tpool_size(const struct tpool *tp);
/* Runs fn(arg, ith, nth) on every thread, ith 0 on the caller. tp may be NULL:
 * then fn(arg, 0, 1) runs on the caller. Not reentrant, one caller at a time. */
void tpool_run(struct tpool *tp, tpool_fn fn, void *arg);

#endif
