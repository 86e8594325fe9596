import SPPCore
import SPPGraph

/// `output = x W + b` as found in a graph, with W laid out `[D, N]` whatever
/// form the exporter used (Gemm with transB is transposed here, at
/// conversion time, and a Split/Slice of a fused projection is cut here).
struct LinearMatch {
    /// The input value `[..., D]`.
    var x: String
    /// `[D, N]`, float32.
    var weight: Tensor
    /// N elements, or nil for no bias.
    var bias: Tensor?
    /// The nodes computing `output` from `x`.
    var nodes: Set<Int>
    var output: String

    var inputWidth: Int { weight.shape[0] }
    var outputWidth: Int { weight.shape[1] }

    /// The bias as a `[N]` tensor (zeros when absent).
    var biasVector: Tensor {
        guard let bias else { return Tensor(dtype: .float32, shape: [outputWidth], zeroed: true) }
        return bias.reshaped([outputWidth])
    }

    /// Columns `range` of the projection (one of q, k, v out of a fused QKV).
    func columns(_ range: Range<Int>) -> LinearMatch {
        var m = self
        let (d, n) = (inputWidth, outputWidth)
        let w = Tensor(dtype: .float32, shape: [d, range.count])
        let src = weight.pointer(as: Float.self), dst = w.pointer(as: Float.self)
        for r in 0..<d { (dst + r * range.count).update(from: src + r * n + range.lowerBound, count: range.count) }
        m.weight = w
        if let bias {
            let b = Tensor(dtype: .float32, shape: [range.count])
            b.pointer(as: Float.self).update(from: bias.pointer(as: Float.self) + range.lowerBound, count: range.count)
            m.bias = b
        }
        return m
    }

    /// Both weight and bias multiplied by `factor` (a scalar Mul folded into the projection).
    func scaled(_ factor: Double) -> LinearMatch {
        guard factor != 1 else { return self }
        var m = self
        func times(_ t: Tensor) -> Tensor {
            let out = Tensor(dtype: .float32, shape: t.shape)
            let s = t.pointer(as: Float.self), d = out.pointer(as: Float.self)
            for i in 0..<t.count { d[i] = Float(Double(s[i]) * factor) }
            return out
        }
        m.weight = times(weight)
        m.bias = bias.map(times)
        return m
    }
}

extension GraphIndex {
    /// The linear layer computing `y`: `Add(MatMul(x, W), b)` (either operand
    /// order), a bare `MatMul(x, W)`, `Gemm(x, W, b)` on a 2-D x, or
    /// `Reshape(Gemm(Reshape(x, [-1, D]), W, b), [..., N])` as GPT-2 exports
    /// Conv1D. W and b must be float32 constants.
    func linear(producing y: String) throws -> LinearMatch {
        guard let (i, n) = producer(y) else { throw MatchFailure("'\(y)' is an input or a constant, not a linear layer") }
        switch n.op {
        case .add:
            guard n.inputs.count == 2 else { break }
            for (a, b) in [(0, 1), (1, 0)] {
                guard let bias = constant(n.inputs[b]), let (j, mm) = producer(n.inputs[a]), mm.op == .matMul else { continue }
                var m = try matMul(j, mm)
                try checkBias(bias, m.outputWidth, n)
                m.bias = bias
                m.nodes.insert(i)
                m.output = y
                return m
            }
            throw MatchFailure("Add '\(n.name)' is not MatMul + constant bias")
        case .matMul:
            return try matMul(i, n)
        case .gemm:
            return try gemm(i, n)
        case .reshape:
            guard let (gi, g) = producer(n.inputs[0]), g.op == .gemm else { break }
            var m = try gemm(gi, g)
            guard let (ri, r) = producer(m.x), r.op == .reshape, let x = r.input(0), let xs = shape(x),
                  let d = xs.last?.fixedValue, d == m.inputWidth,
                  let target = constant(r.input(1))?.integers, target == [-1, d] else {
                throw MatchFailure("Gemm '\(g.name)' does not read its input flattened by Reshape(·, [-1, \(m.inputWidth)])")
            }
            guard let ys = shape(y), ys == Array(xs.dropLast()) + [.fixed(m.outputWidth)] else {
                throw MatchFailure("Reshape '\(n.name)' gives \(describe(y)), not the leading dims of \(describe(x)) with \(m.outputWidth)")
            }
            m.x = x
            m.nodes.formUnion([ri, i])
            m.output = y
            return m
        default:
            break
        }
        throw MatchFailure("\(n.op.rawValue) '\(n.name)' is not a linear layer (MatMul + bias, or Gemm)")
    }

    /// Like `linear(producing:)`, and also one output of a `Split` (or a
    /// `Slice` with constant bounds) along the last axis of a linear layer:
    /// the fused QKV projection of GPT-2.
    func projection(producing y: String) throws -> LinearMatch {
        guard let (i, n) = producer(y), n.op == .split || n.op == .slice, let whole = n.input(0) else {
            return try linear(producing: y)
        }
        guard let ws = shape(whole), let width = ws.last?.fixedValue else {
            throw MatchFailure("\(n.op.rawValue) '\(n.name)' input \(describe(whole)) has no fixed last dimension")
        }
        let last = ws.count - 1
        let range: Range<Int>
        if n.op == .split {
            let axis = try n.int("axis", default: 0)
            guard axis == last || axis == -1 else { throw MatchFailure("Split '\(n.name)' is not along the last axis") }
            var sizes: [Int]
            if let s = n.input(1) {
                guard let v = constant(s)?.integers else { throw MatchFailure("Split '\(n.name)' sizes are not constant") }
                sizes = v
            } else {
                let parts = try n.int("num_outputs") ?? n.outputs.count
                let chunk = (width + parts - 1) / Swift.max(parts, 1)
                sizes = (0..<parts).map { Swift.max(0, Swift.min(chunk, width - $0 * chunk)) }
            }
            guard sizes.reduce(0, +) == width, let k = n.outputs.firstIndex(of: y), k < sizes.count else {
                throw MatchFailure("Split '\(n.name)' sizes \(sizes) do not cover width \(width)")
            }
            let start = sizes[..<k].reduce(0, +)
            range = start..<(start + sizes[k])
        } else {
            guard let starts = constant(n.input(1))?.integers, let ends = constant(n.input(2))?.integers, starts.count == 1, ends.count == 1,
                  (constant(n.input(3))?.integers ?? [0]).map({ $0 < 0 ? $0 + ws.count : $0 }) == [last],
                  (constant(n.input(4))?.integers ?? [1]) == [1] else {
                throw MatchFailure("Slice '\(n.name)' is not a constant step-1 slice of the last axis")
            }
            let clamp = { (v: Int) in Swift.min(Swift.max(v < 0 ? v + width : v, 0), width) }
            let (lo, hi) = (clamp(starts[0]), clamp(ends[0]))
            range = lo..<Swift.max(lo, hi)
        }
        var m = try linear(producing: whole)
        guard m.outputWidth == width else { throw MatchFailure("\(n.op.rawValue) '\(n.name)' splits a value that is not the linear output") }
        m = m.columns(range)
        m.nodes.insert(i)
        m.output = y
        return m
    }

    /// The linear layer reading `value` as its input: its only reader is a
    /// MatMul with a constant weight (then a bias Add when there is one), a
    /// Gemm, or GPT-2's Reshape → Gemm → Reshape.
    func linear(reading value: String) throws -> LinearMatch {
        guard let (_, n) = soleReader(value) else {
            throw MatchFailure("'\(value)' is \(readersDescription(value)), not only by a linear layer")
        }
        var end: String
        switch n.op {
        case .matMul where n.inputs.first == value:
            end = n.outputs[0]
            if let (_, add) = soleReader(end), add.op == .add, add.inputs.count == 2,
               let w = constant(n.input(1)), w.rank == 2,
               let b = constant(add.inputs[0] == end ? add.inputs[1] : add.inputs[0]), b.count == w.shape[1], b.shape.dropLast().allSatisfy({ $0 == 1 }) {
                end = add.outputs[0]
            }
        case .gemm where n.inputs.first == value:
            end = n.outputs[0]
        case .reshape:
            guard let (_, g) = soleReader(n.outputs[0]), g.op == .gemm, let (_, back) = soleReader(g.outputs[0]), back.op == .reshape else {
                throw MatchFailure("Reshape '\(n.name)' does not lead to a Gemm and a Reshape back")
            }
            end = back.outputs[0]
        default:
            throw MatchFailure("'\(value)' goes to \(n.op.rawValue) '\(n.name)', not a linear layer")
        }
        let m = try linear(producing: end)
        guard m.x == value else { throw MatchFailure("the linear layer ending at '\(end)' does not read '\(value)'") }
        return m
    }

    private func matMul(_ i: Int, _ n: Node) throws -> LinearMatch {
        guard let x = n.input(0), constant(x) == nil, let w = constant(n.input(1)) else {
            throw MatchFailure("MatMul '\(n.name)' does not multiply by a constant weight")
        }
        guard w.rank == 2, w.dtype == .float32 else {
            throw MatchFailure("MatMul '\(n.name)' weight is \(w.dtype) \(Tensor.describe(w.shape)), not a float32 matrix")
        }
        if let xs = shape(x), let d = xs.last?.fixedValue, d != w.shape[0] { throw MatchFailure("MatMul '\(n.name)' inner dimensions differ") }
        return LinearMatch(x: x, weight: w, bias: nil, nodes: [i], output: n.outputs[0])
    }

    private func gemm(_ i: Int, _ n: Node) throws -> LinearMatch {
        guard let x = n.input(0), constant(x) == nil, let w = constant(n.input(1)), w.rank == 2, w.dtype == .float32 else {
            throw MatchFailure("Gemm '\(n.name)' does not multiply by a constant float32 weight")
        }
        guard try n.int("transA", default: 0) == 0, try n.float("alpha", default: 1) == 1 else {
            throw MatchFailure("Gemm '\(n.name)' has transA or alpha ≠ 1")
        }
        let transB = try n.int("transB", default: 0) != 0
        var weight = w
        if transB {
            // Gemm keeps W as [N, D]; the fused ops want [D, N].
            let (r, c) = (w.shape[0], w.shape[1])
            weight = Tensor(dtype: .float32, shape: [c, r])
            let s = w.pointer(as: Float.self), d = weight.pointer(as: Float.self)
            for a in 0..<r { for b in 0..<c { d[b * r + a] = s[a * c + b] } }
        }
        var m = LinearMatch(x: x, weight: weight, bias: nil, nodes: [i], output: n.outputs[0])
        if let c = n.input(2) {
            guard let bias = constant(c) else { throw MatchFailure("Gemm '\(n.name)' bias is not constant") }
            guard try n.float("beta", default: 1) == 1 else { throw MatchFailure("Gemm '\(n.name)' has beta ≠ 1") }
            try checkBias(bias, m.outputWidth, n)
            m.bias = bias
        }
        return m
    }

    private func checkBias(_ b: Tensor, _ n: Int, _ node: Node) throws {
        guard b.dtype == .float32, b.count == n, b.rank >= 1, b.shape.dropLast().allSatisfy({ $0 == 1 }) else {
            throw MatchFailure("\(node.op.rawValue) '\(node.name)' adds \(b.dtype) \(Tensor.describe(b.shape)), not a bias of \(n)")
        }
    }
}
