/* plot: an SVG of the profiled firing frequencies, to see the power law.
 *
 * One curve per FFN layer: its neurons sorted by firing frequency (hottest
 * first), x the neuron's rank as a fraction of the layer (so layers of
 * different widths share the axis), y the fraction of tokens on which it fires.
 * The y axis is logarithmic when the positive frequencies span two decades or
 * more (the usual case: a few neurons fire on almost every token, most on few),
 * linear otherwise; on a log axis, frequencies below its floor (zeros among
 * them) are drawn on the floor and counted in a note. Curves are coloured by
 * depth (viridis, first layer dark) with a legend for up to 10 layers and a
 * colour bar beyond. Each curve is one <path class="layer" data-layer="L">
 * with a <title> tooltip; the file has no other <path> elements.
 *
 * The file is written to PATH.tmp and renamed over PATH, so a reader never
 * sees half a plot; a PATH that exists and is not a regular file (a pipe,
 * /dev/stdout) is written directly. */
#ifndef HEARTH_PLOT_H
#define HEARTH_PLOT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* freq_sorted[l]: layer l's n[l] frequencies (finite, >= 0; descending for a
 * meaningful curve). title may be NULL. Returns 0, or -1 with err filled
 * (invalid data naming layer and rank, or the file and the system's reason). */
int plot_firing_svg(const char *path, const char *title, int n_layers, const float *const *freq_sorted,
                    const int64_t *n, char *err, size_t errlen);

/* The same SVG onto an open stream; name is used in error messages. The
 * stream is flushed, not closed. */
int plot_firing_svg_file(FILE *f, const char *name, const char *title, int n_layers,
                         const float *const *freq_sorted, const int64_t *n, char *err, size_t errlen);

#endif
