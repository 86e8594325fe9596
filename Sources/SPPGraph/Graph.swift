import SPPCore

/// One dimension of a value's shape, as far as it is known before running.
public enum Dim: Hashable, Sendable, CustomStringConvertible {
    case fixed(Int)
    /// A named dimension such as `batch` or `seq`: same name, same size.
    case symbol(String)

    public var description: String {
        switch self {
        case let .fixed(n): return String(n)
        case let .symbol(s): return s
        }
    }

    public var fixedValue: Int? {
        if case let .fixed(n) = self { return n }
        return nil
    }
}

/// Type and (possibly partial) shape of a value. `shape == nil` means the rank is unknown.
public struct ValueInfo: Sendable, Equatable {
    public var name: String
    public var dtype: DType?
    public var shape: [Dim]?

    public init(name: String, dtype: DType?, shape: [Dim]?) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    /// Like `float32 [batch, seq, 384]`.
    public var typeDescription: String {
        let t = dtype?.description ?? "?"
        guard let shape else { return "\(t) [?]" }
        return "\(t) [" + shape.map(\.description).joined(separator: ", ") + "]"
    }
}

/// One operator application. Value names connect nodes; an empty input name
/// marks an omitted optional input.
public struct Node: Sendable {
    public var name: String
    public var op: OpType
    public var inputs: [String]
    public var outputs: [String]
    public var attributes: [String: Attribute]

    public init(name: String, op: OpType, inputs: [String], outputs: [String], attributes: [String: Attribute] = [:]) {
        self.name = name
        self.op = op
        self.inputs = inputs
        self.outputs = outputs
        self.attributes = attributes
    }
}

/// The intermediate representation: a topologically ordered list of nodes
/// over named values, constant tensors, and the graph's inputs and outputs.
public struct Graph: @unchecked Sendable {
    public var inputs: [ValueInfo]
    public var outputs: [ValueInfo]
    /// Constant tensors (ONNX initializers, folded constants), by value name.
    public var initializers: [String: Tensor]
    public var nodes: [Node]

    public init(inputs: [ValueInfo], outputs: [ValueInfo], initializers: [String: Tensor], nodes: [Node]) {
        self.inputs = inputs
        self.outputs = outputs
        self.initializers = initializers
        self.nodes = nodes
    }

    /// Number of parameters: elements of all floating-point constants.
    public var parameterCount: Int {
        initializers.values.filter { $0.dtype.isFloatingPoint }.reduce(0) { $0 + $1.count }
    }

    /// Bytes held by all constants.
    public var constantBytes: Int { initializers.values.reduce(0) { $0 + $1.byteCount } }

    /// How many nodes of each op, most frequent first.
    public var opHistogram: [(OpType, Int)] {
        var counts: [OpType: Int] = [:]
        for n in nodes { counts[n.op, default: 0] += 1 }
        return counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key.rawValue < $1.key.rawValue }
    }
}
