import SPPCore

/// Ops that only move elements: they work on any dtype by element size.
public enum DataMovement {
    static func stridesOf(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) { s[i] = acc; acc *= shape[i] }
        return s
    }

    public static func transpose(_ x: Tensor, perm: [Int]) throws -> Tensor {
        guard perm.count == x.rank, Set(perm) == Set(0..<x.rank) else {
            throw KernelError.invalidArgument("perm \(perm) is not a permutation of the \(x.rank) axes")
        }
        let outShape = perm.map { x.shape[$0] }
        let out = Tensor(dtype: x.dtype, shape: outShape)
        if x.count == 0 { return out }
        let inStrides = stridesOf(x.shape)
        // Input stride along each output axis; the copy walks the output in order.
        let permuted = perm.map { inStrides[$0] }
        let size = x.dtype.size
        let bc = StridedWalk(shape: outShape, strides: permuted)
        let src = x.rawPointer, dst = out.rawPointer
        switch size {
        case 4:
            let s = src.assumingMemoryBound(to: UInt32.self), d = dst.assumingMemoryBound(to: UInt32.self)
            bc.forEachRun { o, i, n, step in for k in 0..<n { d[o + k] = s[i + k * step] } }
        case 8:
            let s = src.assumingMemoryBound(to: UInt64.self), d = dst.assumingMemoryBound(to: UInt64.self)
            bc.forEachRun { o, i, n, step in for k in 0..<n { d[o + k] = s[i + k * step] } }
        default:
            bc.forEachRun { o, i, n, step in
                for k in 0..<n { (dst + (o + k) * size).copyMemory(from: src + (i + k * step) * size, byteCount: size) }
            }
        }
        return out
    }

    public static func concat(_ xs: [Tensor], axis: Int) throws -> Tensor {
        guard let first = xs.first else { throw KernelError.invalidArgument("Concat needs at least one input") }
        let a = try Normalization.normalizeAxis(axis, rank: first.rank)
        var outShape = first.shape
        outShape[a] = 0
        for x in xs {
            guard x.dtype == first.dtype, x.rank == first.rank,
                  x.shape.enumerated().allSatisfy({ $0.offset == a || $0.element == first.shape[$0.offset] }) else {
                throw KernelError.shapeMismatch("Concat inputs \(xs.map { Tensor.describe($0.shape) }.joined(separator: ", ")) differ outside axis \(a)")
            }
            outShape[a] += x.shape[a]
        }
        let out = Tensor(dtype: first.dtype, shape: outShape)
        let outer = outShape[..<a].reduce(1, *)
        let size = first.dtype.size
        let outRow = outShape[a...].reduce(1, *) * size
        var offset = 0
        for x in xs {
            let row = x.shape[a...].reduce(1, *) * size
            for o in 0..<outer {
                (out.rawPointer + o * outRow + offset).copyMemory(from: x.rawPointer + o * row, byteCount: row)
            }
            offset += row
        }
        return out
    }

    public static func split(_ x: Tensor, axis: Int, sizes: [Int]) throws -> [Tensor] {
        let a = try Normalization.normalizeAxis(axis, rank: x.rank)
        guard sizes.allSatisfy({ $0 >= 0 }), sizes.reduce(0, +) == x.shape[a] else {
            throw KernelError.invalidArgument("Split sizes \(sizes) do not add up to dimension \(x.shape[a]) of \(Tensor.describe(x.shape))")
        }
        let outer = x.shape[..<a].reduce(1, *)
        let inner = x.shape[(a + 1)...].reduce(1, *) * x.dtype.size
        var start = 0
        return sizes.map { n in
            var shape = x.shape
            shape[a] = n
            let out = Tensor(dtype: x.dtype, shape: shape)
            for o in 0..<outer {
                (out.rawPointer + o * n * inner).copyMemory(from: x.rawPointer + (o * x.shape[a] + start) * inner, byteCount: n * inner)
            }
            start += n
            return out
        }
    }

    /// ONNX Slice with clamped starts/ends and any non-zero steps.
    public static func slice(_ x: Tensor, starts: [Int], ends: [Int], axes: [Int], steps: [Int]) throws -> Tensor {
        guard starts.count == ends.count, axes.count == starts.count, steps.count == starts.count else {
            throw KernelError.invalidArgument("Slice starts, ends, axes and steps differ in length")
        }
        var begin = [Int](repeating: 0, count: x.rank)
        var step = [Int](repeating: 1, count: x.rank)
        var outShape = x.shape
        for i in 0..<axes.count {
            let a = try Normalization.normalizeAxis(axes[i], rank: x.rank)
            let d = x.shape[a], s = steps[i]
            guard s != 0 else { throw KernelError.invalidArgument("Slice step is 0 on axis \(a)") }
            var lo = starts[i] < 0 ? starts[i] + d : starts[i]
            var hi = ends[i] < 0 ? ends[i] + d : ends[i]
            if s > 0 {
                lo = min(max(lo, 0), d); hi = min(max(hi, 0), d)
                outShape[a] = max(0, (hi - lo + s - 1) / s)
            } else {
                lo = min(max(lo, -1), d - 1); hi = min(max(hi, -1), d - 1)
                outShape[a] = max(0, (lo - hi + (-s) - 1) / (-s))
            }
            begin[a] = lo
            step[a] = s
        }
        let out = Tensor(dtype: x.dtype, shape: outShape)
        if out.count == 0 { return out }
        let inStrides = stridesOf(x.shape)
        let base = zip(begin, inStrides).reduce(0) { $0 + $1.0 * $1.1 }
        let walk = StridedWalk(shape: outShape, strides: zip(step, inStrides).map { $0 * $1 })
        let size = x.dtype.size
        walk.forEachRun { o, i, n, st in
            if st == 1 {
                (out.rawPointer + o * size).copyMemory(from: x.rawPointer + (base + i) * size, byteCount: n * size)
            } else {
                for k in 0..<n { (out.rawPointer + (o + k) * size).copyMemory(from: x.rawPointer + (base + i + k * st) * size, byteCount: size) }
            }
        }
        return out
    }

    /// ONNX Gather along `axis`; negative indices count from the end.
    public static func gather(_ x: Tensor, indices: Tensor, axis: Int) throws -> Tensor {
        let a = try Normalization.normalizeAxis(axis, rank: x.rank)
        guard let idx = indices.integers else { throw KernelError.unsupportedDType(indices.dtype, reason: "Gather indices must be integers") }
        let d = x.shape[a]
        let outShape = Array(x.shape[..<a]) + indices.shape + Array(x.shape[(a + 1)...])
        let out = Tensor(dtype: x.dtype, shape: outShape)
        let outer = x.shape[..<a].reduce(1, *)
        let inner = x.shape[(a + 1)...].reduce(1, *) * x.dtype.size
        for o in 0..<outer {
            for (k, raw) in idx.enumerated() {
                let j = raw < 0 ? raw + d : raw
                guard j >= 0, j < d else { throw KernelError.invalidArgument("Gather index \(raw) is out of range for dimension \(d)") }
                (out.rawPointer + (o * idx.count + k) * inner).copyMemory(from: x.rawPointer + (o * d + j) * inner, byteCount: inner)
            }
        }
        return out
    }

    /// Broadcasts `x` to `shape` (ONNX Expand: the result shape is the broadcast of both).
    public static func expand(_ x: Tensor, to shape: [Int]) throws -> Tensor {
        let bc = try Broadcast([x.shape, shape])
        let out = Tensor(dtype: x.dtype, shape: bc.outShape)
        let size = x.dtype.size
        bc.forEachRun { start, offs, n, steps in
            if steps[0] == 0 {
                for k in 0..<n { (out.rawPointer + (start + k) * size).copyMemory(from: x.rawPointer + offs[0] * size, byteCount: size) }
            } else {
                (out.rawPointer + start * size).copyMemory(from: x.rawPointer + offs[0] * size, byteCount: n * size)
            }
        }
        return out
    }

    public static func tile(_ x: Tensor, repeats: [Int]) throws -> Tensor {
        guard repeats.count == x.rank, repeats.allSatisfy({ $0 >= 0 }) else {
            throw KernelError.invalidArgument("Tile repeats \(repeats) do not match rank \(x.rank)")
        }
        let outShape = zip(x.shape, repeats).map { $0 * $1 }
        let out = Tensor(dtype: x.dtype, shape: outShape)
        if out.count == 0 { return out }
        let inStrides = stridesOf(x.shape), outStrides = stridesOf(outShape)
        let size = x.dtype.size
        for o in 0..<out.count {
            var rem = o, src = 0
            for d in 0..<x.rank { let i = rem / outStrides[d]; rem %= outStrides[d]; src += (i % x.shape[d]) * inStrides[d] }
            (out.rawPointer + o * size).copyMemory(from: x.rawPointer + src * size, byteCount: size)
        }
        return out
    }

    /// Keeps the upper (or lower) triangle of the last two dimensions, diagonal offset `k`.
    public static func trilu(_ x: Tensor, upper: Bool, k: Int) throws -> Tensor {
        guard x.rank >= 2 else { throw KernelError.shapeMismatch("Trilu needs rank ≥ 2, got \(Tensor.describe(x.shape))") }
        let out = x.copy()
        let (rows, cols) = (x.shape[x.rank - 2], x.shape[x.rank - 1])
        let size = x.dtype.size
        let mats = x.count / max(rows * cols, 1)
        for m in 0..<mats {
            for i in 0..<rows {
                for j in 0..<cols where upper ? (j - i < k) : (j - i > k) {
                    (out.rawPointer + ((m * rows + i) * cols + j) * size).initializeMemory(as: UInt8.self, repeating: 0, count: size)
                }
            }
        }
        return out
    }
}

/// Walks an output shape in row-major order with a source stride per dimension,
/// handing out runs of the innermost dimension: `body(outOffset, srcOffset, n, srcStep)`.
struct StridedWalk {
    let shape: [Int], strides: [Int]

    func forEachRun(_ body: (Int, Int, Int, Int) -> Void) {
        let total = shape.reduce(1, *)
        if total == 0 { return }
        guard let n = shape.last else { body(0, 0, 1, 0); return }
        let rank = shape.count
        let step = strides[rank - 1]
        var index = [Int](repeating: 0, count: rank)
        var src = 0, out = 0
        while out < total {
            body(out, src, n, step)
            out += n
            var d = rank - 2
            while d >= 0 {
                index[d] += 1
                src += strides[d]
                if index[d] < shape[d] { break }
                src -= strides[d] * shape[d]
                index[d] = 0
                d -= 1
            }
        }
    }
}
