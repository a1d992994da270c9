/* bench_cuda_layer's suggested --cuda-tune (bench_suggest.h) on made-up
 * timing tables: what a GPU session's table should turn into. No GPU. */
#include <stdio.h>

#include "bench_suggest.h"
#include "../unit/testutil.h"

static void expect(const char *what, const double g[5], const double a[5], const double b[5], const double c[5],
                   int tc, int gemv, int mma, int wide, int upto)
{
    int gv = -1, mx = -1, wd = -1, lost = -1, n = g1_bench_suggest(g, a, b, c, tc, &gv, &mx, &wd, &lost);
    char msg[256];
    snprintf(msg, sizeof msg, "%s: gemv %d mma %d wide %d up to %d (expected %d %d %d %d)", what, gv, mx, wd, n, gemv,
             mma, wide, upto);
    tu_check(n == upto && (!n || (gv == gemv && mx == mma && wd == wide)), msg);
}

int main(void)
{
    /* rows:                16    32    64    128   256 */
    const double c[5] = {1.0, 1.1, 1.3, 1.6, 2.2};    /* cuBLAS: dequantising dominates, slow growth */
    const double g[5] = {0.3, 0.6, 1.2, 0, 0};        /* the GEMV: linear in rows */
    const double a[5] = {0.5, 0.55, 0.7, 1.2, 2.4};   /* tensor cores, 64 columns */
    const double b[5] = {0.6, 0.6, 0.75, 1.3, 2.5};   /* 128 columns: slower here */
    /* the GEMV loses at 32 (0.6 against the tensor cores' 0.55) */
    expect("GEMV to 16, tensor cores to 128", g, a, b, c, 1, 16, 128, 0, 256);
    expect("GEMV to 32 (a tie goes to it), tensor cores to 128", (const double[5]){0.3, 0.55, 0.9, 0, 0}, a, b, c, 1,
           32, 128, 0, 256);
    expect("GEMV to 64 when it wins there too", (const double[5]){0.3, 0.5, 0.69, 0, 0}, a, b, c, 1, 64, 128, 0, 256);
    /* the tensor cores win at every row count: 256 */
    expect("tensor cores to 256", g, a, b, (const double[5]){1, 1.1, 1.3, 1.6, 2.6}, 1, 16, 256, 0, 256);
    /* they lose as soon as the GEMV stops (64 rows): none */
    expect("tensor cores never", g, (const double[5]){0.5, 1.2, 1.4, 1.7, 2.3},
           (const double[5]){0.5, 1.3, 1.5, 1.8, 2.4}, c, 1, 64, 0, 0, 256);
    /* a win after a loss does not count: they must keep winning from the GEMV's end */
    expect("a later win ignored", g, (const double[5]){0.5, 0.7, 0.7, 1.2, 2.0},
           (const double[5]){0.5, 0.8, 0.8, 1.3, 2.1}, (const double[5]){1.0, 0.5, 1.3, 1.6, 2.2}, 1, 16, 0, 0, 256);
    /* 128-column blocks faster over the rows above the GEMV's: wide, judged on those blocks */
    expect("wide blocks", g, a, (const double[5]){0.9, 0.5, 0.6, 1.1, 2.1}, c, 1, 16, 256, 1, 256);
    /* the GEMV loses at 16 already: 16 (fewer rows were not compared) */
    expect("GEMV loses at 16", (const double[5]){0.6, 1.2, 2.4, 0, 0}, a, b, c, 1, 16, 128, 0, 256);
    /* no tensor-core times (f32, or a GPU before compute capability 8.0) */
    expect("no tensor cores timed", (const double[5]){0.3, 0.5, 1.4, 0, 0}, (const double[5]){0},
           (const double[5]){0}, c, 0, 32, 0, 0, 256);
    /* a table that stops at 64 rows (a small --tokens) with the tensor cores still winning: the default 128 */
    expect("table to 64", g, a, b, (const double[5]){1.0, 1.1, 1.3, 0, 0}, 1, 16, 128, 0, 64);
    int gv, mx, wd, lost = 0, lost2 = 1;
    g1_bench_suggest((const double[5]){0.6, 1.2, 2.4, 0, 0}, a, b, c, 1, &gv, &mx, &wd, &lost);
    g1_bench_suggest(g, a, b, c, 1, &gv, &mx, &wd, &lost2);
    tu_check(lost == 1 && lost2 == 0, "the GEMV's loss at 16 rows is said (and only then)");
    /* no table at all */
    expect("no table", g, a, b, (const double[5]){0}, 1, 0, 0, 0, 0);
    printf("%s: %d failure(s)\n", tu_failures ? "FAIL" : "PASS", tu_failures);
    return tu_failures ? 1 : 0;
}
