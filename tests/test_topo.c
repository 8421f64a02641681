/* topo_unit: topology loading, placement on synthetic multi-socket machines,
 * pin spec parsing, and binding on the real machine.
 *
 * Placement is checked by invariants (every role has PUs and threads, a CPU
 * worker's PUs lie in one NUMA node and its memory is that node, CPU workers
 * never share a PU unless the placement says it is oversubscribed, a node's
 * workers differ by at most one core, default = one worker per node) over a
 * grid of topologies x worker counts x GPU modes, plus exact expectations for
 * the shapes that matter (this 2-core CI machine, 2 sockets with SMT).
 *
 * argv[1] (optional): the folder of the XML fixtures (tests/topo). Random PU
 * subsets for pin specs come from a splitmix64 stream with a printed seed. */
#include "topo.h"

#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond, ...)                                                 \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);         \
            fprintf(stderr, __VA_ARGS__);                                \
            fprintf(stderr, "\n");                                       \
            failures++;                                                  \
        }                                                                \
    } while (0)

static uint64_t rs = 0x70b0c0de2024ull; /* printed in main */

static uint64_t rnd64(void) {
    uint64_t z = (rs += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static const char *fixtures = "tests/topo";

static struct topo *load(const char *desc) {
    char err[256] = "";
    struct topo *t = topo_load(desc, err, sizeof(err));
    CHECK(t != NULL, "topo_load(%s): %s", desc ? desc : "NULL", err);
    return t;
}

static int is_unit(const struct topo *t, int pu, int use_smt) {
    int n = topo_node_of_pu(t, pu);
    if (n < 0) return 0;
    const struct topo_node *nd = topo_node(t, n);
    if (use_smt) return 1;
    for (int c = 0; c < nd->n_cores; c++)
        if (nd->core_pu[c] == pu) return 1;
    return 0;
}

static int n_usable(const struct topo *t) {
    int nu = 0;
    for (int n = 0; n < topo_n_nodes(t); n++) nu += topo_node(t, n)->n_cores > 0;
    return nu;
}

/* The invariants of an automatic placement (no pin spec). */
static void check_invariants(const char *what, const struct topo *t, const struct placement_request *req,
                             const struct placement *p) {
    int want_w = req->n_cpu_workers ? req->n_cpu_workers : n_usable(t);
    CHECK(p->n_cpu_workers == want_w, "%s: %d CPU workers, want %d", what, p->n_cpu_workers, want_w);
    CHECK(p->n_roles == 2 + p->n_cpu_workers, "%s: %d roles", what, p->n_roles);
    const struct placement_role *gpu = placement_find(p, "gpu");
    CHECK(gpu && placement_find(p, "coord"), "%s: no gpu or coord role", what);
    if (!gpu) return;
    const struct topo_node *node0 = NULL;
    for (int n = 0; n < topo_n_nodes(t) && !node0; n++)
        if (topo_node(t, n)->n_cores > 0) node0 = topo_node(t, n);
    CHECK(gpu->mem_node == node0->os_index, "%s: gpu memory on node %d, want %d", what, gpu->mem_node, node0->os_index);
    CHECK(!p->roles[0].pinned && p->roles[0].n_pus == topo_n_pus(t), "%s: coordinator should be unpinned on every PU", what);

    int *owner = calloc((size_t)topo_n_pus(t) * 8 + 64, sizeof(int)); /* by OS PU index; our topologies number densely */
    int *per_node = calloc((size_t)topo_n_nodes(t), sizeof(int));
    int *minsz = calloc((size_t)topo_n_nodes(t), sizeof(int));
    int *maxsz = calloc((size_t)topo_n_nodes(t), sizeof(int));
    if (!owner || !per_node || !minsz || !maxsz) abort();
    for (int n = 0; n < topo_n_nodes(t); n++) minsz[n] = 1 << 30;

    for (int i = 1; i < p->n_roles; i++) {
        const struct placement_role *r = &p->roles[i];
        CHECK(r->n_pus > 0 && r->n_threads > 0 && r->pinned, "%s: %s has %d PUs, %d threads, pinned %d", what, r->name,
              r->n_pus, r->n_threads, r->pinned);
        if (r->n_pus == 0) continue;
        int n0 = topo_node_of_pu(t, r->pus[0]);
        for (int j = 0; j < r->n_pus; j++) {
            CHECK(topo_node_of_pu(t, r->pus[j]) == n0, "%s: %s spans NUMA nodes (PU %d)", what, r->name, r->pus[j]);
            CHECK(is_unit(t, r->pus[j], req->use_smt), "%s: %s has PU %d, not a unit (use_smt %d)", what, r->name,
                  r->pus[j], req->use_smt);
        }
        CHECK(n0 >= 0 && r->mem_node == topo_node(t, n0)->os_index, "%s: %s memory node %d, its PUs are on node %d", what,
              r->name, r->mem_node, n0 >= 0 ? topo_node(t, n0)->os_index : -1);
        if (!r->spread)
            CHECK(r->n_threads == r->n_pus, "%s: %s has %d threads on %d PUs", what, r->name, r->n_threads, r->n_pus);
        else
            CHECK(p->oversubscribed || r->kind == TOPO_ROLE_GPU, "%s: %s spread without oversubscription", what, r->name);
        if (r->kind != TOPO_ROLE_CPU) continue;
        per_node[n0]++;
        if (r->n_pus < minsz[n0]) minsz[n0] = r->n_pus;
        if (r->n_pus > maxsz[n0]) maxsz[n0] = r->n_pus;
        for (int j = 0; j < r->n_pus; j++) {
            int o = owner[r->pus[j]];
            CHECK(o == 0 || (r->spread && p->roles[o].spread), "%s: PU %d given to %s and %s", what, r->pus[j],
                  p->roles[o].name, r->name);
            owner[r->pus[j]] = i;
        }
    }
    /* Host mode: the GPU worker takes turns with the CPU workers inside each
     * layer, so it holds every unit of node 0, one thread each. */
    if (req->gpu_host) {
        int nunits = req->use_smt ? node0->n_pus : node0->n_cores;
        const int *u = req->use_smt ? node0->pus : node0->core_pu;
        CHECK(gpu->n_pus == nunits && gpu->n_threads == nunits, "%s: host GPU worker has %d PUs, %d threads, want %d",
              what, gpu->n_pus, gpu->n_threads, nunits);
        for (int k = 0; k < nunits && k < gpu->n_pus; k++)
            CHECK(gpu->pus[k] == u[k], "%s: host GPU worker PU %d is %d, want %d", what, k, gpu->pus[k], u[k]);
    }
    int used_nodes = 0, nu = n_usable(t);
    for (int n = 0; n < topo_n_nodes(t); n++) {
        if (!per_node[n]) continue;
        used_nodes++;
        CHECK(maxsz[n] - minsz[n] <= 1, "%s: node %d workers have %d to %d PUs", what, n, minsz[n], maxsz[n]);
        if (!p->oversubscribed) { /* every unit of a used node has a role */
            const struct topo_node *nd = topo_node(t, n);
            int nunits = req->use_smt ? nd->n_pus : nd->n_cores;
            const int *u = req->use_smt ? nd->pus : nd->core_pu;
            for (int k = 0; k < nunits; k++) {
                int in_gpu = 0;
                for (int j = 0; j < gpu->n_pus; j++) in_gpu |= gpu->pus[j] == u[k];
                CHECK(owner[u[k]] || in_gpu, "%s: PU %d of node %d unused", what, u[k], nd->os_index);
            }
        }
    }
    CHECK(used_nodes == (want_w < nu ? want_w : nu), "%s: workers on %d nodes, want %d", what, used_nodes,
          want_w < nu ? want_w : nu);
    if (want_w < nu) CHECK(strstr(p->note, "unused") != NULL, "%s: no warning for unused nodes: '%s'", what, p->note);
    /* Oversubscribed exactly when some node has fewer units than roles needing their own. */
    free(owner), free(per_node), free(minsz), free(maxsz);
}

static void test_grid(void) {
    char unequal[512];
    snprintf(unequal, sizeof(unequal), "%s/unequal-12-4.xml", fixtures);
    const char *shapes[] = {
        "pack:1 numa:1 core:2 pu:1",   /* this CI machine */
        "pack:1 numa:1 core:16 pu:1",
        "pack:2 numa:1 core:8 pu:2",   /* 2 sockets with SMT */
        "pack:1 numa:4 core:4 pu:1",
        unequal,                       /* node 0: 12 cores, node 1: 4 */
        "pack:2 [numa] [numa] core:3 pu:1", /* two memory-only nodes */
        "pack:3 numa:1 core:5 pu:1",   /* awkward counts */
    };
    const int workers[] = {0, 1, 2, 3, 8};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        struct topo *t = load(shapes[s]);
        if (!t) continue;
        for (size_t w = 0; w < sizeof(workers) / sizeof(workers[0]); w++)
            for (int host = 0; host <= 1; host++)
                for (int smt = 0; smt <= 1; smt++) {
                    struct placement_request req = {.n_cpu_workers = workers[w], .gpu_host = host, .use_smt = smt};
                    struct placement p;
                    char err[256] = "", what[600];
                    snprintf(what, sizeof(what), "[%s] workers=%d host=%d smt=%d", shapes[s], workers[w], host, smt);
                    int rc = topo_plan(t, &req, &p, err, sizeof(err));
                    CHECK(rc == 0, "%s: topo_plan: %s", what, err);
                    if (rc == 0) check_invariants(what, t, &req, &p);
                    placement_free(&p);
                }
        topo_free(t);
    }
}

static void pus_eq(const char *what, const struct placement_role *r, const char *want) {
    char got[256];
    if (!r) {
        CHECK(0, "%s: no role", what);
        return;
    }
    topo_format_pus(r->pus, r->n_pus, got, sizeof(got));
    CHECK(strcmp(got, want) == 0, "%s: %s has PUs %s, want %s", what, r->name, got, want);
}

static void test_shapes(void) {
    char err[256];
    struct placement p;

    /* This machine's shape: 1 node, 2 cores; host GPU worker on both cores
     * (2 threads), the 2 CPU workers one core each, sharing with it. */
    struct topo *t = load("pack:1 numa:1 core:2 pu:1");
    if (t) {
        CHECK(topo_n_nodes(t) == 1 && topo_n_cores(t) == 2 && topo_n_pus(t) == 2 && topo_n_packages(t) == 1,
              "2-core counts %d %d %d %d", topo_n_nodes(t), topo_n_cores(t), topo_n_pus(t), topo_n_packages(t));
        struct placement_request req = {.n_cpu_workers = 2, .gpu_host = 1};
        CHECK(topo_plan(t, &req, &p, err, sizeof(err)) == 0, "ci plan: %s", err);
        CHECK(!p.oversubscribed, "ci: CPU workers have a core each");
        pus_eq("ci", placement_find(&p, "gpu"), "0-1");
        pus_eq("ci", placement_find(&p, "cpu0"), "0");
        pus_eq("ci", placement_find(&p, "cpu1"), "1");
        CHECK(placement_find(&p, "gpu")->n_threads == 2 && placement_find(&p, "gpu")->shared &&
                  placement_find(&p, "cpu1")->shared,
              "ci: gpu threads %d, shared flags", placement_find(&p, "gpu")->n_threads);
        placement_free(&p);
        /* 3 CPU workers on 2 cores: they share too */
        req.n_cpu_workers = 3;
        CHECK(topo_plan(t, &req, &p, err, sizeof(err)) == 0, "ci 3 plan: %s", err);
        CHECK(p.oversubscribed && strstr(p.note, "share") != NULL, "ci 3: oversubscribed, note '%s'", p.note);
        placement_free(&p);
        req.n_cpu_workers = 2;

        /* With a GPU: one CPU worker per core, the GPU thread shares core 0. */
        req.gpu_host = 0;
        CHECK(topo_plan(t, &req, &p, err, sizeof(err)) == 0, "ci gpu plan: %s", err);
        CHECK(!p.oversubscribed, "ci gpu: not oversubscribed");
        pus_eq("ci gpu", placement_find(&p, "gpu"), "0");
        pus_eq("ci gpu", placement_find(&p, "cpu0"), "0");
        pus_eq("ci gpu", placement_find(&p, "cpu1"), "1");
        CHECK(placement_find(&p, "gpu")->shared && !placement_find(&p, "cpu1")->shared, "ci gpu: shared flags");
        placement_free(&p);
        topo_free(t);
    }

    /* 2 sockets x 8 cores x 2 PUs: siblings are OS PUs 2c, 2c+1 in synthetic numbering. */
    t = load("pack:2 numa:1 core:8 pu:2");
    if (t) {
        CHECK(topo_n_packages(t) == 2 && topo_n_nodes(t) == 2 && topo_n_cores(t) == 16 && topo_n_pus(t) == 32,
              "2x8x2 counts");
        const struct topo_node *n1 = topo_node(t, 1);
        CHECK(n1 && n1->n_cores == 8 && n1->n_pus == 16 && n1->core_pu[0] == 16 && n1->core_off[1] == 2 &&
                  n1->memory > 0,
              "2x8x2 node 1 view");
        struct placement_request req = {0};
        CHECK(topo_plan(t, &req, &p, err, sizeof(err)) == 0, "2x8x2 plan: %s", err);
        pus_eq("2x8x2", placement_find(&p, "cpu0"), "0,2,4,6,8,10,12,14");
        pus_eq("2x8x2", placement_find(&p, "cpu1"), "16,18,20,22,24,26,28,30");
        pus_eq("2x8x2", placement_find(&p, "gpu"), "0");
        CHECK(placement_find(&p, "cpu1")->mem_node == 1 && placement_find(&p, "cpu1")->n_threads == 8, "2x8x2 cpu1");
        placement_free(&p);

        /* Host mode, SMT, 3 workers: node 0 = 16 PUs: gpu all 16, cpu0 all 16 (the
         * GPU worker counts as a role of node 0, so node 1 gets two workers). */
        req = (struct placement_request){.n_cpu_workers = 3, .gpu_host = 1, .use_smt = 1};
        CHECK(topo_plan(t, &req, &p, err, sizeof(err)) == 0, "2x8x2 host plan: %s", err);
        pus_eq("2x8x2 host", placement_find(&p, "gpu"), "0-15");
        pus_eq("2x8x2 host", placement_find(&p, "cpu0"), "0-15");
        pus_eq("2x8x2 host", placement_find(&p, "cpu1"), "16-23");
        pus_eq("2x8x2 host", placement_find(&p, "cpu2"), "24-31");
        placement_free(&p);
        topo_free(t);
    }

    /* Unequal nodes (12 + 4 cores), 8 workers: D'Hondt gives 6 and 2. */
    char path[512];
    snprintf(path, sizeof(path), "%s/unequal-12-4.xml", fixtures);
    t = load(path);
    if (t) {
        CHECK(topo_n_nodes(t) == 2 && topo_node(t, 0)->n_cores == 12 && topo_node(t, 1)->n_cores == 4, "unequal view");
        CHECK(strncmp(topo_source(t), "xml: ", 5) == 0 && !topo_is_this_system(t), "unequal source '%s'", topo_source(t));
        struct placement_request req = {.n_cpu_workers = 8};
        CHECK(topo_plan(t, &req, &p, err, sizeof(err)) == 0, "unequal plan: %s", err);
        int on1 = 0;
        for (int k = 0; k < 8; k++) {
            char name[16];
            snprintf(name, sizeof(name), "cpu%d", k);
            const struct placement_role *r = placement_find(&p, name);
            on1 += r && r->mem_node == 1;
        }
        CHECK(on1 == 2, "unequal: %d of 8 workers on the 4-core node, want 2", on1);
        placement_free(&p);
        topo_free(t);
    }

    /* Memory-only nodes get no worker. */
    t = load("pack:2 [numa] [numa] core:3 pu:1");
    if (t) {
        CHECK(topo_n_nodes(t) == 4 && n_usable(t) == 2, "memory-only: %d nodes, %d usable", topo_n_nodes(t), n_usable(t));
        struct placement_request req = {0};
        CHECK(topo_plan(t, &req, &p, err, sizeof(err)) == 0 && p.n_cpu_workers == 2, "memory-only plan: %s", err);
        placement_free(&p);
        topo_free(t);
    }

    /* Bad requests fail with a message. */
    t = load("pack:1 numa:1 core:2 pu:1");
    if (t) {
        struct placement_request req = {.n_cpu_workers = -1};
        err[0] = '\0';
        CHECK(topo_plan(t, &req, &p, err, sizeof(err)) != 0 && strstr(err, "--cpu-workers"), "negative workers: '%s'", err);
        placement_free(&p);
        topo_free(t);
    }
    err[0] = '\0';
    CHECK(topo_load("pack:2 bogus:3", err, sizeof(err)) == NULL && strstr(err, "synthetic"), "bad synthetic: '%s'", err);
    err[0] = '\0';
    CHECK(topo_load("/nonexistent/x.xml", err, sizeof(err)) == NULL && strstr(err, "XML"), "bad xml: '%s'", err);
}

struct bad_spec {
    const char *spec;
    const char *want; /* substring of the error */
};

static void test_pin_spec(void) {
    struct topo *t = load("pack:2 numa:1 core:8 pu:2"); /* PUs 0-31, nodes 0 (0-15) and 1 (16-31) */
    if (!t) return;
    char err[256];
    struct pin_spec s;

    CHECK(pin_spec_parse(t, "gpu=0-1;cpu0=2-7@0;cpu1=8-15,20@1;coord=31", &s, err, sizeof(err)) == 0, "good spec: %s", err);
    CHECK(s.n_items == 4, "good spec: %d items", s.n_items);
    if (s.n_items == 4) {
        CHECK(s.items[0].kind == TOPO_ROLE_GPU && s.items[0].n_pus == 2 && s.items[0].mem_node == -1, "item 0");
        CHECK(s.items[1].kind == TOPO_ROLE_CPU && s.items[1].index == 0 && s.items[1].n_pus == 6 && s.items[1].mem_node == 0, "item 1");
        CHECK(s.items[2].index == 1 && s.items[2].n_pus == 9 && s.items[2].pus[8] == 20 && s.items[2].mem_node == 1, "item 2");
        CHECK(s.items[3].kind == TOPO_ROLE_COORD && s.items[3].n_pus == 1 && s.items[3].pus[0] == 31, "item 3");
    }
    pin_spec_free(&s);
    CHECK(pin_spec_parse(t, "cpu*=node", &s, err, sizeof(err)) == 0 && s.n_items == 1 && s.items[0].per_node, "cpu*=node: %s", err);
    pin_spec_free(&s);

    const struct bad_spec bad[] = {
        {"cpu0=2-x", "--pin: 'cpu0=2-x': bad PU range at character 8"},
        {"gpu=0;cpu0=2-x", "'cpu0=2-x': bad PU range at character 14"},
        {"cpu0=1-", "bad PU range at character 8"},
        {"cpu0=", "bad PU range at character 6"},
        {"cpu0=5-3", "runs backwards at character 6"},
        {"cpu0=32", "PU 32 does not exist at character 6"},
        {"cpu0=30-40", "PU 32 does not exist"},
        {"cpu0=1,2,1", "PU 1 listed twice at character 10"},
        {"cpu0=1@7", "NUMA node 7 does not exist at character 8"},
        {"cpu0=1@", "bad NUMA node"},
        {"cpu0=1x", "unexpected 'x' at character 7"},
        {"cpu0=1 ", "unexpected ' '"},
        {"tpu=1", "unknown role 'tpu' at character 1"},
        {"gpu:1", "expected '=' after the role at character 4"},
        {"cpu=1", "expected a CPU worker number"},
        {"cpu999=1", "beyond the limit"},
        {"cpu*=1", "cpu* takes only 'node'"},
        {"gpu=0;gpu=1", "role gpu given twice at character 7"},
        {"cpu0=1;cpu0=2", "role cpu0 given twice"},
        {"cpu*=node;cpu0=1", "cannot be mixed"},
        {"gpu=0;;cpu0=1", "empty item at character 7"},
        {"gpu=0;", "empty item at character 7"},
        {"", "empty item at character 1"},
        {"cpu0=99999999", "bad PU range at character 6"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        int rc = pin_spec_parse(t, bad[i].spec, &s, err, sizeof(err));
        CHECK(rc != 0 && strstr(err, bad[i].want), "spec '%s': rc %d, error '%s', want '%s'", bad[i].spec, rc, err, bad[i].want);
        pin_spec_free(&s);
    }

    /* The spec overrides placement. */
    struct placement p;
    struct placement_request req = {.pin = "gpu=0-1;cpu0=2-7@0;cpu1=8-15,20@1"};
    CHECK(topo_plan(t, &req, &p, err, sizeof(err)) == 0, "spec plan: %s", err);
    pus_eq("spec", placement_find(&p, "gpu"), "0-1");
    pus_eq("spec", placement_find(&p, "cpu0"), "2-7");
    pus_eq("spec", placement_find(&p, "cpu1"), "8-15,20");
    CHECK(p.n_cpu_workers == 2 && placement_find(&p, "gpu")->n_threads == 2 && placement_find(&p, "cpu1")->mem_node == 1 &&
              placement_find(&p, "cpu1")->n_threads == 9 && !placement_find(&p, "cpu1")->spread,
          "spec plan roles");
    CHECK(placement_find(&p, "gpu")->mem_node == 0, "spec: gpu memory follows its PUs (node 0), got %d",
          placement_find(&p, "gpu")->mem_node);
    placement_free(&p);

    req = (struct placement_request){.pin = "cpu0=0-3;cpu1=12-19;cpu2=24"}; /* cpu1 spans nodes: memory unbound */
    CHECK(topo_plan(t, &req, &p, err, sizeof(err)) == 0 && p.n_cpu_workers == 3, "spec 3 workers: %s", err);
    CHECK(placement_find(&p, "cpu1") && placement_find(&p, "cpu1")->mem_node == -1, "spec spanning nodes: memory unbound");
    CHECK(placement_find(&p, "cpu2") && placement_find(&p, "cpu2")->mem_node == 1, "spec cpu2 memory node 1");
    pus_eq("spec auto gpu", placement_find(&p, "gpu"), "0"); /* not named: automatic */
    placement_free(&p);

    req = (struct placement_request){.pin = "coord=5"};
    CHECK(topo_plan(t, &req, &p, err, sizeof(err)) == 0, "coord spec: %s", err);
    CHECK(p.roles[0].pinned && p.roles[0].n_pus == 1 && p.roles[0].pus[0] == 5 && p.n_cpu_workers == 2, "coord spec roles");
    placement_free(&p);

    req = (struct placement_request){.pin = "cpu*=node", .n_cpu_workers = 0};
    CHECK(topo_plan(t, &req, &p, err, sizeof(err)) == 0 && p.n_cpu_workers == 2, "cpu*=node plan: %s", err);
    placement_free(&p);

    const struct {
        struct placement_request req;
        const char *want;
    } bad_plans[] = {
        {{.pin = "cpu1=3"}, "not cpu0"},
        {{.pin = "cpu0=3;cpu2=4", .n_cpu_workers = 3}, "not cpu1"},
        {{.pin = "cpu0=3;cpu3=4", .n_cpu_workers = 2}, "cpu3 but --cpu-workers is 2"},
        {{.pin = "cpu*=node", .n_cpu_workers = 3}, "one CPU worker per NUMA node (2)"},
        {{.pin = "cpu0=2-x"}, "bad PU range at character 8"},
    };
    for (size_t i = 0; i < sizeof(bad_plans) / sizeof(bad_plans[0]); i++) {
        err[0] = '\0';
        int rc = topo_plan(t, &bad_plans[i].req, &p, err, sizeof(err));
        CHECK(rc != 0 && strstr(err, bad_plans[i].want), "plan with '%s': rc %d, '%s', want '%s'", bad_plans[i].req.pin, rc,
              err, bad_plans[i].want);
        placement_free(&p);
    }

    /* Random good specs: random PU subsets written as lists round-trip. */
    for (int iter = 0; iter < 200; iter++) {
        int want[32], n = 0;
        for (int pu = 0; pu < 32; pu++)
            if (rnd64() % 3 == 0) want[n++] = pu;
        if (n == 0) want[n++] = (int)(rnd64() % 32);
        char list[256], spec[300];
        topo_format_pus(want, n, list, sizeof(list));
        snprintf(spec, sizeof(spec), "cpu%d=%s", (int)(rnd64() % 4), list);
        int rc = pin_spec_parse(t, spec, &s, err, sizeof(err));
        CHECK(rc == 0 && s.n_items == 1 && s.items[0].n_pus == n &&
                  memcmp(s.items[0].pus, want, sizeof(int) * (size_t)n) == 0,
              "random spec '%s': %s", spec, rc ? err : "wrong PUs");
        pin_spec_free(&s);
    }
    topo_free(t);
}

static void test_print(void) {
    struct topo *t = load("pack:2 numa:1 core:4 pu:2");
    if (!t) return;
    struct placement p;
    char err[256], *buf = NULL;
    size_t len = 0;
    struct placement_request req = {.n_cpu_workers = 3};
    CHECK(topo_plan(t, &req, &p, err, sizeof(err)) == 0, "print plan: %s", err);
    FILE *f = open_memstream(&buf, &len);
    if (!f) abort();
    topo_print(t, &p, f);
    fclose(f);
    CHECK(strstr(buf, "2 packages, 2 NUMA nodes, 8 cores, 16 PUs") && strstr(buf, "node 1: 1.0 GiB, 4 cores, PUs 8-15") &&
              strstr(buf, "[8-9]") && strstr(buf, "cpu2") && strstr(buf, "not pinned"),
          "topo_print output:\n%s", buf);
    free(buf);
    placement_free(&p);
    topo_free(t);
}

static int test_real_machine(void) {
    char err[256];
    unsetenv("HEARTH_TOPOLOGY");
    struct topo *t = load(NULL);
    if (!t) return 0;
    CHECK(topo_is_this_system(t) && topo_n_pus(t) >= 1 && topo_n_cores(t) >= 1 && topo_n_nodes(t) >= 1,
          "real machine counts");
    struct placement p;
    struct placement_request req = {.n_cpu_workers = 2, .gpu_host = 1};
    CHECK(topo_plan(t, &req, &p, err, sizeof(err)) == 0, "real plan: %s", err);
    topo_print(t, &p, stdout);

    /* Bind this thread to the first PU and read it back. */
    int pu0 = topo_node(t, 0)->n_pus ? topo_node(t, 0)->pus[0] : 0;
    int skipped = 0;
    hwloc_topology_t h;
    hwloc_bitmap_t saved = hwloc_bitmap_alloc(), now = hwloc_bitmap_alloc();
    if (!saved || !now || hwloc_topology_init(&h) != 0) abort();
    hwloc_topology_load(h);
    int have_saved = hwloc_get_cpubind(h, saved, HWLOC_CPUBIND_THREAD) == 0;
    int rc = topo_bind_thread(t, &pu0, 1, err, sizeof(err));
    if (rc == TOPO_ENOTSUP) {
        printf("SKIP thread binding: %s\n", err);
        skipped = 1;
    } else {
        CHECK(rc == 0, "bind to PU %d: %s", pu0, err);
        CHECK(hwloc_get_cpubind(h, now, HWLOC_CPUBIND_THREAD) == 0 && hwloc_bitmap_weight(now) == 1 &&
                  hwloc_bitmap_isset(now, (unsigned)pu0),
              "thread is not bound to PU %d alone", pu0);
        /* Every role's thread 0 can bind. */
        for (int i = 0; i < p.n_roles; i++)
            CHECK(topo_bind_role_thread(t, &p.roles[i], 0, err, sizeof(err)) == 0, "bind %s: %s", p.roles[i].name, err);
        if (have_saved) hwloc_set_cpubind(h, saved, HWLOC_CPUBIND_THREAD);
    }
    int bad = topo_n_pus(t) + 4096;
    CHECK(topo_bind_thread(t, &bad, 1, err, sizeof(err)) != 0, "binding to PU %d should fail", bad);

    /* NUMA-local memory: allocate, touch, bind again (MIGRATE), free. */
    size_t len = (1u << 20) + 123;
    int node = topo_node(t, 0)->os_index;
    unsigned char *m = topo_alloc_on_node(t, len, node);
    CHECK(m != NULL, "topo_alloc_on_node(%zu, %d) failed", len, node);
    if (m) {
        memset(m, 0x5a, len);
        rc = topo_bind_memory(t, m, len, node, err, sizeof(err));
        if (rc == TOPO_ENOTSUP) printf("SKIP memory binding: %s\n", err);
        else CHECK(rc == 0, "topo_bind_memory: %s", err);
        CHECK(m[len - 1] == 0x5a && m[0] == 0x5a, "memory lost its contents");
        topo_free_on_node(t, m, len);
    }
    err[0] = '\0';
    CHECK(topo_bind_memory(t, &len, sizeof(len), 999, err, sizeof(err)) == TOPO_ERR && strstr(err, "999"),
          "binding to node 999: '%s'", err);
    m = topo_alloc_on_node(t, 4096, -1);
    CHECK(m != NULL, "topo_alloc_on_node(-1)");
    topo_free_on_node(t, m, 4096);

    /* A synthetic topology refuses to bind this machine's threads. */
    struct topo *s = load("pack:2 numa:1 core:2 pu:1");
    if (s) {
        CHECK(topo_bind_thread(s, &pu0, 1, err, sizeof(err)) == TOPO_ENOTSUP, "synthetic bind should be ENOTSUP");
        void *q = topo_alloc_on_node(s, 100, 1);
        CHECK(q != NULL, "synthetic alloc falls back");
        topo_free_on_node(s, q, 100);
        topo_free(s);
    }
    hwloc_bitmap_free(saved), hwloc_bitmap_free(now);
    hwloc_topology_destroy(h);
    placement_free(&p);
    topo_free(t);
    return skipped;
}

static void test_env(void) {
    setenv("HEARTH_TOPOLOGY", "pack:4 numa:1 core:3 pu:1", 1);
    struct topo *t = load(NULL);
    if (t) {
        CHECK(topo_n_nodes(t) == 4 && topo_n_cores(t) == 12 && strstr(topo_source(t), "synthetic"), "HEARTH_TOPOLOGY ignored");
        topo_free(t);
    }
    unsetenv("HEARTH_TOPOLOGY");
}

int main(int argc, char **argv) {
    if (argc > 1) fixtures = argv[1];
    printf("topo_unit: seed 0x%llx, fixtures %s\n", (unsigned long long)rs, fixtures);
    test_grid();
    test_shapes();
    test_pin_spec();
    test_print();
    test_env();
    int skipped = test_real_machine();
    if (failures) {
        fprintf(stderr, "topo_unit: %d failure(s)\n", failures);
        return 1;
    }
    printf("topo_unit: ok%s\n", skipped ? " (thread binding skipped: not allowed here)" : "");
    return 0;
}
