// Elementwise inner loops of the runtime's kernels, in C so the compiler can
// build AVX-512 and AVX2+FMA clones chosen at load time by the CPU (Swift code
// is compiled for baseline x86-64). Each writes in place or to `out`.
#ifndef SPP_KERNELS_H
#define SPP_KERNELS_H
#include <stddef.h>

/// x · Φ(x) with erf (erf within 1.4e-7 absolute, polynomials of tools/fit-erf.py).
void spp_gelu_erf(float *p, size_t n);
/// 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))).
void spp_gelu_tanh(float *p, size_t n);
/// Softmax of p[0..<n] + add[0..<n] in place (`add` may be NULL; maximum subtracted);
/// e^x is 0 below -87.3, so -∞ keys get 0, and a row of only -∞ keys gets all 0.
void spp_softmax(float *p, const float *add, size_t n);
/// One row of layer normalisation: y = (x − mean) / √(var + eps) · scale (+ bias, may be NULL).
/// Writes the mean and 1/√(var + eps) to *mean and *inv_std.
void spp_layer_norm_row(const float *x, float *y, size_t n, const float *scale, const float *bias, float eps,
                        float *mean, float *inv_std);
/// out = a + b.
void spp_add(const float *a, const float *b, float *out, size_t n);

#endif
