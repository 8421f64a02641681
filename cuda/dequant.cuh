/* dequant: the GGUF block layouts of core/quant.h, read on the device.
 *
 * Every supported type is read in units of 32 consecutive weights of a row:
 * unit u of a row covers weights [32u, 32u + 32). For the 32-weight block
 * types a unit is one block; a Q4_K block is 8 units (its 8 sub-blocks, each
 * with its own 6-bit scale and min), a Q6_K block 8 units (each two of its
 * 16-weight groups). One thread dequantizes one unit into 32 registers, so
 * the kernels over rows (GEMV: a warp per row, 32 lanes on 32 consecutive
 * units) and over whole matrices (dequantize: a thread per unit) share these
 * functions. The arithmetic is that of quant.c's to_float (nvcc may contract
 * a*b - c into an FMA, a last-bit difference). */
#ifndef HEARTH_DEQUANT_CUH
#define HEARTH_DEQUANT_CUH

#include <cuda_fp16.h>
#include <stdint.h>

/* type ids (enum hearth_type, GGUF's numbering) */
enum {
    HT_F32 = 0,
    HT_F16 = 1,
    HT_Q4_0 = 2,
    HT_Q4_1 = 3,
    HT_Q8_0 = 8,
    HT_Q4_K = 12,
    HT_Q6_K = 14,
};

/* bytes per block and weights per block */
__host__ __device__ static inline int hcu_blck_bytes(int t) {
    switch (t) {
    case HT_F32: return 4;
    case HT_F16: return 2;
    case HT_Q4_0: return 18;
    case HT_Q4_1: return 20;
    case HT_Q8_0: return 34;
    case HT_Q4_K: return 144;
    case HT_Q6_K: return 210;
    }
    return 0;
}
__host__ __device__ static inline int hcu_blck_elems(int t) {
    return t == HT_F32 || t == HT_F16 ? 1 : (t == HT_Q4_K || t == HT_Q6_K) ? 256 : 32;
}
static inline size_t hcu_row_bytes(int t, int64_t n) {
    return (size_t)(n / hcu_blck_elems(t)) * (size_t)hcu_blck_bytes(t);
}

/* an IEEE half stored at p (2-byte aligned: every block size is even) */
__device__ static inline float ld_half(const uint8_t *p) {
    return __half2float(__ushort_as_half(*(const unsigned short *)p));
}

template <int T> __device__ static inline void deq32(const uint8_t *row, int64_t u, float v[32]);

template <> __device__ inline void deq32<HT_F32>(const uint8_t *row, int64_t u, float v[32]) {
    const float4 *p = (const float4 *)(row + 128 * u);
#pragma unroll
    for (int i = 0; i < 8; i++) {
        float4 f = p[i];
        v[4 * i] = f.x, v[4 * i + 1] = f.y, v[4 * i + 2] = f.z, v[4 * i + 3] = f.w;
    }
}

template <> __device__ inline void deq32<HT_F16>(const uint8_t *row, int64_t u, float v[32]) {
    const __half2 *p = (const __half2 *)(row + 64 * u);
#pragma unroll
    for (int i = 0; i < 16; i++) {
        float2 f = __half22float2(p[i]);
        v[2 * i] = f.x, v[2 * i + 1] = f.y;
    }
}

/* x = (q - 8) d; qs[j] low nibble = weight j, high nibble = weight j + 16 */
template <> __device__ inline void deq32<HT_Q4_0>(const uint8_t *row, int64_t u, float v[32]) {
    const uint8_t *b = row + 18 * u;
    const float d = ld_half(b);
#pragma unroll
    for (int j = 0; j < 16; j++) {
        v[j] = (float)((b[2 + j] & 0xf) - 8) * d;
        v[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
    }
}

/* x = q d + m */
template <> __device__ inline void deq32<HT_Q4_1>(const uint8_t *row, int64_t u, float v[32]) {
    const uint8_t *b = row + 20 * u;
    const float d = ld_half(b), m = ld_half(b + 2);
#pragma unroll
    for (int j = 0; j < 16; j++) {
        v[j] = (float)(b[4 + j] & 0xf) * d + m;
        v[j + 16] = (float)(b[4 + j] >> 4) * d + m;
    }
}

/* x = q d, q signed bytes */
template <> __device__ inline void deq32<HT_Q8_0>(const uint8_t *row, int64_t u, float v[32]) {
    const uint8_t *b = row + 34 * u;
    const float d = ld_half(b);
    const int8_t *qs = (const int8_t *)(b + 2);
#pragma unroll
    for (int j = 0; j < 32; j++) v[j] = (float)qs[j] * d;
}

/* Q4_K: {d, dmin, scales[12], qs[128]}; sub-block sb's weights are the low
 * (sb even) or high (sb odd) nibbles of qs[32 (sb/2) ..+32];
 * x = d sc q - dmin m with sc, m the 6-bit pair of quant.h's k_scale_min. */
template <> __device__ inline void deq32<HT_Q4_K>(const uint8_t *row, int64_t u, float v[32]) {
    const uint8_t *b = row + 144 * (u / 8);
    const int sb = (int)(u % 8);
    const float d = ld_half(b), dmin = ld_half(b + 2);
    const uint8_t *sc6 = b + 4, *qs = b + 16 + 32 * (sb / 2);
    int sc, m;
    if (sb < 4) {
        sc = sc6[sb] & 63;
        m = sc6[sb + 4] & 63;
    } else {
        sc = (sc6[sb + 4] & 0xf) | (sc6[sb - 4] >> 6) << 4;
        m = (sc6[sb + 4] >> 4) | (sc6[sb] >> 6) << 4;
    }
    const float d1 = d * (float)sc, m1 = dmin * (float)m;
    const int shift = (sb & 1) * 4;
#pragma unroll
    for (int l = 0; l < 32; l++) v[l] = d1 * (float)((qs[l] >> shift) & 0xf) - m1;
}

/* Q6_K: {ql[128], qh[64], scales[16] (int8), d}; unit j (0..7) is quarter
 * k = j % 4 of half h = j / 4: low 4 bits from ql[64h + l + 32 (k & 1)]
 * (low nibble for k < 2), high 2 bits from bits 2k of qh[32h + l];
 * x = d scales[2j + l / 16] (q - 32). */
template <> __device__ inline void deq32<HT_Q6_K>(const uint8_t *row, int64_t u, float v[32]) {
    const uint8_t *b = row + 210 * (u / 8);
    const int j = (int)(u % 8), h = j / 4, k = j % 4;
    const uint8_t *ql = b + 64 * h + 32 * (k & 1), *qh = b + 128 + 32 * h;
    const int8_t *scales = (const int8_t *)(b + 192);
    const float d = ld_half(b + 208);
    const float s0 = d * (float)scales[2 * j], s1 = d * (float)scales[2 * j + 1];
    const int lo_shift = k < 2 ? 0 : 4;
#pragma unroll
    for (int l = 0; l < 32; l++) {
        const int q = ((ql[l] >> lo_shift) & 0xf) | ((qh[l] >> (2 * k)) & 3) << 4;
        v[l] = (l < 16 ? s0 : s1) * (float)(q - 32);
    }
}

#endif
