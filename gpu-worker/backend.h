/* backend: what the GPU worker needs from a compute device, as one
 * interface with two implementations (DESIGN.md, "Backends"):
 *   host  CPU threads, on the dense pass's own code (core/forward.h); runs
 *         everywhere, so the whole runtime is tested without a GPU;
 *   cuda  the CUDA kernels of cuda/ (its own issue).
 * The worker drives one step, a batch of sequences (core/forward.h's
 * seq_span), as: begin (the spans, embeddings), then per layer attention
 * (each span over its own sequence's KV cache), ffn_input (the normalized FFN input, in host memory, which goes
 * to the CPU workers), ffn_hot (the hot neurons), add_partial once per CPU
 * worker's partial sum, ffn_finish (the FFN output, exact whatever the
 * split: see FFN_GROUP in core/forward.h, added to the residual); then
 * output (logits). */
#ifndef HEARTH_BACKEND_H
#define HEARTH_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "forward.h"
#include "model.h"

struct gpu_backend {
    const char *name;
    void *impl;
    /* tokens: the spans' tokens in span order (n of them in all) */
    int (*begin)(struct gpu_backend *b, const int32_t *tokens, int n, const struct seq_span *spans, int n_spans,
                 char *err, size_t errlen);
    int (*attention)(struct gpu_backend *b, int layer, char *err, size_t errlen);
    /* [n, dim] float32, valid until the next call */
    const float *(*ffn_input)(struct gpu_backend *b, int layer, int n);
    /* the layer's FFN accumulator = FFN restricted to neurons [n0, n1) (0 when empty) */
    int (*ffn_hot)(struct gpu_backend *b, int layer, int n, int64_t n0, int64_t n1, char *err, size_t errlen);
    /* accumulator += acc, a CPU worker's partial sum [n, dim] fixed point, in host memory */
    void (*add_partial)(struct gpu_backend *b, int n, const int64_t *acc);
    /* x += accumulator */
    void (*ffn_finish)(struct gpu_backend *b, int n);
    /* the batch's logits rows (forward_batch's) into host memory */
    int (*output)(struct gpu_backend *b, float *logits, char *err, size_t errlen);
    void (*destroy)(struct gpu_backend *b);
    /* nanoseconds spent in the attention core so far (forward.h's attn_ns);
     * NULL where the backend does not measure it */
    uint64_t (*attn_ns)(struct gpu_backend *b);
};

/* n_seq sequences, each with a KV cache of n_ctx positions. */
int backend_host_create(struct gpu_backend *b, const struct llama_model *m, int n_ctx, int n_seq, int max_batch,
                        int n_threads, char *err, size_t errlen);

/* Gives the host backend an H2O KV cache (core/kvcache.h) instead of the full one. */
struct kv_config;
int backend_host_set_kv(struct gpu_backend *b, const struct kv_config *cfg, char *err, size_t errlen);

/* What the host backend's pass installs (core/forward.h): an FFN that its
 * ffn_hot computes instead of the dense one (the sparse FFN of a sidecar
 * plan, core/hotcold.h, built for the worker's hot positions), and the taps
 * of its matrix products (input sparsity, core/insparse.h). The caller keeps
 * what they point to. Other backends ignore both. */
void backend_host_set_ffn(struct gpu_backend *b, forward_ffn_fn ffn, void *ctx);
void backend_host_set_taps(struct gpu_backend *b, const struct layer_taps *taps);

/* Host bytes of the host backend's cold KV stores (0 for other backends). */
uint64_t backend_host_kv_cold_bytes(struct gpu_backend *b);

/* The host backend's thread pool, for pinning (NULL for other backends). */
struct tpool *backend_host_pool(struct gpu_backend *b);

#endif
