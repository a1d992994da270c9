/* Next-token sampling from one float32 logits row: temperature (0 = greedy),
 * top-k, nucleus top-p with the Grok-1 reference's semantics, randomness from
 * Philox 4x32-10 keyed by (seed, request, token index) so a request's tokens
 * never depend on batch, layout or timing. Plus log-probabilities (top-N and
 * of a given token). No tokenizer, no engine here. */
#ifndef G1_SAMPLER_H
#define G1_SAMPLER_H

#include <stdint.h>

#include "status.h"

/* Per-request settings (validated once with g1_sample_opts_check). */
typedef struct g1_sample_opts {
    double temperature; /* >= 0; 0 = greedy argmax (lowest id on ties) */
    double top_p;       /* (0, 1]; 1 keeps every token */
    int32_t top_k;      /* >= 0; 0 = no limit */
    uint64_t seed;
} g1_sample_opts;

/* The reference runner's defaults: temperature 0.01, top_p 1, seed 42. */
#define G1_SAMPLE_OPTS_DEFAULT ((g1_sample_opts){.temperature = 0.01, .top_p = 1.0, .top_k = 0, .seed = 42})

/* G1_ERR_ARG with a message naming the bad field. */
g1_status g1_sample_opts_check(const g1_sample_opts *o);

/* Scratch for one vocabulary size; one per thread (not shared). */
typedef struct g1_sampler g1_sampler;
g1_status g1_sampler_init(g1_sampler **s, int32_t vocab_size);
void g1_sampler_free(g1_sampler *s);
/* The bytes g1_sampler_init allocates for a vocabulary of V beyond the
 * struct: its three arrays of V entries (the planner counts one a thread). */
double g1_sampler_bytes(int32_t vocab_size);

/* Sample one token from logits (V = vocab_size) with opts. `request` is a
 * stable number of the request (e.g. its input line), `step` the index of
 * the token being generated within that request (0 for the first new
 * token): the same (seed, request, step, logits) gives the same token.
 * Filters, in order: logits / temperature; top-k (the k highest, lowest id
 * first on ties); top-p over what is left (sort by probability; keep the
 * smallest top set whose probability reaches top_p, plus every token tied
 * with the last one kept); then draw from the renormalised rest.
 * Probabilities in double. G1_ERR_RANGE if a logit is NaN or +inf, or all
 * are -inf. */
g1_status g1_sampler_sample(g1_sampler *s, const float *logits, const g1_sample_opts *o,
                            uint64_t request, uint64_t step, int32_t *token);

typedef struct g1_logprob { int32_t id; double logprob; } g1_logprob;

/* The largest logit of a row (V). G1_ERR_RANGE, naming the first, if a
 * logit is NaN or +inf, or if all are -inf. */
g1_status g1_logits_max(const float *logits, int32_t V, float *max);

/* The score of a logits row: the log-softmax at `target` in double (*lp; 0
 * when target < 0) and the first index of the largest logit (*argmax);
 * fails as g1_logits_max does. */
g1_status g1_row_logprob(const float *logits, int32_t V, int32_t target, double *lp, int32_t *argmax);

/* Log-softmax (in double) of the raw logits row (V): the n highest as
 * top[0..n) (descending, lowest id first on ties; n <= V), and the log-prob
 * of `token` in *token_logprob (when not NULL and token is in [0, V)).
 * top may be NULL when n == 0. */
g1_status g1_logprobs(const float *logits, int32_t V, int32_t token, double *token_logprob,
                      int32_t n, g1_logprob *top);

/* Philox 4x32-10 (Salmon et al., SC'11): 4 x 32 random bits for a counter
 * and key. Exported for tests and for anything else that needs
 * layout-independent randomness. */
void g1_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* The uniform double in [0, 1) the sampler draws for (seed, request, step). */
double g1_sample_uniform(uint64_t seed, uint64_t request, uint64_t step);

#endif
