/* chat: see chat.h. Each family is a few lines of string building that
 * mirror its Jinja template statement by statement. */
#include "chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "unicode.h"

struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_str(struct sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* Appends s with leading and trailing white space removed, as Python's
 * str.strip() and Jinja's |trim (str.isspace() code points). */
static void sb_strip(struct sbuf *b, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), first = n, end = 0;
    for (size_t i = 0; i < n;) {
        size_t l;
        uint32_t cp = unicode_decode(u + i, n - i, &l);
        if (cp == UNICODE_INVALID || !unicode_is_py_space(cp)) {
            if (first == n) first = i;
            end = i + l;
        }
        i += l;
    }
    if (first < end) sb_add(b, s + first, end - first);
}

/* The default system message of a ChatML template that inserts one when the
 * conversation does not start with a system message: the literal between
 * "<|im_start|>system\n" and "<|im_end|>". NULL when there is none. */
static const char *chatml_default_system(const char *t, size_t *len)
{
    if (!t || !(strstr(t, "messages[0]['role'] != 'system'") || strstr(t, "messages[0][\"role\"] != \"system\"")))
        return NULL;
    const char *open = "<|im_start|>system\n";
    const char *a = strstr(t, open);
    if (!a) return NULL;
    a += strlen(open);
    const char *z = strstr(a, "<|im_end|>");
    if (!z) return NULL;
    for (const char *p = a; p < z; p++)
        if (*p == '{' || *p == '}' || *p == '\'' || *p == '"') return NULL; /* template code, not a literal */
    *len = (size_t)(z - a);
    return a;
}

enum chat_style chat_detect(const char *t, int *known)
{
    int k = 1;
    enum chat_style s = CHAT_STYLE_CHATML;
    if (!t || !*t) k = 1;
    else if (strstr(t, "<|start_header_id|>")) s = CHAT_STYLE_LLAMA3;
    else if (strstr(t, "<|im_start|>")) s = CHAT_STYLE_CHATML;
    else if (strstr(t, "[INST]")) s = CHAT_STYLE_LLAMA2;
    else k = 0;
    if (known) *known = k;
    return s;
}

static int format_llama2(struct sbuf *b, const struct chat_msg *msgs, size_t n, char *err, size_t errlen)
{
    const char *sys = NULL;
    if (n == 0) {
        snprintf(err, errlen, "chat: the Llama-2 template needs at least one message");
        return -1;
    }
    if (n > 0 && strcmp(msgs[0].role, "system") == 0) {
        sys = msgs[0].content;
        msgs++;
        n--;
    }
    for (size_t i = 0; i < n; i++) {
        int user = strcmp(msgs[i].role, "user") == 0;
        if (user != (i % 2 == 0)) {
            snprintf(err, errlen, "chat: Llama-2 template: message %zu has role \"%s\"; roles must alternate "
                     "user/assistant/user/... after an optional system message", i + (sys != NULL), msgs[i].role);
            return -1;
        }
        struct sbuf c = {0};
        if (i == 0 && sys) {
            sb_str(&c, "<<SYS>>\n");
            sb_str(&c, sys);
            sb_str(&c, "\n<</SYS>>\n\n");
        }
        sb_str(&c, msgs[i].content);
        if (c.oom) {
            free(c.p);
            snprintf(err, errlen, "chat: out of memory");
            return -1;
        }
        if (user) {
            sb_str(b, "<s>[INST] ");
            sb_strip(b, c.p);
            sb_str(b, " [/INST]");
        } else if (strcmp(msgs[i].role, "assistant") == 0) {
            sb_str(b, " ");
            sb_strip(b, c.p);
            sb_str(b, " </s>");
        }
        free(c.p);
    }
    return 0;
}

int chat_format(const char *t, const struct chat_msg *msgs, size_t n, int add_assistant_prompt, char **out,
                char *err, size_t errlen)
{
    int known;
    enum chat_style style = chat_detect(t, &known);
    struct sbuf b = {0};
    *out = NULL;
    if (!known) log_warn("chat: unrecognised chat template; using ChatML");
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content) {
            snprintf(err, errlen, "chat: message %zu has no %s", i, msgs[i].role ? "content" : "role");
            return -1;
        }
    sb_add(&b, "", 0); /* an empty conversation still gives "" */
    switch (style) {
    case CHAT_STYLE_LLAMA2:
        if (format_llama2(&b, msgs, n, err, errlen) != 0) {
            free(b.p);
            return -1;
        }
        break;
    case CHAT_STYLE_LLAMA3:
        for (size_t i = 0; i < n; i++) {
            if (i == 0) sb_str(&b, "<|begin_of_text|>");
            sb_str(&b, "<|start_header_id|>");
            sb_str(&b, msgs[i].role);
            sb_str(&b, "<|end_header_id|>\n\n");
            sb_strip(&b, msgs[i].content);
            sb_str(&b, "<|eot_id|>");
        }
        if (add_assistant_prompt) sb_str(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    default: {
        size_t dl = 0;
        const char *def = chatml_default_system(t, &dl);
        for (size_t i = 0; i < n; i++) {
            if (i == 0 && def && strcmp(msgs[0].role, "system") != 0) {
                sb_str(&b, "<|im_start|>system\n");
                sb_add(&b, def, dl);
                sb_str(&b, "<|im_end|>\n");
            }
            sb_str(&b, "<|im_start|>");
            sb_str(&b, msgs[i].role);
            sb_str(&b, "\n");
            sb_str(&b, msgs[i].content);
            sb_str(&b, "<|im_end|>\n");
        }
        if (add_assistant_prompt) sb_str(&b, "<|im_start|>assistant\n");
    }
    }
    if (b.oom) {
        free(b.p);
        snprintf(err, errlen, "chat: out of memory");
        return -1;
    }
    *out = b.p;
    return 0;
}
