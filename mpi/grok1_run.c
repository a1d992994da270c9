/* grok1-run: score or complete JSONL requests with a Grok-1 checkpoint (or a
 * synthetic model), on one process or as an MPI job of P stages x E expert
 * slots. This file is the command line, the plan, loading each rank's share
 * of the weights and the file handling; the scheduler is driver.c, the
 * distributed runtime dist.h. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "config.h"
#include "cpu.h"
#include "cuda/cuda_engine.h"
#include "cuda/cuda_tune.h"
#include "dist.h"
#include "driver.h"
#if G1_HAVE_HDF5
#include "dump_writer.h"
#endif
#include "fault.h"
#include "fnv1a.h"
#include "g1_version.h"
#include "cli_opt.h"
#include "durable.h"
#include "paths.h"
#include "progress.h"
#include "resume.h"
#include "plan.h"
#include "engine.h"
#include "requests.h"
#include "status.h"
#include "synth.h"
#include "tokenizer.h"
#include "weights.h"
#include "world.h"
#if G1_HAVE_HDF5
#include "ckpt.h"
#include "h5util.h"
#endif

/* for --version */
#if G1_HAVE_HDF5
static const int built_with_hdf5 = 1;
#else
static const int built_with_hdf5 = 0;
#endif

enum { EXIT_DATA = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 3 };

/* Set by SIGTERM / SIGINT / SIGUSR1 on rank 0: stop taking requests, flush,
 * exit 3. g_stop_signal is the first of them, which the closing message
 * names (SIGINT then SIGTERM: "interrupted by signal 2"): set once, by a
 * compare-exchange on a lock-free atomic (safe in a handler, and when two
 * signals reach two threads at once). */
static atomic_int g_stop_signal;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the signal handler needs a lock-free atomic_int");
static volatile int g_stop;

static void on_stop_signal(int sig)
{
    int none = 0;
    atomic_compare_exchange_strong(&g_stop_signal, &none, sig);
    g_stop = 1;
}

typedef struct cli {
    const char *checkpoint, *input, *output, *dump_logits, *synthetic;
    /* --dump-logits: the file's canonical absolute name, and that name
     * relative to the canonical folder of --output (NULL: unknown; a stream
     * output has no meta file); recorded in OUT.meta.json for --resume */
    char *dump_path, *dump_from_output;
    g1_run_mode mode;
    int have_mode;
    int check_input; /* --check-input: read the input as a run would, report, exit */
    int skip_checksums; /* --skip-checksums: read the checkpoint without comparing its checksums */
    int max_new_tokens, batch_size, max_batch_tokens, threads;
    unsigned long long seed;
    int stages, ep, micro_batches, verbose, resume;
    g1_progress_mode progress;
    double progress_interval;
    const char *plan, *layers_per_stage, *trace, *tokenizer;
    g1_sample_opts sample;
    int top_logprobs, truncate_left;
    int max_context; /* positions per sequence; 0: the model's max_seq_len */
    double mem_per_rank;
    double dump_buffer; /* --dump-buffer: bytes of logits rows the dump writer may queue (0: 1 GiB) */
    int backend; /* -1: cuda when built with it and a GPU is visible, else cpu */
    g1_cuda_gemm cuda_gemm;
    int cuda_graphs; /* --cuda-graphs: -1 on (the default), 0 off, N > 0 keep at most N */
    g1_cuda_opts cuda_tune; /* --cuda-tune (zeros: the defaults) */
    int kv_bf16; /* --kv-cache bf16 */
    int prefix_cache; /* --prefix-cache on (the default) */
    int gpu_direct; /* -1 auto, 0 off, 1 on */
    int shard, shards; /* --shard K/N; shards 0: not given */
    int balance; /* --balance: -1 auto (prompt in score mode, else decode), 0 decode, 1 prompt */
} cli;

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
static int launched_rank(void)
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

/* The command line's fault, kept by usage_error and said by usage_exit. */
static char usage_msg[2048];

/* Keep the fault in usage_msg (rank-prefixed under a launcher); main says
 * it through usage_exit, once. */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    char *msg = usage_msg;
    int rank = launched_rank();
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
static int usage_agree(const g1_world *w, int failed, int *stopped)
{
    *stopped = atomic_load(&g_stop_signal);
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
static int usage_exit(int *argc, char ***argv)
{
    int rank = launched_rank(), size = launched_size();
    if (rank >= 0 && size > 1) {
        g1_world w;
        if (g1_world_init(argc, argv, &w) == G1_OK && w.size > 1) {
            int stopped;
            (void)usage_agree(&w, 1, &stopped);
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

/* Bounds on what the command line may ask for: threads per process (far
 * above any machine's cores, far below what makes the OpenMP runtime fail)
 * and sequence slots (--micro-batches x --batch-size: far above what any
 * GPU's or host's KV caches hold, far below the scheduler's int limits). */
#define G1_MAX_THREADS 4096
#define G1_MAX_SLOTS 65536

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

/* 0: run; 1: --help or --version was printed; -1: error printed. */
static int parse_args(int argc, char **argv, cli *c)
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
            int v;
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

/* The files a run reads and writes must be distinct: every output is
 * completed by a rename over its final name, which would silently replace
 * an input (the requests, the checkpoint) named as an output. Checked by
 * rank 0 before anything is read; 0 or a message in msg. */
static int check_files(const cli *c, char *msg, size_t n)
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

/* ---- model ---- */

typedef struct model {
    const cli *c;
    g1_config cfg;
    unsigned long long bytes_read, bytes_checked;
#if G1_HAVE_HDF5
    g1_ckpt *ck;
#endif
} model;

/* Read the config (cheap, checks the file); weights come in model_part. */
static g1_status model_open(const cli *c, model *m)
{
    m->c = c;
    if (c->synthetic) {
        G1_TRY(g1_config_preset(c->synthetic, &m->cfg));
        return g1_config_validate(&m->cfg);
    }
#if G1_HAVE_HDF5
    G1_TRY(g1_ckpt_open(c->checkpoint, &m->ck));
    g1_ckpt_set_checksums(m->ck, !c->skip_checksums);
    G1_TRY(g1_ckpt_check_header(m->ck));
    m->cfg = *g1_ckpt_config(m->ck);
    return G1_OK;
#else
    return G1_FAIL(G1_ERR_ARG, "built without HDF5");
#endif
}

/* A part of this rank's share (the engine's weights source, which asks for
 * the share at once or, on a GPU, a layer at a time): a checkpoint is read
 * only where the share lies. */
static g1_status model_part(const g1_weights_source *src, int l0, int l1, int with_embedding, g1_weights *w)
{
    model *m = src->ctx;
    const g1_config *cfg = &m->cfg;
    if (m->c->synthetic) {
        int blocks[G1_NUM_QMAT];
        g1_synth_blocks(cfg, blocks);
        G1_TRY(g1_weights_realloc(w, cfg, l0, l1, src->expert0, src->expert1, blocks, with_embedding));
        g1_synth s = {.cfg = *cfg, .seed = m->c->seed};
        g1_status st = g1_synth_weights(&s, w);
        if (st != G1_OK)
            g1_weights_free(w);
        return st;
    }
#if G1_HAVE_HDF5
    g1_status st = g1_ckpt_load_reuse(m->ck, l0, l1, src->expert0, src->expert1, with_embedding, w);
    m->bytes_read = g1_ckpt_bytes_read(m->ck);
    m->bytes_checked = g1_ckpt_bytes_checked(m->ck);
    return st;
#else
    (void)l0, (void)l1, (void)with_embedding;
    g1_weights_free(w);
    return G1_FAIL(G1_ERR_ARG, "built without HDF5");
#endif
}

/* The checkpoint is closed once the engine holds its weights. */
static void model_close(model *m)
{
#if G1_HAVE_HDF5
    if (m->ck)
        g1_ckpt_close(m->ck);
    m->ck = NULL;
#endif
    (void)m;
}

/* ---- files ---- */

typedef struct files {
    FILE *in, *out;
    char *partial; /* OUT.partial, NULL for stdout or a stream (is_stream) */
    g1_out_lock lock; /* OUT.lock, held for the run's life */
    int meta_ok;   /* OUT.meta.json describes this run (written, or checked and rewritten by a resume) */
    int fresh;     /* OUT.partial and OUT.meta.json were made by this run, not a resume (an earlier OUT removed) */
    int dump_made; /* DUMP.partial was created by this run */
    json_t *done_ids; /* --resume: ids of the results already in OUT.partial */
    int left_known;   /* a resume from a regular file checked the kept results against the input before
                       * changing anything: nothing_left says whether any request follows them */
    int nothing_left;
    /* the requests OUT.meta.json's record of the input covers, which are
     * all the run reads (g1_driver_opts) */
    int input_bounded;
    long long input_bytes;
    int64_t input_requests;
#if G1_HAVE_HDF5
    g1_logits_file *logits;
    g1_dump_writer *dw; /* writes it on a thread of its own during the run */
    char *dump_run; /* --dump-logits: what the dump records of this run (g1_dump_run_record) */
    g1_out_lock dump_lock; /* DUMP.lock, held for the run's life */
    char dump_unfit[300]; /* a resume: why the dump's datasets do not fit the kept results ("": they do) */
#endif
} files;

#if G1_HAVE_HDF5
/* The dump's sink (ctx: the files): rows go to the writer's thread
 * (dump_writer.h), which makes every HDF5 call of the dump while the run
 * goes on. */
static g1_status dump_write(void *ctx, int64_t k, int n_rows_total, int row0, int nrows, const float *logits,
                            const int *tokens, const char *id_json)
{
    files *f = ctx;
    return g1_dump_writer_write(f->dw, k, n_rows_total, row0, nrows, logits, tokens, id_json);
}

static int dump_has(void *ctx, int64_t k, int n_rows_total, const int *tokens, const char *id_json)
{
    files *f = ctx;
    /* HDF5 on this thread: only once the writer's is idle */
    if (g1_dump_writer_drain(f->dw) != G1_OK)
        return G1_DUMP_ABSENT;
    return g1_logits_file_has(f->logits, k, n_rows_total, tokens, id_json);
}

static void dump_out(void *ctx, int64_t k)
{
    files *f = ctx;
    g1_dump_writer_result_out(f->dw, k);
}

static int dump_ready(void *ctx, int64_t k, int wait)
{
    files *f = ctx;
    return g1_dump_writer_ready(f->dw, k, wait);
}

/* the resume's look (kept_look) writes nothing */
static g1_status no_write(void *ctx, int64_t k, int n_rows_total, int row0, int nrows, const float *logits,
                          const int *tokens, const char *id_json)
{
    (void)ctx, (void)n_rows_total, (void)row0, (void)nrows, (void)logits, (void)tokens, (void)id_json;
    return G1_FAIL(G1_ERR_INTERNAL, "the check of a resume wrote the logits of request %lld", (long long)k);
}

/* A resume's look at the dump before anything is renamed: every kept
 * result's dataset, with its rows, tokens and id; the first that is not
 * there (or not that request's) noted. */
typedef struct kept_look {
    g1_logits_file *f;
    long missing;
    int64_t first_k;
    int first_rows, first_why;
} kept_look;

static int kept_has(void *ctx, int64_t k, int n_rows_total, const int *tokens, const char *id_json)
{
    kept_look *kl = ctx;
    int has = g1_logits_file_has(kl->f, k, n_rows_total, tokens, id_json);
    if (has != G1_DUMP_THERE && !kl->missing++) {
        kl->first_k = k;
        kl->first_rows = n_rows_total;
        kl->first_why = has;
    }
    return G1_DUMP_THERE;
}
#endif

/* The input, or stdin for "-"; a directory is refused by name (Linux
 * opens one for reading, and only the first read fails). */
static g1_status open_input(const char *path, FILE **in)
{
    if (!strcmp(path, "-")) {
        *in = stdin;
        return G1_OK;
    }
    struct stat sb;
    if (!(*in = fopen(path, "r")))
        return G1_FAIL(G1_ERR_IO, "cannot open input %s: %s", path, strerror(errno));
    if (fstat(fileno(*in), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fclose(*in);
        *in = NULL;
        return G1_FAIL(G1_ERR_IO, "cannot read input %s: %s", path, strerror(EISDIR));
    }
    return G1_OK;
}

static g1_status files_open_input(const cli *c, files *f)
{
    return open_input(c->input, &f->in);
}

/* What made the output: checked by --resume (resume.h). Layout and
 * performance options are left out: they do not change results. */
static json_t *run_meta(const cli *c, const g1_config *cfg, const g1_engine_opts *eo, const char *ckpt_fp,
                        const char *tok_fp)
{
    json_t *model = json_object();
    for (int i = 0; i < g1_num_params; i++) {
        const g1_param_desc *p = &g1_params[i];
        const char *v = (const char *)cfg + p->offset;
        json_object_set_new(model, p->name, p->type == G1_PARAM_INT ? json_integer(*(const int *)(const void *)v)
                                                                    : json_real(*(const double *)(const void *)v));
    }
    json_t *source = json_object();
    if (c->synthetic) {
        json_object_set_new(source, "synthetic", json_string(c->synthetic));
        json_object_set_new(source, "seed", json_integer((json_int_t)c->seed));
    } else {
        /* the contents (g1_ckpt_fingerprint): the same for a checkpoint and
         * its parts, another for another model of the same shape */
        json_object_set_new(source, "checkpoint_fnv1a64", json_string(ckpt_fp));
    }
    json_t *settings = json_object();
    json_object_set_new(settings, "max_new_tokens", json_integer(c->max_new_tokens));
    json_object_set_new(settings, "temperature", json_real(c->sample.temperature));
    json_object_set_new(settings, "top_p", json_real(c->sample.top_p));
    json_object_set_new(settings, "top_k", json_integer(c->sample.top_k));
    json_object_set_new(settings, "seed", json_integer((json_int_t)c->sample.seed));
    json_object_set_new(settings, "top_logprobs", json_integer(c->top_logprobs));
    json_object_set_new(settings, "truncate", json_string(c->truncate_left ? "left" : "none"));
    /* only when it bounds the model's context: a run without it records none */
    if (c->max_context && c->max_context < cfg->max_seq_len)
        json_object_set_new(settings, "max_context", json_integer(c->max_context));
    /* a resume continues the dump only where the first run made one */
    if (c->dump_logits)
        json_object_set_new(settings, "dump_logits", json_string(c->dump_logits));
    /* and the file it is, wherever the run was started from: a resume
     * from another folder, where the name is another file, is refused
     * (g1_meta_check); a merge finds the dump by it */
    if (c->dump_logits && c->dump_path)
        json_object_set_new(settings, "dump_logits_path", json_string(c->dump_path));
    if (c->dump_logits && c->dump_path && c->dump_from_output)
        json_object_set_new(settings, "dump_logits_from_output", json_string(c->dump_from_output));
    /* the backends agree only within a tolerance (docs/CUDA.md) */
    json_object_set_new(settings, "backend", json_string(eo->backend == G1_BACKEND_CUDA ? "cuda" : "cpu"));
    /* only when bf16: outputs made before the option resume as they were */
    if (eo->kv_cache == G1_KV_BF16)
        json_object_set_new(settings, "kv_cache", json_string("bf16"));
    if (eo->backend == G1_BACKEND_CUDA)
        json_object_set_new(settings, "cuda_gemm", json_string(eo->cuda_gemm == G1_CUDA_GEMM_F32      ? "f32"
                                                               : eo->cuda_gemm == G1_CUDA_GEMM_BF16X2 ? "bf16x2"
                                                                                                      : "bf16"));
    /* only when sharded: the output of one shard is no other run's output;
     * grok1-merge joins the N of them */
    if (c->shards > 1)
        json_object_set_new(settings, "shard", json_sprintf("%d/%d", c->shard, c->shards));
    /* the contents of the file loaded (g1_tok_fingerprint): another of the
     * same size tokenizes text otherwise */
    if (c->tokenizer)
        json_object_set_new(settings, "tokenizer_fnv1a64", json_string(tok_fp));
    return json_pack("{s:s, s:i, s:s, s:o, s:o, s:o}", "format", "grok1-run-meta", "version", 1, "mode",
                     g1_run_mode_name(c->mode), "model", model, "source", source, "settings", settings);
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* ---- the room a logits dump needs ---- */

/* About the bytes a logits dump of `rows` rows in `requests` datasets of
 * `vocab` columns takes: the float32 logits, each row's token id, and
 * HDF5's objects (about 400 bytes a dataset measured; 1 KiB counted). */
static double dump_bytes(int64_t rows, int64_t requests, int vocab)
{
    return (double)rows * (4.0 * vocab + 4.0) + 1024.0 * (double)requests + 65536.0;
}

/* The bytes free to this user on the file system of `path`'s folder (its
 * name into dir); -1 when statvfs cannot tell. */
static double room_for(const char *path, char *dir, size_t n)
{
    g1_dir_of(path, dir, n);
    struct statvfs sv;
    if (statvfs(dir, &sv) != 0)
        return -1;
    return (double)sv.f_bavail * (double)sv.f_frsize;
}

/* The bytes DUMP.partial holds (0: none); the room it holds reserved past
 * its end (g1_h5_reserve) is added to *room when that is known (>= 0). */
static double partial_dump_held(const char *dump, double *room)
{
    char partial[4200];
    snprintf(partial, sizeof partial, "%s.partial", dump);
    struct stat sb;
    if (stat(partial, &sb) != 0)
        return 0;
    double held = (double)sb.st_size;
    if (*room >= 0 && (double)sb.st_blocks * 512.0 > held)
        *room += (double)sb.st_blocks * 512.0 - held;
    return held;
}

#if G1_HAVE_HDF5
/* --resume with --dump-logits and `kept` results in OUT.partial: continue
 * the dump, its datasets after the kept results' removed (g1_logits_file_
 * prune). A dump that cannot be continued (unreadable, or metadata a job
 * killed mid-flush left inconsistent) is set aside as DUMP.partial.damaged
 * and the run starts over, every request again (the results come out the
 * same); with the input on stdin (which cannot be read twice) it is refused. */
static g1_status continue_dump(const cli *c, const g1_config *cfg, files *f, size_t kept)
{
    /* the input line of the last kept result: this shard's kept-th request */
    int64_t nth = c->shards > 1 ? (int64_t)(kept - 1) * c->shards + c->shard + 1 : (int64_t)kept;
    int64_t k_last = g1_request_line(c->input, nth), found = 0;
    char why[1024], aside[4096];
    g1_status st = g1_logits_file_resume(c->dump_logits, cfg->vocab_size, &f->logits);
    if (st != G1_OK)
        snprintf(why, sizeof why, "%s", g1_last_error());
    /* another run's (checked before anything was renamed when the input is
     * a file; here for stdin) */
    const char *run = st == G1_OK && f->logits ? g1_logits_file_run(f->logits) : NULL;
    if (run && strcmp(run, f->dump_run))
        return G1_FAIL(G1_ERR_ARG, "cannot resume: the logits dump %s was written by another run (its record: %s; "
                                   "this run's: %s): give this run's dump, or start afresh without --resume",
                       c->dump_logits, run, f->dump_run);
    if (st == G1_OK && f->logits && f->dump_unfit[0]) {
        st = G1_ERR_FORMAT;
        snprintf(why, sizeof why, "the logits dump %s.partial cannot be continued: %s", c->dump_logits, f->dump_unfit);
    } else if (st == G1_OK && f->logits && k_last >= 0) {
        int64_t checked = 0;
        double t0 = g1_trace_now();
        st = g1_logits_file_prune(f->logits, k_last, !c->skip_checksums, &found, &checked);
        double dt = g1_trace_now() - t0;
        if (st == G1_OK && found != (int64_t)kept)
            st = G1_FAIL(G1_ERR_FORMAT, "it holds the logits of %lld of the %zu results kept in %s",
                         (long long)found, kept, f->partial);
        if (st == G1_OK && c->verbose)
            fprintf(stderr, "grok1-run: logits dump: the %zu results kept have their logits there; %lld read back "
                            "against their checksums%s (%.2f s)\n",
                    kept, (long long)checked,
                    c->skip_checksums ? " (--skip-checksums)"
                    : checked < found ? ", the others were on disk (synced) before the interruption"
                                      : "",
                    dt);
        if (st != G1_OK)
            snprintf(why, sizeof why, "the logits dump %s.partial cannot be continued: %s", c->dump_logits,
                     g1_last_error());
    }
    if (st == G1_OK || st == G1_ERR_IO)
        return st;
    if (k_last < 0)
        return G1_FAIL(st, "%s; with the input on stdin or a pipe the run cannot start over by itself: move the dump "
                           "away (and the output beside it) to start afresh",
                       why);
    /* the results first (on the disk), then the dump set aside: a kill
     * between the two leaves no results and a dump a resume sets aside in
     * turn; the other order left results without their dump, which every
     * later resume refuses */
    if (fflush(f->out) != 0 || ftruncate(fileno(f->out), 0) != 0 || fsync(fileno(f->out)) != 0)
        return G1_FAIL(G1_ERR_IO, "cannot empty %s to start over: %s", f->partial, strerror(errno));
    json_array_clear(f->done_ids);
    G1_TRY(g1_logits_file_set_aside(c->dump_logits, f->logits, aside, sizeof aside));
    f->logits = NULL;
    fprintf(stderr, "grok1-run: warning: %s; it is kept as %s, and the %zu results already in %s are computed "
                    "again with the rest (they come out the same)\n",
            why, aside, kept, f->partial);
    return G1_OK;
}
#endif

/* The file at `path` recorded in old[group] by its size (WHAT_bytes), as
 * before its fingerprint (WHAT_fnv1a64): meta[group] records it so too. */
static void legacy_size(const char *path, json_t *old, json_t *meta, const char *group, const char *what)
{
    char bytes[64], fp[64];
    snprintf(bytes, sizeof bytes, "%s_bytes", what);
    snprintf(fp, sizeof fp, "%s_fnv1a64", what);
    json_t *rec = json_object_get(old, group), *mine = json_object_get(meta, group);
    if (!path || !json_object_get(rec, bytes) || json_object_get(rec, fp) || !json_object_get(mine, fp))
        return;
    struct stat sb;
    json_object_del(mine, fp);
    json_object_set_new(mine, bytes, json_integer(stat(path, &sb) == 0 ? (json_int_t)sb.st_size : -1));
}

/* An output recorded before the checkpoint's or the tokenizer's fingerprint
 * (their sizes only): resumed by the same rule, and kept so. */
static void legacy_records(const cli *c, const char *meta_path, json_t *meta)
{
    json_t *old = json_load_file(meta_path, 0, NULL);
    legacy_size(c->checkpoint, old, meta, "source", "checkpoint");
    legacy_size(c->tokenizer, old, meta, "settings", "tokenizer");
    json_decref(old);
}

#if G1_HAVE_HDF5
/* Rank 0, the dump made or continued and the input a file: a warning when
 * the rows of this run's requests (a pass over the input, as --check-input
 * makes it), less what a continued dump holds already, will not fit in the
 * free space of the dump's file system; with --verbose the estimate. */
static g1_status dump_room(const cli *c, const g1_config *cfg, const g1_driver_opts *check, files *f)
{
    g1_logits_sink any = {0}; /* as with the dump: every position goes through the model */
    g1_driver_opts o = *check;
    o.dump = &any;
    o.done_ids = NULL;
    g1_input_stats s;
    G1_TRY(g1_driver_check_input(cfg, &o, f->in, NULL, "", 0, &s));
    if (fseek(f->in, 0, SEEK_SET) != 0)
        return G1_FAIL(G1_ERR_IO, "cannot read the input %s again: %s", c->input, strerror(errno));
    char dir[4096], a[32], b[32], h[32];
    double room = room_for(c->dump_logits, dir, sizeof dir);
    double held = partial_dump_held(c->dump_logits, &room);
    double need = dump_bytes(s.prompt_tokens, s.requests - s.refused, cfg->vocab_size) - held;
    if (c->verbose)
        fprintf(stderr, "grok1-run: logits dump: %lld rows of %d float32 logits, about %s (%s written); %s has %s "
                        "free\n",
                (long long)s.prompt_tokens, cfg->vocab_size, g1_bytes_text(a, sizeof a, need + held),
                g1_bytes_text(h, sizeof h, held), dir,
                room >= 0 ? g1_bytes_text(b, sizeof b, room) : "an unknown amount");
    if (room >= 0 && need > room)
        fprintf(stderr, "grok1-run: warning: the logits dump %s needs about %s more (%lld rows of %d float32 logits "
                        "in all), but %s has %s free: the run will stop when the disk is full, keeping the results "
                        "and logits written (--resume continues once there is room)\n",
                c->dump_logits, g1_bytes_text(a, sizeof a, need), (long long)s.prompt_tokens, cfg->vocab_size, dir,
                g1_bytes_text(b, sizeof b, room));
    return G1_OK;
}
#endif

static g1_status files_open_outputs(const cli *c, const g1_config *cfg, const g1_engine_opts *eo,
                                    const char *ckpt_fp, const char *tok_fp, const g1_driver_opts *check, files *f)
{
#if G1_HAVE_HDF5
    if (c->dump_logits) {
        json_t *m = run_meta(c, cfg, eo, ckpt_fp, tok_fp);
        f->dump_run = m ? g1_dump_run_record(m) : NULL;
        json_decref(m);
        if (!f->dump_run)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory");
        /* one writer per dump, as per output: two runs naming one dump (two
         * shards, say) would write over each other's datasets */
        G1_TRY(g1_lock_output(c->dump_logits, "grok1-run", "run again with --resume", &f->dump_lock));
    }
#endif
    if (!strcmp(c->output, "-")) {
        f->out = stdout;
    } else if (g1_path_is_stream(c->output)) {
        if (!(f->out = fopen(c->output, "w")))
            return G1_FAIL(G1_ERR_IO, "cannot open %s for writing: %s", c->output, strerror(errno));
    } else {
        G1_TRY(g1_lock_output(c->output, "grok1-run", "run again with --resume", &f->lock));
        size_t n = strlen(c->output) + sizeof ".partial";
        f->partial = malloc(n);
        char *meta_path = g1_meta_path(c->output);
        json_t *meta = run_meta(c, cfg, eo, ckpt_fp, tok_fp);
        if (!f->partial || !meta_path || !meta) {
            free(meta_path);
            json_decref(meta);
            return G1_FAIL(G1_ERR_NOMEM, "out of memory");
        }
        snprintf(f->partial, n, "%s.partial", c->output);
        g1_status st = G1_OK;
        /* which requests the results answer: the input's bytes (a regular
         * file; stdin or a pipe cannot be read twice), or a shard's own
         * requests */
        int input_file = g1_input_rereadable(c->input);
        if (input_file) {
            json_t *rec = NULL;
            st = c->shards > 1 ? g1_shard_record(c->input, c->shard, c->shards, -1, &rec)
                               : g1_input_record(c->input, &rec);
            if (st == G1_OK) {
                /* requests appended during the run are not read: the
                 * record could not vouch for them (a --resume does them) */
                json_t *ext = json_object_get(rec, c->shards > 1 ? "requests" : "bytes");
                f->input_bounded = json_is_integer(ext);
                f->input_bytes = c->shards > 1 ? -1 : (long long)json_integer_value(ext);
                f->input_requests = c->shards > 1 ? (int64_t)json_integer_value(ext) : -1;
                json_object_set_new(meta, "input", rec);
            }
        }
        int resuming = c->resume && (exists(f->partial) || exists(c->output));
        if (st == G1_OK && resuming) {
            /* check before touching anything; a finished OUT becomes the
             * partial file it was, and is renamed back at the end */
            json_t *old_input = NULL;
            legacy_records(c, meta_path, meta);
#if G1_HAVE_HDF5
            /* a dump made afresh by this resume records the run as its meta
             * file does (a legacy size record kept) */
            if (c->dump_logits) {
                char *r = g1_dump_run_record(meta);
                if (r) {
                    free(f->dump_run);
                    f->dump_run = r;
                }
            }
#endif
            st = g1_meta_check(meta_path, meta, &old_input);
            if (st == G1_OK && old_input && input_file)
                st = g1_input_check(c->input, old_input, meta_path, c->shard, c->shards);
            /* an input read once (stdin, a pipe) cannot be checked: the
             * record of the file the output was made from stays, so a later
             * resume from a file is still checked against it */
            if (st == G1_OK && !input_file) {
                if (old_input)
                    json_object_set(meta, "input", old_input);
                fprintf(stderr, "grok1-run: warning: the input is read once (stdin or a pipe), so it cannot be "
                                "checked against the requests the kept results answer%s%s%s: only their ids are "
                                "matched; give the same requests in the same order\n",
                        old_input ? " (" : "", old_input ? meta_path : "", old_input ? " records them" : "");
            }
            json_decref(old_input);
            /* the kept results, read where they are (a finished OUT keeps
             * its name until nothing can refuse the resume) */
            int finished = !exists(f->partial);
            if (st == G1_OK)
                st = g1_resume_scan(finished ? c->output : f->partial, &f->done_ids);
#if G1_HAVE_HDF5
            if (st == G1_OK && c->dump_logits && json_array_size(f->done_ids) > 0 &&
                !g1_logits_file_present(c->dump_logits))
                st = G1_FAIL(G1_ERR_ARG, "cannot resume: the %zu results already in %s have no logits dump to "
                                         "continue (neither %s.partial nor %s exists): start afresh without --resume",
                             json_array_size(f->done_ids), finished ? c->output : f->partial, c->dump_logits,
                             c->dump_logits);
#endif
            /* the kept results against the input, as the run checks them
             * (ids; the request after them parsed), before anything is
             * renamed or rewritten; a dump's datasets are checked as it is
             * continued, below */
            if (st == G1_OK && input_file) {
                g1_driver_opts o = *check;
                o.done_ids = f->done_ids;
                o.dump = NULL;
#if G1_HAVE_HDF5
                /* and each one's logits in the dump (there, with its rows),
                 * read-only: the dump of another run is refused here, not
                 * after OUT was renamed; a dump that cannot be read at all
                 * is continue_dump's to set aside */
                kept_look kl = {0};
                g1_logits_sink kept_sink;
                char why[600], dump_partial[PATH_MAX + 16];
                snprintf(dump_partial, sizeof dump_partial, "%s.partial", c->dump_logits ? c->dump_logits : "");
                /* a finished DUMP (no DUMP.partial) was whole on the disk
                 * before it took its name: no kill left it short */
                int dump_finished = c->dump_logits && !exists(dump_partial);
                g1_status ro = c->dump_logits && json_array_size(f->done_ids) > 0
                                   ? g1_logits_file_open_read(c->dump_logits, cfg->vocab_size, &kl.f)
                                   : G1_ERR_ARG;
                if (ro == G1_OK) {
                    kept_sink = (g1_logits_sink){.write = no_write, .has = kept_has, .ctx = &kl};
                    o.dump = &kept_sink;
                    if (g1_dump_run_differs(g1_logits_file_run(kl.f), meta, "this run", why, sizeof why))
                        st = G1_FAIL(G1_ERR_ARG, "cannot resume: the logits dump %s was written by another run "
                                                 "(%s): give this run's dump, or start afresh without --resume",
                                     c->dump_logits, why);
                } else if (c->dump_logits && json_array_size(f->done_ids) > 0 && dump_finished) {
                    snprintf(why, sizeof why, "%s", g1_last_error());
                    st = G1_FAIL(G1_ERR_ARG, "cannot resume: %s is a finished file, but %s; it is left as it is "
                                             "(not set aside as a dump a kill damaged): give this run's dump, or "
                                             "start afresh without --resume",
                                 c->dump_logits, why);
                }
#endif
                if (st == G1_OK)
                    st = g1_driver_nothing_left(cfg, &o, f->in, &f->nothing_left);
#if G1_HAVE_HDF5
                g1_logits_file_abort(kl.f);
                /* not there, or of other rows: continue_dump starts over */
                if (kl.missing)
                    snprintf(f->dump_unfit, sizeof f->dump_unfit,
                             "%ld of the results kept have no logits there (the first: %s logits/%lld of %d rows, "
                             "one per token)",
                             kl.missing,
                             kl.first_why == G1_DUMP_OTHER_TOKENS ? "other tokens than its request's in"
                             : kl.first_why == G1_DUMP_OTHER_ID   ? "another request's id on"
                                                                  : "no",
                             (long long)kl.first_k, kl.first_rows);
                /* a finished dump without the kept results' logits is
                 * another output's (a relative --dump-logits resolved in
                 * another folder, or one named by two outputs): setting it
                 * aside took it from the output it belongs to */
                if (st == G1_OK && kl.missing && dump_finished)
                    st = G1_FAIL(G1_ERR_ARG, "cannot resume: %s is a finished logits dump that is not the one of the "
                                             "results kept in %s: %s; it is left as it is (a relative --dump-logits "
                                             "names a file in the current folder): give this run's dump, or start "
                                             "afresh without --resume",
                                 c->dump_logits, finished ? c->output : f->partial, f->dump_unfit);
#endif
                f->left_known = st == G1_OK;
                if (st == G1_OK && fseek(f->in, 0, SEEK_SET) != 0)
                    st = G1_FAIL(G1_ERR_IO, "cannot read the input %s again: %s", c->input, strerror(errno));
            }
            /* the record now describes this input (requests may have been
             * appended): written once nothing above can refuse the resume */
            if (st == G1_OK)
                st = g1_meta_write(meta_path, meta);
            f->meta_ok = st == G1_OK;
            if (st == G1_OK && finished && rename(c->output, f->partial) != 0)
                st = G1_FAIL(G1_ERR_IO, "cannot rename %s to %s: %s", c->output, f->partial, strerror(errno));
            if (st == G1_OK && !(f->out = fopen(f->partial, "a")))
                st = G1_FAIL(G1_ERR_IO, "cannot append to %s: %s", f->partial, strerror(errno));
        } else if (st == G1_OK) {
            /* OUT and its meta file always describe one run, so an OUT of
             * an earlier run goes before the meta file describes this one
             * (a merge or a reader would take it for this run's) */
            if (!(f->out = fopen(f->partial, "w")))
                st = G1_FAIL(G1_ERR_IO, "cannot create %s: %s", f->partial, strerror(errno));
            if (st == G1_OK && exists(c->output)) {
                if (unlink(c->output) != 0) {
                    st = G1_FAIL(G1_ERR_IO, "cannot remove %s, an earlier run's output that this run replaces: %s",
                                 c->output, strerror(errno));
                    fclose(f->out); /* nothing of this run stays: OUT and its meta file are as they were */
                    f->out = NULL;
                    unlink(f->partial);
                } else
                    fprintf(stderr, "grok1-run: removed %s, an earlier run's output: this run replaces it "
                                    "(--resume continues one instead)\n", c->output);
            }
            f->fresh = st == G1_OK;
            if (st == G1_OK)
                st = g1_meta_write(meta_path, meta);
            f->meta_ok = st == G1_OK;
        }
        free(meta_path);
        json_decref(meta);
        G1_TRY(st);
    }
#if G1_HAVE_HDF5
    if (c->dump_logits) {
        /* resuming the output: continue the dump an earlier run left
         * (DUMP.partial, or a finished DUMP); otherwise a new one */
        size_t kept = f->done_ids ? json_array_size(f->done_ids) : 0;
        /* with no result kept the dump holds nothing a resume needs: made
         * afresh, so one killed before its first result (perhaps before its
         * first flush: unreadable) is no obstacle */
        if (kept) {
            G1_TRY(continue_dump(c, cfg, f, kept));
            kept = json_array_size(f->done_ids); /* 0: the run starts over */
        }
        if (!f->logits && kept) /* checked above, before anything was renamed */
            return G1_FAIL(G1_ERR_INTERNAL, "the logits dump %s went away", c->dump_logits);
        if (!f->logits) {
            G1_TRY(g1_logits_file_create(c->dump_logits, cfg->vocab_size, f->dump_run, &f->logits));
            f->dump_made = 1;
            /* as OUT: a finished dump of an earlier run goes when this one
             * starts (also a --resume with nothing to resume), not when it
             * ends, or it would pass for this run's (its meta file names it)
             * while this one is unfinished or failed */
            struct stat sb;
            if ((!c->resume || f->fresh) && stat(c->dump_logits, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
                if (unlink(c->dump_logits) != 0)
                    return G1_FAIL(G1_ERR_IO, "cannot remove %s, an earlier run's logits dump that this run "
                                              "replaces: %s", c->dump_logits, strerror(errno));
                fprintf(stderr, "grok1-run: removed %s, an earlier run's logits dump: this run replaces it "
                                "(--resume continues one instead)\n", c->dump_logits);
            }
        }
        G1_TRY(g1_dump_writer_new(f->logits, cfg->vocab_size, (uint64_t)c->dump_buffer, &f->dw));
        if (g1_input_rereadable(c->input))
            G1_TRY(dump_room(c, cfg, check, f));
    }
#else
    (void)cfg;
#endif
    return G1_OK;
}


/* Complete lines of a file (-1 when it cannot be read). */
static long long complete_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long long n = 0;
    int c;
    while ((c = getc(f)) != EOF)
        n += c == '\n';
    int bad = ferror(f);
    fclose(f);
    return bad ? -1 : n;
}

/* A run that stops before the end (a failed request, a signal) narrows the
 * meta file's record of the input to the requests its kept results answer
 * (the bytes up to the last of them; with --shard K/N the first K + (kept -
 * 1) N + 1 requests, the last kept one's included), so a resume accepts an
 * input edited after them: the request that failed, fixed. A run killed
 * outright keeps the record of the whole input, and a resume then refuses
 * any edit (of this shard's requests, for a shard). Best effort: on any
 * trouble the record stays as it was (stricter, never wrong). */
static void narrow_input_record(const cli *c, const files *f)
{
    if (!f->meta_ok || !f->partial || !g1_input_rereadable(c->input))
        return;
    long long kept = complete_lines(f->partial);
    int sharded = c->shards > 1;
    int64_t N = sharded ? c->shards : 1, K = sharded ? c->shard : 0;
    /* the requests the record is to cover; its extent: that count for a
     * shard's record, their bytes for a whole-input one */
    int64_t upto = kept < 0 ? -1 : kept == 0 ? 0 : K + (kept - 1) * N + 1;
    int64_t extent = sharded || upto < 0 ? upto : g1_request_end(c->input, upto);
    char *meta_path = g1_meta_path(c->output);
    json_t *meta = meta_path ? json_load_file(meta_path, 0, NULL) : NULL, *rec = NULL;
    json_t *old = json_object_get(meta, "input");
    json_t *ob = json_object_get(old, sharded ? "requests" : "bytes");
    /* only ever narrower, and only when the file still holds what the run
     * started from (a request edited during the run keeps the old record,
     * which a resume then refuses) */
    if (extent >= 0 && json_is_integer(ob) && extent <= json_integer_value(ob) &&
        g1_input_check(c->input, old, meta_path, c->shard, c->shards) == G1_OK &&
        (sharded ? g1_shard_record(c->input, c->shard, c->shards, upto, &rec)
                 : g1_input_record_prefix(c->input, extent, &rec)) == G1_OK) {
        json_object_set_new(meta, "input", rec);
        g1_status st = g1_meta_write(meta_path, meta);
        (void)st; /* best effort: the old record stays on failure */
    }
    json_decref(meta);
    free(meta_path);
}

/* A fresh run that failed or was stopped before its first result (a GPU
 * too small, a signal during the load, a bad first request) takes back
 * what it made, so no empty OUT.partial suggests a run to resume: a later
 * --resume finds nothing and starts afresh, as this run did (an OUT of an
 * earlier run was removed at its start). Not after a resume. 1 when
 * removed. */
static int take_back(const cli *c, files *f)
{
    struct stat sb;
    if (!f->fresh || stat(f->partial, &sb) != 0 || sb.st_size != 0 || exists(c->output))
        return 0;
    char *meta_path = g1_meta_path(c->output);
    if (!meta_path)
        return 0;
    int gone = unlink(f->partial) == 0;
    if (gone)
        unlink(meta_path);
    free(meta_path);
    if (gone && f->dump_made) {
        char dump[PATH_MAX + 16];
        snprintf(dump, sizeof dump, "%s.partial", c->dump_logits);
        unlink(dump);
    }
    return gone;
}

/* Before OUT gets its final name: the input still holds the requests the
 * run started from (its record in OUT.meta.json), or the results may answer
 * a mix of two versions of a file edited in place during the run. Requests
 * appended meanwhile pass (the record covers what was there). */
static g1_status input_unchanged(const cli *c, const files *f)
{
    if (!f->meta_ok || !g1_input_rereadable(c->input))
        return G1_OK;
    char *meta_path = g1_meta_path(c->output);
    json_t *meta = meta_path ? json_load_file(meta_path, 0, NULL) : NULL;
    json_t *rec = json_object_get(meta, "input");
    g1_status st = rec ? g1_input_check(c->input, rec, meta_path, c->shard, c->shards) : G1_OK;
    if (st != G1_OK)
        st = G1_FAIL(G1_ERR_ARG, "the input %s changed while the run read it (it no longer holds the requests "
                                 "%s recorded when the run started): the results, left in %s%s%s%s, may answer "
                                 "either version, so they get no final name; start afresh (move them and the meta "
                                 "file away)",
                     c->input, meta_path ? meta_path : "the meta file", f->partial,
                     c->dump_logits ? " (their logits in " : "", c->dump_logits ? c->dump_logits : "",
                     c->dump_logits ? ".partial)" : "");
    json_decref(meta);
    free(meta_path);
    return st;
}

/* Success, with the input as the run found it: complete the logits file,
 * then give OUT its final name, so OUT exists only when everything is
 * complete. Failure (ok == 0): leave OUT.partial for inspection
 * (take_back: not an empty one of a fresh run), create no final name. */
static g1_status files_close(const cli *c, files *f, int ok)
{
    g1_status st = G1_OK;
    if (f->in && f->in != stdin)
        fclose(f->in);
    /* the input first: when it changed under the run, neither OUT nor the
     * dump gets its final name */
    if (ok && f->out && f->out != stdout && f->partial && (st = input_unchanged(c, f)) != G1_OK)
        ok = 0;
#if G1_HAVE_HDF5
    /* the writer's thread ends first: what it had queued is written */
    g1_status wst = g1_dump_writer_free(f->dw);
    f->dw = NULL;
    if (wst != G1_OK && ok) {
        st = wst;
        ok = 0;
    }
    if (f->logits) {
        if (ok)
            st = g1_logits_file_finish(f->logits);
        else
            g1_logits_file_abort(f->logits);
        f->logits = NULL;
        ok = ok && st == G1_OK;
    }
#endif
    if (f->out && f->out != stdout && !f->partial) { /* a device or a pipe */
        if (fclose(f->out) != 0 && ok)
            st = G1_FAIL(G1_ERR_IO, "writing %s failed: %s", c->output, strerror(errno));
    } else if (f->out && f->out != stdout) {
        if (fclose(f->out) != 0 && ok)
            st = G1_FAIL(G1_ERR_IO, "writing %s failed: %s", f->partial, strerror(errno));
        else if (ok)
            st = g1_rename_durable(f->partial, c->output);
        if (!ok && !take_back(c, f)) {
            /* its checks must not replace this run's message */
            char why[2048];
            snprintf(why, sizeof why, "%s", st != G1_OK ? g1_last_error() : "");
            narrow_input_record(c, f);
            if (st != G1_OK)
                st = G1_FAIL(st, "%s", why);
        }
    } else if (f->out == stdout && fflush(stdout) != 0 && ok) {
        st = G1_FAIL(G1_ERR_IO, "writing stdout failed: %s", strerror(errno));
    }
    g1_unlock_output(&f->lock);
#if G1_HAVE_HDF5
    g1_unlock_output(&f->dump_lock);
#endif
    free(f->partial);
    json_decref(f->done_ids);
    f->done_ids = NULL;
#if G1_HAVE_HDF5
    free(f->dump_run);
    f->dump_run = NULL;
#endif
    return st;
}

/* ---- run ---- */

/* The sequence slots, once the stages are known (micro-batches default
 * to one per stage): at most G1_MAX_SLOTS. */
static g1_status check_slots(const cli *c, int P)
{
    long long M = c->micro_batches ? c->micro_batches : P;
    if (M * c->batch_size > G1_MAX_SLOTS)
        return G1_FAIL(G1_ERR_ARG, "%lld micro-batches%s x --batch-size %d = %lld sequence slots: at most %d", M,
                       c->micro_batches ? "" : " (one per stage)", c->batch_size, M * c->batch_size, G1_MAX_SLOTS);
    return G1_OK;
}

static int on_cuda(const cli *c);

/* Which GPUs this rank sees, as a key for g1_world_local_rank: a hash of
 * their UUIDs in order (0 off the cuda backend). Every rank calls it. */
static int gpu_set_key(const cli *c)
{
    if (!on_cuda(c))
        return 0;
    uint32_t h = 2166136261u;
    int n = g1_cuda_device_count();
    for (int d = 0; d < n; d++) {
        unsigned char u[16] = {0};
        if (g1_cuda_device_uuid(d, u) != G1_OK)
            u[0] = (unsigned char)d;
        for (int i = 0; i < 16; i++)
            h = (h ^ u[i]) * 16777619u;
    }
    return (int)(h & 0x7fffffff);
}

/* The backend and, for CUDA, this rank's GPU (its UUID into uuid, zeros
 * otherwise). The device is the rank's index among the ranks of its node
 * that see the same GPUs (MPI's shared-memory communicator split by
 * gpu_set_key; OMPI_COMM_WORLD_LOCAL_RANK or SLURM_LOCALID when MPI cannot
 * tell), modulo the GPUs it sees. With every GPU of the node visible
 * (mpirun) that is its index on the node; with each rank bound to its own
 * (Slurm --gpus-per-task=1, a wrapper setting CUDA_VISIBLE_DEVICES) device
 * 0; with groups of ranks each seeing a group of GPUs (Slurm
 * --gpu-bind=closest: the GPUs of a rank's socket, ranks placed cyclically
 * across sockets) the rank's index within its group. gpu_shared checks
 * afterwards that no two ranks got one GPU. local: that index from MPI,
 * -1 if MPI could not tell. */
static g1_status pick_backend(const cli *c, g1_engine_opts *eo, unsigned char uuid[16], int *local_rank)
{
    int local = *local_rank;
    memset(uuid, 0, 16);
    int gpus = g1_cuda_device_count();
    eo->backend = c->backend >= 0 ? (g1_backend)c->backend
                                  : g1_cuda_built() && gpus > 0 ? G1_BACKEND_CUDA : G1_BACKEND_CPU;
    if (eo->backend != G1_BACKEND_CUDA)
        return G1_OK;
    if (!g1_cuda_built())
        return G1_FAIL(G1_ERR_ARG, "--backend cuda: this grok1-run was built without CUDA: use --backend cpu, or "
                                   "rebuild with nvcc and cuBLAS (meson setup -Dcuda=enabled)");
    if (local < 0) { /* the launcher's word instead */
        const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
        if (!lr)
            lr = getenv("SLURM_LOCALID");
        local = lr && atoi(lr) > 0 ? atoi(lr) : 0;
        *local_rank = local;
    }
    if (gpus < 1)
        return G1_FAIL(G1_ERR_CUDA, "--backend cuda: no GPU is visible to this process (%s; check the node, its "
                                    "driver and CUDA_VISIBLE_DEVICES), or use --backend cpu", g1_cuda_no_device_why());
    eo->device = local % gpus; /* the local rank itself when the node's GPUs are all visible */
    G1_TRY(g1_cuda_device_check(eo->device)); /* kernels built for this GPU */
    return g1_cuda_device_uuid(eo->device, uuid);
}

/* Refuses this rank's GPU when a lower rank has the same one (all: every
 * rank's UUID, zeros for no GPU): a GPU holds one rank's share. */
static g1_status gpu_shared(const unsigned char *all, int rank, const g1_engine_opts *eo, int local)
{
    static const unsigned char none[16];
    const unsigned char *mine = all + (size_t)16 * rank;
    if (eo->backend != G1_BACKEND_CUDA || !memcmp(mine, none, 16))
        return G1_OK;
    for (int r = 0; r < rank; r++)
        if (!memcmp(all + (size_t)16 * r, mine, 16))
            return G1_FAIL(G1_ERR_ARG, "--backend cuda: rank %d (local rank %d, device %d of the %d GPU(s) it sees) "
                                       "would share its GPU with rank %d: start the ranks one per GPU (at most as "
                                       "many per node as it has GPUs: mpirun -npernode G, Slurm "
                                       "--ntasks-per-node=G or --gpus-per-task=1), or use --backend cpu",
                           rank, local, eo->device, g1_cuda_device_count(), r);
    return G1_OK;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Whether the layers will run on the cuda backend (--backend, or the
 * default: cuda when a GPU is visible), as the planner counts memory. */
static int on_cuda(const cli *c)
{
    return c->backend >= 0 ? c->backend == G1_BACKEND_CUDA : g1_cuda_built() && g1_cuda_device_count() > 0;
}

/* Bytes per KV cache element the planner counts: bf16 halves them on a GPU;
 * the cpu backend keeps the rounded values as float32. */
static int kv_bytes(const cli *c) { return c->kv_bf16 && on_cuda(c) ? 2 : 4; }

/* On the cuda backend the planner counts the GPU's memory as the engine
 * will take it, on GPUs of an H100's 132 multiprocessors (the partial sums
 * that depend on the count are a few MB; each rank's check before the load
 * counts its own GPU exactly). Not in a build without CUDA, which refuses
 * the backend itself when it starts. */
static void plan_backend(const cli *c, g1_plan_request *rq)
{
    if (!on_cuda(c) || !g1_cuda_built())
        return;
    rq->cuda_sms = 132;
    rq->cuda_gemm = c->cuda_gemm;
    rq->cuda_tune = c->cuda_tune;
}

/* The CPU threads this process runs (--threads, else OpenMP's default). */
static int own_threads(const cli *c)
{
    if (c->threads > 0)
        return c->threads;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* The layout's cuts: from --plan, --layers-per-stage or the planner (what
 * they balance in *balanced, for --verbose). Every rank computes or reads
 * the same plan: `threads` (the per-thread buffers the memory check counts)
 * is the most any rank runs. */
static g1_status make_plan(const cli *c, const g1_config *cfg, int threads, int *P, int *E, g1_plan *plan,
                           const char **balanced)
{
    *balanced = c->plan;
    if (c->plan) {
        G1_TRY(g1_plan_read_json(c->plan, plan));
        G1_TRY(g1_plan_check_model(plan, cfg));
        if ((*P && *P != plan->stages) || (*E && *E != plan->ep))
            return G1_FAIL(G1_ERR_ARG, "%s is a plan for --stages %d --ep %d, not --stages %d --ep %d", c->plan,
                           plan->stages, plan->ep, *P ? *P : plan->stages, *E ? *E : plan->ep);
        *P = plan->stages;
        *E = plan->ep;
        G1_TRY(check_slots(c, *P));
        /* the plan's cuts under this run's slots, context and tokens per
         * step, against the plan's memory limit (or --mem-per-rank) */
        double limit = c->mem_per_rank ? c->mem_per_rank : plan->mem_per_rank;
        if (!limit)
            return G1_OK;
        int *lps = malloc((size_t)plan->stages * sizeof *lps);
        if (!lps)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory");
        for (int s = 0; s < plan->stages; s++)
            lps[s] = plan->cut[s + 1] - plan->cut[s];
        int M = c->micro_batches ? c->micro_batches : *P;
        int context = c->max_context ? c->max_context : cfg->max_seq_len;
        char from[1100];
        snprintf(from, sizeof from, "mem_per_rank in %s", c->plan);
        g1_plan_request rq = {.cfg = *cfg, .stages = *P, .ep = *E, .mem_per_rank = limit,
                              .mem_per_rank_from = c->mem_per_rank ? NULL : from,
                              .slots = M * c->batch_size, .micro_batches = M, .context = context,
                              .max_batch_tokens = c->max_batch_tokens, .kv_bytes = kv_bytes(c),
                              .layers_per_stage = lps, .dump_logits = c->dump_logits != NULL,
                              .dump_buffer = c->dump_buffer, .threads = threads, .plan_file = c->plan};
        plan_backend(c, &rq);
        if (rq.cuda_sms > 0 && plan->cuda_sms > 0) /* the GPUs the plan was made for */
            rq.cuda_sms = plan->cuda_sms;
        g1_plan mine = {0};
        g1_status st = g1_plan_make(&rq, &mine);
        free(lps);
        g1_plan_free(&mine);
        if (st != G1_OK) {
            char why[2048];
            snprintf(why, sizeof why, "%s", g1_last_error());
            return G1_FAIL(st, "%s: this run's %d slots x %d positions x %d tokens per step do not fit the plan's "
                               "layout (it was made for %d x %d x %d): %s", c->plan, M * c->batch_size, context,
                           c->max_batch_tokens, plan->slots, plan->context, plan->max_batch_tokens, why);
        }
        return G1_OK;
    }
    *P = *P ? *P : 1;
    *E = *E ? *E : 1;
    int lps[1024], n = 0;
    if (c->layers_per_stage) {
        const char *q = c->layers_per_stage;
        while (*q && n < 1024) {
            char *end;
            long v = strtol(q, &end, 10);
            if (end == q || v < 1 || v > 100000 || (*end && *end != ','))
                return G1_FAIL(G1_ERR_ARG, "--layers-per-stage %s: expected layer counts such as 2,3,3",
                               c->layers_per_stage);
            lps[n++] = (int)v;
            q = *end ? end + 1 : end;
        }
        if (n != *P)
            return G1_FAIL(G1_ERR_ARG, "--layers-per-stage gives %d stages, but --stages is %d", n, *P);
    }
    G1_TRY(check_slots(c, *P));
    /* scoring is all prompt tokens: its cuts balance their FLOPs (rank 0's
     * un-embedding of every position included) unless told otherwise */
    int prompt = c->balance >= 0 ? c->balance : c->mode == G1_MODE_SCORE;
    /* the slots as micro-batches x --batch-size, the micro-batches following
     * the stages unless given: a refusal's "--stages S would fit" counts
     * what that command would run */
    g1_plan_request rq = {.cfg = *cfg, .stages = *P, .ep = *E, .mem_per_rank = c->mem_per_rank,
                          .batch_size = c->batch_size, .micro_batches = c->micro_batches, .context = c->max_context,
                          .max_batch_tokens = c->max_batch_tokens,
                          .kv_bytes = kv_bytes(c),
                          .layers_per_stage = c->layers_per_stage ? lps : NULL,
                          .balance_prompt = prompt, .balance_fallback = c->balance < 0,
                          .dump_logits = c->dump_logits != NULL, .dump_buffer = c->dump_buffer,
                          .threads = threads};
    plan_backend(c, &rq);
    G1_TRY(g1_plan_make(&rq, plan));
    *balanced = c->layers_per_stage ? "--layers-per-stage"
                : plan->balance_prompt ? "the FLOPs of a prompt token"
                : prompt ? "the bytes a decode step reads: cuts balancing a prompt token's FLOPs do not fit "
                           "--mem-per-rank"
                         : "the bytes a decode step reads";
    return G1_OK;
}

typedef struct job {
    g1_dist *dist;     /* NULL: one process */
    g1_engine *e;
    g1_pipe_local *local;
    int P, E, M;
    int agreed; /* a failure now is the same on every rank (layout, plan) */
    int together; /* every rank knows that the run failed, no abort: 1 its own failure, 2 another's */
    g1_trace trace; /* --trace: this rank's spans */
    g1_tokenizer *tok; /* rank 0, --tokenizer */
    int interrupted; /* rank 0 stopped on SIGTERM / SIGINT */
    char trace_error[512]; /* --trace could not be written: said after the results are kept */
    size_t engine_planned; /* message buffers in engine memory the load made room for (--gpu-direct) */
} job;

/* The timeline gathered and written (collective); a failure is kept in
 * j->trace_error, not returned: the results do not wait on the trace. */
static void write_trace(const cli *c, job *j)
{
    g1_status st;
    long long dropped = j->trace.dropped;
    int cut = dropped > 0;
    if (j->dist) {
        st = g1_dist_trace_write(j->dist, c->trace, &dropped, &cut);
    } else {
        g1_trace_event *ev = j->trace.ev;
        double off = 0;
        char label[] = "rank 0: all layers";
        char *lab = label;
        st = g1_trace_write_json(c->trace, 1, &ev, &j->trace.n, &dropped, &off, &lab);
    }
    if (st != G1_OK)
        snprintf(j->trace_error, sizeof j->trace_error, "%s", g1_last_error());
    else if (cut)
        fprintf(stderr, "grok1-run: warning: the trace %s holds the first %d spans of each rank: %lld later spans "
                        "of %d rank%s were left out (GROK1_TRACE_SPANS raises the limit; the trace marks each "
                        "cut)\n", c->trace, j->trace.cap, dropped, cut, cut == 1 ? "" : "s");
}

static void job_free(job *j)
{
    g1_trace_free(&j->trace);
    g1_tok_free(j->tok);
    g1_engine_free(j->e);
    g1_pipe_local_free(j->local);
    g1_dist_free(j->dist);
}

/* The driver's options for this run (prog may be NULL: no progress). */
static void driver_opts(const cli *c, files *f, job *j, g1_progress *prog, g1_driver_opts *out,
                        g1_logits_sink *sink)
{
    g1_driver_opts o = {.mode = c->mode,
                        .max_new_tokens = c->max_new_tokens,
                        .tok = j->tok,
                        .sample = c->sample,
                        .top_logprobs = c->top_logprobs,
                        .truncate_left = c->truncate_left,
                        .max_context = c->max_context,
                        .micro_batches = j->M,
                        .batch_size = c->batch_size,
                        .max_batch_tokens = c->max_batch_tokens,
                        .done_ids = f->done_ids,
                        .stop = &g_stop,
                        .progress = prog ? g1_progress_update : NULL,
                        .progress_ctx = prog,
                        .trace = c->trace ? &j->trace : NULL,
                        .prefix_cache = c->prefix_cache,
                        .kv_owners = j->E,
                        .shard = c->shard,
                        .shards = c->shards,
                        .input_bounded = f->input_bounded,
                        .input_bytes = f->input_bytes,
                        .input_requests = f->input_requests};
#if G1_HAVE_HDF5
    *sink = (g1_logits_sink){.write = dump_write, .has = dump_has, .out = dump_out, .ready = dump_ready, .ctx = f};
    if (f->logits)
        o.dump = sink;
#else
    (void)sink;
#endif
    *out = o;
}

/* The closing lines on stderr: how the run ended, and its summary. */
static void summary(const cli *c, const job *j, const g1_driver_stats *st, double dt, const double *busy)
{
    g1_driver_stats s = *st;
    int64_t tok = s.prompt_tokens + s.generated_tokens;
    char stages[512] = "";
    size_t n = 0;
    for (int i = 0; j->dist && i < j->P && n < sizeof stages - 16; i++)
        n += (size_t)snprintf(stages + n, sizeof stages - n, "%s%.0f%%", i ? " " : "", 100 * busy[i]);
    if (s.interrupted)
        fprintf(stderr, "grok1-run: interrupted by signal %d: %lld results written (%lld before this run); "
                        "run again with --resume to finish\n",
                atomic_load(&g_stop_signal), (long long)s.written, (long long)s.skipped);
    else if (s.skipped && !j->e)
        fprintf(stderr, "grok1-run: resumed after %lld results already written: nothing left to run (no weights "
                        "were loaded)\n", (long long)s.skipped);
    else if (!j->e)
        fprintf(stderr, "grok1-run: the input holds no request for this run: nothing to run (no weights were "
                        "loaded)\n");
    else if (s.skipped)
        fprintf(stderr, "grok1-run: resumed after %lld results already written\n", (long long)s.skipped);
    char reused[160] = "", shard[48] = "";
    if (c->shards > 1)
        snprintf(shard, sizeof shard, " (shard %d/%d)", c->shard, c->shards);
    if (s.reused_tokens && s.forked_tokens)
        snprintf(reused, sizeof reused, " (%lld of them held from earlier requests: %.0f%%; %lld copied from "
                 "another slot)", (long long)s.reused_tokens,
                 100.0 * (double)s.reused_tokens / (double)s.prompt_tokens, (long long)s.forked_tokens);
    else if (s.reused_tokens)
        snprintf(reused, sizeof reused, " (%lld of them held from earlier requests: %.0f%%)",
                 (long long)s.reused_tokens, 100.0 * (double)s.reused_tokens / (double)s.prompt_tokens);
    fprintf(stderr,
            "grok1-run: %lld request%s%s, %lld prompt tokens%s, %lld generated tokens, %.3f s, %.1f tokens/s; "
            "%d x %d ranks, %d micro-batch%s of %d slot%s%s%s\n",
            (long long)s.requests, s.requests == 1 ? "" : "s", shard, (long long)s.prompt_tokens, reused,
            (long long)s.generated_tokens, dt, dt > 0 ? (double)tok / dt : 0.0, j->P, j->E, j->M,
            j->M == 1 ? "" : "es", c->batch_size, c->batch_size == 1 ? "" : "s", j->dist ? "; stage busy " : "",
            stages);
}

/* Rank 0: read requests, drive the pipeline, write results. */
static g1_status drive(const cli *c, files *f, job *j)
{
    g1_pipe_ops pipe;
    if (j->dist)
        G1_TRY(g1_dist_pipe(j->dist, j->e, j->M, c->max_batch_tokens, &pipe));
    else {
        G1_TRY(g1_pipe_local_init(&j->local, j->e, j->M, c->max_batch_tokens, c->trace ? &j->trace : NULL));
        pipe = g1_pipe_local_ops(j->local);
    }
    g1_progress prog;
    int64_t total = g1_count_requests(c->input);
    if (total > 0 && c->shards > 1) /* this shard's: requests K, K + N, ... */
        total = total > c->shard ? (total - c->shard + c->shards - 1) / c->shards : 0;
    g1_progress_init(&prog, c->progress, stderr, c->progress_interval, total);
    g1_driver_opts o;
    g1_logits_sink sink;
    driver_opts(c, f, j, &prog, &o, &sink);
    g1_driver_stats s;
    double t0 = now_s();
    g1_status st = g1_driver_run(j->e, pipe, &o, f->in, f->out, &s);
    g1_progress_done(&prog);
    G1_TRY(st);
    double dt = now_s() - t0;
    j->interrupted = s.interrupted;
    double busy[1024] = {0};
    if (j->dist) {
        g1_dist_add_busy(j->dist, s.busy);
        G1_TRY(g1_dist_stop(j->dist));
        G1_TRY(g1_dist_busy(j->dist, busy));
    }
    /* said before the trace is written, which can take seconds: a job
     * killed meanwhile (mpirun's SIGKILL after a SIGTERM) has said how far it
     * got */
    summary(c, j, &s, dt, busy);
    if (c->trace)
        write_trace(c, j);
    if (s.input_left)
        fprintf(stderr, "grok1-run: requests were appended to %s after the run started: they were not read "
                        "(the output's record of the input does not cover them); run again with --resume to answer "
                        "them\n", c->input);
    return G1_OK;
}

/* --max-context against the model, as a run and --check-input refuse it. */
static g1_status check_context(const cli *c, const g1_config *cfg)
{
    if (c->max_context > cfg->max_seq_len)
        return G1_FAIL(G1_ERR_ARG, "--max-context %d: above the model's max_seq_len (%d)", c->max_context,
                       cfg->max_seq_len);
    if (c->mode == G1_MODE_GENERATE && (c->max_context ? c->max_context : cfg->max_seq_len) < 2)
        return G1_FAIL(G1_ERR_ARG, "generate needs a context of at least 2 positions (a prompt token and a new one); "
                                   "%s is 1", c->max_context ? "--max-context" : "the model's max_seq_len");
    return G1_OK;
}

/* --tokenizer, refused unless it has the model's vocabulary (*tok NULL then). */
static g1_status load_tokenizer(const cli *c, const g1_config *cfg, g1_tokenizer **tok)
{
    G1_TRY(g1_tok_load(tok, c->tokenizer));
    if (g1_tok_vocab_size(*tok) == cfg->vocab_size)
        return G1_OK;
    g1_status st = G1_FAIL(G1_ERR_ARG, "the tokenizer %s has %d pieces but the model's vocabulary has %d: is it "
                                       "this model's tokenizer?", c->tokenizer, g1_tok_vocab_size(*tok),
                           cfg->vocab_size);
    g1_tok_free(*tok);
    *tok = NULL;
    return st;
}

/* The layout and the plan for N processes (0: the P x E they need, for
 * --check-input), as every run checks them before its load: the layout,
 * the plan made or read (into *plan, *P, *E), the step's message size. */
static g1_status check_layout(const cli *c, const g1_config *cfg, int N, int threads, int *P, int *E, g1_plan *plan,
                              const char **balanced)
{
    if (!c->plan) {
        int p = *P ? *P : 1, e = *E ? *E : 1;
        G1_TRY(g1_dist_check_layout(N ? N : p * e, p, e, cfg));
    }
    G1_TRY(make_plan(c, cfg, threads, P, E, plan, balanced));
    if (c->plan)
        G1_TRY(g1_dist_check_layout(N ? N : *P * *E, *P, *E, cfg));
    return g1_dist_check_step(N ? N : *P * *E, c->max_batch_tokens, cfg);
}

static g1_status run(const cli *c, const g1_world *world, files *f, model *m, job *j)
{
    int rank = world->rank;
    G1_TRY(g1_fault_init(rank));
    /* a refusal here is the same on every rank: rank 0 decides, and says why */
    char why[2 * PATH_MAX + 200] = "";
    int files_ok = rank != 0 || !check_files(c, why, sizeof why);
    j->agreed = 1;
    if (!g1_world_all_ok(files_ok))
        return G1_FAIL(G1_ERR_ARG, "%s", rank == 0 ? why : "rank 0 refused the file names");
    j->agreed = 0;
    if (rank == 0)
        G1_TRY(files_open_input(c, f));
    G1_TRY(model_open(c, m));
    /* the layout is checked before anything is loaded */
    int P = c->stages, E = c->ep;
    g1_plan plan = {0};
    /* the memory check counts the per-thread buffers of the most threads
     * any rank runs (the plan must be the same on every rank; a failure
     * here is this rank's alone) */
    int threads = own_threads(c), *all_threads = malloc((size_t)world->size * sizeof *all_threads);
    if (!all_threads)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    g1_status st = g1_world_allgather(&threads, sizeof threads, all_threads);
    for (int r = 0; st == G1_OK && r < world->size; r++)
        threads = all_threads[r] > threads ? all_threads[r] : threads;
    free(all_threads);
    G1_TRY(st);
    /* every rank reaches the same verdict on the layout and the plan */
    j->agreed = 1;
    G1_TRY(check_context(c, &m->cfg));
    const char *balanced = "";
    st = check_layout(c, &m->cfg, world->size, threads, &P, &E, &plan, &balanced);
    /* each rank reads --plan and guesses the backend itself: a plan file one
     * node cannot see, or a node without a GPU, makes the ranks disagree;
     * none may go on to wait for the others */
    if (!g1_world_all_ok(st == G1_OK)) {
        g1_plan_free(&plan);
        if (g1_world_all_ok(st != G1_OK))
            return st; /* every rank refused: rank 0 says why */
        if (st != G1_OK) {
            if (rank != 0)
                fprintf(stderr, "grok1-run: error: rank %d of %d: %s\n", rank, world->size, g1_last_error());
            return st;
        }
        return G1_FAIL(G1_ERR_ARG, "another rank refused the layout (its own message says why), and this one did not: "
                                   "the ranks must see the same files (--plan) and pick the same backend "
                                   "(--backend)");
    }
    int s = rank / E, e = rank % E, first = 0, count = 0;
    int l0 = plan.cut[s], l1 = plan.cut[s + 1];
    if (c->verbose && rank == 0 && P > 1) {
        fprintf(stderr, "grok1-run: layers per stage");
        for (int i = 0; i < P; i++)
            fprintf(stderr, "%c%d", i ? ',' : ' ', plan.cut[i + 1] - plan.cut[i]);
        fprintf(stderr, " (%s%s)\n", c->plan || c->layers_per_stage ? "from " : "balancing ", balanced);
    }
    g1_plan_experts(&plan, e, &first, &count);
    g1_plan_free(&plan);
    j->agreed = 0;
    j->P = P;
    j->E = E;
    j->M = c->micro_batches ? c->micro_batches : P;
    if (rank == 0 && c->tokenizer)
        G1_TRY(load_tokenizer(c, &m->cfg, &j->tok));
    /* the backend (and this rank's GPU) before any output exists */
    int slots = j->M * c->batch_size;
    g1_engine_opts eo = {.n_slots = (slots + E - 1) / E, .max_batch = c->max_batch_tokens, .max_context = c->max_context,
                         .cuda_gemm = c->cuda_gemm, .kv_cache = c->kv_bf16 ? G1_KV_BF16 : G1_KV_F32,
                         .cuda_graphs_off = !c->cuda_graphs,
                         .cuda_graphs_max = c->cuda_graphs > 0 ? c->cuda_graphs : 0, .cuda_tune = c->cuda_tune};
    unsigned char uuid[16], *uuids = malloc((size_t)16 * world->size);
    if (!uuids) /* main's abort ends the ranks waiting below */
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    int local = g1_world_local_rank(gpu_set_key(c)); /* collective */
    g1_status bst = pick_backend(c, &eo, uuid, &local);
    /* every rank's GPU, to find two ranks on one (collective) */
    g1_status gst = g1_world_allgather(uuid, 16, uuids);
    if (bst == G1_OK)
        bst = gst != G1_OK ? gst : gpu_shared(uuids, rank, &eo, local);
    free(uuids);
    /* no output file until every rank has its backend (a rank without a GPU
     * prints its own reason and ends the job) */
    if (!g1_world_all_ok(bst == G1_OK))
        return bst != G1_OK ? bst
                            : G1_FAIL(G1_ERR_ARG, "another rank could not start its %s backend (its message says "
                                                  "why)", eo.backend == G1_BACKEND_CUDA ? "cuda" : "cpu");
    if (rank == 0) {
        char ckpt_fp[17] = "";
#if G1_HAVE_HDF5
        if (m->ck)
            G1_TRY(g1_ckpt_fingerprint(m->ck, ckpt_fp));
#endif
        g1_driver_opts o;
        g1_logits_sink sink;
        driver_opts(c, f, j, NULL, &o, &sink);
        char tok_fp[17] = "";
        if (j->tok)
            snprintf(tok_fp, sizeof tok_fp, "%016llx", (unsigned long long)g1_tok_fingerprint(j->tok));
        G1_TRY(files_open_outputs(c, &m->cfg, &eo, ckpt_fp, tok_fp, &o, f));
    }
    /* a run with nothing left (a finished output resumed, a shard whose
     * array is run again, an input with no request for this shard) ends
     * here, before any weight is read: rank 0 checks the kept results
     * against the input as the run would and reads the next request, and
     * every rank hears the verdict (a trace is always written: that needs
     * the run) */
    int nothing_left = 0, dumping = 0;
#if G1_HAVE_HDF5
    dumping = f->logits != NULL;
#endif
    if (rank == 0 && !c->trace && f->left_known && !dumping) {
        nothing_left = f->nothing_left; /* checked as the resume began */
    } else if (rank == 0 && !c->trace && g1_input_rereadable(c->input)) {
        g1_driver_opts o;
        g1_logits_sink sink;
        driver_opts(c, f, j, NULL, &o, &sink);
        G1_TRY(g1_driver_nothing_left(&m->cfg, &o, f->in, &nothing_left));
        if (!nothing_left && fseek(f->in, 0, SEEK_SET) != 0)
            return G1_FAIL(G1_ERR_IO, "cannot read the input %s again: %s", c->input, strerror(errno));
    }
    if (!g1_world_all_ok(!nothing_left)) {
        if (rank == 0)
            summary(c, j, &(g1_driver_stats){.skipped = f->done_ids ? (int64_t)json_array_size(f->done_ids) : 0}, 0,
                    NULL);
        return G1_OK;
    }

    g1_moe_dispatch dispatch, *dp = NULL;
    if (P * E > 1) {
        /* device buffers straight to MPI only when every rank's MPI says
         * it can read them (or the user says so) */
        int mpi_cuda = g1_dist_mpi_cuda_support();
        int direct = c->gpu_direct >= 0 ? c->gpu_direct : eo.backend == G1_BACKEND_CUDA && mpi_cuda == 1;
        direct = g1_world_all_ok(direct);
        if (c->verbose && rank == 0)
            fprintf(stderr, "grok1-run: messages %s (MPI CUDA support: %s)\n",
                    direct ? "in engine memory, handed straight to MPI (--gpu-direct)"
                    : eo.backend == G1_BACKEND_CUDA ? "staged through page-locked host buffers"
                                                    : "in host memory",
                    mpi_cuda == 1 ? "yes" : mpi_cuda == 0 ? "no" : "unknown");
        g1_dist_mem dm = {.backend = eo.backend, .device = eo.device, .direct = direct};
        G1_TRY(g1_dist_init(&j->dist, P, E, &dm));
        /* with --gpu-direct the messages are GPU memory taken after the
         * load: the engine's room check counts them */
        eo.mem_after_load = g1_dist_engine_bytes_planned(j->dist, &m->cfg, j->M, c->max_batch_tokens);
        j->engine_planned = eo.mem_after_load;
        if (E > 1) {
            G1_TRY(g1_dist_dispatch(j->dist, &m->cfg, c->max_batch_tokens, &j->e, &dispatch));
            dp = &dispatch;
        }
    }
    double t0 = now_s();
    g1_weights_source src = {.cfg = m->cfg, .layer0 = l0, .layer1 = l1, .expert0 = first,
                             .expert1 = first + count, .with_embedding = rank == 0, .load = model_part, .ctx = m};
    g1_weights_held held;
    /* a share that does not load (a GPU too small for it, a damaged part)
     * fails on its own rank; every rank hears of it here, so that rank 0
     * can take back the output files it opened before the job ends */
    g1_status lst = g1_engine_init_source(&j->e, &src, &eo, dp, &held);
    if (!g1_world_all_ok(lst == G1_OK)) {
        j->together = lst != G1_OK ? 1 : 2;
        return lst != G1_OK ? lst
                            : G1_FAIL(G1_ERR_IO, "another rank could not load its share of the weights (its "
                                                   "message says why)");
    }
    model_close(m);
    if (c->verbose && rank == 0 && c->mode == G1_MODE_SCORE)
        fprintf(stderr, "grok1-run: scores %s\n",
                c->dump_logits ? "from logits rows on the host (the dump needs them)"
                : g1_engine_scores_on_device(j->e) ? "reduced on the GPU: only log-probs and argmaxes come to the host"
                                                   : "from logits rows on the host");
    if (c->verbose) {
        char where[160];
        if (eo.backend == G1_BACKEND_CUDA)
            snprintf(where, sizeof where, "on GPU %d, uploaded a layer at a time: at most %.3f MB of them in host "
                     "memory", eo.device, (double)held.host_peak / 1e6);
        else
            snprintf(where, sizeof where, "in host memory; %s CPU kernels", g1_cpu_kernels());
        char checked[128] = "";
        if (c->checkpoint)
            snprintf(checked, sizeof checked, ", %s",
                     c->skip_checksums                   ? "checksums skipped"
                     : m->bytes_checked == 0             ? "not checked (no checksums in the file)"
                     : m->bytes_checked == m->bytes_read ? "checksums all matched"
                                                         : "checksums matched (some tensors have none)");
        fprintf(stderr, "grok1-run: rank %d (stage %d, slot %d): layers %d-%d, experts %d-%d%s: %llu bytes read, "
                        "%.3f MB of weights held (%s)%s, %.2f s\n",
                rank, s, e, l0, l1 - 1, first, first + count - 1, rank == 0 ? ", embedding" : "", m->bytes_read,
                (double)held.bytes / 1e6, where, checked, now_s() - t0);
    }
    char paths[512];
    if (c->verbose && rank == 0 && g1_engine_cuda_paths(j->e, paths, sizeof paths))
        fprintf(stderr, "grok1-run: cuda paths (--cuda-tune): %s\n", paths);
    /* the KV caches grow with the sequences: say now if they may not fit */
    size_t kv_need = 0, kv_free = 0, gw = 0, gb = 0, gf = 0;
    int kv_short = g1_engine_kv_short(j->e, &kv_need, &kv_free);
    if (c->verbose && g1_engine_gpu_memory(j->e, &gw, &gb, &gf)) {
        char tw[32], tb[32], tf[32], tn[32];
        fprintf(stderr, "grok1-run: rank %d (GPU %d): weights %s and engine buffers %s of the %s free before the "
                        "load; %s free now for the KV caches\n", rank, eo.device, g1_bytes_text(tw, sizeof tw, gw),
                g1_bytes_text(tb, sizeof tb, gb), g1_bytes_text(tf, sizeof tf, gf),
                g1_bytes_text(tn, sizeof tn, kv_free));
    }
    if (kv_short)
        fprintf(stderr, "grok1-run: warning: rank %d (GPU %d): the KV caches of its %d sequence slots at %d "
                        "positions may need %.1f MiB more, but %.1f MiB are free (less a 256 MiB margin): long "
                        "requests could run the GPU out of memory mid-run (finished results stay in the .partial "
                        "output; resume with fewer slots: --batch-size, --micro-batches, or more --stages; a new run "
                        "whose requests are shorter can say so with --max-context)\n",
                rank, eo.device, eo.n_slots, c->max_context ? c->max_context : m->cfg.max_seq_len,
                (double)kv_need / (1 << 20), (double)kv_free / (1 << 20));
    if (c->trace) {
        int cap;
        G1_TRY(g1_trace_cap(&cap));
        G1_TRY(g1_trace_init(&j->trace, cap));
        if (j->dist) {
            g1_dist_set_trace(j->dist, &j->trace, l0, l1);
            G1_TRY(g1_dist_trace_sync(j->dist));
        }
    }
    if (rank == 0)
        return drive(c, f, j);
    G1_TRY(g1_dist_worker(j->dist, j->e, j->M, c->max_batch_tokens));
    G1_TRY(g1_dist_busy(j->dist, NULL));
    if (c->trace)
        write_trace(c, j);
    return G1_OK;
}

/* --check-input: the layout and the plan as a run checks them before its
 * load (the processes taken to be P x E: a run refuses any other count),
 * in `what` a line about them. */
static g1_status check_layout_offline(const cli *c, const g1_config *cfg, char *what, size_t n)
{
    int P = c->stages, E = c->ep;
    g1_plan plan = {0};
    const char *balanced = "";
    g1_status st = check_layout(c, cfg, 0, own_threads(c), &P, &E, &plan, &balanced);
    if (st == G1_OK) {
        size_t k = (size_t)snprintf(what, n, "  layout: %d stage%s x %d expert slot%s (%d process%s), layers per "
                                             "stage", P, P == 1 ? "" : "s", E, E == 1 ? "" : "s", P * E,
                                    P * E == 1 ? "" : "es");
        for (int i = 0; i < P && k < n; i++)
            k += (size_t)snprintf(what + k, n - k, "%c%d", i ? ',' : ' ', plan.cut[i + 1] - plan.cut[i]);
        if (k < n && (c->mem_per_rank || (c->plan && plan.mem_per_rank)))
            snprintf(what + k, n - k, ", within --mem-per-rank");
    }
    g1_plan_free(&plan);
    return st;
}

/* --check-input: the model's config (no weights), the tokenizer, and every
 * request of the input (this shard's) read as a run would read them, on
 * past refused ones; the refusals on stderr (the first 20), a summary on
 * stdout. No MPI (not even started); nothing is written. 0: every
 * request would be accepted; 1: some would not, or a file cannot be read. */
static int check_input(const cli *c)
{
    model m = {0};
    g1_tokenizer *tok = NULL;
    FILE *in = NULL;
    g1_input_stats s;
    g1_status st = model_open(c, &m);
    if (st == G1_OK)
        st = check_context(c, &m.cfg);
    /* a layout or plan the run would refuse: exit 2, as the run would */
    char layout[1024] = "";
    if (st == G1_OK && check_layout_offline(c, &m.cfg, layout, sizeof layout) != G1_OK) {
        fprintf(stderr, "grok1-run: error: %s\n", g1_last_error());
        model_close(&m);
        return EXIT_USAGE;
    }
    if (st == G1_OK && c->tokenizer)
        st = load_tokenizer(c, &m.cfg, &tok);
    if (st == G1_OK)
        st = open_input(c->input, &in);
    g1_logits_sink dump = {0}; /* only its presence matters: every position goes through the model */
    g1_driver_opts o = {.mode = c->mode, .max_new_tokens = c->max_new_tokens, .tok = tok, .sample = c->sample,
                        .top_logprobs = c->top_logprobs, .truncate_left = c->truncate_left,
                        .max_context = c->max_context, .dump = c->dump_logits ? &dump : NULL, .shard = c->shard,
                        .shards = c->shards};
    enum { MOST = 20 };
    if (st == G1_OK)
        st = g1_driver_check_input(&m.cfg, &o, in, stderr, "grok1-run: refused: ", MOST, &s);
    if (in && in != stdin)
        fclose(in);
    g1_tok_free(tok);
    int vocab = m.cfg.vocab_size;
    model_close(&m);
    if (st != G1_OK) {
        fprintf(stderr, "grok1-run: error: %s\n", g1_last_error());
        return EXIT_DATA;
    }
    int context = c->max_context ? c->max_context : m.cfg.max_seq_len;
    if (s.refused > MOST)
        fprintf(stderr, "grok1-run: refused: ... and %lld more request(s)\n", (long long)(s.refused - MOST));
    printf("grok1-run --check-input: %s (%ld line%s): %lld request(s)", strcmp(c->input, "-") ? c->input : "stdin",
           s.lines, s.lines == 1 ? "" : "s", (long long)s.requests);
    if (c->shards > 1)
        printf(" of shard %d/%d (%lld of the other shards' not read)", c->shard, c->shards, (long long)s.others);
    printf(", %lld refused (%s)\n", (long long)s.refused,
           s.refused ? "on stderr: a run stops at the first, keeping the results before it" : "a run accepts them all");
    printf("  accepted: %lld prompt tokens", (long long)s.prompt_tokens);
    if (s.requests > s.refused)
        printf(", the longest %d (input line %ld) of the context's %d positions", s.longest, s.longest_line,
               context);
    if (s.text)
        printf("; %lld text prompt(s)", (long long)s.text);
    printf("\n");
    if (s.cut)
        printf("  cut from the left (--truncate left): %lld request(s), %lld tokens\n", (long long)s.cut,
               (long long)s.cut_tokens);
    if (c->mode == G1_MODE_GENERATE)
        printf("  generate: at most %lld new tokens (each request's max_new_tokens, default %d, within the "
               "context)\n", (long long)s.new_tokens, c->max_new_tokens);
    printf("%s\n", layout);
    /* the dump of the accepted requests against the room where it goes */
    int no_room = 0;
    if (c->dump_logits) {
        char dir[4096], a[32], b[32], h[32];
        double need = dump_bytes(s.prompt_tokens, s.requests - s.refused, vocab);
        double room = room_for(c->dump_logits, dir, sizeof dir);
        /* --resume continues DUMP.partial: only the rest is needed */
        double held = c->resume ? partial_dump_held(c->dump_logits, &room) : 0;
        need = need > held ? need - held : 0;
        no_room = room >= 0 && need > room;
        printf("  logits dump: %lld rows of %d float32 logits, about %s", (long long)s.prompt_tokens, vocab,
               g1_bytes_text(a, sizeof a, need + held));
        if (held > 0)
            printf(" (%s of it in %s.partial already, continued by --resume)", g1_bytes_text(h, sizeof h, held),
                   c->dump_logits);
        if (room >= 0)
            printf("; %s has %s free%s", dir, g1_bytes_text(b, sizeof b, room),
                   no_room ? held > 0 ? ": the rest does NOT fit (a run would stop when the disk is full)"
                                      : ": it does NOT fit (a run would stop when the disk is full)"
                           : "");
        printf("\n");
    }
    return s.refused || no_room ? EXIT_DATA : 0;
}

/* The logits dump failed to close (a full disk): the process ends here,
 * before MPI_Finalize runs HDF5's shutdown, which would crash on it
 * (g1_h5_end). */
static void end_unclosed(int code)
{
#if G1_HAVE_HDF5
    g1_h5_end(code);
#else
    (void)code;
#endif
}

int main(int argc, char **argv)
{
    cli c;
    int r = parse_args(argc, argv, &c);
    if (r > 0)
        return 0;
    if (r)
        return usage_exit(&argc, &argv);

    if (c.check_input) /* no MPI: a login node may not allow it; under a launcher rank 0 alone reads */
        return launched_rank() > 0 ? 0 : check_input(&c);

    /* a closed stderr or stdout (grok1-run ... 2>&1 | head) fails the
     * write, which the run reports or outlives, instead of killing it
     * between its last result and the rename of OUT */
    signal(SIGPIPE, SIG_IGN);
    /* SIGTERM / SIGINT / SIGUSR1 turn into an orderly stop. Taken on every
     * rank while MPI starts (the default would kill the rank there: a job
     * stopped then would end as killed, not as interrupted), then on rank 0
     * alone: the launcher passes them to every rank, and the others wait
     * for rank 0's word. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* mpirun forwards SIGUSR1 to the ranks without ending the job itself,
     * so its exit status is grok1-run's (after SIGTERM it reports its own) */
    sigaction(SIGUSR1, &sa, NULL);
    g1_world world;
    if (g1_world_init(&argc, &argv, &world) != G1_OK) {
        fprintf(stderr, "grok1-run: error: %s\n", g1_last_error());
        g1_world_abort(EXIT_DATA);
    }
    if (world.rank != 0) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGUSR1, &sa, NULL);
    }
    /* the ranks whose command line was refused are waiting to compare
     * (usage_exit); so is a stop signal taken while MPI started */
    int stopped = 0, refused = usage_agree(&world, 0, &stopped);
    if (refused < 0) {
        fprintf(stderr, "grok1-run: error: the ranks could not compare their command lines: %s\n", g1_last_error());
        g1_world_abort(EXIT_DATA);
    }
    if (refused) {
        g1_world_finalize();
        return EXIT_USAGE;
    }
    if (stopped) {
        if (world.rank == 0)
            fprintf(stderr, "grok1-run: interrupted by signal %d while MPI started: nothing was loaded, run or "
                            "written; run the same command again\n", stopped);
        g1_world_finalize();
        return EXIT_INTERRUPTED;
    }
#ifdef _OPENMP
    if (c.threads > 0)
        omp_set_num_threads(c.threads);
#endif

    files f = {0};
    model m = {0};
    job j = {0};
    g1_status st = run(&c, &world, &f, &m, &j);
    if (st != G1_OK && j.agreed) {
        /* the command line or the layout: every rank refused alike */
        if (world.rank == 0)
            fprintf(stderr, "grok1-run: error: %s\n", g1_last_error());
        files_close(&c, &f, 0);
        job_free(&j);
        model_close(&m);
        g1_world_finalize();
        return EXIT_USAGE;
    }
    if (st != G1_OK && world.size > 1) {
        /* one rank's failure ends the job: no rank may wait for ever */
        char host[256] = "?";
        gethostname(host, sizeof host - 1);
        /* of the ranks that only heard of another's failure, rank 0 says so */
        if (j.together != 2 || world.rank == 0)
            fprintf(stderr, "grok1-run: error: rank %d of %d (host %s): %s\n", world.rank, world.size, host,
                    g1_last_error());
        if (world.rank == 0)
            files_close(&c, &f, 0);
        if (!j.together)
            g1_world_abort(EXIT_DATA);
        /* every rank stops here and waits for rank 0 to close the output:
         * mpirun ends the job when the first rank exits non-zero */
        (void)g1_world_all_ok(1);
        job_free(&j);
        model_close(&m);
        end_unclosed(EXIT_DATA);
        g1_world_finalize();
        return EXIT_DATA;
    }
    if (st != G1_OK)
        fprintf(stderr, "grok1-run: error: %s\n", g1_last_error());
    if (st == G1_OK && c.verbose && j.dist)
        fprintf(stderr, "grok1-run: rank %d: %zu bytes of message and all-to-all buffers in host memory, %zu in "
                        "engine memory (--gpu-direct; %zu counted before the load)\n", world.rank,
                g1_dist_buffer_bytes(j.dist), g1_dist_engine_bytes(j.dist), j.engine_planned);
#if G1_HAVE_HDF5
    if (st == G1_OK && c.verbose && f.dw)
        fprintf(stderr, "grok1-run: the logits dump's writer held %llu bytes of rows at most (--dump-buffer)\n",
                (unsigned long long)g1_dump_writer_held_bytes(f.dw));
#endif
    int made, dropped, kept;
    if (st == G1_OK && c.verbose && j.e && g1_engine_graph_counts(j.e, &made, &dropped, &kept))
        fprintf(stderr, "grok1-run: rank %d: CUDA graphs of decode steps: %d made, %d dropped to keep at most %d "
                "(--cuda-graphs)\n", world.rank, made, dropped, kept);
    g1_status st2 = files_close(&c, &f, st == G1_OK && !j.interrupted);
    if (st == G1_OK && st2 != G1_OK) {
        fprintf(stderr, "grok1-run: error: %s\n", g1_last_error());
        st = st2;
    }
    int code = st != G1_OK ? EXIT_DATA : j.interrupted ? EXIT_INTERRUPTED : 0;
    if (j.trace_error[0]) { /* the results are kept (or not) as without --trace */
        fprintf(stderr, "grok1-run: error: rank %d: the trace was not written: %s%s\n", world.rank, j.trace_error,
                world.rank == 0 && st == G1_OK ? j.interrupted ? " (the results so far are kept for --resume)"
                                                               : " (the results are complete)"
                                               : "");
        if (code == 0)
            code = EXIT_DATA;
    }
    job_free(&j);
    model_close(&m);
    end_unclosed(code);
    g1_world_finalize();
    return code;
}
