/* Unit tests of the planner (partition/): cuts contiguous and covering,
 * optimal balance (against brute force), stage 0 lighter, memory sums
 * recomputed independently (and against real allocated weights), refusals
 * and their messages, JSON round trip and validation, model check. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "cuda/cuda_engine.h"
#include "cuda/cuda_tune.h"
#include "plan.h"
#include "synth.h"
#include "testutil.h"
#include "weights.h"


static g1_config preset(const char *name)
{
    g1_config c;
    if (g1_config_preset(name, &c) != G1_OK) {
        fprintf(stderr, "no preset %s\n", name);
        exit(1);
    }
    return c;
}

static g1_plan_request req_of(g1_config c, int P, int E)
{
    return (g1_plan_request){.cfg = c, .stages = P, .ep = E, .slots = 8, .context = 0, .max_batch_tokens = 256};
}

static double max_cost(const g1_plan *p)
{
    double m = 0;
    for (int s = 0; s < p->stages; s++)
        m = fmax(m, p->stage_cost[s]);
    return m;
}

/* ---- cuts ---- */

static int cuts_ok(const g1_plan *p)
{
    if (p->cut[0] != 0 || p->cut[p->stages] != p->cfg.num_layers)
        return 0;
    for (int s = 0; s < p->stages; s++)
        if (p->cut[s + 1] <= p->cut[s])
            return 0;
    return 1;
}

/* Smallest largest stage cost over every composition of L into P parts. */
static double brute(int L, int P, double c, double x0, int s, int left)
{
    if (s == P - 1)
        return left * c + (s == 0 ? x0 : 0);
    double best = INFINITY;
    for (int n = 1; n <= left - (P - 1 - s); n++) {
        double here = n * c + (s == 0 ? x0 : 0), rest = brute(L, P, c, x0, s + 1, left - n);
        best = fmin(best, fmax(here, rest));
    }
    return best;
}

static void test_cuts(void)
{
    const int Ls[] = {1, 2, 3, 5, 7, 12, 16, 64, 100, 333};
    const int Es[] = {1, 2, 4, 8};
    const int Vs[] = {512, 65536, 1 << 20};
    int n = 0, brute_n = 0;
    for (size_t li = 0; li < sizeof Ls / sizeof *Ls; li++)
        for (size_t vi = 0; vi < sizeof Vs / sizeof *Vs; vi++)
            for (size_t ei = 0; ei < sizeof Es / sizeof *Es; ei++) {
                int L = Ls[li];
                g1_config c = preset("tiny");
                c.num_layers = L;
                c.vocab_size = Vs[vi];
                int Ps[] = {1, 2, 3, L / 2, L - 1, L};
                for (size_t pi = 0; pi < sizeof Ps / sizeof *Ps; pi++) {
                    int P = Ps[pi];
                    if (P < 1 || P > L)
                        continue;
                    g1_plan_request r = req_of(c, P, Es[ei]);
                    g1_plan p;
                    g1_status st = g1_plan_make(&r, &p);
                    CHECK(st == G1_OK, "L=%d P=%d E=%d: %s", L, P, Es[ei], g1_last_error());
                    if (st != G1_OK)
                        continue;
                    n++;
                    CHECK(cuts_ok(&p), "L=%d P=%d E=%d: cuts not contiguous/covering", L, P, Es[ei]);
                    /* stage costs are what the cost model says */
                    for (int s = 0; s < P; s++) {
                        double want = (p.cut[s + 1] - p.cut[s]) * p.layer_cost + (s == 0 ? p.rank0_cost : 0);
                        CHECK(fabs(p.stage_cost[s] - want) <= 1e-9 * want, "stage_cost[%d]", s);
                    }
                    /* optimal: equal to brute force where feasible, and in
                     * any case within one layer of the lower bound */
                    double m = max_cost(&p);
                    if (L <= 16 && P <= 6) {
                        double b = brute(L, P, p.layer_cost, p.rank0_cost, 0, L);
                        CHECK(fabs(m - b) <= 1e-9 * b, "L=%d P=%d E=%d V=%d: max cost %.6g, optimum %.6g", L, P,
                              Es[ei], Vs[vi], m, b);
                        brute_n++;
                    }
                    /* no plan beats the mean, nor stage 0 with one layer */
                    double lower = fmax((L * p.layer_cost + p.rank0_cost) / P, p.layer_cost + p.rank0_cost);
                    CHECK(m <= lower + p.layer_cost * (1 + 1e-9), "L=%d P=%d: max %.6g above bound %.6g + a layer %.6g",
                          L, P, m, lower, p.layer_cost);
                    if (P == L)
                        for (int s = 0; s < P; s++)
                            CHECK(p.cut[s] == s, "P = L: stage %d starts at %d", s, p.cut[s]);
                    g1_plan_free(&p);
                }
            }
    printf("cuts: %d plans contiguous and covering, %d equal to the brute-force optimum\n", n, brute_n);
}

static void test_stage0_lighter(void)
{
    g1_config c = preset("grok-1");
    for (int E = 4; E <= 8; E *= 2) {
        g1_plan_request r = req_of(c, 8, E);
        g1_plan p;
        CHECK(g1_plan_make(&r, &p) == G1_OK, "grok-1 8x%d: %s", E, g1_last_error());
        int n0 = p.cut[1] - p.cut[0], nmax = 0;
        for (int s = 1; s < 8; s++)
            nmax = p.cut[s + 1] - p.cut[s] > nmax ? p.cut[s + 1] - p.cut[s] : nmax;
        CHECK(n0 < 8 && n0 < nmax, "grok-1 8x%d: stage 0 has %d layers, others up to %d", E, n0, nmax);
        CHECK(p.stage_cost[0] <= max_cost(&p), "stage 0 is the bottleneck");
        printf("grok-1 P=8 E=%d: stage 0 gets %d layers, the others up to %d\n", E, n0, nmax);
        g1_plan_free(&p);
    }
    /* E = 1: the un-embedding is a third of a layer: even cuts are optimal,
     * and stage 0 must not get more than the others */
    g1_plan_request r = req_of(c, 8, 1);
    g1_plan p;
    CHECK(g1_plan_make(&r, &p) == G1_OK, "grok-1 8x1");
    CHECK(p.cut[1] - p.cut[0] <= 8, "grok-1 8x1: stage 0 has %d layers", p.cut[1]);
    g1_plan_free(&p);
    /* where costs allow: small layers, big vocabulary */
    c = preset("tiny");
    c.num_layers = 24;
    c.vocab_size = 65536;
    r = req_of(c, 4, 1);
    CHECK(g1_plan_make(&r, &p) == G1_OK, "tiny big vocab");
    CHECK(p.cut[1] - p.cut[0] < 6, "tiny V=65536 4 stages: stage 0 has %d layers (of 24)", p.cut[1]);
    g1_plan_free(&p);
}

/* ---- memory ---- */

/* The bytes, written out from the engine's allocations (src/weights.c,
 * src/engine.c) for the default block counts, not from plan.c. */
static double indep_weights(const g1_config *c, int nl, int nexp, int rank0)
{
    double D = c->emb_size, QK = (double)c->num_q_heads * c->key_size, KV = (double)c->num_kv_heads * c->key_size;
    double F = c->ffn_size, NE = c->num_experts;
    int bo = g1_config_default_blocks(c, (int)QK, 8), bd = g1_config_default_blocks(c, (int)F, 8);
    /* int8 + scale + scale_split */
    double attn = D * QK + 2 * QK * 4 + D * KV * 2 + 2 * 2 * KV * 4 + QK * D + 2 * bo * D * 4;
    double expert = 2 * (D * F + 2 * F * 4) + F * D + 2 * bd * D * 4;
    double layer = attn + 4 * D * 4 + D * NE * 4 + nexp * expert;
    return nl * layer + (rank0 ? c->vocab_size * D * 2 + D * 4 : 0);
}

/* As mpi/ allocates them: pipeline messages (a 16-byte header, slots and
 * positions, forks of 3 ints, hidden states), counted buffer by buffer. */
static double indep_messages(const g1_config *c, double T, int rk, int P, int E, int M)
{
    double D = c->emb_size, k = c->num_selected_experts;
    double msg = 16 + 4 * T + 4 * T + 12 * T + 4 * T * D;
    if (P * E == 1)
        return 0;
    double b = 0;
    if (rk == 0) {
        b += (M + 1) * (msg + E * (16 + 64)); /* the send pool: M + 1 micro-batches' E messages, 64-byte aligned */
        b += msg;                 /* results received */
        b += 4 * T * D;           /* a share's activations */
        b += P == 1 ? M * 4 * T * D : 0; /* its own share of each micro-batch, one stage */
    } else {
        b += (M + 1) * msg + 2 * msg; /* send pool, two receive buffers */
    }
    if (E > 1)
        b += 2 * 4 * T * k * (D + 1) + 3 * 4 * T * k * D; /* all-to-all: send, receive, rows x, y, yk */
    return b;
}

/* threads: the per-thread buffers, every rank's attention score row of
 * `ctx` floats and rank 0's sampler (double p, {double, int32} candidates,
 * int32 kept: 8 + 16 + 4 bytes a vocabulary entry, src/sampler.c). Rank 0's
 * scheduler (mpi/driver.c): 2^24 / V logits rows (1..T), each micro-batch's
 * x and 4 ints and a 3-int fork a token, a token a token and a status a
 * logits row, the prefix cache's int, double and flag a slot position. */
static double indep_buffers(const g1_config *c, double T, int rk, int P, int E, int M, double threads, double ctx,
                            double slots)
{
    double D = c->emb_size, QK = (double)c->num_q_heads * c->key_size, KV = (double)c->num_kv_heads * c->key_size;
    double F = c->ffn_size, k = c->num_selected_experts;
    double b = 4 * (T * D + T * QK + T * KV + T * KV + T * QK + T * D) /* xn q k v att o */
               + 4 * T * k * 2 + 8 * T * 2 + 4 * T * k              /* idx gate, kc vc, tok */
               + 4 * T * k * fmax(D, F) + 4 * 2 * T * k * F         /* xg h1 h2 */
               + 4 * T * k * D + 4 * T * k * D;                     /* yk xk */
    b += threads * ctx * 4; /* scores */
    if (rk == 0) {
        double rows = fmin(fmax(floor(16777216.0 / c->vocab_size), 1), T);
        b += 4 * rows * c->vocab_size + M * 4 * T * D + (P * E == 1 ? M * 4 * T * D : 0); /* logits, driver x, local */
        b += M * T * (4 * 4 + 12) + 4 * T + 4 * rows + slots * ctx * 13;                /* the rest of the driver's */
        b += threads * 28.0 * c->vocab_size;                                              /* samplers */
    }
    return b + indep_messages(c, T, rk, P, E, M);
}

/* Real weights: allocate, fill, prepare, and count what was allocated. */
static double real_weights(const g1_config *c, int l0, int l1, int e0, int e1, int emb)
{
    int blocks[G1_NUM_QMAT];
    g1_synth_blocks(c, blocks);
    g1_weights w;
    g1_synth s = {.cfg = *c, .seed = 1, .qk_gain = 1};
    if (g1_weights_alloc(&w, c, l0, l1, e0, e1, blocks, emb) != G1_OK || g1_synth_weights(&s, &w) != G1_OK ||
        g1_weights_prepare(&w) != G1_OK) {
        fprintf(stderr, "cannot make weights: %s\n", g1_last_error());
        exit(1);
    }
    double b = (double)g1_weights_bytes(&w); /* int8 + scale + floats */
    for (int l = 0; l < l1 - l0; l++) {
        for (int i = 0; i < 4; i++)
            b += w.layers[l].attn[i].scale_split ? (double)w.layers[l].attn[i].blocks * w.layers[l].attn[i].cols * 4 : 0;
        for (int m = 0; m < 3; m++)
            for (int e = 0; e < e1 - e0; e++) {
                const g1_qmat *q = &w.layers[l].moe[m][e];
                b += q->scale_split ? (double)q->blocks * q->cols * 4 : 0;
            }
    }
    g1_weights_free(&w);
    return b;
}

static void test_memory(void)
{
    /* threads 0: the planner's default, G1_PLAN_THREADS */
    struct { const char *preset; int P, E, slots, context, T, kv_bytes, M, threads; } cases[] = {
        {"tiny", 2, 2, 5, 100, 16, 0, 0, 0}, {"tiny", 3, 4, 3, 0, 7, 4, 0, 3}, {"grok-1", 8, 8, 8, 8192, 256, 0, 0, 0},
        {"grok-1", 4, 2, 9, 2048, 64, 0, 5, 1}, {"grok-1", 8, 8, 8, 8192, 256, 2, 0, 112},
        {"tiny", 2, 2, 5, 100, 16, 2, 3, 7}, {"tiny", 1, 1, 4, 100, 16, 0, 2, 1}, {"tiny", 1, 2, 4, 100, 16, 0, 0, 0},
        {"grok-1", 1, 8, 8, 1024, 512, 0, 3, 16}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        g1_config c = preset(cases[i].preset);
        g1_plan_request r = req_of(c, cases[i].P, cases[i].E);
        r.slots = cases[i].slots;
        r.context = cases[i].context;
        r.max_batch_tokens = cases[i].T;
        r.kv_bytes = cases[i].kv_bytes;
        r.micro_batches = cases[i].M;
        r.threads = cases[i].threads;
        g1_plan p;
        CHECK(g1_plan_make(&r, &p) == G1_OK, "%s: %s", cases[i].preset, g1_last_error());
        int E = cases[i].E, ctx = cases[i].context ? cases[i].context : c.max_seq_len, bad = 0;
        double exp_sum = 0;
        for (int rk = 0; rk < p.stages * E; rk++) {
            int s = rk / E, e = rk % E, nl = p.cut[s + 1] - p.cut[s], first, count;
            g1_plan_experts(&p, e, &first, &count);
            CHECK(first == e * c.num_experts / E && count == c.num_experts / E, "experts of slot %d", e);
            int seqs = 0;
            for (int g = 0; g < cases[i].slots; g++)
                seqs += g % E == e;
            CHECK(g1_plan_seqs(&p, e) == seqs, "seqs of slot %d: %d, expected %d", e, g1_plan_seqs(&p, e), seqs);
            double w = indep_weights(&c, nl, count, rk == 0);
            double kv = (double)seqs * ctx * nl * 2 * c.num_kv_heads * c.key_size *
                        (cases[i].kv_bytes ? cases[i].kv_bytes : 4);
            double b = indep_buffers(&c, cases[i].T, rk, cases[i].P, E, cases[i].M ? cases[i].M : cases[i].P,
                                     cases[i].threads ? cases[i].threads : G1_PLAN_THREADS, ctx, cases[i].slots);
            CHECK(p.mem[rk].messages == indep_messages(&c, cases[i].T, rk, cases[i].P, E,
                                                       cases[i].M ? cases[i].M : cases[i].P),
                  "%s rank %d: messages %.0f", cases[i].preset, rk, p.mem[rk].messages);
            const g1_plan_mem *m = &p.mem[rk];
            bad += m->weights != w || m->kv_cache != kv || m->buffers != b || m->total != w + kv + b;
            if (bad == 1 && (m->weights != w || m->kv_cache != kv || m->buffers != b))
                fprintf(stderr, "  %s rank %d: weights %.0f/%.0f kv %.0f/%.0f buffers %.0f/%.0f\n", cases[i].preset,
                        rk, m->weights, w, m->kv_cache, kv, m->buffers, b);
            if (!strcmp(cases[i].preset, "tiny")) {
                double real = real_weights(&c, p.cut[s], p.cut[s + 1], first, first + count, rk == 0);
                CHECK(real == m->weights, "tiny rank %d: planner %.0f bytes, allocated %.0f", rk, m->weights, real);
            }
            exp_sum += count;
        }
        CHECK(bad == 0, "%s %dx%d: %d ranks with wrong memory", cases[i].preset, cases[i].P, E, bad);
        CHECK(exp_sum == (double)p.stages * c.num_experts, "experts do not cover");
        CHECK(p.threads == (cases[i].threads ? cases[i].threads : G1_PLAN_THREADS), "%s: threads %d", cases[i].preset,
              p.threads);
        printf("memory %s %dx%d, %s KV: rank 0 %.0f bytes (recomputed independently)\n", cases[i].preset, cases[i].P,
               E, cases[i].kv_bytes == 2 ? "bf16" : "f32", p.mem[0].total);
        g1_plan_free(&p);
    }
}

/* ---- refusals ---- */

static void expect_refusal(g1_plan_request r, const char *what, const char *const *needles)
{
    g1_plan p;
    g1_status st = g1_plan_make(&r, &p);
    CHECK(st == G1_ERR_ARG, "%s: status %s", what, g1_status_name(st));
    for (; *needles; needles++)
        CHECK(strstr(g1_last_error(), *needles), "%s: message lacks '%s': %s", what, *needles, g1_last_error());
    printf("refused %-22s %s\n", what, g1_last_error());
}

static void test_refusals(void)
{
    g1_config c = preset("grok-1");
    expect_refusal(req_of(c, 8, 3), "ep 3", (const char *[]){"--ep 3", "8 experts", "1, 2, 4, 8", NULL});
    expect_refusal(req_of(c, 8, 16), "ep 16", (const char *[]){"1, 2, 4, 8", NULL});
    expect_refusal(req_of(c, 0, 1), "stages 0", (const char *[]){"--stages 0", "1..64", NULL});
    expect_refusal(req_of(c, 65, 1), "stages 65", (const char *[]){"64 layers", "1..64", NULL});
    g1_plan_request r = req_of(c, 2, 1);
    r.mem_per_rank = 80.0 * (1 << 30);
    expect_refusal(r, "memory", (const char *[]){"rank 0", "GiB", "80.00 GiB", "--stages", "would fit", "fewer slots",
                                                 "shorter context", NULL});
    /* the worst rank is named: here stage 1's ranks (more layers, more experts) */
    c.num_layers = 4;
    r = req_of(c, 2, 2);
    int lps[] = {1, 3};
    r.layers_per_stage = lps;
    g1_plan p;
    CHECK(g1_plan_make(&r, &p) == G1_OK, "override");
    double need = p.mem[2].total;
    CHECK(p.cut[1] == 1 && p.cut[2] == 4, "override cuts");
    g1_plan_free(&p);
    r.mem_per_rank = need - 1;
    expect_refusal(r, "memory override", (const char *[]){"rank 2 (stage 1", "layers 1..3", NULL});
    c = preset("grok-1");
    r = req_of(c, 3, 1);
    int bad_sum[] = {20, 20, 20};
    r.layers_per_stage = bad_sum;
    expect_refusal(r, "override sum", (const char *[]){"sum to 60", "64 layers", NULL});
    int zero[] = {0, 32, 32};
    r.layers_per_stage = zero;
    expect_refusal(r, "override zero", (const char *[]){"stage 0 has 0 layers", NULL});
    r = req_of(c, 2, 1);
    r.context = 9000;
    expect_refusal(r, "context", (const char *[]){"--context 9000", "8192", NULL});
    r = req_of(c, 2, 1);
    r.slots = 0;
    expect_refusal(r, "slots", (const char *[]){"--slots 0", NULL});
    r = req_of(c, 2, 1);
    r.max_batch_tokens = 0;
    expect_refusal(r, "max_batch_tokens", (const char *[]){"--max-batch-tokens 0", NULL});
    r = req_of(c, 2, 1);
    r.threads = -1;
    expect_refusal(r, "threads", (const char *[]){"--threads -1", NULL});
    /* fits with enough memory: 8 x 8 of grok-1 on 80 GB cards */
    r = req_of(c, 8, 8);
    r.mem_per_rank = 80.0 * (1 << 30);
    CHECK(g1_plan_make(&r, &p) == G1_OK, "grok-1 8x8 on 80G: %s", g1_last_error());
    g1_plan_free(&p);
    /* size parsing */
    double b;
    CHECK(g1_plan_parse_size("x", "80G", &b) == G1_OK && b == 80.0 * (1 << 30), "80G");
    CHECK(g1_plan_parse_size("x", "512MiB", &b) == G1_OK && b == 512.0 * (1 << 20), "512MiB");
    CHECK(g1_plan_parse_size("x", "4096", &b) == G1_OK && b == 4096, "4096");
    CHECK(g1_plan_parse_size("x", "1.5T", &b) == G1_OK && b == 1.5 * 1024 * 1024 * 1024 * 1024, "1.5T");
    CHECK(g1_plan_parse_size("x", "80X", &b) == G1_ERR_ARG, "80X refused");
    CHECK(g1_plan_parse_size("x", "-1G", &b) == G1_ERR_ARG, "-1G refused");
}

/* ---- JSON ---- */

static char tmpdir[256];

static void tmp_path(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmpdir, name); }

static int plans_equal(const g1_plan *a, const g1_plan *b)
{
    /* every hyper-parameter, exactly (memcmp would compare padding) */
    if (g1_plan_check_model(a, &b->cfg) != G1_OK || a->stages != b->stages || a->ep != b->ep ||
        a->slots != b->slots || a->context != b->context || a->max_batch_tokens != b->max_batch_tokens ||
        a->mem_per_rank != b->mem_per_rank || a->layer_cost != b->layer_cost || a->rank0_cost != b->rank0_cost ||
        a->cuda_sms != b->cuda_sms || a->threads != b->threads)
        return 0;
    for (int s = 0; s <= a->stages; s++)
        if (a->cut[s] != b->cut[s] || (s < a->stages && a->stage_cost[s] != b->stage_cost[s]))
            return 0;
    return !memcmp(a->mem, b->mem, (size_t)a->stages * a->ep * sizeof *a->mem);
}

/* Rewrite the plan file with one change, read it, expect a refusal naming `needle`. */
typedef void (*mutator)(json_t *root);
static void mut_format(json_t *r) { json_object_set_new(r, "format", json_string("grok1-hdf5")); }
static void mut_version(json_t *r) { json_object_set_new(r, "format_version", json_integer(2)); }
static void mut_cut_gap(json_t *r) { json_array_set_new(json_object_get(r, "cuts"), 1, json_integer(0)); }
static void mut_cut_end(json_t *r)
{
    json_t *c = json_object_get(r, "cuts");
    json_array_set_new(c, json_array_size(c) - 1, json_integer(5));
}
static void mut_ep(json_t *r) { json_object_set_new(r, "ep", json_integer(3)); }
static void mut_stages(json_t *r) { json_object_set_new(r, "stages", json_integer(2)); }
static void mut_model(json_t *r) { json_object_del(json_object_get(r, "model"), "rope_base"); }
static void mut_layers(json_t *r)
{
    json_t *rk = json_array_get(json_object_get(r, "ranks"), 2);
    json_object_set_new(rk, "layers", json_pack("[i,i]", 0, 1));
}
static void mut_lps(json_t *r) { json_array_set_new(json_object_get(r, "layers_per_stage"), 0, json_integer(3)); }
static void mut_threads(json_t *r) { json_object_set_new(r, "threads", json_integer(0)); }
static void mut_total(json_t *r)
{
    json_t *rk = json_array_get(json_object_get(r, "ranks"), 1);
    json_object_set_new(rk, "total_bytes", json_integer(5));
}
/* a hand-edited plan with two ranks swapped: ranks[0] holds rank 1's entry */
static void mut_order(json_t *r)
{
    json_t *rk = json_array_get(json_object_get(r, "ranks"), 0);
    json_object_set_new(rk, "rank", json_integer(1));
}

static void expect_bad_json(const char *src, mutator m, const char *needle)
{
    char path[300];
    tmp_path(path, sizeof path, "bad.json");
    json_error_t err;
    json_t *root = json_load_file(src, 0, &err);
    m(root);
    json_dump_file(root, path, JSON_INDENT(1));
    json_decref(root);
    g1_plan p;
    g1_status st = g1_plan_read_json(path, &p);
    CHECK(st == G1_ERR_FORMAT && strstr(g1_last_error(), needle), "bad plan (%s): status %s, message %s", needle,
          g1_status_name(st), g1_last_error());
    printf("refused plan: %s\n", g1_last_error());
    if (st == G1_OK)
        g1_plan_free(&p);
}

static void test_json(void)
{
    g1_config c = preset("tiny");
    c.num_layers = 6;
    g1_plan_request r = req_of(c, 3, 2);
    r.mem_per_rank = 1 << 30;
    r.slots = 5;
    r.context = 100;
    r.threads = 5;
    g1_plan p, q;
    CHECK(g1_plan_make(&r, &p) == G1_OK, "tiny 3x2: %s", g1_last_error());
    char path[300];
    tmp_path(path, sizeof path, "plan.json");
    CHECK(g1_plan_write_json(&p, path) == G1_OK, "write: %s", g1_last_error());
    CHECK(g1_plan_read_json(path, &q) == G1_OK, "read: %s", g1_last_error());
    CHECK(plans_equal(&p, &q), "round trip differs");
    CHECK(g1_plan_check_model(&q, &c) == G1_OK, "check_model same model: %s", g1_last_error());
    g1_config other = c;
    other.num_layers = 5;
    CHECK(g1_plan_check_model(&q, &other) == G1_ERR_ARG && strstr(g1_last_error(), "num_layers is 6 in the plan but 5"),
          "check_model num_layers: %s", g1_last_error());
    printf("another model: %s\n", g1_last_error());
    other = c;
    other.rope_base = 20000;
    CHECK(g1_plan_check_model(&q, &other) == G1_ERR_ARG && strstr(g1_last_error(), "rope_base"),
          "check_model rope_base: %s", g1_last_error());
    other = c;
    other.eos_id = 3;
    CHECK(g1_plan_check_model(&q, &other) == G1_ERR_ARG && strstr(g1_last_error(), "eos_id"), "check_model eos_id");
    g1_plan_free(&q);

    /* grok-1 (large byte counts) round trip too */
    g1_plan g;
    g1_plan_request rg = req_of(preset("grok-1"), 8, 8);
    CHECK(g1_plan_make(&rg, &g) == G1_OK, "grok-1");
    char gpath[300];
    tmp_path(gpath, sizeof gpath, "grok1.json");
    CHECK(g1_plan_write_json(&g, gpath) == G1_OK && g1_plan_read_json(gpath, &q) == G1_OK && plans_equal(&g, &q),
          "grok-1 round trip: %s", g1_last_error());
    g1_plan_free(&q);
    g1_plan_free(&g);
    /* memory counted for the cuda backend: the GPUs' multiprocessors come
     * back too (a build without CUDA refuses to count it) */
    rg.cuda_sms = 114;
    if (g1_cuda_built()) {
        CHECK(g1_plan_make(&rg, &g) == G1_OK && g.cuda_sms == 114, "grok-1 cuda: %s", g1_last_error());
        CHECK(g1_plan_write_json(&g, gpath) == G1_OK && g1_plan_read_json(gpath, &q) == G1_OK &&
                  plans_equal(&g, &q), "grok-1 cuda round trip: %s", g1_last_error());
        g1_plan_free(&q);
        g1_plan_free(&g);
    } else {
        CHECK(g1_plan_make(&rg, &g) == G1_ERR_CUDA && strstr(g1_last_error(), "no CUDA backend"),
              "grok-1 cuda without CUDA: %s", g1_last_error());
    }

    expect_bad_json(path, mut_format, "format");
    expect_bad_json(path, mut_version, "format_version");
    expect_bad_json(path, mut_cut_gap, "cuts[1]");
    expect_bad_json(path, mut_cut_end, "cover");
    expect_bad_json(path, mut_ep, "ep");
    expect_bad_json(path, mut_stages, "cuts");
    expect_bad_json(path, mut_model, "model.rope_base");
    expect_bad_json(path, mut_layers, "ranks[2].layers");
    expect_bad_json(path, mut_lps, "layers_per_stage[0]");
    expect_bad_json(path, mut_total, "ranks[1].total_bytes");
    expect_bad_json(path, mut_order, "ranks[0].rank is 1: list the ranks in order, 0..");
    expect_bad_json(path, mut_threads, "threads");
    /* a plan written before the per-thread buffers were counted (no
     * "threads") still loads, its figures as written, threads 0 */
    {
        json_error_t err;
        json_t *root = json_load_file(path, 0, &err);
        CHECK(root && json_integer_value(json_object_get(root, "threads")) == 5, "the JSON records threads 5");
        json_object_del(root, "threads");
        char old[300];
        tmp_path(old, sizeof old, "old.json");
        json_dump_file(root, old, JSON_INDENT(1));
        json_decref(root);
        CHECK(g1_plan_read_json(old, &q) == G1_OK, "a plan without threads: %s", g1_last_error());
        CHECK(q.threads == 0 && q.mem[0].total == p.mem[0].total && q.stages == p.stages, "old plan read back: "
              "threads %d", q.threads);
        g1_plan_free(&q);
    }
    char missing[300];
    tmp_path(missing, sizeof missing, "none.json");
    CHECK(g1_plan_read_json(missing, &q) == G1_ERR_IO, "missing file");
    FILE *f = fopen(path, "w");
    fputs("{not json", f);
    fclose(f);
    CHECK(g1_plan_read_json(path, &q) == G1_ERR_FORMAT && strstr(g1_last_error(), "not JSON"), "not JSON");
    g1_plan_free(&p);
}

/* ---- what the cuts balance ---- */

static int same_cuts(const g1_plan *a, const g1_plan *b)
{
    if (a->stages != b->stages)
        return 0;
    for (int s = 0; s <= a->stages; s++)
        if (a->cut[s] != b->cut[s])
            return 0;
    return 1;
}

/* balance_prompt gives other cuts than the decode balance; with
 * balance_fallback a memory limit that only the decode cuts fit gives
 * those (and says so), a limit neither fits refuses with the prompt cuts'
 * message, and without a limit nothing changes. grok-1 at 2 x 2 with 8
 * slots and 64 threads (set here, not G1_PLAN_THREADS: rank 0's samplers,
 * 3.5 MiB a thread, weigh on the decode cuts' worst rank, and at a few
 * hundred threads it would need as much as the prompt cuts'): the prompt
 * cuts' worst rank needs about 0.8 GiB more than the decode cuts'. The
 * limits come from the two plans' figures (halfway between them; 4 GiB
 * below the decode cuts'), not written in, so they hold whatever the
 * buffers count. */
static void test_balance_fallback(void)
{
    const double gib = 1024.0 * 1024 * 1024;
    g1_plan_request r = req_of(preset("grok-1"), 2, 2);
    r.threads = 64;
    g1_plan dec, pro, p;
    CHECK(g1_plan_make(&r, &dec) == G1_OK && !dec.balance_prompt, "decode plan: %s", g1_last_error());
    r.balance_prompt = 1;
    CHECK(g1_plan_make(&r, &pro) == G1_OK && pro.balance_prompt, "prompt plan: %s", g1_last_error());
    CHECK(!same_cuts(&dec, &pro), "grok-1 2x2: the prompt balance should move the cut (both at %d)", dec.cut[1]);
    double wd = 0, wp = 0;
    for (int rk = 0; rk < 4; rk++) {
        wd = fmax(wd, dec.mem[rk].total);
        wp = fmax(wp, pro.mem[rk].total);
    }
    CHECK(wp - wd > 0.25 * gib, "worst ranks %.3f (decode) and %.3f GiB (prompt): the prompt cuts' should need a "
          "quarter GiB more at least", wd / gib, wp / gib);
    double between = (wd + wp) / 2, below = wd - 4 * gib;
    /* no limit: the fallback changes nothing */
    r.balance_fallback = 1;
    CHECK(g1_plan_make(&r, &p) == G1_OK && p.balance_prompt && same_cuts(&p, &pro), "fallback without a limit");
    g1_plan_free(&p);
    /* a limit only the decode cuts fit */
    r.mem_per_rank = between;
    r.balance_fallback = 0;
    CHECK(g1_plan_make(&r, &p) == G1_ERR_ARG, "prompt cuts at %.3f GiB should be refused", between / gib);
    r.balance_fallback = 1;
    CHECK(g1_plan_make(&r, &p) == G1_OK && !p.balance_prompt && same_cuts(&p, &dec), "fallback at %.3f GiB: %s",
          between / gib, g1_last_error());
    g1_plan_free(&p);
    /* neither fits: the prompt cuts' refusal */
    r.mem_per_rank = below;
    r.balance_fallback = 0;
    char msg[1024] = "";
    if (g1_plan_make(&r, &p) == G1_ERR_ARG)
        snprintf(msg, sizeof msg, "%s", g1_last_error());
    r.balance_fallback = 1;
    CHECK(g1_plan_make(&r, &p) == G1_ERR_ARG && *msg && !strcmp(g1_last_error(), msg),
          "%.3f GiB with the fallback: '%s', expected '%s'", below / gib, g1_last_error(), msg);
    /* given cuts are given cuts */
    int lps[2] = {32, 32};
    r.mem_per_rank = 0;
    r.layers_per_stage = lps;
    CHECK(g1_plan_make(&r, &p) == G1_OK && !p.balance_prompt && p.cut[1] == 32, "layers_per_stage with balance_prompt");
    g1_plan_free(&p);
    g1_plan_free(&dec);
    g1_plan_free(&pro);
}

/* The text of --cuda-tune switches that a refusal's grok1-plan command
 * gives (g1_cuda_tune_text) parses back to the same switches, and leaves
 * out the defaults (in every build: the parser is plain C). */
static void test_cuda_tune_text(void)
{
    const char *specs[] = {"gemv-max-tokens=32", "gemv-max-tokens=0,mma-max-tokens=0",
                           ("gemv-max-tokens=64,mma-max-tokens=256,mma-tile-cols=128,attn-mma=off,moe-grouping=host,"
                            "gemm-overlap=off,panel-mib=64"),
                           "attn-mma=off,panel-mib=8"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        g1_cuda_opts a = {0}, b = {0};
        char text[256];
        CHECK(g1_cuda_tune_parse(specs[i], &a) == G1_OK, "%s: %s", specs[i], g1_last_error());
        int n = g1_cuda_tune_text(&a, text, sizeof text);
        CHECK(n == (int)strlen(text) && !strcmp(text, specs[i]), "%s: the text is %s", specs[i], text);
        CHECK(g1_cuda_tune_parse(text, &b) == G1_OK && !memcmp(&a, &b, sizeof a), "%s: %s parses to other switches",
              specs[i], text);
    }
    g1_cuda_opts d = {0}, on = {0};
    char text[8] = "x";
    CHECK(g1_cuda_tune_text(&d, text, sizeof text) == 0 && !text[0], "the defaults give '%s'", text);
    /* the switches set as their defaults are the defaults */
    CHECK(g1_cuda_tune_parse("attn-mma=on,moe-grouping=device,gemm-overlap=on", &on) == G1_OK &&
              g1_cuda_tune_text(&on, text, sizeof text) == 0, "switches given as the defaults give '%s'", text);
    /* too small a buffer: cut, the length as snprintf's */
    g1_cuda_opts a = {0};
    CHECK(g1_cuda_tune_parse("panel-mib=8", &a) == G1_OK && g1_cuda_tune_text(&a, text, sizeof text) == 11 &&
              !strcmp(text, "panel-m"), "a short buffer: '%s'", text);
}

int main(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/g1planXXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_cuts();
    test_stage0_lighter();
    test_memory();
    test_refusals();
    test_balance_fallback();
    test_json();
    test_cuda_tune_text();
    const char *names[] = {"plan.json", "bad.json", "grok1.json", "old.json", "none.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[300];
        tmp_path(p, sizeof p, names[i]);
        remove(p);
    }
    rmdir(tmpdir);
    printf("%d checks, %d failures\n", tu_checks, tu_failures);
    return tu_failures ? 1 : 0;
}
