/* For the tests only (LD_PRELOAD): MPI_Init first creates the file named by
 * $G1_TEST_INIT_MARK, then waits 2 s before the real MPI_Init, so that a
 * test can send a signal while MPI starts (test_cli.py init_signal). */
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
        int fd = open(mark, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0)
            close(fd);
        /* the whole 2 s, through the signals the test sends */
        struct timespec left = {2, 0};
        while (nanosleep(&left, &left) != 0 && errno == EINTR) {
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
