/* cmd_session: commands about the machine and the running sessions:
 * `hearth topo`, `hearth workers [stop|restart ROLE]`, `hearth clean`. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ipc.h"
#include "session.h"
#include "topo.h"

int cmd_topo(int argc, char **argv) {
    struct cli_opts o;
    if (cli_parse(&o, argc, argv, 2, CLI_RUNTIME, "topo") != 0) return 1;
    char err[1024];
    struct topo *t = topo_load(NULL, err, sizeof err);
    if (!t) return cli_fail(err);
    struct placement_request req = {o.eng.n_cpu_workers, 1, 0, o.eng.pin, 0};
    struct placement p;
    memset(&p, 0, sizeof p);
    if (topo_plan(t, &req, &p, err, sizeof err) != 0) {
        topo_free(t);
        return cli_fail(err);
    }
    topo_print(t, &p, stdout);
    placement_free(&p);
    topo_free(t);
    return 0;
}

static void report_removed(void *ctx, const char *kind, const char *what) {
    (void)ctx;
    printf("removed %s %s\n", kind, what);
}

int cmd_clean(int argc, char **argv) {
    struct cli_opts o;
    if (cli_parse(&o, argc, argv, 2, 0, "clean") != 0) return 1;
    char err[1024];
    int n = 0;
    if (ipc_clean_stale(NULL, IPC_CLEAN_ORPHAN_SHM, report_removed, NULL, &n, err, sizeof err) != 0)
        return cli_fail(err);
    fprintf(stderr, "hearth clean: %d stale session%s removed\n", n, n == 1 ? "" : "s");
    return 0;
}

/* The pid a session recorded for a worker role, or 0. */
static long role_pid(const char *dir, const char *role) {
    char name[32];
    snprintf(name, sizeof name, "%s.pid", role);
    return ipc_session_read_pid(dir, name);
}

static void list_roles(const char *dir) {
    static const char *const prefixes[] = {"gpu", "cpu"};
    for (int p = 0; p < 2; p++) {
        for (int k = 0; k < 256; k++) {
            char role[16];
            snprintf(role, sizeof role, "%s%d", prefixes[p], k);
            long pid = role_pid(dir, role);
            if (!pid) break;
            int alive = kill((pid_t)pid, 0) == 0 || errno != ESRCH;
            printf("  %-6s pid %-8ld %s\n", role, pid, alive ? "running" : "gone");
        }
    }
}

int cmd_workers(int argc, char **argv) {
    const char *action = NULL, *role = NULL, *session = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--session") && i + 1 < argc) session = argv[++i];
        else if (!action && (!strcmp(argv[i], "restart") || !strcmp(argv[i], "stop"))) action = argv[i];
        else if (action && !role) role = argv[i];
        else {
            fprintf(stderr, "hearth workers: unexpected '%s' (see 'hearth workers --help')\n", argv[i]);
            return 1;
        }
    }
    if (action && !role) return cli_fail("workers: name the worker: hearth workers restart ROLE (gpu0, cpu0, ...)");
    char root[IPC_PATH_MAX], err[IPC_PATH_MAX * 4];
    if (ipc_runtime_dir(root, sizeof root, err, sizeof err) != 0) return cli_fail(err);
    struct ipc_session_info infos[64];
    int n = 0;
    if (ipc_session_list(NULL, infos, 64, &n, err, sizeof err) != 0) return cli_fail(err);
    if (n > 64) n = 64;
    int n_alive = 0;
    const struct ipc_session_info *target = NULL;
    for (int i = 0; i < n; i++) {
        if (!infos[i].alive) continue;
        n_alive++;
        if (!session || !strcmp(session, infos[i].id)) target = &infos[i];
    }
    if (!action) {
        if (n_alive == 0) printf("no running sessions\n");
        for (int i = 0; i < n; i++) {
            if (!infos[i].alive || (session && strcmp(session, infos[i].id) != 0)) continue;
            char dir[IPC_PATH_MAX * 2];
            snprintf(dir, sizeof dir, "%.255s/%.32s", root, infos[i].id);
            printf("session %s (coordinator pid %ld)\n", infos[i].id, infos[i].pid);
            list_roles(dir);
        }
        return 0;
    }
    if (!target) return cli_fail(session ? "workers: no running session with that id" : "workers: no running session");
    if (!session && n_alive > 1) return cli_fail("workers: several sessions run: choose one with --session ID");
    char dir[IPC_PATH_MAX * 2];
    snprintf(dir, sizeof dir, "%.255s/%.32s", root, target->id);
    long pid = role_pid(dir, role);
    if (!pid) {
        snprintf(err, sizeof err, "workers: session %s has no worker %s", target->id, role);
        return cli_fail(err);
    }
    if (!strcmp(action, "stop")) {
        /* the marker tells the coordinator to wait for a hand-started worker instead of spawning one */
        char marker[IPC_PATH_MAX * 3];
        snprintf(marker, sizeof marker, "%s/%s.manual", dir, role);
        FILE *f = fopen(marker, "w");
        if (!f) {
            snprintf(err, sizeof err, "workers: cannot write %s: %s", marker, strerror(errno));
            return cli_fail(err);
        }
        fclose(f);
    }
    if (kill((pid_t)pid, SIGTERM) != 0) {
        snprintf(err, sizeof err, "workers: cannot signal %s (pid %ld): %s", role, pid, strerror(errno));
        return cli_fail(err);
    }
    if (!strcmp(action, "stop"))
        printf("stopped %s (pid %ld); start it again by hand with:\n  hearth-%s-worker --session %s --role %s\n", role,
               pid, role[0] == 'g' ? "gpu" : "cpu", target->id, role);
    else
        printf("restarting %s (pid %ld) of session %s\n", role, pid, target->id);
    return 0;
}
