/* grok1-run: score or complete JSONL requests with a Grok-1 checkpoint (or a
 * synthetic model). This file is the command line and the file handling;
 * the scheduler is driver.c. One process for now: multi-rank runs come with
 * the distributed runtime. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "config.h"
#include "driver.h"
#include "engine.h"
#include "requests.h"
#include "status.h"
#include "synth.h"
#include "weights.h"
#include "world.h"
#if G1_HAVE_HDF5
#include "ckpt.h"
#endif

enum { EXIT_DATA = 1, EXIT_USAGE = 2 };

typedef struct cli {
    const char *checkpoint, *input, *output, *dump_logits, *synthetic;
    g1_run_mode mode;
    int have_mode;
    int max_new_tokens, batch_size, max_batch_tokens, threads;
    unsigned long long seed;
} cli;

static void usage(FILE *f)
{
    fprintf(f,
"usage: grok1-run --checkpoint FILE.h5 --mode score|generate --input IN.jsonl --output OUT.jsonl [options]\n"
"       grok1-run --synthetic tiny|small|grok-1 [--seed S] --mode ... --input ... --output ...\n"
"\n"
"Runs Grok-1 over a file of JSON requests, one per line, and writes one JSON\n"
"result per request, one per line, IN INPUT ORDER: a request that finishes\n"
"early is held back until every request before it has been written.\n"
"\n"
"Model (exactly one):\n"
"  --checkpoint FILE.h5      a grok1-hdf5 checkpoint (from the converter or grok1-mkckpt)\n"
"  --synthetic PRESET        build deterministic synthetic weights in memory instead\n"
"                            (tiny, small, grok-1); the same weights as\n"
"                            grok1-mkckpt --config PRESET --seed S\n"
"  --seed S                  seed of the synthetic weights (default 0)\n"
"\n"
"Work:\n"
"  --mode score              request {\"id\", \"prompt_ids\"} -> {\"id\", \"prompt_tokens\",\n"
"                            \"logprobs\" (n-1: log p(token i | tokens < i), i = 1..n-1),\n"
"                            \"sum_logprob\", \"greedy\" (every token from the 2nd on is the argmax)}\n"
"  --mode generate           request {\"id\", \"prompt_ids\", \"max_new_tokens\"?} -> {\"id\",\n"
"                            \"prompt_tokens\", \"completion_ids\", \"finish_reason\": \"eos\"|\"length\"};\n"
"                            greedy decoding; eos is not included in completion_ids\n"
"  --input FILE              requests (JSON Lines; blank lines are skipped); - for stdin\n"
"  --output FILE             results; written to FILE.partial and renamed to FILE when\n"
"                            every request succeeded; - for stdout\n"
"  --dump-logits FILE.h5     score mode: also write the float32 logits of every position,\n"
"                            dataset /logits/<k> of shape (n, V), k = 0-based input line number\n"
"  --max-new-tokens N        generate: default completion limit (default 100; a request's\n"
"                            \"max_new_tokens\" overrides it; also limited by max_seq_len)\n"
"\n"
"Performance:\n"
"  --batch-size B            sequence slots run together (continuous batching; default 8)\n"
"  --max-batch-tokens T      most tokens per forward step: decode tokens plus prompt\n"
"                            chunks (default 256)\n"
"  --threads N               CPU threads (default: OpenMP's default)\n"
"  --help                    this text\n"
"\n"
"Exit status: 0 success; 1 bad input data, unreadable or mismatched checkpoint,\n"
"or a failure while running; 2 bad command line. Errors go to stderr as\n"
"'grok1-run: error: <message>'; a summary line goes to stderr at the end.\n"
"Run one process: multi-rank runs come with the distributed runtime.\n");
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("grok1-run: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(see grok1-run --help)\n", stderr);
    return -1;
}

static int parse_int(const char *opt, const char *text, int lo, int *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > INT_MAX)
        return usage_error("%s %s: expected an integer >= %d", opt, text, lo);
    *out = (int)v;
    return 0;
}

/* 0: run; 1: --help was printed; -1: error printed. */
static int parse_args(int argc, char **argv, cli *c)
{
    enum { O_CKPT = 256, O_MODE, O_IN, O_OUT, O_DUMP, O_MNT, O_BS, O_MBT, O_THR, O_SYN, O_SEED, O_HELP };
    static const struct option opts[] = {
        {"checkpoint", required_argument, NULL, O_CKPT},   {"mode", required_argument, NULL, O_MODE},
        {"input", required_argument, NULL, O_IN},          {"output", required_argument, NULL, O_OUT},
        {"dump-logits", required_argument, NULL, O_DUMP},  {"max-new-tokens", required_argument, NULL, O_MNT},
        {"batch-size", required_argument, NULL, O_BS},     {"max-batch-tokens", required_argument, NULL, O_MBT},
        {"threads", required_argument, NULL, O_THR},       {"synthetic", required_argument, NULL, O_SYN},
        {"seed", required_argument, NULL, O_SEED},         {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    *c = (cli){.max_new_tokens = 100, .batch_size = 8, .max_batch_tokens = 256};
    opterr = 0;
    int o, r = 0;
    while (r == 0 && (o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (o) {
        case O_CKPT: c->checkpoint = optarg; break;
        case O_IN: c->input = optarg; break;
        case O_OUT: c->output = optarg; break;
        case O_DUMP: c->dump_logits = optarg; break;
        case O_SYN: c->synthetic = optarg; break;
        case O_MNT: r = parse_int("--max-new-tokens", optarg, 0, &c->max_new_tokens); break;
        case O_BS: r = parse_int("--batch-size", optarg, 1, &c->batch_size); break;
        case O_MBT: r = parse_int("--max-batch-tokens", optarg, 1, &c->max_batch_tokens); break;
        case O_THR: r = parse_int("--threads", optarg, 1, &c->threads); break;
        case O_HELP: usage(stdout); return 1;
        case O_MODE:
            if (g1_run_mode_parse(optarg, &c->mode) != G1_OK)
                return usage_error("%s", g1_last_error());
            c->have_mode = 1;
            break;
        case O_SEED: {
            char *end = NULL;
            errno = 0;
            c->seed = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-')
                return usage_error("--seed %s: expected a non-negative integer", optarg);
            break;
        }
        case ':': return usage_error("option %s needs a value", argv[optind - 1]);
        default: return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    if (r)
        return r;
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (!c->have_mode)
        return usage_error("--mode score|generate is required");
    if (!c->input || !c->output)
        return usage_error("--input and --output are required (- for stdin / stdout)");
    if (!!c->checkpoint == !!c->synthetic)
        return usage_error("give exactly one of --checkpoint FILE.h5 and --synthetic PRESET");
    if (c->dump_logits && c->mode != G1_MODE_SCORE)
        return usage_error("--dump-logits works with --mode score only");
    if (c->dump_logits && !strcmp(c->dump_logits, "-"))
        return usage_error("--dump-logits needs a file name (an HDF5 file cannot go to stdout)");
#if !G1_HAVE_HDF5
    if (c->checkpoint || c->dump_logits)
        return usage_error("%s needs HDF5, but this grok1-run was built without HDF5: use --synthetic, or "
                           "rebuild with HDF5 (meson -Dhdf5=enabled)", c->checkpoint ? "--checkpoint" : "--dump-logits");
#endif
    return 0;
}

/* ---- model ---- */

typedef struct model {
    g1_config cfg;
    g1_weights w;
    int have_w;
#if G1_HAVE_HDF5
    g1_ckpt *ck;
#endif
} model;

/* Read the config (cheap, checks the file); weights come in model_load. */
static g1_status model_open(const cli *c, model *m)
{
    if (c->synthetic) {
        G1_TRY(g1_config_preset(c->synthetic, &m->cfg));
        return g1_config_validate(&m->cfg);
    }
#if G1_HAVE_HDF5
    G1_TRY(g1_ckpt_open(c->checkpoint, &m->ck));
    m->cfg = *g1_ckpt_config(m->ck);
    return G1_OK;
#else
    return G1_FAIL(G1_ERR_ARG, "built without HDF5");
#endif
}

static g1_status model_load(const cli *c, model *m)
{
    const g1_config *cfg = &m->cfg;
    if (c->synthetic) {
        int blocks[G1_NUM_QMAT];
        g1_synth_blocks(cfg, blocks);
        G1_TRY(g1_weights_alloc(&m->w, cfg, 0, cfg->num_layers, 0, cfg->num_experts, blocks, 1));
        m->have_w = 1;
        g1_synth s = {.cfg = *cfg, .seed = c->seed};
        return g1_synth_weights(&s, &m->w);
    }
#if G1_HAVE_HDF5
    g1_status st = g1_ckpt_load(m->ck, 0, cfg->num_layers, 0, cfg->num_experts, 1, &m->w);
    m->have_w = st == G1_OK;
    g1_ckpt_close(m->ck);
    m->ck = NULL;
    return st;
#else
    return G1_FAIL(G1_ERR_ARG, "built without HDF5");
#endif
}

static void model_free(model *m)
{
#if G1_HAVE_HDF5
    if (m->ck)
        g1_ckpt_close(m->ck);
#endif
    if (m->have_w)
        g1_weights_free(&m->w);
}

/* ---- files ---- */

typedef struct files {
    FILE *in, *out;
    char *partial; /* OUT.partial, NULL for stdout */
#if G1_HAVE_HDF5
    g1_logits_file *logits;
#endif
} files;

#if G1_HAVE_HDF5
static g1_status dump_write(void *ctx, int64_t k, int n_rows_total, int row0, int nrows, const float *logits)
{
    return g1_logits_file_write(ctx, k, n_rows_total, row0, nrows, logits);
}
#endif

static g1_status files_open_input(const cli *c, files *f)
{
    if (!strcmp(c->input, "-")) {
        f->in = stdin;
        return G1_OK;
    }
    f->in = fopen(c->input, "r");
    if (!f->in)
        return G1_FAIL(G1_ERR_IO, "cannot open input %s: %s", c->input, strerror(errno));
    return G1_OK;
}

static g1_status files_open_outputs(const cli *c, const g1_config *cfg, files *f)
{
    if (!strcmp(c->output, "-")) {
        f->out = stdout;
    } else {
        size_t n = strlen(c->output) + sizeof ".partial";
        f->partial = malloc(n);
        if (!f->partial)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory");
        snprintf(f->partial, n, "%s.partial", c->output);
        f->out = fopen(f->partial, "w");
        if (!f->out)
            return G1_FAIL(G1_ERR_IO, "cannot create %s: %s", f->partial, strerror(errno));
    }
#if G1_HAVE_HDF5
    if (c->dump_logits)
        G1_TRY(g1_logits_file_create(c->dump_logits, cfg->vocab_size, &f->logits));
#else
    (void)cfg;
#endif
    return G1_OK;
}

/* Success: complete the logits file, then give OUT its final name, so OUT
 * exists only when everything is complete. Failure (ok == 0): leave
 * OUT.partial for inspection, create no final name. */
static g1_status files_close(const cli *c, files *f, int ok)
{
    g1_status st = G1_OK;
    if (f->in && f->in != stdin)
        fclose(f->in);
#if G1_HAVE_HDF5
    if (f->logits) {
        if (ok)
            st = g1_logits_file_finish(f->logits);
        else
            g1_logits_file_abort(f->logits);
        ok = ok && st == G1_OK;
    }
#endif
    if (f->out && f->out != stdout) {
        if (fclose(f->out) != 0 && ok)
            st = G1_FAIL(G1_ERR_IO, "writing %s failed: %s", f->partial, strerror(errno));
        else if (ok && rename(f->partial, c->output) != 0)
            st = G1_FAIL(G1_ERR_IO, "cannot rename %s to %s: %s", f->partial, c->output, strerror(errno));
    } else if (f->out == stdout && fflush(stdout) != 0 && ok) {
        st = G1_FAIL(G1_ERR_IO, "writing stdout failed: %s", strerror(errno));
    }
    free(f->partial);
    return st;
}

/* ---- run ---- */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static g1_status run(const cli *c, files *f, model *m)
{
    G1_TRY(files_open_input(c, f));
    G1_TRY(model_open(c, m));
    G1_TRY(files_open_outputs(c, &m->cfg, f));
    G1_TRY(model_load(c, m));

    g1_engine *e = NULL;
    g1_engine_opts eo = {.n_slots = c->batch_size, .max_batch = c->max_batch_tokens, .max_context = 0};
    G1_TRY(g1_engine_init(&e, &m->w, &eo, NULL));
    g1_driver_opts o = {.mode = c->mode,
                        .max_new_tokens = c->max_new_tokens,
                        .n_slots = c->batch_size,
                        .max_batch_tokens = c->max_batch_tokens};
#if G1_HAVE_HDF5
    g1_logits_sink sink = {.write = dump_write, .ctx = f->logits};
    if (f->logits)
        o.dump = &sink;
#endif
    g1_driver_stats s;
    double t0 = now_s();
    g1_status st = g1_driver_run(e, &o, f->in, f->out, &s);
    double dt = now_s() - t0;
    g1_engine_free(e);
    if (st == G1_OK) {
        int64_t tok = s.prompt_tokens + s.generated_tokens;
        fprintf(stderr,
                "grok1-run: %lld requests, %lld prompt tokens, %lld generated tokens, %.3f s, %.1f tokens/s\n",
                (long long)s.requests, (long long)s.prompt_tokens, (long long)s.generated_tokens, dt,
                dt > 0 ? (double)tok / dt : 0.0);
    }
    return st;
}

int main(int argc, char **argv)
{
    cli c;
    int r = parse_args(argc, argv, &c);
    if (r)
        return r > 0 ? 0 : EXIT_USAGE;

    g1_world world;
    if (g1_world_init(&argc, &argv, &world) != G1_OK) {
        fprintf(stderr, "grok1-run: error: %s\n", g1_last_error());
        g1_world_abort(EXIT_DATA);
    }
    if (world.size > 1) {
        if (world.rank == 0)
            fprintf(stderr, "grok1-run: error: started as %d processes; multi-rank runs come with the distributed "
                            "runtime; run one process\n", world.size);
        g1_world_finalize();
        return EXIT_USAGE;
    }
#ifdef _OPENMP
    if (c.threads > 0)
        omp_set_num_threads(c.threads);
#endif

    files f = {0};
    model m = {0};
    g1_status st = run(&c, &f, &m);
    if (st != G1_OK)
        fprintf(stderr, "grok1-run: error: %s\n", g1_last_error());
    g1_status st2 = files_close(&c, &f, st == G1_OK);
    if (st == G1_OK && st2 != G1_OK) {
        fprintf(stderr, "grok1-run: error: %s\n", g1_last_error());
        st = st2;
    }
    model_free(&m);
    g1_world_finalize();
    return st == G1_OK ? 0 : EXIT_DATA;
}
