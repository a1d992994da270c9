/* FNV-1a, 64 bits: see fnv1a.h. */
#include "fnv1a.h"

uint64_t g1_fnv1a64(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}
