/* tokenizer: text <-> token ids for the two vocabulary kinds GGUF files carry.
 *
 * - Byte-level BPE (`tokenizer.ggml.model` = "gpt2"): text is split into
 *   words by a pre-tokenizer (hand-written matchers for the regexes of
 *   GPT-2, SmolLM, Llama-3 and Qwen2: `tokenizer.ggml.pre`), each word's
 *   bytes are shown as GPT-2's printable code points, and merges are applied
 *   lowest rank first (leftmost first among equal ranks), as HF tokenizers.
 * - SentencePiece (`tokenizer.ggml.model` = "llama"): spaces become U+2581,
 *   a space is prefixed (add_space_prefix), characters are merged highest
 *   score first, and characters missing from the vocabulary fall back to the
 *   `<0xXX>` byte tokens, as llama.cpp's SPM tokenizer.
 *
 * Byte-level BPE: bytes the vocabulary has no token for are dropped (as HF), so
 * decode(encode(s)) == s only holds for text the vocabulary can spell.
 *
 * Special tokens: control tokens (type 3) are recognised in the input only
 * when the caller asks (parse_special), user-defined tokens (type 4) always,
 * as llama.cpp does (they are ordinary vocabulary the model saw as text).
 * Leftmost, then longest, match wins; the text between them is tokenized
 * normally.
 *
 * The core is built from plain arrays (struct tokenizer_vocab) so it can be
 * tested without a model file; tokenizer_load() is the one place that reads
 * GGUF metadata. A tokenizer is immutable after creation: any number of
 * threads may encode/decode with it at once. */
#ifndef HEARTH_TOKENIZER_H
#define HEARTH_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

enum tokenizer_model { TOKENIZER_MODEL_BPE = 0, TOKENIZER_MODEL_SPM = 1 };

/* Pre-tokenizers of byte-level BPE (the `tokenizer.ggml.pre` values). */
enum tokenizer_pre {
    TOKENIZER_PRE_GPT2 = 0, /* "gpt2", "default" and anything unknown */
    TOKENIZER_PRE_SMOLLM,   /* "smollm": every digit alone, then GPT-2 */
    TOKENIZER_PRE_LLAMA3,   /* "llama-bpe": Llama-3, digits in runs of <= 3 */
    TOKENIZER_PRE_QWEN2     /* "qwen2": the Llama-3 pattern, digits alone */
};

/* GGUF token types (`tokenizer.ggml.token_type`). */
enum tokenizer_token_type {
    TOKEN_TYPE_NORMAL = 1,
    TOKEN_TYPE_UNKNOWN = 2,
    TOKEN_TYPE_CONTROL = 3,
    TOKEN_TYPE_USER_DEFINED = 4,
    TOKEN_TYPE_UNUSED = 5,
    TOKEN_TYPE_BYTE = 6
};

/* Everything a tokenizer is made of, as plain arrays (all copied by
 * tokenizer_create; the caller keeps ownership). Token strings need not be
 * NUL-terminated: lengths are given. Ids are indices into `tokens`. */
struct tokenizer_vocab {
    enum tokenizer_model model;
    enum tokenizer_pre pre;
    int32_t n_tokens;
    const char *const *tokens;  /* [n_tokens] token texts (byte-level or SPM form) */
    const size_t *token_lens;   /* [n_tokens] bytes; NULL: NUL-terminated strings */
    const int32_t *token_types; /* [n_tokens] enum tokenizer_token_type; NULL: all normal */
    const float *scores;        /* [n_tokens] SPM merge scores; NULL: all 0 */
    size_t n_merges;            /* BPE only */
    const char *const *merges;  /* [n_merges] "left right", rank = index */
    const size_t *merge_lens;   /* [n_merges] bytes; NULL: NUL-terminated */
    int32_t bos_id, eos_id, eot_id, unk_id; /* -1: none */
    int add_bos;          /* callers should prepend bos_id to a prompt */
    int add_space_prefix; /* SPM: prefix a space to the text (and after each special token) */
};

struct tokenizer;

/* Builds a tokenizer; NULL and a message in err on bad input (an id out of
 * range, a merge without a space, out of memory). Merges whose halves or
 * result are not tokens are skipped (they could never apply). */
struct tokenizer *tokenizer_create(const struct tokenizer_vocab *v, char *err, size_t errlen);

/* Reads `tokenizer.ggml.*` from an open GGUF file (the only GGUF-aware
 * function here). An unknown `pre` value is warned about and GPT-2 used. */
struct gguf_ctx;
struct tokenizer *tokenizer_load(const struct gguf_ctx *g, char *err, size_t errlen);
/* As tokenizer_load, with the pre-tokenizer named by `pre` ("smollm",
 * "llama-bpe", ...) instead of the file's; NULL keeps the file's. For files
 * whose `tokenizer.ggml.pre` is missing or wrong, and for tests. */
struct tokenizer *tokenizer_load_pre(const struct gguf_ctx *g, const char *pre, char *err, size_t errlen);

void tokenizer_free(struct tokenizer *tok);

/* Encodes text[0..len) (any bytes; invalid UTF-8 is kept byte-exact by
 * byte-level BPE and byte fallback). No BOS/EOS is added. On success *ids
 * (malloc'd, caller frees; non-NULL even when *n_ids is 0) holds *n_ids ids.
 * Returns 0, or -1 when out of memory. */
int tokenizer_encode(const struct tokenizer *tok, const char *text, size_t len, int parse_special,
                     int32_t **ids, size_t *n_ids);

int32_t tokenizer_n_vocab(const struct tokenizer *tok);
int32_t tokenizer_bos(const struct tokenizer *tok); /* -1: none */
int32_t tokenizer_eos(const struct tokenizer *tok); /* -1: none */
int tokenizer_add_bos(const struct tokenizer *tok);
enum tokenizer_model tokenizer_model_kind(const struct tokenizer *tok);
enum tokenizer_pre tokenizer_pre_kind(const struct tokenizer *tok);
/* 1 if generation should stop at id: eos, eot, or a control token named
 * <|im_end|>, <|eot_id|>, <|endoftext|>, <|end|>, <|eom_id|>, <end_of_turn>. */
int tokenizer_is_eog(const struct tokenizer *tok, int32_t id);
/* The stored (NUL-terminated) text of a token, as in the vocabulary; "" for
 * an id out of range. */
const char *tokenizer_token_text(const struct tokenizer *tok, int32_t id);
int tokenizer_token_type(const struct tokenizer *tok, int32_t id);
/* Id of the token whose text is exactly s[0..len); -1 if none. */
int32_t tokenizer_find(const struct tokenizer *tok, const char *s, size_t len);

/* The raw bytes a token stands for: byte-level BPE decoded to bytes, SPM
 * U+2581 to space and <0xXX> to the byte. Control tokens give their text
 * only when `special` is set (else nothing). Writes at most cap bytes (no
 * NUL) and returns the full length, so a return > cap means "buffer too
 * small"; -1 for an id out of range. */
int tokenizer_token_to_piece(const struct tokenizer *tok, int32_t id, int special, char *buf, size_t cap);

/* Concatenated pieces of ids[0..n) (special tokens included as text; for
 * SPM with add_space_prefix the leading space the encoder added is removed),
 * NUL-terminated, raw bytes (may be invalid UTF-8). *out is malloc'd; caller
 * frees. Returns 0, or -1 on an id out of range or out of memory. */
int tokenizer_decode(const struct tokenizer *tok, const int32_t *ids, size_t n, char **out, size_t *out_len);

/* Streaming decoder for printing generated text: ids go in one at a time,
 * only complete UTF-8 comes out. A valid but unfinished sequence is held
 * back until the next id completes it; bytes that can never form a
 * character come out as U+FFFD. */
struct tok_decoder;
/* special: print control tokens' text. NULL when out of memory. */
struct tok_decoder *tok_decoder_create(const struct tokenizer *tok, int special);
void tok_decoder_free(struct tok_decoder *d);
/* Feeds one id. *out and *n get the text now complete (valid until the next
 * call on d). Returns 0, or -1 on a bad id or out of memory. */
int tok_decoder_push(struct tok_decoder *d, int32_t id, const char **out, size_t *n);
/* End of stream: whatever is held back comes out (as U+FFFD). */
int tok_decoder_flush(struct tok_decoder *d, const char **out, size_t *n);

#endif
