import SPPCore

/// A constant float32 layer `y = act(x W + b)` (`W [K, N]`, the activation
/// optional) as the kernels apply it: packed for oneDNN's matmul primitive with
/// the bias and activation fused, where this CPU has its kernels
/// (`PackedMatrix`); else the GEMM onto bias rows and the activation in place.
/// Made once when a model is loaded; a packed layer does not keep `W` as given.
public final class Projection: @unchecked Sendable {
    public let rows: Int, columns: Int
    private let packed: PackedMatrix?
    /// `W` when not packed.
    private let weights: Tensor?
    private let bias: Tensor
    private let activation: FeedForward.Activation?

    /// Whether the layer runs through oneDNN's matmul primitive on packed weights.
    public var isPacked: Bool { packed != nil }

    /// `pack` false: never pack (a layer used once is not worth packing).
    public init(weights: Tensor, bias: Tensor, activation: FeedForward.Activation? = nil, pack: Bool = true) throws {
        guard weights.dtype == .float32, bias.dtype == .float32 else {
            throw KernelError.unsupportedDType(weights.dtype == .float32 ? bias.dtype : weights.dtype, reason: "a float32 layer has float32 weights and bias")
        }
        guard weights.rank == 2, bias.count == weights.shape[1] else {
            throw KernelError.shapeMismatch("layer weights \(Tensor.describe(weights.shape)) with bias \(Tensor.describe(bias.shape))")
        }
        (rows, columns) = (weights.shape[0], weights.shape[1])
        self.bias = bias.reshaped([columns])
        self.activation = activation
        packed = pack ? PackedMatrix(weights, bias: self.bias, activation: activation) : nil
        self.weights = packed == nil ? weights : nil
    }

    /// `c [m, N] = act(a [m, K] · W + b)`, row-major, leading dimensions K and N.
    public func apply(_ a: UnsafePointer<Float>, rows m: Int, into c: UnsafeMutablePointer<Float>) throws {
        if m == 0 || columns == 0 { return }
        if let packed {
            guard packed.multiply(a, m: m, c, threads: kernelThreads) else {
                throw KernelError.invalidArgument("oneDNN could not multiply \(m) rows by a packed \(rows)×\(columns) matrix")
            }
            return
        }
        guard let weights else { return }
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
