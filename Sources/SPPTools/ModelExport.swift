import Foundation
import SPPCore
import SPPFormat
import SPPGraph
import SPPONNX
import SPPRuntime

/// `spp export`: a `.spp` at a keep ratio as a plain ONNX model (standard
/// operators, opset 17), so that onnxruntime can run exactly what spp runs.
public enum ModelExport {
    /// What an export wrote, printed as the command's summary.
    public struct Summary: Sendable {
        public var keep: Double
        public var nodes = 0
        /// Parameters of the model spp runs at `keep`, and of the file written (with the zero padding).
        public var keptParameters = 0, writtenParameters = 0
        public var bytes = 0
        public var opHistogram: [(OpType, Int)] = []
        public var lowering = ONNXLowering.Report()
    }

    /// The graph `Model(reader:keep:)` runs, with every constant in memory as
    /// float32 values: the fused nodes get their kept units (ragged per head)
    /// through `PathLoader`, and the lookup tables the runtime reads by row are
    /// reassembled whole.
    public static func graph(_ reader: SPPReader, keep: Double) throws -> Graph {
        var graph = try PathLoader.load(reader, keep: keep, weights: .fp32).graph
        for table in reader.lookupTables { graph.initializers[table.name] = try LookupSource(reader: reader, table: table).all() }
        return graph
    }

    /// Loads `input` (a `.spp`) at `keep`, lowers it to standard operators and
    /// writes `output` atomically: on any error nothing is left there.
    public static func export(input: String, keep: Double, output: String) throws -> Summary {
        guard ModelFile.isSPP(input) else { throw ExportError.notSPP(path: input) }
        let reader = try SPPReader(path: input)
        let full = try graph(reader, keep: keep)
        let (lowered, report) = try ONNXLowering.lower(full)
        var options = ONNXExporter.Options()
        options.producerVersion = ToolVersion.current
        let method = reader.pruningPath?.method ?? "none"
        options.docString = "exported by spp \(ToolVersion.current) from \((input as NSString).lastPathComponent) at keep \(keep) (path: \(method))"
        var summary = Summary(keep: keep)
        summary.bytes = try ONNXExporter.write(lowered, to: output, options: options)
        summary.nodes = lowered.nodes.count
        summary.keptParameters = full.parameterCount
        summary.writtenParameters = lowered.parameterCount
        summary.opHistogram = lowered.opHistogram
        summary.lowering = report
        return summary
    }
}

/// Problems with what an export was asked to do.
public enum ExportError: Error, CustomStringConvertible, Equatable {
    case notSPP(path: String)

    public var description: String {
        switch self {
        case let .notSPP(path): return "\(path) is not a .spp file; export reads a model made by `spp convert`"
        }
    }
}
