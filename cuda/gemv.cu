/* gemv: y = W x for quantized W (see dequant.cuh for the unit layout).
 *
 * Few tokens (decode, n_tok <= HCU_GEMV_MAX_TOK): one warp per output row.
 * The 32 lanes take 32 consecutive units (32 weights each) of the row, so a
 * warp reads one contiguous stretch of 32 blocks per step (coalesced), each
 * lane dequantizes its unit into registers once and uses it for every token;
 * the lanes' partial sums meet in a shuffle reduction. Accumulation is
 * float32 over float32 activations.
 *
 * Many tokens (prefill): the matrix is dequantized into a scratch buffer and
 * multiplied by cuBLAS (cublasGemmEx, F32 accumulation). The default feeds
 * it F16 weights and activations: tensor cores, half the scratch, and an
 * input rounding of 2^-11 relative, the same order as the CPU's 8-bit
 * activations; hcu_set_gemm_f32(c, 1) keeps everything F32 (no TF32:
 * cuBLAS's default math mode). Dequantizing the whole matrix per call costs
 * one write and one read of it in 2 or 4 bytes a weight, small next to the
 * n_tok-fold reuse of a prefill GEMM; a tiled dequantize-in-the-GEMM kernel
 * is the tuning step after this. */
#include "dequant.cuh"
#include "hcu_internal.cuh"

#define GEMV_WARPS 4 /* rows per block of 128 threads */

template <int T>
__global__ void gemv_kernel(float *__restrict__ y, const uint8_t *__restrict__ w, size_t row_bytes,
                            const float *__restrict__ x, int64_t n_in, int64_t n_out, int n_tok) {
    const int lane = threadIdx.x & 31;
    const int64_t o = (int64_t)blockIdx.x * GEMV_WARPS + threadIdx.x / 32;
    if (o >= n_out) return; /* whole warps leave together */
    const uint8_t *row = w + (size_t)o * row_bytes;
    float sum[HCU_GEMV_MAX_TOK];
#pragma unroll
    for (int t = 0; t < HCU_GEMV_MAX_TOK; t++) sum[t] = 0.0f;
    const int64_t n_units = n_in / 32;
    for (int64_t u = lane; u < n_units; u += 32) {
        float v[32];
        deq32<T>(row, u, v);
#pragma unroll
        for (int t = 0; t < HCU_GEMV_MAX_TOK; t++) {
            if (t >= n_tok) break;
            const float4 *xr = (const float4 *)(x + (size_t)t * n_in + 32 * u);
            float s = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const float4 f = xr[i];
                s += v[4 * i] * f.x + v[4 * i + 1] * f.y + v[4 * i + 2] * f.z + v[4 * i + 3] * f.w;
            }
            sum[t] += s;
        }
    }
#pragma unroll
    for (int t = 0; t < HCU_GEMV_MAX_TOK; t++) {
        if (t >= n_tok) break;
        float s = sum[t];
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (lane == 0) y[(size_t)t * n_out + o] = s;
    }
}

__device__ static inline void store(float *p, float v) { *p = v; }
__device__ static inline void store(__half *p, float v) { *p = __float2half_rn(v); }

/* one thread per unit of the whole matrix: dst[r, 32u .. 32u + 32) */
template <int T, typename O>
__global__ void dequant_kernel(O *__restrict__ dst, const uint8_t *__restrict__ w, size_t row_bytes, int64_t n_in,
                               int64_t n_rows) {
    const int64_t n_units = n_in / 32;
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n_units * n_rows) return;
    const int64_t r = idx / n_units, u = idx % n_units;
    float v[32];
    deq32<T>(w + (size_t)r * row_bytes, u, v);
    O *o = dst + (size_t)r * n_in + 32 * u;
#pragma unroll
    for (int i = 0; i < 32; i++) store(o + i, v[i]);
}

/* token t's row: one block per token, a thread per unit */
template <int T>
__global__ void embed_kernel(float *__restrict__ x, const uint8_t *__restrict__ table, size_t row_bytes, int64_t dim,
                             const int32_t *__restrict__ tokens) {
    const int t = blockIdx.x;
    const uint8_t *row = table + (size_t)tokens[t] * row_bytes;
    for (int64_t u = threadIdx.x; u < dim / 32; u += blockDim.x) {
        float v[32];
        deq32<T>(row, u, v);
#pragma unroll
        for (int i = 0; i < 32; i++) x[(size_t)t * dim + 32 * u + i] = v[i];
    }
}

__global__ void to_half_kernel(__half *__restrict__ o, const float *__restrict__ x, size_t n) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) o[i] = __float2half_rn(x[i]);
}

/* Calls F.template operator()<T>() for the type id, -1 for an unsupported one. */
template <typename F> static int dispatch(int type, F f) {
    switch (type) {
    case HT_F32: f.template operator()<HT_F32>(); return 0;
    case HT_F16: f.template operator()<HT_F16>(); return 0;
    case HT_Q4_0: f.template operator()<HT_Q4_0>(); return 0;
    case HT_Q4_1: f.template operator()<HT_Q4_1>(); return 0;
    case HT_Q8_0: f.template operator()<HT_Q8_0>(); return 0;
    case HT_Q4_K: f.template operator()<HT_Q4_K>(); return 0;
    case HT_Q6_K: f.template operator()<HT_Q6_K>(); return 0;
    }
    return -1;
}

extern "C" int hcu_type_supported(enum hearth_type type) { return hcu_blck_bytes((int)type) != 0; }

/* the shape checks shared by every entry point */
static int check_shape(enum hearth_type type, int64_t n_in, int64_t n_rows, const char *what, char *err,
                       size_t errlen) {
    if (!hcu_type_supported(type)) {
        snprintf(err, errlen, "cuda: %s: no kernel for tensor type %d", what, (int)type);
        return -1;
    }
    const int64_t align = hcu_blck_elems((int)type) > 32 ? hcu_blck_elems((int)type) : 32;
    if (n_in <= 0 || n_in % align || n_rows < 0 || n_rows > INT32_MAX || n_in > INT32_MAX) {
        snprintf(err, errlen, "cuda: %s: rows of %lld weights (type %d) are not a positive multiple of %lld", what,
                 (long long)n_in, (int)type, (long long)align);
        return -1;
    }
    return 0;
}

struct gemv_launch {
    struct hcu_ctx *c;
    float *y;
    const uint8_t *w;
    size_t row_bytes;
    const float *x;
    int64_t n_in, n_out;
    int n_tok;
    template <int T> void operator()() const {
        gemv_kernel<T><<<hcu_blocks((size_t)n_out, GEMV_WARPS), 32 * GEMV_WARPS, 0, c->stream>>>(y, w, row_bytes, x,
                                                                                                   n_in, n_out, n_tok);
    }
};

template <typename O> struct dequant_launch {
    struct hcu_ctx *c;
    O *dst;
    const uint8_t *w;
    size_t row_bytes;
    int64_t n_in, n_rows;
    template <int T> void operator()() const {
        const size_t units = (size_t)(n_in / 32) * (size_t)n_rows;
        dequant_kernel<T, O><<<hcu_blocks(units, 256), 256, 0, c->stream>>>(dst, w, row_bytes, n_in, n_rows);
    }
};

struct embed_launch {
    struct hcu_ctx *c;
    float *x;
    const uint8_t *table;
    size_t row_bytes;
    int64_t dim;
    const int32_t *tokens;
    int n;
    template <int T> void operator()() const {
        embed_kernel<T><<<n, 128, 0, c->stream>>>(x, table, row_bytes, dim, tokens);
    }
};

extern "C" void hcu_set_gemm_f32(struct hcu_ctx *c, int f32) { c->gemm_f32 = f32 != 0; }

extern "C" int hcu_dequantize(struct hcu_ctx *c, float *d_dst, const void *d_w, enum hearth_type type, int64_t n_in,
                              int64_t n_rows, char *err, size_t errlen) {
    if (check_shape(type, n_in, n_rows, "dequantize", err, errlen)) return -1;
    if (n_rows == 0) return 0;
    dispatch((int)type, dequant_launch<float>{c, d_dst, (const uint8_t *)d_w, hcu_row_bytes((int)type, n_in), n_in,
                                              n_rows});
    return hcu_launched("dequantize", err, errlen);
}

extern "C" int hcu_embed(struct hcu_ctx *c, float *d_x, const void *d_table, enum hearth_type type, int64_t dim,
                         const int32_t *d_tokens, int n, char *err, size_t errlen) {
    if (check_shape(type, dim, 1, "embed", err, errlen)) return -1;
    if (n <= 0) return 0;
    dispatch((int)type, embed_launch{c, d_x, (const uint8_t *)d_table, hcu_row_bytes((int)type, dim), dim, d_tokens, n});
    return hcu_launched("embed", err, errlen);
}

extern "C" int hcu_matmul(struct hcu_ctx *c, float *d_y, const void *d_w, enum hearth_type type, const float *d_x,
                          int64_t n_in, int64_t n_out, int n_tok, char *err, size_t errlen) {
    if (check_shape(type, n_in, n_out, "matmul", err, errlen)) return -1;
    if (n_tok <= 0 || n_out == 0) return 0;
    const size_t row_bytes = hcu_row_bytes((int)type, n_in);
    if (n_tok <= HCU_GEMV_MAX_TOK) {
        dispatch((int)type, gemv_launch{c, d_y, (const uint8_t *)d_w, row_bytes, d_x, n_in, n_out, n_tok});
        return hcu_launched("gemv", err, errlen);
    }
    const size_t elems = (size_t)n_in * (size_t)n_out, x_elems = (size_t)n_in * (size_t)n_tok;
    const float alpha = 1.0f, beta = 0.0f;
    const void *a, *bx;
    cudaDataType_t ab_type;
    if (c->gemm_f32) {
        if (hcu_scratch(c, &c->d_wscratch, &c->wscratch_bytes, elems * sizeof(float), err, errlen)) return -1;
        dispatch((int)type, dequant_launch<float>{c, (float *)c->d_wscratch, (const uint8_t *)d_w, row_bytes, n_in,
                                                  n_out});
        a = c->d_wscratch;
        bx = d_x;
        ab_type = CUDA_R_32F;
    } else {
        if (hcu_scratch(c, &c->d_wscratch, &c->wscratch_bytes, elems * sizeof(__half), err, errlen) ||
            hcu_scratch(c, &c->d_xscratch, &c->xscratch_bytes, x_elems * sizeof(__half), err, errlen))
            return -1;
        dispatch((int)type, dequant_launch<__half>{c, (__half *)c->d_wscratch, (const uint8_t *)d_w, row_bytes, n_in,
                                                   n_out});
        to_half_kernel<<<hcu_blocks(x_elems, 256), 256, 0, c->stream>>>((__half *)c->d_xscratch, d_x, x_elems);
        a = c->d_wscratch;
        bx = c->d_xscratch;
        ab_type = CUDA_R_16F;
    }
    if (hcu_launched("dequantize for GEMM", err, errlen)) return -1;
    /* cuBLAS is column-major: W (row-major [n_out, n_in]) is the column-major
     * [n_in, n_out] matrix A, so y^T = A^T x^T with op(A) = T, x^T the
     * column-major [n_in, n_tok] matrix, y^T column-major [n_out, n_tok] =
     * row-major y[n_tok, n_out]. */
    cublasStatus_t s = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n_out, n_tok, (int)n_in, &alpha, a, ab_type,
                                    (int)n_in, bx, ab_type, (int)n_in, &beta, d_y, CUDA_R_32F, (int)n_out,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, errlen, "cuda: cublasGemmEx [%d x %d] x [%d x %d] failed (status %d)", n_tok, (int)n_in,
                 (int)n_in, (int)n_out, (int)s);
        return -1;
    }
    return 0;
}
