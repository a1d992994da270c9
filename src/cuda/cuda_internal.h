/* State of the CUDA engine, shared by cuda_engine.c, cuda_moe.c and the
 * benchmark. Not exported beyond src/cuda and tests/cuda. */
#ifndef G1_CUDA_INTERNAL_H
#define G1_CUDA_INTERNAL_H

#include "cuda/cuda_engine.h"
#include "cuda/cuda_check.h"

typedef struct g1_cuda_layer {
    float *norm[G1_NUM_NORM]; /* (D) each */
    g1_dqmat attn[4];         /* q (D, Hq*K), k, v (D, Hkv*K), o (Hq*K, D) */
    float *router;            /* (D, E) */
    g1_dqmat *moe[3];         /* [gate|up|down] (E_local) host array of device matrices */
} g1_cuda_layer;

typedef struct g1_cuda_slot {
    int len, cap;             /* cached and allocated positions */
    void *k, *v;              /* (layers, cap, Hkv*K) each, device: float32, or bf16 (opts.kv_cache) */
} g1_cuda_slot;

struct g1_cuda_engine {
    g1_config cfg;
    g1_engine_opts opts;
    g1_moe_dispatch dispatch; /* .run NULL: the MoE runs on the device */
    int layer0, nL, expert0, expert1;
    cudaStream_t stream;
    cublasHandle_t blas;
    g1_cuda_mm mm;
    void **allocs;            /* device allocations, freed by g1_cuda_engine_free */
    int n_allocs, cap_allocs;
    size_t room_weights, room_buffers, room_free; /* g1_cuda_engine_check_room's figures */
    uint16_t *embedding;      /* (V, D) bf16, NULL when not held */
    float *final_norm;        /* (D) */
    g1_cuda_layer *layers;    /* (nL) host array */
    g1_dqmat *mats;           /* (nL * 3 * E_local) backing of layers[].moe */
    g1_dqmat *mats_d;         /* the same array in device memory (the grouped GEMV) */
    int moe_host_groups;      /* g1_cuda_opts.moe_host_groups */
    int moe_device_max;       /* most tokens of a MoE grouped on the device (g1_cuda_grouped_max_rows) */
    int graph_max;            /* most tokens of a decode step in a CUDA graph */
    g1_cuda_slot *slots;      /* (n_slots) */
    int max_splits;           /* attention key splits (g1_cuda_attn_layout_for: from the context alone) */
    int attn_chunk;           /* keys per split */
    int attn_range;           /* most tokens of one attention launch (part holds that many) */
    int attn_range_limit;     /* g1_cuda_opts.attn_range_tokens */
    int gemm_overlap;         /* !g1_cuda_opts.gemm_no_overlap */
    int panel_elems;          /* g1_cuda_opts.panel_elems */
    cudaGraphExec_t *graphs;  /* ((graph_max + 1)^2) decode steps' graphs by T and attention
                               * tiles, made on first use; NULL: no graphs (g1_cuda_opts.no_graphs) */
    unsigned long long *graph_used; /* (as graphs) when each was last replayed (graph_clock) */
    unsigned long long graph_clock; /* graph replays so far */
    int graphs_kept;          /* most graphs held at once (g1_cuda_opts.max_graphs) */
    int graphs_live;          /* graphs held now */
    int n_graphs;             /* graphs made */
    int n_graphs_dropped;     /* graphs destroyed to make room (graphs_kept) */
    g1_cuda_attn_range *ranges; /* (ceil(max_batch / attn_range)) the batch's, host */
    int n_ranges;             /* the batch's ranges, their tiles in tab */
    int attn_mma;             /* the device and options allow the tensor-core attention */
    /* per-batch token table: k0 (T ptrs), v0 (T ptrs), lstride (T), pos (T),
     * attention tiles (T pairs: first token, count) */
    void *tab, *tab_h;        /* device, pinned host */
    /* device scratch, sized for max_batch tokens (R = max_batch * top-k rows) */
    float *x, *xn;            /* (T, D) */
    float *q, *att;           /* (T, Hq*K) */
    float *k, *v;             /* (T, Hkv*K) */
    float *o;                 /* (T, D) */
    float *part;              /* (attn_range, Hq, max_splits, K + 2) attention splits */
    int *idx;                 /* (T, topk) */
    float *gate;              /* (T, topk) */
    int *rows;                /* (2R): grouped order of rows, then each row's place in it */
    int *grp;                 /* (3 E_local + 1): groups made on the device (g1_cuda_moe_group) */
    int *tok;                 /* (T) token ids */
    float *xg, *yg;           /* (R, D) expert inputs / outputs in grouped order */
    float *xr;                /* (R, D) rows that came from the host (g1_cuda_moe_expert_rows) */
    float *h1, *h2;           /* (R, F) */
    int logits_rows;          /* most logits rows un-embedded at once (g1_cuda_opts.logits_rows) */
    float *logits;            /* (logits_rows, V) when the embedding is held */
    int *target;              /* (logits_rows) with the embedding: the tokens scored */
    g1_row_score *score;      /* (logits_rows) with the embedding: their scores */
    g1_row_score *score_h;    /* (logits_rows) pinned */
    /* pinned host mirrors */
    int *idx_h, *rows_h;      /* (R), (2R) */
    float *gate_h;            /* (R) */
    float *xh, *yh;           /* (R, D) host side of the dispatch / expert rows */
    /* the benchmark's phase events (NULL otherwise): recorded in layer 0 at
     * its start, after the attention block, after the router, after the
     * MoE (its host round trip included, above moe_device_max tokens) and at its end */
    cudaEvent_t *prof;
    /* the test hook GROK1_ROUTE_LOG (g1_engine_set_route_log): its file or
     * NULL, the forward calls so far, and the batch in flight's rows */
    FILE *route_log;
    long long route_n;
    const g1_batch *route_b;
};
enum { G1_CUDA_PROF_EVENTS = 5 };

/* Start an engine of nL layers of `cfg` (all experts, no embedding) whose
 * weights are pseudo-random and made on the device: the benchmark's layer
 * at the real shapes without a file or host copy. */
g1_status g1_cuda_engine_init_random(g1_cuda_engine **out, const g1_config *cfg, int nL, const g1_engine_opts *opts,
                                     const g1_cuda_opts *co, uint64_t seed);
/* The layers over x (T, D) already in device memory (e->x): no host copies. */
g1_status g1_cuda_engine_forward_device(g1_cuda_engine *e, const g1_batch *b);
/* MoE on the device for local layer l: out (T, D) from xn, idx, gate (device). */
g1_status g1_cuda_moe_device(g1_cuda_engine *e, int l, int T, const float *xn, const int *idx, const float *gate,
                             float *out);
/* y (n, D) = expert[i](x[i]) for n rows of device x with host expert ids. */
g1_status g1_cuda_expert_rows_device(g1_cuda_engine *e, int l, int n, const float *x, const int *expert_h, float *y);

#endif
