import SPPCore
import SPPFormat
import SPPKernels

/// Decodes a file's tensors into the runtime's memory, on all the load's threads:
/// each read goes straight into its destination (a whole tensor, or rows of a
/// unit tensor assembled from chunks), as stored or as float32 values — float16
/// and bfloat16 expanded, int8 times its scales (see `ValueEncoding`).
struct TensorDecoder {
    /// Work for one thread at a time: reads of `entries` and what it does with them.
    struct Task {
        /// When a task starts: `lead` tasks first, then the rest; each group largest first.
        enum Order: Comparable { case lead, bySize }

        let entries: [TensorEntryInfo]
        let order: Order
        let body: (TensorDecoder, FrameBuffers) throws -> Void

        /// One whole read.
        init(_ job: Job) {
            entries = [job.entry]
            order = .bySize
            body = { decoder, buffers in try decoder.decode(job, buffers: buffers) }
        }

        init(entries: [TensorEntryInfo], order: Order = .bySize, body: @escaping (TensorDecoder, FrameBuffers) throws -> Void) {
            self.entries = entries
            self.order = order
            self.body = body
        }
    }

    /// One read: the first `rows` rows of `entry` into `destination`.
    struct Job {
        let entry: TensorEntryInfo
        let rows: Int
        /// As float32 values (expanding an encoded entry), or as stored.
        let asValue: Bool
        let destination: UnsafeMutableRawPointer
    }

    let reader: SPPReader
    let threads: Int
    /// Scales of the int8 entries, by name, read first (`prepare`).
    private(set) var scales: [String: Tensor] = [:]
    /// Stored bytes read and the bytes they decompressed to.
    private(set) var bytesRead = 0, bytesDecoded = 0

    init(reader: SPPReader, threads: Int) {
        self.reader = reader
        self.threads = threads > 0 ? threads : ProcessInfoCores.count
    }

    /// Starts a load that reads `entries`: asks the kernel for all their frames and their
    /// scales' (`SPPReader.prefetch`), then reads the scales, so that values can be expanded.
    mutating func prepare(reading entries: [TensorEntryInfo]) throws {
        var names: [String] = [], seen: Set<String> = []
        for e in entries { if let s = e.encoding?.scales, scales[s] == nil, seen.insert(s).inserted { names.append(s) } }
        let found = try names.map(reader.requiredEntry)
        reader.prefetch(entries + found)
        let tensors = found.map { Tensor(dtype: $0.dtype, shape: $0.shape) }
        let jobs = zip(found, tensors).map { Job(entry: $0, rows: Self.rowCount($0), asValue: false, destination: $1.rawPointer) }
        // Scales are small and many (one per int8 chunk): a task reads a batch.
        let batches = stride(from: 0, to: jobs.count, by: Self.scalesPerTask).map { jobs[$0..<min(jobs.count, $0 + Self.scalesPerTask)] }
        try run(batches.map { batch in
            Task(entries: batch.map(\.entry)) { decoder, buffers in for job in batch { try decoder.decode(job, buffers: buffers) } }
        })
        for (e, t) in zip(found, tensors) { scales[e.name] = t }
    }

    /// Runs every task, in its `order`, on the decoder's threads; throws the error
    /// of the first failing task in `tasks` order, so that it does not depend on timing.
    mutating func run(_ tasks: [Task]) throws {
        let sizes = tasks.map { $0.entries.reduce(0) { $0 + $1.rawSize } }
        let order = tasks.indices.sorted { (tasks[$0].order, -sizes[$0]) < (tasks[$1].order, -sizes[$1]) }
        var failures = [Error?](repeating: nil, count: tasks.count)
        let buffers = (0..<threads).map { _ in FrameBuffers() }
        let decoder = self
        failures.withUnsafeMutableBufferPointer { failures in
            Parallel.forEachItem(order.count, threads: threads, spread: true) { item, thread in
                let i = order[item]
                do { try tasks[i].body(decoder, buffers[thread]) } catch { failures[i] = error }
            }
        }
        if let failure = failures.compactMap({ $0 }).first { throw failure }
        for e in tasks.flatMap(\.entries) {
            bytesRead += e.compressedSize
            bytesDecoded += e.rawSize
        }
    }

    /// Scales entries one task reads.
    static let scalesPerTask = 64

    /// Rows of an entry along its first dimension (a scalar is one row).
    static func rowCount(_ e: TensorEntryInfo) -> Int { e.shape.first ?? 1 }

    /// Elements per row.
    static func rowElements(_ e: TensorEntryInfo) -> Int { e.shape.dropFirst().reduce(1, *) }

    func decode(_ job: Job, buffers: FrameBuffers) throws {
        let e = job.entry
        let expand = job.asValue && e.encoding != nil
        if !expand, job.rows == Self.rowCount(e) {
            try reader.decode(e, into: job.destination, buffers: buffers)
            return
        }
        // Expanded, or a prefix: decoded to scratch first.
        let src = try reader.decode(e, buffers: buffers)
        if expand {
            Self.expand(src, e, scales: e.encoding?.scales.flatMap { scales[$0] }, rows: 0..<job.rows,
                        into: job.destination.assumingMemoryBound(to: Float.self))
        } else {
            job.destination.copyMemory(from: src, byteCount: job.rows * Self.rowElements(e) * e.dtype.size)
        }
    }

    /// The float32 values of rows `rows` of an encoded entry whose stored bytes are
    /// at `src` (`scales`: the entry's, for int8; the reader checked they fit).
    static func expand(_ src: UnsafeRawPointer, _ e: TensorEntryInfo, scales: Tensor?, rows: Range<Int>, into dst: UnsafeMutablePointer<Float>) {
        let width = rowElements(e)
        let first = src + rows.lowerBound * width * e.dtype.size
        if e.dtype == .int8, let scales {
            let perRow = ValueEncoding.scaleAxis(scalesShape: scales.shape, for: e.shape) == 0
            Precision.dequantize(first.assumingMemoryBound(to: Int8.self), scales: scales.pointer(as: Float.self) + (perRow ? rows.lowerBound : 0),
                                 perRow: perRow, rows: rows.count, columns: width, into: dst)
        } else {
            Precision.expand(first, e.dtype, count: rows.count * width, into: dst)
        }
    }
}
