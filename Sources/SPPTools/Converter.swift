import Foundation
import SPPCore
import SPPFormat
import SPPGraph
import SPPONNX
import SPPPasses

/// `spp convert`: ONNX in, `.spp` out.
public struct Converter {
    public enum Method: String, CaseIterable, Sendable { case none }

    public struct Options: Sendable {
        public var method: Method = .none
        public var disabledPasses: Set<String> = []
        public var compressionLevel = 3
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

        progress("writing \(output)")
        let hash = source.withUnsafeBytes { XXHash64.hash($0) }
        let provenance = Provenance(
            sourceFile: (input as NSString).lastPathComponent, sourceSize: source.count, sourceHash: hash,
            sourceProducer: summary.producer, toolName: "spp", toolVersion: ToolVersion.current,
            createdAt: Int(Date().timeIntervalSince1970),
            options: ["method": options.method.rawValue, "compression-level": String(options.compressionLevel),
                      "disabled-passes": options.disabledPasses.sorted().joined(separator: ",")],
            passes: summary.passes.map { .init(name: $0.name, changes: $0.changes) })
        try SPPWriter.write(SPPModel(graph: graph, provenance: provenance), to: output, compressionLevel: options.compressionLevel)
        summary.outputBytes = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        stage("write")
        return summary
    }
}

public enum ToolVersion {
    public static let current = "0.1.0"
}
