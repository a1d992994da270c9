/* Shared by the MPI files of the distributed runtime (grid, all-to-all,
 * pipeline). Not for the driver or grok1_run.c. */
#ifndef G1_DIST_INTERNAL_H
#define G1_DIST_INTERNAL_H

#include <mpi.h>

#include "dist.h"

struct g1_dist {
    MPI_Comm all;    /* duplicate of the parent communicator: pipeline messages */
    MPI_Comm stage;  /* the E ranks of this stage, ordered by slot: the all-to-all */
    int rank, size, P, E, s, e;
    double busy, t_start; /* seconds computing, and when the run started */
    g1_trace *trace;      /* NULL: no timeline */
    double clock_offset;  /* add to this rank's clock to get rank 0's */
    char what[32];        /* "layers a-b": the compute span's name */
    g1_backend backend;   /* host message buffers page-locked with CUDA */
    int device;
    int direct;           /* activations handed to MPI in engine (device) memory */
    struct a2a *a2a;
    struct pipe *pipe;
    size_t host_bytes;    /* message, activation and row buffers made in host memory (g1_dist_buffer_bytes) */
    size_t engine_bytes;  /* those made in engine memory (--gpu-direct: g1_dist_engine_bytes) */
};

enum { G1_TAG_FWD = 1, G1_TAG_RES = 2, G1_TAG_CLOCK = 3 };
enum { G1_MSG_BATCH = 1, G1_MSG_STOP = 2 };

/* MPI error code -> our status with the call named. */
g1_status g1_mpi_check(int rc, const char *what, const char *file, int line);
#define G1_MPI(call) G1_TRY(g1_mpi_check((call), #call, __FILE__, __LINE__))

double g1_now(void);
void g1_a2a_free(struct a2a *a);
void g1_pipe_mpi_free(struct pipe *p);

/* Message: int32 header [kind, mb, T, F], T slots, T positions, F forks
 * (src, dst, n: global slots), T*D floats. Everything before the floats is
 * the message's head (g1_msg_bytes(T, F, 0) bytes). */
size_t g1_msg_bytes(int T, int F, int D);
void g1_msg_pack(void *buf, int kind, int mb, int T, const int *slot, const int *pos, int F, const g1_fork *fork,
                 const float *x, int D);
/* Pointers into a received message. */
void g1_msg_view(void *buf, int D, int *kind, int *mb, int *T, int **slot, int **pos, int *F, g1_fork **fork,
                 float **x);

#endif
