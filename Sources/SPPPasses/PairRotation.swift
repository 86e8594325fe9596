/// Exact re-parametrisation of the inner space of QK and VO pairs (papers/SPP.md,
/// "Data-aware rotation"): an invertible T per head that leaves the pair's
/// product unchanged, orders the inner directions by how much they contribute
/// on the calibration data (whitened by its second moment), and decouples them,
/// so that dropping the last directions loses as little as possible.
///
/// Bias-augmented factors: Ã = [W; b] is (d+1)×d_h, acting on x̃ = [x, 1].
public enum PairRotation {
    /// Relative ridge added to a moment matrix before its Cholesky factorisation.
    public static let defaultEpsilon = 1e-6

    /// Cholesky factor of `moment + ε·mean(diag)·I`.
    static func whitener(_ moment: Matrix, epsilon: Double) throws -> Matrix {
        var c = moment
        let n = c.rows
        let meanDiag = (0..<n).reduce(0.0) { $0 + c[$1, $1] } / Double(max(n, 1))
        for i in 0..<n { c[i, i] += epsilon * max(meanDiag, 1e-12) }
        return try Linalg.cholesky(c)
    }

    /// QK: returns T_q, T_k with (Ã_q T_q)(Ã_k T_k)ᵀ = Ã_q Ã_kᵀ and the data-weighted
    /// strength of each new direction, descending.
    public static func queryKey(aq: Matrix, ak: Matrix, moment: Matrix, epsilon: Double = defaultEpsilon) throws
        -> (tq: Matrix, tk: Matrix, strength: [Double]) {
        let l = try whitener(moment, epsilon: epsilon)
        let (_, r1) = try Linalg.qr(l.transposed * aq)
        let (_, r2) = try Linalg.qr(l.transposed * ak)
        let (u, s, vt) = try Linalg.svd(r1 * r2.transposed)
        let root = s.map { $0.squareRoot() }
        // T_q = R1⁻¹ U S^½, T_k = R2⁻¹ V S^½.
        let tq = Linalg.solveUpperTriangular(r1, scaleColumns(u, root))
        let tk = Linalg.solveUpperTriangular(r2, scaleColumns(vt.transposed, root))
        return (tq, tk, s)
    }

    /// VO: returns T, T⁻¹ with (Ã_v T)(T⁻¹ W_o) = Ã_v W_o, where W_o is this head's
    /// d_h×d block of the output projection and `moment` the second moment of
    /// the attention-mixed input m̃ = Σ_j p_ij x̃_j.
    public static func valueOutput(av: Matrix, wo: Matrix, moment: Matrix, epsilon: Double = defaultEpsilon) throws
        -> (t: Matrix, tInverse: Matrix, strength: [Double]) {
        let l = try whitener(moment, epsilon: epsilon)
        let (_, r1) = try Linalg.qr(l.transposed * av)
        let (_, r2) = try Linalg.qr(wo.transposed)
        let (u, s, _) = try Linalg.svd(r1 * r2.transposed)
        let root = s.map { $0.squareRoot() }
        // T = R1⁻¹ U S^½, T⁻¹ = S^-½ Uᵀ R1.
        let t = Linalg.solveUpperTriangular(r1, scaleColumns(u, root))
        var tInverse = u.transposed * r1
        for i in 0..<tInverse.rows {
            let f = root[i] > 0 ? 1 / root[i] : 0
            for j in 0..<tInverse.cols { tInverse[i, j] *= f }
        }
        return (t, tInverse, s)
    }

    static func scaleColumns(_ m: Matrix, _ f: [Double]) -> Matrix {
        var out = m
        for i in 0..<m.rows { for j in 0..<m.cols { out[i, j] *= f[j] } }
        return out
    }
}
