/* The pipeline of one process: submit runs the engine at once and queues
 * the result; wait hands results back oldest first. */
#include <stdlib.h>
#include <string.h>

#include "pipeline.h"

struct g1_pipe_local {
    g1_engine *e;
    int cap, max_tokens, D;
    int head, count;  /* ring of finished micro-batches */
    int *mb;          /* (cap) */
    int *T;           /* (cap) */
    float *x;         /* (cap, max_tokens, D) */
    size_t x_bytes;   /* its size (g1_pipe_local_bytes) */
    g1_trace *trace;
};

static g1_status local_submit(void *ctx, int mb, const g1_batch *b, const float *x)
{
    g1_pipe_local *p = ctx;
    if (p->count == p->cap)
        return G1_FAIL(G1_ERR_INTERNAL, "pipeline: more than %d micro-batches in flight", p->cap);
    if (b->T > p->max_tokens)
        return G1_FAIL(G1_ERR_INTERNAL, "pipeline: micro-batch of %d tokens exceeds %d", b->T, p->max_tokens);
    int i = (p->head + p->count) % p->cap;
    float *dst = p->x + (size_t)i * p->max_tokens * p->D;
    memcpy(dst, x, (size_t)b->T * p->D * sizeof(float));
    double t0 = g1_trace_now();
    G1_TRY(g1_engine_forward(p->e, b, dst));
    g1_trace_span(p->trace, "compute", "all layers", t0, g1_trace_now(), mb, b->T);
    p->mb[i] = mb;
    p->T[i] = b->T;
    p->count++;
    return G1_OK;
}

static g1_status local_wait(void *ctx, int *mb, float *x)
{
    g1_pipe_local *p = ctx;
    if (!p->count)
        return G1_FAIL(G1_ERR_INTERNAL, "pipeline: wait with nothing in flight");
    int i = p->head;
    *mb = p->mb[i];
    memcpy(x, p->x + (size_t)i * p->max_tokens * p->D, (size_t)p->T[i] * p->D * sizeof(float));
    p->head = (p->head + 1) % p->cap;
    p->count--;
    return G1_OK;
}

g1_status g1_pipe_local_init(g1_pipe_local **out, g1_engine *e, int max_inflight, int max_tokens, g1_trace *trace)
{
    g1_pipe_local *p = calloc(1, sizeof *p);
    if (!p)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    p->e = e;
    p->trace = trace;
    p->cap = max_inflight;
    p->max_tokens = max_tokens;
    p->D = g1_engine_config(e)->emb_size;
    p->mb = calloc((size_t)max_inflight, sizeof *p->mb);
    p->T = calloc((size_t)max_inflight, sizeof *p->T);
    p->x_bytes = (size_t)max_inflight * max_tokens * p->D * sizeof(float);
    p->x = malloc(p->x_bytes);
    if (!p->mb || !p->T || !p->x) {
        g1_pipe_local_free(p);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for the pipeline's buffers");
    }
    *out = p;
    return G1_OK;
}

void g1_pipe_local_free(g1_pipe_local *p)
{
    if (!p)
        return;
    free(p->mb);
    free(p->T);
    free(p->x);
    free(p);
}

size_t g1_pipe_local_bytes(const g1_pipe_local *p) { return p->x_bytes; }

g1_pipe_ops g1_pipe_local_ops(g1_pipe_local *p)
{
    return (g1_pipe_ops){.submit = local_submit, .wait = local_wait, .ctx = p};
}
