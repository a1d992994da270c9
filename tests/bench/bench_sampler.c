/* Rank 0's work per logits row at Grok-1's vocabulary (131072): the
 * log-softmax of a score row, greedy and sampled picks, top-N log-probs.
 * grok1-run does this for every row that needs logits (every scored
 * position, every generated token) on rank 0, between pipeline steps, so it
 * bounds the job's tokens/s; rows run on rank 0's threads (driver.c). This
 * prints ms per row on one thread and rows/s on 1 and on all threads.
 *
 * Logits are drawn like a language model's: mostly noise (normal, sd 2)
 * with a few dozen tokens far above it, so top-p keeps tens of tokens.
 *
 * Usage: bench_sampler [--vocab V] [--rows R] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "sampler.h"

static double now_s(void)
{
    struct timespec t;
    timespec_get(&t, TIME_UTC);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rng = 88172645463325252ull;
static double unif(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

typedef enum { LOGSOFTMAX, GREEDY, TOP_P, TOP_K, TOP_N } work;
static const char *names[] = {"score: log-softmax of one token", "generate: greedy", "generate: T 0.8, top-p 0.95",
                              "generate: T 1, top-k 50", "top_logprobs 5"};

static double run(work w, const float *logits, int V, int R, int threads, g1_sampler **sm)
{
    volatile double sink = 0;
    double t0 = now_s();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int r = 0; r < R; r++) {
#ifdef _OPENMP
        g1_sampler *s = sm[omp_get_thread_num()];
#else
        g1_sampler *s = sm[0];
#endif
        const float *l = logits + (size_t)(r % 8) * V;
        int32_t tok = 0;
        double lp = 0;
        g1_logprob top[5];
        g1_sample_opts o = {.temperature = 0, .top_p = 1, .top_k = 0, .seed = 1};
        switch (w) {
        case LOGSOFTMAX: g1_logprobs(l, V, r % V, &lp, 0, NULL); break;
        case GREEDY: g1_sampler_sample(s, l, &o, (uint64_t)r, 0, &tok); break;
        case TOP_P: o.temperature = 0.8; o.top_p = 0.95; g1_sampler_sample(s, l, &o, (uint64_t)r, 0, &tok); break;
        case TOP_K: o.temperature = 1; o.top_k = 50; g1_sampler_sample(s, l, &o, (uint64_t)r, 0, &tok); break;
        case TOP_N: g1_logprobs(l, V, r % V, &lp, 5, top); break;
        }
        sink += lp + tok;
    }
    (void)sink;
    return now_s() - t0;
}

int main(int argc, char **argv)
{
    int V = 131072, R = 256;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--vocab"))
            V = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rows"))
            R = atoi(argv[i + 1]);
    }
    if (V < 64 || R < 1) {
        fprintf(stderr, "usage: bench_sampler [--vocab V >= 64] [--rows R >= 1]\n");
        return 2;
    }
    int nth = 1;
#ifdef _OPENMP
    nth = omp_get_max_threads();
#endif
    float *logits = malloc((size_t)8 * V * sizeof *logits);
    g1_sampler **sm = calloc((size_t)nth, sizeof *sm);
    if (!logits || !sm)
        return 1;
    for (int i = 0; i < nth; i++)
        if (g1_sampler_init(&sm[i], V) != G1_OK)
            return 1;
    for (int k = 0; k < 8; k++) {
        float *l = logits + (size_t)k * V;
        for (int v = 0; v < V; v++) /* Box-Muller, sd 2 */
            l[v] = (float)(2.0 * sqrt(-2.0 * log(1.0 - unif())) * cos(6.283185307179586 * unif()));
        for (int j = 0; j < 40; j++) /* the plausible next tokens */
            l[(int)(unif() * V)] = (float)(12.0 + 4.0 * unif());
    }
    printf("bench_sampler: vocabulary %d, %d rows, %d threads\n", V, R, nth);
    printf("%-34s %10s %14s %14s\n", "work per row", "ms/row", "rows/s 1 thr", nth > 1 ? "rows/s all" : "");
    for (int w = 0; w < 5; w++) {
        run((work)w, logits, V, nth, nth, sm); /* warm up */
        double t1 = run((work)w, logits, V, R, 1, sm), tn = nth > 1 ? run((work)w, logits, V, R, nth, sm) : 0;
        printf("%-34s %10.3f %14.0f", names[w], 1e3 * t1 / R, R / t1);
        if (nth > 1)
            printf(" %14.0f", R / tn);
        printf("\n");
    }
    for (int i = 0; i < nth; i++)
        g1_sampler_free(sm[i]);
    free(sm);
    free(logits);
    return 0;
}
