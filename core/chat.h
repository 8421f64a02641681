/* chat: renders a conversation into the prompt text a chat model expects.
 *
 * GGUF files carry the model's Jinja chat template (`tokenizer.chat_template`).
 * hearth has no Jinja engine: it recognises the template family by marker
 * strings and renders that family in C, byte-exact with what Jinja2 renders
 * from the original templates (tests/test_tokenizer_hf.py checks this):
 *   - ChatML (`<|im_start|>`): "<|im_start|>ROLE\nCONTENT<|im_end|>\n" per
 *     message, "<|im_start|>assistant\n" as the generation prompt. When the
 *     template inserts a default system message if the first message is not a
 *     system one (SmolLM2, Qwen2.5), that literal message is taken from the
 *     template and inserted the same way.
 *   - Llama-2 (`[INST]`): "<s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nUSER [/INST] ANSWER </s>"
 *     with contents stripped; roles must alternate user/assistant after an
 *     optional system message; there is no generation prompt.
 *   - Llama-3 (`<|start_header_id|>`): "<|begin_of_text|>" then
 *     "<|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>" per
 *     message, contents stripped.
 * Absent or unrecognised templates fall back to ChatML (a warning for the
 * latter). The output contains special-token text (and, for Llama-2/3, the
 * BOS token's text): tokenize it with parse_special on, and do not add a
 * second BOS when the text already starts with one. */
#ifndef HEARTH_CHAT_H
#define HEARTH_CHAT_H

#include <stddef.h>

struct chat_msg {
    const char *role;    /* "system", "user", "assistant" (any string for ChatML) */
    const char *content; /* NUL-terminated UTF-8 */
};

enum chat_style { CHAT_STYLE_CHATML = 0, CHAT_STYLE_LLAMA2, CHAT_STYLE_LLAMA3 };

/* The family of a template (NULL: ChatML). *known gets 0 when the template
 * was not recognised and ChatML is a guess. */
enum chat_style chat_detect(const char *gguf_template, int *known);

/* Renders msgs[0..n) in the template's family; add_assistant_prompt appends
 * the header that makes the model answer (where the family has one). *out is
 * malloc'd and NUL-terminated; caller frees. Returns 0, or -1 with err
 * filled (roles that break the family's rules, out of memory). */
int chat_format(const char *gguf_template, const struct chat_msg *msgs, size_t n, int add_assistant_prompt,
                char **out, char *err, size_t errlen);

#endif
