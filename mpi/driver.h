/* The request scheduler of grok1-run (rank 0): continuous batching of JSONL
 * requests over sequence slots grouped in micro-batches that flow through a
 * pipeline (pipeline.h), greedy generation or scoring, results written in
 * input order. No MPI and no HDF5 in here (the logits dump comes in through
 * a callback). */
#ifndef G1_DRIVER_H
#define G1_DRIVER_H

#include <stdint.h>
#include <stdio.h>

#include "ckpt.h"
#include "engine.h"
#include "pipeline.h"
#include "requests.h"
#include "status.h"
#include "trace.h"

/* Receives rows [row0, row0+nrows) of the (n_rows_total, V) logits of
 * request k (its 0-based input line); rows of one request arrive in order.
 * With each piece: the request's n_rows_total token ids (row i: the logits
 * after tokens[i]) and its id as JSON text (as its result line gives it). */
typedef struct g1_logits_sink {
    g1_status (*write)(void *ctx, int64_t k, int n_rows_total, int row0, int nrows, const float *logits,
                       const int *tokens, const char *id_json);
    /* a resume checks each kept result: G1_DUMP_THERE (ckpt.h) when
     * request k's logits (n_rows_total rows, of these tokens and id) are
     * already there, else why not; NULL: not checked */
    int (*has)(void *ctx, int64_t k, int n_rows_total, const int *tokens, const char *id_json);
    /* request k's result line is written (results go out in input order,
     * each after its logits); NULL: not told */
    void (*out)(void *ctx, int64_t k);
    /* 1 when request k's logits are all written and flushed (a writer on a
     * thread of its own may be behind: 0, not yet; with `wait` it waits);
     * -1 failed (the message recorded). The driver writes k's result line
     * only then. NULL: write returns only when they are */
    int (*ready)(void *ctx, int64_t k, int wait);
    void *ctx;
} g1_logits_sink;

struct g1_driver_stats;

typedef struct g1_driver_opts {
    g1_run_mode mode;
    int max_new_tokens;        /* default when a request does not set it */
    const g1_tokenizer *tok;   /* text prompts and completions; NULL: token ids only */
    g1_sample_opts sample;     /* defaults of a request's temperature, top_p, top_k, seed */
    int top_logprobs;          /* default top-N log-probs per generated token */
    int truncate_left;         /* cut prompts longer than the context from the left */
    int max_context;           /* positions per sequence (--max-context); 0: max_seq_len */
    int micro_batches;         /* M: micro-batches in flight */
    int batch_size;            /* B: sequence slots per micro-batch (global slots M * B) */
    int max_batch_tokens;      /* most tokens per micro-batch step */
    const g1_logits_sink *dump; /* score mode only; NULL: no dump */
    /* resume: the ids of the results already written, in input order; the
     * first len(done_ids) requests are checked against them and skipped */
    json_t *done_ids;
    /* the kept results' datasets in the dump were checked against these
     * requests (their rows, tokens and ids) before the run, reading the
     * same input: the skip does not look each one up again (a resume of
     * many results with a dump spent half its time on the second look) */
    int dump_kept_checked;
    /* set (by a signal handler) to stop: no new requests, no new steps; the
     * steps in flight complete, finished results are written */
    volatile const int *stop;
    /* called after every completed step (rate-limit inside) */
    void (*progress)(void *ctx, const struct g1_driver_stats *s);
    void *progress_ctx;
    g1_trace *trace;           /* NULL: no timeline */
    /* reuse the keys and values a slot holds from its earlier requests: a
     * request starts after the prefix it shares with them (a few-shot
     * preamble, the context of an lm-eval continuation); the results are
     * the same, the engine being batch-invariant. With it a request that
     * is not a plain score may also start from a prefix another slot holds
     * (or is computing), copied into its slot (a fork, carried with the
     * batch) */
    int prefix_cache;
    /* forks copy caches only between slots that share an owner: slot g's
     * caches live with expert slot g % kv_owners (the job's E; 0 or 1: one) */
    int kv_owners;
    /* run only the requests whose index in the input (0-based, blank lines
     * not counted) is shard mod shards; results are those of an unsharded
     * run (sampling is keyed by that index). 0, 0 or 0, 1: every request */
    int shard, shards;
    /* read only the requests the output's record of the input covers (its
     * requests with shards, else its bytes): g1_request_ctx's bounded */
    int input_bounded;
    long long input_bytes;
    int64_t input_requests;
    /* the test hook GROK1_ROUTE_LOG (NULL: off): for every step submitted,
     * a line "R N SLOT POS K" per row (N: the steps submitted before it,
     * every rank's engine's forward call N; SLOT the global slot; K the
     * request index), which names the rows of the engines' "F" lines
     * (g1_engine_set_route_log) */
    FILE *route_log;
} g1_driver_opts;

typedef struct g1_driver_stats {
    int64_t requests;      /* requests started in this run */
    int64_t skipped;       /* requests already done (resume) */
    int64_t written;       /* results written in this run */
    int interrupted;       /* stopped by `stop` before the end of the input */
    int input_left;        /* input_bounded, and the input has more after what it covers */
    int64_t prompt_tokens;
    int64_t reused_tokens; /* prompt positions not computed: their caches were held (prefix_cache) */
    int64_t forked_tokens; /* of those, copied from another slot (a fork) */
    int64_t generated_tokens;
    int64_t steps; /* micro-batch steps submitted */
    double busy;   /* seconds embedding, un-embedding and picking tokens */
    /* the scheduler's buffers (summed where they are allocated): logits
     * rows, each micro-batch's tokens and activations, the samplers, the
     * prefix cache's rows; not the records of a slot or a request, the
     * request reader's or the results waiting for their turn. What the
     * planner counts for rank 0 (tests/plan test_plan_mem) */
    uint64_t buffer_bytes;
} g1_driver_stats;

/* Read every request from `in`, run them, write one result line per request
 * to `out` (flushed per line, in input order); with done_ids, skip the
 * requests already done. `e` embeds and un-embeds
 * (it must hold the embedding); the layers run through `pipe`. Stops at the
 * first bad request or failure; results already written stay valid. */
g1_status g1_driver_run(g1_engine *e, g1_pipe_ops pipe, const g1_driver_opts *opts, FILE *in, FILE *out,
                        g1_driver_stats *stats);
/* Whether a run has anything to do: reads `in` as g1_driver_run would,
 * checking the kept results of a resume (opts->done_ids, may be NULL)
 * against the first requests exactly as it does, and sets *nothing_left
 * when no request of this shard follows them. Needs no engine: the model's config suffices (a
 * caller may then skip loading the weights). The errors are the run's
 * own (another input, a dump without the kept logits, a bad request next). */
g1_status g1_driver_nothing_left(const g1_config *cfg, const g1_driver_opts *opts, FILE *in, int *nothing_left);

/* grok1-run --check-input: what a run with these options would make of the
 * input, read to its end without a model's weights. */
typedef struct g1_input_stats {
    int64_t requests;      /* this shard's requests (refused ones included) */
    int64_t refused;       /* of them, refused (bad JSON, fields, token ids, lengths) */
    int64_t others;        /* other shards' requests, skipped unread */
    int64_t text;          /* accepted requests with a text prompt */
    int64_t prompt_tokens; /* of the accepted requests, after any cut */
    int64_t cut;           /* accepted requests cut from the left (--truncate left) */
    int64_t cut_tokens;    /* the tokens cut */
    int64_t new_tokens;    /* generate: the most tokens the accepted requests may generate
                            * (max_new_tokens, capped by the context as a run caps it) */
    int longest;           /* the longest accepted prompt (tokens, after a cut) */
    long longest_line;     /* its input line */
    long lines;            /* input lines read */
} g1_input_stats;

/* Reads every request of `in` (this shard's) as g1_driver_run would, on to
 * the end past refused ones: each refusal's message ("input line N: ...")
 * goes to `report` as a line after `prefix`, the first `most` of them.
 * G1_OK when the input was read to its end (refusals are counted, not
 * failures); a read error fails. */
g1_status g1_driver_check_input(const g1_config *cfg, const g1_driver_opts *opts, FILE *in, FILE *report,
                                const char *prefix, int most, g1_input_stats *s);

#endif
