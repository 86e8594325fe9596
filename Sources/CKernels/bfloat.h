// bfloat16 rounding shared by storage.c (stored weights) and kernels.c (the refit's product).
#ifndef SPP_BFLOAT_H
#define SPP_BFLOAT_H
#include <stdint.h>
#include <string.h>

// The bfloat16 nearest x (ties to even) as the high half of x's bits; a NaN keeps its sign and becomes quiet.
static inline uint16_t spp_bfloat_bits(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    int nan = (bits & 0x7fffffffu) > 0x7f800000u;
    return (uint16_t)(nan ? ((bits >> 16) | 0x40u) : rounded);
}

#endif
