/* Test builds only: the x86 intrinsics as SIMDe (libsimde-dev) implements
 * them in plain C, so the kernels' AVX-512 paths compile and run on any
 * machine (tests/unit/meson.build, 'kernels_avx512_emu'). This folder comes
 * first on those targets' include path, so `#include <immintrin.h>` in
 * src/ lands here. Besides SIMDe: the intrinsics SIMDe 0.7 lacks, written
 * from Intel's definitions (_mm512_reduce_add_ps in the order GCC 12's
 * header uses, which the kernels' tests model), and fused multiply-adds
 * (SIMDe's portable fmadd rounds the product first; the hardware does not). */
#ifndef G1_SIMDE_IMMINTRIN_H
#define G1_SIMDE_IMMINTRIN_H

#define SIMDE_NO_NATIVE
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <math.h>
#include <simde/x86/avx512.h>
#include <simde/x86/f16c.h>
#include <simde/x86/fma.h>
#include <string.h>

typedef simde__mmask8 __mmask8;
typedef simde__mmask16 __mmask16;
typedef simde__mmask32 __mmask32;
typedef simde__mmask64 __mmask64;

static inline __m512d _mm512_cvtps_pd(__m256 a)
{
    simde__m256_private x = simde__m256_to_private(a);
    simde__m512d_private r;
    for (int i = 0; i < 8; i++)
        r.f64[i] = (double)x.f32[i];
    return simde__m512d_from_private(r);
}

static inline float _mm512_reduce_max_ps(__m512 a)
{
    simde__m512_private x = simde__m512_to_private(a);
    float m = x.f32[0];
    for (int i = 1; i < 16; i++)
        m = x.f32[i] > m ? x.f32[i] : m;
    return m;
}

/* GCC 12: (hi 256 + lo 256), (hi 128 + lo 128), (lanes 0,1 + lanes 2,3), 0 + 1 */
static inline float _mm512_reduce_add_ps(__m512 a)
{
    simde__m512_private x = simde__m512_to_private(a);
    float t3[8], t6[4];
    for (int i = 0; i < 8; i++)
        t3[i] = x.f32[8 + i] + x.f32[i];
    for (int i = 0; i < 4; i++)
        t6[i] = t3[4 + i] + t3[i];
    return (t6[0] + t6[2]) + (t6[1] + t6[3]);
}

static inline __m512 _mm512_cvtepi32_ps(__m512i a)
{
    simde__m512i_private x = simde__m512i_to_private(a);
    simde__m512_private r;
    for (int i = 0; i < 16; i++)
        r.f32[i] = (float)x.i32[i];
    return simde__m512_from_private(r);
}

static inline __m512i _mm512_cvtepi8_epi32(__m128i a)
{
    simde__m128i_private x = simde__m128i_to_private(a);
    simde__m512i_private r;
    for (int i = 0; i < 16; i++)
        r.i32[i] = x.i8[i];
    return simde__m512i_from_private(r);
}

static inline __m512i _mm512_cvtepu16_epi32(__m256i a)
{
    simde__m256i_private x = simde__m256i_to_private(a);
    simde__m512i_private r;
    for (int i = 0; i < 16; i++)
        r.i32[i] = x.u16[i];
    return simde__m512i_from_private(r);
}

/* masked loads and stores touch only the lanes the mask selects */
static inline void _mm512_mask_storeu_ps(void *p, __mmask16 k, __m512 a)
{
    simde__m512_private x = simde__m512_to_private(a);
    for (int i = 0; i < 16; i++)
        if (k >> i & 1) {
            float v = x.f32[i]; /* clang: no address of a vector element */
            memcpy((char *)p + 4 * i, &v, 4);
        }
}

static inline __m512 _mm512_maskz_loadu_ps(__mmask16 k, const void *p)
{
    simde__m512_private r;
    for (int i = 0; i < 16; i++) {
        float v = 0;
        if (k >> i & 1)
            memcpy(&v, (const char *)p + 4 * i, 4);
        r.f32[i] = v;
    }
    return simde__m512_from_private(r);
}

static inline __m256i _mm256_maskz_loadu_epi16(__mmask16 k, const void *p)
{
    simde__m256i_private r;
    for (int i = 0; i < 16; i++) {
        uint16_t v = 0;
        if (k >> i & 1)
            memcpy(&v, (const char *)p + 2 * i, 2);
        r.u16[i] = v;
    }
    return simde__m256i_from_private(r);
}

static inline __m128i _mm_maskz_loadu_epi8(__mmask16 k, const void *p)
{
    simde__m128i_private r;
    for (int i = 0; i < 16; i++) {
        int8_t v = 0;
        if (k >> i & 1)
            memcpy(&v, (const char *)p + i, 1);
        r.i8[i] = v;
    }
    return simde__m128i_from_private(r);
}

#undef _mm512_fmadd_ps
#undef _mm256_fmadd_ps
static inline __m512 g1_simde_fmadd512(__m512 a, __m512 b, __m512 c)
{
    simde__m512_private x = simde__m512_to_private(a), y = simde__m512_to_private(b), z = simde__m512_to_private(c), r;
    for (int i = 0; i < 16; i++)
        r.f32[i] = fmaf(x.f32[i], y.f32[i], z.f32[i]);
    return simde__m512_from_private(r);
}
static inline __m256 g1_simde_fmadd256(__m256 a, __m256 b, __m256 c)
{
    simde__m256_private x = simde__m256_to_private(a), y = simde__m256_to_private(b), z = simde__m256_to_private(c), r;
    for (int i = 0; i < 8; i++)
        r.f32[i] = fmaf(x.f32[i], y.f32[i], z.f32[i]);
    return simde__m256_from_private(r);
}
#define _mm512_fmadd_ps g1_simde_fmadd512
#define _mm256_fmadd_ps g1_simde_fmadd256

#endif
