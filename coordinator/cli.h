/* cli: the options shared by hearth's commands, parsed one way for all.
 *
 * Flags follow llama.cpp where it has one (-m -p -f -n -t -c -s --temp
 * --top-k --top-p). Each command says which options it accepts; any other
 * option is an error, so a typo never silently changes a run. */
#ifndef HEARTH_CLI_H
#define HEARTH_CLI_H

#include "sampler.h"
#include "engine.h"

enum cli_opt_set {
    CLI_MODEL = 1 << 0,   /* -m */
    CLI_PROMPT = 1 << 1,  /* -p TEXT, -f FILE */
    CLI_GEN = 1 << 2,     /* -n, --chat, --single-process, sampling */
    CLI_RUNTIME = 1 << 3, /* -c -t -b -np */
    CLI_BENCH = 1 << 4,   /* -p N, -n N, -r, --json */
    CLI_PPL = 1 << 5,     /* -f FILE, --chunks */
    CLI_PROFILE = 1 << 6, /* -f FILE, -o SIDECAR, --sparsity, --tokens, --svg, --in-sparsity, --in-alloc */
    CLI_PLAN = 1 << 7,    /* --sidecar, --gpu-budget, --min-hot, --max-rank, --epochs, --retrain, --predictors */
    CLI_SERVE = 1 << 8,   /* --host, --port, --api-key, --api-key-file, --alias, --queue, --timeout */
};

#define CLI_MAX_DEPTHS 8

struct cli_opts {
    struct engine_opts eng;
    struct sampler_params sp;
    const char *prompt;      /* -p */
    const char *prompt_file; /* -f */
    int n_predict;           /* -n; -1: until the context is full or EOG */
    int chat;                /* --chat */
    int bench_pp, bench_tg, bench_reps; /* bench -p -n -r */
    int bench_depths[CLI_MAX_DEPTHS];   /* bench -d D[,D...]: tokens in the cache before tg */
    int n_bench_depths;                 /* >= 1 (default one depth, 0) */
    int bench_depth;                    /* the largest of them */
    int bench_parallel[CLI_MAX_DEPTHS]; /* bench --parallel N[,N...]: concurrent sequences */
    int n_bench_parallel;               /* 0: not given (one sequence, the single-sequence benchmark) */
    int json;
    int max_chunks;          /* perplexity --chunks */
    const char *output;      /* profile -o */
    const char *svg;         /* profile --svg */
    float sparsity;          /* profile --sparsity */
    int profile_tokens;      /* profile --tokens */
    float in_sparsity;       /* profile --in-sparsity (0: none) */
    int in_alloc;            /* profile --in-alloc: enum insparse_alloc */
    int in_always;           /* profile --in-kernels always (1) or auto (0) */
    int64_t gpu_budget;      /* plan --gpu-budget, bytes; -1 unset */
    int min_hot;             /* plan --min-hot */
    int max_rank;            /* plan --max-rank */
    int epochs;              /* plan --epochs */
    int retrain;             /* plan --retrain */
    int predictors;          /* plan --predictors: -1 auto, 0 off, 1 on */
    const char *serve_host;  /* serve --host (default 127.0.0.1) */
    int serve_port;          /* serve --port (default 8080) */
    const char *api_key;     /* serve --api-key */
    const char *api_key_file;/* serve --api-key-file */
    const char *alias;       /* serve --alias */
    int serve_queue;         /* serve --queue: requests waiting for a sequence slot (default 64) */
    int serve_timeout;       /* serve --timeout: seconds per request (default 600) */
    int verbose;
};

/* Parses argv[first..argc) for a command that accepts `allowed`. Returns 0,
 * or -1 after printing a one-line reason to stderr. */
int cli_parse(struct cli_opts *o, int argc, char **argv, int first, unsigned allowed, const char *cmd);

/* "40MiB", "1.5G", "512k", "123456" -> bytes (k/M/G/T are powers of 1024,
 * with or without "iB"/"B"). 0 ok, -1 with a message on stderr. */
int cli_parse_size(const char *flag, const char *s, int64_t *out);

/* Reads a whole file into a NUL-terminated buffer (caller frees). */
char *cli_read_file(const char *path, size_t *len, char *err, size_t errlen);

/* Reads -f and opens the engine of o->eng: the text (caller frees) or NULL
 * with err filled (nothing left open). For perplexity and profile. */
char *cli_open_with_text(const struct cli_opts *o, struct engine *s, size_t *len, char *err, size_t errlen);

/* The text to tokenize: -p, or the contents of -f. Caller frees. */
char *cli_prompt_text(const struct cli_opts *o, size_t *len, char *err, size_t errlen);

int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_batch(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_profile(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_fetch(int argc, char **argv);
int cmd_topo(int argc, char **argv);
int cmd_workers(int argc, char **argv);
int cmd_clean(int argc, char **argv);
int cmd_serve(int argc, char **argv);
extern const char cli_serve_help[]; /* serve.c */

/* Prints "hearth: <msg>" to stderr and returns 1 (the exit status). */
int cli_fail(const char *msg);

#endif
