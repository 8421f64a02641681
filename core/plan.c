/* plan: see plan.h.
 *
 * The integer program. Every layer's allowed hot counts form a chain
 *
 *     0 < c_0 < c_1 < ... < c_last = n
 *
 * where c_0 is the smallest multiple of the group size (capped at n) that
 * reaches the layer's minimum, and each later c_k adds one group (the last one
 * may be shorter). Each step of the chain is a *block*: the neurons of ranks
 * [c_{k-1}, c_k) (block 0: [0, c_0)), worth the sum of their frequencies and
 * costing their bytes. One binary per block, x[l][k] = "block k of layer l is
 * hot", with the prefix rows x[l][k+1] <= x[l][k] and one budget row. A layer
 * is then hot up to its last chosen block, and "0 or at least the minimum" is
 * built into block 0 being the first step, so no big-M row is needed and the LP
 * relaxation stays tight (the textbook form, a switch z[l] with
 * sum_k size * y[l][k] >= min_hot * z[l], is equivalent but weaker).
 *
 * GLPK solves the LP relaxation with the simplex method, then branch and cut
 * from the greedy plan as the first incumbent, so a time limit always leaves a
 * plan at least as good as the greedy one. Its terminal output is switched off
 * for the call. Byte counts below 2^53 (8 PiB) are exact in doubles; the
 * chosen plan is re-checked in int64 arithmetic, and should GLPK's feasibility
 * tolerance ever let a plan exceed the budget by a few bytes, the worst blocks
 * are dropped until it fits (and the plan is not called optimal). */
#include "plan.h"

#include <glpk.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define PLAN_BRUTE_MAX 10000000.0 /* combinations plan_brute_force will try */
#define PLAN_MAX_BLOCKS 1000000    /* binaries given to GLPK; more means a group far too small */

/* One block of one layer: ranks [lo, hi). */
struct plan_block {
    int layer;
    int64_t lo, hi;
    double value; /* sum of freq[lo..hi) */
    int64_t cost; /* (hi - lo) * neuron_bytes */
};

static int plan_validate(const struct plan_problem *p, const struct plan_result *r, char *err, size_t errlen) {
    if (!p || !r || !r->hot) {
        snprintf(err, errlen, "plan: no %s", !p ? "problem" : !r ? "result" : "result array (hot is NULL)");
        return -1;
    }
    if (p->n_layers < 1 || !p->layers) {
        snprintf(err, errlen, "plan: no layers (n_layers = %d)", p->n_layers);
        return -1;
    }
    if (p->group < 1) {
        snprintf(err, errlen, "plan: group size %lld must be at least 1", (long long)p->group);
        return -1;
    }
    if (p->min_hot < 0) {
        snprintf(err, errlen, "plan: min_hot %lld must not be negative", (long long)p->min_hot);
        return -1;
    }
    if (p->fixed < 0 || p->budget < 0) {
        snprintf(err, errlen, "plan: %s %lld bytes must not be negative", p->fixed < 0 ? "fixed size" : "budget",
                 (long long)(p->fixed < 0 ? p->fixed : p->budget));
        return -1;
    }
    if (p->budget < p->fixed) {
        snprintf(err, errlen,
                 "plan: GPU budget of %lld bytes (%.1f MiB) is smaller than the %lld bytes (%.1f MiB) always "
                 "resident (attention weights, KV cache, predictors)",
                 (long long)p->budget, (double)p->budget / 1048576.0, (long long)p->fixed,
                 (double)p->fixed / 1048576.0);
        return -1;
    }
    if (p->time_limit_ms < 0) {
        snprintf(err, errlen, "plan: time limit %d ms must not be negative", p->time_limit_ms);
        return -1;
    }
    int64_t all = p->fixed;
    for (int l = 0; l < p->n_layers; l++) {
        const struct plan_layer *L = &p->layers[l];
        if (L->n < 0) {
            snprintf(err, errlen, "plan: layer %d: neuron count %lld must not be negative", l, (long long)L->n);
            return -1;
        }
        if (L->neuron_bytes < 0) {
            snprintf(err, errlen, "plan: layer %d: neuron_bytes %lld must not be negative", l,
                     (long long)L->neuron_bytes);
            return -1;
        }
        if (L->n > 0 && !L->freq) {
            snprintf(err, errlen, "plan: layer %d: no frequencies for its %lld neurons", l, (long long)L->n);
            return -1;
        }
        int64_t bytes;
        if (__builtin_mul_overflow(L->n, L->neuron_bytes, &bytes) || __builtin_add_overflow(all, bytes, &all)) {
            snprintf(err, errlen, "plan: layer %d: %lld neurons of %lld bytes overflow a 64-bit byte count", l,
                     (long long)L->n, (long long)L->neuron_bytes);
            return -1;
        }
        for (int64_t i = 0; i < L->n; i++) {
            float f = L->freq[i];
            if (!(f >= 0.0f && f <= 1.0f)) { /* also catches NaN */
                snprintf(err, errlen, "plan: layer %d: frequency %g of neuron rank %lld is not in [0, 1]", l,
                         (double)f, (long long)i);
                return -1;
            }
            if (i > 0 && f > L->freq[i - 1]) {
                snprintf(err, errlen,
                         "plan: layer %d: frequencies are not sorted in descending order (rank %lld: %g < rank "
                         "%lld: %g)",
                         l, (long long)(i - 1), (double)L->freq[i - 1], (long long)i, (double)f);
                return -1;
            }
        }
    }
    return 0;
}

/* The smallest allowed nonzero hot count of a layer (0 for an empty layer). */
static int64_t plan_first_cut(const struct plan_problem *p, int64_t n) {
    int64_t m = p->min_hot < n ? p->min_hot : n;
    int64_t groups = m <= 0 ? 1 : (m + p->group - 1) / p->group;
    return groups >= (n + p->group - 1) / p->group ? n : groups * p->group;
}

/* The next allowed hot count after c (c > 0; n when c is already n). */
static int64_t plan_next_cut(const struct plan_problem *p, int64_t n, int64_t c) {
    return n - c > p->group ? c + p->group : n;
}

/* Blocks of a layer: one per allowed nonzero hot count. */
static int64_t plan_layer_blocks(const struct plan_problem *p, int64_t n) {
    if (n == 0) return 0;
    return 1 + (n - plan_first_cut(p, n) + p->group - 1) / p->group;
}

static double plan_sum(const float *freq, int64_t lo, int64_t hi) {
    double s = 0.0;
    for (int64_t i = lo; i < hi; i++) s += freq[i];
    return s;
}

/* Fill r's served, total and bytes from r->hot. */
static void plan_finish(const struct plan_problem *p, struct plan_result *r) {
    r->served = 0.0;
    r->total = 0.0;
    r->bytes = p->fixed;
    for (int l = 0; l < p->n_layers; l++) {
        const struct plan_layer *L = &p->layers[l];
        r->served += plan_sum(L->freq, 0, r->hot[l]);
        r->total += plan_sum(L->freq, 0, L->n);
        r->bytes += r->hot[l] * L->neuron_bytes;
    }
}

/* Every layer's blocks, layer by layer in chain order; NULL with err filled
 * when there are too many or memory runs out. */
static struct plan_block *plan_blocks(const struct plan_problem *p, int *n_blocks, char *err, size_t errlen) {
    int64_t count = 0;
    for (int l = 0; l < p->n_layers; l++) {
        count += plan_layer_blocks(p, p->layers[l].n);
        if (count > PLAN_MAX_BLOCKS) {
            snprintf(err, errlen,
                     "plan: more than %d hot-count choices (layer %d: %lld neurons in groups of %lld); use a larger "
                     "group",
                     PLAN_MAX_BLOCKS, l, (long long)p->layers[l].n, (long long)p->group);
            return NULL;
        }
    }
    struct plan_block *b = malloc((size_t)(count > 0 ? count : 1) * sizeof *b);
    if (!b) {
        snprintf(err, errlen, "plan: out of memory for %lld blocks", (long long)count);
        return NULL;
    }
    int k = 0;
    for (int l = 0; l < p->n_layers; l++) {
        const struct plan_layer *L = &p->layers[l];
        int64_t lo = 0;
        for (int64_t c = L->n > 0 ? plan_first_cut(p, L->n) : 0; c > 0;
             lo = c, c = c < L->n ? plan_next_cut(p, L->n, c) : 0) {
            b[k].layer = l;
            b[k].lo = lo;
            b[k].hi = c;
            b[k].value = plan_sum(L->freq, lo, c);
            b[k].cost = (c - lo) * L->neuron_bytes;
            k++;
        }
    }
    *n_blocks = k;
    return b;
}

/* value per byte; a free block comes first */
static double plan_density(const struct plan_block *b) {
    return b->cost > 0 ? b->value / (double)b->cost : INFINITY;
}

/* Everything fits: all neurons hot. Returns 1 when it applied. */
static int plan_all_fit(const struct plan_problem *p, struct plan_result *r) {
    int64_t all = p->fixed;
    for (int l = 0; l < p->n_layers; l++) /* no overflow: plan_validate checked this sum */
        all += p->layers[l].n * p->layers[l].neuron_bytes;
    if (all > p->budget) return 0;
    for (int l = 0; l < p->n_layers; l++) r->hot[l] = p->layers[l].n;
    plan_finish(p, r);
    r->optimal = 1;
    return 1;
}

/* The greedy plan over blocks already built; r->hot filled. */
static void plan_greedy_blocks(const struct plan_problem *p, const struct plan_block *b, int n_blocks,
                               int *next, struct plan_result *r) {
    /* next[l]: index in b of layer l's first block not yet taken, or -1 */
    for (int l = 0; l < p->n_layers; l++) {
        r->hot[l] = 0;
        next[l] = -1;
    }
    for (int k = n_blocks - 1; k >= 0; k--) next[b[k].layer] = k;
    int64_t left = p->budget - p->fixed;
    for (;;) {
        int best = -1;
        for (int l = 0; l < p->n_layers; l++) {
            int k = next[l];
            if (k < 0 || b[k].cost > left) continue;
            if (best < 0 || plan_density(&b[k]) > plan_density(&b[best])) best = k;
        }
        if (best < 0) break;
        int l = b[best].layer;
        r->hot[l] = b[best].hi;
        left -= b[best].cost;
        next[l] = best + 1 < n_blocks && b[best + 1].layer == l ? best + 1 : -1;
    }
}

int plan_greedy(const struct plan_problem *p, struct plan_result *r, char *err, size_t errlen) {
    if (plan_validate(p, r, err, errlen) < 0) return -1;
    int n_blocks;
    struct plan_block *b = plan_blocks(p, &n_blocks, err, errlen);
    if (!b) return -1;
    int *next = malloc((size_t)p->n_layers * sizeof *next);
    if (!next) {
        free(b);
        snprintf(err, errlen, "plan: out of memory for %d layers", p->n_layers);
        return -1;
    }
    plan_greedy_blocks(p, b, n_blocks, next, r);
    plan_finish(p, r);
    r->optimal = 0;
    free(b);
    free(next);
    return 0;
}

int plan_brute_force(const struct plan_problem *p, struct plan_result *r, char *err, size_t errlen) {
    if (plan_validate(p, r, err, errlen) < 0) return -1;
    double combos = 1.0;
    for (int l = 0; l < p->n_layers; l++) combos *= (double)(1 + plan_layer_blocks(p, p->layers[l].n));
    if (combos > PLAN_BRUTE_MAX) {
        snprintf(err, errlen, "plan: brute force over %.3g combinations is too many (at most %.0f)", combos,
                 PLAN_BRUTE_MAX);
        return -1;
    }
    int64_t *cur = calloc((size_t)p->n_layers, sizeof *cur);
    if (!cur) {
        snprintf(err, errlen, "plan: out of memory for %d layers", p->n_layers);
        return -1;
    }
    double best = -1.0;
    for (;;) {
        int64_t bytes = p->fixed;
        double served = 0.0;
        for (int l = 0; l < p->n_layers; l++) {
            bytes += cur[l] * p->layers[l].neuron_bytes;
            served += plan_sum(p->layers[l].freq, 0, cur[l]);
        }
        if (bytes <= p->budget && served > best) {
            best = served;
            memcpy(r->hot, cur, (size_t)p->n_layers * sizeof *cur);
        }
        /* next combination: an odometer over each layer's chain 0, c_0, ..., n */
        int l = 0;
        for (; l < p->n_layers; l++) {
            int64_t n = p->layers[l].n;
            if (cur[l] < n) {
                cur[l] = cur[l] == 0 ? plan_first_cut(p, n) : plan_next_cut(p, n, cur[l]);
                break;
            }
            cur[l] = 0;
        }
        if (l == p->n_layers) break;
    }
    free(cur);
    plan_finish(p, r);
    r->optimal = 1;
    return 0;
}

/* GLPK's branch-and-cut callback: offers the greedy plan as the first incumbent. */
struct plan_cb {
    const double *x; /* [1 + n_blocks], GLPK's 1-based column values */
    int given;
};

static void plan_glpk_cb(glp_tree *tree, void *info) {
    struct plan_cb *cb = info;
    if (glp_ios_reason(tree) == GLP_IHEUR && !cb->given) {
        cb->given = 1;
        glp_ios_heur_sol(tree, cb->x); /* rejected (nonzero) when the incumbent is already as good: fine */
    }
}

static int64_t plan_gcd(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static double plan_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static const char *plan_glpk_code(int ret) {
    switch (ret) {
    case GLP_EBOUND: return "invalid bounds";
    case GLP_EROOT: return "no optimal LP basis";
    case GLP_ENOPFS: return "no primal feasible solution";
    case GLP_ENODFS: return "no dual feasible solution";
    case GLP_EFAIL: return "solver failure";
    case GLP_ETMLIM: return "time limit exceeded";
    case GLP_ESTOP: return "stopped";
    case GLP_EITLIM: return "iteration limit exceeded";
    case GLP_ESING: return "singular basis";
    case GLP_ECOND: return "ill-conditioned basis";
    }
    return "unknown error";
}

/* Solve with GLPK; r->hot gets the plan. Returns 0, 1 when the time limit
 * expired before GLPK had any plan (r->hot untouched), or -1 with err. */
static int plan_glpk(const struct plan_problem *p, const struct plan_block *b, int n_blocks,
                     const int64_t *greedy_hot, struct plan_result *r, char *err, size_t errlen) {
    int limit_ms = p->time_limit_ms > 0 ? p->time_limit_ms : PLAN_TIME_LIMIT_MS;
    double t0 = plan_now_ms();
    /* matrix: the budget row (n_blocks entries) and one prefix row per block
     * that is not its layer's first (two entries each) */
    int n_prefix = 0;
    for (int k = 1; k < n_blocks; k++) n_prefix += b[k].layer == b[k - 1].layer;
    size_t nnz = (size_t)n_blocks + 2 * (size_t)n_prefix;
    int *ia = malloc((nnz + 1) * sizeof *ia), *ja = malloc((nnz + 1) * sizeof *ja);
    double *ar = malloc((nnz + 1) * sizeof *ar), *x0 = malloc(((size_t)n_blocks + 1) * sizeof *x0);
    if (!ia || !ja || !ar || !x0) {
        free(ia);
        free(ja);
        free(ar);
        free(x0);
        snprintf(err, errlen, "plan: out of memory for a problem of %d blocks", n_blocks);
        return -1;
    }
    x0[0] = 0.0; /* GLPK's arrays are 1-based */
    int old_term = glp_term_out(GLP_OFF);
    glp_prob *lp = glp_create_prob();
    glp_set_prob_name(lp, "hearth_plan");
    glp_set_obj_dir(lp, GLP_MAX);
    glp_add_cols(lp, n_blocks);
    for (int k = 0; k < n_blocks; k++) {
        glp_set_col_kind(lp, k + 1, GLP_BV);
        glp_set_obj_coef(lp, k + 1, b[k].value);
        x0[k + 1] = b[k].hi <= greedy_hot[b[k].layer] ? 1.0 : 0.0;
    }
    /* The budget row in units of the costs' greatest common divisor, its
     * bound rounded down: the same integer solutions, but a much tighter LP
     * relaxation. Without it, a budget a few bytes past a multiple of the
     * group cost leaves the LP a sliver no integer plan can use, and branch
     * and bound spends its time limit proving that (the classic hard knapsack
     * with even weights and an odd capacity). */
    int64_t unit = 0;
    for (int k = 0; k < n_blocks; k++) unit = plan_gcd(unit, b[k].cost);
    if (unit < 1) unit = 1;
    glp_add_rows(lp, 1 + n_prefix);
    glp_set_row_bnds(lp, 1, GLP_UP, 0.0, (double)((p->budget - p->fixed) / unit));
    size_t e = 0;
    for (int k = 0; k < n_blocks; k++) {
        e++;
        ia[e] = 1, ja[e] = k + 1, ar[e] = (double)(b[k].cost / unit);
    }
    int row = 1;
    for (int k = 1; k < n_blocks; k++) {
        if (b[k].layer != b[k - 1].layer) continue;
        row++;
        glp_set_row_bnds(lp, row, GLP_UP, 0.0, 0.0); /* x[k] - x[k-1] <= 0 */
        e++;
        ia[e] = row, ja[e] = k + 1, ar[e] = 1.0;
        e++;
        ia[e] = row, ja[e] = k, ar[e] = -1.0;
    }
    glp_load_matrix(lp, (int)nnz, ia, ja, ar);
    free(ia);
    free(ja);
    free(ar);

    int rc = -1;
    glp_smcp smcp;
    glp_init_smcp(&smcp);
    smcp.msg_lev = GLP_MSG_OFF;
    smcp.tm_lim = limit_ms;
    int ret = glp_simplex(lp, &smcp);
    if (ret == GLP_ETMLIM) {
        rc = 1;
        goto out;
    }
    if (ret != 0 || glp_get_status(lp) != GLP_OPT) {
        snprintf(err, errlen, "plan: GLPK could not solve the LP relaxation of %d blocks (glp_simplex: %s, status %d)",
                 n_blocks, ret ? plan_glpk_code(ret) : "ok", glp_get_status(lp));
        goto out;
    }
    struct plan_cb cb = {x0, 0};
    glp_iocp iocp;
    glp_init_iocp(&iocp);
    iocp.msg_lev = GLP_MSG_OFF;
    iocp.cb_func = plan_glpk_cb;
    iocp.cb_info = &cb;
    iocp.mip_gap = 0.0;
    iocp.br_tech = GLP_BR_PCH; /* pseudocosts: measured a little faster here than GLPK's default */
    int left_ms = limit_ms - (int)(plan_now_ms() - t0);
    iocp.tm_lim = left_ms > 1 ? left_ms : 1;
    ret = glp_intopt(lp, &iocp);
    int status = glp_mip_status(lp);
    if (ret != 0 && ret != GLP_ETMLIM) {
        snprintf(err, errlen, "plan: GLPK branch and cut failed on %d blocks (glp_intopt: %s)", n_blocks,
                 plan_glpk_code(ret));
        goto out;
    }
    if (ret == GLP_ETMLIM && status != GLP_OPT && status != GLP_FEAS) {
        rc = 1;
        goto out;
    }
    if (status != GLP_OPT && status != GLP_FEAS) {
        snprintf(err, errlen, "plan: GLPK found no plan within %d ms (glp_intopt: %s, MIP status %d)", limit_ms,
                 ret ? plan_glpk_code(ret) : "ok", status);
        goto out;
    }
    r->optimal = ret == 0 && status == GLP_OPT;
    if (!r->optimal)
        log_warn("plan: GLPK stopped after %d ms with a plan not proven optimal (within %.3g%% of the LP bound)",
                 limit_ms,
                 100.0 * (glp_get_obj_val(lp) - glp_mip_obj_val(lp)) / (fabs(glp_mip_obj_val(lp)) + 1e-300));
    /* a layer is hot up to the end of its prefix of chosen blocks */
    for (int l = 0; l < p->n_layers; l++) r->hot[l] = 0;
    for (int k = 0; k < n_blocks; k++) {
        int l = b[k].layer;
        if (glp_mip_col_val(lp, k + 1) > 0.5 && r->hot[l] == b[k].lo) r->hot[l] = b[k].hi;
    }
    rc = 0;
out:
    glp_delete_prob(lp);
    glp_term_out(old_term);
    free(x0);
    return rc;
}

/* Drop the blocks worth least per byte until the plan fits (see the top of the file). */
static void plan_repair(const struct plan_problem *p, const struct plan_block *b, int n_blocks,
                        struct plan_result *r) {
    int64_t bytes = p->fixed;
    for (int l = 0; l < p->n_layers; l++) bytes += r->hot[l] * p->layers[l].neuron_bytes;
    while (bytes > p->budget) {
        int worst = -1;
        for (int k = 0; k < n_blocks; k++)
            if (b[k].hi == r->hot[b[k].layer] && b[k].cost > 0 &&
                (worst < 0 || plan_density(&b[k]) < plan_density(&b[worst])))
                worst = k;
        if (worst < 0) break; /* cannot happen: bytes > budget >= fixed means a hot block costs something */
        r->hot[b[worst].layer] = b[worst].lo;
        bytes -= b[worst].cost;
        r->optimal = 0;
    }
}

int plan_solve(const struct plan_problem *p, struct plan_result *r, char *err, size_t errlen) {
    if (plan_validate(p, r, err, errlen) < 0) return -1;
    if (plan_all_fit(p, r)) return 0;
    int n_blocks;
    struct plan_block *b = plan_blocks(p, &n_blocks, err, errlen);
    if (!b) return -1;
    int *next = malloc((size_t)p->n_layers * sizeof *next);
    int64_t *greedy = malloc((size_t)p->n_layers * sizeof *greedy);
    if (!next || !greedy) {
        free(b);
        free(next);
        free(greedy);
        snprintf(err, errlen, "plan: out of memory for %d layers", p->n_layers);
        return -1;
    }
    struct plan_result g = {.hot = greedy};
    plan_greedy_blocks(p, b, n_blocks, next, &g);
    int rc = plan_glpk(p, b, n_blocks, greedy, r, err, errlen);
    if (rc == 1) {
        log_warn("plan: GLPK found no plan within %d ms; using the greedy one",
                 p->time_limit_ms > 0 ? p->time_limit_ms : PLAN_TIME_LIMIT_MS);
        memcpy(r->hot, greedy, (size_t)p->n_layers * sizeof *greedy);
        plan_finish(p, r);
        r->optimal = 0;
        rc = 0;
    } else if (rc == 0) {
        plan_repair(p, b, n_blocks, r);
        plan_finish(p, r);
        plan_finish(p, &g);
        /* better only after a repair or a time limit (beyond rounding: two
         * plans of equal value can sum their frequencies in different orders) */
        if (g.served > r->served + 1e-9 * (1.0 + r->served)) {
            memcpy(r->hot, greedy, (size_t)p->n_layers * sizeof *greedy);
            plan_finish(p, r);
            r->optimal = 0;
        }
    }
    free(b);
    free(next);
    free(greedy);
    return rc;
}
