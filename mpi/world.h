/* The process world as main() sees it: start-up, rank and size, and the two
 * ways to end. world_mpi.c implements it with MPI (singleton runs without
 * mpirun work), world_none.c for builds without MPI (always one process). */
#ifndef G1_WORLD_H
#define G1_WORLD_H

#include <stddef.h>

#include "status.h"

typedef struct g1_world {
    int rank; /* this process, 0-based */
    int size; /* number of processes */
} g1_world;

/* Start the world (MPI_Init with MPI). Call once, before anything else. */
g1_status g1_world_init(int *argc, char ***argv, g1_world *w);
/* Orderly end on every rank (MPI_Finalize); safe when init failed. */
void g1_world_finalize(void);
/* End the whole job now from any one rank (MPI_Abort once MPI is up, so no
 * rank hangs waiting for this one); never returns. */
_Noreturn void g1_world_abort(int code);
/* 1 when `ok` is true on every rank (a collective: every rank must call
 * it); lets ranks agree before anything is written. */
int g1_world_all_ok(int ok);
/* Every rank's n bytes, in rank order, into all (size * n bytes): a
 * collective; G1_OK or an error. */
g1_status g1_world_allgather(const void *mine, size_t n, void *all);
/* This process's index among the processes of its node that give the same
 * key (>= 0; a collective: MPI_Comm_split_type with MPI_COMM_TYPE_SHARED,
 * whatever the launcher, then split by key; -1 when MPI cannot tell). */
int g1_world_local_rank(int key);
/* "mpi" or "none": how this binary was built. */
const char *g1_world_kind(void);

#endif
