/* fp16: IEEE half (binary16) and bfloat16 <-> f32 conversions.
 *
 * Quantized blocks store their scales as IEEE halves, F16/BF16 tensors store
 * every weight so. All functions are static inline so that kernels inline them.
 * Where the translation unit is compiled with F16C (core/ *_avx2.c) the half
 * conversions use the hardware instruction; elsewhere the scalar versions below
 * are used. Both give bit-identical results: f32 -> f16 rounds to nearest even,
 * handles subnormals, overflows to inf, and keeps NaN a (quiet) NaN, as the
 * hardware does. The scalar versions are always available under *_scalar names
 * so that tests can check them exhaustively. */
#ifndef HEARTH_FP16_H
#define HEARTH_FP16_H

#include <stdint.h>
#include <string.h>

#if defined(__F16C__)
#include <immintrin.h>
#endif

static inline uint32_t fp16_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float fp16_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* binary16 layout: sign 1, exponent 5 (bias 15), mantissa 10. */
static inline float fp16_to_f32_scalar(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: value = mant * 2^-24, exact in f32 */
        float v = (float)mant * 0x1p-24f;
        return fp16_bits_f32(fp16_f32_bits(v) | sign);
    }
    if (exp == 31) /* inf, or NaN: quieted (as F16C does), payload kept */
        return fp16_bits_f32(sign | 0x7f800000u | ((mant ? mant | 0x200u : 0u) << 13));
    return fp16_bits_f32(sign | ((exp + 112) << 23) | (mant << 13)); /* rebias 15 -> 127 */
}

static inline uint16_t fp16_from_f32_scalar(float f) {
    uint32_t u = fp16_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: quiet it, keep the top payload bits */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* >= 65520 rounds to inf (65504 is the largest finite) */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) {
        /* below 2^-14: a subnormal half. Adding 0.5 (ulp 2^-24) makes the FPU do
         * the round-to-nearest-even for us; the low mantissa bits are then the
         * half's mantissa (0x400 = rounded up into the smallest normal). */
        float v = fp16_bits_f32(a) + 0.5f;
        return (uint16_t)(sign | (uint16_t)(fp16_f32_bits(v) - 0x3f000000u));
    }
    /* normal: rebias the exponent (-112 << 23) and round the 13 dropped bits
     * to nearest even; a carry into the exponent is the right answer. */
    uint32_t odd = (a >> 13) & 1u;
    a += 0xc8000fffu + odd;
    return (uint16_t)(sign | (uint16_t)(a >> 13));
}

#if defined(__F16C__)
static inline float fp16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
static inline uint16_t fp16_from_f32(float f) { return (uint16_t)_cvtss_sh(f, 0); }
#else
static inline float fp16_to_f32(uint16_t h) { return fp16_to_f32_scalar(h); }
static inline uint16_t fp16_from_f32(float f) { return fp16_from_f32_scalar(f); }
#endif

/* bfloat16: the top 16 bits of an f32. */
static inline float bf16_to_f32(uint16_t b) { return fp16_bits_f32((uint32_t)b << 16); }

/* Round to nearest even; NaN stays a quiet NaN (the rounding add could turn a
 * NaN with only low payload bits into inf). */
static inline uint16_t bf16_from_f32(float f) {
    uint32_t u = fp16_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#endif
