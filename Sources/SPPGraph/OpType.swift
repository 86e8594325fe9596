/// The closed set of operators the graph can hold. Raw values are the ONNX
/// `op_type` names (default domain); fused ops added by passes use names of
/// their own. Every `switch` over this enum is exhaustive, so adding an op
/// fails to compile wherever it must be handled (shape inference, runtime).
///
/// Semantics are those of the newest ONNX opset for each op; the importer
/// rewrites older forms (attributes that later became inputs, for example).
public enum OpType: String, CaseIterable, Sendable {
    // Elementwise, two or more inputs with broadcasting.
    case add = "Add", sub = "Sub", mul = "Mul", div = "Div", pow = "Pow", mod = "Mod"
    case max = "Max", min = "Min"
    case equal = "Equal", less = "Less", lessOrEqual = "LessOrEqual", greater = "Greater", greaterOrEqual = "GreaterOrEqual"
    case and = "And", or = "Or", xor = "Xor"
    case `where` = "Where"
    // Elementwise, one input.
    case abs = "Abs", neg = "Neg", sqrt = "Sqrt", reciprocal = "Reciprocal", exp = "Exp", log = "Log"
    case erf = "Erf", tanh = "Tanh", sigmoid = "Sigmoid", relu = "Relu", gelu = "Gelu"
    case floor = "Floor", ceil = "Ceil", sign = "Sign", not = "Not", isNaN = "IsNaN"
    case clip = "Clip", cast = "Cast", castLike = "CastLike", identity = "Identity"
    // Linear algebra.
    case matMul = "MatMul", gemm = "Gemm", conv = "Conv"
    // Normalisation and reductions.
    case softmax = "Softmax", logSoftmax = "LogSoftmax", layerNormalization = "LayerNormalization"
    case reduceMean = "ReduceMean", reduceSum = "ReduceSum", reduceMax = "ReduceMax", reduceMin = "ReduceMin"
    case reduceProd = "ReduceProd", cumSum = "CumSum"
    // Shape and data movement.
    case shape = "Shape", size = "Size", reshape = "Reshape", flatten = "Flatten"
    case squeeze = "Squeeze", unsqueeze = "Unsqueeze", transpose = "Transpose"
    case concat = "Concat", split = "Split", slice = "Slice", gather = "Gather"
    case expand = "Expand", tile = "Tile", trilu = "Trilu"
    case constant = "Constant", constantOfShape = "ConstantOfShape", range = "Range"
}

/// One typed attribute value.
public enum Attribute: Sendable, Equatable {
    case int(Int)
    case float(Float)
    case string(String)
    case ints([Int])
    case floats([Float])
    case strings([String])
    case tensor(TensorValue)

    /// A tensor attribute (wrapped so that `Attribute` can be `Equatable`).
    public struct TensorValue: @unchecked Sendable, Equatable {
        public let tensor: Tensor
        public init(_ tensor: Tensor) { self.tensor = tensor }
        public static func == (a: TensorValue, b: TensorValue) -> Bool { a.tensor.storage === b.tensor.storage }
    }
}

import SPPCore
