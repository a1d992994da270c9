/* The opcode walk of the pickle scanner: reads every opcode of protocols 2-4
 * with its argument format, keeps a stack of inert values (pickle_vm.h),
 * refuses globals outside the release's set the moment they appear, skips
 * byte payloads by offset. It never calls, imports or unpickles anything. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pickle_vm.h"

const char *const g1_pickle_allowed_globals[] = {
    "numpy.core.multiarray._reconstruct (or numpy._core.multiarray._reconstruct)",
    "numpy.ndarray",
    "numpy.dtype",
    "__main__.QuantizedWeight8bit",
    "ml_dtypes.bfloat16",
    NULL,
};

static const struct {
    const char *module, *name;
    pv_global g;
} allowed[] = {
    {"numpy.core.multiarray", "_reconstruct", PV_G_RECONSTRUCT},
    {"numpy._core.multiarray", "_reconstruct", PV_G_RECONSTRUCT},
    {"numpy", "ndarray", PV_G_NDARRAY},
    {"numpy", "dtype", PV_G_DTYPE},
    {"__main__", "QuantizedWeight8bit", PV_G_QW8},
    {"ml_dtypes", "bfloat16", PV_G_BF16},
};

#define WIN (64u << 10)

typedef struct scan {
    const g1_pickle_src *src;
    uint64_t pos;          /* next byte to read */
    uint64_t op_at;        /* offset of the current opcode (messages) */
    uint8_t *win;          /* bytes [win_off, win_off + win_len) of the file */
    uint64_t win_off;
    size_t win_len;
    pv_tree t;
    int *stack, sp;
    int *marks, n_marks;
    int *memo, memo_len;   /* memo index -> node (-1: unset) */
} scan;

static g1_status bad(const scan *s, const char *what)
{
    return G1_FAIL(G1_ERR_FORMAT, "%s: offset %llu: %s; not a Grok-1 release tensor file (never unpickled)",
                   s->src->name, (unsigned long long)s->op_at, what);
}

/* ---- reading ---- */

static g1_status get(scan *s, void *dst, size_t n)
{
    if (n > s->src->size - s->pos || s->pos > s->src->size)
        return G1_FAIL(G1_ERR_FORMAT, "%s: truncated: the pickle needs %zu bytes at offset %llu but the file "
                       "has %llu bytes (incomplete download?)", s->src->name, n, (unsigned long long)s->pos,
                       (unsigned long long)s->src->size);
    uint8_t *d = dst;
    while (n) {
        if (s->pos < s->win_off || s->pos >= s->win_off + s->win_len) {
            uint64_t left = s->src->size - s->pos;
            s->win_off = s->pos;
            s->win_len = left < WIN ? (size_t)left : WIN;
            G1_TRY(s->src->read_at(s->src->ctx, s->win_off, s->win, s->win_len));
        }
        size_t have = (size_t)(s->win_off + s->win_len - s->pos);
        size_t k = have < n ? have : n;
        memcpy(d, s->win + (s->pos - s->win_off), k);
        d += k;
        s->pos += k;
        n -= k;
    }
    return G1_OK;
}

static g1_status skip(scan *s, uint64_t n)
{
    if (n > s->src->size - s->pos)
        return G1_FAIL(G1_ERR_FORMAT, "%s: truncated: a payload of %llu bytes at offset %llu runs past the end "
                       "of the file (%llu bytes; incomplete download?)", s->src->name, (unsigned long long)n,
                       (unsigned long long)s->pos, (unsigned long long)s->src->size);
    s->pos += n;
    return G1_OK;
}

static g1_status get_le(scan *s, int nbytes, uint64_t *v)
{
    uint8_t b[8];
    G1_TRY(get(s, b, (size_t)nbytes));
    *v = 0;
    for (int i = nbytes - 1; i >= 0; i--)
        *v = (*v << 8) | b[i];
    return G1_OK;
}

/* A text argument ending in '\n' (protocol 0 opcodes that protocols 2-3 still use). */
static g1_status get_line(scan *s, char *buf, size_t cap)
{
    for (size_t i = 0; i + 1 < cap; i++) {
        G1_TRY(get(s, buf + i, 1));
        if (buf[i] == '\n') {
            buf[i] = 0;
            return G1_OK;
        }
    }
    return bad(s, "text argument too long");
}

/* ---- values ---- */

static g1_status new_node(scan *s, pv_kind k, int *out)
{
    if (s->t.n_nodes == PV_MAX_NODES)
        return bad(s, "too many values");
    pv_node *n = &s->t.nodes[s->t.n_nodes];
    memset(n, 0, sizeof *n);
    n->kind = (uint8_t)k;
    n->head = n->tail = n->fn = n->args = n->state = -1;
    *out = s->t.n_nodes++;
    return G1_OK;
}

static g1_status push(scan *s, int node)
{
    if (s->sp == PV_MAX_STACK)
        return bad(s, "stack too deep");
    s->stack[s->sp++] = node;
    return G1_OK;
}

static g1_status push_new(scan *s, pv_kind k, pv_node **n)
{
    int id = -1;
    G1_TRY(new_node(s, k, &id));
    G1_TRY(push(s, id));
    *n = &s->t.nodes[id];
    return G1_OK;
}

static g1_status pop(scan *s, int *node)
{
    int floor = s->n_marks ? s->marks[s->n_marks - 1] : 0;
    if (s->sp <= floor)
        return bad(s, "stack underflow");
    *node = s->stack[--s->sp];
    return G1_OK;
}

static g1_status add_item(scan *s, int container, int item)
{
    if (s->t.n_cells == PV_MAX_CELLS)
        return bad(s, "too many container items");
    pv_node *c = &s->t.nodes[container];
    int id = s->t.n_cells++;
    s->t.cells[id] = (pv_cell){item, -1};
    if (c->tail >= 0)
        s->t.cells[c->tail].next = id;
    else
        c->head = id;
    c->tail = id;
    c->count++;
    return G1_OK;
}

int pv_item(const pv_tree *t, int container, int i)
{
    if (container < 0)
        return -1;
    int c = t->nodes[container].head;
    while (c >= 0 && i-- > 0)
        c = t->cells[c].next;
    return c >= 0 ? t->cells[c].node : -1;
}

/* Pop the topmost mark: the items above it are stack[*first .. s->sp),
 * still on the stack (the caller drops them: s->sp = *first). */
static g1_status pop_mark(scan *s, int *first)
{
    if (!s->n_marks)
        return bad(s, "no MARK for this opcode");
    *first = s->marks[--s->n_marks];
    return G1_OK;
}

static g1_status make_container(scan *s, pv_kind k, int first, int last, int *out)
{
    G1_TRY(new_node(s, k, out));
    for (int i = first; i < last; i++)
        G1_TRY(add_item(s, *out, s->stack[i]));
    return G1_OK;
}

static g1_status string_value(scan *s, uint64_t len)
{
    pv_node *n;
    G1_TRY(push_new(s, PV_STR, &n));
    n->len = len;
    size_t keep = len < PV_STR_KEEP ? (size_t)len : PV_STR_KEEP;
    char tmp[PV_STR_KEEP + 1];
    G1_TRY(get(s, tmp, keep));
    tmp[keep] = 0;
    memcpy(n->s, tmp, keep + 1);
    return skip(s, len - keep);
}

static g1_status bytes_value(scan *s, uint64_t len)
{
    pv_node *n;
    G1_TRY(push_new(s, PV_BYTES, &n));
    n->off = s->pos;
    n->len = len;
    return skip(s, len);
}

static g1_status global_value(scan *s, const char *module, const char *name)
{
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (!strcmp(module, allowed[i].module) && !strcmp(name, allowed[i].name)) {
            pv_node *n;
            G1_TRY(push_new(s, PV_GLOBAL, &n));
            n->global = (uint8_t)allowed[i].g;
            return G1_OK;
        }
    return G1_FAIL(G1_ERR_FORMAT, "%s: offset %llu: the pickle names the global %.64s.%.64s, which the release "
                   "never uses; refusing the file (it was not unpickled). Allowed: numpy's array "
                   "reconstruction (_reconstruct, ndarray, dtype), __main__.QuantizedWeight8bit, "
                   "ml_dtypes.bfloat16", s->src->name, (unsigned long long)s->op_at, module, name);
}

static g1_status stack_global(scan *s)
{
    int nm = -1, mod = -1;
    G1_TRY(pop(s, &nm));
    G1_TRY(pop(s, &mod));
    const pv_node *a = &s->t.nodes[mod], *b = &s->t.nodes[nm];
    if (a->kind != PV_STR || b->kind != PV_STR || a->len > PV_STR_KEEP || b->len > PV_STR_KEEP)
        return bad(s, "STACK_GLOBAL on values that are not short strings");
    char m[PV_STR_KEEP + 1], n[PV_STR_KEEP + 1];
    memcpy(m, a->s, sizeof m);
    memcpy(n, b->s, sizeof n);
    return global_value(s, m, n);
}

static g1_status memo_put(scan *s, uint64_t idx)
{
    if (idx >= PV_MAX_MEMO)
        return bad(s, "memo index too large");
    if (!s->sp || (s->n_marks && s->marks[s->n_marks - 1] == s->sp))
        return bad(s, "memo store with an empty stack");
    while (s->memo_len <= (int)idx)
        s->memo[s->memo_len++] = -1;
    s->memo[idx] = s->stack[s->sp - 1];
    return G1_OK;
}

static g1_status memo_get(scan *s, uint64_t idx)
{
    if (idx >= (uint64_t)s->memo_len || s->memo[idx] < 0)
        return bad(s, "memo read of an index never stored");
    return push(s, s->memo[idx]);
}

static g1_status make_obj(scan *s, int newobj)
{
    int args = -1, fn = -1, id = -1;
    G1_TRY(pop(s, &args));
    G1_TRY(pop(s, &fn));
    const pv_node *f = &s->t.nodes[fn];
    if (f->kind != PV_GLOBAL)
        return bad(s, newobj ? "NEWOBJ of something that is not a class" : "REDUCE of something that is not a global");
    /* only these constructions are meaningful; ndarray and bfloat16 are arguments */
    int ok = newobj ? f->global == PV_G_QW8 : (f->global == PV_G_RECONSTRUCT || f->global == PV_G_DTYPE);
    if (!ok)
        return bad(s, newobj ? "NEWOBJ of a class other than QuantizedWeight8bit" : "REDUCE calls something other "
                   "than numpy's _reconstruct or dtype");
    if (s->t.nodes[args].kind != PV_TUPLE)
        return bad(s, "constructor arguments are not a tuple");
    G1_TRY(new_node(s, PV_OBJ, &id));
    s->t.nodes[id].fn = fn;
    s->t.nodes[id].args = args;
    s->t.nodes[id].newobj = (uint8_t)newobj;
    return push(s, id);
}

static g1_status build(scan *s)
{
    int state = -1, obj;
    G1_TRY(pop(s, &state));
    if (s->sp <= (s->n_marks ? s->marks[s->n_marks - 1] : 0))
        return bad(s, "stack underflow");
    obj = s->stack[s->sp - 1];
    pv_node *o = &s->t.nodes[obj];
    if (o->kind != PV_OBJ || o->state >= 0)
        return bad(s, "BUILD on something that is not a fresh object");
    o->state = state;
    return G1_OK;
}

/* ---- opcodes ---- */

static g1_status int_value(scan *s, int64_t v, pv_kind k)
{
    pv_node *n;
    G1_TRY(push_new(s, k, &n));
    n->i = v;
    return G1_OK;
}

/* LONG1 / LONG4: little-endian two's complement; the release needs <= 8 bytes. */
static g1_status long_value(scan *s, uint64_t nbytes)
{
    if (nbytes > 8)
        return bad(s, "integer wider than 64 bits");
    uint64_t v = 0;
    if (nbytes)
        G1_TRY(get_le(s, (int)nbytes, &v));
    if (nbytes && nbytes < 8 && (v >> (8 * nbytes - 1)) & 1)
        v |= ~0ull << (8 * nbytes);
    return int_value(s, (int64_t)v, PV_INT);
}

static g1_status text_int(scan *s, int is_long)
{
    char line[64];
    G1_TRY(get_line(s, line, sizeof line));
    size_t n = strlen(line);
    if (is_long && n && line[n - 1] == 'L')
        line[--n] = 0;
    if (!is_long && (!strcmp(line, "00") || !strcmp(line, "01")))
        return int_value(s, line[1] == '1', PV_BOOL);
    char *end;
    long long v = strtoll(line, &end, 10);
    if (!n || *end)
        return bad(s, "malformed text integer");
    return int_value(s, v, PV_INT);
}

static g1_status text_global(scan *s)
{
    char m[PV_STR_KEEP + 1], n[PV_STR_KEEP + 1];
    G1_TRY(get_line(s, m, sizeof m));
    G1_TRY(get_line(s, n, sizeof n));
    return global_value(s, m, n);
}

static g1_status text_memo(scan *s, int is_put)
{
    char line[32], *end;
    G1_TRY(get_line(s, line, sizeof line));
    unsigned long long v = strtoull(line, &end, 10);
    if (!*line || *end)
        return bad(s, "malformed memo index");
    return is_put ? memo_put(s, v) : memo_get(s, v);
}

static g1_status collect(scan *s, pv_kind k)
{
    int first = 0, id = -1;
    G1_TRY(pop_mark(s, &first));
    G1_TRY(make_container(s, k, first, s->sp, &id));
    s->sp = first;
    return push(s, id);
}

static g1_status tuple_n(scan *s, int n)
{
    int floor = s->n_marks ? s->marks[s->n_marks - 1] : 0, id = -1;
    if (s->sp - n < floor)
        return bad(s, "stack underflow");
    G1_TRY(make_container(s, PV_TUPLE, s->sp - n, s->sp, &id));
    s->sp -= n;
    return push(s, id);
}

/* APPEND(S), SETITEM(S), ADDITEMS: items go into the container below them. */
static g1_status add_items(scan *s, pv_kind k, int use_mark, int n)
{
    int first = s->sp - n, c;
    if (use_mark)
        G1_TRY(pop_mark(s, &first));
    if (first < (s->n_marks ? s->marks[s->n_marks - 1] : 0) || first < 1)
        return bad(s, "stack underflow");
    if (k == PV_DICT && (s->sp - first) % 2)
        return bad(s, "SETITEMS with an odd number of values");
    c = s->stack[first - 1];
    if (s->t.nodes[c].kind != k && !(k == PV_LIST && s->t.nodes[c].kind == PV_SET))
        return bad(s, "items added to something that is not a container of that kind");
    for (int i = first; i < s->sp; i++)
        G1_TRY(add_item(s, c, s->stack[i]));
    s->sp = first;
    return G1_OK;
}

/* Execute one opcode symbolically; *stop set at STOP. */
static g1_status step(scan *s, int *stop)
{
    uint8_t op;
    uint64_t v;
    pv_node *n;
    int x = -1;
    s->op_at = s->pos;
    G1_TRY(get(s, &op, 1));
    switch (op) {
    case 0x80: /* PROTO */
        G1_TRY(get_le(s, 1, &v));
        if (v < 2 || v > 4)
            return G1_FAIL(G1_ERR_FORMAT, "%s: pickle protocol %d; the release uses protocol 4 (2 to 4 accepted)",
                           s->src->name, (int)v);
        return G1_OK;
    case 0x95: /* FRAME: a length header; the framed opcodes follow as usual */
        G1_TRY(get_le(s, 8, &v));
        if (v > s->src->size - s->pos)
            return G1_FAIL(G1_ERR_FORMAT, "%s: truncated: a frame of %llu bytes at offset %llu runs past the end of "
                           "the file (%llu bytes; incomplete download?)", s->src->name, (unsigned long long)v,
                           (unsigned long long)s->op_at, (unsigned long long)s->src->size);
        return G1_OK;
    case '.': *stop = 1; return G1_OK;
    case '(':
        if (s->n_marks == PV_MAX_MARKS)
            return bad(s, "too many MARKs");
        s->marks[s->n_marks++] = s->sp;
        return G1_OK;
    case '0': return pop(s, &x);
    case '1':
        G1_TRY(pop_mark(s, &x));
        s->sp = x;
        return G1_OK;
    case '2':
        G1_TRY(pop(s, &x));
        s->sp++;
        return push(s, x);
    case 'N': return push_new(s, PV_NONE, &n);
    case 0x88: return int_value(s, 1, PV_BOOL);
    case 0x89: return int_value(s, 0, PV_BOOL);
    case 'K': G1_TRY(get_le(s, 1, &v)); return int_value(s, (int64_t)v, PV_INT);
    case 'M': G1_TRY(get_le(s, 2, &v)); return int_value(s, (int64_t)v, PV_INT);
    case 'J': G1_TRY(get_le(s, 4, &v)); return int_value(s, (int32_t)(uint32_t)v, PV_INT);
    case 0x8a: G1_TRY(get_le(s, 1, &v)); return long_value(s, v);
    case 0x8b: G1_TRY(get_le(s, 4, &v)); return long_value(s, v);
    case 'I': return text_int(s, 0);
    case 'L': return text_int(s, 1);
    case 'G': G1_TRY(skip(s, 8)); return push_new(s, PV_FLOAT, &n);
    case 0x8c: G1_TRY(get_le(s, 1, &v)); return string_value(s, v);
    case 'X': G1_TRY(get_le(s, 4, &v)); return string_value(s, v);
    case 0x8d: G1_TRY(get_le(s, 8, &v)); return string_value(s, v);
    case 'C': G1_TRY(get_le(s, 1, &v)); return bytes_value(s, v);
    case 'B': G1_TRY(get_le(s, 4, &v)); return bytes_value(s, v);
    case 0x8e: G1_TRY(get_le(s, 8, &v)); return bytes_value(s, v);
    case 'U': G1_TRY(get_le(s, 1, &v)); return bytes_value(s, v);
    case 'T': G1_TRY(get_le(s, 4, &v)); return bytes_value(s, v);
    case ')': return tuple_n(s, 0);
    case 0x85: return tuple_n(s, 1);
    case 0x86: return tuple_n(s, 2);
    case 0x87: return tuple_n(s, 3);
    case 't': return collect(s, PV_TUPLE);
    case ']': return push_new(s, PV_LIST, &n);
    case 'l': return collect(s, PV_LIST);
    case 'a': return add_items(s, PV_LIST, 0, 1);
    case 'e': return add_items(s, PV_LIST, 1, 0);
    case '}': return push_new(s, PV_DICT, &n);
    case 'd': return collect(s, PV_DICT);
    case 's': return add_items(s, PV_DICT, 0, 2);
    case 'u': return add_items(s, PV_DICT, 1, 0);
    case 0x8f: return push_new(s, PV_SET, &n);
    case 0x90: return add_items(s, PV_SET, 1, 0);
    case 0x91: return collect(s, PV_SET);
    case 'c': return text_global(s);
    case 0x93: return stack_global(s);
    case 'R': return make_obj(s, 0);
    case 0x81: return make_obj(s, 1);
    case 'b': return build(s);
    case 'p': return text_memo(s, 1);
    case 'q': G1_TRY(get_le(s, 1, &v)); return memo_put(s, v);
    case 'r': G1_TRY(get_le(s, 4, &v)); return memo_put(s, v);
    case 0x94: return memo_put(s, (uint64_t)s->memo_len);
    case 'g': return text_memo(s, 0);
    case 'h': G1_TRY(get_le(s, 1, &v)); return memo_get(s, v);
    case 'j': G1_TRY(get_le(s, 4, &v)); return memo_get(s, v);
    case 'i': case 'o': case 0x92:
        return bad(s, "INST/OBJ/NEWOBJ_EX construct objects in ways the release never does");
    case 'P': case 'Q': return bad(s, "persistent ids are not used by the release");
    case 0x82: case 0x83: case 0x84: return bad(s, "extension-registry globals are not allowed");
    case 0x96: case 0x97: case 0x98: return bad(s, "protocol 5 buffers are not used by the release");
    default: {
        char msg[64];
        snprintf(msg, sizeof msg, "unknown or unsupported opcode 0x%02x", op);
        return bad(s, msg);
    }
    }
}

/* ---- driver ---- */

static g1_status run(scan *s, g1_pickle_content *out)
{
    uint8_t first;
    G1_TRY(get(s, &first, 1));
    if (first != 0x80)
        return G1_FAIL(G1_ERR_FORMAT, "%s: does not start with a pickle PROTO opcode (first byte 0x%02x): not a "
                       "release tensor file", s->src->name, first);
    s->pos = 0;
    int stop = 0;
    while (!stop)
        G1_TRY(step(s, &stop));
    if (s->n_marks || s->sp != 1)
        return bad(s, "STOP with a stack that does not hold exactly one value");
    if (s->pos != s->src->size)
        return G1_FAIL(G1_ERR_FORMAT, "%s: %llu bytes after the end of the pickle (file %llu bytes): not a release "
                       "tensor file", s->src->name, (unsigned long long)(s->src->size - s->pos),
                       (unsigned long long)s->src->size);
    return pv_check_release(&s->t, s->stack[0], out);
}

g1_status g1_pickle_scan(const g1_pickle_src *src, g1_pickle_content *out)
{
    scan s = {.src = src, .t = {.name = src->name}};
    memset(out, 0, sizeof *out);
    s.win = malloc(WIN);
    s.t.nodes = malloc(sizeof *s.t.nodes * PV_MAX_NODES);
    s.t.cells = malloc(sizeof *s.t.cells * PV_MAX_CELLS);
    s.stack = malloc(sizeof *s.stack * PV_MAX_STACK);
    s.marks = malloc(sizeof *s.marks * PV_MAX_MARKS);
    s.memo = malloc(sizeof *s.memo * PV_MAX_MEMO);
    g1_status st = s.win && s.t.nodes && s.t.cells && s.stack && s.marks && s.memo
                       ? run(&s, out)
                       : G1_FAIL(G1_ERR_NOMEM, "out of memory");
    free(s.win);
    free(s.t.nodes);
    free(s.t.cells);
    free(s.stack);
    free(s.marks);
    free(s.memo);
    return st;
}

typedef struct mem_src {
    const uint8_t *p;
} mem_src;

static g1_status mem_read(void *ctx, uint64_t off, void *buf, size_t n)
{
    memcpy(buf, ((const mem_src *)ctx)->p + off, n);
    return G1_OK;
}

g1_status g1_pickle_scan_mem(const void *buf, size_t n, const char *name, g1_pickle_content *out)
{
    mem_src m = {buf};
    g1_pickle_src src = {mem_read, &m, n, name};
    return g1_pickle_scan(&src, out);
}

const char *g1_pickle_dtype_name(g1_pickle_dtype t)
{
    return t == G1_PICKLE_F32 ? "float32" : t == G1_PICKLE_I8 ? "int8" : "bfloat16";
}

size_t g1_pickle_dtype_size(g1_pickle_dtype t) { return t == G1_PICKLE_F32 ? 4 : t == G1_PICKLE_I8 ? 1 : 2; }
