import CKernels
import Glibc
import SPPCore

/// Two-input arithmetic with broadcasting.
public enum ArithmeticOp: Sendable {
    case add, sub, mul, div, pow, max, min
    /// `fmod == false`: the result takes the divisor's sign (Python `%`); true: C `fmod`.
    case mod(fmod: Bool)
}

public enum ComparisonOp: Sendable { case equal, less, lessOrEqual, greater, greaterOrEqual }
public enum LogicOp: Sendable { case and, or, xor }

public enum UnaryOp: Sendable {
    case abs, neg, sqrt, reciprocal, exp, log, erf, tanh, sigmoid, relu, floor, ceil, sign
    case gelu(tanhApproximation: Bool)
}

public enum Elementwise {
    // MARK: Binary arithmetic

    public static func arithmetic(_ op: ArithmeticOp, _ a: Tensor, _ b: Tensor) throws -> Tensor {
        // x² (a decomposed layer norm's variance) without a pow call per element.
        if case .pow = op, a.dtype == .float32, b.count == 1, b.rank <= a.rank,
           try b.dtype.visit(ToDoubles(t: b), op: "Pow exponent") == [2] {
            let out = Tensor(dtype: .float32, shape: a.shape)
            spp_square(a.pointer(as: Float.self), out.pointer(as: Float.self), a.count)
            return out
        }
        if case .pow = op, a.dtype != b.dtype {
            return try power(a, b)
        }
        guard a.dtype == b.dtype else {
            throw KernelError.invalidArgument("inputs have different types \(a.dtype) and \(b.dtype)")
        }
        if a.dtype == .float32, let fast = try float32Fast(op, a, b) { return fast }
        return try a.dtype.visit(Arithmetic(op: op, a: a, b: b), op: "arithmetic")
    }

    /// Float32 add/sub/mul/div where one shape is a suffix-broadcast of the other:
    /// the common case in transformers (bias, residual, scale) gets a tight loop.
    private static func float32Fast(_ op: ArithmeticOp, _ a: Tensor, _ b: Tensor) throws -> Tensor? {
        let code: Int32
        switch op {
        case .add: code = 0
        case .sub: code = 1
        case .mul: code = 2
        case .div: code = 3
        default: return nil
        }
        let x = a.pointer(as: Float.self), y = b.pointer(as: Float.self)
        // One value per row of a ([..., n] with [..., 1]: a decomposed layer norm's centring and scaling).
        if a.rank >= 1, b.rank == a.rank, b.shape.last == 1, Array(b.shape.dropLast()) == Array(a.shape.dropLast()), let n = a.shape.last, n > 1 {
            let out = Tensor(dtype: .float32, shape: a.shape)
            let o = out.pointer(as: Float.self)
            for r in 0..<b.count { spp_binary_scalar(code, x + r * n, y[r], o + r * n, n) }
            return out
        }
        guard a.count >= b.count, a.shape.count >= b.shape.count,
              Array(a.shape.suffix(b.shape.count)) == b.shape, b.count > 0 else { return nil }
        let out = Tensor(dtype: .float32, shape: a.shape)
        let o = out.pointer(as: Float.self)
        let n = b.count
        if n == 1 {
            spp_binary_scalar(code, x, y[0], o, a.count)
        } else {
            // Bias, residual and scale: b repeats along the leading axes of a.
            for base in stride(from: 0, to: a.count, by: n) { spp_binary(code, x + base, y, o + base, n) }
        }
        return out
    }

    private struct Arithmetic: NumericVisitor {
        let op: ArithmeticOp, a: Tensor, b: Tensor
        func visit<T: NumericElement>(_: T.Type) throws -> Tensor {
            let f: (T, T) -> T
            switch op {
            case .add: f = { $0 + $1 }
            case .sub: f = { $0 - $1 }
            case .mul: f = { $0 * $1 }
            case .div: f = try divide(T.self)
            // x != x only for NaN: NaN propagates, as in NumPy's maximum/minimum.
            case .max: f = { x, y in x != x ? x : (y != y ? y : Swift.max(x, y)) }
            case .min: f = { x, y in x != x ? x : (y != y ? y : Swift.min(x, y)) }
            case .pow: f = { x, y in T(fromDouble: Glibc.pow(x.asDouble, y.asDouble)) }
            case let .mod(fmod): f = try modulo(T.self, fmod: fmod)
            }
            return try Elementwise.map2(a, b, outType: T.dtype, f)
        }

        private func divide<T: NumericElement>(_: T.Type) throws -> (T, T) -> T {
            if T.isInteger {
                return { x, y in
                    // Integer division truncates (C semantics); dividing by zero is an error we cannot
                    // raise from here, so it yields 0 rather than trapping.
                    y == 0 ? 0 : T(fromInt64: x.asInt64 / y.asInt64)
                }
            }
            return { x, y in T(fromDouble: x.asDouble / y.asDouble) }
        }

        private func modulo<T: NumericElement>(_: T.Type, fmod: Bool) throws -> (T, T) -> T {
            if T.isInteger {
                return { x, y in
                    if y == 0 { return 0 }
                    let (p, q) = (x.asInt64, y.asInt64)
                    var r = p % q
                    if !fmod && r != 0 && ((r < 0) != (q < 0)) { r += q }
                    return T(fromInt64: r)
                }
            }
            guard fmod else {
                return { x, y in
                    let (p, q) = (x.asDouble, y.asDouble)
                    var r = Glibc.fmod(p, q)
                    if r != 0 && ((r < 0) != (q < 0)) { r += q }
                    return T(fromDouble: r)
                }
            }
            return { x, y in T(fromDouble: Glibc.fmod(x.asDouble, y.asDouble)) }
        }
    }

    /// Pow with base and exponent of different types: the result has the base's type.
    private static func power(_ a: Tensor, _ b: Tensor) throws -> Tensor {
        let exps = try b.dtype.visit(ToDoubles(t: b), op: "Pow exponent")
        let expTensor = Tensor(dtype: .float64, shape: b.shape)
        _ = expTensor.buffer(as: Double.self).initialize(from: exps)
        return try a.dtype.visit(PowMixed(a: a, e: expTensor), op: "Pow")
    }

    private struct PowMixed: NumericVisitor {
        let a: Tensor, e: Tensor
        func visit<T: NumericElement>(_: T.Type) throws -> Tensor {
            let bc = try Broadcast([a.shape, e.shape])
            let out = Tensor(dtype: T.dtype, shape: bc.outShape)
            let x = a.pointer(as: T.self), y = e.pointer(as: Double.self), o = out.pointer(as: T.self)
            bc.forEachRun { start, offs, n, steps in
                for i in 0..<n { o[start + i] = T(fromDouble: Glibc.pow(x[offs[0] + i * steps[0]].asDouble, y[offs[1] + i * steps[1]])) }
            }
            return out
        }
    }

    struct ToDoubles: NumericVisitor {
        let t: Tensor
        func visit<T: NumericElement>(_: T.Type) throws -> [Double] { t.buffer(as: T.self).map(\.asDouble) }
    }

    /// Applies `f` elementwise over broadcast inputs of element type `T`, producing `R`.
    public static func map2<T, R>(_ a: Tensor, _ b: Tensor, outType: DType, _ f: (T, T) -> R) throws -> Tensor {
        let bc = try Broadcast([a.shape, b.shape])
        let out = Tensor(dtype: outType, shape: bc.outShape)
        let x = a.pointer(as: T.self), y = b.pointer(as: T.self), o = out.pointer(as: R.self)
        bc.forEachRun { start, offs, n, steps in
            let (ax, bx, sa, sb) = (offs[0], offs[1], steps[0], steps[1])
            for i in 0..<n { o[start + i] = f(x[ax + i * sa], y[bx + i * sb]) }
        }
        return out
    }

    // MARK: Comparison and logic

    public static func compare(_ op: ComparisonOp, _ a: Tensor, _ b: Tensor) throws -> Tensor {
        guard a.dtype == b.dtype else {
            throw KernelError.invalidArgument("inputs have different types \(a.dtype) and \(b.dtype)")
        }
        if a.dtype == .bool {
            guard case .equal = op else { throw KernelError.unsupportedDType(.bool, reason: "ordering comparison") }
            return try map2(a, b, outType: .bool) { (x: Bool, y: Bool) in x == y }
        }
        return try a.dtype.visit(Compare(op: op, a: a, b: b), op: "comparison")
    }

    private struct Compare: NumericVisitor {
        let op: ComparisonOp, a: Tensor, b: Tensor
        func visit<T: NumericElement>(_: T.Type) throws -> Tensor {
            switch op {
            case .equal: return try map2(a, b, outType: .bool) { (x: T, y: T) in x == y }
            case .less: return try map2(a, b, outType: .bool) { (x: T, y: T) in x < y }
            case .lessOrEqual: return try map2(a, b, outType: .bool) { (x: T, y: T) in x <= y }
            case .greater: return try map2(a, b, outType: .bool) { (x: T, y: T) in x > y }
            case .greaterOrEqual: return try map2(a, b, outType: .bool) { (x: T, y: T) in x >= y }
            }
        }
    }

    public static func logic(_ op: LogicOp, _ a: Tensor, _ b: Tensor) throws -> Tensor {
        guard a.dtype == .bool, b.dtype == .bool else {
            throw KernelError.unsupportedDType(a.dtype == .bool ? b.dtype : a.dtype, reason: "logical ops take bool")
        }
        switch op {
        case .and: return try map2(a, b, outType: .bool) { (x: Bool, y: Bool) in x && y }
        case .or: return try map2(a, b, outType: .bool) { (x: Bool, y: Bool) in x || y }
        case .xor: return try map2(a, b, outType: .bool) { (x: Bool, y: Bool) in x != y }
        }
    }

    public static func not(_ a: Tensor) throws -> Tensor {
        guard a.dtype == .bool else { throw KernelError.unsupportedDType(a.dtype, reason: "Not takes bool") }
        let out = Tensor(dtype: .bool, shape: a.shape)
        let x = a.pointer(as: Bool.self), o = out.pointer(as: Bool.self)
        for i in 0..<a.count { o[i] = !x[i] }
        return out
    }

    /// `condition ? x : y` with broadcasting over all three; works on any dtype by bytes.
    public static func select(_ condition: Tensor, _ x: Tensor, _ y: Tensor) throws -> Tensor {
        guard condition.dtype == .bool else { throw KernelError.unsupportedDType(condition.dtype, reason: "Where condition must be bool") }
        guard x.dtype == y.dtype else { throw KernelError.invalidArgument("Where branches have types \(x.dtype) and \(y.dtype)") }
        let bc = try Broadcast([condition.shape, x.shape, y.shape])
        let out = Tensor(dtype: x.dtype, shape: bc.outShape)
        let size = x.dtype.size
        let c = condition.pointer(as: Bool.self)
        let (px, py, po) = (x.rawPointer, y.rawPointer, out.rawPointer)
        bc.forEachRun { start, offs, n, steps in
            for i in 0..<n {
                let src = c[offs[0] + i * steps[0]] ? px + (offs[1] + i * steps[1]) * size : py + (offs[2] + i * steps[2]) * size
                (po + (start + i) * size).copyMemory(from: src, byteCount: size)
            }
        }
        return out
    }

    // MARK: One input

    public static func unary(_ op: UnaryOp, _ a: Tensor) throws -> Tensor {
        if a.dtype.isFloatingPoint {
            return try a.dtype.visitFloat(UnaryFloat(op: op, a: a), op: "unary math")
        }
        return try a.dtype.visit(UnaryInteger(op: op, a: a), op: "unary math")
    }

    private struct UnaryFloat: FloatVisitor {
        let op: UnaryOp, a: Tensor
        func visit<T: FloatElement>(_: T.Type) throws -> Tensor {
            let f: (T) -> T
            switch op {
            case .abs: f = { Swift.abs($0) }
            case .neg: f = { -$0 }
            case .sqrt: f = { T.fsqrt($0) }
            case .reciprocal: f = { 1 / $0 }
            case .exp: f = { T.fexp($0) }
            case .log: f = { T.flog($0) }
            case .erf: f = { T.ferf($0) }
            case .tanh: f = { T.ftanh($0) }
            case .sigmoid: f = { x in x >= 0 ? 1 / (1 + T.fexp(-x)) : T.fexp(x) / (1 + T.fexp(x)) }
            case .relu: f = { $0 > 0 ? $0 : 0 }
            case .floor: f = { $0.rounded(.down) }
            case .ceil: f = { $0.rounded(.up) }
            case .sign: f = { $0 > 0 ? 1 : ($0 < 0 ? -1 : 0) }
            case let .gelu(approx):
                if approx {
                    let c = T(0.7978845608028654) // sqrt(2/pi)
                    f = { x in 0.5 * x * (1 + T.ftanh(c * (x + 0.044715 * x * x * x))) }
                } else {
                    let r = T(0.7071067811865476) // 1/sqrt(2)
                    f = { x in 0.5 * x * (1 + T.ferf(x * r)) }
                }
            }
            let out = Tensor(dtype: a.dtype, shape: a.shape)
            let x = a.pointer(as: T.self), o = out.pointer(as: T.self)
            for i in 0..<a.count { o[i] = f(x[i]) }
            return out
        }
    }

    private struct UnaryInteger: NumericVisitor {
        let op: UnaryOp, a: Tensor
        func visit<T: NumericElement>(_: T.Type) throws -> Tensor {
            let f: (T) -> T
            switch op {
            case .abs: f = { $0 < 0 ? 0 - $0 : $0 }
            case .neg: f = { 0 - $0 }
            case .relu: f = { $0 > 0 ? $0 : 0 }
            case .sign: f = { $0 > 0 ? 1 : ($0 < 0 ? 0 - 1 : 0) }
            case .floor, .ceil: f = { $0 }
            default: throw KernelError.unsupportedDType(a.dtype, reason: "\(op) needs a floating-point input")
            }
            let out = Tensor(dtype: a.dtype, shape: a.shape)
            let x = a.pointer(as: T.self), o = out.pointer(as: T.self)
            for i in 0..<a.count { o[i] = f(x[i]) }
            return out
        }
    }

    public static func isNaN(_ a: Tensor) throws -> Tensor {
        let out = Tensor(dtype: .bool, shape: a.shape)
        let o = out.pointer(as: Bool.self)
        switch a.dtype {
        case .float32: let x = a.pointer(as: Float.self); for i in 0..<a.count { o[i] = x[i].isNaN }
        case .float64: let x = a.pointer(as: Double.self); for i in 0..<a.count { o[i] = x[i].isNaN }
        case .float16: let x = a.pointer(as: Float16.self); for i in 0..<a.count { o[i] = x[i].isNaN }
        default: throw KernelError.unsupportedDType(a.dtype, reason: "IsNaN takes a floating-point input")
        }
        return out
    }

    /// Clamps to [min, max]; absent bounds mean no bound.
    public static func clip(_ a: Tensor, min lo: Tensor?, max hi: Tensor?) throws -> Tensor {
        try a.dtype.visit(Clip(a: a, lo: lo, hi: hi), op: "Clip")
    }

    private struct Clip: NumericVisitor {
        let a: Tensor, lo: Tensor?, hi: Tensor?
        func visit<T: NumericElement>(_: T.Type) throws -> Tensor {
            for bound in [lo, hi] {
                if let b = bound, b.dtype != a.dtype || b.count != 1 {
                    throw KernelError.invalidArgument("Clip bounds must be scalars of the input's type \(a.dtype)")
                }
            }
            let low = lo.map { $0.pointer(as: T.self)[0] } ?? T.lowest
            let high = hi.map { $0.pointer(as: T.self)[0] } ?? T.highest
            let out = Tensor(dtype: a.dtype, shape: a.shape)
            let x = a.pointer(as: T.self), o = out.pointer(as: T.self)
            for i in 0..<a.count {
                let v = x[i]
                // min after max: when low > high every element becomes high, as ONNX specifies.
                o[i] = v != v ? v : Swift.min(Swift.max(v, low), high)
            }
            return out
        }
    }
}
