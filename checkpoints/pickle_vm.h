/* Internal to the pickle scanner: the symbolic values the opcode walk builds
 * (pickle_scan.c) and that the release-shape check reads (pickle_check.c).
 * Values are inert records; nothing is ever called. */
#ifndef G1_PICKLE_VM_H
#define G1_PICKLE_VM_H

#include <stdint.h>

#include "pickle_scan.h"

/* Caps for hostile input; a release pickle uses about 40 values. */
#define PV_MAX_NODES 16384
#define PV_MAX_CELLS 16384
#define PV_MAX_STACK 4096
#define PV_MAX_MARKS 1024
#define PV_MAX_MEMO 16384
#define PV_STR_KEEP 64 /* string bytes kept (longer ones keep their length) */

typedef enum pv_kind {
    PV_NONE, PV_BOOL, PV_INT, PV_FLOAT, PV_STR, PV_BYTES,
    PV_TUPLE, PV_LIST, PV_DICT, PV_SET, PV_GLOBAL, PV_OBJ
} pv_kind;

/* The allowed globals (index into g1_pickle_allowed_globals' meaning). */
typedef enum pv_global {
    PV_G_RECONSTRUCT, /* numpy.core.multiarray._reconstruct (numpy 2: numpy._core...) */
    PV_G_NDARRAY,     /* numpy.ndarray */
    PV_G_DTYPE,       /* numpy.dtype */
    PV_G_QW8,         /* __main__.QuantizedWeight8bit */
    PV_G_BF16         /* ml_dtypes.bfloat16 */
} pv_global;

typedef struct pv_node {
    uint8_t kind;    /* pv_kind */
    uint8_t global;  /* PV_GLOBAL: pv_global */
    uint8_t newobj;  /* PV_OBJ: made by NEWOBJ (1) or REDUCE (0) */
    int64_t i;       /* PV_INT, PV_BOOL */
    uint64_t off, len; /* PV_BYTES: payload in the file; PV_STR: len = full length */
    char s[PV_STR_KEEP + 1]; /* PV_STR: first bytes, NUL-terminated */
    int head, tail, count;   /* containers: list of cells (dict: key, value, key, ...) */
    int fn, args, state;     /* PV_OBJ: callable, argument tuple, BUILD state (-1: none) */
} pv_node;

typedef struct pv_cell {
    int node, next;
} pv_cell;

typedef struct pv_tree {
    pv_node *nodes;
    pv_cell *cells;
    int n_nodes, n_cells;
    const char *name;
} pv_tree;

/* i-th item of a container (-1 when out of range). */
int pv_item(const pv_tree *t, int container, int i);

/* Check that `root` is what a release file holds and fill `out` (the
 * payloads were already bounded by the file's size during the scan). */
g1_status pv_check_release(const pv_tree *t, int root, g1_pickle_content *out);

#endif
