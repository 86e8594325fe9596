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

    // Fused ops made by passes (`DiscoverBlocks`); never read from an ONNX file.
    // Their names carry a `spp.` prefix so they cannot collide with ONNX ops
    // (ONNX opset 23 has an `Attention` of its own, with other semantics).

    /// A whole multi-head self-attention block, from its input to the output
    /// projection (the residual add and any norm stay ordinary ops).
    ///
    /// Inputs, in order (`Σqk = sum(qk_ranks)`, `Σvo = sum(vo_ranks)`):
    /// `x [B, S, D]`, `Wq [D, Σqk]`, `bq [Σqk]`, `Wk [D, Σqk]`, `bk [Σqk]`,
    /// `Wv [D, Σvo]`, `bv [Σvo]`, `Wo [Σvo, D]`, `bo [D]`, then two optional
    /// additive terms (empty name when absent), each of rank ≤ 4 and
    /// broadcastable to `[B, H, S, S]`: `mask` (typically `[B, 1, 1, S]` or
    /// `[B, 1, S, S]`, 0 or a large negative) and `bias` (a position bias,
    /// typically `[1, H, S, S]`).
    ///
    /// Attributes: `heads` (H); `qk_ranks` and `vo_ranks`, H integers each —
    /// head h owns columns `sum(ranks[..<h]) ..< sum(ranks[...h])` of Wq and
    /// Wk (qk) and of Wv and rows of Wo (vo); ranks may differ per head and
    /// may be 0; `scale` (float, multiplies q·k — it stays the original
    /// 1/√d_head when ranks shrink); `causal` (0 or 1: with 1, key j > query
    /// i is excluded from the softmax).
    ///
    /// Output `[B, S, D]`: for each head,
    /// `P_h = softmax_j(scale · q_h k_hᵀ + mask + bias)` (causal positions
    /// excluded), `ctx_h = P_h v_h`, and `y = concat_h(ctx_h) Wo + bo`, where
    /// `q_h = x Wq_h + bq_h` and likewise k, v. A head with vo rank 0
    /// contributes nothing; with every vo rank 0 the output is `bo` broadcast.
    /// A head with qk rank 0 attends uniformly (its logits are only mask + bias).
    case attention = "spp.Attention"

    /// A position-wise feed-forward block: `act(x W1 + b1) W2 + b2`.
    ///
    /// Inputs `x [..., D]`, `W1 [D, F]`, `b1 [F]`, `W2 [F, D]`, `b2 [D]`;
    /// output `[..., D]`. Attribute `activation`: `"gelu"` (exact, with erf),
    /// `"gelu_tanh"` (the tanh approximation) or `"relu"`. F may be 0 (the
    /// output is then `b2` broadcast); hidden unit i is column i of W1, b1[i]
    /// and row i of W2.
    case feedForward = "spp.FeedForward"
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
