/* model: a llama-family model as it lies in a GGUF file.
 *
 * Covers the architectures that share llama's block: llama (LLaMA 1/2/3,
 * Mistral, SmolLM, ReluLLaMA/ProSparse), and qwen2 (neox RoPE, Q/K/V biases).
 * Weights are not copied: `struct weight` points into the read-only mapping of
 * the GGUF file, so every process that opens the same file shares one page
 * cache copy. Only the small norm vectors (and biases) are converted to owned
 * float32 arrays.
 *
 * Shapes follow GGUF: a matrix tensor of ne = [n_in, n_out] is n_out rows of
 * n_in weights; y = W x maps n_in -> n_out. */
#ifndef HEARTH_MODEL_H
#define HEARTH_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

enum ffn_act {
    FFN_ACT_SILU = 0, /* SwiGLU: down(silu(gate x) * up x) */
    FFN_ACT_RELU = 1, /* ReLU-gated: down(relu(gate x) * up x); ReluLLaMA, ProSparse */
    FFN_ACT_GELU = 2, /* GeGLU */
};

enum rope_mode {
    ROPE_NORMAL = 0, /* rotate adjacent pairs (x[2i], x[2i+1]): llama.cpp "normal" */
    ROPE_NEOX = 1,   /* rotate halves (x[i], x[i + d/2]): qwen2, "neox" */
};

struct llama_config {
    char arch[32];
    int n_vocab;
    int dim;        /* d_model */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;   /* dim / n_heads */
    int hidden_dim; /* FFN width: number of neurons per layer */
    int n_ctx_train;
    int rope_dim;   /* leading dimensions of each head that RoPE rotates */
    float rope_base;
    float norm_eps;
    enum rope_mode rope_mode;
    enum ffn_act ffn_act;
    int ffn_gated;  /* 0: down(act(up x)) without a gate matrix */
};

struct weight {
    const void *data; /* into the GGUF mapping */
    uint32_t type;    /* enum hearth_type */
    int64_t n_in;     /* row length (ne[0]) */
    int64_t n_out;    /* rows (ne[1]) */
    /* Optional: rows [x8_r0, x8_r1) and columns [x8_c0, x8_c1) repacked into
     * 8-row groups (quant.h, repack8) for the GEMV/GEMM kernels, in this
     * process's memory; group k (rows x8_r0 + 8k ..) at x8 + k * x8_stride.
     * Same results as data (vec_dot8 is bit-identical to vec_dot), so a
     * process repacks only the rows and columns it computes. NULL: none. */
    void *x8;
    int64_t x8_r0, x8_r1, x8_c0, x8_c1;
    size_t x8_stride;
};

struct insparse_probe; /* core/insparse.h */
struct insparse_q4t;
#define LLAMA_IN_MATS 7 /* enum insparse_matrix */

struct llama_layer {
    float *attn_norm;           /* [dim] */
    struct weight wq, wk, wv;   /* dim -> n_heads*head_dim, n_kv_heads*head_dim */
    float *bq, *bk, *bv;        /* biases or NULL (qwen2) */
    struct weight wo;           /* n_heads*head_dim -> dim */
    float *ffn_norm;            /* [dim] */
    struct weight w_gate;       /* dim -> hidden_dim; data NULL when not gated */
    struct weight w_up;         /* dim -> hidden_dim */
    struct weight w_down;       /* hidden_dim -> dim */
    /* Input sparsity (core/insparse.h), one threshold per matrix input
     * (enum insparse_site: attention's q/k/v, o, the FFN's gate/up, down):
     * entries with score <= in_thr[site] are zeroed before the product,
     * score_i = |x_i| (TEAL) or, where in_norm[site] is set, |x_i| times
     * in_norm[site][i] (WINA: the norm of the site's weight columns i). 0,
     * the loaded model's value, zeroes only zeros: it changes nothing.
     * in_probe (NULL: none) records the scores, for calibration and
     * measurement. The caller owns in_norm and in_probe. */
    float in_thr[4];
    const float *in_norm[4];
    struct insparse_probe *in_probe;
    /* The matrices whose masked input pays to skip, stored input-major
     * (insparse.h, q4t; enum insparse_matrix: q, k, v, o, gate, up, down),
     * which the forward pass then reads instead of the dense kernels; NULL:
     * dense. The FFN's copies cover neurons [in_n0, in_n1). Owned here
     * (insparse_layer_build/free; model_free frees them). */
    struct insparse_q4t *in_q4t[LLAMA_IN_MATS];
    int64_t in_n0, in_n1;
};

struct llama_model {
    struct llama_config cfg;
    gguf_ctx_t *gguf;
    struct weight tok_embd;     /* [n_vocab rows of dim] */
    struct weight output;       /* LM head; == tok_embd when tied */
    float *output_norm;         /* [dim] */
    struct llama_layer *layers; /* [n_layers] */
    int owns_gguf;              /* model_free closes gguf */
};

/* Opens a GGUF file and checks that it holds a supported model with
 * consistent shapes. Returns 0, or a negative value with `err` filled. */
int model_load(struct llama_model *m, const char *path, char *err, size_t errlen);
void model_free(struct llama_model *m);

/* Reads config and weights from an already open GGUF (the caller keeps
 * ownership of g; model_free will not close it when loaded this way). */
int model_load_gguf(struct llama_model *m, gguf_ctx_t *g, char *err, size_t errlen);

/* Repacks rows [r0, r1) (r0 a multiple of 8; r1 is rounded down to one) and
 * columns [c0, c1) (whole blocks) of w into w->x8, replacing an earlier
 * copy. A type without an interleaved layout is left as it is (0). With
 * drop_source the source pages are handed back to the kernel afterwards
 * (madvise): for file mappings only, where they are re-read on demand. */
int weight_repack(struct weight *w, int64_t r0, int64_t r1, int64_t c0, int64_t c1, int drop_source, char *err,
                  size_t errlen);
void weight_repack_free(struct weight *w);

/* What one process computes, for model_repack: attention (wq, wk, wv, wo of
 * every layer), and the FFN neurons [ffn_n0[l], ffn_n1[l]) of each layer
 * (gate and up rows, down columns; ffn_n0 NULL: none). Returns 0 or a
 * negative value with err filled; *bytes (may be NULL) gets the bytes of
 * the repacked copies. model_free frees them. */
int model_repack(struct llama_model *m, int attn, const int64_t *ffn_n0, const int64_t *ffn_n1, size_t *bytes,
                 char *err, size_t errlen);
/* What one process that computes the whole model repacks: attention, and
 * every FFN neuron when ffn (0: the sparse FFN reads the rows itself). */
int model_repack_all(struct llama_model *m, int ffn, size_t *bytes, char *err, size_t errlen);
/* The same for one layer (neurons [n0, n1)), adding the copies' bytes to
 * *bytes: e.g. a CPU worker's NUMA-local copy of its shard (drop_source 0). */
int model_repack_layer(struct llama_layer *L, int attn, int64_t n0, int64_t n1, int drop_source, size_t *bytes,
                       char *err, size_t errlen);

/* Bytes of one weight matrix (0 when absent, e.g. an ungated FFN's gate). */
size_t model_weight_size(const struct weight *w);
/* Bytes of all weight matrices (what a decode step reads). */
size_t model_weight_bytes(const struct llama_model *m);

#endif
