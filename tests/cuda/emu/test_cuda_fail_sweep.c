/* Every CUDA runtime and cuBLAS call the CUDA engine makes, failed in turn
 * on the emulation (G1EMU_FAIL_CALL, emu_runtime.cpp "failing calls"). One
 * pass over a tiny synthetic model is: the engine made and loaded, a
 * prefill of two sequences (embed, forward, logits), two decode steps (forward,
 * the scores of rows on the device, logits), the engine freed. Four
 * configurations: decode graphs on with the MoE grouped on the device;
 * graphs off with the MoE grouped on the host and f32 GEMMs; a host MoE
 * dispatch (g1_moe_local, what a distributed rank's dispatch calls); and
 * grok1-run --gpu-direct's: the rows dispatched in engine memory
 * (g1_engine_mem_alloc, gather_mem, g1_moe_expert_rows_mem), the layers
 * through g1_engine_copy_mem and g1_engine_forward_mem. The
 * clean pass counts the calls; then the pass again with call K failed, for
 * each K, must either fail with a message that names the injected error
 * and a src/cuda file:line, or succeed with the clean pass's results to the
 * bit (a failure the engine may get around, as a graph it cannot make);
 * a failed launch's error must be read at its site (g1emu_unread).
 * Either way nothing of the engine's may be left live in the emulation
 * (device or pinned memory, streams, events, graphs, cuBLAS handles). A
 * crash or a hang fails the test (meson's timeout).
 * `--config N` runs only configuration N (0 to 3); `--only K` only call K. */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "engine.h"
#include "synth.h"
#include "../../unit/testutil.h"

/* g1emu's own (emu_runtime.cpp) */
long g1emu_fail_calls(long k);
const char *g1emu_failed(void);
const char *g1emu_unread(void);
long g1emu_live(char *buf, size_t n);

enum { SLOTS = 2, PRE = 8, DEC = 4, STEPS = 2 };

typedef struct out {
    float *logits; /* (PRE + STEPS * DEC) rows of V */
    double lp[STEPS * DEC];
    int am[STEPS * DEC];
} out;

typedef struct cfg {
    const char *name;
    int graphs_off, host_groups, f32, dispatch; /* dispatch 1: host, 2: engine-memory rows */
} cfg;

static const cfg CFGS[] = {
    {"graphs, device MoE grouping", 0, 0, 0, 0},
    {"no graphs, host MoE grouping, f32 GEMMs", 1, 1, 1, 0},
    {"host MoE dispatch", 0, 0, 0, 1},
    {"engine-memory rows dispatch, forward_mem (--gpu-direct)", 0, 0, 0, 2},
};

typedef struct disp_ctx {
    g1_engine *e;
    float *sb, *xin, *xout; /* engine memory: (PRE * k, D), (PRE, D), (PRE, D) */
    int map[PRE * 2];
} disp_ctx;

static g1_status host_dispatch(void *ctx, int layer, int T, const float *x, const int *idx, const float *gate,
                               float *o)
{
    return g1_moe_local(((disp_ctx *)ctx)->e, layer, T, x, idx, gate, o);
}

/* As grok1-run --gpu-direct's rank holding every expert: the rows gathered
 * in engine memory, the experts over them, gathered back. */
static g1_status rows_dispatch(void *ctx, int layer, int T, const float *x, const int *idx, float *yk)
{
    disp_ctx *r = ctx;
    int k = g1_engine_config(r->e)->num_selected_experts, n = T * k;
    if (n > (int)(sizeof r->map / sizeof r->map[0]))
        return G1_FAIL(G1_ERR_INTERNAL, "%d rows: the test's map holds fewer", n);
    for (int i = 0; i < n; i++)
        r->map[i] = i / k;
    G1_TRY(g1_engine_gather_mem(r->e, n, x, r->map, r->sb));
    G1_TRY(g1_moe_expert_rows_mem(r->e, layer, n, r->sb, idx, r->sb));
    for (int i = 0; i < n; i++)
        r->map[i] = i;
    return g1_engine_gather_mem(r->e, n, r->sb, r->map, yk);
}

static g1_status step(g1_engine *e, disp_ctx *dc, int T, const int *slot, const int *pos, const int *tok, float *x,
                      float *logits, const int *target, double *lp, int *am)
{
    g1_batch b = {.T = T, .slot = slot, .pos = pos};
    G1_TRY(g1_engine_embed(e, T, tok, x));
    if (dc->xin) { /* through engine memory */
        size_t bytes = (size_t)T * g1_engine_config(e)->emb_size * sizeof *x;
        G1_TRY(g1_engine_copy_mem(e, dc->xin, x, bytes));
        G1_TRY(g1_engine_forward_mem(e, &b, dc->xin, dc->xout));
        G1_TRY(g1_engine_copy_mem(e, x, dc->xout, bytes));
    } else {
        G1_TRY(g1_engine_forward(e, &b, x));
    }
    if (target)
        G1_TRY(g1_engine_score_rows(e, T, x, target, lp, am));
    return g1_engine_logits(e, T, x, logits);
}

/* One pass; on a failure the engine is freed and the status returned. */
static g1_status pass(const g1_weights *W, const cfg *c, out *r)
{
    const g1_config *C = &W->cfg;
    int V = C->vocab_size;
    disp_ctx dc = {0};
    g1_moe_dispatch d = {.run = host_dispatch, .ctx = &dc};
    if (c->dispatch == 2)
        d.run_rows_mem = rows_dispatch;
    g1_engine_opts o = {.n_slots = SLOTS, .max_batch = PRE, .max_context = 64, .backend = G1_BACKEND_CUDA,
                        .cuda_gemm = c->f32 ? G1_CUDA_GEMM_F32 : G1_CUDA_GEMM_BF16,
                        .cuda_graphs_off = c->graphs_off};
    o.cuda_tune.moe_host_groups = c->host_groups;
    g1_engine *e = NULL;
    G1_TRY(g1_engine_init(&e, W, &o, c->dispatch ? &d : NULL));
    dc.e = e;
    size_t xb = (size_t)PRE * C->emb_size * sizeof(float);
    g1_status st = G1_OK;
    if (c->dispatch == 2 && ((st = g1_engine_mem_alloc(e, xb * C->num_selected_experts, (void **)&dc.sb)) != G1_OK ||
                             (st = g1_engine_mem_alloc(e, xb, (void **)&dc.xin)) != G1_OK ||
                             (st = g1_engine_mem_alloc(e, xb, (void **)&dc.xout)) != G1_OK)) {
        g1_engine_free(e);
        return st;
    }
    float *x = malloc(xb);
    if (!x) {
        g1_engine_free(e);
        return G1_FAIL(G1_ERR_NOMEM, "out of memory");
    }
    /* prefill: slot 0 five tokens, slot 1 three, one batch */
    int slot[PRE], pos[PRE], tok[PRE], tgt[DEC];
    for (int i = 0; i < PRE; i++)
        slot[i] = i < 5 ? 0 : 1, pos[i] = i < 5 ? i : i - 5, tok[i] = (7 * i + 3) % V;
    st = step(e, &dc, PRE, slot, pos, tok, x, r->logits, NULL, NULL, NULL);
    /* decode: each slot two rows a step (DEC rows), STEPS steps of the same
     * shape (a graph made, then replayed) */
    int len[SLOTS] = {5, 3};
    for (int s = 0; s < STEPS && st == G1_OK; s++) {
        for (int i = 0; i < DEC; i++) {
            slot[i] = i / 2;
            pos[i] = len[i / 2] + i % 2;
            tok[i] = (11 * s + 5 * i + 1) % V;
            tgt[i] = (3 * s + 13 * i + 2) % V;
        }
        len[0] += 2, len[1] += 2;
        st = step(e, &dc, DEC, slot, pos, tok, x, r->logits + (size_t)(PRE + s * DEC) * V, tgt, r->lp + s * DEC,
                  r->am + s * DEC);
    }
    free(x);
    g1_engine_free(e);
    return st;
}

int main(int argc, char **argv)
{
    int only_cfg = -1;
    long only_k = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            only_cfg = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only_k = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--config N] [--only K]\n", argv[0]);
            return 2;
        }
    }
    g1_config C;
    g1_weights W;
    if (g1_config_preset("tiny", &C) != G1_OK)
        return 1;
    C.num_layers = 2;
    int blocks[G1_NUM_QMAT];
    g1_synth_blocks(&C, blocks);
    g1_synth s = {.cfg = C, .seed = 5, .qk_gain = 1};
    if (g1_weights_alloc(&W, &C, 0, C.num_layers, 0, C.num_experts, blocks, 1) != G1_OK ||
        g1_synth_weights(&s, &W) != G1_OK || g1_weights_prepare(&W) != G1_OK) {
        fprintf(stderr, "model: %s\n", g1_last_error());
        return 1;
    }
    size_t nl = (size_t)(PRE + STEPS * DEC) * C.vocab_size;
    out clean = {.logits = malloc(nl * sizeof(float))}, got = {.logits = malloc(nl * sizeof(float))};
    regex_t where;
    if (!clean.logits || !got.logits || regcomp(&where, "src/cuda/[a-z_]+\\.(c|cu):[0-9]+: ", REG_EXTENDED)) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    char live[256];
    long total = 0, held = 0; /* what is live in the emulation (a leak is told once) */
    int n_failed = 0, n_same = 0;
    for (int ci = 0; ci < (int)(sizeof CFGS / sizeof CFGS[0]); ci++) {
        if (only_cfg >= 0 && ci != only_cfg)
            continue;
        const cfg *c = &CFGS[ci];
        g1emu_fail_calls(0);
        if (pass(&W, c, &clean) != G1_OK) {
            fprintf(stderr, "%s: the clean pass failed: %s\n", c->name, g1_last_error());
            return 1;
        }
        long n = g1emu_fail_calls(0);
        long now = g1emu_live(live, sizeof live);
        CHECK(now == held, "%s: the clean pass leaves nothing more live (%s)", c->name, live);
        held = now;
        printf("%s: %ld calls\n", c->name, n);
        total += n;
        for (long k = only_k ? only_k : 1; k <= (only_k ? only_k : n); k++) {
            g1emu_fail_calls(k);
            g1_clear_error();
            memset(got.logits, 0, nl * sizeof(float));
            g1_status st = pass(&W, c, &got);
            char failed[160], unread[320];
            snprintf(failed, sizeof failed, "%s", g1emu_failed());
            snprintf(unread, sizeof unread, "%s", g1emu_unread());
            g1emu_fail_calls(0);
            (void)cudaGetLastError(); /* none left for the next pass: errors are not sticky here */
            CHECK(!unread[0], "%s: call %ld (%s) failed: %s", c->name, k, failed, unread);
            const char *err = strrchr(failed, ' ') ? strrchr(failed, ' ') + 1 : "";
            if (!failed[0]) {
                CHECK(0, "%s: call %ld of %ld never made (the calls are not the same each pass)", c->name, k, n);
            } else if (st != G1_OK) {
                const char *msg = g1_last_error();
                n_failed++;
                CHECK(st == G1_ERR_CUDA && strstr(msg, err) && !regexec(&where, msg, 0, NULL, 0),
                         "%s: call %ld (%s) failed the pass with a message naming %s and a src/cuda file:line "
                         "(%s: %s)", c->name, k, failed, err, g1_status_name(st), msg);
            } else {
                n_same++;
                printf("%s: call %ld (%s) failed, the pass succeeded\n", c->name, k, failed);
                int same = !memcmp(got.logits, clean.logits, nl * sizeof(float)) &&
                           !memcmp(got.lp, clean.lp, sizeof got.lp) && !memcmp(got.am, clean.am, sizeof got.am);
                CHECK(same, "%s: call %ld (%s) failed, the pass succeeded: its results equal the clean pass's",
                         c->name, k, failed);
            }
            now = g1emu_live(live, sizeof live);
            CHECK(now == held, "%s: call %ld (%s) failed: nothing more left live (%s)", c->name, k, failed, live);
            held = now; /* a leak reported once, not again at every later call */
        }
    }
    printf("%ld calls failed in turn: %d runs failed with the error told, %d succeeded with the clean results\n",
           only_k ? 1 : total, n_failed, n_same);
    regfree(&where);
    free(clean.logits);
    free(got.logits);
    g1_weights_free(&W);
    printf("%s: %d failure(s)\n", tu_failures ? "FAIL" : "PASS", tu_failures);
    return tu_failures ? 1 : 0;
}
