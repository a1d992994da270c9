// src/cuda/cuda_matmul.cu compiled by the host compiler under g1emu.
#include "g1emu.h"

#include "cuda/cuda_matmul.cu"
