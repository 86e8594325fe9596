/// Element type of a tensor. Raw values are ONNX `TensorProto.DataType` codes,
/// so the importer and the native format share one numbering.
public enum DType: Int32, CaseIterable, Sendable, CustomStringConvertible {
    case float32 = 1
    case uint8 = 2
    case int8 = 3
    case uint16 = 4
    case int16 = 5
    case int32 = 6
    case int64 = 7
    case bool = 9
    case float16 = 10
    case float64 = 11
    case uint32 = 12
    case uint64 = 13
    case bfloat16 = 16

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .bool, .uint8, .int8: return 1
        case .float16, .bfloat16, .int16, .uint16: return 2
        case .float32, .int32, .uint32: return 4
        case .float64, .int64, .uint64: return 8
        }
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .float32, .float64, .float16, .bfloat16: return true
        case .uint8, .int8, .uint16, .int16, .int32, .int64, .bool, .uint32, .uint64: return false
        }
    }

    public var description: String {
        switch self {
        case .float32: return "float32"
        case .uint8: return "uint8"
        case .int8: return "int8"
        case .uint16: return "uint16"
        case .int16: return "int16"
        case .int32: return "int32"
        case .int64: return "int64"
        case .bool: return "bool"
        case .float16: return "float16"
        case .float64: return "float64"
        case .uint32: return "uint32"
        case .uint64: return "uint64"
        case .bfloat16: return "bfloat16"
        }
    }

    /// Name of an ONNX data type code, also for codes this project does not support.
    public static func onnxName(_ code: Int32) -> String {
        if let t = DType(rawValue: code) { return t.description }
        let names: [Int32: String] = [0: "undefined", 8: "string", 14: "complex64", 15: "complex128",
                                      17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2",
                                      20: "float8e5m2fnuz", 21: "uint4", 22: "int4", 23: "float4e2m1",
                                      24: "float8e8m0", 25: "uint2", 26: "int2"]
        return names[code] ?? "type code \(code)"
    }
}
