/* test_shm: shm regions (ipc/shm.h) and session folders (ipc/session.h).
 *
 * Regions: create/open/close/unlink, mode 0600, O_EXCL collision, size
 * checks. Sessions: folder and file modes, token round trip, refusal of a
 * root that is not ours, list with alive/dead, and ipc_clean_stale removing
 * a dead session (a forked child that creates one and _exit()s without
 * cleaning up) while a live one stays untouched. Everything happens under a
 * private mkdtemp root, never the user's real runtime folder. */
#include "ipc.h"
#include "session.h"
#include "shm.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int g_fail;
#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
            g_fail++;                                                          \
        }                                                                      \
    } while (0)

static int shm_exists(const char *name) {
    char path[300];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    return access(path, F_OK) == 0;
}

static void test_regions(void) {
    char err[256], id[IPC_SESSION_ID_LEN + 1], name[SHM_NAME_MAX];
    CHECK(ipc_session_new_id(id, err, sizeof err) == 0, "%s", err);
    CHECK(strlen(id) == IPC_SESSION_ID_LEN, "id '%s'", id);
    CHECK(shm_region_name(name, sizeof name, id, "bad/what") == IPC_EINVAL, "slash accepted");
    CHECK(shm_region_name(name, sizeof name, id, "a-b") == IPC_EINVAL, "dash accepted");
    CHECK(shm_region_name(name, 10, id, "rings") == IPC_EINVAL, "short buffer accepted");
    CHECK(shm_region_name(name, sizeof name, id, "rings") == 0, "name");
    char want[SHM_NAME_MAX];
    snprintf(want, sizeof want, "/hearth-%u-%s-rings", (unsigned)geteuid(), id);
    CHECK(!strcmp(name, want), "'%s' != '%s'", name, want);

    struct shm_region a, b, c;
    size_t size = 3 * 4096 + 123; /* not a page multiple */
    CHECK(shm_region_create(&a, "no-slash", 64, err, sizeof err) == IPC_EINVAL, "bad name accepted");
    CHECK(shm_region_create(&a, name, 0, err, sizeof err) == IPC_EINVAL, "size 0 accepted");
    CHECK(shm_region_open(&b, name, 0, err, sizeof err) == IPC_ENOENT, "opened a missing region");
    mode_t old = umask(0); /* the mode must be 0600 whatever the umask */
    int rc = shm_region_create(&a, name, size, err, sizeof err);
    umask(old);
    CHECK(rc == 0, "%s", err);
    if (rc) return;
    CHECK(a.owner == 1 && a.size == size, "owner %d size %zu", a.owner, a.size);
    struct stat st;
    char path[300];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "mode %03o", (unsigned)(st.st_mode & 0777));
    CHECK(shm_region_create(&c, name, size, err, sizeof err) == IPC_EEXIST, "O_EXCL collision: %s", err);
    CHECK(shm_region_open(&b, name, size + 1, err, sizeof err) == IPC_EINVAL, "too-small region opened");
    rc = shm_region_open(&b, name, size, err, sizeof err);
    CHECK(rc == 0 && b.owner == 0, "%s", err);
    if (!rc) {
        ((unsigned char *)a.base)[size - 1] = 0xab;
        CHECK(((unsigned char *)b.base)[size - 1] == 0xab, "shared byte");
        CHECK(((unsigned char *)b.base)[0] == 0, "zero-filled");
        shm_region_close(&b); /* a worker's close leaves the name */
        CHECK(shm_exists(name), "worker close unlinked the region");
    }
    CHECK(shm_region_open(&b, name, 0, err, sizeof err) == 0 && b.size == size, "size 0 maps all: %zu", b.size);
    shm_region_close(&b);
    shm_region_close(&a);
    CHECK(!shm_exists(name), "owner close left %s", name);
    shm_region_close(&a); /* twice is harmless */
}

struct report { int sessions, regions, files; char last[300]; };

static void on_clean(void *ctx, const char *kind, const char *what) {
    struct report *r = ctx;
    if (!strcmp(kind, "session")) r->sessions++;
    else if (!strcmp(kind, "region")) r->regions++;
    else if (!strcmp(kind, "file")) r->files++;
    snprintf(r->last, sizeof r->last, "%s %s", kind, what);
    printf("  clean: %s %s\n", kind, what);
}

static void test_sessions(void) {
    char err[256];
    char root[] = "/tmp/hearth-test-shm-XXXXXX";
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    chmod(root, 0755);
    struct ipc_session s;
    CHECK(ipc_session_create(&s, root, err, sizeof err) == IPC_EPERM, "root with mode 0755 accepted");
    printf("  refused: %s\n", err);
    if (geteuid() == 0) { /* only root can hand a folder to someone else */
        chmod(root, 0700);
        CHECK(chown(root, 1, 1) == 0, "chown");
        CHECK(ipc_session_create(&s, root, err, sizeof err) == IPC_EPERM, "foreign root accepted");
        printf("  refused: %s\n", err);
        CHECK(chown(root, 0, 0) == 0, "chown back");
    }
    chmod(root, 0700);

    /* Live session: folder 0700, token 0600 of 32 bytes, lock held. */
    int rc = ipc_session_create(&s, root, err, sizeof err);
    CHECK(rc == 0, "%s", err);
    if (rc) return;
    struct stat st;
    char path[IPC_PATH_MAX + 32];
    CHECK(stat(s.dir, &st) == 0 && (st.st_mode & 0777) == 0700, "session dir mode");
    snprintf(path, sizeof path, "%s/token", s.dir);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_size == IPC_TOKEN_BYTES, "token file");
    char ep[IPC_PATH_MAX + 32], name[SHM_NAME_MAX];
    CHECK(ipc_session_endpoint(&s, "ctl", ep, sizeof ep) == 0 && !strncmp(ep, "ipc:///tmp/", 11), "%s", ep);
    struct shm_region live_reg;
    CHECK(ipc_session_shm_name(&s, "rings", name, sizeof name) == 0, "name");
    CHECK(shm_region_create(&live_reg, name, 4096, err, sizeof err) == 0, "%s", err);

    struct ipc_session w;
    CHECK(ipc_session_attach(&w, root, s.id, err, sizeof err) == 0, "%s", err);
    CHECK(!memcmp(w.token, s.token, IPC_TOKEN_BYTES), "attached token differs");
    CHECK(ipc_session_attach(&w, root, "0123456789abcdef", err, sizeof err) != 0, "attached a missing session");
    CHECK(ipc_session_attach(&w, root, "../etc", err, sizeof err) == IPC_EINVAL, "bad id accepted");
    ipc_session_destroy(&w); /* a worker's destroy removes nothing */
    CHECK(access(s.dir, F_OK) == 0, "worker destroy removed the folder");

    /* Dead session: a child creates one with a region and dies uncleanly. */
    int pfd[2];
    CHECK(pipe(pfd) == 0, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
        struct ipc_session d;
        struct shm_region r1, r2;
        char n1[SHM_NAME_MAX], n2[SHM_NAME_MAX];
        if (ipc_session_create(&d, root, err, sizeof err)) _exit(1);
        ipc_session_shm_name(&d, "rings", n1, sizeof n1);
        ipc_session_shm_name(&d, "logits", n2, sizeof n2);
        if (shm_region_create(&r1, n1, 8192, err, sizeof err) || shm_region_create(&r2, n2, 100, err, sizeof err))
            _exit(1);
        if (write(pfd[1], d.id, sizeof d.id) != sizeof d.id) _exit(1);
        _exit(0); /* no destroy, no close: a crash */
    }
    close(pfd[1]);
    char dead_id[IPC_SESSION_ID_LEN + 1] = "";
    CHECK(read(pfd[0], dead_id, sizeof dead_id) == sizeof dead_id, "child id");
    close(pfd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed");

    struct ipc_session_info info[8];
    int n = 0;
    CHECK(ipc_session_list(root, info, 8, &n, err, sizeof err) == 0 && n == 2, "list: n %d", n);
    for (int i = 0; i < n && i < 8; i++) {
        if (!strcmp(info[i].id, s.id)) CHECK(info[i].alive == 1 && info[i].pid == getpid(), "live one listed dead");
        else if (!strcmp(info[i].id, dead_id)) CHECK(info[i].alive == 0 && info[i].pid == pid, "dead one listed alive");
        else CHECK(0, "unknown session %s", info[i].id);
    }

    char dead_reg[SHM_NAME_MAX], dead_dir[IPC_PATH_MAX];
    shm_region_name(dead_reg, sizeof dead_reg, dead_id, "rings");
    snprintf(dead_dir, sizeof dead_dir, "%s/%s", root, dead_id);
    CHECK(shm_exists(dead_reg) && access(dead_dir, F_OK) == 0, "dead session's leftovers missing before clean");

    struct report rep = {0};
    int removed = -1;
    CHECK(ipc_clean_stale(root, 0, on_clean, &rep, &removed, err, sizeof err) == 0, "%s", err);
    CHECK(removed == 1 && rep.sessions == 1 && rep.regions == 2 && rep.files >= 3,
          "removed %d: sessions %d regions %d files %d", removed, rep.sessions, rep.regions, rep.files);
    CHECK(!shm_exists(dead_reg), "dead region left");
    CHECK(access(dead_dir, F_OK) != 0, "dead folder left");
    CHECK(shm_exists(name) && access(s.dir, F_OK) == 0, "live session touched");
    CHECK(ipc_session_attach(&w, root, s.id, err, sizeof err) == 0, "live session unusable: %s", err);

    /* A second clean finds nothing. */
    CHECK(ipc_clean_stale(root, 0, NULL, NULL, &removed, err, sizeof err) == 0 && removed == 0, "removed %d", removed);

    /* An orphan region (no folder anywhere) goes with IPC_CLEAN_ORPHAN_SHM;
     * the live session's region stays. */
    char orphan_id[IPC_SESSION_ID_LEN + 1], orphan[SHM_NAME_MAX];
    ipc_session_new_id(orphan_id, err, sizeof err);
    shm_region_name(orphan, sizeof orphan, orphan_id, "rings");
    struct shm_region o;
    CHECK(shm_region_create(&o, orphan, 64, err, sizeof err) == 0, "%s", err);
    o.owner = 0; /* leave the name behind on close, like a crash */
    shm_region_close(&o);
    memset(&rep, 0, sizeof rep);
    CHECK(ipc_clean_stale(root, IPC_CLEAN_ORPHAN_SHM, on_clean, &rep, &removed, err, sizeof err) == 0, "%s", err);
    CHECK(!shm_exists(orphan), "orphan region left");
    CHECK(shm_exists(name), "live region removed as an orphan");

    /* The owner's destroy removes its folder and regions. */
    char live_dir[IPC_PATH_MAX];
    snprintf(live_dir, sizeof live_dir, "%s", s.dir);
    live_reg.owner = 0; /* destroy must find it by name, not by this handle */
    shm_region_close(&live_reg);
    ipc_session_destroy(&s);
    CHECK(access(live_dir, F_OK) != 0, "destroy left the folder");
    CHECK(!shm_exists(name), "destroy left the region");
    CHECK(ipc_session_list(root, info, 8, &n, err, sizeof err) == 0 && n == 0, "list after destroy: %d", n);
    rmdir(root);
}

int main(void) {
    printf("test_shm: uid %u\n", (unsigned)geteuid());
    test_regions();
    test_sessions();
    if (g_fail) {
        fprintf(stderr, "test_shm: %d failure(s)\n", g_fail);
        return 1;
    }
    printf("test_shm: ok\n");
    return 0;
}
