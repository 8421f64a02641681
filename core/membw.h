/* membw: the machine's memory read bandwidth, measured (a STREAM-like probe).
 *
 * Decoding one token reads every weight once, so tokens/s can never exceed
 * read bandwidth / weight bytes per token: `hearth bench` prints that floor
 * beside its figures. The probe reads a buffer several times larger than the
 * last-level cache with the same number of threads as the engine (each
 * thread its own contiguous share, 32-byte loads summed so the reads cannot
 * be optimised away) and reports the best of a few passes, as STREAM does.
 * It runs in a child process so that its buffer never counts in the
 * caller's peak RSS. */
#ifndef HEARTH_MEMBW_H
#define HEARTH_MEMBW_H

#include <stddef.h>

/* Bytes per second read by n_threads threads over a buffer of `bytes`
 * (0: 256 MiB), best of `passes` (0: 5) after one untimed pass; < 0 on
 * failure with err filled. */
double membw_read_probe(int n_threads, size_t bytes, int passes, char *err, size_t errlen);

#endif
