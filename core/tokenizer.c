/* tokenizer: see tokenizer.h.
 *
 * Encoding, byte-level BPE:
 *   text -> segments between special tokens -> pre-tokenizer words ->
 *   per word: one symbol per byte (the token of GPT-2's code point for that
 *   byte), then a binary heap of adjacent pairs keyed (merge rank, position)
 *   merges lowest rank, leftmost first, O(w log w) for a w-byte word.
 * Encoding, SentencePiece: spaces -> U+2581, one symbol per UTF-8 character,
 *   heap keyed (score of the merged token, position), highest score first;
 *   symbols that are not tokens become <0xXX> byte tokens.
 *
 * Lookups are open-addressing hash tables: token text -> id, and
 * (left id, right id) -> (rank, result id) for merges. */
#include "tokenizer.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "gguf.h"
#include "log.h"
#include "unicode.h"

#define EOG_MAX 16
#define TOKEN_MAX_BYTES (1u << 20) /* longer is a corrupt vocabulary, not a token */

struct merge_slot {
    uint64_t key; /* (uint64_t)left << 32 | right; MERGE_EMPTY when free */
    int32_t rank;
    int32_t result;
};
#define MERGE_EMPTY UINT64_MAX

struct tokenizer {
    enum tokenizer_model model;
    enum tokenizer_pre pre;
    int32_t n_vocab;
    char **text;       /* [n_vocab] NUL-terminated, into arena */
    uint32_t *len;     /* [n_vocab] bytes of text (a token may hold a NUL) */
    int32_t *type;     /* [n_vocab] enum tokenizer_token_type */
    float *score;      /* [n_vocab] */
    char *arena;
    int32_t *tok_hash; /* [tok_mask + 1] ids, -1 free */
    size_t tok_mask;
    struct merge_slot *merge_hash; /* [merge_mask + 1]; NULL for SPM */
    size_t merge_mask;
    /* BPE: token of the code point GPT-2 shows byte b as; SPM: the <0xXX>
     * token. -1 when the vocabulary lacks it. */
    int32_t byte_id[256];
    int32_t bos, eos, eot, unk;
    int add_bos, add_space_prefix;
    int ignore_merges; /* Llama-3: a word that is a token is taken whole */
    /* special tokens matched in the input: sorted by first byte, then
     * longest first; special_at[b] .. special_at[b + 1] are those for b */
    int32_t *special;
    size_t n_special;
    size_t special_at[257];
    int32_t eog[EOG_MAX];
    size_t n_eog;
};

/* ------------------------------------------------------------ hash tables */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33; /* murmur3 finalizer */
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static size_t table_size(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2; /* load factor <= 1/2 keeps probes short */
    return cap;
}

int32_t tokenizer_find(const struct tokenizer *tok, const char *s, size_t len)
{
    size_t i = (size_t)hash_bytes(s, len) & tok->tok_mask;
    for (;; i = (i + 1) & tok->tok_mask) {
        int32_t id = tok->tok_hash[i];
        if (id < 0) return -1;
        if (tok->len[id] == len && memcmp(tok->text[id], s, len) == 0) return id;
    }
}

static const struct merge_slot *merge_find(const struct tokenizer *tok, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = (size_t)hash_u64(key) & tok->merge_mask;
    for (;; i = (i + 1) & tok->merge_mask) {
        const struct merge_slot *m = &tok->merge_hash[i];
        if (m->key == key) return m;
        if (m->key == MERGE_EMPTY) return NULL;
    }
}

/* --------------------------------------------------------- growable arrays */

struct ids {
    int32_t *v;
    size_t n, cap;
};

static int ids_push(struct ids *a, int32_t id)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

/* Ensures *p holds at least n elements of size sz. */
static int grow(void **p, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < n) c *= 2;
    void *q = realloc(*p, c * sz);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* ------------------------------------------------------------------ create */

static int parse_byte_token(const char *s, size_t n)
{
    /* "<0xXX>" with two hex digits */
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int special_cmp(const void *pa, const void *pb, void *ctx)
{
    const struct tokenizer *tok = ctx;
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    unsigned char fa = (unsigned char)tok->text[a][0], fb = (unsigned char)tok->text[b][0];
    if (fa != fb) return fa < fb ? -1 : 1;
    if (tok->len[a] != tok->len[b]) return tok->len[a] > tok->len[b] ? -1 : 1;
    return a < b ? -1 : a > b;
}

static int add_merges(struct tokenizer *tok, const struct tokenizer_vocab *v, char *err, size_t errlen)
{
    size_t cap = table_size(v->n_merges);
    tok->merge_hash = malloc(cap * sizeof *tok->merge_hash);
    if (!tok->merge_hash) {
        snprintf(err, errlen, "tokenizer: out of memory for %zu merges", v->n_merges);
        return -1;
    }
    for (size_t i = 0; i < cap; i++) tok->merge_hash[i].key = MERGE_EMPTY;
    tok->merge_mask = cap - 1;
    char *buf = NULL;
    size_t buf_cap = 0;
    for (size_t r = 0; r < v->n_merges; r++) {
        const char *m = v->merges[r];
        size_t n = v->merge_lens ? v->merge_lens[r] : strlen(m);
        /* split at the first space after the first byte (as llama.cpp: a
         * left half never starts with the space separator) */
        const char *sp = n > 1 ? memchr(m + 1, ' ', n - 1) : NULL;
        if (!sp) {
            snprintf(err, errlen, "tokenizer: merge %zu (\"%.*s\") has no space between its halves", r,
                     (int)(n > 40 ? 40 : n), m);
            free(buf);
            return -1;
        }
        size_t la = (size_t)(sp - m), lb = n - la - 1;
        int32_t a = tokenizer_find(tok, m, la), b = tokenizer_find(tok, sp + 1, lb);
        if (grow((void **)&buf, &buf_cap, la + lb + 1, 1) != 0) {
            snprintf(err, errlen, "tokenizer: out of memory");
            free(buf);
            return -1;
        }
        memcpy(buf, m, la);
        memcpy(buf + la, sp + 1, lb);
        int32_t c = tokenizer_find(tok, buf, la + lb);
        if (a < 0 || b < 0 || c < 0) continue; /* can never apply */
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        size_t i = (size_t)hash_u64(key) & tok->merge_mask;
        while (tok->merge_hash[i].key != MERGE_EMPTY && tok->merge_hash[i].key != key) i = (i + 1) & tok->merge_mask;
        if (tok->merge_hash[i].key == key) continue; /* a repeated pair keeps its best rank */
        tok->merge_hash[i].key = key;
        tok->merge_hash[i].rank = (int32_t)r;
        tok->merge_hash[i].result = c;
    }
    free(buf);
    return 0;
}

static int is_eog_name(const char *s)
{
    static const char *const names[] = {"<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end|>", "<|eom_id|>",
                                        "<end_of_turn>"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0) return 1;
    return 0;
}

static void eog_add(struct tokenizer *tok, int32_t id)
{
    if (id < 0 || id >= tok->n_vocab || tok->n_eog == EOG_MAX) return;
    for (size_t i = 0; i < tok->n_eog; i++)
        if (tok->eog[i] == id) return;
    tok->eog[tok->n_eog++] = id;
}

struct tokenizer *tokenizer_create(const struct tokenizer_vocab *v, char *err, size_t errlen)
{
    if (v->n_tokens <= 0 || !v->tokens) {
        snprintf(err, errlen, "tokenizer: empty vocabulary");
        return NULL;
    }
    if (v->model != TOKENIZER_MODEL_BPE && v->model != TOKENIZER_MODEL_SPM) {
        snprintf(err, errlen, "tokenizer: unknown model kind %d", (int)v->model);
        return NULL;
    }
    const int32_t ids[4] = {v->bos_id, v->eos_id, v->eot_id, v->unk_id};
    static const char *const id_names[4] = {"bos", "eos", "eot", "unk"};
    for (int i = 0; i < 4; i++)
        if (ids[i] < -1 || ids[i] >= v->n_tokens) {
            snprintf(err, errlen, "tokenizer: %s token id %d is outside the vocabulary of %d", id_names[i],
                     (int)ids[i], (int)v->n_tokens);
            return NULL;
        }
    struct tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) goto oom;
    size_t n = (size_t)v->n_tokens;
    tok->model = v->model;
    tok->pre = v->pre;
    tok->n_vocab = v->n_tokens;
    tok->bos = v->bos_id;
    tok->eos = v->eos_id;
    tok->eot = v->eot_id;
    tok->unk = v->unk_id;
    tok->add_bos = v->add_bos;
    tok->add_space_prefix = v->add_space_prefix;
    tok->ignore_merges = v->model == TOKENIZER_MODEL_BPE && v->pre == TOKENIZER_PRE_LLAMA3;
    tok->text = malloc(n * sizeof *tok->text);
    tok->len = malloc(n * sizeof *tok->len);
    tok->type = malloc(n * sizeof *tok->type);
    tok->score = malloc(n * sizeof *tok->score);
    if (!tok->text || !tok->len || !tok->type || !tok->score) goto oom;
    size_t arena_n = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = v->token_lens ? v->token_lens[i] : (v->tokens[i] ? strlen(v->tokens[i]) : 0);
        if (l > TOKEN_MAX_BYTES || (l && !v->tokens[i])) {
            snprintf(err, errlen, "tokenizer: token %zu is missing or %zu bytes long", i, l);
            tokenizer_free(tok);
            return NULL;
        }
        tok->len[i] = (uint32_t)l;
        arena_n += l + 1;
    }
    tok->arena = malloc(arena_n);
    size_t cap = table_size(n);
    tok->tok_hash = malloc(cap * sizeof *tok->tok_hash);
    if (!tok->arena || !tok->tok_hash) goto oom;
    tok->tok_mask = cap - 1;
    memset(tok->tok_hash, 0xff, cap * sizeof *tok->tok_hash);
    char *p = tok->arena;
    for (size_t i = 0; i < n; i++) {
        if (tok->len[i]) memcpy(p, v->tokens[i], tok->len[i]);
        p[tok->len[i]] = '\0';
        tok->text[i] = p;
        p += tok->len[i] + 1;
        tok->type[i] = v->token_types ? v->token_types[i] : TOKEN_TYPE_NORMAL;
        tok->score[i] = v->scores ? v->scores[i] : 0.0f;
        /* first id wins for a duplicated text */
        size_t h = (size_t)hash_bytes(tok->text[i], tok->len[i]) & tok->tok_mask;
        int dup = 0;
        for (; tok->tok_hash[h] >= 0; h = (h + 1) & tok->tok_mask) {
            int32_t o = tok->tok_hash[h];
            if (tok->len[o] == tok->len[i] && memcmp(tok->text[o], tok->text[i], tok->len[i]) == 0) {
                dup = 1;
                break;
            }
        }
        if (!dup) tok->tok_hash[h] = (int32_t)i;
    }

    for (int b = 0; b < 256; b++) tok->byte_id[b] = -1;
    if (tok->model == TOKENIZER_MODEL_BPE) {
        for (int b = 0; b < 256; b++) {
            char u[4];
            size_t l = unicode_encode(unicode_byte_to_cp((uint8_t)b), u);
            tok->byte_id[b] = tokenizer_find(tok, u, l);
        }
        if (add_merges(tok, v, err, errlen) != 0) {
            tokenizer_free(tok);
            return NULL;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            if (v->token_types && tok->type[i] != TOKEN_TYPE_BYTE) continue;
            int b = parse_byte_token(tok->text[i], tok->len[i]);
            if (b >= 0 && tok->byte_id[b] < 0) tok->byte_id[b] = (int32_t)i;
        }
    }

    for (size_t i = 0; i < n; i++)
        if ((tok->type[i] == TOKEN_TYPE_CONTROL || tok->type[i] == TOKEN_TYPE_USER_DEFINED) && tok->len[i] > 0)
            tok->n_special++;
    tok->special = malloc((tok->n_special ? tok->n_special : 1) * sizeof *tok->special);
    if (!tok->special) goto oom;
    tok->n_special = 0;
    for (size_t i = 0; i < n; i++)
        if ((tok->type[i] == TOKEN_TYPE_CONTROL || tok->type[i] == TOKEN_TYPE_USER_DEFINED) && tok->len[i] > 0)
            tok->special[tok->n_special++] = (int32_t)i;
    qsort_r(tok->special, tok->n_special, sizeof *tok->special, special_cmp, tok);
    for (size_t b = 0, k = 0; b <= 256; b++) {
        while (k < tok->n_special && (unsigned char)tok->text[tok->special[k]][0] < b) k++;
        tok->special_at[b] = k;
    }

    eog_add(tok, tok->eos);
    eog_add(tok, tok->eot);
    for (size_t i = 0; i < n; i++)
        if (tok->type[i] == TOKEN_TYPE_CONTROL && is_eog_name(tok->text[i])) eog_add(tok, (int32_t)i);
    return tok;

oom:
    snprintf(err, errlen, "tokenizer: out of memory for a vocabulary of %d tokens", (int)v->n_tokens);
    tokenizer_free(tok);
    return NULL;
}

void tokenizer_free(struct tokenizer *tok)
{
    if (!tok) return;
    free(tok->text);
    free(tok->len);
    free(tok->type);
    free(tok->score);
    free(tok->arena);
    free(tok->tok_hash);
    free(tok->merge_hash);
    free(tok->special);
    free(tok);
}

/* ---------------------------------------------------------------- queries */

int32_t tokenizer_n_vocab(const struct tokenizer *tok) { return tok->n_vocab; }
int32_t tokenizer_bos(const struct tokenizer *tok) { return tok->bos; }
int32_t tokenizer_eos(const struct tokenizer *tok) { return tok->eos; }
int tokenizer_add_bos(const struct tokenizer *tok) { return tok->add_bos; }
enum tokenizer_model tokenizer_model_kind(const struct tokenizer *tok) { return tok->model; }
enum tokenizer_pre tokenizer_pre_kind(const struct tokenizer *tok) { return tok->pre; }

int tokenizer_is_eog(const struct tokenizer *tok, int32_t id)
{
    for (size_t i = 0; i < tok->n_eog; i++)
        if (tok->eog[i] == id) return 1;
    return 0;
}

const char *tokenizer_token_text(const struct tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_vocab ? tok->text[id] : "";
}

int tokenizer_token_type(const struct tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_vocab ? tok->type[id] : 0;
}

/* ------------------------------------------------------------- encoding */

/* One decoded code point of the segment being pre-tokenized. */
struct cpt {
    uint32_t cp;
    uint32_t off; /* byte offset in the segment */
    uint8_t cls;  /* CP_* bits */
};
enum { CP_LETTER = 1, CP_NUMBER = 2, CP_SPACE = 4 };

/* Scratch buffers of one tokenizer_encode call (reused across words). */
struct enc {
    const struct tokenizer *tok;
    struct ids out;
    struct cpt *cp;
    size_t cp_cap;
    struct sym { int32_t id, prev, next; uint32_t off, len; } *sym;
    size_t sym_cap;
    struct pair { float score; int32_t rank, left, right, lid, rid, result; uint32_t size; } *heap;
    size_t heap_cap, heap_n;
    char *buf;
    size_t buf_cap;
};

/* ---- pre-tokenizers: cut cp[b..e) into words, calling word() on each */

static int bpe_word(struct enc *s, const char *text, size_t n);

static int is_other(const struct cpt *c) { return !(c->cls & (CP_LETTER | CP_NUMBER | CP_SPACE)); }

/* Emits cp[a..z) of segment `text` as a word. */
static int emit(struct enc *s, const char *text, size_t seg_len, size_t a, size_t z, size_t n_cp)
{
    size_t from = s->cp[a].off, to = z < n_cp ? s->cp[z].off : seg_len;
    return bpe_word(s, text + from, to - from);
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * over cp[b..e); the end e acts as the end of the text (lookahead stops). */
static int split_gpt2(struct enc *s, const char *text, size_t seg_len, size_t n_cp, size_t b, size_t e)
{
    const struct cpt *c = s->cp;
    size_t pos = b;
    while (pos < e) {
        size_t start = pos;
        uint32_t ch = c[pos].cp;
        int sp_next = ch == ' ' && pos + 1 < e; /* a ' ?' prefix is possible */
        if (ch == '\'' && pos + 1 < e) {
            uint32_t c1 = c[pos + 1].cp, c2 = pos + 2 < e ? c[pos + 2].cp : 0;
            if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
                pos += 2;
            } else if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
                pos += 3;
            }
            if (pos != start) goto word;
        }
        if ((c[pos].cls & CP_LETTER) || (sp_next && (c[pos + 1].cls & CP_LETTER))) {
            pos += ch == ' ';
            while (pos < e && (c[pos].cls & CP_LETTER)) pos++;
            goto word;
        }
        if ((c[pos].cls & CP_NUMBER) || (sp_next && (c[pos + 1].cls & CP_NUMBER))) {
            pos += ch == ' ';
            while (pos < e && (c[pos].cls & CP_NUMBER)) pos++;
            goto word;
        }
        if (is_other(&c[pos]) || (sp_next && is_other(&c[pos + 1]))) {
            pos += ch == ' ';
            while (pos < e && is_other(&c[pos])) pos++;
            goto word;
        }
        {
            size_t k = 0;
            while (pos + k < e && (c[pos + k].cls & CP_SPACE)) k++;
            /* \s+(?!\S): leave the last space to prefix the next word */
            pos += k > 1 && pos + k < e ? k - 1 : k;
        }
    word:
        if (emit(s, text, seg_len, start, pos, n_cp) != 0) return -1;
    }
    return 0;
}

/* Llama-3 (max_digits 3) and Qwen2 (max_digits 1):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static int split_llama3(struct enc *s, const char *text, size_t seg_len, size_t n_cp, size_t max_digits)
{
    const struct cpt *c = s->cp;
    size_t pos = 0, e = n_cp;
    while (pos < e) {
        size_t start = pos;
        uint32_t ch = c[pos].cp;
        if (ch == '\'' && pos + 1 < e) {
            uint32_t c1 = unicode_fold_ascii(c[pos + 1].cp), c2 = pos + 2 < e ? unicode_fold_ascii(c[pos + 2].cp) : 0;
            if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
                pos += 2;
            } else if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
                pos += 3;
            }
            if (pos != start) goto word;
        }
        if (!(ch == '\r' || ch == '\n' || (c[pos].cls & CP_NUMBER)) &&
            ((c[pos].cls & CP_LETTER) || (pos + 1 < e && (c[pos + 1].cls & CP_LETTER)))) {
            pos++; /* the optional prefix, or the first letter */
            while (pos < e && (c[pos].cls & CP_LETTER)) pos++;
            goto word;
        }
        if (c[pos].cls & CP_NUMBER) {
            while (pos < e && (c[pos].cls & CP_NUMBER) && pos - start < max_digits) pos++;
            goto word;
        }
        if (is_other(&c[pos]) || (ch == ' ' && pos + 1 < e && is_other(&c[pos + 1]))) {
            pos += ch == ' ';
            while (pos < e && is_other(&c[pos])) pos++;
            while (pos < e && (c[pos].cp == '\r' || c[pos].cp == '\n')) pos++;
            goto word;
        }
        {
            size_t k = 0, last_nl = 0;
            for (; pos + k < e && (c[pos + k].cls & CP_SPACE); k++)
                if (c[pos + k].cp == '\r' || c[pos + k].cp == '\n') last_nl = pos + k + 1;
            if (last_nl) pos = last_nl; /* \s*[\r\n]+ backs off to the last newline */
            else pos += k > 1 && pos + k < e ? k - 1 : k;
        }
    word:
        if (emit(s, text, seg_len, start, pos, n_cp) != 0) return -1;
    }
    return 0;
}

static int pretokenize(struct enc *s, const char *text, size_t n)
{
    if (n > UINT32_MAX) return -1; /* offsets below are 32-bit */
    /* decode once: code points, offsets and classes */
    if (grow((void **)&s->cp, &s->cp_cap, n + 1, sizeof *s->cp) != 0) return -1;
    size_t n_cp = 0;
    for (size_t i = 0; i < n;) {
        size_t l;
        uint32_t cp = unicode_decode((const unsigned char *)text + i, n - i, &l);
        uint8_t cls = 0;
        if (cp != UNICODE_INVALID) {
            enum unicode_class uc = unicode_class(cp);
            cls = (uint8_t)((uc == UNICODE_LETTER ? CP_LETTER : 0) | (uc == UNICODE_NUMBER ? CP_NUMBER : 0) |
                            (unicode_is_space(cp) ? CP_SPACE : 0));
        }
        s->cp[n_cp].cp = cp;
        s->cp[n_cp].off = (uint32_t)i;
        s->cp[n_cp].cls = cls;
        n_cp++;
        i += l;
    }
    switch (s->tok->pre) {
    case TOKENIZER_PRE_LLAMA3: return split_llama3(s, text, n, n_cp, 3);
    case TOKENIZER_PRE_QWEN2: return split_llama3(s, text, n, n_cp, 1);
    case TOKENIZER_PRE_SMOLLM: {
        /* HF Digits(individual_digits): each \p{N} alone; the GPT-2 regex then
         * runs on each stretch between them, which ends its lookahead there */
        size_t b = 0;
        for (size_t i = 0; i <= n_cp; i++) {
            if (i < n_cp && !(s->cp[i].cls & CP_NUMBER)) continue;
            if (i > b && split_gpt2(s, text, n, n_cp, b, i) != 0) return -1;
            if (i < n_cp && emit(s, text, n, i, i + 1, n_cp) != 0) return -1;
            b = i + 1;
        }
        return 0;
    }
    default: return split_gpt2(s, text, n, n_cp, 0, n_cp);
    }
}

/* ---- priority queue of candidate merges */

/* a goes before b: BPE lowest rank, SPM highest score; then leftmost */
static int pair_before(const struct tokenizer *tok, const struct pair *a, const struct pair *b)
{
    if (tok->model == TOKENIZER_MODEL_BPE) {
        if (a->rank != b->rank) return a->rank < b->rank;
    } else if (a->score != b->score) {
        return a->score > b->score;
    }
    return a->left < b->left;
}

static int heap_push(struct enc *s, const struct pair *p)
{
    if (grow((void **)&s->heap, &s->heap_cap, s->heap_n + 1, sizeof *s->heap) != 0) return -1;
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(s->tok, p, &s->heap[up])) break;
        s->heap[i] = s->heap[up];
        i = up;
    }
    s->heap[i] = *p;
    return 0;
}

static struct pair heap_pop(struct enc *s)
{
    struct pair top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, best = l;
        if (l >= n) break;
        if (l + 1 < n && pair_before(s->tok, &s->heap[l + 1], &s->heap[l])) best = l + 1;
        if (!pair_before(s->tok, &s->heap[best], &last)) break;
        s->heap[i] = s->heap[best];
        i = best;
    }
    if (n) s->heap[i] = last;
    return top;
}

/* ---- byte-level BPE of one word */

static int bpe_try_pair(struct enc *s, int32_t l, int32_t r)
{
    const struct merge_slot *m = merge_find(s->tok, s->sym[l].id, s->sym[r].id);
    if (!m) return 0;
    struct pair p = {0.0f, m->rank, l, r, s->sym[l].id, s->sym[r].id, m->result, 0};
    return heap_push(s, &p);
}

static int bpe_word(struct enc *s, const char *text, size_t n)
{
    const struct tokenizer *tok = s->tok;
    if (n == 0) return 0;
    if (tok->ignore_merges) {
        if (grow((void **)&s->buf, &s->buf_cap, 2 * n, 1) != 0) return -1;
        size_t l = 0;
        for (size_t i = 0; i < n; i++) l += unicode_encode(unicode_byte_to_cp((uint8_t)text[i]), s->buf + l);
        int32_t id = tokenizer_find(tok, s->buf, l);
        if (id >= 0) return ids_push(&s->out, id);
    }
    if (grow((void **)&s->sym, &s->sym_cap, n, sizeof *s->sym) != 0) return -1;
    int32_t m = 0; /* symbols: one per byte that has a token */
    for (size_t i = 0; i < n; i++) {
        int32_t id = tok->byte_id[(uint8_t)text[i]];
        if (id < 0) continue; /* no token for this byte: dropped, as HF's BPE without unk */
        s->sym[m] = (struct sym){id, m - 1, m + 1, 0, 0};
        m++;
    }
    if (m == 0) return 0;
    s->sym[m - 1].next = -1;
    s->heap_n = 0;
    for (int32_t i = 0; i + 1 < m; i++)
        if (bpe_try_pair(s, i, i + 1) != 0) return -1;
    while (s->heap_n) {
        struct pair p = heap_pop(s);
        struct sym *L = &s->sym[p.left], *R = &s->sym[p.right];
        /* stale: one side has merged since this pair was queued */
        if (L->id != p.lid || R->id != p.rid || L->next != p.right) continue;
        L->id = p.result;
        L->next = R->next;
        if (R->next >= 0) s->sym[R->next].prev = p.left;
        R->id = -1;
        if (L->prev >= 0 && bpe_try_pair(s, L->prev, p.left) != 0) return -1;
        if (L->next >= 0 && bpe_try_pair(s, p.left, L->next) != 0) return -1;
    }
    for (int32_t i = 0; i >= 0; i = s->sym[i].next)
        if (ids_push(&s->out, s->sym[i].id) != 0) return -1;
    return 0;
}

/* ---- SentencePiece */

static int spm_try_pair(struct enc *s, int32_t l, int32_t r)
{
    uint32_t size = s->sym[l].len + s->sym[r].len;
    int32_t id = tokenizer_find(s->tok, s->buf + s->sym[l].off, size);
    if (id < 0) return 0;
    struct pair p = {s->tok->score[id], 0, l, r, 0, 0, id, size};
    return heap_push(s, &p);
}

static int spm_segment(struct enc *s, const char *text, size_t n, int space_prefix)
{
    const struct tokenizer *tok = s->tok;
    /* escaped copy: optional leading space, ' ' -> U+2581 (3 bytes) */
    if (grow((void **)&s->buf, &s->buf_cap, 3 * (n + 1), 1) != 0) return -1;
    size_t bl = 0;
    for (size_t i = 0; i < n + (size_t)space_prefix; i++) {
        char ch = space_prefix ? (i == 0 ? ' ' : text[i - 1]) : text[i];
        if (ch == ' ') {
            memcpy(s->buf + bl, "\xe2\x96\x81", 3);
            bl += 3;
        } else {
            s->buf[bl++] = ch;
        }
    }
    if (bl == 0) return 0;
    if (grow((void **)&s->sym, &s->sym_cap, bl, sizeof *s->sym) != 0) return -1;
    int32_t m = 0;
    for (size_t i = 0; i < bl;) {
        size_t l;
        unicode_decode((const unsigned char *)s->buf + i, bl - i, &l);
        s->sym[m] = (struct sym){0, m - 1, m + 1, (uint32_t)i, (uint32_t)l};
        m++;
        i += l;
    }
    s->sym[m - 1].next = -1;
    s->heap_n = 0;
    for (int32_t i = 0; i + 1 < m; i++)
        if (spm_try_pair(s, i, i + 1) != 0) return -1;
    while (s->heap_n) {
        struct pair p = heap_pop(s);
        struct sym *L = &s->sym[p.left], *R = &s->sym[p.right];
        if (L->len == 0 || R->len == 0 || L->next != p.right || L->len + R->len != p.size) continue;
        L->len += R->len;
        L->next = R->next;
        if (R->next >= 0) s->sym[R->next].prev = p.left;
        R->len = 0;
        if (L->prev >= 0 && spm_try_pair(s, L->prev, p.left) != 0) return -1;
        if (L->next >= 0 && spm_try_pair(s, p.left, L->next) != 0) return -1;
    }
    for (int32_t i = 0; i >= 0; i = s->sym[i].next) {
        const struct sym *y = &s->sym[i];
        int32_t id = tokenizer_find(tok, s->buf + y->off, y->len);
        if (id >= 0) {
            if (ids_push(&s->out, id) != 0) return -1;
            continue;
        }
        for (uint32_t k = 0; k < y->len; k++) { /* byte fallback */
            int32_t b = tok->byte_id[(uint8_t)s->buf[y->off + k]];
            if (b < 0) b = tok->unk;
            if (b >= 0 && ids_push(&s->out, b) != 0) return -1;
        }
    }
    return 0;
}

/* ---- driver */

static int encode_text(struct enc *s, const char *text, size_t n, int *prev_special)
{
    int r;
    if (s->tok->model == TOKENIZER_MODEL_SPM) {
        /* llama.cpp: a space is prefixed at the start and after every special token */
        r = spm_segment(s, text, n, s->tok->add_space_prefix && *prev_special);
    } else {
        r = n ? pretokenize(s, text, n) : 0;
    }
    *prev_special = 0;
    return r;
}

/* Id of the special token starting at text[0..n), longest first; -1 if none. */
static int32_t match_special(const struct tokenizer *tok, const char *text, size_t n, int parse_special)
{
    unsigned char b = (unsigned char)text[0];
    for (size_t k = tok->special_at[b]; k < tok->special_at[b + 1]; k++) {
        int32_t id = tok->special[k];
        if (!parse_special && tok->type[id] == TOKEN_TYPE_CONTROL) continue;
        if (tok->len[id] <= n && memcmp(tok->text[id], text, tok->len[id]) == 0) return id;
    }
    return -1;
}

int tokenizer_encode(const struct tokenizer *tok, const char *text, size_t len, int parse_special, int32_t **ids,
                     size_t *n_ids)
{
    struct enc s;
    memset(&s, 0, sizeof s);
    s.tok = tok;
    int r = 0, prev_special = 1;
    size_t seg = 0; /* start of the text not yet encoded */
    for (size_t i = 0; i < len && tok->n_special; i++) {
        int32_t id = match_special(tok, text + i, len - i, parse_special);
        if (id < 0) continue;
        if (i > seg && (r = encode_text(&s, text + seg, i - seg, &prev_special)) != 0) goto done;
        if ((r = ids_push(&s.out, id)) != 0) goto done;
        prev_special = 1;
        i += tok->len[id] - 1;
        seg = i + 1;
    }
    if (len > seg) r = encode_text(&s, text + seg, len - seg, &prev_special);
done:
    free(s.cp);
    free(s.sym);
    free(s.heap);
    free(s.buf);
    if (r == 0 && !s.out.v && !(s.out.v = malloc(sizeof *s.out.v))) r = -1;
    if (r != 0) {
        free(s.out.v);
        *ids = NULL;
        *n_ids = 0;
        return -1;
    }
    *ids = s.out.v;
    *n_ids = s.out.n;
    return 0;
}

/* ------------------------------------------------------------- decoding */

static size_t put(char *buf, size_t cap, size_t at, const char *s, size_t n)
{
    if (at < cap) memcpy(buf + at, s, at + n <= cap ? n : cap - at);
    return at + n;
}

int tokenizer_token_to_piece(const struct tokenizer *tok, int32_t id, int special, char *buf, size_t cap)
{
    if (id < 0 || id >= tok->n_vocab) return -1;
    const char *t = tok->text[id];
    size_t n = tok->len[id], o = 0;
    switch (tok->type[id]) {
    case TOKEN_TYPE_CONTROL:
    case TOKEN_TYPE_UNKNOWN:
        return special ? (int)put(buf, cap, 0, t, n) : 0;
    case TOKEN_TYPE_UNUSED:
        return 0;
    case TOKEN_TYPE_USER_DEFINED:
        return (int)put(buf, cap, 0, t, n);
    case TOKEN_TYPE_BYTE: {
        int b = parse_byte_token(t, n);
        if (b >= 0) {
            char c = (char)b;
            return (int)put(buf, cap, 0, &c, 1);
        }
        break;
    }
    default: break;
    }
    if (tok->model == TOKENIZER_MODEL_SPM) {
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && memcmp(t + i, "\xe2\x96\x81", 3) == 0) {
                o = put(buf, cap, o, " ", 1);
                i += 3;
            } else {
                o = put(buf, cap, o, t + i, 1);
                i++;
            }
        }
        return (int)o;
    }
    for (size_t i = 0; i < n;) { /* byte-level: each code point is one byte */
        size_t l;
        uint32_t cp = unicode_decode((const unsigned char *)t + i, n - i, &l);
        int b = cp == UNICODE_INVALID ? -1 : unicode_cp_to_byte(cp);
        if (b >= 0) {
            char c = (char)b;
            o = put(buf, cap, o, &c, 1);
        } else {
            o = put(buf, cap, o, t + i, l); /* not a byte image: keep as is */
        }
        i += l;
    }
    return (int)o;
}

/* Appends the piece of id to *buf (grown as needed). */
static int append_piece(const struct tokenizer *tok, int32_t id, int special, char **buf, size_t *cap, size_t *n)
{
    if (id < 0 || id >= tok->n_vocab) return -1;
    /* a piece is never longer than the stored text: byte-level code points,
     * U+2581 and <0xXX> all shrink to one byte, anything else is copied */
    if (grow((void **)buf, cap, *n + tok->len[id] + 1, 1) != 0) return -1;
    int l = tokenizer_token_to_piece(tok, id, special, *buf + *n, *cap - *n);
    if (l < 0 || (size_t)l > *cap - *n) return -1;
    *n += (size_t)l;
    return 0;
}

int tokenizer_decode(const struct tokenizer *tok, const int32_t *ids, size_t n, char **out, size_t *out_len)
{
    char *buf = NULL;
    size_t cap = 0, len = 0;
    if (grow((void **)&buf, &cap, 1, 1) != 0) return -1;
    for (size_t i = 0; i < n; i++) {
        size_t before = len;
        if (append_piece(tok, ids[i], 1, &buf, &cap, &len) != 0) {
            free(buf);
            return -1;
        }
        /* SPM: drop the space the encoder prefixed (HF's Strip decoder) */
        if (i == 0 && tok->model == TOKENIZER_MODEL_SPM && tok->add_space_prefix && len > before && buf[0] == ' ') {
            memmove(buf, buf + 1, len - 1);
            len--;
        }
    }
    buf[len] = '\0';
    *out = buf;
    if (out_len) *out_len = len;
    return 0;
}

struct tok_decoder {
    const struct tokenizer *tok;
    int special;
    int started;
    char *pend; /* raw bytes not yet emitted: a valid but unfinished UTF-8 prefix */
    size_t pend_cap, pend_n;
    char *out;
    size_t out_cap;
};

struct tok_decoder *tok_decoder_create(const struct tokenizer *tok, int special)
{
    struct tok_decoder *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->tok = tok;
    d->special = special;
    return d;
}

void tok_decoder_free(struct tok_decoder *d)
{
    if (!d) return;
    free(d->pend);
    free(d->out);
    free(d);
}

/* Emits pend[0..k) sanitized, keeps pend[k..). */
static int decoder_emit(struct tok_decoder *d, size_t k, const char **out, size_t *n)
{
    if (grow((void **)&d->out, &d->out_cap, 3 * k + 1, 1) != 0) return -1;
    *n = unicode_sanitize((const unsigned char *)d->pend, k, d->out);
    *out = d->out;
    memmove(d->pend, d->pend + k, d->pend_n - k);
    d->pend_n -= k;
    return 0;
}

int tok_decoder_push(struct tok_decoder *d, int32_t id, const char **out, size_t *n)
{
    *out = "";
    *n = 0;
    size_t before = d->pend_n;
    if (append_piece(d->tok, id, d->special, &d->pend, &d->pend_cap, &d->pend_n) != 0) return -1;
    if (!d->started && d->pend_n > before) {
        d->started = 1;
        if (d->tok->model == TOKENIZER_MODEL_SPM && d->tok->add_space_prefix && d->pend[before] == ' ') {
            memmove(d->pend + before, d->pend + before + 1, d->pend_n - before - 1);
            d->pend_n--;
        }
    }
    return decoder_emit(d, unicode_complete_prefix((const unsigned char *)d->pend, d->pend_n), out, n);
}

int tok_decoder_flush(struct tok_decoder *d, const char **out, size_t *n)
{
    return decoder_emit(d, d->pend_n, out, n);
}

/* ------------------------------------------------------------ GGUF loader */

struct tokenizer *tokenizer_load(const struct gguf_ctx *g, char *err, size_t errlen)
{
    return tokenizer_load_pre(g, NULL, err, errlen);
}

struct tokenizer *tokenizer_load_pre(const struct gguf_ctx *g, const char *pre, char *err, size_t errlen)
{
    struct tokenizer_vocab v;
    memset(&v, 0, sizeof v);
    v.bos_id = v.eos_id = v.eot_id = v.unk_id = -1;
    const char *path = gguf_path(g), *s;
    char e2[256];
    if (gguf_get_str(g, "tokenizer.ggml.model", &s, e2, sizeof e2) != 0) {
        snprintf(err, errlen, "%s: no tokenizer: %s", path, e2);
        return NULL;
    }
    if (strcmp(s, "gpt2") == 0) {
        v.model = TOKENIZER_MODEL_BPE;
    } else if (strcmp(s, "llama") == 0) {
        v.model = TOKENIZER_MODEL_SPM;
    } else {
        snprintf(err, errlen, "%s: tokenizer.ggml.model is \"%s\"; hearth reads \"gpt2\" (byte-level BPE) and "
                 "\"llama\" (SentencePiece)", path, s);
        return NULL;
    }
    v.pre = TOKENIZER_PRE_GPT2;
    if (v.model == TOKENIZER_MODEL_BPE && (pre || gguf_get_str(g, "tokenizer.ggml.pre", &s, e2, sizeof e2) == 0)) {
        if (pre) s = pre;
        if (strcmp(s, "smollm") == 0) v.pre = TOKENIZER_PRE_SMOLLM;
        else if (strcmp(s, "llama-bpe") == 0 || strcmp(s, "llama3") == 0) v.pre = TOKENIZER_PRE_LLAMA3;
        else if (strcmp(s, "qwen2") == 0) v.pre = TOKENIZER_PRE_QWEN2;
        else if (strcmp(s, "gpt2") != 0 && strcmp(s, "default") != 0)
            log_warn("%s: unknown tokenizer.ggml.pre \"%s\": using the GPT-2 pre-tokenizer; tokens may differ "
                     "from the model's own tokenizer", path, s);
    }

    struct tokenizer *tok = NULL;
    const char **tokens = NULL, **merges = NULL;
    size_t *lens = NULL, *mlens = NULL;
    int32_t *types = NULL;
    float *scores = NULL;
    enum gguf_vtype et = GGUF_VTYPE_STR;
    uint64_t n = 0, nm = 0, nx;
    const void *data;
    if (gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data, e2, sizeof e2) != 0 || et != GGUF_VTYPE_STR ||
        n == 0 || n > INT32_MAX) {
        snprintf(err, errlen, "%s: tokenizer.ggml.tokens must be a non-empty array of strings (%s)", path,
                 et != GGUF_VTYPE_STR ? "wrong element type" : e2);
        return NULL;
    }
    int64_t kt = gguf_find_key(g, "tokenizer.ggml.tokens");
    tokens = malloc(n * sizeof *tokens);
    lens = malloc(n * sizeof *lens);
    types = malloc(n * sizeof *types);
    if (!tokens || !lens || !types) goto oom;
    for (uint64_t i = 0; i < n; i++) {
        tokens[i] = gguf_get_arr_str(g, kt, i, &lens[i]);
        if (!tokens[i]) {
            snprintf(err, errlen, "%s: tokenizer.ggml.tokens[%llu] is unreadable", path, (unsigned long long)i);
            goto fail;
        }
        types[i] = TOKEN_TYPE_NORMAL;
    }
    if (gguf_find_key(g, "tokenizer.ggml.token_type") >= 0) {
        if (gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &nx, &data, e2, sizeof e2) != 0 || nx != n ||
            (et != GGUF_VTYPE_I32 && et != GGUF_VTYPE_U32)) {
            snprintf(err, errlen, "%s: tokenizer.ggml.token_type must be %llu int32 values", path,
                     (unsigned long long)n);
            goto fail;
        }
        memcpy(types, data, n * sizeof *types); /* unaligned in the mapping */
    }
    if (gguf_find_key(g, "tokenizer.ggml.scores") >= 0) {
        if (gguf_get_arr(g, "tokenizer.ggml.scores", &et, &nx, &data, e2, sizeof e2) != 0 || nx != n ||
            et != GGUF_VTYPE_F32) {
            snprintf(err, errlen, "%s: tokenizer.ggml.scores must be %llu f32 values", path, (unsigned long long)n);
            goto fail;
        }
        if (!(scores = malloc(n * sizeof *scores))) goto oom;
        memcpy(scores, data, n * sizeof *scores);
    }
    if (v.model == TOKENIZER_MODEL_BPE) {
        if (gguf_get_arr(g, "tokenizer.ggml.merges", &et, &nm, &data, e2, sizeof e2) != 0 || et != GGUF_VTYPE_STR) {
            snprintf(err, errlen, "%s: a gpt2 tokenizer needs tokenizer.ggml.merges, an array of strings", path);
            goto fail;
        }
        int64_t km = gguf_find_key(g, "tokenizer.ggml.merges");
        merges = malloc((nm ? nm : 1) * sizeof *merges);
        mlens = malloc((nm ? nm : 1) * sizeof *mlens);
        if (!merges || !mlens) goto oom;
        for (uint64_t i = 0; i < nm; i++) {
            merges[i] = gguf_get_arr_str(g, km, i, &mlens[i]);
            if (!merges[i]) {
                snprintf(err, errlen, "%s: tokenizer.ggml.merges[%llu] is unreadable", path, (unsigned long long)i);
                goto fail;
            }
        }
    }
    /* special ids; llama.cpp's defaults for SentencePiece when absent */
    static const char *const id_keys[4] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                           "tokenizer.ggml.eot_token_id", "tokenizer.ggml.unknown_token_id"};
    int32_t *id_out[4] = {&v.bos_id, &v.eos_id, &v.eot_id, &v.unk_id};
    if (v.model == TOKENIZER_MODEL_SPM) {
        v.unk_id = 0;
        v.bos_id = n > 1 ? 1 : -1;
        v.eos_id = n > 2 ? 2 : -1;
    }
    for (int k = 0; k < 4; k++) {
        int64_t x;
        if (gguf_find_key(g, id_keys[k]) < 0) continue;
        if (gguf_get_int(g, id_keys[k], &x, e2, sizeof e2) != 0 || x < -1 || x >= (int64_t)n) {
            snprintf(err, errlen, "%s: %s must be a token id below %llu", path, id_keys[k], (unsigned long long)n);
            goto fail;
        }
        *id_out[k] = (int32_t)x;
    }
    int flag;
    v.add_bos = v.model == TOKENIZER_MODEL_SPM || v.pre == TOKENIZER_PRE_LLAMA3;
    if (gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &flag, e2, sizeof e2) == 0) v.add_bos = flag;
    v.add_space_prefix = v.model == TOKENIZER_MODEL_SPM;
    if (gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &flag, e2, sizeof e2) == 0) v.add_space_prefix = flag;

    v.n_tokens = (int32_t)n;
    v.tokens = tokens;
    v.token_lens = lens;
    v.token_types = types;
    v.scores = scores;
    v.n_merges = (size_t)nm;
    v.merges = merges;
    v.merge_lens = mlens;
    tok = tokenizer_create(&v, e2, sizeof e2);
    if (!tok) snprintf(err, errlen, "%s: %s", path, e2);
    goto done;
oom:
    snprintf(err, errlen, "%s: out of memory reading the tokenizer", path);
fail:
    tok = NULL;
done:
    free(tokens);
    free(lens);
    free(types);
    free(scores);
    free(merges);
    free(mlens);
    return tok;
}
