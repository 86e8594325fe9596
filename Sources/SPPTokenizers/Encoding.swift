/// The model inputs for one text, special tokens included.
///
/// All four arrays have one entry per token. ``Tokenizer/encode(_:maxLength:)``
/// returns it unpadded (the attention mask is all ones);
/// ``Tokenizer/encodeBatch(_:maxLength:padding:)`` pads a batch into tensors.
public struct Encoding: Sendable, Equatable {
    /// Token ids, e.g. `[101, 7592, 2088, 102]` for "[CLS] hello world [SEP]".
    public var ids: [Int32]
    /// Segment (token type) ids: 0 for a single sequence with BERT's template.
    public var typeIds: [Int32]
    /// 1 for a real token, 0 for padding.
    public var attentionMask: [Int32]
    /// The text of each token as the vocabulary spells it ("##ing", "[CLS]").
    public var tokens: [String]

    /// An encoding from its parts, which must have equal lengths.
    public init(ids: [Int32], typeIds: [Int32], attentionMask: [Int32], tokens: [String]) {
        self.ids = ids
        self.typeIds = typeIds
        self.attentionMask = attentionMask
        self.tokens = tokens
    }

    /// Number of tokens.
    public var count: Int { ids.count }
}
