/* worker: see worker.h. */
#include "worker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "idle.h"
#include "ipc.h"
#include "log.h"
#include "topo.h"
#include "tpool.h"

static void usage(const char *prog, const char *role_prefix) {
    fprintf(stderr,
            "usage: %s --session ID --role %sN [--root DIR] [-v]\n"
            "Started by `hearth run` for each session; start one by hand only to replace a worker stopped with\n"
            "`hearth workers stop ROLE` (see README, \"Restarting one worker\").\n",
            prog, role_prefix);
}

int worker_start(struct worker *w, int argc, char **argv, const char *role_prefix, const char *const *caps,
                 size_t n_caps, char *err, size_t errlen) {
    memset(w, 0, sizeof *w);
    w->sess.lock_fd = -1;
    const char *session = NULL, *role = NULL, *root = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--session") && i + 1 < argc) session = argv[++i];
        else if (!strcmp(argv[i], "--role") && i + 1 < argc) role = argv[++i];
        else if (!strcmp(argv[i], "--root") && i + 1 < argc) root = argv[++i];
        else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
            log_set_level(log_get_level() >= LOG_INFO ? LOG_DEBUG : LOG_INFO);
        else {
            usage(argv[0], role_prefix);
            snprintf(err, errlen, "unknown argument '%s'", argv[i]);
            return -1;
        }
    }
    if (!session || !role || strncmp(role, role_prefix, strlen(role_prefix)) != 0 || strlen(role) >= sizeof w->role) {
        usage(argv[0], role_prefix);
        snprintf(err, errlen, "need --session ID and --role %sN", role_prefix);
        return -1;
    }
    snprintf(w->role, sizeof w->role, "%s", role);
    log_set_role(w->role);
    if (ipc_session_attach(&w->sess, root, session, err, errlen) != 0) return -1;
    w->coord_pid = (pid_t)ipc_session_read_pid(w->sess.dir, "pid");
    w->zctx = zmq_ctx_new();
    char ep[IPC_PATH_MAX + 16];
    if (!w->zctx || ipc_session_endpoint(&w->sess, "ctl", ep, sizeof ep) != 0 ||
        ctl_client_open(&w->ctl, w->zctx, ep, w->sess.token, err, errlen) != 0) {
        if (!w->zctx) snprintf(err, errlen, "zmq_ctx_new failed");
        return -1;
    }
    Hearth__Envelope *hello = ctl_env_hello(w->role, (int32_t)getpid(), caps, n_caps, "");
    if (!hello || ctl_client_send(&w->ctl, hello) != 0) {
        ctl_env_free(hello);
        snprintf(err, errlen, "cannot send Hello to the coordinator");
        return -1;
    }
    ctl_env_free(hello);
    /* The Assign follows once the coordinator has read our Hello. */
    for (int waited = 0; waited < 60000; waited += 200) {
        Hearth__Envelope *env = NULL;
        int rc = ctl_client_recv(&w->ctl, &env, 200);
        if (rc == IPC_ETIMEDOUT) {
            if (w->coord_pid > 0 && kill(w->coord_pid, 0) != 0 && errno == ESRCH) {
                snprintf(err, errlen, "the coordinator (pid %d) is gone", (int)w->coord_pid);
                return -1;
            }
            continue;
        }
        if (rc != 0) {
            snprintf(err, errlen, "control channel failed while waiting for the Assign");
            return -1;
        }
        if (env->body_case == HEARTH__ENVELOPE__BODY_ASSIGN) {
            w->assign_env = env;
            w->assign = env->assign;
            log_info("assigned: backend %s, %u threads, cpuset '%s', %zu shards", w->assign->backend,
                     w->assign->n_threads, w->assign->cpuset, w->assign->n_shards);
            return 0;
        }
        if (env->body_case == HEARTH__ENVELOPE__BODY_SHUTDOWN) {
            ctl_env_free(env);
            snprintf(err, errlen, "shut down before being assigned");
            return -1;
        }
        ctl_env_free(env);
    }
    snprintf(err, errlen, "no Assign from the coordinator within 60 s");
    return -1;
}

int worker_ring(struct worker *w, const char *name, int produce, struct ring *r, char *err, size_t errlen) {
    const Hearth__Assign *a = w->assign;
    if (!w->rings.base && shm_region_open(&w->rings, a->ring_region, 0, err, errlen) != 0) return -1;
    for (size_t i = 0; i < a->n_rings; i++) {
        const Hearth__RingRef *ref = a->rings[i];
        if (strcmp(ref->name, name) != 0) continue;
        if ((int)ref->produce != produce) {
            snprintf(err, errlen, "ring %s: the Assign says this worker %s it", name,
                     ref->produce ? "produces into" : "consumes from");
            return -1;
        }
        size_t bytes = ring_bytes(ref->slot_size, ref->n_slots);
        if (ref->offset > w->rings.size || bytes > w->rings.size - ref->offset) {
            snprintf(err, errlen, "ring %s [%llu, +%zu) lies outside the region %s of %zu bytes", name,
                     (unsigned long long)ref->offset, bytes, a->ring_region, w->rings.size);
            return -1;
        }
        return ring_attach(r, (char *)w->rings.base + ref->offset, bytes, err, errlen);
    }
    snprintf(err, errlen, "the Assign names no ring %s", name);
    return -1;
}

int worker_bell_endpoint(const struct worker *w, const char *name, char *out, size_t cap) {
    char what[64];
    snprintf(what, sizeof what, "%s.bell", name);
    return ipc_session_endpoint(&w->sess, what, out, cap);
}

int worker_ready(struct worker *w) {
    Hearth__Envelope *env = ctl_env_ready(w->role);
    int rc = env ? ctl_client_send(&w->ctl, env) : IPC_ERR;
    ctl_env_free(env);
    return rc;
}

int worker_poll(struct worker *w, int timeout_ms, Hearth__Envelope **step) {
    uint64_t now = idle_now_ns();
    if (now - w->hb_last_ns > 1000000000ull) {
        Hearth__Envelope *hb = ctl_env_heartbeat(++w->hb_seq, now);
        if (hb) ctl_client_send(&w->ctl, hb);
        ctl_env_free(hb);
        w->hb_last_ns = now;
        if (w->coord_pid > 0 && kill(w->coord_pid, 0) != 0 && errno == ESRCH) {
            log_warn("the coordinator (pid %d) is gone: exiting", (int)w->coord_pid);
            return 1;
        }
    }
    Hearth__Envelope *env = NULL;
    if (ctl_client_recv(&w->ctl, &env, timeout_ms) != 0) return 0;
    switch (env->body_case) {
    case HEARTH__ENVELOPE__BODY_SHUTDOWN:
        log_info("shutdown: %s", env->shutdown->reason);
        w->shutdown = 1;
        ctl_env_free(env);
        return 1;
    case HEARTH__ENVELOPE__BODY_STEP:
        if (step) {
            *step = env;
            return 0;
        }
        log_warn("unexpected Step for a %s worker: dropped", w->role);
        break;
    default:
        log_debug("control message %d ignored", (int)env->body_case);
        break;
    }
    ctl_env_free(env);
    return 0;
}

struct pin_job {
    struct topo *topo;
    int pus[1024];
    int n_pus;
    int failed;
};

static void pin_thread(void *arg, int ith, int nth) {
    struct pin_job *j = arg;
    char err[256];
    int rc = j->n_pus >= nth ? topo_bind_thread(j->topo, &j->pus[ith], 1, err, sizeof err)
                             : topo_bind_thread(j->topo, j->pus, j->n_pus, err, sizeof err);
    if (rc != 0 && ith == 0) {
        j->failed = 1;
        log_warn("running unpinned: %s", err);
    }
}

void worker_pin_pool(struct worker *w, struct tpool *tp) {
    struct pin_job j;
    memset(&j, 0, sizeof j);
    j.n_pus = worker_parse_cpuset(w->assign->cpuset, j.pus, (int)(sizeof j.pus / sizeof j.pus[0]));
    if (j.n_pus <= 0) return;
    char err[256];
    j.topo = topo_load(NULL, err, sizeof err);
    if (!j.topo) {
        log_warn("no topology (%s): running unpinned", err);
        return;
    }
    tpool_run(tp, pin_thread, &j);
    topo_free(j.topo);
}

void worker_stop(struct worker *w) {
    shm_region_close(&w->rings);
    ctl_env_free(w->assign_env);
    ctl_client_close(&w->ctl);
    if (w->zctx) zmq_ctx_term(w->zctx);
    ipc_session_destroy(&w->sess);
    memset(w, 0, sizeof *w);
}

int worker_parse_cpuset(const char *s, int *pus, int max) {
    int n = 0;
    while (s && *s) {
        char *end;
        long a = strtol(s, &end, 10), b;
        if (end == s || a < 0) return -1;
        b = a;
        if (*end == '-') {
            const char *t = end + 1;
            b = strtol(t, &end, 10);
            if (end == t || b < a) return -1;
        }
        for (long p = a; p <= b; p++) {
            if (n >= max) return -1;
            pus[n++] = (int)p;
        }
        if (*end == ',') end++;
        else if (*end) return -1;
        s = end;
    }
    return n;
}
