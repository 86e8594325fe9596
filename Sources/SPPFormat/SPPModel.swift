import SPPGraph

/// What a `.spp` file holds: the graph with its constant tensors (the
/// initializers) and the record of how it was made.
public struct SPPModel: @unchecked Sendable {
    public var graph: Graph
    public var provenance: Provenance

    public init(graph: Graph, provenance: Provenance) {
        self.graph = graph
        self.provenance = provenance
    }
}
