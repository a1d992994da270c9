/* CPU benchmark on the `small` preset built in memory (no file needed):
 * memory bandwidth (copy, read) measured in the same run, prefill and
 * decode tokens/s, weight bytes read per decoded token, and decode as a
 * percentage of the memory roofline. A benchmark, never a timed test.
 * Usage: bench_cpu [--preset small] [--decode N] [--prompt N] [--batch B] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu.h"
#include "engine.h"
#include "synth.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* memcpy rate: bytes copied per second (each byte is read once and written
 * once, so the memory traffic is twice this), best of 5, all threads. */
static double copy_bw(size_t n)
{
    char *a = malloc(n), *b = malloc(n);
    memset(a, 1, n);
    memset(b, 2, n);
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
#pragma omp parallel
        {
#ifdef _OPENMP
            int nt = omp_get_num_threads(), id = omp_get_thread_num();
#else
            int nt = 1, id = 0;
#endif
            size_t chunk = n / (size_t)nt, off = chunk * (size_t)id;
            memcpy(b + off, a + off, id == nt - 1 ? n - off : chunk);
        }
        double t = now() - t0;
        best = t < best ? t : best;
    }
    volatile char sink = b[n / 2];
    (void)sink;
    free(a);
    free(b);
    return (double)n / best;
}

/* Read bandwidth: sum of 64-bit words, best of 5. */
static double read_bw(size_t n)
{
    uint64_t *a = malloc(n);
    size_t m = n / 8;
    for (size_t i = 0; i < m; i++)
        a[i] = i;
    double best = 1e30;
    uint64_t total = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        uint64_t s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
        for (size_t i = 0; i < m; i++)
            s += a[i];
        double t = now() - t0;
        total += s;
        best = t < best ? t : best;
    }
    volatile uint64_t sink = total;
    (void)sink;
    free(a);
    return (double)n / best;
}

static size_t qbytes(const g1_qmat *q) { return (size_t)q->rows * q->cols + (size_t)q->blocks * q->cols * 4; }

int main(int argc, char **argv)
{
    const char *preset = "small";
    int n_decode = 32, n_prompt = 128, batch = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--preset")) preset = argv[i + 1];
        else if (!strcmp(argv[i], "--decode")) n_decode = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt")) n_prompt = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    g1_config c;
    if (g1_config_preset(preset, &c)) {
        fprintf(stderr, "%s\n", g1_last_error());
        return 2;
    }
    printf("bench_cpu: preset %s (D=%d F=%d L=%d V=%d), %d threads, %s kernels\n", preset, c.emb_size, c.ffn_size,
           c.num_layers, c.vocab_size, threads(), g1_cpu_kernels());
    double bw_copy = copy_bw((size_t)1 << 30), bw_read = read_bw((size_t)1 << 30);
    printf("memory: memcpy %.2f GB/s copied (%.2f GB/s read+write traffic), read-only %.2f GB/s\n",
           bw_copy / 1e9, 2 * bw_copy / 1e9, bw_read / 1e9);

    int blocks[G1_NUM_QMAT];
    g1_synth_blocks(&c, blocks);
    g1_synth s = {.cfg = c, .seed = 1, .qk_gain = 1};
    g1_weights w;
    double t0 = now();
    if (g1_weights_alloc(&w, &c, 0, c.num_layers, 0, c.num_experts, blocks, 1) || g1_synth_weights(&s, &w)) {
        fprintf(stderr, "%s\n", g1_last_error());
        return 1;
    }
    printf("weights: %.1f MB generated in %.1f s\n", (double)g1_weights_bytes(&w) / 1e6, now() - t0);

    /* bytes one decode step reads: attention + router + norms of every
     * layer, the experts its tokens pick (k at batch 1; at most
     * min(E, k * batch) otherwise, an upper bound), the final norm and the
     * un-embedding */
    int experts_read = c.num_selected_experts * batch;
    if (experts_read > c.num_experts)
        experts_read = c.num_experts;
    size_t per_tok = (size_t)c.vocab_size * c.emb_size * 2 + (size_t)c.emb_size * 4;
    for (int l = 0; l < c.num_layers; l++) {
        const g1_layer_weights *L = &w.layers[l];
        for (int i = 0; i < 4; i++)
            per_tok += qbytes(&L->attn[i]);
        per_tok += (size_t)c.emb_size * c.num_experts * 4 + 4 * (size_t)c.emb_size * 4;
        for (int m = 0; m < 3; m++)
            per_tok += (size_t)experts_read * qbytes(&L->moe[m][0]);
    }

    int max_batch = n_prompt > batch ? n_prompt : batch;
    g1_engine_opts o = {.n_slots = batch, .max_batch = max_batch, .max_context = n_prompt + n_decode + 1};
    g1_engine *e;
    if (g1_engine_init(&e, &w, &o, NULL)) {
        fprintf(stderr, "%s\n", g1_last_error());
        return 1;
    }
    int V = c.vocab_size, D = c.emb_size;
    float *x = malloc((size_t)max_batch * D * 4), *logits = malloc((size_t)max_batch * V * 4);
    int *tok = malloc((size_t)max_batch * sizeof(int)), *slot = malloc((size_t)max_batch * sizeof(int)),
        *pos = malloc((size_t)max_batch * sizeof(int));

    /* prefill: one chunk of n_prompt tokens per slot */
    double t_pre = 0;
    for (int b = 0; b < batch; b++) {
        for (int i = 0; i < n_prompt; i++) {
            tok[i] = (i * 7919 + b * 104729) % V;
            slot[i] = b;
            pos[i] = i;
        }
        g1_batch bt = {.T = n_prompt, .slot = slot, .pos = pos};
        t0 = now();
        if (g1_engine_embed(e, n_prompt, tok, x) || g1_engine_forward(e, &bt, x) ||
            g1_engine_logits(e, 1, x + (size_t)(n_prompt - 1) * D, logits)) {
            fprintf(stderr, "%s\n", g1_last_error());
            return 1;
        }
        t_pre += now() - t0;
    }
    /* decode: batch tokens per step, greedy */
    t0 = now();
    for (int step = 0; step < n_decode; step++) {
        for (int b = 0; b < batch; b++) {
            tok[b] = (step * 31 + b) % V;
            slot[b] = b;
            pos[b] = n_prompt + step;
        }
        g1_batch bt = {.T = batch, .slot = slot, .pos = pos};
        if (g1_engine_embed(e, batch, tok, x) || g1_engine_forward(e, &bt, x) ||
            g1_engine_logits(e, batch, x, logits)) {
            fprintf(stderr, "%s\n", g1_last_error());
            return 1;
        }
    }
    double t_dec = now() - t0;
    double pre_tps = batch * n_prompt / t_pre, dec_sps = n_decode / t_dec;
    printf("prefill: %d x %d tokens in %.2f s: %.1f tokens/s\n", batch, n_prompt, t_pre, pre_tps);
    printf("decode:  batch %d, %d steps in %.2f s: %.2f steps/s, %.2f tokens/s, %.1f ms/step\n", batch, n_decode,
           t_dec, dec_sps, dec_sps * batch, 1e3 * t_dec / n_decode);
    printf("weight bytes per decode step (%d experts/layer%s): %.1f MB\n", experts_read,
           batch > 1 ? ", an upper bound" : "", (double)per_tok / 1e6);
    printf("achieved weight stream: %.2f GB/s\n", dec_sps * (double)per_tok / 1e9);
    /* rooflines: the weights of a step must be read at least once */
    struct { const char *name; double bw; } roof[3] = {
        {"memcpy rate (bytes copied/s)", bw_copy},
        {"read-only bandwidth", bw_read},
        {"memcpy read+write traffic", 2 * bw_copy},
    };
    for (int i = 0; i < 3; i++) {
        double sps = roof[i].bw / (double)per_tok;
        printf("roofline from %-30s %6.2f steps/s; decode at %3.0f%% of it\n", roof[i].name, sps,
               100.0 * dec_sps / sps);
    }
    g1_engine_free(e);
    g1_weights_free(&w);
    free(x); free(logits); free(tok); free(slot); free(pos);
    return 0;
}
