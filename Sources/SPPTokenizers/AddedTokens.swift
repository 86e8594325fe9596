/// One entry of `added_tokens`: text matched as a whole before the model
/// sees the input (e.g. "[CLS]" typed in the text gives id 101).
struct AddedToken: Sendable {
    var content: String
    var id: Int32
    var singleWord: Bool
    var leftStrip: Bool
    var rightStrip: Bool
    /// Matched in normalized text (true) or in the raw input (false).
    var normalized: Bool
    var special: Bool
}

/// Finds added tokens in text as the reference's `AddedVocabulary` does:
/// leftmost-longest, non-overlapping matches, with the `single_word`,
/// `lstrip` and `rstrip` options.
struct AddedTokenMatcher: Sendable {
    /// A piece of text: either plain text to be normalized and tokenized, or
    /// an added token (its id) that is emitted as is.
    struct Piece {
        var range: Range<Int>
        var id: Int32?
    }

    private let tokens: [AddedToken]
    /// Token text (normalized when the token is) → index in `tokens`.
    private let trie: ScalarTrie

    /// Nil when there is nothing to match.
    init?(_ tokens: [AddedToken], normalizer: Normalizer?) {
        var trie = ScalarTrie()
        var kept: [AddedToken] = []
        for token in tokens {
            var text = Array(token.content.unicodeScalars)
            if token.normalized { normalizer?.apply(&text) }
            guard !text.isEmpty else { continue }
            trie.insert(text, value: Int32(kept.count))
            kept.append(token)
        }
        guard !kept.isEmpty else { return nil }
        self.tokens = kept
        self.trie = trie
    }

    /// Splits `text[range]` into plain pieces and added tokens. Empty plain
    /// pieces are not returned, but an empty input gives one empty piece
    /// (which still gets the special tokens around it).
    func split(_ text: UnsafeBufferPointer<Unicode.Scalar>, _ range: Range<Int>, into pieces: inout [Piece]) {
        var plainStart = range.lowerBound
        var i = range.lowerBound
        while i < range.upperBound {
            guard let match = trie.longestMatch(text, from: i, to: range.upperBound) else {
                i += 1
                continue
            }
            let token = tokens[Int(match.value)]
            var start = i
            var stop = match.end
            // The next search starts after this match even if it is discarded.
            i = match.end
            if token.singleWord {
                let startOK = start == range.lowerBound || !AddedTokenMatcher.isWordScalar(text[start - 1])
                let stopOK = stop == range.upperBound || !AddedTokenMatcher.isWordScalar(text[stop])
                guard startOK, stopOK else { continue }
            }
            if token.leftStrip {
                var s = start
                while s > range.lowerBound, AddedTokenMatcher.isWhitespace(text[s - 1]) { s -= 1 }
                start = max(s, plainStart)
            }
            if token.rightStrip {
                while stop < range.upperBound, AddedTokenMatcher.isWhitespace(text[stop]) { stop += 1 }
            }
            if plainStart < start { pieces.append(Piece(range: plainStart..<start, id: nil)) }
            pieces.append(Piece(range: start..<stop, id: token.id))
            plainStart = stop
            i = max(i, stop)
        }
        if plainStart < range.upperBound || range.isEmpty {
            pieces.append(Piece(range: plainStart..<range.upperBound, id: nil))
        }
    }

    private static func isWhitespace(_ c: Unicode.Scalar) -> Bool {
        CharacterClasses.shared.flags(c).contains(.whitespace)
    }

    /// What the reference counts as part of a word around a `single_word` token.
    private static func isWordScalar(_ c: Unicode.Scalar) -> Bool {
        if c.value < 0x80 {
            let v = c.value
            return (0x30...0x39).contains(v) || (0x41...0x5A).contains(v) || (0x61...0x7A).contains(v) || v == 0x5F
        }
        let p = c.properties
        return p.isAlphabetic || p.numericType != nil
    }
}
