import SPPCore
import SPPKernels

/// Shape arithmetic shared by the shape ops.
enum Shapes {
    /// ONNX Reshape: 0 copies the input dimension (unless `allowZero`), -1 is inferred.
    static func reshape(_ shape: [Int], to target: [Int], allowZero: Bool) throws -> [Int] {
        var out = target
        var inferred: Int? = nil
        for (i, d) in target.enumerated() {
            if d == 0 && !allowZero {
                guard i < shape.count else { throw KernelError.shapeMismatch("Reshape copies dimension \(i) of \(Tensor.describe(shape)), which has none") }
                out[i] = shape[i]
            } else if d == -1 {
                guard inferred == nil else { throw KernelError.invalidArgument("Reshape shape \(target) has more than one -1") }
                inferred = i
            } else if d < -1 {
                throw KernelError.invalidArgument("Reshape shape \(target) has a negative dimension")
            }
        }
        let total = shape.reduce(1, *)
        if let i = inferred {
            let known = out.enumerated().filter { $0.offset != i }.reduce(1) { $0 * $1.element }
            guard known > 0, total % known == 0 else {
                throw KernelError.shapeMismatch("cannot reshape \(Tensor.describe(shape)) to \(target)")
            }
            out[i] = total / known
        }
        guard out.reduce(1, *) == total else {
            throw KernelError.shapeMismatch("cannot reshape \(Tensor.describe(shape)) (\(total) elements) to \(Tensor.describe(out))")
        }
        return out
    }

    /// ONNX Range: start, start + delta, … while short of limit.
    static func range(_ start: Tensor, _ limit: Tensor, _ delta: Tensor) throws -> Tensor {
        guard start.dtype == limit.dtype, start.dtype == delta.dtype, start.count == 1, limit.count == 1, delta.count == 1 else {
            throw KernelError.invalidArgument("Range takes three scalars of one type")
        }
        return try start.dtype.visit(RangeVisitor(start: start, limit: limit, delta: delta), op: "Range")
    }

    private struct RangeVisitor: NumericVisitor {
        let start: Tensor, limit: Tensor, delta: Tensor
        func visit<T: NumericElement>(_: T.Type) throws -> Tensor {
            let s = start.pointer(as: T.self)[0], l = limit.pointer(as: T.self)[0], d = delta.pointer(as: T.self)[0]
            guard d != 0 else { throw KernelError.invalidArgument("Range delta is 0") }
            let n = Swift.max(0, Int((l.asDouble - s.asDouble) / d.asDouble).advanced(by: 0))
            let exact = (l.asDouble - s.asDouble) / d.asDouble
            let count = Swift.max(0, Int(exact.rounded(.up)))
            _ = n
            let out = Tensor(dtype: T.dtype, shape: [count])
            let p = out.pointer(as: T.self)
            // Accumulate like the reference (start + i·delta) to avoid drift.
            for i in 0..<count { p[i] = T.isInteger ? T(fromInt64: s.asInt64 + Int64(i) * d.asInt64) : T(fromDouble: s.asDouble + Double(i) * d.asDouble) }
            return out
        }
    }
}
