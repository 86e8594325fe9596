import CDNNL
import CKernels
import SPPCore

/// The range the int8 GEMM quantizes activations to.
///
/// oneDNN's u8 × s8 GEMM sums products in int32 with VNNI (`vpdpbusd`). Without
/// VNNI (AVX2, AVX-512 before Cascade Lake / Zen 4) it uses `vpmaddubsw`, which
/// first adds pairs of u8·s8 products in int16 with saturation: 255·127·2 does not
/// fit, 127·127·2 = 32,258 does (oneDNN's guide, "Nuances of int8 computations").
/// So activations get 8 bits where the kernels have VNNI and 7 bits elsewhere.
public enum ActivationRange: Sendable, Equatable, CustomStringConvertible {
    /// 0…255.
    case eightBit
    /// 0…127: exact on every ISA.
    case sevenBit

    public var levels: Int32 { self == .eightBit ? 255 : 127 }

    public var description: String { self == .eightBit ? "u8 (0…255)" : "u7 (0…127)" }

    /// What oneDNN's GEMM kernels on this CPU sum without saturating. Asks oneDNN for
    /// the ISA it dispatches to (the CPU, capped by DNNL_MAX_CPU_ISA) rather than cpuid:
    /// its AVX-512 VNNI and AVX-VNNI kernels both use `vpdpbusd`.
    public static let native: ActivationRange = {
        let isa = dnnl_get_effective_cpu_isa().rawValue
        let vnni = isa & (dnnl_cpu_isa_avx512_core_vnni.rawValue & ~dnnl_cpu_isa_avx512_core.rawValue) != 0
            || isa & (dnnl_cpu_isa_avx2_vnni.rawValue & ~dnnl_cpu_isa_avx2.rawValue) != 0
        return vnni ? .eightBit : .sevenBit
    }()
}

/// Activation rows quantized for the int8 GEMM: `x[r, k] ≈ scales[r] · (values[r, k] − zeros[r])`.
/// The three arrays share one buffer (`TensorStorage`: from the run's `BufferPool`),
/// which lives while this value does: keep it alive (`withExtendedLifetime`) while
/// using pointers taken from it.
public struct QuantizedRows {
    public let values: UnsafeMutablePointer<UInt8>
    public let scales: UnsafeMutablePointer<Float>
    public let zeros: UnsafeMutablePointer<Int32>
    public let rows: Int, columns: Int
    private let storage: TensorStorage

    /// Quantizes `rows` rows of `columns` floats (leading dimension `ld`), rows spread over the cores.
    public init(_ x: UnsafePointer<Float>, rows: Int, columns: Int, ld: Int, range: ActivationRange) {
        (self.rows, self.columns) = (rows, columns)
        // Scales and zero points (4 bytes each per row) first, so that all three stay aligned.
        storage = TensorStorage(byteCount: rows * 8 + rows * columns)
        scales = storage.bytes.bindMemory(to: Float.self, capacity: rows)
        zeros = (storage.bytes + rows * 4).bindMemory(to: Int32.self, capacity: rows)
        values = (storage.bytes + rows * 8).bindMemory(to: UInt8.self, capacity: rows * columns)
        let (v, s, z) = (values, scales, zeros)
        Parallel.forEachChunk(rows, minimumChunk: max(1, (1 << 13) / max(columns, 1))) { part in
            let r = part.lowerBound
            spp_quantize_rows_u8(x + r * ld, ld, part.count, columns, range.levels, v + r * columns, columns, s + r, z + r)
        }
    }
}

extension Linear {
    /// `C[m×n] = A[m×k] · W` with int8 weights, row-major: A is quantized per row
    /// (`QuantizedRows`, to `range`), multiplied in int32 by oneDNN's u8s8s32 GEMM,
    /// and each product turned back into float32 with its row and column scales,
    /// `a_r · s_c · (Σ_k q w − z_r · Σ_k w)`. C then gets `bias` added (when given)
    /// or, with `accumulate`, what it held before (a bias row filled in first, as
    /// the float32 GEMMs use beta = 1); else it is overwritten. `epilogue` runs on
    /// each finished piece of a row (pointer, count), while it is in cache: an activation.
    ///
    /// With packed weights (`PackedMatrix`) one oneDNN matmul on all threads
    /// makes the int32 products, then threads take blocks of columns to finish them.
    /// Otherwise threads take blocks of W's columns: each multiplies all rows by its
    /// block on one thread and finishes its block, so the whole product is one fork
    /// and join, and a short A (few tokens) still splits evenly (oneDNN's GEMM
    /// threading splits a short M poorly).
    public static func int8Gemm(m: Int, a: UnsafePointer<Float>, lda: Int, w: QuantizedMatrix,
                                bias: UnsafePointer<Float>? = nil, accumulate: Bool = false,
                                c: UnsafeMutablePointer<Float>, ldc: Int, range: ActivationRange = .native,
                                epilogue: ((UnsafeMutablePointer<Float>, Int) -> Void)? = nil) throws {
        let (k, n) = (w.rows, w.columns)
        if m == 0 || n == 0 { return }
        let q = QuantizedRows(a, rows: m, columns: k, ld: lda, range: range)
        defer { withExtendedLifetime(q) {} }
        // The int32 products go into C itself (4 bytes each, like the floats each becomes in
        // place) unless C's values are still needed or its rows are spaced apart.
        let inPlace = !accumulate && ldc == n
        let products = inPlace ? nil : TensorStorage(byteCount: m * n * 4)
        defer { withExtendedLifetime(products) {} }
        let acc = UnsafeMutablePointer<Int32>(OpaquePointer(products?.bytes ?? UnsafeMutableRawPointer(c)))
        let (rs, rz, cs, sums) = (q.scales, q.zeros, w.scales.pointer(as: Float.self), w.columnSums.pointer(as: Int32.self))
        var rowMajor: Tensor?
        switch w.storage {
        case let .packed(p):
            // The values are held only packed: nothing else can multiply them.
            guard p.multiply(q.values, m: m, acc, threads: kernelThreads) else {
                throw KernelError.invalidArgument("oneDNN's int8 matmul failed for \(m)×\(k)×\(n) (out of memory?)")
            }
        case let .rowMajor(t):
            rowMajor = t
        }
        // Blocks of 16 columns (one AVX-512 register of int32), at least ~2M multiply-adds
        // per thread — or, products made, ~16K results to finish.
        let units = (n + 15) / 16
        let work = rowMajor == nil ? m * 16 : m * k * 16
        Parallel.forEachChunk(units, minimumChunk: max(1, (rowMajor == nil ? 1 << 14 : 1 << 21) / max(work, 1))) { u in
            let columns = (u.lowerBound * 16)..<min(n, u.upperBound * 16)
            let c0 = columns.lowerBound
            if let rowMajor { int8Product(q, rowMajor, acc, columns: columns, threads: 1) }
            spp_dequantize_rows(acc + c0, n, m, columns.count, rs, rz, cs + c0, sums + c0, bias.map { $0 + c0 },
                                accumulate ? 1 : 0, c + c0, ldc)
            if let epilogue { for r in 0..<m { epilogue(c + r * ldc + c0, columns.count) } }
        }
    }

    /// Columns `columns` (default all) of `acc[m×n] = q · values` (int8 `[K, N]`, row-major)
    /// in int32 through oneDNN on `threads` threads (default the runtime's), or the plain loop if it refuses.
    public static func int8Product(_ q: QuantizedRows, _ values: Tensor, _ acc: UnsafeMutablePointer<Int32>,
                                   columns: Range<Int>? = nil, threads: Int? = nil) {
        let (m, k, n) = (q.rows, values.shape[0], values.shape[1])
        let columns = columns ?? 0..<n
        if m == 0 || columns.isEmpty { return }
        let b = values.pointer(as: Int8.self) + columns.lowerBound, c = acc + columns.lowerBound
        if k == 0 {
            for r in 0..<m { (c + r * n).update(repeating: 0, count: columns.count) }
            return
        }
        setOpenMPThreads(threads ?? kernelThreads)
        var offset: Int32 = 0
        // 'N', 'N', 'F': no transposes, one C offset (0); A and B offsets 0 — zero points are applied after.
        let status = dnnl_gemm_u8s8s32(78, 78, 70, Int64(m), Int64(columns.count), Int64(k), 1, q.values, Int64(k), 0,
                                       b, Int64(n), 0, 0, c, Int64(n), &offset)
        if status != dnnl_success {
            spp_gemm_u8s8s32_ref(m, columns.count, k, q.values, k, b, n, c, n)
        }
    }
}

extension Linear {
    /// NumPy `matmul` of float32 `a [..., M, K]` (or `[K]`) by constant int8 weights `[K, N]`:
    /// one int8 GEMM over all rows of `a`.
    public static func matMul(_ a: Tensor, _ w: QuantizedMatrix, range: ActivationRange = .native) throws -> Tensor {
        guard a.dtype == .float32 else { throw KernelError.unsupportedDType(a.dtype, reason: "MatMul with int8 weights takes float32 inputs") }
        let (k, n) = (w.rows, w.columns)
        guard a.rank >= 1, a.shape[a.rank - 1] == k else {
            throw KernelError.shapeMismatch("MatMul inner dimensions differ: \(Tensor.describe(a.shape)) × [\(k), \(n)]")
        }
        let out = Tensor(dtype: .float32, shape: a.rank == 1 ? [n] : Array(a.shape.dropLast()) + [n])
        let rows = k == 0 ? out.count / max(n, 1) : a.count / k
        if k == 0 {
            out.pointer(as: Float.self).update(repeating: 0, count: out.count)
            return out
        }
        try int8Gemm(m: rows, a: a.pointer(as: Float.self), lda: k, w: w, c: out.pointer(as: Float.self), ldc: n, range: range)
        return out
    }

    /// ONNX Gemm without transA: `a [M, K]` by constant int8 weights (op(B), with
    /// alpha folded into its scales) plus beta · C, C broadcast to `[M, N]`.
    public static func gemm(_ a: Tensor, _ w: QuantizedMatrix, _ c: Tensor?, beta: Float, range: ActivationRange = .native) throws -> Tensor {
        guard a.dtype == .float32 else { throw KernelError.unsupportedDType(a.dtype, reason: "Gemm runs in float32") }
        guard a.rank == 2, a.shape[1] == w.rows else {
            throw KernelError.shapeMismatch("Gemm inner dimensions differ: \(Tensor.describe(a.shape)) × [\(w.rows), \(w.columns)]")
        }
        let (m, n) = (a.shape[0], w.columns)
        let out = Tensor(dtype: .float32, shape: [m, n], zeroed: true)
        let hasBias = try fillGemmBias(c, beta: beta, factor: beta, into: out)
        try int8Gemm(m: m, a: a.pointer(as: Float.self), lda: w.rows, w: w, accumulate: hasBias, c: out.pointer(as: Float.self), ldc: n, range: range)
        return out
    }
}
