/* MoE experts computed in this process: group rows by expert, run one
 * matmul chain per held expert over its group (no compute for experts a row
 * did not pick); the local dispatch then combines in choice order. A row's
 * result never depends on which other rows share its group. */
#include <string.h>

#include "cpu.h"
#include "cuda/cuda_engine.h"
#include "engine_internal.h"

g1_status g1_moe_expert_rows(void *engine, int layer, int n, const float *x, const int *expert, float *y)
{
    g1_engine *e = engine;
    if (e->cuda)
        return g1_cuda_moe_expert_rows(e->cuda, layer, n, x, expert, y);
    const g1_weights *w = e->w;
    const g1_config *c = &e->cfg;
    int D = c->emb_size, F = c->ffn_size, k = c->num_selected_experts;
    if (layer < w->layer0 || layer >= w->layer1)
        return G1_FAIL(G1_ERR_INTERNAL, "MoE for layer %d, which this process does not hold", layer);
    if (n > e->opts.max_batch * k)
        return G1_FAIL(G1_ERR_INTERNAL, "MoE of %d rows exceeds %d", n, e->opts.max_batch * k);
    const g1_layer_weights *L = &w->layers[layer - w->layer0];
    for (int i = 0; i < n; i++)
        if (expert[i] < w->expert0 || expert[i] >= w->expert1)
            return G1_FAIL(G1_ERR_INTERNAL, "expert %d is not held by this process (holds %d..%d)", expert[i],
                           w->expert0, w->expert1 - 1);
    for (int ex = w->expert0; ex < w->expert1; ex++) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (expert[i] == ex)
                e->tok[m++] = i;
        if (!m)
            continue;
        for (int r = 0; r < m; r++)
            memcpy(e->xg + (size_t)r * D, x + (size_t)e->tok[r] * D, (size_t)D * sizeof(float));
        int le = ex - w->expert0;
        g1_cpu_matmul_q8(e->xg, m, &L->moe[0][le], e->h1);
        g1_cpu_matmul_q8(e->xg, m, &L->moe[1][le], e->h2);
        g1_cpu_gelu_mul(e->h1, e->h2, (size_t)m * F, e->h1);
        g1_cpu_matmul_q8(e->h1, m, &L->moe[2][le], e->xg);
        for (int r = 0; r < m; r++)
            memcpy(y + (size_t)e->tok[r] * D, e->xg + (size_t)r * D, (size_t)D * sizeof(float));
    }
    return G1_OK;
}

void g1_moe_combine(int T, int D, int k, const float *gate, const float *yk, float *out)
{
    for (int t = 0; t < T; t++) {
        float *o = out + (size_t)t * D;
        for (int d = 0; d < D; d++)
            o[d] = 0;
        for (int j = 0; j < k; j++) {
            const float *y = yk + ((size_t)t * k + j) * D;
            float g = gate[(size_t)t * k + j];
            for (int d = 0; d < D; d++)
                o[d] += g * y[d];
        }
    }
}

g1_status g1_moe_local(void *engine, int layer, int T, const float *x, const int *idx, const float *gate,
                       float *out)
{
    g1_engine *e = engine;
    if (e->cuda)
        return g1_cuda_moe_local(e->cuda, layer, T, x, idx, gate, out);
    int D = e->cfg.emb_size, k = e->cfg.num_selected_experts;
    if (T > e->opts.max_batch)
        return G1_FAIL(G1_ERR_INTERNAL, "MoE batch of %d tokens exceeds %d", T, e->opts.max_batch);
    /* row t*k + j is token t's j-th choice: the rows x[t] repeated k times */
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++)
            memcpy(e->xk + ((size_t)t * k + j) * D, x + (size_t)t * D, (size_t)D * sizeof(float));
    G1_TRY(g1_moe_expert_rows(e, layer, T * k, e->xk, idx, e->yk));
    g1_moe_combine(T, D, k, gate, e->yk, out);
    return G1_OK;
}
