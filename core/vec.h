/* vec: float32 vector primitives for the parts of the forward pass that are
 * not weight matrices (attention scores and weighted value sums).
 * An AVX2/FMA version is chosen at first use where the CPU has it (and
 * HEARTH_NO_SIMD is unset, as for quant.h); the scalar one otherwise. */
#ifndef HEARTH_VEC_H
#define HEARTH_VEC_H

#include <stdint.h>

/* sum_i a[i] * b[i] */
float vec_dot_f32(const float *a, const float *b, int n);
/* y[i] += alpha * x[i] */
void vec_axpy_f32(float *y, float alpha, const float *x, int n);

/* The same for several queries or outputs at once, one pass over x: each
 * result bit for bit what the one-query call gives. out[j] = vec_dot_f32(
 * q + j * n, k, n); y + j * n gets vec_axpy_f32(y + j * n, alpha[j], x, n). */
void vec_dots_f32(const float *q, int nq, const float *k, int n, float *out);
/* The most query heads attention passes at once (a run of heads sharing a KV
 * head, cut at this many): the size of its per-head scratch on the stack. */
#define VEC_RUN 8
void vec_axpys_f32(float *y, int ny, const float *alpha, const float *x, int n);

/* Quantized rows (the cold KV store, core/kvcache.h): int8, or int4 with
 * channel c in the nibble c % 2 of byte c / 2 (low first), stored plus 8.
 * out[j] = sum_c q[j][c] * k[c] for the nq queries q[j] = q + j * n, before
 * the row's scale: one pass over the row for all of them. Each out[j] is
 * the same, bit for bit, whatever nq and j's place among them. */
void vec_dots_f32_i8(const float *q, int nq, const int8_t *k, int n, float *out);
void vec_dots_f32_q4(const float *q, int nq, const uint8_t *k, int n, float *out);
/* The best over the nq queries q[j] = q + j * n of Quest's upper bound of
 * q[j] . k for any k with lo <= k <= hi: sum_c max(q_c lo_c, q_c hi_c),
 * channel c summed into partial sum c % 8, the eight added pairwise
 * ((0+1)+(2+3))+((4+5)+(6+7)); every version gives that sum bit for bit. */
float vec_bound_f32(const float *q, int nq, const float *lo, const float *hi, int n);
/* out[c] = k[c] * d: the row dequantized (exactly one rounding, the product) */
void vec_i8_to_f32(float *out, const int8_t *k, float d, int n);
void vec_q4_to_f32(float *out, const uint8_t *k, float d, int n);

#endif
