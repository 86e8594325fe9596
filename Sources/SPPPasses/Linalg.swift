import CBLAS
import CLAPACK

/// A dense row-major matrix of doubles: the working type of the conversion-time
/// linear algebra (rotations, whitening, ridge refits). Double precision because
/// these factorizations square condition numbers.
public struct Matrix: Equatable, Sendable {
    public var rows: Int
    public var cols: Int
    public var data: [Double]

    public init(rows: Int, cols: Int, data: [Double]) {
        precondition(data.count == rows * cols, "matrix data does not match \(rows)×\(cols)")
        self.rows = rows
        self.cols = cols
        self.data = data
    }

    public static func zeros(_ rows: Int, _ cols: Int) -> Matrix {
        Matrix(rows: rows, cols: cols, data: [Double](repeating: 0, count: rows * cols))
    }

    public static func identity(_ n: Int) -> Matrix {
        var m = zeros(n, n)
        for i in 0..<n { m[i, i] = 1 }
        return m
    }

    public subscript(i: Int, j: Int) -> Double {
        get { data[i * cols + j] }
        set { data[i * cols + j] = newValue }
    }

    public var transposed: Matrix {
        var t = Matrix.zeros(cols, rows)
        for i in 0..<rows { for j in 0..<cols { t[j, i] = self[i, j] } }
        return t
    }

    /// Product through BLAS dgemm.
    public static func * (a: Matrix, b: Matrix) -> Matrix {
        precondition(a.cols == b.rows, "matrix product \(a.rows)×\(a.cols) · \(b.rows)×\(b.cols)")
        var c = Matrix.zeros(a.rows, b.cols)
        if a.rows == 0 || b.cols == 0 || a.cols == 0 { return c }
        a.data.withUnsafeBufferPointer { pa in
            b.data.withUnsafeBufferPointer { pb in
                c.data.withUnsafeMutableBufferPointer { pc in
                    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(a.rows), Int32(b.cols), Int32(a.cols),
                                1, pa.baseAddress, Int32(a.cols), pb.baseAddress, Int32(b.cols), 0, pc.baseAddress, Int32(b.cols))
                }
            }
        }
        return c
    }

    /// Columns `range` as a new matrix.
    public func columns(_ range: Range<Int>) -> Matrix {
        var m = Matrix.zeros(rows, range.count)
        for i in 0..<rows { for (k, j) in range.enumerated() { m[i, k] = self[i, j] } }
        return m
    }

    /// Rows `range` as a new matrix.
    public func rows(_ range: Range<Int>) -> Matrix {
        Matrix(rows: range.count, cols: cols, data: Array(data[(range.lowerBound * cols)..<(range.upperBound * cols)]))
    }
}

public enum LinalgError: Error, CustomStringConvertible, Equatable {
    case notPositiveDefinite(order: Int, failedAt: Int)
    case didNotConverge(routine: String)
    case lapack(routine: String, info: Int32)

    public var description: String {
        switch self {
        case let .notPositiveDefinite(n, k): return "a \(n)×\(n) matrix is not positive definite (leading minor \(k) fails)"
        case let .didNotConverge(r): return "\(r) did not converge"
        case let .lapack(r, info): return "LAPACK \(r) failed with info \(info)"
        }
    }
}

/// The factorizations the pruning passes need, through LAPACK.
public enum Linalg {
    /// Lower-triangular L with A = L Lᵀ, for symmetric positive definite A.
    public static func cholesky(_ a: Matrix) throws -> Matrix {
        precondition(a.rows == a.cols)
        var l = a
        let n = Int32(a.rows)
        let info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "L")), n, &l.data, n)
        if info > 0 { throw LinalgError.notPositiveDefinite(order: a.rows, failedAt: Int(info)) }
        if info < 0 { throw LinalgError.lapack(routine: "dpotrf", info: info) }
        for i in 0..<a.rows { for j in (i + 1)..<a.cols where j < a.cols { l[i, j] = 0 } }
        return l
    }

    /// Thin QR of an m×n matrix (m ≥ n): Q is m×n with orthonormal columns, R is n×n upper triangular.
    public static func qr(_ a: Matrix) throws -> (q: Matrix, r: Matrix) {
        precondition(a.rows >= a.cols, "thin QR needs rows ≥ columns")
        let (m, n) = (Int32(a.rows), Int32(a.cols))
        var work = a
        var tau = [Double](repeating: 0, count: max(a.cols, 1))
        var info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, m, n, &work.data, n, &tau)
        if info != 0 { throw LinalgError.lapack(routine: "dgeqrf", info: info) }
        var r = Matrix.zeros(a.cols, a.cols)
        for i in 0..<a.cols { for j in i..<a.cols { r[i, j] = work[i, j] } }
        info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, m, n, n, &work.data, n, &tau)
        if info != 0 { throw LinalgError.lapack(routine: "dorgqr", info: info) }
        return (work, r)
    }

    /// Thin SVD A = U diag(s) Vᵀ with s descending; U is m×k, Vᵀ is k×n, k = min(m, n).
    public static func svd(_ a: Matrix) throws -> (u: Matrix, s: [Double], vt: Matrix) {
        let (m, n) = (a.rows, a.cols)
        let k = min(m, n)
        var work = a
        var s = [Double](repeating: 0, count: k)
        var u = Matrix.zeros(m, k), vt = Matrix.zeros(k, n)
        let info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "S")), Int32(m), Int32(n), &work.data, Int32(n),
                                  &s, &u.data, Int32(k), &vt.data, Int32(n))
        if info > 0 { throw LinalgError.didNotConverge(routine: "dgesdd") }
        if info < 0 { throw LinalgError.lapack(routine: "dgesdd", info: info) }
        return (u, s, vt)
    }

    /// X with R X = B for upper-triangular R (BLAS dtrsm).
    public static func solveUpperTriangular(_ r: Matrix, _ b: Matrix) -> Matrix {
        precondition(r.rows == r.cols && r.rows == b.rows)
        var x = b
        if b.cols == 0 || r.rows == 0 { return x }
        r.data.withUnsafeBufferPointer { pr in
            x.data.withUnsafeMutableBufferPointer { px in
                cblas_dtrsm(CblasRowMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, Int32(b.rows), Int32(b.cols),
                            1, pr.baseAddress, Int32(r.cols), px.baseAddress, Int32(b.cols))
            }
        }
        return x
    }

    /// X with A X = B for symmetric positive definite A (Cholesky solve; ridge regressions).
    public static func solvePositiveDefinite(_ a: Matrix, _ b: Matrix) throws -> Matrix {
        precondition(a.rows == a.cols && a.rows == b.rows)
        var f = a, x = b
        let info = LAPACKE_dposv(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "L")), Int32(a.rows), Int32(b.cols), &f.data, Int32(a.cols), &x.data, Int32(b.cols))
        if info > 0 { throw LinalgError.notPositiveDefinite(order: a.rows, failedAt: Int(info)) }
        if info < 0 { throw LinalgError.lapack(routine: "dposv", info: info) }
        return x
    }
}
