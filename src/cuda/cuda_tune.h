/* The CUDA backend's tuning switches from text: grok1-run --cuda-tune,
 * test_cuda_engine and bench_cuda_layer --cuda-tune. A build without CUDA
 * parses them too (and grok1-run then refuses --backend cuda as before). */
#ifndef G1_CUDA_TUNE_H
#define G1_CUDA_TUNE_H

#include "engine.h"
#include "status.h"

/* the most each setting takes */
#define G1_CUDA_TUNE_GEMV_MAX 64  /* rows the GEMV kernel is built for */
#define G1_CUDA_TUNE_MMA_MAX 256  /* rows the benchmark times the tensor-core kernel at */
#define G1_CUDA_TUNE_PANEL_MAX 64 /* MiB: the default panel, the most scratch it takes */

#define G1_CUDA_TUNE_KEYS \
    "gemv-max-tokens, mma-max-tokens, mma-tile-cols, attn-mma, moe-grouping, gemm-overlap, panel-mib"

/* Set the switches `spec` names ("KEY=VALUE[,KEY=VALUE...]") in *co, the
 * others left as they are; G1_ERR_ARG with a message naming the setting
 * (and *co unchanged) when one is unknown or out of range. Values:
 *   gemv-max-tokens=N  0..64: matmuls of up to N rows on the int8 GEMV
 *                      (default 16; 0: none); --cuda-gemm f32: every matmul,
 *                      N rows at a time (0 there is 16)
 *   mma-max-tokens=N   0..256: above those, up to N rows on the int8
 *                      tensor-core kernel (default 128; 0: none, cuBLAS)
 *   mma-tile-cols=64|128   that kernel's block columns (default 64)
 *   attn-mma=on|off    prompts' attention on the tensor cores (default on)
 *   moe-grouping=device|host   where the MoE groups its rows by expert
 *                      (default device, up to the kernels' rows)
 *   gemm-overlap=on|off    dequantise the next panel during the GEMM
 *   panel-mib=N        1..64: dequantised panels of at most N MiB (default 64) */
g1_status g1_cuda_tune_parse(const char *spec, g1_cuda_opts *co);

/* The switches of *co that differ from the defaults, as the text
 * g1_cuda_tune_parse takes ("KEY=VALUE,...", keys in the order above; ""
 * when none): what a command suggested to the user (grok1-plan's, in a
 * refusal's hint) gives for them. Settings without a key (tests' own) are
 * left out; a panel that is not whole MiB is rounded up. As snprintf: the
 * length the whole text takes. */
int g1_cuda_tune_text(const g1_cuda_opts *co, char *buf, size_t n);

#endif
