import SPPCore
import SPPGraph

/// Recognising a multi-head self-attention block around a Softmax.
///
/// From the Softmax back: additive terms (`Add` of a mask or position bias),
/// a causal `Where(tril, scores, min)`, scalar scales (`Mul`/`Div`), then
/// `MatMul(q_heads, k_headsᵀ)`. q and k back through Transpose/Reshape (head
/// split, with scalar scales anywhere — transformers 5.x multiplies both by
/// √scale) to a linear projection of one x; a fused QKV projection is a
/// Split or Slice of one. Forward from the Softmax: `MatMul(P, v_heads)`, the
/// head merge (Transpose, Reshape) and the output projection.
extension GraphIndex {
    /// Head layouts relative to the split `[B, S, H, d] = Reshape(x W + b)`:
    /// q and v are read as `[B, H, S, d]`, k as `[B, H, d, S]` (kᵀ), and the
    /// context goes back to `[B, S, H, d]` before the merge.
    static let queryLayout = [0, 2, 1, 3], keyLayout = [0, 2, 3, 1], valueLayout = [0, 2, 1, 3], mergeLayout = [0, 2, 1, 3]
    /// A Where fill at or below this is a mask (exporters use the float32 minimum or -1e4 … -1e9).
    static let maskFillLimit = -1.0e4

    /// What was found on the way from the Softmax back to q·kᵀ.
    struct ScoreChain {
        var matMul: Int
        var scale = 1.0
        var terms: [String] = []
        var causal = false
        var nodes: Set<Int> = []
    }

    /// One of q, k, v: its projection and head split.
    struct HeadSplit {
        var projection: LinearMatch
        var heads: Int
        var headSize: Int
        /// Scalar factors met between the projection and the MatMul.
        var scale: Double
        var nodes: Set<Int>
    }

    func attention(softmax si: Int) throws -> BlockRewrite {
        let softmax = node(si)
        guard let input = softmax.input(0), let scores = shape(input), scores.count == 4, dtype(input) == .float32 else {
            throw MatchFailure("the Softmax input \(describe(softmax.input(0) ?? "")) is not a float32 [batch, heads, seq, seq]")
        }
        let axis = try softmax.int("axis", default: -1)
        guard axis == -1 || axis == 3 else { throw MatchFailure("the Softmax is over axis \(axis), not the keys") }

        let chain = try scoreChain(input, scaled: false, scores: scores)
        let matMul = node(chain.matMul)
        let q = try heads(matMul.inputs[0], layout: Self.queryLayout, role: "q")
        let k = try heads(matMul.inputs[1], layout: Self.keyLayout, role: "k")

        // Forward: the probabilities (through float casts) into MatMul(P, v).
        var probabilities = softmax.outputs[0]
        var nodes: Set<Int> = chain.nodes.union([chain.matMul, si])
        var pv: (index: Int, node: Node)? = nil
        while pv == nil {
            guard let (i, n) = soleReader(probabilities) else {
                throw MatchFailure("the probabilities '\(probabilities)' are \(readersDescription(probabilities)), not only by MatMul(P, v)")
            }
            if isIdentityCast(n) {
                nodes.insert(i)
                probabilities = n.outputs[0]
            } else if n.op == .matMul, n.inputs.first == probabilities {
                pv = (i, n)
            } else {
                throw MatchFailure("the probabilities go to \(n.op.rawValue) '\(n.name)', not MatMul(P, v)")
            }
        }
        let v = try heads(pv!.node.inputs[1], layout: Self.valueLayout, role: "v")
        let (merged, mergeNodes) = try headMerge(pv!.node.outputs[0], heads: v.heads, headSize: v.headSize)
        let out = try linear(reading: merged)

        let x = q.projection.x
        guard k.projection.x == x, v.projection.x == x else {
            throw MatchFailure("q, k and v are not projections of one input (cross-attention is not fused)")
        }
        guard q.heads == k.heads, k.heads == v.heads, q.headSize == k.headSize else {
            throw MatchFailure("q, k, v split into \(q.heads)×\(q.headSize), \(k.heads)×\(k.headSize), \(v.heads)×\(v.headSize) heads")
        }
        guard let xs = shape(x), xs.count == 3, let d = xs[2].fixedValue, dtype(x) == .float32 else {
            throw MatchFailure("the block input \(describe(x)) is not a float32 [batch, seq, hidden]")
        }
        guard out.outputWidth == d, out.inputWidth == v.heads * v.headSize else {
            throw MatchFailure("the output projection is \(Tensor.describe(out.weight.shape)), expected [\(v.heads * v.headSize), \(d)]")
        }
        guard scores == [xs[0], .fixed(q.heads), xs[1], xs[1]] else {
            throw MatchFailure("the scores are \(describe(input)), not [batch, \(q.heads), seq, seq] of \(describe(x))")
        }
        guard shape(out.output) == xs else { throw MatchFailure("the block output \(describe(out.output)) differs from its input \(describe(x))") }

        // Additive terms: a mask (one value for all heads) and a position bias (per head).
        var mask: String? = nil, bias: String? = nil
        for t in chain.terms {
            let term = try additiveTerm(t, scores: scores)
            let s = shape(term) ?? []
            let perHead = s.count >= 3 && s[s.count - 3] != .fixed(1)
            if perHead {
                guard bias == nil else { throw MatchFailure("more than one per-head term is added to the scores") }
                bias = term
            } else {
                guard mask == nil else { throw MatchFailure("more than one mask is added to the scores") }
                mask = term
            }
        }

        nodes.formUnion([pv!.index])
        for part in [q.nodes, k.nodes, v.nodes, q.projection.nodes, k.projection.nodes, v.projection.nodes, mergeNodes, out.nodes] {
            nodes.formUnion(part)
        }
        let replaced = try closed(nodes, output: out.output)

        let vProjection = v.projection.scaled(v.scale)
        let attributes = AttentionAttributes(
            heads: q.heads, qkRanks: [Int](repeating: q.headSize, count: q.heads), voRanks: [Int](repeating: v.headSize, count: v.heads),
            scale: Float(chain.scale * q.scale * k.scale), causal: chain.causal)
        var block = BlockReport.Block(kind: .attention, layer: 0, node: "", hidden: d)
        (block.heads, block.headSize, block.valueHeadSize) = (q.heads, q.headSize, v.headSize)
        (block.causal, block.hasMask, block.hasBias, block.replacedNodes) = (chain.causal, mask != nil, bias != nil, replaced.count)
        let inputs: [BlockRewrite.Input] = [
            .value(x),
            .constant("Wq", q.projection.weight), .constant("bq", q.projection.biasVector),
            .constant("Wk", k.projection.weight), .constant("bk", k.projection.biasVector),
            .constant("Wv", vProjection.weight), .constant("bv", vProjection.biasVector),
            .constant("Wo", out.weight), .constant("bo", out.biasVector),
            mask.map { .value($0) } ?? .absent, bias.map { .value($0) } ?? .absent,
        ]
        return BlockRewrite(op: .attention, nodes: replaced, output: out.output, inputs: inputs,
                            attributes: attributes.attributes, block: block)
    }

    /// Back from the Softmax input to `MatMul(q, kᵀ)`. `scaled`: a scale was
    /// met nearer the Softmax, so an Add from here on would be scaled too.
    func scoreChain(_ value: String, scaled: Bool, scores: [Dim]) throws -> ScoreChain {
        guard let (i, n) = producer(value) else { throw MatchFailure("the scores '\(value)' are an input or a constant") }
        if n.op == .matMul { return ScoreChain(matMul: i) }
        if isIdentityCast(n) {
            var c = try scoreChain(n.inputs[0], scaled: scaled, scores: scores)
            c.nodes.insert(i)
            return c
        }
        if let (factor, other) = scaling(n) {
            var c = try scoreChain(other, scaled: true, scores: scores)
            c.scale *= factor
            c.nodes.insert(i)
            return c
        }
        switch n.op {
        case .add where n.inputs.count == 2:
            guard !scaled else { throw MatchFailure("the term added by '\(n.name)' is scaled together with the scores") }
            var failure: Error? = nil
            for (c, t) in [(0, 1), (1, 0)] where constant(n.inputs[c]) == nil && soleReader(n.inputs[c]) != nil {
                do {
                    var chain = try scoreChain(n.inputs[c], scaled: false, scores: scores)
                    chain.terms.append(n.inputs[t])
                    chain.nodes.insert(i)
                    return chain
                } catch {
                    failure = failure ?? error
                }
            }
            throw failure ?? MatchFailure("neither operand of Add '\(n.name)' leads back to q·kᵀ")
        case .where where n.inputs.count == 3:
            // Where(keep, scores, fill) or Where(drop, fill, scores).
            for (s, f, keep) in [(1, 2, true), (2, 1, false)] {
                guard let fill = scalar(n.inputs[f]), fill <= Self.maskFillLimit else { continue }
                try checkCausal(n.inputs[0], keep: keep, scores: scores, where: n)
                var chain = try scoreChain(n.inputs[s], scaled: scaled, scores: scores)
                chain.causal = true
                chain.nodes.insert(i)
                return chain
            }
            throw MatchFailure("Where '\(n.name)' does not fill the scores with a large negative constant")
        default:
            throw MatchFailure("the scores come from \(n.op.rawValue) '\(n.name)', not from q·kᵀ")
        }
    }

    /// Checks that `condition` selects exactly the causal positions (key j ≤
    /// query i when `keep`, j > i otherwise): a constant triangular matrix,
    /// or a top-left window of one cut by Slices starting at 0 (the
    /// `bias[:, :, :seq, :seq]` buffer of GPT-2 exports), through bool Casts and Not.
    func checkCausal(_ condition: String, keep: Bool, scores: [Dim], where w: Node) throws {
        guard let cs = shape(condition), cs.count >= 2, cs.count <= 4,
              cs.suffix(2).elementsEqual(scores.suffix(2)), cs.dropLast(2).allSatisfy({ $0 == .fixed(1) }) else {
            throw MatchFailure("the condition of Where '\(w.name)' is \(describe(condition)), not [1, 1, seq, seq] like the scores")
        }
        var value = condition, keep = keep
        while constant(value) == nil {
            guard let (_, n) = producer(value) else { throw MatchFailure("the condition of Where '\(w.name)' is a graph input") }
            switch n.op {
            case .cast where (try? n.int("to")) == Int(DType.bool.rawValue):
                value = n.inputs[0]
            case .not:
                keep.toggle()
                value = n.inputs[0]
            case .slice:
                guard let x = n.input(0), let rank = shape(x)?.count,
                      let starts = constant(n.input(1))?.integers, starts.allSatisfy({ $0 == 0 }),
                      (constant(n.input(4))?.integers ?? [1]).allSatisfy({ $0 == 1 }) else {
                    throw MatchFailure("Slice '\(n.name)' of the causal condition does not start at 0 with step 1")
                }
                let axes = constant(n.input(3))?.integers ?? Array(0..<starts.count)
                guard axes.allSatisfy({ ($0 < 0 ? $0 + rank : $0) >= rank - 2 }) else {
                    throw MatchFailure("Slice '\(n.name)' of the causal condition cuts a leading axis")
                }
                value = x
            default:
                throw MatchFailure("the condition of Where '\(w.name)' comes from \(n.op.rawValue) '\(n.name)', not a constant causal mask")
            }
        }
        let t = constant(value)!
        let values: [Int]
        if t.dtype == .bool { values = t.buffer(as: Bool.self).map { $0 ? 1 : 0 } } else if let v = t.integers { values = v } else {
            throw MatchFailure("the causal condition '\(value)' is \(t.dtype), not bool or integers")
        }
        guard t.rank >= 2, t.shape.dropLast(2).allSatisfy({ $0 == 1 }) else {
            throw MatchFailure("the causal condition '\(value)' is \(Tensor.describe(t.shape)), not [1, 1, n, n]")
        }
        let (rows, cols) = (t.shape[t.rank - 2], t.shape[t.rank - 1])
        for i in 0..<rows {
            for j in 0..<cols where (values[i * cols + j] != 0) != (keep ? j <= i : j > i) {
                throw MatchFailure("the condition '\(value)' of Where '\(w.name)' is not a causal mask (entry [\(i), \(j)])")
            }
        }
    }

    /// An additive term of the scores, checked to broadcast to `[B, H, S, S]`;
    /// an Expand to the full size is looked through (the kernel broadcasts).
    func additiveTerm(_ term: String, scores: [Dim]) throws -> String {
        func fits(_ v: String) -> Bool {
            guard let s = shape(v), s.count <= 4, dtype(v) == .float32 else { return false }
            return s.enumerated().allSatisfy { k, dim in dim == .fixed(1) || dim == scores[4 - s.count + k] }
        }
        guard fits(term) else {
            throw MatchFailure("the term '\(term)' \(describe(term)) added to the scores does not broadcast to [batch, heads, seq, seq]")
        }
        var value = term
        while let (_, n) = producer(value), n.op == .expand, let x = n.input(0), fits(x) { value = x }
        return value
    }

    /// Back from a MatMul operand through the head split to the projection.
    func heads(_ value: String, layout: [Int], role: String) throws -> HeadSplit {
        var v = value, perm = [0, 1, 2, 3], scale = 1.0
        var nodes = Set<Int>()
        // Transposes and scales, up to the Reshape that splits the heads.
        while true {
            guard let (i, n) = producer(v) else { throw MatchFailure("\(role) '\(v)' is an input or a constant") }
            if n.op == .reshape { break }
            if n.op == .transpose {
                let p = try n.ints("perm") ?? [3, 2, 1, 0]
                guard p.count == 4 else { throw MatchFailure("Transpose '\(n.name)' of \(role) is not 4-D") }
                // Walking back: axis a of the value is axis perm[a] of this Transpose's
                // output, which is axis p[perm[a]] of its input.
                perm = perm.map { p[$0] }
            } else if let (factor, other) = scaling(n) {
                scale *= factor
                v = other
                nodes.insert(i)
                continue
            } else if !isIdentityCast(n) {
                throw MatchFailure("\(role) comes from \(n.op.rawValue) '\(n.name)', not a head split (Reshape, Transpose)")
            }
            nodes.insert(i)
            v = n.inputs[0]
        }
        let (ri, reshape) = producer(v)!
        guard perm == layout else {
            throw MatchFailure("\(role) heads are read in layout \(perm) of the split [batch, seq, heads, d], expected \(layout)")
        }
        guard let split = shape(v), split.count == 4, let projected = reshape.input(0), let ps = shape(projected), ps.count == 3,
              split[0] == ps[0], split[1] == ps[1], let h = split[2].fixedValue, let d = split[3].fixedValue,
              ps[2].fixedValue == h * d, h > 0 else {
            throw MatchFailure("Reshape '\(reshape.name)' turns \(describe(reshape.input(0) ?? "")) into \(describe(v)), not [batch, seq, heads, d]")
        }
        nodes.insert(ri)
        v = projected
        while let (i, n) = producer(v) {
            if let (factor, other) = scaling(n) {
                scale *= factor
                v = other
            } else if isIdentityCast(n) {
                v = n.inputs[0]
            } else {
                break
            }
            nodes.insert(i)
        }
        let projection = try self.projection(producing: v)
        guard projection.outputWidth == h * d else {
            throw MatchFailure("the \(role) projection has \(projection.outputWidth) columns for \(h) heads of \(d)")
        }
        return HeadSplit(projection: projection, heads: h, headSize: d, scale: scale, nodes: nodes)
    }

    /// Forward from `MatMul(P, v)` `[B, H, S, d]` through the Transpose and
    /// Reshape that merge the heads to `[B, S, H·d]`.
    func headMerge(_ context: String, heads: Int, headSize: Int) throws -> (String, Set<Int>) {
        var v = context, perm = [0, 1, 2, 3]
        var nodes = Set<Int>()
        while true {
            guard let (i, n) = soleReader(v) else { throw MatchFailure("the context '\(v)' is \(readersDescription(v)), not only by the head merge") }
            nodes.insert(i)
            if n.op == .reshape { break }
            if n.op == .transpose {
                let p = try n.ints("perm") ?? [3, 2, 1, 0]
                guard p.count == 4 else { throw MatchFailure("Transpose '\(n.name)' of the context is not 4-D") }
                // Forward: axis a of the output is axis p[a] of the input, axis perm[p[a]] of the context.
                perm = p.map { perm[$0] }
            } else if !isIdentityCast(n) {
                throw MatchFailure("the context goes to \(n.op.rawValue) '\(n.name)', not a head merge (Transpose, Reshape)")
            }
            v = n.outputs[0]
        }
        guard perm == Self.mergeLayout else {
            throw MatchFailure("the context is merged from layout \(perm), expected \(Self.mergeLayout)")
        }
        let (_, reshape) = soleReader(v)!
        let merged = reshape.outputs[0]
        guard let s = shape(v), let m = shape(merged), m.count == 3, s.count == 4, m[0] == s[0], m[1] == s[1],
              m[2].fixedValue == heads * headSize else {
            throw MatchFailure("Reshape '\(reshape.name)' merges \(describe(v)) into \(describe(merged)), not [batch, seq, \(heads * headSize)]")
        }
        return (merged, nodes)
    }
}
