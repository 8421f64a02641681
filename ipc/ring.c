/* ring: see ring.h for the layout and the memory orders. */
#include "ring.h"
#include "ipc.h"

#include <stdio.h>
#include <string.h>

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2,
               "ring counters must be lock-free to work across processes");
_Static_assert(offsetof(struct ring_shared, head) == 64, "head on its own line");
_Static_assert(offsetof(struct ring_shared, tail) == 128, "tail on its own line");
_Static_assert(offsetof(struct ring_shared, sleeping) == 192, "sleeping on its own line");
_Static_assert(sizeof(struct ring_shared) <= RING_HEADER_BYTES, "header fits");

static uint64_t slot_stride(uint32_t slot_size) {
    uint64_t s = (uint64_t)slot_size + RING_SLOT_HEADER;
    return (s + RING_CACHE_LINE - 1) / RING_CACHE_LINE * RING_CACHE_LINE;
}

size_t ring_bytes(uint32_t slot_size, uint32_t n_slots) {
    if (slot_size == 0 || n_slots == 0) return 0;
    /* stride < 2^33 and n_slots < 2^32: the product fits in 65 bits at
     * most, so check it against SIZE_MAX by division. */
    uint64_t stride = slot_stride(slot_size);
    if (stride > (SIZE_MAX - RING_HEADER_BYTES) / n_slots) return 0;
    return (size_t)(RING_HEADER_BYTES + stride * n_slots);
}

static unsigned char *slot_at(const struct ring *r, uint64_t k) {
    return r->slots + (k % r->n_slots) * r->stride;
}

int ring_init(struct ring *r, void *mem, size_t mem_size, uint32_t slot_size, uint32_t n_slots,
              char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    size_t need = ring_bytes(slot_size, n_slots);
    if (need == 0) {
        snprintf(err, errlen, "ring: bad geometry: slot_size %u, n_slots %u", slot_size, n_slots);
        return IPC_EINVAL;
    }
    if (!mem || ((uintptr_t)mem % RING_CACHE_LINE) != 0) {
        snprintf(err, errlen, "ring: memory %p is not 64-byte aligned", mem);
        return IPC_EINVAL;
    }
    if (mem_size < need) {
        snprintf(err, errlen, "ring: %zu bytes given, %zu needed for %u slots of %u bytes", mem_size,
                 need, n_slots, slot_size);
        return IPC_EINVAL;
    }
    memset(mem, 0, RING_HEADER_BYTES);
    struct ring_shared *sh = mem;
    sh->version = RING_VERSION;
    sh->slot_size = slot_size;
    sh->n_slots = n_slots;
    sh->slot_stride = slot_stride(slot_size);
    atomic_store_explicit(&sh->head, 0, memory_order_relaxed);
    atomic_store_explicit(&sh->tail, 0, memory_order_relaxed);
    atomic_store_explicit(&sh->sleeping, 0, memory_order_relaxed);
    /* Magic last: whoever sees it (acquire) sees the rest of the header. */
    atomic_store_explicit(&sh->magic, RING_MAGIC, memory_order_release);
    return ring_attach(r, mem, mem_size, err, errlen);
}

int ring_attach(struct ring *r, void *mem, size_t mem_size, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    if (!mem || ((uintptr_t)mem % RING_CACHE_LINE) != 0 || mem_size < RING_HEADER_BYTES) {
        snprintf(err, errlen, "ring: attach: memory %p (%zu bytes) is not an aligned ring", mem,
                 mem_size);
        return IPC_EINVAL;
    }
    struct ring_shared *sh = mem;
    uint32_t magic = atomic_load_explicit(&sh->magic, memory_order_acquire);
    if (magic != RING_MAGIC) {
        snprintf(err, errlen, "ring: attach: bad magic 0x%08x (want 0x%08x): not a ring, or not initialized yet",
                 magic, RING_MAGIC);
        return IPC_ECORRUPT;
    }
    if (sh->version != RING_VERSION) {
        snprintf(err, errlen, "ring: attach: version %u, this build speaks %u", sh->version, RING_VERSION);
        return IPC_ECORRUPT;
    }
    size_t need = ring_bytes(sh->slot_size, sh->n_slots);
    if (need == 0 || need > mem_size || sh->slot_stride != slot_stride(sh->slot_size)) {
        snprintf(err, errlen,
                 "ring: attach: header says %u slots of %u bytes (stride %llu), which does not fit "
                 "the %zu bytes given",
                 sh->n_slots, sh->slot_size, (unsigned long long)sh->slot_stride, mem_size);
        return IPC_ECORRUPT;
    }
    uint64_t head = atomic_load_explicit(&sh->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&sh->tail, memory_order_acquire);
    if (head - tail > sh->n_slots) {
        snprintf(err, errlen, "ring: attach: head %llu and tail %llu are %llu apart, more than %u slots",
                 (unsigned long long)head, (unsigned long long)tail,
                 (unsigned long long)(head - tail), sh->n_slots);
        return IPC_ECORRUPT;
    }
    r->sh = sh;
    r->slots = (unsigned char *)mem + RING_HEADER_BYTES;
    r->stride = sh->slot_stride;
    r->slot_size = sh->slot_size;
    r->n_slots = sh->n_slots;
    r->p_head = head;
    r->p_tail_seen = tail;
    r->c_tail = tail;
    r->c_head_seen = head;
    return 0;
}

void *ring_reserve(struct ring *r) {
    if (r->p_head - r->p_tail_seen >= r->n_slots) {
        r->p_tail_seen = atomic_load_explicit(&r->sh->tail, memory_order_acquire);
        if (r->p_head - r->p_tail_seen >= r->n_slots) return NULL;
    }
    return slot_at(r, r->p_head) + RING_SLOT_HEADER;
}

void ring_commit(struct ring *r, uint32_t len) {
    unsigned char *slot = slot_at(r, r->p_head);
    if (len > r->slot_size) len = r->slot_size;
    memcpy(slot, &len, sizeof len);
    r->p_head++;
    atomic_store_explicit(&r->sh->head, r->p_head, memory_order_release);
}

const void *ring_peek(struct ring *r, uint32_t *len) {
    if (r->c_tail == r->c_head_seen) {
        r->c_head_seen = atomic_load_explicit(&r->sh->head, memory_order_acquire);
        if (r->c_tail == r->c_head_seen) return NULL;
    }
    const unsigned char *slot = slot_at(r, r->c_tail);
    uint32_t n;
    memcpy(&n, slot, sizeof n);
    if (n > r->slot_size) n = r->slot_size;
    *len = n;
    return slot + RING_SLOT_HEADER;
}

void ring_release(struct ring *r) {
    r->c_tail++;
    atomic_store_explicit(&r->sh->tail, r->c_tail, memory_order_release);
}

int ring_try_push(struct ring *r, const void *data, uint32_t len) {
    if (len > r->slot_size) return IPC_ETOOBIG;
    void *p = ring_reserve(r);
    if (!p) return IPC_EAGAIN;
    if (len) memcpy(p, data, len);
    ring_commit(r, len);
    return 0;
}

int ring_try_pop(struct ring *r, void *buf, uint32_t cap, uint32_t *len) {
    uint32_t n;
    const void *p = ring_peek(r, &n);
    if (!p) return IPC_EAGAIN;
    *len = n;
    if (n > cap) return IPC_ETOOBIG;
    if (n) memcpy(buf, p, n);
    ring_release(r);
    return 0;
}

uint32_t ring_count(const struct ring *r) {
    uint64_t h = atomic_load_explicit(&r->sh->head, memory_order_acquire);
    uint64_t t = atomic_load_explicit(&r->sh->tail, memory_order_acquire);
    return (uint32_t)(h - t);
}
