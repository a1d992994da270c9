/* Passes over one logits row (the vocabulary) for rank 0's per-row work:
 * the largest logit, the first token holding it, and exp((l - max) / T)
 * with its sum. Vectorised for AVX-512 and AVX2 with a portable C path;
 * every path gives the same bits (same operations, same summation order),
 * so sampled tokens and log-probs do not depend on the build's CPU.
 * Used by sampler.c; exported for the tests and the benchmark. */
#ifndef G1_ROWMATH_H
#define G1_ROWMATH_H

#include <stdint.h>

/* exp(x) for x <= 0 in double, within 2 ulp of the exact value (normal
 * results; below 2^-1022 the result is q * 2^n rounded once). Inputs below
 * -750 (and -inf) give 0. Only plain multiplies and adds: the same bits on
 * every path. Not for x > 0. */
double g1_expd(double x);

/* The largest of l[0..V) in *max (-inf when all are -inf). Returns the
 * index of the first NaN or +inf, or -1 when there is none (*max is then
 * meaningless). V >= 1. */
int32_t g1_row_max(const float *l, int32_t V, float *max);

/* The first i with l[i] == v, or V when none. */
int32_t g1_row_first(const float *l, int32_t V, float v);

/* p = g1_expd(((double)l[i] - mx) / t) for every i < V (t == 1: no
 * division), stored to p[i] when p is not NULL. Returns their sum: eight
 * partial sums (element i goes to partial i % 8, in index order), then
 * ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)). *nnz (when not NULL)
 * counts the p > 0. Requires l[i] <= mx and no NaN (g1_row_max first). */
double g1_row_exp(const float *l, int32_t V, double mx, double t, double *p, int32_t *nnz);

#endif
