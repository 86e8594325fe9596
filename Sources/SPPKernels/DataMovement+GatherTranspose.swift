import CKernels
import SPPCore

extension DataMovement {
    /// `out[c, j] = x[order[j], c]`: rows of a matrix `x [R, C]` picked by `order`
    /// (all rows in order when nil) become the columns of `out [C, order.count]`,
    /// in one tiled pass — what Gather then Transpose do in two. 4- and 1-byte elements.
    public static func gatherTransposed(_ x: Tensor, order: [Int64]?) throws -> Tensor {
        guard x.rank == 2 else { throw KernelError.invalidArgument("gatherTransposed takes a matrix, got \(Tensor.describe(x.shape))") }
        let out = Tensor(dtype: x.dtype, shape: [x.shape[1], order?.count ?? x.shape[0]])
        try gatherTransposed(x.rawPointer, rows: x.shape[0], columns: x.shape[1], dtype: x.dtype, order: order, into: out.rawPointer)
        return out
    }

    /// The same from and into raw memory: `x` holds `rows × columns` elements of
    /// `dtype`, `out` `columns` rows of `ld` elements (default `order.count`, or
    /// `rows`), of which the first `order.count` (or `rows`) are written.
    public static func gatherTransposed(_ x: UnsafeRawPointer, rows: Int, columns: Int, dtype: DType, order: [Int64]?,
                                        into out: UnsafeMutableRawPointer, ld: Int? = nil) throws {
        guard dtype.size == 4 || dtype.size == 1 else {
            throw KernelError.unsupportedDType(dtype, reason: "gatherTransposed moves 4- or 1-byte elements")
        }
        if let order, let bad = order.first(where: { $0 < 0 || $0 >= rows }) {
            throw KernelError.invalidArgument("row \(bad) is out of range for \(rows) rows")
        }
        let n = order?.count ?? rows, ld = ld ?? n
        precondition(ld >= n, "gatherTransposed into rows of \(ld) for \(n) columns")
        func run(_ o: UnsafePointer<Int64>?) {
            if dtype.size == 4 {
                spp_gather_transpose_32(x.assumingMemoryBound(to: UInt32.self), columns, o, n, out.assumingMemoryBound(to: UInt32.self), ld)
            } else {
                spp_gather_transpose_8(x.assumingMemoryBound(to: UInt8.self), columns, o, n, out.assumingMemoryBound(to: UInt8.self), ld)
            }
        }
        if let order { order.withUnsafeBufferPointer { run($0.baseAddress) } } else { run(nil) }
    }
}
