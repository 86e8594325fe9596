import Glibc
import SPPCore

/// A numeric element type the kernels compute with. Conversions go through
/// Int64 for integers and Double for floats so casts stay exact where ONNX
/// expects them to be.
public protocol NumericElement: Numeric, Comparable {
    static var dtype: DType { get }
    static var isInteger: Bool { get }
    init(fromDouble: Double)
    init(fromInt64: Int64)
    var asDouble: Double { get }
    var asInt64: Int64 { get }
    static var lowest: Self { get }
    static var highest: Self { get }
}

/// Float and Double: the element types of transcendental functions.
public protocol FloatElement: NumericElement, BinaryFloatingPoint {
    static func fexp(_ x: Self) -> Self
    static func flog(_ x: Self) -> Self
    static func fsqrt(_ x: Self) -> Self
    static func ferf(_ x: Self) -> Self
    static func ftanh(_ x: Self) -> Self
    static func fpow(_ x: Self, _ y: Self) -> Self
    static func ffmod(_ x: Self, _ y: Self) -> Self
}

extension Float: FloatElement {
    public static var dtype: DType { .float32 }
    public static var isInteger: Bool { false }
    public init(fromDouble v: Double) { self = Float(v) }
    public init(fromInt64 v: Int64) { self = Float(v) }
    public var asDouble: Double { Double(self) }
    public var asInt64: Int64 { Int64(exactly: self.rounded(.towardZero)) ?? (self < 0 ? .min : .max) }
    public static var lowest: Float { -.infinity }
    public static var highest: Float { .infinity }
    public static func fexp(_ x: Float) -> Float { expf(x) }
    public static func flog(_ x: Float) -> Float { logf(x) }
    public static func fsqrt(_ x: Float) -> Float { sqrtf(x) }
    public static func ferf(_ x: Float) -> Float { erff(x) }
    public static func ftanh(_ x: Float) -> Float { tanhf(x) }
    public static func fpow(_ x: Float, _ y: Float) -> Float { powf(x, y) }
    public static func ffmod(_ x: Float, _ y: Float) -> Float { fmodf(x, y) }
}

extension Double: FloatElement {
    public static var dtype: DType { .float64 }
    public static var isInteger: Bool { false }
    public init(fromDouble v: Double) { self = v }
    public init(fromInt64 v: Int64) { self = Double(v) }
    public var asDouble: Double { self }
    public var asInt64: Int64 { Int64(exactly: self.rounded(.towardZero)) ?? (self < 0 ? .min : .max) }
    public static var lowest: Double { -.infinity }
    public static var highest: Double { .infinity }
    public static func fexp(_ x: Double) -> Double { Glibc.exp(x) }
    public static func flog(_ x: Double) -> Double { Glibc.log(x) }
    public static func fsqrt(_ x: Double) -> Double { Glibc.sqrt(x) }
    public static func ferf(_ x: Double) -> Double { Glibc.erf(x) }
    public static func ftanh(_ x: Double) -> Double { Glibc.tanh(x) }
    public static func fpow(_ x: Double, _ y: Double) -> Double { Glibc.pow(x, y) }
    public static func ffmod(_ x: Double, _ y: Double) -> Double { Glibc.fmod(x, y) }
}

/// Integer element types share one implementation of the conversions.
public protocol IntegerElement: NumericElement, FixedWidthInteger {}

extension IntegerElement {
    public static var isInteger: Bool { true }
    public init(fromDouble v: Double) {
        // ONNX casts from float to integer truncate toward zero; out-of-range is undefined, we saturate.
        if v.isNaN { self = 0 } else if v >= Double(Self.max) { self = Self.max } else if v <= Double(Self.min) { self = Self.min } else { self = Self(v.rounded(.towardZero)) }
    }
    public init(fromInt64 v: Int64) { self = Self(truncatingIfNeeded: v) }
    public var asDouble: Double { Double(self) }
    public var asInt64: Int64 { Int64(truncatingIfNeeded: self) }
    public static var lowest: Self { Self.min }
    public static var highest: Self { Self.max }
}

extension Int64: IntegerElement { public static var dtype: DType { .int64 } }
extension Int32: IntegerElement { public static var dtype: DType { .int32 } }
extension Int16: IntegerElement { public static var dtype: DType { .int16 } }
extension Int8: IntegerElement { public static var dtype: DType { .int8 } }
extension UInt8: IntegerElement { public static var dtype: DType { .uint8 } }
extension UInt16: IntegerElement { public static var dtype: DType { .uint16 } }
extension UInt32: IntegerElement { public static var dtype: DType { .uint32 } }
extension UInt64: IntegerElement {
    public static var dtype: DType { .uint64 }
    public var asInt64: Int64 { Int64(truncatingIfNeeded: self) }
}

/// Runs generic code for the Swift type behind a dtype (the visitor pattern
/// stands in for generic closures, which Swift does not have).
public protocol NumericVisitor {
    associatedtype Result
    func visit<T: NumericElement>(_ type: T.Type) throws -> Result
}

public protocol FloatVisitor {
    associatedtype Result
    func visit<T: FloatElement>(_ type: T.Type) throws -> Result
}

extension DType {
    /// Calls `visitor` with the element type of this dtype; throws for bool and half floats.
    public func visit<V: NumericVisitor>(_ visitor: V, op: String) throws -> V.Result {
        switch self {
        case .float32: return try visitor.visit(Float.self)
        case .float64: return try visitor.visit(Double.self)
        case .int64: return try visitor.visit(Int64.self)
        case .int32: return try visitor.visit(Int32.self)
        case .int16: return try visitor.visit(Int16.self)
        case .int8: return try visitor.visit(Int8.self)
        case .uint8: return try visitor.visit(UInt8.self)
        case .uint16: return try visitor.visit(UInt16.self)
        case .uint32: return try visitor.visit(UInt32.self)
        case .uint64: return try visitor.visit(UInt64.self)
        case .bool, .float16, .bfloat16: throw KernelError.unsupportedDType(self, reason: op)
        }
    }

    public func visitFloat<V: FloatVisitor>(_ visitor: V, op: String) throws -> V.Result {
        switch self {
        case .float32: return try visitor.visit(Float.self)
        case .float64: return try visitor.visit(Double.self)
        default: throw KernelError.unsupportedDType(self, reason: op)
        }
    }
}
