/* Sampling one token from a logits row (see sampler.h for the semantics) and
 * log-probabilities. Shortcut: the nucleus is found by sorting only the top
 * m candidates (m grows by 8x until the set reaches top_p), not the whole
 * vocabulary, and those are selected from the few tokens a histogram of
 * the probabilities' exponents shows can be among them; the kept set is the
 * same as with a full sort. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rowmath.h"

typedef struct cand { double p; int32_t id; } cand;

struct g1_sampler {
    int32_t V;
    double *p;     /* (V) unnormalised probabilities exp((l - max) / T) */
    cand *c;       /* (V) candidates: the tokens that may be among the m best */
    int32_t *kept; /* (V) ids kept after the filters */
};

void g1_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        uint64_t a = (uint64_t)0xD2511F53u * c0, b = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(b >> 32) ^ c1 ^ k0, n1 = (uint32_t)b;
        uint32_t n2 = (uint32_t)(a >> 32) ^ c3 ^ k1, n3 = (uint32_t)a;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

double g1_sample_uniform(uint64_t seed, uint64_t request, uint64_t step)
{
    uint32_t ctr[4] = {(uint32_t)step, (uint32_t)(step >> 32), (uint32_t)request, (uint32_t)(request >> 32)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)}, out[4];
    g1_philox4x32(ctr, key, out);
    uint64_t bits = ((uint64_t)out[0] << 21) ^ (out[1] >> 11); /* 53 bits */
    return (double)bits * (1.0 / 9007199254740992.0);
}

g1_status g1_sample_opts_check(const g1_sample_opts *o)
{
    if (!(o->temperature >= 0) || !isfinite(o->temperature))
        return G1_FAIL(G1_ERR_ARG, "temperature %g must be a finite number >= 0 (0 = greedy)", o->temperature);
    if (!(o->top_p > 0 && o->top_p <= 1))
        return G1_FAIL(G1_ERR_ARG, "top_p %g must be in (0, 1]", o->top_p);
    if (o->top_k < 0)
        return G1_FAIL(G1_ERR_ARG, "top_k %d must be >= 0 (0 = no limit)", (int)o->top_k);
    return G1_OK;
}

g1_status g1_sampler_init(g1_sampler **s, int32_t V)
{
    *s = NULL;
    if (V <= 0)
        return G1_FAIL(G1_ERR_ARG, "sampler: vocabulary size %d must be positive", (int)V);
    g1_sampler *n = calloc(1, sizeof *n);
    if (n) {
        n->V = V;
        n->p = malloc(sizeof *n->p * (size_t)V);
        n->c = malloc(sizeof *n->c * (size_t)V);
        n->kept = malloc(sizeof *n->kept * (size_t)V);
    }
    if (!n || !n->p || !n->c || !n->kept) {
        g1_sampler_free(n);
        return G1_FAIL(G1_ERR_NOMEM, "sampler: out of memory for vocabulary %d", (int)V);
    }
    *s = n;
    return G1_OK;
}

double g1_sampler_bytes(int32_t V)
{
    return (double)V * (sizeof(double) + sizeof(cand) + sizeof(int32_t));
}

void g1_sampler_free(g1_sampler *s)
{
    if (!s)
        return;
    free(s->p);
    free(s->c);
    free(s->kept);
    free(s);
}

/* order: higher probability first, lower id on ties */
static int before(const cand *a, const cand *b) { return a->p > b->p || (a->p == b->p && a->id < b->id); }
static int cmp_cand(const void *a, const void *b) { return before(a, b) ? -1 : before(b, a) ? 1 : 0; }
static int cmp_id(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Move the m first elements (in `before` order) of c[0..n) to the front. */
static void select_top(cand *c, int32_t n, int32_t m)
{
    int32_t lo = 0, hi = n - 1;
    uint32_t rng = 0x9E3779B9u;
    while (lo < hi) {
        rng = rng * 1664525u + 1013904223u;
        cand pivot = c[lo + (int32_t)(rng % (uint32_t)(hi - lo + 1))];
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (before(&c[i], &pivot))
                i++;
            while (before(&pivot, &c[j]))
                j--;
            if (i <= j) {
                cand t = c[i];
                c[i++] = c[j];
                c[j--] = t;
            }
        }
        if (m - 1 <= j)
            hi = j;
        else if (m - 1 >= i)
            lo = i;
        else
            break;
    }
}

/* Into s->c, the tokens whose p is at least the largest power of two that
 * at least m of them reach (every p > 0 when fewer than m do): a superset of
 * the m best in `before` order, from a histogram of p's binary exponents,
 * so the selection partitions tens of candidates, not the vocabulary.
 * Returns their count (>= min(m, tokens with p > 0)). */
static int32_t gather(g1_sampler *s, int32_t m)
{
    int32_t hist[2048] = {0};
    for (int32_t i = 0; i < s->V; i++) {
        uint64_t u;
        memcpy(&u, &s->p[i], 8);
        hist[(u >> 52) & 0x7ff] += s->p[i] > 0;
    }
    int e = 2047;
    for (int32_t n = 0; e > 0 && n + hist[e] < m; e--)
        n += hist[e];
    int32_t nc = 0;
    for (int32_t i = 0; i < s->V; i++) {
        uint64_t u;
        memcpy(&u, &s->p[i], 8);
        if (s->p[i] > 0 && (int)((u >> 52) & 0x7ff) >= e)
            s->c[nc++] = (cand){s->p[i], i};
    }
    return nc;
}

g1_status g1_logits_max(const float *l, int32_t V, float *max)
{
    float mx = 0;
    int32_t bad = g1_row_max(l, V, &mx);
    if (bad >= 0)
        return G1_FAIL(G1_ERR_RANGE, "logit %d is %g: the model produced a NaN or infinity", (int)bad, (double)l[bad]);
    if (mx == -INFINITY)
        return G1_FAIL(G1_ERR_RANGE, "every logit is -inf: nothing can be sampled or scored");
    *max = mx;
    return G1_OK;
}

g1_status g1_row_logprob(const float *l, int32_t V, int32_t target, double *lp, int32_t *argmax)
{
    float mx = 0;
    G1_TRY(g1_logits_max(l, V, &mx));
    *argmax = g1_row_first(l, V, mx);
    *lp = target < 0 ? 0 : (double)l[target] - mx - log(g1_row_exp(l, V, mx, 1.0, NULL, NULL));
    return G1_OK;
}

g1_status g1_sampler_sample(g1_sampler *s, const float *logits, const g1_sample_opts *o,
                            uint64_t request, uint64_t step, int32_t *token)
{
    int32_t V = s->V;
    float mx = 0;
    G1_TRY(g1_logits_max(logits, V, &mx));
    if (o->temperature == 0 || o->top_k == 1) { /* the first of the largest */
        *token = g1_row_first(logits, V, mx);
        return G1_OK;
    }
    int32_t nnz = 0;
    double total = g1_row_exp(logits, V, mx, o->temperature, s->p, &nnz);
    int32_t n_kept = 0;
    int top_k = o->top_k > 0 && o->top_k < nnz;
    if (!top_k && o->top_p >= 1) {
        for (int32_t i = 0; i < V; i++)
            if (s->p[i] > 0)
                s->kept[n_kept++] = i;
    } else {
        int32_t limit = top_k ? o->top_k : nnz, m = top_k || limit < 64 ? limit : 64, cut = -1;
        double target = o->top_p * total;
        for (;;) {
            select_top(s->c, gather(s, m), m);
            qsort(s->c, (size_t)m, sizeof *s->c, cmp_cand);
            if (o->top_p >= 1)
                break;
            if (top_k) { /* the nucleus within the k best (m == limit: one pass) */
                double zk = 0;
                for (int32_t i = 0; i < m; i++)
                    zk += s->c[i].p;
                target = o->top_p * zk;
            }
            double cum = 0;
            for (int32_t i = 0; i < m && cut < 0; i++) {
                cum += s->c[i].p;
                if (cum >= target)
                    cut = i;
            }
            if (cut >= 0 || m == limit)
                break;
            m = m > limit / 8 ? limit : m * 8;
        }
        double thr = cut >= 0 ? s->c[cut].p : 0;
        if (top_k) { /* the k best, then the nucleus among them (ties with the threshold kept) */
            for (int32_t i = 0; i < limit; i++)
                if (s->c[i].p >= thr)
                    s->kept[n_kept++] = s->c[i].id;
            qsort(s->kept, (size_t)n_kept, sizeof *s->kept, cmp_id);
        } else {
            for (int32_t i = 0; i < V; i++)
                if (s->p[i] > 0 && s->p[i] >= thr)
                    s->kept[n_kept++] = i;
        }
    }
    double z = 0;
    for (int32_t i = 0; i < n_kept; i++)
        z += s->p[s->kept[i]];
    double r = g1_sample_uniform(o->seed, request, step) * z, acc = 0;
    *token = s->kept[n_kept - 1];
    for (int32_t i = 0; i < n_kept; i++) {
        acc += s->p[s->kept[i]];
        if (r < acc) {
            *token = s->kept[i];
            break;
        }
    }
    return G1_OK;
}

g1_status g1_logprobs(const float *logits, int32_t V, int32_t token, double *token_logprob,
                      int32_t n, g1_logprob *top)
{
    if (V <= 0 || n < 0 || n > V || (n > 0 && !top))
        return G1_FAIL(G1_ERR_ARG, "logprobs: bad arguments (V %d, n %d)", (int)V, (int)n);
    float mx = 0;
    G1_TRY(g1_logits_max(logits, V, &mx));
    double lse = mx + log(g1_row_exp(logits, V, mx, 1.0, NULL, NULL));
    int32_t have = 0;
    for (int32_t i = 0; i < V && n > 0; i++) {
        float v = logits[i];
        if (have == n && !(v > logits[top[n - 1].id]))
            continue;
        int32_t k = have < n ? have++ : n - 1;
        while (k > 0 && v > logits[top[k - 1].id]) {
            top[k] = top[k - 1];
            k--;
        }
        top[k].id = i;
    }
    for (int32_t k = 0; k < n; k++)
        top[k].logprob = (double)logits[top[k].id] - lse;
    if (token_logprob && token >= 0 && token < V)
        *token_logprob = (double)logits[token] - lse;
    return G1_OK;
}
