import SPPCore
import SPPFormat
import SPPGraph
import SPPKernels
import SPPRuntime

/// Importance of every prunable unit, from a pruning method. Higher is kept longer.
public struct UnitScores: Sendable {
    /// node → head → score of each direction (in the node's current column order).
    public var queryKey: [String: [[Double]]] = [:]
    public var valueOutput: [String: [[Double]]] = [:]
    /// node → score of each hidden neuron.
    public var feedForward: [String: [Double]] = [:]
    public init() {}

    /// `flat`, the scores of a node's directions head after head, split by head (`ranks`).
    static func perHead<C: Collection<Double>>(_ flat: C, ranks: [Int]) -> [[Double]] {
        var rest = flat[...]
        return ranks.map { r in
            defer { rest = rest.dropFirst(r) }
            return Array(rest.prefix(r))
        }
    }
}

/// Turns unit scores into the stored path: a global rank for every unit, each
/// pair's weights unit-major in rank order in row chunks (so any keep level
/// reads a prefix), the fused nodes' original weight tensors replaced by those
/// chunks, and the cost table.
public enum PathBuilder {
    public struct Result {
        public var graph: Graph
        public var path: PruningPath
        public var costTable: [CostLevel]
        /// Tensors of `graph` stored below float32 from the start (the repair's int8 inverse factor).
        public var encodings: [String: ValueEncoding] = [:]
    }

    struct Unit {
        let pair: Int, index: Int, score: Double
    }

    struct PairLayout {
        let node: Node
        let kind: PrunablePair.Kind
        let heads: [Int]
        let parametersPerUnit: Int
        /// role → unit-major rows [units, width]
        let rows: [(String, Tensor)]
    }

    /// Chunks per pair: a keep level reads whole chunks, so on average half a chunk per
    /// pair more than it keeps. all-MiniLM-L6-v2 at keep 0.5 (svd): 8 chunks read 58.5% of
    /// keep 1's tensor bytes, 32 read 52.6% (the ideal is 51%) for ~2,000 more entries.
    public static let chunksPerPair = 32

    /// `repair`: per FFN node, calibration statistics of its hidden activations; with them
    /// the pair also stores what the load-time least-squares refit of W2 needs (see `FeedForwardRepair`).
    public static func build(_ graph: Graph, scores: UnitScores, method: String, repair: [String: BlockStatistics.FeedForwardStats] = [:],
                             ridge: Double = FeedForwardRepair.defaultRidge, referenceLength: Int = 128) throws -> Result {
        var g = graph
        var pairs: [PairLayout] = []
        var units: [Unit] = []
        func add(_ layout: PairLayout, _ s: [Double]) {
            for (i, v) in s.enumerated() { units.append(Unit(pair: pairs.count, index: i, score: v)) }
            pairs.append(layout)
        }
        for node in g.nodes {
            switch node.op {
            case .attention:
                let w = try AttentionWeights(node, g)
                let d = w.wq.rows
                let qkHeads = (0..<w.heads).flatMap { h in [Int](repeating: h, count: w.qkRanks[h]) }
                let voHeads = (0..<w.heads).flatMap { h in [Int](repeating: h, count: w.voRanks[h]) }
                let qk = (scores.queryKey[node.name] ?? []).flatMap { $0 }
                let vo = (scores.valueOutput[node.name] ?? []).flatMap { $0 }
                guard qk.count == qkHeads.count, vo.count == voHeads.count else {
                    throw GraphError.shapeMismatch(node: node.name, op: node.op.rawValue, reason: "unit scores do not cover every direction")
                }
                add(PairLayout(node: node, kind: .queryKey, heads: qkHeads, parametersPerUnit: 2 * (d + 1), rows: [
                    ("wq", try transposed(g.initializers[node.inputs[1]]!)), ("bq", g.initializers[node.inputs[2]]!),
                    ("wk", try transposed(g.initializers[node.inputs[3]]!)), ("bk", g.initializers[node.inputs[4]]!)]), qk)
                add(PairLayout(node: node, kind: .valueOutput, heads: voHeads, parametersPerUnit: 2 * d + 1, rows: [
                    ("wv", try transposed(g.initializers[node.inputs[5]]!)), ("bv", g.initializers[node.inputs[6]]!),
                    ("wo", g.initializers[node.inputs[7]]!)]), vo)
            case .feedForward:
                guard let w1 = g.initializers[node.inputs[1]], let b1 = g.initializers[node.inputs[2]], let w2 = g.initializers[node.inputs[3]] else {
                    throw GraphError.badAttribute(node: node.name, op: node.op.rawValue, attribute: "inputs", reason: "weights must be constants")
                }
                let s = scores.feedForward[node.name] ?? []
                guard s.count == w1.shape[1] else {
                    throw GraphError.shapeMismatch(node: node.name, op: node.op.rawValue, reason: "unit scores do not cover every neuron")
                }
                add(PairLayout(node: node, kind: .feedForward, heads: [], parametersPerUnit: 2 * w1.shape[0] + 1,
                               rows: [("w1", try transposed(w1)), ("b1", b1), ("w2", w2)]), s)
            default: continue
            }
        }
        // One global order; ties keep model order so the path is deterministic.
        let order = units.indices.sorted { units[$0].score != units[$1].score ? units[$0].score > units[$1].score : $0 < $1 }
        var rank = [Int](repeating: 0, count: units.count)
        for (r, u) in order.enumerated() { rank[u] = r }
        var byPair = [[(index: Int, rank: Int)]](repeating: [], count: pairs.count)
        for (u, unit) in units.enumerated() { byPair[unit.pair].append((unit.index, rank[u])) }

        var stored: [PrunablePair] = []
        var replaced = Set<String>()
        var encodings: [String: ValueEncoding] = [:]
        for (p, layout) in pairs.enumerated() {
            let members = byPair[p].sorted { $0.rank < $1.rank }
            let perm = Tensor(members.map { Int64($0.index) }, shape: [members.count])
            var tensors: [PrunablePair.UnitTensor] = []
            var roleRows: [(String, Tensor)] = []
            for (role, rows) in layout.rows { roleRows.append((role, try DataMovement.gather(rows, indices: perm, axis: 0))) }
            if layout.kind == .feedForward, let stats = repair[layout.node.name] {
                let w2 = roleRows.first { $0.0 == "w2" }!.1
                let data = try FeedForwardRepair.make(w2: w2, stats: stats, order: members.map(\.index), ridge: ridge)
                roleRows += [(FeedForwardRepair.Role.whitenedW2, data.whitenedW2), (FeedForwardRepair.Role.inverseDiagonal, data.inverseDiagonal),
                             (FeedForwardRepair.Role.mean, data.mean)]
                g.initializers[FeedForwardRepair.offsetName(layout.node.name)] = data.offset
                let prefix = "\(layout.node.name)/\(layout.kind.rawValue)/\(FeedForwardRepair.Role.inverseFactor)"
                let (names, counts) = try triangularChunks(data.inverseFactor, scales: data.inverseScales, prefix: prefix, into: &g, encodings: &encodings)
                tensors.append(.init(role: FeedForwardRepair.Role.inverseFactor, chunks: names, chunkRows: counts))
            }
            for (role, sorted) in roleRows {
                let (names, counts) = chunk(sorted, prefix: "\(layout.node.name)/\(layout.kind.rawValue)/\(role)", into: &g)
                tensors.append(.init(role: role, chunks: names, chunkRows: counts))
            }
            for (_, input, _) in PathLoader.roles(layout.kind) { replaced.insert(layout.node.inputs[input]) }
            stored.append(PrunablePair(node: layout.node.name, kind: layout.kind,
                                       heads: layout.heads.isEmpty ? [] : members.map { layout.heads[$0.index] },
                                       ranks: members.map(\.rank), parametersPerUnit: layout.parametersPerUnit, tensors: tensors))
        }
        for name in replaced { g.initializers[name] = nil }
        let prunable = pairs.enumerated().reduce(0) { $0 + $1.element.parametersPerUnit * byPair[$1.offset].count }
        let all = graph.initializers.values.filter { $0.dtype.isFloatingPoint }.reduce(0) { $0 + $1.count }
        let path = PruningPath(method: method, pairs: stored, prunableParameters: prunable, fixedParameters: all - prunable)
        return Result(graph: g, path: path, costTable: try costTable(path, graph: graph, referenceLength: referenceLength), encodings: encodings)
    }

    static func transposed(_ t: Tensor) throws -> Tensor { try DataMovement.transpose(t, perm: [1, 0]) }

    /// Splits rows into `chunksPerPair` tensors named `prefix#k`.
    static func chunk(_ t: Tensor, prefix: String, into graph: inout Graph) -> ([String], [Int]) {
        let n = t.shape[0]
        let size = max(1, (n + chunksPerPair - 1) / chunksPerPair)
        var names: [String] = [], counts: [Int] = []
        var start = 0
        repeat {
            let end = min(n, start + size)
            let name = "\(prefix)#\(names.count)"
            graph.initializers[name] = (try? DataMovement.slice(t, starts: [start], ends: [end], axes: [0], steps: [1])) ?? t
            names.append(name)
            counts.append(end - start)
            start = end
        } while start < n
        return (names, counts)
    }

    /// Splits the rows of a lower-triangular int8 matrix like `chunk`, each chunk keeping only the
    /// columns up to its last row (rows [a, b) stored [b − a, b]), with its rows' scales as `<chunk>/scales`.
    static func triangularChunks(_ t: Tensor, scales: Tensor, prefix: String, into graph: inout Graph,
                                 encodings: inout [String: ValueEncoding]) throws -> ([String], [Int]) {
        let n = t.shape[0]
        let size = max(1, (n + chunksPerPair - 1) / chunksPerPair)
        var names: [String] = [], counts: [Int] = []
        for start in stride(from: 0, to: n, by: size) {
            let end = min(n, start + size)
            let name = "\(prefix)#\(names.count)"
            graph.initializers[name] = try DataMovement.slice(t, starts: [start, 0], ends: [end, end], axes: [0, 1], steps: [1, 1])
            graph.initializers[name + "/scales"] = try DataMovement.slice(scales, starts: [start], ends: [end], axes: [0], steps: [1])
            encodings[name] = ValueEncoding(scales: name + "/scales")
            names.append(name)
            counts.append(end - start)
        }
        return (names, counts)
    }

    /// Parameters, FLOPs for one sequence of `referenceLength`, and weight bytes at keep 0.05, 0.1, …, 1.
    static func costTable(_ path: PruningPath, graph: Graph, referenceLength l: Int) throws -> [CostLevel] {
        let nodes = Dictionary(graph.nodes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        // FLOPs outside the pairs (embeddings gather, norms) are small; count the GEMMs of the fused blocks
        // and of every other MatMul/Gemm at full size.
        return try stride(from: 5, through: 100, by: 5).map { pct -> CostLevel in
            let keep = Double(pct) / 100
            let counts = try PathLoader.keptUnits(path, keep: keep)
            var params = path.fixedParameters
            var flops = 0
            for (pair, n) in zip(path.pairs, counts) {
                params += n * pair.parametersPerUnit
                guard let node = nodes[pair.node] else { continue }
                let d = graph.initializers[node.inputs[1]]?.shape[0] ?? 0
                switch pair.kind {
                case .queryKey, .valueOutput: flops += FlopCount.attentionPair(units: n, hidden: d, batch: 1, seq: l)
                case .feedForward: flops += FlopCount.feedForward(units: n, hidden: d, tokens: l)
                }
            }
            return CostLevel(keep: Float(keep), parameters: params, flops: flops, weightBytes: params * 4, referenceLength: l)
        }
    }
}
