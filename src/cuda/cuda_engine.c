/* The CUDA engine: uploads one process's weights (int8 + scales, never
 * dequantised up front), keeps a KV cache per slot in device memory and runs
 * the decoder layers with the kernels of cuda_ops.h. Same checks and the
 * same model as src/engine.c; host memory only at the edges (x in and out,
 * the MoE grouping, a distributed dispatch). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch_admit.h"
#include "cuda/cuda_internal.h"

int g1_cuda_built(void) { return 1; }

static char no_device_why[320];

int g1_cuda_device_count(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* clear the sticky "no device" error */
        int rt = 0, drv = 0;
        (void)cudaRuntimeGetVersion(&rt);
        (void)cudaDriverGetVersion(&drv);
        snprintf(no_device_why, sizeof no_device_why, "cudaGetDeviceCount: %s (%s); CUDA runtime %d.%d, driver %s",
                 cudaGetErrorName(e), cudaGetErrorString(e), rt / 1000, rt % 1000 / 10,
                 drv ? "supports CUDA " : "not found");
        if (drv) {
            size_t l = strlen(no_device_why);
            snprintf(no_device_why + l, sizeof no_device_why - l, "%d.%d%s", drv / 1000, drv % 1000 / 10,
                     drv < rt ? ": older than the runtime needs (update the NVIDIA driver)" : "");
        }
        return 0;
    }
    snprintf(no_device_why, sizeof no_device_why, "%s", n ? "" : "cudaGetDeviceCount found no CUDA device");
    return n;
}

const char *g1_cuda_no_device_why(void) { return no_device_why; }

g1_status g1_cuda_device_uuid(int device, unsigned char uuid[16])
{
    struct cudaDeviceProp prop;
    G1_CU(cudaGetDeviceProperties(&prop, device));
    memcpy(uuid, prop.uuid.bytes, 16);
    return G1_OK;
}

#ifndef G1_NVCC_GENCODE
#define G1_NVCC_GENCODE "(unknown)"
#endif

g1_status g1_cuda_device_check(int device)
{
    G1_CU(cudaSetDevice(device));
    cudaError_t ki = g1_cuda_kernel_image();
    if (ki == cudaSuccess)
        return G1_OK;
    (void)cudaGetLastError(); /* not sticky: nothing ran */
    /* a build for other GPUs: no kernel image (older drivers have said
     * invalid device function for it); anything else is the call failing */
    if (ki != cudaErrorNoKernelImageForDevice && ki != cudaErrorInvalidDeviceFunction)
        return G1_FAIL(G1_ERR_CUDA, "%s:%d: cudaFuncGetAttributes of a kernel failed: %s (%s)", __FILE__, __LINE__,
                       cudaGetErrorString(ki), cudaGetErrorName(ki));
    struct cudaDeviceProp prop;
    G1_CU(cudaGetDeviceProperties(&prop, device));
    int cc = prop.major * 10 + prop.minor;
    return G1_FAIL(G1_ERR_CUDA, "GPU %d (%s) is of compute capability %d.%d, but this build's kernels are for %s "
                                "(%s): rebuild with meson setup -Dnvcc_gencode='-gencode=arch=compute_%d,code=sm_%d' "
                                "for this GPU (scripts/gpu-check.sh picks it from nvidia-smi)",
                   device, prop.name, prop.major, prop.minor, G1_NVCC_GENCODE, cudaGetErrorString(ki), cc, cc);
}

/* cudaMalloc, zeroed, owned by the engine. */
static g1_status dalloc(g1_cuda_engine *e, void *out, size_t bytes)
{
    void *p = NULL;
    if (e->n_allocs == e->cap_allocs) {
        int cap = e->cap_allocs ? 2 * e->cap_allocs : 256;
        void **a = realloc(e->allocs, (size_t)cap * sizeof *a);
        if (!a)
            return G1_FAIL(G1_ERR_NOMEM, "out of host memory");
        e->allocs = a;
        e->cap_allocs = cap;
    }
    cudaError_t st = cudaMalloc(&p, bytes ? bytes : 1);
    if (st != cudaSuccess)
        return G1_FAIL(G1_ERR_CUDA, "%s:%d: cudaMalloc of %zu bytes failed: %s (%s): model share too large for "
                                    "this GPU? try more pipeline stages or a smaller --max-batch-tokens",
                       __FILE__, __LINE__, bytes, cudaGetErrorString(st), cudaGetErrorName(st));
    e->allocs[e->n_allocs++] = p;
    G1_CU(cudaMemsetAsync(p, 0, bytes ? bytes : 1, e->stream));
    memcpy(out, &p, sizeof p);
    return G1_OK;
}

static g1_status halloc(void *out, size_t bytes)
{
    void *p = NULL;
    G1_CU(cudaMallocHost(&p, bytes ? bytes : 1));
    memset(p, 0, bytes ? bytes : 1);
    memcpy(out, &p, sizeof p);
    return G1_OK;
}

static g1_status up(g1_cuda_engine *e, void *dst_out, const void *src, size_t bytes)
{
    G1_TRY(dalloc(e, dst_out, bytes));
    void *d;
    memcpy(&d, dst_out, sizeof d);
    /* on the engine's stream, after dalloc's memset (a non-blocking stream
     * does not order against the legacy default stream) */
    G1_CU(cudaMemcpyAsync(d, src, bytes, cudaMemcpyHostToDevice, e->stream));
    G1_CU(cudaStreamSynchronize(e->stream));
    return G1_OK;
}

static g1_status up_qmat(g1_cuda_engine *e, const g1_qmat *m, g1_dqmat *d)
{
    *d = (g1_dqmat){.rows = m->rows, .cols = m->cols, .blocks = m->blocks};
    G1_TRY(up(e, &d->w, m->w, (size_t)m->rows * m->cols));
    G1_TRY(up(e, &d->scale, m->scale, (size_t)m->blocks * m->cols * sizeof(float)));
    return G1_OK;
}

/* A matrix of pseudo-random int8 values with bf16 scales ~ 1/(73.3 sqrt(rows)). */
static g1_status rand_qmat(g1_cuda_engine *e, int rows, int cols, int blocks, uint64_t seed, g1_dqmat *d)
{
    *d = (g1_dqmat){.rows = rows, .cols = cols, .blocks = blocks};
    int8_t *w;
    float *s;
    float sc = 1.0f / (73.3f * sqrtf((float)rows));
    G1_TRY(dalloc(e, &w, (size_t)rows * cols));
    G1_TRY(dalloc(e, &s, (size_t)blocks * cols * sizeof(float)));
    G1_CU(g1_cuda_fill_q8(e->stream, w, (size_t)rows * cols, seed));
    G1_CU(g1_cuda_fill_f32(e->stream, s, (size_t)blocks * cols, seed + 1, 0.75f * sc, 1.25f * sc));
    d->w = w;
    d->scale = s;
    return G1_OK;
}

static g1_status rand_f32(g1_cuda_engine *e, float *x, size_t n, uint64_t seed, float lo, float hi)
{
    G1_CU(g1_cuda_fill_f32(e->stream, x, n, seed, lo, hi));
    return G1_OK;
}

/* What the engine takes of the model and the options, before any GPU. */
static g1_status check_shapes(const g1_config *c, const g1_engine_opts *o)
{
    if (o->n_slots < 1 || o->max_batch < 1)
        return G1_FAIL(G1_ERR_ARG, "engine needs at least one slot and a batch of at least one token");
    if (o->max_context < 0 || o->max_context > c->max_seq_len)
        return G1_FAIL(G1_ERR_ARG, "max_context %d outside 0..max_seq_len (%d)", o->max_context, c->max_seq_len);
    if (c->key_size > 256 || c->key_size % 2 || c->num_q_heads % c->num_kv_heads)
        return G1_FAIL(G1_ERR_ARG, "the CUDA backend needs an even key_size <= 256 (got %d) and kv heads dividing "
                                   "the q heads", c->key_size);
    if (c->num_experts > 256 || c->num_selected_experts > c->num_experts)
        return G1_FAIL(G1_ERR_ARG, "the CUDA backend routes at most 256 experts (got %d, top-%d)", c->num_experts,
                       c->num_selected_experts);
    if (o->cuda_gemm == G1_CUDA_GEMM_F32 && c->emb_size % 8)
        return G1_FAIL(G1_ERR_ARG, "the f32 matmul path needs emb_size a multiple of 8 (got %d)", c->emb_size);
    return G1_OK;
}

static g1_status check_config(const g1_config *c, const g1_engine_opts *o)
{
    G1_TRY(check_shapes(c, o));
    int n = g1_cuda_device_count();
    if (!n && strncmp(g1_cuda_no_device_why(), "cudaGetDeviceCount:", 19) == 0) /* the call failed: its error */
        return G1_FAIL(G1_ERR_CUDA, "%s:%d: CUDA device %d asked for, but %s: is this a GPU node, and is "
                       "CUDA_VISIBLE_DEVICES set right?", __FILE__, __LINE__, o->device, g1_cuda_no_device_why());
    if (o->device < 0 || o->device >= n)
        return G1_FAIL(G1_ERR_CUDA, "CUDA device %d asked for, but %d GPU(s) are visible%s", o->device, n,
                       n ? "" : ": is this a GPU node, and is CUDA_VISIBLE_DEVICES set right?");
    return G1_OK;
}

/* The engine's fixed fields from the model, the share, the options and
 * the GPU's multiprocessors and compute capability (major); no GPU call. */
static void engine_fields(g1_cuda_engine *e, const g1_config *c, int layer0, int nL, int e0, int e1,
                          const g1_engine_opts *opts, const g1_cuda_opts *co, int sms, int cc)
{
    e->cfg = *c;
    e->opts = *opts;
    if (!e->opts.max_context)
        e->opts.max_context = c->max_seq_len;
    e->layer0 = layer0;
    e->nL = nL;
    e->expert0 = e0;
    e->expert1 = e1;
    e->mm.sms = sms;
    e->moe_host_groups = co && co->moe_host_groups;
    e->attn_range_limit = co ? co->attn_range_tokens : 0;
    e->gemm_overlap = !(co && co->gemm_no_overlap);
    e->panel_elems = co && co->panel_elems > 0 ? co->panel_elems : 0;
    size_t V4 = (size_t)(c->vocab_size > 0 ? c->vocab_size : 1) * 4;
    size_t lr = co && co->logits_rows > 0 ? (size_t)co->logits_rows : G1_CUDA_LOGITS_BYTES / V4;
    e->logits_rows = lr > (size_t)opts->max_batch ? opts->max_batch : (int)lr;
    if (e->logits_rows < 1)
        e->logits_rows = 1;
    e->attn_mma = cc >= 8 && !(co && co->attn_no_mma) &&
                  g1_cuda_attn_mma_tile_tokens(c->num_q_heads, c->num_kv_heads, c->key_size) > 0;
    int gm = co && co->gemv_max_tokens ? co->gemv_max_tokens : 16;
    e->mm.gemv_max = gm < 0 ? 0 : gm > 64 ? 64 : gm;
    e->mm.split = opts->cuda_gemm == G1_CUDA_GEMM_BF16X2;
    e->mm.gemv_only = opts->cuda_gemm == G1_CUDA_GEMM_F32;
    if (e->mm.gemv_only && !e->mm.gemv_max)
        e->mm.gemv_max = 16;
    int mx = co && co->mma_max_tokens ? co->mma_max_tokens : 128;
    e->mm.mma_max = cc >= 8 && !e->mm.split && !e->mm.gemv_only && mx > 0 ? mx : 0;
    e->mm.mma_bn = co && co->mma_tile_cols == 128 ? 128 : 64;
    /* The MoE grouped on the device and decode steps in graphs: batches
     * whose matmuls all take the GEMV or the tensor-core kernel (those
     * that take the kernel's shapes, up to mma_max tokens) */
    e->moe_device_max = e->graph_max = INT_MAX;
    for (int id = 0; id < G1_NUM_QMAT; id++) {
        int rows, cols, r;
        g1_qmat_shape(c, (g1_qmat_id)id, &rows, &cols);
        r = g1_cuda_grouped_max_rows(&e->mm, rows, cols);
        if (id >= G1_MOE_GATE && r < e->moe_device_max)
            e->moe_device_max = r;
        if (r < e->graph_max)
            e->graph_max = r;
    }
}

/* Stream, cuBLAS, and the engine's fixed fields; no weights yet. */
static g1_status engine_start(g1_cuda_engine **out, const g1_config *c, int layer0, int nL, int e0, int e1,
                              const g1_engine_opts *opts, const g1_moe_dispatch *dispatch, const g1_cuda_opts *co)
{
    *out = NULL;
    G1_TRY(check_config(c, opts));
    g1_cuda_engine *e = calloc(1, sizeof *e);
    if (!e)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    *out = e;
    e->opts = *opts; /* the device, for g1_cuda_engine_free should a step below fail */
    if (dispatch)
        e->dispatch = *dispatch;
    G1_TRY(g1_cuda_device_check(opts->device));
    G1_CU(cudaStreamCreateWithFlags(&e->stream, cudaStreamNonBlocking));
    G1_CUBLAS(cublasCreate(&e->blas));
    G1_CUBLAS(cublasSetStream(e->blas, e->stream));
    e->mm.stream = e->stream;
    e->mm.blas = e->blas;
    int sms = 0, cc = 0;
    G1_CU(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, opts->device));
    G1_CU(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, opts->device));
    engine_fields(e, c, layer0, nL, e0, e1, opts, co, sms, cc);
    if (!(co && co->no_graphs) && e->graph_max > 0) {
        size_t n = (size_t)(e->graph_max + 1) * (e->graph_max + 1);
        e->graphs = calloc(n, sizeof *e->graphs);
        e->graph_used = calloc(n, sizeof *e->graph_used);
        if (!e->graphs || !e->graph_used)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory");
        e->graphs_kept = co && co->max_graphs > 0 ? co->max_graphs : G1_CUDA_GRAPHS_KEPT;
    }
    e->layers = calloc(nL ? (size_t)nL : 1, sizeof *e->layers);
    int El = e1 - e0;
    e->mats = calloc((size_t)(nL ? nL : 1) * 3 * (El ? (size_t)El : 1), sizeof *e->mats);
    e->slots = calloc((size_t)opts->n_slots, sizeof *e->slots);
    if (!e->layers || !e->mats || !e->slots)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    for (int l = 0; l < nL; l++)
        for (int m = 0; m < 3; m++)
            e->layers[l].moe[m] = e->mats + ((size_t)l * 3 + m) * El;
    return G1_OK;
}


static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

/* Bytes of the token table per token: k0, v0, lstride, pos, a tile pair. */
enum { TAB_BYTES = 8 + 8 + 8 + 4 + 8 };

/* Scratch for max_batch tokens, once the weights are in place; with
 * `count`, nothing is allocated: the device bytes it would take (exactly,
 * as dalloc asks cudaMalloc for them) are added to *count, as for an
 * engine that will hold the embedding when `emb`. */
static g1_status engine_scratch(g1_cuda_engine *e, int emb, size_t *count)
{
#define DALLOC(p, n)                                                                                     \
    do {                                                                                                 \
        size_t n_ = (n);                                                                                 \
        if (count)                                                                                       \
            *count += n_ ? n_ : 1;                                                                       \
        else                                                                                             \
            G1_TRY(dalloc(e, (p), n_));                                                                  \
    } while (0)
    const g1_config *c = &e->cfg;
    size_t T = (size_t)e->opts.max_batch, D = (size_t)c->emb_size, K = (size_t)c->key_size;
    size_t QK = (size_t)c->num_q_heads * K, KV = (size_t)c->num_kv_heads * K, k = (size_t)c->num_selected_experts;
    size_t F = (size_t)c->ffn_size, R = T * k, V = (size_t)c->vocab_size, L = (size_t)e->logits_rows;
    size_t pn = 0, wn = 0, xn = 0;
    int panels = 0; /* some matrix takes two or more panels */
    for (int id = 0; id < G1_NUM_QMAT; id++) {
        int rows, cols;
        g1_qmat_shape(c, (g1_qmat_id)id, &rows, &cols);
        size_t p, w, x;
        g1_cuda_mm_sizes(&e->mm, id >= G1_MOE_GATE ? (int)R : (int)T, rows, cols, &p, &w, &x);
        if (e->panel_elems && w > (size_t)e->panel_elems)
            w = (size_t)e->panel_elems;
        pn = zmax(pn, p);
        wn = zmax(wn, w);
        xn = zmax(xn, x);
        panels |= w && (size_t)rows * cols > w;
    }
    /* the MoE grouped on the device: up to moe_device_max tokens, k rows
     * each, a group at most one row a token */
    int Tg = e->moe_device_max < e->opts.max_batch ? e->moe_device_max : e->opts.max_batch;
    for (int id = G1_MOE_GATE; id <= G1_MOE_DOWN; id++) {
        int rows, cols;
        g1_qmat_shape(c, (g1_qmat_id)id, &rows, &cols);
        pn = zmax(pn, g1_cuda_grouped_partial_n(&e->mm, Tg * (int)k, Tg, rows, cols));
    }
    if (emb && !e->mm.gemv_only)
        xn = zmax(xn, L * D * (e->mm.split ? 2 : 1)); /* the un-embedding's */
    e->mm.partial_n = pn;
    e->mm.wbf_n = wn;
    e->mm.xbf_n = xn;
    /* attention splits from the context alone; batches bigger than the
     * partial sums' 256 MB run in ranges of tokens */
    g1_cuda_attn_layout al = g1_cuda_attn_layout_for(e->opts.max_context, (int)T, c->num_q_heads, (int)K, 0,
                                                     e->attn_range_limit);
    e->max_splits = al.max_splits;
    e->attn_chunk = al.chunk;
    e->attn_range = al.range_tokens;
    size_t per = (size_t)e->attn_range * c->num_q_heads * (K + 2);
    DALLOC(&e->mm.partial, pn * sizeof(float));
    DALLOC(&e->mm.wbf, wn * 2);
    if (panels && e->gemm_overlap && !e->mm.gemv_only) {
        /* the next panel dequantised while cuBLAS multiplies the last */
        DALLOC(&e->mm.wbf2, wn * 2);
        if (!count)
            G1_TRY(g1_cuda_mm_overlap_init(&e->mm));
    }
    DALLOC(&e->mm.xbf, xn * 2);
    DALLOC(&e->tab, T * TAB_BYTES);
    DALLOC(&e->x, T * D * 4);
    DALLOC(&e->xn, T * D * 4);
    DALLOC(&e->q, T * QK * 4);
    DALLOC(&e->att, T * QK * 4);
    DALLOC(&e->k, T * KV * 4);
    DALLOC(&e->v, T * KV * 4);
    DALLOC(&e->o, T * D * 4);
    DALLOC(&e->part, per * (size_t)e->max_splits * 4);
    DALLOC(&e->idx, R * sizeof(int));
    DALLOC(&e->gate, R * 4);
    DALLOC(&e->rows, 2 * R * sizeof(int));
    int El = e->expert1 - e->expert0;
    DALLOC(&e->grp, (3 * (size_t)El + 1) * sizeof(int));
    size_t mats = (size_t)(e->nL ? e->nL : 1) * 3 * El * sizeof(g1_dqmat);
    if (count)
        *count += mats;
    else
        G1_TRY(up(e, &e->mats_d, e->mats, mats));
    DALLOC(&e->tok, T * sizeof(int));
    DALLOC(&e->xg, R * D * 4);
    DALLOC(&e->yg, R * D * 4);
    DALLOC(&e->xr, R * D * 4);
    DALLOC(&e->h1, R * F * 4);
    DALLOC(&e->h2, R * F * 4);
    if (emb) {
        DALLOC(&e->logits, L * V * 4);
        DALLOC(&e->target, L * sizeof(int));
        DALLOC(&e->score, L * sizeof(g1_row_score));
    }
    if (count)
        return G1_OK; /* the rest is host memory */
    if (emb)
        G1_TRY(halloc(&e->score_h, L * sizeof(g1_row_score)));
    G1_TRY(halloc(&e->tab_h, T * TAB_BYTES));
    e->ranges = calloc((T + (size_t)e->attn_range - 1) / (size_t)e->attn_range, sizeof *e->ranges);
    if (!e->ranges)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    G1_TRY(halloc(&e->idx_h, R * sizeof(int)));
    G1_TRY(halloc(&e->rows_h, 2 * R * sizeof(int)));
    G1_TRY(halloc(&e->gate_h, R * 4));
    G1_TRY(halloc(&e->xh, R * D * 4));
    G1_TRY(halloc(&e->yh, R * D * 4));
    G1_CU(cudaStreamSynchronize(e->stream));
    return G1_OK;
#undef DALLOC
}

g1_status g1_cuda_engine_begin(g1_cuda_engine **out, const g1_config *c, int l0, int l1, int e0, int e1,
                               const g1_engine_opts *opts, const g1_moe_dispatch *dispatch, const g1_cuda_opts *co)
{
    *out = NULL;
    if (l0 < 0 || l1 > c->num_layers || l0 > l1 || e0 < 0 || e1 > c->num_experts || e0 >= e1)
        return G1_FAIL(G1_ERR_ARG, "layers [%d,%d) or experts [%d,%d) outside the model's %d layers and %d experts",
                       l0, l1, e0, e1, c->num_layers, c->num_experts);
    if (!dispatch && (e0 != 0 || e1 != c->num_experts))
        return G1_FAIL(G1_ERR_ARG, "local MoE needs all %d experts, but only %d..%d are held", c->num_experts, e0,
                       e1 - 1);
    g1_cuda_engine *e;
    g1_status st = engine_start(&e, c, l0, l1 - l0, e0, e1, opts, dispatch, co);
    if (st != G1_OK) {
        g1_cuda_engine_free(e);
        return st;
    }
    *out = e;
    return G1_OK;
}

g1_status g1_cuda_engine_upload(g1_cuda_engine *e, const g1_weights *w)
{
    const g1_config *c = &e->cfg;
    size_t D = (size_t)c->emb_size;
    int El = e->expert1 - e->expert0;
    G1_CU(cudaSetDevice(e->opts.device)); /* whatever thread calls: the copies go to this engine's GPU */
    if (w->layer0 < e->layer0 || w->layer1 > e->layer0 + e->nL || w->expert0 != e->expert0 ||
        w->expert1 != e->expert1)
        return G1_FAIL(G1_ERR_ARG, "weights of layers [%d,%d), experts [%d,%d) uploaded to an engine of layers "
                                   "[%d,%d), experts [%d,%d)", w->layer0, w->layer1, w->expert0, w->expert1,
                       e->layer0, e->layer0 + e->nL, e->expert0, e->expert1);
    for (int l = 0; l < w->layer1 - w->layer0; l++) {
        const g1_layer_weights *L = &w->layers[l];
        g1_cuda_layer *G = &e->layers[w->layer0 - e->layer0 + l];
        for (int n = 0; n < G1_NUM_NORM; n++)
            G1_TRY(up(e, &G->norm[n], L->norm[n], D * sizeof(float)));
        for (int m = 0; m < 4; m++)
            G1_TRY(up_qmat(e, &L->attn[m], &G->attn[m]));
        G1_TRY(up(e, &G->router, L->router, D * (size_t)c->num_experts * sizeof(float)));
        for (int m = 0; m < 3; m++)
            for (int x = 0; x < El; x++)
                G1_TRY(up_qmat(e, &L->moe[m][x], &G->moe[m][x]));
    }
    if (w->embedding)
        G1_TRY(up(e, &e->embedding, w->embedding, (size_t)c->vocab_size * D * 2));
    if (w->final_norm)
        G1_TRY(up(e, &e->final_norm, w->final_norm, D * sizeof(float)));
    return G1_OK;
}

g1_status g1_cuda_engine_ready(g1_cuda_engine *e)
{
    G1_CU(cudaSetDevice(e->opts.device));
    for (int l = 0; l < e->nL; l++)
        if (!e->layers[l].router)
            return G1_FAIL(G1_ERR_ARG, "layer %d was never uploaded to the CUDA engine", e->layer0 + l);
    return engine_scratch(e, e->embedding != NULL, NULL);
}

/* Device bytes of one layer of `w` as upload allocates them. */
static size_t layer_device_bytes(const g1_cuda_engine *e, const g1_layer_weights *L)
{
    const g1_config *c = &e->cfg;
    size_t D = (size_t)c->emb_size, b = G1_NUM_NORM * D * 4 + D * (size_t)c->num_experts * 4;
    for (int m = 0; m < 4; m++)
        b += (size_t)L->attn[m].rows * L->attn[m].cols + (size_t)L->attn[m].blocks * L->attn[m].cols * 4;
    for (int m = 0; m < 3; m++)
        for (int x = 0; x < e->expert1 - e->expert0; x++) {
            const g1_qmat *q = &L->moe[m][x];
            b += (size_t)q->rows * q->cols + (size_t)q->blocks * q->cols * 4;
        }
    return b;
}

g1_status g1_cuda_engine_check_room(g1_cuda_engine *e, const g1_weights *w, int with_embedding)
{
    const g1_config *c = &e->cfg;
    G1_CU(cudaSetDevice(e->opts.device));
    size_t weights = 0, buffers = 0, fr = 0, total = 0;
    if (w->layer1 > w->layer0) /* every layer has the first one's shapes and blocks */
        weights = (size_t)e->nL * layer_device_bytes(e, &w->layers[0]);
    else if (e->nL)
        return G1_FAIL(G1_ERR_ARG, "the room for the weights is judged from a part with a layer");
    if (with_embedding)
        weights += (size_t)c->vocab_size * c->emb_size * 2 + (size_t)c->emb_size * 4;
    G1_TRY(engine_scratch(e, with_embedding, &buffers));
    G1_CU(cudaMemGetInfo(&fr, &total));
    e->room_weights = weights;
    e->room_buffers = buffers;
    e->room_free = fr;
    size_t later = e->opts.mem_after_load;
    if (weights + buffers + later <= fr)
        return G1_OK;
    char wt[32], bt[32], ft[32], tt[32], lt[32], ls[96] = "";
    if (later)
        snprintf(ls, sizeof ls, " and the MPI message buffers in GPU memory (--gpu-direct) %s",
                 g1_bytes_text(lt, sizeof lt, (double)later));
    return G1_FAIL(G1_ERR_CUDA, "GPU %d is too small for this rank's share: its weights (%d layer(s) [%d,%d), "
                                "experts %d-%d%s) need %s, the engine's buffers for %d tokens a step %s%s, but %s "
                                "of the GPU's %s are free (checked before loading the weights): use more pipeline "
                                "stages, a larger expert-parallel width (--ep), or fewer tokens a step "
                                "(--max-batch-tokens)%s",
                   e->opts.device, e->nL, e->layer0, e->layer0 + e->nL, e->expert0, e->expert1 - 1,
                   with_embedding ? ", the embedding" : "", g1_bytes_text(wt, sizeof wt, (double)weights),
                   e->opts.max_batch, g1_bytes_text(bt, sizeof bt, (double)buffers), ls,
                   g1_bytes_text(ft, sizeof ft, (double)fr), g1_bytes_text(tt, sizeof tt, (double)total),
                   later ? "; or stage the messages through host memory (--gpu-direct off)" : "");
}

int g1_cuda_engine_memory(const g1_cuda_engine *e, size_t *weights, size_t *buffers, size_t *free_before)
{
    *weights = e->room_weights;
    *buffers = e->room_buffers;
    *free_before = e->room_free;
    return e->room_weights + e->room_buffers > 0;
}

g1_status g1_cuda_engine_buffer_bytes(const g1_config *c, int nL, int experts, const g1_engine_opts *opts, int sms,
                                      int cc, int with_embedding, size_t *bytes)
{
    *bytes = 0;
    G1_TRY(check_shapes(c, opts));
    if (nL < 0 || nL > c->num_layers || experts < 1 || experts > c->num_experts || sms < 1)
        return G1_FAIL(G1_ERR_ARG, "CUDA buffers of %d layer(s) and %d expert(s) on a GPU of %d multiprocessors: "
                                   "outside the model's %d layers and %d experts, or no multiprocessor",
                       nL, experts, sms, c->num_layers, c->num_experts);
    g1_cuda_engine *e = calloc(1, sizeof *e);
    if (!e)
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    engine_fields(e, c, 0, nL, 0, experts, opts, &opts->cuda_tune, sms, cc);
    g1_status st = engine_scratch(e, with_embedding, bytes);
    free(e);
    return st;
}

g1_status g1_cuda_engine_init(g1_cuda_engine **out, const g1_weights *w, const g1_engine_opts *opts,
                              const g1_moe_dispatch *dispatch, const g1_cuda_opts *co)
{
    g1_cuda_engine *e;
    G1_TRY(g1_cuda_engine_begin(&e, &w->cfg, w->layer0, w->layer1, w->expert0, w->expert1, opts, dispatch, co));
    g1_status st = g1_cuda_engine_check_room(e, w, w->embedding != NULL);
    if (st == G1_OK)
        st = g1_cuda_engine_upload(e, w);
    if (st == G1_OK)
        st = g1_cuda_engine_ready(e);
    if (st != G1_OK) {
        g1_cuda_engine_free(e);
        return st;
    }
    *out = e;
    return G1_OK;
}

g1_status g1_cuda_engine_init_random(g1_cuda_engine **out, const g1_config *cfg, int nL, const g1_engine_opts *opts,
                                     const g1_cuda_opts *co, uint64_t seed)
{
    g1_cuda_engine *e;
    g1_status st = engine_start(&e, cfg, 0, nL, 0, cfg->num_experts, opts, NULL, co);
    size_t D = (size_t)cfg->emb_size;
    int blocks[G1_NUM_QMAT];
    for (int id = 0; id < G1_NUM_QMAT; id++) {
        int rows, cols;
        g1_qmat_shape(cfg, (g1_qmat_id)id, &rows, &cols);
        blocks[id] = g1_config_default_blocks(cfg, rows, id == G1_ATTN_O || id == G1_MOE_DOWN ? 8 : 1);
    }
    for (int l = 0; st == G1_OK && l < nL; l++) {
        g1_cuda_layer *G = &e->layers[l];
        uint64_t s = seed * 1000003u + (uint64_t)l * 4096u;
        for (int n = 0; st == G1_OK && n < G1_NUM_NORM; n++) {
            st = dalloc(e, &G->norm[n], D * sizeof(float));
            if (st == G1_OK)
                st = rand_f32(e, G->norm[n], D, s + 10 + (uint64_t)n, 0.5f, 1.5f);
        }
        for (int m = 0; st == G1_OK && m < 4; m++) {
            int rows, cols;
            g1_qmat_shape(cfg, (g1_qmat_id)m, &rows, &cols);
            st = rand_qmat(e, rows, cols, blocks[m], s + 20 + 2 * (uint64_t)m, &G->attn[m]);
        }
        if (st == G1_OK)
            st = dalloc(e, &G->router, D * (size_t)cfg->num_experts * sizeof(float));
        if (st == G1_OK)
            st = rand_f32(e, G->router, D * (size_t)cfg->num_experts, s + 30, -0.05f, 0.05f);
        for (int m = 0; m < 3; m++) {
            int rows, cols;
            g1_qmat_shape(cfg, (g1_qmat_id)(G1_MOE_GATE + m), &rows, &cols);
            for (int x = 0; st == G1_OK && x < cfg->num_experts; x++)
                st = rand_qmat(e, rows, cols, blocks[G1_MOE_GATE + m], s + 100 + 16 * (uint64_t)m + 2 * (uint64_t)x,
                               &G->moe[m][x]);
        }
    }
    if (st == G1_OK)
        st = engine_scratch(e, 0, NULL);
    if (st != G1_OK) {
        g1_cuda_engine_free(e);
        return st;
    }
    *out = e;
    return G1_OK;
}

/* The decode graphs (forward_graph), and the table of them. */
static void graphs_free(g1_cuda_engine *e)
{
    for (int i = 0; e->graphs && i < (e->graph_max + 1) * (e->graph_max + 1); i++)
        if (e->graphs[i])
            cudaGraphExecDestroy(e->graphs[i]);
    free(e->graphs);
    free(e->graph_used);
    e->graphs = NULL;
    e->graph_used = NULL;
    e->graphs_live = 0;
}

/* Room for one more graph: the least recently replayed one destroyed when
 * graphs_kept are held. A graph in flight on the stream may be destroyed:
 * the launch already made keeps what it needs until it completes. */
static void graphs_make_room(g1_cuda_engine *e)
{
    if (e->graphs_live < e->graphs_kept)
        return;
    size_t n = (size_t)(e->graph_max + 1) * (e->graph_max + 1), old = n;
    for (size_t i = 0; i < n; i++)
        if (e->graphs[i] && (old == n || e->graph_used[i] < e->graph_used[old]))
            old = i;
    if (old == n)
        return;
    cudaGraphExecDestroy(e->graphs[old]);
    e->graphs[old] = NULL;
    e->graphs_live--;
    e->n_graphs_dropped++;
}

void g1_cuda_engine_free(g1_cuda_engine *e)
{
    if (!e)
        return;
    cudaSetDevice(e->opts.device);
    if (e->stream)
        cudaStreamSynchronize(e->stream);
    g1_cuda_mm_overlap_free(&e->mm);
    graphs_free(e);
    for (int i = 0; i < e->n_allocs; i++)
        cudaFree(e->allocs[i]);
    for (int s = 0; e->slots && s < e->opts.n_slots; s++) {
        cudaFree(e->slots[s].k);
        cudaFree(e->slots[s].v);
    }
    void *pinned[] = {e->tab_h, e->idx_h, e->rows_h, e->gate_h, e->xh, e->yh, e->score_h};
    for (size_t i = 0; i < sizeof pinned / sizeof pinned[0]; i++)
        if (pinned[i])
            cudaFreeHost(pinned[i]);
    if (e->blas)
        cublasDestroy(e->blas);
    if (e->stream)
        cudaStreamDestroy(e->stream);
    free(e->allocs);
    free(e->layers);
    free(e->mats);
    free(e->slots);
    free(e->ranges);
    free(e);
}

/* This engine holds the embedding and the final norm; its GPU current. */
static g1_status unembed_ready(g1_cuda_engine *e)
{
    if (!e->embedding || !e->final_norm)
        return G1_FAIL(G1_ERR_ARG, "this process does not hold the embedding table");
    G1_CU(cudaSetDevice(e->opts.device));
    return G1_OK;
}

/* e->logits (n, V) of n host rows x (n <= logits_rows): up, the final norm,
 * the un-embedding, queued on the stream. */
static g1_status logits_queued(g1_cuda_engine *e, int n, const float *x)
{
    const g1_config *c = &e->cfg;
    size_t D = (size_t)c->emb_size;
    G1_CU(cudaMemcpyAsync(e->x, x, (size_t)n * D * 4, cudaMemcpyHostToDevice, e->stream));
    G1_CU(g1_cuda_rmsnorm(e->stream, e->x, n, (int)D, e->final_norm, (float)c->rms_eps, e->xn));
    return g1_cuda_unembed(&e->mm, e->xn, n, (int)D, e->embedding, c->vocab_size, (float)c->output_multiplier,
                           e->logits);
}

/* T rows un-embed in logits_chunks(e, T) chunks, chunk i rows [T*i/k, T*(i+1)/k):
 * as few as logits_rows allow, of equal sizes within one, so that when T is
 * over logits_rows every chunk holds more than half of them (512 of Grok-1:
 * over the 16 rows of the float32 kernel, on cuBLAS as the whole T would be). */
static int logits_chunks(const g1_cuda_engine *e, int T)
{
    return (int)(((long long)T + e->logits_rows - 1) / e->logits_rows);
}
static int chunk_row(int T, int i, int k) { return (int)((long long)T * i / k); }

g1_status g1_cuda_engine_score_rows(g1_cuda_engine *e, int T, const float *x, const int *target, double *lp,
                                    int *argmax)
{
    const g1_config *c = &e->cfg;
    G1_TRY(unembed_ready(e));
    size_t D = (size_t)c->emb_size, V = (size_t)c->vocab_size;
    for (int i = 0, k = logits_chunks(e, T); i < k; i++) {
        int t0 = chunk_row(T, i, k), n = chunk_row(T, i + 1, k) - t0;
        G1_CU(cudaMemcpyAsync(e->target, target + t0, (size_t)n * sizeof(int), cudaMemcpyHostToDevice, e->stream));
        G1_TRY(logits_queued(e, n, x + (size_t)t0 * D));
        G1_CU(g1_cuda_score_rows(e->stream, e->logits, n, (int)V, e->target, e->score));
        G1_CU(cudaMemcpyAsync(e->score_h, e->score, (size_t)n * sizeof(g1_row_score), cudaMemcpyDeviceToHost,
                              e->stream));
        G1_CU(cudaStreamSynchronize(e->stream));
        for (int t = 0; t < n; t++) { /* the host's verdicts (g1_logits_max) */
            const g1_row_score *r = &e->score_h[t];
            if (r->bad >= 0)
                return G1_FAIL(G1_ERR_RANGE, "logit %d is %g: the model produced a NaN or infinity", r->bad,
                               (double)r->bad_value);
            if (r->argmax < 0)
                return G1_FAIL(G1_ERR_RANGE, "every logit is -inf: nothing can be sampled or scored");
            lp[t0 + t] = r->lp;
            argmax[t0 + t] = r->argmax;
        }
    }
    return G1_OK;
}

int g1_cuda_engine_slot_len(const g1_cuda_engine *e, int slot) { return e->slots[slot].len; }
void g1_cuda_engine_reset_slot(g1_cuda_engine *e, int slot) { e->slots[slot].len = 0; }

/* Bytes of one cache element. */
static size_t kv_elem(const g1_cuda_engine *e) { return e->opts.kv_cache == G1_KV_BF16 ? 2 : 4; }

int g1_cuda_engine_paths(const g1_cuda_engine *e, char *buf, size_t n)
{
    const g1_cuda_mm *mm = &e->mm;
    size_t at = 0;
#define PUT(...) (at += (size_t)snprintf(buf + (at < n ? at : n), at < n ? n - at : 0, __VA_ARGS__))
    if (n)
        buf[0] = 0;
    int fit = 0; /* matrices the tensor-core kernel takes, above the GEMV's rows */
    for (int id = 0; id < G1_NUM_QMAT; id++) {
        int rows, cols;
        g1_qmat_shape(&e->cfg, (g1_qmat_id)id, &rows, &cols);
        fit += g1_cuda_grouped_max_rows(mm, rows, cols) > mm->gemv_max;
    }
    if (mm->gemv_only)
        PUT("every matmul on the int8 GEMV, %d rows at a time (--cuda-gemm f32)", mm->gemv_max);
    else {
        int lo = mm->gemv_max;
        if (lo)
            PUT("matmuls of 1-%d rows on the int8 GEMV, ", lo);
        if (fit && mm->mma_max > lo) {
            PUT("%d-%d on the int8 tensor cores (%d-column blocks", lo + 1, mm->mma_max, mm->mma_bn == 128 ? 128 : 64);
            if (fit < G1_NUM_QMAT)
                PUT("; %d of the %d matrix kinds, the rest on cuBLAS", fit, (int)G1_NUM_QMAT);
            PUT("), ");
            lo = mm->mma_max;
        }
        double kib = (double)mm->wbf_n * 2 / 1024;
        PUT("%s on cuBLAS (%s, dequantised panels of up to %.4g %s%s)", lo ? "more" : "every matmul",
            mm->split ? "bf16 hi + lo, two GEMMs" : "bf16", kib < 1024 ? kib : kib / 1024, kib < 1024 ? "KiB" : "MiB",
            mm->wbf2 ? ", the next dequantised during the GEMM" : "");
    }
    if (e->dispatch.run)
        PUT("; MoE rows from the expert-parallel dispatch, grouped on the host");
    else if (e->moe_host_groups || e->moe_device_max <= 0)
        PUT("; MoE rows grouped on the host");
    else
        PUT("; MoE rows grouped on the device up to %d tokens, on the host above", e->moe_device_max);
    PUT("; prompt attention %s", e->attn_mma && !mm->split && !mm->gemv_only ? "on the tensor cores (TF32)"
                                                                             : "in float32");
    if (!e->graphs)
        PUT("; no CUDA graphs");
    else if (e->dispatch.run || e->moe_host_groups) /* graph_fits */
        PUT("; no CUDA graphs (a MoE grouped on the host waits for the host)");
    else
        PUT("; decode steps up to %d tokens in CUDA graphs", e->graph_max);
    if (e->embedding)
        PUT("; logits %d rows at a time", e->logits_rows);
#undef PUT
    return 1;
}

int g1_cuda_engine_graph_counts(const g1_cuda_engine *e, int *made, int *dropped, int *kept)
{
    int on = e->graphs != NULL;
    *made = on ? e->n_graphs : 0;
    *dropped = on ? e->n_graphs_dropped : 0;
    *kept = on ? e->graphs_kept : 0;
    return on;
}

int g1_cuda_engine_kv_short(const g1_cuda_engine *e, size_t *need, size_t *free_b)
{
    size_t fr = 0, total = 0;
    *need = *free_b = 0;
    if (cudaSetDevice(e->opts.device) != cudaSuccess || cudaMemGetInfo(&fr, &total) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    size_t row = (size_t)e->cfg.num_kv_heads * e->cfg.key_size * kv_elem(e);
    size_t per = 2 * (size_t)(e->nL ? e->nL : 1) * (size_t)e->opts.max_context * row; /* k and v, one slot */
    size_t held = 0;
    for (int s = 0; s < e->opts.n_slots; s++)
        held += 2 * (size_t)(e->nL ? e->nL : 1) * (size_t)e->slots[s].cap * row;
    size_t want = per * (size_t)e->opts.n_slots + per / 2;
    want = want > held ? want - held : 0;
    size_t margin = (size_t)256 << 20; /* cuBLAS workspaces, allocator rounding */
    /* the MPI buffers of --gpu-direct are taken when the run starts */
    fr = fr > e->opts.mem_after_load ? fr - e->opts.mem_after_load : 0;
    *need = want;
    *free_b = fr;
    return want + margin > fr;
}

/* A slot's cached rows (every layer) into caches kv of cap positions, done
 * when it returns. */
static g1_status slot_copy(g1_cuda_engine *e, const g1_cuda_slot *s, void *kv[2], int cap, size_t row)
{
    void *old[2] = {s->k, s->v};
    for (int i = 0; i < 2; i++)
        if (old[i] && s->len && e->nL)
            G1_CU(cudaMemcpy2DAsync(kv[i], (size_t)cap * row, old[i], (size_t)s->cap * row, (size_t)s->len * row,
                                    (size_t)e->nL, cudaMemcpyDeviceToDevice, e->stream));
    G1_CU(cudaStreamSynchronize(e->stream));
    return G1_OK;
}

/* Room for `need` positions in a slot's caches (doubling, capped): a new
 * allocation, the cached rows of every layer copied over. */
static g1_status slot_reserve(g1_cuda_engine *e, g1_cuda_slot *s, int need)
{
    if (need <= s->cap)
        return G1_OK;
    int cap = s->cap ? s->cap : 64;
    while (cap < need)
        cap *= 2;
    if (cap > e->opts.max_context)
        cap = e->opts.max_context;
    size_t row = (size_t)e->cfg.num_kv_heads * e->cfg.key_size * kv_elem(e);
    size_t bytes = (size_t)(e->nL ? e->nL : 1) * (size_t)cap * row;
    void *kv[2] = {NULL, NULL}, *old[2] = {s->k, s->v};
    for (int i = 0; i < 2; i++) {
        cudaError_t st = cudaMalloc(&kv[i], bytes);
        if (st != cudaSuccess) {
            cudaFree(kv[0]);
            return G1_FAIL(G1_ERR_CUDA, "%s:%d: no GPU memory for the KV cache of %d positions (%zu bytes): %s (%s); "
                                        "the caches of all sequence slots outgrew the GPU: resume with fewer slots "
                                        "(--batch-size, --micro-batches) or more pipeline stages",
                           __FILE__, __LINE__, cap, bytes, cudaGetErrorString(st), cudaGetErrorName(st));
        }
    }
    /* the rows cached so far into the new caches; on a failure the new
     * ones freed (cudaFree waits for the copies queued into them) and the
     * slot left as it was */
    g1_status st = slot_copy(e, s, kv, cap, row);
    if (st != G1_OK) {
        cudaFree(kv[0]);
        cudaFree(kv[1]);
        return st;
    }
    cudaFree(old[0]);
    cudaFree(old[1]);
    s->k = kv[0];
    s->v = kv[1];
    s->cap = cap;
    return G1_OK;
}

static int slot_len(void *ctx, int slot) { return ((g1_cuda_engine *)ctx)->slots[slot].len; }

static g1_status slot_extend(void *ctx, int slot, int n)
{
    g1_cuda_engine *e = ctx;
    G1_TRY(slot_reserve(e, &e->slots[slot], n));
    e->slots[slot].len = n;
    return G1_OK;
}

static g1_status slot_fork(void *ctx, int src, int dst, int n)
{
    g1_cuda_engine *e = ctx;
    g1_cuda_slot *a = &e->slots[src], *z = &e->slots[dst];
    G1_TRY(slot_reserve(e, z, n));
    size_t row = (size_t)e->cfg.num_kv_heads * e->cfg.key_size * kv_elem(e);
    if (e->nL) {
        G1_CU(cudaMemcpy2DAsync(z->k, (size_t)z->cap * row, a->k, (size_t)a->cap * row, (size_t)n * row,
                                (size_t)e->nL, cudaMemcpyDeviceToDevice, e->stream));
        G1_CU(cudaMemcpy2DAsync(z->v, (size_t)z->cap * row, a->v, (size_t)a->cap * row, (size_t)n * row,
                                (size_t)e->nL, cudaMemcpyDeviceToDevice, e->stream));
    }
    z->len = n;
    return G1_OK;
}

/* The shared admission rule (batch_admit.h), then the batch's token table
 * (cache pointers, layer stride, positions) up to the device. */
static g1_status batch_admit(g1_cuda_engine *e, const g1_batch *b)
{
    g1_slot_ops ops = {.ctx = e, .len = slot_len, .extend = slot_extend, .fork = slot_fork};
    G1_TRY(g1_batch_admit(b, &e->opts, &ops));
    size_t T = (size_t)e->opts.max_batch, kvw = (size_t)e->cfg.num_kv_heads * e->cfg.key_size;
    void **k0 = e->tab_h, **v0 = k0 + T;
    long long *ls = (long long *)(v0 + T);
    int *pos = (int *)(ls + T);
    int *tiles = pos + T;
    for (int t = 0; t < b->T; t++) {
        g1_cuda_slot *s = &e->slots[b->slot[t]];
        k0[t] = s->k;
        v0[t] = s->v;
        ls[t] = (long long)s->cap * (long long)kvw;
        pos[t] = b->pos[t];
    }
    /* attention tiles: runs of tokens of one slot. Prompt-sized runs go to
     * the tensor cores when the matmuls take bf16 inputs too (cuBLAS, the
     * default precision): decode steps and the f32 and bf16x2 paths keep
     * the float32 kernel. */
    int mma = e->attn_mma && !e->mm.split && !e->mm.gemv_only && b->T > e->mm.gemv_max;
    e->n_ranges = g1_cuda_attn_plan(b->slot, b->T, e->cfg.num_q_heads, e->cfg.num_kv_heads, e->cfg.key_size, mma,
                                    e->attn_range, tiles, e->ranges);
    G1_CU(cudaMemcpyAsync(e->tab, e->tab_h, T * TAB_BYTES, cudaMemcpyHostToDevice, e->stream));
    return G1_OK;
}

/* The experts through a distributed dispatch: host buffers around it, or
 * (run_rows_mem) device buffers handed to it and the combine here. */
static g1_status moe_dispatch(g1_cuda_engine *e, int l, int T)
{
    size_t D = (size_t)e->cfg.emb_size, n = (size_t)T * e->cfg.num_selected_experts;
    if (e->dispatch.run_rows_mem) {
        /* the peers read xn straight from device memory: it must be written */
        if (T)
            G1_CU(cudaMemcpyAsync(e->idx_h, e->idx, n * sizeof(int), cudaMemcpyDeviceToHost, e->stream));
        G1_CU(cudaStreamSynchronize(e->stream));
        /* xr is free here: only the host-pointer entry points use it */
        G1_TRY(e->dispatch.run_rows_mem(e->dispatch.ctx, e->layer0 + l, T, e->xn, e->idx_h, e->xr));
        G1_CU(cudaSetDevice(e->opts.device));
        G1_CU(g1_cuda_combine(e->stream, T, (int)D, e->cfg.num_selected_experts, e->gate, e->xr, NULL, e->o));
        return G1_OK;
    }
    if (T) {
        G1_CU(cudaMemcpyAsync(e->xh, e->xn, (size_t)T * D * 4, cudaMemcpyDeviceToHost, e->stream));
        G1_CU(cudaMemcpyAsync(e->idx_h, e->idx, n * sizeof(int), cudaMemcpyDeviceToHost, e->stream));
        G1_CU(cudaMemcpyAsync(e->gate_h, e->gate, n * 4, cudaMemcpyDeviceToHost, e->stream));
        G1_CU(cudaStreamSynchronize(e->stream));
    }
    G1_TRY(e->dispatch.run(e->dispatch.ctx, e->layer0 + l, T, e->xh, e->idx_h, e->gate_h, e->yh));
    G1_CU(cudaSetDevice(e->opts.device));
    if (T)
        G1_CU(cudaMemcpyAsync(e->o, e->yh, (size_t)T * D * 4, cudaMemcpyHostToDevice, e->stream));
    return G1_OK;
}

void g1_cuda_engine_set_route_log(g1_cuda_engine *e, FILE *f) { e->route_log = f; }

/* The test hook's lines for local layer l: the router's choices (e->idx)
 * copied to the host once the stream has them. Only a copy: what the layers
 * compute does not move. */
static g1_status route_log_layer(g1_cuda_engine *e, int l, int T)
{
    int k = e->cfg.num_selected_experts;
    G1_CU(cudaMemcpyAsync(e->idx_h, e->idx, (size_t)T * k * sizeof(int), cudaMemcpyDeviceToHost, e->stream));
    G1_CU(cudaStreamSynchronize(e->stream));
    g1_route_log_layer(e->route_log, e->route_n, e->layer0 + l, T, e->route_b->slot, e->route_b->pos, k, e->idx_h);
    return G1_OK;
}

/* The layers over the batch batch_admit set up: every launch on e->stream. */
static g1_status run_layers(g1_cuda_engine *e, int T)
{
    const g1_config *c = &e->cfg;
    int D = c->emb_size, K = c->key_size, Hq = c->num_q_heads, Hkv = c->num_kv_heads;
    int kvw = Hkv * K;
    float eps = (float)c->rms_eps;
    cudaStream_t s = e->stream;
    size_t MB = (size_t)e->opts.max_batch;
    void *const *k0 = e->tab, *const *v0 = (void *const *)e->tab + MB;
    const long long *ls = (const long long *)(v0 + MB);
    const int *pos = (const int *)(ls + MB), *tiles = pos + MB;
    g1_cuda_mm *mm = &e->mm;
    /* T == 0 still walks the layers: a distributed dispatch is collective */
    for (int l = 0; l < e->nL; l++) {
        const g1_cuda_layer *L = &e->layers[l];
        cudaEvent_t *prof = l == 0 ? e->prof : NULL;
        if (prof)
            G1_CU(cudaEventRecord(prof[0], s));
        if (T) {
            G1_CU(g1_cuda_rmsnorm(s, e->x, T, D, L->norm[G1_ATTN_NORM], eps, e->xn));
            G1_TRY(g1_cuda_matmul_q8(mm, e->xn, T, &L->attn[0], e->q));
            G1_TRY(g1_cuda_matmul_q8(mm, e->xn, T, &L->attn[1], e->k));
            G1_TRY(g1_cuda_matmul_q8(mm, e->xn, T, &L->attn[2], e->v));
            G1_CU(g1_cuda_rope(s, e->q, T, Hq, K, pos, c->rope_base));
            G1_CU(g1_cuda_rope(s, e->k, T, Hkv, K, pos, c->rope_base));
            g1_cuda_kv kv = {.k0 = k0, .v0 = v0, .lstride = ls, .pos = pos, .layer = l,
                             .bf16 = e->opts.kv_cache == G1_KV_BF16};
            G1_CU(g1_cuda_kv_store(s, &kv, T, kvw, e->k, e->v));
            g1_cuda_attn_args aa = {.T = T, .Hq = Hq, .Hkv = Hkv, .K = K, .max_splits = e->max_splits,
                                    .chunk = e->attn_chunk, .tiles = tiles, .q = e->q, .kv = kv,
                                    .mult = (float)c->attn_output_multiplier, .cap = (float)c->attn_logit_cap,
                                    .part = e->part, .out = e->att};
            G1_CU(g1_cuda_attention_ranges(s, &aa, e->ranges, e->n_ranges));
            G1_TRY(g1_cuda_matmul_q8(mm, e->att, T, &L->attn[3], e->o));
            G1_CU(g1_cuda_add_rmsnorm(s, e->x, e->o, T, D, L->norm[G1_ATTN_OUT_NORM], eps));
            if (prof)
                G1_CU(cudaEventRecord(prof[1], s));
            G1_CU(g1_cuda_rmsnorm(s, e->x, T, D, L->norm[G1_MOE_NORM], eps, e->xn));
            G1_CU(g1_cuda_router(s, e->xn, T, D, L->router, c->num_experts, c->num_selected_experts, e->idx,
                                  e->gate));
            if (e->route_log)
                G1_TRY(route_log_layer(e, l, T));
        }
        if (prof)
            G1_CU(cudaEventRecord(prof[2], s));
        if (e->dispatch.run)
            G1_TRY(moe_dispatch(e, l, T));
        else if (T)
            G1_TRY(g1_cuda_moe_device(e, l, T, e->xn, e->idx, e->gate, e->o));
        if (prof)
            G1_CU(cudaEventRecord(prof[3], s));
        if (T)
            G1_CU(g1_cuda_add_rmsnorm(s, e->x, e->o, T, D, L->norm[G1_MOE_OUT_NORM], eps));
        if (prof)
            G1_CU(cudaEventRecord(prof[4], s));
    }
    return G1_OK;
}

/* Decode-sized batches replay a CUDA graph of their layers: one launch
 * instead of about 30 a layer, so the GPU does not wait for the host
 * between small kernels. A graph bakes in every launch's arguments: the
 * buffers (fixed for the engine's life), T and the attention tiles (the
 * key; caches and positions are read from the token table in device
 * memory). So only batches whose launches depend on nothing else: every
 * matmul on the GEMV or the int8 tensor-core kernel (T <= graph_max: no
 * cuBLAS), the MoE grouped on this device (no host round trip), one
 * attention range and none of it on the tensor-core attention (prompt
 * tiles), no profiling events, no route log (GROK1_ROUTE_LOG syncs after
 * each router). */
static int graph_fits(const g1_cuda_engine *e, int T)
{
    return e->graphs && !e->route_log && T >= 1 && T <= e->graph_max && !e->dispatch.run &&
           !e->moe_host_groups && !e->prof && e->n_ranges == 1 && e->ranges[0].n_mma == 0;
}

static g1_status forward_graph(g1_cuda_engine *e, int T)
{
    int nt = e->ranges[0].n_tiles;
    size_t key = (size_t)T * (e->graph_max + 1) + nt;
    cudaGraphExec_t *x = &e->graphs[key];
    if (!*x) {
        graphs_make_room(e);
        cudaGraph_t g = NULL;
        g1_status st = G1_OK;
        char why[256] = "";
        cudaError_t ce = cudaStreamBeginCapture(e->stream, cudaStreamCaptureModeRelaxed);
        if (ce == cudaSuccess) {
            st = run_layers(e, T);
            if (st != G1_OK)
                snprintf(why, sizeof why, "%s", g1_last_error());
            /* ends the capture whatever happened inside it: the stream must
             * leave capture mode before anything else is given to it */
            ce = cudaStreamEndCapture(e->stream, &g);
        }
        if (st == G1_OK && ce == cudaSuccess)
            ce = cudaGraphInstantiate(x, g, 0);
        if (g)
            cudaGraphDestroy(g);
        if (st != G1_OK || ce != cudaSuccess) {
            /* A driver that will not capture or instantiate this work (one
             * that refuses launches while capturing, as with
             * CUDA_LAUNCH_BLOCKING=1 on some drivers): launch one by one.
             * Nothing ran during the capture, so the layers run once from
             * the same state; a real fault in them shows there. */
            (void)cudaGetLastError();
            g1_clear_error();
            *x = NULL;
            graphs_free(e);
            fprintf(stderr, "grok1 (CUDA): no graph for a decode step (%s): its kernels launch one by one\n",
                    why[0] ? why : cudaGetErrorString(ce));
            return run_layers(e, T);
        }
        e->n_graphs++;
        e->graphs_live++;
    }
    e->graph_used[key] = ++e->graph_clock;
    G1_CU(cudaGraphLaunch(*x, e->stream));
    return G1_OK;
}

g1_status g1_cuda_engine_forward_device(g1_cuda_engine *e, const g1_batch *b)
{
    G1_CU(cudaSetDevice(e->opts.device));
    G1_TRY(batch_admit(e, b));
    e->route_b = b;
    if (graph_fits(e, b->T))
        return forward_graph(e, b->T);
    return run_layers(e, b->T);
}

/* in (T, D) into e->x, the layers, e->x back to out; in and out are host
 * memory, or device memory with device_mem. */
static g1_status forward_through(g1_cuda_engine *e, const g1_batch *b, const float *in, float *out, int device_mem)
{
    G1_CU(cudaSetDevice(e->opts.device));
    size_t bytes = (size_t)(b->T > 0 ? b->T : 0) * e->cfg.emb_size * sizeof(float);
    if (b->T > e->opts.max_batch)
        return G1_FAIL(G1_ERR_ARG, "batch of %d tokens; the engine was sized for %d", b->T, e->opts.max_batch);
    if (bytes)
        G1_CU(cudaMemcpyAsync(e->x, in, bytes, device_mem ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice,
                              e->stream));
    G1_TRY(g1_cuda_engine_forward_device(e, b));
    e->route_n++;
    if (bytes)
        G1_CU(cudaMemcpyAsync(out, e->x, bytes, device_mem ? cudaMemcpyDeviceToDevice : cudaMemcpyDeviceToHost,
                              e->stream));
    G1_CU(cudaStreamSynchronize(e->stream));
    return G1_OK;
}

g1_status g1_cuda_engine_forward(g1_cuda_engine *e, const g1_batch *b, float *x)
{
    return forward_through(e, b, x, x, 0);
}

g1_status g1_cuda_engine_forward_mem(g1_cuda_engine *e, const g1_batch *b, const float *in, float *out)
{
    return forward_through(e, b, in, out, 1);
}

g1_status g1_cuda_engine_mem_alloc(g1_cuda_engine *e, size_t bytes, void **p)
{
    *p = NULL;
    G1_CU(cudaSetDevice(e->opts.device));
    G1_TRY(dalloc(e, p, bytes));
    G1_CU(cudaStreamSynchronize(e->stream));
    return G1_OK;
}

g1_status g1_cuda_engine_copy_mem(g1_cuda_engine *e, void *dst, const void *src, size_t bytes)
{
    if (!bytes)
        return G1_OK;
    G1_CU(cudaSetDevice(e->opts.device));
    /* unified addressing tells host from device memory */
    G1_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, e->stream));
    G1_CU(cudaStreamSynchronize(e->stream));
    return G1_OK;
}

g1_status g1_cuda_engine_gather_mem(g1_cuda_engine *e, int n, const float *src, const int *map, float *dst)
{
    size_t cap = 2 * (size_t)e->opts.max_batch * e->cfg.num_selected_experts;
    if (n <= 0)
        return G1_OK;
    if ((size_t)n > cap)
        return G1_FAIL(G1_ERR_INTERNAL, "gather of %d rows exceeds %zu", n, cap);
    G1_CU(cudaSetDevice(e->opts.device));
    /* the pinned staging of the row table: free between the engine's calls */
    memcpy(e->rows_h, map, (size_t)n * sizeof(int));
    G1_CU(cudaMemcpyAsync(e->rows, e->rows_h, (size_t)n * sizeof(int), cudaMemcpyHostToDevice, e->stream));
    G1_CU(g1_cuda_gather(e->stream, src, e->cfg.emb_size, e->rows, 1, n, dst));
    G1_CU(cudaStreamSynchronize(e->stream));
    return G1_OK;
}

void *g1_cuda_host_alloc(int device, size_t bytes)
{
    void *p = NULL;
    /* the rank's own GPU first: a context on device 0 from every rank of a
     * node would cost each of them memory there */
    if (cudaSetDevice(device) != cudaSuccess || cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable) != cudaSuccess)
        return NULL;
    memset(p, 0, bytes ? bytes : 1);
    return p;
}

void g1_cuda_host_free(void *p)
{
    if (p)
        cudaFreeHost(p);
}

g1_status g1_cuda_engine_embed(g1_cuda_engine *e, int T, const int *tokens, float *x)
{
    const g1_config *c = &e->cfg;
    if (!e->embedding)
        return G1_FAIL(G1_ERR_ARG, "this process does not hold the embedding table");
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size)
            return G1_FAIL(G1_ERR_RANGE, "token id %d outside the vocabulary (0..%d)", tokens[t], c->vocab_size - 1);
    G1_CU(cudaSetDevice(e->opts.device));
    size_t D = (size_t)c->emb_size;
    for (int t0 = 0; t0 < T; t0 += e->opts.max_batch) {
        int n = T - t0 < e->opts.max_batch ? T - t0 : e->opts.max_batch;
        G1_CU(cudaMemcpyAsync(e->tok, tokens + t0, (size_t)n * sizeof(int), cudaMemcpyHostToDevice, e->stream));
        G1_CU(g1_cuda_embed(e->stream, e->embedding, (int)D, e->tok, n, (float)c->embedding_multiplier, e->x));
        G1_CU(cudaMemcpyAsync(x + (size_t)t0 * D, e->x, (size_t)n * D * 4, cudaMemcpyDeviceToHost, e->stream));
        G1_CU(cudaStreamSynchronize(e->stream));
    }
    return G1_OK;
}

g1_status g1_cuda_engine_logits(g1_cuda_engine *e, int T, const float *x, float *logits)
{
    const g1_config *c = &e->cfg;
    G1_TRY(unembed_ready(e));
    size_t D = (size_t)c->emb_size, V = (size_t)c->vocab_size;
    for (int i = 0, k = logits_chunks(e, T); i < k; i++) {
        int t0 = chunk_row(T, i, k), n = chunk_row(T, i + 1, k) - t0;
        G1_TRY(logits_queued(e, n, x + (size_t)t0 * D));
        G1_CU(cudaMemcpyAsync(logits + (size_t)t0 * V, e->logits, (size_t)n * V * 4, cudaMemcpyDeviceToHost,
                              e->stream));
        G1_CU(cudaStreamSynchronize(e->stream));
    }
    return G1_OK;
}
