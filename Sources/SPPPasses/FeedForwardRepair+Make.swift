import SPPCore
import SPPRuntime

extension FeedForwardRepair {
    /// Rank r of the stored covariance U Uᵀ + diag(e) (see `FeedForwardRepair`).
    /// Measured on all-MiniLM-L6-v2 (svd, debdesc): see `spp convert --repair-rank`.
    public static let defaultRank = 32

    /// What a pair stores for the refit (see `FeedForwardRepair`): per-neuron rows in path order, and whole tensors.
    public struct Stored {
        /// U [n, r], e [n], μ [n], in path order.
        public var lowRank: Tensor
        public var diagonal: Tensor
        public var mean: Tensor
        /// G = Uᵀ W2 [r, d] and μ W2 [d].
        public var projection: Tensor
        public var offset: Tensor
    }

    /// `w2`: [n, d] rows already in path order; `order[i]`: the original neuron of row i.
    /// `rank`: r, at most n.
    public static func make(w2: Tensor, stats: BlockStatistics.FeedForwardStats, order: [Int], ridge: Double,
                            rank: Int = defaultRank) throws -> Stored {
        let n = order.count, d = w2.shape[1], r = min(max(rank, 1), n)
        precondition(stats.covariance.rows == n && stats.mean.count == n, "statistics of \(stats.covariance.rows) neurons for \(n) units")
        var a = Matrix.zeros(n, n)
        for i in 0..<n { for j in 0..<n { a[i, j] = stats.covariance[order[i], order[j]] } }
        var trace = 0.0
        for i in 0..<n { trace += a[i, i] }
        // e ≥ λ > 0 keeps U Uᵀ + diag(e) positive definite however few calibration tokens there were.
        let lambda = max(ridge, 1e-9) * max(trace / Double(max(n, 1)), 1e-12)
        let (values, vectors) = try Linalg.symmetricEigen(a)
        // U, rounded to what is stored: G and e are made from the stored values, so the
        // load-time H = G − U_Sᵀ W2_S vanishes at S = all up to G's own rounding.
        var u = [Float](repeating: 0, count: n * r)
        for j in 0..<r {
            let root = max(values[j], 0).squareRoot()
            for i in 0..<n { u[i * r + j] = Float(vectors[i, j] * root) }
        }
        let e = (0..<n).map { i in
            let captured = (0..<r).reduce(0.0) { $0 + Double(u[i * r + $1]) * Double(u[i * r + $1]) }
            return max(a[i, i] - captured, 0) + lambda
        }
        let w = w2.floats
        var g = [Double](repeating: 0, count: r * d)
        for i in 0..<n { for j in 0..<r { let uij = Double(u[i * r + j]); for c in 0..<d { g[j * d + c] += uij * Double(w[i * d + c]) } } }
        let mu = order.map { stats.mean[$0] }
        var offset = [Double](repeating: 0, count: d)
        for i in 0..<n { for c in 0..<d { offset[c] += mu[i] * Double(w[i * d + c]) } }
        return Stored(lowRank: Tensor(u, shape: [n, r]), diagonal: Tensor(e.map { Float($0) }, shape: [n]),
                      mean: Tensor(mu.map { Float($0) }, shape: [n]),
                      projection: Tensor(g.map { Float($0) }, shape: [r, d]), offset: Tensor(offset.map { Float($0) }, shape: [d]))
    }
}
