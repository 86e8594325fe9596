import Foundation
import Testing
import SPPCore
import SPPGraph
@testable import SPPKernels
import SPPONNX
import SPPPasses
import SPPRuntime

/// `RuntimeOptions(weights: .int8)`: which nodes get int8 kernels, and the real
/// all-MiniLM-L6-v2 with int8 weights against onnxruntime's float32 outputs.
@Suite struct ProgramInt8Tests {
    static let ranges: [ActivationRange] = ActivationRange.native == .eightBit ? [.eightBit, .sevenBit] : [.sevenBit]

    /// x [2, 3, 8] → MatMul by a constant → Gemm (transB, alpha, beta, C) → MatMul by a graph input.
    static func linearGraph(seed: UInt64) -> (Graph, [String: Tensor]) {
        var r = SeededRandom(seed)
        let graph = Graph(
            inputs: [ValueInfo(name: "x", dtype: .float32, shape: [.fixed(6), .fixed(8)]),
                     ValueInfo(name: "y", dtype: .float32, shape: [.fixed(5), .fixed(4)])],
            outputs: [ValueInfo(name: "out", dtype: .float32, shape: nil), ValueInfo(name: "h2", dtype: .float32, shape: nil)],
            initializers: ["w": r.tensor([8, 16]), "g": r.tensor([5, 16]), "c": r.tensor([5])],
            nodes: [Node(name: "mm", op: .matMul, inputs: ["x", "w"], outputs: ["h1"]),
                    Node(name: "gemm", op: .gemm, inputs: ["h1", "g", "c"], outputs: ["h2"],
                         attributes: ["transB": .int(1), "alpha": .float(0.5), "beta": .float(2)]),
                    Node(name: "dyn", op: .matMul, inputs: ["h2", "y"], outputs: ["out"])])
        return (graph, ["x": r.tensor([6, 8]), "y": r.tensor([5, 4])])
    }

    @Test(arguments: ranges)
    func matMulAndGemmWithConstantWeights(_ range: ActivationRange) throws {
        let (graph, inputs) = Self.linearGraph(seed: 1)
        let fp32 = try Program(graph: graph).run(inputs)
        let int8 = try Program(graph: graph, options: RuntimeOptions(weights: .int8, activationRange: range)).run(inputs)
        for name in ["h2", "out"] {
            let e = normalisedError(try #require(int8[name]), try #require(fp32[name]))
            // Measured 0.007–0.011.
            #expect(e > 0 && e < 0.02, "\(name) \(range): normalised error \(e)")
        }
        // The independent check of the Gemm: alpha · h1 · gᵀ + beta · c from float32 values, in Double.
        let w = graph.initializers["w"]!.floats, g = graph.initializers["g"]!.floats, c = graph.initializers["c"]!.floats
        let x = inputs["x"]!.floats
        let h1 = Linear.naiveGemm(transA: false, transB: false, m: 6, n: 16, k: 8, a: x, b: w)
        let h2 = Linear.naiveGemm(transA: false, transB: true, m: 6, n: 5, k: 16, a: h1, b: g).enumerated().map { 0.5 * $0.element + 2 * c[$0.offset % 5] }
        let e = normalisedError(try #require(int8["h2"]), Tensor(h2, shape: [6, 5]))
        #expect(e < 0.02, "Gemm against its definition: \(e)")
    }

    @Test func float32StaysFloat32() throws {
        // The same graph with weights as graph inputs: nothing to quantize, results identical.
        let (graph, inputs) = Self.linearGraph(seed: 2)
        var dynamic = graph
        dynamic.inputs += ["w", "g", "c"].map { ValueInfo(name: $0, dtype: .float32, shape: nil) }
        var all = inputs
        for name in ["w", "g", "c"] { all[name] = dynamic.initializers.removeValue(forKey: name) }
        let a = try Program(graph: dynamic).run(all)["out"]!
        let b = try Program(graph: dynamic, options: RuntimeOptions(weights: .int8)).run(all)["out"]!
        #expect(a.floats == b.floats)
    }

    @Test func int8KernelsHoldTheOnlyCopyOfTheirWeights() throws {
        let (graph, _) = Self.linearGraph(seed: 5)
        let fp32 = try Program(graph: graph)
        let int8 = try Program(graph: graph, options: RuntimeOptions(weights: .int8))
        // float32: w [8, 16], g [5, 16], c [5].
        #expect(fp32.weightBytes == 4 * (8 * 16 + 5 * 16 + 5))
        // int8: the values (row-major, or only the copy packed for oneDNN where this CPU has its
        // kernels), a float32 scale and an int32 column sum per output column; c stays a float32
        // constant (the Gemm reads it as it runs). No float32 copy of w or g is kept.
        let values = try [graph.initializers["w"]!, DataMovement.transpose(graph.initializers["g"]!, perm: [1, 0])].map { t in
            let v = try QuantizedMatrix.quantize(t).values
            return PackedMatrix(v.rawPointer, rows: v.shape[0], columns: v.shape[1])?.byteCount ?? v.count
        }
        #expect(int8.weightBytes == values.reduce(0, +) + 8 * 16 + 8 * 5 + 4 * 5)
        #expect(Set(int8.graph.initializers.keys) == ["c"])
        #expect(int8.releasedConstants.mapValues(\.shape) == ["w": [8, 16], "g": [5, 16]])
        #expect(int8.parameterCount == fp32.parameterCount && fp32.parameterCount == 8 * 16 + 5 * 16 + 5)
    }

    @Test func nonFiniteWeightsFailAtLoad() throws {
        let (graph, _) = Self.linearGraph(seed: 3)
        let bad = graph
        bad.initializers["w"]!.pointer(as: Float.self)[3] = .nan
        #expect(throws: RuntimeError.self) { try Program(graph: bad, options: RuntimeOptions(weights: .int8)) }
        _ = try Program(graph: bad)
    }

    /// Mean of the token vectors where the mask is 1, per batch row (sentence-transformers pooling).
    static func pooled(_ hidden: Tensor, mask: Tensor) -> [[Double]] {
        let (b, s, d) = (hidden.shape[0], hidden.shape[1], hidden.shape[2])
        let h = hidden.floats, m = mask.integers!
        return (0..<b).map { i in
            var v = [Double](repeating: 0, count: d)
            var n = 0.0
            for t in 0..<s where m[i * s + t] != 0 {
                n += 1
                for k in 0..<d { v[k] += Double(h[(i * s + t) * d + k]) }
            }
            return v.map { $0 / n }
        }
    }

    static func cosine(_ a: [Double], _ b: [Double]) -> Double {
        let dot = zip(a, b).map(*).reduce(0, +)
        return dot / (a.map { $0 * $0 }.reduce(0, +).squareRoot() * b.map { $0 * $0 }.reduce(0, +).squareRoot())
    }

    @Test(.enabled(if: TestPaths.hasShared, "../shared is absent"), arguments: ranges)
    func realMiniLMWithInt8WeightsStaysCloseToOnnxRuntime(_ range: ActivationRange) throws {
        let fixture = try #require(FixtureCase.all.first { $0.name == "real_minilm_l6" })
        let spec = try fixture.spec()
        let path = try #require(fixture.modelPath(spec))
        var graph = try ONNXImporter.load(path: path).graph
        _ = try PassPipeline.run(&graph)
        let inputs = try fixture.inputs(spec)
        let expected = try Npy.read(path: fixture.folder.appendingPathComponent("output_0.npy").path)
        let model = try Model(graph: graph, options: RuntimeOptions(weights: .int8, activationRange: range))
        let hidden = try #require(try model.run(inputs)["last_hidden_state"])
        let mask = try #require(inputs["attention_mask"])
        let got = Self.pooled(hidden, mask: mask), want = Self.pooled(expected, mask: mask)
        let cosines = zip(got, want).map { Self.cosine($0, $1) }
        // Measured 0.9988 and 0.9974 (8 bits), 0.9959 and 0.9921 (7 bits) on the two sentences.
        #expect(cosines.allSatisfy { $0 >= (range == .eightBit ? 0.995 : 0.99) }, "\(range): pooled cosines \(cosines)")
        // Quantized, not float32 by accident: the hidden states do move.
        let (_, c) = Comparison.compare(hidden, expected, atol: 0, rtol: 0)
        #expect(c.maxAbsError > 1e-3, "\(range): max abs difference \(c.maxAbsError)")
    }
}
