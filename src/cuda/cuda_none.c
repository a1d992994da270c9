/* The CUDA engine's entry points in a build without CUDA: each refuses with
 * a message that says how to get the backend. No CUDA headers. */
#include <string.h>

#include "cuda/cuda_engine.h"

#define NO_CUDA                                                                                          \
    G1_FAIL(G1_ERR_CUDA, "this build has no CUDA backend: use --backend cpu, or rebuild with nvcc and "   \
                         "cuBLAS installed (meson setup -Dcuda=enabled)")

int g1_cuda_device_count(void) { return 0; }
const char *g1_cuda_no_device_why(void) { return "this build has no CUDA backend"; }
int g1_cuda_built(void) { return 0; }

g1_status g1_cuda_device_uuid(int device, unsigned char uuid[16])
{
    (void)device;
    memset(uuid, 0, 16);
    return NO_CUDA;
}

g1_status g1_cuda_device_check(int device)
{
    (void)device;
    return NO_CUDA;
}

g1_status g1_cuda_engine_init(g1_cuda_engine **out, const g1_weights *w, const g1_engine_opts *opts,
                              const g1_moe_dispatch *dispatch, const g1_cuda_opts *co)
{
    (void)w, (void)opts, (void)dispatch, (void)co;
    *out = NULL;
    return NO_CUDA;
}
g1_status g1_cuda_engine_begin(g1_cuda_engine **out, const g1_config *cfg, int l0, int l1, int e0, int e1,
                               const g1_engine_opts *opts, const g1_moe_dispatch *dispatch, const g1_cuda_opts *co)
{
    (void)cfg, (void)l0, (void)l1, (void)e0, (void)e1, (void)opts, (void)dispatch, (void)co;
    *out = NULL;
    return NO_CUDA;
}
g1_status g1_cuda_engine_upload(g1_cuda_engine *e, const g1_weights *w)
{
    (void)e, (void)w;
    return NO_CUDA;
}
g1_status g1_cuda_engine_ready(g1_cuda_engine *e)
{
    (void)e;
    return NO_CUDA;
}
g1_status g1_cuda_engine_check_room(g1_cuda_engine *e, const g1_weights *w, int with_embedding)
{
    (void)e, (void)w, (void)with_embedding;
    return NO_CUDA;
}
int g1_cuda_engine_memory(const g1_cuda_engine *e, size_t *weights, size_t *buffers, size_t *free_before)
{
    (void)e;
    *weights = *buffers = *free_before = 0;
    return 0;
}

g1_status g1_cuda_engine_buffer_bytes(const g1_config *c, int nL, int experts, const g1_engine_opts *opts, int sms,
                                      int cc, int with_embedding, size_t *bytes)
{
    (void)c, (void)nL, (void)experts, (void)opts, (void)sms, (void)cc, (void)with_embedding;
    *bytes = 0;
    return NO_CUDA;
}
void g1_cuda_engine_free(g1_cuda_engine *e) { (void)e; }
void g1_cuda_engine_set_route_log(g1_cuda_engine *e, FILE *f) { (void)e, (void)f; }
g1_status g1_cuda_engine_forward(g1_cuda_engine *e, const g1_batch *b, float *x)
{
    (void)e, (void)b, (void)x;
    return NO_CUDA;
}
g1_status g1_cuda_engine_embed(g1_cuda_engine *e, int T, const int *tokens, float *x)
{
    (void)e, (void)T, (void)tokens, (void)x;
    return NO_CUDA;
}
g1_status g1_cuda_engine_logits(g1_cuda_engine *e, int T, const float *x, float *logits)
{
    (void)e, (void)T, (void)x, (void)logits;
    return NO_CUDA;
}
g1_status g1_cuda_engine_score_rows(g1_cuda_engine *e, int T, const float *x, const int *target, double *lp,
                                    int *argmax)
{
    (void)e, (void)T, (void)x, (void)target, (void)lp, (void)argmax;
    return NO_CUDA;
}
int g1_cuda_engine_slot_len(const g1_cuda_engine *e, int slot)
{
    (void)e, (void)slot;
    return 0;
}
void g1_cuda_engine_reset_slot(g1_cuda_engine *e, int slot) { (void)e, (void)slot; }
int g1_cuda_engine_kv_short(const g1_cuda_engine *e, size_t *need, size_t *free_b)
{
    (void)e;
    *need = *free_b = 0;
    return 0;
}
int g1_cuda_engine_graph_counts(const g1_cuda_engine *e, int *made, int *dropped, int *kept)
{
    (void)e;
    *made = *dropped = *kept = 0;
    return 0;
}
g1_status g1_cuda_moe_local(g1_cuda_engine *e, int layer, int T, const float *x, const int *idx,
                            const float *gate, float *out)
{
    (void)e, (void)layer, (void)T, (void)x, (void)idx, (void)gate, (void)out;
    return NO_CUDA;
}
g1_status g1_cuda_moe_expert_rows(g1_cuda_engine *e, int layer, int n, const float *x, const int *expert,
                                  float *y)
{
    (void)e, (void)layer, (void)n, (void)x, (void)expert, (void)y;
    return NO_CUDA;
}
g1_status g1_cuda_engine_mem_alloc(g1_cuda_engine *e, size_t bytes, void **p)
{
    (void)e, (void)bytes;
    *p = NULL;
    return NO_CUDA;
}
g1_status g1_cuda_engine_forward_mem(g1_cuda_engine *e, const g1_batch *b, const float *in, float *out)
{
    (void)e, (void)b, (void)in, (void)out;
    return NO_CUDA;
}
g1_status g1_cuda_engine_gather_mem(g1_cuda_engine *e, int n, const float *src, const int *map, float *dst)
{
    (void)e, (void)n, (void)src, (void)map, (void)dst;
    return NO_CUDA;
}
g1_status g1_cuda_moe_expert_rows_mem(g1_cuda_engine *e, int layer, int n, const float *x, const int *expert,
                                      float *y)
{
    (void)e, (void)layer, (void)n, (void)x, (void)expert, (void)y;
    return NO_CUDA;
}
void *g1_cuda_host_alloc(int device, size_t bytes)
{
    (void)device, (void)bytes;
    return NULL;
}
void g1_cuda_host_free(void *p) { (void)p; }
g1_status g1_cuda_engine_copy_mem(g1_cuda_engine *e, void *dst, const void *src, size_t bytes)
{
    (void)e, (void)dst, (void)src, (void)bytes;
    return NO_CUDA;
}
int g1_cuda_engine_paths(const g1_cuda_engine *e, char *buf, size_t n)
{
    (void)e;
    if (n)
        buf[0] = 0;
    return 0;
}
