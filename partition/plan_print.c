/* The human-readable table of a plan: one row per rank, then the stage
 * costs. Output only; the numbers come from plan.c. */
#include <stdio.h>

#include "plan.h"

void g1_plan_print(const g1_plan *p, FILE *f)
{
    char lim[32] = "none";
    if (p->mem_per_rank > 0)
        g1_bytes_text(lim, sizeof lim, p->mem_per_rank);
    char backend[96] = "cpu backend (host memory)";
    if (p->threads > 0)
        snprintf(backend, sizeof backend, "cpu backend (host memory, %d threads a rank)", p->threads);
    if (p->cuda_sms > 0)
        snprintf(backend, sizeof backend, "cuda backend (GPU memory, GPUs of %d multiprocessors)", p->cuda_sms);
    fprintf(f, "plan: %d stages x %d expert slots = %d ranks; %d layers, %d experts; %d sequence slots x %d "
               "positions; %d tokens per step; %s; memory limit per rank: %s\n\n",
            p->stages, p->ep, p->stages * p->ep, p->cfg.num_layers, p->cfg.num_experts, p->slots, p->context,
            p->max_batch_tokens, backend, lim);
    fprintf(f, "%5s %5s %4s %11s %9s %5s %12s %12s %12s %12s\n", "rank", "stage", "slot", "layers", "experts",
            "seqs", "weights", "kv cache", "buffers", "total");
    for (int r = 0; r < p->stages * p->ep; r++) {
        int s = r / p->ep, e = r % p->ep, first, count;
        g1_plan_experts(p, e, &first, &count);
        char lay[32], ex[32], w[24], kv[24], b[24], t[24];
        snprintf(lay, sizeof lay, "%d-%d", p->cut[s], p->cut[s + 1] - 1);
        snprintf(ex, sizeof ex, "%d-%d", first, first + count - 1);
        g1_bytes_text(w, sizeof w, p->mem[r].weights);
        g1_bytes_text(kv, sizeof kv, p->mem[r].kv_cache);
        g1_bytes_text(b, sizeof b, p->mem[r].buffers);
        g1_bytes_text(t, sizeof t, p->mem[r].total);
        fprintf(f, "%5d %5d %4d %11s %9s %5d %12s %12s %12s %12s%s\n", r, s, e, lay, ex, g1_plan_seqs(p, e), w,
                kv, b, t,
                r > 0             ? ""
                : p->dump_logits ? "  (+ embedding, logits, dump writer)"
                                 : "  (+ embedding, logits)");
    }
    double mx = 0, sum = 0;
    for (int s = 0; s < p->stages; s++) {
        sum += p->stage_cost[s];
        if (p->stage_cost[s] > mx)
            mx = p->stage_cost[s];
    }
    char lc[24], x0[24];
    g1_bytes_text(lc, sizeof lc, p->layer_cost);
    g1_bytes_text(x0, sizeof x0, p->rank0_cost);
    fprintf(f, "\nstage costs (bytes one rank reads per decode step; a layer %s, rank 0's embed/un-embed/sample "
               "%s):\n", lc, x0);
    for (int s = 0; s < p->stages; s++) {
        char c[24];
        g1_bytes_text(c, sizeof c, p->stage_cost[s]);
        fprintf(f, "  stage %d: layers %d-%d (%d), %s%s\n", s, p->cut[s], p->cut[s + 1] - 1,
                p->cut[s + 1] - p->cut[s], c, p->stage_cost[s] == mx ? "  <- slowest" : "");
    }
    if (mx > 0)
        fprintf(f, "balance: mean / slowest = %.3f\n", sum / p->stages / mx);
}

double g1_plan_decode_bound(const g1_plan *p, double bandwidth, int micro_batches, double fill, double *step_s,
                            int *slowest)
{
    double t_max = 0, t_sum = 0;
    int at = 0;
    for (int s = 0; s < p->stages; s++) {
        double kv = 0;
        for (int e = 0; e < p->ep; e++)
            if (p->mem[s * p->ep + e].kv_cache > kv)
                kv = p->mem[s * p->ep + e].kv_cache;
        /* a step runs one micro-batch: about 1/M of the rank's sequences */
        double t = (p->stage_cost[s] + fill * kv / micro_batches) / bandwidth;
        t_sum += t;
        if (t > t_max) {
            t_max = t;
            at = s;
        }
    }
    double round = micro_batches * t_max > t_sum ? micro_batches * t_max : t_sum;
    if (step_s)
        *step_s = t_max;
    if (slowest)
        *slowest = at;
    return round > 0 ? p->slots / round : 0;
}

void g1_plan_print_bound(const g1_plan *p, double bandwidth, int micro_batches, FILE *f)
{
    fprintf(f, "\ndecode bound at %.4g GB/s per rank, %d micro-batches of the %d slots (memory reads only: "
               "weights and KV caches; not compute, messages or rank 0's CPU work):\n",
            bandwidth / 1e9, micro_batches, p->slots);
    for (int full = 0; full < 2; full++) {
        double step;
        int at;
        double r = g1_plan_decode_bound(p, bandwidth, micro_batches, full, &step, &at);
        fprintf(f, "  %-34s slowest step %.3f ms (stage %d): at most %.1f tokens/s\n",
                full ? "caches at full context:" : "caches empty:", step * 1e3, at, r);
    }
}

double g1_plan_prompt_bound(const g1_plan *p, double flops, double logits, int *slowest)
{
    const g1_config *c = &p->cfg;
    double D = c->emb_size, layer = g1_plan_layer_flops(c);
    double t_max = 0;
    int at = 0;
    for (int s = 0; s < p->stages; s++) {
        double f = (p->cut[s + 1] - p->cut[s]) * layer / p->ep;
        if (s == 0)
            f += logits * 2 * (double)c->vocab_size * D; /* rank 0 alone */
        if (f / flops > t_max) {
            t_max = f / flops;
            at = s;
        }
    }
    if (slowest)
        *slowest = at;
    return t_max > 0 ? 1 / t_max : 0;
}

void g1_plan_print_prompt_bound(const g1_plan *p, double flops, FILE *f)
{
    fprintf(f, "\nprompt bound at %.4g TFLOP/s per rank (matmul arithmetic only; not attention scores, "
               "memory, messages or rank 0's CPU work):\n", flops / 1e12);
    for (int lg = 1; lg >= 0; lg--) {
        int at;
        double r = g1_plan_prompt_bound(p, flops, lg, &at);
        fprintf(f, "  %-34s at most %.0f tokens/s (stage %d%s)\n",
                lg ? "scoring (logits at every token):" : "prefill (no logits):", r, at,
                lg && at == 0 ? ": rank 0's un-embedding" : "");
    }
}
