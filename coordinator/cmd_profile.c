/* hearth profile: activation statistics of the dense model over a
 * calibration text, into a sidecar GGUF (core/sidecar.h).
 *
 * Firing follows CATS (Lee et al., 2024): a neuron fires when its gated
 * activation |act(gate x)| (|act(up x)| for ungated FFNs), times the
 * neuron's scale (rms of up x times its down column's norm: sidecar.h),
 * exceeds the layer's threshold. Thresholding the gate alone, rather than
 * the product with up x, is what makes the skip pay: the up row and the down
 * column of a neuron below it are never read.
 *
 * The text is cut into chunks of -c tokens spread evenly over the file (so
 * a long corpus is sampled, not just its beginning) until --tokens tokens
 * have been run. For every layer and token the dense pass's gate products
 * give |act(gate x)| for all neurons, kept as half floats. Afterwards they
 * are weighted by the scales, each layer's threshold is the --sparsity
 * quantile of the weighted values, a neuron's firing frequency is the share
 * of tokens where its value exceeds it, and the FFN inputs with their fired masks are stored as the predictors'
 * training samples. The frequencies are also drawn (SVG), since a power
 * law is easier to see than to read. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "engine.h"
#include "forward.h"
#include "fp16.h"
#include "insparse.h"
#include "log.h"
#include "plot.h"
#include "quant.h"
#include "sha256.h"
#include "sidecar.h"

/* |a| as the bits of a non-negative half float: their integer order is the
 * value order, so quantiles are a histogram over 2^15 bins. */
static inline uint16_t abs_half_bits(float v) {
    float a = fabsf(v);
    if (!(a < 65504.0f)) a = 65504.0f; /* inf and NaN clamp to the largest half */
    return (uint16_t)(fp16_from_f32(a) & 0x7fff);
}

static void progress(int done, int total, double t0) {
    static int last_pct = -1;
    int pct = (int)(100.0 * done / total);
    if (pct == last_pct && done != total) return;
    last_pct = pct;
    double dt = engine_now() - t0;
    if (isatty(2)) {
        char bar[41];
        int fill = pct * 40 / 100;
        for (int i = 0; i < 40; i++) bar[i] = i < fill ? '#' : '.';
        bar[40] = 0;
        fprintf(stderr, "\rprofile: [%s] %3d%% %d/%d tokens, %.0f tok/s", bar, pct, done, total,
                dt > 0 ? done / dt : 0.0);
        if (done == total) fputc('\n', stderr);
    } else if (pct % 10 == 0) {
        fprintf(stderr, "profile: %3d%% %d/%d tokens, %.0f tok/s\n", pct, done, total, dt > 0 ? done / dt : 0.0);
    }
}

static int cmp_float_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* Neurons (as a share of the layer) that serve `share` of all firings: small = skewed. */
static double coverage(const float *sorted_desc, int64_t n, double share) {
    double total = 0, acc = 0;
    for (int64_t i = 0; i < n; i++) total += sorted_desc[i];
    if (total <= 0) return 0;
    for (int64_t i = 0; i < n; i++) {
        acc += sorted_desc[i];
        if (acc >= share * total) return (double)(i + 1) / (double)n;
    }
    return 1;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define TIME_REPS 15
#define TIME_WINS 12

/* The time of one decode row's product through each (layer, matrix):
 * t_dense[l * 7 + k] through the forward pass's dense kernels and t_sparse
 * through its input-major copy (q4t), for an input of the layer's measured
 * density at that site (random entries zeroed), medians of TIME_REPS passes
 * over the whole model (so the weights stream from memory as in decode),
 * the two alternated. ok[l * 7 + k]: the matrix can have a copy (Q4_1, and
 * shapes in whole 32s and 64s); the others are not timed (t_sparse
 * infinite). wins[l * 7 + k]: the passes where the copy was the faster of
 * the pair. The copies are built here and freed. */
static int time_matrices(struct llama_model *m, const double *density, const int *ok, struct tpool *tp,
                         double *t_dense, double *t_sparse, int *wins, char *err, size_t errlen) {
    const int nl = m->cfg.n_layers, nm = nl * INSPARSE_N_MATS;
    const int64_t width = m->cfg.hidden_dim > m->cfg.dim ? m->cfg.hidden_dim : m->cfg.dim;
    double *td = malloc((size_t)nm * TIME_REPS * sizeof *td), *ts = malloc((size_t)nm * TIME_REPS * sizeof *ts);
    float *x = malloc((size_t)nl * INSPARSE_N_SITES * width * sizeof *x), *y = malloc((size_t)width * sizeof *y);
    struct insparse_layer *ils = calloc((size_t)nl, sizeof *ils); /* the copies, timed */
    void *scratch = NULL;
    struct matmul_scratch ms = MATMUL_SCRATCH_INIT;
    int rc = -1;
    if (!td || !ts || !x || !y || !ils) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (int l = 0; l < nl; l++) {
        for (int site = 0; site < INSPARSE_N_SITES; site++)
            for (int64_t i = 0; i < width; i++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                const double u = (double)(seed >> 11) / 9007199254740992.0;
                x[((size_t)l * INSPARSE_N_SITES + site) * width + i] =
                    u < density[l * INSPARSE_N_SITES + site] ? (float)(0.05 + u) : 0.0f;
            }
        if (insparse_layer_build(&ils[l], &m->layers[l], ok + l * INSPARSE_N_MATS, 0, m->cfg.hidden_dim, NULL, err,
                                 errlen))
            goto out;
    }
    size_t need = 0; /* the largest copy's scratch for one row */
    for (int at = 0; at < nm; at++) {
        const struct insparse_q4t *q = ils[at / INSPARSE_N_MATS].q4t[at % INSPARSE_N_MATS];
        if (q && insparse_q4t_scratch_bytes(q, 1) > need) need = insparse_q4t_scratch_bytes(q, 1);
    }
    if (need && !(scratch = malloc(need))) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    char inner[256];
    for (int rep = 0; rep < TIME_REPS; rep++)
        for (int l = 0; l < nl; l++)
            for (int k = 0; k < INSPARSE_N_MATS; k++) {
                const int at = l * INSPARSE_N_MATS + k;
                const struct weight *w = insparse_mat_weight(&m->layers[l], k);
                const struct insparse_q4t *q = ils[l].q4t[k];
                const float *xs = x + ((size_t)l * INSPARSE_N_SITES + insparse_mat_site(k)) * width;
                if (!q) {
                    td[at * TIME_REPS + rep] = ts[at * TIME_REPS + rep] = 0;
                    continue;
                }
                for (int pass = 0; pass < 2; pass++) {
                    const int sparse = (pass + rep) % 2;
                    const double t0 = engine_now();
                    const int64_t r = sparse ? insparse_q4t_matmul(q, xs, 1, y, scratch, tp, inner, sizeof inner)
                                             : weight_matmul(tp, w, xs, 1, y, &ms, inner, sizeof inner);
                    const double dt = engine_now() - t0;
                    if (r < 0) {
                        snprintf(err, errlen, "timing layer %d %s: %s", l, insparse_mat_name(k), inner);
                        goto out;
                    }
                    (sparse ? ts : td)[at * TIME_REPS + rep] = dt;
                }
            }
    for (int at = 0; at < nm; at++) {
        wins[at] = 0;
        for (int rep = 0; rep < TIME_REPS; rep++) wins[at] += ts[at * TIME_REPS + rep] < td[at * TIME_REPS + rep];
        qsort(td + (size_t)at * TIME_REPS, TIME_REPS, sizeof *td, cmp_double);
        qsort(ts + (size_t)at * TIME_REPS, TIME_REPS, sizeof *ts, cmp_double);
        t_dense[at] = td[(size_t)at * TIME_REPS + TIME_REPS / 2];
        t_sparse[at] = ok[at] ? ts[(size_t)at * TIME_REPS + TIME_REPS / 2] : INFINITY;
    }
    rc = 0;
out:
    for (int l = 0; ils && l < nl; l++) insparse_layer_free(&ils[l]);
    free(ils);
    matmul_scratch_free(&ms);
    free(td);
    free(ts);
    free(x);
    free(y);
    free(scratch);
    return rc;
}

/* Input sparsity (insparse.h) from the matrix inputs' scores over the
 * calibration text: the allocation's thresholds, their densities, and per
 * (layer, matrix) whether its input-major copy is faster than the dense
 * kernels at that density, timed on this machine (time_matrices; always:
 * every matrix that can have one). An input none of whose matrices goes
 * input-major is left unmasked: its accuracy would be spent for nothing. */
static int calibrate_insparse(struct sidecar *sc, struct llama_model *m, const struct insparse_probe *probes,
                              double target, enum insparse_alloc alloc, int always, struct tpool *tp, char *err,
                              size_t errlen) {
    const int nl = sc->n_layers, ns = nl * INSPARSE_N_SITES;
    double *bytes = calloc((size_t)ns, sizeof *bytes), *sp = calloc((size_t)ns, sizeof *sp);
    if (!bytes || !sp || sidecar_alloc_insparse(sc, err, errlen)) {
        free(bytes);
        free(sp);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    double total[2] = {0, 0}, read[2] = {0, 0}; /* attention, FFN */
    for (int l = 0; l < nl; l++)
        for (int k = 0; k < INSPARSE_N_MATS; k++)
            bytes[l * INSPARSE_N_SITES + insparse_mat_site(k)] +=
                (double)model_weight_size(insparse_mat_weight(&m->layers[l], k));
    insparse_allocate(probes, nl, bytes, target, alloc, sp);
    const int nm = nl * INSPARSE_N_MATS;
    double *den = malloc((size_t)ns * sizeof *den), *t_dense = malloc((size_t)nm * sizeof *t_dense),
           *t_sparse = malloc((size_t)nm * sizeof *t_sparse);
    float *thr = malloc((size_t)ns * sizeof *thr);
    int *ok = calloc((size_t)nm, sizeof *ok), *wins = calloc((size_t)nm, sizeof *wins);
    int rc = -1;
    if (!den || !t_dense || !t_sparse || !thr || !ok || !wins) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (int l = 0; l < nl; l++) {
        for (int site = 0; site < INSPARSE_N_SITES; site++) {
            const int at = l * INSPARSE_N_SITES + site;
            thr[at] = insparse_probe_threshold(&probes[l], site, sp[at]);
            den[at] = insparse_probe_kept(&probes[l], site, thr[at]);
        }
        for (int k = 0; k < INSPARSE_N_MATS; k++) {
            const struct weight *w = insparse_mat_weight(&m->layers[l], k);
            ok[l * INSPARSE_N_MATS + k] = thr[l * INSPARSE_N_SITES + insparse_mat_site(k)] > 0 && insparse_q4t_fits(w);
        }
    }
    if (time_matrices(m, den, ok, tp, t_dense, t_sparse, wins, err, errlen)) goto out;
    printf("\ninput sparsity, target %.2f (%s): per layer the threshold and the share of inputs kept (density) of\n"
           "q/k/v's, o's, gate/up's and down's input on the calibration text, and per matrix q k v o gate up down\n"
           "the dense time over the input-major one for a decode row at that density (> 1: it pays; * = read\n"
           "input-major%s)\n",
           target, alloc == INSPARSE_ALLOC_GREEDY ? "greedy" : "uniform", always ? ": all, --in-kernels always" : "");
    double sum_dense = 0, sum_best = 0;
    int n_input_major = 0;
    for (int l = 0; l < nl; l++) {
        printf("%5d", l);
        for (int k = 0; k < INSPARSE_N_MATS; k++) {
            const int at = l * INSPARSE_N_MATS + k;
            /* faster beyond the noise: by 5% in the medians, and in 12 of the 15 pairs (a sign test: by
             * chance, with no difference, 1.8% of the time) */
            const int u = ok[at] && (always || (t_sparse[at] < 0.95 * t_dense[at] && wins[at] >= TIME_WINS));
            sc->in_use[at] = u;
            n_input_major += u;
            sum_dense += t_dense[at];
            sum_best += u ? t_sparse[at] : t_dense[at];
            if (ok[at]) printf(" %4.2f%s", t_dense[at] / t_sparse[at], u ? "*" : " ");
            else printf("   -- ");
        }
        for (int site = 0; site < INSPARSE_N_SITES; site++) {
            const int at = l * INSPARSE_N_SITES + site;
            int any = 0;
            for (int k = 0; k < INSPARSE_N_MATS; k++)
                if (insparse_mat_site(k) == site) any |= sc->in_use[l * INSPARSE_N_MATS + k];
            float t = thr[at];
            double d = den[at];
            if (!any) { /* dense: unmasked */
                t = 0.0f;
                d = 1.0;
            }
            sc->in_thr[at] = t;
            sc->in_density[at] = (float)d;
            const int ffn = site >= INSPARSE_GU;
            total[ffn] += bytes[at];
            read[ffn] += bytes[at] * (any ? (d * 4.0 + 1.0) / 5.0 : 1.0); /* q4t: 4 bits a row, 1 the scales */
            printf("  %s %.3g %4.1f%%", insparse_site_name(site), t, 100.0 * d);
        }
        printf("\n");
    }
    sc->in_target = (float)target;
    const double all = total[0] + total[1];
    printf("input sparsity: about %.1f%% of the matrices' bytes read per token on the calibration text (attention\n"
           "%.1f%%, FFN %.1f%%); %d of %d matrices input-major; the matrices' decode time %.1f%% of dense's (timed\n"
           "here, %d threads)\n",
           all > 0 ? 100.0 * (read[0] + read[1]) / all : 100.0, total[0] > 0 ? 100.0 * read[0] / total[0] : 100.0,
           total[1] > 0 ? 100.0 * read[1] / total[1] : 100.0, n_input_major, nm,
           sum_dense > 0 ? 100.0 * sum_best / sum_dense : 100.0, tpool_size(tp));
    rc = 0;
out:
    free(bytes);
    free(sp);
    free(den);
    free(t_dense);
    free(t_sparse);
    free(thr);
    free(ok);
    free(wins);
    return rc;
}

/* What the profile records of the dense pass, through its taps (model.h,
 * struct layer_taps): per layer and token the FFN input and |act(gate x)|
 * of every neuron (as half bits), the sum of (up x)^2, and with
 * --in-sparsity the matrix inputs' scores (input sparsity's probes, with
 * thresholds 0: recorded, not masked). */
struct profile_rec {
    const struct llama_config *c;
    struct sidecar *sc;
    uint16_t **absh;            /* [n_layers][T][hidden] */
    double *usq;                /* [n_layers][hidden] */
    struct insparse_model *ins; /* NULL: no probes */
    int64_t row;                /* the sample row of the batch's first token */
};

static void rec_input(void *ctx, int l, int site, float *x, int64_t count, int64_t col0, int64_t width) {
    const struct profile_rec *p = ctx;
    insparse_mask(&p->ins->layers[l], site, x, count, col0, width);
}

static void rec_ffn_hidden(void *ctx, int l, const float *xn, const float *gate, const float *up, int n, int64_t ld,
                           int64_t n0, int64_t n1) {
    const struct profile_rec *p = ctx;
    const struct llama_config *c = p->c;
    const int dim = c->dim;
    for (int t = 0; t < n; t++) {
        const float *g = gate + (size_t)t * ld, *u = up + (size_t)t * ld;
        uint16_t *dst = p->absh[l] + (size_t)(p->row + t) * ld;
        double *uq = p->usq + (size_t)l * ld;
        for (int64_t i = n0; i < n1; i++) {
            dst[i] = abs_half_bits(ffn_activation(c->ffn_gated ? g[i] : u[i], c->ffn_act));
            uq[i] += (double)u[i] * u[i];
        }
        uint16_t *xs = p->sc->layers[l].sample_x + (size_t)(p->row + t) * dim;
        for (int i = 0; i < dim; i++) xs[i] = fp16_from_f32(xn[(size_t)t * dim + i]);
    }
}

int cmd_profile(int argc, char **argv) {
    struct cli_opts o;
    if (cli_parse(&o, argc, argv, 2, CLI_MODEL | CLI_PROFILE | CLI_RUNTIME, "profile") != 0) return 1;
    if (!o.prompt_file) return cli_fail("profile needs the calibration text: -f FILE");
    if (o.eng.n_ctx == 0) o.eng.n_ctx = 512;
    o.eng.single_process = 1;
    o.eng.sidecar_path = NULL;
    char err[1024], out_path[4096], svg_path[4096];
    size_t len = 0;
    struct engine s;
    char *text = cli_open_with_text(&o, &s, &len, err, sizeof err);
    if (!text) return cli_fail(err);
    struct sidecar sc = {0};
    struct insparse_probe *probes = NULL; /* [n_layers], with --in-sparsity */
    struct insparse_model ins = {0};      /* their taps: thresholds 0 */
    uint16_t **absh = NULL; /* [n_layers][T][hidden] |act(gate x)| (then times scale_i) as half bits */
    uint64_t *hist = NULL;
    double *usq = NULL; /* [n_layers][hidden] sum of (up x)^2 */
    float *rowbuf = NULL;
    int32_t *tokens = NULL;
    float **sorted = NULL;
    size_t n_tokens = 0;
    int rc = 1;
    struct llama_state *st = &s.st;
    const struct llama_config *c = &s.model.cfg;
    const int n_ctx = s.n_ctx, n_layers = c->n_layers, dim = c->dim;
    const int64_t hidden = c->hidden_dim;
    if (o.output) snprintf(out_path, sizeof out_path, "%s", o.output);
    else sidecar_default_path(s.model_path, out_path, sizeof out_path);
    if (o.svg) {
        snprintf(svg_path, sizeof svg_path, "%s", o.svg);
    } else {
        size_t n = strlen(out_path);
        if (n > 5 && strcmp(out_path + n - 5, ".gguf") == 0) n -= 5;
        snprintf(svg_path, sizeof svg_path, "%.*s.svg", (int)n, out_path);
    }

    if (tokenizer_encode(s.tok, text, len, 0, &tokens, &n_tokens) != 0) {
        snprintf(err, sizeof err, "out of memory while tokenizing");
        goto out;
    }
    const int avail = (int)(n_tokens / (size_t)n_ctx);
    int n_chunks = (o.profile_tokens + n_ctx - 1) / n_ctx;
    if (avail < 1) {
        snprintf(err, sizeof err, "%s has %zu tokens; profiling needs at least one chunk of %d (-c)", o.prompt_file,
                 n_tokens, n_ctx);
        goto out;
    }
    if (n_chunks > avail) {
        log_warn("%s has %zu tokens: profiling %d chunks of %d instead of the %d tokens asked for", o.prompt_file,
                 n_tokens, avail, n_ctx, o.profile_tokens);
        n_chunks = avail;
    }
    const int64_t T = (int64_t)n_chunks * n_ctx;
    fprintf(stderr, "profile: %s, %d chunks of %d tokens (of %zu) from %s, target sparsity %.2f\n", s.model_path,
            n_chunks, n_ctx, n_tokens, o.prompt_file, o.sparsity);

    if (sidecar_init(&sc, n_layers, dim, hidden, err, sizeof err) || sidecar_alloc_samples(&sc, T, err, sizeof err))
        goto out;
    absh = calloc((size_t)n_layers, sizeof *absh);
    hist = malloc(32768 * sizeof *hist);
    usq = calloc((size_t)n_layers * hidden, sizeof *usq);
    rowbuf = malloc((size_t)hidden * sizeof *rowbuf);
    if (!absh || !hist || !usq || !rowbuf) goto oom;
    if (o.in_sparsity > 0) { /* the matrix inputs' scores, recorded by the dense pass's masks (thresholds 0) */
        if (!(probes = malloc((size_t)n_layers * sizeof *probes)) ||
            insparse_model_create(&ins, n_layers, err, sizeof err) != 0)
            goto oom;
        for (int l = 0; l < n_layers; l++) {
            insparse_probe_reset(&probes[l]);
            ins.layers[l].probe = &probes[l];
        }
    }
    for (int l = 0; l < n_layers; l++)
        if (!(absh[l] = malloc((size_t)(T * hidden) * sizeof(uint16_t)))) {
            snprintf(err, sizeof err, "out of memory: profiling %lld tokens keeps %.0f MiB of activations (use --tokens)",
                     (long long)T, (double)T * hidden * n_layers * 2 / 1048576.0);
            goto out;
        }

    /* the dense pass, its taps keeping each layer's FFN input and |act(gate x)| */
    struct profile_rec rec = {c, &sc, absh, usq, probes ? &ins : NULL, 0};
    st->taps = (struct layer_taps){.ctx = &rec, .input = probes ? rec_input : NULL, .ffn_hidden = rec_ffn_hidden};
    const double t0 = engine_now();
    const int bos = tokenizer_add_bos(s.tok);
    for (int ch = 0; ch < n_chunks; ch++) {
        int32_t *chunk = tokens + (size_t)((int64_t)ch * avail / n_chunks) * n_ctx;
        int32_t saved = chunk[0];
        if (bos) chunk[0] = tokenizer_bos(s.tok);
        for (int b = 0; b < n_ctx; b += s.max_batch) {
            const int n = n_ctx - b < s.max_batch ? n_ctx - b : s.max_batch;
            if (forward(st, chunk + b, n, b, NULL, 0, err, sizeof err) != 0) {
                chunk[0] = saved;
                goto out;
            }
            rec.row += n;
            progress((int)rec.row, (int)T, t0);
        }
        chunk[0] = saved;
    }
    st->taps = (struct layer_taps){0};

    /* thresholds, frequencies, fired masks */
    const int64_t fb = sidecar_fired_bytes(&sc);
    sorted = calloc((size_t)n_layers, sizeof *sorted);
    if (!sorted) goto oom;
    printf("%5s %11s %8s %10s %10s\n", "layer", "threshold", "fired", "50%-cover", "90%-cover");
    for (int l = 0; l < n_layers; l++) {
        struct sidecar_layer *L = &sc.layers[l];
        uint16_t *a = absh[l];
        /* scale_i = rms(up_i x) * |down column i| (sidecar.h), normalised to
         * mean 1 so that the weighted values stay in half precision's range */
        const struct weight *wd = &s.model.layers[l].w_down;
        const struct quant_traits *dq = quant_traits((enum hearth_type)wd->type);
        const size_t drow = hearth_row_size(wd->type, hidden);
        double *dn = calloc((size_t)hidden, sizeof *dn);
        if (!dn) goto oom;
        for (int r = 0; r < dim; r++) {
            dq->to_float((const char *)wd->data + (size_t)r * drow, rowbuf, hidden);
            for (int64_t i = 0; i < hidden; i++) dn[i] += (double)rowbuf[i] * rowbuf[i];
        }
        double mean = 0;
        for (int64_t i = 0; i < hidden; i++) {
            dn[i] = sqrt(dn[i]) * (c->ffn_gated ? sqrt(usq[(size_t)l * hidden + i] / (double)T) : 1.0);
            mean += dn[i] / (double)hidden;
        }
        for (int64_t i = 0; i < hidden; i++) L->scale[i] = mean > 0 ? (float)(dn[i] / mean) : 1.0f;
        free(dn);
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < hidden; i++) {
                uint16_t *v = &a[(size_t)t * hidden + i];
                *v = abs_half_bits(fp16_to_f32(*v) * L->scale[i]);
            }
        memset(hist, 0, 32768 * sizeof *hist);
        for (int64_t i = 0; i < T * hidden; i++) hist[a[i]]++;
        /* the smallest half value at or below which `sparsity` of all values lie */
        const uint64_t want = (uint64_t)ceil((double)o.sparsity * (double)(T * hidden));
        uint64_t below = 0;
        uint16_t tb = 0;
        if (want > 0)
            for (tb = 0; tb < 0x7c00; tb++)
                if ((below += hist[tb]) >= want) break;
        L->threshold = want > 0 ? fp16_to_f32(tb) : 0.0f;
        int64_t fired_total = 0;
        int64_t *cnt = calloc((size_t)hidden, sizeof *cnt);
        if (!cnt) goto oom;
        for (int64_t t = 0; t < T; t++) {
            uint8_t *bits = L->sample_fired + (size_t)t * fb;
            const uint16_t *at = a + (size_t)t * hidden;
            for (int64_t i = 0; i < hidden; i++)
                if (want > 0 ? at[i] > tb : at[i] > 0) {
                    bits[i / 8] |= (uint8_t)(1u << (i % 8));
                    cnt[i]++;
                    fired_total++;
                }
        }
        for (int64_t i = 0; i < hidden; i++) L->freq[i] = (float)((double)cnt[i] / (double)T);
        free(cnt);
        if (!(sorted[l] = malloc((size_t)hidden * sizeof(float)))) goto oom;
        memcpy(sorted[l], L->freq, (size_t)hidden * sizeof(float));
        qsort(sorted[l], (size_t)hidden, sizeof(float), cmp_float_desc);
        printf("%5d %11.5g %7.1f%% %9.1f%% %9.1f%%\n", l, L->threshold,
               100.0 * (double)fired_total / (double)(T * hidden), 100 * coverage(sorted[l], hidden, 0.5),
               100 * coverage(sorted[l], hidden, 0.9));
    }

    if (probes && calibrate_insparse(&sc, &s.model, probes, o.in_sparsity, (enum insparse_alloc)o.in_alloc,
                                     o.in_always, st->tp, err, sizeof err))
        goto out;

    /* provenance */
    uint8_t digest[SHA256_DIGEST_SIZE];
    char hex[SHA256_HEX_SIZE];
    if (sha256_file(s.model_path, digest, err, sizeof err) != 0) goto out;
    snprintf(sc.model_sha256, sizeof sc.model_sha256, "%s", sha256_hex(digest, hex));
    sc.model_bytes = gguf_file_size(s.model.gguf);
    const char *base = strrchr(s.model_path, '/');
    snprintf(sc.model_name, sizeof sc.model_name, "%.255s", base ? base + 1 : s.model_path);
    sha256_buf(text, len, digest);
    snprintf(sc.corpus_sha256, sizeof sc.corpus_sha256, "%s", sha256_hex(digest, hex));
    base = strrchr(o.prompt_file, '/');
    snprintf(sc.corpus, sizeof sc.corpus, "%.255s", base ? base + 1 : o.prompt_file);
    sc.tokens = T;
    sc.sparsity = o.sparsity;
    sc.n_ctx = n_ctx;
    if (sidecar_save(&sc, out_path, err, sizeof err) != 0) goto out;
    const int64_t *ns = NULL;
    int64_t *nv = malloc((size_t)n_layers * sizeof *nv);
    if (!nv) goto oom;
    for (int l = 0; l < n_layers; l++) nv[l] = hidden;
    ns = nv;
    char title[1024];
    snprintf(title, sizeof title, "%.80s: FFN firing frequency, sparsity %.2f, %lld tokens", sc.model_name,
             o.sparsity, (long long)T);
    int prc = plot_firing_svg(svg_path, title, n_layers, (const float *const *)sorted, ns, err, sizeof err);
    free(nv);
    if (prc != 0) goto out;
    fprintf(stderr, "profile: %lld tokens in %.1f s; wrote %s and %s\n", (long long)T, engine_now() - t0, out_path,
            svg_path);
    rc = 0;
    goto out;
oom:
    snprintf(err, sizeof err, "out of memory");
out:
    if (rc) cli_fail(err);
    if (absh)
        for (int l = 0; l < n_layers; l++) free(absh[l]);
    if (sorted)
        for (int l = 0; l < n_layers; l++) free(sorted[l]);
    free(sorted);
    free(absh);
    free(hist);
    free(usq);
    free(rowbuf);
    sidecar_free(&sc);
    free(probes);
    if (ins.layers) insparse_model_free(&ins);
    free(tokens);
    free(text);
    engine_close(&s);
    return rc;
}
