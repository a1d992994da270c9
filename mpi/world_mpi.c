/* g1_world over MPI. Works under mpirun/srun and as a singleton (started
 * without a launcher, which Open MPI treats as a world of one). Only this
 * file uses MPI_COMM_WORLD (the rest of mpi/ takes g1_world_comm). */
#include "world.h"
#include "world_mpi.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>

static int mpi_up;

g1_status g1_world_init(int *argc, char ***argv, g1_world *w)
{
    int flag = 0;
    MPI_Initialized(&flag);
    if (!flag && MPI_Init(argc, argv) != MPI_SUCCESS)
        return G1_FAIL(G1_ERR_MPI, "MPI_Init failed");
    mpi_up = 1;
    /* errors come back as codes rather than aborting inside MPI */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (MPI_Comm_rank(MPI_COMM_WORLD, &w->rank) != MPI_SUCCESS ||
        MPI_Comm_size(MPI_COMM_WORLD, &w->size) != MPI_SUCCESS)
        return G1_FAIL(G1_ERR_MPI, "MPI_Comm_rank/MPI_Comm_size failed");
    return G1_OK;
}

void g1_world_finalize(void)
{
    int done = 0;
    if (!mpi_up)
        return;
    MPI_Finalized(&done);
    if (!done)
        MPI_Finalize();
    mpi_up = 0;
}

_Noreturn void g1_world_abort(int code)
{
    if (mpi_up)
        MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

int g1_world_all_ok(int ok)
{
    int mine = ok ? 1 : 0, all = 0;
    if (MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS)
        return 0;
    return all;
}

g1_status g1_world_allgather(const void *mine, size_t n, void *all)
{
    if (n > (size_t)INT_MAX ||
        MPI_Allgather(mine, (int)n, MPI_BYTE, all, (int)n, MPI_BYTE, MPI_COMM_WORLD) != MPI_SUCCESS)
        return G1_FAIL(G1_ERR_MPI, "MPI_Allgather of %zu bytes failed", n);
    return G1_OK;
}

int g1_world_local_rank(int key)
{
    MPI_Comm node, same;
    int r = -1;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS)
        return -1;
    if (MPI_Comm_split(node, key < 0 ? 0 : key, 0, &same) == MPI_SUCCESS) {
        if (MPI_Comm_rank(same, &r) != MPI_SUCCESS)
            r = -1;
        MPI_Comm_free(&same);
    }
    MPI_Comm_free(&node);
    return r;
}

const char *g1_world_kind(void)
{
    return "mpi";
}

MPI_Comm g1_world_comm(void)
{
    return MPI_COMM_WORLD;
}
