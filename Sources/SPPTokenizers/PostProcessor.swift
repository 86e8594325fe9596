/// A `post_processor` of `tokenizer.json`, for single sequences: wraps the
/// model's ids in special tokens and assigns type ids.
indirect enum PostProcessor: Sendable {
    /// A list of pieces: special tokens (one or more ids each) and the
    /// sequence itself, each with its type id. `TemplateProcessing`, and
    /// `BertProcessing`/`RobertaProcessing` as the template `cls $A sep`.
    case template([TemplatePiece])
    /// `ByteLevel` post-processing only trims offsets: ids are unchanged.
    case offsetsOnly
    case sequence([PostProcessor])

    enum TemplatePiece: Sendable {
        case special(ids: [Int32], typeId: Int32)
        case sequence(typeId: Int32)
    }

    /// How many ids `apply` adds around a sequence.
    var addedTokenCount: Int {
        switch self {
        case .template(let pieces):
            return pieces.reduce(0) { n, piece in
                if case .special(let ids, _) = piece { return n + ids.count }
                return n
            }
        case .offsetsOnly: return 0
        case .sequence(let steps): return steps.reduce(0) { $0 + $1.addedTokenCount }
        }
    }

    /// Wraps `ids` (type ids `typeIds`, one each) in the special tokens.
    func apply(_ ids: inout [Int32], _ typeIds: inout [Int32]) {
        switch self {
        case .template(let pieces):
            var outIds: [Int32] = []
            var outTypes: [Int32] = []
            outIds.reserveCapacity(ids.count + addedTokenCount)
            outTypes.reserveCapacity(ids.count + addedTokenCount)
            for piece in pieces {
                switch piece {
                case let .special(special, typeId):
                    outIds.append(contentsOf: special)
                    outTypes.append(contentsOf: repeatElement(typeId, count: special.count))
                case .sequence(let typeId):
                    outIds.append(contentsOf: ids)
                    outTypes.append(contentsOf: repeatElement(typeId, count: ids.count))
                }
            }
            ids = outIds
            typeIds = outTypes
        case .offsetsOnly:
            break
        case .sequence(let steps):
            for step in steps { step.apply(&ids, &typeIds) }
        }
    }
}
