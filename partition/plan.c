/* The planner proper: memory per rank (matching what src/ allocates), the
 * cost of a stage (bytes one rank reads per decode step), optimal contiguous
 * cuts, and the refusals. No MPI and no I/O here (JSON: plan_json.c; table:
 * plan_print.c). The model is docs/PLAN.md. */
#include "plan.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "cuda/cuda_engine.h"
#include "cuda/cuda_tune.h"
#include "sampler.h"
#include "synth.h"
#include "weights.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

/* ---- memory and cost of the pieces (bytes, as doubles: exact below 2^53) ---- */

/* One quantised matrix as stored: int8 + scale + scale_split (both (blocks, cols) float32). */
static double qmat_store(const g1_config *c, const int blocks[G1_NUM_QMAT], int id)
{
    int rows, cols;
    g1_qmat_shape(c, (g1_qmat_id)id, &rows, &cols);
    return (double)rows * cols + 2.0 * blocks[id] * cols * 4;
}

/* One quantised matrix as a decode step reads it: int8 + one of the scale arrays. */
static double qmat_read(const g1_config *c, const int blocks[G1_NUM_QMAT], int id)
{
    int rows, cols;
    g1_qmat_shape(c, (g1_qmat_id)id, &rows, &cols);
    return (double)rows * cols + (double)blocks[id] * cols * 4;
}

typedef struct sizes {
    double shared_store, expert_store; /* per layer: attention + norms + router; one expert */
    double shared_read, expert_read;
    double embed_store;                /* rank 0: bf16 table + final norm */
    double kv_per_pos_layer;           /* K and V, float32 */
} sizes;

static void compute_sizes(const g1_config *c, sizes *z)
{
    int blocks[G1_NUM_QMAT];
    g1_synth_blocks(c, blocks);
    double D = c->emb_size, small = 4 * D * 4 + D * c->num_experts * 4; /* norms + router */
    memset(z, 0, sizeof *z);
    z->shared_store = z->shared_read = small;
    for (int i = G1_ATTN_Q; i <= G1_ATTN_O; i++) {
        z->shared_store += qmat_store(c, blocks, i);
        z->shared_read += qmat_read(c, blocks, i);
    }
    for (int i = G1_MOE_GATE; i <= G1_MOE_DOWN; i++) {
        z->expert_store += qmat_store(c, blocks, i);
        z->expert_read += qmat_read(c, blocks, i);
    }
    z->embed_store = (double)c->vocab_size * D * 2 + D * 4;
    z->kv_per_pos_layer = 2.0 * c->num_kv_heads * c->key_size * 4; /* float32; scaled by kv_bytes / 4 */
}

/* One pipeline message of T tokens (mpi/grid.c g1_msg_bytes: a header,
 * slots, positions, T forks, the hidden states; mpi/ builds on this
 * library, so the formula is repeated here, and tests/mpi bytes_per_rank
 * holds the two equal). */
static double msg_bytes(const g1_config *c, double T)
{
    return 16 + T * 8 + T * (double)sizeof(g1_fork) + T * c->emb_size * 4;
}

/* The all-to-all's 5 row buffers of T x k rows (E > 1), on every rank. */
static double a2a_bytes(const g1_config *c, int T, int E)
{
    double D = c->emb_size;
    return E > 1 ? (double)T * c->num_selected_experts * ((D + 1) * 2 + D * 3) * 4 : 0;
}

/* What grok1-run's distributed runtime makes for rank rk of P x E with M
 * micro-batches in flight, T tokens a step (g1_dist_buffer_bytes): rank 0
 * keeps a send buffer for each of M + 1 micro-batches, holding its E
 * messages (T tokens in all, E headers, each message on a 64-byte
 * boundary: mpi/pipe_mpi.c slab_bytes), one to receive, its share's
 * activations (and, with one stage, each micro-batch's share on its way
 * back); every other rank M + 1 send and 2 receive buffers; with E > 1
 * every rank 5 row buffers of T x k rows for the all-to-all. One process:
 * none. */
static double message_bytes(const g1_config *c, int T_, int P, int E, int M, int rk)
{
    double T = T_, D = c->emb_size;
    if (P * E == 1)
        return 0;
    if (rk == 0)
        return (M + 1.0) * (msg_bytes(c, T) + E * (16.0 + 64)) + msg_bytes(c, T) + T * D * 4 +
               (P == 1 ? M * T * D * 4 : 0) + a2a_bytes(c, T_, E);
    return (M + 3.0) * msg_bytes(c, T) + a2a_bytes(c, T_, E);
}

/* The logits rows rank 0's scheduler computes at once (mpi/driver.c
 * driver_alloc: 64 MiB of them whatever the vocabulary, at least one, at
 * most a step's tokens). */
static double logits_rows(const g1_config *c, int T)
{
    int rows = (1 << 24) / c->vocab_size;
    return rows < 1 ? 1 : rows > T ? T : rows;
}

/* Engine scratch for T tokens (g1_engine_init: src/engine.c cpu_start) +
 * on rank 0 the scheduler's buffers (mpi/driver.c driver_alloc: its logits
 * rows, each of the M micro-batches' activations, tokens, slots,
 * positions, rows needing logits and forks, a token and a status a row,
 * the prefix cache's rows of every slot at their most: a token id, a
 * log-prob and a flag a position) and the one-process pipeline's
 * activations (mpi/pipe_local.c); the messages apart (message_bytes), the
 * per-thread buffers apart (thread_bytes). tests/plan test_plan_mem holds
 * this to what they allocate. */
static double buffer_bytes(const g1_config *c, int T_, int rank0, int M, int one_process, int slots, int context)
{
    double T = T_, D = c->emb_size, QK = (double)c->num_q_heads * c->key_size;
    double KV = (double)c->num_kv_heads * c->key_size, k = c->num_selected_experts, F = c->ffn_size;
    double b = T * (2 * D + 2 * QK + 2 * KV) * 4; /* xn, o, q, att, k, v */
    b += T * k * 4 * 3;                           /* idx, gate, tok */
    b += T * 8 * 2;                               /* kc, vc (pointers) */
    b += T * k * (D > F ? D : F) * 4;             /* xg */
    b += 2 * T * k * F * 4;                       /* h1, h2 */
    b += 2 * T * k * D * 4;                       /* yk, xk */
    if (rank0) {
        double rows = logits_rows(c, T_);
        b += rows * c->vocab_size * 4;                                    /* logits */
        b += M * T * (D * 4 + 4 * sizeof(int) + sizeof(g1_fork));         /* x, tok slot pos need, fork */
        b += T * 4 + rows * sizeof(g1_status);                            /* row_tok, row_st */
        b += (double)slots * context * (sizeof(int) + sizeof(double) + 1); /* prefix cache: held, held_lp, ok */
        b += one_process ? (double)M * T * D * 4 : 0;                     /* the local pipeline's x */
    }
    return b;
}

/* What the CPU backend keeps per thread: every rank's engine one row of
 * attention scores over the context (src/engine.c: threads x max_context
 * floats), rank 0's scheduler one sampler (mpi/driver.c driver_alloc). */
static double thread_bytes(const g1_config *c, int threads, int context, int rank0)
{
    return threads * ((double)context * 4 + (rank0 ? g1_sampler_bytes(c->vocab_size) : 0));
}

/* The rows grok1-run's logits dump writer holds on rank 0 at most
 * (mpi/dump_writer.c: its ring grows to its buffer, --dump-buffer, or to
 * the largest write when that is more): one write is at most the logits
 * rows the scheduler computes at once (logits_rows). */
static double dump_bytes(const g1_config *c, int T, double buffer)
{
    double write = logits_rows(c, T) * c->vocab_size * 4;
    return write > buffer ? write : buffer;
}

int g1_plan_seqs(const g1_plan *p, int slot)
{
    return p->slots / p->ep + (slot < p->slots % p->ep);
}

void g1_plan_experts(const g1_plan *p, int slot, int *first, int *count)
{
    int n = p->cfg.num_experts / p->ep;
    *first = slot * n;
    *count = n;
}

double g1_plan_layer_flops(const g1_config *c)
{
    double D = c->emb_size, q = (double)c->num_q_heads * c->key_size, kv = (double)c->num_kv_heads * c->key_size;
    return 2 * (D * q + 2 * D * kv + q * D) + 2 * D * c->num_experts +
           2.0 * c->num_selected_experts * 3 * D * c->ffn_size;
}

/* The sequence slots of a request: `slots`, or with a batch size the
 * micro-batches' (stages when not given) slots, as grok1-run counts them
 * (INT_MAX when more). */
static int req_slots(const g1_plan_request *r)
{
    if (r->batch_size <= 0)
        return r->slots;
    long long n = (long long)(r->micro_batches > 0 ? r->micro_batches : r->stages) * r->batch_size;
    return n > INT_MAX ? INT_MAX : (int)n;
}

/* Tokens one decode step carries: every slot, at most a batch. */
static int step_tokens(const g1_plan_request *r)
{
    return req_slots(r) < r->max_batch_tokens ? req_slots(r) : r->max_batch_tokens;
}

/* ---- optimal cuts ---- */

/* Layers have one cost each (identical shapes); stage 0 adds x0. The cost of
 * stage s over [i, j) is (j - i) * c + (s == 0 ? x0 : 0). Kept general in
 * per-layer prefix sums so the DP reads like the problem. */
typedef struct costs {
    const double *S; /* (L + 1) prefix sums of layer costs */
    double x0;
    int L, P;
} costs;

static double seg(const costs *k, int s, int i, int j) { return k->S[j] - k->S[i] + (s == 0 ? k->x0 : 0); }

/* Smallest achievable largest stage cost: dp over (stages, layers covered),
 * every stage at least one layer. O(P (L-P+1)^2), well under a second for
 * L <= 1000. */
static g1_status optimal_max(const costs *k, double *best)
{
    int L = k->L, P = k->P;
    double *prev = malloc((size_t)(L + 1) * sizeof *prev), *cur = malloc((size_t)(L + 1) * sizeof *cur);
    if (!prev || !cur) {
        free(prev);
        free(cur);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory planning %d layers", L);
    }
    /* prev[j]: best over the first s stages covering layers [0, j) */
    for (int j = 1; j <= L; j++)
        prev[j] = seg(k, 0, 0, j);
    for (int s = 1; s < P; s++) {
        int jlo = s + 1, jhi = L - (P - 1 - s);
        for (int j = jlo; j <= jhi; j++) {
            double m = INFINITY;
            for (int i = s; i < j; i++) {
                double v = fmax(prev[i], seg(k, s, i, j));
                if (v < m)
                    m = v;
            }
            cur[j] = m;
        }
        double *t = prev;
        prev = cur;
        cur = t;
    }
    *best = prev[L];
    free(prev);
    free(cur);
    return G1_OK;
}

/* Cuts achieving `best` that follow the proportional target (stage s ends
 * where s+1 P-ths of the total cost are done) as closely as the bound allows:
 * among the optimal partitions, the evenly spread one. */
static void choose_cuts(const costs *k, double best, int *cut)
{
    int L = k->L, P = k->P;
    double lim = best * (1 + 1e-12), total = k->S[L] + k->x0;
    cut[0] = 0;
    cut[P] = L;
    for (int s = 0; s < P - 1; s++) {
        int m = P - 1 - s; /* stages after s */
        /* smallest start from which m stages (no extra cost) cover to L within lim */
        int g = L;
        for (int t = 0; t < m; t++) {
            int i = g - 1;
            while (i - 1 >= 0 && seg(k, 1, i - 1, g) <= lim)
                i--;
            g = i;
        }
        int lo = cut[s] + 1 > g ? cut[s] + 1 : g, hi = L - m;
        while (hi > lo && seg(k, s, cut[s], hi) > lim)
            hi--;
        double target = (s + 1) * total / P;
        int j = lo;
        for (int c = lo; c <= hi; c++)
            if (fabs(k->S[c] + k->x0 - target) < fabs(k->S[j] + k->x0 - target))
                j = c;
        cut[s + 1] = j;
    }
}

/* ---- make ---- */

void g1_plan_free(g1_plan *p)
{
    if (!p)
        return;
    free(p->cut);
    free(p->mem);
    free(p->stage_cost);
    memset(p, 0, sizeof *p);
}

static g1_status valid_ep(const g1_config *c, int ep)
{
    if (ep >= 1 && c->num_experts % ep == 0)
        return G1_OK;
    char list[512] = "";
    size_t n = 0;
    for (int e = 1; e <= c->num_experts && n < sizeof list - 16; e++)
        if (c->num_experts % e == 0)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%d", n ? ", " : "", e);
    return G1_FAIL(G1_ERR_ARG, "--ep %d does not divide the model's %d experts: use one of %s", ep,
                   c->num_experts, list);
}

static g1_status check_request(const g1_plan_request *r)
{
    const g1_config *c = &r->cfg;
    G1_TRY(g1_config_validate(c));
    if (r->stages < 1 || r->stages > c->num_layers)
        return G1_FAIL(G1_ERR_ARG, "--stages %d: the model has %d layers, so use 1..%d stages", r->stages,
                       c->num_layers, c->num_layers);
    G1_TRY(valid_ep(c, r->ep));
    if (req_slots(r) < 1)
        return G1_FAIL(G1_ERR_ARG, "--slots %d: at least one sequence slot is needed", req_slots(r));
    if (r->kv_bytes != 0 && r->kv_bytes != 2 && r->kv_bytes != 4)
        return G1_FAIL(G1_ERR_ARG, "KV cache elements of %d bytes: 4 (float32) or 2 (bf16)", r->kv_bytes);
    if (r->context < 0 || r->context > c->max_seq_len)
        return G1_FAIL(G1_ERR_ARG, "--context %d: use 1..%d (the model's max_seq_len), or 0 for the maximum",
                       r->context, c->max_seq_len);
    if (r->max_batch_tokens < 1)
        return G1_FAIL(G1_ERR_ARG, "--max-batch-tokens %d: at least one token per step is needed",
                       r->max_batch_tokens);
    if (r->threads < 0)
        return G1_FAIL(G1_ERR_ARG, "--threads %d: at least one thread (0: the planner's %d)", r->threads,
                       G1_PLAN_THREADS);
    if (!(r->mem_per_rank >= 0) || !isfinite(r->mem_per_rank))
        return G1_FAIL(G1_ERR_ARG, "%s must be a non-negative size (0 = no limit)",
                       r->mem_per_rank_from ? r->mem_per_rank_from : "--mem-per-rank");
    if (r->layers_per_stage) {
        long sum = 0;
        for (int s = 0; s < r->stages; s++) {
            if (r->layers_per_stage[s] < 1)
                return G1_FAIL(G1_ERR_ARG, "--layers-per-stage: stage %d has %d layers; every stage needs at least one",
                               s, r->layers_per_stage[s]);
            sum += r->layers_per_stage[s];
        }
        if (sum != c->num_layers)
            return G1_FAIL(G1_ERR_ARG, "--layers-per-stage: the %d counts sum to %ld, but the model has %d layers",
                           r->stages, sum, c->num_layers);
    }
    return G1_OK;
}

/* Cuts, costs and memory, without the memory limit check. */
static g1_status build(const g1_plan_request *r, g1_plan *p)
{
    const g1_config *c = &r->cfg;
    int P = r->stages, E = r->ep, L = c->num_layers, N = P * E;
    memset(p, 0, sizeof *p);
    p->cfg = *c;
    p->stages = P;
    p->ep = E;
    p->mem_per_rank = r->mem_per_rank;
    p->slots = req_slots(r);
    p->context = r->context ? r->context : c->max_seq_len;
    p->kv_bytes = r->kv_bytes ? r->kv_bytes : 4;
    p->max_batch_tokens = r->max_batch_tokens;
    p->cut = malloc((size_t)(P + 1) * sizeof *p->cut);
    p->mem = calloc((size_t)N, sizeof *p->mem);
    p->stage_cost = calloc((size_t)P, sizeof *p->stage_cost);
    double *S = malloc((size_t)(L + 1) * sizeof *S);
    if (!p->cut || !p->mem || !p->stage_cost || !S) {
        free(S);
        g1_plan_free(p);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for a plan of %d ranks", N);
    }
    sizes z;
    compute_sizes(c, &z);
    z.kv_per_pos_layer = z.kv_per_pos_layer / 4 * p->kv_bytes;
    int nloc = c->num_experts / E, ntok = step_tokens(r);
    double picks = (double)c->num_selected_experts * ntok;
    double touched = picks < nloc ? picks : nloc;
    p->layer_cost = z.shared_read + touched * z.expert_read;
    p->rank0_cost = (double)c->vocab_size * c->emb_size * 2 + (double)c->emb_size * 4 +
                    ntok * ((double)c->emb_size * 2 + 2.0 * c->vocab_size * 4);
    S[0] = 0;
    for (int l = 0; l < L; l++)
        S[l + 1] = S[l] + p->layer_cost;
    costs k = {.S = S, .x0 = p->rank0_cost, .L = L, .P = P};
    /* balancing prompts instead: FLOPs per token, a layer's spread over the
     * stage's E ranks, rank 0's un-embedding of every position on its own */
    double *Sp = r->balance_prompt ? malloc((size_t)(L + 1) * sizeof *Sp) : NULL;
    if (r->balance_prompt && !Sp) {
        free(S);
        g1_plan_free(p);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for a plan of %d ranks", N);
    }
    for (int l = 0; Sp && l <= L; l++)
        Sp[l] = l * g1_plan_layer_flops(c) / E;
    costs kp = {.S = Sp, .x0 = 2.0 * c->vocab_size * c->emb_size, .L = L, .P = P};
    const costs *kc = Sp ? &kp : &k;
    p->balance_prompt = Sp != NULL && !r->layers_per_stage;
    if (r->layers_per_stage) {
        p->cut[0] = 0;
        for (int s = 0; s < P; s++)
            p->cut[s + 1] = p->cut[s] + r->layers_per_stage[s];
    } else {
        double best = 0;
        g1_status st = optimal_max(kc, &best);
        if (st != G1_OK) {
            free(S);
            free(Sp);
            g1_plan_free(p);
            return st;
        }
        choose_cuts(kc, best, p->cut);
    }
    for (int s = 0; s < P; s++)
        p->stage_cost[s] = seg(&k, s, p->cut[s], p->cut[s + 1]);
    free(S);
    free(Sp);
    p->cuda_sms = r->cuda_sms;
    p->threads = r->cuda_sms > 0 ? 0 : r->threads > 0 ? r->threads : G1_PLAN_THREADS;
    int T = r->max_batch_tokens, M = r->micro_batches > 0 ? r->micro_batches : P;
    p->micro_batches = M;
    p->dump_buffer = r->dump_buffer > 0 ? r->dump_buffer : (double)G1_DUMP_WRITER_BYTES;
    /* the CUDA engine's scratch, exactly as its check before the load counts it */
    g1_engine_opts eo = {.n_slots = 1, .max_batch = r->max_batch_tokens, .max_context = p->context,
                         .cuda_gemm = r->cuda_gemm, .cuda_tune = r->cuda_tune};
    for (int rk = 0; rk < N; rk++) {
        int s = rk / E, e = rk % E, nl = p->cut[s + 1] - p->cut[s];
        g1_plan_mem *m = &p->mem[rk];
        m->kv_cache = (double)g1_plan_seqs(p, e) * p->context * nl * z.kv_per_pos_layer;
        if (r->cuda_sms > 0) {
            size_t scratch = 0;
            g1_status st = g1_cuda_engine_buffer_bytes(c, nl, nloc, &eo, r->cuda_sms, 9, rk == 0, &scratch);
            if (st != G1_OK) {
                g1_plan_free(p);
                return st;
            }
            m->weights = nl * (z.shared_read + nloc * z.expert_read) + (rk == 0 ? z.embed_store : 0);
            /* as with --gpu-direct, where the workers' messages and every
             * rank's all-to-all rows are GPU memory (staged, they are
             * page-locked host memory instead: an upper bound) */
            m->messages = rk == 0 || N == 1 ? a2a_bytes(c, T, E) : message_bytes(c, T, P, E, M, rk);
            m->buffers = (double)scratch + m->messages;
        } else {
            m->weights = nl * (z.shared_store + nloc * z.expert_store) + (rk == 0 ? z.embed_store : 0);
            m->messages = message_bytes(c, T, P, E, M, rk);
            m->buffers = buffer_bytes(c, T, rk == 0, M, P * E == 1, p->slots, p->context) +
                         thread_bytes(c, p->threads, p->context, rk == 0) + m->messages;
            if (rk == 0 && r->dump_logits) {
                p->dump_logits = 1;
                m->buffers += dump_bytes(c, r->max_batch_tokens, p->dump_buffer);
            }
        }
        m->total = m->weights + m->kv_cache + m->buffers;
    }
    return G1_OK;
}

static int worst_rank(const g1_plan *p)
{
    int w = 0;
    for (int rk = 1; rk < p->stages * p->ep; rk++)
        if (p->mem[rk].total > p->mem[w].total)
            w = rk;
    return w;
}

/* Does the request fit with `stages` and `ep` instead (automatic cuts)? */
static int fits_with(const g1_plan_request *r, int stages, int ep)
{
    g1_plan_request q = *r;
    g1_plan t;
    q.stages = stages;
    q.ep = ep;
    q.layers_per_stage = NULL;
    q.mem_per_rank = 0;
    if (build(&q, &t) != G1_OK)
        return 0;
    int ok = t.mem[worst_rank(&t)].total <= r->mem_per_rank;
    g1_plan_free(&t);
    return ok;
}

/* What would fit: the fewest stages at this ep (memory falls as stages
 * grow, so a binary search), else the smallest larger ep at these stages;
 * 0 when neither does. */
static int suggest(const g1_plan_request *r, int *stages, int *ep)
{
    int L = r->cfg.num_layers;
    if (r->stages < L && fits_with(r, L, r->ep)) {
        int lo = r->stages + 1, hi = L;
        while (lo < hi) {
            int mid = lo + (hi - lo) / 2;
            if (fits_with(r, mid, r->ep))
                hi = mid;
            else
                lo = mid + 1;
        }
        *stages = lo, *ep = r->ep;
        return 1;
    }
    for (int e = r->ep + 1; e <= r->cfg.num_experts; e++)
        if (r->cfg.num_experts % e == 0 && fits_with(r, r->stages, e)) {
            *stages = r->stages, *ep = e;
            return 1;
        }
    return 0;
}

/* The refusal's hint of a layout that fits: grok1-run's or grok1-plan's
 * options; with a plan file (its layout fixed), the grok1-plan command of a
 * new plan for the figures checked. */
static void hint_text(const g1_plan_request *r, const g1_plan *p, char *buf, size_t n)
{
    int S, E;
    if (!suggest(r, &S, &E)) {
        snprintf(buf, n, "more stages or a larger --ep alone do not fit%s",
                 r->layers_per_stage && !r->plan_file ? " (with automatic cuts)" : "");
        return;
    }
    if (!r->plan_file) {
        if (S != r->stages)
            snprintf(buf, n, "--stages %d would fit at --ep %d (%d ranks)%s", S, E, S * E,
                     r->layers_per_stage ? " (with automatic cuts)" : "");
        else
            snprintf(buf, n, "--ep %d would fit at --stages %d (%d ranks)%s", E, S, S * E,
                     r->layers_per_stage ? " (with automatic cuts)" : "");
        return;
    }
    char extra[400] = "";
    size_t k = 0;
    if (p->threads > 0)
        k += (size_t)snprintf(extra + k, sizeof extra - k, " --threads %d", p->threads);
    if (r->kv_bytes == 2 && k < sizeof extra)
        k += (size_t)snprintf(extra + k, sizeof extra - k, " --kv-cache bf16");
    if (r->cuda_sms > 0 && k < sizeof extra)
        k += (size_t)snprintf(extra + k, sizeof extra - k, " --backend cuda --gpu-sms %d", r->cuda_sms);
    /* the GEMM and the kernels' switches change the GPU's buffers: the run's,
     * when not the defaults */
    if (r->cuda_sms > 0 && r->cuda_gemm != G1_CUDA_GEMM_BF16 && k < sizeof extra)
        k += (size_t)snprintf(extra + k, sizeof extra - k, " --cuda-gemm %s",
                              r->cuda_gemm == G1_CUDA_GEMM_F32 ? "f32" : "bf16x2");
    char tune[200];
    if (r->cuda_sms > 0 && g1_cuda_tune_text(&r->cuda_tune, tune, sizeof tune) > 0 && k < sizeof extra)
        k += (size_t)snprintf(extra + k, sizeof extra - k, " --cuda-tune %s", tune);
    if (r->dump_logits && r->cuda_sms <= 0 && k < sizeof extra)
        snprintf(extra + k, sizeof extra - k, r->dump_buffer > 0 ? " --dump-buffer %.0f" : " --dump-logits",
                 r->dump_buffer);
    /* grok1-run's micro-batches default to its stages: the figure checked
     * is kept when they would differ */
    char mb[48] = "";
    if (p->micro_batches != S)
        snprintf(mb, sizeof mb, " --micro-batches %d", p->micro_batches);
    snprintf(buf, n,
             "a layout of --stages %d --ep %d (%d ranks) would fit, but a plan's layout is fixed: make a new plan "
             "for this model with grok1-plan --stages %d --ep %d --slots %d --micro-batches %d --context %d "
             "--max-batch-tokens %d%s --mem-per-rank %.0f --out NEW.json and run %d ranks with --plan NEW.json%s",
             S, E, S * E, S, E, p->slots, p->micro_batches, p->context, p->max_batch_tokens, extra, r->mem_per_rank,
             S * E, mb);
}

/* Bytes in the unit that keeps the figure readable (GiB, MiB, KiB or bytes). */
static const char *human(double b, char *buf, size_t n) { return g1_bytes_text(buf, n, b); }

g1_status g1_plan_make(const g1_plan_request *req, g1_plan *out)
{
    memset(out, 0, sizeof *out);
    G1_TRY(check_request(req));
    g1_plan p;
    G1_TRY(build(req, &p));
    if (req->mem_per_rank > 0) {
        int w = worst_rank(&p), over = 0;
        for (int rk = 0; rk < p.stages * p.ep; rk++)
            over += p.mem[rk].total > req->mem_per_rank;
        if (over) {
            char hint[1024];
            hint_text(req, &p, hint, sizeof hint);
            const g1_plan_mem *m = &p.mem[w];
            char b0[32], b1[32], b2[32], b3[32], b4[32], b5[32], b6[32], dump[96] = "", shrink[96] = "", thr[96] = "";
            if (p.threads > 0)
                snprintf(thr, sizeof thr, ", %s of them for %d threads (--threads)",
                         human(thread_bytes(&p.cfg, p.threads, p.context, w == 0), b6, sizeof b6), p.threads);
            if (w == 0 && p.dump_logits) {
                human(dump_bytes(&p.cfg, p.max_batch_tokens, p.dump_buffer), b5, sizeof b5);
                snprintf(dump, sizeof dump, ", %s of them for the logits dump's writer", b5);
                snprintf(shrink, sizeof shrink, " or a smaller --dump-buffer (now %s)", b5);
            }
            g1_status st = G1_FAIL(
                G1_ERR_ARG,
                "rank %d (stage %d, expert slot %d, layers %d..%d) needs %s (weights %s, KV cache %s, "
                "buffers %s%s%s) but %s is %s%s; %s, or fewer slots (%d), a shorter context "
                "(--max-context, now %d)%s a smaller --max-batch-tokens (%d)%s",
                w, w / p.ep, w % p.ep, p.cut[w / p.ep], p.cut[w / p.ep + 1] - 1, human(m->total, b0, sizeof b0),
                human(m->weights, b1, sizeof b1), human(m->kv_cache, b2, sizeof b2), human(m->buffers, b3, sizeof b3),
                thr, dump, req->mem_per_rank_from ? req->mem_per_rank_from : "--mem-per-rank",
                human(req->mem_per_rank, b4, sizeof b4),
                over > 1 ? " (and other ranks do not fit either)" : "", hint, p.slots, p.context,
                *shrink ? "," : " or", p.max_batch_tokens, shrink);
            g1_plan_free(&p);
            if (req->balance_prompt && req->balance_fallback && !req->layers_per_stage) {
                g1_plan_request d = *req;
                d.balance_prompt = 0;
                char why[1024];
                snprintf(why, sizeof why, "%s", g1_last_error());
                if (g1_plan_make(&d, out) == G1_OK)
                    return G1_OK;
                return G1_FAIL(st, "%s", why);
            }
            return st;
        }
    }
    *out = p;
    return G1_OK;
}
