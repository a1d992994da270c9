#include "paths.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The canonical form of a name that may not exist yet: realpath of the
 * whole name, or of its directory followed by the last component; the name
 * itself when not even the directory resolves. */
static void canon(const char *p, char *out, size_t n)
{
    char buf[PATH_MAX];
    if (realpath(p, buf)) {
        snprintf(out, n, "%s", buf);
        return;
    }
    const char *slash = strrchr(p, '/');
    char dir[PATH_MAX];
    const char *base = slash ? slash + 1 : p;
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == p)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - p), p);
    if (realpath(dir, buf))
        snprintf(out, n, "%s/%s", strcmp(buf, "/") ? buf : "", base);
    else
        snprintf(out, n, "%s", p);
}

int g1_path_same(const char *a, const char *b)
{
    struct stat sa, sb;
    int ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
    if (ea && eb)
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    if (ea != eb)
        return 0;
    char ca[PATH_MAX + 8], cb[PATH_MAX + 8];
    canon(a, ca, sizeof ca);
    canon(b, cb, sizeof cb);
    return !strcmp(ca, cb);
}

int g1_path_is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static g1_status lock_output(const char *output, const char *tool, const char *hint, g1_out_lock *l)
{
    *l = (g1_out_lock){.fd = -1};
    size_t n = strlen(output) + sizeof ".lock";
    if (!(l->path = malloc(n)))
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    snprintf(l->path, n, "%s.lock", output);
    for (int tries = 0; tries < 16; tries++) {
        /* never through a symbolic link: one left at that name would have
         * the file it names created (a dangling one) and locked */
        int fd = open(l->path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno == ELOOP)
            return G1_FAIL(G1_ERR_IO, "cannot lock %s: %s is a symbolic link, not a lock file %s made: remove it",
                           output, l->path, tool);
        if (fd < 0)
            return G1_FAIL(G1_ERR_IO, "cannot create %s: %s", l->path, strerror(errno));
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        if (fcntl(fd, F_SETLK, &fl) != 0) {
            int e = errno;
            if (e == EACCES || e == EAGAIN) {
                struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
                char pid[64] = "";
                if (fcntl(fd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK && who.l_pid > 0)
                    snprintf(pid, sizeof pid, " (process %ld)", (long)who.l_pid);
                close(fd);
                return G1_FAIL(G1_ERR_IO, "%s is being written by another grok1-run or grok1-merge%s, which holds "
                                          "%s: two writers on one output would mix their writes; let it finish, or "
                                          "stop it and %s",
                               output, pid, l->path, hint);
            }
            fprintf(stderr, "%s: warning: cannot lock %s (%s): this file system may not support locks; make sure "
                            "no other run or merge writes %s at the same time\n",
                    tool, l->path, strerror(e), output);
            l->fd = fd;
            l->held = 1;
            return G1_OK;
        }
        /* the writer that held it may have removed it meanwhile: hold the
         * file the name now gives */
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(l->path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
            l->fd = fd;
            l->held = 1;
            return G1_OK;
        }
        close(fd);
    }
    return G1_FAIL(G1_ERR_IO, "cannot lock %s: it keeps being replaced", l->path);
}

/* With the stopping signals held back meanwhile, so that a handler that
 * removes the lock file (grok1-merge's) sees it either not made or held. */
g1_status g1_lock_output(const char *output, const char *tool, const char *hint, g1_out_lock *l)
{
    sigset_t stop, old;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGHUP);
    sigaddset(&stop, SIGUSR1);
    sigprocmask(SIG_BLOCK, &stop, &old);
    g1_status st = lock_output(output, tool, hint, l);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return st;
}

void g1_unlock_output(g1_out_lock *l)
{
    if (l->held) {
        unlink(l->path); /* while still held: a writer that opened it meanwhile sees the name moved on */
        close(l->fd);
    }
    free(l->path);
    *l = (g1_out_lock){.fd = -1};
}
