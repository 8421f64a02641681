/* topo: the machine's topology (hwloc), where hearth's processes run, and pinning.
 *
 * This module owns three things:
 *   1. a flat view of the machine: packages, NUMA nodes, cores and PUs
 *      (processing units: hardware threads), loaded from this machine, from
 *      an hwloc synthetic description ("pack:2 numa:1 core:8 pu:2") or from
 *      an hwloc XML file (`lstopo machine.xml` on the machine of interest);
 *   2. the placement of hearth's roles on it: the coordinator, the GPU worker
 *      and N CPU workers each get a set of PUs, a thread count and a NUMA
 *      node for their memory (topo_plan; the rules are written above it);
 *   3. binding helpers for the worker processes (threads to PUs, memory to a
 *      NUMA node). Pinning failures are never fatal: callers log a warning and
 *      run unpinned.
 *
 * Numbering. PUs are OS indices, as taskset, /proc/cpuinfo and `lstopo -p`
 * show them. NUMA nodes are OS indices too, as `numactl -H` shows them. In
 * topo_node(t, i), i is hwloc's logical order (nodes sorted by locality);
 * the node's os_index field is the number a user reads and writes.
 *
 * Machines without NUMA information count as one node holding every PU.
 * A NUMA node with no PUs (memory-only: HBM, CXL, some KNL modes) is listed
 * but gets no CPU worker.
 *
 * Pin spec (--pin SPEC), the user's override of automatic placement:
 *
 *   SPEC  := ITEM (';' ITEM)*
 *   ITEM  := ROLE '=' PUS ['@' NODE]  |  'cpu*=node'
 *   ROLE  := 'coord' | 'gpu' | 'cpu'N          (N = 0, 1, ...)
 *   PUS   := RANGE (',' RANGE)*
 *   RANGE := PU | PU '-' PU                     (OS PU indices, inclusive)
 *   NODE  := NUMA node OS index for the role's memory
 *
 *   gpu=0-1;cpu0=2-7@0;cpu1=8-15@1   GPU worker on PUs 0,1; two CPU workers
 *   cpu*=node                        one CPU worker per NUMA node (automatic)
 *   coord=0                          pin only the coordinator
 *
 * A pinned role runs one thread per listed PU, each thread on its own PU.
 * Without '@', its memory goes to the node holding all its PUs, or is not
 * bound when they span nodes. Roles the spec leaves out keep their automatic
 * placement. A spec that pins any cpuN must pin each of cpu0..cpu(N-1) of the
 * worker count (--cpu-workers, else the highest N + 1 named). No spaces;
 * each role at most once; every PU and node must exist. */
#ifndef HEARTH_TOPO_H
#define HEARTH_TOPO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Status codes besides 0 (ok). */
#define TOPO_ERR (-1)      /* failed; err says why */
#define TOPO_ENOTSUP (-2)  /* binding not supported here (container, synthetic
                              topology, kernel without NUMA): run unpinned,
                              log it once */

#define TOPO_MAX_CPU_WORKERS 256

struct topo; /* opaque; owns an hwloc topology */

/* One NUMA node. Arrays are owned by the topo. */
struct topo_node {
    int os_index;       /* the node's number for users and numactl */
    uint64_t memory;    /* local memory in bytes; 0 = unknown */
    int n_cores;
    const int *core_pu; /* [n_cores] first PU of each core, cores in
                           topology order */
    const int *core_off;/* [n_cores + 1] core k's PUs are
                           pus[core_off[k] .. core_off[k + 1]) */
    int n_pus;
    const int *pus;     /* [n_pus] every PU of the node, in topology order
                           (the PUs of core 0, then core 1, ...) */
};

/* desc: NULL = this machine, unless env HEARTH_TOPOLOGY is set and non-empty;
 * then that (or desc) is an XML file if a file of that name exists or it ends
 * in ".xml", else an hwloc synthetic description. NULL on failure. */
struct topo *topo_load(const char *desc, char *err, size_t errlen);
void topo_free(struct topo *t); /* NULL is fine */

/* Where the topology came from: "this machine", "synthetic: ...", "xml: ...". */
const char *topo_source(const struct topo *t);
/* 1 when the topology is this machine's, so that binding means something. */
int topo_is_this_system(const struct topo *t);

int topo_n_packages(const struct topo *t); /* >= 1 */
int topo_n_nodes(const struct topo *t);    /* NUMA nodes, >= 1 */
int topo_n_cores(const struct topo *t);    /* physical cores, >= 1 */
int topo_n_pus(const struct topo *t);      /* hardware threads, >= 1 */
/* i in [0, topo_n_nodes): hwloc logical order. NULL when out of range. */
const struct topo_node *topo_node(const struct topo *t, int i);
/* Logical index of the node with that OS index, or -1. */
int topo_node_by_os(const struct topo *t, int os_index);
/* Logical index of the node holding PU os_pu, or -1 when no such PU. */
int topo_node_of_pu(const struct topo *t, int os_pu);

/* ---- placement ---- */

enum topo_role_kind { TOPO_ROLE_COORD = 0, TOPO_ROLE_GPU = 1, TOPO_ROLE_CPU = 2 };

struct placement_role {
    enum topo_role_kind kind;
    int index;        /* CPU worker number (cpuN); 0 for coord and gpu */
    char name[16];    /* "coord", "gpu", "cpu0", ... */
    int n_pus;
    int *pus;         /* [n_pus] OS PU indices the role's threads run on */
    int n_threads;    /* >= 1 */
    int mem_node;     /* NUMA node OS index for the role's memory; -1 = unbound */
    int pinned;       /* 0: leave the role to the OS scheduler (the coordinator) */
    int spread;       /* 1: every thread may run on any of pus (shared cores:
                         the OS balances); 0: thread i runs on pus[i % n_pus] */
    int shared;       /* 1: some of pus also belong to another pinned role */
};

struct placement {
    int n_roles;                 /* 2 + n_cpu_workers */
    int n_cpu_workers;
    struct placement_role *roles; /* [0] coord, [1] gpu, [2 + k] cpu worker k */
    int oversubscribed;          /* 1: more roles than cores somewhere */
    char note[256];              /* warnings for the user ("" when none) */
};

struct placement_request {
    int n_cpu_workers; /* 0: one per NUMA node that has cores */
    int gpu_host;      /* 1: no GPU, the GPU worker computes on CPU threads */
    int gpu_threads;   /* 0: default (1 with a GPU; see topo_plan in host mode) */
    const char *pin;   /* --pin SPEC; NULL or "" = automatic */
    int use_smt;       /* 1: one thread per PU (hyperthreads too);
                          0: one per physical core, on its first PU */
};

/* Fills out (free it with placement_free, also after a failure). Fails only
 * on a bad request or pin spec; a small machine oversubscribes instead. */
int topo_plan(const struct topo *t, const struct placement_request *req,
              struct placement *out, char *err, size_t errlen);
void placement_free(struct placement *p);
/* The role "coord", "gpu" or "cpuN", or NULL. */
const struct placement_role *placement_find(const struct placement *p, const char *name);

/* ---- pin spec ---- */

struct pin_item {
    enum topo_role_kind kind;
    int index;     /* cpuN: N; else 0 */
    int per_node;  /* 1 for "cpu*=node" (no pus) */
    int n_pus;
    int *pus;      /* [n_pus] in the order written */
    int mem_node;  /* '@' node OS index, or -1 when absent */
};

struct pin_spec {
    int n_items;
    struct pin_item *items;
};

/* Parses and checks spec against t. Errors read
 * "--pin: 'cpu0=2-x': bad PU range at character 8" (characters of the whole
 * spec, from 1). Free with pin_spec_free, also after a failure. */
int pin_spec_parse(const struct topo *t, const char *spec, struct pin_spec *out,
                   char *err, size_t errlen);
void pin_spec_free(struct pin_spec *s);

/* ---- binding (this machine only) ---- */

/* Binds the calling thread to the PUs. 0, TOPO_ENOTSUP or TOPO_ERR. */
int topo_bind_thread(const struct topo *t, const int *pus, int n_pus, char *err, size_t errlen);
/* Binds thread ith of a role by the role's rule (spread or one PU each);
 * a role that is not pinned is left alone (returns 0). */
int topo_bind_role_thread(const struct topo *t, const struct placement_role *r, int ith,
                          char *err, size_t errlen);
/* Binds [addr, addr + len) to the node (OS index) and migrates pages already
 * there. 0, TOPO_ENOTSUP (ENOSYS/EXDEV/EPERM: containers) or TOPO_ERR. */
int topo_bind_memory(const struct topo *t, void *addr, size_t len, int numa_node,
                     char *err, size_t errlen);
/* len bytes, page aligned, on the node (OS index; -1 = anywhere). When the
 * node cannot be bound here, falls back to ordinary memory (a debug log
 * line). NULL when out of memory. Free with topo_free_on_node. */
void *topo_alloc_on_node(const struct topo *t, size_t len, int numa_node);
void topo_free_on_node(const struct topo *t, void *p, size_t len);

/* ---- describe ---- */

/* The machine, and the placement when p is not NULL. */
void topo_print(const struct topo *t, const struct placement *p, FILE *out);
/* Writes pus as "0-3,8,10-11" into buf (always terminated). */
void topo_format_pus(const int *pus, int n, char *buf, size_t len);

#endif
