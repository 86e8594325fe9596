/// The attributes of a fused `spp.Attention` node, read and checked once
/// (shape inference, the runtime and the passes all go through here).
public struct AttentionAttributes: Sendable, Equatable {
    /// H.
    public var heads: Int
    /// Inner width of the q·k product of each head (H entries, each ≥ 0).
    public var qkRanks: [Int]
    /// Inner width of v (and rows of W_o) of each head (H entries, each ≥ 0).
    public var voRanks: [Int]
    /// Multiplies q·k; the original 1/√d_head, kept when ranks shrink.
    public var scale: Float
    /// Key j > query i excluded from the softmax.
    public var causal: Bool

    public init(heads: Int, qkRanks: [Int], voRanks: [Int], scale: Float, causal: Bool) {
        self.heads = heads
        self.qkRanks = qkRanks
        self.voRanks = voRanks
        self.scale = scale
        self.causal = causal
    }

    /// Σqk: columns of Wq and Wk.
    public var qkWidth: Int { qkRanks.reduce(0, +) }
    /// Σvo: columns of Wv, rows of Wo.
    public var voWidth: Int { voRanks.reduce(0, +) }

    /// The node attributes that encode these values.
    public var attributes: [String: Attribute] {
        ["heads": .int(heads), "qk_ranks": .ints(qkRanks), "vo_ranks": .ints(voRanks),
         "scale": .float(scale), "causal": .int(causal ? 1 : 0)]
    }

    /// Input positions of a `spp.Attention` node.
    public enum Input: Int, CaseIterable, Sendable {
        case x, wq, bq, wk, bk, wv, bv, wo, bo, mask, bias
    }
}

/// The activations a fused `spp.FeedForward` node may name.
public enum FeedForwardActivation: String, CaseIterable, Sendable {
    /// x · Φ(x), with the exact normal CDF (erf).
    case gelu
    /// 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))).
    case geluTanh = "gelu_tanh"
    case relu
}

extension Node {
    /// The attributes of an `spp.Attention` node, checked for consistency:
    /// `heads` > 0, `qk_ranks` and `vo_ranks` with one entry ≥ 0 per head.
    public func attentionAttributes() throws -> AttentionAttributes {
        func bad(_ key: String, _ reason: String) -> GraphError {
            .badAttribute(node: name, op: op.rawValue, attribute: key, reason: reason)
        }
        guard let heads = try int("heads") else { throw bad("heads", "required") }
        guard heads > 0, heads <= 1 << 16 else { throw bad("heads", "\(heads) is out of range") }
        var ranks: [[Int]] = []
        for key in ["qk_ranks", "vo_ranks"] {
            guard let r = try ints(key) else { throw bad(key, "required") }
            guard r.count == heads else { throw bad(key, "\(r.count) ranks for \(heads) heads") }
            guard r.allSatisfy({ $0 >= 0 && $0 <= 1 << 24 }) else { throw bad(key, "ranks \(r) must be in 0...2^24") }
            ranks.append(r)
        }
        let scale = try float("scale", default: 1)
        guard scale.isFinite else { throw bad("scale", "\(scale) is not finite") }
        let causal = try int("causal", default: 0)
        guard causal == 0 || causal == 1 else { throw bad("causal", "\(causal) is not 0 or 1") }
        return AttentionAttributes(heads: heads, qkRanks: ranks[0], voRanks: ranks[1], scale: scale, causal: causal == 1)
    }

    /// The `activation` of an `spp.FeedForward` node.
    public func feedForwardActivation() throws -> FeedForwardActivation {
        let s = try string("activation", default: "")
        guard let a = FeedForwardActivation(rawValue: s) else {
            throw GraphError.badAttribute(node: name, op: op.rawValue, attribute: "activation",
                                          reason: "'\(s)' is not one of \(FeedForwardActivation.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return a
    }
}
