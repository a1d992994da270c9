/* The tokenizer's loaded model, shared by the reader, encoder and decoder
 * (tokenizer_model.c, tokenizer_encode.c, tokenizer_decode.c). Not for use
 * outside those files. */
#ifndef G1_TOKENIZER_INTERNAL_H
#define G1_TOKENIZER_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "tokenizer.h"

/* Open-addressing string -> id table over the pieces (power-of-two slots). */
typedef struct tok_map {
    int32_t *slot;   /* (mask+1): piece id, -1 empty */
    uint32_t mask;
} tok_map;

struct g1_tokenizer {
    int32_t n;            /* pieces */
    char *text;           /* all piece strings, back to back */
    uint32_t *off, *len;  /* (n) */
    float *score;         /* (n) */
    uint8_t *type;        /* (n) g1_piece_type */
    int32_t *canon;       /* (n) PieceToId(piece(id)): differs from id only for a string in both maps */
    int16_t *byte_of;     /* (n) byte value of a BYTE piece, else -1 */
    int32_t byte_id[256]; /* id of <0xNN>, -1 when absent */

    /* SentencePiece keeps two maps: "normal" (NORMAL, USER_DEFINED, UNUSED:
     * the merge candidates) and "reserved" (the rest); PieceToId looks in
     * reserved first. */
    tok_map normal, reserved;
    int32_t unk, bos, eos, pad;
    int has_unused;       /* any UNUSED piece: BPE must resegment them */
    uint32_t max_normal_len; /* longest merge candidate, bytes */

    /* user-defined pieces by first byte, longest first */
    int32_t *user;        /* ids */
    uint32_t user_first[257]; /* user[user_first[b] .. user_first[b+1]) start with byte b */

    /* settings */
    int byte_fallback;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    char unk_surface[64];
    size_t unk_surface_len;
    uint64_t fnv1a64;     /* of the model's bytes (g1_tok_fingerprint) */
};

static inline uint64_t tok_hash(const char *s, size_t n)
{
    /* FNV-1a over 8-byte words then bytes: short keys, fast, deterministic */
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    while (n--)
        h = (h ^ (unsigned char)*s++) * 0x100000001b3ull;
    return h ^ (h >> 32);
}

/* id of the piece equal to s[0..n) in map m, or -1 */
static inline int32_t tok_map_find(const g1_tokenizer *t, const tok_map *m, const char *s, size_t n)
{
    uint32_t i = (uint32_t)tok_hash(s, n) & m->mask;
    for (;;) {
        int32_t id = m->slot[i];
        if (id < 0)
            return -1;
        if (t->len[id] == n && memcmp(t->text + t->off[id], s, n) == 0)
            return id;
        i = (i + 1) & m->mask;
    }
}

/* SentencePiece's PieceToId: reserved, then normal, else the unknown id */
static inline int32_t tok_piece_to_id(const g1_tokenizer *t, const char *s, size_t n)
{
    int32_t id = tok_map_find(t, &t->reserved, s, n);
    if (id >= 0)
        return id;
    id = tok_map_find(t, &t->normal, s, n);
    return id >= 0 ? id : t->unk;
}

/* Longest user-defined piece that prefixes s[0..n); its length, 0 if none. */
static inline size_t tok_user_match(const g1_tokenizer *t, const char *s, size_t n)
{
    unsigned char b = (unsigned char)s[0];
    for (uint32_t k = t->user_first[b]; k < t->user_first[b + 1]; k++) {
        int32_t id = t->user[k];
        size_t l = t->len[id];
        if (l <= n && memcmp(t->text + t->off[id], s, l) == 0)
            return l;
    }
    return 0;
}

/* SentencePiece's DecodeUTF8 validity: length of the valid character at
 * s[0..n), or 0 when the first byte does not start one. */
size_t g1_tok_utf8_valid(const unsigned char *s, size_t n);

#endif
