import SPPKernels

/// The fused nodes' int8 GEMM weights that `PathLoader` packed for the int8
/// kernels as it read them (`Int8Pack`), or quantized after refitting them (a
/// pruned FFN's W2); the graph lacks the inputs they stand for.
public struct PackedInt8Weights: @unchecked Sendable {
    /// Wo, W1 and W2, by the node input each stands for.
    public var matrices: [String: QuantizedMatrix] = [:]
    /// `[Wq | Wk | Wv]` of attention nodes, by node name.
    public var queryKeyValue: [String: QuantizedMatrix] = [:]
    /// The graph's shape `[K, N]` of every input these stand for (Wq, Wk and Wv included).
    public var shapes: [String: [Int]] = [:]

    public init() {}
}
