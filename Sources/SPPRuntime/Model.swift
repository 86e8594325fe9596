import SPPCore
import SPPFormat
import SPPGraph

/// A `.spp` model ready to run: the public entry point for apps that embed the runtime.
///
///     let model = try Model(path: "model.spp")
///     let outputs = try model.run(["input_ids": ids, "attention_mask": mask, "token_type_ids": types])
public final class Model: @unchecked Sendable {
    public let program: Program
    public let provenance: Provenance
    /// The pruning path, for a pruned model.
    public let pruningPath: PruningPath?
    public let costTable: [CostLevel]
    /// The keep ratio this model was loaded at.
    public let keep: Double
    /// Bytes of tensor frames read from the file: when loading (a pruned model at
    /// a low keep reads only the chunks it keeps) and since, for lookup-table rows.
    public var storedBytesRead: Int { loadBytesRead + lookupSources.reduce(0) { $0 + $1.bytesRead } }
    let loadBytesRead: Int
    let lookupSources: [LookupSource]

    /// Loads and checks a `.spp` file; throws `FormatError` for a bad file and
    /// `RuntimeError` or `GraphError` for a graph the runtime cannot execute.
    /// `keep` (0 < keep ≤ 1) is the fraction of prunable parameters kept, for a
    /// model converted with a pruning method; a dense model loads only at 1.
    /// `repair`: refit pruned feed-forward blocks by least squares where the file
    /// stores their calibration statistics (off: plain truncation, to compare).
    public convenience init(path: String, keep: Double = 1, repair: Bool = true, options: RuntimeOptions = .init()) throws {
        try self.init(reader: SPPReader(path: path), keep: keep, repair: repair, options: options)
    }

    /// Loads from an open reader: only the tensors the keep level needs are read,
    /// and lookup tables (token embeddings) are read by row when inputs use them.
    public init(reader: SPPReader, keep: Double = 1, repair: Bool = true, options: RuntimeOptions = .init()) throws {
        let (graph, bytesRead) = try PathLoader.load(reader, keep: keep, repair: repair)
        let tables = try reader.lookupTables.map { try LookupSource(reader: reader, table: $0) }
        lookupSources = tables
        program = try Program(graph: consume graph, options: options, lookupTables: Dictionary(tables.map { ($0.table.name, $0) }, uniquingKeysWith: { a, _ in a }))
        provenance = reader.provenance
        pruningPath = reader.pruningPath
        costTable = reader.costTable
        self.keep = keep
        loadBytesRead = bytesRead
    }

    /// Wraps a graph already in memory (for example one just imported).
    public init(graph: Graph, provenance: Provenance = .init(), options: RuntimeOptions = .init()) throws {
        program = try Program(graph: graph, options: options)
        self.provenance = provenance
        pruningPath = nil
        costTable = []
        keep = 1
        loadBytesRead = 0
        lookupSources = []
    }

    public var inputs: [ValueInfo] { program.graph.inputs }
    public var outputs: [ValueInfo] { program.graph.outputs }

    /// Runs the model; inputs are checked against the declared names, types and shapes.
    public func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        try program.run(inputs)
    }
}
