import SPPCore
import SPPFormat

/// The load-time repair of a pruned feed-forward block: W2 and b2 refit by
/// ridge least squares on calibration statistics of the hidden activations h,
/// so the kept neurons also carry what the pruned ones did.
///
/// For the kept prefix S of k neurons (path order), with C the covariance of h
/// and A = C + λI,
///     W = argmin E‖(h − μ)W2 − (h_S − μ_S)W‖² + λ‖W − W2_S‖²  =  A_SS⁻¹ (A W2)_S.
/// The file stores A as low rank plus diagonal, A ≈ U Uᵀ + diag(e) (U [n, r]: the
/// top r eigenvectors of C scaled by √eigenvalue; e = diag(C) − ‖U_i‖² + λ, so
/// the diagonal is exact), in path order, so a keep level reads prefixes: U_S
/// [k, r], e_S, μ_S, and per pair G = Uᵀ W2 [r, d]. Since (A W2)_S = A_SS W2_S + U_S H
/// with H = G − U_Sᵀ W2_S (the pruned rows' U_S̄ᵀ W2_S̄), Woodbury gives
///     W = W2_S + diag(e_S)⁻¹ U_S M⁻¹ H,   M = I_r + U_Sᵀ diag(e_S)⁻¹ U_S,
/// O(k·r·d) per block: k·r + 2k + r·d floats are read instead of the k×k block of an
/// exact factor. At S = all, H = 0 and W = W2. The bias absorbs the means:
/// b2' = b2 + μ W2 − μ_S W, with μ W2 stored whole as the pair's offset.
public enum FeedForwardRepair {
    public enum Role {
        /// Rows of U [n, r].
        public static let lowRank = "gram_lowrank"
        /// e [n].
        public static let diagonal = "gram_diagonal"
        /// μ [n].
        public static let mean = "mean"
        public static let all: Set<String> = [lowRank, diagonal, mean]
        /// Unit tensors of the exact repair files before the low-rank one (Z = Lᵀ W2 and rows of L):
        /// not readable, named when a file has them.
        public static let retired: Set<String> = ["w2_whitened", "gram_factor"]
    }

    /// Relative ridge λ / mean(diag C): keeps the refit near W2 where the data says little.
    public static let defaultRidge = 1e-2

    /// The whole-tensor name of the offset μ W2 of FFN node `node`.
    public static func offsetName(_ node: String) -> String { "\(node)/ffn/w2_offset" }

    /// The whole-tensor name of G = Uᵀ W2 [r, d] of FFN node `node`.
    public static func projectionName(_ node: String) -> String { "\(node)/ffn/w2_lowrank" }

    /// Whole tensors of the repair data of `node`, read only when refitting.
    public static func wholeNames(_ node: String) -> [String] { [offsetName(node), projectionName(node)] }

    /// W [k, d] and b2' [d] from the kept prefixes: W2 rows [k, d], U rows [k, r],
    /// e [k], μ [k]; whole G [r, d], offset and b2 [d]. Solved in Double.
    public static func refit(w2: Tensor, lowRank u: Tensor, diagonal e: Tensor, mean: Tensor, projection g: Tensor,
                             offset: Tensor, b2: Tensor) throws -> (w2: Tensor, b2: Tensor) {
        let d = b2.count, k = w2.shape.first ?? 0, r = u.rank == 2 ? u.shape[1] : -1
        let shapesFit = w2.rank == 2 && w2.shape[1] == d && u.rank == 2 && u.shape[0] == k && e.count == k && mean.count == k
            && g.rank == 2 && g.shape == [r, d] && offset.count == d
        guard shapesFit, [w2, u, e, mean, g, offset, b2].allSatisfy({ $0.dtype == .float32 }) else {
            throw RuntimeError.corruptPath("feed-forward repair data W2 \(w2.shape), U \(u.shape), e \(e.shape), μ \(mean.shape), G \(g.shape), "
                + "offset \(offset.shape) do not fit b2 \(b2.shape)")
        }
        let pw = w2.pointer(as: Float.self), pu = u.pointer(as: Float.self), pg = g.pointer(as: Float.self)
        var inverseE = [Double](repeating: 0, count: k)
        for (i, v) in e.floats.enumerated() {
            // e ≥ λ > 0 as made; anything else would make M indefinite or divide by zero.
            guard v > 0, v.isFinite else { throw RuntimeError.corruptPath("feed-forward repair diagonal is \(v) at neuron \(i)") }
            inverseE[i] = 1 / Double(v)
        }
        // Unsafe buffers: these loops are the whole cost (~2·k·r·d multiply-adds), and bounds checks stop them vectorizing.
        let h = UnsafeMutableBufferPointer<Double>.allocate(capacity: r * d)
        let m = UnsafeMutableBufferPointer<Double>.allocate(capacity: r * r)
        let row = UnsafeMutableBufferPointer<Double>.allocate(capacity: d)
        defer { h.deallocate(); m.deallocate(); row.deallocate() }
        // H = G − U_Sᵀ W2_S [r, d] and M = I + U_Sᵀ diag(e_S)⁻¹ U_S [r, r] (lower half), a row of the prefix at a time.
        for j in 0..<(r * d) { h[j] = Double(pg[j]) }
        _ = m.initialize(repeating: 0)
        for a in 0..<r { m[a * r + a] = 1 }
        for i in 0..<k {
            for c in 0..<d { row[c] = Double(pw[i * d + c]) }
            for a in 0..<r {
                let ua = Double(pu[i * r + a])
                for c in 0..<d { h[a * d + c] -= ua * row[c] }
                let scaled = ua * inverseE[i]
                for b in 0...a { m[a * r + b] += scaled * Double(pu[i * r + b]) }
            }
        }
        // M = L Lᵀ in place; then X = M⁻¹ H by two triangular solves, in place in h.
        for j in 0..<r {
            var s = m[j * r + j]
            for p in 0..<j { s -= m[j * r + p] * m[j * r + p] }
            // M ⪰ I in exact arithmetic, so every pivot is ≥ 1: one below that means non-finite input.
            guard s >= 0.5, s.isFinite else { throw RuntimeError.corruptPath("feed-forward repair system is not positive definite at \(j) of \(r)") }
            let pivot = s.squareRoot()
            m[j * r + j] = pivot
            for i in (j + 1)..<r {
                var t = m[i * r + j]
                for p in 0..<j { t -= m[i * r + p] * m[j * r + p] }
                m[i * r + j] = t / pivot
            }
        }
        for a in 0..<r {
            for p in 0..<a { let l = m[a * r + p]; for c in 0..<d { h[a * d + c] -= l * h[p * d + c] } }
            let inv = 1 / m[a * r + a]
            for c in 0..<d { h[a * d + c] *= inv }
        }
        for a in stride(from: r - 1, through: 0, by: -1) {
            for p in (a + 1)..<r { let l = m[p * r + a]; for c in 0..<d { h[a * d + c] -= l * h[p * d + c] } }
            let inv = 1 / m[a * r + a]
            for c in 0..<d { h[a * d + c] *= inv }
        }
        // W = W2_S + diag(e_S)⁻¹ U_S X; b2' = b2 + offset − μ_S W.
        var w = [Float](repeating: 0, count: k * d)
        var bias = zip(b2.floats, offset.floats).map { Double($0) + Double($1) }
        let mu = mean.floats
        w.withUnsafeMutableBufferPointer { w in
            bias.withUnsafeMutableBufferPointer { bias in
                for i in 0..<k {
                    for c in 0..<d { row[c] = 0 }
                    for a in 0..<r {
                        let ua = Double(pu[i * r + a])
                        for c in 0..<d { row[c] += ua * h[a * d + c] }
                    }
                    let muI = Double(mu[i]), scale = inverseE[i]
                    for c in 0..<d {
                        let v = Double(pw[i * d + c]) + scale * row[c]
                        w[i * d + c] = Float(v)
                        bias[c] -= muI * v
                    }
                }
            }
        }
        return (Tensor(w, shape: [k, d]), Tensor(bias.map { Float($0) }, shape: [d]))
    }
}
