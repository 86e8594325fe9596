import Dispatch
import Foundation
import SPPCore

/// Text in, model input ids out: a Hugging Face `tokenizer.json`, applied
/// exactly as the reference `tokenizers` library applies it.
///
/// The pipeline is the reference's: added tokens are found in the raw text,
/// the rest is normalized, split into words, and each word is tokenized by
/// the model; then the ids are truncated and wrapped in special tokens.
///
/// Supported components: model `WordPiece`; normalizers `BertNormalizer`,
/// `Lowercase`, `StripAccents`, `NFD`, `NFKD`, `NFC`, `NFKC`, `Sequence`;
/// pre-tokenizers `BertPreTokenizer`, `Whitespace`, `WhitespaceSplit`,
/// `Sequence`; post-processors `TemplateProcessing`, `BertProcessing`,
/// `RobertaProcessing`, `ByteLevel` (no effect on ids), `Sequence`. Anything
/// else fails to load with ``TokenizerError/unsupported(component:type:)``.
///
/// Immutable once built, so one tokenizer can serve many threads.
public final class Tokenizer: Sendable {
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let model: TokenizerModel
    let postProcessor: PostProcessor?
    /// Added tokens matched in the raw text, and those matched after normalization.
    let rawAddedTokens: AddedTokenMatcher?
    let normalizedAddedTokens: AddedTokenMatcher?
    let truncation: Truncation?
    let pad: PadSettings
    let tokenById: [Int32: String]

    struct Truncation: Sendable {
        var maxLength: Int
        var fromLeft: Bool
    }

    struct PadSettings: Sendable {
        var id: Int32
        var typeId: Int32
        var token: String
        var onLeft: Bool
    }

    /// Loads a `tokenizer.json` file.
    /// - Throws: ``TokenizerError`` if the file cannot be read, is not valid
    ///   JSON, or describes a component this library does not implement.
    public convenience init(path: String) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw TokenizerError.unreadableFile(path: path, reason: error.localizedDescription)
        }
        try self.init(json: data)
    }

    /// Builds a tokenizer from the contents of a `tokenizer.json`.
    /// - Throws: ``TokenizerError`` if the bytes are not valid JSON or describe
    ///   a component this library does not implement.
    public convenience init(json: Data) throws {
        let value = try JSONParser.parse([UInt8](json))
        try self.init(configuration: try Configuration(value))
    }

    init(configuration c: Configuration) throws {
        normalizer = c.normalizer
        preTokenizer = c.preTokenizer
        model = c.model
        postProcessor = c.postProcessor
        rawAddedTokens = AddedTokenMatcher(c.addedTokens.filter { !$0.normalized }, normalizer: nil)
        normalizedAddedTokens = AddedTokenMatcher(c.addedTokens.filter { $0.normalized }, normalizer: c.normalizer)
        truncation = c.truncation
        pad = c.pad
        tokenById = c.tokenById
    }

    /// Number of distinct token ids: the model's vocabulary plus added tokens
    /// outside it (30522 for BERT-base uncased).
    public var vocabularySize: Int { tokenById.count }

    /// The truncation length the file asks for (its `truncation.max_length`),
    /// used when `maxLength` is not given; nil if the file does not truncate.
    public var defaultMaxLength: Int? { truncation?.maxLength }

    /// The id used for padding: the file's `padding.pad_id`, else the id of
    /// "[PAD]", else 0.
    public var padId: Int32 { pad.id }

    /// The token text of `id`, nil for an id outside the vocabulary.
    public func token(forId id: Int32) -> String? { tokenById[id] }

    /// Encodes one text, special tokens included, without padding.
    /// - Parameters:
    ///   - text: Any text; nothing in it is an error (control characters are
    ///     dropped or kept exactly as the reference does).
    ///   - maxLength: Total length in tokens, special tokens included; longer
    ///     encodings are cut (from the end, or the start if the file says
    ///     `"direction": "Left"`). Nil means the file's truncation setting
    ///     (128 for all-MiniLM-L6-v2), or none if it has none; pass `Int.max`
    ///     to never truncate. A length below the number of special tokens
    ///     keeps only the special tokens.
    public func encode(_ text: String, maxLength: Int? = nil) -> Encoding {
        let (ids, typeIds) = encodeIds(text, maxLength: maxLength)
        let unknown = "[UNK]"
        return Encoding(ids: ids, typeIds: typeIds,
                        attentionMask: [Int32](repeating: 1, count: ids.count),
                        tokens: ids.map { tokenById[$0] ?? unknown })
    }

    /// Encodes texts into padded int64 tensors of shape `[texts.count, length]`,
    /// ready for a BERT-style model. Padding uses the file's pad id and pad
    /// type id (or "[PAD]" and 0), on the side the file names (right by default).
    /// - Parameters:
    ///   - maxLength: As for ``encode(_:maxLength:)``, per text.
    ///   - padding: To the longest encoding (the default) or to a fixed length.
    /// - Returns: Token ids, attention mask (1 for tokens, 0 for padding) and
    ///   token type ids. An empty batch gives tensors of shape `[0, 0]`.
    public func encodeBatch(_ texts: [String], maxLength: Int? = nil, padding: Padding = .longest)
        -> (inputIds: Tensor, attentionMask: Tensor, tokenTypeIds: Tensor) {
        let encoded = encodeAll(texts, maxLength: maxLength)
        var length = encoded.reduce(0) { max($0, $1.ids.count) }
        if case .fixed(let n) = padding { length = max(length, n) }
        let batch = texts.count
        let ids = Tensor(dtype: .int64, shape: [batch, length])
        let mask = Tensor(dtype: .int64, shape: [batch, length])
        let types = Tensor(dtype: .int64, shape: [batch, length])
        let pIds = ids.pointer(as: Int64.self), pMask = mask.pointer(as: Int64.self), pTypes = types.pointer(as: Int64.self)
        for (row, e) in encoded.enumerated() {
            let base = row * length
            let offset = pad.onLeft ? length - e.ids.count : 0
            for j in 0..<length {
                pIds[base + j] = Int64(pad.id)
                pMask[base + j] = 0
                pTypes[base + j] = Int64(pad.typeId)
            }
            for (j, id) in e.ids.enumerated() {
                pIds[base + offset + j] = Int64(id)
                pMask[base + offset + j] = 1
                pTypes[base + offset + j] = Int64(e.typeIds[j])
            }
        }
        return (ids, mask, types)
    }

    /// Encodes every text, in parallel for large batches (texts are independent).
    private func encodeAll(_ texts: [String], maxLength: Int?) -> [(ids: [Int32], typeIds: [Int32])] {
        let chunk = 64
        guard texts.count > chunk else { return texts.map { encodeIds($0, maxLength: maxLength) } }
        var results = [(ids: [Int32], typeIds: [Int32])](repeating: ([], []), count: texts.count)
        results.withUnsafeMutableBufferPointer { out in
            let base = out.baseAddress!
            DispatchQueue.concurrentPerform(iterations: (texts.count + chunk - 1) / chunk) { c in
                for i in (c * chunk)..<min(texts.count, (c + 1) * chunk) {
                    (base + i).pointee = encodeIds(texts[i], maxLength: maxLength)
                }
            }
        }
        return results
    }

    /// The whole pipeline for one text: ids and type ids, special tokens included.
    func encodeIds(_ text: String, maxLength: Int?) -> (ids: [Int32], typeIds: [Int32]) {
        var ids: [Int32] = []
        var raw = Array(text.unicodeScalars)
        ids.reserveCapacity(raw.count / 3 + 4)
        raw.withUnsafeBufferPointer { rawText in
            var pieces: [AddedTokenMatcher.Piece] = []
            if let rawAddedTokens {
                rawAddedTokens.split(rawText, 0..<rawText.count, into: &pieces)
            } else {
                pieces.append(.init(range: 0..<rawText.count, id: nil))
            }
            for piece in pieces {
                if let id = piece.id {
                    ids.append(id)
                    continue
                }
                var normalized = Array(rawText[piece.range])
                normalizer?.apply(&normalized)
                normalized.withUnsafeBufferPointer { text in
                    guard let normalizedAddedTokens else {
                        tokenizeWords(text, 0..<text.count, into: &ids)
                        return
                    }
                    var subpieces: [AddedTokenMatcher.Piece] = []
                    normalizedAddedTokens.split(text, 0..<text.count, into: &subpieces)
                    for sub in subpieces {
                        if let id = sub.id { ids.append(id) } else { tokenizeWords(text, sub.range, into: &ids) }
                    }
                }
            }
        }
        raw = []

        let special = postProcessor?.addedTokenCount ?? 0
        if let limit = maxLength ?? truncation?.maxLength {
            let content = max(0, limit - special)
            if ids.count > content {
                if truncation?.fromLeft == true {
                    ids.removeFirst(ids.count - content)
                } else {
                    ids.removeLast(ids.count - content)
                }
            }
        }
        var typeIds = [Int32](repeating: 0, count: ids.count)
        postProcessor?.apply(&ids, &typeIds)
        return (ids, typeIds)
    }

    /// Pre-tokenizes `text[range]` and appends the model's ids for each word.
    private func tokenizeWords(_ text: UnsafeBufferPointer<Unicode.Scalar>, _ range: Range<Int>, into ids: inout [Int32]) {
        guard !range.isEmpty else { return }
        guard let preTokenizer else {
            model.tokenize(text, range, into: &ids)
            return
        }
        var words = [range]
        preTokenizer.split(text, &words)
        for word in words { model.tokenize(text, word, into: &ids) }
    }
}
