import SPPCore
import SPPGraph
import SPPKernels

extension Program {
    /// With `options.weights == .int8`, the kernel of a node whose GEMM weights are
    /// constants: int8 as the file stored them, or float32 quantized here, once
    /// (`KernelWeights`); the kernel holds them. Nil (the float32 kernel is used)
    /// for other nodes, weights computed at run time, a Gemm with transA, and
    /// inner sizes int32 sums could overflow.
    static func int8Kernel(_ node: Node, _ weights: inout KernelWeights, _ options: RuntimeOptions) throws -> KernelFunction? {
        guard options.weights == .int8 else { return nil }
        let range = options.activationRange ?? .native
        func constant(_ i: Int) -> Tensor? { weights.constant(node, i) }
        func matrix(_ i: Int) throws -> QuantizedMatrix? { try weights.matrix(node, i) }
        do {
            switch node.op {
            case .attention:
                typealias In = AttentionAttributes.Input
                guard let bq = constant(In.bq.rawValue), let bk = constant(In.bk.rawValue), let bv = constant(In.bv.rawValue),
                      let bo = constant(In.bo.rawValue), let wo = try matrix(In.wo.rawValue) else { return nil }
                let a = try node.attentionAttributes()
                let p = Attention.Parameters(qkRanks: a.qkRanks, voRanks: a.voRanks, scale: a.scale, causal: a.causal)
                let w: Attention.QuantizedWeights
                if let qkv = weights.queryKeyValue(node) {
                    w = try Attention.QuantizedWeights(qkv: qkv, bq: bq, bk: bk, bv: bv, wo: wo, bo: bo, p, range: range)
                } else {
                    guard let wq = try weights.parts(node, In.wq.rawValue), let wk = try weights.parts(node, In.wk.rawValue),
                          let wv = try weights.parts(node, In.wv.rawValue) else { return nil }
                    w = try Attention.QuantizedWeights(wq: wq, bq: bq, wk: wk, bk: bk, wv: wv, bv: bv, wo: wo, bo: bo, p, range: range)
                    weights.hold(w.qkv)
                }
                return { args in
                    func optional(_ i: In) -> Tensor? { i.rawValue < args.count ? args[i.rawValue] : nil }
                    return [try Attention.run(try required(args, In.x.rawValue), w, mask: optional(.mask), bias: optional(.bias), p)]
                }
            case .feedForward:
                guard let b1 = constant(2), let b2 = constant(4), let w1 = try matrix(1), let w2 = try matrix(3) else { return nil }
                let activation = try Program.feedForwardActivation(node)
                let w = try FeedForward.QuantizedWeights(w1: w1, b1: b1, w2: w2, b2: b2, range: range)
                return { args in [try FeedForward.run(try required(args, 0), w, activation: activation)] }
            case .matMul:
                guard let w = try matrix(1) else { return nil }
                return { args in [try Linear.matMul(try required(args, 0), w, range: range)] }
            case .gemm:
                guard try node.int("transA", default: 0) == 0 else { return nil }
                let transB = try node.int("transB", default: 0) != 0
                let alpha = try node.float("alpha", default: 1), beta = try node.float("beta", default: 1)
                // Weights [K, N] as the int8 GEMM reads them; alpha folds into the column scales.
                guard let w = try weights.matrix(node, 1, transposed: transB, scale: alpha) else { return nil }
                return { args in [try Linear.gemm(try required(args, 0), w, args.count > 2 ? args[2] : nil, beta: beta, range: range)] }
            default:
                return nil
            }
        } catch let e as KernelError {
            throw RuntimeError.nodeFailed(node: node.name, op: node.op.rawValue, reason: "int8 weights: \(e.description)")
        }
    }
}
