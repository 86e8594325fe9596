import CKernels
import Dispatch
import SPPCore
import SPPFormat
import SPPGraph
import Synchronization

/// A `.spp` model ready to run: the public entry point for apps that embed the runtime.
///
///     let model = try Model(path: "model.spp")
///     let outputs = try model.run(["input_ids": ids, "attention_mask": mask, "token_type_ids": types])
public final class Model: @unchecked Sendable {
    public let program: Program
    public let provenance: Provenance
    /// The method of a pruned model's path (nil: dense). The path itself is the file's
    /// (`SPPReader.pruningPath`): its unit ranks and chunk names are not held for running.
    public let pruningMethod: String?
    public let costTable: [CostLevel]
    /// The keep ratio this model was loaded at.
    public let keep: Double
    /// What its GEMM weights run as.
    public var weights: WeightPrecision { program.options.weights ?? .fp32 }
    /// Bytes of tensor frames read from the file: when loading (a pruned model at
    /// a low keep reads only the chunks it keeps) and since, for lookup-table rows.
    public var storedBytesRead: Int { loadBytesRead + lookupSources.reduce(0) { $0 + $1.bytesRead } }
    let loadBytesRead: Int
    /// Bytes the frames read when loading decompressed to (the weights' stored size).
    public let loadBytesDecoded: Int
    /// Where the load's time went: reading the header, planning, reading and decoding (refits included), putting the weights in the graph, building the program, releasing freed memory.
    public let loadStages: [(stage: String, seconds: Double)]
    let lookupSources: [LookupSource]

    /// Bytes of weights held: the program's (`Program.weightBytes`) and the
    /// lookup-table chunks read so far.
    public var weightBytes: Int { program.weightBytes + lookupSources.reduce(0) { $0 + $1.bytesHeld } }

    /// Loads and checks a `.spp` file; throws `FormatError` for a bad file and
    /// `RuntimeError` or `GraphError` for a graph the runtime cannot execute.
    /// `keep` (0 < keep ≤ 1) is the fraction of prunable parameters kept, for a
    /// model converted with a pruning method; a dense model loads only at 1.
    /// `repair`: refit pruned feed-forward blocks by least squares where the file
    /// stores their calibration statistics (off: plain truncation, to compare).
    /// `options.weights`: nil runs the weights as the file stores them (int8 weights
    /// as int8, taken as stored); `.int8` quantizes float32 weights at load, `.fp32`
    /// expands every stored precision to float32.
    public convenience init(path: String, keep: Double = 1, repair: Bool = true, options: RuntimeOptions = .init()) throws {
        try self.init(reader: SPPReader(path: path), keep: keep, repair: repair, options: options)
    }

    /// Loads from an open reader: only the tensors the keep level needs are read,
    /// and lookup tables (token embeddings) are read by row when inputs use them.
    public init(reader: SPPReader, keep: Double = 1, repair: Bool = true, options: RuntimeOptions = .init()) throws {
        var options = options
        options.weights = options.weights ?? .stored(in: reader)
        let (built, tables, bytesRead, bytesDecoded, stages) = try Self.build(reader, keep: keep, repair: repair, options: options)
        var clock = StageClock()
        // What loading freed (read buffers, float32 weights that int8 kernels replaced, all released with
        // `build`'s locals) goes back to the system: glibc keeps freed heap memory, and resident memory is
        // what the model costs.
        spp_release_free_memory()
        clock.lap("release")
        (program, lookupSources, loadBytesRead, loadBytesDecoded, loadStages) = (built, tables, bytesRead, bytesDecoded, stages + clock.stages)
        provenance = reader.provenance
        pruningMethod = reader.pruningPath?.method
        costTable = reader.costTable
        self.keep = keep
    }

    /// The program and what loading it read; the loaded graph is released on return.
    private static func build(_ reader: SPPReader, keep: Double, repair: Bool, options: RuntimeOptions) throws
        -> (Program, [LookupSource], Int, Int, [(stage: String, seconds: Double)]) {
        var loaded = try PathLoader.load(reader, keep: keep, repair: repair, weights: options.weights ?? .fp32, threads: options.loadThreads,
                                         joinQueryKeyValue: true)
        var clock = StageClock()
        let tables = try reader.lookupTables.map { try LookupSource(reader: reader, table: $0) }
        // The program gets the only copy of the graph, so that it can drop each weight a kernel takes over.
        var graph = Graph(inputs: [], outputs: [], initializers: [:], nodes: [])
        swap(&graph, &loaded.graph)
        let int8Weights = loaded.int8Weights, packed = loaded.packed
        loaded.int8Weights = [:]
        loaded.packed = .init()
        let program = try Program(graph: consume graph, options: options,
                                  lookupTables: Dictionary(tables.map { ($0.table.name, $0) }, uniquingKeysWith: { a, _ in a }),
                                  int8Weights: int8Weights, packed: packed)
        clock.lap("program")
        return (program, tables, loaded.bytesRead, loaded.bytesDecoded, loaded.stages + clock.stages)
    }

    /// Wraps a graph already in memory (for example one just imported).
    public init(graph: Graph, provenance: Provenance = .init(), options: RuntimeOptions = .init()) throws {
        program = try Program(graph: graph, options: options)
        self.provenance = provenance
        pruningMethod = nil
        costTable = []
        keep = 1
        loadBytesRead = 0
        loadBytesDecoded = 0
        loadStages = []
        lookupSources = []
    }

    public var inputs: [ValueInfo] { program.graph.inputs }
    public var outputs: [ValueInfo] { program.graph.outputs }

    /// Runs the model; inputs are checked against the declared names, types and shapes.
    public func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        let outputs = try program.run(inputs)
        // What the first run freed goes back to the system, as loading's did: oneDNN's
        // temporaries as it built its kernels, and the file's tables (the reader is
        // usually let go after loading). The heap would keep them resident for good.
        if !ranOnce.exchange(true, ordering: .relaxed) { spp_release_free_memory() }
        return outputs
    }
    private let ranOnce = Atomic(false)
}

/// Seconds between laps, by stage name (what a load reports it spent).
struct StageClock {
    private(set) var stages: [(stage: String, seconds: Double)] = []
    private var last = DispatchTime.now().uptimeNanoseconds

    mutating func lap(_ stage: String) {
        let now = DispatchTime.now().uptimeNanoseconds
        stages.append((stage, Double(now - last) / 1e9))
        last = now
    }
}
