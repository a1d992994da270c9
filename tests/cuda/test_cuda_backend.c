/* The backend choice in any build: G1_BACKEND_CPU is the default, and
 * G1_BACKEND_CUDA either works (a GPU and the backend) or fails with a
 * message that says why; never a crash. Runs without a GPU. */
#include <string.h>

#include "cuda/cuda_engine.h"
#include "engine.h"
#include "synth.h"
#include "../unit/testutil.h"

int main(void)
{
    g1_config C;
    g1_config_preset("tiny", &C);
    int blocks[G1_NUM_QMAT];
    g1_synth_blocks(&C, blocks);
    g1_weights W;
    g1_synth s = {.cfg = C, .seed = 1, .qk_gain = 1};
    if (g1_weights_alloc(&W, &C, 0, C.num_layers, 0, C.num_experts, blocks, 1) || g1_synth_weights(&s, &W))
        return 1;
    g1_engine_opts o = {.n_slots = 1, .max_batch = 4};
    tu_check(o.backend == G1_BACKEND_CPU, "zeroed options choose the CPU");
    g1_engine *e = NULL;
    tu_check(g1_engine_init(&e, &W, &o, NULL) == G1_OK, "CPU engine starts");
    g1_engine_free(e);
    o.backend = G1_BACKEND_CUDA;
    e = NULL;
    g1_status st = g1_engine_init(&e, &W, &o, NULL);
    int gpus = g1_cuda_device_count();
    printf("CUDA backend built: %s; GPUs visible: %d; init: %s%s%s\n", g1_cuda_built() ? "yes" : "no", gpus,
           g1_status_name(st), st ? ": " : "", st ? g1_last_error() : "");
    if (g1_cuda_built() && gpus > 0)
        tu_check(st == G1_OK && e, "CUDA engine starts");
    else
        tu_check(st == G1_ERR_CUDA && !e && strlen(g1_last_error()) > 20, "CUDA refused with a message");
    g1_engine_free(e);
    o.backend = (g1_backend)7;
    tu_check(g1_engine_init(&e, &W, &o, NULL) == G1_ERR_ARG, "unknown backend refused");
    g1_weights_free(&W);
    printf("%s: %d failure(s)\n", tu_failures ? "FAIL" : "PASS", tu_failures);
    return tu_failures ? 1 : 0;
}
