/* plan: how many neurons of each FFN layer are hot (kept on the GPU worker).
 *
 * The profiler measured, per layer and neuron, the firing frequency: the
 * fraction of tokens on which the neuron fires. Placing a neuron on the GPU
 * serves its firings there, so the plan maximises the expected number of
 * firings per token served hot,
 *
 *     served = sum over layers l of sum_{i < hot[l]} freq[l][i]
 *
 * subject to
 *   - memory:   fixed + sum_l hot[l] * neuron_bytes[l] <= budget (bytes);
 *   - granule:  hot[l] is a multiple of `group` (the GPU kernels work on groups
 *               of rows) or the layer's whole neuron count n[l];
 *   - minimum:  hot[l] == 0 or hot[l] >= min(min_hot, n[l]): a GPU launch and a
 *               synchronisation per layer only pay for enough work. The
 *               minimum is capped at n[l] so that a small layer can still be
 *               wholly hot.
 *
 * Within a layer all neurons cost the same, so its hot set is always its most
 * frequently firing neurons: freq[l] arrives sorted in descending order and
 * hot[l] is a prefix length. The minimum makes this a real integer program
 * (taking neurons by frequency or by value per byte can be far from optimal),
 * solved with GLPK's branch and cut. */
#ifndef HEARTH_PLAN_H
#define HEARTH_PLAN_H

#include <stddef.h>
#include <stdint.h>

struct plan_layer {
    int64_t n;            /* neurons, >= 0 */
    const float *freq;    /* [n] firing frequency in [0, 1], sorted descending */
    int64_t neuron_bytes; /* bytes one hot neuron costs on the GPU (its gate and up rows and its down column), >= 0 */
};

struct plan_problem {
    int n_layers;                    /* >= 1 */
    const struct plan_layer *layers; /* [n_layers] */
    int64_t group;                   /* hot counts are multiples of this (or n), >= 1 */
    int64_t min_hot;                 /* a layer's hot count is 0 or at least this (capped at n), >= 0 */
    int64_t budget;                  /* bytes of GPU memory hearth may use, >= fixed */
    int64_t fixed;                   /* bytes always resident: attention weights, KV cache, predictors */
    int time_limit_ms;               /* solver time limit; 0: PLAN_TIME_LIMIT_MS */
};

#define PLAN_TIME_LIMIT_MS 10000

struct plan_result {
    int64_t *hot;  /* [n_layers], caller-allocated: hot neurons of each layer (a prefix of its sorted order) */
    double served; /* expected firings per token served hot: sum of the hot neurons' frequencies */
    double total;  /* expected firings per token: sum of all frequencies */
    int64_t bytes; /* fixed + hot neuron bytes, <= budget */
    int optimal;   /* 1 when proven optimal; 0 when the time limit stopped the search with a feasible plan */
};

/* The optimal plan (or, when the time limit expires first, the best one found,
 * never worse than plan_greedy's). When everything fits, every neuron is hot
 * and GLPK is not called. Returns 0, or -1 with err filled for invalid input
 * (naming the field and layer) or a solver failure. */
int plan_solve(const struct plan_problem *p, struct plan_result *r, char *err, size_t errlen);

/* A feasible plan by value per byte: take the layers' blocks (a layer's first
 * block reaches its minimum, each later block is one more group) in order of
 * decreasing average frequency per byte while they fit. Fast, not optimal: the
 * heuristic the solver starts from, and the baseline the tests beat. */
int plan_greedy(const struct plan_problem *p, struct plan_result *r, char *err, size_t errlen);

/* Exhaustive search over every combination of allowed hot counts: the oracle
 * of the tests, for tiny instances only (fails when there are more than 10^7
 * combinations). r->optimal is 1. */
int plan_brute_force(const struct plan_problem *p, struct plan_result *r, char *err, size_t errlen);

#endif
