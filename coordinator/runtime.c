/* runtime: see runtime.h. */
#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <libgen.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "ctl.h"
#include "idle.h"
#include "ipc.h"
#include "log.h"
#include "ring.h"
#include "session.h"
#include "shm.h"
#include "sparse.h"
#include "topo.h"
#include "types.h"
#include "wire.h"
#include "forward.h"

extern char **environ;

#define RT_RING_SLOTS 4          /* a layer in flight plus room for stale messages after a restart */
#define RT_START_TIMEOUT_MS 60000 /* Hello + model load + Ready */

struct rworker {
    char role[16];           /* "gpu0", "cpu0", ... */
    const struct placement_role *place;
    pid_t pid;
    int child;               /* spawned by us (else started by hand) */
    struct ctl_peer peer;
    int have_peer, ready;
    int64_t *n0, *n1;        /* [n_layers] its neurons of each layer */
};

/* What the GPU worker's KV cache of one sequence holds, as the steps that
 * built it since its last reset (a span at position 0): replaying them, in
 * the same spans, rebuilds the cache bit for bit on a new GPU worker, H2O
 * evictions included (an H2O cache's scores and evictions depend on every
 * query it saw, a rewound branch's too, so its log is the whole history).
 * A dense cache's content is a function of the tokens it holds alone,
 * however they were cut into steps, so its log is trimmed to them at each
 * rewind and never outgrows the context. */
struct seq_log {
    struct seq_span *ev; /* the spans applied, in order (logits NONE) */
    int n_ev, cap_ev;
    int32_t *tok;        /* their tokens, concatenated */
    int n_tok, cap_tok;
};

struct runtime {
    struct runtime_opts o;
    struct seq_log *logs; /* [n_seq] */
    const struct llama_model *m;
    struct ipc_session sess;
    void *zctx;
    struct ctl_server ctl;
    struct topo *topo;
    struct placement place;
    struct shm_region rings, logits;
    char exe_dir[1024];
    const char *backend;
    int n_workers;           /* 1 + n_cpu */
    struct rworker *w;       /* [0] gpu0, [1 + k] cpuk */
    size_t ring_slot;
    uint64_t next_step;
    int stopping;            /* runtime_stop: workers leaving is expected */
    double ffn_weight_bytes, ffn_dense_bytes; /* summed from StepDone */
    uint64_t attn_ns;                         /* summed from StepDone */
    uint64_t kv_cold_bytes;                   /* the last StepDone's */
};

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig) {
    (void)sig;
    g_interrupted = 1;
}

int runtime_interrupted(void) { return g_interrupted != 0; }

const char *runtime_session_id(const struct runtime *rt) { return rt->sess.id; }

double runtime_attn_seconds(const struct runtime *rt) { return (double)rt->attn_ns * 1e-9; }

size_t runtime_kv_cold_bytes(const struct runtime *rt) { return (size_t)rt->kv_cold_bytes; }

void runtime_ffn_bytes(const struct runtime *rt, double *weight_bytes, double *dense_bytes) {
    *weight_bytes = rt->ffn_weight_bytes;
    *dense_bytes = rt->ffn_dense_bytes;
}

static size_t proc_peak_rss(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    size_t kib = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %zu kB", &kib) == 1) break;
    fclose(f);
    return kib * 1024;
}

int runtime_procs(const struct runtime *rt, struct runtime_proc *out, int max) {
    for (int i = 0; i < rt->n_workers && i < max; i++) {
        snprintf(out[i].role, sizeof out[i].role, "%s", rt->w[i].role);
        out[i].pid = (int)rt->w[i].pid;
        out[i].peak_rss_bytes = rt->w[i].pid > 0 ? proc_peak_rss(rt->w[i].pid) : 0;
    }
    return rt->n_workers;
}

static int n_cpu(const struct runtime *rt) { return rt->n_workers - 1; }

/* ------------------------------------------------------------ layout */

/* 1 when PU p belongs to role r */
static int role_has_pu(const struct placement_role *r, int p) {
    for (int i = 0; r && i < r->n_pus; i++)
        if (r->pus[i] == p) return 1;
    return 0;
}

/* --hot-fraction not given. With a GPU the hot neurons are what the GPU
 * holds: half (the sidecar's plan decides per layer when there is one). On
 * the host backend the GPU worker is CPU threads too, so the split is by
 * cores: a CPU worker whose PUs all belong to the GPU worker (one NUMA node,
 * where every role shares the cores) adds a handoff per layer and no core,
 * so the GPU worker computes every neuron (measured on 2 cores: 0.5 hot ran
 * at 0.65x the single process, all hot at 0.9-0.96x); CPU workers with cores
 * of their own (other nodes) get the share of the threads they bring. */
static float auto_hot_fraction(const struct runtime *rt) {
    if (strcmp(rt->backend, "host") != 0) return 0.5f;
    const struct placement_role *g = rt->w[0].place;
    int gpu_threads = g ? g->n_threads : 1, own_threads = 0;
    for (int k = 0; k < n_cpu(rt); k++) {
        const struct placement_role *c = rt->w[1 + k].place;
        int own = 0;
        for (int i = 0; c && i < c->n_pus; i++) own += !role_has_pu(g, c->pus[i]);
        if (own > 0) own_threads += c->n_threads < own ? c->n_threads : own;
    }
    const float f = own_threads ? (float)gpu_threads / (float)(gpu_threads + own_threads) : 1.0f;
    log_info("hot fraction %.2f: host backend, %d GPU worker threads, %d CPU worker threads on cores of their own "
             "(--hot-fraction overrides)", (double)f, gpu_threads, own_threads);
    return f;
}

static int64_t align_down(int64_t v, int64_t a) { return v / a * a; }

/* Hot neurons [0, hot) on the GPU worker, the rest split evenly (on block
 * boundaries) among the CPU workers. Without a sidecar, hot is the first
 * --hot-fraction of the neurons in their file order, the same in every
 * layer; with one, the neurons are the plan's positions (most frequently
 * firing first) and each layer has its own hot count. */
static int plan_neurons(struct runtime *rt, char *err, size_t errlen) {
    const struct llama_config *c = &rt->m->cfg;
    const int64_t hidden = c->hidden_dim;
    const int planned = rt->o.sidecar && rt->o.sidecar->planned; /* else no sidecar, or input sparsity only */
    const int64_t align = planned ? SPARSE_GROUP : ffn_neuron_align(rt->m);
    int64_t hot_all = align_down((int64_t)(rt->o.hot_fraction * (double)hidden + 0.5), align);
    if (rt->o.hot_fraction >= 1.0f) hot_all = hidden;
    for (int i = 0; i < rt->n_workers; i++) {
        struct rworker *w = &rt->w[i];
        w->n0 = calloc((size_t)c->n_layers, sizeof *w->n0);
        w->n1 = calloc((size_t)c->n_layers, sizeof *w->n1);
        if (!w->n0 || !w->n1) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        for (int l = 0; l < c->n_layers; l++) {
            const int64_t hot = planned ? rt->o.sidecar->layers[l].hot : hot_all;
            const int64_t cold_blocks = (hidden - hot + align - 1) / align;
            int64_t a, b;
            if (i == 0) {
                a = 0;
                b = hot;
            } else {
                int k = i - 1, n = n_cpu(rt);
                a = hot + cold_blocks * k / n * align;
                b = hot + cold_blocks * (k + 1) / n * align;
                if (b > hidden) b = hidden;
                if (a > hidden) a = hidden;
            }
            w->n0[l] = a;
            w->n1[l] = b;
        }
        log_info("%s: neurons [%lld, %lld) of %lld in %s", w->role, (long long)w->n0[0], (long long)w->n1[0],
                 (long long)hidden, planned ? "layer 0 (positions of the sidecar's plan)" : "every layer");
    }
    return 0;
}

/* The rings region: in.cpuK and out.cpuK for every CPU worker. */
static int make_rings(struct runtime *rt, char *err, size_t errlen) {
    const struct llama_config *c = &rt->m->cfg;
    /* the larger of the two payloads: float inputs, int64 partial sums */
    rt->ring_slot = sizeof(struct wire_ffn) + (size_t)rt->o.max_batch * c->dim * sizeof(int64_t);
    if (rt->ring_slot > UINT32_MAX / 2) {
        snprintf(err, errlen, "a batch of %d tokens does not fit a ring slot", rt->o.max_batch);
        return -1;
    }
    const size_t one = ring_bytes((uint32_t)rt->ring_slot, RT_RING_SLOTS);
    char name[SHM_NAME_MAX];
    if (ipc_session_shm_name(&rt->sess, WIRE_REGION_RINGS, name, sizeof name) != 0 ||
        shm_region_create(&rt->rings, name, one * 2 * (size_t)n_cpu(rt), err, errlen) != 0)
        return -1;
    for (int k = 0; k < 2 * n_cpu(rt); k++) {
        struct ring r;
        if (ring_init(&r, (char *)rt->rings.base + one * (size_t)k, one, (uint32_t)rt->ring_slot, RT_RING_SLOTS, err,
                      errlen) != 0)
            return -1;
    }
    if (ipc_session_shm_name(&rt->sess, WIRE_REGION_LOGITS, name, sizeof name) != 0) return -1;
    return shm_region_create(&rt->logits, name, (size_t)rt->o.max_batch * c->n_vocab * sizeof(float), err, errlen);
}

/* ------------------------------------------------------------ workers */

static void pid_file(const struct runtime *rt, const struct rworker *w, const char *suffix, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s.%s", rt->sess.dir, w->role, suffix);
}

static void write_pid_file(const struct runtime *rt, const struct rworker *w) {
    char path[IPC_PATH_MAX + 32];
    pid_file(rt, w, "pid", path, sizeof path);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "%d\n", (int)w->pid);
        fclose(f);
    }
}

static int spawn_worker(struct runtime *rt, struct rworker *w, char *err, size_t errlen) {
    char exe[1200];
    snprintf(exe, sizeof exe, "%s/hearth-%s-worker", rt->exe_dir, w->role[0] == 'g' ? "gpu" : "cpu");
    char *argv[] = {exe, "--session", rt->sess.id, "--role", w->role, "--root", rt->sess.root,
                    rt->o.verbose ? "-v" : NULL, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    /* stdout belongs to the generated text; workers log to stderr */
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawn(&w->pid, exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start %s: %s", exe, strerror(rc));
        return -1;
    }
    w->child = 1;
    w->have_peer = w->ready = 0;
    write_pid_file(rt, w);
    log_info("started %s (pid %d)", w->role, (int)w->pid);
    return 0;
}

static char *cpuset_string(const struct placement_role *p) {
    char buf[4096];
    buf[0] = '\0';
    if (p && p->pinned && p->n_pus > 0) topo_format_pus(p->pus, p->n_pus, buf, sizeof buf);
    return strdup(buf);
}

static int ring_ref(Hearth__RingRef *r, const struct runtime *rt, int index, const char *name, int produce) {
    r->offset = ring_bytes((uint32_t)rt->ring_slot, RT_RING_SLOTS) * (uint64_t)index;
    r->slot_size = (uint32_t)rt->ring_slot;
    r->n_slots = RT_RING_SLOTS;
    r->produce = produce;
    return ctl_strdup(&r->name, name);
}

static int send_assign(struct runtime *rt, struct rworker *w) {
    const struct llama_config *c = &rt->m->cfg;
    Hearth__Envelope *env = ctl_env_assign();
    if (!env) return -1;
    Hearth__Assign *a = env->assign;
    int rc = 0;
    rc |= ctl_strdup(&a->model_path, rt->o.model_path);
    rc |= ctl_strdup(&a->role, w->role);
    rc |= ctl_strdup(&a->backend, w == &rt->w[0] ? rt->backend : "host");
    rc |= ctl_strdup(&a->ring_region, rt->rings.name);
    rc |= ctl_strdup(&a->logits_region, rt->logits.name);
    char *cpuset = cpuset_string(w->place);
    rc |= cpuset ? ctl_strdup(&a->cpuset, cpuset) : -1;
    free(cpuset);
    a->n_threads = w->place ? (uint32_t)w->place->n_threads : 1;
    a->hot_fraction = rt->o.hot_fraction;
    if (rt->o.sidecar_path) {
        char abs_path[PATH_MAX];
        rc |= ctl_strdup(&a->sidecar_path, realpath(rt->o.sidecar_path, abs_path) ? abs_path : rt->o.sidecar_path);
    }
    a->n_ctx = (uint32_t)rt->o.n_ctx;
    a->max_batch = (uint32_t)rt->o.max_batch;
    a->n_seq = (uint32_t)rt->o.n_seq;
    if (kv_config_active(&rt->o.kv, rt->o.n_ctx)) {
        a->kv_budget_tokens = (uint32_t)rt->o.kv.budget;
        a->kv_sinks = (uint32_t)rt->o.kv.n_sinks;
        a->kv_recent = (uint32_t)rt->o.kv.n_recent;
        a->kv_type = (uint32_t)rt->o.kv.type;
        a->kv_window = rt->o.kv.window != 0;
        a->kv_score_mean = rt->o.kv.score_mean != 0;
        a->kv_decay = rt->o.kv.decay;
        a->kv_cold = (uint32_t)rt->o.kv.cold;
        a->kv_recall = (uint32_t)rt->o.kv.recall;
        a->kv_recall_cands = (uint32_t)rt->o.kv.cands;
        a->kv_cold_max = (uint64_t)rt->o.kv.cold_max;
    }
    rc |= ctl_shards_new(a, (size_t)c->n_layers);
    for (int l = 0; rc == 0 && l < c->n_layers; l++) {
        a->shards[l]->layer = (uint32_t)l;
        a->shards[l]->first_neuron = (uint32_t)w->n0[l];
        a->shards[l]->end_neuron = (uint32_t)w->n1[l];
    }
    if (w == &rt->w[0]) { /* the GPU worker produces every in.* and consumes every out.* */
        rc |= ctl_rings_new(a, (size_t)(2 * n_cpu(rt)));
        for (int k = 0; rc == 0 && k < n_cpu(rt); k++) {
            char name[32];
            snprintf(name, sizeof name, WIRE_RING_IN, k);
            rc |= ring_ref(a->rings[2 * k], rt, 2 * k, name, 1);
            snprintf(name, sizeof name, WIRE_RING_OUT, k);
            rc |= ring_ref(a->rings[2 * k + 1], rt, 2 * k + 1, name, 0);
        }
    } else {
        int k = (int)(w - rt->w) - 1;
        char name[32];
        rc |= ctl_rings_new(a, 2);
        snprintf(name, sizeof name, WIRE_RING_IN, k);
        if (rc == 0) rc |= ring_ref(a->rings[0], rt, 2 * k, name, 0);
        snprintf(name, sizeof name, WIRE_RING_OUT, k);
        if (rc == 0) rc |= ring_ref(a->rings[1], rt, 2 * k + 1, name, 1);
    }
    if (rc == 0) rc = ctl_server_send(&rt->ctl, &w->peer, env);
    ctl_env_free(env);
    return rc;
}

static struct rworker *find_role(struct runtime *rt, const char *role) {
    for (int i = 0; i < rt->n_workers; i++)
        if (!strcmp(rt->w[i].role, role)) return &rt->w[i];
    return NULL;
}

/* 1 when the worker's process is gone (reaped if it was our child). */
static int worker_dead(struct runtime *rt, struct rworker *w) {
    if (w->pid <= 0) return 1;
    if (w->child) {
        int status;
        pid_t r = waitpid(w->pid, &status, WNOHANG);
        if (r == 0) return 0;
        if (r == w->pid) {
            if (WIFSIGNALED(status))
                log_warn("%s (pid %d) was killed by signal %d", w->role, (int)w->pid, WTERMSIG(status));
            else if (rt->stopping && WEXITSTATUS(status) == 0)
                log_debug("%s (pid %d) exited", w->role, (int)w->pid);
            else
                log_warn("%s (pid %d) exited with status %d", w->role, (int)w->pid, WEXITSTATUS(status));
        }
        w->pid = 0;
        return 1;
    }
    if (kill(w->pid, 0) == 0 || errno != ESRCH) return 0;
    log_warn("%s (pid %d, started by hand) is gone", w->role, (int)w->pid);
    w->pid = 0;
    return 1;
}

/* Handles one control message that is not the StepDone being waited for:
 * Hello (a worker starting: it gets its Assign), Ready, Heartbeat. */
static void handle_msg(struct runtime *rt, const struct ctl_peer *peer, Hearth__Envelope *env) {
    if (env->body_case == HEARTH__ENVELOPE__BODY_HELLO) {
        struct rworker *w = find_role(rt, env->hello->role);
        if (!w) {
            log_warn("Hello from unknown role '%s' (pid %d): ignored", env->hello->role, env->hello->pid);
            return;
        }
        if (w->have_peer && w->pid > 0 && w->pid != env->hello->pid && !worker_dead(rt, w)) {
            log_warn("Hello from a second %s (pid %d) while pid %d lives: ignored", w->role, env->hello->pid,
                     (int)w->pid);
            return;
        }
        if (w->pid != env->hello->pid) { /* started by hand */
            w->pid = env->hello->pid;
            w->child = 0;
            write_pid_file(rt, w);
            char marker[IPC_PATH_MAX + 32];
            pid_file(rt, w, "manual", marker, sizeof marker);
            unlink(marker);
            log_info("%s started by hand (pid %d) joined", w->role, (int)w->pid);
        }
        w->peer = *peer;
        w->have_peer = 1;
        w->ready = 0;
        if (send_assign(rt, w) != 0) log_error("cannot send the Assign to %s", w->role);
    } else if (env->body_case == HEARTH__ENVELOPE__BODY_READY) {
        struct rworker *w = find_role(rt, env->ready->role);
        if (w && w->have_peer && peer->len == w->peer.len && !memcmp(peer->id, w->peer.id, peer->len)) {
            w->ready = 1;
            log_info("%s ready", w->role);
        }
    }
}

/* Brings a dead worker back: spawns it, or, when a developer took it over
 * (`hearth workers stop`), waits for them to start it. */
static int revive(struct runtime *rt, struct rworker *w, char *err, size_t errlen) {
    char marker[IPC_PATH_MAX + 32];
    pid_file(rt, w, "manual", marker, sizeof marker);
    w->have_peer = w->ready = 0;
    if (access(marker, F_OK) == 0) {
        log_warn("%s was stopped by hand: waiting for it to be started (%s/hearth-%s-worker --session %s --role %s)",
                 w->role, rt->exe_dir, w->role[0] == 'g' ? "gpu" : "cpu", rt->sess.id, w->role);
        w->pid = 0;
        w->child = 0;
        return 0;
    }
    return spawn_worker(rt, w, err, errlen);
}

/* Waits until every worker is ready, reviving any that dies. */
static int wait_ready(struct runtime *rt, int timeout_ms, char *err, size_t errlen) {
    uint64_t t0 = idle_now_ns();
    for (;;) {
        int all = 1;
        for (int i = 0; i < rt->n_workers; i++) all &= rt->w[i].ready;
        if (all) return 0;
        if (g_interrupted) {
            snprintf(err, errlen, "interrupted");
            return -1;
        }
        int manual = 0;
        for (int i = 0; i < rt->n_workers; i++) {
            struct rworker *w = &rt->w[i];
            if (w->pid == 0) {
                manual = 1;
                continue;
            }
            if (!w->ready && worker_dead(rt, w)) {
                snprintf(err, errlen, "%s died before it was ready (its messages are above)", w->role);
                return -1;
            }
        }
        if (!manual && idle_now_ns() - t0 > (uint64_t)timeout_ms * 1000000ull) {
            snprintf(err, errlen, "workers not ready within %d s", timeout_ms / 1000);
            return -1;
        }
        struct ctl_peer peer;
        Hearth__Envelope *env = NULL;
        if (ctl_server_recv(&rt->ctl, &peer, &env, 50) == 0) {
            handle_msg(rt, &peer, env);
            ctl_env_free(env);
        }
    }
}

/* ------------------------------------------------------------ steps */

enum { STEP_OK = 0, STEP_ERR = -1, STEP_GPU_LOST = -2 };

/* One Step on the GPU worker; CPU workers that die meanwhile are revived
 * (the GPU worker waits for their output). */
static int step_once(struct runtime *rt, const int32_t *tokens, int n, const struct seq_span *spans, int n_spans,
                     char *err, size_t errlen) {
    struct rworker *g = &rt->w[0];
    const uint64_t id = ++rt->next_step;
    Hearth__Envelope *env = ctl_env_step(id, (uint32_t)n, (uint32_t)spans[0].pos0, 0);
    if (!env || ctl_env_step_tokens(env, tokens, (size_t)n) != 0 ||
        ctl_step_spans_new(env->step, (size_t)n_spans) != 0) {
        ctl_env_free(env);
        snprintf(err, errlen, "out of memory");
        return STEP_ERR;
    }
    for (int i = 0; i < n_spans; i++) {
        Hearth__Span *p = env->step->spans[i];
        p->seq = (uint32_t)spans[i].seq;
        p->pos0 = (uint32_t)spans[i].pos0;
        p->n_tokens = (uint32_t)spans[i].n;
        p->logits = (uint32_t)spans[i].logits;
    }
    int rc = ctl_server_send(&rt->ctl, &g->peer, env);
    ctl_env_free(env);
    if (rc != 0) return worker_dead(rt, g) ? STEP_GPU_LOST : (snprintf(err, errlen, "cannot send a Step"), STEP_ERR);
    for (;;) {
        if (g_interrupted) {
            snprintf(err, errlen, "interrupted");
            return STEP_ERR;
        }
        struct ctl_peer peer;
        Hearth__Envelope *msg = NULL;
        rc = ctl_server_recv(&rt->ctl, &peer, &msg, 50);
        if (rc == 0) {
            int done = msg->body_case == HEARTH__ENVELOPE__BODY_STEP_DONE && msg->step_done->step_id == id;
            if (!done) handle_msg(rt, &peer, msg);
            if (done) {
                rt->ffn_weight_bytes += msg->step_done->ffn_weight_bytes;
                rt->ffn_dense_bytes += msg->step_done->ffn_dense_bytes;
                rt->attn_ns += msg->step_done->attn_ns;
                rt->kv_cold_bytes = msg->step_done->kv_cold_bytes;
            }
            ctl_env_free(msg);
            if (done) return STEP_OK;
            continue;
        }
        if (rc != IPC_ETIMEDOUT) {
            snprintf(err, errlen, "control channel failed");
            return STEP_ERR;
        }
        if (worker_dead(rt, g)) return STEP_GPU_LOST;
        for (int i = 1; i < rt->n_workers; i++) {
            struct rworker *w = &rt->w[i];
            if (w->pid != 0 && worker_dead(rt, w) && revive(rt, w, err, errlen) != 0) return STEP_ERR;
        }
    }
}

static int grow(void **p, int *cap, int need, size_t size) {
    if (need <= *cap) return 0;
    int c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * size);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* Records a step that completed: each span's sequence now holds its tokens
 * at pos0.. (a span at 0 starts the sequence's log over). */
static int log_step(struct runtime *rt, const int32_t *tokens, const struct seq_span *spans, int n_spans, char *err,
                    size_t errlen) {
    for (int i = 0, r = 0; i < n_spans; r += spans[i++].n) {
        struct seq_log *lg = &rt->logs[spans[i].seq];
        if (spans[i].pos0 == 0) lg->n_ev = lg->n_tok = 0;
        if (!kv_config_active(&rt->o.kv, rt->o.n_ctx)) /* dense: keep the positions before pos0 only */
            while (lg->n_ev > 0 && lg->ev[lg->n_ev - 1].pos0 + lg->ev[lg->n_ev - 1].n > spans[i].pos0) {
                struct seq_span *last = &lg->ev[lg->n_ev - 1];
                const int keep = spans[i].pos0 > last->pos0 ? spans[i].pos0 - last->pos0 : 0;
                lg->n_tok -= last->n - keep;
                if (keep > 0) last->n = keep;
                else lg->n_ev--;
                if (keep > 0) break;
            }
        if (grow((void **)&lg->ev, &lg->cap_ev, lg->n_ev + 1, sizeof *lg->ev) != 0 ||
            grow((void **)&lg->tok, &lg->cap_tok, lg->n_tok + spans[i].n, sizeof *lg->tok) != 0) {
            snprintf(err, errlen, "out of memory for the sequences' step log");
            return -1;
        }
        lg->ev[lg->n_ev] = spans[i];
        lg->ev[lg->n_ev++].logits = SPAN_LOGITS_NONE;
        memcpy(lg->tok + lg->n_tok, tokens + r, (size_t)spans[i].n * sizeof *tokens);
        lg->n_tok += spans[i].n;
    }
    return 0;
}

/* After the GPU worker was restarted: its KV caches are empty; replay every
 * sequence's logged steps, in order, batching the sequences' next steps
 * together as far as they fit (each keeps its own spans). */
static int rebuild_kv(struct runtime *rt, char *err, size_t errlen) {
    const int n_seq = rt->o.n_seq;
    int *next = calloc((size_t)n_seq, sizeof *next), *tok_at = calloc((size_t)n_seq, sizeof *tok_at);
    int32_t *buf = malloc((size_t)rt->o.max_batch * sizeof *buf);
    struct seq_span *spans = malloc((size_t)n_seq * sizeof *spans);
    int rc = STEP_OK, replayed = 0, seqs = 0;
    if (!next || !tok_at || !buf || !spans) {
        snprintf(err, errlen, "out of memory");
        rc = STEP_ERR;
    }
    for (int q = 0; q < n_seq && rc == STEP_OK; q++) seqs += rt->logs[q].n_ev > 0;
    while (rc == STEP_OK) {
        int n_spans = 0, rows = 0;
        for (int q = 0; q < n_seq; q++) {
            const struct seq_log *lg = &rt->logs[q];
            if (next[q] == lg->n_ev || lg->ev[next[q]].n > rt->o.max_batch - rows) continue;
            const struct seq_span *e = &lg->ev[next[q]++];
            memcpy(buf + rows, lg->tok + tok_at[q], (size_t)e->n * sizeof *buf);
            tok_at[q] += e->n;
            rows += e->n;
            spans[n_spans++] = *e;
        }
        if (n_spans == 0) break;
        rc = step_once(rt, buf, rows, spans, n_spans, err, errlen);
        replayed += rows;
    }
    free(next);
    free(tok_at);
    free(buf);
    free(spans);
    if (rc == STEP_OK && replayed > 0)
        log_warn("rebuilt the KV caches of %d sequences on the new GPU worker (%d tokens replayed)", seqs, replayed);
    return rc;
}

int runtime_step(struct runtime *rt, const int32_t *tokens, const struct seq_span *spans, int n_spans, float *logits,
                 char *err, size_t errlen) {
    const int n_vocab = rt->m->cfg.n_vocab;
    int n = 0;
    if (n_spans < 1) {
        snprintf(err, errlen, "a step without sequences");
        return -1;
    }
    for (int i = 0; i < n_spans; i++) {
        const struct seq_span *p = &spans[i];
        if (p->seq < 0 || p->seq >= rt->o.n_seq || p->n < 1 || p->pos0 < 0 || p->n > rt->o.n_ctx - p->pos0) {
            snprintf(err, errlen,
                     "context full: sequence %d's positions %d..%d do not fit a context of %d tokens (raise -c)",
                     p->seq, p->pos0, p->pos0 + p->n - 1, rt->o.n_ctx);
            return -1;
        }
        n += p->n;
    }
    if (n > rt->o.max_batch) {
        snprintf(err, errlen, "a step of %d tokens exceeds the batch of %d", n, rt->o.max_batch);
        return -1;
    }
    for (int t = 0; t < n; t++) {
        if (tokens[t] < 0 || tokens[t] >= n_vocab) {
            snprintf(err, errlen, "token id %d at index %d is outside the vocabulary [0, %d)", tokens[t], t, n_vocab);
            return -1;
        }
    }
    for (;;) {
        int rc = step_once(rt, tokens, n, spans, n_spans, err, errlen);
        if (rc == STEP_GPU_LOST) {
            log_warn("the GPU worker is gone: restarting it and replaying the step");
            if (revive(rt, &rt->w[0], err, errlen) != 0 || wait_ready(rt, RT_START_TIMEOUT_MS, err, errlen) != 0)
                return -1;
            rc = rebuild_kv(rt, err, errlen);
            if (rc == STEP_GPU_LOST) continue; /* lost again while rebuilding: start over */
            if (rc != STEP_OK) return -1;
            continue; /* replay this step */
        }
        if (rc != STEP_OK) return -1;
        break;
    }
    if (log_step(rt, tokens, spans, n_spans, err, errlen) != 0) return -1;
    const int rows = spans_logit_rows(spans, n_spans);
    if (logits && rows) memcpy(logits, rt->logits.base, (size_t)rows * n_vocab * sizeof(float));
    return 0;
}

/* ------------------------------------------------------------ start, stop */

static int find_exe_dir(char *out, size_t cap, char *err, size_t errlen) {
    const char *env = getenv("HEARTH_WORKER_DIR");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return 0;
    }
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        snprintf(err, errlen, "cannot find the worker programs: readlink /proc/self/exe: %s (set HEARTH_WORKER_DIR)",
                 strerror(errno));
        return -1;
    }
    self[n] = '\0';
    snprintf(out, cap, "%s", dirname(self));
    return 0;
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

struct runtime *runtime_start(const struct runtime_opts *o, const struct llama_model *m, char *err, size_t errlen) {
    struct runtime *rt = calloc(1, sizeof *rt);
    if (!rt) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rt->o = *o;
    if (rt->o.n_seq < 1) rt->o.n_seq = 1;
    rt->m = m;
    rt->logs = calloc((size_t)rt->o.n_seq, sizeof *rt->logs);
    if (!rt->logs) {
        snprintf(err, errlen, "out of memory");
        free(rt);
        return NULL;
    }
    rt->sess.lock_fd = -1;
    rt->backend = o->gpu_backend ? o->gpu_backend : "host";
#ifdef HEARTH_HAVE_CUDA
    const int backend_ok = strcmp(rt->backend, "host") == 0 || strcmp(rt->backend, "cuda") == 0;
#else
    const int backend_ok = strcmp(rt->backend, "host") == 0;
#endif
    if (!backend_ok) {
        if (strcmp(rt->backend, "cuda") == 0)
            snprintf(err, errlen, "--gpu-backend cuda: this build has no CUDA (nvcc not found at build time)");
        else
            snprintf(err, errlen, "--gpu-backend %s is not built in (available: host%s)", rt->backend,
#ifdef HEARTH_HAVE_CUDA
                     ", cuda"
#else
                     ""
#endif
            );
        free(rt->logs);
        free(rt);
        return NULL;
    }
    install_signals();
    /* sessions whose coordinator died (kill -9) leave files behind: clear them */
    ipc_clean_stale(NULL, 0, NULL, NULL, NULL, NULL, 0);

    struct placement_request req = {o->n_cpu_workers, 1, 0, o->pin, 0};
    if (find_exe_dir(rt->exe_dir, sizeof rt->exe_dir, err, errlen) != 0) goto fail;
    if (!(rt->topo = topo_load(NULL, err, errlen)) || topo_plan(rt->topo, &req, &rt->place, err, errlen) != 0)
        goto fail;
    if (rt->place.note[0]) log_warn("placement: %s", rt->place.note);
    rt->n_workers = 1 + rt->place.n_cpu_workers;
    rt->w = calloc((size_t)rt->n_workers, sizeof *rt->w);
    if (!rt->w) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    snprintf(rt->w[0].role, sizeof rt->w[0].role, "gpu0");
    rt->w[0].place = placement_find(&rt->place, "gpu");
    for (int k = 0; k < n_cpu(rt); k++) {
        snprintf(rt->w[1 + k].role, sizeof rt->w[1 + k].role, "cpu%d", k);
        rt->w[1 + k].place = placement_find(&rt->place, rt->w[1 + k].role);
    }
    if (rt->o.hot_fraction < 0.0f) rt->o.hot_fraction = auto_hot_fraction(rt);
    if (plan_neurons(rt, err, errlen) != 0) goto fail;
    if (ipc_session_create(&rt->sess, NULL, err, errlen) != 0) goto fail;
    char ep[IPC_PATH_MAX + 16];
    rt->zctx = zmq_ctx_new();
    if (!rt->zctx || ipc_session_endpoint(&rt->sess, "ctl", ep, sizeof ep) != 0 ||
        ctl_server_open(&rt->ctl, rt->zctx, ep, rt->sess.token, err, errlen) != 0)
        goto fail;
    if (make_rings(rt, err, errlen) != 0) goto fail;
    for (int i = 0; i < rt->n_workers; i++)
        if (spawn_worker(rt, &rt->w[i], err, errlen) != 0) goto fail;
    if (wait_ready(rt, RT_START_TIMEOUT_MS, err, errlen) != 0) goto fail;
    log_info("session %s: gpu0 (%s backend) + %d CPU workers ready", rt->sess.id, rt->backend, n_cpu(rt));
    return rt;
fail:
    runtime_stop(rt);
    return NULL;
}

void runtime_stop(struct runtime *rt) {
    if (!rt) return;
    rt->stopping = 1;
    for (int i = 0; i < rt->n_workers; i++) {
        struct rworker *w = &rt->w[i];
        if (!w->have_peer) continue;
        Hearth__Envelope *env = ctl_env_shutdown("the generation is over");
        if (env) ctl_server_send(&rt->ctl, &w->peer, env);
        ctl_env_free(env);
    }
    /* give them a second to leave cleanly, then make sure */
    for (int i = 0; i < rt->n_workers; i++) {
        struct rworker *w = &rt->w[i];
        if (w->pid <= 0) continue;
        for (int t = 0; t < 100 && !worker_dead(rt, w); t++) usleep(10000);
        if (w->pid > 0) {
            kill(w->pid, SIGKILL);
            if (w->child) waitpid(w->pid, NULL, 0);
        }
    }
    for (int i = 0; i < rt->n_workers; i++) {
        free(rt->w[i].n0);
        free(rt->w[i].n1);
    }
    free(rt->w);
    if (rt->ctl.sock) ctl_server_close(&rt->ctl);
    if (rt->zctx) zmq_ctx_term(rt->zctx);
    shm_region_close(&rt->rings);
    shm_region_close(&rt->logits);
    if (rt->sess.id[0]) ipc_session_destroy(&rt->sess);
    placement_free(&rt->place);
    if (rt->topo) topo_free(rt->topo);
    for (int q = 0; q < rt->o.n_seq; q++) {
        free(rt->logs[q].ev);
        free(rt->logs[q].tok);
    }
    free(rt->logs);
    free(rt);
}
