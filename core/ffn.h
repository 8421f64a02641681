/* ffn: the dense FFN of a llama-family layer, for any range of its neurons,
 * summed exactly (ffn_sum.h).
 *
 *   acc[t, :] += down[:, n0:n1] h_t,   h_t = act(gate[n0:n1] xn_t) * (up[n0:n1] xn_t)
 *                                      (ungated: act(up[n0:n1] xn_t))
 *
 * with each group of FFN_GROUP neurons rounded to fixed point on its own, so
 * that the sums over any partition of [0, hidden_dim) into whole groups add
 * up to the whole FFN bit for bit (the runtime's hot and cold shards).
 * Input sparsity and profiling reach its products through the layer's taps
 * (model.h, struct layer_taps). */
#ifndef HEARTH_FFN_H
#define HEARTH_FFN_H

#include <stddef.h>
#include <stdint.h>

#include "ffn_sum.h"
#include "matmul.h"
#include "model.h"
#include "tpool.h"

/* Buffers of the FFN of one layer for up to max_batch tokens. */
struct ffn_scratch {
    int max_batch;
    float *gate; /* [B, hidden_dim] */
    float *up;   /* [B, hidden_dim] */
    struct matmul_scratch ms;
};

int ffn_scratch_create(struct ffn_scratch *fs, const struct llama_model *m, int max_batch, char *err, size_t errlen);
void ffn_scratch_free(struct ffn_scratch *fs);
/* Neuron ranges must start (and end, unless at hidden_dim) on multiples of
 * this: FFN_GROUP, or ffn_down's block size if larger. */
int64_t ffn_neuron_align(const struct llama_model *m);

/* acc[n, dim] += FFN_l restricted to neurons [n0, n1) of input xn[n, dim]
 * (the definition at the top), through the dense kernels. */
int ffn_partial(const struct llama_model *m, int l, const float *xn, int n, int64_t n0, int64_t n1, int64_t *acc,
                struct ffn_scratch *fs, struct tpool *tp, char *err, size_t errlen);
/* The same for one layer's weights given directly: the model's, or a CPU
 * worker's NUMA-local copy of its shard (a layer whose hidden size is the
 * shard's width; neuron indices then count from the shard's start, which
 * keeps the groups aligned because shards start on group boundaries); l is
 * the layer's index for the taps (NULL: none). */
int ffn_partial_layer(const struct llama_config *c, const struct llama_layer *L, int l, const float *xn, int n,
                      int64_t n0, int64_t n1, int64_t *acc, struct ffn_scratch *fs, const struct layer_taps *taps,
                      struct tpool *tp, char *err, size_t errlen);

#endif
