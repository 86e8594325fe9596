import SPPCore
import SPPGraph
import SPPPasses

/// What `spp inspect` says about attention and feed-forward blocks.
public enum BlockSummary {
    /// For an imported ONNX graph: the blocks that conversion would fuse, per
    /// layer, and the attention-like subgraphs it would leave, with reasons
    /// (the simplification passes and block discovery run on a copy).
    public static func discovered(in graph: Graph) throws -> [String] {
        var g = graph
        _ = try PassPipeline.run(&g, passes: PassPipeline.simplify)
        return try BlockDiscovery.run(g).1.lines
    }

    /// For a graph with fused nodes (a `.spp`): one line per fused node with
    /// its sizes and ranks. `shape` gives a constant's shape by name.
    public static func fusedNodes(in graph: Graph, shape: (String) -> [Int]?) -> [String] {
        let fused = graph.nodes.filter { $0.op == .attention || $0.op == .feedForward }
        guard !fused.isEmpty else { return ["fused blocks: none"] }
        var lines = ["fused blocks: \(fused.filter { $0.op == .attention }.count) attention, \(fused.filter { $0.op == .feedForward }.count) feed-forward"]
        for node in fused {
            switch node.op {
            case .attention:
                guard let a = try? node.attentionAttributes() else { lines.append("  \(node.name): attention with unreadable attributes"); continue }
                let d = node.input(AttentionAttributes.Input.wo.rawValue).flatMap(shape).flatMap(\.last).map(String.init) ?? "?"
                var s = "  \(node.name): attention D=\(d) H=\(a.heads) qk ranks \(ranks(a.qkRanks)), vo ranks \(ranks(a.voRanks)), scale \(a.scale)"
                let extras = [(a.causal, "causal"), (node.input(9) != nil, "mask"), (node.input(10) != nil, "position bias")].filter(\.0).map(\.1)
                if !extras.isEmpty { s += ", " + extras.joined(separator: ", ") }
                lines.append(s)
            default:
                let w1 = node.input(1).flatMap(shape)
                let (d, f) = (w1?.first.map(String.init) ?? "?", w1?.last.map(String.init) ?? "?")
                let act = (try? node.string("activation", default: "?")) ?? "?"
                lines.append("  \(node.name): feed-forward D=\(d) F=\(f) \(act)")
            }
        }
        return lines
    }

    /// `12×32 (Σ 384)` when every head has the same rank, else the list.
    static func ranks(_ r: [Int]) -> String {
        let total = r.reduce(0, +)
        if let first = r.first, r.allSatisfy({ $0 == first }) { return "\(r.count)×\(first) (Σ \(total))" }
        return "[" + r.map(String.init).joined(separator: ", ") + "] (Σ \(total))"
    }
}
