/* One line of grok1-tokenize's JSONL: {"text": ...} -> {"ids": [...]} or
 * {"ids": [...]} -> {"text": ...} (jansson). A library of its own so the
 * fuzz target runs exactly what the program runs. */
#ifndef G1_TOK_JSONL_H
#define G1_TOK_JSONL_H

#include <stddef.h>

#include "status.h"
#include "tokenizer.h"

typedef enum g1_tokj_mode { G1_TOKJ_ENCODE = 1, G1_TOKJ_DECODE = 2 } g1_tokj_mode;

/* Parse line[0..len) (one JSON object; an "id" member is echoed back) and
 * append the result object, without a newline, to *out. `pieces` adds the
 * piece strings. A bad line gives G1_ERR_ARG with a message saying what is
 * wrong (the caller adds the line number); *out is then unchanged in
 * content up to its old length. */
g1_status g1_tokj_line(const g1_tokenizer *tok, g1_tokj_mode mode, int pieces,
                       const char *line, size_t len, g1_str *out);

#endif
