import SPPCore

/// Multidirectional (NumPy-style) broadcasting of several input shapes.
public struct Broadcast {
    public let outShape: [Int]
    /// For each input, its element stride along each output dimension (0 where broadcast).
    public let strides: [[Int]]

    public init(_ shapes: [[Int]]) throws {
        let rank = shapes.map(\.count).max() ?? 0
        var out = [Int](repeating: 1, count: rank)
        for s in shapes {
            let pad = rank - s.count
            for (i, d) in s.enumerated() {
                let o = out[pad + i]
                if o == d || d == 1 { continue }
                if o == 1 { out[pad + i] = d; continue }
                throw KernelError.shapeMismatch("shapes \(shapes.map(Tensor.describe).joined(separator: " and ")) do not broadcast")
            }
        }
        outShape = out
        strides = shapes.map { s in
            let pad = rank - s.count
            var st = [Int](repeating: 0, count: rank)
            var acc = 1
            for i in stride(from: s.count - 1, through: 0, by: -1) {
                st[pad + i] = s[i] == 1 ? 0 : acc
                acc *= s[i]
            }
            return st
        }
    }

    public var count: Int { outShape.reduce(1, *) }

    /// Calls `body(outOffset, inputOffsets, n, inputSteps)` for each run of the
    /// innermost dimension. Offsets are in elements.
    public func forEachRun(_ body: (Int, [Int], Int, [Int]) -> Void) {
        let total = count
        if total == 0 { return }
        let rank = outShape.count
        if rank == 0 { body(0, strides.map { _ in 0 }, 1, strides.map { _ in 0 }); return }
        let n = outShape[rank - 1]
        let steps = strides.map { $0[rank - 1] }
        var index = [Int](repeating: 0, count: rank)
        var offsets = [Int](repeating: 0, count: strides.count)
        var out = 0
        while out < total {
            body(out, offsets, n, steps)
            out += n
            // Advance the odometer over the outer dimensions.
            var d = rank - 2
            while d >= 0 {
                index[d] += 1
                for k in 0..<offsets.count { offsets[k] += strides[k][d] }
                if index[d] < outShape[d] { break }
                for k in 0..<offsets.count { offsets[k] -= strides[k][d] * outShape[d] }
                index[d] = 0
                d -= 1
            }
        }
    }
}
