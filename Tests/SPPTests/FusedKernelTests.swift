import CKernels
import Foundation
import Testing
import SPPCore
import SPPGraph
@testable import SPPKernels
import SPPRuntime

/// A small deterministic generator (SplitMix64), so failures reproduce.
struct SeededRandom {
    var generator: SplitMix64
    init(_ seed: UInt64) { generator = SplitMix64(seed: seed) }

    mutating func next() -> UInt64 { generator.next() }

    /// Uniform in [lo, hi].
    mutating func int(_ lo: Int, _ hi: Int) -> Int { lo + Int(next() % UInt64(hi - lo + 1)) }

    /// Uniform in [-scale, scale).
    mutating func float(_ scale: Float = 1) -> Float { generator.signedUnit() * scale }

    mutating func tensor(_ shape: [Int], scale: Float = 1) -> Tensor {
        Tensor((0..<shape.reduce(1, *)).map { _ in float(scale) }, shape: shape)
    }
}

/// max |a − b| / max(max |b|, 1e-6): the error of a fast kernel relative to the size of the reference.
func normalisedError(_ a: Tensor, _ b: Tensor) -> Double {
    let x = a.buffer(as: Float.self), y = b.buffer(as: Float.self)
    var diff = 0.0, size = 1e-6
    for i in 0..<y.count {
        diff = max(diff, abs(Double(x[i]) - Double(y[i])))
        size = max(size, abs(Double(y[i])))
    }
    return diff / size
}

@Suite struct FusedKernelTests {
    struct AttentionCase: CustomStringConvertible {
        var batch: Int, seq: Int, hidden: Int
        var qk: [Int], vo: [Int]
        var causal: Bool
        /// Shapes of the mask and bias, nil when absent.
        var mask: [Int]?, bias: [Int]?
        var description: String {
            "B\(batch) S\(seq) D\(hidden) qk\(qk) vo\(vo)\(causal ? " causal" : "") mask \(mask.map(Tensor.describe) ?? "-") bias \(bias.map(Tensor.describe) ?? "-")"
        }
    }

    /// Random ragged cases: odd sizes, zero ranks, every mask/bias form the kernel broadcasts.
    static let attentionCases: [AttentionCase] = {
        var r = SeededRandom(7)
        var cases: [AttentionCase] = []
        for k in 0..<24 {
            let (b, s, d, h) = (r.int(1, 3), [1, 2, 5, 7, 13, 16][k % 6], [3, 8, 17, 33][k % 4], r.int(1, 5))
            let qk = (0..<h).map { _ in r.int(0, 7) }, vo = (0..<h).map { _ in r.int(0, 6) }
            let masks: [[Int]?] = [nil, [b, 1, 1, s], [b, 1, s, s], [s, s], [b, h, s, s], [1, s]]
            let biases: [[Int]?] = [nil, [1, h, s, s], [h, s, s], [b, h, 1, s]]
            cases.append(AttentionCase(batch: b, seq: s, hidden: d, qk: qk, vo: vo, causal: k % 3 == 1,
                                       mask: masks[k % masks.count], bias: biases[(k / 2) % biases.count]))
        }
        // Edge cases: every vo rank 0, every qk rank 0, one head, a single token.
        cases.append(AttentionCase(batch: 2, seq: 5, hidden: 7, qk: [3, 2], vo: [0, 0], causal: false, mask: [2, 1, 1, 5], bias: nil))
        cases.append(AttentionCase(batch: 2, seq: 6, hidden: 7, qk: [0, 0, 0], vo: [2, 1, 3], causal: true, mask: nil, bias: [1, 3, 6, 6]))
        cases.append(AttentionCase(batch: 1, seq: 9, hidden: 12, qk: [12], vo: [12], causal: false, mask: nil, bias: nil))
        cases.append(AttentionCase(batch: 3, seq: 1, hidden: 5, qk: [2, 3], vo: [1, 0], causal: true, mask: [3, 1, 1, 1], bias: nil))
        return cases
    }()

    static func attentionInputs(_ c: AttentionCase, seed: UInt64) -> (Tensor, Attention.Weights, Tensor?, Tensor?, Attention.Parameters) {
        var r = SeededRandom(seed)
        let (qw, vw) = (c.qk.reduce(0, +), c.vo.reduce(0, +))
        let x = r.tensor([c.batch, c.seq, c.hidden])
        let w = Attention.Weights(wq: r.tensor([c.hidden, qw], scale: 0.5), bq: r.tensor([qw], scale: 0.2),
                                  wk: r.tensor([c.hidden, qw], scale: 0.5), bk: r.tensor([qw], scale: 0.2),
                                  wv: r.tensor([c.hidden, vw]), bv: r.tensor([vw], scale: 0.2),
                                  wo: r.tensor([vw, c.hidden]), bo: r.tensor([c.hidden]))
        // Masks as exported: 0 where allowed, the float32 minimum where not (never a whole row).
        let mask = c.mask.map { shape -> Tensor in
            let t = r.tensor(shape)
            let p = t.pointer(as: Float.self)
            for i in 0..<t.count { p[i] = (i % shape.last! == 0 || r.int(0, 3) > 0) ? 0 : -Float.greatestFiniteMagnitude }
            return t
        }
        let bias = c.bias.map { r.tensor($0, scale: 2) }
        let p = Attention.Parameters(qkRanks: c.qk, voRanks: c.vo, scale: 1 / Float(max(c.qk.max() ?? 1, 1)).squareRoot(), causal: c.causal)
        return (x, w, mask, bias, p)
    }

    @Test(arguments: Self.attentionCases.indices)
    func attentionMatchesNaive(_ k: Int) throws {
        let c = Self.attentionCases[k]
        let (x, w, mask, bias, p) = Self.attentionInputs(c, seed: UInt64(100 + k))
        let fast = try Attention.run(x, w, mask: mask, bias: bias, p)
        let naive = try Attention.naive(x, w, mask: mask, bias: bias, p)
        #expect(fast.shape == x.shape)
        let e = normalisedError(fast, naive)
        #expect(e < 1e-5, "\(c): normalised error \(e)")
    }

    /// The two ways `Attention.attend` splits work over 2 threads, ~1M multiply-adds a head:
    /// 3 active heads (threads take whole heads) and 1 (a head's products split their rows).
    static let attentionSplits = [
        (AttentionCase(batch: 2, seq: 128, hidden: 48, qk: [32, 16, 32, 8], vo: [16, 32, 0, 24], causal: true, mask: [2, 1, 1, 128], bias: nil), UInt64(9)),
        (AttentionCase(batch: 2, seq: 128, hidden: 48, qk: [32, 8], vo: [0, 24], causal: false, mask: [2, 1, 1, 128], bias: nil), UInt64(10)),
    ]

    @Test(arguments: attentionSplits)
    func attentionSplitOverThreadsMatchesNaive(_ c: AttentionCase, _ seed: UInt64) throws {
        Linear.setThreads(2)
        let (x, w, mask, bias, p) = Self.attentionInputs(c, seed: seed)
        let e = normalisedError(try Attention.run(x, w, mask: mask, bias: bias, p), try Attention.naive(x, w, mask: mask, bias: bias, p))
        #expect(e < 1e-5, "\(c): normalised error \(e)")
    }

    @Test func attentionWithoutValueRanksIsTheOutputBias() throws {
        let c = Self.attentionCases.first { $0.vo.allSatisfy { $0 == 0 } }!
        let (x, w, mask, bias, p) = Self.attentionInputs(c, seed: 1)
        let out = try Attention.run(x, w, mask: mask, bias: bias, p)
        let bo = w.bo.floats
        #expect(out.floats.enumerated().allSatisfy { $0.element == bo[$0.offset % c.hidden] })
    }

    @Test func attentionRejectsBadShapes() throws {
        let c = AttentionCase(batch: 2, seq: 4, hidden: 6, qk: [2, 2], vo: [3, 1], causal: false, mask: [2, 1, 1, 4], bias: nil)
        var (x, w, mask, bias, p) = Self.attentionInputs(c, seed: 3)
        #expect(throws: KernelError.self) { try Attention.run(x, w, mask: Tensor(dtype: .float32, shape: [2, 1, 1, 5]), bias: bias, p) }
        p.qkRanks = [2, 3]
        #expect(throws: KernelError.self) { try Attention.run(x, w, mask: mask, bias: bias, p) }
        p.qkRanks = [2, 2]
        w.bo = Tensor(dtype: .float32, shape: [5])
        #expect(throws: KernelError.self) { try Attention.run(x, w, mask: mask, bias: bias, p) }
        x = Tensor(dtype: .float32, shape: [8, 6])
        #expect(throws: KernelError.self) { try Attention.run(x, w, mask: mask, bias: bias, p) }
    }

    static let feedForwardCases: [(shape: [Int], inner: Int, activation: FeedForward.Activation)] = [
        ([1, 1, 4], 3, .gelu), ([2, 7, 9], 13, .gelu), ([3, 5, 16], 40, .geluTanh), ([11, 6], 17, .relu),
        ([2, 3, 5], 0, .gelu), ([4, 33], 1, .geluTanh), ([2, 2, 2, 8], 31, .relu), ([0, 5], 4, .gelu),
    ]

    @Test(arguments: Self.feedForwardCases.indices)
    func feedForwardMatchesNaive(_ k: Int) throws {
        let c = Self.feedForwardCases[k]
        var r = SeededRandom(UInt64(200 + k))
        let d = c.shape.last!
        let x = r.tensor(c.shape, scale: 2)
        let (w1, b1, w2, b2) = (r.tensor([d, c.inner]), r.tensor([c.inner]), r.tensor([c.inner, d]), r.tensor([d]))
        let fast = try FeedForward.run(x, w1: w1, b1: b1, w2: w2, b2: b2, activation: c.activation)
        let naive = try FeedForward.naive(x, w1: w1, b1: b1, w2: w2, b2: b2, activation: c.activation)
        #expect(fast.shape == c.shape)
        let e = normalisedError(fast, naive)
        #expect(e < 1e-5, "\(c): normalised error \(e)")
        if c.inner == 0 { #expect(fast.floats.enumerated().allSatisfy { $0.element == b2.floats[$0.offset % d] }) }
    }

    /// A prepared layer against act(x W + b) in Double, for several row counts.
    @Test(arguments: [FeedForward.Activation?.none, .gelu, .geluTanh, .relu])
    func projectionMatchesDoubleLoops(_ activation: FeedForward.Activation?) throws {
        var r = SeededRandom(31)
        for (k, n) in [(7, 5), (96, 40), (384, 200)] {
            let w = r.tensor([k, n]), b = r.tensor([n])
            let layer = try Projection(weights: w, bias: b, activation: activation)
            for m in [1, 33, 128] {
                let x = r.tensor([m, k], scale: 2)
                var want = [Float](repeating: 0, count: m * n)
                let (xs, ws, bs) = (x.floats, w.floats, b.floats)
                for i in 0..<m {
                    for j in 0..<n {
                        var s = Double(bs[j])
                        for p in 0..<k { s += Double(xs[i * k + p]) * Double(ws[p * n + j]) }
                        switch activation {
                        case .gelu: s = 0.5 * s * (1 + Foundation.erf(s / 2.0.squareRoot()))
                        case .geluTanh: s = 0.5 * s * (1 + Foundation.tanh((2 / Double.pi).squareRoot() * (s + 0.044715 * s * s * s)))
                        case .relu: s = max(s, 0)
                        case nil: break
                        }
                        want[i * n + j] = Float(s)
                    }
                }
                let out = Tensor(dtype: .float32, shape: [m, n])
                layer.apply(x.pointer(as: Float.self), rows: m, into: out.pointer(as: Float.self))
                let e = normalisedError(out, Tensor(want, shape: [m, n]))
                #expect(e < 2e-6, "\(m)×\(n)×\(k) \(String(describing: activation)): normalised error \(e)")
            }
        }
    }

    /// Attention's products (`spp_sgemm_packed`) against a triple loop in Double: ranks and
    /// lengths that leave partial row blocks (6) and partial panels (16), B plain and transposed
    /// (keys), A and C inside wider rows as attention reads and writes them.
    @Test(arguments: [(1, 1, 1), (7, 5, 3), (128, 128, 32), (13, 33, 17), (6, 16, 64), (50, 47, 9)])
    func packedProductMatchesNaive(_ shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        var rng = SplitMix64(seed: UInt64(m * 10_000 + n * 100 + k))
        let (lda, ldb, ldc) = (k + 3, n + k + 5, n + 2)
        let a = (0..<(m * lda)).map { _ in rng.signedUnit() }
        let bStore = (0..<(max(n, k) * ldb)).map { _ in rng.signedUnit() }
        for transB in [false, true] {
            // B as a dense k × n (or its transpose) for the reference.
            let b = transB ? (0..<(n * k)).map { bStore[($0 / k) * ldb + $0 % k] } : (0..<(k * n)).map { bStore[($0 / n) * ldb + $0 % n] }
            let aDense = (0..<(m * k)).map { a[($0 / k) * lda + $0 % k] }
            let exact = Linear.naiveGemm(transA: false, transB: transB, m: m, n: n, k: k, a: aDense, b: b)
            var packed = [Float](repeating: .nan, count: spp_packed_count(k, n))
            spp_pack_panels(bStore, ldb, transB ? 1 : 0, k, n, &packed)
            // A as stored (columns adjacent), then A read from its transpose (columns a row apart, as
            // the refit reads Mᵀ); B's panels from row 2 on of a pack with 2 more rows, as the refit's slabs.
            let aT = (0..<(k * (m + 1))).map { i in i % (m + 1) < m ? aDense[(i % (m + 1)) * k + i / (m + 1)] : .nan }
            var offsetPacked = [Float](repeating: .nan, count: spp_packed_count(k + 2, n))
            let bWithTwoRows = (0..<((k + 2) * n)).map { i in i < 2 * n ? 9 : b[(transB ? ((i - 2 * n) % n) * k + (i - 2 * n) / n : i - 2 * n)] }
            spp_pack_panels(bWithTwoRows, n, 0, k + 2, n, &offsetPacked)
            // Every body this CPU runs (AVX-512, AVX2, scalar), not only the one it picks.
            for isa in [0, 3, 4] where isa <= spp_packed_isa() {
                for layout in 0..<2 {
                    var c = [Float](repeating: -7, count: m * ldc)
                    if layout == 0 {
                        spp_sgemm_packed_isa(Int32(isa), m, n, k, 0.5, a, lda, 1, packed, k, &c, ldc)
                    } else {
                        offsetPacked.withUnsafeBufferPointer { p in
                            spp_sgemm_packed_isa(Int32(isa), m, n, k, 0.5, aT, 1, m + 1, p.baseAddress! + 2 * Int(SPP_PANEL), k + 2, &c, ldc)
                        }
                    }
                    var worst: Float = 0
                    for i in 0..<m { for j in 0..<n { worst = max(worst, abs(c[i * ldc + j] - 0.5 * exact[i * n + j])) } }
                    // (max ignores NaN: finiteness is checked apart.)
                    #expect(worst < 1e-5 * Float(k) && (0..<m).allSatisfy { i in (0..<n).allSatisfy { c[i * ldc + $0].isFinite } },
                            "\(shape) transB \(transB) isa \(isa) layout \(layout): max error \(worst)")
                    // Columns past n in each row of C are the caller's.
                    #expect((0..<m).allSatisfy { i in c[i * ldc + n] == -7 && c[i * ldc + n + 1] == -7 })
                }
            }
        }
    }

    /// The vectorised C loops (CKernels) against Double, over every range of their approximations.
    @Test func elementwiseKernelsAreAccurate() {
        let xs = stride(from: -12.0, to: 12.0, by: 0.000731).map { Float($0) }
        var erfGelu = xs, tanhGelu = xs
        spp_gelu_erf(&erfGelu, xs.count)
        spp_gelu_tanh(&tanhGelu, xs.count)
        var worstErf = 0.0, worstTanh = 0.0
        for (i, x) in xs.enumerated() {
            let v = Double(x), scale = max(abs(v), 1)
            worstErf = max(worstErf, abs(Double(erfGelu[i]) - 0.5 * v * (1 + Foundation.erf(v / 2.0.squareRoot()))) / scale)
            let t = Foundation.tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v))
            worstTanh = max(worstTanh, abs(Double(tanhGelu[i]) - 0.5 * v * (1 + t)) / scale)
        }
        #expect(worstErf < 2e-7, "erf GELU error \(worstErf)")
        #expect(worstTanh < 3e-7, "tanh GELU error \(worstTanh)")

        // Softmax: wide logits, masked (-∞) keys, a row of only masked keys, odd lengths.
        var rng = SplitMix64(seed: 3)
        for n in [1, 7, 16, 37, 128] {
            var row = (0..<n).map { k in k % 5 == 4 ? -Float.infinity : rng.signedUnit() * 40 }
            let ref = row.map(Double.init)
            let inverse = spp_softmax_exp(&row, nil, n)
            let m = ref.max()!
            let e = ref.map { $0 == -.infinity ? 0 : Foundation.exp($0 - m) }
            let s = e.reduce(0, +)
            #expect(abs(Double(inverse) * s - 1) < 1e-6, "softmax n \(n): 1 / sum")
            for k in 0..<n { #expect(abs(Double(row[k]) * Double(inverse) - e[k] / s) < 1e-6, "softmax n \(n) key \(k)") }
        }
        var masked = [Float](repeating: -.infinity, count: 9)
        #expect(spp_softmax_exp(&masked, nil, 9) == 0)
        // The fused term: p + add, as if added first.
        var logits: [Float] = [1, 2, 3, -1], offsets: [Float] = [0, -.infinity, 1, 0.5]
        let inverse = Double(spp_softmax_exp(&logits, offsets, 4))
        let z = [1.0, 4.0, -0.5].map(Foundation.exp)
        #expect(abs(Double(logits[0]) * inverse - z[0] / z.reduce(0, +)) < 1e-6 && logits[1] == 0 && abs(Double(logits[3]) * inverse - z[2] / z.reduce(0, +)) < 1e-6)
        #expect(masked == [Float](repeating: 0, count: 9))

        // Layer norm of a row with a large offset (variance from the centred values).
        let n = 389
        let x = (0..<n).map { _ in 100 + rng.signedUnit() * 3 }
        let scale = (0..<n).map { _ in rng.signedUnit() }, bias = (0..<n).map { _ in rng.signedUnit() }
        var y = [Float](repeating: 0, count: n)
        var mean: Float = 0, invStd: Float = 0
        spp_layer_norm_row(x, &y, n, scale, bias, 1e-5, &mean, &invStd)
        let mu = x.reduce(0.0) { $0 + Double($1) } / Double(n)
        let variance = x.reduce(0.0) { $0 + (Double($1) - mu) * (Double($1) - mu) } / Double(n)
        let inv = 1 / (variance + 1e-5).squareRoot()
        #expect(abs(Double(mean) - mu) < 1e-4 && abs(Double(invStd) - inv) / inv < 1e-5)
        for k in 0..<n { #expect(abs(Double(y[k]) - ((Double(x[k]) - mu) * inv * Double(scale[k]) + Double(bias[k]))) < 2e-5) }

        var sum = [Float](repeating: 0, count: n)
        spp_binary(0, x, bias, &sum, n)
        #expect(sum == zip(x, bias).map { $0 + $1 })
    }

    /// The fused nodes through the runtime, with their attributes read once at load.
    @Test func fusedNodesRunInAProgram() throws {
        let c = AttentionCase(batch: 2, seq: 5, hidden: 6, qk: [3, 0, 2], vo: [2, 2, 0], causal: true, mask: [2, 1, 1, 5], bias: [1, 3, 5, 5])
        let (x, w, mask, bias, p) = Self.attentionInputs(c, seed: 9)
        let names = ["Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo"]
        let tensors = [w.wq, w.bq, w.wk, w.bk, w.wv, w.bv, w.wo, w.bo]
        var initializers = Dictionary(uniqueKeysWithValues: zip(names, tensors))
        initializers["bias"] = bias!
        var r = SeededRandom(4)
        for (n, s) in [("W1", [6, 10]), ("b1", [10]), ("W2", [10, 6]), ("b2", [6])] { initializers[n] = r.tensor(s) }
        let attention = Node(name: "att", op: .attention, inputs: ["x"] + names + ["mask", "bias"], outputs: ["a"],
                             attributes: AttentionAttributes(heads: 3, qkRanks: p.qkRanks, voRanks: p.voRanks, scale: p.scale, causal: true).attributes)
        let ffn = Node(name: "ffn", op: .feedForward, inputs: ["a", "W1", "b1", "W2", "b2"], outputs: ["y"], attributes: ["activation": .string("gelu_tanh")])
        let graph = Graph(inputs: [ValueInfo(name: "x", dtype: .float32, shape: [.symbol("batch"), .symbol("seq"), .fixed(6)]),
                                   ValueInfo(name: "mask", dtype: .float32, shape: [.symbol("batch"), .fixed(1), .fixed(1), .symbol("seq")])],
                          outputs: [ValueInfo(name: "y", dtype: .float32, shape: nil)], initializers: initializers, nodes: [attention, ffn])
        let info = try ShapeInference.infer(graph)
        #expect(info["y"]?.shape == [.symbol("batch"), .symbol("seq"), .fixed(6)])
        let program = try Program(graph: graph)
        let y = try #require(try program.run(["x": x, "mask": mask!])["y"])
        // The weights went into the prepared kernels; the program keeps only the additive bias.
        #expect(Set(program.releasedConstants.keys) == Set(names + ["W1", "b1", "W2", "b2"]))
        #expect(Set(program.graph.initializers.keys) == ["bias"] && program.parameterCount == graph.parameterCount)
        let a = try Attention.naive(x, w, mask: mask, bias: bias, p)
        let want = try FeedForward.naive(a, w1: initializers["W1"]!, b1: initializers["b1"]!, w2: initializers["W2"]!, b2: initializers["b2"]!, activation: .geluTanh)
        #expect(normalisedError(y, want) < 1e-5)

        var bad = graph
        bad.nodes[0].attributes["vo_ranks"] = .ints([2, 2])
        #expect(throws: GraphError.self) { try Program(graph: bad) }
        #expect(throws: GraphError.self) { try ShapeInference.infer(bad) }
        bad = graph
        bad.nodes[1].attributes["activation"] = .string("swish")
        #expect(throws: GraphError.self) { try Program(graph: bad) }
        bad = graph
        bad.initializers["Wo"] = Tensor(dtype: .float32, shape: [4, 7])
        #expect(throws: GraphError.self) { try ShapeInference.infer(bad) }
    }
}

/// The float32 fast paths of a decomposed layer norm (row-broadcast arithmetic,
/// x², sums over trailing axes) against loops in Double.
@Suite struct DecomposedNormFastPathTests {
    @Test func matchDoubleLoops() throws {
        var rng = SplitMix64(seed: 11)
        let (b, s, n) = (2, 3, 37)
        let x = Tensor((0..<(b * s * n)).map { _ in rng.signedUnit() * 4 }, shape: [b, s, n])
        let perRow = Tensor((0..<(b * s)).map { _ in rng.signedUnit() + 2 }, shape: [b, s, 1])
        let perColumn = Tensor((0..<n).map { _ in rng.signedUnit() + 2 }, shape: [n])
        let xs = x.floats, rs = perRow.floats, cs = perColumn.floats
        let ops: [(ArithmeticOp, (Double, Double) -> Double)] = [(.add, +), (.sub, -), (.mul, *), (.div, /)]
        for (op, f) in ops {
            let byRow = try Elementwise.arithmetic(op, x, perRow).floats
            let byColumn = try Elementwise.arithmetic(op, x, perColumn).floats
            let byScalar = try Elementwise.arithmetic(op, x, Tensor([Float(1.5)], shape: [])).floats
            for i in 0..<xs.count {
                #expect(abs(Double(byRow[i]) - f(Double(xs[i]), Double(rs[i / n]))) < 1e-5)
                #expect(abs(Double(byColumn[i]) - f(Double(xs[i]), Double(cs[i % n]))) < 1e-5)
                #expect(abs(Double(byScalar[i]) - f(Double(xs[i]), 1.5)) < 1e-5)
            }
        }
        let squared = try Elementwise.arithmetic(.pow, x, Tensor([Float(2)], shape: [])).floats
        for i in 0..<xs.count { #expect(squared[i] == xs[i] * xs[i]) }
        let mean = try Reduction.reduce(.mean, x, axes: [2], keepDims: true, noopWithEmptyAxes: false)
        #expect(mean.shape == [b, s, 1])
        let sum = try Reduction.reduce(.sum, x, axes: [1, 2], keepDims: false, noopWithEmptyAxes: false)
        #expect(sum.shape == [b])
        for r in 0..<(b * s) {
            let want = (0..<n).reduce(0.0) { $0 + Double(xs[r * n + $1]) } / Double(n)
            #expect(abs(Double(mean.floats[r]) - want) < 1e-5)
        }
        for r in 0..<b {
            let want = (0..<(s * n)).reduce(0.0) { $0 + Double(xs[r * s * n + $1]) }
            #expect(abs(Double(sum.floats[r]) - want) < 1e-4)
        }
    }
}
