/* Counter-based generator for synthetic weights: splitmix64 of
 * (seed, stream, index). Magnitudes keep activations of order one:
 * int8 uniform in [-127, 127] (std ~73.3) times a scale ~ 1 / (73.3 sqrt(rows)). */
#include "synth.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "bf16.h"

static inline uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Stream ids: one per tensor (kind, layer, expert). */
static uint64_t stream(const g1_synth *s, uint64_t kind, uint64_t layer, uint64_t expert)
{
    return mix64(s->seed ^ mix64((kind << 48) ^ (layer << 20) ^ expert));
}

static inline uint64_t draw(uint64_t st, uint64_t i) { return mix64(st + i * 0x632be59bd9b4e019ull); }

/* uniform in [0, 1) */
static inline double unif(uint64_t st, uint64_t i) { return (double)(draw(st, i) >> 11) * (1.0 / 9007199254740992.0); }

/* approximately normal (sum of 4 uniforms, std 1) */
static inline double gauss(uint64_t st, uint64_t i)
{
    double a = 0;
    for (int k = 0; k < 4; k++)
        a += unif(st, 4 * i + (uint64_t)k);
    return (a - 2.0) * sqrt(3.0);
}

enum { K_EMBED = 1, K_FINAL_NORM, K_NORM, K_ROUTER, K_QW, K_QS };

void g1_synth_blocks(const g1_config *cfg, int blocks[G1_NUM_QMAT])
{
    for (int i = 0; i < G1_NUM_QMAT; i++) {
        int rows, cols;
        g1_qmat_shape(cfg, (g1_qmat_id)i, &rows, &cols);
        int rel = (i == G1_ATTN_O || i == G1_MOE_DOWN) ? 8 : 1;
        blocks[i] = g1_config_default_blocks(cfg, rows, rel);
    }
}

void g1_synth_embedding_rows(const g1_synth *s, int64_t row0, int64_t nrows, float *out)
{
    uint64_t st = stream(s, K_EMBED, 0, 0);
    int64_t D = s->cfg.emb_size;
    /* x = E * embedding_multiplier should have entries of order one */
    double sd = 1.0 / s->cfg.embedding_multiplier;
    /* every value a function of its index alone: the same for any threads */
#pragma omp parallel for schedule(static) if (nrows * D > 65536)
    for (int64_t i = 0; i < nrows * D; i++)
        out[i] = (float)(sd * gauss(st, (uint64_t)(row0 * D + i)));
}

void g1_synth_final_norm(const g1_synth *s, float *out)
{
    uint64_t st = stream(s, K_FINAL_NORM, 0, 0);
    for (int i = 0; i < s->cfg.emb_size; i++)
        out[i] = (float)(0.8 + 0.4 * unif(st, (uint64_t)i));
}

void g1_synth_norm(const g1_synth *s, int layer, g1_norm_id n, float *out)
{
    uint64_t st = stream(s, K_NORM, (uint64_t)layer, (uint64_t)n);
    for (int i = 0; i < s->cfg.emb_size; i++)
        out[i] = (float)(0.7 + 0.6 * unif(st, (uint64_t)i));
}

void g1_synth_router(const g1_synth *s, int layer, float *out)
{
    uint64_t st = stream(s, K_ROUTER, (uint64_t)layer, 0);
    size_t n = (size_t)s->cfg.emb_size * s->cfg.num_experts;
    /* logits of std ~1.5 so routing is decided but not one-hot */
    double sd = 1.5 / sqrt((double)s->cfg.emb_size);
    for (size_t i = 0; i < n; i++)
        out[i] = (float)(sd * gauss(st, i));
}

void g1_synth_qmat(const g1_synth *s, int layer, g1_qmat_id id, int expert, int blocks, int8_t *w,
                   float *scale)
{
    int rows, cols;
    g1_qmat_shape(&s->cfg, id, &rows, &cols);
    if (id < G1_MOE_GATE)
        expert = 0;
    uint64_t sw = stream(s, K_QW, (uint64_t)layer, ((uint64_t)id << 12) | (uint64_t)expert);
    uint64_t ss = stream(s, K_QS, (uint64_t)layer, ((uint64_t)id << 12) | (uint64_t)expert);
    size_t n = (size_t)rows * cols;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++)
        w[i] = (int8_t)((int)(draw(sw, i) % 255u) - 127);
    double base = 1.0 / (127.0 / sqrt(3.0) * sqrt((double)rows));
    if (id == G1_ATTN_Q || id == G1_ATTN_K)
        base *= s->qk_gain > 0 ? s->qk_gain : 1.0;
    for (int b = 0; b < blocks; b++)
        for (int c = 0; c < cols; c++) {
            /* factor in [0.5, 2): blocks really differ, so a port that uses
             * block 0 for every row is visibly wrong */
            size_t i = (size_t)b * cols + c;
            double f = 0.5 * pow(4.0, unif(ss, i));
            scale[i] = g1_round_bf16((float)(base * f));
        }
}

g1_status g1_synth_weights(const g1_synth *s, g1_weights *w)
{
    const g1_config *c = &w->cfg;
    if (w->embedding) {
        /* row by row through the same generator grok1-mkckpt streams from */
        int64_t D = c->emb_size;
        float *row = malloc((size_t)D * sizeof *row);
        if (!row)
            return G1_FAIL(G1_ERR_NOMEM, "out of memory");
        for (int64_t v = 0; v < c->vocab_size; v++) {
            g1_synth_embedding_rows(s, v, 1, row);
            for (int64_t i = 0; i < D; i++)
                w->embedding[v * D + i] = g1_f32_to_bf16(row[i]);
        }
        free(row);
        g1_synth_final_norm(s, w->final_norm);
    }
    for (int l = w->layer0; l < w->layer1; l++) {
        g1_layer_weights *L = &w->layers[l - w->layer0];
        for (int n = 0; n < G1_NUM_NORM; n++)
            g1_synth_norm(s, l, (g1_norm_id)n, L->norm[n]);
        for (int i = 0; i < 4; i++)
            g1_synth_qmat(s, l, (g1_qmat_id)i, 0, L->attn[i].blocks, L->attn[i].w, L->attn[i].scale);
        g1_synth_router(s, l, L->router);
        for (int m = 0; m < 3; m++)
            for (int e = w->expert0; e < w->expert1; e++) {
                g1_qmat *q = &L->moe[m][e - w->expert0];
                g1_synth_qmat(s, l, (g1_qmat_id)(G1_MOE_GATE + m), e, q->blocks, q->w, q->scale);
            }
    }
    return g1_weights_prepare(w);
}
