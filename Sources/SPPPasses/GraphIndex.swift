import SPPCore
import SPPGraph

/// Why a candidate subgraph was not rewritten (the message goes into the report).
struct MatchFailure: Error, CustomStringConvertible {
    let reason: String
    init(_ reason: String) { self.reason = reason }
    var description: String { reason }
}

/// A read-only index over a graph for pattern matching: which node produces
/// each value, which nodes read it, and what shape inference knows of it.
struct GraphIndex {
    let graph: Graph
    let analysis: ShapeInference.Analysis
    let graphOutputs: Set<String>
    let graphInputs: Set<String>
    private(set) var producers: [String: Int] = [:]
    private(set) var consumers: [String: [Int]] = [:]

    init(_ graph: Graph) throws {
        self.graph = graph
        analysis = try ShapeInference.analyze(graph)
        graphOutputs = Set(graph.outputs.map(\.name))
        graphInputs = Set(graph.inputs.map(\.name))
        for (i, node) in graph.nodes.enumerated() {
            for o in node.outputs where !o.isEmpty { producers[o] = i }
            var seen = Set<String>()
            // A node reading a value twice (Mul(h, h)) is one reader.
            for v in node.inputs where !v.isEmpty && seen.insert(v).inserted { consumers[v, default: []].append(i) }
        }
    }

    func node(_ i: Int) -> Node { graph.nodes[i] }

    /// The node computing `value`, or nil for graph inputs and constants.
    func producer(_ value: String) -> (index: Int, node: Node)? {
        guard let i = producers[value] else { return nil }
        return (i, graph.nodes[i])
    }

    /// Nodes reading `value`, each once, in graph order.
    func readers(_ value: String) -> [Int] { consumers[value] ?? [] }

    /// The only reader of `value`'s data when there is exactly one and the
    /// value is not a graph output. `Shape` and `Size` readers do not count:
    /// exporters read shapes everywhere to build Reshape targets, and
    /// `closed(_:output:)` checks where those go.
    func soleReader(_ value: String) -> (index: Int, node: Node)? {
        let r = readers(value).filter { graph.nodes[$0].op != .shape && graph.nodes[$0].op != .size }
        guard r.count == 1, !graphOutputs.contains(value) else { return nil }
        return (r[0], graph.nodes[r[0]])
    }

    /// Like `read by MatMul 'a', Add 'b'` (or `a graph output`), for messages.
    func readersDescription(_ value: String) -> String {
        var parts = readers(value).prefix(4).map { "\(graph.nodes[$0].op.rawValue) '\(graph.nodes[$0].name)'" }
        if readers(value).count > 4 { parts.append("…") }
        if graphOutputs.contains(value) { parts.append("the graph outputs") }
        return parts.isEmpty ? "read by nothing" : "read by " + parts.joined(separator: ", ")
    }

    /// A constant (initializer not shadowed by a graph input).
    func constant(_ value: String?) -> Tensor? {
        guard let value, !graphInputs.contains(value) else { return nil }
        return graph.initializers[value]
    }

    /// The value of a one-element numeric constant.
    func scalar(_ value: String?) -> Double? {
        guard let t = constant(value), t.count == 1 else { return nil }
        switch t.dtype {
        case .float32: return Double(t.pointer(as: Float.self)[0])
        case .float64: return t.pointer(as: Double.self)[0]
        default: return t.integers.map { Double($0[0]) }
        }
    }

    func shape(_ value: String) -> [Dim]? { analysis.infos[value]?.shape }
    func dtype(_ value: String) -> DType? { analysis.infos[value]?.dtype }

    /// `[batch, seq, 384]` for messages.
    func describe(_ value: String) -> String {
        analysis.infos[value]?.typeDescription ?? "[?]"
    }

    /// A Cast that leaves a float32 value as it is (exporters leave `Cast(to: float)` after Softmax).
    func isIdentityCast(_ node: Node) -> Bool {
        guard node.op == .cast, let x = node.input(0), let to = try? node.int("to"),
              let t = DType(rawValue: Int32(truncatingIfNeeded: to)) else { return false }
        return dtype(x) == t
    }

    /// For a Mul or Div by a one-element float constant: the factor it applies and the other operand.
    func scaling(_ node: Node) -> (factor: Double, other: String)? {
        guard node.inputs.count == 2 else { return nil }
        switch node.op {
        case .mul:
            if let s = floatScalar(node.inputs[1]) { return (s, node.inputs[0]) }
            if let s = floatScalar(node.inputs[0]) { return (s, node.inputs[1]) }
        case .div:
            if let s = floatScalar(node.inputs[1]), s != 0 { return (1 / s, node.inputs[0]) }
        default: break
        }
        return nil
    }

    private func floatScalar(_ value: String) -> Double? {
        guard let t = constant(value), t.dtype.isFloatingPoint else { return nil }
        return scalar(value)
    }

    /// Checks that no value computed inside `nodes` other than `output` is read
    /// outside them or is a graph output. Shape-only readers (a `Shape` of an
    /// inner value feeding, through integer ops, only the block's own Reshape
    /// targets — GPT-2's Gemm wrappers) are taken into the block. Returns the
    /// nodes the block replaces.
    func closed(_ nodes: Set<Int>, output: String) throws -> Set<Int> {
        var inner: [String] = []
        for i in nodes { inner += graph.nodes[i].outputs.filter { !$0.isEmpty && $0 != output } }
        var extra = Set<Int>()
        var queue: [(reader: Int, value: String)] = []
        for v in inner {
            if graphOutputs.contains(v) { throw MatchFailure("the inner value '\(v)' is a graph output") }
            queue += readers(v).filter { !nodes.contains($0) }.map { ($0, v) }
        }
        while let (i, value) = queue.popLast() {
            if nodes.contains(i) || extra.contains(i) { continue }
            let n = graph.nodes[i]
            let integerOnly = n.outputs.filter { !$0.isEmpty }.allSatisfy { o in dtype(o).map { !$0.isFloatingPoint && $0 != .bool } ?? false }
            guard integerOnly, n.outputs.allSatisfy({ !graphOutputs.contains($0) }) else {
                throw MatchFailure("the inner value '\(value)' is also read by \(n.op.rawValue) '\(n.name)'")
            }
            extra.insert(i)
            for o in n.outputs where !o.isEmpty { queue += readers(o).map { ($0, o) } }
        }
        return nodes.union(extra)
    }
}
