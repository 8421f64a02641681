/* ring: a single-producer single-consumer ring of fixed-size slots, living
 * in shared memory (usually a shm region of the session, ipc/shm.h, at an
 * offset the coordinator chose). One ring per (producer, consumer) pair and
 * direction; waiting and wakeups are ipc/doorbell.h's job.
 *
 * Layout (all offsets from the ring's start, which must be 64-byte aligned;
 * integers in the host's byte order, both sides run on one machine):
 *
 *   off  size  field       written by
 *     0     4  magic       creator (ring_init), "HRNG"; stored last, release
 *     4     4  version     creator (RING_VERSION)
 *     8     4  slot_size   creator: largest payload in bytes
 *    12     4  n_slots     creator
 *    16     8  slot_stride creator: bytes per slot (8 + slot_size, rounded up to 64)
 *    24    40  (zero)
 *    64     8  head        PRODUCER only: messages committed so far (monotonic u64)
 *    72    56  (pad: head alone on its cache line)
 *   128     8  tail        CONSUMER only: messages released so far (monotonic u64)
 *   136    56  (pad)
 *   192     4  sleeping    CONSUMER sets 1 before it parks; PRODUCER clears it
 *                          (atomic_exchange to 0) when it rings the doorbell
 *   196    60  (pad)
 *   256     .  n_slots slots of slot_stride bytes; slot i holds message
 *              number k when k % n_slots == i:
 *                +0  u32 len       PRODUCER (payload bytes, <= slot_size)
 *                +4  u32 (zero)
 *                +8  payload[slot_size]  PRODUCER; read by the consumer
 *
 * Ordering: the producer writes a slot, then stores head with release; the
 * consumer loads head with acquire, so it sees the slot's bytes. The consumer
 * reads a slot, then stores tail with release; the producer loads tail with
 * acquire before it overwrites that slot. head - tail is the number of full
 * slots (0..n_slots). Counters are 64-bit and never wrap in practice (2^64
 * messages). Each side also keeps a private copy of the other side's
 * counter and re-reads the shared one only when the copy says full/empty,
 * so the cache line of the other side is touched rarely.
 *
 * A `struct ring` is one process's view. The producer uses only the p_*
 * fields and the consumer only the c_* fields, so both sides may even share
 * one struct within a process, but each side normally ring_attach()es its
 * own. Exactly one producer and one consumer: two threads pushing into the
 * same ring is a bug this code does not detect. */
#ifndef HEARTH_RING_H
#define HEARTH_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define RING_MAGIC 0x474e5248u /* "HRNG" read as little-endian bytes */
#define RING_VERSION 1u
#define RING_CACHE_LINE 64
#define RING_HEADER_BYTES 256  /* header + three counter lines */
#define RING_SLOT_HEADER 8     /* u32 len + u32 pad before each payload */

/* The shared header, exactly as laid out above. */
struct ring_shared {
    _Alignas(RING_CACHE_LINE) _Atomic uint32_t magic;
    uint32_t version;
    uint32_t slot_size;
    uint32_t n_slots;
    uint64_t slot_stride;
    _Alignas(RING_CACHE_LINE) _Atomic uint64_t head;
    _Alignas(RING_CACHE_LINE) _Atomic uint64_t tail;
    _Alignas(RING_CACHE_LINE) _Atomic uint32_t sleeping;
};

struct ring {
    struct ring_shared *sh;
    unsigned char *slots;  /* first slot, RING_HEADER_BYTES after sh */
    uint64_t stride;       /* private copies of the header, validated at attach */
    uint32_t slot_size;
    uint32_t n_slots;
    uint64_t p_head;       /* producer: next message number to write */
    uint64_t p_tail_seen;  /* producer: last tail read from shm */
    uint64_t c_tail;       /* consumer: next message number to read */
    uint64_t c_head_seen;  /* consumer: last head read from shm */
};

/* Bytes a ring with these parameters occupies; 0 if either is 0 or the size
 * overflows. Always a multiple of 64. */
size_t ring_bytes(uint32_t slot_size, uint32_t n_slots);

/* Creator (the coordinator, before any worker attaches): lays out an empty
 * ring in mem (64-byte aligned, at least ring_bytes() long). */
int ring_init(struct ring *r, void *mem, size_t mem_size, uint32_t slot_size, uint32_t n_slots,
              char *err, size_t errlen);

/* Producer or consumer: checks the header (magic, version, sizes fit in
 * mem_size) and takes the counters' current values. IPC_ECORRUPT on a bad
 * header. */
int ring_attach(struct ring *r, void *mem, size_t mem_size, char *err, size_t errlen);

/* Producer, zero-copy: the payload area of the next free slot (slot_size
 * bytes, 8-byte aligned), or NULL when the ring is full. Nothing is visible
 * to the consumer until ring_commit; calling reserve twice returns the same
 * slot. */
void *ring_reserve(struct ring *r);
/* Producer: publishes the reserved slot with len payload bytes (<= slot_size;
 * larger is clamped). Must follow a successful ring_reserve. */
void ring_commit(struct ring *r, uint32_t len);

/* Consumer, zero-copy: the oldest message and its length, or NULL when the
 * ring is empty. The bytes stay valid and unchanged until ring_release. A
 * length field above slot_size (a corrupt producer) reads as slot_size. */
const void *ring_peek(struct ring *r, uint32_t *len);
/* Consumer: frees the slot returned by the last ring_peek. */
void ring_release(struct ring *r);

/* Copying forms. push: 0, IPC_EAGAIN (full) or IPC_ETOOBIG (len >
 * slot_size). pop: 0 with *len set, IPC_EAGAIN (empty) or IPC_ETOOBIG
 * (*len set to the message's size, which stays in the ring). */
int ring_try_push(struct ring *r, const void *data, uint32_t len);
int ring_try_pop(struct ring *r, void *buf, uint32_t cap, uint32_t *len);

/* Either side: messages in the ring now (a snapshot). */
uint32_t ring_count(const struct ring *r);

#endif
