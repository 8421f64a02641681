/* types: see types.h. Sizes follow ggml's block structs (quant.h asserts them). */
#include "types.h"

static const struct {
    const char *name;
    int64_t blck;
    size_t size;
} g_types[HEARTH_TYPE_COUNT] = {
    [HEARTH_TYPE_F32] = {"F32", 1, 4},
    [HEARTH_TYPE_F16] = {"F16", 1, 2},
    [HEARTH_TYPE_Q4_0] = {"Q4_0", 32, 18},
    [HEARTH_TYPE_Q4_1] = {"Q4_1", 32, 20},
    [HEARTH_TYPE_Q5_0] = {"Q5_0", 32, 22},
    [HEARTH_TYPE_Q5_1] = {"Q5_1", 32, 24},
    [HEARTH_TYPE_Q8_0] = {"Q8_0", 32, 34},
    [HEARTH_TYPE_Q8_1] = {"Q8_1", 32, 36},
    [HEARTH_TYPE_Q2_K] = {"Q2_K", 256, 84},
    [HEARTH_TYPE_Q3_K] = {"Q3_K", 256, 110},
    [HEARTH_TYPE_Q4_K] = {"Q4_K", 256, 144},
    [HEARTH_TYPE_Q5_K] = {"Q5_K", 256, 176},
    [HEARTH_TYPE_Q6_K] = {"Q6_K", 256, 210},
    [HEARTH_TYPE_Q8_K] = {"Q8_K", 256, 292},
    [HEARTH_TYPE_I8] = {"I8", 1, 1},
    [HEARTH_TYPE_I16] = {"I16", 1, 2},
    [HEARTH_TYPE_I32] = {"I32", 1, 4},
    [HEARTH_TYPE_I64] = {"I64", 1, 8},
    [HEARTH_TYPE_F64] = {"F64", 1, 8},
    [HEARTH_TYPE_BF16] = {"BF16", 1, 2},
};

int hearth_type_known(uint32_t type) {
    return type < HEARTH_TYPE_COUNT && g_types[type].name != NULL;
}

const char *hearth_type_name(uint32_t type) {
    return hearth_type_known(type) ? g_types[type].name : "unknown";
}

int64_t hearth_type_blck(uint32_t type) {
    return hearth_type_known(type) ? g_types[type].blck : 0;
}

size_t hearth_type_size(uint32_t type) {
    return hearth_type_known(type) ? g_types[type].size : 0;
}

size_t hearth_row_size(uint32_t type, int64_t n) {
    if (!hearth_type_known(type) || n < 0 || n % g_types[type].blck != 0) return 0;
    return (size_t)(n / g_types[type].blck) * g_types[type].size;
}
