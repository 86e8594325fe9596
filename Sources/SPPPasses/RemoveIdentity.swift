import SPPGraph

/// Replaces reads of an Identity's output with its input. An Identity whose
/// output is a graph output stays, since the output name must survive.
public struct RemoveIdentity: GraphPass {
    public let name = "remove-identity"
    public init() {}

    public func run(on graph: inout Graph) throws -> Int {
        let outputs = Set(graph.outputs.map(\.name))
        var rename: [String: String] = [:]
        var kept: [Node] = []
        for var node in graph.nodes {
            node.inputs = node.inputs.map { rename[$0] ?? $0 }
            if node.op == .identity, let input = node.input(0), let output = node.outputs.first, !outputs.contains(output) {
                rename[output] = input
                continue
            }
            kept.append(node)
        }
        let removed = graph.nodes.count - kept.count
        graph.nodes = kept
        return removed
    }
}
