import SPPCore

/// A constant float32 layer `y = act(x W + b)` (`W [K, N]`, the activation
/// optional), made once when a model is loaded: the GEMM onto bias rows, then
/// the activation in place.
///
/// Not packed for oneDNN's matmul primitive (as int8 weights are, `PackedMatrix`):
/// measured in the model, its float32 brgemm kernels with the bias and GELU fused
/// ran all-MiniLM-L6 4% slower at seq 128 and 11% at seq 32 than `dnnl_sgemm`
/// with the vectorised GELU, and BERT-base only 1% faster.
public final class Projection: @unchecked Sendable {
    public let rows: Int, columns: Int
    private let weights: Tensor
    private let bias: Tensor
    private let activation: FeedForward.Activation?

    public init(weights: Tensor, bias: Tensor, activation: FeedForward.Activation? = nil) throws {
        guard weights.dtype == .float32, bias.dtype == .float32 else {
            throw KernelError.unsupportedDType(weights.dtype == .float32 ? bias.dtype : weights.dtype, reason: "a float32 layer has float32 weights and bias")
        }
        guard weights.rank == 2, bias.count == weights.shape[1] else {
            throw KernelError.shapeMismatch("layer weights \(Tensor.describe(weights.shape)) with bias \(Tensor.describe(bias.shape))")
        }
        (rows, columns) = (weights.shape[0], weights.shape[1])
        self.weights = weights
        self.bias = bias.reshaped([columns])
        self.activation = activation
    }

    /// `c [m, N] = act(a [m, K] · W + b)`, row-major, leading dimensions K and N.
    public func apply(_ a: UnsafePointer<Float>, rows m: Int, into c: UnsafeMutablePointer<Float>) {
        if m == 0 || columns == 0 { return }
        Linear.fillRows(c, rows: m, ld: columns, with: bias.pointer(as: Float.self), count: columns)
        Linear.sgemm(transA: false, transB: false, m: m, n: columns, k: rows, alpha: 1, a: a, lda: max(rows, 1),
                     b: weights.pointer(as: Float.self), ldb: columns, beta: 1, c: c, ldc: columns)
        if let activation {
            Parallel.forEachChunk(m * columns, minimumChunk: 1 << 14) { range in
                FeedForward.apply(activation, c + range.lowerBound, count: range.count)
            }
        }
    }
}
