/* g1-ckpt-check FILE [l0 l1 e0 e1]: open and load a checkpoint (everything
 * by default, with the embedding), print a digest of what was loaded, or the
 * reader's message and exit 1. A test helper for test_ckpt_files.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "fnv1a.h"

static uint64_t fnv_qmat(uint64_t h, const g1_qmat *q)
{
    h = g1_fnv1a64(h, q->w, (size_t)q->rows * q->cols);
    return g1_fnv1a64(h, q->scale, (size_t)q->blocks * q->cols * sizeof(float));
}

/* Digest of the config and every loaded tensor. */
static uint64_t digest(const g1_weights *w)
{
    const g1_config *c = &w->cfg;
    size_t D = (size_t)c->emb_size;
    uint64_t h = G1_FNV1A64_START;
    for (int i = 0; i < g1_num_params; i++)
        h = g1_fnv1a64(h, (const char *)c + g1_params[i].offset,
                g1_params[i].type == G1_PARAM_INT ? sizeof(int) : sizeof(double));
    h = g1_fnv1a64(h, w->blocks, sizeof w->blocks);
    if (w->embedding) {
        h = g1_fnv1a64(h, w->embedding, (size_t)c->vocab_size * D * 2);
        h = g1_fnv1a64(h, w->final_norm, D * 4);
    }
    for (int l = 0; l < w->layer1 - w->layer0; l++) {
        const g1_layer_weights *L = &w->layers[l];
        for (int n = 0; n < G1_NUM_NORM; n++)
            h = g1_fnv1a64(h, L->norm[n], D * 4);
        for (int i = 0; i < 4; i++)
            h = fnv_qmat(h, &L->attn[i]);
        h = g1_fnv1a64(h, L->router, D * (size_t)c->num_experts * 4);
        for (int m = 0; m < 3; m++)
            for (int e = 0; e < w->expert1 - w->expert0; e++)
                h = fnv_qmat(h, &L->moe[m][e]);
    }
    return h;
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 6) {
        fprintf(stderr, "usage: g1-ckpt-check FILE [l0 l1 e0 e1]\n");
        return 2;
    }
    g1_ckpt *ck;
    if (g1_ckpt_open(argv[1], &ck) != G1_OK) {
        fprintf(stderr, "g1-ckpt-check: %s\n", g1_last_error());
        return 1;
    }
    const g1_config *c = g1_ckpt_config(ck);
    int r[4] = {0, c->num_layers, 0, c->num_experts}, emb = argc == 2;
    for (int i = 0; argc == 6 && i < 4; i++)
        r[i] = atoi(argv[2 + i]);
    g1_weights w;
    g1_status st = g1_ckpt_load(ck, r[0], r[1], r[2], r[3], emb, &w);
    if (st != G1_OK) {
        fprintf(stderr, "g1-ckpt-check: %s\n", g1_last_error());
        g1_ckpt_close(ck);
        return 1;
    }
    printf("digest %016llx bytes_read %llu layers %d experts %d blocks", (unsigned long long)digest(&w),
           (unsigned long long)g1_ckpt_bytes_read(ck), w.layer1 - w.layer0, w.expert1 - w.expert0);
    for (int i = 0; i < G1_NUM_QMAT; i++)
        printf(" %d", w.blocks[i]);
    printf("\n");
    g1_weights_free(&w);
    g1_ckpt_close(ck);
    return 0;
}
