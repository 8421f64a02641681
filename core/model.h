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
};

struct llama_layer {
    float *attn_norm;           /* [dim] */
    struct weight wq, wk, wv;   /* dim -> n_heads*head_dim, n_kv_heads*head_dim */
    float *bq, *bk, *bv;        /* biases or NULL (qwen2) */
    struct weight wo;           /* n_heads*head_dim -> dim */
    float *ffn_norm;            /* [dim] */
    struct weight w_gate;       /* dim -> hidden_dim; data NULL when not gated */
    struct weight w_up;         /* dim -> hidden_dim */
    struct weight w_down;       /* hidden_dim -> dim */
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

/* Bytes of one weight matrix (0 when absent, e.g. an ungated FFN's gate). */
size_t model_weight_size(const struct weight *w);
/* Bytes of all weight matrices (what a decode step reads). */
size_t model_weight_bytes(const struct llama_model *m);

#endif
