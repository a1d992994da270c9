/* The planner: which contiguous layers each pipeline stage owns and which
 * experts each rank of a stage holds, memory per rank, and refusal of plans
 * that do not fit. A library with no MPI (used by grok1-plan and grok1-run). */
#ifndef G1_PLAN_H
#define G1_PLAN_H

#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "engine.h"
#include "status.h"

#define G1_PLAN_FORMAT "grok1-plan"
#define G1_PLAN_VERSION 1
/* CPU threads per rank the planner counts the per-thread buffers for when
 * not told (grok1-plan --threads; grok1-run counts its own). */
#define G1_PLAN_THREADS 64

/* What the plan must serve. */
typedef struct g1_plan_request {
    g1_config cfg;               /* the model */
    int stages;                  /* P >= 1, <= num_layers */
    int ep;                      /* E: divides num_experts */
    double mem_per_rank;         /* bytes available per rank; 0 = no limit */
    const char *mem_per_rank_from; /* where it came from, for messages ("mem_per_rank in P.json"); NULL:
                                    * "--mem-per-rank" */
    int slots;                   /* sequence slots served at once (micro-batches x batch size) */
    int batch_size;              /* > 0: the slots follow the micro-batches instead, micro_batches (stages when
                                  * 0) x batch_size, as grok1-run's do (--batch-size); `slots` is not read */
    int context;                 /* positions per slot (KV cache length); 0 = max_seq_len */
    int max_batch_tokens;        /* tokens per forward step (activation buffers) */
    int micro_batches;           /* M in flight (grok1-run --micro-batches; 0: stages): message buffers */
    int kv_bytes;                /* bytes per KV cache element: 4 (float32; 0 means 4) or 2 (bf16, CUDA) */
    const int *layers_per_stage; /* optional override: `stages` counts summing to num_layers */
    int balance_prompt;          /* cuts balance prompt FLOPs (g1_plan_prompt_bound) instead of decode bytes */
    int balance_fallback;        /* with balance_prompt: when those cuts do not fit mem_per_rank but the
                                  * decode balance's do, take those (g1_plan.balance_prompt says which) */
    /* The CUDA backend when cuda_sms > 0: a rank's memory is its GPU's,
     * the weights as uploaded (one scale array a matrix) and the scratch
     * as the engine counts it (g1_cuda_engine_buffer_bytes) on a GPU of
     * cuda_sms multiprocessors, compute capability 9, under cuda_gemm and
     * cuda_tune; needs a build with CUDA. 0: the CPU backend's memory. */
    int cuda_sms;
    int cuda_gemm;               /* g1_cuda_gemm (engine.h) */
    g1_cuda_opts cuda_tune;      /* grok1-run --cuda-tune's switches (zeros: the defaults) */
    /* grok1-run --dump-logits: rank 0 also holds the rows its dump writer
     * queues, max(dump_buffer, one write: the logits rows its scheduler
     * computes at once, min(max(2^24 / V, 1), max_batch_tokens) x V x 4), in host memory:
     * counted in its buffers on the CPU backend only (cuda_sms 0).
     * dump_buffer: grok1-run --dump-buffer in bytes (0: G1_DUMP_WRITER_BYTES). */
    int dump_logits;
    double dump_buffer;
    /* CPU threads per rank (OpenMP's; grok1-run --threads): on the CPU
     * backend every rank's engine keeps an attention score row of
     * `context` floats a thread, and rank 0's scheduler a sampler a thread
     * (g1_sampler_bytes). 0: G1_PLAN_THREADS. */
    int threads;
    /* grok1-run --plan: the plan file whose fixed layout (its cuts in
     * layers_per_stage) is checked; a refusal suggests a new plan from
     * grok1-plan, not grok1-run's --stages or --ep. NULL otherwise. */
    const char *plan_file;
} g1_plan_request;

/* Memory of one rank, in bytes. */
typedef struct g1_plan_mem {
    double weights;  /* attention, norms, router of its layers + its experts (+ embedding on rank 0) */
    double kv_cache; /* its sequences' caches for its layers at full context */
    double buffers;  /* activations and message buffers */
    double messages; /* of buffers: the pipeline's and the all-to-all's (g1_dist_buffer_bytes) */
    double total;
} g1_plan_mem;

typedef struct g1_plan {
    g1_config cfg;       /* the model this plan is for (checked by grok1-run) */
    int stages, ep;
    int *cut;            /* (stages + 1): stage s owns layers [cut[s], cut[s+1]) */
    g1_plan_mem *mem;    /* (stages * ep), rank r = stage * ep + slot */
    double *stage_cost;  /* (stages) relative cost used for balancing */
    double mem_per_rank; /* the limit it was checked against (0 = none) */
    int slots, context, max_batch_tokens;
    int micro_batches;   /* M the message buffers were counted for */
    int kv_bytes;        /* bytes per KV cache element the plan counted (4, or 2 for bf16) */
    /* Added: the parts of stage_cost (bytes read per decode step by one
     * rank, see docs/PLAN.md): one layer, and what rank 0 adds to stage 0. */
    double layer_cost, rank0_cost;
    int balance_prompt;  /* the planner's cuts balance prompt FLOPs (else decode bytes, or given cuts) */
    int cuda_sms;        /* > 0: memory counted for the CUDA backend on GPUs of this many multiprocessors */
    int dump_logits;     /* rank 0's buffers count the logits dump's writer (g1_plan_request.dump_logits) */
    double dump_buffer;  /* its --dump-buffer, bytes (G1_DUMP_WRITER_BYTES when not given) */
    int threads;         /* CPU threads per rank the per-thread buffers were counted for (cpu backend; 0: a
                          * plan file written before they were counted) */
} g1_plan;

/* Balanced contiguous cuts (stage 0 lighter: rank 0 also embeds, un-embeds
 * and samples), memory per rank; G1_ERR_ARG with a message when the layout
 * is impossible or a rank does not fit mem_per_rank (naming the rank, what
 * it needs and what would fit). */
g1_status g1_plan_make(const g1_plan_request *req, g1_plan *out);
void g1_plan_free(g1_plan *p);

/* Experts held by expert slot e: [first, first + count). */
void g1_plan_experts(const g1_plan *p, int slot, int *first, int *count);
/* Added: sequence slots whose KV cache expert slot e keeps (global slot g
 * belongs to expert slot g % ep): slots / ep, plus one for e < slots % ep. */
int g1_plan_seqs(const g1_plan *p, int slot);

/* JSON (jansson) with format/version, the model's hyper-parameters, P, E,
 * cuts and per-rank memory. read refuses other formats and bad cuts. */
g1_status g1_plan_write_json(const g1_plan *p, const char *path);
g1_status g1_plan_read_json(const char *path, g1_plan *out);
/* G1_ERR_ARG unless the plan was made for this model (every hyper-parameter). */
g1_status g1_plan_check_model(const g1_plan *p, const g1_config *cfg);
/* Added: a bound on decode speed from memory bandwidth alone. A decode step
 * of stage s takes t_s = (stage_cost[s] + fill * KV_s / M) / bandwidth
 * (bytes per second per rank; KV_s the largest KV cache of the stage's
 * ranks, of which one micro-batch's step reads about 1/M; fill in [0, 1]:
 * how far the caches are towards full context). With M micro-batches in flight every slot
 * advances one token per round of max(M * t_slowest, sum of t_s) seconds
 * (the slowest stage runs M steps a round; a micro-batch's way through all
 * stages takes the sum), so tokens/s <= slots / round. Returned, with the
 * round's slowest step in *step_s and that stage in *slowest. Compute,
 * messages and rank 0's CPU work are not counted. */
double g1_plan_decode_bound(const g1_plan *p, double bandwidth, int micro_batches, double fill, double *step_s,
                            int *slowest);
/* The bound at empty caches and at full context, as grok1-plan prints it. */
void g1_plan_print_bound(const g1_plan *p, double bandwidth, int micro_batches, FILE *f);

/* Added: a bound on prompt (prefill and scoring) tokens/s from arithmetic
 * alone, at `flops` FLOP/s per rank. Per token and layer: the attention
 * matmuls 2 (D Hq K + 2 D Hkv K + Hq K D), the router 2 D NE and the
 * experts 2 k 3 D F, spread over the stage's E ranks (attention by
 * sequence, experts by owner: even on average); rank 0 adds the
 * un-embedding 2 V D for every token whose logits are needed (`logits`
 * of them per token: 1 when scoring every position, 0 for none). The
 * slowest rank bounds the pipeline: tokens/s <= 1 / max_s t_s, its stage in
 * *slowest. Attention scores (4 pos Hq K a layer) are left out. */
double g1_plan_prompt_bound(const g1_plan *p, double flops, double logits, int *slowest);
/* The FLOPs of one token through one layer, as counted there. */
double g1_plan_layer_flops(const g1_config *c);
void g1_plan_print_prompt_bound(const g1_plan *p, double flops, FILE *f);

/* Human-readable table: one row per rank (stage, slot, layers, experts,
 * weights, KV cache, buffers, total) and the stage costs. */
void g1_plan_print(const g1_plan *p, FILE *f);

/* Added (plan_config.c): the model from a preset name (tiny, small, grok-1)
 * or a JSON object of hyper-parameters over the grok-1 values; validated. */
g1_status g1_plan_load_config(const char *spec, g1_config *cfg);
/* Added: a byte count "80G", "512M", "1.5T", "4096" (K/M/G/T = powers of
 * 1024, optional "iB"/"B"), at most G1_PLAN_MAX_SIZE; G1_ERR_ARG naming
 * `what` when malformed or larger. */
#define G1_PLAN_MAX_SIZE 1152921504606846976.0 /* 2^60 bytes, 1048576T */
g1_status g1_plan_parse_size(const char *what, const char *text, double *bytes);

#endif
