#include "spp_kernels.h"
#include "bfloat.h"
#include <stdint.h>
#include <string.h>

// libgomp: the entry point GCC's `#pragma omp parallel` compiles to (stable since
// GCC 4.9); Swift's clang cannot emit libgomp's OpenMP calls itself.
void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
int omp_get_thread_num(void);
int omp_get_num_threads(void);

// Clones for AVX-512, AVX2+FMA and baseline x86-64, picked once by the loader
// (ifunc). The loops are written branch-free so each clone vectorises.
#if defined(__x86_64__)
#define SPP_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SPP_CLONES
#endif

// e^x: Cephes' expf (range reduction by ln 2 in two parts, degree-5 polynomial,
// exponent built in the bits); 0 below -87.3, saturating at e^88.
static inline float exp_approx(float x) {
    float small = x < -87.3f ? 1.0f : 0.0f;
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.0f ? 88.0f : x;
    float shifted = x * 1.44269504088896341f + 12582912.0f;  // 1.5·2²³ rounds to an integer in the low bits
    float n = shifted - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * (r * r) + r + 1.0f;
    int32_t bits;
    memcpy(&bits, &shifted, 4);
    bits = (bits - 0x4B400000 + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return small != 0.0f ? 0.0f : y * scale;
}

// erf: x·P(x²) below 1, 1 − e^{−x²}·Q(|x| − 2.5) up to 4, ±1 beyond (tools/fit-erf.py).
static inline float erf_approx(float x) {
    float a = x < 0 ? -x : x;
    float x2 = x * x;
    float p = 7.8965186628e-05f;
    p = p * x2 - 8.0238051878e-04f;
    p = p * x2 + 5.1899851693e-03f;
    p = p * x2 - 2.6854767739e-02f;
    p = p * x2 + 1.1283611253e-01f;
    p = p * x2 - 3.7612628700e-01f;
    p = p * x2 + 1.1283791665e+00f;
    float t = a - 2.5f;
    float q = -3.8357987582e-07f;
    q = q * t + 1.6588418352e-06f;
    q = q * t - 4.0093430940e-06f;
    q = q * t + 1.4425777468e-05f;
    q = q * t - 5.8942707472e-05f;
    q = q * t + 2.1283205478e-04f;
    q = q * t - 7.3371297571e-04f;
    q = q * t + 2.4660928404e-03f;
    q = q * t - 8.0014747687e-03f;
    q = q * t + 2.4938173438e-02f;
    q = q * t - 7.4347360511e-02f;
    q = q * t + 2.1080635884e-01f;
    float tail = a >= 4.0f ? 1.0f : 1.0f - exp_approx(-x2) * q;
    tail = x < 0 ? -tail : tail;
    return a < 1.0f ? x * p : tail;
}

// Reductions in 16 independent lanes, so they vectorise without reassociation flags.
#define LANES 16

// Pairwise, so the compiler reduces a register in log2(LANES) shuffle steps.
static inline float sum_lanes(const float *acc) {
    float t[LANES];
    for (int k = 0; k < LANES; k++) t[k] = acc[k];
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int k = 0; k < w; k++) t[k] += t[k + w];
    return t[0];
}

static inline float max_lanes(const float *acc) {
    float t[LANES];
    for (int k = 0; k < LANES; k++) t[k] = acc[k];
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int k = 0; k < w; k++) t[k] = t[k + w] > t[k] ? t[k + w] : t[k];
    return t[0];
}

SPP_CLONES void spp_gelu_erf(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = p[i];
        p[i] = 0.5f * v * (1.0f + erf_approx(v * 0.70710678118654752f));
    }
}

SPP_CLONES void spp_gelu_tanh(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = p[i];
        float u = 0.79788456080286536f * (v + 0.044715f * v * v * v);
        float t = 1.0f - 2.0f / (exp_approx(u + u) + 1.0f);
        p[i] = 0.5f * v * (1.0f + t);
    }
}

SPP_CLONES float spp_softmax_exp(float *p, const float *restrict add, size_t n) {
    if (n == 0) return 0;
    if (add) for (size_t i = 0; i < n; i++) p[i] += add[i];
    size_t full = n & ~(size_t)(LANES - 1);
    float mx[LANES], acc[LANES] = {0};
    for (int k = 0; k < LANES; k++) mx[k] = -__builtin_inff();
    for (size_t i = 0; i < full; i += LANES)
        for (int k = 0; k < LANES; k++) mx[k] = p[i + k] > mx[k] ? p[i + k] : mx[k];
    float m = max_lanes(mx);
    for (size_t i = full; i < n; i++) m = p[i] > m ? p[i] : m;
    // A row of only -∞ keys: every probability 0 rather than NaN.
    if (m == -__builtin_inff()) { memset(p, 0, n * sizeof(float)); return 0; }
    for (size_t i = 0; i < full; i += LANES)
        for (int k = 0; k < LANES; k++) { float e = exp_approx(p[i + k] - m); p[i + k] = e; acc[k] += e; }
    float s = sum_lanes(acc);
    for (size_t i = full; i < n; i++) { float e = exp_approx(p[i] - m); p[i] = e; s += e; }
    return 1.0f / s;
}

SPP_CLONES void spp_layer_norm_row(const float *x, float *y, size_t n, const float *scale, const float *bias, float eps,
                                   float *mean, float *inv_std) {
    size_t full = n & ~(size_t)(LANES - 1);
    float acc[LANES] = {0}, sq[LANES] = {0};
    for (size_t i = 0; i < full; i += LANES)
        for (int k = 0; k < LANES; k++) acc[k] += x[i + k];
    float s = sum_lanes(acc);
    for (size_t i = full; i < n; i++) s += x[i];
    float mu = n ? s / (float)n : 0;
    for (size_t i = 0; i < full; i += LANES)
        for (int k = 0; k < LANES; k++) { float d = x[i + k] - mu; sq[k] += d * d; }
    float v = sum_lanes(sq);
    for (size_t i = full; i < n; i++) { float d = x[i] - mu; v += d * d; }
    float inv = 1.0f / __builtin_sqrtf((n ? v / (float)n : 0) + eps);
    if (bias) {
        for (size_t i = 0; i < n; i++) y[i] = (x[i] - mu) * inv * scale[i] + bias[i];
    } else {
        for (size_t i = 0; i < n; i++) y[i] = (x[i] - mu) * inv * scale[i];
    }
    *mean = mu;
    *inv_std = inv;
}

SPP_CLONES void spp_quantize_rows_u8(const float *x, size_t ldx, size_t rows, size_t cols, int32_t levels,
                                     uint8_t *q, size_t ldq, float *scale, int32_t *zero) {
    size_t full = cols & ~(size_t)(LANES - 1);
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * ldx;
        uint8_t *out = q + r * ldq;
        // Starting both extremes at 0 widens the range to include 0, so 0 is exact.
        // v − v is 0 for finite v and NaN otherwise: one sum flags a non-finite row.
        float lo[LANES] = {0}, hi[LANES] = {0}, bad[LANES] = {0};
        for (size_t i = 0; i < full; i += LANES)
            for (int k = 0; k < LANES; k++) {
                float v = row[i + k];
                lo[k] = v < lo[k] ? v : lo[k];
                hi[k] = v > hi[k] ? v : hi[k];
                bad[k] += v - v;
            }
        float mn = 0, mx = 0, flag = sum_lanes(bad);
        for (int k = 0; k < LANES; k++) { mn = lo[k] < mn ? lo[k] : mn; mx = hi[k] > mx ? hi[k] : mx; }
        for (size_t i = full; i < cols; i++) {
            float v = row[i];
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
            flag += v - v;
        }
        float s = (mx - mn) / (float)levels;
        if (flag != 0 || !(s > 0) || s == __builtin_inff()) {
            // All zeros (scale 0) or not finite (scale NaN): q = 0 and the scale carries the result.
            memset(out, 0, cols);
            scale[r] = flag != 0 || s != s || s == __builtin_inff() ? __builtin_nanf("") : 0.0f;
            zero[r] = 0;
            continue;
        }
        float z = __builtin_rintf(-mn / s);
        float top = (float)levels;
        for (size_t i = 0; i < cols; i++) {
            float v = __builtin_rintf(row[i] / s) + z;
            v = v < 0 ? 0 : v;
            v = v > top ? top : v;
            out[i] = (uint8_t)(int32_t)v;
        }
        scale[r] = s;
        zero[r] = (int32_t)z;
    }
}

SPP_CLONES size_t spp_quantize_columns_s8(const float *w, size_t k, size_t n, int8_t *q, float *scale) {
    // Column maxima of |w| (in scale), and whether every element is finite (|v| ≤ FLT_MAX fails for ±∞ and NaN).
    for (size_t c = 0; c < n; c++) scale[c] = 0;
    int finite = 1;
    for (size_t r = 0; r < k; r++) {
        const float *row = w + r * n;
        for (size_t c = 0; c < n; c++) {
            float a = __builtin_fabsf(row[c]);
            finite &= a <= __FLT_MAX__;
            scale[c] = a > scale[c] ? a : scale[c];
        }
    }
    if (!finite) {
        for (size_t i = 0; i < k * n; i++) if (!(__builtin_fabsf(w[i]) <= __FLT_MAX__)) return i + 1;
    }
    for (size_t c = 0; c < n; c++) scale[c] /= 127;
    for (size_t r = 0; r < k; r++) {
        const float *row = w + r * n;
        int8_t *out = q + r * n;
        for (size_t c = 0; c < n; c++) {
            // |v / s| ≤ 127 up to rounding; the clamp keeps a rounding slip in range. A zero column stays 0.
            float x = scale[c] > 0 ? __builtin_rintf(row[c] / scale[c]) : 0;
            x = x < -127 ? -127 : x > 127 ? 127 : x;
            out[c] = (int8_t)x;
        }
    }
    return 0;
}

SPP_CLONES void spp_column_sums_s8(const int8_t *v, size_t rows, size_t cols, int32_t *sums) {
    for (size_t c = 0; c < cols; c++) sums[c] = 0;
    for (size_t r = 0; r < rows; r++) {
        const int8_t *row = v + r * cols;
        for (size_t c = 0; c < cols; c++) sums[c] += row[c];
    }
}

SPP_CLONES void spp_row_sums_s8(const int8_t *v, size_t rows, size_t cols, int32_t *sums) {
    for (size_t r = 0; r < rows; r++) {
        const int8_t *row = v + r * cols;
        int32_t s = 0;
        for (size_t c = 0; c < cols; c++) s += row[c];
        sums[r] = s;
    }
}

SPP_CLONES void spp_dequantize_rows(const spp_aliased_int32 *acc, size_t ldacc, size_t rows, size_t cols,
                                    const float *row_scale, const int32_t *row_zero,
                                    const float *col_scale, const int32_t *col_sum,
                                    const float *bias, int accumulate, float *y, size_t ldy) {
    for (size_t r = 0; r < rows; r++) {
        const spp_aliased_int32 *c = acc + r * ldacc;
        float *out = y + r * ldy;
        float a = row_scale[r];
        int32_t z = row_zero[r];
        // (acc − z · colsum) is Σ_k (q − z) w exactly: |.| ≤ 255 · 127 · k fits int32 for k < 66,000.
        // assume_safety: c may be out itself, element for element, which vectorising keeps right.
        if (bias) {
#pragma clang loop vectorize(assume_safety)
            for (size_t i = 0; i < cols; i++) out[i] = a * col_scale[i] * (float)(c[i] - z * col_sum[i]) + bias[i];
        } else if (accumulate) {
#pragma clang loop vectorize(assume_safety)
            for (size_t i = 0; i < cols; i++) out[i] += a * col_scale[i] * (float)(c[i] - z * col_sum[i]);
        } else {
#pragma clang loop vectorize(assume_safety)
            for (size_t i = 0; i < cols; i++) out[i] = a * col_scale[i] * (float)(c[i] - z * col_sum[i]);
        }
    }
}

// M[p, i0 + r] for r < rows (row p ≥ i0 of the lower-triangular M): the columns left of its
// diagonal (int8 times the row's scale), the diagonal, then zeros.
static inline void spp_lower_int8_row(size_t p, size_t i0, size_t rows, const int8_t *q, size_t ldq, const float *scale,
                                      const float *diagonal, float *dst) {
    const int8_t *src = q + p * ldq + i0;
    float s = scale[p];
    size_t below = p - i0 < rows ? p - i0 : rows;
    for (size_t r = 0; r < below; r++) dst[r] = s * (float)src[r];
    if (below < rows) {
        dst[below] = diagonal[p];
        for (size_t r = below + 1; r < rows; r++) dst[r] = 0;
    }
}

SPP_CLONES void spp_lower_int8_columns(size_t k, size_t i0, size_t rows, const int8_t *q, size_t ldq, const float *scale,
                                       const float *diagonal, float *out, size_t ld) {
    for (size_t p = i0; p < k; p++) spp_lower_int8_row(p, i0, rows, q, ldq, scale, diagonal, out + (p - i0) * ld);
}

SPP_CLONES void spp_lower_int8_columns_bf16(size_t k, size_t i0, size_t rows, const int8_t *q, size_t ldq, const float *scale,
                                            const float *diagonal, uint32_t *out, size_t ld) {
    if (rows == 0 || i0 >= k) return;
    // Two rows of M as float32, then rounded and interleaved; a last odd row pairs with zeros.
    float lo[rows], hi[rows];
    for (size_t p = i0; p < k; p += 2) {
        spp_lower_int8_row(p, i0, rows, q, ldq, scale, diagonal, lo);
        if (p + 1 < k) spp_lower_int8_row(p + 1, i0, rows, q, ldq, scale, diagonal, hi);
        else memset(hi, 0, sizeof hi);
        uint32_t *dst = out + (p - i0) / 2 * ld;
        for (size_t r = 0; r < rows; r++) dst[r] = spp_bfloat_pair(lo[r], hi[r]);
    }
}

size_t spp_packed_pairs_count(size_t k, size_t n) {
    return (n + SPP_PANEL - 1) / SPP_PANEL * SPP_PANEL * ((k + 1) / 2);
}

SPP_CLONES void spp_pack_panels_bf16(const float *b, size_t ldb, size_t k, size_t n, uint32_t *packed) {
    size_t pairs = (k + 1) / 2;
    for (size_t j0 = 0; j0 < n; j0 += SPP_PANEL) {
        size_t cols = n - j0 < SPP_PANEL ? n - j0 : SPP_PANEL;
        for (size_t t = 0; t < pairs; t++) {
            const float *lo = b + 2 * t * ldb + j0;
            uint32_t *row = packed + j0 * pairs + t * SPP_PANEL;
            size_t j = 0;
            if (2 * t + 1 < k) {
                const float *hi = lo + ldb;
                for (; j < cols; j++) row[j] = spp_bfloat_pair(lo[j], hi[j]);
            } else
                for (; j < cols; j++) row[j] = spp_bfloat_bits(lo[j]);
            for (; j < SPP_PANEL; j++) row[j] = 0;
        }
    }
}

size_t spp_packed_count(size_t k, size_t n) {
    return (n + SPP_PANEL - 1) / SPP_PANEL * SPP_PANEL * k;
}

#if defined(__x86_64__)
#include <immintrin.h>

// out[c · ldo + i] = rows[i][c] for i, c < 8: one 8 × 8 transpose in registers.
__attribute__((target("avx2"))) static void spp_transpose_8x8(const float *const rows[8], float *out, size_t ldo) {
    __m256 r0 = _mm256_loadu_ps(rows[0]), r1 = _mm256_loadu_ps(rows[1]), r2 = _mm256_loadu_ps(rows[2]),
           r3 = _mm256_loadu_ps(rows[3]), r4 = _mm256_loadu_ps(rows[4]), r5 = _mm256_loadu_ps(rows[5]),
           r6 = _mm256_loadu_ps(rows[6]), r7 = _mm256_loadu_ps(rows[7]);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
           t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE), u2 = _mm256_shuffle_ps(t1, t3, 0x44),
           u3 = _mm256_shuffle_ps(t1, t3, 0xEE), u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
           u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(out + 0 * ldo, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(out + 1 * ldo, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(out + 2 * ldo, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(out + 3 * ldo, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(out + 4 * ldo, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(out + 5 * ldo, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(out + 6 * ldo, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(out + 7 * ldo, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

static void spp_gather_transpose_32_ld(const uint32_t *in, size_t ldi, size_t cols, const int64_t *order, size_t n, uint32_t *out,
                                       size_t ldo);

void spp_pack_panels(const float *b, size_t ldb, int trans_b, size_t k, size_t n, float *packed) {
    for (size_t j0 = 0; j0 < n; j0 += SPP_PANEL) {
        size_t cols = n - j0 < SPP_PANEL ? n - j0 : SPP_PANEL;
        float *panel = packed + j0 * k;
        if (trans_b) {
            // B's columns are rows in memory: the panel is their gather-transpose.
            if (cols < SPP_PANEL) memset(panel, 0, k * SPP_PANEL * sizeof(float));
            spp_gather_transpose_32_ld((const uint32_t *)b + j0 * ldb, ldb, k, NULL, cols, (uint32_t *)panel, SPP_PANEL);
        } else {
            for (size_t p = 0; p < k; p++) {
                float *row = panel + p * SPP_PANEL;
                size_t j = 0;
                for (; j < cols; j++) row[j] = b[p * ldb + j0 + j];
                for (; j < SPP_PANEL; j++) row[j] = 0;
            }
        }
    }
}

// Blocks of 6 rows × one or two panels, register-blocked: AVX2 takes one panel (12
// accumulators of its 16 registers), AVX-512 two (12 of 32; FMA latency needs that
// many chains in flight), one or two panel rows and 6 broadcasts of A per step of k.
// Each body is inlined twice: A's columns adjacent (attention) or a row apart (the
// refit's Mᵀ).
#define SPP_ROWS 6
#define SPP_INLINE static inline __attribute__((always_inline))

// The loops every body shares: panels of WIDTH columns (one or two panels: p0, p1;
// p1 = p0 for a last single panel), blocks of SPP_ROWS rows of A (ar: a partial
// block repeats its last row, so reads stay inside A). The body fills acc (SPP_ROWS
// rows of WIDTH, alpha applied), stored for the block's own rows and columns. A and
// the panels hold floats, or pairs of bfloat16 (the bfloat16 body).
#define SPP_SGEMM_BLOCKS(WIDTH, ...)                                                                     \
    for (size_t j0 = 0; j0 < n; j0 += (WIDTH)) {                                                         \
        size_t cols = n - j0 < (WIDTH) ? n - j0 : (WIDTH);                                               \
        const __typeof__(*packed) *p0 = packed + j0 * ldp, *p1 = cols > SPP_PANEL ? p0 + ldp * SPP_PANEL : p0; \
        (void)p1;                                                                                        \
        for (size_t i0 = 0; i0 < m; i0 += SPP_ROWS) {                                                   \
            size_t rows = m - i0 < SPP_ROWS ? m - i0 : SPP_ROWS;                                         \
            const __typeof__(*a) *ar[SPP_ROWS];                                                          \
            for (size_t r = 0; r < SPP_ROWS; r++) ar[r] = a + (i0 + (r < rows ? r : rows - 1)) * rs;     \
            float acc[SPP_ROWS * (WIDTH)];                                                               \
            __VA_ARGS__                                                                                  \
            for (size_t r = 0; r < rows; r++) memcpy(c + (i0 + r) * ldc + j0, acc + r * (WIDTH), cols * sizeof(float)); \
        }                                                                                                \
    }

// Scalar: the portable fallback.
static void spp_sgemm_scalar(size_t m, size_t n, size_t k, float alpha, const float *a, size_t rs, size_t cs,
                             const float *packed, size_t ldp, float *c, size_t ldc) {
    SPP_SGEMM_BLOCKS(SPP_PANEL, {
        for (size_t i = 0; i < SPP_ROWS * SPP_PANEL; i++) acc[i] = 0;
        for (size_t p = 0; p < k; p++)
            for (size_t r = 0; r < SPP_ROWS; r++)
                for (size_t j = 0; j < SPP_PANEL; j++) acc[r * SPP_PANEL + j] += ar[r][p * cs] * p0[p * SPP_PANEL + j];
        for (size_t i = 0; i < SPP_ROWS * SPP_PANEL; i++) acc[i] *= alpha;
    })
}

#if defined(__x86_64__)

// One step of k for row r: x = A[r, p] broadcast, twice an FMA into the row's two accumulators.
#define SPP_FMA_ROW(SET1, FMA, r) x = SET1(ar[r][p * cs]); c##r##0 = FMA(x, b0, c##r##0); c##r##1 = FMA(x, b1, c##r##1);

__attribute__((target("avx2,fma"))) SPP_INLINE void spp_sgemm_avx2_body(size_t m, size_t n, size_t k, float alpha, const float *a,
                                                                        size_t rs, size_t cs, const float *packed, size_t ldp,
                                                                        float *c, size_t ldc) {
    __m256 scale = _mm256_set1_ps(alpha);
    SPP_SGEMM_BLOCKS(SPP_PANEL, {
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
               c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
        for (size_t p = 0; p < k; p++) {
            __m256 b0 = _mm256_loadu_ps(p0 + p * SPP_PANEL), b1 = _mm256_loadu_ps(p0 + p * SPP_PANEL + 8), x;
            SPP_FMA_ROW(_mm256_set1_ps, _mm256_fmadd_ps, 0) SPP_FMA_ROW(_mm256_set1_ps, _mm256_fmadd_ps, 1)
            SPP_FMA_ROW(_mm256_set1_ps, _mm256_fmadd_ps, 2) SPP_FMA_ROW(_mm256_set1_ps, _mm256_fmadd_ps, 3)
            SPP_FMA_ROW(_mm256_set1_ps, _mm256_fmadd_ps, 4) SPP_FMA_ROW(_mm256_set1_ps, _mm256_fmadd_ps, 5)
        }
        __m256 all[2 * SPP_ROWS] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
        for (size_t i = 0; i < 2 * SPP_ROWS; i++) _mm256_storeu_ps(acc + 8 * i, _mm256_mul_ps(all[i], scale));
    })
}

__attribute__((target("avx512f"))) SPP_INLINE void spp_sgemm_avx512_body(size_t m, size_t n, size_t k, float alpha, const float *a,
                                                                         size_t rs, size_t cs, const float *packed, size_t ldp,
                                                                         float *c, size_t ldc) {
    __m512 scale = _mm512_set1_ps(alpha);
    SPP_SGEMM_BLOCKS(2 * SPP_PANEL, {
        if (cols <= SPP_PANEL) {
            // A lone last panel (a head rank of 16, 40 or 48): one accumulator a row, where two
            // multiplied the same panel twice and threw one away.
            __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;
            for (size_t p = 0; p < k; p++) {
                __m512 b0 = _mm512_loadu_ps(p0 + p * SPP_PANEL);
                c0 = _mm512_fmadd_ps(_mm512_set1_ps(ar[0][p * cs]), b0, c0);
                c1 = _mm512_fmadd_ps(_mm512_set1_ps(ar[1][p * cs]), b0, c1);
                c2 = _mm512_fmadd_ps(_mm512_set1_ps(ar[2][p * cs]), b0, c2);
                c3 = _mm512_fmadd_ps(_mm512_set1_ps(ar[3][p * cs]), b0, c3);
                c4 = _mm512_fmadd_ps(_mm512_set1_ps(ar[4][p * cs]), b0, c4);
                c5 = _mm512_fmadd_ps(_mm512_set1_ps(ar[5][p * cs]), b0, c5);
            }
            __m512 all[SPP_ROWS] = {c0, c1, c2, c3, c4, c5};
            for (size_t i = 0; i < SPP_ROWS; i++) _mm512_storeu_ps(acc + 2 * SPP_PANEL * i, _mm512_mul_ps(all[i], scale));
        } else {
        __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
               c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
        for (size_t p = 0; p < k; p++) {
            __m512 b0 = _mm512_loadu_ps(p0 + p * SPP_PANEL), b1 = _mm512_loadu_ps(p1 + p * SPP_PANEL), x;
            SPP_FMA_ROW(_mm512_set1_ps, _mm512_fmadd_ps, 0) SPP_FMA_ROW(_mm512_set1_ps, _mm512_fmadd_ps, 1)
            SPP_FMA_ROW(_mm512_set1_ps, _mm512_fmadd_ps, 2) SPP_FMA_ROW(_mm512_set1_ps, _mm512_fmadd_ps, 3)
            SPP_FMA_ROW(_mm512_set1_ps, _mm512_fmadd_ps, 4) SPP_FMA_ROW(_mm512_set1_ps, _mm512_fmadd_ps, 5)
        }
        __m512 all[2 * SPP_ROWS] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
        for (size_t i = 0; i < 2 * SPP_ROWS; i++) _mm512_storeu_ps(acc + 16 * i, _mm512_mul_ps(all[i], scale));
        }
    })
}

// A's columns adjacent (cs = 1, a constant the compiler folds in) or cs apart.
#define SPP_SGEMM_ISA(NAME, TARGET)                                                                           \
    __attribute__((target(TARGET))) static void spp_sgemm_##NAME(size_t m, size_t n, size_t k, float alpha,     \
                                                                 const float *a, size_t rs, size_t cs,         \
                                                                 const float *packed, size_t ldp, float *c, size_t ldc) { \
        if (cs == 1) spp_sgemm_##NAME##_body(m, n, k, alpha, a, rs, 1, packed, ldp, c, ldc);                   \
        else spp_sgemm_##NAME##_body(m, n, k, alpha, a, rs, cs, packed, ldp, c, ldc);                          \
    }
SPP_SGEMM_ISA(avx2, "avx2,fma")
SPP_SGEMM_ISA(avx512, "avx512f")

// The bfloat16 product: the AVX-512 body's blocking (6 rows × two panels), one VDPBF16PS
// (two multiply-adds a float lane: a pair of A's bfloat16 broadcast against a row of
// panel pairs) in place of each FMA. A lone last panel is multiplied twice (p1 = p0):
// the refit's widths are whole pairs of panels (a model's hidden size).
// One pair step for row r: A's pair broadcast, a VDPBF16PS into each of the row's two accumulators.
#define SPP_DOT_ROW(r) x = (__m512bh)_mm512_set1_epi32((int)ar[r][t * cs]); c##r##0 = _mm512_dpbf16_ps(c##r##0, x, b0); c##r##1 = _mm512_dpbf16_ps(c##r##1, x, b1);
__attribute__((target("avx512f,avx512bf16"))) static void spp_sbgemm_avx512bf16(size_t m, size_t n, size_t pairs, const uint32_t *a,
                                                                                size_t lda, const uint32_t *packed, size_t ldp,
                                                                                float *c, size_t ldc) {
    size_t rs = 1, cs = lda;
    SPP_SGEMM_BLOCKS(2 * SPP_PANEL, {
        __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
               c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
        for (size_t t = 0; t < pairs; t++) {
            __m512bh b0 = (__m512bh)_mm512_loadu_si512(p0 + t * SPP_PANEL), b1 = (__m512bh)_mm512_loadu_si512(p1 + t * SPP_PANEL), x;
            SPP_DOT_ROW(0) SPP_DOT_ROW(1) SPP_DOT_ROW(2) SPP_DOT_ROW(3) SPP_DOT_ROW(4) SPP_DOT_ROW(5)
        }
        __m512 all[2 * SPP_ROWS] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
        for (size_t i = 0; i < 2 * SPP_ROWS; i++) _mm512_storeu_ps(acc + SPP_PANEL * i, all[i]);
    })
}
#endif

int spp_packed_isa(void) {
#if defined(__x86_64__)
    // libgcc / compiler-rt fill in the CPU model before any code runs: a load and a test each call.
    if (__builtin_cpu_supports("avx512f")) return 4;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 3;
#endif
    return 0;
}

// Tiles of one 64-byte cache line each way (16 × 16 four-byte elements, 64 × 64
// bytes): the lines read and the lines written stay in L1 while the tile is moved;
// with AVX2, a 4-byte tile moves as 8 × 8 transposes in registers. Rows of `in` are
// `ldi` elements apart.
#define GATHER_TRANSPOSE(T, TILE, ...)                                                       \
    for (size_t j0 = 0; j0 < n; j0 += TILE) {                                                \
        size_t j1 = j0 + TILE < n ? j0 + TILE : n;                                           \
        const T *row[TILE];                                                                  \
        for (size_t j = j0; j < j1; j++)                                                     \
            row[j - j0] = in + (size_t)(order ? order[j] : (int64_t)j) * ldi;                \
        for (size_t c0 = 0; c0 < cols; c0 += TILE) {                                         \
            size_t c1 = c0 + TILE < cols ? c0 + TILE : cols;                                 \
            __VA_ARGS__                                                                      \
            for (size_t j = j0; j < j1; j++)                                                 \
                for (size_t c = c0; c < c1; c++) out[c * ldo + j] = row[j - j0][c];          \
        }                                                                                    \
    }

static void spp_gather_transpose_32_ld(const uint32_t *in, size_t ldi, size_t cols, const int64_t *order, size_t n, uint32_t *out,
                                       size_t ldo) {
#if defined(__x86_64__)
    if (spp_packed_isa() >= 3) {
        // Whole tiles in registers (then `continue`), the ragged edges by the loop below.
        GATHER_TRANSPOSE(uint32_t, 16, if (j1 - j0 == 16 && c1 - c0 == 16) {
            for (size_t j = 0; j < 16; j += 8)
                for (size_t c = 0; c < 16; c += 8) {
                    const float *rows[8];
                    for (size_t i = 0; i < 8; i++) rows[i] = (const float *)row[j + i] + c0 + c;
                    spp_transpose_8x8(rows, (float *)out + (c0 + c) * ldo + j0 + j, ldo);
                }
            continue;
        })
        return;
    }
#endif
    GATHER_TRANSPOSE(uint32_t, 16)
}

void spp_gather_transpose_32(const uint32_t *in, size_t cols, const int64_t *order, size_t n, uint32_t *out, size_t ldo) {
    spp_gather_transpose_32_ld(in, cols, cols, order, n, out, ldo);
}

void spp_gather_transpose_8(const uint8_t *in, size_t cols, const int64_t *order, size_t n, uint8_t *out, size_t ldo) {
    size_t ldi = cols;
    GATHER_TRANSPOSE(uint8_t, 64)
}

void spp_sgemm_packed_isa(int isa, size_t m, size_t n, size_t k, float alpha, const float *a, size_t rs, size_t cs,
                          const float *packed, size_t ldp, float *c, size_t ldc) {
#if defined(__x86_64__)
    if (isa == 4) { spp_sgemm_avx512(m, n, k, alpha, a, rs, cs, packed, ldp, c, ldc); return; }
    if (isa == 3) { spp_sgemm_avx2(m, n, k, alpha, a, rs, cs, packed, ldp, c, ldc); return; }
#endif
    spp_sgemm_scalar(m, n, k, alpha, a, rs, cs, packed, ldp, c, ldc);
}

void spp_sgemm_packed(size_t m, size_t n, size_t k, float alpha, const float *a, size_t rs, size_t cs,
                      const float *packed, size_t ldp, float *c, size_t ldc) {
    spp_sgemm_packed_isa(spp_packed_isa(), m, n, k, alpha, a, rs, cs, packed, ldp, c, ldc);
}

int spp_bf16_supported(void) {
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

void spp_sbgemm_packed(size_t m, size_t n, size_t pairs, const uint32_t *a, size_t lda, const uint32_t *packed, size_t ldp,
                       float *c, size_t ldc) {
#if defined(__x86_64__)
    if (spp_bf16_supported()) { spp_sbgemm_avx512bf16(m, n, pairs, a, lda, packed, ldp, c, ldc); return; }
#endif
    spp_sbgemm_packed_scalar(m, n, pairs, a, lda, packed, ldp, c, ldc);
}

void spp_sbgemm_packed_scalar(size_t m, size_t n, size_t pairs, const uint32_t *a, size_t lda, const uint32_t *packed, size_t ldp,
                              float *c, size_t ldc) {
    // Each product of two bfloat16 is exact in float32, summed in float32.
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            const uint32_t *panel = packed + j / SPP_PANEL * SPP_PANEL * ldp + j % SPP_PANEL;
            float sum = 0;
            for (size_t t = 0; t < pairs; t++) {
                uint32_t x = a[t * lda + i], y = panel[t * SPP_PANEL];
                sum += spp_bfloat_value(x & 0xFFFFu) * spp_bfloat_value(y & 0xFFFFu) + spp_bfloat_value(x >> 16) * spp_bfloat_value(y >> 16);
            }
            c[i * ldc + j] = sum;
        }
}

void spp_gemm_u8s8s32_ref(size_t m, size_t n, size_t k, const uint8_t *a, size_t lda,
                          const int8_t *b, size_t ldb, int32_t *acc, size_t ldacc) {
    for (size_t i = 0; i < m; i++) {
        int32_t *c = acc + i * ldacc;
        for (size_t j = 0; j < n; j++) c[j] = 0;
        for (size_t p = 0; p < k; p++) {
            int32_t x = a[i * lda + p];
            for (size_t j = 0; j < n; j++) c[j] += x * b[p * ldb + j];
        }
    }
}

struct spp_job {
    void (*body)(void *, int, int);
    void *ctx;
};

static void spp_job_run(void *p) {
    struct spp_job *job = p;
    job->body(job->ctx, omp_get_thread_num(), omp_get_num_threads());
}

void spp_parallel(unsigned threads, void (*body)(void *ctx, int thread, int threads), void *ctx) {
    struct spp_job job = {body, ctx};
    GOMP_parallel(spp_job_run, &job, threads, 0);
}

SPP_CLONES void spp_row_sums(const float *x, float *out, size_t rows, size_t n) {
    size_t full = n & ~(size_t)(LANES - 1);
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * n;
        float acc[LANES] = {0};
        for (size_t i = 0; i < full; i += LANES)
            for (int k = 0; k < LANES; k++) acc[k] += row[i + k];
        float s = sum_lanes(acc);
        for (size_t i = full; i < n; i++) s += row[i];
        out[r] = s;
    }
}

SPP_CLONES void spp_square(const float *a, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] * a[i];
}

SPP_CLONES void spp_binary(int op, const float *a, const float *b, float *out, size_t n) {
    switch (op) {
    case 0: for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i]; break;
    case 1: for (size_t i = 0; i < n; i++) out[i] = a[i] - b[i]; break;
    case 2: for (size_t i = 0; i < n; i++) out[i] = a[i] * b[i]; break;
    default: for (size_t i = 0; i < n; i++) out[i] = a[i] / b[i]; break;
    }
}

SPP_CLONES void spp_scale_rows(float *x, size_t ld, size_t rows, size_t cols, const float *scale) {
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * ld, f = scale[r];
        for (size_t c = 0; c < cols; c++) row[c] *= f;
    }
}

SPP_CLONES void spp_binary_scalar(int op, const float *a, float b, float *out, size_t n) {
    switch (op) {
    case 0: for (size_t i = 0; i < n; i++) out[i] = a[i] + b; break;
    case 1: for (size_t i = 0; i < n; i++) out[i] = a[i] - b; break;
    case 2: for (size_t i = 0; i < n; i++) out[i] = a[i] * b; break;
    default: for (size_t i = 0; i < n; i++) out[i] = a[i] / b; break;
    }
}
