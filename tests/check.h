/* check.h: the little harness every C test program shares (header only).
 *
 * Offers
 *   failures, CHECK(cond, fmt, ...)  count every failed check; print
 *                                    "FAIL file:line: message" to stderr for
 *                                    the first CHECK_MAX_PRINTED of them only,
 *                                    so a broken loop does not drown the log
 *   check_seed(s), rnd64()           a splitmix64 stream (any seed is fine,
 *                                    zero included) and what is built on it:
 *   rnd_range(lo, hi)                  int64 in [lo, hi], both ends included
 *   rnd_unit(), rnd_unitf()            double / float in [0, 1)
 *   rnd_normal()                       float N(0, 1), Box-Muller
 *   xmalloc(n)                       malloc that exits 2 with a message
 *   check_done(name)                 "name: ok" (stdout) or "name: N failures
 *                                    (seed S)" (stderr); returns the exit
 *                                    status, 0 or 1
 *
 * Every test that uses random data prints the seed it used (and takes another
 * one from its command line or HEARTH_TEST_SEED) so that a failure can be
 * rerun exactly; check_done repeats the seed on failure.
 *
 * Everything is static (inline), so each test program gets its own copy and
 * the ones it does not call cost nothing and draw no unused warnings. */
#ifndef HEARTH_TESTS_CHECK_H
#define HEARTH_TESTS_CHECK_H

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK_MAX_PRINTED 30

static int failures;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (!(cond) && ++failures <= CHECK_MAX_PRINTED) {             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);      \
            fprintf(stderr, __VA_ARGS__);                             \
            fputc('\n', stderr);                                      \
            if (failures == CHECK_MAX_PRINTED)                        \
                fprintf(stderr, "(further failures counted only)\n"); \
        }                                                             \
    } while (0)

static uint64_t check_state; /* splitmix64 state: advances by the golden gamma */
static uint64_t check_seed_used;
static int check_seeded;

static inline void check_seed(uint64_t seed) {
    check_state = check_seed_used = seed;
    check_seeded = 1;
}

/* splitmix64 (Steele, Lea, Flood 2014; the constants of Vigna's version) */
static inline uint64_t rnd64(void) {
    uint64_t z = (check_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* [lo, hi] inclusive; the modulo bias is far below what a test can notice */
static inline int64_t rnd_range(int64_t lo, int64_t hi) {
    return lo + (int64_t)(rnd64() % (uint64_t)(hi - lo + 1));
}

/* the top 53 (24) bits, so the result is exact and never reaches 1 */
static inline double rnd_unit(void) { return (double)(rnd64() >> 11) * 0x1.0p-53; }
static inline float rnd_unitf(void) { return (float)(rnd64() >> 40) * 0x1.0p-24f; }

/* Box-Muller with u1 in (0, 1] so that log(u1) is finite */
static inline float rnd_normal(void) {
    double u1 = (double)((rnd64() >> 11) + 1) * 0x1.0p-53, u2 = rnd_unit();
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static inline void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

static inline int check_done(const char *name) {
    if (failures) {
        fprintf(stderr, "%s: %d failure%s", name, failures, failures == 1 ? "" : "s");
        if (check_seeded) fprintf(stderr, " (seed %" PRIu64 ")", check_seed_used);
        fputc('\n', stderr);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

#endif
