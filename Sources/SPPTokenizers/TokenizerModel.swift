/// The `model` of `tokenizer.json`: turns one pre-tokenized word into ids.
/// A closed enum so that each new model (GPT-2 byte-level BPE next) must be
/// handled wherever models are.
enum TokenizerModel: Sendable {
    case wordPiece(WordPiece)

    /// Appends the ids of `text[word]`.
    @inline(__always)
    func tokenize(_ text: UnsafeBufferPointer<Unicode.Scalar>, _ word: Range<Int>, into ids: inout [Int32]) {
        switch self {
        case .wordPiece(let model): model.tokenize(text, word, into: &ids)
        }
    }
}
