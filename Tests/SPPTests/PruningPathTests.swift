import Foundation
import Testing
import SPPCore
import SPPFormat
import SPPGraph
import SPPONNX
import SPPPasses
import SPPRuntime
import SPPTools

/// The pruning path end to end on a tiny BERT: the rotation changes nothing,
/// a path model at keep 1 is the dense model, and lower keep levels load
/// prefixes with ragged per-head ranks.
@Suite struct PruningPathTests {
    let fixture = TestPaths.fixtures.appendingPathComponent("bert_tiny")

    func load() throws -> (Graph, [String: Tensor], Tensor) {
        var graph = try ONNXImporter.load(path: fixture.appendingPathComponent("model.onnx").path).graph
        _ = try PassPipeline.run(&graph, verify: true)
        var inputs: [String: Tensor] = [:]
        for (k, name) in ["input_ids", "attention_mask", "token_type_ids"].enumerated() {
            inputs[name] = try Npy.read(path: fixture.appendingPathComponent("input_\(k).npy").path)
        }
        let expected = try Npy.read(path: fixture.appendingPathComponent("output_0.npy").path)
        return (graph, inputs, expected)
    }

    @Test func whitenedRotationKeepsTheModelExact() throws {
        var (graph, inputs, expected) = try load()
        #expect(graph.nodes.filter { $0.op == .attention }.count == 2)
        let stats = try BlockStatistics.collect(graph: graph, batches: [inputs])
        let before = graph.initializers
        let strengths = try RotateAttention.apply(&graph, statistics: stats)
        // The weights did change …
        let name = graph.nodes.first { $0.op == .attention }!.inputs[1]
        #expect(before[name]!.floats != graph.initializers[name]!.floats)
        // … the function did not.
        let out = try Model(graph: graph).run(inputs)["last_hidden_state"]!
        let (ok, c) = Comparison.compare(out, expected, atol: 1e-4, rtol: 1e-4)
        #expect(ok, "\(c)")
        for heads in strengths.valueOutput.values { for s in heads { #expect(zip(s, s.dropFirst()).allSatisfy { $0 >= $1 }) } }
    }

    func writePath(_ method: String, scores: (inout Graph) throws -> UnitScores) throws -> (String, [String: Tensor], Tensor, URL) {
        var (graph, inputs, expected) = try load()
        let s = try scores(&graph)
        let built = try PathBuilder.build(graph, scores: s, method: method)
        let dir = TestPaths.temporaryDirectory()
        let file = dir.appendingPathComponent("m.spp").path
        try SPPWriter.write(SPPModel(graph: built.graph, provenance: Provenance(), pruningPath: built.path, costTable: built.costTable), to: file)
        return (file, inputs, expected, dir)
    }

    @Test func keepOneIsTheDenseModel() throws {
        for method in ["magnitude", "svd"] {
            let (file, inputs, expected, dir) = try writePath(method) { graph in
                if method == "magnitude" { return try UnitScoring.magnitude(graph) }
                let batches = [try load().1]
                _ = try RotateAttention.apply(&graph, statistics: try BlockStatistics.collect(graph: graph, batches: batches))
                return try SolutionPath.prepare(graph: graph, batches: batches).singleRemovalScores()
            }
            defer { try? FileManager.default.removeItem(at: dir) }
            let model = try Model(path: file, keep: 1)
            let (ok, c) = Comparison.compare(try model.run(inputs)["last_hidden_state"]!, expected, atol: 1e-4, rtol: 1e-4)
            #expect(ok, "\(method): \(c)")
            #expect(model.costTable.count == 20)
        }
    }

    @Test func lowerKeepLoadsRaggedPrefixes() throws {
        let (file, inputs, _, dir) = try writePath("magnitude") { try UnitScoring.magnitude($0) }
        defer { try? FileManager.default.removeItem(at: dir) }
        let reader = try SPPReader(path: file)
        let path = try #require(reader.pruningPath)
        var previous = [Int](repeating: 0, count: path.pairs.count)
        for keep in [0.1, 0.3, 0.5, 0.75, 1.0] {
            let counts = try PathLoader.keptUnits(path, keep: keep)
            // Monotone in keep, and the kept parameters reach the target by less than one unit.
            #expect(zip(counts, previous).allSatisfy { $0 >= $1 })
            previous = counts
            let kept = zip(path.pairs, counts).reduce(0) { $0 + $1.0.parametersPerUnit * $1.1 }
            let target = keep * Double(path.prunableParameters)
            let largest = path.pairs.map(\.parametersPerUnit).max()!
            #expect(Double(kept) >= target - 0.5 && Double(kept) < target + Double(largest))
        }
        let half = try Model(path: file, keep: 0.5)
        let attention = half.program.graph.nodes.filter { $0.op == .attention }
        let counts = try PathLoader.keptUnits(path, keep: 0.5)
        for node in attention {
            let qk = try node.ints("qk_ranks")!, vo = try node.ints("vo_ranks")!
            let pairs = zip(path.pairs, counts).filter { $0.0.node == node.name }
            #expect(qk.reduce(0, +) == pairs.first { $0.0.kind == .queryKey }!.1)
            #expect(vo.reduce(0, +) == pairs.first { $0.0.kind == .valueOutput }!.1)
        }
        let out = try half.run(inputs)["last_hidden_state"]!
        #expect(out.shape == [2, 8, 32])
        #expect(out.floats.allSatisfy { $0.isFinite })
        #expect(throws: RuntimeError.self) { try Model(path: file, keep: 0) }
        #expect(throws: RuntimeError.self) { try Model(path: file, keep: 1.5) }
    }

    @Test func denseModelRefusesLowerKeep() throws {
        let (graph, _, _) = try load()
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("dense.spp").path
        try SPPWriter.write(SPPModel(graph: graph, provenance: Provenance()), to: file)
        #expect(throws: RuntimeError.noPruningPath) { try Model(path: file, keep: 0.5) }
    }
}

/// `spp convert --method svd` end to end, calibrated from a folder of .npy input sets.
@Suite struct ConverterMethodTests {
    @Test func svdFromNpyInputSets() throws {
        let fixture = TestPaths.fixtures.appendingPathComponent("bert_tiny")
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let set = dir.appendingPathComponent("calibration/set0")
        try FileManager.default.createDirectory(at: set, withIntermediateDirectories: true)
        var inputs: [String: Tensor] = [:]
        for (k, name) in ["input_ids", "attention_mask", "token_type_ids"].enumerated() {
            let t = try Npy.read(path: fixture.appendingPathComponent("input_\(k).npy").path)
            try Npy.write(t, path: set.appendingPathComponent("\(name).npy").path)
            inputs[name] = t
        }
        var options = Converter.Options()
        options.method = .svd
        options.calibration = dir.appendingPathComponent("calibration").path
        let out = dir.appendingPathComponent("m.spp").path
        let summary = try Converter(options: options).convert(input: fixture.appendingPathComponent("model.onnx").path, output: out)
        #expect(summary.prunableParameters > 0)
        let expected = try Npy.read(path: fixture.appendingPathComponent("output_0.npy").path)
        let (ok, c) = Comparison.compare(try Model(path: out, keep: 1).run(inputs)["last_hidden_state"]!, expected, atol: 1e-4, rtol: 1e-4)
        #expect(ok, "\(c)")
        // A folder without input sets is a named error, and nothing is written.
        options.calibration = dir.path + "/missing"
        let bad = dir.appendingPathComponent("bad.spp").path
        #expect(throws: (any Error).self) { try Converter(options: options).convert(input: fixture.appendingPathComponent("model.onnx").path, output: bad) }
        #expect(!FileManager.default.fileExists(atPath: bad))
    }
}
