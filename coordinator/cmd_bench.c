/* cmd_bench: `hearth bench` (llama-bench's pp/tg figures) and
 * `hearth perplexity` (llama-perplexity's method, so the numbers compare). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"
#include "membw.h"
#include "quant.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static size_t peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024; /* Linux reports KiB */
}

/* Evaluates n tokens from an empty cache, as one prompt (batch) or one token
 * at a time (generation); returns seconds or -1, and the seconds of it spent
 * in the attention core in *attn_s. With depth > 0 the generation starts
 * after a prompt of depth tokens (not timed), so that it measures decoding
 * at a long context (llama-bench's -d). */
static double timed_eval(struct engine *s, const int32_t *tokens, int n, int one_by_one, int depth, double *attn_s,
                         char *err, size_t errlen) {
    engine_truncate(s, 0);
    if (one_by_one && depth > 0) {
        for (int b = 0; b < depth; b += s->max_batch)
            if (engine_eval(s, tokens + b, depth - b < s->max_batch ? depth - b : s->max_batch, 0, err, errlen))
                return -1;
        tokens += depth;
    }
    const double a0 = engine_attn_seconds(s), t0 = engine_now();
    if (one_by_one) {
        for (int i = 0; i < n; i++)
            if (engine_eval(s, tokens + i, 1, 0, err, errlen) != 0) return -1;
    } else if (engine_eval(s, tokens, n, 0, err, errlen) != 0) {
        return -1;
    }
    const double t = engine_now() - t0;
    if (attn_s) *attn_s = engine_attn_seconds(s) - a0;
    return t;
}

/* Per engine (the one asked for, and the reference beside it): the timings
 * of every repetition, pp, then tg at each depth. */
struct bench_times {
    double *pp;         /* [reps] seconds */
    double *tg, *attn;  /* [n_depths][reps] seconds, and those of it in attention */
    double ffn_read, ffn_dense; /* FFN bytes over all tg tokens */
    size_t kv_bytes;
    size_t kv_cold_bytes; /* the most the cold store held after a tg run (--kv-cold) */
};

static int times_alloc(struct bench_times *b, int reps, int n_depths) {
    b->pp = calloc((size_t)reps, sizeof *b->pp);
    b->tg = calloc((size_t)reps * n_depths, sizeof *b->tg);
    b->attn = calloc((size_t)reps * n_depths, sizeof *b->attn);
    return b->pp && b->tg && b->attn ? 0 : -1;
}

static void times_free(struct bench_times *b) {
    free(b->pp);
    free(b->tg);
    free(b->attn);
}

/* One repetition of pp and of tg at every depth. */
static int bench_rep(struct engine *s, const struct cli_opts *o, const int32_t *tokens, int r, struct bench_times *b,
                     char *err, size_t errlen) {
    if (o->bench_pp > 0 && (b->pp[r] = timed_eval(s, tokens, o->bench_pp, 0, 0, NULL, err, errlen)) < 0) return -1;
    for (int d = 0; o->bench_tg > 0 && d < o->n_bench_depths; d++) {
        double read0, dense0, read1, dense1;
        engine_ffn_bytes(s, &read0, &dense0);
        const size_t i = (size_t)d * o->bench_reps + r;
        if ((b->tg[i] = timed_eval(s, tokens, o->bench_tg, 1, o->bench_depths[d], &b->attn[i], err, errlen)) < 0)
            return -1;
        if (engine_kv_cold_bytes(s) > b->kv_cold_bytes) b->kv_cold_bytes = engine_kv_cold_bytes(s);
        engine_ffn_bytes(s, &read1, &dense1);
        b->ffn_read += read1 - read0;
        b->ffn_dense += dense1 - dense0;
    }
    return 0;
}

/* tokens/s of n tokens in the median of reps times */
static double rate(double *sec, int reps, int n) {
    const double m = median(sec, reps);
    return m > 0 ? n / m : 0.0;
}

/* milliseconds per token of n tokens in the median of reps times */
static double ms_per_token(double *sec, int reps, int n) { return n > 0 ? 1e3 * median(sec, reps) / n : 0.0; }

/* ---- --parallel: many sequences at once ---- */

/* One repetition for n sequences: their prompts of pp tokens evaluated
 * together, then tg decode steps of one token each (greedy). Seconds of
 * each phase in *t_pp, *t_tg. The prompts depend on rep, so no slot holds
 * a prefix of the next repetition's prompt. */
static int parallel_rep(struct engine *s, int n, int pp, int tg, int rep, double *t_pp, double *t_tg, char *err,
                        size_t errlen) {
    const int n_vocab = s->model.cfg.n_vocab;
    int32_t *prompt = malloc((size_t)(pp > 0 ? pp : 1) * sizeof *prompt);
    int seqs[256], rc = -1, opened = 0;
    if (!prompt) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    uint64_t state = 0x9E3779B97F4A7C15ull ^ (uint64_t)(rep + 1) * 0xD1B54A32D192ED03ull;
    for (int q = 0; q < n; q++) {
        for (int i = 0; i < pp; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            prompt[i] = (int32_t)((state >> 33) % (uint64_t)n_vocab);
        }
        if ((seqs[q] = engine_seq_open(s, prompt, pp > 0 ? pp : 1, NULL, err, errlen)) < 0) goto out;
        opened++;
    }
    double t0 = engine_now();
    for (int ready = 0; ready < n;) {
        if (engine_step(s, err, errlen) < 0) goto out;
        ready = 0;
        for (int q = 0; q < n; q++) ready += engine_seq_logits(s, seqs[q]) != NULL;
    }
    *t_pp = engine_now() - t0;
    t0 = engine_now();
    for (int k = 0; k < tg; k++) {
        for (int q = 0; q < n; q++) {
            const float *lg = engine_seq_logits(s, seqs[q]);
            int32_t best = 0;
            for (int i = 1; i < n_vocab; i++)
                if (lg[i] > lg[best]) best = i;
            if (engine_seq_submit(s, seqs[q], &best, 1, err, errlen) != 0) goto out;
        }
        if (engine_step(s, err, errlen) < 0) goto out;
    }
    *t_tg = engine_now() - t0;
    rc = 0;
out:
    for (int q = 0; q < opened; q++) engine_seq_close(s, seqs[q]);
    free(prompt);
    return rc;
}

static int bench_parallel(struct cli_opts *o) {
    const int pp = o->bench_pp, tg = o->bench_tg, reps = o->bench_reps, nn = o->n_bench_parallel;
    const int n_modes = o->eng.single_process ? 1 : 2;
    char err[1024];
    struct par {
        int n;
        size_t kv_bytes[2];
        double pp_tps[2], tg_tps[2];
    } res[CLI_MAX_DEPTHS];
    memset(res, 0, sizeof res);
    int threads = 0;
    const char *path = NULL;
    char model_path[4096] = "";
    for (int i = 0; i < nn; i++) {
        const int n = o->bench_parallel[i];
        struct engine e[2];
        memset(e, 0, sizeof e);
        double tpp[2][64], ttg[2][64];
        int ok = 1, opened = 0;
        res[i].n = n;
        for (int m = 0; m < n_modes && ok; m++) {
            struct engine_opts eo = o->eng;
            eo.n_seq = n;
            eo.single_process = m == 0;
            if (path) eo.model_path = path;
            if (eo.n_ctx == 0) eo.n_ctx = pp + tg + 1;
            if (engine_open(&e[m], &eo, err, sizeof err) != 0) {
                ok = 0;
                break;
            }
            opened++;
            snprintf(model_path, sizeof model_path, "%s", e[m].model_path);
            path = model_path;
            threads = e[m].n_threads;
            res[i].kv_bytes[m] = engine_kv_bytes(&e[m]);
            double a, b; /* warm-up: page in the weights and spin up the threads */
            if (parallel_rep(&e[m], n, pp < 16 ? pp : 16, 2, 1000, &a, &b, err, sizeof err) != 0) ok = 0;
        }
        for (int r = 0; r < reps && r < 64 && ok; r++)
            for (int m = 0; m < n_modes && ok; m++)
                if (parallel_rep(&e[m], n, pp, tg, r, &tpp[m][r], &ttg[m][r], err, sizeof err) != 0) ok = 0;
        for (int m = 0; m < opened; m++) engine_close(&e[m]);
        if (!ok) return cli_fail(err);
        for (int m = 0; m < n_modes; m++) {
            res[i].pp_tps[m] = rate(tpp[m], reps < 64 ? reps : 64, n * pp);
            res[i].tg_tps[m] = rate(ttg[m], reps < 64 ? reps : 64, n * tg);
        }
        log_info("--parallel %d done", n);
    }
    const struct par *one = NULL;
    for (int i = 0; i < nn; i++)
        if (res[i].n == 1) one = &res[i];
    if (o->json) {
        printf("{\"model\": \"%s\", \"threads\": %d, \"kernels\": \"%s\", \"repetitions\": %d, \"pp_tokens\": %d, "
               "\"tg_tokens\": %d, \"parallel\": [",
               model_path, threads, quant_isa(), reps, pp, tg);
        for (int i = 0; i < nn; i++) {
            printf("%s{\"n\": %d", i ? ", " : "", res[i].n);
            for (int m = 0; m < n_modes; m++) {
                printf(", \"%s\": {\"kv_bytes\": %zu, \"pp_tokens_per_s\": %.3f, \"tg_tokens_per_s\": %.3f",
                       m ? "runtime" : "single_process", res[i].kv_bytes[m], res[i].pp_tps[m], res[i].tg_tps[m]);
                if (one && one->tg_tps[m] > 0) printf(", \"tg_speedup_vs_1\": %.3f", res[i].tg_tps[m] / one->tg_tps[m]);
                printf("}");
            }
            printf("}");
        }
        printf("]}\n");
        return 0;
    }
    printf("model: %s, %d threads (%s kernels), prompt %d and generation %d tokens per sequence, median of %d\n",
           model_path, threads, quant_isa(), pp, tg, reps);
    printf("aggregate tokens/s over all sequences (S_PP and S_TG of llama-batched-bench)\n");
    printf("| %3s | %10s | %13s | %13s |%s\n", "N", "KV MiB", "pp 1 process", "tg 1 process",
           n_modes > 1 ? "    pp runtime |    tg runtime |" : "");
    printf("|-----|------------|---------------|---------------|%s\n",
           n_modes > 1 ? "---------------|---------------|" : "");
    for (int i = 0; i < nn; i++) {
        printf("| %3d | %10.1f |", res[i].n, (double)res[i].kv_bytes[0] / (1 << 20));
        for (int m = 0; m < n_modes; m++) {
            char tgs[64];
            if (one && one->tg_tps[m] > 0)
                snprintf(tgs, sizeof tgs, "%.1f (%.2fx)", res[i].tg_tps[m], res[i].tg_tps[m] / one->tg_tps[m]);
            else
                snprintf(tgs, sizeof tgs, "%.1f", res[i].tg_tps[m]);
            printf(" %13.1f | %13s |", res[i].pp_tps[m], tgs);
        }
        printf("\n");
    }
    return 0;
}

int cmd_bench(int argc, char **argv) {
    struct cli_opts o;
    if (cli_parse(&o, argc, argv, 2, CLI_MODEL | CLI_BENCH | CLI_RUNTIME, "bench") != 0) return 1;
    if (o.n_bench_parallel > 0) return bench_parallel(&o); /* the KV and sidecar options apply to every sequence */
    const int need = o.bench_pp > o.bench_depth + o.bench_tg ? o.bench_pp : o.bench_depth + o.bench_tg;
    if (o.eng.n_ctx == 0) o.eng.n_ctx = need + 1;
    if (o.eng.n_ctx < need) return cli_fail("-c is smaller than -p or -d + -n");
    char err[1024];
    struct engine s, ref;
    memset(&ref, 0, sizeof ref);
    if (engine_open(&s, &o.eng, err, sizeof err) != 0) return cli_fail(err);
    /* With a sidecar or a KV budget, a reference engine runs too, without
     * them (the dense FFN, the full cache of the same storage type),
     * alternating with the asked one rep by rep, so the two are compared in
     * the same conditions. */
    const int sparse = o.eng.sidecar_path != NULL, budget = kv_config_active(&s.kv, s.n_ctx) && s.kv.budget < s.n_ctx;
    const int compare = sparse || budget;
    const char *ref_name = sparse && budget ? "dense, full KV" : sparse ? "dense" : "full KV";
    const char *kvname = s.kv.window ? "window" : s.kv.cold != KV_COLD_OFF ? "hot/cold" : "H2O";
    char name[32];
    snprintf(name, sizeof name, "%s%s%s", sparse ? "sparse" : "", sparse && budget ? ", " : "", budget ? kvname : "");
    if (compare) {
        struct engine_opts ref_opts = o.eng;
        ref_opts.sidecar_path = NULL;
        ref_opts.model_path = s.model_path;
        ref_opts.kv.budget = 0;
        ref_opts.kv.budget_frac = 0.0f;
        ref_opts.kv.window = 0;
        ref_opts.kv.cold = KV_COLD_OFF;
        ref_opts.kv.n_sinks = ref_opts.kv.n_recent = -1;
        if (engine_open(&ref, &ref_opts, err, sizeof err) != 0) {
            engine_close(&s);
            return cli_fail(err);
        }
    }

    const int n_max = need > 0 ? need : 1, reps = o.bench_reps, nd = o.n_bench_depths;
    int32_t *tokens = malloc((size_t)n_max * sizeof *tokens);
    struct bench_times bt = {0}, br = {0};
    int rc = 1;
    if (!tokens || times_alloc(&bt, reps, nd) || times_alloc(&br, reps, nd)) {
        snprintf(err, sizeof err, "out of memory");
        goto out;
    }
    uint64_t state = 0x9E3779B97F4A7C15ull; /* fixed: every run sees the same tokens */
    for (int i = 0; i < n_max; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        tokens[i] = (int32_t)((state >> 33) % (uint64_t)s.model.cfg.n_vocab);
    }
    /* warm-up: page in the weights and spin up the threads */
    if (timed_eval(&s, tokens, n_max < 16 ? n_max : 16, 0, 0, NULL, err, sizeof err) < 0) goto out;
    if (compare && timed_eval(&ref, tokens, n_max < 16 ? n_max : 16, 0, 0, NULL, err, sizeof err) < 0) goto out;
    for (int r = 0; r < reps; r++) {
        if (compare && bench_rep(&ref, &o, tokens, r, &br, err, sizeof err) != 0) goto out;
        if (bench_rep(&s, &o, tokens, r, &bt, err, sizeof err) != 0) goto out;
        log_info("repetition %d of %d done", r + 1, reps);
    }
    bt.kv_bytes = engine_kv_bytes(&s);
    br.kv_bytes = compare ? engine_kv_bytes(&ref) : 0;
    const double pp_tps = o.bench_pp > 0 ? rate(bt.pp, reps, o.bench_pp) : 0;
    const double rpp_tps = compare && o.bench_pp > 0 ? rate(br.pp, reps, o.bench_pp) : 0;
    double tg_tps[CLI_MAX_DEPTHS] = {0}, rtg_tps[CLI_MAX_DEPTHS] = {0};
    double attn_ms[CLI_MAX_DEPTHS] = {0}, rattn_ms[CLI_MAX_DEPTHS] = {0};
    for (int d = 0; o.bench_tg > 0 && d < nd; d++) {
        tg_tps[d] = rate(bt.tg + (size_t)d * reps, reps, o.bench_tg);
        attn_ms[d] = ms_per_token(bt.attn + (size_t)d * reps, reps, o.bench_tg);
        if (!compare) continue;
        rtg_tps[d] = rate(br.tg + (size_t)d * reps, reps, o.bench_tg);
        rattn_ms[d] = ms_per_token(br.attn + (size_t)d * reps, reps, o.bench_tg);
    }
    const double ntg = (double)o.bench_tg * reps * nd;
    size_t rss = peak_rss_bytes(), wbytes = model_weight_bytes(&s.model);
    /* per process: the coordinator, then each worker of the runtime */
    struct runtime_proc procs[65];
    int n_procs = 1;
    snprintf(procs[0].role, sizeof procs[0].role, "coord");
    procs[0].pid = (int)getpid();
    procs[0].peak_rss_bytes = rss;
    if (s.rt) n_procs += runtime_procs(s.rt, procs + 1, 64);
    if (n_procs > 65) n_procs = 65;
    size_t rss_max = 0;
    for (int i = 0; i < n_procs; i++)
        if (procs[i].peak_rss_bytes > rss_max) rss_max = procs[i].peak_rss_bytes;
    /* The physical floor: a generated token reads every weight once (the
     * sparse FFN only what it computes), so tg cannot beat the machine's read
     * bandwidth / those bytes. Measured with the engine's threads. */
    double tok_bytes = (double)wbytes, read_bw = 0.0;
    if (sparse && ntg > 0) tok_bytes += (bt.ffn_read - bt.ffn_dense) / ntg;
    if (o.bench_tg > 0) {
        char perr[256];
        read_bw = membw_read_probe(s.n_threads, 0, 0, perr, sizeof perr);
        if (read_bw < 0) {
            log_warn("%s", perr);
            read_bw = 0.0;
        }
    }
    const double eff_bw = tok_bytes * tg_tps[0];
    const char *mode = s.rt ? "multi-process" : "single-process";
    const int kv_active = kv_config_active(&s.kv, s.n_ctx);
    if (o.json) {
        printf("{\"model\": \"%s\", \"mode\": \"%s\", \"kernels\": \"%s\", \"threads\": %d, \"n_ctx\": %d, "
               "\"repetitions\": %d, \"pp_tokens\": %d, \"tg_tokens\": %d, \"pp_tokens_per_s\": %.3f, "
               "\"tg_tokens_per_s\": %.3f, \"attn_ms_per_token\": %.4f, \"peak_rss_bytes\": %zu, "
               "\"kv_bytes\": %zu, \"kv_cold_bytes\": %zu, \"kv_cold\": \"%s\", \"kv_recall\": %d, "
               "\"weight_bytes\": %zu, \"weight_bytes_per_token\": %.0f, "
               "\"effective_bandwidth_bytes_per_s\": %.0f, \"read_bandwidth_bytes_per_s\": %.0f, "
               "\"tg_depth\": %d, \"kv_budget\": %d, \"kv_type\": \"%s\", \"kv_window\": %d, \"processes\": [",
               s.model_path, mode, quant_isa(), s.n_threads, s.n_ctx, reps, o.bench_pp, o.bench_tg, pp_tps, tg_tps[0],
               attn_ms[0], rss_max, bt.kv_bytes, bt.kv_cold_bytes, kv_cold_name(s.kv.cold), s.kv.recall, wbytes, tok_bytes, eff_bw, read_bw, o.bench_depths[0],
               kv_active ? s.kv.budget : s.n_ctx, kv_type_name(s.kv.type), s.kv.window);
        for (int i = 0; i < n_procs; i++)
            printf("%s{\"role\": \"%s\", \"pid\": %d, \"peak_rss_bytes\": %zu}", i ? ", " : "", procs[i].role,
                   procs[i].pid, procs[i].peak_rss_bytes);
        printf("], \"tg\": [");
        for (int d = 0; d < nd; d++) {
            printf("%s{\"depth\": %d, \"tokens_per_s\": %.3f, \"attn_ms_per_token\": %.4f", d ? ", " : "",
                   o.bench_depths[d], tg_tps[d], attn_ms[d]);
            if (compare)
                printf(", \"ref_tokens_per_s\": %.3f, \"ref_attn_ms_per_token\": %.4f", rtg_tps[d], rattn_ms[d]);
            printf("}");
        }
        printf("]");
        if (compare)
            /* the reference engine, alternated with this one */
            printf(", \"ref\": \"%s\", \"ref_pp_tokens_per_s\": %.3f, \"ref_tg_tokens_per_s\": %.3f, "
                   "\"ref_kv_bytes\": %zu",
                   ref_name, rpp_tps, rtg_tps[0], br.kv_bytes);
        if (sparse)
            printf(", \"sidecar\": \"%s\", \"ffn_bytes_per_token\": %.0f, \"dense_ffn_bytes_per_token\": %.0f",
                   o.eng.sidecar_path, ntg > 0 ? bt.ffn_read / ntg : 0.0, ntg > 0 ? bt.ffn_dense / ntg : 0.0);
        printf("}\n");
    } else {
        printf("model: %s (%.1f MiB of weights)\n", s.model_path, (double)wbytes / (1 << 20));
        printf("mode: %s, %d threads, %s kernels, median of %d\n", mode, s.n_threads, quant_isa(), reps);
        char test[32];
        if (compare) {
            printf("| %-12s | %14s | %14s | %7s | %12s | %12s |\n", "test", ref_name, name, "ratio", "attn ms/tok",
                   "attn ms/tok");
            printf("| %-12s | %14s | %14s | %7s | %12s | %12s |\n", "", "tok/s", "tok/s", "", ref_name, name);
            printf("|--------------|----------------|----------------|---------|--------------|--------------|\n");
            if (o.bench_pp > 0) {
                snprintf(test, sizeof test, "pp%d", o.bench_pp);
                printf("| %-12s | %14.2f | %14.2f | %6.2fx | %12s | %12s |\n", test, rpp_tps, pp_tps,
                       rpp_tps > 0 ? pp_tps / rpp_tps : 0.0, "", "");
            }
            for (int d = 0; o.bench_tg > 0 && d < nd; d++) {
                snprintf(test, sizeof test, "tg%d @ d%d", o.bench_tg, o.bench_depths[d]);
                printf("| %-12s | %14.2f | %14.2f | %6.2fx | %12.3f | %12.3f |\n", test, rtg_tps[d], tg_tps[d],
                       rtg_tps[d] > 0 ? tg_tps[d] / rtg_tps[d] : 0.0, rattn_ms[d], attn_ms[d]);
            }
            printf("KV cache: %s %.1f MiB, %s %.1f MiB", ref_name, (double)br.kv_bytes / (1 << 20), name,
                   (double)bt.kv_bytes / (1 << 20));
            if (s.kv.cold != KV_COLD_OFF)
                printf(" resident + %.1f MiB of %s cold store in host memory (recall %d tokens per layer and head)",
                       (double)bt.kv_cold_bytes / (1 << 20), kv_cold_name(s.kv.cold), s.kv.recall);
            printf("\n");
            if (sparse && ntg > 0 && bt.ffn_dense > 0) /* the plan's hot/cold FFN (not input sparsity alone) */
                printf("FFN weights read per generated token: dense %.2f MiB, sparse %.2f MiB (%.1f%%; sidecar %s)\n",
                       bt.ffn_dense / ntg / (1 << 20), bt.ffn_read / ntg / (1 << 20),
                       bt.ffn_dense > 0 ? 100.0 * bt.ffn_read / bt.ffn_dense : 0.0, o.eng.sidecar_path);
        } else {
            printf("| %-12s | %12s | %12s |\n|--------------|--------------|--------------|\n", "test", "tokens/s",
                   "attn ms/tok");
            if (o.bench_pp > 0) {
                snprintf(test, sizeof test, "pp%d", o.bench_pp);
                printf("| %-12s | %12.2f | %12s |\n", test, pp_tps, "");
            }
            for (int d = 0; o.bench_tg > 0 && d < nd; d++) {
                snprintf(test, sizeof test, "tg%d @ d%d", o.bench_tg, o.bench_depths[d]);
                printf("| %-12s | %12.2f | %12.3f |\n", test, tg_tps[d], attn_ms[d]);
            }
        }
        if (kv_active)
            printf("KV cache %.1f MiB (H2O %s, budget %d tokens, %s); peak RSS:", (double)bt.kv_bytes / (1 << 20),
                   s.kv.window ? "window" : "heavy hitters", s.kv.budget, kv_type_name(s.kv.type));
        else
            printf("KV cache %.1f MiB; peak RSS:", (double)bt.kv_bytes / (1 << 20));
        for (int i = 0; i < n_procs; i++) printf(" %s %.1f MiB", procs[i].role, (double)procs[i].peak_rss_bytes / (1 << 20));
        printf("\n");
        if (o.bench_tg > 0 && read_bw > 0)
            printf("floor: %.1f MiB of weights per token; tg%d at %.2f GB/s of weights, %.0f%% of the measured read "
                   "bandwidth %.2f GB/s (%d threads), which caps tg at %.0f tok/s\n",
                   tok_bytes / (1 << 20), o.bench_tg, eff_bw * 1e-9, 100.0 * eff_bw / read_bw, read_bw * 1e-9,
                   s.n_threads, read_bw / tok_bytes);
    }
    rc = 0;
out:
    if (rc) cli_fail(err);
    free(tokens);
    times_free(&bt);
    times_free(&br);
    engine_close(&s);
    if (compare) engine_close(&ref);
    return rc;
}

/* log p(target | logits) with a max-subtracted log-sum-exp in double. */
static double log_softmax_at(const float *logits, int n_vocab, int32_t target) {
    float maxv = logits[0];
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > maxv) maxv = logits[i];
    double sum = 0.0;
    for (int i = 0; i < n_vocab; i++) sum += exp((double)(logits[i] - maxv));
    return (double)(logits[target] - maxv) - log(sum);
}

int cmd_perplexity(int argc, char **argv) {
    struct cli_opts o;
    if (cli_parse(&o, argc, argv, 2, CLI_MODEL | CLI_PPL, "perplexity") != 0) return 1;
    if (!o.prompt_file) return cli_fail("perplexity needs the text: -f FILE");
    if (o.eng.n_ctx == 0) o.eng.n_ctx = 512;
    if (o.eng.n_ctx < 4) return cli_fail("-c must be at least 4 for perplexity");
    char err[1024];
    size_t len = 0;
    struct engine s;
    char *text = cli_open_with_text(&o, &s, &len, err, sizeof err);
    if (!text) return cli_fail(err);
    int32_t *tokens = NULL;
    size_t n_tokens = 0;
    int rc = 1;
    /* as llama-perplexity: special-token text is plain text; BOS per chunk if the model uses one */
    if (tokenizer_encode(s.tok, text, len, 0, &tokens, &n_tokens) != 0) {
        snprintf(err, sizeof err, "out of memory while tokenizing");
        goto out;
    }
    const int n_ctx = s.n_ctx, n_vocab = s.model.cfg.n_vocab, batch = s.max_batch;
    int n_chunks = (int)(n_tokens / (size_t)n_ctx);
    if (o.max_chunks > 0 && o.max_chunks < n_chunks) n_chunks = o.max_chunks;
    if (n_chunks < 1) {
        snprintf(err, sizeof err, "%s has %zu tokens; perplexity needs at least one chunk of %d (-c)", o.prompt_file,
                 n_tokens, n_ctx);
        goto out;
    }
    fprintf(stderr, "perplexity: %zu tokens, %d chunks of %d, scoring the second half of each\n", n_tokens, n_chunks,
            n_ctx);
    /* Only the second half of each chunk is scored: those tokens all see at
     * least n_ctx/2 tokens of context (llama.cpp's method). */
    const int first = n_ctx / 2;
    double nll = 0.0, nll2 = 0.0;
    long count = 0;
    int bos = tokenizer_add_bos(s.tok);
    for (int c = 0; c < n_chunks; c++) {
        int32_t *chunk = tokens + (size_t)c * n_ctx;
        int32_t saved = chunk[0];
        if (bos) chunk[0] = tokenizer_bos(s.tok);
        engine_truncate(&s, 0);
        if (kv_config_active(&s.kv, n_ctx)) {
            /* H2O: a budget below the chunk means the logits must come from
             * the compressed cache. The unscored first half is a prompt
             * (prefill in batches, each cut to the budget), the scored
             * second half is decoded token by token. */
            for (int b = 0; b < first; b += batch) {
                int n = first - b < batch ? first - b : batch;
                if (engine_eval(&s, chunk + b, n, 0, err, sizeof err) != 0) {
                    chunk[0] = saved;
                    goto out;
                }
            }
            for (int j = first; j + 1 < n_ctx; j++) {
                if (engine_eval(&s, chunk + j, 1, 0, err, sizeof err) != 0) {
                    chunk[0] = saved;
                    goto out;
                }
                double lp = log_softmax_at(s.logits, n_vocab, chunk[j + 1]);
                nll -= lp;
                nll2 += lp * lp;
                count++;
            }
        }
        for (int b = 0; !kv_config_active(&s.kv, n_ctx) && b < n_ctx; b += batch) {
            int n = n_ctx - b < batch ? n_ctx - b : batch;
            if (engine_eval(&s, chunk + b, n, 1, err, sizeof err) != 0) {
                chunk[0] = saved;
                goto out;
            }
            for (int j = b; j < b + n; j++) {
                if (j < first || j + 1 >= n_ctx) continue;
                double lp = log_softmax_at(s.logits + (size_t)(j - b) * n_vocab, n_vocab, chunk[j + 1]);
                nll -= lp;
                nll2 += lp * lp;
                count++;
            }
        }
        chunk[0] = saved;
        fprintf(stderr, "[%d]%.4f%s", c + 1, exp(nll / (double)count), c + 1 == n_chunks ? "\n" : ",");
    }
    double mean = nll / (double)count;
    double var = nll2 / (double)count - mean * mean;
    double ppl = exp(mean);
    double ppl_err = count > 1 && var > 0 ? ppl * sqrt(var / (double)(count - 1)) : 0.0;
    fprintf(stderr, "estimate: PPL = %.4f +/- %.4f over %ld tokens\n", ppl, ppl_err, count);
    double ffn_read, ffn_dense;
    engine_ffn_bytes(&s, &ffn_read, &ffn_dense);
    if (ffn_dense > 0)
        fprintf(stderr, "sparse FFN: read %.1f%% of the dense FFN's weight bytes (%.2f MiB per token)\n",
                100.0 * ffn_read / ffn_dense, ffn_read / 1048576.0 / ((double)n_chunks * n_ctx));
    printf("PPL = %.4f\n", ppl);
    rc = 0;
out:
    if (rc) cli_fail(err);
    free(tokens);
    free(text);
    engine_close(&s);
    return rc;
}
