/// Problems found in a graph: by the verifier, shape inference, or when an
/// operator's attributes are read.
public enum GraphError: Error, CustomStringConvertible, Equatable {
    case badAttribute(node: String, op: String, attribute: String, reason: String)
    case undefinedValue(node: String, value: String)
    case valueDefinedTwice(value: String, node: String)
    case missingOutput(value: String)
    case wrongInputCount(node: String, op: String, expected: String, actual: Int)
    case shapeMismatch(node: String, op: String, reason: String)

    public var description: String {
        switch self {
        case let .badAttribute(node, op, attribute, reason):
            return "node '\(node)' (\(op)): attribute '\(attribute)': \(reason)"
        case let .undefinedValue(node, value):
            return "node '\(node)' reads value '\(value)', which no earlier node, input or initializer defines"
        case let .valueDefinedTwice(value, node):
            return "value '\(value)' is defined twice (again by node '\(node)')"
        case let .missingOutput(value):
            return "graph output '\(value)' is never computed"
        case let .wrongInputCount(node, op, expected, actual):
            return "node '\(node)' (\(op)) has \(actual) inputs, expected \(expected)"
        case let .shapeMismatch(node, op, reason):
            return "node '\(node)' (\(op)): \(reason)"
        }
    }
}
