import SPPCore
import SPPFormat
import SPPKernels

/// The kept rows of one unit tensor of a pair (its first `count` rows, unit-major
/// in the file), read from the chunks that hold them and put in the node's
/// layout as they are read: the weights are written once into their final
/// memory (fresh memory costs a page fault per 4 KiB; the unit-major rows of a
/// transposed role go through a reused per-thread workspace instead).
struct UnitRows {
    /// How the rows become the node's tensor: those `order` picks (all, in order,
    /// when nil), as columns when `transpose`.
    struct Layout {
        var order: [Int64]?
        var transpose: Bool
    }

    /// Columns [offset, offset + units) of a wider float32 matrix `[width, N]`: where
    /// transposed rows go when they share a matrix with others (`[Wq | Wk | Wv]`).
    struct ColumnBlock {
        let matrix: Tensor
        let offset: Int
    }

    /// float32 values in `layout` (unit-major without one), filled by `read`; nil
    /// for int8 rows, which `Int8Pack` reads instead, and for rows read into `block`.
    let values: Tensor?
    let block: ColumnBlock?
    /// Rows kept int8 (read by `Int8Pack`): they have neither values nor a block.
    var int8: Bool { values == nil && block == nil }
    /// For int8 rows with a scale per column: the scales all chunks share.
    let columnScales: String?
    let layout: Layout?
    let count: Int
    let width: Int
    /// The chunks read and the rows taken from each.
    let parts: [(entry: TensorEntryInfo, rows: Int)]

    /// Plans the read. `int8`: keep the rows int8 if every chunk stores them so,
    /// with a scale per row, or per column shared by all chunks (else they are
    /// read as float32 values).
    init(_ reader: SPPReader, _ t: PrunablePair.UnitTensor, count: Int, int8 wanted: Bool, layout: Layout?) throws {
        let parts = try Self.parts(reader, t, count: count)
        let first = parts.first?.entry ?? t.chunks.first.flatMap { reader.entry(named: $0) }
        let rowShape = first.map { Array($0.shape.dropFirst()) } ?? []

        let scales = parts.map { $0.entry.encoding?.scales }
        let axes = parts.map { p in
            p.entry.encoding?.scales.flatMap { reader.entry(named: $0) }.flatMap { ValueEncoding.scaleAxis(scalesShape: $0.shape, for: p.entry.shape) }
        }
        let shared = axes.allSatisfy { $0 == 1 } && Set(scales).count == 1
        let int8 = wanted && !parts.isEmpty && parts.allSatisfy { $0.entry.dtype == .int8 } && (axes.allSatisfy { $0 == 0 } || shared)
        columnScales = int8 && shared ? scales.first ?? nil : nil
        let dtype: DType = int8 ? .int8 : .float32
        for (e, _) in parts where (int8 ? e.dtype : e.valueDType) != dtype || Array(e.shape.dropFirst()) != rowShape {
            throw RuntimeError.corruptPath("chunk '\(e.name)' of unit tensor '\(t.role)' is \(e.valueDType) \(Tensor.describe(e.shape)), not \(dtype) rows of \(Tensor.describe(rowShape))")
        }
        if let layout, layout.transpose || int8, rowShape.count != 1 {
            throw RuntimeError.corruptPath("unit tensor '\(t.role)' has rows of \(Tensor.describe(rowShape)), not vectors")
        }
        if let order = layout?.order, let bad = order.first(where: { $0 < 0 || $0 >= count }) {
            throw RuntimeError.corruptPath("unit \(bad) of \(count) is out of range")
        }
        width = rowShape.reduce(1, *)
        let n = layout?.order?.count ?? count
        block = nil
        values = int8 ? nil : Tensor(dtype: .float32, shape: layout?.transpose == true ? [width, n] : [n] + rowShape)
        self.layout = layout
        self.count = count
        self.parts = parts
    }

    private init(_ rows: UnitRows, into block: ColumnBlock) {
        (values, self.block, columnScales) = (nil, block, nil)
        (layout, count, width, parts) = (rows.layout, rows.count, rows.width, rows.parts)
    }

    /// The same float32 rows, transposed into `block` instead of `values` (`values` is then
    /// not read, nor its memory touched).
    func into(_ block: ColumnBlock) -> UnitRows {
        precondition(!int8 && layout?.transpose == true && block.matrix.dtype == .float32 && block.matrix.rank == 2
                     && block.matrix.shape[0] == width && block.offset + units <= block.matrix.shape[1], "unit rows into a column block that does not fit")
        return UnitRows(self, into: block)
    }

    /// Rows in the result: those the layout picks.
    var units: Int { layout?.order?.count ?? count }

    /// The chunks that hold the first `count` rows of `t`, and the rows taken from each.
    static func parts(_ reader: SPPReader, _ t: PrunablePair.UnitTensor, count: Int) throws -> [(entry: TensorEntryInfo, rows: Int)] {
        var parts: [(entry: TensorEntryInfo, rows: Int)] = []
        var have = 0
        for (name, rows) in zip(t.chunks, t.chunkRows) where have < count {
            guard let e = reader.entry(named: name) else { throw RuntimeError.corruptPath("chunk '\(name)' is not in the file") }
            guard e.shape.count >= 1, e.shape[0] == rows else { throw RuntimeError.corruptPath("chunk '\(name)' does not hold \(rows) rows") }
            let take = min(rows, count - have)
            parts.append((e, take))
            have += take
        }
        guard have == count else { throw RuntimeError.corruptPath("unit tensor '\(t.role)' holds \(have) rows, \(count) needed") }
        return parts
    }

    /// The reads of float32 values, for the decoder's threads.
    var task: TensorDecoder.Task {
        TensorDecoder.Task(entries: parts.map(\.entry)) { decoder, buffers in try read(decoder, buffers) }
    }

    /// Reads the float32 values into `values`, through the buffers' workspace when the layout moves them.
    func read(_ decoder: TensorDecoder, _ buffers: FrameBuffers) throws {
        guard !int8 else { return }
        let rowBytes = width * 4
        let direct = layout.map { $0.order == nil && !$0.transpose } ?? true
        if direct, let values { return try decode(decoder, buffers, into: values.rawPointer) }
        let rows = buffers.workspace(count * rowBytes)
        try decode(decoder, buffers, into: rows)
        guard let layout else { return }
        if layout.transpose {
            let (out, ld) = block.map { ($0.matrix.rawPointer + $0.offset * 4, $0.matrix.shape[1]) } ?? (values!.rawPointer, units)
            try DataMovement.gatherTransposed(rows, rows: count, columns: width, dtype: .float32, order: layout.order, into: out, ld: ld)
        } else if let values, let order = layout.order {
            gather(rows, order, into: values.rawPointer, rowBytes: rowBytes)
        }
    }

    /// Reads int8 rows unit-major (a row per unit, in the layout's order, never
    /// transposed) into `destination`, which has room for `units` rows.
    func readRows(_ decoder: TensorDecoder, _ buffers: FrameBuffers, into destination: UnsafeMutableRawPointer) throws {
        guard let order = layout?.order else { return try decode(decoder, buffers, into: destination) }
        let rows = buffers.workspace(count * width)
        try decode(decoder, buffers, into: rows)
        gather(rows, order, into: destination, rowBytes: width)
    }

    /// The kept rows as stored (or as float32 values), chunk after chunk.
    private func decode(_ decoder: TensorDecoder, _ buffers: FrameBuffers, into rows: UnsafeMutableRawPointer) throws {
        let rowBytes = width * (int8 ? 1 : 4)
        var offset = 0
        for (e, take) in parts {
            try decoder.decode(TensorDecoder.Job(entry: e, rows: take, asValue: !int8, destination: rows + offset), buffers: buffers)
            offset += take * rowBytes
        }
    }

    /// Rows `order` picks, in that order (checked in range when planned).
    private func gather(_ rows: UnsafeRawPointer, _ order: [Int64], into destination: UnsafeMutableRawPointer, rowBytes: Int) {
        for (j, r) in order.enumerated() {
            (destination + j * rowBytes).copyMemory(from: rows + Int(r) * rowBytes, byteCount: rowBytes)
        }
    }

    /// The scales of int8 rows (`scales`: read by the decoder): one per unit in the
    /// layout's order (`[units]`), or the columns' that all chunks share (`[width]`).
    func int8Scales(_ scales: [String: Tensor]) throws -> Tensor {
        if let name = columnScales, let shared = scales[name] { return shared.reshaped([shared.count]) }
        let found = parts.compactMap { $0.entry.encoding?.scales.flatMap { scales[$0] } }
        guard int8, found.count == parts.count else { throw RuntimeError.corruptPath("int8 rows of '\(parts[0].entry.name)' without their scales") }
        // A scale per unit: the kept units' scales, chunk after chunk, then in the layout's order.
        var perUnit: [Float] = []
        for (s, part) in zip(found, parts) { perUnit += s.buffer(as: Float.self).prefix(part.rows) }
        if let order = layout?.order { perUnit = order.map { perUnit[Int($0)] } }
        return Tensor(perUnit, shape: [perUnit.count])
    }
}
