import Foundation
import SPPCore
import SPPGraph
import SPPONNX
import Testing

/// Paths relative to this file: the package root is two folders up, `shared/` sits beside it.
private enum Paths {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static let fixtures = packageRoot + "/Tests/SPPTests/Fixtures"
    static let importer = fixtures + "/onnx_importer"
    static let externalData = fixtures + "/external_data"
    static let shared = (packageRoot as NSString).appendingPathComponent("../shared")
    static let miniLM = shared + "/models/all-MiniLM-L6-v2/model.onnx"
    static let conformance = shared + "/conformance/onnx-node"
}

private let haveMiniLM = FileManager.default.fileExists(atPath: Paths.miniLM)
private let haveConformance = FileManager.default.fileExists(atPath: Paths.conformance + "/test_add/model.onnx")

/// The error an import throws; fails the test when it throws something else or nothing.
private func importError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> ONNXImportError? {
    do {
        try body()
        Issue.record("expected an ONNXImportError, the import succeeded", sourceLocation: sourceLocation)
    } catch let error as ONNXImportError {
        return error
    } catch {
        Issue.record("expected an ONNXImportError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// Elements of a tensor as Double, for every dtype (16-bit floats decoded from their bits).
private func doubles(_ t: Tensor) -> [Double] {
    switch t.dtype {
    case .float32: return t.buffer(as: Float.self).map { Double($0) }
    case .float64: return Array(t.buffer(as: Double.self))
    case .int64: return t.buffer(as: Int64.self).map { Double($0) }
    case .int32: return t.buffer(as: Int32.self).map { Double($0) }
    case .int16: return t.buffer(as: Int16.self).map { Double($0) }
    case .int8: return t.buffer(as: Int8.self).map { Double($0) }
    case .uint64: return t.buffer(as: UInt64.self).map { Double($0) }  // not Double.init, which picks init(bitPattern:)
    case .uint32: return t.buffer(as: UInt32.self).map { Double($0) }
    case .uint16: return t.buffer(as: UInt16.self).map { Double($0) }
    case .uint8: return t.buffer(as: UInt8.self).map { Double($0) }
    case .bool: return t.buffer(as: UInt8.self).map { Double($0) }
    case .bfloat16: return t.buffer(as: UInt16.self).map { Double(Float(bitPattern: UInt32($0) << 16)) }
    case .float16:
        return t.buffer(as: UInt16.self).map { h in
            let sign: Double = h & 0x8000 != 0 ? -1 : 1
            let e = Int((h >> 10) & 0x1F), m = Double(h & 0x3FF)
            if e == 0 { return sign * m * pow(2, -24) }
            if e == 31 { return m == 0 ? sign * .infinity : .nan }
            return sign * (1 + m / 1024) * pow(2, Double(e - 15))
        }
    }
}

private func initializer(_ g: Graph, _ name: String) throws -> Tensor {
    try #require(g.initializers[name], "no initializer '\(name)'")
}

private func node(_ g: Graph, _ name: String) throws -> Node {
    try #require(g.nodes.first { $0.name == name }, "no node '\(name)'")
}

@Suite("ONNX importer")
struct ONNXImporterTests {
    // MARK: - A real model

    @Test("imports all-MiniLM-L6-v2", .enabled(if: haveMiniLM, "shared/models/all-MiniLM-L6-v2/model.onnx is absent; skipping"))
    func miniLM() throws {
        let start = Date()
        let model = try ONNXImporter.load(path: Paths.miniLM)
        let seconds = Date().timeIntervalSince(start)
        print("MiniLM import: \(String(format: "%.3f", seconds)) s")
        #expect(seconds < 10, "importing a 90 MB model should take well under a second in release")

        #expect(model.opsetVersion == 17)
        #expect(model.irVersion == 8)
        #expect(model.producerName == "pytorch")
        let g = model.graph
        #expect(g.inputs.map(\.name) == ["input_ids", "attention_mask", "token_type_ids"])
        for input in g.inputs {
            #expect(input.dtype == .int64)
            #expect(input.shape == [.symbol("batch"), .symbol("seq")])
        }
        #expect(g.outputs.map(\.name) == ["last_hidden_state"])
        #expect(g.outputs[0].dtype == .float32)
        #expect(g.outputs[0].shape == [.symbol("batch"), .symbol("seq"), .fixed(384)])

        // 516 nodes of 24 op types in the file; the 160 Constant nodes become initializers.
        #expect(g.nodes.count == 356)
        let histogram = Dictionary(uniqueKeysWithValues: g.opHistogram)
        #expect(histogram.count == 23)
        #expect(histogram[.constant] == nil)
        #expect(histogram[.matMul] == 48)
        #expect(histogram[.add] == 63)
        #expect(histogram[.unsqueeze] == 61)
        #expect(histogram[.layerNormalization] == 13)
        #expect(histogram[.softmax] == 6)
        #expect(histogram[.erf] == 6)
        // Opset 17: nothing to rewrite.
        #expect(g.nodes.filter { $0.op == .softmax }.allSatisfy { $0.attributes["coerce_2d"] == nil })

        // 101 initializers + 160 constants. Parameters (computed with the onnx package):
        // 22,565,376 in float initializers (the 22,713,216 of the PyTorch model less its
        // unexported pooler, 384 × 384 + 384) + 26 floats in Constant nodes.
        #expect(g.initializers.count == 261)
        #expect(g.parameterCount == 22_565_402)
        let embeddings = try initializer(g, "m.embeddings.word_embeddings.weight")
        #expect(embeddings.shape == [30522, 384])
        #expect(embeddings.dtype == .float32)
    }

    // MARK: - Tensor files

    @Test("reads conformance TensorProto files", .enabled(if: haveConformance, "shared/conformance/onnx-node is absent; skipping"))
    func conformanceTensors() throws {
        let dir = Paths.conformance + "/test_add/test_data_set_0"
        let x = try ONNXImporter.readTensor(path: dir + "/input_0.pb")
        let y = try ONNXImporter.readTensor(path: dir + "/input_1.pb")
        let sum = try ONNXImporter.readTensor(path: dir + "/output_0.pb")
        for t in [x, y, sum] {
            #expect(t.dtype == .float32)
            #expect(t.shape == [3, 4, 5])
        }
        // First and last values as numpy sees them (onnx.numpy_helper.to_array).
        #expect(x.floats.prefix(3) == [1.764052391052246, 0.40015721321105957, 0.978738009929657])
        #expect(x.floats.last == -0.3627411723136902)
        #expect(y.floats.prefix(3) == [-0.6724604368209839, -0.35955315828323364, -0.8131462931632996])
        #expect(y.floats.last == 0.922206699848175)
        #expect(sum.floats.prefix(3) == [1.0915919542312622, 0.04060405492782593, 0.16559171676635742])
        #expect(sum.floats.last == 0.5594655275344849)
        #expect(zip(x.floats, y.floats).map(+) == sum.floats)

        let model = try ONNXImporter.load(path: Paths.conformance + "/test_add/model.onnx")
        #expect(model.opsetVersion == 14)
        #expect(model.graph.nodes.map(\.op) == [.add])
        #expect(model.graph.inputs.map(\.name) == ["x", "y"])
    }

    @Test("reads every data type from raw_data and from the typed fields")
    func everyDType() throws {
        let expected: [DType: [Double]] = [
            .float32: [0, 1.5, -2.25, 3, -4.5, 100], .float64: [0, 1.5, -2.25, 3, -4.5, 100],
            .float16: [0, 1.5, -2.25, 3, -4.5, 100], .bfloat16: [0, 1.5, -2.25, 3, -4.5, 100],
            .int8: [0, 1, -2, 3, -4, 100], .int16: [0, 1, -2, 3, -4, 100], .int32: [0, 1, -2, 3, -4, 100],
            .int64: [0, 1, -2, 3, -4, 1_099_511_627_776],
            .uint8: [0, 1, 2, 3, 4, 200], .uint16: [0, 1, 2, 3, 4, 200], .uint32: [0, 1, 2, 3, 4, 2_147_483_648],
            .uint64: [0, 1, 2, 3, 4, 9_223_372_036_854_775_808], .bool: [1, 0, 1, 1, 0, 0],
        ]
        #expect(Set(expected.keys) == Set(DType.allCases))
        for (dtype, values) in expected {
            for storage in ["raw", "typed"] {
                let t = try ONNXImporter.readTensor(path: "\(Paths.importer)/tensors/\(dtype)_\(storage).pb")
                #expect(t.dtype == dtype, "\(dtype) \(storage)")
                #expect(t.shape == [2, 3], "\(dtype) \(storage)")
                #expect(doubles(t) == values, "\(dtype) \(storage)")
            }
        }
        let scalar = try ONNXImporter.readTensor(path: Paths.importer + "/tensors/scalar_float32.pb")
        #expect(scalar.shape == [])
        #expect(scalar.floats == [-7.5])
    }

    @Test("reports bad tensor files")
    func badTensors() throws {
        let dir = Paths.importer + "/tensors"
        #expect(importError { _ = try ONNXImporter.readTensor(path: dir + "/size_mismatch.pb") }
            == .tensorDataSizeMismatch(tensor: "short", expectedBytes: 24, actualBytes: 20))
        let negative = importError { _ = try ONNXImporter.readTensor(path: dir + "/negative_dim.pb") }
        #expect(negative == .badDimension(value: "negative", reason: "dimension 1 is negative (-3)"))
        guard case .badDimension(value: "huge", _)? = importError({ _ = try ONNXImporter.readTensor(path: dir + "/huge_dims.pb") }) else {
            Issue.record("expected badDimension for huge dims")
            return
        }
        #expect(importError { _ = try ONNXImporter.readTensor(path: dir + "/no_such_file.pb") }
            == .fileUnreadable(path: dir + "/no_such_file.pb", reason: "no such file"))

        // Truncated tensor files: every prefix of a raw float tensor is an error, never a crash.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/float32_raw.pb"))
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("spp-onnx-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        for n in 0..<bytes.count {
            let path = tmp.appendingPathComponent("t\(n).pb").path
            try bytes.prefix(n).write(to: URL(fileURLWithPath: path))
            #expect(importError { _ = try ONNXImporter.readTensor(path: path) } != nil, "prefix of \(n) bytes")
        }
    }

    // MARK: - Corrupt models

    @Test("truncated or corrupt model bytes give errors, never a crash")
    func truncatedModels() throws {
        var models = [Paths.importer + "/constants.onnx", Paths.importer + "/old_opset9.onnx"]
        if haveConformance { models.append(Paths.conformance + "/test_add/model.onnx") }
        for path in models {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            _ = try ONNXImporter.load(data: bytes, baseDirectory: nil)
            for n in 0..<bytes.count {
                #expect(importError { _ = try ONNXImporter.load(data: bytes.prefix(n), baseDirectory: nil) } != nil,
                        "\(path): prefix of \(n) bytes")
            }
            // Every byte overwritten in turn: either imports or reports, never traps.
            for i in 0..<bytes.count {
                for value: UInt8 in [0x00, 0xFF, 0x7F] {
                    var broken = bytes
                    broken[i] = value
                    do { _ = try ONNXImporter.load(data: broken, baseDirectory: nil) } catch is ONNXImportError {} catch {
                        Issue.record("\(path): byte \(i) = \(value): unexpected error \(error)")
                    }
                }
            }
        }
        #expect(importError { _ = try ONNXImporter.load(data: Data(), baseDirectory: nil) }
            == .notAProtobuf(source: "ONNX data", message: "ModelProto", byteCount: 0))
        // Seeded garbage.
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for length in [1, 2, 7, 64, 1000] {
            let garbage = Data((0..<length).map { _ -> UInt8 in
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return UInt8(truncatingIfNeeded: state >> 56)
            })
            #expect(importError { _ = try ONNXImporter.load(data: garbage, baseDirectory: nil) } != nil)
        }
        #expect(importError { _ = try ONNXImporter.load(path: Paths.importer + "/missing.onnx") }
            == .fileUnreadable(path: Paths.importer + "/missing.onnx", reason: "no such file"))
        #expect(importError { _ = try ONNXImporter.load(path: Paths.importer) }
            == .fileUnreadable(path: Paths.importer, reason: "it is a directory"))
    }

    // MARK: - External data

    @Test("reads external data relative to the model's folder")
    func externalData() throws {
        let model = try ONNXImporter.load(path: Paths.externalData + "/model.onnx")
        let g = model.graph
        let w = try initializer(g, "W"), b = try initializer(g, "B")
        #expect(w.shape == [3, 4])
        #expect(w.floats == [-1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5])
        #expect(b.shape == [4])
        #expect(b.floats == [0.25, -0.5, 1, 2])
        #expect(g.nodes.map(\.op) == [.matMul, .add])

        let dir = Paths.externalData
        #expect(importError { _ = try ONNXImporter.load(path: dir + "/bad_escape.onnx") }
            == .externalDataBadLocation(tensor: "W", location: "../weights.bin", reason: "leaves the model's folder"))
        #expect(importError { _ = try ONNXImporter.load(path: dir + "/bad_absolute.onnx") }
            == .externalDataBadLocation(tensor: "W", location: "/nonexistent/weights.bin",
                                        reason: "is absolute; it must be relative to the model's folder"))
        #expect(importError { _ = try ONNXImporter.load(path: dir + "/bad_missing.onnx") }
            == .externalDataFileMissing(tensor: "W", location: "missing.bin", path: dir + "/missing.bin"))
        #expect(importError { _ = try ONNXImporter.load(path: dir + "/bad_range.onnx") }
            == .externalDataOutOfRange(tensor: "B", location: "weights.bin", offset: 4096, length: 16, fileSize: 80))
        #expect(importError { _ = try ONNXImporter.load(path: dir + "/bad_length.onnx") }
            == .tensorDataSizeMismatch(tensor: "B", expectedBytes: 16, actualBytes: 12))

        let bytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/model.onnx"))
        guard case .externalDataInvalid(tensor: "W", _)? = importError({ _ = try ONNXImporter.load(data: bytes, baseDirectory: nil) }) else {
            Issue.record("expected externalDataInvalid without a base directory")
            return
        }
        #expect(try ONNXImporter.load(data: bytes, baseDirectory: dir).graph.initializers.count == 2)
    }

    // MARK: - Unsupported content

    @Test("names unsupported ops, domains, opsets, subgraphs and types")
    func unsupported() throws {
        let dir = Paths.importer
        #expect(importError { _ = try ONNXImporter.load(path: dir + "/unsupported_op.onnx") }
            == .unsupportedOp(opType: "ArgMax", node: "argmax", domain: "", opsetVersion: 13))
        #expect(importError { _ = try ONNXImporter.load(path: dir + "/unsupported_domain.onnx") }
            == .unsupportedOp(opType: "FastGelu", node: "fastgelu", domain: "com.microsoft", opsetVersion: 1))
        #expect(importError { _ = try ONNXImporter.load(path: dir + "/gelu_opset18.onnx") }
            == .unsupportedOp(opType: "Gelu", node: "gelu", domain: "", opsetVersion: 18))
        #expect(importError { _ = try ONNXImporter.load(path: dir + "/opset29.onnx") }
            == .unsupportedOpset(domain: "", version: 29, supported: 1...28))
        // Opset 6 Add broadcasts through a `broadcast` attribute, a form the importer does not read.
        #expect(importError { _ = try ONNXImporter.load(path: dir + "/opset6_add.onnx") }
            == .unsupportedOp(opType: "Add", node: "add", domain: "", opsetVersion: 6))
        #expect(importError { _ = try ONNXImporter.load(path: dir + "/if_subgraph.onnx") }
            == .subgraphAttribute(node: "if", opType: "If", attribute: "else_branch"))
        #expect(importError { _ = try ONNXImporter.load(path: dir + "/string_initializer.onnx") }
            == .unsupportedDataType(value: "S", typeName: "string"))
        #expect(importError { _ = try ONNXImporter.load(path: dir + "/sequence_input.onnx") }
            == .unsupportedValueType(value: "X", kind: "sequence"))
        // Every message names what is wrong.
        let message = ONNXImportError.unsupportedOp(opType: "FastGelu", node: "fastgelu", domain: "com.microsoft", opsetVersion: 1).description
        #expect(message.contains("FastGelu") && message.contains("fastgelu") && message.contains("com.microsoft"))
    }

    // MARK: - Constants and names

    @Test("turns Constant nodes into initializers and names what has no name")
    func constants() throws {
        let g = try ONNXImporter.load(path: Paths.importer + "/constants.onnx").graph
        #expect(try initializer(g, "c_float").shape == [])
        #expect(try initializer(g, "c_float").floats == [2.5])
        #expect(try initializer(g, "c_floats").floats == [1, -1, 0.5])
        #expect(try initializer(g, "c_int").dtype == .int64)
        #expect(try initializer(g, "c_int").shape == [])
        #expect(try initializer(g, "c_int").int64s == [7])
        #expect(try initializer(g, "c_ints").int64s == [4, -1])
        let tensor = try initializer(g, "c_tensor")
        #expect(tensor.dtype == .int32)
        #expect(tensor.shape == [2, 2])
        #expect(tensor.integers == [1, 2, 3, 4])
        #expect(try initializer(g, "W").floats == [1, 2, 3])

        // W is both an input and an initializer: a constant, not an input.
        #expect(g.inputs.map(\.name) == ["X"])
        #expect(g.inputs[0].shape == [.symbol("N"), .symbol("X_dim1"), .fixed(3)])
        #expect(g.outputs[1].shape == [.symbol("R_dim0"), .symbol("R_dim1")])
        #expect(g.outputs[1].dtype == .int32)
        #expect(g.nodes.map(\.name) == ["Mul_5", "Mul_6", "Add_7", "id", "reshape"])
        #expect(g.nodes.map(\.op) == [.mul, .mul, .add, .identity, .reshape])
    }

    // MARK: - Opset normalisation

    @Test("rewrites opset 9 attribute forms to inputs")
    func opset9() throws {
        let model = try ONNXImporter.load(path: Paths.importer + "/old_opset9.onnx")
        #expect(model.opsetVersion == 9)
        let g = model.graph

        let unsqueeze = try node(g, "unsq")
        #expect(unsqueeze.inputs == ["X", "unsq::axes"])
        #expect(unsqueeze.attributes.isEmpty)
        #expect(try initializer(g, "unsq::axes").int64s == [0])
        #expect(try initializer(g, "unsq::axes").shape == [1])
        #expect(try node(g, "sq").inputs == ["u", "sq::axes"])

        let slice = try node(g, "slice")
        #expect(slice.inputs == ["s", "slice::starts", "slice::ends", "slice::axes"])
        #expect(slice.attributes.isEmpty)
        #expect(try initializer(g, "slice::starts").int64s == [0])
        #expect(try initializer(g, "slice::ends").int64s == [4])
        #expect(try initializer(g, "slice::axes").int64s == [1])

        let clip = try node(g, "clip")
        #expect(clip.inputs == ["sl", "clip::min", "clip::max"])
        #expect(clip.attributes.isEmpty)
        #expect(try initializer(g, "clip::min").shape == [])
        #expect(try initializer(g, "clip::min").floats == [-1])
        #expect(try initializer(g, "clip::max").floats == [1])
        #expect(try node(g, "clip_max").inputs == ["c", "", "clip_max::max"])
        #expect(try initializer(g, "clip_max::max").floats == [0.5])

        let softmax = try node(g, "softmax")
        #expect(softmax.attributes == ["axis": .int(1), "coerce_2d": .int(1)])

        let reduceSum = try node(g, "rsum")
        #expect(reduceSum.inputs == ["sm", "rsum::axes"])
        #expect(reduceSum.attributes == ["keepdims": .int(0)])
        #expect(try initializer(g, "rsum::axes").int64s == [1])
        #expect(try node(g, "rmean").inputs == ["sm", "rmean::axes"])
        #expect(try initializer(g, "rmean::axes").int64s == [0, 1])

        let split = try node(g, "split")
        #expect(split.inputs == ["r"])
        #expect(split.attributes == ["axis": .int(0), "num_outputs": .int(2)])
    }

    @Test("rewrites opset 11 attribute forms to inputs")
    func opset11() throws {
        let g = try ONNXImporter.load(path: Paths.importer + "/old_opset11.onnx").graph
        #expect(try initializer(g, "unsq::axes").int64s == [-1])
        #expect(try initializer(g, "sq::axes").int64s == [2])
        let split = try node(g, "split")
        #expect(split.inputs == ["s", "split::split"])
        #expect(split.attributes == ["axis": .int(1)])
        #expect(try initializer(g, "split::split").int64s == [2, 4])
        #expect(try node(g, "logsoftmax").attributes == ["axis": .int(1), "coerce_2d": .int(1)])
        let reduceMax = try node(g, "rmax")
        #expect(reduceMax.inputs == ["q", "rmax::axes"])
        #expect(reduceMax.attributes == ["keepdims": .int(1)])
        // ReduceSum without axes reduces everything, in every opset: nothing to add.
        #expect(try node(g, "rsum").inputs == ["q"])
    }

    @Test("reads opset 1 unary ops without their consumed_inputs hint")
    func opset1() throws {
        let model = try ONNXImporter.load(path: Paths.importer + "/opset1_relu.onnx")
        #expect(model.opsetVersion == 1)
        #expect(try node(model.graph, "relu").attributes.isEmpty)
    }

    @Test("keeps opset 13 forms, adds Split's num_outputs")
    func opset13() throws {
        let g = try ONNXImporter.load(path: Paths.importer + "/opset13.onnx").graph
        #expect(try node(g, "softmax").attributes.isEmpty)
        #expect(try node(g, "split").attributes == ["axis": .int(1), "num_outputs": .int(2)])
        #expect(g.initializers.isEmpty)
    }
}
