/* gguf: reads and writes GGUF files (versions 2 and 3), the model file format
 * of llama.cpp and the format of hearth's sidecar files.
 *
 * Layout (little-endian throughout):
 *   header      magic "GGUF", u32 version, u64 n_tensors, u64 n_kv
 *   metadata    n_kv x { string key, u32 value type, value }
 *   tensor info n_tensors x { string name, u32 n_dims, u64 ne[n_dims],
 *                             u32 type, u64 offset }
 *   padding     up to a multiple of general.alignment (u32, default 32)
 *   data        tensor bytes; each offset (from the data start) is aligned
 * A string is a u64 byte count and the bytes, with no NUL. An array value is
 * u32 element type, u64 count, the elements (arrays may hold arrays).
 *
 * Reader: gguf_open() maps the file read-only and validates every count,
 * length, shape, offset and type against the file size before anything is
 * used, so a hostile or truncated file yields an error message naming the
 * path, the field and the file offset, never a crash or a huge allocation.
 * Nothing big is copied: tensor data, string values of arrays and array
 * elements are pointers into the mapping. Only keys, tensor names and the
 * scalar string values are copied (to give NUL-terminated strings).
 * A context is read-only after open, so several threads may read it.
 *
 * Writer: collects metadata and tensors in memory and writes a version 3
 * file atomically (PATH.tmp, fsync, rename), so a failed write leaves no
 * file and no temporary behind. */
#ifndef HEARTH_GGUF_H
#define HEARTH_GGUF_H

#include <stddef.h>
#include <stdint.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define GGUF_VERSION 3u        /* what the writer produces */
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_DEPTH 8 /* arrays nest at most this deep (an array of scalars is depth 1) */

/* Status codes: 0 is success, every failure is negative. */
enum gguf_status {
    GGUF_OK = 0,
    GGUF_ERR_IO = -1,        /* open/read/write/mmap failed */
    GGUF_ERR_FORMAT = -2,    /* the bytes are not a valid GGUF file */
    GGUF_ERR_NOT_FOUND = -3, /* no such key or tensor */
    GGUF_ERR_TYPE = -4,      /* the key holds another type */
    GGUF_ERR_NOMEM = -5,
    GGUF_ERR_ARG = -6 /* a bad argument from the caller */
};

/* Metadata value types; the ids appear in files, never renumber. */
enum gguf_vtype {
    GGUF_VTYPE_U8 = 0,
    GGUF_VTYPE_I8 = 1,
    GGUF_VTYPE_U16 = 2,
    GGUF_VTYPE_I16 = 3,
    GGUF_VTYPE_U32 = 4,
    GGUF_VTYPE_I32 = 5,
    GGUF_VTYPE_F32 = 6,
    GGUF_VTYPE_BOOL = 7, /* one byte, 0 or 1 */
    GGUF_VTYPE_STR = 8,
    GGUF_VTYPE_ARR = 9,
    GGUF_VTYPE_U64 = 10,
    GGUF_VTYPE_I64 = 11,
    GGUF_VTYPE_F64 = 12,
    GGUF_VTYPE_COUNT = 13
};

/* "u32", "str", "arr"...; "unknown" for an id outside the enum. */
const char *gguf_vtype_name(uint32_t t);
/* bytes of one value of a fixed-size type; 0 for STR, ARR and unknown ids. */
size_t gguf_vtype_size(uint32_t t);

/* ---------------------------------------------------------------- reader */

typedef struct gguf_ctx gguf_ctx_t;

struct gguf_tensor {
    const char *name;   /* NUL-terminated, owned by the context */
    uint32_t n_dims;    /* 1..4 */
    int64_t ne[4];      /* elements per dimension; ne[0] varies fastest; unused = 1 */
    uint32_t type;      /* enum hearth_type (types.h) */
    uint64_t offset;    /* bytes from the start of the data section */
    size_t nbytes;      /* bytes of data */
    const void *data;   /* into the mapping; aligned as the file's alignment allows */
};

/* Maps PATH read-only and parses it. NULL on failure with err filled. */
gguf_ctx_t *gguf_open(const char *path, char *err, size_t errlen);
/* Parses a caller-owned buffer in place (no copy); it must outlive the
 * context. Messages name the file "<memory>". */
gguf_ctx_t *gguf_open_mem(const void *data, size_t size, char *err, size_t errlen);
void gguf_close(gguf_ctx_t *ctx); /* NULL is fine */

const char *gguf_path(const gguf_ctx_t *ctx); /* as given, or "<memory>" */
/* 1 when the data is a read-only file mapping (gguf_open), whose pages may
 * be dropped and are re-read on demand; 0 for a caller's buffer. */
int gguf_is_mapped(const gguf_ctx_t *ctx);
uint32_t gguf_version(const gguf_ctx_t *ctx);
size_t gguf_file_size(const gguf_ctx_t *ctx);
size_t gguf_data_offset(const gguf_ctx_t *ctx); /* file offset of the data section */
uint32_t gguf_alignment(const gguf_ctx_t *ctx);
const void *gguf_base(const gguf_ctx_t *ctx); /* first byte of the file in memory */

/* Metadata by index (0 .. n_kv-1, file order). Out-of-range i gives NULL / -1. */
int64_t gguf_n_kv(const gguf_ctx_t *ctx);
const char *gguf_kv_key(const gguf_ctx_t *ctx, int64_t i);
int gguf_kv_type(const gguf_ctx_t *ctx, int64_t i); /* enum gguf_vtype, -1 when out of range */
int64_t gguf_find_key(const gguf_ctx_t *ctx, const char *key); /* -1 when absent; O(1) */

/* Typed getters. Each fails with GGUF_ERR_NOT_FOUND when the key is absent
 * and GGUF_ERR_TYPE when it holds another type, with a message naming the key
 * and both types. */
int gguf_get_u8(const gguf_ctx_t *ctx, const char *key, uint8_t *out, char *err, size_t errlen);
int gguf_get_u32(const gguf_ctx_t *ctx, const char *key, uint32_t *out, char *err, size_t errlen);
int gguf_get_i32(const gguf_ctx_t *ctx, const char *key, int32_t *out, char *err, size_t errlen);
int gguf_get_u64(const gguf_ctx_t *ctx, const char *key, uint64_t *out, char *err, size_t errlen);
int gguf_get_i64(const gguf_ctx_t *ctx, const char *key, int64_t *out, char *err, size_t errlen);
int gguf_get_f32(const gguf_ctx_t *ctx, const char *key, float *out, char *err, size_t errlen);
int gguf_get_f64(const gguf_ctx_t *ctx, const char *key, double *out, char *err, size_t errlen);
int gguf_get_bool(const gguf_ctx_t *ctx, const char *key, int *out, char *err, size_t errlen);
/* *out is NUL-terminated and owned by the context. A string holding a NUL
 * byte is returned cut at it; use gguf_kv_value for the exact bytes. */
int gguf_get_str(const gguf_ctx_t *ctx, const char *key, const char **out, char *err, size_t errlen);
/* Any integer type (u8..i64); a u64 above INT64_MAX is GGUF_ERR_TYPE. */
int gguf_get_int(const gguf_ctx_t *ctx, const char *key, int64_t *out, char *err, size_t errlen);
/* f32 or f64, widened. */
int gguf_get_float(const gguf_ctx_t *ctx, const char *key, double *out, char *err, size_t errlen);

/* An array: its element type and count, and (data may be NULL) a pointer to
 * the first element in the mapping. For fixed-size element types the n
 * elements are packed little-endian values that MAY BE UNALIGNED: memcpy
 * them out, never cast the pointer. For STR or ARR elements data points at
 * the raw encoding; read those with gguf_get_arr_str or gguf_kv_value. */
int gguf_get_arr(const gguf_ctx_t *ctx, const char *key, enum gguf_vtype *elem_type, uint64_t *n, const void **data,
                 char *err, size_t errlen);
/* Element i of the string array at key index key_idx, O(1) (indexed at
 * open). Returns the bytes (NOT NUL-terminated; *len of them), or NULL when
 * key_idx is not a string array or i is out of range. */
const char *gguf_get_arr_str(const gguf_ctx_t *ctx, int64_t key_idx, uint64_t i, size_t *len);

/* Generic access to any value, for tools and tests that walk everything,
 * nested arrays included. A value is a view into the mapping. */
struct gguf_value {
    enum gguf_vtype type;
    enum gguf_vtype elem_type; /* ARR only: type of the elements */
    uint64_t n;                /* ARR: element count; STR: byte count; scalars: 1 */
    const void *data;          /* scalar: its bytes (unaligned); STR: the bytes (no NUL);
                                * ARR: the first element's encoding */
    size_t nbytes;             /* bytes at data: scalar size, string length, or all elements */
    const uint64_t *index;     /* private: offsets of string elements when indexed */
};
int gguf_kv_value(const gguf_ctx_t *ctx, int64_t i, struct gguf_value *out); /* GGUF_ERR_ARG when out of range */
/* Element i of an array: O(1) for fixed-size elements and indexed string
 * arrays, O(i) otherwise (use an iterator to walk those). */
int gguf_value_at(const struct gguf_value *arr, uint64_t i, struct gguf_value *out);
/* Scalars as numbers: integers and bool to int64 (u64 > INT64_MAX fails),
 * f32/f64 to double. GGUF_ERR_TYPE for other types. */
int gguf_value_int(const struct gguf_value *v, int64_t *out);
int gguf_value_float(const struct gguf_value *v, double *out);

/* Walks the elements of an array in order, O(1) per element:
 *   struct gguf_iter it; struct gguf_value e;
 *   gguf_iter_init(&it, &arr);
 *   while (gguf_iter_next(&it, &e)) ... */
struct gguf_iter {
    const uint8_t *p; /* encoding of the next element */
    uint64_t i, n;
    enum gguf_vtype elem_type;
};
void gguf_iter_init(struct gguf_iter *it, const struct gguf_value *arr);
int gguf_iter_next(struct gguf_iter *it, struct gguf_value *elem); /* 1: elem filled; 0: done */

/* Tensors, in file order. */
int64_t gguf_n_tensors(const gguf_ctx_t *ctx);
const struct gguf_tensor *gguf_tensor(const gguf_ctx_t *ctx, int64_t i); /* NULL when out of range */
const struct gguf_tensor *gguf_find_tensor(const gguf_ctx_t *ctx, const char *name); /* NULL when absent; O(1) */

/* ---------------------------------------------------------------- writer */

typedef struct gguf_writer gguf_writer_t;
typedef struct gguf_warr gguf_warr_t; /* a (possibly nested) array being built */

gguf_writer_t *gguf_writer_create(void); /* NULL when out of memory */
void gguf_writer_destroy(gguf_writer_t *w); /* NULL is fine */

/* Setters keep insertion order; setting a key again replaces its value in
 * place. They return 0 or a negative status; the first failure is also kept
 * (gguf_writer_error) and makes gguf_writer_write fail, so a caller may check
 * only the final write. Values are copied. */
int gguf_writer_set_u8(gguf_writer_t *w, const char *key, uint8_t v);
int gguf_writer_set_i8(gguf_writer_t *w, const char *key, int8_t v);
int gguf_writer_set_u16(gguf_writer_t *w, const char *key, uint16_t v);
int gguf_writer_set_i16(gguf_writer_t *w, const char *key, int16_t v);
int gguf_writer_set_u32(gguf_writer_t *w, const char *key, uint32_t v);
int gguf_writer_set_i32(gguf_writer_t *w, const char *key, int32_t v);
int gguf_writer_set_f32(gguf_writer_t *w, const char *key, float v);
int gguf_writer_set_bool(gguf_writer_t *w, const char *key, int v); /* stored as 0 or 1 */
int gguf_writer_set_u64(gguf_writer_t *w, const char *key, uint64_t v);
int gguf_writer_set_i64(gguf_writer_t *w, const char *key, int64_t v);
int gguf_writer_set_f64(gguf_writer_t *w, const char *key, double v);
int gguf_writer_set_str(gguf_writer_t *w, const char *key, const char *s);
int gguf_writer_set_strn(gguf_writer_t *w, const char *key, const char *s, size_t len); /* any bytes */
/* n packed elements of a fixed-size type (not STR/ARR); bool elements must be 0 or 1. */
int gguf_writer_set_arr(gguf_writer_t *w, const char *key, enum gguf_vtype elem_type, const void *data, uint64_t n);
int gguf_writer_set_arr_str(gguf_writer_t *w, const char *key, const char *const *strs, uint64_t n);

/* Nested arrays: build bottom-up, then attach.
 *   gguf_warr_t *row = gguf_warr_create(GGUF_VTYPE_I32); gguf_warr_push(row, &x); ...
 *   gguf_warr_t *m = gguf_warr_create(GGUF_VTYPE_ARR); gguf_warr_push_arr(m, row);
 *   gguf_writer_set_warr(w, "key", m); gguf_warr_destroy(row); gguf_warr_destroy(m);
 * Pushing copies, so a sub-array may be pushed several times or destroyed
 * after. A failed push makes every later use of the array fail. */
gguf_warr_t *gguf_warr_create(enum gguf_vtype elem_type);
void gguf_warr_destroy(gguf_warr_t *a);
int gguf_warr_push(gguf_warr_t *a, const void *elem); /* one fixed-size element */
int gguf_warr_push_str(gguf_warr_t *a, const char *s, size_t len);
int gguf_warr_push_arr(gguf_warr_t *a, const gguf_warr_t *sub); /* nesting deeper than GGUF_MAX_DEPTH fails */
int gguf_writer_set_warr(gguf_writer_t *w, const char *key, const gguf_warr_t *a);

/* Adds a tensor (data copied). Checks the name is new, 1 <= n_dims <= 4,
 * ne[i] >= 1, the type is known, ne[0] is a multiple of its block size and
 * nbytes equals the size of that shape. */
int gguf_writer_add_tensor(gguf_writer_t *w, const char *name, uint32_t type, uint32_t n_dims, const int64_t *ne,
                           const void *data, size_t nbytes, char *err, size_t errlen);

/* The first failure of a setter, or NULL. */
const char *gguf_writer_error(const gguf_writer_t *w);

/* Writes a version 3 file to PATH.tmp, fsyncs it and renames it to PATH; on
 * any failure (full disk, I/O error) the temporary is removed and PATH is
 * untouched. Alignment is general.alignment when set (must be a u32 power of
 * two), else 32. */
int gguf_writer_write(gguf_writer_t *w, const char *path, char *err, size_t errlen);
/* Writes the file to an open descriptor; name is used in messages. */
int gguf_writer_write_fd(gguf_writer_t *w, int fd, const char *name, char *err, size_t errlen);
/* The file as one malloc'd buffer (*buf freed by the caller with free()). */
int gguf_writer_to_mem(gguf_writer_t *w, void **buf, size_t *size, char *err, size_t errlen);

#endif
