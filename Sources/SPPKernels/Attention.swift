import CKernels
import Glibc
import SPPCore

/// Fused multi-head self-attention with ragged per-head ranks: the kernel of
/// `spp.Attention` (the full contract is on `OpType.attention`).
///
/// Plan: the q, k and v projections are computed into one packed row buffer
/// `[B·S, Σqk | Σqk | Σvo]` (bias rows first, then three GEMMs accumulating
/// into their column ranges, so each head's q, k and v are strided views and
/// no head split/transposes are ever materialised). Then per batch row: one
/// product per head for the scores `q_h k_hᵀ · scale` into an `[S, S]` square
/// (one reused per thread when threads take whole heads, else one per head); the additive terms through broadcast strides (a
/// `[B, 1, 1, S]` mask is read in place, never expanded to `[B, H, S, S]`)
/// and the row softmax; one product per head writing `P v_h` straight into its
/// columns of a `[B·S, Σvo]` context buffer — heads spread over the cores. The
/// products are CKernels' `spp_sgemm_packed` (k_hᵀ and v_h packed in panels
/// first): no per-process setup as oneDNN's sgemm has (~24 ms on a first
/// call), no kernel to make per head rank and length as a matmul primitive. One
/// last GEMM with Wo (onto rows of bo) gives the output. Heads with vo rank 0
/// are skipped entirely. With int8 weights (`QuantizedWeights`) the projections
/// are one int8 GEMM and the Wo product another; the rest is the same float32.
public enum Attention {
    /// The attributes of the op, as the kernel needs them.
    public struct Parameters: Sendable, Equatable {
        public var qkRanks: [Int]
        public var voRanks: [Int]
        public var scale: Float
        public var causal: Bool

        public init(qkRanks: [Int], voRanks: [Int], scale: Float, causal: Bool) {
            self.qkRanks = qkRanks
            self.voRanks = voRanks
            self.scale = scale
            self.causal = causal
        }

        public var heads: Int { qkRanks.count }
        public var qkWidth: Int { qkRanks.reduce(0, +) }
        public var voWidth: Int { voRanks.reduce(0, +) }
    }

    /// The projection weights: `Wq, Wk [D, Σqk]`, `Wv [D, Σvo]`, `Wo [Σvo, D]`
    /// and biases of as many elements as their weight has columns.
    public struct Weights {
        public var wq, bq, wk, bk, wv, bv, wo, bo: Tensor
        public init(wq: Tensor, bq: Tensor, wk: Tensor, bk: Tensor, wv: Tensor, bv: Tensor, wo: Tensor, bo: Tensor) {
            (self.wq, self.bq, self.wk, self.bk, self.wv, self.bv, self.wo, self.bo) = (wq, bq, wk, bk, wv, bv, wo, bo)
        }

        /// Checks types and shapes against the hidden size and the ranks.
        func check(hidden: Int, _ p: Parameters) throws {
            try Attention.check(matrices: [("Wq", wq, [hidden, p.qkWidth]), ("Wk", wk, [hidden, p.qkWidth]), ("Wv", wv, [hidden, p.voWidth]),
                                           ("Wo", wo, [p.voWidth, hidden])],
                                biases: [("bq", bq, p.qkWidth), ("bk", bk, p.qkWidth), ("bv", bv, p.voWidth), ("bo", bo, hidden)])
        }
    }

    /// Float32 weights of the shapes given, and biases of as many elements (any leading ones).
    static func check(matrices: [(String, Tensor, [Int])], biases: [(String, Tensor, Int)]) throws {
        if let t = (matrices.map(\.1) + biases.map(\.1)).first(where: { $0.dtype != .float32 }) {
            throw KernelError.unsupportedDType(t.dtype, reason: "spp.Attention runs in float32")
        }
        for (what, t, shape) in matrices where t.shape != shape {
            throw KernelError.shapeMismatch("spp.Attention \(what) is \(Tensor.describe(t.shape)), expected \(Tensor.describe(shape))")
        }
        for (what, t, n) in biases where t.count != n || !(t.rank <= 1 || t.shape.dropLast().allSatisfy({ $0 == 1 })) {
            throw KernelError.shapeMismatch("spp.Attention \(what) is \(Tensor.describe(t.shape)), expected [\(n)]")
        }
    }

    /// The projection weights as the float32 kernel applies them, made once at
    /// load (`Projection`s): `[Wq | Wk | Wv]` as one layer, so one product fills the packed
    /// q, k, v rows (one pass over the input instead of three, and one wide product
    /// instead of three narrow ones where ranks are ragged), and Wo.
    public struct PreparedWeights: Sendable {
        public let qkv: Projection
        public let wo: Projection
        public let bo: Tensor
        public let qkWidth: Int, voWidth: Int

        public var hidden: Int { wo.columns }

        public init(_ w: Weights, _ p: Parameters) throws {
            // Each of Wq, Wk, Wv by name; the rest `init(qkv:)` checks.
            let hidden = w.bo.count
            try Attention.check(matrices: [("Wq", w.wq, [hidden, p.qkWidth]), ("Wk", w.wk, [hidden, p.qkWidth]), ("Wv", w.wv, [hidden, p.voWidth])], biases: [])
            try self.init(qkv: DataMovement.concat([w.wq, w.wk, w.wv], axis: 1), bq: w.bq, bk: w.bk, bv: w.bv, wo: w.wo, bo: w.bo, p)
        }

        /// From `[Wq | Wk | Wv]` already side by side (`qkv [D, 2·Σqk + Σvo]`, as a loader reads them).
        public init(qkv: Tensor, bq: Tensor, bk: Tensor, bv: Tensor, wo: Tensor, bo: Tensor, _ p: Parameters) throws {
            let hidden = bo.count
            try Attention.check(matrices: [("[Wq | Wk | Wv]", qkv, [hidden, 2 * p.qkWidth + p.voWidth]), ("Wo", wo, [p.voWidth, hidden])],
                                biases: [("bq", bq, p.qkWidth), ("bk", bk, p.qkWidth), ("bv", bv, p.voWidth), ("bo", bo, hidden)])
            self.qkv = try Projection(weights: qkv, bias: DataMovement.concat([bq, bk, bv].map { $0.reshaped([$0.count]) }, axis: 0))
            self.wo = try Projection(weights: wo, bias: bo)
            self.bo = bo.reshaped([hidden])
            (qkWidth, voWidth) = (p.qkWidth, p.voWidth)
        }
    }

    /// The projection weights in int8 (`QuantizedMatrix`), made once at load:
    /// `[Wq | Wk | Wv]` as one matrix, so one GEMM of the quantized input rows
    /// fills the packed q, k, v rows, and Wo. Activations are quantized to `range`.
    public struct QuantizedWeights: @unchecked Sendable {
        public let qkv: QuantizedMatrix
        /// `[bq | bk | bv]`.
        public let qkvBias: Tensor
        public let wo: QuantizedMatrix
        public let bo: Tensor
        public let qkWidth: Int, voWidth: Int
        public let range: ActivationRange

        public var hidden: Int { wo.columns }

        /// Quantizes float32 weights (per column, so each projection on its own).
        public init(_ w: Weights, _ p: Parameters, range: ActivationRange = .native) throws {
            try w.check(hidden: w.bo.count, p)
            try self.init(wq: QuantizedMatrix.quantize(w.wq), bq: w.bq, wk: QuantizedMatrix.quantize(w.wk), bk: w.bk,
                          wv: QuantizedMatrix.quantize(w.wv), bv: w.bv, wo: QuantizedMatrix(quantizing: w.wo), bo: w.bo, p, range: range)
        }

        /// From projections already in int8, each `values [D, n]` with its column
        /// scales `[n]` (a file that stores them so, or `QuantizedMatrix.quantize`):
        /// `[Wq | Wk | Wv]` keeps each one's scales and is packed once.
        public init(wq: (values: Tensor, scales: Tensor), bq: Tensor, wk: (values: Tensor, scales: Tensor), bk: Tensor,
                    wv: (values: Tensor, scales: Tensor), bv: Tensor, wo: QuantizedMatrix, bo: Tensor, _ p: Parameters,
                    range: ActivationRange = .native) throws {
            let hidden = bo.count
            for (what, m, n) in [("Wq", wq, p.qkWidth), ("Wk", wk, p.qkWidth), ("Wv", wv, p.voWidth)]
                where m.values.dtype != .int8 || m.values.shape != [hidden, n] || m.scales.dtype != .float32 || m.scales.count != n {
                throw KernelError.shapeMismatch("spp.Attention int8 \(what) is \(m.values.dtype) \(Tensor.describe(m.values.shape)) with \(m.scales.count) scales, expected int8 [\(hidden), \(n)]")
            }
            let values = try DataMovement.concat([wq.values, wk.values, wv.values], axis: 1)
            let scales = try DataMovement.concat([wq.scales, wk.scales, wv.scales].map { $0.reshaped([$0.count]) }, axis: 0)
            try self.init(qkv: QuantizedMatrix(values: values, scales: scales), bq: bq, bk: bk, bv: bv, wo: wo, bo: bo, p, range: range)
        }

        /// From `[Wq | Wk | Wv]` already packed (`QuantizedMatrix`, `[D, 2·Σqk + Σvo]`).
        public init(qkv: QuantizedMatrix, bq: Tensor, bk: Tensor, bv: Tensor, wo: QuantizedMatrix, bo: Tensor, _ p: Parameters,
                    range: ActivationRange = .native) throws {
            let hidden = bo.count
            let (qk, vo) = (p.qkWidth, p.voWidth)
            guard qkv.rows == hidden, qkv.columns == 2 * qk + vo else {
                throw KernelError.shapeMismatch("spp.Attention int8 [Wq | Wk | Wv] is [\(qkv.rows), \(qkv.columns)], expected [\(hidden), \(2 * qk + vo)]")
            }
            guard wo.rows == vo, wo.columns == hidden else {
                throw KernelError.shapeMismatch("spp.Attention int8 Wo is [\(wo.rows), \(wo.columns)], expected [\(vo), \(hidden)]")
            }
            for (what, t, n) in [("bq", bq, qk), ("bk", bk, qk), ("bv", bv, vo), ("bo", bo, hidden)] where t.dtype != .float32 || t.count != n {
                throw KernelError.shapeMismatch("spp.Attention \(what) is \(t.dtype) \(Tensor.describe(t.shape)), expected float32 [\(n)]")
            }
            qkvBias = try DataMovement.concat([bq, bk, bv].map { $0.reshaped([$0.count]) }, axis: 0)
            self.qkv = qkv
            self.wo = wo
            self.bo = bo.reshaped([hidden])
            (qkWidth, voWidth, self.range) = (qk, vo, range)
        }
    }

    /// Sizes checked once for both the fast kernels and the reference; the
    /// weights are checked by whoever holds them (`Weights.check`, `QuantizedWeights`).
    struct Geometry {
        let batch: Int, seq: Int, hidden: Int, heads: Int
        let qkWidth: Int, voWidth: Int
        /// Column of each head's first q (k) and v column.
        let qkOffsets: [Int], voOffsets: [Int]
        let mask: Term?, bias: Term?

        init(_ x: Tensor, mask: Tensor?, bias: Tensor?, _ p: Parameters) throws {
            if let t = ([x] + [mask, bias].compactMap { $0 }).first(where: { $0.dtype != .float32 }) {
                throw KernelError.unsupportedDType(t.dtype, reason: "spp.Attention runs in float32")
            }
            guard x.rank == 3 else { throw KernelError.shapeMismatch("spp.Attention input \(Tensor.describe(x.shape)) is not [batch, seq, hidden]") }
            guard p.heads > 0, p.voRanks.count == p.heads, (p.qkRanks + p.voRanks).allSatisfy({ $0 >= 0 }) else {
                throw KernelError.invalidArgument("spp.Attention ranks \(p.qkRanks) / \(p.voRanks) do not describe the same heads")
            }
            (batch, seq, hidden, heads) = (x.shape[0], x.shape[1], x.shape[2], p.heads)
            (qkWidth, voWidth) = (p.qkWidth, p.voWidth)
            var acc = 0
            qkOffsets = p.qkRanks.map { r in defer { acc += r }; return acc }
            acc = 0
            voOffsets = p.voRanks.map { r in defer { acc += r }; return acc }
            let target = [batch, heads, seq, seq]
            self.mask = try mask.map { try Term($0, target: target, what: "mask") }
            self.bias = try bias.map { try Term($0, target: target, what: "bias") }
        }

        /// Prepared weights (float32 or int8) must fit the input and the ranks.
        func check(hidden: Int, qkWidth: Int, voWidth: Int, _ shape: [Int]) throws {
            guard self.hidden == hidden, self.qkWidth == qkWidth, self.voWidth == voWidth else {
                throw KernelError.shapeMismatch("spp.Attention input \(Tensor.describe(shape)) with ranks \(self.qkWidth) / \(self.voWidth) does not fit weights for hidden size \(hidden) and ranks \(qkWidth) / \(voWidth)")
            }
        }
    }

    /// An additive score term seen as `[B, H, S, S]` through element strides (0 where broadcast).
    public struct Term {
        let pointer: UnsafeMutablePointer<Float>
        /// Strides along batch, head, query and key.
        public let sb: Int, sh: Int, si: Int, sj: Int

        public init(_ t: Tensor, target: [Int], what: String) throws {
            guard t.rank <= 4 else { throw KernelError.shapeMismatch("spp.Attention \(what) \(Tensor.describe(t.shape)) has rank above 4") }
            let shape = [Int](repeating: 1, count: 4 - t.rank) + t.shape
            var strides = [Int](repeating: 0, count: 4)
            var acc = 1
            for i in stride(from: 3, through: 0, by: -1) {
                guard shape[i] == 1 || shape[i] == target[i] else {
                    throw KernelError.shapeMismatch("spp.Attention \(what) \(Tensor.describe(t.shape)) does not broadcast to \(Tensor.describe(target))")
                }
                strides[i] = shape[i] == 1 ? 0 : acc
                acc *= shape[i]
            }
            pointer = t.pointer(as: Float.self)
            (sb, sh, si, sj) = (strides[0], strides[1], strides[2], strides[3])
        }

        /// Row (b, h, i) when its keys are contiguous.
        @inline(__always) func contiguousRow(_ b: Int, _ h: Int, _ i: Int) -> UnsafePointer<Float>? {
            sj == 1 ? UnsafePointer(pointer + b * sb + h * sh + i * si) : nil
        }

        /// Whether batch row `b` of a term that varies only along batch and key
        /// (a padding mask, `[B, 1, 1, S]`) is all zero; false for any other term.
        func isZero(batch b: Int, keys: Int) -> Bool {
            guard sh == 0, si == 0 else { return false }
            let base = pointer + b * sb
            for j in 0..<(sj == 0 ? 1 : keys) where base[j * sj] != 0 { return false }
            return true
        }

        /// Adds row (b, h, i) of the term to the first `count` entries of `row`.
        @inline(__always) public func add(to row: UnsafeMutablePointer<Float>, count: Int, _ b: Int, _ h: Int, _ i: Int) {
            let base = pointer + b * sb + h * sh + i * si
            if sj == 1 {
                // The usual case (a padding mask, a bias over keys): the vectorised C loop.
                spp_binary(0, row, base, row, count)
            } else if sj == 0 {
                let v = base[0]
                for j in 0..<count { row[j] += v }
            } else {
                for j in 0..<count { row[j] += base[j &* sj] }
            }
        }
    }

    /// Runs the block on `x [B, S, D]`; returns `[B, S, D]`. A caller that runs
    /// the same weights more than once prepares them itself, once (`PreparedWeights`).
    public static func run(_ x: Tensor, _ w: Weights, mask: Tensor?, bias: Tensor?, _ p: Parameters) throws -> Tensor {
        try run(x, PreparedWeights(w, p), mask: mask, bias: bias, p)
    }

    /// Runs the block on `x [B, S, D]` with prepared float32 weights.
    public static func run(_ x: Tensor, _ w: PreparedWeights, mask: Tensor?, bias: Tensor?, _ p: Parameters) throws -> Tensor {
        let g = try Geometry(x, mask: mask, bias: bias, p)
        try g.check(hidden: w.hidden, qkWidth: w.qkWidth, voWidth: w.voWidth, x.shape)
        let rows = g.batch * g.seq
        return attend(g, p, shape: x.shape, bo: w.bo.pointer(as: Float.self), project: { qkv, _ in
            w.qkv.apply(x.pointer(as: Float.self), rows: rows, into: qkv)
        }, output: { ctx, po in
            w.wo.apply(ctx, rows: rows, into: po)
        })
    }

    /// Runs the block with int8 projection weights: the same plan, with the two
    /// weight GEMMs (packed q/k/v, then Wo) through `Linear.int8Gemm`; scores,
    /// softmax and the context products stay in float32.
    public static func run(_ x: Tensor, _ w: QuantizedWeights, mask: Tensor?, bias: Tensor?, _ p: Parameters) throws -> Tensor {
        let g = try Geometry(x, mask: mask, bias: bias, p)
        try g.check(hidden: w.hidden, qkWidth: w.qkWidth, voWidth: w.voWidth, x.shape)
        let rows = g.batch * g.seq, hidden = g.hidden
        let px = x.pointer(as: Float.self), bo = w.bo.pointer(as: Float.self)
        return try attend(g, p, shape: x.shape, bo: bo, project: { qkv, width in
            try Linear.int8Gemm(m: rows, a: px, lda: hidden, w: w.qkv, bias: w.qkvBias.pointer(as: Float.self), c: qkv, ldc: width, range: w.range)
        }, output: { ctx, po in
            try Linear.int8Gemm(m: rows, a: ctx, lda: g.voWidth, w: w.wo, bias: bo, c: po, ldc: hidden, range: w.range)
        })
    }

    /// Everything between the weight GEMMs. `project(qkv, width)` fills the packed
    /// rows `[B·S, Σqk | Σqk | Σvo]` (biases included); `output(ctx, out)` writes
    /// `ctx · Wo + bo` into the output rows.
    static func attend(_ g: Geometry, _ p: Parameters, shape: [Int], bo: UnsafePointer<Float>,
                       project: (UnsafeMutablePointer<Float>, Int) throws -> Void,
                       output: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) throws -> Void) rethrows -> Tensor {
        let (batch, seq, hidden) = (g.batch, g.seq, g.hidden)
        let rows = batch * seq
        let out = Tensor(dtype: .float32, shape: shape)
        let po = out.pointer(as: Float.self)
        if rows == 0 || g.voWidth == 0 {
            Linear.fillRows(po, rows: rows, ld: hidden, with: bo, count: hidden)
            return out
        }

        // Packed projections: row r holds q (Σqk), k (Σqk), v (Σvo) of token r.
        let width = 2 * g.qkWidth + g.voWidth
        let kBase = g.qkWidth, vBase = 2 * g.qkWidth
        let active = (0..<g.heads).filter { p.voRanks[$0] > 0 }
        let square = seq * seq
        // With at least as many heads as threads, threads take whole heads (scores,
        // softmax, context: one fork and join per batch row, each product on one thread),
        // once there are ~64K multiply-adds per thread, each thread with one square
        // of scores. With fewer heads the products run one after the other, their rows
        // split over the threads, the softmax rows in parallel, all heads' scores held.
        let byHead = active.count >= kernelThreads
        let perHead = square * ((p.qkRanks.max() ?? 0) + (p.voRanks.max() ?? 0)) + 1
        let workers = max(1, min(kernelThreads, active.count / max(1, (1 << 16) / perHead)))
        let squares = byHead ? workers : active.count
        // The products' right-hand sides packed in panels (a head's keys transposed, its
        // values), a buffer per thread that takes whole heads, else one.
        let maxRank = max(p.qkRanks.max() ?? 0, p.voRanks.max() ?? 0)
        let packedCount = max(spp_packed_count(maxRank, seq), spp_packed_count(seq, maxRank))
        let panelBuffers = byHead ? workers : 1
        // One scratch buffer: the projections, the context, the squares of scores,
        // 1 / Σ e of each score row (the softmax divides the context rows, vo rank
        // values each, instead of the probabilities, seq values each) and the packed panels.
        return try withScratch(Float.self, count: rows * width + rows * g.voWidth + squares * (square + seq) + panelBuffers * packedCount) { qkv in
            let ctx = qkv + rows * width
            let scores = ctx + rows * g.voWidth
            let inverseSums = scores + squares * square
            let panels = inverseSums + squares * seq
            try project(qkv, width)

            for b in 0..<batch {
                let tokens = qkv + b * seq * width
                // The products are `spp_sgemm_packed` (no setup, whatever the head's rank): on the
                // thread that took the head, or with fewer heads than threads their rows over the threads.
                func scoresOf(_ slot: Int, into s: UnsafeMutablePointer<Float>, panels: UnsafeMutablePointer<Float>) {
                    let h = active[slot], rank = p.qkRanks[h]
                    guard rank > 0 else { return s.update(repeating: 0, count: square) }
                    spp_pack_panels(tokens + kBase + g.qkOffsets[h], width, 1, rank, seq, panels)
                    Self.rows(seq, split: !byHead, multiplyAddsPerRow: seq * rank) { r in
                        spp_sgemm_packed(r.count, seq, rank, p.scale, tokens + r.lowerBound * width + g.qkOffsets[h], width, 1,
                                         panels, rank, s + r.lowerBound * seq, seq)
                    }
                }
                // A padding mask with nothing masked in this batch row (the usual case) adds nothing.
                let mask = g.mask.flatMap { $0.isZero(batch: b, keys: seq) ? nil : $0 }
                func softmax(_ slot: Int, row i: Int, of s: UnsafeMutablePointer<Float>, sums: UnsafeMutablePointer<Float>) {
                    sums[i] = softmaxRow(s + i * seq, count: p.causal ? min(i + 1, seq) : seq, stride: seq,
                                         mask: mask, bias: g.bias, b: b, h: active[slot], i: i)
                }
                func contextOf(_ slot: Int, from s: UnsafeMutablePointer<Float>, sums: UnsafeMutablePointer<Float>,
                               panels: UnsafeMutablePointer<Float>) {
                    let h = active[slot], rank = p.voRanks[h]
                    let out = ctx + b * seq * g.voWidth + g.voOffsets[h]
                    spp_pack_panels(tokens + vBase + g.voOffsets[h], width, 0, seq, rank, panels)
                    Self.rows(seq, split: !byHead, multiplyAddsPerRow: seq * rank) { r in
                        spp_sgemm_packed(r.count, rank, seq, 1, s + r.lowerBound * seq, seq, 1, panels, seq,
                                         out + r.lowerBound * g.voWidth, g.voWidth)
                        spp_scale_rows(out + r.lowerBound * g.voWidth, g.voWidth, r.count, rank, sums + r.lowerBound)
                    }
                }
                if byHead {
                    Parallel.forEachItem(active.count, threads: workers) { slot, thread in
                        let (s, sums, packed) = (scores + thread * square, inverseSums + thread * seq, panels + thread * packedCount)
                        scoresOf(slot, into: s, panels: packed)
                        for i in 0..<seq { softmax(slot, row: i, of: s, sums: sums) }
                        contextOf(slot, from: s, sums: sums, panels: packed)
                    }
                } else {
                    for slot in active.indices { scoresOf(slot, into: scores + slot * square, panels: panels) }
                    Parallel.forEachChunk(active.count * seq, minimumChunk: max(1, 4096 / max(seq, 1))) { range in
                        for r in range {
                            let (slot, i) = r.quotientAndRemainder(dividingBy: seq)
                            softmax(slot, row: i, of: scores + slot * square, sums: inverseSums + slot * seq)
                        }
                    }
                    for slot in active.indices {
                        contextOf(slot, from: scores + slot * square, sums: inverseSums + slot * seq, panels: panels)
                    }
                }
            }
            try output(ctx, po)
            return out
        }
    }

    /// `body` over rows [0, count): at once, or (`split`) in chunks of ~64K multiply-adds
    /// or more on the kernel threads.
    static func rows(_ count: Int, split: Bool, multiplyAddsPerRow: Int, _ body: (Range<Int>) -> Void) {
        if split {
            Parallel.forEachChunk(count, minimumChunk: max(1, (1 << 16) / max(multiplyAddsPerRow, 1)), body)
        } else {
            body(0..<count)
        }
    }

    /// Adds the terms to the first `count` scores of a row, then turns the row into
    /// e^(score − max) and returns 1 / their sum (`spp_softmax_exp`); the keys
    /// from `count` on (causal) get 0.
    @inline(__always)
    static func softmaxRow(_ row: UnsafeMutablePointer<Float>, count: Int, stride: Int,
                           mask: Term?, bias: Term?, b: Int, h: Int, i: Int) -> Float {
        // One term with contiguous keys is added inside the softmax's first pass.
        let inverse: Float
        if bias == nil, let mask, let terms = mask.contiguousRow(b, h, i) {
            inverse = spp_softmax_exp(row, terms, count)
        } else {
            mask?.add(to: row, count: count, b, h, i)
            bias?.add(to: row, count: count, b, h, i)
            inverse = spp_softmax_exp(row, nil, count)
        }
        if count < stride { (row + count).update(repeating: 0, count: stride - count) }
        return inverse
    }

    /// The reference: the contract computed from its definition with loops in
    /// Double, one head at a time, without any of the fast path's buffers.
    public static func naive(_ x: Tensor, _ w: Weights, mask: Tensor?, bias: Tensor?, _ p: Parameters) throws -> Tensor {
        let g = try Geometry(x, mask: mask, bias: bias, p)
        try w.check(hidden: g.hidden, p)
        let (batch, seq, hidden) = (g.batch, g.seq, g.hidden)
        let xs = x.buffer(as: Float.self)
        func project(_ weight: Tensor, _ b: Tensor, _ columns: Range<Int>) -> [[Double]] {
            let wp = weight.buffer(as: Float.self), bp = b.buffer(as: Float.self), n = weight.shape[1]
            return (0..<batch * seq).map { r in
                columns.map { c in
                    var s = Double(bp[c])
                    for k in 0..<hidden { s += Double(xs[r * hidden + k]) * Double(wp[k * n + c]) }
                    return s
                }
            }
        }
        func termValue(_ t: Tensor?, _ index: [Int]) -> Double {
            guard let t else { return 0 }
            let shape = [Int](repeating: 1, count: 4 - t.rank) + t.shape
            var flat = 0
            for d in 0..<4 { flat = flat * shape[d] + (shape[d] == 1 ? 0 : index[d]) }
            return Double(t.buffer(as: Float.self)[flat])
        }
        var ctx = [Double](repeating: 0, count: batch * seq * g.voWidth)
        for h in 0..<g.heads {
            let qc = g.qkOffsets[h]..<(g.qkOffsets[h] + p.qkRanks[h]), vc = g.voOffsets[h]..<(g.voOffsets[h] + p.voRanks[h])
            let q = project(w.wq, w.bq, qc), k = project(w.wk, w.bk, qc), v = project(w.wv, w.bv, vc)
            for b in 0..<batch {
                for i in 0..<seq {
                    var logits = [Double](repeating: -.infinity, count: seq)
                    for j in 0..<seq where !(p.causal && j > i) {
                        var dot = 0.0
                        for c in 0..<qc.count { dot += q[b * seq + i][c] * k[b * seq + j][c] }
                        logits[j] = Double(p.scale) * dot + termValue(mask, [b, h, i, j]) + termValue(bias, [b, h, i, j])
                    }
                    let m = logits.max() ?? 0
                    let e = logits.map { Glibc.exp($0 - m) }
                    let total = e.reduce(0, +)
                    for c in 0..<vc.count {
                        var s = 0.0
                        for j in 0..<seq { s += e[j] / total * v[b * seq + j][c] }
                        ctx[(b * seq + i) * g.voWidth + vc.lowerBound + c] = s
                    }
                }
            }
        }
        let out = Tensor(dtype: .float32, shape: x.shape)
        let po = out.buffer(as: Float.self), wo = w.wo.buffer(as: Float.self), bo = w.bo.buffer(as: Float.self)
        for r in 0..<batch * seq {
            for d in 0..<hidden {
                var s = Double(bo[d])
                for c in 0..<g.voWidth { s += ctx[r * g.voWidth + c] * Double(wo[c * hidden + d]) }
                po[r * hidden + d] = Float(s)
            }
        }
        return out
    }
}
