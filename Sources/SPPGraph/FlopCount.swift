import SPPCore

/// Floating-point operations of the matrix products of a graph (a multiply-add
/// counts 2): MatMul, Gemm, Conv and the fused blocks. Elementwise ops, norms,
/// softmax and gathers are left out; in a transformer they are a few percent.
/// The path's cost table and `spp bench` both count with these formulas.
public enum FlopCount {
    /// One attention pair with `units` kept directions, over `batch` sequences of
    /// `seq` tokens: the two projections of its side (q and k, or v and o) and
    /// its seq × seq product per sequence and head (the scores, or P·v).
    public static func attentionPair(units: Int, hidden: Int, batch: Int, seq: Int) -> Int {
        batch * (2 * seq * hidden * 2 * units + 2 * seq * seq * units)
    }

    /// A feed-forward block with `units` hidden neurons over `tokens` tokens (W1 and W2).
    public static func feedForward(units: Int, hidden: Int, tokens: Int) -> Int {
        2 * tokens * hidden * 2 * units
    }

    /// One matrix product `[m, k] × [k, n]`: 2·m·n·k FLOPs.
    public struct Product: Hashable, Sendable, CustomStringConvertible {
        public let m: Int, n: Int, k: Int
        public init(m: Int, n: Int, k: Int) { (self.m, self.n, self.k) = (m, n, k) }
        public var flops: Int { 2 * m * n * k }
        public var description: String { "\(m)×\(n)×\(k)" }
    }

    /// FLOPs of one run of `graph` when the values in `shapes` have those
    /// concrete shapes (`products`, summed).
    public static func count(_ graph: Graph, shapes: [String: (dtype: DType?, shape: [Int])]) throws -> Int {
        try products(graph, shapes: shapes).reduce(0) { $0 + $1.key.flops * $1.value }
    }

    /// The matrix products one run of `graph` makes, with how many times each,
    /// when the values in `shapes` have those concrete shapes: the graph inputs,
    /// and any value the graph reads without defining it (a lookup table the
    /// runtime reads by row) with its dtype. A fused attention block is its q/k/v
    /// projection, per sequence and head the scores and the context, and the output
    /// projection; a Conv its im2col product per group. Throws `GraphError` when
    /// shape inference fails or leaves a size of a counted node unknown.
    public static func products(_ graph: Graph, shapes: [String: (dtype: DType?, shape: [Int])]) throws -> [Product: Int] {
        var g = graph
        for (i, input) in g.inputs.enumerated() {
            if let (_, s) = shapes[input.name] { g.inputs[i].shape = s.map { .fixed($0) } }
        }
        let declared = Set(g.inputs.map(\.name))
        for (name, (dtype, s)) in shapes.sorted(by: { $0.key < $1.key }) where !declared.contains(name) && g.initializers[name] == nil {
            g.inputs.append(ValueInfo(name: name, dtype: dtype, shape: s.map { .fixed($0) }))
        }
        let infos = try ShapeInference.infer(g)
        func dims(_ node: Node, _ i: Int) throws -> [Int] {
            guard let name = node.input(i), let shape = infos[name]?.shape,
                  case let sizes = shape.compactMap(\.fixedValue), sizes.count == shape.count else {
                throw GraphError.shapeMismatch(node: node.name, op: node.op.rawValue, reason: "the size of input \(i) is unknown, so its FLOPs cannot be counted")
            }
            return sizes
        }
        func outputCount(_ node: Node) throws -> Int {
            guard let name = node.outputs.first, let shape = infos[name]?.shape,
                  case let sizes = shape.compactMap(\.fixedValue), sizes.count == shape.count else {
                throw GraphError.shapeMismatch(node: node.name, op: node.op.rawValue, reason: "the size of the output is unknown, so its FLOPs cannot be counted")
            }
            return sizes.reduce(1, *)
        }
        var products: [Product: Int] = [:]
        func add(_ m: Int, _ n: Int, _ k: Int, times: Int = 1) {
            if m > 0, n > 0, k > 0, times > 0 { products[Product(m: m, n: n, k: k), default: 0] += times }
        }
        for node in g.nodes {
            switch node.op {
            case .matMul:
                // Batches of [M, K] × [K, N] (1-D operands promoted); every output element is one dot product.
                let a = try dims(node, 0), b = try dims(node, 1)
                let m = a.count >= 2 ? a[a.count - 2] : 1, n = b.count >= 2 ? b[b.count - 1] : 1
                add(m, n, a.last ?? 1, times: (try outputCount(node)) / max(m * n, 1))
            case .gemm:
                let a = try dims(node, 0)
                guard a.count == 2 else { continue }
                let transA = try node.int("transA", default: 0) != 0
                let m = transA ? a[1] : a[0]
                add(m, (try outputCount(node)) / max(m, 1), transA ? a[0] : a[1])
            case .conv:
                let w = try dims(node, 1)
                guard w.count >= 2 else { continue }
                let groups = try node.int("group", default: 1)
                let perGroup = w[0] / max(groups, 1)
                add((try outputCount(node)) / max(w[0], 1), perGroup, w.dropFirst().reduce(1, *), times: groups)
            case .attention:
                let a = try node.attentionAttributes()
                let x = try dims(node, 0)
                guard x.count == 3 else { continue }
                let (batch, seq, hidden) = (x[0], x[1], x[2])
                add(batch * seq, 2 * a.qkWidth + a.voWidth, hidden)
                for r in a.qkRanks { add(seq, seq, r, times: batch) }
                for r in a.voRanks { add(seq, r, seq, times: batch) }
                add(batch * seq, hidden, a.voWidth)
            case .feedForward:
                let w1 = try dims(node, 1)
                guard w1.count == 2 else { continue }
                let tokens = (try outputCount(node)) / max(w1[0], 1)
                add(tokens, w1[1], w1[0])
                add(tokens, w1[0], w1[1])
            default:
                continue
            }
        }
        return products
    }
}
