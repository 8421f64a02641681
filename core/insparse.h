/* insparse: training-free input sparsity (TEAL, WINA), with weights stored
 * input-major so that a skipped input is skipped bytes.
 *
 * y = W x over only the active inputs of x. W [n_out rows of n_in] is kept as
 * its transpose, one contiguous row per input channel, re-quantised from the
 * dequantised weights into 8-bit (Q8_0) or 4-bit (Q4_1) blocks of 32
 * outputs:
 *
 *     rows[i, :] = fmt( W[:, i] )        [n_in][n_out / 32 blocks]
 *
 * so y = sum over active i of x_i * rows[i, :] (axpy-style): an input that is
 * not active is a row never read. The GGUF block structs are reused as they
 * are (quant.h), so the formats need no new layout.
 *
 * Active inputs. Input i of a token is active iff score_i > threshold, with
 *     score_i = |x_i|                   (TEAL)
 *     score_i = |x_i| * norm_i          (WINA; norm_i = ||W[:, i]||_2 of the
 *                                        dequantised weights)
 * threshold < 0: every input is active (the dense product over the
 * re-quantised rows); threshold 0 keeps exactly the nonzero inputs, so a
 * ReLU-family input loses nothing.
 *
 * The sum is defined exactly, so that any split of the outputs among
 * threads, of the inputs among processes (in whole groups), and any batching
 * of tokens gives bit-identical results. Per token t and output r:
 *
 *   for each group G of INSPARSE_GROUP inputs ([G*256, G*256 + 256), the
 *   last one shorter) that has an active input:
 *     y = 0; for active i of G in ascending i:
 *       Q8_0: y = fmaf(x_i * d_{i,b}, q_{i,r}, y)
 *       Q4_1: y = y + fmaf(x_i * d_{i,b}, q_{i,r}, x_i * m_{i,b})
 *             (b = r / 32; d, m, q: row i's block b, quant of output r)
 *     acc[t, r] += fixed(y)                       (ffn_acc_add_fixed, forward.h)
 *
 * Scalar kernels use fmaf, the AVX2 ones _mm256_fmadd_ps (one rounding per
 * step both), and additions are plain adds, so scalar and AVX2 agree to the
 * bit (the Q8_0 kernel is sparse.h's sparse_down_q8_0, the same fold).
 * Threads split the output blocks; each output element is computed by one
 * thread in the order above, whatever the thread count. */
#ifndef HEARTH_INSPARSE_H
#define HEARTH_INSPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "quant.h"
#include "tpool.h"

#define INSPARSE_GROUP 256 /* inputs per fixed-point group */

enum insparse_fmt {
    INSPARSE_Q8_0 = 0, /* 34 bytes per 32 outputs (8.5 bits) */
    INSPARSE_Q4_1 = 1, /* 20 bytes per 32 outputs (5 bits): a second rounding of a 4-bit model */
};

/* One matrix, input-major. */
struct insparse_mat {
    int64_t n_in, n_out;  /* n_out a multiple of 32 */
    enum insparse_fmt fmt;
    size_t row_bytes;     /* bytes of one input's row: (n_out / 32) blocks */
    void *rows;           /* [n_in] rows, owned */
    float *norm;          /* [n_in] ||W[:, i]||_2 (dequantised), owned: WINA's weights */
};

/* Builds the input-major copy of w (any type with to_float; n_out a
 * multiple of 32). 0, or negative with err filled. */
int insparse_build(struct insparse_mat *im, const struct weight *w, enum insparse_fmt fmt, char *err, size_t errlen);
void insparse_free(struct insparse_mat *im);
/* Bytes of the whole copy (rows only; what a dense pass over it reads). */
size_t insparse_bytes(const struct insparse_mat *im);
const char *insparse_fmt_name(enum insparse_fmt fmt);

/* The active inputs of one row x[n]: writes their ids (ascending) to idx and
 * their values to h, returns their count. norm NULL: TEAL, else WINA. */
int64_t insparse_select(const float *x, int64_t n, float threshold, const float *norm, int32_t *idx, float *h);

/* Working memory for n_in inputs, n_out outputs and up to max_tok tokens. */
struct insparse_scratch {
    int64_t n_in, n_out;
    int max_tok;
    int32_t *idx;  /* [max_tok][n_in] */
    float *h;      /* [max_tok][n_in] */
    int64_t *gofs; /* [max_tok][n_groups + 1]: start of each group's actives in idx/h */
    float *y;      /* [n_out]: one group's sum (threads own block ranges) */
};
int insparse_scratch_create(struct insparse_scratch *ss, int64_t n_in, int64_t n_out, int max_tok, char *err,
                            size_t errlen);
void insparse_scratch_free(struct insparse_scratch *ss);

struct insparse_stats {
    int64_t inputs; /* (token, input) pairs seen */
    int64_t active; /* pairs whose row was read */
};

/* acc[t * n_out + r] += (W x_t)[r] restricted to x_t's active inputs, for
 * t < n_tok (definition at the top). x: [n_tok, n_in]. norm: NULL (TEAL) or
 * im->norm (WINA). st (may be NULL) is added to. tp may be NULL. */
int insparse_matmul(const struct insparse_mat *im, const float *x, int n_tok, float threshold, const float *norm,
                    int64_t *acc, struct insparse_stats *st, struct insparse_scratch *ss, struct tpool *tp,
                    char *err, size_t errlen);

/* The Q4_1 axpy kernel, exposed for tests: for blocks b in [b0, b1),
 *   y[32b + j] = fold over k < cnt of (. + fmaf(h[k] d, q_j, h[k] m)) from 0,
 * with d, m, q of block b of row idx[k] (rows of row_blocks blocks).
 * _ref is the scalar version, insparse_axpy_q4_1 the fastest (AVX2 where
 * present; HEARTH_NO_SIMD=1 forces scalar); they are bit-identical. */
void insparse_axpy_q4_1_ref(float *y, const block_q4_1 *rows, int64_t row_blocks, const int32_t *idx, const float *h,
                            int64_t cnt, int64_t b0, int64_t b1);
void insparse_axpy_q4_1(float *y, const block_q4_1 *rows, int64_t row_blocks, const int32_t *idx, const float *h,
                        int64_t cnt, int64_t b0, int64_t b1);

#endif
