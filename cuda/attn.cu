/* attn: the KV cache of slots and causal GQA attention with heavy-hitter
 * (H2O) score accumulation. See struct hcu_kv in hearth_cuda.h.
 *
 * Layout: keys and values are [n_slots, kv_dim] (kv_dim = n_kv_heads *
 * head_dim), as the CPU cache, so writing one token is one contiguous row
 * and a KV head's key is head_dim consecutive floats. Scores are
 * [n_kv_heads, n_slots], so the host reads one head's scores as one row. */
#include <math.h>
#include <string.h>

#include "hcu_internal.cuh"

#define ATTN_THREADS 128

extern "C" void hcu_kv_destroy(struct hcu_ctx *c, struct hcu_kv *kv) {
    const size_t cells = (size_t)kv->n_slots * kv->n_kv_heads * kv->head_dim;
    hcu_free(c, kv->d_k, cells * sizeof(float));
    hcu_free(c, kv->d_v, cells * sizeof(float));
    hcu_free(c, kv->d_pos, (size_t)kv->n_slots * sizeof(int32_t));
    hcu_free(c, kv->d_score, (size_t)kv->n_slots * kv->n_kv_heads * sizeof(float));
    memset(kv, 0, sizeof *kv);
}

extern "C" int hcu_kv_create(struct hcu_ctx *c, struct hcu_kv *kv, int n_slots, int n_kv_heads, int head_dim,
                             char *err, size_t errlen) {
    memset(kv, 0, sizeof *kv);
    if (n_slots < 1 || n_kv_heads < 1 || head_dim < 1) {
        snprintf(err, errlen, "cuda: KV cache of %d slots, %d heads of %d is empty", n_slots, n_kv_heads, head_dim);
        return -1;
    }
    kv->n_slots = n_slots;
    kv->n_kv_heads = n_kv_heads;
    kv->head_dim = head_dim;
    const size_t cells = (size_t)n_slots * n_kv_heads * head_dim;
    if (!(kv->d_k = (float *)hcu_alloc(c, cells * sizeof(float), err, errlen)) ||
        !(kv->d_v = (float *)hcu_alloc(c, cells * sizeof(float), err, errlen)) ||
        !(kv->d_pos = (int32_t *)hcu_alloc(c, (size_t)n_slots * sizeof(int32_t), err, errlen)) ||
        !(kv->d_score = (float *)hcu_alloc(c, (size_t)n_slots * n_kv_heads * sizeof(float), err, errlen))) {
        hcu_kv_destroy(c, kv);
        return -1;
    }
    /* all bytes 0xff: position -1 (empty) */
    if (hcu_check(cudaMemsetAsync(kv->d_pos, 0xff, (size_t)n_slots * sizeof(int32_t), c->stream), "kv init", err,
                  errlen) ||
        hcu_memset0(c, kv->d_score, (size_t)n_slots * n_kv_heads * sizeof(float), err, errlen) ||
        hcu_memset0(c, kv->d_k, cells * sizeof(float), err, errlen) ||
        hcu_memset0(c, kv->d_v, cells * sizeof(float), err, errlen)) {
        hcu_kv_destroy(c, kv);
        return -1;
    }
    return 0;
}

/* a thread per float of the n new rows; the first kv_dim threads of a row
 * also set its position and clear its scores */
__global__ void kv_write_kernel(float *__restrict__ kc, float *__restrict__ vc, int32_t *__restrict__ pos,
                                float *__restrict__ score, const float *__restrict__ k, const float *__restrict__ v,
                                int kv_dim, int n_kv_heads, int n_slots, int slot0, int pos0, size_t n) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int t = (int)(i / kv_dim), e = (int)(i % kv_dim), slot = slot0 + t;
    kc[(size_t)slot * kv_dim + e] = k[i];
    vc[(size_t)slot * kv_dim + e] = v[i];
    if (e == 0) pos[slot] = pos0 + t;
    if (e < n_kv_heads) score[(size_t)e * n_slots + slot] = 0.0f;
}

extern "C" int hcu_kv_write(struct hcu_ctx *c, struct hcu_kv *kv, const float *d_k, const float *d_v, int n, int slot0,
                            int pos0, char *err, size_t errlen) {
    if (n <= 0) return 0;
    if (slot0 < 0 || n > kv->n_slots - slot0 || pos0 < 0) {
        snprintf(err, errlen, "cuda: KV write of %d tokens at slot %d (position %d) outside %d slots", n, slot0, pos0,
                 kv->n_slots);
        return -1;
    }
    const int kv_dim = kv->n_kv_heads * kv->head_dim;
    const size_t count = (size_t)n * kv_dim;
    kv_write_kernel<<<hcu_blocks(count, 256), 256, 0, c->stream>>>(kv->d_k, kv->d_v, kv->d_pos, kv->d_score, d_k, d_v,
                                                                   kv_dim, kv->n_kv_heads, kv->n_slots, slot0, pos0,
                                                                   count);
    return hcu_launched("kv_write", err, errlen);
}

__device__ static float block_reduce(float v, float *red, int is_max) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    for (int off = 16; off > 0; off >>= 1) {
        const float o = __shfl_xor_sync(0xffffffffu, v, off);
        v = is_max ? fmaxf(v, o) : v + o;
    }
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < n_warps ? red[lane] : (is_max ? -INFINITY : 0.0f);
    for (int off = 16; off > 0; off >>= 1) {
        const float o = __shfl_xor_sync(0xffffffffu, v, off);
        v = is_max ? fmaxf(v, o) : v + o;
    }
    return v;
}

/* One block per (query head h, token t); att = this pair's row of the
 * scratch, [n_used]. Three passes over the slots:
 *   1. scores: warp w takes slots w, w + 4, ...; its lanes split the head's
 *      dims (consecutive floats of the key: coalesced) and shuffle-reduce;
 *      a slot the query may not see (empty, or a later position) is -inf;
 *   2. softmax: exp(s - max) / sum, and the weight added to the KV head's
 *      heavy-hitter score of the slot (atomicAdd: the query heads of a
 *      group, and the tokens of a batch, add to the same slot);
 *   3. output: thread (part, d) sums slots part, part + n_parts, ... of
 *      dim d (the block reads whole value rows: coalesced), then the parts
 *      are added in shared memory. */
__global__ void attention_kernel(float *__restrict__ out, const float *__restrict__ q, const float *__restrict__ kc,
                                 const float *__restrict__ vc, const int32_t *__restrict__ slot_pos,
                                 float *__restrict__ score, float *__restrict__ att_all, int n_used, int n_slots,
                                 int pos0, int n_heads, int group, int head_dim, float scale) {
    extern __shared__ float smem[]; /* q [head_dim], then partial outputs [ATTN_THREADS] */
    __shared__ float red[32];
    const int h = blockIdx.x, t = blockIdx.y, kvh = h / group;
    const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    const int kv_dim = (n_heads / group) * head_dim, q_dim = n_heads * head_dim;
    const int qpos = pos0 + t;
    float *qs = smem, *part_out = smem + head_dim;
    float *att = att_all + ((size_t)t * n_heads + h) * n_used;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) qs[d] = q[(size_t)t * q_dim + (size_t)h * head_dim + d];
    __syncthreads();

    float maxv = -INFINITY;
    for (int p = warp; p < n_used; p += n_warps) {
        const int sp = slot_pos[p];
        const float *k = kc + (size_t)p * kv_dim + (size_t)kvh * head_dim;
        float s = 0.0f;
        for (int d = lane; d < head_dim; d += 32) s += qs[d] * k[d];
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        s = (sp >= 0 && sp <= qpos) ? s * scale : -INFINITY;
        if (lane == 0) att[p] = s;
        maxv = fmaxf(maxv, s);
    }
    maxv = block_reduce(maxv, red, 1); /* its barriers also publish att[] */

    float sum = 0.0f;
    for (int p = threadIdx.x; p < n_used; p += blockDim.x) {
        const float e = att[p] == -INFINITY ? 0.0f : expf(att[p] - maxv);
        att[p] = e;
        sum += e;
    }
    sum = block_reduce(sum, red, 0);
    const float inv_sum = 1.0f / sum;
    for (int p = threadIdx.x; p < n_used; p += blockDim.x) {
        const float w = att[p] * inv_sum;
        att[p] = w;
        if (w > 0.0f) atomicAdd(&score[(size_t)kvh * n_slots + p], w);
    }
    __syncthreads();

    const int n_parts = head_dim <= (int)blockDim.x ? (int)blockDim.x / head_dim : 1;
    const int part = (int)threadIdx.x / head_dim;
    for (int d0 = 0; d0 < head_dim; d0 += blockDim.x) {
        const int d = d0 + (n_parts > 1 ? (int)threadIdx.x % head_dim : (int)threadIdx.x);
        float o = 0.0f;
        if (part < n_parts && d < head_dim)
            for (int p = part; p < n_used; p += n_parts)
                o += att[p] * vc[(size_t)p * kv_dim + (size_t)kvh * head_dim + d];
        part_out[threadIdx.x] = o;
        __syncthreads();
        if ((int)threadIdx.x < head_dim && d0 + (int)threadIdx.x < head_dim) {
            float total = 0.0f;
            for (int k = 0; k < n_parts; k++) total += part_out[k * head_dim + threadIdx.x];
            /* n_parts == 1: part_out[threadIdx.x] is this thread's own o */
            out[(size_t)t * q_dim + (size_t)h * head_dim + d0 + threadIdx.x] = total;
        }
        __syncthreads();
    }
}

extern "C" int hcu_attention(struct hcu_ctx *c, float *d_out, const float *d_q, struct hcu_kv *kv, int n_used,
                             int n_tok, int pos0, int n_heads, float *d_att, char *err, size_t errlen) {
    if (n_tok <= 0) return 0;
    if (n_used < 1 || n_used > kv->n_slots || n_heads % kv->n_kv_heads) {
        snprintf(err, errlen, "cuda: attention over %d of %d slots with %d query heads for %d KV heads", n_used,
                 kv->n_slots, n_heads, kv->n_kv_heads);
        return -1;
    }
    const int hd = kv->head_dim;
    const size_t smem = (size_t)(hd + ATTN_THREADS) * sizeof(float);
    attention_kernel<<<dim3((unsigned)n_heads, (unsigned)n_tok), ATTN_THREADS, smem, c->stream>>>(
        d_out, d_q, kv->d_k, kv->d_v, kv->d_pos, kv->d_score, d_att, n_used, kv->n_slots, pos0, n_heads,
        n_heads / kv->n_kv_heads, hd, 1.0f / sqrtf((float)hd));
    return hcu_launched("attention", err, errlen);
}
