/* types: the tensor element types of GGUF files, and their storage sizes.
 *
 * Quantized types store a row as consecutive blocks; a block holds
 * `blck` weights in `size` bytes. A row of n weights (n a multiple of blck)
 * takes n / blck * size bytes. The ids are GGUF's (ggml's) and appear in files:
 * never renumber. Kernels for each type live in quant.h. */
#ifndef HEARTH_TYPES_H
#define HEARTH_TYPES_H

#include <stddef.h>
#include <stdint.h>

enum hearth_type {
    HEARTH_TYPE_F32 = 0,
    HEARTH_TYPE_F16 = 1,
    HEARTH_TYPE_Q4_0 = 2,
    HEARTH_TYPE_Q4_1 = 3,
    HEARTH_TYPE_Q5_0 = 6,
    HEARTH_TYPE_Q5_1 = 7,
    HEARTH_TYPE_Q8_0 = 8,
    HEARTH_TYPE_Q8_1 = 9,
    HEARTH_TYPE_Q2_K = 10,
    HEARTH_TYPE_Q3_K = 11,
    HEARTH_TYPE_Q4_K = 12,
    HEARTH_TYPE_Q5_K = 13,
    HEARTH_TYPE_Q6_K = 14,
    HEARTH_TYPE_Q8_K = 15,
    /* plain integers and F64, as ggml numbers them: no kernels, storage only
     * (the sidecar's neuron orders, hot counts and predictor samples) */
    HEARTH_TYPE_I8 = 24,
    HEARTH_TYPE_I16 = 25,
    HEARTH_TYPE_I32 = 26,
    HEARTH_TYPE_I64 = 27,
    HEARTH_TYPE_F64 = 28,
    HEARTH_TYPE_BF16 = 30,
    HEARTH_TYPE_COUNT = 31 /* one past the largest id */
};

/* 1 when the id names a type whose storage size hearth knows (it can read
 * past tensors of it), 0 otherwise. */
int hearth_type_known(uint32_t type);
/* "Q4_1" etc.; "unknown" for an id that is not known. */
const char *hearth_type_name(uint32_t type);
/* weights per block (1 for F32/F16/BF16); 0 for an unknown id. */
int64_t hearth_type_blck(uint32_t type);
/* bytes per block; 0 for an unknown id. */
size_t hearth_type_size(uint32_t type);
/* bytes of a row of n weights; 0 when unknown or n is not a multiple of blck. */
size_t hearth_row_size(uint32_t type, int64_t n);

#endif
