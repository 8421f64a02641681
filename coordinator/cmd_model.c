/* cmd_model: commands that read a GGUF file without running it:
 * `hearth info` (metadata and tensor table) and `hearth tokenize`. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fetch.h"
#include "gguf.h"
#include "tokenizer.h"
#include "types.h"

/* The model path: -m, or the default model (fetched if needed). */
static int model_path(const struct cli_opts *o, char *out, size_t cap, char *err, size_t errlen) {
    if (o->eng.model_path) {
        snprintf(out, cap, "%s", o->eng.model_path);
        return 0;
    }
    return fetch_default_model(out, cap, err, errlen);
}

int cmd_tokenize(int argc, char **argv) {
    struct cli_opts o;
    if (cli_parse(&o, argc, argv, 2, CLI_MODEL | CLI_PROMPT, "tokenize") != 0) return 1;
    char err[8192], path[4096];
    size_t len = 0;
    char *text = cli_prompt_text(&o, &len, err, sizeof err);
    if (!text) return cli_fail(err);
    if (model_path(&o, path, sizeof path, err, sizeof err) != 0) {
        free(text);
        return cli_fail(err);
    }
    gguf_ctx_t *g = gguf_open(path, err, sizeof err);
    if (!g) {
        free(text);
        return cli_fail(err);
    }
    char inner[512];
    struct tokenizer *tok = tokenizer_load(g, inner, sizeof inner);
    if (!tok) {
        snprintf(err, sizeof err, "%s: tokenizer: %s", path, inner);
        free(text);
        gguf_close(g);
        return cli_fail(err);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 0;
    if (tokenizer_encode(tok, text, len, 1, &ids, &n) != 0) {
        rc = cli_fail("out of memory while tokenizing");
    } else {
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    }
    free(ids);
    tokenizer_free(tok);
    gguf_close(g);
    free(text);
    return rc;
}

/* Prints a scalar or string value; strings are escaped and cut at `max` bytes. */
static void print_value(const struct gguf_value *v, size_t max) {
    int64_t iv;
    double fv;
    if (v->type == GGUF_VTYPE_STR) {
        const unsigned char *p = v->data;
        putchar('"');
        for (size_t i = 0; i < v->n && i < max; i++) {
            if (p[i] == '\n') fputs("\\n", stdout);
            else if (p[i] == '"' || p[i] == '\\') printf("\\%c", p[i]);
            else if (p[i] < 0x20) printf("\\x%02x", p[i]);
            else putchar(p[i]);
        }
        fputs(v->n > max ? "\"..." : "\"", stdout);
    } else if (v->type == GGUF_VTYPE_BOOL) {
        gguf_value_int(v, &iv);
        fputs(iv ? "true" : "false", stdout);
    } else if (v->type == GGUF_VTYPE_F32 || v->type == GGUF_VTYPE_F64) {
        gguf_value_float(v, &fv);
        printf("%g", fv);
    } else if (v->type == GGUF_VTYPE_U64 && gguf_value_int(v, &iv) != 0) {
        uint64_t u;
        memcpy(&u, v->data, sizeof u);
        printf("%" PRIu64, u);
    } else if (v->type == GGUF_VTYPE_ARR) {
        struct gguf_iter it;
        struct gguf_value e;
        printf("[%s x %" PRIu64 "] [", gguf_vtype_name(v->elem_type), v->n);
        gguf_iter_init(&it, v);
        for (int i = 0; i < 6 && gguf_iter_next(&it, &e); i++) {
            if (i) fputs(", ", stdout);
            print_value(&e, 40);
        }
        fputs(v->n > 6 ? ", ...]" : "]", stdout);
    } else if (gguf_value_int(v, &iv) == 0) {
        printf("%" PRId64, iv);
    }
}

int cmd_info(int argc, char **argv) {
    struct cli_opts o;
    if (cli_parse(&o, argc, argv, 2, CLI_MODEL, "info") != 0) return 1;
    char err[8192], path[4096];
    if (model_path(&o, path, sizeof path, err, sizeof err) != 0) return cli_fail(err);
    gguf_ctx_t *g = gguf_open(path, err, sizeof err);
    if (!g) return cli_fail(err);
    printf("file: %s\nGGUF version %u, %zu bytes, alignment %u, data at offset %zu\n", path, gguf_version(g),
           gguf_file_size(g), gguf_alignment(g), gguf_data_offset(g));
    printf("\nmetadata (%" PRId64 " keys):\n", gguf_n_kv(g));
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        struct gguf_value v;
        if (gguf_kv_value(g, i, &v) != 0) continue;
        printf("  %-44s %-4s ", gguf_kv_key(g, i), gguf_vtype_name(v.type));
        print_value(&v, 120);
        putchar('\n');
    }
    printf("\ntensors (%" PRId64 "):\n", gguf_n_tensors(g));
    printf("  %4s  %-32s %-6s %-24s %12s %12s\n", "#", "name", "type", "shape", "offset", "bytes");
    size_t total = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor(g, i);
        char shape[64] = "", *p = shape;
        for (uint32_t d = 0; d < t->n_dims; d++)
            p += snprintf(p, sizeof shape - (size_t)(p - shape), d ? ", %" PRId64 : "%" PRId64, t->ne[d]);
        printf("  %4" PRId64 "  %-32s %-6s [%-22s] %12" PRIu64 " %12zu\n", i, t->name, hearth_type_name(t->type),
               shape, t->offset, t->nbytes);
        total += t->nbytes;
    }
    printf("\n%zu bytes of tensor data (%.1f MiB)\n", total, (double)total / (1 << 20));
    gguf_close(g);
    return 0;
}

int cmd_fetch(int argc, char **argv) {
    struct cli_opts o;
    if (cli_parse(&o, argc, argv, 2, 0, "fetch") != 0) return 1;
    char err[8192], path[4096];
    if (fetch_default_model(path, sizeof path, err, sizeof err) != 0) return cli_fail(err);
    printf("%s\n", path);
    return 0;
}
