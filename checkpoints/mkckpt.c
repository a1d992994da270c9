/* grok1-mkckpt: write a synthetic checkpoint (format v1) of any shape, with
 * the values g1_synth_weights puts in memory. Streams tensor by tensor, so
 * memory stays about one expert matrix whatever the model size.
 * Usage errors exit 2, runtime errors exit 1; never leaves a partial file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ckpt.h"
#include "config_json.h"
#include "durable.h"
#include "cli_out.h"
#include "g1_version.h"
#include "synth.h"
#include "h5util.h"

#define EMBED_SLAB_ROWS 256

static const char usage_text[] =
    "usage: grok1-mkckpt --config tiny|small|grok-1|FILE.json [--set key=value]...\n"
    "                    [--layers N] [--part A-B [--no-embedding]] [--qk-gain G]\n"
    "                    --seed S --out FILE.h5\n"
    "\n"
    "Writes a synthetic Grok-1 checkpoint (HDF5, format grok1-hdf5 v1) whose\n"
    "weights are a pure function of the seed.\n"
    "  --config NAME|FILE  preset, or a JSON object of hyper-parameters (the\n"
    "                      grok-1 values, overridden by the keys given)\n"
    "  --set key=value     override one hyper-parameter (repeatable)\n"
    "  --layers N          keep only the first N layers (num_layers = N)\n"
    "  --part A-B          write only layers A..B (inclusive) of the model, with the\n"
    "                      embedding and final norm: one part of a checkpoint in\n"
    "                      parts, joined by grok1-link (num_layers stays the model's)\n"
    "  --no-embedding      leave the embedding out (the final norm stays): a part\n"
    "                      whose embedding another part carries\n"
    "  --qk-gain G         multiply the q and k scales by G (default 1)\n"
    "  --seed S            unsigned 64-bit seed\n"
    "  --out FILE          output file (written as FILE.tmp.<pid>, then renamed); a\n"
    "                      symbolic link is written through (the file it names is\n"
    "                      replaced, the link kept); a device, FIFO or directory,\n"
    "                      or the --config file, is refused (exit 2)\n"
    "  --help              this text\n"
    "  --version           the version\n";

typedef struct opts {
    const char *config, *out;
    const char *sets[64];
    int n_sets;
    int layers;      /* 0: the config's */
    int part_a, part_b; /* --part A-B; part_a < 0: every layer */
    int no_embedding;
    double qk_gain;
    unsigned long long seed;
    int have_seed;
} opts;

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "grok1-mkckpt: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(grok1-mkckpt --help for usage)\n");
    return 2;
}

static int parse_num(const char *s, int is_int, double *out)
{
    char *end = NULL;
    errno = 0;
    *out = is_int ? (double)strtoll(s, &end, 10) : strtod(s, &end);
    return !errno && end != s && !*end;
}

/* 1 when opt is an option that takes a value (take_option's names): an
 * unknown option is called unknown, not one that "needs a value". */
static int takes_value(const char *opt)
{
    static const char *const names[] = {"--config", "--out", "--set", "--layers", "--part", "--qk-gain", "--seed"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(opt, names[i]))
            return 1;
    return 0;
}

/* One option with its value; returns 0 or an exit code. */
static int take_option(opts *o, const char *opt, const char *val)
{
    double x;
    if (!strcmp(opt, "--config"))
        o->config = val;
    else if (!strcmp(opt, "--out"))
        o->out = val;
    else if (!strcmp(opt, "--set")) {
        if (o->n_sets == (int)(sizeof o->sets / sizeof o->sets[0]))
            return usage_error("too many --set options%s", "");
        o->sets[o->n_sets++] = val;
    } else if (!strcmp(opt, "--layers")) {
        if (!parse_num(val, 1, &x) || x < 1 || x > 1000)
            return usage_error("--layers %s: expected an integer in 1..1000", val);
        o->layers = (int)x;
    } else if (!strcmp(opt, "--part")) {
        char *end;
        errno = 0;
        long a = strtol(val, &end, 10), b = -1;
        if (!errno && end != val && *end == '-') {
            const char *s = end + 1;
            b = strtol(s, &end, 10);
            if (errno || end == s || *end)
                b = -1;
        }
        if (a < 0 || b < a || b > 1000)
            return usage_error("--part %s: expected A-B with 0 <= A <= B, e.g. 0-3", val);
        o->part_a = (int)a;
        o->part_b = (int)b;
    } else if (!strcmp(opt, "--qk-gain")) {
        if (!parse_num(val, 0, &x) || !(x > 0) || x > 1e6)
            return usage_error("--qk-gain %s: expected a positive number", val);
        o->qk_gain = x;
    } else if (!strcmp(opt, "--seed")) {
        char *end = NULL;
        errno = 0;
        o->seed = strtoull(val, &end, 0);
        if (errno || end == val || *end || *val == '-')
            return usage_error("--seed %s: expected an unsigned integer", val);
        o->have_seed = 1;
    } else
        return usage_error("unknown option '%s'", opt);
    return 0;
}

/* Returns -1 to go on, or an exit code (0 after --help or --version, 1 if stdout lost it). */
static int parse_args(int argc, char **argv, opts *o)
{
    *o = (opts){.qk_gain = 1.0, .part_a = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return g1_stdout_done("grok1-mkckpt");
        }
        if (!strcmp(a, "--version")) {
            printf("grok1-mkckpt %s\n", G1_VERSION);
            return g1_stdout_done("grok1-mkckpt");
        }
        if (!strcmp(a, "--no-embedding")) {
            o->no_embedding = 1;
            continue;
        }
        if (strncmp(a, "--", 2))
            return usage_error("unexpected argument '%s'", a);
        char opt[32];
        const char *eq = strchr(a, '='), *val;
        if (eq && (size_t)(eq - a) < sizeof opt) { /* --opt=value */
            snprintf(opt, sizeof opt, "%.*s", (int)(eq - a), a);
            val = eq + 1;
        } else {
            if (strlen(a) >= sizeof opt)
                return usage_error("unknown option '%s'", a);
            snprintf(opt, sizeof opt, "%s", a);
            if (!takes_value(opt))
                return usage_error("unknown option '%s'", a);
            if (i + 1 >= argc)
                return usage_error("option %s needs a value", a);
            val = argv[++i];
        }
        int rc = take_option(o, opt, val);
        if (rc)
            return rc;
    }
    if (!o->config)
        return usage_error("missing --config%s", "");
    if (o->no_embedding && o->part_a < 0)
        return usage_error("--no-embedding makes a part: give --part A-B too%s", "");
    if (!o->have_seed)
        return usage_error("missing --seed%s", "");
    if (!o->out || !*o->out)
        return usage_error("missing --out%s", "");
    return -1;
}

static g1_status build_config(const opts *o, g1_config *cfg)
{
    G1_TRY(g1_config_from_arg(o->config, cfg));
    for (int i = 0; i < o->n_sets; i++) {
        char key[64];
        const char *eq = strchr(o->sets[i], '=');
        if (!eq || eq == o->sets[i] || (size_t)(eq - o->sets[i]) >= sizeof key)
            return G1_FAIL(G1_ERR_ARG, "--set %s: expected key=value", o->sets[i]);
        snprintf(key, sizeof key, "%.*s", (int)(eq - o->sets[i]), o->sets[i]);
        G1_TRY(g1_config_set(cfg, key, eq + 1));
    }
    if (o->layers > cfg->num_layers)
        return G1_FAIL(G1_ERR_ARG, "--layers %d: the model has only %d layers", o->layers, cfg->num_layers);
    if (o->layers)
        cfg->num_layers = o->layers;
    if (o->part_b >= cfg->num_layers)
        return G1_FAIL(G1_ERR_ARG, "--part %d-%d: the model has layers 0-%d only", o->part_a, o->part_b,
                       cfg->num_layers - 1);
    return g1_config_validate(cfg);
}

/* ---- streaming ---- */

static g1_status write_embedding(g1_ckpt_writer *wr, const g1_synth *s, int with_embedding)
{
    const g1_config *c = &s->cfg;
    float *buf = malloc((size_t)EMBED_SLAB_ROWS * c->emb_size * sizeof *buf);
    if (!buf)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    g1_status st = G1_OK;
    for (int64_t r = 0; with_embedding && r < c->vocab_size && st == G1_OK; r += EMBED_SLAB_ROWS) {
        int64_t n = c->vocab_size - r < EMBED_SLAB_ROWS ? c->vocab_size - r : EMBED_SLAB_ROWS;
        g1_synth_embedding_rows(s, r, n, buf);
        st = g1_ckpt_write_embedding_rows(wr, r, n, buf);
    }
    if (st == G1_OK) {
        g1_synth_final_norm(s, buf);
        st = g1_ckpt_write_final_norm(wr, buf);
    }
    free(buf);
    return st;
}

/* Scratch for one matrix (the largest kind) and one router. */
typedef struct scratch {
    int8_t *w;
    float *scale, *vec;
} scratch;

static g1_status write_layer(g1_ckpt_writer *wr, const g1_synth *s, const int blocks[G1_NUM_QMAT], int l,
                             scratch *t)
{
    for (int n = 0; n < G1_NUM_NORM; n++) {
        g1_synth_norm(s, l, (g1_norm_id)n, t->vec);
        G1_TRY(g1_ckpt_write_norm(wr, l, (g1_norm_id)n, t->vec));
    }
    g1_synth_router(s, l, t->vec);
    G1_TRY(g1_ckpt_write_router(wr, l, t->vec));
    for (int i = 0; i < G1_NUM_QMAT; i++) {
        int ne = i >= G1_MOE_GATE ? s->cfg.num_experts : 1;
        for (int e = 0; e < ne; e++) {
            g1_synth_qmat(s, l, (g1_qmat_id)i, e, blocks[i], t->w, t->scale);
            G1_TRY(g1_ckpt_write_qmat(wr, l, (g1_qmat_id)i, e, t->w, t->scale));
        }
    }
    return G1_OK;
}

static g1_status write_layers(g1_ckpt_writer *wr, const g1_synth *s, const int blocks[G1_NUM_QMAT], int l0, int l1)
{
    const g1_config *c = &s->cfg;
    size_t wmax = 0, smax = 0;
    for (int i = 0; i < G1_NUM_QMAT; i++) {
        int rows, cols;
        g1_qmat_shape(c, (g1_qmat_id)i, &rows, &cols);
        wmax = (size_t)rows * cols > wmax ? (size_t)rows * cols : wmax;
        smax = (size_t)blocks[i] * cols > smax ? (size_t)blocks[i] * cols : smax;
    }
    scratch t = {malloc(wmax), malloc(smax * sizeof(float)),
                 malloc((size_t)c->emb_size * c->num_experts * sizeof(float))};
    g1_status st = t.w && t.scale && t.vec ? G1_OK : G1_FAIL(G1_ERR_NOMEM, "out of memory (%zu bytes)", wmax);
    for (int l = l0; l < l1 && st == G1_OK; l++)
        st = write_layer(wr, s, blocks, l, &t);
    free(t.w);
    free(t.scale);
    free(t.vec);
    return st;
}

static g1_status write_checkpoint(const char *path, const g1_synth *s, int l0, int l1, int with_embedding)
{
    int blocks[G1_NUM_QMAT];
    g1_synth_blocks(&s->cfg, blocks);
    g1_ckpt_writer *wr;
    G1_TRY(g1_ckpt_writer_create(path, &s->cfg, blocks, l0, l1, with_embedding, &wr));
    g1_status st = write_embedding(wr, s, with_embedding);
    if (st == G1_OK)
        st = write_layers(wr, s, blocks, l0, l1);
    if (st != G1_OK) {
        g1_ckpt_writer_abort(wr);
        return st;
    }
    return g1_ckpt_writer_finish(wr);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int tool_main(int argc, char **argv)
{
    opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;
    g1_synth s = {.seed = o.seed, .qk_gain = o.qk_gain};
    if (build_config(&o, &s.cfg) != G1_OK) {
        fprintf(stderr, "grok1-mkckpt: %s\n", g1_last_error());
        return 2;
    }
    /* before any work: not a device, FIFO or folder (never renamed over), a
     * link written through, not the --config file */
    char *through = NULL;
    if (g1_h5_output_path("--out", o.out, &through) != G1_OK) {
        fprintf(stderr, "grok1-mkckpt: %s\n", g1_last_error());
        return 2;
    }
    const char *path = through ? through : o.out;
    if (g1_same_file(path, o.config)) {
        fprintf(stderr, "grok1-mkckpt: --out %s is the --config file %s: give another name\n", o.out, o.config);
        free(through);
        return 2;
    }
    double t0 = now();
    int l0 = o.part_a < 0 ? 0 : o.part_a, l1 = o.part_a < 0 ? s.cfg.num_layers : o.part_b + 1;
    if (write_checkpoint(path, &s, l0, l1, !o.no_embedding) != G1_OK) {
        fprintf(stderr, "grok1-mkckpt: %s\n", g1_last_error());
        free(through);
        return 1;
    }
    struct stat sb;
    long long bytes = stat(path, &sb) ? -1 : (long long)sb.st_size;
    free(through);
    if (o.part_a < 0)
        printf("grok1-mkckpt: wrote %s: %d layers, %lld bytes in %.2f s\n", o.out, s.cfg.num_layers, bytes,
               now() - t0);
    else
        printf("grok1-mkckpt: wrote %s: layers %d-%d of %d, %lld bytes in %.2f s\n", o.out, l0, l1 - 1,
               s.cfg.num_layers, bytes, now() - t0);
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
