/* The encoder: SentencePiece's identity normaliser (whitespace escaping,
 * dummy prefix, optional removal of extra spaces, U+FFFD for invalid bytes)
 * and its BPE (user-defined pieces frozen by longest match, merges by
 * highest score then leftmost, resegmentation of UNUSED pieces, byte
 * fallback), as bpe_model.cc in SentencePiece 0.1.97 does them. */
#include "tokenizer_internal.h"

#include <stdlib.h>

static const char k_space[] = "\xE2\x96\x81"; /* U+2581, "▁" */
static const char k_fffd[] = "\xEF\xBF\xBD";

typedef struct sym { uint32_t off, len; int32_t prev, next; int frozen; } sym;
typedef struct pair { float score; int32_t left, right; uint32_t size; } pair;
typedef struct rev { int32_t id; uint32_t loff, llen, roff, rlen; } rev;

typedef struct enc {
    const g1_tokenizer *t;
    char *norm;
    size_t n_norm;
    sym *s;
    int32_t n_sym;
    pair *heap;
    size_t n_heap;
    rev *revs;
    size_t n_rev, cap_rev;
    g1_ids *out;
    int prev_unk;
} enc;

size_t g1_tok_utf8_valid(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
#define TRAIL(i) ((s[i] & 0xC0) == 0x80)
    if (n >= 2 && (c & 0xE0) == 0xC0) {
        uint32_t cp = ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
        return TRAIL(1) && cp >= 0x80 ? 2 : 0;
    }
    if (n >= 3 && (c & 0xF0) == 0xE0) {
        uint32_t cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
        return TRAIL(1) && TRAIL(2) && cp >= 0x800 && (cp < 0xD800 || cp >= 0xE000) ? 3 : 0;
    }
    if (n >= 4 && (c & 0xF8) == 0xF0) {
        uint32_t cp = ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
        return TRAIL(1) && TRAIL(2) && TRAIL(3) && cp >= 0x10000 && cp <= 0x10FFFF ? 4 : 0;
    }
#undef TRAIL
    return 0;
}

/* Normalizer::NormalizePrefix for an identity normaliser: the next chunk
 * of input (a user-defined piece, one valid character, or U+FFFD for one
 * invalid byte) and how many input bytes it consumed. */
static const char *norm_prefix(const g1_tokenizer *t, const char *in, size_t n, size_t *out_len, size_t *consumed)
{
    size_t l = tok_user_match(t, in, n);
    if (!l)
        l = g1_tok_utf8_valid((const unsigned char *)in, n);
    if (!l) {
        *out_len = 3;
        *consumed = 1;
        return k_fffd;
    }
    *out_len = *consumed = l;
    return in;
}

static void put_ws(const g1_tokenizer *t, char *dst, size_t *n)
{
    if (t->escape_ws) {
        memcpy(dst + *n, k_space, 3);
        *n += 3;
    } else {
        dst[(*n)++] = ' ';
    }
}

/* Normalizer::Normalize; e->norm has room for 3 * len + 3 bytes. */
static void normalize(enc *e, const char *in, size_t len)
{
    const g1_tokenizer *t = e->t;
    size_t n = 0, i = 0, ol, used;
    e->n_norm = 0;
    if (t->remove_extra_ws) {
        while (i < len) {
            const char *p = norm_prefix(t, in + i, len - i, &ol, &used);
            if (!(ol == 1 && p[0] == ' '))
                break;
            i += used;
        }
    }
    if (i == len)
        return;
    if (t->add_dummy_prefix)
        put_ws(t, e->norm, &n);
    int prev_space = t->remove_extra_ws;
    while (i < len) {
        const char *p = norm_prefix(t, in + i, len - i, &ol, &used);
        while (prev_space && ol > 0 && p[0] == ' ') {
            p++;
            ol--;
        }
        if (ol > 0) {
            for (size_t k = 0; k < ol; k++) {
                if (p[k] == ' ' && t->escape_ws)
                    put_ws(t, e->norm, &n);
                else
                    e->norm[n++] = p[k];
            }
            prev_space = p[ol - 1] == ' ';
        }
        i += used;
        if (!t->remove_extra_ws)
            prev_space = 0;
    }
    if (t->remove_extra_ws) {
        const char *sp = t->escape_ws ? k_space : " ";
        size_t sl = t->escape_ws ? 3 : 1;
        while (n >= sl && memcmp(e->norm + n - sl, sp, sl) == 0)
            n -= sl;
    }
    e->n_norm = n;
}

/* max-heap on (score, -left): highest score first, leftmost on ties */
static int pair_before(const pair *a, const pair *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(enc *e, pair p)
{
    size_t i = e->n_heap++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(&p, &e->heap[up]))
            break;
        e->heap[i] = e->heap[up];
        i = up;
    }
    e->heap[i] = p;
}

static pair heap_pop(enc *e)
{
    pair top = e->heap[0], last = e->heap[--e->n_heap];
    size_t i = 0, n = e->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && pair_before(&e->heap[c + 1], &e->heap[c]))
            c++;
        if (!pair_before(&e->heap[c], &last))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n)
        e->heap[i] = last;
    return top;
}

static g1_status maybe_add(enc *e, int32_t l, int32_t r)
{
    if (l < 0 || r < 0 || e->s[l].frozen || e->s[r].frozen)
        return G1_OK;
    const g1_tokenizer *t = e->t;
    uint32_t size = e->s[l].len + e->s[r].len;
    if (size > t->max_normal_len)
        return G1_OK;
    int32_t id = tok_map_find(t, &t->normal, e->norm + e->s[l].off, size);
    if (id < 0)
        return G1_OK;
    heap_push(e, (pair){t->score[id], l, r, size});
    if (t->type[id] == G1_PIECE_UNUSED) {
        if (e->n_rev == e->cap_rev) {
            size_t cap = e->cap_rev ? 2 * e->cap_rev : 64;
            rev *nr = realloc(e->revs, sizeof *nr * cap);
            if (!nr)
                return G1_FAIL(G1_ERR_NOMEM, "tokenizer: out of memory");
            e->revs = nr;
            e->cap_rev = cap;
        }
        e->revs[e->n_rev++] = (rev){id, e->s[l].off, e->s[l].len, e->s[r].off, e->s[r].len};
    }
    return G1_OK;
}

static g1_status emit(enc *e, uint32_t off, uint32_t len, int32_t id)
{
    const g1_tokenizer *t = e->t;
    int is_unk = t->type[id] == G1_PIECE_UNKNOWN;
    if (is_unk && t->byte_fallback) {
        for (uint32_t k = 0; k < len; k++)
            G1_TRY(g1_ids_push(e->out, t->byte_id[(unsigned char)e->norm[off + k]]));
    } else if (!(is_unk && e->prev_unk)) { /* a run of unknowns is one unknown */
        G1_TRY(g1_ids_push(e->out, id));
    }
    e->prev_unk = is_unk;
    return G1_OK;
}

static g1_status resegment(enc *e, uint32_t off, uint32_t len)
{
    const g1_tokenizer *t = e->t;
    int32_t id = tok_piece_to_id(t, e->norm + off, len);
    if (t->type[id] == G1_PIECE_UNUSED)
        for (size_t k = e->n_rev; k-- > 0;) /* the last split recorded wins, as in the library's map */
            if (e->revs[k].id == id) {
                rev r = e->revs[k];
                G1_TRY(resegment(e, r.loff, r.llen));
                return resegment(e, r.roff, r.rlen);
            }
    return emit(e, off, len, id);
}

static g1_status bpe(enc *e)
{
    static const unsigned char one_char_len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    const g1_tokenizer *t = e->t;
    int32_t n = 0;
    for (size_t at = 0; at < e->n_norm;) {
        size_t left = e->n_norm - at, l = tok_user_match(t, e->norm + at, left);
        int frozen = l > 0;
        if (!l) {
            l = one_char_len[(unsigned char)e->norm[at] >> 4];
            if (l > left)
                l = left;
        }
        e->s[n] = (sym){(uint32_t)at, (uint32_t)l, n - 1, -1, frozen};
        if (n > 0)
            e->s[n - 1].next = n;
        n++;
        at += l;
    }
    e->n_sym = n;
    if (n == 0)
        return G1_OK;
    e->heap = malloc(sizeof *e->heap * 3 * (size_t)n); /* n-1 initial pairs + 2 per merge */
    if (!e->heap)
        return G1_FAIL(G1_ERR_NOMEM, "tokenizer: out of memory encoding %d characters", (int)n);
    for (int32_t i = 1; i < n; i++)
        G1_TRY(maybe_add(e, i - 1, i));
    while (e->n_heap > 0) {
        pair p = heap_pop(e);
        sym *L = &e->s[p.left], *R = &e->s[p.right];
        if (L->len == 0 || R->len == 0 || L->len + R->len != p.size)
            continue; /* stale: one side merged since */
        L->len += R->len;
        L->next = R->next;
        if (R->next >= 0)
            e->s[R->next].prev = p.left;
        R->len = 0;
        G1_TRY(maybe_add(e, L->prev, p.left));
        G1_TRY(maybe_add(e, p.left, L->next));
    }
    for (int32_t i = 0; i != -1; i = e->s[i].next)
        G1_TRY(t->has_unused ? resegment(e, e->s[i].off, e->s[i].len)
                             : emit(e, e->s[i].off, e->s[i].len, tok_piece_to_id(t, e->norm + e->s[i].off, e->s[i].len)));
    return G1_OK;
}

g1_status g1_tok_encode(const g1_tokenizer *t, const char *text, size_t len, g1_ids *out)
{
    if (len == 0)
        return G1_OK;
    if (len > (SIZE_MAX - 16) / 4 / sizeof(pair) || len > INT32_MAX / 4)
        return G1_FAIL(G1_ERR_RANGE, "tokenizer: text of %zu bytes is too long to encode", len);
    enc e = {.t = t, .out = out};
    size_t cap = 3 * len + 3;   /* every input byte may become 3 (U+FFFD, "▁") */
    e.norm = malloc(cap);
    g1_status st = G1_OK;
    if (!e.norm)
        st = G1_FAIL(G1_ERR_NOMEM, "tokenizer: out of memory encoding %zu bytes", len);
    if (st == G1_OK) {
        normalize(&e, text, len);
        e.s = malloc(sizeof *e.s * (e.n_norm + 1));
        st = e.s ? bpe(&e) : G1_FAIL(G1_ERR_NOMEM, "tokenizer: out of memory encoding %zu bytes", len);
    }
    free(e.norm);
    free(e.s);
    free(e.heap);
    free(e.revs);
    return st;
}
