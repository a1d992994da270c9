/* The end of a program's --help or --version: whether what it printed
 * reached stdout. */
#ifndef G1_CLI_OUT_H
#define G1_CLI_OUT_H

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* 0 when everything printed to stdout was written; else 1 with a message on
 * stderr (stdout a full disk, a closed descriptor): the text is lost, and a
 * script that saved it, or checked the version, must not take it as
 * printed. The exit status of --help and --version. */
static inline int g1_stdout_done(const char *prog)
{
    errno = 0;
    int bad = fflush(stdout) != 0;
    int e = errno;
    if (!bad && !ferror(stdout))
        return 0;
    fprintf(stderr, "%s: error: cannot write to stdout: %s\n", prog, e ? strerror(e) : "a write failed");
    return 1;
}

#endif
