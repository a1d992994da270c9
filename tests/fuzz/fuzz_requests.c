/* libFuzzer target: grok1-run's request lines (g1_request_parse) and the
 * reader over a whole input (g1_request_next, blank lines and shards), with
 * the command line's settings taken from the first two bytes, the committed
 * demo tokenizer (G1_FUZZ_MODEL, set by meson) and the tiny model's config.
 * Beyond "no crash, no leak" it checks what the driver relies on: an
 * accepted request has 1 to `limit` tokens (the context's room for its
 * mode), every id in the vocabulary, a continuation inside the prompt; a
 * refused one says "input line N:" first. Also built without libFuzzer by
 * replay.c: the seed corpus is a unit test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "requests.h"

#define FUZZ_NAME "fuzz_requests"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What every accepted request must satisfy under ctx. */
static void check_request(const g1_request *r, const g1_request_ctx *ctx, long line)
{
    const g1_config *c = ctx->cfg;
    int context = ctx->max_context > 0 && ctx->max_context < c->max_seq_len ? ctx->max_context : c->max_seq_len;
    int limit = ctx->mode != G1_MODE_SCORE ? context - 1 : ctx->feed_all ? context : context + 1;
    CHECK(r->line == line, "line %ld, expected %ld", r->line, line);
    CHECK(json_is_string(r->id) || json_is_number(r->id), "id neither a string nor a number");
    CHECK(r->n_prompt >= 1 && r->n_prompt <= limit, "%d tokens accepted; room for 1..%d (mode %d, context %d)",
          r->n_prompt, limit, ctx->mode, context);
    for (int i = 0; i < r->n_prompt; i++)
        CHECK(r->prompt_ids[i] >= 0 && r->prompt_ids[i] < c->vocab_size && r->prompt_ids[i] != c->pad_id,
              "token %d = %d outside the vocabulary or the pad id", i, r->prompt_ids[i]);
    CHECK(r->n_context == 0 || (ctx->mode == G1_MODE_SCORE && r->n_context >= 1 && r->n_context < r->n_prompt),
          "continuation after %d of %d tokens", r->n_context, r->n_prompt);
    CHECK(r->truncated >= 0 && (ctx->truncate_left || r->truncated == 0), "%d tokens cut", r->truncated);
    CHECK(r->text == 0 || ctx->tok, "text without a tokenizer");
    CHECK(r->max_new_tokens >= -1, "max_new_tokens %d", r->max_new_tokens);
    CHECK(r->n_stop == 0 || (ctx->tok && ctx->mode == G1_MODE_GENERATE), "stop strings where none are allowed");
    for (int i = 0; i < r->n_stop; i++)
        CHECK(r->stop[i] && r->stop[i][0], "stop[%d] empty", i);
    CHECK(r->top_logprobs >= 0 && r->top_logprobs <= 100, "top_logprobs %d", r->top_logprobs);
    CHECK(r->sample.temperature >= 0 && r->sample.top_p > 0 && r->sample.top_p <= 1 && r->sample.top_k >= 0,
          "sampling settings out of range");
}

static void check_refusal(long line)
{
    char want[48];
    snprintf(want, sizeof want, "input line %ld:", line);
    CHECK(!strncmp(g1_last_error(), want, strlen(want)), "a refusal without \"%s\" first: %s", want,
          g1_last_error());
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static g1_tokenizer *tok;
    static g1_config cfg;
    if (!tok) {
        if (g1_tok_load(&tok, G1_FUZZ_MODEL) != G1_OK || g1_config_preset("tiny", &cfg) != G1_OK) {
            fprintf(stderr, "fuzz_requests: %s\n", g1_last_error());
            abort();
        }
    }
    if (size < 2)
        return 0;
    /* byte 0: mode, tokenizer, truncation, logits dump, reader, shard count, shard (low bit);
     * byte 1: --max-context, max_seq_len, vocabulary, shard (high bit), default top_logprobs */
    unsigned a = data[0], b = data[1];
    static const int contexts[8] = {0, 1, 2, 3, 5, 9, 40, 300};
    g1_config model = cfg;
    model.max_seq_len = b & 8 ? 64 : 256;
    model.vocab_size = b & 16 ? 300 : 512; /* below the demo tokenizer's: text may give ids outside */
    g1_request_ctx ctx = {.mode = a & 1 ? G1_MODE_GENERATE : G1_MODE_SCORE,
                          .cfg = &model,
                          .tok = a & 2 ? tok : NULL,
                          .sample = {.temperature = 0, .top_p = 1, .top_k = 0, .seed = 42},
                          .top_logprobs = (int)(b >> 6),
                          .truncate_left = (a >> 2) & 1,
                          .max_context = contexts[b & 7],
                          .feed_all = (a >> 3) & 1 && !(a & 1)};
    /* a generate context of 1 (grok1-run refuses it up front) is left in: the parser must refuse it too */
    const char *text = (const char *)data + 2;
    size_t n = size - 2;
    if (!(a & 16)) { /* one line */
        g1_request r;
        if (g1_request_parse(text, n, 7, &ctx, &r) == G1_OK) {
            check_request(&r, &ctx, 7);
            g1_request_free(&r);
        } else {
            check_refusal(7);
        }
        return 0;
    }
    /* a whole input through the reader, as shard k of N (N = 1..3) */
    ctx.shards = 1 + (int)((a >> 5) % 3);
    ctx.shard = (int)(((a >> 7) | (b >> 5 & 1) << 1) % (unsigned)ctx.shards);
    static char nothing[1];
    FILE *in = fmemopen(n ? (void *)text : nothing, n ? n : 1, "r");
    if (!in)
        return 0;
    if (!n)
        fgetc(in); /* fmemopen of 0 bytes is refused: an empty input is one byte already read */
    g1_request_reader rd;
    g1_request_reader_init(&rd, in, &ctx);
    long last = 0;
    int64_t last_index = -1;
    for (;;) {
        g1_request r;
        int got;
        if (g1_request_next(&rd, &r, &got) != G1_OK) {
            check_refusal(rd.line);
            break;
        }
        if (!got)
            break;
        CHECK(r.line > last && r.index > last_index, "requests out of order: line %ld after %ld", r.line, last);
        CHECK(r.index % ctx.shards == ctx.shard, "request %lld read by shard %d of %d", (long long)r.index, ctx.shard,
              ctx.shards);
        check_request(&r, &ctx, rd.line);
        last = r.line;
        last_index = r.index;
        g1_request_free(&r);
    }
    CHECK(rd.seen <= rd.line, "%lld requests in %ld lines", (long long)rd.seen, rd.line);
    g1_request_reader_free(&rd);
    fclose(in);
    return 0;
}
