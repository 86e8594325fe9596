import Foundation
import Testing
import SPPCore
import SPPGraph
import SPPONNX
import SPPRuntime

/// Builds small graphs by hand for the shape-inference rules.
private struct Builder {
    var inputs: [ValueInfo] = []
    var initializers: [String: Tensor] = [:]
    var nodes: [Node] = []

    mutating func input(_ name: String, _ dims: [Dim]?, _ dtype: DType = .float32) {
        inputs.append(ValueInfo(name: name, dtype: dtype, shape: dims))
    }

    /// An int64 vector constant.
    @discardableResult
    mutating func ints(_ name: String, _ values: [Int]) -> String {
        initializers[name] = Tensor(values.map { Int64($0) }, shape: [values.count])
        return name
    }

    /// An int64 scalar constant.
    @discardableResult
    mutating func scalar(_ name: String, _ value: Int) -> String {
        initializers[name] = Tensor([Int64(value)], shape: [])
        return name
    }

    /// A float32 constant of zeros.
    @discardableResult
    mutating func weight(_ name: String, _ shape: [Int]) -> String {
        initializers[name] = Tensor(dtype: .float32, shape: shape, zeroed: true)
        return name
    }

    /// Adds a node named after its first output.
    @discardableResult
    mutating func node(_ op: OpType, _ inputs: [String], _ outputs: [String], _ attributes: [String: Attribute] = [:]) -> String {
        nodes.append(Node(name: "n_" + outputs[0], op: op, inputs: inputs, outputs: outputs, attributes: attributes))
        return outputs[0]
    }

    func infer() throws -> [String: ValueInfo] {
        try ShapeInference.infer(Graph(inputs: inputs, outputs: [], initializers: initializers, nodes: nodes))
    }
}

private let batch = Dim.symbol("batch"), seq = Dim.symbol("seq")
private func f(_ n: Int) -> Dim { .fixed(n) }

/// Where the test data lives, found from this file (resolving a symlinked test file).
private enum ShapeTestPaths {
    static let packageRoot = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = packageRoot.appendingPathComponent("Tests/SPPTests/Fixtures")
    static let miniLM = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/models/all-MiniLM-L6-v2/model.onnx")

    /// Fixtures whose output sizes are input *values* (Range to n, ConstantOfShape of
    /// a shape input): inference rightly leaves those dimensions unknown.
    static let valueDependent: Set<String> = ["op_constantofshape", "op_range_float", "op_range_int64"]

    static var fixtureNames: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: fixtures.path)) ?? []
        return names.sorted().filter { name in
            ["model.onnx", "case.json"].allSatisfy {
                FileManager.default.fileExists(atPath: fixtures.appendingPathComponent("\(name)/\($0)").path)
            }
        }
    }
}

@Suite struct ShapeInferenceTests {
    // MARK: Symbolic shape values

    @Test func reshapeFromOwnShapeIsSymbolic() throws {
        var b = Builder()
        b.input("x", [batch, seq, f(384)])
        b.node(.shape, ["x"], ["s"])
        b.node(.gather, ["s", b.scalar("i0", 0)], ["d0"], ["axis": .int(0)])
        b.node(.gather, ["s", b.scalar("i1", 1)], ["d1"], ["axis": .int(0)])
        b.node(.unsqueeze, ["d0", b.ints("ax0", [0])], ["u0"])
        b.node(.unsqueeze, ["d1", b.ints("ax0b", [0])], ["u1"])
        b.node(.concat, ["u0", "u1", b.ints("heads", [12]), b.ints("hd", [32])], ["target"], ["axis": .int(0)])
        b.node(.reshape, ["x", "target"], ["y"])
        let info = try b.infer()
        #expect(info["s"]?.dtype == .int64)
        #expect(info["s"]?.shape == [f(3)])
        #expect(info["d0"]?.shape == [])
        #expect(info["u0"]?.shape == [f(1)])
        #expect(info["target"]?.shape == [f(4)])
        #expect(info["y"]?.shape == [batch, seq, f(12), f(32)])
        #expect(info["y"]?.dtype == .float32)
    }

    @Test func reshapeInfersMinusOneAndZero() throws {
        var b = Builder()
        b.input("x", [batch, seq, f(384)])
        b.node(.reshape, ["x", b.ints("t1", [0, 0, 12, -1])], ["a"])
        b.node(.reshape, ["x", b.ints("t2", [-1, 384])], ["flat"])
        b.node(.reshape, ["flat", b.ints("t3", [2, -1, 384])], ["back"])
        let info = try b.infer()
        #expect(info["a"]?.shape == [batch, seq, f(12), f(32)])
        #expect(info["flat"]?.shape == [.symbol("batch*seq"), f(384)])
        #expect(info["back"]?.shape?.count == 3)
        #expect(info["back"]?.shape?.first == f(2))
    }

    @Test func reshapeOfFixedShapeThatCannotFitThrows() throws {
        var b = Builder()
        b.input("x", [f(2), f(6)])
        b.node(.reshape, ["x", b.ints("t", [5, -1])], ["y"])
        #expect(throws: GraphError.self) { try b.infer() }
    }

    @Test func shapeArithmetic() throws {
        var b = Builder()
        b.input("x", [batch, seq, f(384)])
        b.node(.shape, ["x"], ["s"])
        b.node(.gather, ["s", b.scalar("i1", 1)], ["n"], ["axis": .int(0)])
        b.node(.add, ["n", b.scalar("one", 1)], ["n1"])
        b.node(.mul, ["n", b.scalar("two", 2)], ["n2"])
        b.node(.gather, ["s", b.scalar("i2", 2)], ["h"], ["axis": .int(0)])
        b.node(.div, ["h", b.scalar("twelve", 12)], ["hd"])
        b.node(.unsqueeze, ["n1", b.ints("ax", [0])], ["v1"])
        b.node(.unsqueeze, ["n2", "ax"], ["v2"])
        b.node(.unsqueeze, ["hd", "ax"], ["v3"])
        b.node(.concat, ["v1", "v2", "v3"], ["shape"], ["axis": .int(0)])
        b.node(.constantOfShape, ["shape"], ["zeros"])
        b.node(.slice, ["s", b.ints("st", [0]), b.ints("en", [2])], ["bs"])
        b.node(.cast, ["bs"], ["bs32"], ["to": .int(Int(DType.int32.rawValue))])
        b.node(.expand, [b.weight("bias", [384]), "s"], ["expanded"])
        let info = try b.infer()
        #expect(info["zeros"]?.shape == [.symbol("seq+1"), .symbol("2*seq"), f(32)])
        #expect(info["zeros"]?.dtype == .float32)
        #expect(info["bs"]?.shape == [f(2)])
        #expect(info["bs32"]?.dtype == .int32)
        #expect(info["expanded"]?.shape == [batch, seq, f(384)])
    }

    @Test func rangeTileAndExpandFromShapeValues() throws {
        var b = Builder()
        b.input("ids", [batch, seq], .int64)
        b.node(.shape, ["ids"], ["s"])
        b.node(.gather, ["s", b.scalar("i1", 1)], ["n"], ["axis": .int(0)])
        b.node(.range, [b.scalar("zero", 0), "n", b.scalar("one", 1)], ["pos"])
        b.node(.unsqueeze, ["pos", b.ints("ax", [0])], ["pos2"])
        b.node(.expand, ["pos2", "s"], ["positions"])
        b.node(.tile, ["pos2", b.ints("reps", [3, 2])], ["tiled"])
        b.node(.range, [b.scalar("a", 2), b.scalar("l", 11), b.scalar("d", 3)], ["r"])
        b.node(.trilu, ["positions"], ["tri"])
        let info = try b.infer()
        #expect(info["pos"]?.shape == [seq])
        #expect(info["pos"]?.dtype == .int64)
        #expect(info["positions"]?.shape == [batch, seq])
        #expect(info["tiled"]?.shape == [f(3), .symbol("2*seq")])
        #expect(info["r"]?.shape == [f(3)])
        #expect(info["tri"]?.shape == [batch, seq])
    }

    /// torch exports `x.expand(a, -1)` as Where(Equal(shape, -1), ones, shape).
    @Test func expandWithMinusOnePattern() throws {
        var b = Builder()
        b.input("x", [batch, f(1), seq])
        b.node(.shape, ["x"], ["s"])
        b.node(.slice, ["s", b.ints("st", [0]), b.ints("en", [1])], ["b0"])
        b.node(.concat, ["b0", b.ints("rest", [4, -1])], ["want"], ["axis": .int(0)])
        b.node(.constantOfShape, [b.ints("three", [3])], ["ones"], ["value": .tensor(.init(Tensor([Int64(1)], shape: [1])))])
        b.node(.mul, ["ones", b.scalar("m1", -1)], ["neg"])
        b.node(.equal, ["want", "neg"], ["isneg"])
        b.node(.where, ["isneg", "ones", "want"], ["fixed"])
        b.node(.expand, ["x", "fixed"], ["y"])
        let info = try b.infer()
        #expect(info["isneg"]?.dtype == .bool)
        #expect(info["y"]?.shape == [batch, f(4), seq])
    }

    // MARK: Linear algebra

    @Test func matMul() throws {
        var b = Builder()
        b.input("x", [batch, seq, f(384)])
        b.weight("w", [384, 1536])
        b.node(.matMul, ["x", "w"], ["y"])
        b.input("q", [batch, f(12), seq, f(32)])
        b.node(.transpose, ["q"], ["kt"], ["perm": .ints([0, 1, 3, 2])])
        b.node(.matMul, ["q", "kt"], ["scores"])
        b.input("v", [f(384)])
        b.node(.matMul, ["x", "v"], ["dot"])
        b.node(.matMul, ["v", "w"], ["row"])
        let info = try b.infer()
        #expect(info["y"]?.shape == [batch, seq, f(1536)])
        #expect(info["kt"]?.shape == [batch, f(12), f(32), seq])
        #expect(info["scores"]?.shape == [batch, f(12), seq, seq])
        #expect(info["dot"]?.shape == [batch, seq])
        #expect(info["row"]?.shape == [f(1536)])
    }

    @Test func matMulInnerMismatchThrows() throws {
        var b = Builder()
        b.input("x", [batch, seq, f(384)])
        b.weight("w", [512, 64])
        b.node(.matMul, ["x", "w"], ["y"])
        do {
            _ = try b.infer()
            Issue.record("expected a shape mismatch")
        } catch let GraphError.shapeMismatch(node, op, reason) {
            #expect(node == "n_y")
            #expect(op == "MatMul")
            #expect(reason.contains("384"))
        }
    }

    @Test func gemm() throws {
        var b = Builder()
        b.input("x", [batch, f(64)])
        b.weight("w", [128, 64])
        b.weight("c", [128])
        b.node(.gemm, ["x", "w", "c"], ["y"], ["transB": .int(1)])
        let info = try b.infer()
        #expect(info["y"]?.shape == [batch, f(128)])
        b.weight("bad", [3])
        b.node(.gemm, ["x", "w", "bad"], ["z"], ["transB": .int(1)])
        #expect(throws: GraphError.self) { try b.infer() }
    }

    @Test func convPatchEmbedding() throws {
        var b = Builder()
        b.input("img", [.symbol("N"), f(3), f(32), f(32)])
        b.weight("w", [16, 3, 8, 8])
        b.weight("bias", [16])
        b.node(.conv, ["img", "w", "bias"], ["y"], ["kernel_shape": .ints([8, 8]), "strides": .ints([8, 8])])
        b.node(.conv, ["img", "w"], ["same"], ["auto_pad": .string("SAME_UPPER"), "strides": .ints([3, 3])])
        b.node(.conv, ["img", "w"], ["padded"], ["pads": .ints([1, 1, 1, 1]), "dilations": .ints([2, 2])])
        b.input("wide", [.symbol("N"), f(3), f(8), .symbol("W")])
        b.node(.conv, ["wide", "w"], ["wideOut"])
        let info = try b.infer()
        #expect(info["y"]?.shape == [.symbol("N"), f(16), f(4), f(4)])
        #expect(info["same"]?.shape == [.symbol("N"), f(16), f(11), f(11)])
        #expect(info["padded"]?.shape == [.symbol("N"), f(16), f(20), f(20)])
        #expect(info["wideOut"]?.shape == [.symbol("N"), f(16), f(1), .symbol("W-7")])
    }

    @Test func convChannelMismatchThrows() throws {
        var b = Builder()
        b.input("img", [f(1), f(4), f(32), f(32)])
        b.weight("w", [16, 3, 8, 8])
        b.node(.conv, ["img", "w"], ["y"])
        #expect(throws: GraphError.self) { try b.infer() }
    }

    // MARK: Broadcasting and types

    @Test func broadcasting() throws {
        var b = Builder()
        b.input("a", [batch, f(1), seq])
        b.input("b", [f(12), seq])
        b.input("c", [.symbol("other"), f(1), f(1)])
        b.input("m", [batch, f(1), f(1), seq])
        b.input("s", [f(5), f(1)])
        b.node(.add, ["a", "b"], ["ab"])
        b.node(.mul, ["a", "c"], ["ac"])
        b.node(.sub, ["m", "s"], ["ms"])
        b.node(.max, ["a", "s"], ["mx"])
        b.input("five", [f(5)])
        b.node(.mul, ["a", "five"], ["a5"])
        b.input("cond", [seq], .bool)
        b.node(.where, ["cond", "a", "b"], ["w"])
        let info = try b.infer()
        #expect(info["ab"]?.shape == [batch, f(12), seq])
        #expect(info["ab"]?.dtype == .float32)
        // `other` against `batch`: unknown; `1` against `seq` gives `seq`.
        let ac = try #require(info["ac"]?.shape)
        #expect(ac.count == 3 && ac[1] == f(1) && ac[2] == seq)
        #expect(ac[0].description.hasPrefix("?"))
        #expect(info["ms"]?.shape == [batch, f(1), f(5), seq])
        #expect(info["mx"]?.shape == [batch, f(5), seq])
        // A fixed 5 against the symbol seq gives 5.
        #expect(info["a5"]?.shape == [batch, f(1), f(5)])
        #expect(info["w"]?.shape == [batch, f(12), seq])
    }

    @Test func broadcastingFixedMismatchThrows() throws {
        var b = Builder()
        b.input("a", [batch, f(3)])
        b.input("b", [f(4)])
        b.node(.add, ["a", "b"], ["y"])
        #expect(throws: GraphError.shapeMismatch(node: "n_y", op: "Add", reason: "shapes [batch, 3] and [4] do not broadcast")) {
            try b.infer()
        }
    }

    @Test func types() throws {
        var b = Builder()
        b.input("x", [batch, seq])
        b.input("mask", [batch, seq], .int64)
        for (op, out) in [(OpType.equal, "eq"), (.less, "lt"), (.greater, "gt"), (.lessOrEqual, "le"), (.greaterOrEqual, "ge")] {
            b.node(op, ["x", "x"], [out])
        }
        b.node(.not, ["eq"], ["ne"])
        b.node(.isNaN, ["x"], ["nan"])
        b.node(.and, ["eq", "lt"], ["both"])
        b.node(.cast, ["mask"], ["maskf"], ["to": .int(Int(DType.float32.rawValue))])
        b.node(.castLike, ["x", "mask"], ["xi"])
        b.node(.shape, ["x"], ["shape"])
        b.node(.shape, ["x"], ["tail"], ["start": .int(-1)])
        b.node(.size, ["x"], ["size"])
        b.node(.erf, ["x"], ["erf"])
        b.node(.clip, ["x"], ["clipped"])
        b.node(.cumSum, ["mask", b.scalar("axis", 1)], ["cs"])
        let info = try b.infer()
        for name in ["eq", "lt", "gt", "le", "ge", "ne", "nan", "both"] {
            #expect(info[name]?.dtype == .bool, "\(name)")
            #expect(info[name]?.shape == [batch, seq], "\(name)")
        }
        #expect(info["maskf"]?.dtype == .float32)
        #expect(info["xi"]?.dtype == .int64)
        #expect(info["shape"] == ValueInfo(name: "shape", dtype: .int64, shape: [f(2)]))
        #expect(info["tail"]?.shape == [f(1)])
        #expect(info["size"] == ValueInfo(name: "size", dtype: .int64, shape: []))
        #expect(info["erf"]?.shape == [batch, seq])
        #expect(info["clipped"]?.dtype == .float32)
        #expect(info["cs"]?.dtype == .int64)
        // Graph inputs and initializers are in the result too.
        #expect(info["mask"]?.shape == [batch, seq])
        #expect(info["axis"] == ValueInfo(name: "axis", dtype: .int64, shape: []))
    }

    // MARK: Data movement

    @Test func sliceOnFixedAndSymbolicDims() throws {
        var b = Builder()
        b.input("x", [batch, seq, f(10)])
        b.node(.slice, ["x", b.ints("s1", [2]), b.ints("e1", [-1]), b.ints("a1", [2])], ["mid"])
        b.node(.slice, ["x", b.ints("s2", [1]), b.ints("e2", [Int(Int64.max)]), b.ints("a2", [1])], ["tail"])
        b.node(.slice, ["x", b.ints("s3", [0]), b.ints("e3", [10]), b.ints("a3", [2]), b.ints("st3", [3])], ["strided"])
        b.node(.slice, ["x", b.ints("s4", [-1]), b.ints("e4", [Int(Int64.min)]), b.ints("a4", [1]), b.ints("st4", [-1])], ["rev"])
        b.node(.slice, ["x", b.ints("s5", [0, 0]), b.ints("e5", [1, 3]), b.ints("a5", [0, -1])], ["two"])
        b.node(.slice, ["x", b.ints("s6", [5]), b.ints("e6", [100]), b.ints("a6", [2])], ["clamped"])
        // position_ids[:, :seq] on a fixed-length buffer.
        b.initializers["pos"] = Tensor((0..<512).map { Int64($0) }, shape: [1, 512])
        b.node(.shape, ["x"], ["sx"])
        b.node(.slice, ["sx", b.ints("s7", [1]), b.ints("e7", [2])], ["seqv"])
        b.node(.slice, ["pos", b.ints("s8", [0]), "seqv", b.ints("a8", [1])], ["posids"])
        let info = try b.infer()
        #expect(info["mid"]?.shape == [batch, seq, f(7)])
        #expect(info["tail"]?.shape == [batch, .symbol("seq-1"), f(10)])
        #expect(info["strided"]?.shape == [batch, seq, f(4)])
        #expect(info["rev"]?.shape == [batch, seq, f(10)])
        // A fixed end on a symbolic dimension may be clamped: unknown.
        let two = try #require(info["two"]?.shape)
        #expect(two.count == 3 && two[0].description.hasPrefix("?") && two[1] == seq && two[2] == f(3))
        #expect(info["clamped"]?.shape == [batch, seq, f(5)])
        #expect(info["seqv"]?.shape == [f(1)])
        #expect(info["posids"]?.shape == [f(1), seq])
        #expect(info["posids"]?.dtype == .int64)
    }

    @Test func gather() throws {
        var b = Builder()
        b.input("ids", [batch, seq], .int64)
        b.weight("table", [30522, 384])
        b.node(.gather, ["table", "ids"], ["emb"])
        b.input("h", [batch, seq, f(384)])
        b.node(.gather, ["h", b.scalar("zero", 0)], ["cls"], ["axis": .int(1)])
        b.node(.gather, ["h", b.ints("two", [0, 1])], ["firstTwo"], ["axis": .int(-1)])
        let info = try b.infer()
        #expect(info["emb"]?.shape == [batch, seq, f(384)])
        #expect(info["emb"]?.dtype == .float32)
        #expect(info["cls"]?.shape == [batch, f(384)])
        #expect(info["firstTwo"]?.shape == [batch, seq, f(2)])

        b.node(.gather, ["h", b.scalar("far", 400)], ["bad"], ["axis": .int(2)])
        #expect(throws: GraphError.self) { try b.infer() }
    }

    @Test func split() throws {
        var b = Builder()
        b.input("qkv", [batch, seq, f(1152)])
        b.node(.split, ["qkv"], ["q", "k", "v"], ["axis": .int(2)])
        b.node(.split, ["qkv", b.ints("sizes", [256, 512, 384])], ["a", "b", "c"], ["axis": .int(-1)])
        b.node(.split, ["qkv"], ["p0", "p1", "p2", "p3", "p4"], ["axis": .int(2), "num_outputs": .int(5)])
        let info0 = try b.infer()
        #expect(info0["q"]?.shape == [batch, seq, f(384)])
        #expect(info0["v"]?.dtype == .float32)
        #expect(info0["a"]?.shape == [batch, seq, f(256)])
        #expect(info0["b"]?.shape == [batch, seq, f(512)])
        #expect(info0["c"]?.shape == [batch, seq, f(384)])
        #expect(info0["p0"]?.shape == [batch, seq, f(231)])
        #expect(info0["p4"]?.shape == [batch, seq, f(228)])

        b.node(.split, ["qkv", b.ints("wrong", [100, 100, 100])], ["x", "y", "z"], ["axis": .int(2)])
        #expect(throws: GraphError.self) { try b.infer() }
    }

    @Test func concatAndDerivedDims() throws {
        var b = Builder()
        b.input("past", [batch, f(12), .symbol("past"), f(32)])
        b.input("cur", [batch, f(12), seq, f(32)])
        b.node(.concat, ["past", "cur"], ["kv"], ["axis": .int(-2)])
        b.node(.flatten, ["kv"], ["flat"], ["axis": .int(2)])
        let info = try b.infer()
        let kv = try #require(info["kv"]?.shape)
        #expect(kv == [batch, f(12), .symbol("past+seq"), f(32)])
        #expect(info["flat"]?.shape == [.symbol("12*batch"), .symbol("32*past+32*seq")])
        #expect(ShapeInference.evaluate(kv[2], bindings: ["past": 5, "seq": 3]) == 8)
        #expect(ShapeInference.evaluate(.symbol("32*past+32*seq"), bindings: ["past": 1, "seq": 2]) == 96)
        #expect(ShapeInference.evaluate(.symbol("batch*seq-1"), bindings: ["batch": 2, "seq": 7]) == 13)
        #expect(ShapeInference.evaluate(.symbol("(seq-len)+1"), bindings: ["seq-len": 4]) == 5)
        #expect(ShapeInference.evaluate(.symbol("seq-len"), bindings: ["seq-len": 4]) == 4)
        #expect(ShapeInference.evaluate(.symbol("seq"), bindings: [:]) == nil)
        #expect(ShapeInference.evaluate(.fixed(3), bindings: [:]) == 3)
    }

    @Test func concatOfDifferentRanksThrows() throws {
        var b = Builder()
        b.input("a", [batch, seq, f(4)])
        b.input("b", [batch, f(4)])
        b.node(.concat, ["a", "b"], ["y"], ["axis": .int(0)])
        #expect(throws: GraphError.self) { try b.infer() }
    }

    @Test func squeezeUnsqueezeTranspose() throws {
        var b = Builder()
        b.input("mask", [batch, seq], .int64)
        b.node(.unsqueeze, ["mask", b.ints("ax", [1, 2])], ["m4"])
        b.node(.squeeze, ["m4", b.ints("sq", [1])], ["m3"])
        b.node(.squeeze, ["m4"], ["unknownRank"])
        b.input("fixed", [f(1), f(3), f(1)])
        b.node(.squeeze, ["fixed"], ["v"])
        b.node(.transpose, ["m4"], ["rev"])
        let info = try b.infer()
        #expect(info["m4"]?.shape == [batch, f(1), f(1), seq])
        #expect(info["m3"]?.shape == [batch, f(1), seq])
        #expect(info["unknownRank"]?.shape == nil)
        #expect(info["unknownRank"]?.dtype == .int64)
        #expect(info["v"]?.shape == [f(3)])
        #expect(info["rev"]?.shape == [seq, f(1), f(1), batch])

        b.node(.squeeze, ["fixed", b.ints("bad", [1])], ["oops"])
        #expect(throws: GraphError.self) { try b.infer() }
    }

    // MARK: Normalisation and reductions

    @Test func layerNormalization() throws {
        var b = Builder()
        b.input("x", [batch, seq, f(384)])
        b.weight("g", [384])
        b.weight("beta", [384])
        b.node(.layerNormalization, ["x", "g", "beta"], ["y", "mean", "inv"], ["axis": .int(-1), "epsilon": .float(1e-12)])
        b.node(.layerNormalization, ["x", "g"], ["y2", "", ""])
        let info = try b.infer()
        #expect(info["y"] == ValueInfo(name: "y", dtype: .float32, shape: [batch, seq, f(384)]))
        #expect(info["mean"] == ValueInfo(name: "mean", dtype: .float32, shape: [batch, seq, f(1)]))
        #expect(info["inv"]?.shape == [batch, seq, f(1)])
        #expect(info["y2"]?.shape == [batch, seq, f(384)])
        #expect(info[""] == nil)

        b.weight("wrong", [100])
        b.node(.layerNormalization, ["x", "wrong"], ["y3"])
        #expect(throws: GraphError.self) { try b.infer() }
    }

    @Test func softmax() throws {
        var b = Builder()
        b.input("s", [batch, f(12), seq, seq])
        b.node(.softmax, ["s"], ["p"], ["axis": .int(-1)])
        b.node(.softmax, ["s"], ["p2"], ["coerce_2d": .int(1)])
        b.node(.logSoftmax, ["s"], ["lp"])
        let info = try b.infer()
        #expect(info["p"]?.shape == [batch, f(12), seq, seq])
        #expect(info["p2"]?.shape == [batch, f(12), seq, seq])
        #expect(info["lp"]?.dtype == .float32)
        b.node(.softmax, ["s"], ["bad"], ["axis": .int(4)])
        #expect(throws: GraphError.self) { try b.infer() }
    }

    @Test func reductions() throws {
        var b = Builder()
        b.input("x", [batch, seq, f(384)])
        b.node(.reduceMean, ["x", b.ints("last", [-1])], ["mean"])
        b.node(.reduceSum, ["x", b.ints("seqAxis", [1])], ["sum"], ["keepdims": .int(0)])
        b.node(.reduceMax, ["x"], ["all"], ["keepdims": .int(0)])
        b.node(.reduceMin, ["x"], ["same"], ["noop_with_empty_axes": .int(1)])
        b.node(.reduceMean, ["x"], ["old"], ["axes": .ints([1]), "keepdims": .int(0)])
        b.node(.shape, ["x"], ["s"])
        b.node(.reduceProd, ["s"], ["count"], ["keepdims": .int(0)])
        b.node(.reshape, ["x", "count"], ["flat"])
        let info = try b.infer()
        #expect(info["mean"]?.shape == [batch, seq, f(1)])
        #expect(info["sum"]?.shape == [batch, f(384)])
        #expect(info["all"]?.shape == [])
        #expect(info["same"]?.shape == [batch, seq, f(384)])
        #expect(info["old"]?.shape == [batch, f(384)])
        #expect(info["count"]?.shape == [])
        #expect(info["flat"]?.shape == [.symbol("384*batch*seq")])
    }

    // MARK: Every op

    /// Every op has a rule that copes with inputs of unknown shape.
    @Test(arguments: OpType.allCases)
    func unknownShapesDoNotTrap(_ op: OpType) throws {
        var b = Builder()
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]
        for name in names { b.input(name, nil, .float32) }
        var attributes: [String: Attribute] = ["axis": .int(0), "to": .int(1)]
        if op == .constant { attributes["value"] = .tensor(.init(Tensor([Float(1)], shape: [1]))) }
        if op == .attention { attributes.merge(AttentionAttributes(heads: 2, qkRanks: [3, 0], voRanks: [1, 2], scale: 0.5, causal: false).attributes) { $1 } }
        if op == .feedForward { attributes["activation"] = .string("gelu") }
        let arity: Int
        switch op {
        case .constant: arity = 0
        case .where, .clip, .range, .layerNormalization, .gemm, .conv: arity = 3
        case .slice, .feedForward: arity = 5
        case .attention: arity = 11
        default: arity = 2
        }
        b.node(op, Array(names.prefix(arity)), ["y", "z", "w"], attributes)
        let info = try b.infer()
        #expect(info["y"] != nil)
    }

    // MARK: Real models

    /// The committed fixture models: every output's inferred type and shape,
    /// with the input symbols bound to the sizes of the fixture's inputs, is
    /// what onnxruntime produced, and every intermediate value's is what the
    /// runtime produces.
    @Test(arguments: ShapeTestPaths.fixtureNames)
    func fixtureOutputsMatchOnnxRuntime(_ name: String) throws {
        let folder = ShapeTestPaths.fixtures.appendingPathComponent(name)
        struct Spec: Decodable { var inputs: [String]; var outputs: [String] }
        let spec = try JSONDecoder().decode(Spec.self, from: Data(contentsOf: folder.appendingPathComponent("case.json")))
        let graph = try ONNXImporter.load(path: folder.appendingPathComponent("model.onnx").path).graph
        let info = try ShapeInference.infer(graph)

        var bindings: [String: Int] = [:]
        for (k, input) in spec.inputs.enumerated() {
            let t = try Npy.read(path: folder.appendingPathComponent("input_\(k).npy").path)
            guard let declared = graph.inputs.first(where: { $0.name == input })?.shape else { continue }
            for (d, n) in zip(declared, t.shape) { if case let .symbol(s) = d { bindings[s] = n } }
        }
        for (k, output) in spec.outputs.enumerated() {
            let expected = try Npy.read(path: folder.appendingPathComponent("output_\(k).npy").path)
            let got = try #require(info[output], "\(name): no info for \(output)")
            #expect(got.dtype == expected.dtype, "\(name) \(output): \(got.typeDescription)")
            let shape = try #require(got.shape, "\(name) \(output): rank not inferred")
            var sizes = shape.map { ShapeInference.evaluate($0, bindings: bindings) }
            if ShapeTestPaths.valueDependent.contains(name) {
                #expect(shape.count == expected.rank, "\(name) \(output): \(got.typeDescription)")
                sizes = zip(sizes, expected.shape).map { $0 ?? $1 }
            }
            #expect(sizes == expected.shape.map { Optional($0) },
                    "\(name) \(output): inferred \(got.typeDescription), onnxruntime gave \(Tensor.describe(expected.shape))")
        }

        // Every intermediate value too, against what the runtime computes on the same inputs.
        var inputs: [String: Tensor] = [:]
        for (k, input) in spec.inputs.enumerated() {
            inputs[input] = try Npy.read(path: folder.appendingPathComponent("input_\(k).npy").path)
        }
        var everything = graph
        everything.outputs = graph.nodes.flatMap { $0.outputs.filter { !$0.isEmpty } }.map { ValueInfo(name: $0, dtype: nil, shape: nil) }
        for (value, t) in try Program(graph: everything).run(inputs) {
            let got = try #require(info[value])
            let sizes = got.shape?.map { ShapeInference.evaluate($0, bindings: bindings) }
            let agrees = got.dtype == t.dtype && sizes?.count == t.rank
                && zip(sizes ?? [], t.shape).allSatisfy { $0 == nil ? ShapeTestPaths.valueDependent.contains(name) : $0 == $1 }
            #expect(agrees, "\(name) \(value): inferred \(got.typeDescription), ran \(t.dtype) \(Tensor.describe(t.shape))")
        }
    }

    @Test func miniLMOutputIsBatchBySeqBy384() throws {
        let path = ShapeTestPaths.miniLM.path
        guard FileManager.default.fileExists(atPath: path) else {
            print("skipping: \(path) not found (../shared absent)")
            return
        }
        let graph = try ONNXImporter.load(path: path).graph
        let info = try ShapeInference.infer(graph)
        print("MiniLM: \(graph.nodes.count) nodes; \(graph.outputs.map { "\($0.name): \(info[$0.name]?.typeDescription ?? "-")" })")
        let ids = try #require(graph.inputs.first?.shape)
        #expect(ids.count == 2)
        for output in graph.outputs {
            #expect(info[output.name]?.shape != nil, "\(output.name)")
        }
        let main = try #require(info[graph.outputs[0].name])
        #expect(main.dtype == .float32)
        #expect(main.shape == [ids[0], ids[1], .fixed(384)], "\(main.typeDescription)")
        // No value of the whole model is left with an unknown rank.
        let unknown = info.values.filter { $0.shape == nil }.map(\.name)
        #expect(unknown.isEmpty, "\(unknown.prefix(5))")
    }
}
