/* session: the per-user runtime folder, one subfolder per running session,
 * and the clean-up of sessions whose coordinator died.
 *
 * Layout on disk (root = $XDG_RUNTIME_DIR/hearth if set, else
 * /tmp/hearth-<uid>; mode 0700, must belong to us):
 *
 *   <root>/<session>/        mode 0700; session = 16 lowercase hex digits
 *       lock                 the coordinator holds flock(LOCK_EX) on it while
 *                            alive; the kernel drops the lock when it dies, so
 *                            "lock not held" is the definition of a dead session
 *       token                32 random bytes (getrandom), mode 0600: the secret
 *                            every control message carries (ipc/ctl.h)
 *       pid                  the coordinator's pid, decimal (informational)
 *       ctl, <ring>.bell     ZeroMQ ipc:// sockets (ipc/ctl.h, ipc/doorbell.h)
 *
 * and in /dev/shm the session's regions `/hearth-<uid>-<session>-<what>`
 * (ipc/shm.h). The lock fd is opened O_CLOEXEC: exec'd workers never hold
 * it, but a child forked without exec keeps the session "alive" until it
 * exits. */
#ifndef HEARTH_SESSION_H
#define HEARTH_SESSION_H

#include <stddef.h>
#include <stdint.h>

#define IPC_SESSION_ID_LEN 16 /* hex digits */
#define IPC_TOKEN_BYTES 32
#define IPC_PATH_MAX 256      /* sockets need sun_path (108 bytes) anyway */

struct ipc_session {
    char id[IPC_SESSION_ID_LEN + 1];
    char root[IPC_PATH_MAX]; /* the per-user runtime folder */
    char dir[IPC_PATH_MAX];  /* <root>/<id> */
    uint8_t token[IPC_TOKEN_BYTES];
    int lock_fd;             /* coordinator: holds the flock; worker: -1 */
    int owner;               /* 1: created here; destroy removes everything */
};

/* A fresh random session id: 16 hex digits + NUL. */
int ipc_session_new_id(char id[IPC_SESSION_ID_LEN + 1], char *err, size_t errlen);

/* Writes the default per-user root ($XDG_RUNTIME_DIR/hearth or
 * /tmp/hearth-<uid>) into out, without creating it. */
int ipc_runtime_dir(char *out, size_t outlen, char *err, size_t errlen);

/* Coordinator: new id, creates <root> (if needed) and <root>/<id>, takes the
 * lock, writes token and pid. root NULL = ipc_runtime_dir. IPC_EPERM when
 * root belongs to another user or is open to group/others. */
int ipc_session_create(struct ipc_session *s, const char *root, char *err, size_t errlen);

/* Worker: finds <root>/<session_id>, checks owner and modes, reads the
 * token. root NULL = ipc_runtime_dir. IPC_ENOENT when there is no such
 * session. */
int ipc_session_attach(struct ipc_session *s, const char *root, const char *session_id, char *err,
                       size_t errlen);

/* Owner: removes every shm region of the session, every file in its folder
 * and the folder, then drops the lock. Worker: forgets the token. */
void ipc_session_destroy(struct ipc_session *s);

/* "ipc://<dir>/<what>" for a ZeroMQ socket of this session. */
int ipc_session_endpoint(const struct ipc_session *s, const char *what, char *out, size_t outlen);

/* "/hearth-<uid>-<id>-<what>" for a shm region of this session. */
int ipc_session_shm_name(const struct ipc_session *s, const char *what, char *out, size_t outlen);

/* The decimal pid in the file <dir>/<name> of a session folder ("pid" for
 * the coordinator, "<role>.pid" for a worker); 0 when absent or unreadable. */
long ipc_session_read_pid(const char *dir, const char *name);

struct ipc_session_info {
    char id[IPC_SESSION_ID_LEN + 1];
    int alive;  /* 1: its lock is held by a live process */
    long pid;   /* from the pid file; 0 if unreadable */
};

/* Sessions under root (NULL = default), at most max of them into out;
 * *n gets how many exist (may exceed max). A missing root is 0 sessions. */
int ipc_session_list(const char *root, struct ipc_session_info *out, int max, int *n, char *err,
                     size_t errlen);

/* ipc_clean_stale flags. */
enum {
    /* Also remove /dev/shm/hearth-<uid>-<id>-* regions whose session has no
     * folder under root at all. Only right for the root every coordinator of
     * this user uses (what `hearth clean` passes): regions of sessions living
     * under another root would look orphaned. */
    IPC_CLEAN_ORPHAN_SHM = 1,
};

/* Called once per removed thing: kind is "session", "region" or "file",
 * what is its id, shm name or path. */
typedef void (*ipc_clean_report_fn)(void *ctx, const char *kind, const char *what);

/* Removes the folders and shm regions of dead sessions under root (NULL =
 * default); live sessions are untouched. A folder without a lock file is
 * only taken once it is older than 10 s (it may be a session being born).
 * *n_removed (may be NULL) counts sessions plus orphan regions removed. */
int ipc_clean_stale(const char *root, int flags, ipc_clean_report_fn report, void *ctx,
                    int *n_removed, char *err, size_t errlen);

#endif
