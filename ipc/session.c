/* session: see session.h.
 *
 * Why flock and not the pid file for liveness: pids are reused, and a pid
 * check cannot tell a crashed coordinator from an unrelated process that
 * got its number; the kernel releases an flock exactly when the last fd of
 * the holder closes, i.e. when the coordinator dies however it dies. */
#include "session.h"
#include "ipc.h"
#include "shm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SHM_DIR "/dev/shm"

static int fill_random(void *buf, size_t n, char *err, size_t errlen) {
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            snprintf(err, errlen, "session: getrandom: %s", strerror(errno));
            return IPC_ERR;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

int ipc_session_new_id(char id[IPC_SESSION_ID_LEN + 1], char *err, size_t errlen) {
    unsigned char b[IPC_SESSION_ID_LEN / 2];
    int rc = fill_random(b, sizeof b, err, errlen);
    if (rc) return rc;
    for (size_t i = 0; i < sizeof b; i++) snprintf(id + 2 * i, 3, "%02x", b[i]);
    id[IPC_SESSION_ID_LEN] = '\0';
    return 0;
}

static int id_ok(const char *id) {
    if (!id || strlen(id) != IPC_SESSION_ID_LEN) return 0;
    for (const char *c = id; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'))) return 0;
    return 1;
}

int ipc_runtime_dir(char *out, size_t outlen, char *err, size_t errlen) {
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(out, outlen, "%s/hearth", xdg);
    else
        n = snprintf(out, outlen, "/tmp/hearth-%u", (unsigned)geteuid());
    if (n < 0 || (size_t)n >= outlen) {
        snprintf(err, errlen, "session: runtime folder path too long (XDG_RUNTIME_DIR=%s)",
                 xdg ? xdg : "");
        return IPC_EINVAL;
    }
    return 0;
}

/* A folder of ours that nobody else can enter: a real directory (not a
 * symlink another user planted), owned by us, no group/other bits. */
static int check_private_dir(const char *path, char *err, size_t errlen) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        int e = errno;
        snprintf(err, errlen, "session: %s: %s", path, strerror(e));
        return e == ENOENT ? IPC_ENOENT : IPC_ERR;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "session: %s is not a directory", path);
        return IPC_EPERM;
    }
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "session: %s belongs to uid %u, not to us (uid %u); refusing to use it",
                 path, (unsigned)st.st_uid, (unsigned)geteuid());
        return IPC_EPERM;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen, "session: %s has mode %03o; it must be 0700 (chmod 700 it or remove it)",
                 path, (unsigned)(st.st_mode & 0777));
        return IPC_EPERM;
    }
    return 0;
}

static int resolve_root(const char *root, char *out, size_t outlen, char *err, size_t errlen) {
    if (!root) return ipc_runtime_dir(out, outlen, err, errlen);
    int n = snprintf(out, outlen, "%s", root);
    if (n < 0 || (size_t)n >= outlen) {
        snprintf(err, errlen, "session: root path too long: %s", root);
        return IPC_EINVAL;
    }
    return 0;
}

static int write_file(const char *path, const void *data, size_t n, char *err, size_t errlen) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "session: create %s: %s", path, strerror(errno));
        return IPC_ERR;
    }
    ssize_t w = write(fd, data, n);
    int e = errno;
    if (close(fd) != 0 || w != (ssize_t)n) {
        snprintf(err, errlen, "session: write %s: %s", path, w < 0 ? strerror(e) : "short write");
        return IPC_ERR;
    }
    return 0;
}

/* Unlinks every /dev/shm entry whose name starts with prefix (no '/').
 * Returns how many went. */
static int unlink_regions(const char *prefix, ipc_clean_report_fn report, void *ctx) {
    DIR *d = opendir(SHM_DIR);
    if (!d) return 0;
    size_t plen = strlen(prefix);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, plen) != 0) continue;
        char name[SHM_NAME_MAX + 2];
        if (snprintf(name, sizeof name, "/%s", de->d_name) >= (int)sizeof name) continue;
        if (shm_unlink(name) == 0) {
            n++;
            if (report) report(ctx, "region", name);
        }
    }
    closedir(d);
    return n;
}

/* Removes the session's regions, the plain files and sockets of its folder,
 * and the folder. Only entries directly inside: a session folder holds no
 * subfolders. */
static void remove_session(const char *root, const char *id, ipc_clean_report_fn report, void *ctx) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "hearth-%u-%s-", (unsigned)geteuid(), id);
    unlink_regions(prefix, report, ctx);
    char dir[IPC_PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s/%s", root, id) >= (int)sizeof dir) return;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd >= 0) {
        DIR *d = fdopendir(dfd);
        if (d) {
            struct dirent *de;
            while ((de = readdir(d)) != NULL) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
                if (unlinkat(dfd, de->d_name, 0) == 0 && report) {
                    char path[IPC_PATH_MAX + 256];
                    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
                    report(ctx, "file", path);
                }
            }
            closedir(d); /* closes dfd too */
        } else {
            close(dfd);
        }
    }
    rmdir(dir);
}

int ipc_session_create(struct ipc_session *s, const char *root, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    s->lock_fd = -1;
    int rc = resolve_root(root, s->root, sizeof s->root, err, errlen);
    if (rc) return rc;
    if (mkdir(s->root, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "session: create runtime folder %s: %s", s->root, strerror(errno));
        return IPC_ERR;
    }
    rc = check_private_dir(s->root, err, errlen);
    if (rc) return rc;

    /* A 64-bit random id collides with nothing alive in practice; retry a
     * few times anyway rather than reason about it. */
    for (int attempt = 0;; attempt++) {
        rc = ipc_session_new_id(s->id, err, errlen);
        if (rc) return rc;
        if (snprintf(s->dir, sizeof s->dir, "%s/%s", s->root, s->id) >= (int)sizeof s->dir) {
            snprintf(err, errlen, "session: path too long under %s", s->root);
            return IPC_EINVAL;
        }
        if (mkdir(s->dir, 0700) == 0) break;
        if (errno != EEXIST || attempt >= 8) {
            snprintf(err, errlen, "session: create %s: %s", s->dir, strerror(errno));
            return IPC_ERR;
        }
    }
    s->owner = 1;

    /* Take the lock first, so that the session is "alive" before anything
     * else exists in its folder. */
    char path[IPC_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/lock", s->dir);
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (s->lock_fd < 0 || flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "session: lock %s: %s", path, strerror(errno));
        ipc_session_destroy(s);
        return IPC_ERR;
    }
    rc = fill_random(s->token, sizeof s->token, err, errlen);
    if (!rc) {
        snprintf(path, sizeof path, "%s/token", s->dir);
        rc = write_file(path, s->token, sizeof s->token, err, errlen);
    }
    if (!rc) {
        char pid[32];
        int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
        snprintf(path, sizeof path, "%s/pid", s->dir);
        rc = write_file(path, pid, (size_t)n, err, errlen);
    }
    if (rc) {
        ipc_session_destroy(s);
        return rc;
    }
    return 0;
}

int ipc_session_attach(struct ipc_session *s, const char *root, const char *session_id, char *err,
                       size_t errlen) {
    memset(s, 0, sizeof *s);
    s->lock_fd = -1;
    if (!id_ok(session_id)) {
        snprintf(err, errlen, "session: bad session id '%s' (want %d lowercase hex digits)",
                 session_id ? session_id : "(null)", IPC_SESSION_ID_LEN);
        return IPC_EINVAL;
    }
    int rc = resolve_root(root, s->root, sizeof s->root, err, errlen);
    if (rc) return rc;
    rc = check_private_dir(s->root, err, errlen);
    if (rc) return rc;
    snprintf(s->id, sizeof s->id, "%s", session_id);
    if (snprintf(s->dir, sizeof s->dir, "%s/%s", s->root, s->id) >= (int)sizeof s->dir) {
        snprintf(err, errlen, "session: path too long under %s", s->root);
        return IPC_EINVAL;
    }
    rc = check_private_dir(s->dir, err, errlen);
    if (rc) return rc;

    char path[IPC_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/token", s->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, errlen, "session: open %s: %s", path, strerror(errno));
        return IPC_ERR;
    }
    struct stat st;
    ssize_t got = -1;
    if (fstat(fd, &st) == 0 && st.st_uid == geteuid() && (st.st_mode & 077) == 0 &&
        st.st_size == IPC_TOKEN_BYTES)
        got = read(fd, s->token, sizeof s->token);
    close(fd);
    if (got != IPC_TOKEN_BYTES) {
        snprintf(err, errlen,
                 "session: %s is not a %d-byte token file of ours with mode 0600", path,
                 IPC_TOKEN_BYTES);
        memset(s->token, 0, sizeof s->token);
        return IPC_ECORRUPT;
    }
    return 0;
}

void ipc_session_destroy(struct ipc_session *s) {
    if (!s) return;
    if (s->owner && s->id[0]) remove_session(s->root, s->id, NULL, NULL);
    if (s->lock_fd >= 0) close(s->lock_fd);
    memset(s, 0, sizeof *s);
    s->lock_fd = -1;
}

int ipc_session_endpoint(const struct ipc_session *s, const char *what, char *out, size_t outlen) {
    int n = snprintf(out, outlen, "ipc://%s/%s", s->dir, what);
    return (n < 0 || (size_t)n >= outlen) ? IPC_EINVAL : 0;
}

int ipc_session_shm_name(const struct ipc_session *s, const char *what, char *out, size_t outlen) {
    return shm_region_name(out, outlen, s->id, what);
}

/* 1 alive, 0 dead, -1 no lock file. */
static int session_alive(const char *dir) {
    char path[IPC_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/lock", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return -1;
    /* flock locks belong to open file descriptions: our fresh open conflicts
     * with the holder's even when the holder is this very process. */
    int alive = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd); /* releases the lock if we got it */
    return alive;
}

long ipc_session_read_pid(const char *dir, const char *name) {
    char path[IPC_PATH_MAX + 64], buf[32] = {0};
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n > 0 ? strtol(buf, NULL, 10) : 0;
}

typedef int (*session_visit_fn)(void *ctx, const char *root, const char *id, const char *dir);

static int visit_sessions(const char *root, session_visit_fn fn, void *ctx, char *err, size_t errlen) {
    int rc = check_private_dir(root, err, errlen);
    if (rc == IPC_ENOENT) return 0;
    if (rc) return rc;
    DIR *d = opendir(root);
    if (!d) {
        snprintf(err, errlen, "session: open %s: %s", root, strerror(errno));
        return IPC_ERR;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!id_ok(de->d_name)) continue;
        char dir[IPC_PATH_MAX];
        if (snprintf(dir, sizeof dir, "%s/%s", root, de->d_name) >= (int)sizeof dir) continue;
        struct stat st;
        if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
        fn(ctx, root, de->d_name, dir);
    }
    closedir(d);
    return 0;
}

struct list_ctx {
    struct ipc_session_info *out;
    int max, n;
};

static int list_one(void *vctx, const char *root, const char *id, const char *dir) {
    struct list_ctx *c = vctx;
    if (c->n < c->max) {
        struct ipc_session_info *i = &c->out[c->n];
        snprintf(i->id, sizeof i->id, "%s", id);
        i->alive = session_alive(dir) == 1;
        i->pid = ipc_session_read_pid(dir, "pid");
    }
    c->n++;
    return 0;
}

int ipc_session_list(const char *root, struct ipc_session_info *out, int max, int *n, char *err,
                     size_t errlen) {
    char r[IPC_PATH_MAX];
    int rc = resolve_root(root, r, sizeof r, err, errlen);
    if (rc) return rc;
    struct list_ctx c = {out, max, 0};
    rc = visit_sessions(r, list_one, &c, err, errlen);
    *n = c.n;
    return rc;
}

struct clean_ctx {
    ipc_clean_report_fn report;
    void *rctx;
    int n;
};

static int clean_one(void *vctx, const char *root, const char *id, const char *dir) {
    struct clean_ctx *c = vctx;
    int alive = session_alive(dir);
    if (alive == 1) return 0;
    if (alive < 0) {
        /* No lock file: either a crash between mkdir and open, or a session
         * being created right now. Only an old folder is garbage. */
        struct stat st;
        if (lstat(dir, &st) != 0 || time(NULL) - st.st_mtime < 10) return 0;
    }
    remove_session(root, id, c->report, c->rctx);
    if (c->report) c->report(c->rctx, "session", id);
    c->n++;
    return 0;
}

int ipc_clean_stale(const char *root, int flags, ipc_clean_report_fn report, void *ctx,
                    int *n_removed, char *err, size_t errlen) {
    char r[IPC_PATH_MAX];
    int rc = resolve_root(root, r, sizeof r, err, errlen);
    if (rc) return rc;
    struct clean_ctx c = {report, ctx, 0};
    rc = visit_sessions(r, clean_one, &c, err, errlen);
    if (rc) return rc;

    if (flags & IPC_CLEAN_ORPHAN_SHM) {
        /* hearth-<uid>-<16 hex>-<what> with no <root>/<id> folder. */
        char prefix[32];
        int plen = snprintf(prefix, sizeof prefix, "hearth-%u-", (unsigned)geteuid());
        DIR *d = opendir(SHM_DIR);
        if (d) {
            struct dirent *de;
            while ((de = readdir(d)) != NULL) {
                if (strncmp(de->d_name, prefix, (size_t)plen) != 0) continue;
                const char *id = de->d_name + plen;
                if (strlen(id) < IPC_SESSION_ID_LEN + 2 || id[IPC_SESSION_ID_LEN] != '-') continue;
                char sid[IPC_SESSION_ID_LEN + 1];
                memcpy(sid, id, IPC_SESSION_ID_LEN);
                sid[IPC_SESSION_ID_LEN] = '\0';
                if (!id_ok(sid)) continue;
                char dir[IPC_PATH_MAX];
                if (snprintf(dir, sizeof dir, "%s/%s", r, sid) >= (int)sizeof dir) continue;
                struct stat st;
                if (lstat(dir, &st) == 0) continue; /* has a folder: live, or handled above */
                char name[SHM_NAME_MAX + 2];
                if (snprintf(name, sizeof name, "/%s", de->d_name) >= (int)sizeof name) continue;
                if (shm_unlink(name) == 0) {
                    c.n++;
                    if (report) report(ctx, "region", name);
                }
            }
            closedir(d);
        }
    }
    if (n_removed) *n_removed = c.n;
    return 0;
}
