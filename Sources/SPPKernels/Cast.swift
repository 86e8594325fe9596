import SPPCore

public enum Cast {
    /// Converts `a` to `to`. Integers go through Int64 (exact), floats through
    /// Double; float → integer truncates toward zero; anything → bool is `!= 0`.
    public static func cast(_ a: Tensor, to: DType) throws -> Tensor {
        if a.dtype == to { return a }
        let out = Tensor(dtype: to, shape: a.shape)
        let n = a.count
        // Read every source element as either Int64 or Double.
        var ints: [Int64]? = nil
        var doubles: [Double]? = nil
        switch a.dtype {
        case .bool: ints = a.buffer(as: Bool.self).map { $0 ? 1 : 0 }
        case .float16: doubles = a.buffer(as: Float16.self).map { Double($0) }
        case .bfloat16: doubles = a.buffer(as: UInt16.self).map { Double(Float(bitPattern: UInt32($0) << 16)) }
        case .uint64: ints = nil; doubles = nil
        default:
            if a.dtype.isFloatingPoint { doubles = try a.dtype.visit(Elementwise.ToDoubles(t: a), op: "Cast") }
            else { ints = try a.dtype.visit(ToInt64s(t: a), op: "Cast") }
        }
        if a.dtype == .uint64 {
            // uint64 above Int64.max does not fit Int64: convert it on its own.
            let src = a.buffer(as: UInt64.self)
            if to.isFloatingPoint { doubles = src.map { Double($0) } } else { ints = src.map { Int64(truncatingIfNeeded: $0) } }
        }
        switch to {
        case .bool:
            let o = out.pointer(as: Bool.self)
            if let ints { for i in 0..<n { o[i] = ints[i] != 0 } } else if let doubles { for i in 0..<n { o[i] = doubles[i] != 0 } }
        case .float16:
            let o = out.pointer(as: Float16.self)
            // Float16(Double) rounds once, to nearest even, as ONNX does.
            if let ints { for i in 0..<n { o[i] = Float16(Double(ints[i])) } } else if let doubles { for i in 0..<n { o[i] = Float16(doubles[i]) } }
        case .bfloat16:
            throw KernelError.unsupportedDType(to, reason: "cast to bfloat16")
        default:
            try to.visit(Store(out: out, ints: ints, doubles: doubles, sourceIsUnsigned64: a.dtype == .uint64), op: "Cast")
        }
        return out
    }

    private struct ToInt64s: NumericVisitor {
        let t: Tensor
        func visit<T: NumericElement>(_: T.Type) throws -> [Int64] { t.buffer(as: T.self).map(\.asInt64) }
    }

    private struct Store: NumericVisitor {
        let out: Tensor, ints: [Int64]?, doubles: [Double]?, sourceIsUnsigned64: Bool
        func visit<T: NumericElement>(_: T.Type) throws -> Void {
            let o = out.pointer(as: T.self)
            if let ints {
                for i in 0..<ints.count { o[i] = T.isInteger ? T(fromInt64: ints[i]) : T(fromDouble: Double(ints[i])) }
            } else if let doubles {
                for i in 0..<doubles.count { o[i] = T(fromDouble: doubles[i]) }
            }
        }
    }
}
