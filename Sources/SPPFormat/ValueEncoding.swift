import SPPCore

/// How a stored tensor stands for the graph's value when the two differ — the
/// storage precision of `spp convert --weights`. The value is float32; the
/// stored elements are float16 or bfloat16 (expanded when loaded), or int8
/// times the float32 tensor `scales`, which holds one scale per row
/// (`[rows, 1]`) or per column (`[1, cols]`) of the rank-2 int8 tensor.
///
/// In the file: the entry's `value_dtype` and `scales` fields, and preamble flag
/// bit 0 (`SPPFormat.encodedTensorsFlag`) so that readers that predate them
/// refuse the file instead of handing stored elements to the graph.
public struct ValueEncoding: Sendable, Equatable {
    /// The dtype the graph sees (float32).
    public var valueDType: DType
    /// Entry name of the scales, for int8 storage.
    public var scales: String?

    public init(valueDType: DType = .float32, scales: String? = nil) {
        self.valueDType = valueDType
        self.scales = scales
    }

    /// The axis a scales tensor of `scalesShape` runs along for an int8 tensor of
    /// `shape`: 0 (a scale per row) or 1 (per column); nil when it fits neither.
    /// A `[1, 1]` tensor of one row takes the row reading.
    public static func scaleAxis(scalesShape: [Int], for shape: [Int]) -> Int? {
        guard shape.count == 2, scalesShape.count == 2 else { return nil }
        if scalesShape == [shape[0], 1] { return 0 }
        if scalesShape == [1, shape[1]] { return 1 }
        return nil
    }

    /// Why `encoding` cannot describe a stored tensor of `dtype` and `shape`, or
    /// nil when it can. `entry` looks up another stored tensor (the scales) by
    /// name: its dtype, shape and whether it is itself encoded. The writer and
    /// the reader both apply these rules.
    static func problem(_ encoding: ValueEncoding, dtype: DType, shape: [Int],
                        entry: (String) -> (dtype: DType, shape: [Int], encoded: Bool)?) -> String? {
        guard encoding.valueDType == .float32 else {
            return "its value dtype is \(encoding.valueDType); stored precision stands only for float32 values"
        }
        switch dtype {
        case .float16, .bfloat16:
            return encoding.scales == nil ? nil : "it is stored as \(dtype), which takes no scales"
        case .int8:
            guard let name = encoding.scales else { return "it is stored as int8 without scales" }
            guard shape.count == 2 else { return "int8 storage needs a matrix, the tensor has shape \(Tensor.describe(shape))" }
            guard let s = entry(name) else { return "its scales '\(name)' are not in the file" }
            guard s.dtype == .float32, !s.encoded else { return "its scales '\(name)' are not stored as float32" }
            guard scaleAxis(scalesShape: s.shape, for: shape) != nil else {
                return "its scales '\(name)' have shape \(Tensor.describe(s.shape)), expected [\(shape[0]), 1] or [1, \(shape[1])]"
            }
            return nil
        default:
            return "it is stored as \(dtype); stored precision is float16, bfloat16 or int8"
        }
    }
}
