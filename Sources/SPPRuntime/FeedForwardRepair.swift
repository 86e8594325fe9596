import CKernels
import SPPCore
import SPPFormat
import SPPKernels

/// The load-time repair of a pruned feed-forward block: W2 and b2 refit by
/// ridge least squares on calibration statistics of the hidden activations h,
/// so the kept neurons also carry what the pruned ones did.
///
/// For the kept prefix S of k neurons (path order), with C the covariance of h and
/// A = C + λI = L Lᵀ (Cholesky, path order),
///     W = argmin E‖(h − μ)W2 − (h_S − μ_S)W‖² + λ‖W − W2_S‖²  =  A_SS⁻¹ (A W2)_S.
/// With M = L⁻¹ (lower triangular, so M_SS = (L_SS)⁻¹ is the first k rows of M) and
/// Z = M⁻ᵀ W2 = Lᵀ W2, (A W2)_S = L_SS Z_S, hence W = M_SSᵀ Z_S (a triangular product).
/// The file stores M's rows below the diagonal in int8 with a scale per row (its
/// diagonal, the largest entry of each row, in float32), in row chunks holding only
/// the columns up to the chunk's last row, so keep k reads about k²/2 bytes; Z is made
/// from that stored M̃ (Z = M̃⁻ᵀ W2), so the refit is the exact ridge refit for the
/// covariance (M̃ᵀM̃)⁻¹ − λI and at S = all W = W2. Measured on all-MiniLM-L6-v2: the
/// int8 M̃ moves W by ~0.8% (Frobenius) at keep 0.5 and leaves the block error as is.
/// Where the CPU multiplies bfloat16, the product rounds M̃ and Z to it (`Product`).
/// Z_S is read instead of W2_S. The bias absorbs the means: b2' = b2 + μ W2 − μ_S W,
/// with μ W2 stored whole as the pair's offset.
public enum FeedForwardRepair {
    public enum Role {
        /// Z = M̃⁻ᵀ W2 [n, d].
        public static let whitenedW2 = "w2_whitened"
        /// int8 rows of M below the diagonal, chunk c of rows [a, b) stored [b − a, b] with a scale per row.
        public static let inverseFactor = "gram_inverse"
        /// M's diagonal [n].
        public static let inverseDiagonal = "gram_inverse_diagonal"
        /// μ [n].
        public static let mean = "mean"
        public static let all: Set<String> = [whitenedW2, inverseFactor, inverseDiagonal, mean]
        /// The rows of L that files before the inverse factor stored (read as a k×n prefix):
        /// not readable, named when a file has them.
        public static let retired: Set<String> = ["gram_factor"]
    }

    /// Relative ridge λ / mean(diag C): keeps the refit near W2 where the data says little.
    public static let defaultRidge = 1e-2

    /// The whole-tensor name of the offset μ W2 of FFN node `node`.
    public static func offsetName(_ node: String) -> String { "\(node)/ffn/w2_offset" }

    /// Rows of W per product of the blocked refit (even: a slab starts on a pair of bfloat16 rows).
    static let refitBlock = 96

    /// The arithmetic of the refit's product W = M_SSᵀ Z_S.
    public enum Product: Sendable {
        /// float32 operands.
        case float32
        /// M and Z rounded to bfloat16 (8 significant bits), products summed in float32:
        /// AVX512-BF16 does two multiply-adds a float lane where FMA does one. On
        /// all-MiniLM-L6-v2 at keep 0.3, 0.5 and 0.75, recall@1 on debdesc moves by at
        /// most ±0.0015 (3 of 2,000 pairs) and cosine to dense by ≤ 0.0001. Not bit for bit
        /// the same on every CPU: VDPBF16PS flushes denormals and adds a pair's products in
        /// its own order, the scalar loop elsewhere in another.
        case bfloat16

        /// bfloat16 where the CPU multiplies it natively, float32 elsewhere.
        public static let fastest: Product = spp_bf16_supported() != 0 ? .bfloat16 : .float32
    }

    /// M_SS [k, k] as the file stores it: int8 values below the diagonal (those on and
    /// above it are not read), row p times `rowScales[p]`, and the float32 diagonal.
    public struct LowerFactor {
        public let values: Tensor
        public let rowScales: Tensor
        public let diagonal: Tensor

        public init(values: Tensor, rowScales: Tensor, diagonal: Tensor) {
            self.values = values
            self.rowScales = rowScales
            self.diagonal = diagonal
        }

        var size: Int { diagonal.count }
    }

    /// W [k, d] and b2' [d] from the kept prefixes: Z rows [k, d], M_SS, means [k];
    /// offset and b2 [d]. `w`: where W goes (float32 [k, d]; default a new tensor), so a
    /// caller can choose its memory; it may be `z` itself (Z is packed into panels before W
    /// is written). The scratch (Z in panels, a slab of Mᵀ) comes from the current `BufferPool`.
    public static func refit(whitenedW2 z: Tensor, inverseFactor m: LowerFactor, mean: Tensor, offset: Tensor, b2: Tensor,
                             into w: Tensor? = nil, product: Product = .fastest) throws -> (w2: Tensor, b2: Tensor) {
        let k = m.size, d = b2.count
        guard z.shape == [k, d], m.values.shape == [k, k], m.values.dtype == .int8, m.rowScales.count == k, mean.count == k, offset.count == d,
              [z, m.rowScales, m.diagonal, mean, offset, b2].allSatisfy({ $0.dtype == .float32 }) else {
            throw RuntimeError.corruptPath("feed-forward repair data Z \(z.shape), M \(m.values.dtype) \(m.values.shape) with \(m.rowScales.shape) scales and diagonal \(m.diagonal.shape), μ \(mean.shape), offset \(offset.shape) do not fit b2 \(b2.shape)")
        }
        let w = w ?? Tensor(dtype: .float32, shape: [k, d])
        precondition(w.dtype == .float32 && w.shape == [k, d], "refit output \(w.shape) for W [\(k), \(d)]")
        let pd = m.diagonal.pointer(as: Float.self), ps = m.rowScales.pointer(as: Float.self)
        for i in 0..<k {
            // M = L⁻¹ has a positive diagonal; anything else is not a factor of a covariance.
            guard pd[i] > 0, pd[i].isFinite else {
                throw RuntimeError.corruptPath("feed-forward repair factor has diagonal \(pd[i]) at row \(i)")
            }
            guard ps[i].isFinite else { throw RuntimeError.corruptPath("feed-forward repair factor has scale \(ps[i]) at row \(i)") }
        }
        // By slabs of W's rows: rows [i0, i1) take M[i0..<k, i0..<i1]ᵀ Z[i0..<k], skipping the zeros
        // above M's diagonal (about half the flops of one k×k product, less a slab's width). The slab of
        // Mᵀ is expanded from int8 as it is needed (M whole in float32 was k² floats of fresh memory).
        // CKernels' product on one thread (refits run one per task on the load's threads already): no
        // oneDNN sgemm setup in a load.
        let pz = z.pointer(as: Float.self), pw = w.pointer(as: Float.self), pq = m.values.pointer(as: Int8.self)
        switch product {
        case .float32:
            withScratch(Float.self, count: spp_packed_count(k, d)) { panels in
                spp_pack_panels(pz, d, 0, k, d, panels)
                withScratch(Float.self, count: Self.refitBlock * k) { columns in
                    for i0 in stride(from: 0, to: k, by: Self.refitBlock) {
                        let rows = min(Self.refitBlock, k - i0)
                        spp_lower_int8_columns(k, i0, rows, pq, k, ps, pd, columns, Self.refitBlock)
                        spp_sgemm_packed(rows, d, k - i0, 1, columns, 1, Self.refitBlock, panels + i0 * Int(SPP_PANEL), k, pw + i0 * d, d)
                    }
                }
            }
        case .bfloat16:
            // Slabs start on even rows, so a slab's pairs are the panels' from pair i0 / 2 on.
            precondition(Self.refitBlock % 2 == 0, "bfloat16 refit slabs of \(Self.refitBlock) rows")
            let pairs = (k + 1) / 2
            withScratch(UInt32.self, count: spp_packed_pairs_count(k, d)) { panels in
                spp_pack_panels_bf16(pz, d, k, d, panels)
                withScratch(UInt32.self, count: Self.refitBlock * pairs) { columns in
                    for i0 in stride(from: 0, to: k, by: Self.refitBlock) {
                        let rows = min(Self.refitBlock, k - i0)
                        spp_lower_int8_columns_bf16(k, i0, rows, pq, k, ps, pd, columns, Self.refitBlock)
                        spp_sbgemm_packed(rows, d, (k - i0 + 1) / 2, columns, Self.refitBlock, panels + i0 / 2 * Int(SPP_PANEL), pairs,
                                          pw + i0 * d, d)
                    }
                }
            }
        }
        var bias = zip(b2.floats, offset.floats).map { Double($0) + Double($1) }
        let mu = mean.pointer(as: Float.self)
        bias.withUnsafeMutableBufferPointer { bias in
            for i in 0..<k {
                let m = Double(mu[i]), row = pw + i * d
                for c in 0..<d { bias[c] -= m * Double(row[c]) }
            }
        }
        return (w, Tensor(bias.map { Float($0) }, shape: [d]))
    }
}
