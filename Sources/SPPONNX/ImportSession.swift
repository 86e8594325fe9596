import CProtobuf
import Foundation
import SPPCore
import SPPGraph

/// State of one import: options, where external data lives, and the graph
/// being built.
final class ImportSession {
    let options: ONNXImporter.Options
    let baseDirectory: String?
    /// External data files, mapped once each, by path.
    var externalFiles: [String: Data] = [:]

    /// Constants of the graph being built, by value name.
    var initializers: [String: Tensor] = [:]
    /// Every value name in the file, so that new constants get fresh names.
    var valueNames: Set<String> = []
    var nodeNames: Set<String> = []
    var graphInputNames: Set<String> = []
    /// Element types known from the file (inputs, outputs, value_info, constants):
    /// used where an old-opset rewrite must create a constant of a value's type.
    var valueTypes: [String: DType] = [:]

    init(baseDirectory: String?, options: ONNXImporter.Options) {
        self.baseDirectory = baseDirectory
        self.options = options
    }

    func importModel(_ modelPointer: UnsafeMutablePointer<Onnx__ModelProto>, source: String) throws -> ONNXModel {
        let model = modelPointer.pointee
        guard let graphPointer = model.graph else { throw ONNXImportError.missingGraph(source: source) }
        let graph = graphPointer.pointee

        // Operator sets. "ai.onnx" is another spelling of the default domain.
        var opsets: [String: Int] = [:]
        for entry in cMessages(model.n_opset_import, model.opset_import) {
            let domain = Self.canonicalDomain(cString(entry.pointee.domain))
            let version = entry.pointee.has_version != 0 ? Int(entry.pointee.version) : 1
            opsets[domain] = max(opsets[domain] ?? version, version)
        }
        guard let opset = opsets[""], options.supportedOpsets.contains(opset) else {
            throw ONNXImportError.unsupportedOpset(domain: "", version: opsets[""], supported: options.supportedOpsets)
        }

        // Names first: new constants made by rewrites must not collide with any of them.
        for node in cMessages(graph.n_node, graph.node) {
            valueNames.formUnion(cStrings(node.pointee.n_input, node.pointee.input))
            valueNames.formUnion(cStrings(node.pointee.n_output, node.pointee.output))
        }

        if let sparse = cMessages(graph.n_sparse_initializer, graph.sparse_initializer).first {
            let name = sparse.pointee.values.map { cString($0.pointee.name) } ?? ""
            throw ONNXImportError.unsupportedTensorEncoding(tensor: name.isEmpty ? "sparse initializer" : name,
                                                           reason: "sparse initializers are not supported")
        }
        for (index, tensorPointer) in cMessages(graph.n_initializer, graph.initializer).enumerated() {
            let name = cString(tensorPointer.pointee.name)
            guard !name.isEmpty else { throw ONNXImportError.invalidModel(reason: "initializer #\(index) has no name") }
            try addInitializer(name, try tensor(tensorPointer, name: name))
        }

        // Inputs that are also initializers are constants with a default value
        // (IR < 4 lists every initializer as an input): keep them as constants.
        var inputs: [ValueInfo] = []
        for (index, p) in cMessages(graph.n_input, graph.input).enumerated() {
            let info = try valueInfo(p, role: "input", index: index)
            if initializers[info.name] != nil { continue }
            guard !graphInputNames.contains(info.name) else { throw ONNXImportError.duplicateValue(name: info.name) }
            graphInputNames.insert(info.name)
            inputs.append(info)
        }
        let outputs = try cMessages(graph.n_output, graph.output).enumerated().map { index, p in
            try valueInfo(p, role: "output", index: index)
        }
        for info in inputs + outputs { if let t = info.dtype { valueTypes[info.name] = t } }
        // value_info only helps (types of intermediate values): never fail on it.
        for p in cMessages(graph.n_value_info, graph.value_info) {
            if let info = try? valueInfo(p, role: "value_info", index: 0), let t = info.dtype { valueTypes[info.name] = t }
        }
        valueNames.formUnion(initializers.keys)
        valueNames.formUnion(graphInputNames)
        valueNames.formUnion(outputs.map(\.name))

        var nodes: [Node] = []
        nodes.reserveCapacity(graph.n_node)
        for (index, nodePointer) in cMessages(graph.n_node, graph.node).enumerated() {
            if let node = try convertNode(nodePointer, index: index, opset: opset, opsets: opsets) {
                nodes.append(node)
            }
        }

        let result = Graph(inputs: inputs, outputs: outputs, initializers: initializers, nodes: nodes)
        do { try result.verify() } catch let error as GraphError { throw ONNXImportError.invalidGraph(error) }
        return ONNXModel(graph: result, opsetVersion: opset,
                         irVersion: model.has_ir_version != 0 ? Int(model.ir_version) : 0,
                         producerName: cString(model.producer_name), producerVersion: cString(model.producer_version))
    }

    static func canonicalDomain(_ domain: String) -> String { domain == "ai.onnx" ? "" : domain }

    func addInitializer(_ name: String, _ tensor: Tensor) throws {
        guard initializers[name] == nil, !graphInputNames.contains(name) else {
            throw ONNXImportError.duplicateValue(name: name)
        }
        initializers[name] = tensor
        valueTypes[name] = tensor.dtype
    }

    /// Adds a constant made by a rewrite under a fresh name derived from `base`, and returns the name.
    func addNewConstant(_ base: String, _ tensor: Tensor) -> String {
        var name = base
        var k = 1
        while valueNames.contains(name) {
            name = "\(base)_\(k)"
            k += 1
        }
        valueNames.insert(name)
        initializers[name] = tensor
        valueTypes[name] = tensor.dtype
        return name
    }

    /// A node of the graph, or nil when the node became an initializer (`Constant`).
    func convertNode(_ pointer: UnsafeMutablePointer<Onnx__NodeProto>, index: Int, opset: Int,
                     opsets: [String: Int]) throws -> Node? {
        let proto = pointer.pointee
        let opType = cString(proto.op_type)
        let domain = Self.canonicalDomain(cString(proto.domain))
        let given = cString(proto.name)
        let name = uniqueNodeName(given.isEmpty ? "\(opType)_\(index)" : given, index: index)

        // Control flow first: "subgraphs are not supported" says more than "If is not supported".
        for attributePointer in cMessages(proto.n_attribute, proto.attribute) where Self.isSubgraph(attributePointer.pointee) {
            throw ONNXImportError.subgraphAttribute(node: name, opType: opType, attribute: cString(attributePointer.pointee.name))
        }
        guard domain.isEmpty else {
            throw ONNXImportError.unsupportedOp(opType: opType, node: name, domain: domain, opsetVersion: opsets[domain])
        }
        guard let op = OpType(rawValue: opType), let oldest = Self.oldestReadableOpset(op), oldest <= opset else {
            throw ONNXImportError.unsupportedOp(opType: opType, node: name, domain: domain, opsetVersion: opset)
        }

        var attributes: [String: Attribute] = [:]
        for (k, attributePointer) in cMessages(proto.n_attribute, proto.attribute).enumerated() {
            let key = cString(attributePointer.pointee.name)
            guard !key.isEmpty else {
                throw ONNXImportError.invalidNode(node: name, opType: opType, reason: "attribute #\(k) has no name")
            }
            attributes[key] = try attribute(attributePointer, key: key, node: name, opType: opType)
        }
        let inputs = cStrings(proto.n_input, proto.input)
        let outputs = cStrings(proto.n_output, proto.output)

        if op == .constant {
            guard outputs.count == 1, !outputs[0].isEmpty else {
                throw ONNXImportError.invalidNode(node: name, opType: opType, reason: "a Constant has exactly one output, this one has \(outputs.count)")
            }
            try addInitializer(outputs[0], try constantValue(attributes, node: name))
            return nil
        }

        var node = Node(name: name, op: op, inputs: inputs, outputs: outputs, attributes: attributes)
        try normalise(&node, opset: opset)
        return node
    }

    func uniqueNodeName(_ wanted: String, index: Int) -> String {
        var name = wanted
        if nodeNames.contains(name) { name = "\(wanted)_\(index)" }
        var k = 1
        while nodeNames.contains(name) {
            name = "\(wanted)_\(index)_\(k)"
            k += 1
        }
        nodeNames.insert(name)
        return name
    }

    /// The value of a `Constant` node, from whichever value attribute it has.
    func constantValue(_ attributes: [String: Attribute], node: String) throws -> Tensor {
        guard attributes.count == 1, let (key, value) = attributes.first else {
            let names = attributes.keys.sorted().joined(separator: ", ")
            throw ONNXImportError.invalidNode(node: node, opType: "Constant",
                                              reason: "needs exactly one value attribute, has [\(names)]")
        }
        switch (key, value) {
        case let ("value", .tensor(t)): return t.tensor
        case let ("value_float", .float(f)): return Tensor([f], shape: [])
        case let ("value_floats", .floats(fs)): return Tensor(fs, shape: [fs.count])
        case let ("value_int", .int(i)): return Tensor([Int64(i)], shape: [])
        case let ("value_ints", .ints(xs)): return Tensor(xs.map { Int64($0) }, shape: [xs.count])
        case ("value", _), ("value_float", _), ("value_floats", _), ("value_int", _), ("value_ints", _):
            throw ONNXImportError.invalidNode(node: node, opType: "Constant", reason: "attribute '\(key)' has the wrong type")
        case ("value_string", _), ("value_strings", _):
            throw ONNXImportError.unsupportedAttribute(node: node, opType: "Constant", attribute: key,
                                                       reason: "string constants are not supported")
        default:
            throw ONNXImportError.unsupportedAttribute(node: node, opType: "Constant", attribute: key,
                                                       reason: "not a Constant value this importer reads")
        }
    }

    /// Whether an attribute holds a graph (its type says so, or, in files from
    /// before `type` existed, its `g` = 6 or `graphs` = 11 field is set; those
    /// fields are not in the schema subset, so protobuf-c keeps them as unknown).
    static func isSubgraph(_ a: Onnx__AttributeProto) -> Bool {
        if a.has_type != 0, a.type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED {
            return a.type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH || a.type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS
        }
        return unknownFieldNumbers(a.base).contains { $0 == 6 || $0 == 11 }
    }

    /// One attribute. Subgraphs and the rarer kinds are rejected by name.
    func attribute(_ pointer: UnsafeMutablePointer<Onnx__AttributeProto>, key: String, node: String,
                   opType: String) throws -> Attribute {
        let a = pointer.pointee
        func unsupported(_ reason: String) -> ONNXImportError {
            .unsupportedAttribute(node: node, opType: opType, attribute: key, reason: reason)
        }
        if !cString(a.ref_attr_name).isEmpty {
            throw unsupported("refers to a function attribute ('\(cString(a.ref_attr_name))'), which only functions may do")
        }
        var type = a.has_type != 0 ? a.type : ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED
        if type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED {
            // Files from before `type` existed: infer it from the field that is set.
            if Self.isSubgraph(a) { type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH }
            else if a.t != nil { type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR }
            else if a.n_floats > 0 { type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS }
            else if a.n_ints > 0 { type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS }
            else if a.n_strings > 0 { type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS }
            else if a.has_s != 0 { type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING }
            else if a.has_f != 0 { type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT }
            else if a.has_i != 0 { type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT }
            else { throw unsupported("has neither a type nor a value") }
        }
        switch type {
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return .float(a.f)
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return .int(Int(a.i))
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: return .string(cText(a.s))
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS: return .floats(Array(cScalars(a.n_floats, a.floats)))
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS: return .ints(cScalars(a.n_ints, a.ints).map { Int($0) })
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS:
            return .strings(cScalars(a.n_strings, a.strings).map(cText))
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR:
            guard let t = a.t else { throw unsupported("is a tensor attribute without a tensor") }
            let name = cString(t.pointee.name)
            return .tensor(.init(try tensor(t, name: name.isEmpty ? "\(node).\(key)" : name)))
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS:
            throw ONNXImportError.subgraphAttribute(node: node, opType: opType, attribute: key)
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSORS: throw unsupported("lists of tensors are not supported")
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSORS:
            throw unsupported("sparse tensors are not supported")
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTO, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTOS:
            throw unsupported("type attributes are not supported")
        default: throw unsupported("has unknown attribute type \(type.rawValue)")
        }
    }

    /// A graph input or output. Only tensors are accepted; dimensions without
    /// a value or a name get the symbol `<value>_dim<i>`, so that every
    /// unknown size is named.
    func valueInfo(_ pointer: UnsafeMutablePointer<Onnx__ValueInfoProto>, role: String, index: Int) throws -> ValueInfo {
        let name = cString(pointer.pointee.name)
        guard !name.isEmpty else { throw ONNXImportError.invalidModel(reason: "graph \(role) #\(index) has no name") }
        guard let type = pointer.pointee.type else { return ValueInfo(name: name, dtype: nil, shape: nil) }
        guard type.pointee.value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE, let tensorType = type.pointee.tensor_type else {
            // The other variants are not in the schema subset: protobuf-c keeps them as unknown fields.
            let kinds: [UInt32: String] = [4: "sequence", 5: "map", 7: "opaque value", 8: "sparse tensor", 9: "optional value"]
            if let kind = unknownFieldNumbers(type.pointee.base).lazy.compactMap({ kinds[$0] }).first {
                throw ONNXImportError.unsupportedValueType(value: name, kind: kind)
            }
            return ValueInfo(name: name, dtype: nil, shape: nil)
        }
        let tt = tensorType.pointee
        var dtype: DType?
        if tt.has_elem_type != 0, tt.elem_type != 0 {
            guard let t = DType(rawValue: tt.elem_type) else {
                throw ONNXImportError.unsupportedDataType(value: name, typeName: DType.onnxName(tt.elem_type))
            }
            dtype = t
        }
        guard let shapeProto = tt.shape else { return ValueInfo(name: name, dtype: dtype, shape: nil) }
        var shape: [Dim] = []
        for (i, d) in cMessages(shapeProto.pointee.n_dim, shapeProto.pointee.dim).enumerated() {
            let dim = d.pointee
            switch dim.value_case {
            case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE:
                guard dim.dim_value >= 0 else {
                    throw ONNXImportError.badDimension(value: name, reason: "dimension \(i) is negative (\(dim.dim_value))")
                }
                shape.append(.fixed(Int(dim.dim_value)))
            case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM where !cString(dim.dim_param).isEmpty:
                shape.append(.symbol(cString(dim.dim_param)))
            default:
                shape.append(.symbol("\(name)_dim\(i)"))
            }
        }
        return ValueInfo(name: name, dtype: dtype, shape: shape)
    }
}
