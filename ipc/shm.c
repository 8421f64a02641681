/* shm: see shm.h. Also ipc_strerror, shared by every module of ipc/. */
#include "shm.h"
#include "ipc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

const char *ipc_strerror(int status) {
    switch (status) {
    case IPC_OK: return "ok";
    case IPC_ERR: return "system error";
    case IPC_EINVAL: return "invalid argument";
    case IPC_EEXIST: return "already exists";
    case IPC_ENOENT: return "not found";
    case IPC_EAGAIN: return "try again";
    case IPC_ETIMEDOUT: return "timed out";
    case IPC_ETOOBIG: return "too big";
    case IPC_ECORRUPT: return "corrupt shared state";
    case IPC_EPERM: return "permission (owner or mode)";
    default: return "unknown status";
    }
}

static int name_part_ok(const char *s, int allow_dash) {
    if (!s || !*s) return 0;
    for (; *s; s++) {
        char c = *s;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || (allow_dash && c == '-');
        if (!ok) return 0;
    }
    return 1;
}

int shm_region_name(char *out, size_t outlen, const char *session, const char *what) {
    if (!out || !name_part_ok(session, 0) || !name_part_ok(what, 0)) return IPC_EINVAL;
    int n = snprintf(out, outlen, "/hearth-%u-%s-%s", (unsigned)geteuid(), session, what);
    if (n < 0 || (size_t)n >= outlen) return IPC_EINVAL;
    return 0;
}

static int check_name(const char *name, char *err, size_t errlen) {
    /* shm_open wants "/x" with no further slash; NAME_MAX bounds the rest. */
    if (!name || name[0] != '/' || strlen(name) >= SHM_NAME_MAX || strlen(name) < 2 ||
        strchr(name + 1, '/')) {
        snprintf(err, errlen, "shm: bad region name '%s' (want \"/name\", < %d chars, no other '/')",
                 name ? name : "(null)", SHM_NAME_MAX);
        return IPC_EINVAL;
    }
    return 0;
}

int shm_region_create(struct shm_region *r, const char *name, size_t size, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    int rc = check_name(name, err, errlen);
    if (rc) return rc;
    if (size == 0) {
        snprintf(err, errlen, "shm: region %s: size 0", name);
        return IPC_EINVAL;
    }
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "shm: create %s: %s", name, strerror(e));
        return e == EEXIST ? IPC_EEXIST : IPC_ERR;
    }
    /* The umask may have cleared bits but never adds any; fchmod makes the
     * mode exactly 0600 whatever the umask. */
    if (fchmod(fd, 0600) != 0 || ftruncate(fd, (off_t)size) != 0) {
        snprintf(err, errlen, "shm: size %s to %zu bytes: %s", name, size, strerror(errno));
        close(fd);
        shm_unlink(name);
        return IPC_ERR;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd); /* the mapping keeps the object alive */
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "shm: map %s (%zu bytes): %s", name, size, strerror(errno));
        shm_unlink(name);
        return IPC_ERR;
    }
    r->base = p;
    r->size = size;
    r->owner = 1;
    snprintf(r->name, sizeof r->name, "%s", name);
    return 0;
}

int shm_region_open(struct shm_region *r, const char *name, size_t size, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    int rc = check_name(name, err, errlen);
    if (rc) return rc;
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "shm: open %s: %s", name, strerror(e));
        return e == ENOENT ? IPC_ENOENT : IPC_ERR;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "shm: stat %s: %s", name, strerror(errno));
        close(fd);
        return IPC_ERR;
    }
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "shm: %s belongs to uid %u, not to us (uid %u)", name,
                 (unsigned)st.st_uid, (unsigned)geteuid());
        close(fd);
        return IPC_EPERM;
    }
    size_t have = (size_t)st.st_size;
    if (have == 0 || have < size) {
        snprintf(err, errlen, "shm: %s is %zu bytes, expected at least %zu", name, have, size);
        close(fd);
        return IPC_EINVAL;
    }
    if (size == 0) size = have;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "shm: map %s (%zu bytes): %s", name, size, strerror(errno));
        return IPC_ERR;
    }
    r->base = p;
    r->size = size;
    r->owner = 0;
    snprintf(r->name, sizeof r->name, "%s", name);
    return 0;
}

void shm_region_close(struct shm_region *r) {
    if (!r) return;
    if (r->base) munmap(r->base, r->size);
    if (r->owner && r->name[0]) shm_unlink(r->name); /* ENOENT: already cleaned; fine */
    memset(r, 0, sizeof *r);
}
