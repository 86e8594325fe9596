import CProtobuf
import SPPCore
import SPPGraph

/// The checked contents of a header: everything in it is safe to use (dtypes
/// known, shapes within limits, frames inside the data section).
struct DecodedHeader {
    var graph: Graph
    var provenance: Provenance
    var pruningPath: PruningPath?
    var costTable: [CostLevel]
    var lookupTables: [LookupTable]
    /// Frame offsets are absolute (the data section's offset added).
    var entries: [TensorEntryInfo]
    /// Position of each entry in `entries`, by name.
    var index: [String: Int]
    var dataSize: Int
    /// Where the data section starts.
    var dataOffset: Int
}

/// Turns an unpacked protobuf-c `spp.Model` into Swift values, validating every
/// count, code, dimension and size on the way: the header is untrusted input
/// even after its checksum matched (a file can be crafted).
struct HeaderDecoder {
    let path: String
    let limits: FormatLimits
    let formatVersion: UInt32
    /// The preamble's flags.
    let flags: UInt32
    /// Where the data section starts, added to each frame's offset.
    let dataOffset: Int

    func decode(_ m: UnsafePointer<Spp__Model>) throws -> DecodedHeader {
        guard m.pointee.format_version == formatVersion else {
            throw FormatError.headerInconsistent(path: path, reason:
                "header says format version \(m.pointee.format_version), the preamble says \(formatVersion)")
        }
        // Every frame's absolute end (data offset + offset + size ≤ data offset + data size) then fits an Int.
        guard m.pointee.data_size <= UInt64(Int.max - dataOffset) else {
            throw FormatError.headerInconsistent(path: path, reason: "data section size \(m.pointee.data_size) is absurd")
        }
        let dataSize = Int(m.pointee.data_size)
        let (entries, index) = try decodeEntries(m.pointee.tensors, count: m.pointee.n_tensors, dataSize: dataSize)
        var graph = Graph(inputs: [], outputs: [], initializers: [:], nodes: [])
        if let g = m.pointee.graph { graph = try decodeGraph(g) }
        var provenance = Provenance(toolName: "", createdAt: 0)
        if let p = m.pointee.provenance { provenance = decodeProvenance(p) }
        let pruningPath = try m.pointee.path.map { try decodePath($0) }
        let costTable = Self.values(m.pointee.cost_table, m.pointee.n_cost_table).compactMap { $0.map { decodeCost($0) } }
        let lookupTables = try Self.values(m.pointee.lookup_tables, m.pointee.n_lookup_tables).compactMap { try $0.map { try decodeLookupTable($0) } }
        return DecodedHeader(graph: graph, provenance: provenance, pruningPath: pruningPath, costTable: costTable,
                             lookupTables: lookupTables, entries: entries, index: index, dataSize: dataSize, dataOffset: dataOffset)
    }

    // MARK: tensor table

    private func decodeEntries(_ list: UnsafeMutablePointer<UnsafeMutablePointer<Spp__TensorEntry>?>?, count: Int,
                               dataSize: Int) throws -> ([TensorEntryInfo], [String: Int]) {
        guard count <= limits.maxTensors else {
            throw FormatError.limitExceeded(path: path, limit: "maxTensors", value: UInt64(count), maximum: limits.maxTensors)
        }
        var entries: [TensorEntryInfo] = []
        entries.reserveCapacity(count)
        var index: [String: Int] = [:]
        index.reserveCapacity(count)
        var totalBytes = 0
        for i in 0..<count {
            guard let e = list?[i] else {
                throw FormatError.headerInconsistent(path: path, reason: "tensor table entry \(i) is missing")
            }
            let name = cString(e.pointee.name)
            // How the errors below name the entry.
            let what = { "tensor '\(name)'" }
            guard index.updateValue(i, forKey: name) == nil else {
                throw FormatError.headerInconsistent(path: path, reason: "two tensors are named '\(name)'")
            }
            let rawShape = int64s(e.pointee.shape, e.pointee.n_shape)
            guard let dtype = DType(rawValue: e.pointee.dtype) else {
                throw FormatError.unknownDType(path: path, tensor: what(), code: e.pointee.dtype)
            }
            guard let codec = TensorEntryInfo.Codec(rawValue: Int32(bitPattern: e.pointee.codec.rawValue)) else {
                throw FormatError.unknownCodec(path: path, tensor: name, code: Int32(bitPattern: e.pointee.codec.rawValue))
            }
            let (shape, byteCount) = try checkShape(rawShape, dtype: dtype, what: what())
            guard e.pointee.raw_size == UInt64(byteCount) else {
                throw FormatError.absurdShape(path: path, tensor: what(), shape: rawShape,
                                              reason: "its raw size is \(e.pointee.raw_size) bytes, the shape needs \(byteCount)")
            }
            let (end, overflow) = e.pointee.offset.addingReportingOverflow(e.pointee.compressed_size)
            guard !overflow, end <= UInt64(dataSize) else {
                throw FormatError.frameOutOfBounds(path: path, tensor: name, offset: e.pointee.offset,
                                                   size: e.pointee.compressed_size, dataSize: UInt64(dataSize))
            }
            if codec == .none, e.pointee.compressed_size != e.pointee.raw_size {
                throw FormatError.headerInconsistent(path: path, reason:
                    "tensor '\(name)' is stored uncompressed in \(e.pointee.compressed_size) bytes but has \(byteCount)")
            }
            let (total, totalOverflow) = totalBytes.addingReportingOverflow(byteCount)
            guard !totalOverflow, total <= limits.maxTotalBytes else {
                throw FormatError.limitExceeded(path: path, limit: "maxTotalBytes",
                                                value: totalOverflow ? UInt64.max : UInt64(total), maximum: limits.maxTotalBytes)
            }
            totalBytes = total
            var encoding: ValueEncoding?
            if e.pointee.value_dtype != 0 || e.pointee.scales.map({ $0.pointee != 0 }) == true {
                guard let valueDType = DType(rawValue: e.pointee.value_dtype) else {
                    throw FormatError.unknownDType(path: path, tensor: "the value of \(what())", code: e.pointee.value_dtype)
                }
                let scales = cString(e.pointee.scales)
                encoding = ValueEncoding(valueDType: valueDType, scales: scales.isEmpty ? nil : scales)
            }
            entries.append(TensorEntryInfo(name: name, dtype: dtype, shape: shape, codec: codec,
                                           fileOffset: dataOffset + Int(e.pointee.offset), compressedSize: Int(e.pointee.compressed_size),
                                           rawSize: byteCount, checksum: e.pointee.checksum, encoding: encoding))
        }
        try checkEncodings(entries, index: index)
        return (entries, index)
    }

    /// Encoded entries need the preamble's flag and must follow `ValueEncoding`'s
    /// rules (int8 with float32 scales of the right shape, present in the table).
    private func checkEncodings(_ entries: [TensorEntryInfo], index: [String: Int]) throws {
        for e in entries {
            guard let encoding = e.encoding else { continue }
            guard flags & SPPFormat.encodedTensorsFlag != 0 else {
                throw FormatError.headerInconsistent(path: path, reason:
                    "tensor '\(e.name)' is stored at a lower precision, but the preamble's flag for that is not set")
            }
            let problem = ValueEncoding.problem(encoding, dtype: e.dtype, shape: e.shape) { name in
                index[name].map { entries[$0] }.map { ($0.dtype, $0.shape, $0.encoding != nil) }
            }
            if let problem { throw FormatError.invalidEncoding(path: path, tensor: e.name, reason: problem) }
        }
    }

    /// Checks rank, signs and element count against the limits, without
    /// overflowing; returns the shape as `Int`s and the byte count.
    private func checkShape(_ dims: [Int64], dtype: DType, what: @autoclosure () -> String) throws -> ([Int], Int) {
        guard dims.count <= limits.maxRank else {
            throw FormatError.limitExceeded(path: path, limit: "maxRank", value: UInt64(dims.count), maximum: limits.maxRank)
        }
        var count = 1
        var shape: [Int] = []
        shape.reserveCapacity(dims.count)
        for d in dims {
            guard d >= 0 else {
                throw FormatError.absurdShape(path: path, tensor: what(), shape: dims, reason: "negative dimension \(d)")
            }
            let (p, overflow) = count.multipliedReportingOverflow(by: Int(d))
            guard !overflow else {
                throw FormatError.absurdShape(path: path, tensor: what(), shape: dims, reason: "the element count overflows")
            }
            count = p
            shape.append(Int(d))
        }
        guard count <= limits.maxElementsPerTensor else {
            throw FormatError.limitExceeded(path: path, limit: "maxElementsPerTensor", value: UInt64(count),
                                            maximum: limits.maxElementsPerTensor)
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow else {
            throw FormatError.absurdShape(path: path, tensor: what(), shape: dims, reason: "the byte count overflows")
        }
        return (shape, bytes)
    }

    // MARK: graph

    private func decodeGraph(_ g: UnsafePointer<Spp__Graph>) throws -> Graph {
        var nodes: [Node] = []
        nodes.reserveCapacity(g.pointee.n_nodes)
        for i in 0..<g.pointee.n_nodes {
            guard let n = g.pointee.nodes?[i] else {
                throw FormatError.headerInconsistent(path: path, reason: "graph node \(i) is missing")
            }
            nodes.append(try decodeNode(n))
        }
        let inputs = try decodeValues(g.pointee.inputs, g.pointee.n_inputs, role: "graph input")
        let outputs = try decodeValues(g.pointee.outputs, g.pointee.n_outputs, role: "graph output")
        return Graph(inputs: inputs, outputs: outputs, initializers: [:], nodes: nodes)
    }

    private func decodeNode(_ n: UnsafePointer<Spp__Node>) throws -> Node {
        let name = cString(n.pointee.name)
        let opName = cString(n.pointee.op)
        guard let op = OpType(rawValue: opName) else { throw FormatError.unknownOp(path: path, node: name, op: opName) }
        var attributes: [String: Attribute] = [:]
        for i in 0..<n.pointee.n_attributes {
            guard let a = n.pointee.attributes?[i] else {
                throw FormatError.badAttribute(path: path, node: name, attribute: "#\(i)", reason: "missing")
            }
            let key = cString(a.pointee.name)
            attributes[key] = try decodeAttribute(a, node: name, key: key)
        }
        return Node(name: name, op: op, inputs: strings(n.pointee.inputs, n.pointee.n_inputs),
                    outputs: strings(n.pointee.outputs, n.pointee.n_outputs), attributes: attributes)
    }

    private func decodeAttribute(_ a: UnsafePointer<Spp__Attribute>, node: String, key: String) throws -> Attribute {
        let p = a.pointee
        switch p.kind {
        case SPP__ATTRIBUTE__KIND__INT: return .int(Int(p.i))
        case SPP__ATTRIBUTE__KIND__FLOAT: return .float(p.f)
        case SPP__ATTRIBUTE__KIND__STRING: return .string(text(p.s))
        case SPP__ATTRIBUTE__KIND__INTS: return .ints(int64s(p.ints, p.n_ints).map { Int($0) })
        case SPP__ATTRIBUTE__KIND__FLOATS:
            guard let floats = p.floats, p.n_floats > 0 else { return .floats([]) }
            return .floats(Array(UnsafeBufferPointer(start: floats, count: p.n_floats)))
        case SPP__ATTRIBUTE__KIND__STRINGS:
            return .strings(p.n_strings == 0 || p.strings == nil ? [] : (0..<p.n_strings).map { text(p.strings[$0]) })
        case SPP__ATTRIBUTE__KIND__TENSOR:
            guard let t = p.t else {
                throw FormatError.badAttribute(path: path, node: node, attribute: key, reason: "tensor attribute without a tensor")
            }
            return .tensor(Attribute.TensorValue(try decodeInlineTensor(t, what: "attribute '\(key)' of node '\(node)'")))
        default:
            throw FormatError.badAttribute(path: path, node: node, attribute: key, reason: "unknown attribute kind \(p.kind.rawValue)")
        }
    }

    private func decodeInlineTensor(_ t: UnsafePointer<Spp__InlineTensor>, what: String) throws -> Tensor {
        let dims = int64s(t.pointee.shape, t.pointee.n_shape)
        guard let dtype = DType(rawValue: t.pointee.dtype) else {
            throw FormatError.unknownDType(path: path, tensor: what, code: t.pointee.dtype)
        }
        let (shape, byteCount) = try checkShape(dims, dtype: dtype, what: what)
        let raw = t.pointee.raw_data
        guard raw.len == byteCount else {
            throw FormatError.absurdShape(path: path, tensor: what, shape: dims,
                                          reason: "it holds \(raw.len) bytes, the shape needs \(byteCount)")
        }
        let tensor = Tensor(dtype: dtype, shape: shape)
        if byteCount > 0, let src = raw.data { tensor.rawPointer.copyMemory(from: src, byteCount: byteCount) }
        if dtype == .bool, let bad = firstInvalidBool(tensor.rawPointer, count: tensor.byteCount) {
            throw FormatError.invalidTensorData(path: path, tensor: what, reason: "bool element \(bad) is neither 0 nor 1")
        }
        return tensor
    }

    private func decodeValues(_ list: UnsafeMutablePointer<UnsafeMutablePointer<Spp__ValueInfo>?>?, _ count: Int,
                              role: String) throws -> [ValueInfo] {
        var values: [ValueInfo] = []
        values.reserveCapacity(count)
        for i in 0..<count {
            guard let v = list?[i] else {
                throw FormatError.headerInconsistent(path: path, reason: "\(role) \(i) is missing")
            }
            let name = cString(v.pointee.name)
            let what = "\(role) '\(name)'"
            var dtype: DType?
            if v.pointee.dtype != 0 {
                guard let t = DType(rawValue: v.pointee.dtype) else {
                    throw FormatError.unknownDType(path: path, tensor: what, code: v.pointee.dtype)
                }
                dtype = t
            }
            var shape: [Dim]?
            if v.pointee.has_shape != 0 {
                let n = v.pointee.n_shape
                guard n <= limits.maxRank else {
                    throw FormatError.limitExceeded(path: path, limit: "maxRank", value: UInt64(n), maximum: limits.maxRank)
                }
                var dims: [Dim] = []
                for j in 0..<n {
                    guard let d = v.pointee.shape?[j] else {
                        throw FormatError.headerInconsistent(path: path, reason: "\(what): dimension \(j) is missing")
                    }
                    switch d.pointee.value_case {
                    case SPP__DIM__VALUE_FIXED:
                        guard d.pointee.fixed >= 0 else {
                            throw FormatError.absurdShape(path: path, tensor: what, shape: [d.pointee.fixed],
                                                          reason: "dimension \(j) is negative")
                        }
                        dims.append(.fixed(Int(d.pointee.fixed)))
                    case SPP__DIM__VALUE_SYMBOL:
                        dims.append(.symbol(cString(d.pointee.symbol)))
                    default:
                        throw FormatError.headerInconsistent(path: path, reason: "\(what): dimension \(j) is neither fixed nor symbolic")
                    }
                }
                shape = dims
            }
            values.append(ValueInfo(name: name, dtype: dtype, shape: shape))
        }
        return values
    }

    // MARK: provenance

    private func decodeProvenance(_ p: UnsafePointer<Spp__Provenance>) -> Provenance {
        var options: [String: String] = [:]
        for i in 0..<p.pointee.n_options {
            if let o = p.pointee.options?[i] { options[cString(o.pointee.key)] = cString(o.pointee.value) }
        }
        var passes: [Provenance.PassRecord] = []
        for i in 0..<p.pointee.n_passes {
            if let r = p.pointee.passes?[i] {
                passes.append(.init(name: cString(r.pointee.name), changes: Int(clamping: r.pointee.changes)))
            }
        }
        return Provenance(sourceFile: cString(p.pointee.source_file), sourceSize: Int(clamping: p.pointee.source_size),
                          sourceHash: p.pointee.source_hash, sourceProducer: cString(p.pointee.source_producer),
                          toolName: cString(p.pointee.tool_name), toolVersion: cString(p.pointee.tool_version),
                          createdAt: Int(p.pointee.created_at), options: options, passes: passes)
    }

    // MARK: C helpers

    private func cString(_ p: UnsafePointer<CChar>?) -> String {
        guard let p else { return "" }
        return String(cString: p)
    }

    private func strings(_ list: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ count: Int) -> [String] {
        guard let list else { return [] }
        return (0..<count).map { cString(list[$0]) }
    }

    private func int64s(_ p: UnsafePointer<Int64>?, _ count: Int) -> [Int64] {
        guard let p, count > 0 else { return [] }
        return Array(UnsafeBufferPointer(start: p, count: count))
    }

    private func text(_ b: ProtobufCBinaryData) -> String {
        guard let data = b.data, b.len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: b.len), as: UTF8.self)
    }
}

/// Index of the first byte of a bool tensor that is neither 0 nor 1 (any other
/// value would be undefined behaviour once read as a Swift `Bool`).
func firstInvalidBool(_ p: UnsafeRawPointer, count: Int) -> Int? {
    let bytes = p.assumingMemoryBound(to: UInt8.self)
    for i in 0..<count where bytes[i] > 1 { return i }
    return nil
}
