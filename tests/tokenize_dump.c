/* tokenize_dump: the C side of tests/test_tokenizer_hf.py.
 *
 *   tokenize_dump MODEL STRINGS_FILE [PRE]
 *       encodes each string (parse_special on, no BOS) and prints its ids,
 *       space-separated, one line per string; exits 1 if decode(encode(s))
 *       differs from s for any string. PRE overrides the file's
 *       tokenizer.ggml.pre (to test every pre-tokenizer on one vocabulary).
 *   tokenize_dump --chat TEMPLATE_FILE|- MESSAGES_FILE ADD_ASSISTANT(0|1)
 *       prints chat_format()'s output (no newline added); "-" = no template.
 *
 * File format (binary safe, written by Python's json.dumps): one JSON string
 * literal per line; empty lines and lines starting with '#' are skipped.
 * MESSAGES_FILE holds role and content lines alternately. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "gguf.h"
#include "tokenizer.h"
#include "unicode.h"

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int hex4(const char *p, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hexval(p[i]);
        if (d < 0) return -1;
        *v = *v * 16 + (uint32_t)d;
    }
    return 0;
}

/* Parses the JSON string literal in line[0..n) into out (room for n bytes:
 * an escape never decodes longer than itself). Returns the length or -1. */
static long parse_json_string(const char *line, size_t n, char *out)
{
    size_t i = 0, o = 0;
    if (n < 2 || line[0] != '"') return -1;
    for (i = 1; i < n && line[i] != '"'; i++) {
        if (line[i] != '\\') {
            out[o++] = line[i];
            continue;
        }
        if (++i >= n) return -1;
        char c = line[i];
        const char *simple = "\"\"\\\\//b\bf\fn\nr\rt\t";
        const char *hit = NULL;
        for (const char *s = simple; *s; s += 2)
            if (*s == c) hit = s;
        if (hit) {
            out[o++] = hit[1];
            continue;
        }
        if (c != 'u' || i + 4 >= n) return -1;
        uint32_t cp, lo;
        if (hex4(line + i + 1, &cp) != 0) return -1;
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) { /* surrogate pair */
            if (i + 6 >= n || line[i + 1] != '\\' || line[i + 2] != 'u' || hex4(line + i + 3, &lo) != 0 ||
                lo < 0xDC00 || lo > 0xDFFF)
                return -1;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            i += 6;
        }
        size_t l = unicode_encode(cp, out + o);
        if (l == 0) return -1;
        o += l;
    }
    if (i >= n) return -1;
    return (long)o;
}

struct strs {
    char **s;
    size_t *len;
    size_t n;
};

static int read_strings(const char *path, struct strs *v)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tokenize_dump: cannot open %s\n", path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t r;
    memset(v, 0, sizeof *v);
    while ((r = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t n = (size_t)r;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        if (n == 0 || line[0] == '#') continue;
        char *s = malloc(n + 1);
        char **ns = realloc(v->s, (v->n + 1) * sizeof *ns);
        if (ns) v->s = ns;
        size_t *nl = realloc(v->len, (v->n + 1) * sizeof *nl);
        if (nl) v->len = nl;
        if (!s || !ns || !nl) {
            fprintf(stderr, "tokenize_dump: out of memory\n");
            free(s);
            free(line);
            fclose(f);
            return -1;
        }
        long l = parse_json_string(line, n, s);
        if (l < 0) {
            fprintf(stderr, "tokenize_dump: %s:%zu: not a JSON string literal\n", path, lineno);
            free(s);
            free(line);
            fclose(f);
            return -1;
        }
        s[l] = '\0';
        v->s[v->n] = s;
        v->len[v->n++] = (size_t)l;
    }
    free(line);
    fclose(f);
    return 0;
}

static void free_strings(struct strs *v)
{
    for (size_t i = 0; i < v->n; i++) free(v->s[i]);
    free(v->s);
    free(v->len);
}

static int dump_tokens(const char *model, const char *strings, const char *pre)
{
    char err[512];
    struct strs v;
    if (read_strings(strings, &v) != 0) return 2;
    gguf_ctx_t *g = gguf_open(model, err, sizeof err);
    if (!g) {
        fprintf(stderr, "tokenize_dump: %s\n", err);
        free_strings(&v);
        return 2;
    }
    struct tokenizer *tok = tokenizer_load_pre(g, pre, err, sizeof err);
    gguf_close(g);
    if (!tok) {
        fprintf(stderr, "tokenize_dump: %s\n", err);
        free_strings(&v);
        return 2;
    }
    int bad = 0;
    for (size_t i = 0; i < v.n; i++) {
        int32_t *ids;
        size_t n;
        char *back;
        size_t back_len;
        if (tokenizer_encode(tok, v.s[i], v.len[i], 1, &ids, &n) != 0 ||
            tokenizer_decode(tok, ids, n, &back, &back_len) != 0) {
            fprintf(stderr, "tokenize_dump: out of memory\n");
            return 2;
        }
        for (size_t k = 0; k < n; k++) printf(k ? " %d" : "%d", (int)ids[k]);
        printf("\n");
        if (back_len != v.len[i] || memcmp(back, v.s[i], back_len) != 0) {
            fprintf(stderr, "tokenize_dump: string %zu does not survive decode(encode(s)): %zu bytes in, %zu out\n",
                    i, v.len[i], back_len);
            bad = 1;
        }
        free(ids);
        free(back);
    }
    tokenizer_free(tok);
    free_strings(&v);
    return bad;
}

static int dump_chat(const char *template_path, const char *messages, const char *add)
{
    char err[512];
    char *tmpl = NULL;
    if (strcmp(template_path, "-") != 0) {
        FILE *f = fopen(template_path, "rb");
        if (!f) {
            fprintf(stderr, "tokenize_dump: cannot open %s\n", template_path);
            return 2;
        }
        size_t cap = 1 << 16, n = 0, r;
        if (!(tmpl = malloc(cap))) return 2;
        while ((r = fread(tmpl + n, 1, cap - 1 - n, f)) > 0) {
            n += r;
            if (n == cap - 1) {
                char *t = realloc(tmpl, cap *= 2);
                if (!t) return 2;
                tmpl = t;
            }
        }
        tmpl[n] = '\0';
        fclose(f);
    }
    struct strs v;
    if (read_strings(messages, &v) != 0) return 2;
    size_t n_msgs = v.n / 2;
    struct chat_msg *msgs = calloc(n_msgs ? n_msgs : 1, sizeof *msgs);
    if (!msgs) return 2;
    for (size_t i = 0; i < n_msgs; i++) {
        msgs[i].role = v.s[2 * i];
        msgs[i].content = v.s[2 * i + 1];
    }
    char *out;
    int rc = chat_format(tmpl, msgs, n_msgs, atoi(add), &out, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "tokenize_dump: %s\n", err);
        rc = 1;
    } else {
        fwrite(out, 1, strlen(out), stdout);
        free(out);
    }
    free(msgs);
    free_strings(&v);
    free(tmpl);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--chat") == 0) return dump_chat(argv[2], argv[3], argv[4]);
    if (argc == 3 || argc == 4) return dump_tokens(argv[1], argv[2], argc == 4 ? argv[3] : NULL);
    fprintf(stderr, "usage: tokenize_dump MODEL STRINGS_FILE [PRE]\n"
                    "       tokenize_dump --chat TEMPLATE_FILE|- MESSAGES_FILE ADD_ASSISTANT\n");
    return 2;
}
