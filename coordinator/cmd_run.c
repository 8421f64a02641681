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
        /* the engine reuses the KV cache of the conversation so far: only the new turn is evaluated */
        int room = s.n_ctx - n_ids;
        if (room <= 0) {
            free(text);
            free(ids);
            rc = cli_fail("the conversation no longer fits the context (raise -c)");
            break;
        }
        int n_predict = o.n_predict < 0 || o.n_predict > room ? room : o.n_predict;
        int grc = engine_generate(&s, ids, n_ids, n_predict, smp, stdout, &gen, &n_gen, NULL, err, sizeof err);
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

/* ---- hearth batch ---------------------------------------------------------------------- */

/* One prompt of `hearth batch`. */
struct batch_job {
    int32_t *prompt;
    int n_prompt;
    struct sampler *smp;
    struct tok_decoder *dec;
    char *text; /* the generated text so far */
    size_t len, cap;
    int seq;    /* -1: not started or finished */
    int n_gen, n_cached, done;
};

static int job_append(struct batch_job *j, const char *piece, size_t n) {
    if (j->len + n + 1 > j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 256;
        while (cap < j->len + n + 1) cap *= 2;
        char *t = realloc(j->text, cap);
        if (!t) return -1;
        j->text = t;
        j->cap = cap;
    }
    memcpy(j->text + j->len, piece, n);
    j->len += n;
    j->text[j->len] = '\0';
    return 0;
}

/* The prompts of -f, one per line; "\n" in a line stands for a newline. */
static int split_prompts(char *text, char ***lines, int *n, char *err, size_t errlen) {
    int cap = 0;
    *lines = NULL;
    *n = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char *w = l;
        for (const char *r = l; *r; r++) {
            if (r[0] == '\\' && r[1] == 'n') {
                *w++ = '\n';
                r++;
            } else {
                *w++ = *r;
            }
        }
        *w = '\0';
        if (!*l) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **g = realloc(*lines, (size_t)cap * sizeof *g);
            if (!g) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            *lines = g;
        }
        (*lines)[(*n)++] = l;
    }
    if (*n == 0) {
        snprintf(err, errlen, "the prompt file has no prompt (one per line)");
        return -1;
    }
    return 0;
}

/* `hearth batch`: every line of -f is a prompt; up to -np of them generate
 * together (continuous batching: a finished sequence's slot takes the next
 * prompt at once). Each result is printed when it is complete, as
 * "--- [i] " and its header, then its text; sequence i samples with seed
 * -s + i, so a run is reproducible and each result is the one its prompt
 * gives alone. */
int cmd_batch(int argc, char **argv) {
    struct cli_opts o;
    if (cli_parse(&o, argc, argv, 2, CLI_MODEL | CLI_PROMPT | CLI_GEN | CLI_RUNTIME, "batch") != 0) return 1;
    if (!o.prompt_file) return cli_fail("batch needs -f FILE: one prompt per line");
    if (o.eng.n_seq == 0) o.eng.n_seq = 4;
    char err[1024];
    size_t len = 0;
    char *text = cli_prompt_text(&o, &len, err, sizeof err);
    if (!text) return cli_fail(err);
    char **lines = NULL;
    int n_jobs = 0, rc = 1;
    struct engine s;
    memset(&s, 0, sizeof s);
    struct batch_job *jobs = NULL;
    const char *tmpl = NULL;
    if (split_prompts(text, &lines, &n_jobs, err, sizeof err) != 0) goto out;
    if (engine_open(&s, &o.eng, err, sizeof err) != 0) goto out;
    if (o.chat && gguf_find_key(s.model.gguf, "tokenizer.chat_template") >= 0 &&
        gguf_get_str(s.model.gguf, "tokenizer.chat_template", &tmpl, err, sizeof err) != 0)
        goto out;
    jobs = calloc((size_t)n_jobs, sizeof *jobs);
    if (!jobs) {
        snprintf(err, sizeof err, "out of memory");
        goto out;
    }
    for (int i = 0; i < n_jobs; i++) {
        struct batch_job *j = &jobs[i];
        j->seq = -1;
        char *formatted = NULL;
        if (o.chat) {
            struct chat_msg msg = {"user", lines[i]};
            if (chat_format(tmpl, &msg, 1, 1, &formatted, err, sizeof err) != 0) goto out;
        }
        const char *p = formatted ? formatted : lines[i];
        int trc = tokenize_prompt(&s, p, strlen(p), &j->prompt, &j->n_prompt, err, sizeof err);
        free(formatted);
        if (trc != 0) goto out;
        if (j->n_prompt == 0 || j->n_prompt >= s.n_ctx) {
            snprintf(err, sizeof err, "prompt %d (line %d) has %d tokens: it needs 1 to %d (raise -c)", i, i + 1,
                     j->n_prompt, s.n_ctx - 1);
            goto out;
        }
        struct sampler_params sp = o.sp;
        if (sp.seed != SAMPLER_SEED_RANDOM) sp.seed += (uint64_t)i;
        if (!(j->smp = sampler_create(&sp, s.model.cfg.n_vocab, err, sizeof err)) ||
            !(j->dec = tok_decoder_create(s.tok, 0))) {
            if (j->smp) snprintf(err, sizeof err, "out of memory");
            goto out;
        }
        for (int t = 0; t < j->n_prompt; t++) sampler_accept(j->smp, j->prompt[t]);
    }
    int next = 0, finished = 0;
    const double t0 = engine_now();
    long total_gen = 0;
    while (finished < n_jobs) {
        while (next < n_jobs && engine_n_open(&s) < s.n_seq) {
            struct batch_job *j = &jobs[next];
            if ((j->seq = engine_seq_open(&s, j->prompt, j->n_prompt, &j->n_cached, err, sizeof err)) < 0) goto out;
            log_info("prompt %d: sequence %d, %d tokens (%d cached)", next, j->seq, j->n_prompt, j->n_cached);
            next++;
        }
        if (engine_step(&s, err, sizeof err) < 0) goto out;
        for (int i = 0; i < n_jobs; i++) {
            struct batch_job *j = &jobs[i];
            if (j->seq < 0 || !engine_seq_logits(&s, j->seq)) continue;
            const int32_t tok = engine_seq_sample(&s, j->seq, j->smp);
            const char *piece;
            size_t plen;
            int end = tok < 0 || tokenizer_is_eog(s.tok, tok);
            if (!end) {
                j->n_gen++;
                total_gen++;
                if (tok_decoder_push(j->dec, tok, &piece, &plen) != 0 || job_append(j, piece, plen) != 0) {
                    snprintf(err, sizeof err, "cannot decode token %d", tok);
                    goto out;
                }
            }
            const int room = s.n_ctx - engine_seq_n_past(&s, j->seq) - 1;
            end = end || (o.n_predict >= 0 && j->n_gen >= o.n_predict) || room <= 0;
            if (!end) {
                if (engine_seq_submit(&s, j->seq, &tok, 1, err, sizeof err) != 0) goto out;
                continue;
            }
            if (tok_decoder_flush(j->dec, &piece, &plen) == 0 && job_append(j, piece, plen) != 0) {
                snprintf(err, sizeof err, "out of memory");
                goto out;
            }
            engine_seq_close(&s, j->seq);
            j->seq = -1;
            j->done = 1;
            finished++;
            printf("--- [%d] %d prompt tokens (%d cached), %d generated\n%s\n", i, j->n_prompt, j->n_cached, j->n_gen,
                   j->text ? j->text : "");
            fflush(stdout);
        }
    }
    const double dt = engine_now() - t0;
    log_info("%d prompts, %ld tokens generated in %.2f s (%.1f tokens/s over all sequences), %d at once", n_jobs,
             total_gen, dt, total_gen / (dt > 0 ? dt : 1e-9), s.n_seq);
    rc = 0;
out:
    if (rc) cli_fail(err);
    for (int i = 0; jobs && i < n_jobs; i++) {
        free(jobs[i].prompt);
        sampler_free(jobs[i].smp);
        tok_decoder_free(jobs[i].dec);
        free(jobs[i].text);
    }
    free(jobs);
    free(lines);
    free(text);
    if (s.seqs || s.tok) engine_close(&s);
    return rc;
}
