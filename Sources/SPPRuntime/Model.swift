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

    /// Loads and checks a `.spp` file; throws `FormatError` for a bad file and
    /// `RuntimeError` or `GraphError` for a graph the runtime cannot execute.
    public init(path: String, options: RuntimeOptions = .init()) throws {
        let loaded = try SPPReader(path: path).loadModel()
        program = try Program(graph: loaded.graph, options: options)
        provenance = loaded.provenance
    }

    /// Wraps a graph already in memory (for example one just imported).
    public init(graph: Graph, provenance: Provenance = .init(), options: RuntimeOptions = .init()) throws {
        program = try Program(graph: graph, options: options)
        self.provenance = provenance
    }

    public var inputs: [ValueInfo] { program.graph.inputs }
    public var outputs: [ValueInfo] { program.graph.outputs }

    /// Runs the model; inputs are checked against the declared names, types and shapes.
    public func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        try program.run(inputs)
    }
}
