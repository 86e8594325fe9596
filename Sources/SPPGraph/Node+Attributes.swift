import SPPCore

extension Node {
    /// An integer attribute, or `defaultValue` when absent.
    public func int(_ key: String, default defaultValue: Int) throws -> Int {
        guard let a = attributes[key] else { return defaultValue }
        guard case let .int(v) = a else { throw GraphError.badAttribute(node: name, op: op.rawValue, attribute: key, reason: "expected an integer") }
        return v
    }

    public func int(_ key: String) throws -> Int? {
        guard attributes[key] != nil else { return nil }
        return try int(key, default: 0)
    }

    public func float(_ key: String, default defaultValue: Float) throws -> Float {
        guard let a = attributes[key] else { return defaultValue }
        switch a {
        case let .float(v): return v
        case let .int(v): return Float(v)
        default: throw GraphError.badAttribute(node: name, op: op.rawValue, attribute: key, reason: "expected a float")
        }
    }

    public func ints(_ key: String) throws -> [Int]? {
        guard let a = attributes[key] else { return nil }
        switch a {
        case let .ints(v): return v
        case let .int(v): return [v]
        default: throw GraphError.badAttribute(node: name, op: op.rawValue, attribute: key, reason: "expected a list of integers")
        }
    }

    public func string(_ key: String, default defaultValue: String) throws -> String {
        guard let a = attributes[key] else { return defaultValue }
        guard case let .string(v) = a else { throw GraphError.badAttribute(node: name, op: op.rawValue, attribute: key, reason: "expected a string") }
        return v
    }

    public func tensor(_ key: String) throws -> Tensor? {
        guard let a = attributes[key] else { return nil }
        guard case let .tensor(v) = a else { throw GraphError.badAttribute(node: name, op: op.rawValue, attribute: key, reason: "expected a tensor") }
        return v.tensor
    }

    /// The name of input `i`, or nil when absent or empty (omitted optional input).
    public func input(_ i: Int) -> String? {
        i < inputs.count && !inputs[i].isEmpty ? inputs[i] : nil
    }
}
