import Foundation
import Testing
import SPPCore
import SPPFormat
import SPPGraph
import SPPKernels
import SPPONNX
import SPPPasses
import SPPRuntime

/// The load-time least-squares refit of pruned FFN blocks: the prefix solve from
/// stored rows equals the ridge problem solved directly, and on real activations
/// it lowers the block's error.
@Suite struct FeedForwardRepairTests {
    /// x with A x = b by Gaussian elimination with partial pivoting (the independent reference).
    static func solve(_ a: [[Double]], _ b: [[Double]]) -> [[Double]] {
        var a = a, b = b
        let n = a.count
        for c in 0..<n {
            let p = (c..<n).max { abs(a[$0][c]) < abs(a[$1][c]) }!
            a.swapAt(c, p)
            b.swapAt(c, p)
            for r in (c + 1)..<n where r < n {
                let f = a[r][c] / a[c][c]
                for j in c..<n { a[r][j] -= f * a[c][j] }
                for j in 0..<b[r].count { b[r][j] -= f * b[c][j] }
            }
        }
        var x = b
        for r in stride(from: n - 1, through: 0, by: -1) {
            for j in 0..<b[r].count {
                var s = b[r][j]
                for c in (r + 1)..<n where c < n { s -= a[r][c] * x[c][j] }
                x[r][j] = s / a[r][r]
            }
        }
        return x
    }

    @Test func prefixSolveIsTheRidgeRefit() throws {
        var rng = SplitMix64(seed: 7)
        let (n, d, samples, ridge) = (10, 4, 40, 0.05)
        // Correlated activations: a shared component plus noise.
        let h: [[Double]] = (0..<samples).map { _ in
            let shared = Double(rng.signedUnit())
            return (0..<n).map { j in shared * Double(j % 3) + Double(rng.signedUnit()) + 0.5 }
        }
        let mean = (0..<n).map { j in h.reduce(0) { $0 + $1[j] } / Double(samples) }
        var cov = Matrix.zeros(n, n)
        for row in h { for i in 0..<n { for j in 0..<n { cov[i, j] += (row[i] - mean[i]) * (row[j] - mean[j]) / Double(samples) } } }
        let stats = BlockStatistics.FeedForwardStats(meanAbs: [], meanSquare: [], mean: mean, covariance: cov)
        let w2: [[Double]] = (0..<n).map { _ in (0..<d).map { _ in Double(rng.signedUnit()) } }
        let b2 = (0..<d).map { _ in Float(Double(rng.signedUnit())) }
        let order = [3, 7, 0, 9, 1, 5, 2, 8, 6, 4]
        let rows = Tensor(order.flatMap { w2[$0].map { Float($0) } }, shape: [n, d])
        let stored = try FeedForwardRepair.make(w2: rows, stats: stats, order: order, ridge: ridge)
        let lambda = ridge * (0..<n).reduce(0) { $0 + cov[$1, $1] } / Double(n)
        func prefix(_ t: Tensor, _ k: Int) throws -> Tensor { try DataMovement.slice(t, starts: [0], ends: [k], axes: [0], steps: [1]) }
        for k in [0, 1, 4, 9, 10] {
            let (w, b) = try FeedForwardRepair.refit(whitenedW2: try prefix(stored.whitenedW2, k), gramFactor: try prefix(stored.gramFactor, k),
                                                     mean: try prefix(stored.mean, k), offset: stored.offset, b2: Tensor(b2, shape: [d]))
            // Reference: A_SS W = (A W2)_S with A = C + λI, in the original neuron numbering.
            let s = Array(order.prefix(k))
            let a = s.map { i in s.map { j in cov[i, j] + (i == j ? lambda : 0) } }
            let rhs = s.map { i in (0..<d).map { c in (0..<n).reduce(0) { $0 + (cov[i, $1] + (i == $1 ? lambda : 0)) * w2[$1][c] } } }
            let expected = k == 0 ? [] : Self.solve(a, rhs)
            let got = w.floats
            for i in 0..<k { for c in 0..<d { #expect(abs(Double(got[i * d + c]) - expected[i][c]) < 1e-4, "k \(k) W[\(i), \(c)]") } }
            if k == n { for i in 0..<k { for c in 0..<d { #expect(abs(Double(got[i * d + c]) - w2[order[i]][c]) < 1e-4) } } }
            // b2' = b2 + μ W2 − μ_S W.
            for c in 0..<d {
                var bias = Double(b2[c]) + (0..<n).reduce(0) { $0 + mean[$1] * w2[$1][c] }
                for (i, j) in s.enumerated() { bias -= mean[j] * expected[i][c] }
                #expect(abs(Double(b.floats[c]) - bias) < 1e-4, "k \(k) b[\(c)]")
            }
        }
    }

    /// Through the file: keep 1 is still the dense model, and at keep 0.5 the refit
    /// lowers every FFN block's error on the dense activations it was fit to (the
    /// truncated W2 is a candidate of the same least-squares problem).
    @Test func refitLowersTheBlockErrorOnBertTiny() throws {
        let fixture = TestPaths.fixtures.appendingPathComponent("bert_tiny")
        var graph = try ONNXImporter.load(path: fixture.appendingPathComponent("model.onnx").path).graph
        _ = try PassPipeline.run(&graph, verify: true)
        var inputs: [String: Tensor] = [:]
        for (k, name) in ["input_ids", "attention_mask", "token_type_ids"].enumerated() {
            inputs[name] = try Npy.read(path: fixture.appendingPathComponent("input_\(k).npy").path)
        }
        let stats = try BlockStatistics.collect(graph: graph, batches: [inputs], validity: nil)
        let strengths = try RotateAttention.apply(&graph, statistics: stats)
        let scores = try UnitScoring.whitened(graph, strengths: strengths, statistics: stats)
        let built = try PathBuilder.build(graph, scores: scores, method: "svd", repair: stats.feedForward, ridge: 1e-4)
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.spp").path
        try SPPWriter.write(SPPModel(graph: built.graph, provenance: Provenance(), pruningPath: built.path, costTable: built.costTable), to: file)

        let expected = try Npy.read(path: fixture.appendingPathComponent("output_0.npy").path)
        let (ok, c) = Comparison.compare(try Model(path: file, keep: 1).run(inputs)["last_hidden_state"]!, expected, atol: 1e-4, rtol: 1e-4)
        #expect(ok, "\(c)")

        let ffn = graph.nodes.filter { $0.op == .feedForward }
        let dense = try Model(graph: graph).program.run(inputs, retaining: Set(ffn.map { $0.inputs[0] } + ffn.map { $0.outputs[0] }))
        let repaired = try PathLoader.load(SPPReader(path: file), keep: 0.5, repair: true).graph
        let truncated = try PathLoader.load(SPPReader(path: file), keep: 0.5, repair: false).graph
        for node in ffn {
            let x = dense[node.inputs[0]]!, y = dense[node.outputs[0]]!
            func error(_ g: Graph) throws -> Double {
                let w = node.inputs.map { g.initializers[$0] }
                let out = try FeedForward.naive(x, w1: w[1]!, b1: w[2]!, w2: w[3]!, b2: w[4]!, activation: .gelu)
                var sum = 0.0
                for (a, b) in zip(out.floats, y.floats) { sum += Double(a - b) * Double(a - b) }
                return sum
            }
            let (with, without) = (try error(repaired), try error(truncated))
            #expect(repaired.initializers[node.inputs[3]]!.shape[0] < graph.initializers[node.inputs[3]]!.shape[0])
            #expect(with < without, "\(node.name): squared error \(with) with the refit, \(without) without")
        }
    }
}
