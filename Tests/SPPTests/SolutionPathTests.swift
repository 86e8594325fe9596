import Testing
import SPPCore
import SPPGraph
import SPPKernels
@testable import SPPPasses
import SPPRuntime

/// The solution path: the hand-derived block losses and gradients against the
/// definition and finite differences, the order in which a block with known
/// important units lets them in, and determinism for a seed.
@Suite struct SolutionPathTests {
    static let hidden = 6

    /// x → spp.Attention (2 heads, ragged ranks, padding mask, causal or not) → spp.FeedForward.
    /// `voRanks` must sum to 5 (the value projection's width).
    static func tinyModel(causal: Bool = false, seed: UInt64 = 3, voRanks: [Int] = [2, 3]) -> Graph {
        var r = SeededRandom(seed)
        let d = hidden
        let (qk, vo) = ([3, 2], voRanks)
        var init_: [String: Tensor] = [:]
        for (n, s) in [("Wq", [d, 5]), ("bq", [5]), ("Wk", [d, 5]), ("bk", [5]), ("Wv", [d, 5]), ("bv", [5]), ("Wo", [5, d]), ("bo", [d]),
                       ("W1", [d, 9]), ("b1", [9]), ("W2", [9, d]), ("b2", [d])] {
            init_[n] = r.tensor(s, scale: n.hasPrefix("W") ? 0.9 : 0.3)
        }
        let names = ["Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo"]
        let attention = Node(name: "att", op: .attention, inputs: ["x"] + names + ["mask_term", ""], outputs: ["a"],
                             attributes: AttentionAttributes(heads: 2, qkRanks: qk, voRanks: vo, scale: 0.7, causal: causal).attributes)
        let ffn = Node(name: "ffn", op: .feedForward, inputs: ["a", "W1", "b1", "W2", "b2"], outputs: ["y"], attributes: ["activation": .string("gelu")])
        return Graph(inputs: [ValueInfo(name: "x", dtype: .float32, shape: [.symbol("batch"), .symbol("seq"), .fixed(d)]),
                              ValueInfo(name: "mask_term", dtype: .float32, shape: [.symbol("batch"), .fixed(1), .fixed(1), .symbol("seq")]),
                              ValueInfo(name: "attention_mask", dtype: .int64, shape: [.symbol("batch"), .symbol("seq")])],
                     outputs: [ValueInfo(name: "y", dtype: .float32, shape: nil)], initializers: init_, nodes: [attention, ffn])
    }

    /// Batches of random inputs; the last position of every other row is padding.
    static func batches(count: Int = 2, batch: Int = 3, seq: Int = 5, seed: UInt64 = 11) -> [[String: Tensor]] {
        var r = SeededRandom(seed)
        return (0..<count).map { _ in
            var valid = [Int64](repeating: 1, count: batch * seq)
            for b in stride(from: 1, to: batch, by: 2) { valid[b * seq + seq - 1] = 0 }
            let term = valid.map { $0 == 1 ? Float(0) : -10000 }
            return ["x": r.tensor([batch, seq, hidden]), "attention_mask": Tensor(valid, shape: [batch, seq]),
                    "mask_term": Tensor(term, shape: [batch, 1, 1, seq])]
        }
    }

    static func options(_ normalization: SolutionPath.Normalization = .absolute) -> SolutionPath.Options {
        var o = SolutionPath.Options()
        o.normalization = normalization
        o.iterations = 300
        o.tokensPerStep = 8
        o.threads = 1
        return o
    }

    static func problems(_ graph: Graph, _ batches: [[String: Tensor]], _ o: SolutionPath.Options) throws -> (QuadraticLoss, AttentionProblem) {
        let blocks = try SolutionPath.capture(graph: graph, batches: batches, options: o) { _, _ in }
        guard case let .attention(_, att) = blocks[0], case let .feedForward(_, ffn) = blocks[1] else {
            Issue.record("unexpected blocks")
            throw GraphError.badAttribute(node: "", op: "", attribute: "", reason: "")
        }
        return (ffn, att)
    }

    /// Mean over real tokens of ‖a − b‖² for [B, S, D] tensors.
    static func meanSquaredError(_ a: Tensor, _ b: Tensor, valid: Tensor) -> Double {
        let pa = a.buffer(as: Float.self), pb = b.buffer(as: Float.self), v = valid.integers!
        var total = 0.0, n = 0
        for t in 0..<v.count where v[t] != 0 {
            n += 1
            for j in 0..<hidden { let e = Double(pa[t * hidden + j]) - Double(pb[t * hidden + j]); total += e * e }
        }
        return total / Double(n)
    }

    static func randomMasks(_ n: Int, seed: UInt64) -> [Double] {
        var r = SeededRandom(seed)
        return (0..<n).map { _ in 0.75 + Double(r.float(0.45)) }
    }

    /// Scales columns (or rows) of a weight by masks.
    static func masked(_ t: Tensor, _ m: [Double], rows: Bool = false) -> Tensor {
        let out = t.copy()
        let p = out.pointer(as: Float.self)
        let cols = t.rank == 2 ? t.shape[1] : t.count
        for i in 0..<t.count {
            let unit = rows ? i / cols : i % cols
            p[i] *= Float(m[unit])
        }
        return out
    }

    /// max |a − b| / max |b|.
    static func relativeError(_ a: [Double], _ b: [Double]) -> Double {
        let size = max(b.map(abs).max() ?? 0, 1e-12)
        return zip(a, b).map { abs($0 - $1) }.max()! / size
    }

    static func centralDifference(_ f: ([Double]) -> Double, at m: [Double], h: Double = 1e-2) -> [Double] {
        (0..<m.count).map { i in
            var a = m, b = m
            a[i] += h
            b[i] -= h
            return (f(a) - f(b)) / (2 * h)
        }
    }

    @Test func feedForwardLossIsTheExactQuadratic() throws {
        let g = Self.tinyModel()
        let data = Self.batches()
        let (ffn, _) = try Self.problems(g, data, Self.options())
        let m = Self.randomMasks(9, seed: 5)
        // The definition: run the block with W2's rows (and W1's columns) scaled by m, against the dense block.
        var direct = 0.0
        var tokens = 0
        for batch in data {
            let a = try #require(try Program(graph: g).run(batch, retaining: ["a"])["a"])
            let w = g.initializers
            let dense = try FeedForward.naive(a, w1: w["W1"]!, b1: w["b1"]!, w2: w["W2"]!, b2: w["b2"]!, activation: .gelu)
            let pruned = try FeedForward.naive(a, w1: w["W1"]!, b1: w["b1"]!, w2: Self.masked(w["W2"]!, m, rows: true), b2: w["b2"]!, activation: .gelu)
            let valid = batch["attention_mask"]!
            let n = valid.integers!.filter { $0 != 0 }.count
            direct += Self.meanSquaredError(pruned, dense, valid: valid) * Double(n)
            tokens += n
        }
        direct /= Double(tokens)
        #expect(abs(ffn.loss(m) - direct) <= 1e-4 * direct)
        var g2 = [Double](repeating: 0, count: 9)
        ffn.addGradient(m, scale: 1, into: &g2)
        #expect(Self.relativeError(g2, Self.centralDifference(ffn.loss, at: m)) < 1e-3)
    }

    @Test(arguments: [false, true]) func attentionLossAndGradientMatchTheDefinition(causal: Bool) throws {
        let g = Self.tinyModel(causal: causal)
        let data = Self.batches()
        let (_, att) = try Self.problems(g, data, Self.options())
        #expect(att.sequences.count == 6)
        let mqk = Self.randomMasks(5, seed: 7), mvo = Self.randomMasks(5, seed: 8)
        let f = { (q: [Double], v: [Double]) in att.loss(mqk: q.map { Float($0) }, mvo: v.map { Float($0) }) }
        // The definition: Wq columns and bq scaled by the QK masks, Wv columns and bv by the VO masks.
        var direct = 0.0, tokens = 0
        let w = g.initializers
        let p = Attention.Parameters(qkRanks: [3, 2], voRanks: [2, 3], scale: 0.7, causal: causal)
        for batch in data {
            let dense = Attention.Weights(wq: w["Wq"]!, bq: w["bq"]!, wk: w["Wk"]!, bk: w["bk"]!, wv: w["Wv"]!, bv: w["bv"]!, wo: w["Wo"]!, bo: w["bo"]!)
            var pruned = dense
            (pruned.wq, pruned.bq) = (Self.masked(w["Wq"]!, mqk), Self.masked(w["bq"]!, mqk))
            (pruned.wv, pruned.bv) = (Self.masked(w["Wv"]!, mvo), Self.masked(w["bv"]!, mvo))
            let x = batch["x"]!, mask = batch["mask_term"]!
            let y0 = try Attention.naive(x, dense, mask: mask, bias: nil, p), y1 = try Attention.naive(x, pruned, mask: mask, bias: nil, p)
            let valid = batch["attention_mask"]!
            let n = valid.integers!.filter { $0 != 0 }.count
            direct += Self.meanSquaredError(y1, y0, valid: valid) * Double(n)
            tokens += n
        }
        direct /= Double(tokens)
        let loss = f(mqk, mvo)
        #expect(abs(loss - direct) <= 1e-4 * direct, "loss \(loss), definition \(direct)")
        // Hand-derived gradients against central differences, QK through the softmax.
        let (gqk, gvo) = att.gradient(mqk: mqk.map { Float($0) }, mvo: mvo.map { Float($0) })
        let fdq = Self.centralDifference({ f($0, mvo) }, at: mqk), fdv = Self.centralDifference({ f(mqk, $0) }, at: mvo)
        #expect(Self.relativeError(gqk, fdq) < 2e-2, "qk \(gqk) vs \(fdq)")
        #expect(Self.relativeError(gvo, fdv) < 2e-2, "vo \(gvo) vs \(fdv)")
        // The VO quadratic at the dense probabilities is the loss with QK masks at 1.
        let ones = [Double](repeating: 1, count: 5)
        #expect(abs(att.voQuadratic.loss(mvo) - f(ones, mvo)) <= 1e-4 * f(ones, mvo))
        // With every sequence drawn, the control-variate estimator is the exact gradient.
        var cv = [Double](repeating: 0, count: 10)
        var quad = [Double](repeating: 0, count: 5)
        att.voQuadratic.addGradient(mvo, scale: 1, into: &quad)
        let scratch = AttentionScratch()
        let scale = 1 / Double(att.tokens)
        cv.withUnsafeMutableBufferPointer { b in
            for s in att.sequences {
                att.evaluate(s, mqk: mqk.map { Float($0) }, mvo: mvo.map { Float($0) }, scratch: scratch, gqk: b.baseAddress!,
                             gvo: b.baseAddress! + 5, gradientScale: scale, controlVariate: true)
            }
        }
        let combined = Array(cv[5...]).enumerated().map { $0.element + quad[$0.offset] }
        #expect(Self.relativeError(combined, gvo) < 1e-3)
        #expect(Self.relativeError(Array(cv[..<5]), gqk) < 1e-5)
    }

    @Test func layerNormWeightsFollowTheStream() throws {
        // x → FFN → Add(x) → LayerNormalization: the FFN block's loss weighs tokens by 1/σ² and outputs by γ².
        var g = Self.tinyModel()
        g.nodes = [g.nodes[1]]
        g.nodes[0].inputs[0] = "x"
        g.nodes.append(Node(name: "add", op: .add, inputs: ["y", "x"], outputs: ["r"]))
        var r = SeededRandom(21)
        g.initializers["gamma"] = r.tensor([Self.hidden])
        g.initializers["beta"] = r.tensor([Self.hidden])
        g.nodes.append(Node(name: "ln", op: .layerNormalization, inputs: ["r", "gamma", "beta"], outputs: ["z"], attributes: ["epsilon": .float(1e-5)]))
        g.inputs.remove(at: 1)
        g.outputs = [ValueInfo(name: "z", dtype: .float32, shape: nil)]
        let data = Self.batches().map { b in b.filter { $0.key != "mask_term" } }
        let blocks = try SolutionPath.capture(graph: g, batches: data, options: Self.options(.layerNorm)) { _, _ in }
        guard case let .feedForward(_, ffn) = blocks[0] else { Issue.record("no ffn block"); return }
        let m = Self.randomMasks(9, seed: 4)
        var direct = 0.0, tokens = 0
        let w = g.initializers, gamma = w["gamma"]!.floats
        for batch in data {
            let x = batch["x"]!
            let dense = try FeedForward.naive(x, w1: w["W1"]!, b1: w["b1"]!, w2: w["W2"]!, b2: w["b2"]!, activation: .gelu)
            let pruned = try FeedForward.naive(x, w1: w["W1"]!, b1: w["b1"]!, w2: Self.masked(w["W2"]!, m, rows: true), b2: w["b2"]!, activation: .gelu)
            let v = batch["attention_mask"]!.integers!
            let (pd, pp, px) = (dense.buffer(as: Float.self), pruned.buffer(as: Float.self), x.buffer(as: Float.self))
            for t in 0..<v.count where v[t] != 0 {
                let stream = (0..<Self.hidden).map { Double(px[t * Self.hidden + $0]) + Double(pd[t * Self.hidden + $0]) }
                let mean = stream.reduce(0, +) / Double(Self.hidden)
                let variance = stream.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(Self.hidden)
                for j in 0..<Self.hidden {
                    let e = Double(pp[t * Self.hidden + j]) - Double(pd[t * Self.hidden + j])
                    direct += Double(gamma[j] * gamma[j]) * e * e / (variance + 1e-5)
                }
                tokens += 1
            }
        }
        direct /= Double(tokens)
        #expect(abs(ffn.loss(m) - direct) <= 1e-3 * direct, "loss \(ffn.loss(m)), definition \(direct)")
    }

    /// x → spp.FeedForward with F = D neurons writing to orthogonal output directions
    /// (W2 diagonal), all mostly active: the loss is separable and each neuron's
    /// importance is its output scale.
    static func separableFeedForward(scales: [Float]) -> Graph {
        let f = scales.count
        var r = SeededRandom(17)
        var w2 = [Float](repeating: 0, count: f * f)
        for i in 0..<f { w2[i * f + i] = scales[i] }
        let init_: [String: Tensor] = ["W1": r.tensor([f, f], scale: 0.5), "b1": Tensor([Float](repeating: 1.5, count: f), shape: [f]),
                                       "W2": Tensor(w2, shape: [f, f]), "b2": r.tensor([f], scale: 0.3)]
        let ffn = Node(name: "ffn", op: .feedForward, inputs: ["x", "W1", "b1", "W2", "b2"], outputs: ["y"], attributes: ["activation": .string("gelu")])
        return Graph(inputs: [ValueInfo(name: "x", dtype: .float32, shape: [.symbol("batch"), .symbol("seq"), .fixed(f)])],
                     outputs: [ValueInfo(name: "y", dtype: .float32, shape: nil)], initializers: init_, nodes: [ffn])
    }

    @Test func neuronsWithLargeOutputsEnterFirst() throws {
        // Neurons 2, 5 and 7 write 6× larger outputs than the others.
        var scales = [Float](repeating: 1, count: 10)
        for i in [2, 5, 7] { scales[i] = 6 }
        let g = Self.separableFeedForward(scales: scales)
        var r = SeededRandom(5)
        let data = (0..<3).map { _ in ["x": r.tensor([4, 6, 10])] }
        let result = try SolutionPath.run(graph: g, batches: data, options: Self.options())
        let s = try #require(result.scores.feedForward["ffn"])
        let top = Set(s.indices.sorted { s[$0] > s[$1] }.prefix(3))
        #expect(top == [2, 5, 7], "scores \(s)")
        // They entered the path, and before every other neuron.
        let entries = try #require(result.entries["ffn"])
        let first = [2, 5, 7].map { entries[$0] }
        #expect(first.allSatisfy { $0 != nil })
        let others = entries.indices.filter { ![2, 5, 7].contains($0) }.map { entries[$0] }
        #expect(others.allSatisfy { e in first.allSatisfy { f in e.map { f! < $0 } ?? true } }, "entries \(entries)")
        #expect(result.trace.last!.entered >= 3)
    }

    @Test func sameSeedSamePath() throws {
        let g = Self.tinyModel(causal: true)
        let data = Self.batches()
        var o = Self.options()
        o.iterations = 120
        o.threads = 2
        let a = try SolutionPath.compute(graph: g, batches: data, statistics: nil, options: o)
        let b = try SolutionPath.compute(graph: g, batches: data, statistics: nil, options: o)
        #expect(a.queryKey == b.queryKey && a.valueOutput == b.valueOutput && a.feedForward == b.feedForward)
        #expect(a.queryKey["att"]?.map(\.count) == [3, 2] && a.valueOutput["att"]?.map(\.count) == [2, 3])
        #expect(a.feedForward["ffn"]?.count == 9)
    }
}
