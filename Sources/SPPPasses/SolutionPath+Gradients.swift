import CLinalg
import Glibc
import SPPKernels

// The block-wise distillation losses of the solution path and their gradients
// with respect to the unit masks, derived by hand per pair type (the tests
// check each against finite differences).
//
// Every block loss has the form L(m) = (1/n) Σ_t w_t ‖(y_t(m) − y_t) Wout‖²_Ω:
// the squared error of the block output against the dense output over the
// n real calibration tokens, with a per-token weight w_t and a per-output-
// dimension weight Ω (both 1 for `.absolute`; the downstream LayerNorm's
// 1/σ_t² and γ² for `.layerNorm`).

/// A loss exactly quadratic in the masks: L(m) = (m − 1)ᵀ A (m − 1), A symmetric
/// positive semi-definite. The FFN loss has this form: with h = act(x W1 + b1)
/// independent of m, y(m) − y = ((m − 1) ⊙ h) W2, so A = (Σ_t w_t h_t h_tᵀ / n) ⊙ (W2 Ω W2ᵀ).
/// So is the VO loss for fixed attention probabilities (h → the attention-mixed values).
struct QuadraticLoss: Sendable {
    let size: Int
    /// size × size, row-major.
    var a: [Float]

    init(size: Int, a: [Float]) {
        precondition(a.count == size * size)
        self.size = size
        self.a = a
    }

    /// A = moment ⊙ (W Ω Wᵀ), with `moment` = Σ_t w_t h_t h_tᵀ / n (size × size) and
    /// W the size × d output weights.
    init(moment: [Float], size n: Int, output w: [Float], outputWeights omega: [Float]?, d: Int) {
        precondition(moment.count == n * n && w.count == n * d)
        var metric = SolutionPathMath.outputMetric(w, rows: n, d: d, omega: omega)
        for i in 0..<metric.count { metric[i] *= moment[i] }
        self.init(size: n, a: metric)
    }

    /// (m − 1)ᵀ A (m − 1).
    func loss(_ m: [Double]) -> Double {
        let e = m.map { $0 - 1 }
        var total = 0.0
        for i in 0..<size {
            var row = 0.0
            for j in 0..<size { row += Double(a[i * size + j]) * e[j] }
            total += e[i] * row
        }
        return total
    }

    /// g += scale · 2 A (m − 1), through one sgemv.
    func addGradient(_ m: [Double], scale: Double, into g: inout [Double]) {
        guard size > 0 else { return }
        Linalg.requireLoaded()
        var e = m.map { Float($0 - 1) }
        var out = [Float](repeating: 0, count: size)
        a.withUnsafeBufferPointer { pa in
            spp_sgemv(Int32(size), Int32(size), 2, pa.baseAddress, Int32(size), &e, 0, &out)
        }
        for i in 0..<size { g[i] += scale * Double(out[i]) }
    }

    /// diag A: the loss of removing each unit alone.
    var diagonal: [Double] { (0..<size).map { Double(a[$0 * size + $0]) } }

    /// 1ᵀ A 1: the loss with every unit of the block removed.
    var lossAtZero: Double { a.reduce(0.0) { $0 + Double($1) } }
}

/// One fused attention block on calibration sequences. The loss is joint in
/// the QK masks (inner directions of q·k per head) and the VO masks (inner
/// directions of v / rows of W_o):
///
///     logits_h = scale · (q_h ⊙ m_qk,h) k_hᵀ + mask + bias,   P_h = softmax(logits_h)
///     ctx_h    = (P_h v_h) ⊙ m_vo,h,                           y = ctx W_o + b_o
///
/// It is linear in m_vo for fixed P, but not quadratic in m_qk (softmax), so
/// its gradient is taken through the softmax on sampled sequences. The VO part
/// uses a control variate: the exact quadratic Q_vo(m_vo) of the loss at the
/// dense probabilities (precomputed over every calibration token) replaces its
/// own sampled estimate, so with m_qk = 1 the VO gradient is exact and the
/// sampling noise only carries the QK-dependent remainder.
struct AttentionProblem: Sendable {
    let heads: Int
    let qkRanks: [Int], voRanks: [Int]
    let qkOffsets: [Int], voOffsets: [Int]
    let qkWidth: Int, voWidth: Int
    let scale: Float
    let causal: Bool
    /// G = W_o Ω W_oᵀ, voWidth × voWidth: the output metric seen from the context.
    let metric: [Float]
    /// Q_vo: the loss at the dense attention probabilities, over all calibration tokens.
    var voQuadratic: QuadraticLoss
    /// Sequences kept for sampled QK gradients.
    var sequences: [AttentionSequence]

    var units: Int { qkWidth + voWidth }
}

/// One calibration sequence as an attention block sees it, with the projections
/// of the (rotated) dense weights precomputed.
struct AttentionSequence: Sendable {
    /// Real query tokens (rows of q, ctx, weights) and key positions (rows of k, v).
    let queries: Int, keys: Int
    /// Position of each query among the keys (causal exclusion).
    let positions: [Int]
    /// queries × qkWidth, keys × qkWidth, keys × voWidth.
    let q: FloatBuffer, k: FloatBuffer, v: FloatBuffer
    /// Dense context P v (before masking), queries × voWidth: the target.
    let ctx: FloatBuffer
    /// Per-query loss weights w_t (the mean over tokens is taken by the caller).
    let weights: [Float]
    /// The additive score terms (mask + bias) as [termHeads, termRows, keys];
    /// termHeads is 1 or H, termRows is 1 (same for every query) or `queries`.
    let term: FloatBuffer
    let termHeads: Int, termRows: Int
}

/// Float storage that several values may share without copying, read through a pointer.
final class FloatBuffer: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int

    init(count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { pointer.deallocate() }

    var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
}

/// Reusable buffers for one attention evaluation (one per worker thread).
final class AttentionScratch {
    private(set) var capacity = 0
    var qm = FloatBuffer(count: 0), probs = FloatBuffer(count: 0), ctx = FloatBuffer(count: 0)
    var diff = FloatBuffer(count: 0), projected = FloatBuffer(count: 0)
    var dctx = FloatBuffer(count: 0), dp = FloatBuffer(count: 0), dqm = FloatBuffer(count: 0)

    func reserve(_ p: AttentionProblem, queries n: Int, keys s: Int) {
        func grow(_ b: inout FloatBuffer, _ count: Int) { if b.count < count { b = FloatBuffer(count: count) } }
        grow(&qm, n * p.qkWidth)
        grow(&probs, p.heads * n * s)
        grow(&ctx, n * p.voWidth)
        grow(&diff, 2 * n * p.voWidth)
        grow(&projected, 2 * n * p.voWidth)
        grow(&dctx, n * p.voWidth)
        grow(&dp, n * s)
        grow(&dqm, n * p.qkWidth)
    }
}

extension AttentionProblem {
    /// The attention probabilities (per head, queries × keys, into `scratch.probs`) and the
    /// unmasked context P v (queries × voWidth, into `scratch.ctx`) at QK masks `mqk`.
    func forward(_ s: AttentionSequence, mqk: [Float], scratch: AttentionScratch) {
        let n = s.queries, keys = s.keys
        scratch.reserve(self, queries: n, keys: keys)
        let (qkW, voW) = (qkWidth, voWidth)
        let (q, k, v, term) = (s.q.pointer, s.k.pointer, s.v.pointer, s.term.pointer)
        let (qm, probs, ctx) = (scratch.qm.pointer, scratch.probs.pointer, scratch.ctx.pointer)
        for t in 0..<n { for c in 0..<qkW { qm[t * qkW + c] = q[t * qkW + c] * mqk[c] } }
        for h in 0..<heads where voRanks[h] > 0 {
            let p = probs + h * n * keys
            let r = qkRanks[h]
            if r > 0 {
                Linear.sgemm(transA: false, transB: true, m: n, n: keys, k: r, alpha: scale, a: qm + qkOffsets[h], lda: qkW,
                             b: k + qkOffsets[h], ldb: qkW, beta: 0, c: p, ldc: keys)
            } else {
                // A head without qk directions attends through its additive terms only.
                p.update(repeating: 0, count: n * keys)
            }
            let th = s.termHeads == 1 ? 0 : h
            for t in 0..<n {
                let row = p + t * keys
                let tr = term + (th * s.termRows + (s.termRows == 1 ? 0 : t)) * keys
                let limit = causal ? min(s.positions[t] + 1, keys) : keys
                var mx = -Float.infinity
                for j in 0..<limit { row[j] += tr[j]; mx = Swift.max(mx, row[j]) }
                var sum: Float = 0
                for j in 0..<limit { let e = expf(row[j] - mx); row[j] = e; sum += e }
                let inv = sum > 0 ? 1 / sum : 0
                for j in 0..<limit { row[j] *= inv }
                if limit < keys { (row + limit).update(repeating: 0, count: keys - limit) }
            }
            Linear.sgemm(transA: false, transB: false, m: n, n: voRanks[h], k: keys, alpha: 1, a: p, lda: keys,
                         b: v + voOffsets[h], ldb: voW, beta: 0, c: ctx + voOffsets[h], ldc: voW)
        }
    }

    /// The loss of one sequence, Σ_t w_t ‖D_t‖²_G with D = ctx(m) − ctx(dense), and, when
    /// `gqk`/`gvo` are given, its gradient added to them (times `gradientScale`). With
    /// `controlVariate`, the gradient of the same sequence's loss at the dense
    /// probabilities is subtracted from the VO gradient (see the type's comment).
    @discardableResult
    func evaluate(_ s: AttentionSequence, mqk: [Float], mvo: [Float], scratch: AttentionScratch,
                  gqk: UnsafeMutablePointer<Double>? = nil, gvo: UnsafeMutablePointer<Double>? = nil,
                  gradientScale: Double = 1, controlVariate: Bool = false) -> Double {
        let n = s.queries, keys = s.keys
        guard n > 0, keys > 0, voWidth > 0 else { return 0 }
        scratch.reserve(self, queries: n, keys: keys)
        let wantGradient = gqk != nil || gvo != nil
        let (qkW, voW) = (qkWidth, voWidth)
        forward(s, mqk: mqk, scratch: scratch)
        let (q, k, v, dense) = (s.q.pointer, s.k.pointer, s.v.pointer, s.ctx.pointer)
        let (probs, ctx, diff, proj) = (scratch.probs.pointer, scratch.ctx.pointer, scratch.diff.pointer, scratch.projected.pointer)
        // D = ctx ⊙ m_vo − dense; D' = dense ⊙ (m_vo − 1), the same at the dense probabilities.
        let rows = controlVariate && gvo != nil ? 2 * n : n
        for t in 0..<n {
            for c in 0..<voW {
                let i = t * voW + c
                diff[i] = ctx[i] * mvo[c] - dense[i]
                if rows > n { diff[n * voW + i] = dense[i] * (mvo[c] - 1) }
            }
        }
        let loss = metric.withUnsafeBufferPointer { g in
            SolutionPathMath.weightedLoss(diff, rows: rows, scored: n, width: voW, metric: g.baseAddress!, weights: s.weights, projected: proj)
        }
        guard wantGradient else { return loss }
        // Backward. ∂L/∂D_t = 2 w_t G D_t (G symmetric).
        let (dctx, dp, dqm) = (scratch.dctx.pointer, scratch.dp.pointer, scratch.dqm.pointer)
        for t in 0..<n {
            let w2 = 2 * s.weights[t]
            for c in 0..<voW {
                let i = t * voW + c
                let dD = w2 * proj[i]
                if let gvo {
                    // D = ctx ⊙ m − dense → ∂/∂m_c = Σ_t dD_tc ctx_tc.
                    var gv = Double(dD * ctx[i])
                    if rows > n { gv -= Double(w2 * proj[n * voW + i] * dense[i]) }
                    gvo[c] += gradientScale * gv
                }
                dctx[i] = dD * mvo[c]
            }
        }
        guard let gqk else { return loss }
        for h in 0..<heads where voRanks[h] > 0 && qkRanks[h] > 0 {
            let p = probs + h * n * keys
            // dP = dctx_h v_hᵀ; dlogits = P ⊙ (dP − rowsum(P ⊙ dP)).
            Linear.sgemm(transA: false, transB: true, m: n, n: keys, k: voRanks[h], alpha: 1, a: dctx + voOffsets[h], lda: voW,
                         b: v + voOffsets[h], ldb: voW, beta: 0, c: dp, ldc: keys)
            for t in 0..<n {
                let pr = p + t * keys, dr = dp + t * keys
                var dot: Float = 0
                for j in 0..<keys { dot += pr[j] * dr[j] }
                for j in 0..<keys { dr[j] = pr[j] * (dr[j] - dot) }
            }
            // d(qm_h) = scale · dlogits k_h; qm = q ⊙ m → ∂/∂m_c = Σ_t d(qm)_tc q_tc.
            let r = qkRanks[h], off = qkOffsets[h]
            Linear.sgemm(transA: false, transB: false, m: n, n: r, k: keys, alpha: scale, a: dp, lda: keys,
                         b: k + off, ldb: qkW, beta: 0, c: dqm + off, ldc: qkW)
            for c in off..<(off + r) {
                var acc: Float = 0
                for t in 0..<n { acc += dqm[t * qkW + c] * q[t * qkW + c] }
                gqk[c] += gradientScale * Double(acc)
            }
        }
        return loss
    }

    /// Query tokens over the kept sequences.
    var tokens: Int { sequences.reduce(0) { $0 + $1.queries } }

    /// The loss over every kept sequence: the weighted mean over their tokens.
    func loss(mqk: [Float], mvo: [Float]) -> Double {
        let scratch = AttentionScratch()
        let total = sequences.reduce(0) { $0 + evaluate($1, mqk: mqk, mvo: mvo, scratch: scratch) }
        return total / Double(max(tokens, 1))
    }

    /// The exact gradient of `loss` over every kept sequence: (gqk, gvo).
    func gradient(mqk: [Float], mvo: [Float]) -> ([Double], [Double]) {
        let scratch = AttentionScratch()
        var gqk = [Double](repeating: 0, count: qkWidth), gvo = [Double](repeating: 0, count: voWidth)
        gqk.withUnsafeMutableBufferPointer { a in
            gvo.withUnsafeMutableBufferPointer { b in
                let scale = 1 / Double(max(tokens, 1))
                for s in sequences {
                    evaluate(s, mqk: mqk, mvo: mvo, scratch: scratch, gqk: a.baseAddress!, gvo: b.baseAddress!, gradientScale: scale)
                }
            }
        }
        return (gqk, gvo)
    }
}

enum SolutionPathMath {
    /// Σ_{t < scored} w_t D_t G D_tᵀ for D [rows, width] and G [width, width] (row-major),
    /// with D G written to `projected` for all `rows` rows (the gradient reuses it).
    static func weightedLoss(_ d: UnsafePointer<Float>, rows: Int, scored: Int? = nil, width: Int, metric g: UnsafePointer<Float>,
                             weights: [Float], projected: UnsafeMutablePointer<Float>) -> Double {
        Linear.sgemm(transA: false, transB: false, m: rows, n: width, k: width, alpha: 1, a: d, lda: width,
                     b: g, ldb: width, beta: 0, c: projected, ldc: width)
        var loss = 0.0
        for t in 0..<(scored ?? rows) {
            var dot: Float = 0
            for c in 0..<width { dot += d[t * width + c] * projected[t * width + c] }
            loss += Double(weights[t]) * Double(dot)
        }
        return loss
    }

    /// W Ω Wᵀ for W rows × d (row-major), Ω = diag(omega) or I.
    static func outputMetric(_ w: [Float], rows: Int, d: Int, omega: [Float]?) -> [Float] {
        var scaled = w
        if let omega {
            let root = omega.map { $0.squareRoot() }
            for i in 0..<rows { for j in 0..<d { scaled[i * d + j] *= root[j] } }
        }
        var out = [Float](repeating: 0, count: rows * rows)
        guard rows > 0, d > 0 else { return out }
        scaled.withUnsafeBufferPointer { p in
            out.withUnsafeMutableBufferPointer { o in
                Linear.sgemm(transA: false, transB: true, m: rows, n: rows, k: d, alpha: 1, a: p.baseAddress!, lda: d,
                             b: p.baseAddress!, ldb: d, beta: 0, c: o.baseAddress!, ldc: rows)
            }
        }
        return out
    }
}
