/* ffn_sum: the FFN's exact sum and activation, a leaf of the kernels that
 * every FFN implementation shares (the dense FFN, ffn.h; the sparse hot/cold
 * FFN, sparse.h; the input-major products, insparse.h) so that they give the
 * same bits without knowing each other.
 *
 * The FFN's down projection is a sum over neurons, and the runtime splits the
 * neurons among processes (hot ones on the GPU worker, cold shards on CPU
 * workers). Float addition is not associative, so summing partial results
 * in another grouping would change the last bits, and greedy decoding
 * amplifies that into other tokens. hearth therefore defines the sum
 * exactly: neurons form fixed groups of FFN_GROUP; each group's partial
 * product (computed by the same kernel wherever it runs) is rounded to fixed
 * point with FFN_FIXED_SHIFT fraction bits and the groups are added as
 * int64, which is associative. Any partition of the neurons into whole
 * groups then gives bit-identical layer outputs, and the dense pass uses the
 * same definition. The rounding step is 2^-32 (2.3e-10), far below float32
 * precision for the values involved; the range is +-2^31. */
#ifndef HEARTH_FFN_SUM_H
#define HEARTH_FFN_SUM_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define FFN_GROUP 256
#define FFN_FIXED_SHIFT 32

enum ffn_act {
    FFN_ACT_SILU = 0, /* SwiGLU: down(silu(gate x) * up x) */
    FFN_ACT_RELU = 1, /* ReLU-gated: down(relu(gate x) * up x); ReluLLaMA, ProSparse */
    FFN_ACT_GELU = 2, /* GeGLU */
};

/* The FFN's activation function: h = act(gate x) * (up x), or act(up x) ungated. */
static inline float ffn_activation(float g, enum ffn_act act) {
    switch (act) {
    case FFN_ACT_RELU: return g > 0.0f ? g : 0.0f;
    case FFN_ACT_GELU: return 0.5f * g * (1.0f + tanhf(0.7978845608f * (g + 0.044715f * g * g * g)));
    case FFN_ACT_SILU: break;
    }
    return g / (1.0f + expf(-g));
}

/* acc[i] += round(y[i] * 2^FFN_FIXED_SHIFT) for count elements: the
 * definition (scalar; saturating, so a broken model is no undefined
 * behaviour). */
void ffn_acc_add_fixed(int64_t *acc, const float *y, size_t count);
/* The same, bit for bit, by the fastest kernel here (AVX2 where present;
 * HEARTH_NO_SIMD=1: the definition). */
void ffn_acc_add_fixed_fast(int64_t *acc, const float *y, size_t count);
/* x[i] += acc[i] * 2^-FFN_FIXED_SHIFT for count elements */
void ffn_acc_add_to(float *x, const int64_t *acc, size_t count);

#endif
