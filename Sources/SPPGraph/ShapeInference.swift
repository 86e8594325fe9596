import SPPCore

/// Symbolic type and shape inference over a `Graph`.
///
/// `infer` walks the nodes in order and gives every value a `ValueInfo`: graph
/// inputs as declared, initializers from their tensors, and each node output
/// from the rule for its op (`ShapeInference+Rules.swift`, one exhaustive
/// `switch` over `OpType`, so a new op does not compile until it has a rule).
/// The rules agree with what the runtime kernels do (`Program+Kernels.swift`).
///
/// ## Dimensions
///
/// A `Dim` is `.fixed(n)` or `.symbol(name)`. Inference uses three kinds of symbol:
///
/// - **Declared**: the names on the graph inputs (`batch`, `seq`), taken as
///   opaque atoms.
/// - **Derived**: a polynomial with integer coefficients over other symbols,
///   written canonically, e.g. `batch*seq`, `seq+1`, `2*seq`, `past+seq`,
///   `seq-1`. Equal polynomials print to equal strings, so "same name, same
///   size" still holds. In a derived name, an atom that is not made only of
///   letters, digits, `_`, `.`, `:` and `?` (or starts with a digit) is put in
///   parentheses: `(seq-len)+1`. `evaluate(_:bindings:)` computes one.
/// - **Unknown**: `?1`, `?2`, … — a dimension inference cannot express (a
///   data-dependent size, two different symbols broadcast together). Each is
///   fresh, unique within one `infer` call, and matches nothing but itself.
///
/// Symbols are assumed to be sizes (≥ 0). Where a size depends on a runtime
/// comparison inference cannot decide, the usual export patterns are assumed
/// valid rather than widened to unknown: a `Slice` whose end is a symbolic
/// value stays within the dimension (`position_ids[:, :seq]` on a 512-long
/// buffer is `seq` long), and `Range(start, limit, 1)` has `limit - start` elements.
/// Otherwise inference stays on the safe side: a fixed end on a symbolic
/// dimension (`x[:, :5]`) gives an unknown size, and `Squeeze` without axes
/// of a shape holding symbols (any of which might be 1) an unknown rank.
///
/// ## Values of small shape tensors
///
/// Integer (and integral floating-point) tensors of rank ≤ 1 with at most
/// `maxTrackedElements` elements also carry their *values* as dimensions:
/// `Shape(x)` of a `[batch, seq, 384]` input is the vector `[batch, seq, 384]`,
/// `Gather` of it at 0 is `batch`, and `Unsqueeze`, `Concat`, `Slice`, `Squeeze`,
/// `Reshape`, `Cast`, `Identity`, `Add`/`Sub`/`Mul`/`Div` (exact division only
/// when symbolic), `Equal`/`Where` and the reductions carry them on. So a
/// `Reshape` whose shape input is built from the input's own shape gets
/// symbolic dims, as do `Expand`, `ConstantOfShape`, `Range`, `Slice` and `Tile`.
///
/// ## Errors
///
/// Only mismatches that are certain throw: fixed sizes that differ where they
/// must agree (MatMul inner dims, broadcasting, Concat), ranks that cannot be,
/// out-of-range axes and indices, element counts a Reshape cannot keep. They
/// are `GraphError.shapeMismatch` (or `.badAttribute`, `.wrongInputCount`,
/// `.undefinedValue`) naming the node and op.
public enum ShapeInference {
    /// Largest number of elements whose values are tracked (shape vectors are far smaller).
    public static let maxTrackedElements = 256

    /// Type and shape of every value in `graph`: graph inputs (as declared),
    /// initializers, and every node output, by value name. `shape == nil` when
    /// the rank cannot be inferred; `dtype == nil` when the type cannot.
    public static func infer(_ graph: Graph) throws -> [String: ValueInfo] {
        try analyze(graph).infos
    }

    /// What inference found: every value's type and shape, and the values of
    /// the small integer tensors it tracks (shape vectors), as dims.
    public struct Analysis: Sendable {
        public var infos: [String: ValueInfo]
        /// Elements of tracked rank ≤ 1 tensors, row-major: `Shape(x)` of a
        /// `[batch, seq, 384]` input is `[batch, seq, 384]`.
        public var values: [String: [Dim]]
    }

    public static func analyze(_ graph: Graph) throws -> Analysis {
        let state = try walk(graph)
        var analysis = Analysis(infos: [:], values: [:])
        for (name, f) in state.facts {
            analysis.infos[name] = ValueInfo(name: name, dtype: f.dtype, shape: f.shape?.map(\.dim))
            if let v = f.values { analysis.values[name] = v.map(\.dim) }
        }
        return analysis
    }

    private static func walk(_ graph: Graph) throws -> State {
        var state = State()
        for (name, tensor) in graph.initializers { state.facts[name] = Facts(constant: tensor) }
        // A graph input shadows an initializer of the same name (it may be fed at run time).
        for input in graph.inputs {
            // A negative declared size (some exporters write -1 for "unknown") becomes a fresh unknown.
            let shape = input.shape?.map { d in (d.fixedValue ?? 0) < 0 ? state.fresh() : Expr(d) }
            state.facts[input.name] = Facts(dtype: input.dtype, shape: shape)
        }
        for node in graph.nodes {
            let results = try state.outputs(of: node)
            for (i, name) in node.outputs.enumerated() where !name.isEmpty {
                state.facts[name] = i < results.count ? results[i] : Facts()
            }
        }
        return state
    }

    /// The size of `dim` once its symbols are bound (`["batch": 2, "seq": 7]`),
    /// including derived symbols such as `batch*seq` or `seq+1`; nil when a
    /// symbol is unbound or the arithmetic overflows.
    public static func evaluate(_ dim: Dim, bindings: [String: Int]) -> Int? {
        switch dim {
        case let .fixed(n): return n
        case let .symbol(s):
            if let v = bindings[s] { return v }
            return Expr.parse(s)?.evaluate(bindings)
        }
    }
}

// MARK: - Symbolic dimensions

extension ShapeInference {
    /// A dimension (or the value of a shape-tensor element) as a polynomial with
    /// integer coefficients over named atoms. Arithmetic returns nil on overflow,
    /// which callers turn into an unknown dimension.
    struct Expr: Hashable, Sendable, CustomStringConvertible {
        /// Monomial (atom names sorted, repeated for powers) → coefficient; never a zero coefficient.
        private(set) var terms: [[String]: Int]

        private init(terms: [[String]: Int]) { self.terms = terms }

        init(_ n: Int) { terms = n == 0 ? [:] : [[]: n] }

        init(atom: String) { terms = [[atom]: 1] }

        init(_ dim: Dim) {
            switch dim {
            case let .fixed(n): self.init(n)
            case let .symbol(s): self.init(atom: s)
            }
        }

        /// The value when the polynomial is a constant.
        var fixed: Int? {
            if terms.isEmpty { return 0 }
            return terms.count == 1 ? terms[[]] : nil
        }

        /// True when no coefficient is negative, so the value is ≥ 0 (atoms are sizes).
        var isNonNegative: Bool { terms.values.allSatisfy { $0 >= 0 } }

        var dim: Dim {
            if let n = fixed { return .fixed(n) }
            return .symbol(description)
        }

        static func + (a: Expr, b: Expr) -> Expr? {
            var t = a.terms
            for (m, c) in b.terms {
                let (s, overflow) = (t[m] ?? 0).addingReportingOverflow(c)
                if overflow { return nil }
                t[m] = s == 0 ? nil : s
            }
            return Expr(terms: t)
        }

        static prefix func - (a: Expr) -> Expr? {
            var t: [[String]: Int] = [:]
            for (m, c) in a.terms {
                let (n, overflow) = (0).subtractingReportingOverflow(c)
                if overflow { return nil }
                t[m] = n
            }
            return Expr(terms: t)
        }

        static func - (a: Expr, b: Expr) -> Expr? { (-b).flatMap { a + $0 } }

        static func * (a: Expr, b: Expr) -> Expr? {
            var t: [[String]: Int] = [:]
            for (ma, ca) in a.terms {
                for (mb, cb) in b.terms {
                    let (p, o1) = ca.multipliedReportingOverflow(by: cb)
                    let m = (ma + mb).sorted()
                    let (s, o2) = (t[m] ?? 0).addingReportingOverflow(p)
                    if o1 || o2 { return nil }
                    t[m] = s == 0 ? nil : s
                }
            }
            return Expr(terms: t)
        }

        /// Product of a list (1 for an empty list).
        static func product<S: Sequence>(_ xs: S) -> Expr? where S.Element == Expr {
            var acc = Expr(1)
            for x in xs { guard let p = acc * x else { return nil }; acc = p }
            return acc
        }

        /// Sum of a list (0 for an empty list).
        static func sum<S: Sequence>(_ xs: S) -> Expr? where S.Element == Expr {
            var acc = Expr(0)
            for x in xs { guard let s = acc + x else { return nil }; acc = s }
            return acc
        }

        /// `self / d` when it is exact for every value of the atoms: `d` is one
        /// term dividing every term (`384*batch*seq / (12*batch*seq) = 32`), or
        /// equal to `self`. Nil otherwise.
        func dividedExactly(by d: Expr) -> Expr? {
            if d == self && !terms.isEmpty { return Expr(1) }
            guard d.terms.count == 1, let (dm, dc) = d.terms.first else { return nil }
            var t: [[String]: Int] = [:]
            for (m, c) in terms {
                let (q, overflow) = c.dividedReportingOverflow(by: dc)
                guard !overflow, c % dc == 0, let rest = Self.remove(dm, from: m) else { return nil }
                t[rest] = q
            }
            return Expr(terms: t)
        }

        /// `m` without the atoms of `sub` (both sorted multisets), or nil when `sub` is not inside `m`.
        private static func remove(_ sub: [String], from m: [String]) -> [String]? {
            var out: [String] = []
            var j = 0
            for atom in m {
                if j < sub.count && sub[j] == atom { j += 1 } else { out.append(atom) }
            }
            return j == sub.count ? out : nil
        }

        /// Canonical text: higher-degree terms first, then by atom names, the constant last.
        var description: String {
            if terms.isEmpty { return "0" }
            if terms.count == 1, let (m, c) = terms.first, c == 1, m.count == 1 { return m[0] }
            let ordered = terms.sorted { a, b in
                a.key.count != b.key.count ? a.key.count > b.key.count : a.key.lexicographicallyPrecedes(b.key)
            }
            var s = ""
            for (i, term) in ordered.enumerated() {
                let (m, c) = (term.key, term.value)
                if c < 0 { s += "-" } else if i > 0 { s += "+" }
                let factors = m.map(Self.quoted)
                if m.isEmpty {
                    s += String(c.magnitude)
                } else if c.magnitude == 1 {
                    s += factors.joined(separator: "*")
                } else {
                    s += String(c.magnitude) + "*" + factors.joined(separator: "*")
                }
            }
            return s
        }

        private static func isPlain(_ atom: String) -> Bool {
            guard let first = atom.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
            return atom.unicodeScalars.allSatisfy { c in
                ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c) || "_.:?".unicodeScalars.contains(c)
            }
        }

        private static func quoted(_ atom: String) -> String { isPlain(atom) ? atom : "(" + atom + ")" }

        /// Reads the canonical text back (`2*batch*seq+(seq-len)-1`); nil when it is not one.
        static func parse(_ text: String) -> Expr? {
            var result = Expr(0)
            var term = Expr(1)
            var negative = false
            var factor = ""
            var quotedAtom: String? = nil
            var depth = 0
            var sawAnything = false

            func endFactor() -> Bool {
                let f: Expr
                if let q = quotedAtom {
                    guard factor.isEmpty else { return false }
                    f = Expr(atom: q)
                } else if factor.isEmpty {
                    return false
                } else if factor.unicodeScalars.allSatisfy({ ("0"..."9").contains($0) }) {
                    guard let n = Int(factor) else { return false }
                    f = Expr(n)
                } else {
                    guard isPlain(factor) else { return false }
                    f = Expr(atom: factor)
                }
                guard let p = term * f else { return false }
                term = p
                factor = ""
                quotedAtom = nil
                return true
            }
            func endTerm() -> Bool {
                guard endFactor(), let signed = negative ? -term : term, let s = result + signed else { return false }
                result = s
                term = Expr(1)
                return true
            }

            var inner = ""
            for ch in text {
                if depth > 0 {
                    if ch == "(" { depth += 1 }
                    if ch == ")" {
                        depth -= 1
                        if depth == 0 { quotedAtom = inner; inner = ""; continue }
                    }
                    inner.append(ch)
                    continue
                }
                switch ch {
                case "(":
                    guard factor.isEmpty, quotedAtom == nil else { return nil }
                    depth = 1
                case "*":
                    guard endFactor() else { return nil }
                case "+", "-":
                    if !sawAnything && ch == "-" {
                        negative = true
                    } else {
                        guard endTerm() else { return nil }
                        negative = ch == "-"
                    }
                default:
                    guard quotedAtom == nil else { return nil }
                    factor.append(ch)
                }
                sawAnything = true
            }
            guard depth == 0, endTerm() else { return nil }
            return result
        }

        /// The value with atoms bound; nil when one is unbound or on overflow.
        func evaluate(_ bindings: [String: Int]) -> Int? {
            var total = 0
            for (m, c) in terms {
                var p = c
                for atom in m {
                    guard let v = bindings[atom] else { return nil }
                    let (q, overflow) = p.multipliedReportingOverflow(by: v)
                    if overflow { return nil }
                    p = q
                }
                let (s, overflow) = total.addingReportingOverflow(p)
                if overflow { return nil }
                total = s
            }
            return total
        }
    }

    /// What inference knows about one value.
    struct Facts {
        var dtype: DType?
        var shape: [Expr]?
        /// Elements of a small rank ≤ 1 tensor with integral values, row-major.
        /// When set, `shape` is fixed and holds exactly `values.count` elements.
        var values: [Expr]?

        init(dtype: DType? = nil, shape: [Expr]? = nil, values: [Expr]? = nil) {
            self.dtype = dtype
            self.shape = shape
            self.values = values
        }

        /// A constant tensor; its values are kept when it is a small integral vector or scalar.
        init(constant t: Tensor) {
            dtype = t.dtype
            shape = t.shape.map { Expr($0) }
            guard t.rank <= 1, t.count <= ShapeInference.maxTrackedElements else { return }
            switch t.dtype {
            case .bool:
                values = t.buffer(as: UInt8.self).map { Expr($0 == 0 ? 0 : 1) }
            case .float32:
                values = Self.integral(t.buffer(as: Float.self).map(Double.init))
            case .float64:
                values = Self.integral(Array(t.buffer(as: Double.self)))
            case .float16, .bfloat16:
                return
            case .uint8, .int8, .uint16, .int16, .int32, .int64, .uint32, .uint64:
                values = t.integers?.map { Expr($0) }
            }
        }

        private static func integral(_ xs: [Double]) -> [Expr]? {
            var out: [Expr] = []
            for x in xs {
                guard x.rounded() == x, Swift.abs(x) < 9.0e15 else { return nil }
                out.append(Expr(Int(x)))
            }
            return out
        }

        /// The values when every one is a known integer.
        var fixedValues: [Int]? {
            guard let values else { return nil }
            var out: [Int] = []
            for v in values { guard let n = v.fixed else { return nil }; out.append(n) }
            return out
        }
    }

    /// The facts of every value seen so far, and the counter for fresh unknown dimensions.
    struct State {
        var facts: [String: Facts] = [:]
        var freshCount = 0

        /// A new unknown dimension `?n`, equal to no other.
        mutating func fresh() -> Expr {
            freshCount += 1
            return Expr(atom: "?\(freshCount)")
        }

        mutating func fresh(_ n: Int) -> [Expr] { (0..<n).map { _ in fresh() } }
    }
}
