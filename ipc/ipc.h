/* ipc: status codes shared by every module of ipc/ (shm, session, ring,
 * idle, doorbell, ctl).
 *
 * Functions that can fail return 0 or one of these negative codes, and fill
 * a caller-supplied `char *err, size_t errlen` message (err may be NULL when
 * errlen is 0) where a user will read it. */
#ifndef HEARTH_IPC_H
#define HEARTH_IPC_H

enum ipc_status {
    IPC_OK = 0,
    IPC_ERR = -1,      /* system call or library failure; err says which */
    IPC_EINVAL = -2,   /* bad argument (size, name, layout) */
    IPC_EEXIST = -3,   /* the name is already taken (O_EXCL) */
    IPC_ENOENT = -4,   /* no such region, session or file */
    IPC_EAGAIN = -5,   /* ring full (push) or empty (pop): try again */
    IPC_ETIMEDOUT = -6,/* a blocking wait ran out: check that the peer lives */
    IPC_ETOOBIG = -7,  /* payload larger than a slot / the caller's buffer */
    IPC_ECORRUPT = -8, /* shared state fails its checks (bad magic, length) */
    IPC_EPERM = -9,    /* wrong owner or mode of a folder or file */
};

const char *ipc_strerror(int status);

#endif
