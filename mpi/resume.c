/* Sidecar and resume scan: see resume.h. */
#include "resume.h"

#include "durable.h"
#include "fnv1a.h"
#include "requests.h"

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
    /* made anew: never written through a link found at the name */
    FILE *f = g1_fopen_fresh(tmp);
    int bad = !f || json_dumpf(meta, f, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17)) != 0;
    if (f && fclose(f) != 0)
        bad = 1;
    if (bad)
        st = G1_FAIL(G1_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    else
        st = g1_rename_durable(tmp, path);
    if (st != G1_OK)
        unlink(tmp);
    free(tmp);
    return st;
}

int g1_json_differ(const char *where, json_t *a, json_t *b, const char *name_a, const char *name_b, char *msg,
                   size_t n)
{
    if (json_is_object(a) && json_is_object(b)) {
        const char *k;
        json_t *v;
        json_object_foreach(a, k, v) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s%s%s", where, *where ? "." : "", k);
            json_t *w = json_object_get(b, k);
            if (!w) {
                snprintf(msg, n, "%s is set in %s but not in %s", sub, name_a, name_b);
                return 1;
            }
            if (g1_json_differ(sub, v, w, name_a, name_b, msg, n))
                return 1;
        }
        json_object_foreach(b, k, v) {
            if (!json_object_get(a, k)) {
                snprintf(msg, n, "%s%s%s is set in %s but not in %s", where, *where ? "." : "", k, name_b, name_a);
                return 1;
            }
        }
        return 0;
    }
    if (json_equal(a, b))
        return 0;
    char *sa = json_dumps(a, JSON_ENCODE_ANY | JSON_COMPACT), *sb = json_dumps(b, JSON_ENCODE_ANY | JSON_COMPACT);
    snprintf(msg, n, "%s is %s in %s but %s in %s", where, sa ? sa : "?", name_a, sb ? sb : "?", name_b);
    free(sa);
    free(sb);
    return 1;
}

/* meta without what differs between the runs one dump may come from */
static json_t *run_of(json_t *meta)
{
    json_t *m = json_deep_copy(meta);
    if (!m)
        return NULL;
    json_object_del(m, "input");
    json_t *set = json_object_get(m, "settings");
    if (json_is_object(set)) {
        json_object_del(set, "shard");
        json_object_del(set, "dump_logits");
        json_object_del(set, "dump_logits_path");
        json_object_del(set, "dump_logits_from_output");
    }
    return m;
}

char *g1_dump_run_record(json_t *meta)
{
    json_t *m = run_of(meta);
    char *s = m ? json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(m);
    return s;
}

int g1_dump_run_differs(const char *record, json_t *meta, const char *name, char *msg, size_t n)
{
    if (!record)
        return 0;
    json_error_t err;
    json_t *rec = json_loads(record, 0, &err), *m = run_of(meta);
    int d;
    if (!rec || !json_is_object(rec)) {
        snprintf(msg, n, "its record of the run that wrote it is not JSON (%s)", rec ? "not an object" : err.text);
        d = 1;
    } else if (!m) {
        snprintf(msg, n, "out of memory");
        d = 1;
    } else {
        d = g1_json_differ("", rec, m, "the dump's record", name, msg, n);
    }
    json_decref(rec);
    json_decref(m);
    return d;
}

/* FNV-1a, 64 bits, of the first `limit` bytes of the file at path (all of
 * it when limit < 0), as 16 hex digits; *got: the bytes there were. */
static g1_status input_hash(const char *path, long long limit, char hex[17], long long *got)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return G1_FAIL(G1_ERR_IO, "cannot open input %s: %s", path, strerror(errno));
    unsigned long long h = G1_FNV1A64_START;
    unsigned char buf[1 << 16];
    long long n = 0;
    while (limit < 0 || n < limit) {
        size_t want = sizeof buf;
        if (limit >= 0 && (long long)want > limit - n)
            want = (size_t)(limit - n);
        size_t r = fread(buf, 1, want, f);
        h = g1_fnv1a64(h, buf, r);
        n += (long long)r;
        if (r < want)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad)
        return G1_FAIL(G1_ERR_IO, "cannot read input %s", path);
    snprintf(hex, 17, "%016llx", h);
    *got = n;
    return G1_OK;
}

g1_status g1_input_record(const char *path, json_t **record)
{
    char hex[17];
    long long n;
    G1_TRY(input_hash(path, -1, hex, &n));
    *record = json_pack("{s:I, s:s}", "bytes", (json_int_t)n, "fnv1a64", hex);
    return *record ? G1_OK : G1_FAIL(G1_ERR_NOMEM, "out of memory");
}

g1_status g1_input_record_prefix(const char *path, long long bytes, json_t **record)
{
    char hex[17];
    long long n;
    G1_TRY(input_hash(path, bytes, hex, &n));
    if (n != bytes)
        return G1_FAIL(G1_ERR_IO, "the input %s has %lld bytes, not the %lld expected", path, n, bytes);
    *record = json_pack("{s:I, s:s}", "bytes", (json_int_t)n, "fnv1a64", hex);
    return *record ? G1_OK : G1_FAIL(G1_ERR_NOMEM, "out of memory");
}

/* Per shard, FNV-1a over its own requests: `all` of them, and those among
 * the first `upto` requests of the input in `pre` (upto < 0: all). */
typedef struct shard_acc {
    long long upto;
    unsigned long long all, pre;
} shard_acc;

/* One pass over the input: shard k's hashes into acc[0], or with k < 0
 * every shard's into acc[0 .. n-1]; *requests: the requests there are.
 * Each request m (0-based over the non-blank lines), on line l (0-based
 * over all lines), is hashed as "m:l:", the line without its newline, and
 * a newline: its index keys its sampling, its line names its logits in a
 * dump, and its text is the request. */
static g1_status shard_scan(const char *path, int k, int n, shard_acc *acc, long long *requests)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return G1_FAIL(G1_ERR_IO, "cannot open input %s: %s", path, strerror(errno));
    for (int i = 0; i < (k < 0 ? n : 1); i++)
        acc[i].all = acc[i].pre = G1_FNV1A64_START;
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    long long m = 0, line = -1;
    while ((len = getline(&buf, &cap, f)) > 0) {
        line++;
        if (g1_blank_line(buf, (size_t)len))
            continue;
        int owner = (int)(m % n);
        if (k < 0 || owner == k) {
            shard_acc *a = &acc[k < 0 ? owner : 0];
            char idx[48];
            int il = snprintf(idx, sizeof idx, "%lld:%lld:", m, line);
            unsigned long long h = g1_fnv1a64(a->all, idx, (size_t)il);
            h = g1_fnv1a64(h, buf, (size_t)len - (buf[len - 1] == '\n'));
            a->all = g1_fnv1a64(h, "\n", 1);
            if (a->upto < 0 || m < a->upto)
                a->pre = a->all;
        }
        m++;
    }
    free(buf);
    int bad = ferror(f);
    fclose(f);
    if (bad)
        return G1_FAIL(G1_ERR_IO, "cannot read input %s", path);
    *requests = m;
    return G1_OK;
}

static json_t *shard_json(long long requests, unsigned long long h)
{
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", h);
    return json_pack("{s:I, s:s}", "requests", (json_int_t)requests, "shard_fnv1a64", hex);
}

g1_status g1_shard_record(const char *path, int k, int n, long long upto, json_t **record)
{
    shard_acc a = {.upto = upto};
    long long m;
    G1_TRY(shard_scan(path, k, n, &a, &m));
    if (upto >= 0 && m < upto)
        return G1_FAIL(G1_ERR_IO, "the input %s has %lld requests, not the %lld expected", path, m, upto);
    *record = shard_json(upto >= 0 ? upto : m, a.pre);
    return *record ? G1_OK : G1_FAIL(G1_ERR_NOMEM, "out of memory");
}

/* The hash a shard record holds (0 and *ok = 0 when malformed). */
static unsigned long long record_hash(json_t *record, int *ok)
{
    const char *hex = json_string_value(json_object_get(record, "shard_fnv1a64"));
    char *end = NULL;
    unsigned long long h = hex ? strtoull(hex, &end, 16) : 0;
    *ok = hex && strlen(hex) == 16 && end && !*end && json_is_integer(json_object_get(record, "requests"));
    return h;
}

g1_status g1_shard_verdicts(const char *path, int n, json_t *const *records, int *verdict)
{
    shard_acc *acc = calloc((size_t)n, sizeof *acc);
    if (!acc)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    for (int k = 0; k < n; k++)
        acc[k].upto = json_integer_value(json_object_get(records[k], "requests"));
    long long m;
    g1_status st = shard_scan(path, -1, n, acc, &m);
    for (int k = 0; k < n && st == G1_OK; k++) {
        int ok;
        unsigned long long h = record_hash(records[k], &ok);
        verdict[k] = !ok ? G1_SHARD_EDITED : h == acc[k].all ? G1_SHARD_SAME
                                           : h == acc[k].pre ? G1_SHARD_APPENDED
                                                             : G1_SHARD_EDITED;
    }
    free(acc);
    return st;
}

/* A resume's verdict on the input: it has `got` of the `want` units (bytes
 * or requests) the record covers, and `same` says whether they hash as
 * recorded; `which` names what was hashed, `why` what a mismatch means. */
static g1_status input_verdict(const char *path, const char *sidecar, const char *unit, long long got,
                               long long want, int same, const char *which, const char *why)
{
    if (got < want)
        return G1_FAIL(G1_ERR_ARG, "cannot resume: the input %s has %lld %s, fewer than the %lld the output was "
                                   "made from (record: %s): is the output that of another input? The kept results "
                                   "would answer other requests; give the same input, or start afresh (move the "
                                   "output and its .partial away)",
                       path, got, unit, want, sidecar);
    if (!same)
        return G1_FAIL(G1_ERR_ARG, "cannot resume: the input %s is not the one the output was made from (%s are not "
                                   "the recorded ones; record: %s): %s. A run that stops on an error or a signal "
                                   "narrows the record to the requests its results answer, so later requests may "
                                   "then be edited; a run killed outright leaves the record of the whole input, "
                                   "which then may only grow. Give the same input (appending requests is fine), or "
                                   "start afresh (move the output and its .partial away)",
                       path, which, sidecar, why);
    return G1_OK;
}

/* The check of a shard's record: see g1_input_check. An input with fewer
 * requests than the record covers is fine when it still holds all of this
 * shard's among them (only other shards' requests were cut off the end):
 * the hash says so. */
static g1_status shard_check(const char *path, json_t *record, const char *sidecar, int k, int n)
{
    int ok;
    unsigned long long h = record_hash(record, &ok);
    if (!ok || n < 2)
        return G1_OK;
    long long want = (long long)json_integer_value(json_object_get(record, "requests")), m;
    shard_acc a = {.upto = want};
    G1_TRY(shard_scan(path, k, n, &a, &m));
    char which[96];
    snprintf(which, sizeof which, "the requests of shard %d/%d among its first %lld", k, n, want);
    /* no count to compare: the hash covers every request of this shard there is */
    return input_verdict(path, sidecar, "requests", want, want, h == a.pre, which,
                         "a request of this shard was edited, moved or removed (or a blank line was added or "
                         "removed before it, or became a request, which renumbers the lines or requests after "
                         "it), so the kept results may answer other requests; requests of other shards may be "
                         "edited in place");
}

/* The check of a whole-input record: see g1_input_check. */
static g1_status whole_check(const char *path, json_t *record, const char *sidecar)
{
    json_t *jb = json_object_get(record, "bytes"), *jh = json_object_get(record, "fnv1a64");
    if (!json_is_integer(jb) || !json_is_string(jh))
        return G1_OK;
    long long want = (long long)json_integer_value(jb), n;
    char hex[17], which[64];
    G1_TRY(input_hash(path, want, hex, &n));
    snprintf(which, sizeof which, "its first %lld bytes", want);
    return input_verdict(path, sidecar, "bytes", n, want, !strcmp(hex, json_string_value(jh)), which,
                         "is the output that of another input? The kept results may answer other requests");
}

g1_status g1_input_check(const char *path, json_t *record, const char *sidecar, int k, int n)
{
    return json_object_get(record, "shard_fnv1a64") ? shard_check(path, record, sidecar, k, n)
                                                    : whole_check(path, record, sidecar);
}

static const char *setting(json_t *meta, const char *key)
{
    return json_string_value(json_object_get(json_object_get(meta, "settings"), key));
}

static void drop_settings(json_t *meta, const char *const *keys)
{
    json_t *set = json_object_get(meta, "settings");
    for (; *keys; keys++)
        json_object_del(set, *keys);
}

/* Which logits dump a resume continues. A relative --dump-logits is read
 * from the current folder, so the same name given in another folder is
 * another file (another output's dump, perhaps of the same requests, which
 * the checks of its contents pass: it was taken over and the output's own
 * DUMP.partial orphaned). The meta file records the dump's canonical name
 * (settings.dump_logits_path) and that name relative to the output's
 * folder (settings.dump_logits_from_output). The rule: the dump this run
 * names must be the recorded file, or sit where the recorded one sat
 * relative to the output: the output folder moved or copied whole (OUT,
 * its meta file and the dump together) and resumed there with the same
 * names. Anything else is refused, before anything changes, naming both
 * files. The name as given may then differ (an absolute one for a
 * relative one): it is the file that counts. Whether that file holds this
 * output's logits is checked after, as for any resume (its run record, the
 * kept results' datasets). A meta file from before the record (no
 * dump_logits_path) is resumed as before: by the name as given. */
static g1_status dump_place(const char *path, json_t *old, json_t *mine)
{
    const char *was = setting(old, "dump_logits_path"), *now = setting(mine, "dump_logits_path");
    const char *was_rel = setting(old, "dump_logits_from_output"), *now_rel = setting(mine, "dump_logits_from_output");
    static const char *const place[] = {"dump_logits", "dump_logits_path", "dump_logits_from_output", NULL};
    static const char *const added[] = {"dump_logits_path", "dump_logits_from_output", NULL};
    if (!was || !now) { /* an older record, or a run with no dump on one side: compared as before */
        drop_settings(old, added);
        drop_settings(mine, added);
        return G1_OK;
    }
    int same = !strcmp(was, now) || (was_rel && now_rel && !strcmp(was_rel, now_rel));
    if (same) {
        drop_settings(old, place);
        drop_settings(mine, place);
        return G1_OK;
    }
    return G1_FAIL(G1_ERR_ARG, "cannot resume: --dump-logits %s is %s, but the logits dump of this output is %s "
                               "(settings.dump_logits_path in %s; %s from the output's folder), another file, "
                               "perhaps another output's dump (a relative --dump-logits names a file in the current "
                               "folder): resume from the folder the run started in, or give that dump's path "
                               "(--dump-logits %s); nothing was changed",
                   setting(mine, "dump_logits"), now, was, path, was_rel ? was_rel : "?", was);
}

g1_status g1_meta_check(const char *path, json_t *meta, json_t **old_input)
{
    *old_input = NULL;
    json_error_t err;
    json_t *old = json_load_file(path, 0, &err);
    if (!old)
        return G1_FAIL(G1_ERR_ARG, "cannot resume: %s is missing or unreadable (%s), so the settings that made the "
                                   "output cannot be checked; run without --resume to start afresh", path, err.text);
    /* the input is checked by g1_input_check: it may have grown */
    json_t *input = json_incref(json_object_get(old, "input"));
    json_object_del(old, "input");
    json_t *mine = json_deep_copy(meta);
    if (mine)
        json_object_del(mine, "input");
    g1_status place = mine ? dump_place(path, old, mine) : G1_OK;
    if (place != G1_OK) {
        json_decref(mine);
        json_decref(old);
        json_decref(input);
        return place;
    }
    char msg[600];
    int d = mine ? g1_json_differ("", mine, old, "this run", "the file's record", msg, sizeof msg)
                 : (snprintf(msg, sizeof msg, "out of memory"), 1);
    json_decref(mine);
    json_decref(old);
    if (d)
        json_decref(input);
    else
        *old_input = input;
    if (d)
        return G1_FAIL(G1_ERR_ARG, "cannot resume with other settings than the output was made with: %s "
                                   "(record: %s); use the same settings, or run without --resume", msg, path);
    return G1_OK;
}

g1_status g1_resume_scan(const char *partial, json_t **done_ids)
{
    *done_ids = NULL;
    FILE *f = g1_fopen_own(partial, "r+");
    if (!f && errno == ELOOP)
        return G1_FAIL(G1_ERR_ARG, "cannot resume: %s is a symbolic link, not the file an interrupted run left "
                                   "(a resume would cut and append to the file it names): remove it", partial);
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
        json_t *o = json_loadb(buf, (size_t)n, JSON_ALLOW_NUL, &err);
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
