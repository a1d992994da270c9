/* Deterministic synthetic weights of the real architecture (for tests and
 * benchmarks; no checkpoint needed). Every value is a pure function of
 * (seed, tensor, index), so a tensor can be produced whole, by rows, in
 * memory or streamed to a file, and always comes out the same. grok1-mkckpt
 * writes exactly what g1_synth_weights puts in memory. */
#ifndef G1_SYNTH_H
#define G1_SYNTH_H

#include <stdint.h>

#include "config.h"
#include "weights.h"

typedef struct g1_synth {
    g1_config cfg;
    uint64_t seed;
    double qk_gain; /* multiplies the q and k scales: > 1 makes attention "hot" */
} g1_synth;

/* Scale row blocks used for generated models: 8 for attn_o and moe_down (as
 * in the release; fewer if 8 does not divide the rows), 1 otherwise. */
void g1_synth_blocks(const g1_config *cfg, int blocks[G1_NUM_QMAT]);

/* Rows [row0, row0+nrows) of the float32 embedding table (V, D). */
void g1_synth_embedding_rows(const g1_synth *s, int64_t row0, int64_t nrows, float *out);
void g1_synth_final_norm(const g1_synth *s, float *out /* (D) */);
void g1_synth_norm(const g1_synth *s, int layer, g1_norm_id n, float *out /* (D) */);
void g1_synth_router(const g1_synth *s, int layer, float *out /* (D, E) */);
/* One quantised matrix (expert ignored for attention matrices): int8 values
 * (rows, cols) and scales (blocks, cols). Scales are bf16-exact and differ
 * from block to block. */
void g1_synth_qmat(const g1_synth *s, int layer, g1_qmat_id id, int expert, int blocks,
                   int8_t *w, float *scale);

/* Fill already-allocated weights (g1_weights_alloc with g1_synth_blocks). */
g1_status g1_synth_weights(const g1_synth *s, g1_weights *w);

#endif
