/* hearth plan: predictors and the hot/cold placement, into the sidecar.
 *
 * 1. Predictors. Per layer a low-rank MLP (core/predictor.h) is trained on
 *    the profile's (FFN input, fired) samples. The rank follows the layer's
 *    statistics (denser, flatter layers get more). The last fifth of the
 *    samples (other chunks of the corpus) is held out: recall and precision
 *    are measured there, with the run-time (8-bit) form of the predictor.
 *    Existing predictors are kept unless --retrain.
 *    A predictor only pays where the gate rows it saves (the share of cold
 *    neurons it rules out) outweigh its own weights, read for every token:
 *    --predictors auto (the default) keeps it in the layers where that
 *    holds with every neuron cold, on/off force it.
 * 2. Placement. Within a layer every neuron costs the same, so the hot set is
 *    always the most frequently firing neurons; how many per layer is an
 *    integer linear program (core/plan.h, GLPK): maximise the expected
 *    firings the GPU worker serves per token under the budget, with the
 *    fixed residents (attention weights, embeddings and LM head, the KV
 *    cache at -c / --kv-budget, every layer's predictor) counted first.
 *    Positions are written as each layer's neurons ordered by frequency. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "engine.h"
#include "fetch.h"
#include "fp16.h"
#include "log.h"
#include "plan.h"
#include "predictor.h"
#include "sha256.h"
#include "sidecar.h"
#include "sparse.h"
#include "tpool.h"
#include "types.h"

/* the sort key of the placement: frequency, then neuron id (deterministic) */
static const float *g_freq;
static int cmp_order(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_freq[x] != g_freq[y]) return g_freq[x] > g_freq[y] ? -1 : 1;
    return (x > y) - (x < y);
}

static int train_layer(struct sidecar *sc, int l, const struct cli_opts *o, struct tpool *tp, char *err,
                       size_t errlen) {
    struct sidecar_layer *L = &sc->layers[l];
    const int64_t n = L->n_samples, dim = sc->dim, hidden = sc->hidden, fb = sidecar_fired_bytes(sc);
    const int64_t n_train = n - n / 5, n_test = n - n_train;
    if (n_train < 1 || n_test < 1) {
        snprintf(err, errlen, "layer %d has %lld profile samples; training needs at least 2", l, (long long)n);
        return -1;
    }
    float *x = malloc((size_t)(n * dim) * sizeof *x);
    uint8_t *y = malloc((size_t)(n * hidden));
    uint8_t *mask = malloc((size_t)(n_test * hidden));
    int32_t *ids = malloc((size_t)hidden * sizeof *ids);
    int rc = -1;
    struct predictor_rt rt;
    int have_rt = 0;
    if (!x || !y || !mask || !ids) {
        snprintf(err, errlen, "out of memory for layer %d's samples", l);
        goto done;
    }
    for (int64_t i = 0; i < n * dim; i++) x[i] = fp16_to_f32(L->sample_x[i]);
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < hidden; i++)
            y[t * hidden + i] = (uint8_t)((L->sample_fired[t * fb + i / 8] >> (i % 8)) & 1);
    if (L->has_pred) predictor_free(&L->pred);
    L->has_pred = 0;
    const int64_t rank = predictor_choose_rank(L->freq, hidden, o->max_rank);
    if (predictor_init(&L->pred, dim, rank, hidden, 0x5eed0000u + (uint64_t)l, err, errlen)) goto done;
    L->has_pred = 1;
    struct predictor_train_opts to;
    predictor_train_opts_default(&to);
    if (o->epochs > 0) to.epochs = o->epochs;
    to.seed = 0x7a11u + (uint64_t)l;
    to.calib_frac = 0.15f; /* the cutoff is chosen on samples the training did not see */
    const double t0 = engine_now();
    if (predictor_train(&L->pred, x, y, n_train, &to, tp, err, errlen)) goto done;
    /* held out, with the run-time form */
    for (int64_t i = 0; i < hidden; i++) ids[i] = (int32_t)i;
    if (predictor_rt_init(&rt, &L->pred, ids, hidden, err, errlen)) goto done;
    have_rt = 1;
    struct predictor_rt_scratch rs = {0};
    int erc = 0;
    for (int64_t t = 0; t < n_test && !erc; t += 64) {
        int nt = n_test - t < 64 ? (int)(n_test - t) : 64;
        erc = predictor_rt_eval(&rt, x + (size_t)(n_train + t) * dim, nt, mask + (size_t)t * hidden, &rs, tp, err,
                                errlen);
    }
    predictor_rt_scratch_free(&rs);
    if (erc) goto done;
    int64_t tp_ = 0, fp = 0, fn = 0, pred = 0;
    for (int64_t i = 0; i < n_test * hidden; i++) {
        const int want = y[n_train * hidden + i], got = mask[i] != 0;
        tp_ += want && got;
        fp += !want && got;
        fn += want && !got;
        pred += got;
    }
    L->recall = tp_ + fn ? (float)tp_ / (float)(tp_ + fn) : 1.0f;
    L->precision = tp_ + fp ? (float)tp_ / (float)(tp_ + fp) : 1.0f;
    L->predicted = (float)pred / (float)(n_test * hidden);
    fprintf(stderr, "plan: layer %2d predictor rank %3lld: held-out recall %.3f precision %.3f, predicts %.1f%% (%.1f s)\n",
            l, (long long)rank, L->recall, L->precision, 100.0 * L->predicted, engine_now() - t0);
    rc = 0;
done:
    if (have_rt) predictor_rt_free(&rt);
    free(x);
    free(y);
    free(mask);
    free(ids);
    return rc;
}

int cmd_plan(int argc, char **argv) {
    struct cli_opts o;
    if (cli_parse(&o, argc, argv, 2, CLI_MODEL | CLI_PLAN | CLI_RUNTIME, "plan") != 0) return 1;
    if (!o.eng.sidecar_path) return cli_fail("plan needs the profile: --sidecar FILE (from hearth profile)");
    if (o.gpu_budget < 0) return cli_fail("plan needs the GPU memory budget: --gpu-budget SIZE (e.g. 40M, 2GiB)");
    char err[1024], model_path[4096];
    if (o.eng.model_path) snprintf(model_path, sizeof model_path, "%s", o.eng.model_path);
    else if (fetch_default_model(model_path, sizeof model_path, err, sizeof err) != 0) return cli_fail(err);
    struct llama_model m;
    if (model_load(&m, model_path, err, sizeof err) != 0) return cli_fail(err);
    struct sidecar sc;
    if (sidecar_load(&sc, o.eng.sidecar_path, 1, err, sizeof err) != 0) {
        model_free(&m);
        return cli_fail(err);
    }
    const struct llama_config *c = &m.cfg;
    struct tpool *tp = NULL;
    struct plan_layer *pl = NULL;
    int64_t *hot = NULL;
    int rc = 1;
    uint8_t digest[SHA256_DIGEST_SIZE];
    char hex[SHA256_HEX_SIZE];
    if (sidecar_check_model(&sc, &m, err, sizeof err)) goto out;
    if (sha256_file(model_path, digest, err, sizeof err)) goto out;
    if (strcmp(sha256_hex(digest, hex), sc.model_sha256) != 0) {
        snprintf(err, sizeof err, "%.400s was profiled on %.128s (sha256 %.16s...), not on %.400s (sha256 %.16s...)",
                 o.eng.sidecar_path, sc.model_name, sc.model_sha256, model_path, hex);
        goto out;
    }
    if (!(tp = tpool_create(o.eng.n_threads > 0 ? o.eng.n_threads : engine_default_threads(), err, sizeof err)))
        goto out;

    /* 1. predictors */
    for (int l = 0; l < c->n_layers; l++) {
        if (sc.layers[l].has_pred && !o.retrain) continue;
        if (sc.layers[l].n_samples == 0) {
            snprintf(err, sizeof err, "%s has no profile samples for layer %d (run hearth profile again)",
                     o.eng.sidecar_path, l);
            goto out;
        }
        if (train_layer(&sc, l, &o, tp, err, sizeof err)) goto out;
    }

    /* which layers use their predictor: the gate rows it spares (all
     * neurons cold, its held-out predicted share) against its own bytes */
    const struct llama_layer *lg = &m.layers[0];
    const double gate_row = (double)hearth_row_size(c->ffn_gated ? lg->w_gate.type : lg->w_up.type, c->dim);
    int n_use = 0;
    for (int l = 0; l < c->n_layers; l++) {
        struct sidecar_layer *L = &sc.layers[l];
        const double saved = (double)sc.hidden * (1.0 - L->predicted) * gate_row;
        L->use_pred = o.predictors >= 0 ? o.predictors : saved > (double)predictor_rt_size(L->pred.dim, L->pred.rank, sc.hidden);
        n_use += L->use_pred;
    }
    fprintf(stderr, "plan: predictors in %d of %d layers (%s)\n", n_use, c->n_layers,
            o.predictors < 0 ? "where the gate rows they spare outweigh their own weights" : "forced");

    /* 2. the bytes: fixed residents, and one hot neuron */
    size_t fixed = model_weight_size(&m.tok_embd) + (m.output.data != m.tok_embd.data ? model_weight_size(&m.output) : 0) +
                   (size_t)c->dim * sizeof(float);
    size_t pred_bytes = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const struct llama_layer *ly = &m.layers[l];
        fixed += model_weight_size(&ly->wq) + model_weight_size(&ly->wk) + model_weight_size(&ly->wv) + model_weight_size(&ly->wo) +
                 2 * (size_t)c->dim * sizeof(float);
        if (sc.layers[l].use_pred) pred_bytes += predictor_rt_size(sc.layers[l].pred.dim, sc.layers[l].pred.rank, sc.hidden);
    }
    fixed += pred_bytes;
    const int n_ctx = o.eng.n_ctx > 0 ? o.eng.n_ctx : (c->n_ctx_train < 4096 ? c->n_ctx_train : 4096);
    struct kv_config kv = o.eng.kv;
    if (kv_config_resolve(&kv, n_ctx, err, sizeof err)) goto out;
    const int head_dim = c->head_dim;
    const size_t kv_bytes = kv_config_active(&kv, n_ctx)
                                ? kv_config_bytes(&kv, c->n_layers, c->n_kv_heads, head_dim, 1)
                                : (size_t)2 * c->n_layers * n_ctx * c->n_kv_heads * head_dim * sizeof(float);
    fixed += kv_bytes;
    const struct llama_layer *l0 = &m.layers[0];
    const int64_t neuron_bytes =
        (int64_t)(hearth_row_size(l0->w_up.type, c->dim) +
                  (c->ffn_gated ? hearth_row_size(l0->w_gate.type, c->dim) : 0) +
                  /* a down column: dim weights of the down type */
                  (size_t)c->dim * hearth_type_size(l0->w_down.type) / (size_t)hearth_type_blck(l0->w_down.type));

    pl = calloc((size_t)c->n_layers, sizeof *pl);
    hot = calloc((size_t)c->n_layers, sizeof *hot);
    if (!pl || !hot) {
        snprintf(err, sizeof err, "out of memory");
        goto out;
    }
    for (int l = 0; l < c->n_layers; l++) {
        struct sidecar_layer *L = &sc.layers[l];
        free(L->order);
        if (!(L->order = malloc((size_t)sc.hidden * sizeof *L->order))) {
            snprintf(err, sizeof err, "out of memory");
            goto out;
        }
        for (int64_t i = 0; i < sc.hidden; i++) L->order[i] = (int32_t)i;
        g_freq = L->freq;
        qsort(L->order, (size_t)sc.hidden, sizeof *L->order, cmp_order);
        float *sorted = malloc((size_t)sc.hidden * sizeof *sorted);
        if (!sorted) {
            snprintf(err, sizeof err, "out of memory");
            goto out;
        }
        for (int64_t i = 0; i < sc.hidden; i++) sorted[i] = L->freq[L->order[i]];
        pl[l].n = sc.hidden;
        pl[l].freq = sorted;
        pl[l].neuron_bytes = neuron_bytes;
    }
    struct plan_problem pp = {c->n_layers, pl, SPARSE_GROUP, o.min_hot, o.gpu_budget, (int64_t)fixed, 0};
    struct plan_result pr = {0};
    pr.hot = hot;
    if (plan_solve(&pp, &pr, err, sizeof err)) goto out;

    /* 3. the table and the file */
    printf("GPU budget %.1f MiB: fixed %.1f MiB (attention/embeddings %.1f, KV cache %.1f at %d positions, "
           "predictors %.1f), hot neurons %.1f MiB\n",
           o.gpu_budget / 1048576.0, fixed / 1048576.0, (fixed - kv_bytes - pred_bytes) / 1048576.0,
           kv_bytes / 1048576.0, n_ctx, pred_bytes / 1048576.0, (pr.bytes - (int64_t)fixed) / 1048576.0);
    printf("%5s %8s %8s %12s %10s %5s %7s %9s %9s %5s\n", "layer", "hot", "hot%", "firings-hot", "MiB", "rank",
           "recall", "precision", "predicted", "used");
    for (int l = 0; l < c->n_layers; l++) {
        struct sidecar_layer *L = &sc.layers[l];
        double all = 0, served = 0;
        for (int64_t i = 0; i < sc.hidden; i++) {
            all += pl[l].freq[i];
            if (i < hot[l]) served += pl[l].freq[i];
        }
        L->hot = hot[l];
        printf("%5d %8lld %7.1f%% %11.1f%% %10.2f %5lld %7.3f %9.3f %8.1f%% %5s\n", l, (long long)hot[l],
               100.0 * hot[l] / sc.hidden, all > 0 ? 100.0 * served / all : 0.0, hot[l] * neuron_bytes / 1048576.0,
               (long long)L->pred.rank, L->recall, L->precision, 100.0 * L->predicted, L->use_pred ? "yes" : "no");
    }
    printf("firings served by the GPU worker: %.1f%% (%s)\n", pr.total > 0 ? 100.0 * pr.served / pr.total : 0.0,
           pr.optimal ? "optimal" : "best found within the time limit");
    sc.planned = 1;
    sc.gpu_budget = o.gpu_budget;
    sc.fixed_bytes = (int64_t)fixed;
    sc.group = SPARSE_GROUP;
    sc.min_hot = o.min_hot;
    if (sidecar_save(&sc, o.eng.sidecar_path, err, sizeof err)) goto out;
    fprintf(stderr, "plan: wrote %s\n", o.eng.sidecar_path);
    rc = 0;
out:
    if (rc) cli_fail(err);
    if (pl)
        for (int l = 0; l < c->n_layers; l++) free((void *)pl[l].freq);
    free(pl);
    free(hot);
    tpool_destroy(tp);
    sidecar_free(&sc);
    model_free(&m);
    return rc;
}
