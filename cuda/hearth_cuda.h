/* hearth_cuda: the CUDA kernels of the GPU worker's cuda backend, behind a
 * plain C API (the .cu files export extern "C" functions; nothing here needs
 * a CUDA header, so C11 code includes it as is).
 *
 * Model: one context (struct hcu_ctx) owns a device, one CUDA stream, a
 * cuBLAS handle and the scratch of the batched GEMM. Every kernel call is
 * queued on that stream and returns at once (0, or -1 when the launch itself
 * failed, with err filled); hcu_sync waits and reports errors of kernels that
 * ran. Pointers named d_* are device memory, h_* host memory.
 *
 * Shapes are row-major. A weight matrix is n_out rows of n_in weights in a
 * GGUF block layout (core/quant.h): y[t, o] = sum_i W[o, i] x[t, i]. Every
 * kernel accumulates in float32 on float32 activations (the CPU kernels
 * quantize activations to 8 bits; see tests/test_cuda.c for what that means
 * for comparisons). */
#ifndef HEARTH_CUDA_H
#define HEARTH_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hcu_ctx;

/* Number of CUDA devices (> 0), or -1 with err = "no CUDA device
 * (cudaGetDeviceCount: <reason>)" when there is none or no usable driver. */
int hcu_device_count(char *err, size_t errlen);

/* Context on device `device`: stream, cuBLAS handle. NULL on failure. */
struct hcu_ctx *hcu_create(int device, char *err, size_t errlen);
void hcu_destroy(struct hcu_ctx *c);
/* "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" */
const char *hcu_device_name(const struct hcu_ctx *c);

/* Waits for the stream; reports the first error of a queued kernel. */
int hcu_sync(struct hcu_ctx *c, char *err, size_t errlen);

/* Device memory, counted in hcu_bytes (scratch of the GEMM included). */
void *hcu_alloc(struct hcu_ctx *c, size_t bytes, char *err, size_t errlen);
void hcu_free(struct hcu_ctx *c, void *d_p, size_t bytes);
size_t hcu_bytes(const struct hcu_ctx *c);
/* Pinned (page-locked) host memory: copies from it run at full bus speed
 * and asynchronously. */
void *hcu_host_alloc(size_t bytes, char *err, size_t errlen);
void hcu_host_free(void *h_p);

/* Synchronous copies (they wait for the stream first, so they see every
 * queued kernel's results, and src may be reused at return). */
int hcu_upload(struct hcu_ctx *c, void *d_dst, const void *h_src, size_t bytes, char *err, size_t errlen);
int hcu_download(struct hcu_ctx *c, void *h_dst, const void *d_src, size_t bytes, char *err, size_t errlen);
/* Queued: d_dst = 0 over bytes. */
int hcu_memset0(struct hcu_ctx *c, void *d_dst, size_t bytes, char *err, size_t errlen);

/* ---- matrices ------------------------------------------------------------ */

/* 1 when the GEMV has a kernel for the type: F32, F16, Q8_0, Q4_0, Q4_1,
 * Q4_K, Q6_K. n_in must be a multiple of 32 (and of 256 for the K types). */
int hcu_type_supported(enum hearth_type type);

/* d_y[n_tok, n_out] = d_x[n_tok, n_in] W^T. Up to HCU_GEMV_MAX_TOK tokens:
 * the dequantizing GEMV (one warp per row); more: dequantize W to the GEMM
 * scratch and multiply with cuBLAS (see hcu_set_gemm_f32). */
#define HCU_GEMV_MAX_TOK 8
int hcu_matmul(struct hcu_ctx *c, float *d_y, const void *d_w, enum hearth_type type, const float *d_x, int64_t n_in,
               int64_t n_out, int n_tok, char *err, size_t errlen);
/* The batched path's inputs: 0 (default) F16 weights and activations with
 * F32 accumulation (tensor cores; ~5e-4 relative rounding of each input),
 * 1 F32 (exact float products, slower). */
void hcu_set_gemm_f32(struct hcu_ctx *c, int f32);

/* d_dst[n_rows, n_in] = the float values of n_rows rows of W (as
 * core/quant.h's to_float). */
int hcu_dequantize(struct hcu_ctx *c, float *d_dst, const void *d_w, enum hearth_type type, int64_t n_in,
                   int64_t n_rows, char *err, size_t errlen);

/* d_x[t] = row d_tokens[t] of the table (n_vocab rows of dim), t < n */
int hcu_embed(struct hcu_ctx *c, float *d_x, const void *d_table, enum hearth_type type, int64_t dim,
              const int32_t *d_tokens, int n, char *err, size_t errlen);

/* ---- elementwise ---------------------------------------------------------- */

/* d_o[r] = w * d_x[r] / sqrt(mean(d_x[r]^2) + eps) for n_rows rows of dim */
int hcu_rmsnorm(struct hcu_ctx *c, float *d_o, const float *d_x, const float *d_w, int dim, int n_rows, float eps,
                char *err, size_t errlen);
/* d_x[i] += d_y[i] */
int hcu_add(struct hcu_ctx *c, float *d_x, const float *d_y, size_t count, char *err, size_t errlen);
/* d_x[r, i] += d_b[i] for n_rows rows of width */
int hcu_add_bias(struct hcu_ctx *c, float *d_x, const float *d_b, int width, int n_rows, char *err, size_t errlen);
/* Rotates the first rope_dim dims of each of n_heads heads (head_dim apart)
 * of token t's vector (row t of d_vec, n_heads * head_dim wide) by position
 * pos0 + t. mode 0: adjacent pairs (llama "normal"), 1: halves (neox).
 * d_inv_freq[rope_dim / 2] = base^(-2i / rope_dim). */
int hcu_rope(struct hcu_ctx *c, float *d_vec, int n_tok, int n_heads, int head_dim, int rope_dim, int pos0,
             const float *d_inv_freq, int mode, char *err, size_t errlen);
/* d_h[i] = act(d_gate[i]) * d_up[i] (gated), or act(d_up[i]) (d_gate NULL).
 * act: 0 SiLU, 1 ReLU, 2 GELU (tanh form), as enum ffn_act. */
int hcu_ffn_act(struct hcu_ctx *c, float *d_h, const float *d_gate, const float *d_up, size_t count, int act,
                char *err, size_t errlen);

/* ---- FFN, fixed point (core/forward.h, FFN_GROUP) ---------------------------- */

/* The down projection of the hot neurons in hearth's exact group sum.
 * The n_hot hot neurons of a layer are stored in ascending neuron order;
 * d_down_t[n_hot, dim] holds down's column of each (a row here, so that the
 * dim outputs read consecutive floats); segment s = hot neurons
 * [d_seg[s], d_seg[s+1]) all lie in one group of FFN_GROUP neurons.
 * For each token t and segment s:
 *   d_acc[t, r] += round(2^32 * sum_{i in s} d_h[t, i] * d_down_t[i, r])
 * (int64 two's complement adds, so any order gives the same sum). */
int hcu_ffn_down_fixed(struct hcu_ctx *c, int64_t *d_acc, const float *d_h, const float *d_down_t,
                       const int32_t *d_seg, int n_seg, int n_hot, int dim, int n_tok, char *err, size_t errlen);
/* d_x[i] += (d_acc[i] + d_acc2[i]) * 2^-32 (d_acc2 may be NULL) */
int hcu_acc_add_to(struct hcu_ctx *c, float *d_x, const int64_t *d_acc, const int64_t *d_acc2, size_t count,
                   char *err, size_t errlen);

/* ---- KV cache and attention -------------------------------------------------- */

/* One layer's KV cache: n_slots slots per KV head. A slot holds one token's
 * key (RoPE applied) and value for every KV head, the token's original
 * position (-1: empty) and its heavy-hitter score per KV head (the softmax
 * weight the slot received, summed over the query heads sharing the KV head
 * and over every query since it was written). Which slot a new token
 * overwrites is the host's choice (core/kvcache.h's policy, reading the
 * scores back with hcu_download); moving that choice onto the device is
 * future work. */
struct hcu_kv {
    int n_slots, n_kv_heads, head_dim;
    float *d_k, *d_v;   /* [n_slots, n_kv_heads * head_dim] */
    int32_t *d_pos;     /* [n_slots], -1 empty */
    float *d_score;     /* [n_kv_heads, n_slots] */
};

/* Allocates and empties a cache (positions -1, scores 0). */
int hcu_kv_create(struct hcu_ctx *c, struct hcu_kv *kv, int n_slots, int n_kv_heads, int head_dim, char *err,
                  size_t errlen);
void hcu_kv_destroy(struct hcu_ctx *c, struct hcu_kv *kv);
/* Writes n tokens (rows of d_k, d_v: [n, kv_dim]) into slots slot0.. with
 * positions pos0..; their scores restart at 0. Eviction is n = 1 into the
 * slot the host chose. */
int hcu_kv_write(struct hcu_ctx *c, struct hcu_kv *kv, const float *d_k, const float *d_v, int n, int slot0,
                 int pos0, char *err, size_t errlen);

/* Causal GQA attention of n_tok queries at positions pos0.. over the slots
 * [0, n_used) of kv: a query sees a slot when 0 <= slot position <= its own.
 * d_q, d_out: [n_tok, n_heads * head_dim]; d_att: scratch of
 * n_tok * n_heads * n_used floats. Adds each query head's softmax weights to
 * its KV head's scores (kv->d_score). */
int hcu_attention(struct hcu_ctx *c, float *d_out, const float *d_q, struct hcu_kv *kv, int n_used, int n_tok,
                  int pos0, int n_heads, float *d_att, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
