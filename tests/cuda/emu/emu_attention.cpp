// src/cuda/cuda_attention.cu compiled by the host compiler under g1emu.
#include "g1emu.h"

#include "cuda/cuda_attention.cu"
