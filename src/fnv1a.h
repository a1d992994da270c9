/* FNV-1a, 64 bits: the fingerprints recorded in files (a checkpoint's and
 * its parts', a run's tokenizer_fnv1a64, the resume records of the input).
 * Their values are kept in files, so this hash never changes. */
#ifndef G1_FNV1A_H
#define G1_FNV1A_H

#include <stddef.h>
#include <stdint.h>

/* The hash of no bytes: where a hash begins. */
#define G1_FNV1A64_START 0xcbf29ce484222325ull

/* h extended by the n bytes at p: incremental, so hashing a buffer in
 * pieces gives the hash of the whole
 * (g1_fnv1a64(g1_fnv1a64(G1_FNV1A64_START, a, n), b, m) is that of a then b). */
uint64_t g1_fnv1a64(uint64_t h, const void *p, size_t n);

#endif
