/* The pipeline over MPI. Rank 0 (stage 0, slot 0) splits each micro-batch
 * by owner (global slot g lives on expert slot g % E, whose KV cache holds
 * it, as local slot g / E), sends the other slots' shares to their stage-0
 * ranks, runs its own share through stage 0 and sends it on. Every other
 * rank receives shares from the rank before it in its column (same slot,
 * previous stage), runs them, and sends them to the next stage, or back to
 * rank 0 from the last stage. All sends are non-blocking; receives are
 * posted ahead, so transfers overlap compute. Micro-batches keep their order
 * on every rank, which keeps the stage all-to-alls in step. */
#include <stdlib.h>
#include <string.h>

#include "dist_internal.h"
#include "fault.h"

/* A pool of send buffers: a buffer is reused once its send completed. */
typedef struct sendpool {
    int n;
    size_t bytes;
    char **buf;
    MPI_Request *req;
    int next;
} sendpool;

static g1_status pool_init(sendpool *p, int n, size_t bytes)
{
    p->n = n;
    p->bytes = bytes;
    p->buf = calloc((size_t)n, sizeof *p->buf);
    p->req = malloc((size_t)n * sizeof *p->req);
    if (!p->buf || !p->req)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        p->req[i] = MPI_REQUEST_NULL;
        if (!(p->buf[i] = malloc(bytes)))
            return G1_FAIL(G1_ERR_NOMEM, "out of memory for message buffers");
    }
    return G1_OK;
}

static g1_status traced_wait(g1_dist *d, MPI_Request *rq, const char *what, int mb);

/* The next buffer in turn, after its previous send completed. */
static g1_status pool_get(g1_dist *d, sendpool *p, int *i)
{
    *i = p->next;
    p->next = (p->next + 1) % p->n;
    return traced_wait(d, &p->req[*i], "send buffer", -1);
}

static g1_status pool_drain(sendpool *p)
{
    if (p->n)
        G1_MPI(MPI_Waitall(p->n, p->req, MPI_STATUSES_IGNORE));
    return G1_OK;
}

static void pool_free(sendpool *p)
{
    for (int i = 0; p->buf && i < p->n; i++)
        free(p->buf[i]);
    free(p->buf);
    free(p->req);
}

/* A micro-batch in flight, as rank 0 split it. */
typedef struct flight {
    int mb, T;
    int *owner_idx; /* (T) token indices grouped by owner slot: slot 0's, then slot 1's, ... */
    int *count;     /* (E) tokens per owner */
    float *own;     /* (max_tokens, D) rank 0's share after stage 0 when P == 1 */
} flight;

struct pipe {
    g1_dist *d;
    g1_engine *e;
    int D, max_tokens, cap;
    sendpool sp;
    flight *fl;      /* ring (cap) */
    int head, count;
    char *rbuf;      /* a received message */
    int *gslot, *lslot, *lpos; /* (max_tokens) */
    float *lx;       /* (max_tokens, D) */
};

void g1_pipe_mpi_free(struct pipe *p)
{
    if (!p)
        return;
    pool_free(&p->sp);
    for (int i = 0; p->fl && i < p->cap; i++) {
        free(p->fl[i].owner_idx);
        free(p->fl[i].count);
        free(p->fl[i].own);
    }
    free(p->fl);
    free(p->rbuf);
    free(p->gslot);
    free(p->lslot);
    free(p->lpos);
    free(p->lx);
    free(p);
}

/* Run `T` tokens (global slots) through this rank's layers in place. */
static g1_status run_share(g1_dist *d, g1_engine *e, int mb, int T, const int *gslot, const int *pos, int *lslot,
                           float *x)
{
    for (int t = 0; t < T; t++)
        lslot[t] = gslot[t] / d->E;
    g1_batch b = {.T = T, .slot = lslot, .pos = pos};
    double t0 = g1_now();
    g1_status st = g1_engine_forward(e, &b, x);
    double t1 = g1_now();
    d->busy += t1 - t0;
    g1_trace_span(d->trace, "compute", d->what, t0, t1, mb, T);
    return st;
}

/* Wait on a request; a wait that took time shows on the timeline. */
static g1_status traced_wait(g1_dist *d, MPI_Request *rq, const char *what, int mb)
{
    double t0 = g1_now();
    G1_MPI(MPI_Wait(rq, MPI_STATUS_IGNORE));
    double t1 = g1_now();
    if (t1 - t0 > 20e-6)
        g1_trace_span(d->trace, "wait", what, t0, t1, mb, -1);
    return G1_OK;
}

static g1_status pipe_submit(void *ctx, int mb, const g1_batch *b, const float *x)
{
    struct pipe *p = ctx;
    g1_dist *d = p->d;
    int E = d->E, D = p->D, T = b->T;
    if (p->count == p->cap)
        return G1_FAIL(G1_ERR_INTERNAL, "pipeline: more than %d micro-batches in flight", p->cap);
    if (T > p->max_tokens)
        return G1_FAIL(G1_ERR_INTERNAL, "pipeline: micro-batch of %d tokens exceeds %d", T, p->max_tokens);
    flight *f = &p->fl[(p->head + p->count) % p->cap];
    f->mb = mb;
    f->T = T;
    int n = 0;
    for (int e = 0; e < E; e++) {
        f->count[e] = 0;
        for (int t = 0; t < T; t++)
            if (b->slot[t] % E == e) {
                f->owner_idx[n++] = t;
                f->count[e]++;
            }
    }
    /* shares of the other slots of stage 0 (empty ones too: the stage's
     * all-to-alls need every rank at every micro-batch) */
    int off = f->count[0];
    for (int e = 1; e < E; e++) {
        int c = f->count[e], i;
        for (int j = 0; j < c; j++) {
            int t = f->owner_idx[off + j];
            p->lslot[j] = b->slot[t];
            p->lpos[j] = b->pos[t];
            memcpy(p->lx + (size_t)j * D, x + (size_t)t * D, (size_t)D * sizeof(float));
        }
        G1_TRY(pool_get(d, &p->sp, &i));
        g1_msg_pack(p->sp.buf[i], G1_MSG_BATCH, mb, c, p->lslot, p->lpos, p->lx, D);
        G1_MPI(MPI_Isend(p->sp.buf[i], (int)g1_msg_bytes(c, D), MPI_BYTE, e, G1_TAG_FWD, d->all, &p->sp.req[i]));
        off += c;
    }
    /* our own share through stage 0 */
    int c0 = f->count[0];
    for (int j = 0; j < c0; j++) {
        int t = f->owner_idx[j];
        p->gslot[j] = b->slot[t];
        p->lpos[j] = b->pos[t];
        memcpy(p->lx + (size_t)j * D, x + (size_t)t * D, (size_t)D * sizeof(float));
    }
    G1_TRY(run_share(d, p->e, mb, c0, p->gslot, p->lpos, p->lslot, p->lx));
    if (d->P > 1) {
        int i;
        G1_TRY(pool_get(d, &p->sp, &i));
        g1_msg_pack(p->sp.buf[i], G1_MSG_BATCH, mb, c0, p->gslot, p->lpos, p->lx, D);
        G1_MPI(MPI_Isend(p->sp.buf[i], (int)g1_msg_bytes(c0, D), MPI_BYTE, E, G1_TAG_FWD, d->all, &p->sp.req[i]));
    } else {
        memcpy(f->own, p->lx, (size_t)c0 * D * sizeof(float));
    }
    p->count++;
    return G1_OK;
}

static g1_status pipe_wait(void *ctx, int *mb, float *x)
{
    struct pipe *p = ctx;
    g1_dist *d = p->d;
    int E = d->E, D = p->D;
    if (!p->count)
        return G1_FAIL(G1_ERR_INTERNAL, "pipeline: wait with nothing in flight");
    flight *f = &p->fl[p->head];
    int off = 0;
    for (int e = 0; e < E; e++) {
        int c = f->count[e];
        const float *src;
        if (d->P == 1 && e == 0) {
            src = f->own;
        } else {
            int src_rank = (d->P - 1) * E + e, kind, rmb, rT, *rs, *rp;
            float *rx;
            double t0 = g1_now();
            G1_MPI(MPI_Recv(p->rbuf, (int)g1_msg_bytes(p->max_tokens, D), MPI_BYTE, src_rank, G1_TAG_RES, d->all,
                            MPI_STATUS_IGNORE));
            g1_trace_span(d->trace, "recv", "results", t0, g1_now(), f->mb, src_rank);
            g1_msg_view(p->rbuf, D, &kind, &rmb, &rT, &rs, &rp, &rx);
            if (kind != G1_MSG_BATCH || rmb != f->mb || rT != c)
                return G1_FAIL(G1_ERR_INTERNAL,
                               "pipeline: rank %d returned micro-batch %d with %d tokens, expected %d with %d",
                               src_rank, rmb, rT, f->mb, c);
            src = rx;
        }
        for (int j = 0; j < c; j++)
            memcpy(x + (size_t)f->owner_idx[off + j] * D, src + (size_t)j * D, (size_t)D * sizeof(float));
        off += c;
    }
    *mb = f->mb;
    p->head = (p->head + 1) % p->cap;
    p->count--;
    return G1_OK;
}

static g1_status pipe_alloc(struct pipe *p, int nsend)
{
    size_t T = (size_t)p->max_tokens, D = (size_t)p->D, E = (size_t)p->d->E;
    G1_TRY(pool_init(&p->sp, nsend, g1_msg_bytes(p->max_tokens, p->D)));
    p->rbuf = malloc(g1_msg_bytes(p->max_tokens, p->D));
    p->gslot = malloc(T * sizeof(int));
    p->lslot = malloc(T * sizeof(int));
    p->lpos = malloc(T * sizeof(int));
    p->lx = malloc(T * D * sizeof(float));
    if (!p->rbuf || !p->gslot || !p->lslot || !p->lpos || !p->lx)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for pipeline buffers");
    if (p->cap) {
        p->fl = calloc((size_t)p->cap, sizeof *p->fl);
        if (!p->fl)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory");
        for (int i = 0; i < p->cap; i++) {
            p->fl[i].owner_idx = malloc(T * sizeof(int));
            p->fl[i].count = malloc(E * sizeof(int));
            p->fl[i].own = malloc(T * D * sizeof(float));
            if (!p->fl[i].owner_idx || !p->fl[i].count || !p->fl[i].own)
                return G1_FAIL(G1_ERR_NOMEM, "out of memory for pipeline buffers");
        }
    }
    return G1_OK;
}

/* The pipe of this rank: `cap` micro-batches in flight on rank 0 (none
 * kept on the others), `nsend` send buffers. */
static g1_status pipe_new(g1_dist *d, g1_engine *e, int cap, int max_tokens, int nsend, struct pipe **out)
{
    struct pipe *p = calloc(1, sizeof *p);
    *out = p;
    if (!p)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    d->pipe = p;
    p->d = d;
    p->e = e;
    p->D = g1_engine_config(e)->emb_size;
    p->max_tokens = max_tokens;
    p->cap = cap;
    return pipe_alloc(p, nsend);
}

g1_status g1_dist_pipe(g1_dist *d, g1_engine *e, int max_inflight, int max_tokens, g1_pipe_ops *out)
{
    struct pipe *p = NULL;
    /* each submit sends E - 1 shares plus one to stage 1 */
    G1_TRY(pipe_new(d, e, max_inflight, max_tokens, (max_inflight + 1) * d->E, &p));
    *out = (g1_pipe_ops){.submit = pipe_submit, .wait = pipe_wait, .ctx = p};
    return G1_OK;
}

g1_status g1_dist_stop(g1_dist *d)
{
    struct pipe *p = d->pipe;
    int32_t msg[4] = {G1_MSG_STOP, -1, 0, 0};
    for (int e = 1; e < d->E; e++)
        G1_MPI(MPI_Send(msg, 16, MPI_BYTE, e, G1_TAG_FWD, d->all));
    if (d->P > 1)
        G1_MPI(MPI_Send(msg, 16, MPI_BYTE, d->E, G1_TAG_FWD, d->all));
    return pool_drain(&p->sp);
}

g1_status g1_dist_worker(g1_dist *d, g1_engine *e, int max_inflight, int max_tokens)
{
    struct pipe *p = NULL;
    /* one send buffer more than micro-batches in flight: a buffer comes back
     * round only after its micro-batch left the pipeline, so pool_get never
     * waits on a transfer that needs this rank to move first */
    G1_TRY(pipe_new(d, e, 0, max_tokens, max_inflight + 1, &p));
    int D = p->D, E = d->E;
    int up = d->s == 0 ? 0 : (d->s - 1) * E + d->e;
    int last = d->s == d->P - 1;
    int down = last ? 0 : (d->s + 1) * E + d->e, tag = last ? G1_TAG_RES : G1_TAG_FWD;
    size_t mbytes = g1_msg_bytes(max_tokens, D);
    char *rb[2];
    rb[0] = p->rbuf;
    rb[1] = malloc(mbytes);
    if (!rb[1])
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    MPI_Request rq[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    g1_status st = g1_mpi_check(MPI_Irecv(rb[0], (int)mbytes, MPI_BYTE, up, G1_TAG_FWD, d->all, &rq[0]),
                                "MPI_Irecv", __FILE__, __LINE__);
    for (int cur = 0; st == G1_OK; cur ^= 1) {
        st = traced_wait(d, &rq[cur], "recv", -1);
        if (st != G1_OK)
            break;
        int kind, mb, T, *gs, *pos;
        float *x;
        g1_msg_view(rb[cur], D, &kind, &mb, &T, &gs, &pos, &x);
        if (kind == G1_MSG_STOP) {
            if (!last)
                st = g1_mpi_check(MPI_Send(rb[cur], 16, MPI_BYTE, down, G1_TAG_FWD, d->all), "MPI_Send", __FILE__,
                                  __LINE__);
            break;
        }
        if (kind != G1_MSG_BATCH || T < 0 || T > max_tokens) {
            st = G1_FAIL(G1_ERR_INTERNAL, "pipeline: bad message from rank %d", up);
            break;
        }
        st = g1_fault_step();
        if (st != G1_OK)
            break;
        /* the next message lands while this one computes */
        st = g1_mpi_check(MPI_Irecv(rb[cur ^ 1], (int)mbytes, MPI_BYTE, up, G1_TAG_FWD, d->all, &rq[cur ^ 1]),
                          "MPI_Irecv", __FILE__, __LINE__);
        if (st == G1_OK)
            st = run_share(d, e, mb, T, gs, pos, p->lslot, x);
        int i;
        if (st == G1_OK)
            st = pool_get(d, &p->sp, &i);
        if (st == G1_OK) {
            g1_msg_pack(p->sp.buf[i], G1_MSG_BATCH, mb, T, gs, pos, x, D);
            st = g1_mpi_check(MPI_Isend(p->sp.buf[i], (int)g1_msg_bytes(T, D), MPI_BYTE, down, tag, d->all,
                                        &p->sp.req[i]),
                              "MPI_Isend", __FILE__, __LINE__);
        }
    }
    free(rb[1]);
    if (st == G1_OK)
        st = pool_drain(&p->sp);
    return st;
}
