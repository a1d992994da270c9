/* Expert parallelism: at every MoE layer each rank of a stage sends every
 * (token, choice) row to the rank holding that expert (slot = expert /
 * experts-per-slot), computes the rows it receives, and sends the results
 * back; the origin combines them in choice order (g1_moe_combine), so the
 * result is bitwise the same as one rank computing everything. Collective
 * over the stage: every rank calls it for every layer, with or without rows.
 *
 * Two ways to move the rows. Staged (the default): through host buffers,
 * page-locked with the CUDA backend, an expert id riding in front of each
 * row. Direct (d->direct, for an MPI that reads device memory): the rows
 * stay in engine memory; the engine packs them by destination and unpacks
 * the results (g1_engine_gather_mem), the expert ids go separately from
 * host memory, and the engine does the combine (run_rows_mem). */
#include <stdlib.h>
#include <string.h>

#include "dist_internal.h"

struct a2a {
    g1_dist *d;
    g1_engine **engine;
    int D, k, per_slot;     /* experts per expert slot */
    int max_rows;           /* rows one rank may send or receive: max_tokens * k */
    int *scount, *rcount, *sdisp, *rdisp; /* (E) in rows */
    int *slot_of;           /* (max_rows) where row t*k+j went in the send buffer */
    float *sbuf, *rbuf;     /* (max_rows, D + 1): expert id, then the row */
    float *xrows, *yrows;   /* (max_rows, D) */
    int *ids;               /* (max_rows) */
    float *yk;              /* (max_rows, D) results in t*k+j order */
    MPI_Datatype rec, row;  /* D + 1 floats, D floats */
    int round_rows, rounds; /* rows to one peer in one MPI_Alltoallv; calls per exchange at most */
    int rounds_now;         /* calls for this layer's exchanges, alike on every rank */
    int *rs, *rsd, *rr, *rrd; /* (E) one round's counts and offsets */
    g1_backend backend;     /* of the host buffers above (page-locked with CUDA) */
    /* direct */
    int *tok_of;            /* (max_rows) token of each packed row */
    int *sids;              /* (max_rows) expert ids packed by destination */
    float *sb, *rb;         /* (max_rows, D) engine memory, made on the first call */
};

void g1_a2a_free(struct a2a *a)
{
    if (!a)
        return;
    free(a->scount); free(a->rcount); free(a->sdisp); free(a->rdisp); free(a->slot_of);
    free(a->ids); free(a->tok_of); free(a->sids);
    free(a->rs); free(a->rsd); free(a->rr); free(a->rrd);
    g1_host_free(a->backend, a->sbuf);
    g1_host_free(a->backend, a->rbuf);
    g1_host_free(a->backend, a->xrows);
    g1_host_free(a->backend, a->yrows);
    g1_host_free(a->backend, a->yk);
    if (a->rec != MPI_DATATYPE_NULL)
        MPI_Type_free(&a->rec);
    if (a->row != MPI_DATATYPE_NULL)
        MPI_Type_free(&a->row);
    free(a);
}

static void prefix(const int *count, int *disp, int n)
{
    int s = 0;
    for (int i = 0; i < n; i++) {
        disp[i] = s;
        s += count[i];
    }
}

/* An all-to-all of rows (datatype t, counts and offsets in rows) in rounds
 * of at most round_rows rows to one peer: with E <= 4 and tens of
 * thousands of tokens a step, the rows for one peer can pass 2 GiB, which
 * MPI's int counts allow (they count rows) but some MPI stacks' transports
 * do not carry. Every rank makes the same number of calls (rounds_now,
 * agreed in exchange_counts); round r takes rows r * round_rows onwards of
 * every block. */
static g1_status alltoallv_rows(struct a2a *a, const void *sbuf, const int *scount, const int *sdisp, void *rbuf,
                                const int *rcount, const int *rdisp, MPI_Datatype t)
{
    int E = a->d->E;
    if (a->rounds_now <= 1) {
        G1_MPI(MPI_Alltoallv(sbuf, scount, sdisp, t, rbuf, rcount, rdisp, t, a->d->stage));
        return G1_OK;
    }
    for (int r = 0; r < a->rounds_now; r++) {
        long skip = (long)r * a->round_rows;
        for (int p = 0; p < E; p++) {
            long sl = scount[p] - skip, rl = rcount[p] - skip;
            a->rs[p] = sl <= 0 ? 0 : sl > a->round_rows ? a->round_rows : (int)sl;
            a->rr[p] = rl <= 0 ? 0 : rl > a->round_rows ? a->round_rows : (int)rl;
            a->rsd[p] = a->rs[p] ? sdisp[p] + (int)skip : sdisp[p];
            a->rrd[p] = a->rr[p] ? rdisp[p] + (int)skip : rdisp[p];
        }
        G1_MPI(MPI_Alltoallv(sbuf, a->rs, a->rsd, t, rbuf, a->rr, a->rrd, t, a->d->stage));
    }
    return G1_OK;
}

/* Where the n (token, choice) rows go: counts and offsets per destination,
 * and slot_of[i], row i's place in the send order (by destination, then in
 * token and choice order). */
static g1_status plan_sends(struct a2a *a, int n, const int *idx)
{
    int E = a->d->E;
    if (n > a->max_rows)
        return G1_FAIL(G1_ERR_INTERNAL, "all-to-all: %d rows exceed %d", n, a->max_rows);
    memset(a->scount, 0, (size_t)E * sizeof(int));
    for (int i = 0; i < n; i++)
        a->scount[idx[i] / a->per_slot]++;
    prefix(a->scount, a->sdisp, E);
    int *fill = a->rcount; /* scratch until the counts exchange */
    memcpy(fill, a->sdisp, (size_t)E * sizeof(int));
    for (int i = 0; i < n; i++)
        a->slot_of[i] = fill[idx[i] / a->per_slot]++;
    return G1_OK;
}

/* Counts in, offsets, and the number of rows this rank receives. */
static g1_status exchange_counts(struct a2a *a, int *nr)
{
    int E = a->d->E;
    G1_MPI(MPI_Alltoall(a->scount, 1, MPI_INT, a->rcount, 1, MPI_INT, a->d->stage));
    prefix(a->rcount, a->rdisp, E);
    *nr = a->rdisp[E - 1] + a->rcount[E - 1];
    if (*nr > a->max_rows)
        return G1_FAIL(G1_ERR_INTERNAL, "all-to-all: receiving %d rows, room for %d", *nr, a->max_rows);
    /* steps that could pass round_rows to one peer: the stage agrees on
     * the rounds the largest block of this layer needs (none otherwise) */
    a->rounds_now = 1;
    if (a->rounds > 1) {
        int most = 0, all_most = 0;
        for (int p = 0; p < E; p++) {
            most = a->scount[p] > most ? a->scount[p] : most;
            most = a->rcount[p] > most ? a->rcount[p] : most;
        }
        G1_MPI(MPI_Allreduce(&most, &all_most, 1, MPI_INT, MPI_MAX, a->d->stage));
        a->rounds_now = all_most > a->round_rows ? (all_most + a->round_rows - 1) / a->round_rows : 1;
    }
    return G1_OK;
}

static g1_status a2a_run(void *ctx, int layer, int T, const float *x, const int *idx, const float *gate, float *out)
{
    struct a2a *a = ctx;
    g1_dist *d = a->d;
    int D = a->D, k = a->k, n = T * k, nr = 0;
    /* pack the rows by destination, each behind its expert id */
    G1_TRY(plan_sends(a, n, idx));
    for (int i = 0; i < n; i++) {
        float *rec = a->sbuf + (size_t)a->slot_of[i] * (D + 1);
        rec[0] = (float)idx[i];
        memcpy(rec + 1, x + (size_t)(i / k) * D, (size_t)D * sizeof(float));
    }
    double t0 = g1_now();
    G1_TRY(exchange_counts(a, &nr));
    G1_TRY(alltoallv_rows(a, a->sbuf, a->scount, a->sdisp, a->rbuf, a->rcount, a->rdisp, a->rec));
    double t1 = g1_now();
    g1_trace_span(d->trace, "a2a", "all-to-all out", t0, t1, -1, layer);
    /* the experts of the rows we received */
    for (int i = 0; i < nr; i++) {
        const float *rec = a->rbuf + (size_t)i * (D + 1);
        a->ids[i] = (int)rec[0];
        memcpy(a->xrows + (size_t)i * D, rec + 1, (size_t)D * sizeof(float));
    }
    G1_TRY(g1_moe_expert_rows(*a->engine, layer, nr, a->xrows, a->ids, a->yrows));
    double t2 = g1_now();
    g1_trace_span(d->trace, "a2a", "experts", t1, t2, -1, layer);
    /* results go back the way the rows came */
    G1_TRY(alltoallv_rows(a, a->yrows, a->rcount, a->rdisp, a->sbuf, a->scount, a->sdisp, a->row));
    g1_trace_span(d->trace, "a2a", "all-to-all back", t2, g1_now(), -1, layer);
    for (int i = 0; i < n; i++)
        memcpy(a->yk + (size_t)i * D, a->sbuf + (size_t)a->slot_of[i] * D, (size_t)D * sizeof(float));
    g1_moe_combine(T, D, k, gate, a->yk, out);
    return G1_OK;
}

/* The direct exchange: x (T, D) and yk (T*k, D) in engine memory. */
static g1_status a2a_rows_mem(void *ctx, int layer, int T, const float *x, const int *idx, float *yk)
{
    struct a2a *a = ctx;
    g1_dist *d = a->d;
    g1_engine *e = *a->engine;
    int D = a->D, k = a->k, n = T * k, nr = 0;
    if (!a->sb) {
        size_t bytes = (size_t)a->max_rows * D * sizeof(float);
        G1_TRY(g1_engine_mem_alloc(e, bytes, (void **)&a->sb));
        G1_TRY(g1_engine_mem_alloc(e, bytes, (void **)&a->rb));
        d->engine_bytes += 2 * bytes;
    }
    G1_TRY(plan_sends(a, n, idx));
    for (int i = 0; i < n; i++) {
        a->tok_of[a->slot_of[i]] = i / k;
        a->sids[a->slot_of[i]] = idx[i];
    }
    double t0 = g1_now();
    G1_TRY(g1_engine_gather_mem(e, n, x, a->tok_of, a->sb));
    G1_TRY(exchange_counts(a, &nr));
    G1_MPI(MPI_Alltoallv(a->sids, a->scount, a->sdisp, MPI_INT, a->ids, a->rcount, a->rdisp, MPI_INT, d->stage));
    G1_TRY(alltoallv_rows(a, a->sb, a->scount, a->sdisp, a->rb, a->rcount, a->rdisp, a->row));
    double t1 = g1_now();
    g1_trace_span(d->trace, "a2a", "all-to-all out", t0, t1, -1, layer);
    G1_TRY(g1_moe_expert_rows_mem(e, layer, nr, a->rb, a->ids, a->rb));
    double t2 = g1_now();
    g1_trace_span(d->trace, "a2a", "experts", t1, t2, -1, layer);
    G1_TRY(alltoallv_rows(a, a->rb, a->rcount, a->rdisp, a->sb, a->scount, a->sdisp, a->row));
    G1_TRY(g1_engine_gather_mem(e, n, a->sb, a->slot_of, yk));
    g1_trace_span(d->trace, "a2a", "all-to-all back", t2, g1_now(), -1, layer);
    return G1_OK;
}

g1_status g1_dist_dispatch(g1_dist *d, const g1_config *cfg, int max_tokens, g1_engine **engine_ptr,
                           g1_moe_dispatch *out)
{
    struct a2a *a = calloc(1, sizeof *a);
    if (!a)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    a->rec = a->row = MPI_DATATYPE_NULL;
    d->a2a = a;
    a->d = d;
    a->engine = engine_ptr;
    a->D = cfg->emb_size;
    a->k = cfg->num_selected_experts;
    a->per_slot = cfg->num_experts / d->E;
    a->max_rows = max_tokens * a->k;
    size_t E = (size_t)d->E, R = (size_t)a->max_rows, D = (size_t)a->D;
    a->scount = malloc(E * sizeof(int));
    a->rcount = malloc(E * sizeof(int));
    a->sdisp = malloc(E * sizeof(int));
    a->rdisp = malloc(E * sizeof(int));
    a->slot_of = malloc(R * sizeof(int));
    a->ids = malloc(R * sizeof(int));
    a->backend = d->backend;
    a->rs = malloc(E * sizeof(int));
    a->rsd = malloc(E * sizeof(int));
    a->rr = malloc(E * sizeof(int));
    a->rrd = malloc(E * sizeof(int));
    /* at most 1 GiB to one peer in one call (GROK1_A2A_ROUND_ROWS, for the
     * tests, sets fewer rows to make the rounds happen at small sizes) */
    a->round_rows = (int)(((size_t)1 << 30) / ((D + 1) * sizeof(float)));
    const char *rr = getenv("GROK1_A2A_ROUND_ROWS");
    if (rr && atoi(rr) > 0 && atoi(rr) < a->round_rows)
        a->round_rows = atoi(rr);
    if (a->round_rows < 1)
        a->round_rows = 1;
    /* every rank must cut the exchanges alike (the environment can differ
     * between ranks: MPMD, a launcher's per-node settings): the smallest
     * figure any rank has; before the checks below, which return alone */
    int mine = a->round_rows;
    G1_MPI(MPI_Allreduce(&mine, &a->round_rows, 1, MPI_INT, MPI_MIN, d->all));
    a->rounds = a->max_rows > a->round_rows ? (a->max_rows + a->round_rows - 1) / a->round_rows : 1;
    int ok = a->scount && a->rcount && a->sdisp && a->rdisp && a->slot_of && a->ids && a->rs && a->rsd && a->rr &&
             a->rrd;
    if (d->direct) {
        /* the row buffers are engine memory, made once the engine exists */
        ok = ok && (a->tok_of = malloc(R * sizeof(int))) && (a->sids = malloc(R * sizeof(int)));
    } else {
        /* what MPI reads and writes, and what the engine copies from and to */
        ok = ok && (a->sbuf = g1_host_alloc(d->backend, d->device, R * (D + 1) * sizeof(float))) &&
             (a->rbuf = g1_host_alloc(d->backend, d->device, R * (D + 1) * sizeof(float))) &&
             (a->xrows = g1_host_alloc(d->backend, d->device, R * D * sizeof(float))) &&
             (a->yrows = g1_host_alloc(d->backend, d->device, R * D * sizeof(float))) &&
             (a->yk = g1_host_alloc(d->backend, d->device, R * D * sizeof(float)));
    }
    if (!ok)
        return G1_FAIL(G1_ERR_NOMEM, "out of %smemory for all-to-all buffers (%zu rows of %zu floats)",
                       d->backend == G1_BACKEND_CUDA && !d->direct ? "page-locked " : "", R, D);
    if (!d->direct)
        d->host_bytes += R * ((D + 1) * 2 + D * 3) * sizeof(float);
    G1_MPI(MPI_Type_contiguous(a->D + 1, MPI_FLOAT, &a->rec));
    G1_MPI(MPI_Type_commit(&a->rec));
    G1_MPI(MPI_Type_contiguous(a->D, MPI_FLOAT, &a->row));
    G1_MPI(MPI_Type_commit(&a->row));
    *out = (g1_moe_dispatch){.run = a2a_run, .run_rows_mem = d->direct ? a2a_rows_mem : NULL, .ctx = a};
    return G1_OK;
}
