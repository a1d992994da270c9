/* Parts made on the caller's thread and used on a thread of their own, two
 * at a time: part i is made into buffer i % 2 while part i - 1 is used, so
 * the two overlap (the CUDA engine reads a layer from the checkpoint while
 * the one before is copied to the GPU). Part i is made only once part
 * i - 2, in the same buffer, has been used; each part is used once, in
 * order, after it was made. */
#ifndef G1_PART_PIPE_H
#define G1_PART_PIPE_H

#include "status.h"

/* Make part i into buf (the caller's thread), or use it (the pipe's). */
typedef g1_status (*g1_part_fn)(void *ctx, int i, void *buf);

/* Parts 0..n-1 through make and use (buf: the two buffers). Returns the
 * first failure with its message on the caller's thread: make's, or use's
 * (recorded on the pipe's thread, copied here); after one, no part is made
 * or used past the ones already under way. G1_ERR_NOMEM when the thread
 * cannot start. The pipe's thread makes every use call and ends before
 * this returns. */
g1_status g1_part_pipe_run(int n, void *const buf[2], g1_part_fn make, g1_part_fn use, void *ctx);

#endif
