/* ffn: see ffn.h. */
#include "ffn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ffn_scratch_create(struct ffn_scratch *fs, const struct llama_model *m, int max_batch, char *err,
                       size_t errlen) {
    memset(fs, 0, sizeof *fs);
    const size_t nh = (size_t)max_batch * m->cfg.hidden_dim;
    fs->max_batch = max_batch;
    fs->gate = malloc(nh * sizeof(float));
    fs->up = malloc(nh * sizeof(float));
    if (!fs->gate || !fs->up) {
        ffn_scratch_free(fs);
        snprintf(err, errlen, "out of memory for the FFN scratch of %d tokens", max_batch);
        return -1;
    }
    return 0;
}

void ffn_scratch_free(struct ffn_scratch *fs) {
    free(fs->gate);
    free(fs->up);
    matmul_scratch_free(&fs->ms);
    memset(fs, 0, sizeof *fs);
}

/* a neuron is a row of gate/up and a column of down: a shard must be whole
 * groups (for the exact sum) and whole blocks of down's rows */
static int64_t down_align(const struct weight *down) {
    const int64_t blck = hearth_type_blck(down->type);
    return blck > FFN_GROUP ? blck : FFN_GROUP;
}

int64_t ffn_neuron_align(const struct llama_model *m) { return down_align(&m->layers[0].w_down); }

int ffn_partial(const struct llama_model *m, int l, const float *xn, int n, int64_t n0, int64_t n1, int64_t *acc,
                struct ffn_scratch *fs, struct tpool *tp, char *err, size_t errlen) {
    return ffn_partial_layer(&m->cfg, &m->layers[l], l, xn, n, n0, n1, acc, fs, NULL, tp, err, errlen);
}

/* The down projection's input, h = act(gate xn) * up xn for the shard's
 * neurons, computed block by block as the fused product quantizes it. */
struct swiglu {
    const float *gate, *up; /* [n, hidden], columns [n0, n1) written */
    int64_t hidden, n0;
    int gated;
    enum ffn_act act;
    const struct layer_taps *taps; /* its input tap (NULL: none) */
    int l;
};

static void swiglu_fill(void *ctx, int64_t t, int64_t i0, int64_t n, float *dst) {
    const struct swiglu *a = ctx;
    const float *g = a->gate + t * a->hidden + a->n0 + i0, *u = a->up + t * a->hidden + a->n0 + i0;
    for (int64_t i = 0; i < n; i++) dst[i] = a->gated ? ffn_activation(g[i], a->act) * u[i] : ffn_activation(u[i], a->act);
    if (a->taps && a->taps->input) a->taps->input(a->taps->ctx, a->l, LLAMA_SITE_DOWN, dst, n, a->n0 + i0, a->hidden);
}

static int tap_owns(const struct layer_taps *taps, int l, int mat, int64_t n0, int64_t n1, int n) {
    return taps && taps->owns && taps->owns(taps->ctx, l, mat, n0, n1, n);
}

int ffn_partial_layer(const struct llama_config *c, const struct llama_layer *L, int l, const float *xn, int n,
                      int64_t n0, int64_t n1, int64_t *acc, struct ffn_scratch *fs, const struct layer_taps *taps,
                      struct tpool *tp, char *err, size_t errlen) {
    /* the layer's own neuron count: the model's, or a shard's local copy */
    const int64_t hidden = L->w_up.n_out, align = down_align(&L->w_down);
    if (n > fs->max_batch || hidden > c->hidden_dim || n0 < 0 || n1 > hidden || n0 > n1 || n0 % align ||
        (n1 % align && n1 != hidden)) {
        snprintf(err, errlen, "ffn: neurons [%lld, %lld) of %lld (aligned to %lld) for %d tokens are not computable",
                 (long long)n0, (long long)n1, (long long)hidden, (long long)align, n);
        return -1;
    }
    if (n1 == n0) return 0;
    /* gate and up rows of the shard, one product: [n, hidden] with columns
     * [n0, n1) written (a tap may compute either itself) */
    const struct matmul_in in = {xn, NULL, NULL};
    struct matmul_out gu[2];
    int n_gu = 0;
    const int tap_up = tap_owns(taps, l, LLAMA_MAT_UP, n0, n1, n),
              tap_gate = c->ffn_gated && tap_owns(taps, l, LLAMA_MAT_GATE, n0, n1, n);
    if (tap_up && taps->product(taps->ctx, l, LLAMA_MAT_UP, n0, n1, xn, c->dim, n, fs->up + n0, NULL, hidden, 0, tp,
                                err, errlen))
        return -1;
    if (tap_gate && taps->product(taps->ctx, l, LLAMA_MAT_GATE, n0, n1, xn, c->dim, n, fs->gate + n0, NULL, hidden,
                                  0, tp, err, errlen))
        return -1;
    if (!tap_up) gu[n_gu++] = weight_out(&L->w_up, n0, n1, 0, c->dim, fs->up);
    if (c->ffn_gated && !tap_gate) gu[n_gu++] = weight_out(&L->w_gate, n0, n1, 0, c->dim, fs->gate);
    if (n_gu && matmul_fused(tp, &in, c->dim, n, gu, n_gu, &fs->ms, err, errlen)) return -1;
    if (taps && taps->ffn_hidden) taps->ffn_hidden(taps->ctx, l, xn, fs->gate, fs->up, n, hidden, n0, n1);
    /* acc += down[:, n0:n1] h, each group of FFN_GROUP neurons rounded to
     * fixed point on its own (FFN_GROUP); h is made as it is quantized */
    struct swiglu a = {fs->gate, fs->up, hidden, n0, c->ffn_gated, c->ffn_act, taps, l};
    if (tap_owns(taps, l, LLAMA_MAT_DOWN, n0, n1, n)) { /* h whole (tapped) into gate's columns, then the tap's product */
        for (int t = 0; t < n; t++) swiglu_fill(&a, t, 0, n1 - n0, fs->gate + (size_t)t * hidden + n0);
        return taps->product(taps->ctx, l, LLAMA_MAT_DOWN, n0, n1, fs->gate + n0, hidden, n, NULL, acc, c->dim,
                             FFN_GROUP, tp, err, errlen);
    }
    const struct matmul_in hin = {NULL, swiglu_fill, &a};
    struct matmul_out down = weight_out(&L->w_down, 0, c->dim, n0, n1 - n0, NULL);
    down.acc = acc;
    down.group = FFN_GROUP;
    down.acc_add = ffn_acc_add_fixed;
    return matmul_fused(tp, &hin, n1 - n0, n, &down, 1, &fs->ms, err, errlen);
}
