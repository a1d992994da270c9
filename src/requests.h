/* JSONL requests in, JSONL results out (jansson). Parses and validates one
 * request line against the model config, and formats one result line. No
 * scheduling, no MPI, no HDF5 here; the driver in mpi/ owns those. */
#ifndef G1_REQUESTS_H
#define G1_REQUESTS_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "config.h"
#include "sampler.h"
#include "status.h"
#include "tokenizer.h"

typedef enum g1_run_mode {
    G1_MODE_SCORE = 1,    /* log-probability of every prompt token */
    G1_MODE_GENERATE = 2, /* completion, greedy or sampled */
} g1_run_mode;

/* "score" / "generate" -> mode; G1_ERR_ARG for anything else. */
g1_status g1_run_mode_parse(const char *text, g1_run_mode *mode);
const char *g1_run_mode_name(g1_run_mode mode);

/* How requests are read: the model, the tokenizer (NULL: token ids only)
 * and the command line's defaults. */
typedef struct g1_request_ctx {
    g1_run_mode mode;
    const g1_config *cfg;
    const g1_tokenizer *tok;  /* enables "prompt" (and "continuation") text */
    g1_sample_opts sample;    /* generate defaults: temperature, top_p, top_k, seed */
    int top_logprobs;         /* generate default: report the top N per token */
    int truncate_left;        /* cut prompts longer than the context from the left */
    int max_context;          /* positions per sequence (--max-context); 0: max_seq_len */
    int feed_all;             /* score mode: every token goes through the model (the logits dump),
                                 so at most the context's positions; else the last is only predicted
                                 and a score request may have one token more */
    int shard, shards;        /* read only requests whose index is shard mod shards (0, 0 or 0, 1: all) */
    /* bounded: read no further than the first end_requests requests (other
     * shards' counted; when >= 0), else the first end_bytes bytes, of the
     * input: those its record in OUT.meta.json covers (requests appended
     * later wait for a --resume); 0: to the end */
    int bounded;
    long long end_bytes;
    int64_t end_requests;
} g1_request_ctx;

/* One validated request. Owns `id` (a reference), `prompt_ids` and `stop`. */
typedef struct g1_request {
    json_t *id;          /* string or number, echoed back as given */
    int *prompt_ids;     /* (n_prompt), each in [0, vocab_size) and not the pad id; with a continuation,
                            prompt then continuation */
    int n_prompt;        /* >= 1 */
    int n_context;       /* score with a continuation ("continuation" text or "continuation_ids"): tokens
                            of the prompt part; 0 otherwise */
    int truncated;       /* tokens cut from the left (--truncate left) */
    int text;            /* the prompt came as text: results carry text */
    int max_new_tokens;  /* -1 when the request does not set it */
    g1_sample_opts sample;
    int top_logprobs;    /* N: top-N log-probs per generated token */
    int ignore_eos;      /* keep going past eos */
    char **stop;         /* (n_stop) stop strings: the completion ends before the first */
    int n_stop;
    long line;           /* 1-based input line number */
    int64_t index;       /* 0-based among the input's requests (blank lines are none), shards or not:
                            the request's sampling key */
} g1_request;

/* Fields a request may carry in `mode`, comma separated ("id, prompt_ids"). */
const char *g1_request_fields(g1_run_mode mode);

/* Parse and validate one line (no trailing newline needed). Every failure
 * is G1_ERR_FORMAT or G1_ERR_RANGE with a message that starts with
 * "input line N:". On failure *out holds nothing to free. */
g1_status g1_request_parse(const char *text, size_t len, long line, const g1_request_ctx *ctx, g1_request *out);
void g1_request_free(g1_request *r);

/* Reads requests from a stream one line at a time (any line length),
 * skipping blank lines; never holds more than the current line. */
typedef struct g1_request_reader {
    FILE *in;
    g1_request_ctx ctx;
    long line;   /* lines read so far */
    int64_t seen; /* requests (non-blank lines) read so far, other shards' included */
    long long bytes; /* bytes read so far */
    int left;     /* stopped at ctx.end_bytes or ctx.end_requests with more input after it */
    char *buf;
    size_t cap;
} g1_request_reader;

void g1_request_reader_init(g1_request_reader *rd, FILE *in, const g1_request_ctx *ctx);
/* 1 when the n bytes at s are a blank line (only spaces, tabs, CR, LF):
 * not a request, and not counted as one. */
int g1_blank_line(const char *s, size_t n);
/* The next request into *out and *got = 1, or *got = 0 at end of input.
 * With ctx.shards > 1 only this shard's requests (index % shards == shard)
 * are parsed and returned; the others are skipped unread. */
g1_status g1_request_next(g1_request_reader *rd, g1_request *out, int *got);
void g1_request_reader_free(g1_request_reader *rd);

/* Result lines (one JSON object, no newline; free() the string).
 * score:    {"id", "prompt_tokens", "logprobs": [n-1], "sum_logprob", "greedy"}
 *   with a continuation: {"id", "prompt_tokens", "continuation_tokens": m,
 *   "logprobs": [m], "sum_logprob", "is_greedy"}
 * generate: {"id", "prompt_tokens", "completion_ids", "completion" (text
 *   prompts), "finish_reason", "top_logprobs" (N > 0): per token a list of
 *   {"id", "logprob"}}; "truncated" when tokens were cut from the prompt.
 * logprobs[i-1] and argmax_ok[i-1] are about token i given tokens < i. */
g1_status g1_result_score(const g1_request *r, const double *logprobs /* (n_prompt-1) */,
                          const unsigned char *argmax_ok /* (n_prompt-1) */, char **line);
g1_status g1_result_generate(const g1_request *r, const int *completion, int n_completion, const char *text,
                             size_t text_len, const char *finish_reason, const g1_logprob *top /* (n, N) */,
                             char **line);

#endif
