import Foundation
import SPPCore
import SPPFormat
import SPPKernels

/// Rows of a lookup table (a token embedding), read from the file on first use,
/// chunk by chunk, and kept as stored. A model that embeds a few sentences reads
/// a few chunks of its vocabulary, not the whole table. Chunks stored at a lower
/// precision (float16, bfloat16, int8 with scales) stay so in memory; the rows a
/// gather copies out are expanded to float32.
public final class LookupSource: @unchecked Sendable {
    public let table: LookupTable
    /// The file's frames, not its reader: the header's tables are not kept for this.
    let frames: FrameReader
    /// First row of each chunk.
    let starts: [Int]
    let rowCount: Int
    let rowShape: [Int]
    /// What a gather returns: the value dtype (float32 for an encoded table).
    let dtype: DType
    /// Each chunk's entry and that of its scales (an int8 chunk).
    private let entries: [(values: TensorEntryInfo, scales: TensorEntryInfo?)]
    private var chunks: [(values: Tensor, scales: Tensor?)?]
    private let lock = NSLock()
    private var read = 0, held = 0

    public init(reader: SPPReader, table: LookupTable) throws {
        frames = reader.frames
        self.table = table
        var starts: [Int] = []
        var total = 0
        for n in table.chunkRows { starts.append(total); total += n }
        self.starts = starts
        rowCount = total
        guard let first = table.chunks.first.flatMap({ reader.entry(named: $0) }), first.shape.count >= 1 else {
            throw RuntimeError.corruptPath("lookup table '\(table.name)' names chunks the file lacks")
        }
        entries = try zip(table.chunks, table.chunkRows).map { name, rows in
            guard let e = reader.entry(named: name), e.shape.first == rows, Array(e.shape.dropFirst()) == Array(first.shape.dropFirst()),
                  e.valueDType == first.valueDType else {
                throw RuntimeError.corruptPath("chunk '\(name)' of lookup table '\(table.name)' does not hold \(rows) rows like the others")
            }
            return (e, try e.encoding?.scales.map(reader.requiredEntry))
        }
        rowShape = Array(first.shape.dropFirst())
        dtype = first.valueDType
        chunks = .init(repeating: nil, count: table.chunks.count)
    }

    /// Stored bytes read so far.
    public var bytesRead: Int { lock.lock(); defer { lock.unlock() }; return read }
    /// Bytes of the chunks held (as stored).
    public var bytesHeld: Int { lock.lock(); defer { lock.unlock() }; return held }

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
            let (chunk, scales) = try load(lo)
            let e = entries[lo].values, row = r - starts[lo]
            if e.encoding != nil {
                TensorDecoder.expand(chunk.rawPointer, e, scales: scales, rows: row..<row + 1,
                                     into: (out.rawPointer + k * rowBytes).assumingMemoryBound(to: Float.self))
            } else {
                (out.rawPointer + k * rowBytes).copyMemory(from: chunk.rawPointer + row * rowBytes, byteCount: rowBytes)
            }
        }
        return out
    }

    /// The whole table as one tensor of its value dtype.
    public func all() throws -> Tensor {
        try gather(Tensor((0..<Int64(rowCount)).map { $0 }, shape: [rowCount]))
    }

    private func load(_ i: Int) throws -> (values: Tensor, scales: Tensor?) {
        lock.lock()
        defer { lock.unlock() }
        if let c = chunks[i] { return c }
        let (e, scalesEntry) = entries[i]
        // Chunks are kept: made outside the run's buffer pool, which is for what runs free again.
        let c = try BufferPool.$current.withValue(nil) {
            (values: try frames.tensor(e), scales: try scalesEntry.map { try frames.tensor($0) })
        }
        chunks[i] = c
        read += e.compressedSize + (scalesEntry?.compressedSize ?? 0)
        held += c.values.byteCount + (c.scales?.byteCount ?? 0)
        return c
    }
}
