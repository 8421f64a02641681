/* hotcold: see hotcold.h. */
#include "hotcold.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "types.h"

int hotcold_load_sidecar(struct sidecar *sc, const char *path, const struct llama_model *m, char *err,
                         size_t errlen) {
    if (sidecar_load(sc, path, 0, err, errlen)) return -1;
    if (sidecar_check_model(sc, m, err, errlen) || sidecar_check_usable(sc, path, err, errlen)) {
        sidecar_free(sc);
        return -1;
    }
    return 0;
}

/* Copies rows ids[0..n) of w to dst, in that order: the slice's gate/up
 * rows become contiguous in position order (and local to the NUMA node of
 * the calling thread). The bytes are the model's own, so every dot product
 * is unchanged. */
static void gather_rows(char *dst, const struct weight *w, const int32_t *ids, int64_t n) {
    const size_t row = hearth_row_size(w->type, w->n_in);
    for (int64_t j = 0; j < n; j++) memcpy(dst + (size_t)j * row, (const char *)w->data + (size_t)ids[j] * row, row);
}

static int slice_init(struct hotcold_slice *s, const struct sidecar *sc, const struct llama_model *m, int l,
                      int64_t a, int64_t b, int predicted, char *err, size_t errlen) {
    const struct llama_layer *L = &m->layers[l];
    const int32_t *ids = sc->layers[l].order + a;
    const int64_t n = b - a;
    if (sparse_ffn_init(&s->ffn, &m->cfg, L, ids, n, a, sc->layers[l].threshold, err, errlen)) return -1;
    s->has_ffn = 1;
    if (predicted) {
        if (predictor_rt_init(&s->pred, &sc->layers[l].pred, ids, n, err, errlen)) return -1;
        s->has_pred = 1;
    }
    /* gate and up rows in position order: ids become 0..n-1 */
    const size_t up_bytes = hearth_row_size(L->w_up.type, L->w_up.n_in) * (size_t)n;
    const size_t gate_bytes = m->cfg.ffn_gated ? hearth_row_size(L->w_gate.type, L->w_gate.n_in) * (size_t)n : 0;
    s->local_ids = malloc((size_t)(n > 0 ? n : 1) * sizeof *s->local_ids);
    s->scale = malloc((size_t)(n > 0 ? n : 1) * sizeof *s->scale);
    s->rows = malloc(up_bytes + gate_bytes + 1);
    if (!s->local_ids || !s->scale || !s->rows) goto oom;
    for (int64_t j = 0; j < n; j++) {
        s->local_ids[j] = (int32_t)j;
        s->scale[j] = sc->layers[l].scale[ids[j]];
    }
    s->ffn.scale = s->scale;
    gather_rows(s->rows, &L->w_up, ids, n);
    if (gate_bytes) {
        gather_rows((char *)s->rows + up_bytes, &L->w_gate, ids, n);
        s->ffn.gate.data = (char *)s->rows + up_bytes;
        s->ffn.gate.n_out = n;
    }
    s->ffn.up.data = s->rows;
    s->ffn.up.n_out = n;
    s->ffn.hidden = n;
    s->ffn.ids = s->local_ids;
    return 0;
oom:
    snprintf(err, errlen, "hotcold: out of memory for layer %d's neurons [%lld, %lld)", l, (long long)a, (long long)b);
    return -1;
}

static void slice_free(struct hotcold_slice *s) {
    if (s->has_ffn) sparse_ffn_free(&s->ffn);
    if (s->has_pred) predictor_rt_free(&s->pred);
    free(s->rows);
    free(s->local_ids);
    free(s->scale);
    memset(s, 0, sizeof *s);
}

int hotcold_create(struct hotcold *hc, const struct sidecar *sc, const struct llama_model *m, const int64_t *p0,
                   const int64_t *p1, int max_tok, char *err, size_t errlen) {
    memset(hc, 0, sizeof *hc);
    hc->n_layers = m->cfg.n_layers;
    hc->dim = m->cfg.dim;
    hc->hidden = m->cfg.hidden_dim;
    hc->max_tok = max_tok;
    /* what the dense FFN reads per neuron: its gate and up rows and its
     * down column, in the model's own types */
    const struct llama_layer *L0 = &m->layers[0];
    hc->dense_neuron_bytes = (double)hearth_row_size(L0->w_up.type, hc->dim) +
                             (m->cfg.ffn_gated ? (double)hearth_row_size(L0->w_gate.type, hc->dim) : 0.0) +
                             (double)hc->dim * (double)hearth_type_size(L0->w_down.type) /
                                 (double)hearth_type_blck(L0->w_down.type);
    hc->ps = (struct predictor_rt_scratch)PREDICTOR_RT_SCRATCH_INIT;
    hc->hot = calloc((size_t)hc->n_layers, sizeof *hc->hot);
    hc->cold = calloc((size_t)hc->n_layers, sizeof *hc->cold);
    if (!hc->hot || !hc->cold) {
        snprintf(err, errlen, "hotcold: out of memory");
        goto fail;
    }
    int64_t widest = 1;
    for (int l = 0; l < hc->n_layers; l++) {
        const int64_t hot = sc->layers[l].hot, a = p0[l], b = p1[l];
        if (a < 0 || b > hc->hidden || a > b || a % SPARSE_GROUP) {
            snprintf(err, errlen, "hotcold: layer %d: positions [%lld, %lld) of %lld do not start on a group of %d",
                     l, (long long)a, (long long)b, (long long)hc->hidden, SPARSE_GROUP);
            goto fail;
        }
        /* [a, b) splits at hot into an unpredicted and a predicted slice; hot
         * counts are multiples of SPARSE_GROUP (or the whole layer) */
        const int64_t mid = hot < a ? a : hot > b ? b : hot;
        if (mid > a && slice_init(&hc->hot[l], sc, m, l, a, mid, 0, err, errlen)) goto fail;
        if (b > mid && slice_init(&hc->cold[l], sc, m, l, mid, b, sc->layers[l].use_pred, err, errlen)) goto fail;
        if (mid - a > widest) widest = mid - a;
        if (b - mid > widest) widest = b - mid;
    }
    hc->cand = malloc((size_t)max_tok * (size_t)widest);
    if (!hc->cand) {
        snprintf(err, errlen, "hotcold: out of memory");
        goto fail;
    }
    if (sparse_scratch_create(&hc->ss, hc->dim, widest, max_tok, err, errlen)) goto fail;
    return 0;
fail:
    hotcold_destroy(hc);
    return -1;
}

void hotcold_destroy(struct hotcold *hc) {
    for (int l = 0; l < hc->n_layers; l++) {
        if (hc->hot) slice_free(&hc->hot[l]);
        if (hc->cold) slice_free(&hc->cold[l]);
    }
    free(hc->hot);
    free(hc->cold);
    free(hc->cand);
    sparse_scratch_free(&hc->ss);
    predictor_rt_scratch_free(&hc->ps);
    memset(hc, 0, sizeof *hc);
}

static int run_slice(struct hotcold *hc, struct hotcold_slice *s, const float *xn, int n, int64_t *acc,
                     struct tpool *tp, char *err, size_t errlen) {
    if (!s->has_ffn || s->ffn.n == 0) return 0;
    const uint8_t *cand = NULL;
    if (s->has_pred) {
        if (predictor_rt_eval(&s->pred, xn, n, hc->cand, &hc->ps, tp, err, errlen)) return -1;
        cand = hc->cand;
        hc->stats.weight_bytes += (double)predictor_rt_bytes(&s->pred) * n;
    }
    struct sparse_stats st = {0, 0};
    if (sparse_ffn_run(&s->ffn, xn, n, cand, acc, &st, &hc->ss, tp, err, errlen)) return -1;
    /* a candidate reads its gate row (ungated: its up row); one that fires
     * also its up row (gated) and its down row */
    const size_t up = hearth_row_size(s->ffn.up.type, hc->dim);
    const size_t first = s->ffn.gated ? hearth_row_size(s->ffn.gate.type, hc->dim) : up;
    const size_t then = (s->ffn.gated ? up : 0) + sparse_down_row_bytes(&s->ffn);
    hc->stats.evaluated += st.evaluated;
    hc->stats.fired += st.fired;
    hc->stats.weight_bytes += (double)st.evaluated * (double)first + (double)st.fired * (double)then;
    return 0;
}

int hotcold_ffn(struct hotcold *hc, int l, const float *xn, int n, int64_t *acc, struct tpool *tp, char *err,
                size_t errlen) {
    if (l < 0 || l >= hc->n_layers || n < 1 || n > hc->max_tok) {
        snprintf(err, errlen, "hotcold: layer %d with %d tokens (at most %d)", l, n, hc->max_tok);
        return -1;
    }
    for (int k = 0; k < 2; k++) {
        struct hotcold_slice *s = k ? &hc->cold[l] : &hc->hot[l];
        if (run_slice(hc, s, xn, n, acc, tp, err, errlen)) return -1;
        if (s->has_ffn) hc->stats.dense_bytes += (double)n * (double)s->ffn.n * hc->dense_neuron_bytes;
    }
    hc->stats.tokens += n;
    return 0;
}

int hotcold_ffn_cb(void *hc, int l, const float *xn, int n, int64_t *acc, struct tpool *tp, char *err,
                   size_t errlen) {
    return hotcold_ffn(hc, l, xn, n, acc, tp, err, errlen);
}
