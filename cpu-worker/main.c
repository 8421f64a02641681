/* hearth-cpu-worker: computes its shard of the cold FFN neurons of every
 * layer (DESIGN.md, "One decoding step, as data").
 *
 * Per message in its input ring (the FFN input xn of one layer, from the GPU
 * worker) it computes y_k = FFN_l restricted to its neurons of layer l (in
 * the fixed point of core/forward.h, so that the GPU worker's sum is exact)
 * and pushes y_k into its output ring. It follows the data: the coordinator is
 * not on this path. The input slot is released only after the output is
 * committed, so a worker killed mid-layer leaves the input for its
 * replacement (the GPU worker drops the duplicate output that may result). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ffn.h"
#include "hotcold.h"
#include "insparse.h"
#include "ipc.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "topo.h"
#include "tpool.h"
#include "types.h"
#include "wire.h"
#include "worker.h"

/* A NUMA-local copy of this worker's neurons of one layer: gate and up rows
 * [n0, n1), and the matching columns of down, as a layer of hidden size
 * n1 - n0 (core/ffn.h, ffn_partial_layer). */
struct local_layer {
    struct llama_layer L;
    void *buf;
    size_t bytes;
};

struct cpu_worker {
    struct worker w;
    struct llama_model model;
    struct topo *topo;
    struct local_layer *local; /* [n_layers] or NULL: compute from the mapped file */
    struct sidecar sc;         /* Assign.sidecar_path: the sparse FFN of the plan */
    struct hotcold hc;
    int sparse;
    /* the sidecar's input sparsity without a plan: the shard's masks and
     * input-major copies (of the local copy where there is one) */
    struct insparse_model ins;
    struct layer_taps taps; /* zeroed: none */
    struct tpool *tp;
    struct ffn_scratch fs;
    int64_t *n0, *n1; /* [n_layers] this worker's neurons of each layer */
    struct ring in, out;
    struct doorbell in_bell, out_bell;
};

/* Copies the rows of one weight into dst: rows [r0, r1) whole, or (cols) the
 * byte range of columns [c0, c1) of every row. Returns the bytes written. */
static size_t copy_rows(char *dst, const struct weight *w, int64_t r0, int64_t r1) {
    const size_t row = hearth_row_size(w->type, w->n_in);
    memcpy(dst, (const char *)w->data + (size_t)r0 * row, (size_t)(r1 - r0) * row);
    return (size_t)(r1 - r0) * row;
}

static size_t copy_cols(char *dst, const struct weight *w, int64_t c0, int64_t c1) {
    const size_t row = hearth_row_size(w->type, w->n_in), off = hearth_row_size(w->type, c0),
                 len = hearth_row_size(w->type, c1 - c0);
    for (int64_t r = 0; r < w->n_out; r++) memcpy(dst + (size_t)r * len, (const char *)w->data + (size_t)r * row + off, len);
    return (size_t)w->n_out * len;
}

/* On a machine with several NUMA nodes the worker's weights go into its
 * node's memory (the file's pages live wherever the page cache put them).
 * With one node the mapping is already local and a copy would only double
 * the memory. HEARTH_NUMA_COPY=1 forces the copy (tests). */
static int make_local_copy(struct cpu_worker *c, char *err, size_t errlen) {
    const char *force = getenv("HEARTH_NUMA_COPY");
    char terr[256];
    c->topo = topo_load(NULL, terr, sizeof terr);
    if (!c->topo) {
        log_warn("no topology (%s): weights stay in the mapped file", terr);
        return 0;
    }
    if (topo_n_nodes(c->topo) < 2 && !(force && !strcmp(force, "1"))) return 0;
    int pus[1024];
    int n_pus = worker_parse_cpuset(c->w.assign->cpuset, pus, 1024), node = -1;
    if (n_pus > 0) {
        int li = topo_node_of_pu(c->topo, pus[0]);
        if (li >= 0) node = topo_node(c->topo, li)->os_index;
    }
    const struct llama_config *cfg = &c->model.cfg;
    c->local = calloc((size_t)cfg->n_layers, sizeof *c->local);
    if (!c->local) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t total = 0;
    for (int l = 0; l < cfg->n_layers; l++) {
        const struct llama_layer *L = &c->model.layers[l];
        struct local_layer *ll = &c->local[l];
        const int64_t n0 = c->n0[l], n1 = c->n1[l], width = n1 - n0;
        ll->L = *L;
        if (width == 0) continue;
        const size_t gate_b = L->w_gate.data ? (size_t)width * hearth_row_size(L->w_gate.type, L->w_gate.n_in) : 0;
        const size_t up_b = (size_t)width * hearth_row_size(L->w_up.type, L->w_up.n_in);
        const size_t down_b = (size_t)L->w_down.n_out * hearth_row_size(L->w_down.type, width);
        ll->bytes = gate_b + up_b + down_b;
        ll->buf = topo_alloc_on_node(c->topo, ll->bytes, node);
        if (!ll->buf) {
            snprintf(err, errlen, "out of memory for %zu bytes of layer %d's weights on node %d", ll->bytes, l, node);
            return -1;
        }
        char *p = ll->buf;
        if (gate_b) {
            ll->L.w_gate = (struct weight){.data = p, .type = L->w_gate.type, .n_in = L->w_gate.n_in, .n_out = width};
            p += copy_rows(p, &L->w_gate, n0, n1);
        }
        ll->L.w_up = (struct weight){.data = p, .type = L->w_up.type, .n_in = L->w_up.n_in, .n_out = width};
        p += copy_rows(p, &L->w_up, n0, n1);
        ll->L.w_down = (struct weight){.data = p, .type = L->w_down.type, .n_in = width, .n_out = L->w_down.n_out};
        copy_cols(p, &L->w_down, n0, n1);
        total += ll->bytes;
    }
    log_info("copied %.1f MiB of shard weights to NUMA node %d", (double)total / (1 << 20), node);
    return 0;
}

static void free_local_copy(struct cpu_worker *c) {
    if (c->local)
        for (int l = 0; l < c->model.cfg.n_layers; l++) {
            struct llama_layer *L = &c->local[l].L;
            weight_repack_free(&L->w_gate);
            weight_repack_free(&L->w_up);
            weight_repack_free(&L->w_down);
            if (c->local[l].buf) topo_free_on_node(c->topo, c->local[l].buf, c->local[l].bytes);
        }
    free(c->local);
    if (c->topo) topo_free(c->topo);
}

/* The sidecar's input sparsity on the shard: the FFN thresholds, and the
 * input-major copies of its gate/up rows and down columns (of the NUMA-local
 * copy where there is one). */
static int apply_insparse(struct cpu_worker *c, char *err, size_t errlen) {
    const int nl = c->model.cfg.n_layers;
    size_t bytes = 0;
    int rc = insparse_model_create(&c->ins, nl, err, errlen);
    if (rc == 0 && !c->local) {
        rc = insparse_layers_apply(c->ins.layers, c->model.layers, nl, c->sc.in_thr, c->sc.in_use, 0, 1, c->n0, c->n1,
                                   &bytes, err, errlen);
    } else if (rc == 0) { /* each local layer is the shard alone: neurons [0, width) */
        for (int l = 0; l < nl && rc == 0; l++) {
            const int64_t width = c->n1[l] - c->n0[l];
            size_t lb = 0;
            rc = insparse_layers_apply(&c->ins.layers[l], &c->local[l].L, 1, c->sc.in_thr + (size_t)l * SIDECAR_IN_SITES,
                                       c->sc.in_use + (size_t)l * SIDECAR_IN_MATS, 0, 1, NULL, &width, &lb, err,
                                       errlen);
            bytes += lb;
        }
    }
    if (rc == 0) c->taps = insparse_taps(&c->ins);
    if (rc == 0) log_info("input sparsity: %.1f MiB of input-major shard weights", (double)bytes / (1 << 20));
    return rc;
}

/* The shard's rows in the 8-row layout of the GEMV kernels (model.h, x8),
 * in this process's memory: from the NUMA-local copy where there is one, else
 * from the mapped file (whose pages are then dropped: the copy replaces them). */
static int repack_shard(struct cpu_worker *c, char *err, size_t errlen) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t bytes = 0;
    if (!c->local) {
        if (model_repack(&c->model, 0, c->n0, c->n1, &bytes, err, errlen) != 0) return -1;
    } else {
        for (int l = 0; l < c->model.cfg.n_layers; l++)
            if (model_repack_layer(&c->local[l].L, 0, 0, c->n1[l] - c->n0[l], 0, &bytes, err, errlen) != 0) return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    log_info("repacked %.1f MiB of shard weights into 8-row groups in %.0f ms", (double)bytes / (1 << 20),
             (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6);
    return 0;
}

static int setup(struct cpu_worker *c, char *err, size_t errlen) {
    const Hearth__Assign *a = c->w.assign;
    if (model_load(&c->model, a->model_path, err, errlen) != 0) return -1;
    const struct llama_config *cfg = &c->model.cfg;
    c->n0 = calloc((size_t)cfg->n_layers, sizeof *c->n0);
    c->n1 = calloc((size_t)cfg->n_layers, sizeof *c->n1);
    if (!c->n0 || !c->n1) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < a->n_shards; i++) {
        const Hearth__Shard *s = a->shards[i];
        if (s->layer >= (uint32_t)cfg->n_layers || s->first_neuron > s->end_neuron ||
            s->end_neuron > (uint32_t)cfg->hidden_dim) {
            snprintf(err, errlen, "bad shard: layer %u neurons [%u, %u)", s->layer, s->first_neuron, s->end_neuron);
            return -1;
        }
        c->n0[s->layer] = s->first_neuron;
        c->n1[s->layer] = s->end_neuron;
    }
    int n_threads = a->n_threads > 0 ? (int)a->n_threads : 1;
    c->tp = tpool_create(n_threads, err, errlen);
    if (!c->tp || ffn_scratch_create(&c->fs, &c->model, (int)a->max_batch, err, errlen) != 0) return -1;
    worker_pin_pool(&c->w, c->tp);
    if (a->sidecar_path && a->sidecar_path[0] && hotcold_load_sidecar(&c->sc, a->sidecar_path, &c->model, err, errlen))
        return -1;
    if (c->sc.planned) {
        /* positions of the plan; hotcold gathers the shard's rows itself */
        if (hotcold_create(&c->hc, &c->sc, &c->model, c->n0, c->n1, (int)a->max_batch, err, errlen) != 0) return -1;
        c->sparse = 1;
    } else if (make_local_copy(c, err, errlen) != 0 || repack_shard(c, err, errlen) != 0) {
        return -1;
    } else if (c->sc.in_thr && apply_insparse(c, err, errlen) != 0) {
        return -1;
    }
    char name[32], ep[IPC_PATH_MAX + 32];
    int k = atoi(c->w.role + 3);
    snprintf(name, sizeof name, WIRE_RING_IN, k);
    if (worker_ring(&c->w, name, 0, &c->in, err, errlen) != 0 ||
        worker_bell_endpoint(&c->w, name, ep, sizeof ep) != 0 ||
        doorbell_bind(&c->in_bell, c->w.zctx, ep, err, errlen) != 0)
        return -1;
    snprintf(name, sizeof name, WIRE_RING_OUT, k);
    if (worker_ring(&c->w, name, 1, &c->out, err, errlen) != 0 ||
        worker_bell_endpoint(&c->w, name, ep, sizeof ep) != 0 ||
        doorbell_connect(&c->out_bell, c->w.zctx, ep, err, errlen) != 0)
        return -1;
    return 0;
}

/* One input message: compute this worker's part of the layer's FFN. */
static int serve(struct cpu_worker *c, const void *msg, uint32_t len, char *err, size_t errlen) {
    const struct llama_config *cfg = &c->model.cfg;
    struct wire_ffn h;
    memcpy(&h, msg, sizeof h);
    const size_t in_bytes = (size_t)h.n_tokens * cfg->dim * sizeof(float);
    const size_t payload = (size_t)h.n_tokens * cfg->dim * sizeof(int64_t);
    if (len != sizeof h + in_bytes || h.layer >= (uint32_t)cfg->n_layers || h.n_tokens > (uint32_t)c->fs.max_batch) {
        snprintf(err, errlen, "malformed input: %u bytes, layer %u, %u tokens", len, h.layer, h.n_tokens);
        return -1;
    }
    void *slot;
    while (!(slot = ring_wait_reserve(&c->out, &idle_default, 200)))
        if (worker_poll(&c->w, 0, NULL)) return 1;
    memcpy(slot, &h, sizeof h);
    int64_t *acc = (int64_t *)((char *)slot + sizeof h);
    const float *xn = (const float *)((const char *)msg + sizeof h);
    memset(acc, 0, payload);
    const int l = (int)h.layer;
    const struct hotcold_stats before = c->hc.stats;
    int rc = c->sparse ? hotcold_ffn(&c->hc, l, xn, (int)h.n_tokens, acc, c->tp, err, errlen)
             : c->local ? ffn_partial_layer(cfg, &c->local[l].L, l, xn, (int)h.n_tokens, 0, c->n1[l] - c->n0[l], acc,
                                          &c->fs, &c->taps, c->tp, err, errlen)
                      : ffn_partial_layer(cfg, &c->model.layers[l], l, xn, (int)h.n_tokens, c->n0[l], c->n1[l], acc,
                                          &c->fs, &c->taps, c->tp, err, errlen);
    if (rc != 0)
        return -1;
    if (c->sparse) {
        h.weight_bytes = c->hc.stats.weight_bytes - before.weight_bytes;
        h.dense_bytes = c->hc.stats.dense_bytes - before.dense_bytes;
        memcpy(slot, &h, sizeof h);
    }
    return ring_commit_notify(&c->out, &c->out_bell, (uint32_t)(sizeof h + payload)) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    static const char *const caps[] = {"ffn", "host"};
    struct cpu_worker c;
    memset(&c, 0, sizeof c);
    char err[1024];
    log_set_role("cpu");
    if (worker_start(&c.w, argc, argv, "cpu", caps, 2, err, sizeof err) != 0 || setup(&c, err, sizeof err) != 0 ||
        worker_ready(&c.w) != 0) {
        log_error("%s", err);
        return 1;
    }
    int rc = 0;
    for (;;) {
        int wr = ring_wait(&c.in, &c.in_bell, &idle_default, 200);
        if (wr == IPC_ETIMEDOUT) {
            if (worker_poll(&c.w, 0, NULL)) break;
            continue;
        }
        uint32_t len;
        const void *msg = ring_peek(&c.in, &len);
        if (!msg) continue;
        int sr = serve(&c, msg, len, err, sizeof err);
        if (sr > 0) break;
        if (sr < 0) {
            log_error("%s", err);
            rc = 1;
            break;
        }
        ring_release(&c.in);
    }
    doorbell_close(&c.in_bell);
    doorbell_close(&c.out_bell);
    ffn_scratch_free(&c.fs);
    if (c.sparse) hotcold_destroy(&c.hc);
    if (c.ins.layers) insparse_model_free(&c.ins);
    if (c.sc.layers) sidecar_free(&c.sc);
    if (c.tp) tpool_destroy(c.tp);
    free_local_copy(&c);
    free(c.n0);
    free(c.n1);
    model_free(&c.model);
    worker_stop(&c.w);
    return rc;
}
