import CDNNL
import SPPCore

/// Threads the GEMMs and the parallel kernel parts may use (set by `Linear.setThreads`).
nonisolated(unsafe) var kernelThreads = 1

public enum Linear {
    /// Sets the number of threads the kernels may use: oneDNN's GEMMs (through
    /// OpenMP, per calling thread) and `Parallel`.
    public static func setThreads(_ n: Int) {
        kernelThreads = max(n, 1)
        omp_set_num_threads(Int32(kernelThreads))
    }

    public static var threads: Int { kernelThreads }

    /// Before each oneDNN call: OpenMP thread counts belong to each calling
    /// thread, and the caller may be a worker of ours.
    @inline(__always)
    static func setOpenMPThreads(_ n: Int = kernelThreads) {
        if omp_get_max_threads() != Int32(n) { omp_set_num_threads(Int32(n)) }
    }

    /// C[m×n] = alpha · op(A) · op(B) + beta · C, row-major, float32, through
    /// oneDNN (its kernels use AVX-512 where the CPU has it),
    /// on `threads` threads (default: the runtime's; 1 inside work already split).
    public static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                             a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                             beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int? = nil) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            // BLAS leaves C untouched for k == 0 only when beta == 1; make the empty sum explicit.
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
            return
        }
        setOpenMPThreads(threads ?? kernelThreads)
        let status = dnnl_sgemm(transA ? 84 : 78, transB ? 84 : 78, Int64(m), Int64(n), Int64(k), alpha, a, Int64(lda),
                                b, Int64(ldb), beta, c, Int64(ldc))
        // It refuses only arguments the callers' shape checks exclude.
        precondition(status == dnnl_success, "dnnl_sgemm refused \(m)×\(n)×\(k) (lda \(lda), ldb \(ldb), ldc \(ldc)): status \(status.rawValue)")
    }

    /// The reference the fast path is tested against: a triple loop in Double.
    public static func naiveGemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                                 a: [Float], b: [Float]) -> [Float] {
        var c = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k {
                    let x = transA ? a[p * m + i] : a[i * k + p]
                    let y = transB ? b[j * k + p] : b[p * n + j]
                    s += Double(x) * Double(y)
                }
                c[i * n + j] = Float(s)
            }
        }
        return c
    }

    /// NumPy `matmul`: batch dimensions broadcast, 1-D operands are promoted and the
    /// promoted dimension removed from the result.
    public static func matMul(_ a: Tensor, _ b: Tensor) throws -> Tensor {
        guard a.dtype == b.dtype else { throw KernelError.invalidArgument("MatMul inputs have types \(a.dtype) and \(b.dtype)") }
        guard a.rank >= 1, b.rank >= 1 else { throw KernelError.shapeMismatch("MatMul needs inputs of rank ≥ 1, got \(Tensor.describe(a.shape)) and \(Tensor.describe(b.shape))") }
        let aShape = a.rank == 1 ? [1, a.shape[0]] : a.shape
        let bShape = b.rank == 1 ? [b.shape[0], 1] : b.shape
        let (m, k) = (aShape[aShape.count - 2], aShape[aShape.count - 1])
        let (k2, n) = (bShape[bShape.count - 2], bShape[bShape.count - 1])
        guard k == k2 else {
            throw KernelError.shapeMismatch("MatMul inner dimensions differ: \(Tensor.describe(a.shape)) × \(Tensor.describe(b.shape))")
        }
        let batch = try Broadcast([Array(aShape.dropLast(2)), Array(bShape.dropLast(2))])
        var outShape = batch.outShape + [m, n]
        if a.rank == 1 { outShape.remove(at: outShape.count - 2) }
        if b.rank == 1 { outShape.removeLast() }
        let out = Tensor(dtype: a.dtype, shape: outShape)
        switch a.dtype {
        case .float32:
            let pa = a.pointer(as: Float.self), pb = b.pointer(as: Float.self), pc = out.pointer(as: Float.self)
            if bShape.count == 2 {
                // Weights shared by every batch row: one GEMM over all rows of A.
                let rows = a.count / max(k, 1)
                sgemm(transA: false, transB: false, m: rows, n: n, k: k, alpha: 1, a: pa, lda: k, b: pb, ldb: n, beta: 0, c: pc, ldc: n)
                return out
            }
            var index = 0
            batch.forEachRun { _, offs, count, steps in
                for i in 0..<count {
                    let ao = (offs[0] + i * steps[0]) * m * k, bo = (offs[1] + i * steps[1]) * k * n
                    sgemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: pa + ao, lda: k,
                          b: pb + bo, ldb: n, beta: 0, c: pc + index * m * n, ldc: n)
                    index += 1
                }
            }
        default:
            try a.dtype.visit(NaiveMatMul(a: a, b: b, out: out, batch: batch, m: m, n: n, k: k), op: "MatMul")
        }
        return out
    }

    private struct NaiveMatMul: NumericVisitor {
        let a: Tensor, b: Tensor, out: Tensor, batch: Broadcast, m: Int, n: Int, k: Int
        func visit<T: NumericElement>(_: T.Type) throws {
            let pa = a.pointer(as: T.self), pb = b.pointer(as: T.self), pc = out.pointer(as: T.self)
            var index = 0
            batch.forEachRun { _, offs, count, steps in
                for q in 0..<count {
                    let ao = (offs[0] + q * steps[0]) * m * k, bo = (offs[1] + q * steps[1]) * k * n, co = index * m * n
                    for i in 0..<m {
                        for j in 0..<n {
                            var s: T = 0
                            for p in 0..<k { s += pa[ao + i * k + p] * pb[bo + p * n + j] }
                            pc[co + i * n + j] = s
                        }
                    }
                    index += 1
                }
            }
        }
    }

    /// ONNX Gemm: alpha · op(A) · op(B) + beta · C, with C broadcast to [M, N].
    public static func gemm(_ a: Tensor, _ b: Tensor, _ c: Tensor?, transA: Bool, transB: Bool,
                            alpha: Float, beta: Float) throws -> Tensor {
        guard a.dtype == .float32, b.dtype == .float32 else {
            throw KernelError.unsupportedDType(a.dtype == .float32 ? b.dtype : a.dtype, reason: "Gemm runs in float32")
        }
        guard a.rank == 2, b.rank == 2 else { throw KernelError.shapeMismatch("Gemm needs 2-D inputs, got \(Tensor.describe(a.shape)) and \(Tensor.describe(b.shape))") }
        let (m, k) = transA ? (a.shape[1], a.shape[0]) : (a.shape[0], a.shape[1])
        let (k2, n) = transB ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
        guard k == k2 else { throw KernelError.shapeMismatch("Gemm inner dimensions differ: \(Tensor.describe(a.shape)) × \(Tensor.describe(b.shape))") }
        let out = Tensor(dtype: .float32, shape: [m, n], zeroed: true)
        // C copied as is, beta applied by the GEMM.
        let betaUsed: Float = try fillGemmBias(c, beta: beta, into: out) ? beta : 0
        sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a.pointer(as: Float.self), lda: a.shape[1],
              b: b.pointer(as: Float.self), ldb: b.shape[1], beta: betaUsed, c: out.pointer(as: Float.self), ldc: n)
        return out
    }

    /// Copies Gemm's C, broadcast and times `factor`, into `out [M, N]`; true when
    /// there is one to add (beta ≠ 0), so the product is to be accumulated onto it.
    static func fillGemmBias(_ c: Tensor?, beta: Float, factor: Float = 1, into out: Tensor) throws -> Bool {
        guard let c, beta != 0 else { return false }
        guard c.dtype == .float32 else { throw KernelError.unsupportedDType(c.dtype, reason: "Gemm bias runs in float32") }
        let bc = try Broadcast([c.shape, out.shape])
        guard bc.outShape == out.shape else { throw KernelError.shapeMismatch("Gemm bias \(Tensor.describe(c.shape)) does not broadcast to \(Tensor.describe(out.shape))") }
        let pc = c.pointer(as: Float.self), po = out.pointer(as: Float.self)
        bc.forEachRun { start, offs, count, steps in
            for i in 0..<count { po[start + i] = factor * pc[offs[0] + i * steps[0]] }
        }
        return true
    }
}
