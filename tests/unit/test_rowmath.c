/* src/rowmath.c: the exponential against the C library's, and the row
 * passes of this build's CPU path (AVX-512, AVX2 or portable) against
 * scalar models of what rowmath.h promises, bit for bit. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "rowmath.h"
#include "testutil.h"

static int64_t ord(double x) /* doubles >= 0 in order as integers */
{
    int64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* g1_expd within 2 ulp of libm's exp (itself within 1 ulp) for normal
 * results, within 2 units of 2^-1074 for subnormal ones, exact at 0. */
static void test_expd(void)
{
    int64_t worst = 0;
    double worst_x = 0;
    int bad = 0;
    for (int i = 0; i < 3000000; i++) {
        double x;
        switch (i % 4) {
        case 0: x = -750 * tu_unif(); break;
        case 1: x = -40 * tu_unif(); break;
        case 2: x = -(double)(i % 2200) * 0.5 * 0.6931471805599453 + 1e-9 * (tu_unif() - 0.5); break; /* near the reduction's ties */
        default: x = -745.2 + 37 * tu_unif(); break; /* the subnormal range and just above it */
        }
        if (x > 0)
            x = -x;
        double e = g1_expd(x), ref = exp(x);
        int64_t d = llabs(ord(e) - ord(ref));
        if (!(e >= 0) || d > 2) { /* units of the last place, normal or subnormal */
            if (bad++ < 3)
                fprintf(stderr, "  expd(%.17g) = %.17g, libm %.17g (%lld ulp)\n", x, e, ref, (long long)d);
        }
        if (d > worst) {
            worst = d;
            worst_x = x;
        }
    }
    struct { double x, want; } exact[] = {{0.0, 1.0}, {-0.0, 1.0}, {-INFINITY, 0.0}, {-750.0, 0.0}, {-1e6, 0.0},
                                          {-1e-300, 1.0}, {-0x1p-60, 1.0}};
    for (size_t k = 0; k < sizeof exact / sizeof exact[0]; k++)
        if (g1_expd(exact[k].x) != exact[k].want && bad++ < 8)
            fprintf(stderr, "  expd(%g) = %.17g, want %.17g\n", exact[k].x, g1_expd(exact[k].x), exact[k].want);
    printf("expd: worst %lld ulp from libm (at %.17g)\n", (long long)worst, worst_x);
    if (bad) {
        fprintf(stderr, "FAIL expd: %d value(s) off\n", bad);
        tu_failures++;
    }
}

/* rowmath.h's sum: partial i % 8, then the fixed tree */
static double model_exp(const float *l, int V, double mx, double t, double *p, int32_t *nnz)
{
    double s[8] = {0};
    int32_t c = 0;
    for (int i = 0; i < V; i++) {
        double x = (double)l[i] - mx;
        if (t != 1.0)
            x /= t;
        p[i] = g1_expd(x);
        s[i % 8] += p[i];
        c += p[i] > 0;
    }
    *nnz = c;
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

static void fill(float *l, int V, int kind)
{
    for (int i = 0; i < V; i++) {
        switch (kind) {
        case 0: l[i] = 4 * tu_sym(); break;
        case 1: l[i] = tu_int(5) == 0 ? -INFINITY : 30 * tu_sym(); break;
        case 2: l[i] = (float)tu_int(3); break;                          /* ties */
        default: l[i] = tu_int(50) == 0 ? 2000 * tu_sym() : tu_sym(); break; /* spreads past exp's range */
        }
    }
}

static void test_rows(void)
{
    int Vs[] = {1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 1000, 131075};
    double ts[] = {1.0, 0.8, 0.01, 3.0};
    int bad = 0, runs = 0;
    for (size_t a = 0; a < sizeof Vs / sizeof Vs[0]; a++) {
        int V = Vs[a];
        float *l = malloc(sizeof *l * (size_t)V);
        double *p = malloc(sizeof *p * (size_t)V), *q = malloc(sizeof *q * (size_t)V);
        for (int kind = 0; kind < 4; kind++) {
            fill(l, V, kind);
            l[tu_int(V)] = 5; /* at least one finite value */
            float mx = 0;
            float want = -INFINITY;
            int first = -1;
            for (int i = 0; i < V; i++)
                if (l[i] > want) {
                    want = l[i];
                    first = i;
                }
            if (g1_row_max(l, V, &mx) != -1 || mx != want || g1_row_first(l, V, mx) != first) {
                if (bad++ < 3)
                    fprintf(stderr, "  V %d kind %d: max %g (want %g), first %d (want %d)\n", V, kind, mx, want,
                            (int)g1_row_first(l, V, mx), first);
            }
            for (size_t b = 0; b < sizeof ts / sizeof ts[0]; b++) {
                int32_t n1 = -1, n2 = -2;
                double s1 = g1_row_exp(l, V, mx, ts[b], p, &n1), s2 = model_exp(l, V, mx, ts[b], q, &n2);
                double s3 = g1_row_exp(l, V, mx, ts[b], NULL, NULL);
                runs++;
                if (memcmp(&s1, &s2, sizeof s1) || memcmp(&s3, &s2, sizeof s1) || n1 != n2 ||
                    memcmp(p, q, sizeof *p * (size_t)V)) {
                    if (bad++ < 3)
                        fprintf(stderr, "  V %d kind %d T %g: sum %a / %a / model %a, nnz %d / %d\n", V, kind, ts[b],
                                s1, s3, s2, (int)n1, (int)n2);
                }
            }
        }
        /* NaN and +inf are found wherever they are, the first one reported */
        for (int pos = 0; pos < V && pos < 40; pos++) {
            fill(l, V, 0);
            l[pos] = pos % 2 ? NAN : INFINITY;
            if (pos + 3 < V)
                l[pos + 3] = NAN;
            float mx;
            if (g1_row_max(l, V, &mx) != pos && bad++ < 3)
                fprintf(stderr, "  V %d: bad value at %d reported at %d\n", V, pos, (int)g1_row_max(l, V, &mx));
        }
        if (V > 40) {
            fill(l, V, 0);
            l[V - 1] = NAN;
            float mx;
            if (g1_row_max(l, V, &mx) != V - 1 && bad++ < 3)
                fprintf(stderr, "  V %d: NaN at the end not found\n", V);
        }
        /* all -inf; signed zeros are equal */
        for (int i = 0; i < V; i++)
            l[i] = -INFINITY;
        float mx = 0;
        if ((g1_row_max(l, V, &mx) != -1 || mx != -INFINITY) && bad++ < 3)
            fprintf(stderr, "  V %d: all -inf gave %g\n", V, mx);
        l[V - 1] = 0.0f;
        l[V / 2] = -0.0f;
        if ((g1_row_max(l, V, &mx) != -1 || mx != 0 || g1_row_first(l, V, mx) != V / 2) && bad++ < 3)
            fprintf(stderr, "  V %d: signed zeros: first %d\n", V, (int)g1_row_first(l, V, mx));
        if (g1_row_first(l, V, 7.0f) != V && bad++ < 3)
            fprintf(stderr, "  V %d: a value not there was found\n", V);
        free(l);
        free(p);
        free(q);
    }
    printf("rows (%s path): %d exp passes equal to the model\n", g1_cpu_kernels(), runs);
    if (bad) {
        fprintf(stderr, "FAIL rows: %d mismatch(es)\n", bad);
        tu_failures++;
    }
}

int main(void)
{
    test_expd();
    test_rows();
    printf("%s: %d failure(s)\n", tu_failures ? "FAIL" : "PASS", tu_failures);
    return tu_failures ? 1 : 0;
}
