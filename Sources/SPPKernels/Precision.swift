import CKernels
import SPPCore

/// Element conversions for the storage precision of a `.spp` (`spp convert
/// --weights`): float32 narrowed to float16 or bfloat16 when converting, and
/// stored float16, bfloat16 and int8 (times per-row or per-column scales)
/// expanded to float32 when loading. Vectorised C loops (F16C for float16).
public enum Precision {
    /// Whether `expand` reads `dtype`.
    public static func isExpandable(_ dtype: DType) -> Bool {
        dtype == .float32 || dtype == .float16 || dtype == .bfloat16
    }

    /// Writes the float32 values of `count` stored elements of `dtype` (float32,
    /// float16 or bfloat16, see `isExpandable`) at `src` to `dst`.
    public static func expand(_ src: UnsafeRawPointer, _ dtype: DType, count: Int, into dst: UnsafeMutablePointer<Float>) {
        switch dtype {
        case .float16: spp_half_to_float(src.assumingMemoryBound(to: UInt16.self), dst, count)
        case .bfloat16: spp_bfloat_to_float(src.assumingMemoryBound(to: UInt16.self), dst, count)
        case .float32: UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: count * 4)
        default: preconditionFailure("expand reads float32, float16 or bfloat16, not \(dtype)")
        }
    }

    /// `rows × columns` int8 values times `scales` (one per row when `perRow`,
    /// else one per column), as float32.
    public static func dequantize(_ q: UnsafePointer<Int8>, scales: UnsafePointer<Float>, perRow: Bool, rows: Int, columns: Int,
                                  into dst: UnsafeMutablePointer<Float>) {
        spp_int8_to_float(q, scales, perRow ? 1 : 0, rows, columns, dst)
    }

    /// An int8 matrix `[K, N]` times scales `[K, 1]` (per row) or `[1, N]` (per column), as float32.
    public static func dequantized(_ values: Tensor, scales: Tensor) -> Tensor {
        precondition(values.dtype == .int8 && values.rank == 2 && scales.dtype == .float32, "dequantized takes int8 [K, N] and float32 scales")
        let perRow = scales.shape == [values.shape[0], 1]
        precondition(perRow || scales.shape == [1, values.shape[1]], "scales \(Tensor.describe(scales.shape)) do not fit \(Tensor.describe(values.shape))")
        let out = Tensor(dtype: .float32, shape: values.shape)
        dequantize(values.pointer(as: Int8.self), scales: scales.pointer(as: Float.self), perRow: perRow,
                   rows: values.shape[0], columns: values.shape[1], into: out.pointer(as: Float.self))
        return out
    }

    /// A float32 tensor in float16 or bfloat16, rounded to nearest even (float16
    /// overflows to ±∞ beyond ±65504: see `fitsHalf`).
    public static func narrowed(_ t: Tensor, to dtype: DType) -> Tensor {
        precondition(t.dtype == .float32 && (dtype == .float16 || dtype == .bfloat16), "narrowed takes float32 to float16 or bfloat16")
        let out = Tensor(dtype: dtype, shape: t.shape)
        let dst = out.rawPointer.assumingMemoryBound(to: UInt16.self)
        if dtype == .float16 { spp_float_to_half(t.pointer(as: Float.self), dst, t.count) } else { spp_float_to_bfloat(t.pointer(as: Float.self), dst, t.count) }
        return out
    }

    /// Whether every element of a float32 tensor is finite and within float16's range.
    public static func fitsHalf(_ t: Tensor) -> Bool {
        t.buffer(as: Float.self).allSatisfy { $0.isFinite && abs($0) <= 65504 }
    }
}
