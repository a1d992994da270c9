/* Tiny helpers shared by the C tests (tests/unit, tok, h5, plan, cuda):
 * deterministic random numbers, a tolerance check that prints the worst
 * element, and CHECK. Tests exit non-zero on failure. */
#ifndef G1_TESTUTIL_H
#define G1_TESTUTIL_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t tu_state = 0x1234567;
static inline uint64_t tu_next(void)
{
    uint64_t z = (tu_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline double tu_unif(void) { return (double)(tu_next() >> 11) * (1.0 / 9007199254740992.0); }
static inline float tu_sym(void) { return (float)(2 * tu_unif() - 1); }
static inline int tu_int(int n) { return (int)(tu_next() % (uint64_t)n); }

static int tu_failures = 0;

/* |got - ref| <= atol + rtol * |ref| elementwise; prints the worst. */
static inline int tu_close(const char *what, const float *got, const double *ref, size_t n, double atol, double rtol)
{
    size_t worst = 0, bad = 0;
    double worst_ex = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - ref[i]), lim = atol + rtol * fabs(ref[i]);
        if (!(err <= lim)) {
            if (bad < 3)
                fprintf(stderr, "  %s: mismatch at %zu: got %.9g, expected %.9g\n", what, i, got[i], ref[i]);
            bad++;
        }
        if (i == 0 || !(err - lim <= worst_ex)) { /* the first, a larger excess, or NaN */
            worst_ex = err - lim;
            worst = i;
        }
    }
    printf("%-40s %s  (worst at %zu: got %.9g ref %.9g)\n", what, bad ? "FAIL" : "ok", worst,
           n ? got[worst] : 0.0f, n ? ref[worst] : 0.0);
    if (bad)
        tu_failures++;
    return bad == 0;
}

/* CHECK(cond, fmt, ...): counts a check (tu_checks); when cond is false,
 * counts a failure (tu_failures) and prints "FAIL file:line: message" on
 * stderr. The message's arguments are evaluated only then. */
#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (!tu_counted(!!(cond)))                        \
            tu_fail_at(__FILE__, __LINE__, __VA_ARGS__);  \
    } while (0)

static int tu_checks = 0;

static inline int tu_counted(int ok)
{
    tu_checks++;
    tu_failures += !ok;
    return ok;
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static inline void tu_fail_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout); /* what the test printed before comes first */
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static inline void tu_check(int cond, const char *what)
{
    printf("%-40s %s\n", what, cond ? "ok" : "FAIL");
    if (!cond)
        tu_failures++;
}

#endif
