/* runtime: the coordinator's side of the multi-process runtime.
 *
 * runtime_start creates a session (ipc/session.h: a private folder for the
 * sockets and the token, shm regions for the rings and the logits), plans
 * where each worker runs (core/topo.h), spawns one GPU worker and N CPU
 * workers, and hands each its Assign: the model, its threads and cpuset,
 * its neurons of every layer (the hot ones to the GPU worker, the cold ones
 * split into contiguous shards among the CPU workers), and its rings.
 *
 * runtime_step sends a Step (a batch of sequences: tokens and their spans)
 * to the GPU worker and waits for its StepDone; the per-layer traffic
 * between the workers follows the data through the rings without the
 * coordinator. While it waits it supervises: a worker that dies is
 * restarted alone; if it was the GPU worker, the KV cache of every sequence
 * is rebuilt by replaying that sequence's steps since its last reset, in
 * the same spans (so an H2O cache evicts the same tokens), before the lost
 * step is replayed; the caller sees the same logits.
 *
 * A developer can take one worker over by hand (`hearth workers stop ROLE`
 * leaves a marker; the coordinator then waits for that role to say Hello
 * instead of spawning it). */
#ifndef HEARTH_RUNTIME_H
#define HEARTH_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "forward.h"
#include "kvcache.h"
#include "model.h"
#include "sidecar.h"

struct runtime_opts {
    const char *model_path;
    int n_cpu_workers;       /* 0: one per NUMA node */
    const char *pin;         /* --pin SPEC (core/topo.h), NULL: automatic */
    const char *gpu_backend; /* "host" or "cuda"; NULL: cuda when built and a GPU is present, else host */
    float hot_fraction;      /* share of each layer's FFN neurons computed by the GPU worker */
    int n_ctx, max_batch;
    int n_seq;               /* sequences, each with a KV cache of n_ctx in the GPU worker; 0: 1 */
    int n_threads;           /* all threads of all workers; 0: the machine's cores */
    int verbose;
    struct kv_config kv;     /* resolved (kv_config_resolve); budget 0: the dense cache */
    const char *sidecar_path;     /* NULL: dense FFN split by hot_fraction */
    const struct sidecar *sidecar; /* loaded and checked (hotcold_load_sidecar): its hot counts place the neurons */
};

struct runtime;

struct runtime *runtime_start(const struct runtime_opts *o, const struct llama_model *m, char *err, size_t errlen);

/* Evaluates one batch, as forward_batch (core/forward.h): tokens are the
 * spans' tokens in span order, at most max_batch in all; logits (NULL for
 * none) receives the rows the spans ask for. A span at pos0 replaces its
 * sequence's positions >= pos0 (pos0 = 0: a new sequence). */
int runtime_step(struct runtime *rt, const int32_t *tokens, const struct seq_span *spans, int n_spans, float *logits,
                 char *err, size_t errlen);

/* Shuts the workers down and removes everything of the session. */
void runtime_stop(struct runtime *rt);

struct runtime_proc {
    char role[16];
    int pid;
    size_t peak_rss_bytes; /* VmHWM from /proc; 0 when unreadable */
};
/* The workers, at most max of them; returns how many there are. */
int runtime_procs(const struct runtime *rt, struct runtime_proc *out, int max);

/* The session id (for logs and `hearth workers`). */
const char *runtime_session_id(const struct runtime *rt);
/* With a sidecar: FFN weight bytes read by all workers so far, and what the
 * dense FFN would have read (0 and 0 without one). */
void runtime_ffn_bytes(const struct runtime *rt, double *weight_bytes, double *dense_bytes);
/* Host bytes of the GPU worker's cold KV stores after the last step. */
size_t runtime_kv_cold_bytes(const struct runtime *rt);
/* Seconds the GPU worker spent in the attention core, summed from StepDone. */
double runtime_attn_seconds(const struct runtime *rt);

/* 1 once SIGINT/SIGTERM asked the coordinator to stop. */
int runtime_interrupted(void);

#endif
