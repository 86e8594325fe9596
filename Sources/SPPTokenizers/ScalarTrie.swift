/// A trie over Unicode scalars mapping strings to `Int32` values, for
/// longest-prefix lookups (WordPiece's greedy match, added-token matching).
///
/// Keys are compared scalar by scalar, exactly as the reference compares
/// bytes; Swift's `String ==` would treat canonically equivalent spellings
/// as one key.
struct ScalarTrie: Sendable {
    /// The root node.
    static let root: Int32 = 0

    /// Children of the root below U+0080, by scalar: the common first step.
    private var rootASCII = [Int32](repeating: -1, count: 128)
    /// Every other edge, keyed by `node << 21 | scalar`.
    private var edges: [UInt64: Int32] = [:]
    /// The value stored at each node, -1 for none.
    private var values: [Int32] = [-1]

    init() {}

    var nodeCount: Int { values.count }

    /// Stores `value` for `key`, replacing any earlier value (a later
    /// duplicate wins, as when serde fills a map).
    mutating func insert<S: Sequence<Unicode.Scalar>>(_ key: S, value: Int32) {
        var node = ScalarTrie.root
        for c in key {
            if let next = child(node, c) {
                node = next
            } else {
                let next = Int32(values.count)
                values.append(-1)
                if node == ScalarTrie.root, c.value < 128 {
                    rootASCII[Int(c.value)] = next
                } else {
                    edges[UInt64(node) << 21 | UInt64(c.value)] = next
                }
                node = next
            }
        }
        values[Int(node)] = value
    }

    @inline(__always)
    func child(_ node: Int32, _ c: Unicode.Scalar) -> Int32? {
        if node == ScalarTrie.root, c.value < 128 {
            let next = rootASCII[Int(c.value)]
            return next < 0 ? nil : next
        }
        return edges[UInt64(node) << 21 | UInt64(c.value)]
    }

    @inline(__always)
    func value(_ node: Int32) -> Int32? {
        let v = values[Int(node)]
        return v < 0 ? nil : v
    }

    /// The node reached by walking `key` from `node`, if every step exists.
    func walk<S: Sequence<Unicode.Scalar>>(_ key: S, from node: Int32 = ScalarTrie.root) -> Int32? {
        var node = node
        for c in key {
            guard let next = child(node, c) else { return nil }
            node = next
        }
        return node
    }

    /// The longest key that is a prefix of `text[start..<end]`, walking from
    /// `node`: its end index and value.
    @inline(__always)
    func longestMatch(_ text: UnsafeBufferPointer<Unicode.Scalar>, from start: Int, to end: Int,
                      node: Int32 = ScalarTrie.root) -> (end: Int, value: Int32)? {
        var node = node
        var best: (end: Int, value: Int32)? = nil
        var i = start
        while i < end, let next = child(node, text[i]) {
            node = next
            i += 1
            let v = values[Int(next)]
            if v >= 0 { best = (i, v) }
        }
        return best
    }
}
