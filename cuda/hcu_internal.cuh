/* hcu_internal: what the .cu files of cuda/ share (not part of the C API).
 * The context's fields, the launch check, and the block layouts of
 * core/quant.h read as bytes (nvcc never sees quant.h: the layouts are
 * restated here in the access functions of dequant.cuh). */
#ifndef HEARTH_HCU_INTERNAL_CUH
#define HEARTH_HCU_INTERNAL_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>

#include "hearth_cuda.h"

struct hcu_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    size_t bytes;      /* device memory allocated through this context */
    int gemm_f32;      /* batched path: 1 F32 inputs, 0 F16 */
    void *d_wscratch;  /* dequantized weight for cuBLAS */
    size_t wscratch_bytes;
    void *d_xscratch;  /* activations converted to F16 for cuBLAS */
    size_t xscratch_bytes;
    char name[256];
};

/* After a launch: 0, or -1 with err naming the kernel and CUDA's reason. */
static inline int hcu_launched(const char *what, char *err, size_t errlen) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) return 0;
    snprintf(err, errlen, "cuda: %s: %s", what, cudaGetErrorString(e));
    return -1;
}

static inline int hcu_check(cudaError_t e, const char *what, char *err, size_t errlen) {
    if (e == cudaSuccess) return 0;
    snprintf(err, errlen, "cuda: %s: %s", what, cudaGetErrorString(e));
    return -1;
}

/* Grows one of the context's scratch buffers to at least `bytes`. */
int hcu_scratch(struct hcu_ctx *c, void **d_p, size_t *have, size_t bytes, char *err, size_t errlen);

static inline unsigned hcu_blocks(size_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

#endif
