/// Reading `tokenizer.json` into the pipeline's components. Every check
/// names the field (dotted path) so a user can find the problem in the file.
extension Tokenizer {
    struct Configuration {
        var normalizer: Normalizer?
        var preTokenizer: PreTokenizer?
        var model: TokenizerModel
        var postProcessor: PostProcessor?
        var addedTokens: [AddedToken]
        var truncation: Truncation?
        var pad: PadSettings
        var tokenById: [Int32: String]

        init(_ json: JSONValue) throws {
            let root = JSONField(json, path: "")
            guard json.members != nil else { throw TokenizerError.invalidField(path: "(document)", reason: "expected an object, found \(json.kind)") }
            normalizer = try Configuration.normalizer(root["normalizer"])
            preTokenizer = try Configuration.preTokenizer(root["pre_tokenizer"])
            var tokenById: [Int32: String] = [:]
            model = try Configuration.model(root["model"], tokenById: &tokenById)
            postProcessor = try Configuration.postProcessor(root["post_processor"])
            addedTokens = try Configuration.addedTokens(root["added_tokens"])
            // The reference looks up added tokens before the model's vocabulary.
            for token in addedTokens { tokenById[token.id] = token.content }
            self.tokenById = tokenById

            let truncation = root["truncation"]
            if truncation.isPresent {
                let maxLength = try truncation["max_length"].int()
                guard maxLength >= 0 else { throw TokenizerError.invalidField(path: "truncation.max_length", reason: "negative") }
                let direction = try truncation["direction"].optionalString() ?? "Right"
                guard direction == "Right" || direction == "Left" else {
                    throw TokenizerError.invalidField(path: "truncation.direction", reason: "expected \"Right\" or \"Left\", found \"\(direction)\"")
                }
                self.truncation = Truncation(maxLength: maxLength, fromLeft: direction == "Left")
            }

            // Padding settings; without a section, "[PAD]" if the vocabulary has it.
            let padding = root["padding"]
            let padToken = try padding["pad_token"].optionalString() ?? "[PAD]"
            let defaultId = tokenById.first(where: { $0.value.unicodeScalars.elementsEqual(padToken.unicodeScalars) })?.key ?? 0
            let padId = try padding["pad_id"].optionalInt() ?? Int(defaultId)
            let padTypeId = try padding["pad_type_id"].optionalInt() ?? 0
            let direction = try padding["direction"].optionalString() ?? "Right"
            guard direction == "Right" || direction == "Left" else {
                throw TokenizerError.invalidField(path: "padding.direction", reason: "expected \"Right\" or \"Left\", found \"\(direction)\"")
            }
            pad = PadSettings(id: try Configuration.id(padId, path: "padding.pad_id"),
                              typeId: try Configuration.id(padTypeId, path: "padding.pad_type_id"),
                              token: padToken, onLeft: direction == "Left")
        }

        static func id(_ value: Int, path: String) throws -> Int32 {
            guard value >= 0, value <= Int(Int32.max) else {
                throw TokenizerError.invalidField(path: path, reason: "id \(value) out of range")
            }
            return Int32(value)
        }

        // MARK: components

        static func normalizer(_ f: JSONField) throws -> Normalizer? {
            guard f.isPresent else { return nil }
            let type = try f["type"].string()
            switch type {
            case "BertNormalizer":
                let lowercase = try f["lowercase"].optionalBool() ?? true
                return .bert(cleanText: try f["clean_text"].optionalBool() ?? true,
                             handleChineseChars: try f["handle_chinese_chars"].optionalBool() ?? true,
                             stripAccents: try f["strip_accents"].optionalBool() ?? lowercase,
                             lowercase: lowercase)
            case "Lowercase": return .lowercase
            case "StripAccents": return .stripAccents
            case "NFD": return .nfd
            case "NFKD": return .nfkd
            case "NFC": return .nfc
            case "NFKC": return .nfkc
            case "Sequence":
                let list = f["normalizers"]
                return .sequence(try list.array().indices.map { try normalizer(list[$0]) ?? .sequence([]) })
            default:
                throw TokenizerError.unsupported(component: "normalizer", type: type)
            }
        }

        static func preTokenizer(_ f: JSONField) throws -> PreTokenizer? {
            guard f.isPresent else { return nil }
            let type = try f["type"].string()
            switch type {
            case "BertPreTokenizer": return .bert
            case "Whitespace": return .whitespace
            case "WhitespaceSplit": return .whitespaceSplit
            case "Sequence":
                let list = f["pretokenizers"]
                return .sequence(try list.array().indices.map { try preTokenizer(list[$0]) ?? .sequence([]) })
            default:
                throw TokenizerError.unsupported(component: "pre_tokenizer", type: type)
            }
        }

        static func model(_ f: JSONField, tokenById: inout [Int32: String]) throws -> TokenizerModel {
            _ = try f.required()
            // Old files may omit "type"; the reference then recognises the model by its fields.
            let type: String
            if let t = try f["type"].optionalString() {
                type = t
            } else if f["merges"].isPresent {
                type = "BPE"
            } else if f["vocab"].value?.array != nil {
                type = "Unigram"
            } else if f["continuing_subword_prefix"].isPresent || f["max_input_chars_per_word"].isPresent {
                type = "WordPiece"
            } else {
                type = "WordLevel"
            }
            switch type {
            case "WordPiece":
                var trie = ScalarTrie()
                let vocab = f["vocab"]
                for (key, value) in try vocab.object() {
                    let path = vocab.path + "." + key
                    guard let raw = value.int else { throw TokenizerError.invalidField(path: path, reason: "expected an integer id, found \(value.kind)") }
                    let id = try id(raw, path: path)
                    trie.insert(key.unicodeScalars, value: id)
                    tokenById[id] = key
                }
                let unk = try f["unk_token"].optionalString() ?? "[UNK]"
                guard let node = trie.walk(unk.unicodeScalars), let unkId = trie.value(node) else {
                    throw TokenizerError.unknownToken(token: unk, path: "model.unk_token")
                }
                let maxChars = try f["max_input_chars_per_word"].optionalInt() ?? 100
                return .wordPiece(WordPiece(vocabulary: trie, unknownId: unkId,
                                            continuingSubwordPrefix: try f["continuing_subword_prefix"].optionalString() ?? "##",
                                            maxInputCharsPerWord: maxChars))
            default:
                throw TokenizerError.unsupported(component: "model", type: type)
            }
        }

        static func postProcessor(_ f: JSONField) throws -> PostProcessor? {
            guard f.isPresent else { return nil }
            let type = try f["type"].string()
            switch type {
            case "TemplateProcessing":
                let single = f["single"]
                let specials = f["special_tokens"]
                var pieces: [PostProcessor.TemplatePiece] = []
                for i in try single.array().indices {
                    let piece = single[i]
                    if piece["SpecialToken"].isPresent {
                        let name = try piece["SpecialToken"]["id"].string()
                        let typeId = try id(try piece["SpecialToken"]["type_id"].optionalInt() ?? 0, path: piece.path + ".SpecialToken.type_id")
                        let entry = specials[name]
                        guard entry.isPresent else { throw TokenizerError.unknownToken(token: name, path: specials.path) }
                        let list = entry["ids"]
                        let ids = try list.array().indices.map { try id(try list[$0].int(), path: list[$0].path) }
                        pieces.append(.special(ids: ids, typeId: typeId))
                    } else if piece["Sequence"].isPresent {
                        let name = try piece["Sequence"]["id"].string()
                        guard name == "A" else {
                            throw TokenizerError.invalidField(path: piece.path + ".Sequence.id", reason: "a single-sequence template can only hold $A, found $\(name)")
                        }
                        let typeId = try id(try piece["Sequence"]["type_id"].optionalInt() ?? 0, path: piece.path + ".Sequence.type_id")
                        pieces.append(.sequence(typeId: typeId))
                    } else {
                        throw TokenizerError.invalidField(path: piece.path, reason: "expected SpecialToken or Sequence")
                    }
                }
                return .template(pieces)
            case "BertProcessing", "RobertaProcessing":
                // Single sequence: cls $A sep, all type 0.
                func special(_ key: String) throws -> Int32 {
                    let pair = f[key]
                    let parts = try pair.array()
                    guard parts.count == 2, parts[0].string != nil, let raw = parts[1].int else {
                        throw TokenizerError.invalidField(path: pair.path, reason: "expected [token, id]")
                    }
                    return try id(raw, path: pair.path)
                }
                let cls = try special("cls"), sep = try special("sep")
                return .template([.special(ids: [cls], typeId: 0), .sequence(typeId: 0), .special(ids: [sep], typeId: 0)])
            case "ByteLevel":
                return .offsetsOnly
            case "Sequence":
                let list = f["processors"]
                return .sequence(try list.array().indices.map { try postProcessor(list[$0]) ?? .sequence([]) })
            default:
                throw TokenizerError.unsupported(component: "post_processor", type: type)
            }
        }

        static func addedTokens(_ f: JSONField) throws -> [AddedToken] {
            guard f.isPresent else { return [] }
            return try f.array().indices.map { i in
                let t = f[i]
                return AddedToken(content: try t["content"].string(),
                                  id: try id(try t["id"].int(), path: t.path + ".id"),
                                  singleWord: try t["single_word"].optionalBool() ?? false,
                                  leftStrip: try t["lstrip"].optionalBool() ?? false,
                                  rightStrip: try t["rstrip"].optionalBool() ?? false,
                                  normalized: try t["normalized"].optionalBool() ?? true,
                                  special: try t["special"].optionalBool() ?? false)
            }
        }
    }
}
