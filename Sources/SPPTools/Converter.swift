import Foundation
import SPPCore
import SPPFormat
import SPPGraph
import SPPONNX
import SPPPasses

/// `spp convert`: ONNX in, `.spp` out.
public struct Converter {
    public enum Method: String, CaseIterable, Sendable {
        /// Dense: no path.
        case none
        /// Units ranked by products of weight norms (no data).
        case magnitude
        /// Whitened SVD rotation of QK and VO pairs, units ranked by their share of output energy on calibration data.
        case svd
    }

    public struct Options: Sendable {
        public var method: Method = .none
        public var disabledPasses: Set<String> = []
        public var compressionLevel = 3
        /// Calibration texts (JSONL) and how to read them; needed by data-aware methods.
        public var calibration: String?
        public var field = "text"
        public var tokenizer: String?
        public var maxLength = 128
        public var samples = 512
        public var batchSize = 16
        public init() {}
    }

    /// What a conversion found and did, printed as the command's summary.
    public struct Summary: Sendable {
        public var opsetVersion = 0
        public var producer = ""
        public var nodesBefore = 0, nodesAfter = 0
        public var parameters = 0
        public var sourceBytes = 0, outputBytes = 0
        public var passes: [PassReport] = []
        public var stages: [(String, Double)] = []
        public var opHistogram: [(OpType, Int)] = []
        public var prunableParameters = 0
    }

    public let options: Options
    public init(options: Options) { self.options = options }

    /// Converts; `progress` receives a line as each stage starts. The output is
    /// written atomically: on any error nothing is left at `output`.
    public func convert(input: String, output: String, progress: (String) -> Void = { _ in }) throws -> Summary {
        var summary = Summary()
        var clock = Date()
        func stage(_ name: String) {
            let now = Date()
            summary.stages.append((name, now.timeIntervalSince(clock)))
            clock = now
        }
        progress("importing \(input)")
        let source = try Data(contentsOf: URL(fileURLWithPath: input), options: .mappedIfSafe)
        let onnx = try ONNXImporter.load(path: input)
        var graph = onnx.graph
        summary.opsetVersion = onnx.opsetVersion
        summary.producer = "\(onnx.producerName) \(onnx.producerVersion)".trimmingCharacters(in: .whitespaces)
        summary.nodesBefore = graph.nodes.count
        summary.sourceBytes = source.count
        stage("import")

        progress("simplifying")
        summary.passes = try PassPipeline.run(&graph, disabled: options.disabledPasses)
        summary.nodesAfter = graph.nodes.count
        summary.parameters = graph.parameterCount
        summary.opHistogram = graph.opHistogram
        stage("passes")

        var path: PruningPath? = nil
        var costTable: [CostLevel] = []
        if let scores = try unitScores(&graph, progress: progress, stage: stage) {
            let built = try PathBuilder.build(graph, scores: scores, method: options.method.rawValue)
            graph = built.graph
            path = built.path
            costTable = built.costTable
            summary.prunableParameters = built.path.prunableParameters
            stage("path")
        }

        progress("writing \(output)")
        let hash = source.withUnsafeBytes { XXHash64.hash($0) }
        let provenance = Provenance(
            sourceFile: (input as NSString).lastPathComponent, sourceSize: source.count, sourceHash: hash,
            sourceProducer: summary.producer, toolName: "spp", toolVersion: ToolVersion.current,
            createdAt: Int(Date().timeIntervalSince1970),
            options: ["method": options.method.rawValue, "compression-level": String(options.compressionLevel),
                      "disabled-passes": options.disabledPasses.sorted().joined(separator: ","),
                      "calibration": options.calibration.map { ($0 as NSString).lastPathComponent } ?? "",
                      "samples": String(options.samples), "max-length": String(options.maxLength)],
            passes: summary.passes.map { .init(name: $0.name, changes: $0.changes) })
        try SPPWriter.write(SPPModel(graph: graph, provenance: provenance, pruningPath: path, costTable: costTable),
                            to: output, compressionLevel: options.compressionLevel)
        summary.outputBytes = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        stage("write")
        return summary
    }
}

extension Converter {
    /// Ranks every prunable unit by the chosen method (nil for `none`). Data-aware
    /// methods rotate the attention pairs of `graph` first.
    func unitScores(_ graph: inout Graph, progress: (String) -> Void, stage: (String) -> Void) throws -> UnitScores? {
        if options.method == .none { return nil }
        guard graph.nodes.contains(where: { $0.op == .attention || $0.op == .feedForward }) else { throw ConversionError.noBlocks }
        switch options.method {
        case .none:
            return nil
        case .magnitude:
            return try UnitScoring.magnitude(graph)
        case .svd:
            let batches = try calibrationBatches(graph, progress: progress)
            stage("tokenize")
            let statistics = try BlockStatistics.collect(graph: graph, batches: batches) { done, total in
                if done == total || done % 8 == 0 { progress("calibration \(done)/\(total) batches") }
            }
            stage("calibration")
            let strengths = try RotateAttention.apply(&graph, statistics: statistics)
            stage("rotation")
            return try UnitScoring.whitened(graph, strengths: strengths, statistics: statistics)
        }
    }

    /// The calibration set as model input batches: texts from a JSONL file through the tokenizer.
    func calibrationBatches(_ graph: Graph, progress: (String) -> Void) throws -> [[String: Tensor]] {
        guard let file = options.calibration else { throw ConversionError.missingOption("--calibration FILE.jsonl") }
        guard let tokenizer = options.tokenizer else { throw ConversionError.missingOption("--tokenizer tokenizer.json") }
        let texts = try TextInputs.readJSONL(file, field: options.field, limit: options.samples)
        progress("calibration: \(texts.count) texts from \(file)")
        let encoder = try TextInputs(tokenizer: tokenizer, maxLength: options.maxLength, graphInputs: graph.inputs)
        return encoder.batches(texts, size: options.batchSize).map(\.inputs)
    }
}

public enum ToolVersion {
    public static let current = "0.1.0"
}
