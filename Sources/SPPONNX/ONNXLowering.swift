import SPPCore
import SPPGraph

/// Rewrites a graph into standard operators of ONNX opset 17 (default domain),
/// the form `ONNXExporter` writes, so that any ONNX runtime computes what the
/// spp kernels compute:
///
/// | in the graph                                        | written as                                                     |
/// |-----------------------------------------------------|----------------------------------------------------------------|
/// | `spp.Attention`                                     | see `LoweringBuilder+Blocks.swift`                              |
/// | `spp.FeedForward`                                   | MatMul → Add → activation → MatMul → Add                       |
/// | `Gelu` (opset 20)                                   | x·0.5·(1 + erf(x/√2)), or the tanh form                        |
/// | ReduceMean/Max/Min/Prod with an axes input (opset 18) | the `axes` attribute (the input must be a constant)          |
/// | Split with `num_outputs` (opset 18)                 | equal parts by output count; explicit sizes when the last part is smaller |
/// | Softmax/LogSoftmax with `coerce_2d` (opsets < 13, as imported) | Flatten → Softmax(axis 1) → Reshape to the input's shape |
///
/// Every other operator is already in its opset-17 form (the importer keeps
/// the newest form, and only the rows above changed after 17) and is written
/// as it is. Constants no node reads any more (the unpadded block weights) are dropped.
public enum ONNXLowering {
    /// The default-domain opset of the lowered graph.
    public static let opset = 17

    /// What lowering did, for the export summary.
    public struct Report: Sendable, Equatable {
        /// One `spp.Attention` node: its ranks as loaded and the regular layout written.
        public struct Attention: Sendable, Equatable {
            public var node: String
            public var qkRanks: [Int], voRanks: [Int]
            /// Heads written (those with vo rank 0 are dropped when every additive term allows it).
            public var heads: Int
            /// Per-head widths after zero-padding.
            public var qkPadded: Int, voPadded: Int
        }
        public var attention: [Attention] = []
        /// Nodes rewritten into other ops, by op name (fused blocks, Gelu, opset-18 forms).
        public var rewritten: [String: Int] = [:]
        public init() {}
    }

    /// The graph in standard opset-17 operators. Throws `ONNXExportError` for a
    /// node that has no such form (a fused block with computed weights, a
    /// reduction whose axes are computed).
    public static func lower(_ graph: Graph) throws -> (Graph, Report) {
        // Types and shapes of the mask and bias terms and of split inputs; a graph
        // that does not infer is still lowered, with the conservative choices.
        let infos = (try? ShapeInference.infer(graph)) ?? [:]
        let b = LoweringBuilder(graph, infos: infos)
        for node in graph.nodes {
            switch node.op {
            case .attention: try b.attention(node)
            case .feedForward: try b.feedForward(node)
            case .gelu: try b.gelu(node)
            case .reduceMean, .reduceMax, .reduceMin, .reduceProd: try b.reduceWithAxesAttribute(node)
            case .split: try b.split(node)
            case .softmax, .logSoftmax: try b.softmax(node)
            // In their opset-17 form already (ReduceSum, Squeeze, Unsqueeze take axes as inputs since 13).
            case .add, .sub, .mul, .div, .pow, .mod, .max, .min, .equal, .less, .lessOrEqual, .greater, .greaterOrEqual,
                 .and, .or, .xor, .where, .abs, .neg, .sqrt, .reciprocal, .exp, .log, .erf, .tanh, .sigmoid, .relu,
                 .floor, .ceil, .sign, .not, .isNaN, .clip, .cast, .castLike, .identity, .matMul, .gemm, .conv,
                 .layerNormalization, .reduceSum, .cumSum, .shape, .size, .reshape, .flatten, .squeeze, .unsqueeze,
                 .transpose, .concat, .slice, .gather, .expand, .tile, .trilu, .constant, .constantOfShape, .range:
                b.nodes.append(node)
            }
        }
        var out = Graph(inputs: graph.inputs, outputs: graph.outputs, initializers: [:], nodes: b.nodes)
        let read = Set(b.nodes.flatMap(\.inputs) + graph.outputs.map(\.name))
        for (name, t) in b.initializers where read.contains(name) { out.initializers[name] = t }
        do { try out.verify() } catch let e as GraphError { throw ONNXExportError.invalidGraph(e) }
        return (out, b.report)
    }
}
