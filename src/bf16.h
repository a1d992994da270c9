/* bfloat16 <-> float32 conversion with round-to-nearest-even, as the
 * reference (JAX / ml_dtypes) rounds. Header-only: static inline. */
#ifndef G1_BF16_H
#define G1_BF16_H

#include <stdint.h>
#include <string.h>

static inline uint16_t g1_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) /* NaN stays NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float g1_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round a float32 to the nearest bf16 value, returned as float32. */
static inline float g1_round_bf16(float f) { return g1_bf16_to_f32(g1_f32_to_bf16(f)); }

/* The dequantised weight of the release: bf16(int8 * scale). */
static inline float g1_dequant(int8_t q, float scale) { return g1_round_bf16((float)q * scale); }

#endif
