/* The batch admission rule both engines (src/engine.c, src/cuda) apply, in
 * one place: a batch within the engine's size, slots that exist, positions
 * inside the context, and no gap after what a slot holds (a smaller
 * position rewinds the slot). Forks are checked and applied first, in
 * order. Tokens are admitted in order, so a prompt chunk of consecutive
 * positions in one batch is fine. */
#ifndef G1_BATCH_ADMIT_H
#define G1_BATCH_ADMIT_H

#include "engine.h"

/* How a backend's slots are read and grown. */
typedef struct g1_slot_ops {
    void *ctx;
    int (*len)(void *ctx, int slot);                 /* positions cached */
    g1_status (*extend)(void *ctx, int slot, int n); /* room for n positions, length n */
    /* dst's first n positions (room made, length n) := src's */
    g1_status (*fork)(void *ctx, int src, int dst, int n);
} g1_slot_ops;

g1_status g1_batch_admit(const g1_batch *b, const g1_engine_opts *o, const g1_slot_ops *ops);

#endif
