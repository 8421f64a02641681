/* matmul: quantize activations, then rows x tokens tiles of vec_dot calls.
 *
 * One tpool_run per call, whatever the number of outputs (matmul_fused).
 * Inside it every thread first quantizes its share of the activation blocks
 * (computing them first when the input is a fill function), waits at a spin
 * barrier (the dots need every token's row), then takes tiles from a shared
 * counter until none are left. The tiles of all outputs form one index
 * space, so a thread that finishes Q moves on to K's or V's rows instead of
 * waiting. */
#include "matmul.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

/* Weight bytes per tile: small enough that a tile's rows stay in L1/L2 while
 * the tile's tokens run over them. */
#define MM_TILE_W_BYTES (16 * 1024)
#define MM_TILE_TOKENS 32
#define MM_TILE_ROWS_MAX 64
#define MM_ROWS_DECODE 512 /* most rows per chunk when n_tok == 1 */
#define MM_MAX_OUTS 8
#define MM_MAX_BLCK 256 /* largest block of an activation type (Q8_K) */

/* One output of the task, with its share of the tile index space. */
struct mm_part {
    const struct quant_traits *wtr;
    const uint8_t *w;
    size_t w_row; /* bytes from one weight row to the next */
    const uint8_t *w8; /* rows [r0, r0 + n8) interleaved by 8, or NULL */
    size_t w8_stride;
    int64_t n8;
    float *y;
    int64_t *acc;
    int64_t group;
    void (*acc_add)(int64_t *acc, const float *v, size_t count);
    int64_t n_out, r0, r1;
    int64_t tile_rows, n_row_tiles, first_tile, n_part_tiles;
};

struct mm_task {
    struct mm_part part[MM_MAX_OUTS];
    int n_parts;
    int64_t n_in, n_tok, tile_toks, n_tiles;

    /* activations: x as f32 (or fill), and xq as rows of the vec_dot_type */
    struct matmul_in in;
    const struct quant_traits *xtr;
    uint8_t *xq;
    size_t xq_row;
    int quantize; /* 0 when xq is x itself (F32 vec_dot_type, no fill) */

    /* each on its own cache line: every fetch_add on them would otherwise
     * take from the other threads the line holding the fields above, which
     * every tile reads */
    _Alignas(64) atomic_int arrived; /* barrier after quantization */
    _Alignas(64) atomic_llong next;  /* next tile to take */
    char pad[64 - sizeof(atomic_llong)];
};

static void spin_wait_all(atomic_int *arrived, int nth) {
    for (int spin = 0; atomic_load_explicit(arrived, memory_order_acquire) < nth; spin++) {
        if (spin < 2000) {
#if defined(__x86_64__)
            __builtin_ia32_pause();
#endif
        } else {
            sched_yield();
        }
    }
}

/* Rows [ra, rb) of part p for tokens [ta, tb): the part's own dot products
 * with the input columns from byte xoff of each activation row and from
 * byte w_off of each weight row (8 w_off into an interleaved group), n
 * elements (the whole row, or one group of tile_acc), into
 * out[tok * ld + r - ra0] (a row-tile's buffer: out's row ra0 is W's row ra0). */
static void tile_dots(const struct mm_task *t, const struct mm_part *p, int64_t ra, int64_t rb, int64_t ta,
                      int64_t tb, size_t w_off, size_t xoff, int64_t n, float *out, int64_t ld, int64_t ra0) {
    const quant_vec_dot_fn dot = p->wtr->vec_dot;
    const quant_vec_dot4_fn dot4 = p->wtr->vec_dot4;
    const quant_vec_dot8_fn dot8 = p->wtr->vec_dot8;
    int64_t r = ra;
    if (p->w8) /* whole groups of 8 interleaved rows, up to four tokens per call */
        for (; r + 8 <= rb && r + 8 <= p->r0 + p->n8; r += 8) {
            const uint8_t *wg = p->w8 + (size_t)((r - p->r0) / 8) * p->w8_stride + 8 * w_off;
            for (int64_t tok = ta; tok < tb; tok += 4)
                dot8(n, out + tok * ld + (r - ra0), (size_t)ld, wg, t->xq + (size_t)tok * t->xq_row + xoff,
                     t->xq_row, tb - tok < 4 ? (int)(tb - tok) : 4);
        }
    if (r == rb)
        return;
    int64_t tok = ta;
    if (dot4) /* four tokens per weight row: the row is unpacked once for them */
        for (; tok + 4 <= tb; tok += 4) {
            const uint8_t *xr = t->xq + (size_t)tok * t->xq_row + xoff;
            for (int64_t q = r; q < rb; q++)
                dot4(n, out + tok * ld + (q - ra0), (size_t)ld, p->w + (size_t)q * p->w_row + w_off, xr, t->xq_row);
        }
    for (; tok < tb; tok++) {
        const uint8_t *xr = t->xq + (size_t)tok * t->xq_row + xoff;
        for (int64_t q = r; q < rb; q++) dot(n, out + tok * ld + (q - ra0), p->w + (size_t)q * p->w_row + w_off, xr);
    }
}

/* rows [ra, rb) of part p for tokens [ta, tb) into y */
static void tile_y(const struct mm_task *t, const struct mm_part *p, int64_t ra, int64_t rb, int64_t ta,
                   int64_t tb) {
    tile_dots(t, p, ra, rb, ta, tb, 0, 0, t->n_in, p->y, p->n_out, 0);
}

/* the same per group of inputs, each group's sums handed to acc_add. The
 * interleaved rows go group of 8 rows by group of 8 rows, each row group's
 * column groups in order, so that the weights stream through memory once in
 * address order (the prefetchers' pattern); the other rows go column group
 * by column group. The order changes no value: each (row, group) sum is one
 * dot product, and acc_add's sums commute. */
static void tile_acc(const struct mm_task *t, const struct mm_part *p, int64_t ra, int64_t rb, int64_t ta,
                     int64_t tb) {
    float v[MM_TILE_TOKENS][MM_TILE_ROWS_MAX];
    int64_t r = ra;
    for (; p->w8 && r + 8 <= rb && r + 8 <= p->r0 + p->n8; r += 8) {
        const uint8_t *wg = p->w8 + (size_t)((r - p->r0) / 8) * p->w8_stride;
        for (int64_t g0 = 0; g0 < t->n_in; g0 += p->group) {
            const int64_t gw = g0 + p->group < t->n_in ? p->group : t->n_in - g0;
            const size_t w8_off = 8 * hearth_row_size(p->wtr->type, g0);
            const size_t xoff = (size_t)(g0 / t->xtr->blck) * t->xtr->size;
            for (int64_t tok = ta; tok < tb; tok += 4) {
                const int cnt = tb - tok < 4 ? (int)(tb - tok) : 4;
                p->wtr->vec_dot8(gw, &v[0][0], MM_TILE_ROWS_MAX, wg + w8_off, t->xq + (size_t)tok * t->xq_row + xoff,
                                 t->xq_row, cnt);
                for (int j = 0; j < cnt; j++) p->acc_add(p->acc + (tok + j) * p->n_out + r, v[j], 8);
            }
        }
    }
    struct mm_part rows = *p; /* the rows left, in the row layout, up to MM_TILE_ROWS_MAX at a time */
    rows.w8 = NULL;
    for (; r < rb; r += MM_TILE_ROWS_MAX) {
        const int64_t re = rb - r < MM_TILE_ROWS_MAX ? rb : r + MM_TILE_ROWS_MAX;
        for (int64_t g0 = 0; g0 < t->n_in; g0 += p->group) {
            const int64_t gw = g0 + p->group < t->n_in ? p->group : t->n_in - g0;
            const size_t w_off = hearth_row_size(p->wtr->type, g0);
            const size_t xoff = (size_t)(g0 / t->xtr->blck) * t->xtr->size;
            tile_dots(t, &rows, r, re, 0, tb - ta, w_off, xoff + (size_t)ta * t->xq_row, gw, &v[0][0],
                      MM_TILE_ROWS_MAX, r);
            for (int64_t tok = ta; tok < tb; tok++) p->acc_add(p->acc + tok * p->n_out + r, v[tok - ta], (size_t)(re - r));
        }
    }
}

static void mm_tile(const struct mm_task *t, int64_t tile) {
    int k = 0;
    while (tile >= t->part[k].first_tile + t->part[k].n_part_tiles) k++;
    const struct mm_part *p = &t->part[k];
    const int64_t lt = tile - p->first_tile;
    const int64_t rt = lt % p->n_row_tiles, tt = lt / p->n_row_tiles;
    const int64_t ra = p->r0 + rt * p->tile_rows;
    const int64_t rb = ra + p->tile_rows < p->r1 ? ra + p->tile_rows : p->r1;
    const int64_t ta = tt * t->tile_toks;
    const int64_t tb = ta + t->tile_toks < t->n_tok ? ta + t->tile_toks : t->n_tok;
    if (p->y)
        tile_y(t, p, ra, rb, ta, tb);
    else
        tile_acc(t, p, ra, rb, ta, tb);
}

static void quantize_blocks(const struct mm_task *t, int64_t b0, int64_t b1) {
    const int64_t blck = t->xtr->blck;
    if (!t->in.fill) {
        /* the activations are n_tok rows back to back, each a whole number
         * of blocks, so they are one flat run of blocks */
        t->xtr->from_float(t->in.x + b0 * blck, t->xq + (size_t)b0 * t->xtr->size, (b1 - b0) * blck);
        return;
    }
    const int64_t per_row = t->n_in / blck;
    float tmp[MM_MAX_BLCK];
    for (int64_t b = b0; b < b1; b++) {
        t->in.fill(t->in.ctx, b / per_row, (b % per_row) * blck, blck, tmp);
        t->xtr->from_float(tmp, t->xq + (size_t)b * t->xtr->size, blck);
    }
}

static void mm_worker(void *arg, int ith, int nth) {
    struct mm_task *t = arg;
    if (t->quantize) {
        const int64_t nblk = t->n_tok * t->n_in / t->xtr->blck;
        const int64_t b0 = nblk * ith / nth, b1 = nblk * (ith + 1) / nth;
        if (b1 > b0) quantize_blocks(t, b0, b1);
        if (nth > 1) {
            atomic_fetch_add_explicit(&t->arrived, 1, memory_order_acq_rel);
            spin_wait_all(&t->arrived, nth);
        }
    }
    /* first tile is ith's own, then take from the counter */
    for (int64_t tile = ith; tile < t->n_tiles;
         tile = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed))
        mm_tile(t, tile);
}

void matmul_scratch_free(struct matmul_scratch *s) {
    if (!s)
        return;
    free(s->buf);
    s->buf = NULL;
    s->bytes = 0;
}

static int scratch_reserve(struct matmul_scratch *s, size_t bytes, char *err, size_t errlen) {
    if (s->bytes >= bytes)
        return 0;
    size_t cap = bytes + bytes / 4;
    cap = (cap + 63) & ~(size_t)63;
    void *p = NULL;
    if (posix_memalign(&p, 64, cap) != 0) {
        snprintf(err, errlen, "matmul: out of memory for %zu bytes of quantized activations", cap);
        return -1;
    }
    free(s->buf);
    s->buf = p;
    s->bytes = cap;
    return 0;
}

/* checks one output; fills the weight-side fields of p */
static int part_init(struct mm_part *p, const struct matmul_out *o, int64_t n_in, const struct quant_traits *xtr,
                     char *err, size_t errlen) {
    const struct quant_traits *wtr = quant_traits(o->wt);
    if (n_in % wtr->blck != 0 || n_in % xtr->blck != 0) {
        snprintf(err, errlen, "matmul: n_in=%lld is not a multiple of the %s block size %lld", (long long)n_in,
                 wtr->name, (long long)wtr->blck);
        return -1;
    }
    if (o->n_out < 0 || o->r0 < 0 || o->r0 > o->r1 || o->r1 > o->n_out) {
        snprintf(err, errlen, "matmul: rows [%lld, %lld) outside [0, %lld)", (long long)o->r0, (long long)o->r1,
                 (long long)o->n_out);
        return -1;
    }
    if (!o->w || (!o->y == !o->acc)) {
        snprintf(err, errlen, "matmul: %s", !o->w ? "NULL w" : o->y ? "both y and acc given" : "NULL y");
        return -1;
    }
    if (o->acc && (!o->acc_add || o->group <= 0 || o->group % wtr->blck || o->group % xtr->blck)) {
        snprintf(err, errlen, "matmul: accumulating output needs acc_add and a group (%lld) of whole %s blocks",
                 (long long)o->group, wtr->name);
        return -1;
    }
    const size_t row_bytes = hearth_row_size((uint32_t)o->wt, n_in);
    const size_t stride = o->w_stride ? o->w_stride : row_bytes;
    if (stride < row_bytes) {
        snprintf(err, errlen, "matmul: weight row stride %zu bytes is shorter than a row of %lld %s weights (%zu)",
                 stride, (long long)n_in, wtr->name, row_bytes);
        return -1;
    }
    memset(p, 0, sizeof *p);
    p->wtr = wtr;
    p->w = o->w;
    p->w_row = stride;
    if (o->w8 && wtr->vec_dot8) {
        if (o->n8 < 0 || o->n8 % 8 || o->n8 > o->r1 - o->r0) {
            snprintf(err, errlen, "matmul: %lld interleaved rows of [%lld, %lld) are not whole groups of 8",
                     (long long)o->n8, (long long)o->r0, (long long)o->r1);
            return -1;
        }
        p->w8 = o->w8;
        p->w8_stride = o->w8_stride;
        p->n8 = o->n8;
    }
    p->y = o->y;
    p->acc = o->acc;
    p->group = o->group;
    p->acc_add = o->acc_add;
    p->n_out = o->n_out;
    p->r0 = o->r0;
    p->r1 = o->r1;
    return 0;
}

/* outs all share the vec_dot_type xtr */
static int fused_run(struct tpool *tp, const struct matmul_in *in, int64_t n_in, int64_t n_tok,
                     const struct matmul_out *outs, int n_outs, const struct quant_traits *xtr,
                     struct matmul_scratch *s, char *err, size_t errlen) {
    struct mm_task t;
    memset(&t, 0, sizeof t);
    int64_t total_rows = 0;
    for (int k = 0; k < n_outs; k++) {
        if (outs[k].r0 == outs[k].r1 && outs[k].r0 >= 0 && outs[k].r1 <= outs[k].n_out)
            continue; /* nothing to compute */
        if (part_init(&t.part[t.n_parts], &outs[k], n_in, xtr, err, errlen) != 0)
            return -1;
        total_rows += outs[k].r1 - outs[k].r0;
        t.n_parts++;
    }
    if (n_tok == 0 || t.n_parts == 0)
        return 0;
    t.n_in = n_in;
    t.n_tok = n_tok;
    t.in = *in;
    t.xtr = xtr;
    t.xq_row = (size_t)(n_in / xtr->blck) * xtr->size;
    if (xtr->type == HEARTH_TYPE_F32 && !in->fill) {
        t.xq = (uint8_t *)(uintptr_t)in->x; /* read only: quantize == 0 */
    } else {
        if (scratch_reserve(s, t.xq_row * (size_t)n_tok, err, errlen) != 0)
            return -1;
        t.xq = s->buf;
        t.quantize = 1;
    }

    const int nth = tpool_size(tp);
    int64_t decode_rows = 1;
    if (n_tok == 1) {
        /* enough chunks for the dynamic split to even out, but not so small
         * that the shared counter becomes the cost */
        int64_t per = (total_rows + 2 * nth - 1) / (2 * nth);
        decode_rows = per < MM_ROWS_DECODE ? (per < 1 ? 1 : per) : MM_ROWS_DECODE;
        t.tile_toks = 1;
    } else {
        t.tile_toks = MM_TILE_TOKENS;
    }
    const int64_t n_tok_tiles = (n_tok + t.tile_toks - 1) / t.tile_toks;
    for (int k = 0; k < t.n_parts; k++) {
        struct mm_part *p = &t.part[k];
        if (n_tok == 1) {
            p->tile_rows = decode_rows;
        } else {
            int64_t tr = (int64_t)(MM_TILE_W_BYTES / hearth_row_size(p->wtr->type, n_in));
            p->tile_rows = tr < 4 ? 4 : tr > MM_TILE_ROWS_MAX ? MM_TILE_ROWS_MAX : tr;
        }
        if (p->w8) /* tiles of whole interleaved groups */
            p->tile_rows = p->tile_rows < 8 ? 8 : p->tile_rows / 8 * 8;
        p->n_row_tiles = (p->r1 - p->r0 + p->tile_rows - 1) / p->tile_rows;
        p->first_tile = t.n_tiles;
        p->n_part_tiles = p->n_row_tiles * n_tok_tiles;
        t.n_tiles += p->n_part_tiles;
    }
    atomic_init(&t.arrived, 0);
    atomic_init(&t.next, nth);
    tpool_run(tp, mm_worker, &t);
    return 0;
}

int matmul_fused(struct tpool *tp, const struct matmul_in *in, int64_t n_in, int64_t n_tok,
                 const struct matmul_out *outs, int n_outs, struct matmul_scratch *s, char *err, size_t errlen) {
    if (n_in <= 0 || n_tok < 0 || n_outs < 0 || n_outs > MM_MAX_OUTS) {
        snprintf(err, errlen, "matmul: bad shape n_in=%lld n_tok=%lld outputs=%d (at most %d)", (long long)n_in,
                 (long long)n_tok, n_outs, MM_MAX_OUTS);
        return -1;
    }
    if (!in || (!in->x && !in->fill) || !s || (n_outs > 0 && !outs)) {
        snprintf(err, errlen, "matmul: NULL %s", !in || (!in->x && !in->fill) ? "x" : !s ? "scratch" : "outputs");
        return -1;
    }
    const struct quant_traits *xtr[MM_MAX_OUTS];
    for (int k = 0; k < n_outs; k++) {
        const struct quant_traits *wtr = quant_traits(outs[k].wt);
        if (!wtr || !wtr->vec_dot) {
            snprintf(err, errlen, "matmul: weight type %s (id %u) is not supported",
                     hearth_type_name((uint32_t)outs[k].wt), (unsigned)outs[k].wt);
            return -1;
        }
        xtr[k] = quant_traits(wtr->vec_dot_type);
        if (!xtr[k] || !xtr[k]->from_float) {
            snprintf(err, errlen, "matmul: no quantizer for activation type of %s", wtr->name);
            return -1;
        }
    }
    /* one run per distinct activation type, in order of first appearance */
    for (int k = 0; k < n_outs; k++) {
        int seen = 0;
        for (int j = 0; j < k; j++) seen |= xtr[j] == xtr[k];
        if (seen)
            continue;
        struct matmul_out same[MM_MAX_OUTS];
        int n_same = 0;
        for (int j = k; j < n_outs; j++)
            if (xtr[j] == xtr[k]) same[n_same++] = outs[j];
        if (fused_run(tp, in, n_in, n_tok, same, n_same, xtr[k], s, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static int mm_one(struct tpool *tp, float *y, const void *w, enum hearth_type wt, size_t w_stride, const float *x,
                  int64_t n_in, int64_t n_out, int64_t n_tok, int64_t r0, int64_t r1, struct matmul_scratch *s,
                  char *err, size_t errlen) {
    if (!y || !w || !x || !s) {
        snprintf(err, errlen, "matmul: NULL %s", !y ? "y" : !w ? "w" : !x ? "x" : "scratch");
        return -1;
    }
    const struct matmul_in in = {x, NULL, NULL};
    const struct matmul_out o = {.w = w, .wt = wt, .w_stride = w_stride, .n_out = n_out, .r0 = r0, .r1 = r1, .y = y};
    return matmul_fused(tp, &in, n_in, n_tok, &o, 1, s, err, errlen);
}

int matmul_rows(struct tpool *tp, float *y, const void *w, enum hearth_type wt, const float *x, int64_t n_in,
                int64_t n_out, int64_t n_tok, int64_t r0, int64_t r1, struct matmul_scratch *s, char *err,
                size_t errlen) {
    return mm_one(tp, y, w, wt, 0, x, n_in, n_out, n_tok, r0, r1, s, err, errlen);
}

int matmul_strided(struct tpool *tp, float *y, const void *w, enum hearth_type wt, size_t w_stride, const float *x,
                   int64_t n_in, int64_t n_out, int64_t n_tok, struct matmul_scratch *s, char *err, size_t errlen) {
    return mm_one(tp, y, w, wt, w_stride, x, n_in, n_out, n_tok, 0, n_out, s, err, errlen);
}

int matmul(struct tpool *tp, float *y, const void *w, enum hearth_type wt, const float *x, int64_t n_in,
           int64_t n_out, int64_t n_tok, struct matmul_scratch *s, char *err, size_t errlen) {
    return mm_one(tp, y, w, wt, 0, x, n_in, n_out, n_tok, 0, n_out, s, err, errlen);
}
