import Testing
import SPPPasses

/// The LAPACK wrappers, checked by reconstruction against naive products.
@Suite struct LinalgTests {
    struct Rand {
        var state: UInt64
        mutating func next() -> Double {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Double(state >> 11) / Double(1 << 53) * 2 - 1
        }
    }

    static func random(_ r: Int, _ c: Int, seed: UInt64) -> Matrix {
        var g = Rand(state: seed)
        return Matrix(rows: r, cols: c, data: (0..<(r * c)).map { _ in g.next() })
    }

    static func naiveProduct(_ a: Matrix, _ b: Matrix) -> Matrix {
        var c = Matrix.zeros(a.rows, b.cols)
        for i in 0..<a.rows { for j in 0..<b.cols { for k in 0..<a.cols { c[i, j] += a[i, k] * b[k, j] } } }
        return c
    }

    static func maxDiff(_ a: Matrix, _ b: Matrix) -> Double {
        zip(a.data, b.data).map { abs($0 - $1) }.max() ?? 0
    }

    @Test func productMatchesNaive() {
        let a = Self.random(7, 5, seed: 1), b = Self.random(5, 3, seed: 2)
        #expect(Self.maxDiff(a * b, Self.naiveProduct(a, b)) < 1e-12)
    }

    @Test func choleskyReconstructs() throws {
        let x = Self.random(9, 6, seed: 3)
        var a = Self.naiveProduct(x.transposed, x)
        for i in 0..<6 { a[i, i] += 0.1 }
        let l = try Linalg.cholesky(a)
        #expect(Self.maxDiff(Self.naiveProduct(l, l.transposed), a) < 1e-10)
        #expect(l[0, 5] == 0)
        var notPD = a
        notPD[3, 3] = -1
        #expect(throws: LinalgError.self) { try Linalg.cholesky(notPD) }
    }

    @Test func qrReconstructsWithOrthonormalQ() throws {
        let a = Self.random(8, 5, seed: 4)
        let (q, r) = try Linalg.qr(a)
        #expect(Self.maxDiff(Self.naiveProduct(q, r), a) < 1e-12)
        #expect(Self.maxDiff(Self.naiveProduct(q.transposed, q), .identity(5)) < 1e-12)
        #expect(r[4, 0] == 0)
    }

    @Test func svdReconstructsDescending() throws {
        let a = Self.random(6, 9, seed: 5)
        let (u, s, vt) = try Linalg.svd(a)
        var us = u
        for i in 0..<u.rows { for j in 0..<s.count { us[i, j] *= s[j] } }
        #expect(Self.maxDiff(Self.naiveProduct(us, vt), a) < 1e-12)
        #expect(zip(s, s.dropFirst()).allSatisfy { $0 >= $1 })
    }

    @Test func solvesMatchTheirSystems() throws {
        let x = Self.random(10, 4, seed: 6)
        var a = Self.naiveProduct(x.transposed, x)
        for i in 0..<4 { a[i, i] += 0.5 }
        let b = Self.random(4, 3, seed: 7)
        let sol = try Linalg.solvePositiveDefinite(a, b)
        #expect(Self.maxDiff(Self.naiveProduct(a, sol), b) < 1e-10)
        let (_, r) = try Linalg.qr(Self.random(7, 4, seed: 8))
        let t = Linalg.solveUpperTriangular(r, b)
        #expect(Self.maxDiff(Self.naiveProduct(r, t), b) < 1e-10)
    }
}
