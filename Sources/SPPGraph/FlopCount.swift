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

    /// FLOPs of one run of `graph` when the values in `shapes` have those
    /// concrete shapes: the graph inputs, and any value the graph reads without
    /// defining it (a lookup table the runtime reads by row) with its dtype.
    /// Throws `GraphError` when shape inference fails or leaves a size of a
    /// counted node unknown.
    public static func count(_ graph: Graph, shapes: [String: (dtype: DType?, shape: [Int])]) throws -> Int {
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
        var total = 0
        for node in g.nodes {
            switch node.op {
            case .matMul:
                // Every output element is a dot product over A's last dimension (also for 1-D operands).
                total += 2 * (try dims(node, 0).last ?? 1) * (try outputCount(node))
            case .gemm:
                let a = try dims(node, 0)
                guard a.count == 2 else { continue }
                total += 2 * (try node.int("transA", default: 0) != 0 ? a[0] : a[1]) * (try outputCount(node))
            case .conv:
                total += 2 * (try dims(node, 1).dropFirst().reduce(1, *)) * (try outputCount(node))
            case .attention:
                let a = try node.attentionAttributes()
                let x = try dims(node, 0)
                guard x.count == 3 else { continue }
                total += attentionPair(units: a.qkWidth, hidden: x[2], batch: x[0], seq: x[1])
                    + attentionPair(units: a.voWidth, hidden: x[2], batch: x[0], seq: x[1])
            case .feedForward:
                let w1 = try dims(node, 1)
                guard w1.count == 2 else { continue }
                total += feedForward(units: w1[1], hidden: w1[0], tokens: (try outputCount(node)) / max(w1[0], 1))
            default:
                continue
            }
        }
        return total
    }
}
