/* matmul: quantize activations, then rows x tokens tiles of vec_dot calls.
 *
 * One tpool_run per call. Inside it every thread first quantizes its share of
 * the activation blocks, waits at a spin barrier (the dots need every token's
 * row), then takes tiles from a shared counter until none are left. */
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
#define MM_ROWS_DECODE 16 /* rows per chunk when n_tok == 1 */

struct mm_task {
    const struct quant_traits *wtr;
    const uint8_t *w;
    size_t w_row; /* bytes per weight row */
    float *y;
    int64_t n_in, n_out, n_tok, r0, r1;

    /* activations: x as f32, and xq as rows of the vec_dot_type */
    const float *x;
    const struct quant_traits *xtr;
    uint8_t *xq;
    size_t xq_row;
    int quantize; /* 0 when xq is x itself (F32 vec_dot_type) */

    int64_t tile_rows, tile_toks, n_row_tiles, n_tiles;
    atomic_int arrived; /* barrier after quantization */
    atomic_llong next;  /* next tile to take */
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

static void mm_tile(const struct mm_task *t, int64_t tile) {
    const int64_t rt = tile % t->n_row_tiles, tt = tile / t->n_row_tiles;
    const int64_t ra = t->r0 + rt * t->tile_rows;
    const int64_t rb = ra + t->tile_rows < t->r1 ? ra + t->tile_rows : t->r1;
    const int64_t ta = tt * t->tile_toks;
    const int64_t tb = ta + t->tile_toks < t->n_tok ? ta + t->tile_toks : t->n_tok;
    const quant_vec_dot_fn dot = t->wtr->vec_dot;
    const quant_vec_dot4_fn dot4 = t->wtr->vec_dot4;
    int64_t tok = ta;
    if (dot4) /* four tokens per weight row: the row is unpacked once for them */
        for (; tok + 4 <= tb; tok += 4) {
            const void *xr = t->xq + (size_t)tok * t->xq_row;
            float *yr = t->y + tok * t->n_out;
            for (int64_t r = ra; r < rb; r++)
                dot4(t->n_in, &yr[r], (size_t)t->n_out, t->w + (size_t)r * t->w_row, xr, t->xq_row);
        }
    for (; tok < tb; tok++) {
        const void *xr = t->xq + (size_t)tok * t->xq_row;
        float *yr = t->y + tok * t->n_out;
        for (int64_t r = ra; r < rb; r++)
            dot(t->n_in, &yr[r], t->w + (size_t)r * t->w_row, xr);
    }
}

static void mm_worker(void *arg, int ith, int nth) {
    struct mm_task *t = arg;
    if (t->quantize) {
        /* the activations are n_tok rows back to back, each a whole number of
         * blocks, so they are one flat run of blocks to split evenly */
        const int64_t blck = t->xtr->blck;
        const int64_t nblk = t->n_tok * t->n_in / blck;
        const int64_t b0 = nblk * ith / nth, b1 = nblk * (ith + 1) / nth;
        if (b1 > b0)
            t->xtr->from_float(t->x + b0 * blck, t->xq + (size_t)b0 * t->xtr->size, (b1 - b0) * blck);
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

/* w_stride: bytes from one weight row to the next (0: rows back to back) */
static int mm_run(struct tpool *tp, float *y, const void *w, enum hearth_type wt, size_t w_stride, const float *x,
                  int64_t n_in, int64_t n_out, int64_t n_tok, int64_t r0, int64_t r1, struct matmul_scratch *s,
                  char *err, size_t errlen) {
    const struct quant_traits *wtr = quant_traits(wt);
    if (!wtr || !wtr->vec_dot) {
        snprintf(err, errlen, "matmul: weight type %s (id %u) is not supported", hearth_type_name((uint32_t)wt),
                 (unsigned)wt);
        return -1;
    }
    const struct quant_traits *xtr = quant_traits(wtr->vec_dot_type);
    if (!xtr || !xtr->from_float) {
        snprintf(err, errlen, "matmul: no quantizer for activation type of %s", wtr->name);
        return -1;
    }
    if (n_in <= 0 || n_out < 0 || n_tok < 0) {
        snprintf(err, errlen, "matmul: bad shape n_in=%lld n_out=%lld n_tok=%lld", (long long)n_in,
                 (long long)n_out, (long long)n_tok);
        return -1;
    }
    if (n_in % wtr->blck != 0 || n_in % xtr->blck != 0) {
        snprintf(err, errlen, "matmul: n_in=%lld is not a multiple of the %s block size %lld", (long long)n_in,
                 wtr->name, (long long)wtr->blck);
        return -1;
    }
    if (r0 < 0 || r0 > r1 || r1 > n_out) {
        snprintf(err, errlen, "matmul: rows [%lld, %lld) outside [0, %lld)", (long long)r0, (long long)r1,
                 (long long)n_out);
        return -1;
    }
    if (!y || !w || !x || !s) {
        snprintf(err, errlen, "matmul: NULL %s", !y ? "y" : !w ? "w" : !x ? "x" : "scratch");
        return -1;
    }
    const size_t row_bytes = hearth_row_size((uint32_t)wt, n_in);
    if (w_stride == 0)
        w_stride = row_bytes;
    if (w_stride < row_bytes) {
        snprintf(err, errlen, "matmul: weight row stride %zu bytes is shorter than a row of %lld %s weights (%zu)",
                 w_stride, (long long)n_in, wtr->name, row_bytes);
        return -1;
    }
    if (n_tok == 0 || r0 == r1)
        return 0;

    struct mm_task t;
    memset(&t, 0, sizeof t);
    t.wtr = wtr;
    t.w = w;
    t.w_row = w_stride;
    t.y = y;
    t.n_in = n_in;
    t.n_out = n_out;
    t.n_tok = n_tok;
    t.r0 = r0;
    t.r1 = r1;
    t.x = x;
    t.xtr = xtr;
    t.xq_row = (size_t)(n_in / xtr->blck) * xtr->size;
    if (wtr->vec_dot_type == HEARTH_TYPE_F32) {
        t.xq = (uint8_t *)(uintptr_t)x; /* read only: quantize == 0 */
        t.quantize = 0;
    } else {
        if (scratch_reserve(s, t.xq_row * (size_t)n_tok, err, errlen) != 0)
            return -1;
        t.xq = s->buf;
        t.quantize = 1;
    }

    const int nth = tpool_size(tp);
    const int64_t rows = r1 - r0;
    if (n_tok == 1) {
        /* enough chunks for the dynamic split to even out, but not so small
         * that the shared counter becomes the cost */
        int64_t per = (rows + 4 * nth - 1) / (4 * nth);
        t.tile_rows = per < MM_ROWS_DECODE ? (per < 1 ? 1 : per) : MM_ROWS_DECODE;
        t.tile_toks = 1;
    } else {
        int64_t tr = (int64_t)(MM_TILE_W_BYTES / row_bytes);
        t.tile_rows = tr < 4 ? 4 : tr > 64 ? 64 : tr;
        t.tile_toks = MM_TILE_TOKENS;
    }
    t.n_row_tiles = (rows + t.tile_rows - 1) / t.tile_rows;
    t.n_tiles = t.n_row_tiles * ((n_tok + t.tile_toks - 1) / t.tile_toks);
    atomic_init(&t.arrived, 0);
    atomic_init(&t.next, nth);
    tpool_run(tp, mm_worker, &t);
    return 0;
}

int matmul_rows(struct tpool *tp, float *y, const void *w, enum hearth_type wt, const float *x, int64_t n_in,
                int64_t n_out, int64_t n_tok, int64_t r0, int64_t r1, struct matmul_scratch *s, char *err,
                size_t errlen) {
    return mm_run(tp, y, w, wt, 0, x, n_in, n_out, n_tok, r0, r1, s, err, errlen);
}

int matmul_strided(struct tpool *tp, float *y, const void *w, enum hearth_type wt, size_t w_stride, const float *x,
                   int64_t n_in, int64_t n_out, int64_t n_tok, struct matmul_scratch *s, char *err, size_t errlen) {
    return mm_run(tp, y, w, wt, w_stride, x, n_in, n_out, n_tok, 0, n_out, s, err, errlen);
}

int matmul(struct tpool *tp, float *y, const void *w, enum hearth_type wt, const float *x, int64_t n_in,
           int64_t n_out, int64_t n_tok, struct matmul_scratch *s, char *err, size_t errlen) {
    return mm_run(tp, y, w, wt, 0, x, n_in, n_out, n_tok, 0, n_out, s, err, errlen);
}
