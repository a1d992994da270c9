/* Test driver for the differential tests (test_tok_diff.py): byte-exact
 * encode and decode over a line protocol, so invalid UTF-8 can be tested
 * (JSON cannot carry it). stdin lines: "e HEX" -> ids; "d ID ..." -> HEX of
 * the text (also checks that the streaming decoder gives the same bytes,
 * pushing one id at a time); "t" -> timing loop, see bench_tok.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer.h"

static int hexval(int c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: tok_hex MODEL < commands\n");
        return 2;
    }
    g1_tokenizer *tok;
    if (g1_tok_load(&tok, argv[1]) != G1_OK) {
        printf("LOADERR %s\n", g1_last_error());
        return 0;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        size_t len = (size_t)got;
        if (len && line[len - 1] == '\n')
            line[--len] = 0;
        if (line[0] == 'e') {
            size_t n = len > 2 ? (len - 2) / 2 : 0;
            char *buf = malloc(n + 1);
            for (size_t i = 0; i < n; i++)
                buf[i] = (char)(hexval(line[2 + 2 * i]) * 16 + hexval(line[3 + 2 * i]));
            g1_ids ids = {0};
            if (g1_tok_encode(tok, buf, n, &ids) != G1_OK)
                printf("ERR %s\n", g1_last_error());
            else {
                for (size_t i = 0; i < ids.n; i++)
                    printf(i ? " %d" : "%d", (int)ids.v[i]);
                printf("\n");
            }
            g1_ids_free(&ids);
            free(buf);
        } else if (line[0] == 'd') {
            g1_ids ids = {0};
            char *p = line + 1, *end;
            for (long v; (v = strtol(p, &end, 10)), end != p; p = end)
                g1_ids_push(&ids, (int32_t)v);
            g1_str a = {0}, b = {0};
            g1_tok_stream st;
            g1_tok_stream_init(&st, tok);
            int bad = g1_tok_decode(tok, ids.v, ids.n, &a) != G1_OK;
            size_t prev = 0;
            for (size_t i = 0; !bad && i < ids.n; i++) {
                bad |= g1_tok_stream_push(&st, ids.v[i], &b) != G1_OK;
                /* what a push emitted is final: it must be a prefix of the whole */
                if (b.n > a.n || (b.n && memcmp(a.s, b.s, b.n) != 0)) {
                    printf("STREAM-MISMATCH after id %zu\n", i);
                    bad = 2;
                }
                prev = b.n;
            }
            (void)prev;
            if (!bad)
                bad |= g1_tok_stream_finish(&st, &b) != G1_OK;
            if (bad == 1)
                printf("ERR %s\n", g1_last_error());
            else if (!bad && (a.n != b.n || (a.n && memcmp(a.s, b.s, a.n) != 0)))
                printf("STREAM-MISMATCH at end\n");
            else if (!bad) {
                for (size_t i = 0; i < a.n; i++)
                    printf("%02x", (unsigned char)a.s[i]);
                printf("\n");
            }
            g1_str_free(&a);
            g1_str_free(&b);
            g1_ids_free(&ids);
        } else if (line[0] == 't') {
            /* "t REPEAT FILE": encode each line of FILE, REPEAT times; prints
             * bytes, tokens and seconds */
            int rep = atoi(line + 2);
            const char *path = strchr(line + 2, ' ');
            FILE *fp = path ? fopen(path + 1, "rb") : NULL;
            if (!fp) {
                printf("ERR cannot open\n");
                continue;
            }
            char *l2 = NULL;
            size_t c2 = 0, nl = 0, ncap = 0;
            char **lines = NULL;
            size_t *lens = NULL;
            ssize_t g2;
            while ((g2 = getline(&l2, &c2, fp)) >= 0) {
                if (nl == ncap) {
                    ncap = ncap ? 2 * ncap : 1024;
                    lines = realloc(lines, sizeof *lines * ncap);
                    lens = realloc(lens, sizeof *lens * ncap);
                }
                lens[nl] = (size_t)g2 - (g2 > 0 && l2[g2 - 1] == '\n');
                lines[nl] = malloc(lens[nl] + 1);
                memcpy(lines[nl], l2, lens[nl]);
                nl++;
            }
            fclose(fp);
            struct timespec t0, t1;
            size_t bytes = 0, toks = 0;
            g1_ids ids = {0};
            clock_gettime(CLOCK_MONOTONIC, &t0);
            for (int r = 0; r < rep; r++)
                for (size_t i = 0; i < nl; i++) {
                    ids.n = 0;
                    g1_tok_encode(tok, lines[i], lens[i], &ids);
                    bytes += lens[i];
                    toks += ids.n;
                }
            clock_gettime(CLOCK_MONOTONIC, &t1);
            printf("%zu %zu %.6f\n", bytes, toks, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
            g1_ids_free(&ids);
            for (size_t i = 0; i < nl; i++)
                free(lines[i]);
            free(lines);
            free(lens);
            free(l2);
        }
        fflush(stdout);
    }
    free(line);
    g1_tok_free(tok);
    return 0;
}
