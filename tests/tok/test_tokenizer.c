/* Tokenizer unit tests without the reference library: the model reader on
 * hand-built and damaged models (every truncation of a small model, flipped
 * bytes, refused settings), streaming decode of characters split over byte
 * pieces, stop strings, and the GROK1.md examples when the real model is
 * beside the checkout (../shared/grok-1/tokenizer.model). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "tokenizer.h"

/* --- a tiny protobuf writer for hand-built models --- */
typedef struct buf { unsigned char d[65536]; size_t n; } buf;
static void put_varint(buf *b, uint64_t v)
{
    while (v >= 0x80) {
        b->d[b->n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    b->d[b->n++] = (unsigned char)v;
}
static void put_bytes(buf *b, int field, const void *p, size_t n)
{
    put_varint(b, (uint64_t)field << 3 | 2);
    put_varint(b, n);
    memcpy(b->d + b->n, p, n);
    b->n += n;
}
static void put_int(buf *b, int field, uint64_t v)
{
    put_varint(b, (uint64_t)field << 3);
    put_varint(b, v);
}
static void put_piece(buf *b, const char *s, float score, int type)
{
    buf p = {.n = 0};
    put_bytes(&p, 1, s, strlen(s));
    uint32_t u;
    memcpy(&u, &score, 4);
    put_varint(&p, 2 << 3 | 5);
    for (int i = 0; i < 4; i++)
        p.d[p.n++] = (unsigned char)(u >> (8 * i));
    put_int(&p, 3, (uint64_t)type);
    put_bytes(b, 1, p.d, p.n);
}

/* BPE model: [PAD] [BOS] [EOS] [UNK], user "\n" "<|m|>", bytes, then a b ab ▁ ▁a ▁ab "\na" (a normal
 * piece that spans a user piece: BPE must never make it, the "\n" is frozen) */
static void mini_model(buf *m, int model_type, int charsmap, int with_unk)
{
    m->n = 0;
    put_piece(m, "[PAD]", 0, 3);
    put_piece(m, "[BOS]", 0, 3);
    put_piece(m, "[EOS]", 0, 3);
    if (with_unk)
        put_piece(m, "[UNK]", 0, 2);
    put_piece(m, "\n", 0, 4);
    put_piece(m, "<|m|>", 0, 4);
    for (int i = 0; i < 256; i++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", i);
        put_piece(m, s, 0, 6);
    }
    const char *normal[] = {"a", "b", "ab", "\xE2\x96\x81", "\xE2\x96\x81" "a", "\xE2\x96\x81" "ab", "\na"};
    for (int i = 0; i < 7; i++)
        put_piece(m, normal[i], (float)-i, 1);
    buf t = {.n = 0};
    put_int(&t, 3, (uint64_t)model_type);
    put_int(&t, 35, 1);
    put_bytes(&t, 46, "[BOS]", 5);
    put_bytes(&t, 47, "[EOS]", 5);
    put_bytes(&t, 48, "[PAD]", 5);
    put_bytes(m, 2, t.d, t.n);
    buf ns = {.n = 0};
    put_bytes(&ns, 1, "identity", 8);
    if (charsmap)
        put_bytes(&ns, 2, "xyz", 3);
    put_int(&ns, 4, 0);
    put_bytes(m, 3, ns.d, ns.n);
}

static int encode_is(const g1_tokenizer *t, const char *text, const int32_t *want, size_t n)
{
    g1_ids ids = {0};
    int ok = g1_tok_encode(t, text, strlen(text), &ids) == G1_OK && ids.n == n && !memcmp(ids.v, want, n * 4);
    if (!ok) {
        fprintf(stderr, "  encode \"%s\":", text);
        for (size_t i = 0; i < ids.n; i++)
            fprintf(stderr, " %d", (int)ids.v[i]);
        fprintf(stderr, "\n");
    }
    g1_ids_free(&ids);
    return ok;
}

static void test_mini(void)
{
    static buf m;
    g1_tokenizer *t;
    mini_model(&m, 2, 0, 1);
    CHECK(g1_tok_load_mem(&t, m.d, m.n, "mini") == G1_OK, "mini model refused: %s", g1_last_error());
    if (!t)
        return;
    CHECK(g1_tok_vocab_size(t) == 4 + 2 + 256 + 7, "vocab %d", (int)g1_tok_vocab_size(t));
    CHECK(g1_tok_bos_id(t) == 1 && g1_tok_eos_id(t) == 2 && g1_tok_pad_id(t) == 0 && g1_tok_unk_id(t) == 3, "special ids");
    int32_t base = 262; /* a */
    /* "ab ab": ▁ab ▁ab; "\nab": ▁ \n ab ; "c": ▁ <0x63> */
    CHECK(encode_is(t, "ab ab", (int32_t[]){base + 5, base + 5}, 2), "ab ab");
    CHECK(encode_is(t, "\nab", (int32_t[]){base + 3, 4, base + 2}, 3), "newline frozen");
    /* "\na": ▁ \n a, not ▁ "\na" (the only pair in the vocabulary merges a frozen symbol) */
    CHECK(encode_is(t, "\na", (int32_t[]){base + 3, 4, base}, 3), "newline frozen, never merged");
    CHECK(encode_is(t, "c<|m|>", (int32_t[]){base + 3, 6 + 0x63, 5}, 3), "byte fallback + user piece");
    g1_ids ids = {0};
    g1_tok_encode(t, "", 0, &ids);
    CHECK(ids.n == 0, "empty text gives %zu ids", ids.n);
    g1_ids_free(&ids);
    g1_tok_free(t);

    /* every truncation is refused or loads; never a crash (ASan builds check memory); a refusal
     * says the file is malformed, truncated or empty (a file cut before its trainer_spec once read
     * as a unigram model: "model type unigram is not supported") */
    int loaded = 0;
    for (size_t n = 0; n < m.n; n++) {
        if (g1_tok_load_mem(&t, m.d, n, "cut") == G1_OK) {
            loaded++;
            g1_tok_free(t);
        } else {
            const char *e = g1_last_error();
            CHECK(strstr(e, "malformed") || strstr(e, "truncated") || strstr(e, "empty"),
                  "cut at %zu of %zu bytes: %s", n, m.n, e);
        }
    }
    printf("mini model: %zu truncations, %d still load (cut at a field boundary)\n", m.n, loaded);
    /* flipped bytes */
    static buf c;
    uint32_t s = 7;
    for (int k = 0; k < 3000; k++) {
        c = m;
        for (int j = 0; j < 4; j++) {
            s = s * 1664525u + 1013904223u;
            c.d[(s >> 8) % c.n] ^= (unsigned char)(1u << (s % 8));
        }
        if (g1_tok_load_mem(&t, c.d, c.n, "flip") == G1_OK) {
            g1_ids x = {0};
            g1_str y = {0};
            g1_tok_encode(t, "ab ab\n<|m|>c\xff", 12, &x);
            g1_tok_decode(t, x.v, x.n, &y);
            g1_ids_free(&x);
            g1_str_free(&y);
            g1_tok_free(t);
        }
    }
    mini_model(&m, 1, 0, 1);
    CHECK(g1_tok_load_mem(&t, m.d, m.n, "m") == G1_ERR_FORMAT && strstr(g1_last_error(), "unigram"), "unigram accepted: %s", g1_last_error());
    mini_model(&m, 2, 1, 1);
    CHECK(g1_tok_load_mem(&t, m.d, m.n, "m") == G1_ERR_FORMAT && strstr(g1_last_error(), "charsmap"), "charsmap accepted: %s", g1_last_error());
    mini_model(&m, 2, 0, 0);
    CHECK(g1_tok_load_mem(&t, m.d, m.n, "m") == G1_ERR_FORMAT && strstr(g1_last_error(), "unknown"), "no unk accepted: %s", g1_last_error());
    CHECK(g1_tok_load(&t, "/nonexistent/tokenizer.model") == G1_ERR_IO && t == NULL, "missing file");
}

static void test_stop(void)
{
    const char *stops[] = {"\n\n", "END", ""};
    size_t hold;
    CHECK(g1_stop_find("abc\n\nx", 6, 0, stops, 3, &hold) == 3, "stop \\n\\n");
    CHECK(g1_stop_find("abcEN", 5, 0, stops, 3, &hold) == -1 && hold == 2, "hold EN: %zu", hold);
    CHECK(g1_stop_find("abc\n", 4, 0, stops, 3, &hold) == -1 && hold == 1, "hold \\n");
    CHECK(g1_stop_find("xENDy\n\n", 7, 3, stops, 3, &hold) == 1, "match starting before `from`");
    CHECK(g1_stop_find("abc", 3, 0, stops, 3, &hold) == -1 && hold == 0, "nothing");
    /* the cut, in list order: "c" first, then "bc" is no longer whole */
    const char *ordered[] = {"", "c", "bc", "ab"};
    CHECK(g1_stop_find("abcd", 4, 0, ordered, 4, &hold) == 0, "earliest start");
    CHECK(g1_stop_cut("abcd", 4, ordered, 4) == 0, "ab cuts after c: %zu", g1_stop_cut("abcd", 4, ordered, 4));
    CHECK(g1_stop_cut("abcd", 4, ordered, 3) == 2, "bc runs past c's cut: %zu", g1_stop_cut("abcd", 4, ordered, 3));
    CHECK(g1_stop_cut("xbcbc", 5, ordered + 2, 1) == 1, "first occurrence");
    CHECK(g1_stop_cut("abc", 3, stops, 3) == 3, "no occurrence");
}

static void test_grok(void)
{
    const char *path = getenv("G1_TOKENIZER_MODEL");
    char def[4096];
    snprintf(def, sizeof def, "%s/../shared/grok-1/tokenizer.model", G1_SOURCE_ROOT);
    if (!path)
        path = def;
    g1_tokenizer *t;
    if (g1_tok_load(&t, path) != G1_OK) {
        printf("grok-1 model checks skipped: %s\n", g1_last_error());
        return;
    }
    CHECK(g1_tok_vocab_size(t) == 131072, "vocab");
    CHECK(encode_is(t, "The answer to life the universe and everything is of course",
                    (int32_t[]){422, 3033, 356, 1180, 333, 9072, 360, 2175, 391, 359, 1805}, 11), "example 1");
    CHECK(encode_is(t, "hello  world", (int32_t[]){21560, 325, 8455}, 3), "example 2");
    CHECK(encode_is(t, "12345", (int32_t[]){130089, 15, 16, 17, 18, 19}, 6), "example 3");
    /* a 4-byte character over byte pieces comes out whole from the stream */
    g1_ids ids = {0};
    const char *emoji = "x \xF0\x9F\xAB\xA8!"; /* U+1FAE8, not a piece: byte fallback */
    g1_tok_encode(t, emoji, strlen(emoji), &ids);
    g1_tok_stream st;
    g1_tok_stream_init(&st, t);
    g1_str out = {0};
    int partial = 0;
    for (size_t i = 0; i < ids.n; i++) {
        size_t before = out.n;
        g1_tok_stream_push(&st, ids.v[i], &out);
        if (g1_tok_piece_type(t, ids.v[i]) == G1_PIECE_BYTE && out.n > before && out.n - before < 4)
            partial = 1;
    }
    g1_tok_stream_finish(&st, &out);
    CHECK(!partial && out.n == strlen(emoji) && !memcmp(out.s, emoji, out.n), "stream of an emoji: \"%s\"", out.s);
    g1_str_free(&out);
    g1_ids_free(&ids);
    /* truncated copies of the real file */
    FILE *fp = fopen(path, "rb");
    static unsigned char data[4 << 20];
    size_t n = fread(data, 1, sizeof data, fp);
    fclose(fp);
    g1_tokenizer *u;
    int ok = 0;
    for (size_t k = 0; k < 400; k++) {
        size_t cut = (size_t)((double)n * k / 400.0) + k % 7;
        if (g1_tok_load_mem(&u, data, cut < n ? cut : n - 1, "cut") == G1_OK) {
            ok++;
            g1_tok_free(u);
        }
    }
    printf("grok-1 model: 400 truncations, %d load (cut at a field boundary before the last pieces)\n", ok);
    g1_tok_free(t);
}

/* A control piece is never made from text: BPE merges only into normal,
 * user-defined and unused pieces (SentencePiece's pieces_ map), so with a
 * control piece "cd" beside normal "c" and "d", "cd" is ▁ c d
 * (python3-sentencepiece: 263 261 262 for this model), not ▁ [cd]. */
static void test_control_not_merged(void)
{
    static buf m;
    m.n = 0;
    const char *ctl[] = {"[PAD]", "[BOS]", "[EOS]"};
    for (int i = 0; i < 3; i++)
        put_piece(&m, ctl[i], 0, 3);
    put_piece(&m, "[UNK]", 0, 2);
    put_piece(&m, "cd", 0, 3);
    for (int i = 0; i < 256; i++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", i);
        put_piece(&m, s, 0, 6);
    }
    put_piece(&m, "c", 0, 1);
    put_piece(&m, "d", -1, 1);
    put_piece(&m, "\xE2\x96\x81", -2, 1);
    buf t = {.n = 0};
    put_int(&t, 3, 2);
    put_int(&t, 35, 1);
    put_bytes(&t, 46, "[BOS]", 5);
    put_bytes(&t, 47, "[EOS]", 5);
    put_bytes(&t, 48, "[PAD]", 5);
    put_bytes(&m, 2, t.d, t.n);
    buf ns = {.n = 0};
    put_bytes(&ns, 1, "identity", 8);
    put_int(&ns, 4, 0);
    put_bytes(&m, 3, ns.d, ns.n);
    g1_tokenizer *tk;
    CHECK(g1_tok_load_mem(&tk, m.d, m.n, "control") == G1_OK, "model with a control piece cd refused: %s",
          g1_last_error());
    if (!tk)
        return;
    CHECK(encode_is(tk, "cd", (int32_t[]){263, 261, 262}, 3), "text cd encoded as the control piece cd");
    g1_tok_free(tk);
}

int main(void)
{
    test_mini();
    test_control_not_merged();
    test_stop();
    test_grok();
    if (tu_failures) {
        fprintf(stderr, "%d failures\n", tu_failures);
        return 1;
    }
    printf("tokenizer: all checks passed\n");
    return 0;
}
