/* Each CPU kernel against a naive loop in double precision, on random and
 * uneven shapes; and the batch-independence property of the matmuls. */
#include <math.h>
#include <string.h>

#include "bf16.h"
#include "cpu.h"
#include "testutil.h"

static void test_matmul(int T, int rows, int cols, int blocks)
{
    g1_qmat W = {.rows = rows, .cols = cols, .blocks = blocks};
    W.w = malloc((size_t)rows * cols);
    W.scale = malloc((size_t)blocks * cols * sizeof(float));
    float *x = malloc((size_t)T * rows * sizeof(float)), *y = malloc((size_t)T * cols * sizeof(float));
    float *y1 = malloc((size_t)cols * sizeof(float));
    double *ref = malloc((size_t)T * cols * sizeof(double));
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        W.w[i] = (int8_t)(tu_int(255) - 127);
    for (size_t i = 0; i < (size_t)blocks * cols; i++)
        W.scale[i] = (float)(0.001 + 0.01 * tu_unif()); /* not bf16-exact: double rounding path too */
    for (size_t i = 0; i < (size_t)T * rows; i++)
        x[i] = tu_sym();
    for (int t = 0; t < T; t++)
        for (int c = 0; c < cols; c++) {
            double s = 0;
            for (int r = 0; r < rows; r++) {
                float wf = g1_round_bf16((float)W.w[(size_t)r * cols + c] * W.scale[(size_t)(r / (rows / blocks)) * cols + c]);
                s += (double)x[(size_t)t * rows + r] * wf;
            }
            ref[(size_t)t * cols + c] = s;
        }
    g1_cpu_matmul_q8(x, T, &W, y);
    char name[96];
    snprintf(name, sizeof name, "matmul_q8 T=%d %dx%d blocks=%d", T, rows, cols, blocks);
    tu_close(name, y, ref, (size_t)T * cols, 1e-5 * sqrt(rows), 1e-5);
    /* every row equals the same row computed alone, bitwise */
    int same = 1;
    for (int t = 0; t < T; t++) {
        g1_cpu_matmul_q8(x + (size_t)t * rows, 1, &W, y1);
        same &= !memcmp(y1, y + (size_t)t * cols, (size_t)cols * sizeof(float));
    }
    snprintf(name, sizeof name, "  rows alone == in batch (T=%d)", T);
    tu_check(same, name);
    free(W.w); free(W.scale); free(x); free(y); free(y1); free(ref);
}

/* The Veltkamp rounding path (bf16 scales) equals the integer rounding path
 * bitwise; and the split itself equals RNE for every int8 x bf16 pair. */
static void test_split(int T, int rows, int cols, int blocks)
{
    g1_qmat W = {.rows = rows, .cols = cols, .blocks = blocks};
    W.w = malloc((size_t)rows * cols);
    W.scale = malloc((size_t)blocks * cols * sizeof(float));
    float *ss = malloc((size_t)blocks * cols * sizeof(float));
    float *x = malloc((size_t)T * rows * 4), *y0 = malloc((size_t)T * cols * 4), *y1 = malloc((size_t)T * cols * 4);
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        W.w[i] = (int8_t)(tu_int(255) - 127);
    for (size_t i = 0; i < (size_t)blocks * cols; i++) {
        W.scale[i] = g1_round_bf16((float)(1e-4 + 0.01 * tu_unif()) * (tu_int(2) ? 1 : -1));
        ss[i] = W.scale[i] * 65537.0f;
    }
    for (size_t i = 0; i < (size_t)T * rows; i++)
        x[i] = tu_sym();
    W.scale_split = NULL;
    g1_cpu_matmul_q8(x, T, &W, y0);
    W.scale_split = ss;
    g1_cpu_matmul_q8(x, T, &W, y1);
    char name[96];
    snprintf(name, sizeof name, "split rounding == integer rounding T=%d", T);
    tu_check(!memcmp(y0, y1, (size_t)T * cols * 4), name);
    free(W.w); free(W.scale); free(ss); free(x); free(y0); free(y1);
}

static void test_split_exhaustive(void)
{
    long bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float s = g1_bf16_to_f32((uint16_t)h), a = fabsf(s);
        if (!(a == 0.0f || (a > 0x1p-100f && a < 0x1p100f)))
            continue; /* g1_weights_prepare uses the split only in this range */
        volatile float sp = s * 65537.0f;
        for (int q = -127; q <= 127; q++) {
            volatile float p = (float)q * s, c = (float)q * sp, d = c - p, hi = c - d;
            float ref = g1_round_bf16((float)q * s);
            bad += memcmp((const void *)&hi, &ref, 4) != 0;
        }
    }
    tu_check(bad == 0, "Veltkamp split == RNE for all int8 x bf16");
}

static void test_unembed(int T, int D, int N)
{
    uint16_t *E = malloc((size_t)N * D * 2);
    float *x = malloc((size_t)T * D * 4), *y = malloc((size_t)T * N * 4), *y1 = malloc((size_t)N * 4);
    double *ref = malloc((size_t)T * N * 8);
    for (size_t i = 0; i < (size_t)N * D; i++)
        E[i] = g1_f32_to_bf16(tu_sym());
    for (size_t i = 0; i < (size_t)T * D; i++)
        x[i] = tu_sym();
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int d = 0; d < D; d++)
                s += (double)x[(size_t)t * D + d] * g1_bf16_to_f32(E[(size_t)n * D + d]);
            ref[(size_t)t * N + n] = s * 0.5f;
        }
    g1_cpu_matmul_bf16_nt(x, T, D, E, N, 0.5f, y);
    char name[96];
    snprintf(name, sizeof name, "unembed T=%d D=%d N=%d", T, D, N);
    tu_close(name, y, ref, (size_t)T * N, 1e-5 * sqrt(D), 1e-5);
    int same = 1;
    for (int t = 0; t < T; t++) {
        g1_cpu_matmul_bf16_nt(x + (size_t)t * D, 1, D, E, N, 0.5f, y1);
        same &= !memcmp(y1, y + (size_t)t * N, (size_t)N * 4);
    }
    tu_check(same, "  rows alone == in batch");
    free(E); free(x); free(y); free(y1); free(ref);
}

/* Each kernel path's summation order, modelled in scalar C and compared
 * bitwise: the int8 matmul is one fmaf chain per element on every path;
 * the un-embedding is 16 lanes summed in order except on AVX-512; q.k is
 * 16 lanes reduced as _mm512_reduce_add_ps does on AVX-512 and AVX2, one
 * chain in portable C. (Which path this build has: cpu_matmul.c.) */
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define DOT_LANES 1
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define UNEMBED_OWN_ORDER 1
#endif

static float model_dot(const float *a, const float *b, int n)
{
#ifdef DOT_LANES
    float l[16] = {0}, t3[8], t6[4], t8[4];
    for (int i = 0; i < n; i++)
        l[i % 16] = fmaf(a[i], b[i], l[i % 16]);
    for (int j = n % 16 ? n % 16 : 16; j < 16; j++) /* the masked tail step adds 0 * 0 */
        l[j] = fmaf(0.0f, 0.0f, l[j]);
    for (int i = 0; i < 8; i++)
        t3[i] = l[i + 8] + l[i];
    for (int i = 0; i < 4; i++)
        t6[i] = t3[i + 4] + t3[i];
    for (int i = 0; i < 4; i++)
        t8[i] = t6[i] + t6[i ^ 2];
    return t8[0] + t8[1];
#else
    float s = 0;
    for (int i = 0; i < n; i++)
        s = fmaf(a[i], b[i], s);
    return s;
#endif
}

static void test_orders(void)
{
    int bad = 0;
    for (int k = 0; k < 300; k++) {
        float a[300], b[300];
        int n = 1 + tu_int(299);
        for (int i = 0; i < n; i++) {
            a[i] = tu_sym();
            b[i] = tu_sym();
        }
        float got = g1_cpu_dot(a, b, n), want = model_dot(a, b, n);
        bad += memcmp(&got, &want, 4) != 0;
    }
    tu_check(!bad, "dot == its path's lane model, bitwise");

    int shapes[][4] = {{1, 64, 200, 2}, {5, 96, 70, 1}, {9, 300, 130, 3}, {50, 256, 520, 4}, {3, 40, 13, 1}};
    bad = 0;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int T = shapes[k][0], rows = shapes[k][1], cols = shapes[k][2], blocks = shapes[k][3];
        g1_qmat W = {.rows = rows, .cols = cols, .blocks = blocks};
        W.w = malloc((size_t)rows * cols);
        W.scale = malloc((size_t)blocks * cols * sizeof(float));
        float *x = malloc((size_t)T * rows * 4), *y = malloc((size_t)T * cols * 4);
        for (size_t i = 0; i < (size_t)rows * cols; i++)
            W.w[i] = (int8_t)(tu_int(255) - 127);
        for (size_t i = 0; i < (size_t)blocks * cols; i++)
            W.scale[i] = (float)(0.001 + 0.01 * tu_unif());
        for (size_t i = 0; i < (size_t)T * rows; i++)
            x[i] = tu_sym();
        g1_cpu_matmul_q8(x, T, &W, y);
        for (int t = 0; t < T; t++)
            for (int c = 0; c < cols; c++) {
                float acc = 0;
                for (int r = 0; r < rows; r++)
                    acc = fmaf(x[(size_t)t * rows + r],
                               g1_dequant(W.w[(size_t)r * cols + c], W.scale[(size_t)(r / (rows / blocks)) * cols + c]),
                               acc);
                bad += memcmp(&acc, &y[(size_t)t * cols + c], 4) != 0;
            }
        free(W.w); free(W.scale); free(x); free(y);
    }
    tu_check(!bad, "matmul_q8 == one fmaf chain per element, bitwise");
#ifndef UNEMBED_OWN_ORDER
    int us[][3] = {{1, 64, 37}, {7, 100, 30}, {4, 33, 9}};
    bad = 0;
    for (size_t k = 0; k < sizeof us / sizeof us[0]; k++) {
        int T = us[k][0], D = us[k][1], N = us[k][2];
        uint16_t *E = malloc((size_t)N * D * 2);
        float *x = malloc((size_t)T * D * 4), *y = malloc((size_t)T * N * 4);
        for (size_t i = 0; i < (size_t)N * D; i++)
            E[i] = g1_f32_to_bf16(tu_sym());
        for (size_t i = 0; i < (size_t)T * D; i++)
            x[i] = tu_sym();
        g1_cpu_matmul_bf16_nt(x, T, D, E, N, 0.5f, y);
        for (int t = 0; t < T; t++)
            for (int n = 0; n < N; n++) {
                float l[16] = {0}, s = 0;
                for (int d = 0; d < D; d++)
                    l[d % 16] = fmaf(x[(size_t)t * D + d], g1_bf16_to_f32(E[(size_t)n * D + d]), l[d % 16]);
                for (int j = 0; j < 16; j++)
                    s += l[j];
                s *= 0.5f;
                bad += memcmp(&s, &y[(size_t)t * N + n], 4) != 0;
            }
        free(E); free(x); free(y);
    }
    tu_check(!bad, "unembed == 16 lanes summed in order, bitwise");
#endif
}

static void test_small_ops(void)
{
    enum { T = 5, D = 40, H = 3, K = 8 };
    float x[T * D], sc[D], out[T * D];
    double ref[T * D];
    for (int i = 0; i < T * D; i++)
        x[i] = 3 * tu_sym();
    for (int i = 0; i < D; i++)
        sc[i] = 0.5f + (float)tu_unif();
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int d = 0; d < D; d++)
            ss += (double)x[t * D + d] * x[t * D + d];
        for (int d = 0; d < D; d++)
            ref[t * D + d] = sc[d] * x[t * D + d] / sqrt(ss / D + 1e-5);
    }
    g1_cpu_rmsnorm(x, T, D, sc, 1e-5f, out);
    tu_close("rmsnorm", out, ref, T * D, 1e-6, 1e-6);

    /* RoPE, rotate-half layout, straight from the formula */
    float v[T * H * K];
    int pos[T] = {0, 1, 7, 100, 8191};
    memcpy(v, x, sizeof v);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++)
            for (int j = 0; j < K; j++) {
                const float *in = x + (t * H + h) * K;
                double th = pos[t] / pow(10000.0, 2.0 * (j % (K / 2)) / K);
                double r = j < K / 2 ? -in[j + K / 2] : in[j - K / 2];
                ref[(t * H + h) * K + j] = in[j] * cos(th) + r * sin(th);
            }
    g1_cpu_rope(v, T, H, K, pos, 10000.0);
    tu_close("rope", v, ref, T * H * K, 1e-5, 1e-5);

    float a[64], b[64], g[64];
    double gr[64];
    for (int i = 0; i < 64; i++) {
        a[i] = 6 * tu_sym();
        b[i] = tu_sym();
        double xa = a[i];
        gr[i] = 0.5 * xa * (1 + tanh(sqrt(2 / M_PI) * (xa + 0.044715 * xa * xa * xa))) * b[i];
    }
    g1_cpu_gelu_mul(a, b, 64, g);
    tu_close("gelu_tanh * linear", g, gr, 64, 1e-6, 1e-5);

    /* router: top-2 of softmax, probabilities not renormalised */
    enum { E = 8 };
    float wr[D * E], gate[T * 2];
    int idx[T * 2];
    for (int i = 0; i < D * E; i++)
        wr[i] = 0.3f * tu_sym();
    g1_cpu_router(x, T, D, wr, E, 2, idx, gate);
    int ok = 1;
    for (int t = 0; t < T; t++) {
        double l[E], m = -1e300, s = 0;
        for (int e = 0; e < E; e++) {
            l[e] = 0;
            for (int d = 0; d < D; d++)
                l[e] += (double)x[t * D + d] * wr[d * E + e];
            m = fmax(m, l[e]);
        }
        for (int e = 0; e < E; e++)
            s += exp(l[e] - m);
        int b1 = 0;
        for (int e = 1; e < E; e++)
            b1 = l[e] > l[b1] ? e : b1;
        int b2 = b1 == 0 ? 1 : 0;
        for (int e = 0; e < E; e++)
            b2 = e != b1 && l[e] > l[b2] ? e : b2;
        ok &= idx[t * 2] == b1 && idx[t * 2 + 1] == b2;
        ok &= fabs(gate[t * 2] - exp(l[b1] - m) / s) < 1e-6 && fabs(gate[t * 2 + 1] - exp(l[b2] - m) / s) < 1e-6;
        ok &= gate[t * 2] + gate[t * 2 + 1] < 0.99999; /* not renormalised */
    }
    tu_check(ok, "router top-2, full-softmax gates");
    float wt[D * E];
    memset(wt, 0, sizeof wt); /* all logits equal: ties go to the lower index */
    g1_cpu_router(x, 1, D, wt, E, 2, idx, gate);
    tu_check(idx[0] == 0 && idx[1] == 1 && fabsf(gate[0] - 0.125f) < 1e-7f, "router ties: lower index first");
}

static void test_attention(void)
{
    enum { Hq = 4, Hkv = 2, K = 16, L = 37 };
    int T = 3, pos[3] = {0, 20, 36};
    float q[3 * Hq * K], kc[L * Hkv * K], vc[L * Hkv * K], out[3 * Hq * K];
    double ref[3 * Hq * K];
    for (int i = 0; i < 3 * Hq * K; i++)
        q[i] = 12 * tu_sym();
    for (int i = 0; i < L * Hkv * K; i++) {
        kc[i] = 12 * tu_sym();
        vc[i] = tu_sym();
    }
    float mult = 0.25f, cap = 30.0f;
    double maxraw = 0;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < Hq; h++) {
            int g = h / (Hq / Hkv), n = pos[t] + 1;
            double s[L], m = -1e300, sum = 0;
            for (int j = 0; j < n; j++) {
                double d = 0;
                for (int i = 0; i < K; i++)
                    d += (double)q[(t * Hq + h) * K + i] * kc[(j * Hkv + g) * K + i];
                d *= mult;
                maxraw = fmax(maxraw, fabs(d));
                s[j] = cap * tanh(d / cap);
                m = fmax(m, s[j]);
            }
            for (int j = 0; j < n; j++)
                sum += (s[j] = exp(s[j] - m));
            for (int i = 0; i < K; i++) {
                double o = 0;
                for (int j = 0; j < n; j++)
                    o += s[j] / sum * vc[(j * Hkv + g) * K + i];
                ref[(t * Hq + h) * K + i] = o;
            }
        }
    const float *kp[3] = {kc, kc, kc}, *vp[3] = {vc, vc, vc};
    int threads = g1_cpu_threads();
    float *scores = malloc((size_t)threads * L * sizeof(float));
    g1_attn_args a = {.T = T, .Hq = Hq, .Hkv = Hkv, .K = K, .q = q, .kc = kp, .vc = vp, .pos = pos,
                      .mult = mult, .cap = cap, .scores = scores, .scores_stride = L, .out = out};
    g1_cpu_attention(&a);
    tu_close("attention (GQA, soft cap, causal)", out, ref, 3 * Hq * K, 1e-5, 1e-4);
    tu_check(maxraw > 30, "  attention test has raw scores above the cap");
    free(scores);
}

int main(void)
{
    printf("CPU kernels: %s\n", g1_cpu_kernels());
    int shapes[][4] = {{1, 64, 64, 1},  {1, 64, 96, 8},   {3, 96, 64, 8},   {6, 128, 200, 2},
                       {7, 64, 32, 1},  {13, 256, 130, 4}, {50, 520, 70, 8}, {100, 64, 256, 1},
                       {2, 1024, 1024, 8}, {1, 3000, 17, 3}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        test_matmul(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3]);
    test_split_exhaustive();
    test_split(1, 256, 200, 8);
    test_split(9, 64, 128, 1);
    test_unembed(1, 64, 37);
    test_unembed(7, 100, 300);
    test_small_ops();
    test_orders();
    test_attention();
    {
        float a[37], b[37];
        double s = 0;
        for (int i = 0; i < 37; i++) {
            a[i] = tu_sym();
            b[i] = tu_sym();
            s += (double)a[i] * b[i];
        }
        float d = g1_cpu_dot(a, b, 37);
        tu_close("dot", &d, &s, 1, 1e-6, 1e-6);
    }
    printf("%s: %d failure(s)\n", tu_failures ? "FAIL" : "PASS", tu_failures);
    return tu_failures ? 1 : 0;
}
