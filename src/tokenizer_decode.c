/* The decoder (SentencePiece 0.1.97's Decode: byte runs reassembled, U+FFFD
 * per invalid byte, one leading "▁" dropped, control pieces invisible),
 * written as a stream so generation can print text as tokens arrive; the
 * whole-sequence decode is the stream run to the end. Also the id/byte
 * buffers and the stop-string search. */
#include "tokenizer_internal.h"

#include <stdlib.h>

void g1_ids_free(g1_ids *ids)
{
    free(ids->v);
    *ids = (g1_ids){0};
}

void g1_str_free(g1_str *str)
{
    free(str->s);
    *str = (g1_str){0};
}

g1_status g1_ids_push(g1_ids *ids, int32_t id)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? 2 * ids->cap : 64;
        int32_t *v = realloc(ids->v, sizeof *v * cap);
        if (!v)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory for %zu token ids", cap);
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return G1_OK;
}

g1_status g1_str_append(g1_str *str, const char *bytes, size_t n)
{
    if (str->n + n + 1 > str->cap) {
        size_t cap = str->cap ? str->cap : 64;
        while (cap < str->n + n + 1)
            cap *= 2;
        char *s = realloc(str->s, cap);
        if (!s)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory for %zu bytes of text", cap);
        str->s = s;
        str->cap = cap;
    }
    if (n)
        memcpy(str->s + str->n, bytes, n);
    str->n += n;
    str->s[str->n] = 0;
    return G1_OK;
}

/* Could s[0..n) (n shorter than its character) still become a valid
 * character when more bytes come? */
static int utf8_viable(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (!need || n >= need)
        return 0;
    unsigned char lo[4], hi[4];
    for (size_t i = 0; i < need; i++) {
        if (i > 0 && i < n && (s[i] & 0xC0) != 0x80)
            return 0;
        lo[i] = i < n ? s[i] : 0x80;
        hi[i] = i < n ? s[i] : 0xBF;
    }
    uint32_t a = 0, b = 0, lead_mask = need == 2 ? 0x1F : need == 3 ? 0x0F : 0x07;
    a = lo[0] & lead_mask;
    b = hi[0] & lead_mask;
    for (size_t i = 1; i < need; i++) {
        a = (a << 6) | (lo[i] & 0x3Fu);
        b = (b << 6) | (hi[i] & 0x3Fu);
    }
    if (need == 2)
        return b >= 0x80;
    if (need == 3)
        return (a <= 0xD7FF && b >= 0x800) || (a <= 0xFFFF && b >= 0xE000);
    return a <= 0x10FFFF && b >= 0x10000;
}

void g1_tok_stream_init(g1_tok_stream *st, const g1_tokenizer *tok)
{
    *st = (g1_tok_stream){.tok = tok, .bos_ws = 1};
}

/* Turn held bytes into text: whole characters, U+FFFD for a byte that
 * cannot start one; with !final a possible prefix of a character waits. */
static g1_status flush_bytes(g1_tok_stream *st, g1_str *out, int final)
{
    while (st->n_pend > 0) {
        size_t n = (size_t)st->n_pend, l = g1_tok_utf8_valid(st->pend, n);
        if (!l && !final && utf8_viable(st->pend, n))
            break;
        if (l)
            G1_TRY(g1_str_append(out, (const char *)st->pend, l));
        else
            G1_TRY(g1_str_append(out, "\xEF\xBF\xBD", 3));
        if (!l)
            l = 1;
        memmove(st->pend, st->pend + l, n - l);
        st->n_pend -= (int)l;
        st->any_text = 1;
    }
    return G1_OK;
}

g1_status g1_tok_stream_push(g1_tok_stream *st, int32_t id, g1_str *out)
{
    const g1_tokenizer *t = st->tok;
    if (id < 0 || id >= t->n)
        return G1_FAIL(G1_ERR_RANGE, "token id %ld is outside the vocabulary [0, %d)", (long)id, (int)t->n);
    int32_t c = t->canon[id];
    if (t->type[c] == G1_PIECE_BYTE) {
        st->pend[st->n_pend++] = (unsigned char)t->byte_of[c];
        return flush_bytes(st, out, 0);
    }
    G1_TRY(flush_bytes(st, out, 1));
    if (st->had_bos_ws || st->any_text)
        st->bos_ws = 0;
    st->had_bos_ws = 0;
    if (t->type[c] == G1_PIECE_CONTROL)
        return G1_OK;
    if (t->type[c] == G1_PIECE_UNKNOWN) {
        st->any_text |= t->unk_surface_len > 0;
        return g1_str_append(out, t->unk_surface, t->unk_surface_len);
    }
    const char *p = t->text + t->off[id], *end = p + t->len[id];
    if (st->bos_ws && (t->add_dummy_prefix || t->remove_extra_ws) && end - p >= 3 && memcmp(p, "\xE2\x96\x81", 3) == 0) {
        p += 3;
        st->had_bos_ws = !t->remove_extra_ws; /* with it, every leading space goes */
    }
    st->any_text |= p < end;
    while (p < end) {
        const char *q = p;
        while (q < end && !(end - q >= 3 && memcmp(q, "\xE2\x96\x81", 3) == 0))
            q++;
        G1_TRY(g1_str_append(out, p, (size_t)(q - p)));
        if (q == end)
            break;
        G1_TRY(g1_str_append(out, " ", 1));
        p = q + 3;
    }
    return G1_OK;
}

g1_status g1_tok_stream_finish(g1_tok_stream *st, g1_str *out)
{
    return flush_bytes(st, out, 1);
}

g1_status g1_tok_decode(const g1_tokenizer *t, const int32_t *ids, size_t n, g1_str *out)
{
    g1_tok_stream st;
    g1_tok_stream_init(&st, t);
    G1_TRY(g1_str_append(out, "", 0));
    for (size_t i = 0; i < n; i++)
        G1_TRY(g1_tok_stream_push(&st, ids[i], out));
    return g1_tok_stream_finish(&st, out);
}

long g1_stop_find(const char *text, size_t len, size_t from, const char *const *stops, size_t n_stops, size_t *hold)
{
    long best = -1;
    size_t keep = 0;
    for (size_t k = 0; k < n_stops; k++) {
        size_t sl = strlen(stops[k]);
        if (sl == 0)
            continue;
        size_t start = from >= sl - 1 ? from - (sl - 1) : 0;
        for (size_t i = start; i + sl <= len; i++)
            if (memcmp(text + i, stops[k], sl) == 0) {
                if (best < 0 || (long)i < best)
                    best = (long)i;
                break;
            }
        /* the longest tail of text that is a proper prefix of this stop */
        for (size_t l = sl - 1 < len ? sl - 1 : len; l > keep; l--)
            if (memcmp(text + len - l, stops[k], l) == 0) {
                keep = l;
                break;
            }
    }
    if (hold)
        *hold = best >= 0 ? 0 : keep;
    return best;
}

size_t g1_stop_cut(const char *text, size_t len, const char *const *stops, size_t n_stops)
{
    for (size_t k = 0; k < n_stops; k++) {
        size_t sl = strlen(stops[k]);
        if (sl == 0)
            continue;
        for (size_t i = 0; i + sl <= len; i++)
            if (memcmp(text + i, stops[k], sl) == 0) {
                len = i;
                break;
            }
    }
    return len;
}
