/* Allocation of one process's weights. */
#include "weights.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"

const char *const g1_qmat_names[G1_NUM_QMAT] = {"attn_q", "attn_k", "attn_v", "attn_o",
                                                "moe_gate", "moe_up", "moe_down"};
const char *const g1_norm_names[G1_NUM_NORM] = {"attn_norm", "attn_out_norm", "moe_norm", "moe_out_norm"};

void g1_qmat_shape(const g1_config *c, g1_qmat_id id, int *rows, int *cols)
{
    int D = c->emb_size, QK = c->num_q_heads * c->key_size, KV = c->num_kv_heads * c->key_size;
    switch (id) {
    case G1_ATTN_Q: *rows = D; *cols = QK; break;
    case G1_ATTN_K:
    case G1_ATTN_V: *rows = D; *cols = KV; break;
    case G1_ATTN_O: *rows = QK; *cols = D; break;
    case G1_MOE_GATE:
    case G1_MOE_UP: *rows = D; *cols = c->ffn_size; break;
    case G1_MOE_DOWN:
    default: *rows = c->ffn_size; *cols = D; break;
    }
}

static void *walloc(g1_weights *w, size_t bytes)
{
    if (w->n_allocs == w->cap_allocs) {
        int cap = w->cap_allocs ? 2 * w->cap_allocs : 64;
        void **a = realloc(w->allocs, (size_t)cap * sizeof *a);
        if (!a)
            return NULL;
        w->allocs = a;
        size_t *len = realloc(w->alloc_len, (size_t)cap * sizeof *len);
        if (!len)
            return NULL;
        w->alloc_len = len;
        w->cap_allocs = cap;
    }
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? (bytes + 63) / 64 * 64 : 64))
        return NULL;
    w->alloc_len[w->n_allocs] = bytes;
    w->allocs[w->n_allocs++] = p;
    w->fresh_bytes += bytes;
    return p;
}

#define WALLOC(ptr, bytes)                                                                     \
    do {                                                                                       \
        if (!((ptr) = walloc(w, (bytes)))) {                                                   \
            g1_weights_free(w);                                                                \
            return G1_FAIL(G1_ERR_NOMEM, "out of memory allocating weights (%zu bytes)", (size_t)(bytes)); \
        }                                                                                      \
    } while (0)

static g1_status alloc_qmat(g1_weights *w, g1_qmat *m, int rows, int cols, int blocks)
{
    m->scale_split = m->split_buf = NULL;
    m->rows = rows;
    m->cols = cols;
    m->blocks = blocks;
    WALLOC(m->w, (size_t)rows * cols);
    WALLOC(m->scale, (size_t)blocks * cols * sizeof(float));
    return G1_OK;
}

/* Touch every page of the weights' allocations of 1 MiB or more, in 16 MiB
 * pieces spread over the threads: the kernel's page faults (which set the
 * pace of filling fresh memory) then run in parallel instead of one by one
 * in the reader. */
enum { PF_PAGE = 4096, PF_MIN = 1 << 20, PF_PIECE = 16 << 20 };

static size_t pf_pieces(size_t len) { return len >= PF_MIN ? (len + PF_PIECE - 1) / PF_PIECE : 0; }

static void prefault(g1_weights *w)
{
    size_t total = 0;
    for (int i = 0; i < w->n_allocs; i++)
        total += pf_pieces(w->alloc_len[i]);
    if (total > (size_t)INT_MAX)
        return;
    int tasks = (int)total;
#pragma omp parallel for schedule(dynamic, 1) if (tasks > 1)
    for (int t = 0; t < tasks; t++) {
        int i = 0;
        size_t k = (size_t)t; /* task t: piece k of allocation i */
        while (k >= pf_pieces(w->alloc_len[i]))
            k -= pf_pieces(w->alloc_len[i++]);
        size_t len = w->alloc_len[i], end = (k + 1) * PF_PIECE < len ? (k + 1) * PF_PIECE : len;
        for (size_t o = k * PF_PIECE; o < end; o += PF_PAGE)
            ((volatile char *)w->allocs[i])[o] = 0;
    }
}

g1_status g1_weights_alloc(g1_weights *w, const g1_config *cfg, int l0, int l1, int e0, int e1,
                           const int blocks[G1_NUM_QMAT], int with_embedding)
{
    memset(w, 0, sizeof *w);
    w->cfg = *cfg;
    if (l0 < 0 || l1 > cfg->num_layers || l0 > l1)
        return G1_FAIL(G1_ERR_ARG, "layer range [%d,%d) outside the model's %d layers", l0, l1, cfg->num_layers);
    if (e0 < 0 || e1 > cfg->num_experts || e0 >= e1)
        return G1_FAIL(G1_ERR_ARG, "expert range [%d,%d) outside the model's %d experts", e0, e1, cfg->num_experts);
    w->layer0 = l0;
    w->layer1 = l1;
    w->expert0 = e0;
    w->expert1 = e1;
    for (int i = 0; i < G1_NUM_QMAT; i++) {
        int rows, cols;
        g1_qmat_shape(cfg, (g1_qmat_id)i, &rows, &cols);
        if (blocks[i] < 1 || rows % blocks[i])
            return G1_FAIL(G1_ERR_FORMAT, "%s: %d scale blocks do not divide its %d rows", g1_qmat_names[i],
                           blocks[i], rows);
        w->blocks[i] = blocks[i];
    }
    int D = cfg->emb_size, nE = e1 - e0;
    if (with_embedding) {
        WALLOC(w->embedding, (size_t)cfg->vocab_size * D * sizeof(uint16_t));
        WALLOC(w->final_norm, (size_t)D * sizeof(float));
    }
    int nL = l1 - l0;
    w->layers = calloc(nL ? (size_t)nL : 1, sizeof *w->layers);
    if (!w->layers) {
        g1_weights_free(w);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    }
    for (int l = 0; l < nL; l++) {
        g1_layer_weights *L = &w->layers[l];
        for (int n = 0; n < G1_NUM_NORM; n++)
            WALLOC(L->norm[n], (size_t)D * sizeof(float));
        for (int i = 0; i < 4; i++) {
            int rows, cols;
            g1_qmat_shape(cfg, (g1_qmat_id)i, &rows, &cols);
            G1_TRY(alloc_qmat(w, &L->attn[i], rows, cols, blocks[i]));
        }
        WALLOC(L->router, (size_t)D * cfg->num_experts * sizeof(float));
        for (int m = 0; m < 3; m++) {
            WALLOC(L->moe[m], (size_t)nE * sizeof(g1_qmat));
            int rows, cols;
            g1_qmat_shape(cfg, (g1_qmat_id)(G1_MOE_GATE + m), &rows, &cols);
            for (int e = 0; e < nE; e++)
                G1_TRY(alloc_qmat(w, &L->moe[m][e], rows, cols, blocks[G1_MOE_GATE + m]));
        }
    }
    prefault(w);
    return G1_OK;
}

static int same_shape(const g1_weights *w, const g1_config *cfg, int l0, int l1, int e0, int e1,
                      const int blocks[G1_NUM_QMAT], int with_embedding)
{
    if (!w->n_allocs || w->layer1 - w->layer0 != l1 - l0 || w->expert0 != e0 || w->expert1 != e1 ||
        !w->embedding != !with_embedding || w->cfg.vocab_size != cfg->vocab_size ||
        w->cfg.emb_size != cfg->emb_size || w->cfg.num_experts != cfg->num_experts)
        return 0;
    for (int i = 0; i < G1_NUM_QMAT; i++) {
        int r0, c0, r1, c1;
        g1_qmat_shape(&w->cfg, (g1_qmat_id)i, &r0, &c0);
        g1_qmat_shape(cfg, (g1_qmat_id)i, &r1, &c1);
        if (r0 != r1 || c0 != c1 || w->blocks[i] != blocks[i])
            return 0;
    }
    return 1;
}

g1_status g1_weights_realloc(g1_weights *w, const g1_config *cfg, int l0, int l1, int e0, int e1,
                             const int blocks[G1_NUM_QMAT], int with_embedding)
{
    if (l0 >= 0 && l1 <= cfg->num_layers && same_shape(w, cfg, l0, l1, e0, e1, blocks, with_embedding)) {
        w->cfg = *cfg;
        w->layer0 = l0;
        w->layer1 = l1;
        w->fresh_bytes = 0;
        /* the split scales are the last part's until g1_weights_prepare */
        for (int l = 0; l < l1 - l0; l++) {
            for (int i = 0; i < 4; i++)
                w->layers[l].attn[i].scale_split = NULL;
            for (int m = 0; m < 3; m++)
                for (int e = 0; e < e1 - e0; e++)
                    w->layers[l].moe[m][e].scale_split = NULL;
        }
        return G1_OK;
    }
    g1_weights_free(w);
    return g1_weights_alloc(w, cfg, l0, l1, e0, e1, blocks, with_embedding);
}

static g1_status prepare_qmat(g1_weights *w, g1_qmat *m)
{
    size_t n = (size_t)m->blocks * m->cols;
    m->scale_split = NULL;
    for (size_t i = 0; i < n; i++) {
        float s = m->scale[i], a = fabsf(s);
        if (g1_round_bf16(s) != s || !(a == 0.0f || (a > 0x1p-100f && a < 0x1p100f)))
            return G1_OK; /* not bf16 (or extreme): the integer rounding path */
    }
    if (!m->split_buf) /* else kept from an earlier part (g1_weights_realloc) */
        WALLOC(m->split_buf, n * sizeof(float));
    float *ss = m->split_buf;
    for (size_t i = 0; i < n; i++)
        ss[i] = m->scale[i] * 65537.0f; /* exact: 8 significant bits, twice */
    m->scale_split = ss;
    return G1_OK;
}

g1_status g1_weights_prepare(g1_weights *w)
{
    for (int l = 0; l < w->layer1 - w->layer0; l++) {
        g1_layer_weights *L = &w->layers[l];
        for (int i = 0; i < 4; i++)
            G1_TRY(prepare_qmat(w, &L->attn[i]));
        for (int m = 0; m < 3; m++)
            for (int e = 0; e < w->expert1 - w->expert0; e++)
                G1_TRY(prepare_qmat(w, &L->moe[m][e]));
    }
    return G1_OK;
}

void g1_weights_free(g1_weights *w)
{
    for (int i = 0; i < w->n_allocs; i++)
        free(w->allocs[i]);
    free(w->allocs);
    free(w->alloc_len);
    free(w->layers);
    memset(w, 0, sizeof *w);
}

static size_t qbytes(const g1_qmat *m)
{
    return (size_t)m->rows * m->cols + (size_t)m->blocks * m->cols * sizeof(float);
}

size_t g1_weights_bytes(const g1_weights *w)
{
    const g1_config *c = &w->cfg;
    size_t b = 0, D = (size_t)c->emb_size;
    if (w->embedding)
        b += (size_t)c->vocab_size * D * 2 + D * 4;
    for (int l = 0; l < w->layer1 - w->layer0; l++) {
        const g1_layer_weights *L = &w->layers[l];
        b += 4 * D * 4 + D * (size_t)c->num_experts * 4;
        for (int i = 0; i < 4; i++)
            b += qbytes(&L->attn[i]);
        for (int m = 0; m < 3; m++)
            for (int e = 0; e < w->expert1 - w->expert0; e++)
                b += qbytes(&L->moe[m][e]);
    }
    return b;
}
