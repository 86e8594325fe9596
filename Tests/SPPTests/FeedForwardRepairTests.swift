import CKernels
import Foundation
import Testing
import SPPCore
import SPPFormat
import SPPGraph
import SPPKernels
import SPPONNX
import SPPPasses
import SPPRuntime

/// The load-time least-squares refit of pruned FFN blocks: the product from stored
/// prefixes equals a dense solve of the same system, what conversion stores gives the
/// ridge problem solved directly, and on real activations it lowers the block's error.
@Suite struct FeedForwardRepairTests {
    /// x with A x = b by Gaussian elimination with partial pivoting (the independent reference).
    static func solve(_ a: [[Double]], _ b: [[Double]]) -> [[Double]] {
        var a = a, b = b
        let n = a.count
        for c in 0..<n {
            let p = (c..<n).max { abs(a[$0][c]) < abs(a[$1][c]) }!
            a.swapAt(c, p)
            b.swapAt(c, p)
            for r in (c + 1)..<n where r < n {
                let f = a[r][c] / a[c][c]
                for j in c..<n { a[r][j] -= f * a[c][j] }
                for j in 0..<b[r].count { b[r][j] -= f * b[c][j] }
            }
        }
        var x = b
        for r in stride(from: n - 1, through: 0, by: -1) {
            for j in 0..<b[r].count {
                var s = b[r][j]
                for c in (r + 1)..<n where c < n { s -= a[r][c] * x[c][j] }
                x[r][j] = s / a[r][r]
            }
        }
        return x
    }

    /// M̃ [n, n] as the loader expands it: int8 × row scale below the diagonal, the float diagonal on it.
    static func expanded(_ q: [Int8], _ n: Int, scales: [Float], diagonal: [Float]) -> [[Double]] {
        (0..<n).map { i in (0..<n).map { j in j < i ? Double(Float(q[i * n + j]) * scales[i]) : j == i ? Double(diagonal[i]) : 0 } }
    }

    static func expanded(_ stored: FeedForwardRepair.Stored) -> [[Double]] {
        expanded(Array(stored.inverseFactor.buffer(as: Int8.self)), stored.inverseDiagonal.count, scales: stored.inverseScales.floats,
                 diagonal: stored.inverseDiagonal.floats)
    }

    /// max |got − expected| / max(max |expected|, 1e-6) for rows [k, d] (`got` row-major).
    static func normalisedError(_ got: [Float], _ expected: [[Double]]) -> Double {
        var size = 1e-6, error = 0.0
        for (i, row) in expected.enumerated() {
            for (c, e) in row.enumerated() {
                size = max(size, abs(e))
                error = max(error, abs(Double(got[i * row.count + c]) - e))
            }
        }
        return error / size
    }

    static func prefix(_ t: Tensor, _ k: Int) throws -> Tensor { try DataMovement.slice(t, starts: [0], ends: [k], axes: [0], steps: [1]) }

    /// The leading k×k block of a factor stored as int8 rows q [n, n] (read below the
    /// diagonal), row scales and a float32 diagonal.
    static func factor(_ q: [Int8], _ n: Int, scales: [Float], diagonal: [Float], _ k: Int) -> FeedForwardRepair.LowerFactor {
        let values = Tensor(dtype: .int8, shape: [k, k])
        let pv = values.pointer(as: Int8.self)
        for i in 0..<k { for j in 0..<k { pv[i * k + j] = q[i * n + j] } }
        return .init(values: values, rowScales: Tensor(Array(scales.prefix(k)), shape: [k]), diagonal: Tensor(Array(diagonal.prefix(k)), shape: [k]))
    }

    static func factor(_ stored: FeedForwardRepair.Stored, _ k: Int) -> FeedForwardRepair.LowerFactor {
        factor(Array(stored.inverseFactor.buffer(as: Int8.self)), stored.inverseDiagonal.count, scales: stored.inverseScales.floats,
               diagonal: stored.inverseDiagonal.floats, k)
    }

    /// The value of x rounded to bfloat16 (`PrecisionTests.bfloat16`'s bits).
    static func bfloat16(_ x: Float) -> Double { Double(Float(bitPattern: UInt32(PrecisionTests.bfloat16(x)) << 16)) }

    /// The refit (one product W = M_SSᵀ Z_S) equals a dense solve of A_SS W = (A W2)_S with
    /// A = (MᵀM)⁻¹, for random triangular M of odd sizes (200: three slabs of the blocked
    /// product and part of a fourth); at S = all it is W2. The bfloat16 product is the
    /// same sum of bfloat16-rounded M and Z, within their rounding of the solve.
    @Test(arguments: [(13, 5), (7, 1), (20, 9), (200, 33)], [FeedForwardRepair.Product.float32, .bfloat16])
    func refitIsTheDenseSolveOfItsCovariance(_ shape: (Int, Int), _ product: FeedForwardRepair.Product) throws {
        let (n, d) = shape
        var rng = SplitMix64(seed: UInt64(n * 100 + d))
        // Well conditioned: a dominant positive diagonal; int8 values times a row scale below it, as stored
        // (the entries on and above the diagonal hold junk the refit must not read).
        let q = (0..<(n * n)).map { _ in Int8(rng.signedUnit() * 127) }
        let scales = (0..<n).map { _ in 0.3 / 127 * (0.5 + abs(rng.signedUnit())) }
        let diagonal = (0..<n).map { _ in 1 + abs(rng.signedUnit()) }
        let m = Self.expanded(q, n, scales: scales, diagonal: diagonal)
        let w2 = (0..<n).map { _ in (0..<d).map { _ in Double(rng.signedUnit()) } }
        let mean = (0..<n).map { _ in rng.signedUnit() }
        let b2 = (0..<d).map { _ in rng.signedUnit() }
        // Z with Mᵀ Z = W2, by back substitution (Mᵀ is upper triangular).
        var z = w2
        for i in stride(from: n - 1, through: 0, by: -1) {
            for c in 0..<d {
                var sum = w2[i][c]
                for j in (i + 1)..<max(n, i + 1) { sum -= m[j][i] * z[j][c] }
                z[i][c] = sum / m[i][i]
            }
        }
        // A = (MᵀM)⁻¹, dense.
        let mtm = (0..<n).map { i in (0..<n).map { j in (0..<n).reduce(0.0) { $0 + m[$1][i] * m[$1][j] } } }
        let a = Self.solve(mtm, (0..<n).map { i in (0..<n).map { $0 == i ? 1.0 : 0 } })
        var offset = [Float](repeating: 0, count: d)
        for c in 0..<d { offset[c] = Float((0..<n).reduce(0.0) { $0 + Double(mean[$1]) * w2[$1][c] }) }
        let tz = Tensor(z.flatMap { row in row.map { Float($0) } }, shape: [n, d]), tmean = Tensor(mean, shape: [n])
        for k in [0, 1, n / 2, n - 1, n] {
            let (w, b) = try FeedForwardRepair.refit(whitenedW2: try Self.prefix(tz, k), inverseFactor: Self.factor(q, n, scales: scales, diagonal: diagonal, k), mean: try Self.prefix(tmean, k),
                                                     offset: Tensor(offset, shape: [d]), b2: Tensor(b2, shape: [d]), product: product)
            #expect(w.shape == [k, d] && b.shape == [d])
            // Written over Z, as loads do: the same W.
            let zk = try Self.prefix(tz, k).copy()
            let (over, _) = try FeedForwardRepair.refit(whitenedW2: zk, inverseFactor: Self.factor(q, n, scales: scales, diagonal: diagonal, k),
                                                        mean: try Self.prefix(tmean, k), offset: Tensor(offset, shape: [d]), b2: Tensor(b2, shape: [d]),
                                                        into: zk, product: product)
            #expect(over.floats == w.floats, "k \(k): W written over Z")
            let ass = (0..<k).map { i in Array(a[i].prefix(k)) }
            let rhs = (0..<k).map { i in (0..<d).map { c in (0..<n).reduce(0.0) { $0 + a[i][$1] * w2[$1][c] } } }
            let solved = k == 0 ? [] : Self.solve(ass, rhs)
            // What the product computes: M_SSᵀ Z_S, its float32 operands rounded to bfloat16.
            let zFloat = tz.floats
            let expected = product == .float32 ? solved : (0..<k).map { i in
                (0..<d).map { c in (i..<k).reduce(0.0) { $0 + Self.bfloat16(Float(m[$1][i])) * Self.bfloat16(zFloat[$1 * d + c]) } }
            }
            let got = w.floats
            let error = Self.normalisedError(got, expected)
            #expect(error < (product == .float32 ? 1e-4 : 1e-5), "k \(k): normalised error \(error)")
            if product == .bfloat16 {
                // Within rounding of the solve: each operand moves by at most 2⁻⁸ of itself, so a term by ~2⁻⁷ of |M||Z|.
                for i in 0..<k {
                    for c in 0..<d {
                        let bound = (i..<k).reduce(0.0) { $0 + abs(m[$1][i] * Double(zFloat[$1 * d + c])) } / 128
                        #expect(abs(Double(got[i * d + c]) - solved[i][c]) <= bound + 1e-4, "k \(k) W[\(i), \(c)] against the solve")
                    }
                }
            }
            if k == n && product == .float32 {
                for i in 0..<n { for c in 0..<d { #expect(abs(Double(got[i * d + c]) - w2[i][c]) < 1e-5, "S = all gives W2") } }
            }
            // b2' = b2 + μ W2 − μ_S W.
            for c in 0..<d {
                var bias = Double(b2[c]) + Double(offset[c])
                for i in 0..<k { bias -= Double(mean[i]) * expected[i][c] }
                #expect(abs(Double(b.floats[c]) - bias) < 1e-4, "k \(k) b[\(c)]")
            }
        }
    }

    /// The bfloat16 product (AVX512-BF16 where the CPU has it) equals its scalar loop for
    /// partial row blocks, lone and partial panels and odd k (a last pair padded with zero).
    @Test(.enabled(if: spp_bf16_supported() != 0, "the product is the scalar loop without AVX512-BF16"))
    func bfloat16ProductMatchesItsScalarLoop() {
        var rng = SplitMix64(seed: 11)
        for m in 1...13 {
            for n in [1, 15, 16, 17, 31, 32, 33, 48] {
                for k in [1, 2, 5, 9, 10] {
                    let pairs = (k + 1) / 2, lda = m + 3
                    let b = (0..<(k * n)).map { _ in rng.signedUnit() }
                    let a = (0..<(pairs * lda)).map { _ in UInt32(truncatingIfNeeded: rng.next()) & 0x3FFF_3FFF }  // finite, |x| < 2
                    var packed = [UInt32](repeating: 0xFFFF_FFFF, count: spp_packed_pairs_count(k, n))
                    spp_pack_panels_bf16(b, n, k, n, &packed)
                    var kernel = [Float](repeating: .nan, count: m * n), loop = kernel
                    spp_sbgemm_packed(m, n, pairs, a, lda, packed, pairs, &kernel, n)
                    spp_sbgemm_packed_scalar(m, n, pairs, a, lda, packed, pairs, &loop, n)
                    // Sums in another order: within float32 rounding of the sum of |terms| (each < 2).
                    let close = zip(kernel, loop).allSatisfy { abs($0 - $1) <= 1e-5 * Float(2 * k) }
                    #expect(close, "m \(m), n \(n), k \(k)")
                }
            }
        }
    }

    @Test func refitRejectsBadShapesAndFactors() throws {
        let (k, d) = (4, 3)
        func t(_ shape: [Int], _ value: Float = 0.5) -> Tensor { Tensor([Float](repeating: value, count: shape.reduce(1, *)), shape: shape) }
        let int8 = Tensor(dtype: .int8, shape: [k, k], zeroed: true)
        func refit(z: Tensor = t([k, d]), values: Tensor = int8, scales: Tensor = t([k]), diagonal: Tensor = t([k]),
                   mean: Tensor = t([k]), offset: Tensor = t([d])) throws {
            _ = try FeedForwardRepair.refit(whitenedW2: z, inverseFactor: .init(values: values, rowScales: scales, diagonal: diagonal),
                                            mean: mean, offset: offset, b2: t([d]))
        }
        try refit()
        let bad: [() throws -> Void] = [
            { try refit(z: t([k, d + 1])) }, { try refit(z: t([k * d])) }, { try refit(values: t([k, k])) },
            { try refit(values: Tensor(dtype: .int8, shape: [k, k + 1], zeroed: true)) },
            { try refit(values: Tensor(dtype: .int8, shape: [k * k], zeroed: true)) }, { try refit(scales: t([k + 1])) },
            { try refit(diagonal: t([k + 1])) }, { try refit(mean: t([k - 1])) }, { try refit(offset: t([d + 2])) },
            { try refit(diagonal: t([k], 0)) }, { try refit(diagonal: t([k], -1)) }, { try refit(diagonal: t([k], .nan)) },
            { try refit(scales: t([k], .infinity)) }, { try refit(z: Tensor(dtype: .float16, shape: [k, d], zeroed: true)) },
        ]
        for (i, call) in bad.enumerated() {
            do {
                try call()
                Issue.record("case \(i) did not throw")
            } catch RuntimeError.corruptPath {
            } catch {
                Issue.record("case \(i) threw \(error)")
            }
        }
    }

    /// What `make` stores gives the ridge refit A_SS⁻¹ (A W2)_S with A = C + λI: Z makes
    /// M̃ᵀZ = W2 exactly, M̃ is L⁻¹ within int8 rounding, and the stored refit stays close to
    /// the exact one (an exact refit for the covariance M̃ implies).
    @Test func storedFactorGivesTheRidgeRefit() throws {
        var rng = SplitMix64(seed: 7)
        let (n, d, samples, ridge) = (10, 4, 40, 0.05)
        // Correlated activations: a shared component plus noise.
        let h: [[Double]] = (0..<samples).map { _ in
            let shared = Double(rng.signedUnit())
            return (0..<n).map { j in shared * Double(j % 3) + Double(rng.signedUnit()) + 0.5 }
        }
        let mean = (0..<n).map { j in h.reduce(0) { $0 + $1[j] } / Double(samples) }
        var cov = Matrix.zeros(n, n)
        for row in h { for i in 0..<n { for j in 0..<n { cov[i, j] += (row[i] - mean[i]) * (row[j] - mean[j]) / Double(samples) } } }
        let stats = BlockStatistics.FeedForwardStats(mean: mean, covariance: cov)
        let w2: [[Double]] = (0..<n).map { _ in (0..<d).map { _ in Double(rng.signedUnit()) } }
        let b2 = (0..<d).map { _ in Float(Double(rng.signedUnit())) }
        let order = [3, 7, 0, 9, 1, 5, 2, 8, 6, 4]
        let rows = Tensor(order.flatMap { w2[$0].map { Float($0) } }, shape: [n, d])
        let stored = try FeedForwardRepair.make(w2: rows, stats: stats, order: order, ridge: ridge)
        #expect(stored.inverseFactor.dtype == .int8 && stored.inverseFactor.shape == [n, n] && stored.inverseScales.shape == [n, 1])
        let m = Self.expanded(stored), z = stored.whitenedW2.floats
        let lambda = ridge * (0..<n).reduce(0) { $0 + cov[$1, $1] } / Double(n)
        // M̃ᵀ Z = W2 (S = all is exact), and M̃ A M̃ᵀ ≈ I (M̃ ≈ L⁻¹).
        for i in 0..<n {
            for c in 0..<d {
                let v = (0..<n).reduce(0.0) { $0 + m[$1][i] * Double(z[$1 * d + c]) }
                #expect(abs(v - w2[order[i]][c]) < 1e-5)
            }
            for j in 0..<n {
                var v = 0.0
                for p in 0..<n { for q in 0..<n { v += m[i][p] * (cov[order[p], order[q]] + (p == q ? lambda : 0)) * m[j][q] } }
                #expect(abs(v - (i == j ? 1 : 0)) < 0.05, "M̃ A M̃ᵀ [\(i), \(j)] = \(v)")
            }
        }
        for k in [0, 1, 4, 9, 10] {
            let (w, b) = try FeedForwardRepair.refit(whitenedW2: try Self.prefix(stored.whitenedW2, k), inverseFactor: Self.factor(stored, k),
                                                     mean: try Self.prefix(stored.mean, k), offset: stored.offset, b2: Tensor(b2, shape: [d]))
            // Reference: A_SS W = (A W2)_S with A = C + λI, in the original neuron numbering.
            let s = Array(order.prefix(k))
            let exact = s.map { i in s.map { j in cov[i, j] + (i == j ? lambda : 0) } }
            let rhs = s.map { i in (0..<d).map { c in (0..<n).reduce(0) { $0 + (cov[i, $1] + (i == $1 ? lambda : 0)) * w2[$1][c] } } }
            let expected = k == 0 ? [] : Self.solve(exact, rhs)
            let got = w.floats
            let error = Self.normalisedError(got, expected)
            #expect(error < 2e-2, "k \(k): normalised error \(error) against the exact refit")
            for c in 0..<d {
                var bias = Double(b2[c]) + (0..<n).reduce(0) { $0 + mean[$1] * w2[$1][c] }
                for (i, j) in s.enumerated() { bias -= mean[j] * Double(got[i * d + c]) }
                #expect(abs(Double(b.floats[c]) - bias) < 1e-4, "k \(k) b[\(c)]")
            }
        }
    }

    /// Through the file: keep 1 is still the dense model, and at keep 0.5 the refit
    /// lowers every FFN block's error on the dense activations it was fit to (the
    /// truncated W2 is a candidate of the same least-squares problem).
    @Test func refitLowersTheBlockErrorOnBertTiny() throws {
        let fixture = TestPaths.fixtures.appendingPathComponent("bert_tiny")
        var graph = try ONNXImporter.load(path: fixture.appendingPathComponent("model.onnx").path).graph
        _ = try PassPipeline.run(&graph, verify: true)
        var inputs: [String: Tensor] = [:]
        for (k, name) in ["input_ids", "attention_mask", "token_type_ids"].enumerated() {
            inputs[name] = try Npy.read(path: fixture.appendingPathComponent("input_\(k).npy").path)
        }
        let stats = try BlockStatistics.collect(graph: graph, batches: [inputs], validity: nil)
        _ = try RotateAttention.apply(&graph, statistics: stats)
        let scores = try SolutionPath.prepare(graph: graph, batches: [inputs]).singleRemovalScores()
        let built = try PathBuilder.build(graph, scores: scores, method: "svd", repair: stats.feedForward, ridge: 1e-4)
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.spp").path
        try SPPWriter.write(SPPModel(graph: built.graph, provenance: Provenance(), pruningPath: built.path, costTable: built.costTable,
                                     encodings: built.encodings), to: file)

        let expected = try Npy.read(path: fixture.appendingPathComponent("output_0.npy").path)
        let (ok, c) = Comparison.compare(try Model(path: file, keep: 1).run(inputs)["last_hidden_state"]!, expected, atol: 1e-4, rtol: 1e-4)
        #expect(ok, "\(c)")

        let ffn = graph.nodes.filter { $0.op == .feedForward }
        let dense = try Model(graph: graph).program.run(inputs, retaining: Set(ffn.map { $0.inputs[0] } + ffn.map { $0.outputs[0] }))
        let repaired = try PathLoader.load(SPPReader(path: file), keep: 0.5, repair: true).graph
        let truncated = try PathLoader.load(SPPReader(path: file), keep: 0.5, repair: false).graph
        for node in ffn {
            let x = dense[node.inputs[0]]!, y = dense[node.outputs[0]]!
            func error(_ g: Graph) throws -> Double {
                let w = node.inputs.map { g.initializers[$0] }
                let out = try FeedForward.naive(x, w1: w[1]!, b1: w[2]!, w2: w[3]!, b2: w[4]!, activation: .gelu)
                var sum = 0.0
                for (a, b) in zip(out.floats, y.floats) { sum += Double(a - b) * Double(a - b) }
                return sum
            }
            let (with, without) = (try error(repaired), try error(truncated))
            #expect(repaired.initializers[node.inputs[3]]!.shape[0] < graph.initializers[node.inputs[3]]!.shape[0])
            #expect(with < without, "\(node.name): squared error \(with) with the refit, \(without) without")
        }

        // Keep 1 reads no repair data: the same bytes as a file without it.
        let plain = dir.appendingPathComponent("plain.spp").path
        let unrepaired = try PathBuilder.build(graph, scores: scores, method: "svd")
        try SPPWriter.write(SPPModel(graph: unrepaired.graph, provenance: Provenance(), pruningPath: unrepaired.path, costTable: unrepaired.costTable), to: plain)
        #expect(try PathLoader.load(SPPReader(path: file), keep: 1).bytesDecoded == PathLoader.load(SPPReader(path: plain), keep: 1).bytesDecoded)

        // A file of the earlier repair (rows of L as `gram_factor`, no inverse factor) loads at keep 1
        // and without the repair; refitting it fails naming what is missing.
        var old = built
        var nodes: [String] = []
        for (p, pair) in old.path.pairs.enumerated() where pair.kind == .feedForward {
            old.path.pairs[p].tensors = pair.tensors.compactMap { t in
                var t = t
                if t.role == FeedForwardRepair.Role.inverseFactor { t.role = "gram_factor" }
                return t.role == FeedForwardRepair.Role.inverseDiagonal ? nil : t
            }
            nodes.append(pair.node)
        }
        let oldFile = dir.appendingPathComponent("old.spp").path
        try SPPWriter.write(SPPModel(graph: old.graph, provenance: Provenance(), pruningPath: old.path, costTable: old.costTable, encodings: old.encodings), to: oldFile)
        _ = try PathLoader.load(SPPReader(path: oldFile), keep: 1)
        _ = try PathLoader.load(SPPReader(path: oldFile), keep: 0.5, repair: false)
        #expect(throws: RuntimeError.missingRepairData(node: nodes[0], missing: [FeedForwardRepair.Role.inverseFactor, FeedForwardRepair.Role.inverseDiagonal],
                                                       retired: ["gram_factor"])) {
            try PathLoader.load(SPPReader(path: oldFile), keep: 0.5)
        }

        // A factor chunk of the wrong width is a typed error, not a crash.
        var bad = built
        let chunk = try #require(bad.path.pairs.first { $0.kind == .feedForward }?.tensors.first { $0.role == FeedForwardRepair.Role.inverseFactor }?.chunks.first)
        let rows = try #require(bad.graph.initializers[chunk]?.shape.first)
        bad.graph.initializers[chunk] = Tensor(dtype: .int8, shape: [rows, rows + 1], zeroed: true)
        let badFile = dir.appendingPathComponent("bad.spp").path
        try SPPWriter.write(SPPModel(graph: bad.graph, provenance: Provenance(), pruningPath: bad.path, costTable: bad.costTable, encodings: bad.encodings), to: badFile)
        #expect(performing: { try PathLoader.load(SPPReader(path: badFile), keep: 0.5) }, throws: { error in
            if case RuntimeError.corruptPath = error { return true }
            return false
        })
    }
}
