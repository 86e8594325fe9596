import Foundation
import SPPCore
import SPPGraph
import SPPKernels

/// What the matrix products of a run cost on their own: each product of
/// `FlopCount.products` timed with the float32 GEMM the runtime calls
/// (`Linear.sgemm`, oneDNN) on contiguous random operands, times its count,
/// summed. A model cannot run faster than this with that GEMM; `spp bench
/// --gemm-bound` reports the bound over the measured median (1.0 = nothing but GEMMs).
public enum GEMMBound {
    /// Milliseconds of one run's products on `threads` threads: each product
    /// repeated for ≥ 20 ms, the fastest of three such rounds.
    public static func milliseconds(_ products: [FlopCount.Product: Int], threads: Int) -> Double {
        Linear.setThreads(threads)
        var total = 0.0
        var random = SplitMix64(seed: 1)
        for (p, count) in products {
            let a = (0..<(p.m * p.k)).map { _ in Float.random(in: -1..<1, using: &random) }
            let b = (0..<(p.k * p.n)).map { _ in Float.random(in: -1..<1, using: &random) }
            var c = [Float](repeating: 0, count: p.m * p.n)
            func once() {
                Linear.sgemm(transA: false, transB: false, m: p.m, n: p.n, k: p.k, alpha: 1, a: a, lda: p.k, b: b, ldb: p.n,
                             beta: 0, c: &c, ldc: p.n)
            }
            once()
            let start = Date()
            once()
            let reps = max(1, Int(0.02 / max(Date().timeIntervalSince(start), 1e-7)))
            var best = Double.infinity
            for _ in 0..<3 {
                let t = Date()
                for _ in 0..<reps { once() }
                best = min(best, Date().timeIntervalSince(t) / Double(reps))
            }
            total += best * Double(count)
        }
        return total * 1000
    }
}
