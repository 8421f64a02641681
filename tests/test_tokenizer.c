/* test_tokenizer: unit tests of unicode.c, tokenizer.c and chat.c on
 * hand-built vocabularies, then (when present) the default model:
 * known ids, load time, encode speed, streaming decode.
 *
 *   test_tokenizer [MODEL]     exit 0 pass, 1 fail, 77 all passed but no model
 *
 * Expected tokenizations are written as token texts joined by '|', in the
 * vocabulary's own spelling (byte-level: 'Ġ' is a space, 'Ċ' a newline). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.h"
#include "gguf.h"
#include "tokenizer.h"
#include "unicode.h"

static int failures;

#define CHECK(cond, ...)                                                                                           \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            failures++;                                                                                            \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                            \
            printf(__VA_ARGS__);                                                                                   \
            printf("\n");                                                                                          \
        }                                                                                                          \
    } while (0)

/* CPU time of this thread: the machine is shared, wall time is not ours */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The token texts of the encoding of text, joined by '|' (static buffer). */
static const char *pieces(const struct tokenizer *tok, const char *text, size_t len, int parse_special)
{
    static char out[4096];
    int32_t *ids;
    size_t n, o = 0;
    if (tokenizer_encode(tok, text, len, parse_special, &ids, &n) != 0) return "<encode failed>";
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        o += (size_t)snprintf(out + o, sizeof out - o, "%s%s", i ? "|" : "", tokenizer_token_text(tok, ids[i]));
        if (o >= sizeof out) break;
    }
    free(ids);
    return out;
}

#define EXPECT_PIECES(tok, text, ps, want)                                                                         \
    do {                                                                                                           \
        const char *got_ = pieces(tok, text, strlen(text), ps);                                                    \
        CHECK(strcmp(got_, want) == 0, "encode(\"%s\", special=%d): got %s, want %s", text, ps, got_, want);      \
    } while (0)

/* --------------------------------------------------------------- unicode */

static void test_unicode(void)
{
    size_t l;
    CHECK(unicode_decode((const unsigned char *)"A", 1, &l) == 'A' && l == 1, "ascii");
    CHECK(unicode_decode((const unsigned char *)"\xc3\xa9", 2, &l) == 0xE9 && l == 2, "2-byte");
    CHECK(unicode_decode((const unsigned char *)"\xf0\x9f\x98\x80", 4, &l) == 0x1F600 && l == 4, "4-byte");
    static const char *const bad[] = {"\xc0\x80", "\xc1\xbf", "\xed\xa0\x80", "\xf5\x80\x80\x80", "\xf4\x90\x80\x80",
                                      "\xe0\x80\x80", "\x80", "\xff", "\xe2\x82"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint32_t cp = unicode_decode((const unsigned char *)bad[i], strlen(bad[i]), &l);
        CHECK(cp == UNICODE_INVALID && l == 1, "invalid sequence %zu decoded as U+%X len %zu", i, cp, l);
    }
    char buf[4];
    CHECK(unicode_encode(0x20AC, buf) == 3 && memcmp(buf, "\xe2\x82\xac", 3) == 0, "encode euro");
    CHECK(unicode_encode(0xD800, buf) == 0 && unicode_encode(0x110000, buf) == 0, "no UTF-8 for surrogates");

    CHECK(unicode_is_letter('a') && unicode_is_letter(0xE9) && unicode_is_letter(0x4E2D) && unicode_is_letter(0x0627),
          "letters");
    CHECK(!unicode_is_letter('1') && !unicode_is_letter(' ') && !unicode_is_letter(0x301), "non-letters");
    CHECK(unicode_is_number('7') && unicode_is_number(0x2462) && unicode_is_number(0x0663) && unicode_is_number(0xBD),
          "numbers: digit, circled, Arabic-Indic, one half");
    CHECK(unicode_class(0x301) == UNICODE_MARK && unicode_class('!') == UNICODE_PUNCT &&
              unicode_class('+') == UNICODE_SYMBOL && unicode_class(0x1F600) == UNICODE_SYMBOL &&
              unicode_class(0xE000) == UNICODE_OTHER && unicode_class(UNICODE_INVALID) == UNICODE_OTHER,
          "classes");
    CHECK(unicode_is_space(' ') && unicode_is_space('\t') && unicode_is_space(0x0B) && unicode_is_space(0x85) &&
              unicode_is_space(0xA0) && unicode_is_space(0x3000) && unicode_is_space(0x2029),
          "White_Space");
    CHECK(!unicode_is_space(0x1C) && unicode_is_py_space(0x1C) && !unicode_is_space(0x200B) && !unicode_is_space('x'),
          "not White_Space: U+001C (but Python space), U+200B");
    CHECK(unicode_fold_ascii('S') == 's' && unicode_fold_ascii(0x17F) == 's' && unicode_fold_ascii(0xC9) == 0xC9,
          "fold");

    /* GPT-2 byte map: a bijection onto printable code points */
    int seen[0x200] = {0};
    for (int b = 0; b < 256; b++) {
        uint32_t cp = unicode_byte_to_cp((uint8_t)b);
        CHECK(cp < 0x200 && !seen[cp] && unicode_cp_to_byte(cp) == b, "byte map at %d -> U+%X", b, cp);
        if (cp < 0x200) seen[cp] = 1;
    }
    CHECK(unicode_byte_to_cp(' ') == 0x120 && unicode_byte_to_cp('\n') == 0x10A && unicode_byte_to_cp('a') == 'a' &&
              unicode_byte_to_cp(0xAD) == 0x143,
          "GPT-2 byte map: space=U+0120, newline=U+010A, soft hyphen=U+0143");
    CHECK(unicode_cp_to_byte(0x144) == -1 && unicode_cp_to_byte(0x7F) == -1, "non-images");

    const unsigned char *s = (const unsigned char *)"ab\xe2\x82";
    CHECK(unicode_complete_prefix(s, 4) == 2, "holds back a partial euro sign");
    CHECK(unicode_complete_prefix(s, 3) == 2, "holds back a lone lead byte");
    CHECK(unicode_complete_prefix((const unsigned char *)"ab\xe2\x82\xac", 5) == 5, "complete");
    CHECK(unicode_complete_prefix((const unsigned char *)"a\xff", 2) == 2, "invalid byte is not held");
    CHECK(unicode_complete_prefix((const unsigned char *)"a\xe0\x80", 3) == 3, "impossible prefix not held");
    char out[64];
    size_t n = unicode_sanitize((const unsigned char *)"a\xe2\x82" "A\xff" "b", 6, out);
    CHECK(n == 9 && memcmp(out, "a\xef\xbf\xbd" "A\xef\xbf\xbd" "b", 9) == 0,
          "sanitize: maximal subparts become one U+FFFD each (got %zu bytes)", n);
}

/* ------------------------------------------------------ tiny byte-level BPE */

static char byte_tok[256][5];

/* Vocabulary: ids 0..255 the byte tokens (id = byte), then extra[]. */
static struct tokenizer *make_bpe(enum tokenizer_pre pre, const char *const *extra, const int32_t *extra_types,
                                  int n_extra, const char *const *merges, size_t n_merges)
{
    static const char *toks[512];
    static int32_t types[512];
    for (int b = 0; b < 256; b++) {
        size_t l = unicode_encode(unicode_byte_to_cp((uint8_t)b), byte_tok[b]);
        byte_tok[b][l] = '\0';
        toks[b] = byte_tok[b];
        types[b] = TOKEN_TYPE_NORMAL;
    }
    for (int i = 0; i < n_extra; i++) {
        toks[256 + i] = extra[i];
        types[256 + i] = extra_types ? extra_types[i] : TOKEN_TYPE_NORMAL;
    }
    struct tokenizer_vocab v = {0};
    v.model = TOKENIZER_MODEL_BPE;
    v.pre = pre;
    v.n_tokens = 256 + n_extra;
    v.tokens = toks;
    v.token_types = types;
    v.n_merges = n_merges;
    v.merges = merges;
    v.bos_id = v.eos_id = v.eot_id = v.unk_id = -1;
    char err[256];
    struct tokenizer *tok = tokenizer_create(&v, err, sizeof err);
    CHECK(tok != NULL, "tokenizer_create: %s", err);
    return tok;
}

static void test_bpe_merges(void)
{
    /* rank decides: "b c" (rank 0) beats "a b" (rank 1) */
    static const char *const ex[] = {"ab", "bc", "abc", "aa"};
    static const char *const m1[] = {"b c", "a b", "ab c", "a a"};
    struct tokenizer *t = make_bpe(TOKENIZER_PRE_GPT2, ex, NULL, 4, m1, 4);
    if (!t) return;
    EXPECT_PIECES(t, "abc", 0, "a|bc");
    EXPECT_PIECES(t, "aaa", 0, "aa|a");      /* equal ranks: leftmost first */
    EXPECT_PIECES(t, "aaaaa", 0, "aa|aa|a");
    EXPECT_PIECES(t, "", 0, "");
    int32_t *ids;
    size_t n;
    CHECK(tokenizer_encode(t, "", 0, 1, &ids, &n) == 0 && ids != NULL && n == 0, "empty input gives 0 ids");
    free(ids);
    tokenizer_free(t);

    static const char *const m2[] = {"a b", "b c", "ab c"};
    t = make_bpe(TOKENIZER_PRE_GPT2, ex, NULL, 4, m2, 3);
    if (!t) return;
    EXPECT_PIECES(t, "abc", 0, "abc"); /* a b first, then ab c */
    EXPECT_PIECES(t, "abcabc", 0, "abc|abc");
    tokenizer_free(t);

    /* a merge whose result is not a token, and a malformed one */
    static const char *const m3[] = {"x y", "a b"};
    t = make_bpe(TOKENIZER_PRE_GPT2, ex, NULL, 4, m3, 2);
    if (t) {
        EXPECT_PIECES(t, "xyab", 0, "x|y|ab");
        tokenizer_free(t);
    }
    static const char *const m4[] = {"ab"};
    static const char *toks[256];
    for (int b = 0; b < 256; b++) toks[b] = byte_tok[b];
    struct tokenizer_vocab v = {0};
    v.n_tokens = 256;
    v.tokens = toks;
    v.n_merges = 1;
    v.merges = m4;
    v.bos_id = v.eos_id = v.eot_id = v.unk_id = -1;
    char err[256] = "";
    t = tokenizer_create(&v, err, sizeof err);
    CHECK(t == NULL && strstr(err, "merge 0"), "a merge without a space is refused naming it: %s", err);
    tokenizer_free(t);
    v.n_merges = 0;
    v.eos_id = 300;
    t = tokenizer_create(&v, err, sizeof err);
    CHECK(t == NULL && strstr(err, "eos"), "an eos id outside the vocabulary is refused: %s", err);
    tokenizer_free(t);
}

static void test_bpe_pretokenizers(void)
{
    /* merges that would cross word boundaries if the pre-tokenizer let them */
    static const char *const ex[] = {"oĠ", "Ġw", "ĠĠ", "Ġb", "Ġ1", "12", "123", "34", "45", "'S", "Sx", "ĊĠ", "Ġ!",
                                     "!!", "Ġ!!", "ab"};
    static const char *const m[] = {"o Ġ", "Ġ w", "Ġ Ġ", "Ġ b", "Ġ 1", "3 4", "1 2", "12 3", "4 5", "' S",
                                    "S x", "Ċ Ġ", "! !", "Ġ !", "Ġ !!", "a b"};
    int n = (int)(sizeof ex / sizeof ex[0]);
    struct tokenizer *g = make_bpe(TOKENIZER_PRE_GPT2, ex, NULL, n, m, sizeof m / sizeof m[0]);
    struct tokenizer *s = make_bpe(TOKENIZER_PRE_SMOLLM, ex, NULL, n, m, sizeof m / sizeof m[0]);
    struct tokenizer *l = make_bpe(TOKENIZER_PRE_LLAMA3, ex, NULL, n, m, sizeof m / sizeof m[0]);
    struct tokenizer *q = make_bpe(TOKENIZER_PRE_QWEN2, ex, NULL, n, m, sizeof m / sizeof m[0]);
    if (!g || !s || !l || !q) goto out;
    EXPECT_PIECES(g, "o w", 0, "o|Ġw");          /* "o " is not a word */
    EXPECT_PIECES(g, "a  b", 0, "a|Ġ|Ġb");       /* \s+(?!\S) leaves the last space */
    EXPECT_PIECES(g, "a   ", 0, "a|ĠĠ|Ġ");       /* at the end all spaces are one word */
    EXPECT_PIECES(g, "a\n b", 0, "a|Ċ|Ġb");
    EXPECT_PIECES(g, "x !!", 0, "x|Ġ!!");
    EXPECT_PIECES(g, "x 1", 0, "x|Ġ1");
    EXPECT_PIECES(s, "x 1", 0, "x|Ġ|1");         /* SmolLM: digits stand alone */
    EXPECT_PIECES(s, "12345", 0, "1|2|3|4|5");
    EXPECT_PIECES(g, "12345", 0, "12|34|5");     /* GPT-2: one word, "3 4" has rank 0 */
    EXPECT_PIECES(l, "12345", 0, "123|45");      /* Llama-3: runs of <= 3 digits */
    EXPECT_PIECES(q, "12345", 0, "1|2|3|4|5");   /* Qwen2: single digits */
    EXPECT_PIECES(g, "'Sx", 0, "'|Sx");          /* GPT-2 contractions are case-sensitive */
    EXPECT_PIECES(l, "'Sx", 0, "'S|x");          /* Llama-3: (?i:'s) */
    EXPECT_PIECES(g, "ab's", 0, "ab|'|s");
    EXPECT_PIECES(l, "a\n  b", 0, "a|Ċ|Ġ|Ġb");    /* \s*[\r\n]+ stops at the newline */
    EXPECT_PIECES(g, "a\n  b", 0, "a|ĊĠ|Ġb");     /* \s+(?!\S) takes "\n " */
    EXPECT_PIECES(l, "x!!\n\ny", 0, "x|!!|Ċ|Ċ|y"); /* [^\s\p{L}\p{N}]+[\r\n]* keeps newlines */
    EXPECT_PIECES(l, "\tab", 0, "\xc4\x89|ab");  /* one prefix char then letters: "\tab" is one word */
    EXPECT_PIECES(g, "\xff\xfe", 0, "\xc3\xbf|\xc3\xbe"); /* invalid UTF-8 still encodes byte-exact */
out:
    tokenizer_free(g);
    tokenizer_free(s);
    tokenizer_free(l);
    tokenizer_free(q);
}

static void test_special_tokens(void)
{
    static const char *const ex[] = {"<|x|>", "<|x", "<u>", "<|end|>", "ab"};
    static const int32_t ty[] = {TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED, TOKEN_TYPE_USER_DEFINED,
                                 TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL};
    static const char *const m[] = {"a b"};
    struct tokenizer *t = make_bpe(TOKENIZER_PRE_GPT2, ex, ty, 5, m, 1);
    if (!t) return;
    EXPECT_PIECES(t, "ab<|x|>ab", 1, "ab|<|x|>|ab");
    EXPECT_PIECES(t, "ab<|x|>ab", 0, "ab|<|x|||>|ab"); /* control text as text; user-defined "<|x" still found */
    EXPECT_PIECES(t, "<u><u>", 0, "<u>|<u>");
    EXPECT_PIECES(t, "<|x|", 1, "<|x||");               /* longest that matches */
    EXPECT_PIECES(t, "<|x|>", 1, "<|x|>");
    EXPECT_PIECES(t, "<|end|", 1, "<|||e|n|d||");   /* no match: plain bytes */
    CHECK(tokenizer_is_eog(t, 259) && !tokenizer_is_eog(t, 256), "<|end|> is end-of-generation, <|x|> is not");

    /* decode: control text only when asked; user-defined always */
    char buf[16];
    CHECK(tokenizer_token_to_piece(t, 256, 0, buf, sizeof buf) == 0, "control hidden");
    CHECK(tokenizer_token_to_piece(t, 256, 1, buf, sizeof buf) == 5 && memcmp(buf, "<|x|>", 5) == 0, "control shown");
    CHECK(tokenizer_token_to_piece(t, 258, 0, buf, sizeof buf) == 3 && memcmp(buf, "<u>", 3) == 0, "user-defined");
    CHECK(tokenizer_token_to_piece(t, 256, 1, buf, 2) == 5, "too small a buffer reports the full length");
    CHECK(tokenizer_token_to_piece(t, 9999, 1, buf, sizeof buf) == -1, "bad id");
    CHECK(tokenizer_token_to_piece(t, ' ', 0, buf, sizeof buf) == 1 && buf[0] == ' ', "Ġ decodes to a space");
    tokenizer_free(t);
}

static void test_decoder(void)
{
    static const char *const ex[] = {"<|c|>"};
    static const int32_t ty[] = {TOKEN_TYPE_CONTROL};
    struct tokenizer *t = make_bpe(TOKENIZER_PRE_GPT2, ex, ty, 1, NULL, 0);
    if (!t) return;
    struct tok_decoder *d = tok_decoder_create(t, 0);
    CHECK(d != NULL, "decoder");
    if (!d) goto out;
    /* "é€😀" split byte by byte, a control token in the middle, then 0xFF,
     * an unfinished euro sign cut by 'A', and an unfinished one at the end */
    const unsigned char in[] = {0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0xFF, 0xE2, 0x82, 'A', 0xE2};
    char got[128];
    size_t o = 0, n;
    const char *p;
    int held_ok = 1;
    for (size_t i = 0; i < sizeof in; i++) {
        if (i == 3) {
            CHECK(tok_decoder_push(d, 256, &p, &n) == 0 && n == 0, "hidden control token emits nothing");
        }
        CHECK(tok_decoder_push(d, in[i], &p, &n) == 0, "push");
        /* output must always be valid UTF-8 */
        for (size_t k = 0; k < n;) {
            size_t l;
            if (unicode_decode((const unsigned char *)p + k, n - k, &l) == UNICODE_INVALID) held_ok = 0;
            k += l;
        }
        if (i == 0 || i == 2 || i == 3 || i == 5 || i == 6 || i == 7) held_ok &= n == 0;
        memcpy(got + o, p, n);
        o += n;
    }
    CHECK(tok_decoder_flush(d, &p, &n) == 0, "flush");
    memcpy(got + o, p, n);
    o += n;
    CHECK(held_ok, "partial characters are held back and output is valid UTF-8");
    const char *want = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbd\xef\xbf\xbd" "A\xef\xbf\xbd";
    CHECK(o == strlen(want) && memcmp(got, want, o) == 0, "streamed text (%zu bytes, want %zu)", o, strlen(want));
    CHECK(tok_decoder_push(d, -1, &p, &n) == -1, "bad id refused");
    tok_decoder_free(d);

    int32_t ids[] = {'h', 'i', 256, 0xFF};
    char *s;
    size_t len;
    CHECK(tokenizer_decode(t, ids, 4, &s, &len) == 0 && len == 8 && memcmp(s, "hi<|c|>\xff", 8) == 0,
          "decode keeps raw bytes and control text");
    free(s);
out:
    tokenizer_free(t);
}

/* --------------------------------------------------------- SentencePiece */

static void test_spm(void)
{
    /* <unk> <s> </s>, 256 byte tokens, then pieces with scores */
    static const char *toks[300];
    static int32_t types[300];
    static float scores[300];
    static char bytes[256][8];
    int n = 0;
    toks[n] = "<unk>", types[n++] = TOKEN_TYPE_UNKNOWN;
    toks[n] = "<s>", types[n++] = TOKEN_TYPE_CONTROL;
    toks[n] = "</s>", types[n++] = TOKEN_TYPE_CONTROL;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        toks[n] = bytes[b], types[n++] = TOKEN_TYPE_BYTE;
    }
    static const struct { const char *t; float s; } pcs[] = {
        {"\xe2\x96\x81", -1}, {"h", -2},  {"e", -2},  {"l", -2},    {"o", -2},  {"\xe2\x96\x81h", -3},
        {"\xe2\x96\x81he", -4}, {"ll", -3.5f}, {"\xe2\x96\x81hell", -5}, {"\xe2\x96\x81hello", -6},
        {"a", -2}, {"b", -2}, {"c", -2}, {"ab", -1.5f}, {"bc", -1.0f}, {"w", -2}};
    for (size_t i = 0; i < sizeof pcs / sizeof pcs[0]; i++) {
        toks[n] = pcs[i].t;
        scores[n] = pcs[i].s;
        types[n++] = TOKEN_TYPE_NORMAL;
    }
    struct tokenizer_vocab v = {0};
    v.model = TOKENIZER_MODEL_SPM;
    v.n_tokens = n;
    v.tokens = toks;
    v.token_types = types;
    v.scores = scores;
    v.unk_id = 0;
    v.bos_id = 1;
    v.eos_id = 2;
    v.eot_id = -1;
    v.add_bos = 1;
    v.add_space_prefix = 1;
    char err[256];
    struct tokenizer *t = tokenizer_create(&v, err, sizeof err);
    CHECK(t != NULL, "spm create: %s", err);
    if (!t) return;
    EXPECT_PIECES(t, "hello", 0, "\xe2\x96\x81hello");
    EXPECT_PIECES(t, "hello hello", 0, "\xe2\x96\x81hello|\xe2\x96\x81hello");
    EXPECT_PIECES(t, "xabc", 0, "\xe2\x96\x81|<0x78>|a|bc"); /* bc (-1.0) beats ab (-1.5); x by bytes */
    EXPECT_PIECES(t, "\xc3\xa9", 0, "\xe2\x96\x81|<0xC3>|<0xA9>");
    EXPECT_PIECES(t, "<s>hello", 1, "<s>|\xe2\x96\x81hello");      /* space prefixed after a special token */
    EXPECT_PIECES(t, "", 0, "");
    CHECK(tokenizer_add_bos(t) && tokenizer_bos(t) == 1 && tokenizer_is_eog(t, 2), "spm ids");

    const char *text = "hello w\xc3\xa9 abc";
    int32_t *ids;
    size_t nid;
    char *back;
    CHECK(tokenizer_encode(t, text, strlen(text), 0, &ids, &nid) == 0, "encode");
    CHECK(tokenizer_decode(t, ids, nid, &back, NULL) == 0 && strcmp(back, text) == 0,
          "spm round trip: \"%s\"", back);
    struct tok_decoder *d = tok_decoder_create(t, 0);
    char got[64] = "";
    size_t o = 0, k;
    const char *p;
    for (size_t i = 0; d && i < nid; i++) {
        if (tok_decoder_push(d, ids[i], &p, &k) == 0 && o + k < sizeof got) memcpy(got + o, p, k), o += k;
    }
    if (d && tok_decoder_flush(d, &p, &k) == 0 && o + k < sizeof got) memcpy(got + o, p, k), o += k;
    CHECK(o == strlen(text) && memcmp(got, text, o) == 0, "spm streaming: \"%.*s\"", (int)o, got);
    tok_decoder_free(d);
    free(ids);
    free(back);
    tokenizer_free(t);
}

/* ----------------------------------------------------------- GGUF loader */

static struct tokenizer *load_mem(gguf_writer_t *w, char *err, size_t errlen)
{
    void *buf;
    size_t size;
    struct tokenizer *t = NULL;
    if (gguf_writer_to_mem(w, &buf, &size, err, errlen) != 0) return NULL;
    gguf_ctx_t *g = gguf_open_mem(buf, size, err, errlen);
    if (g) t = tokenizer_load(g, err, errlen);
    gguf_close(g);
    free(buf);
    return t;
}

static void test_loader(void)
{
    const char *toks[258];
    for (int b = 0; b < 256; b++) toks[b] = byte_tok[b];
    toks[256] = "ab";
    toks[257] = "<|im_end|>";
    int32_t types[258];
    for (int i = 0; i < 258; i++) types[i] = i == 257 ? TOKEN_TYPE_CONTROL : TOKEN_TYPE_NORMAL;
    const char *merges[] = {"a b"};
    char err[512];

    gguf_writer_t *w = gguf_writer_create();
    if (!w) return;
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", "no-such-pre");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 258);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VTYPE_I32, types, 258);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 1);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 257);
    struct tokenizer *t = load_mem(w, err, sizeof err);
    CHECK(t != NULL, "load from GGUF: %s", err);
    if (t) {
        CHECK(tokenizer_pre_kind(t) == TOKENIZER_PRE_GPT2, "unknown pre falls back to gpt2");
        EXPECT_PIECES(t, "xab<|im_end|>", 1, "x|ab|<|im_end|>");
        CHECK(tokenizer_eos(t) == 257 && tokenizer_is_eog(t, 257) && !tokenizer_add_bos(t), "ids and flags");
        tokenizer_free(t);
    }
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 9999);
    t = load_mem(w, err, sizeof err);
    CHECK(!t && strstr(err, "eos_token_id"), "bad eos id refused: %s", err);
    tokenizer_free(t);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "bert");
    t = load_mem(w, err, sizeof err);
    CHECK(!t && strstr(err, "bert"), "unsupported model named: %s", err);
    tokenizer_free(t);
    gguf_writer_destroy(w);

    w = gguf_writer_create();
    if (!w) return;
    gguf_writer_set_str(w, "general.architecture", "llama");
    t = load_mem(w, err, sizeof err);
    CHECK(!t && strstr(err, "tokenizer.ggml.model"), "missing tokenizer named: %s", err);
    tokenizer_free(t);
    gguf_writer_destroy(w);
}

/* ----------------------------------------------------------------- chat */

static void test_chat(void)
{
    struct chat_msg m[] = {{"user", "hi"}, {"assistant", " yo "}, {"user", "q"}};
    char *out, err[256];
    CHECK(chat_format(NULL, m, 1, 1, &out, err, sizeof err) == 0 &&
              strcmp(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n") == 0,
          "ChatML default");
    free(out);
    const char *smol = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                       "{{ '<|im_start|>system\nBe nice<|im_end|>\n' }}{% endif %}...<|im_start|>";
    CHECK(chat_format(smol, m, 1, 0, &out, err, sizeof err) == 0 &&
              strcmp(out, "<|im_start|>system\nBe nice<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n") == 0,
          "ChatML with the template's default system message");
    free(out);
    CHECK(chat_format("[INST] <<SYS>>", m, 3, 1, &out, err, sizeof err) == 0 &&
              strcmp(out, "<s>[INST] hi [/INST] yo </s><s>[INST] q [/INST]") == 0,
          "Llama-2");
    free(out);
    CHECK(chat_format("[INST]", m + 1, 1, 1, &out, err, sizeof err) == -1 && strstr(err, "alternate"),
          "Llama-2 refuses an assistant first: %s", err);
    CHECK(chat_format("<|start_header_id|>", m, 1, 1, &out, err, sizeof err) == 0 &&
              strcmp(out, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                          "<|start_header_id|>assistant<|end_header_id|>\n\n") == 0,
          "Llama-3");
    free(out);
    int known;
    CHECK(chat_detect("{{ weird }}", &known) == CHAT_STYLE_CHATML && !known, "unknown template -> ChatML guess");
}

/* ----------------------------------------------------------- real model */

static int test_model(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    char err[512];
    gguf_ctx_t *g = gguf_open(path, err, sizeof err);
    CHECK(g != NULL, "open %s: %s", path, err);
    if (!g) return 1;
    double t0 = now_s();
    struct tokenizer *t = tokenizer_load(g, err, sizeof err);
    double load_ms = (now_s() - t0) * 1e3;
    CHECK(t != NULL, "load: %s", err);
    if (!t) {
        gguf_close(g);
        return 1;
    }
    printf("model %s: tokenizer loaded in %.1f ms (CPU time)\n", path, load_ms);
    CHECK(tokenizer_n_vocab(t) == 49152 && tokenizer_eos(t) == 2 && tokenizer_bos(t) == 1, "SmolLM2 vocabulary");
    CHECK(tokenizer_is_eog(t, 2) && tokenizer_is_eog(t, 0) && !tokenizer_is_eog(t, 1), "eog: <|im_end|>, <|endoftext|>");
    /* ids from HF tokenizers on SmolLM2's tokenizer */
    static const struct { const char *s; int32_t ids[8]; size_t n; } known[] = {
        {"Hello world", {19556, 905}, 2},
        {"I'm 42 years old!", {57, 5248, 216, 36, 34, 929, 1573, 17}, 8},
        {"<|im_start|>user\nhi<|im_end|>", {1, 4093, 198, 6004, 2}, 5},
        {"caf\xc3\xa9 \xf0\x9f\x98\x80", {83, 1939, 2756, 40303, 218}, 5},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        int32_t *ids;
        size_t n;
        int ok = tokenizer_encode(t, known[i].s, strlen(known[i].s), 1, &ids, &n) == 0 && n == known[i].n &&
                 memcmp(ids, known[i].ids, n * sizeof *ids) == 0;
        CHECK(ok, "known ids for \"%s\"", known[i].s);
        free(ids);
    }

    /* speed: ~1 MB of mixed text */
    static const char *const parts[] = {
        "The quick brown fox jumps over the lazy dog. ", "It's 2024 and we'll see 3.14159 again!\n",
        "def f(x):\n    return x * 2  # comment\n", "caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e ",
        "\xf0\x9f\x98\x80\xf0\x9f\x91\x8d ", "    \t\n\n", "{\"key\": [1, 2, 3]} "};
    size_t cap = 1 << 20, len = 0;
    char *text = malloc(cap + 64);
    uint32_t seed = 42;
    printf("speed text seed %u\n", seed);
    while (text && len < cap) {
        seed = seed * 1664525u + 1013904223u;
        const char *p = parts[(seed >> 16) % (sizeof parts / sizeof parts[0])];
        size_t l = strlen(p);
        memcpy(text + len, p, l);
        len += l;
    }
    if (text) {
        int32_t *ids;
        size_t n;
        t0 = now_s();
        int rc = tokenizer_encode(t, text, len, 0, &ids, &n);
        double dt = now_s() - t0;
        CHECK(rc == 0, "encode 1 MB");
        printf("encoded %zu bytes into %zu tokens in %.1f ms CPU time: %.2f MB/s\n", len, n, dt * 1e3, (double)len / dt / 1e6);
        if (rc == 0) {
            /* stream it back: the concatenation must be the text */
            struct tok_decoder *d = tok_decoder_create(t, 1);
            char *back = malloc(len + 64);
            size_t o = 0, k;
            const char *p;
            int ok = d && back;
            for (size_t i = 0; ok && i < n; i++) {
                ok = tok_decoder_push(d, ids[i], &p, &k) == 0 && o + k <= len;
                if (ok) memcpy(back + o, p, k), o += k;
            }
            if (ok && tok_decoder_flush(d, &p, &k) == 0 && o + k <= len) memcpy(back + o, p, k), o += k;
            CHECK(ok && o == len && memcmp(back, text, len) == 0, "streamed decode of 1 MB reproduces it");
            tok_decoder_free(d);
            free(back);
            free(ids);
        }
#if !defined(__SANITIZE_ADDRESS__) && !defined(__OPTIMIZE__)
        (void)dt;
#elif !defined(__SANITIZE_ADDRESS__)
        CHECK((double)len / dt > 1e6, "encode speed %.2f MB/s, want > 1 MB/s", (double)len / dt / 1e6);
        CHECK(load_ms < 100, "load %.1f ms, want < 100 ms", load_ms);
#endif
        free(text);
    }

    /* the chat template in the file, through the tokenizer */
    const char *tmpl;
    if (gguf_get_str(g, "tokenizer.chat_template", &tmpl, err, sizeof err) == 0) {
        struct chat_msg m[] = {{"user", "Hi!"}};
        char *out;
        int32_t *ids;
        size_t n;
        CHECK(chat_format(tmpl, m, 1, 1, &out, err, sizeof err) == 0, "chat: %s", err);
        if (out && tokenizer_encode(t, out, strlen(out), 1, &ids, &n) == 0) {
            CHECK(n > 10 && ids[0] == 1 && ids[n - 4] == 1 && ids[n - 1] == 198,
                  "chat prompt starts with <|im_start|> and ends <|im_start|> ass istant \\n");
            CHECK(strstr(out, "You are a helpful AI assistant named SmolLM") != NULL, "SmolLM2 default system");
            free(ids);
        }
        free(out);
    }
    tokenizer_free(t);
    gguf_close(g);
    return 1;
}

int main(int argc, char **argv)
{
    test_unicode();
    test_bpe_merges();
    test_bpe_pretokenizers();
    test_special_tokens();
    test_decoder();
    test_spm();
    test_loader();
    test_chat();
    char path[1024];
    const char *home = getenv("HOME");
    if (argc > 1) snprintf(path, sizeof path, "%s", argv[1]);
    else snprintf(path, sizeof path, "%s/.cache/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : "");
    int have_model = test_model(path);
    if (failures) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    if (!have_model) {
        printf("unit tests passed; SKIP real-model tests: %s not found\n", path);
        return 77;
    }
    printf("all tokenizer tests passed\n");
    return 0;
}
