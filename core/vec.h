/* vec: float32 vector primitives for the parts of the forward pass that are
 * not weight matrices (attention scores and weighted value sums).
 * An AVX2/FMA version is chosen at first use where the CPU has it (and
 * HEARTH_NO_SIMD is unset, as for quant.h); the scalar one otherwise. */
#ifndef HEARTH_VEC_H
#define HEARTH_VEC_H

/* sum_i a[i] * b[i] */
float vec_dot_f32(const float *a, const float *b, int n);
/* y[i] += alpha * x[i] */
void vec_axpy_f32(float *y, float alpha, const float *x, int n);

#endif
