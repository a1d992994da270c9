/* SentencePiece model reader: the protobuf wire format of
 * sentencepiece_model.proto read by hand (only the fields that change
 * tokenization), then the checks SentencePiece's loader makes. Every length
 * is bounds-checked against the buffer; nothing here trusts the file. */
#include "fnv1a.h"
#include "tokenizer_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pb { const unsigned char *p, *end; } pb;

typedef struct pb_field {
    uint32_t num, wire;
    uint64_t v;                    /* varint / fixed value */
    const unsigned char *data;     /* length-delimited payload */
    size_t size;
} pb_field;

typedef struct tok_spec {
    int model_type, byte_fallback, ws_suffix;
    int have_trainer, have_normalizer; /* trainer_spec, normalizer_spec read (a writer puts them last) */
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    int has_charsmap, denorm_charsmap;
    pb unk_surface;
    int have_unk_surface;
    pb bos_piece, eos_piece, pad_piece;
} tok_spec;

static int pb_varint(pb *b, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (b->p >= b->end)
            return 0;
        unsigned c = *b->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (c < 0x80) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* Next field of b; 0 at the end, -1 on a malformed field. */
static int pb_next(pb *b, pb_field *f)
{
    if (b->p >= b->end)
        return 0;
    uint64_t key;
    if (!pb_varint(b, &key) || (key >> 3) == 0 || (key >> 3) > 0x1fffffff)
        return -1;
    f->num = (uint32_t)(key >> 3);
    f->wire = (uint32_t)(key & 7);
    size_t left;
    switch (f->wire) {
    case 0:
        return pb_varint(b, &f->v) ? 1 : -1;
    case 1:
    case 5:
        left = (size_t)(b->end - b->p);
        if (left < (f->wire == 1 ? 8u : 4u))
            return -1;
        f->v = 0;
        for (int i = (f->wire == 1 ? 7 : 3); i >= 0; i--)
            f->v = (f->v << 8) | b->p[i];
        b->p += f->wire == 1 ? 8 : 4;
        return 1;
    case 2:
        if (!pb_varint(b, &f->v) || f->v > (uint64_t)(b->end - b->p))
            return -1;
        f->data = b->p;
        f->size = (size_t)f->v;
        b->p += f->size;
        return 1;
    default: /* groups (3, 4) are not in this format; 6, 7 do not exist */
        return -1;
    }
}

static g1_status want_wire(const char *name, const char *what, const pb_field *f, uint32_t wire)
{
    if (f->wire != wire)
        return G1_FAIL(G1_ERR_FORMAT, "%s: %s (field %u) has wire type %u, expected %u: not a SentencePiece model, or a damaged one",
                       name, what, f->num, f->wire, wire);
    return G1_OK;
}

static g1_status read_trainer(const char *name, pb b, tok_spec *s)
{
    pb_field f = {0};
    int r;
    while ((r = pb_next(&b, &f)) > 0) {
        pb str = {f.data, f.data + f.size};
        switch (f.num) {
        case 3: G1_TRY(want_wire(name, "trainer_spec.model_type", &f, 0)); s->model_type = (int)f.v; break;
        case 24: G1_TRY(want_wire(name, "trainer_spec.treat_whitespace_as_suffix", &f, 0)); s->ws_suffix = f.v != 0; break;
        case 35: G1_TRY(want_wire(name, "trainer_spec.byte_fallback", &f, 0)); s->byte_fallback = f.v != 0; break;
        case 44: G1_TRY(want_wire(name, "trainer_spec.unk_surface", &f, 2)); s->unk_surface = str; s->have_unk_surface = 1; break;
        case 46: G1_TRY(want_wire(name, "trainer_spec.bos_piece", &f, 2)); s->bos_piece = str; break;
        case 47: G1_TRY(want_wire(name, "trainer_spec.eos_piece", &f, 2)); s->eos_piece = str; break;
        case 48: G1_TRY(want_wire(name, "trainer_spec.pad_piece", &f, 2)); s->pad_piece = str; break;
        default: break;
        }
    }
    if (r < 0)
        return G1_FAIL(G1_ERR_FORMAT, "%s: trainer_spec is malformed (truncated or damaged file)", name);
    return G1_OK;
}

static g1_status read_normalizer(const char *name, pb b, tok_spec *s, int denorm)
{
    pb_field f = {0};
    int r;
    while ((r = pb_next(&b, &f)) > 0) {
        if (f.num == 2) {
            G1_TRY(want_wire(name, "normalizer_spec.precompiled_charsmap", &f, 2));
            if (denorm)
                s->denorm_charsmap = f.size > 0;
            else
                s->has_charsmap = f.size > 0;
        } else if (!denorm && f.num >= 3 && f.num <= 5) {
            G1_TRY(want_wire(name, "normalizer_spec flag", &f, 0));
            int *dst = f.num == 3 ? &s->add_dummy_prefix : f.num == 4 ? &s->remove_extra_ws : &s->escape_ws;
            *dst = f.v != 0;
        }
    }
    if (r < 0)
        return G1_FAIL(G1_ERR_FORMAT, "%s: normalizer_spec is malformed (truncated or damaged file)", name);
    return G1_OK;
}

static g1_status map_build(const g1_tokenizer *t, tok_map *m, size_t count)
{
    uint32_t cap = 16;
    while (cap < 2 * count + 16)
        cap *= 2;
    m->slot = malloc(sizeof *m->slot * cap);
    if (!m->slot)
        return G1_FAIL(G1_ERR_NOMEM, "tokenizer: out of memory for the piece table");
    memset(m->slot, 0xff, sizeof *m->slot * cap);
    m->mask = cap - 1;
    (void)t;
    return G1_OK;
}

/* Insert id into m; 0 when its string is already there. */
static int map_insert(const g1_tokenizer *t, tok_map *m, int32_t id)
{
    const char *s = t->text + t->off[id];
    size_t n = t->len[id];
    uint32_t i = (uint32_t)tok_hash(s, n) & m->mask;
    while (m->slot[i] >= 0) {
        int32_t o = m->slot[i];
        if (t->len[o] == n && memcmp(t->text + t->off[o], s, n) == 0)
            return 0;
        i = (i + 1) & m->mask;
    }
    m->slot[i] = id;
    return 1;
}

static int piece_to_byte(const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    const char *h = strchr(hex, s[3]), *l = strchr(hex, s[4]);
    if (!s[3] || !s[4] || !h || !l)
        return -1;
    return (int)((h - hex) * 16 + (l - hex));
}

static int32_t special_id(const g1_tokenizer *t, pb piece, const char *dflt, g1_piece_type want)
{
    const char *s = piece.p ? (const char *)piece.p : dflt;
    size_t n = piece.p ? (size_t)(piece.end - piece.p) : strlen(dflt);
    int32_t id = tok_piece_to_id(t, s, n);
    return id >= 0 && t->type[id] == want ? id : -1;
}

static g1_status check_and_index(g1_tokenizer *t, const tok_spec *s, const char *name)
{
    size_t n_normal = 0, n_user = 0;
    for (int32_t i = 0; i < t->n; i++) {
        int ty = t->type[i];
        n_normal += ty == G1_PIECE_NORMAL || ty == G1_PIECE_USER_DEFINED || ty == G1_PIECE_UNUSED;
        n_user += ty == G1_PIECE_USER_DEFINED;
    }
    G1_TRY(map_build(t, &t->normal, n_normal));
    G1_TRY(map_build(t, &t->reserved, (size_t)t->n - n_normal));
    t->user = malloc(sizeof *t->user * (n_user + 1));
    t->canon = malloc(sizeof *t->canon * (size_t)t->n);
    t->byte_of = malloc(sizeof *t->byte_of * (size_t)t->n);
    if (!t->user || !t->canon || !t->byte_of)
        return G1_FAIL(G1_ERR_NOMEM, "tokenizer: out of memory");
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    t->unk = -1;
    int n_bytes = 0;
    for (int32_t i = 0; i < t->n; i++) {
        int ty = t->type[i];
        const char *p = t->text + t->off[i];
        t->byte_of[i] = -1;
        if (t->len[i] == 0)
            return G1_FAIL(G1_ERR_FORMAT, "%s: piece %d is empty", name, (int)i);
        if (ty < G1_PIECE_NORMAL || ty > G1_PIECE_BYTE)
            return G1_FAIL(G1_ERR_FORMAT, "%s: piece %d has unknown type %d", name, (int)i, ty);
        int normal = ty == G1_PIECE_NORMAL || ty == G1_PIECE_USER_DEFINED || ty == G1_PIECE_UNUSED;
        if (!map_insert(t, normal ? &t->normal : &t->reserved, i))
            return G1_FAIL(G1_ERR_FORMAT, "%s: piece %d \"%.*s\" is already defined", name, (int)i,
                           (int)(t->len[i] > 40 ? 40 : t->len[i]), p);
        t->has_unused |= ty == G1_PIECE_UNUSED;
        if (normal && t->len[i] > t->max_normal_len)
            t->max_normal_len = t->len[i];
        if (ty == G1_PIECE_UNKNOWN) {
            if (t->unk >= 0)
                return G1_FAIL(G1_ERR_FORMAT, "%s: two unknown pieces (%d and %d)", name, (int)t->unk, (int)i);
            t->unk = i;
        }
        if (ty == G1_PIECE_BYTE) {
            if (!s->byte_fallback)
                return G1_FAIL(G1_ERR_FORMAT, "%s: byte piece %d although byte_fallback is false", name, (int)i);
            int b = piece_to_byte(p, t->len[i]);
            if (b < 0)
                return G1_FAIL(G1_ERR_FORMAT, "%s: byte piece %d \"%.*s\" is not <0xNN>", name, (int)i,
                               (int)(t->len[i] > 40 ? 40 : t->len[i]), p);
            t->byte_of[i] = (int16_t)b;
            n_bytes += t->byte_id[b] < 0;
            t->byte_id[b] = i;
        }
    }
    if (t->unk < 0)
        return G1_FAIL(G1_ERR_FORMAT, "%s: the model has no unknown piece", name);
    if (s->byte_fallback && n_bytes != 256)
        return G1_FAIL(G1_ERR_FORMAT, "%s: byte_fallback is set but only %d of the 256 byte pieces exist", name, n_bytes);
    for (int32_t i = 0; i < t->n; i++)
        t->canon[i] = tok_piece_to_id(t, t->text + t->off[i], t->len[i]);

    /* user-defined pieces bucketed by first byte, longest first */
    memset(t->user_first, 0, sizeof t->user_first);
    for (int32_t i = 0; i < t->n; i++)
        if (t->type[i] == G1_PIECE_USER_DEFINED)
            t->user_first[(unsigned char)t->text[t->off[i]] + 1]++;
    for (int b = 0; b < 256; b++)
        t->user_first[b + 1] += t->user_first[b];
    uint32_t fill[256];
    memcpy(fill, t->user_first, sizeof fill);
    for (int32_t i = 0; i < t->n; i++)
        if (t->type[i] == G1_PIECE_USER_DEFINED) {
            unsigned char b = (unsigned char)t->text[t->off[i]];
            uint32_t k = fill[b]++;
            while (k > t->user_first[b] && t->len[t->user[k - 1]] < t->len[i]) { /* insertion sort */
                t->user[k] = t->user[k - 1];
                k--;
            }
            t->user[k] = i;
        }

    t->bos = special_id(t, s->bos_piece, "<s>", G1_PIECE_CONTROL);
    t->eos = special_id(t, s->eos_piece, "</s>", G1_PIECE_CONTROL);
    t->pad = special_id(t, s->pad_piece, "<pad>", G1_PIECE_CONTROL);
    return G1_OK;
}

/* Reads the pieces into t (two passes: count and size, then copy). */
static g1_status read_pieces(g1_tokenizer *t, pb top, const char *name)
{
    pb_field f = {0}, g = {0};
    int r;
    size_t count = 0, bytes = 0;
    for (pb b = top; (r = pb_next(&b, &f)) > 0;)
        if (f.num == 1) {
            G1_TRY(want_wire(name, "pieces", &f, 2));
            count++;
            bytes += f.size;
        }
    if (r < 0)
        return G1_FAIL(G1_ERR_FORMAT, "%s: malformed or truncated model file", name);
    if (count == 0 || count > INT32_MAX / 2 || bytes >= UINT32_MAX)
        return G1_FAIL(G1_ERR_FORMAT, "%s: %zu pieces: not a SentencePiece model", name, count);
    t->n = (int32_t)count;
    t->text = malloc(bytes + 1);
    t->off = malloc(sizeof *t->off * count);
    t->len = malloc(sizeof *t->len * count);
    t->score = malloc(sizeof *t->score * count);
    t->type = malloc(count);
    if (!t->text || !t->off || !t->len || !t->score || !t->type)
        return G1_FAIL(G1_ERR_NOMEM, "tokenizer: out of memory for %zu pieces", count);
    size_t i = 0, at = 0;
    for (pb b = top; pb_next(&b, &f) > 0;) {
        if (f.num != 1)
            continue;
        pb sp = {f.data, f.data + f.size};
        t->off[i] = (uint32_t)at;
        t->len[i] = 0;
        t->score[i] = 0;
        t->type[i] = G1_PIECE_NORMAL;
        while ((r = pb_next(&sp, &g)) > 0) {
            if (g.num == 1) {
                G1_TRY(want_wire(name, "piece", &g, 2));
                memcpy(t->text + at, g.data, g.size); /* fits: g is inside f */
                t->off[i] = (uint32_t)at;
                t->len[i] = (uint32_t)g.size;
                at += g.size;
            } else if (g.num == 2) {
                G1_TRY(want_wire(name, "score", &g, 5));
                uint32_t u = (uint32_t)g.v;
                memcpy(&t->score[i], &u, 4);
            } else if (g.num == 3) {
                G1_TRY(want_wire(name, "type", &g, 0));
                t->type[i] = (uint8_t)(g.v > 255 ? 255 : g.v);
            }
        }
        if (r < 0)
            return G1_FAIL(G1_ERR_FORMAT, "%s: piece %zu is malformed", name, i);
        i++;
    }
    return G1_OK;
}

static g1_status load(g1_tokenizer *t, const unsigned char *data, size_t size, const char *name)
{
    pb top = {data, data + size}, b = top;
    pb_field f = {0};
    int r;
    tok_spec s = {.model_type = 1, .add_dummy_prefix = 1, .remove_extra_ws = 1, .escape_ws = 1};
    while ((r = pb_next(&b, &f)) > 0) {
        pb sub = {f.data, f.data + f.size};
        if (f.num == 2) {
            G1_TRY(want_wire(name, "trainer_spec", &f, 2));
            G1_TRY(read_trainer(name, sub, &s));
            s.have_trainer = 1;
        } else if (f.num == 3 || f.num == 5) {
            G1_TRY(want_wire(name, "normalizer_spec", &f, 2));
            G1_TRY(read_normalizer(name, sub, &s, f.num == 5));
            s.have_normalizer |= f.num == 3;
        }
    }
    if (r < 0)
        return G1_FAIL(G1_ERR_FORMAT, "%s: malformed or truncated model file (not a SentencePiece protobuf?)", name);
    if (size == 0)
        return G1_FAIL(G1_ERR_FORMAT, "%s: the file is empty: not a SentencePiece model", name);
    if (!s.have_trainer || !s.have_normalizer) /* without them the model type and the normaliser's flags
                                                  would read as the format's defaults */
        return G1_FAIL(G1_ERR_FORMAT, "%s: malformed or truncated model file (no %s: not a SentencePiece "
                                      "model, or cut short)", name, s.have_trainer ? "normalizer_spec" : "trainer_spec");
    if (s.model_type != 2)
        return G1_FAIL(G1_ERR_FORMAT, "%s: model type %s is not supported: only BPE models (Grok-1's kind) are",
                       name, s.model_type == 1 ? "unigram" : s.model_type == 3 ? "word" : s.model_type == 4 ? "char" : "unknown");
    if (s.has_charsmap || s.denorm_charsmap)
        return G1_FAIL(G1_ERR_FORMAT, "%s: the %snormaliser has a precompiled charsmap (e.g. nmt_nfkc): only the identity normaliser is supported",
                       name, s.denorm_charsmap ? "de" : "");
    if (s.ws_suffix)
        return G1_FAIL(G1_ERR_FORMAT, "%s: treat_whitespace_as_suffix is not supported", name);
    t->byte_fallback = s.byte_fallback;
    t->add_dummy_prefix = s.add_dummy_prefix;
    t->remove_extra_ws = s.remove_extra_ws;
    t->escape_ws = s.escape_ws;
    const char *us = s.have_unk_surface ? (const char *)s.unk_surface.p : " \xE2\x81\x87 ";
    size_t ul = s.have_unk_surface ? (size_t)(s.unk_surface.end - s.unk_surface.p) : strlen(us);
    if (ul >= sizeof t->unk_surface)
        return G1_FAIL(G1_ERR_FORMAT, "%s: unk_surface is %zu bytes, longer than supported (%zu)", name, ul, sizeof t->unk_surface - 1);
    memcpy(t->unk_surface, us, ul);
    t->unk_surface_len = ul;
    G1_TRY(read_pieces(t, top, name));
    return check_and_index(t, &s, name);
}

g1_status g1_tok_load_mem(g1_tokenizer **tok, const void *data, size_t size, const char *name)
{
    *tok = NULL;
    g1_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return G1_FAIL(G1_ERR_NOMEM, "tokenizer: out of memory");
    g1_status st = load(t, data, size, name ? name : "tokenizer");
    if (st != G1_OK) {
        g1_tok_free(t);
        return st;
    }
    t->fnv1a64 = g1_fnv1a64(G1_FNV1A64_START, data, size); /* a few ms for Grok-1's 2 MB */
    *tok = t;
    return G1_OK;
}

uint64_t g1_tok_fingerprint(const g1_tokenizer *tok)
{
    return tok->fnv1a64;
}

/* The largest tokenizer file read (Grok-1's is 2.2 MB). */
#define G1_TOK_MAX_FILE (64 << 20)

g1_status g1_tok_load(g1_tokenizer **tok, const char *path)
{
    *tok = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return G1_FAIL(G1_ERR_IO, "%s: cannot open tokenizer model: %s", path, strerror(errno));
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n > G1_TOK_MAX_FILE) { /* a checkpoint or /dev/zero given by mistake: not read whole */
            free(buf);
            fclose(fp);
            return G1_FAIL(G1_ERR_FORMAT, "%s: larger than %d MiB: not a SentencePiece model (Grok-1's is 2.2 MB)",
                           path, G1_TOK_MAX_FILE >> 20);
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 1 << 20;
            unsigned char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(fp);
                return G1_FAIL(G1_ERR_NOMEM, "%s: out of memory reading the tokenizer", path);
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (got == 0)
            break;
    }
    int err = ferror(fp) ? (errno ? errno : EIO) : 0;
    fclose(fp);
    if (err) {
        free(buf);
        return G1_FAIL(G1_ERR_IO, "%s: cannot read the tokenizer model: %s", path, strerror(err));
    }
    g1_status st = g1_tok_load_mem(tok, buf, n, path);
    free(buf);
    return st;
}

void g1_tok_free(g1_tokenizer *t)
{
    if (!t)
        return;
    free(t->text);
    free(t->off);
    free(t->len);
    free(t->score);
    free(t->type);
    free(t->canon);
    free(t->byte_of);
    free(t->normal.slot);
    free(t->reserved.slot);
    free(t->user);
    free(t);
}

int32_t g1_tok_vocab_size(const g1_tokenizer *t) { return t->n; }
int32_t g1_tok_bos_id(const g1_tokenizer *t) { return t->bos; }
int32_t g1_tok_eos_id(const g1_tokenizer *t) { return t->eos; }
int32_t g1_tok_pad_id(const g1_tokenizer *t) { return t->pad; }
int32_t g1_tok_unk_id(const g1_tokenizer *t) { return t->unk; }

const char *g1_tok_piece(const g1_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n)
        return NULL;
    *len = t->len[id];
    return t->text + t->off[id];
}

g1_piece_type g1_tok_piece_type(const g1_tokenizer *t, int32_t id)
{
    return id < 0 || id >= t->n ? (g1_piece_type)0 : (g1_piece_type)t->type[id];
}
