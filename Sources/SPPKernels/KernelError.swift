import SPPCore

/// A kernel could not run on the tensors it was given. The runtime adds the
/// node name and op when it reports one.
public enum KernelError: Error, CustomStringConvertible, Equatable {
    case unsupportedDType(DType, reason: String)
    case shapeMismatch(String)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .unsupportedDType(t, reason): return "data type \(t) is not supported here (\(reason))"
        case let .shapeMismatch(s): return s
        case let .invalidArgument(s): return s
        }
    }
}
