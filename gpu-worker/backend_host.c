/* backend_host: the GPU worker's backend on CPU threads. It is the dense
 * pass (core/forward.h) taken apart at the layer's seams, so the runtime
 * with every neuron computed reproduces the dense pass. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "forward.h"

struct host {
    struct llama_state st; /* st.acc: the layer's FFN accumulator */
};

static struct host *H(struct gpu_backend *b) { return b->impl; }

static int host_begin(struct gpu_backend *b, const int32_t *tokens, int n, const struct seq_span *spans, int n_spans,
                      char *err, size_t errlen) {
    struct host *h = H(b);
    if (state_begin_batch(&h->st, spans, n_spans, err, errlen) != 0) return -1;
    if (n != h->st.n_rows) {
        snprintf(err, errlen, "step of %d tokens, its spans hold %d", n, h->st.n_rows);
        return -1;
    }
    for (int t = 0; t < n; t++) {
        if (tokens[t] < 0 || tokens[t] >= h->st.m->cfg.n_vocab) {
            snprintf(err, errlen, "token id %d outside the vocabulary", tokens[t]);
            return -1;
        }
    }
    forward_embed(&h->st, tokens, n);
    return 0;
}

static int host_attention(struct gpu_backend *b, int layer, char *err, size_t errlen) {
    return forward_attention_batch(&H(b)->st, layer, err, errlen);
}

static uint64_t host_attn_ns(struct gpu_backend *b) { return H(b)->st.attn_ns; }

static const float *host_ffn_input(struct gpu_backend *b, int layer, int n) {
    struct host *h = H(b);
    forward_ffn_norm(&h->st, layer, n);
    return h->st.xb;
}

static void host_add_partial(struct gpu_backend *b, int n, const int64_t *acc) {
    struct host *h = H(b);
    const size_t count = (size_t)n * h->st.m->cfg.dim;
    for (size_t i = 0; i < count; i++) h->st.acc[i] += acc[i];
}

static int host_ffn_hot(struct gpu_backend *b, int layer, int n, int64_t n0, int64_t n1, char *err, size_t errlen) {
    return forward_ffn(&H(b)->st, layer, n, n0, n1, err, errlen);
}

static void host_ffn_finish(struct gpu_backend *b, int n) {
    struct host *h = H(b);
    ffn_acc_add_to(h->st.x, h->st.acc, (size_t)n * h->st.m->cfg.dim);
}

static int host_output(struct gpu_backend *b, float *logits, char *err, size_t errlen) {
    return forward_output_batch(&H(b)->st, logits, err, errlen);
}

static void host_destroy(struct gpu_backend *b) {
    struct host *h = H(b);
    if (!h) return;
    state_free(&h->st);
    free(h);
    b->impl = NULL;
}

int backend_host_create(struct gpu_backend *b, const struct llama_model *m, int n_ctx, int n_seq, int max_batch,
                        int n_threads, char *err, size_t errlen) {
    memset(b, 0, sizeof *b);
    struct host *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (state_create_seqs(&h->st, m, n_ctx, n_seq, max_batch, n_threads, err, errlen) != 0) {
        free(h);
        return -1;
    }
    b->name = "host";
    b->impl = h;
    b->begin = host_begin;
    b->attention = host_attention;
    b->ffn_input = host_ffn_input;
    b->ffn_hot = host_ffn_hot;
    b->add_partial = host_add_partial;
    b->ffn_finish = host_ffn_finish;
    b->output = host_output;
    b->destroy = host_destroy;
    b->attn_ns = host_attn_ns;
    return 0;
}

/* Replaces the dense KV cache by the H2O cache of cfg (core/kvcache.h);
 * declared where it is called (gpu-worker/main.c). */
int backend_host_set_kv(struct gpu_backend *b, const struct kv_config *cfg, char *err, size_t errlen) {
    if (b->begin != host_begin) {
        snprintf(err, errlen, "the KV budget options need the host backend here, not '%s'", b->name);
        return -1;
    }
    return state_set_kv(&H(b)->st, cfg, 0, err, errlen);
}

uint64_t backend_host_kv_cold_bytes(struct gpu_backend *b) {
    return b->impl && b->begin == host_begin ? state_kv_cold_bytes(&H(b)->st) : 0;
}

struct tpool *backend_host_pool(struct gpu_backend *b) {
    return b->impl && b->begin == host_begin ? H(b)->st.tp : NULL;
}

void backend_host_set_ffn(struct gpu_backend *b, forward_ffn_fn ffn, void *ctx) {
    if (b->begin != host_begin) return;
    H(b)->st.ffn = ffn;
    H(b)->st.ffn_ctx = ctx;
}

void backend_host_set_taps(struct gpu_backend *b, const struct layer_taps *taps) {
    if (b->begin == host_begin) H(b)->st.taps = *taps;
}
