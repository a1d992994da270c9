/* The distributed runtime in a build without MPI: one process, layout 1 x 1
 * only; grok1-run then runs the local pipeline. */
#include "dist.h"

g1_status g1_dist_check_layout(int world_size, int stages, int ep, const g1_config *cfg)
{
    (void)world_size;
    (void)cfg;
    if (stages != 1 || ep != 1)
        return G1_FAIL(G1_ERR_ARG, "--stages %d --ep %d needs MPI, but this grok1-run was built without it: "
                                   "rebuild with meson -Dmpi=enabled, or run --stages 1 --ep 1", stages, ep);
    return G1_OK;
}

g1_status g1_dist_check_step(int world_size, int max_tokens, const g1_config *cfg)
{
    (void)world_size;
    (void)max_tokens;
    (void)cfg;
    return G1_OK;
}

int g1_dist_mpi_cuda_support(void) { return 0; }

g1_status g1_dist_init(g1_dist **out, int stages, int ep, const g1_dist_mem *mem)
{
    (void)stages;
    (void)ep;
    (void)mem;
    *out = NULL;
    return G1_FAIL(G1_ERR_ARG, "built without MPI");
}

void g1_dist_free(g1_dist *d) { (void)d; }
int g1_dist_rank(const g1_dist *d) { (void)d; return 0; }
int g1_dist_stage(const g1_dist *d) { (void)d; return 0; }
int g1_dist_slot(const g1_dist *d) { (void)d; return 0; }

g1_status g1_dist_dispatch(g1_dist *d, const g1_config *cfg, int max_tokens, g1_engine **engine_ptr,
                           g1_moe_dispatch *out)
{
    (void)d, (void)cfg, (void)max_tokens, (void)engine_ptr, (void)out;
    return G1_FAIL(G1_ERR_ARG, "built without MPI");
}

g1_status g1_dist_pipe(g1_dist *d, g1_engine *e, int max_inflight, int max_tokens, g1_pipe_ops *out)
{
    (void)d, (void)e, (void)max_inflight, (void)max_tokens, (void)out;
    return G1_FAIL(G1_ERR_ARG, "built without MPI");
}

g1_status g1_dist_stop(g1_dist *d) { (void)d; return G1_OK; }

g1_status g1_dist_worker(g1_dist *d, g1_engine *e, int max_inflight, int max_tokens)
{
    (void)d, (void)e, (void)max_inflight, (void)max_tokens;
    return G1_FAIL(G1_ERR_ARG, "built without MPI");
}

void g1_dist_add_busy(g1_dist *d, double seconds)
{
    (void)d;
    (void)seconds;
}

size_t g1_dist_buffer_bytes(const g1_dist *d)
{
    (void)d;
    return 0;
}

size_t g1_dist_engine_bytes(const g1_dist *d)
{
    (void)d;
    return 0;
}

size_t g1_dist_engine_bytes_planned(const g1_dist *d, const g1_config *cfg, int M, int T)
{
    (void)d, (void)cfg, (void)M, (void)T;
    return 0;
}

g1_status g1_dist_busy(g1_dist *d, double *busy)
{
    (void)d;
    (void)busy;
    return G1_OK;
}

void g1_dist_set_trace(g1_dist *d, g1_trace *t, int l0, int l1)
{
    (void)d, (void)t, (void)l0, (void)l1;
}

g1_status g1_dist_trace_sync(g1_dist *d)
{
    (void)d;
    return G1_OK;
}

g1_status g1_dist_trace_write(g1_dist *d, const char *path, long long *dropped, int *ranks_cut)
{
    (void)d, (void)path, (void)dropped, (void)ranks_cut;
    return G1_FAIL(G1_ERR_ARG, "built without MPI");
}
