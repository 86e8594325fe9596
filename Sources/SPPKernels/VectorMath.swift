/// exp and tanh on 8 floats at a time, for the fused kernels' inner loops
/// (softmax rows, tanh GELU), where glibc's scalar `expf` was most of the time
/// left outside the GEMMs. Polynomial approximations with a few float32 ulps
/// of error (tested against Double in `FusedKernelTests`); the naive
/// references use the exact functions. (erf GELU keeps glibc's `erff`: a
/// vectorised rational erf, even evaluated in Double, moved the padded rows of
/// all-MiniLM-L6 batch 4 × 256 from 3e-5 to 7e-5 off onnxruntime, too close
/// to the 1e-4 acceptance threshold.)
enum VectorMath {
    typealias V = SIMD8<Float>

    /// e^x: Cephes' expf (range reduction by ln 2 in two parts, degree-5
    /// polynomial, exponent built in the bits); exactly 0 below -87.3 (the
    /// float32 normal range ends there; masked softmax keys land here) and
    /// saturating at e^88 (the kernels only take exp of x ≤ 0 and in tanh). NaN
    /// lanes give unspecified values (softmax rows never hold NaN unless an
    /// input does).
    @inline(__always)
    static func exp(_ x: V) -> V {
        let lo = V(repeating: -87.3), hi = V(repeating: 88)
        let tooSmall = x .< lo
        let clamped = x.replacing(with: lo, where: tooSmall).replacing(with: hi, where: x .> hi)
        // Adding 1.5·2²³ rounds x·log₂e to an integer held in the low mantissa bits.
        let shifted = clamped * 1.44269504088896341 + 12582912
        let n = shifted - 12582912
        let r = clamped - n * 0.693359375 + n * 2.12194440e-4
        var p = V(repeating: 1.9875691500e-4)
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        let y = p * (r * r) + r + 1
        let bits = (unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
        return (y * unsafeBitCast(bits, to: V.self)).replacing(with: 0, where: tooSmall)
    }

    /// tanh(x) = 1 − 2 / (e^{2x} + 1): saturates to ±1 through `exp`'s clamping
    /// (absolute error a few 1e-8; relative error grows near 0, where it is used
    /// only inside 1 + tanh).
    @inline(__always)
    static func tanh(_ x: V) -> V {
        1 - 2 / (exp(x + x) + 1)
    }

    /// Applies `f` to `count` floats in place, 8 at a time (the tail padded).
    @inline(__always)
    static func map(_ p: UnsafeMutablePointer<Float>, count: Int, _ f: (V) -> V) {
        var i = 0
        let raw = UnsafeMutableRawPointer(p)
        while i + 8 <= count {
            let v = raw.loadUnaligned(fromByteOffset: i * 4, as: V.self)
            raw.storeBytes(of: f(v), toByteOffset: i * 4, as: V.self)
            i += 8
        }
        if i < count {
            var v = V()
            for k in 0..<(count - i) { v[k] = p[i + k] }
            let y = f(v)
            for k in 0..<(count - i) { p[i + k] = y[k] }
        }
    }
}
