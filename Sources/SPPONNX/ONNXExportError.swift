import SPPCore
import SPPGraph

/// Why a graph could not be written as standard ONNX. Every case names the
/// node, value or file concerned.
public enum ONNXExportError: Error, CustomStringConvertible, Equatable {
    /// A fused block whose weights are computed rather than constant: their
    /// per-head layout cannot be padded ahead of time.
    case nonConstantWeight(node: String, op: String, input: String)
    /// A constant of a type the lowering of its node does not handle.
    case unsupportedDataType(node: String, op: String, value: String, dtype: DType)
    /// A node that has no form in the target opset.
    case cannotLower(node: String, op: String, reason: String)
    /// The serialized model would pass protobuf's 2 GB message limit.
    case tooLarge(bytes: Int, limit: Int)
    /// The lowered graph does not verify (a bug in the lowering, reported rather than written).
    case invalidGraph(GraphError)
    /// The file could not be written; nothing was left at `path`.
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .nonConstantWeight(node, op, input):
            return "node '\(node)' (\(op)): input '\(input)' is computed, not a constant; only constant weights can be exported"
        case let .unsupportedDataType(node, op, value, dtype):
            return "node '\(node)' (\(op)): '\(value)' is \(dtype); only float32 blocks can be exported"
        case let .cannotLower(node, op, reason):
            return "node '\(node)' (\(op)) cannot be written as ONNX opset \(ONNXLowering.opset): \(reason)"
        case let .tooLarge(bytes, limit):
            return "the exported model would be \(bytes) bytes, above protobuf's limit of \(limit) bytes for one message"
        case let .invalidGraph(error):
            return "the exported graph is invalid: \(error)"
        case let .writeFailed(path, reason):
            return "cannot write \(path): \(reason)"
        }
    }
}
