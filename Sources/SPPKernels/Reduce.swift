import CKernels
import SPPCore

public enum ReduceOp: Sendable { case sum, mean, max, min, prod }

public enum Reduction {
    /// Reduces over `axes` (already normalised, may be empty = all axes unless `noopWithEmptyAxes`).
    public static func reduce(_ op: ReduceOp, _ x: Tensor, axes: [Int], keepDims: Bool, noopWithEmptyAxes: Bool) throws -> Tensor {
        if axes.isEmpty && noopWithEmptyAxes { return x }
        let reduced = Set(axes.isEmpty ? Array(0..<x.rank) : axes)
        var keptShape: [Int] = [], outShape: [Int] = []
        for (i, d) in x.shape.enumerated() {
            if reduced.contains(i) { if keepDims { keptShape.append(1) } ; continue }
            keptShape.append(d)
            outShape.append(d)
        }
        let fullShape = x.shape.enumerated().map { reduced.contains($0.offset) ? 1 : $0.element }
        // Sums and means of float32 over trailing axes (a decomposed layer norm's ReduceMean): rows of a vectorised loop.
        if x.dtype == .float32, op == .sum || op == .mean, let first = reduced.min(), reduced.count == x.rank - first, first > 0 {
            let out = Tensor(dtype: .float32, shape: keepDims ? keptShape : outShape)
            let n = x.shape[first...].reduce(1, *)
            spp_row_sums(x.pointer(as: Float.self), out.pointer(as: Float.self), out.count, n)
            if op == .mean, n > 0 {
                let po = out.pointer(as: Float.self), inv = 1 / Float(n)
                for r in 0..<out.count { po[r] *= inv }
            }
            return out
        }
        return try x.dtype.visit(Reduce(op: op, x: x, outShape: keepDims ? keptShape : outShape, reducedShape: fullShape), op: "Reduce")
    }

    private struct Reduce: NumericVisitor {
        let op: ReduceOp, x: Tensor, outShape: [Int], reducedShape: [Int]
        func visit<T: NumericElement>(_: T.Type) throws -> Tensor {
            let out = Tensor(dtype: x.dtype, shape: outShape)
            let outCount = out.count
            // Accumulate in Double for floats and Int64 for integers.
            var acc = [Double](repeating: 0, count: outCount)
            var iacc = [Int64](repeating: 0, count: outCount)
            var best = [T](repeating: op == .max ? T.lowest : T.highest, count: outCount)
            switch op {
            case .prod: for i in 0..<outCount { acc[i] = 1; iacc[i] = 1 }
            default: break
            }
            // Map every input element to its output element with broadcast strides.
            let bc = try Broadcast([x.shape, reducedShape])
            let px = x.pointer(as: T.self)
            bc.forEachRun { start, offs, n, steps in
                let (xo, xs) = (offs[0], steps[0]), (oo, os) = (offs[1], steps[1])
                for i in 0..<n {
                    let v = px[xo + i * xs], o = oo + i * os
                    switch op {
                    case .sum, .mean: if T.isInteger { iacc[o] &+= v.asInt64 } else { acc[o] += v.asDouble }
                    case .prod: if T.isInteger { iacc[o] &*= v.asInt64 } else { acc[o] *= v.asDouble }
                    case .max: if v > best[o] || v != v { best[o] = v }
                    case .min: if v < best[o] || v != v { best[o] = v }
                    }
                }
                _ = start
            }
            let po = out.pointer(as: T.self)
            let reducedCount = x.count / Swift.max(outCount, 1)
            for o in 0..<outCount {
                switch op {
                case .sum, .prod: po[o] = T.isInteger ? T(fromInt64: iacc[o]) : T(fromDouble: acc[o])
                case .mean: po[o] = T.isInteger ? T(fromInt64: iacc[o] / Int64(Swift.max(reducedCount, 1))) : T(fromDouble: acc[o] / Double(reducedCount))
                case .max, .min: po[o] = best[o]
                }
            }
            return out
        }
    }

    /// Cumulative sum along `axis`.
    public static func cumSum(_ x: Tensor, axis: Int, exclusive: Bool, reverse: Bool) throws -> Tensor {
        try x.dtype.visit(CumSum(x: x, axis: axis, exclusive: exclusive, reverse: reverse), op: "CumSum")
    }

    private struct CumSum: NumericVisitor {
        let x: Tensor, axis: Int, exclusive: Bool, reverse: Bool
        func visit<T: NumericElement>(_: T.Type) throws -> Tensor {
            let a = try Normalization.normalizeAxis(axis, rank: x.rank)
            let (outer, n, inner) = Normalization.split(x.shape, axis: a, coerce2D: false)
            let out = Tensor(dtype: x.dtype, shape: x.shape)
            let px = x.pointer(as: T.self), po = out.pointer(as: T.self)
            for o in 0..<outer {
                for i in 0..<inner {
                    var s: T = 0
                    for step in 0..<n {
                        let j = reverse ? n - 1 - step : step
                        let idx = (o * n + j) * inner + i
                        if exclusive { po[idx] = s; s += px[idx] } else { s += px[idx]; po[idx] = s }
                    }
                }
            }
            return out
        }
    }
}
