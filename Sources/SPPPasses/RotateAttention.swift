import SPPCore
import SPPGraph

/// Applies the whitened QK and VO rotations (`PairRotation`) to every fused
/// attention node, head by head. The model computes the same function
/// afterwards; the inner directions come out ordered by strength, which it returns.
public enum RotateAttention {
    /// Strength of every direction after rotation: node → head → direction (descending).
    public struct Strengths: Sendable {
        public var queryKey: [String: [[Double]]] = [:]
        public var valueOutput: [String: [[Double]]] = [:]
    }

    @discardableResult
    public static func apply(_ graph: inout Graph, statistics: BlockStatistics) throws -> Strengths {
        var strengths = Strengths()
        for node in graph.nodes where node.op == .attention {
            guard let stats = statistics.attention[node.name] else { continue }
            var w = try AttentionWeights(node, graph)
            var qk: [[Double]] = [], vo: [[Double]] = []
            for h in 0..<w.heads {
                let q = w.qkRange(h), v = w.voRange(h)
                if !q.isEmpty {
                    let aq = w.augmented(w.wq, w.bq, q), ak = w.augmented(w.wk, w.bk, q)
                    let (tq, tk, s) = try PairRotation.queryKey(aq: aq, ak: ak, moment: stats.inputMoment)
                    w.store(aq * tq, into: &w.wq, &w.bq, q)
                    w.store(ak * tk, into: &w.wk, &w.bk, q)
                    qk.append(s)
                } else { qk.append([]) }
                if !v.isEmpty {
                    let av = w.augmented(w.wv, w.bv, v)
                    let wo = w.wo.rows(v)
                    let (t, tInverse, s) = try PairRotation.valueOutput(av: av, wo: wo, moment: stats.mixedMoments[h])
                    w.store(av * t, into: &w.wv, &w.bv, v)
                    let rotated = tInverse * wo
                    for (k, r) in v.enumerated() { for j in 0..<w.wo.cols { w.wo[r, j] = rotated[k, j] } }
                    vo.append(s)
                } else { vo.append([]) }
            }
            try w.write(into: &graph)
            strengths.queryKey[node.name] = qk
            strengths.valueOutput[node.name] = vo
        }
        return strengths
    }
}

/// The projection weights of one fused attention node in Double, with the head layout.
struct AttentionWeights {
    let node: Node
    let heads: Int
    let qkRanks: [Int], voRanks: [Int]
    var wq: Matrix, wk: Matrix, wv: Matrix, wo: Matrix
    var bq: [Double], bk: [Double], bv: [Double]

    init(_ node: Node, _ graph: Graph) throws {
        self.node = node
        func constant(_ i: Int) throws -> Tensor {
            guard let t = graph.initializers[node.inputs[i]], t.dtype == .float32 else {
                throw GraphError.badAttribute(node: node.name, op: node.op.rawValue, attribute: "input \(i)", reason: "weights must be float32 constants")
            }
            return t
        }
        func matrix(_ t: Tensor) -> Matrix { Matrix(rows: t.shape[0], cols: t.count / max(t.shape[0], 1), data: t.floats.map(Double.init)) }
        heads = try node.int("heads", default: 0)
        qkRanks = try node.ints("qk_ranks") ?? []
        voRanks = try node.ints("vo_ranks") ?? []
        wq = matrix(try constant(1)); wk = matrix(try constant(3)); wv = matrix(try constant(5)); wo = matrix(try constant(7))
        bq = try constant(2).floats.map(Double.init); bk = try constant(4).floats.map(Double.init); bv = try constant(6).floats.map(Double.init)
    }

    func qkRange(_ h: Int) -> Range<Int> { let o = qkRanks[..<h].reduce(0, +); return o..<(o + qkRanks[h]) }
    func voRange(_ h: Int) -> Range<Int> { let o = voRanks[..<h].reduce(0, +); return o..<(o + voRanks[h]) }

    /// [W[:, cols]; b[cols]], (D+1)×|cols|.
    func augmented(_ w: Matrix, _ b: [Double], _ cols: Range<Int>) -> Matrix {
        var m = Matrix.zeros(w.rows + 1, cols.count)
        for i in 0..<w.rows { for (k, j) in cols.enumerated() { m[i, k] = w[i, j] } }
        for (k, j) in cols.enumerated() { m[w.rows, k] = b[j] }
        return m
    }

    func store(_ a: Matrix, into w: inout Matrix, _ b: inout [Double], _ cols: Range<Int>) {
        for i in 0..<w.rows { for (k, j) in cols.enumerated() { w[i, j] = a[i, k] } }
        for (k, j) in cols.enumerated() { b[j] = a[w.rows, k] }
    }

    func write(into graph: inout Graph) throws {
        func tensor(_ m: Matrix) -> Tensor { Tensor(m.data.map { Float($0) }, shape: [m.rows, m.cols]) }
        func vector(_ v: [Double]) -> Tensor { Tensor(v.map { Float($0) }, shape: [v.count]) }
        graph.initializers[node.inputs[1]] = tensor(wq)
        graph.initializers[node.inputs[2]] = vector(bq)
        graph.initializers[node.inputs[3]] = tensor(wk)
        graph.initializers[node.inputs[4]] = vector(bk)
        graph.initializers[node.inputs[5]] = tensor(wv)
        graph.initializers[node.inputs[6]] = vector(bv)
        graph.initializers[node.inputs[7]] = tensor(wo)
    }
}
