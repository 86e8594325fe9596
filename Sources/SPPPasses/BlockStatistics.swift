import Glibc
import SPPCore
import SPPGraph
import SPPKernels
import SPPRuntime

/// Second moments and activation statistics of every fused block on
/// calibration data, gathered from the dense model. They drive the whitened
/// rotations (QK: moment of the block input x̃ = [x, 1]; VO: per head, moment of
/// the attention-mixed input m̃ = Σ_j p_ij x̃_j) and the FFN repair.
public struct BlockStatistics: Sendable {
    public struct AttentionStats: Sendable {
        /// E[x̃ x̃ᵀ], (D+1)×(D+1).
        public var inputMoment: Matrix
        /// Per head, E[m̃ m̃ᵀ], (D+1)×(D+1).
        public var mixedMoments: [Matrix]
    }

    public struct FeedForwardStats: Sendable {
        /// E[h] and Cov[h] (F×F) of the activation after the nonlinearity, for the least-squares repair of W2.
        public var mean: [Double]
        public var covariance: Matrix

        public init(mean: [Double], covariance: Matrix) {
            self.mean = mean
            self.covariance = covariance
        }
    }

    public var attention: [String: AttentionStats] = [:]
    public var feedForward: [String: FeedForwardStats] = [:]
    public var tokens = 0

    /// Runs `graph` on every batch and accumulates the statistics of its fused nodes.
    /// `validity` names the graph input that marks real tokens ([B, S], non-zero
    /// = real); without it every position counts.
    public static func collect(graph: Graph, batches: [[String: Tensor]], validity: String? = "attention_mask",
                               progress: (Int, Int) -> Void = { _, _ in }) throws -> BlockStatistics {
        let program = try Program(graph: graph)
        let attention = graph.nodes.filter { $0.op == .attention }
        let ffn = graph.nodes.filter { $0.op == .feedForward }
        let wanted = Set((attention + ffn).flatMap { n in [n.inputs[0]] + (n.op == .attention ? [n.input(9), n.input(10)].compactMap { $0 } : []) })
        var acc = Accumulators(attention: attention, ffn: ffn, graph: graph)
        for (k, batch) in batches.enumerated() {
            let values = try program.run(batch, retaining: wanted)
            let valid = validity.flatMap { batch[$0] }
            for node in attention { try acc.addAttention(node, values, valid: valid) }
            for node in ffn { try acc.addFeedForward(node, values, valid: valid) }
            progress(k + 1, batches.count)
        }
        return acc.finish()
    }

    /// Sums in Double, turned into means at the end.
    struct Accumulators {
        var inputSums: [String: [Double]] = [:]
        var mixedSums: [String: [[Double]]] = [:]
        var hiddenSums: [String: [Double]] = [:]
        var hiddenMoments: [String: [Double]] = [:]
        var counts: [String: Int] = [:]
        let graph: Graph

        init(attention: [Node], ffn: [Node], graph: Graph) {
            self.graph = graph
            for n in attention {
                let d = graph.initializers[n.inputs[1]]?.shape[0] ?? 0
                let heads = (try? n.int("heads", default: 0)) ?? 0
                inputSums[n.name] = [Double](repeating: 0, count: (d + 1) * (d + 1))
                mixedSums[n.name] = [[Double]](repeating: [Double](repeating: 0, count: (d + 1) * (d + 1)), count: heads)
            }
            for n in ffn {
                let f = graph.initializers[n.inputs[1]]?.shape[1] ?? 0
                hiddenSums[n.name] = [Double](repeating: 0, count: f)
                hiddenMoments[n.name] = [Double](repeating: 0, count: f * f)
            }
        }

        /// Rows of `x [B, S, D]` at valid positions, with a trailing 1: [n, D+1].
        static func validRows(_ x: Tensor, valid: Tensor?) -> (rows: [Float], count: Int) {
            let (b, s, d) = (x.shape[0], x.shape[1], x.shape[2])
            let flags = valid.flatMap { $0.shape == [b, s] ? $0.integers : nil }
            let px = x.pointer(as: Float.self)
            var rows: [Float] = []
            rows.reserveCapacity(b * s * (d + 1))
            var n = 0
            for t in 0..<(b * s) where flags.map({ $0[t] != 0 }) ?? true {
                rows.append(contentsOf: UnsafeBufferPointer(start: px + t * d, count: d))
                rows.append(1)
                n += 1
            }
            return (rows, n)
        }

        /// sums += rowsᵀ rows, through one float GEMM.
        static func addMoment(_ sums: inout [Double], rows: [Float], count: Int, width: Int) {
            guard count > 0 else { return }
            var m = [Float](repeating: 0, count: width * width)
            rows.withUnsafeBufferPointer { r in
                m.withUnsafeMutableBufferPointer { out in
                    Linear.sgemm(transA: true, transB: false, m: width, n: width, k: count, alpha: 1, a: r.baseAddress!, lda: width,
                                 b: r.baseAddress!, ldb: width, beta: 0, c: out.baseAddress!, ldc: width)
                }
            }
            for i in 0..<m.count { sums[i] += Double(m[i]) }
        }

        mutating func addAttention(_ node: Node, _ values: [String: Tensor], valid: Tensor?) throws {
            guard let x = values[node.inputs[0]], x.rank == 3 else { return }
            let (b, s, d) = (x.shape[0], x.shape[1], x.shape[2])
            let (rows, n) = Self.validRows(x, valid: valid)
            Self.addMoment(&inputSums[node.name]!, rows: rows, count: n, width: d + 1)
            counts[node.name, default: 0] += n
            // Per head: the attention-mixed inputs P_h x, at valid query positions.
            let probs = try AttentionProbe.probabilities(node, x: x, values: values, graph: graph)
            let flags = valid.flatMap { $0.shape == [b, s] ? $0.integers : nil }
            let px = x.pointer(as: Float.self)
            for h in 0..<probs.count {
                var mixed: [Float] = []
                mixed.reserveCapacity(n * (d + 1))
                var block = [Float](repeating: 0, count: s * d)
                var m = 0
                for bi in 0..<b {
                    probs[h][bi].withUnsafeBufferPointer { p in
                        block.withUnsafeMutableBufferPointer { out in
                            Linear.sgemm(transA: false, transB: false, m: s, n: d, k: s, alpha: 1, a: p.baseAddress!, lda: s,
                                         b: px + bi * s * d, ldb: d, beta: 0, c: out.baseAddress!, ldc: d)
                        }
                    }
                    for i in 0..<s where flags.map({ $0[bi * s + i] != 0 }) ?? true {
                        mixed.append(contentsOf: block[(i * d)..<((i + 1) * d)])
                        mixed.append(1)
                        m += 1
                    }
                }
                Self.addMoment(&mixedSums[node.name]![h], rows: mixed, count: m, width: d + 1)
            }
        }

        mutating func addFeedForward(_ node: Node, _ values: [String: Tensor], valid: Tensor?) throws {
            guard let x = values[node.inputs[0]], let w1 = graph.initializers[node.inputs[1]], let b1 = graph.initializers[node.inputs[2]] else { return }
            let d = w1.shape[0], f = w1.shape[1]
            let flat = x.reshaped([x.count / d, d])
            var h = try Linear.matMul(flat, w1)
            h = try Elementwise.arithmetic(.add, h, b1)
            h = try applyActivation(try node.string("activation", default: "gelu"), h)
            let flags: [Int]? = valid.flatMap { v in x.rank == 3 && v.shape == [x.shape[0], x.shape[1]] ? v.integers : nil }
            let ph = h.pointer(as: Float.self)
            var rows: [Float] = []
            rows.reserveCapacity(h.count)
            var n = 0
            for t in 0..<(x.count / d) where flags.map({ $0[t] != 0 }) ?? true {
                for j in 0..<f {
                    hiddenSums[node.name]![j] += Double(ph[t * f + j])
                }
                rows.append(contentsOf: UnsafeBufferPointer(start: ph + t * f, count: f))
                n += 1
            }
            Self.addMoment(&hiddenMoments[node.name]!, rows: rows, count: n, width: f)
            counts[node.name, default: 0] += n
        }

        func finish() -> BlockStatistics {
            var out = BlockStatistics()
            for (name, sums) in inputSums {
                let n = Double(max(counts[name] ?? 0, 1))
                let width = Int(Double(sums.count).squareRoot())
                let mean = { (s: [Double]) in Matrix(rows: width, cols: width, data: s.map { $0 / n }) }
                out.attention[name] = AttentionStats(inputMoment: mean(sums), mixedMoments: mixedSums[name]!.map(mean))
                out.tokens = max(out.tokens, counts[name] ?? 0)
            }
            for (name, sums) in hiddenSums {
                let n = Double(max(counts[name] ?? 0, 1))
                let f = sums.count
                let mean = sums.map { $0 / n }
                var covariance = Matrix(rows: f, cols: f, data: hiddenMoments[name]!.map { $0 / n })
                for i in 0..<f { for j in 0..<f { covariance[i, j] -= mean[i] * mean[j] } }
                out.feedForward[name] = FeedForwardStats(mean: mean, covariance: covariance)
            }
            return out
        }
    }
}

/// Applies a feed-forward node's nonlinearity, named by its `activation` attribute.
func applyActivation(_ name: String, _ h: Tensor) throws -> Tensor {
    guard let activation = FeedForwardActivation(rawValue: name) else {
        throw KernelError.invalidArgument("unknown activation '\(name)'")
    }
    switch activation {
    case .gelu: return try Elementwise.unary(.gelu(tanhApproximation: false), h)
    case .geluTanh: return try Elementwise.unary(.gelu(tanhApproximation: true), h)
    case .relu: return try Elementwise.unary(.relu, h)
    }
}
