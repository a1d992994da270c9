/* fsync before rename, and of the directory after it (durable.h). */
#include "durable.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
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

int g1_create_temp(const char *path, char **tmp)
{
    size_t n = strlen(path) + 48;
    *tmp = malloc(n);
    if (!*tmp) {
        errno = ENOMEM;
        return -1;
    }
    /* the random part from the clock and a counter, mixed (splitmix64):
     * O_EXCL makes the name unique, this only makes a clash rare */
    static _Atomic unsigned long long calls;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long long x = (unsigned long long)ts.tv_sec * 1000000007ULL ^ (unsigned long long)ts.tv_nsec ^
                           (unsigned long long)getpid() << 32;
    for (int tries = 0; tries < 100; tries++) {
        x += 0x9e3779b97f4a7c15ULL + calls++;
        unsigned long long z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        snprintf(*tmp, n, "%s.tmp.%ld.%08llx", path, (long)getpid(), z & 0xffffffffULL);
        int fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST) {
            if (fd < 0) {
                int e = errno;
                free(*tmp);
                *tmp = NULL;
                errno = e;
            }
            return fd;
        }
    }
    free(*tmp);
    *tmp = NULL;
    errno = EEXIST;
    return -1;
}

FILE *g1_fopen_fresh(const char *path)
{
    if (unlink(path) != 0 && errno != ENOENT)
        return NULL;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int e = errno;
        close(fd);
        unlink(path);
        errno = e;
    }
    return f;
}

FILE *g1_fopen_own(const char *path, const char *mode)
{
    int flags = !strcmp(mode, "a") ? O_WRONLY | O_APPEND : O_RDWR;
    int fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, mode);
    if (!f) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return f;
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

/* dir/name into a malloc'd string (name alone in ".") */
static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s && !strcmp(dir, "."))
        snprintf(s, n, "%s", name);
    else if (s)
        snprintf(s, n, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", name);
    return s;
}

g1_status g1_path_through_link(const char *path, char **out)
{
    *out = NULL;
    struct stat sb;
    if (lstat(path, &sb) != 0 || !S_ISLNK(sb.st_mode))
        return G1_OK;
    char *real = realpath(path, NULL);
    if (real) {
        *out = real;
        return G1_OK;
    }
    if (errno != ENOENT)
        return G1_FAIL(G1_ERR_ARG, "%s is a symbolic link that cannot be followed: %s", path, strerror(errno));
    /* dangling: follow the chain by hand to the name at its end, which does
     * not exist, and put it in its directory's canonical name */
    char *cur = strdup(path);
    for (int hops = 0; cur && lstat(cur, &sb) == 0; hops++) {
        char to[PATH_MAX];
        ssize_t n = S_ISLNK(sb.st_mode) ? readlink(cur, to, sizeof to - 1) : -1;
        if (n < 0 || hops >= 40) {
            free(cur);
            return G1_FAIL(G1_ERR_ARG, "%s is a symbolic link that cannot be followed: %s", path,
                           n < 0 ? "a name on its way is not a link" : strerror(ELOOP));
        }
        to[n] = 0;
        char dir[PATH_MAX];
        g1_dir_of(cur, dir, sizeof dir);
        free(cur);
        cur = to[0] == '/' ? strdup(to) : join(dir, to);
    }
    if (!cur)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    char dir[PATH_MAX];
    g1_dir_of(cur, dir, sizeof dir);
    const char *slash = strrchr(cur, '/'), *base = slash ? slash + 1 : cur;
    char *rdir = realpath(dir, NULL);
    int e = errno;
    if (!rdir || !*base || !strcmp(base, ".") || !strcmp(base, "..")) {
        g1_status st = rdir ? G1_FAIL(G1_ERR_ARG, "%s is a symbolic link to %s, which is not a file name", path, cur)
                            : G1_FAIL(G1_ERR_ARG, "%s is a symbolic link to %s, whose directory %s %s", path, cur, dir,
                                      e == ENOENT ? "does not exist" : strerror(e));
        free(rdir);
        free(cur);
        return st;
    }
    *out = join(rdir, base);
    free(rdir);
    free(cur);
    return *out ? G1_OK : G1_FAIL(G1_ERR_NOMEM, "out of memory");
}

g1_status g1_path_canonical(const char *path, char **out)
{
    *out = NULL;
    char *through = NULL;
    G1_TRY(g1_path_through_link(path, &through));
    if (through) { /* a link: its end, already canonical */
        *out = through;
        return G1_OK;
    }
    char dir[PATH_MAX];
    g1_dir_of(path, dir, sizeof dir);
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        return G1_FAIL(G1_ERR_ARG, "%s is not a file name", path);
    char *rdir = realpath(dir, NULL);
    if (!rdir)
        return G1_FAIL(G1_ERR_ARG, "the directory %s of %s cannot be resolved: %s", dir, path, strerror(errno));
    *out = join(strcmp(rdir, ".") ? rdir : ".", base);
    free(rdir);
    return *out ? G1_OK : G1_FAIL(G1_ERR_NOMEM, "out of memory");
}

char *g1_path_relative(const char *from_dir, const char *to)
{
    /* the longest common run of whole components */
    size_t common = 0;
    for (size_t i = 0;; i++) {
        char a = from_dir[i], b = to[i];
        if ((a == 0 || a == '/') && (b == 0 || b == '/'))
            common = i;
        if (a == 0 || b == 0 || a != b)
            break;
    }
    /* the components of from_dir past it: one ".." each */
    size_t ups = 0;
    for (const char *p = from_dir + common; *p; p++)
        if (*p == '/' && p[1])
            ups++;
    const char *rest = to + common;
    while (*rest == '/')
        rest++;
    size_t n = 3 * ups + strlen(rest) + 1;
    char *s = malloc(n);
    if (!s)
        return NULL;
    s[0] = 0;
    for (size_t i = 0; i < ups; i++)
        strcat(s, "../");
    strcat(s, rest);
    return s;
}

/* What a file that is not a regular file is, for a message. */
static const char *kind_of(mode_t m)
{
    return S_ISDIR(m) ? "a directory" : S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device"
           : S_ISFIFO(m) ? "a FIFO" : S_ISSOCK(m) ? "a socket" : "not a regular file";
}

g1_status g1_h5_output_path(const char *what, const char *path, char **out)
{
    *out = NULL;
    const char *sp = *what ? " " : "";
    struct stat sb, lb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        char to[PATH_MAX];
        ssize_t n = lstat(path, &lb) == 0 && S_ISLNK(lb.st_mode) ? readlink(path, to, sizeof to - 1) : -1;
        to[n >= 0 ? n : 0] = 0;
        return G1_FAIL(G1_ERR_ARG, "%s%s%s%s%s is %s: an HDF5 file cannot be written to a stream or a folder (it "
                       "would be replaced by a regular file); give the name of a file", what, sp, path,
                       n >= 0 ? ", a symbolic link to " : "", to, kind_of(sb.st_mode));
    }
    if (g1_path_is_stream(path)) /* /dev/stdout and the like, even when a regular file is behind it */
        return G1_FAIL(G1_ERR_ARG, "%s%s%s names a descriptor (a stream): an HDF5 file cannot be written to a "
                       "stream; give the name of a file", what, sp, path);
    return g1_path_through_link(path, out);
}

int g1_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}
