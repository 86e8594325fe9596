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

// Two bfloat16 in one word: lo in the low half, hi in the high half (the refit's operand pairs).
static inline uint32_t spp_bfloat_pair(float lo, float hi) {
    return spp_bfloat_bits(lo) | (uint32_t)spp_bfloat_bits(hi) << 16;
}

// The float32 a bfloat16 stands for, exactly.
static inline float spp_bfloat_value(uint32_t bits16) {
    uint32_t u = bits16 << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

#endif
