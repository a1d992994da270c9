/* grok1-run's command line (run_cli.h): the usage text, the options
 * parsed and checked, the files named checked against each other, and a
 * refused command line said once under a launcher. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_opt.h"
#include "cuda/cuda_engine.h"
#include "cuda/cuda_tune.h"
#include "durable.h"
#include "fnv1a.h"
#include "g1_version.h"
#include "paths.h"
#include "plan.h"
#include "resume.h"
#include "run_cli.h"
#include "status.h"
#include "trace.h"

/* for --version */
#if G1_HAVE_HDF5
static const int built_with_hdf5 = 1;
#else
static const int built_with_hdf5 = 0;
#endif

static void usage(FILE *f)
{
    fprintf(f,
"usage: grok1-run --checkpoint FILE.h5 --mode score|generate --input IN.jsonl --output OUT.jsonl [options]\n"
"       grok1-run --synthetic tiny|small|grok-1 [--synthetic-seed S] --mode ... --input ... --output ...\n"
"\n"
"Runs Grok-1 over a file of JSON requests, one per line, and writes one JSON\n"
"result per request, one per line, IN INPUT ORDER: a request that finishes\n"
"early is held back until every request before it has been written.\n"
"\n"
"Model (exactly one):\n"
"  --checkpoint FILE.h5      a grok1-hdf5 checkpoint (from the converter or grok1-mkckpt),\n"
"                            or one joined from parts by grok1-link (HDF5_EXT_PREFIX:\n"
"                            folders of local copies of the parts, tried first)\n"
"  --skip-checksums          read the checkpoint without comparing it with its checksums (a\n"
"                            CRC-32 per tensor and expert, written by grok1-convert and\n"
"                            grok1-mkckpt; a tensor that does not match otherwise stops the\n"
"                            load, naming it); with --resume, keep the logits dump's datasets\n"
"                            of the kept results without reading them back against theirs\n"
"  --synthetic PRESET        build deterministic synthetic weights in memory instead\n"
"                            (tiny, small, grok-1); the same weights as\n"
"                            grok1-mkckpt --config PRESET --seed S\n"
"  --synthetic-seed S        seed of the synthetic weights (default 0)\n"
"  --tokenizer MODEL         SentencePiece model (the release's tokenizer.model): requests may\n"
"                            give \"prompt\" text (no BOS is added) and get \"completion\" text\n"
"\n"
"Work (a prompt is \"prompt_ids\": [ints] or, with --tokenizer, \"prompt\": \"text\"):\n"
"  --mode score              request {\"id\", prompt} -> {\"id\", \"prompt_tokens\",\n"
"                            \"logprobs\" (n-1: log p(token i | tokens < i), i = 1..n-1),\n"
"                            \"sum_logprob\", \"greedy\" (every token from the 2nd on is the argmax)};\n"
"                            with \"continuation\": \"text\" (or \"continuation_ids\": [ints] after\n"
"                            \"prompt_ids\") too (lm-eval style): \"prompt_tokens\",\n"
"                            \"continuation_tokens\", \"logprobs\" of the continuation only,\n"
"                            \"sum_logprob\", \"is_greedy\"\n"
"  --mode generate           request {\"id\", prompt, \"max_new_tokens\"?, \"temperature\"?,\n"
"                            \"top_p\"?, \"top_k\"?, \"seed\"?, \"stop\"? (strings), \"ignore_eos\"?,\n"
"                            \"top_logprobs\"? (N)} -> {\"id\", \"prompt_tokens\", \"completion_ids\",\n"
"                            \"completion\" (with --tokenizer), \"finish_reason\": \"eos\"|\"length\"|\"stop\",\n"
"                            \"top_logprobs\" (N > 0)}; eos is not in completion_ids; the\n"
"                            completion ends before a stop string\n"
    );
    fprintf(f,
"  --temperature T           default temperature (default 0: greedy; the reference uses 0.01)\n"
"  --top-p P                 default nucleus: the smallest top set reaching P, ties kept (default 1)\n"
"  --top-k K                 default top-k (default 0: none)\n"
"  --seed S                  default sampling seed (default 42); a request's tokens depend only\n"
"                            on (seed, its input position, token index)\n"
"  --top-logprobs N          default top-N log-probs per generated token (default 0)\n"
"  --truncate left|none      prompts longer than the context: cut from the left as the\n"
"                            reference does, or refuse (default none)\n"
"  --max-context N           positions per sequence, prompt and completion (default: the\n"
"                            model's max_seq_len): longer prompts are refused or cut as\n"
"                            --truncate says, generation ends at N (\"length\"); bounds the\n"
"                            KV caches (and the planner's memory check) to N positions; a\n"
"                            score request may have N + 1 tokens (its last is only predicted;\n"
"                            N with --dump-logits); generate needs N >= 2\n"
"  --input FILE              requests (JSON Lines; blank lines are skipped); - for stdin;\n"
"                            a pipe or FIFO is read once, like stdin\n"
"  --output FILE             results; written to FILE.partial and renamed to FILE when\n"
"                            every request succeeded (FILE.lock keeps a second run off it);\n"
"                            a run without --resume removes an earlier FILE when it starts\n"
"                            (FILE.meta.json then describes it), and one that ends before its\n"
"                            first result removes its files; requests appended to the input\n"
"                            during a run are left to a --resume\n"
"                            - for stdout; a device or FIFO (/dev/stdout, /dev/fd/N too) is\n"
"                            written directly, as stdout: no .partial, lock or meta file;\n"
"                            a symbolic link (this one, --dump-logits's, --trace's) is written\n"
"                            through: the file it names is replaced, the link stays\n"
"  --dump-logits FILE.h5     score mode: also write the float32 logits of every position,\n"
"                            dataset /logits/<k> of shape (n, V), k = 0-based input line number,\n"
"                            with the request's token ids (attribute tokens) and id (attribute\n"
"                            id, JSON text) (as FILE.h5.partial until complete, like the output;\n"
"                            a run without --resume removes an earlier FILE.h5 when it starts)\n"
"  --dump-buffer SIZE        --dump-logits: rows held for the thread that writes the dump, so\n"
"                            that a slow file system does not stop the pipeline (default 1G;\n"
"                            at least one write's, the logits rows computed at once: up to\n"
"                            --max-batch-tokens of them, 64 MiB); rank 0's host memory, counted\n"
"                            by --mem-per-rank\n"
"  --resume                  continue OUTPUT: keep its complete results (a torn last line\n"
"                            is redone) and run only the requests not yet done, and continue\n"
"                            the logits dump with them; refused if OUTPUT.meta.json shows\n"
"                            other settings or another input, or another dump file than the\n"
"                            one it records (a relative name read in another folder), but for\n"
"                            one at the same place relative to OUTPUT (a folder moved or\n"
"                            copied whole); starts afresh when there is\n"
"                            nothing to resume; with every request done (a finished OUTPUT)\n"
"                            it checks, renames and ends without loading the weights;\n"
"                            a refused resume leaves OUTPUT and its meta file as they were\n"
);
    fprintf(f,
"  --check-input             read every request as this command line's run would (the model's\n"
"                            config, no weights, no GPU, no MPI), print each refused one\n"
"                            (the first 20) and a summary (requests, prompt tokens, the\n"
"                            longest, cuts, new tokens; with --dump-logits its size against\n"
"                            the free space, with --resume what is left of DUMP.partial;\n"
"                            the layout), write nothing; --output may be left out. Exit 0\n"
"                            when a run would accept every request (and the dump fits), 1\n"
"                            when not, 2 when it would refuse the layout or --plan (checked\n"
"                            for P x E processes, with --mem-per-rank, as a run checks\n"
"                            them). For a login node before a batch job: a run stops at the\n"
"                            first refused request, after loading the weights\n"
"  --shard K/N               run only requests K, K + N, K + 2N, ... of the input (counted\n"
"                            from 0; blank lines are not requests): N jobs share one input;\n"
"                            each output holds exactly those results of the unsharded run\n"
"                            (sampling is keyed by the request's input position), and\n"
"                            grok1-merge joins the N outputs into that run's output; its\n"
"                            meta file records only its own requests, so another shard's\n"
"                            may be edited in place (a bad line fixed) without redoing\n"
"                            this one\n"
"  --max-new-tokens N        generate: default completion limit (default 100; a request's\n"
"                            \"max_new_tokens\" overrides it; also limited by the context)\n"
);
    fprintf(f,
"\n"
"Performance:\n"
"  --batch-size B            sequence slots per micro-batch (continuous batching; default 8)\n"
"  --max-batch-tokens T      most tokens per micro-batch step: decode tokens plus prompt\n"
"                            chunks (default 256)\n"
"  --backend cpu|cuda        where the layers run (default: cuda when this binary has the\n"
"                            CUDA backend and a GPU is visible, else cpu). With cuda each\n"
"                            rank uses one GPU: device = its rank among the ranks on its\n"
"                            node (from MPI, whatever the launcher) modulo the\n"
"                            GPUs it sees (a launcher may bind each rank to its own: Slurm\n"
"                            --gpus-per-task=1); two ranks on one GPU are refused, so start\n"
"                            at most as many ranks per node as it has GPUs\n"
"  --cuda-gemm bf16|bf16x2|f32\n"
"                            cuda, prompts and batches over 16 tokens: activations rounded\n"
"                            to bf16 for one cuBLAS GEMM (bf16, the default: the reference's\n"
"                            own precision, about 1e-2 from the cpu backend's logits), or\n"
"                            split into bf16 hi + lo for two (bf16x2: near float32, 1e-5\n"
"                            to 3e-4 from cpu, twice the prompt matmul time); results then\n"
"                            depend slightly on how tokens are batched. f32: no GEMM, the\n"
"                            int8 kernel of decoding 16 tokens at a time: float32, the same\n"
"                            bits in every layout and batching, but weights re-read for\n"
"                            every 16 tokens (slow for long prompts). docs/CUDA.md\n"
"  --cuda-graphs on|off|N    cuda: decode steps (up to 128 tokens on compute capability 8.0\n"
"                            and later, else 16) replay a CUDA graph of their layers, one\n"
"                            per batch shape (on, the default: at most 64 kept, the least\n"
"                            recently replayed dropped; N: at most N), or launch their\n"
"                            kernels one by one (off: for a profiler or a sanitizer that\n"
"                            wants them apart); the same results either way\n"
    );
    fprintf(f,
"  --cuda-tune KEY=VALUE[,KEY=VALUE...]\n"
"                            cuda: which kernel takes what, to tune for a GPU or to rule a\n"
"                            kernel out (repeatable; --verbose says what the engine then\n"
"                            takes): gemv-max-tokens=N (0..64, default 16: matmuls of up\n"
"                            to N rows on the int8 GEMV; 0: none), mma-max-tokens=N (0..256,\n"
"                            default 128: above those, up to N on the int8 tensor cores;\n"
"                            0: none, cuBLAS), mma-tile-cols=64|128, attn-mma=on|off\n"
"                            (prompts' attention on the tensor cores), moe-grouping=\n"
"                            device|host, gemm-overlap=on|off, panel-mib=N (1..64: the\n"
"                            dequantised panels cuBLAS reads). Results move within the\n"
"                            GEMM's rounding, as with --batch-size; with --cuda-gemm f32\n"
"                            (the GEMV only) they stay the same bits. docs/CUDA.md\n"
"  --kv-cache f32|bf16       KV cache elements (default f32). bf16 rounds keys and values\n"
"                            as they are stored (the reference's precision); with cuda half\n"
"                            the cache memory and the bytes long-context attention reads\n"
"                            (cpu keeps the rounded values as float32: the same results, to\n"
"                            check a GPU's against); results move within bf16 rounding\n"
"  --prefix-cache on|off     a request put into a slot starts after the prefix it shares\n"
"                            with the tokens the slot's caches hold from earlier requests\n"
"                            (few-shot preambles, the context of continuations), up to the\n"
"                            first position whose logits it needs; a generation or a\n"
"                            continuation can also start from a prefix another slot holds\n"
"                            or is computing, copied into its slot (a fork: the samples of\n"
"                            one prompt compute it once); a new request goes to the free\n"
"                            slot that starts it furthest along (default on). The\n"
"                            results are the same either way (bitwise on cpu; with cuda's\n"
"                            bf16 GEMMs within their batching noise). Plain scoring reuses\n"
"                            the log-probs a slot keeps from its last plain score request;\n"
"                            nothing is reused with --dump-logits (every position's logits)\n"
);
    fprintf(f,
"\n"
"Distributed (start N = P x E processes with mpirun or srun; rank r is stage r / E,\n"
"expert slot r %% E; rank 0 reads requests, embeds, un-embeds and writes results):\n"
"  --stages P                pipeline stages, each a contiguous range of layers (default 1)\n"
"  --ep E                    expert-parallel ranks per stage; divides the experts (default 1)\n"
"  --micro-batches M         micro-batches in flight, B slots each (default P); M x B is at\n"
"                            most 65536\n"
"  --plan PLAN.json          layer ranges from grok1-plan (default: the planner decides)\n"
"  --layers-per-stage a,b,.. layer counts per stage instead of the planner's balance\n"
"  --balance auto|decode|prompt  what the planner's cuts balance: the bytes a decode\n"
"                            step reads, or the FLOPs of a prompt token (rank 0's\n"
"                            un-embedding of every scored position counted); auto\n"
"                            (default): prompt in score mode, decode in generate mode;\n"
"                            auto falls back to decode when prompt-balanced cuts do not\n"
"                            fit --mem-per-rank. Results do not depend on it\n"
"  --mem-per-rank SIZE       memory per rank for the planner's check (e.g. 80G; default: no limit);\n"
"                            on the cuda backend the GPU's, counted as grok1-plan --backend cuda\n"
"                            (on the cpu backend the per-thread buffers counted for the most\n"
"                            --threads any rank runs)\n"
"  --gpu-direct auto|on|off  hand activations to MPI in GPU memory (pipeline messages and\n"
"                            expert all-to-alls) instead of through page-locked host\n"
"                            buffers: needs an MPI built with CUDA support; auto (default)\n"
"                            uses it with --backend cuda when the MPI library says it has\n"
"                            that support; on trusts you (an MPI without it then crashes\n"
"                            reading device memory); with --backend cpu on only changes the\n"
"                            code path (for tests)\n"
"  --verbose                 each rank reports what it loaded, the bytes it read, and the\n"
"                            weights it holds (with cuda: the most in host memory at once,\n"
"                            and the GPU memory its weights and buffers took, the free\n"
"                            memory before the load and what is left for the KV caches;\n"
"                            with cpu: its kernels, avx512, avx2 or portable); with cuda,\n"
"                            rank 0 says which kernels it takes (--cuda-tune); at the end\n"
"                            each rank the bytes of its message and all-to-all buffers in\n"
"                            host memory (as grok1-plan counts them), rank 0 the most the\n"
"                            logits dump's writer held, and, with cuda, the graphs each\n"
"                            rank made and dropped\n"
);
    fprintf(f,
"\n"
"Watching:\n"
"  --progress auto|on|off    requests done of total, tokens/s, ETA: auto (default) keeps a\n"
"                            live line on a terminal and prints a line every interval\n"
"                            otherwise; on prints lines even on a terminal\n"
"  --progress-interval S     whole seconds between progress lines (default 30)\n"
"  --trace FILE.json         write a timeline of every rank (compute per layer range,\n"
"                            sends, receives, all-to-alls, per micro-batch) as Chrome\n"
"                            trace-event JSON for Perfetto or chrome://tracing; a device or\n"
"                            FIFO (/dev/null, /dev/stdout) is written directly, as --output\n"
"  --threads N               CPU threads (default: OpenMP's default; at most 4096): the cpu\n"
"                            backend's kernels, and rank 0's log-softmax / sampling of logits rows\n"
"  --help                    this text\n"
"  --version                 the version, and whether this build has MPI, HDF5 and CUDA\n"
"\n"
"Exit status: 0 success; 1 bad input data, unreadable or mismatched checkpoint,\n"
"or a failure while running; 2 bad command line (an option with a value given\n"
"twice among them) or layout; 3 interrupted by\n"
"SIGTERM, SIGINT or SIGUSR1 (Slurm's time limit, pre-emption, Ctrl-C): finished\n"
"results are in OUTPUT.partial, run again with --resume (mpirun passes SIGUSR1\n"
"on and then exits 3; after SIGTERM it exits 1 itself). Errors go to stderr as\n"
"'grok1-run: error: <message>'; a summary line goes to stderr at the end.\n"
"A rank that fails ends the whole job (MPI_Abort) after printing which rank and why.\n"
"GROK1_FAULT=RANK:STEP[:kill] makes a rank fail at a step (for tests).\n");
}

/* This process's rank as its launcher gives it in the environment (mpirun,
 * srun, another PMI launcher), read without starting MPI; -1 when none does. */
int cli_launched_rank(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return atoi(v);
    }
    return -1;
}

/* The number of processes the launcher started, from the environment, read
 * without starting MPI; -1 when it does not say. */
static int launched_size(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return atoi(v);
    }
    return -1;
}

/* The command line's fault, kept by usage_error and said by cli_usage_exit. */
static char usage_msg[2048];

/* Keep the fault in usage_msg (rank-prefixed under a launcher); main says
 * it through cli_usage_exit, once. */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    char *msg = usage_msg;
    int rank = cli_launched_rank();
    int n = rank > 0 ? snprintf(msg, sizeof usage_msg, "grok1-run: error: rank %d: ", rank)
                     : snprintf(msg, sizeof usage_msg, "grok1-run: error: ");
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof usage_msg)
        n += vsnprintf(msg + n, sizeof usage_msg - (size_t)n, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof usage_msg)
        snprintf(msg + n, sizeof usage_msg - (size_t)n, "\n(see grok1-run --help)\n");
    return -1;
}

/* What each rank found in its command line, exchanged once MPI is up so
 * that a fault every rank finds is said once. */
typedef struct {
    uint64_t hash; /* of the message, without its rank prefix */
    int32_t failed;
    int32_t stopped; /* the first stop signal taken while MPI started, or 0 */
} usage_word;

/* Said by this rank: the lowest rank of those that failed with each message. */
static int usage_said_here(const usage_word *all, int rank)
{
    if (!all[rank].failed)
        return 0;
    for (int r = 0; r < rank; r++)
        if (all[r].failed && all[r].hash == all[rank].hash)
            return 0;
    return 1;
}

static uint64_t usage_hash(void)
{
    const char *m = strstr(usage_msg, ": error: ");
    m = m ? m + strlen(": error: ") : usage_msg;
    if (!strncmp(m, "rank ", 5) && strstr(m, ": "))
        m = strstr(m, ": ") + 2;
    return g1_fnv1a64(G1_FNV1A64_START, m, strlen(m));
}

/* Every rank of a job joins in (a collective once MPI is up): 1 when some
 * rank's command line was refused, which that rank has said; -1 when the
 * ranks could not compare. *stopped: the stop signal some rank took while
 * MPI started (rank 0's first), or 0. */
int cli_usage_agree(const g1_world *w, int failed, int stop_here, int *stopped)
{
    *stopped = stop_here;
    if (w->size <= 1)
        return 0;
    usage_word mine = {failed ? usage_hash() : 0, failed, *stopped};
    usage_word *all = calloc((size_t)w->size, sizeof *all);
    if (!all || g1_world_allgather(&mine, sizeof mine, all) != G1_OK) {
        /* cannot tell what the others found: this rank says its own */
        if (failed)
            fputs(usage_msg, stderr);
        free(all);
        return failed ? 1 : -1;
    }
    int any = 0;
    for (int r = w->size - 1; r >= 0; r--) {
        any |= all[r].failed;
        if (all[r].stopped)
            *stopped = all[r].stopped;
    }
    if (usage_said_here(all, w->rank)) {
        fputs(usage_msg, stderr);
        fflush(stderr);
    }
    free(all);
    return any;
}

/* Say the command line's fault and give the exit status. Without a launcher
 * (or with one that started one process) it is said at once, without MPI.
 * Under a launcher every rank reads the same command line and usually finds
 * the same fault: the ranks start MPI and compare (the ranks whose command
 * line was fine do so in main), and the lowest rank that found each fault
 * says it, once; a rank whose own command line differs (MPMD) still says
 * why. A launcher that does not give its size: rank 0 says it, the others
 * (in one write) only if they are still there 2 s later, which they are not
 * when the launcher ended the job on rank 0's exit. */
int cli_usage_exit(int *argc, char ***argv)
{
    int rank = cli_launched_rank(), size = launched_size();
    if (rank >= 0 && size > 1) {
        g1_world w;
        if (g1_world_init(argc, argv, &w) == G1_OK && w.size > 1) {
            int stopped;
            (void)cli_usage_agree(&w, 1, 0, &stopped);
            g1_world_finalize();
            return EXIT_USAGE;
        }
    }
    if (rank > 0 && size < 0)
        sleep(2);
    fputs(usage_msg, stderr);
    fflush(stderr);
    return EXIT_USAGE;
}

/* text is one of words (NULL-terminated): *out = its value; otherwise a
 * usage error that lists the words ("expected a, b or c"). */
static int parse_word(const char *opt, const char *text, const char *const *words, const int *values, int *out)
{
    char list[160] = "";
    size_t len = 0;
    int n = 0;
    while (words[n])
        n++;
    for (int i = 0; i < n; i++) {
        if (!strcmp(text, words[i])) {
            *out = values[i];
            return 0;
        }
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ",
                                words[i]);
        if (len >= sizeof list)
            len = sizeof list - 1;
    }
    return usage_error("%s %s: expected %s", opt, text, list);
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

static int parse_double(const char *opt, const char *text, double lo, double hi, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= lo && v <= hi))
        return usage_error("%s %s: expected a number in [%g, %g]", opt, text, lo, hi);
    *out = v;
    return 0;
}

/* 0: run; 1: --help or --version was printed; -1: the command line was
 * refused, its fault kept (usage_error) for cli_usage_exit to say. */
int cli_parse(int argc, char **argv, cli *c)
{
    enum { O_CKPT = 256, O_MODE, O_IN, O_OUT, O_DUMP, O_MNT, O_BS, O_MBT, O_THR, O_SYN, O_SEED, O_HELP,
           O_STAGES, O_EP, O_MB, O_PLAN, O_LPS, O_MEM, O_VERBOSE, O_RESUME, O_PROGRESS, O_PROGRESS_INT, O_TRACE, O_TOK, O_TEMP, O_TOPP, O_TOPK,
           O_SSEED, O_TOPLP, O_TRUNCATE, O_BACKEND, O_CUDA_GEMM, O_GPU_DIRECT, O_MAXCTX, O_KV,
           O_PREFIX, O_SHARD, O_BALANCE, O_GRAPHS, O_TUNE, O_CHECK, O_SKIP_CRC, O_DUMPBUF, O_VERSION };
    static const struct option opts[] = {
        {"checkpoint", required_argument, NULL, O_CKPT},   {"mode", required_argument, NULL, O_MODE},
        {"input", required_argument, NULL, O_IN},          {"output", required_argument, NULL, O_OUT},
        {"dump-logits", required_argument, NULL, O_DUMP},  {"max-new-tokens", required_argument, NULL, O_MNT},
        {"dump-buffer", required_argument, NULL, O_DUMPBUF},
        {"batch-size", required_argument, NULL, O_BS},     {"max-batch-tokens", required_argument, NULL, O_MBT},
        {"threads", required_argument, NULL, O_THR},       {"synthetic", required_argument, NULL, O_SYN},
        {"seed", required_argument, NULL, O_SEED},         {"help", no_argument, NULL, O_HELP},
        {"version", no_argument, NULL, O_VERSION},
        {"stages", required_argument, NULL, O_STAGES},     {"ep", required_argument, NULL, O_EP},
        {"micro-batches", required_argument, NULL, O_MB},  {"plan", required_argument, NULL, O_PLAN},
        {"layers-per-stage", required_argument, NULL, O_LPS}, {"mem-per-rank", required_argument, NULL, O_MEM},
        {"verbose", no_argument, NULL, O_VERBOSE},         {"resume", no_argument, NULL, O_RESUME},
        {"progress", required_argument, NULL, O_PROGRESS}, {"progress-interval", required_argument, NULL, O_PROGRESS_INT},
        {"trace", required_argument, NULL, O_TRACE},       {"tokenizer", required_argument, NULL, O_TOK},
        {"temperature", required_argument, NULL, O_TEMP},  {"top-p", required_argument, NULL, O_TOPP},
        {"top-k", required_argument, NULL, O_TOPK},        {"synthetic-seed", required_argument, NULL, O_SSEED},
        {"top-logprobs", required_argument, NULL, O_TOPLP}, {"truncate", required_argument, NULL, O_TRUNCATE},
        {"backend", required_argument, NULL, O_BACKEND},
        {"cuda-gemm", required_argument, NULL, O_CUDA_GEMM},
        {"gpu-direct", required_argument, NULL, O_GPU_DIRECT},
        {"cuda-graphs", required_argument, NULL, O_GRAPHS},
        {"cuda-tune", required_argument, NULL, O_TUNE},
        {"check-input", no_argument, NULL, O_CHECK},
        {"skip-checksums", no_argument, NULL, O_SKIP_CRC},
        {"max-context", required_argument, NULL, O_MAXCTX},
        {"kv-cache", required_argument, NULL, O_KV},
        {"prefix-cache", required_argument, NULL, O_PREFIX}, {"balance", required_argument, NULL, O_BALANCE},
        {"shard", required_argument, NULL, O_SHARD},
        {NULL, 0, NULL, 0},
    };
    *c = (cli){.max_new_tokens = 100, .batch_size = 8, .max_batch_tokens = 256, .progress = G1_PROGRESS_AUTO,
               .progress_interval = 30, .sample = G1_SAMPLE_OPTS_DEFAULT, .backend = -1,
               .gpu_direct = -1, .prefix_cache = 1, .balance = -1, .cuda_graphs = -1};
    c->sample.temperature = 0; /* greedy unless asked: exact and repeatable evaluation */
    opterr = 0;
    int o, r = 0, li = -1;
    /* an option with a value given twice is refused: the job that would run
     * (the last value) may not be the one meant */
    const char *given[sizeof opts / sizeof opts[0]] = {0};
    char why[512];
    while (r == 0 && (li = -1, o = getopt_long(argc, argv, ":", opts, &li)) != -1) {
        if (g1_opt_refused(argv, opts, li, o, given, why, sizeof why))
            return usage_error("%s", why);
        switch (o) {
        case O_CKPT: c->checkpoint = optarg; break;
        case O_IN: c->input = optarg; break;
        case O_OUT: c->output = optarg; break;
        case O_DUMP: c->dump_logits = optarg; break;
        case O_SYN: c->synthetic = optarg; break;
        case O_MNT: r = parse_int("--max-new-tokens", optarg, 0, &c->max_new_tokens); break;
        case O_MAXCTX: r = parse_int("--max-context", optarg, 1, &c->max_context); break;
        case O_BS: r = parse_int("--batch-size", optarg, 1, &c->batch_size); break;
        case O_MBT: r = parse_int("--max-batch-tokens", optarg, 1, &c->max_batch_tokens); break;
        case O_THR:
            r = parse_int("--threads", optarg, 1, &c->threads);
            if (!r && c->threads > G1_MAX_THREADS)
                r = usage_error("--threads %d: at most %d", c->threads, G1_MAX_THREADS);
            break;
        case O_HELP: usage(stdout); return 1;
        case O_VERSION:
            printf("grok1-run %s\nbuilt with: mpi %s, hdf5 %s, cuda %s\n", G1_VERSION,
                   strcmp(g1_world_kind(), "mpi") ? "no" : "yes", built_with_hdf5 ? "yes" : "no",
                   g1_cuda_built() ? "yes" : "no");
            return 1;
        case O_STAGES: r = parse_int("--stages", optarg, 1, &c->stages); break;
        case O_EP: r = parse_int("--ep", optarg, 1, &c->ep); break;
        case O_MB: r = parse_int("--micro-batches", optarg, 1, &c->micro_batches); break;
        case O_PLAN: c->plan = optarg; break;
        case O_LPS: c->layers_per_stage = optarg; break;
        case O_VERBOSE: c->verbose = 1; break;
        case O_CHECK: c->check_input = 1; break;
        case O_SKIP_CRC: c->skip_checksums = 1; break;
        case O_RESUME: c->resume = 1; break;
        case O_TRACE: c->trace = optarg; break;
        case O_TOK: c->tokenizer = optarg; break;
        case O_TEMP: r = parse_double("--temperature", optarg, 0, 1e9, &c->sample.temperature); break;
        case O_TOPP: r = parse_double("--top-p", optarg, 1e-12, 1, &c->sample.top_p); break;
        case O_TOPK: r = parse_int("--top-k", optarg, 0, &c->sample.top_k); break;
        case O_TOPLP: r = parse_int("--top-logprobs", optarg, 0, &c->top_logprobs); break;
        case O_BACKEND: {
            static const char *const w[] = {"cpu", "cuda", NULL};
            static const int v[] = {G1_BACKEND_CPU, G1_BACKEND_CUDA};
            r = parse_word("--backend", optarg, w, v, &c->backend);
            break;
        }
        case O_CUDA_GEMM: {
            static const char *const w[] = {"bf16", "bf16x2", "f32", NULL};
            static const int v[] = {G1_CUDA_GEMM_BF16, G1_CUDA_GEMM_BF16X2, G1_CUDA_GEMM_F32};
            int g = 0;
            r = parse_word("--cuda-gemm", optarg, w, v, &g);
            c->cuda_gemm = (g1_cuda_gemm)g;
            break;
        }
        case O_KV: {
            static const char *const w[] = {"f32", "bf16", NULL};
            static const int v[] = {0, 1};
            r = parse_word("--kv-cache", optarg, w, v, &c->kv_bf16);
            break;
        }
        case O_BALANCE: {
            static const char *const w[] = {"auto", "decode", "prompt", NULL};
            static const int v[] = {-1, 0, 1};
            r = parse_word("--balance", optarg, w, v, &c->balance);
            break;
        }
        case O_PREFIX: {
            static const char *const w[] = {"on", "off", NULL};
            static const int v[] = {1, 0};
            r = parse_word("--prefix-cache", optarg, w, v, &c->prefix_cache);
            break;
        }
        case O_SHARD: {
            char *end = NULL;
            errno = 0;
            long k = strtol(optarg, &end, 10), n = -1;
            if (!errno && end != optarg && *end == '/' && end[1] >= '0' && end[1] <= '9') {
                char *e2 = NULL;
                n = strtol(end + 1, &e2, 10);
                if (errno || *e2)
                    n = -1;
            }
            if (n < 1 || n > 1000000 || k < 0 || k >= n)
                return usage_error("--shard %s: expected K/N with 0 <= K < N (this run takes requests K, K + N, "
                                   "K + 2N, ... of the input, counted from 0)", optarg);
            c->shard = (int)k;
            c->shards = (int)n;
            break;
        }
        case O_GRAPHS: {
            static const char *const w[] = {"on", "off", "N >= 1 (graphs kept)", NULL};
            static const int v[] = {-1, 0, 0};
            char *end = NULL;
            errno = 0;
            long n = strtol(optarg, &end, 10);
            if (optarg[0] >= '0' && optarg[0] <= '9' && !errno && !*end && n >= 1 && n <= INT_MAX)
                c->cuda_graphs = (int)n;
            else /* the error lists the forms */
                r = parse_word("--cuda-graphs", optarg, w, v, &c->cuda_graphs);
            break;
        }
        case O_TUNE:
            if (g1_cuda_tune_parse(optarg, &c->cuda_tune) != G1_OK)
                return usage_error("%s", g1_last_error());
            break;
        case O_GPU_DIRECT: {
            static const char *const w[] = {"auto", "on", "off", NULL};
            static const int v[] = {-1, 1, 0};
            r = parse_word("--gpu-direct", optarg, w, v, &c->gpu_direct);
            break;
        }
        case O_TRUNCATE: {
            static const char *const w[] = {"left", "none", NULL};
            static const int v[] = {1, 0};
            r = parse_word("--truncate", optarg, w, v, &c->truncate_left);
            break;
        }
        case O_PROGRESS: {
            static const char *const w[] = {"auto", "on", "off", NULL};
            static const int v[] = {G1_PROGRESS_AUTO, G1_PROGRESS_ON, G1_PROGRESS_OFF};
            int m = 0;
            r = parse_word("--progress", optarg, w, v, &m);
            c->progress = (g1_progress_mode)m;
            break;
        }
        case O_PROGRESS_INT: {
            int v = 0;
            r = parse_int("--progress-interval", optarg, 1, &v);
            c->progress_interval = v;
            break;
        }
        case O_MEM:
            if (g1_plan_parse_size("--mem-per-rank", optarg, &c->mem_per_rank) != G1_OK)
                return usage_error("%s", g1_last_error());
            break;
        case O_DUMPBUF:
            if (g1_plan_parse_size("--dump-buffer", optarg, &c->dump_buffer) != G1_OK)
                return usage_error("%s", g1_last_error());
            if (c->dump_buffer < 1 || c->dump_buffer > 0x1p50)
                return usage_error("--dump-buffer %s: expected a size from 1 byte to 1024T (2^50 bytes), such as "
                                   "256M", optarg);
            break;
        case O_MODE:
            if (g1_run_mode_parse(optarg, &c->mode) != G1_OK)
                return usage_error("%s", g1_last_error());
            c->have_mode = 1;
            break;
        case O_SEED:
        case O_SSEED: {
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            /* at most 2^63 - 1: the largest a request's "seed" (and the
             * meta file's record) holds as a JSON integer */
            if (errno || end == optarg || *end || optarg[0] == '-' || v > (unsigned long long)INT64_MAX)
                return usage_error("%s %s: expected an integer from 0 to 9223372036854775807 (2^63 - 1)",
                                   o == O_SEED ? "--seed" : "--synthetic-seed", optarg);
            if (o == O_SEED)
                c->sample.seed = v;
            else
                c->seed = v;
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
    if (!c->input || (!c->output && !c->check_input))
        return usage_error("--input and --output are required (- for stdin / stdout)");
    const struct {
        const char *opt, *val;
    } names[] = {{"--input", c->input},           {"--output", c->output}, {"--checkpoint", c->checkpoint},
                 {"--dump-logits", c->dump_logits}, {"--tokenizer", c->tokenizer}, {"--plan", c->plan},
                 {"--trace", c->trace}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].val && !*names[i].val)
            return usage_error("%s: the file name is empty", names[i].opt);
    if (!!c->checkpoint == !!c->synthetic)
        return usage_error("give exactly one of --checkpoint FILE.h5 and --synthetic PRESET");
    if (c->skip_checksums && !c->checkpoint && !c->dump_logits)
        return usage_error("--skip-checksums is for --checkpoint or --dump-logits (synthetic weights have no "
                           "checksums)");
    if (c->dump_logits && c->mode != G1_MODE_SCORE)
        return usage_error("--dump-logits works with --mode score only");
    if (c->dump_buffer > 0 && !c->dump_logits)
        return usage_error("--dump-buffer sizes the writer of --dump-logits: give --dump-logits FILE.h5 too");
    if (c->plan && c->layers_per_stage)
        return usage_error("give --plan or --layers-per-stage, not both");
    if (c->balance >= 0 && (c->plan || c->layers_per_stage))
        return usage_error("--balance chooses the planner's cuts: it does not go with %s, which gives them",
                           c->plan ? "--plan" : "--layers-per-stage");
    if (c->top_logprobs > 100)
        return usage_error("--top-logprobs %d: at most 100", c->top_logprobs);
    if (c->resume && !strcmp(c->output, "-"))
        return usage_error("--resume needs an output file (not stdout)");
    if (c->resume && g1_path_is_stream(c->output))
        return usage_error("--resume needs an output file: %s is not a regular file (a device or a pipe is "
                           "written directly, with nothing kept to resume from)", c->output);
    if (c->dump_logits && g1_path_is_stream(c->dump_logits))
        return usage_error("--dump-logits %s: not a regular file (the dump is an HDF5 file, written as "
                           "%s.partial and renamed)", c->dump_logits, c->dump_logits);

    if (c->dump_logits && !strcmp(c->dump_logits, "-"))
        return usage_error("--dump-logits needs a file name (an HDF5 file cannot go to stdout)");
    /* an output named by a symbolic link is the file the link names: its
     * .partial, .meta.json and .lock go beside that file, and the rename that
     * completes it replaces that file, not the link (a resume given the link
     * finds them there again) */
    static char *through[3];
    const char **named[3] = {&c->output, &c->dump_logits, &c->trace};
    static const char *const opt[3] = {"--output", "--dump-logits", "--trace"};
    for (int i = 0; i < 3; i++) {
        const char *p = *named[i];
        if (!p || !strcmp(p, "-") || g1_path_is_stream(p))
            continue;
        free(through[i]);
        if (g1_path_through_link(p, &through[i]) != G1_OK)
            return usage_error("%s: %s", opt[i], g1_last_error());
        if (through[i])
            *named[i] = through[i];
    }
    /* where the dump is, whatever folder the name was read from: a resume
     * or a merge run elsewhere finds it by this (a folder that does not
     * exist leaves it unknown: the run fails making the dump) */
    free(c->dump_path);
    free(c->dump_from_output);
    c->dump_path = c->dump_from_output = NULL;
    if (c->dump_logits && g1_path_canonical(c->dump_logits, &c->dump_path) == G1_OK && c->output &&
        strcmp(c->output, "-") && !g1_path_is_stream(c->output)) {
        char *out_real = NULL, dir[PATH_MAX];
        if (g1_path_canonical(c->output, &out_real) == G1_OK) {
            g1_dir_of(out_real, dir, sizeof dir);
            c->dump_from_output = g1_path_relative(dir, c->dump_path);
        }
        free(out_real);
    }
#if !G1_HAVE_HDF5
    if (c->checkpoint || c->dump_logits)
        return usage_error("%s needs HDF5, but this grok1-run was built without HDF5: use --synthetic, or "
                           "rebuild with HDF5 (meson -Dhdf5=enabled)", c->checkpoint ? "--checkpoint" : "--dump-logits");
#endif
    return 0;
}

void cli_free(cli *c)
{
    free(c->dump_path);
    free(c->dump_from_output);
    c->dump_path = c->dump_from_output = NULL;
}

/* The files a run reads and writes must be distinct: every output is
 * completed by a rename over its final name, which would silently replace
 * an input (the requests, the checkpoint) named as an output. Checked by
 * rank 0 before anything is read; 0 or a message in msg. */
int cli_check_files(const cli *c, char *msg, size_t n)
{
    typedef struct named {
        const char *opt, *path, *derived; /* path: the option's value; derived: a file written beside it */
    } named;
    named in[4], out[12];
    int ni = 0, no = 0;
    if (strcmp(c->input, "-"))
        in[ni++] = (named){"--input", c->input, NULL};
    if (c->checkpoint)
        in[ni++] = (named){"--checkpoint", c->checkpoint, NULL};
    if (c->tokenizer)
        in[ni++] = (named){"--tokenizer", c->tokenizer, NULL};
    if (c->plan)
        in[ni++] = (named){"--plan", c->plan, NULL};
    /* the files written beside an output (names past PATH_MAX are cut:
     * such a name fails at open anyway) */
    char partial[PATH_MAX + 16], meta[PATH_MAX + 16], lock[PATH_MAX + 16], dump_partial[PATH_MAX + 16],
        dump_lock[PATH_MAX + 16], meta_tmp[PATH_MAX + 32];
    if (strcmp(c->output, "-")) {
        out[no++] = (named){"--output", c->output, NULL};
    }
    if (strcmp(c->output, "-") && !g1_path_is_stream(c->output)) {
        char *m = g1_meta_path(c->output);
        snprintf(meta, sizeof meta, "%s", m ? m : "");
        free(m);
        snprintf(partial, sizeof partial, "%s.partial", c->output);
        snprintf(lock, sizeof lock, "%s.lock", c->output);
        out[no++] = (named){"--output", c->output, partial};
        out[no++] = (named){"--output", c->output, meta};
        out[no++] = (named){"--output", c->output, lock};
        snprintf(meta_tmp, sizeof meta_tmp, "%s.tmp", meta); /* written, then renamed to meta */
        out[no++] = (named){"--output", c->output, meta_tmp};
    }
    if (c->dump_logits) {
        snprintf(dump_partial, sizeof dump_partial, "%s.partial", c->dump_logits);
        out[no++] = (named){"--dump-logits", c->dump_logits, NULL};
        out[no++] = (named){"--dump-logits", c->dump_logits, dump_partial};
        snprintf(dump_lock, sizeof dump_lock, "%s.lock", c->dump_logits);
        out[no++] = (named){"--dump-logits", c->dump_logits, dump_lock};
    }
    if (c->trace) /* written as TRACE.tmp.PID.RANDOM, a name of its own, then renamed */
        out[no++] = (named){"--trace", c->trace, NULL};
    int bad = 0;
    for (int i = 0; i < no && !bad; i++) {
        const named *o = &out[i];
        const char *what = o->derived ? o->derived : o->path;
        if (g1_path_is_dir(what)) {
            snprintf(msg, n, "%s %s is a directory: give a file name", o->opt, what);
            bad = 1;
        }
        for (int k = 0; k < ni && !bad; k++)
            if (g1_path_same(what, in[k].path)) {
                if (o->derived)
                    snprintf(msg, n, "%s %s would write %s, which is the %s file: choose another output name",
                             o->opt, o->path, what, in[k].opt);
                else
                    snprintf(msg, n, "%s %s is the %s file: the run would replace it; write the results to "
                                     "another file", o->opt, what, in[k].opt);
                bad = 1;
            }
        for (int k = 0; k < i && !bad; k++) {
            const char *other = out[k].derived ? out[k].derived : out[k].path;
            if (strcmp(o->opt, out[k].opt) && g1_path_same(what, other)) {
                if (out[k].derived || o->derived)
                    snprintf(msg, n, "%s %s and %s %s both write %s: choose other names", out[k].opt, out[k].path,
                             o->opt, o->path, what);
                else
                    snprintf(msg, n, "%s %s and %s %s name the same file", out[k].opt, out[k].path, o->opt, what);
                bad = 1;
            }
        }
    }
    /* the trace is written last, after the whole run: a directory it
     * cannot go to is said now, not then */
    if (c->trace && !bad) {
        char dir[PATH_MAX + 16];
        g1_dir_of(c->trace, dir, sizeof dir);
        if (!g1_path_is_dir(dir)) {
            snprintf(msg, n, "--trace %s: the directory %s does not exist", c->trace, dir);
            bad = 1;
        } else if (access(dir, W_OK | X_OK) != 0) {
            snprintf(msg, n, "--trace %s: cannot write in the directory %s: %s", c->trace, dir, strerror(errno));
            bad = 1;
        } else {
            int cap;
            if (g1_trace_cap(&cap) != G1_OK) {
                snprintf(msg, n, "%s", g1_last_error());
                bad = 1;
            }
        }
    }
    return bad;
}
