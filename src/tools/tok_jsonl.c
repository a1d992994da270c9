/* grok1-tokenize's line processing: parse one JSON request, encode or
 * decode, format one JSON result. Validation of every field happens here,
 * at the boundary; the tokenizer trusts what it is given. */
#include "tok_jsonl.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static g1_status add_pieces(const g1_tokenizer *tok, json_t *res, const int32_t *ids, size_t n)
{
    json_t *arr = json_array();
    if (!arr || json_object_set_new(res, "pieces", arr))
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const char *p = g1_tok_piece(tok, ids[i], &l);
        json_t *s = p ? json_stringn(p, l) : NULL;
        if (!s || json_array_append_new(arr, s))
            return G1_FAIL(G1_ERR_FORMAT, "piece %ld is not valid UTF-8 text", (long)ids[i]);
    }
    return G1_OK;
}

static g1_status do_encode(const g1_tokenizer *tok, json_t *req, json_t *res, int pieces)
{
    json_t *text = json_object_get(req, "text");
    if (!json_is_string(text))
        return G1_FAIL(G1_ERR_ARG, "encode needs a \"text\" string member");
    g1_ids ids = {0};
    g1_status st = g1_tok_encode(tok, json_string_value(text), json_string_length(text), &ids);
    json_t *arr = st == G1_OK ? json_array() : NULL;
    if (st == G1_OK && (!arr || json_object_set_new(res, "ids", arr)))
        st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
    for (size_t i = 0; st == G1_OK && i < ids.n; i++)
        if (json_array_append_new(arr, json_integer(ids.v[i])))
            st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
    if (st == G1_OK && pieces)
        st = add_pieces(tok, res, ids.v, ids.n);
    g1_ids_free(&ids);
    return st;
}

static g1_status do_decode(const g1_tokenizer *tok, json_t *req, json_t *res, int pieces)
{
    json_t *arr = json_object_get(req, "ids");
    if (!json_is_array(arr))
        return G1_FAIL(G1_ERR_ARG, "decode needs an \"ids\" array member");
    size_t n = json_array_size(arr);
    int32_t *ids = malloc(sizeof *ids * (n ? n : 1));
    if (!ids)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for %zu ids", n);
    g1_status st = G1_OK;
    int32_t V = g1_tok_vocab_size(tok);
    for (size_t i = 0; st == G1_OK && i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v))
            st = G1_FAIL(G1_ERR_ARG, "ids[%zu] is not an integer", i);
        else if (json_integer_value(v) < 0 || json_integer_value(v) >= V)
            st = G1_FAIL(G1_ERR_ARG, "ids[%zu] = %lld is outside the vocabulary [0, %d)", i,
                         (long long)json_integer_value(v), (int)V);
        else
            ids[i] = (int32_t)json_integer_value(v);
    }
    g1_str text = {0};
    if (st == G1_OK)
        st = g1_tok_decode(tok, ids, n, &text);
    if (st == G1_OK) {
        json_t *s = json_stringn(text.s, text.n);
        if (!s || json_object_set_new(res, "text", s))
            st = G1_FAIL(G1_ERR_FORMAT, "the decoded text is not valid UTF-8 (a damaged tokenizer model?)");
    }
    if (st == G1_OK && pieces)
        st = add_pieces(tok, res, ids, n);
    g1_str_free(&text);
    free(ids);
    return st;
}

g1_status g1_tokj_line(const g1_tokenizer *tok, g1_tokj_mode mode, int pieces,
                       const char *line, size_t len, g1_str *out)
{
    if (len >= 3 && !memcmp(line, "\xef\xbb\xbf", 3)) /* jansson's message would show an invisible character */
        return G1_FAIL(G1_ERR_ARG, "starts with a UTF-8 byte-order mark (bytes EF BB BF, which some editors add): "
                                   "save the file as UTF-8 without it");
    json_error_t err;
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!req)
        return G1_FAIL(G1_ERR_ARG, "not valid JSON: %s (column %d)", err.text, err.column);
    g1_status st = G1_OK;
    json_t *res = json_object();
    if (!json_is_object(req))
        st = G1_FAIL(G1_ERR_ARG, "not a JSON object");
    else if (!res)
        st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
    json_t *id = st == G1_OK ? json_object_get(req, "id") : NULL;
    if (id && json_object_set(res, "id", id))
        st = G1_FAIL(G1_ERR_NOMEM, "out of memory");
    if (st == G1_OK)
        st = mode == G1_TOKJ_ENCODE ? do_encode(tok, req, res, pieces) : do_decode(tok, req, res, pieces);
    if (st == G1_OK) {
        char *s = json_dumps(res, JSON_COMPACT | JSON_PRESERVE_ORDER);
        st = s ? g1_str_append(out, s, strlen(s)) : G1_FAIL(G1_ERR_NOMEM, "out of memory formatting the result");
        free(s);
    }
    json_decref(res);
    json_decref(req);
    return st;
}
