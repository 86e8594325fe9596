import SPPCore
import SPPGraph
import SPPKernels

/// The fused nodes' GEMM weights that `PathLoader` put in their kernel's form as it
/// read them: int8 ones packed for the int8 kernels (`Int8Pack`, or quantized after
/// a refit: a pruned FFN's W2), float32 `[Wq | Wk | Wv]` side by side. The graph
/// lacks the inputs they stand for.
public struct PackedWeights: @unchecked Sendable {
    /// int8 Wo, W1 and W2, by the node input each stands for.
    public var int8Matrices: [String: QuantizedMatrix] = [:]
    /// int8 `[Wq | Wk | Wv]` of attention nodes, by node name.
    public var int8QueryKeyValue: [String: QuantizedMatrix] = [:]
    /// float32 `[Wq | Wk | Wv]` `[D, 2·Σqk + Σvo]` of attention nodes, by node name.
    public var float32QueryKeyValue: [String: Tensor] = [:]
    /// The graph's shape `[K, N]` of every input these stand for (Wq, Wk and Wv included).
    public var shapes: [String: [Int]] = [:]

    public init() {}

    /// Whether `node` has weights here that only its int8 kernel can take.
    func holdsInt8(of node: Node) -> Bool {
        int8QueryKeyValue[node.name] != nil || node.inputs.contains { int8Matrices[$0] != nil }
    }
}
