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

#include "ffn_sum.h" /* enum ffn_act */
#include "gguf.h"
#include "matmul.h"
#include "tpool.h"

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

/* A layer's matrices, and the inputs they read (sites): q, k and v the
 * attention input, o the attention output, gate and up the FFN input, down
 * the FFN's hidden h. Input sparsity and profiling name them so
 * (struct layer_taps). */
enum llama_mat {
    LLAMA_MAT_Q = 0, LLAMA_MAT_K, LLAMA_MAT_V, LLAMA_MAT_O, LLAMA_MAT_GATE, LLAMA_MAT_UP, LLAMA_MAT_DOWN,
    LLAMA_N_MATS,
};
enum llama_site {
    LLAMA_SITE_QKV = 0, LLAMA_SITE_O, LLAMA_SITE_GU, LLAMA_SITE_DOWN,
    LLAMA_N_SITES,
};

/* Extension points of a layer's matrix products (the attention's, forward.h,
 * and the FFN's, ffn.h), installed by what applies input sparsity (insparse.h)
 * or profiles (hearth profile); the installer owns ctx. A NULL member does
 * nothing, so a zeroed struct is the plain dense pass: the pass stays the
 * model, and what a tap does is its own concern. */
struct layer_taps {
    void *ctx;
    /* Each matrix input before its products, in place: x [count], entry k
     * being column (col0 + k) % width of the site's input (width: the
     * matrices' n_in). May zero entries (input sparsity) or record them
     * (calibration). The down input comes in pieces from pool threads: it
     * must be thread-safe. */
    void (*input)(void *ctx, int l, int site, float *x, int64_t count, int64_t col0, int64_t width);
    /* Whether product computes matrix mat of layer l for neurons [n0, n1)
     * (ignored for attention's matrices) in a batch of n rows: 1, or 0 for
     * the dense kernels. */
    int (*owns)(void *ctx, int l, int mat, int64_t n0, int64_t n1, int n);
    /* That product, the dense one's result: x_t at x + t * ldx; y_t = W x_t
     * at y + t * ldy, or with acc (y NULL) acc[t * ldy + r] += the fixed-point
     * sum of each `group` inputs' product on its own (the FFN's down). 0, or
     * negative with err filled. */
    int (*product)(void *ctx, int l, int mat, int64_t n0, int64_t n1, const float *x, int64_t ldx, int n, float *y,
                   int64_t *acc, int64_t ldy, int64_t group, struct tpool *tp, char *err, size_t errlen);
    /* After the FFN's gate and up products of neurons [n0, n1): xn [n, dim]
     * its input, gate and up [n rows of ld] with columns [n0, n1) written
     * (gate unwritten when ungated). */
    void (*ffn_hidden)(void *ctx, int l, const float *xn, const float *gate, const float *up, int n, int64_t ld,
                       int64_t n0, int64_t n1);
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

/* The product of rows [r0, r1) and columns [c0, c0 + n_in) of w, for
 * matmul_fused (matmul.h), into y (or, with y NULL, for the caller to point
 * at an accumulator): the rows the repacked copy covers (x8) run the 8-row
 * kernel. */
struct matmul_out weight_out(const struct weight *w, int64_t r0, int64_t r1, int64_t c0, int64_t n_in, float *y);
/* y [n, w->n_out] = W x for a whole weight through the pass's dense kernels
 * (its 8-row copy where there is one): e.g. to time them. */
int weight_matmul(struct tpool *tp, const struct weight *w, const float *x, int n, float *y,
                  struct matmul_scratch *ms, char *err, size_t errlen);

/* Bytes of one weight matrix (0 when absent, e.g. an ungated FFN's gate). */
size_t model_weight_size(const struct weight *w);
/* Bytes of all weight matrices (what a decode step reads). */
size_t model_weight_bytes(const struct llama_model *m);

#endif
