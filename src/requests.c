/* JSONL request parsing/validation and result formatting with jansson.
 * Every message names the input line so a user can find the bad request in
 * a file of thousands. The allowed fields live in one table below. */
#include "requests.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Request fields and the modes that accept them: the one place to add a
 * field (then parse it in g1_request_parse). */
static const struct {
    const char *name;
    unsigned modes; /* bit mask of g1_run_mode */
} fields[] = {
    {"id", G1_MODE_SCORE | G1_MODE_GENERATE},
    {"prompt_ids", G1_MODE_SCORE | G1_MODE_GENERATE},
    {"max_new_tokens", G1_MODE_GENERATE},
};
#define N_FIELDS ((int)(sizeof fields / sizeof fields[0]))

g1_status g1_run_mode_parse(const char *text, g1_run_mode *mode)
{
    if (!strcmp(text, "score"))
        *mode = G1_MODE_SCORE;
    else if (!strcmp(text, "generate"))
        *mode = G1_MODE_GENERATE;
    else
        return G1_FAIL(G1_ERR_ARG, "unknown mode '%s' (known: score, generate)", text);
    return G1_OK;
}

const char *g1_run_mode_name(g1_run_mode mode)
{
    return mode == G1_MODE_SCORE ? "score" : "generate";
}

const char *g1_request_fields(g1_run_mode mode)
{
    static _Thread_local char buf[256];
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; i < N_FIELDS; i++)
        if (fields[i].modes & (unsigned)mode)
            n += (size_t)snprintf(buf + n, n < sizeof buf ? sizeof buf - n : 0, "%s%s",
                                  n ? ", " : "", fields[i].name);
    return buf;
}

static int field_allowed(const char *key, g1_run_mode mode)
{
    for (int i = 0; i < N_FIELDS; i++)
        if (!strcmp(fields[i].name, key))
            return (fields[i].modes & (unsigned)mode) != 0;
    return 0;
}

static g1_status parse_prompt(const json_t *ids, long line, const g1_config *cfg, g1_request *r)
{
    if (!ids)
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: missing \"prompt_ids\" (a list of token ids)", line);
    if (!json_is_array(ids))
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"prompt_ids\" must be a list of token ids", line);
    size_t n = json_array_size(ids);
    if (n == 0)
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"prompt_ids\" is empty; a prompt needs at least one token",
                       line);
    if (n > (size_t)INT_MAX)
        return G1_FAIL(G1_ERR_RANGE, "input line %ld: \"prompt_ids\" is too long", line);
    r->prompt_ids = malloc(n * sizeof *r->prompt_ids);
    if (!r->prompt_ids)
        return G1_FAIL(G1_ERR_NOMEM, "input line %ld: out of memory for %zu prompt tokens", line, n);
    r->n_prompt = (int)n;
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_array_get(ids, i);
        if (!json_is_integer(t))
            return G1_FAIL(G1_ERR_FORMAT, "input line %ld: prompt_ids[%zu] is not an integer token id", line, i);
        json_int_t v = json_integer_value(t);
        if (v < 0 || v >= cfg->vocab_size)
            return G1_FAIL(G1_ERR_RANGE,
                           "input line %ld: prompt_ids[%zu] = %lld is out of range: the vocabulary has %d tokens "
                           "(ids 0..%d)",
                           line, i, (long long)v, cfg->vocab_size, cfg->vocab_size - 1);
        r->prompt_ids[i] = (int)v;
    }
    return G1_OK;
}

static g1_status parse_object(const json_t *obj, long line, g1_run_mode mode, const g1_config *cfg,
                              g1_request *r)
{
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)obj, key, val) {
        if (!field_allowed(key, mode))
            return G1_FAIL(G1_ERR_FORMAT, "input line %ld: unknown field \"%s\" (allowed in %s mode: %s)", line,
                           key, g1_run_mode_name(mode), g1_request_fields(mode));
    }

    json_t *id = json_object_get(obj, "id");
    if (!id)
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: missing \"id\" (a string or a number)", line);
    if (!json_is_string(id) && !json_is_number(id))
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"id\" must be a string or a number", line);
    r->id = json_incref(id);

    G1_TRY(parse_prompt(json_object_get(obj, "prompt_ids"), line, cfg, r));
    if (mode == G1_MODE_SCORE && r->n_prompt > cfg->max_seq_len)
        return G1_FAIL(G1_ERR_RANGE, "input line %ld: the prompt has %d tokens, more than max_seq_len %d", line,
                       r->n_prompt, cfg->max_seq_len);
    if (mode == G1_MODE_GENERATE && r->n_prompt >= cfg->max_seq_len)
        return G1_FAIL(G1_ERR_RANGE,
                       "input line %ld: the prompt has %d tokens; generate needs it shorter than max_seq_len %d "
                       "to leave room for a new token",
                       line, r->n_prompt, cfg->max_seq_len);

    const json_t *mnt = json_object_get(obj, "max_new_tokens");
    if (mnt) {
        if (!json_is_integer(mnt))
            return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"max_new_tokens\" must be an integer", line);
        json_int_t v = json_integer_value(mnt);
        if (v < 0)
            return G1_FAIL(G1_ERR_RANGE, "input line %ld: \"max_new_tokens\" is negative (%lld)", line,
                           (long long)v);
        r->max_new_tokens = v > INT_MAX ? INT_MAX : (int)v;
    }
    return G1_OK;
}

g1_status g1_request_parse(const char *text, size_t len, long line, g1_run_mode mode, const g1_config *cfg,
                           g1_request *out)
{
    memset(out, 0, sizeof *out);
    out->max_new_tokens = -1;
    out->line = line;
    json_error_t err;
    json_t *obj = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (!obj)
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: malformed JSON: %s (column %d)", line, err.text,
                       err.column);
    g1_status st = G1_OK;
    if (!json_is_object(obj))
        st = G1_FAIL(G1_ERR_FORMAT, "input line %ld: a request must be a JSON object {\"id\": ..., \"prompt_ids\": [...]}",
                     line);
    else
        st = parse_object(obj, line, mode, cfg, out);
    json_decref(obj);
    if (st != G1_OK)
        g1_request_free(out);
    return st;
}

void g1_request_free(g1_request *r)
{
    json_decref(r->id);
    free(r->prompt_ids);
    r->id = NULL;
    r->prompt_ids = NULL;
    r->n_prompt = 0;
}

void g1_request_reader_init(g1_request_reader *rd, FILE *in, g1_run_mode mode, const g1_config *cfg)
{
    memset(rd, 0, sizeof *rd);
    rd->in = in;
    rd->mode = mode;
    rd->cfg = cfg;
}

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

g1_status g1_request_next(g1_request_reader *rd, g1_request *out, int *got)
{
    *got = 0;
    for (;;) {
        ssize_t n = getline(&rd->buf, &rd->cap, rd->in);
        if (n < 0) {
            if (ferror(rd->in))
                return G1_FAIL(G1_ERR_IO, "reading input after line %ld failed", rd->line);
            return G1_OK;
        }
        rd->line++;
        if (is_blank(rd->buf, (size_t)n))
            continue;
        G1_TRY(g1_request_parse(rd->buf, (size_t)n, rd->line, rd->mode, rd->cfg, out));
        *got = 1;
        return G1_OK;
    }
}

void g1_request_reader_free(g1_request_reader *rd)
{
    free(rd->buf);
    rd->buf = NULL;
    rd->cap = 0;
}

static g1_status fmt_fail(const g1_request *r)
{
    return G1_FAIL(G1_ERR_INTERNAL, "formatting the result of input line %ld failed (out of memory or a "
                   "non-finite number)", r->line);
}

/* Compact, in insertion order; doubles with 17 significant digits so they
 * read back to the same value. */
static g1_status dump_result(const g1_request *r, json_t *obj, char **line)
{
    if (!obj)
        return fmt_fail(r);
    *line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(obj);
    if (!*line)
        return fmt_fail(r);
    return G1_OK;
}

g1_status g1_result_score(const g1_request *r, const double *logprobs, double sum_logprob, int greedy,
                          char **line)
{
    json_t *lp = json_array();
    for (int i = 0; lp && i + 1 < r->n_prompt; i++)
        if (json_array_append_new(lp, json_real(logprobs[i])))
            return json_decref(lp), fmt_fail(r);
    json_t *obj = lp ? json_pack("{sOsisosfsb}", "id", r->id, "prompt_tokens", r->n_prompt, "logprobs", lp,
                                 "sum_logprob", sum_logprob, "greedy", greedy)
                     : NULL;
    return dump_result(r, obj, line);
}

g1_status g1_result_generate(const g1_request *r, const int *completion, int n_completion,
                             const char *finish_reason, char **line)
{
    json_t *ids = json_array();
    for (int i = 0; ids && i < n_completion; i++)
        if (json_array_append_new(ids, json_integer(completion[i])))
            return json_decref(ids), fmt_fail(r);
    json_t *obj = ids ? json_pack("{sOsisoss}", "id", r->id, "prompt_tokens", r->n_prompt, "completion_ids", ids,
                                  "finish_reason", finish_reason)
                      : NULL;
    return dump_result(r, obj, line);
}
