/* The decoder stack of one process over a ragged batch, with per-slot KV
 * caches. Reads like the model: norm, attention, post-norm, residual; norm,
 * router, experts (through the dispatch), post-norm, residual. */
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "batch_admit.h"
#include "bf16.h"
#include "cpu.h"
#include "cuda/cuda_engine.h"
#include "engine_internal.h"
#include "part_pipe.h"
#include "sampler.h"

static void *zalloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? (n + 63) / 64 * 64 : 64))
        return NULL;
    memset(p, 0, n);
    return p;
}

static g1_status local_dispatch(void *ctx, int layer, int T, const float *x, const int *idx, const float *gate,
                                float *out)
{
    return g1_moe_local(ctx, layer, T, x, idx, gate, out);
}

static g1_status cpu_start(g1_engine *e, const g1_weights *w, const g1_engine_opts *opts,
                           const g1_moe_dispatch *dispatch, g1_engine **out);

static g1_status check_init(const g1_config *c, int e0, int e1, const g1_engine_opts *opts,
                            const g1_moe_dispatch *dispatch)
{
    if (opts->n_slots < 1 || opts->max_batch < 1)
        return G1_FAIL(G1_ERR_ARG, "engine needs at least one slot and a batch of at least one token");
    if (opts->max_context < 0 || opts->max_context > c->max_seq_len)
        return G1_FAIL(G1_ERR_ARG, "max_context %d outside 0..max_seq_len (%d)", opts->max_context, c->max_seq_len);
    if (c->key_size > 2048)
        return G1_FAIL(G1_ERR_ARG, "key_size %d above the supported 2048", c->key_size);
    if (!dispatch && (e0 != 0 || e1 != c->num_experts))
        return G1_FAIL(G1_ERR_ARG, "local MoE needs all %d experts, but only %d..%d are held", c->num_experts, e0,
                       e1 - 1);
    if (opts->backend != G1_BACKEND_CPU && opts->backend != G1_BACKEND_CUDA)
        return G1_FAIL(G1_ERR_ARG, "unknown backend %d", (int)opts->backend);
    if (opts->kv_cache != G1_KV_F32 && opts->kv_cache != G1_KV_BF16)
        return G1_FAIL(G1_ERR_ARG, "unknown KV cache type %d", (int)opts->kv_cache);
    return G1_OK;
}

/* The CUDA engine's switches: the tuning, with the graph options over it. */
static g1_cuda_opts cuda_opts(const g1_engine_opts *opts)
{
    g1_cuda_opts co = opts->cuda_tune;
    if (opts->cuda_graphs_off)
        co.no_graphs = 1;
    if (opts->cuda_graphs_max)
        co.max_graphs = opts->cuda_graphs_max;
    return co;
}

g1_status g1_engine_init(g1_engine **out, const g1_weights *w, const g1_engine_opts *opts,
                         const g1_moe_dispatch *dispatch)
{
    *out = NULL;
    const g1_config *c = &w->cfg;
    G1_TRY(check_init(c, w->expert0, w->expert1, opts, dispatch));
    g1_engine *e = calloc(1, sizeof *e);
    if (!e)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    if (opts->backend == G1_BACKEND_CUDA) {
        e->w = w;
        e->cfg = *c;
        e->opts = *opts;
        g1_cuda_opts co = cuda_opts(opts);
        g1_status st = g1_cuda_engine_init(&e->cuda, w, opts, dispatch, &co);
        if (st != G1_OK) {
            free(e);
            return st;
        }
        *out = e;
        return G1_OK;
    }
    return cpu_start(e, w, opts, dispatch, out);
}

/* Load a part of the source into w (zeroed, or the part loaded before, for
 * the source to reuse) and check it is what was asked for; on success the
 * caller owns w, on failure w is freed. */
static g1_status load_part(const g1_weights_source *src, int l0, int l1, int with_embedding, g1_weights *w)
{
    G1_TRY(src->load(src, l0, l1, with_embedding, w));
    if (w->layer0 != l0 || w->layer1 != l1 || w->expert0 != src->expert0 || w->expert1 != src->expert1 ||
        (with_embedding && (!w->embedding || !w->final_norm)) || w->cfg.num_layers != src->cfg.num_layers ||
        w->cfg.emb_size != src->cfg.emb_size || w->cfg.ffn_size != src->cfg.ffn_size ||
        w->cfg.vocab_size != src->cfg.vocab_size || w->cfg.num_experts != src->cfg.num_experts) {
        g1_weights_free(w);
        return G1_FAIL(G1_ERR_ARG, "the weights source gave another part than layers [%d,%d), experts [%d,%d)%s",
                       l0, l1, src->expert0, src->expert1, with_embedding ? " and the embedding" : "");
    }
    return G1_OK;
}

/* The CUDA engine's parts (g1_engine_init_source): made by reading the
 * source, used by copying them to the GPU, on the part pipe's thread
 * while the next is read (part_pipe.h). Part i is layer layer0 + i, the
 * last (with the embedding) the embedding alone. */
typedef struct source_parts {
    const g1_weights_source *src;
    g1_cuda_engine *cu;
    int first_blocks[G1_NUM_QMAT];
    size_t bytes[2]; /* each buffer's part */
    g1_weights_held h;
} source_parts;

static g1_status source_make(void *ctx, int i, void *buf)
{
    source_parts *sp = ctx;
    const g1_weights_source *src = sp->src;
    g1_weights *w = buf;
    int l = src->layer0 + i, emb = l == src->layer1;
    G1_TRY(load_part(src, emb ? src->layer0 : l, emb ? src->layer0 : l + 1, emb, w));
    if (!emb && i == 0)
        memcpy(sp->first_blocks, w->blocks, sizeof sp->first_blocks);
    for (int k = 0; !emb && k < G1_NUM_QMAT; k++)
        if (w->blocks[k] != sp->first_blocks[k])
            return G1_FAIL(G1_ERR_FORMAT, "layer %d: %s has %d scale blocks, layer %d has %d: every layer must have "
                                          "the same", l, g1_qmat_names[k], w->blocks[k], src->layer0,
                           sp->first_blocks[k]);
    sp->bytes[i % 2] = g1_weights_bytes(w);
    sp->h.bytes += sp->bytes[i % 2];
    /* held at once: this part and the one being copied */
    size_t both = sp->bytes[i % 2] + (i > 0 ? sp->bytes[(i + 1) % 2] : 0);
    sp->h.host_peak = both > sp->h.host_peak ? both : sp->h.host_peak;
    return G1_OK;
}

static g1_status source_use(void *ctx, int i, void *buf)
{
    source_parts *sp = ctx;
    /* the first part read: is there room for all of them (and the
     * scratch)? Refused now, a share too large costs the reading of two
     * parts, not of all but the last */
    if (i == 0)
        G1_TRY(g1_cuda_engine_check_room(sp->cu, buf, sp->src->with_embedding));
    return g1_cuda_engine_upload(sp->cu, buf);
}

g1_status g1_engine_init_source(g1_engine **out, const g1_weights_source *src, const g1_engine_opts *opts,
                                const g1_moe_dispatch *dispatch, g1_weights_held *held)
{
    *out = NULL;
    g1_weights_held h = {0, 0};
    if (held)
        *held = h;
    const g1_config *c = &src->cfg;
    if (src->layer0 < 0 || src->layer1 > c->num_layers || src->layer0 > src->layer1)
        return G1_FAIL(G1_ERR_ARG, "layer range [%d,%d) outside the model's %d layers", src->layer0, src->layer1,
                       c->num_layers);
    G1_TRY(check_init(c, src->expert0, src->expert1, opts, dispatch));
    g1_engine *e = calloc(1, sizeof *e);
    if (!e)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    g1_status st;
    if (opts->backend == G1_BACKEND_CPU) {
        st = load_part(src, src->layer0, src->layer1, src->with_embedding, &e->own);
        if (st != G1_OK) {
            free(e);
            return st;
        }
        e->owns_w = 1;
        h.bytes = h.host_peak = g1_weights_bytes(&e->own);
        G1_TRY(cpu_start(e, &e->own, opts, dispatch, out));
        if (held)
            *held = h;
        return G1_OK;
    }
    e->cfg = *c;
    e->opts = *opts;
    g1_cuda_opts co = cuda_opts(opts);
    st = g1_cuda_engine_begin(&e->cuda, c, src->layer0, src->layer1, src->expert0, src->expert1, opts, dispatch,
                              &co);
    /* a layer at a time, then the embedding, each read while the part
     * before it is copied to the GPU, into the host memory of the part
     * before that (the source reuses it: fresh pages are touched for the
     * first two layers only) */
    g1_weights part[2];
    memset(part, 0, sizeof part);
    void *const bufs[2] = {&part[0], &part[1]};
    source_parts sp = {.src = src, .cu = e->cuda};
    if (st == G1_OK)
        st = g1_part_pipe_run(src->layer1 - src->layer0 + (src->with_embedding ? 1 : 0), bufs, source_make,
                              source_use, &sp);
    h = sp.h;
    g1_weights_free(&part[0]);
    g1_weights_free(&part[1]);
    if (st == G1_OK)
        st = g1_cuda_engine_ready(e->cuda);
    if (st != G1_OK) {
        g1_engine_free(e);
        return st;
    }
    if (held)
        *held = h;
    *out = e;
    return G1_OK;
}

/* One scratch buffer of the CPU engine, counted in e->scratch_bytes. */
static void *scratch(g1_engine *e, size_t n)
{
    void *p = zalloc(n);
    if (p)
        e->scratch_bytes += n;
    return p;
}

/* The CPU engine over `w` (borrowed, or e->own): slots and scratch. Frees e
 * on failure. */
static g1_status cpu_start(g1_engine *e, const g1_weights *w, const g1_engine_opts *opts,
                           const g1_moe_dispatch *dispatch, g1_engine **out)
{
    const g1_config *c = &w->cfg;
    e->w = w;
    e->cfg = *c;
    e->opts = *opts;
    if (!e->opts.max_context)
        e->opts.max_context = c->max_seq_len;
    e->dispatch = dispatch ? *dispatch : (g1_moe_dispatch){.run = local_dispatch, .ctx = e};
    e->nL = w->layer1 - w->layer0;
    size_t T = (size_t)opts->max_batch, D = (size_t)c->emb_size, QK = (size_t)c->num_q_heads * c->key_size;
    size_t KV = (size_t)c->num_kv_heads * c->key_size, k = (size_t)c->num_selected_experts;
    size_t F = (size_t)c->ffn_size;
    e->slots = calloc((size_t)opts->n_slots, sizeof *e->slots);
    int ok = e->slots != NULL;
    for (int s = 0; ok && s < opts->n_slots; s++) {
        e->slots[s].k = calloc(e->nL ? (size_t)e->nL : 1, sizeof(float *));
        e->slots[s].v = calloc(e->nL ? (size_t)e->nL : 1, sizeof(float *));
        ok = e->slots[s].k && e->slots[s].v;
    }
    e->scores_stride = (size_t)e->opts.max_context;
    ok = ok && (e->xn = scratch(e, T * D * 4)) && (e->q = scratch(e, T * QK * 4)) &&
         (e->k = scratch(e, T * KV * 4)) && (e->v = scratch(e, T * KV * 4)) && (e->att = scratch(e, T * QK * 4)) &&
         (e->o = scratch(e, T * D * 4)) && (e->idx = scratch(e, T * k * sizeof(int))) &&
         (e->gate = scratch(e, T * k * 4)) && (e->kc = scratch(e, T * sizeof(float *))) &&
         (e->vc = scratch(e, T * sizeof(float *))) &&
         (e->scores = scratch(e, (size_t)g1_cpu_threads() * e->scores_stride * 4)) &&
         (e->tok = scratch(e, T * k * sizeof(int))) && (e->xg = scratch(e, T * k * (D > F ? D : F) * 4)) &&
         (e->h1 = scratch(e, T * k * F * 4)) && (e->h2 = scratch(e, T * k * F * 4)) &&
         (e->yk = scratch(e, T * k * D * 4)) && (e->xk = scratch(e, T * k * D * 4));
    if (!ok) {
        g1_engine_free(e);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for engine buffers (batch %d tokens)", opts->max_batch);
    }
    *out = e;
    return G1_OK;
}

void g1_engine_free(g1_engine *e)
{
    if (!e)
        return;
    g1_cuda_engine_free(e->cuda);
    for (int s = 0; e->slots && s < e->opts.n_slots; s++) {
        for (int l = 0; l < e->nL; l++) {
            if (e->slots[s].k)
                free(e->slots[s].k[l]);
            if (e->slots[s].v)
                free(e->slots[s].v[l]);
        }
        free(e->slots[s].k);
        free(e->slots[s].v);
    }
    free(e->slots);
    free(e->xn); free(e->q); free(e->k); free(e->v); free(e->att); free(e->o);
    free(e->idx); free(e->gate); free(e->kc); free(e->vc); free(e->scores);
    free(e->tok); free(e->xg); free(e->h1); free(e->h2); free(e->yk); free(e->xk);
    for (int i = 0; i < e->n_mem; i++)
        free(e->mem[i]);
    free(e->mem);
    if (e->owns_w)
        g1_weights_free(&e->own);
    free(e);
}

const g1_config *g1_engine_config(const g1_engine *e) { return &e->cfg; }
size_t g1_engine_scratch_bytes(const g1_engine *e) { return e->cuda ? 0 : e->scratch_bytes; }
int g1_engine_slot_len(const g1_engine *e, int slot)
{
    return e->cuda ? g1_cuda_engine_slot_len(e->cuda, slot) : e->slots[slot].len;
}
int g1_engine_kv_short(const g1_engine *e, size_t *need, size_t *free_b)
{
    *need = *free_b = 0;
    return e->cuda ? g1_cuda_engine_kv_short(e->cuda, need, free_b) : 0;
}
int g1_engine_gpu_memory(const g1_engine *e, size_t *weights, size_t *buffers, size_t *free_before)
{
    *weights = *buffers = *free_before = 0;
    return e->cuda ? g1_cuda_engine_memory(e->cuda, weights, buffers, free_before) : 0;
}
int g1_engine_graph_counts(const g1_engine *e, int *made, int *dropped, int *kept)
{
    *made = *dropped = *kept = 0;
    return e->cuda ? g1_cuda_engine_graph_counts(e->cuda, made, dropped, kept) : 0;
}
int g1_engine_cuda_paths(const g1_engine *e, char *buf, size_t n)
{
    if (n)
        buf[0] = 0;
    return e->cuda ? g1_cuda_engine_paths(e->cuda, buf, n) : 0;
}
void g1_engine_reset_slot(g1_engine *e, int slot)
{
    if (e->cuda)
        g1_cuda_engine_reset_slot(e->cuda, slot);
    else
        e->slots[slot].len = 0;
}

/* Make room for `need` positions in a slot's caches (doubling, capped). */
static g1_status slot_reserve(g1_engine *e, g1_slot *s, int need)
{
    if (need <= s->cap)
        return G1_OK;
    int cap = s->cap ? s->cap : 64;
    while (cap < need)
        cap *= 2;
    if (cap > e->opts.max_context)
        cap = e->opts.max_context;
    size_t row = (size_t)e->cfg.num_kv_heads * e->cfg.key_size * sizeof(float);
    for (int l = 0; l < e->nL; l++) {
        float *k = realloc(s->k[l], (size_t)cap * row), *v;
        if (!k)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory for the KV cache (%d positions)", cap);
        s->k[l] = k;
        v = realloc(s->v[l], (size_t)cap * row);
        if (!v)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory for the KV cache (%d positions)", cap);
        s->v[l] = v;
    }
    s->cap = cap;
    return G1_OK;
}

g1_status g1_batch_admit(const g1_batch *b, const g1_engine_opts *o, const g1_slot_ops *ops)
{
    if (b->T < 0 || b->T > o->max_batch)
        return G1_FAIL(G1_ERR_ARG, "batch of %d tokens; the engine was sized for %d", b->T, o->max_batch);
    if (b->n_fork < 0 || (b->n_fork && !b->fork))
        return G1_FAIL(G1_ERR_ARG, "batch with %d forks", b->n_fork);
    for (int i = 0; i < b->n_fork; i++) {
        const g1_fork *f = &b->fork[i];
        if (f->src < 0 || f->src >= o->n_slots || f->dst < 0 || f->dst >= o->n_slots || f->src == f->dst)
            return G1_FAIL(G1_ERR_ARG, "fork %d: slot %d to slot %d (slots 0..%d, two different)", i, f->src, f->dst,
                           o->n_slots - 1);
        int len = ops->len(ops->ctx, f->src);
        if (f->n < 1 || f->n > len)
            return G1_FAIL(G1_ERR_ARG, "fork %d: %d positions of slot %d, which holds %d", i, f->n, f->src, len);
        G1_TRY(ops->fork(ops->ctx, f->src, f->dst, f->n));
    }
    for (int t = 0; t < b->T; t++) {
        int sl = b->slot[t], p = b->pos[t];
        if (sl < 0 || sl >= o->n_slots)
            return G1_FAIL(G1_ERR_ARG, "token %d: slot %d outside 0..%d", t, sl, o->n_slots - 1);
        if (p < 0 || p >= o->max_context)
            return G1_FAIL(G1_ERR_RANGE, "token %d: position %d outside the context of %d", t, p, o->max_context);
        int len = ops->len(ops->ctx, sl);
        if (p > len)
            return G1_FAIL(G1_ERR_ARG, "token %d: position %d leaves a gap after slot %d's %d cached positions", t,
                           p, sl, len);
        G1_TRY(ops->extend(ops->ctx, sl, p + 1)); /* a smaller position rewinds the slot */
    }
    return G1_OK;
}

static int slot_len(void *ctx, int slot) { return ((g1_engine *)ctx)->slots[slot].len; }

static g1_status slot_extend(void *ctx, int slot, int n)
{
    g1_engine *e = ctx;
    G1_TRY(slot_reserve(e, &e->slots[slot], n));
    e->slots[slot].len = n;
    return G1_OK;
}

static g1_status slot_fork(void *ctx, int src, int dst, int n)
{
    g1_engine *e = ctx;
    g1_slot *a = &e->slots[src], *z = &e->slots[dst];
    G1_TRY(slot_reserve(e, z, n));
    size_t bytes = (size_t)n * e->cfg.num_kv_heads * e->cfg.key_size * sizeof(float);
    for (int l = 0; l < e->nL; l++) {
        memcpy(z->k[l], a->k[l], bytes);
        memcpy(z->v[l], a->v[l], bytes);
    }
    z->len = n;
    return G1_OK;
}

static g1_status batch_admit(g1_engine *e, const g1_batch *b)
{
    g1_slot_ops ops = {.ctx = e, .len = slot_len, .extend = slot_extend, .fork = slot_fork};
    return g1_batch_admit(b, &e->opts, &ops);
}

/* x += RMSNorm(y) */
static void add_normed(float *x, float *y, int T, int D, const float *scale, float eps)
{
    g1_cpu_rmsnorm(y, T, D, scale, eps, y);
    for (size_t i = 0; i < (size_t)T * D; i++)
        x[i] += y[i];
}

void g1_route_log_layer(FILE *f, long long n, int layer, int T, const int *slot, const int *pos, int k,
                        const int *idx)
{
    for (int t = 0; t < T; t++) {
        fprintf(f, "F %lld %d %d %d", n, layer, slot[t], pos[t]);
        for (int j = 0; j < k; j++)
            fprintf(f, " %d", idx[(size_t)t * k + j]);
        fputc('\n', f);
    }
}

void g1_engine_set_route_log(g1_engine *e, FILE *f)
{
    if (e->cuda)
        g1_cuda_engine_set_route_log(e->cuda, f);
    e->route_log = f;
}

g1_status g1_engine_forward(g1_engine *e, const g1_batch *b, float *x)
{
    if (e->cuda)
        return g1_cuda_engine_forward(e->cuda, b, x);
    long long n = e->route_n++;
    G1_TRY(batch_admit(e, b));
    const g1_config *c = &e->cfg;
    int T = b->T, D = c->emb_size, K = c->key_size, Hq = c->num_q_heads, Hkv = c->num_kv_heads;
    size_t kvw = (size_t)Hkv * K;
    float eps = (float)c->rms_eps;
    /* T == 0 still walks the layers: a distributed dispatch is collective,
     * so a rank with no tokens in this micro-batch must take part */
    for (int l = 0; l < e->nL; l++) {
        const g1_layer_weights *L = &e->w->layers[l];
        /* attention */
        g1_cpu_rmsnorm(x, T, D, L->norm[G1_ATTN_NORM], eps, e->xn);
        g1_cpu_matmul_q8(e->xn, T, &L->attn[0], e->q);
        g1_cpu_matmul_q8(e->xn, T, &L->attn[1], e->k);
        g1_cpu_matmul_q8(e->xn, T, &L->attn[2], e->v);
        g1_cpu_rope(e->q, T, Hq, K, b->pos, c->rope_base);
        g1_cpu_rope(e->k, T, Hkv, K, b->pos, c->rope_base);
        for (int t = 0; t < T; t++) {
            g1_slot *s = &e->slots[b->slot[t]];
            float *kd = s->k[l] + (size_t)b->pos[t] * kvw, *vd = s->v[l] + (size_t)b->pos[t] * kvw;
            const float *ks = e->k + (size_t)t * kvw, *vs = e->v + (size_t)t * kvw;
            if (e->opts.kv_cache == G1_KV_BF16) {
                /* the values a bf16 cache holds (kept as float32 here) */
                for (size_t i = 0; i < kvw; i++)
                    kd[i] = g1_round_bf16(ks[i]), vd[i] = g1_round_bf16(vs[i]);
            } else {
                memcpy(kd, ks, kvw * sizeof(float));
                memcpy(vd, vs, kvw * sizeof(float));
            }
            e->kc[t] = s->k[l];
            e->vc[t] = s->v[l];
        }
        g1_attn_args aa = {.T = T, .Hq = Hq, .Hkv = Hkv, .K = K, .q = e->q, .kc = e->kc, .vc = e->vc,
                           .pos = b->pos, .mult = (float)c->attn_output_multiplier,
                           .cap = (float)c->attn_logit_cap, .scores = e->scores,
                           .scores_stride = e->scores_stride, .out = e->att};
        g1_cpu_attention(&aa);
        g1_cpu_matmul_q8(e->att, T, &L->attn[3], e->o);
        add_normed(x, e->o, T, D, L->norm[G1_ATTN_OUT_NORM], eps);
        /* mixture of experts */
        g1_cpu_rmsnorm(x, T, D, L->norm[G1_MOE_NORM], eps, e->xn);
        g1_cpu_router(e->xn, T, D, L->router, c->num_experts, c->num_selected_experts, e->idx, e->gate);
        if (e->route_log)
            g1_route_log_layer(e->route_log, n, e->w->layer0 + l, T, b->slot, b->pos, c->num_selected_experts, e->idx);
        if (e->dispatch.run_rows_mem) {
            G1_TRY(e->dispatch.run_rows_mem(e->dispatch.ctx, e->w->layer0 + l, T, e->xn, e->idx, e->yk));
            g1_moe_combine(T, D, c->num_selected_experts, e->gate, e->yk, e->o);
        } else {
            G1_TRY(e->dispatch.run(e->dispatch.ctx, e->w->layer0 + l, T, e->xn, e->idx, e->gate, e->o));
        }
        add_normed(x, e->o, T, D, L->norm[G1_MOE_OUT_NORM], eps);
    }
    return G1_OK;
}

/* ---- memory for messages ---- */

void *g1_host_alloc(g1_backend backend, int device, size_t bytes)
{
    return backend == G1_BACKEND_CUDA ? g1_cuda_host_alloc(device, bytes) : zalloc(bytes);
}

void g1_host_free(g1_backend backend, void *p)
{
    if (backend == G1_BACKEND_CUDA)
        g1_cuda_host_free(p);
    else
        free(p);
}

g1_status g1_engine_mem_alloc(g1_engine *e, size_t bytes, void **p)
{
    *p = NULL;
    if (e->cuda)
        return g1_cuda_engine_mem_alloc(e->cuda, bytes, p);
    void **m = realloc(e->mem, (size_t)(e->n_mem + 1) * sizeof *m);
    if (!m)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    e->mem = m;
    if (!(*p = zalloc(bytes)))
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for %zu bytes of message buffers", bytes);
    e->mem[e->n_mem++] = *p;
    return G1_OK;
}

g1_status g1_engine_forward_mem(g1_engine *e, const g1_batch *b, const float *in, float *out)
{
    if (e->cuda)
        return g1_cuda_engine_forward_mem(e->cuda, b, in, out);
    if (b->T > e->opts.max_batch)
        return G1_FAIL(G1_ERR_ARG, "batch of %d tokens; the engine was sized for %d", b->T, e->opts.max_batch);
    if (out != in && b->T > 0)
        memmove(out, in, (size_t)b->T * e->cfg.emb_size * sizeof(float));
    return g1_engine_forward(e, b, out);
}

g1_status g1_engine_copy_mem(g1_engine *e, void *dst, const void *src, size_t bytes)
{
    if (e->cuda)
        return g1_cuda_engine_copy_mem(e->cuda, dst, src, bytes);
    if (bytes)
        memmove(dst, src, bytes);
    return G1_OK;
}

g1_status g1_engine_gather_mem(g1_engine *e, int n, const float *src, const int *map, float *dst)
{
    if (e->cuda)
        return g1_cuda_engine_gather_mem(e->cuda, n, src, map, dst);
    size_t D = (size_t)e->cfg.emb_size;
    for (int i = 0; i < n; i++)
        memcpy(dst + (size_t)i * D, src + (size_t)map[i] * D, D * sizeof(float));
    return G1_OK;
}

g1_status g1_moe_expert_rows_mem(g1_engine *e, int layer, int n, const float *x, const int *expert, float *y)
{
    if (e->cuda)
        return g1_cuda_moe_expert_rows_mem(e->cuda, layer, n, x, expert, y);
    return g1_moe_expert_rows(e, layer, n, x, expert, y);
}

g1_status g1_engine_embed(g1_engine *e, int T, const int *tokens, float *x)
{
    if (e->cuda)
        return g1_cuda_engine_embed(e->cuda, T, tokens, x);
    const g1_config *c = &e->cfg;
    if (!e->w->embedding)
        return G1_FAIL(G1_ERR_ARG, "this process does not hold the embedding table");
    int D = c->emb_size;
    float mult = (float)c->embedding_multiplier;
    for (int t = 0; t < T; t++) {
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size)
            return G1_FAIL(G1_ERR_RANGE, "token id %d outside the vocabulary (0..%d)", tokens[t], c->vocab_size - 1);
        const uint16_t *row = e->w->embedding + (size_t)tokens[t] * D;
        for (int d = 0; d < D; d++)
            x[(size_t)t * D + d] = g1_bf16_to_f32(row[d]) * mult;
    }
    return G1_OK;
}

g1_status g1_engine_logits(g1_engine *e, int T, const float *x, float *logits)
{
    if (e->cuda)
        return g1_cuda_engine_logits(e->cuda, T, x, logits);
    const g1_config *c = &e->cfg;
    if (!e->w->embedding)
        return G1_FAIL(G1_ERR_ARG, "this process does not hold the embedding table");
    int D = c->emb_size;
    for (int t0 = 0; t0 < T; t0 += e->opts.max_batch) {
        int n = T - t0 < e->opts.max_batch ? T - t0 : e->opts.max_batch;
        g1_cpu_rmsnorm(x + (size_t)t0 * D, n, D, e->w->final_norm, (float)c->rms_eps, e->xn);
        g1_cpu_matmul_bf16_nt(e->xn, n, D, e->w->embedding, c->vocab_size, (float)c->output_multiplier,
                              logits + (size_t)t0 * c->vocab_size);
    }
    return G1_OK;
}

g1_status g1_engine_score_rows(g1_engine *e, int T, const float *x, const int *target, double *lp, int *argmax)
{
    if (e->cuda)
        return g1_cuda_engine_score_rows(e->cuda, T, x, target, lp, argmax);
    int V = e->cfg.vocab_size, n = T < e->opts.max_batch ? T : e->opts.max_batch;
    float *l = malloc((size_t)(n > 0 ? n : 1) * (size_t)V * sizeof *l);
    if (!l)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory for %d rows of logits", n);
    g1_status st = G1_OK;
    for (int t0 = 0; t0 < T && st == G1_OK; t0 += n) {
        int c = T - t0 < n ? T - t0 : n;
        st = g1_engine_logits(e, c, x + (size_t)t0 * e->cfg.emb_size, l);
        for (int t = 0; t < c && st == G1_OK; t++)
            st = g1_row_logprob(l + (size_t)t * V, V, target[t0 + t], &lp[t0 + t], &argmax[t0 + t]);
    }
    free(l);
    return st;
}

int g1_engine_scores_on_device(const g1_engine *e) { return e->cuda != NULL; }
