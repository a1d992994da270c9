/* SentencePiece BPE tokenizer (Grok-1's tokenizer.model) in plain C: model
 * reader, encoder, whole and streaming decoder, stop-string search. Exact
 * SentencePiece 0.1.97 behaviour for BPE models with an identity normaliser;
 * anything else is refused at load. Not a general protobuf or Unicode library. */
#ifndef G1_TOKENIZER_H
#define G1_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct g1_tokenizer g1_tokenizer; /* immutable once loaded: share across threads */

/* Piece types, the values of sentencepiece_model.proto. */
typedef enum g1_piece_type {
    G1_PIECE_NORMAL = 1,
    G1_PIECE_UNKNOWN = 2,
    G1_PIECE_CONTROL = 3,       /* [BOS], [EOS], [PAD]: decode to "" */
    G1_PIECE_USER_DEFINED = 4,  /* matched whole before BPE */
    G1_PIECE_UNUSED = 5,
    G1_PIECE_BYTE = 6,          /* <0xNN> */
} g1_piece_type;

/* Growable id and byte buffers. Zero-initialise; the functions below append
 * (never clear); free with g1_ids_free / g1_str_free. `s` is always
 * NUL-terminated after an append (the text itself may contain NULs). */
typedef struct g1_ids { int32_t *v; size_t n, cap; } g1_ids;
typedef struct g1_str { char *s; size_t n, cap; } g1_str;
void g1_ids_free(g1_ids *ids);
void g1_str_free(g1_str *str);
g1_status g1_ids_push(g1_ids *ids, int32_t id);
g1_status g1_str_append(g1_str *str, const char *bytes, size_t n);

/* Load a model file, or a model held in memory (`name` is used in messages;
 * `data` is copied). Every length and offset is checked: a truncated or
 * hostile file gives G1_ERR_FORMAT with a message, never a crash. Refused with
 * G1_ERR_FORMAT: non-BPE models, a normaliser or denormaliser with a
 * precompiled charsmap, treat_whitespace_as_suffix. *tok is NULL on failure. */
g1_status g1_tok_load(g1_tokenizer **tok, const char *path);
g1_status g1_tok_load_mem(g1_tokenizer **tok, const void *data, size_t size, const char *name);
void g1_tok_free(g1_tokenizer *tok);

/* FNV-1a 64 of the model's bytes as loaded (the whole file): what a run
 * records to tell one tokenizer from another of the same size. */
uint64_t g1_tok_fingerprint(const g1_tokenizer *tok);

int32_t g1_tok_vocab_size(const g1_tokenizer *tok);
/* Special ids as SentencePiece reports them (-1 when the model has none). */
int32_t g1_tok_bos_id(const g1_tokenizer *tok);
int32_t g1_tok_eos_id(const g1_tokenizer *tok);
int32_t g1_tok_pad_id(const g1_tokenizer *tok);
int32_t g1_tok_unk_id(const g1_tokenizer *tok);
/* Piece text of `id` (not NUL-terminated; *len bytes; owned by tok), or NULL
 * when id is out of range. */
const char *g1_tok_piece(const g1_tokenizer *tok, int32_t id, size_t *len);
g1_piece_type g1_tok_piece_type(const g1_tokenizer *tok, int32_t id); /* 0 if out of range */

/* Encode `len` bytes of text (any bytes: invalid UTF-8 is encoded as
 * SentencePiece does, as U+FFFD) and append the ids to *out. No BOS/EOS.
 * Thread-safe (scratch is per call). */
g1_status g1_tok_encode(const g1_tokenizer *tok, const char *text, size_t len, g1_ids *out);

/* Decode ids (n) and append the text to *out, exactly as SentencePiece's
 * DecodeIds: byte pieces reassembled (each invalid byte -> U+FFFD), "▁" ->
 * " ", the dummy-prefix space dropped, control pieces -> "", unknown ->
 * the model's unk_surface. G1_ERR_RANGE for an id outside [0, vocab). */
g1_status g1_tok_decode(const g1_tokenizer *tok, const int32_t *ids, size_t n, g1_str *out);

/* Streaming decode for generation: push ids one at a time; the text appended
 * to *out after each push is final (a UTF-8 character split over byte pieces
 * is held back until complete or provably invalid). Concatenating every
 * push plus the finish equals g1_tok_decode of all ids. The struct is plain
 * state (no allocation): embed it in the request; tok must outlive it. */
typedef struct g1_tok_stream {
    const g1_tokenizer *tok;
    unsigned char pend[4]; /* byte pieces not yet turned into text */
    int n_pend;
    int bos_ws;            /* still at the start: a leading "▁" may be dropped */
    int had_bos_ws;        /* the last normal piece dropped its leading "▁" */
    int any_text;          /* some text was produced */
} g1_tok_stream;
void g1_tok_stream_init(g1_tok_stream *st, const g1_tokenizer *tok);
g1_status g1_tok_stream_push(g1_tok_stream *st, int32_t id, g1_str *out);
/* End of sequence: held-back bytes become U+FFFD each. */
g1_status g1_tok_stream_finish(g1_tok_stream *st, g1_str *out);

/* Stop strings. Searches text[from..len) (matches may start before `from`
 * if they end after it: pass the length already searched) for the earliest
 * occurrence of any of stops[0..n_stops) (empty strings ignored). Returns
 * its start offset, or -1 when none; then *hold (if not NULL) is the number
 * of trailing bytes that begin some stop string and so must not be streamed
 * out yet. */
long g1_stop_find(const char *text, size_t len, size_t from,
                  const char *const *stops, size_t n_stops, size_t *hold);
/* Where a completion that g1_stop_find stopped ends: the stop strings in
 * list order, each cutting the text before its first whole occurrence in
 * what the earlier ones left (lm-eval's `until` and vLLM's `stop`). Returns
 * the new length, never below the earliest start g1_stop_find returned: a
 * later string that starts earlier but runs past an earlier cut does not
 * cut. */
size_t g1_stop_cut(const char *text, size_t len, const char *const *stops, size_t n_stops);

#endif
