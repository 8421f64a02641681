/* sidecar: see sidecar.h. */
#include "sidecar.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "types.h"

int sidecar_init(struct sidecar *sc, int n_layers, int64_t dim, int64_t hidden, char *err, size_t errlen) {
    memset(sc, 0, sizeof *sc);
    if (n_layers <= 0 || n_layers > 4096 || dim <= 0 || hidden <= 0 || hidden > (1 << 24)) {
        snprintf(err, errlen, "sidecar: bad shape %d layers, dim %lld, hidden %lld", n_layers, (long long)dim,
                 (long long)hidden);
        return -1;
    }
    sc->n_layers = n_layers;
    sc->dim = dim;
    sc->hidden = hidden;
    sc->layers = calloc((size_t)n_layers, sizeof *sc->layers);
    if (!sc->layers) goto oom;
    for (int l = 0; l < n_layers; l++) {
        sc->layers[l].freq = calloc((size_t)hidden, sizeof(float));
        sc->layers[l].scale = malloc((size_t)hidden * sizeof(float));
        if (!sc->layers[l].freq || !sc->layers[l].scale) goto oom;
        for (int64_t i = 0; i < hidden; i++) sc->layers[l].scale[i] = 1.0f;
    }
    return 0;
oom:
    sidecar_free(sc);
    snprintf(err, errlen, "sidecar: out of memory");
    return -1;
}

void sidecar_free(struct sidecar *sc) {
    if (sc->layers) {
        for (int l = 0; l < sc->n_layers; l++) {
            struct sidecar_layer *L = &sc->layers[l];
            free(L->freq);
            free(L->scale);
            free(L->sample_x);
            free(L->sample_fired);
            free(L->order);
            if (L->has_pred) predictor_free(&L->pred);
        }
        free(sc->layers);
    }
    free(sc->in_thr);
    free(sc->in_density);
    free(sc->in_use);
    memset(sc, 0, sizeof *sc);
}

int sidecar_alloc_samples(struct sidecar *sc, int64_t n, char *err, size_t errlen) {
    for (int l = 0; l < sc->n_layers; l++) {
        struct sidecar_layer *L = &sc->layers[l];
        free(L->sample_x);
        free(L->sample_fired);
        L->sample_x = malloc((size_t)n * sc->dim * sizeof(uint16_t));
        L->sample_fired = calloc((size_t)n * sidecar_fired_bytes(sc), 1);
        L->n_samples = n;
        if (!L->sample_x || !L->sample_fired) {
            snprintf(err, errlen, "sidecar: out of memory for %lld samples", (long long)n);
            return -1;
        }
    }
    return 0;
}

int sidecar_alloc_insparse(struct sidecar *sc, char *err, size_t errlen) {
    free(sc->in_thr);
    free(sc->in_density);
    free(sc->in_use);
    sc->in_thr = calloc((size_t)sc->n_layers * SIDECAR_IN_SITES, sizeof(float));
    sc->in_density = calloc((size_t)sc->n_layers * SIDECAR_IN_SITES, sizeof(float));
    sc->in_use = calloc((size_t)sc->n_layers * SIDECAR_IN_MATS, sizeof(int32_t));
    if (!sc->in_thr || !sc->in_density || !sc->in_use) {
        snprintf(err, errlen, "sidecar: out of memory");
        return -1;
    }
    return 0;
}

void sidecar_default_path(const char *model_path, char *out, size_t outlen) {
    size_t n = strlen(model_path);
    if (n > 5 && strcmp(model_path + n - 5, ".gguf") == 0) n -= 5;
    snprintf(out, outlen, "%.*s.hearth.gguf", (int)n, model_path);
}

/* ---- writing ---- */

static int add(gguf_writer_t *w, const char *name, enum hearth_type type, int64_t ne0, int64_t ne1, const void *data,
               char *err, size_t errlen) {
    const int64_t ne[2] = {ne0, ne1};
    size_t nbytes = hearth_row_size(type, ne0) * (size_t)ne1;
    return gguf_writer_add_tensor(w, name, type, ne1 > 1 ? 2 : 1, ne, data, nbytes, err, errlen);
}

int sidecar_save(const struct sidecar *sc, const char *path, char *err, size_t errlen) {
    gguf_writer_t *w = gguf_writer_create();
    float *per_layer = malloc((size_t)sc->n_layers * sizeof(float));
    int32_t *hot = malloc((size_t)sc->n_layers * sizeof(int32_t));
    int rc = -1;
    char name[96];
    if (!w || !per_layer || !hot) {
        snprintf(err, errlen, "sidecar: out of memory");
        goto done;
    }
    gguf_writer_set_str(w, "general.architecture", "hearth-sidecar");
    gguf_writer_set_u32(w, "hearth.sidecar.version", SIDECAR_VERSION);
    gguf_writer_set_u32(w, "hearth.sidecar.n_layers", (uint32_t)sc->n_layers);
    gguf_writer_set_u32(w, "hearth.sidecar.dim", (uint32_t)sc->dim);
    gguf_writer_set_u32(w, "hearth.sidecar.hidden", (uint32_t)sc->hidden);
    gguf_writer_set_str(w, "hearth.model.sha256", sc->model_sha256);
    gguf_writer_set_u64(w, "hearth.model.bytes", sc->model_bytes);
    gguf_writer_set_str(w, "hearth.model.name", sc->model_name);
    gguf_writer_set_str(w, "hearth.profile.corpus", sc->corpus);
    gguf_writer_set_str(w, "hearth.profile.corpus_sha256", sc->corpus_sha256);
    gguf_writer_set_u64(w, "hearth.profile.tokens", (uint64_t)sc->tokens);
    gguf_writer_set_f32(w, "hearth.profile.sparsity", sc->sparsity);
    gguf_writer_set_u32(w, "hearth.profile.n_ctx", (uint32_t)sc->n_ctx);
    for (int l = 0; l < sc->n_layers; l++) per_layer[l] = sc->layers[l].threshold;
    if (add(w, "ffn_threshold", HEARTH_TYPE_F32, sc->n_layers, 1, per_layer, err, errlen)) goto done;
    for (int l = 0; l < sc->n_layers; l++) {
        const struct sidecar_layer *L = &sc->layers[l];
        snprintf(name, sizeof name, "blk.%d.ffn_freq", l);
        if (add(w, name, HEARTH_TYPE_F32, sc->hidden, 1, L->freq, err, errlen)) goto done;
        snprintf(name, sizeof name, "blk.%d.ffn_scale", l);
        if (add(w, name, HEARTH_TYPE_F32, sc->hidden, 1, L->scale, err, errlen)) goto done;
        if (L->n_samples > 0 && L->sample_x) {
            snprintf(name, sizeof name, "blk.%d.sample_x", l);
            if (add(w, name, HEARTH_TYPE_F16, sc->dim, L->n_samples, L->sample_x, err, errlen)) goto done;
            snprintf(name, sizeof name, "blk.%d.sample_fired", l);
            if (add(w, name, HEARTH_TYPE_I8, sidecar_fired_bytes(sc), L->n_samples, L->sample_fired, err, errlen))
                goto done;
        }
    }
    if (sc->planned) {
        gguf_writer_set_u64(w, "hearth.plan.gpu_budget", (uint64_t)sc->gpu_budget);
        gguf_writer_set_u64(w, "hearth.plan.fixed_bytes", (uint64_t)sc->fixed_bytes);
        gguf_writer_set_u32(w, "hearth.plan.group", (uint32_t)sc->group);
        gguf_writer_set_u32(w, "hearth.plan.min_hot", (uint32_t)sc->min_hot);
        for (int l = 0; l < sc->n_layers; l++) hot[l] = (int32_t)sc->layers[l].hot;
        if (add(w, "ffn_hot", HEARTH_TYPE_I32, sc->n_layers, 1, hot, err, errlen)) goto done;
        for (int l = 0; l < sc->n_layers; l++) hot[l] = sc->layers[l].use_pred != 0;
        if (add(w, "pred_use", HEARTH_TYPE_I32, sc->n_layers, 1, hot, err, errlen)) goto done;
        static const char *const metric[4] = {"pred_cutoff", "pred_recall", "pred_precision", "pred_predicted"};
        for (int k = 0; k < 4; k++) {
            for (int l = 0; l < sc->n_layers; l++) {
                const struct sidecar_layer *L = &sc->layers[l];
                per_layer[l] = k == 0 ? L->pred.cutoff : k == 1 ? L->recall : k == 2 ? L->precision : L->predicted;
            }
            if (add(w, metric[k], HEARTH_TYPE_F32, sc->n_layers, 1, per_layer, err, errlen)) goto done;
        }
        for (int l = 0; l < sc->n_layers; l++) {
            const struct sidecar_layer *L = &sc->layers[l];
            const struct predictor *p = &L->pred;
            snprintf(name, sizeof name, "blk.%d.ffn_order", l);
            if (add(w, name, HEARTH_TYPE_I32, sc->hidden, 1, L->order, err, errlen)) goto done;
            snprintf(name, sizeof name, "blk.%d.pred_w1", l);
            if (add(w, name, HEARTH_TYPE_F32, sc->dim, p->rank, p->w1, err, errlen)) goto done;
            snprintf(name, sizeof name, "blk.%d.pred_b1", l);
            if (add(w, name, HEARTH_TYPE_F32, p->rank, 1, p->b1, err, errlen)) goto done;
            snprintf(name, sizeof name, "blk.%d.pred_w2", l);
            if (add(w, name, HEARTH_TYPE_F32, p->rank, sc->hidden, p->w2, err, errlen)) goto done;
            snprintf(name, sizeof name, "blk.%d.pred_b2", l);
            if (add(w, name, HEARTH_TYPE_F32, sc->hidden, 1, p->b2, err, errlen)) goto done;
        }
    }
    if (sc->in_thr) {
        gguf_writer_set_f32(w, "hearth.insparse.target", sc->in_target);
        if (add(w, "insparse_thr", HEARTH_TYPE_F32, SIDECAR_IN_SITES, sc->n_layers, sc->in_thr, err, errlen) ||
            add(w, "insparse_density", HEARTH_TYPE_F32, SIDECAR_IN_SITES, sc->n_layers, sc->in_density, err,
                errlen) ||
            add(w, "insparse_use", HEARTH_TYPE_I32, SIDECAR_IN_MATS, sc->n_layers, sc->in_use, err, errlen))
            goto done;
    }
    if (gguf_writer_error(w)) {
        snprintf(err, errlen, "sidecar %s: %s", path, gguf_writer_error(w));
        goto done;
    }
    rc = gguf_writer_write(w, path, err, errlen) == 0 ? 0 : -1;
done:
    gguf_writer_destroy(w);
    free(per_layer);
    free(hot);
    return rc;
}

/* ---- reading ---- */

/* The tensor NAME of exactly this type and shape ([ne0] or [ne0, ne1]). */
static const void *get(gguf_ctx_t *g, const char *path, const char *name, enum hearth_type type, int64_t ne0,
                       int64_t ne1, char *err, size_t errlen) {
    const struct gguf_tensor *t = gguf_find_tensor(g, name);
    if (!t) {
        snprintf(err, errlen, "sidecar %s: tensor %s is missing", path, name);
        return NULL;
    }
    if (t->type != (uint32_t)type || t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1) {
        snprintf(err, errlen, "sidecar %s: tensor %s is %s [%lld, %lld], expected %s [%lld, %lld]", path, name,
                 hearth_type_name(t->type), (long long)t->ne[0], (long long)t->ne[1], hearth_type_name(type),
                 (long long)ne0, (long long)ne1);
        return NULL;
    }
    return t->data;
}

static void *dup(const void *src, size_t n) {
    void *p = malloc(n ? n : 1);
    if (p) memcpy(p, src, n);
    return p;
}

static int get_str(gguf_ctx_t *g, const char *path, const char *key, char *out, size_t outlen, char *err,
                   size_t errlen) {
    const char *s;
    if (gguf_get_str(g, key, &s, err, errlen)) {
        char inner[256];
        snprintf(inner, sizeof inner, "%s", err);
        snprintf(err, errlen, "sidecar %s: %s", path, inner);
        return -1;
    }
    snprintf(out, outlen, "%s", s);
    return 0;
}

static int get_int(gguf_ctx_t *g, const char *path, const char *key, int64_t lo, int64_t hi, int64_t *out, char *err,
                   size_t errlen) {
    if (gguf_get_int(g, key, out, err, errlen)) {
        char inner[256];
        snprintf(inner, sizeof inner, "%s", err);
        snprintf(err, errlen, "sidecar %s: %s", path, inner);
        return -1;
    }
    if (*out < lo || *out > hi) {
        snprintf(err, errlen, "sidecar %s: %s = %lld is outside [%lld, %lld]", path, key, (long long)*out,
                 (long long)lo, (long long)hi);
        return -1;
    }
    return 0;
}

static int finite_all(const float *v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

/* input sparsity's part: finite thresholds >= 0, densities in [0, 1], 0/1 choices */
static int load_insparse(struct sidecar *sc, gguf_ctx_t *g, const char *path, char *err, size_t errlen) {
    double target;
    if (gguf_get_float(g, "hearth.insparse.target", &target, err, errlen) || !(target >= 0 && target < 1)) {
        snprintf(err, errlen, "sidecar %s: hearth.insparse.target is missing or outside [0, 1)", path);
        return -1;
    }
    const int64_t ns = (int64_t)sc->n_layers * SIDECAR_IN_SITES, nm = (int64_t)sc->n_layers * SIDECAR_IN_MATS;
    const float *thr = get(g, path, "insparse_thr", HEARTH_TYPE_F32, SIDECAR_IN_SITES, sc->n_layers, err, errlen);
    const float *den = thr ? get(g, path, "insparse_density", HEARTH_TYPE_F32, SIDECAR_IN_SITES, sc->n_layers, err,
                                 errlen)
                           : NULL;
    const int32_t *use = den ? get(g, path, "insparse_use", HEARTH_TYPE_I32, SIDECAR_IN_MATS, sc->n_layers, err,
                                   errlen)
                             : NULL;
    if (!use) return -1;
    for (int64_t k = 0; k < ns; k++)
        if (!(thr[k] >= 0) || !isfinite(thr[k]) || !(den[k] >= 0 && den[k] <= 1)) {
            snprintf(err, errlen, "sidecar %s: layer %lld input %lld: threshold %g, density %g (want a finite "
                                  "threshold >= 0, a density in [0, 1])",
                     path, (long long)(k / SIDECAR_IN_SITES), (long long)(k % SIDECAR_IN_SITES), thr[k], den[k]);
            return -1;
        }
    for (int64_t k = 0; k < nm; k++)
        if (use[k] != 0 && use[k] != 1) {
            snprintf(err, errlen, "sidecar %s: insparse_use of layer %lld matrix %lld is %d, not 0 or 1", path,
                     (long long)(k / SIDECAR_IN_MATS), (long long)(k % SIDECAR_IN_MATS), use[k]);
            return -1;
        }
    if (sidecar_alloc_insparse(sc, err, errlen)) return -1;
    sc->in_target = (float)target;
    memcpy(sc->in_thr, thr, (size_t)ns * sizeof *thr);
    memcpy(sc->in_density, den, (size_t)ns * sizeof *den);
    memcpy(sc->in_use, use, (size_t)nm * sizeof *use);
    return 0;
}

/* the plan's part: order (a permutation), hot counts, predictors */
static int load_plan(struct sidecar *sc, gguf_ctx_t *g, const char *path, char *err, size_t errlen) {
    int64_t v;
    char name[96];
    if (get_int(g, path, "hearth.plan.gpu_budget", 0, INT64_MAX, &sc->gpu_budget, err, errlen) ||
        get_int(g, path, "hearth.plan.fixed_bytes", 0, INT64_MAX, &sc->fixed_bytes, err, errlen) ||
        get_int(g, path, "hearth.plan.group", 1, sc->hidden, &sc->group, err, errlen) ||
        get_int(g, path, "hearth.plan.min_hot", 0, sc->hidden, &v, err, errlen))
        return -1;
    sc->min_hot = v;
    const int32_t *hot = get(g, path, "ffn_hot", HEARTH_TYPE_I32, sc->n_layers, 1, err, errlen);
    const int32_t *use = get(g, path, "pred_use", HEARTH_TYPE_I32, sc->n_layers, 1, err, errlen);
    if (!use) return -1;
    const float *metric[4];
    static const char *const metric_name[4] = {"pred_cutoff", "pred_recall", "pred_precision", "pred_predicted"};
    if (!hot) return -1;
    for (int k = 0; k < 4; k++)
        if (!(metric[k] = get(g, path, metric_name[k], HEARTH_TYPE_F32, sc->n_layers, 1, err, errlen))) return -1;
    uint8_t *seen = malloc((size_t)sc->hidden);
    if (!seen) {
        snprintf(err, errlen, "sidecar: out of memory");
        return -1;
    }
    int rc = -1;
    for (int l = 0; l < sc->n_layers; l++) {
        struct sidecar_layer *L = &sc->layers[l];
        if (hot[l] < 0 || hot[l] > sc->hidden) {
            snprintf(err, errlen, "sidecar %s: layer %d has %d hot neurons of %lld", path, l, hot[l],
                     (long long)sc->hidden);
            goto done;
        }
        L->hot = hot[l];
        if (use[l] != 0 && use[l] != 1) {
            snprintf(err, errlen, "sidecar %s: pred_use[%d] = %d is not 0 or 1", path, l, use[l]);
            goto done;
        }
        L->use_pred = use[l];
        snprintf(name, sizeof name, "blk.%d.ffn_order", l);
        const int32_t *order = get(g, path, name, HEARTH_TYPE_I32, sc->hidden, 1, err, errlen);
        if (!order) goto done;
        memset(seen, 0, (size_t)sc->hidden);
        for (int64_t i = 0; i < sc->hidden; i++) {
            if (order[i] < 0 || order[i] >= sc->hidden || seen[order[i]]) {
                snprintf(err, errlen, "sidecar %s: %s is not a permutation of 0..%lld (position %lld holds %d)", path,
                         name, (long long)sc->hidden - 1, (long long)i, order[i]);
                goto done;
            }
            seen[order[i]] = 1;
        }
        if (!(L->order = dup(order, (size_t)sc->hidden * sizeof *order))) goto oom;
        snprintf(name, sizeof name, "blk.%d.pred_b1", l);
        const struct gguf_tensor *tb1 = gguf_find_tensor(g, name);
        if (!tb1) {
            snprintf(err, errlen, "sidecar %s: tensor %s is missing", path, name);
            goto done;
        }
        const int64_t rank = tb1->ne[0];
        /* every predictor tensor of this rank is in the file before the
         * predictor is allocated */
        const void *w1, *b1, *w2, *b2;
        snprintf(name, sizeof name, "blk.%d.pred_w1", l);
        if (!(w1 = get(g, path, name, HEARTH_TYPE_F32, sc->dim, rank, err, errlen))) goto done;
        snprintf(name, sizeof name, "blk.%d.pred_b1", l);
        if (!(b1 = get(g, path, name, HEARTH_TYPE_F32, rank, 1, err, errlen))) goto done;
        snprintf(name, sizeof name, "blk.%d.pred_w2", l);
        if (!(w2 = get(g, path, name, HEARTH_TYPE_F32, rank, sc->hidden, err, errlen))) goto done;
        snprintf(name, sizeof name, "blk.%d.pred_b2", l);
        if (!(b2 = get(g, path, name, HEARTH_TYPE_F32, sc->hidden, 1, err, errlen))) goto done;
        if (predictor_init(&L->pred, sc->dim, rank, sc->hidden, 0, err, errlen)) {
            char inner[256];
            snprintf(inner, sizeof inner, "%s", err);
            snprintf(err, errlen, "sidecar %s: layer %d predictor: %s", path, l, inner);
            goto done;
        }
        L->has_pred = 1;
        memcpy(L->pred.w1, w1, (size_t)(sc->dim * rank) * sizeof(float));
        memcpy(L->pred.b1, b1, (size_t)rank * sizeof(float));
        memcpy(L->pred.w2, w2, (size_t)(rank * sc->hidden) * sizeof(float));
        memcpy(L->pred.b2, b2, (size_t)sc->hidden * sizeof(float));
        L->pred.cutoff = metric[0][l];
        L->recall = metric[1][l];
        L->precision = metric[2][l];
        L->predicted = metric[3][l];
        if (!finite_all(L->pred.w1, sc->dim * rank) || !finite_all(L->pred.w2, rank * sc->hidden) ||
            !finite_all(L->pred.b1, rank) || !finite_all(L->pred.b2, sc->hidden) || !isfinite(L->pred.cutoff)) {
            snprintf(err, errlen, "sidecar %s: layer %d predictor has non-finite weights", path, l);
            goto done;
        }
    }
    sc->planned = 1;
    rc = 0;
    goto done;
oom:
    snprintf(err, errlen, "sidecar: out of memory");
done:
    free(seen);
    return rc;
}

int sidecar_load(struct sidecar *sc, const char *path, int with_samples, char *err, size_t errlen) {
    memset(sc, 0, sizeof *sc);
    gguf_ctx_t *g = gguf_open(path, err, errlen);
    if (!g) return -1;
    int rc = -1;
    int64_t version, n_layers, dim, hidden, v;
    char name[96];
    const char *arch = NULL;
    if (gguf_find_key(g, "general.architecture") < 0 || gguf_get_str(g, "general.architecture", &arch, err, errlen) ||
        strcmp(arch, "hearth-sidecar") != 0) {
        snprintf(err, errlen, "%s is not a hearth sidecar (general.architecture is %s%s%s)", path, arch ? "\"" : "",
                 arch ? arch : "missing", arch ? "\"" : "");
        goto done;
    }
    if (get_int(g, path, "hearth.sidecar.version", 0, UINT32_MAX, &version, err, errlen)) goto done;
    if (version != SIDECAR_VERSION) {
        snprintf(err, errlen, "sidecar %s: version %lld, this hearth reads version %d (run hearth profile again)",
                 path, (long long)version, SIDECAR_VERSION);
        goto done;
    }
    if (get_int(g, path, "hearth.sidecar.n_layers", 1, 4096, &n_layers, err, errlen) ||
        get_int(g, path, "hearth.sidecar.dim", 1, 1 << 20, &dim, err, errlen) ||
        get_int(g, path, "hearth.sidecar.hidden", 1, 1 << 24, &hidden, err, errlen))
        goto done;
    /* the header's shape must be backed by tensors in the file (whose sizes
     * gguf_open checked against the file size) before anything of that
     * size is allocated: a small hostile file must not claim gigabytes */
    if (!get(g, path, "ffn_threshold", HEARTH_TYPE_F32, n_layers, 1, err, errlen)) goto done;
    for (int l = 0; l < (int)n_layers; l++) {
        snprintf(name, sizeof name, "blk.%d.ffn_freq", l);
        if (!get(g, path, name, HEARTH_TYPE_F32, hidden, 1, err, errlen)) goto done;
        snprintf(name, sizeof name, "blk.%d.ffn_scale", l);
        if (!get(g, path, name, HEARTH_TYPE_F32, hidden, 1, err, errlen)) goto done;
    }
    if (sidecar_init(sc, (int)n_layers, dim, hidden, err, errlen)) goto done;
    if (get_str(g, path, "hearth.model.sha256", sc->model_sha256, sizeof sc->model_sha256, err, errlen) ||
        get_int(g, path, "hearth.model.bytes", 0, INT64_MAX, &v, err, errlen))
        goto done;
    sc->model_bytes = (uint64_t)v;
    if (get_str(g, path, "hearth.model.name", sc->model_name, sizeof sc->model_name, err, errlen) ||
        get_str(g, path, "hearth.profile.corpus", sc->corpus, sizeof sc->corpus, err, errlen) ||
        get_str(g, path, "hearth.profile.corpus_sha256", sc->corpus_sha256, sizeof sc->corpus_sha256, err, errlen) ||
        get_int(g, path, "hearth.profile.tokens", 0, INT64_MAX, &sc->tokens, err, errlen) ||
        get_int(g, path, "hearth.profile.n_ctx", 1, INT32_MAX, &v, err, errlen))
        goto done;
    sc->n_ctx = (int)v;
    double sp;
    if (gguf_get_float(g, "hearth.profile.sparsity", &sp, err, errlen) || !(sp >= 0 && sp < 1)) {
        snprintf(err, errlen, "sidecar %s: hearth.profile.sparsity is missing or outside [0, 1)", path);
        goto done;
    }
    sc->sparsity = (float)sp;
    const float *thr = get(g, path, "ffn_threshold", HEARTH_TYPE_F32, n_layers, 1, err, errlen);
    if (!thr) goto done;
    for (int l = 0; l < sc->n_layers; l++) {
        struct sidecar_layer *L = &sc->layers[l];
        if (!(thr[l] >= 0) || !isfinite(thr[l])) {
            snprintf(err, errlen, "sidecar %s: layer %d threshold %g is not a finite value >= 0", path, l, thr[l]);
            goto done;
        }
        L->threshold = thr[l];
        snprintf(name, sizeof name, "blk.%d.ffn_freq", l);
        const float *freq = get(g, path, name, HEARTH_TYPE_F32, hidden, 1, err, errlen);
        if (!freq) goto done;
        for (int64_t i = 0; i < hidden; i++)
            if (!(freq[i] >= 0 && freq[i] <= 1)) {
                snprintf(err, errlen, "sidecar %s: %s[%lld] = %g is not a frequency", path, name, (long long)i,
                         freq[i]);
                goto done;
            }
        memcpy(L->freq, freq, (size_t)hidden * sizeof *freq);
        snprintf(name, sizeof name, "blk.%d.ffn_scale", l);
        const float *scale = get(g, path, name, HEARTH_TYPE_F32, hidden, 1, err, errlen);
        if (!scale) goto done;
        for (int64_t i = 0; i < hidden; i++)
            if (!(scale[i] >= 0) || !isfinite(scale[i])) {
                snprintf(err, errlen, "sidecar %s: %s[%lld] = %g is not a finite value >= 0", path, name,
                         (long long)i, scale[i]);
                goto done;
            }
        memcpy(L->scale, scale, (size_t)hidden * sizeof *scale);
        if (!with_samples) continue;
        snprintf(name, sizeof name, "blk.%d.sample_x", l);
        const struct gguf_tensor *tx = gguf_find_tensor(g, name);
        if (!tx) {
            snprintf(err, errlen, "sidecar %s: tensor %s is missing (profile samples)", path, name);
            goto done;
        }
        const int64_t n = tx->ne[1];
        const void *x = get(g, path, name, HEARTH_TYPE_F16, dim, n, err, errlen), *fired;
        if (!x) goto done;
        snprintf(name, sizeof name, "blk.%d.sample_fired", l);
        if (!(fired = get(g, path, name, HEARTH_TYPE_I8, sidecar_fired_bytes(sc), n, err, errlen))) goto done;
        L->n_samples = n;
        L->sample_x = dup(x, (size_t)(n * dim) * sizeof(uint16_t));
        L->sample_fired = dup(fired, (size_t)(n * sidecar_fired_bytes(sc)));
        if (!L->sample_x || !L->sample_fired) {
            snprintf(err, errlen, "sidecar: out of memory for samples");
            goto done;
        }
    }
    if (gguf_find_key(g, "hearth.plan.gpu_budget") >= 0 && load_plan(sc, g, path, err, errlen)) goto done;
    if (gguf_find_key(g, "hearth.insparse.target") >= 0 && load_insparse(sc, g, path, err, errlen)) goto done;
    rc = 0;
done:
    if (rc) sidecar_free(sc);
    gguf_close(g);
    return rc;
}

int sidecar_check_model(const struct sidecar *sc, const struct llama_model *m, char *err, size_t errlen) {
    const struct llama_config *c = &m->cfg;
    if (sc->n_layers != c->n_layers || sc->dim != c->dim || sc->hidden != c->hidden_dim) {
        snprintf(err, errlen,
                 "the sidecar was made for a model of %d layers, dim %lld, %lld FFN neurons; this model has %d, %d, "
                 "%d (profile it with hearth profile)",
                 sc->n_layers, (long long)sc->dim, (long long)sc->hidden, c->n_layers, c->dim, c->hidden_dim);
        return -1;
    }
    if (sc->model_bytes && sc->model_bytes != (uint64_t)gguf_file_size(m->gguf)) {
        snprintf(err, errlen, "the sidecar was made for %s (%llu bytes, sha256 %.16s...); %s has %zu bytes",
                 sc->model_name, (unsigned long long)sc->model_bytes, sc->model_sha256, gguf_path(m->gguf),
                 gguf_file_size(m->gguf));
        return -1;
    }
    return 0;
}

int sidecar_check_usable(const struct sidecar *sc, const char *path, char *err, size_t errlen) {
    if (sc->planned || sc->in_thr) return 0;
    snprintf(err, errlen,
             "sidecar %s has a profile but no placement and no input sparsity: run hearth plan --sidecar %s "
             "--gpu-budget SIZE, or hearth profile --in-sparsity S",
             path, path);
    return -1;
}

int sidecar_check_planned(const struct sidecar *sc, const char *path, char *err, size_t errlen) {
    if (sc->planned) return 0;
    snprintf(err, errlen, "sidecar %s has a profile but no placement: run hearth plan --sidecar %s --gpu-budget SIZE",
             path, path);
    return -1;
}
