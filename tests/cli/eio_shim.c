/* For the tests only (LD_PRELOAD): fsync and fdatasync of any file whose
 * path contains $G1_TEST_EIO fail with EIO, as on a disk that lost the
 * write; every other file is synced for real. How the tools behave when
 * the bytes they wrote may not be on the disk (test_cli.py fsync_eio).
 * Those of a file whose path contains $G1_TEST_SLOW take a second more
 * ($G1_TEST_SLOW_MS milliseconds), as on a busy file system: two runs'
 * writes of one name overlap (test_cli.py trace_race). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int named(int fd, const char *var)
{
    const char *m = getenv(var);
    char link[64], path[4096];
    if (!m || !*m)
        return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0)
        return 0;
    path[n] = 0;
    return strstr(path, m) != NULL;
}

static int doomed(int fd)
{
    if (named(fd, "G1_TEST_SLOW")) {
        const char *ms = getenv("G1_TEST_SLOW_MS");
        long t = ms ? atol(ms) : 1000;
        usleep((useconds_t)(t > 0 && t < 60000 ? t : 1000) * 1000);
    }
    return named(fd, "G1_TEST_EIO");
}

static int call_next(const char *name, int fd)
{
    int (*next)(int) = NULL;
    *(void **)&next = dlsym(RTLD_NEXT, name);
    if (!next) {
        errno = ENOSYS;
        return -1;
    }
    return next(fd);
}

int fsync(int fd)
{
    if (doomed(fd)) {
        errno = EIO;
        return -1;
    }
    return call_next("fsync", fd);
}

int fdatasync(int fd)
{
    if (doomed(fd)) {
        errno = EIO;
        return -1;
    }
    return call_next("fdatasync", fd);
}
