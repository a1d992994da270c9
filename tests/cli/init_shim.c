/* For the tests only (LD_PRELOAD): MPI_Init first creates the file
 * $G1_TEST_INIT_MARK.<pid>, then waits for a signal (at most 20 s) before
 * the real MPI_Init, so that a test can send one while every rank is
 * starting MPI (test_cli.py init_signal counts the files). The signal's
 * handler is grok1-run's: the wait only sees that one ran (EINTR). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int MPI_Init(int *argc, char ***argv);

int MPI_Init(int *argc, char ***argv)
{
    const char *mark = getenv("G1_TEST_INIT_MARK");
    if (mark && *mark) {
        char path[4096];
        snprintf(path, sizeof path, "%s.%ld", mark, (long)getpid());
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0)
            close(fd);
        struct timespec left = {20, 0};
        while (nanosleep(&left, &left) != 0 && errno != EINTR) {
        }
    }
    int (*next)(int *, char ***);
    *(void **)&next = dlsym(RTLD_NEXT, "MPI_Init");
    if (!next) {
        fprintf(stderr, "init_shim: no MPI_Init after the shim: %s\n", dlerror());
        return 1;
    }
    return next(argc, argv);
}
