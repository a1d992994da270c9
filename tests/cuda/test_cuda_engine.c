/* The CUDA engine against the CPU engine on synthetic models built in
 * memory (no HDF5): whole-model logits on tiny and small (relative error
 * <= 1e-3 on the near-float32 paths, tighter than the 1e-2: they
 * measure ~1e-5 on the CPU emulation; the bf16 GEMM path by rows), prefill
 * + decode, greedy tokens equal for 32 steps on a model
 * with clear margins, a sequence alone vs inside a ragged batch, refusals,
 * g1_engine's dispatch to the backend, and the engine-memory calls of
 * grok1-run --gpu-direct, the score of rows on the device against the
 * logits reduced on the host, the device's logits and scores in chunks
 * against one chunk, forks of a slot's prefix into another.
 * `--full [TOKENS]`: the whole-model comparison alone, at Grok-1's real
 * shapes with one layer. `--cuda-tune SPEC` (grok1-run's) gives every CUDA
 * engine those switches: scripts/gpu-check.sh reruns a failed suite with
 * the tensor cores ruled out. Exits 77 without a GPU. */
#include <string.h>

#include "cuda/cuda_engine.h"
#include "cuda/cuda_tune.h"
#include "engine.h"
#include "synth.h"
#include "sampler.h"
#include "cudatest.h"

enum { N = 40 };

typedef struct model {
    g1_config C;
    g1_weights W;
} model;

static int full_layers; /* --full: grok-1 with this many layers */
static g1_cuda_opts tune; /* --cuda-tune: every CUDA engine's switches */

static void mk_model(model *m, const char *preset, uint64_t seed, double out_mult)
{
    ct_ok(g1_config_preset(preset, &m->C), "preset");
    if (!strcmp(preset, "grok-1"))
        m->C.num_layers = full_layers;
    if (out_mult > 0)
        m->C.output_multiplier = out_mult;
    int blocks[G1_NUM_QMAT];
    g1_synth_blocks(&m->C, blocks);
    g1_synth s = {.cfg = m->C, .seed = seed, .qk_gain = 1};
    ct_ok(g1_weights_alloc(&m->W, &m->C, 0, m->C.num_layers, 0, m->C.num_experts, blocks, 1), "alloc");
    ct_ok(g1_synth_weights(&s, &m->W), "synth");
    ct_ok(g1_weights_prepare(&m->W), "prepare");
}

/* An engine through g1_engine (CPU or CUDA); split: CUDA GEMM inputs as
 * bf16 hi + lo (grok1-run --cuda-gemm bf16x2). */
typedef struct eng {
    g1_engine *e;
} eng;

/* The GPU the CUDA engines use: G1_TEST_DEVICE (default 0). The emulation's
 * race build runs the tests on device 1 of 2 too (meson.build), where a
 * path that launches or allocates before setting the engine's device
 * touches device 0's memory and is reported. */
static int test_device(g1_backend be)
{
    const char *d = getenv("G1_TEST_DEVICE");
    return be == G1_BACKEND_CUDA && d ? atoi(d) : 0;
}

static eng mk_engine(model *m, g1_backend be, int slots, int max_batch, int split)
{
    g1_engine_opts o = {.n_slots = slots, .max_batch = max_batch, .backend = be, .cuda_gemm = (g1_cuda_gemm)split,
                        .device = test_device(be), .cuda_tune = tune};
    eng r = {0};
    ct_ok(g1_engine_init(&r.e, &m->W, &o, NULL), "engine");
    static int said; /* once for each GEMM choice */
    char paths[512];
    if (!(said >> split & 1) && g1_engine_cuda_paths(r.e, paths, sizeof paths)) {
        printf("cuda paths (%s, %s): %s\n", m->C.vocab_size == 131072 ? "real vocabulary" : "test model",
               split == G1_CUDA_GEMM_BF16 ? "bf16 GEMM" : split == G1_CUDA_GEMM_BF16X2 ? "bf16x2" : "f32", paths);
        said |= 1 << split;
    }
    return r;
}

static void eng_free(eng e) { g1_engine_free(e.e); }

/* With G1_TEST_DEVICE, this thread's current device back to 0 before each
 * engine call, as another engine's caller would leave it: every entry
 * point must set its engine's device itself. */
static void away(void)
{
    if (getenv("G1_TEST_DEVICE"))
        ct_cu(cudaSetDevice(0), "device 0");
}

/* One step over (slot, pos, token) triples; logits (T, V). */
static void step(model *m, eng e, int T, const int *slot, const int *pos, const int *tok, float *logits)
{
    float *x = malloc((size_t)T * m->C.emb_size * 4);
    g1_batch b = {.T = T, .slot = slot, .pos = pos};
    away();
    ct_ok(g1_engine_embed(e.e, T, tok, x), "embed");
    away();
    ct_ok(g1_engine_forward(e.e, &b, x), "forward");
    away();
    ct_ok(g1_engine_logits(e.e, T, x, logits), "logits");
    free(x);
}

static void run_seq(model *m, eng e, int s, const int *tok, int n, int chunk, float *logits)
{
    int slot[N], pos[N];
    for (int p0 = 0; p0 < n; p0 += chunk) {
        int k = n - p0 < chunk ? n - p0 : chunk;
        for (int i = 0; i < k; i++)
            slot[i] = s, pos[i] = p0 + i;
        step(m, e, k, slot, pos, tok + p0, logits + (size_t)p0 * m->C.vocab_size);
    }
}

/* max |a - b| / max |b| over the whole array, and over each row */
static double rel_err(const float *a, const float *b, size_t n)
{
    double mx = 0, d = 0;
    for (size_t i = 0; i < n; i++) {
        mx = fabs(b[i]) > mx ? fabs(b[i]) : mx;
        d = fabs((double)a[i] - b[i]) > d ? fabs((double)a[i] - b[i]) : d;
    }
    return mx > 0 ? d / mx : d;
}

static void check_rel(const char *what, const float *got, const float *ref, size_t n, double tol)
{
    double r = rel_err(got, ref, n);
    char name[160];
    snprintf(name, sizeof name, "%s (rel %.2e <= %.0e)", what, r, tol);
    tu_check(r <= tol, name);
}

/* Rows (tokens) within tol; prints how many are not. A bf16 GEMM input can
 * flip a near-tied router choice (the bf16 reference can too), which changes
 * that token's output wholesale: the fast path is held to most rows. */
static int rows_within(const float *got, const float *ref, int rows, int V, double tol)
{
    int ok = 0;
    for (int r = 0; r < rows; r++)
        ok += rel_err(got + (size_t)r * V, ref + (size_t)r * V, (size_t)V) <= tol;
    return ok;
}

static void compare_model(const char *preset, uint64_t seed, int n, int chunk)
{
    model m;
    mk_model(&m, preset, seed, 0);
    int V = m.C.vocab_size, *tok = malloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++)
        tok[i] = tu_int(V);
    size_t sz = (size_t)n * V;
    float *ref = malloc(sz * 4), *got = malloc(sz * 4);
    eng cpu = mk_engine(&m, G1_BACKEND_CPU, 2, 64, 0);
    run_seq(&m, cpu, 0, tok, n, n, ref);
    char name[128];

    /* near-float32 GEMM inputs (hi + lo): the whole prompt at once */
    eng g = mk_engine(&m, G1_BACKEND_CUDA, 2, 64, 1);
    run_seq(&m, g, 0, tok, n, n, got);
    snprintf(name, sizeof name, "%s: prefill %d, bf16 hi+lo GEMM", preset, n);
    check_rel(name, got, ref, sz, 1e-3);
    eng_free(g);

    /* f32 (no GEMM): the whole prompt at once and in chunks give the same
     * bits, and so does decoding one by one on the default engine below
     * (one row per matmul: the GEMV kernel either way) */
    g = mk_engine(&m, G1_BACKEND_CUDA, 2, 64, G1_CUDA_GEMM_F32);
    float *f32 = malloc(sz * 4);
    run_seq(&m, g, 0, tok, n, n, f32);
    snprintf(name, sizeof name, "%s: prefill %d, f32 (GEMV only)", preset, n);
    check_rel(name, f32, ref, sz, 1e-3);
    if (chunk < n) {
        run_seq(&m, g, 1, tok, n, chunk, got);
        snprintf(name, sizeof name, "%s: f32: chunks of %d == prefill, bitwise", preset, chunk);
        tu_check(!memcmp(got, f32, sz * 4), name);
    }
    eng_free(g);

    /* default engine: one token at a time (GEMV path, float32 inputs) */
    g = mk_engine(&m, G1_BACKEND_CUDA, 2, 64, 0);
    run_seq(&m, g, 1, tok, n, 1, got);
    snprintf(name, sizeof name, "%s: decode 1 by 1 (GEMV)", preset);
    check_rel(name, got, ref, sz, 1e-3);
    snprintf(name, sizeof name, "%s: f32 prefill == decode 1 by 1, bitwise", preset);
    tu_check(!memcmp(got, f32, sz * 4), name);
    free(f32);

    /* default engine, chunks of `chunk` (GEMM path for chunk > 16) */
    run_seq(&m, g, 0, tok, n, chunk, got);
    int ok = rows_within(got, ref, n, V, 1e-2);
    snprintf(name, sizeof name, "%s: chunks of %d, bf16 GEMM: %d/%d rows within 1e-2 (>= 90%%)", preset, chunk, ok, n);
    tu_check(ok * 10 >= n * 9, name);
    eng_free(g);
    eng_free(cpu);
    g1_weights_free(&m.W);
    free(tok), free(ref), free(got);
}

static int argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

/* Greedy decoding for 32 steps, CPU and CUDA, on tiny with a large output
 * multiplier (clear margins between the top logits). */
static void greedy(void)
{
    model m;
    mk_model(&m, "tiny", 3, 40.0);
    int V = m.C.vocab_size, prompt[8] = {5, 17, 99, 250, 3, 77, 400, 12};
    eng cpu = mk_engine(&m, G1_BACKEND_CPU, 1, 16, 0), gpu = mk_engine(&m, G1_BACKEND_CUDA, 1, 16, 0);
    eng es[2] = {cpu, gpu};
    int out[2][32];
    float *lg = malloc((size_t)8 * V * 4);
    for (int b = 0; b < 2; b++) {
        int slot[8] = {0}, pos[8];
        for (int i = 0; i < 8; i++)
            pos[i] = i;
        step(&m, es[b], 8, slot, pos, prompt, lg);
        int t = argmax(lg + (size_t)7 * V, V);
        for (int s = 0; s < 32; s++) {
            out[b][s] = t;
            int p = 8 + s;
            step(&m, es[b], 1, slot, &p, &t, lg);
            t = argmax(lg, V);
        }
    }
    int same = 0;
    while (same < 32 && out[0][same] == out[1][same])
        same++;
    char name[96];
    snprintf(name, sizeof name, "greedy 32 steps: CPU == CUDA (%d equal)", same);
    tu_check(same == 32, name);
    eng_free(cpu), eng_free(gpu), g1_weights_free(&m.W), free(lg);
}

/* A sequence alone vs interleaved with two others in ragged steps, on the
 * GPU; decode-sized steps (GEMV path) so it should even be bitwise. */
static void batch_independence(void)
{
    model m;
    mk_model(&m, "tiny", 11, 0);
    int V = m.C.vocab_size, tok[3][24], lens[3] = {24, 17, 9}, done[3] = {0};
    for (int q = 0; q < 3; q++)
        for (int i = 0; i < 24; i++)
            tok[q][i] = tu_int(V);
    size_t sz = (size_t)24 * V;
    float *alone = malloc(sz * 4), *mixed = malloc(sz * 4), *tmp = malloc((size_t)16 * V * 4);
    eng g = mk_engine(&m, G1_BACKEND_CUDA, 3, 16, 0);
    run_seq(&m, g, 0, tok[0], 24, 5, alone);
    g1_engine_reset_slot(g.e, 0);
    while (done[0] < lens[0] || done[1] < lens[1] || done[2] < lens[2]) {
        int slot[16], pos[16], tk[16], owner[16], T = 0;
        for (int q = 0; q < 3; q++)
            for (int i = 0; i < (q == 0 ? 5 : q == 1 ? 3 : 1) && done[q] < lens[q]; i++, done[q]++) {
                slot[T] = q, pos[T] = done[q], tk[T] = tok[q][done[q]], owner[T++] = q;
            }
        step(&m, g, T, slot, pos, tk, tmp);
        for (int t = 0; t < T; t++)
            if (owner[t] == 0)
                memcpy(mixed + (size_t)pos[t] * V, tmp + (size_t)t * V, (size_t)V * 4);
    }
    check_rel("alone == in a ragged batch (GPU)", mixed, alone, sz, 1e-5);
    printf("  (bitwise: %s)\n", memcmp(mixed, alone, sz * 4) ? "no" : "yes");

    /* refusals, as the CPU engine */
    int sl = 2, p = 9, t = V;
    float x[64 * 16];
    g1_batch b = {.T = 1, .slot = &sl, .pos = &p};
    g1_engine_reset_slot(g.e, 2);
    tu_check(g1_engine_forward(g.e, &b, x) == G1_ERR_ARG, "gap in positions refused");
    sl = 7;
    tu_check(g1_engine_forward(g.e, &b, x) == G1_ERR_ARG, "unknown slot refused");
    tu_check(g1_engine_embed(g.e, 1, &t, x) == G1_ERR_RANGE, "token id out of range refused");
    tu_check(g1_engine_slot_len(g.e, 0) == 24, "slot length kept");
    /* T == 0 walks the layers without work */
    g1_batch z = {.T = 0, .slot = &sl, .pos = &p};
    tu_check(g1_engine_forward(g.e, &z, x) == G1_OK, "empty batch");
    eng_free(g), g1_weights_free(&m.W);
    free(alone), free(mixed), free(tmp);
}

/* A dispatch that works the way mpi/'s direct all-to-all does, inside one
 * process: rows packed in engine memory (g1_engine_gather_mem), the
 * experts over engine memory, the results unpacked for the engine to
 * combine. */
typedef struct rows_ctx {
    g1_engine *e;
    float *sb;       /* (max rows, D) engine memory */
    int *map, calls; /* (max rows) host */
} rows_ctx;

static g1_status host_run_unused(void *ctx, int layer, int T, const float *x, const int *idx, const float *gate,
                                 float *out)
{
    (void)ctx, (void)layer, (void)T, (void)x, (void)idx, (void)gate, (void)out;
    return G1_FAIL(G1_ERR_INTERNAL, "the host dispatch ran although run_rows_mem is set");
}

static g1_status rows_mem(void *ctx, int layer, int T, const float *x, const int *idx, float *yk)
{
    rows_ctx *r = ctx;
    int k = g1_engine_config(r->e)->num_selected_experts, n = T * k;
    r->calls++;
    for (int i = 0; i < n; i++)
        r->map[i] = i / k;
    G1_TRY(g1_engine_gather_mem(r->e, n, x, r->map, r->sb));
    G1_TRY(g1_moe_expert_rows_mem(r->e, layer, n, r->sb, idx, r->sb));
    for (int i = 0; i < n; i++)
        r->map[i] = i;
    return g1_engine_gather_mem(r->e, n, r->sb, r->map, yk);
}

/* The engine-memory entry points grok1-run --gpu-direct uses, on both
 * backends: forward_mem from one engine buffer into another and the rows
 * dispatch give the logits of the plain engine, bitwise (the same kernels
 * on the same rows). */
static void engine_memory(g1_backend be, const char *what)
{
    model m;
    mk_model(&m, "tiny", 13, 0);
    int V = m.C.vocab_size, D = m.C.emb_size, n = 22, MB = 8, k = m.C.num_selected_experts;
    int *tok = malloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++)
        tok[i] = tu_int(V);
    size_t sz = (size_t)n * V;
    float *ref = malloc(sz * 4), *got = malloc(sz * 4), *x = malloc((size_t)MB * D * 4);
    eng plain = mk_engine(&m, be, 1, MB, 0);
    /* chunks of 8, then 1 by 1: both matmul paths on cuda */
    run_seq(&m, plain, 0, tok, 16, MB, ref);
    for (int p = 16; p < n; p++) {
        int s0 = 0;
        step(&m, plain, 1, &s0, &p, tok + p, ref + (size_t)p * V);
    }

    rows_ctx rc = {.map = malloc((size_t)MB * k * sizeof(int))};
    g1_moe_dispatch dp = {.run = host_run_unused, .run_rows_mem = rows_mem, .ctx = &rc};
    g1_engine_opts o = {.n_slots = 1, .max_batch = MB, .backend = be, .device = test_device(be), .cuda_tune = tune};
    ct_ok(g1_engine_init(&rc.e, &m.W, &o, &dp), "engine with a rows dispatch");
    float *xin, *xout;
    ct_ok(g1_engine_mem_alloc(rc.e, (size_t)MB * k * D * 4, (void **)&rc.sb), "mem_alloc");
    ct_ok(g1_engine_mem_alloc(rc.e, (size_t)MB * D * 4, (void **)&xin), "mem_alloc");
    ct_ok(g1_engine_mem_alloc(rc.e, (size_t)MB * D * 4, (void **)&xout), "mem_alloc");
    for (int p0 = 0; p0 < n;) {
        int T = p0 < 16 ? MB : 1, slot[8] = {0}, pos[8];
        for (int i = 0; i < T; i++)
            pos[i] = p0 + i;
        g1_batch b = {.T = T, .slot = slot, .pos = pos};
        ct_ok(g1_engine_embed(rc.e, T, tok + p0, x), "embed");
        ct_ok(g1_engine_copy_mem(rc.e, xin, x, (size_t)T * D * 4), "copy in");
        ct_ok(g1_engine_forward_mem(rc.e, &b, xin, xout), "forward_mem");
        memset(x, 0, (size_t)T * D * 4);
        ct_ok(g1_engine_copy_mem(rc.e, x, xout, (size_t)T * D * 4), "copy out");
        ct_ok(g1_engine_logits(rc.e, T, x, got + (size_t)p0 * V), "logits");
        p0 += T;
    }
    char name[128];
    /* the same kernels on the same rows, the combine unfused on either side */
    snprintf(name, sizeof name, "%s: forward_mem + rows dispatch == plain engine, bitwise (rel %.1e)", what,
             rel_err(got, ref, sz));
    tu_check(!memcmp(got, ref, sz * 4), name);
    snprintf(name, sizeof name, "%s: the rows dispatch ran every layer of every step", what);
    tu_check(rc.calls == m.C.num_layers * (2 + (n - 16)), name);
    /* in place, as a worker may */
    int s0 = 0, p = 0;
    g1_batch b = {.T = 1, .slot = &s0, .pos = &p};
    ct_ok(g1_engine_embed(rc.e, 1, tok, x), "embed");
    ct_ok(g1_engine_copy_mem(rc.e, xin, x, (size_t)D * 4), "copy in");
    ct_ok(g1_engine_forward_mem(rc.e, &b, xin, xin), "forward_mem in place");
    ct_ok(g1_engine_copy_mem(rc.e, x, xin, (size_t)D * 4), "copy out");
    ct_ok(g1_engine_logits(rc.e, 1, x, got), "logits");
    snprintf(name, sizeof name, "%s: forward_mem in place, bitwise", what);
    tu_check(!memcmp(got, ref, (size_t)V * 4), name);
    g1_engine_free(rc.e);
    eng_free(plain);
    g1_weights_free(&m.W);
    free(rc.map), free(tok), free(ref), free(got), free(x);
}

/* --kv-cache bf16: keys and values rounded to bf16 as they are stored. On
 * the near-float32 GEMM the logits are the CPU's with bf16 caches (it keeps
 * the rounded values as float32) within 1e-2, and differ from the float32
 * caches' (the rounding is applied); with the f32 path a prefill and a
 * token-by-token decode give the same bits (the rounding does not depend on
 * the batch). */
static void kv_bf16(void)
{
    model m;
    mk_model(&m, "tiny", 31, 0);
    int V = m.C.vocab_size, n = N, tok[N];
    for (int i = 0; i < n; i++)
        tok[i] = tu_int(V);
    size_t sz = (size_t)n * V;
    float *ref = malloc(sz * 4), *f32kv = malloc(sz * 4), *got = malloc(sz * 4), *dec = malloc(sz * 4);
    g1_engine_opts o = {.n_slots = 2, .max_batch = 64, .backend = G1_BACKEND_CPU, .kv_cache = G1_KV_BF16,
                        .cuda_tune = tune};
    eng cpu;
    ct_ok(g1_engine_init(&cpu.e, &m.W, &o, NULL), "cpu engine with bf16 KV caches");
    run_seq(&m, cpu, 0, tok, n, n, ref);
    eng g = mk_engine(&m, G1_BACKEND_CUDA, 1, 64, G1_CUDA_GEMM_BF16X2);
    run_seq(&m, g, 0, tok, n, n, f32kv);
    eng_free(g);
    o.backend = G1_BACKEND_CUDA;
    o.cuda_gemm = G1_CUDA_GEMM_BF16X2;
    o.device = test_device(G1_BACKEND_CUDA);
    ct_ok(g1_engine_init(&g.e, &m.W, &o, NULL), "engine with bf16 KV caches");
    run_seq(&m, g, 0, tok, n, n, got);
    eng_free(g);
    /* 4e-4 on the emulation: an input a hair off a bf16 rounding boundary
     * can round the other way (the float32 caches are 1e-5 apart); held to
     * the 1e-2, far below the 0.47 float32 caches are off */
    check_rel("bf16 KV caches (bf16x2 GEMM) vs cpu with bf16 KV caches", got, ref, sz, 1e-2);
    tu_check(memcmp(got, f32kv, sz * 4) != 0, "bf16 KV caches change the logits (the rounding is applied)");
    printf("  bf16 vs float32 caches: max relative difference %.3g\n", rel_err(got, f32kv, sz));
    o.cuda_gemm = G1_CUDA_GEMM_F32;
    ct_ok(g1_engine_init(&g.e, &m.W, &o, NULL), "engine with bf16 KV caches, f32 path");
    run_seq(&m, g, 0, tok, n, n, got);
    run_seq(&m, g, 1, tok, n, 1, dec);
    tu_check(!memcmp(got, dec, sz * 4), "bf16 KV caches, f32 path: prefill == decode 1 by 1, bitwise");
    eng_free(g);
    o.kv_cache = (g1_kv_cache)7;
    tu_check(g1_engine_init(&g.e, &m.W, &o, NULL) == G1_ERR_ARG && !g.e, "an unknown KV cache type refused");
    eng_free(cpu);
    g1_weights_free(&m.W);
    free(ref), free(f32kv), free(got), free(dec);
}

/* A weights source over the synthetic generator: parts on demand, counted;
 * odd_layer (>= 0) gets other attn_o scale blocks; wrong_part leaves out
 * the first layer asked for. */
typedef struct synth_src {
    uint64_t seed;
    int calls, odd_layer, wrong_part;
    size_t biggest, fresh; /* the largest part; bytes newly allocated over all parts */
    size_t last, pair;     /* the last part's bytes; the most of two parts in a row */
} synth_src;

static g1_status synth_part(const g1_weights_source *src, int l0, int l1, int with_embedding, g1_weights *w)
{
    synth_src *ss = src->ctx;
    int blocks[G1_NUM_QMAT];
    g1_synth_blocks(&src->cfg, blocks);
    if (ss->odd_layer >= l0 && ss->odd_layer < l1)
        blocks[G1_ATTN_O] /= 2;
    if (ss->wrong_part && l1 > l0)
        l0++;
    G1_TRY(g1_weights_realloc(w, &src->cfg, l0, l1, src->expert0, src->expert1, blocks, with_embedding));
    g1_synth s = {.cfg = src->cfg, .seed = ss->seed, .qk_gain = 1};
    g1_status st = g1_synth_weights(&s, w);
    if (st == G1_OK)
        st = g1_weights_prepare(w);
    ss->fresh += w->fresh_bytes; /* the part and its split scales (prepare) */
    if (st != G1_OK)
        g1_weights_free(w);
    ss->calls++;
    size_t b = g1_weights_bytes(w);
    ss->biggest = b > ss->biggest ? b : ss->biggest;
    ss->pair = b + ss->last > ss->pair ? b + ss->last : ss->pair;
    ss->last = b;
    return st;
}

/* g1_engine_init_source with the emulation's variable `var` (G1EMU_MEMORY,
 * G1EMU_MALLOC_LIMIT) at `value` during the load, the source started afresh. */
static g1_status load_under(const char *var, size_t value, const g1_weights_source *src, synth_src *ss,
                            const g1_engine_opts *o, eng *out)
{
    char v[32];
    g1_weights_held held;
    snprintf(v, sizeof v, "%zu", value);
    setenv(var, v, 1);
    *ss = (synth_src){.seed = 21, .odd_layer = -1};
    g1_status st = g1_engine_init_source(&out->e, src, o, NULL, &held);
    unsetenv(var);
    return st;
}

/* g1_engine_init_source: the same logits, bit for bit, as the engine over
 * the whole weights; CUDA loads a layer at a time (plus the embedding),
 * each while the one before is copied to the GPU, and never holds more than
 * two parts in a row on the host, in the memory of two layers and the
 * embedding part; a layer with other scale blocks and a source giving the
 * wrong part are refused; the room counted for the share is what the load
 * takes, a GPU too small is refused before a third part is read, and an
 * allocation failing mid-load fails with the copying thread's message. */
static void weights_source(g1_backend be, const char *what)
{
    model m;
    mk_model(&m, "tiny", 21, 0);
    int V = m.C.vocab_size, n = 12, tok[12];
    for (int i = 0; i < n; i++)
        tok[i] = tu_int(V);
    float *ref = malloc((size_t)n * V * 4), *got = malloc((size_t)n * V * 4);
    eng r = mk_engine(&m, be, 1, 16, 1);
    run_seq(&m, r, 0, tok, n, 5, ref);
    eng_free(r);

    synth_src ss = {.seed = 21, .odd_layer = -1};
    g1_weights_source src = {.cfg = m.C, .layer0 = 0, .layer1 = m.C.num_layers, .expert0 = 0,
                             .expert1 = m.C.num_experts, .with_embedding = 1, .load = synth_part, .ctx = &ss};
    g1_engine_opts o = {.n_slots = 1, .max_batch = 16, .backend = be, .cuda_gemm = G1_CUDA_GEMM_BF16X2,
                        .device = test_device(be), .cuda_tune = tune};
    g1_weights_held held;
    eng s = {0};
    ct_ok(g1_engine_init_source(&s.e, &src, &o, NULL, &held), "engine from a source");
    run_seq(&m, s, 0, tok, n, 5, got);
    eng_free(s);
    char msg[200];
    snprintf(msg, sizeof msg, "%s from a source: logits bitwise equal to the engine over the whole weights", what);
    tu_check(!memcmp(got, ref, (size_t)n * V * 4), msg);
    size_t whole = g1_weights_bytes(&m.W);
    snprintf(msg, sizeof msg, "%s from a source: %d load(s), %zu bytes held of %zu, at most %zu on the host", what,
             ss.calls, held.bytes, whole, held.host_peak);
    int parts = be == G1_BACKEND_CUDA ? m.C.num_layers + 1 : 1;
    tu_check(ss.calls == parts && held.bytes == whole &&
                 (be == G1_BACKEND_CPU ? held.host_peak == whole && held.host_peak == ss.biggest
                                       : held.host_peak == ss.pair && held.host_peak < whole / 2),
             msg);
    printf("  %s\n", msg);
    if (be == G1_BACKEND_CUDA) {
        /* the layers after the first two in the host memory of the part
         * before last: what is allocated is two layers and the embedding
         * part */
        g1_weights one, emb;
        int blocks[G1_NUM_QMAT];
        g1_synth_blocks(&m.C, blocks);
        g1_synth sy = {.cfg = m.C, .seed = 21, .qk_gain = 1};
        ct_ok(g1_weights_alloc(&one, &m.C, 0, 1, 0, m.C.num_experts, blocks, 0), "one layer");
        ct_ok(g1_synth_weights(&sy, &one), "one layer's weights and split scales");
        size_t want = 2 * one.fresh_bytes;
        g1_weights_free(&one);
        ct_ok(g1_weights_alloc(&emb, &m.C, 0, 0, 0, m.C.num_experts, blocks, 1), "the embedding part");
        want += emb.fresh_bytes;
        g1_weights_free(&emb);
        snprintf(msg, sizeof msg, "%s from a source: %zu bytes allocated for %d layers and the embedding, "
                 "as for two layers and the embedding (%zu)", what, ss.fresh, m.C.num_layers, want);
        tu_check(ss.fresh == want && m.C.num_layers > 2, msg);
        printf("  %s\n", msg);
    }

    if (be == G1_BACKEND_CUDA) {
        /* The room for the share, judged when the first part is read: the
         * bytes the engine counts (weights and scratch) against what a load
         * takes. On a GPU, a load takes at least them (the KV caches
         * come later; cuBLAS may add its own). In the emulation, which
         * allocates exactly what is asked (G1EMU_MEMORY sets the size of the
         * device: a GPU cannot be made smaller), exactly them: a GPU of
         * that much room loads, one byte less is refused before a third
         * part is read; and a GPU that fails an allocation mid-load (the
         * embedding, larger than any allocation of a layer: another
         * process took the room) fails with the copying thread's message
         * after every part was read. */
        struct cudaDeviceProp prop;
        size_t free_b = 0, total = 0, wb = 0, bb = 0, fb = 0, free_after = 0;
        ct_ok(g1_engine_init_source(&s.e, &src, &o, NULL, &held), "engine from a source again");
        ct_cu(cudaMemGetInfo(&free_after, &total), "memory info");
        tu_check(g1_engine_gpu_memory(s.e, &wb, &bb, &fb) && wb > held.bytes / 2 && bb > 0,
                 "the engine reports the room its weights and scratch take");
        snprintf(msg, sizeof msg, "the room counted before the load: weights %zu + scratch %zu bytes; the load "
                 "took %zu (%zu free before it, %zu after)", wb, bb, fb - free_after, fb, free_after);
        tu_check(fb >= free_after && wb + bb <= fb - free_after, msg);
        printf("  %s\n", msg);
        eng_free(s);
        s.e = NULL;
        ct_cu(cudaGetDeviceProperties(&prop, o.device), "properties");
        /* the planner's count, with no engine (grok1-plan --backend cuda) */
        size_t pb = 0;
        ct_ok(g1_cuda_engine_buffer_bytes(&m.C, m.C.num_layers, m.C.num_experts, &o, prop.multiProcessorCount,
                                          prop.major, 1, &pb), "the scratch counted without an engine");
        snprintf(msg, sizeof msg, "the scratch counted without an engine (%d SMs, compute %d): %zu bytes, as the "
                 "engine's %zu", prop.multiProcessorCount, prop.major, pb, bb);
        tu_check(pb == bb, msg);
        printf("  %s\n", msg);
        if (!strncmp(prop.name, "g1emu", 5)) {
            tu_check(wb + bb == fb - free_after, "in the emulation the load takes exactly the bytes counted");
            ct_cu(cudaMemGetInfo(&free_b, &total), "memory info");
            size_t used = total - free_b;
            g1_status st = load_under("G1EMU_MEMORY", used + wb + bb, &src, &ss, &o, &s);
            tu_check(st == G1_OK, "a GPU with exactly the room counted loads the share");
            if (st != G1_OK)
                printf("  %s\n", g1_last_error());
            eng_free(s);
            s.e = NULL;
            st = load_under("G1EMU_MEMORY", used + wb + bb - 1, &src, &ss, &o, &s);
            snprintf(msg, sizeof msg, "a GPU one byte too small, refused after %d of %d parts read, naming the "
                     "sizes and what to change", ss.calls, m.C.num_layers + 1);
            const char *err = g1_last_error();
            tu_check(st == G1_ERR_CUDA && !s.e && strstr(err, "is too small for this rank's share") &&
                         strstr(err, "--max-batch-tokens") && strstr(err, "are free (checked before loading") &&
                         ss.calls <= 2,
                     msg);
            printf("  %s: %s\n", msg, err);
            /* an allocation refused mid-load: every allocation of a layer
             * passes, the embedding's (V*D*2 bytes) does not */
            size_t layer_max = 0;
            for (int id = 0; id < G1_NUM_QMAT; id++) {
                int rows, cols;
                g1_qmat_shape(&m.C, (g1_qmat_id)id, &rows, &cols);
                layer_max = (size_t)rows * cols > layer_max ? (size_t)rows * cols : layer_max;
            }
            size_t D = (size_t)m.C.emb_size, embb = (size_t)V * D * 2;
            layer_max = D * (size_t)m.C.num_experts * 4 > layer_max ? D * (size_t)m.C.num_experts * 4 : layer_max;
            tu_check(layer_max < embb, "the tiny model's embedding is its largest allocation");
            st = load_under("G1EMU_MALLOC_LIMIT", embb - 1, &src, &ss, &o, &s);
            snprintf(msg, sizeof msg, "an allocation refused mid-load, by the copying thread after %d of %d parts "
                     "read: refused with its message", ss.calls, m.C.num_layers + 1);
            tu_check(st == G1_ERR_CUDA && !s.e && strstr(g1_last_error(), "cudaMalloc of") &&
                         strstr(g1_last_error(), "too large for this GPU") && strstr(g1_last_error_where(), "cuda") &&
                         ss.calls == m.C.num_layers + 1,
                     msg);
            printf("  %s: %s (%s)\n", msg, g1_last_error(), g1_last_error_where());
        } else
            printf("  a GPU too small: not checked on a GPU (the emulation's G1EMU_MEMORY)\n");
        ss = (synth_src){.seed = 21, .odd_layer = 2};
        tu_check(g1_engine_init_source(&s.e, &src, &o, NULL, &held) == G1_ERR_FORMAT && !s.e &&
                     strstr(g1_last_error(), "layer 2: attn_o has"),
                 "a layer with other scale blocks refused");
        printf("  refused: %s\n", g1_last_error());
    }
    ss = (synth_src){.seed = 21, .odd_layer = -1, .wrong_part = 1};
    tu_check(g1_engine_init_source(&s.e, &src, &o, NULL, &held) == G1_ERR_ARG && !s.e &&
                 strstr(g1_last_error(), "another part"),
             "a source giving the wrong part refused");
    src.layer1 = m.C.num_layers + 1;
    tu_check(g1_engine_init_source(&s.e, &src, &o, NULL, &held) == G1_ERR_ARG && !s.e, "a range past the model");
    g1_weights_free(&m.W);
    free(ref), free(got);
}

/* g1_engine_score_rows (score mode's log-probs without logits on the host)
 * against the same engine's logits reduced by g1_row_logprob on the host:
 * 20 rows in chunks of max_batch 8, some without a target; argmaxes equal,
 * log-probs to 1e-12 (the order of a double sum), bitwise on the CPU. A row
 * of NaN hidden states fails with the CPU's message. */
static void score_rows(g1_backend be, const char *what)
{
    model m;
    mk_model(&m, "tiny", 3, 0);
    eng e = mk_engine(&m, be, 1, 8, 0);
    enum { T = 20 };
    int V = m.C.vocab_size, D = m.C.emb_size, tok[T], slot[T], pos[T], target[T], am[T];
    double lp[T];
    for (int t = 0; t < T; t++)
        tok[t] = tu_int(V), slot[t] = 0, pos[t] = t, target[t] = t % 7 == 3 ? -1 : tu_int(V);
    float *x = malloc((size_t)T * D * 4), *l = malloc((size_t)T * V * 4);
    for (int t0 = 0; t0 < T; t0 += 8) {
        int n = T - t0 < 8 ? T - t0 : 8;
        g1_batch b = {.T = n, .slot = slot + t0, .pos = pos + t0};
        ct_ok(g1_engine_embed(e.e, n, tok + t0, x + (size_t)t0 * D), "embed");
        ct_ok(g1_engine_forward(e.e, &b, x + (size_t)t0 * D), "forward");
    }
    ct_ok(g1_engine_logits(e.e, T, x, l), "logits");
    ct_ok(g1_engine_score_rows(e.e, T, x, target, lp, am), "score rows");
    int ok = 1;
    for (int t = 0; t < T; t++) {
        double want = 0;
        int32_t a = -1;
        ct_ok(g1_row_logprob(l + (size_t)t * V, V, target[t], &want, &a), "row logprob");
        int same = am[t] == a && (be == G1_BACKEND_CPU ? lp[t] == want : fabs(lp[t] - want) <= 1e-12 * (1 + fabs(want)));
        if (!same)
            fprintf(stderr, "%s: row %d: lp %.17g argmax %d, from the logits %.17g and %d\n", what, t, lp[t], am[t],
                    want, a);
        ok &= same;
    }
    char msg[128];
    snprintf(msg, sizeof msg, "%s: scores of 20 rows equal the logits' log-softmax", what);
    tu_check(ok, msg);
    x[(size_t)5 * D + 1] = NAN;
    g1_status st = g1_engine_score_rows(e.e, T, x, target, lp, am);
    snprintf(msg, sizeof msg, "%s: a NaN row fails naming its logit (%s)", what, st == G1_OK ? "ok" : g1_last_error());
    tu_check(st == G1_ERR_RANGE && strstr(g1_last_error(), "logit 0 is nan: the model produced a NaN or infinity"),
             msg);
    tu_check(g1_engine_scores_on_device(e.e) == (be == G1_BACKEND_CUDA), "scores on the device with cuda only");
    free(x), free(l);
    eng_free(e);
    g1_weights_free(&m.W);
}

/* The device's logits in chunks (g1_cuda_opts.logits_rows below a call's
 * rows) against one chunk: 40 rows of the same hidden states (the CPU
 * engine's), logits and scores bitwise equal to the engine that takes them
 * at once, the logits within compare_model's bounds of the CPU's. f32 (every
 * chunk on the float32 kernel): 6 chunks of at most 7 rows; bf16 GEMM: 2
 * chunks of 20 (at most 24: equal halves, both on cuBLAS as the 40 are; 24 +
 * 16 would put the 16 on the float32 kernel, other bits). */
static void logits_chunks(void)
{
    model m;
    mk_model(&m, "tiny", 13, 0);
    enum { T = 40 };
    int V = m.C.vocab_size, D = m.C.emb_size, tok[T], slot[T], pos[T], target[T];
    for (int t = 0; t < T; t++)
        tok[t] = tu_int(V), slot[t] = 0, pos[t] = t, target[t] = t % 9 == 4 ? -1 : tu_int(V);
    size_t sz = (size_t)T * V;
    float *x = malloc((size_t)T * D * 4), *ref = malloc(sz * 4), *one = malloc(sz * 4), *got = malloc(sz * 4);
    eng cpu = mk_engine(&m, G1_BACKEND_CPU, 1, T, 0);
    g1_batch b = {.T = T, .slot = slot, .pos = pos};
    ct_ok(g1_engine_embed(cpu.e, T, tok, x), "embed");
    ct_ok(g1_engine_forward(cpu.e, &b, x), "forward");
    ct_ok(g1_engine_logits(cpu.e, T, x, ref), "logits");
    struct {
        g1_cuda_gemm gemm;
        int rows;
    } runs[] = {{G1_CUDA_GEMM_F32, 7}, {G1_CUDA_GEMM_BF16, 24}};
    for (int r = 0; r < 2; r++) {
        const char *what = runs[r].gemm == G1_CUDA_GEMM_F32 ? "f32" : "bf16 GEMM";
        g1_engine *e[2];
        double lp[2][T];
        int am[2][T];
        char paths[512], want[64], msg[192];
        for (int k = 0; k < 2; k++) {
            g1_engine_opts o = {.n_slots = 1, .max_batch = T, .backend = G1_BACKEND_CUDA, .cuda_gemm = runs[r].gemm,
                                .device = test_device(G1_BACKEND_CUDA), .cuda_tune = tune};
            o.cuda_tune.logits_rows = k ? runs[r].rows : 0;
            ct_ok(g1_engine_init(&e[k], &m.W, &o, NULL), "engine");
            /* the default bound (256 MiB of rows) is over max_batch here: one chunk */
            snprintf(want, sizeof want, "; logits %d rows at a time", k ? runs[r].rows : T);
            g1_engine_cuda_paths(e[k], paths, sizeof paths);
            snprintf(msg, sizeof msg, "%s: the engine says \"%s\" (%d rows in %d chunk(s))", what, want + 2, T,
                     (T + (k ? runs[r].rows : T) - 1) / (k ? runs[r].rows : T));
            tu_check(strstr(paths, want) != NULL, msg);
            away();
            ct_ok(g1_engine_logits(e[k], T, x, k ? got : one), "logits");
            away();
            ct_ok(g1_engine_score_rows(e[k], T, x, target, lp[k], am[k]), "score rows");
        }
        snprintf(msg, sizeof msg, "%s: logits in chunks of <= %d == at once, bitwise", what, runs[r].rows);
        tu_check(!memcmp(got, one, sz * 4), msg);
        snprintf(msg, sizeof msg, "%s: scores in chunks of <= %d == at once, bitwise", what, runs[r].rows);
        tu_check(!memcmp(lp[0], lp[1], sizeof lp[0]) && !memcmp(am[0], am[1], sizeof am[0]), msg);
        if (runs[r].gemm == G1_CUDA_GEMM_F32) {
            snprintf(msg, sizeof msg, "%s: chunked logits vs the CPU's", what);
            check_rel(msg, got, ref, sz, 1e-3);
        } else {
            int ok = rows_within(got, ref, T, V, 1e-2);
            snprintf(msg, sizeof msg, "%s: chunked logits: %d/%d rows within 1e-2 of the CPU's (>= 90%%)", what, ok,
                     T);
            tu_check(ok * 10 >= T * 9, msg);
        }
        g1_engine_free(e[0]), g1_engine_free(e[1]);
    }
    eng_free(cpu);
    g1_weights_free(&m.W);
    free(x), free(ref), free(one), free(got);
}

/* Forks on the device: slot 0 runs a sequence; a batch forks its first 12
 * positions into slot 1 (while rewinding slot 0 to 4 in the same batch)
 * and continues the sequence there; the rows equal slot 0's own, bitwise
 * (the f32 path: a token's result does not depend on its batch), with
 * float32 and bf16 caches. The CPU engine likewise. */
static void forks(g1_backend be, g1_kv_cache kv, const char *what)
{
    model m;
    mk_model(&m, "tiny", 9, 0);
    g1_engine_opts o = {.n_slots = 3, .max_batch = 40, .backend = be, .cuda_gemm = G1_CUDA_GEMM_F32, .kv_cache = kv,
                        .device = test_device(be), .cuda_tune = tune};
    g1_engine *e;
    ct_ok(g1_engine_init(&e, &m.W, &o, NULL), "engine");
    enum { L = 30 };
    int V = m.C.vocab_size, D = m.C.emb_size, tok[L], slot[L], pos[L], tk[L];
    for (int t = 0; t < L; t++)
        tok[t] = tu_int(V), slot[t] = 0, pos[t] = t;
    float *x = malloc((size_t)L * D * 4), *full = malloc((size_t)L * V * 4), *got = malloc((size_t)L * V * 4);
    g1_batch b = {.T = L, .slot = slot, .pos = pos};
    ct_ok(g1_engine_embed(e, L, tok, x), "embed");
    ct_ok(g1_engine_forward(e, &b, x), "forward");
    ct_ok(g1_engine_logits(e, L, x, full), "logits");
    int T = 0;
    for (int p = 12; p < L; p++)
        slot[T] = 1, pos[T] = p, tk[T++] = tok[p];
    for (int p = 4; p < 8; p++)
        slot[T] = 0, pos[T] = p, tk[T++] = (tok[p] + 1) % V;
    g1_fork f = {.src = 0, .dst = 1, .n = 12};
    b = (g1_batch){.T = T, .slot = slot, .pos = pos, .n_fork = 1, .fork = &f};
    ct_ok(g1_engine_embed(e, T, tk, x), "embed");
    ct_ok(g1_engine_forward(e, &b, x), "forward with a fork");
    ct_ok(g1_engine_logits(e, T, x, got), "logits");
    char msg[128];
    snprintf(msg, sizeof msg, "%s: a forked prefix continued == the slot's own rows (bitwise)", what);
    tu_check(!memcmp(got, full + (size_t)12 * V, (size_t)(L - 12) * V * 4), msg);
    snprintf(msg, sizeof msg, "%s: slot lengths after the fork", what);
    tu_check(g1_engine_slot_len(e, 1) == L && g1_engine_slot_len(e, 0) == 8, msg);
    f = (g1_fork){.src = 0, .dst = 2, .n = 9}; /* slot 0 holds 8 */
    b = (g1_batch){.T = 0, .slot = slot, .pos = pos, .n_fork = 1, .fork = &f};
    snprintf(msg, sizeof msg, "%s: a fork longer than its source refused", what);
    tu_check(g1_engine_forward(e, &b, x) == G1_ERR_ARG, msg);
    free(x), free(full), free(got);
    g1_engine_free(e);
    g1_weights_free(&m.W);
}

/* A slot's caches grow by doubling from 64 positions, the cached rows
 * copied into the new allocation: 100 tokens in chunks of 32 on the f32
 * engine (the caches grow from 64 to 128 at position 64, the first token
 * of the third chunk, holding 64 written positions, as a decode step
 * there does) give the bits of one 100-token prefill, whose caches are 128
 * from the start; a row lost in the copy (or read at the old stride)
 * changes them. A growth within a batch copies rows the batch writes
 * again after, so it shows no lost last row. */
static void kv_growth(g1_kv_cache kv, const char *what)
{
    model m;
    mk_model(&m, "tiny", 11, 0);
    enum { L = 100 };
    g1_engine_opts o = {.n_slots = 2, .max_batch = L, .backend = G1_BACKEND_CUDA, .cuda_gemm = G1_CUDA_GEMM_F32,
                        .kv_cache = kv, .device = test_device(G1_BACKEND_CUDA), .cuda_tune = tune};
    eng e = {0};
    ct_ok(g1_engine_init(&e.e, &m.W, &o, NULL), "engine");
    int V = m.C.vocab_size, tok[L];
    for (int t = 0; t < L; t++)
        tok[t] = tu_int(V);
    float *one = malloc((size_t)L * V * 4), *chunks = malloc((size_t)L * V * 4);
    int slot[L], pos[L];
    for (int c = 0; c < 2; c++) /* slot 0 at once, slot 1 in chunks of 32 */
        for (int p0 = 0, n = c ? 32 : L; p0 < L; p0 += n) {
            int k = L - p0 < n ? L - p0 : n;
            for (int i = 0; i < k; i++)
                slot[i] = c, pos[i] = p0 + i;
            step(&m, e, k, slot, pos, tok + p0, (c ? chunks : one) + (size_t)p0 * V);
        }
    char msg[128];
    snprintf(msg, sizeof msg, "%s: caches grown from 64 to 128 positions holding 64 == made 128, bitwise", what);
    tu_check(!memcmp(one, chunks, (size_t)L * V * 4), msg);
    free(one), free(chunks);
    eng_free(e);
    g1_weights_free(&m.W);
}

/* --full [TOKENS]: only compare_model at Grok-1's real shapes, one layer
 * (6.5 GB of weights on the host and on the GPU): the GEMV and, above 16
 * tokens, the cuBLAS paths with real sizes (scripts/gpu-check.sh runs it
 * with 24 tokens when time is left). */
static int full(int n)
{
    full_layers = 1;
    compare_model("grok-1", 5, n, n > 16 ? n : 1);
    printf("%s: %d failure(s)\n", tu_failures ? "FAIL" : "PASS", tu_failures);
    return tu_failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    /* --no-small: everything but the small model's comparison (the
     * emulation's race check keeps 16 bytes of records per byte a kernel
     * touches: the small model's 1 GB would need 16 GB; its kernels and
     * paths are the tiny model's) */
    int small = 1, full_n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--full")) {
            full_n = 24;
            if (i + 1 < argc && argv[i + 1][0] != '-') {
                full_n = atoi(argv[++i]);
                if (full_n < 1 || full_n > N) {
                    fprintf(stderr, "test_cuda_engine --full [TOKENS]: TOKENS in 1..%d\n", N);
                    return 2;
                }
            }
        } else if (!strcmp(argv[i], "--no-small"))
            small = 0;
        else if (!strcmp(argv[i], "--cuda-tune") && i + 1 < argc) {
            if (g1_cuda_tune_parse(argv[++i], &tune) != G1_OK) {
                fprintf(stderr, "test_cuda_engine: %s\n", g1_last_error());
                return 2;
            }
        } else {
            fprintf(stderr, "usage: test_cuda_engine [--full [TOKENS] | --no-small] [--cuda-tune KEY=VALUE,...]\n");
            return 2;
        }
    }
    ct_need_gpu("test_cuda_engine");
    if (full_n)
        return full(full_n);
    compare_model("tiny", 7, N, 20);
    if (small)
        compare_model("small", 1, 24, 24);
    greedy();
    batch_independence();
    engine_memory(G1_BACKEND_CPU, "cpu");
    engine_memory(G1_BACKEND_CUDA, "cuda");
    kv_bf16();
    weights_source(G1_BACKEND_CPU, "cpu");
    weights_source(G1_BACKEND_CUDA, "cuda");
    score_rows(G1_BACKEND_CPU, "cpu");
    score_rows(G1_BACKEND_CUDA, "cuda");
    logits_chunks();
    forks(G1_BACKEND_CPU, G1_KV_F32, "cpu");
    forks(G1_BACKEND_CUDA, G1_KV_F32, "cuda");
    forks(G1_BACKEND_CUDA, G1_KV_BF16, "cuda, bf16 caches");
    kv_growth(G1_KV_F32, "cuda");
    kv_growth(G1_KV_BF16, "cuda, bf16 caches");
    printf("%s: %d failure(s)\n", tu_failures ? "FAIL" : "PASS", tu_failures);
    return tu_failures ? 1 : 0;
}
