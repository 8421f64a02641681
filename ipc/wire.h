/* wire: the layout of the data-plane messages in the session's rings.
 *
 * Rings (ipc/ring.h) carry raw bytes; this header says what the runtime puts
 * in them. Per CPU worker k there are two rings in the session's "rings"
 * region:
 *   in.cpuK   GPU worker -> CPU worker k: the FFN input of one layer
 *   out.cpuK  CPU worker k -> GPU worker: its partial FFN output
 * Each message is a wire_ffn header followed by n_tokens x dim values,
 * row-major (token-major): float32 in in.cpuK; int64 fixed point in out.cpuK
 * (core/forward.h, FFN_GROUP: partial sums that add up exactly). Logits do not travel in rings: the GPU worker
 * writes them to the "logits" region and says so with StepDone.
 *
 * step_id and layer let a receiver drop stale messages after a worker
 * restart: a restarted CPU worker may compute again an input whose output
 * its predecessor already sent, and a restarted GPU worker may find outputs
 * of the step its predecessor was running. */
#ifndef HEARTH_WIRE_H
#define HEARTH_WIRE_H

#include <stdint.h>

struct wire_ffn {
    uint64_t step_id;  /* the Step this layer belongs to */
    uint32_t layer;
    uint32_t n_tokens; /* rows of the payload */
    /* out.cpuK only, with a sidecar (core/hotcold.h): FFN weight bytes this
     * partial read, and what the dense FFN of the same neurons would read */
    double weight_bytes, dense_bytes;
    /* float payload[n_tokens * dim] follows */
};
_Static_assert(sizeof(struct wire_ffn) == 32, "wire_ffn is 32 bytes (payload stays 16-byte aligned)");

/* Ring names of CPU worker k ("in.cpu0", "out.cpu0"). */
#define WIRE_RING_IN "in.cpu%d"
#define WIRE_RING_OUT "out.cpu%d"
#define WIRE_REGION_RINGS "rings"
#define WIRE_REGION_LOGITS "logits"

#endif
