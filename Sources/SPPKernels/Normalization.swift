import CKernels
import Glibc
import SPPCore

public enum Normalization {
    /// Splits `shape` around `axis` into (outer, axis length, inner). With `coerce2D`
    /// (Softmax before opset 13) everything from `axis` on counts as the axis.
    static func split(_ shape: [Int], axis: Int, coerce2D: Bool) -> (Int, Int, Int) {
        let outer = shape[..<axis].reduce(1, *)
        if coerce2D { return (outer, shape[axis...].reduce(1, *), 1) }
        return (outer, shape[axis], shape[(axis + 1)...].reduce(1, *))
    }

    public static func normalizeAxis(_ axis: Int, rank: Int) throws -> Int {
        let a = axis < 0 ? axis + rank : axis
        guard a >= 0, a < max(rank, 1) else { throw KernelError.invalidArgument("axis \(axis) is out of range for rank \(rank)") }
        return a
    }

    /// Softmax (or log-softmax) along one axis, numerically stable (max subtracted).
    public static func softmax(_ x: Tensor, axis: Int, coerce2D: Bool = false, log: Bool = false) throws -> Tensor {
        try x.dtype.visitFloat(Softmax(x: x, axis: axis, coerce2D: coerce2D, log: log), op: log ? "LogSoftmax" : "Softmax")
    }

    private struct Softmax: FloatVisitor {
        let x: Tensor, axis: Int, coerce2D: Bool, log: Bool
        func visit<T: FloatElement>(_: T.Type) throws -> Tensor {
            let out = Tensor(dtype: x.dtype, shape: x.shape)
            if x.count == 0 { return out }
            let a = try normalizeAxis(axis, rank: x.rank)
            let (outer, n, inner) = split(x.shape, axis: a, coerce2D: coerce2D)
            let px = x.pointer(as: T.self), po = out.pointer(as: T.self)
            for o in 0..<outer {
                for i in 0..<inner {
                    let base = o * n * inner + i
                    var m = -T.infinity
                    for j in 0..<n { m = Swift.max(m, px[base + j * inner]) }
                    var sum: T = 0
                    for j in 0..<n {
                        let e = T.fexp(px[base + j * inner] - m)
                        po[base + j * inner] = e
                        sum += e
                    }
                    if log {
                        let ls = T.flog(sum)
                        for j in 0..<n { po[base + j * inner] = px[base + j * inner] - m - ls }
                    } else {
                        let inv = 1 / sum
                        for j in 0..<n { po[base + j * inner] *= inv }
                    }
                }
            }
            return out
        }
    }

    /// ONNX LayerNormalization over the dimensions from `axis` on. Returns Y,
    /// the mean and the inverse standard deviation (the last two with the
    /// normalised dimensions kept as 1).
    public static func layerNorm(_ x: Tensor, scale: Tensor, bias: Tensor?, axis: Int, epsilon: Float) throws -> (Tensor, Tensor, Tensor) {
        guard x.dtype == .float32, scale.dtype == .float32, bias?.dtype ?? .float32 == .float32 else {
            throw KernelError.unsupportedDType(x.dtype == .float32 ? scale.dtype : x.dtype, reason: "LayerNormalization runs in float32")
        }
        let a = try normalizeAxis(axis, rank: x.rank)
        let rows = x.shape[..<a].reduce(1, *)
        let n = x.shape[a...].reduce(1, *)
        let statShape = Array(x.shape[..<a]) + [Int](repeating: 1, count: x.rank - a)
        for (name, t) in [("scale", scale), ("bias", bias)] {
            if let t, t.count != n && t.count != 1 {
                throw KernelError.shapeMismatch("LayerNormalization \(name) \(Tensor.describe(t.shape)) does not match normalised shape \(Tensor.describe(Array(x.shape[a...])))")
            }
        }
        let out = Tensor(dtype: .float32, shape: x.shape)
        let mean = Tensor(dtype: .float32, shape: statShape)
        let invStd = Tensor(dtype: .float32, shape: statShape)
        let px = x.pointer(as: Float.self), po = out.pointer(as: Float.self)
        let ps = scale.pointer(as: Float.self), pb = bias?.pointer(as: Float.self)
        let scaleStep = scale.count == 1 ? 0 : 1, biasStep = bias?.count == 1 ? 0 : 1
        let pm = mean.pointer(as: Float.self), pi = invStd.pointer(as: Float.self)
        if scaleStep == 1 && (bias == nil || biasStep == 1) {
            for r in 0..<rows { spp_layer_norm_row(px + r * n, po + r * n, n, ps, pb, epsilon, pm + r, pi + r) }
            return (out, mean, invStd)
        }
        for r in 0..<rows {
            let row = px + r * n, dst = po + r * n
            var s = 0.0
            for j in 0..<n { s += Double(row[j]) }
            let mu = s / Double(n)
            var v = 0.0
            for j in 0..<n { let d = Double(row[j]) - mu; v += d * d }
            let inv = 1 / (v / Double(n) + Double(epsilon)).squareRoot()
            let (m, iv) = (Float(mu), Float(inv))
            pm[r] = m
            pi[r] = iv
            for j in 0..<n {
                var y = (row[j] - m) * iv * ps[j * scaleStep]
                if let pb { y += pb[j * biasStep] }
                dst[j] = y
            }
        }
        return (out, mean, invStd)
    }
}
