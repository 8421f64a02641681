/* test_gguf: the GGUF reader and writer.
 *
 *   test_gguf roundtrip   every value type, nested arrays, tensors, alignment 64
 *   test_gguf model       the real default model (exit 77 = skip when absent)
 *   test_gguf corrupt     truncation at every length, byte flips, huge counts
 *   test_gguf errors      one hand-made bad file per validation rule
 *   test_gguf writer      writer failures leave no file behind
 *   test_gguf gen-corpus DIR   writes the fuzz seed corpus
 *
 * Random data comes from a fixed seed that is printed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "types.h"

static int g_fail;

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                            \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fprintf(stderr, "\n");                                                                                     \
            g_fail++;                                                                                                  \
        }                                                                                                              \
    } while (0)

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { /* xorshift64* */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 2685821657736338717ull;
}
static void seed(uint64_t s) {
    printf("seed %llu\n", (unsigned long long)s);
    g_rng = s ? s : 1;
}
static void fill_random(void *p, size_t n) {
    for (size_t i = 0; i < n; i++) ((uint8_t *)p)[i] = (uint8_t)rnd();
}

static char g_tmpdir[256];

static void make_tmpdir(void) {
    const char *t = getenv("TMPDIR");
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s/hearth-gguf-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(g_tmpdir)) {
        perror("mkdtemp");
        exit(1);
    }
}

static void remove_tmpdir(void) {
    DIR *d = opendir(g_tmpdir);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2]))) continue;
        snprintf(p, sizeof p, "%s/%s", g_tmpdir, e->d_name);
        if (unlink(p) != 0) rmdir(p);
    }
    closedir(d);
    rmdir(g_tmpdir);
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Reads a whole file into a malloc'd buffer. */
static void *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(n > 0 ? (size_t)n : 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return p;
}

static int write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t k = fwrite(p, 1, n, f);
    return fclose(f) == 0 && k == n ? 0 : -1;
}

/* Visits every value, nested arrays included, through both the iterator
 * and gguf_value_at, and checks they agree; returns a checksum. */
static uint64_t walk_value(const struct gguf_value *v, int depth) {
    uint64_t h = (uint64_t)v->type * 31u + v->n;
    if (v->type == GGUF_VTYPE_ARR) {
        CHECK(depth <= GGUF_MAX_DEPTH, "depth %d", depth);
        struct gguf_iter it;
        struct gguf_value e, e2;
        gguf_iter_init(&it, v);
        uint64_t i = 0;
        while (gguf_iter_next(&it, &e)) {
            if (i < 4 || i + 4 > v->n) { /* value_at may be O(i): sample the ends */
                CHECK(gguf_value_at(v, i, &e2) == 0, "value_at %llu", (unsigned long long)i);
                CHECK(e2.type == e.type && e2.n == e.n && e2.data == e.data && e2.nbytes == e.nbytes, "value_at differs");
            }
            h = h * 1099511628211ull + walk_value(&e, depth + 1);
            i++;
        }
        CHECK(i == v->n, "iterated %llu of %llu", (unsigned long long)i, (unsigned long long)v->n);
        CHECK(gguf_value_at(v, v->n, &e2) != 0, "value_at past end");
    } else if (v->type == GGUF_VTYPE_STR) {
        for (size_t i = 0; i < v->nbytes; i++) h = h * 31u + ((const uint8_t *)v->data)[i];
    } else {
        int64_t x;
        double f;
        if (gguf_value_int(v, &x) == 0) h += (uint64_t)x;
        if (gguf_value_float(v, &f) == 0) h += (uint64_t)(f == f);
    }
    return h;
}

static uint64_t walk_all(const gguf_ctx_t *g) {
    uint64_t h = 0;
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        struct gguf_value v;
        CHECK(gguf_kv_value(g, i, &v) == 0, "kv_value %lld", (long long)i);
        CHECK(gguf_find_key(g, gguf_kv_key(g, i)) == i, "find_key '%s'", gguf_kv_key(g, i));
        h += walk_value(&v, 1);
        if (v.type == GGUF_VTYPE_ARR && v.elem_type == GGUF_VTYPE_STR) {
            for (uint64_t k = 0; k < v.n; k++) {
                size_t len;
                const char *s = gguf_get_arr_str(g, i, k, &len);
                CHECK(s != NULL, "arr_str %llu", (unsigned long long)k);
                if (s && len) h += (uint8_t)s[len - 1];
            }
            CHECK(gguf_get_arr_str(g, i, v.n, NULL) == NULL, "arr_str past end");
        }
    }
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor(g, i);
        CHECK(gguf_find_tensor(g, t->name) == t, "find_tensor '%s'", t->name);
        const uint8_t *b = gguf_base(g), *d = t->data;
        CHECK(d >= b + gguf_data_offset(g) && d + t->nbytes <= b + gguf_file_size(g), "tensor '%s' outside file",
              t->name);
        h += d[0] + d[t->nbytes - 1];
    }
    return h;
}

/* ---------------------------------------------------------------- roundtrip */

struct tspec {
    const char *name;
    uint32_t type, n_dims;
    int64_t ne[4];
};

static const struct tspec k_tensors[] = {
    {"a.f32", HEARTH_TYPE_F32, 2, {7, 3, 1, 1}},
    {"b.f16", HEARTH_TYPE_F16, 1, {5, 1, 1, 1}},
    {"c.q4_1", HEARTH_TYPE_Q4_1, 2, {64, 3, 1, 1}},
    {"d.q8_0", HEARTH_TYPE_Q8_0, 3, {32, 2, 2, 1}},
    {"e.q4_0", HEARTH_TYPE_Q4_0, 4, {96, 1, 1, 2}},
    {"f.bf16", HEARTH_TYPE_BF16, 2, {3, 5, 1, 1}},
    {"g.q6_k", HEARTH_TYPE_Q6_K, 1, {256, 1, 1, 1}},
    {"blk.0.ünïcode", HEARTH_TYPE_F32, 1, {1, 1, 1, 1}},
};
#define N_TENSORS (sizeof k_tensors / sizeof k_tensors[0])

static size_t tspec_bytes(const struct tspec *t) {
    return hearth_row_size(t->type, t->ne[0]) * (size_t)(t->ne[1] * t->ne[2] * t->ne[3]);
}

static const char *const k_strs[] = {"", "hello", "h\xc3\xa9llo \xe2\x86\x92 \xe4\xb8\x96\xe7\x95\x8c", "x", ""};

/* Fills a writer with one of everything; tdata[i] gets tensor i's bytes. */
static gguf_writer_t *make_full_writer(uint8_t **tdata, uint32_t alignment) {
    gguf_writer_t *w = gguf_writer_create();
    CHECK(w != NULL, "create");
    int rc = 0;
    rc |= gguf_writer_set_u32(w, "general.alignment", alignment);
    rc |= gguf_writer_set_u8(w, "t.u8", 200);
    rc |= gguf_writer_set_i8(w, "t.i8", -100);
    rc |= gguf_writer_set_u16(w, "t.u16", 60000);
    rc |= gguf_writer_set_i16(w, "t.i16", -30000);
    rc |= gguf_writer_set_u32(w, "t.u32", 4000000000u);
    rc |= gguf_writer_set_i32(w, "t.i32", -2000000000);
    rc |= gguf_writer_set_f32(w, "t.f32", 3.25f);
    rc |= gguf_writer_set_bool(w, "t.true", 1);
    rc |= gguf_writer_set_bool(w, "t.false", 0);
    rc |= gguf_writer_set_u64(w, "t.u64", UINT64_MAX - 5);
    rc |= gguf_writer_set_i64(w, "t.i64", INT64_MIN + 7);
    rc |= gguf_writer_set_f64(w, "t.f64", -1e300);
    rc |= gguf_writer_set_str(w, "t.str", "hello");
    rc |= gguf_writer_set_str(w, "t.empty", "");
    rc |= gguf_writer_set_str(w, "t.utf8", k_strs[2]);
    rc |= gguf_writer_set_strn(w, "t.nul", "a\0b", 3);
    rc |= gguf_writer_set_u32(w, "t.replaced", 1);
    rc |= gguf_writer_set_u32(w, "t.replaced", 2); /* replaced in place: keeps position */

    /* arrays of every fixed-size type, awkward lengths */
    uint8_t raw[8 * 13];
    fill_random(raw, sizeof raw);
    static const enum gguf_vtype fixed[] = {GGUF_VTYPE_U8,  GGUF_VTYPE_I8,  GGUF_VTYPE_U16, GGUF_VTYPE_I16,
                                            GGUF_VTYPE_U32, GGUF_VTYPE_I32, GGUF_VTYPE_F32, GGUF_VTYPE_U64,
                                            GGUF_VTYPE_I64, GGUF_VTYPE_F64};
    char key[64];
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        snprintf(key, sizeof key, "a.%s", gguf_vtype_name(fixed[i]));
        rc |= gguf_writer_set_arr(w, key, fixed[i], raw, 13);
    }
    uint8_t bools[7] = {1, 0, 0, 1, 1, 1, 0};
    rc |= gguf_writer_set_arr(w, "a.bool", GGUF_VTYPE_BOOL, bools, 7);
    rc |= gguf_writer_set_arr(w, "a.empty", GGUF_VTYPE_I32, NULL, 0);
    rc |= gguf_writer_set_arr_str(w, "a.str", k_strs, 5);

    /* nested: [[[0..k) for k in 0..3] x 3 of i32, [strings], [f32 x 2]] */
    gguf_warr_t *top = gguf_warr_create(GGUF_VTYPE_ARR);
    for (int j = 0; j < 3; j++) {
        gguf_warr_t *mid = gguf_warr_create(GGUF_VTYPE_ARR);
        for (int k = 0; k < 3; k++) {
            gguf_warr_t *leaf = gguf_warr_create(GGUF_VTYPE_I32);
            for (int32_t x = 0; x < k; x++) {
                int32_t v = 100 * j + 10 * k + x;
                rc |= gguf_warr_push(leaf, &v);
            }
            rc |= gguf_warr_push_arr(mid, leaf);
            gguf_warr_destroy(leaf);
        }
        rc |= gguf_warr_push_arr(top, mid);
        gguf_warr_destroy(mid);
    }
    gguf_warr_t *s = gguf_warr_create(GGUF_VTYPE_STR);
    rc |= gguf_warr_push_str(s, "n1", 2);
    rc |= gguf_warr_push_str(s, "", 0);
    rc |= gguf_warr_push_arr(top, s);
    gguf_warr_t *f = gguf_warr_create(GGUF_VTYPE_F32);
    float fv[2] = {1.5f, -0.0f};
    rc |= gguf_warr_push(f, &fv[0]);
    rc |= gguf_warr_push(f, &fv[1]);
    rc |= gguf_warr_push_arr(top, f);
    rc |= gguf_writer_set_warr(w, "a.nested", top);
    gguf_warr_destroy(s);
    gguf_warr_destroy(f);
    gguf_warr_destroy(top);
    CHECK(rc == 0, "setters failed: %s", gguf_writer_error(w) ? gguf_writer_error(w) : "?");

    char err[256];
    for (size_t i = 0; i < N_TENSORS; i++) {
        size_t nb = tspec_bytes(&k_tensors[i]);
        tdata[i] = malloc(nb);
        fill_random(tdata[i], nb);
        int trc = gguf_writer_add_tensor(w, k_tensors[i].name, k_tensors[i].type, k_tensors[i].n_dims,
                                         k_tensors[i].ne, tdata[i], nb, err, sizeof err);
        CHECK(trc == 0, "add_tensor %s: %s", k_tensors[i].name, err);
    }
    return w;
}

static void check_full(const gguf_ctx_t *g, uint8_t *const *tdata, uint32_t alignment) {
    char err[256];
    CHECK(gguf_version(g) == 3, "version %u", gguf_version(g));
    CHECK(gguf_alignment(g) == alignment, "alignment %u", gguf_alignment(g));
    CHECK(gguf_data_offset(g) % alignment == 0, "data offset %zu", gguf_data_offset(g));
    CHECK(gguf_n_kv(g) == 32, "n_kv %lld", (long long)gguf_n_kv(g));
    CHECK(strcmp(gguf_kv_key(g, 0), "general.alignment") == 0, "key 0 %s", gguf_kv_key(g, 0));
    CHECK(gguf_find_key(g, "t.replaced") == 17, "replaced key moved to %lld", (long long)gguf_find_key(g, "t.replaced"));
    CHECK(gguf_find_key(g, "nope") == -1 && gguf_kv_key(g, 32) == NULL && gguf_kv_type(g, -1) == -1, "absent");

    uint8_t u8 = 0;
    uint32_t u32 = 0;
    int32_t i32 = 0;
    uint64_t u64 = 0;
    int64_t i64 = 0;
    float f32 = 0;
    double f64 = 0;
    int b = -1;
    const char *str = NULL;
    CHECK(gguf_get_u8(g, "t.u8", &u8, err, sizeof err) == 0 && u8 == 200, "u8 %u", u8);
    CHECK(gguf_get_int(g, "t.i8", &i64, err, sizeof err) == 0 && i64 == -100, "i8 %lld", (long long)i64);
    CHECK(gguf_get_int(g, "t.u16", &i64, err, sizeof err) == 0 && i64 == 60000, "u16 %lld", (long long)i64);
    CHECK(gguf_get_int(g, "t.i16", &i64, err, sizeof err) == 0 && i64 == -30000, "i16 %lld", (long long)i64);
    CHECK(gguf_get_u32(g, "t.u32", &u32, err, sizeof err) == 0 && u32 == 4000000000u, "u32 %u", u32);
    CHECK(gguf_get_int(g, "t.u32", &i64, err, sizeof err) == 0 && i64 == 4000000000ll, "u32 as int");
    CHECK(gguf_get_i32(g, "t.i32", &i32, err, sizeof err) == 0 && i32 == -2000000000, "i32 %d", i32);
    CHECK(gguf_get_f32(g, "t.f32", &f32, err, sizeof err) == 0 && f32 == 3.25f, "f32 %g", f32);
    CHECK(gguf_get_float(g, "t.f32", &f64, err, sizeof err) == 0 && f64 == 3.25, "f32 as float %g", f64);
    CHECK(gguf_get_bool(g, "t.true", &b, err, sizeof err) == 0 && b == 1, "true %d", b);
    CHECK(gguf_get_bool(g, "t.false", &b, err, sizeof err) == 0 && b == 0, "false %d", b);
    CHECK(gguf_get_u64(g, "t.u64", &u64, err, sizeof err) == 0 && u64 == UINT64_MAX - 5, "u64");
    CHECK(gguf_get_i64(g, "t.i64", &i64, err, sizeof err) == 0 && i64 == INT64_MIN + 7, "i64");
    CHECK(gguf_get_f64(g, "t.f64", &f64, err, sizeof err) == 0 && f64 == -1e300, "f64 %g", f64);
    CHECK(gguf_get_str(g, "t.str", &str, err, sizeof err) == 0 && strcmp(str, "hello") == 0, "str");
    CHECK(gguf_get_str(g, "t.empty", &str, err, sizeof err) == 0 && strcmp(str, "") == 0, "empty str");
    CHECK(gguf_get_str(g, "t.utf8", &str, err, sizeof err) == 0 && strcmp(str, k_strs[2]) == 0, "utf8 str");
    CHECK(gguf_get_u32(g, "t.replaced", &u32, err, sizeof err) == 0 && u32 == 2, "replaced %u", u32);
    struct gguf_value v;
    CHECK(gguf_kv_value(g, gguf_find_key(g, "t.nul"), &v) == 0 && v.type == GGUF_VTYPE_STR && v.n == 3 &&
              memcmp(v.data, "a\0b", 3) == 0,
          "string with NUL");

    /* typed getters refuse other types and name the key */
    int rc = gguf_get_u32(g, "t.i32", &u32, err, sizeof err);
    CHECK(rc == GGUF_ERR_TYPE && strstr(err, "'t.i32'") && strstr(err, "i32") && strstr(err, "u32"), "rc %d: %s", rc,
          err);
    rc = gguf_get_str(g, "missing.key", &str, err, sizeof err);
    CHECK(rc == GGUF_ERR_NOT_FOUND && strstr(err, "'missing.key' not found"), "rc %d: %s", rc, err);
    rc = gguf_get_int(g, "t.u64", &i64, err, sizeof err);
    CHECK(rc == GGUF_ERR_TYPE && strstr(err, "does not fit"), "rc %d: %s", rc, err);
    rc = gguf_get_int(g, "t.f32", &i64, err, sizeof err);
    CHECK(rc == GGUF_ERR_TYPE, "int from f32: rc %d", rc);
    rc = gguf_get_int(g, "t.true", &i64, err, sizeof err);
    CHECK(rc == GGUF_ERR_TYPE, "int from bool: rc %d", rc);
    rc = gguf_get_arr(g, "t.u8", NULL, NULL, NULL, err, sizeof err);
    CHECK(rc == GGUF_ERR_TYPE && strstr(err, "arr"), "arr from u8: rc %d: %s", rc, err);

    /* fixed-size arrays: the same bytes as written */
    enum gguf_vtype et;
    uint64_t n;
    const void *data;
    rc = gguf_get_arr(g, "a.u16", &et, &n, &data, err, sizeof err);
    CHECK(rc == 0 && et == GGUF_VTYPE_U16 && n == 13, "a.u16");
    const void *d64;
    rc = gguf_get_arr(g, "a.f64", &et, &n, &d64, err, sizeof err);
    CHECK(rc == 0 && et == GGUF_VTYPE_F64 && n == 13 && memcmp(d64, data, 26) == 0, "a.f64 shares the random prefix");
    rc = gguf_get_arr(g, "a.bool", &et, &n, &data, err, sizeof err);
    CHECK(rc == 0 && et == GGUF_VTYPE_BOOL && n == 7 && memcmp(data, "\1\0\0\1\1\1\0", 7) == 0, "a.bool");
    rc = gguf_get_arr(g, "a.empty", &et, &n, &data, err, sizeof err);
    CHECK(rc == 0 && et == GGUF_VTYPE_I32 && n == 0, "a.empty");

    int64_t si = gguf_find_key(g, "a.str");
    rc = gguf_get_arr(g, "a.str", &et, &n, NULL, err, sizeof err);
    CHECK(rc == 0 && et == GGUF_VTYPE_STR && n == 5, "a.str");
    for (uint64_t i = 0; i < 5; i++) {
        size_t len = 99;
        const char *s = gguf_get_arr_str(g, si, i, &len);
        CHECK(s && len == strlen(k_strs[i]) && memcmp(s, k_strs[i], len) == 0, "a.str[%llu]", (unsigned long long)i);
    }
    CHECK(gguf_get_arr_str(g, gguf_find_key(g, "a.u8"), 0, NULL) == NULL, "arr_str on u8 array");

    /* nested: walk by index */
    CHECK(gguf_kv_value(g, gguf_find_key(g, "a.nested"), &v) == 0, "nested");
    CHECK(v.type == GGUF_VTYPE_ARR && v.elem_type == GGUF_VTYPE_ARR && v.n == 5, "nested top n=%llu",
          (unsigned long long)v.n);
    for (uint64_t j = 0; j < 3; j++) {
        struct gguf_value mid, leaf, x;
        CHECK(gguf_value_at(&v, j, &mid) == 0 && mid.elem_type == GGUF_VTYPE_ARR && mid.n == 3, "mid %llu",
              (unsigned long long)j);
        for (uint64_t k = 0; k < 3; k++) {
            CHECK(gguf_value_at(&mid, k, &leaf) == 0 && leaf.elem_type == GGUF_VTYPE_I32 && leaf.n == k, "leaf");
            for (uint64_t i = 0; i < k; i++) {
                int64_t val = -1;
                CHECK(gguf_value_at(&leaf, i, &x) == 0 && gguf_value_int(&x, &val) == 0 &&
                          val == (int64_t)(100 * j + 10 * k + i),
                      "nested[%llu][%llu][%llu] = %lld", (unsigned long long)j, (unsigned long long)k,
                      (unsigned long long)i, (long long)val);
            }
        }
    }
    struct gguf_value sa, fa, x;
    CHECK(gguf_value_at(&v, 3, &sa) == 0 && sa.elem_type == GGUF_VTYPE_STR && sa.n == 2, "nested strs");
    CHECK(gguf_value_at(&sa, 0, &x) == 0 && x.n == 2 && memcmp(x.data, "n1", 2) == 0, "nested str 0");
    CHECK(gguf_value_at(&sa, 1, &x) == 0 && x.n == 0, "nested str 1");
    CHECK(gguf_value_at(&v, 4, &fa) == 0 && fa.elem_type == GGUF_VTYPE_F32 && fa.n == 2, "nested f32");
    double dv = 0;
    CHECK(gguf_value_at(&fa, 1, &x) == 0 && gguf_value_float(&x, &dv) == 0 && dv == 0.0 && signbit(dv), "-0.0");

    /* tensors */
    CHECK(gguf_n_tensors(g) == (int64_t)N_TENSORS, "n_tensors %lld", (long long)gguf_n_tensors(g));
    for (size_t i = 0; i < N_TENSORS; i++) {
        const struct gguf_tensor *t = gguf_tensor(g, (int64_t)i);
        const struct tspec *s = &k_tensors[i];
        CHECK(t && strcmp(t->name, s->name) == 0 && t->type == s->type && t->n_dims == s->n_dims, "tensor %zu", i);
        if (!t) continue;
        for (int d = 0; d < 4; d++) CHECK(t->ne[d] == s->ne[d], "tensor %s ne[%d]=%lld", s->name, d, (long long)t->ne[d]);
        CHECK(t->nbytes == tspec_bytes(s) && memcmp(t->data, tdata[i], t->nbytes) == 0, "tensor %s bytes", s->name);
        CHECK(((const uint8_t *)t->data - (const uint8_t *)gguf_base(g)) % alignment == 0, "tensor %s aligned", s->name);
        CHECK(gguf_find_tensor(g, s->name) == t, "find %s", s->name);
    }
    CHECK(gguf_find_tensor(g, "nope") == NULL && gguf_tensor(g, (int64_t)N_TENSORS) == NULL, "absent tensor");
    walk_all(g);
}

static int test_roundtrip(void) {
    seed(20241125);
    uint8_t *tdata[N_TENSORS];
    const uint32_t aligns[] = {64, 32, 1};
    for (size_t ai = 0; ai < 3; ai++) {
        uint32_t al = aligns[ai];
        g_rng = 20241125 + al;
        gguf_writer_t *w = make_full_writer(tdata, al);
        char err[512], path[300];
        void *mem = NULL;
        size_t size = 0;
        CHECK(gguf_writer_to_mem(w, &mem, &size, err, sizeof err) == 0, "to_mem: %s", err);
        snprintf(path, sizeof path, "%s/full.gguf", g_tmpdir);
        CHECK(gguf_writer_write(w, path, err, sizeof err) == 0, "write: %s", err);
        gguf_writer_destroy(w);

        size_t fsize = 0;
        void *fbytes = slurp(path, &fsize);
        CHECK(fbytes && fsize == size && memcmp(fbytes, mem, size) == 0, "file and to_mem differ");
        free(fbytes);
        char tmp[310];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        CHECK(!exists(tmp), "tmp file left behind");

        gguf_ctx_t *g = gguf_open_mem(mem, size, err, sizeof err);
        CHECK(g != NULL, "open_mem: %s", err);
        if (g) {
            check_full(g, tdata, al);
            CHECK(strcmp(gguf_path(g), "<memory>") == 0, "path");
            gguf_close(g);
        }
        g = gguf_open(path, err, sizeof err);
        CHECK(g != NULL, "open: %s", err);
        if (g) {
            check_full(g, tdata, al);
            CHECK(strcmp(gguf_path(g), path) == 0, "path");
            gguf_close(g);
        }
        free(mem);
        for (size_t i = 0; i < N_TENSORS; i++) free(tdata[i]);
        printf("roundtrip alignment %u: %zu bytes ok\n", al, size);
    }
    return 0;
}

/* ---------------------------------------------------------------- model */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int test_model(void) {
    const char *path = getenv("HEARTH_TEST_MODEL");
    char def[512];
    if (!path || !*path) {
        const char *home = getenv("HOME");
        snprintf(def, sizeof def, "%s/.cache/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : "/root");
        path = def;
    }
    if (!exists(path)) {
        printf("SKIP: model %s not found (set HEARTH_TEST_MODEL)\n", path);
        return 77;
    }
    char err[512];
    double t0 = now_ms();
    gguf_ctx_t *g = gguf_open(path, err, sizeof err);
    double t1 = now_ms();
    CHECK(g != NULL, "open: %s", err);
    if (!g) return 1;
    printf("opened %s (%zu bytes) in %.2f ms\n", path, gguf_file_size(g), t1 - t0);
    CHECK(gguf_version(g) == 3, "version %u", gguf_version(g));
    CHECK(gguf_n_tensors(g) == 272, "n_tensors %lld", (long long)gguf_n_tensors(g));
    CHECK(gguf_n_kv(g) == 33, "n_kv %lld", (long long)gguf_n_kv(g));
    CHECK(gguf_alignment(g) == 32, "alignment %u", gguf_alignment(g));
    const struct gguf_tensor *te = gguf_find_tensor(g, "token_embd.weight");
    CHECK(te && te->type == HEARTH_TYPE_Q8_0 && te->n_dims == 2 && te->ne[0] == 576 && te->ne[1] == 49152,
          "token_embd");
    CHECK(te && te->nbytes == (size_t)576 / 32 * 34 * 49152, "token_embd bytes");
    const struct gguf_tensor *on = gguf_find_tensor(g, "output_norm.weight");
    CHECK(on && on->type == HEARTH_TYPE_F32 && on->ne[0] == 576 && on->offset == 98360128 - gguf_data_offset(g) &&
              gguf_data_offset(g) == 1785664,
          "output_norm / data offset %zu", gguf_data_offset(g));
    CHECK(gguf_find_tensor(g, "blk.29.ffn_down.weight") && !gguf_find_tensor(g, "blk.30.ffn_down.weight"), "blocks");
    int64_t n_layers = 0;
    CHECK(gguf_get_int(g, "llama.block_count", &n_layers, err, sizeof err) == 0 && n_layers == 30, "block_count");
    const char *s = NULL;
    CHECK(gguf_get_str(g, "general.architecture", &s, err, sizeof err) == 0 && strcmp(s, "llama") == 0, "arch");
    CHECK(gguf_get_str(g, "tokenizer.ggml.pre", &s, err, sizeof err) == 0 && strcmp(s, "smollm") == 0, "pre");
    int64_t tk = gguf_find_key(g, "tokenizer.ggml.tokens"), mk = gguf_find_key(g, "tokenizer.ggml.merges");
    enum gguf_vtype et;
    uint64_t n = 0;
    CHECK(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, NULL, err, sizeof err) == 0 && et == GGUF_VTYPE_STR &&
              n == 49152,
          "tokens n=%llu", (unsigned long long)n);
    CHECK(gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n, NULL, err, sizeof err) == 0 && n == 48900, "merges");
    size_t len = 0;
    const char *t0s = gguf_get_arr_str(g, tk, 0, &len);
    CHECK(t0s && len == 13 && memcmp(t0s, "<|endoftext|>", 13) == 0, "token 0");
    const char *tl = gguf_get_arr_str(g, tk, 49151, &len);
    CHECK(tl && len == 7 && memcmp(tl, "ectable", 7) == 0, "token 49151");
    const char *ml = gguf_get_arr_str(g, mk, 48899, &len);
    CHECK(ml && len == 8 && memcmp(ml, "ect able", 8) == 0, "last merge");
    const void *tt;
    CHECK(gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &tt, err, sizeof err) == 0 && et == GGUF_VTYPE_I32 &&
              n == 49152,
          "token_type");
    int32_t ttv[2];
    memcpy(ttv, tt, sizeof ttv);
    CHECK(ttv[0] == 3 && ttv[1] == 3, "token types %d %d", ttv[0], ttv[1]);
    size_t total = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) total += gguf_tensor(g, i)->nbytes;
    CHECK(total <= gguf_file_size(g) - gguf_data_offset(g), "tensor bytes %zu", total);
    double t2 = now_ms();
    walk_all(g);
    printf("walked all metadata and %lld tensors in %.2f ms\n", (long long)gguf_n_tensors(g), now_ms() - t2);
    gguf_close(g);
    return 0;
}

/* ---------------------------------------------------------------- corrupt */

/* A small valid file with a little of everything. */
static void *make_small(size_t *size) {
    gguf_writer_t *w = gguf_writer_create();
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_u32(w, "llama.block_count", 2);
    gguf_writer_set_bool(w, "b", 1);
    gguf_writer_set_f32(w, "f", 0.5f);
    gguf_writer_set_arr_str(w, "tok", k_strs, 5);
    int32_t iv[3] = {1, -2, 3};
    gguf_writer_set_arr(w, "ints", GGUF_VTYPE_I32, iv, 3);
    gguf_warr_t *a = gguf_warr_create(GGUF_VTYPE_ARR), *l = gguf_warr_create(GGUF_VTYPE_U16);
    uint16_t u = 7;
    gguf_warr_push(l, &u);
    gguf_warr_push_arr(a, l);
    gguf_warr_push_arr(a, l);
    gguf_writer_set_warr(w, "nest", a);
    gguf_warr_destroy(a);
    gguf_warr_destroy(l);
    char err[256];
    uint8_t d[256];
    fill_random(d, sizeof d);
    int64_t ne1[1] = {5}, ne2[2] = {32, 2}, ne3[2] = {3, 2};
    gguf_writer_add_tensor(w, "w.f32", HEARTH_TYPE_F32, 1, ne1, d, 20, err, sizeof err);
    gguf_writer_add_tensor(w, "w.q8", HEARTH_TYPE_Q8_0, 2, ne2, d, 68, err, sizeof err);
    gguf_writer_add_tensor(w, "w.f16", HEARTH_TYPE_F16, 2, ne3, d, 12, err, sizeof err);
    void *mem = NULL;
    int rc = gguf_writer_to_mem(w, &mem, size, err, sizeof err);
    CHECK(rc == 0, "to_mem: %s", err);
    gguf_writer_destroy(w);
    return mem;
}

/* Opens an exact-size copy (so ASan sees any overread); the result must be
 * a context or a message naming the file. Returns 1 when it opened. */
static int try_open(const uint8_t *bytes, size_t n, const char *what) {
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, bytes, n);
    char err[512] = "";
    gguf_ctx_t *g = gguf_open_mem(copy, n, err, sizeof err);
    if (g) {
        walk_all(g);
        gguf_close(g);
    } else {
        CHECK(strncmp(err, "<memory>: ", 10) == 0 && strlen(err) > 12, "%s: bad message '%s'", what, err);
    }
    free(copy);
    return g != NULL;
}

static int test_corrupt(void) {
    seed(777);
    size_t size;
    uint8_t *good = make_small(&size);
    char err[512];
    gguf_ctx_t *g = gguf_open_mem(good, size, err, sizeof err);
    CHECK(g != NULL, "small: %s", err);
    if (!g) return 1;
    size_t data_off = gguf_data_offset(g), last_end = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor(g, i);
        if (data_off + t->offset + t->nbytes > last_end) last_end = data_off + t->offset + t->nbytes;
    }
    gguf_close(g);
    printf("small file: %zu bytes, data at %zu, last tensor ends at %zu\n", size, data_off, last_end);

    /* truncation: every length through the infos, then every 3rd */
    int opened = 0, tried = 0;
    for (size_t n = 0; n < size; n += n <= data_off ? 1 : 3) {
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu", n);
        int ok = try_open(good, n, what);
        CHECK(!ok || n >= last_end, "%s opened", what);
        opened += ok;
        tried++;
    }
    printf("truncation: %d lengths, %d opened\n", tried, opened);

    /* the same through a file, for the path in the message */
    char path[300];
    snprintf(path, sizeof path, "%s/trunc.gguf", g_tmpdir);
    for (size_t n = 0; n < data_off; n += 37) {
        write_file(path, good, n);
        g = gguf_open(path, err, sizeof err);
        CHECK(!g && strncmp(err, path, strlen(path)) == 0 && strstr(err, "file offset"), "file truncated to %zu: %s", n,
              err);
        gguf_close(g);
    }

    /* byte overwrites at every header position with boundary and random values */
    static const uint8_t vals[] = {0x00, 0xff, 0x01, 0x7f, 0x80, 0x09, 0x08, 0x02};
    uint8_t *buf = malloc(size);
    opened = tried = 0;
    for (size_t pos = 0; pos < data_off; pos++) {
        for (size_t k = 0; k <= sizeof vals; k++) {
            memcpy(buf, good, size);
            buf[pos] = k < sizeof vals ? vals[k] : (uint8_t)rnd();
            opened += try_open(buf, size, "byte flip");
            tried++;
        }
    }
    /* 8-byte windows of huge counts at every header position */
    static const uint64_t huge[] = {UINT64_MAX, 1ull << 63, 1ull << 40, 0xffffffffull, 0};
    for (size_t pos = 0; pos + 8 <= data_off; pos++) {
        for (size_t k = 0; k < sizeof huge / sizeof huge[0]; k++) {
            memcpy(buf, good, size);
            memcpy(buf + pos, &huge[k], 8);
            opened += try_open(buf, size, "huge value");
            tried++;
        }
    }
    /* random multi-byte damage anywhere */
    for (int r = 0; r < 3000; r++) {
        memcpy(buf, good, size);
        int nflip = 1 + (int)(rnd() % 4);
        for (int f = 0; f < nflip; f++) buf[rnd() % size] = (uint8_t)rnd();
        opened += try_open(buf, size, "random damage");
        tried++;
    }
    printf("overwrites: %d files, %d still opened\n", tried, opened);
    free(buf);
    free(good);
    return 0;
}

/* ---------------------------------------------------------------- errors */

/* A raw byte builder for hand-made (bad) files. */
struct rb {
    uint8_t p[4096];
    size_t n;
};
static void rb_put(struct rb *b, const void *s, size_t n) {
    if (b->n + n > sizeof b->p) abort();
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void rb_u32(struct rb *b, uint32_t v) { rb_put(b, &v, 4); }
static void rb_u64(struct rb *b, uint64_t v) { rb_put(b, &v, 8); }
static void rb_str(struct rb *b, const char *s) {
    rb_u64(b, strlen(s));
    rb_put(b, s, strlen(s));
}
static void rb_header(struct rb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    b->n = 0;
    rb_put(b, "GGUF", 4);
    rb_u32(b, version);
    rb_u64(b, n_tensors);
    rb_u64(b, n_kv);
}
static void rb_kv_u32(struct rb *b, const char *key, uint32_t v) {
    rb_str(b, key);
    rb_u32(b, GGUF_VTYPE_U32);
    rb_u32(b, v);
}
static void rb_tensor(struct rb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                      uint64_t offset) {
    rb_str(b, name);
    rb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) rb_u64(b, ne[d]);
    rb_u32(b, type);
    rb_u64(b, offset);
}
/* pads to align and appends n data bytes */
static void rb_data(struct rb *b, size_t align, size_t n) {
    static const uint8_t z[4096];
    rb_put(b, z, (align - b->n % align) % align);
    rb_put(b, z, n);
}

/* Opens b; expects failure with a message holding each of the needles. */
static void expect_error(const struct rb *b, const char *name, const char *needle1, const char *needle2) {
    char err[512] = "";
    uint8_t *copy = malloc(b->n ? b->n : 1);
    memcpy(copy, b->p, b->n);
    gguf_ctx_t *g = gguf_open_mem(copy, b->n, err, sizeof err);
    CHECK(g == NULL, "%s: opened", name);
    gguf_close(g);
    CHECK(strncmp(err, "<memory>: ", 10) == 0, "%s: message '%s' lacks the path", name, err);
    CHECK(strstr(err, needle1) != NULL, "%s: message '%s' lacks '%s'", name, err, needle1);
    CHECK(!needle2 || strstr(err, needle2) != NULL, "%s: message '%s' lacks '%s'", name, err, needle2);
    CHECK(strstr(err, "at file offset") != NULL, "%s: message '%s' lacks the offset", name, err);
    printf("  %-22s %s\n", name, err);
    free(copy);
}

static void expect_ok(const struct rb *b, const char *name) {
    char err[512] = "";
    gguf_ctx_t *g = gguf_open_mem(b->p, b->n, err, sizeof err);
    CHECK(g != NULL, "%s: %s", name, err);
    if (g) walk_all(g);
    gguf_close(g);
}

static int test_errors(void) {
    struct rb b;
    uint64_t ne32[1] = {32}, ne8[1] = {8};

    rb_header(&b, 3, 0, 0);
    expect_ok(&b, "empty file");
    memcpy(b.p, "GGUX", 4);
    expect_error(&b, "bad magic", "not a GGUF file", "'GGUX'");
    b.n = 2;
    expect_error(&b, "2-byte file", "too small", NULL);
    rb_header(&b, 1, 0, 0);
    expect_error(&b, "version 1", "version 1 is not supported", "file offset 4 (0x4)");
    rb_header(&b, 99, 0, 0);
    expect_error(&b, "version 99", "unsupported GGUF version 99", NULL);
    rb_header(&b, 0x03000000u, 0, 0);
    expect_error(&b, "big-endian", "big-endian", NULL);
    rb_header(&b, 2, 0, 0);
    expect_ok(&b, "version 2");
    rb_header(&b, 3, 0, 0);
    b.n -= 3;
    expect_error(&b, "truncated header", "header metadata count", "needs 8 bytes");

    rb_header(&b, 3, 0, 1);
    rb_u64(&b, 0xffffffffffull);
    rb_put(&b, "abcdefghijklmnop", 16);
    expect_error(&b, "huge string length", "string length 1099511627775", "key 0");

    rb_header(&b, 3, 0, 1);
    rb_str(&b, "arr");
    rb_u32(&b, GGUF_VTYPE_ARR);
    rb_u32(&b, GGUF_VTYPE_U32);
    rb_u64(&b, 1ull << 60);
    rb_u32(&b, 5);
    expect_error(&b, "huge array count", "array of 1152921504606846976 u32", "cannot fit");

    rb_header(&b, 3, 0, 1);
    rb_str(&b, "arr");
    rb_u32(&b, GGUF_VTYPE_ARR);
    rb_u32(&b, GGUF_VTYPE_STR);
    rb_u64(&b, 3);
    rb_str(&b, "a");
    rb_str(&b, "b");
    rb_put(&b, "1234567", 7);
    expect_error(&b, "array short", "needs 8 bytes", "key 0 ('arr')");

    rb_header(&b, 3, UINT64_MAX / 2, 0);
    expect_error(&b, "huge tensor count", "tensor count 9223372036854775807", "cannot fit");
    rb_header(&b, 3, 0, UINT64_MAX);
    expect_error(&b, "huge kv count", "metadata count", "cannot fit");

    rb_header(&b, 3, 0, 1);
    rb_str(&b, "k");
    rb_u32(&b, 13);
    rb_u32(&b, 0);
    expect_error(&b, "unknown value type", "unknown value type 13", "file offset 33 ");

    rb_header(&b, 3, 0, 1);
    rb_str(&b, "k");
    rb_u32(&b, GGUF_VTYPE_ARR);
    rb_u32(&b, 77);
    rb_u64(&b, 0);
    expect_error(&b, "unknown element type", "unknown array element type 77", NULL);

    rb_header(&b, 3, 0, 1);
    rb_str(&b, "flag");
    rb_u32(&b, GGUF_VTYPE_BOOL);
    rb_put(&b, "\2", 1);
    rb_put(&b, "\0\0\0", 3);
    expect_error(&b, "bad bool", "bool value is 2", "'flag'");
    rb_header(&b, 3, 0, 1);
    rb_str(&b, "flags");
    rb_u32(&b, GGUF_VTYPE_ARR);
    rb_u32(&b, GGUF_VTYPE_BOOL);
    rb_u64(&b, 3);
    rb_put(&b, "\1\0\xff", 3);
    expect_error(&b, "bad bool element", "bool element 2 is 255", NULL);

    rb_header(&b, 3, 0, 2);
    rb_kv_u32(&b, "same", 1);
    rb_kv_u32(&b, "same", 2);
    expect_error(&b, "duplicate key", "duplicate key", "first defined as key 0");

    rb_header(&b, 3, 0, 1);
    rb_u64(&b, 3);
    rb_put(&b, "a\0b", 3);
    rb_u32(&b, GGUF_VTYPE_U8);
    rb_put(&b, "\0", 1);
    expect_error(&b, "NUL in key", "NUL byte", NULL);

    const uint32_t bad_aligns[] = {0, 3, 48};
    for (int i = 0; i < 3; i++) {
        rb_header(&b, 3, 0, 1);
        rb_kv_u32(&b, "general.alignment", bad_aligns[i]);
        char want[64];
        snprintf(want, sizeof want, "'general.alignment' is %u", bad_aligns[i]);
        expect_error(&b, "bad alignment", want, "power of two");
    }
    rb_header(&b, 3, 0, 1);
    rb_str(&b, "general.alignment");
    rb_u32(&b, GGUF_VTYPE_U64);
    rb_u64(&b, 32);
    expect_error(&b, "alignment type", "'general.alignment' has type u64", "expected u32");

    /* nesting: depth 8 is fine, 9 is not */
    for (int depth = 8; depth <= 9; depth++) {
        rb_header(&b, 3, 0, 1);
        rb_str(&b, "deep");
        rb_u32(&b, GGUF_VTYPE_ARR);
        for (int d = 1; d < depth; d++) {
            rb_u32(&b, GGUF_VTYPE_ARR);
            rb_u64(&b, 1);
        }
        rb_u32(&b, GGUF_VTYPE_U8);
        rb_u64(&b, 1);
        rb_put(&b, "\7", 1);
        if (depth == 8)
            expect_ok(&b, "depth 8");
        else
            expect_error(&b, "nesting too deep", "nested deeper than 8", NULL);
    }
    /* the writer refuses to build depth 9 */
    gguf_warr_t *a = gguf_warr_create(GGUF_VTYPE_U8);
    uint8_t one = 1;
    gguf_warr_push(a, &one);
    int rc = 0;
    for (int d = 2; d <= 9 && rc == 0; d++) {
        gguf_warr_t *up = gguf_warr_create(GGUF_VTYPE_ARR);
        rc = gguf_warr_push_arr(up, a);
        gguf_warr_destroy(a);
        a = up;
        CHECK((rc == 0) == (d <= 8), "writer depth %d: rc %d", d, rc);
    }
    gguf_warr_destroy(a);

    /* tensor infos */
    rb_header(&b, 3, 1, 0);
    rb_tensor(&b, "t", 0, NULL, HEARTH_TYPE_F32, 0);
    rb_data(&b, 32, 64);
    expect_error(&b, "n_dims 0", "n_dims is 0", "tensor 0 ('t')");
    uint64_t ne5[5] = {1, 1, 1, 1, 1};
    rb_header(&b, 3, 1, 0);
    rb_tensor(&b, "t", 5, ne5, HEARTH_TYPE_F32, 0);
    rb_data(&b, 32, 64);
    expect_error(&b, "n_dims 5", "n_dims is 5", NULL);
    uint64_t ne0[2] = {4, 0};
    rb_header(&b, 3, 1, 0);
    rb_tensor(&b, "t", 2, ne0, HEARTH_TYPE_F32, 0);
    rb_data(&b, 32, 64);
    expect_error(&b, "zero dim", "dimension 1 is 0", NULL);
    uint64_t nebig[3] = {1ull << 40, 1ull << 30, 1};
    rb_header(&b, 3, 1, 0);
    rb_tensor(&b, "t", 3, nebig, HEARTH_TYPE_F32, 0);
    rb_data(&b, 32, 64);
    expect_error(&b, "dims overflow", "overflows", NULL);
    const uint32_t bad_types[] = {4, 5, 16, 29, 31, 0xffffffffu};
    for (int i = 0; i < 6; i++) {
        rb_header(&b, 3, 1, 0);
        rb_tensor(&b, "t", 1, ne32, bad_types[i], 0);
        rb_data(&b, 32, 64);
        char want[64];
        snprintf(want, sizeof want, "unknown tensor type %u", bad_types[i]);
        expect_error(&b, "unknown type", want, NULL);
    }
    rb_header(&b, 3, 1, 0);
    rb_tensor(&b, "t", 1, ne8, HEARTH_TYPE_Q4_1, 0);
    rb_data(&b, 32, 64);
    expect_error(&b, "dim not block multiple", "dimension 0 is 8, not a multiple of the Q4_1 block size 32", NULL);
    rb_header(&b, 3, 1, 0);
    rb_tensor(&b, "t", 1, ne8, HEARTH_TYPE_F32, 16);
    rb_data(&b, 32, 64);
    expect_error(&b, "unaligned offset", "data offset 16 is not a multiple of the alignment 32", NULL);
    rb_header(&b, 3, 1, 1);
    rb_kv_u32(&b, "general.alignment", 16);
    rb_tensor(&b, "t", 1, ne8, HEARTH_TYPE_F32, 16);
    rb_data(&b, 16, 64);
    expect_ok(&b, "alignment 16");
    rb_header(&b, 3, 1, 0);
    rb_tensor(&b, "t", 1, ne32, HEARTH_TYPE_F32, 0);
    rb_data(&b, 32, 127);
    expect_error(&b, "tensor past end", "data [offset 0, 128 bytes] runs past end of file", "tensor 0 ('t')");
    rb_header(&b, 3, 1, 0);
    rb_tensor(&b, "t", 1, ne8, HEARTH_TYPE_F32, UINT64_MAX - 31);
    rb_data(&b, 32, 64);
    expect_error(&b, "offset wraps", "runs past end of file", NULL);
    rb_header(&b, 3, 3, 0);
    rb_tensor(&b, "a", 1, ne8, HEARTH_TYPE_F32, 0);
    rb_tensor(&b, "b", 1, ne32, HEARTH_TYPE_F32, 64);
    rb_tensor(&b, "c", 1, ne8, HEARTH_TYPE_F32, 160);
    rb_data(&b, 32, 256);
    expect_error(&b, "overlapping tensors", "tensor 2 ('c'): data [offset 160, 32 bytes] overlaps tensor 1 ('b')",
                 NULL);
    rb_header(&b, 3, 2, 0);
    rb_tensor(&b, "a", 1, ne8, HEARTH_TYPE_F32, 0);
    rb_tensor(&b, "b", 1, ne8, HEARTH_TYPE_F32, 32);
    rb_data(&b, 32, 64);
    expect_ok(&b, "adjacent tensors");
    rb_header(&b, 3, 2, 0);
    rb_tensor(&b, "a", 1, ne8, HEARTH_TYPE_F32, 0);
    rb_tensor(&b, "a", 1, ne8, HEARTH_TYPE_F32, 32);
    rb_data(&b, 32, 64);
    expect_error(&b, "duplicate tensor name", "duplicate tensor name", "first is tensor 0");

    /* a file on disk names its path */
    char path[300], err[512];
    snprintf(path, sizeof path, "%s/bad.gguf", g_tmpdir);
    rb_header(&b, 1, 0, 0);
    write_file(path, b.p, b.n);
    gguf_ctx_t *g = gguf_open(path, err, sizeof err);
    CHECK(!g && strncmp(err, path, strlen(path)) == 0 && strstr(err, "version 1"), "file message: %s", err);
    snprintf(path, sizeof path, "%s/absent.gguf", g_tmpdir);
    g = gguf_open(path, err, sizeof err);
    CHECK(!g && strstr(err, path) && strstr(err, "No such file"), "absent: %s", err);
    g = gguf_open(g_tmpdir, err, sizeof err);
    CHECK(!g && strstr(err, "not a regular file"), "dir: %s", err);
    snprintf(path, sizeof path, "%s/empty.gguf", g_tmpdir);
    write_file(path, "", 0);
    g = gguf_open(path, err, sizeof err);
    CHECK(!g && strstr(err, "too small"), "empty: %s", err);
    return 0;
}

/* ---------------------------------------------------------------- writer */

static int test_writer(void) {
    char path[300], tmp[310], err[512];
    uint8_t data[4096] = {0};
    int64_t ne[2] = {64, 16};
    gguf_writer_t *w = gguf_writer_create();
    gguf_writer_set_str(w, "general.name", "x");
    CHECK(gguf_writer_add_tensor(w, "w", HEARTH_TYPE_F32, 2, ne, data, 4096, err, sizeof err) == 0, "add: %s", err);

    /* add_tensor validation */
    int rc = gguf_writer_add_tensor(w, "w", HEARTH_TYPE_F32, 2, ne, data, 4096, err, sizeof err);
    CHECK(rc == GGUF_ERR_ARG && strstr(err, "added twice"), "dup: %s", err);
    rc = gguf_writer_add_tensor(w, "v", HEARTH_TYPE_F32, 2, ne, data, 4095, err, sizeof err);
    CHECK(rc == GGUF_ERR_ARG && strstr(err, "4095 bytes given") && strstr(err, "4096"), "nbytes: %s", err);
    rc = gguf_writer_add_tensor(w, "v", HEARTH_TYPE_F32, 5, ne, data, 4096, err, sizeof err);
    CHECK(rc == GGUF_ERR_ARG && strstr(err, "n_dims is 5"), "n_dims: %s", err);
    int64_t ne_odd[1] = {48};
    rc = gguf_writer_add_tensor(w, "v", HEARTH_TYPE_Q4_1, 1, ne_odd, data, 30, err, sizeof err);
    CHECK(rc == GGUF_ERR_ARG && strstr(err, "block size"), "block: %s", err);
    rc = gguf_writer_add_tensor(w, "v", 4, 1, ne_odd, data, 30, err, sizeof err);
    CHECK(rc == GGUF_ERR_ARG && strstr(err, "unknown type 4"), "type: %s", err);

    /* a path in a directory that does not exist */
    snprintf(path, sizeof path, "%s/no/such/dir/x.gguf", g_tmpdir);
    rc = gguf_writer_write(w, path, err, sizeof err);
    CHECK(rc == GGUF_ERR_IO && strstr(err, "x.gguf.tmp") && strstr(err, "No such file"), "nodir: %s", err);

    /* a full disk: /dev/full fails every write with ENOSPC */
    int fd = open("/dev/full", O_WRONLY);
    if (fd >= 0) {
        rc = gguf_writer_write_fd(w, fd, "/dev/full", err, sizeof err);
        CHECK(rc == GGUF_ERR_IO && strstr(err, "/dev/full") && strstr(err, "No space left"), "dev/full: %s", err);
        close(fd);
    } else {
        printf("no /dev/full: ENOSPC case skipped\n");
    }

    /* an I/O error halfway: a file size limit makes write() fail with EFBIG
     * after 1000 bytes; neither the file nor the temporary may remain */
    snprintf(path, sizeof path, "%s/limited.gguf", g_tmpdir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 1000;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        rc = gguf_writer_write(w, path, err, sizeof err);
        setrlimit(RLIMIT_FSIZE, &old);
        CHECK(rc == GGUF_ERR_IO && strstr(err, "write failed") && strstr(err, "File too large"), "efbig: %s", err);
        CHECK(!exists(path) && !exists(tmp), "file left behind after a failed write");
    }
    signal(SIGXFSZ, prev);

    /* the target is a directory: rename fails, the temporary is removed */
    snprintf(path, sizeof path, "%s/adir", g_tmpdir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    mkdir(path, 0755);
    rc = gguf_writer_write(w, path, err, sizeof err);
    CHECK(rc == GGUF_ERR_IO && strstr(err, "cannot rename"), "rename: %s", err);
    CHECK(!exists(tmp), "tmp left behind after a failed rename");
    rmdir(path);

    /* a failed write leaves an existing file untouched */
    snprintf(path, sizeof path, "%s/keep.gguf", g_tmpdir);
    CHECK(gguf_writer_write(w, path, err, sizeof err) == 0, "write: %s", err);
    size_t before = 0;
    free(slurp(path, &before));
    gguf_writer_set_u32(w, "general.alignment", 3); /* invalid: write must refuse */
    rc = gguf_writer_write(w, path, err, sizeof err);
    CHECK(rc == GGUF_ERR_ARG && strstr(err, "power of two"), "align 3: %s", err);
    size_t after = 0;
    free(slurp(path, &after));
    CHECK(after == before && !exists(tmp), "existing file changed");
    gguf_writer_destroy(w);

    /* setter failures are sticky and reported by write */
    w = gguf_writer_create();
    uint8_t bools[2] = {1, 2};
    CHECK(gguf_writer_set_arr(w, "b", GGUF_VTYPE_BOOL, bools, 2) == GGUF_ERR_ARG, "bool 2 accepted");
    CHECK(gguf_writer_set_arr(w, "s", GGUF_VTYPE_STR, bools, 2) == GGUF_ERR_ARG, "str via set_arr accepted");
    CHECK(gguf_writer_error(w) && strstr(gguf_writer_error(w), "bool element 1"), "sticky: %s",
          gguf_writer_error(w) ? gguf_writer_error(w) : "(none)");
    void *mem = NULL;
    size_t size = 0;
    rc = gguf_writer_to_mem(w, &mem, &size, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "bool element 1") && mem == NULL, "to_mem after failed set: %s", err);
    gguf_writer_destroy(w);

    /* an empty writer makes a valid empty file */
    w = gguf_writer_create();
    CHECK(gguf_writer_to_mem(w, &mem, &size, err, sizeof err) == 0 && size == 32, "empty: %zu", size);
    gguf_ctx_t *g = gguf_open_mem(mem, size, err, sizeof err);
    CHECK(g && gguf_n_kv(g) == 0 && gguf_n_tensors(g) == 0, "empty open: %s", err);
    gguf_close(g);
    free(mem);
    gguf_writer_destroy(w);
    return 0;
}

/* ---------------------------------------------------------------- corpus */

static int gen_corpus(const char *dir) {
    seed(4242);
    char path[512], err[512];
    size_t size;
    void *small = make_small(&size);
    snprintf(path, sizeof path, "%s/small.gguf", dir);
    CHECK(size < 4096 && write_file(path, small, size) == 0, "write %s", path);
    free(small);

    uint8_t *tdata[N_TENSORS];
    gguf_writer_t *w = make_full_writer(tdata, 32);
    void *mem;
    CHECK(gguf_writer_to_mem(w, &mem, &size, err, sizeof err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/full.gguf", dir);
    CHECK(size < 4096 && write_file(path, mem, size) == 0, "write %s (%zu bytes)", path, size);
    free(mem);
    gguf_writer_destroy(w);
    for (size_t i = 0; i < N_TENSORS; i++) free(tdata[i]);

    w = gguf_writer_create();
    gguf_writer_set_u32(w, "general.alignment", 8);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    const char *toks[] = {"a", "b", "ab", "\xc4\xa0"};
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", toks + 2, 1);
    int64_t ne[2] = {2, 4};
    float f[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    gguf_writer_add_tensor(w, "token_embd.weight", HEARTH_TYPE_F32, 2, ne, f, sizeof f, err, sizeof err);
    CHECK(gguf_writer_to_mem(w, &mem, &size, err, sizeof err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/tok.gguf", dir);
    CHECK(write_file(path, mem, size) == 0, "write %s", path);
    free(mem);
    gguf_writer_destroy(w);

    w = gguf_writer_create();
    CHECK(gguf_writer_to_mem(w, &mem, &size, err, sizeof err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/empty.gguf", dir);
    CHECK(write_file(path, mem, size) == 0, "write %s", path);
    free(mem);
    gguf_writer_destroy(w);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s roundtrip|model|corrupt|errors|writer|gen-corpus DIR\n", argv[0]);
        return 2;
    }
    const char *t = argv[1];
    int rc;
    make_tmpdir();
    if (strcmp(t, "roundtrip") == 0) rc = test_roundtrip();
    else if (strcmp(t, "model") == 0) rc = test_model();
    else if (strcmp(t, "corrupt") == 0) rc = test_corrupt();
    else if (strcmp(t, "errors") == 0) rc = test_errors();
    else if (strcmp(t, "writer") == 0) rc = test_writer();
    else if (strcmp(t, "gen-corpus") == 0 && argc == 3) rc = gen_corpus(argv[2]);
    else {
        fprintf(stderr, "unknown test '%s'\n", t);
        rc = 2;
    }
    remove_tmpdir();
    if (rc == 77) return 77;
    if (rc || g_fail) {
        printf("%s: FAILED (%d checks)\n", t, g_fail);
        return 1;
    }
    printf("%s: ok\n", t);
    return 0;
}
