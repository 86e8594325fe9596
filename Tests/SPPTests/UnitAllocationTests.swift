import Testing
import SPPCore
import SPPGraph
import SPPKernels
@testable import SPPPasses
import SPPRuntime

/// The svd ranking's single-removal losses and the end-to-end group allocation,
/// against the definitions they shortcut.
@Suite struct UnitAllocationTests {
    typealias Tiny = SolutionPathTests

    /// The definition: the whole block's loss with one QK mask at 0 (every head evaluated).
    static func removalByDefinition(_ att: AttentionProblem) -> [Double] {
        (0..<att.qkWidth).map { c in
            var mqk = [Float](repeating: 1, count: att.qkWidth)
            mqk[c] = 0
            return att.loss(mqk: mqk, mvo: [Float](repeating: 1, count: att.voWidth))
        }
    }

    @Test(arguments: [false, true]) func queryKeyRemovalIsTheLossWithThatMaskAtZero(causal: Bool) throws {
        let g = Tiny.tinyModel(causal: causal)
        let (_, att) = try Tiny.problems(g, Tiny.batches(), Tiny.options(.layerNorm))
        let fast = att.queryKeyRemovalLosses(threads: 2), direct = Self.removalByDefinition(att)
        #expect(direct.allSatisfy { $0 > 0 })
        #expect(fast.count == direct.count)
        for (a, b) in zip(fast, direct) { #expect(abs(a - b) <= 1e-4 * b, "\(fast) vs \(direct)") }
    }

    /// A head without value directions: its QK directions change nothing, and score 0.
    @Test func queryKeyRemovalInAHeadWithoutValues() throws {
        let g = Tiny.tinyModel(voRanks: [5, 0])
        let (_, att) = try Tiny.problems(g, Tiny.batches(), Tiny.options(.layerNorm))
        let fast = att.queryKeyRemovalLosses(threads: 2), direct = Self.removalByDefinition(att)
        #expect(fast.count == 5)
        #expect(Array(fast[3...]) == [0, 0] && Array(direct[3...]) == [0, 0])
        for c in 0..<3 { #expect(direct[c] > 0 && abs(fast[c] - direct[c]) <= 1e-4 * direct[c], "\(fast) vs \(direct)") }
    }

    /// Each unit's score is the block's loss with that unit's mask alone at 0, split by head.
    @Test func singleRemovalScoresAreTheLossesOfRemovingOneUnit() throws {
        let g = Tiny.tinyModel()
        let prepared = try SolutionPath.prepare(graph: g, batches: Tiny.batches(), options: Tiny.options())
        let scores = prepared.singleRemovalScores(threads: 2)
        let (ffn, att) = try Tiny.problems(g, Tiny.batches(), Tiny.options())
        func removingEach(_ loss: QuadraticLoss) -> [Double] {
            (0..<loss.size).map { c in
                var m = [Double](repeating: 1, count: loss.size)
                m[c] = 0
                return loss.loss(m)
            }
        }
        func close(_ a: [Double], _ b: [Double], _ what: String) {
            #expect(a.count == b.count && b.allSatisfy { $0 > 0 }, "\(what): \(a) vs \(b)")
            for (x, y) in zip(a, b) { #expect(abs(x - y) <= 1e-4 * y, "\(what): \(a) vs \(b)") }
        }
        close(try #require(scores.feedForward["ffn"]), removingEach(ffn), "FFN")
        close(try #require(scores.valueOutput["att"]).flatMap { $0 }, removingEach(att.voQuadratic), "VO")
        let queryKey = try #require(scores.queryKey["att"])
        #expect(queryKey.map(\.count) == [3, 2])
        close(queryKey.flatMap { $0 }, Self.removalByDefinition(att), "QK")
    }

    /// The refit against least squares solved another way: W minimising
    /// Σ_t ‖(h_t − μ) W2 − (h_S,t − μ_S) W‖² + λ‖W − W2_S‖² by gradient descent to convergence.
    @Test func feedForwardRefitIsTheRidgeSolution() throws {
        var r = SeededRandom(21)
        let (f, d, tokens) = (6, 3, 40)
        let h = (0..<tokens).map { _ in (0..<f).map { _ in Double(r.float(1)) } }
        let mean = (0..<f).map { j in h.reduce(0) { $0 + $1[j] } / Double(tokens) }
        var cov = Matrix.zeros(f, f)
        for row in h { for i in 0..<f { for j in 0..<f { cov[i, j] += (row[i] - mean[i]) * (row[j] - mean[j]) / Double(tokens) } } }
        let stats = BlockStatistics.FeedForwardStats(mean: mean, covariance: cov)
        let w2 = (0..<(f * d)).map { _ in r.float(1) }, b2 = (0..<d).map { _ in r.float(1) }
        let kept = [4, 0, 2], ridge = 0.05
        let (w, b) = try GroupAllocation.refit(w2: w2, b2: b2, f: f, d: d, kept: kept, stats: stats, ridge: ridge)
        var trace = 0.0
        for j in 0..<f { trace += cov[j, j] }
        let lambda = ridge * trace / Double(f)
        var x = kept.map { i in (0..<d).map { Double(w2[i * d + $0]) } }
        for _ in 0..<20000 {
            var grad = [[Double]](repeating: [Double](repeating: 0, count: d), count: kept.count)
            for (a, i) in kept.enumerated() {
                for c in 0..<d {
                    var s = 0.0
                    for (b, j) in kept.enumerated() { s += cov[i, j] * x[b][c] }
                    for j in 0..<f { s -= cov[i, j] * Double(w2[j * d + c]) }
                    grad[a][c] = 2 * (s + lambda * (x[a][c] - Double(w2[i * d + c])))
                }
            }
            for a in kept.indices { for c in 0..<d { x[a][c] -= 0.2 * grad[a][c] } }
        }
        for (a, i) in kept.enumerated() {
            for c in 0..<d { #expect(abs(Double(w[i * d + c]) - x[a][c]) < 1e-4) }
        }
        // Rows outside the kept set are untouched (the caller zeroes them), and the bias absorbs the means.
        #expect(w[1 * d] == w2[1 * d])
        for c in 0..<d {
            var want = Double(b2[c])
            for j in 0..<f { want += mean[j] * Double(w2[j * d + c]) }
            for (a, i) in kept.enumerated() { want -= mean[i] * x[a][c] }
            #expect(abs(Double(b[c]) - want) < 1e-4)
        }
    }

    @Test func allocationKeepsEachGroupsOrderAndPoolsByOutputError() throws {
        let g = Tiny.tinyModel()
        let data = Tiny.batches()
        let prepared = try SolutionPath.prepare(graph: g, batches: data, options: Tiny.options())
        let scores = prepared.singleRemovalScores(threads: 1)
        var o = GroupAllocation.Options()
        o.fractions = [0.5, 1.0]
        let pooled = try GroupAllocation.apply(scores, graph: g, batches: data, repair: [:], ridge: 0, options: o)
        func sameOrder(_ a: [Double], _ b: [Double]) -> Bool {
            a.indices.sorted { (a[$0], $0) < (a[$1], $1) } == b.indices.sorted { (b[$0], $0) < (b[$1], $1) }
        }
        #expect(sameOrder(try #require(pooled.feedForward["ffn"]), scores.feedForward["ffn"]!))
        #expect(sameOrder(try #require(pooled.queryKey["att"]).flatMap { $0 }, scores.queryKey["att"]!.flatMap { $0 }))
        #expect(sameOrder(try #require(pooled.valueOutput["att"]).flatMap { $0 }, scores.valueOutput["att"]!.flatMap { $0 }))
        // The strongest FFN neuron's score is the slope of the FFN curve's last segment:
        // (error with all 9 removed − error with the weakest 5 removed) / 4, measured here directly.
        let order = scores.feedForward["ffn"]!.indices.sorted { (scores.feedForward["ffn"]![$0], $0) < (scores.feedForward["ffn"]![$1], $1) }
        func outputError(removing rows: [Int]) throws -> Double {
            var pruned = g
            let w2 = g.initializers["W2"]!
            var v = w2.floats
            for j in rows { for c in 0..<Tiny.hidden { v[j * Tiny.hidden + c] = 0 } }
            pruned.initializers["W2"] = Tensor(v, shape: w2.shape)
            var total = 0.0
            for batch in data {
                let a = try Program(graph: g).run(batch)["y"]!, b = try Program(graph: pruned).run(batch)["y"]!
                let valid = batch["attention_mask"]!
                total += Tiny.meanSquaredError(b, a, valid: valid) * Double(valid.integers!.filter { $0 != 0 }.count)
            }
            return total
        }
        // Each unit's score is the slope of its group's curve where it is removed: the weakest
        // 5 of 9 neurons (fraction 0.5) the first segment's, the other 4 the last one's (at least as large).
        let half = try outputError(removing: Array(order.prefix(5))), all = try outputError(removing: order)
        let first = half / 5, last = max((all - half) / 4, first)
        for (i, unit) in order.enumerated() {
            let want = i < 5 ? first : last, got = pooled.feedForward["ffn"]![unit]
            #expect(abs(got - want) <= 1e-3 * want, "neuron \(unit) (\(i)th removed): \(got) vs \(want)")
        }
    }
}
