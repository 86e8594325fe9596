import Testing
import SPPPasses

/// The rotations are exact (the pair product does not change) and order the
/// directions by their data-weighted strength.
@Suite struct PairRotationTests {
    typealias R = LinalgTests

    /// Second moment of `n` random bias-augmented rows with unequal scales per feature.
    static func moment(d: Int, n: Int, seed: UInt64) -> Matrix {
        var x = R.random(n, d + 1, seed: seed)
        for i in 0..<n {
            x[i, d] = 1
            for j in 0..<d { x[i, j] *= Double(j % 5 + 1) }
        }
        var c = R.naiveProduct(x.transposed, x)
        for k in 0..<c.data.count { c.data[k] /= Double(n) }
        return c
    }

    @Test func queryKeyRotationIsExact() throws {
        let (d, dh) = (12, 4)
        let aq = R.random(d + 1, dh, seed: 11), ak = R.random(d + 1, dh, seed: 12)
        let c = Self.moment(d: d, n: 50, seed: 13)
        let (tq, tk, s) = try PairRotation.queryKey(aq: aq, ak: ak, moment: c)
        let before = R.naiveProduct(aq, ak.transposed)
        let after = R.naiveProduct(R.naiveProduct(aq, tq), R.naiveProduct(ak, tk).transposed)
        #expect(R.maxDiff(before, after) < 1e-9)
        #expect(zip(s, s.dropFirst()).allSatisfy { $0 >= $1 })
    }

    @Test func valueOutputRotationIsExactAndDecouples() throws {
        let (d, dh) = (10, 5)
        let av = R.random(d + 1, dh, seed: 21), wo = R.random(dh, d, seed: 22)
        let c = Self.moment(d: d, n: 60, seed: 23)
        let (t, tInv, s) = try PairRotation.valueOutput(av: av, wo: wo, moment: c)
        #expect(R.maxDiff(R.naiveProduct(t, tInv), .identity(dh)) < 1e-9)
        let before = R.naiveProduct(av, wo)
        let after = R.naiveProduct(R.naiveProduct(av, t), R.naiveProduct(tInv, wo))
        #expect(R.maxDiff(before, after) < 1e-9)
        // The rotated values are uncorrelated on the data: E[v'ᵀ v'] = diag(s).
        let v = R.naiveProduct(av, t)
        let cov = R.naiveProduct(R.naiveProduct(v.transposed, c), v)
        for i in 0..<dh { for j in 0..<dh where i != j { #expect(abs(cov[i, j]) < 1e-4 * s[0]) } }
        for i in 0..<dh { #expect(abs(cov[i, i] - s[i]) < 1e-4 * s[0]) }  // ε-regularised whitening
    }
}
