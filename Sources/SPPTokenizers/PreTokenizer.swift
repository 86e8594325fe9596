/// A `pre_tokenizer` of `tokenizer.json`: splits normalized text into words,
/// each of which the model tokenizes on its own. Words are ranges of scalar
/// indices into the normalized text.
indirect enum PreTokenizer: Sendable {
    /// `BertPreTokenizer`: split on whitespace (dropped) and isolate every
    /// punctuation scalar.
    case bert
    /// `Whitespace`: the regex `\w+|[^\w\s]+` (runs of word scalars, runs of
    /// other non-space scalars).
    case whitespace
    /// `WhitespaceSplit`: split on whitespace only.
    case whitespaceSplit
    case sequence([PreTokenizer])

    /// Replaces `words` by their pieces.
    func split(_ text: UnsafeBufferPointer<Unicode.Scalar>, _ words: inout [Range<Int>]) {
        switch self {
        case .sequence(let steps):
            for step in steps { step.split(text, &words) }
        default:
            var out: [Range<Int>] = []
            out.reserveCapacity(words.count * 2)
            for word in words { splitOne(text, word, into: &out) }
            words = out
        }
    }

    private func splitOne(_ text: UnsafeBufferPointer<Unicode.Scalar>, _ range: Range<Int>, into out: inout [Range<Int>]) {
        let classes = CharacterClasses.shared
        var start = range.lowerBound
        switch self {
        case .bert, .whitespaceSplit:
            let isolatePunctuation = { if case .bert = self { return true } else { return false } }()
            for i in range {
                let c = text[i]
                let f: CharacterClasses.Flags
                if c.value < 0x80 {
                    // ASCII fast path; the tables agree with this.
                    let v = c.value
                    if v == 0x20 || (0x09...0x0D).contains(v) {
                        f = .whitespace
                    } else if (0x21...0x2F).contains(v) || (0x3A...0x40).contains(v) || (0x5B...0x60).contains(v) || (0x7B...0x7E).contains(v) {
                        f = .punctuation
                    } else {
                        f = []
                    }
                } else {
                    f = classes.flags(c)
                }
                if f.contains(.whitespace) {
                    if start < i { out.append(start..<i) }
                    start = i + 1
                } else if isolatePunctuation, f.contains(.punctuation) {
                    if start < i { out.append(start..<i) }
                    out.append(i..<(i + 1))
                    start = i + 1
                }
            }
            if start < range.upperBound { out.append(start..<range.upperBound) }
        case .whitespace:
            // 0: space, 1: word, 2: other.
            var current = 0
            for i in range {
                let kind = PreTokenizer.regexClass(text[i])
                if kind != current {
                    if current != 0, start < i { out.append(start..<i) }
                    start = i
                    current = kind
                }
            }
            if current != 0, start < range.upperBound { out.append(start..<range.upperBound) }
        case .sequence:
            break  // handled in split
        }
    }

    /// Oniguruma's Unicode classes: `\w` is Letter, Mark, Number,
    /// Connector_Punctuation or Join_Control (ZWNJ, ZWJ); `\s` is White_Space.
    private static func regexClass(_ c: Unicode.Scalar) -> Int {
        let v = c.value
        if v < 0x80 {
            if v == 0x20 || (0x09...0x0D).contains(v) { return 0 }
            if (0x30...0x39).contains(v) || (0x41...0x5A).contains(v) || (0x61...0x7A).contains(v) || v == 0x5F { return 1 }
            return 2
        }
        let p = c.properties
        if p.isWhitespace { return 0 }
        if v == 0x200C || v == 0x200D { return 1 }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
             .nonspacingMark, .spacingMark, .enclosingMark,
             .decimalNumber, .letterNumber, .otherNumber, .connectorPunctuation:
            return 1
        default:
            return 2
        }
    }
}
