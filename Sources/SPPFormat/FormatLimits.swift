/// Bounds a reader enforces before it allocates anything a file asks for. All
/// limits live here (like swift-protobuf's `BinaryDecodingOptions`) so that an
/// app reading untrusted files can tighten them in one place.
public struct FormatLimits: Sendable, Equatable {
    /// Bytes of the protobuf header (graph, tensor table, provenance).
    public var maxHeaderBytes: Int
    /// Number of tensors in the tensor table.
    public var maxTensors: Int
    /// Rank of any tensor, inline tensor or graph value.
    public var maxRank: Int
    /// Elements of any one tensor.
    public var maxElementsPerTensor: Int
    /// Decoded bytes of all tensors together.
    public var maxTotalBytes: Int

    /// Defaults that accept any realistic model (header 256 MiB, 1M tensors,
    /// rank 16, 2^34 elements per tensor, 256 GiB of weights).
    public init(maxHeaderBytes: Int = 256 << 20, maxTensors: Int = 1 << 20, maxRank: Int = 16,
                maxElementsPerTensor: Int = 1 << 34, maxTotalBytes: Int = 256 << 30) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxTensors = maxTensors
        self.maxRank = maxRank
        self.maxElementsPerTensor = maxElementsPerTensor
        self.maxTotalBytes = maxTotalBytes
    }
}
