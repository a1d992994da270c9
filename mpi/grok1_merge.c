/* grok1-merge: join the outputs of `grok1-run --shard K/N` (K = 0..N-1)
 * into the output one unsharded run writes: result m of the input is line
 * m / N of shard m % N. Every shard must be finished, all N present once,
 * made from the same input with the same settings (their meta files say
 * so), and together they must answer every request of the input; the
 * result is written to OUT.merge.tmp, then renamed to OUT, with
 * OUT.meta.json (the shards' meta without the shard) beside it. Nothing is
 * left at OUT when anything is wrong. No MPI. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "progress.h"
#include "resume.h"
#include "status.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: grok1-merge --input IN.jsonl --output OUT.jsonl SHARD.jsonl...\n"
"\n"
"Joins the outputs of `grok1-run --shard K/N` for K = 0 .. N-1 (in any order)\n"
"into the file one run without --shard writes: the results in input order,\n"
"byte for byte, and OUT.meta.json beside it (the shards' settings, without the\n"
"shard). Refused, with nothing written, unless every shard is finished (its\n"
"final name exists: a shard with only SHARD.partial is still running or was\n"
"interrupted: run it again with --resume), each of the N is given once, and all\n"
"were made from the same input, model and settings (SHARD.meta.json), and\n"
"together they answer every request of IN.\n"
"Logits dumps are not merged: each shard's holds its requests' datasets under\n"
"their input line numbers (docs/RUN.md).\n"
"\n"
"  --input FILE     the input the shards read: it must still be the file their\n"
"                   meta files record, and its requests are counted\n"
"  --output FILE    the merged results (must not exist); - for stdout (no meta file)\n"
"  --help           this text\n"
"\n"
"Exit status: 0 merged; 1 the shards do not fit together or a file cannot be\n"
"read or written (the message says which); 2 usage error.\n");
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

typedef struct shard {
    const char *path;
    int k, n;
    json_t *meta; /* without settings.shard and settings.dump_logits */
    FILE *f;
} shard;

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
    if (st == G1_OK) {
        json_object_del(set, "shard");
        json_object_del(set, "dump_logits"); /* each shard has a dump of its own, or none */
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

/* Round robin: result m from shard m % N. The first shard to run out ends
 * the input; every other must be at its end then too. out NULL: only check
 * and count. */
static g1_status join(shard *by_k, int n, FILE *out, const char *out_name, long long *total)
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

static g1_status merge(const char *in_path, const char *out_path, int nf, char **files)
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
    }
    /* the input: the one recorded (when the shards read a file), and how
     * many requests the merged output must hold */
    json_t *rec = NULL, *want = st == G1_OK ? json_object_get(by_k[0].meta, "input") : NULL;
    if (st == G1_OK && want && (st = g1_input_record(in_path, &rec)) == G1_OK && !json_equal(rec, want)) {
        char msg[700];
        g1_json_differ("input", rec, want, in_path, by_k[0].path, msg, sizeof msg);
        st = G1_FAIL(G1_ERR_ARG, "%s is not the input the shards answer (%s, per %s.meta.json): give that input "
                                 "(if requests were appended since, run the shards again with --resume)",
                     in_path, msg, by_k[0].path);
    }
    json_decref(rec);
    int64_t requests = st == G1_OK ? g1_count_requests(in_path) : 0;
    if (st == G1_OK && requests < 0)
        st = G1_FAIL(G1_ERR_IO, "cannot read the input %s", in_path);
    int to_stdout = !strcmp(out_path, "-");
    char tmp[4096] = "";
    char *meta_path = NULL;
    FILE *out = NULL;
    if (st == G1_OK && !to_stdout) {
        meta_path = g1_meta_path(out_path);
        snprintf(tmp, sizeof tmp, "%s.merge.tmp", out_path);
        if (!meta_path)
            st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
        else if (exists(out_path) || exists(meta_path))
            st = G1_FAIL(G1_ERR_ARG, "%s exists: grok1-merge does not overwrite results; remove it (and %s) or "
                                     "choose another --output", exists(out_path) ? out_path : meta_path, meta_path);
        else if (!(out = fopen(tmp, "w")))
            st = G1_FAIL(G1_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    } else if (st == G1_OK) {
        out = stdout;
    }
    for (int k = 0; k < n && st == G1_OK; k++)
        if (!(by_k[k].f = fopen(by_k[k].path, "r")))
            st = G1_FAIL(G1_ERR_IO, "cannot open %s: %s", by_k[k].path, strerror(errno));
    /* check everything before the first byte goes out (stdout cannot be
     * taken back), then write */
    long long total = 0;
    if (st == G1_OK)
        st = join(by_k, n, NULL, NULL, &total);
    if (st == G1_OK && total != requests)
        st = G1_FAIL(G1_ERR_FORMAT, "the shards hold %lld results, but %s has %lld requests: %s", total, in_path,
                     (long long)requests,
                     total < requests ? "a shard's output was cut short (its last results are missing)"
                                      : "they answer another input");
    for (int k = 0; k < n && st == G1_OK; k++)
        if (fseek(by_k[k].f, 0, SEEK_SET) != 0)
            st = G1_FAIL(G1_ERR_IO, "cannot read %s again: %s", by_k[k].path, strerror(errno));
    if (st == G1_OK)
        st = join(by_k, n, out, to_stdout ? "standard output" : tmp, &total);
    if (out && fflush(out) != 0 && st == G1_OK)
        st = G1_FAIL(G1_ERR_IO, "writing %s failed: %s", to_stdout ? "standard output" : tmp, strerror(errno));
    if (out && !to_stdout) {
        if (fclose(out) != 0 && st == G1_OK)
            st = G1_FAIL(G1_ERR_IO, "writing %s failed: %s", tmp, strerror(errno));
        /* the results first, then their meta file: a merge killed between
         * the two leaves a complete OUT (no meta), never a meta file that
         * would make the next merge refuse */
        if (st == G1_OK && rename(tmp, out_path) != 0)
            st = G1_FAIL(G1_ERR_IO, "cannot rename %s to %s: %s", tmp, out_path, strerror(errno));
        if (st != G1_OK)
            unlink(tmp);
        else
            st = g1_meta_write(meta_path, by_k[0].meta);
    }
    if (st == G1_OK)
        fprintf(stderr, "grok1-merge: %lld results from %d shards written to %s\n", total, n,
                to_stdout ? "standard output" : out_path);
    for (int k = 0; by_k && k < n; k++)
        if (by_k[k].f)
            fclose(by_k[k].f);
    for (int i = 0; i < nf; i++)
        json_decref(sh[i].meta);
    free(by_k);
    free(sh);
    free(meta_path);
    return st;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"input", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *output = NULL, *input = NULL;
    opterr = 0;
    int o;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (o) {
        case 'o': output = optarg; break;
        case 'i': input = optarg; break;
        case 'h': usage(stdout); return 0;
        case ':': fprintf(stderr, "grok1-merge: error: option %s needs a value (see --help)\n", argv[optind - 1]); return 2;
        default: fprintf(stderr, "grok1-merge: error: unknown option %s (see --help)\n", argv[optind - 1]); return 2;
        }
    }
    if (!output || !input || optind >= argc) {
        fprintf(stderr, "grok1-merge: error: %s (see --help)\n",
                !input ? "--input is required" : !output ? "--output is required" : "no shard outputs given");
        return 2;
    }
    g1_status st = merge(input, output, argc - optind, argv + optind);
    if (st != G1_OK) {
        fprintf(stderr, "grok1-merge: error: %s\n", g1_last_error());
        return 1;
    }
    return 0;
}
