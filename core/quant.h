/* quant: the block formats of GGUF tensors and the CPU kernels over them.
 *
 * A quantized row of n weights is n / blck consecutive blocks (blck = 32 for
 * the *_0/_1 types, 256 for the K types). The structs below are byte-exact
 * copies of ggml's layouts (they are read straight out of mmapped files), each
 * checked by a _Static_assert on its size. Halves are stored as raw uint16_t
 * (IEEE binary16, see fp16.h).
 *
 * One table (struct quant_traits, one entry per type) says how to
 * dequantize a row, quantize a row, and take the dot product of a weight row
 * with an activation row. Matrix products quantize the activations once to the
 * weight type's vec_dot_type (Q8_0, Q8_1 or Q8_K: 8-bit integers, so the inner
 * loop is an integer dot product) and then call vec_dot per output row.
 *
 * vec_dot is the fastest kernel the CPU supports (AVX2+FMA where present,
 * chosen once at first use; HEARTH_NO_SIMD=1 in the environment forces the
 * scalar ones); vec_dot_ref is always the plain C reference. */
#ifndef HEARTH_QUANT_H
#define HEARTH_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "types.h"

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256
#define K_SCALE_SIZE 12 /* bytes of packed 6-bit scales and mins in Q4_K/Q5_K */

/* x = (q - 8) * d, q in 0..15. qs[j] low nibble = element j, high nibble = j + 16. */
typedef struct {
    uint16_t d;
    uint8_t qs[QK4_0 / 2];
} block_q4_0;
_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 is 18 bytes");

/* x = q * d + m, q in 0..15; nibbles as in Q4_0. */
typedef struct {
    uint16_t d;
    uint16_t m;
    uint8_t qs[QK4_1 / 2];
} block_q4_1;
_Static_assert(sizeof(block_q4_1) == 20, "block_q4_1 is 20 bytes");

/* x = (q - 16) * d, q in 0..31: low 4 bits in nibbles as Q4_0, bit 4 of
 * element j is bit j of qh (a little-endian u32). */
typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
} block_q5_0;
_Static_assert(sizeof(block_q5_0) == 22, "block_q5_0 is 22 bytes");

/* x = q * d + m, q in 0..31; bits as in Q5_0. */
typedef struct {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;
_Static_assert(sizeof(block_q5_1) == 24, "block_q5_1 is 24 bytes");

/* x = q * d */
typedef struct {
    uint16_t d;
    int8_t qs[QK8_0];
} block_q8_0;
_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 is 34 bytes");

/* x = q * d; s = d * sum(qs) (lets Q4_1/Q5_1 dots add their offset m once per block). */
typedef struct {
    uint16_t d;
    uint16_t s;
    int8_t qs[QK8_1];
} block_q8_1;
_Static_assert(sizeof(block_q8_1) == 36, "block_q8_1 is 36 bytes");

/* 256 weights in 8 sub-blocks of 32. Sub-block j has a 6-bit scale sc_j and a
 * 6-bit min m_j packed into scales[12] (j < 4: sc = scales[j] & 63,
 * m = scales[j+4] & 63; j >= 4: sc = (scales[j+4] & 15) | (scales[j-4] >> 6) << 4,
 * m = (scales[j+4] >> 4) | (scales[j] >> 6) << 4). x = d*sc_j*q - dmin*m_j.
 * qs: 4 chunks of 32 bytes; chunk c's low nibbles are sub-block 2c, its high
 * nibbles sub-block 2c+1. */
typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K;
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K is 144 bytes");

/* As Q4_K with a fifth bit: bit 4 of sub-block 2c element l is bit 2c of
 * qh[l], of sub-block 2c+1 bit 2c+1 (l in 0..31). */
typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
_Static_assert(sizeof(block_q5_K) == 176, "block_q5_K is 176 bytes");

/* 256 weights in 16 groups of 16, x = d * scales[g] * (q - 32), q in 0..63.
 * Two halves of 128; in half h, element l (0..31) of each quarter k (0..3):
 * low 4 bits = nibble of ql[64h + l + 32*(k&1)] (low for k<2, high for k>=2),
 * high 2 bits = bits 2k..2k+1 of qh[32h + l]. */
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;
} block_q6_K;
_Static_assert(sizeof(block_q6_K) == 210, "block_q6_K is 210 bytes");

/* Activations for K-type dots: x = q * d (d is f32), bsums[g] = sum of the 16
 * quants of group g (used for the mins of Q4_K/Q5_K). */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;
_Static_assert(sizeof(block_q8_K) == 292, "block_q8_K is 292 bytes");

/* Q4_1, 8 rows interleaved (the decode GEMV's layout, see repack8 below):
 * block i of rows R..R+7, so that one 256-bit load serves two rows and the
 * 8 scales convert in one instruction. Row r's nibbles are in slot
 * 2 (r % 4) + r / 4: slots 2k and 2k+1 (one 32-byte load) are rows k and k+4,
 * so that the sums come out in row order after two rounds of hadd. */
typedef struct {
    uint16_t d[8];
    uint16_t m[8];
    uint8_t qs[8][QK4_1 / 2];
} block_q4_1x8;
_Static_assert(sizeof(block_q4_1x8) == 8 * sizeof(block_q4_1), "block_q4_1x8 is 8 Q4_1 blocks");

/* n counts weights (elements), never bytes; n is a multiple of blck. */
typedef void (*quant_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*quant_from_float_fn)(const float *src, void *dst, int64_t n);
/* *s = sum_i w[i] * x[i] over n elements; w is a row of the weight type, x a
 * row of its vec_dot_type. */
typedef void (*quant_vec_dot_fn)(int64_t n, float *s, const void *w, const void *x);
/* Four dot products of one weight row with four activation rows:
 * s[j * s_stride] = w . (x + j * x_stride bytes), j = 0..3. Results are
 * bit-identical to four vec_dot calls (same accumulation order), so matmul
 * gives the same values whatever the batch size. */
typedef void (*quant_vec_dot4_fn)(int64_t n, float *s, size_t s_stride, const void *w, const void *x,
                                  size_t x_stride);

/* 8-row interleaved layout: a row group of 8 rows of n elements is
 * n / blck interleaved blocks of 8 * size bytes (block i of all 8 rows).
 * repack8 builds one group from 8 rows (row r at src + r * src_stride);
 * unpack8 gives back row r (0..7) of a group. vec_dot8 computes
 * s[j * s_stride + r] = row r . (x + j * x_stride bytes) for r = 0..7 and
 * j < ntok (1..4), bit-identical to vec_dot on the unpacked rows: the kernels
 * of a type with vec_dot8 define their sums so that one row and eight rows
 * round alike (Q4_1: quant_avx2.c), so which rows a process repacks never
 * changes a result. */
typedef void (*quant_repack8_fn)(const void *src, size_t src_stride, void *dst, int64_t n);
typedef void (*quant_unpack8_fn)(const void *w8, int r, void *dst, int64_t n);
typedef void (*quant_vec_dot8_fn)(int64_t n, float *s, size_t s_stride, const void *w8, const void *x,
                                  size_t x_stride, int ntok);

struct quant_traits {
    enum hearth_type type;
    const char *name;
    int64_t blck;                       /* elements per block */
    size_t size;                        /* bytes per block */
    quant_to_float_fn to_float;         /* NULL for none */
    quant_from_float_fn from_float;     /* fastest quantizer, NULL for none */
    quant_from_float_fn from_float_ref; /* scalar round-to-nearest, NULL for none */
    enum hearth_type vec_dot_type;      /* activations' type for vec_dot */
    quant_vec_dot_fn vec_dot;           /* fastest, NULL when not a weight type */
    quant_vec_dot_fn vec_dot_ref;       /* scalar reference */
    quant_vec_dot4_fn vec_dot4;         /* NULL when the type has no 4-token kernel */
    quant_repack8_fn repack8;           /* NULL when the type has no interleaved layout */
    quant_unpack8_fn unpack8;
    quant_vec_dot8_fn vec_dot8;         /* fastest; without SIMD: unpack8 + vec_dot */
};

/* Largest row, in bytes, that the generic vec_dot8 unpacks (on the stack). */
#define QUANT_ROW8_MAX_BYTES (64 * 1024)

/* The entry for a type; NULL when hearth has no kernels for it (Q2_K, Q3_K,
 * unknown ids). Thread-safe; the table is built on first use. */
const struct quant_traits *quant_traits(enum hearth_type type);

/* 1 when vec_dot/from_float use the AVX2+FMA kernels. */
int quant_have_avx2(void);

/* Row helpers over the table: 0 ok, negative when the type has no such
 * function or n is not a multiple of its block size (err says which). */
int quant_dequantize_row(enum hearth_type type, const void *src, float *dst, int64_t n, char *err,
                         size_t errlen);
int quant_quantize_row(enum hearth_type type, const float *src, void *dst, int64_t n, char *err,
                       size_t errlen);

/* Internal: quant_avx2.c overrides table entries with its kernels;
 * quant_vnni.c with the same kernels on AVX-512 VNNI. */
void quant_avx2_install(struct quant_traits *table, int count);
void quant_vnni_install(struct quant_traits *table, int count);
/* "avx2", "avx512-vnni" or "scalar": the kernels in use (for logs and bench) */
const char *quant_isa(void);

#endif
