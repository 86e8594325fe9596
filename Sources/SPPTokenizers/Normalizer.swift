import Foundation

/// A `normalizer` of `tokenizer.json`: rewrites the text, scalar by scalar,
/// before it is split into words. Each case does what the reference's
/// component of the same name does.
indirect enum Normalizer: Sendable {
    /// `BertNormalizer`. `stripAccents` is already resolved (the file's null
    /// means "same as lowercase").
    case bert(cleanText: Bool, handleChineseChars: Bool, stripAccents: Bool, lowercase: Bool)
    case lowercase
    /// Drops combining marks (Mn, Mc, Me); no decomposition of its own
    /// (files put `NFD` before it).
    case stripAccents
    case nfd, nfkd, nfc, nfkc
    case sequence([Normalizer])

    func apply(_ text: inout [Unicode.Scalar]) {
        switch self {
        case let .bert(cleanText, handleChineseChars, stripAccents, lowercase):
            // Same order as the reference: clean, pad CJK, strip accents, lowercase.
            if cleanText || handleChineseChars {
                Normalizer.cleanAndPadChinese(&text, clean: cleanText, chinese: handleChineseChars)
            }
            if stripAccents {
                Normalizer.unicodeForm(&text, .nfd)
                Normalizer.removeMarks(&text, .nonspacingMark)
            }
            if lowercase { Normalizer.lowercase(&text) }
        case .lowercase: Normalizer.lowercase(&text)
        case .stripAccents: Normalizer.removeMarks(&text, .combiningMark)
        case .nfd, .nfkd, .nfc, .nfkc: Normalizer.unicodeForm(&text, self)
        case .sequence(let normalizers):
            for n in normalizers { n.apply(&text) }
        }
    }

    private static func cleanAndPadChinese(_ text: inout [Unicode.Scalar], clean: Bool, chinese: Bool) {
        let classes = CharacterClasses.shared
        let space: Unicode.Scalar = " "
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(text.count + 8)
        for c in text {
            if c.value < 0x80, c.value >= 0x20, c.value != 0x7F { out.append(c); continue }
            let f = classes.flags(c)
            if clean {
                if f.contains(.removed) { continue }
                if f.contains(.space) { out.append(space); continue }
            }
            if chinese, f.contains(.chinese) {
                out.append(space); out.append(c); out.append(space)
                continue
            }
            out.append(c)
        }
        text = out
    }

    /// Drops marks: `BertNormalizer` tests Mn only, the `StripAccents`
    /// normalizer any mark (the reference uses two different predicates).
    private static func removeMarks(_ text: inout [Unicode.Scalar], _ marks: CharacterClasses.Flags) {
        let classes = CharacterClasses.shared
        text.removeAll { $0.value >= 0x300 && classes.flags($0).contains(marks) }
    }

    static func lowercase(_ text: inout [Unicode.Scalar]) {
        guard let firstNonASCII = text.firstIndex(where: { $0.value >= 0x80 }) else {
            for i in text.indices where (0x41...0x5A).contains(text[i].value) {
                text[i] = Unicode.Scalar(UInt8(text[i].value) | 0x20)
            }
            return
        }
        // Per scalar full mappings, without context (no final-sigma rule), as
        // Rust's char::to_lowercase.
        var out = Array(text[..<firstNonASCII])
        out.reserveCapacity(text.count + 4)
        for i in out.indices where (0x41...0x5A).contains(out[i].value) {
            out[i] = Unicode.Scalar(UInt8(out[i].value) | 0x20)
        }
        for c in text[firstNonASCII...] {
            if c.value < 0x80 {
                out.append((0x41...0x5A).contains(c.value) ? Unicode.Scalar(UInt8(c.value) | 0x20) : c)
            } else if c.properties.changesWhenLowercased {
                out.append(contentsOf: c.properties.lowercaseMapping.unicodeScalars)
            } else {
                out.append(c)
            }
        }
        text = out
    }

    /// Unicode normalization forms through Foundation. Text below U+00C0 has
    /// no canonical decomposition and no composition, so it is skipped for
    /// canonical forms.
    private static func unicodeForm(_ text: inout [Unicode.Scalar], _ form: Normalizer) {
        switch form {
        case .nfd, .nfc:
            guard text.contains(where: { $0.value >= 0xC0 }) else { return }
        default:
            guard text.contains(where: { $0.value >= 0xA0 }) else { return }
        }
        var view = String.UnicodeScalarView()
        view.append(contentsOf: text)
        let s = String(view)
        let result: String
        switch form {
        case .nfd: result = s.decomposedStringWithCanonicalMapping
        case .nfkd: result = s.decomposedStringWithCompatibilityMapping
        case .nfc: result = s.precomposedStringWithCanonicalMapping
        default: result = s.precomposedStringWithCompatibilityMapping
        }
        text = Array(result.unicodeScalars)
    }
}
