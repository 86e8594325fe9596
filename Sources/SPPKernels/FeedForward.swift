import CKernels
import Glibc
import SPPCore

/// The position-wise feed-forward block `act(x W1 + b1) W2 + b2`: the kernel
/// of `spp.FeedForward` (contract on `OpType.feedForward`). Two GEMMs onto
/// bias rows with the activation applied in place between them.
public enum FeedForward {
    public enum Activation: Sendable, Equatable {
        /// x · Φ(x) with erf.
        case gelu
        /// The tanh approximation of GELU.
        case geluTanh
        case relu
    }

    /// Sizes checked once for both the fast kernel and the reference: (rows, D, F).
    static func geometry(_ x: Tensor, _ w1: Tensor, _ b1: Tensor, _ w2: Tensor, _ b2: Tensor) throws -> (Int, Int, Int) {
        if let t = [x, w1, b1, w2, b2].first(where: { $0.dtype != .float32 }) {
            throw KernelError.unsupportedDType(t.dtype, reason: "spp.FeedForward runs in float32")
        }
        guard x.rank >= 1, w1.rank == 2 else {
            throw KernelError.shapeMismatch("spp.FeedForward needs x [..., D] and W1 [D, F], got \(Tensor.describe(x.shape)) and \(Tensor.describe(w1.shape))")
        }
        let d = x.shape[x.rank - 1], f = w1.shape[1]
        guard w1.shape[0] == d, w2.shape == [f, d], b1.count == f, b2.count == d else {
            throw KernelError.shapeMismatch("spp.FeedForward weights W1 \(Tensor.describe(w1.shape)), b1 \(Tensor.describe(b1.shape)), W2 \(Tensor.describe(w2.shape)), b2 \(Tensor.describe(b2.shape)) do not fit x \(Tensor.describe(x.shape))")
        }
        return (d == 0 ? 0 : x.count / d, d, f)
    }

    /// Runs the block on `x [..., D]`. A caller that runs the same weights more
    /// than once prepares them itself, once (`PreparedWeights`).
    public static func run(_ x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, activation: Activation) throws -> Tensor {
        try run(x, PreparedWeights(w1: w1, b1: b1, w2: w2, b2: b2, activation: activation))
    }

    /// W1 with b1 and the activation, and W2 with b2, as `Projection`s made once at load.
    public struct PreparedWeights: Sendable {
        public let w1: Projection, w2: Projection

        public init(w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, activation: Activation) throws {
            let d = w1.rank == 2 ? w1.shape[0] : 0
            _ = try geometry(Tensor(dtype: .float32, shape: [0, d]), w1, b1, w2, b2)
            self.w1 = try Projection(weights: w1, bias: b1, activation: activation)
            self.w2 = try Projection(weights: w2, bias: b2)
        }
    }

    /// Rows of a float32 input `x [..., D]` for weights with `d` rows.
    static func rows(of x: Tensor, inner d: Int) throws -> Int {
        guard x.dtype == .float32 else { throw KernelError.unsupportedDType(x.dtype, reason: "spp.FeedForward runs in float32") }
        guard x.rank >= 1, x.shape[x.rank - 1] == d else {
            throw KernelError.shapeMismatch("spp.FeedForward input \(Tensor.describe(x.shape)) does not end in the \(d) rows of its W1")
        }
        return d == 0 ? 0 : x.count / d
    }

    /// Runs the block on `x [..., D]` with prepared weights: two products, the
    /// first into a `[rows, F]` buffer.
    public static func run(_ x: Tensor, _ w: PreparedWeights) throws -> Tensor {
        let (d, f) = (w.w1.rows, w.w1.columns)
        let rows = try rows(of: x, inner: d)
        let out = Tensor(dtype: .float32, shape: x.shape)
        withScratch(Float.self, count: rows * f) { hidden in
            w.w1.apply(x.pointer(as: Float.self), rows: rows, into: hidden)
            w.w2.apply(hidden, rows: rows, into: out.pointer(as: Float.self))
        }
        return out
    }

    /// W1 and W2 in int8 (`QuantizedMatrix`), made once at load; activations are quantized to `range`.
    public struct QuantizedWeights: @unchecked Sendable {
        public let w1: QuantizedMatrix, b1: Tensor
        public let w2: QuantizedMatrix, b2: Tensor
        public let range: ActivationRange

        public init(w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, range: ActivationRange = .native) throws {
            let d = w1.rank == 2 ? w1.shape[0] : 0
            _ = try geometry(Tensor(dtype: .float32, shape: [0, d]), w1, b1, w2, b2)
            try self.init(w1: QuantizedMatrix(quantizing: w1), b1: b1, w2: QuantizedMatrix(quantizing: w2), b2: b2, range: range)
        }

        /// From W1 and W2 already in int8 (a file that stores them so).
        public init(w1: QuantizedMatrix, b1: Tensor, w2: QuantizedMatrix, b2: Tensor, range: ActivationRange = .native) throws {
            let (d, f) = (w1.rows, w1.columns)
            guard w2.rows == f, w2.columns == d, b1.dtype == .float32, b1.count == f, b2.dtype == .float32, b2.count == d else {
                throw KernelError.shapeMismatch("spp.FeedForward int8 W1 [\(d), \(f)], b1 \(Tensor.describe(b1.shape)), int8 W2 [\(w2.rows), \(w2.columns)], b2 \(Tensor.describe(b2.shape)) do not fit together")
            }
            (self.w1, self.w2, self.b1, self.b2, self.range) = (w1, w2, b1, b2, range)
        }
    }

    /// The block with int8 weights: both GEMMs through `Linear.int8Gemm` (the
    /// biases added as the products are turned back into float32), the
    /// activation in float32 on each piece of the first as it is finished.
    public static func run(_ x: Tensor, _ w: QuantizedWeights, activation: Activation) throws -> Tensor {
        let (d, f) = (w.w1.rows, w.w1.columns)
        let rows = try rows(of: x, inner: d)
        let out = Tensor(dtype: .float32, shape: x.shape)
        let po = out.pointer(as: Float.self), b2 = w.b2.pointer(as: Float.self)
        if rows == 0 || f == 0 {
            Linear.fillRows(po, rows: rows, ld: d, with: b2, count: d)
            return out
        }
        try withScratch(Float.self, count: rows * f) { hidden in
            try Linear.int8Gemm(m: rows, a: x.pointer(as: Float.self), lda: d, w: w.w1, bias: w.b1.pointer(as: Float.self),
                                c: hidden, ldc: f, range: w.range) { apply(activation, $0, count: $1) }
            try Linear.int8Gemm(m: rows, a: hidden, lda: f, w: w.w2, bias: b2, c: po, ldc: d, range: w.range)
        }
        return out
    }

    /// The activation in place, in float32 like the graph it replaces.
    static func apply(_ activation: Activation, _ p: UnsafeMutablePointer<Float>, count: Int) {
        switch activation {
        case .gelu:
            spp_gelu_erf(p, count)
        case .geluTanh:
            spp_gelu_tanh(p, count)
        case .relu:
            for i in 0..<count { p[i] = Swift.max(p[i], 0) }
        }
    }

    /// The reference: loops in Double, straight from the definition.
    public static func naive(_ x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, activation: Activation) throws -> Tensor {
        let (rows, d, f) = try geometry(x, w1, b1, w2, b2)
        let xs = x.buffer(as: Float.self), a = w1.buffer(as: Float.self), c = w2.buffer(as: Float.self)
        let ba = b1.buffer(as: Float.self), bc = b2.buffer(as: Float.self)
        let out = Tensor(dtype: .float32, shape: x.shape)
        let po = out.buffer(as: Float.self)
        var h = [Double](repeating: 0, count: f)
        for r in 0..<rows {
            for j in 0..<f {
                var s = Double(ba[j])
                for k in 0..<d { s += Double(xs[r * d + k]) * Double(a[k * f + j]) }
                switch activation {
                case .gelu: h[j] = 0.5 * s * (1 + Glibc.erf(s / 2.0.squareRoot()))
                case .geluTanh: h[j] = 0.5 * s * (1 + Glibc.tanh((2 / Double.pi).squareRoot() * (s + 0.044715 * s * s * s)))
                case .relu: h[j] = Swift.max(s, 0)
                }
            }
            for k in 0..<d {
                var s = Double(bc[k])
                for j in 0..<f { s += h[j] * Double(c[j * d + k]) }
                po[r * d + k] = Float(s)
            }
        }
        return out
    }
}
