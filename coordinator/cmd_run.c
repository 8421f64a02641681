/* cmd_run: `hearth run` (one generation) and `hearth chat` (a conversation). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat.h"
#include "cli.h"
#include "log.h"

/* Tokenizes text (special tokens parsed), with BOS first when the model wants it. */
static int tokenize_prompt(const struct engine *s, const char *text, size_t len, int32_t **ids, int *n, char *err,
                           size_t errlen) {
    int32_t *body = NULL;
    size_t n_body = 0;
    if (tokenizer_encode(s->tok, text, len, 1, &body, &n_body) != 0) {
        snprintf(err, errlen, "cannot tokenize the prompt");
        return -1;
    }
    /* chat templates may already start with the BOS text: never add a second */
    int bos = tokenizer_add_bos(s->tok) && !(n_body > 0 && body[0] == tokenizer_bos(s->tok));
    int32_t *all = malloc((n_body + 1) * sizeof *all);
    if (!all) {
        free(body);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (bos) all[0] = tokenizer_bos(s->tok);
    if (n_body) memcpy(all + bos, body, n_body * sizeof *body);
    free(body);
    *ids = all;
    *n = (int)n_body + bos;
    return 0;
}

int cmd_run(int argc, char **argv) {
    struct cli_opts o;
    if (cli_parse(&o, argc, argv, 2, CLI_MODEL | CLI_PROMPT | CLI_GEN | CLI_RUNTIME, "run") != 0) return 1;
    char err[1024];
    size_t len = 0;
    char *text = cli_prompt_text(&o, &len, err, sizeof err);
    if (!text) return cli_fail(err);

    struct engine s;
    if (engine_open(&s, &o.eng, err, sizeof err) != 0) {
        free(text);
        return cli_fail(err);
    }
    if (o.chat) {
        struct chat_msg msg = {"user", text};
        char *formatted = NULL;
        const char *tmpl = NULL;
        if (gguf_find_key(s.model.gguf, "tokenizer.chat_template") >= 0)
            gguf_get_str(s.model.gguf, "tokenizer.chat_template", &tmpl, err, sizeof err);
        if (chat_format(tmpl, &msg, 1, 1, &formatted, err, sizeof err) != 0) {
            free(text);
            engine_close(&s);
            return cli_fail(err);
        }
        free(text);
        text = formatted;
        len = strlen(text);
    }
    int32_t *prompt = NULL;
    int n_prompt = 0;
    int rc = 1;
    struct sampler *smp = NULL;
    if (tokenize_prompt(&s, text, len, &prompt, &n_prompt, err, sizeof err) != 0) goto out;
    if (n_prompt == 0) {
        snprintf(err, sizeof err, "the prompt is empty and the model adds no BOS token: nothing to continue from");
        goto out;
    }
    int room = s.n_ctx - n_prompt;
    if (room < 0) {
        snprintf(err, sizeof err, "the prompt has %d tokens, more than the context of %d (raise -c)", n_prompt,
                 s.n_ctx);
        goto out;
    }
    int n_predict = o.n_predict < 0 || o.n_predict > room ? room : o.n_predict;
    smp = sampler_create(&o.sp, s.model.cfg.n_vocab, err, sizeof err);
    if (!smp) goto out;
    struct gen_stats st;
    if (engine_generate(&s, prompt, n_prompt, n_predict, smp, stdout, NULL, NULL, &st, err, sizeof err) != 0) {
        fputc('\n', stdout);
        goto out;
    }
    fputc('\n', stdout);
    fflush(stdout);
    log_info("prompt: %d tokens in %.3f s (%.1f tokens/s); generation: %d tokens in %.3f s (%.1f tokens/s)",
             st.n_prompt, st.prompt_s, st.n_prompt / (st.prompt_s > 0 ? st.prompt_s : 1e-9), st.n_gen, st.gen_s,
             st.n_gen > 1 ? (st.n_gen - 1) / (st.gen_s > 0 ? st.gen_s : 1e-9) : 0.0);
    rc = 0;
out:
    if (rc) cli_fail(err);
    sampler_free(smp);
    free(prompt);
    free(text);
    engine_close(&s);
    return rc;
}

/* Appends a message (copies role and content) to a growing array. */
static int push_msg(struct chat_msg **msgs, size_t *n, const char *role, const char *content) {
    struct chat_msg *grown = realloc(*msgs, (*n + 1) * sizeof **msgs);
    if (!grown) return -1;
    *msgs = grown;
    char *r = strdup(role), *c = strdup(content);
    if (!r || !c) {
        free(r);
        free(c);
        return -1;
    }
    (*msgs)[*n].role = r;
    (*msgs)[*n].content = c;
    (*n)++;
    return 0;
}

int cmd_chat(int argc, char **argv) {
    struct cli_opts o;
    if (cli_parse(&o, argc, argv, 2, CLI_MODEL | CLI_GEN | CLI_RUNTIME, "chat") != 0) return 1;
    char err[1024];
    struct engine s;
    if (engine_open(&s, &o.eng, err, sizeof err) != 0) return cli_fail(err);
    struct sampler *smp = sampler_create(&o.sp, s.model.cfg.n_vocab, err, sizeof err);
    if (!smp) {
        engine_close(&s);
        return cli_fail(err);
    }
    const char *tmpl = NULL;
    if (gguf_find_key(s.model.gguf, "tokenizer.chat_template") >= 0)
        gguf_get_str(s.model.gguf, "tokenizer.chat_template", &tmpl, err, sizeof err);

    struct chat_msg *msgs = NULL;
    size_t n_msgs = 0;
    int tty = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    if (tty) fprintf(stderr, "hearth chat: type a message, /exit or Ctrl-D to leave\n");
    for (;;) {
        if (tty) fprintf(stderr, "> ");
        ssize_t got = getline(&line, &cap, stdin);
        if (got < 0) break;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        if (got == 0) continue;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
        if (push_msg(&msgs, &n_msgs, "user", line) != 0) {
            rc = cli_fail("out of memory");
            break;
        }
        char *text = NULL;
        int32_t *ids = NULL, *gen = NULL;
        int n_ids = 0, n_gen = 0;
        if (chat_format(tmpl, msgs, n_msgs, 1, &text, err, sizeof err) != 0 ||
            tokenize_prompt(&s, text, strlen(text), &ids, &n_ids, err, sizeof err) != 0) {
            free(text);
            rc = cli_fail(err);
            break;
        }
        /* Reuse the KV cache for the conversation so far: only the new turn is evaluated. */
        int common = 0;
        while (common < s.seqs[0].n_past && common < n_ids - 1 && s.seqs[0].past[common] == ids[common]) common++;
        engine_truncate(&s, common);
        int room = s.n_ctx - n_ids;
        if (room <= 0) {
            free(text);
            free(ids);
            rc = cli_fail("the conversation no longer fits the context (raise -c)");
            break;
        }
        int n_predict = o.n_predict < 0 || o.n_predict > room ? room : o.n_predict;
        int grc = engine_generate(&s, ids + common, n_ids - common, n_predict, smp, stdout, &gen, &n_gen, NULL, err,
                                   sizeof err);
        fputc('\n', stdout);
        fflush(stdout);
        char *reply = NULL;
        size_t reply_len = 0;
        int n_reply = n_gen > 0 && tokenizer_is_eog(s.tok, gen[n_gen - 1]) ? n_gen - 1 : n_gen;
        if (grc == 0 && tokenizer_decode(s.tok, gen, (size_t)n_reply, &reply, &reply_len) == 0 &&
            push_msg(&msgs, &n_msgs, "assistant", reply) == 0) {
            free(reply);
            free(text);
            free(ids);
            free(gen);
            continue;
        }
        free(reply);
        free(text);
        free(ids);
        free(gen);
        rc = cli_fail(grc ? err : "out of memory");
        break;
    }
    free(line);
    for (size_t i = 0; i < n_msgs; i++) {
        free((char *)msgs[i].role);
        free((char *)msgs[i].content);
    }
    free(msgs);
    sampler_free(smp);
    engine_close(&s);
    return rc;
}
