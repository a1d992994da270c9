/* The rank grid: N = P x E ranks, rank r in stage r / E and expert slot
 * r % E. Communicators are split once from a duplicate of the parent, and
 * every call names the one it uses. Also the message format of the pipeline. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist_internal.h"
#include "world_mpi.h"
#if defined(__has_include)
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h> /* Open MPI's extensions: MPIX_Query_cuda_support */
#endif
#endif

g1_status g1_mpi_check(int rc, const char *what, const char *file, int line)
{
    if (rc == MPI_SUCCESS)
        return G1_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return g1_fail_at(G1_ERR_MPI, file, line, "%s failed: %s", what, msg);
}

double g1_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

g1_status g1_dist_check_layout(int N, int P, int E, const g1_config *cfg)
{
    if (P < 1 || E < 1)
        return G1_FAIL(G1_ERR_ARG, "--stages and --ep must be at least 1 (got %d and %d)", P, E);
    if (cfg->num_experts % E) {
        char ok[256] = "";
        size_t n = 0;
        for (int e = 1; e <= cfg->num_experts; e++)
            if (cfg->num_experts % e == 0 && n < sizeof ok - 8)
                n += (size_t)snprintf(ok + n, sizeof ok - n, "%s%d", n ? ", " : "", e);
        return G1_FAIL(G1_ERR_ARG, "--ep %d does not divide the model's %d experts: use one of %s", E,
                       cfg->num_experts, ok);
    }
    if (P > cfg->num_layers)
        return G1_FAIL(G1_ERR_ARG, "--stages %d is more than the model's %d layers: use at most %d stages", P,
                       cfg->num_layers, cfg->num_layers);
    if (P * E != N) {
        if (N % E == 0 && N / E <= cfg->num_layers)
            return G1_FAIL(G1_ERR_ARG,
                           "%d process%s, but --stages %d x --ep %d needs %d: start %d processes (mpirun -n %d), "
                           "or use --stages %d with --ep %d",
                           N, N == 1 ? "" : "es", P, E, P * E, P * E, P * E, N / E, E);
        return G1_FAIL(G1_ERR_ARG, "%d process%s, but --stages %d x --ep %d needs %d: start %d processes (mpirun -n %d)",
                       N, N == 1 ? "" : "es", P, E, P * E, P * E, P * E);
    }
    return G1_OK;
}

size_t g1_dist_buffer_bytes(const g1_dist *d) { return d ? d->host_bytes : 0; }

size_t g1_dist_engine_bytes(const g1_dist *d) { return d ? d->engine_bytes : 0; }

size_t g1_dist_engine_bytes_planned(const g1_dist *d, const g1_config *cfg, int M, int T)
{
    if (!d || !d->direct)
        return 0;
    size_t D = (size_t)cfg->emb_size, rows = (size_t)T * cfg->num_selected_experts;
    /* a2a.c: two buffers of T x k rows; pipe_mpi.c: a worker's M + 1 send
     * and 2 receive buffers (rank 0 keeps host memory) */
    size_t b = d->E > 1 ? 2 * rows * D * sizeof(float) : 0;
    if (d->rank != 0)
        b += (size_t)(M + 3) * g1_msg_bytes(T, T, cfg->emb_size);
    return b;
}

g1_status g1_dist_check_step(int N, int T, const g1_config *cfg)
{
    if (N < 2)
        return G1_OK;
    size_t b = g1_msg_bytes(T, T, cfg->emb_size);
    if (b <= (size_t)INT_MAX)
        return G1_OK;
    size_t per = g1_msg_bytes(1, 1, cfg->emb_size) - g1_msg_bytes(0, 0, cfg->emb_size);
    long most = (long)(((size_t)INT_MAX - g1_msg_bytes(0, 0, cfg->emb_size)) / per);
    return G1_FAIL(G1_ERR_ARG, "--max-batch-tokens %d: a pipeline message of %d tokens would be %.2f GiB, more than "
                               "MPI's largest count of bytes (2 GiB): use at most %ld tokens a step with more than "
                               "one process", T, T, (double)b / 1073741824.0, most);
}

int g1_dist_mpi_cuda_support(void)
{
#if defined(MPIX_CUDA_AWARE_SUPPORT)
    /* Open MPI (and MVAPICH2's mpi-ext.h): compiled in, and the run-time
     * library agrees */
    return MPIX_CUDA_AWARE_SUPPORT && MPIX_Query_cuda_support() ? 1 : 0;
#elif defined(MPIX_GPU_SUPPORT_CUDA)
    /* MPICH 4 and its derivatives (Cray MPICH) */
    int yes = 0;
    return MPIX_GPU_query_support(MPIX_GPU_SUPPORT_CUDA, &yes) == MPI_SUCCESS ? (yes ? 1 : 0) : -1;
#else
    return -1;
#endif
}

g1_status g1_dist_init(g1_dist **out, int P, int E, const g1_dist_mem *mem)
{
    g1_dist *d = calloc(1, sizeof *d);
    if (!d)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    if (mem) {
        d->backend = mem->backend;
        d->device = mem->device;
        d->direct = mem->direct;
    }
    d->all = MPI_COMM_NULL;
    d->stage = MPI_COMM_NULL;
    *out = d;
    G1_MPI(MPI_Comm_dup(g1_world_comm(), &d->all));
    MPI_Comm_set_errhandler(d->all, MPI_ERRORS_RETURN);
    G1_MPI(MPI_Comm_rank(d->all, &d->rank));
    G1_MPI(MPI_Comm_size(d->all, &d->size));
    if (d->size != P * E)
        return G1_FAIL(G1_ERR_ARG, "%d processes for %d x %d ranks", d->size, P, E);
    d->P = P;
    d->E = E;
    d->s = d->rank / E;
    d->e = d->rank % E;
    G1_MPI(MPI_Comm_split(d->all, d->s, d->e, &d->stage));
    MPI_Comm_set_errhandler(d->stage, MPI_ERRORS_RETURN);
    d->t_start = g1_now();
    return G1_OK;
}

void g1_dist_free(g1_dist *d)
{
    if (!d)
        return;
    g1_a2a_free(d->a2a);
    g1_pipe_mpi_free(d->pipe);
    if (d->stage != MPI_COMM_NULL)
        MPI_Comm_free(&d->stage);
    if (d->all != MPI_COMM_NULL)
        MPI_Comm_free(&d->all);
    free(d);
}

int g1_dist_rank(const g1_dist *d) { return d->rank; }
int g1_dist_stage(const g1_dist *d) { return d->s; }
int g1_dist_slot(const g1_dist *d) { return d->e; }

void g1_dist_add_busy(g1_dist *d, double seconds) { d->busy += seconds; }

g1_status g1_dist_busy(g1_dist *d, double *busy)
{
    double mine[2] = {d->busy, g1_now() - d->t_start};
    double *all = d->rank == 0 ? malloc(sizeof mine * (size_t)d->size) : NULL;
    if (d->rank == 0 && !all)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    G1_MPI(MPI_Gather(mine, 2, MPI_DOUBLE, all, 2, MPI_DOUBLE, 0, d->all));
    if (d->rank == 0) {
        for (int s = 0; s < d->P; s++) {
            double f = 0;
            for (int e = 0; e < d->E; e++) {
                const double *r = all + 2 * (s * d->E + e);
                f += r[1] > 0 ? r[0] / r[1] : 0;
            }
            busy[s] = f / d->E;
        }
        free(all);
    }
    return G1_OK;
}

/* ---- messages ---- */

size_t g1_msg_bytes(int T, int F, int D)
{
    return 16 + (size_t)T * 8 + (size_t)F * sizeof(g1_fork) + (size_t)T * D * sizeof(float);
}

void g1_msg_pack(void *buf, int kind, int mb, int T, const int *slot, const int *pos, int F, const g1_fork *fork,
                 const float *x, int D)
{
    int32_t h[4] = {kind, mb, T, F};
    char *p = buf;
    memcpy(p, h, 16);
    p += 16;
    if (T) {
        memcpy(p, slot, (size_t)T * 4);
        memcpy(p + (size_t)T * 4, pos, (size_t)T * 4);
    }
    p += (size_t)T * 8;
    if (F)
        memcpy(p, fork, (size_t)F * sizeof(g1_fork));
    p += (size_t)F * sizeof(g1_fork);
    if (T)
        memcpy(p, x, (size_t)T * D * sizeof(float));
}

void g1_msg_view(void *buf, int D, int *kind, int *mb, int *T, int **slot, int **pos, int *F, g1_fork **fork,
                 float **x)
{
    int32_t h[4];
    char *p = buf;
    memcpy(h, p, 16);
    *kind = h[0];
    *mb = h[1];
    *T = h[2];
    *F = h[3];
    *slot = (int *)(void *)(p + 16);
    *pos = (int *)(void *)(p + 16 + (size_t)*T * 4);
    *fork = (g1_fork *)(void *)(p + 16 + (size_t)*T * 8);
    *x = (float *)(void *)(p + g1_msg_bytes(*T, *F, 0));
    (void)D;
}

/* ---- timeline ---- */



void g1_dist_set_trace(g1_dist *d, g1_trace *t, int l0, int l1)
{
    d->trace = t;
    snprintf(d->what, sizeof d->what, "layers %d-%d", l0, l1 - 1);
}

g1_status g1_dist_trace_sync(g1_dist *d)
{
    enum { ROUNDS = 8 };
    d->clock_offset = 0;
    for (int r = 1; r < d->size; r++) {
        if (d->rank == 0) {
            for (int i = 0; i < ROUNDS; i++) {
                double t;
                G1_MPI(MPI_Recv(&t, 1, MPI_DOUBLE, r, G1_TAG_CLOCK, d->all, MPI_STATUS_IGNORE));
                t = g1_trace_now();
                G1_MPI(MPI_Send(&t, 1, MPI_DOUBLE, r, G1_TAG_CLOCK, d->all));
            }
        } else if (d->rank == r) {
            double best = 1e300;
            for (int i = 0; i < ROUNDS; i++) {
                double t0 = g1_trace_now(), t_root;
                G1_MPI(MPI_Send(&t0, 1, MPI_DOUBLE, 0, G1_TAG_CLOCK, d->all));
                G1_MPI(MPI_Recv(&t_root, 1, MPI_DOUBLE, 0, G1_TAG_CLOCK, d->all, MPI_STATUS_IGNORE));
                double t1 = g1_trace_now();
                if (t1 - t0 < best) {
                    best = t1 - t0;
                    d->clock_offset = t_root - 0.5 * (t0 + t1);
                }
            }
        }
    }
    return G1_OK;
}

g1_status g1_dist_trace_write(g1_dist *d, const char *path, long long *dropped, int *ranks_cut)
{
    g1_trace *t = d->trace;
    int n = t ? t->n : 0, N = d->size;
    long long cut = t ? t->dropped : 0;
    double off = d->clock_offset;
    int *counts = NULL, *bdisp = NULL, *bcount = NULL;
    double *offs = NULL;
    long long *drops = NULL;
    g1_trace_event *all = NULL;
    *dropped = 0;
    *ranks_cut = 0;
    /* small, and on every rank, so no rank can leave the collectives early */
    counts = calloc((size_t)N, sizeof *counts);
    bcount = calloc((size_t)N, sizeof *bcount);
    bdisp = calloc((size_t)N, sizeof *bdisp);
    offs = calloc((size_t)N, sizeof *offs);
    drops = calloc((size_t)N, sizeof *drops);
    int have = counts && bcount && bdisp && offs && drops, all_have = 0;
    MPI_Allreduce(&have, &all_have, 1, MPI_INT, MPI_MIN, d->all);
    if (!all_have) {
        free(counts), free(bcount), free(bdisp), free(offs), free(drops);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory gathering the trace");
    }
    g1_status st = g1_mpi_check(MPI_Gather(&n, 1, MPI_INT, counts, 1, MPI_INT, 0, d->all), "MPI_Gather", __FILE__,
                                __LINE__);
    if (st == G1_OK)
        st = g1_mpi_check(MPI_Gather(&off, 1, MPI_DOUBLE, offs, 1, MPI_DOUBLE, 0, d->all), "MPI_Gather", __FILE__,
                          __LINE__);
    if (st == G1_OK)
        st = g1_mpi_check(MPI_Gather(&cut, 1, MPI_LONG_LONG, drops, 1, MPI_LONG_LONG, 0, d->all), "MPI_Gather",
                          __FILE__, __LINE__);
    for (int r = 0; d->rank == 0 && st == G1_OK && r < N; r++) {
        *dropped += drops[r];
        *ranks_cut += drops[r] > 0;
    }
    /* counted in events (a datatype of one event), not bytes: a job's
     * trace can pass 2^31 bytes (26.8 M events) but not 2^31 events */
    long total = 0;
    if (d->rank == 0 && st == G1_OK) {
        for (int r = 0; r < N; r++) {
            bdisp[r] = total <= INT_MAX ? (int)total : 0;
            bcount[r] = counts[r];
            total += counts[r];
        }
        if (total > INT_MAX)
            st = G1_FAIL(G1_ERR_ARG, "the trace has %ld events, more than one gather takes (2^31 - 1)", total);
        else if (!(all = malloc((size_t)(total ? total : 1) * sizeof *all)))
            st = G1_FAIL(G1_ERR_NOMEM, "out of memory gathering the trace (%ld events)", total);
    }
    MPI_Datatype evt = MPI_DATATYPE_NULL;
    if (st == G1_OK) {
        st = g1_mpi_check(MPI_Type_contiguous((int)sizeof(g1_trace_event), MPI_BYTE, &evt), "MPI_Type_contiguous",
                          __FILE__, __LINE__);
        if (st == G1_OK)
            st = g1_mpi_check(MPI_Type_commit(&evt), "MPI_Type_commit", __FILE__, __LINE__);
    }
    /* every rank takes part even if rank 0 failed to allocate: no hang */
    int ok = st == G1_OK, all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, d->all);
    if (all_ok)
        st = g1_mpi_check(MPI_Gatherv(t ? t->ev : NULL, n, evt, all, bcount, bdisp, evt, 0, d->all), "MPI_Gatherv",
                          __FILE__, __LINE__);
    if (evt != MPI_DATATYPE_NULL)
        MPI_Type_free(&evt);
    if (d->rank == 0 && all_ok && st == G1_OK) {
        g1_trace_event **ev = calloc((size_t)N, sizeof *ev);
        char **label = calloc((size_t)N, sizeof *label);
        for (int r = 0; ev && label && r < N; r++) {
            ev[r] = all + bdisp[r];
            label[r] = malloc(64);
            if (label[r])
                snprintf(label[r], 64, "rank %d: stage %d, slot %d", r, r / d->E, r % d->E);
        }
        st = ev && label ? g1_trace_write_json(path, N, ev, counts, drops, offs, label)
                         : G1_FAIL(G1_ERR_NOMEM, "out of memory");
        for (int r = 0; label && r < N; r++)
            free(label[r]);
        free(label);
        free(ev);
    }
    free(all), free(counts), free(bcount), free(bdisp), free(offs), free(drops);
    return st;
}
