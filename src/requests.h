/* JSONL requests in, JSONL results out (jansson). Parses and validates one
 * request line against the model config, and formats one result line. No
 * scheduling, no MPI, no HDF5 here; the driver in mpi/ owns those. */
#ifndef G1_REQUESTS_H
#define G1_REQUESTS_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "config.h"
#include "status.h"

typedef enum g1_run_mode {
    G1_MODE_SCORE = 1,    /* log-probability of every prompt token */
    G1_MODE_GENERATE = 2, /* greedy completion */
} g1_run_mode;

/* "score" / "generate" -> mode; G1_ERR_ARG for anything else. */
g1_status g1_run_mode_parse(const char *text, g1_run_mode *mode);
const char *g1_run_mode_name(g1_run_mode mode);

/* One validated request. Owns `id` (a reference) and `prompt_ids`. */
typedef struct g1_request {
    json_t *id;          /* string or number, echoed back as given */
    int *prompt_ids;     /* (n_prompt), each in [0, vocab_size) */
    int n_prompt;        /* >= 1 */
    int max_new_tokens;  /* -1 when the request does not set it */
    long line;           /* 1-based input line number */
} g1_request;

/* Fields a request may carry in `mode`, comma separated ("id, prompt_ids"). */
const char *g1_request_fields(g1_run_mode mode);

/* Parse and validate one line (no trailing newline needed). Every failure
 * is G1_ERR_FORMAT or G1_ERR_RANGE with a message that starts with
 * "input line N:". On failure *out holds nothing to free. */
g1_status g1_request_parse(const char *text, size_t len, long line, g1_run_mode mode,
                           const g1_config *cfg, g1_request *out);
void g1_request_free(g1_request *r);

/* Reads requests from a stream one line at a time (any line length),
 * skipping blank lines; never holds more than the current line. */
typedef struct g1_request_reader {
    FILE *in;
    g1_run_mode mode;
    const g1_config *cfg;
    long line;   /* lines read so far */
    char *buf;
    size_t cap;
} g1_request_reader;

void g1_request_reader_init(g1_request_reader *rd, FILE *in, g1_run_mode mode, const g1_config *cfg);
/* The next request into *out and *got = 1, or *got = 0 at end of input. */
g1_status g1_request_next(g1_request_reader *rd, g1_request *out, int *got);
void g1_request_reader_free(g1_request_reader *rd);

/* Result lines (one JSON object, no newline; free() the string).
 * score:    {"id", "prompt_tokens", "logprobs": [n-1], "sum_logprob", "greedy"}
 * generate: {"id", "prompt_tokens", "completion_ids", "finish_reason"} */
g1_status g1_result_score(const g1_request *r, const double *logprobs /* (n_prompt-1) */,
                          double sum_logprob, int greedy, char **line);
g1_status g1_result_generate(const g1_request *r, const int *completion, int n_completion,
                             const char *finish_reason, char **line);

#endif
