import Glibc
import SPPCore
import SPPGraph
import SPPKernels

/// The attention probabilities of a fused attention node, per head and batch
/// row, computed as its kernel does (`OpType.attention`): softmax over keys of
/// scale · q_h k_hᵀ + mask + bias, causal positions excluded.
enum AttentionProbe {
    /// `[head][batch]` → row-major [S, S].
    static func probabilities(_ node: Node, x: Tensor, values: [String: Tensor], graph: Graph) throws -> [[[Float]]] {
        func weight(_ i: Int) throws -> Tensor {
            guard let t = graph.initializers[node.inputs[i]] else {
                throw KernelError.invalidArgument("attention node '\(node.name)' input \(i) is not a constant")
            }
            return t
        }
        let (b, s, d) = (x.shape[0], x.shape[1], x.shape[2])
        let qkRanks = try node.ints("qk_ranks") ?? []
        let scale = try node.float("scale", default: 1)
        let causal = try node.int("causal", default: 0) != 0
        let flat = x.reshaped([b * s, d])
        let q = try Elementwise.arithmetic(.add, Linear.matMul(flat, weight(1)), weight(2))
        let k = try Elementwise.arithmetic(.add, Linear.matMul(flat, weight(3)), weight(4))
        let width = qkRanks.reduce(0, +)
        let terms = try [node.input(9), node.input(10)].compactMap { $0.flatMap { values[$0] ?? graph.initializers[$0] } }
            .map { try Attention.Term($0, target: [b, qkRanks.count, s, s], what: "additive term") }
        let pq = q.pointer(as: Float.self), pk = k.pointer(as: Float.self)
        var result: [[[Float]]] = []
        var offset = 0
        for (h, r) in qkRanks.enumerated() {
            var perBatch: [[Float]] = []
            for bi in 0..<b {
                var scores = [Float](repeating: 0, count: s * s)
                if r > 0 {
                    scores.withUnsafeMutableBufferPointer { out in
                        Linear.sgemm(transA: false, transB: true, m: s, n: s, k: r, alpha: scale,
                                     a: pq + bi * s * width + offset, lda: width, b: pk + bi * s * width + offset, ldb: width,
                                     beta: 0, c: out.baseAddress!, ldc: s)
                    }
                }
                scores.withUnsafeMutableBufferPointer { p in
                    for t in terms { for i in 0..<s { t.add(to: p.baseAddress! + i * s, count: s, bi, h, i) } }
                }
                for i in 0..<s {
                    let row = i * s
                    let limit = causal ? i + 1 : s
                    var m = -Float.infinity
                    for j in 0..<limit { m = max(m, scores[row + j]) }
                    var sum: Float = 0
                    for j in 0..<s {
                        let e: Float = j < limit ? expf(scores[row + j] - m) : 0
                        scores[row + j] = e
                        sum += e
                    }
                    for j in 0..<s { scores[row + j] /= sum }
                }
                perBatch.append(scores)
            }
            result.append(perBatch)
            offset += r
        }
        return result
    }
}
