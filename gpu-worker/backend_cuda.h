/* backend_cuda: the GPU worker's backend on one CUDA device (cuda/'s
 * kernels), the same steps as backend_host (see backend.h). Built only with
 * the CUDA library (HEARTH_HAVE_CUDA).
 *
 * What lives on the device: every attention weight and norm, the embedding
 * table and LM head, the KV cache (n_ctx slots per layer; slot = position
 * for now, see struct hcu_kv for eviction) and each layer's hot FFN
 * neurons: gate and up rows as stored (quantized), down's columns
 * dequantized to float32 and transposed to rows ([n_hot, dim], so that the
 * down projection reads them coalesced; 4 bytes a weight, the price of
 * gathering an arbitrary neuron set out of blocks that span 32 or 256
 * neurons). */
#ifndef HEARTH_BACKEND_CUDA_H
#define HEARTH_BACKEND_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* Uploads the model's weights (no hot neurons yet) to device 0. Fails with
 * "no CUDA device (cudaGetDeviceCount: ...)" where there is none. */
int backend_cuda_create(struct gpu_backend *b, const struct llama_model *m, int n_ctx, int max_batch, int n_threads,
                        char *err, size_t errlen);

/* Makes neurons idx[0..n) (ascending, distinct, < hidden_dim) the layer's
 * hot set on the device, replacing the previous one. When the set is one
 * range, ffn_hot(n0, n1) with another range uploads [n0, n1) first (slow:
 * set it here); a set that is not one range is what ffn_hot computes,
 * whatever range it names (the interface names ranges only, for now). */
int backend_cuda_set_hot(struct gpu_backend *b, int layer, const int64_t *idx, int64_t n, char *err,
                         size_t errlen);

/* Device memory the backend holds, bytes. */
size_t backend_cuda_device_bytes(struct gpu_backend *b);

/* The layer's heavy-hitter scores [n_kv_heads, n_ctx] into host memory. */
int backend_cuda_kv_scores(struct gpu_backend *b, int layer, float *scores, char *err, size_t errlen);

#endif
