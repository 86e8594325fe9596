// Elementwise inner loops of the runtime's kernels, in C so the compiler can
// build AVX-512 and AVX2+FMA clones chosen at load time by the CPU (Swift code
// is compiled for baseline x86-64). Each writes in place or to `out`.
#ifndef SPP_KERNELS_H
#define SPP_KERNELS_H
#include <stddef.h>
#include <stdint.h>

/// x · Φ(x) with erf (erf within 1.4e-7 absolute, polynomials of tools/fit-erf.py).
void spp_gelu_erf(float *p, size_t n);
/// 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))).
void spp_gelu_tanh(float *p, size_t n);
/// Softmax of p[0..<n] + add[0..<n] in place (`add` may be NULL, must not overlap p)
/// but for the division: writes e^(x − max) and returns 1 / their sum, for the
/// caller to scale what it makes of the row (attention scales the context row:
/// fewer values than keys). e^x is 0 below -87.3, so -∞ keys get 0; a row of
/// only -∞ keys gets all 0 and returns 0.
float spp_softmax_exp(float *p, const float *restrict add, size_t n);
/// One row of layer normalisation: y = (x − mean) / √(var + eps) · scale (+ bias, may be NULL).
/// Writes the mean and 1/√(var + eps) to *mean and *inv_std.
void spp_layer_norm_row(const float *x, float *y, size_t n, const float *scale, const float *bias, float eps,
                        float *mean, float *inv_std);
/// out[r] = Σ_j x[r·n + j] for each of `rows` rows.
void spp_row_sums(const float *x, float *out, size_t rows, size_t n);
/// out = a · a.
void spp_square(const float *a, float *out, size_t n);
/// Binary arithmetic, `op` 0 add, 1 sub, 2 mul, 3 div: out[i] = a[i] op b[i].
void spp_binary(int op, const float *a, const float *b, float *out, size_t n);
/// out[i] = a[i] op b, for one scalar b.
void spp_binary_scalar(int op, const float *a, float b, float *out, size_t n);
/// Row i of the rows × cols block at x (leading dimension ld) times scale[i], in place.
void spp_scale_rows(float *x, size_t ld, size_t rows, size_t cols, const float *scale);

// Small float32 products with no setup: attention's scores and context (a head's
// rank wide at most 64 typically), where oneDNN's sgemm would set itself up on
// its first call (~24 ms, once per process) and a matmul primitive per shape
// would be made for every head rank and length.

/// Columns of a packed panel.
#define SPP_PANEL 16
/// Floats `spp_pack_panels` writes for a k × n matrix.
size_t spp_packed_count(size_t k, size_t n);
/// B (k × n; element (p, j) at b[p·ldb + j], or at b[j·ldb + p] when trans_b is
/// nonzero) into ⌈n / 16⌉ panels of k rows × 16 columns, zero padded.
void spp_pack_panels(const float *b, size_t ldb, int trans_b, size_t k, size_t n, float *packed);
/// C (m × n, leading dimension ldc) = alpha · A (m × k; element (i, p) at a[i·rs + p·cs])
/// · B, packed with `ldp` rows a panel (panel q at packed + q·16·ldp; its first k rows
/// are read). k = 0 gives zeros.
void spp_sgemm_packed(size_t m, size_t n, size_t k, float alpha, const float *a, size_t rs, size_t cs,
                      const float *packed, size_t ldp, float *c, size_t ldc);
/// Columns i0 … i0 + rows − 1 of a lower-triangular k × k M from its row i0 on, as float32
/// out[(p − i0)·ld + r] = M[p, i0 + r] (rows of Mᵀ, which spp_sgemm_packed reads with
/// rs = 1, cs = ld). M is stored as int8 values below the diagonal (row p at q + p·ldq,
/// times scale[p]) and its float32 diagonal: only q's entries left of the diagonal are read.
void spp_lower_int8_columns(size_t k, size_t i0, size_t rows, const int8_t *q, size_t ldq, const float *scale,
                            const float *diagonal, float *out, size_t ld);

// The refit's product in bfloat16 (FeedForwardRepair): twice the multiply-adds a cycle
// of float32 where the CPU has AVX512-BF16. Operands are pairs of bfloat16 along the
// shared dimension, one 32-bit word a pair (element 2t low half, 2t + 1 high half,
// rounded to nearest even from float32), so products of k = 2·pairs terms.

/// Whether spp_sbgemm_packed runs AVX512-BF16 here (elsewhere it is a slow scalar loop).
int spp_bf16_supported(void);
/// Words `spp_pack_panels_bf16` writes for a k × n matrix.
size_t spp_packed_pairs_count(size_t k, size_t n);
/// B (k × n; element (p, j) at b[p·ldb + j]) into ⌈n / 16⌉ panels of ⌈k / 2⌉ rows of 16
/// pair words (row t of a panel holds B rows 2t and 2t + 1 of its 16 columns), zero padded.
void spp_pack_panels_bf16(const float *b, size_t ldb, size_t k, size_t n, uint32_t *packed);
/// `spp_lower_int8_columns` as pair words: out[(p − i0) / 2 · ld + r] holds M[p, i0 + r] and
/// M[p + 1, i0 + r] for even p − i0 (zero past row k − 1).
void spp_lower_int8_columns_bf16(size_t k, size_t i0, size_t rows, const int8_t *q, size_t ldq, const float *scale,
                                 const float *diagonal, uint32_t *out, size_t ld);
/// C (m × n, leading dimension ldc) = A (m × 2·pairs; pair t of row i at a[t·lda + i]) · B
/// packed by spp_pack_panels_bf16 with `ldp` pair rows a panel (panel q at packed + q·16·ldp;
/// its first `pairs` rows read); float32 sums.
void spp_sbgemm_packed(size_t m, size_t n, size_t pairs, const uint32_t *a, size_t lda, const uint32_t *packed, size_t ldp,
                       float *c, size_t ldc);
/// The same product as a plain loop (what spp_sbgemm_packed does without AVX512-BF16): tests check the kernel against it.
void spp_sbgemm_packed_scalar(size_t m, size_t n, size_t pairs, const uint32_t *a, size_t lda, const uint32_t *packed, size_t ldp,
                              float *c, size_t ldc);

/// The gather-transpose that turns a pair's unit-major rows into the columns a kernel reads:
/// out[c · ldo + j] = in[order[j], c] for c < cols, j < n, with 4-byte (`_32`) or
/// 1-byte (`_8`) elements: rows of `in` picked by `order` (NULL: 0, 1, …) become
/// columns of `out` [cols, ≥ n] (ldo ≥ n: n columns of a wider matrix).
void spp_gather_transpose_32(const uint32_t *in, size_t cols, const int64_t *order, size_t n, uint32_t *out, size_t ldo);
void spp_gather_transpose_8(const uint8_t *in, size_t cols, const int64_t *order, size_t n, uint8_t *out, size_t ldo);
/// The widest body this CPU runs (the packed product's and the gather-transpose's): 4 AVX-512, 3 AVX2 + FMA, 0 scalar.
int spp_packed_isa(void);
/// `spp_sgemm_packed` with the body of `isa` (at most `spp_packed_isa()`): tests run each.
void spp_sgemm_packed_isa(int isa, size_t m, size_t n, size_t k, float alpha, const float *a, size_t rs, size_t cs,
                          const float *packed, size_t ldp, float *c, size_t ldc);

/// Runs body(ctx, thread, threads) on a team of `threads` threads (the caller is
/// thread 0) and returns when all are done: a fork and join in libgomp's pool,
/// the one oneDNN's GEMMs use, whose workers spin briefly between regions.
void spp_parallel(unsigned threads, void (*body)(void *ctx, int thread, int threads), void *ctx);

// The two ends of the int8 GEMM (SPPKernels/Linear+Int8.swift): activations
// quantized per row before it, int32 products turned back into float32 after it.

/// int32 that may share memory with floats (`spp_dequantize_rows` in place).
typedef int32_t __attribute__((may_alias)) spp_aliased_int32;

/// Quantizes `rows` rows of x (leading dimension ldx) to 0…levels, asymmetric per row:
/// the row's range [min, max], widened to include 0, maps onto 0…levels, so
/// scale[r] = (max − min) / levels, zero[r] = round(−min / scale[r]) and
/// q = clamp(round(x / scale[r]) + zero[r], 0, levels). An all-zero row gets scale 0;
/// a row holding ±∞ or NaN gets scale NaN, so that its outputs are NaN as in float32.
void spp_quantize_rows_u8(const float *x, size_t ldx, size_t rows, size_t cols, int32_t levels,
                          uint8_t *q, size_t ldq, float *scale, int32_t *zero);
/// Symmetric int8 per column of w [k, n] (row-major): scale[c] = max_r |w[r, c]| / 127 and
/// q = clamp(round-half-even(w / scale[c]), −127, 127), 0 in a zero column. Returns 0, or
/// 1 + the row-major index of the first element that is not finite (q and scale unfinished).
size_t spp_quantize_columns_s8(const float *w, size_t k, size_t n, int8_t *q, float *scale);
/// sums[c] = Σ_r v[r, c] over a row-major int8 matrix (the int8 weights' column sums).
void spp_column_sums_s8(const int8_t *v, size_t rows, size_t cols, int32_t *sums);
/// sums[r] = Σ_c v[r, c]: the same sums over the matrix's transpose, stored unit-major.
void spp_row_sums_s8(const int8_t *v, size_t rows, size_t cols, int32_t *sums);
/// y[r, c] = row_scale[r] · col_scale[c] · (acc[r, c] − row_zero[r] · col_sum[c]), plus bias[c]
/// when bias is not NULL, else plus the y[r, c] already there when accumulate is nonzero.
/// acc may be y itself (same leading dimension, not accumulating): each element is read before it is written.
void spp_dequantize_rows(const spp_aliased_int32 *acc, size_t ldacc, size_t rows, size_t cols,
                         const float *row_scale, const int32_t *row_zero,
                         const float *col_scale, const int32_t *col_sum,
                         const float *bias, int accumulate, float *y, size_t ldy);
/// acc[m×n] = a[m×k] · b[k×n] in int32, row-major: the plain loop used where
/// oneDNN refuses a GEMM, and the reference tests hold the fast one to.
void spp_gemm_u8s8s32_ref(size_t m, size_t n, size_t k, const uint8_t *a, size_t lda,
                          const int8_t *b, size_t ldb, int32_t *acc, size_t ldacc);

#endif
