/* For the MPI files of mpi/ only: the parent communicator main started with
 * (world_mpi.c is main's side of MPI; nothing else names MPI_COMM_WORLD). */
#ifndef G1_WORLD_MPI_H
#define G1_WORLD_MPI_H

#include <mpi.h>

MPI_Comm g1_world_comm(void);

#endif
