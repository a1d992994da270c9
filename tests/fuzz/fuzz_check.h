/* CHECK(cond, fmt, ...) for the fuzz targets: when cond is false, print
 * "<FUZZ_NAME>: <message>" and abort, which libFuzzer reports as a crash
 * (with the input saved) and replay.c as a failed test. */
#ifndef G1_FUZZ_CHECK_H
#define G1_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, ...)                                                                                              \
    do {                                                                                                              \
        if (!(cond)) {                                                                                                \
            fprintf(stderr, FUZZ_NAME ": " __VA_ARGS__);                                                              \
            fputc('\n', stderr);                                                                                      \
            abort();                                                                                                  \
        }                                                                                                             \
    } while (0)

#endif
