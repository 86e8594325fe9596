import SPPCore
import SPPGraph

/// Pair discovery: replaces every multi-head self-attention block and every
/// feed-forward block by one fused node (`spp.Attention`, `spp.FeedForward`;
/// contracts on `OpType`), so that later passes can shrink their inner
/// dimensions (the QK, VO and FFN pairs).
///
/// Runs after `fold-shape-values` and `fold-constants` (Reshape targets and
/// scales must be constants) and before `eliminate-dead-nodes` (which removes
/// what the fused nodes no longer read: mask expansions, shape computations,
/// the original weights). Changes: the number of blocks fused. Use
/// `BlockDiscovery.run` for the report of what was found and what was not.
public struct DiscoverBlocks: GraphPass {
    public let name = "discover-blocks"
    public init() {}

    public func run(on graph: inout Graph) throws -> Int {
        let (fused, report) = try BlockDiscovery.run(graph)
        graph = fused
        return report.blocks.count
    }
}

/// Block discovery with its report.
public enum BlockDiscovery {
    /// Finds the blocks of `graph` (after shape values and constants are
    /// folded) and returns the graph with each replaced by its fused node,
    /// and the report: the blocks per layer, and every Softmax (or activation
    /// between linear layers) left alone with the reason. A block is rewritten
    /// only when everything checks: constant weights, shapes from
    /// `ShapeInference.analyze`, head count and size from the head-split
    /// Reshapes, and no inner value read outside the block.
    public static func run(_ graph: Graph) throws -> (Graph, BlockReport) {
        let index = try GraphIndex(graph)
        var accepted: [BlockRewrite] = []
        var misses: [(position: Int, miss: BlockReport.Miss)] = []
        var taken = Set<Int>()

        func consider(_ position: Int, _ kind: BlockReport.Kind, _ make: () throws -> BlockRewrite) {
            let anchor = graph.nodes[position].name
            do {
                let r = try make()
                if let other = accepted.first(where: { !$0.nodes.isDisjoint(with: r.nodes) }) {
                    throw MatchFailure("it overlaps the \(other.block.kind.rawValue) block ending at '\(other.output)'")
                }
                taken.formUnion(r.nodes)
                accepted.append(r)
            } catch {
                misses.append((position, .init(kind: kind, node: anchor, reason: (error as? MatchFailure)?.reason ?? "\(error)")))
            }
        }
        for (i, n) in graph.nodes.enumerated() where n.op == .softmax {
            consider(i, .attention) { try index.attention(softmax: i) }
        }
        for i in graph.nodes.indices where !taken.contains(i) {
            guard let (kind, h, nodes) = index.activation(endingAt: i) else { continue }
            consider(i, .feedForward) { try index.feedForward(activation: kind, input: h, nodes: nodes, endingAt: i) }
        }

        // A fused node goes where the node computing the block's output was:
        // its inputs (x, mask, bias) are read by that node's ancestors, so they
        // are defined before it, and the output's readers all come after it.
        func position(_ r: BlockRewrite) -> Int { index.producers[r.output]! }
        accepted.sort { position($0) < position($1) }
        var names = Set(graph.nodes.map(\.name))
        var values = Set(graph.initializers.keys).union(graph.inputs.map(\.name)).union(graph.nodes.flatMap(\.outputs))
        func unique(_ base: String, in used: inout Set<String>) -> String {
            var name = base, k = 1
            while used.contains(name) { name = "\(base)_\(k)"; k += 1 }
            used.insert(name)
            return name
        }
        var out = graph
        var replacement: [Int: Node] = [:]
        var report = BlockReport()
        var layers: [BlockReport.Kind: Int] = [:]
        for r in accepted {
            var block = r.block
            block.layer = layers[block.kind, default: 0]
            layers[block.kind] = block.layer + 1
            let prefix = commonPrefix(r.nodes.sorted().map { graph.nodes[$0].name })
            let base = prefix.isEmpty ? "\(r.op == .attention ? "attention" : "feed_forward")_\(block.layer)" : prefix + "/" + r.op.rawValue
            block.node = unique(base, in: &names)
            var inputs: [String] = []
            for input in r.inputs {
                switch input {
                case let .value(v): inputs.append(v)
                case .absent: inputs.append("")
                case let .constant(role, t):
                    let name = unique("\(block.node)::\(role)", in: &values)
                    out.initializers[name] = t
                    inputs.append(name)
                }
            }
            while inputs.last == "" { inputs.removeLast() }
            replacement[position(r)] = Node(name: block.node, op: r.op, inputs: inputs, outputs: [r.output], attributes: r.attributes)
            report.blocks.append(block)
        }
        out.nodes = graph.nodes.enumerated().compactMap { i, n in replacement[i] ?? (taken.contains(i) ? nil : n) }
        report.unmatched = misses.sorted { $0.position < $1.position }.map(\.miss)
        return (out, report)
    }

    /// The longest common prefix of node names, up to its last `/` (exclusive): the block's scope.
    static func commonPrefix(_ names: [String]) -> String {
        guard var prefix = names.first.map(Array.init) else { return "" }
        for name in names.dropFirst() {
            let chars = Array(name)
            var k = 0
            while k < prefix.count, k < chars.count, prefix[k] == chars[k] { k += 1 }
            prefix = Array(prefix[..<k])
        }
        guard let slash = prefix.lastIndex(of: "/") else { return "" }
        return String(prefix[..<slash])
    }
}

/// One block found, to be replaced by a fused node.
struct BlockRewrite {
    enum Input {
        /// An existing value (x, mask, bias).
        case value(String)
        /// A new constant, named after the fused node and this role (`Wq`, `b1`, …).
        case constant(String, Tensor)
        /// An omitted optional input.
        case absent
    }

    var op: OpType
    /// The nodes the fused node replaces.
    var nodes: Set<Int>
    /// The value the block computes (kept, so readers are unchanged).
    var output: String
    var inputs: [Input]
    var attributes: [String: Attribute]
    /// The report entry (layer and node name filled in when applied).
    var block: BlockReport.Block
}
