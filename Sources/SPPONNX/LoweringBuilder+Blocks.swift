import SPPCore
import SPPGraph

// The fused blocks in standard operators.
//
// `spp.Attention` (x [B, S, D]; Hₑ heads written, each padded to r qk and v vo columns):
//
//     q = Reshape(MatMul(x, Wq') + bq', [0, 0, Hₑ, r]) → Transpose(0, 2, 1, 3)    [B, Hₑ, S, r]
//     k = Reshape(MatMul(x, Wk') + bk', [0, 0, Hₑ, r]) → Transpose(0, 2, 3, 1)    [B, Hₑ, r, S]
//     v = Reshape(MatMul(x, Wv') + bv', [0, 0, Hₑ, v]) → Transpose(0, 2, 1, 3)    [B, Hₑ, S, v]
//     s = MatMul(q, k) · scale + mask + bias       (terms gathered to the heads written)
//     s = Where(key > query, -inf, s)              (causal only)
//     y = Reshape(Transpose(MatMul(Softmax(s, -1), v), 0, 2, 1, 3), [0, 0, Hₑ·v]) · Wo' + bo
//
// Wq' holds head h's qk columns in slot h of width r, zeros after them (likewise
// bq', Wk', bk'; Wv', bv' and the rows of Wo' with width v). The zeros are exact:
// a zero column of q and k adds 0 to every score, and a zero column of v meets a
// zero row of Wo'. Heads with vo rank 0 contribute nothing and are left out, and
// a term with a per-head axis is gathered to the heads kept; when a term's head
// axis has an unknown size every head is written instead (padded with zeros).
// With no qk rank anywhere one zero column remains: uniform attention, as in the kernel.

extension LoweringBuilder {
    /// A constant input of a fused node, float32.
    private func weight(_ node: Node, _ index: Int, _ role: String) throws -> Tensor {
        guard let name = node.input(index), let t = initializers[name] else {
            throw ONNXExportError.nonConstantWeight(node: node.name, op: node.op.rawValue, input: node.input(index) ?? role)
        }
        guard t.dtype == .float32 else {
            throw ONNXExportError.unsupportedDataType(node: node.name, op: node.op.rawValue, value: name, dtype: t.dtype)
        }
        return t
    }

    func attention(_ node: Node) throws {
        typealias In = AttentionAttributes.Input
        let a = try node.attentionAttributes()
        guard let x = node.input(In.x.rawValue), let y = node.outputs.first else {
            throw ONNXExportError.cannotLower(node: node.name, op: node.op.rawValue, reason: "needs an input and an output")
        }
        let wq = try weight(node, In.wq.rawValue, "Wq"), bq = try weight(node, In.bq.rawValue, "bq")
        let wk = try weight(node, In.wk.rawValue, "Wk"), bk = try weight(node, In.bk.rawValue, "bk")
        let wv = try weight(node, In.wv.rawValue, "Wv"), bv = try weight(node, In.bv.rawValue, "bv")
        let wo = try weight(node, In.wo.rawValue, "Wo"), bo = try weight(node, In.bo.rawValue, "bo")
        // The padding below indexes these tensors directly: their sizes must be those the kernel checks.
        let d = wo.shape.last ?? 0
        guard wq.shape == [d, a.qkWidth], wk.shape == [d, a.qkWidth], wv.shape == [d, a.voWidth], wo.shape == [a.voWidth, d],
              bq.count == a.qkWidth, bk.count == a.qkWidth, bv.count == a.voWidth, bo.count == d else {
            throw ONNXExportError.cannotLower(node: node.name, op: node.op.rawValue,
                                              reason: "weights Wq \(Tensor.describe(wq.shape)), Wk \(Tensor.describe(wk.shape)), Wv \(Tensor.describe(wv.shape)), Wo \(Tensor.describe(wo.shape)) do not fit ranks \(a.qkRanks) / \(a.voRanks)")
        }
        let base = node.name
        counted(node)
        let bias1D = constant("\(base)/bo", bo.reshaped([d]))

        // Heads written: those with v·o directions, unless a term's head axis is of unknown size.
        var heads = (0..<a.heads).filter { a.voRanks[$0] > 0 }
        var gather: [Int: Bool] = [:]  // input index → term has a head axis of size H
        for i in [In.mask.rawValue, In.bias.rawValue] {
            guard let name = node.input(i) else { continue }
            guard let shape = infos[name]?.shape else { heads = Array(0..<a.heads); continue }
            if shape.count < 3 || shape[shape.count - 3] == .fixed(1) { gather[i] = false }
            else if shape[shape.count - 3] == .fixed(a.heads) { gather[i] = true }
            else { heads = Array(0..<a.heads) }
        }
        if heads.isEmpty {
            // Every vo rank is 0: the output is bo on every token.
            emit(.expand, [bias1D, emit(.shape, [x], "\(base)/x_shape")], "\(base)/bo_expand", output: y)
            report.attention.append(.init(node: base, qkRanks: a.qkRanks, voRanks: a.voRanks, heads: 0, qkPadded: 0, voPadded: 0))
            return
        }
        let r = max(1, heads.map { a.qkRanks[$0] }.max()!), v = heads.map { a.voRanks[$0] }.max()!
        report.attention.append(.init(node: base, qkRanks: a.qkRanks, voRanks: a.voRanks, heads: heads.count, qkPadded: r, voPadded: v))
        let qkOffsets = offsets(a.qkRanks), voOffsets = offsets(a.voRanks)
        let h = heads.count

        func project(_ w: Tensor, _ b: Tensor, _ ranks: [Int], _ starts: [Int], _ width: Int, _ tag: String, _ perm: [Int]) -> String {
            let wName = constant("\(base)/W\(tag)", padColumns(w, heads, ranks, starts, width))
            let bName = constant("\(base)/b\(tag)", padColumns(b.reshaped([1, b.count]), heads, ranks, starts, width).reshaped([h * width]))
            let p = emit(.matMul, [x, wName], "\(base)/\(tag)_matmul")
            let biased = emit(.add, [p, bName], "\(base)/\(tag)_add")
            let split = emit(.reshape, [biased, int64s("\(base)/\(tag)_heads_shape", [0, 0, h, width])], "\(base)/\(tag)_reshape")
            return emit(.transpose, [split], "\(base)/\(tag)_transpose", ["perm": .ints(perm)])
        }
        let q = project(wq, bq, a.qkRanks, qkOffsets, r, "q", [0, 2, 1, 3])
        let k = project(wk, bk, a.qkRanks, qkOffsets, r, "k", [0, 2, 3, 1])
        let vh = project(wv, bv, a.voRanks, voOffsets, v, "v", [0, 2, 1, 3])

        var s = emit(.matMul, [q, k], "\(base)/scores")
        s = emit(.mul, [s, scalar("\(base)/scale", a.scale)], "\(base)/scores_scaled")
        // Mask first, then bias: the order in which the kernel adds them.
        for (i, tag) in [(In.mask.rawValue, "mask"), (In.bias.rawValue, "bias")] {
            guard var term = node.input(i) else { continue }
            if h < a.heads, gather[i] == true, let rank = infos[term]?.shape?.count {
                term = emit(.gather, [term, int64s("\(base)/\(tag)_heads", heads)], "\(base)/\(tag)_gather", ["axis": .int(rank - 3)])
            }
            s = emit(.add, [s, term], "\(base)/scores_\(tag)")
        }
        if a.causal {
            // Keys after the query: the strict upper triangle of an [S, S] matrix of ones.
            let seq = emit(.shape, [x], "\(base)/seq", ["start": .int(1), "end": .int(2)])
            let square = emit(.concat, [seq, seq], "\(base)/seq_square", ["axis": .int(0)])
            let ones = emit(.constantOfShape, [square], "\(base)/ones", ["value": .tensor(.init(Tensor([Float(1)], shape: [1])))])
            let upper = emit(.trilu, [ones, constant("\(base)/diagonal_offset", Tensor([Int64(1)], shape: []))], "\(base)/future", ["upper": .int(1)])
            let future = emit(.cast, [upper], "\(base)/future_bool", ["to": .int(Int(DType.bool.rawValue))])
            s = emit(.where, [future, scalar("\(base)/minus_inf", -.infinity), s], "\(base)/scores_causal")
        }
        let p = emit(.softmax, [s], "\(base)/probs", ["axis": .int(-1)])
        let ctx = emit(.matMul, [p, vh], "\(base)/context")
        let merged = emit(.transpose, [ctx], "\(base)/context_transpose", ["perm": .ints([0, 2, 1, 3])])
        let flat = emit(.reshape, [merged, int64s("\(base)/context_shape", [0, 0, h * v])], "\(base)/context_reshape")
        let woName = constant("\(base)/Wo", padRows(wo, heads, a.voRanks, voOffsets, v))
        let out = emit(.matMul, [flat, woName], "\(base)/o_matmul")
        emit(.add, [out, bias1D], "\(base)/o_add", output: y)
    }

    func feedForward(_ node: Node) throws {
        guard let x = node.input(0), let y = node.outputs.first, node.inputs.count >= 5 else {
            throw ONNXExportError.cannotLower(node: node.name, op: node.op.rawValue, reason: "needs x, W1, b1, W2, b2 and an output")
        }
        let activation = try node.feedForwardActivation()
        let base = node.name
        counted(node)
        // No hidden neuron left: the output is b2 on every token.
        let width = (initializers[node.inputs[1]]?.shape ?? infos[node.inputs[1]]?.shape?.compactMap(\.fixedValue))?.last
        if width == 0 {
            emit(.expand, [node.inputs[4], emit(.shape, [x], "\(base)/x_shape")], "\(base)/b2_expand", output: y)
            return
        }
        let h1 = emit(.matMul, [x, node.inputs[1]], "\(base)/w1_matmul")
        let h2 = emit(.add, [h1, node.inputs[2]], "\(base)/b1_add")
        let h3 = self.activation(activation, h2, base)
        let o = emit(.matMul, [h3, node.inputs[3]], "\(base)/w2_matmul")
        emit(.add, [o, node.inputs[4]], "\(base)/b2_add", output: y)
    }

    private func offsets(_ ranks: [Int]) -> [Int] {
        var acc = 0
        return ranks.map { r in defer { acc += r }; return acc }
    }

    /// Columns of head `heads[s]` into slot s of width `width`, zeros after them: [rows, heads.count · width].
    private func padColumns(_ w: Tensor, _ heads: [Int], _ ranks: [Int], _ starts: [Int], _ width: Int) -> Tensor {
        let rows = w.shape[0], n = w.shape[1], cols = heads.count * width
        let out = Tensor(dtype: .float32, shape: [rows, cols], zeroed: true)
        let src = w.pointer(as: Float.self), dst = out.pointer(as: Float.self)
        for (slot, h) in heads.enumerated() {
            for row in 0..<rows {
                (dst + row * cols + slot * width).update(from: src + row * n + starts[h], count: ranks[h])
            }
        }
        return out
    }

    /// Rows of head `heads[s]` into slot s of height `width`, zero rows after them: [heads.count · width, D].
    private func padRows(_ w: Tensor, _ heads: [Int], _ ranks: [Int], _ starts: [Int], _ width: Int) -> Tensor {
        let d = w.shape[1]
        let out = Tensor(dtype: .float32, shape: [heads.count * width, d], zeroed: true)
        let src = w.pointer(as: Float.self), dst = out.pointer(as: Float.self)
        for (slot, h) in heads.enumerated() {
            (dst + slot * width * d).update(from: src + starts[h] * d, count: ranks[h] * d)
        }
        return out
    }
}
