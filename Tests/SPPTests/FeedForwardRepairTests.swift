import Foundation
import Testing
import SPPCore
import SPPFormat
import SPPGraph
import SPPKernels
import SPPONNX
import SPPPasses
import SPPRuntime

/// The load-time least-squares refit of pruned FFN blocks: the Woodbury solve from
/// stored prefixes equals a dense solve of the same system, at full rank it is the
/// ridge problem solved directly, and on real activations it lowers the block's error.
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

    /// A = U Uᵀ + diag(e), dense, from the stored (float) values.
    static func dense(_ u: [Float], _ e: [Float], n: Int, r: Int) -> [[Double]] {
        (0..<n).map { i in (0..<n).map { j in
            (0..<r).reduce(i == j ? Double(e[i]) : 0) { $0 + Double(u[i * r + $1]) * Double(u[j * r + $1]) }
        } }
    }

    /// W with A_SS W = (A W2)_S for the prefix S of k rows, by a dense solve in Double.
    static func reference(_ a: [[Double]], w2: [[Double]], k: Int) -> [[Double]] {
        guard k > 0 else { return [] }
        let n = a.count, d = w2[0].count
        let ass = (0..<k).map { i in Array(a[i].prefix(k)) }
        let rhs = (0..<k).map { i in (0..<d).map { c in (0..<n).reduce(0) { $0 + a[i][$1] * w2[$1][c] } } }
        return solve(ass, rhs)
    }

    static func prefix(_ t: Tensor, _ k: Int) throws -> Tensor { try DataMovement.slice(t, starts: [0], ends: [k], axes: [0], steps: [1]) }

    /// The Woodbury refit from stored prefixes equals the dense solve on random data of odd sizes,
    /// and at S = all it is W2 itself.
    @Test(arguments: [(13, 3, 5), (9, 9, 4), (20, 1, 7)])
    func refitIsTheDenseSolveOfTheLowRankSystem(_ shape: (Int, Int, Int)) throws {
        let (n, r, d) = shape
        var rng = SplitMix64(seed: UInt64(n * 100 + r))
        let u = (0..<(n * r)).map { _ in rng.signedUnit() }
        // A small diagonal next to U Uᵀ: the system leans on the low-rank part.
        let e = (0..<n).map { _ in 0.05 + abs(rng.signedUnit()) }
        let w2 = (0..<n).map { _ in (0..<d).map { _ in Double(rng.signedUnit()) } }
        let mean = (0..<n).map { _ in rng.signedUnit() }
        let b2 = (0..<d).map { _ in rng.signedUnit() }
        var g = [Float](repeating: 0, count: r * d), offset = [Float](repeating: 0, count: d)
        for c in 0..<d {
            var sum = 0.0
            for i in 0..<n { sum += Double(mean[i]) * w2[i][c] }
            offset[c] = Float(sum)
            for a in 0..<r {
                var dot = 0.0
                for i in 0..<n { dot += Double(u[i * r + a]) * w2[i][c] }
                g[a * d + c] = Float(dot)
            }
        }
        let a = Self.dense(u, e, n: n, r: r)
        let tw2 = Tensor(w2.flatMap { row in row.map { Float($0) } }, shape: [n, d]), tu = Tensor(u, shape: [n, r])
        let te = Tensor(e, shape: [n]), tmean = Tensor(mean, shape: [n])
        for k in [0, 1, n / 2, n - 1, n] {
            let (w, b) = try FeedForwardRepair.refit(w2: try Self.prefix(tw2, k), lowRank: try Self.prefix(tu, k), diagonal: try Self.prefix(te, k),
                                                     mean: try Self.prefix(tmean, k), projection: Tensor(g, shape: [r, d]),
                                                     offset: Tensor(offset, shape: [d]), b2: Tensor(b2, shape: [d]))
            #expect(w.shape == [k, d] && b.shape == [d])
            let expected = Self.reference(a, w2: w2, k: k)
            let got = w.floats
            var size = 1e-6, error = 0.0
            for i in 0..<k {
                for c in 0..<d {
                    size = max(size, abs(expected[i][c]))
                    error = max(error, abs(Double(got[i * d + c]) - expected[i][c]))
                }
            }
            #expect(error / size < 1e-5, "k \(k): normalised error \(error / size)")
            if k == n { #expect(zip(w.floats, tw2.floats).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) }, "S = all gives W2") }
            // b2' = b2 + μ W2 − μ_S W.
            for c in 0..<d {
                var bias = Double(b2[c]) + Double(offset[c])
                for i in 0..<k { bias -= Double(mean[i]) * expected[i][c] }
                #expect(abs(Double(b.floats[c]) - bias) < 1e-4, "k \(k) b[\(c)]")
            }
        }
    }

    @Test func refitRejectsBadShapesAndDiagonals() throws {
        let (k, r, d) = (4, 2, 3)
        func t(_ shape: [Int], _ value: Float = 0.5) -> Tensor { Tensor([Float](repeating: value, count: shape.reduce(1, *)), shape: shape) }
        func refit(w2: Tensor = t([k, d]), u: Tensor = t([k, r]), e: Tensor = t([k]), mean: Tensor = t([k]), g: Tensor = t([r, d]),
                   offset: Tensor = t([d])) throws { _ = try FeedForwardRepair.refit(w2: w2, lowRank: u, diagonal: e, mean: mean, projection: g, offset: offset, b2: t([d])) }
        try refit()
        let bad: [() throws -> Void] = [
            { try refit(w2: t([k, d + 1])) }, { try refit(w2: t([k * d])) }, { try refit(u: t([k + 1, r])) }, { try refit(u: t([k])) },
            { try refit(e: t([k - 1])) }, { try refit(mean: t([k + 1])) }, { try refit(g: t([r + 1, d])) }, { try refit(g: t([r, d - 1])) },
            { try refit(offset: t([d + 2])) }, { try refit(e: t([k], 0)) }, { try refit(e: t([k], -1)) }, { try refit(e: t([k], .nan)) },
            { try refit(u: t([k, r], .infinity)) },
        ]
        for (i, call) in bad.enumerated() {
            do {
                try call()
                Issue.record("case \(i) did not throw")
            } catch RuntimeError.corruptPath {
            } catch {
                Issue.record("case \(i) threw \(error)")
            }
        }
    }

    /// What `make` stores: A ≈ U Uᵀ + diag(e) exact on the diagonal, G = Uᵀ W2 and μ W2; at r = n
    /// the refit is the exact ridge refit A_SS⁻¹ (A W2)_S with A = C + λI.
    @Test func storedCovarianceGivesTheRidgeRefit() throws {
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
        let lambda = ridge * (0..<n).reduce(0) { $0 + cov[$1, $1] } / Double(n)
        for rank in [3, n] {
            let stored = try FeedForwardRepair.make(w2: rows, stats: stats, order: order, ridge: ridge, rank: rank)
            #expect(stored.lowRank.shape == [n, rank] && stored.diagonal.shape == [n] && stored.projection.shape == [rank, d])
            let u = stored.lowRank.floats, e = stored.diagonal.floats
            let a = Self.dense(u, e, n: n, r: rank)
            for i in 0..<n {
                #expect(abs(a[i][i] - cov[order[i], order[i]] - lambda) < 1e-5, "diagonal \(i)")
                #expect(abs(Double(stored.mean.floats[i]) - mean[order[i]]) < 1e-6)
            }
            for c in 0..<d {
                for j in 0..<rank {
                    let gjc = (0..<n).reduce(0) { $0 + Double(u[$1 * rank + j]) * w2[order[$1]][c] }
                    #expect(abs(Double(stored.projection.floats[j * d + c]) - gjc) < 1e-5)
                }
                let offset = (0..<n).reduce(0) { $0 + mean[$1] * w2[$1][c] }
                #expect(abs(Double(stored.offset.floats[c]) - offset) < 1e-5)
            }
            guard rank == n else { continue }
            for k in [0, 1, 4, 9, 10] {
                let (w, b) = try FeedForwardRepair.refit(w2: try Self.prefix(rows, k), lowRank: try Self.prefix(stored.lowRank, k),
                                                         diagonal: try Self.prefix(stored.diagonal, k), mean: try Self.prefix(stored.mean, k),
                                                         projection: stored.projection, offset: stored.offset, b2: Tensor(b2, shape: [d]))
                // Reference: A_SS W = (A W2)_S with A = C + λI, in the original neuron numbering.
                let s = Array(order.prefix(k))
                let exact = s.map { i in s.map { j in cov[i, j] + (i == j ? lambda : 0) } }
                let rhs = s.map { i in (0..<d).map { c in (0..<n).reduce(0) { $0 + (cov[i, $1] + (i == $1 ? lambda : 0)) * w2[$1][c] } } }
                let expected = k == 0 ? [] : Self.solve(exact, rhs)
                let got = w.floats
                for i in 0..<k { for c in 0..<d { #expect(abs(Double(got[i * d + c]) - expected[i][c]) < 1e-4, "k \(k) W[\(i), \(c)]") } }
                for c in 0..<d {
                    var bias = Double(b2[c]) + (0..<n).reduce(0) { $0 + mean[$1] * w2[$1][c] }
                    for (i, j) in s.enumerated() { bias -= mean[j] * expected[i][c] }
                    #expect(abs(Double(b.floats[c]) - bias) < 1e-4, "k \(k) b[\(c)]")
                }
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

        // Keep 1 reads no repair data: the same bytes as a file without it.
        let plain = dir.appendingPathComponent("plain.spp").path
        let unrepaired = try PathBuilder.build(graph, scores: scores, method: "svd")
        try SPPWriter.write(SPPModel(graph: unrepaired.graph, provenance: Provenance(), pruningPath: unrepaired.path, costTable: unrepaired.costTable), to: plain)
        #expect(try PathLoader.load(SPPReader(path: file), keep: 1).bytesDecoded == PathLoader.load(SPPReader(path: plain), keep: 1).bytesDecoded)

        // A file of the older exact repair (Z and rows of L, no U, e or G) loads at keep 1 and without
        // the repair; refitting it fails naming what is missing.
        var old = built
        var retired: [String] = []
        for (p, pair) in old.path.pairs.enumerated() where pair.kind == .feedForward {
            old.path.pairs[p].tensors = pair.tensors.map { t in
                var t = t
                if t.role == FeedForwardRepair.Role.lowRank { t.role = "gram_factor" }
                if t.role == FeedForwardRepair.Role.diagonal { t.role = "w2_whitened" }
                return t
            }
            old.graph.initializers[FeedForwardRepair.projectionName(pair.node)] = nil
            retired.append(pair.node)
        }
        let oldFile = dir.appendingPathComponent("old.spp").path
        try SPPWriter.write(SPPModel(graph: old.graph, provenance: Provenance(), pruningPath: old.path, costTable: old.costTable), to: oldFile)
        _ = try PathLoader.load(SPPReader(path: oldFile), keep: 1)
        _ = try PathLoader.load(SPPReader(path: oldFile), keep: 0.5, repair: false)
        #expect(throws: RuntimeError.missingRepairData(node: retired[0], missing: [FeedForwardRepair.Role.diagonal, FeedForwardRepair.Role.lowRank,
                                                                                  FeedForwardRepair.projectionName(retired[0])],
                                                       retired: ["gram_factor", "w2_whitened"])) {
            try PathLoader.load(SPPReader(path: oldFile), keep: 0.5)
        }
    }
}
