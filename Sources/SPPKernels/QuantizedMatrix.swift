import CKernels
import SPPCore

/// A constant weight matrix `W [K, N]` (the B of `x W`) in int8 with one
/// symmetric scale per output column: `W[k, c] ≈ scales[c] · values[k, c]`,
/// `scales[c] = max_k |W[k, c]| / 127`, values in −127…127. Made once when a
/// model is loaded; the int8 GEMM (`Linear.int8Gemm`) reads it as is.
///
/// `init(values:scales:)` takes the parts as a file stores them (`quantize`
/// makes them from float32).
public struct QuantizedMatrix: @unchecked Sendable {
    public let rows: Int, columns: Int
    /// float32 `[N]`.
    public let scales: Tensor
    /// int32 `[N]`: `Σ_k values[k, c]`, what the activations' zero points multiply
    /// (`Σ_k (q − z) w = Σ_k q w − z Σ_k w`).
    public let columnSums: Tensor
    /// The values, in one layout only.
    let storage: Storage

    enum Storage {
        /// int8 `[K, N]`, row-major: the layout `dnnl_gemm_u8s8s32` reads as B.
        case rowMajor(Tensor)
        /// Reordered for oneDNN's matmul primitive, where this CPU has its kernels.
        case packed(PackedMatrix)
    }

    /// Bytes held: the values, scales and column sums.
    public var byteCount: Int {
        let values = switch storage {
        case let .rowMajor(t): t.byteCount
        case let .packed(p): p.byteCount
        }
        return values + scales.byteCount + columnSums.byteCount
    }

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
        let values = Tensor(dtype: .int8, shape: [k, n])
        let scales = Tensor(dtype: .float32, shape: [n])
        let s = scales.pointer(as: Float.self)
        let bad = spp_quantize_columns_s8(w.pointer(as: Float.self), k, n, values.pointer(as: Int8.self), s)
        if bad > 0 {
            let (r, c) = (bad - 1).quotientAndRemainder(dividingBy: n)
            throw KernelError.invalidArgument("weight [\(r), \(c)] is \(w.pointer(as: Float.self)[bad - 1]); int8 weights must be finite")
        }
        for c in 0..<n { s[c] *= scale }
        return (values, scales)
    }

    /// From int8 values `[K, N]` and float32 scales `[N]` (values −128 is not
    /// produced by symmetric quantization but is accepted). `pack`: reorder them
    /// for oneDNN's matmul primitive where this CPU has its kernels (`PackedMatrix`);
    /// the row-major values are then let go.
    public init(values: Tensor, scales: Tensor, pack: Bool = true) throws {
        guard values.dtype == .int8, scales.dtype == .float32 else {
            throw KernelError.unsupportedDType(values.dtype == .int8 ? scales.dtype : values.dtype, reason: "int8 weights are int8 values with float32 scales")
        }
        guard values.rank == 2 else { throw KernelError.shapeMismatch("int8 weights must be a matrix, got \(Tensor.describe(values.shape))") }
        try self.init(values.rawPointer, rows: values.shape[0], columns: values.shape[1], scales: scales, keeping: values, pack: pack)
    }

    /// From int8 `W [K, N]` at `values`, stored unit-major (as its transpose `[N, K]`,
    /// a row per output column, as a file keeps units) or row-major: packed straight
    /// from there where this CPU has oneDNN's kernels, else copied row-major. The
    /// caller keeps `values` (a reused buffer: nothing here holds on to it).
    public init(copying values: UnsafeRawPointer, rows k: Int, columns n: Int, unitMajor: Bool, scales: Tensor) throws {
        guard scales.dtype == .float32 else { throw KernelError.unsupportedDType(scales.dtype, reason: "int8 weights are int8 values with float32 scales") }
        try self.init(values, rows: k, columns: n, unitMajor: unitMajor, scales: scales, keeping: nil, pack: true)
    }

    /// `keeping`: the tensor at `values` (row-major), kept as the storage when not packed.
    private init(_ values: UnsafeRawPointer, rows k: Int, columns n: Int, unitMajor: Bool = false, scales: Tensor,
                 keeping tensor: Tensor?, pack: Bool) throws {
        guard k >= 0, n >= 0, scales.count == n else {
            throw KernelError.shapeMismatch("int8 weights [\(k), \(n)] with scales \(Tensor.describe(scales.shape))")
        }
        guard k <= Self.maximumRows else { throw KernelError.invalidArgument("int8 weights with \(k) rows could overflow int32 sums (at most \(Self.maximumRows))") }
        let sums = Tensor(dtype: .int32, shape: [n])
        let v = values.assumingMemoryBound(to: Int8.self)
        if unitMajor { spp_row_sums_s8(v, n, k, sums.pointer(as: Int32.self)) } else { spp_column_sums_s8(v, k, n, sums.pointer(as: Int32.self)) }
        (rows, columns) = (k, n)
        self.scales = scales
        columnSums = sums
        if pack, let packed = PackedMatrix(values, rows: k, columns: n, unitMajor: unitMajor) {
            storage = .packed(packed)
        } else if let tensor, !unitMajor {
            storage = .rowMajor(tensor)
        } else {
            let copy = Tensor(dtype: .int8, shape: [k, n])
            if unitMajor {
                try DataMovement.gatherTransposed(values, rows: n, columns: k, dtype: .int8, order: nil, into: copy.rawPointer)
            } else {
                copy.rawPointer.copyMemory(from: values, byteCount: k * n)
            }
            storage = .rowMajor(copy)
        }
    }
}
