/* hearth-gpu-worker: attention and the KV cache, the hot FFN neurons, the
 * final norm and the LM head (DESIGN.md, "One decoding step, as data").
 *
 * Steps arrive on the control channel; per layer the worker sends the FFN
 * input to every CPU worker through its ring, computes the hot neurons while
 * they compute their cold shards, then adds their partial sums as they
 * arrive. Logits go to the session's logits region; StepDone (with per-layer
 * times) tells the coordinator they are there. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "hotcold.h"
#include "insparse.h"
#ifdef HEARTH_HAVE_CUDA
#include "backend_cuda.h"
#endif
#include "idle.h"
#include "ipc.h"
#include "kvcache.h"
#include "log.h"
#include "model.h"
#include "wire.h"
#include "worker.h"

#define MAX_CPU_WORKERS 64

struct gpu_worker {
    struct worker w;
    struct llama_model model;
    struct gpu_backend be;
    int64_t *hot0, *hot1; /* [n_layers] hot neurons of each layer */
    int n_cpu;
    struct ring in[MAX_CPU_WORKERS], out[MAX_CPU_WORKERS];
    struct doorbell in_bell[MAX_CPU_WORKERS], out_bell[MAX_CPU_WORKERS];
    struct shm_region logits;
    uint64_t *layer_ns;
    int max_batch, n_seq;
    struct seq_span *spans; /* [max_batch] the step's, from its Span messages */
    struct sidecar sc; /* Assign.sidecar_path: hot positions of the plan */
    struct hotcold hc; /* host backend with a sidecar */
    struct insparse_model ins; /* host backend with a sidecar's input sparsity */
    double step_weight_bytes, step_dense_bytes; /* FFN bytes of this step, all workers */
};

static int setup(struct gpu_worker *g, char *err, size_t errlen) {
    const Hearth__Assign *a = g->w.assign;
    if (model_load(&g->model, a->model_path, err, errlen) != 0) return -1;
    const struct llama_config *c = &g->model.cfg;
    g->max_batch = (int)a->max_batch;
    g->n_seq = a->n_seq ? (int)a->n_seq : 1;
    const int n_threads = a->n_threads ? (int)a->n_threads : 1;
    const int is_cuda = strcmp(a->backend, "cuda") == 0;
#ifdef HEARTH_HAVE_CUDA
    if (is_cuda) {
        if (g->n_seq > 1) {
            snprintf(err, errlen, "cuda backend: one sequence only for now (--parallel %d asks for more)", g->n_seq);
            return -1;
        }
        if (backend_cuda_create(&g->be, &g->model, (int)a->n_ctx, g->max_batch, n_threads, err, errlen) != 0)
            return -1;
        if (a->kv_budget_tokens > 0)
            log_warn("cuda backend: no KV eviction yet, keeping all %u positions (budget %u ignored)", a->n_ctx,
                     a->kv_budget_tokens);
    } else
#endif
    if (strcmp(a->backend, "host") != 0) {
        snprintf(err, errlen, "backend '%s' is not built into this worker (available: host%s)", a->backend,
                 is_cuda ? "; this build has no CUDA (nvcc not found at build time)" : "");
        return -1;
    } else if (backend_host_create(&g->be, &g->model, (int)a->n_ctx, g->n_seq, g->max_batch, n_threads, err,
                                   errlen) != 0)
        return -1;
    if (!is_cuda && a->kv_budget_tokens > 0) { /* the H2O cache (core/kvcache.h), resolved by the coordinator */
        if (a->kv_type > KV_Q8) {
            snprintf(err, errlen, "Assign: unknown kv_type %u (0 f32, 1 f16, 2 q8)", a->kv_type);
            return -1;
        }
        if (a->kv_cold > KV_COLD_F32) {
            snprintf(err, errlen, "Assign: unknown kv_cold %u (0 off, 1 q8, 2 q4, 3 f32)", a->kv_cold);
            return -1;
        }
        const struct kv_config kv = {.budget = (int)a->kv_budget_tokens,
                                     .n_sinks = (int)a->kv_sinks,
                                     .n_recent = (int)a->kv_recent,
                                     .window = a->kv_window,
                                     .type = (enum kv_type)a->kv_type,
                                     .score_mean = a->kv_score_mean,
                                     .decay = a->kv_decay > 0.0f ? a->kv_decay : 1.0f,
                                     .cold = (enum kv_cold)a->kv_cold,
                                     .recall = (int)a->kv_recall,
                                     .cands = (int)a->kv_recall_cands,
                                     .cold_max = (int64_t)a->kv_cold_max};
        if (backend_host_set_kv(&g->be, &kv, err, errlen) != 0) return -1;
    }
    if (backend_host_pool(&g->be)) worker_pin_pool(&g->w, backend_host_pool(&g->be));
    g->hot0 = calloc((size_t)c->n_layers, sizeof *g->hot0);
    g->hot1 = calloc((size_t)c->n_layers, sizeof *g->hot1);
    g->layer_ns = calloc((size_t)c->n_layers, sizeof *g->layer_ns);
    g->spans = calloc((size_t)g->max_batch, sizeof *g->spans);
    if (!g->hot0 || !g->hot1 || !g->layer_ns || !g->spans) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < a->n_shards; i++) {
        const Hearth__Shard *s = a->shards[i];
        if (s->layer >= (uint32_t)c->n_layers || s->first_neuron > s->end_neuron ||
            s->end_neuron > (uint32_t)c->hidden_dim) {
            snprintf(err, errlen, "bad hot shard: layer %u neurons [%u, %u)", s->layer, s->first_neuron,
                     s->end_neuron);
            return -1;
        }
        g->hot0[s->layer] = s->first_neuron;
        g->hot1[s->layer] = s->end_neuron;
    }
    if (a->sidecar_path && a->sidecar_path[0] && hotcold_load_sidecar(&g->sc, a->sidecar_path, &g->model, err, errlen))
        return -1;
    const int sparse = g->sc.planned; /* the plan's hot/cold FFN (else input sparsity only, or none) */
    if (!is_cuda) { /* attention and the hot neurons in the kernels' 8-row layout (the sparse FFN reads its own) */
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        size_t bytes = 0;
        if (model_repack(&g->model, 1, sparse ? NULL : g->hot0, g->hot1, &bytes, err, errlen) != 0) return -1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        log_info("repacked %.1f MiB of weights into 8-row groups in %.0f ms", (double)bytes / (1 << 20),
                 (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6);
    }
    if (g->sc.in_thr && !is_cuda) { /* attention's inputs; the hot neurons' too without a plan */
        size_t bytes = 0;
        if (insparse_model_create(&g->ins, c->n_layers, err, errlen) != 0 ||
            insparse_layers_apply(g->ins.layers, g->model.layers, c->n_layers, g->sc.in_thr, g->sc.in_use, 1, !sparse,
                                  g->hot0, g->hot1, &bytes, err, errlen) != 0)
            return -1;
        const struct layer_taps taps = insparse_taps(&g->ins);
        backend_host_set_taps(&g->be, &taps);
        log_info("input sparsity: %.1f MiB of input-major weights", (double)bytes / (1 << 20));
    }
    if (sparse && !is_cuda) {
        if (hotcold_create(&g->hc, &g->sc, &g->model, g->hot0, g->hot1, g->max_batch, err, errlen) != 0) return -1;
        backend_host_set_ffn(&g->be, hotcold_ffn_cb, &g->hc);
    }
#ifdef HEARTH_HAVE_CUDA
    for (int l = 0; is_cuda && l < c->n_layers; l++) { /* the hot neurons go to the device once */
        const int64_t n = g->hot1[l] - g->hot0[l];
        int64_t *idx = malloc((size_t)(n > 0 ? n : 1) * sizeof *idx);
        if (!idx) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        /* with a sidecar, the hot positions' neurons (computed densely: no threshold on the device yet) */
        for (int64_t i = 0; i < n; i++) idx[i] = sparse ? g->sc.layers[l].order[g->hot0[l] + i] : g->hot0[l] + i;
        int rc = backend_cuda_set_hot(&g->be, l, idx, n, err, errlen);
        free(idx);
        if (rc != 0) return -1;
    }
#endif
    for (size_t i = 0; i < a->n_rings; i++) {
        int k;
        if (sscanf(a->rings[i]->name, WIRE_RING_IN, &k) == 1 && k >= 0 && k < MAX_CPU_WORKERS && k + 1 > g->n_cpu)
            g->n_cpu = k + 1;
    }
    for (int k = 0; k < g->n_cpu; k++) {
        char name[32], ep[IPC_PATH_MAX + 32];
        snprintf(name, sizeof name, WIRE_RING_IN, k);
        if (worker_ring(&g->w, name, 1, &g->in[k], err, errlen) != 0 ||
            worker_bell_endpoint(&g->w, name, ep, sizeof ep) != 0 ||
            doorbell_connect(&g->in_bell[k], g->w.zctx, ep, err, errlen) != 0)
            return -1;
        snprintf(name, sizeof name, WIRE_RING_OUT, k);
        if (worker_ring(&g->w, name, 0, &g->out[k], err, errlen) != 0 ||
            worker_bell_endpoint(&g->w, name, ep, sizeof ep) != 0 ||
            doorbell_bind(&g->out_bell[k], g->w.zctx, ep, err, errlen) != 0)
            return -1;
    }
    size_t logits_bytes = (size_t)g->max_batch * c->n_vocab * sizeof(float);
    return shm_region_open(&g->logits, a->logits_region, logits_bytes, err, errlen);
}

/* Sends the FFN input of one layer to every CPU worker. 1: asked to exit. */
static int send_ffn_input(struct gpu_worker *g, uint64_t step_id, int layer, int n, const float *xn) {
    const struct wire_ffn h = {step_id, (uint32_t)layer, (uint32_t)n, 0.0, 0.0};
    const size_t payload = (size_t)n * g->model.cfg.dim * sizeof(float);
    for (int k = 0; k < g->n_cpu; k++) {
        void *slot;
        while (!(slot = ring_wait_reserve(&g->in[k], &idle_default, 200)))
            if (worker_poll(&g->w, 0, NULL)) return 1;
        memcpy(slot, &h, sizeof h);
        memcpy((char *)slot + sizeof h, xn, payload);
        ring_commit_notify(&g->in[k], &g->in_bell[k], (uint32_t)(sizeof h + payload));
    }
    return 0;
}

/* Adds every CPU worker's partial sum of this layer, dropping stale
 * messages (another step or layer: left by a restarted peer). 1: exit. */
static int gather_partials(struct gpu_worker *g, uint64_t step_id, int layer, int n, char *err, size_t errlen) {
    const size_t payload = (size_t)n * g->model.cfg.dim * sizeof(int64_t);
    for (int k = 0; k < g->n_cpu; k++) {
        for (;;) {
            if (ring_wait(&g->out[k], &g->out_bell[k], &idle_default, 200) == IPC_ETIMEDOUT) {
                if (worker_poll(&g->w, 0, NULL)) return 1;
                continue;
            }
            uint32_t len;
            const void *msg = ring_peek(&g->out[k], &len);
            if (!msg) continue;
            struct wire_ffn h;
            memcpy(&h, msg, sizeof h);
            if (h.step_id != step_id || h.layer != (uint32_t)layer) {
                log_debug("dropping a stale partial from cpu%d (step %llu layer %u)", k,
                          (unsigned long long)h.step_id, h.layer);
                ring_release(&g->out[k]);
                continue;
            }
            if (len != sizeof h + payload || h.n_tokens != (uint32_t)n) {
                snprintf(err, errlen, "cpu%d sent %u bytes for %u tokens, expected %d tokens", k, len, h.n_tokens, n);
                return -1;
            }
            g->be.add_partial(&g->be, n, (const int64_t *)((const char *)msg + sizeof h));
            g->step_weight_bytes += h.weight_bytes;
            g->step_dense_bytes += h.dense_bytes;
            ring_release(&g->out[k]);
            break;
        }
    }
    return 0;
}

/* The Step's spans into g->spans (a Step without spans is one span of
 * sequence 0); the backend checks them against its caches. Returns the
 * count, or -1 with err. */
static int step_spans(struct gpu_worker *g, const Hearth__Step *s, char *err, size_t errlen) {
    if (s->n_spans == 0) {
        const uint32_t f = s->flags;
        g->spans[0] = (struct seq_span){0, (int)s->pos0, (int)s->n_tokens,
                                        !(f & HEARTH__STEP_FLAG__STEP_FLAG_LOGITS)       ? SPAN_LOGITS_NONE
                                        : (f & HEARTH__STEP_FLAG__STEP_FLAG_ALL_LOGITS) ? SPAN_LOGITS_ALL
                                                                                         : SPAN_LOGITS_LAST};
        return 1;
    }
    if (s->n_spans > (size_t)g->max_batch) {
        snprintf(err, errlen, "step %llu: %zu spans, batch limit %d", (unsigned long long)s->step_id, s->n_spans,
                 g->max_batch);
        return -1;
    }
    uint64_t rows = 0;
    for (size_t i = 0; i < s->n_spans; i++) {
        const Hearth__Span *p = s->spans[i];
        if (p->pos0 > INT32_MAX || p->n_tokens > (uint32_t)g->max_batch || p->logits > SPAN_LOGITS_ALL) {
            snprintf(err, errlen, "step %llu: span %zu (sequence %u, pos0 %u, %u tokens, logits %u) is malformed",
                     (unsigned long long)s->step_id, i, p->seq, p->pos0, p->n_tokens, p->logits);
            return -1;
        }
        g->spans[i] = (struct seq_span){p->seq > INT32_MAX ? -1 : (int)p->seq, (int)p->pos0, (int)p->n_tokens,
                                        (int)p->logits};
        rows += p->n_tokens;
    }
    if (rows != s->n_tokens) {
        snprintf(err, errlen, "step %llu: spans hold %llu tokens, the step announces %u", (unsigned long long)s->step_id,
                 (unsigned long long)rows, s->n_tokens);
        return -1;
    }
    return (int)s->n_spans;
}

/* Runs one Step. 0 done, 1 asked to exit, -1 error. */
static int run_step(struct gpu_worker *g, const Hearth__Step *s, char *err, size_t errlen) {
    const struct llama_config *c = &g->model.cfg;
    const int n = (int)s->n_tokens;
    if (s->n_tokens == 0 || s->n_tokens != s->n_token_ids || s->n_tokens > (uint32_t)g->max_batch) {
        snprintf(err, errlen, "step %llu: %u tokens announced, %zu sent, batch limit %d",
                 (unsigned long long)s->step_id, s->n_tokens, s->n_token_ids, g->max_batch);
        return -1;
    }
    const int n_spans = step_spans(g, s, err, errlen);
    if (n_spans < 0) return -1;
    const uint64_t t_step = idle_now_ns();
    const struct hotcold_stats before = g->hc.stats;
    const uint64_t attn0 = g->be.attn_ns ? g->be.attn_ns(&g->be) : 0;
    g->step_weight_bytes = g->step_dense_bytes = 0;
    if (g->be.begin(&g->be, s->token_ids, n, g->spans, n_spans, err, errlen) != 0) return -1;
    for (int l = 0; l < c->n_layers; l++) {
        const uint64_t t0 = idle_now_ns();
        if (g->be.attention(&g->be, l, err, errlen) != 0) return -1;
        const float *xn = g->be.ffn_input(&g->be, l, n);
        /* every neuron hot: no CPU worker has any of this layer, so none is
         * woken (a handoff per layer costs more than nothing) */
        const int cold = !(g->hot0[l] == 0 && g->hot1[l] == c->hidden_dim);
        int rc = cold ? send_ffn_input(g, s->step_id, l, n, xn) : 0;
        if (rc) return rc;
        if (g->be.ffn_hot(&g->be, l, n, g->hot0[l], g->hot1[l], err, errlen) != 0) return -1;
        rc = cold ? gather_partials(g, s->step_id, l, n, err, errlen) : 0;
        if (rc) return rc;
        g->be.ffn_finish(&g->be, n);
        g->layer_ns[l] = idle_now_ns() - t0;
    }
    if (g->be.output(&g->be, g->logits.base, err, errlen) != 0) return -1;
    Hearth__Envelope *done =
        ctl_env_step_done(s->step_id, g->layer_ns, (size_t)c->n_layers, idle_now_ns() - t_step);
    if (done) {
        done->step_done->ffn_weight_bytes = g->step_weight_bytes + g->hc.stats.weight_bytes - before.weight_bytes;
        done->step_done->ffn_dense_bytes = g->step_dense_bytes + g->hc.stats.dense_bytes - before.dense_bytes;
        done->step_done->attn_ns = g->be.attn_ns ? g->be.attn_ns(&g->be) - attn0 : 0;
        done->step_done->kv_cold_bytes = backend_host_kv_cold_bytes(&g->be);
    }
    int rc = done ? ctl_client_send(&g->w.ctl, done) : IPC_ERR;
    ctl_env_free(done);
    if (rc != 0) {
        snprintf(err, errlen, "cannot send StepDone");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    static const char *const caps[] = {"attention", "kv", "ffn", "host"};
    struct gpu_worker g;
    memset(&g, 0, sizeof g);
    char err[1024];
    log_set_role("gpu");
    if (worker_start(&g.w, argc, argv, "gpu", caps, 4, err, sizeof err) != 0 || setup(&g, err, sizeof err) != 0 ||
        worker_ready(&g.w) != 0) {
        log_error("%s", err);
        return 1;
    }
    int rc = 0;
    for (;;) {
        Hearth__Envelope *step = NULL;
        if (worker_poll(&g.w, 200, &step)) break;
        if (!step) continue;
        int sr = run_step(&g, step->step, err, sizeof err);
        ctl_env_free(step);
        if (sr > 0) break;
        if (sr < 0) {
            log_error("%s", err);
            rc = 1;
            break;
        }
    }
    for (int k = 0; k < g.n_cpu; k++) {
        doorbell_close(&g.in_bell[k]);
        doorbell_close(&g.out_bell[k]);
    }
    shm_region_close(&g.logits);
    if (g.be.destroy) g.be.destroy(&g.be);
    if (g.hc.hot) hotcold_destroy(&g.hc);
    if (g.ins.layers) insparse_model_free(&g.ins);
    if (g.sc.layers) sidecar_free(&g.sc);
    free(g.hot0);
    free(g.hot1);
    free(g.layer_ns);
    free(g.spans);
    model_free(&g.model);
    worker_stop(&g.w);
    return rc;
}
