/* predictor: the per-layer activation predictors of the sparse FFN (PowerInfer).
 *
 * For one FFN layer, a small MLP reads the FFN input xn (dim floats, after the
 * norm) and says which of the layer's n_out hidden neurons will fire for this
 * token, so that CPU workers compute only those:
 *
 *     z     = relu(W1 xn + b1)          W1 [rank][dim], z [rank]
 *     logit = W2 z + b2                 W2 [n_out][rank], logit [n_out]
 *     fire  = logit > cutoff            one cutoff per layer
 *
 * The module owns the model (struct predictor, f32), its training (minibatch
 * Adam on a weighted binary cross-entropy, split over a thread pool), the
 * choice of the cutoff (the largest one that keeps a target recall on the
 * training samples: a missed neuron costs quality, a false positive only
 * compute), the metrics, and the run-time form (struct predictor_rt: W1 and a
 * chosen subset of W2's rows quantized to Q8_0 and evaluated with matmul()).
 *
 * Shapes are row-major and token-major: x is [n][dim] f32, labels y are
 * [n][n_out] bytes (0 or 1), logits [n][n_out] f32.
 *
 * rank is a multiple of 32 so that the run-time W2 rows are whole Q8_0 blocks;
 * the run-time form also needs dim to be a multiple of 32 (W1's rows). */
#ifndef HEARTH_PREDICTOR_H
#define HEARTH_PREDICTOR_H

#include <stddef.h>
#include <stdint.h>

#include "matmul.h"
#include "tpool.h"

struct predictor {
    int64_t dim, rank, n_out;
    float *w1;    /* [rank][dim] */
    float *b1;    /* [rank] */
    float *w2;    /* [n_out][rank] */
    float *b2;    /* [n_out] */
    float cutoff; /* predicted to fire iff logit > cutoff; 0 until trained */
};

/* Allocates the tensors and fills them with a seeded initialisation: W1 rows
 * N(0, 2/dim) (He, for unit-variance inputs), W2 N(0, 1/rank), biases 0,
 * cutoff 0. 0 ok; negative with err filled for sizes out of range (dim, n_out
 * >= 1; rank >= 32 and a multiple of 32) or no memory (p is then zeroed). */
int predictor_init(struct predictor *p, int64_t dim, int64_t rank, int64_t n_out, uint64_t seed, char *err,
                   size_t errlen);
void predictor_free(struct predictor *p); /* zeroes p; a zeroed p is fine */

/* The rank for a layer from its firing statistics: freq[n_out] = fraction of
 * samples in which each neuron fired.
 *
 * Rule: neurons firing in more than 99% of samples are left out (b2 alone
 * predicts them); of the others, c90 = how many of the most frequent ones are
 * needed to cover 90% of their firings. rank = c90 / 8 rounded up to a
 * multiple of 32, clamped to [32, max_rank] (max_rank rounded down to a
 * multiple of 32, at least 32). A dense, flat layer (c90 near 0.9 n_out) thus
 * gets a large rank; a skewed one, whose firings come from few neurons, a
 * small one. For n_out 1536: c90 256 -> 32, 512 -> 64, 1000 -> 128. */
int64_t predictor_choose_rank(const float *freq, int64_t n_out, int64_t max_rank);

struct predictor_train_opts {
    int epochs;          /* passes over the samples (10) */
    int batch;           /* samples per Adam step (64) */
    float lr;            /* Adam step size at the start; cosine decay to lr/10 at the end (1e-2) */
    float weight_decay;  /* AdamW decoupled decay on W1, W2 (not biases), per unit lr (1e-2) */
    float pos_weight;    /* weight of the positive class in the loss, > 0; > 1 favours recall (2) */
    float target_recall; /* cutoff chosen for this recall on the calibration samples, in (0, 1] (0.95) */
    int data_init;       /* 1: first scale W1 by 1/rms(x) and set b2 to the labels' log-odds (1) */
    /* Fraction of the samples (a seeded random subset) kept out of training
     * to choose the cutoff on, in [0, 0.9]. 0 (the default): the cutoff is
     * chosen on the training samples themselves, whose recall then overstates
     * the recall on new tokens (a model fits its training set); 0.1-0.2 gives
     * a cutoff whose recall holds on new tokens of the same distribution. */
    float calib_frac;
    uint64_t seed;       /* shuffling order and calibration subset (1) */
};

void predictor_train_opts_default(struct predictor_train_opts *o);

/* Trains p from its current weights on x [n][dim], y [n][n_out], then sets
 * p->cutoff for o->target_recall on (x, y) (on the calibration subset when
 * o->calib_frac > 0). tp may be NULL (one thread).
 *
 * Deterministic for a given seed, and also invariant to the thread count: the
 * threads split output rows of each matrix product and every output is summed
 * in a fixed order whatever the split. Results differ between the AVX2 kernels
 * and the scalar ones (HEARTH_NO_SIMD=1), which round differently (FMA).
 * 0 ok; negative with err filled for bad sizes or options, or no memory;
 * p is then unchanged (training works on copies, written back at the end). */
int predictor_train(struct predictor *p, const float *x, const uint8_t *y, int64_t n,
                    const struct predictor_train_opts *o, struct tpool *tp, char *err, size_t errlen);

/* logits [n][n_out] of the f32 model for x [n][dim] (b2 included). */
int predictor_forward(const struct predictor *p, const float *x, int64_t n, float *logits, struct tpool *tp,
                      char *err, size_t errlen);

/* The training loss: the mean over all n * n_out (sample, neuron) pairs of
 *     -(pos_weight * y * log sigmoid(l) + (1 - y) * log(1 - sigmoid(l)))
 * and its gradient with respect to every parameter, written into grad (a
 * predictor of p's shape, e.g. from predictor_init; its cutoff is untouched).
 * The same kernels as predictor_train; exposed for gradient checks. */
int predictor_loss_grad(const struct predictor *p, const float *x, const uint8_t *y, int64_t n, float pos_weight,
                        double *loss, struct predictor *grad, struct tpool *tp, char *err, size_t errlen);

/* Over all (sample, neuron) pairs of (x, y), with fire = logit > p->cutoff. */
struct predictor_metrics {
    int64_t tp, fp, fn, tn;
    double recall;         /* tp / (tp + fn); 1 when no positive */
    double precision;      /* tp / (tp + fp); 1 when nothing predicted */
    double predicted_frac; /* (tp + fp) / pairs: the fraction of neurons computed */
    double actual_frac;    /* (tp + fn) / pairs: the fraction that fired */
};

int predictor_evaluate(const struct predictor *p, const float *x, const uint8_t *y, int64_t n,
                       struct predictor_metrics *m, struct tpool *tp, char *err, size_t errlen);

/* Run-time form. W1 (all of it) and the rows ids[0..n) of W2, with their
 * biases, quantized to Q8_0 once; evaluated with matmul(), so the input is
 * quantized to 8 bits like every other matrix product. Deterministic: the
 * same inputs give bit-identical masks in any process and for any thread
 * count. */
struct predictor_rt {
    int64_t dim, rank, n; /* n: neurons predicted, the ids given to init */
    void *w1q;            /* [rank] Q8_0 rows of dim weights */
    float *b1;            /* [rank] */
    void *w2q;            /* [n] Q8_0 rows of rank weights: row j is W2 row ids[j] */
    float *b2;            /* [n]: b2[ids[j]] */
    float cutoff;
};

/* Per caller; grows as needed; never shared by two concurrent evals. After a
 * successful eval, logit holds [n_tok][n] logits (b2 included) of that eval. */
struct predictor_rt_scratch {
    float *z;      /* [n_tok][rank] */
    float *logit;  /* [n_tok][n] */
    int64_t z_cap, logit_cap; /* floats z and logit have room for (one scratch may serve
                               * predictors of different sizes) */
    struct matmul_scratch ms;
};

#define PREDICTOR_RT_SCRATCH_INIT {NULL, NULL, 0, 0, MATMUL_SCRATCH_INIT}

void predictor_rt_scratch_free(struct predictor_rt_scratch *s); /* keeps s reusable */

/* ids[j] in [0, p->n_out), n >= 0; repeats are allowed. dim must be a
 * multiple of 32. 0 ok; negative with err filled (rt zeroed). */
int predictor_rt_init(struct predictor_rt *rt, const struct predictor *p, const int32_t *ids, int64_t n, char *err,
                      size_t errlen);
void predictor_rt_free(struct predictor_rt *rt); /* zeroes rt */

/* mask [n_tok][rt->n]: mask[t * n + j] = 1 iff neuron ids[j] is predicted to
 * fire for token t of x [n_tok][dim]. tp may be NULL. */
int predictor_rt_eval(const struct predictor_rt *rt, const float *x, int64_t n_tok, uint8_t *mask,
                      struct predictor_rt_scratch *s, struct tpool *tp, char *err, size_t errlen);

/* Bytes of weights and biases read per evaluated token (all of them). */
size_t predictor_rt_bytes(const struct predictor_rt *rt);
/* The same for a run-time form of n neurons, before building it (hearth plan's budget). */
size_t predictor_rt_size(int64_t dim, int64_t rank, int64_t n);

#endif
