import SPPCore
import SPPGraph

/// Recognising a feed-forward block around its activation:
/// `linear₂(act(linear₁(x)))`, the activation being one of
/// `ValuePattern.activations` (erf GELU, tanh GELU, Relu in their exported
/// arrangements) or a `Gelu` op.
extension GraphIndex {
    /// The activation whose last node is `ai`: its kind, input `h` and nodes; nil when `ai` ends none.
    func activation(endingAt ai: Int) -> (FeedForwardActivation, String, Set<Int>)? {
        let n = node(ai)
        guard let out = n.outputs.first, !out.isEmpty else { return nil }
        if n.op == .gelu, let h = n.input(0) {
            let approximate = (try? n.string("approximate", default: "none")) ?? "none"
            guard approximate == "none" || approximate == "tanh" else { return nil }
            return (approximate == "tanh" ? .geluTanh : .gelu, h, [ai])
        }
        guard [.mul, .div, .relu].contains(n.op) else { return nil }
        for (kind, pattern) in ValuePattern.activations {
            if let m = pattern.match(out, in: self), let h = m.captures["h"] { return (kind, h, m.nodes) }
        }
        return nil
    }

    /// The feed-forward block around the activation ending at `ai`.
    func feedForward(activation kind: FeedForwardActivation, input h: String, nodes activationNodes: Set<Int>, endingAt ai: Int) throws -> BlockRewrite {
        let first = try linear(producing: h)
        let second = try linear(reading: node(ai).outputs[0])
        let (d, f) = (first.inputWidth, first.outputWidth)
        guard second.inputWidth == f, second.outputWidth == d else {
            throw MatchFailure("the linear layers are \(Tensor.describe(first.weight.shape)) and \(Tensor.describe(second.weight.shape)), not [D, F] and [F, D]")
        }
        guard let xs = shape(first.x), xs.last == .fixed(d), dtype(first.x) == .float32 else {
            throw MatchFailure("the block input \(describe(first.x)) is not float32 [..., \(d)]")
        }
        guard shape(second.output) == xs else {
            throw MatchFailure("the block output \(describe(second.output)) differs from its input \(describe(first.x))")
        }
        let replaced = try closed(first.nodes.union(activationNodes).union(second.nodes), output: second.output)
        var block = BlockReport.Block(kind: .feedForward, layer: 0, node: "", hidden: d)
        (block.inner, block.activation, block.replacedNodes) = (f, kind.rawValue, replaced.count)
        return BlockRewrite(op: .feedForward, nodes: replaced, output: second.output,
                            inputs: [.value(first.x), .constant("W1", first.weight), .constant("b1", first.biasVector),
                                     .constant("W2", second.weight), .constant("b2", second.biasVector)],
                            attributes: ["activation": .string(kind.rawValue)], block: block)
    }
}
