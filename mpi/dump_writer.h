/* The logits dump written on a thread of its own (rank 0 of grok1-run).
 *
 * A dump takes 512 KiB a scored token at Grok-1's vocabulary; writing it
 * (copying it into the page cache, or waiting for a file system that is
 * behind) on rank 0's thread would stop the pipeline for as long. Here the
 * rows are copied into buffers of the writer's and queued; the thread makes
 * every HDF5 call of the dump (this HDF5 is not thread-safe: no other
 * thread calls it meanwhile), in the order given. The driver writes a
 * request's result line only once its dataset is flushed
 * (g1_dump_writer_ready), so what a killed run leaves is what a
 * synchronous writer leaves. The thread flushes after each request while
 * it keeps up; when it is behind, once for up to G1_DUMP_FLUSH_EVERY
 * requests (or 0.5 s), as each flush costs a scan of HDF5's metadata cache
 * (ckpt.h). */
#ifndef G1_DUMP_WRITER_H
#define G1_DUMP_WRITER_H

#include <stdint.h>

#include "ckpt.h"
#include "status.h"

typedef struct g1_dump_writer g1_dump_writer;

/* Datasets finished that a writer behind flushes at once, at most. */
enum { G1_DUMP_FLUSH_EVERY = 64 };

/* A writer for the open dump f (not owned) of vocab_size columns; no
 * thread until the first write. `most_bytes`: rows queued at most before
 * g1_dump_writer_write waits (0: G1_DUMP_WRITER_BYTES, 1 GiB); they are held
 * in one buffer that grows to that as needed, or to the largest write when
 * that is more, and no further. */
g1_status g1_dump_writer_new(g1_logits_file *f, int vocab_size, uint64_t most_bytes, g1_dump_writer **out);
/* g1_logits_file_write, queued: the rows, tokens and id are copied. Fails
 * with the writer's first error once it has one. */
g1_status g1_dump_writer_write(g1_dump_writer *w, int64_t k, int n_rows_total, int row0, int nrows,
                               const float *logits, const int *tokens, const char *id_json);
/* g1_logits_file_result_out, queued (the durable mark is HDF5 work too). */
void g1_dump_writer_result_out(g1_dump_writer *w, int64_t k);
/* Request k's dataset has all its rows written and flushed: 1; 0 not yet
 * (with `wait`: waits until it is); -1 the writer failed (its message is
 * this thread's last error). Each k is answered 1 once. */
int g1_dump_writer_ready(g1_dump_writer *w, int64_t k, int wait);
/* Bytes of rows the writer holds now (queued, being written, or kept for
 * the next); at most max(most_bytes, the largest write's rows). */
uint64_t g1_dump_writer_held_bytes(g1_dump_writer *w);
/* The most bytes of rows it has held at once so far, while its ring grew
 * too: also at most max(most_bytes, the largest write's rows) (the
 * planner counts that for rank 0). */
uint64_t g1_dump_writer_peak_bytes(g1_dump_writer *w);
/* For tests (tests/h5/test_dump_writer.c), so that what a writer behind
 * does is known exactly: hold (1) keeps the thread from starting another
 * job until released (0), as a file system far behind would; what is
 * written meanwhile queues up. While held, nothing may wait for the
 * thread (g1_dump_writer_ready with wait, drain) nor for room for rows
 * (queue less than most_bytes); free releases it. */
void g1_dump_writer_test_hold(g1_dump_writer *w, int hold);
/* For tests: the time after which finished datasets are flushed though
 * more jobs are queued (0.5 s); a long one leaves only the count and an
 * empty queue to decide. */
void g1_dump_writer_test_flush_after(g1_dump_writer *w, double seconds);
/* Wait until everything queued is done (the thread then makes no HDF5
 * call until the next write): the writer's first error, or G1_OK. */
g1_status g1_dump_writer_drain(g1_dump_writer *w);
/* Drain, end the thread and free (NULL: nothing); the dump stays open:
 * the caller finishes or aborts it. The writer's first error, or G1_OK. */
g1_status g1_dump_writer_free(g1_dump_writer *w);

#endif
