/* grok1-run's command line: the options (struct cli), their parsing and
 * checks, the usage text, and how a refused command line is said once
 * under a launcher (run_cli.c). */
#ifndef G1_RUN_CLI_H
#define G1_RUN_CLI_H

#include <stdio.h>

#include "engine.h"
#include "progress.h"
#include "requests.h"
#include "sampler.h"
#include "world.h"

enum { EXIT_DATA = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 3 };

/* Bounds on what the command line may ask for: threads per process (far
 * above any machine's cores, far below what makes the OpenMP runtime fail)
 * and sequence slots (--micro-batches x --batch-size: far above what any
 * GPU's or host's KV caches hold, far below the scheduler's int limits). */
#define G1_MAX_THREADS 4096
#define G1_MAX_SLOTS 65536

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
/* 0: run; 1: --help or --version was printed; -1: the command line was
 * refused, its fault kept for cli_usage_exit. */
int cli_parse(int argc, char **argv, cli *c);
/* The memory cli_parse took for c (the dump's canonical names), freed. */
void cli_free(cli *c);

/* Say the kept fault of a refused command line (once, under a launcher
 * that started several ranks: they start MPI and compare) and give the
 * exit status, EXIT_USAGE. */
int cli_usage_exit(int *argc, char ***argv);

/* Every rank of a job joins in, once MPI is up (a collective): 1 when some
 * rank's command line was refused, which that rank has said; -1 when the
 * ranks could not compare. stop_here: the stop signal this rank took while
 * MPI started (0: none); *stopped: one some rank took (rank 0's first), or 0. */
int cli_usage_agree(const g1_world *w, int failed, int stop_here, int *stopped);

/* This process's rank as its launcher gives it in the environment, read
 * without starting MPI; -1 when none does. */
int cli_launched_rank(void);

/* The files a run reads and writes must be distinct (every output is
 * completed by a rename over its final name, which would silently replace
 * an input named as an output); the trace's folder must be writable.
 * 0, or 1 and a message in msg. */
int cli_check_files(const cli *c, char *msg, size_t n);

#endif
