/* grok1-convert: the released Grok-1 checkpoint (ckpt-0/, 770 pickle files)
 * to one HDF5 checkpoint (format v1), without ever unpickling: the pickle
 * scanner finds the payloads, the writer streams them one expert at a time.
 * Usage errors exit 2, anything else 1; never leaves a file under OUT.h5
 * unless the conversion (and --verify, when asked) succeeded. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "config_json.h"
#include "convert.h"
#include "durable.h"
#include "cli_out.h"
#include "g1_version.h"
#include "h5util.h"

static const char usage_text[] =
    "usage: grok1-convert [--config grok-1|FILE.json] [--layers A-B [--no-embedding]] [--verify]\n"
    "                     [--force] CKPT_DIR OUT.h5\n"
    "\n"
    "Converts xAI's released Grok-1 checkpoint (CKPT_DIR = ckpt-0/ with tensor00000_000 ..\n"
    "tensor00769_000, Python pickles) to the runner's HDF5 checkpoint. The pickles are scanned,\n"
    "never unpickled: only numpy arrays and QuantizedWeight8bit objects are accepted.\n"
    "  --config NAME|FILE  hyper-parameters: grok-1 (default), another preset, or a JSON object\n"
    "                      by the HDF5 attribute names over the grok-1 values (smaller models\n"
    "                      laid out like the release)\n"
    "  --layers A-B        convert only layers A..B (inclusive) with the embedding and final\n"
    "                      norm: one part of a checkpoint in parts, which grok1-link joins\n"
    "                      (the runner refuses a part alone as a full model)\n"
    "  --no-embedding      with --layers: leave the embedding out (the final norm stays), for\n"
    "                      the parts whose embedding another part carries (3.2 GB less each)\n"
    "  --verify            re-read the output and compare every tensor with the release files\n"
    "  --force             replace OUT.h5 when it exists (refused otherwise, before any work;\n"
    "                      the old file is replaced only by a complete new one)\n"
    "  --help              this text\n"
    "  --version           the version\n"
    "OUT.h5 is written as OUT.h5.tmp.<pid> (with --verify then OUT.h5.unverified) and renamed;\n"
    "a symbolic link is written through (the file it names is replaced, the link kept); a\n"
    "device, FIFO or directory, a release file or the --config file is refused (exit 2).\n"
    "Every tensor gets its CRC-32 (one per expert), which each load compares and\n"
    "grok1-checksum checks wherever the file is copied.\n"
    "Progress (files, bytes, MB/s, ETA) goes to stderr; the summary line (with peak memory) to stdout.\n";

typedef struct opts {
    const char *config, *dir, *out;
    const char *path; /* where OUT is written: the file a symbolic link names, or OUT */
    int a, b; /* --layers A-B; a < 0: all */
    int verify;
    int no_embedding;
    int force;
} opts;

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "grok1-convert: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(grok1-convert --help for usage)\n");
    return 2;
}

static int parse_layers(const char *v, opts *o)
{
    char *end;
    errno = 0;
    long a = strtol(v, &end, 10), b;
    if (errno || end == v || *end != '-')
        return 0;
    const char *s = end + 1;
    b = strtol(s, &end, 10);
    if (errno || end == s || *end || a < 0 || b < a || b > 100000)
        return 0;
    o->a = (int)a;
    o->b = (int)b;
    return 1;
}

/* Returns -1 to go on, or an exit code (0 after --help or --version, 1 if stdout lost it). */
static int parse_args(int argc, char **argv, opts *o)
{
    *o = (opts){.config = "grok-1", .a = -1};
    int npos = 0, config_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return g1_stdout_done("grok1-convert");
        }
        if (!strcmp(a, "--version")) {
            printf("grok1-convert %s\n", G1_VERSION);
            return g1_stdout_done("grok1-convert");
        }
        if (!strcmp(a, "--verify")) {
            o->verify = 1;
            continue;
        }
        if (!strcmp(a, "--no-embedding")) {
            o->no_embedding = 1;
            continue;
        }
        if (!strcmp(a, "--force")) {
            o->force = 1;
            continue;
        }
        if (strncmp(a, "--", 2) || !a[2]) {
            if (npos == 2)
                return usage_error("unexpected argument '%s' (CKPT_DIR and OUT.h5 already given)", a);
            *(npos++ ? &o->out : &o->dir) = a;
            continue;
        }
        size_t n = strcspn(a, "=");
        /* the name first: an unknown option is unknown, whether a value follows or not */
        if (!(n == 8 && (!strncmp(a, "--config", n) || !strncmp(a, "--layers", n))))
            return usage_error("unknown option '%s'", a);
        if (a[n])
            val = a + n + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else
            return usage_error("option %s needs a value", a);
        /* an option given twice is refused, as grok1-run does */
        if (!strncmp(a, "--config", n) && n == 8) {
            if (config_given)
                return usage_error("--config is given twice (then %s): give it once", val);
            o->config = val;
            config_given = 1;
        } else { /* --layers */
            if (o->a >= 0)
                return usage_error("--layers is given twice (then %s): give it once", val);
            if (!parse_layers(val, o))
                return usage_error("--layers %s: expected A-B with 0 <= A <= B, e.g. 0-3", val);
        }
    }
    if (npos < 2)
        return usage_error("expected CKPT_DIR and OUT.h5%s", "");
    if (o->no_embedding && o->a < 0)
        return usage_error("--no-embedding makes a part: give --layers A-B too%s", "");
    if (!*o->out)
        return usage_error("empty output name%s", "");
    return -1;
}

static volatile sig_atomic_t interrupted;
static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Convert into `path` (temporary name, then rename by the writer). */
static g1_status write_h5(const cv_job *job, const char *path)
{
    g1_ckpt_writer *wr;
    G1_TRY(g1_ckpt_writer_create(path, &job->cfg, job->blocks, job->l0, job->l1, job->with_embedding, &wr));
    cv_progress p;
    cv_progress_start(&p, "convert", job->total_bytes, job->n_files, &interrupted);
    g1_status st = cv_copy(job, wr, &p);
    if (st != G1_OK) {
        fputc('\n', stderr);
        g1_ckpt_writer_abort(wr);
        return st;
    }
    cv_progress_end(&p);
    return g1_ckpt_writer_finish(wr);
}

/* With --verify the file gets its final name only after the check. */
static g1_status convert(const cv_job *job, const opts *o)
{
    if (!o->verify)
        return write_h5(job, o->path);
    size_t n = strlen(o->path) + 16;
    char *tmp = malloc(n);
    if (!tmp)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    snprintf(tmp, n, "%s.unverified", o->path);
    g1_status st = write_h5(job, tmp);
    if (st == G1_OK) {
        cv_progress p;
        cv_progress_start(&p, "verify", job->total_bytes, job->n_files, &interrupted);
        st = cv_verify(job, tmp, &p);
        if (st == G1_OK)
            cv_progress_end(&p);
        else
            fputc('\n', stderr);
        if (st == G1_OK)
            st = g1_rename_durable(tmp, o->path);
        if (st != G1_OK)
            remove(tmp);
    }
    free(tmp);
    return st;
}

static int tool_main(int argc, char **argv)
{
    opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;
    uint16_t probe = 1;
    if (*(uint8_t *)&probe != 1) {
        fprintf(stderr, "grok1-convert: this converter needs a little-endian machine\n");
        return 1;
    }
    g1_config cfg;
    if (g1_config_from_arg(o.config, &cfg) != G1_OK || g1_config_validate(&cfg) != G1_OK) {
        fprintf(stderr, "grok1-convert: %s\n", g1_last_error());
        return 2;
    }
    int l0 = o.a < 0 ? 0 : o.a, l1 = o.a < 0 ? cfg.num_layers : o.b + 1;
    if (l1 > cfg.num_layers) {
        fprintf(stderr, "grok1-convert: --layers %d-%d: the model has layers 0-%d only\n", o.a, o.b,
                cfg.num_layers - 1);
        return 2;
    }
    /* hours of work must not end by replacing a checkpoint by mistake, nor
     * a device or FIFO (renamed over), a symbolic link (written through, the
     * link kept) or an input (a release file, the --config file) */
    char *through = NULL;
    if (g1_h5_output_path("", o.out, &through) != G1_OK) {
        fprintf(stderr, "grok1-convert: %s\n", g1_last_error());
        return 2;
    }
    o.path = through ? through : o.out;
    char outdir[PATH_MAX];
    g1_dir_of(o.path, outdir, sizeof outdir);
    const char *slash = strrchr(o.path, '/'), *base = slash ? slash + 1 : o.path;
    struct stat sb;
    int there = stat(o.path, &sb) == 0;
    if (g1_same_file(o.path, o.config) ||
        (there && g1_same_file(outdir, o.dir) && !strncmp(base, "tensor", 6))) {
        fprintf(stderr, "grok1-convert: %s is one of the inputs (%s): give another name\n", o.out,
                g1_same_file(o.path, o.config) ? "the --config file" : "a file of CKPT_DIR");
        free(through);
        return 2;
    }
    if (!o.force && there) {
        fprintf(stderr, "grok1-convert: %s exists: give --force to replace it (the old file is replaced only by a "
                        "complete new one), or another name\n", o.out);
        free(through);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    double t0 = cv_now();
    cv_job job;
    g1_status st = cv_plan(o.dir, &cfg, l0, l1, !o.no_embedding, &job);
    if (st == G1_OK)
        st = convert(&job, &o);
    if (st != G1_OK) {
        fprintf(stderr, "grok1-convert: %s\n", g1_last_error());
        fprintf(stderr, "grok1-convert: nothing written to %s\n", o.out);
        cv_job_free(&job);
        free(through);
        return 1;
    }
    double t = cv_now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("grok1-convert: wrote %s: layers %d-%d of %d%s, %d files, %.1f MB in %.2f s (%.0f MB/s)%s; "
           "peak memory %.1f MB\n", o.out, l0, l1 - 1, cfg.num_layers, o.no_embedding ? " without the embedding" : "",
           job.n_files, (double)job.total_bytes / 1e6, t,
           t > 0 ? (double)job.total_bytes / 1e6 / t : 0.0, o.verify ? ", verified" : "",
           (double)ru.ru_maxrss / 1024.0);
    cv_job_free(&job);
    free(through);
    return 0;
}

/* A file that failed to close (a full disk) must not reach HDF5's shutdown
 * (g1_h5_end). */
int main(int argc, char **argv)
{
    int code = tool_main(argc, argv);
    g1_h5_end(code);
    return code;
}
