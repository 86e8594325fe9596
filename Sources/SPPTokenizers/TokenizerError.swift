/// Why a `tokenizer.json` could not be turned into a ``Tokenizer``.
///
/// Encoding text never fails once a tokenizer is built; every problem with
/// the file is reported here, when it is loaded.
public enum TokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file could not be read (missing, unreadable).
    case unreadableFile(path: String, reason: String)
    /// The bytes are not valid JSON; `offset` is the byte where parsing stopped.
    case malformedJSON(offset: Int, reason: String)
    /// A field the component needs is absent. `path` is dotted, e.g. `model.vocab`.
    case missingField(path: String)
    /// A field has the wrong JSON type or a value that cannot be used.
    case invalidField(path: String, reason: String)
    /// A component whose `type` this library does not implement, e.g.
    /// `component: "model", type: "BPE"`. The component is one of `model`,
    /// `normalizer`, `pre_tokenizer`, `post_processor`.
    case unsupported(component: String, type: String)
    /// A token the file names (unknown token, special token of a
    /// post-processor) is not in the vocabulary.
    case unknownToken(token: String, path: String)

    /// One line naming the file, field or component at fault.
    public var description: String {
        switch self {
        case .unreadableFile(let path, let reason):
            return "cannot read tokenizer file \(path): \(reason)"
        case .malformedJSON(let offset, let reason):
            return "tokenizer file is not valid JSON at byte \(offset): \(reason)"
        case .missingField(let path):
            return "tokenizer file has no field \(path)"
        case .invalidField(let path, let reason):
            return "tokenizer file field \(path) is invalid: \(reason)"
        case .unsupported(let component, let type):
            return "tokenizer \(component) of type \"\(type)\" is not supported"
        case .unknownToken(let token, let path):
            return "token \"\(token)\" named by \(path) is not in the vocabulary"
        }
    }
}
