import CKernels
import Foundation
import SPPKernels

extension AttentionProblem {
    /// The loss of removing each QK direction alone (every other unit kept), as a
    /// weighted mean over the query tokens of the kept sequences: the block output's
    /// squared error through the softmax, exactly (not to first order), in the
    /// problem's measure. The diagonal of a `QuadraticLoss` is the same quantity for
    /// FFN neurons and VO directions.
    ///
    /// Removing direction c of head h subtracts scale · q_c k_cᵀ from that head's
    /// logits and changes nothing else, so each removal is evaluated on its head
    /// alone: new probabilities P′, context P′ v_h, error D = P′ v_h − P v_h, loss
    /// Σ_t w_t D_t G_hh D_tᵀ with G_hh the head's block of the output metric.
    func queryKeyRemovalLosses(threads: Int) -> [Double] {
        let items = (0..<heads).filter { qkRanks[$0] > 0 && voRanks[$0] > 0 }
        var perHead = [[Double]](repeating: [], count: heads)
        perHead.withUnsafeMutableBufferPointer { slots in
            Parallel.forEachItem(items.count, threads: threads) { i, _ in slots[items[i]] = headRemovalLosses(items[i]) }
        }
        let tokens = Double(max(self.tokens, 1))
        return (0..<heads).flatMap { h in perHead[h].isEmpty ? [Double](repeating: 0, count: qkRanks[h]) : perHead[h].map { $0 / tokens } }
    }

    /// Σ over the kept sequences of each direction's removal loss in head `h` (not yet a mean).
    private func headRemovalLosses(_ h: Int) -> [Double] {
        let r = qkRanks[h], rv = voRanks[h], qo = qkOffsets[h], vo = voOffsets[h]
        let g = FloatBuffer(count: rv * rv)
        for i in 0..<rv { for j in 0..<rv { g.pointer[i * rv + j] = metric[(vo + i) * voWidth + vo + j] } }
        var totals = [Double](repeating: 0, count: r)
        let widest = sequences.map(\.queries).max() ?? 0
        let logits = FloatBuffer(count: sequences.map { $0.queries * $0.keys }.max() ?? 0)
        let probs = FloatBuffer(count: logits.count)
        let (error, projected) = (FloatBuffer(count: widest * rv), FloatBuffer(count: widest * rv))
        let inverseSums = FloatBuffer(count: widest)
        let (l, p, e, sums) = (logits.pointer, probs.pointer, error.pointer, inverseSums.pointer)
        for s in sequences {
            let n = s.queries, keys = s.keys
            guard n > 0, keys > 0 else { continue }
            let (q, k, v, dense, term) = (s.q.pointer, s.k.pointer, s.v.pointer, s.ctx.pointer, s.term.pointer)
            let th = s.termHeads == 1 ? 0 : h
            // The dense logits of the head, additive terms included.
            Linear.sgemm(transA: false, transB: true, m: n, n: keys, k: r, alpha: scale, a: q + qo, lda: qkWidth,
                         b: k + qo, ldb: qkWidth, beta: 0, c: l, ldc: keys)
            for t in 0..<n {
                let tr = term + (th * s.termRows + (s.termRows == 1 ? 0 : t)) * keys
                for j in 0..<keys { l[t * keys + j] += tr[j] }
            }
            for c in 0..<r {
                for t in 0..<n {
                    let row = p + t * keys
                    let qc = scale * q[t * qkWidth + qo + c]
                    let limit = causal ? min(s.positions[t] + 1, keys) : keys
                    for j in 0..<limit { row[j] = l[t * keys + j] - qc * k[j * qkWidth + qo + c] }
                    sums[t] = spp_softmax_exp(row, nil, limit)
                    if limit < keys { (row + limit).update(repeating: 0, count: keys - limit) }
                }
                // D = P′ v_h − P v_h (the softmax's 1 / Σ applied to the product's rows).
                Linear.sgemm(transA: false, transB: false, m: n, n: rv, k: keys, alpha: 1, a: p, lda: keys,
                             b: v + vo, ldb: voWidth, beta: 0, c: e, ldc: rv)
                for t in 0..<n {
                    for i in 0..<rv { e[t * rv + i] = e[t * rv + i] * sums[t] - dense[t * voWidth + vo + i] }
                }
                totals[c] += SolutionPathMath.weightedLoss(e, rows: n, width: rv, metric: g.pointer, weights: s.weights,
                                                           projected: projected.pointer)
            }
        }
        return totals
    }
}

extension SolutionPath.Prepared {
    /// `--method svd`'s ranking: every unit scored by the loss of its block when it
    /// alone is removed, in the capture's measure (after the whitened rotation, a
    /// unit's share of its block's output error). FFN neurons and VO directions read
    /// it from their quadratic's diagonal; QK directions are evaluated through the
    /// softmax (`queryKeyRemovalLosses`).
    public func singleRemovalScores(threads: Int = 0) -> UnitScores {
        let threads = threads > 0 ? threads : ProcessInfo.processInfo.activeProcessorCount
        var scores = UnitScores()
        // Heads run concurrently, each with single-threaded BLAS.
        let blasThreads = Linear.threads
        Linear.setThreads(1)
        defer { Linear.setThreads(blasThreads) }
        for block in blocks {
            switch block {
            case let .feedForward(node, loss):
                scores.feedForward[node] = loss.diagonal
            case let .attention(node, p):
                let qk = p.queryKeyRemovalLosses(threads: threads), vo = p.voQuadratic.diagonal
                scores.queryKey[node] = UnitScores.perHead(qk, ranks: p.qkRanks)
                scores.valueOutput[node] = UnitScores.perHead(vo, ranks: p.voRanks)
            }
        }
        return scores
    }
}
