/* test_tpool: every run calls fn exactly once per thread with the right
 * (ith, nth); runs after the workers went to sleep still work; an idle pool
 * uses no CPU; the per-run overhead is printed. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "tpool.h"

static int failures;
#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            failures++;                                                                                      \
            if (failures < 30) {                                                                             \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                        \
                fprintf(stderr, __VA_ARGS__);                                                                \
                fputc('\n', stderr);                                                                         \
            }                                                                                                \
        }                                                                                                    \
    } while (0)

#define MAXT 8

struct count_arg {
    atomic_int calls[MAXT]; /* calls per ith, over all runs */
    atomic_int bad_nth;
    int nth;
    long payload[MAXT]; /* plain writes by each thread, read by the caller after the run */
    long run;
};

static void count_fn(void *p, int ith, int nth) {
    struct count_arg *a = p;
    if (nth != a->nth || ith < 0 || ith >= nth)
        atomic_fetch_add(&a->bad_nth, 1);
    else {
        atomic_fetch_add_explicit(&a->calls[ith], 1, memory_order_relaxed);
        a->payload[ith] = a->run * 31 + ith; /* visible to the caller once tpool_run returns */
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void stress(int n, int runs, int sleep_every) {
    char err[256];
    struct tpool *tp = tpool_create(n, err, sizeof err);
    CHECK(tp != NULL, "tpool_create(%d): %s", n, err);
    if (!tp)
        return;
    CHECK(tpool_size(tp) == n, "size %d != %d", tpool_size(tp), n);
    struct count_arg a;
    memset(&a, 0, sizeof a);
    a.nth = n;
    for (int r = 0; r < runs; r++) {
        a.run = r;
        tpool_run(tp, count_fn, &a);
        for (int i = 0; i < n; i++) {
            int c = atomic_load(&a.calls[i]);
            if (c != r + 1) {
                CHECK(0, "n=%d run %d: thread %d called %d times in total, want %d", n, r, i, c, r + 1);
                r = runs;
                break;
            }
            CHECK(a.payload[i] == (long)r * 31 + i, "n=%d run %d: thread %d's write not visible", n, r, i);
        }
        /* now and then let the workers fall asleep, to test the wake-up */
        if (sleep_every && r % sleep_every == sleep_every - 1)
            sleep_ms(3);
    }
    CHECK(atomic_load(&a.bad_nth) == 0, "n=%d: fn saw a wrong (ith, nth)", n);
    tpool_destroy(tp);
}

static void noop(void *p, int ith, int nth) {
    (void)p;
    (void)ith;
    (void)nth;
}

int main(void) {
    char err[256] = "";
    printf("test_tpool: no random inputs\n");

    CHECK(tpool_create(0, err, sizeof err) == NULL && strstr(err, "0 threads"), "0 threads: '%s'", err);
    CHECK(tpool_size(NULL) == 1, "NULL pool has size 1");
    {
        struct count_arg a;
        memset(&a, 0, sizeof a);
        a.nth = 1;
        tpool_run(NULL, count_fn, &a);
        CHECK(atomic_load(&a.calls[0]) == 1, "NULL pool runs fn on the caller");
    }

    /* 3 and 4 threads oversubscribe a 2-core machine: fewer runs there */
    for (int n = 1; n <= 4; n++)
        stress(n, n <= 2 ? 20000 : 3000, 0);
    for (int n = 2; n <= 3; n++)
        stress(n, 300, 10); /* sleeps: ~90 ms per pool */

    /* create/destroy churn, including destroy right after create */
    for (int i = 0; i < 50; i++) {
        struct tpool *tp = tpool_create(1 + i % 4, err, sizeof err);
        CHECK(tp != NULL, "churn %d: %s", i, err);
        if (i % 2)
            tpool_run(tp, noop, NULL);
        tpool_destroy(tp);
    }

    /* overhead per run and idle CPU, with 2 threads (this machine's cores) */
    struct tpool *tp = tpool_create(2, err, sizeof err);
    CHECK(tp != NULL, "%s", err);
    if (tp) {
        const int runs = 20000;
        double best = 1e9;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = now_s();
            for (int r = 0; r < runs; r++)
                tpool_run(tp, noop, NULL);
            double dt = (now_s() - t0) / runs;
            best = dt < best ? dt : best;
        }
        printf("test_tpool: empty run with 2 threads: %.2f us (best of 3 x %d)\n", best * 1e6, runs);
        /* a loose bound so that a loaded CI machine passes; it catches a
         * syscall-per-run design on a quiet one */
        CHECK(best < 200e-6, "empty run costs %.1f us", best * 1e6);

        sleep_ms(20); /* let the workers stop spinning */
        double c0 = cpu_s(), w0 = now_s();
        sleep_ms(200);
        double used = cpu_s() - c0, wall = now_s() - w0;
        printf("test_tpool: idle pool used %.1f ms CPU in %.0f ms\n", used * 1e3, wall * 1e3);
        CHECK(used < 0.05 * wall + 0.005, "an idle pool burns CPU: %.1f ms in %.0f ms", used * 1e3, wall * 1e3);
        tpool_destroy(tp);
    }

    if (failures) {
        printf("test_tpool: %d FAILED\n", failures);
        return 1;
    }
    printf("test_tpool: ok\n");
    return 0;
}
