/* The release-shape check of the pickle scanner: the value left by the opcode
 * walk must be a numpy array rebuilt by _reconstruct (state: version 1, shape,
 * dtype float32 / int8 / ml_dtypes.bfloat16, C order, raw bytes), or a
 * QuantizedWeight8bit whose state is {'weight': int8 array, 'scales': bf16 array}. */
#include <stdio.h>
#include <string.h>

#include "pickle_vm.h"

static g1_status bad(const pv_tree *t, const char *what)
{
    return G1_FAIL(G1_ERR_FORMAT, "%s: %s; not what a Grok-1 release tensor file holds", t->name, what);
}

static const pv_node *at(const pv_tree *t, int id) { return id >= 0 ? &t->nodes[id] : NULL; }

static int is_kind(const pv_tree *t, int id, pv_kind k) { return id >= 0 && t->nodes[id].kind == k; }

static int is_str(const pv_tree *t, int id, const char *s)
{
    return is_kind(t, id, PV_STR) && t->nodes[id].len == strlen(s) && !strcmp(t->nodes[id].s, s);
}

static int is_global(const pv_tree *t, int id, pv_global g)
{
    return is_kind(t, id, PV_GLOBAL) && t->nodes[id].global == g;
}

/* dtype(<name or bfloat16 class>, False, True) with state (3, byteorder, ...). */
static g1_status check_dtype(const pv_tree *t, int id, g1_pickle_dtype *dt)
{
    const pv_node *d = at(t, id);
    if (!d || d->kind != PV_OBJ || !is_global(t, d->fn, PV_G_DTYPE) || at(t, d->args)->count != 3)
        return bad(t, "array dtype is not a numpy.dtype(...) construction");
    int name = pv_item(t, d->args, 0), st = d->state;
    if (!is_kind(t, st, PV_TUPLE) || t->nodes[st].count < 2)
        return bad(t, "array dtype has no (version, byteorder, ...) state");
    int order = pv_item(t, st, 1);
    if (is_str(t, name, "f4") && is_str(t, order, "<"))
        *dt = G1_PICKLE_F32;
    else if (is_str(t, name, "i1") && (is_str(t, order, "|") || is_str(t, order, "<")))
        *dt = G1_PICKLE_I8;
    else if (is_global(t, name, PV_G_BF16) && is_str(t, order, "<"))
        *dt = G1_PICKLE_BF16;
    else {
        char msg[256];
        const pv_node *n = at(t, name), *o = at(t, order);
        snprintf(msg, sizeof msg, "array dtype %s%s is not float32, int8 or ml_dtypes.bfloat16 (little-endian)",
                 o && o->kind == PV_STR ? o->s : "?",
                 n && n->kind == PV_STR ? n->s : n && n->kind == PV_GLOBAL ? "(another class)" : "?");
        return bad(t, msg);
    }
    return G1_OK;
}

/* _reconstruct(ndarray, (0,), b'b') with state (1, shape, dtype, False, payload). */
static g1_status check_array(const pv_tree *t, int id, const char *what, g1_pickle_array *a)
{
    char msg[128];
    const pv_node *o = at(t, id);
    if (!o || o->kind != PV_OBJ || !is_global(t, o->fn, PV_G_RECONSTRUCT) ||
        !is_global(t, pv_item(t, o->args, 0), PV_G_NDARRAY)) {
        snprintf(msg, sizeof msg, "%s is not a numpy array (numpy's _reconstruct of ndarray)", what);
        return bad(t, msg);
    }
    int st = o->state;
    if (!is_kind(t, st, PV_TUPLE) || t->nodes[st].count != 5) {
        snprintf(msg, sizeof msg, "%s: array state is not (version, shape, dtype, fortran, data)", what);
        return bad(t, msg);
    }
    int ver = pv_item(t, st, 0), shape = pv_item(t, st, 1), fortran = pv_item(t, st, 3), data = pv_item(t, st, 4);
    if (!is_kind(t, ver, PV_INT) || t->nodes[ver].i != 1 || !is_kind(t, shape, PV_TUPLE) ||
        !is_kind(t, data, PV_BYTES) || !is_kind(t, fortran, PV_BOOL) || t->nodes[fortran].i) {
        snprintf(msg, sizeof msg, "%s: array state is not (1, shape, dtype, False, raw bytes) (C order)", what);
        return bad(t, msg);
    }
    G1_TRY(check_dtype(t, pv_item(t, st, 2), &a->dtype));
    a->ndim = t->nodes[shape].count;
    if (a->ndim > G1_PICKLE_MAX_DIMS)
        return bad(t, "array has too many dimensions");
    uint64_t elems = 1;
    for (int i = 0; i < a->ndim; i++) {
        int d = pv_item(t, shape, i);
        if (!is_kind(t, d, PV_INT) || t->nodes[d].i < 0 || t->nodes[d].i > (1ll << 40))
            return bad(t, "array shape holds something that is not a dimension");
        a->shape[i] = t->nodes[d].i;
        elems *= (uint64_t)a->shape[i];
        if (elems > (1ull << 50))
            return bad(t, "array too large");
    }
    a->offset = t->nodes[data].off;
    a->nbytes = t->nodes[data].len;
    if (a->nbytes != elems * g1_pickle_dtype_size(a->dtype)) {
        snprintf(msg, sizeof msg, "%s: payload of %llu bytes, but its shape and dtype %s need %llu", what,
                 (unsigned long long)a->nbytes, g1_pickle_dtype_name(a->dtype),
                 (unsigned long long)(elems * g1_pickle_dtype_size(a->dtype)));
        return bad(t, msg);
    }
    return G1_OK;
}

static g1_status check_qw8(const pv_tree *t, const pv_node *o, g1_pickle_content *out)
{
    if (at(t, o->args)->count != 0 || !is_kind(t, o->state, PV_DICT) || t->nodes[o->state].count != 4)
        return bad(t, "QuantizedWeight8bit state is not a dict of two fields");
    int w = -1, sc = -1;
    for (int i = 0; i < 4; i += 2) {
        int k = pv_item(t, o->state, i), v = pv_item(t, o->state, i + 1);
        if (is_str(t, k, "weight") && w < 0)
            w = v;
        else if (is_str(t, k, "scales") && sc < 0)
            sc = v;
    }
    if (w < 0 || sc < 0)
        return bad(t, "QuantizedWeight8bit fields are not 'weight' and 'scales'");
    out->kind = G1_PICKLE_QW8;
    out->n_arrays = 2;
    G1_TRY(check_array(t, w, "QuantizedWeight8bit.weight", &out->arr[0]));
    G1_TRY(check_array(t, sc, "QuantizedWeight8bit.scales", &out->arr[1]));
    if (out->arr[0].dtype != G1_PICKLE_I8 || out->arr[1].dtype != G1_PICKLE_BF16)
        return bad(t, "QuantizedWeight8bit must hold an int8 weight and bfloat16 scales");
    if (out->arr[0].offset + out->arr[0].nbytes > out->arr[1].offset)
        return bad(t, "QuantizedWeight8bit scales payload comes before (or overlaps) the weight payload");
    return G1_OK;
}

g1_status pv_check_release(const pv_tree *t, int root, g1_pickle_content *out)
{
    const pv_node *o = at(t, root);
    if (o && o->kind == PV_OBJ && is_global(t, o->fn, PV_G_QW8))
        return check_qw8(t, o, out);
    out->kind = G1_PICKLE_ARRAY;
    out->n_arrays = 1;
    G1_TRY(check_array(t, root, "the pickled value", &out->arr[0]));
    if (out->arr[0].dtype != G1_PICKLE_F32)
        return bad(t, "a plain array in the release is float32");
    return G1_OK;
}
