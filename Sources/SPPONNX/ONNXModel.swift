import SPPGraph

/// An imported ONNX model: the graph, normalised to the newest-opset forms the
/// runtime implements (see `ImportSession+Opset.swift`), and where it came from.
public struct ONNXModel: Sendable {
    public var graph: Graph
    /// Version of the default (`ai.onnx`) operator set the file was written for.
    public var opsetVersion: Int
    /// ONNX IR version of the file (`ModelProto.ir_version`).
    public var irVersion: Int
    public var producerName: String
    public var producerVersion: String

    public init(graph: Graph, opsetVersion: Int, irVersion: Int, producerName: String, producerVersion: String) {
        self.graph = graph
        self.opsetVersion = opsetVersion
        self.irVersion = irVersion
        self.producerName = producerName
        self.producerVersion = producerVersion
    }
}
