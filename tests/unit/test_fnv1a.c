/* src/fnv1a.c: FNV-1a 64 against published vectors (the reference code's
 * test suite), whole and in pieces. These values are recorded in files
 * (checkpoint fingerprints, tokenizer_fnv1a64, resume records): a change
 * here breaks them. */
#include <stdio.h>
#include <string.h>

#include "fnv1a.h"
#include "testutil.h"

static const struct {
    const char *s;
    uint64_t h;
} vec[] = {
    {"", 0xcbf29ce484222325ull},
    {"a", 0xaf63dc4c8601ec8cull},
    {"foobar", 0x85944171f73967e8ull},
    {"chongo was here!\n", 0x46810940eff5f915ull},
};

int main(void)
{
    char what[64];
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        size_t n = strlen(vec[i].s);
        snprintf(what, sizeof what, "fnv1a64 of %zu bytes", n);
        tu_check(g1_fnv1a64(G1_FNV1A64_START, vec[i].s, n) == vec[i].h, what);
        /* every split into two pieces gives the whole's hash */
        int ok = 1;
        for (size_t k = 0; k <= n; k++)
            ok &= g1_fnv1a64(g1_fnv1a64(G1_FNV1A64_START, vec[i].s, k), vec[i].s + k, n - k) == vec[i].h;
        snprintf(what, sizeof what, "fnv1a64 of %zu bytes in two pieces", n);
        tu_check(ok, what);
    }
    tu_check(G1_FNV1A64_START == 0xcbf29ce484222325ull, "fnv1a64 start (offset basis)");
    /* bytes >= 0x80 are hashed unsigned */
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    tu_check(g1_fnv1a64(G1_FNV1A64_START, all, sizeof all) == 0x4242dc5249c33625ull, "fnv1a64 bytes 0..255");
    return tu_failures ? 1 : 0;
}
