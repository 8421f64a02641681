/* fuzz_gguf: libFuzzer target for the GGUF reader.
 *
 * Parses the input with gguf_open_mem and, when it opens, touches everything
 * a user of the reader could reach: every key and value (nested arrays
 * walked by iterator and by index), every typed getter on every key, every
 * string of every string array, and the first and last byte of every
 * tensor. ASan/UBSan turn any out-of-bounds read into a crash.
 *
 * Built with -DGGUF_FUZZ_REPLAY (no libFuzzer), main() instead feeds every
 * file of the directories given on the command line through the same
 * function, so the normal build exercises this code on the seed corpus. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

static volatile uint64_t g_sink;

static uint64_t walk(const struct gguf_value *v, int depth) {
    uint64_t h = v->n + (uint64_t)v->type;
    if (v->type == GGUF_VTYPE_ARR) {
        if (depth > GGUF_MAX_DEPTH) __builtin_trap(); /* the reader promised a bound */
        struct gguf_iter it;
        struct gguf_value e, e2;
        gguf_iter_init(&it, v);
        uint64_t i = 0;
        while (gguf_iter_next(&it, &e)) {
            h += walk(&e, depth + 1);
            if (i < 2 && (gguf_value_at(v, i, &e2) != 0 || e2.data != e.data)) __builtin_trap();
            i++;
        }
        if (i != v->n) __builtin_trap();
    } else if (v->type == GGUF_VTYPE_STR) {
        if (v->nbytes) h += ((const uint8_t *)v->data)[0] + ((const uint8_t *)v->data)[v->nbytes - 1];
    } else {
        int64_t x;
        double f;
        if (gguf_value_int(v, &x) == 0) h += (uint64_t)x;
        if (gguf_value_float(v, &f) == 0) h += f == f;
    }
    return h;
}

static void walk_ctx(const gguf_ctx_t *g) {
    uint64_t h = gguf_version(g) + gguf_alignment(g) + gguf_data_offset(g);
    char err[256];
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const char *key = gguf_kv_key(g, i);
        struct gguf_value v;
        if (!key || gguf_kv_value(g, i, &v) != 0 || gguf_find_key(g, key) != i) __builtin_trap();
        h += walk(&v, 1);
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        int64_t i64;
        float f32;
        double f64;
        int b;
        const char *s;
        enum gguf_vtype et;
        uint64_t n;
        const void *data;
        h += (uint64_t)gguf_get_u32(g, key, &u32, err, sizeof err) + (uint64_t)gguf_get_i32(g, key, &i32, err, sizeof err);
        h += (uint64_t)gguf_get_u64(g, key, &u64, err, sizeof err) + (uint64_t)gguf_get_i64(g, key, &i64, err, sizeof err);
        h += (uint64_t)gguf_get_f32(g, key, &f32, err, sizeof err) + (uint64_t)gguf_get_f64(g, key, &f64, err, sizeof err);
        h += (uint64_t)gguf_get_bool(g, key, &b, err, sizeof err) + (uint64_t)gguf_get_int(g, key, &i64, err, sizeof err);
        h += (uint64_t)gguf_get_float(g, key, &f64, err, sizeof err);
        if (gguf_get_str(g, key, &s, err, sizeof err) == 0) h += strlen(s);
        if (gguf_get_arr(g, key, &et, &n, &data, err, sizeof err) == 0 && et == GGUF_VTYPE_STR) {
            for (uint64_t k = 0; k < n; k++) {
                size_t len;
                const char *e = gguf_get_arr_str(g, i, k, &len);
                if (!e) __builtin_trap();
                if (len) h += (uint8_t)e[0] + (uint8_t)e[len - 1];
            }
        }
    }
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor(g, i);
        if (gguf_find_tensor(g, t->name) != t) __builtin_trap();
        const uint8_t *d = t->data;
        h += d[0] + d[t->nbytes - 1] + (uint64_t)t->ne[3];
    }
    g_sink += h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512];
    err[0] = 0;
    gguf_ctx_t *g = gguf_open_mem(data, size, err, sizeof err);
    if (!g) {
        if (strncmp(err, "<memory>: ", 10) != 0) __builtin_trap(); /* every failure explains itself */
        return 0;
    }
    walk_ctx(g);
    gguf_close(g);
    return 0;
}

#ifdef GGUF_FUZZ_REPLAY
#include <dirent.h>

int main(int argc, char **argv) {
    int n_files = 0;
    for (int a = 1; a < argc; a++) {
        DIR *d = opendir(argv[a]);
        if (!d) {
            fprintf(stderr, "fuzz_gguf_replay: cannot open %s\n", argv[a]);
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", argv[a], e->d_name);
            FILE *f = fopen(path, "rb");
            if (!f) continue;
            uint8_t *buf = malloc(1 << 20);
            size_t n = buf ? fread(buf, 1, 1 << 20, f) : 0;
            fclose(f);
            uint8_t *exact = malloc(n ? n : 1); /* exact size, so overreads are caught */
            if (!buf || !exact) return 1;
            memcpy(exact, buf, n);
            LLVMFuzzerTestOneInput(exact, n);
            /* every byte length of each seed, as the fuzzer's first mutations would */
            for (size_t k = 0; k < n; k++) LLVMFuzzerTestOneInput(exact, k);
            free(exact);
            free(buf);
            n_files++;
        }
        closedir(d);
    }
    printf("fuzz_gguf_replay: %d files\n", n_files);
    return n_files > 0 ? 0 : 1;
}
#endif
