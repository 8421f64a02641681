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
#include <unistd.h>

#include "forward.h"
#include "ipc.h"
#include "log.h"
#include "model.h"
#include "quant.h"
#include "tpool.h"
#include "wire.h"
#include "worker.h"

struct cpu_worker {
    struct worker w;
    struct llama_model model;
    struct tpool *tp;
    struct ffn_scratch fs;
    int64_t *n0, *n1; /* [n_layers] this worker's neurons of each layer */
    struct ring in, out;
    struct doorbell in_bell, out_bell;
};

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
    if (ffn_partial(&c->model, (int)h.layer, xn, (int)h.n_tokens, c->n0[h.layer], c->n1[h.layer], acc, &c->fs, c->tp,
                    err, errlen) != 0)
        return -1;
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
    if (c.tp) tpool_destroy(c.tp);
    free(c.n0);
    free(c.n1);
    model_free(&c.model);
    worker_stop(&c.w);
    return rc;
}
