import SPPCore
import SPPRuntime

extension FeedForwardRepair {
    /// What a pair stores for the refit (see `FeedForwardRepair`): per-neuron rows in path order, and the offset.
    public struct Stored {
        public var whitenedW2: Tensor
        public var gramFactor: Tensor
        public var mean: Tensor
        public var offset: Tensor
    }

    /// `w2`: [n, d] rows already in path order; `order[i]`: the original neuron of row i.
    public static func make(w2: Tensor, stats: BlockStatistics.FeedForwardStats, order: [Int], ridge: Double) throws -> Stored {
        let n = order.count, d = w2.shape[1]
        precondition(stats.covariance.rows == n && stats.mean.count == n, "statistics of \(stats.covariance.rows) neurons for \(n) units")
        var a = Matrix.zeros(n, n)
        for i in 0..<n { for j in 0..<n { a[i, j] = stats.covariance[order[i], order[j]] } }
        var trace = 0.0
        for i in 0..<n { trace += a[i, i] }
        // Few calibration tokens leave C singular, and its float sums may round it
        // indefinite: the ridge then grows until the factorization holds.
        let scale = max(trace / Double(max(n, 1)), 1e-12)
        var lambda = max(ridge, 1e-9) * scale
        var l: Matrix
        while true {
            var shifted = a
            for i in 0..<n { shifted[i, i] += lambda }
            do {
                l = try Linalg.cholesky(shifted)
                break
            } catch LinalgError.notPositiveDefinite(_, _) where lambda < scale {
                lambda *= 10
            }
        }
        let w = Matrix(rows: n, cols: d, data: w2.floats.map { Double($0) })
        let z = l.transposed * w
        let mu = order.map { stats.mean[$0] }
        var offset = [Double](repeating: 0, count: d)
        for i in 0..<n { for c in 0..<d { offset[c] += mu[i] * w[i, c] } }
        return Stored(whitenedW2: Tensor(z.data.map { Float($0) }, shape: [n, d]),
                      gramFactor: Tensor(l.data.map { Float($0) }, shape: [n, n]),
                      mean: Tensor(mu.map { Float($0) }, shape: [n]),
                      offset: Tensor(offset.map { Float($0) }, shape: [d]))
    }
}
