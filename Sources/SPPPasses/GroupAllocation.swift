import Foundation
import SPPCore
import SPPFormat
import SPPGraph
import SPPKernels
import SPPRuntime

/// Pools the units of different blocks and kinds by what removing them costs the
/// model's output, measured end to end on calibration data.
///
/// A block's own loss (`SolutionPath.Prepared.singleRemovalScores`) orders the units
/// within a group — the QK directions, the VO directions or the FFN neurons of one
/// block — but compares groups badly: it does not see how an error grows through the
/// layers after it, nor that removing many QK directions at once moves attention far
/// more than the sum of removing each alone. Measured on all-MiniLM-L6-v2, ranking by
/// block losses kept a third to a half of the QK directions at keep 0.75 and lost 2–3
/// points of recall@1 that keeping them all recovers.
///
/// So each group is pruned alone, weakest units first, to a few fractions, and the
/// model's output error against the dense model is measured: a curve E_g(m) of
/// units removed. A unit's score is the slope of its group's curve where it is
/// removed (made non-decreasing, so the group's order is kept); pooling all units by
/// it removes first what costs the output least per unit — the greedy allocation for
/// separable convex costs. FFN groups are measured with the load-time least-squares
/// repair applied, as the pruned model runs.
public enum GroupAllocation {
    public struct Options: Sendable {
        /// Fractions of each group removed to measure its curve (the whole group is always measured).
        public var fractions = [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
        /// Calibration sequences the output error is measured on: the first batches holding at least this many.
        public var sequences = 128
        /// The graph input marking real tokens (non-zero) in each batch.
        public var validity = "attention_mask"
        public init() {}
    }

    /// One group's units, weakest first: for attention the unit's column in its
    /// pair's projections, for FFN the neuron.
    struct Group {
        let node: Node
        let kind: PrunablePair.Kind
        let removalOrder: [Int]
    }

    /// Scores with the same order within every group, pooled across groups by their
    /// measured end-to-end curves. `repair`: the FFN statistics and ridge of the load-time refit.
    public static func apply(_ scores: UnitScores, graph: Graph, batches: [[String: Tensor]],
                             repair: [String: BlockStatistics.FeedForwardStats], ridge: Double,
                             options: Options = .init(), progress: (Int, Int) -> Void = { _, _ in }) throws -> UnitScores {
        let groups = try makeGroups(scores, graph: graph)
        let subset = subsetBatches(batches, sequences: options.sequences)
        let dense = try outputs(of: graph, on: subset)
        let fractions = options.fractions.filter { $0 > 0 && $0 < 1 }.sorted() + [1]
        let total = groups.count * fractions.count
        var out = UnitScores()
        var done = 0
        for group in groups {
            let n = group.removalOrder.count
            var counts: [Int] = [0], errors: [Double] = [0]
            for f in fractions {
                let m = min(n, max(counts.last! + 1, Int((f * Double(n)).rounded())))
                if m > counts.last! {
                    let pruned = try removing(group, count: m, from: graph, repair: repair[group.node.name], ridge: ridge)
                    counts.append(m)
                    errors.append(try error(of: pruned, on: subset, against: dense, validity: options.validity))
                }
                done += 1
                progress(done, total)
            }
            // Slope of each segment, non-decreasing along the removal order.
            var slopes: [Double] = []
            for j in 1..<counts.count {
                let s = max(errors[j] - errors[j - 1], 0) / Double(counts[j] - counts[j - 1])
                slopes.append(max(s, slopes.last ?? 0))
            }
            var unitScore = [Double](repeating: 0, count: n)
            for (i, unit) in group.removalOrder.enumerated() {
                let segment = counts.firstIndex { $0 > i }! - 1
                // A slightly larger score further along the order keeps the group's order within a
                // segment (the last term only where the slope is 0).
                unitScore[unit] = slopes[segment] * (1 + 1e-6 * Double(i) / Double(max(n, 1))) + Double.leastNormalMagnitude * Double(i)
            }
            switch group.kind {
            case .feedForward:
                out.feedForward[group.node.name] = unitScore
            case .queryKey, .valueOutput:
                let a = try group.node.attentionAttributes()
                let ranks = group.kind == .queryKey ? a.qkRanks : a.voRanks
                let perHead = UnitScores.perHead(unitScore, ranks: ranks)
                if group.kind == .queryKey { out.queryKey[group.node.name] = perHead } else { out.valueOutput[group.node.name] = perHead }
            }
        }
        return out
    }

    static func makeGroups(_ scores: UnitScores, graph: Graph) throws -> [Group] {
        func weakestFirst(_ s: [Double]) -> [Int] { s.indices.sorted { (s[$0], $0) < (s[$1], $1) } }
        var groups: [Group] = []
        for node in graph.nodes {
            switch node.op {
            case .attention:
                if let qk = scores.queryKey[node.name] { groups.append(Group(node: node, kind: .queryKey, removalOrder: weakestFirst(qk.flatMap { $0 }))) }
                if let vo = scores.valueOutput[node.name] { groups.append(Group(node: node, kind: .valueOutput, removalOrder: weakestFirst(vo.flatMap { $0 }))) }
            case .feedForward:
                if let f = scores.feedForward[node.name] { groups.append(Group(node: node, kind: .feedForward, removalOrder: weakestFirst(f))) }
            default: continue
            }
        }
        return groups
    }

    /// The first batches holding `sequences` sequences.
    static func subsetBatches(_ batches: [[String: Tensor]], sequences: Int) -> [[String: Tensor]] {
        var out: [[String: Tensor]] = [], count = 0
        for b in batches where count < sequences {
            out.append(b)
            count += b.values.first { $0.rank >= 2 }?.shape[0] ?? 1
        }
        return out
    }

    static func outputs(of graph: Graph, on batches: [[String: Tensor]]) throws -> [[String: Tensor]] {
        let program = try Program(graph: graph)
        return try batches.map { try program.run($0) }
    }

    /// Σ over the float outputs of ‖y − y_dense‖² at real tokens ([B, S, …] outputs), over all batches.
    static func error(of graph: Graph, on batches: [[String: Tensor]], against dense: [[String: Tensor]], validity: String) throws -> Double {
        let program = try Program(graph: graph)
        var total = 0.0
        for (batch, reference) in zip(batches, dense) {
            let got = try program.run(batch)
            let flags = batch[validity]
            for (name, want) in reference where want.dtype == .float32 {
                guard let y = got[name], y.shape == want.shape else { continue }
                let (py, pw) = (y.pointer(as: Float.self), want.pointer(as: Float.self))
                var tokens = 1, width = want.count
                var real: [Int]? = nil
                if let flags, want.rank >= 2, Array(want.shape.prefix(2)) == flags.shape, let integers = flags.integers {
                    tokens = flags.count
                    width = want.count / max(tokens, 1)
                    real = integers
                }
                for t in 0..<tokens where real.map({ $0[t] != 0 }) ?? true {
                    for j in 0..<width {
                        let d = Double(py[t * width + j]) - Double(pw[t * width + j])
                        total += d * d
                    }
                }
            }
        }
        return total
    }

    /// `graph` with the first `count` units of the group's removal order removed:
    /// their q (or v) column and bias entry zeroed, or the FFN neuron's W2 row — and,
    /// given the statistics, the FFN's other rows and b2 refit by the load-time repair's
    /// objective (exactly, where the file stores an int8 factor of it).
    static func removing(_ group: Group, count: Int, from graph: Graph,
                         repair: BlockStatistics.FeedForwardStats?, ridge: Double) throws -> Graph {
        var g = graph
        let removed = Array(group.removalOrder.prefix(count))
        func constant(_ i: Int) throws -> Tensor {
            guard let name = group.node.input(i), let t = g.initializers[name], t.dtype == .float32 else {
                throw GraphError.badAttribute(node: group.node.name, op: group.node.op.rawValue, attribute: "input \(i)", reason: "weights must be float32 constants")
            }
            return t
        }
        func replace(_ i: Int, _ values: [Float], _ shape: [Int]) { g.initializers[group.node.inputs[i]] = Tensor(values, shape: shape) }
        switch group.kind {
        case .queryKey, .valueOutput:
            let (wi, bi) = group.kind == .queryKey ? (1, 2) : (5, 6)
            let w = try constant(wi), b = try constant(bi)
            var wv = w.floats, bv = b.floats
            let cols = w.shape[1]
            for c in removed {
                for r in 0..<w.shape[0] { wv[r * cols + c] = 0 }
                bv[c] = 0
            }
            replace(wi, wv, w.shape)
            replace(bi, bv, b.shape)
        case .feedForward:
            let w2 = try constant(3), b2 = try constant(4)
            let (f, d) = (w2.shape[0], w2.shape[1])
            var wv = w2.floats, bv = b2.floats
            let kept = Array(group.removalOrder.suffix(f - count))
            if let stats = repair, ridge > 0 {
                (wv, bv) = try refit(w2: wv, b2: bv, f: f, d: d, kept: kept, stats: stats, ridge: ridge)
            }
            for j in removed { for c in 0..<d { wv[j * d + c] = 0 } }
            replace(3, wv, w2.shape)
            replace(4, bv, b2.shape)
        }
        return g
    }

    /// The ridge refit of `FeedForwardRepair` in float64, straight from its definition:
    /// W = A_SS⁻¹ (A W2)_S with A = C + λI, b2' = b2 + μ W2 − μ_S W. Rows of W2 outside
    /// `kept` are left as they are (the caller zeroes them).
    static func refit(w2: [Float], b2: [Float], f: Int, d: Int, kept: [Int], stats: BlockStatistics.FeedForwardStats,
                      ridge: Double) throws -> ([Float], [Float]) {
        var bias = b2.map(Double.init)
        for j in 0..<f { for c in 0..<d { bias[c] += stats.mean[j] * Double(w2[j * d + c]) } }
        var out = w2
        let k = kept.count
        if k > 0 {
            var c = Matrix.zeros(k, k)
            for (x, i) in kept.enumerated() { for (y, j) in kept.enumerated() { c[x, y] = stats.covariance[i, j] } }
            var rows = Matrix.zeros(k, f)
            for (x, i) in kept.enumerated() { for j in 0..<f { rows[x, j] = stats.covariance[i, j] } }
            let cw = rows * Matrix(rows: f, cols: d, data: w2.map(Double.init))
            let w = try FeedForwardRepair.withRidge(ridge, covariance: stats.covariance) { lambda in
                var a = c
                for x in 0..<k { a[x, x] += lambda }
                // (A W2)_S = C_S,all W2 + λ W2_S.
                var rhs = cw
                for (x, i) in kept.enumerated() { for col in 0..<d { rhs[x, col] += lambda * Double(w2[i * d + col]) } }
                return try Linalg.solvePositiveDefinite(a, rhs)
            }
            for (x, i) in kept.enumerated() {
                for col in 0..<d {
                    out[i * d + col] = Float(w[x, col])
                    bias[col] -= stats.mean[i] * w[x, col]
                }
            }
        }
        return (out, bias.map { Float($0) })
    }
}
