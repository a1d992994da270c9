/* g1_world without MPI: a single process. Used when meson finds no MPI
 * (or -Dmpi=disabled); grok1-run then never needs mpirun. */
#include "world.h"

#include <stdlib.h>
#include <string.h>

g1_status g1_world_init(int *argc, char ***argv, g1_world *w)
{
    (void)argc;
    (void)argv;
    w->rank = 0;
    w->size = 1;
    return G1_OK;
}

void g1_world_finalize(void) {}

_Noreturn void g1_world_abort(int code)
{
    exit(code);
}

int g1_world_all_ok(int ok)
{
    return ok != 0;
}

g1_status g1_world_allgather(const void *mine, size_t n, void *all)
{
    memcpy(all, mine, n);
    return G1_OK;
}

int g1_world_local_rank(int key)
{
    (void)key;
    return 0;
}

const char *g1_world_kind(void)
{
    return "none";
}
