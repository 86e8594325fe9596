extension Linear {
    /// Copies `count` values into each of `rows` rows of a row-major buffer
    /// with leading dimension `ld`: the bias rows a GEMM with beta = 1 adds onto.
    @inline(__always)
    static func fillRows(_ c: UnsafeMutablePointer<Float>, rows: Int, ld: Int, with values: UnsafePointer<Float>, count: Int) {
        if count == 0 { return }
        for r in 0..<rows { (c + r * ld).update(from: values, count: count) }
    }
}
