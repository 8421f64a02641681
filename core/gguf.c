/* gguf: see gguf.h.
 *
 * The reader makes one pass over the header, metadata and tensor infos with
 * a cursor that checks every read against the bytes left, so no pointer is
 * ever formed past the end of the file. Counts are checked against what the
 * remaining bytes could possibly hold (count * smallest encoding) before
 * anything is allocated for them, so allocations are bounded by the file
 * size. Then the tensors are checked against the data section: alignment,
 * bounds, and (sorted by offset) overlap. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "types.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian values with memcpy; add byte swapping for big-endian hosts"
#endif

/* Smallest encodings, used to bound counts by the bytes left. */
#define MIN_STR_BYTES 8u            /* u64 length, no bytes */
#define MIN_ARR_BYTES 12u           /* u32 type + u64 count */
#define MIN_KV_BYTES (8u + 4u + 1u) /* empty key, type, one-byte value */
#define MIN_TENSOR_INFO_BYTES (8u + 4u + 8u + 4u + 8u)
#define HEADER_BYTES 24u

static const struct {
    const char *name;
    size_t size;
} g_vtypes[GGUF_VTYPE_COUNT] = {
    [GGUF_VTYPE_U8] = {"u8", 1},   [GGUF_VTYPE_I8] = {"i8", 1},     [GGUF_VTYPE_U16] = {"u16", 2},
    [GGUF_VTYPE_I16] = {"i16", 2}, [GGUF_VTYPE_U32] = {"u32", 4},   [GGUF_VTYPE_I32] = {"i32", 4},
    [GGUF_VTYPE_F32] = {"f32", 4}, [GGUF_VTYPE_BOOL] = {"bool", 1}, [GGUF_VTYPE_STR] = {"str", 0},
    [GGUF_VTYPE_ARR] = {"arr", 0}, [GGUF_VTYPE_U64] = {"u64", 8},   [GGUF_VTYPE_I64] = {"i64", 8},
    [GGUF_VTYPE_F64] = {"f64", 8},
};

const char *gguf_vtype_name(uint32_t t) { return t < GGUF_VTYPE_COUNT ? g_vtypes[t].name : "unknown"; }

size_t gguf_vtype_size(uint32_t t) { return t < GGUF_VTYPE_COUNT ? g_vtypes[t].size : 0; }

static uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* ------------------------------------------------------------ name index */

/* Open-addressing hash from a NUL-terminated name to an index; names are
 * owned elsewhere (keys of kvs, names of tensors). cap is a power of two at
 * least twice the count, so probes stay short and a free slot always exists. */
struct name_index {
    int64_t *slots; /* -1 = empty, else index into names */
    size_t cap;
};

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int name_index_init(struct name_index *ix, int64_t n) {
    size_t cap = 16;
    while (cap < (size_t)n * 2) cap *= 2;
    ix->slots = malloc(cap * sizeof *ix->slots);
    if (!ix->slots) return GGUF_ERR_NOMEM;
    for (size_t i = 0; i < cap; i++) ix->slots[i] = -1;
    ix->cap = cap;
    return 0;
}

/* ------------------------------------------------------------ the context */

struct gguf_kv {
    char *key;             /* NUL-terminated copy */
    size_t key_off;        /* file offset of the key's length field */
    struct gguf_value val; /* view into the mapping */
    char *str;             /* STR: NUL-terminated copy of the value */
    uint64_t *str_index;   /* ARR of STR: offset of element i's length field from val.data */
};

struct gguf_ctx {
    char *path;
    const uint8_t *base;
    size_t size;
    int mapped; /* base came from mmap and is unmapped by close */
    uint32_t version;
    uint32_t alignment;
    size_t data_offset;
    int64_t n_kv;
    struct gguf_kv *kv;
    int64_t n_tensors;
    struct gguf_tensor *tensors;
    struct name_index kv_index, tensor_index;
};

/* Returns the index stored for name, or -1; *slot_out gets the slot where it
 * is or would go. name_of gives the name of an index already stored. */
static int64_t name_index_find(const struct name_index *ix, const gguf_ctx_t *ctx, const char *name,
                               const char *(*name_of)(const gguf_ctx_t *, int64_t), size_t *slot_out) {
    if (!ix->slots) return -1;
    size_t mask = ix->cap - 1;
    size_t s = (size_t)hash_name(name) & mask;
    while (ix->slots[s] >= 0) {
        if (strcmp(name_of(ctx, ix->slots[s]), name) == 0) {
            if (slot_out) *slot_out = s;
            return ix->slots[s];
        }
        s = (s + 1) & mask;
    }
    if (slot_out) *slot_out = s;
    return -1;
}

static const char *kv_name(const gguf_ctx_t *ctx, int64_t i) { return ctx->kv[i].key; }
static const char *tensor_name(const gguf_ctx_t *ctx, int64_t i) { return ctx->tensors[i].name; }

/* The parsing cursor, and the first error met. */
struct parser {
    gguf_ctx_t *ctx;
    size_t pos;
    char *err;
    size_t errlen;
};

__attribute__((format(printf, 3, 4))) static int perr(struct parser *p, size_t off, const char *fmt, ...) {
    if (!p->err || p->errlen == 0) return GGUF_ERR_FORMAT;
    int n = snprintf(p->err, p->errlen, "%s: ", p->ctx->path);
    if (n < 0 || (size_t)n >= p->errlen) return GGUF_ERR_FORMAT;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0 || (size_t)(n + m) >= p->errlen) return GGUF_ERR_FORMAT;
    snprintf(p->err + n + m, p->errlen - (size_t)(n + m), " at file offset %zu (0x%zx)", off, off);
    return GGUF_ERR_FORMAT;
}

static size_t left(const struct parser *p) { return p->ctx->size - p->pos; }

/* Copies up to 48 bytes of a name from the file into buf for a message,
 * with anything unprintable shown as '?', and "..." when cut. */
static const char *show(char *buf, size_t cap, const uint8_t *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len && n + 4 < cap && i < 48; i++) buf[n++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    if (n < len) {
        if (n + 4 > cap) n = cap - 4;
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = 0;
    return buf;
}

static int need(struct parser *p, size_t n, const char *what) {
    if (left(p) < n)
        return perr(p, p->pos, "%s: needs %zu bytes but the file ends after %zu (file size %zu)", what, n, left(p),
                    p->ctx->size);
    return 0;
}

static int get_u32(struct parser *p, uint32_t *v, const char *what) {
    int rc = need(p, 4, what);
    if (rc) return rc;
    *v = rd32(p->ctx->base + p->pos);
    p->pos += 4;
    return 0;
}

static int get_u64(struct parser *p, uint64_t *v, const char *what) {
    int rc = need(p, 8, what);
    if (rc) return rc;
    *v = rd64(p->ctx->base + p->pos);
    p->pos += 8;
    return 0;
}

/* A string: u64 length, then that many bytes, checked against the file. */
static int get_str(struct parser *p, const uint8_t **s, size_t *len, const char *what) {
    size_t off = p->pos;
    uint64_t n;
    int rc = get_u64(p, &n, what);
    if (rc) return rc;
    if (n > left(p))
        return perr(p, off, "%s: string length %llu exceeds the %zu bytes left in the file", what,
                    (unsigned long long)n, left(p));
    *s = p->ctx->base + p->pos;
    *len = (size_t)n;
    p->pos += (size_t)n;
    return 0;
}

/* A key or tensor name as a NUL-terminated copy; a NUL inside would make two
 * different names compare equal, so it is rejected. */
static int get_name(struct parser *p, char **out, const char *what) {
    size_t off = p->pos;
    const uint8_t *s;
    size_t len;
    int rc = get_str(p, &s, &len, what);
    if (rc) return rc;
    if (memchr(s, 0, len)) return perr(p, off, "%s: name contains a NUL byte", what);
    char *c = malloc(len + 1);
    if (!c) return perr(p, off, "%s: out of memory for a %zu-byte name", what, len);
    memcpy(c, s, len);
    c[len] = 0;
    *out = c;
    return 0;
}

/* Parses one value of type t at the cursor into v (a view). depth is the
 * nesting level this value would have if it is an array (1 for a top-level
 * array). When index is non-NULL and the value is an array of strings, the
 * offset of each string is recorded in a new *index. */
static int parse_value(struct parser *p, uint32_t t, int depth, const char *what, struct gguf_value *v,
                       uint64_t **index) {
    const uint8_t *base = p->ctx->base;
    size_t off = p->pos;
    memset(v, 0, sizeof *v);
    v->type = (enum gguf_vtype)t;
    v->n = 1;
    if (t >= GGUF_VTYPE_COUNT)
        return perr(p, off, "%s: unknown value type %u (expected 0..12)", what, t);
    if (t == GGUF_VTYPE_STR) {
        const uint8_t *s;
        size_t len;
        int rc = get_str(p, &s, &len, what);
        if (rc) return rc;
        v->data = s;
        v->n = len;
        v->nbytes = len;
        return 0;
    }
    if (t != GGUF_VTYPE_ARR) {
        size_t sz = g_vtypes[t].size;
        int rc = need(p, sz, what);
        if (rc) return rc;
        if (t == GGUF_VTYPE_BOOL && base[p->pos] > 1)
            return perr(p, off, "%s: bool value is %u (expected 0 or 1)", what, base[p->pos]);
        v->data = base + p->pos;
        v->nbytes = sz;
        p->pos += sz;
        return 0;
    }

    if (depth > GGUF_MAX_DEPTH)
        return perr(p, off, "%s: arrays nested deeper than %d levels", what, GGUF_MAX_DEPTH);
    uint32_t et;
    uint64_t n;
    int rc = get_u32(p, &et, what);
    if (rc) return rc;
    if (et >= GGUF_VTYPE_COUNT)
        return perr(p, off, "%s: unknown array element type %u (expected 0..12)", what, et);
    size_t count_off = p->pos;
    if ((rc = get_u64(p, &n, what))) return rc;
    size_t min = et == GGUF_VTYPE_STR ? MIN_STR_BYTES : et == GGUF_VTYPE_ARR ? MIN_ARR_BYTES : g_vtypes[et].size;
    if (n > left(p) / min)
        return perr(p, count_off,
                    "%s: array of %llu %s elements cannot fit in the %zu bytes left in the file (at least %zu bytes "
                    "each)",
                    what, (unsigned long long)n, g_vtypes[et].name, left(p), min);
    v->elem_type = (enum gguf_vtype)et;
    v->n = n;
    v->data = base + p->pos;
    size_t start = p->pos;
    if (et != GGUF_VTYPE_STR && et != GGUF_VTYPE_ARR) {
        size_t nb = (size_t)n * min;
        if (et == GGUF_VTYPE_BOOL) {
            const uint8_t *b = base + p->pos;
            for (size_t i = 0; i < nb; i++)
                if (b[i] > 1)
                    return perr(p, p->pos + i, "%s: bool element %zu is %u (expected 0 or 1)", what, i, b[i]);
        }
        p->pos += nb;
        v->nbytes = nb;
        return 0;
    }
    uint64_t *ix = NULL;
    if (index && et == GGUF_VTYPE_STR) {
        /* n * 8 <= bytes left (checked above), so this is bounded by the file size */
        ix = malloc((size_t)(n ? n : 1) * sizeof *ix);
        if (!ix) return perr(p, off, "%s: out of memory indexing %llu strings", what, (unsigned long long)n);
    }
    for (uint64_t i = 0; i < n; i++) {
        struct gguf_value e;
        if (ix) ix[i] = p->pos - start;
        if (et == GGUF_VTYPE_STR) {
            const uint8_t *s;
            size_t len;
            rc = get_str(p, &s, &len, what);
        } else {
            rc = parse_value(p, GGUF_VTYPE_ARR, depth + 1, what, &e, NULL);
        }
        if (rc) {
            free(ix);
            return rc;
        }
    }
    v->nbytes = p->pos - start;
    if (index) *index = ix;
    v->index = ix;
    return 0;
}

static int parse_kvs(struct parser *p) {
    gguf_ctx_t *ctx = p->ctx;
    int rc = name_index_init(&ctx->kv_index, ctx->n_kv);
    if (rc) return perr(p, p->pos, "out of memory for %lld keys", (long long)ctx->n_kv);
    for (int64_t i = 0; i < ctx->n_kv; i++) {
        struct gguf_kv *kv = &ctx->kv[i];
        char what[160];
        snprintf(what, sizeof what, "key %lld", (long long)i);
        kv->key_off = p->pos;
        if ((rc = get_name(p, &kv->key, what))) return rc;
        char shown[64];
        snprintf(what, sizeof what, "key %lld ('%s')", (long long)i,
                 show(shown, sizeof shown, (const uint8_t *)kv->key, strlen(kv->key)));
        size_t slot = 0;
        int64_t prev = name_index_find(&ctx->kv_index, ctx, kv->key, kv_name, &slot);
        if (prev >= 0)
            return perr(p, kv->key_off, "%s: duplicate key (first defined as key %lld at file offset %zu)", what,
                        (long long)prev, ctx->kv[prev].key_off);
        ctx->kv_index.slots[slot] = i;
        size_t type_off = p->pos;
        uint32_t t;
        if ((rc = get_u32(p, &t, what))) return rc;
        if (t >= GGUF_VTYPE_COUNT) return perr(p, type_off, "%s: unknown value type %u (expected 0..12)", what, t);
        if ((rc = parse_value(p, t, 1, what, &kv->val, &kv->str_index))) return rc;
        if (t == GGUF_VTYPE_STR) {
            kv->str = malloc(kv->val.n + 1);
            if (!kv->str) return perr(p, type_off, "%s: out of memory", what);
            memcpy(kv->str, kv->val.data, kv->val.n);
            kv->str[kv->val.n] = 0;
        }
    }
    return 0;
}

/* general.alignment: a nonzero power-of-two u32, or absent (32). */
static int read_alignment(struct parser *p) {
    gguf_ctx_t *ctx = p->ctx;
    ctx->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = gguf_find_key(ctx, "general.alignment");
    if (i < 0) return 0;
    const struct gguf_kv *kv = &ctx->kv[i];
    if (kv->val.type != GGUF_VTYPE_U32)
        return perr(p, kv->key_off, "key 'general.alignment' has type %s (expected u32)",
                    gguf_vtype_name(kv->val.type));
    uint32_t a = rd32(kv->val.data);
    if (a == 0 || (a & (a - 1)) != 0)
        return perr(p, kv->key_off, "key 'general.alignment' is %u (expected a nonzero power of two)", a);
    ctx->alignment = a;
    return 0;
}

static int parse_tensor_infos(struct parser *p, size_t *offset_field) {
    gguf_ctx_t *ctx = p->ctx;
    int rc = name_index_init(&ctx->tensor_index, ctx->n_tensors);
    if (rc) return perr(p, p->pos, "out of memory for %lld tensors", (long long)ctx->n_tensors);
    for (int64_t i = 0; i < ctx->n_tensors; i++) {
        struct gguf_tensor *t = &ctx->tensors[i];
        char what[160], shown[64];
        size_t name_off = p->pos;
        snprintf(what, sizeof what, "tensor %lld", (long long)i);
        char *name;
        if ((rc = get_name(p, &name, what))) return rc;
        t->name = name;
        snprintf(what, sizeof what, "tensor %lld ('%s')", (long long)i,
                 show(shown, sizeof shown, (const uint8_t *)name, strlen(name)));
        size_t slot = 0;
        int64_t prev = name_index_find(&ctx->tensor_index, ctx, name, tensor_name, &slot);
        if (prev >= 0) return perr(p, name_off, "%s: duplicate tensor name (first is tensor %lld)", what, (long long)prev);
        ctx->tensor_index.slots[slot] = i;

        size_t dims_off = p->pos;
        if ((rc = get_u32(p, &t->n_dims, what))) return rc;
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
            return perr(p, dims_off, "%s: n_dims is %u (expected 1..%d)", what, t->n_dims, GGUF_MAX_DIMS);
        int64_t n_elems = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            size_t doff = p->pos;
            uint64_t ne;
            if ((rc = get_u64(p, &ne, what))) return rc;
            if (ne < 1 || ne > (uint64_t)INT64_MAX)
                return perr(p, doff, "%s: dimension %u is %llu (expected 1..%lld)", what, d, (unsigned long long)ne,
                            (long long)INT64_MAX);
            if ((int64_t)ne > INT64_MAX / n_elems)
                return perr(p, doff, "%s: element count overflows at dimension %u (%llu)", what, d,
                            (unsigned long long)ne);
            n_elems *= (int64_t)ne;
            t->ne[d] = (int64_t)ne;
        }
        size_t type_off = p->pos;
        if ((rc = get_u32(p, &t->type, what))) return rc;
        if (!hearth_type_known(t->type))
            return perr(p, type_off, "%s: unknown tensor type %u", what, t->type);
        int64_t blck = hearth_type_blck(t->type);
        if (t->ne[0] % blck != 0)
            return perr(p, dims_off + 4, "%s: dimension 0 is %lld, not a multiple of the %s block size %lld", what,
                        (long long)t->ne[0], hearth_type_name(t->type), (long long)blck);
        /* bytes = row bytes * rows, each checked for overflow */
        size_t row = hearth_row_size(t->type, t->ne[0]);
        uint64_t rows = (uint64_t)(n_elems / t->ne[0]);
        if (row == 0 || rows > SIZE_MAX / row)
            return perr(p, dims_off, "%s: byte size of %lld %s elements overflows", what, (long long)n_elems,
                        hearth_type_name(t->type));
        t->nbytes = row * (size_t)rows;
        offset_field[i] = p->pos;
        if ((rc = get_u64(p, &t->offset, what))) return rc;
    }
    return 0;
}

struct span {
    uint64_t offset;
    size_t nbytes;
    int64_t i;
};

static int cmp_span(const void *a, const void *b) {
    const struct span *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Every tensor aligned, inside the data section, and disjoint from the others. */
static int check_tensor_data(struct parser *p, const size_t *offset_field) {
    gguf_ctx_t *ctx = p->ctx;
    size_t avail = ctx->data_offset <= ctx->size ? ctx->size - ctx->data_offset : 0;
    char shown[64];
    for (int64_t i = 0; i < ctx->n_tensors; i++) {
        struct gguf_tensor *t = &ctx->tensors[i];
        if (t->offset % ctx->alignment != 0)
            return perr(p, offset_field[i], "tensor %lld ('%s'): data offset %llu is not a multiple of the alignment %u",
                        (long long)i, show(shown, sizeof shown, (const uint8_t *)t->name, strlen(t->name)),
                        (unsigned long long)t->offset, ctx->alignment);
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return perr(p, offset_field[i],
                        "tensor %lld ('%s'): data [offset %llu, %zu bytes] runs past end of file (size %zu, data "
                        "section starts at %zu)",
                        (long long)i, show(shown, sizeof shown, (const uint8_t *)t->name, strlen(t->name)),
                        (unsigned long long)t->offset, t->nbytes, ctx->size, ctx->data_offset);
        t->data = ctx->base + ctx->data_offset + t->offset;
    }
    if (ctx->n_tensors < 2) return 0;
    struct span *s = malloc((size_t)ctx->n_tensors * sizeof *s);
    if (!s) return perr(p, 0, "out of memory checking %lld tensors for overlap", (long long)ctx->n_tensors);
    for (int64_t i = 0; i < ctx->n_tensors; i++) s[i] = (struct span){ctx->tensors[i].offset, ctx->tensors[i].nbytes, i};
    qsort(s, (size_t)ctx->n_tensors, sizeof *s, cmp_span);
    int rc = 0;
    for (int64_t k = 0; k + 1 < ctx->n_tensors; k++) {
        if (s[k].offset + s[k].nbytes > s[k + 1].offset) { /* no overflow: both are within the file */
            char shown2[64];
            const struct gguf_tensor *a = &ctx->tensors[s[k].i], *b = &ctx->tensors[s[k + 1].i];
            rc = perr(p, offset_field[s[k + 1].i],
                      "tensor %lld ('%s'): data [offset %llu, %zu bytes] overlaps tensor %lld ('%s') [offset %llu, %zu "
                      "bytes]",
                      (long long)s[k + 1].i, show(shown, sizeof shown, (const uint8_t *)b->name, strlen(b->name)),
                      (unsigned long long)b->offset, b->nbytes, (long long)s[k].i,
                      show(shown2, sizeof shown2, (const uint8_t *)a->name, strlen(a->name)),
                      (unsigned long long)a->offset, a->nbytes);
            break;
        }
    }
    free(s);
    return rc;
}

static int parse(struct parser *p) {
    gguf_ctx_t *ctx = p->ctx;
    const uint8_t *b = ctx->base;
    if (ctx->size < 4)
        return perr(p, 0, "file is %zu bytes, too small for a GGUF header (%u bytes)", ctx->size, HEADER_BYTES);
    uint32_t magic = rd32(b);
    if (magic != GGUF_MAGIC) {
        char shown[16];
        return perr(p, 0, "not a GGUF file: magic is '%s' (0x%08x), expected 'GGUF'", show(shown, sizeof shown, b, 4),
                    magic);
    }
    p->pos = 4;
    int rc;
    if ((rc = get_u32(p, &ctx->version, "header version"))) return rc;
    if (ctx->version == 1)
        return perr(p, 4, "GGUF version 1 is not supported (its counts are 32-bit); convert the model again with a "
                          "current llama.cpp");
    if (ctx->version != 2 && ctx->version != 3) {
        if (ctx->version == 0x03000000u || ctx->version == 0x02000000u)
            return perr(p, 4, "big-endian GGUF files are not supported (version field 0x%08x)", ctx->version);
        return perr(p, 4, "unsupported GGUF version %u (expected 2 or 3)", ctx->version);
    }
    uint64_t nt, nkv;
    size_t nt_off = p->pos;
    if ((rc = get_u64(p, &nt, "header tensor count"))) return rc;
    size_t nkv_off = p->pos;
    if ((rc = get_u64(p, &nkv, "header metadata count"))) return rc;
    if (nkv > left(p) / MIN_KV_BYTES)
        return perr(p, nkv_off, "metadata count %llu cannot fit in the %zu bytes left in the file (at least %u each)",
                    (unsigned long long)nkv, left(p), MIN_KV_BYTES);
    if (nt > left(p) / MIN_TENSOR_INFO_BYTES)
        return perr(p, nt_off, "tensor count %llu cannot fit in the %zu bytes left in the file (at least %u each)",
                    (unsigned long long)nt, left(p), MIN_TENSOR_INFO_BYTES);
    ctx->n_kv = (int64_t)nkv;
    ctx->n_tensors = (int64_t)nt;
    ctx->kv = calloc(nkv ? nkv : 1, sizeof *ctx->kv);
    ctx->tensors = calloc(nt ? nt : 1, sizeof *ctx->tensors);
    if (!ctx->kv || !ctx->tensors) return perr(p, nt_off, "out of memory for %llu keys and %llu tensors",
                                               (unsigned long long)nkv, (unsigned long long)nt);
    if ((rc = parse_kvs(p))) return rc;
    if ((rc = read_alignment(p))) return rc;
    size_t *offset_field = malloc((nt ? nt : 1) * sizeof *offset_field);
    if (!offset_field) return perr(p, p->pos, "out of memory for %llu tensors", (unsigned long long)nt);
    rc = parse_tensor_infos(p, offset_field);
    if (rc == 0) {
        /* p->pos <= size < SIZE_MAX - alignment on any real machine */
        ctx->data_offset = (p->pos + ctx->alignment - 1) / ctx->alignment * ctx->alignment;
        rc = check_tensor_data(p, offset_field);
    }
    free(offset_field);
    return rc;
}

static gguf_ctx_t *ctx_new(const char *path) {
    gguf_ctx_t *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->path = strdup(path);
    if (!ctx->path) {
        free(ctx);
        return NULL;
    }
    ctx->alignment = GGUF_DEFAULT_ALIGNMENT;
    return ctx;
}

static gguf_ctx_t *finish_open(gguf_ctx_t *ctx, char *err, size_t errlen) {
    struct parser p = {ctx, 0, err, errlen};
    if (parse(&p) != 0) {
        gguf_close(ctx);
        return NULL;
    }
    return ctx;
}

gguf_ctx_t *gguf_open_mem(const void *data, size_t size, char *err, size_t errlen) {
    gguf_ctx_t *ctx = ctx_new("<memory>");
    if (!ctx) {
        snprintf(err, errlen, "<memory>: out of memory");
        return NULL;
    }
    static const uint8_t empty[1];
    ctx->base = data ? data : empty;
    ctx->size = data ? size : 0;
    return finish_open(ctx, err, errlen);
}

gguf_ctx_t *gguf_open(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    gguf_ctx_t *ctx = ctx_new(path);
    if (!ctx) {
        snprintf(err, errlen, "%s: out of memory", path);
        close(fd);
        return NULL;
    }
    ctx->size = (size_t)st.st_size;
    if (ctx->size == 0) {
        static const uint8_t empty[1];
        ctx->base = empty; /* mmap of 0 bytes fails; parse reports the size */
    } else {
        void *m = mmap(NULL, ctx->size, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            snprintf(err, errlen, "%s: cannot mmap %zu bytes: %s", path, ctx->size, strerror(errno));
            close(fd);
            gguf_close(ctx);
            return NULL;
        }
        ctx->base = m;
        ctx->mapped = 1;
    }
    close(fd); /* the mapping keeps the file */
    return finish_open(ctx, err, errlen);
}

void gguf_close(gguf_ctx_t *ctx) {
    if (!ctx) return;
    if (ctx->kv) {
        for (int64_t i = 0; i < ctx->n_kv; i++) {
            free(ctx->kv[i].key);
            free(ctx->kv[i].str);
            free(ctx->kv[i].str_index);
        }
        free(ctx->kv);
    }
    if (ctx->tensors) {
        for (int64_t i = 0; i < ctx->n_tensors; i++) free((char *)ctx->tensors[i].name);
        free(ctx->tensors);
    }
    free(ctx->kv_index.slots);
    free(ctx->tensor_index.slots);
    if (ctx->mapped) munmap((void *)ctx->base, ctx->size);
    free(ctx->path);
    free(ctx);
}

int gguf_is_mapped(const gguf_ctx_t *ctx) { return ctx && ctx->mapped; }

const char *gguf_path(const gguf_ctx_t *ctx) { return ctx->path; }
uint32_t gguf_version(const gguf_ctx_t *ctx) { return ctx->version; }
size_t gguf_file_size(const gguf_ctx_t *ctx) { return ctx->size; }
size_t gguf_data_offset(const gguf_ctx_t *ctx) { return ctx->data_offset; }
uint32_t gguf_alignment(const gguf_ctx_t *ctx) { return ctx->alignment; }
const void *gguf_base(const gguf_ctx_t *ctx) { return ctx->base; }
int64_t gguf_n_kv(const gguf_ctx_t *ctx) { return ctx->n_kv; }
int64_t gguf_n_tensors(const gguf_ctx_t *ctx) { return ctx->n_tensors; }

const char *gguf_kv_key(const gguf_ctx_t *ctx, int64_t i) {
    return i >= 0 && i < ctx->n_kv ? ctx->kv[i].key : NULL;
}

int gguf_kv_type(const gguf_ctx_t *ctx, int64_t i) {
    return i >= 0 && i < ctx->n_kv ? (int)ctx->kv[i].val.type : -1;
}

int64_t gguf_find_key(const gguf_ctx_t *ctx, const char *key) {
    if (!key || ctx->n_kv == 0) return -1;
    return name_index_find(&ctx->kv_index, ctx, key, kv_name, NULL);
}

const struct gguf_tensor *gguf_tensor(const gguf_ctx_t *ctx, int64_t i) {
    return i >= 0 && i < ctx->n_tensors ? &ctx->tensors[i] : NULL;
}

const struct gguf_tensor *gguf_find_tensor(const gguf_ctx_t *ctx, const char *name) {
    if (!name || ctx->n_tensors == 0) return NULL;
    int64_t i = name_index_find(&ctx->tensor_index, ctx, name, tensor_name, NULL);
    return i < 0 ? NULL : &ctx->tensors[i];
}

int gguf_kv_value(const gguf_ctx_t *ctx, int64_t i, struct gguf_value *out) {
    if (i < 0 || i >= ctx->n_kv) return GGUF_ERR_ARG;
    *out = ctx->kv[i].val;
    return 0;
}

/* ------------------------------------------------------------ getters */

/* The kv for key, or NULL with *rc and a message naming the key. */
static const struct gguf_kv *lookup(const gguf_ctx_t *ctx, const char *key, int *rc, char *err, size_t errlen) {
    int64_t i = gguf_find_key(ctx, key);
    if (i < 0) {
        snprintf(err, errlen, "%s: metadata key '%s' not found", ctx->path, key ? key : "(null)");
        *rc = GGUF_ERR_NOT_FOUND;
        return NULL;
    }
    *rc = 0;
    return &ctx->kv[i];
}

static int type_error(const gguf_ctx_t *ctx, const struct gguf_kv *kv, const char *expected, char *err,
                      size_t errlen) {
    snprintf(err, errlen, "%s: metadata key '%s' has type %s, expected %s (key at file offset %zu)", ctx->path,
             kv->key, gguf_vtype_name(kv->val.type), expected, kv->key_off);
    return GGUF_ERR_TYPE;
}

/* Fetches a scalar of exactly type t into out (size bytes). */
static int get_scalar(const gguf_ctx_t *ctx, const char *key, enum gguf_vtype t, void *out, char *err,
                      size_t errlen) {
    int rc;
    const struct gguf_kv *kv = lookup(ctx, key, &rc, err, errlen);
    if (!kv) return rc;
    if (kv->val.type != t) return type_error(ctx, kv, g_vtypes[t].name, err, errlen);
    memcpy(out, kv->val.data, g_vtypes[t].size);
    return 0;
}

int gguf_get_u8(const gguf_ctx_t *ctx, const char *key, uint8_t *out, char *err, size_t errlen) {
    return get_scalar(ctx, key, GGUF_VTYPE_U8, out, err, errlen);
}
int gguf_get_u32(const gguf_ctx_t *ctx, const char *key, uint32_t *out, char *err, size_t errlen) {
    return get_scalar(ctx, key, GGUF_VTYPE_U32, out, err, errlen);
}
int gguf_get_i32(const gguf_ctx_t *ctx, const char *key, int32_t *out, char *err, size_t errlen) {
    return get_scalar(ctx, key, GGUF_VTYPE_I32, out, err, errlen);
}
int gguf_get_u64(const gguf_ctx_t *ctx, const char *key, uint64_t *out, char *err, size_t errlen) {
    return get_scalar(ctx, key, GGUF_VTYPE_U64, out, err, errlen);
}
int gguf_get_i64(const gguf_ctx_t *ctx, const char *key, int64_t *out, char *err, size_t errlen) {
    return get_scalar(ctx, key, GGUF_VTYPE_I64, out, err, errlen);
}
int gguf_get_f32(const gguf_ctx_t *ctx, const char *key, float *out, char *err, size_t errlen) {
    return get_scalar(ctx, key, GGUF_VTYPE_F32, out, err, errlen);
}
int gguf_get_f64(const gguf_ctx_t *ctx, const char *key, double *out, char *err, size_t errlen) {
    return get_scalar(ctx, key, GGUF_VTYPE_F64, out, err, errlen);
}

int gguf_get_bool(const gguf_ctx_t *ctx, const char *key, int *out, char *err, size_t errlen) {
    uint8_t b = 0;
    int rc = get_scalar(ctx, key, GGUF_VTYPE_BOOL, &b, err, errlen);
    if (rc == 0) *out = b;
    return rc;
}

int gguf_get_str(const gguf_ctx_t *ctx, const char *key, const char **out, char *err, size_t errlen) {
    int rc;
    const struct gguf_kv *kv = lookup(ctx, key, &rc, err, errlen);
    if (!kv) return rc;
    if (kv->val.type != GGUF_VTYPE_STR) return type_error(ctx, kv, "str", err, errlen);
    *out = kv->str;
    return 0;
}

int gguf_get_int(const gguf_ctx_t *ctx, const char *key, int64_t *out, char *err, size_t errlen) {
    int rc;
    const struct gguf_kv *kv = lookup(ctx, key, &rc, err, errlen);
    if (!kv) return rc;
    if (kv->val.type == GGUF_VTYPE_BOOL || gguf_value_int(&kv->val, out) != 0) {
        if (kv->val.type == GGUF_VTYPE_U64) {
            snprintf(err, errlen, "%s: metadata key '%s' = %llu does not fit in a signed 64-bit integer", ctx->path,
                     kv->key, (unsigned long long)rd64(kv->val.data));
            return GGUF_ERR_TYPE;
        }
        return type_error(ctx, kv, "an integer type", err, errlen);
    }
    return 0;
}

int gguf_get_float(const gguf_ctx_t *ctx, const char *key, double *out, char *err, size_t errlen) {
    int rc;
    const struct gguf_kv *kv = lookup(ctx, key, &rc, err, errlen);
    if (!kv) return rc;
    if (gguf_value_float(&kv->val, out) != 0) return type_error(ctx, kv, "f32 or f64", err, errlen);
    return 0;
}

int gguf_get_arr(const gguf_ctx_t *ctx, const char *key, enum gguf_vtype *elem_type, uint64_t *n, const void **data,
                 char *err, size_t errlen) {
    int rc;
    const struct gguf_kv *kv = lookup(ctx, key, &rc, err, errlen);
    if (!kv) return rc;
    if (kv->val.type != GGUF_VTYPE_ARR) return type_error(ctx, kv, "arr", err, errlen);
    if (elem_type) *elem_type = kv->val.elem_type;
    if (n) *n = kv->val.n;
    if (data) *data = kv->val.data;
    return 0;
}

const char *gguf_get_arr_str(const gguf_ctx_t *ctx, int64_t key_idx, uint64_t i, size_t *len) {
    if (key_idx < 0 || key_idx >= ctx->n_kv) return NULL;
    const struct gguf_kv *kv = &ctx->kv[key_idx];
    if (kv->val.type != GGUF_VTYPE_ARR || kv->val.elem_type != GGUF_VTYPE_STR || i >= kv->val.n) return NULL;
    const uint8_t *p = (const uint8_t *)kv->val.data + kv->str_index[i];
    if (len) *len = (size_t)rd64(p);
    return (const char *)p + 8;
}

/* ------------------------------------------------------------ values */

/* Decodes the already-validated element at p of type t into v; returns the
 * bytes it takes. Arrays were validated at open, so sizes are trusted. */
static size_t decode_elem(const uint8_t *p, enum gguf_vtype t, struct gguf_value *v) {
    memset(v, 0, sizeof *v);
    v->type = t;
    v->n = 1;
    if (t == GGUF_VTYPE_STR) {
        v->n = rd64(p);
        v->nbytes = (size_t)v->n;
        v->data = p + 8;
        return 8 + v->nbytes;
    }
    if (t != GGUF_VTYPE_ARR) {
        v->data = p;
        v->nbytes = g_vtypes[t].size;
        return v->nbytes;
    }
    v->elem_type = (enum gguf_vtype)rd32(p);
    v->n = rd64(p + 4);
    v->data = p + 12;
    size_t nb;
    if (v->elem_type != GGUF_VTYPE_STR && v->elem_type != GGUF_VTYPE_ARR) {
        nb = (size_t)v->n * g_vtypes[v->elem_type].size;
    } else {
        const uint8_t *q = p + 12;
        struct gguf_value e;
        for (uint64_t i = 0; i < v->n; i++) q += decode_elem(q, v->elem_type, &e);
        nb = (size_t)(q - (p + 12));
    }
    v->nbytes = nb;
    return 12 + nb;
}

int gguf_value_at(const struct gguf_value *arr, uint64_t i, struct gguf_value *out) {
    if (arr->type != GGUF_VTYPE_ARR || i >= arr->n) return GGUF_ERR_ARG;
    const uint8_t *p = arr->data;
    size_t sz = g_vtypes[arr->elem_type].size;
    if (sz) {
        decode_elem(p + (size_t)i * sz, arr->elem_type, out);
    } else if (arr->index) {
        decode_elem(p + arr->index[i], arr->elem_type, out);
    } else {
        struct gguf_value e;
        for (uint64_t k = 0; k < i; k++) p += decode_elem(p, arr->elem_type, &e);
        decode_elem(p, arr->elem_type, out);
    }
    return 0;
}

void gguf_iter_init(struct gguf_iter *it, const struct gguf_value *arr) {
    it->p = arr->data;
    it->i = 0;
    it->n = arr->type == GGUF_VTYPE_ARR ? arr->n : 0;
    it->elem_type = arr->elem_type;
}

int gguf_iter_next(struct gguf_iter *it, struct gguf_value *elem) {
    if (it->i >= it->n) return 0;
    it->p += decode_elem(it->p, it->elem_type, elem);
    it->i++;
    return 1;
}

int gguf_value_int(const struct gguf_value *v, int64_t *out) {
    const uint8_t *p = v->data;
    switch (v->type) {
    case GGUF_VTYPE_U8: case GGUF_VTYPE_BOOL: *out = p[0]; return 0;
    case GGUF_VTYPE_I8: *out = (int8_t)p[0]; return 0;
    case GGUF_VTYPE_U16: { uint16_t x; memcpy(&x, p, 2); *out = x; return 0; }
    case GGUF_VTYPE_I16: { int16_t x; memcpy(&x, p, 2); *out = x; return 0; }
    case GGUF_VTYPE_U32: { uint32_t x; memcpy(&x, p, 4); *out = x; return 0; }
    case GGUF_VTYPE_I32: { int32_t x; memcpy(&x, p, 4); *out = x; return 0; }
    case GGUF_VTYPE_I64: { int64_t x; memcpy(&x, p, 8); *out = x; return 0; }
    case GGUF_VTYPE_U64: {
        uint64_t x = rd64(p);
        if (x > (uint64_t)INT64_MAX) return GGUF_ERR_TYPE;
        *out = (int64_t)x;
        return 0;
    }
    default: return GGUF_ERR_TYPE;
    }
}

int gguf_value_float(const struct gguf_value *v, double *out) {
    if (v->type == GGUF_VTYPE_F32) {
        float f;
        memcpy(&f, v->data, 4);
        *out = f;
        return 0;
    }
    if (v->type == GGUF_VTYPE_F64) {
        memcpy(out, v->data, 8);
        return 0;
    }
    return GGUF_ERR_TYPE;
}

/* ------------------------------------------------------------ writer */

/* A growable byte buffer; oom is sticky so appends can be chained. */
struct buf {
    uint8_t *p;
    size_t n, cap;
    int oom;
};

static void buf_put(struct buf *b, const void *src, size_t n) {
    if (b->oom || n == 0) return;
    if (n > SIZE_MAX - b->n) {
        b->oom = 1;
        return;
    }
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n) cap = cap > SIZE_MAX / 2 ? b->n + n : cap * 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void buf_u32(struct buf *b, uint32_t v) { buf_put(b, &v, 4); }
static void buf_u64(struct buf *b, uint64_t v) { buf_put(b, &v, 8); }
static void buf_str(struct buf *b, const void *s, size_t len) {
    buf_u64(b, len);
    buf_put(b, s, len);
}

struct gguf_warr {
    enum gguf_vtype elem_type;
    uint64_t n;
    int depth;      /* 1 for an array of non-arrays */
    struct buf enc; /* the encoded elements */
    int failed;
};

struct wkv {
    char *key;
    enum gguf_vtype type;
    struct buf val; /* the encoded value (after the type field) */
};

struct wtensor {
    char *name;
    uint32_t type, n_dims;
    int64_t ne[4];
    void *data;
    size_t nbytes;
};

struct gguf_writer {
    struct wkv *kv;
    size_t n_kv, cap_kv;
    struct wtensor *t;
    size_t n_t, cap_t;
    char error[256]; /* first setter failure, "" when none */
};

gguf_writer_t *gguf_writer_create(void) { return calloc(1, sizeof(gguf_writer_t)); }

void gguf_writer_destroy(gguf_writer_t *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val.p);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->kv);
    free(w->t);
    free(w);
}

const char *gguf_writer_error(const gguf_writer_t *w) { return w->error[0] ? w->error : NULL; }

__attribute__((format(printf, 3, 4))) static int wfail(gguf_writer_t *w, int rc, const char *fmt, ...) {
    if (w->error[0]) return rc; /* keep the first */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->error, sizeof w->error, fmt, ap);
    va_end(ap);
    return rc;
}

/* Sets key to an encoded value, replacing an earlier one in place. */
static int wset(gguf_writer_t *w, const char *key, enum gguf_vtype type, const struct buf *val) {
    if (!key) return wfail(w, GGUF_ERR_ARG, "gguf writer: NULL key");
    if (val->oom) return wfail(w, GGUF_ERR_NOMEM, "gguf writer: out of memory encoding key '%s'", key);
    struct buf copy = {0};
    buf_put(&copy, val->p, val->n);
    if (copy.oom) return wfail(w, GGUF_ERR_NOMEM, "gguf writer: out of memory for key '%s'", key);
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].val.p);
            w->kv[i].type = type;
            w->kv[i].val = copy;
            return 0;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        struct wkv *q = realloc(w->kv, cap * sizeof *q);
        if (!q) {
            free(copy.p);
            return wfail(w, GGUF_ERR_NOMEM, "gguf writer: out of memory for key '%s'", key);
        }
        w->kv = q;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(copy.p);
        return wfail(w, GGUF_ERR_NOMEM, "gguf writer: out of memory for key '%s'", key);
    }
    w->kv[w->n_kv++] = (struct wkv){k, type, copy};
    return 0;
}

static int wset_scalar(gguf_writer_t *w, const char *key, enum gguf_vtype t, const void *v) {
    struct buf b = {0};
    buf_put(&b, v, g_vtypes[t].size);
    int rc = wset(w, key, t, &b);
    free(b.p);
    return rc;
}

int gguf_writer_set_u8(gguf_writer_t *w, const char *key, uint8_t v) { return wset_scalar(w, key, GGUF_VTYPE_U8, &v); }
int gguf_writer_set_i8(gguf_writer_t *w, const char *key, int8_t v) { return wset_scalar(w, key, GGUF_VTYPE_I8, &v); }
int gguf_writer_set_u16(gguf_writer_t *w, const char *key, uint16_t v) {
    return wset_scalar(w, key, GGUF_VTYPE_U16, &v);
}
int gguf_writer_set_i16(gguf_writer_t *w, const char *key, int16_t v) {
    return wset_scalar(w, key, GGUF_VTYPE_I16, &v);
}
int gguf_writer_set_u32(gguf_writer_t *w, const char *key, uint32_t v) {
    return wset_scalar(w, key, GGUF_VTYPE_U32, &v);
}
int gguf_writer_set_i32(gguf_writer_t *w, const char *key, int32_t v) {
    return wset_scalar(w, key, GGUF_VTYPE_I32, &v);
}
int gguf_writer_set_f32(gguf_writer_t *w, const char *key, float v) { return wset_scalar(w, key, GGUF_VTYPE_F32, &v); }
int gguf_writer_set_u64(gguf_writer_t *w, const char *key, uint64_t v) {
    return wset_scalar(w, key, GGUF_VTYPE_U64, &v);
}
int gguf_writer_set_i64(gguf_writer_t *w, const char *key, int64_t v) {
    return wset_scalar(w, key, GGUF_VTYPE_I64, &v);
}
int gguf_writer_set_f64(gguf_writer_t *w, const char *key, double v) {
    return wset_scalar(w, key, GGUF_VTYPE_F64, &v);
}
int gguf_writer_set_bool(gguf_writer_t *w, const char *key, int v) {
    uint8_t b = v != 0;
    return wset_scalar(w, key, GGUF_VTYPE_BOOL, &b);
}

int gguf_writer_set_strn(gguf_writer_t *w, const char *key, const char *s, size_t len) {
    if (!s && len) return wfail(w, GGUF_ERR_ARG, "gguf writer: NULL string for key '%s'", key ? key : "(null)");
    struct buf b = {0};
    buf_str(&b, s, len);
    int rc = wset(w, key, GGUF_VTYPE_STR, &b);
    free(b.p);
    return rc;
}

int gguf_writer_set_str(gguf_writer_t *w, const char *key, const char *s) {
    if (!s) return wfail(w, GGUF_ERR_ARG, "gguf writer: NULL string for key '%s'", key ? key : "(null)");
    return gguf_writer_set_strn(w, key, s, strlen(s));
}

int gguf_writer_set_arr(gguf_writer_t *w, const char *key, enum gguf_vtype elem_type, const void *data, uint64_t n) {
    const char *k = key ? key : "(null)";
    if ((unsigned)elem_type >= GGUF_VTYPE_COUNT || g_vtypes[elem_type].size == 0)
        return wfail(w, GGUF_ERR_ARG, "gguf writer: key '%s': set_arr needs a fixed-size element type, not %s", k,
                     gguf_vtype_name(elem_type));
    size_t sz = g_vtypes[elem_type].size;
    if (n > SIZE_MAX / sz || (!data && n))
        return wfail(w, GGUF_ERR_ARG, "gguf writer: key '%s': bad array (%llu elements)", k, (unsigned long long)n);
    if (elem_type == GGUF_VTYPE_BOOL) {
        for (uint64_t i = 0; i < n; i++)
            if (((const uint8_t *)data)[i] > 1)
                return wfail(w, GGUF_ERR_ARG, "gguf writer: key '%s': bool element %llu is not 0 or 1", k,
                             (unsigned long long)i);
    }
    struct buf b = {0};
    buf_u32(&b, elem_type);
    buf_u64(&b, n);
    buf_put(&b, data, (size_t)n * sz);
    int rc = wset(w, key, GGUF_VTYPE_ARR, &b);
    free(b.p);
    return rc;
}

int gguf_writer_set_arr_str(gguf_writer_t *w, const char *key, const char *const *strs, uint64_t n) {
    if (!strs && n) return wfail(w, GGUF_ERR_ARG, "gguf writer: key '%s': NULL string array", key ? key : "(null)");
    struct buf b = {0};
    buf_u32(&b, GGUF_VTYPE_STR);
    buf_u64(&b, n);
    for (uint64_t i = 0; i < n; i++) {
        if (!strs[i]) {
            free(b.p);
            return wfail(w, GGUF_ERR_ARG, "gguf writer: key '%s': string %llu is NULL", key ? key : "(null)",
                         (unsigned long long)i);
        }
        buf_str(&b, strs[i], strlen(strs[i]));
    }
    int rc = wset(w, key, GGUF_VTYPE_ARR, &b);
    free(b.p);
    return rc;
}

gguf_warr_t *gguf_warr_create(enum gguf_vtype elem_type) {
    if ((unsigned)elem_type >= GGUF_VTYPE_COUNT) return NULL;
    gguf_warr_t *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->elem_type = elem_type;
    a->depth = 1;
    return a;
}

void gguf_warr_destroy(gguf_warr_t *a) {
    if (!a) return;
    free(a->enc.p);
    free(a);
}

int gguf_warr_push(gguf_warr_t *a, const void *elem) {
    size_t sz = g_vtypes[a->elem_type].size;
    if (sz == 0 || !elem || (a->elem_type == GGUF_VTYPE_BOOL && *(const uint8_t *)elem > 1)) {
        a->failed = 1;
        return GGUF_ERR_ARG;
    }
    buf_put(&a->enc, elem, sz);
    if (a->enc.oom) a->failed = 1;
    a->n++;
    return a->failed ? GGUF_ERR_NOMEM : 0;
}

int gguf_warr_push_str(gguf_warr_t *a, const char *s, size_t len) {
    if (a->elem_type != GGUF_VTYPE_STR || (!s && len)) {
        a->failed = 1;
        return GGUF_ERR_ARG;
    }
    buf_str(&a->enc, s, len);
    if (a->enc.oom) a->failed = 1;
    a->n++;
    return a->failed ? GGUF_ERR_NOMEM : 0;
}

int gguf_warr_push_arr(gguf_warr_t *a, const gguf_warr_t *sub) {
    if (a->elem_type != GGUF_VTYPE_ARR || !sub || sub->failed || sub->depth + 1 > GGUF_MAX_DEPTH) {
        a->failed = 1;
        return GGUF_ERR_ARG;
    }
    buf_u32(&a->enc, sub->elem_type);
    buf_u64(&a->enc, sub->n);
    buf_put(&a->enc, sub->enc.p, sub->enc.n);
    if (a->enc.oom) a->failed = 1;
    if (sub->depth + 1 > a->depth) a->depth = sub->depth + 1;
    a->n++;
    return a->failed ? GGUF_ERR_NOMEM : 0;
}

int gguf_writer_set_warr(gguf_writer_t *w, const char *key, const gguf_warr_t *a) {
    if (!a || a->failed)
        return wfail(w, GGUF_ERR_ARG, "gguf writer: key '%s': array has a failed push", key ? key : "(null)");
    struct buf b = {0};
    buf_u32(&b, a->elem_type);
    buf_u64(&b, a->n);
    buf_put(&b, a->enc.p, a->enc.n);
    int rc = wset(w, key, GGUF_VTYPE_ARR, &b);
    free(b.p);
    return rc;
}

int gguf_writer_add_tensor(gguf_writer_t *w, const char *name, uint32_t type, uint32_t n_dims, const int64_t *ne,
                           const void *data, size_t nbytes, char *err, size_t errlen) {
    const char *nm = name ? name : "(null)";
    if (!name || !ne || (!data && nbytes)) {
        snprintf(err, errlen, "gguf writer: tensor '%s': NULL argument", nm);
        return GGUF_ERR_ARG;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        if (strcmp(w->t[i].name, name) == 0) {
            snprintf(err, errlen, "gguf writer: tensor '%s' added twice", nm);
            return GGUF_ERR_ARG;
        }
    }
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) {
        snprintf(err, errlen, "gguf writer: tensor '%s': n_dims is %u (expected 1..4)", nm, n_dims);
        return GGUF_ERR_ARG;
    }
    if (!hearth_type_known(type)) {
        snprintf(err, errlen, "gguf writer: tensor '%s': unknown type %u", nm, type);
        return GGUF_ERR_ARG;
    }
    int64_t rows = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 1 || (d > 0 && ne[d] > INT64_MAX / rows)) {
            snprintf(err, errlen, "gguf writer: tensor '%s': bad dimension %u (%lld)", nm, d, (long long)ne[d]);
            return GGUF_ERR_ARG;
        }
        if (d > 0) rows *= ne[d];
    }
    size_t row = hearth_row_size(type, ne[0]);
    if (row == 0) {
        snprintf(err, errlen, "gguf writer: tensor '%s': dimension 0 (%lld) is not a multiple of the %s block size %lld",
                 nm, (long long)ne[0], hearth_type_name(type), (long long)hearth_type_blck(type));
        return GGUF_ERR_ARG;
    }
    if ((uint64_t)rows > SIZE_MAX / row || row * (size_t)rows != nbytes) {
        snprintf(err, errlen, "gguf writer: tensor '%s': %zu bytes given, a %s tensor of this shape takes %llu", nm,
                 nbytes, hearth_type_name(type), (unsigned long long)row * (unsigned long long)rows);
        return GGUF_ERR_ARG;
    }
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 16;
        struct wtensor *q = realloc(w->t, cap * sizeof *q);
        if (!q) goto oom;
        w->t = q;
        w->cap_t = cap;
    }
    struct wtensor t = {0};
    t.name = strdup(name);
    t.data = malloc(nbytes ? nbytes : 1);
    if (!t.name || !t.data) {
        free(t.name);
        free(t.data);
        goto oom;
    }
    memcpy(t.data, data, nbytes);
    t.type = type;
    t.n_dims = n_dims;
    t.nbytes = nbytes;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t.ne[d] = d < (int)n_dims ? ne[d] : 1;
    w->t[w->n_t++] = t;
    return 0;
oom:
    snprintf(err, errlen, "gguf writer: tensor '%s': out of memory for %zu bytes", nm, nbytes);
    return GGUF_ERR_NOMEM;
}

/* Alignment from general.alignment, validated as the reader will. */
static int writer_alignment(const gguf_writer_t *w, uint32_t *align, char *err, size_t errlen) {
    *align = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0) continue;
        uint32_t a = 0;
        if (w->kv[i].type == GGUF_VTYPE_U32) memcpy(&a, w->kv[i].val.p, 4);
        if (w->kv[i].type != GGUF_VTYPE_U32 || a == 0 || (a & (a - 1)) != 0) {
            snprintf(err, errlen, "gguf writer: general.alignment must be a u32 power of two");
            return GGUF_ERR_ARG;
        }
        *align = a;
    }
    return 0;
}

/* Encodes everything before the data section, padded to the alignment, and
 * gives each tensor's offset; *data_bytes is the size of the data section. */
static int encode_head(const gguf_writer_t *w, struct buf *b, uint32_t *align, size_t *data_bytes, char *err,
                       size_t errlen) {
    if (w->error[0]) {
        snprintf(err, errlen, "%s", w->error);
        return GGUF_ERR_ARG;
    }
    int rc = writer_alignment(w, align, err, errlen);
    if (rc) return rc;
    buf_u32(b, GGUF_MAGIC);
    buf_u32(b, GGUF_VERSION);
    buf_u64(b, w->n_t);
    buf_u64(b, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        buf_str(b, w->kv[i].key, strlen(w->kv[i].key));
        buf_u32(b, w->kv[i].type);
        buf_put(b, w->kv[i].val.p, w->kv[i].val.n);
    }
    size_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        buf_str(b, t->name, strlen(t->name));
        buf_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) buf_u64(b, (uint64_t)t->ne[d]);
        buf_u32(b, t->type);
        buf_u64(b, off);
        off += (t->nbytes + *align - 1) / *align * *align;
    }
    static const uint8_t zeros[64];
    while (b->n % *align) buf_put(b, zeros, *align - b->n % *align < 64 ? *align - b->n % *align : 64);
    if (b->oom) {
        snprintf(err, errlen, "gguf writer: out of memory encoding the header");
        return GGUF_ERR_NOMEM;
    }
    *data_bytes = off;
    return 0;
}

static int write_all(int fd, const void *p, size_t n) {
    const uint8_t *q = p;
    while (n > 0) {
        ssize_t k = write(fd, q, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        q += k;
        n -= (size_t)k;
    }
    return 0;
}

int gguf_writer_write_fd(gguf_writer_t *w, int fd, const char *name, char *err, size_t errlen) {
    struct buf head = {0};
    uint32_t align;
    size_t data_bytes;
    int rc = encode_head(w, &head, &align, &data_bytes, err, errlen);
    if (rc == 0 && write_all(fd, head.p, head.n) != 0) {
        snprintf(err, errlen, "%s: write failed: %s", name, strerror(errno));
        rc = GGUF_ERR_IO;
    }
    static const uint8_t zeros[256];
    for (size_t i = 0; rc == 0 && i < w->n_t; i++) {
        size_t pad = (align - w->t[i].nbytes % align) % align;
        if (write_all(fd, w->t[i].data, w->t[i].nbytes) != 0) {
            snprintf(err, errlen, "%s: write failed in tensor '%s': %s", name, w->t[i].name, strerror(errno));
            rc = GGUF_ERR_IO;
        }
        while (rc == 0 && pad > 0) {
            size_t k = pad < sizeof zeros ? pad : sizeof zeros;
            if (write_all(fd, zeros, k) != 0) {
                snprintf(err, errlen, "%s: write failed: %s", name, strerror(errno));
                rc = GGUF_ERR_IO;
            }
            pad -= k;
        }
    }
    free(head.p);
    return rc;
}

int gguf_writer_write(gguf_writer_t *w, const char *path, char *err, size_t errlen) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) {
        snprintf(err, errlen, "%s: out of memory", path);
        return GGUF_ERR_NOMEM;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return GGUF_ERR_IO;
    }
    int rc = gguf_writer_write_fd(w, fd, tmp, err, errlen);
    if (rc == 0 && fsync(fd) != 0) {
        snprintf(err, errlen, "%s: fsync failed: %s", tmp, strerror(errno));
        rc = GGUF_ERR_IO;
    }
    if (close(fd) != 0 && rc == 0) {
        snprintf(err, errlen, "%s: close failed: %s", tmp, strerror(errno));
        rc = GGUF_ERR_IO;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
        rc = GGUF_ERR_IO;
    }
    if (rc != 0) unlink(tmp);
    free(tmp);
    return rc;
}

int gguf_writer_to_mem(gguf_writer_t *w, void **out, size_t *size, char *err, size_t errlen) {
    struct buf b = {0};
    uint32_t align;
    size_t data_bytes;
    int rc = encode_head(w, &b, &align, &data_bytes, err, errlen);
    if (rc) {
        free(b.p);
        return rc;
    }
    static const uint8_t zeros[256];
    for (size_t i = 0; i < w->n_t; i++) {
        buf_put(&b, w->t[i].data, w->t[i].nbytes);
        for (size_t pad = (align - w->t[i].nbytes % align) % align; pad > 0;) {
            size_t k = pad < sizeof zeros ? pad : sizeof zeros;
            buf_put(&b, zeros, k);
            pad -= k;
        }
    }
    if (b.oom) {
        free(b.p);
        snprintf(err, errlen, "gguf writer: out of memory for a %zu-byte file", b.n + data_bytes);
        return GGUF_ERR_NOMEM;
    }
    *out = b.p;
    *size = b.n;
    return 0;
}
