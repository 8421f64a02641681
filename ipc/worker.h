/* worker: the worker side of a session, shared by hearth-gpu-worker and
 * hearth-cpu-worker: command line, attaching to the session, Hello and
 * Assign on the control channel, the rings the Assign names, heartbeats,
 * and noticing that the coordinator is gone.
 *
 * A worker is normally spawned by the coordinator, but a developer may start
 * one by hand against a running session (README, "Restarting one worker"):
 *   hearth-cpu-worker --session ID --role cpu1 [--root DIR] [-v]
 * so nothing here assumes the coordinator is the parent process. */
#ifndef HEARTH_WORKER_H
#define HEARTH_WORKER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ctl.h"
#include "doorbell.h"
#include "ring.h"
#include "session.h"
#include "shm.h"

struct worker {
    struct ipc_session sess;
    struct ctl_client ctl;
    void *zctx;
    char role[16];
    pid_t coord_pid;          /* from the session's pid file */
    Hearth__Assign *assign;   /* points into assign_env */
    Hearth__Envelope *assign_env;
    struct shm_region rings;  /* the "rings" region, mapped */
    uint64_t hb_seq, hb_last_ns;
    int shutdown;             /* a Shutdown arrived */
};

/* Parses --session/--role/--root/-v, attaches to the session, connects the
 * control channel, says Hello (capabilities caps) and waits for the Assign.
 * role_prefix ("gpu", "cpu") is what --role must start with. */
int worker_start(struct worker *w, int argc, char **argv, const char *role_prefix, const char *const *caps,
                 size_t n_caps, char *err, size_t errlen);

/* Maps the rings region of the Assign and attaches the ring `name`
 * (checking the Assign says this worker produces into it when produce is 1,
 * consumes otherwise). */
int worker_ring(struct worker *w, const char *name, int produce, struct ring *r, char *err, size_t errlen);

/* Doorbell endpoint of a ring: "ipc://<session dir>/<name>.bell". */
int worker_bell_endpoint(const struct worker *w, const char *name, char *out, size_t cap);

/* Tells the coordinator this worker is assigned and ready for steps. */
int worker_ready(struct worker *w);

/* Housekeeping between waits: a heartbeat once a second, control messages
 * (Shutdown), the coordinator's liveness. Returns 1 when the worker should
 * exit (shutdown asked or coordinator gone), 0 otherwise. A Step that
 * arrives is handed back in *step (caller frees with ctl_env_free) when step
 * is non-NULL; otherwise Steps are not expected and dropped with a warning. */
int worker_poll(struct worker *w, int timeout_ms, Hearth__Envelope **step);

/* Pins the pool's threads to the Assign's cpuset: one PU per thread when
 * there are enough, else each thread to the whole set. Never fatal: a
 * container that forbids binding gets one warning. */
struct tpool;
void worker_pin_pool(struct worker *w, struct tpool *tp);

void worker_stop(struct worker *w);

/* Parses "0-3,8" into PU numbers (at most max); returns how many or -1. */
int worker_parse_cpuset(const char *s, int *pus, int max);

#endif
