import Foundation
import SPPCore
import SPPFormat
import SPPGraph
import SPPONNX
import SPPPasses
import SPPRuntime

/// `spp convert`: ONNX in, `.spp` out.
public struct Converter {
    public enum Method: String, CaseIterable, Sendable {
        /// Dense: no path.
        case none
        /// Units ranked by products of weight norms (no data).
        case magnitude
        /// Whitened SVD rotation of QK and VO pairs; within each group (a block's QK, VO or FFN
        /// units) units ranked by the block loss of removing each alone, groups pooled by their
        /// measured effect on the model output (`GroupAllocation`).
        case svd
        /// Whitened rotation, then units ranked within each group by the solution path of a
        /// Linearized Bregman Iteration on their masks (block-wise distillation to the dense
        /// model); groups pooled as for svd.
        case spp
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
        /// The dynamics of `--method spp`.
        public var path = SolutionPath.Options()
        /// Relative ridge of the load-time FFN refit whose statistics data-aware methods store; 0 stores none.
        public var repairRidge = FeedForwardRepair.defaultRidge
        /// Precision the weights are stored at.
        public var weights = StoragePrecision.fp32
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
        public var storage = StoragePrecision.Report()
    }

    public let options: Options
    public init(options: Options) { self.options = options }

    /// Converts; `progress` receives a line as each stage starts. The output is
    /// written atomically: on any error nothing is left at `output`. A `.spp`
    /// input stored in float32 is written again at `options.weights` (its graph,
    /// path and provenance as they are; the other options do not apply).
    public func convert(input: String, output: String, progress: (String) -> Void = { _ in }) throws -> Summary {
        if ModelFile.isSPP(input) { return try reencode(input: input, output: output, progress: progress) }
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
        var encodings: [String: ValueEncoding] = [:]
        if let (scores, statistics) = try unitScores(&graph, progress: progress, stage: stage) {
            let repair = options.repairRidge > 0 ? statistics?.feedForward ?? [:] : [:]
            let built = try PathBuilder.build(graph, scores: scores, method: options.method.rawValue, repair: repair, ridge: options.repairRidge)
            graph = built.graph
            path = built.path
            costTable = built.costTable
            encodings = built.encodings
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
                      "samples": String(options.samples), "max-length": String(options.maxLength), "weights": options.weights.rawValue,
                      "repair-ridge": String(options.repairRidge)],
            passes: summary.passes.map { .init(name: $0.name, changes: $0.changes) })
        // Token embeddings are stored in row chunks, read on demand at run time.
        let lookupTables = LookupTable.split(&graph)
        var model = SPPModel(graph: graph, provenance: provenance, pruningPath: path, costTable: costTable, lookupTables: lookupTables,
                             encodings: encodings)
        summary.storage = try options.weights.encode(&model)
        try SPPWriter.write(model, to: output, compressionLevel: options.compressionLevel)
        summary.outputBytes = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        stage("write")
        return summary
    }
}

extension Converter {
    /// A float32 `.spp` written again with its weights at `options.weights`.
    func reencode(input: String, output: String, progress: (String) -> Void) throws -> Summary {
        var summary = Summary()
        var clock = Date()
        progress("reading \(input)")
        let reader = try SPPReader(path: input)
        // The repair's inverse factor is int8 in every file; anything else encoded was stored below float32.
        let repairInt8 = Set((reader.pruningPath?.pairs ?? []).flatMap { $0.tensors.filter { $0.role == FeedForwardRepair.Role.inverseFactor }.flatMap(\.chunks) })
        guard reader.tensorEntries.allSatisfy({ $0.encoding == nil || repairInt8.contains($0.name) }) else { throw ConversionError.alreadyEncoded(input) }
        var model = try reader.loadModel()
        summary.sourceBytes = reader.fileSize
        summary.nodesBefore = model.graph.nodes.count
        summary.nodesAfter = model.graph.nodes.count
        summary.parameters = model.graph.parameterCount
        summary.opHistogram = model.graph.opHistogram
        summary.producer = model.provenance.sourceProducer
        summary.prunableParameters = model.pruningPath?.prunableParameters ?? 0
        summary.stages.append(("read", Date().timeIntervalSince(clock)))
        clock = Date()
        progress("writing \(output)")
        model.provenance.options["weights"] = options.weights.rawValue
        summary.storage = try options.weights.encode(&model)
        try SPPWriter.write(model, to: output, compressionLevel: options.compressionLevel)
        summary.outputBytes = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        summary.stages.append(("write", Date().timeIntervalSince(clock)))
        return summary
    }

    /// Ranks every prunable unit by the chosen method (nil for `none`). Data-aware
    /// methods rotate the attention pairs of `graph` first and return their block statistics.
    func unitScores(_ graph: inout Graph, progress: (String) -> Void, stage: (String) -> Void) throws -> (UnitScores, BlockStatistics?)? {
        if options.method == .none { return nil }
        guard graph.nodes.contains(where: { $0.op == .attention || $0.op == .feedForward }) else { throw ConversionError.noBlocks }
        // Every method factorizes: missing libraries stop it here, before any work.
        try Linalg.load()
        switch options.method {
        case .none:
            return nil
        case .magnitude:
            return (try UnitScoring.magnitude(graph), nil)
        case .svd:
            let (batches, statistics) = try calibrateAndRotate(&graph, progress: progress, stage: stage)
            var quarters = Milestones(steps: 4)
            let prepared = try SolutionPath.prepare(graph: graph, batches: batches, options: options.path) { p in
                if quarters.passed(p.fraction) { progress(String(format: "unit losses: capture %.0f%%", 100 * p.fraction)) }
            }
            let scores = prepared.singleRemovalScores(threads: options.path.threads)
            stage("unit losses")
            return (try allocate(scores, graph: graph, batches: batches, statistics: statistics, progress: progress, stage: stage), statistics)
        case .spp:
            let (batches, statistics) = try calibrateAndRotate(&graph, progress: progress, stage: stage)
            // On a terminal the line rewrites itself; otherwise a line about every 10%.
            let terminal = isatty(2) != 0
            var tenths = Milestones(steps: 10)
            let scores = try SolutionPath.compute(graph: graph, batches: batches, statistics: statistics, options: options.path) { p in
                if terminal {
                    Report.progress(p.line)
                } else if tenths.passed(p.fraction) {
                    progress(p.line)
                }
            }
            if terminal { Report.progressDone() }
            stage("solution path")
            return (try allocate(scores, graph: graph, batches: batches, statistics: statistics, progress: progress, stage: stage), statistics)
        }
    }

    /// Pools the units of all groups by their measured end-to-end cost (`GroupAllocation`),
    /// keeping the method's order within each group.
    func allocate(_ scores: UnitScores, graph: Graph, batches: [[String: Tensor]], statistics: BlockStatistics,
                  progress: (String) -> Void, stage: (String) -> Void) throws -> UnitScores {
        var tenths = Milestones(steps: 10)
        let pooled = try GroupAllocation.apply(scores, graph: graph, batches: batches, repair: statistics.feedForward,
                                               ridge: options.repairRidge) { done, total in
            if tenths.passed(Double(done) / Double(max(total, 1))) { progress("allocation: \(done)/\(total) group curves") }
        }
        stage("allocation")
        return pooled
    }

    /// What the data-aware methods share: calibration batches, block statistics of
    /// the dense model, and the exact whitened rotation of every attention pair.
    func calibrateAndRotate(_ graph: inout Graph, progress: (String) -> Void, stage: (String) -> Void) throws
        -> ([[String: Tensor]], BlockStatistics) {
        let batches = try calibrationBatches(graph, progress: progress)
        stage("tokenize")
        let statistics = try BlockStatistics.collect(graph: graph, batches: batches) { done, total in
            if done == total || done % 8 == 0 { progress("calibration \(done)/\(total) batches") }
        }
        stage("calibration")
        try RotateAttention.apply(&graph, statistics: statistics)
        stage("rotation")
        return (batches, statistics)
    }

    /// Progress lines at every 1/`steps` of the work rather than at every report.
    struct Milestones {
        let steps: Int
        private var next = 1

        init(steps: Int) { self.steps = steps }

        /// Whether `fraction` (0...1) reached a milestone not reported yet.
        mutating func passed(_ fraction: Double) -> Bool {
            guard fraction * Double(steps) >= Double(next) else { return false }
            while fraction * Double(steps) >= Double(next) { next += 1 }
            return true
        }
    }

    /// The calibration set as model input batches: texts from a JSONL file through the tokenizer.
    func calibrationBatches(_ graph: Graph, progress: (String) -> Void) throws -> [[String: Tensor]] {
        guard let file = options.calibration else { throw ConversionError.missingOption("--calibration FILE.jsonl (or a folder of .npy input sets)") }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory), isDirectory.boolValue {
            let sets = try NpyInputSets.read(file, graphInputs: graph.inputs)
            progress("calibration: \(sets.count) input sets from \(file)")
            return sets
        }
        guard let tokenizer = options.tokenizer else { throw ConversionError.missingOption("--tokenizer tokenizer.json") }
        let texts = try TextInputs.readJSONL(file, field: options.field, limit: options.samples)
        progress("calibration: \(texts.count) texts from \(file)")
        let encoder = try TextInputs(tokenizer: tokenizer, maxLength: options.maxLength, graphInputs: graph.inputs)
        return encoder.batches(texts, size: options.batchSize).map(\.inputs)
    }
}

extension SolutionPath.Progress {
    /// One status line, as the CLI prints it.
    var line: String {
        var line = String(format: "solution path: %@ %3.0f%%", stage.rawValue, 100 * fraction)
        if units > 0 { line += " · \(entered)/\(units) units entered" }
        line += String(format: " · %.0f s", elapsed)
        if let eta { line += String(format: ", about %.0f s left", eta) }
        return line
    }
}

public enum ToolVersion {
    public static let current = "0.1.0"
}
