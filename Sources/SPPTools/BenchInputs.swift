import SPPCore
import SPPGraph

/// Synthetic inputs of the right names, types and shapes for timing a model:
/// token ids in a plausible range, a full attention mask, zero type ids, and
/// unit-variance pixels for image inputs.
public enum BenchInputs {
    public static func make(for inputs: [ValueInfo], batch: Int, seq: Int) throws -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        var state: UInt64 = 0x9E3779B97F4A7C15
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }
        for info in inputs {
            // Symbolic dims: the first is the batch, later ones the sequence; fixed dims stay.
            let shape = (info.shape ?? []).enumerated().map { i, d -> Int in d.fixedValue ?? (i == 0 ? batch : seq) }
            let count = shape.reduce(1, *)
            switch info.dtype {
            case .int64?:
                let values: [Int64]
                switch info.name {
                case "attention_mask": values = [Int64](repeating: 1, count: count)
                case "token_type_ids", "position_ids": values = [Int64](repeating: 0, count: count)
                default: values = (0..<count).map { _ in Int64(1000 + next() % 20000) }
                }
                out[info.name] = Tensor(values, shape: shape)
            case .float32?:
                out[info.name] = Tensor((0..<count).map { _ in Float(Double(next() % 2000) / 1000 - 1) }, shape: shape)
            default:
                throw ConversionError.unknownTextInput(info.name)
            }
        }
        return out
    }
}
