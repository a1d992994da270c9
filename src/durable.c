/* fsync before rename, and of the directory after it (durable.h). */
#include "durable.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int g1_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int r = fsync(fd);
    int e = errno;
    close(fd);
    if (r != 0 && (e == EINVAL || e == EROFS || e == ENOTSUP))
        r = 0;
    errno = e;
    return r;
}

void g1_dir_of(const char *path, char *dir, size_t n)
{
    snprintf(dir, n, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, n, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
}

void g1_fsync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    g1_dir_of(path, dir, sizeof dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

g1_status g1_rename_durable(const char *from, const char *to)
{
    if (g1_fsync_path(from) != 0)
        return G1_FAIL(G1_ERR_IO, "cannot write %s to the disk (fsync): %s", from, strerror(errno));
    if (rename(from, to) != 0)
        return G1_FAIL(G1_ERR_IO, "cannot rename %s to %s: %s", from, to, strerror(errno));
    g1_fsync_dir_of(to);
    return G1_OK;
}

/* A name for one of the process's descriptors (/dev/stdout and the like). */
static int names_fd(const char *p)
{
    return !strncmp(p, "/proc/self/fd/", 14) || !strncmp(p, "/dev/fd/", 8) || !strcmp(p, "/dev/stdout") ||
           !strcmp(p, "/dev/stderr");
}

int g1_path_is_stream(const char *path)
{
    struct stat sb;
    if (!strcmp(path, "-"))
        return 0;
    if ((stat(path, &sb) == 0 && !S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode)) || names_fd(path))
        return 1;
    char to[64];
    ssize_t n = lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode) ? readlink(path, to, sizeof to - 1) : -1;
    if (n < 0)
        return 0;
    to[n] = 0;
    return names_fd(to);
}
