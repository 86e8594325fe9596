import SPPCore

/// A constant weight matrix `W [K, N]` (the B of `x W`) in int8 with one
/// symmetric scale per output column: `W[k, c] ≈ scales[c] · values[k, c]`,
/// `scales[c] = max_k |W[k, c]| / 127`, values in −127…127. Made once when a
/// model is loaded; the int8 GEMM (`Linear.int8Gemm`) reads it as is.
///
/// The parts are tensors so that a file can one day store them and skip the
/// quantization: `init(values:scales:)` takes them as stored.
public struct QuantizedMatrix: @unchecked Sendable {
    /// int8 `[K, N]`, row-major: the layout `dnnl_gemm_u8s8s32` reads as B.
    public let values: Tensor
    /// float32 `[N]`.
    public let scales: Tensor
    /// int32 `[N]`: `Σ_k values[k, c]`, what the activations' zero points multiply
    /// (`Σ_k (q − z) w = Σ_k q w − z Σ_k w`).
    public let columnSums: Tensor
    /// The values in the layout of oneDNN's matmul primitive, where that is faster.
    let packed: PackedMatrix?

    /// Bytes held: values, scales, column sums and the packed copy.
    public var byteCount: Int { values.byteCount + scales.byteCount + columnSums.byteCount + (packed?.byteCount ?? 0) }

    public var rows: Int { values.shape[0] }
    public var columns: Int { values.shape[1] }

    /// Inner dimensions above this could overflow the int32 sums (255 · 127 · K < 2³¹).
    public static let maximumRows = 66_000

    /// Quantizes a float32 `[K, N]` matrix per column; `scale` multiplies every
    /// column scale (a Gemm's alpha folds in here).
    public init(quantizing w: Tensor, scale: Float = 1) throws {
        let (values, scales) = try Self.quantize(w, scale: scale)
        try self.init(values: values, scales: scales)
    }

    /// The int8 values `[K, N]` and column scales `[N]` of a float32 matrix, as
    /// `init(quantizing:)` makes them (for parts packed together later).
    public static func quantize(_ w: Tensor, scale: Float = 1) throws -> (values: Tensor, scales: Tensor) {
        guard w.dtype == .float32 else { throw KernelError.unsupportedDType(w.dtype, reason: "int8 weights are quantized from float32") }
        guard w.rank == 2 else { throw KernelError.shapeMismatch("int8 weights must be a matrix, got \(Tensor.describe(w.shape))") }
        let (k, n) = (w.shape[0], w.shape[1])
        guard k <= Self.maximumRows else { throw KernelError.invalidArgument("int8 weights with \(k) rows could overflow int32 sums (at most \(Self.maximumRows))") }
        let src = w.pointer(as: Float.self)
        var largest = [Float](repeating: 0, count: n)
        for r in 0..<k {
            for c in 0..<n {
                let v = src[r * n + c]
                guard v.isFinite else { throw KernelError.invalidArgument("weight [\(r), \(c)] is \(v); int8 weights must be finite") }
                largest[c] = max(largest[c], abs(v))
            }
        }
        let values = Tensor(dtype: .int8, shape: [k, n])
        let scales = Tensor(dtype: .float32, shape: [n])
        let q = values.pointer(as: Int8.self), s = scales.pointer(as: Float.self)
        for c in 0..<n { s[c] = largest[c] / 127 }
        for r in 0..<k {
            for c in 0..<n {
                // |v / s| ≤ 127 up to rounding; the clamp keeps a rounding slip in range. A zero column stays 0.
                q[r * n + c] = s[c] > 0 ? Int8(max(-127, min(127, (src[r * n + c] / s[c]).rounded(.toNearestOrEven)))) : 0
            }
        }
        for c in 0..<n { s[c] *= scale }
        return (values, scales)
    }

    /// From int8 values `[K, N]` and float32 scales `[N]` (values −128 is not
    /// produced by symmetric quantization but is accepted).
    public init(values: Tensor, scales: Tensor) throws {
        guard values.dtype == .int8, scales.dtype == .float32 else {
            throw KernelError.unsupportedDType(values.dtype == .int8 ? scales.dtype : values.dtype, reason: "int8 weights are int8 values with float32 scales")
        }
        guard values.rank == 2, scales.count == values.shape[1] else {
            throw KernelError.shapeMismatch("int8 weights \(Tensor.describe(values.shape)) with scales \(Tensor.describe(scales.shape))")
        }
        guard values.shape[0] <= Self.maximumRows else { throw KernelError.invalidArgument("int8 weights with \(values.shape[0]) rows could overflow int32 sums (at most \(Self.maximumRows))") }
        let (k, n) = (values.shape[0], values.shape[1])
        let sums = Tensor(dtype: .int32, shape: [n], zeroed: true)
        let q = values.pointer(as: Int8.self), p = sums.pointer(as: Int32.self)
        for r in 0..<k { for c in 0..<n { p[c] &+= Int32(q[r * n + c]) } }
        self.values = values
        self.scales = scales
        columnSums = sums
        packed = PackedMatrix(values)
    }

    /// The float32 matrix these values stand for: `scales[c] · values[k, c]`.
    public func dequantized() -> Tensor {
        let out = Tensor(dtype: .float32, shape: values.shape)
        let q = values.pointer(as: Int8.self), s = scales.pointer(as: Float.self), o = out.pointer(as: Float.self)
        for r in 0..<rows { for c in 0..<columns { o[r * columns + c] = s[c] * Float(q[r * columns + c]) } }
        return out
    }
}
