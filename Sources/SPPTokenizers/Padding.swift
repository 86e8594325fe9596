/// How ``Tokenizer/encodeBatch(_:maxLength:padding:)`` pads a batch.
public enum Padding: Sendable, Equatable {
    /// To the longest encoding in the batch.
    case longest
    /// To this many tokens; a batch with a longer encoding (when truncation
    /// allows one) is padded to that encoding's length instead, so that the
    /// result stays rectangular and nothing is cut.
    case fixed(Int)
}
