/* libFuzzer target: grok1-tokenize's JSONL line reader (g1_tokj_line) in
 * both modes, with the committed demo tokenizer (G1_FUZZ_MODEL, set by
 * meson). Also built without libFuzzer by replay.c. */
#include <stdio.h>
#include <stdlib.h>

#include "tok_jsonl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static g1_tokenizer *tok;
    if (!tok && g1_tok_load(&tok, G1_FUZZ_MODEL) != G1_OK) {
        fprintf(stderr, "fuzz_jsonl: %s\n", g1_last_error());
        abort();
    }
    g1_str out = {0};
    g1_tokj_line(tok, G1_TOKJ_ENCODE, size & 1, (const char *)data, size, &out);
    out.n = 0;
    g1_tokj_line(tok, G1_TOKJ_DECODE, size & 2, (const char *)data, size, &out);
    g1_str_free(&out);
    return 0;
}
