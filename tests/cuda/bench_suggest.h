/* bench_cuda_layer's suggested --cuda-tune, from its 16-to-256-row table:
 * a pure function of the times, so that tests/cuda/test_bench_suggest.c
 * checks the reading on made-up tables (no GPU). */
#ifndef G1_BENCH_SUGGEST_H
#define G1_BENCH_SUGGEST_H

/* Times in ms (0: not measured) at 16 << i rows, i = 0..4, of the GEMV (g,
 * up to 64 rows), the tensor-core kernel with 64- and 128-column blocks
 * (a, b; tc 0 when it was not timed) and the cuBLAS path (c). Sets the
 * most rows at which the GEMV is still the fastest, counted from 16 while
 * it keeps winning (16 when it loses there: fewer rows were not compared);
 * whether the tensor-core kernel's 128-column blocks were faster over the
 * rows above that (*wide); and the most rows at which that kernel still
 * beats cuBLAS, counted while it keeps winning (0: it loses at once; 128
 * when it still wins where a table that stops below 128 ends). Returns the
 * rows measured (0: no table, nothing set). */
static inline int g1_bench_suggest(const double g[5], const double a[5], const double b[5], const double c[5],
                                   int tc, int *gemv, int *mma, int *wide, int *gemv_lost)
{
    int n = 0;
    while (n < 5 && c[n] > 0)
        n++;
    if (!n)
        return 0;
    int i = 0;
    *gemv = 16, *mma = 0, *wide = 0;
    for (; i < n && i < 3 && g[i] > 0; i++) {
        double other = c[i];
        other = tc && a[i] < other ? a[i] : other;
        other = tc && b[i] < other ? b[i] : other;
        if (g[i] > other)
            break;
        *gemv = 16 << i;
    }
    *gemv_lost = i == 0;
    if (tc) {
        double sa = 0, sb = 0;
        int j = 0;
        while (j < n && (16 << j) <= *gemv)
            j++;
        for (int k = j; k < n; k++)
            sa += a[k], sb += b[k];
        *wide = sb < sa;
        for (; j < n && (*wide ? b[j] : a[j]) < c[j]; j++)
            *mma = 16 << j;
        if (*mma && j == n && n < 5 && *mma < 128)
            *mma = 128;
    }
    return 16 << (n - 1);
}

#endif
