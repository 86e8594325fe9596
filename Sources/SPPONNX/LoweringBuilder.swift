import SPPCore
import SPPGraph

/// The nodes and constants of the graph being written, with fresh names for
/// the values lowering adds (derived from the node they replace).
final class LoweringBuilder {
    var nodes: [Node] = []
    var initializers: [String: Tensor]
    var report = ONNXLowering.Report()
    let infos: [String: ValueInfo]
    private var valueNames: Set<String>
    private var nodeNames: Set<String>

    init(_ graph: Graph, infos: [String: ValueInfo]) {
        initializers = graph.initializers
        self.infos = infos
        valueNames = Set(graph.initializers.keys).union(graph.inputs.map(\.name)).union(graph.outputs.map(\.name))
            .union(graph.nodes.flatMap { $0.inputs + $0.outputs })
        nodeNames = Set(graph.nodes.map(\.name))
    }

    /// A value name not used anywhere in the graph.
    func fresh(_ base: String) -> String {
        var name = base
        var k = 1
        while valueNames.contains(name) { name = "\(base)_\(k)"; k += 1 }
        valueNames.insert(name)
        return name
    }

    /// Adds a constant under a fresh name.
    func constant(_ base: String, _ t: Tensor) -> String {
        let name = fresh(base)
        initializers[name] = t
        return name
    }

    func scalar(_ base: String, _ v: Float) -> String { constant(base, Tensor([v], shape: [])) }
    func int64s(_ base: String, _ v: [Int]) -> String { constant(base, Tensor(v.map(Int64.init), shape: [v.count])) }

    /// Appends one node and returns its output: `output` when given (the value
    /// the replaced node defined), else a fresh name `base`.
    @discardableResult
    func emit(_ op: OpType, _ inputs: [String], _ base: String, output: String? = nil, _ attributes: [String: Attribute] = [:]) -> String {
        let out = output ?? fresh(base)
        var name = base
        var k = 1
        while nodeNames.contains(name) { name = "\(base)_\(k)"; k += 1 }
        nodeNames.insert(name)
        nodes.append(Node(name: name, op: op, inputs: inputs, outputs: [out], attributes: attributes))
        return out
    }

    func counted(_ node: Node) { report.rewritten[node.op.rawValue, default: 0] += 1 }

    /// `Gelu` (opset 20) as Erf or Tanh arithmetic.
    func gelu(_ node: Node) throws {
        guard let x = node.input(0), let y = node.outputs.first else {
            throw ONNXExportError.cannotLower(node: node.name, op: node.op.rawValue, reason: "needs one input and one output")
        }
        let approximate = try node.string("approximate", default: "none")
        guard approximate == "none" || approximate == "tanh" else {
            throw ONNXExportError.cannotLower(node: node.name, op: node.op.rawValue, reason: "approximate '\(approximate)' is not 'none' or 'tanh'")
        }
        activation(approximate == "tanh" ? .geluTanh : .gelu, x, node.name, output: y)
        counted(node)
    }

    /// The activations of `spp.FeedForward`, in the order of operations the
    /// kernel (`FeedForward.apply`) uses, so the float32 roundings agree.
    @discardableResult
    func activation(_ a: FeedForwardActivation, _ x: String, _ base: String, output: String? = nil) -> String {
        switch a {
        case .relu:
            return emit(.relu, [x], "\(base)/Relu", output: output)
        case .gelu:
            // 0.5·x·(1 + erf(x·(1/√2)))
            let t = emit(.mul, [x, scalar("\(base)/inv_sqrt2", 0.70710678118654752)], "\(base)/gelu_scaled")
            let e = emit(.erf, [t], "\(base)/gelu_erf")
            let p = emit(.add, [e, scalar("\(base)/one", 1)], "\(base)/gelu_1p")
            let h = emit(.mul, [x, scalar("\(base)/half", 0.5)], "\(base)/gelu_half")
            return emit(.mul, [h, p], "\(base)/gelu", output: output)
        case .geluTanh:
            // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
            var c = emit(.mul, [x, scalar("\(base)/gelu_c", 0.044715)], "\(base)/gelu_cx")
            c = emit(.mul, [c, x], "\(base)/gelu_cx2")
            c = emit(.mul, [c, x], "\(base)/gelu_cx3")
            let s = emit(.add, [x, c], "\(base)/gelu_inner")
            let t = emit(.mul, [s, scalar("\(base)/sqrt_2_over_pi", 0.79788456080286536)], "\(base)/gelu_scaled")
            let th = emit(.tanh, [t], "\(base)/gelu_tanh")
            let p = emit(.add, [th, scalar("\(base)/one", 1)], "\(base)/gelu_1p")
            let h = emit(.mul, [x, scalar("\(base)/half", 0.5)], "\(base)/gelu_half")
            return emit(.mul, [h, p], "\(base)/gelu", output: output)
        }
    }

    /// Opset 18 moved the axes of ReduceMean/Max/Min/Prod from an attribute to an input.
    func reduceWithAxesAttribute(_ node: Node) throws {
        var n = node
        var axes: [Int]? = try node.ints("axes")
        if let name = node.input(1) {
            guard let t = initializers[name], let v = t.integers else {
                throw ONNXExportError.cannotLower(node: node.name, op: node.op.rawValue,
                                                  reason: "its axes ('\(name)') are computed; opset \(ONNXLowering.opset) needs them as an attribute")
            }
            axes = v
        }
        n.inputs = Array(node.inputs.prefix(1))
        n.attributes["axes"] = nil
        n.attributes["noop_with_empty_axes"] = nil
        let noop = try node.int("noop_with_empty_axes", default: 0) != 0
        if let axes, !axes.isEmpty {
            n.attributes["axes"] = .ints(axes)
        } else if noop {
            // No axes and "no-op with empty axes": the input unchanged.
            n = Node(name: node.name, op: .identity, inputs: n.inputs, outputs: node.outputs)
        }
        if node.input(1) != nil || noop { counted(node) }
        nodes.append(n)
    }

    /// `num_outputs` (opset 18) allows a smaller last part; opset 17 splits equally
    /// by the number of outputs, or by explicit sizes.
    func split(_ node: Node) throws {
        var n = node
        guard let parts = try node.int("num_outputs") else { nodes.append(node); return }
        n.attributes["num_outputs"] = nil
        if node.input(1) == nil, let x = node.input(0), let shape = infos[x]?.shape, parts > 0 {
            let axis = try node.int("axis", default: 0)
            let a = axis < 0 ? axis + shape.count : axis
            if a >= 0, a < shape.count, let d = shape[a].fixedValue, d % parts != 0 {
                let chunk = (d + parts - 1) / parts
                let sizes = (0..<parts).map { max(0, min(chunk, d - $0 * chunk)) }
                n.inputs = [x, int64s("\(node.name)/split", sizes)]
            }
        }
        counted(node)
        nodes.append(n)
    }

    /// The `coerce_2d` form of old opsets: softmax over the flattened trailing axes.
    func softmax(_ node: Node) throws {
        var n = node
        let coerce = try node.int("coerce_2d", default: 0) != 0
        n.attributes["coerce_2d"] = nil
        guard coerce else { nodes.append(n); return }
        guard let x = node.input(0), let y = node.outputs.first else {
            throw ONNXExportError.cannotLower(node: node.name, op: node.op.rawValue, reason: "needs one input and one output")
        }
        let axis = try node.int("axis", default: 1)
        let flat = emit(.flatten, [x], "\(node.name)/flatten", ["axis": .int(axis)])
        let s = emit(node.op, [flat], "\(node.name)/2d", ["axis": .int(1)])
        let shape = emit(.shape, [x], "\(node.name)/shape")
        emit(.reshape, [s, shape], "\(node.name)/reshape", output: y)
        counted(node)
    }
}
