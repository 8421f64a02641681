/* insparse_curve: the accuracy side of input sparsity (core/insparse.h) on a
 * real model, in one process: calibrate each layer's four matrix-input
 * thresholds on one text, then measure perplexity on another with the masks
 * in the forward pass (the model's own weights, the masked inputs), beside
 * the dense model, for a list of model-wide target sparsities.
 *
 *   insparse_curve [-m MODEL] --calib FILE --eval FILE [-c 512] [--chunks 8]
 *                  [--calib-chunks 8] [-t 2] [--targets 0.2,0.3,0.4,0.5,0.6]
 *                  [--alloc uniform|greedy|scap|both] [--score teal|wina]
 *
 * Perplexity is llama.cpp's method (hearth perplexity's): chunks of -c
 * tokens, BOS first if the model uses one, the second half of each scored.
 * Score: teal masks |x_i|, wina |x_i| times the norm of the site's weight
 * columns i (q, k, v together; gate and up together), as the forward pass's
 * masks define them (insparse.h, insparse_layer.thr). Allocation of a target S:
 *   uniform  every (layer, site) zeroes the S-quantile of its calibration |x|;
 *   scap     down's input at 1.5 S (SCAP: it tolerates more), the other
 *            inputs at the one sparsity that makes the skipped bytes S;
 *   greedy   steps of 5% per (layer, site), cheapest first, where a step's cost
 *            is the calibration x^2 mass it drops (the relative output error
 *            of a random-direction W) per weight byte it skips, until the
 *            skipped bytes are S of the sparsified matrices' bytes (SCAP's
 *            finding that down's input tolerates more comes out of it).
 * Bytes: each site's dense weight bytes times the share of its inputs kept on
 * the evaluation text, i.e. what the input-major rows read at the model's own
 * bits per weight (insparse Q4_1 for a Q4_1 model; Q8_0 rows read 1.7x that).
 * The LM head and the embeddings are not sparsified and not counted.
 * This measures accuracy and bytes, not speed: the kernels of the forward
 * pass stay dense here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "insparse.h"
#include "model.h"
#include "tokenizer.h"

#include "../check.h"

struct run {
    struct llama_model m;
    struct tokenizer *tok;
    struct llama_state s;
    int n_ctx, batch;
    struct insparse_probe *probes; /* [n_layers] */
    struct insparse_model ins;     /* the pass's taps: thresholds, probes, norms */
    double site_bytes[INSPARSE_N_SITES]; /* dense weight bytes per token, all layers */
    double *lsite_bytes;                  /* [n_layers][sites] */
};

static int32_t *read_tokens(struct run *r, const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "insparse_curve: cannot open %s\n", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = xmalloc((size_t)len + 1);
    size_t got = fread(text, 1, (size_t)len, f);
    fclose(f);
    int32_t *ids = NULL;
    if (tokenizer_encode(r->tok, text, got, 0, &ids, n) != 0) ids = NULL;
    free(text);
    return ids;
}

static double log_softmax_at(const float *logits, int n, int32_t id) {
    double mx = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    return (double)logits[id] - mx - log(sum);
}

/* Runs n_chunks chunks of tokens; with score, returns the perplexity of the
 * second halves (llama.cpp's method), else 0, and *ppl_err (may be NULL) its
 * standard error as hearth perplexity prints it. -1 on error. */
static double run_chunks(struct run *r, int32_t *tokens, size_t n_tokens, int n_chunks, int score, float *logits,
                         double *ppl_err) {
    const int n_ctx = r->n_ctx, n_vocab = r->m.cfg.n_vocab, first = n_ctx / 2;
    char err[256];
    double nll = 0, nll2 = 0;
    long count = 0;
    const int bos = tokenizer_add_bos(r->tok);
    for (int c = 0; c < n_chunks && (size_t)(c + 1) * (size_t)n_ctx <= n_tokens; c++) {
        int32_t *chunk = tokens + (size_t)c * (size_t)n_ctx;
        const int32_t saved = chunk[0];
        if (bos) chunk[0] = tokenizer_bos(r->tok);
        for (int b = 0; b < n_ctx; b += r->batch) {
            const int n = n_ctx - b < r->batch ? n_ctx - b : r->batch;
            if (forward(&r->s, chunk + b, n, b, score ? logits : NULL, 1, err, sizeof err) != 0) {
                fprintf(stderr, "insparse_curve: forward: %s\n", err);
                chunk[0] = saved;
                return -1;
            }
            for (int j = b; score && j < b + n; j++) {
                if (j < first || j + 1 >= n_ctx) continue;
                const double lp = log_softmax_at(logits + (size_t)(j - b) * (size_t)n_vocab, n_vocab, chunk[j + 1]);
                nll -= lp;
                nll2 += lp * lp;
                count++;
            }
        }
        chunk[0] = saved;
    }
    if (!score || count == 0) return 0.0;
    const double mean = nll / (double)count, var = nll2 / (double)count - mean * mean;
    if (ppl_err) *ppl_err = count > 1 && var > 0 ? exp(mean) * sqrt(var / (double)(count - 1)) : 0.0;
    return exp(mean);
}

#define MAX_SPARSITY 0.9

/* SCAP's split: down at 1.5 target, the rest evenly to reach target */
static void allocate_scap(const struct run *r, double target, double *sp) {
    double total = 0;
    for (int s = 0; s < INSPARSE_N_SITES; s++) total += r->site_bytes[s];
    const double down = r->site_bytes[INSPARSE_DOWN];
    const double sd = fmin(MAX_SPARSITY, 1.5 * target), so = fmax(0.0, (target * total - sd * down) / (total - down));
    for (int k = 0; k < r->m.cfg.n_layers * INSPARSE_N_SITES; k++)
        sp[k] = k % INSPARSE_N_SITES == INSPARSE_DOWN ? sd : so;
}

/* thresholds of every (layer, site) from per-(layer, site) sparsities */
static void set_thresholds(struct run *r, const struct insparse_probe *calib, const double *sp) {
    for (int l = 0; l < r->m.cfg.n_layers; l++)
        for (int s = 0; s < INSPARSE_N_SITES; s++)
            r->ins.layers[l].thr[s] = insparse_probe_threshold(&calib[l], s, sp[l * INSPARSE_N_SITES + s]);
}

static double measure(struct run *r, const char *label, int32_t *eval, size_t n_eval, int chunks, float *logits,
                    double dense_ppl, const double *sp) {
    const int nl = r->m.cfg.n_layers;
    for (int l = 0; l < nl; l++) insparse_probe_reset(&r->probes[l]);
    double ppl_err = 0;
    const double ppl = run_chunks(r, eval, n_eval, chunks, 1, logits, &ppl_err);
    double kept_bytes[INSPARSE_N_SITES] = {0}, share[INSPARSE_N_SITES] = {0}, sp_mean[INSPARSE_N_SITES] = {0};
    for (int l = 0; l < nl; l++)
        for (int s = 0; s < INSPARSE_N_SITES; s++) {
            const double seen = (double)r->probes[l].seen[s], kept = (double)r->probes[l].kept[s];
            const double f = seen > 0 ? kept / seen : 1.0;
            kept_bytes[s] += f * r->lsite_bytes[l * INSPARSE_N_SITES + s];
            share[s] += (1.0 - f) / nl;
            sp_mean[s] += (sp ? sp[l * INSPARSE_N_SITES + s] : 0.0) / nl;
        }
    const double attn_d = r->site_bytes[INSPARSE_QKV] + r->site_bytes[INSPARSE_O];
    const double ffn_d = r->site_bytes[INSPARSE_GU] + r->site_bytes[INSPARSE_DOWN];
    const double attn_k = kept_bytes[INSPARSE_QKV] + kept_bytes[INSPARSE_O];
    const double ffn_k = kept_bytes[INSPARSE_GU] + kept_bytes[INSPARSE_DOWN];
    printf("| %s | %.2f +/- %.2f | %+.1f%% | %.1f%% | %.1f%% | %.1f%% | %.0f/%.0f/%.0f/%.0f%% | %.0f/%.0f/%.0f/%.0f%% |\n", label,
           ppl, ppl_err, dense_ppl > 0 ? 100.0 * (ppl / dense_ppl - 1.0) : 0.0, 100.0 * (attn_k + ffn_k) / (attn_d + ffn_d),
           100.0 * attn_k / attn_d, 100.0 * ffn_k / ffn_d, 100 * share[0], 100 * share[1], 100 * share[2],
           100 * share[3], 100 * sp_mean[0], 100 * sp_mean[1], 100 * sp_mean[2], 100 * sp_mean[3]);
    fflush(stdout);
    return ppl;
}

int main(int argc, char **argv) {
    const char *model = getenv("HEARTH_TEST_MODEL"), *calib_path = NULL, *eval_path = NULL;
    const char *targets = "0.2,0.3,0.4,0.5,0.6", *alloc = "both", *score = "teal";
    int n_ctx = 512, chunks = 8, calib_chunks = 8, threads = 2;
    static char def[512];
    if (!model || !model[0]) {
        snprintf(def, sizeof def, "%s/.cache/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf", getenv("HOME"));
        model = def;
    }
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "insparse_curve: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "--calib")) calib_path = v;
        else if (!strcmp(a, "--eval")) eval_path = v;
        else if (!strcmp(a, "-c")) n_ctx = atoi(v);
        else if (!strcmp(a, "--chunks")) chunks = atoi(v);
        else if (!strcmp(a, "--calib-chunks")) calib_chunks = atoi(v);
        else if (!strcmp(a, "-t")) threads = atoi(v);
        else if (!strcmp(a, "--targets")) targets = v;
        else if (!strcmp(a, "--alloc")) alloc = v;
        else if (!strcmp(a, "--score")) score = v;
        else {
            fprintf(stderr, "insparse_curve: unknown option %s (see the header of tests/bench/insparse_curve.c)\n", a);
            return 2;
        }
    }
    if (!calib_path || !eval_path || n_ctx < 4 || (strcmp(score, "teal") && strcmp(score, "wina"))) {
        fprintf(stderr, "usage: insparse_curve [-m MODEL] --calib FILE --eval FILE [-c 512] [--chunks 8] "
                        "[--calib-chunks 8] [-t 2] [--targets 0.2,...] [--alloc uniform|greedy|scap|both] [--score teal|wina]\n");
        return 2;
    }
    char err[256];
    struct run r;
    memset(&r, 0, sizeof r);
    r.n_ctx = n_ctx;
    r.batch = 64;
    if (model_load(&r.m, model, err, sizeof err) || !(r.tok = tokenizer_load(r.m.gguf, err, sizeof err)) ||
        model_repack_all(&r.m, 1, NULL, err, sizeof err) ||
        state_create(&r.s, &r.m, n_ctx, r.batch, threads, err, sizeof err) ||
        insparse_model_create(&r.ins, r.m.cfg.n_layers, err, sizeof err)) {
        fprintf(stderr, "insparse_curve: %s\n", err);
        return 1;
    }
    r.s.taps = insparse_taps(&r.ins);
    const int nl = r.m.cfg.n_layers;
    r.probes = xmalloc((size_t)nl * sizeof *r.probes);
    struct insparse_probe *calib = xmalloc((size_t)nl * sizeof *calib);
    r.lsite_bytes = xmalloc((size_t)nl * INSPARSE_N_SITES * sizeof(double));
    for (int l = 0; l < nl; l++) {
        const struct llama_layer *L = &r.m.layers[l];
        const double b[INSPARSE_N_SITES] = {
            (double)(model_weight_size(&L->wq) + model_weight_size(&L->wk) + model_weight_size(&L->wv)),
            (double)model_weight_size(&L->wo),
            (double)(model_weight_size(&L->w_gate) + model_weight_size(&L->w_up)),
            (double)model_weight_size(&L->w_down)};
        for (int s = 0; s < INSPARSE_N_SITES; s++) {
            r.lsite_bytes[l * INSPARSE_N_SITES + s] = b[s];
            r.site_bytes[s] += b[s];
        }
        insparse_probe_reset(&r.probes[l]);
        r.ins.layers[l].probe = &r.probes[l];
    }
    float *norms = NULL;
    if (!strcmp(score, "wina")) {
        const int64_t per = 2 * (int64_t)r.m.cfg.dim + r.m.cfg.n_heads * r.m.cfg.head_dim + r.m.cfg.hidden_dim;
        norms = xmalloc((size_t)(nl * per) * sizeof(float));
        for (int l = 0; l < nl; l++) {
            float *at = norms + l * per;
            for (int s = 0; s < INSPARSE_N_SITES; s++) {
                if (insparse_site_norms(&r.m.layers[l], s, at, err, sizeof err)) {
                    fprintf(stderr, "insparse_curve: %s\n", err);
                    return 1;
                }
                r.ins.layers[l].norm[s] = at;
                at += s == INSPARSE_QKV || s == INSPARSE_GU ? r.m.cfg.dim
                      : s == INSPARSE_O                    ? r.m.cfg.n_heads * r.m.cfg.head_dim
                                                           : r.m.cfg.hidden_dim;
            }
        }
    }
    size_t n_cal = 0, n_eval = 0;
    int32_t *cal = read_tokens(&r, calib_path, &n_cal), *eval = read_tokens(&r, eval_path, &n_eval);
    if (!cal || !eval) return 1;
    float *logits = xmalloc((size_t)r.batch * (size_t)r.m.cfg.n_vocab * sizeof(float));
    fprintf(stderr, "insparse_curve: %s score, %s, %d threads; calibration %s (%zu tokens, %d chunks of %d), evaluation %s "
                    "(%zu tokens, %d chunks)\n",
            score, model, threads, calib_path, n_cal, calib_chunks, n_ctx, eval_path, n_eval, chunks);
    /* calibration: chunks spread through the text */
    const int cal_avail = (int)(n_cal / (size_t)n_ctx);
    for (int c = 0; c < calib_chunks && c < cal_avail; c++) {
        const size_t at = (size_t)((long)c * cal_avail / calib_chunks) * (size_t)n_ctx;
        if (run_chunks(&r, cal + at, (size_t)n_ctx, 1, 0, logits, NULL) < 0) return 1;
    }
    memcpy(calib, r.probes, (size_t)nl * sizeof *calib);

    printf("| target | PPL | vs dense | weights read (attn+FFN) | attention | FFN | zeroed on eval qkv/o/gu/down | "
           "calibrated sparsity qkv/o/gu/down |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    /* thresholds 0: the dense model */
    const double dense = measure(&r, "dense", eval, n_eval, chunks, logits, 0.0, NULL);
    if (dense < 0) return 1;
    double *sp = xmalloc((size_t)nl * INSPARSE_N_SITES * sizeof(double));
    for (const char *t = targets; t && *t;) {
        const double target = strtod(t, NULL);
        static const char *const modes[3] = {"uniform", "greedy", "scap"};
        for (int mode = 0; mode < 3; mode++) {
            /* both: uniform and greedy */
            if (strcmp(alloc, modes[mode]) && !(!strcmp(alloc, "both") && mode < 2)) continue;
            if (mode == 0)
                for (int k = 0; k < nl * INSPARSE_N_SITES; k++) sp[k] = target;
            else if (mode == 1)
                insparse_allocate(calib, r.m.cfg.n_layers, r.lsite_bytes, target, INSPARSE_ALLOC_GREEDY, sp);
            else
                allocate_scap(&r, target, sp);
            set_thresholds(&r, calib, sp);
            char label[64];
            snprintf(label, sizeof label, "%.2f %s %s", target, score, modes[mode]);
            measure(&r, label, eval, n_eval, chunks, logits, dense, sp);
        }
        t = strchr(t, ',');
        if (t) t++;
    }
    free(sp);
    free(norms);
    free(logits);
    free(cal);
    free(eval);
    free(calib);
    free(r.probes);
    free(r.lsite_bytes);
    state_free(&r.s);
    insparse_model_free(&r.ins);
    tokenizer_free(r.tok);
    model_free(&r.m);
    return 0;
}
