import SPPCore
import SPPFormat
import SPPKernels

/// Int8 rows of one or more unit tensors side by side (`[Wq | Wk | Wv]`, or one
/// role), packed for the int8 kernels as they are read: the kept rows are
/// decoded unit-major into a reused per-thread buffer and packed from there
/// (`QuantizedMatrix(copying:)`), so the weights are written once, into their
/// final memory — no `[K, N]` copy, no concatenation, no second pass at
/// program build.
struct Int8Pack {
    /// The node the matrix is for, for errors.
    let node: String
    let parts: [UnitRows]
    /// Whether each row is an output column of the product (Wq, Wk, Wv, W1: a
    /// scale per unit) rather than an input row (Wo, W2: the columns' scales).
    let unitMajor: Bool

    /// Whether `rows` can be packed so: int8, with scales along the outputs.
    static func accepts(_ rows: UnitRows, unitMajor: Bool) -> Bool {
        rows.int8 && (rows.columnScales == nil) == unitMajor
    }

    /// The read and packing, for the decoder's threads; the matrix goes to `slot`.
    func task(into slot: UnsafeMutablePointer<QuantizedMatrix?>) -> TensorDecoder.Task {
        TensorDecoder.Task(entries: parts.flatMap { $0.parts.map(\.entry) }) { decoder, buffers in
            slot.pointee = try make(decoder, buffers)
        }
    }

    private func make(_ decoder: TensorDecoder, _ buffers: FrameBuffers) throws -> QuantizedMatrix {
        let width = parts[0].width
        guard parts.allSatisfy({ $0.width == width }) else {
            throw RuntimeError.corruptPath("int8 rows of node '\(node)' differ in width: \(parts.map(\.width))")
        }
        let units = parts.reduce(0) { $0 + $1.units }
        let rows = buffers.workspace(units * width, slot: 1)
        var offset = 0
        for p in parts {
            try p.readRows(decoder, buffers, into: rows + offset * width)
            offset += p.units
        }
        let scales = try parts.count == 1 ? parts[0].int8Scales(decoder.scales)
            : Tensor(parts.flatMap { try $0.int8Scales(decoder.scales).floats }, shape: [units])
        do {
            return try QuantizedMatrix(copying: rows, rows: unitMajor ? width : units, columns: unitMajor ? units : width,
                                       unitMajor: unitMajor, scales: scales)
        } catch let e as KernelError {
            throw RuntimeError.nodeFailed(node: node, op: "int8 weights", reason: e.description)
        }
    }
}
