/* Sidecar and resume scan: see resume.h. */
#include "resume.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *g1_meta_path(const char *out)
{
    size_t n = strlen(out) + sizeof ".meta.json";
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s.meta.json", out);
    return p;
}

g1_status g1_meta_write(const char *path, json_t *meta)
{
    size_t n = strlen(path) + 16;
    char *tmp = malloc(n);
    if (!tmp)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    snprintf(tmp, n, "%s.tmp", path);
    g1_status st = G1_OK;
    if (json_dump_file(meta, tmp, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17)) != 0)
        st = G1_FAIL(G1_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    else if (rename(tmp, path) != 0)
        st = G1_FAIL(G1_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    if (st != G1_OK)
        unlink(tmp);
    free(tmp);
    return st;
}

/* First difference between two JSON values, as "key: a vs b". */
static int differ(const char *where, json_t *a, json_t *b, char *msg, size_t n)
{
    if (json_is_object(a) && json_is_object(b)) {
        const char *k;
        json_t *v;
        json_object_foreach(a, k, v) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s%s%s", where, *where ? "." : "", k);
            json_t *w = json_object_get(b, k);
            if (!w) {
                snprintf(msg, n, "%s is missing from the file's record", sub);
                return 1;
            }
            if (differ(sub, v, w, msg, n))
                return 1;
        }
        json_object_foreach(b, k, v) {
            if (!json_object_get(a, k)) {
                snprintf(msg, n, "%s%s%s is set in the file's record but not in this run", where, *where ? "." : "", k);
                return 1;
            }
        }
        return 0;
    }
    if (json_equal(a, b))
        return 0;
    char *sa = json_dumps(a, JSON_ENCODE_ANY | JSON_COMPACT), *sb = json_dumps(b, JSON_ENCODE_ANY | JSON_COMPACT);
    snprintf(msg, n, "%s is %s now but %s in the file's record", where, sa ? sa : "?", sb ? sb : "?");
    free(sa);
    free(sb);
    return 1;
}

g1_status g1_meta_check(const char *path, json_t *meta)
{
    json_error_t err;
    json_t *old = json_load_file(path, 0, &err);
    if (!old)
        return G1_FAIL(G1_ERR_ARG, "cannot resume: %s is missing or unreadable (%s), so the settings that made the "
                                   "output cannot be checked; run without --resume to start afresh", path, err.text);
    char msg[600];
    int d = differ("", meta, old, msg, sizeof msg);
    json_decref(old);
    if (d)
        return G1_FAIL(G1_ERR_ARG, "cannot resume with other settings than the output was made with: %s "
                                   "(record: %s); use the same settings, or run without --resume", msg, path);
    return G1_OK;
}

g1_status g1_resume_scan(const char *partial, json_t **done_ids)
{
    *done_ids = NULL;
    FILE *f = fopen(partial, "r+");
    if (!f)
        return G1_FAIL(G1_ERR_IO, "cannot open %s to resume: %s", partial, strerror(errno));
    json_t *ids = json_array();
    char *buf = NULL;
    size_t cap = 0;
    long keep = 0, line = 0;
    ssize_t n;
    g1_status st = ids ? G1_OK : G1_FAIL(G1_ERR_NOMEM, "out of memory");
    while (st == G1_OK && (n = getline(&buf, &cap, f)) > 0) {
        line++;
        if (buf[n - 1] != '\n')
            break; /* torn last line: dropped, redone */
        json_error_t err;
        json_t *o = json_loadb(buf, (size_t)n, 0, &err);
        json_t *id = o ? json_object_get(o, "id") : NULL;
        if (!o || !json_is_object(o) || !id)
            st = G1_FAIL(G1_ERR_FORMAT, "%s line %ld is complete but not a result (%s): the file is damaged; "
                                        "move it away to start afresh", partial, line, o ? "no id" : err.text);
        else
            json_array_append(ids, id);
        json_decref(o);
        if (st == G1_OK)
            keep += (long)n;
    }
    free(buf);
    if (st == G1_OK && (fflush(f) != 0 || ftruncate(fileno(f), keep) != 0))
        st = G1_FAIL(G1_ERR_IO, "cannot cut the torn last line of %s: %s", partial, strerror(errno));
    fclose(f);
    if (st != G1_OK) {
        json_decref(ids);
        return st;
    }
    *done_ids = ids;
    return G1_OK;
}
