#include "paths.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
