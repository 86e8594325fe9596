import SPPCore
import SPPFormat
import SPPGraph
import SPPKernels
import SPPRuntime

/// The precision a `.spp` stores its weights at (`spp convert --weights`); the
/// runtime expands them to float32 when loading, or runs stored int8 as int8.
///
/// - GEMM weights — the pairs' unit tensors (Wq, Wk, Wv, W1 by unit, Wo and W2)
///   and constant matrices read only as a GEMM's weights (fused nodes of a dense
///   model, MatMul's B, Gemm's B) — are stored at the precision chosen. int8 is
///   symmetric per output column, `scale = max|w| / 127`: where units are output
///   columns (Wq, Wk, Wv, W1, stored as unit rows) every unit has its own scale,
///   so any prefix of units keeps its scales; where units are rows (Wo, W2) one
///   scale per column over all rows serves every prefix.
/// - Token embeddings (lookup tables) and the FFN repair data are stored in
///   float16 for fp16 and int8 (bfloat16 for bf16), except the repair's inverse
///   factor, int8 in every file (see `FeedForwardRepair`).
/// - Everything else (biases, norms, position embeddings) stays float32, as does
///   a tensor float16 cannot hold (a value beyond ±65504 or not finite).
public enum StoragePrecision: String, CaseIterable, Sendable {
    case fp32, fp16, bf16, int8

    /// What `encode` stored, for the conversion summary.
    public struct Report: Sendable, Equatable {
        /// Tensors and stored bytes by stored dtype, for the tensors it changed.
        public var tensors: [DType: Int] = [:]
        public var bytes: [DType: Int] = [:]
        /// Tensors that stayed float32 because float16 or int8 cannot hold them.
        public var keptFloat32: [String] = []
        public init() {}
    }

    /// The dtype lookup tables and repair data get.
    var auxiliary: DType? {
        switch self {
        case .fp32: return nil
        case .fp16, .int8: return .float16
        case .bf16: return .bfloat16
        }
    }

    /// Stores `model`'s tensors at this precision: replaces them by their stored
    /// elements, adds int8 scales as tensors, and records both in `model.encodings`.
    public func encode(_ model: inout SPPModel) throws -> Report {
        var report = Report()
        guard self != .fp32 else { return report }
        var g = model.graph
        var encodings = model.encodings
        func narrow(_ name: String, to dtype: DType) {
            guard let t = g.initializers[name], t.dtype == .float32, encodings[name] == nil else { return }
            guard dtype == .bfloat16 || Precision.fitsHalf(t) else { report.keptFloat32.append(name); return }
            let stored = Precision.narrowed(t, to: dtype)
            g.initializers[name] = stored
            encodings[name] = ValueEncoding()
            report.tensors[dtype, default: 0] += 1
            report.bytes[dtype, default: 0] += stored.byteCount
        }
        /// Quantizes row blocks of one matrix (`names`, consecutive rows) with a
        /// scale per row (axis 0) or per column over all blocks (axis 1, stored once as `scalesName`).
        func quantize(_ names: [String], axis: Int, scalesName: String) throws {
            let parts = names.compactMap { g.initializers[$0] }
            guard parts.count == names.count, parts.allSatisfy({ $0.dtype == .float32 && $0.rank == 2 }),
                  names.allSatisfy({ encodings[$0] == nil }),
                  parts.allSatisfy({ $0.buffer(as: Float.self).allSatisfy(\.isFinite) }) else {
                report.keptFloat32 += names
                return
            }
            if axis == 0 {
                for (name, t) in zip(names, parts) {
                    // Per row: the rows are the product's output columns.
                    let q = try QuantizedMatrix.quantize(try DataMovement.transpose(t, perm: [1, 0]))
                    try store(name, values: try DataMovement.transpose(q.values, perm: [1, 0]),
                              scales: q.scales.reshaped([t.shape[0], 1]), as: "\(name)/scales")
                }
            } else {
                let q = try QuantizedMatrix.quantize(parts.count == 1 ? parts[0] : try DataMovement.concat(parts, axis: 0))
                var start = 0
                for (name, t) in zip(names, parts) {
                    let rows = try DataMovement.slice(q.values, starts: [start], ends: [start + t.shape[0]], axes: [0], steps: [1])
                    try store(name, values: rows, scales: q.scales.reshaped([1, t.shape[1]]), as: scalesName)
                    start += t.shape[0]
                }
            }
        }
        var created: [String: String] = [:]
        func store(_ name: String, values: Tensor, scales: Tensor, as wanted: String) throws {
            // Chunks of one matrix share its column scales; a name the model already uses gets a suffix.
            let scalesName: String
            if let made = created[wanted] {
                scalesName = made
            } else {
                var unique = wanted
                while g.initializers[unique] != nil { unique += "_" }
                created[wanted] = unique
                scalesName = unique
                g.initializers[unique] = scales
                report.bytes[.float32, default: 0] += scales.byteCount
            }
            g.initializers[name] = values
            encodings[name] = ValueEncoding(scales: scalesName)
            report.tensors[.int8, default: 0] += 1
            report.bytes[.int8, default: 0] += values.byteCount
        }

        for pair in model.pruningPath?.pairs ?? [] {
            for t in pair.tensors {
                switch t.role {
                case "wq", "wk", "wv", "w1", "wo", "w2":
                    if self == .int8 {
                        let rowsAreOutputs = t.role != "wo" && t.role != "w2"
                        try quantize(t.chunks, axis: rowsAreOutputs ? 0 : 1, scalesName: "\(Self.prefix(t.chunks.first ?? t.role))/scales")
                    } else {
                        for name in t.chunks { narrow(name, to: self == .fp16 ? .float16 : .bfloat16) }
                    }
                case _ where FeedForwardRepair.Role.all.contains(t.role):
                    if let aux = auxiliary { for name in t.chunks { narrow(name, to: aux) } }
                default:
                    continue
                }
            }
            if pair.kind == .feedForward, let aux = auxiliary { narrow(FeedForwardRepair.offsetName(pair.node), to: aux) }
        }
        for (name, axis) in Self.gemmWeights(g) where g.initializers[name] != nil {
            if self == .int8 {
                try quantize([name], axis: axis, scalesName: "\(name)/scales")
            } else {
                narrow(name, to: self == .fp16 ? .float16 : .bfloat16)
            }
        }
        if let aux = auxiliary {
            for table in model.lookupTables { for name in table.chunks { narrow(name, to: aux) } }
        }
        model.graph = g
        model.encodings = encodings
        return report
    }

    /// A chunk's unit-tensor name: `node/kind/role#3` → `node/kind/role`.
    static func prefix(_ chunk: String) -> String {
        guard let hash = chunk.lastIndex(of: "#") else { return chunk }
        return String(chunk[..<hash])
    }

    /// Constant matrices read only as a GEMM's weights, with the axis their
    /// outputs run along (1: columns; 0: rows, a Gemm's B with transB).
    static func gemmWeights(_ g: Graph) -> [(String, Int)] {
        var axes: [String: [Int?]] = [:]
        for node in g.nodes {
            for (i, name) in node.inputs.enumerated() where g.initializers[name] != nil {
                let axis: Int?
                switch node.op {
                case .attention: axis = [1, 3, 5, 7].contains(i) ? 1 : nil
                case .feedForward: axis = i == 1 || i == 3 ? 1 : nil
                case .matMul: axis = i == 1 ? 1 : nil
                case .gemm: axis = i == 1 ? (((try? node.int("transB", default: 0)) ?? 0) != 0 ? 0 : 1) : nil
                default: axis = nil
                }
                axes[name, default: []].append(axis)
            }
        }
        let outputs = Set(g.outputs.map(\.name))
        return axes.sorted { $0.key < $1.key }.compactMap { name, uses in
            guard let first = uses.first, let axis = first, uses.allSatisfy({ $0 == axis }), !outputs.contains(name),
                  let t = g.initializers[name], t.dtype == .float32, t.rank == 2 else { return nil }
            return (name, axis)
        }
    }
}
