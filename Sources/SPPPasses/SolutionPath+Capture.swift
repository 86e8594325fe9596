import CLinalg
import Glibc
import SPPCore
import SPPGraph
import SPPKernels
import SPPRuntime

/// The loss of one fused block on the calibration data, ready for the dynamics.
enum BlockProblem {
    case feedForward(node: String, loss: QuadraticLoss)
    case attention(node: String, problem: AttentionProblem)

    var node: String {
        switch self {
        case let .feedForward(n, _), let .attention(n, _): return n
        }
    }

    var units: Int {
        switch self {
        case let .feedForward(_, l): return l.size
        case let .attention(_, p): return p.units
        }
    }

    /// The loss with every unit of the block removed: the block's whole output energy
    /// (measured like the loss). Used to put all blocks in one currency.
    var lossAtZero: Double {
        switch self {
        case let .feedForward(_, l): return l.lossAtZero
        case let .attention(_, p): return p.voQuadratic.lossAtZero
        }
    }

    /// The loss of removing each FFN neuron or VO direction alone (the quadratic's diagonal).
    var singleRemovalLosses: [Double] {
        switch self {
        case let .feedForward(_, l): return l.diagonal
        case let .attention(_, p): return p.voQuadratic.diagonal
        }
    }
}

extension SolutionPath {
    /// Runs the dense model once over the calibration batches and builds every
    /// block's loss from what the fused node sees: the FFN quadratics and the VO
    /// quadratic are accumulated over all real tokens; a subset of sequences is
    /// kept with their q, k, v and dense context for the sampled QK gradients.
    static func capture(graph: Graph, batches: [[String: Tensor]], options: Options,
                        progress: (Int, Int) -> Void) throws -> [BlockProblem] {
        let program = try Program(graph: graph)
        let fused = graph.nodes.filter { $0.op == .attention || $0.op == .feedForward }
        var builders: [BlockBuilder] = []
        var wanted = Set<String>()
        let totalSequences = batches.reduce(0) { $0 + (sequenceCount($1) ?? 0) }
        let kept = keptSequences(total: totalSequences, cap: options.attentionSequences, seed: options.seed)
        for node in fused {
            let norm = options.normalization == .layerNorm ? DownstreamNorm.find(after: node, in: graph) : nil
            let builder = try BlockBuilder(node: node, graph: graph, norm: norm)
            wanted.formUnion(builder.wanted)
            builders.append(builder)
        }
        var sequenceBase = 0
        for (index, batch) in batches.enumerated() {
            let values = try program.run(batch, retaining: wanted)
            let rows = sequenceCount(batch) ?? 0
            let flags = batch[options.validity].flatMap { $0.integers }
            for b in builders {
                try b.add(values: values, flags: flags, keep: { kept.contains(sequenceBase + $0) })
            }
            sequenceBase += rows
            progress(index + 1, batches.count)
        }
        return try builders.map { try $0.finish() }
    }

    /// Rows of a batch (the leading dimension of its inputs).
    static func sequenceCount(_ batch: [String: Tensor]) -> Int? {
        batch.values.first { $0.rank >= 2 }?.shape[0]
    }

    /// Which sequences (numbered across batches) keep their projections for the QK gradients.
    static func keptSequences(total: Int, cap: Int, seed: UInt64) -> Set<Int> {
        if cap <= 0 || total <= cap { return Set(0..<total) }
        var rng = SplitMix64(seed: seed ^ 0x5EED)
        var all = Array(0..<total)
        all.shuffle(using: &rng)
        return Set(all.prefix(cap))
    }
}

/// The LayerNormalization after a block's residual add: its input (the residual
/// stream the block writes into), scale γ and ε. A perturbation δ of the block
/// output reaches the normalised stream as ≈ γ ⊙ δ / σ_t, so the `.layerNorm`
/// loss weighs token t by 1/σ_t² and output dimension d by γ_d².
struct DownstreamNorm {
    let input: String
    let gamma: [Float]
    let epsilon: Float

    static func find(after node: Node, in graph: Graph) -> DownstreamNorm? {
        guard let out = node.outputs.first,
              let add = graph.nodes.first(where: { $0.op == .add && $0.inputs.contains(out) }),
              let sum = add.outputs.first,
              let ln = graph.nodes.first(where: { $0.op == .layerNormalization && $0.inputs.first == sum }),
              let gamma = ln.input(1).flatMap({ graph.initializers[$0] }), gamma.dtype == .float32,
              (try? ln.int("axis", default: -1)) == -1
        else { return nil }
        return DownstreamNorm(input: sum, gamma: gamma.floats, epsilon: (try? ln.float("epsilon", default: 1e-5)) ?? 1e-5)
    }

    /// 1/σ_t² of each row of a [rows, d] stream.
    func tokenWeights(_ r: UnsafePointer<Float>, rows: Int, d: Int) -> [Float] {
        (0..<rows).map { t in
            var mean = 0.0, square = 0.0
            for j in 0..<d { let v = Double(r[t * d + j]); mean += v; square += v * v }
            mean /= Double(d)
            let variance = max(square / Double(d) - mean * mean, 0)
            return Float(1 / (variance + Double(epsilon)))
        }
    }
}

/// Accumulates one block's loss over the calibration batches.
final class BlockBuilder {
    let node: Node
    let norm: DownstreamNorm?
    let hidden: Int
    var count = 0
    /// Σ_t w_t h_t h_tᵀ (upper triangle), for the FFN hidden activations or the dense attention context.
    var moment: [Float]

    // Feed-forward weights.
    var w1: [Float] = [], b1: [Float] = [], w2: [Float] = [], activation = ""
    // Attention weights and layout.
    var attributes: AttentionAttributes?
    var wq: [Float] = [], bq: [Float] = [], wk: [Float] = [], bk: [Float] = [], wv: [Float] = [], bv: [Float] = [], wo: [Float] = []
    var prototype: AttentionProblem?
    var sequences: [AttentionSequence] = []
    /// Additive score terms that are graph constants rather than computed values.
    var constantTerms: [String: Tensor] = [:]
    let scratch = AttentionScratch()

    init(node: Node, graph: Graph, norm: DownstreamNorm?) throws {
        self.node = node
        self.norm = norm
        func constant(_ i: Int) throws -> Tensor {
            guard let name = node.input(i), let t = graph.initializers[name], t.dtype == .float32 else {
                throw GraphError.badAttribute(node: node.name, op: node.op.rawValue, attribute: "input \(i)", reason: "weights must be float32 constants")
            }
            return t
        }
        switch node.op {
        case .feedForward:
            let t1 = try constant(1)
            hidden = t1.shape[0]
            (w1, b1, w2) = (t1.floats, try constant(2).floats, try constant(3).floats)
            activation = try node.feedForwardActivation().rawValue
            moment = [Float](repeating: 0, count: b1.count * b1.count)
        default:
            let a = try node.attentionAttributes()
            attributes = a
            let tq = try constant(1)
            hidden = tq.shape[0]
            (wq, bq, wk, bk) = (tq.floats, try constant(2).floats, try constant(3).floats, try constant(4).floats)
            (wv, bv, wo) = (try constant(5).floats, try constant(6).floats, try constant(7).floats)
            moment = [Float](repeating: 0, count: a.voWidth * a.voWidth)
            for i in [9, 10] { if let n = node.input(i), let t = graph.initializers[n] { constantTerms[n] = t } }
            let omega = norm.map { $0.gamma.map { g in g * g } }
            let metric = SolutionPathMath.outputMetric(wo, rows: a.voWidth, d: hidden, omega: omega)
            func offsets(_ r: [Int]) -> [Int] { var acc = 0; return r.map { x in defer { acc += x }; return acc } }
            prototype = AttentionProblem(heads: a.heads, qkRanks: a.qkRanks, voRanks: a.voRanks,
                                         qkOffsets: offsets(a.qkRanks), voOffsets: offsets(a.voRanks),
                                         qkWidth: a.qkWidth, voWidth: a.voWidth, scale: a.scale, causal: a.causal,
                                         metric: metric, voQuadratic: QuadraticLoss(size: 0, a: []), sequences: [])
        }
    }

    /// Values the capture run must retain for this block.
    var wanted: Set<String> {
        var names: Set<String> = [node.inputs[0]]
        if node.op == .attention { for i in [9, 10] { if let n = node.input(i), constantTerms[n] == nil { names.insert(n) } } }
        if let norm { names.insert(norm.input) }
        return names
    }

    func add(values: [String: Tensor], flags: [Int]?, keep: (Int) -> Bool) throws {
        guard let x = values[node.inputs[0]], x.dtype == .float32, x.rank == 3, x.shape[2] == hidden else {
            throw GraphError.shapeMismatch(node: node.name, op: node.op.rawValue, reason: "the captured input is not [batch, seq, \(hidden)] float32")
        }
        let (b, s, d) = (x.shape[0], x.shape[1], hidden)
        let valid = flags.flatMap { $0.count == b * s ? $0 : nil } ?? [Int](repeating: 1, count: b * s)
        var weights = [Float](repeating: 1, count: b * s)
        if let norm, let r = values[norm.input], r.count == b * s * d {
            weights = norm.tokenWeights(r.pointer(as: Float.self), rows: b * s, d: d)
        }
        switch node.op {
        case .feedForward: try addFeedForward(x, valid: valid, weights: weights)
        default: try addAttention(x, values: values, valid: valid, weights: weights, keep: keep)
        }
        _ = s
    }

    /// Rows `valid` of `x` ([rows, width]) scaled by √w into `out`, returning how many.
    static func gatherRows(_ x: UnsafePointer<Float>, width: Int, rows: [Int], weights: [Float], into out: inout [Float]) {
        out = [Float](repeating: 0, count: rows.count * width)
        for (k, t) in rows.enumerated() {
            let f = weights[t].squareRoot()
            for j in 0..<width { out[k * width + j] = x[t * width + j] * f }
        }
    }

    /// moment += rowsᵀ rows (upper triangle) through ssyrk.
    func addMoment(_ rows: [Float], count n: Int, width: Int) {
        guard n > 0, width > 0 else { return }
        Linalg.requireLoaded()
        rows.withUnsafeBufferPointer { r in
            moment.withUnsafeMutableBufferPointer { m in
                spp_ssyrk_upper_transposed(Int32(width), Int32(n), 1, r.baseAddress, Int32(width), 1, m.baseAddress, Int32(width))
            }
        }
    }

    func addFeedForward(_ x: Tensor, valid: [Int], weights: [Float]) throws {
        let d = hidden, f = b1.count
        let rows = valid.indices.filter { valid[$0] != 0 }
        guard !rows.isEmpty, f > 0 else { return }
        let px = x.pointer(as: Float.self)
        let xs = Tensor(dtype: .float32, shape: [rows.count, d])
        let pxs = xs.pointer(as: Float.self)
        for (k, t) in rows.enumerated() { (pxs + k * d).update(from: px + t * d, count: d) }
        var h = Tensor(dtype: .float32, shape: [rows.count, f])
        let ph = h.pointer(as: Float.self)
        for k in 0..<rows.count { (ph + k * f).update(from: b1, count: f) }
        w1.withUnsafeBufferPointer { w in
            Linear.sgemm(transA: false, transB: false, m: rows.count, n: f, k: d, alpha: 1, a: pxs, lda: d,
                         b: w.baseAddress!, ldb: f, beta: 1, c: ph, ldc: f)
        }
        h = try applyActivation(activation, h)
        var scaled: [Float] = []
        Self.gatherRows(h.pointer(as: Float.self), width: f, rows: Array(0..<rows.count), weights: rows.map { weights[$0] }, into: &scaled)
        addMoment(scaled, count: rows.count, width: f)
        count += rows.count
    }

    func addAttention(_ x: Tensor, values: [String: Tensor], valid: [Int], weights: [Float], keep: (Int) -> Bool) throws {
        guard let a = attributes, let proto = prototype else { return }
        let (b, s, d) = (x.shape[0], x.shape[1], hidden)
        let px = x.pointer(as: Float.self)
        func project(_ w: [Float], _ bias: [Float], _ width: Int) -> FloatBuffer {
            let out = FloatBuffer(count: b * s * width)
            for r in 0..<(b * s) { (out.pointer + r * width).update(from: bias, count: width) }
            if width > 0 {
                w.withUnsafeBufferPointer { wp in
                    Linear.sgemm(transA: false, transB: false, m: b * s, n: width, k: d, alpha: 1, a: px, lda: d,
                                 b: wp.baseAddress!, ldb: width, beta: 1, c: out.pointer, ldc: width)
                }
            }
            return out
        }
        let q = project(wq, bq, a.qkWidth), k = project(wk, bk, a.qkWidth), v = project(wv, bv, a.voWidth)
        let terms = try [node.input(9), node.input(10)].compactMap { name -> Attention.Term? in
            guard let name else { return nil }
            guard let t = values[name] ?? constantTerms[name] else { return nil }
            return try Attention.Term(t, target: [b, a.heads, s, s], what: "additive term of node '\(node.name)'")
        }
        let termHeads = terms.contains { $0.sh != 0 } ? a.heads : 1
        for bi in 0..<b {
            let positions = (0..<s).filter { valid[bi * s + $0] != 0 }
            guard !positions.isEmpty else { continue }
            let n = positions.count
            let termRows = terms.contains { $0.si != 0 } ? n : 1
            let term = FloatBuffer(count: termHeads * termRows * s)
            for h in 0..<termHeads {
                for r in 0..<termRows {
                    let i = termRows == 1 ? 0 : positions[r]
                    for t in terms { t.add(to: term.pointer + (h * termRows + r) * s, count: s, bi, h, i) }
                }
            }
            let qRows = FloatBuffer(count: n * a.qkWidth)
            for (r, t) in positions.enumerated() {
                (qRows.pointer + r * a.qkWidth).update(from: q.pointer + (bi * s + t) * a.qkWidth, count: a.qkWidth)
            }
            let kRows = FloatBuffer(count: s * a.qkWidth), vRows = FloatBuffer(count: s * a.voWidth)
            kRows.pointer.update(from: k.pointer + bi * s * a.qkWidth, count: s * a.qkWidth)
            vRows.pointer.update(from: v.pointer + bi * s * a.voWidth, count: s * a.voWidth)
            let w = positions.map { weights[bi * s + $0] }
            var sequence = AttentionSequence(queries: n, keys: s, positions: positions, q: qRows, k: kRows, v: vRows,
                                             ctx: FloatBuffer(count: 0), weights: w, term: term, termHeads: termHeads, termRows: termRows)
            proto.forward(sequence, mqk: [Float](repeating: 1, count: a.qkWidth), scratch: scratch)
            let ctx = FloatBuffer(count: n * a.voWidth)
            ctx.pointer.update(from: scratch.ctx.pointer, count: n * a.voWidth)
            var scaled: [Float] = []
            Self.gatherRows(ctx.pointer, width: a.voWidth, rows: Array(0..<n), weights: w, into: &scaled)
            addMoment(scaled, count: n, width: a.voWidth)
            count += n
            if keep(bi) {
                sequence = AttentionSequence(queries: n, keys: s, positions: positions, q: qRows, k: kRows, v: vRows,
                                             ctx: ctx, weights: w, term: term, termHeads: termHeads, termRows: termRows)
                sequences.append(sequence)
            }
        }
    }

    /// The block's loss: the moment becomes a mean, filled to a full symmetric matrix.
    func finish() throws -> BlockProblem {
        let n = Int(Double(moment.count).squareRoot())
        let scale = 1 / Float(max(count, 1))
        for i in 0..<n {
            for j in i..<n {
                let v = moment[i * n + j] * scale
                moment[i * n + j] = v
                moment[j * n + i] = v
            }
        }
        let omega = norm.map { $0.gamma.map { g in g * g } }
        switch node.op {
        case .feedForward:
            return .feedForward(node: node.name, loss: QuadraticLoss(moment: moment, size: n, output: w2, outputWeights: omega, d: hidden))
        default:
            guard var p = prototype else { throw GraphError.shapeMismatch(node: node.name, op: node.op.rawValue, reason: "not an attention block") }
            p.voQuadratic = QuadraticLoss(moment: moment, size: n, output: wo, outputWeights: omega, d: hidden)
            p.sequences = sequences
            return .attention(node: node.name, problem: p)
        }
    }
}
