/* Engine state shared by engine.c and moe_local.c. Not exported. */
#ifndef G1_ENGINE_INTERNAL_H
#define G1_ENGINE_INTERNAL_H

#include "engine.h"

typedef struct g1_slot {
    int len;      /* cached positions */
    int cap;      /* allocated positions */
    float **k;    /* [layers] (cap, Hkv, K) */
    float **v;    /* [layers] (cap, Hkv, K) */
} g1_slot;

struct g1_engine {
    struct g1_cuda_engine *cuda; /* G1_BACKEND_CUDA: does all the work; nothing below is allocated */
    const g1_weights *w;  /* borrowed (g1_engine_init) or &own; NULL with CUDA from a source */
    g1_weights own;      /* g1_engine_init_source, CPU: the weights loaded */
    int owns_w;
    g1_config cfg;
    g1_engine_opts opts;
    g1_moe_dispatch dispatch;
    int nL;          /* layers held */
    g1_slot *slots;  /* (n_slots) */
    /* scratch, sized for opts.max_batch tokens */
    float *xn;       /* (T, D) normalised input */
    float *q;        /* (T, Hq*K) */
    float *k, *v;    /* (T, Hkv*K) */
    float *att;      /* (T, Hq*K) */
    float *o;        /* (T, D) */
    int *idx;        /* (T, topk) */
    float *gate;     /* (T, topk) */
    const float **kc, **vc; /* (T) cache pointers per token */
    float *scores;   /* (threads, max_context) */
    size_t scores_stride;
    /* MoE local scratch */
    int *tok;        /* (T*topk) rows gathered for one expert */
    float *xg;       /* (T*topk, D) */
    float *h1, *h2;  /* (T*topk, F) */
    float *xk;       /* (T*topk, D) expert inputs, row t*topk + j */
    float *yk;       /* (T*topk, D) expert outputs, row t*topk + j */
    size_t scratch_bytes; /* what the scratch above asked for (g1_engine_scratch_bytes) */
    void **mem;      /* g1_engine_mem_alloc's blocks, freed with the engine */
    int n_mem;
    FILE *route_log; /* g1_engine_set_route_log: NULL, or the test hook's file */
    long long route_n; /* forward calls so far (the hook's N) */
};

#endif
