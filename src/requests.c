/* JSONL request parsing/validation and result formatting with jansson.
 * Every message names the input line so a user can find the bad request in
 * a file of thousands. The allowed fields live in one table below. */
#include "requests.h"

#include <errno.h>
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
    {"prompt", G1_MODE_SCORE | G1_MODE_GENERATE},
    {"continuation", G1_MODE_SCORE},
    {"continuation_ids", G1_MODE_SCORE},
    {"max_new_tokens", G1_MODE_GENERATE},
    {"temperature", G1_MODE_GENERATE},
    {"top_p", G1_MODE_GENERATE},
    {"top_k", G1_MODE_GENERATE},
    {"seed", G1_MODE_GENERATE},
    {"stop", G1_MODE_GENERATE},
    {"ignore_eos", G1_MODE_GENERATE},
    {"top_logprobs", G1_MODE_GENERATE},
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

/* A list of token ids, `name` in messages ("prompt_ids", "continuation_ids"),
 * appended to r->prompt_ids. The pad id is refused: the release masks keys whose token is the pad id 0 out of
 * the attention of the tokens run in the same call (model.py's input_mask, tokens > pad_token: a whole sequence,
 * or a prompt's prefill; its decode steps, one token each, attend to them) and the engine masks causally only, so
 * such a prompt would get results the released model does not give (docs/ENGINE.md; test ref_release_flow). */
static g1_status parse_ids(const json_t *ids, const char *name, long line, const g1_config *cfg, g1_request *r)
{
    if (!ids)
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: missing \"%s\" (a list of token ids)", line, name);
    if (!json_is_array(ids))
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"%s\" must be a list of token ids", line, name);
    size_t n = json_array_size(ids);
    if (n == 0)
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"%s\" is empty; it needs at least one token", line, name);
    if (n > (size_t)(INT_MAX - r->n_prompt))
        return G1_FAIL(G1_ERR_RANGE, "input line %ld: \"%s\" is too long", line, name);
    int *all = realloc(r->prompt_ids, ((size_t)r->n_prompt + n) * sizeof *all);
    if (!all)
        return G1_FAIL(G1_ERR_NOMEM, "input line %ld: out of memory for %zu tokens", line, n);
    r->prompt_ids = all;
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_array_get(ids, i);
        if (!json_is_integer(t))
            return G1_FAIL(G1_ERR_FORMAT, "input line %ld: %s[%zu] is not an integer token id", line, name, i);
        json_int_t v = json_integer_value(t);
        if (v < 0 || v >= cfg->vocab_size)
            return G1_FAIL(G1_ERR_RANGE,
                           "input line %ld: %s[%zu] = %lld is out of range: the vocabulary has %d tokens "
                           "(ids 0..%d)",
                           line, name, i, (long long)v, cfg->vocab_size, cfg->vocab_size - 1);
        if (v == cfg->pad_id)
            return G1_FAIL(G1_ERR_RANGE,
                           "input line %ld: %s[%zu] = %lld is the pad id: the released model masks pad tokens out "
                           "of attention and this runner does not, so it refuses them (remove the padding)",
                           line, name, i, (long long)v);
        all[r->n_prompt + (int)i] = (int)v;
    }
    r->n_prompt += (int)n;
    return G1_OK;
}

/* 1 for the code points Python's str.isspace() takes (what lm-eval's
 * context.rstrip() strips): ASCII tab to carriage return, the separators
 * 0x1c-0x1f, space, NEL, no-break space, and the Unicode spaces and line
 * and paragraph separators. */
static int is_py_space(unsigned cp)
{
    return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f ||
           cp == 0x3000;
}

/* The length of p[0, n) without its trailing whitespace, as Python's
 * str.rstrip() (p is valid UTF-8: jansson checks every string). */
static size_t rstrip_len(const char *p, size_t n)
{
    while (n) {
        size_t i = n - 1;
        while (i && ((unsigned char)p[i] & 0xc0) == 0x80) /* back to the lead byte */
            i--;
        const unsigned char *u = (const unsigned char *)p + i;
        unsigned cp = u[0] < 0x80 ? u[0] : u[0] < 0xe0 ? u[0] & 0x1fu : u[0] < 0xf0 ? u[0] & 0x0fu : u[0] & 0x07u;
        for (size_t k = i + 1; k < n; k++)
            cp = cp << 6 | ((unsigned char)p[k] & 0x3fu);
        if (!is_py_space(cp))
            break;
        n = i;
    }
    return n;
}

/* Text prompt (and continuation, as lm-eval's _encode_pair makes them: the
 * prompt's trailing whitespace (all that Python's rstrip() takes) moves to
 * the continuation; the context is the prompt's own tokens, the
 * continuation the tokens of prompt + continuation encoded whole past as
 * many as the prompt has alone (when the prompt's tokens are not the start
 * of the whole text's, the context is still the prompt's: "unbeliev" +
 * "able" is scored after the tokens of "unbeliev"); a prompt with no token
 * conditions the continuation on bos_id alone, as lm-eval does with an
 * empty context; so does an empty prompt in generate mode). */
static g1_status parse_text(const json_t *prompt, const json_t *cont, long line, const g1_request_ctx *ctx,
                            g1_request *r)
{
    if (!ctx->tok)
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"prompt\" text needs a tokenizer: run with --tokenizer "
                                      "MODEL, or give \"prompt_ids\"", line);
    if (!json_is_string(prompt))
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"prompt\" must be a string", line);
    if (cont && !json_is_string(cont))
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"continuation\" must be a string", line);
    const char *p = json_string_value(prompt);
    size_t np = json_string_length(prompt);
    g1_ids whole = {0}, ctxt = {0};
    g1_status st = G1_OK;
    int bos = 0; /* 1: bos_id before the tokens (an empty context) */
    if (!cont) {
        st = g1_tok_encode(ctx->tok, p, np, &whole);
        /* an empty text prompt generates after bos_id alone (as an empty
         * context is scored); score mode has nothing to score in it */
        bos = st == G1_OK && whole.n == 0 && ctx->mode == G1_MODE_GENERATE;
    } else {
        size_t keep = rstrip_len(p, np);
        size_t nc = json_string_length(cont);
        char *all = malloc(np + nc + 1);
        if (!all)
            return G1_FAIL(G1_ERR_NOMEM, "input line %ld: out of memory", line);
        memcpy(all, p, np);
        memcpy(all + np, json_string_value(cont), nc);
        st = g1_tok_encode(ctx->tok, all, np + nc, &whole);
        free(all);
        if (st == G1_OK)
            st = g1_tok_encode(ctx->tok, p, keep, &ctxt);
        if (st == G1_OK && ctxt.n >= whole.n)
            st = G1_FAIL(G1_ERR_FORMAT, "input line %ld: the continuation is empty after tokenizing", line);
        if (st == G1_OK && ctxt.n) /* the context: the prompt's own tokens */
            memcpy(whole.v, ctxt.v, ctxt.n * sizeof *whole.v);
        bos = ctxt.n == 0;
        r->n_context = (int)ctxt.n + bos;
    }
    if (st == G1_OK && whole.n == 0 && !bos)
        st = G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"prompt\" is empty: score mode has no token to score in it "
                                    "(give a \"continuation\" to score it after an empty context)", line);
    if (st == G1_OK && whole.n >= (size_t)INT_MAX)
        st = G1_FAIL(G1_ERR_RANGE, "input line %ld: the prompt is too long", line);
    if (st == G1_OK && !(r->prompt_ids = malloc((whole.n + (size_t)bos) * sizeof *r->prompt_ids)))
        st = G1_FAIL(G1_ERR_NOMEM, "input line %ld: out of memory", line);
    if (st == G1_OK && bos)
        r->prompt_ids[0] = ctx->cfg->bos_id;
    for (size_t i = 0; st == G1_OK && i < whole.n; i++) {
        if (whole.v[i] >= ctx->cfg->vocab_size)
            st = G1_FAIL(G1_ERR_RANGE, "input line %ld: the tokenizer gave id %d, outside the model's vocabulary of "
                                       "%d: is it the model's tokenizer?", line, whole.v[i], ctx->cfg->vocab_size);
        else if (whole.v[i] == ctx->cfg->pad_id) /* never from Grok-1's tokenizer: its pad piece is a control one */
            st = G1_FAIL(G1_ERR_RANGE, "input line %ld: the tokenizer gave id %d, the model's pad id, which this "
                                       "runner refuses (the released model masks pad tokens out of attention and "
                                       "this runner does not): is it the model's tokenizer?", line, whole.v[i]);
        else
            r->prompt_ids[bos + i] = whole.v[i];
    }
    r->n_prompt = (int)whole.n + bos;
    r->text = 1;
    g1_ids_free(&whole);
    g1_ids_free(&ctxt);
    return st;
}

/* Fit the context: refuse, or cut from the left with --truncate left (a
 * continuation is never cut: only its prompt part). */
static g1_status fit_context(long line, const g1_request_ctx *ctx, g1_request *r)
{
    int context = ctx->max_context > 0 && ctx->max_context < ctx->cfg->max_seq_len ? ctx->max_context
                                                                                   : ctx->cfg->max_seq_len;
    /* a score request's last token is only predicted (not fed) unless every
     * position's logits are dumped; a generation needs room for a new token */
    int limit = ctx->mode != G1_MODE_SCORE ? context - 1 : ctx->feed_all ? context : context + 1;
    char bound[80];
    if (context < ctx->cfg->max_seq_len)
        snprintf(bound, sizeof bound, "--max-context %d; the model's max_seq_len is %d", context,
                 ctx->cfg->max_seq_len);
    else
        snprintf(bound, sizeof bound, "max_seq_len %d", context);
    if (limit < 1) /* grok1-run refuses such a context up front; a prompt cut to nothing would run empty */
        return G1_FAIL(G1_ERR_RANGE, "input line %ld: no room for a prompt: a generate request needs a context of "
                                     "at least 2 positions (%s)", line, bound);
    if (r->n_prompt <= limit)
        return G1_OK;
    int cut = r->n_prompt - limit;
    if (!ctx->truncate_left || (r->n_context && cut >= r->n_context)) {
        /* with a continuation, n_prompt counts both parts: say so (a result's
         * prompt_tokens is the prompt part alone) */
        char what[96];
        if (r->n_context)
            snprintf(what, sizeof what, "the prompt and its continuation have %d tokens (%d + %d)", r->n_prompt,
                     r->n_context, r->n_prompt - r->n_context);
        else
            snprintf(what, sizeof what, "the prompt has %d tokens", r->n_prompt);
        return G1_FAIL(G1_ERR_RANGE,
                       "input line %ld: %s; %s is %d (%s)%s", line, what,
                       ctx->mode != G1_MODE_SCORE ? "the most a generate request may have, leaving room for a new token"
                       : ctx->feed_all ? "the most a score request may have with --dump-logits (every token is fed)"
                                       : "the most a score request may have (the last token is only predicted)",
                       limit, bound,
                       !ctx->truncate_left ? "; use --truncate left to cut it from the left as the reference does"
                                           : "; --truncate left would cut all of the prompt part (a continuation "
                                             "is never cut)");
    }
    memmove(r->prompt_ids, r->prompt_ids + cut, (size_t)limit * sizeof *r->prompt_ids);
    r->n_prompt = limit;
    r->truncated = cut;
    if (r->n_context)
        r->n_context -= cut;
    return G1_OK;
}

static g1_status parse_sampling(const json_t *obj, long line, g1_request *r)
{
    const json_t *v;
    if ((v = json_object_get(obj, "temperature"))) {
        if (!json_is_number(v) || json_number_value(v) < 0)
            return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"temperature\" must be a number >= 0", line);
        r->sample.temperature = json_number_value(v);
    }
    if ((v = json_object_get(obj, "top_p"))) {
        if (!json_is_number(v) || !(json_number_value(v) > 0 && json_number_value(v) <= 1))
            return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"top_p\" must be a number in (0, 1]", line);
        r->sample.top_p = json_number_value(v);
    }
    if ((v = json_object_get(obj, "top_k"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"top_k\" must be an integer >= 0 (0: no limit)", line);
        /* more than any vocabulary: the same as INT_MAX */
        r->sample.top_k = json_integer_value(v) > INT_MAX ? INT_MAX : (int32_t)json_integer_value(v);
    }
    if ((v = json_object_get(obj, "seed"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"seed\" must be an integer >= 0", line);
        r->sample.seed = (uint64_t)json_integer_value(v);
    }
    if ((v = json_object_get(obj, "ignore_eos"))) {
        if (!json_is_boolean(v))
            return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"ignore_eos\" must be true or false", line);
        r->ignore_eos = json_is_true(v);
    }
    if ((v = json_object_get(obj, "top_logprobs"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 100)
            return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"top_logprobs\" must be an integer in 0..100", line);
        r->top_logprobs = (int)json_integer_value(v);
    }
    if ((v = json_object_get(obj, "stop"))) {
        size_t n = json_is_string(v) ? 1 : json_is_array(v) ? json_array_size(v) : 0;
        if (!json_is_string(v) && !json_is_array(v))
            return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"stop\" must be a string or a list of strings", line);
        if (n > 64)
            return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"stop\" has %zu strings; at most 64", line, n);
        r->stop = calloc(n ? n : 1, sizeof *r->stop);
        if (!r->stop)
            return G1_FAIL(G1_ERR_NOMEM, "input line %ld: out of memory", line);
        for (size_t i = 0; i < n; i++) {
            const json_t *e = json_is_string(v) ? v : json_array_get(v, i);
            if (!json_is_string(e) || json_string_length(e) == 0)
                return G1_FAIL(G1_ERR_FORMAT, "input line %ld: stop[%zu] must be a non-empty string", line, i);
            if (strlen(json_string_value(e)) != json_string_length(e))
                return G1_FAIL(G1_ERR_FORMAT, "input line %ld: stop[%zu] contains U+0000 (\\u0000), which stop "
                                              "strings cannot hold", line, i);
            if (!(r->stop[i] = strdup(json_string_value(e))))
                return G1_FAIL(G1_ERR_NOMEM, "input line %ld: out of memory", line);
            r->n_stop = (int)i + 1;
        }
    }
    if (g1_sample_opts_check(&r->sample) != G1_OK)
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: %s", line, g1_last_error());
    return G1_OK;
}

static g1_status parse_object(const json_t *obj, long line, const g1_request_ctx *ctx, g1_request *r)
{
    g1_run_mode mode = ctx->mode;
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

    const json_t *text = json_object_get(obj, "prompt"), *cont = json_object_get(obj, "continuation");
    const json_t *cont_ids = json_object_get(obj, "continuation_ids");
    if (text && json_object_get(obj, "prompt_ids"))
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: give \"prompt\" or \"prompt_ids\", not both", line);
    if (cont && !text)
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"continuation\" needs a text \"prompt\" (with "
                                      "\"prompt_ids\", give \"continuation_ids\")", line);
    if (cont_ids && text)
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"continuation_ids\" goes with \"prompt_ids\" (with a "
                                      "text \"prompt\", give \"continuation\" text)", line);
    if (text) {
        G1_TRY(parse_text(text, cont, line, ctx, r));
    } else {
        G1_TRY(parse_ids(json_object_get(obj, "prompt_ids"), "prompt_ids", line, ctx->cfg, r));
        if (cont_ids) { /* scored as given: no re-tokenizing at the boundary */
            r->n_context = r->n_prompt;
            G1_TRY(parse_ids(cont_ids, "continuation_ids", line, ctx->cfg, r));
        }
    }
    G1_TRY(fit_context(line, ctx, r));

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
    if (mode == G1_MODE_GENERATE)
        G1_TRY(parse_sampling(obj, line, r));
    if (r->n_stop && !ctx->tok)
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: \"stop\" strings need a tokenizer: run with --tokenizer MODEL",
                       line);
    return G1_OK;
}

g1_status g1_request_parse(const char *text, size_t len, long line, const g1_request_ctx *ctx, g1_request *out)
{
    memset(out, 0, sizeof *out);
    out->max_new_tokens = -1;
    out->line = line;
    out->sample = ctx->sample;
    out->top_logprobs = ctx->top_logprobs;
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) /* jansson's message would show an invisible character */
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: starts with a UTF-8 byte-order mark (bytes EF BB BF, which some "
                                      "editors add): save the file as UTF-8 without it", line);
    json_error_t err;
    json_t *obj = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!obj && strstr(err.text, "too big integer"))
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: an integer (column %d) is beyond what grok1-run reads "
                                      "(-2^63 to 2^63 - 1): a longer id can be given as a string", line, err.column);
    if (!obj)
        return G1_FAIL(G1_ERR_FORMAT, "input line %ld: malformed JSON: %s (column %d)", line, err.text,
                       err.column);
    g1_status st = G1_OK;
    if (!json_is_object(obj))
        st = G1_FAIL(G1_ERR_FORMAT, "input line %ld: a request must be a JSON object {\"id\": ..., \"prompt_ids\": [...]}",
                     line);
    else
        st = parse_object(obj, line, ctx, out);
    json_decref(obj);
    if (st != G1_OK)
        g1_request_free(out);
    return st;
}

void g1_request_free(g1_request *r)
{
    json_decref(r->id);
    free(r->prompt_ids);
    for (int i = 0; r->stop && i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->stop);
    r->id = NULL;
    r->prompt_ids = NULL;
    r->stop = NULL;
    r->n_stop = 0;
    r->n_prompt = 0;
}

void g1_request_reader_init(g1_request_reader *rd, FILE *in, const g1_request_ctx *ctx)
{
    memset(rd, 0, sizeof *rd);
    rd->in = in;
    rd->ctx = *ctx;
}

int g1_blank_line(const char *s, size_t n)
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
        if (rd->ctx.bounded && (rd->ctx.end_requests >= 0 ? rd->seen >= rd->ctx.end_requests
                                                          : rd->bytes >= rd->ctx.end_bytes)) {
            /* the end of what the record covers: whether a request follows
             * (read, not parsed; blank lines are not requests) */
            ssize_t m;
            while (!rd->left && (m = getline(&rd->buf, &rd->cap, rd->in)) > 0)
                rd->left = !g1_blank_line(rd->buf, (size_t)m);
            return G1_OK;
        }
        errno = 0;
        ssize_t n = getline(&rd->buf, &rd->cap, rd->in);
        if (n < 0) {
            if (ferror(rd->in))
                return G1_FAIL(G1_ERR_IO, "reading the input after line %ld failed: %s", rd->line,
                               strerror(errno ? errno : EIO));
            return G1_OK;
        }
        rd->line++;
        rd->bytes += n;
        if (g1_blank_line(rd->buf, (size_t)n))
            continue;
        int64_t index = rd->seen++;
        if (rd->ctx.shards > 1 && index % rd->ctx.shards != rd->ctx.shard)
            continue;
        G1_TRY(g1_request_parse(rd->buf, (size_t)n, rd->line, &rd->ctx, out));
        out->index = index;
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

g1_status g1_result_score(const g1_request *r, const double *logprobs, const unsigned char *argmax_ok, char **line)
{
    /* positions predicted: 1..n-1, or the continuation's n_context..n-1 */
    int first = r->n_context ? r->n_context : 1;
    double sum = 0;
    int greedy = 1;
    json_t *lp = json_array();
    for (int i = first; lp && i < r->n_prompt; i++) {
        if (json_array_append_new(lp, json_real(logprobs[i - 1])))
            return json_decref(lp), fmt_fail(r);
        sum += logprobs[i - 1];
        greedy &= argmax_ok[i - 1] != 0;
    }
    json_t *obj = NULL;
    if (lp && r->n_context)
        obj = json_pack("{sOsisisosfsb}", "id", r->id, "prompt_tokens", r->n_context, "continuation_tokens",
                        r->n_prompt - r->n_context, "logprobs", lp, "sum_logprob", sum, "is_greedy", greedy);
    else if (lp)
        obj = json_pack("{sOsisosfsb}", "id", r->id, "prompt_tokens", r->n_prompt, "logprobs", lp, "sum_logprob", sum,
                        "greedy", greedy);
    if (obj && r->truncated && json_object_set_new(obj, "truncated", json_integer(r->truncated)))
        return json_decref(obj), fmt_fail(r);
    return dump_result(r, obj, line);
}

g1_status g1_result_generate(const g1_request *r, const int *completion, int n_completion, const char *text,
                             size_t text_len, const char *finish_reason, const g1_logprob *top, char **line)
{
    json_t *ids = json_array();
    for (int i = 0; ids && i < n_completion; i++)
        if (json_array_append_new(ids, json_integer(completion[i])))
            return json_decref(ids), fmt_fail(r);
    json_t *obj = ids ? json_pack("{sOsiso}", "id", r->id, "prompt_tokens", r->n_prompt, "completion_ids", ids) : NULL;
    int bad = !obj;
    if (!bad && text)
        bad = json_object_set_new(obj, "completion", json_stringn(text, text_len)) != 0;
    if (!bad)
        bad = json_object_set_new(obj, "finish_reason", json_string(finish_reason)) != 0;
    if (!bad && r->top_logprobs > 0) {
        json_t *steps = json_array();
        for (int i = 0; steps && i < n_completion; i++) {
            json_t *one = json_array();
            for (int j = 0; one && j < r->top_logprobs; j++) {
                const g1_logprob *e = &top[(size_t)i * r->top_logprobs + j];
                json_array_append_new(one, json_pack("{sisf}", "id", e->id, "logprob", e->logprob));
            }
            if (!one || json_array_append_new(steps, one))
                bad = 1;
        }
        bad = bad || !steps || json_object_set_new(obj, "top_logprobs", steps) != 0;
    }
    if (!bad && r->truncated)
        bad = json_object_set_new(obj, "truncated", json_integer(r->truncated)) != 0;
    if (bad) {
        json_decref(obj);
        return fmt_fail(r);
    }
    return dump_result(r, obj, line);
}
