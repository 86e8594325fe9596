import SPPGraph

/// A small pattern over a graph, matched backwards from a value: the data
/// that describes exporters' arrangements of an activation (see
/// `ValuePattern.activations`).
indirect enum ValuePattern: Sendable {
    /// Any value, bound to a name; every use of the name must bind the same value.
    case capture(String)
    /// A one-element float constant within 1e-3 (relative) of the number.
    case constant(Double)
    /// The first output of a node of this op whose inputs match, in either
    /// order for Add and Mul.
    case node(OpType, [ValuePattern])
    /// The first alternative that matches.
    case anyOf([ValuePattern])

    /// What a match found: the captured values and the matched nodes.
    struct Match {
        var captures: [String: String] = [:]
        var nodes: Set<Int> = []
    }

    /// Matches `value` against the pattern; nil when it does not match.
    func match(_ value: String, in index: GraphIndex) -> Match? {
        match(value, index, Match())
    }

    private func match(_ value: String, _ index: GraphIndex, _ m: Match) -> Match? {
        switch self {
        case let .capture(name):
            if let bound = m.captures[name] { return bound == value ? m : nil }
            var out = m
            out.captures[name] = value
            return out
        case let .constant(want):
            guard let t = index.constant(value), t.dtype.isFloatingPoint, let got = index.scalar(value) else { return nil }
            return Swift.abs(got - want) <= 1e-3 * Swift.max(Swift.abs(want), 1e-6) ? m : nil
        case let .node(op, inputs):
            guard let (i, n) = index.producer(value), n.op == op, n.outputs.first == value,
                  n.inputs.count == inputs.count else { return nil }
            var base = m
            base.nodes.insert(i)
            let orders: [[Int]] = (op == .add || op == .mul) && inputs.count == 2 ? [[0, 1], [1, 0]] : [Array(inputs.indices)]
            for order in orders {
                var current: Match? = base
                for (k, p) in order.enumerated() {
                    guard let c = current else { break }
                    current = inputs[p].match(n.inputs[k], index, c)
                }
                if let c = current { return c }
            }
            return nil
        case let .anyOf(alternatives):
            for p in alternatives { if let c = p.match(value, index, m) { return c } }
            return nil
        }
    }
}

extension ValuePattern {
    /// `a · b · c` in any association and order of the two Muls.
    static func product(_ a: ValuePattern, _ b: ValuePattern, _ c: ValuePattern) -> ValuePattern {
        .anyOf([.node(.mul, [.node(.mul, [a, b]), c]), .node(.mul, [.node(.mul, [a, c]), b]), .node(.mul, [.node(.mul, [b, c]), a])])
    }

    /// `0.5 · h · inner` as exporters write it (any association), or `h · inner / 2`.
    static func halfProduct(_ h: ValuePattern, _ inner: ValuePattern) -> ValuePattern {
        .anyOf([product(h, .constant(0.5), inner), .node(.div, [.node(.mul, [h, inner]), .constant(2)])])
    }

    /// The activation of a feed-forward block as exported, with the
    /// activation's input captured as `h`. The op forms (`Gelu`, `Relu`) are
    /// here too; `Gelu`'s `approximate` attribute is read by the caller.
    static let activations: [(FeedForwardActivation, ValuePattern)] = {
        let h = ValuePattern.capture("h")
        // h · 0.5 · (1 + erf(h / √2)), or with h · (1/√2).
        let erfArgument = ValuePattern.anyOf([.node(.div, [h, .constant(2.0.squareRoot())]),
                                              .node(.mul, [h, .constant(1 / 2.0.squareRoot())])])
        let erfGelu = halfProduct(h, .node(.add, [.node(.erf, [erfArgument]), .constant(1)]))
        // h · 0.5 · (1 + tanh(√(2/π) · (h + 0.044715 · h³))), h³ as Pow(h, 3) or h · h · h.
        let cube = ValuePattern.anyOf([.node(.pow, [h, .constant(3)]), .node(.mul, [.node(.mul, [h, h]), h])])
        let inner = ValuePattern.node(.add, [h, .node(.mul, [cube, .constant(0.044715)])])
        let tanhArgument = ValuePattern.node(.mul, [inner, .constant((2 / Double.pi).squareRoot())])
        let tanhGelu = halfProduct(h, .node(.add, [.node(.tanh, [tanhArgument]), .constant(1)]))
        return [(.gelu, erfGelu), (.geluTanh, tanhGelu), (.relu, .node(.relu, [h]))]
    }()
}
