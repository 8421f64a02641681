/* cli: see cli.h. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int cli_fail(const char *msg) {
    fprintf(stderr, "hearth: %s\n", msg);
    return 1;
}

static int parse_int(const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "hearth: %s expects an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* -d D[,D...]: up to CLI_MAX_DEPTHS depths in [0, 2^20]; bench_depth is the largest. */
/* "512" or "512,2048": up to CLI_MAX_DEPTHS integers in [lo, hi]. */
static int parse_list(const char *flag, const char *s, int lo, int hi, int *out, int *n, const char *what) {
    char buf[256];
    if (strlen(s) >= sizeof buf) {
        fprintf(stderr, "hearth: %s: list too long\n", flag);
        return -1;
    }
    strcpy(buf, s);
    *n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == CLI_MAX_DEPTHS) {
            fprintf(stderr, "hearth: %s takes at most %d %s, got '%s'\n", flag, CLI_MAX_DEPTHS, what, s);
            return -1;
        }
        if (parse_int(flag, t, lo, hi, &out[*n])) return -1;
        ++*n;
    }
    if (*n == 0 || s[0] == ',' || s[strlen(s) - 1] == ',' || strstr(s, ",,")) {
        fprintf(stderr, "hearth: %s expects %s like %d or %d,%d, got '%s'\n", flag, what, hi < 512 ? 1 : 512,
                hi < 512 ? 1 : 512, hi < 512 ? 4 : 2048, s);
        return -1;
    }
    return 0;
}

static int parse_depths(const char *flag, const char *s, struct cli_opts *o) {
    if (parse_list(flag, s, 0, 1 << 20, o->bench_depths, &o->n_bench_depths, "depths") != 0) return -1;
    o->bench_depth = 0;
    for (int i = 0; i < o->n_bench_depths; i++)
        if (o->bench_depths[i] > o->bench_depth) o->bench_depth = o->bench_depths[i];
    return 0;
}

static int parse_float(const char *flag, const char *s, float lo, float hi, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "hearth: %s expects a number in [%g, %g], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_size(const char *flag, const char *s, int64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double mul = 1;
    if (!errno && end != s) {
        switch (*end) {
        case 'k': case 'K': mul = 1024.0, end++; break;
        case 'm': case 'M': mul = 1024.0 * 1024, end++; break;
        case 'g': case 'G': mul = 1024.0 * 1024 * 1024, end++; break;
        case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024, end++; break;
        default: break;
        }
        if (mul > 1 && *end == 'i') end++;
        if (*end == 'B' || *end == 'b') end++;
    }
    if (errno || end == s || *end || !(v >= 0) || v * mul > 9.0e18) {
        fprintf(stderr, "hearth: %s expects a size such as 512M, 1.5GiB or a byte count, got '%s'\n", flag, s);
        return -1;
    }
    *out = (int64_t)(v * mul);
    return 0;
}

int cli_parse(struct cli_opts *o, int argc, char **argv, int first, unsigned allowed, const char *cmd) {
    memset(o, 0, sizeof *o);
    engine_opts_default(&o->eng);
    sampler_params_default(&o->sp);
    o->n_predict = 128;
    o->eng.hot_fraction = -1.0f; /* the runtime chooses (runtime.c, auto_hot_fraction) */
    o->bench_pp = 512;
    o->bench_tg = 128;
    o->bench_reps = 3;
    o->n_bench_depths = 1; /* depth 0 */
    o->sparsity = 0.2f; /* +1.0% perplexity on the default model (docs/hot-cold.md) */
    o->profile_tokens = 4096;
    o->gpu_budget = -1;
    o->min_hot = 64;
    o->max_rank = 128;
    o->epochs = 0; /* the trainer's default */
    o->predictors = -1;
    o->serve_host = "127.0.0.1";
    o->serve_port = 8080;
    o->serve_queue = 64;
    o->serve_timeout = 600;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                                                                                 \
    do {                                                                                                             \
        if (!v) {                                                                                                    \
            fprintf(stderr, "hearth %s: %s needs a value\n", cmd, a);                                                \
            return -1;                                                                                               \
        }                                                                                                            \
        i++;                                                                                                         \
    } while (0)
        int seed_tmp;
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o->verbose++;
            log_set_level(o->verbose > 1 ? LOG_DEBUG : LOG_INFO);
        } else if ((allowed & CLI_MODEL) && (!strcmp(a, "-m") || !strcmp(a, "--model"))) {
            NEED_VALUE();
            o->eng.model_path = v;
        } else if ((allowed & CLI_PROMPT) && (!strcmp(a, "-p") || !strcmp(a, "--prompt"))) {
            NEED_VALUE();
            o->prompt = v;
        } else if ((allowed & (CLI_PROMPT | CLI_PPL | CLI_PROFILE)) && (!strcmp(a, "-f") || !strcmp(a, "--file"))) {
            NEED_VALUE();
            o->prompt_file = v;
        } else if ((allowed & CLI_GEN) && (!strcmp(a, "-n") || !strcmp(a, "--n-predict"))) {
            NEED_VALUE();
            if (parse_int(a, v, -1, INT_MAX, &o->n_predict)) return -1;
        } else if ((allowed & CLI_GEN) && !strcmp(a, "--chat")) {
            o->chat = 1;
        } else if ((allowed & (CLI_GEN | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--single-process")) {
            o->eng.single_process = 1;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--cpu-workers")) {
            NEED_VALUE();
            if (parse_int(a, v, 1, 256, &o->eng.n_cpu_workers)) return -1;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--pin")) {
            NEED_VALUE();
            o->eng.pin = v;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--gpu-backend")) {
            NEED_VALUE();
            if (strcmp(v, "host") != 0 && strcmp(v, "cuda") != 0) {
                fprintf(stderr, "hearth %s: --gpu-backend expects cuda or host, got '%s'\n", cmd, v);
                return -1;
            }
            o->eng.gpu_backend = v;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--hot-fraction")) {
            NEED_VALUE();
            if (parse_float(a, v, 0.0f, 1.0f, &o->eng.hot_fraction)) return -1;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--kv-budget")) {
            NEED_VALUE();
            if (strchr(v, '.') || strchr(v, 'e')) {
                if (parse_float(a, v, 1e-6f, 1.0f, &o->eng.kv.budget_frac)) return -1;
                o->eng.kv.budget = 0;
            } else if (parse_int(a, v, 1, 1 << 20, &o->eng.kv.budget)) {
                return -1;
            }
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--kv-sinks")) {
            NEED_VALUE();
            if (parse_int(a, v, 0, 1 << 20, &o->eng.kv.n_sinks)) return -1;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--kv-recent")) {
            NEED_VALUE();
            if (parse_int(a, v, 0, 1 << 20, &o->eng.kv.n_recent)) return -1;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--kv-type")) {
            NEED_VALUE();
            if (kv_type_parse(v, &o->eng.kv.type) != 0) {
                fprintf(stderr, "hearth %s: --kv-type expects f32, f16 or q8, got '%s'\n", cmd, v);
                return -1;
            }
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--kv-window")) {
            o->eng.kv.window = 1;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--kv-score")) {
            NEED_VALUE();
            if (strcmp(v, "sum") != 0 && strcmp(v, "mean") != 0) {
                fprintf(stderr, "hearth %s: --kv-score expects sum or mean, got '%s'\n", cmd, v);
                return -1;
            }
            o->eng.kv.score_mean = strcmp(v, "mean") == 0;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--kv-decay")) {
            NEED_VALUE();
            if (parse_float(a, v, 1e-6f, 1.0f, &o->eng.kv.decay)) return -1;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--kv-cold")) {
            NEED_VALUE();
            if (kv_cold_parse(v, &o->eng.kv.cold) != 0) {
                fprintf(stderr, "hearth %s: --kv-cold expects q8, q4, f32 or off, got '%s'\n", cmd, v);
                return -1;
            }
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--kv-recall")) {
            NEED_VALUE();
            if (parse_int(a, v, 1, 1 << 20, &o->eng.kv.recall)) return -1;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--kv-recall-cands")) {
            NEED_VALUE();
            if (parse_int(a, v, 1, 1 << 20, &o->eng.kv.cands)) return -1;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && !strcmp(a, "--kv-cold-max")) {
            NEED_VALUE();
            if (cli_parse_size(a, v, &o->eng.kv.cold_max) != 0) return -1;
        } else if ((allowed & CLI_GEN) && !strcmp(a, "--temp")) {
            NEED_VALUE();
            if (parse_float(a, v, 0.0f, 100.0f, &o->sp.temp)) return -1;
        } else if ((allowed & CLI_GEN) && !strcmp(a, "--top-k")) {
            NEED_VALUE();
            if (parse_int(a, v, 0, INT_MAX, &o->sp.top_k)) return -1;
        } else if ((allowed & CLI_GEN) && !strcmp(a, "--top-p")) {
            NEED_VALUE();
            if (parse_float(a, v, 0.0f, 1.0f, &o->sp.top_p)) return -1;
        } else if ((allowed & CLI_GEN) && !strcmp(a, "--min-p")) {
            NEED_VALUE();
            if (parse_float(a, v, 0.0f, 1.0f, &o->sp.min_p)) return -1;
        } else if ((allowed & CLI_GEN) && !strcmp(a, "--repeat-penalty")) {
            NEED_VALUE();
            if (parse_float(a, v, 0.0f, 100.0f, &o->sp.repeat_penalty)) return -1;
        } else if ((allowed & CLI_GEN) && !strcmp(a, "--repeat-last-n")) {
            NEED_VALUE();
            if (parse_int(a, v, 0, INT_MAX, &o->sp.repeat_last_n)) return -1;
        } else if ((allowed & CLI_GEN) && (!strcmp(a, "-s") || !strcmp(a, "--seed"))) {
            NEED_VALUE();
            if (parse_int(a, v, 0, INT_MAX, &seed_tmp)) return -1;
            o->sp.seed = (uint64_t)seed_tmp;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && (!strcmp(a, "-c") || !strcmp(a, "--ctx-size"))) {
            NEED_VALUE();
            if (parse_int(a, v, 1, 1 << 20, &o->eng.n_ctx)) return -1;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && (!strcmp(a, "-t") || !strcmp(a, "--threads"))) {
            NEED_VALUE();
            if (parse_int(a, v, 1, 1024, &o->eng.n_threads)) return -1;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL)) && (!strcmp(a, "-b") || !strcmp(a, "--batch-size"))) {
            NEED_VALUE();
            if (parse_int(a, v, 1, 1 << 16, &o->eng.max_batch)) return -1;
        } else if ((allowed & CLI_BENCH) && !strcmp(a, "-p")) {
            NEED_VALUE();
            if (parse_int(a, v, 0, 1 << 20, &o->bench_pp)) return -1;
        } else if ((allowed & CLI_BENCH) && !strcmp(a, "-n")) {
            NEED_VALUE();
            if (parse_int(a, v, 0, 1 << 20, &o->bench_tg)) return -1;
        } else if ((allowed & CLI_BENCH) && (!strcmp(a, "-d") || !strcmp(a, "--depth"))) {
            NEED_VALUE();
            if (parse_depths(a, v, o) != 0) return -1;
        } else if ((allowed & CLI_BENCH) && (!strcmp(a, "-np") || !strcmp(a, "--parallel"))) {
            NEED_VALUE();
            if (parse_list(a, v, 1, 256, o->bench_parallel, &o->n_bench_parallel, "sequence counts")) return -1;
            o->eng.n_seq = 0;
            for (int k = 0; k < o->n_bench_parallel; k++)
                if (o->bench_parallel[k] > o->eng.n_seq) o->eng.n_seq = o->bench_parallel[k];
        } else if ((allowed & CLI_RUNTIME) && (!strcmp(a, "-np") || !strcmp(a, "--parallel"))) {
            NEED_VALUE();
            if (parse_int(a, v, 1, 256, &o->eng.n_seq)) return -1;
        } else if ((allowed & CLI_BENCH) && (!strcmp(a, "-r") || !strcmp(a, "--repetitions"))) {
            NEED_VALUE();
            if (parse_int(a, v, 1, 1000, &o->bench_reps)) return -1;
        } else if ((allowed & CLI_BENCH) && !strcmp(a, "--json")) {
            o->json = 1;
        } else if ((allowed & (CLI_RUNTIME | CLI_BENCH | CLI_PPL | CLI_PLAN)) && !strcmp(a, "--sidecar")) {
            NEED_VALUE();
            o->eng.sidecar_path = v;
        } else if ((allowed & CLI_PROFILE) && (!strcmp(a, "-o") || !strcmp(a, "--output"))) {
            NEED_VALUE();
            o->output = v;
        } else if ((allowed & CLI_PROFILE) && !strcmp(a, "--svg")) {
            NEED_VALUE();
            o->svg = v;
        } else if ((allowed & CLI_PROFILE) && !strcmp(a, "--sparsity")) {
            NEED_VALUE();
            if (parse_float(a, v, 0.0f, 0.99f, &o->sparsity)) return -1;
        } else if ((allowed & CLI_PROFILE) && !strcmp(a, "--in-sparsity")) {
            NEED_VALUE();
            if (parse_float(a, v, 0.0f, 0.9f, &o->in_sparsity)) return -1;
        } else if ((allowed & CLI_PROFILE) && !strcmp(a, "--in-kernels")) {
            NEED_VALUE();
            if (!strcmp(v, "auto")) o->in_always = 0;
            else if (!strcmp(v, "always")) o->in_always = 1;
            else {
                fprintf(stderr, "hearth: --in-kernels %s: want auto or always\n", v);
                return -1;
            }
        } else if ((allowed & CLI_PROFILE) && !strcmp(a, "--in-alloc")) {
            NEED_VALUE();
            if (!strcmp(v, "uniform")) o->in_alloc = 0;
            else if (!strcmp(v, "greedy")) o->in_alloc = 1;
            else {
                fprintf(stderr, "hearth: --in-alloc %s: want uniform or greedy\n", v);
                return -1;
            }
        } else if ((allowed & CLI_PROFILE) && !strcmp(a, "--tokens")) {
            NEED_VALUE();
            if (parse_int(a, v, 16, 1 << 24, &o->profile_tokens)) return -1;
        } else if ((allowed & CLI_PLAN) && !strcmp(a, "--gpu-budget")) {
            NEED_VALUE();
            if (cli_parse_size(a, v, &o->gpu_budget)) return -1;
        } else if ((allowed & CLI_PLAN) && !strcmp(a, "--min-hot")) {
            NEED_VALUE();
            if (parse_int(a, v, 0, 1 << 24, &o->min_hot)) return -1;
        } else if ((allowed & CLI_PLAN) && !strcmp(a, "--max-rank")) {
            NEED_VALUE();
            if (parse_int(a, v, 32, 4096, &o->max_rank)) return -1;
        } else if ((allowed & CLI_PLAN) && !strcmp(a, "--epochs")) {
            NEED_VALUE();
            if (parse_int(a, v, 1, 1000, &o->epochs)) return -1;
        } else if ((allowed & CLI_PLAN) && !strcmp(a, "--retrain")) {
            o->retrain = 1;
        } else if ((allowed & CLI_PLAN) && !strcmp(a, "--predictors")) {
            NEED_VALUE();
            if (!strcmp(v, "auto")) o->predictors = -1;
            else if (!strcmp(v, "on")) o->predictors = 1;
            else if (!strcmp(v, "off")) o->predictors = 0;
            else {
                fprintf(stderr, "hearth %s: --predictors expects auto, on or off, got '%s'\n", cmd, v);
                return -1;
            }
        } else if ((allowed & CLI_SERVE) && !strcmp(a, "--host")) {
            NEED_VALUE();
            o->serve_host = v;
        } else if ((allowed & CLI_SERVE) && !strcmp(a, "--port")) {
            NEED_VALUE();
            if (parse_int(a, v, 0, 65535, &o->serve_port)) return -1;
        } else if ((allowed & CLI_SERVE) && !strcmp(a, "--api-key")) {
            NEED_VALUE();
            o->api_key = v;
        } else if ((allowed & CLI_SERVE) && !strcmp(a, "--api-key-file")) {
            NEED_VALUE();
            o->api_key_file = v;
        } else if ((allowed & CLI_SERVE) && !strcmp(a, "--alias")) {
            NEED_VALUE();
            o->alias = v;
        } else if ((allowed & CLI_SERVE) && !strcmp(a, "--queue")) {
            NEED_VALUE();
            if (parse_int(a, v, 0, 1 << 16, &o->serve_queue)) return -1;
        } else if ((allowed & CLI_SERVE) && !strcmp(a, "--timeout")) {
            NEED_VALUE();
            if (parse_int(a, v, 1, 1 << 24, &o->serve_timeout)) return -1;
        } else if ((allowed & CLI_PPL) && !strcmp(a, "--chunks")) {
            NEED_VALUE();
            if (parse_int(a, v, 1, INT_MAX, &o->max_chunks)) return -1;
        } else {
            fprintf(stderr, "hearth %s: unknown option '%s' (see 'hearth %s --help')\n", cmd, a, cmd);
            return -1;
        }
#undef NEED_VALUE
    }
    return 0;
}

char *cli_open_with_text(const struct cli_opts *o, struct engine *s, size_t *len, char *err, size_t errlen) {
    char *text = cli_read_file(o->prompt_file, len, err, errlen);
    if (!text) return NULL;
    if (engine_open(s, &o->eng, err, errlen) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

char *cli_read_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
        if (n == cap) {
            char *grown = realloc(buf, 2 * cap + 1);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
    }
    int failed = ferror(f);
    fclose(f);
    if (!buf || failed) {
        snprintf(err, errlen, "cannot read %s: %s", path, buf ? strerror(errno) : "out of memory");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

char *cli_prompt_text(const struct cli_opts *o, size_t *len, char *err, size_t errlen) {
    if (o->prompt && o->prompt_file) {
        snprintf(err, errlen, "give the prompt with -p or -f, not both");
        return NULL;
    }
    if (o->prompt_file) return cli_read_file(o->prompt_file, len, err, errlen);
    if (!o->prompt) {
        snprintf(err, errlen, "no prompt: give -p TEXT or -f FILE");
        return NULL;
    }
    char *s = strdup(o->prompt);
    if (!s) snprintf(err, errlen, "out of memory");
    else if (len) *len = strlen(s);
    return s;
}
