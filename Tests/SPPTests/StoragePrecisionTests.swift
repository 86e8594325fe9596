import Foundation
import Testing
import SPPCore
import SPPFormat
import SPPGraph
import SPPKernels
import SPPPasses
import SPPRuntime
import SPPTools

/// `spp convert --weights`: what each precision stores, checked element by
/// element against its definition computed here from the float32 file, and
/// what loading makes of it.
@Suite(.serialized) struct StoragePrecisionTests {
    /// bert_tiny converted with `--method svd` (FFN repair data included), and
    /// written again at each precision; the inputs of its fixture.
    static let files: (dir: URL, paths: [StoragePrecision: String], inputs: [String: Tensor]) = {
        let fixture = TestPaths.fixtures.appendingPathComponent("bert_tiny")
        let dir = TestPaths.temporaryDirectory()
        let set = dir.appendingPathComponent("calibration/set0")
        try! FileManager.default.createDirectory(at: set, withIntermediateDirectories: true)
        var inputs: [String: Tensor] = [:]
        for (k, name) in ["input_ids", "attention_mask", "token_type_ids"].enumerated() {
            let t = try! Npy.read(path: fixture.appendingPathComponent("input_\(k).npy").path)
            try! Npy.write(t, path: set.appendingPathComponent("\(name).npy").path)
            inputs[name] = t
        }
        var options = Converter.Options()
        options.method = .svd
        options.calibration = dir.appendingPathComponent("calibration").path
        var paths: [StoragePrecision: String] = [.fp32: dir.appendingPathComponent("fp32.spp").path]
        _ = try! Converter(options: options).convert(input: fixture.appendingPathComponent("model.onnx").path, output: paths[.fp32]!)
        for p in [StoragePrecision.fp16, .bf16, .int8] {
            var o = Converter.Options()
            o.weights = p
            paths[p] = dir.appendingPathComponent("\(p.rawValue).spp").path
            _ = try! Converter(options: o).convert(input: paths[.fp32]!, output: paths[p]!)
        }
        return (dir, paths, inputs)
    }()

    /// int8 by definition: per row (`axis` 0) or per column, scale = max|w| / 127, values round(w / scale).
    static func quantized(_ w: [[Float]], axis: Int) -> (values: [[Int8]], scales: [Float]) {
        let rows = w.count, cols = w.first?.count ?? 0
        let scales: [Float] = axis == 0 ? w.map { $0.map(abs).max()! / 127 } : (0..<cols).map { c in (0..<rows).map { abs(w[$0][c]) }.max()! / 127 }
        let values = w.enumerated().map { r, row in
            row.enumerated().map { c, x -> Int8 in
                let s = scales[axis == 0 ? r : c]
                return s == 0 ? 0 : Int8((x / s).rounded(.toNearestOrEven))
            }
        }
        return (values, scales)
    }

    static func rows(_ t: Tensor) -> [[Float]] {
        let f = t.floats, width = t.shape.dropFirst().reduce(1, *)
        return (0..<(t.shape.first ?? 0)).map { Array(f[$0 * width..<($0 + 1) * width]) }
    }

    @Test func storedElementsFollowTheirDefinition() throws {
        let f = Self.files
        let reference = try SPPReader(path: f.paths[.fp32]!)
        let path = try #require(reference.pruningPath)
        let readers = try [StoragePrecision.fp16, .bf16, .int8].map { ($0, try SPPReader(path: f.paths[$0]!)) }
        var checked = 0
        for pair in path.pairs {
            for t in pair.tensors {
                let chunks = try t.chunks.map { try reference.tensor(named: $0) }
                let isWeight = ["wq", "wk", "wv", "w1", "wo", "w2"].contains(t.role)
                let isRepair = FeedForwardRepair.Role.all.contains(t.role)
                for (precision, reader) in readers {
                    for (name, chunk) in zip(t.chunks, chunks) {
                        let e = try #require(reader.entry(named: name))
                        let stored = try reader.tensor(e)
                        if t.role == FeedForwardRepair.Role.inverseFactor {
                            // int8 from conversion on, in every file, as the float32 file has it.
                            #expect(e.dtype == .int8 && e.encoding?.scales != nil && chunk.dtype == .int8, "\(name)")
                            #expect(withExtendedLifetime((stored, chunk)) { Array(stored.buffer(as: Int8.self)) == Array(chunk.buffer(as: Int8.self)) }, "\(name)")
                            checked += 1
                            continue
                        }
                        let x = chunk.floats
                        switch (precision, isWeight, isRepair) {
                        case (.int8, true, _):
                            #expect(e.dtype == .int8 && e.encoding?.scales != nil, "\(name)")
                        case (.fp16, true, _), (.fp16, _, true), (.int8, _, true):
                            #expect(e.dtype == .float16 && e.encoding != nil, "\(name)")
                            #expect(withExtendedLifetime(stored) { Array(stored.buffer(as: UInt16.self)) } == x.map { Float16($0).bitPattern }, "\(name)")
                        case (.bf16, true, _), (.bf16, _, true):
                            #expect(e.dtype == .bfloat16 && e.encoding != nil, "\(name)")
                            #expect(withExtendedLifetime(stored) { Array(stored.buffer(as: UInt16.self)) } == x.map(PrecisionTests.bfloat16), "\(name)")
                        default:
                            // Biases stay float32.
                            #expect(e.dtype == .float32 && e.encoding == nil && stored.floats == x, "\(name)")
                        }
                        checked += 1
                    }
                }
                // int8: a scale per unit row for the roles whose units are output columns, one per column over all rows for Wo and W2.
                guard isWeight, let int8 = readers.last?.1 else { continue }
                let axis = t.role == "wo" || t.role == "w2" ? 1 : 0
                let all = chunks.flatMap(Self.rows)
                let (values, scales) = Self.quantized(all, axis: axis)
                var start = 0
                for name in t.chunks {
                    let e = try #require(int8.entry(named: name))
                    let q = try int8.tensor(e)
                    let s = try int8.tensor(named: try #require(e.encoding?.scales))
                    let n = e.shape[0]
                    #expect(q.integers == values[start..<start + n].flatMap { $0.map(Int.init) }, "\(name) values")
                    #expect(s.floats == (axis == 0 ? Array(scales[start..<start + n]) : scales), "\(name) scales")
                    #expect(s.shape == (axis == 0 ? [n, 1] : [1, e.shape[1]]), "\(name) scales shape")
                    start += n
                }
            }
        }
        #expect(checked > 100)
        // Column scales are stored once per matrix, whichever chunk names them.
        let int8 = try SPPReader(path: f.paths[.int8]!)
        let w2 = try #require(path.pairs.first { $0.kind == .feedForward }?.tensors.first { $0.role == "w2" })
        #expect(Set(w2.chunks.compactMap { int8.entry(named: $0)?.encoding?.scales }).count == 1)
    }

    @Test func loadingExpandsWhatWasStored() throws {
        let f = Self.files
        for keep in [1.0, 0.5] {
            let reference = try PathLoader.load(SPPReader(path: f.paths[.fp32]!), keep: keep).graph
            for precision in [StoragePrecision.fp16, .bf16, .int8] {
                let loaded = try PathLoader.load(SPPReader(path: f.paths[precision]!), keep: keep, weights: .fp32)
                #expect(loaded.int8Weights.isEmpty)
                for node in reference.nodes where node.op == .attention || node.op == .feedForward {
                    // W1 of an FFN block, Wq of an attention block: node layout [D, units], units as columns.
                    let name = node.inputs[1]
                    let a = try #require(reference.initializers[name]), b = try #require(loaded.graph.initializers[name])
                    #expect(a.shape == b.shape && b.dtype == .float32)
                    let x = a.floats, y = b.floats
                    switch precision {
                    case .fp16: #expect(y == x.map { Float(Float16($0)) }, "\(name) keep \(keep)")
                    case .bf16: #expect(y.map(\.bitPattern) == x.map { UInt32(PrecisionTests.bfloat16($0)) << 16 }, "\(name) keep \(keep)")
                    default:
                        // Within half a step of its column's scale.
                        let cols = a.shape[1]
                        let steps = (0..<cols).map { c in stride(from: c, to: x.count, by: cols).map { abs(x[$0]) }.max()! / 127 }
                        let worst = x.indices.map { Double(abs(x[$0] - y[$0])) / Double(steps[$0 % cols]) }.max() ?? 0
                        #expect(worst <= 0.5 + 1e-3, "\(name) keep \(keep): \(worst) steps off")
                    }
                }
                let out = try Model(graph: loaded.graph).run(f.inputs)["last_hidden_state"]!
                let expected = try Model(graph: reference).run(f.inputs)["last_hidden_state"]!
                let e = normalisedError(out, expected)
                // Measured: fp16 ~1e-3, bf16 ~1e-2, int8 weights ~2e-2.
                #expect(e < (precision == .fp16 ? 0.005 : 0.06), "\(precision) keep \(keep): \(e)")
            }
        }
    }

    @Test func int8FileRunsAsStoredWithoutFloatCopies() throws {
        let f = Self.files
        let stored = try Model(path: f.paths[.int8]!)
        #expect(stored.weights == .int8)
        let fused = stored.program.graph.nodes.filter { $0.op == .attention || $0.op == .feedForward }
        let weights = fused.flatMap { $0.op == .attention ? [$0.inputs[1], $0.inputs[3], $0.inputs[5], $0.inputs[7]] : [$0.inputs[1], $0.inputs[3]] }
        #expect(!weights.isEmpty && weights.allSatisfy { stored.program.graph.initializers[$0] == nil && stored.program.releasedConstants[$0]?.dtype == .float32 })
        // At keep 1 the file's int8 values are what quantizing at load makes of the float32 file: the same outputs, bit for bit.
        let quantizedAtLoad = try Model(path: f.paths[.fp32]!, options: RuntimeOptions(weights: .int8))
        let a = try stored.run(f.inputs)["last_hidden_state"]!, b = try quantizedAtLoad.run(f.inputs)["last_hidden_state"]!
        #expect(a.floats == b.floats)
        #expect(quantizedAtLoad.program.releasedConstants.keys.sorted() == stored.program.releasedConstants.keys.sorted())
        #expect(quantizedAtLoad.program.weightBytes == stored.program.weightBytes)
        #expect(stored.program.parameterCount == (try Model(path: f.paths[.fp32]!)).program.parameterCount)
        // fp32 on an int8 file dequantizes: the same outputs as the float32 file's dequantized weights.
        let dequantized = try Model(path: f.paths[.int8]!, options: RuntimeOptions(weights: .fp32))
        #expect(dequantized.weights == .fp32)
        let expanded = try PathLoader.load(SPPReader(path: f.paths[.int8]!), keep: 1, weights: .fp32).graph
        #expect(try dequantized.run(f.inputs)["last_hidden_state"]!.floats == Model(graph: expanded).run(f.inputs)["last_hidden_state"]!.floats)
        // Below keep 1 the refit W2 (computed in float32) is quantized by the loader, like the rest stays int8.
        let half = try Model(path: f.paths[.int8]!, keep: 0.5)
        #expect(half.program.releasedConstants.count == stored.program.releasedConstants.count)
        // There the int8 kernels run the rows packed as read (units grouped by head, ragged): close to
        // the same file's weights in float32, as int8 activations allow.
        let halfFloat = try Model(path: f.paths[.int8]!, keep: 0.5, options: RuntimeOptions(weights: .fp32))
        let e = normalisedError(try half.run(f.inputs)["last_hidden_state"]!, try halfFloat.run(f.inputs)["last_hidden_state"]!)
        #expect(e < 0.06, "int8 keep 0.5 against its float32 weights: \(e)")
        #expect(e > 0, "int8 keep 0.5 ran in float32")
        // The loader quantizes the refit W2 as the program would: a float32 file run in int8 at keep 0.5
        // gives, bit for bit, what the program makes of the same graph loaded in float32.
        let quantizedByLoader = try Model(path: f.paths[.fp32]!, keep: 0.5, options: RuntimeOptions(weights: .int8))
        let loadedFloat = try PathLoader.load(SPPReader(path: f.paths[.fp32]!), keep: 0.5, weights: .fp32).graph
        let quantizedByProgram = try Model(graph: loadedFloat, options: RuntimeOptions(weights: .int8))
        #expect(try quantizedByLoader.run(f.inputs)["last_hidden_state"]!.floats == quantizedByProgram.run(f.inputs)["last_hidden_state"]!.floats)
    }

    @Test func encodedFilesAreNotEncodedAgain() throws {
        let f = Self.files
        let out = f.dir.appendingPathComponent("twice.spp").path
        var o = Converter.Options()
        o.weights = .fp16
        #expect(throws: ConversionError.self) { try Converter(options: o).convert(input: f.paths[.int8]!, output: out) }
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func denseGemmWeightsAreStoredPerOutput() throws {
        // MatMul's B gets a scale per column, a transB Gemm's B one per row; the bias stays float32.
        let (graph, inputs) = ProgramInt8Tests.linearGraph(seed: 4)
        var model = SPPModel(graph: graph, provenance: Provenance())
        let report = try StoragePrecision.int8.encode(&model)
        #expect(report.tensors[.int8] == 2 && report.keptFloat32.isEmpty)
        #expect(model.encodings["w"]?.scales.flatMap { model.graph.initializers[$0]?.shape } == [1, 16])
        #expect(model.encodings["g"]?.scales.flatMap { model.graph.initializers[$0]?.shape } == [5, 1])
        #expect(model.encodings["c"] == nil && model.graph.initializers["c"]?.dtype == .float32)
        let file = Self.files.dir.appendingPathComponent("linear.spp").path
        try SPPWriter.write(model, to: file)
        let stored = try Model(path: file).run(inputs)
        let atLoad = try Program(graph: graph, options: RuntimeOptions(weights: .int8)).run(inputs)
        for name in ["h2", "out"] { #expect(stored[name]!.floats == atLoad[name]!.floats, "\(name)") }
    }

    @Test func lookupTablesExpandTheRowsTheyRead() throws {
        // A 10-row table in chunks of 3 rows, stored float16: a gather returns float32 rows of the float16 values.
        var r = SeededRandom(6)
        let table = r.tensor([10, 4])
        var graph = Graph(inputs: [ValueInfo(name: "ids", dtype: .int64, shape: [.fixed(5)])],
                          outputs: [ValueInfo(name: "rows", dtype: .float32, shape: nil)],
                          initializers: ["table": table], nodes: [Node(name: "g", op: .gather, inputs: ["table", "ids"], outputs: ["rows"])])
        let tables = LookupTable.split(&graph, minimumBytes: 0, rowsPerChunk: 3)
        var model = SPPModel(graph: graph, provenance: Provenance(), lookupTables: tables)
        #expect(try StoragePrecision.fp16.encode(&model).tensors[.float16] == 4)
        let file = Self.files.dir.appendingPathComponent("table.spp").path
        try SPPWriter.write(model, to: file)
        let ids: [Int64] = [9, 0, 4, 4, -1]
        let out = try Model(path: file).run(["ids": Tensor(ids, shape: [5])])["rows"]!
        let t = table.floats
        #expect(out.dtype == .float32 && out.shape == [5, 4])
        var expected: [Float] = []
        for i in ids {
            let row = Int((i + 10) % 10)
            for c in 0..<4 { expected.append(Float(Float16(t[row * 4 + c]))) }
        }
        #expect(out.floats == expected)
    }
}
