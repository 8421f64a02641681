/* shm: named POSIX shared-memory regions.
 *
 * The coordinator creates every region of a session (it owns them: it
 * unlinks them on close); workers only open and map them. Names follow
 * `/hearth-<uid>-<session>-<what>` (shm_region_name) so that `hearth clean`
 * can find the regions of a dead session in /dev/shm (ipc/session.h).
 * Regions are mode 0600: only the same user can map them. */
#ifndef HEARTH_SHM_H
#define HEARTH_SHM_H

#include <stddef.h>

#define SHM_NAME_MAX 128

struct shm_region {
    void *base;              /* mapping, page aligned; NULL when closed */
    size_t size;             /* bytes mapped */
    int owner;               /* 1: created here, unlinked by shm_region_close */
    char name[SHM_NAME_MAX]; /* "/hearth-..." */
};

/* Writes "/hearth-<uid>-<session>-<what>" into out. `what` may hold
 * [A-Za-z0-9._] only (no '/' and no '-' so that names parse back).
 * Returns 0, or IPC_EINVAL when a part is bad or out is too small. */
int shm_region_name(char *out, size_t outlen, const char *session, const char *what);

/* Creates a new region (O_CREAT|O_EXCL, mode 0600), sizes it to `size`
 * bytes (zero-filled) and maps it shared read-write. IPC_EEXIST when the
 * name is taken. The caller owns it. */
int shm_region_create(struct shm_region *r, const char *name, size_t size, char *err, size_t errlen);

/* Maps an existing region read-write. `size` is what the caller expects:
 * the region must be at least that big (0: map its whole current size).
 * IPC_ENOENT when there is none; IPC_EINVAL when it is too small. */
int shm_region_open(struct shm_region *r, const char *name, size_t size, char *err, size_t errlen);

/* Unmaps; the owner also unlinks the name (already-gone names are fine).
 * Safe on a zeroed or already-closed region. */
void shm_region_close(struct shm_region *r);

#endif
