/* hotcold: one process's share of every layer's FFN under a sidecar plan
 * (core/sidecar.h), computed sparsely.
 *
 * The plan orders each layer's neurons by firing frequency into positions;
 * positions [0, hot) are hot, the rest cold. A process owns a position range
 * per layer: the single-process engine all of it, the GPU worker its hot
 * range, a CPU worker its shard of the cold range. Hot positions are all
 * candidates (they fire for most tokens, and predicting them would cost
 * more than it saves); cold positions are candidates only where the
 * layer's predictor expects them to fire, in the layers where the plan
 * found the predictor worth its cost (sidecar pred_use). Either way only
 * the neurons whose gate passes the threshold read their up and down
 * weights (core/sparse.h).
 *
 * Because positions are grouped the same way (SPARSE_GROUP) in every
 * process and each group's sum is exact (fixed point), the multi-process
 * runtime gives bit-identical results to the single-process engine for the
 * same sidecar, whatever the shards. */
#ifndef HEARTH_HOTCOLD_H
#define HEARTH_HOTCOLD_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "predictor.h"
#include "sidecar.h"
#include "sparse.h"
#include "tpool.h"

struct hotcold_slice {
    struct sparse_ffn ffn;
    struct predictor_rt pred;
    int has_ffn, has_pred;
    void *rows; /* the slice's gate and up rows, gathered in position order */
    int32_t *local_ids;
    float *scale; /* the firing test's scale_i, in position order */
};

/* What the FFN read, summed over every call (for hearth bench). */
struct hotcold_stats {
    int64_t tokens;        /* token-layers computed */
    int64_t evaluated;     /* (token, neuron) pairs whose gate/up rows were read */
    int64_t fired;         /* pairs whose down row was read */
    double weight_bytes;   /* FFN and predictor weight bytes read */
    double dense_bytes;    /* what the dense FFN of the same positions would read */
};

struct hotcold {
    int n_layers;
    int64_t dim, hidden;
    struct hotcold_slice *hot, *cold; /* [n_layers] */
    double dense_neuron_bytes;        /* gate + up rows and down column, dense */
    int max_tok;
    uint8_t *cand;                    /* [max_tok][largest cold slice] */
    struct sparse_scratch ss;
    struct predictor_rt_scratch ps;
    struct hotcold_stats stats;
};

/* Builds the slices of positions [p0[l], p1[l]) of each layer (p0 = p1:
 * nothing), each starting on a multiple of SPARSE_GROUP. The sidecar must be
 * planned and match the model. Call it on the thread (and NUMA node) that
 * will compute: the gathered weights are first touched here. */
int hotcold_create(struct hotcold *hc, const struct sidecar *sc, const struct llama_model *m, const int64_t *p0,
                   const int64_t *p1, int max_tok, char *err, size_t errlen);
void hotcold_destroy(struct hotcold *hc);

/* acc[n, dim] += this process's part of layer l's FFN of xn[n, dim]. */
int hotcold_ffn(struct hotcold *hc, int l, const float *xn, int n, int64_t *acc, struct tpool *tp, char *err,
                size_t errlen);
/* The same with hc as void *: what a pass installs as its FFN (forward.h,
 * forward_ffn_fn). */
int hotcold_ffn_cb(void *hc, int l, const float *xn, int n, int64_t *acc, struct tpool *tp, char *err,
                   size_t errlen);

/* Loads PATH (without samples), checks it against the model and that it
 * holds a plan (sc->planned: the hot/cold FFN) or input sparsity (sc->in_thr),
 * or both. */
int hotcold_load_sidecar(struct sidecar *sc, const char *path, const struct llama_model *m, char *err, size_t errlen);

#endif
