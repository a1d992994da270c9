/* grok1-tokenize: SentencePiece encode/decode over JSONL on stdin/stdout,
 * one output line per input line, with Grok-1's tokenizer.model (or any
 * BPE SentencePiece model the reader accepts). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli_out.h"
#include "g1_version.h"
#include "tok_jsonl.h"

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: grok1-tokenize --tokenizer MODEL encode|decode [--pieces]\n"
            "\n"
            "Reads JSONL on stdin and writes one JSON line per input line on stdout:\n"
            "  encode: {\"text\": \"...\"}  ->  {\"ids\": [...]}\n"
            "  decode: {\"ids\": [...]}    ->  {\"text\": \"...\"}\n"
            "An \"id\" member is echoed back. No BOS or EOS is added.\n"
            "\n"
            "  --tokenizer MODEL  SentencePiece BPE model (e.g. Grok-1's tokenizer.model)\n"
            "  --pieces           add \"pieces\": the piece string of every id\n"
            "  --help             this text\n"
            "  --version          the version\n"
            "\n"
            "A bad line gets {\"error\": \"...\"} in its place and a message naming the\n"
            "line on stderr; the exit status is then 1 (2 for usage errors).\n");
}

int main(int argc, char **argv)
{
    const char *model = NULL, *mode_s = NULL;
    int pieces = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return g1_stdout_done("grok1-tokenize");
        } else if (!strcmp(argv[i], "--version")) {
            printf("grok1-tokenize %s\n", G1_VERSION);
            return g1_stdout_done("grok1-tokenize");
        } else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) {
            model = argv[++i];
        } else if (!strncmp(argv[i], "--tokenizer=", 12)) {
            model = argv[i] + 12;
        } else if (!strcmp(argv[i], "--pieces")) {
            pieces = 1;
        } else if (argv[i][0] != '-' && !mode_s) {
            mode_s = argv[i];
        } else {
            fprintf(stderr, "grok1-tokenize: unknown or incomplete argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!model || !mode_s || (strcmp(mode_s, "encode") && strcmp(mode_s, "decode"))) {
        fprintf(stderr, "grok1-tokenize: need --tokenizer MODEL and a mode, encode or decode (see --help)\n");
        return 2;
    }
    g1_tokj_mode mode = !strcmp(mode_s, "encode") ? G1_TOKJ_ENCODE : G1_TOKJ_DECODE;
    g1_tokenizer *tok;
    if (g1_tok_load(&tok, model) != G1_OK) {
        fprintf(stderr, "grok1-tokenize: %s\n", g1_last_error());
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long lineno = 0, bad = 0;
    g1_str out = {0};
    int rc = 0;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        if (len && line[len - 1] == '\n')
            len--;
        out.n = 0;
        g1_status st = g1_tokj_line(tok, mode, pieces, line, len, &out);
        if (st == G1_ERR_NOMEM) {
            fprintf(stderr, "grok1-tokenize: line %ld: %s\n", lineno, g1_last_error());
            rc = 1;
            break;
        }
        if (st != G1_OK) {
            bad++;
            char msg[1200];
            snprintf(msg, sizeof msg, "line %ld: %s", lineno, g1_last_error());
            fprintf(stderr, "grok1-tokenize: %s\n", msg);
            /* the same reason in the error line, JSON-escaped */
            json_t *e = json_pack("{s:s}", "error", msg);
            char *js = e ? json_dumps(e, JSON_COMPACT) : NULL;
            printf("%s\n", js ? js : "{\"error\":\"bad request\"}");
            free(js);
            json_decref(e);
            continue;
        }
        fwrite(out.s, 1, out.n, stdout);
        fputc('\n', stdout);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "grok1-tokenize: error writing the output\n");
        rc = 1;
    }
    if (bad) {
        fprintf(stderr, "grok1-tokenize: %ld of %ld lines were bad\n", bad, lineno);
        rc = 1;
    }
    free(line);
    g1_str_free(&out);
    g1_tok_free(tok);
    return rc;
}
