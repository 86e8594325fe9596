import SPPCore
import SPPFormat
import SPPGraph
import SPPKernels

/// Builds the graph of a pruned model at a keep ratio chosen at load time.
///
/// The path ranks every prunable unit globally; keep R retains the shortest
/// prefix of that order whose parameters reach R of all prunable parameters.
/// Each pair stores its units unit-major in rank order, in row chunks, so the
/// kept units are a prefix of each pair's rows and only the chunks holding
/// them are read and decompressed.
public enum PathLoader {
    /// Number of units each pair keeps at `keep`, in pair order.
    public static func keptUnits(_ path: PruningPath, keep: Double) throws -> [Int] {
        guard keep > 0, keep <= 1 else { throw RuntimeError.invalidKeep(keep) }
        let total = path.pairs.reduce(0) { $0 + $1.ranks.count }
        var paramsAtRank = [Int](repeating: 0, count: total)
        for pair in path.pairs {
            for r in pair.ranks {
                guard r >= 0, r < total, paramsAtRank[r] == 0 else { throw RuntimeError.corruptPath("rank \(r) is repeated or out of range") }
                paramsAtRank[r] = pair.parametersPerUnit
            }
        }
        let target = keep * Double(paramsAtRank.reduce(0, +))
        var cutoff = 0, kept = 0
        while cutoff < total && Double(kept) < target - 0.5 {
            kept += paramsAtRank[cutoff]
            cutoff += 1
        }
        return path.pairs.map { pair in pair.ranks.prefix { $0 < cutoff }.count }
    }

    /// What `load` made.
    public struct Loaded {
        /// The runnable graph at the keep level: the fused nodes get their kept
        /// units (ragged per head); constants are float32 values, except the GEMM
        /// weights in `int8Weights` and `packed`, which it lacks.
        public var graph: Graph
        /// GEMM weights the file stores in int8 outside the pairs, kept so when loading for int8 weights.
        public var int8Weights: [String: Int8Weight]
        /// The pairs' int8 GEMM weights, packed for the int8 kernels as they were read,
        /// refit W2s quantized after their refit, and float32 `[Wq | Wk | Wv]` read side by side.
        public var packed: PackedWeights
        /// Stored (compressed) bytes read, and the bytes they decompressed to.
        public var bytesRead: Int
        public var bytesDecoded: Int
        /// Seconds spent planning the reads (`plan`), reading and decoding them, packing int8 weights
        /// and refitting feed-forward blocks (`decode`), and putting the weights in the graph (`assemble`).
        public var stages: [(stage: String, seconds: Double)]
    }

    /// One unit tensor of one pair (its index in the path), as packing plans them.
    struct PairRole: Hashable {
        let pair: Int
        let role: String
    }

    /// The roles of a pair whose rows are GEMM weights (the rest are biases and repair data).
    static let weightRoles: Set<String> = ["wq", "wk", "wv", "wo", "w1", "w2"]

    /// Loads the graph at `keep`, reading only the chunks the kept units need.
    /// A model without a path loads at keep 1 only. Lookup-table chunks are left to `LookupSource`.
    /// `repair`: refit pruned feed-forward blocks where the file stores what that needs (`FeedForwardRepair`).
    /// `weights`: with `.int8`, weights the file stores in int8 stay int8: the pairs' packed
    /// for the int8 kernels as they are read (`packed`; rows that cannot be are read as
    /// float32 and quantized by the program), whole tensors as stored (`int8Weights`),
    /// and a refit W2 is quantized here as the program would; otherwise every stored
    /// precision is expanded to float32.
    /// `threads`: threads that read, decompress and pack (0: one per core).
    /// `joinQueryKeyValue`: float32 Wq, Wk and Wv are read side by side into the matrix
    /// the float32 attention kernel takes (`packed.float32QueryKeyValue`), not into the graph.
    public static func load(_ reader: SPPReader, keep: Double, repair: Bool = true, weights: WeightPrecision = .fp32,
                            threads: Int = 0, joinQueryKeyValue: Bool = false) throws -> Loaded {
        guard let path = reader.pruningPath ?? (keep == 1 ? PruningPath(method: "none", pairs: [], prunableParameters: 0, fixedParameters: 0) : nil) else {
            throw RuntimeError.noPruningPath
        }
        var clock = StageClock()
        let counts = try keptUnits(path, keep: keep)
        var graph = reader.graphStructure
        var int8Weights: [String: Int8Weight] = [:]
        let chunkNames = Set(path.pairs.flatMap { $0.tensors.flatMap(\.chunks) } + reader.lookupTables.flatMap(\.chunks))
        // The repair's offsets are read with its rows, only when refitting.
        let repairNames = Set(path.pairs.filter { $0.kind == .feedForward }.map { FeedForwardRepair.offsetName($0.node) })

        // Plan every read: the kept rows of each pair's unit tensors, the refits' data, whole constants.
        let nodeIndex = Dictionary(graph.nodes.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        // Each refit's tensors and the entries its task reads (the kept rows' chunks, the offset, then b2, which it replaces).
        var refits: [(pair: Int, tensors: [PrunablePair.UnitTensor], offset: TensorEntryInfo, b2: TensorEntryInfo, entries: [TensorEntryInfo])] = []
        var pairRows: [[String: UnitRows]] = []
        for (p, (pair, n)) in zip(path.pairs, counts).enumerated() {
            guard let i = nodeIndex[pair.node] else { throw RuntimeError.corruptPath("pair names node '\(pair.node)', which the graph lacks") }
            // Attention units are stored in rank order across heads; the kernel wants them grouped by head.
            var order: [Int64]? = nil
            if pair.kind != .feedForward {
                let heads = try graph.nodes[i].int("heads", default: 0)
                var ranks = [Int](repeating: 0, count: heads)
                for u in 0..<n {
                    guard pair.heads[u] < heads else { throw RuntimeError.corruptPath("unit of node '\(pair.node)' names head \(pair.heads[u]) of \(heads)") }
                    ranks[pair.heads[u]] += 1
                }
                graph.nodes[i].attributes[pair.kind == .queryKey ? "qk_ranks" : "vo_ranks"] = .ints(ranks)
                order = (0..<n).sorted { (pair.heads[$0], $0) < (pair.heads[$1], $1) }.map(Int64.init)
            }
            // Repair data is read only when refitting below full size — instead of W2, which at full size is exact as stored.
            let offset = reader.entry(named: FeedForwardRepair.offsetName(pair.node))
            let refit = repair && offset != nil && n < pair.ranks.count
            let layouts = Dictionary(roles(pair.kind).map { ($0.0, UnitRows.Layout(order: order, transpose: $0.2)) }, uniquingKeysWith: { a, _ in a })
            var rows: [String: UnitRows] = [:]
            // Only the node's own roles: the repair's rows (and any of other versions) are read below or not at all.
            for t in pair.tensors where layouts[t.role] != nil && !(refit && t.role == "w2") {
                rows[t.role] = try UnitRows(reader, t, count: n, int8: weights == .int8 && weightRoles.contains(t.role), layout: layouts[t.role])
            }
            if refit, let offset {
                let tensors = pair.tensors.filter { FeedForwardRepair.Role.all.contains($0.role) }
                let missing = FeedForwardRepair.Role.all.subtracting(tensors.map(\.role)).sorted()
                guard missing.isEmpty else {
                    throw RuntimeError.missingRepairData(node: pair.node, missing: missing,
                                                         retired: pair.tensors.map(\.role).filter(FeedForwardRepair.Role.retired.contains).sorted())
                }
                let node = graph.nodes[i]
                guard node.inputs.count > 4, let b2 = reader.entry(named: node.inputs[4]) else {
                    throw RuntimeError.corruptPath("FFN node '\(pair.node)' lacks its b2")
                }
                let entries = try tensors.flatMap { try UnitRows.parts(reader, $0, count: n).map(\.entry) } + [offset, b2]
                refits.append((p, tensors, offset, b2, entries))
            }
            pairRows.append(rows)
        }
        var packedWeights = PackedWeights()
        var pairsOfNode: [String: [Int]] = [:]
        for (p, pair) in path.pairs.enumerated() { pairsOfNode[pair.node, default: []].append(p) }
        let nodesInOrder = pairsOfNode.sorted { $0.value[0] < $1.value[0] }
        // Float32 Wq, Wk and Wv are read into one [Wq | Wk | Wv] per node, the matrix the kernel's
        // single projection takes: joining them after reading wrote them twice, the second time into
        // fresh memory (4.5 ms of a 29 ms load at keep 1).
        if joinQueryKeyValue && weights != .int8 {
            for (node, pairs) in nodesInOrder {
                // Float32 (not an int8 run) and transposed (their roles are), so only the widths can disagree.
                let parts = ["wq", "wk", "wv"].compactMap { role in pairs.first { pairRows[$0][role] != nil }.map { (pair: $0, role: role) } }
                guard parts.count == 3 else { continue }
                let rows = parts.map { pairRows[$0.pair][$0.role]! }
                guard rows.allSatisfy({ $0.width == rows[0].width }) else { continue }
                let matrix = Tensor(dtype: .float32, shape: [rows[0].width, rows.reduce(0) { $0 + $1.units }])
                var offset = 0
                let target = graph.nodes[nodeIndex[node]!]
                for (part, r) in zip(parts, rows) {
                    pairRows[part.pair][part.role] = r.into(.init(matrix: matrix, offset: offset))
                    packedWeights.shapes[try input(of: target, path.pairs[part.pair].kind, part.role)] = [r.width, r.units]
                    offset += r.units
                }
                packedWeights.float32QueryKeyValue[node] = matrix
            }
        }

        // Int8 rows are packed for the int8 kernels as they are read (`Int8Pack`): an attention
        // node's [Wq | Wk | Wv] as one matrix, Wo, W1 and W2 each alone. Int8 rows that cannot
        // be so (scales across the wrong axis, a projection of [Wq | Wk | Wv] not in int8) are
        // read as float32 values, which the program quantizes.
        var packs: [(pack: Int8Pack, node: Int, roles: [PairRole])] = []
        for (node, pairs) in nodesInOrder {
            let placed = pairs.flatMap { p in pairRows[p].keys.map { PairRole(pair: p, role: $0) } }
            func pack(_ roles: [String], unitMajor: Bool) {
                let found = roles.compactMap { r in placed.first { $0.role == r } }
                let rows = found.map { pairRows[$0.pair][$0.role]! }
                guard found.count == roles.count, rows.allSatisfy({ Int8Pack.accepts($0, unitMajor: unitMajor) }) else { return }
                // Inner sizes int32 sums could overflow run in float32 (the program's rule).
                guard (unitMajor ? rows[0].width : rows.reduce(0) { $0 + $1.units }) <= QuantizedMatrix.maximumRows else { return }
                packs.append((Int8Pack(node: node, parts: rows, unitMajor: unitMajor), nodeIndex[node]!, found))
            }
            pack(["wq", "wk", "wv"], unitMajor: true)
            pack(["wo"], unitMajor: false)
            pack(["w1"], unitMajor: true)
            pack(["w2"], unitMajor: false)
        }
        // Whole constants, but for the b2 of refit blocks.
        let refitBiases = Set(refits.map(\.b2.name))
        let whole = reader.tensorEntries.filter {
            !chunkNames.contains($0.name) && !reader.scalesNames.contains($0.name) && !repairNames.contains($0.name) && !refitBiases.contains($0.name)
        }
        let wholeInt8 = whole.map { weights == .int8 && $0.dtype == .int8 && $0.encoding != nil }
        let wholeTensors = zip(whole, wholeInt8).map { e, int8 in Tensor(dtype: int8 ? .int8 : e.valueDType, shape: e.shape) }
        var tasks = zip(whole, zip(wholeTensors, wholeInt8)).map { e, t in
            TensorDecoder.Task(TensorDecoder.Job(entry: e, rows: TensorDecoder.rowCount(e), asValue: !t.1, destination: t.0.rawPointer))
        }
        let packedRoles = Set(packs.flatMap(\.roles))
        for p in pairRows.indices {
            // In the pair's order, so that the first failing read (the error reported) does not depend on hashing.
            for t in path.pairs[p].tensors where !packedRoles.contains(PairRole(pair: p, role: t.role)) {
                guard let rows = pairRows[p][t.role] else { continue }
                let values = rows.int8 ? try UnitRows(reader, t, count: rows.count, int8: false, layout: rows.layout) : rows
                pairRows[p][t.role] = values
                tasks.append(values.task)
            }
        }
        let packed = UnsafeMutableBufferPointer<QuantizedMatrix?>.allocate(capacity: packs.count)
        packed.initialize(repeating: nil)
        defer {
            _ = packed.deinitialize()
            packed.deallocate()
        }
        tasks += packs.enumerated().map { k, p in p.pack.task(into: packed.baseAddress! + k) }
        // Refits, a block per task: its repair data are read, solved against and let go, so
        // that only a block's (per thread) is in memory at a time. One slot per pair, each
        // written by one task.
        let refitted = UnsafeMutableBufferPointer<Refitted?>.allocate(capacity: path.pairs.count)
        refitted.initialize(repeating: nil)
        defer {
            _ = refitted.deinitialize()
            refitted.deallocate()
        }
        // A refit's data (~6 MB at keep 0.5 of a 384×1536 block) come from buffers the
        // refits share: fresh memory for each cost a page fault per 4 KiB.
        let refitBuffers = BufferPool()
        defer { refitBuffers.releaseFree() }
        let refitTasks = refits.map { p, tensors, offsetEntry, b2Entry, entries in
            let n = counts[p]
            // Refits lead: the longest tasks (reads, then a product of ~k²·d/2 multiply-adds), the reads fill in around them.
            return TensorDecoder.Task(entries: entries, order: .lead) { decoder, buffers in
                func readWhole(_ e: TensorEntryInfo) throws -> Tensor {
                    let t = Tensor(dtype: e.valueDType, shape: e.shape)
                    try decoder.decode(TensorDecoder.Job(entry: e, rows: TensorDecoder.rowCount(e), asValue: true, destination: t.rawPointer),
                                       buffers: buffers)
                    return t
                }
                func readRows(_ t: PrunablePair.UnitTensor) throws -> Tensor {
                    let unit = try UnitRows(reader, t, count: n, int8: false, layout: nil)
                    try unit.read(decoder, buffers)
                    return unit.values!
                }
                // Present: checked when planning.
                func tensor(_ role: String) -> PrunablePair.UnitTensor { tensors.first { $0.role == role }! }
                // W is written over Z (the refit multiplies Z's packed copy). A float32 W is kept, so its Z
                // is read into memory of its own (a shared buffer may be larger, its pages resident).
                let keepsFloat = weights != .int8 || n > QuantizedMatrix.maximumRows
                let z = try BufferPool.$current.withValue(keepsFloat ? nil : refitBuffers) { try readRows(tensor(FeedForwardRepair.Role.whitenedW2)) }
                let (w2, bias) = try BufferPool.$current.withValue(refitBuffers) {
                    let factor = try inverseFactor(reader, tensor(FeedForwardRepair.Role.inverseFactor), count: n,
                                                   diagonal: try readRows(tensor(FeedForwardRepair.Role.inverseDiagonal)), decoder, buffers)
                    return try FeedForwardRepair.refit(whitenedW2: z, inverseFactor: factor, mean: try readRows(tensor(FeedForwardRepair.Role.mean)),
                                                       offset: try readWhole(offsetEntry), b2: try readWhole(b2Entry), into: z)
                }
                guard !keepsFloat else {
                    refitted[p] = Refitted(w2: .float(w2), b2: bias)
                    return
                }
                // Int8 runs quantize it here, on the load's threads, as the program would.
                do {
                    refitted[p] = Refitted(w2: .int8(try QuantizedMatrix(quantizing: w2)), b2: bias)
                } catch let e as KernelError {
                    throw RuntimeError.corruptPath("refit W2 of FFN node '\(path.pairs[p].node)': \(e.description)")
                }
            }
        }

        clock.lap("plan")
        var decoder = TensorDecoder(reader: reader, threads: threads)
        try decoder.prepare(reading: tasks.flatMap(\.entries) + refits.flatMap(\.entries))
        try decoder.run(tasks + refitTasks)
        clock.lap("decode")

        for (e, (tensor, int8)) in zip(whole, zip(wholeTensors, wholeInt8)) {
            if int8, let scales = e.encoding?.scales.flatMap({ decoder.scales[$0] }) {
                int8Weights[e.name] = try Int8Weight(values: tensor, scales: scales)
            } else {
                graph.initializers[e.name] = tensor
            }
        }
        for (k, (pack, i, placed)) in packs.enumerated() {
            let node = graph.nodes[i]
            guard let matrix = packed[k] else { throw RuntimeError.corruptPath("int8 weights of node '\(node.name)' were not read") }
            let inputs = try placed.map { try input(of: node, path.pairs[$0.pair].kind, $0.role) }
            if inputs.count == 1 { packedWeights.int8Matrices[inputs[0]] = matrix } else { packedWeights.int8QueryKeyValue[node.name] = matrix }
            for (part, name) in zip(pack.parts, inputs) {
                packedWeights.shapes[name] = pack.unitMajor ? [part.width, part.units] : [part.units, part.width]
            }
        }
        for (p, pair) in path.pairs.enumerated() {
            let node = graph.nodes[nodeIndex[pair.node]!]
            var values = pairRows[p].compactMapValues(\.values)
            if let refit = refitted[p] {
                // Feed-forward units keep their order, so the refit W2 is already in the node's layout.
                switch refit.w2 {
                case let .float(w2):
                    values["w2"] = w2
                case let .int8(w2):
                    packedWeights.int8Matrices[node.inputs[3]] = w2
                    packedWeights.shapes[node.inputs[3]] = [w2.rows, w2.columns]
                }
                graph.initializers[node.inputs[4]] = refit.b2
            }
            for (role, _, _) in roles(pair.kind) {
                let name = try input(of: node, pair.kind, role)
                if let t = values[role] {
                    graph.initializers[name] = t
                } else if packedWeights.shapes[name] == nil {
                    throw RuntimeError.corruptPath("pair of node '\(pair.node)' lacks its '\(role)' weights")
                }
            }
        }
        clock.lap("assemble")
        return Loaded(graph: graph, int8Weights: int8Weights, packed: packedWeights, bytesRead: decoder.bytesRead,
                      bytesDecoded: decoder.bytesDecoded, stages: clock.stages)
    }

    /// A refit feed-forward block: its W2 (float32, or int8 for int8 runs) and b2.
    struct Refitted {
        enum W2 {
            case float(Tensor)
            case int8(QuantizedMatrix)
        }
        let w2: W2
        let b2: Tensor
    }

    /// M_SS of the repair (see `FeedForwardRepair`): the first `k` rows of the int8 chunks,
    /// rows [a, b) stored [b − a, b], into int8 [k, k] (the entries below the diagonal
    /// written), their row scales, and `diagonal`.
    static func inverseFactor(_ reader: SPPReader, _ t: PrunablePair.UnitTensor, count k: Int, diagonal: Tensor,
                              _ decoder: TensorDecoder, _ buffers: FrameBuffers) throws -> FeedForwardRepair.LowerFactor {
        guard diagonal.shape == [k], diagonal.dtype == .float32 else {
            throw RuntimeError.corruptPath("repair factor diagonal \(diagonal.shape) does not fit \(k) kept units")
        }
        let values = Tensor(dtype: .int8, shape: [k, k]), rowScales = Tensor(dtype: .float32, shape: [k])
        let pq = values.pointer(as: Int8.self), ps = rowScales.pointer(as: Float.self)
        var start = 0
        for (e, take) in try UnitRows.parts(reader, t, count: k) {
            let rows = e.shape[0]
            guard e.shape == [rows, start + rows], e.dtype == .int8, let scales = e.encoding?.scales.flatMap({ decoder.scales[$0] }),
                  ValueEncoding.scaleAxis(scalesShape: scales.shape, for: e.shape) == 0, scales.dtype == .float32 else {
                throw RuntimeError.corruptPath("repair factor chunk '\(e.name)' is \(e.dtype) \(Tensor.describe(e.shape)), not int8 rows of its \(start + rows) leading columns with a scale per row")
            }
            let width = start + rows
            let src = try reader.decode(e, buffers: buffers).assumingMemoryBound(to: Int8.self)
            // Columns ≥ k of a kept row lie above the diagonal: not part of M_SS.
            let used = min(width, k)
            for r in 0..<take { (pq + (start + r) * k).update(from: src + r * width, count: used) }
            (ps + start).update(from: scales.pointer(as: Float.self), count: take)
            start += take
        }
        return FeedForwardRepair.LowerFactor(values: values, rowScales: rowScales, diagonal: diagonal)
    }

    /// The name of the input of `node` that a pair of `kind` stores as `role`.
    static func input(of node: Node, _ kind: PrunablePair.Kind, _ role: String) throws -> String {
        guard let i = roles(kind).first(where: { $0.0 == role })?.1, i < node.inputs.count else {
            throw RuntimeError.corruptPath("pair of node '\(node.name)' stores '\(role)' for an input the node lacks")
        }
        return node.inputs[i]
    }

    /// Which node input each stored role becomes, and whether it is stored transposed
    /// (unit-major rows that the kernel wants as columns).
    public static func roles(_ kind: PrunablePair.Kind) -> [(String, Int, Bool)] {
        switch kind {
        case .queryKey: return [("wq", 1, true), ("bq", 2, false), ("wk", 3, true), ("bk", 4, false)]
        case .valueOutput: return [("wv", 5, true), ("bv", 6, false), ("wo", 7, false)]
        case .feedForward: return [("w1", 1, true), ("b1", 2, false), ("w2", 3, false)]
        }
    }
}
