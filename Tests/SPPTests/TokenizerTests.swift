import Foundation
import SPPCore
import SPPTokenizers
import Testing

/// Where the tokenizer tests find their data: the fixture written by
/// tools/fixtures/make_tokenizer_refs.py, and the tokenizer.json it was made
/// from in ../shared (not copied; tests that need it skip when it is absent).
private enum TokenizerPaths {
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixture = packageRoot.appendingPathComponent("Tests/SPPTests/Fixtures/tokenizer/all-MiniLM-L6-v2.json")
    static let miniLM = packageRoot.deletingLastPathComponent()
        .appendingPathComponent("shared/models/all-MiniLM-L6-v2/tokenizer.json")

    /// The real tokenizer, or nil (with the reason printed) when ../shared is absent.
    static func loadMiniLM(_ test: String) throws -> Tokenizer? {
        guard FileManager.default.fileExists(atPath: miniLM.path) else {
            print("skipping \(test): \(miniLM.path) is absent")
            return nil
        }
        return try Tokenizer(path: miniLM.path)
    }
}

/// The reference ids, as written by the fixture script.
private struct TokenizerFixture: Decodable {
    struct Variant: Decodable {
        var name: String
        var ids: [[Int32]]
    }
    var max_length: Int
    var texts: [String]
    var ids: [[Int32]]
    var tricky_texts: [String]
    var variants: [Variant]

    static func load() throws -> TokenizerFixture {
        try JSONDecoder().decode(TokenizerFixture.self, from: Data(contentsOf: TokenizerPaths.fixture))
    }
}

/// A tiny WordPiece tokenizer.json that needs nothing from ../shared.
private func tinyTokenizerJSON(model: String? = nil, normalizer: String = #"{"type": "BertNormalizer", "lowercase": true}"#,
                               preTokenizer: String = #"{"type": "BertPreTokenizer"}"#, vocab: String? = nil) -> Data {
    let vocab = vocab ?? ###"{"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, "world": 5, "##s": 6, "un": 7, "##aff": 8, "##able": 9, "!": 10}"###
    let model = model ?? ###"{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": \###(vocab)}"###
    let json = """
    {"version": "1.0", "truncation": null, "padding": null,
     "added_tokens": [{"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                      {"id": 3, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
     "normalizer": \(normalizer),
     "pre_tokenizer": \(preTokenizer),
     "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
     "decoder": null,
     "model": \(model)}
    """
    return Data(json.utf8)
}

private func expectError(_ json: Data, _ check: (TokenizerError) -> Bool, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        _ = try Tokenizer(json: json)
        Issue.record("expected a TokenizerError", sourceLocation: sourceLocation)
    } catch let error as TokenizerError {
        #expect(check(error), "unexpected error: \(error)", sourceLocation: sourceLocation)
        #expect(!error.description.isEmpty, sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a TokenizerError, got \(error)", sourceLocation: sourceLocation)
    }
}

@Suite struct TokenizerTests {
    // MARK: reference ids from Hugging Face tokenizers

    @Test func everyReferenceTextGivesTheReferenceIds() throws {
        guard let tokenizer = try TokenizerPaths.loadMiniLM(#function) else { return }
        let fixture = try TokenizerFixture.load()
        #expect(fixture.texts.count == fixture.ids.count)
        #expect(fixture.texts.count >= 500)
        var mismatches: [String] = []
        for (text, expected) in zip(fixture.texts, fixture.ids) {
            let ids = tokenizer.encode(text, maxLength: fixture.max_length).ids
            if ids != expected {
                mismatches.append("\(text.debugDescription.prefix(80)): got \(ids.prefix(40)), expected \(expected.prefix(40))")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(fixture.texts.count) differ:\n\(mismatches.prefix(10).joined(separator: "\n"))")
    }

    @Test func fileTruncationIsTheDefault() throws {
        guard let tokenizer = try TokenizerPaths.loadMiniLM(#function) else { return }
        let fixture = try TokenizerFixture.load()
        #expect(tokenizer.defaultMaxLength == fixture.max_length)
        for (text, expected) in zip(fixture.texts, fixture.ids).prefix(50) {
            #expect(tokenizer.encode(text).ids == expected)
        }
    }

    /// The same tricky texts through other components: each variant replaces
    /// top-level sections of the real tokenizer.json, as the fixture script did.
    @Test func variantsGiveTheReferenceIds() throws {
        guard FileManager.default.fileExists(atPath: TokenizerPaths.miniLM.path) else {
            print("skipping \(#function): \(TokenizerPaths.miniLM.path) is absent")
            return
        }
        let fixtureData = try Data(contentsOf: TokenizerPaths.fixture)
        let fixture = try TokenizerFixture.load()
        let raw = try JSONSerialization.jsonObject(with: fixtureData) as! [String: Any]
        let patches = (raw["variants"] as! [[String: Any]]).map { $0["patch"] as! [String: Any] }
        let base = try JSONSerialization.jsonObject(with: Data(contentsOf: TokenizerPaths.miniLM)) as! [String: Any]
        #expect(patches.count == fixture.variants.count)
        for (variant, patch) in zip(fixture.variants, patches) {
            let config = base.merging(patch) { _, new in new }
            let tokenizer = try Tokenizer(json: JSONSerialization.data(withJSONObject: config))
            var mismatches: [String] = []
            for (text, expected) in zip(fixture.tricky_texts, variant.ids) {
                let ids = tokenizer.encode(text, maxLength: fixture.max_length).ids
                if ids != expected { mismatches.append("\(text.debugDescription.prefix(60)): got \(ids.prefix(30)), expected \(expected.prefix(30))") }
            }
            #expect(mismatches.isEmpty, "variant \(variant.name): \(mismatches.count) differ:\n\(mismatches.prefix(8).joined(separator: "\n"))")
        }
    }

    @Test func tokensAndTypesOfTheRealTokenizer() throws {
        guard let tokenizer = try TokenizerPaths.loadMiniLM(#function) else { return }
        #expect(tokenizer.vocabularySize == 30522)
        #expect(tokenizer.padId == 0)
        let e = tokenizer.encode("Hello, unaffable world!")
        #expect(e.tokens == ["[CLS]", "hello", ",", "una", "##ffa", "##ble", "world", "!", "[SEP]"])
        #expect(e.ids.first == 101 && e.ids.last == 102)
        #expect(e.typeIds == [Int32](repeating: 0, count: e.count))
        #expect(e.attentionMask == [Int32](repeating: 1, count: e.count))
        #expect(tokenizer.encode("").ids == [101, 102])
        #expect(tokenizer.encode("[SEP] typed").tokens == ["[CLS]", "[SEP]", "typed", "[SEP]"])
    }

    // MARK: batches, padding, truncation

    @Test func batchIsPaddedToTheLongestWithMasks() throws {
        guard let tokenizer = try TokenizerPaths.loadMiniLM(#function) else { return }
        let texts = ["hello world", "a rather longer sentence, with punctuation and more words", "", "Café"]
        let singles = texts.map { tokenizer.encode($0) }
        let longest = singles.map(\.count).max()!
        let (ids, mask, types) = tokenizer.encodeBatch(texts)
        for t in [ids, mask, types] {
            #expect(t.dtype == .int64)
            #expect(t.shape == [texts.count, longest])
        }
        let idValues = ids.int64s, maskValues = mask.int64s, typeValues = types.int64s
        for (row, single) in singles.enumerated() {
            let r = row * longest
            #expect(Array(idValues[r..<(r + single.count)]) == single.ids.map(Int64.init))
            #expect(Array(idValues[(r + single.count)..<(r + longest)]).allSatisfy { $0 == 0 })
            #expect(Array(maskValues[r..<(r + longest)]) == (0..<longest).map { $0 < single.count ? 1 : 0 })
            #expect(Array(typeValues[r..<(r + longest)]).allSatisfy { $0 == 0 })
        }

        let fixed = tokenizer.encodeBatch(texts, padding: .fixed(32))
        #expect(fixed.inputIds.shape == [texts.count, 32])
        #expect(fixed.attentionMask.int64s.reduce(0, +) == Int64(singles.map(\.count).reduce(0, +)))
        // A fixed length shorter than the longest encoding never cuts tokens.
        #expect(tokenizer.encodeBatch(texts, padding: .fixed(2)).inputIds.shape == [texts.count, longest])

        let empty = tokenizer.encodeBatch([])
        #expect(empty.inputIds.shape == [0, 0])
    }

    @Test func largeBatchMatchesSingleEncodings() throws {
        guard let tokenizer = try TokenizerPaths.loadMiniLM(#function) else { return }
        let fixture = try TokenizerFixture.load()
        let texts = Array(fixture.texts.prefix(300))
        let (ids, mask, _) = tokenizer.encodeBatch(texts)
        let length = ids.shape[1]
        #expect(length == fixture.ids.prefix(300).map(\.count).max())
        let values = ids.int64s, maskValues = mask.int64s
        for (row, expected) in fixture.ids.prefix(300).enumerated() {
            let r = row * length
            #expect(Array(values[r..<(r + expected.count)]) == expected.map(Int64.init))
            #expect(maskValues[r..<(r + length)].reduce(0, +) == Int64(expected.count))
        }
    }

    @Test func truncationKeepsRoomForSpecialTokens() throws {
        guard let tokenizer = try TokenizerPaths.loadMiniLM(#function) else { return }
        let long = String(repeating: "word ", count: 300)
        #expect(tokenizer.encode(long).count == 128)
        let ten = tokenizer.encode(long, maxLength: 10)
        #expect(ten.count == 10)
        #expect(ten.ids == [101] + [Int32](repeating: 2773, count: 8) + [102])
        #expect(tokenizer.encode(long, maxLength: Int.max).count == 302)
        #expect(tokenizer.encode(long, maxLength: 2).ids == [101, 102])
        #expect(tokenizer.encode(long, maxLength: 0).ids == [101, 102])
        let batch = tokenizer.encodeBatch([long, "short"], maxLength: 16)
        #expect(batch.inputIds.shape == [2, 16])
    }

    // MARK: without ../shared

    @Test func tinyWordPieceGreedyLongestMatch() throws {
        let tokenizer = try Tokenizer(json: tinyTokenizerJSON())
        #expect(tokenizer.vocabularySize == 11)
        let e = tokenizer.encode("Hello worlds, UNAFFABLE!")
        #expect(e.tokens == ["[CLS]", "hello", "world", "##s", "[UNK]", "un", "##aff", "##able", "!", "[SEP]"])
        #expect(e.ids == [2, 4, 5, 6, 1, 7, 8, 9, 10, 3])
        // A word with no full segmentation is one unknown token.
        #expect(tokenizer.encode("helloz").ids == [2, 1, 3])
        #expect(tokenizer.encode(String(repeating: "s", count: 101)).ids == [2, 1, 3])
        #expect(tokenizer.encode("\u{0}\t hello \u{200B}").ids == [2, 4, 3])
        let batch = tokenizer.encodeBatch(["hello", "hello world"])
        #expect(batch.inputIds.int64s == [2, 4, 3, 0, 2, 4, 5, 3])
        #expect(batch.attentionMask.int64s == [1, 1, 1, 0, 1, 1, 1, 1])
    }

    /// "é" and "e\u{301}" are different vocabulary entries (Swift's String
    /// equality would merge them; the reference compares bytes).
    @Test func canonicallyEquivalentVocabularyEntriesStayApart() throws {
        let json = tinyTokenizerJSON(normalizer: "null", vocab: #"{"[UNK]": 0, "[CLS]": 2, "[SEP]": 3, "\u00e9": 4, "e\u0301": 5}"#)
        let tokenizer = try Tokenizer(json: json)
        #expect(tokenizer.encode("\u{E9}").ids == [2, 4, 3])
        #expect(tokenizer.encode("e\u{301}").ids == [2, 5, 3])
    }

    @Test func malformedFilesAreTypedErrors() {
        expectError(Data(#"{"model": "#.utf8)) { if case .malformedJSON = $0 { return true } else { return false } }
        expectError(Data(#"{"model": {}} trailing"#.utf8)) { if case .malformedJSON = $0 { return true } else { return false } }
        expectError(Data([0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D])) { if case .malformedJSON = $0 { return true } else { return false } }
        expectError(Data(String(repeating: "[", count: 10_000).utf8)) { if case .malformedJSON = $0 { return true } else { return false } }
        expectError(Data("[1, 2]".utf8)) { if case .invalidField = $0 { return true } else { return false } }
        expectError(Data(#"{"normalizer": null}"#.utf8)) { $0 == .missingField(path: "model") }
        expectError(tinyTokenizerJSON(model: #"{"type": "WordPiece", "unk_token": "[UNK]"}"#)) { $0 == .missingField(path: "model.vocab") }
        expectError(tinyTokenizerJSON(model: #"{"type": "WordPiece", "vocab": {"a": "one"}}"#)) {
            if case .invalidField(let path, _) = $0 { return path == "model.vocab.a" } else { return false }
        }
        expectError(tinyTokenizerJSON(model: #"{"type": "WordPiece", "unk_token": "<unk>", "vocab": {"a": 0}}"#)) {
            $0 == .unknownToken(token: "<unk>", path: "model.unk_token")
        }
        expectError(tinyTokenizerJSON(normalizer: #"{"type": "BertNormalizer", "lowercase": "yes"}"#)) {
            if case .invalidField(let path, _) = $0 { return path == "normalizer.lowercase" } else { return false }
        }
        let error = TokenizerError.malformedJSON(offset: 12, reason: "unexpected end of data")
        #expect(error.description.contains("12"))
    }

    @Test func unsupportedComponentsAreNamed() {
        expectError(tinyTokenizerJSON(model: #"{"type": "BPE", "vocab": {}, "merges": []}"#)) {
            $0 == .unsupported(component: "model", type: "BPE")
        }
        expectError(tinyTokenizerJSON(model: #"{"type": "Unigram", "vocab": [["a", 0.0]]}"#)) {
            $0 == .unsupported(component: "model", type: "Unigram")
        }
        expectError(tinyTokenizerJSON(normalizer: #"{"type": "Replace", "pattern": {"String": "a"}, "content": "b"}"#)) {
            $0 == .unsupported(component: "normalizer", type: "Replace")
        }
        expectError(tinyTokenizerJSON(preTokenizer: #"{"type": "Metaspace", "replacement": "▁"}"#)) {
            $0 == .unsupported(component: "pre_tokenizer", type: "Metaspace")
        }
        #expect(TokenizerError.unsupported(component: "model", type: "BPE").description.contains("BPE"))
    }
}
