/* MoE on the device: rows grouped by expert, one matmul chain per held
 * expert over its group, no compute for experts a row did not pick; then
 * the combine in choice order. Batches of up to moe_device_max tokens (the
 * tensor-core kernel's 128 where it takes the experts' shapes, else the
 * GEMV's 16) are grouped on the device, each matrix of every expert in one
 * or two launches; larger ones are grouped on the host (from the top-k ids
 * copied back), each group on the GEMV, the tensor cores or cuBLAS by its
 * size. Either way a group of m rows gets what g1_cuda_matmul_q8 gives m
 * rows, so a row's result depends on its group's size, never on where the
 * rows were grouped (or on which process: the expert-parallel dispatch
 * groups them on the host). */
#include <string.h>

#include "cuda/cuda_internal.h"

/* Order the n rows by expert (stable) into rows_h[0..n), each row's place in
 * that order into rows_h[n..2n); counts per held expert; upload both. */
static g1_status group_rows(g1_cuda_engine *e, int n, const int *ids, int *count)
{
    int m = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] < e->expert0 || ids[i] >= e->expert1)
            return G1_FAIL(G1_ERR_INTERNAL, "expert %d is not held by this process (holds %d..%d)", ids[i],
                           e->expert0, e->expert1 - 1);
    for (int x = e->expert0; x < e->expert1; x++) {
        int m0 = m;
        for (int i = 0; i < n; i++)
            if (ids[i] == x) {
                e->rows_h[n + i] = m;
                e->rows_h[m++] = i;
            }
        count[x - e->expert0] = m - m0;
    }
    G1_CU(cudaMemcpyAsync(e->rows, e->rows_h, 2 * (size_t)n * sizeof(int), cudaMemcpyHostToDevice, e->stream));
    return G1_OK;
}

/* yg = expert chains over xg, group by group. */
static g1_status run_experts(g1_cuda_engine *e, int l, const int *count)
{
    const g1_cuda_layer *L = &e->layers[l];
    size_t D = (size_t)e->cfg.emb_size, F = (size_t)e->cfg.ffn_size, off = 0;
    for (int x = 0; x < e->expert1 - e->expert0; x++) {
        int m = count[x];
        if (!m)
            continue;
        float *h1 = e->h1 + off * F, *h2 = e->h2 + off * F;
        G1_TRY(g1_cuda_matmul_q8(&e->mm, e->xg + off * D, m, &L->moe[0][x], h1));
        G1_TRY(g1_cuda_matmul_q8(&e->mm, e->xg + off * D, m, &L->moe[1][x], h2));
        G1_CU(g1_cuda_gelu_mul(e->stream, h1, h2, (size_t)m * F, h1));
        G1_TRY(g1_cuda_matmul_q8(&e->mm, h1, m, &L->moe[2][x], e->yg + off * D));
        off += (size_t)m;
    }
    return G1_OK;
}

/* The MoE with the rows grouped on the device and every expert's matmul
 * in one launch a matrix (two when groups may go either side of
 * gemv_max): no host round trip, and the same launches however the rows
 * fall into groups, so a CUDA graph holds them. A group holds at most T
 * rows, as a token picks distinct experts. */
static g1_status moe_grouped_on_device(g1_cuda_engine *e, int l, int T, const float *xn, const int *idx,
                                       const float *gate, float *out)
{
    const g1_cuda_layer *L = &e->layers[l];
    int k = e->cfg.num_selected_experts, n = T * k, D = e->cfg.emb_size, El = e->expert1 - e->expert0;
    const g1_dqmat *m = e->mats_d + (size_t)l * 3 * El;
    G1_CU(g1_cuda_moe_group(e->stream, idx, n, e->expert0, El, e->rows, e->grp));
    G1_CU(g1_cuda_gather(e->stream, xn, D, e->rows, k, n, e->xg));
    G1_TRY(g1_cuda_matmul_grouped_q8(&e->mm, e->xg, n, T, m, &L->moe[0][0], e->grp, El, e->h1));
    G1_TRY(g1_cuda_matmul_grouped_q8(&e->mm, e->xg, n, T, m + El, &L->moe[1][0], e->grp, El, e->h2));
    G1_CU(g1_cuda_gelu_mul(e->stream, e->h1, e->h2, (size_t)n * e->cfg.ffn_size, e->h1));
    G1_TRY(g1_cuda_matmul_grouped_q8(&e->mm, e->h1, n, T, m + 2 * El, &L->moe[2][0], e->grp, El, e->yg));
    G1_CU(g1_cuda_combine(e->stream, T, D, k, gate, e->yg, e->rows + n, out));
    return G1_OK;
}

g1_status g1_cuda_moe_device(g1_cuda_engine *e, int l, int T, const float *xn, const int *idx, const float *gate,
                             float *out)
{
    int k = e->cfg.num_selected_experts, n = T * k, D = e->cfg.emb_size, count[256];
    if (T > e->opts.max_batch)
        return G1_FAIL(G1_ERR_INTERNAL, "MoE batch of %d tokens exceeds %d", T, e->opts.max_batch);
    if (T <= 0)
        return G1_OK;
    if (T <= e->moe_device_max && !e->moe_host_groups)
        return moe_grouped_on_device(e, l, T, xn, idx, gate, out);
    /* the one host round trip of a layer: group sizes decide the launches */
    G1_CU(cudaMemcpyAsync(e->idx_h, idx, (size_t)n * sizeof(int), cudaMemcpyDeviceToHost, e->stream));
    G1_CU(cudaStreamSynchronize(e->stream));
    G1_TRY(group_rows(e, n, e->idx_h, count));
    /* row t*k + j of the choices is token t's input */
    G1_CU(g1_cuda_gather(e->stream, xn, D, e->rows, k, n, e->xg));
    G1_TRY(run_experts(e, l, count));
    G1_CU(g1_cuda_combine(e->stream, T, D, k, gate, e->yg, e->rows + n, out));
    return G1_OK;
}

g1_status g1_cuda_expert_rows_device(g1_cuda_engine *e, int l, int n, const float *x, const int *expert_h, float *y)
{
    int D = e->cfg.emb_size, count[256];
    if (n > e->opts.max_batch * e->cfg.num_selected_experts)
        return G1_FAIL(G1_ERR_INTERNAL, "MoE of %d rows exceeds %d", n,
                       e->opts.max_batch * e->cfg.num_selected_experts);
    if (n <= 0)
        return G1_OK;
    G1_TRY(group_rows(e, n, expert_h, count));
    G1_CU(g1_cuda_gather(e->stream, x, D, e->rows, 1, n, e->xg));
    G1_TRY(run_experts(e, l, count));
    G1_CU(g1_cuda_gather(e->stream, e->yg, D, e->rows + n, 1, n, y));
    return G1_OK;
}

static g1_status local_layer(const g1_cuda_engine *e, int layer, int *l)
{
    if (layer < e->layer0 || layer >= e->layer0 + e->nL)
        return G1_FAIL(G1_ERR_INTERNAL, "MoE for layer %d, which this process does not hold", layer);
    *l = layer - e->layer0;
    return G1_OK;
}

g1_status g1_cuda_moe_expert_rows(g1_cuda_engine *e, int layer, int n, const float *x, const int *expert, float *y)
{
    int l = 0;
    G1_TRY(local_layer(e, layer, &l));
    if (n <= 0)
        return G1_OK;
    size_t bytes = (size_t)n * e->cfg.emb_size * sizeof(float);
    if (n > e->opts.max_batch * e->cfg.num_selected_experts)
        return G1_FAIL(G1_ERR_INTERNAL, "MoE of %d rows exceeds %d", n,
                       e->opts.max_batch * e->cfg.num_selected_experts);
    G1_CU(cudaSetDevice(e->opts.device));
    G1_CU(cudaMemcpyAsync(e->xr, x, bytes, cudaMemcpyHostToDevice, e->stream));
    G1_TRY(g1_cuda_expert_rows_device(e, l, n, e->xr, expert, e->xr));
    G1_CU(cudaMemcpyAsync(y, e->xr, bytes, cudaMemcpyDeviceToHost, e->stream));
    G1_CU(cudaStreamSynchronize(e->stream));
    return G1_OK;
}

g1_status g1_cuda_moe_local(g1_cuda_engine *e, int layer, int T, const float *x, const int *idx, const float *gate,
                            float *out)
{
    int l = 0, k = e->cfg.num_selected_experts;
    G1_TRY(local_layer(e, layer, &l));
    if (T > e->opts.max_batch)
        return G1_FAIL(G1_ERR_INTERNAL, "MoE batch of %d tokens exceeds %d", T, e->opts.max_batch);
    if (T <= 0)
        return G1_OK;
    size_t bytes = (size_t)T * e->cfg.emb_size * sizeof(float), n = (size_t)T * k;
    for (size_t i = 0; i < n; i++) /* the device's grouping takes the ids as given */
        if (idx[i] < e->expert0 || idx[i] >= e->expert1)
            return G1_FAIL(G1_ERR_INTERNAL, "expert %d is not held by this process (holds %d..%d)", idx[i],
                           e->expert0, e->expert1 - 1);
    G1_CU(cudaSetDevice(e->opts.device));
    G1_CU(cudaMemcpyAsync(e->xr, x, bytes, cudaMemcpyHostToDevice, e->stream));
    G1_CU(cudaMemcpyAsync(e->idx, idx, n * sizeof(int), cudaMemcpyHostToDevice, e->stream));
    G1_CU(cudaMemcpyAsync(e->gate, gate, n * sizeof(float), cudaMemcpyHostToDevice, e->stream));
    G1_TRY(g1_cuda_moe_device(e, l, T, e->xr, e->idx, e->gate, e->o));
    G1_CU(cudaMemcpyAsync(out, e->o, bytes, cudaMemcpyDeviceToHost, e->stream));
    G1_CU(cudaStreamSynchronize(e->stream));
    return G1_OK;
}

g1_status g1_cuda_moe_expert_rows_mem(g1_cuda_engine *e, int layer, int n, const float *x, const int *expert,
                                      float *y)
{
    int l = 0;
    G1_TRY(local_layer(e, layer, &l));
    G1_CU(cudaSetDevice(e->opts.device));
    G1_TRY(g1_cuda_expert_rows_device(e, l, n, x, expert, y));
    G1_CU(cudaStreamSynchronize(e->stream));
    return G1_OK;
}
