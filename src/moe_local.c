/* MoE experts computed in this process: group the (token, choice) pairs by
 * expert, run one matmul chain per held expert over its group (no compute for
 * experts a token did not pick), then combine in choice order. */
#include <string.h>

#include "cpu.h"
#include "engine_internal.h"

g1_status g1_moe_local(void *engine, int layer, int T, const float *x, const int *idx, const float *gate,
                       float *out)
{
    g1_engine *e = engine;
    const g1_weights *w = e->w;
    const g1_config *c = &e->cfg;
    int D = c->emb_size, F = c->ffn_size, k = c->num_selected_experts;
    if (layer < w->layer0 || layer >= w->layer1)
        return G1_FAIL(G1_ERR_INTERNAL, "MoE for layer %d, which this process does not hold", layer);
    if (T > e->opts.max_batch)
        return G1_FAIL(G1_ERR_INTERNAL, "MoE batch of %d tokens exceeds %d", T, e->opts.max_batch);
    const g1_layer_weights *L = &w->layers[layer - w->layer0];
    for (int i = 0; i < T * k; i++)
        if (idx[i] < w->expert0 || idx[i] >= w->expert1)
            return G1_FAIL(G1_ERR_INTERNAL, "expert %d is not held by this process (holds %d..%d)", idx[i],
                           w->expert0, w->expert1 - 1);
    for (int ex = w->expert0; ex < w->expert1; ex++) {
        int n = 0;
        for (int i = 0; i < T * k; i++)
            if (idx[i] == ex)
                e->tok[n++] = i;
        if (!n)
            continue;
        for (int r = 0; r < n; r++)
            memcpy(e->xg + (size_t)r * D, x + (size_t)(e->tok[r] / k) * D, (size_t)D * sizeof(float));
        int le = ex - w->expert0;
        g1_cpu_matmul_q8(e->xg, n, &L->moe[0][le], e->h1);
        g1_cpu_matmul_q8(e->xg, n, &L->moe[1][le], e->h2);
        g1_cpu_gelu_mul(e->h1, e->h2, (size_t)n * F, e->h1);
        g1_cpu_matmul_q8(e->h1, n, &L->moe[2][le], e->xg);
        for (int r = 0; r < n; r++)
            memcpy(e->yk + (size_t)e->tok[r] * D, e->xg + (size_t)r * D, (size_t)D * sizeof(float));
    }
    for (int t = 0; t < T; t++) {
        float *o = out + (size_t)t * D;
        for (int d = 0; d < D; d++)
            o[d] = 0;
        for (int j = 0; j < k; j++) {
            const float *y = e->yk + ((size_t)t * k + j) * D;
            float g = gate[(size_t)t * k + j];
            for (int d = 0; d < D; d++)
                o[d] += g * y[d];
        }
    }
    return G1_OK;
}
