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
 *     acc[t, r] += fixed(y)                       (ffn_acc_add_fixed, ffn_sum.h)
 *
 * Scalar kernels use fmaf, the AVX2 ones _mm256_fmadd_ps (one rounding per
 * step both), and additions are plain adds, so scalar and AVX2 agree to the
 * bit (the Q8_0 kernel is sparse.h's sparse_down_q8_0, the same fold).
 * Threads split the output blocks; each output element is computed by one
 * thread in the order above, whatever the thread count. */
#ifndef HEARTH_INSPARSE_H
#define HEARTH_INSPARSE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ffn_sum.h"
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

/* ---- input sparsity in the forward pass: masks and calibration ----
 *
 * Each layer has four matrix inputs (sites, model.h's enum llama_site); a
 * struct insparse_layer holds one threshold per site and insparse_mask,
 * called on each input before its product (the pass's input tap, ffn.h),
 * zeroes what falls below it: the dense kernels then see the masked x. This
 * is the accuracy side of input sparsity (the same mask the input-major
 * kernels apply, with the model's own weights); the bytes side is
 * insparse_matmul and the q4t copies below. */
enum insparse_site {
    INSPARSE_QKV = LLAMA_SITE_QKV,   /* attention input, shared by q, k and v */
    INSPARSE_O = LLAMA_SITE_O,       /* attention output, o's input */
    INSPARSE_GU = LLAMA_SITE_GU,     /* FFN input, shared by gate and up */
    INSPARSE_DOWN = LLAMA_SITE_DOWN, /* SwiGLU output, down's input */
    INSPARSE_N_SITES = LLAMA_N_SITES,
};
const char *insparse_site_name(int site);

/* |x| histogram of one layer's sites: bin k (k >= 1) holds
 * 2^(INSPARSE_LOG2_MIN + (k - 1) / INSPARSE_BINS_PER_OCTAVE) <= |x| < the
 * next edge; bin 0 everything smaller (zeros too), the last bin everything
 * larger. Counters are atomic: the down input is masked from pool threads. */
#define INSPARSE_BINS_PER_OCTAVE 64
#define INSPARSE_LOG2_MIN (-24)
#define INSPARSE_OCTAVES 32
#define INSPARSE_BINS (INSPARSE_OCTAVES * INSPARSE_BINS_PER_OCTAVE + 2)
struct insparse_probe {
    _Atomic uint64_t hist[INSPARSE_N_SITES][INSPARSE_BINS];
    _Atomic uint64_t seen[INSPARSE_N_SITES]; /* entries recorded */
    _Atomic uint64_t kept[INSPARSE_N_SITES]; /* entries with |x| > in_thr: the rows a product reads */
};
void insparse_probe_reset(struct insparse_probe *p);
/* The lower edge of bin k (0 for bin 0). */
float insparse_bin_edge(int k);
/* The threshold that zeroes at least `sparsity` of the recorded entries of
 * a site: the upper edge of the bin where the count crosses it (0 for
 * sparsity <= 0). */
float insparse_probe_threshold(const struct insparse_probe *p, int site, double sparsity);
/* Share of the site's squared mass, sum x^2 (bins at their centre), below
 * threshold t: the relative error a random-direction W gives its output. */
double insparse_probe_energy_below(const struct insparse_probe *p, int site, float t);

/* Share of the site's recorded entries above threshold t (a bin edge, as
 * insparse_probe_threshold gives): the rows a product reads, its density. */
double insparse_probe_kept(const struct insparse_probe *p, int site, float t);

/* A model-wide target sparsity S spread over the (layer, site) inputs:
 * sp[l * 4 + site] for probes[0..n_layers). bytes[l * 4 + site]: the dense
 * weight bytes that input multiplies (0: not sparsified).
 *   uniform  every input zeroes the S-quantile of its calibration scores;
 *   greedy   steps of 5% per input, cheapest first, a step's cost the
 *            calibration x^2 mass it drops per weight byte it skips, until
 *            the skipped bytes are S of all (at most 90% per input).
 * Uniform is the better on the default model (docs/hot-cold.md). */
enum insparse_alloc { INSPARSE_ALLOC_UNIFORM = 0, INSPARSE_ALLOC_GREEDY = 1 };
void insparse_allocate(const struct insparse_probe *probes, int n_layers, const double *bytes, double target,
                       enum insparse_alloc alloc, double *sp);

struct insparse_q4t;

/* Input sparsity of one layer as one process applies it. thr: one
 * threshold per site; entries with score <= thr[site] are zeroed before the
 * product, score_i = |x_i| (TEAL) or, where norm[site] is set, |x_i| times
 * norm[site][i] (WINA: the norm of the site's weight columns i). 0 zeroes
 * only zeros: it changes nothing. probe (NULL: none) records the scores, for
 * calibration and measurement; the caller owns norm and probe. q4t: the
 * matrices (enum insparse_matrix) whose masked input pays to skip, stored
 * input-major (below), which the pass then reads instead of the dense
 * kernels; NULL: dense. The FFN's copies cover neurons [n0, n1). Owned
 * (insparse_layer_build / insparse_layer_free). */
struct insparse_layer {
    float thr[INSPARSE_N_SITES];
    const float *norm[INSPARSE_N_SITES];
    struct insparse_probe *probe;
    struct insparse_q4t *q4t[LLAMA_N_MATS];
    int64_t n0, n1;
};

/* Zeroes the entries of x [count] whose score is <= IL->thr[site], after
 * recording the scores in IL->probe when set. Entry k is column (col0 + k)
 * % width of the site's input (width: the matrices' n_in), which selects
 * its WINA norm. Nothing to do (returns at once) when the threshold is 0 and
 * there is no probe. Thread-safe. */
void insparse_mask(const struct insparse_layer *IL, int site, float *x, int64_t count, int64_t col0, int64_t width);

/* WINA's norms of a site: norm[i] = sqrt(sum over the site's matrices (q, k
 * and v for INSPARSE_QKV; gate and up for INSPARSE_GU) of ||W[:, i]||^2),
 * from the dequantised weights; norm has the matrices' n_in entries. 0, or
 * negative with err filled. */
int insparse_site_norms(const struct llama_layer *L, int site, float *norm, char *err, size_t errlen);

/* ---- the model's own Q4_1 weights, input-major, with an integer kernel ----
 *
 * q4t: a Q4_1 matrix regrouped without a second rounding. Its blocks are 32
 * inputs of one output row (d, m and 32 nibbles); here each group g of 32
 * inputs holds
 *
 *     d[n_out], m[n_out]      (fp16: the blocks' own scales and offsets)
 *     32 nibble rows, one per input of the group, n_out / 2 bytes each
 *
 * (stored band by band, below) so that an input whose quantised activation
 * is 0 is a nibble row never read (the scales of a group are read when any
 * of its inputs is). Each chunk of 64 outputs of a row is 32 bytes laid
 * out for the kernel's byte interleave (insparse.c, q4t_byte): four active
 * rows are interleaved so that each 32-bit lane holds one output's four
 * weights, and one vpdpbusd (maddubs + madd without VNNI) sums four inputs
 * for eight outputs.
 *
 * The product is the dense Q4_1 kernel's, bit for bit: with xq the input's
 * Q8_1 blocks (what matmul quantises x to), per output r, over blocks g in
 * ascending order,
 *     acc  = fmaf(d[g, r] * xq[g].d, (float) isum(g, r), acc)
 *     accm = fmaf(m[g, r], xq[g].s, accm)
 *     y[r] = acc + accm
 * with isum the exact integer sum over the block's nonzero xq entries (a
 * zero entry adds nothing, and a block of zeros leaves both sums as they
 * are), which is vec_dot_q4_1_q8_1's fold. So input sparsity (a mask before
 * quantisation) costs bytes and time only where the mask zeroes, and the
 * result equals the dense matmul of the masked input. */
struct insparse_q4t {
    int64_t n_in, n_out; /* n_in a multiple of 32, n_out of 64 */
    size_t group_bytes;  /* one group's bytes, all bands: 4 * n_out + 32 * n_out / 2 */
    uint8_t *data;       /* group_bytes * n_in / 32, owned, 64-byte aligned */
};
/* Stored band-major, so that each thread reads one contiguous run: the
 * outputs are cut in bands of INSPARSE_Q4T_BAND chunks of 64 (the last band
 * shorter, wb chunks), and band b holds, for each group g in turn, the
 * band's fp16 d[64 wb] and m[64 wb], then the group's 32 nibble rows of the
 * band, 32 wb bytes each (one cache line at wb = 2, skipped as a whole when
 * the input is zero). The band-group block of chunk c, group g: */
#define INSPARSE_Q4T_BAND 2
static inline const uint8_t *insparse_q4t_block(const struct insparse_q4t *m, int64_t g, int64_t c, int64_t *wb) {
    const int64_t nc = m->n_out / 64, b0 = c / INSPARSE_Q4T_BAND * INSPARSE_Q4T_BAND;
    *wb = nc - b0 < INSPARSE_Q4T_BAND ? nc - b0 : INSPARSE_Q4T_BAND;
    /* 1280: a chunk's 64 outputs of one group, 4 bytes of scales and 16 of nibbles each */
    return m->data + (size_t)(m->n_in / 32) * 1280 * (size_t)b0 + (size_t)g * 1280 * (size_t)*wb;
}
/* Row e's 32 bytes of chunk c in group g. */
static inline const uint8_t *insparse_q4t_row(const struct insparse_q4t *m, int64_t g, int e, int64_t c) {
    int64_t wb;
    const uint8_t *blk = insparse_q4t_block(m, g, c, &wb);
    return blk + (size_t)(256 * wb) + (size_t)(e * 32 * wb) + (size_t)(32 * (c % INSPARSE_Q4T_BAND));
}
/* The fp16 d (scale) and m (offset) of output r in group g. */
static inline const uint8_t *insparse_q4t_scale(const struct insparse_q4t *m, int64_t g, int64_t r, int offset) {
    int64_t wb;
    const uint8_t *blk = insparse_q4t_block(m, g, r / 64, &wb);
    return blk + (offset ? 128 * wb : 0) + 2 * (r - r / 64 / INSPARSE_Q4T_BAND * INSPARSE_Q4T_BAND * 64);
}
/* Whether w can have a whole q4t copy: Q4_1, inputs in whole 32s, outputs
 * in whole 64s (what insparse_q4t_build accepts). */
int insparse_q4t_fits(const struct weight *w);
/* From a Q4_1 weight (n_out a multiple of 64). 0, or negative with err. */
int insparse_q4t_build(struct insparse_q4t *m, const struct weight *w, char *err, size_t errlen);
/* The same for rows [r0, r1) and input columns [c0, c1) of w (r0, r1
 * multiples of 64 or r1 = n_out; c0, c1 multiples of 32): a shard's gate/up
 * rows, or its down columns. */
int insparse_q4t_build_range(struct insparse_q4t *m, const struct weight *w, int64_t r0, int64_t r1, int64_t c0,
                             int64_t c1, char *err, size_t errlen);
void insparse_q4t_free(struct insparse_q4t *m);
/* The weight of output r, input i, as its nibble (0..15): for tests. */
int insparse_q4t_nibble(const struct insparse_q4t *m, int64_t r, int64_t i);

/* One token: acc[r], accm[r] for r in [64 c0, 64 c1) over the blocks
 * [g0, g1) of xq [n_in / 32] as defined above (acc and accm are written,
 * not added to; the caller adds them). Returns the nibble rows read (inputs with a nonzero
 * xq, times the chunks). _ref is the scalar version; insparse_q4t_dot the
 * fastest (VNNI, AVX2 or scalar: HEARTH_NO_VNNI, HEARTH_NO_SIMD); all are
 * bit-identical. */
int64_t insparse_q4t_dot_ref(const struct insparse_q4t *m, const block_q8_1 *xq, float *acc, float *accm,
                             int64_t c0, int64_t c1, int64_t g0, int64_t g1);
int64_t insparse_q4t_dot(const struct insparse_q4t *m, const block_q8_1 *xq, float *acc, float *accm, int64_t c0,
                         int64_t c1, int64_t g0, int64_t g1);
/* y [n_tok][n_out] = W x_t for each token (x: [n_tok][n_in] floats,
 * quantised to Q8_1 as matmul does), threads splitting the chunks. scratch:
 * n_in / 32 blocks of Q8_1 and 2 * n_out floats per token, from
 * insparse_q4t_scratch_bytes. Returns the nibble rows read (inputs with a
 * nonzero quantised entry), summed over the tokens, or negative with err filled. tp may be NULL. */
size_t insparse_q4t_scratch_bytes(const struct insparse_q4t *m, int n_tok);
int64_t insparse_q4t_matmul(const struct insparse_q4t *m, const float *x, int n_tok, float *y, void *scratch,
                            struct tpool *tp, char *err, size_t errlen);
/* The general form: x_t at x + t * ldx, y_t at y + t * ldy; or, with acc
 * (y NULL), acc[t * ldy + r] += the fixed-point sum (ffn_acc_add_fixed,
 * ffn_sum.h) of each group of `group` inputs' product on its own, which is
 * what the dense matmul does for the FFN's down (matmul_out.group). group: a
 * multiple of 32 (0: all inputs, with y). */
int64_t insparse_q4t_matmul_ex(const struct insparse_q4t *m, const float *x, int64_t ldx, int n_tok, float *y,
                               int64_t *acc, int64_t ldy, int64_t group, void *scratch, struct tpool *tp, char *err,
                               size_t errlen);

/* ---- input sparsity's weights in a layer ----
 *
 * The matrices of a layer (model.h's enum llama_mat) by their place in
 * insparse_layer.q4t; each reads the input of its site (insparse_mat_site). */
enum insparse_matrix {
    INSPARSE_MQ = LLAMA_MAT_Q, INSPARSE_MK = LLAMA_MAT_K, INSPARSE_MV = LLAMA_MAT_V, INSPARSE_MO = LLAMA_MAT_O,
    INSPARSE_MGATE = LLAMA_MAT_GATE, INSPARSE_MUP = LLAMA_MAT_UP, INSPARSE_MDOWN = LLAMA_MAT_DOWN,
    INSPARSE_N_MATS = LLAMA_N_MATS,
};
const char *insparse_mat_name(int mat);
int insparse_mat_site(int mat);
/* The weight of matrix mat in L (its data NULL: absent). */
const struct weight *insparse_mat_weight(const struct llama_layer *L, int mat);
/* Builds the q4t copies of L's matrices with use[mat] set (the attention
 * matrices whole, the FFN's for neurons [n0, n1): gate/up rows, down
 * columns) into IL->q4t, freeing earlier ones; a matrix that is not Q4_1
 * or of an unusable shape is an error. *bytes (may be NULL) is added to. */
int insparse_layer_build(struct insparse_layer *IL, const struct llama_layer *L, const int *use, int64_t n0,
                         int64_t n1, size_t *bytes, char *err, size_t errlen);
void insparse_layer_free(struct insparse_layer *IL);
/* A sidecar's input sparsity (sidecar.h: thr [n_layers][4], use
 * [n_layers][7]) for layers[0..n_layers) put into ils[0..n_layers): with
 * attn, the attention inputs' thresholds and q/k/v/o copies; with ffn, the
 * FFN's thresholds and gate/up/down copies for neurons [n0[l], n1[l]) (n0
 * NULL: 0; n1 NULL: the layer's own count). *bytes (may be NULL) gets the
 * copies' bytes. */
int insparse_layers_apply(struct insparse_layer *ils, const struct llama_layer *layers, int n_layers,
                          const float *thr, const int32_t *use, int attn, int ffn, const int64_t *n0,
                          const int64_t *n1, size_t *bytes, char *err, size_t errlen);
/* The q4t copy of mat that the forward pass reads for neurons [n0, n1)
 * (ignored for attention) in a batch of n_tok rows, or NULL: none, one of
 * other neurons, or more rows than INSPARSE_Q4T_MAX_TOKENS (the dense
 * product reads each weight once for all rows; the input-major one reads
 * the rows' union of inputs once per row). The product is the dense one bit
 * for bit, so the choice changes no result, and a copy is used whatever the
 * threshold (0 still skips a ReLU input's zeros). */
#define INSPARSE_Q4T_MAX_TOKENS 1
const struct insparse_q4t *insparse_layer_q4t(const struct insparse_layer *IL, int mat, int64_t n0, int64_t n1,
                                              int n_tok);

/* ---- input sparsity in a pass ----
 *
 * A model's layers as one process applies them, and what the pass's taps
 * need. */
struct insparse_model {
    int n_layers;
    struct insparse_layer *layers; /* [n_layers], zeroed by create: thresholds 0, no copies */
    void *scratch;                 /* the q4t products', grown on demand */
    size_t scratch_bytes;
    /* input rows of the q4t products: read (a nonzero quantised input), and
     * all, summed over tokens and matrices, weighted by each row's bytes */
    uint64_t read_bytes, dense_bytes;
};
int insparse_model_create(struct insparse_model *im, int n_layers, char *err, size_t errlen);
/* Frees the layers' copies too. */
void insparse_model_free(struct insparse_model *im);
/* The taps a pass installs (model.h, struct layer_taps) for im: each input
 * masked by its layer's thresholds (and recorded by its probe); the products
 * of the matrices with a q4t copy (insparse_layer_q4t) through it, counted
 * in read_bytes and dense_bytes. */
struct layer_taps insparse_taps(struct insparse_model *im);

#endif
