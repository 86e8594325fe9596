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

    /// The runnable graph at `keep` (the fused nodes get their kept units, ragged
    /// per head) and the stored bytes read to build it.
    /// A model without a path loads at keep 1 only. Lookup-table chunks are left to `LookupSource`.
    /// `repair`: refit pruned feed-forward blocks where the file stores what that needs (`FeedForwardRepair`).
    public static func load(_ reader: SPPReader, keep: Double, repair: Bool = true) throws -> (graph: Graph, bytesRead: Int) {
        guard let path = reader.pruningPath ?? (keep == 1 ? PruningPath(method: "none", pairs: [], prunableParameters: 0, fixedParameters: 0) : nil) else {
            throw RuntimeError.noPruningPath
        }
        let counts = try keptUnits(path, keep: keep)
        var graph = reader.graphStructure
        let chunkNames = Set(path.pairs.flatMap { $0.tensors.flatMap(\.chunks) } + reader.lookupTables.flatMap(\.chunks))
        let whole = reader.tensorEntries.filter { !chunkNames.contains($0.name) }
        for (entry, tensor) in zip(whole, try reader.tensors(whole)) { graph.initializers[entry.name] = tensor }
        var bytesRead = whole.reduce(0) { $0 + $1.compressedSize }
        let nodeIndex = Dictionary(graph.nodes.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        for (pair, n) in zip(path.pairs, counts) {
            guard let i = nodeIndex[pair.node] else { throw RuntimeError.corruptPath("pair names node '\(pair.node)', which the graph lacks") }
            var node = graph.nodes[i]
            // Repair data: the offset beside the pair, and unit rows read only when refitting below
            // full size — instead of W2, which at full size is exact as stored.
            let offset = graph.initializers.removeValue(forKey: FeedForwardRepair.offsetName(pair.node))
            let refit = repair && offset != nil && n < pair.ranks.count
            var rows: [String: Tensor] = [:]
            for t in pair.tensors where refit ? t.role != "w2" : !FeedForwardRepair.Role.all.contains(t.role) {
                let (tensor, read) = try readRows(reader, t, count: n)
                rows[t.role] = tensor
                bytesRead += read
            }
            // Attention units are stored in rank order across heads; the kernel wants them grouped by head.
            var order = Array(0..<n)
            if pair.kind != .feedForward {
                order.sort { (pair.heads[$0], $0) < (pair.heads[$1], $1) }
                let heads = try node.int("heads", default: 0)
                var ranks = [Int](repeating: 0, count: heads)
                for u in 0..<n {
                    guard pair.heads[u] < heads else { throw RuntimeError.corruptPath("unit of node '\(pair.node)' names head \(pair.heads[u]) of \(heads)") }
                    ranks[pair.heads[u]] += 1
                }
                node.attributes[pair.kind == .queryKey ? "qk_ranks" : "vo_ranks"] = .ints(ranks)
            }
            if refit, let offset {
                guard let z = rows[FeedForwardRepair.Role.whitenedW2], let l = rows[FeedForwardRepair.Role.gramFactor],
                      let mean = rows[FeedForwardRepair.Role.mean], let b2 = graph.initializers[node.inputs[4]] else {
                    throw RuntimeError.corruptPath("pair of node '\(pair.node)' lacks its repair data")
                }
                let (w2, bias) = try FeedForwardRepair.refit(whitenedW2: z, gramFactor: l, mean: mean, offset: offset, b2: b2)
                rows["w2"] = w2
                graph.initializers[node.inputs[4]] = bias
            }
            for (role, input, transpose) in roles(pair.kind) {
                guard let t = rows[role] else { throw RuntimeError.corruptPath("pair of node '\(pair.node)' lacks its '\(role)' weights") }
                let gathered = try DataMovement.gather(t, indices: Tensor(order.map(Int64.init), shape: [n]), axis: 0)
                let name = node.inputs[input]
                graph.initializers[name] = transpose ? try DataMovement.transpose(gathered, perm: [1, 0]) : gathered
            }
            graph.nodes[i] = node
        }
        return (graph, bytesRead)
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

    /// The first `count` rows of a unit tensor, reading only the chunks that hold them.
    static func readRows(_ reader: SPPReader, _ t: PrunablePair.UnitTensor, count: Int) throws -> (Tensor, Int) {
        var parts: [Tensor] = []
        var have = 0, bytes = 0
        for (name, rows) in zip(t.chunks, t.chunkRows) where have < count {
            guard let entry = reader.entry(named: name) else { throw RuntimeError.corruptPath("chunk '\(name)' is not in the file") }
            let chunk = try reader.tensor(entry)
            bytes += entry.compressedSize
            guard chunk.rank >= 1, chunk.shape[0] == rows else { throw RuntimeError.corruptPath("chunk '\(name)' does not hold \(rows) rows") }
            let take = min(rows, count - have)
            parts.append(take == rows ? chunk : try DataMovement.slice(chunk, starts: [0], ends: [take], axes: [0], steps: [1]))
            have += take
        }
        guard have == count else { throw RuntimeError.corruptPath("unit tensor '\(t.role)' holds \(have) rows, \(count) needed") }
        if parts.count == 1 { return (parts[0], bytes) }
        if parts.isEmpty {
            // Nothing kept: an empty tensor with the row width of the stored chunks.
            let first = reader.entry(named: t.chunks.first ?? "").map { Array($0.shape.dropFirst()) } ?? []
            return (Tensor(dtype: .float32, shape: [0] + first), 0)
        }
        return (try DataMovement.concat(parts, axis: 0), bytes)
    }
}
