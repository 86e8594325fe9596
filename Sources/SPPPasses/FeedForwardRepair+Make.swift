import SPPCore
import SPPRuntime

extension FeedForwardRepair {
    /// What a pair stores for the refit (see `FeedForwardRepair`), per neuron in path order.
    public struct Stored {
        /// Z = M̃⁻ᵀ W2 [n, d].
        public var whitenedW2: Tensor
        /// The strictly lower triangle of M = L⁻¹ as int8 [n, n] (zero on and above the
        /// diagonal), with a scale per row [n, 1]: M̃ = values × scales + diag(diagonal).
        public var inverseFactor: Tensor
        public var inverseScales: Tensor
        /// M's diagonal [n], float32 (the largest entry of each row: kept out of the int8 scale).
        public var inverseDiagonal: Tensor
        /// μ [n], and the whole offset μ W2 [d].
        public var mean: Tensor
        public var offset: Tensor
    }

    /// `body(λ)` with λ = `ridge` × mean(diag C), the absolute ridge of the refit. Few
    /// calibration tokens leave C singular, and its float sums may round it indefinite:
    /// λ then grows tenfold while `body` finds its matrix not positive definite.
    static func withRidge<T>(_ ridge: Double, covariance c: Matrix, _ body: (Double) throws -> T) throws -> T {
        var trace = 0.0
        for i in 0..<c.rows { trace += c[i, i] }
        let scale = max(trace / Double(max(c.rows, 1)), 1e-12)
        var lambda = max(ridge, 1e-9) * scale
        while true {
            do {
                return try body(lambda)
            } catch LinalgError.notPositiveDefinite(_, _) where lambda < scale {
                lambda *= 10
            }
        }
    }

    /// `w2`: [n, d] rows already in path order; `order[i]`: the original neuron of row i.
    public static func make(w2: Tensor, stats: BlockStatistics.FeedForwardStats, order: [Int], ridge: Double) throws -> Stored {
        let n = order.count, d = w2.shape[1]
        precondition(stats.covariance.rows == n && stats.mean.count == n, "statistics of \(stats.covariance.rows) neurons for \(n) units")
        var a = Matrix.zeros(n, n)
        for i in 0..<n { for j in 0..<n { a[i, j] = stats.covariance[order[i], order[j]] } }
        let l = try withRidge(ridge, covariance: stats.covariance) { lambda in
            var shifted = a
            for i in 0..<n { shifted[i, i] += lambda }
            return try Linalg.cholesky(shifted)
        }
        // M = L⁻¹ = (L⁻ᵀ)ᵀ, lower triangular.
        let inverse = Linalg.solveUpperTriangular(l.transposed, Matrix.identity(n)).transposed
        // int8 per row below the diagonal; M̃ is what the loader will expand (float q × scale),
        // and Z is made from M̃, so M̃ᵀ Z = W2 at S = all whatever the rounding.
        var values = [Int8](repeating: 0, count: n * n), scales = [Float](repeating: 1, count: n)
        var diagonal = [Float](repeating: 0, count: n)
        var stored = Matrix.zeros(n, n)
        for i in 0..<n {
            var largest = 0.0
            for j in 0..<i { largest = max(largest, abs(inverse[i, j])) }
            if largest > 0 { scales[i] = Float(largest / 127) }
            for j in 0..<i {
                let q = Int8(max(-127, min(127, (inverse[i, j] / Double(scales[i])).rounded())))
                values[i * n + j] = q
                stored[i, j] = Double(Float(q) * scales[i])
            }
            diagonal[i] = Float(inverse[i, i])
            stored[i, i] = Double(diagonal[i])
        }
        let w = Matrix(rows: n, cols: d, data: w2.floats.map { Double($0) })
        let z = Linalg.solveUpperTriangular(stored.transposed, w)
        let mu = order.map { stats.mean[$0] }
        var offset = [Double](repeating: 0, count: d)
        for i in 0..<n { for c in 0..<d { offset[c] += mu[i] * w[i, c] } }
        let factor = Tensor(dtype: .int8, shape: [n, n])
        values.withUnsafeBytes { factor.rawPointer.copyMemory(from: $0.baseAddress!, byteCount: n * n) }
        return Stored(whitenedW2: Tensor(z.data.map { Float($0) }, shape: [n, d]),
                      inverseFactor: factor, inverseScales: Tensor(scales, shape: [n, 1]),
                      inverseDiagonal: Tensor(diagonal, shape: [n]),
                      mean: Tensor(mu.map { Float($0) }, shape: [n]),
                      offset: Tensor(offset.map { Float($0) }, shape: [d]))
    }
}
