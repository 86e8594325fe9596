/// What block discovery found: every fused attention and feed-forward block,
/// and every attention-like subgraph (a Softmax) or activation between linear
/// layers that was left alone, with the reason.
public struct BlockReport: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case attention
        case feedForward = "feed-forward"
    }

    /// One fused block.
    public struct Block: Sendable, Equatable {
        public var kind: Kind
        /// Position among the blocks of the same kind, in graph order (the transformer layer).
        public var layer: Int
        /// The fused node.
        public var node: String
        /// D: the block's input and output width.
        public var hidden: Int
        /// H (attention).
        public var heads: Int = 0
        /// Per-head width of q and k (attention).
        public var headSize: Int = 0
        /// Per-head width of v (attention; usually equal to `headSize`).
        public var valueHeadSize: Int = 0
        /// F: hidden units (feed-forward).
        public var inner: Int = 0
        /// `FeedForwardActivation` raw value (feed-forward).
        public var activation: String = ""
        /// Attention: causal, with an additive mask, with a position bias.
        public var causal = false, hasMask = false, hasBias = false
        /// How many nodes the fused node replaced.
        public var replacedNodes = 0

        /// Like `attention D=384 H=12 d_head=32 (mask)` or `feed-forward D=384 F=1536 gelu`.
        public var summary: String {
            switch kind {
            case .attention:
                var s = "attention D=\(hidden) H=\(heads) d_head=\(headSize)"
                if valueHeadSize != headSize { s += " d_v=\(valueHeadSize)" }
                let extras = [(causal, "causal"), (hasMask, "mask"), (hasBias, "position bias")].filter(\.0).map(\.1)
                if !extras.isEmpty { s += " (" + extras.joined(separator: ", ") + ")" }
                return s
            case .feedForward:
                return "feed-forward D=\(hidden) F=\(inner) \(activation)"
            }
        }
    }

    /// A candidate that was not fused.
    public struct Miss: Sendable, Equatable {
        public var kind: Kind
        /// The anchor: the Softmax (attention) or the activation's last node (feed-forward).
        public var node: String
        public var reason: String
    }

    public var blocks: [Block] = []
    public var unmatched: [Miss] = []

    public init(blocks: [Block] = [], unmatched: [Miss] = []) {
        self.blocks = blocks
        self.unmatched = unmatched
    }

    public func count(_ kind: Kind) -> Int { blocks.filter { $0.kind == kind }.count }

    /// Human-readable lines: blocks per layer, then what was left and why.
    public var lines: [String] {
        var out = ["blocks found: \(count(.attention)) attention, \(count(.feedForward)) feed-forward"]
        let layers = Set(blocks.map(\.layer)).sorted()
        for layer in layers {
            let parts = blocks.filter { $0.layer == layer }.map(\.summary)
            out.append("  layer \(layer): " + parts.joined(separator: "; "))
        }
        if !unmatched.isEmpty {
            out.append("not fused: \(unmatched.count)")
            for m in unmatched { out.append("  \(m.kind.rawValue) at '\(m.node)': \(m.reason)") }
        }
        return out
    }
}
