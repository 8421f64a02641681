/* sidecar: everything hearth learns offline about a model, in one GGUF file
 * next to it (MODEL.hearth.gguf by convention).
 *
 * `hearth profile` writes the activation statistics: per layer the firing
 * threshold, each neuron's firing frequency and the (input, fired) samples
 * the predictors train on. `hearth plan` adds the placement (each layer's
 * neurons ordered by frequency and how many of them are hot) and the
 * trained predictors. The runtime reads the finished file.
 *
 * A neuron i of layer l fires for a token when its gated activation,
 * weighted by the neuron's typical output size, exceeds the layer's
 * threshold:  |act(gate_i x)| * scale_i > threshold[l]  (ungated FFNs:
 * |act(up_i x)| * scale_i), with scale_i = rms(up_i x) * |down column i|
 * over the calibration text (ungated: |down column i|). This is CATS's
 * test (a threshold on the gate) made aware of what the neuron's up and
 * down weights would do with it: |act(g)| * |u| * |d| is the size of the
 * neuron's contribution, and the gate is all that is known before its up
 * row is read. A neuron that does not fire counts as zero: its up row and
 * down column are never read.
 *
 * Layout (GGUF v3; keys under hearth.*, tensors named blk.L.*):
 *
 *   hearth.sidecar.version          u32  SIDECAR_VERSION
 *   hearth.sidecar.n_layers/dim/hidden   u32  shape of the model it belongs to
 *   hearth.model.sha256 / bytes / name   provenance of the model
 *   hearth.profile.corpus / corpus_sha256 / tokens / sparsity / n_ctx
 *   ffn_threshold                   F32 [n_layers]
 *   blk.L.ffn_freq                  F32 [hidden]         firing frequency in [0, 1]
 *   blk.L.ffn_scale                 F32 [hidden]         scale_i of the firing test
 *   blk.L.sample_x                  F16 [dim, n_samples]  FFN inputs (after RMSNorm)
 *   blk.L.sample_fired              I8  [ceil(hidden/8), n_samples]  bit i%8 of byte i/8
 *   -- after `hearth plan` --
 *   hearth.plan.gpu_budget / fixed_bytes / group / min_hot
 *   ffn_hot                         I32 [n_layers]        hot positions [0, hot)
 *   blk.L.ffn_order                 I32 [hidden]          position -> neuron id
 *   blk.L.pred_w1 F32 [dim, rank]   blk.L.pred_b1 F32 [rank]
 *   blk.L.pred_w2 F32 [rank, hidden] blk.L.pred_b2 F32 [hidden]
 *   pred_cutoff / pred_recall / pred_precision / pred_predicted  F32 [n_layers]
 *   pred_use                        I32 [n_layers]        1: cold neurons go through the predictor
 *   -- input sparsity (core/insparse.h), after `hearth profile --in-sparsity S` --
 *   hearth.insparse.target          f32  the model-wide target S (share of matrix bytes skipped)
 *   insparse_thr                    F32 [4, n_layers]     per layer the thresholds of the four
 *                                                        matrix inputs (enum insparse_site)
 *   insparse_density                F32 [4, n_layers]     share of each input kept on the calibration text
 *   insparse_use                    I32 [7, n_layers]     per layer and matrix (enum insparse_matrix):
 *                                                        1: read through its input-major copy
 * A sidecar may hold input sparsity without a plan: the FFN then stays
 * dense (split among the workers as without a sidecar) with masked inputs.
 * With a plan, the FFN is the plan's hot/cold one and only the attention
 * thresholds apply.
 */
#ifndef HEARTH_SIDECAR_H
#define HEARTH_SIDECAR_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "model.h"
#include "predictor.h"

#define SIDECAR_VERSION 1

struct sidecar_layer {
    float threshold;
    float *freq;  /* [hidden] */
    float *scale; /* [hidden] */
    /* profile samples: NULL unless loaded with samples */
    int64_t n_samples;
    uint16_t *sample_x;     /* [n_samples][dim] IEEE half */
    uint8_t *sample_fired;  /* [n_samples][fired_bytes] */
    /* plan: order NULL before `hearth plan` */
    int32_t *order; /* [hidden] */
    int64_t hot;
    int has_pred;
    int use_pred; /* the plan's choice: the predictor saves more than it costs */
    struct predictor pred;
    float recall, precision, predicted; /* held-out, of the run-time form */
};

struct sidecar {
    int n_layers;
    int64_t dim, hidden;
    char model_sha256[65];
    uint64_t model_bytes;
    char model_name[256];
    char corpus[256];
    char corpus_sha256[65];
    int64_t tokens;  /* calibration tokens profiled */
    float sparsity;  /* target share of (token, neuron) pairs that do not fire */
    int n_ctx;       /* context of the calibration chunks */
    int planned;     /* order/hot/predictors present */
    int64_t gpu_budget, fixed_bytes, group, min_hot;
    struct sidecar_layer *layers; /* [n_layers] */
    /* input sparsity: in_thr NULL when the file has none */
    float in_target;
    float *in_thr;     /* [n_layers][4] */
    float *in_density; /* [n_layers][4] */
    int32_t *in_use;   /* [n_layers][7] */
};

#define SIDECAR_IN_SITES 4 /* INSPARSE_N_SITES */
#define SIDECAR_IN_MATS 7  /* INSPARSE_N_MATS */

/* Allocates the input-sparsity arrays (zeroed: thresholds 0, nothing
 * input-major). */
int sidecar_alloc_insparse(struct sidecar *sc, char *err, size_t errlen);

static inline int64_t sidecar_fired_bytes(const struct sidecar *sc) { return (sc->hidden + 7) / 8; }

/* Empty sidecar of a model's shape (all arrays allocated, zeroed). */
int sidecar_init(struct sidecar *sc, int n_layers, int64_t dim, int64_t hidden, char *err, size_t errlen);
void sidecar_free(struct sidecar *sc);
/* Allocates n samples for every layer. */
int sidecar_alloc_samples(struct sidecar *sc, int64_t n, char *err, size_t errlen);

/* Reads PATH; with_samples = 0 skips the samples (the runtime needs none).
 * Every shape, count, permutation and value range is checked; errors name
 * the file and the field. */
int sidecar_load(struct sidecar *sc, const char *path, int with_samples, char *err, size_t errlen);
/* Writes atomically (PATH.tmp, fsync, rename): a full disk leaves PATH as it was. */
int sidecar_save(const struct sidecar *sc, const char *path, char *err, size_t errlen);

/* The sidecar was made for this model: same shape and file size (the
 * sha256 is checked by `hearth plan`, offline, where hashing a large file
 * costs nothing anyone waits for). */
int sidecar_check_model(const struct sidecar *sc, const struct llama_model *m, char *err, size_t errlen);
/* What a runtime needs: a plan, or input sparsity, or both. */
int sidecar_check_usable(const struct sidecar *sc, const char *path, char *err, size_t errlen);
/* Requires `hearth plan` to have run. */
int sidecar_check_planned(const struct sidecar *sc, const char *path, char *err, size_t errlen);

/* MODEL.gguf -> MODEL.hearth.gguf */
void sidecar_default_path(const char *model_path, char *out, size_t outlen);

#endif
