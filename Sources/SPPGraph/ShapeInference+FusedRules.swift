import SPPCore

/// Rules for the fused ops (`OpType.attention`, `OpType.feedForward`; their
/// contracts are on the enum cases). Only fixed sizes that certainly disagree
/// throw; unknown shapes give the input's shape.
extension ShapeInference.State {
    mutating func attention(_ node: Node) throws -> Facts {
        typealias In = AttentionAttributes.Input
        let a = try node.attentionAttributes()
        var f: [In: Facts] = [:]
        for i in In.allCases where i != .mask && i != .bias { f[i] = try required(node, i.rawValue) }
        let x = f[.x]!
        let (qk, vo) = (Expr(a.qkWidth), Expr(a.voWidth))
        var d: Expr? = nil
        if let sx = x.shape {
            guard sx.count == 3 else { throw mismatch(node, "input \(describe(sx)) is not [batch, seq, hidden]") }
            d = sx[2]
        }
        try expect(node, "Wq", f[.wq]!, [d, qk])
        try expect(node, "Wk", f[.wk]!, [d, qk])
        try expect(node, "Wv", f[.wv]!, [d, vo])
        try expect(node, "Wo", f[.wo]!, [vo, d])
        try expect(node, "bq", f[.bq]!, [qk])
        try expect(node, "bk", f[.bk]!, [qk])
        try expect(node, "bv", f[.bv]!, [vo])
        try expect(node, "bo", f[.bo]!, [d])
        let sx = x.shape
        let target: [Expr?] = [sx?[0], Expr(a.heads), sx?[1], sx?[1]]
        for (what, i) in [("mask", In.mask), ("bias", In.bias)] {
            guard let s = try input(node, i.rawValue)?.shape else { continue }
            guard s.count <= 4 else { throw mismatch(node, "\(what) \(describe(s)) has rank above 4") }
            for (k, dim) in s.enumerated() {
                let want = target[4 - s.count + k]
                if let n = dim.fixed, n != 1, let w = want?.fixed, w != n {
                    throw mismatch(node, "\(what) \(describe(s)) does not broadcast to [batch, \(a.heads), seq, seq] of \(describe(sx))")
                }
            }
        }
        return Facts(dtype: x.dtype, shape: x.shape)
    }

    mutating func feedForward(_ node: Node) throws -> Facts {
        _ = try node.feedForwardActivation()
        let x = try required(node, 0), w1 = try required(node, 1), b1 = try required(node, 2)
        let w2 = try required(node, 3), b2 = try required(node, 4)
        var d: Expr? = nil
        if let sx = x.shape {
            guard !sx.isEmpty else { throw mismatch(node, "input is a scalar") }
            d = sx[sx.count - 1]
        }
        let hidden = w1.shape.flatMap { $0.count == 2 ? $0[1] : nil }
        try expect(node, "W1", w1, [d, hidden])
        try expect(node, "b1", b1, [hidden])
        try expect(node, "W2", w2, [hidden, d])
        try expect(node, "b2", b2, [d])
        return Facts(dtype: x.dtype, shape: x.shape)
    }

    /// Throws when `f` has a known shape of another rank than `want`, or a fixed
    /// size that differs from a fixed entry of `want` (nil entries match anything).
    private func expect(_ node: Node, _ what: String, _ f: Facts, _ want: [Expr?]) throws {
        guard let s = f.shape else { return }
        let wanted = "[" + want.map { $0?.description ?? "?" }.joined(separator: ", ") + "]"
        guard s.count == want.count else { throw mismatch(node, "\(what) is \(describe(s)), expected \(wanted)") }
        for (got, w) in zip(s, want) {
            if let g = got.fixed, let n = w?.fixed, g != n { throw mismatch(node, "\(what) is \(describe(s)), expected \(wanted)") }
        }
    }
}
