import SPPCore

/// One rule per op: the output types, shapes and (for small shape tensors)
/// values, from what is known of the inputs. Each agrees with the runtime
/// kernel of the same op (`SPPRuntime/Program+Kernels.swift`).
extension ShapeInference.State {
    typealias Expr = ShapeInference.Expr
    typealias Facts = ShapeInference.Facts

    /// The facts of each output of `node`, in order (fewer than its outputs: the rest are unknown).
    mutating func outputs(of node: Node) throws -> [Facts] {
        switch node.op {
        case .add: return [try arithmetic(node) { x, y, _ in x + y }]
        case .sub: return [try arithmetic(node) { x, y, _ in x - y }]
        case .mul: return [try arithmetic(node) { x, y, _ in x * y }]
        case .div: return [try arithmetic(node) { x, y, integer in Self.divide(x, y, integer: integer) }]
        case .pow: return [try arithmetic(node) { x, y, _ in Self.power(x, y) }]
        case .mod:
            let fmod = try node.int("fmod", default: 0) != 0
            return [try arithmetic(node) { x, y, _ in Self.modulo(x, y, fmod: fmod) }]
        case .max, .min: return [try variadic(node)]
        case .equal: return [try comparison(node, ==)]
        case .less: return [try comparison(node, <)]
        case .lessOrEqual: return [try comparison(node, <=)]
        case .greater: return [try comparison(node, >)]
        case .greaterOrEqual: return [try comparison(node, >=)]
        case .and: return [try logic(node) { $0 && $1 }]
        case .or: return [try logic(node) { $0 || $1 }]
        case .xor: return [try logic(node, !=)]
        case .where: return [try select(node)]
        case .neg: return [try unary(node) { -$0 }]
        case .floor, .ceil: return [try unary(node) { $0 }]  // tracked values are integral
        case .abs: return [try unary(node) { e in e.fixed.map { Expr(Swift.abs($0)) } ?? (e.isNonNegative ? e : nil) }]
        case .relu: return [try unary(node) { e in e.fixed.map { Expr(Swift.max($0, 0)) } ?? (e.isNonNegative ? e : nil) }]
        case .sign: return [try unary(node) { e in e.fixed.map { Expr($0.signum()) } }]
        case .sqrt, .reciprocal, .exp, .log, .erf, .tanh, .sigmoid, .gelu: return [try unary(node) { _ in nil }]
        case .not, .isNaN: return [try boolUnary(node)]
        case .clip: return [try clip(node)]
        case .cast, .castLike: return [try cast(node)]
        case .identity: return [try required(node, 0)]

        case .matMul: return [try matMul(node)]
        case .gemm: return [try gemm(node)]
        case .conv: return [try conv(node)]

        case .softmax, .logSoftmax:
            let x = try required(node, 0)
            let axis = try node.int("axis", default: try node.int("coerce_2d", default: 0) != 0 ? 1 : -1)
            if let rank = x.shape?.count { _ = try normalizedAxis(axis, rank: rank, node) }
            return [Facts(dtype: x.dtype, shape: x.shape)]
        case .layerNormalization: return try layerNormalization(node)
        case .reduceMean: return [try reduce(node, .mean)]
        case .reduceSum: return [try reduce(node, .sum)]
        case .reduceMax: return [try reduce(node, .max)]
        case .reduceMin: return [try reduce(node, .min)]
        case .reduceProd: return [try reduce(node, .prod)]
        case .cumSum:
            let x = try required(node, 0)
            _ = try required(node, 1)
            return [Facts(dtype: x.dtype, shape: x.shape)]

        case .shape: return [try shape(node)]
        case .size:
            let x = try required(node, 0)
            let count = x.shape.flatMap { Expr.product($0) }
            return [Facts(dtype: .int64, shape: [], values: count.map { [$0] })]
        case .reshape: return [try reshape(node)]
        case .flatten: return [try flatten(node)]
        case .squeeze: return [try squeeze(node)]
        case .unsqueeze: return [try unsqueeze(node)]
        case .transpose: return [try transpose(node)]
        case .concat: return [try concat(node)]
        case .split: return try split(node)
        case .slice: return [try slice(node)]
        case .gather: return [try gather(node)]
        case .expand: return [try expand(node)]
        case .tile: return [try tile(node)]
        case .trilu:
            let x = try required(node, 0)
            return [Facts(dtype: x.dtype, shape: x.shape)]
        case .constant: return [try constant(node)]
        case .constantOfShape: return [try constantOfShape(node)]
        case .range: return [try range(node)]

        case .attention: return [try attention(node)]
        case .feedForward: return [try feedForward(node)]
        }
    }

    // MARK: Inputs, errors, axes

    /// Facts of input `i`, or nil when it is omitted.
    func input(_ node: Node, _ i: Int) throws -> Facts? {
        guard let name = node.input(i) else { return nil }
        guard let f = facts[name] else { throw GraphError.undefinedValue(node: node.name, value: name) }
        return f
    }

    func required(_ node: Node, _ i: Int) throws -> Facts {
        guard let f = try input(node, i) else {
            throw GraphError.wrongInputCount(node: node.name, op: node.op.rawValue, expected: "at least \(i + 1)",
                                             actual: node.inputs.filter { !$0.isEmpty }.count)
        }
        return f
    }

    func mismatch(_ node: Node, _ reason: String) -> GraphError {
        .shapeMismatch(node: node.name, op: node.op.rawValue, reason: reason)
    }

    func normalizedAxis(_ axis: Int, rank: Int, _ node: Node) throws -> Int {
        let a = axis < 0 ? axis + rank : axis
        guard a >= 0, a < Swift.max(rank, 1) else { throw mismatch(node, "axis \(axis) is out of range for rank \(rank)") }
        return a
    }

    func describe(_ shape: [Expr]?) -> String { ShapeInference.describe(shape) }

    /// `x` with overflow turned into a fresh unknown.
    mutating func orFresh(_ x: Expr?) -> Expr { x ?? fresh() }

    // MARK: Broadcasting

    /// NumPy broadcasting of two dimensions: equal ones match, 1 gives way, a
    /// fixed size wins over a symbol, two different symbols give an unknown.
    mutating func broadcast(_ a: Expr, _ b: Expr, _ node: Node, _ shapes: () -> String) throws -> Expr {
        if a == b { return a }
        if a.fixed == 1 { return b }
        if b.fixed == 1 { return a }
        switch (a.fixed, b.fixed) {
        case (.some, .some): throw mismatch(node, "shapes \(shapes()) do not broadcast")
        case (.some, nil): return a
        case (nil, .some): return b
        case (nil, nil): return fresh()
        }
    }

    /// Broadcast shape of all `shapes`; nil when any rank is unknown.
    mutating func broadcast(_ shapes: [[Expr]?], _ node: Node) throws -> [Expr]? {
        var known: [[Expr]] = []
        for s in shapes { guard let s else { return nil }; known.append(s) }
        let rank = known.map(\.count).max() ?? 0
        var out = [Expr](repeating: Expr(1), count: rank)
        let text = { known.map { ShapeInference.describe($0) }.joined(separator: " and ") }
        for s in known {
            for (i, d) in s.enumerated() {
                let j = rank - s.count + i
                out[j] = try broadcast(out[j], d, node, text)
            }
        }
        return out
    }

    /// Elementwise values of a broadcast over rank ≤ 1 operands: each list holds
    /// one element or as many as the output.
    func elementwise(_ lists: [[Expr]?], shape: [Expr]?, _ f: ([Expr]) -> Expr?) -> [Expr]? {
        guard let shape, shape.count <= 1, let count = Expr.product(shape)?.fixed,
              count <= ShapeInference.maxTrackedElements else { return nil }
        var known: [[Expr]] = []
        for l in lists {
            guard let l, l.count == 1 || l.count == count else { return nil }
            known.append(l)
        }
        var out: [Expr] = []
        for i in 0..<count {
            guard let v = f(known.map { $0.count == 1 ? $0[0] : $0[i] }) else { return nil }
            out.append(v)
        }
        return out
    }

    // MARK: Elementwise

    /// A binary op on tracked values; the flag says the element type is an integer.
    typealias ValueOp = (Expr, Expr, Bool) -> Expr?

    mutating func arithmetic(_ node: Node, _ op: ValueOp) throws -> Facts {
        let a = try required(node, 0), b = try required(node, 1)
        let shape = try broadcast([a.shape, b.shape], node)
        let dtype = a.dtype ?? b.dtype
        let integer = !(dtype?.isFloatingPoint ?? false)
        let values = elementwise([a.values, b.values], shape: shape) { v in op(v[0], v[1], integer) }
        return Facts(dtype: dtype, shape: shape, values: values)
    }

    static func divide(_ x: Expr, _ y: Expr, integer: Bool) -> Expr? {
        guard let p = x.fixed, let q = y.fixed else { return x.dividedExactly(by: y) }
        guard q != 0 else { return nil }
        let (r, overflow) = p.dividedReportingOverflow(by: q)
        if overflow { return nil }
        // Integers truncate like the kernel; floats are kept only when exact.
        return integer || p % q == 0 ? Expr(r) : nil
    }

    /// `fmod == false`: the result takes the divisor's sign (Python `%`), as in the kernel.
    static func modulo(_ x: Expr, _ y: Expr, fmod: Bool) -> Expr? {
        guard let p = x.fixed, let q = y.fixed, q != 0, q != -1 else { return nil }
        var r = p % q
        if !fmod && r != 0 && (r < 0) != (q < 0) { r += q }
        return Expr(r)
    }

    static func power(_ x: Expr, _ y: Expr) -> Expr? {
        guard let p = x.fixed, let q = y.fixed, q >= 0, q < 64 else { return nil }
        var r = 1
        for _ in 0..<q {
            let (m, overflow) = r.multipliedReportingOverflow(by: p)
            if overflow { return nil }
            r = m
        }
        return Expr(r)
    }

    mutating func variadic(_ node: Node) throws -> Facts {
        var operands: [Facts] = [try required(node, 0)]
        for i in 1..<Swift.max(node.inputs.count, 1) { if let f = try input(node, i) { operands.append(f) } }
        let shape = try broadcast(operands.map(\.shape), node)
        let isMax = node.op == .max
        let values = elementwise(operands.map(\.values), shape: shape) { v in
            if v.allSatisfy({ $0 == v[0] }) { return v[0] }
            let fixed = v.compactMap(\.fixed)
            guard fixed.count == v.count else { return nil }
            return Expr((isMax ? fixed.max() : fixed.min())!)
        }
        return Facts(dtype: operands.lazy.compactMap(\.dtype).first, shape: shape, values: values)
    }

    mutating func comparison(_ node: Node, _ op: @escaping (Int, Int) -> Bool) throws -> Facts {
        let a = try required(node, 0), b = try required(node, 1)
        let shape = try broadcast([a.shape, b.shape], node)
        let isEqual = node.op == .equal
        let values = elementwise([a.values, b.values], shape: shape) { v in
            let (x, y) = (v[0], v[1])
            if let p = x.fixed, let q = y.fixed { return Expr(op(p, q) ? 1 : 0) }
            guard isEqual else { return nil }
            if x == y { return Expr(1) }
            // A size (≥ 0) never equals a negative constant: the `-1` test of exported Expand patterns.
            if (x.isNonNegative && (y.fixed ?? 0) < 0) || (y.isNonNegative && (x.fixed ?? 0) < 0) { return Expr(0) }
            return nil
        }
        return Facts(dtype: .bool, shape: shape, values: values)
    }

    mutating func logic(_ node: Node, _ op: @escaping (Bool, Bool) -> Bool) throws -> Facts {
        let a = try required(node, 0), b = try required(node, 1)
        let shape = try broadcast([a.shape, b.shape], node)
        let values = elementwise([a.values, b.values], shape: shape) { v in
            guard let p = v[0].fixed, let q = v[1].fixed else { return nil }
            return Expr(op(p != 0, q != 0) ? 1 : 0)
        }
        return Facts(dtype: .bool, shape: shape, values: values)
    }

    mutating func select(_ node: Node) throws -> Facts {
        let c = try required(node, 0), x = try required(node, 1), y = try required(node, 2)
        let shape = try broadcast([c.shape, x.shape, y.shape], node)
        let values = elementwise([c.values, x.values, y.values], shape: shape) { v in
            guard let cond = v[0].fixed else { return v[1] == v[2] ? v[1] : nil }
            return cond != 0 ? v[1] : v[2]
        }
        return Facts(dtype: x.dtype ?? y.dtype, shape: shape, values: values)
    }

    /// Same type and shape; `op` carries tracked values (nil: not tracked through this op).
    func unary(_ node: Node, _ op: (Expr) -> Expr?) throws -> Facts {
        let x = try required(node, 0)
        let values = elementwise([x.values], shape: x.shape) { op($0[0]) }
        return Facts(dtype: x.dtype, shape: x.shape, values: values)
    }

    func boolUnary(_ node: Node) throws -> Facts {
        let x = try required(node, 0)
        let isNot = node.op == .not
        let values = elementwise([x.values], shape: x.shape) { v in
            // Tracked values are integral, so never NaN.
            guard isNot else { return Expr(0) }
            return v[0].fixed.map { Expr($0 == 0 ? 1 : 0) }
        }
        return Facts(dtype: .bool, shape: x.shape, values: values)
    }

    func clip(_ node: Node) throws -> Facts {
        let x = try required(node, 0)
        let lo = try input(node, 1), hi = try input(node, 2)
        let values = elementwise([x.values, lo.map { $0.values } ?? [Expr(Int.min)], hi.map { $0.values } ?? [Expr(Int.max)]],
                                 shape: x.shape) { v in
            if lo == nil && hi == nil { return v[0] }
            guard let p = v[0].fixed, let a = v[1].fixed, let b = v[2].fixed else { return nil }
            return Expr(Swift.min(Swift.max(p, a), b))
        }
        return Facts(dtype: x.dtype, shape: x.shape, values: values)
    }

    func cast(_ node: Node) throws -> Facts {
        let x = try required(node, 0)
        let to: DType?
        if node.op == .castLike {
            to = try required(node, 1).dtype
        } else {
            guard let code = try node.int("to") else {
                throw GraphError.badAttribute(node: node.name, op: node.op.rawValue, attribute: "to", reason: "required")
            }
            guard let t = DType(rawValue: Int32(truncatingIfNeeded: code)) else {
                throw GraphError.badAttribute(node: node.name, op: node.op.rawValue, attribute: "to",
                                              reason: "\(DType.onnxName(Int32(truncatingIfNeeded: code))) is not supported")
            }
            to = t
        }
        let values = to.flatMap { t in elementwise([x.values], shape: x.shape) { v in Self.castValue(v[0], to: t) } }
        return Facts(dtype: to, shape: x.shape, values: values)
    }

    /// A value after a cast: narrow integers wrap like the kernel's conversion, symbols are assumed to fit.
    static func castValue(_ e: Expr, to t: DType) -> Expr? {
        guard let n = e.fixed else {
            switch t {
            case .bool, .float16, .bfloat16: return nil
            case .float32, .float64, .int8, .int16, .int32, .int64, .uint8, .uint16, .uint32, .uint64: return e
            }
        }
        switch t {
        case .bool: return Expr(n != 0 ? 1 : 0)
        case .int64: return e
        case .int32: return Expr(Int(Int32(truncatingIfNeeded: n)))
        case .int16: return Expr(Int(Int16(truncatingIfNeeded: n)))
        case .int8: return Expr(Int(Int8(truncatingIfNeeded: n)))
        case .uint8: return Expr(Int(UInt8(truncatingIfNeeded: n)))
        case .uint16: return Expr(Int(UInt16(truncatingIfNeeded: n)))
        case .uint32: return Expr(Int(UInt32(truncatingIfNeeded: n)))
        case .uint64: return n >= 0 ? e : nil
        case .float32: return Swift.abs(n) <= 1 << 24 ? e : nil
        case .float64: return Swift.abs(n) <= 1 << 53 ? e : nil
        case .float16, .bfloat16: return Swift.abs(n) <= 256 ? e : nil
        }
    }

    // MARK: Linear algebra

    mutating func matMul(_ node: Node) throws -> Facts {
        let a = try required(node, 0), b = try required(node, 1)
        let dtype = a.dtype ?? b.dtype
        guard let sa = a.shape, let sb = b.shape else { return Facts(dtype: dtype) }
        guard !sa.isEmpty, !sb.isEmpty else {
            throw mismatch(node, "MatMul needs inputs of rank ≥ 1, got \(describe(sa)) and \(describe(sb))")
        }
        let pa = sa.count == 1 ? [Expr(1), sa[0]] : sa
        let pb = sb.count == 1 ? [sb[0], Expr(1)] : sb
        let k = pa[pa.count - 1], k2 = pb[pb.count - 2]
        if let x = k.fixed, let y = k2.fixed, x != y {
            throw mismatch(node, "inner dimensions differ: \(describe(sa)) × \(describe(sb))")
        }
        guard var out = try broadcast([Array(pa.dropLast(2)), Array(pb.dropLast(2))], node) else { return Facts(dtype: dtype) }
        out += [pa[pa.count - 2], pb[pb.count - 1]]
        if sa.count == 1 { out.remove(at: out.count - 2) }
        if sb.count == 1 { out.removeLast() }
        return Facts(dtype: dtype, shape: out)
    }

    mutating func gemm(_ node: Node) throws -> Facts {
        let a = try required(node, 0), b = try required(node, 1), c = try input(node, 2)
        let transA = try node.int("transA", default: 0) != 0, transB = try node.int("transB", default: 0) != 0
        for s in [a.shape, b.shape] where s != nil && s!.count != 2 {
            throw mismatch(node, "Gemm needs 2-D inputs, got \(describe(a.shape)) and \(describe(b.shape))")
        }
        if let sa = a.shape, let sb = b.shape {
            let k = transA ? sa[0] : sa[1], k2 = transB ? sb[1] : sb[0]
            if let x = k.fixed, let y = k2.fixed, x != y {
                throw mismatch(node, "inner dimensions differ: \(describe(sa)) × \(describe(sb))")
            }
        }
        let m = a.shape.map { transA ? $0[1] : $0[0] } ?? fresh()
        let n = b.shape.map { transB ? $0[0] : $0[1] } ?? fresh()
        if let sc = c?.shape {
            // The bias broadcasts to [m, n] without widening it.
            let bad = mismatch(node, "bias \(describe(sc)) does not broadcast to \(describe([m, n]))")
            guard sc.count <= 2 else { throw bad }
            if let bc = try broadcast([sc, [m, n]], node) {
                for (got, want) in zip(bc, [m, n]) where got != want && got.fixed != nil && want.fixed != nil { throw bad }
            }
        }
        return Facts(dtype: a.dtype ?? b.dtype, shape: [m, n])
    }

    mutating func conv(_ node: Node) throws -> Facts {
        let x = try required(node, 0), w = try required(node, 1)
        _ = try input(node, 2)
        let autoPad = try node.string("auto_pad", default: "NOTSET")
        guard ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"].contains(autoPad) else {
            throw GraphError.badAttribute(node: node.name, op: node.op.rawValue, attribute: "auto_pad",
                                          reason: "'\(autoPad)' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
        }
        let group = try node.int("group", default: 1)
        guard group > 0, group < 1 << 24 else {
            throw GraphError.badAttribute(node: node.name, op: node.op.rawValue, attribute: "group", reason: "\(group) is out of range")
        }
        guard let rank = x.shape?.count ?? w.shape?.count else { return Facts(dtype: x.dtype) }
        let spatial = rank - 2
        guard spatial >= 1 else { throw mismatch(node, "Conv input \(describe(x.shape)) has no spatial dimensions") }
        if let sw = w.shape, sw.count != rank {
            throw mismatch(node, "input \(describe(x.shape)) and weights \(describe(sw)) differ in rank")
        }
        let sx = x.shape ?? fresh(rank), sw = w.shape ?? fresh(rank)
        if let c = sx[1].fixed, let cw = sw[1].fixed, c != cw * group {
            throw mismatch(node, "input has \(c) channels but weights \(describe(sw)) with group \(group) take \(cw * group)")
        }
        let kernel = try node.ints("kernel_shape").map { $0.map { Expr($0) } } ?? Array(sw.dropFirst(2))
        let strides = try node.ints("strides") ?? [Int](repeating: 1, count: spatial)
        let dilations = try node.ints("dilations") ?? [Int](repeating: 1, count: spatial)
        var pads = try node.ints("pads") ?? [Int](repeating: 0, count: 2 * spatial)
        if autoPad == "VALID" { pads = [Int](repeating: 0, count: 2 * spatial) }
        guard kernel.count == spatial, strides.count == spatial, dilations.count == spatial, pads.count == 2 * spatial else {
            throw mismatch(node, "kernel_shape/strides/dilations/pads do not fit \(spatial) spatial dimensions")
        }
        // Bounds that keep the size arithmetic below from overflowing on absurd attributes.
        let limit = 1 << 24
        guard strides.allSatisfy({ $0 > 0 && $0 < limit }), dilations.allSatisfy({ $0 > 0 && $0 < limit }),
              pads.allSatisfy({ $0 >= 0 && $0 < limit }), kernel.allSatisfy({ ($0.fixed ?? 1) > 0 && ($0.fixed ?? 1) < limit }) else {
            throw mismatch(node, "kernel_shape \(ShapeInference.describe(kernel)), strides \(strides), dilations \(dilations) or pads \(pads) out of range")
        }
        var out = [sx[0], sw[0]]
        for i in 0..<spatial {
            let d = sx[2 + i], s = strides[i]
            if autoPad.hasPrefix("SAME") {
                // Output is ceil(in / stride) whatever the kernel.
                if let n = d.fixed { out.append(Expr(n / s + (n % s == 0 ? 0 : 1))) } else { out.append(s == 1 ? d : fresh()) }
                continue
            }
            guard let k = kernel[i].fixed else { out.append(fresh()); continue }
            let reach = dilations[i] * (k - 1) + 1 - pads[i] - pads[spatial + i]  // input cells the first output needs, net of padding
            if let n = d.fixed {
                guard n >= reach else { throw mismatch(node, "kernel \(k) (dilation \(dilations[i])) does not fit input size \(n) with pads") }
                out.append(Expr((n - reach) / s + 1))
            } else if let num = d - Expr(reach), let q = num.dividedExactly(by: Expr(s)), let r = q + Expr(1) {
                out.append(r)
            } else {
                out.append(fresh())
            }
        }
        return Facts(dtype: x.dtype ?? w.dtype, shape: out)
    }

    // MARK: Normalisation and reductions

    func layerNormalization(_ node: Node) throws -> [Facts] {
        let x = try required(node, 0), scale = try required(node, 1), bias = try input(node, 2)
        let axis = try node.int("axis", default: -1)
        guard let sx = x.shape else { return [Facts(dtype: x.dtype), Facts(dtype: .float32), Facts(dtype: .float32)] }
        let a = try normalizedAxis(axis, rank: sx.count, node)
        let normalized = Array(sx[a...])
        if let n = Expr.product(normalized)?.fixed {
            for (what, t) in [("scale", scale), ("bias", bias)] as [(String, Facts?)] {
                if let t, let count = t.shape.flatMap({ Expr.product($0)?.fixed }), count != n, count != 1 {
                    throw mismatch(node, "\(what) \(describe(t.shape)) does not match the normalised shape \(describe(normalized))")
                }
            }
        }
        let stat = Array(sx[..<a]) + [Expr](repeating: Expr(1), count: sx.count - a)
        // Mean and InvStdDev are computed in float32 (the kernel, and ONNX's default stash_type).
        return [Facts(dtype: x.dtype, shape: sx), Facts(dtype: .float32, shape: stat), Facts(dtype: .float32, shape: stat)]
    }

    enum Reduction { case sum, mean, max, min, prod }

    mutating func reduce(_ node: Node, _ op: Reduction) throws -> Facts {
        let x = try required(node, 0)
        let keepDims = try node.int("keepdims", default: 1) != 0
        let noop = try node.int("noop_with_empty_axes", default: 0) != 0
        let axesInput = try input(node, 1)
        var axes: [Int]?
        if let axesInput { axes = axesInput.fixedValues } else { axes = try node.ints("axes") ?? [] }
        guard let sx = x.shape else { return Facts(dtype: x.dtype) }
        guard let raw = axes else {
            // Axes computed at run time: the rank is known with keepdims, or from the axes count.
            if keepDims { return Facts(dtype: x.dtype, shape: sx.map { $0.fixed == 1 ? $0 : fresh() }) }
            if let k = axesInput?.shape, k.count == 1, let n = k[0].fixed, n > 0, n <= sx.count {
                return Facts(dtype: x.dtype, shape: fresh(sx.count - n))
            }
            return Facts(dtype: x.dtype)
        }
        if raw.isEmpty && noop { return x }
        let reduced = raw.isEmpty ? Set(sx.indices) : Set(try raw.map { try normalizedAxis($0, rank: sx.count, node) })
        var out: [Expr] = []
        for (i, d) in sx.enumerated() {
            if reduced.contains(i) { if keepDims { out.append(Expr(1)) } } else { out.append(d) }
        }
        var values: [Expr]? = nil
        if let v = x.values, sx.count <= 1, reduced.count == sx.count, !v.isEmpty {
            // Reducing a whole shape vector, e.g. ReduceProd of Shape(x) for the element count.
            let fixed = v.compactMap(\.fixed)
            let allFixed = fixed.count == v.count
            let result: Expr?
            switch op {
            case .sum: result = Expr.sum(v)
            case .prod: result = Expr.product(v)
            case .max: result = allFixed ? fixed.max().map { Expr($0) } : nil
            case .min: result = allFixed ? fixed.min().map { Expr($0) } : nil
            case .mean:
                let integer = !(x.dtype?.isFloatingPoint ?? false)
                if allFixed, let s = Expr.sum(v)?.fixed, integer || s % v.count == 0 { result = Expr(s / v.count) } else { result = nil }
            }
            values = result.map { [$0] }
        }
        return Facts(dtype: x.dtype, shape: out, values: values)
    }

    // MARK: Shape and data movement

    mutating func shape(_ node: Node) throws -> Facts {
        let x = try required(node, 0)
        let start = try node.int("start", default: 0), end = try node.int("end")
        guard let sx = x.shape else {
            return Facts(dtype: .int64, shape: [fresh()])
        }
        let r = sx.count
        let clamp = { (v: Int) in Swift.min(Swift.max(v < 0 ? v + r : v, 0), r) }
        let (lo, hi) = (clamp(start), clamp(end ?? r))
        let dims = lo < hi ? Array(sx[lo..<hi]) : []
        return Facts(dtype: .int64, shape: [Expr(dims.count)], values: dims)
    }

    /// The elements of a shape-like input (Reshape, Expand, ConstantOfShape, Tile),
    /// or a count of fresh unknowns when only its length is known, or nil.
    mutating func shapeValues(_ f: Facts) -> ShapeInference.ShapeEntries? {
        if let v = f.values { return .init(values: v, known: true) }
        if let s = f.shape, s.count == 1, let n = s[0].fixed, n <= ShapeInference.maxTrackedElements {
            return .init(values: fresh(n), known: false)
        }
        return nil
    }

    mutating func reshape(_ node: Node) throws -> Facts {
        let x = try required(node, 0), target = try required(node, 1)
        let allowZero = try node.int("allowzero", default: 0) != 0
        guard let sv = shapeValues(target) else { return Facts(dtype: x.dtype) }
        let entries = sv.values
        guard sv.known else { return Facts(dtype: x.dtype, shape: entries) }
        var out: [Expr] = []
        var inferred: Int? = nil
        for (i, t) in entries.enumerated() {
            switch t.fixed {
            case .some(0) where !allowZero:
                if let sx = x.shape {
                    guard i < sx.count else { throw mismatch(node, "shape entry \(i) copies a dimension of \(describe(sx)), which has none") }
                    out.append(sx[i])
                } else {
                    out.append(fresh())
                }
            case .some(-1):
                guard inferred == nil else { throw mismatch(node, "shape \(describe(entries)) has more than one -1") }
                inferred = i
                out.append(Expr(-1))
            case let n? where n < -1:
                throw mismatch(node, "shape \(describe(entries)) has a negative dimension")
            default:
                out.append(t)
            }
        }
        let total = x.shape.flatMap { Expr.product($0) }
        if let i = inferred {
            let rest = Expr.product(out.enumerated().filter { $0.offset != i }.map(\.element))
            if let t = total?.fixed, let k = rest?.fixed {
                guard k > 0, t % k == 0 else { throw mismatch(node, "cannot reshape \(describe(x.shape)) to \(describe(entries))") }
                out[i] = Expr(t / k)
            } else if let total, let rest, let q = total.dividedExactly(by: rest) {
                out[i] = q
            } else {
                out[i] = fresh()
            }
        } else if let t = total?.fixed, let n = Expr.product(out)?.fixed, t != n {
            throw mismatch(node, "cannot reshape \(describe(x.shape)) (\(t) elements) to \(describe(out))")
        }
        let values = (out.count <= 1 && Expr.product(out)?.fixed == x.values?.count) ? x.values : nil
        return Facts(dtype: x.dtype, shape: out, values: values)
    }

    mutating func flatten(_ node: Node) throws -> Facts {
        let x = try required(node, 0)
        let axis = try node.int("axis", default: 1)
        guard let sx = x.shape else { return Facts(dtype: x.dtype, shape: fresh(2)) }
        let a = axis < 0 ? axis + sx.count : axis
        guard a >= 0, a <= sx.count else { throw mismatch(node, "axis \(axis) is out of range for rank \(sx.count)") }
        let outer = Expr.product(sx[..<a]), inner = Expr.product(sx[a...])
        return Facts(dtype: x.dtype, shape: [orFresh(outer), orFresh(inner)])
    }

    func squeeze(_ node: Node) throws -> Facts {
        let x = try required(node, 0)
        let axesInput = try input(node, 1)
        guard let sx = x.shape else { return Facts(dtype: x.dtype) }
        var drop: Set<Int>
        if let axesInput {
            guard let raw = axesInput.fixedValues else { return Facts(dtype: x.dtype) }
            drop = Set(try raw.map { try normalizedAxis($0, rank: sx.count, node) })
            if let bad = drop.sorted().first(where: { sx[$0].fixed.map { $0 != 1 } ?? false }) {
                throw mismatch(node, "axis \(bad) of \(describe(sx)) has size \(sx[bad]), not 1")
            }
        } else {
            // Without axes every size-1 dimension goes; a symbol might be 1, so the rank is unknown.
            guard sx.allSatisfy({ $0.fixed != nil }) else { return Facts(dtype: x.dtype) }
            drop = Set(sx.indices.filter { sx[$0].fixed == 1 })
        }
        let out = sx.indices.filter { !drop.contains($0) }.map { sx[$0] }
        return Facts(dtype: x.dtype, shape: out, values: out.count <= 1 ? x.values : nil)
    }

    mutating func unsqueeze(_ node: Node) throws -> Facts {
        let x = try required(node, 0), axesInput = try required(node, 1)
        guard let sx = x.shape else { return Facts(dtype: x.dtype) }
        guard let raw = axesInput.fixedValues else {
            if let k = axesInput.shape, k.count == 1, let n = k[0].fixed, n <= ShapeInference.maxTrackedElements {
                return Facts(dtype: x.dtype, shape: fresh(sx.count + n))
            }
            return Facts(dtype: x.dtype)
        }
        let rank = sx.count + raw.count
        let axes = Set(try raw.map { try normalizedAxis($0, rank: rank, node) })
        guard axes.count == raw.count else { throw mismatch(node, "axes \(raw) repeat an axis") }
        var out: [Expr] = []
        var it = sx.makeIterator()
        for i in 0..<rank { out.append(axes.contains(i) ? Expr(1) : it.next()!) }
        return Facts(dtype: x.dtype, shape: out, values: out.count <= 1 ? x.values : nil)
    }

    mutating func transpose(_ node: Node) throws -> Facts {
        let x = try required(node, 0)
        let perm = try node.ints("perm")
        guard let sx = x.shape else {
            guard let perm else { return Facts(dtype: x.dtype) }
            return Facts(dtype: x.dtype, shape: fresh(perm.count))
        }
        let p = perm ?? Array((0..<sx.count).reversed())
        guard p.count == sx.count, Set(p) == Set(0..<sx.count) else {
            throw mismatch(node, "perm \(p) is not a permutation of the axes of \(describe(sx))")
        }
        return Facts(dtype: x.dtype, shape: p.map { sx[$0] })
    }

    mutating func concat(_ node: Node) throws -> Facts {
        guard let axis = try node.int("axis") else {
            throw GraphError.badAttribute(node: node.name, op: node.op.rawValue, attribute: "axis", reason: "required")
        }
        var parts: [Facts] = []
        for i in node.inputs.indices { if let f = try input(node, i) { parts.append(f) } }
        guard !parts.isEmpty else { throw GraphError.wrongInputCount(node: node.name, op: node.op.rawValue, expected: "at least 1", actual: 0) }
        let dtype = parts.lazy.compactMap(\.dtype).first
        let shapes = parts.compactMap(\.shape)
        guard let first = shapes.first else { return Facts(dtype: dtype) }
        guard shapes.allSatisfy({ $0.count == first.count }) else {
            throw mismatch(node, "inputs \(parts.map { describe($0.shape) }.joined(separator: ", ")) differ in rank")
        }
        let a = try normalizedAxis(axis, rank: first.count, node)
        var out = first
        for i in out.indices where i != a {
            // The inputs must agree here, so any one of their dims is right; prefer a fixed size, then a named symbol.
            let dims = shapes.map { $0[i] }
            let fixed = Set(dims.compactMap(\.fixed))
            guard fixed.count <= 1 else {
                throw mismatch(node, "inputs \(parts.map { describe($0.shape) }.joined(separator: ", ")) differ outside axis \(a)")
            }
            out[i] = fixed.first.map { Expr($0) } ?? dims.first { !$0.description.hasPrefix("?") } ?? dims[0]
        }
        out[a] = shapes.count == parts.count ? orFresh(Expr.sum(shapes.map { $0[a] })) : fresh()
        var values: [Expr]? = nil
        if first.count == 1, parts.allSatisfy({ $0.values != nil }) {
            values = parts.flatMap { $0.values! }
        }
        return Facts(dtype: dtype, shape: out, values: values)
    }

    mutating func split(_ node: Node) throws -> [Facts] {
        let x = try required(node, 0), sizesInput = try input(node, 1)
        let axis = try node.int("axis", default: 0), numOutputs = try node.int("num_outputs")
        let count = node.outputs.count
        guard let sx = x.shape else { return [Facts](repeating: Facts(dtype: x.dtype), count: count) }
        let a = try normalizedAxis(axis, rank: sx.count, node)
        let d = sx[a]
        var sizes: [Expr]
        if let sizesInput {
            if let v = sizesInput.values {
                guard v.count == count else { throw mismatch(node, "\(v.count) split sizes for \(count) outputs") }
                if let n = d.fixed, let fixed = sizesInput.fixedValues, fixed.reduce(0, +) != n || fixed.contains(where: { $0 < 0 }) {
                    throw mismatch(node, "split sizes \(fixed) do not add up to dimension \(n) of \(describe(sx))")
                }
                sizes = v
            } else {
                sizes = fresh(count)
            }
        } else {
            // Equal parts; with num_outputs (opset 18) the last part may be smaller.
            let parts = numOutputs ?? count
            guard parts > 0, parts == count else { throw mismatch(node, "num_outputs \(parts) for \(count) outputs") }
            if let n = d.fixed {
                let chunk = n / parts + (n % parts == 0 ? 0 : 1)
                sizes = (0..<parts).map { Expr(Swift.max(0, Swift.min(chunk, n - $0 * chunk))) }
            } else if let q = d.dividedExactly(by: Expr(parts)) {
                sizes = [Expr](repeating: q, count: parts)
            } else {
                sizes = fresh(parts)
            }
        }
        var offset = 0
        return sizes.map { size in
            var s = sx
            s[a] = size
            var values: [Expr]? = nil
            if sx.count == 1, let v = x.values, let n = size.fixed, offset + n <= v.count {
                values = Array(v[offset..<offset + n])
                offset += n
            }
            return Facts(dtype: x.dtype, shape: s, values: values)
        }
    }

    mutating func slice(_ node: Node) throws -> Facts {
        let x = try required(node, 0), startsIn = try required(node, 1), endsIn = try required(node, 2)
        let axesIn = try input(node, 3), stepsIn = try input(node, 4)
        guard let sx = x.shape else { return Facts(dtype: x.dtype) }
        let axesKnown: [Int]? = axesIn.map { $0.fixedValues } ?? startsIn.values.map { Array(0..<$0.count) }
        guard let starts = startsIn.values, let ends = endsIn.values, let rawAxes = axesKnown else {
            // Bounds computed at run time: the sliced axes (all, when unknown) get unknown sizes.
            var out = sx
            let touched = try axesKnown.map { try $0.map { try normalizedAxis($0, rank: sx.count, node) } } ?? Array(sx.indices)
            for a in touched { out[a] = fresh() }
            return Facts(dtype: x.dtype, shape: out)
        }
        let steps: [Expr] = stepsIn.map { $0.values ?? fresh(starts.count) } ?? [Expr](repeating: Expr(1), count: starts.count)
        guard ends.count == starts.count, rawAxes.count == starts.count, steps.count == starts.count else {
            throw mismatch(node, "starts, ends, axes and steps differ in length")
        }
        var out = sx
        var valueRange: (lo: Int, step: Int)? = nil
        for i in starts.indices {
            let a = try normalizedAxis(rawAxes[i], rank: sx.count, node)
            guard let s = steps[i].fixed else { out[a] = fresh(); continue }
            guard s != 0 else { throw mismatch(node, "step is 0 on axis \(a)") }
            if let d = sx[a].fixed, let b = starts[i].fixed, let e = ends[i].fixed {
                let (lo, n) = Self.sliceExtent(d: d, start: b, end: e, step: s)
                out[a] = Expr(n)
                if a == 0 && sx.count == 1 { valueRange = (lo, s) }
            } else {
                out[a] = orFresh(symbolicExtent(d: sx[a], start: starts[i], end: ends[i], step: s))
            }
        }
        var values: [Expr]? = nil
        if let v = x.values, let r = valueRange, let n = out[0].fixed {
            values = (0..<n).map { v[r.lo + $0 * r.step] }
        } else if let v = x.values, rawAxes.isEmpty {
            values = v
        }
        return Facts(dtype: x.dtype, shape: out, values: values)
    }

    /// First index and length of a slice of a fixed dimension, clamped like the kernel.
    static func sliceExtent(d: Int, start: Int, end: Int, step: Int) -> (lo: Int, count: Int) {
        var lo = start < 0 ? start &+ d : start, hi = end < 0 ? end &+ d : end
        if step > 0 {
            lo = Swift.min(Swift.max(lo, 0), d); hi = Swift.min(Swift.max(hi, 0), d)
            return (lo, hi > lo ? (hi - lo - 1) / step + 1 : 0)
        }
        lo = Swift.min(Swift.max(lo, -1), d - 1); hi = Swift.min(Swift.max(hi, -1), d - 1)
        return (lo, lo > hi ? Int((UInt(lo - hi - 1) / step.magnitude) + 1) : 0)
    }

    /// Length of a slice when the dimension or a bound is symbolic; nil when it
    /// cannot be written down. Ends at or beyond ±2³¹−1 mean "to the edge", as exporters write them.
    func symbolicExtent(d: Expr, start: Expr, end: Expr, step: Int) -> Expr? {
        let huge = Int(Int32.max)
        let ceilDiv = { (n: Expr) -> Expr? in
            if step == 1 { return n }
            if let k = n.fixed { return Expr(k > 0 ? (k - 1) / step + 1 : 0) }
            return n.dividedExactly(by: Expr(step))
        }
        if step < 0 {
            // Only the full reversal x[::-1].
            guard step == -1, let b = start.fixed, b == -1 || b >= huge, let e = end.fixed, e <= -huge else { return nil }
            return d
        }
        let from: Expr
        if let b = start.fixed, b <= -huge {
            from = Expr(0)
        } else if let b = start.fixed, b < 0 {
            // Counting from the end; assumes |start| ≤ d.
            guard let e = end.fixed else { return nil }
            if e >= huge { return ceilDiv(Expr(-b)) }
            if e < 0 { return ceilDiv(Expr(Swift.max(0, e - b))) }
            return nil
        } else if let b = start.fixed, b >= huge {
            return Expr(0)
        } else {
            from = start
        }
        if let e = end.fixed {
            if e >= huge { return (d - from).flatMap(ceilDiv) }
            if e <= -huge { return Expr(0) }
            if e < 0 { return (d + Expr(e)).flatMap { $0 - from }.flatMap(ceilDiv) }
            // A fixed end on a symbolic dimension may be clamped: unknown.
            return nil
        }
        // A symbolic end (a size computed from another input) is assumed to lie within the dimension.
        return (end - from).flatMap(ceilDiv)
    }

    func gather(_ node: Node) throws -> Facts {
        let x = try required(node, 0), indices = try required(node, 1)
        let axis = try node.int("axis", default: 0)
        guard let sx = x.shape else { return Facts(dtype: x.dtype) }
        let a = try normalizedAxis(axis, rank: sx.count, node)
        if let d = sx[a].fixed, let idx = indices.fixedValues, let bad = idx.first(where: { $0 < -d || $0 >= d }) {
            throw mismatch(node, "index \(bad) is out of range for dimension \(d) of \(describe(sx))")
        }
        guard let si = indices.shape else { return Facts(dtype: x.dtype) }
        let out = Array(sx[..<a]) + si + Array(sx[(a + 1)...])
        var values: [Expr]? = nil
        if sx.count == 1, si.count <= 1, let v = x.values, let idx = indices.fixedValues {
            values = idx.map { v[$0 < 0 ? $0 + v.count : $0] }
        }
        return Facts(dtype: x.dtype, shape: out, values: values)
    }

    mutating func expand(_ node: Node) throws -> Facts {
        let x = try required(node, 0), target = try required(node, 1)
        guard let sv = shapeValues(target) else { return Facts(dtype: x.dtype) }
        let entries = sv.values
        if sv.known, let bad = entries.first(where: { ($0.fixed ?? 0) < 0 }) {
            throw mismatch(node, "shape \(describe(entries)) has a negative dimension \(bad)")
        }
        guard let out = try broadcast([x.shape, entries], node) else { return Facts(dtype: x.dtype) }
        let values = elementwise([x.values], shape: out) { $0[0] }
        return Facts(dtype: x.dtype, shape: out, values: values)
    }

    mutating func tile(_ node: Node) throws -> Facts {
        let x = try required(node, 0), repeatsIn = try required(node, 1)
        guard let sx = x.shape else { return Facts(dtype: x.dtype) }
        guard let repeats = shapeValues(repeatsIn)?.values else { return Facts(dtype: x.dtype, shape: fresh(sx.count)) }
        guard repeats.count == sx.count, !repeats.contains(where: { ($0.fixed ?? 0) < 0 }) else {
            throw mismatch(node, "repeats \(describe(repeats)) do not match \(describe(sx))")
        }
        var out: [Expr] = []
        for (d, r) in zip(sx, repeats) { out.append(orFresh(d * r)) }
        var values: [Expr]? = nil
        if sx.count == 1, let v = x.values, let r = repeats[0].fixed,
           case let (n, overflow) = v.count.multipliedReportingOverflow(by: r), !overflow, n <= ShapeInference.maxTrackedElements {
            values = Array((0..<r).map { _ in v }.joined())
        }
        return Facts(dtype: x.dtype, shape: out, values: values)
    }

    func constant(_ node: Node) throws -> Facts {
        if let t = try node.tensor("value") { return Facts(constant: t) }
        if let v = try node.int("value_int") { return Facts(dtype: .int64, shape: [], values: [Expr(v)]) }
        if case let .ints(v)? = node.attributes["value_ints"] {
            return Facts(dtype: .int64, shape: [Expr(v.count)], values: v.count <= ShapeInference.maxTrackedElements ? v.map { Expr($0) } : nil)
        }
        if node.attributes["value_float"] != nil { return Facts(dtype: .float32, shape: []) }
        if case let .floats(v)? = node.attributes["value_floats"] { return Facts(dtype: .float32, shape: [Expr(v.count)]) }
        return Facts()
    }

    mutating func constantOfShape(_ node: Node) throws -> Facts {
        let target = try required(node, 0)
        let value = try node.tensor("value")
        if let value, value.count != 1 {
            throw GraphError.badAttribute(node: node.name, op: node.op.rawValue, attribute: "value", reason: "must hold one element")
        }
        let fill = value.map { Facts(constant: $0) } ?? Facts(dtype: .float32, shape: [Expr(1)], values: [Expr(0)])
        guard let sv = shapeValues(target) else { return Facts(dtype: fill.dtype) }
        let entries = sv.values
        if sv.known, let bad = entries.first(where: { ($0.fixed ?? 0) < 0 }) {
            throw mismatch(node, "shape \(describe(entries)) has a negative dimension \(bad)")
        }
        let values = elementwise([fill.values], shape: entries) { $0[0] }
        return Facts(dtype: fill.dtype, shape: entries, values: values)
    }

    mutating func range(_ node: Node) throws -> Facts {
        let start = try required(node, 0), limit = try required(node, 1), delta = try required(node, 2)
        for f in [start, limit, delta] {
            if let s = f.shape, let n = Expr.product(s)?.fixed, n != 1 { throw mismatch(node, "start, limit and delta must be scalars") }
        }
        let dtype = start.dtype ?? limit.dtype ?? delta.dtype
        guard let s = start.values?.first, let l = limit.values?.first, let d = delta.values?.first else {
            return Facts(dtype: dtype, shape: [fresh()])
        }
        if let a = s.fixed, let b = l.fixed, let c = d.fixed {
            guard c != 0 else { throw mismatch(node, "delta is 0") }
            // Like the kernel: ceil((limit − start) / delta), at least 0.
            let exact = (Double(b) - Double(a)) / Double(c)
            guard exact < 1e15 else { return Facts(dtype: dtype, shape: [fresh()]) }
            let n = Swift.max(0, Int(exact.rounded(.up)))
            let values = n <= ShapeInference.maxTrackedElements ? (0..<n).map { Expr(a + $0 * c) } : nil
            return Facts(dtype: dtype, shape: [Expr(n)], values: values)
        }
        guard let c = d.fixed, c != 0, let span = l - s else { return Facts(dtype: dtype, shape: [fresh()]) }
        // Symbolic bounds: assumes the range is not empty the wrong way round.
        if c == 1 { return Facts(dtype: dtype, shape: [span]) }
        if c == -1 { return Facts(dtype: dtype, shape: [orFresh(-span)]) }
        return Facts(dtype: dtype, shape: [orFresh(span.dividedExactly(by: Expr(c)))])
    }
}

extension ShapeInference {
    /// The elements of a shape-like input; `known == false` when only their number is
    /// known and `values` are fresh unknowns.
    struct ShapeEntries {
        var values: [Expr]
        var known: Bool
    }

    /// Shape written like `[batch, seq, 384]`.
    static func describe(_ shape: [Expr]?) -> String {
        guard let shape else { return "[?]" }
        return "[" + shape.map(\.description).joined(separator: ", ") + "]"
    }
}
