import SPPCore

/// Why a model could not be prepared or run.
public enum RuntimeError: Error, CustomStringConvertible, Equatable {
    case unknownInput(name: String, expected: [String])
    case missingInput(name: String)
    case wrongInputType(name: String, expected: DType, actual: DType)
    case wrongInputRank(name: String, expected: Int, actual: Int)
    case wrongInputDim(name: String, dim: Int, expected: String, actual: Int)
    case unsupportedOp(node: String, op: String, reason: String)
    case unsupportedDType(node: String, op: String, dtype: DType, reason: String)
    case nodeFailed(node: String, op: String, reason: String)
    case invalidKeep(Double)
    case noPruningPath
    case corruptPath(String)
    /// An FFN pair stores repair data this loader cannot refit from: `missing` names what it lacks,
    /// `retired` the unit tensors of an older repair it has instead.
    case missingRepairData(node: String, missing: [String], retired: [String])

    public var description: String {
        switch self {
        case let .unknownInput(name, expected):
            return "the model has no input named '\(name)'; its inputs are \(expected.map { "'\($0)'" }.joined(separator: ", "))"
        case let .missingInput(name): return "input '\(name)' was not given"
        case let .wrongInputType(name, expected, actual): return "input '\(name)' must be \(expected), got \(actual)"
        case let .wrongInputRank(name, expected, actual): return "input '\(name)' must have rank \(expected), got rank \(actual)"
        case let .wrongInputDim(name, dim, expected, actual):
            return "input '\(name)' dimension \(dim) must be \(expected), got \(actual)"
        case let .unsupportedOp(node, op, reason): return "node '\(node)' (\(op)) is not supported: \(reason)"
        case let .unsupportedDType(node, op, dtype, reason):
            return "node '\(node)' (\(op)): data type \(dtype) is not supported (\(reason))"
        case let .nodeFailed(node, op, reason): return "node '\(node)' (\(op)) failed: \(reason)"
        case let .invalidKeep(k): return "keep ratio \(k) is outside (0, 1]"
        case .noPruningPath: return "this model has no pruning path, so it only loads at keep 1.0; convert it with --method spp (or svd, magnitude)"
        case let .corruptPath(reason): return "the pruning path in this file is inconsistent: \(reason)"
        case let .missingRepairData(node, missing, retired):
            let older = retired.isEmpty ? "" : " (it stores \(retired.joined(separator: ", ")) of an older exact repair)"
            return "FFN node '\(node)' lacks the repair data \(missing.joined(separator: ", "))\(older): "
                + "convert the model again to refit below keep 1, or load it with --no-repair"
        }
    }
}
