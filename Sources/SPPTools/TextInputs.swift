import Foundation
import SPPCore
import SPPGraph
import SPPTokenizers

/// Text to model inputs: tokenizes and names the tensors after the graph's
/// inputs (`input_ids`, `attention_mask`, and `token_type_ids` when the model has it).
public struct TextInputs {
    public let tokenizer: Tokenizer
    public let maxLength: Int
    let inputNames: Set<String>

    public init(tokenizer: String, maxLength: Int, graphInputs: [ValueInfo]) throws {
        self.tokenizer = try Tokenizer(path: tokenizer)
        self.maxLength = maxLength
        inputNames = Set(graphInputs.map(\.name))
        for name in inputNames where !["input_ids", "attention_mask", "token_type_ids"].contains(name) {
            throw ConversionError.unknownTextInput(name)
        }
    }

    /// One padded batch.
    public func batch(_ texts: [String]) -> [String: Tensor] {
        let (ids, mask, types) = tokenizer.encodeBatch(texts, maxLength: maxLength)
        var inputs: [String: Tensor] = ["input_ids": ids, "attention_mask": mask, "token_type_ids": types]
        inputs = inputs.filter { inputNames.contains($0.key) }
        return inputs
    }

    /// Batches of `size` texts, grouped by token length so little padding is computed.
    /// Returns the batches and, for each, the indices of its texts in `texts`.
    public func batches(_ texts: [String], size: Int) -> [(inputs: [String: Tensor], indices: [Int])] {
        let lengths = texts.map { tokenizer.encode($0, maxLength: maxLength).ids.count }
        let order = texts.indices.sorted { (lengths[$0], $0) < (lengths[$1], $1) }
        return stride(from: 0, to: order.count, by: size).map { start in
            let idx = Array(order[start..<min(start + size, order.count)])
            return (batch(idx.map { texts[$0] }), idx)
        }
    }

    /// Strings from the field `field` of each line of a JSONL file.
    public static func readJSONL(_ path: String, field: String, limit: Int? = nil) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConversionError.unreadable(path)
        }
        var out: [String] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            if let limit, out.count >= limit { break }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw ConversionError.badJSONL(path: path, line: n + 1, reason: "not a JSON object")
            }
            guard let value = object[field] as? String else {
                throw ConversionError.badJSONL(path: path, line: n + 1, reason: "no string field '\(field)' (fields: \(object.keys.sorted().joined(separator: ", ")))")
            }
            out.append(value)
        }
        return out
    }
}

/// Problems with what a conversion was asked to do.
public enum ConversionError: Error, CustomStringConvertible {
    case unreadable(String)
    case badJSONL(path: String, line: Int, reason: String)
    case unknownTextInput(String)
    case missingOption(String)
    case noBlocks
    case badInputSets(String, String)
    /// A `.spp` to re-encode is not stored in float32.
    case alreadyEncoded(String)

    public var description: String {
        switch self {
        case let .unreadable(p): return "cannot read \(p)"
        case let .badJSONL(path, line, reason): return "\(path) line \(line): \(reason)"
        case let .unknownTextInput(n): return "the model has an input '\(n)' that text cannot fill (only input_ids, attention_mask, token_type_ids)"
        case let .missingOption(o): return "this method needs \(o)"
        case let .badInputSets(folder, reason): return "calibration folder \(folder): \(reason)"
        case let .alreadyEncoded(p): return "\(p) already stores tensors below float32; convert the ONNX model to store it at another precision"
        case .noBlocks: return "no attention or feed-forward block was found, so there is nothing to prune (see `spp inspect MODEL.onnx`)"
        }
    }
}
