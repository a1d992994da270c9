/* grok1-run: score or complete JSONL requests with a Grok-1 checkpoint (or a
 * synthetic model), on one process or as an MPI job of P stages x E expert
 * slots. This file is main: the backend, the plan, loading each rank's share
 * of the weights, the run and how it ends, and --check-input. The command
 * line is run_cli.c, the input and output files run_files.c, the scheduler
 * driver.c, the distributed runtime dist.h. */
#include <errno.h>
#include <signal.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli_out.h"
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
#include "durable.h"
#include "paths.h"
#include "progress.h"
#include "resume.h"
#include "run_cli.h"
#include "run_files.h"
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
    FILE *route_log; /* the test hook GROK1_ROUTE_LOG: this rank's file, or NULL */
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

/* The test hook GROK1_ROUTE_LOG=PREFIX: each rank writes PREFIX.RANK, a
 * first line "G1ROUTE RANK STAGE SLOT E" (its expert slot of E), then its
 * engine's "F" lines (the experts each row chose in each of its layers,
 * g1_engine_set_route_log) and on rank 0 the driver's "R" lines that name
 * those rows' requests (g1_driver_opts.route_log). For tests only: the
 * file is written in place, not under a temporary name. */
static g1_status route_log_open(job *j, int rank, int stage, int eslot)
{
    const char *prefix = getenv("GROK1_ROUTE_LOG");
    if (!prefix || !*prefix)
        return G1_OK;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s.%d", prefix, rank) >= (int)sizeof path)
        return G1_FAIL(G1_ERR_ARG, "GROK1_ROUTE_LOG: the name %s.%d is too long", prefix, rank);
    if (!(j->route_log = fopen(path, "w")))
        return G1_FAIL(G1_ERR_IO, "GROK1_ROUTE_LOG: cannot write %s: %s", path, strerror(errno));
    fprintf(j->route_log, "G1ROUTE %d %d %d %d\n", rank, stage, eslot, j->E);
    g1_engine_set_route_log(j->e, j->route_log);
    return G1_OK;
}

static g1_status route_log_close(job *j)
{
    if (!j->route_log)
        return G1_OK;
    int bad = ferror(j->route_log);
    bad |= fclose(j->route_log) != 0;
    j->route_log = NULL;
    g1_engine_set_route_log(j->e, NULL);
    return bad ? G1_FAIL(G1_ERR_IO, "GROK1_ROUTE_LOG: the route log could not be written") : G1_OK;
}

static void job_free(job *j)
{
    if (j->route_log)
        fclose(j->route_log);
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
                        .dump_kept_checked = f->dump_kept_checked,
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
                        .input_requests = f->input_requests,
                        .route_log = j->route_log};
    files_dump_sink(f, sink, &o.dump);
    *out = o;
}

/* The closing lines on stderr: how the run ended, and its summary. */
static void summary(const cli *c, const job *j, const g1_driver_stats *st, double dt, const double *busy)
{
    g1_driver_stats s = *st;
    int64_t tok = s.prompt_tokens + s.generated_tokens;
    char stages[512] = "";
    size_t n = 0;
    for (int i = 0; j->dist && busy && i < j->P && n < sizeof stages - 16; i++)
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
    int files_ok = rank != 0 || !cli_check_files(c, why, sizeof why);
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
    G1_TRY(route_log_open(j, rank, s, e));
    if (rank == 0) {
        G1_TRY(drive(c, f, j));
        return route_log_close(j);
    }
    G1_TRY(g1_dist_worker(j->dist, j->e, j->M, c->max_batch_tokens));
    G1_TRY(g1_dist_busy(j->dist, NULL));
    if (c->trace)
        write_trace(c, j);
    return route_log_close(j);
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
 * request would be accepted; 1: some would not, a file cannot be read, or
 * the logits dump would not fit in the free space; 2: the layout or the
 * plan would be refused. */
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
        st = files_open_path(c->input, &in);
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
    /* against the most a request may have, as the reader bounds it: a score
     * request one more than the context (its last token is only predicted) */
    if (s.requests > s.refused && c->mode != G1_MODE_SCORE)
        printf(", the longest %d (input line %ld) of the %d a generate request may have (the context's %d positions, "
               "one left for a new token)", s.longest, s.longest_line, context - 1, context);
    else if (s.requests > s.refused && c->dump_logits)
        printf(", the longest %d (input line %ld) of the %d a score request may have with --dump-logits (the "
               "context's positions: every token is fed)", s.longest, s.longest_line, context);
    else if (s.requests > s.refused)
        printf(", the longest %d (input line %ld) of the %d a score request may have (the context's %d positions "
               "+ 1: its last token is only predicted)", s.longest, s.longest_line, context + 1, context);
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
        double need = files_dump_bytes(s.prompt_tokens, s.requests - s.refused, vocab);
        double room = files_room_for(c->dump_logits, dir, sizeof dir);
        /* --resume continues DUMP.partial: only the rest is needed */
        double held = c->resume ? files_partial_dump_held(c->dump_logits, &room) : 0;
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

/* main's work on the command line c (what cli_parse took is freed by main,
 * whichever way this returns); the exit status */
static int run_main(cli *c, int argc, char **argv)
{
    int r = cli_parse(argc, argv, c);
    if (r > 0) /* --help or --version printed */
        return g1_stdout_done("grok1-run");
    if (r)
        return cli_usage_exit(&argc, &argv);

    if (c->check_input) /* no MPI: a login node may not allow it; under a launcher rank 0 alone reads */
        return cli_launched_rank() > 0 ? 0 : check_input(c);

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
     * (cli_usage_exit); so is a stop signal taken while MPI started */
    int stopped = 0, refused = cli_usage_agree(&world, 0, atomic_load(&g_stop_signal), &stopped);
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
    if (c->threads > 0)
        omp_set_num_threads(c->threads);
#endif

    files f = {0};
    model m = {0};
    job j = {0};
    g1_status st = run(c, &world, &f, &m, &j);
    if (st != G1_OK && j.agreed) {
        /* the command line or the layout: every rank refused alike */
        if (world.rank == 0)
            fprintf(stderr, "grok1-run: error: %s\n", g1_last_error());
        files_close(c, &f, 0);
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
            files_close(c, &f, 0);
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
    if (st == G1_OK && c->verbose && j.dist)
        fprintf(stderr, "grok1-run: rank %d: %zu bytes of message and all-to-all buffers in host memory, %zu in "
                        "engine memory (--gpu-direct; %zu counted before the load)\n", world.rank,
                g1_dist_buffer_bytes(j.dist), g1_dist_engine_bytes(j.dist), j.engine_planned);
#if G1_HAVE_HDF5
    if (st == G1_OK && c->verbose && f.dw)
        fprintf(stderr, "grok1-run: the logits dump's writer held %llu bytes of rows at most (--dump-buffer)\n",
                (unsigned long long)g1_dump_writer_held_bytes(f.dw));
#endif
    int made, dropped, kept;
    if (st == G1_OK && c->verbose && j.e && g1_engine_graph_counts(j.e, &made, &dropped, &kept))
        fprintf(stderr, "grok1-run: rank %d: CUDA graphs of decode steps: %d made, %d dropped to keep at most %d "
                "(--cuda-graphs)\n", world.rank, made, dropped, kept);
    g1_status st2 = files_close(c, &f, st == G1_OK && !j.interrupted);
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

int main(int argc, char **argv)
{
    cli c = {0};
    int code = run_main(&c, argc, argv);
    cli_free(&c);
    return code;
}
