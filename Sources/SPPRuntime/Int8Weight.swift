import SPPCore
import SPPFormat
import SPPKernels

/// A GEMM weight the file stores in int8, kept so when loading for int8 weights:
/// `values` in the graph's layout and float32 `scales`, one per row (`[K, 1]`)
/// or per column (`[1, N]`); the value is `values × scales`. No float32 copy is
/// made unless a kernel needs one (`dequantized()`).
public struct Int8Weight: @unchecked Sendable {
    public let values: Tensor
    public let scales: Tensor
    /// Whether the scales run along the rows (one per row).
    public let perRow: Bool

    /// Checked like a file's entry (`ValueEncoding`): int8 `[K, N]` with float32 scales of either shape.
    public init(values: Tensor, scales: Tensor) throws {
        guard values.dtype == .int8, scales.dtype == .float32,
              let axis = ValueEncoding.scaleAxis(scalesShape: scales.shape, for: values.shape) else {
            throw RuntimeError.corruptPath("int8 weights \(values.dtype) \(Tensor.describe(values.shape)) with scales \(scales.dtype) \(Tensor.describe(scales.shape))")
        }
        self.values = values
        self.scales = scales
        perRow = axis == 0
    }

    public var shape: [Int] { values.shape }

    /// The float32 value.
    public func dequantized() -> Tensor { Precision.dequantized(values, scales: scales) }

    /// The values `[K, N]` the int8 GEMM reads, with their scales per output
    /// column `[N]`: as stored, or transposed when the graph's tensor is the
    /// product's `[N, K]` (a Gemm's B with transB). `scale` multiplies every
    /// scale. Nil when the scales do not run along the outputs or the inner size
    /// could overflow int32 sums.
    func parts(transposed: Bool, scale: Float) throws -> (values: Tensor, scales: Tensor)? {
        guard perRow == transposed else { return nil }
        let v = transposed ? try DataMovement.transpose(values, perm: [1, 0]) : values
        guard v.shape[0] <= QuantizedMatrix.maximumRows else { return nil }
        let s = scales.reshaped([v.shape[1]])
        return (v, scale == 1 ? s : Tensor(s.floats.map { $0 * scale }, shape: s.shape))
    }
}
