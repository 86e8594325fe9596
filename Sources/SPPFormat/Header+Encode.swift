import CProtobuf
import SPPProtobuf
import SPPCore
import SPPGraph

/// A tensor table row as the writer lays it out.
struct PlannedEntry {
    var name: String
    var dtype: DType
    var shape: [Int]
    var codec: TensorEntryInfo.Codec
    var offset: Int
    var compressedSize: Int
    var rawSize: Int
    var checksum: UInt64
    var encoding: ValueEncoding?
}

/// Builds the protobuf-c `spp.Model` tree for a model and packs it.
enum HeaderEncoder {
    static func encode(graph: Graph, provenance: Provenance, path: PruningPath?, costTable: [CostLevel],
                       lookupTables: [LookupTable], entries: [PlannedEntry], dataSize: Int) -> [UInt8] {
        let arena = CArena()
        let model = arena.message(spp__model__init)
        model.pointee.format_version = SPPFormat.currentVersion
        model.pointee.graph = encodeGraph(graph, arena)
        (model.pointee.n_tensors, model.pointee.tensors) = arena.messages(entries) { encodeEntry($0, arena) }
        model.pointee.data_size = UInt64(dataSize)
        model.pointee.provenance = encodeProvenance(provenance, arena)
        if let path { model.pointee.path = encodePath(path, arena) }
        (model.pointee.n_cost_table, model.pointee.cost_table) = arena.messages(costTable) { encodeCost($0, arena) }
        (model.pointee.n_lookup_tables, model.pointee.lookup_tables) = arena.messages(lookupTables) { encodeLookupTable($0, arena) }

        let message = UnsafeRawPointer(model).assumingMemoryBound(to: ProtobufCMessage.self)
        let size = protobuf_c_message_get_packed_size(message)
        return [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            count = protobuf_c_message_pack(message, buf.baseAddress)
        }
    }

    private static func encodeGraph(_ g: Graph, _ arena: CArena) -> UnsafeMutablePointer<Spp__Graph> {
        let m = arena.message(spp__graph__init)
        (m.pointee.n_nodes, m.pointee.nodes) = arena.messages(g.nodes) { encodeNode($0, arena) }
        (m.pointee.n_inputs, m.pointee.inputs) = arena.messages(g.inputs) { encodeValue($0, arena) }
        (m.pointee.n_outputs, m.pointee.outputs) = arena.messages(g.outputs) { encodeValue($0, arena) }
        return m
    }

    private static func encodeNode(_ n: Node, _ arena: CArena) -> UnsafeMutablePointer<Spp__Node> {
        let m = arena.message(spp__node__init)
        m.pointee.name = arena.string(n.name)
        m.pointee.op = arena.string(n.op.rawValue)
        (m.pointee.n_inputs, m.pointee.inputs) = arena.strings(n.inputs)
        (m.pointee.n_outputs, m.pointee.outputs) = arena.strings(n.outputs)
        // Sorted so that the same graph always gives the same bytes.
        let attributes = n.attributes.sorted { $0.key < $1.key }
        (m.pointee.n_attributes, m.pointee.attributes) = arena.messages(attributes) { encodeAttribute($0.key, $0.value, arena) }
        return m
    }

    private static func encodeAttribute(_ name: String, _ a: Attribute, _ arena: CArena) -> UnsafeMutablePointer<Spp__Attribute> {
        let m = arena.message(spp__attribute__init)
        m.pointee.name = arena.string(name)
        switch a {
        case let .int(v):
            m.pointee.kind = SPP__ATTRIBUTE__KIND__INT
            m.pointee.i = Int64(v)
        case let .float(v):
            m.pointee.kind = SPP__ATTRIBUTE__KIND__FLOAT
            m.pointee.f = v
        case let .string(v):
            m.pointee.kind = SPP__ATTRIBUTE__KIND__STRING
            m.pointee.s = arena.bytes(v)
        case let .ints(v):
            m.pointee.kind = SPP__ATTRIBUTE__KIND__INTS
            (m.pointee.n_ints, m.pointee.ints) = arena.array(v.map { Int64($0) })
        case let .floats(v):
            m.pointee.kind = SPP__ATTRIBUTE__KIND__FLOATS
            (m.pointee.n_floats, m.pointee.floats) = arena.array(v)
        case let .strings(v):
            m.pointee.kind = SPP__ATTRIBUTE__KIND__STRINGS
            (m.pointee.n_strings, m.pointee.strings) = arena.array(v.map { arena.bytes($0) })
        case let .tensor(v):
            m.pointee.kind = SPP__ATTRIBUTE__KIND__TENSOR
            let t = arena.message(spp__inline_tensor__init)
            t.pointee.dtype = v.tensor.dtype.rawValue
            (t.pointee.n_shape, t.pointee.shape) = arena.array(v.tensor.shape.map { Int64($0) })
            t.pointee.raw_data = arena.bytes(UnsafeRawBufferPointer(start: v.tensor.rawPointer, count: v.tensor.byteCount))
            m.pointee.t = t
        }
        return m
    }

    private static func encodeValue(_ v: ValueInfo, _ arena: CArena) -> UnsafeMutablePointer<Spp__ValueInfo> {
        let m = arena.message(spp__value_info__init)
        m.pointee.name = arena.string(v.name)
        m.pointee.dtype = v.dtype?.rawValue ?? 0
        if let shape = v.shape {
            m.pointee.has_shape = 1
            (m.pointee.n_shape, m.pointee.shape) = arena.messages(shape) { d in
                let dm = arena.message(spp__dim__init)
                switch d {
                case let .fixed(n):
                    dm.pointee.value_case = SPP__DIM__VALUE_FIXED
                    dm.pointee.fixed = Int64(n)
                case let .symbol(s):
                    dm.pointee.value_case = SPP__DIM__VALUE_SYMBOL
                    dm.pointee.symbol = arena.string(s)
                }
                return dm
            }
        }
        return m
    }

    private static func encodeEntry(_ e: PlannedEntry, _ arena: CArena) -> UnsafeMutablePointer<Spp__TensorEntry> {
        let m = arena.message(spp__tensor_entry__init)
        m.pointee.name = arena.string(e.name)
        m.pointee.dtype = e.dtype.rawValue
        (m.pointee.n_shape, m.pointee.shape) = arena.array(e.shape.map { Int64($0) })
        m.pointee.offset = UInt64(e.offset)
        m.pointee.compressed_size = UInt64(e.compressedSize)
        m.pointee.raw_size = UInt64(e.rawSize)
        m.pointee.checksum = e.checksum
        switch e.codec {
        case .none: m.pointee.codec = SPP__TENSOR_ENTRY__CODEC__NONE
        case .zstd: m.pointee.codec = SPP__TENSOR_ENTRY__CODEC__ZSTD
        }
        if let encoding = e.encoding {
            m.pointee.value_dtype = encoding.valueDType.rawValue
            if let scales = encoding.scales { m.pointee.scales = arena.string(scales) }
        }
        return m
    }

    private static func encodeProvenance(_ p: Provenance, _ arena: CArena) -> UnsafeMutablePointer<Spp__Provenance> {
        let m = arena.message(spp__provenance__init)
        m.pointee.source_file = arena.string(p.sourceFile)
        m.pointee.source_size = UInt64(clamping: p.sourceSize)
        m.pointee.source_hash = p.sourceHash
        m.pointee.source_producer = arena.string(p.sourceProducer)
        m.pointee.tool_name = arena.string(p.toolName)
        m.pointee.tool_version = arena.string(p.toolVersion)
        m.pointee.created_at = Int64(p.createdAt)
        (m.pointee.n_options, m.pointee.options) = arena.messages(p.options.sorted { $0.key < $1.key }) { kv in
            let o = arena.message(spp__option__init)
            o.pointee.key = arena.string(kv.key)
            o.pointee.value = arena.string(kv.value)
            return o
        }
        (m.pointee.n_passes, m.pointee.passes) = arena.messages(p.passes) { r in
            let o = arena.message(spp__pass_record__init)
            o.pointee.name = arena.string(r.name)
            o.pointee.changes = UInt64(clamping: r.changes)
            return o
        }
        return m
    }
}
