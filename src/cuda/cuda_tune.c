/* --cuda-tune KEY=VALUE[,KEY=VALUE...]: the CUDA backend's tuning switches
 * (g1_cuda_opts, engine.h) from text. Plain C, in every build (a build
 * without CUDA still checks the option). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_tune.h"

enum { T_INT, T_WORD };

typedef struct tune_key {
    const char *name;
    int kind;
    int lo, hi;              /* T_INT: accepted values */
    const char *words[3];    /* T_WORD: the two words, the first giving 0 */
} tune_key;

static const tune_key keys[] = {
    {"gemv-max-tokens", T_INT, 0, G1_CUDA_TUNE_GEMV_MAX, {NULL}},
    {"mma-max-tokens", T_INT, 0, G1_CUDA_TUNE_MMA_MAX, {NULL}},
    {"mma-tile-cols", T_INT, 64, 128, {NULL}},
    {"attn-mma", T_WORD, 0, 0, {"on", "off", NULL}},
    {"moe-grouping", T_WORD, 0, 0, {"device", "host", NULL}},
    {"gemm-overlap", T_WORD, 0, 0, {"on", "off", NULL}},
    {"panel-mib", T_INT, 1, G1_CUDA_TUNE_PANEL_MAX, {NULL}},
};
enum { N_KEYS = sizeof keys / sizeof keys[0] };

static void set(g1_cuda_opts *co, int k, int v)
{
    switch (k) {
    case 0: co->gemv_max_tokens = v ? v : -1; break;
    case 1: co->mma_max_tokens = v ? v : -1; break;
    case 2: co->mma_tile_cols = v; break;
    case 3: co->attn_no_mma = v; break;
    case 4: co->moe_host_groups = v; break;
    case 5: co->gemm_no_overlap = v; break;
    default: co->panel_elems = (int)((size_t)v << 19); break; /* bf16 elements in v MiB */
    }
}

/* key k's value in *co as grok1-run --cuda-tune gives it (a word's
 * index for T_WORD); -1 when it is the default */
static int get(const g1_cuda_opts *co, int k)
{
    switch (k) {
    case 0: return co->gemv_max_tokens < 0 ? 0 : co->gemv_max_tokens ? co->gemv_max_tokens : -1;
    case 1: return co->mma_max_tokens < 0 ? 0 : co->mma_max_tokens ? co->mma_max_tokens : -1;
    case 2: return co->mma_tile_cols ? co->mma_tile_cols : -1;
    case 3: return co->attn_no_mma ? 1 : -1;
    case 4: return co->moe_host_groups ? 1 : -1;
    case 5: return co->gemm_no_overlap ? 1 : -1;
    default: {
        if (co->panel_elems <= 0)
            return -1;
        long mib = ((long)co->panel_elems + (1L << 19) - 1) >> 19;
        return (int)(mib > G1_CUDA_TUNE_PANEL_MAX ? G1_CUDA_TUNE_PANEL_MAX : mib);
    }
    }
}

int g1_cuda_tune_text(const g1_cuda_opts *co, char *buf, size_t n)
{
    size_t len = 0;
    if (n)
        buf[0] = 0;
    for (int k = 0; k < N_KEYS; k++) {
        int v = get(co, k);
        if (v < 0)
            continue;
        char one[64];
        if (keys[k].kind == T_WORD)
            snprintf(one, sizeof one, "%s%s=%s", len ? "," : "", keys[k].name, keys[k].words[v ? 1 : 0]);
        else
            snprintf(one, sizeof one, "%s%s=%d", len ? "," : "", keys[k].name, v);
        if (len < n)
            snprintf(buf + len, n - len, "%s", one);
        len += strlen(one);
    }
    return (int)len;
}

g1_status g1_cuda_tune_parse(const char *spec, g1_cuda_opts *co)
{
    g1_cuda_opts out = *co;
    const char *p = spec;
    if (!*p)
        return G1_FAIL(G1_ERR_ARG, "--cuda-tune: empty (expected KEY=VALUE[,KEY=VALUE...]; keys: %s)",
                       G1_CUDA_TUNE_KEYS);
    while (*p) {
        const char *end = strchr(p, ','), *eq = strchr(p, '=');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (!eq || eq >= p + len)
            return G1_FAIL(G1_ERR_ARG, "--cuda-tune %.*s: expected KEY=VALUE (keys: %s)", (int)len, p,
                           G1_CUDA_TUNE_KEYS);
        size_t klen = (size_t)(eq - p), vlen = len - klen - 1;
        const char *val = eq + 1;
        int k = 0;
        while (k < N_KEYS && (strlen(keys[k].name) != klen || strncmp(keys[k].name, p, klen)))
            k++;
        if (k == N_KEYS)
            return G1_FAIL(G1_ERR_ARG, "--cuda-tune: unknown setting '%.*s' (keys: %s)", (int)klen, p,
                           G1_CUDA_TUNE_KEYS);
        const tune_key *t = &keys[k];
        int v = -1;
        if (t->kind == T_WORD) {
            for (int w = 0; t->words[w]; w++)
                if (strlen(t->words[w]) == vlen && !strncmp(t->words[w], val, vlen))
                    v = w;
            if (v < 0)
                return G1_FAIL(G1_ERR_ARG, "--cuda-tune %.*s: expected %s=%s or %s", (int)len, p, t->name,
                               t->words[0], t->words[1]);
        } else {
            char num[16] = "", *e = NULL;
            long n = -1;
            if (vlen && vlen < sizeof num && val[0] >= '0' && val[0] <= '9') {
                memcpy(num, val, vlen);
                errno = 0;
                n = strtol(num, &e, 10);
                if (errno || *e)
                    n = -1;
            }
            int ok = n >= t->lo && n <= t->hi && (k != 2 || n == 64 || n == 128);
            if (!ok) {
                if (k == 2)
                    return G1_FAIL(G1_ERR_ARG, "--cuda-tune %.*s: expected %s=64 or 128", (int)len, p, t->name);
                return G1_FAIL(G1_ERR_ARG, "--cuda-tune %.*s: expected %s=N with N from %d to %d", (int)len, p,
                               t->name, t->lo, t->hi);
            }
            v = (int)n;
        }
        set(&out, k, v);
        p += len;
        if (*p == ',') {
            p++;
            if (!*p)
                return G1_FAIL(G1_ERR_ARG, "--cuda-tune %s: ends with a comma", spec);
        }
    }
    *co = out;
    return G1_OK;
}
