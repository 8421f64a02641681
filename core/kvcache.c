/* kvcache: see kvcache.h. */
#include "kvcache.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp16.h"
#include "vec.h"

void kv_config_default(struct kv_config *c) {
    memset(c, 0, sizeof *c);
    c->n_sinks = -1;
    c->n_recent = -1;
    c->type = KV_F32;
    c->decay = 1.0f;
}

const char *kv_type_name(enum kv_type t) {
    switch (t) {
    case KV_F32: return "f32";
    case KV_F16: return "f16";
    case KV_Q8: return "q8";
    }
    return "?";
}

int kv_type_parse(const char *s, enum kv_type *t) {
    if (!strcmp(s, "f32")) *t = KV_F32;
    else if (!strcmp(s, "f16")) *t = KV_F16;
    else if (!strcmp(s, "q8")) *t = KV_Q8;
    else return -1;
    return 0;
}

const char *kv_cold_name(enum kv_cold c) {
    switch (c) {
    case KV_COLD_OFF: return "off";
    case KV_COLD_Q8: return "q8";
    case KV_COLD_Q4: return "q4";
    case KV_COLD_F32: return "f32";
    }
    return "?";
}

int kv_cold_parse(const char *s, enum kv_cold *c) {
    if (!strcmp(s, "off")) *c = KV_COLD_OFF;
    else if (!strcmp(s, "q8")) *c = KV_COLD_Q8;
    else if (!strcmp(s, "q4")) *c = KV_COLD_Q4;
    else if (!strcmp(s, "f32")) *c = KV_COLD_F32;
    else return -1;
    return 0;
}

int kv_config_resolve(struct kv_config *c, int n_ctx, char *err, size_t errlen) {
    if (c->budget < 0 || c->budget_frac < 0.0f || c->budget_frac > 1.0f) {
        snprintf(err, errlen, "kv budget %d / fraction %g: must be >= 0 tokens or a fraction in (0, 1]", c->budget,
                 (double)c->budget_frac);
        return -1;
    }
    if (!(c->decay > 0.0f && c->decay <= 1.0f)) {
        snprintf(err, errlen, "kv decay %g: must be in (0, 1] (1: the plain sum)", (double)c->decay);
        return -1;
    }
    if (c->decay < 1.0f && c->score_mean) {
        snprintf(err, errlen, "kv decay %g discounts the summed score; it does not apply to --kv-score mean",
                 (double)c->decay);
        return -1;
    }
    if (c->recall < 0 || c->cold_max < 0 || c->cands < 0) {
        snprintf(err, errlen, "kv recall %d / candidates %d / cold store bound %lld: must be >= 0", c->recall, c->cands,
                 (long long)c->cold_max);
        return -1;
    }
    if (c->cold != KV_COLD_OFF && c->window) {
        snprintf(err, errlen, "--kv-cold keeps what the heavy-hitter cache evicts; not with --kv-window");
        return -1;
    }
    /* the default recall: a tenth of the context, in whole pages */
    if (c->cold != KV_COLD_OFF && c->recall == 0) c->recall = (n_ctx / 10 + KV_PAGE - 1) / KV_PAGE * KV_PAGE;
    /* candidates: at most every page of the context (more would only be scratch) */
    if (c->cands == 0) c->cands = KV_RECALL_CANDS;
    if (c->recall > 0 && (int64_t)c->cands * c->recall > (int64_t)n_ctx + KV_PAGE)
        c->cands = (n_ctx + KV_PAGE + c->recall - 1) / c->recall;
    if (c->budget == 0 && c->budget_frac > 0.0f) c->budget = (int)lrintf(c->budget_frac * (float)n_ctx);
    if (c->budget == 0 && (c->type != KV_F32 || c->window)) c->budget = n_ctx; /* compression only */
    if (c->budget > n_ctx) c->budget = n_ctx;
    if (c->budget == 0) return 0; /* dense */
    if (c->n_sinks < 0) c->n_sinks = c->budget >= 8 ? 4 : 0;
    if (c->window) c->n_recent = c->budget - c->n_sinks;
    else if (c->n_recent < 0) c->n_recent = (c->budget - c->n_sinks) / 2;
    if (c->budget < 1 || c->n_sinks + c->n_recent > c->budget || c->n_recent < 0) {
        snprintf(err, errlen, "kv budget of %d tokens cannot hold %d sinks + %d recent tokens", c->budget,
                 c->n_sinks, c->n_recent);
        return -1;
    }
    return 0;
}

int kv_config_active(const struct kv_config *c, int n_ctx) {
    return c->budget > 0 && (c->budget < n_ctx || c->type != KV_F32 || c->window);
}

/* f16 -> f32 for every half: this file is built without F16C, and the
 * scalar conversion per element would dominate attention over f16 rows. */
static float f16_table[1 << 16];
static pthread_once_t f16_once = PTHREAD_ONCE_INIT;
static void f16_table_init(void) {
    for (uint32_t h = 0; h < (1u << 16); h++) f16_table[h] = fp16_to_f32_scalar((uint16_t)h);
}

static size_t type_esize(enum kv_type t) { return t == KV_F32 ? 4 : t == KV_F16 ? 2 : 1; }

/* The candidate pages of one recall (at least one). */
static int recall_max_pages(const struct kvcache *kv) {
    const int p = (int)((int64_t)kv->cands * kv->recall / KV_PAGE);
    return p > 0 ? p : 1;
}

/* attention's scratch per thread: att_run(kv) rows (the query heads of a
 * run) of att_stride(kv) weights (a list entry each; at least two rows of
 * head_dim floats, eviction's scratch) */
static size_t att_run(const struct kvcache *kv) {
    const int group = kv->n_heads / kv->n_kv_heads;
    return (size_t)(group < VEC_RUN ? group : VEC_RUN);
}

static size_t att_stride(const struct kvcache *kv) {
    const size_t per_head = (size_t)kv->n_slots + (size_t)kv->recall;
    return per_head > 2 * (size_t)kv->head_dim ? per_head : 2 * (size_t)kv->head_dim;
}

int kvcache_create(struct kvcache *kv, const struct kv_config *cfg, int n_layers, int n_heads, int n_kv_heads,
                   int head_dim, int max_batch, int n_threads, char *err, size_t errlen) {
    memset(kv, 0, sizeof *kv);
    if (cfg->budget < 1 || max_batch < 1 || n_threads < 1 || n_layers < 1 || n_kv_heads < 1 || head_dim < 1 ||
        n_heads % n_kv_heads != 0 || cfg->n_sinks < 0 || cfg->n_recent < 0 ||
        cfg->n_sinks + cfg->n_recent > cfg->budget || !(cfg->decay > 0.0f && cfg->decay <= 1.0f)) {
        snprintf(err, errlen,
                 "kvcache: budget %d (sinks %d, recent %d), batch %d, threads %d, %d layers, %d/%d heads of %d: "
                 "invalid (resolve the config first)",
                 cfg->budget, cfg->n_sinks, cfg->n_recent, max_batch, n_threads, n_layers, n_heads, n_kv_heads,
                 head_dim);
        return -1;
    }
    kv->n_layers = n_layers;
    kv->n_heads = n_heads;
    kv->n_kv_heads = n_kv_heads;
    kv->head_dim = head_dim;
    kv->budget = cfg->budget;
    kv->max_batch = max_batch;
    kv->n_slots = cfg->budget + (max_batch < KV_CALL_TOKENS ? max_batch : KV_CALL_TOKENS);
    kv->n_sinks = cfg->n_sinks;
    kv->n_recent = cfg->n_recent;
    kv->window = cfg->window;
    kv->score_mean = cfg->score_mean;
    kv->decay = cfg->decay;
    kv->type = cfg->type;
    kv->esize = type_esize(cfg->type);
    kv->n_threads = n_threads;
    const size_t heads = (size_t)n_layers * n_kv_heads, slots = heads * kv->n_slots;
    kv->keys = malloc(slots * head_dim * kv->esize);
    kv->values = malloc(slots * head_dim * kv->esize);
    if (cfg->type == KV_Q8) {
        kv->kscale = malloc(slots * sizeof(float));
        kv->vscale = malloc(slots * sizeof(float));
    }
    kv->pos = malloc(slots * sizeof(int32_t));
    kv->score = malloc(slots * sizeof(double));
    kv->n_used = calloc(heads, sizeof(int));
    kv->colsum = malloc((size_t)n_heads * kv->n_slots * sizeof(double));
    kv->row_weight = malloc((size_t)max_batch * sizeof(double));
    kv->ord = malloc(slots * sizeof *kv->ord);
    kv->cold = cfg->cold;
    kv->recall = cfg->cold != KV_COLD_OFF ? cfg->recall : 0;
    kv->cands = cfg->cands > 0 ? cfg->cands : KV_RECALL_CANDS;
    kv->cold_head_max = cfg->cold_max > 0 ? (size_t)cfg->cold_max / heads : 0;
    const size_t per_head = (size_t)kv->n_slots + (size_t)kv->recall;
    if (kv->cold != KV_COLD_OFF) {
        kv->cheads = calloc(heads, sizeof *kv->cheads);
        for (size_t h = 0; kv->cheads && h < heads; h++) kv->cheads[h].max_pos = -1;
        /* candidates: whole pages, and a copy for the selection */
        const size_t cands = (size_t)recall_max_pages(kv) * KV_PAGE;
        kv->rk = malloc((size_t)n_kv_heads * kv->recall * head_dim * sizeof(float) + 1);
        kv->rv = malloc((size_t)n_kv_heads * kv->recall * head_dim * sizeof(float) + 1);
        kv->cand = malloc((size_t)n_kv_heads * 2 * cands * sizeof *kv->cand + 1);
        const size_t nq = (size_t)KV_RECALL_ROWS * (n_heads / n_kv_heads);
        kv->rq = malloc((size_t)n_kv_heads * nq * head_dim * sizeof *kv->rq);
        kv->rdots = malloc((size_t)n_kv_heads * nq * sizeof *kv->rdots);
        kv->n_recall = calloc((size_t)n_kv_heads, sizeof *kv->n_recall);
    }
    kv->list = malloc((size_t)n_kv_heads * per_head * sizeof *kv->list);
    kv->n_list = calloc((size_t)n_kv_heads, sizeof *kv->n_list);
    free(kv->att); /* per thread: a weight per list entry and query head of a run; also scratch (cold_add) */
    kv->att = malloc((size_t)n_threads * att_run(kv) * att_stride(kv) * sizeof(float));
    if (!kv->ord || !kv->list || !kv->n_list || !kv->att ||
        (kv->cold != KV_COLD_OFF && (!kv->cheads || !kv->rk || !kv->rv || !kv->cand || !kv->rq || !kv->rdots || !kv->n_recall))) {
        snprintf(err, errlen, "out of memory for a KV cache's cold store");
        kvcache_destroy(kv);
        return -1;
    }
    if (cfg->type != KV_F32) { /* one layer's rows as f32: [2][n_kv_heads][n_slots][head_dim] */
        kv->deq = malloc(2 * (size_t)n_kv_heads * kv->n_slots * head_dim * sizeof(float));
        pthread_once(&f16_once, f16_table_init);
    }
    if (!kv->keys || !kv->values || (cfg->type == KV_Q8 && (!kv->kscale || !kv->vscale)) || !kv->pos ||
        !kv->score || !kv->n_used || !kv->att || !kv->colsum || !kv->row_weight || (cfg->type != KV_F32 && !kv->deq)) {
        snprintf(err, errlen, "out of memory for a KV cache of %d slots x %zu heads (%.1f MiB)", kv->n_slots, heads,
                 2.0 * (double)(slots * head_dim * kv->esize) / (1 << 20));
        kvcache_destroy(kv);
        return -1;
    }
    return 0;
}

extern void kvcache_destroy(struct kvcache *kv) {

    free(kv->keys);
    free(kv->values);
    free(kv->kscale);
    free(kv->vscale);
    free(kv->pos);
    free(kv->score);
    free(kv->n_used);
    free(kv->att);
    free(kv->colsum);
    free(kv->row_weight);
    free(kv->deq);
    free(kv->ord);
    for (size_t h = 0; kv->cheads && h < (size_t)kv->n_layers * kv->n_kv_heads; h++) {
        for (int i = 0; i < kv->cheads[h].n_pages; i++) free(kv->cheads[h].pages[i]); /* NULL: an empty range */
        free(kv->cheads[h].pages);
    }
    free(kv->cheads);
    free(kv->rk);
    free(kv->cand);
    free(kv->rq);
    free(kv->rdots);
    free(kv->n_recall);
    free(kv->rv);
    free(kv->list);
    free(kv->n_list);
    free(kv->rank);
    free(kv->page_cand);
    memset(kv, 0, sizeof *kv);
}

size_t kv_config_bytes(const struct kv_config *c, int n_layers, int n_kv_heads, int head_dim, int max_batch) {
    const int call = max_batch < KV_CALL_TOKENS ? max_batch : KV_CALL_TOKENS;
    const size_t slots = (size_t)n_layers * n_kv_heads * (size_t)(c->budget + call);
    /* rows, and per slot its position, score and place in the position order */
    size_t b = 2 * slots * head_dim * type_esize(c->type) + slots * (2 * sizeof(int32_t) + sizeof(double));
    if (c->type == KV_Q8) b += 2 * slots * sizeof(float);
    return b;
}

size_t kvcache_bytes(const struct kvcache *kv) {
    struct kv_config c = {.budget = kv->budget, .type = kv->type};
    return kv_config_bytes(&c, kv->n_layers, kv->n_kv_heads, kv->head_dim, kv->max_batch);
}

size_t kvcache_cold_bytes(const struct kvcache *kv) { return kv->cold_bytes; }
size_t kvcache_cold_peak_bytes(const struct kvcache *kv) { return kv->cold_peak_bytes; }

/* index of the first slot of (layer, kv head) */
static size_t head_base(const struct kvcache *kv, int layer, int kvh) {
    return ((size_t)layer * kv->n_kv_heads + kvh) * kv->n_slots;
}

/* Stores x[head_dim] into element row `row` (a global slot index) of data/scale. */
static void store_row(const struct kvcache *kv, void *data, float *scale, size_t row, const float *x) {
    const int hd = kv->head_dim;
    switch (kv->type) {
    case KV_F32: memcpy((float *)data + row * hd, x, (size_t)hd * sizeof(float)); break;
    case KV_F16: {
        uint16_t *o = (uint16_t *)data + row * hd;
        for (int i = 0; i < hd; i++) o[i] = fp16_from_f32(x[i]);
        break;
    }
    case KV_Q8: {
        int8_t *o = (int8_t *)data + row * hd;
        float amax = 0.0f;
        for (int i = 0; i < hd; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
        const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        for (int i = 0; i < hd; i++) o[i] = (int8_t)lrintf(x[i] * id);
        scale[row] = d;
        break;
    }
    }
}

/* The f32 row of a global slot: in place for f32, else dequantized into buf. */
static const float *load_row(const struct kvcache *kv, const void *data, const float *scale, size_t row,
                             float *buf) {
    const int hd = kv->head_dim;
    switch (kv->type) {
    case KV_F32: return (const float *)data + row * hd;
    case KV_F16: {
        const uint16_t *in = (const uint16_t *)data + row * hd;
        for (int i = 0; i < hd; i++) buf[i] = f16_table[in[i]];
        return buf;
    }
    case KV_Q8: {
        const int8_t *in = (const int8_t *)data + row * hd;
        const float d = scale[row];
        for (int i = 0; i < hd; i++) buf[i] = (float)in[i] * d;
        return buf;
    }
    }
    return buf;
}

static void move_slot(struct kvcache *kv, size_t dst, size_t src) {
    const size_t row = (size_t)kv->head_dim * kv->esize;
    memcpy((char *)kv->keys + dst * row, (char *)kv->keys + src * row, row);
    memcpy((char *)kv->values + dst * row, (char *)kv->values + src * row, row);
    if (kv->kscale) {
        kv->kscale[dst] = kv->kscale[src];
        kv->vscale[dst] = kv->vscale[src];
    }
    kv->pos[dst] = kv->pos[src];
    kv->score[dst] = kv->score[src];
}

/* Removes the slots of one head whose position was set to -1, refilling
 * each hole with the last live slot; ord (the slots in position order)
 * loses the removed ones and follows the moved ones. */
static void compact(struct kvcache *kv, int layer, int kvh) {
    const size_t base = head_base(kv, layer, kvh);
    int *nu = &kv->n_used[(size_t)layer * kv->n_kv_heads + kvh];
    int32_t *ord = kv->ord + base;
    int w = 0;
    for (int i = 0; i < *nu; i++)
        if (kv->pos[base + ord[i]] >= 0) ord[w++] = ord[i];
    for (int i = 0; i < *nu;) {
        if (kv->pos[base + i] >= 0) {
            i++;
            continue;
        }
        if (i != *nu - 1) {
            move_slot(kv, base + i, base + *nu - 1);
            for (int j = 0; j < w; j++)
                if (ord[j] == *nu - 1) {
                    ord[j] = i;
                    break;
                }
        }
        (*nu)--;
    }
}

/* ---- the cold store ---- */

static size_t cold_esize_bytes(enum kv_cold c, int hd) { /* bytes of one stored row */
    return c == KV_COLD_F32 ? (size_t)hd * 4 : c == KV_COLD_Q8 ? (size_t)hd : (size_t)(hd + 1) / 2;
}

static size_t page_bytes(const struct kvcache *kv) {
    return sizeof(struct kv_page) + 2 * (size_t)kv->head_dim * sizeof(float) +
           2 * (size_t)KV_PAGE * cold_esize_bytes(kv->cold, kv->head_dim);
}

/* Row i of a page's keys or values into out[head_dim] (f32). */
static void cold_row(const struct kvcache *kv, const struct kv_page *pg, int which, int i, float *out) {
    const int hd = kv->head_dim;
    const size_t rb = cold_esize_bytes(kv->cold, hd);
    const uint8_t *r = (const uint8_t *)(which ? pg->v : pg->k) + (size_t)i * rb;
    const float d = which ? pg->vscale[i] : pg->kscale[i];
    switch (kv->cold) {
    case KV_COLD_F32: memcpy(out, r, (size_t)hd * sizeof(float)); break;
    case KV_COLD_Q8: vec_i8_to_f32(out, (const int8_t *)r, d, hd); break;
    case KV_COLD_Q4: vec_q4_to_f32(out, r, d, hd); break;
    case KV_COLD_OFF: break;
    }
}

static float best_of(const float *x, int n) {
    float b = -INFINITY;
    for (int j = 0; j < n; j++) b = x[j] > b ? x[j] : b;
    return b;
}

float kvcache_cold_score(const struct kvcache *kv, const struct kv_page *pg, int i, const float *q, int nq,
                         float *dots) {
    const int hd = kv->head_dim;
    const uint8_t *r = (const uint8_t *)pg->k + (size_t)i * cold_esize_bytes(kv->cold, hd);
    switch (kv->cold) {
    case KV_COLD_Q8: vec_dots_f32_i8(q, nq, (const int8_t *)r, hd, dots); break;
    case KV_COLD_Q4: vec_dots_f32_q4(q, nq, r, hd, dots); break;
    default:
        for (int j = 0; j < nq; j++) dots[j] = vec_dot_f32(q + (size_t)j * hd, (const float *)r, hd);
        return best_of(dots, nq);
    }
    /* the scale is > 0 or the row all 0: the best dot scaled is the best scaled dot */
    return best_of(dots, nq) * pg->kscale[i];
}

void kvcache_cold_read(const struct kvcache *kv, const struct kv_page *pg, int i, float *key, float *value) {
    cold_row(kv, pg, 0, i, key);
    cold_row(kv, pg, 1, i, value);
}

/* Stores x[head_dim] as row i of a page's keys or values; the stored value
 * is what cold_row gives back. */
static void cold_store(const struct kvcache *kv, struct kv_page *pg, int which, int i, const float *x) {
    const int hd = kv->head_dim;
    const size_t rb = cold_esize_bytes(kv->cold, hd);
    uint8_t *r = (uint8_t *)(which ? pg->v : pg->k) + (size_t)i * rb;
    float amax = 0.0f;
    for (int c = 0; c < hd; c++) amax = fabsf(x[c]) > amax ? fabsf(x[c]) : amax;
    float d = 0.0f;
    switch (kv->cold) {
    case KV_COLD_F32: memcpy(r, x, (size_t)hd * sizeof(float)); break;
    case KV_COLD_Q8: {
        d = amax / 127.0f;
        const float id = d > 0.0f ? 1.0f / d : 0.0f;
        for (int c = 0; c < hd; c++) r[c] = (uint8_t)(int8_t)lrintf(x[c] * id);
        break;
    }
    case KV_COLD_Q4: { /* symmetric: -8..7 times amax / 7 (the -8 unused but for rounding) */
        d = amax / 7.0f;
        const float id = d > 0.0f ? 1.0f / d : 0.0f;
        memset(r, 0, rb);
        for (int c = 0; c < hd; c++) {
            long q = lrintf(x[c] * id);
            q = q < -8 ? -8 : q > 7 ? 7 : q;
            r[c / 2] |= (uint8_t)((q + 8) << (4 * (c & 1)));
        }
        break;
    }
    case KV_COLD_OFF: break;
    }
    if (which) pg->vscale[i] = d;
    else pg->kscale[i] = d;
}

static void cold_drop_page(struct kvcache *kv, struct kv_cold_head *ch, int r) {
    free(ch->pages[r]);
    ch->pages[r] = NULL;
    ch->bytes -= page_bytes(kv);
    kv->cold_bytes -= page_bytes(kv);
    kv->cold_dropped++;
}

/* Keeps slot `slot` (global index, still live) of (layer, kvh) in the cold
 * store: in the page of its 16 positions (Quest's pages: neighbours share
 * a summary), made when the first of them goes cold. */
static int cold_add(struct kvcache *kv, int layer, int kvh, size_t slot, char *err, size_t errlen) {
    const int hd = kv->head_dim;
    struct kv_cold_head *ch = &kv->cheads[(size_t)layer * kv->n_kv_heads + kvh];
    const int32_t pos = kv->pos[slot];
    const int r = pos / KV_PAGE;
    if (r >= ch->cap) {
        int cap = ch->cap ? 2 * ch->cap : 64;
        while (cap <= r) cap *= 2;
        struct kv_page **g = realloc(ch->pages, (size_t)cap * sizeof *g);
        if (!g) goto oom;
        memset(g + ch->cap, 0, (size_t)(cap - ch->cap) * sizeof *g);
        ch->pages = g;
        ch->cap = cap;
    }
    if (r >= ch->n_pages) ch->n_pages = r + 1;
    struct kv_page *pg = ch->pages[r];
    if (!pg) {
        pg = calloc(1, page_bytes(kv));
        if (!pg) goto oom;
        pg->kmin = (float *)(pg + 1);
        pg->kmax = pg->kmin + hd;
        pg->k = pg->kmax + hd;
        pg->v = (uint8_t *)pg->k + (size_t)KV_PAGE * cold_esize_bytes(kv->cold, hd);
        for (int c = 0; c < hd; c++) pg->kmin[c] = INFINITY, pg->kmax[c] = -INFINITY;
        ch->pages[r] = pg;
        ch->bytes += page_bytes(kv);
        kv->cold_bytes += page_bytes(kv);
        /* the bound: drop the coldest other page */
        while (kv->cold_head_max && ch->bytes > kv->cold_head_max) {
            int worst = -1;
            for (int i = 0; i < ch->n_pages; i++)
                if (i != r && ch->pages[i] && (worst < 0 || ch->pages[i]->score < ch->pages[worst]->score)) worst = i;
            if (worst < 0) break;
            cold_drop_page(kv, ch, worst);
        }
        if (kv->cold_bytes > kv->cold_peak_bytes) kv->cold_peak_bytes = kv->cold_bytes;
    }
    const int i = pg->n < KV_PAGE ? pg->n++ : -1; /* rewinds leave no dead entries */
    if (i < 0) {
        snprintf(err, errlen, "kvcache: position %d is already cold (layer %d head %d)", pos, layer, kvh);
        return -1;
    }
    float *buf = kv->att; /* scratch: eviction runs outside attention */
    pg->pos[i] = pos;
    if (pos > ch->max_pos) ch->max_pos = pos;
    pg->tscore[i] = kv->score[slot];
    pg->score += kv->score[slot];
    cold_store(kv, pg, 0, i, load_row(kv, kv->keys, kv->kscale, slot, buf));
    cold_store(kv, pg, 1, i, load_row(kv, kv->values, kv->vscale, slot, buf));
    cold_row(kv, pg, 0, i, buf); /* the summary covers the keys as stored */
    for (int c = 0; c < hd; c++) {
        if (buf[c] < pg->kmin[c]) pg->kmin[c] = buf[c];
        if (buf[c] > pg->kmax[c]) pg->kmax[c] = buf[c];
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory for the cold KV store (%.1f MiB held; bound it with --kv-cold-max)",
             (double)kv->cold_bytes / (1 << 20));
    return -1;
}

/* A rewind: cold tokens at or after pos are dropped, and each page they
 * leave is what it would be had they never gone cold (its summary and
 * score recomputed from the tokens it keeps; freed when it keeps none), so
 * a slot rewound to 0 is a fresh cache. */
static void cold_truncate(struct kvcache *kv, int layer, int kvh, int pos) {
    struct kv_cold_head *ch = &kv->cheads[(size_t)layer * kv->n_kv_heads + kvh];
    if (pos > ch->max_pos) return;
    const int hd = kv->head_dim;
    const size_t rb = cold_esize_bytes(kv->cold, hd);
    float *buf = kv->att; /* scratch: no attention is running */
    for (int p = pos / KV_PAGE; p < ch->n_pages; p++) {
        struct kv_page *pg = ch->pages[p];
        if (!pg) continue;
        int w = 0;
        for (int i = 0; i < pg->n; i++) {
            if (pg->pos[i] < 0 || pg->pos[i] >= pos) continue;
            if (w != i) {
                memcpy((uint8_t *)pg->k + (size_t)w * rb, (uint8_t *)pg->k + (size_t)i * rb, rb);
                memcpy((uint8_t *)pg->v + (size_t)w * rb, (uint8_t *)pg->v + (size_t)i * rb, rb);
                pg->kscale[w] = pg->kscale[i], pg->vscale[w] = pg->vscale[i];
                pg->pos[w] = pg->pos[i], pg->tscore[w] = pg->tscore[i];
            }
            w++;
        }
        if (w == pg->n) continue;
        pg->n = w;
        if (w == 0) {
            free(pg);
            ch->pages[p] = NULL;
            ch->bytes -= page_bytes(kv);
            kv->cold_bytes -= page_bytes(kv);
            continue;
        }
        pg->score = 0.0;
        for (int c = 0; c < hd; c++) pg->kmin[c] = INFINITY, pg->kmax[c] = -INFINITY;
        for (int i = 0; i < w; i++) {
            pg->score += pg->tscore[i];
            cold_row(kv, pg, 0, i, buf);
            for (int c = 0; c < hd; c++) {
                if (buf[c] < pg->kmin[c]) pg->kmin[c] = buf[c];
                if (buf[c] > pg->kmax[c]) pg->kmax[c] = buf[c];
            }
        }
    }
    while (ch->n_pages > 0 && !ch->pages[ch->n_pages - 1]) ch->n_pages--;
    ch->max_pos = pos - 1;
}

float kvcache_page_bound(const struct kvcache *kv, const struct kv_page *pg, const float *q) {
    return vec_bound_f32(q, 1, pg->kmin, pg->kmax, kv->head_dim);
}

int kvcache_cold_pages(const struct kvcache *kv, int layer, int kvh, const struct kv_page *const **pages) {
    if (!kv->cheads) {
        *pages = NULL;
        return 0;
    }
    const struct kv_cold_head *ch = &kv->cheads[(size_t)layer * kv->n_kv_heads + kvh];
    *pages = (const struct kv_page *const *)ch->pages;
    return ch->n_pages;
}

void kvcache_truncate(struct kvcache *kv, int pos) {
    for (int l = 0; l < kv->n_layers; l++)
        for (int h = 0; h < kv->n_kv_heads; h++) {
            const size_t base = head_base(kv, l, h);
            const int nu = kv->n_used[(size_t)l * kv->n_kv_heads + h];
            int any = 0;
            for (int i = 0; i < nu; i++)
                if (kv->pos[base + i] >= pos) kv->pos[base + i] = -1, any = 1;
            if (any) compact(kv, l, h);
            if (kv->cheads) cold_truncate(kv, l, h, pos);
        }
}

/* Eviction order: by score (or by position in window mode), lightest first;
 * equal scores: the older position first. */
struct cand {
    double key;
    int32_t pos;
    int slot;
};

static int cand_cmp(const void *a, const void *b) {
    const struct cand *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* What eviction ranks a slot by (smallest goes first): its position in
 * window mode, else its accumulated score, or that score per query that
 * could attend to it (score_mean). */
static double slot_key(const struct kvcache *kv, int32_t pos, double score, int last_pos) {
    if (kv->window) return (double)pos;
    return kv->score_mean ? score / (double)(last_pos - pos + 1) : score;
}

/* Evicts (layer, kvh) down to the budget; last_pos is the newest position. */
static int evict(struct kvcache *kv, int layer, int kvh, int last_pos, char *err, size_t errlen) {
    const size_t base = head_base(kv, layer, kvh);
    const int nu = kv->n_used[(size_t)layer * kv->n_kv_heads + kvh];
    const int excess = nu - kv->budget;
    if (excess <= 0) return 0;
    int32_t *P = kv->pos + base;
    const double *S = kv->score + base;
    /* protected: the sinks and the last n_recent positions */
    const int64_t recent_from = (int64_t)last_pos - kv->n_recent + 1;
    if (excess == 1) { /* decode: one linear scan */
        int best = -1;
        for (int i = 0; i < nu; i++) {
            if (P[i] < kv->n_sinks || P[i] >= recent_from) continue;
            double key = slot_key(kv, P[i], S[i], last_pos);
            double bkey = best < 0 ? 0.0 : slot_key(kv, P[best], S[best], last_pos);
            if (best < 0 || key < bkey || (key == bkey && P[i] < P[best])) best = i;
        }
        if (best < 0) goto none;
        if (kv->cheads && cold_add(kv, layer, kvh, base + (size_t)best, err, errlen) != 0) return -1;
        P[best] = -1;
    } else {
        struct cand *c = malloc((size_t)nu * sizeof *c);
        if (!c) {
            snprintf(err, errlen, "out of memory evicting %d slots", excess);
            return -1;
        }
        int nc = 0;
        for (int i = 0; i < nu; i++) {
            if (P[i] < kv->n_sinks || P[i] >= recent_from) continue;
            c[nc].key = slot_key(kv, P[i], S[i], last_pos);
            c[nc].pos = P[i];
            c[nc].slot = i;
            nc++;
        }
        if (nc < excess) {
            free(c);
            goto none;
        }
        qsort(c, (size_t)nc, sizeof *c, cand_cmp);
        for (int i = 0; i < excess; i++) {
            if (kv->cheads && cold_add(kv, layer, kvh, base + (size_t)c[i].slot, err, errlen) != 0) {
                free(c);
                return -1;
            }
            P[c[i].slot] = -1;
        }
        free(c);
    }
    compact(kv, layer, kvh);
    return 0;
none:
    /* cannot happen when sinks + recent <= budget (kv_config_resolve checks it) */
    snprintf(err, errlen, "kvcache: layer %d head %d: %d slots over budget but nothing evictable", layer, kvh,
             excess);
    return -1;
}

struct attend_job {
    struct kvcache *kv;
    int layer, n, pos0;
    const float *q;
    float *out;
};

/* One query head over the n tokens of the call: attention over the head's
 * KV slots (causal by position), column sums into colsum[h]. The loops
 * mirror core/forward.c's attn_worker so that, with slots in position
 * order and f32 storage, the result is bit-identical to the dense pass. */
/* f16/q8: the layer's live rows dequantized once per call into kv->deq,
 * so the query heads of a group share them; items are (K or V, kv head). */
static void dequant_worker(void *arg, int ith, int nth) {
    const struct attend_job *job = arg;
    struct kvcache *kv = job->kv;
    const int hd = kv->head_dim;
    for (int item = ith; item < 2 * kv->n_kv_heads; item += nth) {
        const int which = item / kv->n_kv_heads, kvh = item % kv->n_kv_heads;
        const size_t base = head_base(kv, job->layer, kvh);
        const int nu = kv->n_used[(size_t)job->layer * kv->n_kv_heads + kvh];
        float *dst = kv->deq + (size_t)item * kv->n_slots * hd;
        for (int j = 0; j < nu; j++) {
            float *row = dst + (size_t)j * hd;
            if (which == 0) load_row(kv, kv->keys, kv->kscale, base + j, row);
            else load_row(kv, kv->values, kv->vscale, base + j, row);
        }
    }
}

/* Attention visits the rows in position order, which after evictions is
 * not their order in memory: each is fetched this many entries ahead. */
#define KV_AHEAD 8

static void prefetch_row(const float *row, int hd) {
    for (int c = 0; c < hd; c += 16) __builtin_prefetch(row + c);
}

static void attend_worker(void *arg, int ith, int nth) {
    const struct attend_job *job = arg;
    struct kvcache *kv = job->kv;
    const int hd = kv->head_dim, group = kv->n_heads / kv->n_kv_heads, q_dim = kv->n_heads * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t per_head = (size_t)kv->n_slots + (size_t)kv->recall, stride = att_stride(kv);
    float *att = kv->att + (size_t)ith * att_run(kv) * stride;
    /* the thread's query heads are a contiguous range, taken in runs of heads
     * that share a KV head: each key and value is read once for the run (the
     * many-query kernels give each head what the one-head ones give) */
    const int end = (int)((int64_t)kv->n_heads * (ith + 1) / nth);
    for (int h = (int)((int64_t)kv->n_heads * ith / nth); h < end;) {
        const int kvh = h / group, run_end = (kvh + 1) * group < end ? (kvh + 1) * group : end;
        const int m = run_end - h < VEC_RUN ? run_end - h : VEC_RUN;
        /* the KV head's hot slots and recalled tokens, in position order */
        const struct kv_entry *E = kv->list + (size_t)kvh * per_head;
        const int n_list = kv->n_list[kvh], nu = kv->n_used[(size_t)job->layer * kv->n_kv_heads + kvh];
        for (int g = 0; g < m; g++) {
            double *cs = kv->colsum + (size_t)(h + g) * kv->n_slots;
            for (int j = 0; j < nu; j++) cs[j] = 0.0;
        }
        for (int t = 0; t < job->n; t++) {
            const int qpos = job->pos0 + t;
            const double rw = kv->row_weight[t];
            const float *q = job->q + (size_t)t * q_dim + (size_t)h * hd;
            float maxv[VEC_RUN], dots[VEC_RUN], inv_sum[VEC_RUN], w[VEC_RUN];
            for (int g = 0; g < m; g++) maxv[g] = -INFINITY;
            for (int j = 0; j < n_list; j++) {
                if (j + KV_AHEAD < n_list) prefetch_row(E[j + KV_AHEAD].k, hd);
                if (E[j].pos > qpos) continue;
                vec_dots_f32(q, m, E[j].k, hd, dots);
                for (int g = 0; g < m; g++) {
                    const float x = dots[g] * scale;
                    att[(size_t)g * stride + j] = x;
                    if (x > maxv[g]) maxv[g] = x;
                }
            }
            for (int g = 0; g < m; g++) {
                float *ag = att + (size_t)g * stride, sum = 0.0f;
                for (int j = 0; j < n_list; j++) {
                    if (E[j].pos > qpos) continue;
                    ag[j] = expf(ag[j] - maxv[g]);
                    sum += ag[j];
                }
                inv_sum[g] = 1.0f / sum;
            }
            float *out = job->out + (size_t)t * q_dim + (size_t)h * hd;
            memset(out, 0, (size_t)m * hd * sizeof *out);
            for (int j = 0; j < n_list; j++) {
                if (j + KV_AHEAD < n_list) prefetch_row(E[j + KV_AHEAD].v, hd);
                if (E[j].pos > qpos) continue;
                for (int g = 0; g < m; g++) w[g] = att[(size_t)g * stride + j] * inv_sum[g];
                vec_axpys_f32(out, m, w, E[j].v, hd);
                if (E[j].slot >= 0)
                    for (int g = 0; g < m; g++) kv->colsum[(size_t)(h + g) * kv->n_slots + E[j].slot] += w[g] * rw;
            }
        }
        h += m;
    }
}

/* page index and bound, for choosing the pages to recall; a candidate token
 * and its score. Both ranked best first, ties to the older position, a total
 * order, so the chosen set does not depend on how it is found. */
struct page_rank {
    float bound;
    int page;
};

static int page_better(const struct page_rank *x, const struct page_rank *y) {
    return x->bound != y->bound ? x->bound > y->bound : x->page < y->page;
}

static int cand_better(const struct kv_cand *x, const struct kv_cand *y) {
    return x->score != y->score ? x->score > y->score : x->pos < y->pos;
}

/* Moves the k best of a[n] (k < n) to its front, in no order: quickselect,
 * median-of-three pivots (linear time on the sorted and equal runs that page
 * bounds give). */
#define DEFINE_SELECT(name, T, better)                                                                               \
    static void name(T *a, int n, int k) {                                                                           \
        int lo = 0, hi = n - 1;                                                                                      \
        while (lo < hi) {                                                                                            \
            const int mid = lo + (hi - lo) / 2;                                                                      \
            T t;                                                                                                     \
            if (better(&a[mid], &a[lo])) t = a[mid], a[mid] = a[lo], a[lo] = t;                                      \
            if (better(&a[hi], &a[lo])) t = a[hi], a[hi] = a[lo], a[lo] = t;                                         \
            if (better(&a[hi], &a[mid])) t = a[hi], a[hi] = a[mid], a[mid] = t;                                      \
            const T pivot = a[mid];                                                                                  \
            int i = lo, j = hi;                                                                                      \
            while (i <= j) { /* Hoare: [lo, j] not worse than pivot, [i, hi] not better */                           \
                while (better(&a[i], &pivot)) i++;                                                                   \
                while (better(&pivot, &a[j])) j--;                                                                   \
                if (i <= j) t = a[i], a[i] = a[j], a[j] = t, i++, j--;                                               \
            }                                                                                                        \
            if (k - 1 <= j) hi = j;                                                                                  \
            else if (k - 1 >= i) lo = i;                                                                             \
            else return;                                                                                             \
        }                                                                                                            \
    }
DEFINE_SELECT(select_pages, struct page_rank, page_better)
DEFINE_SELECT(select_cands, struct kv_cand, cand_better)

/* Recall for (layer, kvh) and the n queries q of the call, in two steps:
 * - pages: the kv->cands * kv->recall / KV_PAGE pages with the largest
 *   bound over the group's query heads and the rows; their tokens are the
 *   candidates;
 * - tokens: where the candidates are more than kv->recall, each is scored by
 *   its best q . k over the same heads and rows (kvcache_cold_score: on the
 *   stored row, then its scale) and the best kv->recall are kept.
 * The kept ones are dequantized into rk/rv and listed in out (slot -1) in
 * position order; returns their count. */
static int recall_pages(struct kvcache *kv, int layer, int kvh, const float *q, int n, struct kv_entry *out) {
    const struct kv_cold_head *ch = &kv->cheads[(size_t)layer * kv->n_kv_heads + kvh];
    if (ch->n_pages == 0 || kv->recall == 0) return 0;
    const int hd = kv->head_dim, group = kv->n_heads / kv->n_kv_heads, q_dim = kv->n_heads * hd;
    const int max_pages = recall_max_pages(kv);
    /* this head's scratch (recall_scratch sized it for the layer) */
    struct page_rank *r = kv->rank + (size_t)kvh * kv->rank_cap;
    int *page_cand = kv->page_cand + (size_t)kvh * kv->rank_cap;
    struct kv_cand *C = kv->cand + (size_t)kvh * 2 * max_pages * KV_PAGE;
    /* the call's queries of this head's group, packed: row t's head g at t * group + g */
    const int nq = n * group;
    float *rq = kv->rq + (size_t)kvh * KV_RECALL_ROWS * group * hd;
    float *dots = kv->rdots + (size_t)kvh * KV_RECALL_ROWS * group;
    for (int t = 0; t < n; t++)
        memcpy(rq + (size_t)t * group * hd, q + (size_t)t * q_dim + (size_t)kvh * group * hd,
               (size_t)group * hd * sizeof *rq);
    /* pages: the exact bound of each query (a row and a head of the group), the best of them */
    int np = 0;
    for (int p = 0; p < ch->n_pages; p++) {
        page_cand[p] = -1;
        if (!ch->pages[p]) continue;
        if (p + 4 < ch->n_pages && ch->pages[p + 4]) __builtin_prefetch(ch->pages[p + 4]); /* scattered pages */
        r[np++] = (struct page_rank){vec_bound_f32(rq, nq, ch->pages[p]->kmin, ch->pages[p]->kmax, hd), p};
    }
    if (np > max_pages) select_pages(r, np, max_pages), np = max_pages;
    /* tokens: each candidate page's tokens, scored when they are more than the recall */
    int nc = 0;
    for (int i = 0; i < np; i++) {
        const struct kv_page *pg = ch->pages[r[i].page];
        page_cand[r[i].page] = nc;
        for (int j = 0; j < pg->n; j++) C[nc++] = (struct kv_cand){0.0f, pg->pos[j], pg, j, 1};
    }
    if (nc > kv->recall) {
        const size_t rb = cold_esize_bytes(kv->cold, hd);
        for (int c = 0; c < nc; c++) {
            if (c + KV_AHEAD < nc) __builtin_prefetch((const uint8_t *)C[c + KV_AHEAD].pg->k + C[c + KV_AHEAD].i * rb);
            C[c].score = kvcache_cold_score(kv, C[c].pg, C[c].i, rq, nq, dots);
        }
        /* the best kv->recall keep their flag. The selection runs on a copy S,
         * so that C stays in page order; in S, `keep` holds the entry's index in C. */
        struct kv_cand *S = C + nc;
        memcpy(S, C, (size_t)nc * sizeof *S);
        for (int c = 0; c < nc; c++) S[c].keep = c, C[c].keep = 0;
        select_cands(S, nc, kv->recall);
        for (int k = 0; k < kv->recall; k++) C[S[k].keep].keep = 1;
    }
    /* in position order: pages by index, a page's kept tokens by position */
    float *K = kv->rk + (size_t)kvh * kv->recall * hd, *V = kv->rv + (size_t)kvh * kv->recall * hd;
    int got = 0;
    for (int p = 0; p < ch->n_pages; p++) {
        const int c0 = page_cand[p];
        if (c0 < 0) continue;
        const int start = got;
        for (int c = c0; c < c0 + ch->pages[p]->n; c++) {
            if (!C[c].keep) continue;
            int w = got++; /* insertion by position among this page's kept ones */
            while (w > start && out[w - 1].pos > C[c].pos) {
                out[w] = out[w - 1];
                w--;
            }
            out[w] = (struct kv_entry){NULL, NULL, C[c].pos, c};
        }
    }
    /* the kept ones dequantized (scoring read the stored rows) */
    for (int k = 0; k < got; k++) {
        const struct kv_cand *c = &C[out[k].slot];
        cold_row(kv, c->pg, 0, c->i, K + (size_t)k * hd);
        cold_row(kv, c->pg, 1, c->i, V + (size_t)k * hd);
        out[k] = (struct kv_entry){K + (size_t)k * hd, V + (size_t)k * hd, c->pos, -1};
    }
    return got;
}

/* Recall's scratch for a layer: page rankings for its largest cold head. */
static int recall_scratch(struct kvcache *kv, int layer, char *err, size_t errlen) {
    int most = 0;
    for (int h = 0; h < kv->n_kv_heads; h++) {
        const int np = kv->cheads[(size_t)layer * kv->n_kv_heads + h].n_pages;
        most = np > most ? np : most;
    }
    if (most <= kv->rank_cap) return 0;
    const size_t cap = (size_t)most * 2, heads = (size_t)kv->n_kv_heads; /* grows with the context, kept */
    struct page_rank *g = realloc(kv->rank, heads * cap * sizeof *g);
    if (g) kv->rank = g;
    int *c = g ? realloc(kv->page_cand, heads * cap * sizeof *c) : NULL;
    if (c) kv->page_cand = c;
    if (!g || !c) {
        snprintf(err, errlen, "out of memory ranking %d cold pages", most);
        return -1;
    }
    kv->rank_cap = (int)cap;
    return 0;
}

/* The KV heads' recalls of a call, one head per item: into each head's list
 * after its hot slots (attend_part merges them). */
static void recall_worker(void *arg, int ith, int nth) {
    const struct attend_job *job = arg;
    struct kvcache *kv = job->kv;
    const size_t per_head = (size_t)kv->n_slots + (size_t)kv->recall;
    for (int h = ith; h < kv->n_kv_heads; h += nth) {
        struct kv_entry *R = kv->list + (size_t)h * per_head + kv->n_used[(size_t)job->layer * kv->n_kv_heads + h];
        kv->n_recall[h] = recall_pages(kv, job->layer, h, job->q, job->n, R);
    }
}

/* One call of at most n_slots - budget tokens (kvcache_attend cuts longer ones). */
static int attend_part(struct kvcache *kv, int layer, const float *q, const float *k, const float *v, int n, int pos0,
                       float *out, struct tpool *tp, char *err, size_t errlen) {
    const int hd = kv->head_dim, kv_dim = kv->n_kv_heads * hd;
    for (int h = 0; h < kv->n_kv_heads; h++) {
        const size_t base = head_base(kv, layer, h);
        int *nu = &kv->n_used[(size_t)layer * kv->n_kv_heads + h];
        /* a rewind: positions at or after pos0 are replaced */
        int stale = 0;
        for (int i = 0; i < *nu; i++)
            if (kv->pos[base + i] >= pos0) kv->pos[base + i] = -1, stale = 1;
        if (stale) compact(kv, layer, h);
        if (kv->cheads) cold_truncate(kv, layer, h, pos0);
        for (int t = 0; t < n; t++) {
            const size_t slot = base + (size_t)*nu + t;
            store_row(kv, kv->keys, kv->kscale, slot, k + (size_t)t * kv_dim + (size_t)h * hd);
            store_row(kv, kv->values, kv->vscale, slot, v + (size_t)t * kv_dim + (size_t)h * hd);
            kv->pos[slot] = pos0 + t;
            kv->score[slot] = 0.0;
            kv->ord[base + (size_t)*nu + t] = *nu + t; /* the newest positions come last */
        }
        *nu += n;
    }
    /* query row t is n-1-t steps older than the newest (decay = 1: all 1) */
    for (int t = 0; t < n; t++) kv->row_weight[t] = pow(kv->decay, n - 1 - t);
    struct attend_job job = {kv, layer, n, pos0, q, out};
    if (kv->type != KV_F32) {
        if (tp) tpool_run(tp, dequant_worker, &job);
        else dequant_worker(&job, 0, 1);
    }
    if (kv->cheads && kv->recall > 0) {
        if (recall_scratch(kv, layer, err, errlen) != 0) return -1;
        if (tp) tpool_run(tp, recall_worker, &job);
        else recall_worker(&job, 0, 1);
    }
    /* each head's attention list: hot slots in position order, merged with
     * the recalled cold tokens (in position order) */
    const size_t per_head = (size_t)kv->n_slots + (size_t)kv->recall;
    for (int h = 0; h < kv->n_kv_heads; h++) {
        const size_t base = head_base(kv, layer, h);
        const int nu = kv->n_used[(size_t)layer * kv->n_kv_heads + h];
        const float *K = kv->type == KV_F32 ? (const float *)kv->keys + base * hd
                                            : kv->deq + (size_t)h * kv->n_slots * hd;
        const float *V = kv->type == KV_F32 ? (const float *)kv->values + base * hd
                                            : kv->deq + ((size_t)kv->n_kv_heads + h) * kv->n_slots * hd;
        struct kv_entry *E = kv->list + (size_t)h * per_head;
        struct kv_entry *R = E + nu; /* the recalled ones, sorted; merged from the front, which never
                                        overwrites one not yet taken (the write index stays below it) */
        const int nr = kv->cheads && kv->recall > 0 ? kv->n_recall[h] : 0;
        kv->recalled += nr;
        const int32_t *ord = kv->ord + base;
        for (int a = 0, b = 0, w = 0; w < nu + nr; w++) {
            const int32_t hp = a < nu ? kv->pos[base + ord[a]] : INT32_MAX;
            if (b < nr && R[b].pos < hp) {
                E[w] = R[b++];
            } else {
                const int sl = ord[a++];
                E[w] = (struct kv_entry){K + (size_t)sl * hd, V + (size_t)sl * hd, hp, sl};
            }
        }
        kv->n_list[h] = nu + nr;
    }
    if (tp) tpool_run(tp, attend_worker, &job);
    else attend_worker(&job, 0, 1);
    const int group = kv->n_heads / kv->n_kv_heads;
    for (int h = 0; h < kv->n_kv_heads; h++) {
        const size_t base = head_base(kv, layer, h);
        const int nu = kv->n_used[(size_t)layer * kv->n_kv_heads + h];
        if (kv->decay < 1.0) { /* the kept scores age by the n new queries */
            const double age = pow(kv->decay, n);
            for (int j = 0; j < nu - n; j++) kv->score[base + j] *= age;
        }
        for (int g = 0; g < group; g++) {
            const double *cs = kv->colsum + (size_t)(h * group + g) * kv->n_slots;
            for (int j = 0; j < nu; j++) kv->score[base + j] += cs[j];
        }
        if (evict(kv, layer, h, pos0 + n - 1, err, errlen) != 0) return -1;
    }
    return 0;
}

int kvcache_attend(struct kvcache *kv, int layer, const float *q, const float *k, const float *v, int n, int pos0,
                   float *out, struct tpool *tp, char *err, size_t errlen) {
    if (layer < 0 || layer >= kv->n_layers || n < 1 || n > kv->max_batch || pos0 < 0) {
        snprintf(err, errlen, "kvcache: layer %d, %d tokens at %d: outside %d layers, batch %d", layer, n, pos0,
                 kv->n_layers, kv->max_batch);
        return -1;
    }
    if (tp && tpool_size(tp) > kv->n_threads) {
        snprintf(err, errlen, "kvcache: a pool of %d threads, scratch for %d", tpool_size(tp), kv->n_threads);
        return -1;
    }
    /* with a cold store, recall serves KV_RECALL_ROWS queries at a time (its
     * choice is shared by the rows of a part) */
    const int room = kv->n_slots - kv->budget;
    const int part = kv->cheads && room > KV_RECALL_ROWS ? KV_RECALL_ROWS : room;
    const int hd = kv->head_dim;
    const size_t q_dim = (size_t)kv->n_heads * hd, kv_dim = (size_t)kv->n_kv_heads * hd;
    for (int t = 0; t < n; t += part) {
        const int m = n - t < part ? n - t : part;
        if (attend_part(kv, layer, q + t * q_dim, k + t * kv_dim, v + t * kv_dim, m, pos0 + t, out + t * q_dim, tp,
                        err, errlen) != 0)
            return -1;
    }
    return 0;
}

int kvcache_n_used(const struct kvcache *kv, int layer, int kvh) {
    return kv->n_used[(size_t)layer * kv->n_kv_heads + kvh];
}

const int32_t *kvcache_positions(const struct kvcache *kv, int layer, int kvh) {
    return kv->pos + head_base(kv, layer, kvh);
}

const double *kvcache_scores(const struct kvcache *kv, int layer, int kvh) {
    return kv->score + head_base(kv, layer, kvh);
}

void kvcache_read_key(const struct kvcache *kv, int layer, int kvh, int slot, float *out) {
    const float *r = load_row(kv, kv->keys, kv->kscale, head_base(kv, layer, kvh) + (size_t)slot, out);
    if (r != out) memcpy(out, r, (size_t)kv->head_dim * sizeof *out);
}

void kvcache_read_value(const struct kvcache *kv, int layer, int kvh, int slot, float *out) {
    const float *r = load_row(kv, kv->values, kv->vscale, head_base(kv, layer, kvh) + (size_t)slot, out);
    if (r != out) memcpy(out, r, (size_t)kv->head_dim * sizeof *out);
}
