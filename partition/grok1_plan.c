/* grok1-plan: print (and optionally write as JSON) the layout of a
 * P-stage x E-expert-slot job: layers and experts per rank, memory per rank,
 * stage costs. Only the command line; the planner is plan.c. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_opt.h"
#include "cli_out.h"
#include "config.h"
#include "g1_version.h"
#include "cuda/cuda_tune.h"
#include "durable.h"
#include "plan.h"
#include "status.h"
#if G1_HAVE_HDF5
#include "ckpt.h"
#endif

enum { EXIT_REFUSED = 1, EXIT_USAGE = 2 };

static void usage(FILE *f)
{
    fputs(
"usage: grok1-plan (--checkpoint FILE.h5 | --config tiny|small|grok-1|PATH.json)\n"
"                  --stages P --ep E [options]\n"
"\n"
"Plans a job of P x E ranks: rank r is pipeline stage r / E and expert slot r % E.\n"
"Stage s owns a contiguous range of layers (chosen to balance the bytes each\n"
"rank reads per decode step; stage 0 is lighter when rank 0's embedding,\n"
"un-embedding and sampling matter); expert slot e holds experts\n"
"[e*NE/E, (e+1)*NE/E) of each of its stage's layers. Prints one row per rank\n"
"(layers, experts, sequences, weights, KV cache, buffers, total) and the stage\n"
"costs. See docs/PLAN.md.\n"
"\n", f);
    fputs(
"  --checkpoint FILE.h5       the model's hyper-parameters from a checkpoint\n"
"  --config NAME|PATH.json    a preset or a JSON object of hyper-parameters\n"
"  --stages P                 pipeline stages (1..num_layers)\n"
"  --ep E                     expert slots per stage (divides num_experts)\n"
"  --mem-per-rank SIZE        memory per rank (80G, 512M, bytes); refuse plans\n"
"                             that do not fit (default: no limit)\n"
"  --batch-size B             sequence slots per micro-batch (default 8, as\n"
"                             grok1-run): M x B slots are served at once\n"
"  --slots N                  sequence slots served at once instead of M x B\n"
"  --context N                KV cache positions per slot (default max_seq_len);\n"
"  --max-context N            the same (grok1-run's name for it)\n"
"  --kv-cache f32|bf16        KV cache elements (default f32). bf16 with --backend\n"
"                             cuda: half the bytes; on the cpu backend bf16-rounded\n"
"                             values are kept as float32, the bytes of f32\n"
"  --max-batch-tokens N       tokens per forward step (default 256)\n"
"  --backend cpu|cuda         whose memory a rank's is (default cpu: host memory).\n"
"                             cuda: the GPU's, as grok1-run --backend cuda takes\n"
"                             it: the weights as uploaded and the engine's\n"
"                             buffers exactly as its check before the load counts\n"
"                             them (the KV caches at full context, as for cpu);\n"
"                             give --mem-per-rank the GPU's memory (a build\n"
"                             with CUDA; no GPU needed)\n"
"  --gpu-sms N                cuda: the GPU's multiprocessors (default 132: an\n"
"                             H100 SXM or H200; 114 an H100 PCIe, 108 an A100)\n"
"  --cuda-gemm bf16|bf16x2|f32, --cuda-tune KEY=VALUE[,...]\n"
"                             cuda: grok1-run's options of those names (they\n"
"                             change the buffers)\n"
"  --layers-per-stage a,b,..  the layer counts of the P stages instead of the\n"
"                             balanced cuts\n"
"  --bandwidth GBS            also print a bound on decode tokens/s from memory\n"
"                             bandwidth alone: GBS gigabytes (10^9) per second\n"
"                             per rank (an H100 SXM: about 3350; or what\n"
"                             bench_cuda_layer / bench_cpu measure), at empty\n"
"                             caches and at full context (docs/PLAN.md)\n", f);
    fputs(
"  --micro-batches M          micro-batches in flight (default P, as grok1-run):\n"
"                             the slots (M x B), the message buffers each rank\n"
"                             holds, and the decode bound\n"
"  --balance decode|prompt    what the cuts balance: the bytes a decode step\n"
"                             reads (default), or the FLOPs of a prompt token,\n"
"                             rank 0's un-embedding of every position included\n"
"                             (scoring jobs; grok1-run --plan takes the result)\n"
"  --tflops T                 also print a bound on prompt tokens/s (prefill,\n"
"                             scoring) from arithmetic alone: T TFLOP/s per rank\n"
"                             (what bench_cuda_layer measures for a cuBLAS GEMM)\n"
"  --threads N                CPU threads a rank runs (grok1-run --threads or\n"
"                             OMP_NUM_THREADS; default 64): cpu, every rank's\n"
"                             engine keeps a row of attention scores over the\n"
"                             context per thread, rank 0 a sampler (28 bytes a\n"
"                             vocabulary entry) per thread\n"
"  --dump-logits              count what grok1-run --dump-logits adds: rank 0\n"
"                             holds the rows its dump writer queues, 1 GiB (or\n"
"                             one write's rows when more, 64 MiB at most);\n"
"                             cpu only (host memory: a GPU's is not touched)\n"
"  --dump-buffer SIZE         the same with grok1-run --dump-buffer SIZE (implies\n"
"                             --dump-logits)\n"
"  --out PLAN.json            write the plan for grok1-run --plan (- for stdout;\n"
"                             a FIFO or device is written directly; a symbolic\n"
"                             link is written through, the link kept; a\n"
"                             directory or the --config/--checkpoint file is\n"
"                             refused, exit 2)\n"
"  --help                     this text\n"
"  --version                  the version\n"
"\n"
"Exit status: 0 planned, 1 refused (does not fit, impossible layout: the\n"
"message says what would work) or failed (an unreadable model file, out of\n"
"memory), 2 usage error.\n", f);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("grok1-plan: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(see grok1-plan --help)\n", stderr);
    return EXIT_USAGE;
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

/* A rate given in `unit`s (scale: its size in base units), > 0. */
static int parse_rate(const char *opt, const char *text, double scale, const char *unit, const char *example,
                      double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end) * scale;
    if (errno || end == text || *end || !(v > 0) || !isfinite(v))
        return usage_error("%s %s: expected %s, a number > 0 (e.g. %s)", opt, text, unit, example);
    *out = v;
    return 0;
}

/* "a,b,c" into a fresh array: 0, or the exit status (a usage error; out of
 * memory is a failed run, as every other failure past the command line) */
static int parse_list(const char *text, int **out, int *n)
{
    int cap = 1;
    for (const char *t = text; *t; t++)
        cap += *t == ',';
    int *v = malloc((size_t)cap * sizeof *v);
    if (!v) {
        fprintf(stderr, "grok1-plan: error: out of memory for the %d counts of --layers-per-stage\n", cap);
        return EXIT_REFUSED;
    }
    *n = 0;
    const char *t = text;
    for (;;) {
        char *end = NULL;
        errno = 0;
        long x = strtol(t, &end, 10);
        if (errno || end == t || x < 0 || x > INT_MAX || (*end && *end != ',')) {
            free(v);
            return usage_error("--layers-per-stage %s: expected comma-separated layer counts, e.g. 15,17,16,16",
                               text);
        }
        v[(*n)++] = (int)x;
        if (!*end)
            break;
        t = end + 1;
    }
    *out = v;
    return 0;
}

static int fail(void)
{
    fprintf(stderr, "grok1-plan: error: %s\n", g1_last_error());
    return EXIT_REFUSED;
}

int main(int argc, char **argv)
{
    enum { O_CKPT = 256, O_CONFIG, O_STAGES, O_EP, O_MEM, O_SLOTS, O_CTX, O_MBT, O_LPS, O_OUT, O_HELP, O_KV, O_BW,
           O_MB, O_TFLOPS, O_BALANCE, O_BACKEND, O_SMS, O_GEMM, O_TUNE, O_DUMP, O_DUMPBUF, O_THREADS, O_VERSION,
           O_BS };
    static const struct option longopts[] = {
        {"checkpoint", required_argument, 0, O_CKPT}, {"config", required_argument, 0, O_CONFIG},
        {"stages", required_argument, 0, O_STAGES},   {"ep", required_argument, 0, O_EP},
        {"mem-per-rank", required_argument, 0, O_MEM}, {"slots", required_argument, 0, O_SLOTS},
        {"context", required_argument, 0, O_CTX},     {"max-context", required_argument, 0, O_CTX},
        {"max-batch-tokens", required_argument, 0, O_MBT}, {"kv-cache", required_argument, 0, O_KV},
        {"layers-per-stage", required_argument, 0, O_LPS}, {"out", required_argument, 0, O_OUT},
        {"bandwidth", required_argument, 0, O_BW},    {"micro-batches", required_argument, 0, O_MB},
        {"tflops", required_argument, 0, O_TFLOPS},   {"balance", required_argument, 0, O_BALANCE},
        {"backend", required_argument, 0, O_BACKEND}, {"gpu-sms", required_argument, 0, O_SMS},
        {"cuda-gemm", required_argument, 0, O_GEMM},  {"cuda-tune", required_argument, 0, O_TUNE},
        {"dump-logits", no_argument, 0, O_DUMP},      {"dump-buffer", required_argument, 0, O_DUMPBUF},
        {"threads", required_argument, 0, O_THREADS}, {"help", no_argument, 0, O_HELP},
        {"version", no_argument, 0, O_VERSION},       {"batch-size", required_argument, 0, O_BS},
        {0, 0, 0, 0}};
    const char *checkpoint = NULL, *config = NULL, *out = NULL, *lps_text = NULL, *balance = NULL;
    const char *ctx_name = NULL, *ctx_value = NULL; /* --context or --max-context, whichever came */
    g1_plan_request req = {.stages = 0, .ep = 0, .slots = 0, .context = 0, .max_batch_tokens = 256};
    double bandwidth = 0, tflops = 0;
    int opt, r = 0, micro_batches = 0, batch_size = 0, cuda = 0, sms = 0, cuda_only = 0;
    opterr = 0;
    int li = -1;
    /* an option with a value given twice is refused, as grok1-run does */
    const char *given[sizeof longopts / sizeof longopts[0]] = {0};
    char why[512];
    while (r == 0 && (li = -1, opt = getopt_long(argc, argv, ":", longopts, &li)) != -1) {
        if (g1_opt_refused(argv, longopts, li, opt, given, why, sizeof why))
            return usage_error("%s", why);
        switch (opt) {
        case O_CKPT: checkpoint = optarg; break;
        case O_CONFIG: config = optarg; break;
        case O_STAGES: r = parse_int("--stages", optarg, 1, &req.stages); break;
        case O_EP: r = parse_int("--ep", optarg, 1, &req.ep); break;
        case O_MEM:
            if (g1_plan_parse_size("--mem-per-rank", optarg, &req.mem_per_rank) != G1_OK)
                r = usage_error("%s", g1_last_error());
            break;
        case O_SLOTS: r = parse_int("--slots", optarg, 1, &req.slots); break;
        case O_BS: r = parse_int("--batch-size", optarg, 1, &batch_size); break;
        case O_CTX:
            /* two names of one option: given under both, as given twice */
            if (ctx_name)
                return usage_error("--%s %s and --%s %s are one option (KV cache positions per slot): give one",
                                   ctx_name, ctx_value, longopts[li].name, optarg);
            ctx_name = longopts[li].name, ctx_value = optarg;
            r = parse_int(strcmp(ctx_name, "max-context") ? "--context" : "--max-context",
                          optarg, 0, &req.context);
            break;
        case O_MBT: r = parse_int("--max-batch-tokens", optarg, 1, &req.max_batch_tokens); break;
        case O_KV:
            if (strcmp(optarg, "f32") && strcmp(optarg, "bf16"))
                return usage_error("--kv-cache %s: expected f32 or bf16", optarg);
            req.kv_bytes = strcmp(optarg, "bf16") ? 4 : 2;
            break;
        case O_LPS: lps_text = optarg; break;
        case O_DUMP: req.dump_logits = 1; break;
        case O_DUMPBUF:
            req.dump_logits = 1;
            if (g1_plan_parse_size("--dump-buffer", optarg, &req.dump_buffer) != G1_OK)
                r = usage_error("%s", g1_last_error());
            else if (req.dump_buffer < 1 || req.dump_buffer > 0x1p50) /* grok1-run's range */
                r = usage_error("--dump-buffer %s: expected a size from 1 byte to 1024T (2^50 bytes), such as 256M",
                                optarg);
            break;
        case O_THREADS:
            r = parse_int("--threads", optarg, 1, &req.threads);
            if (!r && req.threads > 4096)
                r = usage_error("--threads %d: at most 4096, as grok1-run", req.threads);
            break;
        case O_BW: r = parse_rate("--bandwidth", optarg, 1e9, "gigabytes per second", "3350", &bandwidth); break;
        case O_MB: r = parse_int("--micro-batches", optarg, 1, &micro_batches); break;
        case O_TFLOPS: r = parse_rate("--tflops", optarg, 1e12, "TFLOP/s", "600", &tflops); break;
        case O_BALANCE:
            if (strcmp(optarg, "decode") && strcmp(optarg, "prompt"))
                return usage_error("--balance %s: expected decode or prompt", optarg);
            req.balance_prompt = !strcmp(optarg, "prompt");
            balance = optarg;
            break;
        case O_BACKEND:
            if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda"))
                return usage_error("--backend %s: expected cpu or cuda", optarg);
            cuda = !strcmp(optarg, "cuda");
            break;
        case O_SMS: r = parse_int("--gpu-sms", optarg, 1, &sms), cuda_only = 1; break;
        case O_GEMM:
            req.cuda_gemm = !strcmp(optarg, "bf16")     ? G1_CUDA_GEMM_BF16
                            : !strcmp(optarg, "bf16x2") ? G1_CUDA_GEMM_BF16X2
                            : !strcmp(optarg, "f32")    ? G1_CUDA_GEMM_F32
                                                        : -1;
            if (req.cuda_gemm < 0)
                return usage_error("--cuda-gemm %s: expected bf16, bf16x2 or f32", optarg);
            cuda_only = 1;
            break;
        case O_TUNE:
            if (g1_cuda_tune_parse(optarg, &req.cuda_tune) != G1_OK)
                return usage_error("%s", g1_last_error());
            cuda_only = 1;
            break;
        case O_OUT: out = optarg; break;
        case O_HELP: usage(stdout); return g1_stdout_done("grok1-plan");
        case O_VERSION: printf("grok1-plan %s\n", G1_VERSION); return g1_stdout_done("grok1-plan");
        case ':': return usage_error("%s needs a value", argv[optind - 1]);
        default: return usage_error("unknown option %s", argv[optind - 1]);
        }
        if (r)
            return r;
    }
    if (optind < argc)
        return usage_error("unexpected argument %s", argv[optind]);
    if (!checkpoint == !config)
        return usage_error("give exactly one of --checkpoint FILE.h5 and --config tiny|small|grok-1|PATH.json");
    if (!req.stages || !req.ep)
        return usage_error("--stages P and --ep E are required");
    /* before any work: the plan would be renamed over a folder (refused
     * then, exit 1) and over its own input, the model's file */
    struct stat ob;
    if (out && strcmp(out, "-") && stat(out, &ob) == 0 && S_ISDIR(ob.st_mode))
        return usage_error("--out %s is a directory: give a file name", out);
    if (out && strcmp(out, "-") && g1_same_file(out, config ? config : checkpoint))
        return usage_error("--out %s is the %s file %s: the plan would replace it; give another name", out,
                           config ? "--config" : "--checkpoint", config ? config : checkpoint);
    if (balance && lps_text)
        return usage_error("--balance %s chooses the planner's cuts: it does not go with --layers-per-stage %s, "
                           "which gives them (give one)", balance, lps_text);
    if (cuda_only && !cuda)
        return usage_error("--gpu-sms, --cuda-gemm and --cuda-tune describe the cuda backend: give --backend cuda");
    req.cuda_sms = cuda ? (sms ? sms : 132) : 0;
    /* the CPU engine rounds its caches' values to bf16 but keeps them as
     * float32: 4 bytes, as grok1-run counts them on that backend */
    if (req.kv_bytes == 2 && !cuda)
        req.kv_bytes = 4;
    if (req.slots && batch_size)
        return usage_error("--slots %d and --batch-size %d both say how many slots: give one (--slots N, or "
                           "--batch-size B for M x B)", req.slots, batch_size);
    req.micro_batches = micro_batches;
    /* grok1-run's slots: M micro-batches (default P) of --batch-size 8 */
    req.batch_size = req.slots ? 0 : batch_size ? batch_size : 8;

    if (config) {
        if (g1_plan_load_config(config, &req.cfg) != G1_OK)
            return fail();
    } else {
#if G1_HAVE_HDF5
        g1_ckpt *ck;
        if (g1_ckpt_open(checkpoint, &ck) != G1_OK)
            return fail();
        req.cfg = *g1_ckpt_config(ck);
        g1_ckpt_close(ck);
#else
        return usage_error("--checkpoint needs HDF5, but this grok1-plan was built without HDF5: use --config "
                           "(a preset or a JSON file of the hyper-parameters), or rebuild with -Dhdf5=enabled");
#endif
    }
    int *lps = NULL, n_lps = 0;
    if (lps_text) {
        if ((r = parse_list(lps_text, &lps, &n_lps)))
            return r;
        if (n_lps != req.stages) {
            free(lps);
            fprintf(stderr, "grok1-plan: error: --layers-per-stage gives %d counts for --stages %d: give one per "
                            "stage\n", n_lps, req.stages);
            return EXIT_REFUSED;
        }
        req.layers_per_stage = lps;
    }
    g1_plan plan;
    g1_status st = g1_plan_make(&req, &plan);
    free(lps);
    if (st != G1_OK)
        return fail();
    /* the JSON may take stdout: "-", or a name of it (/dev/stdout, /dev/fd/1) */
    struct stat so, sp;
    int json_on_stdout = out && (!strcmp(out, "-") || (fstat(STDOUT_FILENO, &so) == 0 && stat(out, &sp) == 0 &&
                                                       so.st_dev == sp.st_dev && so.st_ino == sp.st_ino));
    FILE *tf = json_on_stdout ? stderr : stdout;
    g1_plan_print(&plan, tf);
    if (req.balance_prompt && !lps_text)
        fprintf(tf, "(cuts balance the FLOPs of a prompt token, rank 0's un-embedding included: --balance prompt; "
                    "the stage costs above are still decode bytes)\n");
    if (bandwidth > 0)
        g1_plan_print_bound(&plan, bandwidth, micro_batches ? micro_batches : plan.stages, tf);
    if (tflops > 0)
        g1_plan_print_prompt_bound(&plan, tflops, tf);
    if (out && g1_plan_write_json(&plan, out) != G1_OK) {
        g1_plan_free(&plan);
        return fail();
    }
    g1_plan_free(&plan);
    return 0;
}
