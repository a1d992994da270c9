/* Sampler tests: Philox known answers, chi-square against known
 * distributions (temperature, top-k, top-p), the exact nucleus with ties,
 * greedy ties, determinism and per-request independence, log-probs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rowmath.h"
#include "sampler.h"
#include "testutil.h"

static void test_philox(void)
{
    /* Random123 kat_vectors, philox4x32 10 rounds */
    struct { uint32_t c[4], k[2], want[4]; } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}, {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}, {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        g1_philox4x32(kat[i].c, kat[i].k, out);
        CHECK(!memcmp(out, kat[i].want, sizeof out), "philox known answer %d: got %08x %08x %08x %08x", i,
              out[0], out[1], out[2], out[3]);
    }
}

/* draws n tokens (steps 0..n-1 of one request) and returns the chi-square
 * statistic against want[] (probabilities; 0 = must never appear) */
static double chi2(const float *logits, int V, g1_sample_opts o, const double *want, int n, int *bad_token)
{
    g1_sampler *s;
    g1_sampler_init(&s, V);
    int *count = calloc((size_t)V, sizeof *count);
    *bad_token = -1;
    for (int i = 0; i < n; i++) {
        int32_t t;
        if (g1_sampler_sample(s, logits, &o, 3, (uint64_t)i, &t) != G1_OK || t < 0 || t >= V) {
            *bad_token = 999999;
            break;
        }
        count[t]++;
    }
    double x = 0;
    for (int v = 0; v < V; v++) {
        if (want[v] == 0) {
            if (count[v])
                *bad_token = v;
            continue;
        }
        double e = want[v] * n;
        x += (count[v] - e) * (count[v] - e) / e;
    }
    free(count);
    g1_sampler_free(s);
    return x;
}

static void softmax(const float *l, int V, double T, double *p)
{
    double mx = -INFINITY, z = 0;
    for (int i = 0; i < V; i++)
        mx = fmax(mx, l[i]);
    for (int i = 0; i < V; i++)
        z += p[i] = exp((l[i] - mx) / T);
    for (int i = 0; i < V; i++)
        p[i] /= z;
}

static void test_distributions(void)
{
    float l[10];
    double want[10];
    for (int i = 0; i < 10; i++)
        l[i] = (float)(0.3 * i - 0.05 * i * i);
    int bad;
    /* 9 degrees of freedom: P(chi2 > 33.7) = 1e-4; the seed is fixed, so no flakes */
    softmax(l, 10, 1.0, want);
    double x = chi2(l, 10, (g1_sample_opts){.temperature = 1, .top_p = 1, .seed = 11}, want, 200000, &bad);
    CHECK(x < 33.7 && bad < 0, "T=1: chi2 %.1f (9 dof), bad token %d", x, bad);
    printf("chi-square T=1: %.2f (9 dof, 200000 draws)\n", x);
    softmax(l, 10, 0.5, want);
    x = chi2(l, 10, (g1_sample_opts){.temperature = 0.5, .top_p = 1, .seed = 12}, want, 200000, &bad);
    CHECK(x < 33.7 && bad < 0, "T=0.5: chi2 %.1f, bad token %d", x, bad);
    printf("chi-square T=0.5: %.2f (9 dof)\n", x);

    /* top-p: p = [.4 .3 .2 .1], top_p .6 -> nucleus {0, 1} renormalised */
    float q[4] = {logf(0.4f), logf(0.3f), logf(0.2f), logf(0.1f)};
    double wq[4] = {4.0 / 7, 3.0 / 7, 0, 0};
    x = chi2(q, 4, (g1_sample_opts){.temperature = 1, .top_p = 0.6, .seed = 13}, wq, 100000, &bad);
    CHECK(x < 15.1 && bad < 0, "top_p .6: chi2 %.1f (1 dof), token outside the nucleus %d", x, bad);
    /* top_p .75 -> {0,1,2}; top_p .3 -> {0} */
    double wq2[4] = {4.0 / 9, 3.0 / 9, 2.0 / 9, 0}, wq3[4] = {1, 0, 0, 0};
    x = chi2(q, 4, (g1_sample_opts){.temperature = 1, .top_p = 0.75, .seed = 14}, wq2, 100000, &bad);
    CHECK(x < 18.4 && bad < 0, "top_p .75: chi2 %.1f, bad %d", x, bad);
    x = chi2(q, 4, (g1_sample_opts){.temperature = 1, .top_p = 0.3, .seed = 14}, wq3, 10000, &bad);
    CHECK(bad < 0, "top_p .3: token %d outside {0}", bad);
    /* ties with the threshold are kept: [1 1 1 0], top_p .3 is reached at the second
     * of three equal tokens, so all three stay */
    float t3[4] = {1, 1, 1, 0};
    double w3[4] = {1.0 / 3, 1.0 / 3, 1.0 / 3, 0};
    x = chi2(t3, 4, (g1_sample_opts){.temperature = 1, .top_p = 0.3, .seed = 15}, w3, 60000, &bad);
    CHECK(x < 18.4 && bad < 0, "tied nucleus: chi2 %.1f, bad %d", x, bad);
    /* top-k 2 keeps the two best; ties go to the lower id: [2 5 5 5] k=2 -> {1, 2} */
    float k4[4] = {2, 5, 5, 5};
    double wk[4] = {0, 0.5, 0.5, 0};
    x = chi2(k4, 4, (g1_sample_opts){.temperature = 1, .top_p = 1, .top_k = 2, .seed = 16}, wk, 40000, &bad);
    CHECK(x < 15.1 && bad < 0, "top_k 2: chi2 %.1f, bad %d", x, bad);
    /* top-k then top-p within: [.4 .3 .2 .1], k=3, top_p .5 of the 0.9 left -> {0, 1} */
    x = chi2(q, 4, (g1_sample_opts){.temperature = 1, .top_p = 0.5, .top_k = 3, .seed = 17}, wq, 60000, &bad);
    CHECK(x < 15.1 && bad < 0, "top_k 3 + top_p .5: chi2 %.1f, bad %d", x, bad);
}

static void test_greedy_and_errors(void)
{
    g1_sampler *s;
    g1_sampler_init(&s, 5);
    float l[5] = {1, 3, 2, 3, -1};
    int32_t t = -1;
    g1_sample_opts g = {.temperature = 0, .top_p = 1, .seed = 1};
    CHECK(g1_sampler_sample(s, l, &g, 0, 0, &t) == G1_OK && t == 1, "greedy tie: %d, want 1", (int)t);
    l[2] = NAN;
    CHECK(g1_sampler_sample(s, l, &g, 0, 0, &t) == G1_ERR_RANGE, "NaN logit accepted");
    g1_sampler_free(s);
    CHECK(g1_sample_opts_check(&(g1_sample_opts){.temperature = -1, .top_p = 1}) == G1_ERR_ARG, "T<0 accepted");
    CHECK(g1_sample_opts_check(&(g1_sample_opts){.temperature = 1, .top_p = 0}) == G1_ERR_ARG, "top_p 0 accepted");
    CHECK(g1_sample_opts_check(&(g1_sample_opts){.temperature = 1, .top_p = 1.5}) == G1_ERR_ARG, "top_p 1.5 accepted");
    CHECK(g1_sample_opts_check(&G1_SAMPLE_OPTS_DEFAULT) == G1_OK, "defaults refused");
}

/* Grok-sized vocabulary: the nucleus found with partial sorting equals a full
 * sort's; same (seed, request, step) -> same token in any order of calls. */
static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

static void test_large_vocab(void)
{
    enum { V = 131072, R = 4, S = 50 };
    float *l = malloc(sizeof *l * V);
    uint32_t st = 1;
    for (int i = 0; i < V; i++) {
        st = st * 1664525u + 1013904223u;
        l[i] = (float)((st >> 8) * (1.0 / 16777216.0) * 12.0);
    }
    g1_sample_opts o = {.temperature = 0.7, .top_p = 0.9, .top_k = 0, .seed = 42};
    double *p = malloc(sizeof *p * V), *sorted = malloc(sizeof *sorted * V);
    softmax(l, V, o.temperature, p);
    memcpy(sorted, p, sizeof *p * V);
    qsort(sorted, V, sizeof *sorted, cmp_desc);
    double cum = 0, thr = 0;
    for (int i = 0; i < V; i++) {
        cum += sorted[i];
        if (cum >= o.top_p) {
            thr = sorted[i];
            break;
        }
    }
    g1_sampler *a, *b;
    g1_sampler_init(&a, V);
    g1_sampler_init(&b, V);
    int32_t alone[R][S], mixed[R][S];
    for (int r = 0; r < R; r++)
        for (int s = 0; s < S; s++) {
            g1_sampler_sample(a, l, &o, (uint64_t)r, (uint64_t)s, &alone[r][s]);
            CHECK(p[alone[r][s]] >= thr * (1 - 1e-12), "token %d outside the nucleus", (int)alone[r][s]);
        }
    for (int s = S - 1; s >= 0; s--) /* another order, another scratch: a different "batch" */
        for (int r = R - 1; r >= 0; r--)
            g1_sampler_sample(b, l, &o, (uint64_t)r, (uint64_t)s, &mixed[r][s]);
    CHECK(!memcmp(alone, mixed, sizeof alone), "a request's tokens depend on the order of calls");
    int same = 0;
    for (int s = 0; s < S; s++)
        same += alone[0][s] == alone[1][s];
    CHECK(same < S / 2, "requests 0 and 1 share %d of %d tokens: not independent", same, S);
    o.seed = 43;
    int32_t t;
    int diff = 0;
    for (int s = 0; s < S; s++) {
        g1_sampler_sample(a, l, &o, 0, (uint64_t)s, &t);
        diff += t != alone[0][s];
    }
    CHECK(diff > S / 2, "another seed changed only %d of %d tokens", diff, S);

    /* log-probs: top-8 against a direct computation */
    g1_logprob top[8];
    double lp = 0, lse = 0, mx = -INFINITY;
    for (int i = 0; i < V; i++)
        mx = fmax(mx, l[i]);
    for (int i = 0; i < V; i++)
        lse += exp(l[i] - mx);
    lse = mx + log(lse);
    CHECK(g1_logprobs(l, V, 77, &lp, 8, top) == G1_OK, "logprobs failed");
    CHECK(fabs(lp - (l[77] - lse)) < 1e-9, "logprob of 77: %g vs %g", lp, l[77] - lse);
    for (int k = 0; k < 8; k++) {
        int above = 0;
        for (int i = 0; i < V; i++)
            above += l[i] > l[top[k].id] || (l[i] == l[top[k].id] && i < top[k].id);
        CHECK(above == k, "top[%d] = %d has %d tokens before it", k, (int)top[k].id, above);
        CHECK(fabs(top[k].logprob - (l[top[k].id] - lse)) < 1e-9, "top[%d] logprob", k);
    }
    float tie[4] = {0, 2, 2, 1};
    g1_logprobs(tie, 4, -1, NULL, 3, top);
    CHECK(top[0].id == 1 && top[1].id == 2 && top[2].id == 3, "top-N tie order %d %d %d", (int)top[0].id,
          (int)top[1].id, (int)top[2].id);
    g1_sampler_free(a);
    g1_sampler_free(b);
    free(l);
    free(p);
    free(sorted);
}

/* The documented semantics with a full sort of the vocabulary, as plainly
 * as possible: the sampler's shortcuts (partial selection, the exponent
 * histogram) must pick the very same token. */
typedef struct { double p; int32_t id; } ref_cand;
static int ref_before(const void *a, const void *b)
{
    const ref_cand *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int32_t ref_sample(const float *l, int V, g1_sample_opts o, uint64_t req, uint64_t step)
{
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (l[i] > l[best])
            best = i;
    if (o.temperature == 0 || o.top_k == 1)
        return best;
    double mx = l[best], total = 0, *p = malloc(sizeof *p * V);
    ref_cand *c = malloc(sizeof *c * V);
    int nnz = 0;
    for (int i = 0; i < V; i++) {
        p[i] = exp(((double)l[i] - mx) / o.temperature);
        total += p[i];
        if (p[i] > 0)
            c[nnz++] = (ref_cand){p[i], i};
    }
    qsort(c, (size_t)nnz, sizeof *c, ref_before);
    int top_k = o.top_k > 0 && o.top_k < nnz, limit = top_k ? o.top_k : nnz, cut = -1;
    double target = o.top_p * total;
    if (top_k) {
        double zk = 0;
        for (int i = 0; i < limit; i++)
            zk += c[i].p;
        target = o.top_p * zk;
    }
    double cum = 0;
    for (int i = 0; i < limit && cut < 0 && o.top_p < 1; i++) {
        cum += c[i].p;
        if (cum >= target)
            cut = i;
    }
    double thr = cut >= 0 ? c[cut].p : 0;
    int32_t *kept = malloc(sizeof *kept * V);
    int n = 0;
    for (int i = 0; i < V; i++) { /* id order */
        int in = p[i] > 0 && p[i] >= thr;
        if (in && top_k) { /* among the k best: p above the k-th, or tied with it and of a lower id */
            const ref_cand *k = &c[limit - 1];
            in = p[i] > k->p || (p[i] == k->p && i <= k->id);
        }
        if (in)
            kept[n++] = i;
    }
    double z = 0;
    for (int i = 0; i < n; i++)
        z += p[kept[i]];
    double r = g1_sample_uniform(o.seed, req, step) * z, acc = 0;
    int32_t tok = kept[n - 1];
    for (int i = 0; i < n; i++) {
        acc += p[kept[i]];
        if (r < acc) {
            tok = kept[i];
            break;
        }
    }
    free(p);
    free(c);
    free(kept);
    return tok;
}

static void test_against_full_sort(void)
{
    static const int Vs[] = {512, 1000, 131072};
    uint64_t st = 7;
    int bad = 0, total = 0;
    for (int vi = 0; vi < 3; vi++) {
        int V = Vs[vi];
        float *l = malloc(sizeof *l * V);
        g1_sampler *s;
        g1_sampler_init(&s, V);
        for (int k = 0; k < (V > 100000 ? 60 : 800); k++) {
            int kind = k % 6;
            if (kind == 5) { /* Zipf-like, ids shuffled: nuclei of tens to thousands of tokens */
                double alpha = 0.6 + (k % 5) * 0.4;
                for (int v = 0; v < V; v++)
                    l[v] = (float)(-alpha * log(1.0 + v));
                for (int v = V - 1; v > 0; v--) {
                    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
                    int w = (int)(st % (uint64_t)(v + 1));
                    float t = l[v];
                    l[v] = l[w];
                    l[w] = t;
                }
            }
            for (int v = 0; v < V && kind < 5; v++) {
                st ^= st << 13, st ^= st >> 7, st ^= st << 17;
                double u = (double)(st >> 11) / 9007199254740992.0;
                double g = 2 * u - 1 + (double)((st >> 3) % 7) / 7.0 - 0.5; /* rough bell */
                l[v] = kind == 0 ? (float)(2 * g) : kind == 1 ? (float)(0.3 * g) : kind == 2 ? (float)((st >> 5) % 3)
                     : kind == 3 ? (u < 0.5 ? -INFINITY : (float)g) : (float)(8 * g);
            }
            if (kind == 3)
                l[k % V] = 1.0f; /* never all -inf */
            for (int j = 0; j < k % 40 && kind < 5; j++) /* a few likely tokens */
                l[(size_t)(st >> 17) % (size_t)V + 0 * j] = (float)(10 + j % 5), st = st * 6364136223846793005ull + 1;
            g1_sample_opts o = {.temperature = k % 7 == 0 ? 0.05 : 0.3 + (k % 11) * 0.15,
                                .top_p = k % 3 == 0 ? 1.0 : 0.05 + (k % 19) * 0.05,
                                .top_k = k % 4 == 0 ? 1 + (k * 37) % 300 : 0,
                                .seed = (uint64_t)k};
            int32_t t;
            g1_sampler_sample(s, l, &o, (uint64_t)k, (uint64_t)(k % 9), &t);
            bad += t != ref_sample(l, V, o, (uint64_t)k, (uint64_t)(k % 9));
            total++;
        }
        g1_sampler_free(s);
        free(l);
    }
    CHECK(bad == 0, "%d of %d samples differ from a full sort's", bad, total);
}

/* The edges the random tests never hit: a nucleus whose probability equals
 * top_p exactly ("reaches" is >=, GROK1.md), the high 32 bits of the seed,
 * request and step, and the reference runner's defaults. */
static void test_edges(void)
{
    /* p ~ [1 .61 .37 .22] (unnormalised, as the sampler computes them, in
     * the order it adds them): a top_p whose product with the total is the
     * first two's sum exactly keeps {0, 1}; keeping token 2 too (a strict
     * comparison) draws it about 18% of the time */
    float l[4] = {0, -0.5f, -1.0f, -1.5f};
    double p[4], total = g1_row_exp(l, 4, 0.0, 1.0, p, NULL), cum = p[0] + p[1];
    double tp = cum / total;
    for (int i = 0; i < 8 && tp * total != cum; i++)
        tp = nextafter(tp, tp * total < cum ? 2.0 : 0.0);
    CHECK(tp * total == cum, "no top_p with top_p * total == %.17g found", cum);
    double w2[4] = {p[0] / cum, p[1] / cum, 0, 0};
    int bad;
    double x = chi2(l, 4, (g1_sample_opts){.temperature = 1, .top_p = tp, .seed = 18}, w2, 20000, &bad);
    CHECK(x < 15.1 && bad < 0, "top_p reached exactly (%.17g): chi2 %.1f (1 dof), token outside {0, 1}: %d", tp, x,
          bad);

    /* every bit of seed, request and step selects the stream */
    uint64_t hi = (uint64_t)1 << 32;
    double u = g1_sample_uniform(7, 3, 5);
    CHECK(u != g1_sample_uniform(7 + hi, 3, 5), "seed 7 + 2^32 draws what seed 7 draws");
    CHECK(u != g1_sample_uniform(7, 3 + hi, 5), "request 3 + 2^32 draws what request 3 draws");
    CHECK(u != g1_sample_uniform(7, 3, 5 + hi), "step 5 + 2^32 draws what step 5 draws");

    g1_sample_opts d = G1_SAMPLE_OPTS_DEFAULT;
    CHECK(d.temperature == 0.01 && d.top_p == 1.0 && d.top_k == 0 && d.seed == 42,
          "defaults are not the reference runner's (temperature 0.01, top_p 1, seed 42): %g %g %d %llu",
          d.temperature, d.top_p, (int)d.top_k, (unsigned long long)d.seed);
}

int main(void)
{
    test_philox();
    test_distributions();
    test_greedy_and_errors();
    test_edges();
    test_large_vocab();
    test_against_full_sort();
    if (tu_failures) {
        fprintf(stderr, "%d failures\n", tu_failures);
        return 1;
    }
    printf("sampler: all checks passed\n");
    return 0;
}
