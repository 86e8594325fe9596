import CKernels
import SPPCore

extension DataMovement {
    /// `out[c, j] = x[order[j], c]`: rows of a matrix `x [R, C]` picked by `order`
    /// (all rows in order when nil) become the columns of `out [C, order.count]`,
    /// in one tiled pass — what Gather then Transpose do in two. 4- and 1-byte elements.
    public static func gatherTransposed(_ x: Tensor, order: [Int64]?) throws -> Tensor {
        guard x.rank == 2, x.dtype.size == 4 || x.dtype.size == 1 else {
            throw KernelError.invalidArgument("gatherTransposed takes a matrix of 4- or 1-byte elements, got \(x.dtype) \(Tensor.describe(x.shape))")
        }
        let (rows, cols) = (x.shape[0], x.shape[1])
        if let order, let bad = order.first(where: { $0 < 0 || $0 >= rows }) {
            throw KernelError.invalidArgument("row \(bad) is out of range for \(rows) rows")
        }
        let n = order?.count ?? rows
        let out = Tensor(dtype: x.dtype, shape: [cols, n])
        func run(_ o: UnsafePointer<Int64>?) {
            if x.dtype.size == 4 {
                spp_gather_transpose_32(x.rawPointer.assumingMemoryBound(to: UInt32.self), cols, o, n, out.rawPointer.assumingMemoryBound(to: UInt32.self))
            } else {
                spp_gather_transpose_8(x.rawPointer.assumingMemoryBound(to: UInt8.self), cols, o, n, out.rawPointer.assumingMemoryBound(to: UInt8.self))
            }
        }
        if let order { order.withUnsafeBufferPointer { run($0.baseAddress) } } else { run(nil) }
        return out
    }
}
