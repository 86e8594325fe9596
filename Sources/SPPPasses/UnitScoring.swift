import SPPCore
import SPPGraph

/// `--method magnitude`'s ranking (no data). The data-aware methods score units
/// by their block losses (`SolutionPath`) and pool them end to end (`GroupAllocation`).
public enum UnitScoring {
    /// `--method magnitude`: products of weight norms, no data. QK direction i of a
    /// head: ‖Wq col‖·‖Wk col‖; VO: ‖Wv col‖·‖Wo row‖; FFN neuron: ‖W1 col‖·‖W2 row‖.
    public static func magnitude(_ graph: Graph) throws -> UnitScores {
        var scores = UnitScores()
        for node in graph.nodes {
            switch node.op {
            case .attention:
                let w = try AttentionWeights(node, graph)
                scores.queryKey[node.name] = (0..<w.heads).map { h in
                    w.qkRange(h).map { columnNorm(w.wq, $0) * columnNorm(w.wk, $0) }
                }
                scores.valueOutput[node.name] = (0..<w.heads).map { h in
                    w.voRange(h).map { columnNorm(w.wv, $0) * rowNorm(w.wo, $0) }
                }
            case .feedForward:
                let (w1, w2) = try ffnWeights(node, graph)
                scores.feedForward[node.name] = (0..<w1.cols).map { columnNorm(w1, $0) * rowNorm(w2, $0) }
            default: continue
            }
        }
        return scores
    }

    static func columnNorm(_ m: Matrix, _ j: Int) -> Double {
        (0..<m.rows).reduce(0) { $0 + m[$1, j] * m[$1, j] }.squareRoot()
    }

    static func rowNorm(_ m: Matrix, _ i: Int) -> Double {
        (0..<m.cols).reduce(0) { $0 + m[i, $1] * m[i, $1] }.squareRoot()
    }

    static func ffnWeights(_ node: Node, _ graph: Graph) throws -> (Matrix, Matrix) {
        guard let w1 = graph.initializers[node.inputs[1]], let w2 = graph.initializers[node.inputs[3]] else {
            throw GraphError.badAttribute(node: node.name, op: node.op.rawValue, attribute: "inputs", reason: "weights must be constants")
        }
        return (Matrix(rows: w1.shape[0], cols: w1.shape[1], data: w1.floats.map(Double.init)),
                Matrix(rows: w2.shape[0], cols: w2.shape[1], data: w2.floats.map(Double.init)))
    }
}
