import SPPGraph

/// What a `.spp` file holds: the graph with its constant tensors (the
/// initializers) and the record of how it was made.
public struct SPPModel: @unchecked Sendable {
    public var graph: Graph
    public var provenance: Provenance
    /// The pruning path, in a pruned model. Its units' weights are stored as
    /// row-chunk tensors among the initializers.
    public var pruningPath: PruningPath?
    public var costTable: [CostLevel]
    /// Constants stored in row chunks (their chunks are among the initializers).
    public var lookupTables: [LookupTable]
    /// Initializers stored at a lower precision than their value, by name: such
    /// an initializer holds the stored elements (float16, bfloat16, int8), and
    /// an int8 one's scales are another initializer.
    public var encodings: [String: ValueEncoding]

    public init(graph: Graph, provenance: Provenance, pruningPath: PruningPath? = nil, costTable: [CostLevel] = [],
                lookupTables: [LookupTable] = [], encodings: [String: ValueEncoding] = [:]) {
        self.graph = graph
        self.provenance = provenance
        self.pruningPath = pruningPath
        self.costTable = costTable
        self.lookupTables = lookupTables
        self.encodings = encodings
    }
}
