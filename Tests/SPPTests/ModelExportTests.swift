import Foundation
import Testing
import SPPCore
import SPPFormat
import SPPGraph
import SPPONNX
import SPPPasses
import SPPRuntime
import SPPTools

/// `spp export` end to end on the transformer fixtures: a `.spp` with a pruning
/// path and chunked lookup tables, exported at several keep ratios, read back
/// by the importer, must compute what the `.spp` computes at that keep, and at
/// keep 1 what onnxruntime computed on the original model.
@Suite struct ModelExportTests {
    static let transformers: [FixtureCase] = FixtureCase.all.filter {
        ["bert_tiny", "gpt2_tiny", "minilm_tiny_opset17", "mpnet_tiny", "vit_tiny", "real_minilm_l6"].contains($0.name)
    }

    /// Imports, fuses, ranks units by magnitude and writes a `.spp` whose
    /// embedding tables are split in small row chunks (the tiny fixtures are
    /// below the size at which conversion splits them).
    static func writeSPP(_ onnx: String, to file: String) throws -> [LookupTable] {
        var graph = try ONNXImporter.load(path: onnx).graph
        _ = try PassPipeline.run(&graph, verify: true)
        let built = try PathBuilder.build(graph, scores: try UnitScoring.magnitude(graph), method: "magnitude")
        var g = built.graph
        let tables = LookupTable.split(&g, minimumBytes: 1024, rowsPerChunk: 7)
        try SPPWriter.write(SPPModel(graph: g, provenance: Provenance(), pruningPath: built.path, costTable: built.costTable,
                                     lookupTables: tables), to: file)
        return tables
    }

    @Test(arguments: transformers)
    func exportedModelComputesWhatSppComputes(_ fixture: FixtureCase) throws {
        let spec = try fixture.spec()
        guard let onnx = fixture.modelPath(spec) else {
            print("skipping \(fixture.name): \(spec.model ?? "") not found (../shared absent)")
            return
        }
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let spp = dir.appendingPathComponent("m.spp").path
        let tables = try Self.writeSPP(onnx, to: spp)
        // The image model has no table read by row (its patches come from a Conv).
        #expect(tables.isEmpty == (fixture.name == "vit_tiny"), "\(fixture.name): lookup tables \(tables.map(\.name))")
        let inputs = try fixture.inputs(spec)
        var sawRagged = false
        for keep in [1.0, 0.5, 0.2] {
            let out = dir.appendingPathComponent("keep-\(keep).onnx").path
            let summary = try ModelExport.export(input: spp, keep: keep, output: out)
            let imported = try ONNXImporter.load(path: out)
            #expect(imported.opsetVersion == 17)
            #expect(!imported.graph.nodes.contains { $0.op.rawValue.hasPrefix("spp.") })
            #expect(summary.nodes == imported.graph.nodes.count)
            // Every table came back whole: the exported graph holds it as one constant.
            for t in tables { #expect(imported.graph.initializers[t.name]?.shape.first == t.chunkRows.reduce(0, +)) }
            if keep < 1 {
                sawRagged = sawRagged || summary.lowering.attention.contains { Set($0.qkRanks).count > 1 || Set($0.voRanks).count > 1 }
            }

            let exported = try Model(graph: imported.graph).run(inputs)
            let native = try Model(path: spp, keep: keep).run(inputs)
            for name in spec.outputs {
                // The same arithmetic in other GEMM shapes: float32 rounding only (the real model's hidden states reach |10|).
                let (ok, c) = Comparison.compare(try #require(exported[name]), try #require(native[name]), atol: 1e-5, rtol: 1e-5)
                #expect(ok, "\(fixture.name) keep \(keep) \(name): \(c)")
            }
            // The dense export is the original model: onnxruntime's outputs.
            if keep == 1 { try fixture.check(exported, spec, via: "exported onnx") }
        }
        #expect(sawRagged, "\(fixture.name): no ragged per-head ranks below keep 1")
    }

    @Test func exportOfTheExportIsTheSameFile() throws {
        // Deterministic bytes: exporting twice gives the same file.
        let fixture = TestPaths.fixtures.appendingPathComponent("bert_tiny/model.onnx").path
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let spp = dir.appendingPathComponent("m.spp").path
        _ = try Self.writeSPP(fixture, to: spp)
        let a = dir.appendingPathComponent("a.onnx").path, b = dir.appendingPathComponent("b.onnx").path
        _ = try ModelExport.export(input: spp, keep: 0.5, output: a)
        _ = try ModelExport.export(input: spp, keep: 0.5, output: b)
        #expect(try Data(contentsOf: URL(fileURLWithPath: a)) == Data(contentsOf: URL(fileURLWithPath: b)))
    }

    @Test func commandLine() throws {
        let fixture = TestPaths.fixtures.appendingPathComponent("bert_tiny/model.onnx").path
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let spp = dir.appendingPathComponent("m.spp").path
        #expect(try CLITests.run("spp", ["convert", fixture, "-o", spp, "--method", "magnitude"]).status == 0)
        let out = dir.appendingPathComponent("m.onnx").path
        let r = try CLITests.run("spp", ["export", spp, "--keep", "0.5", "-o", out])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("nodes:") && r.stdout.contains("parameters:") && r.stdout.contains("padded"), "\(r.stdout)")
        #expect(FileManager.default.fileExists(atPath: out))

        // A dense .spp only exports at keep 1; an .onnx is not a .spp; a truncated .spp is reported: no file in each case.
        let dense = dir.appendingPathComponent("dense.spp").path
        #expect(try CLITests.run("spp", ["convert", fixture, "-o", dense]).status == 0)
        let truncated = dir.appendingPathComponent("truncated.spp")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: spp))
        try bytes.prefix(bytes.count - 100).write(to: truncated)
        for (model, keep) in [(dense, "0.5"), (fixture, "1"), (truncated.path, "1"), (spp, "0")] {
            let target = dir.appendingPathComponent("bad.onnx").path
            let bad = try CLITests.run("spp", ["export", model, "--keep", keep, "-o", target])
            #expect(bad.status == 1 && bad.stderr.hasPrefix("error:"), "\(model) keep \(keep): \(bad.stderr)")
            #expect(!FileManager.default.fileExists(atPath: target), "\(model) keep \(keep) left a file")
        }
    }

    /// The FLOPs counted on the graph spp runs at keep 0.5 equal those counted by hand from the
    /// path: per layer the kept q·k and v·o units and FFN neurons, plus the pooler's Gemm.
    @Test func flopCountOfAPrunedGraph() throws {
        let fixture = TestPaths.fixtures.appendingPathComponent("bert_tiny")
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let spp = dir.appendingPathComponent("m.spp").path
        _ = try Self.writeSPP(fixture.appendingPathComponent("model.onnx").path, to: spp)
        let file = try ModelFile.open(spp)
        let model = try file.makeModel(keep: 0.5, options: .init(threads: 1))
        var shapes = file.lookupTableShapes
        #expect(!shapes.isEmpty)
        for (k, name) in ["input_ids", "attention_mask", "token_type_ids"].enumerated() {
            let t = try Npy.read(path: fixture.appendingPathComponent("input_\(k).npy").path)
            shapes[name] = (t.dtype, t.shape)
        }
        guard case let .spp(reader) = file else { Issue.record("\(spp) did not open as .spp"); return }
        let path = try #require(reader.pruningPath)
        let (b, s, d) = (2, 8, 32)
        var flops = 2 * b * d * d  // pooler: [2, 32] × [32, 32]
        for (pair, n) in zip(path.pairs, try PathLoader.keptUnits(path, keep: 0.5)) {
            flops += pair.kind == .feedForward ? 2 * b * s * d * n * 2 : b * (2 * s * d * 2 * n + 2 * s * s * n)
        }
        for (name, c) in model.program.releasedConstants { shapes[name] = (c.dtype, c.shape) }
        #expect(try FlopCount.count(model.program.graph, shapes: shapes) == flops)
    }

    @Test func benchReportsAchievedThroughput() throws {
        // An image model: bench's synthetic token ids would not fit the tiny text fixtures' vocabularies.
        let fixture = TestPaths.fixtures.appendingPathComponent("vit_tiny/model.onnx").path
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let spp = dir.appendingPathComponent("m.spp").path
        _ = try Self.writeSPP(fixture, to: spp)
        let r = try CLITests.run("spp", ["bench", spp, "--keep", "0.5", "--runs", "3", "--warmup", "2"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let flops = try #require(json["flops"] as? Int), median = try #require(json["median_ms"] as? Double)
        let rate = try #require(json["gflops_per_s"] as? Double)
        #expect(flops > 0)
        #expect(abs(rate - Double(flops) / 1e9 / (median / 1000)) <= 0.01 + 0.01 * rate, "\(r.stdout)")
        // Load speed: the bytes the frames decompressed to over the load time.
        let decoded = try #require(json["decoded_bytes"] as? Int), load = try #require(json["load_ms"] as? Double)
        let speed = try #require(json["load_gb_per_s"] as? Double)
        #expect(decoded > 0 && abs(speed - Double(decoded) / 1e9 / (load / 1000)) <= 0.01 + 0.05 * speed, "\(r.stdout)")
        let stages = try #require(json["load_stages_ms"] as? [String: Double])
        #expect(Set(stages.keys) == ["header", "plan", "decode", "assemble", "program", "release"])
        // The first run after loading, timed apart (warm-up runs were asked for).
        #expect(try #require(json["first_run_ms"] as? Double) > 0, "\(r.stdout)")
        // Memory: peak RSS while running against the weights held and the peak of live activations.
        let weights = try #require(json["weight_bytes"] as? Int), activations = try #require(json["activation_bytes"] as? Int)
        #expect(weights > 0 && activations > 0)
        if let peak = json["run_peak_rss_mb"] as? Double, let ratio = json["rss_ratio"] as? Double {
            #expect(abs(ratio - peak * 1_048_576 / Double(weights + activations)) <= 0.01 * ratio, "\(r.stdout)")
        }
    }
}
