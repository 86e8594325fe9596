import Foundation
import SPPCore
import SPPFormat
import SPPKernels

/// Rows of a lookup table (a token embedding), read from the file on first use,
/// chunk by chunk, and kept. A model that embeds a few sentences reads a few
/// chunks of its vocabulary, not the whole table.
public final class LookupSource: @unchecked Sendable {
    public let table: LookupTable
    let reader: SPPReader
    /// First row of each chunk.
    let starts: [Int]
    let rowCount: Int
    let rowShape: [Int]
    let dtype: DType
    private var chunks: [Tensor?]
    private let lock = NSLock()
    private var read = 0

    init(reader: SPPReader, table: LookupTable) throws {
        self.reader = reader
        self.table = table
        var starts: [Int] = []
        var total = 0
        for n in table.chunkRows { starts.append(total); total += n }
        self.starts = starts
        rowCount = total
        guard let first = table.chunks.first.flatMap({ reader.entry(named: $0) }), first.shape.count >= 1 else {
            throw RuntimeError.corruptPath("lookup table '\(table.name)' names chunks the file lacks")
        }
        for (name, rows) in zip(table.chunks, table.chunkRows) {
            guard let e = reader.entry(named: name), e.shape.first == rows, Array(e.shape.dropFirst()) == Array(first.shape.dropFirst()), e.dtype == first.dtype else {
                throw RuntimeError.corruptPath("chunk '\(name)' of lookup table '\(table.name)' does not hold \(rows) rows like the others")
            }
        }
        rowShape = Array(first.shape.dropFirst())
        dtype = first.dtype
        chunks = [Tensor?](repeating: nil, count: table.chunks.count)
    }

    /// Stored bytes read so far.
    public var bytesRead: Int { lock.lock(); defer { lock.unlock() }; return read }

    /// `Gather(table, indices, axis: 0)`, loading the chunks the indices touch.
    public func gather(_ indices: Tensor) throws -> Tensor {
        guard let idx = indices.integers else { throw KernelError.unsupportedDType(indices.dtype, reason: "Gather indices must be integers") }
        let rowElements = rowShape.reduce(1, *)
        let rowBytes = rowElements * dtype.size
        let out = Tensor(dtype: dtype, shape: indices.shape + rowShape)
        for (k, raw) in idx.enumerated() {
            let r = raw < 0 ? raw + rowCount : raw
            guard r >= 0, r < rowCount else { throw KernelError.invalidArgument("Gather index \(raw) is out of range for dimension \(rowCount)") }
            // The last chunk starting at or before r.
            var lo = 0, hi = starts.count - 1
            while lo < hi { let mid = (lo + hi + 1) / 2; if starts[mid] <= r { lo = mid } else { hi = mid - 1 } }
            let chunk = try load(lo)
            (out.rawPointer + k * rowBytes).copyMemory(from: chunk.rawPointer + (r - starts[lo]) * rowBytes, byteCount: rowBytes)
        }
        return out
    }

    private func load(_ i: Int) throws -> Tensor {
        lock.lock()
        defer { lock.unlock() }
        if let t = chunks[i] { return t }
        guard let e = reader.entry(named: table.chunks[i]) else { throw RuntimeError.corruptPath("chunk '\(table.chunks[i])' is missing") }
        let t = try reader.tensor(e)
        chunks[i] = t
        read += e.compressedSize
        return t
    }
}
