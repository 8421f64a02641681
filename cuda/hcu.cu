/* hcu: the CUDA context (device, stream, cuBLAS handle), device and pinned
 * memory, copies. See hearth_cuda.h. */
#include <stdlib.h>
#include <string.h>

#include "hcu_internal.cuh"

extern "C" int hcu_device_count(char *err, size_t errlen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        snprintf(err, errlen, "no CUDA device (cudaGetDeviceCount: %s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        cudaGetLastError(); /* clear the sticky error of a failed probe */
        return -1;
    }
    return n;
}

extern "C" struct hcu_ctx *hcu_create(int device, char *err, size_t errlen) {
    int n = hcu_device_count(err, errlen);
    if (n < 0) return NULL;
    if (device < 0 || device >= n) {
        snprintf(err, errlen, "cuda: device %d does not exist (%d present)", device, n);
        return NULL;
    }
    struct hcu_ctx *c = (struct hcu_ctx *)calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->device = device;
    cudaDeviceProp p;
    if (hcu_check(cudaSetDevice(device), "cudaSetDevice", err, errlen) ||
        hcu_check(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties", err, errlen) ||
        hcu_check(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cudaStreamCreate", err, errlen)) {
        free(c);
        return NULL;
    }
    cublasStatus_t s = cublasCreate(&c->blas);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, errlen, "cuda: cublasCreate failed (status %d)", (int)s);
        cudaStreamDestroy(c->stream);
        free(c);
        return NULL;
    }
    cublasSetStream(c->blas, c->stream);
    snprintf(c->name, sizeof c->name, "%.200s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1u << 30));
    return c;
}

extern "C" void hcu_destroy(struct hcu_ctx *c) {
    if (!c) return;
    cudaStreamSynchronize(c->stream);
    if (c->d_wscratch) cudaFree(c->d_wscratch);
    if (c->d_xscratch) cudaFree(c->d_xscratch);
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    free(c);
}

extern "C" const char *hcu_device_name(const struct hcu_ctx *c) { return c->name; }

extern "C" int hcu_sync(struct hcu_ctx *c, char *err, size_t errlen) {
    return hcu_check(cudaStreamSynchronize(c->stream), "a queued kernel failed", err, errlen);
}

extern "C" void *hcu_alloc(struct hcu_ctx *c, size_t bytes, char *err, size_t errlen) {
    void *p = NULL;
    if (bytes == 0) bytes = 1; /* callers treat NULL as failure */
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "cuda: cannot allocate %.1f MiB of device memory (%.1f MiB in use): %s",
                 (double)bytes / (1 << 20), (double)c->bytes / (1 << 20), cudaGetErrorString(e));
        cudaGetLastError();
        return NULL;
    }
    c->bytes += bytes;
    return p;
}

extern "C" void hcu_free(struct hcu_ctx *c, void *d_p, size_t bytes) {
    if (!d_p) return;
    cudaFree(d_p);
    if (bytes == 0) bytes = 1;
    c->bytes -= bytes < c->bytes ? bytes : c->bytes;
}

extern "C" size_t hcu_bytes(const struct hcu_ctx *c) { return c->bytes; }

extern "C" void *hcu_host_alloc(size_t bytes, char *err, size_t errlen) {
    void *p = NULL;
    cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "cuda: cannot allocate %.1f MiB of pinned host memory: %s", (double)bytes / (1 << 20),
                 cudaGetErrorString(e));
        cudaGetLastError();
        return NULL;
    }
    return p;
}

extern "C" void hcu_host_free(void *h_p) {
    if (h_p) cudaFreeHost(h_p);
}

extern "C" int hcu_upload(struct hcu_ctx *c, void *d_dst, const void *h_src, size_t bytes, char *err,
                          size_t errlen) {
    if (hcu_check(cudaMemcpyAsync(d_dst, h_src, bytes, cudaMemcpyHostToDevice, c->stream), "upload", err, errlen))
        return -1;
    return hcu_check(cudaStreamSynchronize(c->stream), "upload", err, errlen);
}

extern "C" int hcu_download(struct hcu_ctx *c, void *h_dst, const void *d_src, size_t bytes, char *err,
                            size_t errlen) {
    if (hcu_check(cudaMemcpyAsync(h_dst, d_src, bytes, cudaMemcpyDeviceToHost, c->stream), "download", err,
                  errlen))
        return -1;
    return hcu_check(cudaStreamSynchronize(c->stream), "download", err, errlen);
}

extern "C" int hcu_memset0(struct hcu_ctx *c, void *d_dst, size_t bytes, char *err, size_t errlen) {
    return hcu_check(cudaMemsetAsync(d_dst, 0, bytes, c->stream), "memset", err, errlen);
}

int hcu_scratch(struct hcu_ctx *c, void **d_p, size_t *have, size_t bytes, char *err, size_t errlen) {
    if (*have >= bytes) return 0;
    /* the old buffer may still be read by a queued kernel */
    if (hcu_sync(c, err, errlen)) return -1;
    hcu_free(c, *d_p, *have);
    *d_p = NULL;
    *have = 0;
    if (!(*d_p = hcu_alloc(c, bytes, err, errlen))) return -1;
    *have = bytes;
    return 0;
}
