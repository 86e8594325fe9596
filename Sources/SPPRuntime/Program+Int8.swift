import SPPCore
import SPPGraph
import SPPKernels

extension Program {
    /// With `options.weights == .int8`, the kernel of a node whose GEMM weights are
    /// float32 constants of the graph: they are quantized here, once, and the kernel
    /// holds them. Nil (the float32 kernel is used) for other nodes, weights computed
    /// at run time, a Gemm with transA, and inner sizes int32 sums could overflow.
    ///
    /// A file that stores int8 weights would hand its `QuantizedMatrix` parts in
    /// here instead of quantizing.
    static func int8Kernel(_ node: Node, _ constants: [String: Tensor], _ options: RuntimeOptions) throws -> KernelFunction? {
        guard options.weights == .int8 else { return nil }
        let range = options.activationRange ?? .native
        func constant(_ i: Int) -> Tensor? {
            guard i < node.inputs.count, let t = constants[node.inputs[i]], t.dtype == .float32 else { return nil }
            return t
        }
        func fits(_ inner: Int) -> Bool { inner <= QuantizedMatrix.maximumRows }
        do {
            switch node.op {
            case .attention:
                typealias In = AttentionAttributes.Input
                guard let wq = constant(In.wq.rawValue), let bq = constant(In.bq.rawValue), let wk = constant(In.wk.rawValue),
                      let bk = constant(In.bk.rawValue), let wv = constant(In.wv.rawValue), let bv = constant(In.bv.rawValue),
                      let wo = constant(In.wo.rawValue), let bo = constant(In.bo.rawValue),
                      fits(wq.shape.first ?? 0), fits(wo.shape.first ?? 0) else { return nil }
                let a = try node.attentionAttributes()
                let p = Attention.Parameters(qkRanks: a.qkRanks, voRanks: a.voRanks, scale: a.scale, causal: a.causal)
                let w = try Attention.QuantizedWeights(Attention.Weights(wq: wq, bq: bq, wk: wk, bk: bk, wv: wv, bv: bv, wo: wo, bo: bo),
                                                       p, range: range)
                return { args in
                    func optional(_ i: In) -> Tensor? { i.rawValue < args.count ? args[i.rawValue] : nil }
                    return [try Attention.run(try required(args, In.x.rawValue), w, mask: optional(.mask), bias: optional(.bias), p)]
                }
            case .feedForward:
                guard let w1 = constant(1), let b1 = constant(2), let w2 = constant(3), let b2 = constant(4),
                      fits(w1.shape.first ?? 0), fits(w2.shape.first ?? 0) else { return nil }
                let activation = try Program.feedForwardActivation(node)
                let w = try FeedForward.QuantizedWeights(w1: w1, b1: b1, w2: w2, b2: b2, range: range)
                return { args in [try FeedForward.run(try required(args, 0), w, activation: activation)] }
            case .matMul:
                guard let b = constant(1), b.rank == 2, fits(b.shape[0]) else { return nil }
                let w = try QuantizedMatrix(quantizing: b)
                return { args in [try Linear.matMul(try required(args, 0), w, range: range)] }
            case .gemm:
                guard try node.int("transA", default: 0) == 0, let b = constant(1), b.rank == 2 else { return nil }
                let transB = try node.int("transB", default: 0) != 0
                let alpha = try node.float("alpha", default: 1), beta = try node.float("beta", default: 1)
                guard fits(transB ? b.shape[1] : b.shape[0]) else { return nil }
                // Weights [K, N] as the int8 GEMM reads them; alpha folds into the column scales.
                let w = try QuantizedMatrix(quantizing: transB ? try DataMovement.transpose(b, perm: [1, 0]) : b, scale: alpha)
                return { args in [try Linear.gemm(try required(args, 0), w, args.count > 2 ? args[2] : nil, beta: beta, range: range)] }
            default:
                return nil
            }
        } catch let e as KernelError {
            throw RuntimeError.nodeFailed(node: node.name, op: node.op.rawValue, reason: "int8 weights: \(e.description)")
        }
    }
}
