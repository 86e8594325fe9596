import Foundation
import Glibc
import Testing
import SPPCore
import SPPGraph
import SPPKernels
import SPPONNX
import SPPRuntime

/// The fused blocks and the newer operator forms written as standard opset-17
/// ONNX: each graph is lowered, serialized, read back by the importer (which
/// rejects any `spp.*` op and any other domain) and run, and must give what
/// the naive reference kernels give.
@Suite struct ONNXLoweringTests {
    /// Lowers, writes, and re-imports; checks that only opset-17 default-domain ops came back.
    static func roundTrip(_ graph: Graph) throws -> (Graph, ONNXLowering.Report) {
        let (lowered, report) = try ONNXLowering.lower(graph)
        let data = try ONNXExporter.encode(lowered)
        let back = try ONNXImporter.load(data: data, baseDirectory: nil)
        #expect(back.opsetVersion == 17 && back.irVersion == ONNXExporter.irVersion && back.producerName == "spp")
        #expect(!back.graph.nodes.contains { $0.op == .attention || $0.op == .feedForward || $0.op == .gelu })
        return (back.graph, report)
    }

    static func random(_ shape: [Int], _ rng: inout SplitMix64, scale: Float = 1) -> Tensor {
        Tensor((0..<shape.reduce(1, *)).map { _ in rng.signedUnit() * scale }, shape: shape)
    }

    struct AttentionCase: CustomStringConvertible, Sendable {
        var name: String
        var qk: [Int], vo: [Int]
        var causal = false
        var mask = false
        /// Shape of the position bias (nil: none); "heads" in it stays symbolic.
        var bias: [Dim]? = nil
        var description: String { name }
    }

    static let attentionCases: [AttentionCase] = [
        .init(name: "ragged with mask and per-head bias", qk: [3, 0, 5, 2], vo: [2, 4, 0, 1], mask: true, bias: [.fixed(1), .fixed(4), .symbol("seq"), .symbol("seq")]),
        .init(name: "ragged causal with mask", qk: [1, 4, 2, 2], vo: [3, 0, 1, 2], causal: true, mask: true),
        .init(name: "bias with a head axis of unknown size keeps every head", qk: [2, 2, 1, 3], vo: [0, 2, 3, 0],
              bias: [.fixed(1), .symbol("heads"), .symbol("seq"), .symbol("seq")]),
        .init(name: "bias shared by all heads", qk: [2, 3, 1, 1], vo: [1, 0, 0, 2], bias: [.symbol("seq"), .symbol("seq")]),
        .init(name: "no qk rank anywhere: uniform attention", qk: [0, 0, 0, 0], vo: [2, 1, 0, 3], mask: true),
        .init(name: "no vo rank anywhere: output is bo", qk: [2, 1, 0, 3], vo: [0, 0, 0, 0], mask: true),
        .init(name: "dense", qk: [3, 3, 3, 3], vo: [3, 3, 3, 3], causal: true),
    ]

    @Test(arguments: attentionCases)
    func attentionMatchesTheNaiveKernel(_ c: AttentionCase) throws {
        var rng = SplitMix64(seed: 7)
        let (b, s, d, h) = (2, 5, 12, 4)
        let (qk, vo) = (c.qk.reduce(0, +), c.vo.reduce(0, +))
        let w = Attention.Weights(wq: Self.random([d, qk], &rng), bq: Self.random([qk], &rng), wk: Self.random([d, qk], &rng),
                                  bk: Self.random([qk], &rng), wv: Self.random([d, vo], &rng), bv: Self.random([vo], &rng),
                                  wo: Self.random([vo, d], &rng), bo: Self.random([d], &rng))
        let x = Self.random([b, s, d], &rng)
        // Padding on the last two keys of row 1, as an extended BERT mask does it.
        let mask = Tensor((0..<b * s).map { i in i / s == 1 && i % s >= s - 2 ? Float(-10000) : 0 }, shape: [b, 1, 1, s])
        let biasShape = c.bias.map { dims in dims.map { $0 == .symbol("seq") ? s : $0 == .symbol("heads") ? h : $0.fixedValue! } }
        let bias = biasShape.map { Self.random($0, &rng) }

        var graph = Graph(inputs: [ValueInfo(name: "x", dtype: .float32, shape: [.symbol("batch"), .symbol("seq"), .fixed(d)])],
                          outputs: [ValueInfo(name: "y", dtype: .float32, shape: [.symbol("batch"), .symbol("seq"), .fixed(d)])],
                          initializers: ["wq": w.wq, "bq": w.bq, "wk": w.wk, "bk": w.bk, "wv": w.wv, "bv": w.bv, "wo": w.wo, "bo": w.bo],
                          nodes: [])
        var inputs = ["x": x]
        if c.mask {
            graph.inputs.append(ValueInfo(name: "mask", dtype: .float32, shape: [.symbol("batch"), .fixed(1), .fixed(1), .symbol("seq")]))
            inputs["mask"] = mask
        }
        if let bias {
            graph.inputs.append(ValueInfo(name: "bias", dtype: .float32, shape: c.bias))
            inputs["bias"] = bias
        }
        let attributes = AttentionAttributes(heads: h, qkRanks: c.qk, voRanks: c.vo, scale: 0.37, causal: c.causal).attributes
        graph.nodes = [Node(name: "attn", op: .attention,
                            inputs: ["x", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", c.mask ? "mask" : "", bias != nil ? "bias" : ""],
                            outputs: ["y"], attributes: attributes)]

        let (exported, report) = try Self.roundTrip(graph)
        let got = try Model(graph: exported).run(inputs)["y"]!
        let want = try Attention.naive(x, w, mask: c.mask ? mask : nil, bias: bias, .init(qkRanks: c.qk, voRanks: c.vo, scale: 0.37, causal: c.causal))
        let (ok, cmp) = Comparison.compare(got, want, atol: 1e-5, rtol: 1e-5)
        #expect(ok, "\(c): \(cmp)")

        // The layout written: heads without vo directions dropped unless a term's head axis is unknown.
        let layout = try #require(report.attention.first)
        let active = c.vo.filter { $0 > 0 }.count
        let keepsAll = c.bias?.contains(.symbol("heads")) == true
        #expect(layout.heads == (active == 0 ? 0 : keepsAll ? h : active))
        if active > 0 {
            let written = keepsAll ? Array(0..<h) : (0..<h).filter { c.vo[$0] > 0 }
            #expect(layout.qkPadded == max(1, written.map { c.qk[$0] }.max()!))
            #expect(layout.voPadded == written.map { c.vo[$0] }.max()!)
        }
    }

    @Test(arguments: [FeedForwardActivation.gelu, .geluTanh, .relu])
    func feedForwardMatchesTheNaiveKernel(_ activation: FeedForwardActivation) throws {
        var rng = SplitMix64(seed: 11)
        let (d, f) = (10, 17)
        for width in [f, 0] {
            let w1 = Self.random([d, width], &rng), b1 = Self.random([width], &rng), w2 = Self.random([width, d], &rng), b2 = Self.random([d], &rng)
            let x = Self.random([2, 3, d], &rng, scale: 3)
            let graph = Graph(inputs: [ValueInfo(name: "x", dtype: .float32, shape: [.symbol("batch"), .symbol("seq"), .fixed(d)])],
                              outputs: [ValueInfo(name: "y", dtype: .float32, shape: nil)],
                              initializers: ["w1": w1, "b1": b1, "w2": w2, "b2": b2],
                              nodes: [Node(name: "ffn", op: .feedForward, inputs: ["x", "w1", "b1", "w2", "b2"], outputs: ["y"],
                                           attributes: ["activation": .string(activation.rawValue)])])
            let (exported, _) = try Self.roundTrip(graph)
            let got = try Model(graph: exported).run(["x": x])["y"]!
            let kernelActivation: FeedForward.Activation = activation == .gelu ? .gelu : activation == .geluTanh ? .geluTanh : .relu
            let want = try FeedForward.naive(x, w1: w1, b1: b1, w2: w2, b2: b2, activation: kernelActivation)
            let (ok, cmp) = Comparison.compare(got, want, atol: 1e-5, rtol: 1e-5)
            #expect(ok, "\(activation) F=\(width): \(cmp)")
        }
    }

    @Test func geluOpBecomesErfOrTanhArithmetic() throws {
        let values: [Float] = [-6, -2.5, -1, -0.3, 0, 0.2, 0.9, 1.7, 4, 8]
        let x = Tensor(values, shape: [values.count])
        for approximate in ["none", "tanh"] {
            let graph = Graph(inputs: [ValueInfo(name: "x", dtype: .float32, shape: [.fixed(values.count)])],
                              outputs: [ValueInfo(name: "y", dtype: .float32, shape: [.fixed(values.count)])], initializers: [:],
                              nodes: [Node(name: "g", op: .gelu, inputs: ["x"], outputs: ["y"], attributes: ["approximate": .string(approximate)])])
            let (exported, report) = try Self.roundTrip(graph)
            #expect(report.rewritten["Gelu"] == 1)
            let got = try Model(graph: exported).run(["x": x])["y"]!
            // The definitions, in Double.
            let want = Tensor(values.map { v -> Float in
                let u = Double(v)
                return Float(approximate == "tanh" ? 0.5 * u * (1 + Glibc.tanh((2 / Double.pi).squareRoot() * (u + 0.044715 * u * u * u)))
                                                   : 0.5 * u * (1 + Glibc.erf(u / 2.0.squareRoot())))
            }, shape: [values.count])
            let (ok, cmp) = Comparison.compare(got, want, atol: 1e-6, rtol: 1e-6)
            #expect(ok, "\(approximate): \(cmp)")
        }
    }

    /// Opset-18 ReduceMean (axes input) and Split (`num_outputs`, smaller last part)
    /// and the old `coerce_2d` Softmax, written in their opset-17 forms.
    @Test func newerAndOlderFormsAreRewritten() throws {
        var rng = SplitMix64(seed: 3)
        let x = Self.random([2, 3, 5], &rng)
        let graph = Graph(
            inputs: [ValueInfo(name: "x", dtype: .float32, shape: [.symbol("batch"), .fixed(3), .fixed(5)])],
            outputs: ["mean", "noop", "part0", "part1", "soft"].map { ValueInfo(name: $0, dtype: .float32, shape: nil) },
            initializers: ["axes": Tensor([Int64(-1)], shape: [1]), "none": Tensor([Int64](), shape: [0])],
            nodes: [
                Node(name: "mean", op: .reduceMean, inputs: ["x", "axes"], outputs: ["mean"], attributes: ["keepdims": .int(0)]),
                Node(name: "noop", op: .reduceMax, inputs: ["x", "none"], outputs: ["noop"], attributes: ["noop_with_empty_axes": .int(1)]),
                Node(name: "split", op: .split, inputs: ["x"], outputs: ["part0", "part1"], attributes: ["axis": .int(2), "num_outputs": .int(2)]),
                Node(name: "soft", op: .softmax, inputs: ["x"], outputs: ["soft"], attributes: ["axis": .int(1), "coerce_2d": .int(1)]),
            ])
        let (exported, report) = try Self.roundTrip(graph)
        #expect(report.rewritten == ["ReduceMean": 1, "ReduceMax": 1, "Split": 1, "Softmax": 1])
        let want = try Model(graph: graph).run(["x": x])
        let got = try Model(graph: exported).run(["x": x])
        #expect(want["part0"]!.shape == [2, 3, 3] && want["part1"]!.shape == [2, 3, 2])
        for name in ["mean", "noop", "part0", "part1", "soft"] {
            let (ok, cmp) = Comparison.compare(got[name]!, want[name]!, atol: 0, rtol: 0)
            #expect(ok, "\(name): \(cmp)")
        }
    }

    @Test func unexportableGraphsAreNamedErrors() throws {
        let x = ValueInfo(name: "x", dtype: .float32, shape: [.fixed(2), .fixed(3), .fixed(4)])
        // Axes computed at run time have no opset-17 form.
        let computedAxes = Graph(inputs: [x, ValueInfo(name: "axes", dtype: .int64, shape: [.fixed(1)])],
                                 outputs: [ValueInfo(name: "y", dtype: .float32, shape: nil)], initializers: [:],
                                 nodes: [Node(name: "r", op: .reduceMean, inputs: ["x", "axes"], outputs: ["y"])])
        #expect(throws: ONNXExportError.cannotLower(node: "r", op: "ReduceMean", reason: "its axes ('axes') are computed; opset 17 needs them as an attribute")) {
            try ONNXLowering.lower(computedAxes)
        }
        // Attention weights must be constants to be padded per head.
        let attributes = AttentionAttributes(heads: 1, qkRanks: [2], voRanks: [2], scale: 1, causal: false).attributes
        let w = Tensor([Float](repeating: 0, count: 8), shape: [4, 2]), b = Tensor([Float](repeating: 0, count: 2), shape: [2])
        let computedWeight = Graph(inputs: [x, ValueInfo(name: "wq", dtype: .float32, shape: [.fixed(4), .fixed(2)])],
                                   outputs: [ValueInfo(name: "y", dtype: .float32, shape: nil)],
                                   initializers: ["b": b, "w": w, "wo": Tensor([Float](repeating: 0, count: 8), shape: [2, 4]),
                                                  "bo": Tensor([Float](repeating: 0, count: 4), shape: [4])],
                                   nodes: [Node(name: "a", op: .attention, inputs: ["x", "wq", "b", "w", "b", "w", "b", "wo", "bo"], outputs: ["y"], attributes: attributes)])
        #expect(throws: ONNXExportError.nonConstantWeight(node: "a", op: "spp.Attention", input: "wq")) { try ONNXLowering.lower(computedWeight) }
        // The exporter writes standard ops only.
        #expect(throws: ONNXExportError.self) { try ONNXExporter.encode(computedWeight) }
        // A folder that does not exist: a named error and no file.
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("missing/out.onnx").path
        let plain = Graph(inputs: [x], outputs: [ValueInfo(name: "y", dtype: .float32, shape: nil)], initializers: [:],
                          nodes: [Node(name: "n", op: .relu, inputs: ["x"], outputs: ["y"])])
        #expect(throws: ONNXExportError.self) { try ONNXExporter.write(plain, to: target) }
        #expect(!FileManager.default.fileExists(atPath: target))
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).isEmpty)
    }
}
