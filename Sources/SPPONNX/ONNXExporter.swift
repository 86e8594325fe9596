import CProtobuf
import Foundation
import SPPCore
import SPPGraph
import SPPProtobuf

/// Writes a graph of standard operators (what `ONNXLowering.lower` returns) as
/// an ONNX `ModelProto`: one default-domain opset import, every constant an
/// initializer with raw little-endian data, inputs and outputs with their
/// element types and (symbolic) shapes. The bytes are deterministic: nodes in
/// graph order, initializers and attributes sorted by name.
public enum ONNXExporter {
    public struct Options: Sendable {
        public var producerName = "spp"
        public var producerVersion = ""
        /// Free text stored in the model's `doc_string` (where the model came from, the keep ratio).
        public var docString = ""
        /// Protobuf messages cannot exceed 2 GB; larger models would need external data.
        public var maximumBytes = Int(Int32.max)
        public init() {}
    }

    /// The IR version that goes with opset 17 (onnx 1.12).
    public static let irVersion = 8

    /// The serialized model. Throws `ONNXExportError` for a node that is not a
    /// standard operator (lower the graph first), a graph that does not verify,
    /// or a model above `maximumBytes`.
    public static func encode(_ graph: Graph, options: Options = Options()) throws -> Data {
        if let fused = graph.nodes.first(where: { $0.op == .attention || $0.op == .feedForward }) {
            throw ONNXExportError.cannotLower(node: fused.name, op: fused.op.rawValue, reason: "fused ops must be lowered first (ONNXLowering.lower)")
        }
        if let gelu = graph.nodes.first(where: { $0.op == .gelu }) {
            throw ONNXExportError.cannotLower(node: gelu.name, op: gelu.op.rawValue, reason: "Gelu exists from opset 20 on; lower the graph first")
        }
        do { try graph.verify() } catch let e as GraphError { throw ONNXExportError.invalidGraph(e) }
        // Outputs (and rarely inputs) may lack a declared type: take it from inference where it can.
        let infos = (try? ShapeInference.infer(graph)) ?? [:]

        let arena = CArena()
        let model = arena.message(onnx__model_proto__init)
        model.pointee.has_ir_version = 1
        model.pointee.ir_version = Int64(irVersion)
        model.pointee.producer_name = arena.string(options.producerName)
        model.pointee.producer_version = arena.string(options.producerVersion)
        if !options.docString.isEmpty { model.pointee.doc_string = arena.string(options.docString) }
        let opset = arena.message(onnx__operator_set_id_proto__init)
        opset.pointee.domain = arena.string("")
        opset.pointee.has_version = 1
        opset.pointee.version = Int64(ONNXLowering.opset)
        (model.pointee.n_opset_import, model.pointee.opset_import) = arena.messages([opset]) { $0 }

        let g = arena.message(onnx__graph_proto__init)
        g.pointee.name = arena.string("spp")
        (g.pointee.n_node, g.pointee.node) = arena.messages(graph.nodes) { node(arena, $0) }
        (g.pointee.n_initializer, g.pointee.initializer) = arena.messages(graph.initializers.sorted { $0.key < $1.key }) {
            tensor(arena, $0.value, name: $0.key)
        }
        func complete(_ v: ValueInfo) -> ValueInfo {
            var v = v
            if v.dtype == nil { v.dtype = infos[v.name]?.dtype }
            if v.shape == nil { v.shape = infos[v.name]?.shape }
            return v
        }
        (g.pointee.n_input, g.pointee.input) = arena.messages(graph.inputs) { valueInfo(arena, complete($0)) }
        (g.pointee.n_output, g.pointee.output) = arena.messages(graph.outputs) { valueInfo(arena, complete($0)) }
        model.pointee.graph = g

        let message = UnsafeRawPointer(model).assumingMemoryBound(to: ProtobufCMessage.self)
        let size = protobuf_c_message_get_packed_size(message)
        guard size <= options.maximumBytes else { throw ONNXExportError.tooLarge(bytes: size, limit: options.maximumBytes) }
        var data = Data(count: size)
        // The raw data points into the graph's tensors: they must live until packed.
        let written = withExtendedLifetime(graph) {
            data.withUnsafeMutableBytes { protobuf_c_message_pack(message, $0.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
        }
        precondition(written == size, "protobuf-c packed \(written) bytes of \(size)")
        return data
    }

    /// Encodes and writes atomically (temporary file, then rename): on any error
    /// nothing is left at `path`. Returns the bytes written.
    @discardableResult
    public static func write(_ graph: Graph, to path: String, options: Options = Options()) throws -> Int {
        let data = try encode(graph, options: options)
        do { try AtomicFile.write(data, to: path) } catch {
            throw ONNXExportError.writeFailed(path: path, reason: (error as NSError).localizedDescription)
        }
        return data.count
    }

    private static func node(_ arena: CArena, _ n: Node) -> UnsafeMutablePointer<Onnx__NodeProto> {
        let m = arena.message(onnx__node_proto__init)
        m.pointee.name = arena.string(n.name)
        m.pointee.op_type = arena.string(n.op.rawValue)
        m.pointee.domain = arena.string("")
        (m.pointee.n_input, m.pointee.input) = arena.strings(n.inputs)
        (m.pointee.n_output, m.pointee.output) = arena.strings(n.outputs)
        (m.pointee.n_attribute, m.pointee.attribute) = arena.messages(n.attributes.sorted { $0.key < $1.key }) {
            attribute(arena, $0.key, $0.value)
        }
        return m
    }

    private static func attribute(_ arena: CArena, _ name: String, _ a: Attribute) -> UnsafeMutablePointer<Onnx__AttributeProto> {
        let m = arena.message(onnx__attribute_proto__init)
        m.pointee.name = arena.string(name)
        m.pointee.has_type = 1
        switch a {
        case let .int(v):
            m.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT
            (m.pointee.has_i, m.pointee.i) = (1, Int64(v))
        case let .float(v):
            m.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT
            (m.pointee.has_f, m.pointee.f) = (1, v)
        case let .string(v):
            m.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING
            (m.pointee.has_s, m.pointee.s) = (1, arena.bytes(v))
        case let .ints(v):
            m.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS
            (m.pointee.n_ints, m.pointee.ints) = arena.array(v.map(Int64.init))
        case let .floats(v):
            m.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS
            (m.pointee.n_floats, m.pointee.floats) = arena.array(v)
        case let .strings(v):
            m.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS
            (m.pointee.n_strings, m.pointee.strings) = arena.array(v.map { arena.bytes($0) })
        case let .tensor(v):
            m.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR
            m.pointee.t = tensor(arena, v.tensor, name: "")
        }
        return m
    }

    /// A TensorProto whose raw data points at the tensor's bytes (not copied).
    private static func tensor(_ arena: CArena, _ t: Tensor, name: String) -> UnsafeMutablePointer<Onnx__TensorProto> {
        let m = arena.message(onnx__tensor_proto__init)
        if !name.isEmpty { m.pointee.name = arena.string(name) }
        (m.pointee.n_dims, m.pointee.dims) = arena.array(t.shape.map(Int64.init))
        (m.pointee.has_data_type, m.pointee.data_type) = (1, t.dtype.rawValue)
        m.pointee.has_raw_data = 1
        m.pointee.raw_data = ProtobufCBinaryData(len: t.byteCount, data: t.byteCount > 0 ? t.rawPointer.assumingMemoryBound(to: UInt8.self) : nil)
        return m
    }

    private static func valueInfo(_ arena: CArena, _ v: ValueInfo) -> UnsafeMutablePointer<Onnx__ValueInfoProto> {
        let m = arena.message(onnx__value_info_proto__init)
        m.pointee.name = arena.string(v.name)
        let tensorType = arena.message(onnx__type_proto__tensor__init)
        if let dtype = v.dtype { (tensorType.pointee.has_elem_type, tensorType.pointee.elem_type) = (1, dtype.rawValue) }
        if let dims = v.shape {
            let shape = arena.message(onnx__tensor_shape_proto__init)
            (shape.pointee.n_dim, shape.pointee.dim) = arena.messages(dims) { d in
                let dim = arena.message(onnx__tensor_shape_proto__dimension__init)
                switch d {
                case let .fixed(n):
                    dim.pointee.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE
                    dim.pointee.dim_value = Int64(n)
                case let .symbol(s):
                    dim.pointee.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM
                    dim.pointee.dim_param = arena.string(s)
                }
                return dim
            }
            tensorType.pointee.shape = shape
        }
        let type = arena.message(onnx__type_proto__init)
        type.pointee.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE
        type.pointee.tensor_type = tensorType
        m.pointee.type = type
        return m
    }
}
