import SPPCore
import SPPGraph

// Opset normalisation: the runtime implements one form of each operator, the
// newest opset's (see `ONNXImporter.Options.supportedOpsets`). Files written
// for an older default-domain opset are rewritten here, at import, so that no
// later stage ever looks at the opset again:
//
// | operator                     | opset | old form                              | becomes                                        |
// |------------------------------|-------|---------------------------------------|------------------------------------------------|
// | Squeeze, Unsqueeze           | < 13  | `axes` attribute                      | int64 constant as input 1 (`<node>::axes`)     |
// | ReduceSum                    | < 13  | `axes` attribute                      | int64 constant as input 1 (`<node>::axes`)     |
// | ReduceMean/Max/Min/Prod      | < 18  | `axes` attribute                      | int64 constant as input 1 (`<node>::axes`)     |
// | Split                        | < 13  | `split` attribute                     | int64 constant as input 1 (`<node>::split`)    |
// | Split                        | < 18  | no split sizes: one equal part per output | `num_outputs` = number of outputs          |
// | Slice                        | < 10  | `starts`, `ends`, `axes` attributes   | int64 constants as inputs 1, 2, 3              |
// | Clip                         | < 11  | `min`, `max` float attributes         | scalar constants as inputs 1, 2 (the input's dtype when known, else float32) |
// | Softmax, LogSoftmax          | < 13  | flatten to 2-D at `axis` (default 1)  | `axis` made explicit, `coerce_2d = 1`          |
//
// So the runtime reads Squeeze/Unsqueeze/Reduce*/Split/Slice/Clip parameters
// only from inputs; Split's sizes from input 1 or else the `num_outputs`
// attribute; Softmax/LogSoftmax `axis` with default -1 and `coerce_2d` with
// default 0 (opset ≥ 13 files keep their attributes as written).
//
// | unary ops, Clip, Max, Min    | < 6   | `consumed_inputs` attribute           | removed (an in-place hint without meaning)     |
//
// An operator newer than the file's opset (Gelu before 20, LayerNormalization
// before 17, …) does not exist there and is rejected as unsupported, and so
// are the few forms older than opset 7 that are not rewritten (see
// `oldestReadableOpset`). All other version changes of the operators in
// `OpType` up to opset 28 only add types, negative axes, or optional inputs
// and attributes whose defaults keep the older behaviour, so those nodes are
// kept as written.

extension ImportSession {
    /// The oldest default-domain opset whose form of `op` the importer reads:
    /// when the op appeared, or later where an older form is neither the
    /// newest one nor rewritten here (binary ops and Gemm with a `broadcast`
    /// attribute before 7, Reshape's `shape` attribute before 5, Cast's string
    /// `to` and Tile's old inputs before 6, Concat without `axis` before 4).
    /// Nil for ops that passes create and ONNX files may not contain (fused ops).
    static func oldestReadableOpset(_ op: OpType) -> Int? {
        switch op {
        case .abs, .neg, .sqrt, .reciprocal, .exp, .log, .tanh, .sigmoid, .relu, .floor, .ceil, .not,
             .clip, .identity, .matMul, .conv, .softmax, .logSoftmax,
             .reduceMean, .reduceSum, .reduceMax, .reduceMin, .reduceProd,
             .shape, .size, .flatten, .squeeze, .unsqueeze, .transpose, .split, .slice, .gather, .constant:
            return 1
        case .concat: return 4
        case .reshape: return 5
        case .cast, .tile, .max, .min: return 6
        case .add, .sub, .mul, .div, .pow, .equal, .less, .greater, .and, .or, .xor, .gemm: return 7
        case .expand: return 8
        case .where, .erf, .sign, .isNaN, .constantOfShape: return 9
        case .mod: return 10
        case .cumSum, .range: return 11
        case .lessOrEqual, .greaterOrEqual: return 12
        case .trilu: return 14
        case .castLike: return 15
        case .layerNormalization: return 17
        case .gelu: return 20
        case .attention, .feedForward: return nil
        }
    }

    /// Rewrites `node` from the form of `opset` to the newest form (table above).
    func normalise(_ node: inout Node, opset: Int) throws {
        // A hint for in-place execution in opset 1 (unary ops, Clip, Max, Min), without meaning since 6.
        if opset < 6 { node.attributes["consumed_inputs"] = nil }
        switch node.op {
        case .squeeze where opset < 13, .reduceSum where opset < 13:
            try moveIntsToInput(&node, attribute: "axes", index: 1)
        case .unsqueeze where opset < 13:
            guard node.attributes["axes"] != nil else {
                throw ONNXImportError.invalidNode(node: node.name, opType: node.op.rawValue, reason: "the 'axes' attribute is required before opset 13")
            }
            try moveIntsToInput(&node, attribute: "axes", index: 1)
        case .reduceMean where opset < 18, .reduceMax where opset < 18, .reduceMin where opset < 18,
             .reduceProd where opset < 18:
            try moveIntsToInput(&node, attribute: "axes", index: 1)
        case .split:
            if opset < 13 { try moveIntsToInput(&node, attribute: "split", index: 1) }
            if opset < 18, node.input(1) == nil, node.attributes["num_outputs"] == nil {
                node.attributes["num_outputs"] = .int(node.outputs.count)
            }
        case .slice where opset < 10:
            for required in ["starts", "ends"] where node.attributes[required] == nil {
                throw ONNXImportError.invalidNode(node: node.name, opType: "Slice", reason: "the '\(required)' attribute is required before opset 10")
            }
            try moveIntsToInput(&node, attribute: "starts", index: 1)
            try moveIntsToInput(&node, attribute: "ends", index: 2)
            try moveIntsToInput(&node, attribute: "axes", index: 3)
        case .clip where opset < 11:
            let dtype = node.input(0).flatMap { valueTypes[$0] } ?? .float32
            for (key, index) in [("min", 1), ("max", 2)] {
                guard node.attributes[key] != nil else { continue }
                let value = try node.float(key, default: 0)
                node.attributes[key] = nil
                let name = addNewConstant("\(node.name)::\(key)", try Self.scalar(value, dtype: dtype, node: node))
                setInput(&node, index, name)
            }
        case .softmax where opset < 13, .logSoftmax where opset < 13:
            if node.attributes["axis"] == nil { node.attributes["axis"] = .int(1) }
            node.attributes["coerce_2d"] = .int(1)
        default:
            break
        }
    }

    /// Moves an integer-list attribute, when present, to an int64 constant input.
    private func moveIntsToInput(_ node: inout Node, attribute key: String, index: Int) throws {
        guard node.attributes[key] != nil else { return }
        let values: [Int]
        do { values = try node.ints(key) ?? [] } catch {
            throw ONNXImportError.invalidNode(node: node.name, opType: node.op.rawValue, reason: "attribute '\(key)' must be a list of integers")
        }
        node.attributes[key] = nil
        let name = addNewConstant("\(node.name)::\(key)", Tensor(values.map { Int64($0) }, shape: [values.count]))
        setInput(&node, index, name)
    }

    /// Sets input `index`, padding skipped optional inputs with "".
    private func setInput(_ node: inout Node, _ index: Int, _ name: String) {
        while node.inputs.count <= index { node.inputs.append("") }
        node.inputs[index] = name
    }

    /// A scalar constant of a floating-point dtype (old Clip bounds).
    static func scalar(_ value: Float, dtype: DType, node: Node) throws -> Tensor {
        switch dtype {
        case .float32:
            return Tensor([value], shape: [])
        case .float64:
            let t = Tensor(dtype: .float64, shape: [])
            t.pointer(as: Double.self).pointee = Double(value)
            return t
        case .float16:
            let t = Tensor(dtype: .float16, shape: [])
            t.pointer(as: UInt16.self).pointee = halfBits(value)
            return t
        case .bfloat16, .uint8, .int8, .uint16, .int16, .int32, .int64, .bool, .uint32, .uint64:
            throw ONNXImportError.invalidNode(node: node.name, opType: node.op.rawValue,
                                              reason: "old-style min/max attributes on a \(dtype) input")
        }
    }

    /// IEEE half-precision bits of `value`, rounded to nearest even.
    static func halfBits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16((bits >> 16) & 0x8000)
        let exponent = Int((bits >> 23) & 0xFF)
        var mantissa = bits & 0x7F_FFFF
        if exponent == 0xFF { return sign | 0x7C00 | (mantissa != 0 ? 0x200 : 0) }  // inf, nan
        let e = exponent - 127 + 15
        if e >= 0x1F { return sign | 0x7C00 }  // overflow → inf
        if e <= 0 {  // subnormal half or zero
            guard e >= -10 else { return sign }
            mantissa |= 0x80_0000
            let shift = UInt32(14 - e)
            var half = mantissa >> shift
            let rest = mantissa & ((1 << shift) - 1), halfway = UInt32(1) << (shift - 1)
            if rest > halfway || (rest == halfway && half & 1 == 1) { half += 1 }
            return sign | UInt16(half)
        }
        var half = UInt32(e) << 10 | mantissa >> 13
        let rest = mantissa & 0x1FFF
        if rest > 0x1000 || (rest == 0x1000 && half & 1 == 1) { half += 1 }  // may carry into the exponent: correct
        return sign | UInt16(half)
    }
}
