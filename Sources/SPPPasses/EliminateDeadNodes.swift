import SPPGraph

/// Removes nodes none of whose outputs are read, and initializers nothing reads.
public struct EliminateDeadNodes: GraphPass {
    public let name = "eliminate-dead-nodes"
    public init() {}

    public func run(on graph: inout Graph) throws -> Int {
        var live = Set(graph.outputs.map(\.name))
        var kept: [Node] = []
        for node in graph.nodes.reversed() where node.outputs.contains(where: live.contains) {
            kept.append(node)
            live.formUnion(node.inputs.filter { !$0.isEmpty })
        }
        let removed = graph.nodes.count - kept.count
        graph.nodes = kept.reversed()
        let before = graph.initializers.count
        graph.initializers = graph.initializers.filter { live.contains($0.key) }
        return removed + (before - graph.initializers.count)
    }
}
