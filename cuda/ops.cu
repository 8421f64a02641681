/* ops: the elementwise and per-row kernels of a layer (RMSNorm, residual
 * adds, biases, RoPE, the FFN activation) and the FFN's fixed-point down
 * projection of the hot neurons. See hearth_cuda.h for each one's contract
 * and core/forward.c for the CPU code each one mirrors. */
#include "hcu_internal.cuh"

#define FFN_GROUP 256       /* core/forward.h */
#define FFN_FIXED_SHIFT 32  /* core/forward.h */

/* Sum over the block (blockDim.x a multiple of 32, at most 1024). */
__device__ static float block_sum(float v, float *shared32) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    __syncthreads(); /* shared32 may still be read from a previous call */
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    v = lane < n_warps ? shared32[lane] : 0.0f;
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

/* one block of 256 threads per row; the threads stride over the row, so
 * each load instruction reads 256 consecutive floats */
__global__ void rmsnorm_kernel(float *__restrict__ o, const float *__restrict__ x, const float *__restrict__ w,
                               int dim, float eps) {
    __shared__ float red[32];
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *orow = o + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, red);
    const float scale = (float)(1.0 / sqrt((double)ss / dim + eps));
    for (int i = threadIdx.x; i < dim; i += blockDim.x) orow[i] = w[i] * (xr[i] * scale);
}

extern "C" int hcu_rmsnorm(struct hcu_ctx *c, float *d_o, const float *d_x, const float *d_w, int dim, int n_rows,
                           float eps, char *err, size_t errlen) {
    if (n_rows <= 0) return 0;
    rmsnorm_kernel<<<n_rows, 256, 0, c->stream>>>(d_o, d_x, d_w, dim, eps);
    return hcu_launched("rmsnorm", err, errlen);
}

__global__ void add_kernel(float *__restrict__ x, const float *__restrict__ y, size_t n) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

extern "C" int hcu_add(struct hcu_ctx *c, float *d_x, const float *d_y, size_t count, char *err, size_t errlen) {
    if (count == 0) return 0;
    add_kernel<<<hcu_blocks(count, 256), 256, 0, c->stream>>>(d_x, d_y, count);
    return hcu_launched("add", err, errlen);
}

__global__ void add_bias_kernel(float *__restrict__ x, const float *__restrict__ b, int width, size_t n) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += b[i % width];
}

extern "C" int hcu_add_bias(struct hcu_ctx *c, float *d_x, const float *d_b, int width, int n_rows, char *err,
                            size_t errlen) {
    const size_t n = (size_t)width * (size_t)(n_rows > 0 ? n_rows : 0);
    if (n == 0) return 0;
    add_bias_kernel<<<hcu_blocks(n, 256), 256, 0, c->stream>>>(d_x, d_b, width, n);
    return hcu_launched("add_bias", err, errlen);
}

/* a thread per rotated pair: (token, head, i < rope_dim / 2) */
__global__ void rope_kernel(float *__restrict__ vec, int n_heads, int head_dim, int rope_dim, int pos0,
                            const float *__restrict__ inv_freq, int neox, size_t n_pairs) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n_pairs) return;
    const int half = rope_dim / 2;
    const int i = (int)(idx % half);
    const size_t th = idx / half; /* token * n_heads + head */
    const int t = (int)(th / n_heads), h = (int)(th % n_heads);
    float *hv = vec + (size_t)t * n_heads * head_dim + (size_t)h * head_dim;
    /* precise sinf/cosf (no --use_fast_math): theta reaches n_ctx radians */
    const float theta = (float)(pos0 + t) * inv_freq[i];
    float sn, cs;
    sincosf(theta, &sn, &cs);
    const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    const float x0 = hv[a], x1 = hv[b];
    hv[a] = x0 * cs - x1 * sn;
    hv[b] = x0 * sn + x1 * cs;
}

extern "C" int hcu_rope(struct hcu_ctx *c, float *d_vec, int n_tok, int n_heads, int head_dim, int rope_dim, int pos0,
                        const float *d_inv_freq, int mode, char *err, size_t errlen) {
    const size_t n = (size_t)n_tok * n_heads * (rope_dim / 2);
    if (n == 0) return 0;
    rope_kernel<<<hcu_blocks(n, 256), 256, 0, c->stream>>>(d_vec, n_heads, head_dim, rope_dim, pos0, d_inv_freq,
                                                           mode == 1, n);
    return hcu_launched("rope", err, errlen);
}

__device__ static inline float ffn_act(float g, int act) {
    switch (act) {
    case 1: return g > 0.0f ? g : 0.0f;
    case 2: return 0.5f * g * (1.0f + tanhf(0.7978845608f * (g + 0.044715f * g * g * g)));
    }
    return g / (1.0f + expf(-g));
}

__global__ void ffn_act_kernel(float *__restrict__ h, const float *__restrict__ gate, const float *__restrict__ up,
                               size_t n, int act) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) h[i] = gate ? ffn_act(gate[i], act) * up[i] : ffn_act(up[i], act);
}

extern "C" int hcu_ffn_act(struct hcu_ctx *c, float *d_h, const float *d_gate, const float *d_up, size_t count,
                           int act, char *err, size_t errlen) {
    if (count == 0) return 0;
    ffn_act_kernel<<<hcu_blocks(count, 256), 256, 0, c->stream>>>(d_h, d_gate, d_up, count, act);
    return hcu_launched("ffn_act", err, errlen);
}

/* Block (segment s, token t), 256 threads over the dim outputs: thread r
 * sums its segment's neurons i of h[t, i] * down_t[i, r]; for a fixed i the
 * block reads down_t's row i contiguously (coalesced), and h's segment sits
 * in shared memory. Each output is then rounded to fixed point and added to
 * acc with a 64-bit atomic (two's complement: signed sums come out right). */
__global__ void ffn_down_fixed_kernel(int64_t *__restrict__ acc, const float *__restrict__ h,
                                      const float *__restrict__ down_t, const int32_t *__restrict__ seg, int n_hot,
                                      int dim) {
    __shared__ float hs[FFN_GROUP];
    const int s = blockIdx.x, t = blockIdx.y;
    const int i0 = seg[s], n_i = seg[s + 1] - i0; /* n_i <= FFN_GROUP: one group */
    for (int i = threadIdx.x; i < n_i; i += blockDim.x) hs[i] = h[(size_t)t * n_hot + i0 + i];
    __syncthreads();
    const double scale = (double)(1ull << FFN_FIXED_SHIFT), lim = 9.0e18;
    for (int r = threadIdx.x; r < dim; r += blockDim.x) {
        float y = 0.0f;
        for (int i = 0; i < n_i; i++) y += hs[i] * down_t[(size_t)(i0 + i) * dim + r];
        double v = (double)y * scale;
        if (!(v > -lim)) v = -lim; /* also NaN: as acc_add_fixed in forward.c */
        if (v > lim) v = lim;
        atomicAdd((unsigned long long *)&acc[(size_t)t * dim + r], (unsigned long long)llrint(v));
    }
}

extern "C" int hcu_ffn_down_fixed(struct hcu_ctx *c, int64_t *d_acc, const float *d_h, const float *d_down_t,
                                  const int32_t *d_seg, int n_seg, int n_hot, int dim, int n_tok, char *err,
                                  size_t errlen) {
    if (n_seg <= 0 || n_tok <= 0) return 0;
    ffn_down_fixed_kernel<<<dim3((unsigned)n_seg, (unsigned)n_tok), 256, 0, c->stream>>>(d_acc, d_h, d_down_t, d_seg,
                                                                                        n_hot, dim);
    return hcu_launched("ffn_down_fixed", err, errlen);
}

__global__ void acc_add_to_kernel(float *__restrict__ x, const int64_t *__restrict__ acc,
                                  const int64_t *__restrict__ acc2, size_t n) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    /* wrap-around addition, as the CPU's int64 adds in practice */
    const uint64_t sum = (uint64_t)acc[i] + (acc2 ? (uint64_t)acc2[i] : 0u);
    x[i] += (float)((double)(int64_t)sum * (1.0 / (double)(1ull << FFN_FIXED_SHIFT)));
}

extern "C" int hcu_acc_add_to(struct hcu_ctx *c, float *d_x, const int64_t *d_acc, const int64_t *d_acc2,
                              size_t count, char *err, size_t errlen) {
    if (count == 0) return 0;
    acc_add_to_kernel<<<hcu_blocks(count, 256), 256, 0, c->stream>>>(d_x, d_acc, d_acc2, count);
    return hcu_launched("acc_add_to", err, errlen);
}
