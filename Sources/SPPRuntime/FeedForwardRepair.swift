import SPPCore
import SPPFormat
import SPPKernels

/// The load-time repair of a pruned feed-forward block: W2 and b2 refit by
/// ridge least squares on calibration statistics of the hidden activations h,
/// so the kept neurons also carry what the pruned ones did.
///
/// For the kept prefix S of k neurons (path order), with C the covariance of h,
/// A = C + λI = L Lᵀ (Cholesky, path order) and Z = Lᵀ W2,
///     W = argmin E‖(h − μ)W2 − (h_S − μ_S)W‖² + λ‖W − W2_S‖²  =  A_SS⁻¹ (A W2)_S,
/// and since L is lower triangular, (A W2)_S = (L Z)_S = L_k Z_k, so L_kᵀ W = Z_k.
/// The stored rows stay prefixes per keep level: Z_k (read instead of W2_k), the
/// first k rows of L (only their first k columns are non-zero, which zstd stores
/// for almost nothing) and μ_k. At S = all, W = W2. The bias absorbs the means:
/// b2' = b2 + μ W2 − μ_S W, with μ W2 stored whole as the pair's offset.
public enum FeedForwardRepair {
    public enum Role {
        /// Z = Lᵀ W2 [n, d].
        public static let whitenedW2 = "w2_whitened"
        /// Rows of L [n, n].
        public static let gramFactor = "gram_factor"
        /// μ [n].
        public static let mean = "mean"
        public static let all: Set<String> = [whitenedW2, gramFactor, mean]
    }

    /// Relative ridge λ / mean(diag C): keeps the refit near W2 where the data says little.
    public static let defaultRidge = 1e-2

    /// The whole-tensor name of the offset μ W2 of FFN node `node`.
    public static func offsetName(_ node: String) -> String { "\(node)/ffn/w2_offset" }

    /// W [k, d] and b2' [d] from the stored prefixes: Z rows [k, d], L rows [k, n ≥ k],
    /// means [k]; offset and b2 [d].
    public static func refit(whitenedW2 z: Tensor, gramFactor l: Tensor, mean: Tensor, offset: Tensor, b2: Tensor) throws -> (w2: Tensor, b2: Tensor) {
        let k = z.shape.first ?? 0, d = b2.count
        guard z.rank == 2, z.shape[1] == d, l.rank == 2, l.shape[0] == k, l.shape[1] >= k, mean.count == k, offset.count == d else {
            throw RuntimeError.corruptPath("feed-forward repair data of shapes \(z.shape), \(l.shape), \(mean.shape), \(offset.shape) do not fit b2 \(b2.shape)")
        }
        var w = z.floats
        var factor = [Float](repeating: 0, count: k * k)
        let pl = l.pointer(as: Float.self), n = l.shape[1]
        for i in 0..<k {
            for j in 0...i { factor[i * k + j] = pl[i * n + j] }
            guard factor[i * k + i] > 0, factor[i * k + i].isFinite else {
                throw RuntimeError.corruptPath("feed-forward repair factor has a non-positive diagonal at row \(i)")
            }
        }
        // Lₖᵀ W = Zₖ by back substitution, row updates in place.
        w.withUnsafeMutableBufferPointer { pw in
            for i in stride(from: k - 1, through: 0, by: -1) {
                let inverse = 1 / factor[i * k + i]
                for c in 0..<d { pw[i * d + c] *= inverse }
                for j in 0..<i {
                    let f = factor[i * k + j]
                    if f != 0 { for c in 0..<d { pw[j * d + c] -= f * pw[i * d + c] } }
                }
            }
        }
        var bias = zip(b2.floats, offset.floats).map { $0 + $1 }
        let mu = mean.floats
        for i in 0..<k { for c in 0..<d { bias[c] -= mu[i] * w[i * d + c] } }
        return (Tensor(w, shape: [k, d]), Tensor(bias, shape: [d]))
    }
}
