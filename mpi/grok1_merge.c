/* grok1-merge: join the outputs of `grok1-run --shard K/N` (K = 0..N-1)
 * into the output one unsharded run writes: result m of the input is line
 * m / N of shard m % N. Every shard must be finished, all N present once,
 * made with the same settings (their meta files say so), each from its own
 * requests as the input holds them now (each meta file records those), and
 * together they must answer every request of the input; the result is
 * written to OUT.merge.tmp, then renamed to OUT, with OUT.meta.json (the
 * shards' meta without the shard, the input recorded whole) beside it. Nothing is
 * left at OUT when anything is wrong. With --dump-logits D the shards'
 * logits dumps (each holding its results' datasets, named by input line)
 * are copied into D.merge.tmp, renamed to D before OUT gets its name. No
 * MPI; HDF5 for the dumps only (src/logits_file.c). */
#include <errno.h>
#include <limits.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cli_opt.h"
#include "cli_out.h"
#include "durable.h"
#include "g1_version.h"
#include "paths.h"
#include "progress.h"
#include "resume.h"
#include "status.h"
#if G1_HAVE_HDF5
#include "ckpt.h"
#include "h5util.h"
#endif

static void usage(FILE *f)
{
    fprintf(f,
"usage: grok1-merge --input IN.jsonl --output OUT.jsonl [--dump-logits D.h5] SHARD.jsonl...\n"
"\n"
"Joins the outputs of `grok1-run --shard K/N` for K = 0 .. N-1 (in any order)\n"
"into the file one run without --shard writes: the results in input order,\n"
"byte for byte, and OUT.meta.json beside it (the shards' settings, without the\n"
"shard). Refused, with nothing written, unless every shard is finished (its\n"
"final name exists: a shard with only SHARD.partial is still running or was\n"
"interrupted: run it again with --resume), each of the N is given once, all\n"
"were made with the same model and settings (SHARD.meta.json), each from its\n"
"requests as IN holds them now, and together they answer every request of IN.\n"
"\n"
"  --input FILE     the input the shards read: each shard's requests in it must\n"
"                   still be the ones its meta file records (another shard's\n"
"                   request fixed and that shard resumed is fine), and its\n"
"                   requests are counted\n"
"  --output FILE    the merged results (must not exist); - for stdout (no meta file); a device\n"
"                   or FIFO (/dev/null, /dev/stdout) is written directly, as stdout\n"
"  --dump-logits D  also merge the shards' logits dumps (each shard's is the file\n"
"                   its meta file records: settings.dump_logits_path, or, from an\n"
"                   older grok1-run, settings.dump_logits, a relative name read\n"
"                   from the current folder) into D (must not exist): the dump one\n"
"                   run without --shard writes, dataset for dataset, and\n"
"                   OUT.meta.json records D as that run's does. Refused unless\n"
"                   every shard has a finished dump (not only D.partial) holding\n"
"                   exactly the datasets of its results, each with its request's\n"
"                   id and tokens (when it records them: their count against the\n"
"                   shard's result, the ids against prompt_ids and continuation_ids\n"
"                   where the input gives them), all of one vocab_size. D gets its\n"
"                   name before OUT does. Needs a build with HDF5. An HDF5 file:\n"
"                   a device, FIFO or directory is refused (exit 2)\n"
"  --help           this text\n"
"  --version        the version\n"
"\n"
"Exit status: 0 merged; 1 the shards do not fit together or a file cannot be\n"
"read or written (the message says which); 2 usage error (also --dump-logits\n"
"in a build without HDF5).\n");
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

typedef struct shard {
    const char *path;
    int k, n;
    json_t *meta;  /* without settings.shard, settings.dump_logits and input */
    json_t *input; /* its record of the input (NULL: none, the shard read a pipe) */
    char *dump;   /* its logits dump (shard_dump), NULL for none */
    FILE *f;
} shard;

/* Where shard s's logits dump is, from its meta file's settings: the file
 * it was written to (settings.dump_logits_path, a canonical name); if that
 * is gone (neither it nor its .partial there) and the dump's place
 * relative to the shard's output is recorded (dump_logits_from_output),
 * the file there, when there is one: the shard's folder moved whole. A
 * meta file from before these records gives the name as grok1-run was
 * given it (settings.dump_logits: a relative one is read from the current
 * folder). *out malloc'd. */
static g1_status shard_dump(const shard *s, json_t *set, char **out)
{
    const char *path = json_string_value(json_object_get(set, "dump_logits_path"));
    const char *rel = json_string_value(json_object_get(set, "dump_logits_from_output"));
    const char *name = json_string_value(json_object_get(set, "dump_logits"));
    char partial[PATH_MAX + 16], dir[PATH_MAX];
    *out = NULL;
    if (path)
        snprintf(partial, sizeof partial, "%s.partial", path);
    if (path && rel && !exists(path) && !exists(partial)) {
        /* (out of memory here fails: falling back to `path`, which is gone,
         * would have told a moved shard's dump as missing) */
        char *real = NULL;
        g1_status st = g1_path_canonical(s->path, &real);
        if (st == G1_ERR_NOMEM)
            return st;
        if (st == G1_OK) {
            g1_dir_of(real, dir, sizeof dir);
            free(real);
            size_t n = strlen(dir) + strlen(rel) + 2;
            char *there = malloc(n);
            if (!there)
                return G1_FAIL(G1_ERR_NOMEM, "out of memory");
            snprintf(there, n, "%s/%s", dir, rel);
            snprintf(partial, sizeof partial, "%s.partial", there);
            if (exists(there) || exists(partial))
                *out = there;
            else
                free(there);
        }
    }
    if (!*out && !(*out = strdup(path ? path : name)))
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    return G1_OK;
}

/* The shard's meta file, its K/N, and the meta as it is compared. */
static g1_status read_shard(shard *s)
{
    char *mp = g1_meta_path(s->path);
    if (!mp)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    json_error_t err;
    json_t *m = json_load_file(mp, 0, &err);
    g1_status st = G1_OK;
    json_t *set = m ? json_object_get(m, "settings") : NULL, *sh = set ? json_object_get(set, "shard") : NULL;
    if (!m)
        st = G1_FAIL(G1_ERR_FORMAT, "%s: cannot read its meta file %s (%s): is it an output of grok1-run?", s->path, mp,
                     err.text);
    else if (!json_is_string(json_object_get(m, "format")) ||
             strcmp(json_string_value(json_object_get(m, "format")), "grok1-run-meta") || !json_is_object(set))
        st = G1_FAIL(G1_ERR_FORMAT, "%s: %s is not a grok1-run meta file", s->path, mp);
    else if (!sh)
        st = G1_FAIL(G1_ERR_FORMAT, "%s is the output of a run without --shard (%s has no settings.shard): "
                                    "there is nothing to merge it with",
                     s->path, mp);
    else {
        int k = -1, n = -1, used = 0;
        const char *t = json_string_value(sh);
        if (!t || sscanf(t, "%d/%d%n", &k, &n, &used) != 2 || t[used] || n < 2 || n > 1000000 || k < 0 || k >= n)
            st = G1_FAIL(G1_ERR_FORMAT, "%s: settings.shard in %s is not K/N", s->path, mp);
        s->k = k;
        s->n = n;
    }
    if (st == G1_OK && !exists(s->path)) {
        char partial[4096];
        snprintf(partial, sizeof partial, "%s.partial", s->path);
        st = exists(partial) ? G1_FAIL(G1_ERR_ARG, "shard %d/%d is not finished: only %s exists (the run is still "
                                                   "going, or was interrupted: run it again with --resume)",
                                       s->k, s->n, partial)
                             : G1_FAIL(G1_ERR_IO, "%s: no such file", s->path);
    }
    json_t *dump = st == G1_OK ? json_object_get(set, "dump_logits") : NULL;
    json_t *dump_path = dump ? json_object_get(set, "dump_logits_path") : NULL;
    json_t *dump_rel = dump ? json_object_get(set, "dump_logits_from_output") : NULL;
    if ((dump && !json_is_string(dump)) || (dump_path && !json_is_string(dump_path)) ||
        (dump_rel && !json_is_string(dump_rel)))
        st = G1_FAIL(G1_ERR_FORMAT, "%s: settings.dump_logits%s in %s is not a file name", s->path,
                     dump && !json_is_string(dump) ? "" : dump_path && !json_is_string(dump_path) ? "_path"
                                                                                                   : "_from_output",
                     mp);
    else if (dump)
        st = shard_dump(s, set, &s->dump);
    if (st == G1_OK) {
        json_object_del(set, "shard");
        /* each shard has a dump of its own, or none */
        json_object_del(set, "dump_logits");
        json_object_del(set, "dump_logits_path");
        json_object_del(set, "dump_logits_from_output");
        s->input = json_incref(json_object_get(m, "input")); /* each shard records its own requests */
        json_object_del(m, "input");
        s->meta = m;
        m = NULL;
    }
    json_decref(m);
    free(mp);
    return st;
}

/* The next line of s into *buf (with its newline). 0 at the end of the file. */
static g1_status next_line(shard *s, char **buf, size_t *cap, ssize_t *len)
{
    errno = 0;
    *len = getline(buf, cap, s->f);
    if (*len < 0 && ferror(s->f))
        return G1_FAIL(G1_ERR_IO, "reading %s failed: %s", s->path, strerror(errno));
    if (*len == 0 || (*len > 0 && (*buf)[*len - 1] != '\n'))
        return G1_FAIL(G1_ERR_FORMAT, "%s ends with an incomplete line: it is not a finished output", s->path);
    return G1_OK;
}

/* The id of every request of the input, in order (as grok1-run counts
 * requests: lines of only spaces, tabs and CRs are blank); JSON null where
 * a line has no readable id. */
static g1_status input_ids(const char *path, json_t **ids)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return G1_FAIL(G1_ERR_IO, "cannot read the input %s: %s", path, strerror(errno));
    *ids = json_array();
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    g1_status st = *ids ? G1_OK : G1_FAIL(G1_ERR_NOMEM, "out of memory");
    while (st == G1_OK && (len = getline(&buf, &cap, f)) >= 0) {
        if ((size_t)len == strspn(buf, " \t\r\n"))
            continue;
        json_t *req = json_loadb(buf, (size_t)len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        json_t *id = json_is_object(req) ? json_object_get(req, "id") : NULL;
        if (json_array_append(*ids, id ? id : json_null()) != 0)
            st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
        json_decref(req);
    }
    if (st == G1_OK && ferror(f))
        st = G1_FAIL(G1_ERR_IO, "reading the input %s failed: %s", path, strerror(errno));
    free(buf);
    fclose(f);
    return st;
}

/* Result m (line `line` of shard s) answers request m of the input: their
 * ids are equal (a shard made from another input, or edited, fails). */
static g1_status check_id(const shard *s, long long line, long long m, const char *text, size_t len, json_t *ids,
                          int64_t *rows, int *cut)
{
    json_t *res = json_loadb(text, len, JSON_ALLOW_NUL, NULL);
    json_t *got = json_is_object(res) ? json_object_get(res, "id") : NULL, *want = json_array_get(ids, (size_t)m);
    g1_status st = G1_OK;
    /* a score result's tokens, as its logits dump must hold them: the
     * prompt's (after --truncate left cut `truncated`) and the
     * continuation's; -1: not said */
    if (rows) {
        json_t *p = json_object_get(res, "prompt_tokens"), *c = json_object_get(res, "continuation_tokens");
        json_t *t = json_object_get(res, "truncated");
        rows[m] = json_is_integer(p) && (!c || json_is_integer(c))
                      ? (int64_t)json_integer_value(p) + (c ? (int64_t)json_integer_value(c) : 0)
                      : -1;
        cut[m] = json_is_integer(t) && json_integer_value(t) >= 0 && json_integer_value(t) < INT_MAX
                     ? (int)json_integer_value(t)
                     : 0;
    }
    if (!got)
        st = G1_FAIL(G1_ERR_FORMAT, "%s line %lld is not a result with an id: it is not an output of grok1-run",
                     s->path, line + 1);
    else if (want && !json_equal(got, want)) {
        char *a = json_dumps(got, JSON_ENCODE_ANY | JSON_COMPACT), *b = json_dumps(want, JSON_ENCODE_ANY | JSON_COMPACT);
        st = G1_FAIL(G1_ERR_FORMAT, "%s line %lld has id %.100s, but request %lld of the input has id %.100s: the "
                                    "shard does not answer this input (or was edited)",
                     s->path, line + 1, a ? a : "?", m + 1, b ? b : "?");
        free(a);
        free(b);
    }
    json_decref(res);
    return st;
}

/* Round robin: result m from shard m % N. The first shard to run out ends
 * the input; every other must be at its end then too. out NULL: only check
 * (each result's id against ids, when given) and count; and, when rows is
 * given, note for each of the first `requests` results the tokens it
 * counts (rows) and says were cut (cut), for its logits dump's check. */
static g1_status join(shard *by_k, int n, FILE *out, const char *out_name, json_t *ids, long long *total,
                      int64_t *rows, int *cut, int64_t requests)
{
    char *buf = NULL;
    size_t cap = 0;
    g1_status st = G1_OK;
    long long m = 0;
    for (;; m++) {
        shard *s = &by_k[m % n];
        ssize_t len;
        if ((st = next_line(s, &buf, &cap, &len)) != G1_OK)
            break;
        if (len < 0)
            break;
        if (ids && (st = check_id(s, m / n, m, buf, (size_t)len, ids, m < requests ? rows : NULL, cut)) != G1_OK)
            break;
        if (out && fwrite(buf, 1, (size_t)len, out) != (size_t)len) {
            st = G1_FAIL(G1_ERR_IO, "writing %s failed: %s", out_name, strerror(errno));
            break;
        }
    }
    for (int k = 0; st == G1_OK && k < n; k++) {
        ssize_t len;
        st = next_line(&by_k[k], &buf, &cap, &len);
        if (st == G1_OK && len >= 0) {
            long long has = m / n + (k < m % n ? 1 : 0) + 1;
            st = G1_FAIL(G1_ERR_FORMAT, "the shards do not fit together: shard %d/%d (%s) has at least %lld "
                                        "results, but shard %lld/%d (%s) ends after %lld, so the input would have "
                                        "%lld requests; were they made from the same input, and is every one "
                                        "complete?",
                         k, n, by_k[k].path, has, m % n, n, by_k[m % n].path, m / n, m);
        }
    }
    free(buf);
    *total = m;
    return st;
}

/* ---- the logits dumps (--dump-logits) ---- */

#if G1_HAVE_HDF5
/* The 0-based line number of each of the n requests of the input, as
 * grok1-run counts them (a line of only spaces, tabs and CRs is blank, not
 * a request): a dump names request m's dataset logits/<(*lines)[m]>. */
static g1_status request_lines(const char *path, int64_t n, int64_t **lines)
{
    *lines = malloc((size_t)(n > 0 ? n : 1) * sizeof **lines);
    FILE *f = *lines ? fopen(path, "r") : NULL;
    if (!*lines)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for the line numbers of %lld requests", (long long)n);
    if (!f) {
        free(*lines);
        *lines = NULL;
        return G1_FAIL(G1_ERR_IO, "cannot read the input %s: %s", path, strerror(errno));
    }
    int64_t m = 0, line = 0;
    int c, blank = 1;
    while ((c = getc(f)) != EOF) {
        if (c == '\n') {
            if (!blank && m < n)
                (*lines)[m] = line;
            m += !blank;
            blank = 1;
            line++;
        } else if (c != ' ' && c != '\t' && c != '\r') {
            blank = 0;
        }
    }
    if (!blank && m < n)
        (*lines)[m] = line;
    m += !blank;
    int bad = ferror(f);
    fclose(f);
    if (bad || m != n) {
        free(*lines);
        *lines = NULL;
        return G1_FAIL(G1_ERR_IO, "the input %s changed while it was read (%lld requests, then %lld)", path,
                       (long long)n, (long long)m);
    }
    return G1_OK;
}
#endif

#if G1_HAVE_HDF5
/* The tokens of each of the n requests of the input that gives them as ids
 * ("prompt_ids", with "continuation_ids" if any; no tokenizer needed), cut
 * from the left by cut[m] (--truncate left, as the shard's result says):
 * (*hash)[m] their g1_tokens_fnv1a64, (*count)[m] how many; -1 where a
 * request gives text (or anything else: grok1-run refused it). */
static g1_status request_tokens(const char *path, int64_t n, const int *cut, uint64_t **hash, int64_t **count)
{
    *hash = malloc((size_t)(n > 0 ? n : 1) * sizeof **hash);
    *count = malloc((size_t)(n > 0 ? n : 1) * sizeof **count);
    FILE *f = *hash && *count ? fopen(path, "r") : NULL;
    if (!f) {
        g1_status st = *hash && *count ? G1_FAIL(G1_ERR_IO, "cannot read the input %s: %s", path, strerror(errno))
                                       : G1_FAIL(G1_ERR_NOMEM, "out of memory for %lld requests", (long long)n);
        free(*hash);
        free(*count);
        *hash = NULL;
        *count = NULL;
        return st;
    }
    char *buf = NULL;
    size_t cap = 0, tcap = 0;
    int *tok = NULL;
    ssize_t len;
    int64_t m = 0;
    g1_status st = G1_OK;
    while (st == G1_OK && m < n && (len = getline(&buf, &cap, f)) >= 0) {
        if ((size_t)len == strspn(buf, " \t\r\n"))
            continue;
        json_t *req = json_loadb(buf, (size_t)len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        json_t *parts[2] = {json_object_get(req, "prompt_ids"), json_object_get(req, "continuation_ids")};
        size_t nt = 0;
        int ok = json_is_array(parts[0]) && (!parts[1] || json_is_array(parts[1]));
        for (int p = 0; ok && p < 2; p++) {
            for (size_t i = 0; ok && i < json_array_size(parts[p]); i++) {
                json_t *t = json_array_get(parts[p], i);
                ok = json_is_integer(t) && json_integer_value(t) >= 0 && json_integer_value(t) <= INT_MAX;
                if (ok && nt == tcap) {
                    size_t c2 = tcap ? 2 * tcap : 256;
                    int *t2 = realloc(tok, c2 * sizeof *t2);
                    if (!t2) {
                        st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
                        ok = 0;
                        break;
                    }
                    tok = t2;
                    tcap = c2;
                }
                if (ok)
                    tok[nt++] = (int)json_integer_value(t);
            }
        }
        json_decref(req);
        size_t c = (size_t)cut[m];
        ok = ok && c < nt;
        (*count)[m] = ok ? (int64_t)(nt - c) : -1;
        (*hash)[m] = ok ? g1_tokens_fnv1a64(tok + c, nt - c) : 0;
        m++;
    }
    if (st == G1_OK && ferror(f))
        st = G1_FAIL(G1_ERR_IO, "reading the input %s failed: %s", path, strerror(errno));
    for (; m < n; m++)
        (*count)[m] = -1;
    free(tok);
    free(buf);
    fclose(f);
    if (st != G1_OK) {
        free(*hash);
        free(*count);
        *hash = NULL;
        *count = NULL;
    }
    return st;
}
#endif

/* The name D (and its temporary file) must be a file of its own: not the
 * input, a shard, its meta file or its dump, nor an output of this merge.
 * And D must not exist: a dump is never overwritten, but for the dump of
 * an earlier merge killed between its two renames (D named, OUT not yet):
 * with OUT absent, *left says D exists, for dump_left_by_merge to judge. */
static g1_status check_dump_name(const char *dump, const char *dump_tmp, const char *in_path, const shard *by_k, int n,
                                 const char *out_path, const char *out_meta, const char *out_tmp, int *left)
{
    *left = 0;
    typedef struct named {
        const char *what, *path;
        int k;
    } named;
    size_t cap = 4 + 3 * (size_t)n, nn = 0;
    named *v = calloc(cap, sizeof *v);
    char **metas = calloc((size_t)n, sizeof *metas);
    g1_status st = v && metas ? G1_OK : G1_FAIL(G1_ERR_NOMEM, "out of memory");
    if (st == G1_OK) {
        v[nn++] = (named){"the --input file", in_path, -1};
        if (out_path) {
            v[nn++] = (named){"the --output file", out_path, -1};
            v[nn++] = (named){"the --output's meta file", out_meta, -1};
            v[nn++] = (named){"the --output's temporary file", out_tmp, -1};
        }
    }
    for (int k = 0; k < n && st == G1_OK; k++) {
        if (!(metas[k] = g1_meta_path(by_k[k].path))) {
            st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
            break;
        }
        v[nn++] = (named){"the output of shard", by_k[k].path, k};
        v[nn++] = (named){"the meta file of shard", metas[k], k};
        if (by_k[k].dump)
            v[nn++] = (named){"the logits dump of shard", by_k[k].dump, k};
    }
    for (size_t i = 0; i < nn && st == G1_OK; i++) {
        const char *mine = g1_path_same(dump, v[i].path) ? dump : g1_path_same(dump_tmp, v[i].path) ? dump_tmp : NULL;
        char who[64] = "";
        if (v[i].k >= 0)
            snprintf(who, sizeof who, " %d/%d", v[i].k, n);
        if (mine == dump)
            st = G1_FAIL(G1_ERR_ARG, "--dump-logits %s is %s%s (%s): the merged dump needs a file of its own", dump,
                         v[i].what, who, v[i].path);
        else if (mine)
            st = G1_FAIL(G1_ERR_ARG, "--dump-logits %s would be written as %s, which is %s%s: choose another name",
                         dump, dump_tmp, v[i].what, who);
    }
    if (st == G1_OK && g1_path_is_dir(dump))
        st = G1_FAIL(G1_ERR_ARG, "--dump-logits %s is a folder: give a file name", dump);
    else if (st == G1_OK && exists(dump) && out_path && !exists(out_path) && !exists(out_meta))
        *left = 1;
    else if (st == G1_OK && exists(dump))
        st = G1_FAIL(G1_ERR_ARG, "%s exists: grok1-merge does not overwrite a logits dump; remove it or choose "
                                 "another --dump-logits",
                     dump);
    for (int k = 0; metas && k < n; k++)
        free(metas[k]);
    free(metas);
    free(v);
    return st;
}

/* Where the merged dump will be once renamed to `dump`, as grok1-run records
 * its dump (settings.dump_logits_path and dump_logits_from_output): its
 * canonical name (*real) and that name from the folder of OUT (*rel), both
 * malloc'd. Found before anything is renamed (main gave the ends of links
 * at OUT and D, so the renames make these names). */
static g1_status dump_place(const char *dump, const char *out_path, char **real, char **rel)
{
    *real = *rel = NULL;
    char *out_real = NULL, dir[PATH_MAX];
    g1_status st = g1_path_canonical(dump, real);
    if (st == G1_OK)
        st = g1_path_canonical(out_path, &out_real);
    if (st == G1_OK) {
        g1_dir_of(out_real, dir, sizeof dir);
        if (!(*rel = g1_path_relative(dir, *real)))
            st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
    }
    free(out_real);
    if (st != G1_OK) {
        char why[600];
        snprintf(why, sizeof why, "%s", g1_last_error());
        free(*real);
        *real = NULL;
        st = G1_FAIL(st, "cannot record where the logits dump %s is: %s", dump, why);
    }
    return st;
}

#if G1_HAVE_HDF5
/* Dataset logits/<k> of shard s's dump records id `got` (JSON text; NULL:
 * none, a dump from before the attribute); the request on input line k + 1
 * has id `want`: they must be equal. */
static g1_status check_dump_id(const shard *s, int n, int64_t k, const char *got, json_t *want)
{
    if (!got || !want)
        return G1_OK;
    json_t *g = json_loads(got, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    g1_status st = G1_OK;
    if (!g || !json_equal(g, want)) {
        char *b = json_dumps(want, JSON_ENCODE_ANY | JSON_COMPACT);
        st = G1_FAIL(G1_ERR_FORMAT, "the logits dump %s of shard %d/%d holds in logits/%lld the logits of a request "
                                    "with id %.100s, but the request on input line %lld has id %.100s: is it the "
                                    "dump of this input?",
                     s->dump, s->k, n, (long long)k, got, (long long)k + 1, b ? b : "?");
        free(b);
    }
    json_decref(g);
    return st;
}

/* Shard s (K/N) answered requests K, K + N, ... < requests: its dump must be
 * finished, of the model's vocabulary (and of the first dump's: *v0, 0
 * before), and hold the datasets of exactly those requests' lines, each
 * with the id of its request (ids, by request) where it records one. */
/* Dataset logits/<k> of shard s's dump (t: its rows and tokens) holds the
 * logits of request m: as many rows as the shard's result counts tokens
 * (rows[m]: prompt_tokens + continuation_tokens, -1: not said), and the
 * tokens the input gives as ids (tok_count[m] of them, hashed, -1: text,
 * which needs the tokenizer), where it has a tokens attribute; a dump of
 * requests edited under the same ids
 * and settings (a relative name read in another folder) differs so. */
static g1_status check_dump_tokens(const shard *s, int n, int64_t k, int64_t m, const g1_dump_tokens *t,
                                   const int64_t *rows, const uint64_t *tok_hash, const int64_t *tok_count,
                                   json_t *ids)
{
    /* a dataset without the attribute (a grok1-run before it, or forged) is
     * left to the checks of its rows against the file (g1_logits_file_join) */
    int rows_differ = t->has && rows[m] >= 0 && t->rows != rows[m];
    int toks_differ = !rows_differ && t->has && tok_count[m] >= 0 &&
                      (t->rows != tok_count[m] || t->fnv1a64 != tok_hash[m]);
    if (!rows_differ && !toks_differ)
        return G1_OK;
    char *id = json_dumps(json_array_get(ids, (size_t)m), JSON_ENCODE_ANY | JSON_COMPACT);
    char said[160];
    if (rows_differ)
        snprintf(said, sizeof said, "%lld tokens (prompt_tokens and continuation_tokens of the shard's result)",
                 (long long)rows[m]);
    else
        snprintf(said, sizeof said, "other tokens (its prompt_ids and continuation_ids: %lld tokens, after those "
                                    "--truncate left cut, as the shard's result says)", (long long)tok_count[m]);
    g1_status st = G1_FAIL(G1_ERR_FORMAT, "the logits dump %s of shard %d/%d (%s) holds in logits/%lld the logits of "
                                          "%lld tokens%s, but request %lld (input line %lld, id %.100s) has %s: it "
                                          "is the dump of other requests (edited since, or a relative dump name read "
                                          "in another folder), not of this shard's results; run that shard again",
                           s->dump, s->k, n, s->path, (long long)k, (long long)t->rows,
                           toks_differ ? " (its tokens attribute)" : "", (long long)m, (long long)k + 1,
                           id ? id : "?", said);
    free(id);
    return st;
}

static g1_status check_dump(const shard *s, const shard *first, int n, const int64_t *lines, json_t *ids,
                            int64_t requests, int model_vocab, int *v0, const int64_t *rows, const uint64_t *tok_hash,
                            const int64_t *tok_count)
{
    if (!s->dump)
        return G1_FAIL(G1_ERR_ARG, "shard %d/%d (%s) was run without --dump-logits (its meta file records no dump): "
                                   "there is no dump of its results to merge; merge without --dump-logits, or run "
                                   "that shard afresh with one",
                       s->k, n, s->path);
    if (g1_path_is_dir(s->dump))
        return G1_FAIL(G1_ERR_ARG, "the logits dump of shard %d/%d, %s (settings.dump_logits in %s.meta.json), is a "
                                   "directory, not the dump that shard wrote",
                       s->k, n, s->dump, s->path);
    if (!exists(s->dump)) {
        char partial[4096];
        snprintf(partial, sizeof partial, "%s.partial", s->dump);
        if (exists(partial))
            return G1_FAIL(G1_ERR_ARG, "the logits dump of shard %d/%d is not finished: only %s exists (the run "
                                       "was interrupted or failed: run the shard again with --resume)",
                           s->k, n, partial);
        return G1_FAIL(G1_ERR_IO, "the logits dump of shard %d/%d, %s (settings.dump_logits in %s.meta.json), does "
                                  "not exist%s",
                       s->k, n, s->dump, s->path,
                       s->dump[0] == '/' ? "" : " (a relative name is read from the current folder, as grok1-run "
                                                "wrote it from its own: run grok1-merge in the folder the shards "
                                                "ran in)");
    }
    int v = 0;
    int64_t *ks = NULL;
    size_t nk = 0;
    char *run = NULL, why[600], **dids = NULL;
    g1_dump_tokens *toks = NULL;
    G1_TRY(g1_logits_file_list_tokens(s->dump, &v, &ks, &nk, &run, &dids, &toks));
    g1_status st = G1_OK;
    if (g1_dump_run_differs(run, s->meta, "the shard's meta file", why, sizeof why))
        st = G1_FAIL(G1_ERR_FORMAT, "the logits dump %s of shard %d/%d was written by another run (%s)%s", s->dump,
                     s->k, n, why,
                     s->dump[0] == '/' ? "" : ": a relative name is read from the current folder, as grok1-run "
                                              "wrote it from its own; run grok1-merge in the folder the shards ran in");
    free(run);
    if (st != G1_OK)
        ;
    else if (*v0 > 0 && v != *v0)
        st = G1_FAIL(G1_ERR_FORMAT, "the logits dumps do not fit together: %s (shard %d/%d) has vocab_size %d but %s "
                                    "(shard %d/%d) has %d",
                     s->dump, s->k, n, v, first->dump, first->k, n, *v0);
    else if (model_vocab > 0 && v != model_vocab)
        st = G1_FAIL(G1_ERR_FORMAT, "the logits dump %s (shard %d/%d) has vocab_size %d, but the model of the shards "
                                    "has %d (their meta files): it is not that run's dump",
                     s->dump, s->k, n, v, model_vocab);
    if (!*v0)
        *v0 = v;
    /* both ascending: the dump's names, and the lines of the shard's results */
    size_t i = 0;
    int64_t m = s->k, results = requests > s->k ? (requests - s->k + n - 1) / n : 0;
    while (st == G1_OK && (i < nk || m < requests)) {
        if (i < nk && m < requests && ks[i] == lines[m]) {
            st = check_dump_id(s, n, ks[i], dids[i], json_array_get(ids, (size_t)m));
            if (st == G1_OK)
                st = check_dump_tokens(s, n, ks[i], m, &toks[i], rows, tok_hash, tok_count, ids);
            i++;
            m += n;
        } else if (m >= requests || (i < nk && ks[i] < lines[m])) {
            /* which request that line is, if any */
            int64_t lo = 0, hi = requests;
            while (lo < hi) {
                int64_t mid = lo + (hi - lo) / 2;
                if (lines[mid] < ks[i])
                    lo = mid + 1;
                else
                    hi = mid;
            }
            char what[160];
            if (lo < requests && lines[lo] == ks[i])
                snprintf(what, sizeof what, "input line %lld is request %lld, a result of shard %lld/%d",
                         (long long)ks[i] + 1, (long long)lo, (long long)(lo % n), n);
            else
                snprintf(what, sizeof what, "input line %lld is %s", (long long)ks[i] + 1,
                         lo < requests ? "blank" : "past the input's last request");
            st = G1_FAIL(G1_ERR_FORMAT, "the logits dump %s of shard %d/%d holds logits/%lld, which is not one of its "
                                        "results (%s): is it the dump of this shard and input?",
                         s->dump, s->k, n, (long long)ks[i], what);
        } else {
            st = G1_FAIL(G1_ERR_FORMAT, "the logits dump %s of shard %d/%d lacks logits/%lld, the logits of its "
                                        "result for input line %lld (it holds %zu datasets for %lld results)",
                         s->dump, s->k, n, (long long)lines[m], (long long)lines[m] + 1, nk, (long long)results);
        }
    }
    free(ks);
    free(toks);
    for (size_t j = 0; j < nk; j++)
        free(dids[j]);
    free(dids);
    return st;
}

/* D exists and OUT does not: D may be what an earlier merge of these
 * shards wrote before it was killed (SIGKILL, a lost node) on its way to
 * naming OUT. It is, when it records this run and holds exactly the
 * input's requests (logits/<line> with each one's id): then it is written
 * again; any other file at D is refused, as a dump is never overwritten. */
static g1_status dump_left_by_merge(const char *dump, const char *out_path, json_t *meta, const int64_t *lines,
                                    json_t *ids, int64_t requests)
{
    int v = 0;
    int64_t *ks = NULL;
    size_t nk = 0;
    char *run = NULL, **dids = NULL, why[600];
    g1_status st = g1_logits_file_list(dump, &v, &ks, &nk, &run, &dids);
    int same = st == G1_OK && !g1_dump_run_differs(run, meta, "the shards' meta files", why, sizeof why) &&
               (int64_t)nk == requests;
    for (size_t i = 0; same && i < nk; i++) {
        json_t *got = dids[i] ? json_loads(dids[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL) : NULL;
        same = ks[i] == lines[i] && got && json_equal(got, json_array_get(ids, i));
        json_decref(got);
    }
    free(run);
    free(ks);
    for (size_t j = 0; j < nk; j++)
        free(dids[j]);
    free(dids);
    if (!same)
        return G1_FAIL(G1_ERR_ARG, "%s exists: grok1-merge does not overwrite a logits dump (it is not the dump of an "
                                   "earlier merge of these shards); remove it or choose another --dump-logits",
                       dump);
    fprintf(stderr, "grok1-merge: %s is the logits dump of an earlier merge of these shards that stopped before %s "
                    "got its name: it is written again\n",
            dump, out_path);
    return G1_OK;
}
#endif

/* What a signal (a time limit's SIGTERM, ^C) takes away before the merge
 * dies: its temporary files, a D it named before OUT got its name (a D
 * without its OUT would make the next merge refuse), and its locks. */
static struct {
    char tmp[4096], dump_tmp[4096], dump[4096], out[4096]; /* out: OUT's final name ("" for stdout) */
    g1_out_lock *locks[2];
    volatile sig_atomic_t dump_done, out_done;
} doomed;

static void on_signal(int sig)
{
    if (doomed.tmp[0])
        unlink(doomed.tmp);
    if (doomed.dump_tmp[0])
        unlink(doomed.dump_tmp);
    /* D without OUT: taken back (OUT may have its name a moment before
     * out_done says so: the rename is followed by a folder's fsync) */
    if (doomed.dump_done && !doomed.out_done && !(doomed.out[0] && access(doomed.out, F_OK) == 0))
        unlink(doomed.dump);
    for (int i = 0; i < 2; i++)
        if (doomed.locks[i] && doomed.locks[i]->held)
            unlink(doomed.locks[i]->path);
    signal(sig, SIG_DFL);
    raise(sig);
}

#if G1_HAVE_HDF5
/* The shards' dumps joined into dump_tmp, renamed to dump (dump_tmp gone
 * on failure). */
static g1_status write_dump(const char *dump_tmp, const char *dump, int vocab_size, json_t *meta,
                            const char *const *dumps, int n, long *unchecked)
{
    /* what the unsharded run's dump records */
    char *run = g1_dump_run_record(meta);
    if (!run)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    g1_status st = g1_logits_file_join(dump_tmp, vocab_size, run, dumps, n, unchecked);
    free(run);
    G1_TRY(st);
    /* D counts as made from before its rename (which a folder's fsync
     * follows): a signal in between takes it back, as it would after */
    doomed.dump_done = 1;
    st = g1_rename_durable(dump_tmp, dump); /* on the disk before it has its name */
    if (st != G1_OK) {
        doomed.dump_done = 0;
        unlink(dump_tmp);
    }
    return st;
}
#endif

/* IN is the input every shard answers: each shard's record (of its own
 * requests, or of the whole input from an older grok1-run) describes IN as
 * it is now. *whole: IN's record as an unsharded run writes it (NULL when
 * the shards read a pipe and recorded nothing). */
static g1_status check_input(const char *in_path, const shard *by_k, int n, json_t **whole)
{
    *whole = NULL;
    for (int k = 1; k < n; k++)
        if (!by_k[k].input != !by_k[0].input)
            return G1_FAIL(G1_ERR_ARG, "the shards were not made alike: %s.meta.json records the input it read, "
                                       "%s.meta.json does not (it read a pipe or stdin); a merge could not tell "
                                       "that they answer one input",
                           by_k[by_k[0].input ? 0 : k].path, by_k[by_k[0].input ? k : 0].path);
    if (!by_k[0].input) {
        fprintf(stderr, "grok1-merge: warning: the shards read a pipe or stdin, so their meta files record no "
                        "input: of %s only the ids are checked against their results, and %s.meta.json records "
                        "no input either\n", in_path, "the merged output");
        return G1_OK;
    }
    json_t **recs = calloc((size_t)n, sizeof *recs);
    int *verdict = calloc((size_t)n, sizeof *verdict);
    g1_status st = recs && verdict ? g1_input_record(in_path, whole) : G1_FAIL(G1_ERR_NOMEM, "out of memory");
    int shard_records = 0;
    for (int k = 0; recs && k < n; k++) {
        recs[k] = by_k[k].input;
        shard_records |= json_object_get(by_k[k].input, "shard_fnv1a64") != NULL;
    }
    if (st == G1_OK && shard_records)
        st = g1_shard_verdicts(in_path, n, recs, verdict);
    /* every shard that does not answer IN as it is now, each with what to do */
    char why[2048] = "";
    size_t len = 0;
    int bad = 0;
    for (int k = 0; k < n && st == G1_OK; k++) {
        const shard *s = &by_k[k];
        char msg[700];
        if (!json_object_get(s->input, "shard_fnv1a64")) { /* an older grok1-run's: the whole input */
            if (!json_equal(*whole, s->input))
                st = (g1_json_differ("input", *whole, s->input, in_path, s->path, msg, sizeof msg),
                      G1_FAIL(G1_ERR_ARG, "%s is not the input the shards answer (%s, per %s.meta.json): give "
                                          "that input (if requests were appended since, run the shards again with "
                                          "--resume)",
                              in_path, msg, s->path));
            continue;
        }
        if (verdict[k] == G1_SHARD_APPENDED)
            snprintf(msg, sizeof msg, "shard %d/%d (%s) answers its requests among the first %lld, and more of "
                     "them follow (appended since it ran): run it again with --resume", k, n, s->path,
                     (long long)json_integer_value(json_object_get(s->input, "requests")));
        else if (verdict[k] == G1_SHARD_EDITED)
            snprintf(msg, sizeof msg, "shard %d/%d (%s): its requests (%d, %lld, %lld, ...) are not the ones "
                     "recorded in %s.meta.json (one was edited, moved or removed since it ran, or a line added "
                     "or removed before it, or it read another input): run it again without --resume, or give "
                     "the input it read", k, n, s->path, k, (long long)k + n, (long long)k + 2LL * n, s->path);
        else
            continue;
        bad++;
        if (len < sizeof why - 8)
            len += (size_t)snprintf(why + len, sizeof why - len, "%s%s", len ? "; " : "", msg);
    }
    if (st == G1_OK && bad)
        st = G1_FAIL(G1_ERR_ARG, "%s is not the input %s: %s%s", in_path,
                     bad == 1 ? "one of the shards answers" : "some of the shards answer", why,
                     len >= sizeof why - 8 ? "; ..." : "");
    free(recs);
    free(verdict);
    if (st != G1_OK) {
        json_decref(*whole);
        *whole = NULL;
    }
    return st;
}

/* Every shard's results are read side by side: n files open at once, with
 * the input, the output, the locks and HDF5's. A soft limit on open files
 * below that (ulimit -n: 1024 on many clusters, against job arrays of
 * thousands of tasks) is raised, up to the hard one; a hard limit below it
 * is refused at once, naming it, before anything is written. */
#define FILES_BESIDE_SHARDS 32
static g1_status room_for_shards(int n)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)n + FILES_BESIDE_SHARDS;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return G1_OK;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
        return G1_FAIL(G1_ERR_ARG, "the %d shards are read side by side, which takes %llu open files, but this "
                                   "process may open at most %llu (the hard limit, ulimit -Hn): raise it (ask the "
                                   "system's administrators), or split the input into fewer shards",
                       n, (unsigned long long)need, (unsigned long long)rl.rlim_max);
    rlim_t had = rl.rlim_cur;
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return G1_FAIL(G1_ERR_IO, "the %d shards are read side by side, which takes %llu open files, but the limit "
                                  "(ulimit -n) is %llu and raising it failed: %s", n, (unsigned long long)need,
                       (unsigned long long)had, strerror(errno));
    return G1_OK;
}

static g1_status merge(const char *in_path, const char *out_path, const char *dump, int nf, char **files)
{
    shard *sh = calloc((size_t)nf, sizeof *sh);
    if (!sh)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    g1_status st = G1_OK;
    for (int i = 0; i < nf && st == G1_OK; i++) {
        sh[i].path = files[i];
        st = read_shard(&sh[i]);
    }
    int n = nf ? sh[0].n : 0;
    shard *by_k = NULL;
    if (st == G1_OK) {
        for (int i = 1; i < nf && st == G1_OK; i++)
            if (sh[i].n != n)
                st = G1_FAIL(G1_ERR_ARG, "%s is shard %d/%d but %s is shard %d/%d: shards of different splits",
                             sh[0].path, sh[0].k, n, sh[i].path, sh[i].k, sh[i].n);
        if (st == G1_OK && !(by_k = calloc((size_t)n, sizeof *by_k)))
            st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
        for (int i = 0; i < nf && st == G1_OK; i++) {
            if (by_k[sh[i].k].path)
                st = G1_FAIL(G1_ERR_ARG, "shard %d/%d is given twice: %s and %s", sh[i].k, n, by_k[sh[i].k].path,
                             sh[i].path);
            by_k[sh[i].k] = sh[i];
        }
        char missing[512] = "";
        size_t len = 0;
        int n_missing = 0;
        for (int k = 0; k < n && st == G1_OK; k++)
            if (!by_k[k].path) {
                n_missing++;
                if (len < sizeof missing - 32)
                    len += (size_t)snprintf(missing + len, sizeof missing - len, "%s%d/%d", len ? ", " : "", k, n);
            }
        if (st == G1_OK && n_missing)
            st = G1_FAIL(G1_ERR_ARG, "%d of the %d shards %s missing: %s%s", n_missing, n,
                         n_missing == 1 ? "is" : "are", missing, len >= sizeof missing - 32 ? ", ..." : "");
        for (int k = 1; k < n && st == G1_OK; k++) {
            char msg[700];
            if (g1_json_differ("", by_k[k].meta, by_k[0].meta, by_k[k].path, by_k[0].path, msg, sizeof msg))
                st = G1_FAIL(G1_ERR_ARG, "the shards were not made alike: %s (their .meta.json files); a merge "
                                         "would mix results of other inputs or settings",
                             msg);
        }
        if (st == G1_OK)
            st = room_for_shards(n);
    }
    /* the input: the one recorded (when the shards read a file), and how
     * many requests the merged output must hold */
    struct stat in_sb;
    if (st == G1_OK && !stat(in_path, &in_sb) && S_ISDIR(in_sb.st_mode))
        st = G1_FAIL(G1_ERR_ARG, "--input %s is a directory: give the input file the shards read", in_path);
    else if (st == G1_OK && !stat(in_path, &in_sb) && !g1_input_rereadable(in_path))
        st = G1_FAIL(G1_ERR_ARG, "--input %s is a pipe or a device: grok1-merge reads the input twice (to check it "
                                 "and to count its requests); give the file the shards read",
                     in_path);
    json_t *whole = NULL;
    if (st == G1_OK)
        st = check_input(in_path, by_k, n, &whole);
    int64_t requests = st == G1_OK ? g1_count_requests(in_path) : 0;
    if (st == G1_OK && requests < 0)
        st = G1_FAIL(G1_ERR_IO, "cannot read the input %s", in_path);
    /* stdout, or a device or FIFO (/dev/null, /dev/stdout), written directly:
     * no lock, meta file, temporary file or rename (a rename would put a
     * regular file in place of the device) */
    int to_stdout = !strcmp(out_path, "-") || g1_path_is_stream(out_path);
    const char *out_name = !strcmp(out_path, "-") ? "standard output" : out_path;
    char tmp[4096] = "", dump_tmp[4096] = "";
    char *meta_path = NULL;
    FILE *out = NULL;
    int dump_left = 0; /* D exists, OUT does not (check_dump_name) */
    /* one writer on OUT and on D: a second merge (or a grok1-run) is refused */
    g1_out_lock lock_out = {.fd = -1}, lock_dump = {.fd = -1};
    doomed.locks[0] = &lock_out;
    doomed.locks[1] = &lock_dump;
    if (st == G1_OK && !to_stdout)
        st = g1_lock_output(out_path, "grok1-merge", "merge again", &lock_out);
    if (st == G1_OK && dump)
        st = g1_lock_output(dump, "grok1-merge", "merge again", &lock_dump);
    if (st == G1_OK && !to_stdout) {
        meta_path = g1_meta_path(out_path);
        snprintf(tmp, sizeof tmp, "%s.merge.tmp", out_path);
        snprintf(doomed.tmp, sizeof doomed.tmp, "%s", tmp);
        snprintf(doomed.out, sizeof doomed.out, "%s", out_path);
        if (!meta_path)
            st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
        else if (exists(out_path) || exists(meta_path))
            st = G1_FAIL(G1_ERR_ARG, "%s exists: grok1-merge does not overwrite results; remove it (and %s) or "
                                     "choose another --output", exists(out_path) ? out_path : meta_path, meta_path);
    }
    if (st == G1_OK && dump) {
        snprintf(dump_tmp, sizeof dump_tmp, "%s.merge.tmp", dump);
        snprintf(doomed.dump_tmp, sizeof doomed.dump_tmp, "%s", dump_tmp);
        snprintf(doomed.dump, sizeof doomed.dump, "%s", dump);
        st = check_dump_name(dump, dump_tmp, in_path, by_k, n, to_stdout ? NULL : out_path, meta_path, tmp,
                             &dump_left);
    }
    if (st == G1_OK && !to_stdout) {
        if (!(out = g1_fopen_fresh(tmp))) /* never through a link found at that name */
            st = G1_FAIL(G1_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    } else if (st == G1_OK && !strcmp(out_path, "-")) {
        out = stdout;
    } else if (st == G1_OK && !(out = fopen(out_path, "w"))) {
        st = G1_FAIL(G1_ERR_IO, "cannot open %s: %s", out_path, strerror(errno));
    }
    for (int k = 0; k < n && st == G1_OK; k++)
        if (!(by_k[k].f = fopen(by_k[k].path, "r")))
            st = G1_FAIL(G1_ERR_IO, "cannot open %s: %s", by_k[k].path, strerror(errno));
    /* check everything before the first byte goes out (stdout cannot be
     * taken back), then write */
    long long total = 0;
    json_t *ids = NULL;
    /* with the dumps: what each result says of its request's tokens */
    int64_t *want_rows = NULL;
    int *want_cut = NULL;
    if (st == G1_OK && dump && (!(want_rows = malloc((size_t)(requests > 0 ? requests : 1) * sizeof *want_rows)) ||
                                !(want_cut = calloc((size_t)(requests > 0 ? requests : 1), sizeof *want_cut))))
        st = G1_FAIL(G1_ERR_NOMEM, "out of memory for %lld requests", (long long)requests);
    for (int64_t m = 0; want_rows && m < requests; m++)
        want_rows[m] = -1;
    if (st == G1_OK)
        st = input_ids(in_path, &ids);
    if (st == G1_OK)
        st = join(by_k, n, NULL, NULL, ids, &total, want_rows, want_cut, requests);
    if (st == G1_OK && total != requests)
        st = G1_FAIL(G1_ERR_FORMAT, "the shards hold %lld results, but %s has %lld requests: %s", total, in_path,
                     (long long)requests,
                     total < requests ? "a shard's output was cut short (its last results are missing)"
                                      : "they answer another input");
    const char **dumps = NULL;
#if G1_HAVE_HDF5
    /* the dumps: each shard's holds its results' datasets and nothing else */
    json_t *vocab = st == G1_OK && dump ? json_object_get(json_object_get(by_k[0].meta, "model"), "vocab_size")
                                        : NULL;
    int model_vocab = json_is_integer(vocab) ? (int)json_integer_value(vocab) : 0;
    int64_t *lines = NULL;
    int v0 = 0;
    long unchecked = 0; /* datasets of the dumps without a checksum */
    if (st == G1_OK && dump)
        st = request_lines(in_path, requests, &lines);
    if (st == G1_OK && dump_left)
        st = dump_left_by_merge(dump, out_path, by_k[0].meta, lines, ids, requests);
    /* each shard needs a dump of its own: two that name one file wrote over each other */
    for (int k = 0; k < n && st == G1_OK && dump; k++)
        for (int j = 0; j < k && st == G1_OK && by_k[k].dump && by_k[j].dump; j++)
            if (g1_path_same(by_k[k].dump, by_k[j].dump))
                st = G1_FAIL(G1_ERR_ARG, "shards %d/%d and %d/%d both name the logits dump %s: the later run wrote over "
                                         "the earlier's; run one of them again with a --dump-logits of its own",
                             j, n, k, n, by_k[k].dump);
    uint64_t *tok_hash = NULL;
    int64_t *tok_count = NULL;
    if (st == G1_OK && dump)
        st = request_tokens(in_path, requests, want_cut, &tok_hash, &tok_count);
    for (int k = 0; k < n && st == G1_OK && dump; k++)
        st = check_dump(&by_k[k], &by_k[0], n, lines, ids, requests, model_vocab, &v0, want_rows, tok_hash,
                        tok_count);
    free(lines);
    free(tok_hash);
    free(tok_count);
    if (st == G1_OK && dump && !(dumps = calloc((size_t)n, sizeof *dumps)))
        st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
    for (int k = 0; k < n && st == G1_OK && dump; k++)
        dumps[k] = by_k[k].dump;
    /* to stdout: the dump first, as the results cannot be taken back */
    int dump_done = 0;
    if (st == G1_OK && dump && to_stdout) {
        st = write_dump(dump_tmp, dump, v0, by_k[0].meta, dumps, n, &unchecked);
        doomed.dump_done = dump_done = st == G1_OK;
    }
#else
    int dump_done = 0;
    if (st == G1_OK && dump) /* main refuses it first */
        st = G1_FAIL(G1_ERR_ARG, "--dump-logits needs a build with HDF5");
#endif
    json_decref(ids);
    free(want_rows);
    free(want_cut);
    for (int k = 0; k < n && st == G1_OK; k++)
        if (fseek(by_k[k].f, 0, SEEK_SET) != 0)
            st = G1_FAIL(G1_ERR_IO, "cannot read %s again: %s", by_k[k].path, strerror(errno));
    if (st == G1_OK)
        st = join(by_k, n, out, to_stdout ? out_name : tmp, NULL, &total, NULL, NULL, 0);
    if (out && fflush(out) != 0 && st == G1_OK)
        st = G1_FAIL(G1_ERR_IO, "writing %s failed: %s", to_stdout ? out_name : tmp, strerror(errno));
    if (out && to_stdout && out != stdout) {
        if (fclose(out) != 0 && st == G1_OK)
            st = G1_FAIL(G1_ERR_IO, "writing %s failed: %s", out_name, strerror(errno));
        out = NULL;
    }
    if (to_stdout)
        doomed.out_done = st == G1_OK;
    if (st != G1_OK && to_stdout && dump_done) /* the results did not all go out: no dump without them */
        unlink(dump);
    /* where D will be, for OUT.meta.json: found before D or OUT takes its
     * name, so that a failure (no memory) leaves neither (it left a meta
     * file without these records, exit 0) */
    char *dump_real = NULL, *dump_rel = NULL;
    if (st == G1_OK && out && !to_stdout && dump)
        st = dump_place(dump, out_path, &dump_real, &dump_rel);
    if (out && !to_stdout) {
        if (fclose(out) != 0 && st == G1_OK)
            st = G1_FAIL(G1_ERR_IO, "writing %s failed: %s", tmp, strerror(errno));
#if G1_HAVE_HDF5
        /* the dump gets its name before the results do: a finished OUT
         * implies a finished D */
        if (st == G1_OK && dump) {
            st = write_dump(dump_tmp, dump, v0, by_k[0].meta, dumps, n, &unchecked);
            doomed.dump_done = dump_done = st == G1_OK;
        }
#endif
        /* the results first, then their meta file: a merge killed between
         * the two leaves a complete OUT (no meta), never a meta file that
         * would make the next merge refuse */
        if (st == G1_OK && (st = g1_rename_durable(tmp, out_path)) != G1_OK) {
            if (dump_done) /* made by this merge a moment ago: nothing is left at D either */
                unlink(dump);
        }
        doomed.out_done = st == G1_OK;
        if (st != G1_OK) {
            unlink(tmp);
        } else {
            /* recorded as the unsharded run with --dump-logits D records it */
            json_t *set = json_object_get(by_k[0].meta, "settings");
            if (dump && json_object_set_new(set, "dump_logits", json_string(dump)) != 0)
                st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
            /* and where it is, relative to OUT too, as grok1-run records it */
            if (st == G1_OK && dump && json_object_set_new(set, "dump_logits_path", json_string(dump_real)) != 0)
                st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
            if (st == G1_OK && dump && json_object_set_new(set, "dump_logits_from_output", json_string(dump_rel)) != 0)
                st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
            if (st == G1_OK && whole && json_object_set(by_k[0].meta, "input", whole) != 0)
                st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
            if (st == G1_OK)
                st = g1_meta_write(meta_path, by_k[0].meta);
        }
    }
    if (st == G1_OK) {
        char crcs[96] = "";
#if G1_HAVE_HDF5
        if (dump && unchecked)
            snprintf(crcs, sizeof crcs, " (%ld datasets had no checksum: not checked)", unchecked);
        else if (dump)
            snprintf(crcs, sizeof crcs, " (every dataset matched its checksum)");
#endif
        fprintf(stderr, "grok1-merge: %lld results from %d shards written to %s%s%s%s\n", total, n,
                to_stdout ? out_name : out_path, dump ? ", their logits to " : "", dump ? dump : "", crcs);
    }
    /* done: nothing for a signal to take away (but the locks, till here) */
    doomed.tmp[0] = doomed.dump_tmp[0] = 0;
    doomed.dump_done = 0;
    g1_unlock_output(&lock_dump);
    g1_unlock_output(&lock_out);
    doomed.locks[0] = doomed.locks[1] = NULL;
    for (int k = 0; by_k && k < n; k++)
        if (by_k[k].f)
            fclose(by_k[k].f);
    json_decref(whole);
    free(dump_real);
    free(dump_rel);
    for (int i = 0; i < nf; i++) {
        json_decref(sh[i].meta);
        json_decref(sh[i].input);
        free(sh[i].dump);
    }
    free(dumps);
    free(by_k);
    free(sh);
    free(meta_path);
    return st;
}

static int tool_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"input", required_argument, NULL, 'i'},
        {"dump-logits", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *output = NULL, *input = NULL, *dump = NULL;
    opterr = 0;
    int o, li = -1;
    const char *given[sizeof opts / sizeof opts[0]] = {0};
    char why[512];
    while ((li = -1, o = getopt_long(argc, argv, ":", opts, &li)) != -1) {
        if (g1_opt_refused(argv, opts, li, o, given, why, sizeof why)) {
            fprintf(stderr, "grok1-merge: error: %s (see --help)\n", why);
            return 2;
        }
        switch (o) {
        case 'o': output = optarg; break;
        case 'i': input = optarg; break;
        case 'd': dump = optarg; break;
        case 'h': usage(stdout); return g1_stdout_done("grok1-merge");
        case 'V': printf("grok1-merge %s\n", G1_VERSION); return g1_stdout_done("grok1-merge");
        case ':': fprintf(stderr, "grok1-merge: error: option %s needs a value (see --help)\n", argv[optind - 1]); return 2;
        default: fprintf(stderr, "grok1-merge: error: unknown option %s (see --help)\n", argv[optind - 1]); return 2;
        }
    }
    if (!output || !input || optind >= argc) {
        fprintf(stderr, "grok1-merge: error: %s (see --help)\n",
                !input ? "--input is required" : !output ? "--output is required" : "no shard outputs given");
        return 2;
    }
    if (!strcmp(input, "-")) {
        fprintf(stderr, "grok1-merge: error: --input -: grok1-merge reads the input twice (to check it and to count "
                        "its requests), which standard input cannot give; give the file the shards read\n");
        return 2;
    }
    if (!*output || !*input) {
        fprintf(stderr, "grok1-merge: error: %s: the file name is empty (see --help)\n", !*input ? "--input" : "--output");
        return 2;
    }
    if (dump && (!*dump || !strcmp(dump, "-"))) {
        fprintf(stderr, "grok1-merge: error: --dump-logits needs a file name (an HDF5 file cannot go to stdout)\n");
        return 2;
    }
#if !G1_HAVE_HDF5
    if (dump) {
        fprintf(stderr, "grok1-merge: error: --dump-logits needs HDF5, but this grok1-merge was built without HDF5: "
                        "merge the results without it, or rebuild with HDF5 (meson -Dhdf5=enabled)\n");
        return 2;
    }
#endif
    /* names that are symbolic links stand for the files they name, as in
     * grok1-run: a shard's meta file and .partial are beside its file, and
     * the merge's output and dump are written there, the links kept */
    int nf = argc - optind;
    char **real = calloc((size_t)nf + 2, sizeof *real), **files = calloc((size_t)nf, sizeof *files);
    if (!real || !files) {
        free(real);
        free(files);
        fprintf(stderr, "grok1-merge: error: out of memory\n");
        return 1;
    }
    int code = 0;
    for (int i = 0; i < nf + 2 && !code; i++) {
        const char *name = i < nf ? argv[optind + i] : i == nf ? output : dump;
        /* the dump is an HDF5 file: never a stream (a device, FIFO or folder
         * is refused before any work; a FIFO hung the merge) */
        struct stat ds;
        g1_status st = !name ? G1_OK : i == nf + 1 ? g1_h5_output_path("", name, &real[i])
                       : g1_path_is_stream(name) ? G1_OK : g1_path_through_link(name, &real[i]);
        if (st == G1_OK && i == nf && stat(name, &ds) == 0 && S_ISDIR(ds.st_mode))
            st = G1_FAIL(G1_ERR_ARG, "%s is a directory: give the name of the file to write", name);
        if (st != G1_OK) {
            fprintf(stderr, "grok1-merge: error: %s%s\n", i < nf ? "" : i == nf ? "--output: " : "--dump-logits: ",
                    g1_last_error());
            code = 2;
        } else if (i < nf) {
            files[i] = real[i] ? real[i] : argv[optind + i];
        }
    }
    if (!code) {
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
        signal(SIGHUP, on_signal);
        g1_status st = merge(input, real[nf] ? real[nf] : output, real[nf + 1] ? real[nf + 1] : dump, nf, files);
        if (st != G1_OK) {
            fprintf(stderr, "grok1-merge: error: %s\n", g1_last_error());
            code = 1;
        }
    }
    for (int i = 0; i < nf + 2; i++)
        free(real[i]);
    free(real);
    free(files);
    return code;
}

/* A file that failed to close (a full disk) must not reach HDF5's shutdown
 * (g1_h5_end). */
int main(int argc, char **argv)
{
    int code = tool_main(argc, argv);
#if G1_HAVE_HDF5
    g1_h5_end(code);
#endif
    return code;
}
