/* sparse: the FFN of one slice of cold neurons, computing only the neurons
 * that fire (PowerInfer's CPU side).
 *
 * With a sidecar, each layer's neurons are reordered by firing frequency into
 * positions 0..hidden-1: position p holds original neuron ids[p]. Positions
 * [0, hot) run on the GPU worker; the rest are split among CPU workers into
 * contiguous slices [pos0, pos0 + n) that start on multiples of SPARSE_GROUP.
 * A slice keeps pointers to the model's own gate/up matrices (rows = neurons
 * in the original order, any quant type: a candidate's row is read where it
 * lies) and owns down_t, the slice's columns of ffn_down gathered into rows:
 *
 *     down_t[j, :] = Q8_0( ffn_down[:, ids[j]] )     [n][dim], dim % 32 == 0
 *
 * so a fired neuron's down contribution is one contiguous row, read once.
 *
 * The result is defined exactly, so that any split of the positions among
 * processes and threads, and any batching of tokens, gives bit-identical
 * layer outputs (the sum is in int64 fixed point, see FFN_GROUP in
 * ffn_sum.h; here the groups are SPARSE_GROUP positions):
 *
 *   per token t:
 *     xq = the token's activations quantized to the gate/up vec_dot_type by
 *          its from_float (matmul's quantizer; F32 vec_dot_type: xn itself)
 *     for each candidate position j of the slice (cand NULL: all of them):
 *       gated:   g = vec_dot(gate row ids[j], xq); fired iff |act(g)| * scale_j > threshold
 *                (CATS); only then u = vec_dot(up row ids[j], xq), h = act(g) * u
 *       ungated: u = vec_dot(up row ids[j], xq), h = act(u); fired iff |h| * scale_j > threshold
 *       (dots bit-identical to what matmul gives for those rows; act is
 *       ffn_sum.h's ffn_activation)
 *     for each group G (global positions [32G, 32G + 32)) with a fired neuron:
 *       y[i] = 0; for fired j of G in ascending j:
 *           y[i] = fmaf(h_j * d_{j,b}, q_{j,i}, y[i])     (b = i / 32)
 *       acc[t, :] += fixed(y)                               (ffn_acc_add_fixed)
 *
 * where d_{j,b} and q_{j,i} are down_t's Q8_0 block scale and quant. The
 * scalar kernel uses fmaf, the AVX2 one _mm256_fmadd_ps: both round once per
 * step, so scalar and AVX2 results are bit-identical too.
 *
 * Work split: phase 1 (h and the fired lists) hands out whole groups from a
 * shared counter; phase 2 (the down rows) splits d_model into per-thread
 * column ranges of whole Q8_0 blocks. Each output element is then computed by
 * exactly one thread in the order above, whatever the thread count, and no
 * per-thread accumulators need summing. */
#ifndef HEARTH_SPARSE_H
#define HEARTH_SPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "ffn_sum.h"
#include "model.h"
#include "quant.h"
#include "tpool.h"

#define SPARSE_GROUP 32 /* positions per fixed-point group */

/* One slice [pos0, pos0 + n) of one layer. */
struct sparse_ffn {
    int64_t dim;          /* d_model; a multiple of 32 */
    int64_t n;            /* positions in the slice */
    int64_t pos0;         /* first global position; a multiple of SPARSE_GROUP */
    int64_t hidden;       /* the layer's neuron count (rows of gate/up) */
    const int32_t *ids;   /* [n] original neuron ids, caller owns */
    struct weight gate;   /* the model's matrices, not copied; gate.data NULL when ungated */
    struct weight up;
    int gated;
    enum ffn_act act;
    block_q8_0 *down_t;   /* [n][dim / 32] blocks, owned */
    float threshold;      /* fires iff |act(gate)| * scale (ungated: |h| * scale) > threshold; < 0: every
                           * candidate fires */
    const float *scale;   /* [n] per-position weight of the firing test, caller owns; NULL: 1 */
};

/* Working memory of sparse_ffn_run for slices of at most max_n positions of
 * width dim and batches of at most max_tok tokens. One per caller; reused. */
struct sparse_scratch {
    int64_t dim, max_n;
    int max_tok;
    size_t xq_bytes;  /* capacity of each of xq_up, xq_gate */
    void *xq_up;      /* [max_tok] rows of up's vec_dot_type */
    void *xq_gate;    /* [max_tok] rows of gate's vec_dot_type (when it differs) */
    float *h;         /* [max_tok][max_n]: h of fired neurons, compact per group */
    int32_t *idx;     /* [max_tok][max_n]: their local positions j, ascending per group */
    int32_t *nfired;  /* [max_tok][max_n / 32 + 1]: fired count per group */
    float *y;         /* [dim]: one group's down sum (threads own column ranges) */
};

struct sparse_stats {
    int64_t evaluated; /* (token, neuron) candidates: their gate row (ungated: up row) was read */
    int64_t fired;     /* pairs that fired: their down_t row (gated: and up row) was read */
};

/* Builds down_t for the slice (in the calling thread: a pinned worker's pages
 * land on its own NUMA node). L's down may be of any type with to_float.
 * threshold: see struct sparse_ffn. ids must stay valid until sparse_ffn_free. */
int sparse_ffn_init(struct sparse_ffn *sf, const struct llama_config *c, const struct llama_layer *L,
                    const int32_t *ids, int64_t n, int64_t pos0, float threshold, char *err, size_t errlen);
void sparse_ffn_free(struct sparse_ffn *sf);
/* Bytes of one down_t row (what a fired neuron reads besides its gate/up rows). */
size_t sparse_down_row_bytes(const struct sparse_ffn *sf);

int sparse_scratch_create(struct sparse_scratch *ss, int64_t dim, int64_t max_n, int max_tok, char *err,
                          size_t errlen);
void sparse_scratch_free(struct sparse_scratch *ss);

/* acc[t*dim + i] += FFN of token t restricted to the slice's firing neurons,
 * for t < n_tok (definition at the top of this file). xn: [n_tok, dim].
 * cand: NULL = every neuron of the slice is a candidate; else [n_tok][n]
 * bytes, nonzero = candidate. st (may be NULL) is added to, not reset.
 * tp may be NULL (caller's thread only). */
int sparse_ffn_run(const struct sparse_ffn *sf, const float *xn, int n_tok, const uint8_t *cand, int64_t *acc,
                   struct sparse_stats *st, struct sparse_scratch *ss, struct tpool *tp, char *err, size_t errlen);

/* The down kernel, exposed for tests: for blocks b in [b0, b1) of the rows,
 *   y[32b + i] = fold over k < cnt of fmaf(h[k] * d(rows[idx[k]], b), q(rows[idx[k]], b, i), .)
 * starting from 0, where rows has row_blocks blocks per row.
 * _ref is the scalar version; sparse_down_q8_0 the fastest available (AVX2
 * where present, HEARTH_NO_SIMD=1 forces scalar); they are bit-identical. */
typedef void (*sparse_down_fn)(float *y, const block_q8_0 *rows, int64_t row_blocks, const int32_t *idx,
                               const float *h, int cnt, int64_t b0, int64_t b1);
void sparse_down_q8_0_ref(float *y, const block_q8_0 *rows, int64_t row_blocks, const int32_t *idx, const float *h,
                          int cnt, int64_t b0, int64_t b1);
void sparse_down_q8_0(float *y, const block_q8_0 *rows, int64_t row_blocks, const int32_t *idx, const float *h,
                      int cnt, int64_t b0, int64_t b1);

#endif
