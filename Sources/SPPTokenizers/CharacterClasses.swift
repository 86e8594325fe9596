/// Fast membership tests for the reference's character classes
/// (``CharacterTables``): one flag byte per BMP code point, binary search of
/// the range tables above it.
struct CharacterClasses: Sendable {
    struct Flags: OptionSet, Sendable {
        let rawValue: UInt8
        static let removed = Flags(rawValue: 1)
        static let space = Flags(rawValue: 2)
        static let chinese = Flags(rawValue: 4)
        static let nonspacingMark = Flags(rawValue: 8)
        static let combiningMark = Flags(rawValue: 16)
        static let punctuation = Flags(rawValue: 32)
        static let whitespace = Flags(rawValue: 64)
    }

    static let shared = CharacterClasses()

    private static let tables: [(Flags, [ClosedRange<UInt32>])] = [
        (.removed, CharacterTables.removed), (.space, CharacterTables.space),
        (.chinese, CharacterTables.chinese), (.nonspacingMark, CharacterTables.nonspacingMark),
        (.combiningMark, CharacterTables.combiningMark),
        (.punctuation, CharacterTables.punctuation), (.whitespace, CharacterTables.whitespace),
    ]

    private let bmp: [UInt8]

    private init() {
        var bmp = [UInt8](repeating: 0, count: 0x10000)
        for (flag, ranges) in CharacterClasses.tables {
            for r in ranges where r.lowerBound < 0x10000 {
                for v in r.lowerBound...min(r.upperBound, 0xFFFF) { bmp[Int(v)] |= flag.rawValue }
            }
        }
        self.bmp = bmp
    }

    @inline(__always)
    func flags(_ scalar: Unicode.Scalar) -> Flags {
        let v = scalar.value
        if v < 0x10000 { return Flags(rawValue: bmp[Int(v)]) }
        var result: Flags = []
        for (flag, ranges) in CharacterClasses.tables where CharacterClasses.contains(ranges, v) { result.insert(flag) }
        return result
    }

    private static func contains(_ ranges: [ClosedRange<UInt32>], _ v: UInt32) -> Bool {
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < v { lo = mid + 1 } else { hi = mid }
        }
        return lo < ranges.count && ranges[lo].contains(v)
    }
}
