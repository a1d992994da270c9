/* The weights one process holds: a contiguous range of layers and, within
 * them, a contiguous range of experts; optionally the embedding table (the
 * rank that embeds and un-embeds). Read-only once filled. */
#ifndef G1_WEIGHTS_H
#define G1_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "status.h"

/* An int8 matrix stored [rows, cols] (y = x @ W) with scales [blocks, cols]:
 * element [r, c] dequantises to bf16(w[r, c] * scale[r / (rows / blocks), c]). */
typedef struct g1_qmat {
    int8_t *w;     /* (rows, cols) */
    float *scale;  /* (blocks, cols) */
    /* (blocks, cols) scale * 65537, set by g1_weights_prepare when every
     * scale is a normal bf16 value (as released): then bf16(q * s) is
     * c - (c - q*s) with c = q * scale_split, exactly (Veltkamp's split,
     * checked for every int8 and bf16 pair). NULL: round with integer ops. */
    float *scale_split;
    float *split_buf; /* owned storage for scale_split, kept for the next part (g1_weights_realloc) */
    int rows, cols, blocks;
} g1_qmat;

typedef enum g1_qmat_id {
    G1_ATTN_Q, G1_ATTN_K, G1_ATTN_V, G1_ATTN_O,
    G1_MOE_GATE, G1_MOE_UP, G1_MOE_DOWN,
    G1_NUM_QMAT
} g1_qmat_id;

/* HDF5 dataset name of each quantised matrix ("attn_q", ..., "moe_down"). */
extern const char *const g1_qmat_names[G1_NUM_QMAT];

typedef enum g1_norm_id { G1_ATTN_NORM, G1_ATTN_OUT_NORM, G1_MOE_NORM, G1_MOE_OUT_NORM, G1_NUM_NORM } g1_norm_id;
extern const char *const g1_norm_names[G1_NUM_NORM];

typedef struct g1_layer_weights {
    float *norm[G1_NUM_NORM]; /* (D) each: pre-attn, post-attn, pre-MoE, post-MoE */
    g1_qmat attn[4];          /* q (D, Hq*K), k (D, Hkv*K), v (D, Hkv*K), o (Hq*K, D) */
    float *router;            /* (D, E): all experts, every rank routes */
    g1_qmat *moe[3];          /* [gate|up|down][E_local]: gate, up (D, F); down (F, D) */
} g1_layer_weights;

typedef struct g1_weights {
    g1_config cfg;
    int layer0, layer1;       /* layers [layer0, layer1) */
    int expert0, expert1;     /* experts [expert0, expert1) of each layer */
    int blocks[G1_NUM_QMAT];  /* scale row blocks of each matrix kind */
    uint16_t *embedding;      /* (V, D) bf16, NULL when not held */
    float *final_norm;        /* (D), NULL when not held */
    g1_layer_weights *layers; /* (layer1 - layer0) */
    void **allocs;            /* owned allocations, freed by g1_weights_free */
    size_t *alloc_len;        /* their sizes */
    int n_allocs, cap_allocs;
    size_t fresh_bytes;       /* allocated since the last g1_weights_alloc or _realloc began (0: reused) */
} g1_weights;

/* Shape of a quantised matrix of this config: rows and cols. */
void g1_qmat_shape(const g1_config *cfg, g1_qmat_id id, int *rows, int *cols);

/* Allocate (uninitialised) storage for layers [l0,l1), experts [e0,e1), with
 * `blocks[id]` scale row blocks per matrix kind, and the embedding and final
 * norm when with_embedding. */
g1_status g1_weights_alloc(g1_weights *w, const g1_config *cfg, int l0, int l1, int e0, int e1,
                           const int blocks[G1_NUM_QMAT], int with_embedding);
/* As g1_weights_alloc, for a `w` that is zeroed or holds an earlier part:
 * when that part has the same shape (the same sizes, number of layers,
 * experts, scale blocks and embedding or not), its memory is kept for the
 * new layers (uninitialised as far as the caller is concerned; scale_split
 * is cleared until g1_weights_prepare), else it is freed and new memory
 * allocated. Loading a model a layer at a time through
 * one `w` thus touches fresh pages for the first layer only. */
g1_status g1_weights_realloc(g1_weights *w, const g1_config *cfg, int l0, int l1, int e0, int e1,
                             const int blocks[G1_NUM_QMAT], int with_embedding);
void g1_weights_free(g1_weights *w);
/* After the weights are filled: derive what the kernels use to go faster
 * (scale_split). Loaders call it; optional for hand-made matrices. */
g1_status g1_weights_prepare(g1_weights *w);
/* Bytes of weight storage held (int8 + scales + floats). */
size_t g1_weights_bytes(const g1_weights *w);

#endif
