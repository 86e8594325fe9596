import CProtobuf
import SPPProtobuf

/// Encoding and decoding of the pruning path and the cost table.
extension HeaderEncoder {
    static func encodePath(_ p: PruningPath, _ arena: CArena) -> UnsafeMutablePointer<Spp__PruningPath> {
        let m = arena.message(spp__pruning_path__init)
        m.pointee.method = arena.string(p.method)
        m.pointee.prunable_params = UInt64(clamping: p.prunableParameters)
        m.pointee.fixed_params = UInt64(clamping: p.fixedParameters)
        (m.pointee.n_pairs, m.pointee.pairs) = arena.messages(p.pairs) { pair in
            let q = arena.message(spp__prunable_pair__init)
            q.pointee.node = arena.string(pair.node)
            switch pair.kind {
            case .queryKey: q.pointee.kind = SPP__PRUNABLE_PAIR__KIND__QUERY_KEY
            case .valueOutput: q.pointee.kind = SPP__PRUNABLE_PAIR__KIND__VALUE_OUTPUT
            case .feedForward: q.pointee.kind = SPP__PRUNABLE_PAIR__KIND__FEED_FORWARD
            }
            (q.pointee.n_heads, q.pointee.heads) = arena.array(pair.heads.map { UInt32(clamping: $0) })
            (q.pointee.n_ranks, q.pointee.ranks) = arena.array(pair.ranks.map { UInt32(clamping: $0) })
            q.pointee.params_per_unit = UInt64(clamping: pair.parametersPerUnit)
            (q.pointee.n_tensors, q.pointee.tensors) = arena.messages(pair.tensors) { t in
                let u = arena.message(spp__unit_tensor__init)
                u.pointee.role = arena.string(t.role)
                (u.pointee.n_chunks, u.pointee.chunks) = arena.strings(t.chunks)
                (u.pointee.n_chunk_rows, u.pointee.chunk_rows) = arena.array(t.chunkRows.map { UInt64(clamping: $0) })
                return u
            }
            return q
        }
        return m
    }

    static func encodeLookupTable(_ t: LookupTable, _ arena: CArena) -> UnsafeMutablePointer<Spp__LookupTable> {
        let m = arena.message(spp__lookup_table__init)
        m.pointee.name = arena.string(t.name)
        (m.pointee.n_chunks, m.pointee.chunks) = arena.strings(t.chunks)
        (m.pointee.n_chunk_rows, m.pointee.chunk_rows) = arena.array(t.chunkRows.map { UInt64(clamping: $0) })
        return m
    }

    static func encodeCost(_ c: CostLevel, _ arena: CArena) -> UnsafeMutablePointer<Spp__CostLevel> {
        let m = arena.message(spp__cost_level__init)
        m.pointee.keep = c.keep
        m.pointee.parameters = UInt64(clamping: c.parameters)
        m.pointee.flops = UInt64(clamping: c.flops)
        m.pointee.weight_bytes = UInt64(clamping: c.weightBytes)
        m.pointee.reference_length = UInt32(clamping: c.referenceLength)
        return m
    }
}

extension HeaderDecoder {
    func decodePath(_ p: UnsafePointer<Spp__PruningPath>) throws -> PruningPath {
        var pairs: [PrunablePair] = []
        for i in 0..<p.pointee.n_pairs {
            guard let q = p.pointee.pairs?[i] else { continue }
            let kind: PrunablePair.Kind
            switch q.pointee.kind {
            case SPP__PRUNABLE_PAIR__KIND__QUERY_KEY: kind = .queryKey
            case SPP__PRUNABLE_PAIR__KIND__VALUE_OUTPUT: kind = .valueOutput
            case SPP__PRUNABLE_PAIR__KIND__FEED_FORWARD: kind = .feedForward
            default: throw FormatError.headerInconsistent(path: path, reason: "pruning pair \(i) has unknown kind \(q.pointee.kind.rawValue)")
            }
            let node = q.pointee.node.map { String(cString: $0) } ?? ""
            let ranks = Self.values(q.pointee.ranks, q.pointee.n_ranks).map { Int($0) }
            let heads = Self.values(q.pointee.heads, q.pointee.n_heads).map { Int($0) }
            guard heads.isEmpty || heads.count == ranks.count else {
                throw FormatError.headerInconsistent(path: path, reason: "pruning pair of node '\(node)' has \(heads.count) heads for \(ranks.count) units")
            }
            var tensors: [PrunablePair.UnitTensor] = []
            for k in 0..<q.pointee.n_tensors {
                guard let u = q.pointee.tensors?[k] else { continue }
                let chunks = (0..<u.pointee.n_chunks).map { k in u.pointee.chunks?[k].map { String(cString: $0) } ?? "" }
                let rows = Self.values(u.pointee.chunk_rows, u.pointee.n_chunk_rows).map { Int(clamping: $0) }
                guard chunks.count == rows.count, rows.reduce(0, +) == ranks.count else {
                    throw FormatError.headerInconsistent(path: path, reason: "unit tensor \(k) of node '\(node)' has chunks that do not cover its \(ranks.count) units")
                }
                tensors.append(.init(role: u.pointee.role.map { String(cString: $0) } ?? "", chunks: chunks, chunkRows: rows))
            }
            pairs.append(PrunablePair(node: node, kind: kind, heads: heads, ranks: ranks,
                                      parametersPerUnit: Int(clamping: q.pointee.params_per_unit), tensors: tensors))
        }
        return PruningPath(method: p.pointee.method.map { String(cString: $0) } ?? "", pairs: pairs,
                           prunableParameters: Int(clamping: p.pointee.prunable_params),
                           fixedParameters: Int(clamping: p.pointee.fixed_params))
    }

    func decodeLookupTable(_ m: UnsafePointer<Spp__LookupTable>) throws -> LookupTable {
        let name = m.pointee.name.map { String(cString: $0) } ?? ""
        let chunks = (0..<m.pointee.n_chunks).map { k in m.pointee.chunks?[k].map { String(cString: $0) } ?? "" }
        let rows = Self.values(m.pointee.chunk_rows, m.pointee.n_chunk_rows).map { Int(clamping: $0) }
        guard chunks.count == rows.count, !chunks.isEmpty else {
            throw FormatError.headerInconsistent(path: path, reason: "lookup table '\(name)' has \(chunks.count) chunks and \(rows.count) row counts")
        }
        return LookupTable(name: name, chunks: chunks, chunkRows: rows)
    }

    func decodeCost(_ c: UnsafePointer<Spp__CostLevel>) -> CostLevel {
        CostLevel(keep: c.pointee.keep, parameters: Int(clamping: c.pointee.parameters), flops: Int(clamping: c.pointee.flops),
                  weightBytes: Int(clamping: c.pointee.weight_bytes), referenceLength: Int(c.pointee.reference_length))
    }

    static func values<T>(_ p: UnsafeMutablePointer<T>?, _ count: Int) -> [T] {
        guard let p, count > 0 else { return [] }
        return Array(UnsafeBufferPointer(start: p, count: count))
    }
}
