/* Reads the opcode stream of one release pickle (tensorNNNNN_000) without
 * unpickling: it finds the raw array payloads (offset, size, dtype, shape)
 * and refuses any global, opcode or structure the release does not use.
 * Nothing from the file is ever executed or imported. No HDF5 here. */
#ifndef G1_PICKLE_SCAN_H
#define G1_PICKLE_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define G1_PICKLE_MAX_DIMS 8

typedef enum g1_pickle_dtype { G1_PICKLE_F32, G1_PICKLE_I8, G1_PICKLE_BF16 } g1_pickle_dtype;

/* One numpy array: its raw C-contiguous little-endian bytes sit in the file
 * at [offset, offset + nbytes). */
typedef struct g1_pickle_array {
    g1_pickle_dtype dtype;
    int ndim;
    int64_t shape[G1_PICKLE_MAX_DIMS];
    uint64_t offset, nbytes;
} g1_pickle_array;

/* What a file holds: one array, or a QuantizedWeight8bit (arr[0] = weight,
 * int8; arr[1] = scales, bf16; the weight payload first in the file). */
typedef enum g1_pickle_kind { G1_PICKLE_ARRAY, G1_PICKLE_QW8 } g1_pickle_kind;
typedef struct g1_pickle_content {
    g1_pickle_kind kind;
    int n_arrays; /* 1 or 2 */
    g1_pickle_array arr[2];
} g1_pickle_content;

/* Where the bytes come from: read exactly n bytes at off, or fail (G1_FAIL). */
typedef struct g1_pickle_src {
    g1_status (*read_at)(void *ctx, uint64_t off, void *buf, size_t n);
    void *ctx;
    uint64_t size; /* total bytes of the file */
    const char *name; /* for messages */
} g1_pickle_src;

/* Scan the whole stream (protocols 2-4; payloads are skipped, not read).
 * G1_ERR_FORMAT with a message naming the file and offset for anything
 * outside what the release uses; G1_ERR_IO when the source cannot be read. */
g1_status g1_pickle_scan(const g1_pickle_src *src, g1_pickle_content *out);
/* The same over bytes in memory (the fuzz target, tests). */
g1_status g1_pickle_scan_mem(const void *buf, size_t n, const char *name, g1_pickle_content *out);

const char *g1_pickle_dtype_name(g1_pickle_dtype t);
size_t g1_pickle_dtype_size(g1_pickle_dtype t);
/* The globals a release pickle may name, as "module.name" lines (docs). */
extern const char *const g1_pickle_allowed_globals[];

#endif
