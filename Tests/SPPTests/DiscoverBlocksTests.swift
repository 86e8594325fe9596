import Foundation
import Testing
import SPPCore
import SPPGraph
import SPPONNX
import SPPPasses
import SPPRuntime

/// Builds small graphs by hand for the patterns no committed fixture has.
private struct GraphBuilder {
    var inputs: [ValueInfo] = []
    var outputs: [ValueInfo] = []
    var initializers: [String: Tensor] = [:]
    var nodes: [Node] = []
    var random = SeededRandom(11)
    var count = 0

    mutating func fresh(_ hint: String) -> String {
        count += 1
        return "\(hint)\(count)"
    }

    mutating func input(_ name: String, _ dims: [Dim], _ dtype: DType = .float32) -> String {
        inputs.append(ValueInfo(name: name, dtype: dtype, shape: dims))
        return name
    }

    mutating func constant(_ t: Tensor, _ hint: String = "c") -> String {
        let name = fresh(hint)
        initializers[name] = t
        return name
    }

    mutating func ints(_ v: [Int]) -> String { constant(Tensor(v.map { Int64($0) }, shape: [v.count]), "i") }
    mutating func scalar(_ v: Float) -> String { constant(Tensor([v], shape: []), "s") }
    mutating func weight(_ shape: [Int], scale: Float = 0.4) -> String { constant(random.tensor(shape, scale: scale), "w") }

    @discardableResult
    mutating func op(_ op: OpType, _ inputs: [String], _ attributes: [String: Attribute] = [:], outputs n: Int = 1, name: String? = nil) -> [String] {
        let outs = (0..<n).map { _ in fresh("v") }
        nodes.append(Node(name: name ?? fresh("/block/\(op.rawValue)_"), op: op, inputs: inputs, outputs: outs, attributes: attributes))
        return outs
    }

    mutating func one(_ o: OpType, _ inputs: [String], _ attributes: [String: Attribute] = [:], name: String? = nil) -> String {
        op(o, inputs, attributes, name: name)[0]
    }

    mutating func output(_ name: String) { outputs.append(ValueInfo(name: name, dtype: .float32, shape: nil)) }

    var graph: Graph { Graph(inputs: inputs, outputs: outputs, initializers: initializers, nodes: nodes) }

    /// `[B, S, H·d]` → `[B, H, S, d]` (or, for a key, `[B, H, d, S]` when `keyFirst`).
    mutating func splitHeads(_ t: String, heads: Int, size: Int, layout: [Int] = [0, 2, 1, 3]) -> String {
        let r = one(.reshape, [t, ints([0, 0, heads, size])])
        return one(.transpose, [r], ["perm": .ints(layout)])
    }
}

@Suite struct DiscoverBlocksTests {
    struct ModelCase: CustomStringConvertible, Sendable {
        var name: String
        var layers: Int
        var heads: Int, headSize: Int
        var activation: String
        var positionBias = false
        var description: String { name }
    }

    static let models: [ModelCase] = [
        ModelCase(name: "bert_tiny", layers: 2, heads: 2, headSize: 16, activation: "gelu"),
        ModelCase(name: "minilm_tiny_opset17", layers: 2, heads: 4, headSize: 9, activation: "gelu"),
        ModelCase(name: "mpnet_tiny", layers: 2, heads: 4, headSize: 8, activation: "gelu", positionBias: true),
        ModelCase(name: "vit_tiny", layers: 2, heads: 2, headSize: 16, activation: "gelu"),
        ModelCase(name: "gpt2_tiny", layers: 2, heads: 4, headSize: 8, activation: "gelu_tanh"),
    ]

    /// Every layer of every model fixture becomes one attention and one FFN
    /// node, and the fused model still matches onnxruntime.
    @Test(arguments: Self.models)
    func fixtureBlocksAreFused(_ m: ModelCase) throws {
        let fixture = FixtureCase(name: m.name, folder: TestPaths.fixtures.appendingPathComponent(m.name))
        let spec = try fixture.spec()
        let imported = try ONNXImporter.load(path: try #require(fixture.modelPath(spec))).graph

        var simplified = imported
        _ = try PassPipeline.run(&simplified, passes: PassPipeline.simplify, verify: true)
        let (_, report) = try BlockDiscovery.run(simplified)
        #expect(report.count(.attention) == m.layers, "\(report.lines.joined(separator: "\n"))")
        #expect(report.count(.feedForward) == m.layers, "\(report.lines.joined(separator: "\n"))")
        #expect(report.unmatched.isEmpty, "\(report.unmatched)")
        for b in report.blocks where b.kind == .attention {
            #expect(b.heads == m.heads && b.headSize == m.headSize && b.valueHeadSize == m.headSize)
            #expect(b.hasBias == m.positionBias)
            #expect(b.hasMask == (m.name != "vit_tiny"))
        }
        for b in report.blocks where b.kind == .feedForward { #expect(b.activation == m.activation) }
        #expect(report.blocks.map(\.layer) == (0..<m.layers).flatMap { [$0, $0] })

        var fused = imported
        let passes = try PassPipeline.run(&fused, verify: true)
        #expect(passes.first { $0.name == "discover-blocks" }?.changes == 2 * m.layers)
        // Only BERT's pooler (a Gemm) stays.
        #expect(!fused.nodes.contains { $0.op == .softmax || $0.op == .matMul })
        #expect(fused.nodes.filter { $0.op == .gemm }.count == (m.name == "bert_tiny" ? 1 : 0))
        #expect(fused.nodes.filter { $0.op == .attention }.count == m.layers)
        #expect(fused.nodes.filter { $0.op == .feedForward }.count == m.layers)

        let inputs = try fixture.inputs(spec)
        let outputs = try Model(graph: fused).run(inputs)
        let unfused = try Model(graph: imported).run(inputs)
        for (k, name) in spec.outputs.enumerated() {
            let expected = try Npy.read(path: fixture.folder.appendingPathComponent("output_\(k).npy").path)
            let got = try #require(outputs[name])
            let (ok, c) = Comparison.compare(got, expected, atol: spec.atol, rtol: spec.rtol)
            #expect(ok, "\(m.name) \(name): \(c)")
            let (_, own) = Comparison.compare(got, unfused[name]!, atol: 0, rtol: 0)
            print("\(m.name) \(name): fused vs onnxruntime max abs error \(c.maxAbsError); vs unfused \(own.maxAbsError)")
        }
    }

    @Test func realMiniLMHasSixLayers() throws {
        guard TestPaths.hasShared, FileManager.default.fileExists(atPath: TestPaths.miniLM.path) else {
            print("skipping: \(TestPaths.miniLM.path) not found (../shared absent)")
            return
        }
        var g = try ONNXImporter.load(path: TestPaths.miniLM.path).graph
        _ = try PassPipeline.run(&g, passes: PassPipeline.simplify)
        let (fused, report) = try BlockDiscovery.run(g)
        #expect(report.count(.attention) == 6 && report.count(.feedForward) == 6, "\(report.lines)")
        #expect(report.unmatched.isEmpty)
        #expect(report.blocks.allSatisfy { $0.kind == .feedForward ? $0.inner == 1536 : $0.heads == 12 && $0.headSize == 32 && $0.hidden == 384 })
        #expect(fused.nodes.filter { $0.op == .attention }.count == 6)
    }

    // MARK: Patterns no fixture has

    /// GPT-2 as transformers 4.x exported it: one fused QKV projection split
    /// in three, scores divided by √d, `Where(bias[:, :, :seq, :seq], scores,
    /// min)` with a constant lower-triangular buffer, then the padding mask.
    private static func gpt2Legacy(triangle: (Int, Int) -> Bool = { i, j in j <= i }, slices: Bool = false) -> Graph {
        var b = GraphBuilder()
        let (d, h, dh) = (12, 3, 4)
        let x = b.input("x", [.symbol("batch"), .symbol("seq"), .fixed(d)])
        let mask = b.input("mask", [.symbol("batch"), .fixed(1), .fixed(1), .symbol("seq")])
        let qkv = b.one(.add, [b.one(.matMul, [x, b.weight([d, 3 * d])]), b.weight([3 * d])])
        let parts = slices
            ? (0..<3).map { k in b.one(.slice, [qkv, b.ints([k * d]), b.ints([k == 2 ? Int(Int32.max) : (k + 1) * d]), b.ints([-1])]) }
            : b.op(.split, [qkv, b.ints([d, d, d])], ["axis": .int(2)], outputs: 3)
        let q = b.splitHeads(parts[0], heads: h, size: dh)
        let k = b.one(.transpose, [b.splitHeads(parts[1], heads: h, size: dh)], ["perm": .ints([0, 1, 3, 2])])
        let v = b.splitHeads(parts[2], heads: h, size: dh)
        let scores = b.one(.div, [b.one(.matMul, [q, k]), b.scalar(2)])
        let n = 16
        let buffer = b.constant(Tensor((0..<n * n).map { triangle($0 / n, $0 % n) }, shape: [1, 1, n, n]), "tril")
        let seq = b.one(.unsqueeze, [b.one(.gather, [b.one(.shape, [x]), b.constant(Tensor([Int64(1)], shape: []))]), b.ints([0])])
        let ends = b.one(.concat, [seq, seq], ["axis": .int(0)])
        let condition = b.one(.slice, [buffer, b.ints([0, 0]), ends, b.ints([2, 3])])
        let causal = b.one(.where, [condition, scores, b.scalar(-Float.greatestFiniteMagnitude)])
        let p = b.one(.softmax, [b.one(.add, [causal, mask])], ["axis": .int(-1)], name: "/block/Softmax")
        let context = b.one(.transpose, [b.one(.matMul, [p, v])], ["perm": .ints([0, 2, 1, 3])])
        let merged = b.one(.reshape, [context, b.ints([0, 0, d])])
        let y = b.one(.add, [b.one(.matMul, [merged, b.weight([d, d])]), b.weight([d])])
        b.output(y)
        return b.graph
    }

    /// Inputs for the hand-built graphs: x and an additive padding mask (the last key of the last row masked).
    private static func inputs(batch: Int = 2, seq: Int = 5, hidden: Int = 12, mask: Bool = true) -> [String: Tensor] {
        var r = SeededRandom(3)
        var out = ["x": r.tensor([batch, seq, hidden])]
        if mask {
            var m = [Float](repeating: 0, count: batch * seq)
            m[batch * seq - 1] = -Float.greatestFiniteMagnitude
            out["mask"] = Tensor(m, shape: [batch, 1, 1, seq])
        }
        return out
    }

    /// Runs the standard pipeline; the fused graph must compute what the original did.
    private static func fuseAndCompare(_ graph: Graph, _ inputs: [String: Tensor]) throws -> Graph {
        var fused = graph
        _ = try PassPipeline.run(&fused, verify: true)
        let want = try Program(graph: graph).run(inputs), got = try Program(graph: fused).run(inputs)
        for (name, t) in want {
            let e = normalisedError(try #require(got[name]), t)
            #expect(e < 1e-5, "\(name): normalised error \(e)")
        }
        return fused
    }

    @Test(arguments: [false, true])
    func legacyGPT2CausalWhereIsFused(slices: Bool) throws {
        let graph = Self.gpt2Legacy(slices: slices)
        let (_, report) = try BlockDiscovery.run(graph)
        #expect(report.count(.attention) == 1 && report.unmatched.isEmpty, "\(report.lines)")
        #expect(report.blocks.first?.causal == true && report.blocks.first?.hasMask == true)
        let fused = try Self.fuseAndCompare(graph, Self.inputs())
        let node = try #require(fused.nodes.first { $0.op == .attention })
        let a = try node.attentionAttributes()
        #expect(a.causal && a.heads == 3 && a.qkRanks == [4, 4, 4] && a.voRanks == [4, 4, 4])
        #expect(abs(a.scale - 0.5) < 1e-7)
        #expect(!fused.nodes.contains { $0.op == .where || $0.op == .slice || $0.op == .split })
        // The ends of the causal window, read from inputs of other lengths.
        _ = try Self.fuseAndCompare(graph, Self.inputs(batch: 1, seq: 9))
    }

    @Test func nonCausalConditionIsNotFused() throws {
        for (what, triangle) in [("upper", { (i: Int, j: Int) in j >= i }), ("off by one", { (i: Int, j: Int) in j <= i + 1 })] {
            let graph = Self.gpt2Legacy(triangle: triangle)
            let (same, report) = try BlockDiscovery.run(graph)
            #expect(report.blocks.isEmpty, "\(what)")
            #expect(report.unmatched.map(\.node) == ["/block/Softmax"])
            #expect(report.unmatched.first?.reason.contains("not a causal mask") == true, "\(what): \(report.unmatched)")
            #expect(same.nodes.count == graph.nodes.count)
        }
    }

    @Test func innerValueReadElsewhereIsNotFused() throws {
        var graph = Self.gpt2Legacy()
        let softmax = try #require(graph.nodes.first { $0.op == .softmax })
        graph.outputs.append(ValueInfo(name: softmax.outputs[0], dtype: .float32, shape: nil))
        let (same, report) = try BlockDiscovery.run(graph)
        #expect(report.blocks.isEmpty)
        #expect(report.unmatched.first?.reason.contains("graph output") == true, "\(report.unmatched)")
        #expect(same.nodes.count == graph.nodes.count)
    }

    /// transformers 5.x: q and k each scaled by √scale after the head split,
    /// k transposed twice, v and the output projection without biases; then
    /// FFNs with a Gemm(transB) + Relu, an erf GELU in another arrangement,
    /// the Gelu op, and a tanh GELU written with h·h·h and a division by 2.
    @Test func scaledHeadsGemmAndActivationArrangements() throws {
        var b = GraphBuilder()
        let (d, h, dh, f) = (12, 2, 6, 10)
        let x = b.input("x", [.symbol("batch"), .symbol("seq"), .fixed(d)])
        let root = Float(1 / Double(dh).squareRoot()).squareRoot()
        let q = b.one(.mul, [b.splitHeads(b.one(.add, [b.weight([d]), b.one(.matMul, [x, b.weight([d, d])])]), heads: h, size: dh), b.scalar(root)])
        let kHeads = b.splitHeads(b.one(.add, [b.one(.matMul, [x, b.weight([d, d])]), b.weight([d])]), heads: h, size: dh)
        let k = b.one(.mul, [b.scalar(root), b.one(.transpose, [kHeads], ["perm": .ints([0, 1, 3, 2])])])
        let v = b.splitHeads(b.one(.matMul, [x, b.weight([d, d])]), heads: h, size: dh)
        let p = b.one(.softmax, [b.one(.matMul, [q, k])], ["axis": .int(3)])
        let merged = b.one(.reshape, [b.one(.transpose, [b.one(.matMul, [p, v])], ["perm": .ints([0, 2, 1, 3])]), b.ints([0, 0, -1])])
        let attention = b.one(.matMul, [merged, b.weight([d, d])])
        let x1 = b.one(.add, [attention, x])

        // Relu FFN through GPT-2-style Gemm wrappers with W1 stored transposed.
        let flat = b.one(.reshape, [x1, b.ints([-1, d])])
        let gemm = b.one(.gemm, [flat, b.weight([f, d]), b.weight([f])], ["transB": .int(1)])
        let back = b.one(.reshape, [gemm, b.one(.concat, [b.one(.slice, [b.one(.shape, [x1]), b.ints([0]), b.ints([2])]), b.ints([f])], ["axis": .int(0)])])
        let relu = b.one(.relu, [back])
        let x2 = b.one(.add, [x1, b.one(.add, [b.weight([d]), b.one(.matMul, [relu, b.weight([f, d])])])])

        // Erf GELU as (h · 0.5) · (1 + erf(h · 1/√2)).
        let hidden = b.one(.add, [b.one(.matMul, [x2, b.weight([d, f])]), b.weight([f])])
        let erf = b.one(.erf, [b.one(.mul, [hidden, b.scalar(Float(1 / 2.0.squareRoot()))])])
        let gelu = b.one(.mul, [b.one(.mul, [hidden, b.scalar(0.5)]), b.one(.add, [b.scalar(1), erf])])
        let x3 = b.one(.add, [b.one(.matMul, [gelu, b.weight([f, d])]), b.weight([d])])

        // The Gelu op (tanh approximation), then tanh GELU written out with h·h·h and a division by 2.
        let x4 = b.one(.add, [b.one(.matMul, [b.one(.gelu, [b.one(.add, [b.one(.matMul, [x3, b.weight([d, f])]), b.weight([f])])], ["approximate": .string("tanh")]),
                                              b.weight([f, d])]), b.weight([d])])
        let h4 = b.one(.add, [b.one(.matMul, [x4, b.weight([d, f])]), b.weight([f])])
        let cube = b.one(.mul, [b.one(.mul, [h4, h4]), h4])
        let inner = b.one(.add, [b.one(.mul, [b.scalar(0.044715), cube]), h4])
        let tanh = b.one(.tanh, [b.one(.mul, [b.scalar(Float((2 / Double.pi).squareRoot())), inner])])
        let tanhGelu = b.one(.div, [b.one(.mul, [b.one(.add, [tanh, b.scalar(1)]), h4]), b.scalar(2)])
        let y = b.one(.add, [b.one(.matMul, [tanhGelu, b.weight([f, d])]), b.weight([d])])
        b.output(y)
        let graph = b.graph

        var simplified = graph
        _ = try PassPipeline.run(&simplified, passes: PassPipeline.simplify)
        let (_, report) = try BlockDiscovery.run(simplified)
        #expect(report.count(.attention) == 1 && report.count(.feedForward) == 4 && report.unmatched.isEmpty, "\(report.lines)")
        #expect(report.blocks.filter { $0.kind == .feedForward }.map(\.activation) == ["relu", "gelu", "gelu_tanh", "gelu_tanh"])
        let fused = try Self.fuseAndCompare(graph, Self.inputs(mask: false))
        let node = try #require(fused.nodes.first { $0.op == .attention })
        let a = try node.attentionAttributes()
        #expect(abs(a.scale - Float(1 / Double(dh).squareRoot())) < 1e-6 && !a.causal && node.inputs.count == 9)
        // Missing biases become zeros.
        let bv = try #require(fused.initializers[node.inputs[AttentionAttributes.Input.bv.rawValue]])
        #expect(bv.shape == [d] && bv.floats.allSatisfy { $0 == 0 })
        #expect(fused.nodes.filter { $0.op == .feedForward }.count == 4)
        #expect(!fused.nodes.contains { [.gemm, .matMul, .relu, .erf, .tanh, .gelu, .shape].contains($0.op) })
    }

    @Test func inspectReportsBlocks() throws {
        let model = TestPaths.fixtures.appendingPathComponent("mpnet_tiny/model.onnx").path
        let onnx = try CLITests.run("spp", ["inspect", model])
        #expect(onnx.status == 0, "\(onnx.stderr)")
        #expect(onnx.stdout.contains("blocks found: 2 attention, 2 feed-forward"), "\(onnx.stdout)")
        #expect(onnx.stdout.contains("layer 1: attention D=32 H=4 d_head=8 (mask, position bias); feed-forward D=32 F=40 gelu"), "\(onnx.stdout)")

        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let spp = dir.appendingPathComponent("m.spp").path
        let convert = try CLITests.run("spp", ["convert", model, "-o", spp])
        #expect(convert.status == 0, "\(convert.stderr)")
        let native = try CLITests.run("spp", ["inspect", spp])
        #expect(native.status == 0, "\(native.stderr)")
        #expect(native.stdout.contains("fused blocks: 2 attention, 2 feed-forward"), "\(native.stdout)")
        #expect(native.stdout.contains("attention D=32 H=4 qk ranks 4×8 (Σ 32), vo ranks 4×8 (Σ 32)"), "\(native.stdout)")
    }
}
