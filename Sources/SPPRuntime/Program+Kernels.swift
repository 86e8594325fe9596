import Glibc
import SPPCore
import SPPGraph
import SPPKernels

extension Program {
    /// Chooses the kernel for a node and reads its attributes once, so that a bad
    /// attribute is reported when the model is loaded rather than when it runs.
    static func makeKernel(_ node: Node) throws -> KernelFunction {
        func integers(_ t: Tensor, _ what: String) throws -> [Int] {
            guard let v = t.integers else { throw KernelError.unsupportedDType(t.dtype, reason: "\(what) must be integers") }
            return v
        }
        func axesInput(_ args: [Tensor?], _ i: Int, rank: Int) throws -> [Int]? {
            guard i < args.count, let t = args[i] else { return nil }
            return try integers(t, "axes").map { try Normalization.normalizeAxis($0, rank: rank) }
        }
        let binary: (ArithmeticOp) -> KernelFunction = { op in { args in [try Elementwise.arithmetic(op, required(args, 0), required(args, 1))] } }
        let compare: (ComparisonOp) -> KernelFunction = { op in { args in [try Elementwise.compare(op, required(args, 0), required(args, 1))] } }
        let logic: (LogicOp) -> KernelFunction = { op in { args in [try Elementwise.logic(op, required(args, 0), required(args, 1))] } }
        let unary: (UnaryOp) -> KernelFunction = { op in { args in [try Elementwise.unary(op, required(args, 0))] } }
        let variadic: (ArithmeticOp) -> KernelFunction = { op in
            { args in
                var acc = try required(args, 0)
                for t in args.dropFirst().compactMap({ $0 }) { acc = try Elementwise.arithmetic(op, acc, t) }
                return [acc]
            }
        }
        func reduce(_ op: ReduceOp) throws -> KernelFunction {
            let keepDims = try node.int("keepdims", default: 1) != 0
            let noop = try node.int("noop_with_empty_axes", default: 0) != 0
            let attrAxes = try node.ints("axes")
            return { args in
                let x = try required(args, 0)
                let axes = try axesInput(args, 1, rank: x.rank) ?? attrAxes?.map { try Normalization.normalizeAxis($0, rank: x.rank) } ?? []
                return [try Reduction.reduce(op, x, axes: axes, keepDims: keepDims, noopWithEmptyAxes: noop)]
            }
        }

        switch node.op {
        case .add: return binary(.add)
        case .sub: return binary(.sub)
        case .mul: return binary(.mul)
        case .div: return binary(.div)
        case .pow: return binary(.pow)
        case .mod: return binary(.mod(fmod: try node.int("fmod", default: 0) != 0))
        case .max: return variadic(.max)
        case .min: return variadic(.min)
        case .equal: return compare(.equal)
        case .less: return compare(.less)
        case .lessOrEqual: return compare(.lessOrEqual)
        case .greater: return compare(.greater)
        case .greaterOrEqual: return compare(.greaterOrEqual)
        case .and: return logic(.and)
        case .or: return logic(.or)
        case .xor: return logic(.xor)
        case .where: return { args in [try Elementwise.select(required(args, 0), required(args, 1), required(args, 2))] }
        case .abs: return unary(.abs)
        case .neg: return unary(.neg)
        case .sqrt: return unary(.sqrt)
        case .reciprocal: return unary(.reciprocal)
        case .exp: return unary(.exp)
        case .log: return unary(.log)
        case .erf: return unary(.erf)
        case .tanh: return unary(.tanh)
        case .sigmoid: return unary(.sigmoid)
        case .relu: return unary(.relu)
        case .floor: return unary(.floor)
        case .ceil: return unary(.ceil)
        case .sign: return unary(.sign)
        case .gelu:
            let approximate = try node.string("approximate", default: "none")
            guard approximate == "none" || approximate == "tanh" else {
                throw GraphError.badAttribute(node: node.name, op: node.op.rawValue, attribute: "approximate", reason: "'\(approximate)' is not 'none' or 'tanh'")
            }
            return unary(.gelu(tanhApproximation: approximate == "tanh"))
        case .not: return { args in [try Elementwise.not(required(args, 0))] }
        case .isNaN: return { args in [try Elementwise.isNaN(required(args, 0))] }
        case .clip:
            return { args in [try Elementwise.clip(required(args, 0), min: args.count > 1 ? args[1] : nil, max: args.count > 2 ? args[2] : nil)] }
        case .cast:
            let code = try node.int("to", default: 0)
            guard let to = DType(rawValue: Int32(truncatingIfNeeded: code)) else {
                throw RuntimeError.unsupportedOp(node: node.name, op: node.op.rawValue, reason: "cast to \(DType.onnxName(Int32(truncatingIfNeeded: code)))")
            }
            return { args in [try Cast.cast(required(args, 0), to: to)] }
        case .castLike: return { args in [try Cast.cast(required(args, 0), to: required(args, 1).dtype)] }
        case .identity: return { args in [try required(args, 0)] }

        case .matMul: return { args in [try Linear.matMul(required(args, 0), required(args, 1))] }
        case .gemm:
            let alpha = try node.float("alpha", default: 1), beta = try node.float("beta", default: 1)
            let transA = try node.int("transA", default: 0) != 0, transB = try node.int("transB", default: 0) != 0
            return { args in [try Linear.gemm(required(args, 0), required(args, 1), args.count > 2 ? args[2] : nil,
                                              transA: transA, transB: transB, alpha: alpha, beta: beta)] }
        case .conv:
            let autoPad = try node.string("auto_pad", default: "NOTSET")
            let group = try node.int("group", default: 1)
            let kernelShape = try node.ints("kernel_shape")
            let attrPads = try node.ints("pads"), attrStrides = try node.ints("strides"), attrDilations = try node.ints("dilations")
            return { args in
                let x = try required(args, 0), w = try required(args, 1)
                let spatial = x.rank - 2
                guard spatial >= 1 else { throw KernelError.shapeMismatch("Conv input \(Tensor.describe(x.shape)) has no spatial dimensions") }
                let kernel = kernelShape ?? Array(w.shape.dropFirst(2))
                let strides = attrStrides ?? [Int](repeating: 1, count: spatial)
                let dilations = attrDilations ?? [Int](repeating: 1, count: spatial)
                let pads = try Convolution.autoPads(autoPad, input: Array(x.shape.dropFirst(2)), kernel: kernel, strides: strides, dilations: dilations)
                    ?? attrPads ?? [Int](repeating: 0, count: spatial * 2)
                guard strides.count == spatial, dilations.count == spatial, pads.count == spatial * 2 else {
                    throw KernelError.invalidArgument("Conv strides/dilations/pads do not match \(spatial) spatial dimensions")
                }
                return [try Convolution.conv(x, w, args.count > 2 ? args[2] : nil,
                                             .init(strides: strides, pads: pads, dilations: dilations, group: group))]
            }

        case .softmax, .logSoftmax:
            let coerce = try node.int("coerce_2d", default: 0) != 0
            let axis = try node.int("axis", default: coerce ? 1 : -1)
            let log = node.op == .logSoftmax
            return { args in [try Normalization.softmax(required(args, 0), axis: axis, coerce2D: coerce, log: log)] }
        case .layerNormalization:
            let axis = try node.int("axis", default: -1), epsilon = try node.float("epsilon", default: 1e-5)
            return { args in
                let (y, mean, invStd) = try Normalization.layerNorm(required(args, 0), scale: required(args, 1),
                                                                   bias: args.count > 2 ? args[2] : nil, axis: axis, epsilon: epsilon)
                return [y, mean, invStd]
            }
        case .reduceMean: return try reduce(.mean)
        case .reduceSum: return try reduce(.sum)
        case .reduceMax: return try reduce(.max)
        case .reduceMin: return try reduce(.min)
        case .reduceProd: return try reduce(.prod)
        case .cumSum:
            let exclusive = try node.int("exclusive", default: 0) != 0, reverse = try node.int("reverse", default: 0) != 0
            return { args in
                let axis = try integers(required(args, 1), "CumSum axis")
                guard axis.count == 1 else { throw KernelError.invalidArgument("CumSum axis must be a scalar") }
                return [try Reduction.cumSum(required(args, 0), axis: axis[0], exclusive: exclusive, reverse: reverse)]
            }

        case .shape:
            let start = try node.int("start", default: 0), end = try node.int("end")
            return { args in
                let s = try required(args, 0).shape
                let clamp = { (v: Int) in Swift.min(Swift.max(v < 0 ? v + s.count : v, 0), s.count) }
                let (lo, hi) = (clamp(start), clamp(end ?? s.count))
                let dims = lo < hi ? s[lo..<hi].map { Int64($0) } : []
                return [Tensor(dims, shape: [dims.count])]
            }
        case .size: return { args in [Tensor([Int64(try required(args, 0).count)], shape: [])] }
        case .reshape:
            let allowZero = try node.int("allowzero", default: 0) != 0
            return { args in
                let x = try required(args, 0)
                return [x.reshaped(try Shapes.reshape(x.shape, to: integers(required(args, 1), "Reshape shape"), allowZero: allowZero))]
            }
        case .flatten:
            let axis = try node.int("axis", default: 1)
            return { args in
                let x = try required(args, 0)
                let a = axis < 0 ? axis + x.rank : axis
                guard a >= 0, a <= x.rank else { throw KernelError.invalidArgument("Flatten axis \(axis) is out of range for rank \(x.rank)") }
                return [x.reshaped([x.shape[..<a].reduce(1, *), x.shape[a...].reduce(1, *)])]
            }
        case .squeeze:
            return { args in
                let x = try required(args, 0)
                let axes = try axesInput(args, 1, rank: x.rank)
                if let axes, let bad = axes.first(where: { x.shape[$0] != 1 }) {
                    throw KernelError.shapeMismatch("Squeeze axis \(bad) has size \(x.shape[bad]), not 1")
                }
                let drop = Set(axes ?? x.shape.indices.filter { x.shape[$0] == 1 })
                return [x.reshaped(x.shape.indices.filter { !drop.contains($0) }.map { x.shape[$0] })]
            }
        case .unsqueeze:
            return { args in
                let x = try required(args, 0)
                let raw = try integers(required(args, 1), "Unsqueeze axes")
                let rank = x.rank + raw.count
                let axes = Set(try raw.map { try Normalization.normalizeAxis($0, rank: rank) })
                guard axes.count == raw.count else { throw KernelError.invalidArgument("Unsqueeze axes \(raw) repeat an axis") }
                var shape: [Int] = []
                var it = x.shape.makeIterator()
                for i in 0..<rank { shape.append(axes.contains(i) ? 1 : it.next()!) }
                return [x.reshaped(shape)]
            }
        case .transpose:
            let perm = try node.ints("perm")
            return { args in
                let x = try required(args, 0)
                return [try DataMovement.transpose(x, perm: perm ?? Array((0..<x.rank).reversed()))]
            }
        case .concat:
            guard let axis = try node.int("axis") else {
                throw GraphError.badAttribute(node: node.name, op: node.op.rawValue, attribute: "axis", reason: "required")
            }
            return { args in [try DataMovement.concat(args.compactMap { $0 }, axis: axis)] }
        case .split:
            let axis = try node.int("axis", default: 0), numOutputs = try node.int("num_outputs")
            let outputs = node.outputs.count
            return { args in
                let x = try required(args, 0)
                let a = try Normalization.normalizeAxis(axis, rank: x.rank)
                let d = x.shape[a]
                let sizes: [Int]
                if args.count > 1, let s = args[1] {
                    sizes = try integers(s, "Split sizes")
                } else {
                    // Equal parts; with num_outputs (opset 18) the last part may be smaller.
                    let parts = numOutputs ?? outputs
                    let chunk = (d + parts - 1) / Swift.max(parts, 1)
                    sizes = (0..<parts).map { Swift.max(0, Swift.min(chunk, d - $0 * chunk)) }
                }
                return try DataMovement.split(x, axis: a, sizes: sizes)
            }
        case .slice:
            return { args in
                let x = try required(args, 0)
                let starts = try integers(required(args, 1), "Slice starts"), ends = try integers(required(args, 2), "Slice ends")
                let axes = try (args.count > 3 ? args[3] : nil).map { try integers($0, "Slice axes") } ?? Array(0..<starts.count)
                let steps = try (args.count > 4 ? args[4] : nil).map { try integers($0, "Slice steps") } ?? [Int](repeating: 1, count: starts.count)
                return [try DataMovement.slice(x, starts: starts, ends: ends, axes: axes, steps: steps)]
            }
        case .gather:
            let axis = try node.int("axis", default: 0)
            return { args in [try DataMovement.gather(required(args, 0), indices: required(args, 1), axis: axis)] }
        case .expand:
            return { args in [try DataMovement.expand(required(args, 0), to: integers(required(args, 1), "Expand shape"))] }
        case .tile:
            return { args in [try DataMovement.tile(required(args, 0), repeats: integers(required(args, 1), "Tile repeats"))] }
        case .trilu:
            let upper = try node.int("upper", default: 1) != 0
            return { args in
                let k = try (args.count > 1 ? args[1] : nil).map { try integers($0, "Trilu k").first ?? 0 } ?? 0
                return [try DataMovement.trilu(required(args, 0), upper: upper, k: k)]
            }
        case .constant:
            guard let value = try node.tensor("value") else {
                throw RuntimeError.unsupportedOp(node: node.name, op: node.op.rawValue, reason: "only the 'value' form of Constant is supported")
            }
            return { _ in [value] }
        case .constantOfShape:
            let value = try node.tensor("value") ?? Tensor([Float(0)], shape: [1])
            guard value.count == 1 else {
                throw GraphError.badAttribute(node: node.name, op: node.op.rawValue, attribute: "value", reason: "must hold one element")
            }
            return { args in
                let shape = try integers(required(args, 0), "ConstantOfShape shape")
                guard shape.allSatisfy({ $0 >= 0 }) else { throw KernelError.invalidArgument("ConstantOfShape shape \(shape) has a negative dimension") }
                let out = Tensor(dtype: value.dtype, shape: shape)
                let size = value.dtype.size
                for i in 0..<out.count { (out.rawPointer + i * size).copyMemory(from: value.rawPointer, byteCount: size) }
                return [out]
            }
        case .range:
            return { args in [try Shapes.range(required(args, 0), required(args, 1), required(args, 2))] }

        case .attention:
            let a = try node.attentionAttributes()
            let parameters = Attention.Parameters(qkRanks: a.qkRanks, voRanks: a.voRanks, scale: a.scale, causal: a.causal)
            return { args in
                typealias In = AttentionAttributes.Input
                func arg(_ i: In) throws -> Tensor { try required(args, i.rawValue) }
                func optional(_ i: In) -> Tensor? { i.rawValue < args.count ? args[i.rawValue] : nil }
                let weights = Attention.Weights(wq: try arg(.wq), bq: try arg(.bq), wk: try arg(.wk), bk: try arg(.bk),
                                                wv: try arg(.wv), bv: try arg(.bv), wo: try arg(.wo), bo: try arg(.bo))
                return [try Attention.run(try arg(.x), weights, mask: optional(.mask), bias: optional(.bias), parameters)]
            }
        case .feedForward:
            let activation = try feedForwardActivation(node)
            return { args in
                [try FeedForward.run(required(args, 0), w1: required(args, 1), b1: required(args, 2),
                                     w2: required(args, 3), b2: required(args, 4), activation: activation)]
            }
        }
    }
}

extension Program {
    /// The float32 kernel of an `spp.Attention` or `spp.FeedForward` node whose
    /// weights are constants: they are prepared here, once (`Attention.PreparedWeights`,
    /// `FeedForward.PreparedWeights`). Nil for other nodes, which get `makeKernel`'s.
    /// An attention node takes the `[Wq | Wk | Wv]` the loader read side by side where there is
    /// one (the constants then lack them). `held` counts what the kernel keeps.
    static func float32Kernel(_ node: Node, _ held: inout KernelWeights) throws -> KernelFunction? {
        guard var inputs = preparedInputs(node.op) else { return nil }
        typealias In = AttentionAttributes.Input
        let queryKeyValue = held.float32QueryKeyValue(node)
        if queryKeyValue != nil { inputs.removeAll { [In.wq, .wk, .wv].map(\.rawValue).contains($0) } }
        var weights: [Int: Tensor] = [:]
        for i in inputs {
            guard let t = held.constant(node, i) else { return nil }
            weights[i] = t
        }
        do {
            switch node.op {
            case .attention:
                let a = try node.attentionAttributes()
                let p = Attention.Parameters(qkRanks: a.qkRanks, voRanks: a.voRanks, scale: a.scale, causal: a.causal)
                func w(_ i: In) -> Tensor { weights[i.rawValue]! }
                let prepared = try queryKeyValue.map { try Attention.PreparedWeights(qkv: $0, bq: w(.bq), bk: w(.bk), bv: w(.bv), wo: w(.wo), bo: w(.bo), p) }
                    ?? Attention.PreparedWeights(Attention.Weights(wq: w(.wq), bq: w(.bq), wk: w(.wk), bk: w(.bk), wv: w(.wv), bv: w(.bv),
                                                                   wo: w(.wo), bo: w(.bo)), p)
                return { args in
                    func optional(_ i: In) -> Tensor? { i.rawValue < args.count ? args[i.rawValue] : nil }
                    return [try Attention.run(try required(args, In.x.rawValue), prepared, mask: optional(.mask), bias: optional(.bias), p)]
                }
            case .feedForward:
                let prepared = try FeedForward.PreparedWeights(w1: weights[1]!, b1: weights[2]!, w2: weights[3]!, b2: weights[4]!,
                                                               activation: try feedForwardActivation(node))
                return { args in [try FeedForward.run(try required(args, 0), prepared)] }
            default:
                return nil
            }
        } catch let e as KernelError {
            throw RuntimeError.nodeFailed(node: node.name, op: node.op.rawValue, reason: e.description)
        }
    }

    /// The inputs a prepared kernel (`float32Kernel`, `int8Kernel`) takes over when
    /// they are constants: it holds them in its own form and never reads them from
    /// the run's values. Nil for ops without one.
    static func preparedInputs(_ op: OpType) -> [Int]? {
        typealias In = AttentionAttributes.Input
        switch op {
        case .attention: return [In.wq, .bq, .wk, .bk, .wv, .bv, .wo, .bo].map(\.rawValue)
        case .feedForward: return [1, 2, 3, 4]
        case .matMul, .gemm: return [1]
        default: return nil
        }
    }

    /// Input `i` of a kernel's arguments, which the node must have.
    static func required(_ args: [Tensor?], _ i: Int) throws -> Tensor {
        guard i < args.count, let t = args[i] else {
            throw KernelError.invalidArgument("required input \(i) is missing")
        }
        return t
    }

    /// The kernel's activation of an `spp.FeedForward` node.
    static func feedForwardActivation(_ node: Node) throws -> FeedForward.Activation {
        switch try node.feedForwardActivation() {
        case .gelu: return .gelu
        case .geluTanh: return .geluTanh
        case .relu: return .relu
        }
    }

    /// Runs one node on concrete inputs (constant folding uses this).
    public static func evaluate(_ node: Node, inputs: [Tensor?]) throws -> [Tensor] {
        try makeKernel(node)(inputs)
    }
}
