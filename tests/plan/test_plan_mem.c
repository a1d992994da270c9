/* The planner's buffers against what the real engine and scheduler
 * allocate: for each shape (tiny models, one with Grok-1's vocabulary;
 * tokens a step, threads, micro-batches, slots, context, score and
 * generate, the prefix cache on and off) the CPU engine is made and the
 * scheduler (mpi/driver.c) runs a few requests over the local pipeline;
 * the bytes they count where they allocate (g1_engine_scratch_bytes,
 * g1_driver_stats.buffer_bytes, g1_pipe_local_bytes) are set against
 * g1_plan_make's buffers less messages for rank 0 of 1 x 1 (engine,
 * scheduler, local pipeline), rank 0 of 2 x 1 (engine, scheduler) and
 * rank 1 (engine). The planner must count at least that, and at most that
 * plus the prefix cache's rows the run did not make (it counts them at
 * their most: slots x context x 13 bytes, a score run's): a buffer the
 * engine or the scheduler adds without the planner counting it fails here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "driver.h"
#include "pipeline.h"
#include "plan.h"
#include "synth.h"
#include "testutil.h"
#include "weights.h"


static void die(const char *what)
{
    fprintf(stderr, "%s: %s\n", what, g1_last_error());
    exit(1);
}

typedef struct shape {
    int wide;       /* the tiny model with Grok-1's vocabulary (131072) */
    int T, threads, M, B, context;
    g1_run_mode mode;
    int prefix;
} shape;

/* n requests of `len` token ids each, sharing their first half (the prefix
 * cache has something to reuse), as a file the driver reads. */
static FILE *requests(const g1_config *c, int n, int len, int generate)
{
    FILE *f = tmpfile();
    if (!f)
        die("tmpfile");
    for (int r = 0; r < n; r++) {
        fprintf(f, "{\"id\": %d, \"prompt_ids\": [", r);
        for (int i = 0; i < len; i++)
            fprintf(f, "%s%d", i ? ", " : "", 3 + (i < len / 2 ? i : i * 7 + r * 13) % (c->vocab_size - 3));
        fputs(generate ? "], \"max_new_tokens\": 3}\n" : "]}\n", f);
    }
    rewind(f);
    return f;
}

/* The planner's buffers less messages of rank rk at P x 1. */
static double planned(const g1_config *c, const shape *s, int P, int rk)
{
    g1_plan_request r = {.cfg = *c, .stages = P, .ep = 1, .slots = s->M * s->B, .context = s->context,
                         .max_batch_tokens = s->T, .micro_batches = s->M, .threads = s->threads};
    g1_plan p;
    if (g1_plan_make(&r, &p) != G1_OK)
        die("g1_plan_make");
    double b = p.mem[rk].buffers - p.mem[rk].messages;
    g1_plan_free(&p);
    return b;
}

static void check(const char *what, const shape *s, double plan, double real, double slack)
{
    CHECK(plan >= real && plan <= real + slack,
          "%s, %s T %d threads %d M %d B %d context %d %s%s: planned %.0f bytes, allocated %.0f (planned - "
          "allocated %.0f, allowed 0..%.0f)", what, s->wide ? "wide" : "tiny", s->T, s->threads, s->M, s->B,
          s->context, s->mode == G1_MODE_SCORE ? "score" : "generate", s->prefix ? " prefix" : "", plan, real,
          plan - real, slack);
}

static void run_shape(const g1_config *c, const g1_weights *w, const shape *s)
{
#ifdef _OPENMP
    omp_set_num_threads(s->threads);
#else
    if (s->threads != 1)
        return;
#endif
    int slots = s->M * s->B;
    g1_engine_opts eo = {.n_slots = slots, .max_batch = s->T, .max_context = s->context};
    g1_engine *e;
    if (g1_engine_init(&e, w, &eo, NULL) != G1_OK)
        die("g1_engine_init");
    g1_pipe_local *pl;
    if (g1_pipe_local_init(&pl, e, s->M, s->T, NULL) != G1_OK)
        die("g1_pipe_local_init");
    FILE *in = requests(c, 2 * slots + 1, s->context / 2, s->mode == G1_MODE_GENERATE), *out = tmpfile();
    g1_driver_opts o = {.mode = s->mode, .max_new_tokens = 3, .sample = G1_SAMPLE_OPTS_DEFAULT,
                        .max_context = s->context, .micro_batches = s->M,
                        .batch_size = s->B, .max_batch_tokens = s->T, .prefix_cache = s->prefix, .kv_owners = 1};
    g1_driver_stats st;
    if (!out || g1_driver_run(e, g1_pipe_local_ops(pl), &o, in, out, &st) != G1_OK)
        die("g1_driver_run");
    CHECK(st.requests == 2 * slots + 1 && st.written == st.requests, "%lld of %d requests run",
          (long long)st.requests, 2 * slots + 1);
    double eng = (double)g1_engine_scratch_bytes(e), drv = (double)st.buffer_bytes;
    double local = (double)g1_pipe_local_bytes(pl);
    /* the prefix cache's rows: the token ids of every slot's positions, a
     * score run's log-probs and greedy flags too (no dump here) */
    double made = s->prefix ? (double)slots * s->context * (s->mode == G1_MODE_SCORE ? 4 + 8 + 1 : 4) : 0;
    double unmade = (double)slots * s->context * 13 - made;
    CHECK(eng > 0 && drv > made && local > 0, "nothing counted: engine %.0f, scheduler %.0f, pipeline %.0f", eng, drv,
          local);
    check("rank 0 of 1 x 1", s, planned(c, s, 1, 0), eng + drv + local, unmade);
    check("rank 0 of 2 x 1", s, planned(c, s, 2, 0), eng + drv, unmade);
    check("rank 1 of 2 x 1", s, planned(c, s, 2, 1), eng, 0);
    printf("%s T %4d threads %2d M %d B %d context %3d %-8s%s: engine %9.0f scheduler %9.0f pipeline %7.0f; "
           "rank 0 planned %9.0f\n", s->wide ? "wide" : "tiny", s->T, s->threads, s->M, s->B, s->context,
           s->mode == G1_MODE_SCORE ? "score" : "generate", s->prefix ? " prefix" : "", eng, drv, local,
           planned(c, s, 1, 0));
    fclose(in);
    fclose(out);
    g1_pipe_local_free(pl);
    g1_engine_free(e);
}

static void make_weights(const g1_config *c, g1_weights *w)
{
    int blocks[G1_NUM_QMAT];
    g1_synth_blocks(c, blocks);
    g1_synth sy = {.cfg = *c, .seed = 5, .qk_gain = 1};
    if (g1_weights_alloc(w, c, 0, c->num_layers, 0, c->num_experts, blocks, 1) != G1_OK ||
        g1_synth_weights(&sy, w) != G1_OK || g1_weights_prepare(w) != G1_OK)
        die("weights");
}

int main(void)
{
    g1_config tiny, wide;
    if (g1_config_preset("tiny", &tiny) != G1_OK)
        die("tiny");
    wide = tiny;
    wide.vocab_size = 131072; /* Grok-1's: rank 0's logits rows are bounded (64 MiB) below 4096 tokens a step */
    g1_weights wt, ww;
    make_weights(&tiny, &wt);
    make_weights(&wide, &ww);
    const shape shapes[] = {
        {0, 1, 1, 1, 1, 64, G1_MODE_GENERATE, 1},    {0, 7, 3, 2, 2, 100, G1_MODE_SCORE, 1},
        {0, 16, 2, 3, 2, 256, G1_MODE_GENERATE, 0}, {0, 256, 1, 1, 4, 200, G1_MODE_SCORE, 0},
        {0, 64, 96, 2, 3, 128, G1_MODE_SCORE, 1},   {0, 33, 5, 1, 8, 256, G1_MODE_GENERATE, 1},
        {1, 8, 1, 1, 2, 64, G1_MODE_GENERATE, 1},   {1, 300, 2, 2, 2, 128, G1_MODE_SCORE, 1},
        {1, 4096, 1, 1, 2, 256, G1_MODE_SCORE, 0},  {1, 129, 3, 2, 1, 256, G1_MODE_GENERATE, 0},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        run_shape(shapes[i].wide ? &wide : &tiny, shapes[i].wide ? &ww : &wt, &shapes[i]);
    g1_weights_free(&wt);
    g1_weights_free(&ww);
    printf("%d checks, %d failures\n", tu_checks, tu_failures);
    return tu_failures ? 1 : 0;
}
