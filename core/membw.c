/* membw: see membw.h. */
#include "membw.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tpool.h"

struct probe {
    const uint64_t *buf;
    size_t n; /* uint64 words */
    uint64_t sums[1024];
};

/* each thread sums its contiguous share with 4 independent chains (the
 * compiler turns them into vector loads) */
static void probe_worker(void *arg, int ith, int nth) {
    struct probe *p = arg;
    const size_t a = p->n * (size_t)ith / (size_t)nth / 4 * 4, b = p->n * (size_t)(ith + 1) / (size_t)nth / 4 * 4;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = a; i < b; i += 4) {
        s0 += p->buf[i];
        s1 += p->buf[i + 1];
        s2 += p->buf[i + 2];
        s3 += p->buf[i + 3];
    }
    p->sums[ith] = s0 + s1 + s2 + s3;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* in the child: the best rate, or a negative value */
static double probe_here(int n_threads, size_t bytes, int passes) {
    char err[256];
    struct tpool *tp = tpool_create(n_threads, err, sizeof err);
    struct probe *p = calloc(1, sizeof *p);
    uint64_t *buf = NULL;
    if (!tp || !p || posix_memalign((void **)&buf, 64, bytes) != 0) return -1.0;
    memset(buf, 1, bytes); /* fault every page in before timing */
    p->buf = buf;
    p->n = bytes / sizeof(uint64_t);
    double best = 0.0;
    for (int k = 0; k <= passes; k++) {
        const double t0 = now_s();
        tpool_run(tp, probe_worker, p);
        const double rate = (double)bytes / (now_s() - t0);
        if (k > 0 && rate > best) best = rate; /* pass 0 warms the threads */
    }
    uint64_t total = 0;
    for (int i = 0; i < n_threads; i++) total += p->sums[i];
    if (total == 42) best = -2.0; /* never: keeps the sums alive */
    free(buf);
    free(p);
    tpool_destroy(tp);
    return best;
}

double membw_read_probe(int n_threads, size_t bytes, int passes, char *err, size_t errlen) {
    if (n_threads < 1 || n_threads > 1024) {
        snprintf(err, errlen, "bandwidth probe: %d threads, need 1..1024", n_threads);
        return -1.0;
    }
    if (!bytes) bytes = (size_t)256 << 20;
    if (!passes) passes = 5;
    int fd[2];
    if (pipe(fd) != 0) {
        snprintf(err, errlen, "bandwidth probe: pipe: %s", strerror(errno));
        return -1.0;
    }
    const pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "bandwidth probe: fork: %s", strerror(errno));
        close(fd[0]);
        close(fd[1]);
        return -1.0;
    }
    if (pid == 0) {
        close(fd[0]);
        const double r = probe_here(n_threads, bytes, passes);
        _exit(write(fd[1], &r, sizeof r) == (ssize_t)sizeof r ? 0 : 1);
    }
    close(fd[1]);
    double r = -1.0;
    const ssize_t got = read(fd[0], &r, sizeof r);
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (got != (ssize_t)sizeof r || r <= 0.0) {
        snprintf(err, errlen, "bandwidth probe: the child failed (out of memory for %zu MiB?)", bytes >> 20);
        return -1.0;
    }
    return r;
}
