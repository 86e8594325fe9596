/// The WordPiece model: greedy longest-match-first over a vocabulary, with
/// pieces after the first spelled with a continuing-subword prefix ("##").
/// A word with no complete segmentation, or longer than
/// `maxInputCharsPerWord` scalars, becomes the single unknown token.
struct WordPiece: Sendable {
    /// The vocabulary: token text → id.
    let vocabulary: ScalarTrie
    let unknownId: Int32
    let maxInputCharsPerWord: Int
    /// The trie node after the continuing-subword prefix; nil when no
    /// vocabulary entry starts with it (then only whole-word matches exist).
    let continuationNode: Int32?

    init(vocabulary: ScalarTrie, unknownId: Int32, continuingSubwordPrefix: String, maxInputCharsPerWord: Int) {
        self.vocabulary = vocabulary
        self.unknownId = unknownId
        self.maxInputCharsPerWord = maxInputCharsPerWord
        continuationNode = vocabulary.walk(continuingSubwordPrefix.unicodeScalars)
    }

    /// Appends the ids of one word, `text[word]`.
    func tokenize(_ text: UnsafeBufferPointer<Unicode.Scalar>, _ word: Range<Int>, into ids: inout [Int32]) {
        guard word.count <= maxInputCharsPerWord else {
            ids.append(unknownId)
            return
        }
        let mark = ids.count
        var start = word.lowerBound
        while start < word.upperBound {
            let node: Int32?
            if start == word.lowerBound { node = ScalarTrie.root } else { node = continuationNode }
            guard let node, let match = vocabulary.longestMatch(text, from: start, to: word.upperBound, node: node) else {
                // The reference gives up on the whole word.
                ids.removeSubrange(mark...)
                ids.append(unknownId)
                return
            }
            ids.append(match.value)
            start = match.end
        }
    }
}
