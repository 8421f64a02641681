/* matmul: y = W x for a quantized weight matrix W and f32 activations x.
 *
 * W is a GGUF tensor of ne = [n_in, n_out]: n_out rows of n_in weights of type
 * wt, each row hearth_row_size(wt, n_in) bytes, rows back to back.
 * x is [n_tok, n_in] f32 (token-major), y is [n_tok, n_out] f32:
 *
 *     y[t*n_out + r] = sum_i W[r, i] * x[t*n_in + i]
 *
 * The activations are first quantized to the weight type's vec_dot_type
 * (Q8_0/Q8_1/Q8_K; F32 weights use x as is), in parallel, into the scratch,
 * which grows as needed and is reused between calls (one scratch per caller,
 * never shared by two concurrent calls). Output rows are then split across
 * the pool's threads in chunks taken from a shared counter (threads that
 * finish early take more). For n_tok > 1 a chunk is a tile of rows x tokens,
 * so the tile's weight rows stay in cache while all its tokens use them. */
#ifndef HEARTH_MATMUL_H
#define HEARTH_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "tpool.h"
#include "types.h"

struct matmul_scratch {
    void *buf;    /* quantized activations, [n_tok] rows of the vec_dot_type */
    size_t bytes; /* capacity of buf */
};

#define MATMUL_SCRATCH_INIT {NULL, 0}

void matmul_scratch_free(struct matmul_scratch *s); /* keeps s reusable */

/* 0 ok; negative with err filled when wt has no kernels, n_in is not a
 * multiple of the block size, a size is out of range, or memory runs out.
 * tp may be NULL (run on the caller only). */
int matmul(struct tpool *tp, float *y, const void *w, enum hearth_type wt, const float *x, int64_t n_in,
           int64_t n_out, int64_t n_tok, struct matmul_scratch *s, char *err, size_t errlen);

/* As matmul, but computes only output rows [r0, r1) (0 <= r0 <= r1 <= n_out);
 * y keeps its [n_tok, n_out] layout and its other entries are not written.
 * Used for shards of neurons. */
int matmul_rows(struct tpool *tp, float *y, const void *w, enum hearth_type wt, const float *x, int64_t n_in,
                int64_t n_out, int64_t n_tok, int64_t r0, int64_t r1, struct matmul_scratch *s, char *err,
                size_t errlen);

/* As matmul, but weight row r starts at (const char *)w + r * w_stride
 * (w_stride >= hearth_row_size(wt, n_in)): a block-aligned column slice
 * [c0, c0 + n_in) of a wider matrix, e.g. the FFN down projection restricted
 * to a shard of neurons, is w = base + hearth_row_size(wt, c0) with the wide
 * matrix's row size as the stride. */
int matmul_strided(struct tpool *tp, float *y, const void *w, enum hearth_type wt, size_t w_stride, const float *x,
                   int64_t n_in, int64_t n_out, int64_t n_tok, struct matmul_scratch *s, char *err, size_t errlen);

/* ---- fused products: several matrices over one input, in one pool run ----
 *
 * A decode step is a few hundred small products; what costs is not their
 * arithmetic but the synchronisation around each (wake the pool, quantize,
 * wait at a barrier, wait for the last tile). matmul_fused computes several
 * outputs over the same input x with one pool run: x is quantized once, one
 * barrier, then the tiles of every output are taken from one counter. Q, K
 * and V are one call; gate and up are one; the down projection with its
 * fixed groups is one (see acc_add).
 *
 * Every output value is the same vec_dot (or vec_dot4) call on the same bytes
 * as matmul would make, so results are bit-identical to separate calls,
 * whatever the threads, tiles or batch. */
struct matmul_out {
    const void *w;        /* weight rows, row r at (const char *)w + r * w_stride */
    enum hearth_type wt;
    size_t w_stride;      /* 0: hearth_row_size(wt, n_in) */
    int64_t n_out;        /* rows of W: y and acc rows are [n_tok, n_out] */
    int64_t r0, r1;       /* rows computed, 0 <= r0 <= r1 <= n_out */
    /* optional: rows [r0, r0 + n8) also as 8-row groups (quant.h, repack8),
     * group k (rows r0 + 8k ..) at (const char *)w8 + k * w8_stride, each
     * starting at the block of the column w starts at. These rows then run
     * the 8-row kernel (same bits as the rows of w, see vec_dot8). */
    const void *w8;
    size_t w8_stride;
    int64_t n8;           /* a multiple of 8, r0 + n8 <= r1 */
    /* exactly one of: */
    float *y;             /* y[t * n_out + r] = W[r, :] . x[t, :] */
    /* acc_add(&acc[t * n_out + ra], v, rb - ra) for each group g of `group`
     * inputs (the last may be shorter) and each tile of rows [ra, rb), where
     * v[r - ra] = W[r, g] . x[t, g]: the per-group partial sums, each from
     * vec_dot over the group's blocks, handed to a sink (the FFN's fixed
     * point sum) that must add commutatively. group: a multiple of the block
     * sizes of wt and of its vec_dot_type. */
    int64_t *acc;
    int64_t group;
    void (*acc_add)(int64_t *acc, const float *v, size_t count);
};

/* Where the input comes from: x[n_tok, n_in] as floats, or computed block by
 * block by fill(ctx, t, i0, n, dst): dst[0..n) = x[t, i0 .. i0 + n), called
 * from any pool thread (e.g. SwiGLU from gate and up, fused into the
 * quantization of the down projection's input). */
struct matmul_in {
    const float *x; /* NULL when fill is set */
    void (*fill)(void *ctx, int64_t t, int64_t i0, int64_t n, float *dst);
    void *ctx;
};

/* 0 ok; negative with err filled as matmul. Outputs whose weight types have
 * different vec_dot_types run as separate groups (still correct, less fused). */
int matmul_fused(struct tpool *tp, const struct matmul_in *in, int64_t n_in, int64_t n_tok,
                 const struct matmul_out *outs, int n_outs, struct matmul_scratch *s, char *err, size_t errlen);

#endif
