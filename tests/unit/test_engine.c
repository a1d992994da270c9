/* Engine properties on the synthetic tiny model (no HDF5 needed):
 * prefill-then-decode equals the full forward, chunking does not matter,
 * a sequence's logits are bitwise the same alone and inside a batch, a
 * rewound slot recomputes the same values, and a prefix forked into another
 * slot continues as if computed there. */
#include <string.h>

#include "bf16.h"
#include "cpu.h"
#include "engine.h"
#include "sampler.h"
#include "synth.h"
#include "testutil.h"

enum { N = 24 };

static g1_weights W;
static g1_config C;

static g1_engine *mk(int slots, int max_batch)
{
    g1_engine *e;
    g1_engine_opts o = {.n_slots = slots, .max_batch = max_batch, .max_context = 0};
    if (g1_engine_init(&e, &W, &o, NULL) != G1_OK) {
        fprintf(stderr, "engine init: %s\n", g1_last_error());
        exit(1);
    }
    return e;
}

/* Run a list of (slot, pos, token) triples as one step; logits (T, V). */
static void step(g1_engine *e, int T, const int *slot, const int *pos, const int *tok, float *logits)
{
    float *x = malloc((size_t)T * C.emb_size * sizeof(float));
    g1_batch b = {.T = T, .slot = slot, .pos = pos};
    if (g1_engine_embed(e, T, tok, x) || g1_engine_forward(e, &b, x) || g1_engine_logits(e, T, x, logits)) {
        fprintf(stderr, "step: %s\n", g1_last_error());
        exit(1);
    }
    free(x);
}

/* Whole sequence in chunks of `chunk` tokens in slot `s`; logits (n, V). */
static void run_seq(g1_engine *e, int s, const int *tok, int n, int chunk, float *logits)
{
    int slot[N], pos[N];
    for (int p0 = 0; p0 < n; p0 += chunk) {
        int m = n - p0 < chunk ? n - p0 : chunk;
        for (int i = 0; i < m; i++) {
            slot[i] = s;
            pos[i] = p0 + i;
        }
        step(e, m, slot, pos, tok + p0, logits + (size_t)p0 * C.vocab_size);
    }
}

int main(void)
{
    g1_config_preset("tiny", &C);
    int blocks[G1_NUM_QMAT];
    g1_synth_blocks(&C, blocks);
    g1_synth s = {.cfg = C, .seed = 11, .qk_gain = 1};
    if (g1_weights_alloc(&W, &C, 0, C.num_layers, 0, C.num_experts, blocks, 1) || g1_synth_weights(&s, &W)) {
        fprintf(stderr, "%s\n", g1_last_error());
        return 1;
    }
    int V = C.vocab_size, tok[3][N];
    for (int q = 0; q < 3; q++)
        for (int i = 0; i < N; i++)
            tok[q][i] = tu_int(V);
    size_t sz = (size_t)N * V * sizeof(float);
    float *full = malloc(sz), *other = malloc(sz), *tmp = malloc(sz * 3);

    g1_engine *e = mk(4, 64);
    run_seq(e, 0, tok[0], N, N, full);
    int finite = 1;
    for (size_t i = 0; i < (size_t)N * V; i++)
        finite &= isfinite(full[i]) && fabsf(full[i]) < 1e4f;
    tu_check(finite, "full forward gives finite logits");

    /* prefill 10, then decode one token at a time, in another slot */
    run_seq(e, 1, tok[0], 10, 10, other);
    for (int p = 10; p < N; p++) {
        int sl = 1;
        step(e, 1, &sl, &p, &tok[0][p], other + (size_t)p * V);
    }
    tu_check(!memcmp(full, other, sz), "prefill + decode == full forward (bitwise)");

    for (int chunk = 1; chunk <= 7; chunk += 3) {
        g1_engine_reset_slot(e, 2);
        run_seq(e, 2, tok[0], N, chunk, other);
        char name[64];
        snprintf(name, sizeof name, "chunked prefill (%d) == full (bitwise)", chunk);
        tu_check(!memcmp(full, other, sz), name);
    }

    /* batch independence: seq 0 interleaved with seqs 1 and 2 of other
     * lengths, all in the same steps */
    g1_engine *e2 = mk(3, 64);
    int lens[3] = {N, 17, 9};
    int done[3] = {0, 0, 0};
    while (done[0] < lens[0] || done[1] < lens[1] || done[2] < lens[2]) {
        int slot[64], pos[64], tk[64], T = 0, owner[64];
        for (int q = 0; q < 3; q++) {
            int m = q == 0 ? 5 : q == 1 ? 3 : 1; /* different chunk sizes */
            for (int i = 0; i < m && done[q] < lens[q]; i++, done[q]++) {
                slot[T] = q;
                pos[T] = done[q];
                tk[T] = tok[q][done[q]];
                owner[T++] = q;
            }
        }
        step(e2, T, slot, pos, tk, tmp);
        for (int t = 0; t < T; t++)
            if (owner[t] == 0)
                memcpy(other + (size_t)pos[t] * V, tmp + (size_t)t * V, (size_t)V * sizeof(float));
    }
    tu_check(!memcmp(full, other, sz), "sequence alone == inside a ragged batch (bitwise)");

    /* rewind: run 5 wrong tokens at positions 12..16, then rewind to 12 */
    {
        int sl = 0, bad[5] = {1, 2, 3, 4, 5}, slot[5], pos[5];
        for (int i = 0; i < 5; i++) {
            slot[i] = sl;
            pos[i] = 12 + i;
        }
        g1_engine_reset_slot(e, 0);
        run_seq(e, 0, tok[0], 12, 12, other);
        step(e, 5, slot, pos, bad, tmp);
        for (int i = 0; i < N - 12; i++) {
            slot[0] = sl;
            pos[0] = 12 + i;
            step(e, 1, slot, pos, &tok[0][12 + i], other + (size_t)(12 + i) * V);
        }
        tu_check(!memcmp(full, other, sz), "rewound slot recomputes the same logits");
    }

    /* forks: slot 0 holds tok[0] (N positions). In one batch: fork 0 -> 3
     * (12 positions) and slot 3's tokens 12.. on top, while slot 0 is
     * rewound to 4 by other tokens in the same batch (the fork comes first,
     * so it copies the prefix before the rewind); then a chain 3 -> 1 -> 2
     * in one batch with no tokens for them but slot 2's from 8. Every row
     * is the full forward's, bitwise. */
    {
        int slot[N], pos[N], tk[N], T = 0;
        for (int p = 12; p < N; p++)
            slot[T] = 3, pos[T] = p, tk[T++] = tok[0][p];
        for (int p = 4; p < 7; p++)
            slot[T] = 0, pos[T] = p, tk[T++] = tok[1][p];
        g1_fork f[2] = {{.src = 0, .dst = 3, .n = 12}};
        float *x = malloc((size_t)N * C.emb_size * sizeof(float));
        g1_batch b = {.T = T, .slot = slot, .pos = pos, .n_fork = 1, .fork = f};
        g1_engine_reset_slot(e, 3);
        tu_check(!g1_engine_embed(e, T, tk, x) && !g1_engine_forward(e, &b, x) && !g1_engine_logits(e, T, x, tmp),
                 "fork batch runs");
        tu_check(!memcmp(full + (size_t)12 * V, tmp, (size_t)(N - 12) * V * sizeof(float)),
                 "a forked prefix continued == the full forward (bitwise), the source rewound in the same batch");
        tu_check(g1_engine_slot_len(e, 3) == N && g1_engine_slot_len(e, 0) == 7, "slot lengths after the fork");
        T = 0;
        for (int p = 8; p < N; p++)
            slot[T] = 2, pos[T] = p, tk[T++] = tok[0][p];
        f[0] = (g1_fork){.src = 3, .dst = 1, .n = 10};
        f[1] = (g1_fork){.src = 1, .dst = 2, .n = 8};
        b = (g1_batch){.T = T, .slot = slot, .pos = pos, .n_fork = 2, .fork = f};
        tu_check(!g1_engine_embed(e, T, tk, x) && !g1_engine_forward(e, &b, x) && !g1_engine_logits(e, T, x, tmp),
                 "chained forks run");
        tu_check(!memcmp(full + (size_t)8 * V, tmp, (size_t)(N - 8) * V * sizeof(float)),
                 "chained forks 3 -> 1 -> 2 continued == the full forward (bitwise)");
        tu_check(g1_engine_slot_len(e, 1) == 10, "the middle of the chain holds its 10 positions");
        g1_fork bad[4] = {{0, 1, 8}, {1, 1, 3}, {4, 1, 3}, {1, 0, 0}}; /* slot 0 holds 7 */
        const char *why[4] = {"a fork longer than its source", "a fork onto itself", "a fork from no slot",
                              "an empty fork"};
        for (int i = 0; i < 4; i++) {
            b = (g1_batch){.T = 0, .slot = slot, .pos = pos, .n_fork = 1, .fork = &bad[i]};
            char name[96];
            snprintf(name, sizeof name, "%s refused (%s)", why[i],
                     g1_engine_forward(e, &b, x) == G1_ERR_ARG ? g1_last_error() : "not refused");
            tu_check(strstr(name, "fork 0:") != NULL, name);
        }
        free(x);
    }

    /* more rows than the engine's batch: g1_engine_logits and
     * g1_engine_score_rows take them in chunks of max_batch (4 here); each
     * row must be its own (bitwise the full forward's logits, and
     * g1_row_logprob of them with its own target). The driver never asks
     * for more than a batch, so only this reaches the chunks after the first. */
    {
        g1_engine *e3 = mk(1, 4);
        int D = C.emb_size, slot[4], pos[4], target[N], am[N], am1;
        float *x = malloc((size_t)N * D * sizeof(float));
        double lp[N], lp1;
        for (int p0 = 0; p0 < N; p0 += 4) {
            for (int i = 0; i < 4; i++)
                slot[i] = 0, pos[i] = p0 + i;
            g1_batch b = {.T = 4, .slot = slot, .pos = pos};
            if (g1_engine_embed(e3, 4, tok[0] + p0, x + (size_t)p0 * D) ||
                g1_engine_forward(e3, &b, x + (size_t)p0 * D)) {
                fprintf(stderr, "chunks: %s\n", g1_last_error());
                exit(1);
            }
        }
        tu_check(!g1_engine_logits(e3, N, x, tmp) && !memcmp(full, tmp, sz),
                 "logits of 24 rows by an engine of batch 4 == the full forward's (bitwise)");
        for (int t = 0; t < N; t++)
            target[t] = t + 1 < N ? tok[0][t + 1] : -1;
        int same = !g1_engine_score_rows(e3, N, x, target, lp, am);
        for (int t = 0; t < N && same; t++)
            same = !g1_row_logprob(full + (size_t)t * V, V, target[t], &lp1, &am1) && lp1 == lp[t] && am1 == am[t];
        tu_check(same, "score_rows of 24 rows by an engine of batch 4: each row's log-prob and argmax its own");
        free(x);
        g1_engine_free(e3);
    }

    /* bad batches are refused with a message */
    {
        int sl = 3, p = 5, t = 1;
        float x[64 * 64];
        g1_batch b = {.T = 1, .slot = &sl, .pos = &p};
        g1_engine_reset_slot(e, 3);
        tu_check(g1_engine_forward(e, &b, x) == G1_ERR_ARG, "gap in positions refused");
        sl = 9;
        tu_check(g1_engine_forward(e, &b, x) == G1_ERR_ARG, "unknown slot refused");
        t = V;
        tu_check(g1_engine_embed(e, 1, &t, x) == G1_ERR_RANGE, "token id out of range refused");
    }
    g1_engine_free(e);
    g1_engine_free(e2);
    g1_weights_free(&W);
    free(full); free(other); free(tmp);

    /* g1_weights_realloc: one layer's memory reused for the next; its split
     * scales are cleared until prepare (a caller that skips prepare gets the
     * integer rounding path, not the last layer's scales), and prepare
     * refills them in the same storage */
    {
        g1_weights p = {0};
        tu_check(!g1_weights_realloc(&p, &C, 0, 1, 0, C.num_experts, blocks, 0) && !g1_synth_weights(&s, &p) &&
                     p.layers[0].attn[G1_ATTN_O].scale_split && p.layers[0].moe[2][0].scale_split,
                 "realloc from zero: a layer, prepared");
        void *w0 = p.layers[0].moe[0][0].w;
        float *split = p.layers[0].attn[G1_ATTN_O].split_buf;
        tu_check(!g1_weights_realloc(&p, &C, 1, 2, 0, C.num_experts, blocks, 0) && p.layer0 == 1 &&
                     p.fresh_bytes == 0 && p.layers[0].moe[0][0].w == w0 &&
                     !p.layers[0].attn[G1_ATTN_O].scale_split && !p.layers[0].moe[2][0].scale_split,
                 "realloc, same shape: the memory kept, no split scales until prepare");
        tu_check(!g1_weights_prepare(&p) && p.fresh_bytes == 0 && p.layers[0].attn[G1_ATTN_O].scale_split == split,
                 "prepare after realloc: the split scales in the kept storage");
        tu_check(!g1_weights_realloc(&p, &C, 0, 0, 0, C.num_experts, blocks, 1) && p.embedding && p.fresh_bytes > 0,
                 "realloc, another shape (the embedding part): new memory");
        g1_weights_free(&p);
    }
    /* scales that are not bf16 values (a checkpoint may store float32
     * scales): prepare must leave them to the integer rounding path (the
     * split's s * 65537 is exact only for bf16 s), so the few-token matmul
     * still multiplies by bf16(q * s): the chain of fmaf over the rows,
     * bitwise */
    {
        g1_weights p = {0};
        tu_check(!g1_weights_realloc(&p, &C, 0, 1, 0, C.num_experts, blocks, 0) && !g1_synth_weights(&s, &p),
                 "a layer for the float32 scales");
        g1_qmat *m = &p.layers[0].attn[G1_ATTN_O];
        /* a float32 scale and an int8 for which the split is not bf16(q * s) (about 1 pair in 200000) */
        float sc = 0;
        int8_t q8 = 0;
        for (uint32_t bits = 0x3c5a4fa2u; !q8 && bits < 0x3c5a4fa2u + (1u << 20); bits++) {
            float f;
            memcpy(&f, &bits, 4);
            for (int q = 1; q < 128 && !q8; q++) {
                float c = (float)q * (f * 65537.0f);
                if (c - (c - (float)q * f) != g1_dequant((int8_t)q, f))
                    sc = f, q8 = (int8_t)q;
            }
        }
        tu_check(q8 != 0, "a float32 scale where the split is not bf16(q * s)");
        for (int i = 0; i < m->blocks * m->cols; i++)
            m->scale[i] = sc;
        m->w[0] = q8;
        tu_check(!g1_weights_prepare(&p), "prepare with float32 scales");
        float x[3 * 64], y[3 * 64];
        tu_check(m->rows <= 64 && m->cols <= 64, "attn_o fits the test's buffers");
        for (int i = 0; i < 3 * m->rows; i++)
            x[i] = tu_sym();
        g1_cpu_matmul_q8(x, 3, m, y);
        int same = 1, rpb = m->rows / m->blocks;
        for (int t = 0; t < 3; t++)
            for (int c = 0; c < m->cols; c++) {
                float acc = 0;
                for (int r = 0; r < m->rows; r++) {
                    float wq = g1_dequant(m->w[(size_t)r * m->cols + c], m->scale[(size_t)(r / rpb) * m->cols + c]);
                    acc = fmaf(x[t * m->rows + r], wq, acc);
                }
                same &= acc == y[t * m->cols + c];
            }
        tu_check(same, "float32 (not bf16) scales: 3 tokens times bf16(q * s), bitwise");
        g1_weights_free(&p);
    }
    printf("%s: %d failure(s)\n", tu_failures ? "FAIL" : "PASS", tu_failures);
    return tu_failures ? 1 : 0;
}
