/* Hyper-parameter table, presets and validation. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P_INT(n) {#n, G1_PARAM_INT, offsetof(g1_config, n)}
#define P_DBL(n) {#n, G1_PARAM_DOUBLE, offsetof(g1_config, n)}
const g1_param_desc g1_params[] = {
    P_INT(vocab_size),  P_INT(emb_size),    P_INT(num_layers),
    P_INT(num_q_heads), P_INT(num_kv_heads), P_INT(key_size),
    P_INT(ffn_size),    P_INT(num_experts), P_INT(num_selected_experts),
    P_INT(max_seq_len), P_DBL(embedding_multiplier), P_DBL(output_multiplier),
    P_DBL(attn_output_multiplier), P_DBL(attn_logit_cap), P_DBL(rope_base),
    P_DBL(rms_eps),     P_INT(pad_id),      P_INT(bos_id),
    P_INT(eos_id),
};
const int g1_num_params = (int)(sizeof g1_params / sizeof g1_params[0]);

static void set_grok1(g1_config *c)
{
    c->vocab_size = 131072;
    c->emb_size = 6144;
    c->num_layers = 64;
    c->num_q_heads = 48;
    c->num_kv_heads = 8;
    c->key_size = 128;
    c->ffn_size = 32768;
    c->num_experts = 8;
    c->num_selected_experts = 2;
    c->max_seq_len = 8192;
    c->embedding_multiplier = 78.38367176906169;
    c->output_multiplier = 0.5773502691896257;
    c->attn_output_multiplier = 0.08838834764831845;
    c->attn_logit_cap = 30.0;
    c->rope_base = 10000.0;
    c->rms_eps = 1e-5;
    c->pad_id = 0;
    c->bos_id = 1;
    c->eos_id = 2;
}

g1_status g1_config_preset(const char *name, g1_config *c)
{
    memset(c, 0, sizeof *c);
    set_grok1(c);
    if (!strcmp(name, "grok-1"))
        return G1_OK;
    if (!strcmp(name, "tiny")) {
        /* 4 layers, 8 experts with top-2, GQA 4:2, blocked scales: every
         * feature of the real model, under 1 MB. */
        c->vocab_size = 512;
        c->emb_size = 64;
        c->num_layers = 4;
        c->num_q_heads = 4;
        c->num_kv_heads = 2;
        c->key_size = 16;
        c->ffn_size = 96;
        c->max_seq_len = 256;
        c->attn_output_multiplier = 0.25; /* 1/sqrt(key_size) */
        return G1_OK;
    }
    if (!strcmp(name, "small")) {
        /* About 1 GB on disk; the real vocabulary so the real tokenizer fits.
         * ffn_size follows Grok-1's rule: int(8 * D) * 2 // 3 rounded up to 8. */
        c->emb_size = 1024;
        c->num_layers = 4;
        c->num_q_heads = 8;
        c->num_kv_heads = 2;
        c->key_size = 128;
        c->ffn_size = 5464;
        return G1_OK;
    }
    return G1_FAIL(G1_ERR_ARG, "unknown model preset '%s' (known: tiny, small, grok-1)", name);
}

g1_status g1_config_set(g1_config *c, const char *key, const char *value)
{
    for (int i = 0; i < g1_num_params; i++) {
        const g1_param_desc *p = &g1_params[i];
        if (strcmp(p->name, key))
            continue;
        char *end = NULL;
        errno = 0;
        if (p->type == G1_PARAM_INT) {
            long v = strtol(value, &end, 10);
            if (errno || end == value || *end || v < -2147483647L || v > 2147483647L)
                return G1_FAIL(G1_ERR_ARG, "%s=%s: expected an integer", key, value);
            *(int *)((char *)c + p->offset) = (int)v;
        } else {
            double v = strtod(value, &end);
            if (errno || end == value || *end)
                return G1_FAIL(G1_ERR_ARG, "%s=%s: expected a number", key, value);
            *(double *)((char *)c + p->offset) = v;
        }
        return G1_OK;
    }
    return G1_FAIL(G1_ERR_ARG, "unknown hyper-parameter '%s'", key);
}

g1_status g1_config_validate(const g1_config *c)
{
#define NEED(cond, ...)                                       \
    do {                                                      \
        if (!(cond))                                          \
            return G1_FAIL(G1_ERR_FORMAT, __VA_ARGS__);       \
    } while (0)
    NEED(c->vocab_size > 0, "vocab_size must be positive (got %d)", c->vocab_size);
    NEED(c->num_layers > 0 && c->num_layers <= 1000, "num_layers must be in 1..1000 (got %d)", c->num_layers);
    NEED(c->num_q_heads > 0 && c->num_kv_heads > 0, "num_q_heads and num_kv_heads must be positive");
    NEED(c->num_q_heads % c->num_kv_heads == 0, "num_q_heads (%d) must be a multiple of num_kv_heads (%d)",
         c->num_q_heads, c->num_kv_heads);
    NEED(c->key_size > 0 && c->key_size % 2 == 0, "key_size must be positive and even (got %d)", c->key_size);
    /* products in 64 bits: an int product could wrap (65536 heads of 65536 made emb_size 0 pass) */
    NEED((long long)c->emb_size == (long long)c->num_q_heads * c->key_size,
         "emb_size (%d) must equal num_q_heads * key_size (%d * %d)", c->emb_size, c->num_q_heads, c->key_size);
    NEED(c->ffn_size > 0, "ffn_size must be positive (got %d)", c->ffn_size);
    /* every weight matrix (D x D at most for attention, D x F for an expert) is indexed with int */
    NEED((long long)c->emb_size * c->emb_size <= INT_MAX && (long long)c->emb_size * c->ffn_size <= INT_MAX,
         "emb_size * emb_size and emb_size * ffn_size must be below 2^31 (a weight matrix's elements); got "
         "emb_size %d, ffn_size %d", c->emb_size, c->ffn_size);
    NEED(c->num_experts > 0 && c->num_experts <= 256, "num_experts must be in 1..256 (got %d)", c->num_experts);
    NEED(c->num_selected_experts > 0 && c->num_selected_experts <= c->num_experts,
         "num_selected_experts must be in 1..num_experts (got %d)", c->num_selected_experts);
    NEED(c->max_seq_len > 0 && c->max_seq_len <= G1_MAX_SEQ_LEN, "max_seq_len must be in 1..%d (got %d)",
         G1_MAX_SEQ_LEN, c->max_seq_len);
    for (int i = 0; i < g1_num_params; i++) { /* a NaN or infinite multiplier would only show as NaN logits */
        const g1_param_desc *p = &g1_params[i];
        if (p->type != G1_PARAM_DOUBLE)
            continue;
        double v = *(const double *)((const char *)c + p->offset);
        NEED(isfinite(v), "%s must be a finite number (got %g)", p->name, v);
    }
    NEED(c->rms_eps > 0, "rms_eps must be positive");
    NEED(c->attn_logit_cap > 0, "attn_logit_cap must be positive");
    NEED(c->rope_base > 1, "rope_base must be above 1");
    NEED(c->eos_id >= 0 && c->eos_id < c->vocab_size, "eos_id (%d) outside the vocabulary", c->eos_id);
    NEED(c->bos_id >= 0 && c->bos_id < c->vocab_size, "bos_id (%d) outside the vocabulary", c->bos_id);
    NEED(c->pad_id >= 0 && c->pad_id < c->vocab_size, "pad_id (%d) outside the vocabulary", c->pad_id);
    /* an empty text prompt is given BOS alone: it would feed the pad id,
     * which the runner refuses in input and the release masks out of
     * attention (no preset, nor Grok-1, has them equal) */
    NEED(c->bos_id != c->pad_id,
         "bos_id (%d) is the pad_id (%d): an empty text prompt is given BOS alone, and the pad id is masked out of "
         "attention by the released model and refused in input by this runner; give bos_id another id",
         c->bos_id, c->pad_id);
    /* int sizes must not overflow in products we index with size_t anyway */
    NEED((long long)c->vocab_size * c->emb_size < (1LL << 40), "vocab_size * emb_size too large");
#undef NEED
    return G1_OK;
}

int g1_config_default_blocks(const g1_config *c, int rows, int release_blocks)
{
    (void)c;
    int b = release_blocks;
    while (b > 1 && rows % b)
        b--;
    return b;
}

void g1_config_print(const g1_config *c, void *file)
{
    FILE *f = file;
    for (int i = 0; i < g1_num_params; i++) {
        const g1_param_desc *p = &g1_params[i];
        if (p->type == G1_PARAM_INT)
            fprintf(f, "  %-24s %d\n", p->name, *(const int *)((const char *)c + p->offset));
        else
            fprintf(f, "  %-24s %.17g\n", p->name, *(const double *)((const char *)c + p->offset));
    }
}
