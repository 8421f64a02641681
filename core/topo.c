/* topo: topology view, placement of hearth's roles, pin specs and binding.
 *
 * The hwloc topology is read once in topo_load and flattened into per-node
 * arrays (struct topo_node): placement and printing never walk hwloc's tree.
 * hwloc 2 hangs NUMA nodes off the tree as memory children, so a node's PUs
 * are found through cpusets: a PU belongs to the first node (logical order)
 * whose cpuset holds it. Several nodes sharing one cpuset (DRAM + HBM behind
 * one package) therefore give the PUs to the first and leave the others as
 * memory-only nodes with no cores. The hwloc topology is kept for binding. */
#include "topo.h"

#include "log.h"

#include <errno.h>
#include <hwloc.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct topo {
    hwloc_topology_t h;
    int this_system;
    char source[160];
    int n_packages, n_cores, n_pus;
    int n_nodes;
    struct topo_node *nodes; /* [n_nodes]; their arrays point into the blocks below */
    int *node_arrays;        /* every node's core_pu, core_off and pus, one block */
    int max_pu;              /* highest PU OS index */
    int *pu_node;            /* [max_pu + 1] logical node of each PU, -1 = none */
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int is_xml_desc(const char *d) {
    struct stat st;
    size_t n = strlen(d);
    if (n >= 4 && strcmp(d + n - 4, ".xml") == 0) return 1;
    return stat(d, &st) == 0 && S_ISREG(st.st_mode);
}

/* Flattens h into t's arrays. */
static int topo_build(struct topo *t, char *err, size_t errlen) {
    hwloc_topology_t h = t->h;
    int n_pu = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_PU);
    int n_core_objs = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_CORE);
    int n_numa = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_NUMANODE);
    if (n_pu <= 0) {
        set_err(err, errlen, "topology of %s has no PUs", t->source);
        return TOPO_ERR;
    }
    t->n_pus = n_pu;
    t->n_packages = hwloc_get_nbobjs_by_type(h, HWLOC_OBJ_PACKAGE);
    if (t->n_packages < 1) t->n_packages = 1;
    t->n_nodes = n_numa > 0 ? n_numa : 1; /* no NUMA info: one node holding everything */

    /* Per PU (logical order): OS index, node, and whether it starts a core. */
    int *os = malloc(sizeof(int) * (size_t)n_pu);
    int *node_of = malloc(sizeof(int) * (size_t)n_pu);
    unsigned char *starts = malloc((size_t)n_pu);
    unsigned char *core_seen = calloc((size_t)(n_core_objs > 0 ? n_core_objs : 1), 1);
    t->nodes = calloc((size_t)t->n_nodes, sizeof(*t->nodes));
    if (!os || !node_of || !starts || !core_seen || !t->nodes) {
        free(os), free(node_of), free(starts), free(core_seen);
        set_err(err, errlen, "topology: out of memory for %d PUs", n_pu);
        return TOPO_ERR;
    }
    t->max_pu = 0;
    for (int i = 0; i < n_pu; i++) {
        hwloc_obj_t pu = hwloc_get_obj_by_type(h, HWLOC_OBJ_PU, (unsigned)i);
        os[i] = (int)pu->os_index;
        if (os[i] > t->max_pu) t->max_pu = os[i];
        node_of[i] = 0;
        for (int n = 0; n < n_numa; n++) {
            hwloc_obj_t nd = hwloc_get_obj_by_type(h, HWLOC_OBJ_NUMANODE, (unsigned)n);
            if (nd->cpuset && hwloc_bitmap_isset(nd->cpuset, pu->os_index)) {
                node_of[i] = n;
                break;
            }
        }
        /* Without Core objects (some synthetic descriptions, some platforms)
         * every PU counts as a core of its own. */
        hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(h, HWLOC_OBJ_CORE, pu);
        if (!core) {
            starts[i] = 1;
        } else {
            starts[i] = !core_seen[core->logical_index];
            core_seen[core->logical_index] = 1;
        }
    }
    free(core_seen);

    /* One block for every node's arrays: core_pu [n_pu], core_off [n_pu + n_nodes], pus [n_pu]. */
    t->node_arrays = malloc(sizeof(int) * (size_t)(3 * n_pu + t->n_nodes));
    t->pu_node = malloc(sizeof(int) * (size_t)(t->max_pu + 1));
    if (!t->node_arrays || !t->pu_node) {
        free(os), free(node_of), free(starts);
        set_err(err, errlen, "topology: out of memory for %d PUs", n_pu);
        return TOPO_ERR;
    }
    for (int p = 0; p <= t->max_pu; p++) t->pu_node[p] = -1;
    int *cp = t->node_arrays, *co = cp + n_pu, *pp = co + n_pu + t->n_nodes;
    t->n_cores = 0;
    for (int n = 0; n < t->n_nodes; n++) {
        struct topo_node *nd = &t->nodes[n];
        int *core_pu = cp, *core_off = co, *pus = pp;
        int nc = 0, np = 0;
        /* PU logical order is depth-first, so a core's PUs are contiguous. */
        for (int i = 0; i < n_pu; i++) {
            if (node_of[i] != n) continue;
            if (starts[i] || nc == 0) {
                core_pu[nc] = os[i];
                core_off[nc] = np;
                nc++;
            }
            pus[np++] = os[i];
            t->pu_node[os[i]] = n;
        }
        core_off[nc] = np;
        cp += nc, co += nc + 1, pp += np;
        nd->n_cores = nc, nd->core_pu = core_pu, nd->core_off = core_off;
        nd->n_pus = np, nd->pus = pus;
        t->n_cores += nc;
        if (n_numa > 0) {
            hwloc_obj_t obj = hwloc_get_obj_by_type(h, HWLOC_OBJ_NUMANODE, (unsigned)n);
            nd->os_index = (int)obj->os_index;
            nd->memory = obj->attr ? obj->attr->numanode.local_memory : 0;
        } else {
            nd->os_index = 0;
            nd->memory = hwloc_get_root_obj(h)->total_memory;
        }
    }
    free(os), free(node_of), free(starts);
    return 0;
}

struct topo *topo_load(const char *desc, char *err, size_t errlen) {
    if (!desc) {
        const char *env = getenv("HEARTH_TOPOLOGY");
        if (env && *env) desc = env;
    }
    struct topo *t = calloc(1, sizeof(*t));
    if (!t) {
        set_err(err, errlen, "topology: out of memory");
        return NULL;
    }
    if (hwloc_topology_init(&t->h) != 0) {
        free(t);
        set_err(err, errlen, "topology: hwloc_topology_init failed: %s", strerror(errno));
        return NULL;
    }
    if (!desc) {
        snprintf(t->source, sizeof(t->source), "this machine");
    } else if (is_xml_desc(desc)) {
        snprintf(t->source, sizeof(t->source), "xml: %s", desc);
        if (hwloc_topology_set_xml(t->h, desc) != 0) {
            set_err(err, errlen, "topology: cannot read hwloc XML '%s': %s", desc, strerror(errno));
            topo_free(t);
            return NULL;
        }
    } else {
        snprintf(t->source, sizeof(t->source), "synthetic: %s", desc);
        if (hwloc_topology_set_synthetic(t->h, desc) != 0) {
            set_err(err, errlen,
                    "topology: bad hwloc synthetic description '%s' (example: \"pack:2 numa:1 core:8 pu:2\"; "
                    "an XML file must exist or end in .xml)", desc);
            topo_free(t);
            return NULL;
        }
    }
    if (hwloc_topology_load(t->h) != 0) {
        set_err(err, errlen, "topology: hwloc cannot load %s: %s", t->source, strerror(errno));
        topo_free(t);
        return NULL;
    }
    t->this_system = hwloc_topology_is_thissystem(t->h);
    if (topo_build(t, err, errlen) != 0) {
        topo_free(t);
        return NULL;
    }
    return t;
}

void topo_free(struct topo *t) {
    if (!t) return;
    if (t->h) hwloc_topology_destroy(t->h);
    free(t->nodes);
    free(t->node_arrays);
    free(t->pu_node);
    free(t);
}

const char *topo_source(const struct topo *t) { return t->source; }
int topo_is_this_system(const struct topo *t) { return t->this_system; }
int topo_n_packages(const struct topo *t) { return t->n_packages; }
int topo_n_nodes(const struct topo *t) { return t->n_nodes; }
int topo_n_cores(const struct topo *t) { return t->n_cores; }
int topo_n_pus(const struct topo *t) { return t->n_pus; }

const struct topo_node *topo_node(const struct topo *t, int i) {
    return i >= 0 && i < t->n_nodes ? &t->nodes[i] : NULL;
}

int topo_node_by_os(const struct topo *t, int os_index) {
    for (int i = 0; i < t->n_nodes; i++)
        if (t->nodes[i].os_index == os_index) return i;
    return -1;
}

int topo_node_of_pu(const struct topo *t, int os_pu) {
    return os_pu >= 0 && os_pu <= t->max_pu ? t->pu_node[os_pu] : -1;
}

/* ---- pin spec ---- */

void pin_spec_free(struct pin_spec *s) {
    if (!s) return;
    for (int i = 0; i < s->n_items; i++) free(s->items[i].pus);
    free(s->items);
    s->items = NULL;
    s->n_items = 0;
}

/* Reads a decimal number at spec[*pos] (below 10^7). 0 ok, -1 when none. */
static int read_num(const char *spec, size_t *pos, size_t end, int *v) {
    size_t p = *pos;
    long x = 0;
    if (p >= end || spec[p] < '0' || spec[p] > '9') return -1;
    while (p < end && spec[p] >= '0' && spec[p] <= '9') {
        x = x * 10 + (spec[p] - '0');
        if (x >= 10000000) return -1;
        p++;
    }
    *pos = p;
    *v = (int)x;
    return 0;
}

static void role_name(enum topo_role_kind kind, int index, char *buf, size_t len) {
    if (kind == TOPO_ROLE_COORD) snprintf(buf, len, "coord");
    else if (kind == TOPO_ROLE_GPU) snprintf(buf, len, "gpu");
    else snprintf(buf, len, "cpu%d", index);
}

/* Parses spec[s, e) into it. Positions in messages count from 1 over the whole spec. */
static int parse_item(const struct topo *t, const char *spec, size_t s, size_t e,
                      struct pin_item *it, char *err, size_t errlen) {
    int ilen = (int)(e - s > 64 ? 64 : e - s);
    const char *is = spec + s;
    /* PIN_FAIL(at, hint, fmt, ...): "--pin: 'ITEM': WHY at character N[; HINT]" */
#define PIN_FAIL(at, hint, ...)                                                                  \
    do {                                                                                         \
        char why_[160];                                                                          \
        snprintf(why_, sizeof(why_), __VA_ARGS__);                                               \
        set_err(err, errlen, "--pin: '%.*s': %s at character %zu%s%s", ilen, is, why_, (at) + 1, \
                (hint)[0] ? "; " : "", (hint));                                                  \
        return TOPO_ERR;                                                                         \
    } while (0)

    size_t p = s;
    it->mem_node = -1;
    it->index = 0;
    if (e - p >= 5 && strncmp(spec + p, "coord", 5) == 0) {
        it->kind = TOPO_ROLE_COORD;
        p += 5;
    } else if (e - p >= 3 && strncmp(spec + p, "gpu", 3) == 0) {
        it->kind = TOPO_ROLE_GPU;
        p += 3;
    } else if (e - p >= 3 && strncmp(spec + p, "cpu", 3) == 0) {
        it->kind = TOPO_ROLE_CPU;
        p += 3;
        if (p < e && spec[p] == '*') {
            it->per_node = 1;
            p++;
        } else if (read_num(spec, &p, e, &it->index) != 0) {
            PIN_FAIL(p, "", "expected a CPU worker number (cpu0, cpu1, ...) or cpu*");
        } else if (it->index >= TOPO_MAX_CPU_WORKERS) {
            PIN_FAIL(p - 1, "", "CPU worker %d is beyond the limit of %d", it->index, TOPO_MAX_CPU_WORKERS);
        }
    } else {
        size_t q = p;
        while (q < e && spec[q] != '=') q++;
        PIN_FAIL(p, "roles are coord, gpu, cpuN and cpu*", "unknown role '%.*s'", (int)(q - p > 32 ? 32 : q - p), spec + p);
    }
    if (p >= e || spec[p] != '=') PIN_FAIL(p, "", "expected '=' after the role");
    p++;
    if (it->per_node) {
        if (e - p != 4 || strncmp(spec + p, "node", 4) != 0) PIN_FAIL(p, "", "cpu* takes only 'node' (cpu*=node)");
        return 0;
    }
    int cap = 16;
    it->pus = malloc(sizeof(int) * (size_t)cap);
    if (!it->pus) PIN_FAIL(p, "", "out of memory");
    for (;;) {
        size_t at = p;
        int a, b;
        if (read_num(spec, &p, e, &a) != 0) PIN_FAIL(p, "", "bad PU range");
        b = a;
        if (p < e && spec[p] == '-') {
            p++;
            if (read_num(spec, &p, e, &b) != 0) PIN_FAIL(p, "", "bad PU range");
            if (b < a) PIN_FAIL(at, "", "PU range %d-%d runs backwards", a, b);
        }
        for (int pu = a; pu <= b; pu++) {
            if (topo_node_of_pu(t, pu) < 0) PIN_FAIL(at, "`hearth topo` lists the PUs", "PU %d does not exist", pu);
            for (int k = 0; k < it->n_pus; k++)
                if (it->pus[k] == pu) PIN_FAIL(at, "", "PU %d listed twice", pu);
            if (it->n_pus == cap) {
                int *np = realloc(it->pus, sizeof(int) * (size_t)(cap *= 2));
                if (!np) PIN_FAIL(at, "", "out of memory");
                it->pus = np;
            }
            it->pus[it->n_pus++] = pu;
        }
        if (p < e && spec[p] == ',') {
            p++;
            continue;
        }
        break;
    }
    if (p < e && spec[p] == '@') {
        p++;
        size_t at = p;
        if (read_num(spec, &p, e, &it->mem_node) != 0) PIN_FAIL(at, "", "bad NUMA node after '@'");
        if (topo_node_by_os(t, it->mem_node) < 0) PIN_FAIL(at, "`hearth topo` lists the nodes", "NUMA node %d does not exist", it->mem_node);
    }
    if (p < e) PIN_FAIL(p, "", "unexpected '%c'", spec[p]);
    return 0;
#undef PIN_FAIL
}

int pin_spec_parse(const struct topo *t, const char *spec, struct pin_spec *out, char *err, size_t errlen) {
    memset(out, 0, sizeof(*out));
    size_t len = strlen(spec);
    int cap = 1;
    for (size_t i = 0; i < len; i++) cap += spec[i] == ';';
    out->items = calloc((size_t)cap, sizeof(*out->items));
    if (!out->items) {
        set_err(err, errlen, "--pin: out of memory");
        return TOPO_ERR;
    }
    size_t s = 0;
    while (s <= len) {
        size_t e = s;
        while (e < len && spec[e] != ';') e++;
        if (e == s) {
            set_err(err, errlen, "--pin: '%s': empty item at character %zu", spec, s + 1);
            return TOPO_ERR;
        }
        struct pin_item *it = &out->items[out->n_items++];
        if (parse_item(t, spec, s, e, it, err, errlen) != 0) return TOPO_ERR;
        for (int k = 0; k < out->n_items - 1; k++) {
            const struct pin_item *o = &out->items[k];
            int same = o->kind == it->kind && (it->kind != TOPO_ROLE_CPU || (o->per_node == it->per_node && (it->per_node || o->index == it->index)));
            if (same || (it->kind == TOPO_ROLE_CPU && o->kind == TOPO_ROLE_CPU && o->per_node != it->per_node)) {
                char name[16];
                int il = (int)(e - s > 64 ? 64 : e - s);
                role_name(it->kind, it->index, name, sizeof(name));
                if (same)
                    set_err(err, errlen, "--pin: '%.*s': role %s given twice at character %zu", il, spec + s,
                            it->per_node ? "cpu*" : name, s + 1);
                else
                    set_err(err, errlen, "--pin: '%.*s': cpu*=node and cpuN cannot be mixed at character %zu", il,
                            spec + s, s + 1);
                return TOPO_ERR;
            }
        }
        s = e + 1;
    }
    return 0;
}

/* ---- placement ---- */

void placement_free(struct placement *p) {
    if (!p) return;
    for (int i = 0; i < p->n_roles; i++) free(p->roles[i].pus);
    free(p->roles);
    memset(p, 0, sizeof(*p));
}

const struct placement_role *placement_find(const struct placement *p, const char *name) {
    for (int i = 0; i < p->n_roles; i++)
        if (strcmp(p->roles[i].name, name) == 0) return &p->roles[i];
    return NULL;
}

static void note_add(struct placement *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_add(struct placement *p, const char *fmt, ...) {
    size_t n = strlen(p->note);
    if (n + 3 >= sizeof(p->note)) return;
    if (n) n += (size_t)snprintf(p->note + n, sizeof(p->note) - n, "; ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->note + n, sizeof(p->note) - n, fmt, ap);
    va_end(ap);
}

static int role_set(struct placement_role *r, const int *pus, int n, char *err, size_t errlen) {
    free(r->pus);
    r->pus = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (!r->pus) {
        r->n_pus = 0;
        set_err(err, errlen, "placement: out of memory");
        return TOPO_ERR;
    }
    memcpy(r->pus, pus, sizeof(int) * (size_t)n);
    r->n_pus = n;
    return 0;
}

/* The units of node n: its cores' first PUs, or every PU with SMT. */
static const int *node_units(const struct topo_node *nd, int use_smt, int *n) {
    *n = use_smt ? nd->n_pus : nd->n_cores;
    return use_smt ? nd->pus : nd->core_pu;
}

/* Gives w CPU workers (roles r[0..w)) the units a[0..na) of one node. */
static int split_units(struct placement *p, struct placement_role *r, int w, const int *a, int na,
                       int node_os, char *err, size_t errlen) {
    if (w == 0) return 0;
    if (na >= w) {
        /* Even contiguous chunks, the first na % w one unit larger: workers
         * stay on neighbouring cores (shared caches). */
        int off = 0;
        for (int k = 0; k < w; k++) {
            int n = na / w + (k < na % w);
            if (role_set(&r[k], a + off, n, err, errlen) != 0) return TOPO_ERR;
            r[k].n_threads = n;
            r[k].spread = 0;
            off += n;
        }
    } else {
        /* Fewer cores than workers: each worker may run anywhere on the
         * node's cores and gets max(1, na / w) threads. Pinning each thread
         * to one core would stack several workers' threads on the same core
         * while others idle; a shared set lets the scheduler balance. */
        for (int k = 0; k < w; k++) {
            if (role_set(&r[k], a, na, err, errlen) != 0) return TOPO_ERR;
            r[k].n_threads = na / w > 0 ? na / w : 1;
            r[k].spread = 1;
        }
        p->oversubscribed = 1;
    }
    for (int k = 0; k < w; k++) r[k].mem_node = node_os;
    return 0;
}

static int pus_overlap(const struct placement_role *a, const struct placement_role *b) {
    for (int i = 0; i < a->n_pus; i++)
        for (int j = 0; j < b->n_pus; j++)
            if (a->pus[i] == b->pus[j]) return 1;
    return 0;
}

/* Automatic placement rules (topo.h's header comment says why hearth has
 * these roles):
 *   - Only NUMA nodes with cores count ("usable"). A unit is a core (its
 *     first PU) or, with use_smt, a PU.
 *   - CPU workers: default one per usable node. N <= nodes: worker k gets
 *     node k, the remaining nodes stay unused (noted). N > nodes: every node
 *     gets one, the rest go one at a time to the node with the most units per
 *     role (D'Hondt; in host mode the GPU worker counts as a role of the
 *     first node), so unequal nodes get workers in proportion.
 *     Workers are numbered node by node. A node's units are split into even
 *     contiguous chunks, one thread per unit; a node with fewer units than
 *     workers is shared (see split_units). Memory: the worker's node.
 *   - GPU worker with a GPU: gpu_threads (default 1) units at the start of
 *     node 0, shared with node 0's CPU worker; a thread that drives a GPU
 *     mostly waits, so reserving a whole core for it would waste one.
 *     Memory: node 0.
 *   - GPU worker in host mode (no GPU: attention, hot neurons and the LM head
 *     on CPU threads): within every layer its attention and the CPU workers'
 *     FFN shards take turns, so it gets all of node 0's units (one thread
 *     each; gpu_threads lowers it), shared with node 0's CPU workers, which
 *     split the node as usual. Measured on 2 cores (hearth bench, decode):
 *     sharing both cores gave about the single-process speed, one core each
 *     about 10% less.
 *   - Coordinator: one light thread, not pinned (every PU, memory unbound).
 * Then the pin spec replaces the roles it names. */
int topo_plan(const struct topo *t, const struct placement_request *req, struct placement *out,
              char *err, size_t errlen) {
    memset(out, 0, sizeof(*out));
    struct pin_spec spec = {0};
    int rc = TOPO_ERR;
    int *usable = NULL, *per_node = NULL, *buf = NULL;
    const int use_smt = req->use_smt;

    if (req->n_cpu_workers < 0 || req->n_cpu_workers > TOPO_MAX_CPU_WORKERS) {
        set_err(err, errlen, "--cpu-workers %d: must be 0 (one per NUMA node) to %d", req->n_cpu_workers, TOPO_MAX_CPU_WORKERS);
        return TOPO_ERR;
    }
    if (req->gpu_threads < 0) {
        set_err(err, errlen, "GPU worker threads %d: must be 0 (automatic) or more", req->gpu_threads);
        return TOPO_ERR;
    }
    if (req->pin && *req->pin && pin_spec_parse(t, req->pin, &spec, err, errlen) != 0) goto done;

    usable = malloc(sizeof(int) * (size_t)t->n_nodes);
    per_node = calloc((size_t)t->n_nodes, sizeof(int));
    buf = malloc(sizeof(int) * (size_t)t->n_pus);
    if (!usable || !per_node || !buf) {
        set_err(err, errlen, "placement: out of memory");
        goto done;
    }
    int nu = 0;
    for (int n = 0; n < t->n_nodes; n++)
        if (t->nodes[n].n_cores > 0) usable[nu++] = n;

    /* The worker count: the request, then the spec's cpu items. */
    int n_workers = req->n_cpu_workers > 0 ? req->n_cpu_workers : nu;
    int max_named = -1, per_node_item = 0;
    for (int i = 0; i < spec.n_items; i++) {
        const struct pin_item *it = &spec.items[i];
        if (it->kind != TOPO_ROLE_CPU) continue;
        if (it->per_node) per_node_item = 1;
        else if (it->index > max_named) max_named = it->index;
    }
    if (per_node_item) {
        if (req->n_cpu_workers > 0 && req->n_cpu_workers != nu) {
            set_err(err, errlen, "--pin cpu*=node asks for one CPU worker per NUMA node (%d) but --cpu-workers is %d",
                    nu, req->n_cpu_workers);
            goto done;
        }
        n_workers = nu;
    } else if (max_named >= 0) {
        if (req->n_cpu_workers == 0) n_workers = max_named + 1;
        if (max_named >= n_workers) {
            set_err(err, errlen, "--pin names cpu%d but --cpu-workers is %d (workers are cpu0..cpu%d)",
                    max_named, n_workers, n_workers - 1);
            goto done;
        }
        for (int k = 0; k < n_workers; k++) {
            int named = 0;
            for (int i = 0; i < spec.n_items; i++)
                named |= spec.items[i].kind == TOPO_ROLE_CPU && spec.items[i].index == k;
            if (!named) {
                set_err(err, errlen, "--pin pins some CPU workers but not cpu%d: pin each of cpu0..cpu%d, or none",
                        k, n_workers - 1);
                goto done;
            }
        }
    }

    out->n_cpu_workers = n_workers;
    out->n_roles = 2 + n_workers;
    out->roles = calloc((size_t)out->n_roles, sizeof(*out->roles));
    if (!out->roles) {
        out->n_roles = 0;
        set_err(err, errlen, "placement: out of memory for %d roles", 2 + n_workers);
        goto done;
    }
    for (int i = 0; i < out->n_roles; i++) {
        struct placement_role *r = &out->roles[i];
        r->kind = i == 0 ? TOPO_ROLE_COORD : i == 1 ? TOPO_ROLE_GPU : TOPO_ROLE_CPU;
        r->index = i >= 2 ? i - 2 : 0;
        role_name(r->kind, r->index, r->name, sizeof(r->name));
        r->pinned = i != 0;
        r->mem_node = -1;
        r->n_threads = 1;
    }

    /* Coordinator: every PU of the machine, unpinned. */
    {
        int np = 0;
        for (int n = 0; n < t->n_nodes; n++)
            for (int i = 0; i < t->nodes[n].n_pus; i++) buf[np++] = t->nodes[n].pus[i];
        if (role_set(&out->roles[0], buf, np, err, errlen) != 0) goto done;
        out->roles[0].spread = 1;
    }

    /* Workers per usable node. */
    if (n_workers <= nu) {
        for (int k = 0; k < n_workers; k++) per_node[usable[k]] = 1;
        if (n_workers < nu)
            note_add(out, "%d CPU worker%s for %d NUMA nodes: node%s %d%s left unused", n_workers,
                     n_workers == 1 ? "" : "s", nu, nu - n_workers == 1 ? "" : "s",
                     t->nodes[usable[n_workers]].os_index, nu - n_workers > 1 ? " and up" : "");
    } else {
        /* In host mode the GPU worker counts as one more role on the first node. */
        int gpu_node = req->gpu_host ? usable[0] : -1;
        for (int k = 0; k < nu; k++) per_node[usable[k]] = 1;
        for (int left = n_workers - nu; left > 0; left--) {
            int best = usable[0];
            for (int k = 1; k < nu; k++) {
                int n = usable[k], un, ub;
                int wn = per_node[n] + (n == gpu_node), wb = per_node[best] + (best == gpu_node);
                node_units(&t->nodes[n], use_smt, &un);
                node_units(&t->nodes[best], use_smt, &ub);
                /* un / (wn + 1) > ub / (wb + 1), in integers */
                if ((long)un * (wb + 1) > (long)ub * (wn + 1)) best = n;
            }
            per_node[best]++;
        }
    }

    /* GPU worker and the CPU workers, node by node. */
    struct placement_role *gpu = &out->roles[1];
    int next = 2;
    for (int k = 0; k < nu; k++) {
        int n = usable[k];
        const struct topo_node *nd = &t->nodes[n];
        int na;
        const int *a = node_units(nd, use_smt, &na);
        int w = per_node[n];
        struct placement_role *r = &out->roles[next];
        if (k == 0 && !req->gpu_host) {
            int g = req->gpu_threads > 0 ? req->gpu_threads : 1;
            if (g > na) g = na;
            if (role_set(gpu, a, g, err, errlen) != 0) goto done;
            gpu->n_threads = g;
            gpu->mem_node = nd->os_index;
            if (split_units(out, r, w, a, na, nd->os_index, err, errlen) != 0) goto done;
        } else if (k == 0) {
            /* host mode: the GPU worker's phases (attention, LM head) and the
             * CPU workers' FFN shards alternate within every layer, so the GPU
             * worker shares all of node 0's units with node 0's CPU workers
             * instead of splitting them */
            int g = req->gpu_threads > 0 && req->gpu_threads < na ? req->gpu_threads : na;
            if (role_set(gpu, a, g, err, errlen) != 0) goto done;
            gpu->n_threads = g;
            gpu->mem_node = nd->os_index;
            if (split_units(out, r, w, a, na, nd->os_index, err, errlen) != 0) goto done;
        } else {
            if (split_units(out, r, w, a, na, nd->os_index, err, errlen) != 0) goto done;
        }
        next += w;
    }
    if (nu == 0) { /* cannot happen with hwloc (a PU lives in some node); keep roles valid */
        set_err(err, errlen, "topology of %s has no NUMA node with cores", t->source);
        goto done;
    }
    if (out->oversubscribed)
        note_add(out, "fewer cores than workers: workers share cores (threads float over the shared PUs)");

    /* The spec replaces the roles it names. */
    for (int i = 0; i < spec.n_items; i++) {
        const struct pin_item *it = &spec.items[i];
        if (it->per_node) continue;
        struct placement_role *r = it->kind == TOPO_ROLE_COORD ? &out->roles[0]
                                 : it->kind == TOPO_ROLE_GPU   ? &out->roles[1]
                                                               : &out->roles[2 + it->index];
        if (role_set(r, it->pus, it->n_pus, err, errlen) != 0) goto done;
        r->pinned = 1;
        r->n_threads = it->kind == TOPO_ROLE_COORD ? 1 : it->n_pus;
        r->spread = it->kind == TOPO_ROLE_COORD;
        r->mem_node = it->mem_node;
        if (r->mem_node < 0) {
            int n0 = topo_node_of_pu(t, it->pus[0]), same = 1;
            for (int j = 1; j < it->n_pus; j++) same &= topo_node_of_pu(t, it->pus[j]) == n0;
            r->mem_node = same ? t->nodes[n0].os_index : -1;
        }
    }

    for (int i = 1; i < out->n_roles; i++)
        for (int j = i + 1; j < out->n_roles; j++)
            if (pus_overlap(&out->roles[i], &out->roles[j])) out->roles[i].shared = out->roles[j].shared = 1;
    rc = 0;
done:
    pin_spec_free(&spec);
    free(usable);
    free(per_node);
    free(buf);
    return rc;
}

/* ---- binding ---- */

static int bind_status(int e) {
    return e == ENOSYS || e == EXDEV || e == EPERM || e == ENOTSUP ? TOPO_ENOTSUP : TOPO_ERR;
}

int topo_bind_thread(const struct topo *t, const int *pus, int n_pus, char *err, size_t errlen) {
    if (!t->this_system) {
        set_err(err, errlen, "cannot bind threads: the topology is %s, not this machine", t->source);
        return TOPO_ENOTSUP;
    }
    if (n_pus <= 0) {
        set_err(err, errlen, "cannot bind a thread to an empty PU list");
        return TOPO_ERR;
    }
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set) {
        set_err(err, errlen, "bind thread: out of memory");
        return TOPO_ERR;
    }
    for (int i = 0; i < n_pus; i++) hwloc_bitmap_set(set, (unsigned)pus[i]);
    int rc = 0;
    if (hwloc_set_cpubind(t->h, set, HWLOC_CPUBIND_THREAD) != 0) {
        int e = errno;
        char list[128];
        topo_format_pus(pus, n_pus, list, sizeof(list));
        rc = bind_status(e);
        set_err(err, errlen, "cannot bind thread to PUs %s: %s", list, strerror(e));
    }
    hwloc_bitmap_free(set);
    return rc;
}

int topo_bind_role_thread(const struct topo *t, const struct placement_role *r, int ith, char *err, size_t errlen) {
    if (!r->pinned || r->n_pus == 0) return 0;
    if (r->spread) return topo_bind_thread(t, r->pus, r->n_pus, err, errlen);
    int i = (ith < 0 ? -ith : ith) % r->n_pus;
    return topo_bind_thread(t, &r->pus[i], 1, err, errlen);
}

/* A nodeset with the node of that OS index; NULL with err set. */
static hwloc_bitmap_t node_set(const struct topo *t, int numa_node, char *err, size_t errlen) {
    if (topo_node_by_os(t, numa_node) < 0) {
        set_err(err, errlen, "NUMA node %d does not exist (%d nodes here)", numa_node, t->n_nodes);
        return NULL;
    }
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    hwloc_bitmap_set(set, (unsigned)numa_node);
    return set;
}

int topo_bind_memory(const struct topo *t, void *addr, size_t len, int numa_node, char *err, size_t errlen) {
    if (!t->this_system) {
        set_err(err, errlen, "cannot bind memory: the topology is %s, not this machine", t->source);
        return TOPO_ENOTSUP;
    }
    const struct hwloc_topology_support *sup = hwloc_topology_get_support(t->h);
    if (!sup || !sup->membind || !sup->membind->set_area_membind || !sup->membind->bind_membind) {
        set_err(err, errlen, "cannot bind memory: this system does not support it");
        return TOPO_ENOTSUP;
    }
    hwloc_bitmap_t set = node_set(t, numa_node, err, errlen);
    if (!set) return TOPO_ERR;
    int rc = 0;
    if (hwloc_set_area_membind(t->h, addr, len, set, HWLOC_MEMBIND_BIND,
                               HWLOC_MEMBIND_MIGRATE | HWLOC_MEMBIND_BYNODESET) != 0) {
        int e = errno;
        rc = bind_status(e);
        set_err(err, errlen, "cannot bind %zu bytes to NUMA node %d: %s", len, numa_node, strerror(e));
    }
    hwloc_bitmap_free(set);
    return rc;
}

void *topo_alloc_on_node(const struct topo *t, size_t len, int numa_node) {
    if (len == 0) len = 1;
    if (numa_node >= 0 && t->this_system) {
        char err[128];
        hwloc_bitmap_t set = node_set(t, numa_node, err, sizeof(err));
        if (set) {
            void *p = hwloc_alloc_membind(t->h, len, set, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_BYNODESET);
            int e = errno;
            hwloc_bitmap_free(set);
            if (p) return p;
            if (e == ENOMEM) return NULL;
            log_debug("topo: cannot allocate %zu bytes on NUMA node %d (%s); using ordinary memory", len,
                      numa_node, strerror(e));
        } else {
            log_debug("topo: %s; using ordinary memory", err);
        }
    }
    return hwloc_alloc(t->h, len);
}

void topo_free_on_node(const struct topo *t, void *p, size_t len) {
    if (!p) return;
    hwloc_free(t->h, p, len ? len : 1);
}

/* ---- describe ---- */

void topo_format_pus(const int *pus, int n, char *buf, size_t len) {
    if (len == 0) return;
    buf[0] = '\0';
    size_t o = 0;
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && pus[j + 1] == pus[j] + 1) j++;
        char item[32];
        if (j == i) snprintf(item, sizeof(item), "%s%d", i ? "," : "", pus[i]);
        else snprintf(item, sizeof(item), "%s%d-%d", i ? "," : "", pus[i], pus[j]);
        size_t il = strlen(item);
        if (o + il + 4 >= len) { /* keep room for "..." */
            snprintf(buf + o, len - o, "...");
            return;
        }
        memcpy(buf + o, item, il + 1);
        o += il;
        i = j + 1;
    }
}

static void print_mem(FILE *out, uint64_t bytes) {
    if (bytes == 0) fprintf(out, "memory unknown");
    else if (bytes >= (1ull << 30)) fprintf(out, "%.1f GiB", (double)bytes / (double)(1ull << 30));
    else fprintf(out, "%.0f MiB", (double)bytes / (double)(1ull << 20));
}

void topo_print(const struct topo *t, const struct placement *p, FILE *out) {
    char list[512];
    fprintf(out, "machine (%s): %d package%s, %d NUMA node%s, %d core%s, %d PU%s\n", t->source, t->n_packages,
            t->n_packages == 1 ? "" : "s", t->n_nodes, t->n_nodes == 1 ? "" : "s", t->n_cores,
            t->n_cores == 1 ? "" : "s", t->n_pus, t->n_pus == 1 ? "" : "s");
    for (int n = 0; n < t->n_nodes; n++) {
        const struct topo_node *nd = &t->nodes[n];
        fprintf(out, "  node %d: ", nd->os_index);
        print_mem(out, nd->memory);
        if (nd->n_cores == 0) {
            fprintf(out, ", no cores (memory only)\n");
            continue;
        }
        topo_format_pus(nd->pus, nd->n_pus, list, sizeof(list));
        fprintf(out, ", %d core%s, PUs %s\n", nd->n_cores, nd->n_cores == 1 ? "" : "s", list);
        if (nd->n_pus > nd->n_cores) { /* SMT: show which PUs are siblings */
            fprintf(out, "    PUs per core:");
            for (int c = 0; c < nd->n_cores; c++) {
                topo_format_pus(nd->pus + nd->core_off[c], nd->core_off[c + 1] - nd->core_off[c], list, sizeof(list));
                fprintf(out, "%s[%s]", c % 16 == 0 && c ? "\n                 " : " ", list);
            }
            fprintf(out, "\n");
        }
    }
    if (!p) return;
    fprintf(out, "placement: coordinator, GPU worker, %d CPU worker%s%s\n", p->n_cpu_workers,
            p->n_cpu_workers == 1 ? "" : "s", p->oversubscribed ? " (oversubscribed)" : "");
    for (int i = 0; i < p->n_roles; i++) {
        const struct placement_role *r = &p->roles[i];
        topo_format_pus(r->pus, r->n_pus, list, sizeof(list));
        fprintf(out, "  %-6s PUs %-14s %3d thread%s  memory ", r->name, list, r->n_threads, r->n_threads == 1 ? " " : "s");
        if (r->mem_node >= 0) fprintf(out, "node %-3d", r->mem_node);
        else fprintf(out, "any     ");
        fprintf(out, "%s%s\n", !r->pinned ? "  not pinned" : r->spread ? "  threads float over the PUs" : "  one thread per PU",
                r->shared && r->pinned ? ", shared" : "");
    }
    if (p->note[0]) fprintf(out, "  note: %s\n", p->note);
}
