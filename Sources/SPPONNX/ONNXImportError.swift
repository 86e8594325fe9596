import SPPGraph

/// Why an ONNX file could not be imported. Every case names what is wrong and
/// where (file, tensor, node, attribute), so that a user can act on it.
public enum ONNXImportError: Error, CustomStringConvertible, Equatable {
    /// The file could not be opened or read.
    case fileUnreadable(path: String, reason: String)
    /// The bytes do not parse as the expected protobuf message (`ModelProto`,
    /// or `TensorProto` for a tensor file): empty, corrupt or truncated.
    case notAProtobuf(source: String, message: String, byteCount: Int)
    /// The model has no graph.
    case missingGraph(source: String)
    /// The model imports a version of the default operator set outside the
    /// supported range, or none at all (`version == nil`).
    case unsupportedOpset(domain: String, version: Int?, supported: ClosedRange<Int>)
    /// An operator this importer cannot represent: unknown op type, an op from
    /// another domain, or an op not yet defined at the model's opset.
    case unsupportedOp(opType: String, node: String, domain: String, opsetVersion: Int?)
    /// A tensor or value of a data type the project does not support (string, complex, float8, int4…).
    case unsupportedDataType(value: String, typeName: String)
    /// A graph input or output that is not a tensor (sequence, map, optional, sparse tensor, opaque).
    case unsupportedValueType(value: String, kind: String)
    /// A tensor stored in a way this importer does not read (segments, strings, sparse).
    case unsupportedTensorEncoding(tensor: String, reason: String)
    /// An attribute of a kind the graph cannot hold.
    case unsupportedAttribute(node: String, opType: String, attribute: String, reason: String)
    /// A graph-valued attribute (the branches of `If`, the body of `Loop` or `Scan`).
    case subgraphAttribute(node: String, opType: String, attribute: String)
    /// A tensor whose data does not hold as many bytes as its shape and type need.
    case tensorDataSizeMismatch(tensor: String, expectedBytes: Int, actualBytes: Int)
    /// A negative dimension, or a shape whose size overflows.
    case badDimension(value: String, reason: String)
    /// The file named by a tensor's external data does not exist.
    case externalDataFileMissing(tensor: String, location: String, path: String)
    /// Offset and length of a tensor's external data reach past the end of its file.
    case externalDataOutOfRange(tensor: String, location: String, offset: Int, length: Int, fileSize: Int)
    /// An external data location that is absolute or leaves the model's folder.
    case externalDataBadLocation(tensor: String, location: String, reason: String)
    /// Other problems with external data: missing location, bad numbers, no folder to resolve against.
    case externalDataInvalid(tensor: String, reason: String)
    /// A value name defined twice (two initializers, or a `Constant` over an initializer).
    case duplicateValue(name: String)
    /// A node whose inputs, outputs or attributes do not fit its operator.
    case invalidNode(node: String, opType: String, reason: String)
    /// Other structural problems with the model.
    case invalidModel(reason: String)
    /// The imported graph does not verify (for example a node reads an undefined value).
    case invalidGraph(GraphError)

    public var description: String {
        switch self {
        case let .fileUnreadable(path, reason):
            return "cannot read \(path): \(reason)"
        case let .notAProtobuf(source, message, byteCount):
            return "\(source) (\(byteCount) bytes) is not a valid ONNX \(message): the file is empty, corrupt or truncated"
        case let .missingGraph(source):
            return "\(source) is an ONNX ModelProto without a graph"
        case let .unsupportedOpset(domain, version, supported):
            let d = domain.isEmpty ? "the default domain (ai.onnx)" : "domain '\(domain)'"
            guard let version else {
                return "the model imports no opset for \(d); supported opsets: \(supported.lowerBound)...\(supported.upperBound)"
            }
            return "the model uses opset \(version) of \(d); supported opsets: \(supported.lowerBound)...\(supported.upperBound)"
        case let .unsupportedOp(opType, node, domain, opsetVersion):
            let d = domain.isEmpty ? "ai.onnx" : domain
            let v = opsetVersion.map { " opset \($0)" } ?? ""
            return "node '\(node)': operator '\(opType)' of domain '\(d)'\(v) is not supported"
        case let .unsupportedDataType(value, typeName):
            return "'\(value)' has data type \(typeName), which is not supported"
        case let .unsupportedValueType(value, kind):
            return "'\(value)' is a \(kind), not a tensor; only tensors are supported"
        case let .unsupportedTensorEncoding(tensor, reason):
            return "tensor '\(tensor)': \(reason)"
        case let .unsupportedAttribute(node, opType, attribute, reason):
            return "node '\(node)' (\(opType)): attribute '\(attribute)': \(reason)"
        case let .subgraphAttribute(node, opType, attribute):
            return "node '\(node)' (\(opType)): attribute '\(attribute)' is a subgraph; control flow (If, Loop, Scan) is not supported"
        case let .tensorDataSizeMismatch(tensor, expected, actual):
            return "tensor '\(tensor)': its shape and type need \(expected) bytes of data, the file holds \(actual)"
        case let .badDimension(value, reason):
            return "'\(value)': \(reason)"
        case let .externalDataFileMissing(tensor, location, path):
            return "tensor '\(tensor)': external data file '\(location)' not found (looked for \(path))"
        case let .externalDataOutOfRange(tensor, location, offset, length, fileSize):
            return "tensor '\(tensor)': external data at offset \(offset), length \(length) reaches past the end of '\(location)' (\(fileSize) bytes)"
        case let .externalDataBadLocation(tensor, location, reason):
            return "tensor '\(tensor)': external data location '\(location)' \(reason)"
        case let .externalDataInvalid(tensor, reason):
            return "tensor '\(tensor)': external data: \(reason)"
        case let .duplicateValue(name):
            return "value '\(name)' is defined more than once (initializers and Constant outputs must be unique)"
        case let .invalidNode(node, opType, reason):
            return "node '\(node)' (\(opType)): \(reason)"
        case let .invalidModel(reason):
            return "invalid ONNX model: \(reason)"
        case let .invalidGraph(error):
            return "the imported graph is invalid: \(error)"
        }
    }
}
