import CKernels
import Foundation
import Synchronization
import Testing
import SPPCore
import SPPGraph
@testable import SPPKernels
import SPPRuntime

/// The int8 GEMM (`Linear.int8Gemm`, `QuantizedMatrix`) against references
/// computed here from the definitions: the quantization itself, the integer
/// product, and the error it makes against the float32 product.
///
/// 8-bit activations are exact only where oneDNN's kernels use VNNI (they saturate
/// int16 pair sums elsewhere), so their tests run where `ActivationRange.native`
/// is 8-bit; 7-bit activations are exact everywhere.
@Suite struct QuantizedLinearTests {
    static let ranges: [ActivationRange] = ActivationRange.native == .eightBit ? [.eightBit, .sevenBit] : [.sevenBit]

    /// Random rows with the cases quantization must get right: odd width, all
    /// positive, all negative, all zero, one non-finite.
    static func activations(rows: Int, columns: Int, seed: UInt64) -> Tensor {
        var r = SeededRandom(seed)
        let x = r.tensor([rows, columns], scale: 3)
        let p = x.pointer(as: Float.self)
        for c in 0..<columns {
            if rows > 1 { p[1 * columns + c] = abs(p[1 * columns + c]) + 0.5 }
            if rows > 2 { p[2 * columns + c] = -abs(p[2 * columns + c]) - 0.25 }
            if rows > 3 { p[3 * columns + c] = 0 }
        }
        return x
    }

    @Test(arguments: [ActivationRange.eightBit, .sevenBit])
    func rowQuantizationFollowsTheDefinition(_ range: ActivationRange) {
        let (rows, cols) = (6, 37)
        let x = Self.activations(rows: rows, columns: cols, seed: 11)
        defer { withExtendedLifetime(x) {} }
        let p = x.pointer(as: Float.self)
        p[4 * cols + 5] = .infinity
        let q = QuantizedRows(p, rows: rows, columns: cols, ld: cols, range: range)
        defer { withExtendedLifetime(q) {} }
        let levels = Float(range.levels)
        for r in 0..<rows {
            let row = (0..<cols).map { p[r * cols + $0] }
            if r == 4 {
                #expect(q.scales[r].isNaN, "a row holding ∞ must carry NaN")
                continue
            }
            let lo = min(row.min()!, 0), hi = max(row.max()!, 0)
            let scale = (hi - lo) / levels
            #expect(q.scales[r] == scale, "row \(r)")
            if scale == 0 {
                #expect(q.zeros[r] == 0 && (0..<cols).allSatisfy { q.values[r * cols + $0] == 0 })
                continue
            }
            let zero = (-lo / scale).rounded(.toNearestOrEven)
            #expect(q.zeros[r] == Int32(zero), "row \(r)")
            for c in 0..<cols {
                let want = min(max((row[c] / scale).rounded(.toNearestOrEven) + zero, 0), levels)
                #expect(Float(q.values[r * cols + c]) == want, "row \(r) column \(c)")
            }
        }
        #expect(q.scales[3] == 0)
    }

    /// Matrices of one shape share oneDNN's primitive (`PackedMatrix`): products run on
    /// several threads at once must each equal the same product run alone.
    @Test func productsOfOneShapeRunConcurrently() throws {
        let (m, k, n) = (128, 384, 384)
        var r = SeededRandom(70)
        let weights = try (0..<4).map { _ in try QuantizedMatrix(quantizing: r.tensor([k, n])) }
        let inputs = (0..<4).map { Self.activations(rows: m, columns: k, seed: UInt64(71 + $0)) }
        func product(_ i: Int) -> [Float]? {
            let out = Tensor(dtype: .float32, shape: [m, n])
            guard (try? Linear.int8Gemm(m: m, a: inputs[i].pointer(as: Float.self), lda: k, w: weights[i], c: out.pointer(as: Float.self), ldc: n)) != nil else { return nil }
            return out.floats
        }
        let alone = try (0..<4).map { try #require(product($0)) }
        let results = Mutex([Int: [Float]]())
        DispatchQueue.concurrentPerform(iterations: 64) { j in
            if let p = product(j % 4) { results.withLock { $0[j] = p } }
        }
        let together = results.withLock { $0 }
        for j in 0..<64 { #expect(together[j] == alone[j % 4], "run \(j)") }
    }

    @Test func weightQuantizationFollowsTheDefinition() throws {
        var r = SeededRandom(12)
        let w = r.tensor([19, 7])
        let p = w.pointer(as: Float.self)
        for k in 0..<19 { p[k * 7 + 6] = 0 }  // an all-zero column
        let q = try QuantizedMatrix.quantize(w, scale: -2)
        let sums = try QuantizedMatrix(values: q.values, scales: q.scales).columnSums
        for c in 0..<7 {
            let column = (0..<19).map { p[$0 * 7 + c] }
            let s = column.map(abs).max()! / 127
            #expect(q.scales.floats[c] == -2 * s)
            var sum: Int32 = 0
            for k in 0..<19 {
                let v = q.values.pointer(as: Int8.self)[k * 7 + c]
                #expect(Int(v) == (s > 0 ? Int((column[k] / s).rounded(.toNearestOrEven)) : 0))
                sum += Int32(v)
            }
            #expect(sums.pointer(as: Int32.self)[c] == sum)
        }
        #expect(q.values.pointer(as: Int8.self)[7 + 6] == 0)
        // The largest weight of a column is ±127 after rounding: the full symmetric range is used.
        let values = q.values.buffer(as: Int8.self)
        #expect((0..<6).allSatisfy { c in (0..<19).contains { abs(Int(values[$0 * 7 + c])) == 127 } })
    }

    static let shapes: [(m: Int, k: Int, n: Int)] = [(1, 1, 1), (3, 17, 5), (7, 64, 33), (33, 384, 96), (5, 1536, 7), (128, 384, 384)]

    /// oneDNN's int32 product (its GEMM, and its matmul primitive on packed
    /// weights) equals the plain loop exactly, also with every
    /// activation at the top of its range and every weight at 127 — the case that
    /// saturates int16 pair sums where the range is wider than the kernels allow.
    @Test(arguments: ranges)
    func integerProductIsExact(_ range: ActivationRange) throws {
        for (i, s) in Self.shapes.enumerated() {
            for extreme in [false, true] {
                var r = SeededRandom(UInt64(20 + i))
                let x = extreme ? Tensor([Float](repeating: 1, count: s.m * s.k), shape: [s.m, s.k]) : Self.activations(rows: s.m, columns: s.k, seed: UInt64(30 + i))
                defer { withExtendedLifetime(x) {} }
                let w = extreme ? Tensor([Float](repeating: 0.5, count: s.k * s.n), shape: [s.k, s.n]) : r.tensor([s.k, s.n])
                let qw = try QuantizedMatrix.quantize(w)
                let q = QuantizedRows(x.pointer(as: Float.self), rows: s.m, columns: s.k, ld: s.k, range: range)
                defer { withExtendedLifetime(q) {} }
                var fast = [Int32](repeating: 0, count: s.m * s.n), slow = fast
                Linear.int8Product(q, qw.values, &fast)
                spp_gemm_u8s8s32_ref(s.m, s.n, s.k, q.values, s.k, qw.values.pointer(as: Int8.self), s.n, &slow, s.n)
                #expect(fast == slow, "\(s) extreme \(extreme) \(range)")
                // The matmul primitive on weights in its own layout, where this CPU has one,
                // packed from row-major values and from their transpose (unit-major, as files store units).
                let transposed = try DataMovement.transpose(qw.values, perm: [1, 0])
                for (source, unitMajor) in [(qw.values, false), (transposed, true)] {
                    guard let packed = PackedMatrix(source.rawPointer, rows: s.k, columns: s.n, unitMajor: unitMajor) else { continue }
                    var viaPacked = [Int32](repeating: -1, count: s.m * s.n)
                    #expect(packed.multiply(q.values, m: s.m, &viaPacked, threads: 2))
                    #expect(viaPacked == slow, "packed \(s) unit-major \(unitMajor) extreme \(extreme) \(range)")
                }
                if extreme { #expect(slow[0] == range.levels * 127 * Int32(s.k)) }
            }
        }
    }

    /// The float32 result equals a_r · s_c · Σ_k (q − z_r) w + bias computed in
    /// Double from the same integers (float32 rounding only), with a bias, onto what
    /// C held, and overwriting it.
    @Test(arguments: ranges)
    func int8GemmIsTheScaledIntegerProduct(_ range: ActivationRange) throws {
        // Two threads or more: the larger shapes split W's columns between them.
        Linear.setThreads(max(2, Linear.threads))
        for (i, s) in Self.shapes.enumerated() {
            var r = SeededRandom(UInt64(40 + i))
            let x = Self.activations(rows: s.m, columns: s.k, seed: UInt64(50 + i))
            defer { withExtendedLifetime(x) {} }
            let parts = try QuantizedMatrix.quantize(r.tensor([s.k, s.n]))
            let bias = r.tensor([s.n]), before = r.tensor([s.m, s.n])
            let q = QuantizedRows(x.pointer(as: Float.self), rows: s.m, columns: s.k, ld: s.k, range: range)
            defer { withExtendedLifetime(q) {} }
            let wv = parts.values.pointer(as: Int8.self), ws = parts.scales.floats
            var product = [Double](repeating: 0, count: s.m * s.n)
            for row in 0..<s.m {
                for c in 0..<s.n {
                    var acc = 0
                    for k in 0..<s.k { acc += (Int(q.values[row * s.k + k]) - Int(q.zeros[row])) * Int(wv[k * s.n + c]) }
                    product[row * s.n + c] = Double(q.scales[row]) * Double(ws[c]) * Double(acc)
                }
            }
            // Weights packed for oneDNN's matmul (where this CPU has its kernels) and row-major,
            // and made from unit-major rows (the transpose, as a loader reads a file's units).
            let transposed = try DataMovement.transpose(parts.values, perm: [1, 0])
            let made = [("packed", try QuantizedMatrix(values: parts.values, scales: parts.scales, pack: true)),
                        ("row-major", try QuantizedMatrix(values: parts.values, scales: parts.scales, pack: false)),
                        ("unit-major", try QuantizedMatrix(copying: transposed.rawPointer, rows: s.k, columns: s.n, unitMajor: true, scales: parts.scales))]
            for (pack, qw) in made {
            for mode in ["bias", "accumulate", "overwrite"] {
                let out = before.copy()
                try Linear.int8Gemm(m: s.m, a: x.pointer(as: Float.self), lda: s.k, w: qw,
                                bias: mode == "bias" ? bias.pointer(as: Float.self) : nil, accumulate: mode == "accumulate",
                                c: out.pointer(as: Float.self), ldc: s.n, range: range)
                let want = Tensor(product.enumerated().map { j, v in
                    Float(v + (mode == "bias" ? Double(bias.floats[j % s.n]) : mode == "accumulate" ? Double(before.floats[j]) : 0))
                }, shape: [s.m, s.n])
                let e = normalisedError(out, want)
                // Measured ≤ 1.0e-7.
                #expect(e < 4e-7, "\(s) \(mode) \(range) pack \(pack): normalised error \(e)")
            }
            // Rows of C spaced apart (the products cannot be made in C's place): the same
            // values in the first n columns, the 3 after each row untouched.
            let ldc = s.n + 3
            let spaced = Tensor([Float](repeating: 7, count: s.m * ldc), shape: [s.m, ldc])
            try Linear.int8Gemm(m: s.m, a: x.pointer(as: Float.self), lda: s.k, w: qw, bias: bias.pointer(as: Float.self),
                                c: spaced.pointer(as: Float.self), ldc: ldc, range: range)
            let sf = spaced.floats
            let got = Tensor((0..<(s.m * s.n)).map { sf[($0 / s.n) * ldc + $0 % s.n] }, shape: [s.m, s.n])
            let want = Tensor(product.enumerated().map { j, v in Float(v + Double(bias.floats[j % s.n])) }, shape: [s.m, s.n])
            #expect(normalisedError(got, want) < 4e-7, "\(s) spaced rows \(range) pack \(pack)")
            #expect((0..<s.m).allSatisfy { r in sf[(r * ldc + s.n)..<((r + 1) * ldc)].allSatisfy { $0 == 7 } }, "\(s) wrote past its rows")
            }
        }
    }

    /// Against the float32 product: every element within the worst case of the two
    /// roundings, |x|·s/2 + a/2·(|w| + s/2) summed over k, and the typical error
    /// (RMS over the matrix, relative to the RMS of the product) at the size 8 and
    /// 7 bits give. A row with a large outlier coarsens only its own row.
    @Test(arguments: ranges)
    func int8GemmIsWithinTheQuantizationError(_ range: ActivationRange) throws {
        let (m, k, n) = (24, 384, 64)
        var r = SeededRandom(60)
        let w = r.tensor([k, n], scale: 0.1)
        let qw = try QuantizedMatrix(quantizing: w)
        let wf = w.floats, ws = qw.scales.floats
        func check(_ x: Tensor) throws -> (out: Tensor, relativeRMS: Double) {
            let out = Tensor(dtype: .float32, shape: [m, n])
            try Linear.int8Gemm(m: m, a: x.pointer(as: Float.self), lda: k, w: qw, c: out.pointer(as: Float.self), ldc: n, range: range)
            let q = QuantizedRows(x.pointer(as: Float.self), rows: m, columns: k, ld: k, range: range)
            defer { withExtendedLifetime(q) {} }
            let xf = x.floats, of = out.floats
            var err2 = 0.0, ref2 = 0.0
            for row in 0..<m {
                let a = Double(q.scales[row])
                for c in 0..<n {
                    var exact = 0.0, bound = 0.0
                    for j in 0..<k {
                        let (xv, wv, s) = (Double(xf[row * k + j]), Double(wf[j * n + c]), Double(ws[c]))
                        exact += xv * wv
                        bound += abs(xv) * s / 2 + a / 2 * (abs(wv) + s / 2)
                    }
                    let err = abs(Double(of[row * n + c]) - exact)
                    #expect(err <= bound * 1.001 + 1e-6, "row \(row) column \(c): error \(err) above the bound \(bound)")
                    err2 += err * err
                    ref2 += exact * exact
                }
            }
            return (out, (err2 / ref2).squareRoot())
        }
        let x = r.tensor([m, k])
        let (plain, rms) = try check(x)
        // Measured 0.0054 (8 bits) and 0.0085 (7 bits) on this data.
        #expect(rms < (range == .eightBit ? 0.008 : 0.012), "\(range): relative RMS error \(rms)")

        let spiked = x.copy()
        spiked.pointer(as: Float.self)[5] = 100
        let (outlier, _) = try check(spiked)
        let a = plain.floats, b = outlier.floats
        #expect(Array(a[n...]) == Array(b[n...]), "rows without the outlier must not change")
        #expect(a[..<n] != b[..<n])
    }

    @Test(.enabled(if: ActivationRange.native == .eightBit, "8-bit activations saturate without VNNI"))
    func eightBitsAreMoreAccurateThanSeven() throws {
        var r = SeededRandom(61)
        let (m, k, n) = (32, 256, 48)
        let x = r.tensor([m, k]), w = r.tensor([k, n])
        let qw = try QuantizedMatrix(quantizing: w)
        let exact = Tensor(Linear.naiveGemm(transA: false, transB: false, m: m, n: n, k: k, a: x.floats, b: w.floats), shape: [m, n])
        var errors: [Double] = []
        for range in [ActivationRange.eightBit, .sevenBit] {
            let out = Tensor(dtype: .float32, shape: [m, n])
            try Linear.int8Gemm(m: m, a: x.pointer(as: Float.self), lda: k, w: qw, c: out.pointer(as: Float.self), ldc: n, range: range)
            errors.append(zip(out.floats, exact.floats).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +))
        }
        #expect(errors[0] < errors[1], "squared errors \(errors)")
    }

    /// As above over rows wider than the vector loops (37 columns: whole vectors and a
    /// remainder); the first element that is not finite, in row-major order, is named.
    @Test func wideWeightQuantizationFollowsTheDefinitionAndNamesNonFiniteWeights() throws {
        let (k, n) = (45, 37)
        var rng = SplitMix64(seed: 5)
        let w = (0..<(k * n)).map { i in i % n == 3 ? 0 : rng.signedUnit() * (1 + Float(i % n)) }
        let (values, scales) = try QuantizedMatrix.quantize(Tensor(w, shape: [k, n]), scale: 3)
        let q = values.pointer(as: Int8.self)
        for c in 0..<n {
            let s = (0..<k).map { abs(w[$0 * n + c]) }.max()! / 127
            #expect(scales.floats[c] == s * 3, "scale of column \(c)")
            for r in 0..<k {
                let expected: Int8 = s == 0 ? 0 : Int8(max(-127, min(127, (w[r * n + c] / s).rounded(.toNearestOrEven))))
                #expect(q[r * n + c] == expected, "[\(r), \(c)]")
            }
        }
        for bad in [Float.nan, .infinity, -.infinity] {
            var v = w
            v[11 * n + 4] = bad
            v[20 * n + 1] = bad
            #expect(throws: KernelError.invalidArgument("weight [11, 4] is \(bad); int8 weights must be finite")) {
                try QuantizedMatrix.quantize(Tensor(v, shape: [k, n]))
            }
        }
    }

    @Test func badWeightsAndInputsAreTypedErrors() throws {
        #expect(throws: KernelError.self) { try QuantizedMatrix(quantizing: Tensor([Float.nan, 1], shape: [1, 2])) }
        #expect(throws: KernelError.self) { try QuantizedMatrix(quantizing: Tensor([Float(1), 2], shape: [2])) }
        #expect(throws: KernelError.self) { try QuantizedMatrix(quantizing: Tensor([Int64(1), 2], shape: [1, 2])) }
        #expect(throws: KernelError.self) { try QuantizedMatrix(values: Tensor(dtype: .int8, shape: [3, 4]), scales: Tensor(dtype: .float32, shape: [3])) }
        let w = try QuantizedMatrix(quantizing: Tensor([Float](repeating: 1, count: 12), shape: [3, 4]))
        #expect(throws: KernelError.self) { try Linear.matMul(Tensor(dtype: .float32, shape: [2, 4]), w) }
        #expect(throws: KernelError.self) { try Linear.matMul(Tensor([Int64(1), 2, 3], shape: [1, 3]), w) }
        #expect(throws: KernelError.self) { try Linear.gemm(Tensor(dtype: .float32, shape: [2, 3]), w, Tensor(dtype: .float32, shape: [3]), beta: 1) }
    }

    // MARK: - Fused blocks

    @Test(arguments: ranges)
    func attentionWithInt8WeightsIsCloseToFloat(_ range: ActivationRange) throws {
        var worst = 0.0
        for k in FusedKernelTests.attentionCases.indices {
            let c = FusedKernelTests.attentionCases[k]
            let (x, w, mask, bias, p) = FusedKernelTests.attentionInputs(c, seed: UInt64(300 + k))
            let q = try Attention.QuantizedWeights(w, p, range: range)
            let fast = try Attention.run(x, q, mask: mask, bias: bias, p)
            let naive = try Attention.naive(x, w, mask: mask, bias: bias, p)
            #expect(fast.shape == x.shape)
            worst = max(worst, normalisedError(fast, naive))
        }
        // Measured 0.016 (8 bits) and 0.022 (7 bits).
        #expect(worst < (range == .eightBit ? 0.025 : 0.035), "\(range): worst normalised error \(worst)")
    }

    @Test(arguments: ranges)
    func feedForwardWithInt8WeightsIsCloseToFloat(_ range: ActivationRange) throws {
        var worst = 0.0
        for k in FusedKernelTests.feedForwardCases.indices {
            let c = FusedKernelTests.feedForwardCases[k]
            var r = SeededRandom(UInt64(400 + k))
            let d = c.shape.last!
            let x = r.tensor(c.shape, scale: 2)
            let (w1, b1, w2, b2) = (r.tensor([d, c.inner]), r.tensor([c.inner]), r.tensor([c.inner, d]), r.tensor([d]))
            let q = try FeedForward.QuantizedWeights(w1: w1, b1: b1, w2: w2, b2: b2, range: range)
            let fast = try FeedForward.run(x, q, activation: c.activation)
            let naive = try FeedForward.naive(x, w1: w1, b1: b1, w2: w2, b2: b2, activation: c.activation)
            #expect(fast.shape == c.shape)
            worst = max(worst, normalisedError(fast, naive))
        }
        // Measured 0.010 (8 bits) and 0.0105 (7 bits).
        #expect(worst < 0.02, "\(range): worst normalised error \(worst)")
    }

    @Test func fusedBlocksRejectBadInt8Inputs() throws {
        let c = FusedKernelTests.AttentionCase(batch: 2, seq: 4, hidden: 6, qk: [2, 2], vo: [3, 1], causal: false, mask: nil, bias: nil)
        var (x, w, _, _, p) = FusedKernelTests.attentionInputs(c, seed: 5)
        let q = try Attention.QuantizedWeights(w, p)
        #expect(throws: KernelError.self) { try Attention.run(Tensor(dtype: .float32, shape: [2, 4, 5]), q, mask: nil, bias: nil, p) }
        p.qkRanks = [2, 1]
        #expect(throws: KernelError.self) { try Attention.run(x, q, mask: nil, bias: nil, p) }
        #expect(throws: KernelError.self) { try Attention.QuantizedWeights(w, p) }
        w.wq.pointer(as: Float.self)[0] = .infinity
        p.qkRanks = [2, 2]
        #expect(throws: KernelError.self) { try Attention.QuantizedWeights(w, p) }

        var r = SeededRandom(6)
        let f = try FeedForward.QuantizedWeights(w1: r.tensor([6, 9]), b1: r.tensor([9]), w2: r.tensor([9, 6]), b2: r.tensor([6]))
        #expect(throws: KernelError.self) { try FeedForward.run(Tensor(dtype: .float32, shape: [3, 7]), f, activation: .gelu) }
        #expect(throws: KernelError.self) { try FeedForward.QuantizedWeights(w1: r.tensor([6, 9]), b1: r.tensor([8]), w2: r.tensor([9, 6]), b2: r.tensor([6])) }
    }
}
