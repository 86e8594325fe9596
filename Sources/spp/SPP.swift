import ArgumentParser
import Foundation
import SPPCore
import SPPFormat
import SPPGraph
import SPPPasses
import SPPRuntime
import SPPTools


@main
struct SPP: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spp",
        abstract: "Convert transformer models from ONNX to the native .spp format and inspect them.",
        version: ToolVersion.current,
        subcommands: [Convert.self, Inspect.self, Eval.self, Bench.self, Export.self])
}

extension StoragePrecision: ExpressibleByArgument {}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Import an ONNX model and write a .spp file (or write a float32 .spp again at another --weights precision).")

    @Argument(help: "The ONNX model to convert, or a float32 .spp to store at --weights.") var input: String
    @Option(name: .shortAndLong, help: "Where to write the .spp file.") var output: String
    @Option(help: "Pruning method: \(Converter.Method.allCases.map(\.rawValue).joined(separator: ", ")).")
    var method: String = "none"
    @Option(name: .customLong("disable-pass"), help: "Skip a graph pass by name (repeatable).") var disabledPasses: [String] = []
    @Option(help: "zstd compression level.") var compressionLevel: Int = 3
    @Option(help: "Storage precision of the weight matrices: fp32, fp16, bf16, or int8 (per output column; runs int8 by default). Token embeddings and FFN repair data go to fp16 (bf16 with bf16).")
    var weights: StoragePrecision = .fp32
    @Option(help: "Calibration texts, one JSON object per line (data-aware methods).") var calibration: String?
    @Option(help: "The JSONL field holding the text.") var field: String = "text"
    @Option(help: "tokenizer.json for the calibration texts.") var tokenizer: String?
    @Option(help: "Tokens per calibration text, at most.") var maxLength: Int = 128
    @Option(help: "Calibration texts to use (the first K).") var samples: Int = 512
    @Option(help: "spp: damping κ of the path (Γ = κ·shrink(Z, λ)).") var kappa: Double?
    @Option(help: "spp: threshold λ a unit's Z must cross to enter the path.") var lambda: Double?
    @Option(help: "spp: AdamW learning rate of the masks.") var lr: Double?
    @Option(help: "spp: coupling ν between masks and the sparse estimate.") var nu: Double?
    @Option(help: "spp: iterations of the path.") var iterations: Int?
    @Option(help: "Relative ridge of the load-time least-squares refit of pruned FFN blocks (svd, spp); 0 stores no refit data.") var repairRidge: Double = Converter.Options().repairRidge
    @Option(help: "svd, spp: block loss normalisation: \(SolutionPath.Normalization.allCases.map(\.rawValue).joined(separator: ", ")).")
    var pathLoss: String?

    func run() throws {
        guard let m = Converter.Method(rawValue: method) else {
            throw ValidationError("unknown method '\(method)'; available: \(Converter.Method.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var options = Converter.Options()
        options.method = m
        options.disabledPasses = Set(disabledPasses)
        options.compressionLevel = compressionLevel
        options.calibration = calibration
        options.field = field
        options.tokenizer = tokenizer
        options.maxLength = maxLength
        options.samples = samples
        if let kappa { options.path.kappa = kappa }
        if let lambda { options.path.lambda = lambda }
        if let lr { options.path.learningRate = lr }
        if let nu { options.path.nu = nu }
        if let iterations { options.path.iterations = iterations }
        options.repairRidge = repairRidge
        options.weights = weights
        if let pathLoss {
            guard let n = SolutionPath.Normalization(rawValue: pathLoss) else {
                throw ValidationError("unknown --path-loss '\(pathLoss)'; available: \(SolutionPath.Normalization.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            options.path.normalization = n
        }
        let summary = CommandLineErrors.report { try Converter(options: options).convert(input: input, output: output, progress: { Report.stderr("… " + $0) }) }
        print("converted \(input) → \(output)")
        print("  source: \(summary.producer.isEmpty ? "unknown producer" : summary.producer), opset \(summary.opsetVersion), \(Report.bytes(summary.sourceBytes))")
        print("  nodes: \(summary.nodesBefore) → \(summary.nodesAfter); parameters: \(Report.count(summary.parameters))")
        print("  ops: \(Report.histogram(summary.opHistogram))")
        for p in summary.passes { print(String(format: "  pass %@: %d changes (%.2f s)", p.name, p.changes, p.seconds)) }
        if summary.prunableParameters > 0 {
            print("  path: \(method), \(Report.count(summary.prunableParameters)) prunable parameters; load any keep ratio with --keep R")
        }
        if let line = Report.storage(summary.storage) { print("  storage: " + line) }
        print("  size: \(Report.bytes(summary.sourceBytes)) → \(Report.bytes(summary.outputBytes))")
        print("  time: " + summary.stages.map { String(format: "%@ %.2f s", $0.0, $0.1) }.joined(separator: ", "))
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Describe a .spp or .onnx model: inputs, outputs, ops, parameters, file layout.")

    @Argument(help: "A .spp or .onnx file.") var model: String

    func run() throws {
        let file = CommandLineErrors.report { try ModelFile.open(model) }
        switch file {
        case let .onnx(m):
            print("\(model): ONNX, ir \(m.irVersion), opset \(m.opsetVersion), producer \(m.producerName) \(m.producerVersion)")
            describe(m.graph, parameters: m.graph.parameterCount)
            do { try BlockSummary.discovered(in: m.graph).forEach { print($0) } } catch { print("blocks: not analysed (\(error))") }
        case let .spp(reader):
            let g = reader.graphStructure
            let params = reader.tensorEntries.filter { $0.dtype.isFloatingPoint }.reduce(0) { $0 + $1.shape.reduce(1, *) }
            print("\(model): spp format \(reader.formatVersion), \(Report.bytes(reader.fileSize))")
            let p = reader.provenance
            print("  made by \(p.toolName) \(p.toolVersion) from \(p.sourceFile) (\(Report.bytes(p.sourceSize)), xxh64 \(String(p.sourceHash, radix: 16))), \(p.sourceProducer)")
            if !p.passes.isEmpty { print("  passes: " + p.passes.map { "\($0.name) (\($0.changes))" }.joined(separator: ", ")) }
            describe(g, parameters: params)
            BlockSummary.fusedNodes(in: g) { name in reader.entry(named: name)?.shape }.forEach { print($0) }
            if let path = reader.pruningPath { PathSummary.lines(path, costTable: reader.costTable).forEach { print($0) } }
            let compressed = reader.tensorEntries.reduce(0) { $0 + $1.compressedSize }
            let raw = reader.tensorEntries.reduce(0) { $0 + $1.rawSize }
            print("layout: header \(Report.bytes(reader.dataOffset)), \(reader.tensorEntries.count) tensor frames, \(Report.bytes(compressed)) stored for \(Report.bytes(raw)) of data")
            print("storage: " + Report.storage(reader.tensorEntries))
            for e in reader.tensorEntries.sorted(by: { $0.rawSize > $1.rawSize }).prefix(5) {
                print("  \(e.name): \(e.dtype) \(Tensor.describe(e.shape)), \(Report.bytes(e.compressedSize)) at \(e.fileOffset)")
            }
            if reader.tensorEntries.count > 5 { print("  … and \(reader.tensorEntries.count - 5) more") }
        }
    }

    func describe(_ g: Graph, parameters: Int) {
        print("inputs:"); Report.io(g.inputs).forEach { print($0) }
        print("outputs:"); Report.io(g.outputs).forEach { print($0) }
        print("nodes: \(g.nodes.count); parameters: \(Report.count(parameters))")
        print("ops: \(Report.histogram(g.opHistogram))")
    }
}
