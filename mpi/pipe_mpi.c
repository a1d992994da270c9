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

/* A message buffer: host memory (page-locked with the CUDA backend), or
 * for a direct worker engine memory (owned by the engine, e != NULL). */
static g1_status msg_alloc(g1_dist *d, g1_engine *e, size_t bytes, char **out)
{
    if (e) {
        G1_TRY(g1_engine_mem_alloc(e, bytes, (void **)out));
        d->engine_bytes += bytes;
        return G1_OK;
    }
    if (!(*out = g1_host_alloc(d->backend, d->device, bytes)))
        return G1_FAIL(G1_ERR_NOMEM, "out of %smemory for %zu bytes of message buffers",
                       d->backend == G1_BACKEND_CUDA ? "page-locked " : "", bytes);
    d->host_bytes += bytes;
    return G1_OK;
}

static void msg_free(g1_dist *d, int engine_mem, char *p)
{
    if (!engine_mem)
        g1_host_free(d->backend, p);
}

/* A pool of send buffers: a buffer is reused once its sends completed
 * (`per` of them: rank 0 packs a micro-batch's E messages into one). */
typedef struct sendpool {
    int n, per;
    size_t bytes;
    char **buf;
    MPI_Request *req; /* (n * per): buffer i's are req[i * per ...] */
    int next;
    int engine_mem; /* buffers in engine memory (not ours to free) */
} sendpool;

static g1_status pool_init(g1_dist *d, g1_engine *mem, sendpool *p, int n, int per, size_t bytes)
{
    p->n = n;
    p->per = per;
    p->bytes = bytes;
    p->engine_mem = mem != NULL;
    p->buf = calloc((size_t)n, sizeof *p->buf);
    p->req = malloc((size_t)n * per * sizeof *p->req);
    if (!p->buf || !p->req)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n * per; i++)
        p->req[i] = MPI_REQUEST_NULL;
    for (int i = 0; i < n; i++)
        G1_TRY(msg_alloc(d, mem, bytes, &p->buf[i]));
    return G1_OK;
}

static g1_status traced_wait(g1_dist *d, MPI_Request *rq, const char *what, int mb);

/* The next buffer in turn, after its previous sends completed. */
static g1_status pool_get(g1_dist *d, sendpool *p, int *i)
{
    *i = p->next;
    p->next = (p->next + 1) % p->n;
    for (int k = 0; k < p->per; k++)
        G1_TRY(traced_wait(d, &p->req[(size_t)*i * p->per + k], "send buffer", -1));
    return G1_OK;
}

static g1_status pool_drain(sendpool *p)
{
    if (p->n)
        G1_MPI(MPI_Waitall(p->n * p->per, p->req, MPI_STATUSES_IGNORE));
    return G1_OK;
}

/* Rank 0's messages of one micro-batch, one after another in one buffer:
 * their tokens add up to the micro-batch's (the E shares, the last one
 * sent on after stage 0), so a buffer of one message of max_tokens and E
 * headers, each started on a 64-byte boundary. */
#define SLAB_PAD 64
static size_t slab_bytes(int max_tokens, int D, int E)
{
    return g1_msg_bytes(max_tokens, max_tokens, D) + (size_t)E * (16 + SLAB_PAD);
}

static size_t slab_next(size_t at, size_t bytes) { return (at + bytes + SLAB_PAD - 1) / SLAB_PAD * SLAB_PAD; }

static void pool_free(g1_dist *d, sendpool *p)
{
    for (int i = 0; p->buf && i < p->n; i++)
        msg_free(d, p->engine_mem, p->buf[i]);
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
    char *rbuf[2];   /* received messages (a worker alternates) */
    int rbuf_engine_mem;
    char *hdr;       /* a direct worker: the received message's header, slots and positions */
    int *gslot, *lslot, *lpos; /* (max_tokens) */
    g1_fork *gfork, *lfork;    /* (max_tokens) a share's forks: global slots, this rank's */
    float *lx;       /* (max_tokens, D) */
};

void g1_pipe_mpi_free(struct pipe *p)
{
    if (!p)
        return;
    pool_free(p->d, &p->sp);
    for (int i = 0; p->fl && i < p->cap; i++) {
        free(p->fl[i].owner_idx);
        free(p->fl[i].count);
        free(p->fl[i].own);
    }
    free(p->fl);
    for (int i = 0; i < 2; i++)
        msg_free(p->d, p->rbuf_engine_mem, p->rbuf[i]);
    free(p->hdr);
    free(p->gslot);
    free(p->lslot);
    free(p->lpos);
    free(p->gfork);
    free(p->lfork);
    if (p->lx)
        msg_free(p->d, 0, (char *)p->lx);
    free(p);
}

/* Run `T` tokens (global slots) through this rank's layers, after the F
 * forks (global slots, both of this expert slot): x in place (host
 * memory), or with in != NULL from in to x (both engine memory). */
static g1_status run_share(g1_dist *d, g1_engine *e, int mb, int T, const int *gslot, const int *pos, int *lslot,
                           int F, const g1_fork *gfork, g1_fork *lfork, const float *in, float *x)
{
    for (int t = 0; t < T; t++)
        lslot[t] = gslot[t] / d->E;
    for (int i = 0; i < F; i++) {
        if (gfork[i].src % d->E != d->e || gfork[i].dst % d->E != d->e)
            return G1_FAIL(G1_ERR_INTERNAL, "pipeline: fork of slot %d to slot %d reached expert slot %d", gfork[i].src,
                           gfork[i].dst, d->e);
        lfork[i] = (g1_fork){.src = gfork[i].src / d->E, .dst = gfork[i].dst / d->E, .n = gfork[i].n};
    }
    g1_batch b = {.T = T, .slot = lslot, .pos = pos, .n_fork = F, .fork = lfork};
    double t0 = g1_now();
    g1_status st = in ? g1_engine_forward_mem(e, &b, in, x) : g1_engine_forward(e, &b, x);
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

/* The forks of batch b for expert slot e's caches, into out; their count. */
static int column_forks(const g1_batch *b, int E, int e, g1_fork *out)
{
    int F = 0;
    for (int i = 0; i < b->n_fork; i++)
        if (b->fork[i].dst % E == e)
            out[F++] = b->fork[i];
    return F;
}

static g1_status pipe_submit(void *ctx, int mb, const g1_batch *b, const float *x)
{
    struct pipe *p = ctx;
    g1_dist *d = p->d;
    int E = d->E, D = p->D, T = b->T;
    if (p->count == p->cap)
        return G1_FAIL(G1_ERR_INTERNAL, "pipeline: more than %d micro-batches in flight", p->cap);
    if (T > p->max_tokens || b->n_fork > p->max_tokens)
        return G1_FAIL(G1_ERR_INTERNAL, "pipeline: micro-batch of %d tokens and %d forks exceeds %d", T, b->n_fork,
                       p->max_tokens);
    for (int i = 0; i < b->n_fork; i++)
        if (b->fork[i].src % E != b->fork[i].dst % E)
            return G1_FAIL(G1_ERR_INTERNAL, "pipeline: fork of slot %d to slot %d: their caches are on different "
                                            "expert slots", b->fork[i].src, b->fork[i].dst);
    flight *f = &p->fl[(p->head + p->count) % p->cap];
    f->mb = mb;
    f->T = T;
    /* the buffer of this micro-batch's messages, once its last ones are out */
    int i;
    G1_TRY(pool_get(d, &p->sp, &i));
    char *slab = p->sp.buf[i];
    MPI_Request *rq = p->sp.req + (size_t)i * E;
    size_t at = 0;
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
        int c = f->count[e], F = column_forks(b, E, e, p->gfork);
        for (int j = 0; j < c; j++) {
            int t = f->owner_idx[off + j];
            p->lslot[j] = b->slot[t];
            p->lpos[j] = b->pos[t];
            memcpy(p->lx + (size_t)j * D, x + (size_t)t * D, (size_t)D * sizeof(float));
        }
        g1_msg_pack(slab + at, G1_MSG_BATCH, mb, c, p->lslot, p->lpos, F, p->gfork, p->lx, D);
        G1_MPI(MPI_Isend(slab + at, (int)g1_msg_bytes(c, F, D), MPI_BYTE, e, G1_TAG_FWD, d->all, &rq[e - 1]));
        at = slab_next(at, g1_msg_bytes(c, F, D));
        off += c;
    }
    /* our own share through stage 0 */
    int c0 = f->count[0], F0 = column_forks(b, E, 0, p->gfork);
    for (int j = 0; j < c0; j++) {
        int t = f->owner_idx[j];
        p->gslot[j] = b->slot[t];
        p->lpos[j] = b->pos[t];
        memcpy(p->lx + (size_t)j * D, x + (size_t)t * D, (size_t)D * sizeof(float));
    }
    G1_TRY(run_share(d, p->e, mb, c0, p->gslot, p->lpos, p->lslot, F0, p->gfork, p->lfork, NULL, p->lx));
    if (d->P > 1) {
        g1_msg_pack(slab + at, G1_MSG_BATCH, mb, c0, p->gslot, p->lpos, F0, p->gfork, p->lx, D);
        G1_MPI(MPI_Isend(slab + at, (int)g1_msg_bytes(c0, F0, D), MPI_BYTE, E, G1_TAG_FWD, d->all, &rq[E - 1]));
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
            int src_rank = (d->P - 1) * E + e, kind, rmb, rT, *rs, *rp, rF;
            g1_fork *rf;
            float *rx;
            double t0 = g1_now();
            G1_MPI(MPI_Recv(p->rbuf[0], (int)g1_msg_bytes(p->max_tokens, p->max_tokens, D), MPI_BYTE, src_rank,
                            G1_TAG_RES, d->all, MPI_STATUS_IGNORE));
            g1_trace_span(d->trace, "recv", "results", t0, g1_now(), f->mb, src_rank);
            g1_msg_view(p->rbuf[0], D, &kind, &rmb, &rT, &rs, &rp, &rF, &rf, &rx);
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

/* Buffers: rank 0 (cap > 0) keeps host memory; a worker of a direct run
 * (d->direct) receives, computes and sends in engine memory. */
static g1_status pipe_alloc(struct pipe *p, int nsend)
{
    g1_dist *d = p->d;
    size_t T = (size_t)p->max_tokens, D = (size_t)p->D, E = (size_t)d->E;
    size_t mbytes = g1_msg_bytes(p->max_tokens, p->max_tokens, p->D);
    g1_engine *mem = d->direct && !p->cap ? p->e : NULL;
    if (p->cap) /* rank 0: a micro-batch's E messages in one buffer */
        G1_TRY(pool_init(d, NULL, &p->sp, nsend, d->E, slab_bytes(p->max_tokens, p->D, d->E)));
    else
        G1_TRY(pool_init(d, mem, &p->sp, nsend, 1, mbytes));
    p->rbuf_engine_mem = mem != NULL;
    G1_TRY(msg_alloc(d, mem, mbytes, &p->rbuf[0]));
    if (!p->cap)
        G1_TRY(msg_alloc(d, mem, mbytes, &p->rbuf[1]));
    if (p->cap) /* rank 0's shares on their way to its engine */
        G1_TRY(msg_alloc(d, NULL, T * D * sizeof(float), (char **)&p->lx));
    p->hdr = malloc(g1_msg_bytes(p->max_tokens, p->max_tokens, 0));
    p->gslot = malloc(T * sizeof(int));
    p->lslot = malloc(T * sizeof(int));
    p->lpos = malloc(T * sizeof(int));
    p->gfork = malloc(T * sizeof(g1_fork));
    p->lfork = malloc(T * sizeof(g1_fork));
    if (!p->hdr || !p->gslot || !p->lslot || !p->lpos || !p->gfork || !p->lfork)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for pipeline buffers");
    if (p->cap) {
        p->fl = calloc((size_t)p->cap, sizeof *p->fl);
        if (!p->fl)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory");
        for (int i = 0; i < p->cap; i++) {
            p->fl[i].owner_idx = malloc(T * sizeof(int));
            p->fl[i].count = malloc(E * sizeof(int));
            /* rank 0's share waits here only when it is also the last stage */
            p->fl[i].own = d->P == 1 ? malloc(T * D * sizeof(float)) : NULL;
            if (!p->fl[i].owner_idx || !p->fl[i].count || (d->P == 1 && !p->fl[i].own))
                return G1_FAIL(G1_ERR_NOMEM, "out of memory for pipeline buffers");
            d->host_bytes += d->P == 1 ? T * D * sizeof(float) : 0;
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
    /* each submit sends E - 1 shares plus one to stage 1, from one buffer
     * of M + 1: a buffer comes back round only after its micro-batch left
     * the pipeline */
    G1_TRY(pipe_new(d, e, max_inflight, max_tokens, max_inflight + 1, &p));
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
    size_t mbytes = g1_msg_bytes(max_tokens, max_tokens, D), head = g1_msg_bytes(max_tokens, max_tokens, 0);
    char **rb = p->rbuf;
    MPI_Request rq[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    g1_status st = g1_mpi_check(MPI_Irecv(rb[0], (int)mbytes, MPI_BYTE, up, G1_TAG_FWD, d->all, &rq[0]),
                                "MPI_Irecv", __FILE__, __LINE__);
    for (int cur = 0; st == G1_OK; cur ^= 1) {
        MPI_Status status;
        double t0 = g1_now();
        st = g1_mpi_check(MPI_Wait(&rq[cur], &status), "MPI_Wait", __FILE__, __LINE__);
        if (st != G1_OK)
            break;
        if (g1_now() - t0 > 20e-6)
            g1_trace_span(d->trace, "wait", "recv", t0, g1_now(), -1, -1);
        int kind, mb, T, *gs, *pos, F, got = 0;
        g1_fork *forks;
        float *x;
        MPI_Get_count(&status, MPI_BYTE, &got);
        /* a direct worker reads the header, slots and positions from device
         * memory; the activations stay there */
        char *h = rb[cur];
        if (d->direct) {
            size_t hb = (size_t)got < head ? (size_t)got : head;
            st = g1_engine_copy_mem(e, p->hdr, rb[cur], hb);
            if (st != G1_OK)
                break;
            h = p->hdr;
        }
        if (got < 16) {
            st = G1_FAIL(G1_ERR_INTERNAL, "pipeline: message of %d bytes from rank %d", got, up);
            break;
        }
        g1_msg_view(h, D, &kind, &mb, &T, &gs, &pos, &F, &forks, &x);
        if (kind == G1_MSG_STOP) {
            if (!last)
                st = g1_mpi_check(MPI_Send(h, 16, MPI_BYTE, down, G1_TAG_FWD, d->all), "MPI_Send", __FILE__,
                                  __LINE__);
            break;
        }
        if (kind != G1_MSG_BATCH || T < 0 || T > max_tokens || F < 0 || F > max_tokens ||
            (size_t)got != g1_msg_bytes(T, F, D)) {
            st = G1_FAIL(G1_ERR_INTERNAL, "pipeline: bad message from rank %d (%d bytes)", up, got);
            break;
        }
        st = g1_fault_step();
        if (st != G1_OK)
            break;
        /* the next message lands while this one computes */
        st = g1_mpi_check(MPI_Irecv(rb[cur ^ 1], (int)mbytes, MPI_BYTE, up, G1_TAG_FWD, d->all, &rq[cur ^ 1]),
                          "MPI_Irecv", __FILE__, __LINE__);
        int i;
        if (st == G1_OK)
            st = pool_get(d, &p->sp, &i);
        if (st == G1_OK && d->direct) {
            /* computed from the received buffer into the send buffer, both
             * device memory; the header goes in front unchanged */
            size_t off = g1_msg_bytes(T, F, 0);
            st = run_share(d, e, mb, T, gs, pos, p->lslot, F, forks, p->lfork, (const float *)(rb[cur] + off),
                           (float *)(p->sp.buf[i] + off));
            if (st == G1_OK)
                st = g1_engine_copy_mem(e, p->sp.buf[i], p->hdr, off);
        } else if (st == G1_OK) {
            st = run_share(d, e, mb, T, gs, pos, p->lslot, F, forks, p->lfork, NULL, x);
            if (st == G1_OK)
                g1_msg_pack(p->sp.buf[i], G1_MSG_BATCH, mb, T, gs, pos, F, forks, x, D);
        }
        if (st == G1_OK)
            st = g1_mpi_check(MPI_Isend(p->sp.buf[i], (int)g1_msg_bytes(T, F, D), MPI_BYTE, down, tag, d->all,
                                        &p->sp.req[i]),
                              "MPI_Isend", __FILE__, __LINE__);
    }
    if (st == G1_OK)
        st = pool_drain(&p->sp);
    return st;
}
