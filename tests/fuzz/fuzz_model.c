/* libFuzzer target: the SentencePiece model reader on arbitrary bytes; when
 * a model loads, encode and decode with it too (a hostile model must not
 * crash the encoder or decoder either). Also built without libFuzzer by
 * replay.c to replay the corpus and past crashes as unit tests. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g1_tokenizer *tok;
    if (g1_tok_load_mem(&tok, data, size, "fuzz") != G1_OK)
        return 0;
    static const char text[] = "Hello  world\n\t12345 <|separator|>\xF0\x9F\x98\x80\xFF\xE2\x82 [BOS]\xE2\x96\x81";
    g1_ids ids = {0};
    g1_str out = {0};
    if (g1_tok_encode(tok, text, sizeof text - 1, &ids) == G1_OK)
        g1_tok_decode(tok, ids.v, ids.n, &out);
    int32_t V = g1_tok_vocab_size(tok);
    out.n = 0;
    g1_tok_stream st;
    g1_tok_stream_init(&st, tok);
    for (size_t i = 0; i < size && i < 64; i++)
        g1_tok_stream_push(&st, (int32_t)(data[i] * 131u) % V, &out);
    g1_tok_stream_finish(&st, &out);
    g1_ids_free(&ids);
    g1_str_free(&out);
    g1_tok_free(tok);
    return 0;
}
