/* model: see model.h. Everything read from the file is checked here once, so
 * that the forward pass can trust shapes and types without re-checking. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "quant.h"
#include "types.h"

/* "llama.embedding_length" for arch "llama" */
static const char *arch_key(const struct llama_config *c, const char *suffix, char *buf, size_t cap) {
    snprintf(buf, cap, "%s.%s", c->arch, suffix);
    return buf;
}

static int get_int_key(gguf_ctx_t *g, const struct llama_config *c, const char *suffix, int required,
                       int def, int *out, char *err, size_t errlen) {
    char key[128];
    arch_key(c, suffix, key, sizeof key);
    if (gguf_find_key(g, key) < 0) {
        if (required) {
            snprintf(err, errlen, "missing metadata key '%s'", key);
            return -1;
        }
        *out = def;
        return 0;
    }
    int64_t v;
    if (gguf_get_int(g, key, &v, err, errlen) != 0) return -1;
    if (v < 0 || v > (1 << 30)) {
        snprintf(err, errlen, "metadata key '%s' = %lld is out of range", key, (long long)v);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int get_float_key(gguf_ctx_t *g, const struct llama_config *c, const char *suffix, float def, float *out,
                         char *err, size_t errlen) {
    char key[128];
    arch_key(c, suffix, key, sizeof key);
    if (gguf_find_key(g, key) < 0) {
        *out = def;
        return 0;
    }
    return gguf_get_f32(g, key, out, err, errlen);
}

/* Finds a matrix tensor and checks it is [n_in, n_out] of a type with kernels. */
static int find_weight(gguf_ctx_t *g, const char *name, int64_t n_in, int64_t n_out, int optional, struct weight *w,
                       char *err, size_t errlen) {
    const struct gguf_tensor *t = gguf_find_tensor(g, name);
    memset(w, 0, sizeof *w);
    if (!t) {
        if (optional) return 0;
        snprintf(err, errlen, "missing tensor '%s'", name);
        return -1;
    }
    if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out) {
        snprintf(err, errlen, "tensor '%s' has shape [%lld, %lld] (%u dims), expected [%lld, %lld]", name,
                 (long long)t->ne[0], (long long)t->ne[1], t->n_dims, (long long)n_in, (long long)n_out);
        return -1;
    }
    const struct quant_traits *qt = quant_traits((enum hearth_type)t->type);
    if (!qt || !qt->vec_dot) {
        snprintf(err, errlen, "tensor '%s' has type %s, which hearth cannot compute with", name,
                 hearth_type_name(t->type));
        return -1;
    }
    w->data = t->data;
    w->type = t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    return 0;
}

/* Finds a vector tensor of n floats (any type with a dequantizer) and returns an owned f32 copy. */
static int load_vector(gguf_ctx_t *g, const char *name, int64_t n, int optional, float **out, char *err,
                       size_t errlen) {
    const struct gguf_tensor *t = gguf_find_tensor(g, name);
    *out = NULL;
    if (!t) {
        if (optional) return 0;
        snprintf(err, errlen, "missing tensor '%s'", name);
        return -1;
    }
    if (t->n_dims != 1 || t->ne[0] != n) {
        snprintf(err, errlen, "tensor '%s' has %lld elements, expected a vector of %lld", name,
                 (long long)t->ne[0], (long long)n);
        return -1;
    }
    const struct quant_traits *qt = quant_traits((enum hearth_type)t->type);
    if (!qt || !qt->to_float) {
        snprintf(err, errlen, "tensor '%s' has type %s, which hearth cannot read", name, hearth_type_name(t->type));
        return -1;
    }
    float *v = malloc((size_t)n * sizeof *v);
    if (!v) {
        snprintf(err, errlen, "out of memory for tensor '%s'", name);
        return -1;
    }
    qt->to_float(t->data, v, n);
    *out = v;
    return 0;
}

static int read_config(gguf_ctx_t *g, struct llama_config *c, char *err, size_t errlen) {
    const char *arch = NULL;
    if (gguf_get_str(g, "general.architecture", &arch, err, errlen) != 0) return -1;
    if (strcmp(arch, "llama") != 0 && strcmp(arch, "mistral") != 0 && strcmp(arch, "qwen2") != 0) {
        snprintf(err, errlen, "architecture '%s' is not supported (supported: llama, mistral, qwen2)", arch);
        return -1;
    }
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    c->rope_mode = strcmp(arch, "qwen2") == 0 ? ROPE_NEOX : ROPE_NORMAL;

    if (get_int_key(g, c, "embedding_length", 1, 0, &c->dim, err, errlen) ||
        get_int_key(g, c, "block_count", 1, 0, &c->n_layers, err, errlen) ||
        get_int_key(g, c, "feed_forward_length", 1, 0, &c->hidden_dim, err, errlen) ||
        get_int_key(g, c, "attention.head_count", 1, 0, &c->n_heads, err, errlen) ||
        get_int_key(g, c, "attention.head_count_kv", 0, c->n_heads, &c->n_kv_heads, err, errlen) ||
        get_int_key(g, c, "context_length", 0, 2048, &c->n_ctx_train, err, errlen))
        return -1;
    if (c->dim <= 0 || c->n_layers <= 0 || c->hidden_dim <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->dim % c->n_heads != 0 || c->n_heads % c->n_kv_heads != 0) {
        snprintf(err, errlen,
                 "inconsistent model shape: dim %d, layers %d, ffn %d, heads %d, kv heads %d (dim must divide by "
                 "heads, heads by kv heads)",
                 c->dim, c->n_layers, c->hidden_dim, c->n_heads, c->n_kv_heads);
        return -1;
    }
    c->head_dim = c->dim / c->n_heads;
    if (get_int_key(g, c, "rope.dimension_count", 0, c->head_dim, &c->rope_dim, err, errlen)) return -1;
    if (c->rope_dim > c->head_dim || c->rope_dim % 2 != 0) {
        snprintf(err, errlen, "rope.dimension_count %d must be even and at most the head size %d", c->rope_dim,
                 c->head_dim);
        return -1;
    }
    if (get_float_key(g, c, "rope.freq_base", 10000.0f, &c->rope_base, err, errlen) ||
        get_float_key(g, c, "attention.layer_norm_rms_epsilon", 1e-5f, &c->norm_eps, err, errlen))
        return -1;

    /* The FFN activation is not in llama's metadata; ReLU-fied checkpoints
     * converted for hearth carry "hearth.ffn_activation". */
    c->ffn_act = FFN_ACT_SILU;
    if (gguf_find_key(g, "hearth.ffn_activation") >= 0) {
        const char *act = NULL;
        if (gguf_get_str(g, "hearth.ffn_activation", &act, err, errlen) != 0) return -1;
        if (strcmp(act, "silu") == 0) c->ffn_act = FFN_ACT_SILU;
        else if (strcmp(act, "relu") == 0) c->ffn_act = FFN_ACT_RELU;
        else if (strcmp(act, "gelu") == 0) c->ffn_act = FFN_ACT_GELU;
        else {
            snprintf(err, errlen, "hearth.ffn_activation '%s' is not one of silu, relu, gelu", act);
            return -1;
        }
    }
    return 0;
}

int model_load_gguf(struct llama_model *m, gguf_ctx_t *g, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    m->gguf = g;
    struct llama_config *c = &m->cfg;
    if (read_config(g, c, err, errlen) != 0) return -1;

    const struct gguf_tensor *te = gguf_find_tensor(g, "token_embd.weight");
    if (!te || te->n_dims != 2 || te->ne[0] != c->dim) {
        snprintf(err, errlen, "missing tensor 'token_embd.weight' of shape [%d, n_vocab]", c->dim);
        return -1;
    }
    c->n_vocab = (int)te->ne[1];
    if (find_weight(g, "token_embd.weight", c->dim, c->n_vocab, 0, &m->tok_embd, err, errlen)) return -1;
    if (find_weight(g, "output.weight", c->dim, c->n_vocab, 1, &m->output, err, errlen)) return -1;
    if (!m->output.data) m->output = m->tok_embd; /* tied embeddings */
    if (load_vector(g, "output_norm.weight", c->dim, 0, &m->output_norm, err, errlen)) goto fail;

    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        snprintf(err, errlen, "out of memory for %d layers", c->n_layers);
        goto fail;
    }
    const int64_t q_dim = (int64_t)c->n_heads * c->head_dim, kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    for (int l = 0; l < c->n_layers; l++) {
        struct llama_layer *L = &m->layers[l];
        char name[96];
#define NAME(s) (snprintf(name, sizeof name, "blk.%d.%s", l, s), name)
        if (load_vector(g, NAME("attn_norm.weight"), c->dim, 0, &L->attn_norm, err, errlen) ||
            find_weight(g, NAME("attn_q.weight"), c->dim, q_dim, 0, &L->wq, err, errlen) ||
            find_weight(g, NAME("attn_k.weight"), c->dim, kv_dim, 0, &L->wk, err, errlen) ||
            find_weight(g, NAME("attn_v.weight"), c->dim, kv_dim, 0, &L->wv, err, errlen) ||
            load_vector(g, NAME("attn_q.bias"), q_dim, 1, &L->bq, err, errlen) ||
            load_vector(g, NAME("attn_k.bias"), kv_dim, 1, &L->bk, err, errlen) ||
            load_vector(g, NAME("attn_v.bias"), kv_dim, 1, &L->bv, err, errlen) ||
            find_weight(g, NAME("attn_output.weight"), q_dim, c->dim, 0, &L->wo, err, errlen) ||
            load_vector(g, NAME("ffn_norm.weight"), c->dim, 0, &L->ffn_norm, err, errlen) ||
            find_weight(g, NAME("ffn_gate.weight"), c->dim, c->hidden_dim, 1, &L->w_gate, err, errlen) ||
            find_weight(g, NAME("ffn_up.weight"), c->dim, c->hidden_dim, 0, &L->w_up, err, errlen) ||
            find_weight(g, NAME("ffn_down.weight"), c->hidden_dim, c->dim, 0, &L->w_down, err, errlen))
            goto fail;
#undef NAME
        int gated = L->w_gate.data != NULL;
        if (l == 0) c->ffn_gated = gated;
        else if (gated != c->ffn_gated) {
            snprintf(err, errlen, "layer %d %s an ffn_gate tensor but layer 0 %s", l, gated ? "has" : "lacks",
                     c->ffn_gated ? "has" : "does not");
            goto fail;
        }
    }
    return 0;
fail:
    m->gguf = NULL; /* the caller still owns g */
    model_free(m);
    return -1;
}

int model_load(struct llama_model *m, const char *path, char *err, size_t errlen) {
    gguf_ctx_t *g = gguf_open(path, err, errlen);
    if (!g) return -1;
    char inner[512];
    if (model_load_gguf(m, g, inner, sizeof inner) != 0) {
        snprintf(err, errlen, "%s: %s", path, inner);
        gguf_close(g);
        return -1;
    }
    m->owns_gguf = 1;
    return 0;
}

void weight_repack_free(struct weight *w) {
    free(w->x8);
    w->x8 = NULL;
    w->x8_r0 = w->x8_r1 = w->x8_c0 = w->x8_c1 = 0;
    w->x8_stride = 0;
}

int weight_repack(struct weight *w, int64_t r0, int64_t r1, int64_t c0, int64_t c1, int drop_source, char *err,
                  size_t errlen) {
    const struct quant_traits *tr = quant_traits((enum hearth_type)w->type);
    if (!w->data || !tr || !tr->repack8) return 0;
    r1 = r0 + (r1 - r0) / 8 * 8;
    if (r0 < 0 || r0 % 8 || r1 > w->n_out || c0 < 0 || c0 > c1 || c1 > w->n_in || c0 % tr->blck || c1 % tr->blck ||
        hearth_row_size(w->type, c1 - c0) > QUANT_ROW8_MAX_BYTES) {
        snprintf(err, errlen, "repack: rows [%lld, %lld) columns [%lld, %lld) of a %lld x %lld %s matrix",
                 (long long)r0, (long long)r1, (long long)c0, (long long)c1, (long long)w->n_out, (long long)w->n_in,
                 tr->name);
        return -1;
    }
    weight_repack_free(w);
    if (r1 <= r0 || c1 <= c0) return 0;
    const size_t row = hearth_row_size(w->type, w->n_in), off = hearth_row_size(w->type, c0);
    const size_t stride = 8 * hearth_row_size(w->type, c1 - c0), groups = (size_t)(r1 - r0) / 8;
    void *x8 = NULL;
    if (posix_memalign(&x8, 64, groups * stride) != 0) {
        snprintf(err, errlen, "repack: out of memory for %zu bytes of %s weights", groups * stride, tr->name);
        return -1;
    }
    const char *src = (const char *)w->data + (size_t)r0 * row;
    for (size_t g = 0; g < groups; g++) tr->repack8(src + g * 8 * row + off, row, (char *)x8 + g * stride, c1 - c0);
    w->x8 = x8;
    w->x8_r0 = r0;
    w->x8_r1 = r1;
    w->x8_c0 = c0;
    w->x8_c1 = c1;
    w->x8_stride = stride;
    if (drop_source) { /* the whole pages inside the rows just read */
        const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t a = ((uintptr_t)src + page - 1) & ~(page - 1), b = ((uintptr_t)src + groups * 8 * row) & ~(page - 1);
        if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
    }
    return 0;
}

static size_t repacked_bytes(const struct weight *w) {
    return w->x8 ? (size_t)(w->x8_r1 - w->x8_r0) / 8 * w->x8_stride : 0;
}

int model_repack_layer(struct llama_layer *L, int attn, int64_t n0, int64_t n1, int drop_source, size_t *bytes,
                       char *err, size_t errlen) {
    struct weight *a[4] = {&L->wq, &L->wk, &L->wv, &L->wo};
    for (int k = 0; attn && k < 4; k++) {
        if (weight_repack(a[k], 0, a[k]->n_out, 0, a[k]->n_in, drop_source, err, errlen) != 0) return -1;
        *bytes += repacked_bytes(a[k]);
    }
    if (n1 <= n0) return 0;
    struct weight *gu[2] = {&L->w_gate, &L->w_up};
    for (int k = 0; k < 2; k++) {
        if (weight_repack(gu[k], n0, n1, 0, gu[k]->n_in, drop_source, err, errlen) != 0) return -1;
        *bytes += repacked_bytes(gu[k]);
    }
    if (weight_repack(&L->w_down, 0, L->w_down.n_out, n0, n1, drop_source, err, errlen) != 0) return -1;
    *bytes += repacked_bytes(&L->w_down);
    return 0;
}

int model_repack(struct llama_model *m, int attn, const int64_t *ffn_n0, const int64_t *ffn_n1, size_t *bytes,
                 char *err, size_t errlen) {
    size_t total = 0;
    const int drop = gguf_is_mapped(m->gguf); /* never for a caller's buffer: dropping would zero it */
    for (int l = 0; l < m->cfg.n_layers; l++)
        if (model_repack_layer(&m->layers[l], attn, ffn_n0 ? ffn_n0[l] : 0, ffn_n0 ? ffn_n1[l] : 0, drop, &total,
                               err, errlen) != 0)
            return -1;
    if (bytes) *bytes = total;
    return 0;
}

int model_repack_all(struct llama_model *m, int ffn, size_t *bytes, char *err, size_t errlen) {
    size_t total = 0;
    const int drop = gguf_is_mapped(m->gguf);
    for (int l = 0; l < m->cfg.n_layers; l++)
        if (model_repack_layer(&m->layers[l], 1, 0, ffn ? m->layers[l].w_up.n_out : 0, drop, &total, err, errlen) != 0)
            return -1;
    if (bytes) *bytes = total;
    return 0;
}

void model_free(struct llama_model *m) {
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            struct llama_layer *L = &m->layers[l];
            struct weight *all[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
            for (int k = 0; k < 7; k++) weight_repack_free(all[k]);
            free(L->attn_norm);
            free(L->ffn_norm);
            free(L->bq);
            free(L->bk);
            free(L->bv);
        }
        free(m->layers);
    }
    free(m->output_norm);
    if (m->owns_gguf && m->gguf) gguf_close(m->gguf);
    memset(m, 0, sizeof *m);
}

size_t model_weight_size(const struct weight *w) {
    return w->data ? hearth_row_size(w->type, w->n_in) * (size_t)w->n_out : 0;
}

size_t model_weight_bytes(const struct llama_model *m) {
    size_t total = model_weight_size(&m->output);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const struct llama_layer *L = &m->layers[l];
        total += model_weight_size(&L->wq) + model_weight_size(&L->wk) + model_weight_size(&L->wv) +
                 model_weight_size(&L->wo) + model_weight_size(&L->w_gate) + model_weight_size(&L->w_up) +
                 model_weight_size(&L->w_down);
    }
    return total;
}

struct matmul_out weight_out(const struct weight *w, int64_t r0, int64_t r1, int64_t c0, int64_t n_in, float *y) {
    struct matmul_out o = {.w = (const char *)w->data + hearth_row_size(w->type, c0),
                           .wt = (enum hearth_type)w->type,
                           .w_stride = hearth_row_size(w->type, w->n_in),
                           .n_out = w->n_out,
                           .r0 = r0,
                           .r1 = r1,
                           .y = y};
    if (w->x8 && r0 >= w->x8_r0 && (r0 - w->x8_r0) % 8 == 0 && r0 < w->x8_r1 && c0 >= w->x8_c0 &&
        c0 + n_in <= w->x8_c1) {
        const int64_t end = r1 < w->x8_r1 ? r1 : w->x8_r1;
        const size_t blk = hearth_row_size(w->type, c0 - w->x8_c0);
        o.w8 = (const char *)w->x8 + (size_t)((r0 - w->x8_r0) / 8) * w->x8_stride + 8 * blk;
        o.w8_stride = w->x8_stride;
        o.n8 = (end - r0) / 8 * 8;
    }
    return o;
}

int weight_matmul(struct tpool *tp, const struct weight *w, const float *x, int n, float *y,
                  struct matmul_scratch *ms, char *err, size_t errlen) {
    const struct matmul_in in = {x, NULL, NULL};
    const struct matmul_out o = weight_out(w, 0, w->n_out, 0, w->n_in, y);
    return matmul_fused(tp, &in, w->n_in, n, &o, 1, ms, err, errlen);
}
