/* tpool: see tpool.h for the protocol. */
#include "tpool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Spin iterations before a worker sleeps: a pause is ~10-140 cycles, so this
 * is roughly 50-500 microseconds, longer than the gap between two kernels of
 * one decode step, far shorter than a human-visible idle time. */
#define TPOOL_SPIN 20000
/* The caller waiting for stragglers yields after this many spins, so that an
 * oversubscribed machine (more threads than cores) still makes progress. */
#define TPOOL_WAIT_SPIN 256

struct worker {
    struct tpool *tp;
    int ith;
    pthread_t thread;
};

struct tpool {
    int n; /* threads, caller included */
    struct worker *workers; /* n - 1 of them, ith 1..n-1 */

    /* written by the caller before it bumps gen; read by workers after they
     * see the new gen */
    tpool_fn fn;
    void *arg;

    /* caller-written, worker-read; on its own cache line (the workers spin on it) */
    _Alignas(64) atomic_uint_fast64_t gen;
    atomic_int stop;
    /* worker-written, caller-read */
    _Alignas(64) atomic_int n_done;
    atomic_int n_sleeping; /* changed under mu */

    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void *worker_main(void *p) {
    struct worker *w = p;
    struct tpool *tp = w->tp;
    uint_fast64_t my_gen = 0;
    for (;;) {
        uint_fast64_t g = atomic_load_explicit(&tp->gen, memory_order_acquire);
        for (int spin = 0; g == my_gen && spin < TPOOL_SPIN; spin++) {
            /* mostly pause; now and then give the core away, in case the
             * thread we wait for (the caller) is queued behind us */
            if (spin % 256 == 255)
                sched_yield();
            else
                cpu_relax();
            g = atomic_load_explicit(&tp->gen, memory_order_acquire);
        }
        if (g == my_gen) {
            pthread_mutex_lock(&tp->mu);
            atomic_fetch_add_explicit(&tp->n_sleeping, 1, memory_order_seq_cst);
            while ((g = atomic_load_explicit(&tp->gen, memory_order_seq_cst)) == my_gen &&
                   !atomic_load_explicit(&tp->stop, memory_order_relaxed))
                pthread_cond_wait(&tp->cv, &tp->mu);
            atomic_fetch_sub_explicit(&tp->n_sleeping, 1, memory_order_relaxed);
            pthread_mutex_unlock(&tp->mu);
        }
        if (atomic_load_explicit(&tp->stop, memory_order_acquire))
            break;
        my_gen = g;
        tp->fn(tp->arg, w->ith, tp->n);
        atomic_fetch_add_explicit(&tp->n_done, 1, memory_order_release);
    }
    return NULL;
}

static void wake_all(struct tpool *tp) {
    pthread_mutex_lock(&tp->mu);
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);
}

struct tpool *tpool_create(int n_threads, char *err, size_t errlen) {
    if (n_threads < 1 || n_threads > 1024) {
        snprintf(err, errlen, "thread pool: %d threads requested, need 1..1024", n_threads);
        return NULL;
    }
    struct tpool *tp = calloc(1, sizeof *tp);
    if (!tp) {
        snprintf(err, errlen, "thread pool: out of memory");
        return NULL;
    }
    tp->n = n_threads;
    atomic_init(&tp->gen, 0);
    atomic_init(&tp->stop, 0);
    atomic_init(&tp->n_done, 0);
    atomic_init(&tp->n_sleeping, 0);
    if (pthread_mutex_init(&tp->mu, NULL) != 0) {
        snprintf(err, errlen, "thread pool: pthread_mutex_init failed");
        free(tp);
        return NULL;
    }
    if (pthread_cond_init(&tp->cv, NULL) != 0) {
        snprintf(err, errlen, "thread pool: pthread_cond_init failed");
        pthread_mutex_destroy(&tp->mu);
        free(tp);
        return NULL;
    }
    if (n_threads > 1) {
        tp->workers = calloc((size_t)n_threads - 1, sizeof *tp->workers);
        if (!tp->workers) {
            snprintf(err, errlen, "thread pool: out of memory for %d workers", n_threads - 1);
            tpool_destroy(tp);
            return NULL;
        }
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker *w = &tp->workers[i - 1];
        w->tp = tp;
        w->ith = i;
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0) {
            snprintf(err, errlen, "thread pool: starting thread %d of %d: %s", i, n_threads, strerror(rc));
            tp->n = i; /* join only the ones that started */
            tpool_destroy(tp);
            return NULL;
        }
    }
    return tp;
}

void tpool_destroy(struct tpool *tp) {
    if (!tp)
        return;
    atomic_store_explicit(&tp->stop, 1, memory_order_seq_cst);
    wake_all(tp);
    for (int i = 1; i < tp->n; i++)
        pthread_join(tp->workers[i - 1].thread, NULL);
    free(tp->workers);
    pthread_cond_destroy(&tp->cv);
    pthread_mutex_destroy(&tp->mu);
    free(tp);
}

int tpool_size(const struct tpool *tp) { return tp ? tp->n : 1; }

void tpool_run(struct tpool *tp, tpool_fn fn, void *arg) {
    if (!tp || tp->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->arg = arg;
    atomic_store_explicit(&tp->n_done, 0, memory_order_relaxed);
    /* seq_cst: ordered before the n_sleeping load below (see the header) and
     * publishes fn, arg and n_done = 0 to workers that acquire gen */
    atomic_fetch_add_explicit(&tp->gen, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&tp->n_sleeping, memory_order_seq_cst) > 0)
        wake_all(tp);

    fn(arg, 0, tp->n);

    const int want = tp->n - 1;
    for (int spin = 0; atomic_load_explicit(&tp->n_done, memory_order_acquire) != want; spin++) {
        if (spin < TPOOL_WAIT_SPIN && spin % 256 != 255)
            cpu_relax();
        else
            sched_yield();
    }
}
